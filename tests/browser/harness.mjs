// Shared harness of the browser tests: starts the cohost server binary and headless Chromium
// (flags from the testing notes), opens pages with their console captured, mints tokens, and
// runs a scenario with diagnostics on failure. Scenarios run inside a network namespace with
// only `lo` (the Rust tests wrap them in `unshare --net`).
//
// Env: CARGO_BIN_EXE_cohost (server binary, required), CHROMIUM (default /usr/bin/chromium),
// TIMEOUT_S (per wait, default 40), SCREENSHOTS (a directory: the scenario saves PNGs there).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BIN = process.env.CARGO_BIN_EXE_cohost;
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const TIMEOUT_MS = Number(process.env.TIMEOUT_S || 40) * 1000;
export const KEY = 'testkey';
export const SECRET = '0123456789abcdef0123';

export function log(...a) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, fn, timeoutMs = TIMEOUT_MS, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what} (last: ${JSON.stringify(last?.message ?? last)})`);
}

export function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** A server and a browser for one scenario. */
export class Harness {
  /**
   * `udpPorts`: the server's media port range; `httpPortBase`: first of 1000 HTTP ports;
   * `viewport`: optional page size; `serverArgs`: more flags for the server.
   */
  constructor({ udpPorts, httpPortBase, viewport, serverArgs }) {
    if (!BIN) {
      console.error('CARGO_BIN_EXE_cohost is not set (path of the cohost server binary)');
      process.exit(2);
    }
    this.port = httpPortBase + Math.floor(Math.random() * 1000);
    this.base = `http://127.0.0.1:${this.port}`;
    this.udpPorts = udpPorts;
    this.viewport = viewport;
    this.serverArgs = serverArgs || [];
    this.serverLog = [];
    this.pageLogs = {};
    this.pages = {};
  }

  /** Starts the server (waits for /healthz) and Chromium. */
  async start() {
    const args = [
      '--bind', `127.0.0.1:${this.port}`,
      '--media-ip', '127.0.0.1',
      '--udp-ports', this.udpPorts,
      '--api-key', KEY,
      '--api-secret', SECRET,
      ...this.serverArgs,
    ];
    log('starting', BIN, args.join(' '));
    const server = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    this.server = server;
    for (const s of [server.stdout, server.stderr]) {
      s.setEncoding('utf8');
      s.on('data', (d) => {
        for (const line of d.split('\n')) if (line) this.serverLog.push(line);
        if (this.serverLog.length > 2000) this.serverLog.splice(0, this.serverLog.length - 2000);
      });
    }
    server.on('exit', (code, sig) => log(`server exited code=${code} signal=${sig}`));
    await waitFor('server /healthz', async () => {
      if (server.exitCode !== null) throw new Error('server exited');
      const r = await fetch(`${this.base}/healthz`).catch(() => null);
      return r && r.ok;
    }, 30000, 100);
    log('server up on', this.base);
    this.userDir = mkdtempSync(join(tmpdir(), 'cohost-chromium-'));
    this.context = await chromium.launchPersistentContext(this.userDir, {
      executablePath: CHROMIUM,
      headless: true,
      ...(this.viewport ? { viewport: this.viewport } : {}),
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream=fps=30',
        '--allow-loopback-in-peer-connection',
        '--autoplay-policy=no-user-gesture-required',
      ],
    });
    log('chromium launched');
  }

  /** Opens `url` as page `who`, capturing its console. */
  async openPage(who, url) {
    const page = await this.context.newPage();
    this.pages[who] = page;
    this.pageLogs[who] = this.pageLogs[who] || [];
    page.on('console', (m) => this.pageLogs[who].push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => this.pageLogs[who].push(`pageerror: ${e.message}`));
    await page.goto(url);
    return page;
  }

  /** An API call with the API key; the body is parsed as JSON when it is JSON. */
  async api(method, path, body) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, body: json };
  }

  /** A participant token minted through the API. */
  async mint(room, identity, role, name) {
    const r = await this.api('POST', '/api/tokens', { room, identity, role, name });
    if (r.status !== 200) throw new Error(`mint ${identity}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.token;
  }

  async screenshots() {
    if (!process.env.SCREENSHOTS) return;
    for (const [who, page] of Object.entries(this.pages)) await page.screenshot({ path: join(process.env.SCREENSHOTS, `${who}.png`) });
    log('screenshots in', process.env.SCREENSHOTS);
  }

  async cleanup() {
    if (this.context) await this.context.close().catch(() => {});
    const server = this.server;
    if (server && server.exitCode === null) {
      server.kill('SIGTERM');
      await Promise.race([new Promise((r) => server.once('exit', r)), sleep(3000)]);
      if (server.exitCode === null) server.kill('SIGKILL');
    }
    if (this.userDir) rmSync(this.userDir, { recursive: true, force: true });
  }

  /**
   * Runs `scenario(harness)`; on failure prints `diagnose(harness)`'s page states, every page's
   * console and the server log. Exits the process with 0 or 1.
   */
  async run(scenario, diagnose) {
    let failed = false;
    try {
      await this.start();
      await scenario(this);
      log('PASS');
    } catch (e) {
      failed = true;
      console.error(`\nFAIL: ${e.stack || e}`);
      if (diagnose) await diagnose(this).catch((err) => console.error(`(diagnostics failed: ${err.message})`));
      for (const who of Object.keys(this.pageLogs)) {
        console.error(`\n--- ${who} page console (last 60) ---`);
        for (const l of this.pageLogs[who].slice(-60)) console.error(l);
      }
      console.error('\n--- server log (last 80) ---');
      for (const l of this.serverLog.slice(-80)) console.error(l);
    }
    await this.cleanup();
    process.exit(failed ? 1 : 0);
  }
}
