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
        "cohost.js",
        "text/javascript; charset=utf-8",
        include_str!("../web-demo/cohost.js"),
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

/// `/` and the demo files.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/{file}",
            get(|axum::extract::Path(f): axum::extract::Path<String>| async move { file(&f) }),
        )
}
