//! HLS segmenter + MPEG-TS muxer checked by ffprobe/ffmpeg.
//!
//! ffmpeg makes 5 s of H.264 (Annex-B, keyframe every second) and AAC (ADTS, 48 kHz
//! stereo); the test splits them into access units and raw AAC frames, feeds the
//! segmenter, writes `index.m3u8` and the segments to a temp dir, and checks that
//! ffprobe sees H.264 320x240 + AAC 48 kHz with the right duration and that ffmpeg
//! decodes every frame without errors. Skipped (with a message) without ffmpeg.

use std::path::Path;
use std::process::{Command, Stdio};

use cohost::output::hls::{HlsConfig, HlsSegmenter};

use testkit as common;

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn is_keyframe(au: &[u8]) -> bool {
    mixer::h264::has_nal_type(au, 5)
}

fn probe_json(path: &Path, entries: &str) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// Packet-level checks over all segments: sync bytes, PAT then PMT first in each
/// segment, continuity counters per PID across segments, random access on each
/// segment's first video packet.
fn check_ts_structure(store: &cohost::output::HlsStore) {
    use std::collections::HashMap;
    let mut cc: HashMap<u16, u8> = HashMap::new();
    for n in store.sequences() {
        let seg = store.segment(n).expect("segment");
        let packets: Vec<&[u8]> = seg.chunks(188).collect();
        let pid = |p: &[u8]| ((p[1] as u16 & 0x1F) << 8) | p[2] as u16;
        assert_eq!(pid(packets[0]), 0, "seg{n}: PAT first");
        assert_eq!(pid(packets[1]), 0x1000, "seg{n}: PMT second");
        let mut first_video = true;
        for p in &packets {
            assert_eq!(p.len(), 188);
            assert_eq!(p[0], 0x47);
            let id = pid(p);
            let c = p[3] & 0x0F;
            if let Some(prev) = cc.insert(id, c) {
                assert_eq!(c, (prev + 1) & 0x0F, "seg{n}: CC jump on PID {id:#x}");
            }
            if id == 0x100 && first_video {
                first_video = false;
                assert!(p[1] & 0x40 != 0, "seg{n}: PUSI");
                assert!(
                    p[3] & 0x20 != 0 && p[5] & 0x40 != 0,
                    "seg{n}: random access"
                );
            }
        }
    }
}

#[test]
fn hls_playlist_plays_in_ffmpeg() {
    if !have("ffmpeg") || !have("ffprobe") {
        eprintln!("SKIPPED hls_ts: ffmpeg/ffprobe not installed (apt-get install ffmpeg)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (aus, frames) = common::clip::make_clip(d);
    assert_eq!(aus.len(), 150, "access units");
    assert!(is_keyframe(&aus[0]));
    assert!(frames.len() > 230, "aac frames: {}", frames.len());

    let mut seg = HlsSegmenter::new(HlsConfig::default());
    let store = seg.store();
    let mut closed = Vec::new();
    let mut next_audio = 0usize;
    for (i, au) in aus.iter().enumerate() {
        let pts = i as u64 * 3000;
        while next_audio < frames.len() && (next_audio as u64) * 1920 <= pts {
            seg.push_audio(next_audio as u64 * 1920, &frames[next_audio]);
            next_audio += 1;
        }
        closed.extend(seg.push_video(pts, is_keyframe(au), au));
    }
    while next_audio < frames.len() && (next_audio as u64) * 1920 < 150 * 3000 {
        seg.push_audio(next_audio as u64 * 1920, &frames[next_audio]);
        next_audio += 1;
    }
    closed.extend(seg.finish());

    // Keyframe every second, 1 s target: five 1-second segments.
    assert_eq!(closed.len(), 5);
    for (i, s) in closed.iter().enumerate() {
        assert_eq!(s.sequence, i as u64);
        assert_eq!(s.duration_ticks, 90_000);
    }
    let playlist = store.playlist().expect("playlist");
    assert!(playlist.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n"));
    assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
    assert_eq!(playlist.matches("#EXTINF:1.000,").count(), 5);
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    std::fs::write(d.join("index.m3u8"), &playlist).expect("write playlist");
    for n in store.sequences() {
        let bytes = store.segment(n).expect("segment");
        assert_eq!(bytes.len() % 188, 0);
        std::fs::write(d.join(format!("seg{n}.ts")), &bytes).expect("write segment");
    }

    check_ts_structure(&store);

    // Every segment decodes on its own (starts with PAT/PMT and an IDR with SPS/PPS).
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(d.join("seg2.ts"))
        .args(["-progress", "pipe:1", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "seg2.ts: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("frame=30\n"));

    let index = d.join("index.m3u8");
    let info = probe_json(
        &index,
        "format=duration:stream=codec_type,codec_name,width,height,sample_rate,channels",
    );
    let streams = info["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240))
    );
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio stream");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], 2);
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("duration");
    assert!((4.8..=5.3).contains(&duration), "duration {duration}");

    // Decode everything: no errors, every video frame.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(&index)
        .args(["-progress", "pipe:1", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg decode failed: {stderr}");
    assert!(stderr.trim().is_empty(), "decode errors: {stderr}");
    let decoded: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert_eq!(decoded, 150, "decoded video frames");
}
