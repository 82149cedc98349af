//! Signaling clients that do not read (issue 11, item 4): a WebSocket client that makes the
//! server answer and never reads its answers is dropped (its queue is bounded, its sends time
//! out) instead of being waited for, and errors never echo a client's oversized strings.
//! The host of the room beside it keeps its answers the whole time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_errors_are_short() {
    let s = start_server_with(|c| {
        c.signaling.send_timeout = Duration::from_secs(2);
        // Enough messages a second for the attacker to fill its socket quickly.
        c.signaling.message_rate = 2000.0;
        c.signaling.message_burst = 2000.0;
    })
    .await;

    // The healthy host beside it.
    let mut host = Ws::connect(&s, &s.token("healthy", "hank", "host").await).await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;

    // An oversized unknown type is not echoed back whole.
    let long = "x".repeat(60_000);
    host.send_raw(json!({"type": long}).to_string());
    let e = host.wait_type("error").await;
    assert_eq!(e["code"], "unknown_type");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.chars().count() < 200, "echoed {} chars", msg.len());
    // Nor are serde's quotes of a bad value.
    host.send_raw(json!({"type": "ping", "ts": long}).to_string());
    let e = host.wait("bad ping", |v| v["code"] == "bad_message").await;
    assert!(e["message"].as_str().unwrap().chars().count() < 400);

    // The attacker: a tiny receive buffer, and it never reads.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(s.addr).await.unwrap();
    let token = s.token("other", "mallory", "guest").await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/ws?token={token}", s.addr), tcp)
            .await
            .unwrap();
    ws.send(Message::Text(json!({"type": "join"}).to_string().into()))
        .await
        .unwrap();
    let open_before = s.metric("cohost_http_connections").await;
    // Each bad message earns an error reply of a few hundred bytes; none is read.
    let bad = json!({"type": "ping", "ts": "y".repeat(2000)}).to_string();
    let t0 = Instant::now();
    let mut sent = 0;
    while t0.elapsed() < Duration::from_secs(6) {
        // The server drops us: our sends start failing (or block: bounded by the loop).
        match tokio::time::timeout(
            Duration::from_millis(500),
            ws.send(Message::Text(bad.clone().into())),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
        if sent % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("attacker sent {sent} messages before the server stopped taking them");
    eventually_async("the non-reading client is dropped", 15, || async {
        s.metric("cohost_signaling_slow_clients_dropped_total")
            .await
            >= 1
    })
    .await;
    eventually_async("its connection is closed", 10, || async {
        s.metric("cohost_http_connections").await < open_before
    })
    .await;

    // The host was answered throughout and still is, promptly.
    for i in 0..5 {
        let t = Instant::now();
        host.send(json!({"type": "ping", "ts": i}));
        let want = f64::from(i);
        host.wait("pong", move |v| {
            v["type"] == "pong" && v["ts"].as_f64() == Some(want)
        })
        .await;
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
