//! The live program end to end: two webrtc-rs co-hosts publish known content; an RTMP output to
//! a real nginx-rtmp is added through the API; ffprobe/ffmpeg pull the stream from nginx and
//! find H.264 1280x720 ~30 fps + AAC 48 kHz, the layout SEI naming both co-hosts, and the cue
//! SEI of a cue posted through the API; nginx is killed and restarted and the output recovers.
//! The same program is served as HLS and to a WHEP program viewer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::{free_port, missing_tools, read_sei, Nginx};
use common::*;
use serde_json::{json, Value};

const LAYOUT_UUID: &str = "beb59904-6493-40f3-8a26-140d6aef0e04";
const CUE_UUID: &str = "9a44be0e-9ad1-4c7b-99e9-b8618dd4c159";

async fn output_state(s: &TestServer, room: &str, id: &str) -> Value {
    s.get_api(&format!("/api/rooms/{room}/outputs/{id}")).await
}

async fn wait_output(s: &TestServer, room: &str, id: &str, state: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = output_state(s, room, id).await;
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "output never became {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ffprobe_streams(url: &str) -> Value {
    let out = Command::new("timeout")
        .args([
            "20",
            "ffprobe",
            "-v",
            "error",
            "-analyzeduration",
            "3000000",
            "-show_streams",
            "-of",
            "json",
            url,
        ])
        .output()
        .expect("ffprobe");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn check_program_streams(v: &Value) {
    let streams = v["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["width"], 1280);
    assert_eq!(video["height"], 720);
    let (n, d) = video["r_frame_rate"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let fps = n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap();
    assert!((fps - 30.0).abs() < 1.5, "fps {fps}");
    // What every player and CDN takes: constrained baseline, no B-frames, 4:2:0.
    assert_eq!(video["profile"], "Constrained Baseline", "{video}");
    assert_eq!(video["has_b_frames"], 0, "{video}");
    assert_eq!(video["pix_fmt"], "yuv420p", "{video}");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("an audio stream");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["profile"], "LC", "{audio}");
    assert_eq!(audio["channels"], 2, "{audio}");
}

fn decodes(url: &str, frames: u32) -> usize {
    let out = Command::new("timeout")
        .args([
            "25",
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            url,
            "-map",
            "0:v:0",
            "-frames:v",
            &frames.to_string(),
            "-f",
            "null",
            "-",
        ])
        .args(["-progress", "pipe:1"])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_goes_out_by_rtmp_hls_and_whep() {
    if let Some(m) = missing_tools() {
        eprintln!("SKIPPED program_live: missing {m} (scripts/test.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nginx = Nginx::start(dir.path(), port);
    let s = start_server().await;
    let room = "live-show";
    let (_a, ra, sa) = whip_publish(&s, room, "alice", "host", 320, 240).await;
    let (_b, rb, sb) = whip_publish(&s, room, "bob", "guest", 320, 240).await;

    // An RTMP output through the API.
    let rtmp = format!("rtmp://127.0.0.1:{port}/live/show");
    let http = reqwest::Client::new();
    let r = http
        .post(s.url(&format!("/api/rooms/{room}/outputs")))
        .bearer_auth(API_KEY)
        .json(&json!({"url": rtmp}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out: Value = r.json().await.unwrap();
    let id = out["id"].as_str().unwrap().to_owned();
    wait_output(&s, room, &id, "live", 15).await;
    // A bad URL is a clear 400.
    let r = http
        .post(s.url(&format!("/api/rooms/{room}/outputs")))
        .bearer_auth(API_KEY)
        .json(&json!({"url": "http://x/y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Let both co-hosts reach the mix (keyframes), then read the stream from nginx.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = tokio::task::spawn_blocking({
        let u = rtmp.clone();
        move || ffprobe_streams(&u)
    })
    .await
    .unwrap();
    check_program_streams(&v);

    // Layout SEI names both co-hosts with their regions; a cue posted meanwhile appears.
    let pull = tokio::task::spawn_blocking({
        let u = rtmp.clone();
        move || read_sei(&u, 150, 30)
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = http
        .post(s.url(&format!("/api/rooms/{room}/cues")))
        .bearer_auth(API_KEY)
        .json(&json!({"id": "red-packet-1", "data": {"kind": "red_packet", "amount": 88}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["id"], "red-packet-1");
    // Idempotent by id.
    let r = http
        .post(s.url(&format!("/api/rooms/{room}/cues")))
        .bearer_auth(API_KEY)
        .json(&json!({"id": "red-packet-1", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["pts_ms"], ack["pts_ms"]);
    let seis = pull.await.unwrap();
    let layouts: Vec<Value> = seis
        .iter()
        .filter(|(u, _)| u == LAYOUT_UUID)
        .map(|(_, d)| serde_json::from_slice(d).expect("layout JSON"))
        .collect();
    assert!(!layouts.is_empty(), "no layout SEI in {} SEIs", seis.len());
    let l = layouts.last().unwrap();
    assert_eq!((l["w"].as_u64(), l["h"].as_u64()), (Some(1280), Some(720)));
    let ids: Vec<&str> = l["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identity"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"alice") && ids.contains(&"bob"), "{l}");
    for r in l["regions"].as_array().unwrap() {
        assert!(r["w"].as_u64().unwrap() > 0 && r["h"].as_u64().unwrap() > 0);
    }
    let cues: Vec<Value> = seis
        .iter()
        .filter(|(u, _)| u == CUE_UUID)
        .map(|(_, d)| serde_json::from_slice(d).expect("cue JSON"))
        .collect();
    assert_eq!(cues.len(), 3, "the cue is repeated on 3 frames: {cues:?}");
    assert!(cues
        .iter()
        .all(|c| c["id"] == "red-packet-1" && c["data"]["amount"] == 88));

    // HLS from the server itself.
    let playlist = s.url(&format!("/live/{room}/index.m3u8"));
    let v = tokio::task::spawn_blocking({
        let u = playlist.clone();
        move || ffprobe_streams(&u)
    })
    .await
    .unwrap();
    check_program_streams(&v);

    // A WHEP program viewer with a viewer token gets decodable program video and audio.
    let viewer = s.token(room, "fan", "viewer").await;
    let mut peer = client_peer().await;
    peer.add_recv().await;
    let offer = peer.offer().await;
    let (st, _, body) = post_sdp(&s.url(&format!("/whep/{room}")), &viewer, &offer).await;
    assert_eq!(st, 201, "{body}");
    peer.set_answer(&body).await;
    let (video, audio) = collect_both(&mut peer).await;
    eventually("program video over WHEP decodes at 1280x720", 20, || {
        decoded_at(&video, (1280, 720)) >= 10
    })
    .await;
    eventually("program audio over WHEP decodes", 10, || {
        decode_opus(&audio.lock().unwrap().frames).0 >= 25
    })
    .await;

    // nginx dies: the output retries, then goes live again after the restart.
    nginx.kill();
    wait_output(&s, room, &id, "retrying", 15).await;
    let mut nginx2 = Nginx::start(dir.path(), port);
    let st = wait_output(&s, room, &id, "live", 30).await;
    assert!(st["reconnects"].as_u64().unwrap() >= 1, "{st}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = tokio::task::spawn_blocking({
        let u = rtmp.clone();
        move || decodes(&u, 30)
    })
    .await
    .unwrap();
    assert!(
        n >= 30,
        "after the restart only {n} frames decoded; nginx log:\n{}",
        nginx2.log()
    );
    let m = s.metrics().await;
    assert!(m.contains("cohost_rtmp_output_reconnects_total"), "{m}");
    assert!(s.metric("cohost_program_frames_out_total").await > 100);
    let mix_s: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("cohost_program_mix_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("mix time metric");
    assert!(mix_s > 0.0, "{m}");
    assert!(m.contains("cohost_program_late_frames_total"));

    // Every co-host leaves: the program stops after its grace period, the output stays
    // (idle, still `live` on nginx), and the next co-host's program resumes it.
    for (res, stop, who) in [(&ra, &sa, "alice"), (&rb, &sb, "bob")] {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = s.token(room, who, "guest").await;
        assert_eq!(delete(res, &t).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.metric("cohost_programs_running").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the program did not stop after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle = output_state(&s, room, &id).await;
    assert_eq!(
        idle["id"],
        id.as_str(),
        "the output outlives the program: {idle}"
    );
    let bytes_idle = idle["bytes_sent"].as_u64().unwrap();
    let (_c, _rc, _sc) = whip_publish(&s, room, "carol", "host", 320, 240).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = output_state(&s, room, &id).await;
        if st["state"] == "live" && st["bytes_sent"].as_u64().unwrap() > bytes_idle + 50_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the output did not resume: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = tokio::task::spawn_blocking({
        let u = rtmp.clone();
        move || decodes(&u, 30)
    })
    .await
    .unwrap();
    assert!(
        n >= 30,
        "after the program restart only {n} frames decoded; nginx log:\n{}",
        nginx2.log()
    );
    nginx2.kill();
}
