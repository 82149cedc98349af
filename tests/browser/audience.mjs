// Browser test of the audience page (web-demo/audience.html): the host page publishes a fake
// camera, which starts the room's program; the audience page plays the program's HLS with
// hls.js and draws the layout and cues from the program's SEI. Run inside a network namespace
// with only `lo` (tests/browser.rs does:
// `unshare --net sh -c 'ip link set lo up && exec "$@"' sh node audience.mjs`).
//
// Env: CARGO_BIN_EXE_cohost (server binary, required), CHROMIUM (default /usr/bin/chromium),
// TIMEOUT_S (per wait, default 40), SCREENSHOTS (a directory: save PNGs of the pages).
//
// Flow: start server -> host page joins (publishes) -> HLS playlist appears -> audience page
// plays it (currentTime advances) -> layout overlay shows host1's region from the layout SEI,
// scaled to the displayed video -> a custom layout PUT through the API moves the box -> a cue
// POSTed through the API pops up with its id and data, no earlier than its frame -> the host
// page's layout and cue buttons get their answers and the cue reaches the audience too.

import { isDeepStrictEqual } from 'node:util';
import { Harness, KEY, check, log, sleep, waitFor } from './harness.mjs';

const ROOM = 'audiencetest';
const HOST = 'host1';
const h = new Harness({ udpPorts: '51300-51400', httpPortBase: 19080, viewport: { width: 1000, height: 700 } });
const { base, pages } = h;
const openPage = (who, url) => h.openPage(who, url);
const api = (method, path, body) => h.api(method, path, body);

const audience = () => pages.audience.evaluate(() => window.audienceState && JSON.parse(JSON.stringify(window.audienceState)));

/** host1's overlay box and the video's displayed picture, in page pixels. */
function overlayGeometry(page, identity) {
  return page.evaluate((id) => {
    const v = document.querySelector('#video');
    const box = document.querySelector(`#regions .region[data-identity="${id}"]`);
    if (!box || !v.videoWidth) return null;
    const vr = v.getBoundingClientRect();
    const scale = Math.min(vr.width / v.videoWidth, vr.height / v.videoHeight);
    const pic = {
      x: vr.x + (vr.width - v.videoWidth * scale) / 2,
      y: vr.y + (vr.height - v.videoHeight * scale) / 2,
      w: v.videoWidth * scale,
      h: v.videoHeight * scale,
    };
    const b = box.getBoundingClientRect();
    return { pic, box: { x: b.x, y: b.y, w: b.width, h: b.height }, title: box.title, videoWidth: v.videoWidth, videoHeight: v.videoHeight };
  }, identity);
}

/** The overlay box of `region` (canvas pixels of a `layout`) sits where it should, ±3 px. */
function boxMatches(g, layout, region) {
  if (!g) return false;
  const sx = g.pic.w / layout.w, sy = g.pic.h / layout.h;
  const want = { x: g.pic.x + region.x * sx, y: g.pic.y + region.y * sy, w: region.w * sx, h: region.h * sy };
  return ['x', 'y', 'w', 'h'].every((k) => Math.abs(g.box[k] - want[k]) <= 3);
}

async function main() {
  const vendor = await fetch(`${base}/vendor/hls.min.js`);
  const vendorText = await vendor.text();
  check(vendor.ok && vendorText.includes('FRAG_PARSING_USERDATA'),
    `/vendor/hls.min.js: ${vendor.status} ${vendorText.slice(0, 200)} (run npm ci --prefix web-demo)`);
  log('/vendor/hls.min.js served:', vendorText.length, 'bytes');

  // Host publishes: that starts the room's program (mixer + HLS).
  const host = await openPage('host', `${base}/host.html?room=${ROOM}&key=${KEY}&name=Host&identity=${HOST}`);
  const link = await host.getAttribute('#audience-link', 'href');
  check(link === `audience.html?room=${ROOM}`, `host page links the audience page (href ${link})`);
  await host.click('#join');
  await waitFor('host publishing', async () => {
    const st = await host.evaluate(() => window.cohostPcs().publish?.connectionState);
    return st === 'connected';
  });
  log('host joined and publishing');

  const playlist = await waitFor('HLS playlist with a segment', async () => {
    const r = await fetch(`${base}/live/${ROOM}/index.m3u8`);
    const t = r.ok ? await r.text() : '';
    return /seg\d+\.ts/.test(t) && t;
  });
  log('HLS playlist is up:', playlist.split('\n').filter((l) => l.endsWith('.ts')).join(' '));

  // Audience page: hls.js plays the program.
  const aud = await openPage('audience', `${base}/audience.html?room=${ROOM}`);
  await waitFor('audience page uses hls.js', async () => (await audience())?.mode === 'hls.js', 10000);
  await waitFor('audience video playing', async () => (await audience())?.playing);
  const t1 = (await audience()).currentTime;
  await sleep(2000);
  const t2 = (await audience()).currentTime;
  check(t2 - t1 > 1.2, `audience video currentTime must advance in real time (${t1} -> ${t2} in 2 s)`);
  log(`audience playing: currentTime ${t1.toFixed(2)} -> ${t2.toFixed(2)} in 2 s`);

  // Layout overlay from the layout SEI: host1's region, scaled to the displayed picture.
  const st = await waitFor('audience layout from SEI with host1', async () => {
    const s = await audience();
    return s?.layout?.regions?.some((r) => r.identity === HOST) && s;
  });
  const region = st.layout.regions.find((r) => r.identity === HOST);
  check(st.layout.w === 1280 && st.layout.h === 720, `layout canvas ${st.layout.w}x${st.layout.h}`);
  const g = await waitFor('host1 box drawn at its place', async () => {
    const geo = await overlayGeometry(aud, HOST);
    return boxMatches(geo, st.layout, region) && geo;
  }, 5000);
  check(g.title === HOST, `box title ${g.title}`);
  log('layout overlay:', JSON.stringify(region), 'drawn at', JSON.stringify(g.box), 'over picture', JSON.stringify(g.pic));

  // A live layout change through the API moves the box (the next layout SEI carries it).
  const custom = { identity: HOST, x: 640, y: 360, w: 640, h: 360, z: 0 };
  const put = await api('PUT', `/api/rooms/${ROOM}/layout`, { regions: [custom] });
  check(put.status === 200, `PUT layout: ${put.status} ${JSON.stringify(put.body)}`);
  const st2 = await waitFor('audience layout shows the custom region', async () => {
    const s = await audience();
    const r = s?.layout?.regions?.find((x) => x.identity === HOST);
    return r && r.x === 640 && r.y === 360 && r.w === 640 && r.h === 360 && s;
  });
  await waitFor('host1 box moved to the custom region', async () => boxMatches(await overlayGeometry(aud, HOST), st2.layout, custom), 5000);
  log('custom layout reached the audience overlay:', JSON.stringify(st2.layout.regions));

  // A cue through the API pops up on the audience page with its id and data.
  const cueId = `api-cue-${Date.now()}`;
  const cueData = { kind: 'red_packet', amount: 8, from: 'api' };
  const sentAt = Date.now();
  const post = await api('POST', `/api/rooms/${ROOM}/cues`, { id: cueId, data: cueData });
  check(post.status === 202 && post.body.id === cueId, `POST cue: ${post.status} ${JSON.stringify(post.body)}`);
  const shown = await waitFor('audience shows the API cue', async () => (await audience())?.cuesShown?.find((c) => c.id === cueId));
  log(`cue ${cueId} shown ${Date.now() - sentAt} ms after the POST:`, JSON.stringify(shown));
  check(isDeepStrictEqual(shown.data, cueData), `cue data ${JSON.stringify(shown.data)} != ${JSON.stringify(cueData)}`);
  check(shown.pts_ms === post.body.pts_ms, `cue SEI pts_ms ${shown.pts_ms} != API answer ${post.body.pts_ms}`);
  check(shown.shownAtMediaTime >= shown.pts - 0.002, `cue shown before its frame (${shown.shownAtMediaTime} < ${shown.pts})`);
  check(shown.shownAtMediaTime - shown.pts < 0.5, `cue shown late: frame ${shown.pts}, shown at ${shown.shownAtMediaTime}`);
  const text = await aud.textContent(`#cues .cue[data-cue-id="${cueId}"]`);
  check(text && text.includes('🧧 red packet!') && text.includes('"amount":8'), `cue overlay text: ${text}`);
  check(await aud.isVisible(`#cues .cue[data-cue-id="${cueId}"]`), 'cue overlay visible');
  const again = await audience();
  check(again.cuesShown.filter((c) => c.id === cueId).length === 1, 'a cue carried by 3 frames shows once');
  log('cue overlay:', text);

  // The same id again is idempotent: 200 with the first answer, no second overlay.
  const dup = await api('POST', `/api/rooms/${ROOM}/cues`, { id: cueId, data: cueData });
  check(dup.status === 200 && dup.body.pts_ms === post.body.pts_ms, `repeated cue id: ${dup.status} ${JSON.stringify(dup.body)}`);

  await h.screenshots();

  // The host page's buttons now that the program exists: layout -> layout_changed, cue ->
  // cue_accepted, and that cue reaches the audience.
  await host.click('[data-layout="side_by_side"]');
  await waitFor('host page shows layout side_by_side', async () => (await host.textContent('#layout')) === 'side_by_side', 10000);
  const st3 = await waitFor('audience layout back to a template (host1 full canvas)', async () => {
    const s = await audience();
    const r = s?.layout?.regions?.find((x) => x.identity === HOST);
    return r && r.x !== 640 && s;
  });
  log('host layout button -> audience layout', JSON.stringify(st3.layout.regions));
  const nBefore = (await audience()).cuesShown.length;
  await host.click('[data-cue="red_packet"]');
  await waitFor('host page shows cue_accepted', async () =>
    (await host.$$eval('#cue-log li', (l) => l.map((e) => e.textContent))).some((t) => t.startsWith('cue ')), 10000);
  const hostCue = await waitFor('audience shows the host page cue', async () => {
    const s = await audience();
    return s.cuesShown.length > nBefore && s.cuesShown[s.cuesShown.length - 1];
  });
  check(isDeepStrictEqual(hostCue.data, { kind: 'red_packet' }), `host cue data ${JSON.stringify(hostCue.data)}`);
  log('host cue button -> audience overlay', JSON.stringify(hostCue));
  const hostErrors = (await host.evaluate(() => window.cohostState)).errors || [];
  check(hostErrors.length === 0, `host page errors: ${JSON.stringify(hostErrors)}`);

  // The same page over HTTP-FLV (mpegts.js, `?player=flv`): it plays, draws the layout from
  // the SEI mpegts.js hands over, and shows a cue at its frame.
  const flvState = () => pages.audienceFlv.evaluate(() => window.audienceState && JSON.parse(JSON.stringify(window.audienceState)));
  const openedAt = Date.now();
  await openPage('audienceFlv', `${base}/audience.html?room=${ROOM}&player=flv`);
  await waitFor('FLV audience page uses mpegts.js', async () => (await flvState())?.mode === 'flv', 10000);
  await waitFor('FLV audience video playing', async () => (await flvState())?.playing);
  const f1 = (await flvState()).currentTime;
  await sleep(2000);
  const f2 = await flvState();
  check(f2.currentTime - f1 > 1.2, `FLV audience currentTime must advance (${f1} -> ${f2.currentTime} in 2 s)`);
  log(`FLV audience playing: first picture ${f2.firstFrameMs} ms after its navigation (${Date.now() - openedAt} ms ago), buffer ${f2.edgeLatency?.toFixed(2)} s`);
  await waitFor('FLV audience layout from SEI with host1', async () => (await flvState())?.layout?.regions?.some((r) => r.identity === HOST));
  const flvCueId = `flv-cue-${Date.now()}`;
  const flvPost = await api('POST', `/api/rooms/${ROOM}/cues`, { id: flvCueId, data: { kind: 'coupon' } });
  check(flvPost.status === 202, `POST cue: ${flvPost.status}`);
  const flvShown = await waitFor('FLV audience shows the cue', async () => (await flvState())?.cuesShown?.find((c) => c.id === flvCueId));
  check(flvShown.pts_ms === flvPost.body.pts_ms, `FLV cue pts_ms ${flvShown.pts_ms} != ${flvPost.body.pts_ms}`);
  check(flvShown.shownAtMediaTime >= flvShown.pts - 0.002 && flvShown.shownAtMediaTime - flvShown.pts < 0.5,
    `FLV cue at its frame: frame ${flvShown.pts}, shown at ${flvShown.shownAtMediaTime}`);
  check((await flvState()).errors.length === 0, `FLV audience errors: ${JSON.stringify((await flvState()).errors)}`);
  log(`FLV cue ${flvCueId} shown at media time ${flvShown.shownAtMediaTime.toFixed(3)} (its frame ${flvShown.pts.toFixed(3)})`);

  const fin = await audience();
  check(fin.errors.length === 0, `audience page errors: ${JSON.stringify(fin.errors)}`);
  log(`audience: ${fin.frames} frames presented, ${fin.seiCount} SEI, ${fin.layoutsApplied} layouts applied, ${fin.cuesShown.length} cues shown`);
}

async function diagnose() {
  if (pages.audience) {
    const st = await audience().catch((err) => `unavailable: ${err.message}`);
    console.error(`\n--- audience state ---\n${JSON.stringify(st, null, 1)}`);
  }
  if (pages.host) {
    const st = await pages.host.evaluate(() => window.cohostState).catch((err) => `unavailable: ${err.message}`);
    console.error(`\n--- host state ---\n${JSON.stringify(st, null, 1)}`);
  }
}

await h.run(main, diagnose);
