//! The WebSocket signaling protocol: every message a client sends ([`ClientMessage`]) and every
//! message the server sends ([`ServerMessage`]). JSON objects tagged by a `type` field in
//! `snake_case`; `docs/protocol.md` documents each one with examples.

use serde::{Deserialize, Serialize};

use crate::auth::Role;

/// Largest WebSocket text message accepted from a client, in bytes. SDP offers with several
/// codecs are a few KiB; 64 KiB leaves room and bounds what one client can make us parse.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Which media kind a mute applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Microphone.
    Audio,
    /// Camera.
    Video,
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a connection: enter the room named in the token.
    Join {
        /// Display name; defaults to the token's `name`, then the identity.
        #[serde(default)]
        name: Option<String>,
    },
    /// SDP offer for the publishing peer connection (sendonly audio + video).
    Publish {
        /// The SDP offer.
        sdp: String,
    },
    /// Stop publishing (the peer connection is closed; the others are told).
    Unpublish,
    /// SDP offer (recvonly) to receive the tracks of the co-host `identity`.
    Subscribe {
        /// Whose tracks.
        identity: String,
        /// The SDP offer.
        sdp: String,
    },
    /// Stop receiving `identity`'s tracks.
    Unsubscribe {
        /// Whose tracks.
        identity: String,
    },
    /// Trickle ICE: a candidate of the client for one of its peer connections.
    Candidate {
        /// `"publish"` or `"subscribe:<identity>"`, as in the server's `answer`.
        pc: String,
        /// The candidate as `RTCIceCandidateInit` JSON (`candidate`, `sdpMid`, `sdpMLineIndex`).
        candidate: serde_json::Value,
    },
    /// A viewer or guest asks the host to go on air.
    RequestCohost,
    /// Withdraw a pending request.
    CancelRequest,
    /// Host: accept `identity`'s request; it goes on air.
    AcceptRequest {
        /// Who asked.
        identity: String,
    },
    /// Host: refuse `identity`'s request.
    RefuseRequest {
        /// Who asked.
        identity: String,
        /// Optional reason shown to the requester.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Host: invite `identity` (a guest or viewer in the room) on air.
    Invite {
        /// Who is invited.
        identity: String,
    },
    /// Answer to an invitation.
    AcceptInvite,
    /// Answer to an invitation.
    DeclineInvite,
    /// Host: take `identity` off air (its publication stops; it stays in the room).
    Remove {
        /// Who.
        identity: String,
    },
    /// Host: mute or unmute a co-host's audio or video for everyone (enforced by the server).
    Mute {
        /// Who.
        identity: String,
        /// Which kind.
        kind: MediaKind,
        /// `true` to mute, `false` to unmute.
        muted: bool,
    },
    /// Host: change the program layout (same body as `PUT /api/rooms/{room}/layout`).
    SetLayout {
        /// `{"template": ...}` or `{"regions": [...]}`.
        layout: serde_json::Value,
    },
    /// Host: send an app cue (same as `POST /api/rooms/{room}/cues`).
    Cue {
        /// Idempotency id.
        id: String,
        /// Any JSON.
        data: serde_json::Value,
        /// How many frames carry it (default 3).
        #[serde(default)]
        repeat: Option<u32>,
        /// The host's capture clock when pressed (ms, `performance.timeOrigin + now()`).
        #[serde(default)]
        at_capture_ms: Option<f64>,
    },
    /// Leave the room (same as closing the socket).
    Leave,
    /// Keep-alive; answered by `pong` with the same `ts`.
    Ping {
        /// Echoed back.
        #[serde(default)]
        ts: Option<f64>,
    },
}

/// What the server tells clients about a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Unique within the room.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role in the room (a viewer accepted on air becomes a guest).
    pub role: Role,
    /// Allowed to publish now.
    pub on_air: bool,
    /// Has live tracks that others can subscribe to.
    pub publishing: bool,
    /// Audio muted by the host.
    pub audio_muted: bool,
    /// Video muted by the host.
    pub video_muted: bool,
    /// The tracks it publishes (empty while it publishes nothing).
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
}

/// One published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Audio or video.
    pub kind: MediaKind,
    /// Codec MIME type as negotiated (`video/H264`, `audio/opus`).
    pub codec: String,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`.
    Joined {
        /// Room name.
        room: String,
        /// You.
        you: ParticipantInfo,
        /// Everyone else present.
        participants: Vec<ParticipantInfo>,
        /// STUN/TURN servers for your peer connections (`RTCIceServer`s, TURN credentials
        /// minted for you); absent when none are configured.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<crate::ice::IceServer>,
    },
    /// Someone entered.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone's role, on-air, publishing or mute state changed (also sent about yourself).
    ParticipantUpdated {
        /// New state.
        participant: ParticipantInfo,
    },
    /// A participant's track is live: it can be subscribed to.
    TrackPublished {
        /// Publisher.
        identity: String,
        /// The track.
        track: TrackInfo,
    },
    /// A participant's track ended.
    TrackUnpublished {
        /// Publisher.
        identity: String,
        /// Its kind.
        kind: MediaKind,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        identity: String,
    },
    /// SDP answer for one of your peer connections.
    Answer {
        /// `"publish"` or `"subscribe:<identity>"`.
        pc: String,
        /// The SDP answer, with the server's candidates.
        sdp: String,
    },
    /// Host only: someone asks to go on air.
    CohostRequest {
        /// Who.
        identity: String,
        /// Their name.
        name: String,
    },
    /// Host only: a pending request was withdrawn (or its requester left).
    CohostRequestCancelled {
        /// Who.
        identity: String,
    },
    /// Your request was refused.
    CohostRefused {
        /// Host's reason, if any.
        reason: Option<String>,
    },
    /// You were invited on air by the host.
    Invited {
        /// The host's identity.
        by: String,
    },
    /// Host only: an invitation was answered.
    InviteAnswered {
        /// Who was invited.
        identity: String,
        /// Accepted or declined.
        accepted: bool,
    },
    /// You are now on air: publish.
    OnAir,
    /// You were taken off air by the host: your publication was stopped.
    Removed,
    /// The program layout changed.
    LayoutChanged {
        /// The layout as set.
        layout: serde_json::Value,
    },
    /// A cue was accepted.
    CueAccepted {
        /// Its id.
        id: String,
        /// Program time it is stamped at.
        pts_ms: u64,
    },
    /// Something you sent was refused.
    Error {
        /// Machine-readable code (see docs/protocol.md).
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// Answer to `ping`.
    Pong {
        /// Echo of `ping.ts`.
        ts: Option<f64>,
    },
}

impl ServerMessage {
    /// Builds an `error` message.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Longest piece of client input echoed back in an error message, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// `s` cut to at most `max` characters (an ellipsis marks the cut), so an error reply never
/// carries a client's oversized string back to it.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Parses one client text message, classifying failures for a precise `error` reply.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, crate::SignalingError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(crate::SignalingError::TooLarge(text.len()));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| crate::SignalingError::BadJson(clip(&e.to_string(), 4 * MAX_ECHO_CHARS)))?;
    let ty = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| crate::SignalingError::BadMessage("missing string field `type`".into()))?
        .to_owned();
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("unknown variant") {
            crate::SignalingError::UnknownType(clip(&ty, MAX_ECHO_CHARS))
        } else {
            // serde's messages quote the offending value: cut them too.
            crate::SignalingError::BadMessage(clip(&msg, 4 * MAX_ECHO_CHARS))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_characters_not_bytes() {
        assert_eq!(clip("short", 64), "short");
        assert_eq!(clip("主播主播", 2), "主播…");
        assert_eq!(clip(&"x".repeat(100), 3), "xxx…");
    }

    #[test]
    fn an_oversized_unknown_type_is_not_echoed_whole() {
        let long = "t".repeat(60_000);
        let e = parse_client_message(&serde_json::json!({ "type": long }).to_string())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("unknown message type"), "{e}");
        assert!(e.chars().count() < MAX_ECHO_CHARS + 40, "{}", e.len());
    }
}
