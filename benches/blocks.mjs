// Glass-to-glass blocks for the bench pages: a sender that draws a frame counter and its send
// time as black/white blocks on a canvas, and a decoder that reads them back from any <video>
// (WebRTC, MSE) in `requestVideoFrameCallback`, at any scale.
//
// The bit layout is the one of benches/glass_to_glass.mjs (which keeps its own inline copy):
// 64 blocks, 16 across x 4 down over the top 4/9 of the picture, each 1/16 of the width and 1/9
// of the height: 8 sync bits 10100110, a 16-bit frame counter, the send time
// `performance.timeOrigin + performance.now()` in 0.1 ms units mod 2^32, an 8-bit check; below
// them a moving, noisy scene so the encoders have real work.
//
// The functions below run in the page, not in Node: `senderScript(cfg)` and `decoderScript()`
// give their source to put in a <script> (or `frame.addScriptTag({content})`). They must stay
// self-contained (no references to this module's scope).

/** In the page: defines `window.startSender()`, `window.senderStream`, `window.senderDraws()`. */
function pageSender(cfg) {
  const { W, H, source, audio } = cfg;
  const COLS = 16, ROWS = 4, BW = W / COLS, BH = H / 9;
  const SYNC = [1, 0, 1, 0, 0, 1, 1, 0];
  const now = () => performance.timeOrigin + performance.now();
  function bitsOf(counter, t10) {
    const bytes = [counter >>> 8 & 255, counter & 255, t10 >>> 24 & 255, t10 >>> 16 & 255, t10 >>> 8 & 255, t10 & 255];
    let ck = 0xa5;
    for (const b of bytes) ck = (ck * 31 + b) & 255;
    bytes.push(ck);
    const bits = SYNC.slice();
    for (const b of bytes) for (let i = 7; i >= 0; i--) bits.push(b >>> i & 1);
    return bits; // 64
  }
  window.startSender = (canvas) => {
    const c = canvas;
    c.width = W;
    c.height = H;
    const g = c.getContext('2d', { alpha: false });
    let counter = 0, draws = 0, seed = 1;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    function draw() {
      const t10 = Math.floor(now() * 10) >>> 0;
      counter = (counter + 1) & 0xffff;
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
    let video;
    if (source === 'generator') {
      // Timer-driven at 29 fps, not locked to the page's vsync (see glass_to_glass.mjs).
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
      video = gen;
    } else {
      const loop = () => { draw(); requestAnimationFrame(loop); };
      requestAnimationFrame(loop);
      video = c.captureStream(30).getVideoTracks()[0];
    }
    const tracks = [video];
    if (audio) {
      // A quiet tone, so the program's audio is a co-host's and not only the mixer's silence.
      const ac = new AudioContext({ sampleRate: 48000 });
      const osc = ac.createOscillator();
      const gain = ac.createGain();
      gain.gain.value = 0.05;
      osc.frequency.value = 440;
      const dst = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dst);
      osc.start();
      ac.resume();
      tracks.push(dst.stream.getAudioTracks()[0]);
      window.senderAudio = ac;
    }
    window.senderStream = new MediaStream(tracks);
    window.senderDraws = () => draws;
    return document.visibilityState;
  };
}

/**
 * In the page: defines `window.g2g`:
 * - `hook(video, {record, rect})`: from now on every presented frame of `video` is counted
 *   (`first`: the first one: `performance.now()` when its callback ran, its absolute time and
 *   size) and, while recording, decoded: the blocks are read at `rect` ({x, y, w, h, cw, ch}:
 *   where the sender's picture sits on a cw x ch program canvas; default the whole picture),
 *   scaled to the video's videoWidth x videoHeight, from a drawImage of the video at that size.
 * - `record(on)`, `take()` -> {samples, undecodable, presented, repeats, events}
 *   (events: the video's waiting / stalled / seeking / seeked / ratechange, with times).
 * A sample: {c: counter, at: absolute time of the callback (ms), present / submit / recv:
 * expectedDisplayTime / presentationTime / receiveTime (WebRTC only) minus the send time
 * (ms), mt: mediaTime, w, h}. Only the first presentation of each counter is kept (a picture
 * the mixer composed twice from one sender frame is counted in `repeats`).
 */
function pageDecoder() {
  const SYNC = [1, 0, 1, 0, 0, 1, 1, 0];
  const now = () => performance.timeOrigin + performance.now();
  const cv = document.createElement('canvas');
  const g = cv.getContext('2d', { willReadFrequently: true });
  function decode(v, rect) {
    const vw = v.videoWidth, vh = v.videoHeight;
    if (!vw || !vh) return null;
    if (cv.width !== vw || cv.height !== vh) { cv.width = vw; cv.height = vh; }
    g.drawImage(v, 0, 0, vw, vh);
    const sx = rect ? vw / rect.cw : 1, sy = rect ? vh / rect.ch : 1;
    const rx = rect ? rect.x * sx : 0, ry = rect ? rect.y * sy : 0;
    const rw = rect ? rect.w * sx : vw, rh = rect ? rect.h * sy : vh;
    const bw = rw / 16, bh = rh / 9;
    const bx = Math.floor(rx), by = Math.floor(ry);
    const bandW = Math.min(vw - bx, Math.ceil(rw)), bandH = Math.min(vh - by, Math.ceil(bh * 4));
    const img = g.getImageData(bx, by, bandW, bandH).data;
    const bits = [];
    for (let k = 0; k < 64; k++) {
      const x0 = Math.floor((k % 16) * bw + bw / 4), x1 = Math.floor((k % 16) * bw + bw * 3 / 4);
      const y0 = Math.floor(Math.floor(k / 16) * bh + bh / 4), y1 = Math.floor(Math.floor(k / 16) * bh + bh * 3 / 4);
      const step = Math.max(2, Math.floor(bw / 10));
      let s = 0, n = 0;
      for (let y = y0; y < y1; y += step) {
        for (let x = x0; x < x1; x += step) {
          const i = (y * bandW + x) * 4;
          s += img[i] + img[i + 1] + img[i + 2];
          n += 3;
        }
      }
      bits.push(s / n > 128 ? 1 : 0);
    }
    for (let i = 0; i < 8; i++) if (bits[i] !== SYNC[i]) return null;
    const bytes = [];
    for (let b = 0; b < 7; b++) {
      let x = 0;
      for (let i = 0; i < 8; i++) x = x << 1 | bits[8 + b * 8 + i];
      bytes.push(x);
    }
    let ck = 0xa5;
    for (let i = 0; i < 6; i++) ck = (ck * 31 + bytes[i]) & 255;
    if (ck !== bytes[6]) return null;
    return { counter: bytes[0] << 8 | bytes[1], t10: ((bytes[2] << 24) | (bytes[3] << 16) | (bytes[4] << 8) | bytes[5]) >>> 0 };
  }
  const st = { first: null, samples: [], undecodable: 0, presented: 0, repeats: 0, recording: false, rect: null, events: [] };
  let lastCounter = -1;
  function hook(v, opts) {
    st.recording = !!(opts && opts.record);
    st.rect = (opts && opts.rect) || null;
    const cb = (nowTs, md) => {
      v.requestVideoFrameCallback(cb);
      st.presented++;
      if (!st.first) {
        st.first = { ms: performance.now(), abs: now(), w: md.width, h: md.height, mediaTime: md.mediaTime };
      }
      if (!st.recording) return;
      const d = decode(v, st.rect);
      if (!d) { st.undecodable++; return; }
      if (d.counter === lastCounter) { st.repeats++; return; }
      lastCounter = d.counter;
      const now10 = Math.floor(now() * 10);
      const back = ((now10 - d.t10) % 4294967296 + 4294967296) % 4294967296;
      const send = (now10 - back) / 10;
      const o = performance.timeOrigin;
      st.samples.push({
        c: d.counter,
        at: o + nowTs,
        present: o + md.expectedDisplayTime - send,
        submit: o + md.presentationTime - send,
        recv: md.receiveTime ? o + md.receiveTime - send : null,
        mt: md.mediaTime,
        w: md.width,
        h: md.height,
      });
    };
    v.requestVideoFrameCallback(cb);
    // What the player did meanwhile (stalls, seeks, catch-up rate changes).
    for (const ev of ['waiting', 'stalled', 'seeking', 'seeked', 'ratechange']) {
      v.addEventListener(ev, () => st.events.push({ ev, at: now(), t: v.currentTime, rate: v.playbackRate }));
    }
  }
  window.g2g = {
    hook,
    state: st,
    record(on) { st.recording = on; },
    take() {
      return { samples: st.samples, undecodable: st.undecodable, presented: st.presented, repeats: st.repeats, first: st.first, events: st.events };
    },
    /** This document's idea of the absolute time, to compare clocks between documents. */
    clock: () => now(),
  };
}

/** The sender's source, to run in a page with `cfg` = {W, H, source: 'canvas'|'generator', audio}. */
export const senderScript = (cfg) => `(${pageSender.toString()})(${JSON.stringify(cfg)});`;
/** The decoder's source (defines window.g2g). */
export const decoderScript = () => `(${pageDecoder.toString()})();`;
