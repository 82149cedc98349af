//! The studio's image library and fonts: what the programs' overlays, background images and
//! tile labels are drawn with.
//!
//! * `PUT /api/images/{name}` (API key): a PNG or JPEG of at most [`MAX_IMAGE_BYTES`] and
//!   4096x4096 pixels, decoded once here ([`mixer::decor::decode_image`]); every running
//!   program gets it at once (an overlay naming it shows from the next frame), programs that
//!   start later get it at their start. `400` for a file that is not such an image, `413` past
//!   the size, `507` when the library is full.
//! * `GET /api/images` lists them, `DELETE /api/images/{name}` removes one (its overlays
//!   disappear).
//! * In cluster mode the files are kept in Redis too, and every node's library follows the
//!   fleet's at its heartbeat (2 s); see `cluster::store`.
//! * [`load_fonts`]: the label fonts, read once at start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use mixer::decor::Image;
use serde::Serialize;
use signaling::http::{Admin, ApiError};
use tracing::{info, warn};

use crate::sync::lock;
use crate::AppState;

/// Largest image file accepted.
pub const MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most images in the library.
pub const MAX_IMAGES: usize = 64;
/// Most decoded pixels in the library (RGBA, 4 bytes each): 128 Mpx, 512 MiB.
pub const MAX_LIBRARY_PIXELS: u64 = 128 * 1024 * 1024;

/// What the API shows of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// Its name (`mix.overlays[].image`, `mix.background_image`).
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size of the uploaded file.
    pub bytes: usize,
}

/// Why an image was not stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LibraryError {
    /// The library holds [`MAX_IMAGES`] images or [`MAX_LIBRARY_PIXELS`] pixels already.
    #[error("the image library is full ({0}); delete an image first")]
    Full(String),
}

/// The images programs draw, by name.
#[derive(Debug, Default)]
pub struct ImageLibrary {
    images: Mutex<BTreeMap<String, (Image, usize)>>,
}

impl ImageLibrary {
    /// Stores (or replaces) `name`.
    pub fn put(&self, name: &str, image: Image, bytes: usize) -> Result<ImageInfo, LibraryError> {
        let mut g = lock(&self.images);
        let others = g.iter().filter(|(n, _)| n.as_str() != name);
        let (count, pixels) = others.fold((0usize, 0u64), |(c, p), (_, (i, _))| {
            (c + 1, p + u64::from(i.width()) * u64::from(i.height()))
        });
        if count >= MAX_IMAGES {
            return Err(LibraryError::Full(format!("{MAX_IMAGES} images")));
        }
        if pixels + u64::from(image.width()) * u64::from(image.height()) > MAX_LIBRARY_PIXELS {
            return Err(LibraryError::Full(format!(
                "{} Mpx of {} Mpx",
                pixels / (1024 * 1024),
                MAX_LIBRARY_PIXELS / (1024 * 1024)
            )));
        }
        let info = ImageInfo {
            name: name.to_owned(),
            width: image.width(),
            height: image.height(),
            bytes,
        };
        g.insert(name.to_owned(), (image, bytes));
        Ok(info)
    }

    /// Removes `name`; false if there is none.
    pub fn remove(&self, name: &str) -> bool {
        lock(&self.images).remove(name).is_some()
    }

    /// Every image, by name.
    pub fn list(&self) -> Vec<ImageInfo> {
        lock(&self.images)
            .iter()
            .map(|(name, (i, bytes))| ImageInfo {
                name: name.clone(),
                width: i.width(),
                height: i.height(),
                bytes: *bytes,
            })
            .collect()
    }

    /// Every image (cheap clones: the pixels are shared), for a program that starts.
    pub fn all(&self) -> Vec<(String, Image)> {
        lock(&self.images)
            .iter()
            .map(|(n, (i, _))| (n.clone(), i.clone()))
            .collect()
    }
}

/// The label fonts from `paths`, in fallback order; files that cannot be read are skipped
/// with a warning. `None` (labels are not drawn) when none can be loaded.
pub fn load_fonts(paths: &[std::path::PathBuf]) -> Option<Arc<mixer::text::Fonts>> {
    let data: Vec<Vec<u8>> = paths
        .iter()
        .filter_map(|p| match std::fs::read(p) {
            Ok(d) => Some(d),
            Err(e) => {
                warn!(path = %p.display(), error = %e, "label font not loaded");
                None
            }
        })
        .collect();
    if data.is_empty() {
        warn!("no label font could be loaded: mix.labels draws nothing (install fonts-dejavu-core and fonts-wqy-microhei, or pass --label-fonts)");
        return None;
    }
    match mixer::text::Fonts::from_bytes(data) {
        Ok(f) => {
            info!(fonts = ?paths, "label fonts loaded");
            Some(Arc::new(f))
        }
        Err(e) => {
            warn!(error = %e, "label fonts not usable: mix.labels draws nothing");
            None
        }
    }
}

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/images", get(list))
        .route("/api/images/{name}", put(upload).delete(remove))
}

async fn list(State(s): State<AppState>, _: Admin) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "images": s.programs.images().list() }))
}

async fn upload(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    if !signaling::auth::valid_name(&name) {
        return Err(ApiError::new(
            400,
            "bad_name",
            "an image name is 1 to 64 of [A-Za-z0-9_.-]",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_IMAGE_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                413,
                "too_large",
                format!("an image file is at most {MAX_IMAGE_BYTES} bytes"),
            )
        })?;
    let len = bytes.len();
    let file = bytes.clone();
    let image = tokio::task::spawn_blocking(move || mixer::decor::decode_image(&file))
        .await
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(400, "bad_image", e.to_string()))?;
    let replaced = s.programs.images().list().iter().any(|i| i.name == name);
    let info = s
        .programs
        .put_image(&name, image, len)
        .map_err(|e| ApiError::new(507, "library_full", e.to_string()))?;
    // The fleet's other nodes take it at their next heartbeat.
    s.cluster
        .share_image(&name, Some(&bytes))
        .await
        .map_err(|e| ApiError::new(503, "cluster_unavailable", e.to_string()))?;
    info!(image = %name, width = info.width, height = info.height, "image stored");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

async fn remove(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.programs.remove_image(&name) {
        s.cluster
            .share_image(&name, None)
            .await
            .map_err(|e| ApiError::new(503, "cluster_unavailable", e.to_string()))?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            404,
            "not_found",
            format!("no image `{name}`"),
        ))
    }
}

/// A change of the studio decor in a `PUT /api/rooms/{room}/layout` body: each field given
/// replaces the current one (`"background_image": null` removes it), the others stay.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecorChange {
    /// New overlays (all of them; `[]` removes every one).
    #[serde(default)]
    pub overlays: Option<Vec<mixer::decor::Overlay>>,
    /// New background image: `Some(None)` (JSON `null`) removes it.
    #[serde(default, with = "double_option")]
    pub background_image: Option<Option<String>>,
    /// Labels on or off.
    #[serde(default)]
    pub labels: Option<bool>,
}

impl DecorChange {
    /// `current` with this change applied.
    pub fn apply(self, mut current: mixer::decor::Decor) -> mixer::decor::Decor {
        if let Some(o) = self.overlays {
            current.overlays = o;
        }
        if let Some(b) = self.background_image {
            current.background_image = b;
        }
        if let Some(l) = self.labels {
            current.labels = l;
        }
        current
    }
}

/// `null` as `Some(None)`, absent as `None`.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// Decor keys of a layout body.
const DECOR_KEYS: [&str; 3] = ["overlays", "background_image", "labels"];

/// A `PUT /api/rooms/{room}/layout` body: the layout (template or regions, or a bare template
/// name), the decor change beside it, either may be absent (not both).
pub fn split_layout(
    body: serde_json::Value,
) -> Result<(Option<mixer::Layout>, Option<DecorChange>), String> {
    let serde_json::Value::Object(mut o) = body else {
        return serde_json::from_value(body)
            .map(|l| (Some(l), None))
            .map_err(|e| e.to_string());
    };
    let mut decor = serde_json::Map::new();
    for k in DECOR_KEYS {
        if let Some(v) = o.remove(k) {
            decor.insert(k.to_owned(), v);
        }
    }
    let decor = if decor.is_empty() {
        None
    } else {
        Some(
            serde_json::from_value::<DecorChange>(serde_json::Value::Object(decor))
                .map_err(|e| e.to_string())?,
        )
    };
    let layout = if o.is_empty() {
        None
    } else {
        Some(serde_json::from_value(serde_json::Value::Object(o)).map_err(|e| e.to_string())?)
    };
    if layout.is_none() && decor.is_none() {
        return Err("give a template, regions, overlays, background_image or labels".into());
    }
    Ok((layout, decor))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_bodies_split_into_layout_and_decor() {
        let (l, d) = split_layout(json!({"template": "pip"})).unwrap();
        assert_eq!(l, Some(mixer::Layout::template(mixer::Template::Pip)));
        assert_eq!(d, None);
        let (l, d) = split_layout(json!("grid")).unwrap();
        assert!(l.is_some() && d.is_none());
        let (l, d) = split_layout(json!({
            "template": "grid",
            "overlays": [{"image": "logo", "x": 10, "y": 20, "w": 100, "h": 50, "opacity": 0.5}],
            "labels": true
        }))
        .unwrap();
        assert!(l.is_some());
        let d = d.unwrap();
        assert_eq!(d.overlays.as_ref().unwrap()[0].image, "logo");
        assert_eq!(d.labels, Some(true));
        assert_eq!(d.background_image, None);
        // Decor alone keeps the layout; null removes the background image.
        let (l, d) = split_layout(json!({"background_image": null})).unwrap();
        assert!(l.is_none());
        let applied = d.unwrap().apply(mixer::decor::Decor {
            background_image: Some("studio".into()),
            labels: true,
            ..Default::default()
        });
        assert_eq!(applied.background_image, None);
        assert!(applied.labels, "unchanged");
        // Errors name the problem.
        assert!(split_layout(json!({})).is_err());
        assert!(split_layout(json!({"overlays": [{"image": "x"}]})).is_err());
        assert!(split_layout(json!({"labels": "yes"})).is_err());
        assert!(split_layout(json!({"template": "nope"})).is_err());
    }
}
