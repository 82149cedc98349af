// An impairing UDP relay for the browser tests' media path: the same link model as the Rust
// kit (`testkit/src/impair.rs`, whose docs explain it) for a Chromium page, which the Rust
// relay cannot reach from inside the scenario's network namespace. Seeded and deterministic
// for a given packet sequence: random loss, a bandwidth cap with a tail-drop queue, a fixed
// delay, per direction, applied to RTP and RTCP only (STUN and DTLS pass untouched, so ICE
// and DTLS still connect).
//
//   page ──▶ clientSide ══ up link ══▶ serverSide ──▶ the server's candidate
//   page ◀── clientSide ◀═ down link ═ serverSide ◀── the server
//
// The page is pointed at `clientSide` by rewriting the answer's candidates
// (`rewriteAnswer`); its offer goes to the server without candidates, so the server learns
// the relay's `serverSide` address from the checks it receives (peer-reflexive) and never
// reaches the page another way.

import { createSocket } from 'node:dgram';

/** RFC 7983 demultiplexing: is this datagram RTP or RTCP? */
function isMedia(b) {
  return b.length > 1 && b[0] >= 128 && b[0] <= 191;
}

/** A seeded PRNG (mulberry32). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One direction: `{ loss, rateKbps, queueBytes, delayMs }` (all optional). */
export class Link {
  constructor(cfg = {}, seed = 1) {
    this.rand = rng(seed);
    this.busyUntil = 0;
    this.queue = []; // [finish ms, bytes]
    this.queued = 0;
    this.stats = { seen: 0, media: 0, mediaBytes: 0, droppedLoss: 0, droppedQueue: 0, sentBytes: 0 };
    this.set(cfg);
  }

  set(cfg) {
    this.cfg = { loss: 0, rateKbps: null, delayMs: 0, ...cfg };
    if (this.cfg.rateKbps && !this.cfg.queueBytes) this.cfg.queueBytes = Math.max(1500, (this.cfg.rateKbps * 1000) / 8 / 10);
  }

  /** The departure time (ms) of a packet arriving at `now`, or null when it is dropped. */
  onPacket(now, len, media) {
    this.stats.seen++;
    if (!media) return now;
    this.stats.media++;
    this.stats.mediaBytes += len;
    if (this.cfg.loss > 0 && this.rand() < this.cfg.loss) {
      this.stats.droppedLoss++;
      return null;
    }
    let t = now;
    const kbps = this.cfg.rateKbps;
    if (kbps) {
      while (this.queue.length && this.queue[0][0] <= now) this.queued -= this.queue.shift()[1];
      if (this.queue.length && this.queued + len > this.cfg.queueBytes) {
        this.stats.droppedQueue++;
        return null;
      }
      t = Math.max(now, this.busyUntil) + (len * 8) / kbps; // kbit/s = bits per ms
      this.busyUntil = t;
      this.queue.push([t, len]);
      this.queued += len;
    }
    this.stats.sentBytes += len;
    return t + this.cfg.delayMs;
  }
}

/** A relay between one page and one server peer. */
export class Relay {
  static async start(up = {}, down = {}, seed = 1) {
    const r = new Relay(up, down, seed);
    await Promise.all([r.clientSide, r.serverSide].map((s) => new Promise((ok) => s.bind(0, '127.0.0.1', ok))));
    return r;
  }

  constructor(up, down, seed) {
    this.up = new Link(up, seed);
    this.down = new Link(down, seed + 1);
    this.clientSide = createSocket('udp4');
    this.serverSide = createSocket('udp4');
    this.client = null; // { address, port }
    this.server = null;
    this.clientSide.on('message', (m, from) => {
      this.client = { address: from.address, port: from.port };
      if (this.server) this.forward(this.up, m, this.serverSide, this.server);
    });
    this.serverSide.on('message', (m) => {
      if (this.client) this.forward(this.down, m, this.clientSide, this.client);
    });
  }

  forward(link, m, sock, to) {
    const now = performance.now();
    const at = link.onPacket(now, m.length, isMedia(m));
    if (at === null) return;
    const send = () => { if (!this.closed) sock.send(m, to.port, to.address, () => {}); };
    if (at - now < 0.5) send();
    else setTimeout(send, at - now);
  }

  /** The relay's address the page must send to. */
  get clientAddress() {
    const a = this.clientSide.address();
    return { address: a.address, port: a.port };
  }

  /**
   * Points the relay at the answer's first UDP candidate and returns the answer with every
   * candidate replaced by one `host` candidate of the relay's client side.
   */
  rewriteAnswer(sdp) {
    const m = sdp.match(/a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host/i);
    if (!m) throw new Error(`no UDP host candidate in the answer:\n${sdp}`);
    this.server = { address: m[1], port: Number(m[2]) };
    const { address, port } = this.clientAddress;
    let done = false;
    return sdp
      .split('\r\n')
      .flatMap((l) => {
        if (!l.startsWith('a=candidate:')) return [l];
        if (done) return [];
        done = true;
        return [`a=candidate:1 1 udp 2130706431 ${address} ${port} typ host`];
      })
      .join('\r\n');
  }

  close() {
    this.closed = true;
    this.clientSide.close();
    this.serverSide.close();
  }
}

/** An offer without its candidates (the server must learn the page's address from checks). */
export function withoutCandidates(sdp) {
  return sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate:') && l !== 'a=end-of-candidates').join('\r\n');
}
