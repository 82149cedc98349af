//! HTTP routes of the program's outputs: HLS for audiences (`/live/{room}/...`) and the RTMP
//! outputs API (`/api/rooms/{room}/outputs`, API key: [`Admin`]).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use signaling::http::{json_body, Admin, ApiError, HostOf};

use crate::output::hls::{
    parse_part_file_name, parse_segment_file_name, Readiness, PLAYLIST_CONTENT_TYPE,
    SEGMENT_CONTENT_TYPE,
};
use crate::output::snapshot::{SnapshotAdmit, PER_ROOM_PER_S};
use crate::sync::lock;
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
        .route("/api/rooms/{room}/snapshot.jpg", get(snapshot))
}

#[derive(Deserialize)]
struct SnapshotQuery {
    w: Option<u32>,
}

/// `GET /api/rooms/{room}/snapshot.jpg[?w=]` (API key or the room's host token): the
/// program's latest picture as JPEG; `404` without a running program or before its first
/// picture.
async fn snapshot(
    State(s): State<AppState>,
    HostOf(room): HostOf,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    let now = std::time::Instant::now();
    match lock(&s.programs.snapshots).check(&room, q.w, now) {
        SnapshotAdmit::Cached(jpeg) => return Ok(jpeg_response(jpeg)),
        SnapshotAdmit::Limited(after) => {
            let mut r = ApiError::new(
                429,
                "rate_limited",
                format!("room `{room}`: at most {PER_ROOM_PER_S} snapshots a second"),
            )
            .into_response();
            if let Ok(v) = header::HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(r);
        }
        SnapshotAdmit::Encode => {}
    }
    let Some(frame) = s.programs.picture(&room).await else {
        return Err(ApiError::new(
            404,
            "no_program",
            format!("room `{room}` has no program picture yet"),
        ));
    };
    let jpeg = tokio::task::spawn_blocking(move || mixer::jpeg::jpeg(&frame, q.w))
        .await
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let jpeg = Bytes::from(jpeg);
    lock(&s.programs.snapshots).put(&room, q.w, now, jpeg.clone());
    Ok(jpeg_response(jpeg))
}

fn jpeg_response(jpeg: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response()
}

async fn hls_file(
    State(s): State<AppState>,
    Path((room, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
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
        let (msn, part) = match blocking_request(query.as_deref()) {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        };
        if let Some(msn) = msn {
            // Blocking playlist reload: answer once the asked part (or segment) is out.
            let mut changed = store.changed();
            let deadline = tokio::time::Instant::now() + store.blocking_timeout();
            loop {
                match store.readiness(msn, part) {
                    Readiness::Ready => break,
                    Readiness::TooFar => {
                        return ApiError::new(
                            400,
                            "bad_request",
                            format!("_HLS_msn={msn} is more than two segments ahead"),
                        )
                        .into_response()
                    }
                    Readiness::Wait => {}
                }
                match tokio::time::timeout_at(deadline, changed.changed()).await {
                    Ok(Ok(())) => {}
                    // Timed out, or the stream's store is gone.
                    _ => {
                        return ApiError::new(
                            503,
                            "not_yet",
                            format!("segment {msn} part {part:?} did not come out in time"),
                        )
                        .into_response()
                    }
                }
            }
        }
        return match store.playlist() {
            Some(p) => (
                [
                    (header::CONTENT_TYPE, PLAYLIST_CONTENT_TYPE),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                ],
                p,
            )
                .into_response(),
            None => not_found(),
        };
    }
    if let Some((n, p)) = parse_part_file_name(&file) {
        // The hinted next part: wait for it (a preload hint request), a little longer
        // than a part takes.
        let mut changed = store.changed();
        let deadline = tokio::time::Instant::now() + store.part_target() * 3;
        loop {
            if let Some(b) = store.part(n, p) {
                return media(b);
            }
            if !store.part_is_next(n, p) {
                return not_found();
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return not_found(),
            }
        }
    }
    match parse_segment_file_name(&file).and_then(|n| store.segment(n)) {
        Some(b) => media(b),
        None => not_found(),
    }
}

fn media(b: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, SEGMENT_CONTENT_TYPE),
            (header::CACHE_CONTROL, "max-age=60"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        b,
    )
        .into_response()
}

/// `_HLS_msn` and `_HLS_part` of a playlist request (other parameters are ignored);
/// `_HLS_part` without `_HLS_msn`, or one that is not a number, is a `400`.
fn blocking_request(query: Option<&str>) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let (mut msn, mut part) = (None, None);
    for (k, v) in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
    {
        let slot = match k {
            "_HLS_msn" => &mut msn,
            "_HLS_part" => &mut part,
            _ => continue,
        };
        *slot =
            Some(v.parse::<u64>().map_err(|_| {
                ApiError::new(400, "bad_request", format!("`{k}` must be a number"))
            })?);
    }
    if part.is_some() && msn.is_none() {
        return Err(ApiError::new(
            400,
            "bad_request",
            "`_HLS_part` needs `_HLS_msn`",
        ));
    }
    Ok((msn, part))
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
