//! Program latency: a co-host's frame → the RTMP tag leaving cohost, → an RTMP viewer (nginx,
//! ffmpeg), → a WHEP program viewer, → an HLS segment becoming available.
//!
//! One process: the real server (`testkit` `start_server`), a real nginx-rtmp, and one
//! webrtc-rs co-host (WHIP) that encodes 640x360 H.264 with openh264 at 30 fps. Into each
//! picture it draws its capture time — milliseconds since the process's epoch `Instant`, taken
//! just before encoding — as 64 blocks of 40x40 px (4 rows of 16, from y = 40): 32 bits of the
//! time, then their complement, luma 235 for 1 and 16 for 0. Alone in the room, the co-host
//! fills the 1280x720 program (default mix, grid), so each block is 80x80 px there. A reader
//! averages the central 16x16 px of each block (threshold 128) and keeps a picture only when
//! the 32 bits equal the complement of the next 32; latency = the time the picture was seen −
//! the embedded capture time (the same clock: no clock sync).
//!
//! Where a picture is "seen":
//! - `rtmp-egress`: cohost's RTMP output goes through a TCP relay in this process on its way to
//!   nginx; the relay parses the chunk stream and stamps each video message when its last
//!   byte arrives (≈ the tag leaving cohost, over loopback), then decodes it (openh264) to read
//!   the code;
//! - `rtmp-nginx-ffmpeg`: `ffmpeg -i rtmp://nginx/... -f rawvideo -pix_fmt gray -` (low-delay
//!   flags, one decoder thread: frame threading holds pictures back), stamped when a whole
//!   picture has been read from its stdout;
//! - `whep`: a webrtc-rs WHEP program viewer, stamped when the access unit's last RTP packet
//!   arrives (before its decode, which here only serves to read the code);
//! - `hls-segment-first` / `hls-segment-last`: `index.m3u8` polled every 20 ms; the time a
//!   segment first appears in it − the capture time of its first / last picture (decoded by
//!   ffmpeg afterwards). A player adds its own buffer on top (hls.js starts about 3 target
//!   durations behind the live edge).
//!
//! Run: `cargo bench --bench program_latency`. Environment: `LATENCY_BENCH_SECS` (measured
//! seconds, default 30, after a 5 s warm-up).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use testkit as common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::nginx::{free_port, missing_tools, Nginx};
use common::{add_sender, client_peer, post_sdp, API_KEY};
use rtc::media::Sample;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc::media_stream::track_remote::TrackRemoteEvent;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
const IN_W: usize = 640;
const IN_H: usize = 360;
const BLOCK: usize = 40;
const TOP: usize = 40;
const COLS: usize = 16;
const WARMUP: Duration = Duration::from_secs(5);

fn now_ms() -> f64 {
    EPOCH.elapsed().as_secs_f64() * 1000.0
}

fn bits_of(v: u32) -> [bool; 64] {
    let mut b = [false; 64];
    for (i, bit) in b.iter_mut().enumerate().take(32) {
        *bit = (v >> (31 - i)) & 1 == 1;
    }
    for i in 0..32 {
        b[32 + i] = !b[i];
    }
    b
}

/// Draws the time code into an I420 luma plane of IN_W x IN_H.
fn draw_code(y_plane: &mut [u8], v: u32) {
    for (i, bit) in bits_of(v).iter().enumerate() {
        let (bx, by) = ((i % COLS) * BLOCK, TOP + (i / COLS) * BLOCK);
        let level = if *bit { 235 } else { 16 };
        for y in by..by + BLOCK {
            y_plane[y * IN_W + bx..y * IN_W + bx + BLOCK].fill(level);
        }
    }
}

/// Reads the time code from a luma plane of `w` x `h` (stride `stride`) showing the input
/// full frame.
fn read_code(y_plane: &[u8], w: usize, h: usize, stride: usize) -> Option<u32> {
    let (sx, sy) = (w as f64 / IN_W as f64, h as f64 / IN_H as f64);
    let half = (8.0 * sx).round().max(1.0) as usize;
    let mut bits = [false; 64];
    for (i, bit) in bits.iter_mut().enumerate() {
        let cx = (((i % COLS) * BLOCK + BLOCK / 2) as f64 * sx) as usize;
        let cy = ((TOP + (i / COLS) * BLOCK + BLOCK / 2) as f64 * sy) as usize;
        let (mut sum, mut n) = (0u64, 0u64);
        for y in cy.saturating_sub(half)..(cy + half).min(h) {
            for x in cx.saturating_sub(half)..(cx + half).min(w) {
                sum += u64::from(*y_plane.get(y * stride + x)?);
                n += 1;
            }
        }
        *bit = n > 0 && sum / n >= 128;
    }
    let v = bits[..32]
        .iter()
        .fold(0u32, |a, b| (a << 1) | u32::from(*b));
    (bits_of(v) == bits).then_some(v)
}

/// Latency samples per path, in ms.
type Samples = Arc<Mutex<Vec<(&'static str, f64)>>>;

fn record(samples: &Samples, path: &'static str, seen_ms: f64, code: u32) {
    // Skip the warm-up.
    if seen_ms > WARMUP.as_secs_f64() * 1000.0 {
        samples
            .lock()
            .unwrap()
            .push((path, seen_ms - f64::from(code)));
    }
}

/// A thread decoding Annex-B access units stamped with the time they were seen.
fn decoder_thread(path: &'static str, samples: Samples) -> mpsc::Sender<(f64, Vec<u8>)> {
    let (tx, rx) = mpsc::channel::<(f64, Vec<u8>)>();
    std::thread::spawn(move || {
        use openh264::decoder::Decoder;
        use openh264::formats::YUVSource;
        let mut dec = Decoder::new().expect("decoder");
        while let Ok((seen, au)) = rx.recv() {
            if let Ok(Some(pic)) = dec.decode(&au) {
                let (w, h) = pic.dimensions();
                if let Some(code) = read_code(pic.y(), w, h, pic.strides().0) {
                    record(&samples, path, seen, code);
                }
            }
        }
    });
    tx
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("program_latency: bench");
        return;
    }
    if let Some(m) = missing_tools() {
        eprintln!("SKIPPED program_latency: missing {m} (scripts/test.sh installs them)");
        return;
    }
    LazyLock::force(&EPOCH);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// Converts an FLV AVC video tag body to Annex B (with SPS/PPS from a sequence header).
fn flv_to_annexb(body: &[u8], out: &mut Vec<u8>) -> bool {
    if body.len() < 5 || body[0] & 0x0f != 7 {
        return false;
    }
    let data = &body[5..];
    match body[1] {
        0 => {
            // AVCDecoderConfigurationRecord.
            let mut p = 5;
            let nsps = data.get(p).map_or(0, |b| b & 0x1f);
            p += 1;
            for _ in 0..nsps {
                let Some(l) = data.get(p..p + 2) else {
                    return false;
                };
                let l = usize::from(u16::from_be_bytes([l[0], l[1]]));
                let Some(n) = data.get(p + 2..p + 2 + l) else {
                    return false;
                };
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(n);
                p += 2 + l;
            }
            let npps = data.get(p).copied().unwrap_or(0);
            p += 1;
            for _ in 0..npps {
                let Some(l) = data.get(p..p + 2) else {
                    return false;
                };
                let l = usize::from(u16::from_be_bytes([l[0], l[1]]));
                let Some(n) = data.get(p + 2..p + 2 + l) else {
                    return false;
                };
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(n);
                p += 2 + l;
            }
            false
        }
        1 => {
            let mut p = 0;
            while p + 4 <= data.len() {
                let l =
                    u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
                let Some(n) = data.get(p + 4..p + 4 + l) else {
                    break;
                };
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(n);
                p += 4 + l;
            }
            true
        }
        _ => false,
    }
}

/// A TCP relay `listen` → `upstream` that stamps the video messages cohost sends.
async fn rtmp_tap(upstream: u16, samples: Samples) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let samples = samples.clone();
            tokio::spawn(async move {
                let dec = decoder_thread("rtmp-egress", samples);
                let mut reader = cohost::output::chunk::ChunkReader::new();
                let mut handshake = 1 + 1536 + 1536;
                let mut buf = Vec::new();
                let mut tmp = vec![0u8; 65536];
                let mut pending = Vec::new();
                loop {
                    let k = match cr.read(&mut tmp).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => k,
                    };
                    let seen = now_ms();
                    if sw.write_all(&tmp[..k]).await.is_err() {
                        break;
                    }
                    let mut data = &tmp[..k];
                    if handshake > 0 {
                        let skip = handshake.min(data.len());
                        handshake -= skip;
                        data = &data[skip..];
                    }
                    buf.extend_from_slice(data);
                    while let Ok(Some((used, msg))) = reader.read_chunk(&buf) {
                        buf.drain(..used);
                        let Some(msg) = msg else { continue };
                        match msg.type_id {
                            cohost::output::chunk::MSG_SET_CHUNK_SIZE if msg.payload.len() >= 4 => {
                                let v = u32::from_be_bytes([
                                    msg.payload[0],
                                    msg.payload[1],
                                    msg.payload[2],
                                    msg.payload[3],
                                ]);
                                reader.set_chunk_size(v as usize);
                            }
                            // Video; a sequence header only leaves SPS/PPS in `pending`.
                            9 if flv_to_annexb(&msg.payload, &mut pending) => {
                                let _ = dec.send((seen, std::mem::take(&mut pending)));
                            }
                            _ => {}
                        }
                    }
                }
            });
        }
    });
    port
}

/// ffmpeg pulling the RTMP stream from nginx to raw gray pictures.
fn ffmpeg_pull(url: String, samples: Samples, stop: Arc<AtomicBool>, log: std::fs::File) {
    std::thread::spawn(move || {
        let mut child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-fflags",
                "nobuffer",
                "-flags",
                "low_delay",
                // Slice threads only: frame threading would hold pictures back.
                "-threads",
                "1",
                "-probesize",
                "5000000",
                "-analyzeduration",
                "3000000",
                "-i",
                &url,
                "-map",
                "0:v:0",
                "-fps_mode",
                "passthrough",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "gray",
                "-",
            ])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("ffmpeg");
        let mut out = child.stdout.take().expect("stdout");
        let (w, h) = (1280usize, 720usize);
        let mut pic = vec![0u8; w * h];
        while !stop.load(Ordering::Relaxed) && out.read_exact(&mut pic).is_ok() {
            let seen = now_ms();
            if let Some(code) = read_code(&pic, w, h, w) {
                record(&samples, "rtmp-nginx-ffmpeg", seen, code);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    });
}

/// Polls the HLS playlist; for each new segment, the time it appeared and its pictures' codes.
async fn hls_poll(base: String, samples: Samples, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let mut seen_segs = std::collections::HashSet::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(r) = http.get(format!("{base}/index.m3u8")).send().await else {
            continue;
        };
        let t = now_ms();
        let Ok(text) = r.text().await else { continue };
        let segs: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.ends_with(".ts"))
            .map(str::to_owned)
            .collect();
        for seg in segs {
            if !seen_segs.insert(seg.clone()) || first {
                continue;
            }
            let Ok(r) = http.get(format!("{base}/{seg}")).send().await else {
                continue;
            };
            let Ok(bytes) = r.bytes().await else { continue };
            let path = dir.path().join(&seg);
            std::fs::write(&path, &bytes).expect("write segment");
            let out = tokio::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-i"])
                .arg(&path)
                .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
                .output()
                .await
                .expect("ffmpeg");
            let (w, h) = (1280usize, 720usize);
            let codes: Vec<u32> = out
                .stdout
                .chunks_exact(w * h)
                .filter_map(|p| read_code(p, w, h, w))
                .collect();
            if let (Some(a), Some(b)) = (codes.first(), codes.last()) {
                record(&samples, "hls-segment-first", t, *a);
                record(&samples, "hls-segment-last", t, *b);
            }
        }
        // Segments already listed at the first poll have no known appearance time.
        first = false;
    }
}

async fn run() {
    let secs: f64 = std::env::var("LATENCY_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port);
    let s = common::start_server().await;
    let http = reqwest::Client::new();
    let room = "latency";
    let r = http
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": room}))
        .send()
        .await
        .expect("room");
    assert!(r.status().is_success());
    let tap = rtmp_tap(port, samples.clone()).await;
    let r = http
        .post(s.url(&format!("/api/rooms/{room}/outputs")))
        .bearer_auth(API_KEY)
        .json(&json!({"url": format!("rtmp://127.0.0.1:{tap}/live/{room}")}))
        .send()
        .await
        .expect("output");
    assert_eq!(r.status(), 201);

    // The co-host: openh264 640x360 with the time code, in real time.
    let token = s.token(room, "host", "host").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "host").await;
    let offer = peer.offer().await;
    let (st, _, body) = post_sdp(&s.url(&format!("/whip/{room}")), &token, &offer).await;
    assert_eq!(st, 201, "{body}");
    peer.set_answer(&body).await;
    let stop2 = stop.clone();
    tokio::spawn(async move {
        use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod};
        use openh264::formats::YUVBuffer;
        use openh264::OpenH264API;
        let cfg = EncoderConfig::new()
            .bitrate(BitRate::from_bps(1_000_000))
            .max_frame_rate(FrameRate::from_hz(30.0))
            .intra_frame_period(IntraFramePeriod::from_num_frames(60));
        let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).expect("enc");
        // The program starts once the co-host's audio is up too: one Opus packet, repeated.
        let mut opus = opus::Encoder::new(48000, opus::Channels::Stereo, opus::Application::Audio)
            .expect("opus");
        let pcm: Vec<i16> = (0..960 * 2)
            .map(|i| ((i / 2) as f32 / 48000.0 * 440.0 * std::f32::consts::TAU).sin())
            .map(|v| (v * 8000.0) as i16)
            .collect();
        let opus_pkt = Bytes::from(opus.encode_vec(&pcm, 4000).expect("opus encode"));
        let start = Instant::now();
        let (mut frame, mut audio_n) = (0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while !stop2.load(Ordering::Relaxed) {
            tick.tick().await;
            while (audio_n * 20) as u128 <= start.elapsed().as_millis() {
                let s = Sample {
                    data: opus_pkt.clone(),
                    duration: Duration::from_millis(20),
                    ..Sample::new(Instant::now())
                };
                let _ = sender.audio.write_sample(sender.assrc, 111, &s, &[]).await;
                audio_n += 1;
            }
            if (frame * 1000 / 30) as u128 > start.elapsed().as_millis() {
                continue;
            }
            let mut yuv = vec![128u8; IN_W * IN_H * 3 / 2];
            let bar = (frame as usize * 8) % IN_W;
            for y in 220..IN_H {
                yuv[y * IN_W + bar..y * IN_W + (bar + 32).min(IN_W)].fill(200);
            }
            let code = now_ms() as u32;
            draw_code(&mut yuv, code);
            let bits = enc
                .encode(&YUVBuffer::from_vec(yuv, IN_W, IN_H))
                .expect("encode")
                .to_vec();
            frame += 1;
            if bits.is_empty() {
                continue;
            }
            let s = Sample {
                data: Bytes::from(bits),
                duration: Duration::from_nanos(1_000_000_000 / 30),
                ..Sample::new(Instant::now())
            };
            let _ = sender.video.write_sample(sender.vssrc, 102, &s, &[]).await;
        }
    });

    // WHEP program viewer, once the program runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.metric("cohost_programs_running").await == 0 {
        assert!(Instant::now() < deadline, "the program did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let viewer = s.token(room, "fan", "viewer").await;
    let mut vpeer = client_peer().await;
    vpeer.add_recv().await;
    let offer = vpeer.offer().await;
    let (st, _, body) = post_sdp(&s.url(&format!("/whep/{room}")), &viewer, &offer).await;
    assert_eq!(st, 201, "{body}");
    vpeer.set_answer(&body).await;
    let whep_dec = decoder_thread("whep", samples.clone());
    for _ in 0..2 {
        let t = tokio::time::timeout(Duration::from_secs(15), vpeer.tracks.recv())
            .await
            .expect("no WHEP track")
            .expect("track");
        if t.kind().await != RtpCodecKind::Video {
            // Drain the program audio (unread, it fills the track's queue).
            tokio::spawn(async move { while t.poll().await.is_some() {} });
            continue;
        }
        let dec = whep_dec.clone();
        tokio::spawn(async move {
            let mut depack = H264Packet::default();
            let mut au = Vec::new();
            while let Some(ev) = t.poll().await {
                let TrackRemoteEvent::OnRtpPacket(p) = ev else {
                    continue;
                };
                if let Ok(b) = depack.depacketize(&p.payload) {
                    au.extend_from_slice(&b);
                }
                if p.header.marker && !au.is_empty() {
                    let _ = dec.send((now_ms(), std::mem::take(&mut au)));
                }
            }
        });
    }
    ffmpeg_pull(
        format!("rtmp://127.0.0.1:{port}/live/{room}"),
        samples.clone(),
        stop.clone(),
        std::fs::File::create(dir.path().join("ffmpeg.log")).expect("ffmpeg log"),
    );
    tokio::spawn(hls_poll(
        s.url(&format!("/live/{room}")),
        samples.clone(),
        stop.clone(),
    ));
    let until = WARMUP.as_secs_f64() + secs;
    while EPOCH.elapsed().as_secs_f64() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let ffmpeg_log = std::fs::read_to_string(dir.path().join("ffmpeg.log")).unwrap_or_default();
    if !ffmpeg_log.trim().is_empty() {
        eprintln!("ffmpeg (RTMP pull) said:\n{ffmpeg_log}");
    }
    let all = samples.lock().unwrap().clone();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# program latency: co-host 640x360 → program 1280x720 30 fps; {secs} s measured; load avg {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| path | pictures | p50 ms | p95 ms | min ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for path in [
        "rtmp-egress",
        "rtmp-nginx-ffmpeg",
        "whep",
        "hls-segment-first",
        "hls-segment-last",
    ] {
        let mut v: Vec<f64> = all
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, l)| *l)
            .collect();
        let n = v.len();
        let (p50, p95) = (pct(&mut v, 0.5), pct(&mut v, 0.95));
        let (mn, mx) = (
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        );
        println!("| {path} | {n} | {p50:.0} | {p95:.0} | {mn:.0} | {mx:.0} |");
    }
    let _ = peer.pc.close().await;
    let _ = vpeer.pc.close().await;
}
