//! CORS (CONTRACT "clients in the field"): a page on an allowed origin may call WHIP, WHEP,
//! `/api` and `/live` — preflights answered, `Location` and friends exposed — and a WHIP
//! publish made that way carries media; another origin gets no CORS headers at all, and
//! routes outside those four never do. `OPTIONS` on a WHIP/WHEP endpoint says what it takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use common::*;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;

const APP: &str = "http://app.example:8000";
const EVIL: &str = "http://evil.example";

fn acao(h: &HeaderMap) -> Option<&str> {
    h.get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_and_others_do_not() {
    let s = start_server_with(|c| {
        c.cors = cohost::cors::CorsOrigins::parse(APP).unwrap();
    })
    .await;
    let http = reqwest::Client::new();
    let preflight = |path: &str, origin: &str, method: &str| {
        http.request(Method::OPTIONS, s.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };

    // Preflights of the allowed origin, per route family.
    for (path, method) in [
        ("/whip/r", "POST"),
        ("/whip/r/someone", "DELETE"),
        ("/whep/r", "POST"),
        ("/whep/r/cam/session", "PATCH"),
        ("/api/tokens", "POST"),
        ("/api/rooms/r/layout", "PUT"),
        ("/live/r/index.m3u8", "GET"),
    ] {
        let r = preflight(path, APP, method).await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
        let h = r.headers();
        assert_eq!(acao(h), Some(APP), "{path}");
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains(method), "{path}: {methods}");
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for want in ["Authorization", "Content-Type", "If-Match"] {
            assert!(allowed.contains(want), "{path}: {allowed}");
        }
    }
    // Another origin: no CORS headers (the browser blocks it).
    let r = preflight("/whip/r", EVIL, "POST").await.unwrap();
    assert_eq!(acao(r.headers()), None);
    assert!(r.headers().get("access-control-allow-methods").is_none());

    // Actual requests from the allowed origin: the answer is readable, `Location` exposed.
    let token = s.token("r", "host", "host").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "host").await;
    let offer = peer.offer().await;
    let r = http
        .post(s.url("/whip/r"))
        .header("origin", APP)
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let h = r.headers().clone();
    assert_eq!(acao(&h), Some(APP));
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    for want in ["Location", "Link", "ETag", "Accept-Patch"] {
        assert!(exposed.contains(want), "{exposed}");
    }
    assert!(h
        .get_all("vary")
        .iter()
        .any(|v| v == HeaderValue::from_static("Origin")));
    peer.set_answer(&r.text().await.unwrap()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 30.0, stop.clone());
    // The publication made from that page is real: its media reaches a subscriber.
    let guest = s.token("r", "g", "guest").await;
    let (mut sub, _) = whep_subscribe(&s, "r", "host", &guest).await;
    let (video, _audio) = collect_both(&mut sub).await;
    eventually("media of the cross-origin publish", 20, || {
        decoded_at(&video, (320, 240)) >= 5
    })
    .await;
    // Errors carry CORS too (a page can read why it was refused).
    let r = http
        .post(s.url("/api/tokens"))
        .header("origin", APP)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(acao(r.headers()), Some(APP));
    let r = http
        .get(s.url("/live/nope/index.m3u8"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(acao(r.headers()), Some(APP));
    // The evil origin's actual request: no CORS headers.
    let r = http
        .get(s.url("/live/nope/index.m3u8"))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(acao(r.headers()), None);
    // Routes outside WHIP/WHEP/API/live never carry CORS headers.
    for path in ["/metrics", "/healthz", "/host.html"] {
        let r = http
            .get(s.url(path))
            .header("origin", APP)
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(acao(r.headers()), None, "{path}");
    }
    // `OPTIONS` without a preflight: what the endpoint takes (RFC 9725 §4.2).
    for path in ["/whip/r", "/whep/r", "/whep/r/host"] {
        let r = http
            .request(Method::OPTIONS, s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(r.headers()["accept-post"], "application/sdp");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
