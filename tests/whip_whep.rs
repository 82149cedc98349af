//! WHIP publisher + WHEP subscriber of that co-host, with webrtc-rs clients against the real
//! server: media flows and decodes; DELETE of the WHIP resource ends it for the subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_whep_subscriber() {
    let s = start_server().await;
    let room = "whip-room";
    let (_pub_peer, resource, stop) = whip_publish(&s, room, "obs", "guest", 320, 240).await;
    // A host token of the room watches the WHIP co-host over WHEP.
    let host_token = s.token(room, "app-host", "host").await;
    let (mut sub, whep_resource) = whep_subscribe(&s, room, "obs", &host_token).await;
    let (video, audio) = collect_both(&mut sub).await;
    eventually("WHEP video decodes at 320x240", 20, || {
        decoded_at(&video, (320, 240)) >= 10
    })
    .await;
    eventually("WHEP audio decodes", 10, || {
        let r = audio.lock().unwrap();
        let (n, rms) = decode_opus(&r.frames);
        n >= 25 && rms > 1000.0
    })
    .await;

    // The WHIP participant is in the room (signaling sees it publishing).
    let info = s.get_api(&format!("/api/rooms/{room}")).await;
    assert_eq!(info["participants"][0]["identity"], "obs");
    assert_eq!(info["participants"][0]["publishing"], true);

    // A viewer token may not use the per-co-host WHEP route.
    let viewer = s.token(room, "v", "viewer").await;
    let (st, _, body) = post_sdp(&s.url(&format!("/whep/{room}/obs")), &viewer, "v=0").await;
    assert_eq!(st, 403, "{body}");
    // PATCH is trickle ICE (tests/whip_trickle.rs): without a fragment's media type, 415.
    let st = reqwest::Client::new()
        .patch(&resource)
        .bearer_auth(&host_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 415);

    // A WHEP session can be ended by its owner or the host, not by anyone else in the room,
    // and its id cannot be guessed: the owner's identity with other random bits is unknown.
    let someone = s.token(room, "someone", "guest").await;
    assert_eq!(delete(&whep_resource, &someone).await, 403);
    let (base, _) = whep_resource.rsplit_once('/').unwrap();
    let guessed = format!("{base}/{}.{}", hex("app-host"), "0".repeat(32));
    assert_eq!(delete(&guessed, &host_token).await, 404);
    assert_eq!(
        delete(&format!("{base}/not-a-session"), &host_token).await,
        404
    );

    // DELETE ends the WHIP session: the subscriber's media stops.
    let guest_token = s.token(room, "obs", "guest").await;
    assert_eq!(delete(&resource, &guest_token).await, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = video.lock().unwrap().packets;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        video.lock().unwrap().packets,
        before,
        "media still flows after DELETE"
    );
    assert_eq!(s.metric("cohost_publishers").await, 0);
    // The publication is freed, not only unlisted: its tasks held it (and with it the peer
    // connection and its buffers) after the connection closed, ~1 MB per co-host session.
    eventually_async("publication freed", 10, || async {
        s.metric("cohost_publishers_alive").await == 0
    })
    .await;
    // Deleting again is a 404; the WHEP session ended with its publication: 404 too.
    assert_eq!(delete(&resource, &guest_token).await, 404);
    assert_eq!(delete(&whep_resource, &host_token).await, 404);
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Resource URLs work for any identity: percent-encoded in `Location`, decoded on `DELETE`;
/// a co-host called `program` does not collide with the program viewers' resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_of_any_identity_round_trip() {
    let s = start_server().await;
    let room = "odd-names";
    let who = "OBS Studio/1 \u{fc}";
    let token = s.token(room, who, "guest").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "odd").await;
    let offer = peer.offer().await;
    let (st, loc, answer) = post_sdp(&s.url(&format!("/whip/{room}")), &token, &offer).await;
    assert_eq!(st, 201, "{answer}");
    peer.set_answer(&answer).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(160, 120, 120.0, stop.clone());
    let loc = loc.unwrap();
    assert_eq!(loc, "/whip/odd-names/OBS%20Studio%2F1%20%C3%BC");
    let resource = s.url(&loc);

    let (_p2, program_res, stop2) = whip_publish(&s, room, "program", "guest", 160, 120).await;
    let host = s.token(room, "h", "host").await;
    let (_sub, whep_res) = whep_subscribe(&s, room, "program", &host).await;
    assert!(whep_res.contains("/whep/odd-names/program/"), "{whep_res}");
    assert_eq!(delete(&whep_res, &host).await, 200);
    assert_eq!(delete(&whep_res, &host).await, 404);

    assert_eq!(delete(&resource, &token).await, 200);
    assert_eq!(delete(&resource, &token).await, 404);
    assert_eq!(delete(&program_res, &host).await, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stop2.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A WHIP publisher that posts again with the same identity (OBS reconnecting after a network
/// blip) replaces its old session instead of getting 409 until the old one times out: the
/// room has one participant, one publication (the old one freed), and subscribers get the new
/// publication's pictures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_posting_again_replaces_its_session() {
    let s = start_server().await;
    let room = "reconnect";
    let (_old, _old_res, stop_old) = whip_publish(&s, room, "obs", "guest", 320, 240).await;
    eventually_async("first publication", 10, || async {
        s.metric("cohost_publishers").await == 1
    })
    .await;
    let (_new, res, stop_new) = whip_publish(&s, room, "obs", "guest", 160, 120).await;
    let host = s.token(room, "h", "host").await;
    let (mut sub, _) = whep_subscribe(&s, room, "obs", &host).await;
    let (video, _audio) = collect_both(&mut sub).await;
    eventually("the new publication's pictures arrive", 20, || {
        decoded_at(&video, (160, 120)) >= 10
    })
    .await;
    assert_eq!(s.metric("cohost_publishers").await, 1);
    eventually_async("the old publication is freed", 10, || async {
        s.metric("cohost_publishers_alive").await == 1
    })
    .await;
    let info = s.get_api(&format!("/api/rooms/{room}")).await;
    let parts = info["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{info}");
    assert_eq!(parts[0]["identity"], "obs");
    assert_eq!(parts[0]["publishing"], true, "{info}");
    stop_old.store(true, std::sync::atomic::Ordering::Relaxed);
    // The (shared) resource URL ends the live session.
    assert_eq!(
        delete(&res, &s.token(room, "obs", "guest").await).await,
        200
    );
    stop_new.store(true, std::sync::atomic::Ordering::Relaxed);
    eventually_async("publication ended", 10, || async {
        s.metric("cohost_publishers").await == 0
    })
    .await;
}
