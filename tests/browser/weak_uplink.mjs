// Bandwidth adaptation (issue: weak networks): a Chromium co-host publishes through WHIP over an
// impairing relay (relay.mjs) whose uplink is then capped at 600 kbit/s with a 100 ms queue.
// Chromium must lower its bitrate (cohost's transport-wide congestion feedback reaches it
// through the relay) and the co-host must stay fluid in the room's program.
//
// The page's offer goes out with NO candidates and none are trickled: cohost learns the page's
// (the relay's) address only from its connectivity checks, as a peer-reflexive candidate.
//
// Asserted (media and counters, no timings): uncapped, the page sends well above the cap (else
// the test would prove nothing); capped, after adaptation, Chromium's own estimate
// (`availableOutgoingBitrate`) and what it offers the link are at or under the cap with few
// queue drops, Chromium keeps its frame rate and the program is fed every picture it sends.
// Run inside a network namespace with only `lo` (tests/browser.rs).

import { createServer } from 'node:http';
import { Harness, KEY, log, sleep, waitFor, check } from './harness.mjs';
import { Relay, withoutCandidates } from './relay.mjs';

const ROOM = 'weakup';
const CAP_KBPS = 600;
const W = 640, H = 360;
const h = new Harness({ udpPorts: '52600-52800', httpPortBase: 23080 });

const PAGE = `<!doctype html><meta charset="utf-8"><title>weak uplink</title><body>
<canvas id="c" width="${W}" height="${H}"></canvas><video id="v" muted autoplay playsinline></video>
<script>
// A moving, noisy scene: real work for the encoder, so it wants well over the cap.
const c = document.getElementById('c'), g = c.getContext('2d', { alpha: false });
let n = 0, seed = 7;
const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
setInterval(() => {
  n++;
  for (let i = 0; i < 16; i++) { g.fillStyle = 'hsl(' + ((i * 23 + n * 3) % 360) + ',70%,50%)'; g.fillRect((i * ${W} / 16 + n * 7) % ${W}, 0, ${W} / 16, ${H}); }
  for (let i = 0; i < 60; i++) { g.fillStyle = 'rgb(' + (rnd() * 255 | 0) + ',' + (rnd() * 255 | 0) + ',' + (rnd() * 255 | 0) + ')'; g.fillRect(rnd() * ${W}, rnd() * ${H}, 4 + rnd() * 40, 4 + rnd() * 40); }
}, 33);
const stream = c.captureStream(30);
const pcs = {};
window.makeOffer = async (name, dir) => {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  pcs[name] = pc;
  if (dir === 'send') pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', streams: [stream] });
  else { pc.addTransceiver('video', { direction: 'recvonly' }); pc.ontrack = (e) => { document.getElementById('v').srcObject = new MediaStream([e.track]); }; }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 2000); });
  return pc.localDescription.sdp;
};
window.setAnswer = (name, sdp) => pcs[name].setRemoteDescription({ type: 'answer', sdp });
window.state = (name) => pcs[name] && pcs[name].connectionState;
window.snap = async (name) => {
  const st = await pcs[name].getStats();
  const o = { t: performance.now() };
  st.forEach((x) => {
    if (x.type === 'outbound-rtp' && x.kind === 'video') { o.bytesSent = x.bytesSent; o.framesSent = x.framesSent; o.width = x.frameWidth; o.height = x.frameHeight; o.limitation = x.qualityLimitationReason; }
    if (x.type === 'inbound-rtp' && x.kind === 'video') { o.framesDecoded = x.framesDecoded; o.width = x.frameWidth; }
    if (x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded') { o.available = x.availableOutgoingBitrate; o.rtt = x.currentRoundTripTime; }
  });
  return o;
};
window.ready = true;
</script>`;

async function postSdp(url, token, sdp) {
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` }, body: sdp });
  return { status: r.status, text: await r.text() };
}

async function metric(name) {
  const r = await fetch(`${h.base}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } });
  const text = await r.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{room="${ROOM}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** A window of `s` seconds: Chromium's send stats, the relay's uplink, the program. */
async function measure(page, relay, s) {
  const a = await page.evaluate(() => window.snap('pub'));
  const p0 = await page.evaluate(() => window.snap('prog'));
  const u0 = { ...relay.up.stats };
  const in0 = await metric('cohost_room_program_frames_in_total');
  await sleep(s * 1000);
  const b = await page.evaluate(() => window.snap('pub'));
  const p1 = await page.evaluate(() => window.snap('prog'));
  const u1 = { ...relay.up.stats };
  const in1 = await metric('cohost_room_program_frames_in_total');
  const secs = (b.t - a.t) / 1000;
  const media = u1.media - u0.media;
  return {
    sentKbps: ((b.bytesSent - a.bytesSent) * 8) / secs / 1000,
    offeredKbps: ((u1.mediaBytes - u0.mediaBytes) * 8) / secs / 1000,
    availableKbps: b.available / 1000,
    fpsSent: (b.framesSent - a.framesSent) / secs,
    size: `${b.width}x${b.height}`,
    limitation: b.limitation,
    queueDropShare: media ? (u1.droppedQueue - u0.droppedQueue) / media : 0,
    programInFps: (in1 - in0) / secs,
    programDecodedFps: (p1.framesDecoded - p0.framesDecoded) / secs,
  };
}

const fmt = (m) => `Chromium sends ${m.sentKbps.toFixed(0)} kbit/s (offered to the link ${m.offeredKbps.toFixed(0)}), its estimate ${m.availableKbps.toFixed(0)} kbit/s, ${m.fpsSent.toFixed(1)} fps at ${m.size} (limited by ${m.limitation}); queue drops ${(m.queueDropShare * 100).toFixed(1)} %; program fed ${m.programInFps.toFixed(1)} co-host pictures/s, viewer decodes ${m.programDecodedFps.toFixed(1)}/s`;

async function main() {
  const http = createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end(PAGE); });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const relay = await Relay.start({}, {}, 42);
  try {
    const page = await h.openPage('cohost', `http://127.0.0.1:${http.address().port}/`);
    await waitFor('page ready', () => page.evaluate(() => window.ready === true));
    const host = await h.mint(ROOM, 'mobile-host', 'host', 'Mobile host');
    const viewer = await h.mint(ROOM, 'monitor', 'viewer', 'Monitor');

    // Publish through the relay, with no candidates in the offer.
    const offer = withoutCandidates(await page.evaluate(() => window.makeOffer('pub', 'send')));
    check(!offer.includes('a=candidate'), 'the offer must carry no candidates');
    const a = await postSdp(`${h.base}/whip/${ROOM}`, host, offer);
    check(a.status === 201, `WHIP: ${a.status} ${a.text}`);
    await page.evaluate((sdp) => window.setAnswer('pub', sdp), relay.rewriteAnswer(a.text));
    await waitFor('publisher connected through the relay (peer-reflexive on the server)', async () => (await page.evaluate(() => window.state('pub'))) === 'connected');
    log('publisher connected through the relay, its offer without candidates');

    // The studio monitor watches the program directly (not through the relay).
    const poffer = await page.evaluate(() => window.makeOffer('prog', 'recv'));
    const pa = await waitFor('program WHEP 201', async () => {
      const r = await postSdp(`${h.base}/whep/${ROOM}`, viewer, poffer);
      return r.status === 201 ? r : null;
    });
    await page.evaluate((sdp) => window.setAnswer('prog', sdp), pa.text);
    await waitFor('program viewer connected', async () => (await page.evaluate(() => window.state('prog'))) === 'connected');

    await sleep(6000); // Chromium ramps up from its start bitrate
    const free = await measure(page, relay, 5);
    log(`uncapped: ${fmt(free)}`);
    check(free.sentKbps > CAP_KBPS * 1.4, `uncapped the page must want well over ${CAP_KBPS} kbit/s, else this proves nothing: ${free.sentKbps.toFixed(0)}`);

    relay.up.set({ rateKbps: CAP_KBPS });
    log(`uplink capped at ${CAP_KBPS} kbit/s (100 ms queue)`);
    await sleep(12000); // adaptation
    const capped = await measure(page, relay, 6);
    log(`capped: ${fmt(capped)}`);
    check(capped.availableKbps <= CAP_KBPS * 1.1, `Chromium's estimate must come down to the cap: ${capped.availableKbps.toFixed(0)} kbit/s`);
    check(capped.offeredKbps <= CAP_KBPS * 1.1, `Chromium must send at most the cap: ${capped.offeredKbps.toFixed(0)} kbit/s`);
    check(capped.queueDropShare <= 0.03, `adapted, the cap's queue must rarely overflow: ${(capped.queueDropShare * 100).toFixed(1)} %`);
    // Fluid: Chromium keeps its frame rate (it lowers the resolution) and the program gets
    // every picture it sends (the page's own rate depends on this shared machine's load).
    check(capped.fpsSent >= 20, `Chromium must keep its frame rate under the cap: ${capped.fpsSent.toFixed(1)} fps`);
    check(capped.programInFps >= 0.9 * capped.fpsSent, `the program must be fed every co-host picture: ${capped.programInFps.toFixed(1)}/s of ${capped.fpsSent.toFixed(1)} sent`);
    check(capped.programDecodedFps >= 25, `the program viewer must keep decoding: ${capped.programDecodedFps.toFixed(1)}/s`);
  } finally {
    relay.close();
    http.close();
  }
}

h.run(main);
