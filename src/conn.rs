//! The HTTP accept loop and what bounds each connection: a global and a per-IP connection
//! limit (a clear `503` and close past them), a request head timeout, a total request body
//! deadline, HTTP/2 keep-alive and stream limits, and an idle timeout on every connection
//! (no byte in either direction for [`HttpLimits::idle_timeout`]). WebSockets, once upgraded,
//! keep their connection slot (the guard rides on the socket) but leave the idle rule to the
//! signaling layer's own pings and idle timeout.
//!
//! The descriptor limit is raised to its hard maximum at start ([`raise_fd_limit`]) and the
//! connection limit is kept below it with a reserve for media (each peer connection is a UDP
//! socket) and files, so HTTP clients never take the descriptors running rooms need.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Limits of the HTTP layer (see the module docs). Flags: `--max-connections`,
/// `--max-connections-per-ip`.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most open connections (HTTP and upgraded WebSockets). Capped at start by the
    /// descriptor budget (see [`connection_budget`]).
    pub max_connections: usize,
    /// Most open connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time to send a complete request head, and the longest an HTTP/1 keep-alive
    /// connection waits idle for its next request.
    pub header_read_timeout: Duration,
    /// Time from a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// A connection on which no byte moved either way this long is closed (HTTP/2 with no
    /// request, a request that never sends its body, ...).
    pub idle_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_streams: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            h2_max_streams: 64,
        }
    }
}

/// Counters of the HTTP layer, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections refused (limits full) since start.
    pub refused: AtomicU64,
    /// Connections closed by the idle timeout since start.
    pub idle_closed: AtomicU64,
    /// Request bodies cut by the body deadline since start.
    pub body_timeouts: AtomicU64,
}

/// Raises the soft descriptor limit (`RLIMIT_NOFILE`) to the hard one; returns the limit in
/// force afterwards (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The most HTTP connections `fd_limit` descriptors allow while half of them (at least 256)
/// stay for media sockets, files and the process itself.
pub fn connection_budget(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 2).max(256);
    usize::try_from(fd_limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// Counts open connections, globally and per IP.
#[derive(Debug)]
struct Limiter {
    max: usize,
    per_ip: usize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<HttpStats>,
}

/// Frees a connection's slot when dropped.
#[derive(Debug)]
struct Slot {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut m = crate::sync::lock(&self.by_ip);
        let open = self.stats.open.load(Ordering::Relaxed) as usize;
        let n = m.get(&ip).copied().unwrap_or(0);
        if open >= self.max || n >= self.per_ip {
            return None;
        }
        m.insert(ip, n + 1);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = crate::sync::lock(&self.limiter.by_ip);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
        self.limiter.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that holds its connection slot and records when a byte last moved.
struct CountedIo {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    start: Instant,
    _slot: Slot,
}

impl CountedIo {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once no byte moved for `idle` (checked every second or so).
async fn idle_for(last: Arc<AtomicU64>, start: Instant, idle: Duration) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let step = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(step).await;
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last.load(Ordering::Relaxed)) >= idle_ms {
            return;
        }
    }
}

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 65\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections\"}}\n";

/// Most refusals being written at once (each holds its descriptor up to a second).
const MAX_REFUSING: u64 = 64;

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<std::sync::atomic::AtomicBool>,
}

/// The body deadline's error.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the deadline")]
pub struct BodyTimeout;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(f) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(f);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps every request body in a deadline of `timeout` from its head; a handler whose body
/// read was cut by it answers `408` (and the connection closes).
pub fn with_body_deadline(router: Router, timeout: Duration, stats: Arc<HttpStats>) -> Router {
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let stats = stats.clone();
        async move {
            let (parts, body) = req.into_parts();
            if http_body::Body::is_end_stream(&body) {
                return next.run(Request::from_parts(parts, body)).await;
            }
            let expired = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let body = Body::new(DeadlineBody {
                inner: body,
                sleep: Box::pin(tokio::time::sleep(timeout)),
                expired: expired.clone(),
            });
            let resp = next.run(Request::from_parts(parts, body)).await;
            if expired.load(Ordering::Relaxed) {
                stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::json!({"error": {
                    "code": "request_timeout",
                    "message": format!("request body not received within {} s", timeout.as_secs()),
                }});
                let mut r = (
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    axum::Json(body),
                )
                    .into_response();
                r.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                return r;
            }
            resp
        }
    }))
}

/// Serves `router` on `listener` with `limits` until `shutdown` resolves; then stops
/// accepting and waits up to 5 s for requests in flight.
pub async fn serve_limited(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let router = with_body_deadline(router, limits.body_read_timeout, stats.clone());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    let limiter = Arc::new(Limiter {
        max: limits.max_connections,
        per_ip: limits.max_connections_per_ip,
        by_ip: Mutex::new(HashMap::new()),
        stats: stats.clone(),
    });
    let refusing = Arc::new(AtomicU64::new(0));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let ip = canonical(peer.ip());
        let Some(slot) = limiter.admit(ip) else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if refusing.load(Ordering::Relaxed) < MAX_REFUSING {
                refusing.fetch_add(1, Ordering::Relaxed);
                let refusing = refusing.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        stream.write_all(REFUSED).await?;
                        stream.shutdown().await
                    })
                    .await;
                    refusing.fetch_sub(1, Ordering::Relaxed);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let (header_timeout, idle, stats) = (
            limits.header_read_timeout,
            limits.idle_timeout,
            stats.clone(),
        );
        tokio::spawn(async move {
            // The HTTP/1-or-2 detection waits for the first bytes before hyper's header timer
            // runs: a connection that sends nothing gets the same limit here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let start = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let io = CountedIo {
                inner: stream,
                last: last.clone(),
                start,
                _slot: slot,
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            tokio::select! {
                r = watcher.watch(conn) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = idle_for(last, start, idle) => {
                    stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "idle connection closed");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections did not finish within 5 s");
    }
}

/// An IPv4-mapped IPv6 address counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(REFUSED).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(len, Some(body.len()));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn the_budget_keeps_half_the_descriptors() {
        assert_eq!(connection_budget(1024), 512);
        assert_eq!(connection_budget(256), 0);
        assert_eq!(connection_budget(300), 44);
        assert_eq!(connection_budget(1_048_576), 524_288);
    }

    #[test]
    fn slots_are_counted_per_ip_and_freed() {
        let l = Arc::new(Limiter {
            max: 3,
            per_ip: 2,
            by_ip: Mutex::new(HashMap::new()),
            stats: Arc::default(),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let a1 = l.admit(a);
        let a2 = l.admit(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(l.admit(a).is_none(), "per-IP limit");
        let b1 = l.admit(b);
        assert!(b1.is_some());
        assert!(l.admit(b).is_none(), "global limit");
        drop(a1);
        let b2 = l.admit(b);
        assert!(b2.is_some(), "a freed slot is reusable");
        assert_eq!(l.stats.open.load(Ordering::Relaxed), 3);
        drop((a2, b1, b2));
        assert_eq!(l.stats.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn mapped_addresses_count_as_ipv4() {
        let v6: IpAddr = "::ffff:10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(canonical(v6), IpAddr::from([10, 0, 0, 1]));
    }
}
