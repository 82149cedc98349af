//! The real server with three in-process webrtc-rs co-hosts (host and two guests, each
//! brought on air through a different co-host path) sending known H.264 + Opus: each receives
//! the other two's media, which decodes to the sent picture size; a guest leaving is announced
//! and its tracks stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;

struct CoHost {
    name: &'static str,
    ws: Ws,
    _pub_peer: ClientPeer,
    stop: Arc<AtomicBool>,
    subs: HashMap<String, ClientPeer>,
    got: Tracks,
}

async fn publish(
    ws: &mut Ws,
    name: &'static str,
    w: usize,
    h: usize,
) -> (ClientPeer, Arc<AtomicBool>) {
    let peer = client_peer().await;
    let sender = add_sender(&peer, name).await;
    let offer = peer.offer().await;
    ws.send(json!({"type": "publish", "sdp": offer}));
    let ans = ws
        .wait("publish answer", |v| {
            v["type"] == "answer" && v["pc"] == "publish"
        })
        .await;
    peer.set_answer(ans["sdp"].as_str().unwrap()).await;
    let stop = Arc::new(AtomicBool::new(false));
    sender.spawn(w, h, 60.0, stop.clone());
    (peer, stop)
}

async fn subscribe(c: &mut CoHost, target: &str) {
    let peer = client_peer().await;
    peer.add_recv().await;
    let offer = peer.offer().await;
    c.ws.send(json!({"type": "subscribe", "identity": target, "sdp": offer}));
    let pc = format!("subscribe:{target}");
    let ans =
        c.ws.wait("subscribe answer", move |v| {
            v["type"] == "answer" && v["pc"] == pc.as_str()
        })
        .await;
    peer.set_answer(ans["sdp"].as_str().unwrap()).await;
    c.subs.insert(target.to_owned(), peer);
}

async fn wait_publishing(ws: &mut Ws, who: &str) {
    let who = who.to_owned();
    ws.wait("publishing", move |v| {
        (v["type"] == "participant_updated" || v["type"] == "participant_joined")
            && v["participant"]["identity"] == who.as_str()
            && v["participant"]["publishing"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_two_guests_receive_each_other() {
    let s = start_server().await;
    let room = "cohost-3";
    let sizes: HashMap<&str, (usize, usize)> =
        [("host", (320, 240)), ("g1", (256, 144)), ("g2", (160, 120))]
            .into_iter()
            .collect();

    // Host: on air at join.
    let mut host_ws = Ws::connect(&s, &s.token(room, "host", "host").await).await;
    host_ws.send(json!({"type": "join"}));
    let j = host_ws.wait_type("joined").await;
    assert_eq!(j["you"]["on_air"], true);
    let (host_pub, host_stop) = publish(&mut host_ws, "host", 320, 240).await;

    // Guest 1: asks, the host accepts.
    let mut g1_ws = Ws::connect(&s, &s.token(room, "g1", "guest").await).await;
    g1_ws.send(json!({"type": "join"}));
    let j = g1_ws.wait_type("joined").await;
    assert_eq!(j["you"]["on_air"], false);
    g1_ws.send(json!({"type": "publish", "sdp": "v=0"}));
    let e = g1_ws.wait_type("error").await;
    assert_eq!(e["code"], "not_on_air");
    g1_ws.send(json!({"type": "request_cohost"}));
    let r = host_ws.wait_type("cohost_request").await;
    assert_eq!(r["identity"], "g1");
    host_ws.send(json!({"type": "accept_request", "identity": "g1"}));
    g1_ws.wait_type("on_air").await;
    let (g1_pub, g1_stop) = publish(&mut g1_ws, "g1", 256, 144).await;

    // Guest 2: the host invites, the guest accepts.
    let mut g2_ws = Ws::connect(&s, &s.token(room, "g2", "guest").await).await;
    g2_ws.send(json!({"type": "join"}));
    g2_ws.wait_type("joined").await;
    host_ws.send(json!({"type": "invite", "identity": "g2"}));
    g2_ws.wait_type("invited").await;
    g2_ws.send(json!({"type": "accept_invite"}));
    let a = host_ws.wait_type("invite_answered").await;
    assert_eq!(a["accepted"], true);
    g2_ws.wait_type("on_air").await;
    let (g2_pub, g2_stop) = publish(&mut g2_ws, "g2", 160, 120).await;

    let mut cohosts = vec![
        CoHost {
            name: "host",
            ws: host_ws,
            _pub_peer: host_pub,
            stop: host_stop,
            subs: HashMap::new(),
            got: HashMap::new(),
        },
        CoHost {
            name: "g1",
            ws: g1_ws,
            _pub_peer: g1_pub,
            stop: g1_stop,
            subs: HashMap::new(),
            got: HashMap::new(),
        },
        CoHost {
            name: "g2",
            ws: g2_ws,
            _pub_peer: g2_pub,
            stop: g2_stop,
            subs: HashMap::new(),
            got: HashMap::new(),
        },
    ];
    let names = ["host", "g1", "g2"];
    for c in cohosts.iter_mut() {
        for other in names {
            if other == c.name {
                continue;
            }
            wait_publishing(&mut c.ws, other).await;
            subscribe(c, other).await;
        }
    }
    // Collect the remote tracks of each subscription.
    for c in cohosts.iter_mut() {
        for (target, peer) in c.subs.iter_mut() {
            for _ in 0..2 {
                let t = tokio::time::timeout(Duration::from_secs(15), peer.tracks.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{} got no track from {target}", c.name))
                    .unwrap();
                let kind = t.kind().await;
                c.got.insert((target.clone(), kind), collect(t, kind));
            }
        }
    }
    // Every co-host decodes the other two: right picture size, Opus audio with signal.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut missing = Vec::new();
        for c in &cohosts {
            for ((target, kind), r) in &c.got {
                let r = r.lock().unwrap();
                if *kind == RtpCodecKind::Video {
                    let decoded = decode_h264(&r.frames);
                    let want = sizes[target.as_str()];
                    if decoded.iter().filter(|d| **d == want).count() < 10 {
                        missing.push(format!(
                            "{} <- {target} video ({} frames, decoded {:?})",
                            c.name,
                            r.frames.len(),
                            decoded.last()
                        ));
                    }
                    assert!(
                        decoded.iter().all(|d| *d == want),
                        "{} got a wrong picture from {target}: {decoded:?}",
                        c.name
                    );
                } else {
                    let (n, rms) = decode_opus(&r.frames);
                    if n < 25 || rms < 1000.0 {
                        missing.push(format!(
                            "{} <- {target} audio ({n} packets, rms {rms:.0})",
                            c.name
                        ));
                    }
                }
            }
            assert_eq!(
                c.got.len(),
                4,
                "{} should have 2 tracks from each of 2 co-hosts",
                c.name
            );
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "media did not arrive: {missing:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.metric("cohost_keyframe_requests_total").await >= 3,
        "a keyframe is requested for each new subscriber"
    );
    assert_eq!(s.metric("cohost_publishers").await, 3);

    // Guest 2 leaves: the others are told and its tracks stop.
    let g2 = cohosts.pop().unwrap();
    g2.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    g2.ws.close();
    for c in cohosts.iter_mut() {
        c.ws.wait("g2 left", |v| {
            v["type"] == "participant_left" && v["identity"] == "g2"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts: Vec<usize> = cohosts
        .iter()
        .map(|c| {
            c.got[&("g2".to_string(), RtpCodecKind::Video)]
                .lock()
                .unwrap()
                .packets
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (c, before) in cohosts.iter().zip(counts) {
        let r = c.got[&("g2".to_string(), RtpCodecKind::Video)]
            .lock()
            .unwrap();
        assert_eq!(
            r.packets, before,
            "{} still receives g2's video after it left",
            c.name
        );
        // The others keep flowing.
        let h = c
            .got
            .iter()
            .find(|((t, k), _)| t != "g2" && *k == RtpCodecKind::Video)
            .unwrap()
            .1;
        assert!(h.lock().unwrap().last_packet.unwrap().elapsed() < Duration::from_millis(500));
    }
    eventually("publishers gauge drops to 2", 5, || true).await;
    assert_eq!(s.metric("cohost_publishers").await, 2);
    for c in &cohosts {
        c.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The host's mute holds for the muted co-host's publications: set before the guest publishes,
/// it holds when it does (its audio reaches no one, its video does), and publishing again
/// does not undo it; unmuting lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_mute_holds_across_publications() {
    let s = start_server().await;
    let room = "mute-1";
    let mut host_ws = Ws::connect(&s, &s.token(room, "host", "host").await).await;
    host_ws.send(json!({"type": "join"}));
    host_ws.wait_type("joined").await;
    let mut g_ws = Ws::connect(&s, &s.token(room, "g", "guest").await).await;
    g_ws.send(json!({"type": "join"}));
    g_ws.wait_type("joined").await;
    host_ws.send(json!({"type": "invite", "identity": "g"}));
    g_ws.wait_type("invited").await;
    g_ws.send(json!({"type": "accept_invite"}));
    g_ws.wait_type("on_air").await;

    // Muted before it publishes anything.
    host_ws.send(json!({"type": "mute", "identity": "g", "kind": "audio", "muted": true}));
    host_ws
        .wait("mute announced", |v| {
            v["type"] == "participant_updated"
                && v["participant"]["identity"] == "g"
                && v["participant"]["audio_muted"] == true
        })
        .await;
    let audio_muted = |info: serde_json::Value| {
        info["media"]["tracks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["identity"] == "g").cloned())
            .and_then(|t| t["audio_muted"].as_bool())
    };
    let (_pub1, stop1) = publish(&mut g_ws, "g", 160, 120).await;
    wait_publishing(&mut host_ws, "g").await;
    assert_eq!(
        audio_muted(s.get_api(&format!("/api/rooms/{room}")).await),
        Some(true)
    );

    // On the media plane: the host receives g's video and none of its audio.
    let mut host = CoHost {
        name: "host",
        ws: host_ws,
        _pub_peer: client_peer().await,
        stop: Arc::new(AtomicBool::new(false)),
        subs: HashMap::new(),
        got: HashMap::new(),
    };
    subscribe(&mut host, "g").await;
    let peer = host.subs.get_mut("g").unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    while let Ok(Some(t)) = tokio::time::timeout_at(deadline.into(), peer.tracks.recv()).await {
        let kind = t.kind().await;
        host.got.insert(("g".into(), kind), collect(t, kind));
    }
    let video = host.got[&("g".to_string(), RtpCodecKind::Video)].clone();
    eventually("g's video decodes at the host", 10, || {
        decoded_at(&video, (160, 120)) >= 10
    })
    .await;
    let audio_packets = host
        .got
        .get(&("g".to_string(), RtpCodecKind::Audio))
        .map_or(0, |a| a.lock().unwrap().packets);
    assert_eq!(audio_packets, 0, "muted audio was forwarded");

    // Publishing again does not lift the mute.
    stop1.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_pub2, stop2) = publish(&mut g_ws, "g", 160, 120).await;
    assert_eq!(
        audio_muted(s.get_api(&format!("/api/rooms/{room}")).await),
        Some(true),
        "a new publication must not undo the host's mute"
    );
    // Unmuting lifts it.
    host.ws
        .send(json!({"type": "mute", "identity": "g", "kind": "audio", "muted": false}));
    eventually_async("unmuted", 10, || async {
        audio_muted(s.get_api(&format!("/api/rooms/{room}")).await) == Some(false)
    })
    .await;
    stop2.store(true, std::sync::atomic::Ordering::Relaxed);
}
