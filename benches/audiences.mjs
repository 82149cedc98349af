// Audiences of one room's program, in the same run, for a new viewer: glass-to-glass delay
// over LL-HLS (the audience page itself), classic HLS (hls.js without low-latency mode),
// HTTP-FLV (mpegts.js) and program WHEP, the time to the first picture of each, and the time
// from a cue's POST to its overlay on the audience page.
//
// Run inside a network namespace with only `lo` (see /work/shared/TESTING.md):
//   cargo build --bin cohost                       # the debug build is the default here
//   npm ci --prefix tests/browser && npm ci --prefix web-demo
//   unshare --net sh -c 'ip link set lo up && exec "$@"' sh node benches/audiences.mjs
//
// Env: COHOST_BIN (default target/debug/cohost), CHROMIUM (default /usr/bin/chromium),
//   ORDER (paths in measuring order, default `ll,hls,flv,aflv,whep`), SECONDS (glass-to-glass
//   window per path, default 25), WARMUP_S (seconds after the viewer's first picture before the
//   window, default 5), OPENS (page opens for the first picture per path, besides the
//   measured viewer's own, default 5), CUES (default 10), SOURCE (`canvas` default or
//   `generator`, as in glass_to_glass.mjs), AUDIO (default 1: the sender also publishes a tone),
//   FLV_CONFIG / HLS_CONFIG (JSON merged over the mpegts.js / classic hls.js config below),
//   WHEP_AUDIO=0 (the WHEP viewer offers video only), STALL_AT_S / STALL_MS (a diagnostic:
//   that many seconds after the HLS viewers' first picture, their /live/ requests are held
//   STALL_MS, default 2000, as a network hiccup would), JSON (a file for the raw results and
//   each path's samples), SERVER_LOG (a file for the server's log), LOG_SERVER=1, HLS_DEBUG=1
//   (a diagnostic, with JSON: the audience page's hls.js log with each playlist's text, and
//   after each idle tick of its stream controller that loaded nothing, the fragment it would
//   pick and why — `X` lines in `hls_log`; timing-sensitive, it may hide what it looks for).
//
// One Chromium, one page: the sender (benches/blocks.mjs: frame counter and send time drawn as
// blocks on a 640x360 canvas, published over WHIP as the room's only co-host, H.264) and each
// viewer in an iframe of that page, opened fresh (one page keeps the sender's
// requestAnimationFrame at 60 Hz; a second page throttles it, see RESULTS-glass.md). The
// program composites the co-host full-frame on its 1280x720 canvas; each viewer reads the
// blocks back at their scaled place (from the room's mix state) from every presented frame
// (requestVideoFrameCallback, drawImage of the <video> at videoWidth x videoHeight).
//   - ll:   /audience.html?room=... (cohost's own page: hls.js 1.7.4 lowLatencyMode, its
//           catch-up), blocks read from its #video by a script added to its frame.
//   - hls:  hls.js (the server's /vendor/hls.min.js) with `{lowLatencyMode: false}` and
//           everything else default (start and stay HOLD-BACK behind the edge, no catch-up).
//   - flv:  mpegts.js 1.8.2 (tests/browser/node_modules) on /live/{room}.flv, `isLive`,
//           `enableStashBuffer: false`, `liveBufferLatencyChasing: true` (seek to
//           buffered end − 0.5 s when more than 1.5 s is buffered: the defaults of
//           liveBufferLatencyMaxLatency / MinRemain), no worker, `lazyLoad: false`.
//   - aflv: /audience.html?room=...&player=flv (the audience page's own mpegts.js player:
//           liveSync 1.2x beyond 1.0 s buffered, target 0.5 s; its settings, not ours);
//           its cues are measured as the ll path's.
//   - whep: RTCPeerConnection recvonly video + audio, `POST /whep/{room}` with a viewer token
//           (offer after ICE gathering, as glass_to_glass.mjs), default jitter buffer.
// Glass to glass = timeOrigin + expectedDisplayTime − the send time in the blocks, for the
// first presentation of each sender frame, over SECONDS after WARMUP_S; the same from the
// viewer's first picture on ("whole") is given too. A stall presents no frames, so it hardly
// shows in per-frame figures: "on screen" is the age of the picture on screen every 50 ms of
// the window (a frozen picture keeps ageing), which does count it. First picture = the viewer document's
// performance.now() at its first requestVideoFrameCallback (navigation start → first picture;
// the audience page's own `audienceState.firstFrameMs`), and from the parent's iframe insertion.
// Cue → overlay = POST /api/rooms/{room}/cues (API key) → the audience page's
// `audienceState.cuesShown[].at` (Date.now() when the `.cue` element is added), same clock.

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { senderScript, decoderScript } from './blocks.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

const BIN = process.env.COHOST_BIN || join(here, '..', 'target', 'debug', 'cohost');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ORDER = (process.env.ORDER || 'll,hls,flv,aflv,whep').split(',');
const MEASURE_S = Number(process.env.SECONDS || 25);
const WARMUP_S = Number(process.env.WARMUP_S || 5);
const OPENS = Number(process.env.OPENS ?? 5);
const CUES = Number(process.env.CUES ?? 10);
const SOURCE = process.env.SOURCE || 'canvas';
const AUDIO = process.env.AUDIO !== '0';
const WHEP_AUDIO = process.env.WHEP_AUDIO !== '0';
const STALL_AT_S = Number(process.env.STALL_AT_S || 0);
const STALL_MS = Number(process.env.STALL_MS || 2000);
const W = 640, H = 360;
const KEY = 'testkey';
const SECRET = '0123456789abcdef0123';
const ROOM = 'aud';

const FLV_CONFIG = {
  enableWorker: false, enableStashBuffer: false, lazyLoad: false,
  liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 1.5, liveBufferLatencyMinRemain: 0.5,
  ...JSON.parse(process.env.FLV_CONFIG || '{}'),
};
const HLS_CONFIG = { lowLatencyMode: false, ...JSON.parse(process.env.HLS_CONFIG || '{}') };

const GOALS = {
  ll: { g2g: 2000, first: 1000 },
  hls: { g2g: null, first: 1000 },
  flv: { g2g: 1500, first: 500 },
  aflv: { g2g: 1500, first: 500 },
  whep: { g2g: null, first: 500 },
};
const PAGE_PATHS = ['ll', 'aflv']; // cohost's own audience page
const NAMES = { ll: 'LL-HLS (audience page)', aflv: 'HTTP-FLV (audience page ?player=flv)', hls: 'classic HLS (hls.js, lowLatencyMode false)', flv: 'HTTP-FLV (mpegts.js)', whep: 'program WHEP' };
const CUE_GOAL = 2000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...a);

// ---------------------------------------------------------------- pages
const MAIN_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>audiences bench</title>
<style>body{margin:0;background:#222;color:#ccc;font:12px sans-serif} canvas{display:block;width:320px;height:180px}
iframe{border:0;width:960px;height:600px;display:block;background:#000}</style></head><body>
<canvas id="c"></canvas><div id="frames"></div>
<script>${senderScript({ W, H, source: SOURCE, audio: AUDIO })}</script>
<script>
function preferH264(tr) {
  const caps = RTCRtpSender.getCapabilities('video');
  const h = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/h264'
      && /packetization-mode=1/.test(c.sdpFmtpLine || '') && /profile-level-id=42(e0|00)1f/.test(c.sdpFmtpLine));
  h.sort((a, b) => (/42e01f/.test(b.sdpFmtpLine) ? 1 : 0) - (/42e01f/.test(a.sdpFmtpLine) ? 1 : 0));
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx');
  tr.setCodecPreferences(h.concat(rtx));
}
function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(res, 5000);
    pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') { clearTimeout(t); res(); } });
  });
}
// WHIP: the sender's stream as the room's co-host.
window.publish = async (url, token) => {
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  window.pub = pc;
  const s = window.senderStream;
  preferH264(pc.addTransceiver(s.getVideoTracks()[0], { direction: 'sendonly', streams: [s] }));
  for (const a of s.getAudioTracks()) pc.addTransceiver(a, { direction: 'sendonly', streams: [s] });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + token }, body: pc.localDescription.sdp });
  const text = await r.text();
  if (r.status !== 201) throw new Error('WHIP ' + r.status + ' ' + text);
  await pc.setRemoteDescription({ type: 'answer', sdp: text });
  return r.headers.get('location');
};
window.pubState = () => window.pub && window.pub.connectionState;
window.pubStats = async () => {
  const st = await window.pub.getStats(); let o = null;
  st.forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'video') o = { fps: r.framesPerSecond, w: r.frameWidth, h: r.frameHeight, kbps: null, bytes: r.bytesSent, frames: r.framesEncoded, limitation: r.qualityLimitationReason }; });
  return o;
};
window.openFrame = (id, url) => {
  const f = document.createElement('iframe');
  f.id = id; f.allow = 'autoplay';
  const t = performance.timeOrigin + performance.now();
  f.src = url;
  document.getElementById('frames').append(f);
  return t;
};
window.closeFrame = (id) => { const f = document.getElementById(id); if (f) f.remove(); };
window.clock = () => performance.timeOrigin + performance.now();
</script></body></html>`;

const VIEWER_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>viewer</title>
<style>body{margin:0;background:#000} video{display:block;width:100%;height:100%;object-fit:contain}</style></head>
<body><video id="v" muted autoplay playsinline></video>
<script>${decoderScript()}</script>
<script>
const q = new URLSearchParams(location.search);
const kind = q.get('kind'), base = q.get('base'), room = q.get('room');
const v = document.getElementById('v');
g2g.hook(v, { record: q.get('record') === '1', rect: q.get('rect') ? JSON.parse(q.get('rect')) : null });
const st = window.viewerState = { kind, errors: [] };
const play = () => { const p = v.play(); if (p && p.catch) p.catch((e) => st.errors.push('play: ' + e.message)); };
const bufferedAhead = () => { const b = v.buffered; for (let i = 0; i < b.length; i++) if (b.end(i) >= v.currentTime) return b.end(i) - v.currentTime; return 0; };
const loadScript = (src) => new Promise((res, rej) => { const s = document.createElement('script'); s.src = src; s.onload = res; s.onerror = () => rej(new Error('load ' + src)); document.head.append(s); });
window.viewerInfo = async () => ({ currentTime: v.currentTime, bufferedAhead: bufferedAhead(), playbackRate: v.playbackRate, w: v.videoWidth, h: v.videoHeight });
window.viewerClose = async () => {};
(async () => {
  if (kind === 'hls') {
    await loadScript(base + '/vendor/hls.min.js');
    const hls = window.hls = new Hls(JSON.parse(q.get('config')));
    hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) st.errors.push('hls.js ' + d.type + ' ' + d.details); });
    hls.on(Hls.Events.MANIFEST_PARSED, play);
    hls.loadSource(base + '/live/' + room + '/index.m3u8');
    hls.attachMedia(v);
    const vi = window.viewerInfo;
    window.viewerInfo = async () => ({ ...(await vi()), latency: hls.latency, targetLatency: hls.targetLatency, drift: hls.drift,
      pdtLatency: hls.playingDate ? (Date.now() - hls.playingDate.getTime()) / 1000 : null });
    window.viewerClose = async () => hls.destroy();
  } else if (kind === 'flv') {
    await loadScript('/lib/mpegts.js');
    const player = window.player = mpegts.createPlayer(
      { type: 'flv', isLive: true, url: base + '/live/' + room + '.flv', hasAudio: true, hasVideo: true },
      JSON.parse(q.get('config')));
    player.on(mpegts.Events.ERROR, (t, d, i) => st.errors.push('mpegts ' + t + ' ' + d + ' ' + JSON.stringify(i)));
    player.attachMediaElement(v);
    player.load();
    const p = player.play(); if (p && p.catch) p.catch((e) => st.errors.push('play: ' + e.message));
    window.viewerClose = async () => { player.pause(); player.unload(); player.detachMediaElement(); player.destroy(); };
  } else if (kind === 'whep') {
    const pc = window.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    if (q.get('audio') !== '0') pc.addTransceiver('audio', { direction: 'recvonly' });
    const ms = new MediaStream();
    pc.ontrack = (e) => { ms.addTrack(e.track); if (e.track.kind === 'video') { v.srcObject = ms; play(); } };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === 'complete') return res();
      const t = setTimeout(res, 2000);
      pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') { clearTimeout(t); res(); } });
    });
    st.offerAt = performance.now();
    const r = await fetch(base + '/whep/' + room, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + q.get('token') }, body: pc.localDescription.sdp });
    const text = await r.text();
    if (r.status !== 201) throw new Error('WHEP ' + r.status + ' ' + text);
    st.answerAt = performance.now();
    const loc = r.headers.get('location');
    await pc.setRemoteDescription({ type: 'answer', sdp: text });
    pc.addEventListener('connectionstatechange', () => { if (pc.connectionState === 'connected') st.connectedAt = performance.now(); });
    window.viewerInfo = async () => {
      const s = await pc.getStats(); let o = {};
      s.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video') o = x; });
      return { w: v.videoWidth, h: v.videoHeight, connection: pc.connectionState,
        jitterBufferMs: o.jitterBufferEmittedCount ? 1000 * o.jitterBufferDelay / o.jitterBufferEmittedCount : null,
        jitterBufferTargetMs: o.jitterBufferEmittedCount ? 1000 * o.jitterBufferTargetDelay / o.jitterBufferEmittedCount : null,
        jitterMs: 1000 * o.jitter, framesReceived: o.framesReceived,
        jb: [o.jitterBufferDelay, o.jitterBufferTargetDelay, o.jitterBufferEmittedCount],
        framesDecoded: o.framesDecoded, framesDropped: o.framesDropped, packetsLost: o.packetsLost, nack: o.nackCount, pli: o.pliCount,
        codec: o.codecId && s.get(o.codecId) ? s.get(o.codecId).mimeType : null,
        offerAt: st.offerAt, answerAt: st.answerAt, connectedAt: st.connectedAt };
    };
    window.viewerClose = async () => {
      pc.close();
      if (loc) await fetch(new URL(loc, base).href, { method: 'DELETE', headers: { Authorization: 'Bearer ' + q.get('token') } }).catch(() => {});
    };
  } else throw new Error('kind ' + kind);
})().catch((e) => st.errors.push(String(e && e.message || e)));
</script></body></html>`;

// ---------------------------------------------------------------- helpers
function pct(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
function summarize(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  return { n: s.length, mean, p50: pct(s, 50), p95: pct(s, 95), p99: pct(s, 99), min: s[0], max: s[s.length - 1] };
}
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const median = (xs) => pct([...xs].filter(Number.isFinite).sort((a, b) => a - b), 50);

/** [at (ms), glass (ms)] per frame, sorted -> the on-screen picture's age every 50 ms in [t0, t1). */
function onScreenAges(frames, t0, t1) {
  const out = [];
  let i = 0;
  for (let t = t0; t < t1; t += 50) {
    while (i + 1 < frames.length && frames[i + 1][0] <= t) i++;
    if (frames.length && frames[i][0] <= t) out.push(t - frames[i][0] + frames[i][1]);
  }
  return out;
}

async function waitFor(what, fn, ms = 30000, every = 100) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})`);
}

// ---------------------------------------------------------------- main
const port = 20000 + Math.floor(Math.random() * 1000);
const base = `http://127.0.0.1:${port}`;
let server, http, context, userDir;
const serverLog = [];

async function api(method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, body: json };
}
async function mint(identity, role) {
  const r = await api('POST', '/api/tokens', { room: ROOM, identity, role, ttl_s: 3600 });
  if (r.status !== 200) throw new Error(`token ${identity}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.token;
}

async function main() {
  const mpegts = readFileSync(join(here, '..', 'tests', 'browser', 'node_modules', 'mpegts.js', 'dist', 'mpegts.js'));
  http = createServer((req, res) => {
    const path = req.url.split('?')[0];
    const send = (type, body) => { res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }); res.end(body); };
    if (path === '/') send('text/html; charset=utf-8', MAIN_PAGE);
    else if (path === '/viewer.html') send('text/html; charset=utf-8', VIEWER_PAGE);
    else if (path === '/lib/mpegts.js') send('text/javascript', mpegts);
    else { res.writeHead(404); res.end(); }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const app = `http://127.0.0.1:${http.address().port}`;

  const args = ['--bind', `127.0.0.1:${port}`, '--media-ip', '127.0.0.1', '--udp-ports', '52300-52500',
    '--api-key', KEY, '--api-secret', SECRET, '--cors-origins', '*'];
  log('starting', BIN, args.join(' '));
  server = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  for (const s of [server.stdout, server.stderr]) {
    s.setEncoding('utf8');
    s.on('data', (d) => {
      for (const line of d.split('\n')) if (line) { serverLog.push(line); if (process.env.LOG_SERVER) console.error('server:', line); }
      const cap = process.env.SERVER_LOG ? 50000 : 3000;
      if (serverLog.length > cap) serverLog.splice(0, serverLog.length - cap);
    });
  }
  await waitFor('server /healthz', async () => {
    if (server.exitCode !== null) throw new Error('server exited');
    const r = await fetch(`${base}/healthz`).catch(() => null);
    return r && r.ok;
  });
  const vendor = await fetch(`${base}/vendor/hls.min.js`);
  if (!vendor.ok) throw new Error(`/vendor/hls.min.js: ${vendor.status} (npm ci --prefix web-demo)`);
  await vendor.arrayBuffer();

  userDir = mkdtempSync(join(tmpdir(), 'aud-chromium-'));
  context = await chromium.launchPersistentContext(userDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1000, height: 820 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream=fps=30',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows'],
  });
  if (process.env.HLS_DEBUG) {
    // A diagnostic: hls.js's own log (debug: a logger) in the audience page's frames, kept in
    // window.hlsLog, by wrapping the Hls constructor the page's script defines.
    await context.addInitScript(() => {
      if (location.pathname !== '/audience.html') return;
      const logs = (window.hlsLog = []);
      const put = (lvl) => (...a) => { logs.push(`${(performance.timeOrigin + performance.now()).toFixed(0)} ${lvl} ${a.map(String).join(' ')}`); if (logs.length > 20000) logs.shift(); };
      const logger = { trace: put('T'), debug: put('D'), log: put('L'), info: put('I'), warn: put('W'), error: put('E') };
      // Why an idle tick loaded nothing: after each of the stream controller's idle ticks
      // that left it idle, what its own fragment choice says (logged as `X` when it changes;
      // hls.js internals, 1.7.x).
      const trace = (hls) => {
        const sc = hls.streamController;
        if (!sc || typeof sc.doTickIdle !== 'function') return;
        const tick = sc.doTickIdle.bind(sc);
        let last = '';
        const fmt = (x) => (typeof x === 'number' ? x.toFixed(3) : String(x));
        sc.doTickIdle = () => {
          tick();
          if (sc.state !== 'IDLE') { last = ''; return; }
          let s;
          try {
            const bi = sc.getMainFwdBufferInfo();
            const d = sc.getLevelDetails();
            const lvl = sc.levels?.[sc.level];
            if (!bi || !d) s = `no buffer info / details`;
            else {
              const f = sc.getNextFragment(bi.end, d);
              const prev = sc.fragPrevious;
              const parts = (sn) => (d.partList || []).filter((p) => p.fragment.sn === sn).map((p) => (p.loaded ? 'L' : '.')).join('');
              s = `buf ${fmt(bi.end)} len ${fmt(bi.len)} t ${fmt(sc.media?.currentTime)} next ${fmt(sc.nextLoadPosition)} parts ${sc.loadingParts} ` +
                `waitLive ${lvl ? sc.waitForLive(lvl) : '?'} prev ${prev?.sn}[${prev ? fmt(prev.start) + '-' + fmt(prev.end) : ''}] ${prev ? sc.fragmentTracker.getState(prev) : ''} ` +
                `frags ${d.startSN}-${d.endSN} end ${fmt(d.fragmentEnd)} partEnd ${fmt(d.partEnd)} hint ${d.fragmentHint?.sn}[${fmt(d.fragmentHint?.start)}] ` +
                `pick ${f ? `${f.sn}[${fmt(f.start)}-${fmt(f.end)}] ${sc.fragmentTracker.getState(f)} loop ${sc.isLoopLoading(f, bi.end)}` : 'none'} ` +
                `partsOf prev ${parts(prev?.sn)} next ${parts((prev?.sn ?? -2) + 1)} backtrack ${sc.backtrackFragment?.sn}`;
            }
          } catch (e) { s = `trace error ${e.message}`; }
          if (s !== last) { last = s; put('X')(s); }
        };
      };
      let H;
      Object.defineProperty(window, 'Hls', {
        configurable: true,
        get: () => H,
        set: (v) => { H = class extends v { constructor(cfg) { super({ ...cfg, debug: logger }); trace(this); } }; },
      });
    });
  }
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') log(`console (${m.location()?.url?.slice(0, 60)}): ${m.text().slice(0, 300)}`); });
  await page.goto(`${app}/`);
  await page.evaluate(() => window.startSender(document.getElementById('c')));
  const browserVersion = context.browser()?.version() ?? (await page.evaluate(() => navigator.userAgent));

  const hostTok = await mint('sender', 'host');
  const viewerTok = await mint('fan', 'viewer');
  await page.evaluate(([u, t]) => window.publish(u, t), [`${base}/whip/${ROOM}`, hostTok]);
  await waitFor('WHIP connected', async () => (await page.evaluate(() => window.pubState())) === 'connected', 20000);
  log('sender publishing over WHIP');
  // Enough segments behind the edge for a classic player's HOLD-BACK.
  const playlist = await waitFor('HLS playlist with 4 segments', async () => {
    const r = await fetch(`${base}/live/${ROOM}/index.m3u8`);
    const t = r.ok ? await r.text() : '';
    return (t.match(/#EXTINF/g) || []).length >= 4 && t;
  }, 40000, 250);
  const header = playlist.split('\n').filter((l) => /^#EXT-X-(VERSION|TARGETDURATION|PART-INF|SERVER-CONTROL)/.test(l));
  log('playlist:', header.join(' '));
  const room = await api('GET', `/api/rooms/${ROOM}`);
  const mix = room.body?.mix ?? room.body?.mix_state ?? {};
  const regions = JSON.stringify(room.body).match(/"regions":(\[[^\]]*\])/);
  let rect = null;
  try {
    const rs = regions ? JSON.parse(regions[1]) : [];
    const r = rs.find((x) => x.identity === 'sender') || rs[0];
    const cw = mix.width || 1280, ch = mix.height || 720;
    if (r) rect = { x: r.x, y: r.y, w: r.w, h: r.h, cw, ch };
  } catch { /* whole picture */ }
  if (rect && Math.abs(rect.w / rect.h - W / H) > 0.01) {
    log(`the sender's region ${JSON.stringify(rect)} is not ${W}:${H}: reading the whole picture`);
    rect = null;
  }
  log('sender region on the program canvas:', JSON.stringify(rect));
  const d0 = await page.evaluate(() => window.senderDraws());
  await sleep(1000);
  log(`sender draws ${(await page.evaluate(() => window.senderDraws())) - d0} frames/s, ${JSON.stringify(await page.evaluate(() => window.pubStats()))}`);

  const results = {
    when: new Date().toISOString(), bin: BIN, chromium: browserVersion, order: ORDER, seconds: MEASURE_S,
    warmup_s: WARMUP_S, source: SOURCE, audio: AUDIO, flv_config: FLV_CONFIG, hls_config: HLS_CONFIG,
    playlist_header: header, rect, paths: {}, cues: {},
  };

  let frameNo = 0;
  const urlFor = (kind, record) => {
    if (kind === 'll') return `${base}/audience.html?room=${ROOM}`;
    if (kind === 'aflv') return `${base}/audience.html?room=${ROOM}&player=flv`;
    const q = new URLSearchParams({ kind, base, room: ROOM, record: record ? '1' : '0' });
    if (rect) q.set('rect', JSON.stringify(rect));
    if (kind === 'hls') q.set('config', JSON.stringify(HLS_CONFIG));
    if (kind === 'flv') q.set('config', JSON.stringify(FLV_CONFIG));
    if (kind === 'whep') { q.set('token', viewerTok); q.set('audio', WHEP_AUDIO ? '1' : '0'); }
    return `${app}/viewer.html?${q}`;
  };
  /** The playlist's header now and its longest segment (HOLD-BACK follows TARGETDURATION). */
  async function playlistNow() {
    const t = await (await fetch(`${base}/live/${ROOM}/index.m3u8`)).text();
    const ext = [...t.matchAll(/#EXTINF:([0-9.]+)/g)].map((m) => Number(m[1]));
    return { header: t.split('\n').filter((l) => /^#EXT-X-(TARGETDURATION|SERVER-CONTROL)/.test(l)).join(' '), extinf_max: Math.max(...ext), extinf_min: Math.min(...ext) };
  }
  /** Opens a viewer in a fresh iframe; resolves at its first picture. */
  async function open(kind, record) {
    const id = `f${++frameNo}`;
    const openAt = await page.evaluate(([i, u]) => window.openFrame(i, u), [id, urlFor(kind, record)]);
    const el = await page.waitForSelector(`#${id}`, { state: 'attached' });
    const fr = await el.contentFrame();
    const first = await waitFor(`${kind}: first picture`, async () => {
      const s = await fr.evaluate(() => {
        if (location.href === 'about:blank') return null;
        const errs = (window.viewerState || window.audienceState || {}).errors || [];
        if (window.audienceState) {
          const a = window.audienceState;
          return { errors: errs, first: a.firstFrameMs != null ? { ms: a.firstFrameMs, abs: performance.timeOrigin + a.firstFrameMs } : null };
        }
        return { errors: errs, first: window.g2g?.state.first };
      });
      if (s?.errors?.length) throw new Error(s.errors.join('; '));
      return s?.first;
    }, 20000, 50);
    if (PAGE_PATHS.includes(kind) && record) {
      await fr.addScriptTag({ content: decoderScript() });
      await fr.evaluate((r) => window.g2g.hook(document.getElementById('video'), { record: true, rect: r }), rect);
    }
    return { id, fr, first: { nav_ms: first.ms, open_ms: first.abs - openAt } };
  }
  async function close(v) {
    await v.fr.evaluate(() => window.viewerClose?.()).catch(() => {});
    await page.evaluate((i) => window.closeFrame(i), v.id);
  }
  async function info(kind, fr) {
    if (PAGE_PATHS.includes(kind)) {
      return fr.evaluate(() => {
        const a = window.audienceState, v = document.getElementById('video');
        let ahead = 0;
        for (let i = 0; i < v.buffered.length; i++) if (v.buffered.end(i) >= v.currentTime) ahead = v.buffered.end(i) - v.currentTime;
        return { pdtLatency: a.latency, latency: a.edgeLatency, targetLatency: a.targetLatency, playbackRate: a.playbackRate, bufferedAhead: ahead, w: v.videoWidth, h: v.videoHeight, errors: a.errors };
      });
    }
    return fr.evaluate(() => window.viewerInfo());
  }

  for (const kind of ORDER) {
    const r = { name: NAMES[kind], firsts: [], errors: [] };
    results.paths[kind] = r;
    log(`${kind}: ${OPENS} page opens for the first picture`);
    for (let i = 0; i < OPENS; i++) {
      try {
        const v = await open(kind, false);
        r.firsts.push(v.first);
        log(`${kind}: open ${i + 1}: first picture ${f0(v.first.nav_ms)} ms after navigation start (${f0(v.first.open_ms)} ms after the iframe was inserted)`);
        await sleep(300);
        await close(v);
      } catch (e) {
        r.errors.push(`open ${i + 1}: ${e.message}`);
        log(`${kind}: open ${i + 1} FAILED: ${e.message}`);
        await page.evaluate(() => { for (const f of document.querySelectorAll('iframe')) f.remove(); });
      }
      await sleep(500 + Math.random() * 2000); // spread the opens over the GOP / segment phase
    }
    log(`${kind}: the measured viewer`);
    const la0 = loadavg()[0];
    const dr0 = await page.evaluate(() => window.senderDraws());
    // The measured viewer's HTTP requests to /live/ (to see what a stall waited for).
    const reqs = [];
    const reqStart = new Map();
    const onReq = (q) => { if (q.url().includes('/live/')) reqStart.set(q, Date.now()); };
    const onEnd = (failed) => async (q) => {
      const t0 = reqStart.get(q);
      if (t0 === undefined) return;
      reqStart.delete(q);
      const res = failed ? null : await q.response().catch(() => null);
      const body = process.env.HLS_DEBUG && res && /\.m3u8/.test(q.url()) ? await res.text().catch(() => null) : undefined;
      reqs.push({ url: q.url().replace(/^.*\/live\//, ''), start: t0, end: Date.now(), status: res ? res.status() : 'failed', body });
    };
    const onFin = onEnd(false), onFail = onEnd(true);
    page.on('request', onReq);
    page.on('requestfinished', onFin);
    page.on('requestfailed', onFail);
    const v = await open(kind, true);
    r.firsts.push({ ...v.first, measured: true });
    log(`${kind}: first picture ${f0(v.first.nav_ms)} ms; warming up ${WARMUP_S} s, then ${MEASURE_S} s`);
    let stallTimer = null;
    if (STALL_AT_S > 0 && (kind === 'll' || kind === 'hls')) {
      // A network hiccup: every /live/ request of the viewer made in these STALL_MS is held
      // STALL_MS before it goes out (a player's buffer drains: it stalls, then catches up).
      stallTimer = setTimeout(async () => {
        const hold = async (route) => { await sleep(STALL_MS); await route.continue().catch(() => {}); };
        log(`${kind}: holding /live/ requests for ${STALL_MS} ms`);
        r.injected_stall = { at: Date.now(), ms: STALL_MS };
        await page.route('**/live/**', hold);
        await sleep(STALL_MS);
        await page.unroute('**/live/**', hold);
      }, STALL_AT_S * 1000);
    }
    await sleep(WARMUP_S * 1000);
    r.info_start = await info(kind, v.fr);
    await sleep(MEASURE_S * 1000);
    clearTimeout(stallTimer);
    r.info_end = await info(kind, v.fr);
    const taken = await v.fr.evaluate(() => window.g2g.take());
    r.sender_draws_per_s = ((await page.evaluate(() => window.senderDraws())) - dr0) / (WARMUP_S + MEASURE_S);
    r.loadavg = [la0, loadavg()[0]];
    const firstAbs = taken.samples.length ? taken.samples[0].at : 0;
    // A WebRTC frame cannot be on screen before its last packet arrived (a late callback read
    // a newer picture than its metadata describes): dropped as in glass_to_glass.mjs.
    const ok = taken.samples.filter((s) => s.recv == null || (s.recv > 0 && s.submit >= s.recv));
    r.implausible = taken.samples.length - ok.length;
    const win = ok.filter((s) => s.at - firstAbs >= WARMUP_S * 1000);
    r.undecodable = taken.undecodable;
    r.repeats = taken.repeats;
    r.presented = taken.presented;
    r.g2g = summarize(win.map((s) => s.present));
    r.g2g_whole = summarize(ok.map((s) => s.present));
    r.g2g_first_s = summarize(ok.filter((s) => s.at - firstAbs < 1000).map((s) => s.present));
    r.recv = summarize(win.map((s) => s.recv));
    // The age of the picture on screen every 50 ms of the window: unlike the per-frame figure,
    // it counts a stall (no frames presented, the last picture ages on screen).
    r.onscreen = summarize(onScreenAges(ok.map((s) => [s.at - firstAbs, s.present]), WARMUP_S * 1000, (WARMUP_S + MEASURE_S) * 1000));
    r.fps = win.length / MEASURE_S;
    const sizes = {};
    for (const s of win) sizes[`${s.w}x${s.h}`] = (sizes[`${s.w}x${s.h}`] || 0) + 1;
    r.sizes = sizes;
    // the latency over time, per 5 s, to see a catch-up or a drift
    // (and, for WHEP, the last packet's arrival: transport + server, before the jitter buffer)
    r.by5s = [];
    r.recv_by5s = [];
    for (let t = 0; t < WARMUP_S + MEASURE_S; t += 5) {
      const xs = ok.filter((s) => s.at - firstAbs >= t * 1000 && s.at - firstAbs < (t + 5) * 1000);
      r.by5s.push(Math.round(median(xs.map((s) => s.present))));
      r.recv_by5s.push(Math.round(median(xs.map((s) => s.recv))));
    }
    r.playlist = await playlistNow();
    page.off('request', onReq);
    page.off('requestfinished', onFin);
    page.off('requestfailed', onFail);
    r.events = taken.events.map((e) => ({ ...e, at: Math.round(e.at - firstAbs) }));
    if (process.env.HLS_DEBUG && PAGE_PATHS.includes(kind)) {
      r.hls_log = await v.fr.evaluate(() => window.hlsLog || []).catch(() => []);
      r.hls_log = r.hls_log.map((l) => { const i = l.indexOf(' '); return `${Number(l.slice(0, i)) - Math.round(firstAbs)} ${l.slice(i + 1)}`; });
    }
    r.requests = reqs.map((x) => ({ ...x, start: x.start - Math.round(firstAbs), end: x.end - Math.round(firstAbs) }));
    const stalls = r.events.filter((e) => e.ev === 'waiting' && e.at > 0);
    if (r.events.length) log(`${kind}: player events ${JSON.stringify(r.events.filter((e) => e.ev !== 'ratechange'))}, ${r.events.filter((e) => e.ev === 'ratechange').length} rate changes`);
    const ts = r.requests.filter((x) => /\.ts/.test(x.url)).sort((a, b) => a.start - b.start);
    r.part_gaps = [];
    for (let i = 1; i < ts.length; i++) {
      if (ts[i].start - ts[i - 1].start > 1500) r.part_gaps.push({ from: ts[i - 1].start, to: ts[i].start, after: ts[i - 1].url, next: ts[i].url });
    }
    if (r.part_gaps.length) log(`${kind}: gaps of more than 1.5 s between media requests: ${JSON.stringify(r.part_gaps)}`);
    for (const st of stalls) {
      log(`${kind}: stall at ${st.at} ms (currentTime ${st.t.toFixed(3)}); /live/ requests from 4 s before to 2 s after (ms from the first picture):`);
      for (const x of r.requests.filter((x) => x.end > st.at - 4000 && x.start < st.at + 2000)) log(`    ${x.start} -> ${x.end} (${x.end - x.start} ms) ${x.status} ${x.url}`);
    }
    if (process.env.JSON) r.samples = ok.map((s) => [Math.round(s.at - firstAbs), Math.round(s.present), s.recv == null ? null : Math.round(s.recv), s.c]);
    if (r.info_start?.jb && r.info_end?.jb) {
      const [d0, t0, n0] = r.info_start.jb, [d1, t1, n1] = r.info_end.jb;
      r.jitter_buffer_window_ms = { delay: (1000 * (d1 - d0)) / (n1 - n0), target: (1000 * (t1 - t0)) / (n1 - n0) };
    }
    log(`${kind}: ${win.length} frames (${r.undecodable} undecodable, ${r.repeats} repeats), glass p50 ${f0(r.g2g.p50)} p95 ${f0(r.g2g.p95)} ms; per 5 s ${r.by5s.join(' ')}; ${JSON.stringify(r.info_end)}`);

    if (PAGE_PATHS.includes(kind) && CUES > 0) {
      const cues = [];
      log(`cues: ${CUES} cues to the audience page`);
      for (let i = 0; i < CUES; i++) {
        const id = `bench-${Date.now()}-${i}`;
        const t0 = Date.now();
        const post = await api('POST', `/api/rooms/${ROOM}/cues`, { id, data: { kind: 'vote', n: i } });
        const t1 = Date.now();
        if (post.status !== 202) { log(`cue ${i}: ${post.status} ${JSON.stringify(post.body)}`); continue; }
        try {
          const shown = await waitFor(`cue ${id} shown`, () => v.fr.evaluate((cid) => {
            const c = window.audienceState.cuesShown.find((x) => x.id === cid);
            const el = document.querySelector(`#cues .cue[data-cue-id="${cid}"]`);
            return c && el ? { at: c.at, lag_s: c.shownAtMediaTime - c.pts } : null;
          }, id), 15000, 20);
          cues.push({ id, ms: shown.at - t0, post_ms: t1 - t0, late_frame_s: shown.lag_s });
          log(`cue ${i}: shown ${shown.at - t0} ms after the POST (answer in ${t1 - t0} ms)`);
        } catch (e) {
          cues.push({ id, ms: null, error: e.message });
          log(`cue ${i}: not shown: ${e.message}`);
        }
        await sleep(1000 + Math.random() * 1000);
      }
      const late = (await v.fr.evaluate(() => window.audienceState.cuesLate.length));
      results.cues[kind] = { each: cues, summary: summarize(cues.map((c) => c.ms)), missed: cues.filter((c) => c.ms == null).length, late };
    }
    await close(v);
    await sleep(1000);
  }

  // ---------------------------------------------------------------- report
  const out = [];
  out.push(`build: ${BIN}; Chromium ${browserVersion}; source ${SOURCE}${AUDIO ? ' + tone' : ''}; window ${MEASURE_S} s after ${WARMUP_S} s; playlist ${header.join(' ')}`);
  out.push('');
  out.push('| path | frames | glass p50 ms | p95 | p99 | min–max | on screen p95 | goal p95 | first 1 s p50 | first picture ms (nav start; each open) | median | goal | first picture from insertion, median |');
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const [kind, r] of Object.entries(results.paths)) {
    const g = GOALS[kind];
    const navs = r.firsts.map((x) => x.nav_ms);
    const gv = g.g2g == null ? '—' : `≤ ${g.g2g} ${r.g2g?.p95 <= g.g2g ? 'met' : '**not met**'}`;
    const fv = `≤ ${g.first} ${navs.length && Math.max(...navs) <= g.first ? 'met' : '**not met**'}`;
    out.push(`| ${r.name} | ${r.g2g?.n ?? 0} | ${f0(r.g2g?.p50)} | ${f0(r.g2g?.p95)} | ${f0(r.g2g?.p99)} | ${f0(r.g2g?.min)}–${f0(r.g2g?.max)} | ${f0(r.onscreen?.p95)} | ${gv} | ${f0(r.g2g_first_s?.p50)} | ${navs.map(f0).join(', ')} | ${f0(median(navs))} | ${fv} | ${f0(median(r.firsts.map((x) => x.open_ms)))} |`);
  }
  for (const [kind, cr] of Object.entries(results.cues)) {
    const c = cr.summary;
    out.push('');
    out.push(`cue → overlay (${NAMES[kind]}): ${c.n} cues, p50 ${f0(c.p50)} ms, p95 ${f0(c.p95)} ms, min ${f0(c.min)}, max ${f0(c.max)}; goal p95 ≤ ${CUE_GOAL}${kind === 'll' ? '' : ' (the LL-HLS goal)'} ${c.p95 <= CUE_GOAL ? 'met' : '**not met**'}; missed ${cr.missed}, late ${cr.late}; each ${cr.each.map((x) => f0(x.ms)).join(', ')}`);
  }
  out.push('');
  for (const [kind, r] of Object.entries(results.paths)) {
    out.push(`${kind}: ${r.g2g?.n} frames in the window (${r.fps?.toFixed(1)}/s), ${r.undecodable} undecodable, ${r.repeats} repeated pictures, ${r.implausible} implausible; sizes ${JSON.stringify(r.sizes)}; sender ${r.sender_draws_per_s?.toFixed(1)} draws/s; loadavg ${r.loadavg?.map((x) => x.toFixed(1)).join(' -> ')}; whole (from first picture) p50 ${f0(r.g2g_whole?.p50)} p95 ${f0(r.g2g_whole?.p95)}; per 5 s ${r.by5s?.join(' ')}${kind === 'whep' ? `; recv p50 ${f0(r.recv?.p50)}, per 5 s ${r.recv_by5s?.join(' ')}` : ''}${r.jitter_buffer_window_ms ? `; jitter buffer over the window ${f0(r.jitter_buffer_window_ms.delay)} ms (target ${f0(r.jitter_buffer_window_ms.target)})` : ''}; playlist at the end ${r.playlist?.header} (EXTINF ${r.playlist?.extinf_min}–${r.playlist?.extinf_max})${r.errors.length ? `; errors ${r.errors.join(' | ')}` : ''}`);
    out.push(`  player at window start ${JSON.stringify(r.info_start, (k, x) => (typeof x === 'number' ? Math.round(x * 1000) / 1000 : x))}`);
    out.push(`  player at window end   ${JSON.stringify(r.info_end, (k, x) => (typeof x === 'number' ? Math.round(x * 1000) / 1000 : x))}`);
  }
  console.log(out.join('\n'));
  if (process.env.JSON) writeFileSync(process.env.JSON, JSON.stringify(results));
}

main()
  .then(() => { process.exitCode = 0; })
  .catch((e) => {
    console.error('FAILED:', e);
    console.error(serverLog.slice(-40).join('\n'));
    process.exitCode = 1;
  })
  .finally(async () => {
    try { await context?.close(); } catch {}
    if (process.env.SERVER_LOG) writeFileSync(process.env.SERVER_LOG, serverLog.join('\n') + '\n');
    if (server && server.exitCode === null) server.kill('SIGTERM');
    http?.close();
    if (userDir) try { rmSync(userDir, { recursive: true, force: true }); } catch {}
  });
