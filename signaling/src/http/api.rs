//! The REST API: tokens, rooms, layout, cues.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::auth::{valid_display_name, valid_identity, valid_name, Claims, Role, MAX_NAME_CHARS};

use super::*;
use crate::hub::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
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

pub(crate) async fn mint_token(
    State(s): State<Arc<Signaling>>,
    _: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
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
pub(crate) struct CreateRoom {
    name: String,
    #[serde(default)]
    mix: Option<serde_json::Value>,
}

pub(crate) async fn create_room(
    State(s): State<Arc<Signaling>>,
    _: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateRoom = json_body(&body)?;
    if !valid_name(&req.name) {
        return Err(ApiError::new(
            400,
            "bad_room",
            "name: 1-64 of [A-Za-z0-9_.-]",
        ));
    }
    s.create_room(&req.name, req.mix).await?;
    let info = s.room_info(&req.name).await;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub(crate) async fn list_rooms(
    State(s): State<Arc<Signaling>>,
    _: Admin,
) -> Json<serde_json::Value> {
    let mut rooms = Vec::new();
    for n in s.room_names() {
        rooms.push(s.room_info(&n).await);
    }
    Json(serde_json::json!({ "rooms": rooms }))
}

pub(crate) async fn get_room(
    State(s): State<Arc<Signaling>>,
    HostOf(room): HostOf,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !s.room_exists(&room) {
        return Err(HubError::UnknownRoom(room).into());
    }
    Ok(Json(s.room_info(&room).await))
}

pub(crate) async fn delete_room(
    State(s): State<Arc<Signaling>>,
    _: Admin,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.delete_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn put_layout(
    State(s): State<Arc<Signaling>>,
    HostOf(room): HostOf,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let layout: serde_json::Value = json_body(&body)?;
    let applied = s.set_layout(&room, layout).await?;
    Ok(Json(serde_json::json!({ "layout": applied })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CueRequest {
    id: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    repeat: Option<u32>,
    #[serde(default)]
    at_capture_ms: Option<f64>,
}

pub(crate) async fn post_cue(
    State(s): State<Arc<Signaling>>,
    HostOf(room): HostOf,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CueRequest = json_body(&body)?;
    if req.id.is_empty() || req.id.len() > 64 {
        return Err(ApiError::new(400, "bad_cue", "id: 1-64 bytes"));
    }
    let repeat = req.repeat.unwrap_or(3).clamp(1, 300);
    let ack = s
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
