// cohost.js — a small client for the cohost signaling protocol (docs/protocol.md).
// Plain ES module, no dependencies. One sendonly peer connection to publish, one recvonly
// peer connection per co-host to receive.
//
// DEVELOPMENT ONLY: `mintToken` calls `POST /api/tokens` with the API key from the page URL.
// A production app never ships its API key to browsers: its backend mints the tokens.

/** Ask the server for a participant token (development only: needs the API key). */
export async function mintToken({ key, room, identity, role, name }) {
  const res = await fetch('/api/tokens', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
    body: JSON.stringify(name ? { room, identity, role, name } : { room, identity, role }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = body.error || {};
    throw new Error(`token: ${res.status} ${e.code || ''} ${e.message || ''}`.trim());
  }
  return body.token;
}

// Error codes that answer a `publish` or `subscribe` offer instead of an `answer`.
const MEDIA_ERRORS = new Set([
  'bad_sdp', 'bad_request', 'not_found', 'too_large', 'rate_limited', 'unavailable', 'internal',
  'not_publishing', 'not_on_air', 'viewer_cannot_publish', 'self_subscribe',
]);

/** Wait until ICE gathering is complete (candidates then sit in the local description). */
function gathered(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') {
        pc.removeEventListener('icegatheringstatechange', done);
        clearTimeout(t);
        resolve();
      }
    };
    const t = setTimeout(() => {
      pc.removeEventListener('icegatheringstatechange', done);
      resolve();
    }, timeoutMs);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

/**
 * One participant's session. Events (via `on(type, fn)`): every server message type
 * (`joined`, `participant_joined`, ...), plus `state` (after any change), `remote_track`
 * ({identity, stream}), `remote_gone` ({identity}), `local_stream`, `close`.
 */
export class CohostClient {
  constructor({ token, mediaConstraints } = {}) {
    this.token = token;
    this.mediaConstraints = mediaConstraints || { audio: true, video: { width: 640, height: 360 } };
    this.ws = null;
    this.connected = false;
    this.joined = false;
    this.me = null; // ParticipantInfo
    this.room = null;
    this.participants = new Map(); // identity -> ParticipantInfo (others)
    this.requests = new Map(); // identity -> name (host only)
    this.invitedBy = null;
    this.publishPc = null;
    this.localStream = null;
    this.subs = new Map(); // identity -> {pc, stream}
    this.errors = [];
    this.log = [];
    this.handlers = new Map();
    this.pingTimer = null;
    this.pending = new Map(); // pc name -> resolve(answer sdp)
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
    return this;
  }

  emit(type, data) {
    for (const fn of this.handlers.get(type) || []) {
      try {
        fn(data);
      } catch (e) {
        console.error('handler', type, e);
      }
    }
  }

  get onAir() {
    return !!(this.me && this.me.on_air);
  }

  /** Reconnects after `room_moved`, a few times (the room may take seconds to be placed). */
  rejoin(tries) {
    this.rejoining = true;
    this.emit('moved');
    setTimeout(() => {
      this.connect(this.name).then(() => {
        this.rejoining = false;
      }).catch((e) => {
        if (tries > 1) {
          this.rejoin(tries - 1);
        } else {
          this.rejoining = false;
          this.emit('close', e);
        }
      });
    }, 1000 + Math.random() * 1000);
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Open the WebSocket and send `join`; resolves with the `joined` message. */
  connect(name) {
    this.name = name;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/ws?token=${encodeURIComponent(this.token)}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.ws = ws;
      let settled = false;
      ws.onopen = () => {
        this.connected = true;
        this.send(name ? { type: 'join', name } : { type: 'join' });
        this.pingTimer = setInterval(() => this.send({ type: 'ping', ts: Date.now() }), 10000);
        this.emit('state');
      };
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (msg.type === 'joined' && !settled) {
          settled = true;
          resolve(msg);
        }
        if (msg.type === 'error' && !this.joined && !settled) {
          settled = true;
          reject(new Error(`${msg.code}: ${msg.message}`));
        }
        this.handle(msg);
      };
      ws.onerror = () => {
        if (!settled) {
          settled = true;
          reject(new Error('WebSocket error (bad or expired token?)'));
        }
      };
      ws.onclose = () => {
        if (this.ws !== ws) {
          // A socket already replaced by a newer one (a rejoin attempt): nothing of ours.
          if (!settled) {
            settled = true;
            reject(new Error('WebSocket closed'));
          }
          return;
        }
        this.connected = false;
        this.joined = false;
        clearInterval(this.pingTimer);
        this.teardownMedia();
        this.emit('state');
        if (this.moved) {
          // The room moved to another node (cluster mode): join it again there — one chain of
          // attempts at a time (an attempt told `room_moved` again is retried by its chain).
          this.moved = false;
          if (!this.rejoining) this.rejoin(10);
        } else if (!this.rejoining) {
          this.emit('close');
        }
        if (!settled) {
          settled = true;
          reject(new Error('WebSocket closed'));
        }
      };
    });
  }

  handle(msg) {
    if (msg.type !== 'pong') this.log.push(msg.type);
    switch (msg.type) {
      case 'joined':
        this.joined = true;
        this.room = msg.room;
        this.me = msg.you;
        // STUN/TURN servers the server announces (TURN credentials minted for us).
        this.iceServers = msg.ice_servers || [];
        for (const p of msg.participants) this.participants.set(p.identity, p);
        for (const p of msg.participants) this.syncSubscription(p);
        if (this.me.on_air) this.startPublishing();
        break;
      case 'participant_joined':
        this.participants.set(msg.participant.identity, msg.participant);
        this.syncSubscription(msg.participant);
        break;
      case 'participant_updated': {
        const p = msg.participant;
        if (this.me && p.identity === this.me.identity) {
          this.me = p;
        } else {
          this.participants.set(p.identity, p);
          this.syncSubscription(p);
        }
        break;
      }
      case 'participant_left':
        this.participants.delete(msg.identity);
        this.requests.delete(msg.identity);
        this.dropSubscription(msg.identity);
        break;
      case 'answer': {
        const r = this.pending.get(msg.pc);
        if (r) {
          this.pending.delete(msg.pc);
          r.resolve(msg.sdp);
        }
        break;
      }
      case 'cohost_request':
        this.requests.set(msg.identity, msg.name);
        break;
      case 'cohost_request_cancelled':
        this.requests.delete(msg.identity);
        break;
      case 'invited':
        this.invitedBy = msg.by;
        break;
      case 'on_air':
        this.invitedBy = null;
        if (this.me) this.me = { ...this.me, on_air: true };
        this.startPublishing();
        break;
      case 'removed':
        if (this.me) this.me = { ...this.me, on_air: false, publishing: false };
        this.stopPublishing(false);
        break;
      case 'error':
        this.errors.push(msg);
        if (msg.code === 'room_moved') this.moved = true;
        // A refused offer must not leave a pending negotiation hanging until its timeout.
        if (MEDIA_ERRORS.has(msg.code)) {
          for (const [, r] of this.pending) r.reject(new Error(`${msg.code}: ${msg.message}`));
          this.pending.clear();
        }
        break;
      default:
        break;
    }
    this.emit(msg.type, msg);
    this.emit('state');
  }

  /** Send an offer for peer connection `pcName` and wait for the server's `answer`. */
  async negotiate(pc, pcName, buildMsg) {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await gathered(pc);
    const answer = new Promise((resolve, reject) => {
      this.pending.set(pcName, { resolve, reject });
      setTimeout(() => reject(new Error(`no answer for ${pcName}`)), 15000);
    });
    this.send(buildMsg(pc.localDescription.sdp));
    const sdp = await answer;
    await pc.setRemoteDescription({ type: 'answer', sdp });
  }

  newPc() {
    return new RTCPeerConnection({ iceServers: this.iceServers || [], bundlePolicy: 'max-bundle' });
  }

  /** Restrict a transceiver to H.264 packetization-mode=1 (what the server negotiates). */
  static preferH264(transceiver) {
    if (!RTCRtpSender.getCapabilities || !transceiver.setCodecPreferences) return;
    const caps = RTCRtpSender.getCapabilities('video');
    if (!caps) return;
    const h264 = caps.codecs.filter(
      (c) => c.mimeType.toLowerCase() === 'video/h264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''),
    );
    if (h264.length) {
      try {
        transceiver.setCodecPreferences(h264);
      } catch (e) {
        console.warn('setCodecPreferences', e);
      }
    }
  }

  async getLocalStream() {
    if (!this.localStream) {
      this.localStream = await navigator.mediaDevices.getUserMedia(this.mediaConstraints);
      this.emit('local_stream', this.localStream);
    }
    return this.localStream;
  }

  /** Publish camera + microphone (called automatically when on air). */
  async startPublishing() {
    if (this.publishPc) return;
    const pc = this.newPc();
    this.publishPc = pc;
    try {
      const stream = await this.getLocalStream();
      for (const track of stream.getTracks()) {
        const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
        if (track.kind === 'video') CohostClient.preferH264(t);
      }
      await this.negotiate(pc, 'publish', (sdp) => ({ type: 'publish', sdp }));
    } catch (e) {
      console.error('publish failed', e);
      this.errors.push({ code: 'client', message: `publish failed: ${e.message}` });
      if (this.publishPc === pc) this.publishPc = null;
      pc.close();
    }
    this.emit('state');
  }

  /** Stop publishing; `tell` sends `unpublish` (not needed after `removed`). */
  stopPublishing(tell = true) {
    if (tell) this.send({ type: 'unpublish' });
    if (this.publishPc) this.publishPc.close();
    this.publishPc = null;
    this.pending.delete('publish');
    if (this.localStream) {
      for (const t of this.localStream.getTracks()) t.stop();
      this.localStream = null;
      this.emit('local_stream', null);
    }
    this.emit('state');
  }

  /** Subscribe to or drop `p` according to its `publishing` flag. */
  syncSubscription(p) {
    if (this.me && p.identity === this.me.identity) return;
    if (p.publishing && !this.subs.has(p.identity)) this.subscribe(p.identity);
    else if (!p.publishing && this.subs.has(p.identity)) this.dropSubscription(p.identity, true);
  }

  async subscribe(identity) {
    const pc = this.newPc();
    const stream = new MediaStream();
    const sub = { pc, stream };
    this.subs.set(identity, sub);
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const vt = pc.addTransceiver('video', { direction: 'recvonly' });
    CohostClient.preferH264(vt);
    pc.ontrack = (ev) => {
      stream.addTrack(ev.track);
      this.emit('remote_track', { identity, stream });
      this.emit('state');
    };
    try {
      await this.negotiate(pc, `subscribe:${identity}`, (sdp) => ({ type: 'subscribe', identity, sdp }));
    } catch (e) {
      console.error('subscribe failed', identity, e);
      if (this.subs.get(identity) === sub) this.dropSubscription(identity);
    }
  }

  dropSubscription(identity, tell = false) {
    const sub = this.subs.get(identity);
    if (!sub) return;
    if (tell) this.send({ type: 'unsubscribe', identity });
    this.subs.delete(identity);
    this.pending.delete(`subscribe:${identity}`);
    sub.pc.close();
    this.emit('remote_gone', { identity });
    this.emit('state');
  }

  teardownMedia() {
    for (const id of [...this.subs.keys()]) this.dropSubscription(id);
    if (this.publishPc || this.localStream) this.stopPublishing(false);
  }

  leave() {
    this.send({ type: 'leave' });
    this.teardownMedia();
    if (this.ws) this.ws.close();
  }

  // Co-host flow.
  requestCohost() { this.send({ type: 'request_cohost' }); }
  cancelRequest() { this.send({ type: 'cancel_request' }); }
  acceptRequest(identity) { this.requests.delete(identity); this.send({ type: 'accept_request', identity }); this.emit('state'); }
  refuseRequest(identity, reason) {
    this.requests.delete(identity);
    this.send(reason ? { type: 'refuse_request', identity, reason } : { type: 'refuse_request', identity });
    this.emit('state');
  }
  invite(identity) { this.send({ type: 'invite', identity }); }
  acceptInvite() { this.invitedBy = null; this.send({ type: 'accept_invite' }); this.emit('state'); }
  declineInvite() { this.invitedBy = null; this.send({ type: 'decline_invite' }); this.emit('state'); }
  remove(identity) { this.send({ type: 'remove', identity }); }
  mute(identity, kind, muted) { this.send({ type: 'mute', identity, kind, muted }); }
  setLayout(template) { this.send({ type: 'set_layout', layout: { template } }); }
  /** The studio decor of the program (`{labels}`, `{overlays}`, `{background_image}`), live. */
  setDecor(decor) { this.send({ type: 'set_layout', layout: decor }); }
  cue(data) {
    const id = (crypto.randomUUID && crypto.randomUUID()) || `cue-${Date.now()}-${Math.random().toString(16).slice(2)}`;
    this.send({ type: 'cue', id, data, at_capture_ms: performance.timeOrigin + performance.now() });
    return id;
  }

  /** A plain snapshot for tests and debugging (`window.cohostState`). */
  snapshot() {
    return {
      connected: this.connected,
      joined: this.joined,
      me: this.me,
      onAir: this.onAir,
      publishing: !!this.publishPc,
      participants: [...this.participants.values()],
      requests: [...this.requests.keys()],
      invitedBy: this.invitedBy,
      remoteTiles: [...document.querySelectorAll('[data-remote-tile]')].map((e) => e.dataset.remoteTile),
      subscriptions: [...this.subs.keys()],
      errors: this.errors.slice(),
    };
  }
}

// ---- Shared page helpers (host.html and guest.html) ----

export function $(sel) {
  return document.querySelector(sel);
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'onclick') e.addEventListener('click', v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

/** Show a message in the page's #errors box (server `error` messages and client failures). */
export function showError(text, cls = 'error') {
  const box = $('#errors');
  if (!box) return;
  box.hidden = false;
  box.append(el('div', { class: cls }, `${new Date().toLocaleTimeString()} ${text}`));
  while (box.childElementCount > 8) box.firstElementChild.remove();
}

/** An informational line in the same box (not an error). */
export function showNotice(text) {
  showError(text, 'notice');
}

/** Wire the client's media events to a #tiles grid and a #self video. */
export function bindVideo(client) {
  const tiles = $('#tiles');
  const tileFor = (identity) => {
    let t = tiles.querySelector(`[data-remote-tile="${CSS.escape(identity)}"]`);
    if (!t) {
      const video = el('video', { autoplay: '', playsinline: '' });
      const p = client.participants.get(identity);
      t = el('figure', { class: 'tile', dataset: { remoteTile: identity } }, video,
        el('figcaption', {}, p ? p.name : identity));
      tiles.append(t);
    }
    return t;
  };
  client.on('remote_track', ({ identity, stream }) => {
    const v = tileFor(identity).querySelector('video');
    if (v.srcObject !== stream) v.srcObject = stream;
    v.play().catch(() => {});
  });
  client.on('remote_gone', ({ identity }) => {
    const t = tiles.querySelector(`[data-remote-tile="${CSS.escape(identity)}"]`);
    if (t) t.remove();
  });
  client.on('local_stream', (stream) => {
    const v = $('#self');
    if (!v) return;
    v.srcObject = stream;
    if (stream) v.play().catch(() => {});
  });
  client.on('error', (m) => showError(`${m.code}: ${m.message}`));
}

/** Query parameters with defaults. */
export function params() {
  const q = new URLSearchParams(location.search);
  return {
    room: q.get('room') || 'demo',
    key: q.get('key') || '',
    name: q.get('name') || '',
    identity: q.get('identity') || '',
    role: q.get('role') || '',
    token: q.get('token') || '',
    autojoin: q.get('autojoin') === '1',
  };
}

export function randomId(prefix) {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}
