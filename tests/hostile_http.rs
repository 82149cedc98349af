//! Hostile HTTP clients (issue 11, item 1): stalled bodies, bodies without credentials,
//! h2c prefaces with nothing after them, and a flood of connections from one address. Each
//! gets its clear refusal or is closed by its timeout, the connection limits hold, `/healthz`
//! from another address keeps answering, and a room beside them keeps decoding its program.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to the server from the loopback address `from` (127.0.0.x: each is its own
/// client IP for the per-IP limit).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(to).await.unwrap()
}

/// Reads until the peer closes or `wait` passes; (what was read, closed?).
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_flooding_clients_are_bounded_and_others_are_served() {
    let s = start_server_with(|c| {
        c.http.max_connections_per_ip = 40;
        c.http.body_read_timeout = Duration::from_secs(2);
        c.http.idle_timeout = Duration::from_secs(3);
    })
    .await;
    let addr = s.addr;

    // A healthy room: a co-host and a WHEP viewer of its program.
    let room = "healthy";
    let (_host, _loc, _stop) = whip_publish(&s, room, "host", "host", 320, 240).await;
    let viewer = s.token(room, "fan", "viewer").await;
    let mut prog = whep_program(&s, room, &viewer).await;
    let (pv, _pa) = collect_both(&mut prog).await;
    eventually("program pictures", 15, || decoded_at(&pv, (1280, 720)) > 10).await;

    let attacker = [127, 0, 0, 2];
    // 1. A body announced and never sent, without credentials: refused before the body.
    let mut no_auth = connect_from(attacker, addr).await;
    no_auth
        .write_all(b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut no_auth, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(closed, "the unauthenticated connection stayed open");
    // WHIP without a token or a body: the same.
    let mut whip = connect_from(attacker, addr).await;
    whip.write_all(b"POST /whip/healthy HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5000\r\n\r\n")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut whip, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 401"));
    assert!(closed);

    // 2. With the API key, a body that stalls after one byte: 408 at the body deadline.
    let mut slow = connect_from(attacker, addr).await;
    let head = format!(
        "POST /api/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let (got, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(closed, "the stalled body's connection stayed open");
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "cut before the deadline"
    );

    // 3. An h2c preface and nothing after it: closed by the idle timeout.
    let mut h2 = connect_from(attacker, addr).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut h2, Duration::from_secs(10)).await;
    assert!(closed, "a silent HTTP/2 connection stayed open");

    // 4. A flood of stalled connections from one address: the per-IP limit holds them to 40,
    //    the rest are refused with 503, and another address is served meanwhile.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let mut c = connect_from(attacker, addr).await;
        // A request head that never ends (held until the head timeout).
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    for c in &mut held {
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await
        {
            if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 20, "60 connections, 40 allowed from one IP");
    let metrics = s.metrics().await;
    let refused_total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cohost_http_connections_refused_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap();
    assert!(refused_total >= 20, "{refused_total}");
    // While they are held: /healthz from 127.0.0.1 answers, the room goes on.
    let before = decoded_at(&pv, (1280, 720));
    for _ in 0..10 {
        let mut c = connect_from([127, 0, 0, 1], addr).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_until_closed(&mut c, Duration::from_secs(2)).await;
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
            "/healthz while 40 connections are held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("program pictures during the flood", 10, || {
        decoded_at(&pv, (1280, 720)) > before + 20
    })
    .await;
    // Once the held connections time out their slots are free again.
    drop(held);
    eventually_async("slots freed", 10, || async {
        let mut c = connect_from(attacker, addr).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_until_closed(&mut c, Duration::from_secs(2)).await;
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200")
    })
    .await;
}
