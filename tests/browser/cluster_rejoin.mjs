// Cluster mode with the demo pages: the host page, opened on node A, joins a room that lives on
// node B (its WebSocket relayed by A, its media straight to B). B is killed: the relay tells
// the page `room_moved`, the page rejoins by itself, the room is placed again on A, and the
// host publishes again. Run inside a network namespace with only `lo` (tests/browser.rs).
//
// Env: CARGO_BIN_EXE_cohost (server binary, required), CHROMIUM, TIMEOUT_S.

import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { BIN, Harness, KEY, SECRET, check, log, waitFor } from './harness.mjs';

const ROOM = 'moving';

/** A free TCP port on loopback. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const children = [];
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

const redisPort = await freePort();
const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
children.push(redis);
const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
await waitFor('redis-server', () => new Promise((resolve) => {
  const c = connect(redisPort, '127.0.0.1');
  c.once('connect', () => { c.destroy(); resolve(true); });
  c.once('error', () => resolve(false));
}), 10000, 100);

// Node B first, alone in the fleet: the room is placed on it.
const bPort = await freePort();
const bBase = `http://127.0.0.1:${bPort}`;
const bLog = [];
const nodeB = spawn(BIN, [
  '--bind', `127.0.0.1:${bPort}`, '--media-ip', '127.0.0.1', '--udp-ports', '51400-51500',
  '--api-key', KEY, '--api-secret', SECRET, '--redis-url', redisUrl,
  '--node-id', 'b', '--advertise-url', bBase,
], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
children.push(nodeB);
for (const s of [nodeB.stdout, nodeB.stderr]) {
  s.setEncoding('utf8');
  s.on('data', (d) => bLog.push(...d.split('\n').filter(Boolean)));
}
await waitFor('node b /healthz', async () => {
  const r = await fetch(`${bBase}/healthz`).catch(() => null);
  return r && r.ok;
}, 30000, 100);
const created = await fetch(`${bBase}/api/rooms`, {
  method: 'POST',
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
  body: JSON.stringify({ name: ROOM }),
}).then((r) => r.json());
check(created.node === 'b', `room placed on b: ${JSON.stringify(created)}`);

// Node A: the harness's server, in the same fleet; the page is opened on it.
const h = new Harness({ udpPorts: '51300-51399', httpPortBase: 19080 });
h.serverArgs = ['--redis-url', redisUrl, '--node-id', 'a', '--advertise-url', h.base];

const state = (page) => page.evaluate(() => window.cohostState);
const publishState = (page) => page.evaluate(() => window.cohostPcs().publish?.connectionState);

async function main() {
  const host = await h.openPage('host', `${h.base}/host.html?room=${ROOM}&key=${KEY}&name=Host&identity=host1&autojoin=1`);
  await waitFor('host joined through a', async () => (await state(host))?.joined);
  await waitFor('host publishing (to b)', async () => (await publishState(host)) === 'connected');
  const info = await h.api('GET', `/api/rooms/${ROOM}`);
  check(info.body.node === 'b', `the room is on b: ${JSON.stringify(info.body)}`);
  log('host page on a, room on b, publishing');

  nodeB.kill('SIGKILL');
  const killed = Date.now();
  await waitFor('the page told room_moved', async () =>
    ((await state(host))?.errors || []).some((e) => e.code === 'room_moved'), 20000);
  await waitFor('host joined again', async () => (await state(host))?.joined, 30000);
  await waitFor('host publishing again (to a)', async () => (await publishPublishing(host)), 30000);
  const again = await h.api('GET', `/api/rooms/${ROOM}`);
  check(again.body.node === 'a', `the room came back on a: ${JSON.stringify(again.body)}`);
  log(`rejoined and publishing again ${((Date.now() - killed) / 1000).toFixed(1)} s after node b was killed`);
}

async function publishPublishing(page) {
  return (await publishState(page)) === 'connected';
}

async function diagnose() {
  for (const [who, page] of Object.entries(h.pages)) {
    const st = await page.evaluate(() => ({ state: window.cohostState, publish: window.cohostPcs?.().publish?.connectionState }))
      .catch((e) => `unavailable: ${e.message}`);
    console.error(`\n--- ${who} page state ---\n${JSON.stringify(st, null, 1)}`);
  }
  console.error('\n--- node b log (last 40) ---');
  for (const l of bLog.slice(-40)) console.error(l);
}

await h.run(main, diagnose);
