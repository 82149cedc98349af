//! Errors at the HTTP edge (JSON bodies with a code) and who is calling: bearer tokens, the API key, a host of the room.

use std::sync::atomic::Ordering;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::{AuthError, Claims, Role};
use crate::backend::MediaError;

use crate::hub::*;

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

impl From<crate::hub::HubError> for ApiError {
    fn from(e: crate::hub::HubError) -> Self {
        use crate::hub::HubError as H;
        match e {
            H::Auth(e) => e.into(),
            H::Media(e) => e.into(),
            H::Room(e) => ApiError::new(409, e.code(), e.to_string()),
            H::UnknownRoom(_) => ApiError::new(404, "unknown_room", e.to_string()),
            H::NotPublishing { .. } => ApiError::new(404, "not_publishing", e.to_string()),
            H::NoSession(_) => ApiError::new(404, "not_found", e.to_string()),
        }
    }
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        ApiError::new(e.status(), e.code(), e.to_string())
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
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
