//! A short known clip made with ffmpeg: 5 s of H.264 (320x240, 30 fps, baseline, a keyframe
//! every 30 frames, AUDs) split into access units, and 5 s of a 440 Hz AAC-LC tone (48 kHz
//! stereo) split into raw frames — input for the output tests.

use std::path::Path;
use std::process::Command;

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

/// (access units in Annex B, raw AAC frames) of the clip, made in `dir`.
pub fn make_clip(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (h264, aac) = (dir.join("v.h264"), dir.join("a.aac"));
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
    (
        split_access_units(&std::fs::read(&h264).expect("read h264")),
        split_adts(&std::fs::read(&aac).expect("read aac")),
    )
}

/// Splits an Annex-B stream into access units at access unit delimiters.
pub fn split_access_units(data: &[u8]) -> Vec<Vec<u8>> {
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

/// Raw AAC frames of an ADTS stream.
pub fn split_adts(data: &[u8]) -> Vec<Vec<u8>> {
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
