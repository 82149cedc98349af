//! Untrusted input never hurts the server: malformed and oversized signaling messages, unknown
//! types, wrong/expired/foreign-room tokens, invalid SDP, garbage UDP datagrams to the media
//! ports. Each gets a clear error or is dropped, while a healthy room keeps flowing (asserted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use common::*;
use serde_json::json;
use signaling::auth::{Auth, Claims, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_healthy_room_flows() {
    let s = start_server().await;
    // A healthy room: a WHIP co-host watched over WHEP.
    let (_p, _res, _stop) = whip_publish(&s, "healthy", "cam", "host", 320, 240).await;
    let watcher = s.token("healthy", "w", "guest").await;
    let (mut sub, _) = whep_subscribe(&s, "healthy", "cam", &watcher).await;
    let (video, _audio) = collect_both(&mut sub).await;
    eventually("healthy video flows", 20, || {
        decode_h264(&video.lock().unwrap().frames).len() >= 5
    })
    .await;

    // --- Signaling messages.
    let mut ws = Ws::connect(&s, &s.token("other", "alice", "guest").await).await;
    ws.send(json!({"type": "ping", "ts": 1}));
    let e = ws.wait_type("error").await;
    assert_eq!(e["code"], "not_joined");
    ws.send(json!({"type": "join"}));
    ws.wait_type("joined").await;
    for (raw, code) in [
        ("{not json".to_string(), "bad_json"),
        (
            json!({"type": "fly_to_the_moon"}).to_string(),
            "unknown_type",
        ),
        (json!({"no_type": 1}).to_string(), "bad_message"),
        (json!({"type": "subscribe"}).to_string(), "bad_message"),
        (
            json!({"type": "mute", "identity": "x", "kind": "audio", "muted": true}).to_string(),
            "not_host",
        ),
        (
            json!({"type": "subscribe", "identity": "ghost", "sdp": "v=0"}).to_string(),
            "unknown_participant",
        ),
        (
            json!({"type": "publish", "sdp": "v=0"}).to_string(),
            "not_on_air",
        ),
        (
            format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(100_000)),
            "message_too_large",
        ),
    ] {
        ws.forget();
        ws.send_raw(raw.clone());
        let e = ws.wait_type("error").await;
        assert_eq!(e["code"], code, "for {}", &raw[..raw.len().min(80)]);
    }
    // The connection is still usable after every error.
    ws.forget();
    ws.send(json!({"type": "ping", "ts": 42.0}));
    let p = ws.wait_type("pong").await;
    assert_eq!(p["ts"], 42.0);

    // --- Tokens.
    let http = reqwest::Client::new();
    let ws_status = |t: String| {
        let url = s.url(&format!("/ws?token={t}"));
        let http = http.clone();
        async move {
            let r = http
                .get(url)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (st, body["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    let wrong = Auth::new("k", "another-secret-0123456789")
        .mint(&Claims {
            room: "healthy".into(),
            identity: "x".into(),
            role: Role::Host,
            exp: u64::MAX / 2,
            name: None,
        })
        .unwrap();
    assert_eq!(
        ws_status(wrong.clone()).await,
        (401, "invalid_token".into())
    );
    let expired = Auth::new(API_KEY, API_SECRET)
        .mint(&Claims {
            room: "healthy".into(),
            identity: "x".into(),
            role: Role::Host,
            exp: 1000,
            name: None,
        })
        .unwrap();
    assert_eq!(
        ws_status(expired.clone()).await,
        (401, "token_expired".into())
    );
    assert_eq!(
        ws_status("garbage".into()).await,
        (401, "invalid_token".into())
    );
    // Foreign room: a valid token of another room cannot publish or watch here.
    let foreign = s.token("elsewhere", "mallory", "host").await;
    let (st, _, body) = post_sdp(&s.url("/whip/healthy"), &foreign, "v=0").await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("wrong_room"));
    let (st, _, _) = post_sdp(&s.url("/whep/healthy/cam"), &foreign, "v=0").await;
    assert_eq!(st, 403);
    let (st, _, _) = post_sdp(&s.url("/whip/healthy"), &expired, "v=0").await;
    assert_eq!(st, 401);
    let viewer = s.token("healthy", "v1", "viewer").await;
    let (st, _, _) = post_sdp(&s.url("/whip/healthy"), &viewer, "v=0").await;
    assert_eq!(st, 403, "a viewer never publishes");
    // Admin routes need the API key, not a participant token.
    let r = http
        .post(s.url("/api/tokens"))
        .bearer_auth(&watcher)
        .json(&json!({"room":"a","identity":"b","role":"host"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(s.url("/api/tokens"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(s.url("/api/tokens"))
        .bearer_auth(API_KEY)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // --- Invalid SDP and bodies to WHIP.
    let pub_token = s.token("other", "bob", "guest").await;
    for bad in ["", "v=0", "this is not sdp", &"a=x\r\n".repeat(2000)] {
        let (st, _, body) = post_sdp(&s.url("/whip/other"), &pub_token, bad).await;
        assert_eq!(st, 400, "WHIP with {:?}: {body}", &bad[..bad.len().min(20)]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"]["code"].is_string());
    }
    // A real offer with an empty `a=ssrc:` line (and other broken attribute values): the
    // client's mistake, so 400, not a 500.
    let offer = {
        let p = client_peer().await;
        let _sender = add_sender(&p, "bob").await;
        p.offer().await
    };
    for (what, broken) in [
        (
            "empty a=ssrc",
            offer.replacen("a=mid:", "a=ssrc:\r\na=mid:", 1),
        ),
        ("a=ssrc emptied", {
            let mut out = String::new();
            for l in offer.split_inclusive("\r\n") {
                out.push_str(if l.starts_with("a=ssrc:") {
                    "a=ssrc:\r\n"
                } else {
                    l
                });
            }
            out
        }),
        (
            "bad a=ssrc",
            offer.replacen("a=mid:", "a=ssrc:x y\r\na=mid:", 1),
        ),
        (
            "empty a=rtpmap",
            offer.replacen("a=mid:", "a=rtpmap:\r\na=mid:", 1),
        ),
        (
            "bad a=fmtp",
            offer.replacen("a=mid:", "a=fmtp:\r\na=mid:", 1),
        ),
    ] {
        let (st, _, body) = post_sdp(&s.url("/whip/other"), &pub_token, &broken).await;
        assert!(st == 400 || st == 201, "WHIP with {what}: {st} {body}");
    }
    let r = http
        .post(s.url("/whip/other"))
        .bearer_auth(&pub_token)
        .header("content-type", "text/plain")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let (st, _, body) = post_sdp(&s.url("/whip/other"), &pub_token, &"v".repeat(200_000)).await;
    assert_eq!(st, 413);
    // Errors raised before a handler runs (body limit, unknown route, wrong method, a
    // WebSocket request without upgrade) are JSON errors too.
    let json_error = |st: u16, body: &str| {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{st}: not JSON ({e}): {body}"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{v}"
        );
    };
    json_error(st, &body);
    for (method, path) in [
        (reqwest::Method::GET, "/api/nothing-here"),
        (reqwest::Method::PATCH, "/api/rooms"),
        (reqwest::Method::GET, "/ws?token=x"),
    ] {
        let r = http.request(method, s.url(path)).send().await.unwrap();
        let st = r.status().as_u16();
        assert!((400..500).contains(&st), "{path}: {st}");
        json_error(st, &r.text().await.unwrap());
    }

    // --- Garbage datagrams to every media port of the range.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg_ports = s.media_ports();
    let mut sent = 0;
    for round in 0..20u8 {
        for port in cfg_ports.clone() {
            let junk: Vec<u8> = (0..(round as usize * 37 % 1400 + 1))
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(round))
                .collect();
            // STUN-looking, DTLS-looking, RTP-looking and random first bytes.
            for first in [0x00u8, 0x16, 0x80, 0xff] {
                let mut d = junk.clone();
                d[0] = first;
                let _ = sock.send_to(&d, ("127.0.0.1", port)).await;
                sent += 1;
            }
        }
    }
    assert!(sent > 1000);

    // The healthy room still flows: new frames, still decodable at the right size.
    let before = video.lock().unwrap().frames.len();
    eventually("healthy room keeps flowing after the abuse", 10, || {
        video.lock().unwrap().frames.len() >= before + 30
    })
    .await;
    let frames = video.lock().unwrap().frames.clone();
    let decoded_before = decode_h264(&frames[..before]).len();
    let decoded = decode_h264(&frames);
    assert!(
        decoded.len() >= decoded_before + 25 && decoded.iter().all(|d| *d == (320, 240)),
        "{decoded_before} then {decoded:?}"
    );
    assert!(s.metric("cohost_signaling_errors_total").await >= 8);
    let h = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(h.status(), 200);
}
