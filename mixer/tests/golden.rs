//! Golden pipeline tests: synthetic inputs through the mixer core on a simulated clock,
//! the program written as FLV and read back with ffprobe/ffmpeg.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use mixer::compose::Yuv;
use mixer::h264::{self, CUE_SEI_UUID, LAYOUT_SEI_UUID};
use mixer::layout::{Layout, Template};
use mixer::MixConfig;
use serde_json::{json, Value};

const LAYOUT_UUID_STR: &str = "beb59904-6493-40f3-8a26-140d6aef0e04";
const CUE_UUID_STR: &str = "9a44be0e-9ad1-4c7b-99e9-b8618dd4c159";

fn cfg(w: u32, h: u32) -> MixConfig {
    MixConfig {
        width: w,
        height: h,
        fps: 30,
        video_kbps: 1500,
        gop_s: 1.0,
        background: mixer::Rgb(0, 0, 0),
        ..MixConfig::default()
    }
}

fn red() -> Yuv {
    Yuv::from_rgb(220, 30, 30)
}
fn blue() -> Yuv {
    Yuv::from_rgb(30, 30, 220)
}

fn input(id: &str, host: bool, color: Yuv, frames: usize, tone: Option<f32>) -> TestInput {
    TestInput {
        identity: id.into(),
        is_host: host,
        video: encode_pattern(320, 180, color, frames, 30)
            .into_iter()
            .map(Some)
            .collect(),
        tone,
        opus: false,
    }
}

#[test]
fn golden_two_inputs_grid_layout_change_cue_audio() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        input("alice", true, red(), 95, Some(440.0)),
        input("bob", false, blue(), 95, Some(1000.0)),
    ];
    let mut cue_ack = None;
    let res = run(cfg(640, 360), &inputs, 90, dir.path(), "two", |m, t| {
        // Frame 45 is due at 1500 ms: switch to pip just before it.
        if t == 1490 {
            m.set_layout(Layout::template(Template::Pip));
        }
        // Frame 20 is due at 666.7 ms: the cue lands on it.
        if t == 660 {
            cue_ack = Some(m.cue("ad-7", json!({"slot": "mid", "n": 1}), 3).unwrap());
        }
    });
    let ack = cue_ack.unwrap();
    assert_eq!(ack.pts_ms, 666);

    // Size and frame count.
    assert_eq!(probe(&res.flv), (640, 360, 90));
    // onMetaData parsed by ffmpeg's FLV demuxer (unknown keys become format tags).
    let tags = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format_tags=encoder",
            "-of",
            "csv=p=0",
        ])
        .arg(&res.flv)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tags.stdout).trim(), "cohost");
    let videos = res.videos();
    assert_eq!(videos.len(), 90);
    let keyframes: Vec<usize> = videos
        .iter()
        .enumerate()
        .filter(|(_, v)| v.keyframe)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keyframes, vec![0, 30, 60]);
    for v in &videos {
        assert_eq!(v.dts_ms, v.pts_ms);
        // SEI NAL units sit before the slices; no SEI-only access units.
        let types: Vec<u8> = h264::split_annexb(&v.data)
            .filter_map(h264::nal_unit_type)
            .collect();
        let first_slice = types.iter().position(|t| *t == 1 || *t == 5).unwrap();
        assert!(
            types[first_slice..].iter().all(|t| *t == 1 || *t == 5),
            "{types:?}"
        );
    }

    // Region colours: grid of 2 = left/right halves.
    let frames = decode_frames(&res.flv, 640, 360);
    assert_eq!(frames.len(), 90);
    for i in [5usize, 30, 44] {
        assert_color(
            &frames[i],
            40,
            80,
            240,
            200,
            red(),
            12.0,
            &format!("frame {i} alice"),
        );
        assert_color(
            &frames[i],
            360,
            80,
            240,
            200,
            blue(),
            12.0,
            &format!("frame {i} bob"),
        );
    }
    // The layout change lands on frame 45: alice full canvas, bob small bottom right.
    assert_color(
        &frames[45],
        360,
        20,
        240,
        100,
        red(),
        12.0,
        "frame 45 alice behind",
    );
    assert_color(
        &frames[45],
        640 - 16 - 140,
        360 - 9 - 80,
        120,
        70,
        blue(),
        14.0,
        "frame 45 bob pip",
    );
    assert_color(
        &frames[89],
        360,
        20,
        240,
        100,
        red(),
        12.0,
        "frame 89 alice",
    );

    // SEI read back by ffmpeg.
    let sei = showinfo_user_data(&res.flv);
    assert_eq!(sei.len(), 90, "one showinfo entry per frame");
    let mut layout_frames = Vec::new();
    let mut cue_frames = Vec::new();
    for (i, items) in sei.iter().enumerate() {
        for (uuid, data) in items {
            let j: Value =
                serde_json::from_slice(data).unwrap_or_else(|e| panic!("frame {i} json {e}"));
            if uuid == LAYOUT_UUID_STR {
                layout_frames.push(i);
                assert_eq!(j["v"], 1);
                assert_eq!(j["w"], 640);
                assert_eq!(j["h"], 360);
                assert_eq!(j["pts_ms"], videos[i].pts_ms);
                let regions = j["regions"].as_array().unwrap();
                assert_eq!(regions.len(), 2);
                let ids: Vec<&str> = regions
                    .iter()
                    .map(|r| r["identity"].as_str().unwrap())
                    .collect();
                assert_eq!(ids, vec!["alice", "bob"]);
                if i < 45 {
                    assert_eq!(regions[0]["x"], 0);
                    assert_eq!(regions[0]["w"], 320);
                    assert_eq!(regions[1]["x"], 320);
                    assert_eq!(regions[1]["h"], 360);
                } else {
                    assert_eq!(regions[0]["w"], 640);
                    assert_eq!(regions[1]["z"], 1);
                    assert_eq!(regions[1]["w"], 160);
                }
                for r in regions {
                    let a = r["audio"].as_f64().unwrap();
                    // Both speak a 0.3-amplitude tone: a clearly non-zero level once running.
                    if i > 0 {
                        assert!(a > 0.5 && a <= 1.0, "frame {i} audio {a}");
                    }
                }
            } else if uuid == CUE_UUID_STR {
                cue_frames.push(i);
                assert_eq!(
                    j,
                    json!({"v":1,"id":"ad-7","pts_ms":666,"data":{"slot":"mid","n":1}})
                );
            } else {
                panic!("unexpected SEI {uuid}");
            }
        }
    }
    assert_eq!(layout_frames, vec![0, 30, 45, 60]);
    assert_eq!(cue_frames, vec![20, 21, 22]);
    // Same from the raw access units.
    let raw_layout: Vec<usize> = videos
        .iter()
        .enumerate()
        .filter(|(_, v)| !h264::find_user_data(&v.data, &LAYOUT_SEI_UUID).is_empty())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(raw_layout, layout_frames);
    assert_eq!(
        videos
            .iter()
            .map(|v| h264::find_user_data(&v.data, &CUE_SEI_UUID).len())
            .sum::<usize>(),
        3
    );

    // Audio: both tones present in the decoded AAC, nothing at an unrelated frequency.
    let audio = decode_audio(&res.flv);
    assert!(
        audio.len() > 48_000 * 25 / 10,
        "audio samples {}",
        audio.len()
    );
    let body = &audio[4800..audio.len() - 4800];
    let p440 = tone_power(body, 440.0);
    let p1000 = tone_power(body, 1000.0);
    let p700 = tone_power(body, 700.0);
    let p2500 = tone_power(body, 2500.0);
    assert!(
        p440 > 100.0 * p700 && p1000 > 100.0 * p700,
        "440 {p440} 1000 {p1000} 700 {p700}"
    );
    assert!(p440 > 100.0 * p2500, "2500 {p2500}");
    assert!(
        (p440 / p1000) > 0.5 && (p440 / p1000) < 2.0,
        "balanced mix {p440} {p1000}"
    );

    // A/V alignment: first audio and video timestamps within one frame.
    let first_audio = res
        .outputs
        .iter()
        .find_map(|o| {
            if let mixer::MixerOutput::Audio(a) = o {
                Some(a.pts_ms)
            } else {
                None
            }
        })
        .unwrap();
    assert!(first_audio <= 34, "first audio pts {first_audio}");
    assert_eq!(videos[0].pts_ms, 0);
}
