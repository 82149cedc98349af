//! `max_programs`: past the limit a room's program waits, first come first served, and starts
//! when a running program stops; a program without co-hosts gives its slot up at once instead
//! of after its grace period; the API says why there is no program; metrics count it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    client_peer, collect_both, decode_h264, delete, eventually, eventually_async, post_sdp,
    start_server_with, whip_publish, TestServer, API_KEY,
};
use serde_json::{json, Value};

async fn cue(s: &TestServer, room: &str, id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/api/rooms/{room}/cues")))
        .bearer_auth(API_KEY)
        .json(&json!({"id": id, "data": {"kind": "vote"}}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn room(s: &TestServer, room: &str) -> Value {
    s.get_api(&format!("/api/rooms/{room}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_past_the_limit_waits_for_a_free_slot() {
    let s = start_server_with(|c| {
        c.program.max_programs = 1;
        // Longer than any wait below: a waiting room must not wait for a grace period.
        c.program.grace = Duration::from_secs(60);
    })
    .await;
    assert_eq!(s.metric("cohost_programs_max").await, 1);
    assert_eq!(
        s.metric("cohost_mixer_workers").await,
        0,
        "no pool before a program"
    );

    // Room "first" takes the only slot.
    let (_a, res_a, stop_a) = whip_publish(&s, "first", "alice", "host", 320, 240).await;
    eventually_async("first program running", 15, || async {
        s.metric("cohost_programs_running").await == 1
    })
    .await;

    // Room "second" waits: no program, a clear 503, the room says so, metrics count it.
    let (_b, _res_b, _stop_b) = whip_publish(&s, "second", "bob", "host", 320, 240).await;
    eventually_async("second program waiting", 15, || async {
        s.metric("cohost_programs_waiting").await == 1
    })
    .await;
    assert_eq!(s.metric("cohost_programs_running").await, 1);
    assert_eq!(s.metric("cohost_programs_deferred_total").await, 1);
    assert!(s.metric("cohost_mixer_workers").await >= 1);
    // Every unlabelled name the README's "Operating it" table tells operators to watch.
    let text = s.metrics().await;
    for name in [
        "cohost_program_late_frames_total",
        "cohost_program_frames_out_total",
        "cohost_program_mix_seconds_total",
        "cohost_mixer_workers",
        "cohost_programs_waiting",
        "cohost_programs_deferred_total",
        "cohost_programs_running",
        "cohost_programs_max",
        "cohost_rtp_packets_dropped_total",
        "cohost_program_keyframe_requests_total",
        "cohost_program_frames_dropped_total",
        "cohost_rooms",
        "cohost_publishers",
        "cohost_whep_program_viewers",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from /metrics"
        );
    }
    let (status, body) = cue(&s, "second", "c1").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string().contains("free slot"),
        "the error says why: {body}"
    );
    let info = room(&s, "second").await;
    assert_eq!(info["media"]["program"]["waiting_for_slot"], true, "{info}");
    assert_eq!(info["media"]["program"]["running"], false, "{info}");
    // The running program is unaffected.
    assert_eq!(cue(&s, "first", "c2").await.0, 202);

    // Alice leaves: with a room waiting, her program stops at once (no grace period) and the
    // waiting one starts, fed by bob's media.
    stop_a.store(true, Ordering::Relaxed);
    let token = s.token("first", "alice", "host").await;
    assert!(delete(&res_a, &token).await < 300);
    eventually_async("second program started", 15, || async {
        s.metric("cohost_programs_waiting").await == 0
            && s.metric("cohost_programs_running").await == 1
    })
    .await;
    let info = room(&s, "second").await;
    assert_eq!(info["media"]["program"]["running"], true, "{info}");
    let before = s.metric("cohost_program_frames_in_total").await;
    eventually_async("bob's pictures reach the second program", 15, || async {
        s.metric("cohost_program_frames_in_total").await > before + 30
    })
    .await;
    eventually_async("a cue into the second program", 15, || async {
        cue(&s, "second", "c3").await.0 == 202
    })
    .await;
    // Per-room program counters: the running room has its own, the stopped one none.
    let text = s.metrics().await;
    let room_metric = |name: &str, room: &str| -> Option<f64> {
        let prefix = format!("{name}{{room=\"{room}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
    };
    assert!(room_metric("cohost_room_program_frames_in_total", "second").unwrap() > 30.0);
    assert!(room_metric("cohost_room_program_frames_out_total", "second").unwrap() > 0.0);
    assert!(room_metric("cohost_room_program_mix_seconds_total", "second").unwrap() > 0.0);
    assert!(room_metric("cohost_room_program_late_frames_total", "second").is_some());
    assert_eq!(
        room_metric("cohost_room_program_frames_out_total", "first"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_program_in_its_grace_period_yields_its_slot() {
    let s = start_server_with(|c| {
        c.program.max_programs = 1;
        c.program.grace = Duration::from_secs(60);
    })
    .await;
    let (_a, res_a, stop_a) = whip_publish(&s, "first", "alice", "host", 320, 240).await;
    eventually_async("first program running", 15, || async {
        s.metric("cohost_programs_running").await == 1
    })
    .await;
    // Alice leaves: her program would linger for its 60 s grace period...
    stop_a.store(true, Ordering::Relaxed);
    let token = s.token("first", "alice", "host").await;
    assert!(delete(&res_a, &token).await < 300);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.metric("cohost_programs_running").await, 1);
    // ...but a room with a co-host on air takes the slot at once.
    let (_b, _res_b, _stop_b) = whip_publish(&s, "second", "bob", "host", 320, 240).await;
    eventually_async(
        "second program started long before the grace ends",
        15,
        || async { room(&s, "second").await["media"]["program"]["running"] == true },
    )
    .await;
    // The first room's program is gone (with no outputs, so is its program state).
    assert_ne!(room(&s, "first").await["media"]["program"]["running"], true);
    assert_eq!(s.metric("cohost_programs_running").await, 1);
    assert_eq!(s.metric("cohost_programs_waiting").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_start_waiting_programs() {
    let s = start_server_with(|c| c.program.max_programs = 1).await;
    let (_a, _ra, _sa) = whip_publish(&s, "first", "alice", "host", 320, 240).await;
    eventually_async("first program running", 15, || async {
        s.metric("cohost_programs_running").await == 1
    })
    .await;
    let (_b, _rb, _sb) = whip_publish(&s, "second", "bob", "host", 320, 240).await;
    eventually_async("second program waiting", 15, || async {
        s.metric("cohost_programs_waiting").await == 1
    })
    .await;
    // Stopping the first program during shutdown must not hand its slot to the second.
    s.state.programs.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.state.programs.running(), 0);
    assert_eq!(s.state.programs.waiting(), 0);
    assert_eq!(s.metric("cohost_programs_running").await, 0);
}

/// `max_viewers`: past a room's WHEP viewer limit `POST /whep/{room}` answers 503 with the
/// reason while the viewers in place keep watching; a place freed by `DELETE` is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_program_viewers_past_the_limit_are_refused() {
    let s = start_server_with(|c| c.program.max_viewers = 1).await;
    let room = "monitors";
    let (_p, _res, _stop) = whip_publish(&s, room, "host", "host", 320, 240).await;
    let token = s.token(room, "fan", "viewer").await;
    let url = s.url(&format!("/whep/{room}"));
    let mut first = client_peer().await;
    first.add_recv().await;
    let offer = first.offer().await;
    let mut tries = 0;
    let (loc, answer) = loop {
        let (st, loc, body) = post_sdp(&url, &token, &offer).await;
        if st == 503 && tries < 100 {
            // The program is starting.
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(st, 201, "{body}");
        break (loc.unwrap(), body);
    };
    first.set_answer(&answer).await;
    let (video, _audio) = collect_both(&mut first).await;

    let second = client_peer().await;
    second.add_recv().await;
    let (st, _, body) = post_sdp(&url, &token, &second.offer().await).await;
    assert_eq!(st, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WHEP viewers"),
        "{v}"
    );
    assert_eq!(s.metric("cohost_whep_program_viewers").await, 1);
    eventually("the first viewer still decodes the program", 20, || {
        decode_h264(&video.lock().unwrap().frames).len() >= 10
    })
    .await;

    assert_eq!(delete(&s.url(&loc), &token).await, 200);
    let third = client_peer().await;
    third.add_recv().await;
    let (st, _, body) = post_sdp(&url, &token, &third.offer().await).await;
    assert_eq!(st, 201, "a freed place is taken again: {body}");
}
