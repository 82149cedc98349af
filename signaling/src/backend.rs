//! The one door from signaling to media: [`MediaBackend`], implemented by the server with
//! WebRTC and the mixer; and [`MediaEvent`], what media tells signaling back.

use async_trait::async_trait;

use crate::protocol::MediaKind;

/// Why the media backend refused or failed a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    /// The SDP (or candidate) could not be used.
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    /// The request body is invalid (layout, cue, output URL, ...).
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// No such room, publisher, session or output.
    #[error("not found: {0}")]
    NotFound(String),
    /// Too large (a cue over 255 bytes of SEI payload).
    #[error("too large: {0}")]
    TooLarge(String),
    /// Too many requests (cue flood).
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// A per-identity or per-room cap is reached (sessions, subscriptions).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// Not available now (no program yet, no ports left).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A failure inside the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl MediaError {
    /// HTTP status for the error.
    pub fn status(&self) -> u16 {
        match self {
            MediaError::BadSdp(_) | MediaError::BadRequest(_) => 400,
            MediaError::NotFound(_) => 404,
            MediaError::TooLarge(_) => 413,
            MediaError::RateLimited(_) | MediaError::LimitReached(_) => 429,
            MediaError::Unavailable(_) => 503,
            MediaError::Internal(_) => 500,
        }
    }
    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::BadSdp(_) => "bad_sdp",
            MediaError::BadRequest(_) => "bad_request",
            MediaError::NotFound(_) => "not_found",
            MediaError::TooLarge(_) => "too_large",
            MediaError::RateLimited(_) => "rate_limited",
            MediaError::LimitReached(_) => "limit_reached",
            MediaError::Unavailable(_) => "unavailable",
            MediaError::Internal(_) => "internal",
        }
    }
}

/// A cue accepted by the program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CueAck {
    /// Cue id.
    pub id: String,
    /// Program time of the first frame carrying it.
    pub pts_ms: u64,
    /// `true` when this id was already accepted (nothing new was stamped).
    #[serde(skip)]
    pub duplicate: bool,
}

/// One of a participant's peer connections: `pc` on the wire (`"publish"`,
/// `"subscribe:<target>"`), plus a WHEP program viewer's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerConnId {
    /// The participant's publication.
    Publish,
    /// Its subscription to `target`'s tracks.
    Subscribe(String),
    /// A WHEP program viewer's connection.
    Program,
}

impl PeerConnId {
    /// Parses the wire form of a client's peer connection (`publish`, `subscribe:<target>`);
    /// `program` is not a client's to name.
    pub fn parse(pc: &str) -> Option<Self> {
        match pc {
            "publish" => Some(PeerConnId::Publish),
            _ => pc
                .strip_prefix("subscribe:")
                .map(|t| PeerConnId::Subscribe(t.to_owned())),
        }
    }
}

impl std::fmt::Display for PeerConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerConnId::Publish => f.write_str("publish"),
            PeerConnId::Subscribe(t) => write!(f, "subscribe:{t}"),
            PeerConnId::Program => f.write_str("program"),
        }
    }
}

/// How a publication came in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishOptions {
    /// Published with WHIP (no signaling channel).
    pub whip: bool,
    /// The publisher is the room's host (the mixer's speaker/pip layouts feature it).
    pub host: bool,
    /// The host has muted this participant's audio: the publication starts muted.
    pub audio_muted: bool,
    /// The host has muted this participant's video: the publication starts muted.
    pub video_muted: bool,
    /// The participant's display name (the program's tile labels), when it has one.
    pub name: Option<String>,
}

/// What the media plane reports to signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// `identity` in `room` now has live tracks (`true`) or none (`false`).
    Publishing {
        /// Room.
        room: String,
        /// Publisher.
        identity: String,
        /// State.
        publishing: bool,
        /// Its live tracks (empty when `publishing` is false).
        tracks: Vec<crate::protocol::TrackInfo>,
    },
    /// A WHIP session's connection failed or timed out: the participant leaves.
    WhipEnded {
        /// Room.
        room: String,
        /// Publisher.
        identity: String,
    },
}

/// Media operations signaling needs. Every method is called with already-authorized input.
#[async_trait]
pub trait MediaBackend: Send + Sync + 'static {
    /// Answers a publishing offer (WebSocket `publish`, or WHIP: its end is then reported
    /// with [`MediaEvent::WhipEnded`]).
    async fn publish(
        &self,
        room: &str,
        identity: &str,
        offer: String,
        opts: PublishOptions,
    ) -> Result<String, MediaError>;
    /// Stops a publication and all subscriptions to it.
    async fn unpublish(&self, room: &str, identity: &str);
    /// Answers `subscriber`'s recvonly offer for `target`'s tracks.
    async fn subscribe(
        &self,
        room: &str,
        subscriber: &str,
        target: &str,
        offer: String,
    ) -> Result<String, MediaError>;
    /// Ends a subscription; `false` if there was none.
    async fn unsubscribe(&self, room: &str, subscriber: &str, target: &str) -> bool;
    /// Adds a trickled candidate to `identity`'s peer connection `pc`.
    async fn add_candidate(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
        candidate: serde_json::Value,
    ) -> Result<(), MediaError>;
    /// Restarts ICE on `identity`'s peer connection `pc` with the client's new credentials (a
    /// trickle `PATCH` carrying a new ufrag, RFC 9725 §4.4); returns the server's new local
    /// description, whose credentials and candidates go back to the client.
    async fn restart_ice(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
        ufrag: &str,
        pwd: &str,
    ) -> Result<String, MediaError>;
    /// Mutes or unmutes forwarding and mixing of `identity`'s `kind`.
    async fn set_muted(&self, room: &str, identity: &str, kind: MediaKind, muted: bool);
    /// `identity` left: close everything it had.
    async fn leave(&self, room: &str, identity: &str);
    /// A room was created through the API with an optional mix config.
    async fn create_room(
        &self,
        room: &str,
        mix: Option<serde_json::Value>,
    ) -> Result<(), MediaError>;
    /// A room was deleted: close all its media.
    async fn close_room(&self, room: &str);
    /// Media-side description of a room (tracks, mix, outputs) for `GET /api/rooms/{room}`.
    async fn room_info(&self, room: &str) -> serde_json::Value;
    /// Applies a layout; returns it as applied.
    async fn set_layout(
        &self,
        room: &str,
        layout: serde_json::Value,
    ) -> Result<serde_json::Value, MediaError>;
    /// Stamps a cue into the program.
    async fn cue(
        &self,
        room: &str,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
        at_capture_ms: Option<f64>,
    ) -> Result<CueAck, MediaError>;
    /// Answers a WHEP viewer's offer for the room's mixed program.
    async fn subscribe_program(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError>;
    /// Ends a program viewer; `false` if there was none.
    async fn unsubscribe_program(&self, room: &str, viewer: &str) -> bool;
    /// Who receives co-hosts' own tracks in `room`: one subscriber id per live subscription
    /// (a WebSocket subscriber's identity, or a WHEP session id), for the caps.
    async fn subscribers(&self, room: &str) -> Vec<String>;
    /// The last participant left a room that was not created through the API: media state
    /// kept for it (a layout set before any program ran) that nothing runs may be freed. A
    /// program in its grace period, or with outputs, is kept.
    async fn room_emptied(&self, room: &str);
    /// The ICE username fragments of a session's peer connection: (ours, the client's), from
    /// its current local and remote descriptions; `None` if there is no such session
    /// ([`PeerConnId::Program`]: the program viewer `identity`).
    async fn ice_ufrags(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
    ) -> Option<(String, String)>;
}
