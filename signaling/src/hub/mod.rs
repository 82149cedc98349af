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

use crate::auth::{Auth, AuthError, Role};
use crate::backend::{MediaBackend, MediaError, MediaEvent};
use crate::protocol::{ClientMessage, ParticipantInfo, ServerMessage};
use crate::room::{Room, RoomError, Via};

mod media;
pub(crate) use media::MediaJob;

/// Why the hub refused a request, whichever transport it came by.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The caller's credentials.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The room refused (a seat taken, a limit, a role).
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The media side refused or failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// There is no such room.
    #[error("no room `{0}`")]
    UnknownRoom(String),
    /// The co-host to subscribe to publishes nothing.
    #[error("`{identity}` is not publishing in `{room}`")]
    NotPublishing {
        /// Room.
        room: String,
        /// The co-host.
        identity: String,
    },
    /// There is no such WHIP or WHEP session (or the caller's id names none).
    #[error("no such {0}")]
    NoSession(&'static str),
}

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
    /// This node's id in a cluster: rooms then carry it as `node` in the API.
    pub node: Option<String>,
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
            node: None,
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

struct RoomEntry {
    room: Room,
    /// Created by the API: kept when empty.
    persistent: bool,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, RoomEntry>,
    conns: HashMap<u64, ConnTx>,
    /// One queue of media work per participant (room, identity), see [`Signaling::enqueue`].
    queues: HashMap<(String, String), mpsc::UnboundedSender<MediaJob>>,
}

/// Shared signaling state: rooms, live connections, auth and the media backend.
pub struct Signaling {
    inner: Mutex<Inner>,
    pub(crate) auth: Auth,
    backend: Arc<dyn MediaBackend>,
    pub(crate) config: Config,
    next_conn: AtomicU64,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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

    /// Registers a live socket's sending side; its connection id.
    pub(crate) fn connect(&self, tx: ConnTx) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.lock().conns.insert(conn, tx);
        conn
    }

    /// The socket `conn` is gone.
    pub(crate) fn disconnect(&self, conn: u64) {
        self.lock().conns.remove(&conn);
    }

    /// Sends `msg` to the socket `conn`, then closes it.
    pub(crate) fn close_conn_with(&self, conn: u64, msg: ServerMessage) {
        let tx = self.lock().conns.get(&conn).cloned();
        if let Some(tx) = tx {
            tx.send(msg);
            tx.close();
        }
    }

    /// `identity` joins `room` (created on first join) by `via`; the room's effects are
    /// carried out.
    pub(crate) fn join(
        self: &Arc<Self>,
        room: &str,
        identity: &str,
        name: &str,
        role: Role,
        via: Via,
    ) -> Result<(), RoomError> {
        let fx = {
            let mut g = self.lock();
            let entry = g.rooms.entry(room.to_owned()).or_insert_with(|| RoomEntry {
                room: Room::with_limits(room, self.config.room_limits),
                persistent: false,
            });
            entry.room.join(identity, name, role, via)?
        };
        self.apply(room, fx);
        Ok(())
    }

    /// A message from `identity`'s socket `conn`; `None` when that socket no longer holds the
    /// identity's session (it was replaced or removed: the socket should end).
    pub(crate) fn handle(
        self: &Arc<Self>,
        room: &str,
        identity: &str,
        conn: u64,
        msg: ClientMessage,
    ) -> Option<Result<(), RoomError>> {
        let res = {
            let mut g = self.lock();
            match g.rooms.get_mut(room) {
                // Only this connection's own session may act for the identity.
                Some(r) if r.room.via(identity) == Some(Via::Ws(conn)) => {
                    r.room.handle(identity, msg)
                }
                _ => return None,
            }
        };
        Some(res.map(|fx| self.apply(room, fx)))
    }

    /// `true` if the room exists (joined or created through the API).
    pub fn room_exists(&self, room: &str) -> bool {
        self.lock().rooms.contains_key(room)
    }

    /// Keeps an existing room until it is deleted through the API, as if created there (an
    /// operator gave it an output). `false` if there is no such room.
    pub fn keep_room(&self, room: &str) -> bool {
        match self.lock().rooms.get_mut(room) {
            Some(r) => {
                r.persistent = true;
                true
            }
            None => false,
        }
    }

    /// The room `name`, created if needed, kept until deleted through the API.
    fn keep_room_state(&self, name: &str) {
        let mut g = self.lock();
        let e = g.rooms.entry(name.to_owned()).or_insert_with(|| RoomEntry {
            room: Room::with_limits(name, self.config.room_limits),
            persistent: true,
        });
        e.persistent = true;
    }

    /// Removes a room from the registry (its media is the caller's to end).
    fn remove_room(&self, room: &str) -> Option<Room> {
        self.lock().rooms.remove(room).map(|e| e.room)
    }

    /// The mutes the host set in `room` (identity, audio, video).
    pub fn mutes(&self, room: &str) -> Vec<(String, bool, bool)> {
        self.lock()
            .rooms
            .get(room)
            .map(|r| r.room.mutes())
            .unwrap_or_default()
    }

    /// Mutes `room` had on its previous node (see [`Room::carry_mutes`]).
    pub fn carry_mutes(&self, room: &str, mutes: &[(String, bool, bool)]) {
        if let Some(r) = self.lock().rooms.get_mut(room) {
            r.room.carry_mutes(mutes);
        }
    }

    /// The names of all rooms, sorted.
    pub fn room_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().rooms.keys().cloned().collect();
        v.sort();
        v
    }

    /// A room's participants; `None` if there is no such room.
    pub fn participants(&self, room: &str) -> Option<Vec<ParticipantInfo>> {
        self.lock().rooms.get(room).map(|r| r.room.participants())
    }

    /// One participant of a room, as the room sees it.
    pub fn participant(&self, room: &str, identity: &str) -> Option<ParticipantInfo> {
        self.lock()
            .rooms
            .get(room)
            .and_then(|r| r.room.participant(identity).cloned())
    }

    /// `true` if `identity` is in `room` through a WHIP session.
    pub fn has_whip_session(&self, room: &str, identity: &str) -> bool {
        self.lock()
            .rooms
            .get(room)
            .and_then(|r| r.room.via(identity))
            == Some(Via::Whip)
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
