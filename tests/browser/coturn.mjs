// A real TURN server for the tests and benches: Debian's coturn (`turnserver`) on loopback with
// a temporary config, using the REST-API shared secret (`use-auth-secret`) that cohost's
// `--turn-secret` mints credentials for.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket } from 'node:dgram';

export const TURN_BIN = process.env.TURNSERVER || '/usr/bin/turnserver';

/** Starts coturn on 127.0.0.1:`port`; resolves once it answers a STUN binding request. */
export async function startCoturn(port, secret, { minPort = 53000, maxPort = 53200 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'cohost-coturn-'));
  const conf = join(dir, 'turnserver.conf');
  writeFileSync(conf, [
    `listening-ip=127.0.0.1`,
    `relay-ip=127.0.0.1`,
    `listening-port=${port}`,
    `min-port=${minPort}`,
    `max-port=${maxPort}`,
    'use-auth-secret',
    `static-auth-secret=${secret}`,
    'realm=cohost.test',
    'fingerprint',
    // Everything here is on loopback: the peers (cohost) too.
    'allow-loopback-peers',
    'no-cli', 'no-tls', 'no-dtls', 'no-tcp-relay', 'no-multicast-peers',
    'verbose', 'simple-log', 'log-file=stdout', `pidfile=${join(dir, 'pid')}`, `userdb=${join(dir, 'turndb')}`,
    '',
  ].join('\n'));
  const proc = spawn(TURN_BIN, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  for (const s of [proc.stdout, proc.stderr]) {
    s.setEncoding('utf8');
    s.on('data', (d) => { for (const l of d.split('\n')) if (l) lines.push(l); if (lines.length > 500) lines.splice(0, lines.length - 500); });
  }
  const stop = () => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  };
  // A STUN binding request (RFC 5389): type 0x0001, length 0, magic cookie, 12-byte id.
  const req = Buffer.alloc(20);
  req.writeUInt16BE(0x0001, 0);
  req.writeUInt32BE(0x2112a442, 4);
  for (let i = 8; i < 20; i++) req[i] = i;
  const end = Date.now() + 10000;
  while (Date.now() < end) {
    if (proc.exitCode !== null) break;
    const ok = await new Promise((resolve) => {
      const sock = createSocket('udp4');
      const t = setTimeout(() => { sock.close(); resolve(false); }, 200);
      sock.on('message', (m) => { clearTimeout(t); sock.close(); resolve(m.length >= 20 && m.readUInt16BE(0) === 0x0101); });
      sock.send(req, port, '127.0.0.1');
    });
    if (ok) return { proc, lines, stop };
  }
  stop();
  throw new Error(`coturn did not come up on 127.0.0.1:${port}:\n${lines.slice(-20).join('\n')}`);
}
