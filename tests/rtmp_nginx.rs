//! RTMP output against a real nginx-rtmp server.
//!
//! Publishes a test clip (made by ffmpeg, read as FLV tags) through [`RtmpOutput`] in
//! real time, pulls it back with ffprobe/ffmpeg and checks H.264 320x240 + AAC 48 kHz
//! decode; then kills nginx mid-stream, checks the output goes `retrying`, restarts
//! nginx on the same port and checks it goes `live` again and the stream decodes.
//!
//! Needs `nginx` with `libnginx-mod-rtmp`, `ffmpeg` and `ffprobe` (CI installs them);
//! without them the test prints `SKIPPED` and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohost::output::{
    FlvTag, OutputState, RtmpOutput, RtmpOutputConfig, RtmpUrl, SequenceHeaders, TagKind,
};
use tokio::sync::{broadcast, watch};

use testkit as common;

use common::nginx::{free_port, missing_tools, Nginx};

/// Headers and media tags of an FLV file.
struct Clip {
    headers: SequenceHeaders,
    tags: Vec<FlvTag>,
    duration_ms: u32,
}

fn read_flv(path: &Path) -> Clip {
    let data = std::fs::read(path).expect("read flv");
    assert_eq!(&data[..3], b"FLV", "not an FLV file");
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len + 4;
    let mut headers = SequenceHeaders::default();
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let t = data[pos];
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let body_start = pos + 11;
        if body_start + size > data.len() {
            break;
        }
        let body = Bytes::copy_from_slice(&data[body_start..body_start + size]);
        pos = body_start + size + 4;
        match TagKind::from_flv_type(t) {
            Some(TagKind::Script) => headers.metadata = Some(body),
            Some(TagKind::Video) if body.len() > 1 && body[1] == 0 => headers.video = Some(body),
            Some(TagKind::Audio) if body.len() > 1 && body[0] >> 4 == 10 && body[1] == 0 => {
                headers.audio = Some(body)
            }
            Some(kind) => {
                let keyframe = kind == TagKind::Video && body[0] >> 4 == 1;
                tags.push(FlvTag {
                    kind,
                    timestamp_ms: ts,
                    body,
                    keyframe,
                });
            }
            None => {}
        }
    }
    let duration_ms = tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 34;
    Clip {
        headers,
        tags,
        duration_ms,
    }
}

fn make_clip(dir: &Path) -> PathBuf {
    let out = dir.join("x.flv");
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-g",
            "30",
            "-bf",
            "0",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000", "-ac", "2",
        ])
        .args(["-t", "6"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg failed to make the test clip");
    out
}

/// Sends the clip's tags in real time, looping with increasing timestamps, until
/// the returned sender is dropped.
fn spawn_pusher(clip: &Clip, tx: broadcast::Sender<FlvTag>) -> tokio::sync::oneshot::Sender<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tags = clip.tags.clone();
    let dur = clip.duration_ms;
    tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        for lap in 0u32.. {
            for tag in &tags {
                let ts = lap * dur + tag.timestamp_ms;
                let at = t0 + Duration::from_millis(u64::from(ts));
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = &mut stop_rx => return,
                }
                let mut t = tag.clone();
                t.timestamp_ms = ts;
                let _ = tx.send(t);
            }
        }
    });
    stop_tx
}

async fn wait_state(out: &RtmpOutput, want: OutputState, within: Duration) {
    let mut rx = out.subscribe_state();
    let r = tokio::time::timeout(within, rx.wait_for(|s| *s == want)).await;
    assert!(
        r.is_ok(),
        "output did not become {want:?} within {within:?}; status {:?}",
        out.status()
    );
}

/// Pulls the live stream: ffprobe for the stream parameters, ffmpeg to decode frames.
async fn pull_and_check(port: u16) {
    let url = format!("rtmp://127.0.0.1:{port}/live/test");
    let probe = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("ffprobe")
            .args(["-v", "error", "-analyzeduration", "3000000"])
            .args([
                "-show_entries",
                "stream=codec_type,codec_name,width,height,sample_rate,channels",
            ])
            .args(["-of", "json"])
            .arg(&url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ffprobe timed out")
    .expect("run ffprobe");
    let stdout = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("ffprobe json");
    let streams = json["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("no video stream: {stdout}"));
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["width"], 320);
    assert_eq!(video["height"], 240);
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .unwrap_or_else(|| panic!("no audio stream: {stdout}"));
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], 2);

    let dec = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-v",
                "error",
                "-analyzeduration",
                "3000000",
            ])
            .arg("-i")
            .arg(&url)
            .args(["-frames:v", "45", "-progress", "pipe:1", "-f", "null", "-"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ffmpeg pull timed out")
    .expect("run ffmpeg");
    let progress = String::from_utf8_lossy(&dec.stdout);
    let stderr = String::from_utf8_lossy(&dec.stderr);
    assert!(dec.status.success(), "ffmpeg decode failed: {stderr}");
    let frames: u64 = progress
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert!(
        frames >= 45,
        "decoded only {frames} frames; stderr: {stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("error while decoding"),
        "decode errors: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_output_publishes_to_nginx_and_survives_a_restart() {
    if let Some(missing) = missing_tools() {
        eprintln!("SKIPPED rtmp_nginx: missing {missing} (apt-get install nginx libnginx-mod-rtmp ffmpeg)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = read_flv(&make_clip(dir.path()));
    assert!(clip.headers.video.is_some() && clip.headers.audio.is_some());
    assert!(clip.tags.len() > 300, "clip has {} tags", clip.tags.len());

    let port = free_port();
    let mut nginx = Nginx::start(dir.path(), port);

    let (tags_tx, tags_rx) = broadcast::channel(1024);
    let (_headers_tx, headers_rx) = watch::channel(clip.headers.clone());
    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/test")).expect("url");
    let mut cfg = RtmpOutputConfig::new(url);
    cfg.backoff_initial = Duration::from_millis(200);
    cfg.backoff_max = Duration::from_secs(1);
    cfg.max_consecutive_rejections = None;
    let pusher = spawn_pusher(&clip, tags_tx.clone());
    let output = RtmpOutput::spawn(cfg, headers_rx, tags_rx);

    wait_state(&output, OutputState::Live, Duration::from_secs(10)).await;
    assert_eq!(output.status().reconnects, 0);
    pull_and_check(port).await;
    let before = output.status();
    assert!(before.bytes_sent > 50_000, "{before:?}");

    // Drop the server while pushing.
    nginx.kill();
    wait_state(&output, OutputState::Retrying, Duration::from_secs(10)).await;
    // Stay down for a while: retries fail (connection refused) and keep it retrying.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(output.state(), OutputState::Retrying);

    let nginx2 = Nginx::start(dir.path(), port);
    wait_state(&output, OutputState::Live, Duration::from_secs(15)).await;
    let after = output.status();
    assert!(after.reconnects >= 1, "{after:?}");
    pull_and_check(port).await;
    assert!(output.status().bytes_sent > after.bytes_sent);

    output.stop().await;
    assert_eq!(output.state(), OutputState::Stopped);
    drop(pusher);
    drop(nginx2);
}

/// The server's path: mixer-shaped outputs (Annex-B pictures with SPS/PPS on keyframes,
/// raw AAC frames) through `ProgramOutputs` to nginx and HLS at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_outputs_feed_nginx_and_hls() {
    use cohost::output::{ProgramOutputs, ProgramOutputsConfig};
    use mixer::{AacFrame, EncodedVideo, MixerOutput};

    if let Some(missing) = missing_tools() {
        eprintln!("SKIPPED rtmp_nginx: missing {missing} (apt-get install nginx libnginx-mod-rtmp ffmpeg)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (aus, frames) = common::clip::make_clip(d);
    assert_eq!(aus.len(), 150);
    assert!(frames.len() > 200);

    let port = free_port();
    let _nginx = Nginx::start(d, port);
    let meta = mixer::mux::flv::Metadata {
        width: 320,
        height: 240,
        fps: 30.0,
        video_kbps: 500,
        audio_kbps: 128,
    };
    let mut cfg = ProgramOutputsConfig::new(meta, vec![0x11, 0x90]);
    cfg.backoff_initial = Duration::from_millis(100);
    let program = ProgramOutputs::new(cfg);
    let out = program
        .add_rtmp(&format!("rtmp://127.0.0.1:{port}/live/test"))
        .expect("url");

    // Feed in real time, looping the 5 s clip, until told to stop.
    let feeder = {
        let program = program.clone();
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let mut items: Vec<(u64, MixerOutput)> = Vec::new();
            for lap in 0u64..4 {
                let base = lap * 5000;
                for (i, au) in aus.iter().enumerate() {
                    let pts = base + i as u64 * 1000 / 30;
                    items.push((
                        pts,
                        MixerOutput::Video(EncodedVideo {
                            data: bytes::Bytes::from(au.clone()),
                            pts_ms: pts,
                            dts_ms: pts,
                            keyframe: mixer::h264::has_nal_type(au, 5),
                        }),
                    ));
                }
                for (k, f) in frames.iter().enumerate() {
                    let pts = base + k as u64 * 64 / 3;
                    if pts >= base + 5000 {
                        break;
                    }
                    items.push((
                        pts,
                        MixerOutput::Audio(AacFrame {
                            data: bytes::Bytes::from(f.clone()),
                            pts_ms: pts,
                        }),
                    ));
                }
            }
            items.sort_by_key(|(pts, item)| (*pts, matches!(item, MixerOutput::Video(_))));
            for (pts, item) in items {
                tokio::time::sleep_until(t0 + Duration::from_millis(pts)).await;
                program.push(&item);
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = program.output(&out.id).expect("output").status.state;
        if st == OutputState::Live {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not live: {:?}",
            program.outputs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pull_and_check(port).await;
    let info = program.output(&out.id).expect("output");
    assert!(info.status.bytes_sent > 50_000, "{info:?}");
    assert_eq!(info.status.reconnects, 0);

    // HLS has been segmenting the same program meanwhile.
    let playlist = program.hls().playlist().expect("HLS playlist");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:1\n"), "{playlist}");
    assert!(playlist.contains("#EXTINF:1.000,"), "{playlist}");
    feeder.abort();
    program.shutdown().await;
    assert!(program.outputs().is_empty());
}

/// A second server implementation: ffmpeg's own RTMP listener records what we publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_output_publishes_to_ffmpeg_listener() {
    if let Some(missing) = missing_tools() {
        eprintln!("SKIPPED rtmp_nginx: missing {missing} (apt-get install nginx libnginx-mod-rtmp ffmpeg)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = read_flv(&make_clip(dir.path()));
    let port = free_port();
    let recorded = dir.path().join("recorded.flv");
    let mut listener = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-listen",
            "1",
        ])
        .arg("-i")
        .arg(format!("rtmp://127.0.0.1:{port}/live/test"))
        .args(["-c", "copy", "-t", "3"])
        .arg(&recorded)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg -listen");
    // ffmpeg -listen serves exactly one client, so no probing: the output simply
    // retries (connection refused) until ffmpeg listens.
    let (tags_tx, tags_rx) = broadcast::channel(1024);
    let (_headers_tx, headers_rx) = watch::channel(clip.headers.clone());
    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/test")).expect("url");
    let mut cfg = RtmpOutputConfig::new(url);
    cfg.backoff_initial = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(200);
    let pusher = spawn_pusher(&clip, tags_tx.clone());
    let output = RtmpOutput::spawn(cfg, headers_rx, tags_rx);
    wait_state(&output, OutputState::Live, Duration::from_secs(15)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), listener.wait())
        .await
        .expect("ffmpeg listener did not finish")
        .expect("ffmpeg listener");
    assert!(status.success(), "ffmpeg listener failed");
    output.stop().await;
    drop(pusher);

    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args([
            "stream=codec_name,width,height,sample_rate,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(&recorded)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let streams = json["streams"].as_array().expect("streams");
    let v = streams
        .iter()
        .find(|s| s["codec_name"] == "h264")
        .expect("h264 recorded");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(320), Some(240))
    );
    let frames: u64 = v["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(frames >= 60, "recorded {frames} frames");
    let a = streams
        .iter()
        .find(|s| s["codec_name"] == "aac")
        .expect("aac recorded");
    assert_eq!(a["sample_rate"], "48000");
}
