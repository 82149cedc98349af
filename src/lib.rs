//! # cohost — co-hosting media server
//!
//! Hosts and guests talk over WebRTC through an SFU; a mixer composites them into one H.264 +
//! AAC program for the live pipeline (RTMP push, HLS, WHEP).
//!
//! Architecture (dependencies flow one way):
//! - [`signaling`] (crate): protocol types, the pure room state machine, JWT auth, and the
//!   HTTP/WebSocket/WHIP/WHEP/API handlers. It reaches media only through
//!   `signaling::backend::MediaBackend`, implemented here by [`sfu::SfuBackend`].
//! - [`mixer`] (crate): the pure, clock-free mixer core and its muxers.
//! - this crate: the only one with sockets and `webrtc`: [`rtc`] (peer connection factory),
//!   [`sfu`] (forwarding, keyframe requests), [`config`], [`metrics`], the demo pages, and
//!   [`run`], which serves everything on one listener until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

pub mod config;
pub mod conn;
pub mod cors;
pub mod depack;
pub mod forward;
pub mod keyframe;
pub mod metrics;
pub mod mix_cmd;
pub mod nack;
pub mod output;
pub mod program;
pub mod reorder;
pub mod rtc;
pub mod sender_clock;
pub mod sfu;
pub mod sync;
mod web;

pub use config::Config;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// Signaling (rooms, auth).
    pub signaling: Arc<signaling::http::Signaling>,
    /// The SFU.
    pub sfu: Arc<sfu::Sfu>,
    /// More metrics text appended to `/metrics` (the program pipeline's).
    pub extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The rooms' live programs.
    pub programs: Arc<program::Programs>,
    /// Counters of the HTTP layer (connections open, refused, timed out).
    pub http: Arc<conn::HttpStats>,
    /// `/metrics` on the main address without the API key (development mode only: its series
    /// name every room).
    pub metrics_open: bool,
    /// Origins allowed to call from browser pages.
    pub cors: Arc<cors::CorsOrigins>,
}

impl axum::extract::FromRef<AppState> for Arc<signaling::http::Signaling> {
    fn from_ref(s: &AppState) -> Self {
        s.signaling.clone()
    }
}

/// A running server's parts, for tests and embedding.
pub struct Server {
    /// The state.
    pub state: AppState,
    /// The full router.
    pub router: Router,
    /// The task handing the SFU's publishers to the programs: aborting it detaches the
    /// mixer (benchmarks of the forwarding path alone).
    pub program_feed: tokio::task::AbortHandle,
}

/// Builds the server (SFU, signaling, routes) from `config`.
pub fn build(config: &Config) -> Server {
    let (events_tx, events_rx) = signaling::http::media_events();
    let engine = Arc::new(rtc::RtcEngine::new(config.rtc.clone()));
    let (program_tx, program_rx) = tokio::sync::mpsc::unbounded_channel();
    let sfu = Arc::new(sfu::Sfu::new(engine.clone(), events_tx, program_tx));
    let programs = program::Programs::new(config.program.clone(), engine);
    let program_feed = programs.follow(program_rx);
    let backend = Arc::new(sfu::SfuBackend {
        sfu: sfu.clone(),
        program: Some(programs.clone()),
    });
    let auth = signaling::auth::Auth::new(&config.api_key, &config.api_secret);
    let sig = signaling::http::Signaling::new(auth, backend, config.signaling.clone(), events_rx);
    let state = AppState {
        signaling: sig.clone(),
        sfu,
        extra_metrics: Some({
            let p = programs.clone();
            Arc::new(move || p.render_metrics())
        }),
        programs,
        http: Arc::default(),
        metrics_open: config.dev_mode,
        cors: Arc::new(config.cors.clone()),
    };
    let router = router(state.clone());
    Server {
        state,
        router,
        program_feed,
    }
}

/// All HTTP routes: signaling (`/ws`, WHIP, WHEP, `/api`), `/metrics`, `/healthz`, demo pages.
pub fn router(state: AppState) -> Router {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .merge(output::routes::router())
        .with_state(state.clone());
    signaling::http::router(state.signaling.clone())
        .merge(app)
        .merge(web::router())
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.cors.clone(),
            cors::cors,
        ))
}

/// Errors answered before a handler runs (unknown route, wrong method, body over the limit,
/// a WebSocket request without upgrade) come as plain text from axum: give them the JSON
/// error body every other error has.
async fn json_errors(resp: Response) -> Response {
    let st = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(st.is_client_error() || st.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match st.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "too_large",
        415 => "unsupported_media_type",
        426 => "upgrade_required",
        _ if st.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        st.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = (
        st,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

async fn metrics_handler(State(s): State<AppState>, headers: header::HeaderMap) -> Response {
    if !s.metrics_open {
        if let Err(e) = s.signaling.require_admin(&headers) {
            return e.into_response();
        }
    }
    open_metrics_handler(State(s)).await.into_response()
}

async fn open_metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&s),
    )
}

/// The routes of `--metrics-bind`: `/metrics` without auth (for the internal network a
/// Prometheus scrapes from) and `/healthz`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(open_metrics_handler))
        .with_state(state)
        .layer(axum::middleware::map_response(json_errors))
}

/// Serves `config` on `listener` until `shutdown` resolves, then closes gracefully.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let server = build(&config);
    let addr = listener.local_addr()?;
    log_start(&config, addr);
    if let Some(mb) = config.metrics_bind {
        let ml = TcpListener::bind(mb).await?;
        tracing::info!(
            "metrics without auth on http://{}/metrics",
            ml.local_addr()?
        );
        let limits = conn::HttpLimits {
            max_connections: 64,
            max_connections_per_ip: 16,
            ..conn::HttpLimits::default()
        };
        tokio::spawn(conn::serve_limited(
            ml,
            metrics_router(server.state.clone()),
            std::future::pending(),
            limits,
            Arc::default(),
        ));
    }
    let mut limits = config.http.clone();
    if let Some(fds) = conn::raise_fd_limit() {
        let budget = conn::connection_budget(fds).max(16);
        if limits.max_connections > budget {
            tracing::warn!(
                fd_limit = fds,
                max_connections = budget,
                "descriptor limit below --max-connections: HTTP connections capped to keep half the descriptors for media"
            );
            limits.max_connections = budget;
        }
    }
    conn::serve_limited(
        listener,
        server.router.clone(),
        shutdown,
        limits,
        server.state.http.clone(),
    )
    .await;
    // Upgraded WebSockets and media are not HTTP requests: end the programs cleanly (RTMP
    // outputs unpublish, HLS playlists end) within a bound, then the runtime drops the rest.
    tracing::info!("closing programs");
    let closing = server.state.programs.shutdown();
    if tokio::time::timeout(std::time::Duration::from_secs(5), closing)
        .await
        .is_err()
    {
        tracing::warn!("programs did not close within 5 s");
    }
    tracing::info!("server stopped");
    Ok(())
}

/// A client has this long to send a request's head, and an idle keep-alive connection this
/// long before the next one; then the connection is closed (slow or idle clients do not hold
/// connections and their buffers forever). WebSockets, once upgraded, are not affected.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Serves `router` on `listener` (HTTP/1.1 with WebSocket upgrades, and HTTP/2) until
/// `shutdown` resolves, with the default [`conn::HttpLimits`]; then stops accepting and waits
/// up to 5 s for requests in flight. Unlike `axum::serve`, connections are bounded: see
/// [`conn`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(listener, router, shutdown, HEADER_READ_TIMEOUT).await;
}

/// [`serve`] with another header-read/idle timeout.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: std::time::Duration,
) {
    let limits = conn::HttpLimits {
        header_read_timeout,
        ..Default::default()
    };
    conn::serve_limited(listener, router, shutdown, limits, Arc::default()).await;
}

fn log_start(config: &Config, addr: SocketAddr) {
    if config.dev_mode {
        tracing::info!(
            "cohost listening on http://{addr}/ (demo: http://{addr}/host.html?room=demo&key={})",
            config.api_key
        );
    } else {
        tracing::info!("cohost listening on http://{addr}/ (demo pages: http://{addr}/host.html)");
    }
    if config.dev_mode {
        tracing::warn!(
            "DEVELOPMENT MODE: no --api-key/--api-secret configured; generated API key: {}",
            config.api_key
        );
        tracing::warn!(
            "development mode: the demo pages mint tokens with this key; never expose this server"
        );
    }
    tracing::info!(
        media_ip = %config.rtc.media_ip,
        public_ip = ?config.rtc.public_ip,
        udp_ports = %format!("{}-{}", config.rtc.port_min, config.rtc.port_max),
        "media"
    );
}
