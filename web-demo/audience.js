// audience.js — the audience player: plays a room's HLS program and draws what its H.264 SEI
// says (CONTRACT.md, "The program stream"), each at the moment the frame carrying it plays.
//
// - hls.js (served by cohost at /vendor/hls.min.js from web-demo/node_modules, installed by
//   `npm ci --prefix web-demo`) demuxes the MPEG-TS segments and hands us every SEI
//   user_data_unregistered message through `Hls.Events.FRAG_PARSING_USERDATA`: samples
//   `{payloadType: 5, pts /* s, on video.currentTime's timeline */, uuid, userData /* UTF-8 */}`
//   (hls.js src/utils/mp4-tools.ts parseSEIMessageFromNALu, src/remux/mp4-remuxer.ts
//   flushTextTrackUserdataCueSamples).
// - The SEI arrive when a segment is parsed, seconds before its frames play; they wait in a
//   queue ordered by pts, and `requestVideoFrameCallback` (its `mediaTime` is the presentation
//   time of the frame on screen) applies the layout / shows the cue whose pts has been reached.
// - Without hls.js, a browser with native HLS still plays the program (no SEI access there, so
//   no overlays); otherwise the page says to run npm ci.

export const LAYOUT_UUID = 'beb59904-6493-40f3-8a26-140d6aef0e04';
export const CUE_UUID = '9a44be0e-9ad1-4c7b-99e9-b8618dd4c159';

/** How the page labels a cue, by `data.kind` (the host page sends red_packet, coupon, vote). */
const CUE_LABELS = { red_packet: '🧧 red packet!', coupon: '🎟️ coupon!', vote: '🗳️ vote!' };
export function cueLabel(data) {
  const kind = data && typeof data === 'object' ? data.kind : undefined;
  return CUE_LABELS[kind] || `📣 ${kind || 'cue'}`;
}

const CUE_SHOW_MS = 6000; // how long a cue overlay stays up
const CUE_LATE_S = 4; // a cue whose frame played longer ago than this (joined late) is dropped
const EPS_S = 0.002; // timestamps are in 90 kHz ticks, rounded by the remuxer

/**
 * The SEI timeline: messages queued by presentation time, released as playback reaches them.
 * Pure (no DOM), so it can be reasoned about apart from the player.
 */
export class SeiTimeline {
  constructor() {
    this.pending = []; // {pts, kind: 'layout'|'cue', msg}, sorted by pts
    this.layout = null; // the layout on screen: SEI JSON + {pts}
    this.cueIds = new Set(); // cue ids queued or shown (a cue rides on 3 frames: one overlay)
    this.seiCount = 0;
    this.badSei = 0;
  }

  /** Feed the samples of one FRAG_PARSING_USERDATA event. */
  addSamples(samples) {
    for (const s of samples) {
      if (s.payloadType !== 5 || (s.uuid !== LAYOUT_UUID && s.uuid !== CUE_UUID)) continue;
      let msg;
      try {
        msg = JSON.parse(s.userData);
      } catch {
        this.badSei++;
        continue;
      }
      if (!msg || msg.v !== 1) {
        this.badSei++;
        continue;
      }
      this.seiCount++;
      if (s.uuid === CUE_UUID) {
        if (typeof msg.id !== 'string' || this.cueIds.has(msg.id)) continue; // a repeat
        this.cueIds.add(msg.id);
        this.insert({ pts: s.pts, kind: 'cue', msg });
      } else {
        if (!Array.isArray(msg.regions)) {
          this.badSei++;
          continue;
        }
        this.insert({ pts: s.pts, kind: 'layout', msg });
      }
    }
  }

  insert(e) {
    let i = this.pending.length;
    while (i > 0 && this.pending[i - 1].pts > e.pts) i--;
    this.pending.splice(i, 0, e);
  }

  /**
   * Playback is at `t` (s): returns what became due `{layout?, cues: [...]}`. The latest due
   * layout wins; cues more than CUE_LATE_S old are dropped (their moment has passed).
   */
  advance(t) {
    const out = { layout: null, cues: [], late: [] };
    while (this.pending.length && this.pending[0].pts <= t + EPS_S) {
      const e = this.pending.shift();
      if (e.kind === 'layout') out.layout = { ...e.msg, pts: e.pts };
      else if (t - e.pts > CUE_LATE_S) out.late.push({ ...e.msg, pts: e.pts });
      else out.cues.push({ ...e.msg, pts: e.pts });
    }
    if (out.layout) this.layout = out.layout;
    return out;
  }

  /** After a seek backwards or a restart of the stream: drop what no longer applies. */
  reset() {
    this.pending = [];
    this.layout = null;
  }
}

/** The rectangle (element pixels) where `video` shows its picture (object-fit: contain). */
export function contentRect(video) {
  const cw = video.clientWidth, ch = video.clientHeight;
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!cw || !ch || !vw || !vh) return null;
  const scale = Math.min(cw / vw, ch / vh);
  const w = vw * scale, h = vh * scale;
  return { x: (cw - w) / 2, y: (ch - h) / 2, w, h };
}

function loadScript(src) {
  return new Promise((resolve) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = () => resolve(true);
    s.onerror = () => resolve(false);
    document.head.append(s);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Catch-up starts when this far (s) behind the target latency... */
const CATCH_UP_ABOVE_S = 0.3;
/** ...and stops once within this of it. */
const CATCH_UP_DONE_S = 0.05;
/** ...and never plays faster with less than this (s) buffered: it would only stall sooner. */
const CATCH_UP_MIN_BUFFER_S = 0.5;
/** HTTP-FLV: buffered media mpegts.js aims at, and beyond which it plays 1.2× (s). */
const FLV_TARGET_LATENCY_S = 0.5;
const FLV_MAX_LATENCY_S = 1.0;
/** Further behind than this (s), the player jumps to the live edge instead. */
const MAX_LATENCY_S = 6;

/**
 * Runs the player in `els` = {video, regions, cues, status, unmute}. Exposes its state as
 * `window.audienceState` (for tests and curious people).
 */
export async function startAudience({ room, els, player = 'hls' }) {
  const { video, regions: regionBox, cues: cueBox, status } = els;
  const src = `/live/${encodeURIComponent(room)}/index.m3u8`;
  const timeline = new SeiTimeline();
  const state = {
    room,
    src,
    mode: 'loading', // 'hls.js' | 'native' | 'unsupported'
    status: 'loading',
    playing: false,
    currentTime: 0,
    frames: 0,
    layout: null, // {pts_ms, w, h, regions: [...]} of the layout on screen
    layoutsApplied: 0,
    cuesShown: [], // {id, data, pts_ms, pts, shownAtMediaTime, at}
    cuesLate: [],
    seiCount: 0,
    errors: [],
    firstFrameMs: null, // ms from page open to the first picture on screen
    latency: null, // s: now − EXT-X-PROGRAM-DATE-TIME of the picture on screen (composition → glass)
    edgeLatency: null, // s behind the playlist's live edge (what catch-up steers)
    targetLatency: null, // s: the playlist's PART-HOLD-BACK (low-latency) or HOLD-BACK
    playbackRate: 1,
  };
  window.audienceState = state;
  const setStatus = (s) => {
    state.status = s;
    status.textContent = s;
  };

  // Pick the player: HTTP-FLV with mpegts.js when asked for (`?player=flv`) and possible,
  // else hls.js (with SEI), else native HLS (without), else explain.
  const wantFlv = player === 'flv' && (await loadScript('/vendor/mpegts.js'))
    && window.mpegts && window.mpegts.getFeatureList().mseLivePlayback;
  const haveHlsJs = !wantFlv && await loadScript('/vendor/hls.min.js');
  const Hls = window.Hls;
  if (wantFlv) state.mode = 'flv';
  else if (haveHlsJs && Hls && Hls.isSupported()) state.mode = 'hls.js';
  else if (video.canPlayType('application/vnd.apple.mpegurl')) state.mode = 'native';
  else {
    state.mode = 'unsupported';
    setStatus('hls.js is not installed on the server: run `npm ci --prefix web-demo` (or `npm ci` in web-demo) and reload');
    return state;
  }
  if (state.mode === 'native') {
    els.note.hidden = false;
    els.note.textContent = 'Native HLS playback: layout and cue overlays need hls.js (run `npm ci --prefix web-demo` on the server).';
  }

  // --- drawing -----------------------------------------------------------------------------
  const drawLayout = () => {
    const l = timeline.layout;
    const r = contentRect(video);
    regionBox.replaceChildren();
    if (!l || !r || !l.w || !l.h) return;
    regionBox.style.left = `${r.x}px`;
    regionBox.style.top = `${r.y}px`;
    regionBox.style.width = `${r.w}px`;
    regionBox.style.height = `${r.h}px`;
    const sx = r.w / l.w, sy = r.h / l.h;
    for (const g of [...l.regions].sort((a, b) => (a.z || 0) - (b.z || 0))) {
      const box = document.createElement('div');
      box.className = 'region';
      box.dataset.identity = g.identity;
      box.title = g.identity;
      box.style.left = `${g.x * sx}px`;
      box.style.top = `${g.y * sy}px`;
      box.style.width = `${g.w * sx}px`;
      box.style.height = `${g.h * sy}px`;
      box.style.zIndex = String(1 + (g.z || 0));
      const level = Math.max(0, Math.min(1, Number(g.audio) || 0));
      box.style.setProperty('--audio', String(level));
      if (level > 0.05) box.classList.add('speaking');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = g.identity;
      box.append(name);
      regionBox.append(box);
    }
  };
  new ResizeObserver(drawLayout).observe(video);
  video.addEventListener('loadedmetadata', drawLayout);
  video.addEventListener('resize', drawLayout);

  const showCue = (cue, mediaTime) => {
    const item = document.createElement('div');
    item.className = 'cue';
    item.dataset.cueId = cue.id;
    const title = document.createElement('strong');
    title.textContent = cueLabel(cue.data);
    const data = document.createElement('code');
    data.textContent = JSON.stringify(cue.data);
    item.append(title, ' ', data);
    cueBox.prepend(item);
    setTimeout(() => item.remove(), CUE_SHOW_MS);
    state.cuesShown.push({
      id: cue.id,
      data: cue.data,
      pts_ms: cue.pts_ms,
      pts: cue.pts,
      shownAtMediaTime: mediaTime,
      at: Date.now(),
    });
  };

  // --- the frame clock: apply due SEI as their frames are presented --------------------------
  let lastTime = -1;
  const onTime = (mediaTime) => {
    if (mediaTime + 0.5 < lastTime) timeline.reset(); // went backwards: a new timeline
    lastTime = mediaTime;
    const due = timeline.advance(mediaTime);
    if (due.layout) {
      state.layout = { pts_ms: due.layout.pts_ms, w: due.layout.w, h: due.layout.h, regions: due.layout.regions };
      state.layoutsApplied++;
      drawLayout();
    }
    for (const c of due.cues) showCue(c, mediaTime);
    for (const c of due.late) state.cuesLate.push({ id: c.id, data: c.data, pts_ms: c.pts_ms });
    state.currentTime = video.currentTime;
    if (state.frames === 0) state.firstFrameMs = Math.round(performance.now());
    state.frames++;
    state.seiCount = timeline.seiCount;
  };
  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    const tick = (_now, meta) => {
      onTime(meta.mediaTime);
      video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  } else {
    const tick = () => {
      if (!video.paused) onTime(video.currentTime);
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  const updatePlaying = () => {
    state.playing = !video.paused && !video.ended && video.readyState >= 3;
    state.currentTime = video.currentTime;
    if (state.playing) setStatus(`live · ${state.mode}`);
  };
  for (const ev of ['playing', 'pause', 'waiting', 'timeupdate', 'ended']) video.addEventListener(ev, updatePlaying);

  els.unmute.addEventListener('click', () => {
    video.muted = !video.muted;
    els.unmute.textContent = video.muted ? '🔇 unmute' : '🔊 mute';
    if (video.paused) video.play().catch(() => {});
  });

  // --- loading: wait for the program, play it, start over when it ends ------------------------
  const waitForProgram = async (url = src) => {
    setStatus('waiting for the program (a co-host must be publishing)…');
    for (;;) {
      const r = await fetch(url, { cache: 'no-store' }).catch(() => null);
      if (r && r.ok) {
        r.body?.cancel().catch(() => {}); // the FLV stream: only its answer was wanted
        return;
      }
      await sleep(1000);
    }
  };
  const play = () => video.play().catch((e) => {
    // Autoplay refused (sound or policy): the muted video may still be started by a click.
    state.errors.push(`play: ${e.message}`);
    setStatus('click ▶ to play');
    els.play.hidden = false;
  });
  els.play.addEventListener('click', () => {
    els.play.hidden = true;
    video.play().catch(() => {});
  });

  // --- catch-up: play a little faster while behind the target latency, as the seeds'
  // players drain accumulated delay; show how late the picture is ---------------------------
  const steer = (hls) => {
    const date = hls.playingDate; // from EXT-X-PROGRAM-DATE-TIME
    state.latency = date ? Math.max(0, (Date.now() - date.getTime()) / 1000) : null;
    state.edgeLatency = Number.isFinite(hls.latency) ? hls.latency : null;
    state.targetLatency = Number.isFinite(hls.targetLatency) ? hls.targetLatency : null;
    if (!video.paused && state.edgeLatency !== null && state.targetLatency !== null) {
      const behind = state.edgeLatency - state.targetLatency;
      if (state.edgeLatency > MAX_LATENCY_S && Number.isFinite(hls.liveSyncPosition)) {
        video.currentTime = hls.liveSyncPosition; // far behind (a long stall): jump
        return;
      }
      // What is buffered ahead: when hls.js's timeline and the media's part ways (seen after
      // a stall), its latency says "behind" while the buffer is nearly empty.
      let ahead = 0;
      for (let i = 0; i < video.buffered.length; i++) {
        if (video.buffered.start(i) <= video.currentTime + 0.1 && video.buffered.end(i) > video.currentTime) {
          ahead = video.buffered.end(i) - video.currentTime;
        }
      }
      let rate = video.playbackRate;
      if (ahead < CATCH_UP_MIN_BUFFER_S) rate = 1;
      else if (behind > CATCH_UP_ABOVE_S) rate = Math.min(1.5, Math.max(1.1, 1 + behind * 0.25));
      else if (behind <= CATCH_UP_DONE_S) rate = 1;
      if (rate !== video.playbackRate) video.playbackRate = rate;
    }
    state.playbackRate = video.playbackRate;
    if (els.latency) {
      els.latency.textContent = state.latency === null
        ? ''
        : `latency ${state.latency.toFixed(1)} s${state.playbackRate > 1 ? ` · ${state.playbackRate.toFixed(2)}×` : ''}`;
    }
  };

  if (state.mode === 'native') {
    await waitForProgram();
    video.src = src;
    play();
    return state;
  }

  if (state.mode === 'flv') {
    // HTTP-FLV: the server sends the latest GOP at once (first picture without waiting for a
    // keyframe), then live; mpegts.js plays faster while more than FLV_MAX_LATENCY_S is
    // buffered (its liveSync) and jumps when far behind. mpegts.js hands SEI
    // over with their picture's time on its media timeline (ms).
    const flvSrc = `/live/${encodeURIComponent(room)}.flv`;
    state.src = flvSrc;
    const mpegts = window.mpegts;
    const decoder = new TextDecoder();
    const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    const uuidText = (u) => { const h = hex(u); return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`; };
    for (;;) {
      await waitForProgram(flvSrc);
      setStatus('loading the program…');
      timeline.reset();
      lastTime = -1;
      const p = mpegts.createPlayer({ type: 'flv', isLive: true, url: flvSrc }, {
        enableWorker: false,
        enableStashBuffer: false,
        liveSync: true,
        liveSyncTargetLatency: FLV_TARGET_LATENCY_S,
        liveSyncMaxLatency: FLV_MAX_LATENCY_S,
        liveSyncPlaybackRate: 1.2,
        liveBufferLatencyChasing: true,
        liveBufferLatencyMaxLatency: MAX_LATENCY_S,
        liveBufferLatencyMinRemain: FLV_TARGET_LATENCY_S,
      });
      const ended = new Promise((resolve) => {
        p.on(mpegts.Events.SEI_ARRIVED, (sei) => {
          if (!sei || !sei.uuid || !sei.user_data || typeof sei.pts !== 'number') return;
          timeline.addSamples([{
            payloadType: sei.type,
            uuid: uuidText(sei.uuid),
            userData: decoder.decode(sei.user_data),
            pts: sei.pts / 1000,
          }]);
        });
        p.on(mpegts.Events.ERROR, (type, detail) => {
          state.errors.push(`mpegts.js: ${type} ${detail}`);
          resolve();
        });
        p.on(mpegts.Events.LOADING_COMPLETE, resolve); // the program ended
      });
      p.attachMediaElement(video);
      p.load();
      play();
      const meter = setInterval(() => {
        const b = video.buffered;
        state.edgeLatency = b.length ? Math.max(0, b.end(b.length - 1) - video.currentTime) : null;
        state.targetLatency = FLV_TARGET_LATENCY_S;
        state.playbackRate = video.playbackRate;
        if (els.latency && state.edgeLatency !== null) {
          els.latency.textContent = `buffer ${state.edgeLatency.toFixed(1)} s${video.playbackRate > 1 ? ` · ${video.playbackRate.toFixed(2)}×` : ''}`;
        }
      }, 250);
      await ended;
      clearInterval(meter);
      p.destroy();
      state.playing = false;
      regionBox.replaceChildren();
      await sleep(1000);
    }
  }

  for (;;) {
    await waitForProgram();
    setStatus('loading the program…');
    timeline.reset();
    lastTime = -1;
    // Low-Latency HLS: parts and blocking playlist reload; the target latency is the
    // playlist's PART-HOLD-BACK. Catch-up is ours (below), so hls.js's own is off.
    // hls.js would add 1 s to its target latency after every stall (up to a target
    // duration): one network hiccup then kept the page 2 s behind the edge for the rest of
    // the show (benches/RESULTS-audiences.md). The catch-up drains a stall's delay instead.
    // No `backBufferLength`: hls.js (1.7.4) trims the back buffer when playback enters each
    // segment, and a trim that completes while a part of that segment is loaded but not yet
    // appended drops the segment from hls.js's fragment tracker (its earlier parts then count
    // as not loaded). At the segment's end hls.js's buffer stops 1 ms short of the next
    // segment's start, so it keeps picking that segment, finds it buffered, and loads nothing
    // until the segment's parts leave the playlist two segments later: the 4 s stalls under
    // load (benches/RESULTS-audiences.md, 4 Dec 2026). hls.js's default keeps the whole back
    // buffer; the browser's own eviction bounds it (Chromium: ~150 MB of video).
    const hls = new Hls({
      lowLatencyMode: true,
      enableWorker: true,
      maxLiveSyncPlaybackRate: 1,
      liveSyncOnStallIncrease: 0,
    });
    const catchUp = setInterval(() => steer(hls), 250);
    const ended = new Promise((resolve) => {
      hls.on(Hls.Events.FRAG_PARSING_USERDATA, (_ev, data) => timeline.addSamples(data.samples));
      hls.on(Hls.Events.MANIFEST_PARSED, play);
      hls.on(Hls.Events.ERROR, (_ev, data) => {
        if (!data.fatal) return;
        state.errors.push(`hls.js: ${data.type} ${data.details}`);
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
        else resolve(); // the playlist went away (program stopped) or the network failed
      });
    });
    hls.loadSource(src);
    hls.attachMedia(video);
    await ended;
    clearInterval(catchUp);
    video.playbackRate = 1;
    hls.destroy();
    state.playing = false;
    regionBox.replaceChildren();
    await sleep(1000);
  }
}
