// A third-party web app for the field-client tests: an HTTP server on its own origin that
// serves one page using the `whip-whep` npm package (medooze's WHIP and WHEP clients, pinned
// in package.json; nobody here wrote them) and, like an app deployed behind its own reverse
// proxy, forwards `/whip/...` and `/whep/...` to cohost so the page can also reach cohost
// from its own origin.
//
// The page exposes, for `page.evaluate`:
//   publish(url, token, pcConfig)  -> { ms }    WHIP-publishes the fake camera and microphone
//   publishGathered(url, token, pcConfig)  the same without whip-whep: gathers, then POSTs
//                                   an offer with all candidates (the non-trickle baseline)
//   play(url, token, pcConfig)     -> { ms }    WHEP-plays into a <video>
//   timing()                       -> [{ kind, url, started, posted, connected }] (ms)
//   restart(kind, url)             ICE restart of that session through its client
//   stats()                        -> [{ kind: 'publish'|'play', url, state, framesDecoded,
//                                        framesSent, width, local, remote (candidate types),
//                                        ufrag (local ICE username fragment) }]
//   fetchLog                        every fetch the clients made: { method, url, status|error }

import { createServer, request } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const lib = (f) => readFileSync(join(here, 'node_modules/whip-whep', f));

const PAGE = `<!doctype html><meta charset="utf-8"><title>third-party app</title>
<body><h1>app</h1><div id="videos"></div>
<script type="module">
import { WHIPClient } from '/lib/whip.js';
import { WHEPClient } from '/lib/whep.js';
window.fetchLog = [];
const realFetch = window.fetch.bind(window);
window.fetch = async (url, opts = {}) => {
  const e = { method: opts.method || 'GET', url: String(url), t: performance.now() };
  window.fetchLog.push(e);
  try { const r = await realFetch(url, opts); e.status = r.status; return r; }
  catch (err) { e.error = String(err); throw err; }
};
const sessions = [];
window.publish = async (url, token, pcConfig) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
  const pc = new RTCPeerConnection(pcConfig || {});
  for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
  const client = new WHIPClient();
  const t0 = performance.now();
  const session = { kind: 'publish', url, pc, client, t0 };
  sessions.push(session);
  timeConnect(session);
  await client.publish(pc, url, token);
  return { ms: performance.now() - t0 };
};
// Connection timing of a session: started (t0), POST sent, connected (performance.now() ms).
function timeConnect(session) {
  session.connectedAt = null;
  session.pc.addEventListener('connectionstatechange', () => {
    if (session.pc.connectionState === 'connected' && session.connectedAt === null) session.connectedAt = performance.now();
  });
}
window.timing = () => sessions.map((s) => ({ kind: s.kind, url: s.url, started: s.t0, posted: s.postedAt ?? (window.fetchLog.find((f) => f.method === 'POST' && f.url === s.url && f.t >= s.t0) || {}).t, connected: s.connectedAt }));
// A publisher that gathers first and posts an offer with every candidate (no trickle), the
// way OBS and most SDKs do: the baseline for trickle's connect time.
window.publishGathered = async (url, token, pcConfig) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
  const pc = new RTCPeerConnection(pcConfig || {});
  for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
  const t0 = performance.now();
  const session = { kind: 'publish-gathered', url, pc, t0, client: { stop: async () => { pc.close(); if (session.location) await fetch(session.location, { method: 'DELETE', headers: { Authorization: 'Bearer ' + token } }); } } };
  sessions.push(session);
  timeConnect(session);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r()); });
  session.postedAt = performance.now();
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + token }, body: pc.localDescription.sdp });
  if (res.status !== 201) throw new Error('POST ' + res.status);
  session.location = new URL(res.headers.get('location'), url).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  return { ms: performance.now() - t0 };
};
window.play = async (url, token, pcConfig) => {
  const pc = new RTCPeerConnection(pcConfig || {});
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; v.playsInline = true;
  document.getElementById('videos').appendChild(v);
  pc.ontrack = (ev) => { if (ev.track.kind === 'video') v.srcObject = new MediaStream([ev.track]); };
  const client = new WHEPClient();
  const t0 = performance.now();
  const session = { kind: 'play', url, pc, client, t0 };
  sessions.push(session);
  try {
    await client.view(pc, url, token);
  } catch (e) {
    // e.g. 404 while the co-host's tracks are not up yet: forget this attempt.
    sessions.splice(sessions.indexOf(session), 1);
    pc.close();
    v.remove();
    throw e;
  }
  return { ms: performance.now() - t0 };
};
// Players first: a publisher's DELETE ends the WHEP sessions of its viewers too.
window.stop = async () => { for (const s of [...sessions].sort((a, b) => (a.kind === 'play' ? 0 : 1) - (b.kind === 'play' ? 0 : 1))) await s.client.stop().catch(() => {}); };
// An ICE restart through the client (RFC 9725 §4.4: PATCH with new credentials).
window.restart = (kind, url) => sessions.find((s) => s.kind === kind && s.url === url).client.restart();
window.stats = async () => {
  const out = [];
  for (const s of sessions) {
    const r = { kind: s.kind, url: s.url, state: s.pc.connectionState, framesDecoded: 0, framesSent: 0 };
    const st = await s.pc.getStats();
    const byId = {};
    st.forEach((x) => { byId[x.id] = x; });
    st.forEach((x) => {
      if (x.type === 'inbound-rtp' && x.kind === 'video') { r.framesDecoded += x.framesDecoded || 0; r.width = x.frameWidth; }
      if (x.type === 'outbound-rtp' && x.kind === 'video') { r.framesSent += x.framesSent || 0; r.bytesSent = x.bytesSent; }
      if (x.type === 'transport') r.ufrag = x.iceLocalUsernameFragment;
      if (x.type === 'transport' && x.selectedCandidatePairId) {
        const p = byId[x.selectedCandidatePairId];
        if (p) { r.local = byId[p.localCandidateId]?.candidateType; r.remote = byId[p.remoteCandidateId]?.candidateType; r.rtt = p.currentRoundTripTime; }
      }
    });
    out.push(r);
  }
  return out;
};
window.ready = true;
</script>`;

/** Starts the app on 127.0.0.1:`port`, proxying WHIP and WHEP to `cohostBase`. */
export function startApp(port, cohostBase) {
  const target = new URL(cohostBase);
  const server = createServer((req, res) => {
    if (req.url === '/app.html') {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      return res.end(PAGE);
    }
    if (req.url === '/lib/whip.js' || req.url === '/lib/whep.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      return res.end(lib(req.url.slice(5)));
    }
    if (req.url.startsWith('/whip/') || req.url.startsWith('/whep/')) {
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
      return req.pipe(up);
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

/**
 * Starts a WHEP player. Until a co-host's tracks (or the program) are up cohost answers 404:
 * like an app, retry then.
 */
export async function play(page, url, token, pcConfig) {
  await waitFor(`${url}: player set up`, () => page.evaluate(([u, t, c]) => window.play(u, t, c).then(() => true, (e) => {
    if (/404/.test(String(e))) return false;
    throw e;
  }), [url, token, pcConfig]));
}
