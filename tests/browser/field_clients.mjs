// Field clients: medooze's `whip-whep` (npm, pinned) in Chromium, on a web app served from its
// own origin (app_server.mjs), publishing and playing through cohost:
// - from the app's origin straight to cohost (cross-origin: CORS preflight, `Location` and
//   `ETag` exposed) and through the app's own reverse proxy (same origin);
// - the clients trickle: the offer goes out before gathering, candidates follow in `PATCH`;
// - a page on an origin cohost does not list gets no answer at all (the browser blocks it).
// Run inside a network namespace with only `lo` (tests/browser.rs).

import { Harness, log, waitFor, check } from './harness.mjs';
import { startApp, play } from './app_server.mjs';

const ROOM = 'field';
const appPort = 20000 + Math.floor(Math.random() * 1000);
const APP = `http://127.0.0.1:${appPort}`;
// The same app reached by another name is another origin, one cohost does not allow.
const OTHER = `http://localhost:${appPort}`;
const h = new Harness({ udpPorts: '52000-52200', httpPortBase: 19080, serverArgs: ['--cors-origins', APP] });

async function stats(page) {
  return page.evaluate(() => window.stats());
}

async function decoded(page, url, n) {
  return waitFor(`${url}: ${n} pictures decoded`, async () => {
    const s = (await stats(page)).find((x) => x.kind === 'play' && x.url === url);
    return s && s.framesDecoded >= n ? s : null;
  });
}

async function main() {
  const app = await startApp(appPort, h.base);
  try {
    const page = await h.openPage('app', `${APP}/app.html`);
    await waitFor('app page ready', () => page.evaluate(() => window.ready === true));
    const hostToken = await h.mint(ROOM, 'app-host', 'host', 'App host');
    const guestToken = await h.mint(ROOM, 'app-guest', 'guest', 'App guest');
    const viewerToken = await h.mint(ROOM, 'app-viewer', 'viewer', 'App viewer');

    // 1. Cross-origin: the app's page calls cohost directly.
    const pubUrl = `${h.base}/whip/${ROOM}`;
    const pub = await page.evaluate(([u, t]) => window.publish(u, t), [pubUrl, hostToken]);
    await waitFor('cross-origin publisher connected', async () => (await stats(page)).find((x) => x.kind === 'publish')?.state === 'connected');
    log(`whip-whep publish (cross-origin): POST answered in ${pub.ms.toFixed(0)} ms, connected`);

    const sfuUrl = `${h.base}/whep/${ROOM}/app-host`;
    await play(page, sfuUrl, guestToken);
    const sfu = await decoded(page, sfuUrl, 30);
    log(`whip-whep play of the co-host (cross-origin): ${sfu.framesDecoded} pictures, ${sfu.width} px wide`);

    const progUrl = `${h.base}/whep/${ROOM}`;
    await play(page, progUrl, viewerToken);
    const prog = await decoded(page, progUrl, 30);
    check(prog.width >= 640, `the program is the mixed picture: ${prog.width}`);
    log(`whip-whep play of the program (cross-origin): ${prog.framesDecoded} pictures, ${prog.width} px wide`);

    // 2. Same origin: through the app's reverse proxy.
    const gPubUrl = `${APP}/whip/${ROOM}`;
    await page.evaluate(([u, t]) => window.publish(u, t), [gPubUrl, guestToken]);
    await waitFor('same-origin publisher connected', async () => (await stats(page)).filter((x) => x.kind === 'publish')[1]?.state === 'connected');
    const gPlayUrl = `${APP}/whep/${ROOM}/app-guest`;
    await play(page, gPlayUrl, hostToken);
    const g = await decoded(page, gPlayUrl, 30);
    log(`whip-whep publish + play (same origin, proxied): ${g.framesDecoded} pictures`);

    // The clients trickled: every POST was followed by PATCHes that cohost took (204).
    const fetches = await page.evaluate(() => window.fetchLog);
    const posts = fetches.filter((f) => f.method === 'POST' && f.status !== 404);
    const patches = fetches.filter((f) => f.method === 'PATCH');
    check(posts.length === 5 && posts.every((f) => f.status === 201), `POSTs: ${JSON.stringify(posts)}`);
    check(patches.length >= 5 && patches.every((f) => f.status === 204), `PATCHes: ${JSON.stringify(patches)}`);
    for (const p of posts) {
      const base = p.url.replace(/\/whip\/.*|\/whep\/.*/, '');
      check(patches.some((x) => x.url.startsWith(base)), `no PATCH after ${p.url}`);
    }
    log(`trickle: ${posts.length} POSTs answered 201, ${patches.length} PATCHes answered 204`);
    for (const s of await stats(page)) check(s.state === 'connected', `${s.kind} ${s.url}: ${s.state}`);

    // ICE restart of the cross-origin publisher through its client (PATCH, If-Match: *):
    // cohost answers 200 with new credentials, the publisher reconnects on them and its
    // player keeps decoding.
    const before = (await stats(page)).find((x) => x.kind === 'publish' && x.url === pubUrl);
    const decodedBefore = (await stats(page)).find((x) => x.kind === 'play' && x.url === sfuUrl).framesDecoded;
    await page.evaluate(([k, u]) => window.restart(k, u), ['publish', pubUrl]);
    const after = await waitFor('the publisher restarted ICE and is connected', async () => {
      const s = (await stats(page)).find((x) => x.kind === 'publish' && x.url === pubUrl);
      return s.ufrag && s.ufrag !== before.ufrag && s.state === 'connected' ? s : null;
    });
    await decoded(page, sfuUrl, decodedBefore + 90);
    const restartPatch = (await page.evaluate(() => window.fetchLog)).filter((f) => f.method === 'PATCH' && f.status === 200);
    check(restartPatch.length === 1, `one ICE restart PATCH answered 200: ${JSON.stringify(restartPatch)}`);
    log(`ICE restart: ufrag ${before.ufrag} -> ${after.ufrag}, PATCH 200, the co-host still decoded`);

    // 3. An origin cohost does not list: the browser blocks the call (no CORS headers).
    const other = await h.openPage('other-origin', `${OTHER}/app.html`);
    await waitFor('other page ready', () => other.evaluate(() => window.ready === true));
    const refused = await other.evaluate(([u, t]) => window.publish(u, t).then(() => 'published', (e) => String(e)), [pubUrl, guestToken]);
    check(/Failed to fetch/.test(refused), `a page on ${OTHER} must be blocked: ${refused}`);
    log(`page on ${OTHER} (not listed): ${refused}`);

    // DELETE through the clients: 200 for each session.
    await page.evaluate(() => window.stop());
    const deletes = (await page.evaluate(() => window.fetchLog)).filter((f) => f.method === 'DELETE');
    check(deletes.length === 5 && deletes.every((f) => f.status === 200), `DELETEs: ${JSON.stringify(deletes)}`);
    log('DELETE of all 5 sessions: 200');
  } finally {
    app.close();
  }
}

async function diagnose(harness) {
  const p = harness.pages.app;
  if (p) console.error('stats:', JSON.stringify(await p.evaluate(() => window.stats()), null, 1), '\nfetches:', JSON.stringify(await p.evaluate(() => window.fetchLog)));
}

h.run(main, diagnose);
