//! `GET /api/rooms/{room}/snapshot.jpg`: the program's latest picture as a JPEG that ffprobe
//! decodes at the mix's size (or `?w=` scaled), for the API key or the room's host token only;
//! `404` before the room has a program.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// (width, height) of a JPEG, by ffprobe.
fn probe(jpeg: &[u8]) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jpg");
    std::fs::write(&path, jpeg).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["codec_name"], "mjpeg", "{s}");
    (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_program_picture_as_jpeg() {
    if Command::new("ffprobe").arg("-version").output().is_err() {
        eprintln!("SKIPPED snapshot: ffprobe not installed (scripts/test.sh installs it)");
        return;
    }
    let s = start_server().await;
    let http = reqwest::Client::new();
    let r = http
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "thumbs", "mix": {"width": 640, "height": 360}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let url = s.url("/api/rooms/thumbs/snapshot.jpg");
    // No program yet.
    let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (_p, _l, _stop) = whip_publish(&s, "thumbs", "host", "host", 320, 240).await;
    let mut jpeg = None;
    for _ in 0..100 {
        let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "image/jpeg");
            jpeg = Some(r.bytes().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let jpeg = jpeg.expect("a snapshot within 15 s");
    assert_eq!(probe(&jpeg), (640, 360));
    // Scaled for a room list, with the host's own token.
    let host = s.token("thumbs", "host", "host").await;
    let r = http
        .get(format!("{url}?w=160"))
        .bearer_auth(&host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(probe(&r.bytes().await.unwrap()), (160, 90));
    // Not for guests, nor for anyone without a token.
    let guest = s.token("thumbs", "g", "guest").await;
    let r = http.get(&url).bearer_auth(&guest).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
