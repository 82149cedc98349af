//! The signaling WebSocket: one task per socket, messages parsed, rate-limited and handed to the hub; outbound queue bounded with a kill switch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::auth::{valid_display_name, AuthError, Claims, MAX_NAME_CHARS};
use crate::protocol::{parse_client_message, ClientMessage, ServerMessage, MAX_MESSAGE_BYTES};
use crate::room::Via;

use super::*;
use crate::hub::*;

#[derive(Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
}

pub(crate) async fn ws_handler(
    State(s): State<Arc<Signaling>>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = q.token.ok_or(AuthError::Missing)?;
    let claims = s.auth.verify(&token, now_s()).inspect_err(|_| {
        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
    })?;
    s.metrics.connections.fetch_add(1, Ordering::Relaxed);
    // The transport limit is above our own so an oversized message gets a clear error reply.
    Ok(ws
        .max_message_size(4 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let span = info_span!("participant", room = %claims.room, identity = %claims.identity);
            run_socket(s, claims, socket).instrument(span)
        }))
}

pub(crate) async fn run_socket(s: Arc<Signaling>, claims: Claims, mut socket: WebSocket) {
    let (otx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let kill = Arc::new(tokio::sync::Notify::new());
    let tx = ConnTx {
        tx: otx,
        kill: kill.clone(),
    };
    let conn = s.connect(tx.clone());
    let send_timeout = s.config.send_timeout;
    let room = claims.room.clone();
    let me = claims.identity.clone();
    let mut joined = false;
    let mut ping = tokio::time::interval(s.config.ping_interval);
    let mut last_heard = tokio::time::Instant::now();
    let mut limit = RateLimit::new(s.config.message_rate, s.config.message_burst, last_heard);
    // When a flooding client was last told so (at most once a second).
    let mut told: Option<tokio::time::Instant> = None;
    info!("signaling connected");
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(m)) = incoming else { break };
                last_heard = tokio::time::Instant::now();
                let text = match m {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        tx.send(ServerMessage::error("bad_message", "binary messages are not part of the protocol"));
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Message::Close(_) => break,
                    _ => continue,
                };
                s.metrics.messages.fetch_add(1, Ordering::Relaxed);
                if !limit.allow(last_heard) {
                    // Dropped unread: a flood costs us a counter, not a parse or a media job.
                    s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    if told.is_none_or(|t| last_heard.duration_since(t) >= Duration::from_secs(1)) {
                        told = Some(last_heard);
                        warn!("signaling messages over the rate limit; dropping");
                        tx.send(ServerMessage::error(
                            "rate_limited",
                            format!(
                                "more than {} messages a second (bursts of {}): messages dropped",
                                s.config.message_rate, s.config.message_burst
                            ),
                        ));
                    }
                    continue;
                }
                let msg = match parse_client_message(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        debug!(error = %e, "bad signaling message");
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tx.send(ServerMessage::error(e.code(), e.to_string()));
                        continue;
                    }
                };
                if !joined {
                    let ClientMessage::Join { name } = msg else {
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tx.send(ServerMessage::error("not_joined", "send `join` first"));
                        continue;
                    };
                    // The token's name wins: an app backend vouched for it.
                    let name = claims.name.clone().or(name).unwrap_or_else(|| me.clone());
                    if !valid_display_name(&name) {
                        s.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tx.send(ServerMessage::error("bad_name", format!("a name is 1 to {MAX_NAME_CHARS} characters without control characters")));
                        continue;
                    }
                    match s.join(&room, &me, &name, claims.role, Via::Ws(conn)) {
                        Ok(()) => { joined = true; info!(role = ?claims.role, "joined"); }
                        Err(e) => { s.metrics.errors.fetch_add(1, Ordering::Relaxed); tx.send(ServerMessage::error(e.code(), e.to_string())); }
                    }
                    continue;
                }
                // `None`: this socket no longer holds the identity's session.
                let Some(res) = s.handle(&room, &me, conn, msg) else { break };
                match res {
                    Ok(()) => {}
                    Err(e) => { s.metrics.errors.fetch_add(1, Ordering::Relaxed); tx.send(ServerMessage::error(e.code(), e.to_string())); }
                }
            }
            out = rx.recv() => {
                match out {
                    Some(Outbound::Msg(m)) => {
                        let Ok(text) = serde_json::to_string(&m) else { continue };
                        if !send_within(&mut socket, Message::Text(text.into()), send_timeout, &s.metrics).await { break; }
                    }
                    Some(Outbound::Close) | None => {
                        send_within(&mut socket, Message::Close(None), send_timeout, &s.metrics).await;
                        break;
                    }
                }
            }
            () = kill.notified() => {
                warn!("signaling client does not read its messages; dropped");
                s.metrics.slow_dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > s.config.idle_timeout {
                    info!("signaling idle timeout");
                    break;
                }
                if !send_within(&mut socket, Message::Ping(Bytes::new()), send_timeout, &s.metrics).await { break; }
            }
        }
    }
    s.disconnect(conn);
    if joined {
        s.leave(&room, &me, Via::Ws(conn));
    }
    info!("signaling disconnected");
}

/// Sends one frame, giving up after `timeout` (a client that stopped reading fills its TCP
/// window and would hold this task, its pings and its idle timeout for ever); false when the
/// socket is to be dropped.
pub(crate) async fn send_within(
    socket: &mut WebSocket,
    m: Message,
    timeout: Duration,
    metrics: &SignalingMetrics,
) -> bool {
    match tokio::time::timeout(timeout, socket.send(m)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            warn!("signaling send timed out; dropping the socket");
            metrics.slow_dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}
