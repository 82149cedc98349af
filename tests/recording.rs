//! Program recordings (`/api/rooms/{room}/recordings`): a fragmented MP4 of the program that
//! ffprobe and ffmpeg read while it is written and after, started mid-show at a keyframe, as
//! long as it ran, with both tracks and the layout SEI; served with range requests to the API
//! key only; an unwritable directory fails the recording and nothing else; a program restart
//! continues a requested recording into a new file; a server killed with SIGKILL leaves a file
//! readable to within 2 s of the kill.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn have_ffmpeg() -> bool {
    let ok = Command::new("ffprobe").arg("-version").output().is_ok()
        && Command::new("ffmpeg").arg("-version").output().is_ok();
    if !ok {
        eprintln!(
            "SKIPPED recording: ffmpeg/ffprobe not installed (scripts/test.sh installs them)"
        );
    }
    ok
}

/// ffprobe's JSON for `path`: format and streams.
fn probe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn duration(v: &Value) -> f64 {
    v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

fn codecs(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("").to_owned())
        .collect();
    c.sort();
    c
}

/// (pts seconds, key frame) of the first `n` video frames.
fn first_frames(path: &Path, n: usize) -> Vec<(f64, bool)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time,key_frame",
            "-read_intervals",
            &format!("%+#{n}"),
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["pts_time"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(-1.0),
                f["key_frame"] == 1,
            )
        })
        .collect()
}

/// ffmpeg decodes the whole file without an error.
fn decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "decode errors: {err}");
}

async fn create_room(s: &TestServer, http: &reqwest::Client, room: &str, mix: Value) {
    let r = http
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": room, "mix": mix}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn wait_program(s: &TestServer, room: &str) {
    let http = reqwest::Client::new();
    let url = s.url(&format!("/api/rooms/{room}/snapshot.jpg"));
    for _ in 0..150 {
        let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
        if r.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("room {room} has no program picture after 15 s");
}

async fn list(http: &reqwest::Client, url: &str, token: &str) -> Vec<Value> {
    let v: Value = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["recordings"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_started_mid_show_is_the_program_from_a_keyframe_for_as_long_as_it_ran() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let s = start_server_with(move |c| c.program.recordings.dir = d).await;
    let http = reqwest::Client::new();
    create_room(
        &s,
        &http,
        "show",
        json!({"width": 640, "height": 360, "gop_s": 4}),
    )
    .await;
    let (_p, _l, _stop) = whip_publish(&s, "show", "host", "host", 320, 240).await;
    wait_program(&s, "show").await;
    // Mid-GOP: the recording must not wait up to 4 s for the next keyframe.
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let host = s.token("show", "host", "host").await;
    let guest = s.token("show", "g", "guest").await;
    let base = s.url("/api/rooms/show/recordings");
    // Guests may not record; nobody without a token.
    let r = http
        .post(&base)
        .bearer_auth(&guest)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.post(&base).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&base)
        .bearer_auth(API_KEY)
        .json(&json!({"format": "webm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The host starts one.
    let r = http
        .post(&base)
        .bearer_auth(&host)
        .json(&json!({"format": "mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let started = Instant::now();
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["state"], "recording", "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let url = s.url(rec["url"].as_str().unwrap());

    tokio::time::sleep(Duration::from_millis(3500)).await;
    // Readable while it is written.
    let now = list(&http, &base, &host).await;
    let live = now.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(live["state"], "recording");
    assert!(live["bytes"].as_u64().unwrap() > 10_000, "{live}");
    assert!(live["duration_s"].as_f64().unwrap() > 1.0, "{live}");
    let partial = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(partial.status(), 200);
    let tmp = tempfile::tempdir().unwrap();
    let part_path = tmp.path().join("partial.mp4");
    std::fs::write(&part_path, partial.bytes().await.unwrap()).unwrap();
    let p = probe(&part_path);
    assert_eq!(codecs(&p), ["aac", "h264"], "{p}");
    assert!(duration(&p) > 1.5, "{p}");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = http
        .delete(format!("{base}/{id}"))
        .bearer_auth(&host)
        .send()
        .await
        .unwrap();
    let ran = started.elapsed().as_secs_f64();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["state"], "finished", "{done}");
    assert!(done["error"].is_null());

    // The file: the API key only, with ranges.
    let r = http.get(&url).bearer_auth(&host).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&url)
        .bearer_auth(API_KEY)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let total = done["bytes"].as_u64().unwrap();
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-99/{total}")
    );
    let head = r.bytes().await.unwrap();
    assert_eq!(head.len(), 100);
    assert_eq!(&head[4..8], b"ftyp");
    let r = http
        .get(&url)
        .bearer_auth(API_KEY)
        .header("range", format!("bytes={total}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, total);
    let path = tmp.path().join("whole.mp4");
    std::fs::write(&path, &body).unwrap();

    let p = probe(&path);
    assert_eq!(codecs(&p), ["aac", "h264"], "{p}");
    let video = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_name"] == "h264")
        .unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    let d = duration(&p);
    assert!(
        (d - ran).abs() <= 0.5,
        "recorded {d:.2} s of a recording that ran {ran:.2} s"
    );
    let frames = first_frames(&path, 3);
    assert!(frames[0].1, "starts with a keyframe: {frames:?}");
    assert!(frames[0].0.abs() < 0.05, "starts at 0: {frames:?}");
    decodes_cleanly(&path);
    // The layout SEI is kept.
    let sei = common::nginx::read_sei(path.to_str().unwrap(), 30, 30);
    let layout = sei
        .iter()
        .find(|(uuid, _)| uuid.replace('-', "") == hex(&mixer::h264::LAYOUT_SEI_UUID))
        .expect("a layout SEI");
    let json: Value = serde_json::from_slice(&layout.1).unwrap();
    assert!(json.to_string().contains("host"), "{json}");

    // Listed as finished; a second recording of the same show is a new id.
    let all = list(&http, &base, API_KEY).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["state"], "finished");
    let r = http.post(&base).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    assert_ne!(second["id"], id.as_str());
    let m = s.metrics().await;
    assert!(m.contains("cohost_recording_bytes_total"), "{m}");
    assert!(s.metric("cohost_recording_bytes_total").await >= total);
    assert_eq!(s.metric("cohost_recordings_active").await, 1);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_directory_fails_the_recording_and_nothing_else() {
    if !have_ffmpeg() {
        return;
    }
    // A regular file where the directory should be: not even root can create it.
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let d = blocker.clone();
    let s = start_server_with(move |c| c.program.recordings.dir = d).await;
    let http = reqwest::Client::new();
    create_room(&s, &http, "nodisk", json!({"width": 320, "height": 180})).await;
    let (_p, _l, _stop) = whip_publish(&s, "nodisk", "host", "host", 320, 240).await;
    wait_program(&s, "nodisk").await;
    let r = http
        .post(s.url("/api/rooms/nodisk/recordings"))
        .bearer_auth(API_KEY)
        .json(&json!({"format": "mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["state"], "failed", "{rec}");
    let why = rec["error"].as_str().unwrap();
    assert!(why.contains("not-a-dir"), "{why}");
    assert_eq!(s.metric("cohost_recording_failures_total").await, 1);
    // The program and its HLS go on.
    let frames = s.metric("cohost_program_frames_out_total").await;
    let pl = s.url("/live/nodisk/index.m3u8");
    let mut first = String::new();
    for _ in 0..100 {
        let r = http.get(&pl).send().await.unwrap();
        if r.status() == 200 {
            first = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.contains("#EXTM3U"), "no HLS playlist: {first}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(s.metric("cohost_program_frames_out_total").await > frames + 30);
    let later = http.get(&pl).send().await.unwrap().text().await.unwrap();
    assert_ne!(first, later, "the HLS playlist moves on");
    let listed = list(&http, &s.url("/api/rooms/nodisk/recordings"), API_KEY).await;
    assert_eq!(listed[0]["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_directory_fails_the_recording_even_for_root() {
    use std::os::unix::fs::PermissionsExt;
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let d = ro.clone();
    let s = start_server_with(move |c| c.program.recordings.dir = d).await;
    let http = reqwest::Client::new();
    create_room(&s, &http, "ro", json!({"width": 320, "height": 180})).await;
    let r = http
        .post(s.url("/api/rooms/ro/recordings"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["state"], "failed", "{rec}");
    assert!(
        rec["error"].as_str().unwrap().contains("read-only"),
        "{rec}"
    );
    assert!(
        std::fs::read_dir(&ro).unwrap().next().is_none(),
        "nothing written"
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_restart_continues_a_recording_into_a_new_file_and_mix_record_records_every_show()
{
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let s = start_server_with(move |c| {
        c.program.recordings.dir = d;
        c.program.grace = Duration::from_millis(300);
    })
    .await;
    let http = reqwest::Client::new();
    create_room(&s, &http, "twice", json!({"width": 320, "height": 180})).await;
    create_room(
        &s,
        &http,
        "auto",
        json!({"width": 320, "height": 180, "record": true}),
    )
    .await;
    let base = s.url("/api/rooms/twice/recordings");
    // Started before the show: it waits for the program.
    let r = http.post(&base).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    for round in 0..2 {
        let (_p, res, stop) = whip_publish(&s, "twice", "host", "host", 320, 240).await;
        let (_q, res2, stop2) = whip_publish(&s, "auto", "host", "host", 320, 240).await;
        wait_program(&s, "twice").await;
        wait_program(&s, "auto").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        stop2.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            delete(&res, &s.token("twice", "host", "host").await).await,
            200
        );
        assert_eq!(
            delete(&res2, &s.token("auto", "host", "host").await).await,
            200
        );
        // The programs stop (the co-hosts left, 0.3 s of grace): the files are finished.
        eventually_async("recordings finished", 20, || {
            let http = http.clone();
            let base = base.clone();
            async move {
                let l = list(&http, &base, API_KEY).await;
                l.len() == round + 1 && l.iter().all(|r| r["state"] == "finished")
            }
        })
        .await;
    }
    let l = list(&http, &base, API_KEY).await;
    assert_eq!(l[0]["id"], first["id"]);
    assert_eq!(l[1]["continues"], first["id"], "{l:?}");
    for r in &l {
        let p = probe(
            &dir.path()
                .join("twice")
                .join(format!("{}.mp4", r["id"].as_str().unwrap())),
        );
        assert!(duration(&p) > 1.0, "{p}");
    }
    // mix.record: one file per show.
    let auto = list(&http, &s.url("/api/rooms/auto/recordings"), API_KEY).await;
    assert_eq!(auto.len(), 2, "{auto:?}");
    assert!(auto.iter().all(|r| r["state"] == "finished"));
    // Stopped, it does not continue: a third show is not recorded.
    let id = l[1]["id"].as_str().unwrap();
    let r = http
        .delete(format!("{base}/{id}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_p, _l, _stop) = whip_publish(&s, "twice", "host", "host", 320, 240).await;
    wait_program(&s, "twice").await;
    assert_eq!(list(&http, &base, API_KEY).await.len(), 2);
}

/// Unix ms of an RFC 3339 UTC time with milliseconds (`2026-12-04T03:46:42.123Z`).
fn unix_ms_of(t: &str) -> f64 {
    let n = |a: usize, b: usize| t[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let (hh, mm, ss, ms) = (n(11, 13), n(14, 16), n(17, 19), n(20, 23));
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_leaves_a_recording_readable_to_within_2_s() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::nginx::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let udp = 46000 + (std::process::id() % 50) as u16 * 20;
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cohost"))
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--media-ip", "127.0.0.1"])
            .args(["--udp-ports", &format!("{udp}-{}", udp + 19)])
            .args(["--api-key", API_KEY, "--api-secret", API_SECRET])
            .arg("--recordings-dir")
            .arg(dir.path())
            .env("COHOST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let r = http
        .post(format!("{base}/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "crash", "mix": {"width": 320, "height": 180, "record": true}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let token: Value = http
        .post(format!("{base}/api/tokens"))
        .bearer_auth(API_KEY)
        .json(&json!({"room": "crash", "identity": "h", "role": "host"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_peer, sender, _) = whip_connect(
        &format!("{base}/whip/crash"),
        token["token"].as_str().unwrap(),
        "h",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 60.0, stop.clone());
    let url = format!("{base}/api/rooms/crash/recordings");
    let mut rec = Value::Null;
    for _ in 0..150 {
        let l = list(&http, &url, API_KEY).await;
        if let Some(r) = l
            .into_iter()
            .find(|r| r["duration_s"].as_f64().unwrap_or(0.0) > 0.0)
        {
            rec = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rec.is_object(), "mix.record started no recording");
    tokio::time::sleep(Duration::from_millis(4300)).await;
    child.start_kill().unwrap();
    let killed_ms = unix_ms();
    child.wait().await.unwrap();
    let started_ms = unix_ms_of(rec["started_at"].as_str().unwrap());
    let path = dir
        .path()
        .join("crash")
        .join(format!("{}.mp4", rec["id"].as_str().unwrap()));
    let p = probe(&path);
    assert_eq!(codecs(&p), ["aac", "h264"], "{p}");
    let ran = (killed_ms - started_ms) / 1000.0;
    let d = duration(&p);
    assert!(
        d >= ran - 2.0 && d <= ran + 0.5,
        "{d:.2} s readable of {ran:.2} s recorded before the kill"
    );
    // Back up, the server lists it and serves it.
    let mut child = spawn();
    wait_healthy(&http, &base).await;
    let l = list(&http, &url, API_KEY).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["state"], "finished");
    assert_eq!(l[0]["started_at"], rec["started_at"], "{l:?}");
    let listed = l[0]["duration_s"].as_f64().unwrap();
    assert!((listed - d).abs() < 0.1, "listed {listed} s, ffprobe {d} s");
    let r = http
        .get(format!("{base}{}", l[0]["url"].as_str().unwrap()))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().len() as u64,
        std::fs::metadata(&path).unwrap().len()
    );
    let _ = child.start_kill();
}
