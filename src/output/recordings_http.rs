//! HTTP side of the program recordings: `POST/GET /api/rooms/{room}/recordings` (API key or
//! host token), `GET/DELETE /api/rooms/{room}/recordings/{id}`, and the file itself at
//! `GET /api/rooms/{room}/recordings/{id}.mp4` (API key), with range requests so players
//! seek. A file still being written is served as far as it is written when asked.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use signaling::http::{json_body, ApiError, HostOf};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::recording::{file_on_disk, on_disk, RecordingError};
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rooms/{room}/recordings", post(start).get(list))
        // `{id}` (JSON, host) and `{id}.mp4` (the file, API key): matchit has no suffixes
        // after a parameter.
        .route(
            "/api/rooms/{room}/recordings/{file}",
            get(get_one).delete(stop),
        )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRecording {
    #[serde(default)]
    format: Option<String>,
}

fn unknown_room(room: &str) -> ApiError {
    ApiError::new(404, "unknown_room", format!("no room `{room}`"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no recording `{id}`"))
}

async fn start(
    State(s): State<AppState>,
    HostOf(room): HostOf,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: StartRecording = if body.iter().all(u8::is_ascii_whitespace) {
        StartRecording::default()
    } else {
        json_body(&body)?
    };
    if let Some(f) = req.format.as_deref().filter(|f| *f != "mp4") {
        return Err(ApiError::new(
            400,
            "bad_format",
            format!("recording format `{f}` is not supported (only `mp4`)"),
        ));
    }
    if !s.signaling.keep_room(&room) {
        return Err(unknown_room(&room));
    }
    match s.programs.start_recording(&room) {
        None => Err(unknown_room(&room)),
        Some(Err(e @ RecordingError::TooMany(_))) => {
            Err(ApiError::new(409, "too_many_recordings", e.to_string()))
        }
        Some(Err(e)) => Err(ApiError::new(404, "not_found", e.to_string())),
        Some(Ok(info)) => Ok((StatusCode::CREATED, Json(info)).into_response()),
    }
}

async fn list(
    State(s): State<AppState>,
    HostOf(room): HostOf,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = match s.programs.outputs(&room, false) {
        Some(o) => o.recordings().list(),
        // Files of earlier runs (a room not created again since).
        None => on_disk(s.programs.recordings_config(), &room),
    };
    if list.is_empty() && !s.signaling.room_exists(&room) {
        return Err(unknown_room(&room));
    }
    Ok(Json(serde_json::json!({ "recordings": list })))
}

async fn get_one(
    State(s): State<AppState>,
    Path((room, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(id) = file.strip_suffix(".mp4") else {
        s.signaling.require_host(&headers, &room)?;
        let found = match s.programs.outputs(&room, false) {
            Some(o) => o.recordings().get(&file),
            None => on_disk(s.programs.recordings_config(), &room)
                .into_iter()
                .find(|r| r.id == file),
        };
        return found
            .map(|i| Json(i).into_response())
            .ok_or_else(|| not_found(&file));
    };
    s.signaling.require_admin(&headers)?;
    let path =
        file_on_disk(s.programs.recordings_config(), &room, id).ok_or_else(|| not_found(id))?;
    serve_file(&path, &headers).await
}

async fn stop(
    State(s): State<AppState>,
    HostOf(room): HostOf,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let outputs = s
        .programs
        .outputs(&room, false)
        .ok_or_else(|| not_found(&id))?;
    let stopping = outputs.recordings().stop(&id).map_err(|_| not_found(&id))?;
    // Answer once the file is complete (its last fragment written).
    let _ = tokio::task::spawn_blocking(move || stopping.wait()).await;
    let info = outputs
        .recordings()
        .get(&id)
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(serde_json::json!(info)))
}

/// A `Range` header that asks for nothing inside the file (`416`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range not satisfiable")]
pub struct Unsatisfiable;

/// A byte range of a `len`-byte file: `Ok(None)` for the whole file, [`Unsatisfiable`] when
/// it asks for nothing inside it (416). One range only (`bytes=a-b`, `bytes=a-`, `bytes=-n`); anything else
/// (several ranges, other units, malformed) is answered with the whole file, as RFC 9110
/// allows.
pub fn parse_range(value: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(Unsatisfiable);
    }
    Ok(Some(range))
}

/// The file as far as it is written now, whole or the asked range.
async fn serve_file(path: &std::path::Path, headers: &HeaderMap) -> Result<Response, ApiError> {
    let internal = |e: std::io::Error| ApiError::new(500, "internal", e.to_string());
    let mut f = tokio::fs::File::open(path).await.map_err(internal)?;
    let len = f.metadata().await.map_err(internal)?.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, len) {
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Err(Unsatisfiable) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    f.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)));
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, count)
        .header(header::CACHE_CONTROL, "no-store");
    if status == StatusCode::PARTIAL_CONTENT {
        r = r.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    r.body(body)
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{parse_range, Unsatisfiable};

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Ok(Some((0, 99))));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=-0"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-y"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-"), 0), Err(Unsatisfiable));
    }
}
