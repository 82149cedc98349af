// HTTP-FLV in a browser: mpegts.js (npm, pinned in package.json, served from node_modules by
// this scenario's own little web app on another origin, never copied into the repository)
// plays the program at `GET /live/{room}.flv` in headless Chromium. The host page publishes
// a fake camera, which starts the program; then the player page is opened RUNS times (env
// FLV_RUNS, default 3), each time fresh, and
// - the video's `currentTime` advances in real time and
//   `getVideoPlaybackQuality().totalVideoFrames` grows (decoded pictures), at 1280x720;
// - the time from opening the page to its first picture on screen (the first
//   `requestVideoFrameCallback`) is printed: a measurement, not an assertion
//   (benches/RESULTS-audiences.md).
// Run inside a network namespace with only `lo` (tests/browser.rs does:
// `unshare --net sh -c 'ip link set lo up && exec "$@"' sh node flv_player.mjs`).
//
// Env: CARGO_BIN_EXE_cohost (server binary, required), CHROMIUM (default /usr/bin/chromium),
// TIMEOUT_S (per wait, default 40), FLV_RUNS (page opens measured, default 3).

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Harness, KEY, check, log, sleep, waitFor } from './harness.mjs';

const ROOM = 'flvtest';
const RUNS = Math.max(1, Number(process.env.FLV_RUNS || 3));
const here = dirname(fileURLToPath(import.meta.url));
const h = new Harness({ udpPorts: '51500-51600', httpPortBase: 24080, viewport: { width: 800, height: 500 } });
const appPort = 25080 + Math.floor(Math.random() * 1000);
const APP = `http://127.0.0.1:${appPort}`;

// The player page: mpegts.js with the settings its docs give for live streams (no stash
// buffer: the first picture is not held back to fill one).
const PAGE = `<!doctype html><meta charset="utf-8"><title>HTTP-FLV player</title>
<body style="margin:0;background:#000">
<video id="v" muted autoplay playsinline style="width:100%"></video>
<script src="/lib/mpegts.js"></script>
<script>
const src = new URLSearchParams(location.search).get('src');
const v = document.getElementById('v');
const st = window.flvState = { errors: [], logs: [], firstFrameWall: null, firstFrameMs: null, features: null, mediaInfo: null };
mpegts.LoggingControl.addLogListener((level, msg) => { st.logs.push(level + ': ' + msg); if (st.logs.length > 200) st.logs.shift(); });
st.features = mpegts.getFeatureList();
if (!st.features.mseLivePlayback) st.errors.push('no MSE live playback in this browser');
const player = window.player = mpegts.createPlayer(
  { type: 'flv', isLive: true, url: src, hasAudio: true, hasVideo: true },
  { enableWorker: false, enableStashBuffer: false, lazyLoad: false });
player.on(mpegts.Events.ERROR, (type, detail, info) => st.errors.push(type + ' ' + detail + ' ' + JSON.stringify(info)));
player.on(mpegts.Events.MEDIA_INFO, (m) => { st.mediaInfo = { width: m.width, height: m.height, videoCodec: m.videoCodec, audioCodec: m.audioCodec }; });
v.requestVideoFrameCallback(() => { st.firstFrameWall = Date.now(); st.firstFrameMs = performance.now(); });
player.attachMediaElement(v);
player.load();
const p = player.play();
if (p && p.catch) p.catch((e) => st.errors.push('play: ' + e));
window.sample = () => {
  const q = v.getVideoPlaybackQuality();
  return { currentTime: v.currentTime, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    width: v.videoWidth, height: v.videoHeight, paused: v.paused, readyState: v.readyState,
    buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0 };
};
</script>`;

function startApp() {
  const lib = readFileSync(join(here, 'node_modules/mpegts.js/dist/mpegts.js'));
  const server = createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/player.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (path === '/lib/mpegts.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(lib);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(appPort, '127.0.0.1', () => resolve(server)));
}

const state = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.flvState)));
const sample = (page) => page.evaluate(() => window.sample());

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const app = await startApp();
  try {
    // The host publishes: that starts the room's program.
    const host = await h.openPage('host', `${h.base}/host.html?room=${ROOM}&key=${KEY}&name=Host&identity=host1`);
    await host.click('#join');
    await waitFor('host publishing', async () =>
      (await host.evaluate(() => window.cohostPcs().publish?.connectionState)) === 'connected');
    log('host joined and publishing');
    const flvUrl = `${h.base}/live/${ROOM}.flv`;
    await waitFor('the program on HTTP-FLV', async () => {
      const r = await fetch(flvUrl);
      const ok = r.status === 200 && r.headers.get('content-type') === 'video/x-flv';
      await r.body?.cancel().catch(() => {});
      return ok;
    });
    // A GOP in the cache: a player would otherwise wait for the program's second keyframe.
    await sleep(2500);

    const firsts = [];
    for (let run = 1; run <= RUNS; run++) {
      const who = `player${run}`;
      const opened = Date.now();
      const page = await h.openPage(who, `${APP}/player.html?src=${encodeURIComponent(flvUrl)}`);
      const st = await waitFor(`${who}: first picture`, async () => {
        const s = await state(page);
        if (s.errors.length) throw new Error(`player errors: ${s.errors.join('; ')}`);
        return s.firstFrameWall && s;
      });
      const first = st.firstFrameWall - opened;
      firsts.push(first);
      log(`${who}: first picture ${first} ms after opening the page (${st.firstFrameMs.toFixed(0)} ms after its navigation start)`, JSON.stringify(st.mediaInfo));
      const s1 = await sample(page);
      await sleep(2000);
      const s2 = await sample(page);
      log(`${who}: currentTime ${s1.currentTime.toFixed(2)} -> ${s2.currentTime.toFixed(2)}, frames ${s1.frames} -> ${s2.frames} (dropped ${s2.dropped}), ${s2.width}x${s2.height}, buffered ${s2.buffered.toFixed(2)} s`);
      check(s2.currentTime - s1.currentTime > 1.2, `${who}: currentTime must advance in real time (${s1.currentTime} -> ${s2.currentTime} in 2 s)`);
      check(s2.frames - s1.frames >= 20, `${who}: decoded pictures must grow (${s1.frames} -> ${s2.frames} in 2 s)`);
      check(s2.width === 1280 && s2.height === 720, `${who}: the program's size, not ${s2.width}x${s2.height}`);
      const fin = await state(page);
      check(fin.errors.length === 0, `${who}: player errors ${JSON.stringify(fin.errors)}`);
      if (run === RUNS) await h.screenshots();
      await page.evaluate(() => { window.player.destroy(); });
      await page.close();
      delete h.pages[who];
    }
    log(`FLV first picture (page open -> first frame), ${RUNS} runs: ${firsts.join(', ')} ms; median ${median(firsts)} ms`);
    const errors = (await host.evaluate(() => window.cohostState)).errors || [];
    check(errors.length === 0, `host page errors: ${JSON.stringify(errors)}`);
  } finally {
    app.close();
  }
}

async function diagnose() {
  for (const [who, page] of Object.entries(h.pages)) {
    if (!who.startsWith('player')) continue;
    const st = await state(page).catch((e) => `unavailable: ${e.message}`);
    const sm = await sample(page).catch((e) => `unavailable: ${e.message}`);
    console.error(`\n--- ${who} state ---\n${JSON.stringify({ st, sm }, null, 1)}`);
  }
}

await h.run(main, diagnose);
