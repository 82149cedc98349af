// A real TURN path: coturn (Debian's `turnserver`, coturn.mjs) on loopback with the shared
// secret cohost mints credentials from (`--turn-secret`). A page allowed only relayed
// candidates (`iceTransportPolicy: 'relay'`) publishes through WHIP and plays through WHEP
// (the `whip-whep` clients, which take the TURN server and its credentials from cohost's
// `Link` headers); both connections must select a `relay` candidate pair and the player must
// decode the publisher's pictures. Run inside a network namespace with only `lo`
// (tests/browser.rs).

import { Harness, log, waitFor, check } from './harness.mjs';
import { startApp, play } from './app_server.mjs';
import { startCoturn } from './coturn.mjs';

const ROOM = 'turned';
const TURN_SECRET = 'coturn-shared-secret-for-tests';
const turnPort = 34780 + Math.floor(Math.random() * 100);
const appPort = 21000 + Math.floor(Math.random() * 1000);
const APP = `http://127.0.0.1:${appPort}`;
const h = new Harness({
  udpPorts: '52300-52500',
  httpPortBase: 22080,
  serverArgs: [
    '--cors-origins', APP,
    '--ice-servers', `turn:127.0.0.1:${turnPort}?transport=udp`,
    '--turn-secret', TURN_SECRET,
  ],
});

async function main() {
  const turn = await startCoturn(turnPort, TURN_SECRET, { minPort: 53000, maxPort: 53200 });
  const app = await startApp(appPort, h.base);
  try {
    log(`coturn up on 127.0.0.1:${turnPort}`);
    const page = await h.openPage('app', `${APP}/app.html`);
    await waitFor('app page ready', () => page.evaluate(() => window.ready === true));
    const host = await h.mint(ROOM, 'relayed-host', 'host', 'Relayed host');
    const guest = await h.mint(ROOM, 'relayed-guest', 'guest', 'Relayed guest');
    const relayOnly = { iceTransportPolicy: 'relay' };

    const pubUrl = `${h.base}/whip/${ROOM}`;
    await page.evaluate(([u, t, c]) => window.publish(u, t, c), [pubUrl, host, relayOnly]);
    const playUrl = `${h.base}/whep/${ROOM}/relayed-host`;
    await play(page, playUrl, guest, relayOnly);
    const st = await waitFor('the relayed player decodes 60 pictures', async () => {
      const s = await page.evaluate(() => window.stats());
      const play = s.find((x) => x.kind === 'play');
      return play && play.framesDecoded >= 60 ? s : null;
    });
    for (const s of st) {
      check(s.state === 'connected', `${s.kind}: ${s.state}`);
      check(s.local === 'relay', `${s.kind} must run over TURN: local candidate ${s.local}, remote ${s.remote}`);
      log(`${s.kind}: connected, selected pair local=${s.local} remote=${s.remote}, rtt ${s.rtt} s, ${s.kind === 'play' ? `${s.framesDecoded} pictures decoded` : `${s.framesSent} pictures sent`}`);
    }
    // coturn took cohost's minted credentials (username `expiry:identity`) for each session.
    if (process.env.TURN_LOG) console.error(turn.lines.join('\n'));
    const allocated = (who) => turn.lines.some((l) => l.includes(`:${who}>: incoming packet ALLOCATE processed, success`));
    check(allocated('relayed-host') && allocated('relayed-guest'), `coturn must have allocated for both identities:\n${turn.lines.slice(-30).join('\n')}`);
    const allocations = turn.lines.filter((l) => /ALLOCATE processed, success/.test(l)).length;
    log(`coturn: ${allocations} successful allocations`);
    await page.evaluate(() => window.stop());
  } finally {
    app.close();
    turn.stop();
  }
}

h.run(main, async (harness) => {
  const p = harness.pages.app;
  if (p) console.error('stats:', JSON.stringify(await p.evaluate(() => window.stats()), null, 1), '\nfetches:', JSON.stringify(await p.evaluate(() => window.fetchLog)));
});
