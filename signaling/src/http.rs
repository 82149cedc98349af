//! The thin I/O layer: WebSocket signaling, WHIP, WHEP and the room/token/layout/cue API, as an
//! axum [`Router`] over a shared [`Signaling`] state. Room logic lives in [`crate::room`]; media
//! in the [`MediaBackend`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::auth::{
    valid_display_name, valid_identity, valid_name, Auth, AuthError, Claims, Role, MAX_NAME_CHARS,
};
use crate::backend::{MediaBackend, MediaError, MediaEvent, PublishOptions};
use crate::protocol::{
    parse_client_message, ClientMessage, MediaKind, ServerMessage, MAX_MESSAGE_BYTES,
};
use crate::room::{Effect, MediaCommand, Room, Via};

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
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
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

enum Outbound {
    Msg(ServerMessage),
    Close,
}

/// Messages waiting for one socket, at most.
const OUTBOUND_QUEUE: usize = 256;

/// The sending side of one socket: a bounded queue, and a kill switch for when the queue is
/// full (a client that does not read is dropped, never waited for).
#[derive(Clone)]
struct ConnTx {
    tx: mpsc::Sender<Outbound>,
    kill: Arc<tokio::sync::Notify>,
}

impl ConnTx {
    /// Queues `msg`; false (and the socket is dropped) when its queue is full.
    fn send(&self, msg: ServerMessage) -> bool {
        if self.tx.try_send(Outbound::Msg(msg)).is_ok() {
            return true;
        }
        self.kill.notify_one();
        false
    }

    /// Closes the socket after what is queued (at once when the queue is full).
    fn close(&self) {
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

/// A piece of media work run in its participant's queue.
type MediaJob = Box<
    dyn FnOnce(Arc<Signaling>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// A participant's media queue ends after this long without work.
const QUEUE_IDLE: Duration = Duration::from_secs(30);

/// Shared signaling state: rooms, live connections, auth and the media backend.
pub struct Signaling {
    inner: Mutex<Inner>,
    auth: Auth,
    backend: Arc<dyn MediaBackend>,
    config: Config,
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

fn now_s() -> u64 {
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

    fn on_media_event(self: &Arc<Self>, ev: MediaEvent) {
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

    fn leave(self: &Arc<Self>, room: &str, identity: &str, via: Via) {
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
    fn enqueue(self: &Arc<Self>, room: &str, identity: &str, job: MediaJob) {
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
    fn apply(self: &Arc<Self>, room: &str, fx: Vec<Effect>) {
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

    fn send_to(&self, room: &str, identity: &str, msg: ServerMessage) {
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

    /// May the caller act on `identity`'s WHIP session in `room` (its own, or the host), and is
    /// there one? (`DELETE` and `PATCH` of a WHIP `Location`.)
    fn whip_session_access(
        &self,
        headers: &HeaderMap,
        room: &str,
        identity: &str,
    ) -> Result<(), ApiError> {
        let claims = self.auth.verify_for_room(bearer(headers)?, room, now_s())?;
        if claims.identity != identity && claims.role != Role::Host {
            return Err(AuthError::Forbidden(claims.role).into());
        }
        let present = self
            .lock()
            .rooms
            .get(room)
            .and_then(|r| r.room.via(identity))
            == Some(Via::Whip);
        if !present {
            return Err(ApiError::new(404, "not_found", "no such WHIP session"));
        }
        Ok(())
    }

    /// May the caller act on the WHEP session `session` (its owner, or the host)? An id that
    /// names no owner is `404`.
    fn whep_session_access(
        &self,
        headers: &HeaderMap,
        room: &str,
        session: &str,
    ) -> Result<(), ApiError> {
        let claims = self.auth.verify_for_room(bearer(headers)?, room, now_s())?;
        let owner = whep_session_owner(session)
            .ok_or_else(|| ApiError::new(404, "not_found", "no such WHEP session"))?;
        if owner != claims.identity && claims.role != Role::Host {
            return Err(AuthError::Forbidden(claims.role).into());
        }
        Ok(())
    }

    /// Refuses a new subscription to co-hosts' own tracks for `identity` in `room` when it, or
    /// the room, holds the most allowed.
    async fn check_subscription_caps(&self, room: &str, identity: &str) -> Result<(), MediaError> {
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
    fn publish_options(&self, room: &str, identity: &str, whip: bool) -> PublishOptions {
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
    async fn reapply_mutes(&self, room: &str, identity: &str, was: PublishOptions) {
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

    async fn media(self: &Arc<Self>, room: &str, cmd: MediaCommand) {
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

    fn layout_applied(self: &Arc<Self>, room: &str, layout: serde_json::Value) {
        let fx = self
            .lock()
            .rooms
            .get(room)
            .map(|r| r.room.layout_changed(layout))
            .unwrap_or_default();
        self.apply(room, fx);
    }
}

/// The signaling routes: `/ws`, `/whip/...`, `/whep/...`, `/api/tokens`, `/api/rooms...`.
pub fn router(state: Arc<Signaling>) -> Router {
    Router::new()
        .route("/ws", get(ws_handler))
        .route("/whip/{room}", post(whip_post).options(sdp_options))
        .route(
            "/whip/{room}/{identity}",
            axum::routing::delete(whip_delete).patch(whip_patch),
        )
        .route("/whep/{room}", post(whep_program_post).options(sdp_options))
        .route(
            "/whep/{room}/{identity}",
            post(whep_post).options(sdp_options_cohost),
        )
        .route(
            "/whep/{room}/{identity}/{session}",
            axum::routing::delete(whep_delete).patch(whep_patch),
        )
        .route("/api/tokens", post(mint_token))
        .route("/api/rooms", post(create_room).get(list_rooms))
        .route("/api/rooms/{room}", get(get_room).delete(delete_room))
        .route("/api/rooms/{room}/layout", put(put_layout))
        .route("/api/rooms/{room}/cues", post(post_cue))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            credentials_first,
        ))
        .with_state(state)
}

/// `OPTIONS` on a WHIP/WHEP endpoint (RFC 9725 §4.2, §4.4): what it takes, and the ICE
/// servers — TURN with credentials only for a caller with a valid token of the room.
async fn sdp_options(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let identity = bearer(&headers)
        .ok()
        .and_then(|t| s.auth.verify_for_room(t, &room, now_s()).ok())
        .map(|c| c.identity);
    let mut r = (
        StatusCode::NO_CONTENT,
        [(
            header::HeaderName::from_static("accept-post"),
            "application/sdp",
        )],
    )
        .into_response();
    add_links(&mut r, s.config.ice.links(identity.as_deref(), now_s()));
    r
}

async fn sdp_options_cohost(
    state: State<Arc<Signaling>>,
    Path((room, _)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    sdp_options(state, Path(room), headers).await
}

fn add_links(r: &mut Response, links: Vec<String>) {
    for l in links {
        if let Ok(v) = header::HeaderValue::from_str(&l) {
            r.headers_mut().append(header::LINK, v);
        }
    }
}

/// Every route with a request body needs credentials (the API key or a valid participant
/// token): they are checked before the body is read, so a caller without them cannot hold a
/// connection and a buffer by sending a body slowly. Each handler then checks what exactly
/// the caller may do.
async fn credentials_first(
    State(s): State<Arc<Signaling>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let has_body = matches!(
        *req.method(),
        axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::PATCH
    );
    if has_body {
        if let Err(e) = s.caller(req.headers()) {
            s.metrics.errors.fetch_add(1, Ordering::Relaxed);
            let mut r = ApiError::from(e).into_response();
            // The body was not read: do not keep the connection for another request.
            r.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// An HTTP error with the JSON body `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(e.status(), e.code(), e.to_string())
    }
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        ApiError::new(e.status(), e.code(), e.to_string())
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)
}

/// Who is calling an API route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Holder of the API key.
    Admin,
    /// A participant token.
    Participant(Claims),
}

impl Signaling {
    /// API key or any participant token.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let t = bearer(headers)?;
        if self.auth.is_api_key(t) {
            return Ok(Caller::Admin);
        }
        self.auth.verify(t, now_s()).map(Caller::Participant)
    }

    /// API key only.
    pub fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.caller(headers).inspect_err(|_| {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        })? {
            Caller::Admin => Ok(()),
            Caller::Participant(c) => Err(AuthError::Forbidden(c.role).into()),
        }
    }

    /// API key, or a host token of `room`.
    pub fn require_host(&self, headers: &HeaderMap, room: &str) -> Result<(), ApiError> {
        match self.caller(headers)? {
            Caller::Admin => Ok(()),
            Caller::Participant(c) if c.room != room => Err(AuthError::WrongRoom.into()),
            Caller::Participant(c) if c.role == Role::Host => Ok(()),
            Caller::Participant(c) => Err(AuthError::Forbidden(c.role).into()),
        }
    }
}

/// Trickle ICE on a WHIP/WHEP session (RFC 9725 §4.3): `pc` names the session's peer
/// connection for the backend (`publish`, `subscribe:<target>` or `program`), `who` its
/// subscriber or publisher key. Checks, in order: the fragment's media type (`415`), the
/// session (`404`), `If-Match` against its entity tag (`412`), the fragment (`400`, nothing
/// applied). An ICE restart (a new ufrag) restarts the session's ICE: `200` with the server's
/// new credentials and candidates. Then every candidate is handed to the session's ICE agent:
/// `204` (or that `200`).
async fn trickle_patch(
    s: &Signaling,
    headers: &HeaderMap,
    body: &Bytes,
    room: &str,
    who: &str,
    pc: &str,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with(crate::trickle::SDPFRAG)
    {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!("Content-Type must be {}", crate::trickle::SDPFRAG),
        ));
    }
    let Some((ours, theirs)) = s.backend.ice_ufrags(room, who, pc).await else {
        return Err(ApiError::new(404, "not_found", "no such session"));
    };
    let tag = crate::trickle::etag(&ours);
    if let Some(m) = headers.get(header::IF_MATCH) {
        let m = m.to_str().unwrap_or("");
        if !crate::trickle::if_match(m, &tag) {
            return Err(ApiError::new(
                412,
                "precondition_failed",
                "If-Match does not match the session (it restarted or ended)",
            ));
        }
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(400, "bad_request", "the fragment is not UTF-8"))?;
    let frag = crate::trickle::parse(text)
        .map_err(|e| ApiError::new(400, "bad_request", e.to_string()))?;
    let mut restarted = None;
    if frag.is_restart(&theirs) {
        // RFC 9725 §4.4: the server restarts too and answers its new credentials and
        // candidates (`200`, a fragment); the client's new candidates are then added.
        let (Some(ufrag), Some(pwd)) = (frag.ufrag.as_deref(), frag.pwd.as_deref()) else {
            return Err(ApiError::new(
                400,
                "bad_request",
                "an ICE restart needs a=ice-ufrag and a=ice-pwd",
            ));
        };
        let answer = s
            .backend
            .restart_ice(room, who, pc, ufrag, pwd)
            .await
            .map_err(ApiError::from)?;
        let body = crate::trickle::restart_fragment(&answer).ok_or_else(|| {
            ApiError::new(
                500,
                "internal",
                "the restarted answer has no ICE credentials",
            )
        })?;
        let tag = crate::trickle::sdp_ufrag(&answer)
            .map(crate::trickle::etag)
            .unwrap_or_default();
        restarted = Some((body, tag));
    }
    for c in frag.candidates {
        let init = serde_json::json!({
            "candidate": c.candidate,
            "sdpMid": c.mid,
            "sdpMLineIndex": c.mline_index,
        });
        s.backend
            .add_candidate(room, who, pc, init)
            .await
            .map_err(ApiError::from)?;
    }
    if let Some((body, tag)) = restarted {
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, crate::trickle::SDPFRAG.to_owned()),
                (header::ETAG, tag),
            ],
            body,
        )
            .into_response());
    }
    Ok((StatusCode::NO_CONTENT, [(header::ETAG, tag)]).into_response())
}

async fn whip_patch(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.whip_session_access(&headers, &room, &identity)?;
    trickle_patch(&s, &headers, &body, &room, &identity, "publish").await
}

async fn whep_patch(
    State(s): State<Arc<Signaling>>,
    Path((room, identity, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.whep_session_access(&headers, &room, &session)?;
    // A co-host may be called `program`: the program viewer is tried first.
    if identity == "program"
        && s.backend
            .ice_ufrags(&room, &session, "program")
            .await
            .is_some()
    {
        return trickle_patch(&s, &headers, &body, &room, &session, "program").await;
    }
    let pc = format!("subscribe:{identity}");
    trickle_patch(&s, &headers, &body, &room, &session, &pc).await
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws_handler(
    State(s): State<Arc<Signaling>>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = q.token.ok_or(AuthError::Missing)?;
    let claims = s.auth.verify(&token, now_s()).inspect_err(|_| {
        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
    })?;
    s.metrics.connections.fetch_add(1, Ordering::Relaxed);
    // The transport limit is above our own so an oversized message gets a clear error reply.
    Ok(ws
        .max_message_size(4 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let span = info_span!("participant", room = %claims.room, identity = %claims.identity);
            run_socket(s, claims, socket).instrument(span)
        }))
}

async fn run_socket(s: Arc<Signaling>, claims: Claims, mut socket: WebSocket) {
    let conn = s.next_conn.fetch_add(1, Ordering::Relaxed);
    let (otx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let kill = Arc::new(tokio::sync::Notify::new());
    let tx = ConnTx {
        tx: otx,
        kill: kill.clone(),
    };
    s.lock().conns.insert(conn, tx.clone());
    let send_timeout = s.config.send_timeout;
    let room = claims.room.clone();
    let me = claims.identity.clone();
    let mut joined = false;
    let mut ping = tokio::time::interval(s.config.ping_interval);
    let mut last_heard = tokio::time::Instant::now();
    let mut limit = RateLimit::new(s.config.message_rate, s.config.message_burst, last_heard);
    // When a flooding client was last told so (at most once a second).
    let mut told: Option<tokio::time::Instant> = None;
    info!("signaling connected");
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(m)) = incoming else { break };
                last_heard = tokio::time::Instant::now();
                let text = match m {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        tx.send(ServerMessage::error("bad_message", "binary messages are not part of the protocol"));
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Message::Close(_) => break,
                    _ => continue,
                };
                s.metrics.messages.fetch_add(1, Ordering::Relaxed);
                if !limit.allow(last_heard) {
                    // Dropped unread: a flood costs us a counter, not a parse or a media job.
                    s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    if told.is_none_or(|t| last_heard.duration_since(t) >= Duration::from_secs(1)) {
                        told = Some(last_heard);
                        warn!("signaling messages over the rate limit; dropping");
                        tx.send(ServerMessage::error(
                            "rate_limited",
                            format!(
                                "more than {} messages a second (bursts of {}): messages dropped",
                                s.config.message_rate, s.config.message_burst
                            ),
                        ));
                    }
                    continue;
                }
                let msg = match parse_client_message(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        debug!(error = %e, "bad signaling message");
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tx.send(ServerMessage::error(e.code(), e.to_string()));
                        continue;
                    }
                };
                if !joined {
                    let ClientMessage::Join { name } = msg else {
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tx.send(ServerMessage::error("not_joined", "send `join` first"));
                        continue;
                    };
                    // The token's name wins: an app backend vouched for it.
                    let name = claims.name.clone().or(name).unwrap_or_else(|| me.clone());
                    if !valid_display_name(&name) {
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tx.send(ServerMessage::error("bad_name", format!("a name is 1 to {MAX_NAME_CHARS} characters without control characters")));
                        continue;
                    }
                    let res = {
                        let mut g = s.lock();
                        let entry = g.rooms.entry(room.clone()).or_insert_with(|| RoomEntry { room: Room::with_limits(&room, s.config.room_limits), persistent: false });
                        entry.room.join(&me, &name, claims.role, Via::Ws(conn))
                    };
                    match res {
                        Ok(fx) => { joined = true; info!(role = ?claims.role, "joined"); s.apply(&room, fx); }
                        Err(e) => { s.metrics.errors.fetch_add(1, Ordering::Relaxed); tx.send(ServerMessage::error(e.code(), e.to_string())); }
                    }
                    continue;
                }
                let res = {
                    let mut g = s.lock();
                    match g.rooms.get_mut(&room) {
                        // Only this connection's own session may act for the identity.
                        Some(r) if r.room.via(&me) == Some(Via::Ws(conn)) => r.room.handle(&me, msg),
                        _ => { break; }
                    }
                };
                match res {
                    Ok(fx) => s.apply(&room, fx),
                    Err(e) => { s.metrics.errors.fetch_add(1, Ordering::Relaxed); tx.send(ServerMessage::error(e.code(), e.to_string())); }
                }
            }
            out = rx.recv() => {
                match out {
                    Some(Outbound::Msg(m)) => {
                        let Ok(text) = serde_json::to_string(&m) else { continue };
                        if !send_within(&mut socket, Message::Text(text.into()), send_timeout, &s.metrics).await { break; }
                    }
                    Some(Outbound::Close) | None => {
                        send_within(&mut socket, Message::Close(None), send_timeout, &s.metrics).await;
                        break;
                    }
                }
            }
            () = kill.notified() => {
                warn!("signaling client does not read its messages; dropped");
                s.metrics.slow_dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > s.config.idle_timeout {
                    info!("signaling idle timeout");
                    break;
                }
                if !send_within(&mut socket, Message::Ping(Bytes::new()), send_timeout, &s.metrics).await { break; }
            }
        }
    }
    s.lock().conns.remove(&conn);
    if joined {
        s.leave(&room, &me, Via::Ws(conn));
    }
    info!("signaling disconnected");
}

/// Sends one frame, giving up after `timeout` (a client that stopped reading fills its TCP
/// window and would hold this task, its pings and its idle timeout for ever); false when the
/// socket is to be dropped.
async fn send_within(
    socket: &mut WebSocket,
    m: Message,
    timeout: Duration,
    metrics: &SignalingMetrics,
) -> bool {
    match tokio::time::timeout(timeout, socket.send(m)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            warn!("signaling send timed out; dropping the socket");
            metrics.slow_dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

fn require_sdp(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "Content-Type must be application/sdp",
        ));
    }
    Ok(())
}

fn sdp_created(location: String, answer: String, links: Vec<String>) -> Response {
    let mut r = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
            (
                header::HeaderName::from_static("accept-patch"),
                crate::trickle::SDPFRAG.to_owned(),
            ),
        ],
        answer.clone(),
    )
        .into_response();
    if let Some(tag) = crate::trickle::sdp_ufrag(&answer)
        .map(crate::trickle::etag)
        .and_then(|t| header::HeaderValue::from_str(&t).ok())
    {
        r.headers_mut().insert(header::ETAG, tag);
    }
    add_links(&mut r, links);
    r
}

fn body_text(body: Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::new(400, "bad_sdp", "SDP must be UTF-8"))
}

async fn whip_post(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let claims = s.auth.verify_for_room(bearer(&headers)?, &room, now_s())?;
    if claims.role == Role::Viewer {
        return Err(AuthError::Forbidden(Role::Viewer).into());
    }
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let me = claims.identity.clone();
    let name = claims.name.clone().unwrap_or_else(|| me.clone());
    let fx = {
        let mut g = s.lock();
        let entry = g.rooms.entry(room.clone()).or_insert_with(|| RoomEntry {
            room: Room::with_limits(&room, s.config.room_limits),
            persistent: false,
        });
        entry
            .room
            .join(&me, &name, claims.role, Via::Whip)
            .map_err(|e| ApiError::new(409, e.code(), e.to_string()))?
    };
    // A replaced WHIP session's media is dropped (queued by `join`) before this publication
    // starts: both go through the participant's media queue.
    s.apply(&room, fx);
    let span = info_span!("participant", room = %room, identity = %me);
    let opts = s.publish_options(&room, &me, true);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (room2, me2) = (room.clone(), me.clone());
    s.enqueue(
        &room,
        &me,
        Box::new(move |s| {
            Box::pin(async move {
                let res = s.backend.publish(&room2, &me2, offer, opts).await;
                if res.is_ok() {
                    s.reapply_mutes(&room2, &me2, opts).await;
                }
                let _ = tx.send(res);
            })
        }),
    );
    let res = rx
        .instrument(span)
        .await
        .unwrap_or_else(|_| Err(MediaError::Internal("the publication was dropped".into())));
    match res {
        Ok(answer) => Ok(sdp_created(
            format!("/whip/{room}/{}", path_segment(&me)),
            answer,
            s.config.ice.links(Some(&me), now_s()),
        )),
        Err(e) => {
            s.leave(&room, &me, Via::Whip);
            Err(e.into())
        }
    }
}

async fn whip_delete(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.whip_session_access(&headers, &room, &identity)?;
    s.leave(&room, &identity, Via::Whip);
    Ok(StatusCode::OK)
}

async fn whep_post(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let claims = s.auth.verify_for_room(bearer(&headers)?, &room, now_s())?;
    // One rule with WebSocket `subscribe`: viewers watch the program, unless on air.
    let viewer_on_air = || {
        s.lock()
            .rooms
            .get(&room)
            .and_then(|r| r.room.participant(&claims.identity).map(|p| p.on_air))
            .unwrap_or(false)
    };
    if claims.role == Role::Viewer && !viewer_on_air() {
        return Err(AuthError::Forbidden(Role::Viewer).into());
    }
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let publishing = s
        .lock()
        .rooms
        .get(&room)
        .and_then(|r| r.room.participant(&identity).map(|p| p.publishing))
        .unwrap_or(false);
    s.check_subscription_caps(&room, &claims.identity).await?;
    if !publishing {
        return Err(ApiError::new(
            404,
            "not_publishing",
            format!("`{identity}` is not publishing in `{room}`"),
        ));
    }
    let session = whep_session_id(&claims.identity);
    let answer = s
        .backend
        .subscribe(&room, &session, &identity, offer)
        .await?;
    Ok(sdp_created(
        format!("/whep/{room}/{}/{session}", path_segment(&identity)),
        answer,
        s.config.ice.links(Some(&claims.identity), now_s()),
    ))
}

/// A WHEP session id: its owner's identity (hex, so any identity fits and the id parses back)
/// and 128 random bits, so a session cannot be guessed by others in the room.
fn whep_session_id(owner: &str) -> String {
    let hex: String = owner.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{:032x}", rand::random::<u128>())
}

/// The owner of a session id made by [`whep_session_id`].
fn whep_session_owner(session: &str) -> Option<String> {
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

/// `s` as one URL path segment (percent-encoded), so any identity round-trips.
fn path_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

async fn whep_delete(
    State(s): State<Arc<Signaling>>,
    Path((room, identity, session)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.whep_session_access(&headers, &room, &session)?;
    let not_found = || ApiError::new(404, "not_found", "no such WHEP session");
    // A co-host may be called `program`: its subscriptions are tried after the program's.
    let ended = (identity == "program" && s.backend.unsubscribe_program(&room, &session).await)
        || s.backend.unsubscribe(&room, &session, &identity).await;
    if ended {
        Ok(StatusCode::OK)
    } else {
        Err(not_found())
    }
}

async fn whep_program_post(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let claims = s.auth.verify_for_room(bearer(&headers)?, &room, now_s())?;
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let viewer = whep_session_id(&claims.identity);
    let answer = s.backend.subscribe_program(&room, &viewer, offer).await?;
    Ok(sdp_created(
        format!("/whep/{room}/program/{viewer}"),
        answer,
        s.config.ice.links(Some(&claims.identity), now_s()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    room: String,
    identity: String,
    role: Role,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

/// Parses a JSON request body; a malformed one is `400 bad_json`.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, "bad_json", e.to_string()))
}

async fn mint_token(
    State(s): State<Arc<Signaling>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.require_admin(&headers)?;
    let req: TokenRequest = json_body(&body)?;
    if !valid_name(&req.room) {
        return Err(ApiError::new(
            400,
            "bad_room",
            "room: 1-64 of [A-Za-z0-9_.-]",
        ));
    }
    if !valid_identity(&req.identity) {
        return Err(ApiError::new(
            400,
            "bad_identity",
            "identity: 1-128 bytes without control characters",
        ));
    }
    if req.name.as_deref().is_some_and(|n| !valid_display_name(n)) {
        return Err(ApiError::new(
            400,
            "bad_name",
            format!("name: 1-{MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    let ttl = req
        .ttl_s
        .unwrap_or(s.config.default_token_ttl.as_secs())
        .clamp(1, 30 * 24 * 3600);
    let claims = Claims {
        room: req.room,
        identity: req.identity,
        role: req.role,
        exp: now_s() + ttl,
        name: req.name,
    };
    let token = s.auth.mint(&claims).map_err(ApiError::from)?;
    Ok(Json(serde_json::json!({
        "token": token, "room": claims.room, "identity": claims.identity,
        "role": claims.role, "expires_at": claims.exp,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    #[serde(default)]
    mix: Option<serde_json::Value>,
}

async fn create_room(
    State(s): State<Arc<Signaling>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.require_admin(&headers)?;
    let req: CreateRoom = json_body(&body)?;
    if !valid_name(&req.name) {
        return Err(ApiError::new(
            400,
            "bad_room",
            "name: 1-64 of [A-Za-z0-9_.-]",
        ));
    }
    s.backend.create_room(&req.name, req.mix).await?;
    {
        let mut g = s.lock();
        let e = g
            .rooms
            .entry(req.name.clone())
            .or_insert_with(|| RoomEntry {
                room: Room::with_limits(&req.name, s.config.room_limits),
                persistent: true,
            });
        e.persistent = true;
    }
    let info = room_json(&s, &req.name).await;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn room_json(s: &Arc<Signaling>, room: &str) -> serde_json::Value {
    let participants = s
        .lock()
        .rooms
        .get(room)
        .map(|r| r.room.participants())
        .unwrap_or_default();
    let media = s.backend.room_info(room).await;
    serde_json::json!({"name": room, "participants": participants, "media": media})
}

async fn list_rooms(
    State(s): State<Arc<Signaling>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.require_admin(&headers)?;
    let names: Vec<String> = {
        let mut v: Vec<String> = s.lock().rooms.keys().cloned().collect();
        v.sort();
        v
    };
    let mut rooms = Vec::new();
    for n in names {
        rooms.push(room_json(&s, &n).await);
    }
    Ok(Json(serde_json::json!({ "rooms": rooms })))
}

async fn get_room(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.require_host(&headers, &room)?;
    if !s.lock().rooms.contains_key(&room) {
        return Err(ApiError::new(
            404,
            "unknown_room",
            format!("no room `{room}`"),
        ));
    }
    Ok(Json(room_json(&s, &room).await))
}

async fn delete_room(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.require_admin(&headers)?;
    let Some(entry) = s.lock().rooms.remove(&room) else {
        return Err(ApiError::new(
            404,
            "unknown_room",
            format!("no room `{room}`"),
        ));
    };
    for p in entry.room.participants() {
        if let Some(Via::Ws(conn)) = entry.room.via(&p.identity) {
            let tx = s.lock().conns.get(&conn).cloned();
            if let Some(tx) = tx {
                tx.send(ServerMessage::error("room_closed", "the room was deleted"));
                tx.close();
            }
        }
        s.backend.leave(&room, &p.identity).await;
    }
    s.backend.close_room(&room).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether a room exists (joined or created through the API).
impl Signaling {
    /// `true` if the room exists.
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
}

async fn put_layout(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.require_host(&headers, &room)?;
    let layout: serde_json::Value = json_body(&body)?;
    if !s.room_exists(&room) {
        return Err(ApiError::new(
            404,
            "unknown_room",
            format!("no room `{room}`"),
        ));
    }
    let applied = s.backend.set_layout(&room, layout).await?;
    s.layout_applied(&room, applied.clone());
    Ok(Json(serde_json::json!({ "layout": applied })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CueRequest {
    id: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    repeat: Option<u32>,
    #[serde(default)]
    at_capture_ms: Option<f64>,
}

async fn post_cue(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.require_host(&headers, &room)?;
    let req: CueRequest = json_body(&body)?;
    if req.id.is_empty() || req.id.len() > 64 {
        return Err(ApiError::new(400, "bad_cue", "id: 1-64 bytes"));
    }
    if !s.room_exists(&room) {
        return Err(ApiError::new(
            404,
            "unknown_room",
            format!("no room `{room}`"),
        ));
    }
    let repeat = req.repeat.unwrap_or(3).clamp(1, 300);
    let ack = s
        .backend
        .cue(&room, &req.id, req.data, repeat, req.at_capture_ms)
        .await?;
    let status = if ack.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(serde_json::json!({"id": ack.id, "pts_ms": ack.pts_ms})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CueAck;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "  Bearer   abc "] {
            assert_eq!(bearer(&auth(v)).ok(), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer ", "Bearerabc", "abc"] {
            assert!(bearer(&auth(v)).is_err(), "{v}");
        }
        assert!(bearer(&HeaderMap::new()).is_err());
    }

    #[test]
    fn whep_session_ids_name_their_owner_and_differ() {
        for owner in ["alice", "a-1", "OBS Studio/1 \u{fc}", "x.y"] {
            let a = whep_session_id(owner);
            let b = whep_session_id(owner);
            assert_ne!(a, b);
            assert_eq!(whep_session_owner(&a).as_deref(), Some(owner));
            assert!(a.bytes().all(|c| c.is_ascii_hexdigit() || c == b'.'), "{a}");
        }
        for bad in ["", "nodot", "6.x", "zz.00", "ff.00"] {
            assert_eq!(whep_session_owner(bad), None, "{bad}");
        }
    }

    /// Records the calls it gets; `publish` takes a while, as a real one does.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn log(&self, s: String) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        }
        fn calls(&self) -> Vec<String> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    #[async_trait::async_trait]
    impl MediaBackend for Recorder {
        async fn publish(
            &self,
            _: &str,
            who: &str,
            offer: String,
            _: PublishOptions,
        ) -> Result<String, MediaError> {
            self.log(format!("publish {who} {offer} start"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.log(format!("publish {who} {offer} done"));
            Ok("answer".into())
        }
        async fn unpublish(&self, _: &str, who: &str) {
            self.log(format!("unpublish {who}"));
        }
        async fn subscribe(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: String,
        ) -> Result<String, MediaError> {
            Ok(String::new())
        }
        async fn unsubscribe(&self, _: &str, _: &str, _: &str) -> bool {
            false
        }
        async fn add_candidate(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: serde_json::Value,
        ) -> Result<(), MediaError> {
            Ok(())
        }
        async fn restart_ice(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<String, MediaError> {
            Err(MediaError::Unavailable("no media here".into()))
        }
        async fn set_muted(&self, _: &str, who: &str, _: MediaKind, muted: bool) {
            self.log(format!("mute {who} {muted}"));
        }
        async fn leave(&self, _: &str, who: &str) {
            self.log(format!("leave {who}"));
        }
        async fn create_room(
            &self,
            _: &str,
            _: Option<serde_json::Value>,
        ) -> Result<(), MediaError> {
            Ok(())
        }
        async fn close_room(&self, _: &str) {}
        async fn room_info(&self, _: &str) -> serde_json::Value {
            serde_json::Value::Null
        }
        async fn set_layout(
            &self,
            _: &str,
            l: serde_json::Value,
        ) -> Result<serde_json::Value, MediaError> {
            Ok(l)
        }
        async fn cue(
            &self,
            _: &str,
            _: &str,
            _: serde_json::Value,
            _: u32,
            _: Option<f64>,
        ) -> Result<CueAck, MediaError> {
            Err(MediaError::Unavailable("no program".into()))
        }
        async fn subscribe_program(
            &self,
            _: &str,
            _: &str,
            _: String,
        ) -> Result<String, MediaError> {
            Ok(String::new())
        }
        async fn unsubscribe_program(&self, _: &str, _: &str) -> bool {
            false
        }
        async fn subscribers(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
        async fn room_emptied(&self, _: &str) {}
        async fn ice_ufrags(&self, _: &str, _: &str, _: &str) -> Option<(String, String)> {
            None
        }
    }

    #[tokio::test]
    async fn a_participants_media_work_runs_in_order_others_do_not_wait() {
        let rec = Arc::new(Recorder::default());
        let (_tx, rx) = media_events();
        let s = Signaling::new(Auth::new("k", "s"), rec.clone(), Config::default(), rx);
        let cmd = |c: MediaCommand| Effect::Media(c);
        let publish = |who: &str, sdp: &str| {
            cmd(MediaCommand::Publish {
                identity: who.into(),
                sdp: sdp.into(),
            })
        };
        // alice: publish (slow), publish again, unpublish, mute, leave — decided in this order.
        // bob's publish, decided after them, does not wait for alice's.
        s.apply(
            "r",
            vec![
                publish("alice", "1"),
                publish("alice", "2"),
                cmd(MediaCommand::Unpublish {
                    identity: "alice".into(),
                }),
                cmd(MediaCommand::SetMuted {
                    identity: "alice".into(),
                    kind: MediaKind::Audio,
                    muted: true,
                }),
                cmd(MediaCommand::Leave {
                    identity: "alice".into(),
                }),
                publish("bob", "3"),
            ],
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let calls = rec.calls();
        let alice: Vec<&str> = calls
            .iter()
            .map(String::as_str)
            .filter(|c| c.contains("alice"))
            .collect();
        assert_eq!(
            alice,
            [
                "publish alice 1 start",
                "publish alice 1 done",
                "publish alice 2 start",
                "publish alice 2 done",
                "unpublish alice",
                "mute alice true",
                "leave alice",
            ]
        );
        let pos = |c: &str| calls.iter().position(|x| x == c).expect(c);
        assert!(
            pos("publish bob 3 start") < pos("publish alice 1 done"),
            "bob waited for alice: {calls:?}"
        );
    }

    #[test]
    fn rate_limit_allows_bursts_then_the_rate() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = RateLimit::new(10.0, 5.0, t0);
        // A burst of 5 at once, then nothing.
        assert_eq!((0..8).filter(|_| l.allow(t0)).count(), 5);
        // 10 a second: one more after 100 ms, not before.
        assert!(!l.allow(ms(50)));
        assert!(l.allow(ms(100)));
        assert!(!l.allow(ms(100)));
        // A long pause refills only up to the burst.
        assert_eq!((0..20).filter(|_| l.allow(ms(60_000))).count(), 5);
        // A clock going backwards gives nothing.
        assert!(!l.allow(ms(1)));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(path_segment("a b/c\u{fc}"), "a%20b%2Fc%C3%BC");
    }
}
