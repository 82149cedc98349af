//! WHIP publisher + WHEP subscriber of that co-host, with webrtc-rs clients against the real
//! server: media flows and decodes; DELETE of the WHIP resource ends it for the subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
        let r = video.lock().unwrap();
        decode_h264(&r.frames)
            .iter()
            .filter(|d| **d == (320, 240))
            .count()
            >= 10
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
    // PATCH (trickle) is answered 405 per RFC 9725.
    let st = reqwest::Client::new()
        .patch(&resource)
        .bearer_auth(&host_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 405);

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
    // Deleting again is a 404; the WHEP resource can still be deleted cleanly.
    assert_eq!(delete(&resource, &guest_token).await, 404);
    assert_eq!(delete(&whep_resource, &host_token).await, 200);
}
