// The studio's pages in headless Chromium: the host page (fake camera) publishes, turns the
// tile labels on with its checkbox, starts a recording with its button, and lists it; while it is written and after it is stopped, the
// page fetches the file (with the API key, as its download link does) and a <video> element
// plays it — pictures at the program's size, time advancing, a seek into the middle landing
// there. The room list page (rooms.html) shows the room's live snapshot and refreshes it.
// Run inside a network namespace with only `lo` (tests/browser.rs does).
//
// Env: CARGO_BIN_EXE_cohost (server binary, required), CHROMIUM, TIMEOUT_S (per wait).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, KEY, check, log, sleep, waitFor } from './harness.mjs';

const ROOM = 'studiotest';
const recDir = mkdtempSync(join(tmpdir(), 'cohost-rec-'));
const h = new Harness({
  udpPorts: '51700-51800',
  httpPortBase: 26080,
  viewport: { width: 900, height: 600 },
  serverArgs: ['--recordings-dir', recDir],
});

const recordings = (page) => page.evaluate(() => window.cohostState.recordings || []);

/** Fetches `url` with the API key in the page, plays it in a <video>, seeks to `seekTo`. */
async function playInPage(page, url, seekTo) {
  return page.evaluate(async ({ url, key, seekTo }) => {
    const r = await fetch(url, { headers: { Authorization: `Bearer ${key}` } });
    if (!r.ok) return { error: `HTTP ${r.status}` };
    const blob = await r.blob();
    const v = document.createElement('video');
    v.muted = true;
    v.playsInline = true;
    document.body.append(v);
    const out = { bytes: blob.size };
    const failed = new Promise((_, reject) => v.addEventListener('error', () => reject(new Error(`video error ${v.error && v.error.code}: ${v.error && v.error.message}`))));
    const wait = (ev) => Promise.race([new Promise((res) => v.addEventListener(ev, res, { once: true })), failed]);
    try {
      v.src = URL.createObjectURL(blob);
      await wait('loadedmetadata');
      out.duration = v.duration;
      out.width = v.videoWidth;
      out.height = v.videoHeight;
      await v.play();
      const t0 = v.currentTime;
      await new Promise((res) => setTimeout(res, 1200));
      out.advanced = v.currentTime - t0;
      out.frames = v.getVideoPlaybackQuality().totalVideoFrames;
      v.pause();
      v.currentTime = seekTo;
      await wait('seeked');
      out.seekedTo = v.currentTime;
    } catch (e) {
      out.error = e.message;
    }
    v.remove();
    return out;
  }, { url, key: KEY, seekTo });
}

async function main() {
  const host = await h.openPage('host', `${h.base}/host.html?room=${ROOM}&key=${KEY}&name=Host&identity=host1`);
  await host.click('#join');
  await waitFor('host publishing', async () =>
    (await host.evaluate(() => window.cohostPcs().publish?.connectionState)) === 'connected');
  await waitFor('the program', async () => (await h.api('GET', `/api/rooms/${ROOM}`)).body.media?.program?.running === true);
  log('host publishing, program running');

  // The room list shows the room's snapshot, refreshed.
  const rooms = await h.openPage('rooms', `${h.base}/rooms.html?key=${KEY}&every=1000`);
  await waitFor('two snapshots of the room on the room list', async () =>
    ((await rooms.evaluate(() => window.cohostRooms.snapshots))[ROOM] || 0) >= 2);
  const img = await rooms.evaluate((room) => {
    const i = document.querySelector(`[data-room="${room}"] img.snapshot`);
    return i && { w: i.naturalWidth, h: i.naturalHeight, complete: i.complete };
  }, ROOM);
  log('room list snapshot', JSON.stringify(img));
  check(img && img.w === 320 && img.h === 180, `the room's snapshot, 320x180: ${JSON.stringify(img)}`);

  // Names on the tiles, from the host page's checkbox (over signaling), live.
  await host.check('#labels');
  await waitFor('labels on in the room\'s mix', async () =>
    (await h.api('GET', `/api/rooms/${ROOM}`)).body.media?.program?.mix?.labels === true);
  log('labels on');

  // Record with the host page's button.
  await waitFor('the record button', async () => !(await host.evaluate(() => document.querySelector('#rec-start').disabled)));
  await host.click('#rec-start');
  const rec = await waitFor('a recording listed', async () => (await recordings(host)).find((r) => r.state === 'recording'));
  log('recording', JSON.stringify(rec));
  await sleep(4000);
  const live = await playInPage(host, rec.url, 1.0);
  log('while written', JSON.stringify(live));
  check(!live.error, `the recording plays while written: ${live.error}`);
  check(live.width === 1280 && live.height === 720, `program size while written: ${live.width}x${live.height}`);
  check(live.advanced > 0.5, `time advances while written: ${live.advanced}`);
  await sleep(2000);
  await host.click('#rec-stop');
  const done = await waitFor('the recording finished', async () => (await recordings(host)).find((r) => r.id === rec.id && r.state === 'finished'));
  log('finished', JSON.stringify(done));
  check(done.duration_s > 5 && done.duration_s < 9, `duration ${done.duration_s} s`);
  const after = await playInPage(host, done.url, done.duration_s / 2);
  log('after', JSON.stringify(after));
  check(!after.error, `the finished recording plays: ${after.error}`);
  check(after.width === 1280 && after.height === 720, `program size: ${after.width}x${after.height}`);
  check(after.advanced > 0.8, `time advances: ${after.advanced}`);
  check(Math.abs(after.duration - done.duration_s) < 0.6, `the browser's duration ${after.duration} vs the API's ${done.duration_s}`);
  check(Math.abs(after.seekedTo - done.duration_s / 2) < 0.6, `a seek to the middle lands there: ${after.seekedTo}`);
  const link = await host.evaluate((id) => document.querySelector(`[data-recording="${id}"] a.download`)?.getAttribute('href'), rec.id);
  check(link === done.url, `the download link: ${link}`);
  await h.screenshots();
}

process.on('exit', () => rmSync(recDir, { recursive: true, force: true }));
await h.run(main, async () => {});
