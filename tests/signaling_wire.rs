//! The signaling messages not covered elsewhere, on the wire against the real server with
//! webrtc-rs peers: `candidate` (accepted for a live peer connection, refused for an unknown
//! one or a malformed candidate), `unsubscribe` (the subscriber's media stops), `unpublish`
//! (the others see `publishing: false` and `track_unpublished`, the publication is freed;
//! `track_published` with each codec announced it), `leave` (the others see
//! `participant_left`, the socket is closed), and keep-alive: a client that answers the
//! server's pings stays, a silent one is dropped after the idle timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Waits until the socket's reader ends (the server closed it).
async fn closed(ws: &mut Ws, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.rx.recv()).await {
            Ok(Some(v)) => ws.seen.push(v),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_unsubscribe_unpublish_leave_and_keepalive() {
    let s = start_server_with(|c| {
        c.signaling.ping_interval = Duration::from_millis(200);
        c.signaling.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let room = "wire";
    let mut host = Ws::connect(&s, &s.token(room, "host", "host").await).await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;
    let mut guest = Ws::connect(&s, &s.token(room, "guest", "guest").await).await;
    guest.send(json!({"type": "join"}));
    guest.wait_type("joined").await;

    // The host publishes.
    let pub_peer = client_peer().await;
    let sender = add_sender(&pub_peer, "host").await;
    let offer = pub_peer.offer().await;
    host.send(json!({"type": "publish", "sdp": offer}));
    let a = host
        .wait("publish answer", |v| {
            v["type"] == "answer" && v["pc"] == "publish"
        })
        .await;
    pub_peer.set_answer(a["sdp"].as_str().unwrap()).await;
    let stop = Arc::new(AtomicBool::new(false));
    sender.spawn(160, 120, 120.0, stop.clone());

    // Trickled candidates: one of the publisher's own (from its offer) is accepted, as is
    // end-of-candidates; an unknown peer connection and a malformed candidate are errors.
    let cand = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a="))
        .find(|l| l.starts_with("candidate:"))
        .expect("a candidate in the offer")
        .to_owned();
    host.forget();
    host.send(json!({"type": "candidate", "pc": "publish",
        "candidate": {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}}));
    host.send(json!({"type": "candidate", "pc": "publish", "candidate": {"candidate": ""}}));
    host.send(json!({"type": "candidate", "pc": "subscribe:nobody",
        "candidate": {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}}));
    let e = host.wait_type("error").await;
    assert_eq!(e["code"], "not_found", "{e}");
    host.forget();
    host.send(json!({"type": "candidate", "pc": "publish", "candidate": {"candidate": 7}}));
    let e = host.wait_type("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    host.forget();
    // Only those two were errors: a ping now is answered with nothing queued before it.
    host.send(json!({"type": "ping", "ts": 1}));
    let p = host.wait_type("pong").await;
    assert_eq!(p["ts"].as_f64(), Some(1.0));
    assert!(
        host.seen.iter().all(|v| v["type"] != "error"),
        "{:#?}",
        host.seen
    );

    // The guest subscribes to the host and receives its video. It was told which tracks the
    // host publishes, with their codecs.
    let up = guest
        .wait("host publishing", |v| {
            v["type"] == "participant_updated"
                && v["participant"]["identity"] == "host"
                && v["participant"]["publishing"] == true
        })
        .await;
    assert_eq!(
        up["participant"]["tracks"],
        json!([{"kind": "video", "codec": "video/H264"}, {"kind": "audio", "codec": "audio/opus"}])
    );
    for (kind, codec) in [("video", "video/H264"), ("audio", "audio/opus")] {
        guest
            .wait("track_published", |v| {
                v["type"] == "track_published"
                    && v["identity"] == "host"
                    && v["track"]["kind"] == kind
                    && v["track"]["codec"] == codec
            })
            .await;
    }
    let mut sub = client_peer().await;
    sub.add_recv().await;
    let offer = sub.offer().await;
    guest.send(json!({"type": "subscribe", "identity": "host", "sdp": offer}));
    let a = guest
        .wait("subscribe answer", |v| {
            v["type"] == "answer" && v["pc"] == "subscribe:host"
        })
        .await;
    sub.set_answer(a["sdp"].as_str().unwrap()).await;
    let (video, _audio) = collect_both(&mut sub).await;
    eventually("the guest decodes the host", 15, || {
        decoded_at(&video, (160, 120)) >= 5
    })
    .await;

    // unsubscribe: the guest's media stops while the host still publishes.
    guest.send(json!({"type": "unsubscribe", "identity": "host"}));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = video.lock().unwrap().packets;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        video.lock().unwrap().packets,
        before,
        "media still flows after unsubscribe"
    );
    assert_eq!(s.metric("cohost_publishers").await, 1);

    // Keep-alive: both clients read (their WebSocket library answers the server's pings), so
    // they outlive the 1.5 s idle timeout; a client that never reads is dropped.
    let url = format!(
        "ws://{}/ws?token={}",
        s.addr,
        s.token(room, "silent", "viewer").await
    );
    let (mut silent, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    silent
        .send(Message::Text(json!({"type": "join"}).to_string().into()))
        .await
        .unwrap();
    host.wait("silent joined", |v| {
        v["type"] == "participant_joined" && v["participant"]["identity"] == "silent"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    host.wait("silent dropped", |v| {
        v["type"] == "participant_left" && v["identity"] == "silent"
    })
    .await;
    // Its socket was closed by the server: reading ends after what was queued.
    let mut ended = false;
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(5), silent.next()).await {
        match m {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                ended = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    assert!(ended, "the silent client's socket stays open");
    guest.forget();
    guest.send(json!({"type": "ping", "ts": 2}));
    assert_eq!(guest.wait_type("pong").await["ts"].as_f64(), Some(2.0));

    // unpublish: the others see publishing false; the publication is freed.
    host.send(json!({"type": "unpublish"}));
    guest
        .wait("host unpublished", |v| {
            v["type"] == "participant_updated"
                && v["participant"]["identity"] == "host"
                && v["participant"]["publishing"] == false
                && v["participant"]["tracks"] == json!([])
        })
        .await;
    for kind in ["video", "audio"] {
        guest
            .wait("track_unpublished", |v| {
                v["type"] == "track_unpublished" && v["identity"] == "host" && v["kind"] == kind
            })
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    eventually_async("publication freed", 10, || async {
        s.metric("cohost_publishers").await == 0 && s.metric("cohost_publishers_alive").await == 0
    })
    .await;

    // leave: the others are told, the server closes the socket.
    host.send(json!({"type": "leave"}));
    guest
        .wait("host left", |v| {
            v["type"] == "participant_left" && v["identity"] == "host"
        })
        .await;
    assert!(
        closed(&mut host, 5).await,
        "the socket stays open after leave"
    );
}

/// A client flooding the socket is limited (token bucket per connection): past the burst its
/// messages are dropped with one `rate_limited` error a second, the others in the room are
/// served, and it is served again once it slows down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_rate_limited() {
    let s = start_server_with(|c| {
        c.signaling.message_rate = 5.0;
        c.signaling.message_burst = 5.0;
    })
    .await;
    let room = "flood";
    let mut flood = Ws::connect(&s, &s.token(room, "f", "guest").await).await;
    flood.send(json!({"type": "join"}));
    flood.wait_type("joined").await;
    let mut calm = Ws::connect(&s, &s.token(room, "c", "guest").await).await;
    calm.send(json!({"type": "join"}));
    calm.wait_type("joined").await;
    flood.forget();
    for i in 0..40 {
        flood.send(json!({"type": "ping", "ts": i}));
    }
    let e = flood.wait_type("error").await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(v) = flood.rx.try_recv() {
        flood.seen.push(v);
    }
    let pongs = flood.seen.iter().filter(|v| v["type"] == "pong").count();
    let errors = flood.seen.iter().filter(|v| v["type"] == "error").count();
    // The burst (5, the join used one) plus what refilled while they arrived.
    assert!(
        (3..=8).contains(&pongs),
        "{pongs} pongs of 40: {:#?}",
        flood.seen
    );
    assert_eq!(errors, 1, "one error, not one per dropped message");
    // The others are served meanwhile.
    calm.send(json!({"type": "ping", "ts": 1}));
    calm.wait_type("pong").await;
    // Slowed down, the flooder is served again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    flood.forget();
    flood.send(json!({"type": "ping", "ts": 99}));
    let p = flood.wait_type("pong").await;
    assert_eq!(p["ts"].as_f64(), Some(99.0));
    assert!(s.metric("cohost_signaling_errors_total").await >= 30);
}
