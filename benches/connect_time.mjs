// Connect time of a WHIP publisher in headless Chromium, trickling vs gathering, same run:
// - trickle: medooze's `whip-whep` (npm) posts its offer before gathering and PATCHes the
//   candidates (RFC 9725 §4.3);
// - gathering: the page waits for ICE gathering to complete and posts an offer carrying every
//   candidate (OBS and most SDKs).
// Alternating, ROUNDS times each (default 10), each in a fresh room. Reports, per kind, the
// time from the start (offer created) and from the POST to `connectionState == "connected"`
// (p50 / p95 / max).
//
// Run inside a network namespace with only `lo` (TESTING.md):
//   cargo build --release --bin cohost
//   npm ci --prefix tests/browser
//   CARGO_BIN_EXE_cohost=target/release/cohost unshare --net sh -c 'ip link set lo up && exec "$@"' sh node benches/connect_time.mjs

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
process.env.CARGO_BIN_EXE_cohost ||= join(here, '..', 'target', 'release', 'cohost');
const { Harness, log, waitFor, sleep } = await import(join(here, '..', 'tests', 'browser', 'harness.mjs'));
const { startApp } = await import(join(here, '..', 'tests', 'browser', 'app_server.mjs'));

const ROUNDS = Number(process.env.ROUNDS || 10);
const appPort = 24000 + Math.floor(Math.random() * 1000);
const APP = `http://127.0.0.1:${appPort}`;
const h = new Harness({ udpPorts: '52000-52200', httpPortBase: 25080, serverArgs: ['--cors-origins', APP] });

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

async function main() {
  const app = await startApp(appPort, h.base);
  const out = { trickle: { start: [], post: [] }, gathering: { start: [], post: [] } };
  try {
    const page = await h.openPage('app', `${APP}/app.html`);
    await waitFor('page ready', () => page.evaluate(() => window.ready === true));
    for (let i = 0; i < ROUNDS; i++) {
      for (const kind of i % 2 ? ['gathering', 'trickle'] : ['trickle', 'gathering']) {
        const room = `ct${i}${kind[0]}`;
        const token = await h.mint(room, 'pub', 'host', 'Publisher');
        const fn = kind === 'trickle' ? 'publish' : 'publishGathered';
        const url = `${h.base}/whip/${room}`;
        await page.evaluate(([f, u, t]) => window[f](u, t), [fn, url, token]);
        const t = await waitFor(`${kind} ${i} connected`, async () => {
          const s = (await page.evaluate(() => window.timing())).find((x) => x.url === url);
          return s && s.connected ? s : null;
        }, 20000, 20);
        out[kind].start.push(t.connected - t.started);
        out[kind].post.push(t.connected - t.posted);
        log(`${kind} ${i}: start->connected ${(t.connected - t.started).toFixed(0)} ms, POST->connected ${(t.connected - t.posted).toFixed(0)} ms`);
        await page.evaluate(() => window.stop());
        await sleep(300);
      }
    }
  } finally {
    app.close();
  }
  console.log('\n| client | from | n | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|---|');
  for (const [kind, r] of Object.entries(out)) {
    for (const from of ['start', 'post']) {
      const xs = r[from];
      console.log(`| ${kind} | ${from === 'start' ? 'offer created' : 'POST sent'} | ${xs.length} | ${pct(xs, 50).toFixed(0)} | ${pct(xs, 95).toFixed(0)} | ${Math.max(...xs).toFixed(0)} |`);
    }
  }
}

h.run(main);
