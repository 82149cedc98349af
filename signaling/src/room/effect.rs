//! What a room decides and why it refuses: connections ([`Via`]), [`Effect`]s and
//! [`MediaCommand`]s for the hub to carry out, [`RoomError`], and the seats ([`RoomLimits`]).

use crate::protocol::{MediaKind, ServerMessage};

/// How a participant is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A signaling WebSocket, identified by a connection id unique in the process.
    Ws(u64),
    /// A WHIP session (no signaling channel: messages to it are dropped).
    Whip,
}

/// Something the room asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message to one participant (dropped if it has no signaling channel).
    Send {
        /// Recipient identity.
        to: String,
        /// The message.
        msg: ServerMessage,
    },
    /// Send a message to one signaling connection, whoever holds the identity now (the
    /// session being replaced gets its `replaced` this way, not its successor).
    SendConn {
        /// Connection id.
        conn: u64,
        /// The message.
        msg: ServerMessage,
    },
    /// Close the signaling connection `conn` (a replaced or removed session).
    Close {
        /// Connection id.
        conn: u64,
    },
    /// Ask the media backend to act.
    Media(MediaCommand),
}

/// A request to the media backend, already checked against roles and state.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    /// Answer `identity`'s publishing offer.
    Publish {
        /// Publisher.
        identity: String,
        /// SDP offer.
        sdp: String,
    },
    /// Stop `identity`'s publication (and every subscription to it).
    Unpublish {
        /// Publisher.
        identity: String,
    },
    /// Answer `identity`'s offer to receive `target`'s tracks.
    Subscribe {
        /// Subscriber.
        identity: String,
        /// Publisher.
        target: String,
        /// SDP offer.
        sdp: String,
    },
    /// Close `identity`'s subscription to `target`.
    Unsubscribe {
        /// Subscriber.
        identity: String,
        /// Publisher.
        target: String,
    },
    /// Add a trickled ICE candidate to one of `identity`'s peer connections.
    Candidate {
        /// Whose.
        identity: String,
        /// `"publish"` or `"subscribe:<identity>"`.
        pc: String,
        /// Candidate JSON.
        candidate: serde_json::Value,
    },
    /// Forward or stop forwarding `identity`'s `kind` to subscribers and the mix.
    SetMuted {
        /// Whose.
        identity: String,
        /// Which.
        kind: MediaKind,
        /// Muted or not.
        muted: bool,
    },
    /// Change the program layout.
    SetLayout {
        /// Who asked (for the reply).
        identity: String,
        /// Layout JSON.
        layout: serde_json::Value,
    },
    /// Stamp a cue into the program.
    Cue {
        /// Who asked (for the reply).
        identity: String,
        /// Cue id.
        id: String,
        /// Cue data.
        data: serde_json::Value,
        /// Repeat count.
        repeat: u32,
        /// Host capture time of the press.
        at_capture_ms: Option<f64>,
    },
    /// `identity` left: drop all its peer connections.
    Leave {
        /// Who.
        identity: String,
    },
}

impl MediaCommand {
    /// The participant whose peer connections (or, for layout and cues, whose request) the
    /// command concerns: the muted co-host for `SetMuted`, else the one who asked.
    pub fn identity(&self) -> &str {
        match self {
            MediaCommand::Publish { identity, .. }
            | MediaCommand::Unpublish { identity }
            | MediaCommand::Subscribe { identity, .. }
            | MediaCommand::Unsubscribe { identity, .. }
            | MediaCommand::Candidate { identity, .. }
            | MediaCommand::SetMuted { identity, .. }
            | MediaCommand::SetLayout { identity, .. }
            | MediaCommand::Cue { identity, .. }
            | MediaCommand::Leave { identity } => identity,
        }
    }
}

/// Why the room refused something; becomes an `error` message with [`RoomError::code`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomError {
    /// Only the host may do this.
    #[error("only the host may do this")]
    NotHost,
    /// The sender is not on air.
    #[error("you are not on air")]
    NotOnAir,
    /// A viewer never publishes.
    #[error("viewers may not publish; ask the host with request_cohost")]
    ViewerCannotPublish,
    /// No such participant.
    #[error("no participant `{0}` in this room")]
    UnknownParticipant(String),
    /// The target is not publishing.
    #[error("`{0}` is not publishing")]
    NotPublishing(String),
    /// Nothing pending to answer.
    #[error("no pending {0}")]
    NothingPending(&'static str),
    /// Already on air.
    #[error("already on air")]
    AlreadyOnAir,
    /// The host cannot be removed or invited.
    #[error("not allowed on the host")]
    TargetIsHost,
    /// Subscribing to yourself.
    #[error("you cannot subscribe to yourself")]
    SelfSubscribe,
    /// `join` sent twice.
    #[error("already joined")]
    AlreadyJoined,
    /// The room's seats for this role are taken.
    #[error("room is full ({0} {1} seats taken)")]
    Full(usize, &'static str),
    /// A viewer that is not on air asked for a co-host's own tracks (viewers watch the program).
    #[error("viewers watch the program; co-hosts' own tracks are for hosts and guests")]
    ViewerCannotSubscribe,
}

impl RoomError {
    /// Machine-readable code used in `error` messages.
    pub fn code(&self) -> &'static str {
        match self {
            RoomError::NotHost => "not_host",
            RoomError::NotOnAir => "not_on_air",
            RoomError::ViewerCannotPublish => "viewer_cannot_publish",
            RoomError::UnknownParticipant(_) => "unknown_participant",
            RoomError::NotPublishing(_) => "not_publishing",
            RoomError::NothingPending(_) => "nothing_pending",
            RoomError::AlreadyOnAir => "already_on_air",
            RoomError::TargetIsHost => "target_is_host",
            RoomError::SelfSubscribe => "self_subscribe",
            RoomError::AlreadyJoined => "already_joined",
            RoomError::Full(..) => "room_full",
            RoomError::ViewerCannotSubscribe => "viewer_cannot_subscribe",
        }
    }
}

/// Seats of a room, per role: viewers never take a host's or a guest's seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Participants with a host token at once.
    pub hosts: usize,
    /// Participants with a guest token at once.
    pub guests: usize,
    /// Participants with a viewer token on signaling at once (`--max-room-viewers`).
    pub viewers: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            hosts: 4,
            guests: 32,
            viewers: 256,
        }
    }
}
