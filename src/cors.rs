//! CORS for pages on other origins (CONTRACT "clients in the field"): a web app on its own
//! domain calls WHIP, WHEP, `/api/...` and `/live/...` here.
//!
//! `--cors-origins` lists the allowed origins (or `*`); the default is `*` in development mode
//! and none in production. An allowed origin gets `Access-Control-Allow-Origin` (its own
//! origin echoed, with `Vary: Origin`) and `Access-Control-Expose-Headers: Location, Link,
//! ETag, Accept-Patch` on every answer; its preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) are answered here with `204`, the route's methods and
//! `Authorization, Content-Type, If-Match`. Other origins get no CORS headers at all (the
//! browser blocks them), and routes outside those four never carry any.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which origins may call cohost from a browser.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// None: no CORS headers (production default).
    #[default]
    None,
    /// Any origin (`*`; development default).
    Any,
    /// These origins exactly (`https://app.example.com`, scheme and host and port).
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses `--cors-origins`: `*`, or comma-separated origins; empty = none.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if s == "*" {
            return Ok(CorsOrigins::Any);
        }
        let mut list = Vec::new();
        for o in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let o = o.trim_end_matches('/');
            // Browsers send origins in ASCII (IDNs as punycode).
            let ok = o.split_once("://").is_some_and(|(scheme, host)| {
                (scheme == "http" || scheme == "https") && !host.is_empty() && !host.contains('/')
            }) && o.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(format!(
                    "`{o}` is not an origin (scheme://host[:port] in ASCII, no path)"
                ));
            }
            list.push(o.to_ascii_lowercase());
        }
        Ok(CorsOrigins::List(list))
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::None => false,
            CorsOrigins::Any => true,
            CorsOrigins::List(l) => l.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Headers a page may read from cohost's answers.
pub const EXPOSE_HEADERS: &str = "Location, Link, ETag, Accept-Patch";
/// Request headers a page may send.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match";

/// The methods a route answers, for preflights; `None` outside the CORS routes.
fn route_methods(path: &str) -> Option<&'static str> {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "whip" | "whep" => Some("POST, PATCH, DELETE, OPTIONS"),
        "api" => Some("GET, POST, PUT, DELETE, OPTIONS"),
        "live" => Some("GET, OPTIONS"),
        _ => None,
    }
}

/// The CORS middleware (see the module docs).
pub async fn cors(State(origins): State<Arc<CorsOrigins>>, req: Request, next: Next) -> Response {
    let Some(methods) = route_methods(req.uri().path()) else {
        return next.run(req).await;
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| origins.allows(o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse() {
        assert_eq!(CorsOrigins::parse("").ok(), Some(CorsOrigins::None));
        assert_eq!(CorsOrigins::parse(" * ").ok(), Some(CorsOrigins::Any));
        let l = CorsOrigins::parse("https://App.example.com, http://127.0.0.1:9000/").unwrap();
        assert!(l.allows("https://app.example.com"));
        assert!(l.allows("http://127.0.0.1:9000"));
        assert!(!l.allows("https://evil.example.com"));
        assert!(!l.allows("http://127.0.0.1:9001"));
        assert!(CorsOrigins::parse("app.example.com").is_err());
        assert!(CorsOrigins::parse("https://a.example.com/path").is_err());
        assert!(CorsOrigins::parse("http://é.example").is_err());
    }

    #[test]
    fn only_the_media_and_api_routes_are_cross_origin() {
        assert!(route_methods("/whip/r").is_some());
        assert!(route_methods("/whep/r/x/y").is_some());
        assert_eq!(route_methods("/live/r/index.m3u8"), Some("GET, OPTIONS"));
        assert!(route_methods("/api/tokens").is_some());
        assert!(route_methods("/ws").is_none());
        assert!(route_methods("/metrics").is_none());
        assert!(route_methods("/host.html").is_none());
    }
}
