//! Who is calling, as axum extractors: the holder of the API key ([`Admin`]), the API key or
//! a host of the path's room ([`HostOf`]), a participant of the path's room ([`Member`]). A
//! handler that names one in its arguments runs only for such a caller; the others get the
//! JSON error (`401`, `403`).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::auth::Claims;

use super::error::{bearer, ApiError};
use crate::hub::{now_s, Signaling};

/// The `{room}` of a route's path (other parameters ignored).
#[derive(Deserialize)]
struct RoomParam {
    room: String,
}

async fn path_room<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    Path::<RoomParam>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p.room)
        .map_err(|e| ApiError::new(400, "bad_request", e.body_text()))
}

/// The caller holds the API key.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    Arc<Signaling>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let s = Arc::<Signaling>::from_ref(state);
        s.require_admin(&parts.headers).map(|()| Admin)
    }
}

/// The caller holds the API key or a host token of the path's `{room}`, which it carries.
#[derive(Debug, Clone)]
pub struct HostOf(pub String);

impl<S> FromRequestParts<S> for HostOf
where
    Arc<Signaling>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let s = Arc::<Signaling>::from_ref(state);
        let room = path_room(parts, state).await?;
        s.require_host(&parts.headers, &room)?;
        Ok(HostOf(room))
    }
}

/// The caller holds a valid participant token of the path's `{room}`: its claims.
#[derive(Debug, Clone)]
pub struct Member(pub Claims);

impl<S> FromRequestParts<S> for Member
where
    Arc<Signaling>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let s = Arc::<Signaling>::from_ref(state);
        let room = path_room(parts, state).await?;
        let claims = s
            .auth
            .verify_for_room(bearer(&parts.headers)?, &room, now_s())?;
        Ok(Member(claims))
    }
}
