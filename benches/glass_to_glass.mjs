// Glass-to-glass delay of a co-host's video in headless Chromium, (a) through a real cohost
// server (WHIP publish + WHEP co-host subscribe) and (b) over a direct peer-to-peer pair, in the
// same run, same sender, same codec (H.264 packetization-mode 1), same size.
//
// Run inside a network namespace with only `lo` (see /work/shared/TESTING.md):
//   cargo build --release --bin cohost
//   unshare --net sh -c 'ip link set lo up && exec "$@"' sh node benches/glass_to_glass.mjs
//
// playwright-core is taken from tests/browser/node_modules (`npm ci --prefix tests/browser`).
//
// Env: COHOST_BIN (default target/release/cohost), CHROMIUM (default /usr/bin/chromium),
//   SECONDS (measured seconds per path, default 20), WARMUP_S (default 4), WIDTH/HEIGHT
//   (default 640x360), ORDER (`cohost,p2p` default, or `p2p,cohost`; `turn` is the cohost
//   path with both pages allowed only relayed candidates through a local coturn, whose
//   credentials come from cohost's WHIP `OPTIONS` `Link` headers: `ORDER=cohost,turn`), MIX (`default`: the
//   room's program uses the server's default mix, 1280x720 30 fps; `small`: the room is created
//   first with a 160x96 5 fps mix, to see what the mixer's CPU costs), JSON (a file: write the
//   raw summary there), LOG_SERVER=1 (echo the server's log), SOURCE (`canvas`: the canvas'
//   captureStream(30), drawn in requestAnimationFrame, default; `generator`: the same canvas
//   drawn from a 29 Hz timer and written as VideoFrames into a MediaStreamTrackGenerator, so
//   the frame phase is not locked to the page's 60 Hz vsync), TWO_PAGES=1 (sender and receiver
//   in two pages instead of one).
//
// Method (TESTING.md): the sender page draws, on a canvas, a frame counter and its send time
// `performance.timeOrigin + performance.now()` (in 0.1 ms units, mod 2^32) as 64 big
// black/white blocks (16x4 across the top: 8 sync bits, 16-bit counter, 32-bit time, 8-bit
// check) above a moving, noisy scene (so the encoder has real work and a real bitrate), and
// sends `canvas.captureStream(30)`. The receiver page decodes the blocks of each presented
// frame in `requestVideoFrameCallback`. Both pages live in one Chromium on one machine: one
// clock. Per frame it records
//   present = timeOrigin + metadata.expectedDisplayTime - send   ("glass to glass")
//   submit  = timeOrigin + metadata.presentationTime   - send   (frame handed to compositor)
//   recv    = timeOrigin + metadata.receiveTime        - send   (last packet of the frame in:
//             capture + encode + pacing + network [+ server])
// and inbound/outbound getStats() deltas over the measured window (jitter buffer, decode,
// send delay, RTT, bitrate, resolution, NACK/PLI).

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');
const { startCoturn } = await import(join(here, '..', 'tests', 'browser', 'coturn.mjs'));

const BIN = process.env.COHOST_BIN || join(here, '..', 'target', 'release', 'cohost');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MEASURE_S = Number(process.env.SECONDS || 20);
const WARMUP_S = Number(process.env.WARMUP_S || 4);
const W = Number(process.env.WIDTH || 640);
const H = Number(process.env.HEIGHT || 360);
const ORDER = (process.env.ORDER || 'cohost,p2p').split(',');
const MIX = process.env.MIX || 'default';
const SOURCE = process.env.SOURCE || 'canvas';
const KEY = 'testkey';
const SECRET = '0123456789abcdef0123';
const ROOM = 'g2g';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...a);

// ---------------------------------------------------------------- the page (sender + receiver)
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>g2g</title>
<style>body{margin:0;background:#333} canvas,video{display:block}</style></head><body>
<canvas id="c"></canvas><video id="v" muted autoplay playsinline></video>
<script>
const W = ${W}, H = ${H}, COLS = 16, ROWS = 4, SOURCE = '${SOURCE}';
const BW = W / COLS, BH = H / 9;
const SYNC = [1, 0, 1, 0, 0, 1, 1, 0];
const now = () => performance.timeOrigin + performance.now();

function bitsOf(counter, t10) {
  const bytes = [counter >>> 8 & 255, counter & 255, t10 >>> 24 & 255, t10 >>> 16 & 255, t10 >>> 8 & 255, t10 & 255];
  let ck = 0xa5; for (const b of bytes) ck = (ck * 31 + b) & 255;
  bytes.push(ck);
  const bits = SYNC.slice();
  for (const b of bytes) for (let i = 7; i >= 0; i--) bits.push(b >>> i & 1);
  return bits; // 64
}

// ---- sender
window.startSender = () => {
  const c = document.getElementById('c');
  c.width = W; c.height = H;
  const g = c.getContext('2d', { alpha: false });
  let counter = 0, draws = 0, seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  function draw() {
    const t = now();
    const t10 = Math.floor(t * 10) >>> 0;
    counter = (counter + 1) & 0xffff;
    // the scene: scrolling bars + random rectangles (real work for the encoder)
    const y0 = BH * ROWS;
    const off = (counter * 7) % W;
    for (let i = 0; i < 16; i++) {
      g.fillStyle = 'hsl(' + ((i * 23 + counter) % 360) + ',70%,50%)';
      g.fillRect((i * W / 16 + off) % W, y0, W / 16, H - y0);
    }
    for (let i = 0; i < 24; i++) {
      g.fillStyle = 'rgb(' + (rnd() * 255 | 0) + ',' + (rnd() * 255 | 0) + ',' + (rnd() * 255 | 0) + ')';
      g.fillRect(rnd() * W, y0 + rnd() * (H - y0), 8 + rnd() * W / 8, 8 + rnd() * (H - y0) / 6);
    }
    const bits = bitsOf(counter, t10);
    for (let k = 0; k < 64; k++) {
      g.fillStyle = bits[k] ? '#fff' : '#000';
      g.fillRect((k % COLS) * BW, Math.floor(k / COLS) * BH, BW, BH);
    }
    draws++;
  }
  if (SOURCE === 'generator') {
    // Not tied to the page's vsync: draw and hand a VideoFrame to a MediaStreamTrackGenerator
    // from a timer at 29 fps (34.5 ms: not a multiple of the 16.7 ms vsync, so the frame phase
    // drifts by 1.1 ms a frame and frames reach the receiver at every phase of its display).
    const gen = new MediaStreamTrackGenerator({ kind: 'video' });
    const wr = gen.writable.getWriter();
    const t0 = performance.now();
    let k = 0;
    const tick = () => {
      draw();
      wr.write(new VideoFrame(c, { timestamp: Math.round(performance.now() * 1000) }));
      k++;
      setTimeout(tick, Math.max(0, t0 + k * 1000 / 29 - performance.now()));
    };
    tick();
    window.senderStream = new MediaStream([gen]);
  } else {
    // Draw on every animation frame (60 Hz); captureStream(30) takes at most 30 of them.
    const loop = () => { draw(); requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
    window.senderStream = c.captureStream(30);
  }
  window.senderDraws = () => draws;
  return document.visibilityState;
};

function preferH264(tr) {
  const caps = RTCRtpSender.getCapabilities('video');
  const h = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/h264'
      && /packetization-mode=1/.test(c.sdpFmtpLine || ''));
  // same order as the server: 42e01f first, then 42001f (cohost negotiates only these)
  h.sort((a, b) => (/42e01f/.test(b.sdpFmtpLine) ? 1 : 0) - (/42e01f/.test(a.sdpFmtpLine) ? 1 : 0));
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx');
  tr.setCodecPreferences(h.filter((c) => /profile-level-id=42(e0|00)1f/.test(c.sdpFmtpLine)).concat(rtx));
}

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(res, 5000);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); res(); }
    });
  });
}

window.pcs = {};
// offer side: 'send' (sendonly, the canvas track) or 'recv' (recvonly video); 'config' adds to
// the RTCConfiguration (the turn path: ICE servers and iceTransportPolicy 'relay')
window.makeOffer = async (name, dir, config) => {
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', ...(config || {}) });
  window.pcs[name] = pc;
  let tr;
  if (dir === 'send') tr = pc.addTransceiver(window.senderStream.getVideoTracks()[0], { direction: 'sendonly', streams: [window.senderStream] });
  else { tr = pc.addTransceiver('video', { direction: 'recvonly' }); hookReceiver(pc); }
  preferH264(tr);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  return pc.localDescription.sdp;
};
window.makeAnswer = async (name, dir, offer) => {
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  window.pcs[name] = pc;
  if (dir === 'recv') hookReceiver(pc);
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  const tr = pc.getTransceivers()[0];
  if (dir === 'send') { tr.direction = 'sendonly'; await tr.sender.replaceTrack(window.senderStream.getVideoTracks()[0]); tr.sender.setStreams(window.senderStream); }
  else tr.direction = 'recvonly';
  preferH264(tr);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  return pc.localDescription.sdp;
};
window.setAnswer = async (name, sdp) => { await window.pcs[name].setRemoteDescription({ type: 'answer', sdp }); };
window.pcState = (name) => window.pcs[name] && window.pcs[name].connectionState;
window.closePc = (name) => { if (window.pcs[name]) { window.pcs[name].close(); delete window.pcs[name]; } };
window.negotiatedCodec = async (name) => {
  const st = await window.pcs[name].getStats(); let out = null;
  st.forEach((r) => { if (r.type === 'codec' && /video/.test(r.mimeType)) out = out || (r.mimeType + ' ' + (r.sdpFmtpLine || '')); });
  return out;
};

// ---- receiver
let samples = [], recording = false, bad = 0, presented = 0;
const rc = document.createElement('canvas'); rc.width = W; rc.height = H;
const rg = rc.getContext('2d', { willReadFrequently: true });
function hookReceiver(pc) {
  pc.ontrack = (e) => {
    const v = document.getElementById('v');
    v.srcObject = e.streams[0] || new MediaStream([e.track]);
    v.play().catch(() => {});
  };
}
function decode(v) {
  rg.drawImage(v, 0, 0, W, H);
  const img = rg.getImageData(0, 0, W, Math.ceil(BH * ROWS)).data;
  const bits = [];
  for (let k = 0; k < 64; k++) {
    const x0 = Math.floor((k % COLS) * BW + BW / 4), x1 = Math.floor((k % COLS) * BW + BW * 3 / 4);
    const y0 = Math.floor(Math.floor(k / COLS) * BH + BH / 4), y1 = Math.floor(Math.floor(k / COLS) * BH + BH * 3 / 4);
    let s = 0, n = 0;
    for (let y = y0; y < y1; y += 2) for (let x = x0; x < x1; x += 2) { const i = (y * W + x) * 4; s += img[i] + img[i + 1] + img[i + 2]; n += 3; }
    bits.push(s / n > 128 ? 1 : 0);
  }
  for (let i = 0; i < 8; i++) if (bits[i] !== SYNC[i]) return null;
  const bytes = [];
  for (let b = 0; b < 7; b++) { let x = 0; for (let i = 0; i < 8; i++) x = x << 1 | bits[8 + b * 8 + i]; bytes.push(x); }
  let ck = 0xa5; for (let i = 0; i < 6; i++) ck = (ck * 31 + bytes[i]) & 255;
  if (ck !== bytes[6]) return null;
  return { counter: bytes[0] << 8 | bytes[1], t10: ((bytes[2] << 24) | (bytes[3] << 16) | (bytes[4] << 8) | bytes[5]) >>> 0 };
}
function onFrame(nowTs, md) {
  const v = document.getElementById('v');
  v.requestVideoFrameCallback(onFrame);
  presented++;
  if (!recording) return;
  const d = decode(v);
  if (!d) { bad++; return; }
  // send time: the 32-bit 0.1 ms value, unwrapped against our own clock
  const now10 = Math.floor(now() * 10);
  const back = ((now10 - d.t10) % 4294967296 + 4294967296) % 4294967296;
  const send = (now10 - back) / 10;
  const o = performance.timeOrigin;
  samples.push({
    c: d.counter,
    present: o + md.expectedDisplayTime - send,
    submit: o + md.presentationTime - send,
    recv: md.receiveTime ? o + md.receiveTime - send : null,
    cb: o + nowTs - send,
    w: md.width, h: md.height,
  });
}
window.startReceiver = () => {
  const v = document.getElementById('v');
  v.requestVideoFrameCallback(onFrame);
};
window.presentedCount = () => presented;
window.record = (on) => { if (on) { samples = []; bad = 0; } recording = on; return { n: samples.length, bad }; };
window.takeSamples = () => ({ samples, undecodable: bad });

window.statsSnapshot = async (name) => {
  const pc = window.pcs[name]; if (!pc) return null;
  const st = await pc.getStats(); const out = {};
  st.forEach((r) => {
    if ((r.type === 'inbound-rtp' || r.type === 'outbound-rtp') && r.kind === 'video') out[r.type] = r;
    if (r.type === 'remote-inbound-rtp' && r.kind === 'video') out['remote-inbound-rtp'] = r;
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') out.pair = r;
  });
  if (out.pair) { const lc = st.get(out.pair.localCandidateId); out.localType = lc && lc.candidateType; }
  return JSON.parse(JSON.stringify(out));
};
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
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '-');

/** Deltas of the interesting getStats fields between two snapshots. */
function statDeltas(a, b, secs) {
  const out = {};
  const d = (k, f) => (b?.[k]?.[f] ?? NaN) - (a?.[k]?.[f] ?? 0);
  if (b?.['inbound-rtp']) {
    const fr = d('inbound-rtp', 'jitterBufferEmittedCount');
    const dec = d('inbound-rtp', 'framesDecoded');
    out.in = {
      jb_ms: (1000 * d('inbound-rtp', 'jitterBufferDelay')) / fr,
      jb_target_ms: (1000 * d('inbound-rtp', 'jitterBufferTargetDelay')) / fr,
      jb_min_ms: (1000 * d('inbound-rtp', 'jitterBufferMinimumDelay')) / fr,
      decode_ms: (1000 * d('inbound-rtp', 'totalDecodeTime')) / dec,
      processing_ms: (1000 * d('inbound-rtp', 'totalProcessingDelay')) / dec,
      assembly_ms: (1000 * d('inbound-rtp', 'totalAssemblyTime')) / d('inbound-rtp', 'framesAssembledFromMultiplePackets'),
      fps: dec / secs,
      kbps: (8 * d('inbound-rtp', 'bytesReceived')) / secs / 1000,
      jitter_ms: 1000 * (b['inbound-rtp'].jitter ?? NaN),
      lost: d('inbound-rtp', 'packetsLost'),
      nack: d('inbound-rtp', 'nackCount'),
      pli: d('inbound-rtp', 'pliCount'),
      dropped: d('inbound-rtp', 'framesDropped'),
      size: `${b['inbound-rtp'].frameWidth}x${b['inbound-rtp'].frameHeight}`,
    };
  }
  if (b?.['outbound-rtp']) {
    out.out = {
      send_delay_ms: (1000 * d('outbound-rtp', 'totalPacketSendDelay')) / d('outbound-rtp', 'packetsSent'),
      encode_ms: (1000 * d('outbound-rtp', 'totalEncodeTime')) / d('outbound-rtp', 'framesEncoded'),
      fps: d('outbound-rtp', 'framesEncoded') / secs,
      kbps: (8 * d('outbound-rtp', 'bytesSent')) / secs / 1000,
      target_kbps: (b['outbound-rtp'].targetBitrate ?? NaN) / 1000,
      limitation: b['outbound-rtp'].qualityLimitationReason,
      size: `${b['outbound-rtp'].frameWidth}x${b['outbound-rtp'].frameHeight}`,
      encoder: b['outbound-rtp'].encoderImplementation,
      retrans: d('outbound-rtp', 'retransmittedPacketsSent'),
      nack: d('outbound-rtp', 'nackCount'),
      pli: d('outbound-rtp', 'pliCount'),
      kf: d('outbound-rtp', 'keyFramesEncoded'),
    };
  }
  if (b?.pair) {
    out.rtt_ms = 1000 * (b.pair.currentRoundTripTime ?? NaN);
    out.avail_out_kbps = (b.pair.availableOutgoingBitrate ?? NaN) / 1000;
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
const port = 19000 + Math.floor(Math.random() * 1000);
const base = `http://127.0.0.1:${port}`;
let server, http, context, userDir, turn;
const TURN_PORT = 34700 + Math.floor(Math.random() * 50);
const TURN_SECRET = 'glass-to-glass-turn-secret';

/** The ICE servers cohost announces to `token`'s caller (`OPTIONS` `Link` headers, RFC 9725). */
async function iceServersFor(token) {
  const r = await fetch(`${base}/whip/${ROOM}`, { method: 'OPTIONS', headers: { Authorization: `Bearer ${token}` } });
  const out = [];
  for (const l of (r.headers.get('link') || '').split(/,\s*(?=<)/)) {
    const m = l.match(/^<([^>]+)>/);
    if (!m || !/rel="ice-server"/.test(l)) continue;
    const p = (k) => (l.match(new RegExp(`${k}="([^"]*)"`)) || [])[1];
    out.push({ urls: m[1], username: p('username'), credential: p('credential') });
  }
  return out;
}
const serverLog = [];

async function mint(identity, role) {
  const r = await fetch(`${base}/api/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ room: ROOM, identity, role }),
  });
  if (!r.ok) throw new Error(`token ${identity}: ${r.status} ${await r.text()}`);
  return (await r.json()).token;
}

async function postSdp(url, token, sdp) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: sdp,
  });
  const text = await r.text();
  return { status: r.status, location: r.headers.get('location'), text };
}

/** Measure one path. `connect` sets up the sender/receiver peer connections. */
async function measure(label, S, R, connect, sendPc, recvPc) {
  log(`${label}: connecting`);
  const t0 = Date.now();
  await connect();
  await waitFor(`${label}: receiver connected`, async () => (await R.evaluate((n) => window.pcState(n), recvPc)) === 'connected');
  const p0 = await R.evaluate(() => window.presentedCount());
  await waitFor(`${label}: first frames presented`, async () => (await R.evaluate(() => window.presentedCount())) > p0 + 5, 30000);
  log(`${label}: media after ${Date.now() - t0} ms; codec ${await R.evaluate((n) => window.negotiatedCodec(n), recvPc)}; warming up ${WARMUP_S} s`);
  await sleep(WARMUP_S * 1000);
  const sa = await S.evaluate((n) => window.statsSnapshot(n), sendPc);
  const ra = await R.evaluate((n) => window.statsSnapshot(n), recvPc);
  const la0 = loadavg()[0];
  const dr0 = await S.evaluate(() => window.senderDraws());
  await R.evaluate(() => window.record(true));
  const tm = Date.now();
  await sleep(MEASURE_S * 1000);
  await R.evaluate(() => window.record(false));
  const secs = (Date.now() - tm) / 1000;
  const dr1 = await S.evaluate(() => window.senderDraws());
  const sb = await S.evaluate((n) => window.statsSnapshot(n), sendPc);
  const rb = await R.evaluate((n) => window.statsSnapshot(n), recvPc);
  const taken = await R.evaluate(() => window.takeSamples());
  if (label === 'turn' && (sb.localType !== 'relay' || rb.localType !== 'relay')) {
    throw new Error(`turn: the pairs must be relayed (sender ${sb.localType}, receiver ${rb.localType})`);
  }
  const bad = taken.undecodable;
  // A frame cannot be on screen before its last packet arrived: such a sample means the
  // callback read a newer picture than its metadata describes (a late callback); drop it.
  const samples = taken.samples.filter((s) => s.recv == null || (s.recv > 0 && s.submit >= s.recv));
  const implausible = taken.samples.length - samples.length;
  const sizes = {};
  for (const s of samples) sizes[`${s.w}x${s.h}`] = (sizes[`${s.w}x${s.h}`] || 0) + 1;
  const res = {
    label,
    candidates: { sender: sb.localType, receiver: rb.localType },
    frames: samples.length,
    undecodable: bad,
    implausible,
    fps: samples.length / secs,
    draws_per_s: (dr1 - dr0) / secs,
    loadavg: [la0, loadavg()[0]],
    sizes,
    present: summarize(samples.map((s) => s.present)),
    submit: summarize(samples.map((s) => s.submit)),
    recv: summarize(samples.map((s) => s.recv)),
    render: summarize(samples.map((s) => (s.recv == null ? NaN : s.submit - s.recv))),
    callback: summarize(samples.map((s) => s.cb)),
    sender: statDeltas(sa, sb, secs),
    receiver: statDeltas(ra, rb, secs),
  };
  log(`${label}: ${res.frames} frames (${bad} undecodable), glass p50 ${f1(res.present.p50)} p99 ${f1(res.present.p99)} ms`);
  return res;
}

async function main() {
  // the page server
  http = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const pageUrl = `http://127.0.0.1:${http.address().port}/`;

  // the cohost server
  const args = ['--bind', `127.0.0.1:${port}`, '--media-ip', '127.0.0.1', '--udp-ports', '52000-52200',
    '--api-key', KEY, '--api-secret', SECRET];
  if (ORDER.includes('turn')) {
    turn = await startCoturn(TURN_PORT, TURN_SECRET);
    args.push('--ice-servers', `turn:127.0.0.1:${TURN_PORT}?transport=udp`, '--turn-secret', TURN_SECRET);
  }
  log('starting', BIN, args.join(' '));
  server = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  for (const s of [server.stdout, server.stderr]) {
    s.setEncoding('utf8');
    s.on('data', (d) => {
      for (const line of d.split('\n')) if (line) { serverLog.push(line); if (process.env.LOG_SERVER) console.error('server:', line); }
      if (serverLog.length > 3000) serverLog.splice(0, serverLog.length - 3000);
    });
  }
  await waitFor('server /healthz', async () => {
    if (server.exitCode !== null) throw new Error('server exited');
    const r = await fetch(`${base}/healthz`).catch(() => null);
    return r && r.ok;
  });
  if (MIX === 'small') {
    const r = await fetch(`${base}/api/rooms`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ name: ROOM, mix: { width: 160, height: 96, fps: 5, video_kbps: 100 } }),
    });
    if (!r.ok) throw new Error(`create room: ${r.status} ${await r.text()}`);
  }

  userDir = mkdtempSync(join(tmpdir(), 'g2g-chromium-'));
  context = await chromium.launchPersistentContext(userDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: Math.max(W, 640) + 20, height: 2 * H + 20 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream=fps=30',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows'],
  });
  // One page holds both the sender and the receiver by default: with two pages, Chromium
  // (headless) runs the sender page's requestAnimationFrame at ~1 Hz while nothing is playing
  // and ~20 Hz after, which caps the canvas below 30 fps. TWO_PAGES=1 uses two pages anyway.
  const S = await context.newPage();
  const R = process.env.TWO_PAGES ? await context.newPage() : S;
  for (const [n, p] of (S === R ? [['page', S]] : [['sender', S], ['receiver', R]])) {
    p.on('pageerror', (e) => log(`${n} pageerror: ${e.message}`));
    p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log(`${n} console: ${m.text()}`); });
    await p.goto(pageUrl);
  }
  const vis = await S.evaluate(() => window.startSender());
  await R.evaluate(() => window.startReceiver());
  for (let i = 0; i < (process.env.DEBUG_DRAW ? 5 : 1); i++) {
    const d0 = await S.evaluate(() => window.senderDraws());
    await sleep(1000);
    if (process.env.DEBUG_DRAW && i === 2 && S !== R) await S.bringToFront();
    const d1 = await S.evaluate(() => window.senderDraws());
    log(`sender page ${vis}, drawing ${d1 - d0} frames/s; ${W}x${H}`);
  }

  const hostTok = await mint('pub', 'host');
  const guestTok = await mint('sub', 'guest');
  const results = { when: new Date().toISOString(), width: W, height: H, seconds: MEASURE_S, mix: MIX, source: SOURCE, paths: {} };

  const viaCohost = (label, relayed) => async () => {
      let whepLoc;
      const sendCfg = relayed ? { iceServers: await iceServersFor(hostTok), iceTransportPolicy: 'relay' } : null;
      const recvCfg = relayed ? { iceServers: await iceServersFor(guestTok), iceTransportPolicy: 'relay' } : null;
      if (relayed && !sendCfg.iceServers.length) throw new Error('cohost announced no TURN server');
      const r = await measure(label, S, R, async () => {
        const offer = await S.evaluate(([c]) => window.makeOffer('whip', 'send', c), [sendCfg]);
        const a = await postSdp(`${base}/whip/${ROOM}`, hostTok, offer);
        if (a.status !== 201) throw new Error(`WHIP: ${a.status} ${a.text}`);
        await S.evaluate((sdp) => window.setAnswer('whip', sdp), a.text);
        const roffer = await R.evaluate(([c]) => window.makeOffer('whep', 'recv', c), [recvCfg]);
        // the publisher counts as publishing once its track is up: retry 404 not_publishing
        const b = await waitFor('WHEP 201', async () => {
          const x = await postSdp(`${base}/whep/${ROOM}/pub`, guestTok, roffer);
          if (x.status === 201) return x;
          if (x.status !== 404) throw new Error(`WHEP: ${x.status} ${x.text}`);
          return null;
        }, 15000, 200);
        whepLoc = b.location;
        await R.evaluate((sdp) => window.setAnswer('whep', sdp), b.text);
      }, 'whip', 'whep');
      await R.evaluate(() => window.closePc('whep'));
      await S.evaluate(() => window.closePc('whep'));
      if (whepLoc) await fetch(base + whepLoc, { method: 'DELETE', headers: { Authorization: `Bearer ${guestTok}` } }).catch(() => {});
      await fetch(`${base}/whip/${ROOM}/pub`, { method: 'DELETE', headers: { Authorization: `Bearer ${hostTok}` } }).catch(() => {});
      await S.evaluate(() => window.closePc('whip'));
      return r;
  };
  const paths = {
    cohost: viaCohost('cohost', false),
    turn: viaCohost('turn', true),
    p2p: async () => {
      const r = await measure('p2p', S, R, async () => {
        const offer = await S.evaluate(() => window.makeOffer('p2p-send', 'send'));
        const answer = await R.evaluate((o) => window.makeAnswer('p2p-recv', 'recv', o), offer);
        await S.evaluate((sdp) => window.setAnswer('p2p-send', sdp), answer);
      }, 'p2p-send', 'p2p-recv');
      await R.evaluate(() => window.closePc('p2p-recv'));
      await S.evaluate(() => window.closePc('p2p-send'));
      return r;
    },
  };
  for (const name of ORDER) {
    results.paths[name] = await paths[name]();
    await sleep(1500);
  }

  // report
  const rows = [];
  const line = (name, r, k) => rows.push(`| ${name} | ${k} | ${r[k].n} | ${f1(r[k].p50)} | ${f1(r[k].p95)} | ${f1(r[k].p99)} | ${f1(r[k].mean)} | ${f1(r[k].min)} | ${f1(r[k].max)} |`);
  rows.push('| path | metric (ms) | frames | p50 | p95 | p99 | mean | min | max |', '|---|---|---|---|---|---|---|---|---|');
  for (const [name, r] of Object.entries(results.paths)) for (const k of ['present', 'submit', 'recv', 'render']) line(name, r, k);
  const c = results.paths.cohost, p = results.paths.p2p;
  if (c && p) {
    results.diff = {};
    for (const k of ['p50', 'p95', 'p99', 'mean']) results.diff[k] = c.present[k] - p.present[k];
    results.diff_recv = {};
    for (const k of ['p50', 'p95', 'p99', 'mean']) results.diff_recv[k] = c.recv[k] - p.recv[k];
    rows.push(`| cohost − p2p | present | | ${f1(results.diff.p50)} | ${f1(results.diff.p95)} | ${f1(results.diff.p99)} | ${f1(results.diff.mean)} | | |`);
    rows.push(`| cohost − p2p | recv | | ${f1(results.diff_recv.p50)} | ${f1(results.diff_recv.p95)} | ${f1(results.diff_recv.p99)} | ${f1(results.diff_recv.mean)} | | |`);
  }
  const t = results.paths.turn;
  if (c && t) {
    results.diff_turn = {};
    for (const k of ['p50', 'p95', 'p99', 'mean']) results.diff_turn[k] = t.present[k] - c.present[k];
    rows.push(`| turn − cohost | present | | ${f1(results.diff_turn.p50)} | ${f1(results.diff_turn.p95)} | ${f1(results.diff_turn.p99)} | ${f1(results.diff_turn.mean)} | | |`);
  }
  console.log(rows.join('\n'));
  for (const [name, r] of Object.entries(results.paths)) {
    console.log(`\n${name}: ${r.frames} frames in ${MEASURE_S} s (${r.fps.toFixed(1)} fps presented, ${r.undecodable} undecodable, ${r.implausible} implausible dropped, sender drew ${r.draws_per_s.toFixed(1)}/s, loadavg ${r.loadavg.map((x) => x.toFixed(1)).join(' -> ')}), sizes ${JSON.stringify(r.sizes)}`);
    console.log(`  sender   ${JSON.stringify(r.sender, (k, v) => (typeof v === 'number' ? Math.round(v * 10) / 10 : v))}`);
    console.log(`  receiver ${JSON.stringify(r.receiver, (k, v) => (typeof v === 'number' ? Math.round(v * 10) / 10 : v))}`);
  }
  if (process.env.JSON) writeFileSync(process.env.JSON, JSON.stringify(results, null, 1));
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
    if (server && server.exitCode === null) server.kill('SIGTERM');
    turn?.stop();
    http?.close();
    if (userDir) try { rmSync(userDir, { recursive: true, force: true }); } catch {}
  });
