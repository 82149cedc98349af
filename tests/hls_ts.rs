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
    assert!(
        playlist.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n"),
        "{playlist}"
    );
    assert!(playlist.contains("#EXT-X-PART-INF:PART-TARGET=0.33400\n"));
    // Low-Latency HLS parts: three of 10 frames a segment, each with its own PAT/PMT; the
    // first (a keyframe) decodes on its own, and the parts make up the segment.
    for s in &closed {
        assert_eq!(s.parts.len(), 3, "seg{}", s.sequence);
        let joined: Vec<u8> = s.parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, s.data.to_vec());
        for p in &s.parts {
            assert_eq!(p.data.len() % 188, 0);
            assert_eq!(((p.data[1] as u16 & 0x1F) << 8) | p.data[2] as u16, 0);
            assert_eq!(p.duration_ticks, 30_000);
        }
    }
    let part0 = d.join("part2.0.ts");
    std::fs::write(&part0, &closed[2].parts[0].data).expect("write part");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(&part0)
        .args(["-progress", "pipe:1", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "part: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("frame=10\n"));
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

#[test]
fn cues_are_timed_id3_that_ffprobe_reads_at_their_frame() {
    use mixer::h264::{build_user_data_sei, insert_sei_before_slices, CUE_SEI_UUID};
    if !have("ffprobe") {
        eprintln!("SKIPPED hls_ts: ffprobe not installed (apt-get install ffmpeg)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (aus, frames) = common::clip::make_clip(d);
    let mut seg = HlsSegmenter::new(HlsConfig::default());
    let store = seg.store();
    // Two cues, each stamped into three pictures as the mixer does: frame 40 and frame 95.
    let cue = |id: &str, frame: u64| {
        format!(
            r#"{{"v":1,"id":"{id}","pts_ms":{},"data":{{"kind":"coupon"}}}}"#,
            frame * 1000 / 30
        )
    };
    let cues = [(40u64, cue("c-1", 40)), (95, cue("c-2", 95))];
    let mut next_audio = 0usize;
    for (i, au) in aus.iter().enumerate() {
        let i = i as u64;
        let pts = i * 3000;
        while next_audio < frames.len() && (next_audio as u64) * 1920 <= pts {
            seg.push_audio(next_audio as u64 * 1920, &frames[next_audio]);
            next_audio += 1;
        }
        let stamped = cues
            .iter()
            .find(|(f, _)| (*f..*f + 3).contains(&i))
            .map(|(_, json)| build_user_data_sei(&CUE_SEI_UUID, json.as_bytes()));
        match stamped {
            Some(sei) => {
                let au = insert_sei_before_slices(au, &[sei]).expect("slices");
                seg.push_video(pts, is_keyframe(&au), &au);
            }
            None => {
                seg.push_video(pts, is_keyframe(au), au);
            }
        }
    }
    seg.finish();
    let mut all = Vec::new();
    for n in store.sequences() {
        all.extend_from_slice(&store.segment(n).expect("segment"));
    }
    let path = d.join("all.ts");
    std::fs::write(&path, &all).expect("write");
    let packets = common::timed_id3_packets(&path);
    assert_eq!(packets.len(), 2, "one tag per cue: {packets:?}");
    for ((pts, bytes), (frame, json)) in packets.iter().zip(&cues) {
        // The tag's time is its picture's: frame × 3000 ticks after the stream's start.
        assert_eq!(pts - 63_000, *frame as i64 * 3000);
        // The tag: "cohost/cue", NUL, the cue's JSON.
        let mut want = b"cohost/cue\0".to_vec();
        want.extend_from_slice(json.as_bytes());
        assert!(
            bytes.windows(want.len()).any(|w| w == want.as_slice()),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}
