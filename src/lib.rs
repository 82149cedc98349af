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

pub mod cluster;
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
pub mod studio;
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
    /// Cluster mode could not start (Redis unreachable).
    #[error("cluster: {0}")]
    Cluster(String),
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
    /// Draining (cluster mode, after SIGTERM): `/healthz` answers `503`.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Where rooms live (this node alone, or a fleet on Redis); the image library is shared
    /// through it.
    pub cluster: Arc<dyn cluster::Cluster>,
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
    /// Where rooms live (this node alone, or a fleet on Redis).
    pub cluster: Arc<dyn cluster::Cluster>,
    /// In cluster mode, what [`cluster::RedisCluster::start`] needs: this node's load and
    /// rooms, and what to do with a room whose lease it lost.
    pub cluster_hooks: Option<cluster::NodeHooks>,
}

/// What the cluster layer reads from and does to this node.
fn node_hooks(
    sig: &Arc<signaling::http::Signaling>,
    programs: &Arc<program::Programs>,
    threads: usize,
) -> cluster::NodeHooks {
    let (s1, s2, s3, s4, s5) = (
        sig.clone(),
        sig.clone(),
        sig.clone(),
        sig.clone(),
        sig.clone(),
    );
    let (p, p2, p3, p4) = (
        programs.clone(),
        programs.clone(),
        programs.clone(),
        programs.clone(),
    );
    // The mixer workers' busy share since the last report.
    let last = std::sync::Mutex::new((std::time::Instant::now(), 0u64));
    cluster::NodeHooks {
        load: Box::new(move || {
            let nanos = p
                .metrics
                .driver
                .poll_nanos
                .load(std::sync::atomic::Ordering::Relaxed);
            let mut l = sync::lock(&last);
            let dt = l.0.elapsed().as_secs_f64() * threads.max(1) as f64;
            let load = if dt > 0.0 {
                (nanos.saturating_sub(l.1) as f64 / 1e9 / dt).clamp(0.0, 1.0)
            } else {
                0.0
            };
            *l = (std::time::Instant::now(), nanos);
            (s1.counts().0, p.running(), load)
        }),
        has_room: Box::new(move |room| s2.room_exists(room)),
        lost: Box::new(move |room| {
            let s = s3.clone();
            tokio::spawn(async move {
                s.evict_room(&room).await;
            });
        }),
        snapshot: Box::new(move |room| {
            let mut v = serde_json::to_value(p2.snapshot(room)?).ok()?;
            // The host's mutes are signaling's: they travel beside the program's state.
            v["mutes"] = serde_json::json!(s5.mutes(room));
            Some(v)
        }),
        restore: Box::new(move |room, state| {
            let (s, p) = (s4.clone(), p3.clone());
            Box::pin(async move {
                let mutes: Vec<(String, bool, bool)> = state
                    .get("mutes")
                    .and_then(|m| serde_json::from_value(m.clone()).ok())
                    .unwrap_or_default();
                let Ok(snap) = serde_json::from_value::<program::RoomSnapshot>(state) else {
                    tracing::warn!(room, "saved room state unreadable; the room starts anew");
                    return;
                };
                let mix = serde_json::to_value(&snap.mix).ok();
                match s.create_room(&room, mix).await {
                    Ok(()) => {
                        s.carry_mutes(&room, &mutes);
                        p.restore(&room, snap)
                    }
                    Err(e) => tracing::warn!(room, error = %e, "room not restored"),
                }
            })
        }),
        image: Box::new(move |name, file| {
            let p = p4.clone();
            let Some(file) = file else {
                p.remove_image(&name);
                return;
            };
            tokio::task::spawn_blocking(move || match mixer::decor::decode_image(&file) {
                Ok(image) => {
                    if let Err(e) = p.put_image(&name, image, file.len()) {
                        tracing::warn!(image = %name, error = %e, "fleet image not stored here");
                    }
                }
                Err(e) => tracing::warn!(image = %name, error = %e, "fleet image unreadable"),
            });
        }),
    }
}

/// Builds a single node (SFU, signaling, routes) from `config`.
pub fn build(config: &Config) -> Server {
    build_with(config, None)
}

/// Builds the server from `config`, in the fleet `redis` when given (cluster mode; its
/// [`cluster::RedisCluster::start`] is the caller's, with [`Server::cluster_hooks`]).
pub fn build_with(config: &Config, redis: Option<Arc<cluster::RedisCluster>>) -> Server {
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
    let mut sig_config = config.signaling.clone();
    if let Some(c) = &config.cluster {
        sig_config.node = Some(c.node_id.clone());
    }
    let sig = signaling::http::Signaling::new(auth, backend, sig_config, events_rx);
    let threads = match config.program.mixer_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let (cluster, cluster_hooks): (Arc<dyn cluster::Cluster>, _) = match redis {
        Some(r) => (r, Some(node_hooks(&sig, &programs, threads))),
        None => (
            Arc::new(cluster::LocalCluster::new(
                "local",
                config.program.max_programs,
                node_hooks(&sig, &programs, threads),
            )),
            None,
        ),
    };
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
        draining: Arc::default(),
        cluster: cluster.clone(),
    };
    let routing = cluster::forward::Routing::new(cluster.clone(), sig.clone());
    let router = router(state.clone(), routing);
    Server {
        state,
        router,
        program_feed,
        cluster,
        cluster_hooks,
    }
}

/// All HTTP routes: signaling (`/ws`, WHIP, WHEP, `/api`), `/metrics`, `/healthz`, demo pages;
/// requests for rooms of other nodes forwarded through `routing` (inside the CORS layer, so
/// a forwarded answer gets this node's CORS headers).
pub fn router(state: AppState, routing: Arc<cluster::forward::Routing>) -> Router {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .merge(output::routes::router())
        .merge(output::recordings_http::router())
        .merge(studio::router())
        .with_state(state.clone());
    signaling::http::router(state.signaling.clone())
        .merge(app)
        .merge(web::router())
        .layer(axum::middleware::from_fn_with_state(
            routing,
            cluster::forward::route,
        ))
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

async fn healthz(State(s): State<AppState>) -> Response {
    if s.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    "ok\n".into_response()
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
    let redis = match &config.cluster {
        Some(c) => Some(
            cluster::RedisCluster::connect(c.clone())
                .await
                .map_err(|e| ServerError::Cluster(e.to_string()))?,
        ),
        None => None,
    };
    let mut server = build_with(&config, redis.clone());
    if let (Some(r), Some(hooks)) = (&redis, server.cluster_hooks.take()) {
        r.start(hooks).await;
        tracing::info!(node = r.node_id_str(), "cluster mode: node registered");
    }
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
    let shutdown = drain_first(&server, redis.clone(), &config, shutdown);
    conn::serve_limited(
        listener,
        server.router.clone(),
        shutdown,
        limits,
        server.state.http.clone(),
    )
    .await;
    if let Some(r) = &redis {
        r.leave().await;
    }
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

/// In cluster mode, `shutdown` (SIGTERM) starts a drain: the node takes no new rooms (it
/// leaves the index; `/healthz` answers `503`), its rooms go on until nobody is in them or
/// `--drain-timeout` passes; what is left then moves (its clients are told `room_moved`, the
/// leases given back) and the server stops. Without a cluster, `shutdown` as it is.
fn drain_first(
    server: &Server,
    redis: Option<Arc<cluster::RedisCluster>>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let draining = server.state.draining.clone();
    let sig = server.state.signaling.clone();
    let timeout = config.cluster.as_ref().map(|c| c.drain_timeout);
    async move {
        shutdown.await;
        let (Some(r), Some(timeout)) = (redis, timeout) else {
            return;
        };
        tracing::info!(
            ?timeout,
            "draining: no new rooms; the rooms here go on until they end"
        );
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        r.set_draining().await;
        let deadline = tokio::time::Instant::now() + timeout;
        while sig.counts().1 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        for room in sig.room_names() {
            sig.evict_room(&room).await;
        }
        r.leave().await;
        tracing::info!("drained");
    }
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
