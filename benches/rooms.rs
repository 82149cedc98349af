//! Rooms per machine: how many 2-co-host rooms with a 720p30 program and an RTMP push run in
//! real time.
//!
//! The bench process runs the real server (`testkit` `start_server`: `cohost::build`,
//! HTTP on 127.0.0.1:0, media on 127.0.0.1) and a real nginx-rtmp. For each N it creates N rooms
//! (default mix: 1280x720, 30 fps, 2500 kbps, AAC 128 kbps, grid), adds one RTMP output per room
//! to nginx through the API, then starts itself again as a *client* process (`--client`) that
//! publishes 2 WHIP co-hosts per room. The co-hosts do not encode: the client pre-encodes a few
//! seconds of H.264 (openh264) and Opus once and every co-host replays the same access units
//! in a loop at 30 fps / 20 ms (the sample track rewrites RTP timestamps and sequence numbers),
//! so the CPU measured in the bench process is the server's alone (the client's and nginx's are
//! reported beside it; all share the same 2 cores).
//!
//! After a warm-up, each N is measured for `ROOMS_BENCH_SECS`:
//! - program pictures produced (`cohost_program_frames_out_total`) vs expected
//!   (fps x seconds x rooms);
//! - late pictures (`cohost_program_late_frames_total`): a picture is late when the mixer
//!   thread hands it over more than one frame interval (33.3 ms) after its due time on the
//!   program clock (encode finished too late). Pictures the mixer never produces (it pauses
//!   program time after falling 1 s behind) show up as produced < expected instead;
//! - server process CPU (`/proc/self/stat`) and the share of it in mixer threads
//!   (`/proc/self/task/*`, thread name `cohost-mixer`); client and nginx CPU;
//! - RTMP bytes sent (sum of `cohost_rtmp_output_bytes_total`).
//!
//! Run: `cargo bench --bench rooms`. Environment: `ROOMS_BENCH_N` (default `1,2,4,6,8`),
//! `ROOMS_BENCH_SECS` (default 20), `ROOMS_BENCH_INPUT` (co-host picture, default `640x360`),
//! `ROOMS_BENCH_INPUT_KBPS` (default 800), `ROOMS_BENCH_CONTENT` (co-host picture content):
//! - `pan` (default): a diagonal ramp moving 4 px per frame with a drifting bright square:
//!   every pixel moves in every frame, like a camera panning all the time (worst case for the
//!   encoder);
//! - `talk`: a talking head: a static textured background (a room) and a textured head and
//!   shoulders that sway a few pixels per frame, a mouth that opens and closes and a blinking
//!   light: what a co-host's webcam mostly shows.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use testkit as common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::nginx::{free_port, missing_tools, Nginx};
use common::{add_sender, client_peer, post_sdp, TestServer, API_KEY};
use rtc::media::Sample;
use serde_json::json;
use webrtc::peer_connection::RTCPeerConnectionState;

const FPS: u64 = 30;
const WARMUP: Duration = Duration::from_secs(5);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn input_size() -> (usize, usize) {
    let s = std::env::var("ROOMS_BENCH_INPUT").unwrap_or_else(|_| "640x360".into());
    let (w, h) = s.split_once('x').expect("ROOMS_BENCH_INPUT is WxH");
    (w.parse().expect("width"), h.parse().expect("height"))
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime (seconds) from a `/proc/.../stat` line.
fn stat_cpu(path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    (t(11) + t(12)) / clk_tck()
}

/// CPU seconds of this process's threads named `name`.
fn threads_cpu(name: &str) -> f64 {
    let mut sum = 0.0;
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim() == name {
                sum += stat_cpu(&p.join("stat").to_string_lossy());
            }
        }
    }
    sum
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum()
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample0 {
    at: Option<Instant>,
    frames: u64,
    late: u64,
    dropped: u64,
    rtmp: u64,
    cpu: f64,
    mixer_cpu: f64,
    client_cpu: f64,
    nginx_cpu: f64,
    live: u64,
    decoded: u64,
}

async fn sample(s: &TestServer, rooms: &[String], client: u32, nginx_pid: Option<u32>) -> Sample0 {
    // Input pictures the mixers decoded (room info, per co-host).
    let mut decoded = 0;
    for room in rooms {
        let v: serde_json::Value = reqwest::Client::new()
            .get(s.url(&format!("/api/rooms/{room}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("room info")
            .json()
            .await
            .unwrap_or_default();
        decoded += v["media"]["program"]["inputs"]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(|i| i["pictures"].as_u64()).sum());
    }
    let m = s.metrics().await;
    Sample0 {
        at: Some(Instant::now()),
        frames: metric_sum(&m, "cohost_program_frames_out_total"),
        late: metric_sum(&m, "cohost_program_late_frames_total"),
        dropped: metric_sum(&m, "cohost_program_frames_dropped_total"),
        rtmp: metric_sum(&m, "cohost_rtmp_output_bytes_total"),
        cpu: stat_cpu("/proc/self/stat"),
        mixer_cpu: threads_cpu("cohost-mixer"),
        client_cpu: stat_cpu(&format!("/proc/{client}/stat")),
        nginx_cpu: nginx_pid.map_or(0.0, |p| stat_cpu(&format!("/proc/{p}/stat"))),
        live: m
            .lines()
            .filter(|l| l.starts_with("cohost_rtmp_output_state") && l.contains("state=\"live\""))
            .filter(|l| l.ends_with(" 1"))
            .count() as u64,
        decoded,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let url = args[i + 1].clone();
        let rooms: Vec<String> = args[i + 2].split(',').map(str::to_owned).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(client(url, rooms));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("rooms: bench");
        return;
    }
    if let Some(m) = missing_tools() {
        eprintln!("SKIPPED rooms bench: missing {m} (scripts/test.sh installs them)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(server());
}

async fn server() {
    let ns: Vec<usize> = std::env::var("ROOMS_BENCH_N")
        .unwrap_or_else(|_| "1,2,4,6,8".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let secs: f64 = env_or("ROOMS_BENCH_SECS", 20.0);
    let (w, h) = input_size();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port);
    let nginx_pid = std::fs::read_to_string(dir.path().join("nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let s = common::start_server().await;
    let http = reqwest::Client::new();
    println!(
        "# rooms bench: 2 co-hosts/room sending {w}x{h} H.264 ({} kbps, content `{}`) + Opus \
         (replayed), program 1280x720 30 fps 2500 kbps + AAC, 1 RTMP push/room to nginx-rtmp; {secs} s per N; \
         {} cores",
        env_or("ROOMS_BENCH_INPUT_KBPS", 800u32),
        if content_is_talk() { "talk" } else { "pan" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| rooms | pictures/expected | late | late % | dropped in | input pictures decoded/s | server CPU (cores) | of which mixers | client CPU | nginx CPU | RTMP Mbit/s | outputs live | load avg (1 5 15) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (round, &n) in ns.iter().enumerate() {
        let rooms: Vec<String> = (0..n).map(|i| format!("r{round}-{i}")).collect();
        for room in &rooms {
            let r = http
                .post(s.url("/api/rooms"))
                .bearer_auth(API_KEY)
                .json(&json!({"name": room}))
                .send()
                .await
                .expect("create room");
            assert!(r.status().is_success(), "create room: {}", r.status());
            let r = http
                .post(s.url(&format!("/api/rooms/{room}/outputs")))
                .bearer_auth(API_KEY)
                .json(&json!({"url": format!("rtmp://127.0.0.1:{port}/live/{room}")}))
                .send()
                .await
                .expect("add output");
            assert_eq!(r.status(), 201, "add output");
        }
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg("--client")
            .arg(s.url(""))
            .arg(rooms.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client process");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            lines.any(|l| l.is_ok_and(|l| l == "ready"))
        })
        .await
        .unwrap_or(false);
        assert!(ready, "client did not connect its co-hosts");
        tokio::time::sleep(WARMUP).await;
        let a = sample(&s, &rooms, pid, nginx_pid).await;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let b = sample(&s, &rooms, pid, nginx_pid).await;
        let el = b.at.unwrap().duration_since(a.at.unwrap()).as_secs_f64();
        let frames = b.frames - a.frames;
        let late = b.late - a.late;
        let expected = FPS as f64 * el * n as f64;
        println!(
            "| {n} | {frames}/{expected:.0} ({:.1} %) | {late} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{n} | {} |",
            100.0 * frames as f64 / expected,
            100.0 * late as f64 / frames.max(1) as f64,
            b.dropped - a.dropped,
            (b.decoded - a.decoded) as f64 / el,
            (b.cpu - a.cpu) / el,
            (b.mixer_cpu - a.mixer_cpu) / el,
            (b.client_cpu - a.client_cpu) / el,
            (b.nginx_cpu - a.nginx_cpu) / el,
            (b.rtmp - a.rtmp) as f64 * 8.0 / el / 1e6,
            b.live,
            loadavg(),
        );
        let _ = std::io::stdout().flush();
        drop(child.stdin.take());
        let _ = child.wait();
        for room in &rooms {
            let _ = http
                .delete(s.url(&format!("/api/rooms/{room}")))
                .bearer_auth(API_KEY)
                .send()
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.metric("cohost_programs_running").await > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Pre-encoded media one co-host replays.
struct Clip {
    video: Vec<Bytes>,
    audio: Vec<Bytes>,
}

fn content_is_talk() -> bool {
    std::env::var("ROOMS_BENCH_CONTENT").is_ok_and(|c| c == "talk")
}

/// A synthetic talking head on `frame`: static textured background, swaying textured head and
/// shoulders, a mouth opening and closing, a blinking light (luma and chroma planes of `yuv`).
fn talking_head(yuv: &mut [u8], w: usize, h: usize, frame: usize) {
    let t = frame as f64 / FPS as f64;
    // Static background: wall gradient with a fine texture and a shelf.
    for y in 0..h {
        for x in 0..w {
            let tex = ((x * 7 + y * 13) % 17) as f64 * 1.5 + ((x / 3 + y / 5) % 7) as f64;
            let shelf = if (y * 10 / h) == 3 { 40.0 } else { 0.0 };
            yuv[y * w + x] = (60.0 + 80.0 * y as f64 / h as f64 + tex + shelf) as u8;
        }
    }
    // Head and shoulders: sway a few pixels, nod a little.
    let cx = w as f64 / 2.0 + 12.0 * (t * 1.3).sin() + 4.0 * (t * 3.1).sin();
    let cy = h as f64 * 0.42 + 3.0 * (t * 2.2).sin();
    let (rx, ry) = (w as f64 * 0.13, h as f64 * 0.22);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f64 - cx) / rx, (y as f64 - cy) / ry);
            let head = dx * dx + dy * dy <= 1.0;
            let body = y as f64 > cy + ry * 0.8 && (x as f64 - cx).abs() < rx * 2.2;
            if head || body {
                // Texture that moves with the person (skin/cloth detail).
                let u = (x as f64 - cx) as i64;
                let v = (y as f64 - cy) as i64;
                let tex = (((u * 5 + v * 3).rem_euclid(11)) * 2) as f64;
                yuv[y * w + x] = if head { 150.0 + tex } else { 70.0 + tex } as u8;
            }
        }
    }
    // Mouth: opens and closes (talking).
    let open = ((t * 6.0).sin().abs() * ry * 0.18) as usize;
    let (mx, my) = (cx as usize, (cy + ry * 0.45) as usize);
    for y in my.saturating_sub(open)..(my + open).min(h) {
        for x in mx.saturating_sub((rx * 0.35) as usize)..(mx + (rx * 0.35) as usize).min(w) {
            yuv[y * w + x] = 40;
        }
    }
    // A blinking light in the background.
    if (frame / 15).is_multiple_of(2) {
        for y in h / 8..h / 8 + 12 {
            yuv[y * w + w / 10..y * w + w / 10 + 12].fill(230);
        }
    }
    // Chroma: warm wall, skin tone in the head.
    let (cw, ch) = (w / 2, h / 2);
    let (u0, v0) = (w * h, w * h + cw * ch);
    for y in 0..ch {
        for x in 0..cw {
            let (dx, dy) = ((2 * x) as f64 - cx, (2 * y) as f64 - cy);
            let head = (dx / rx).powi(2) + (dy / ry).powi(2) <= 1.0;
            yuv[u0 + y * cw + x] = if head { 110 } else { 120 };
            yuv[v0 + y * cw + x] = if head { 150 } else { 135 };
        }
    }
}

fn encode_clip(w: usize, h: usize, kbps: u32, seconds: usize) -> Clip {
    let talk = content_is_talk();
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod};
    use openh264::formats::YUVBuffer;
    use openh264::OpenH264API;
    let cfg = EncoderConfig::new()
        .bitrate(BitRate::from_bps(kbps * 1000))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .intra_frame_period(IntraFramePeriod::from_num_frames(FPS as u32))
        // Every slot gets its own picture (a repeated access unit would not decode).
        .skip_frames(false);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).expect("encoder");
    let mut video = Vec::new();
    for frame in 0..seconds * FPS as usize {
        let mut yuv = vec![128u8; w * h * 3 / 2];
        if talk {
            talking_head(&mut yuv, w, h, frame);
        } else {
            // A moving diagonal ramp with a drifting bright square: real motion for the decoder.
            for y in 0..h {
                for x in 0..w {
                    yuv[y * w + x] = ((x + y + frame * 4) % 256) as u8;
                }
            }
            let (sx, sy) = ((frame * 7) % (w - 64), (frame * 3) % (h - 64));
            for y in sy..sy + 64 {
                yuv[y * w + sx..y * w + sx + 64].fill(235);
            }
        }
        let bits = enc
            .encode(&YUVBuffer::from_vec(yuv, w, h))
            .expect("encode")
            .to_vec();
        // openh264 may skip a frame (rate control): keep the slot with the previous one.
        if bits.is_empty() {
            if let Some(last) = video.last().cloned() {
                video.push(last);
            }
        } else {
            video.push(Bytes::from(bits));
        }
    }
    let mut opus =
        opus::Encoder::new(48000, opus::Channels::Stereo, opus::Application::Audio).expect("opus");
    let audio = (0..seconds * 50)
        .map(|n| {
            let mut pcm = vec![0i16; 960 * 2];
            for i in 0..960 {
                let t = (n * 960 + i) as f32 / 48000.0;
                let s = (t * 440.0 * std::f32::consts::TAU).sin() * 8000.0;
                pcm[2 * i] = s as i16;
                pcm[2 * i + 1] = s as i16;
            }
            Bytes::from(opus.encode_vec(&pcm, 4000).expect("opus encode"))
        })
        .collect();
    Clip { video, audio }
}

async fn client(url: String, rooms: Vec<String>) {
    let (w, h) = input_size();
    let clip = Arc::new(encode_clip(
        w,
        h,
        env_or("ROOMS_BENCH_INPUT_KBPS", 800u32),
        4,
    ));
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut peers = Vec::new();
    for room in &rooms {
        for (identity, role) in [("host", "host"), ("guest", "guest")] {
            let v: serde_json::Value = http
                .post(format!("{url}/api/tokens"))
                .bearer_auth(API_KEY)
                .json(&json!({"room": room, "identity": identity, "role": role}))
                .send()
                .await
                .expect("token")
                .json()
                .await
                .expect("token json");
            let token = v["token"].as_str().expect("token").to_owned();
            let peer = client_peer().await;
            let sender = add_sender(&peer, identity).await;
            let offer = peer.offer().await;
            let (status, _, body) = post_sdp(&format!("{url}/whip/{room}"), &token, &offer).await;
            assert_eq!(status, 201, "WHIP: {body}");
            peer.set_answer(&body).await;
            let (clip, stop) = (clip.clone(), stop.clone());
            // Stagger the co-hosts over a frame interval, as independent cameras would be.
            let offset = Duration::from_millis(rand::random::<u64>() % 33);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let start = Instant::now();
                let (mut frame, mut audio_n) = (0u64, 0u64);
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let now = start.elapsed().as_millis() as u64;
                    while audio_n * 20 <= now {
                        let s = Sample {
                            data: clip.audio[audio_n as usize % clip.audio.len()].clone(),
                            duration: Duration::from_millis(20),
                            ..Sample::new(Instant::now())
                        };
                        let _ = sender.audio.write_sample(sender.assrc, 111, &s, &[]).await;
                        audio_n += 1;
                    }
                    while frame * 1000 / FPS <= now {
                        let s = Sample {
                            data: clip.video[frame as usize % clip.video.len()].clone(),
                            duration: Duration::from_nanos(1_000_000_000 / FPS),
                            ..Sample::new(Instant::now())
                        };
                        let _ = sender.video.write_sample(sender.vssrc, 102, &s, &[]).await;
                        frame += 1;
                    }
                }
            });
            peers.push(peer);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while peers
        .iter()
        .any(|p| *p.state.lock().unwrap() != RTCPeerConnectionState::Connected)
    {
        assert!(Instant::now() < deadline, "co-hosts did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    // Run until the bench closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for p in &peers {
        let _ = p.pc.close().await;
    }
}
