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

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Splits an Annex-B stream into access units at access unit delimiters.
fn split_access_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 4 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let begin = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            if data[i + 3] & 0x1F == 9 {
                starts.push(begin);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut aus = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(data.len());
        aus.push(data[s..e].to_vec());
    }
    aus
}

fn is_keyframe(au: &[u8]) -> bool {
    mixer::mux::ts::annexb_has_nal_type(au, 5)
}

/// Raw AAC frames of an ADTS stream.
fn split_adts(data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos + 7 <= data.len() {
        assert_eq!(data[pos], 0xFF, "ADTS sync lost at {pos}");
        let header = if data[pos + 1] & 1 == 1 { 7 } else { 9 };
        let len = ((data[pos + 3] as usize & 3) << 11)
            | ((data[pos + 4] as usize) << 3)
            | (data[pos + 5] as usize >> 5);
        assert!(len > header && pos + len <= data.len(), "bad ADTS frame");
        frames.push(data[pos + header..pos + len].to_vec());
        pos += len;
    }
    frames
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
    let h264 = d.join("v.h264");
    let aac = d.join("a.aac");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "30",
        "-bf",
        "0",
        "-x264-params",
        "aud=1",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
        h264.to_str().expect("path"),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "5",
        "-c:a",
        "aac",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-f",
        "adts",
        aac.to_str().expect("path"),
    ]);
    let aus = split_access_units(&std::fs::read(&h264).expect("read h264"));
    let frames = split_adts(&std::fs::read(&aac).expect("read aac"));
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
