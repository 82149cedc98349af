//! Any node answers every route: a request for a room that lives on another node is
//! forwarded there — HTTP proxied (streamed both ways), WebSocket relayed — so the client sees
//! the same answers as on one node, while the media goes straight to the owner (its own
//! candidates are in the SDP it answers). Forwarded requests carry
//! `x-cohost-forwarded: {node};{unix_s};{hmac}` (HMAC-SHA256 with the cluster secret over
//! the time, method, path and sender); a node serves a correctly signed request itself,
//! whoever owns the room, so a request is forwarded at most once.
//!
//! A room is placed (claimed for the node with the most free capacity) by requests that
//! create something in it (`POST`, `PUT`, a WebSocket join), and by any request for a room
//! whose node died with its state saved; other reads of a room no node holds are answered
//! here. `GET /api/rooms` lists the rooms of every node, `GET /api/nodes` the
//! nodes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use signaling::http::{ApiError, Signaling};
use signaling::protocol::ServerMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tracing::{debug, info, warn};

use super::{Cluster, ClusterError, Placement};

/// The header a forwarded request carries.
pub const FORWARDED: &str = "x-cohost-forwarded";
/// Longest a forwarding node waits for the owner's response headers (a WHIP answer takes
/// well under a second; an owner this late is in trouble).
const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// A signature older (or newer) than this is refused.
const MAX_SKEW_S: u64 = 60;
/// Largest `POST /api/rooms` body read here to learn the room's name.
const MAX_CREATE_BODY: usize = 64 * 1024;

/// What the routing layer needs.
pub struct Routing {
    /// Where rooms live.
    pub cluster: Arc<dyn Cluster>,
    /// This node's hub (cluster-wide room list, auth).
    pub signaling: Arc<Signaling>,
    client: Client<HttpConnector, Body>,
}

impl Routing {
    /// Routing over `cluster`.
    pub fn new(cluster: Arc<dyn Cluster>, signaling: Arc<Signaling>) -> Arc<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        Arc::new(Routing {
            cluster,
            signaling,
            client,
        })
    }
}

type HmacSha256 = Hmac<sha2::Sha256>;

fn mac(secret: &str, from: &str, ts: u64, method: &str, path: &str) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
    m.update(format!("{ts}\n{method}\n{path}\n{from}").as_bytes());
    Some(m)
}

/// The `x-cohost-forwarded` value for a request from node `from`.
pub fn sign(secret: &str, from: &str, now_s: u64, method: &str, path: &str) -> String {
    let sig = mac(secret, from, now_s, method, path)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{from};{now_s};{sig}")
}

/// Whether `value` signs this request with `secret`, within [`MAX_SKEW_S`] of `now_s`.
pub fn verify(secret: &str, value: &str, now_s: u64, method: &str, path: &str) -> bool {
    let mut it = value.splitn(3, ';');
    let (Some(from), Some(ts), Some(sig)) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    let Ok(ts) = ts.parse::<u64>() else {
        return false;
    };
    if ts.abs_diff(now_s) > MAX_SKEW_S || secret.is_empty() {
        return false;
    }
    let Ok(sig) = hex::decode(sig) else {
        return false;
    };
    mac(secret, from, ts, method, path).is_some_and(|m| m.verify_slice(&sig).is_ok())
}

fn now_s() -> u64 {
    super::unix_ms() / 1000
}

/// What a request is about, for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Not a room's: served here.
    Local,
    /// A room's; `create` when it may place the room.
    Room { room: String, create: bool },
    /// `POST /api/rooms`: the room's name is in the body.
    CreateRoom,
    /// `GET /api/rooms`: every node's rooms.
    ListRooms,
    /// `GET /api/nodes`.
    Nodes,
    /// `/ws`: the room is in the token.
    Socket,
}

fn target(method: &Method, path: &str) -> Target {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let create = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::PATCH | Method::OPTIONS
    );
    let room = |r: &str| {
        let r = r.strip_suffix(".flv").unwrap_or(r);
        Target::Room {
            room: percent_encoding::percent_decode_str(r)
                .decode_utf8_lossy()
                .into_owned(),
            create,
        }
    };
    match seg.as_slice() {
        ["ws"] => Target::Socket,
        ["api", "nodes"] if method == Method::GET => Target::Nodes,
        ["api", "rooms"] if method == Method::GET => Target::ListRooms,
        ["api", "rooms"] if method == Method::POST => Target::CreateRoom,
        ["api", "rooms", r, ..] if !r.is_empty() => room(r),
        ["whip" | "whep", r, ..] if !r.is_empty() => room(r),
        ["live", r, ..] if !r.is_empty() => room(r),
        _ => Target::Local,
    }
}

fn json_error(status: u16, code: &str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn cluster_error(e: &ClusterError) -> Response {
    let mut r = json_error(503, "cluster_unavailable", e.to_string());
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    r
}

/// The routing middleware (cluster mode; a local cluster passes everything through, but
/// `GET /api/nodes`).
pub async fn route(State(r): State<Arc<Routing>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let t = target(req.method(), &path);
    if t == Target::Nodes {
        return nodes(&r, req.headers()).await;
    }
    if r.cluster.is_local() {
        return next.run(req).await;
    }
    let forwarded = req
        .headers()
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| verify(r.cluster.secret(), v, now_s(), req.method().as_str(), &pq));
    // The room the request is about, if any (`POST /api/rooms`: from its body).
    let (room, create, req) = match t {
        Target::Local | Target::Nodes => return next.run(req).await,
        Target::ListRooms if forwarded => return next.run(req).await,
        Target::ListRooms => return list_rooms(&r, req).await,
        Target::Room { room, create } => (room, create, req),
        Target::Socket => match socket_room(&r, &req) {
            Some(room) => (room, true, req),
            None => return next.run(req).await,
        },
        Target::CreateRoom => {
            // Only the API key may create rooms: anyone else is answered here, unread.
            if r.signaling.require_admin(req.headers()).is_err() {
                return next.run(req).await;
            }
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_CREATE_BODY).await else {
                return json_error(413, "too_large", "the request body is too large");
            };
            let name = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
            let req = Request::from_parts(parts, Body::from(bytes));
            match name.filter(|n| signaling::auth::valid_name(n)) {
                Some(n) => (n, true, req),
                None => return next.run(req).await,
            }
        }
    };
    if forwarded {
        // Sent by a node that found this one the owner: serve it here (taking up the lease
        // the claim gave this node), never forward it again.
        return match r.cluster.owner(&room).await {
            Ok(Some(Placement::Here { .. })) => serve_here(&r, &room, req, next).await,
            _ => next.run(req).await,
        };
    }
    let placed = if create {
        r.cluster.locate(&room).await
    } else {
        match r.cluster.owner(&room).await {
            Ok(Some(p)) => Ok(p),
            // A room nobody holds whose node died: a read brings it back too.
            Ok(None)
                if !r.signaling.room_exists(&room) && r.cluster.has_saved_state(&room).await =>
            {
                r.cluster.locate(&room).await
            }
            Ok(None) => Ok(Placement::Here { epoch: 0 }),
            Err(e) => Err(e),
        }
    };
    match placed {
        Ok(Placement::Here { .. }) => serve_here(&r, &room, req, next).await,
        Ok(Placement::There { node, url }) => {
            debug!(room, node, "forwarded to the room's node");
            if path == "/ws" {
                relay_socket(&r, req, &url, &pq).await
            } else {
                proxy(&r, req, &url, &pq).await
            }
        }
        // Redis trouble: a room running here goes on; anything that needs placing waits.
        Err(_) if r.signaling.room_exists(&room) => next.run(req).await,
        Err(e) => {
            warn!(room, error = %e, "cannot place the room");
            cluster_error(&e)
        }
    }
}

/// Serves a request for a room this node owns: a room not here yet is first restored from
/// the state its previous node saved; a change made through the API is saved at once.
async fn serve_here(r: &Routing, room: &str, req: Request, next: Next) -> Response {
    if !r.signaling.room_exists(room) {
        r.cluster.restore(room).await;
    }
    let mutates = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.uri().path().starts_with("/api/rooms");
    let resp = next.run(req).await;
    if mutates && resp.status().is_success() {
        r.cluster.changed(room).await;
    }
    resp
}

/// The room a `/ws?token=` connection joins (from its verified token).
fn socket_room(r: &Routing, req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    let token = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(|t| {
            percent_encoding::percent_decode_str(t)
                .decode_utf8_lossy()
                .into_owned()
        })?;
    r.signaling
        .auth()
        .verify(&token, now_s())
        .ok()
        .map(|c| c.room)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

fn signed(r: &Routing, method: &Method, pq: &str) -> HeaderValue {
    let v = sign(
        r.cluster.secret(),
        r.cluster.node_id(),
        now_s(),
        method.as_str(),
        pq,
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Proxies `req` to the node at `base`, streaming the body both ways. The owner's CORS
/// headers are dropped: this node's CORS layer answers for itself.
async fn proxy(r: &Routing, req: Request, base: &str, pq: &str) -> Response {
    let (mut parts, body) = req.into_parts();
    let Ok(uri) = format!("{base}{pq}").parse::<axum::http::Uri>() else {
        return json_error(502, "bad_gateway", format!("bad node URL `{base}`"));
    };
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.insert(
        HeaderName::from_static(FORWARDED),
        signed(r, &parts.method, pq),
    );
    let out = Request::from_parts(parts, body);
    match tokio::time::timeout(HEADERS_TIMEOUT, r.client.request(out)).await {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let cors: Vec<HeaderName> = parts
                .headers
                .keys()
                .filter(|k| k.as_str().starts_with("access-control-"))
                .cloned()
                .collect();
            for k in cors {
                parts.headers.remove(k);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            warn!(node = base, error = %e, "the room's node did not answer");
            let mut r = json_error(
                503,
                "room_moved",
                "the room's node does not answer; the room is placed again within seconds",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r
        }
        Err(_) => json_error(
            504,
            "gateway_timeout",
            "the room's node did not answer in time",
        ),
    }
}

fn room_moved_text() -> String {
    serde_json::to_string(&ServerMessage::error(
        "room_moved",
        "the room's node is gone; reconnect to join it again",
    ))
    .unwrap_or_default()
}

/// Relays a WebSocket to the room's node: the client's upgrade is accepted here, a socket
/// to the owner opened with the same query (its token), and messages passed both ways
/// until either side closes. If the owner goes away, the client gets `room_moved`.
async fn relay_socket(r: &Routing, req: Request, base: &str, pq: &str) -> Response {
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let url = format!("{}{pq}", base.replacen("http", "ws", 1));
    let sig = signed(r, &Method::GET, pq);
    ws.max_message_size(4 * signaling::protocol::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            if let Err(e) = relay(socket, &url, sig).await {
                debug!(error = %e, "relay ended");
            }
        })
}

async fn relay(
    mut client: WebSocket,
    url: &str,
    sig: HeaderValue,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut up_req = url.into_client_request()?;
    up_req
        .headers_mut()
        .insert(HeaderName::from_static(FORWARDED), sig);
    let upstream = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(up_req),
    )
    .await
    {
        Ok(Ok((s, _))) => s,
        _ => {
            let _ = client.send(AxMessage::Text(room_moved_text().into())).await;
            let _ = client.send(AxMessage::Close(None)).await;
            return Ok(());
        }
    };
    info!(url, "signaling relayed to the room's node");
    let (mut up_tx, mut up_rx) = upstream.split();
    loop {
        tokio::select! {
            m = client.recv() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    _ => break,
                };
                let t = match m {
                    AxMessage::Text(t) => TMessage::Text(t.as_str().into()),
                    AxMessage::Binary(b) => TMessage::Binary(b),
                    AxMessage::Ping(b) => TMessage::Ping(b),
                    AxMessage::Pong(b) => TMessage::Pong(b),
                    AxMessage::Close(_) => break,
                };
                if up_tx.send(t).await.is_err() {
                    break;
                }
            }
            m = up_rx.next() => {
                let a = match m {
                    Some(Ok(TMessage::Text(t))) => AxMessage::Text(t.as_str().into()),
                    Some(Ok(TMessage::Binary(b))) => AxMessage::Binary(b),
                    Some(Ok(TMessage::Ping(b))) => AxMessage::Ping(b),
                    Some(Ok(TMessage::Pong(b))) => AxMessage::Pong(b),
                    Some(Ok(TMessage::Frame(_))) => continue,
                    Some(Ok(TMessage::Close(_))) => {
                        let _ = client.send(AxMessage::Close(None)).await;
                        return Ok(());
                    }
                    // The owner vanished without closing: tell the client why.
                    Some(Err(_)) | None => {
                        let _ = client.send(AxMessage::Text(room_moved_text().into())).await;
                        let _ = client.send(AxMessage::Close(None)).await;
                        return Ok(());
                    }
                };
                if client.send(a).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = up_tx.send(TMessage::Close(None)).await;
    Ok(())
}

/// `GET /api/nodes` (API key).
async fn nodes(r: &Routing, headers: &HeaderMap) -> Response {
    if let Err(e) = r.signaling.require_admin(headers) {
        return e.into_response();
    }
    match r.cluster.nodes().await {
        Ok(n) => axum::Json(serde_json::json!({ "nodes": n })).into_response(),
        Err(e) => cluster_error(&e),
    }
}

/// `GET /api/rooms` over the cluster: this node's rooms and every other live node's.
async fn list_rooms(r: &Routing, req: Request) -> Response {
    if let Err(e) = r.signaling.require_admin(req.headers()) {
        return e.into_response();
    }
    let mut rooms: Vec<serde_json::Value> = Vec::new();
    for n in r.signaling.room_names() {
        rooms.push(r.signaling.room_info(&n).await);
    }
    let nodes = match r.cluster.nodes().await {
        Ok(n) => n,
        Err(e) => return cluster_error(&e),
    };
    let auth = req.headers().get(header::AUTHORIZATION).cloned();
    let asks = nodes
        .into_iter()
        .filter(|n| n.id != r.cluster.node_id())
        .map(|n| {
            let mut b = axum::http::Request::get(format!("{}/api/rooms", n.url))
                .header(FORWARDED, signed(r, &Method::GET, "/api/rooms"));
            if let Some(a) = &auth {
                b = b.header(header::AUTHORIZATION, a.clone());
            }
            let client = r.client.clone();
            async move {
                let req = b.body(Body::empty()).ok()?;
                let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
                    .await
                    .ok()?
                    .ok()?;
                if resp.status() != StatusCode::OK {
                    return None;
                }
                let body = axum::body::to_bytes(Body::new(resp.into_body()), 16 << 20)
                    .await
                    .ok()?;
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                Some(v.get("rooms")?.as_array()?.clone())
            }
        });
    for list in futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
    {
        rooms.extend(list);
    }
    rooms.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    rooms.dedup_by(|a, b| a["name"] == b["name"]);
    axum::Json(serde_json::json!({ "rooms": rooms })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_method_path_time_and_secret() {
        let v = sign("s3cret", "n1", 1000, "POST", "/whip/r");
        assert!(verify("s3cret", &v, 1000, "POST", "/whip/r"));
        assert!(verify("s3cret", &v, 1059, "POST", "/whip/r"));
        for (secret, now, method, path) in [
            ("other", 1000, "POST", "/whip/r"),
            ("s3cret", 1061, "POST", "/whip/r"),
            ("s3cret", 1000, "GET", "/whip/r"),
            ("s3cret", 1000, "POST", "/whip/q"),
            ("", 1000, "POST", "/whip/r"),
        ] {
            assert!(
                !verify(secret, &v, now, method, path),
                "{secret} {now} {method} {path}"
            );
        }
        assert!(!verify("s3cret", "garbage", 1000, "POST", "/whip/r"));
        let forged = v.replacen("n1", "n2", 1);
        assert!(!verify("s3cret", &forged, 1000, "POST", "/whip/r"));
    }

    #[test]
    fn routes_and_their_rooms() {
        let room = |r: &str, create| Target::Room {
            room: r.into(),
            create,
        };
        let table = [
            (Method::POST, "/whip/r1", room("r1", true)),
            (Method::PATCH, "/whip/r1/alice", room("r1", false)),
            (Method::DELETE, "/whep/r1/bob/s", room("r1", false)),
            (Method::GET, "/live/r2/index.m3u8", room("r2", false)),
            (Method::GET, "/live/r2.flv", room("r2", false)),
            (Method::PUT, "/api/rooms/r3/layout", room("r3", true)),
            (Method::GET, "/api/rooms/a%20b", room("a b", false)),
            (Method::GET, "/api/rooms", Target::ListRooms),
            (Method::POST, "/api/rooms", Target::CreateRoom),
            (Method::GET, "/api/nodes", Target::Nodes),
            (Method::POST, "/api/tokens", Target::Local),
            (Method::GET, "/ws", Target::Socket),
            (Method::GET, "/healthz", Target::Local),
            (Method::GET, "/host.html", Target::Local),
            (Method::POST, "/whip/", Target::Local),
        ];
        for (m, p, want) in table {
            assert_eq!(target(&m, p), want, "{m} {p}");
        }
    }
}
