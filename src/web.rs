//! The demo pages under `web-demo/`, embedded in the binary so `cargo run` needs nothing else.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web-demo/index.html"),
    ),
    (
        "host.html",
        "text/html; charset=utf-8",
        include_str!("../web-demo/host.html"),
    ),
    (
        "guest.html",
        "text/html; charset=utf-8",
        include_str!("../web-demo/guest.html"),
    ),
    (
        "rooms.html",
        "text/html; charset=utf-8",
        include_str!("../web-demo/rooms.html"),
    ),
    (
        "cohost.js",
        "text/javascript; charset=utf-8",
        include_str!("../web-demo/cohost.js"),
    ),
    (
        "audience.html",
        "text/html; charset=utf-8",
        include_str!("../web-demo/audience.html"),
    ),
    (
        "audience.js",
        "text/javascript; charset=utf-8",
        include_str!("../web-demo/audience.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web-demo/style.css"),
    ),
];

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => ([(header::CONTENT_TYPE, *ct)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// The audience page's player libraries, installed by `npm ci --prefix web-demo` (never
/// committed): (served name, path in `web-demo/`, package).
const VENDOR: &[(&str, &str, &str)] = &[
    (
        "hls.min.js",
        "node_modules/hls.js/dist/hls.min.js",
        "hls.js",
    ),
    (
        "mpegts.js",
        "node_modules/mpegts.js/dist/mpegts.js",
        "mpegts.js",
    ),
];

/// `/vendor/{file}`: a player library read from disk per request, relative to the crate (a
/// `cargo run` from anywhere), then to the current directory (a binary copied elsewhere, run
/// from a checkout); 404 with the command to run when it is absent.
async fn vendor(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let Some((_, rel, package)) = VENDOR.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let rel = format!("web-demo/{rel}");
    let candidates = [
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel),
        std::path::PathBuf::from(&rel),
    ];
    for path in &candidates {
        if let Ok(body) = tokio::fs::read(path).await {
            return (
                [
                    (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "{package} is not installed: run `npm ci --prefix web-demo` in the cohost checkout \
             (looked for {})\n",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
        .into_response()
}

/// `/`, the demo files and `/vendor/hls.min.js`, `/vendor/mpegts.js`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route("/vendor/{file}", get(vendor))
        .route(
            "/{file}",
            get(|axum::extract::Path(f): axum::extract::Path<String>| async move { file(&f) }),
        )
}
