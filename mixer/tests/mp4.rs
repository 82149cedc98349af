//! The fragmented MP4 writer on real media: a few seconds of program from the mixer (synthetic
//! inputs, simulated clock) written through `Mp4Writer`, read back with ffprobe/ffmpeg, whole
//! and cut in the middle of a fragment.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use mixer::compose::Yuv;
use mixer::h264::{self, CUE_SEI_UUID, LAYOUT_SEI_UUID};
use mixer::mux::mp4::{Mp4Config, Mp4Writer};
use mixer::{MixConfig, Mixer, MixerOutput};
use serde_json::{json, Value};

const FRAMES: u64 = 150; // 5 s at 30 fps
const FRAGMENT_MS: u64 = 1000;

fn cfg() -> MixConfig {
    MixConfig {
        width: 640,
        height: 360,
        fps: 30,
        video_kbps: 1200,
        // A 2 s GOP: fragments close on keyframes and, in between, at 1 s.
        gop_s: 2.0,
        background: mixer::Rgb(0, 0, 0),
        ..MixConfig::default()
    }
}

fn input(id: &str, host: bool, color: Yuv, tone: f32) -> TestInput {
    TestInput {
        identity: id.into(),
        is_host: host,
        video: encode_pattern(320, 180, color, FRAMES as usize + 5, 30)
            .into_iter()
            .map(Some)
            .collect(),
        tone: Some(tone),
        opus: false,
    }
}

/// The recording: the file's bytes, where each append ended with the media time written by
/// then, and what went in.
struct Recording {
    file: Vec<u8>,
    /// (file length, `duration_ms()`) after every non-empty append.
    appends: Vec<(usize, u64)>,
    duration_ms: u64,
    videos: Vec<mixer::EncodedVideo>,
}

fn record() -> Recording {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        input("alice", true, Yuv::from_rgb(220, 30, 30), 440.0),
        input("bob", false, Yuv::from_rgb(30, 30, 220), 1000.0),
    ];
    let res = run(cfg(), &inputs, FRAMES, dir.path(), "rec", |m, t| {
        if t == 1990 {
            m.cue("ad-1", json!({"slot": "mid"}), 3).unwrap();
        }
    });
    let asc = Mixer::new(cfg()).unwrap().audio_specific_config();
    assert_eq!(asc, vec![0x11, 0x90]);
    let mut w = Mp4Writer::new(Mp4Config {
        fragment_ms: FRAGMENT_MS,
        ..Mp4Config::new(640, 360, asc)
    })
    .unwrap();
    let mut file = Vec::new();
    let mut appends = Vec::new();
    let mut videos = Vec::new();
    for o in &res.outputs {
        let bytes = match o {
            MixerOutput::Video(v) => {
                videos.push(v.clone());
                w.push_video(v.pts_ms, v.keyframe, &v.data)
            }
            MixerOutput::Audio(a) => w.push_audio(a.pts_ms, &a.data),
            _ => Vec::new(),
        };
        if !bytes.is_empty() {
            file.extend(bytes);
            appends.push((file.len(), w.duration_ms()));
        }
    }
    file.extend(w.finish());
    appends.push((file.len(), w.duration_ms()));
    assert!(w.started());
    assert!(!w.parameter_sets_changed());
    Recording {
        file,
        appends,
        duration_ms: w.duration_ms(),
        videos,
    }
}

fn ffprobe(path: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// (codec_type, codec_name, frames read) per stream.
fn streams(path: &Path) -> Vec<(String, String, u64)> {
    let s = ffprobe(
        path,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ],
    );
    s.lines()
        .map(|l| {
            let p: Vec<&str> = l.split(',').collect();
            assert_eq!(p.len(), 3, "{s}");
            // ffprobe's order: codec_name, codec_type, nb_read_frames.
            (p[1].to_string(), p[0].to_string(), p[2].parse().unwrap())
        })
        .collect()
}

fn format_duration(path: &Path) -> f64 {
    ffprobe(
        path,
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
    )
    .parse()
    .unwrap()
}

/// The last decoded video frame's presentation time, s.
fn last_video_pts(path: &Path) -> f64 {
    let s = ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ],
    );
    s.lines().last().unwrap().trim().parse().unwrap()
}

#[test]
fn recording_plays_whole_and_cut() {
    let rec = record();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    std::fs::write(&path, &rec.file).unwrap();
    assert_eq!(rec.videos.len() as u64, FRAMES);
    assert!(rec.videos[0].keyframe);

    // Two streams, every picture there.
    let st = streams(&path);
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!((st[0].0.as_str(), st[0].1.as_str()), ("video", "h264"));
    assert_eq!((st[1].0.as_str(), st[1].1.as_str()), ("audio", "aac"));
    assert_eq!(st[0].2, FRAMES);
    // Audio: about 5 s of 1024-sample frames.
    let audio_frames = st[1].2;
    assert!(
        (230..=236).contains(&audio_frames),
        "audio frames {audio_frames}"
    );
    assert_eq!(
        ffprobe(
            &path,
            &[
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height,profile",
                "-of",
                "csv=p=0"
            ]
        ),
        "Constrained Baseline,640,360"
    );

    // Duration: what the writer says it wrote (5 s of pictures).
    let d = format_duration(&path);
    let written = rec.duration_ms as f64 / 1000.0;
    assert!((written - 5.0).abs() < 0.05, "writer says {written}");
    assert!(
        (d - written).abs() < 0.1,
        "ffprobe {d} vs written {written}"
    );

    // The first picture is a keyframe at 0.
    let first = ffprobe(
        &path,
        &[
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame,pts_time",
            "-of",
            "csv=p=0",
        ],
    );
    assert_eq!(
        first.lines().next().unwrap().trim_end_matches(','),
        "1,0.000000",
        "{first}"
    );
    // Keyframes where the mixer made them (every 2 s).
    let keys = ffprobe(
        &path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ],
    );
    let key_times: Vec<&str> = keys
        .lines()
        .filter(|l| l.ends_with(",K_") || l.ends_with(",K"))
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        key_times,
        vec!["0.000000", "2.000000", "4.000000"],
        "{keys}"
    );

    // ffmpeg decodes all of it without a complaint.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The audio is the mix: both tones.
    let audio = decode_audio(&path);
    assert!(audio.len() > 48_000 * 45 / 10, "{}", audio.len());
    let body = &audio[9600..audio.len() - 9600];
    let (p440, p1000, p700) = (
        tone_power(body, 440.0),
        tone_power(body, 1000.0),
        tone_power(body, 700.0),
    );
    assert!(
        p440 > 100.0 * p700 && p1000 > 100.0 * p700,
        "{p440} {p1000} {p700}"
    );

    // The SEI survive: the video copied back to Annex-B has the same layout and cue
    // messages, access unit by access unit.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&path)
        .args([
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-an",
            "-f",
            "h264",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aus = h264::access_units(&out.stdout);
    assert_eq!(aus.len() as u64, FRAMES);
    let mut layouts = 0;
    let mut cues = 0;
    for (i, (au, v)) in aus.iter().zip(&rec.videos).enumerate() {
        let got = h264::find_user_data(au, &LAYOUT_SEI_UUID);
        assert_eq!(
            got,
            h264::find_user_data(&v.data, &LAYOUT_SEI_UUID),
            "frame {i}"
        );
        for data in &got {
            let j: Value = serde_json::from_slice(data).unwrap();
            assert_eq!(j["pts_ms"], v.pts_ms);
            assert_eq!(j["regions"].as_array().unwrap().len(), 2);
            layouts += 1;
        }
        let got = h264::find_user_data(au, &CUE_SEI_UUID);
        assert_eq!(
            got,
            h264::find_user_data(&v.data, &CUE_SEI_UUID),
            "frame {i}"
        );
        for data in &got {
            let j: Value = serde_json::from_slice(data).unwrap();
            assert_eq!(j["id"], "ad-1");
            cues += 1;
        }
        // The slices are the mixer's, byte for byte.
        let slices = |au: &[u8]| -> Vec<Vec<u8>> {
            h264::split_annexb(au)
                .filter(|n| h264::is_vcl(n))
                .map(<[u8]>::to_vec)
                .collect()
        };
        assert_eq!(slices(au), slices(&v.data), "frame {i}");
    }
    assert!(layouts >= 3, "a layout SEI on every keyframe: {layouts}");
    assert_eq!(cues, 3);

    // Cut in the middle of a late fragment: what is complete before the cut still plays.
    // init, fragments ending at 1, 2 (keyframe), 3, 4 (keyframe) s, the last at 5 s.
    let ends: Vec<u64> = rec.appends.iter().map(|a| a.1).collect();
    assert_eq!(ends.len(), 6, "{ends:?}");
    for k in 3..rec.appends.len() {
        let (complete_len, complete_ms) = rec.appends[k - 1];
        let next_len = rec.appends[k].0;
        let cut = complete_len + (next_len - complete_len) * 2 / 5;
        let cut_path = dir.path().join(format!("cut{k}.mp4"));
        std::fs::write(&cut_path, &rec.file[..cut]).unwrap();
        let d = format_duration(&cut_path);
        let complete = complete_ms as f64 / 1000.0;
        let next = rec.appends[k].1 as f64 / 1000.0;
        // No more than the fragment being written, no less than the complete ones.
        assert!(
            d >= complete - 0.1 && d <= next + 0.04,
            "cut at {cut}: {d} s, complete {complete}, next {next}"
        );
        assert!(d <= complete + FRAGMENT_MS as f64 / 1000.0 + 0.034);
        // Every picture of the complete fragments is there and decodes.
        let st = streams(&cut_path);
        let complete_frames = rec
            .videos
            .iter()
            .filter(|v| (v.pts_ms as f64) < complete * 1000.0 - 1.0)
            .count() as u64;
        assert!(
            st[0].2 >= complete_frames && st[0].2 <= FRAMES,
            "cut {k}: {} frames, {complete_frames} complete",
            st[0].2
        );
        let last = last_video_pts(&cut_path);
        assert!(last >= complete - 0.07, "last picture at {last}");
    }
}
