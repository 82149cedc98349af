//! HTTP routes of the program's outputs: HLS for audiences (`/live/{room}/...`) and the RTMP
//! outputs API (`/api/rooms/{room}/outputs`, API key: [`Admin`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use signaling::http::{json_body, Admin, ApiError};

use crate::output::hls::parse_segment_file_name;
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/live/{room}/{file}", get(hls_file))
        // HTTP-FLV, `/live/{room}.flv` (matchit has no suffixes after a parameter).
        .route("/live/{room}", get(crate::output::flv_live::live_file))
        .route(
            "/api/rooms/{room}/outputs",
            post(add_output).get(list_outputs),
        )
        .route(
            "/api/rooms/{room}/outputs/{id}",
            delete(delete_output).get(get_output),
        )
}

async fn hls_file(
    State(s): State<AppState>,
    Path((room, file)): Path<(String, String)>,
) -> Response {
    let not_found = || {
        ApiError::new(
            404,
            "not_found",
            format!("no HLS `{file}` for room `{room}`"),
        )
        .into_response()
    };
    let Some(store) = s.programs.hls(&room) else {
        return not_found();
    };
    if file == "index.m3u8" {
        return match store.playlist() {
            Some(p) => (
                [
                    (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                ],
                p,
            )
                .into_response(),
            None => not_found(),
        };
    }
    match parse_segment_file_name(&file).and_then(|n| store.segment(n)) {
        Some(b) => (
            [
                (header::CONTENT_TYPE, "video/mp2t"),
                (header::CACHE_CONTROL, "max-age=60"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            b,
        )
            .into_response(),
        None => not_found(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddOutput {
    url: String,
}

async fn add_output(
    State(s): State<AppState>,
    _: Admin,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AddOutput = json_body(&body)?;
    if !s.signaling.keep_room(&room) {
        return Err(ApiError::new(
            404,
            "unknown_room",
            format!("no room `{room}`"),
        ));
    }
    let outputs = s
        .programs
        .outputs(&room, true)
        .ok_or_else(|| ApiError::new(404, "unknown_room", format!("no room `{room}`")))?;
    let info = outputs
        .add_rtmp(&req.url)
        .map_err(|e| ApiError::new(400, "bad_url", e.to_string()))?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn list_outputs(
    State(s): State<AppState>,
    _: Admin,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !s.signaling.room_exists(&room) {
        return Err(ApiError::new(
            404,
            "unknown_room",
            format!("no room `{room}`"),
        ));
    }
    let list = s
        .programs
        .outputs(&room, false)
        .map(|o| o.outputs())
        .unwrap_or_default();
    Ok(Json(serde_json::json!({ "outputs": list })))
}

async fn get_output(
    State(s): State<AppState>,
    _: Admin,
    Path((room, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.programs
        .outputs(&room, false)
        .and_then(|o| o.output(&id))
        .map(|i| Json(serde_json::json!(i)))
        .ok_or_else(|| ApiError::new(404, "not_found", format!("no output `{id}`")))
}

async fn delete_output(
    State(s): State<AppState>,
    _: Admin,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let Some(o) = s.programs.outputs(&room, false) else {
        return Err(ApiError::new(404, "not_found", format!("no output `{id}`")));
    };
    if o.remove_rtmp(&id).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(404, "not_found", format!("no output `{id}`")))
    }
}
