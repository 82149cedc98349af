//! The signaling hub: rooms and their pure state machines ([`crate::room`]), the live
//! connections, the effect interpreter and the per-participant media queues, rate limits and
//! counters — everything a transport (WebSocket, WHIP, WHEP, REST in [`crate::http`]) calls,
//! and what a second node will talk to. No HTTP here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::warn;

use crate::auth::{Auth, Role};
use crate::backend::{MediaBackend, MediaError, MediaEvent, PublishOptions};
use crate::protocol::{MediaKind, ServerMessage};
use crate::room::{Effect, MediaCommand, Room, Via};
// Session access checks answer with the HTTP edge's error (they are called only from there).

/// Signaling's own settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interval of server WebSocket pings.
    pub ping_interval: Duration,
    /// A socket silent for this long is closed.
    pub idle_timeout: Duration,
    /// A socket that does not take a message within this long (a client that stopped
    /// reading) is dropped.
    pub send_timeout: Duration,
    /// Default lifetime of minted tokens.
    pub default_token_ttl: Duration,
    /// Messages a WebSocket client may send per second, sustained ...
    pub message_rate: f64,
    /// ... and in a burst (a browser trickling its ICE candidates sends a dozen at once).
    pub message_burst: f64,
    /// Seats per room and role (`--max-room-viewers` sets the viewers').
    pub room_limits: crate::room::RoomLimits,
    /// Co-hosts' own tracks (WHEP sessions and WebSocket subscriptions) one identity may
    /// receive at once in a room.
    pub max_subscriptions_per_identity: usize,
    /// ... and all identities of a room together.
    pub max_subscriptions_per_room: usize,
    /// STUN/TURN servers announced to clients (`--ice-servers`, `--turn-secret`).
    pub ice: crate::ice::IceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            send_timeout: Duration::from_secs(10),
            default_token_ttl: Duration::from_secs(6 * 3600),
            message_rate: 50.0,
            message_burst: 100.0,
            room_limits: crate::room::RoomLimits::default(),
            max_subscriptions_per_identity: 16,
            max_subscriptions_per_room: 256,
            ice: crate::ice::IceConfig::default(),
        }
    }
}

/// A token bucket: `rate` tokens a second up to `burst`; one per message. Clock-driven (the
/// caller passes `now`), so it is tested without sleeping.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub(crate) rate: f64,
    pub(crate) burst: f64,
    pub(crate) tokens: f64,
    pub(crate) last: tokio::time::Instant,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: tokio::time::Instant) -> Self {
        RateLimit {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: tokio::time::Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counters exported by `/metrics`.
#[derive(Debug, Default)]
pub struct SignalingMetrics {
    /// Signaling errors sent to clients (bad messages, refused actions, auth failures).
    pub errors: AtomicU64,
    /// WebSocket connections accepted.
    pub connections: AtomicU64,
    /// Messages received.
    pub messages: AtomicU64,
    /// Sockets dropped because they did not read (queue full or send timeout).
    pub slow_dropped: AtomicU64,
}

pub(crate) enum Outbound {
    Msg(ServerMessage),
    Close,
}

/// Messages waiting for one socket, at most.
pub(crate) const OUTBOUND_QUEUE: usize = 256;

/// The sending side of one socket: a bounded queue, and a kill switch for when the queue is
/// full (a client that does not read is dropped, never waited for).
#[derive(Clone)]
pub(crate) struct ConnTx {
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) kill: Arc<tokio::sync::Notify>,
}

impl ConnTx {
    /// Queues `msg`; false (and the socket is dropped) when its queue is full.
    pub(crate) fn send(&self, msg: ServerMessage) -> bool {
        if self.tx.try_send(Outbound::Msg(msg)).is_ok() {
            return true;
        }
        self.kill.notify_one();
        false
    }

    /// Closes the socket after what is queued (at once when the queue is full).
    pub(crate) fn close(&self) {
        if self.tx.try_send(Outbound::Close).is_err() {
            self.kill.notify_one();
        }
    }
}

pub(crate) struct RoomEntry {
    pub(crate) room: Room,
    /// Created by the API: kept when empty.
    pub(crate) persistent: bool,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) rooms: HashMap<String, RoomEntry>,
    pub(crate) conns: HashMap<u64, ConnTx>,
    /// One queue of media work per participant (room, identity), see [`Signaling::enqueue`].
    pub(crate) queues: HashMap<(String, String), mpsc::UnboundedSender<MediaJob>>,
}

/// A piece of media work run in its participant's queue.
pub(crate) type MediaJob = Box<
    dyn FnOnce(Arc<Signaling>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// A participant's media queue ends after this long without work.
pub(crate) const QUEUE_IDLE: Duration = Duration::from_secs(30);

/// Shared signaling state: rooms, live connections, auth and the media backend.
pub struct Signaling {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) auth: Auth,
    pub(crate) backend: Arc<dyn MediaBackend>,
    pub(crate) config: Config,
    pub(crate) next_conn: AtomicU64,
    /// Counters.
    pub metrics: SignalingMetrics,
}

/// Creates the channel on which the media backend reports [`MediaEvent`]s.
pub fn media_events() -> (
    mpsc::UnboundedSender<MediaEvent>,
    mpsc::UnboundedReceiver<MediaEvent>,
) {
    mpsc::unbounded_channel()
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signaling {
    /// Builds the state and spawns the task that applies media events.
    pub fn new(
        auth: Auth,
        backend: Arc<dyn MediaBackend>,
        config: Config,
        mut events: mpsc::UnboundedReceiver<MediaEvent>,
    ) -> Arc<Self> {
        let s = Arc::new(Signaling {
            inner: Mutex::new(Inner::default()),
            auth,
            backend,
            config,
            next_conn: AtomicU64::new(1),
            metrics: SignalingMetrics::default(),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(s) = weak.upgrade() else { break };
                s.on_media_event(ev);
            }
        });
        s
    }

    /// The auth helper.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere; the state is still the last consistent one.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of rooms and participants, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        let p = g.rooms.values().map(|r| r.room.participants().len()).sum();
        (g.rooms.len(), p)
    }

    pub(crate) fn on_media_event(self: &Arc<Self>, ev: MediaEvent) {
        match ev {
            MediaEvent::Publishing {
                room,
                identity,
                publishing,
                tracks,
            } => {
                let fx = {
                    let mut g = self.lock();
                    match g.rooms.get_mut(&room) {
                        Some(r) => r.room.set_publishing(&identity, publishing, tracks),
                        None => Vec::new(),
                    }
                };
                self.apply(&room, fx);
            }
            MediaEvent::WhipEnded { room, identity } => {
                self.leave(&room, &identity, Via::Whip);
            }
        }
    }

    pub(crate) fn leave(self: &Arc<Self>, room: &str, identity: &str, via: Via) {
        let fx = {
            let mut g = self.lock();
            let Some(r) = g.rooms.get_mut(room) else {
                return;
            };
            let fx = r.room.leave(identity, via);
            let emptied = r.room.is_empty() && !r.persistent;
            if emptied {
                g.rooms.remove(room);
            }
            (fx, emptied)
        };
        let (fx, emptied) = fx;
        self.apply(room, fx);
        if emptied {
            let (b, room) = (self.backend.clone(), room.to_owned());
            tokio::spawn(async move { b.room_emptied(&room).await });
        }
    }

    /// Runs `job` after every media job queued before it for `identity` in `room`, and before
    /// those queued after it. A participant's peer-connection work (publish, unpublish,
    /// subscribe, candidates, mutes, leave) thus happens in the order signaling decided it —
    /// `publish` then `unpublish` is never reordered, and a replaced session's `leave` runs
    /// before the new session's `publish` — while different participants do not wait on
    /// each other. The queue's task ends after [`QUEUE_IDLE`] without work.
    pub(crate) fn enqueue(self: &Arc<Self>, room: &str, identity: &str, job: MediaJob) {
        let key = (room.to_owned(), identity.to_owned());
        let mut g = self.lock();
        // A queue whose task is gone (it panicked) is replaced.
        let job = match g.queues.get(&key) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<MediaJob>();
        let _ = tx.send(job);
        g.queues.insert(key.clone(), tx);
        drop(g);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
                    Ok(Some(job)) => {
                        let Some(s) = weak.upgrade() else { return };
                        job(s).await;
                    }
                    Ok(None) => return,
                    Err(_) => {
                        let Some(s) = weak.upgrade() else { return };
                        // Jobs are sent under the lock: seen empty here, none can follow.
                        let mut g = s.lock();
                        if rx.is_empty() {
                            g.queues.remove(&key);
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Carries out room effects: sends, closes, and media commands (a participant's in its
    /// queue, in order; layout and cues at once).
    pub(crate) fn apply(self: &Arc<Self>, room: &str, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Send { to, msg } => {
                    let msg = match msg {
                        ServerMessage::Joined {
                            room: r,
                            you,
                            participants,
                            ..
                        } => ServerMessage::Joined {
                            room: r,
                            you,
                            participants,
                            // Minted here: the room is pure, credentials need the clock.
                            ice_servers: self.config.ice.servers(Some(&to), now_s()),
                        },
                        m => m,
                    };
                    self.send_to(room, &to, msg)
                }
                Effect::SendConn { conn, msg } => {
                    let tx = self.lock().conns.get(&conn).cloned();
                    if let Some(tx) = tx {
                        tx.send(msg);
                    }
                }
                Effect::Close { conn } => {
                    let tx = self.lock().conns.get(&conn).cloned();
                    if let Some(tx) = tx {
                        tx.close();
                    }
                }
                Effect::Media(cmd) => {
                    let room = room.to_owned();
                    match &cmd {
                        // The program's work, not a peer connection's: no order to keep.
                        MediaCommand::SetLayout { .. } | MediaCommand::Cue { .. } => {
                            let s = self.clone();
                            tokio::spawn(async move { s.media(&room, cmd).await });
                        }
                        _ => {
                            let who = cmd.identity().to_owned();
                            self.enqueue(
                                &room.clone(),
                                &who,
                                Box::new(move |s| {
                                    Box::pin(async move { s.media(&room, cmd).await })
                                }),
                            );
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn send_to(&self, room: &str, identity: &str, msg: ServerMessage) {
        let tx = {
            let g = self.lock();
            let Some(Via::Ws(conn)) = g.rooms.get(room).and_then(|r| r.room.via(identity)) else {
                return;
            };
            g.conns.get(&conn).cloned()
        };
        if let Some(tx) = tx {
            if matches!(msg, ServerMessage::Error { .. }) {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
            if !tx.send(msg) {
                // A client that does not read its messages is dropped, not waited for.
                warn!(room, identity = ?identity, "signaling queue full; dropping the socket");
            }
        }
    }

    /// Refuses a new subscription to co-hosts' own tracks for `identity` in `room` when it, or
    /// the room, holds the most allowed.
    pub(crate) async fn check_subscription_caps(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(), MediaError> {
        let subs = self.backend.subscribers(room).await;
        if subs.len() >= self.config.max_subscriptions_per_room {
            return Err(MediaError::LimitReached(format!(
                "room `{room}` has {} subscriptions to co-hosts' tracks, the most allowed",
                subs.len()
            )));
        }
        let mine = subs
            .iter()
            .filter(|sub| {
                sub.as_str() == identity || whep_session_owner(sub).as_deref() == Some(identity)
            })
            .count();
        if mine >= self.config.max_subscriptions_per_identity {
            return Err(MediaError::LimitReached(format!(
                "{mine} subscriptions to co-hosts' tracks already, the most one identity may hold"
            )));
        }
        Ok(())
    }

    /// How `identity` publishes: its role and the mutes the host has set on it (a new
    /// publication starts with them, so publishing again does not undo a mute).
    pub(crate) fn publish_options(&self, room: &str, identity: &str, whip: bool) -> PublishOptions {
        let g = self.lock();
        let p = g.rooms.get(room).and_then(|r| r.room.participant(identity));
        PublishOptions {
            whip,
            host: p.is_some_and(|p| p.role == Role::Host),
            audio_muted: p.is_some_and(|p| p.audio_muted),
            video_muted: p.is_some_and(|p| p.video_muted),
        }
    }

    /// A mute the host set while the publication was being set up reached no publication:
    /// apply it now.
    pub(crate) async fn reapply_mutes(&self, room: &str, identity: &str, was: PublishOptions) {
        let now = self.publish_options(room, identity, was.whip);
        if now.audio_muted != was.audio_muted {
            self.backend
                .set_muted(room, identity, MediaKind::Audio, now.audio_muted)
                .await;
        }
        if now.video_muted != was.video_muted {
            self.backend
                .set_muted(room, identity, MediaKind::Video, now.video_muted)
                .await;
        }
    }

    pub(crate) async fn media(self: &Arc<Self>, room: &str, cmd: MediaCommand) {
        let b = &self.backend;
        match cmd {
            MediaCommand::Publish { identity, sdp } => {
                let opts = self.publish_options(room, &identity, false);
                match b.publish(room, &identity, sdp, opts).await {
                    Ok(sdp) => {
                        self.reapply_mutes(room, &identity, opts).await;
                        self.send_to(
                            room,
                            &identity,
                            ServerMessage::Answer {
                                pc: "publish".into(),
                                sdp,
                            },
                        )
                    }
                    Err(e) => self.send_to(
                        room,
                        &identity,
                        ServerMessage::error(e.code(), e.to_string()),
                    ),
                }
            }
            MediaCommand::Unpublish { identity } => b.unpublish(room, &identity).await,
            MediaCommand::Subscribe {
                identity,
                target,
                sdp,
            } => match async {
                // A new target counts against the caps; answering again does not.
                let again = b.subscribers(room).await.iter().any(|sub| sub == &identity);
                if !again {
                    self.check_subscription_caps(room, &identity).await?;
                }
                b.subscribe(room, &identity, &target, sdp).await
            }
            .await
            {
                Ok(sdp) => self.send_to(
                    room,
                    &identity,
                    ServerMessage::Answer {
                        pc: format!("subscribe:{target}"),
                        sdp,
                    },
                ),
                Err(e) => self.send_to(
                    room,
                    &identity,
                    ServerMessage::error(e.code(), e.to_string()),
                ),
            },
            MediaCommand::Unsubscribe { identity, target } => {
                b.unsubscribe(room, &identity, &target).await;
            }
            MediaCommand::Candidate {
                identity,
                pc,
                candidate,
            } => {
                if let Err(e) = b.add_candidate(room, &identity, &pc, candidate).await {
                    self.send_to(
                        room,
                        &identity,
                        ServerMessage::error(e.code(), e.to_string()),
                    );
                }
            }
            MediaCommand::SetMuted {
                identity,
                kind,
                muted,
            } => b.set_muted(room, &identity, kind, muted).await,
            MediaCommand::SetLayout { identity, layout } => {
                match b.set_layout(room, layout).await {
                    Ok(applied) => self.layout_applied(room, applied),
                    Err(e) => self.send_to(
                        room,
                        &identity,
                        ServerMessage::error(e.code(), e.to_string()),
                    ),
                }
            }
            MediaCommand::Cue {
                identity,
                id,
                data,
                repeat,
                at_capture_ms,
            } => {
                let msg = match b.cue(room, &id, data, repeat, at_capture_ms).await {
                    Ok(ack) => ServerMessage::CueAccepted {
                        id: ack.id,
                        pts_ms: ack.pts_ms,
                    },
                    Err(e) => ServerMessage::error(e.code(), e.to_string()),
                };
                self.send_to(room, &identity, msg);
            }
            MediaCommand::Leave { identity } => b.leave(room, &identity).await,
        }
    }

    pub(crate) fn layout_applied(self: &Arc<Self>, room: &str, layout: serde_json::Value) {
        let fx = self
            .lock()
            .rooms
            .get(room)
            .map(|r| r.room.layout_changed(layout))
            .unwrap_or_default();
        self.apply(room, fx);
    }
}

/// A WHEP session id: its owner's identity (hex, so any identity fits and the id parses back)
/// and 128 random bits, so a session cannot be guessed by others in the room.
pub(crate) fn whep_session_id(owner: &str) -> String {
    let hex: String = owner.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{:032x}", rand::random::<u128>())
}

/// The owner of a session id made by [`whep_session_id`].
pub(crate) fn whep_session_owner(session: &str) -> Option<String> {
    let (hex, _) = session.split_once('.')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}
