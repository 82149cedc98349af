//! The studio decor end to end: images uploaded through `PUT /api/images/{name}` (PNG and
//! JPEG made by ffmpeg; bad files 400, big ones 413, API key only), a room whose mix has a
//! background image, a half-transparent logo overlay and name labels (a Chinese display
//! name), its RTMP program pulled from a real nginx-rtmp and decoded by ffmpeg: every colour
//! where it belongs; a live `PUT /layout` takes the logo and labels away; the snapshot
//! shows the same picture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::nginx::{free_port, missing_tools, Nginx};
use common::*;
use serde_json::{json, Value};

const W: usize = 640;
const H: usize = 360;

/// An image file made by ffmpeg from a colour source.
fn make_image(dir: &Path, name: &str, color: &str, size: &str) -> Vec<u8> {
    let path = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c={color}:s={size}"))
        .args(["-frames:v", "1"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(&path).unwrap()
}

/// One decoded I420 picture of `input` (the `skip`-th frame), by ffmpeg.
fn picture(input: &str, skip: u32) -> Vec<u8> {
    let out = Command::new("timeout")
        .args(["25", "ffmpeg", "-nostdin", "-v", "error", "-i", input])
        .args(["-vf", &format!("select=gte(n\\,{skip})"), "-frames:v", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout.len(),
        W * H * 3 / 2,
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// (Y, U, V) of the 8x8 block at (x, y) of an I420 picture, averaged.
fn yuv_at(p: &[u8], x: usize, y: usize) -> (f64, f64, f64) {
    let (mut ys, mut us, mut vs) = (0.0, 0.0, 0.0);
    for dy in 0..8 {
        for dx in 0..8 {
            ys += f64::from(p[(y + dy) * W + x + dx]);
            let c = ((y + dy) / 2) * (W / 2) + (x + dx) / 2;
            us += f64::from(p[W * H + c]);
            vs += f64::from(p[W * H + W * H / 4 + c]);
        }
    }
    (ys / 64.0, us / 64.0, vs / 64.0)
}

fn near(got: (f64, f64, f64), want: (f64, f64, f64), tol: f64, what: &str) {
    let d = (got.0 - want.0)
        .abs()
        .max((got.1 - want.1).abs())
        .max((got.2 - want.2).abs());
    assert!(d <= tol, "{what}: got {got:?}, want {want:?}");
}

/// Pixels brighter than `min` luma inside [x0, x1) x [y0, y1).
fn bright(p: &[u8], (x0, y0, x1, y1): (usize, usize, usize, usize), min: u8) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| p[y * W + x] > min)
        .count()
}

// BT.601 limited range, as the mixer converts RGB.
const BLUE: (f64, f64, f64) = (41.0, 240.0, 110.0);
const RED: (f64, f64, f64) = (81.0, 90.0, 240.0);
const GREY: (u8, u8, u8) = (60, 128, 128);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logo_background_and_labels_are_drawn_where_they_belong_and_change_live() {
    if let Some(m) = missing_tools() {
        eprintln!("SKIPPED studio: missing {m} (scripts/test.sh installs them)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = start_server().await;
    let http = reqwest::Client::new();
    let put = |name: &str, body: Vec<u8>, key: &str| {
        http.put(s.url(&format!("/api/images/{name}")))
            .bearer_auth(key)
            .body(body)
            .send()
    };

    // The library.
    let logo = make_image(tmp.path(), "logo.png", "red", "64x32");
    let bg = make_image(tmp.path(), "bg.jpg", "blue", "64x36");
    let r = put("logo", logo.clone(), API_KEY).await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(64), Some(32))
    );
    assert_eq!(
        put("logo", logo.clone(), API_KEY).await.unwrap().status(),
        200
    );
    assert_eq!(put("bg", bg, API_KEY).await.unwrap().status(), 201);
    let r = put("junk", b"GIF89a not an image".to_vec(), API_KEY)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut truncated = logo.clone();
    truncated.truncate(logo.len() / 2);
    assert_eq!(put("half", truncated, API_KEY).await.unwrap().status(), 400);
    let r = put("huge", vec![0u8; 5 << 20], API_KEY).await.unwrap();
    assert_eq!(r.status(), 413);
    let host_token = s.token("studio", "host", "host").await;
    let r = put("logo", logo.clone(), &host_token).await.unwrap();
    assert!(r.status() == 401 || r.status() == 403, "{}", r.status());
    assert_eq!(put("bad/name", logo, API_KEY).await.unwrap().status(), 404);
    let list: Value = http
        .get(s.url("/api/images"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bg", "logo"]);

    // The room: the host on the left half, the background image behind, the logo at half
    // opacity over the background, labels on.
    let r = http
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "studio", "mix": {
            "width": W, "height": H, "gop_s": 1,
            "layout": {"regions": [{"identity": "host", "x": 0, "y": 0, "w": 320, "h": 360}]},
            "background_image": "bg",
            "overlays": [{"image": "logo", "x": 400, "y": 40, "w": 128, "h": 64, "opacity": 0.5}],
            "labels": true
        }}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port);
    let rtmp = format!("rtmp://127.0.0.1:{port}/live/studio");
    let r = http
        .post(s.url("/api/rooms/studio/outputs"))
        .bearer_auth(API_KEY)
        .json(&json!({"url": rtmp}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The host, named in Chinese, sends a flat grey picture.
    let token: Value = http
        .post(s.url("/api/tokens"))
        .bearer_auth(API_KEY)
        .json(&json!({"room": "studio", "identity": "host", "role": "host", "name": "主播小美"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_peer, sender, _) = whip_connect(
        &s.url("/whip/studio"),
        token["token"].as_str().unwrap(),
        "host",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn_solid(320, 360, 120.0, stop.clone(), GREY);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let p = picture(&rtmp, 10);
    near(yuv_at(&p, 560, 300), BLUE, 12.0, "background image");
    near(
        yuv_at(&p, 600, 20),
        BLUE,
        12.0,
        "background image, top right",
    );
    let half = (
        (BLUE.0 + RED.0) / 2.0,
        (BLUE.1 + RED.1) / 2.0,
        (BLUE.2 + RED.2) / 2.0,
    );
    near(
        yuv_at(&p, 460, 68),
        half,
        14.0,
        "logo at half opacity over the background",
    );
    near(yuv_at(&p, 384, 68), BLUE, 12.0, "left of the logo");
    near(yuv_at(&p, 460, 112), BLUE, 12.0, "under the logo");
    let grey = (f64::from(GREY.0), 128.0, 128.0);
    near(yuv_at(&p, 160, 100), grey, 10.0, "the host's tile");
    // The label: white text in the tile's bottom-left corner, nowhere else.
    let label_zone = (0, 280, 320, 360);
    let text = bright(&p, label_zone, 170);
    assert!(
        text > 40,
        "label text pixels in the tile's bottom left: {text}"
    );
    assert_eq!(
        bright(&p, (0, 0, 320, 270), 170),
        0,
        "nothing bright elsewhere in the tile"
    );
    assert_eq!(
        bright(&p, (320, 0, 640, 360), 170),
        0,
        "nothing bright outside the tile"
    );

    // The snapshot is the same picture.
    let jpeg = http
        .get(s.url("/api/rooms/studio/snapshot.jpg"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let jpath = tmp.path().join("snap.jpg");
    std::fs::write(&jpath, &jpeg).unwrap();
    let snap = picture(jpath.to_str().unwrap(), 0);
    near(yuv_at(&snap, 560, 300), BLUE, 12.0, "snapshot background");
    near(yuv_at(&snap, 460, 68), half, 14.0, "snapshot logo");
    near(yuv_at(&snap, 160, 100), grey, 10.0, "snapshot tile");

    // Live: the logo and the labels go, the background stays.
    let r = http
        .put(s.url("/api/rooms/studio/layout"))
        .bearer_auth(&host_token)
        .json(&json!({"overlays": [], "labels": false}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["layout"]["overlays"], json!([]), "{v}");
    assert_eq!(v["layout"]["labels"], false, "{v}");
    assert_eq!(v["layout"]["background_image"], "bg", "{v}");
    let r = http
        .put(s.url("/api/rooms/studio/layout"))
        .bearer_auth(&host_token)
        .json(
            &json!({"overlays": [{"image": "logo", "x": 0, "y": 0, "w": 8, "h": 8, "opacity": 2}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "opacity 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = picture(&rtmp, 10);
    near(yuv_at(&p, 460, 68), BLUE, 12.0, "no logo any more");
    assert_eq!(bright(&p, label_zone, 170), 0, "no label any more");
    near(yuv_at(&p, 560, 300), BLUE, 12.0, "the background stays");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
