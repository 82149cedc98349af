//! The HTTP accept loop closes connections that send no complete request head in time
//! (slowloris) and idle keep-alive connections, while normal requests are served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn server(timeout: Duration) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let built = cohost::build(&cohost::Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cohost::serve_with(
        listener,
        built.router,
        async {
            let _ = rx.await;
        },
        timeout,
    ));
    (addr, tx)
}

/// Reads until the peer closes; returns what was read, or None if still open after `wait`.
async fn read_to_close(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let (addr, _stop) = server(Duration::from_millis(500)).await;

    // A complete request is served (and the connection kept alive).
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = ok.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // ...then closed once idle past the timeout.
    assert!(
        read_to_close(&mut ok, Duration::from_secs(5))
            .await
            .is_some(),
        "an idle keep-alive connection stayed open"
    );

    // A head that never ends (slowloris) is cut off.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection that never finished its request head stayed open"
    );

    // A connection that sends nothing at all, too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        read_to_close(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a silent connection stayed open"
    );

    // The server still serves.
    let mut again = TcpStream::connect(addr).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let body = read_to_close(&mut again, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"));
}
