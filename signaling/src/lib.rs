//! cohost signaling: protocol types ([`protocol`]), the pure room state machine ([`room`]),
//! participant tokens ([`auth`]), and the thin HTTP/WebSocket/WHIP/WHEP layer ([`http`]) that
//! reaches media only through the [`backend::MediaBackend`] trait the server implements.
//!
//! This crate knows nothing of WebRTC or the mixer.

pub mod auth;
pub mod backend;
pub mod http;
pub mod hub;
pub mod ice;
pub mod protocol;
pub mod room;
pub mod trickle;

/// Errors reading a client's signaling message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalingError {
    /// Larger than [`protocol::MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the limit of {max}", max = protocol::MAX_MESSAGE_BYTES)]
    TooLarge(usize),
    /// Not JSON.
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// JSON, but an unknown `type`.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// Known type, wrong fields.
    #[error("invalid message: {0}")]
    BadMessage(String),
}

impl SignalingError {
    /// Machine-readable code used in `error` messages.
    pub fn code(&self) -> &'static str {
        match self {
            SignalingError::TooLarge(_) => "message_too_large",
            SignalingError::BadJson(_) => "bad_json",
            SignalingError::UnknownType(_) => "unknown_type",
            SignalingError::BadMessage(_) => "bad_message",
        }
    }
}
