// Browser test of the demo pages: a host page and a guest page in headless Chromium, both real
// WebRTC peers of a real cohost server. Run inside a network namespace with only `lo`
// (tests/browser.rs does: `unshare --net sh -c 'ip link set lo up && exec "$@"' sh node ...`).
//
// Env: CARGO_BIN_EXE_cohost (server binary, required), CHROMIUM (default /usr/bin/chromium),
// TIMEOUT_S (per media wait, default 40), SCREENSHOTS (a directory: save a PNG of each page).
//
// Flow: start server -> host page joins (publishes) -> guest page joins with a guest token ->
// guest clicks "Request to go on air" -> host clicks "accept" -> both sides decode the other's
// video (inbound-rtp framesDecoded > 0) -> host clicks "remove" -> guest tile disappears on host ->
// layout and cue buttons get a visible answer -> a viewer is invited, accepts, and is decoded.

import { Harness, KEY, log, sleep, waitFor } from './harness.mjs';

const ROOM = 'browsertest';
const h = new Harness({ udpPorts: '51000-51200', httpPortBase: 18080 });
const { base, pages } = h;
const openPage = (who, url) => h.openPage(who, url);
const mint = (identity, role, name) => h.mint(ROOM, identity, role, name);

/** Frames decoded on the inbound video of `page`'s subscription to `identity`. */
function framesDecoded(page, identity) {
  return page.evaluate(async (id) => {
    const pcs = window.cohostPcs ? window.cohostPcs() : {};
    const pc = pcs.subs && pcs.subs[id];
    if (!pc) return 0;
    const stats = await pc.getStats();
    let n = 0;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0;
    });
    return n;
  }, identity);
}

function state(page) {
  return page.evaluate(() => window.cohostState);
}

async function main() {
  // Host: the page mints its own token with the key from the URL (the dev flow).
  const host = await openPage('host', `${base}/host.html?room=${ROOM}&key=${KEY}&name=Host&identity=host1`);
  await host.click('#join');
  await waitFor('host joined', async () => (await state(host))?.joined);
  await waitFor('host publishing', async () => {
    const st = await host.evaluate(() => window.cohostPcs().publish?.connectionState);
    return st === 'connected';
  });
  log('host joined and publishing');

  // Guest: joins with a guest token minted here (the production-like flow: token from backend).
  const guestToken = await mint('guest1', 'guest', 'Guest');
  const guest = await openPage('guest', `${base}/guest.html?token=${encodeURIComponent(guestToken)}`);
  await guest.click('#join');
  await waitFor('guest joined', async () => (await state(guest))?.joined);
  const gs = await state(guest);
  if (gs.onAir) throw new Error('a guest must not be on air before the host accepts');
  log('guest joined (off air)');

  // Guest sees the host's video before going on air.
  await waitFor('guest decodes host video', async () => (await framesDecoded(guest, 'host1')) > 0);
  log('guest decodes host video:', await framesDecoded(guest, 'host1'), 'frames');

  await guest.click('#request');
  await waitFor('request shown on host page', async () => (await host.$('[data-request="guest1"] button.accept')) !== null);
  log('host sees the request; accepting via the UI');
  await host.click('[data-request="guest1"] button.accept');

  await waitFor('guest on air', async () => (await state(guest))?.onAir);
  await waitFor('guest publishing', async () => {
    const st = await guest.evaluate(() => window.cohostPcs().publish?.connectionState);
    return st === 'connected';
  });
  log('guest on air and publishing');

  await waitFor('host has a tile for guest1', async () => (await state(host))?.remoteTiles?.includes('guest1'));
  await waitFor('host decodes guest video', async () => (await framesDecoded(host, 'guest1')) > 0);
  log('host decodes guest video:', await framesDecoded(host, 'guest1'), 'frames');
  const g2 = await framesDecoded(guest, 'host1');
  await sleep(1000);
  const g3 = await framesDecoded(guest, 'host1');
  if (!(g3 > g2)) throw new Error(`guest stopped decoding host video (${g2} -> ${g3})`);
  log('guest still decoding host video:', g3, 'frames');

  // Host removes the guest through the participant list.
  await host.click('[data-participant="guest1"] button.remove');
  await waitFor('guest tile gone on host page', async () => {
    const st = await state(host);
    const dom = await host.$('[data-remote-tile="guest1"]');
    return st && !st.remoteTiles.includes('guest1') && dom === null;
  });
  await waitFor('guest off air', async () => {
    const st = await state(guest);
    return st && !st.onAir && !st.publishing;
  });
  const gsAfter = await state(guest);
  if (!gsAfter.connected) throw new Error('a removed guest stays in the room');
  log('host removed guest: tile gone, guest off air and still connected');

  // Layout and cue buttons: the server answers with layout_changed / cue_accepted, or with an
  // `error` (e.g. `unavailable` while no program pipeline runs) that the page must show.
  const errCount = async () => (await host.$$('#errors .error')).length;
  let before = await errCount();
  await host.click('[data-layout="speaker"]');
  const layoutOutcome = await waitFor('host page shows the layout answer', async () => {
    if ((await host.textContent('#layout')) === 'speaker') return 'layout_changed';
    if ((await errCount()) > before) return `error shown: ${await host.textContent('#errors .error:last-child')}`;
    return null;
  }, 10000);
  log('layout button ->', layoutOutcome);
  before = await errCount();
  await host.click('[data-cue="red_packet"]');
  const cueOutcome = await waitFor('host page shows the cue answer', async () => {
    const items = await host.$$eval('#cue-log li', (l) => l.map((e) => e.textContent));
    if (items.some((t) => t.startsWith('cue '))) return 'cue_accepted';
    if ((await errCount()) > before) return `error shown: ${await host.textContent('#errors .error:last-child')}`;
    return null;
  }, 10000);
  log('cue button ->', cueOutcome);

  // Invitation flow: a viewer (token minted by the page with the dev key) is invited by the host
  // through the participant list, accepts on its page, becomes a guest and goes on air.
  const viewer = await openPage('viewer', `${base}/guest.html?room=${ROOM}&key=${KEY}&name=Viewer&role=viewer&identity=viewer1`);
  await viewer.click('#join');
  await waitFor('viewer joined', async () => (await state(viewer))?.joined);
  if ((await state(viewer)).me.role !== 'viewer') throw new Error('expected role viewer');
  await waitFor('host lists the viewer', async () => (await host.$('[data-participant="viewer1"] button.invite')) !== null);
  await host.click('[data-participant="viewer1"] button.invite');
  await waitFor('viewer sees the invitation', async () => viewer.isVisible('#accept-invite'));
  await viewer.click('#accept-invite');
  await waitFor('viewer on air as guest', async () => {
    const st = await state(viewer);
    return st?.onAir && st.me.role === 'guest';
  });
  await waitFor('host decodes the invited viewer', async () => (await framesDecoded(host, 'viewer1')) > 0);
  log('invited viewer is on air as a guest; host decodes it:', await framesDecoded(host, 'viewer1'), 'frames');

  await h.screenshots();

  // Mute: the host mutes the new co-host's audio; everyone sees audio_muted.
  await host.click('[data-participant="viewer1"] button.mute-audio');
  await waitFor('viewer audio muted (host view)', async () =>
    (await host.textContent('[data-participant="viewer1"] button.mute-audio')) === 'unmute audio');
  await waitFor('viewer sees itself muted', async () => (await state(viewer))?.me?.audio_muted === true);
  log('host muted the viewer\'s audio');

  const hostErrors = (await state(host)).errors;
  if (hostErrors.length) log('host page errors (informational):', JSON.stringify(hostErrors));
}

async function diagnose() {
  for (const [who, page] of Object.entries(pages)) {
    const st = await page.evaluate(async () => {
      const pcs = window.cohostPcs ? window.cohostPcs() : {};
      const pcState = (pc) => pc && `${pc.connectionState}/${pc.iceConnectionState}`;
      return {
        state: window.cohostState,
        publish: pcState(pcs.publish),
        subs: Object.fromEntries(Object.entries(pcs.subs || {}).map(([k, pc]) => [k, pcState(pc)])),
      };
    }).catch((e) => `unavailable: ${e.message}`);
    console.error(`\n--- ${who} page state ---\n${JSON.stringify(st, null, 1)}`);
  }
}

await h.run(main, diagnose);
