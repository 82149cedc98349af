//! Robustness through the whole pipeline: corrupt input, resolution changes, inputs that
//! stop and resume, zero and nine inputs, audio-only participants, over-long cues, portrait
//! canvases, Opus input through the jitter buffer.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use mixer::compose::{identity_color, Yuv};
use mixer::h264::{self, CUE_SEI_UUID};
use mixer::{CueError, MixConfig, MixerEvent, MixerOutput};
use serde_json::json;

fn cfg(w: u32, h: u32) -> MixConfig {
    MixConfig {
        width: w,
        height: h,
        fps: 30,
        video_kbps: 1500,
        gop_s: 1.0,
        background: mixer::Rgb(0, 0, 0),
        stall_timeout_ms: 500,
        // These tests check which input frame each program frame shows; lip sync (video held
        // back to its audio's delay) is covered by the mixer's unit tests.
        lip_sync: false,
        ..MixConfig::default()
    }
}

fn pattern(color: Yuv, frames: usize) -> Vec<Option<Vec<u8>>> {
    encode_pattern(320, 180, color, frames, 30)
        .into_iter()
        .map(Some)
        .collect()
}

fn solo(id: &str, video: Vec<Option<Vec<u8>>>, tone: Option<f32>) -> TestInput {
    TestInput {
        identity: id.into(),
        is_host: true,
        video,
        tone,
        opus: false,
    }
}

fn keyframe_requests(res: &RunResult, id: &str) -> usize {
    res.events()
        .iter()
        .filter(|e| matches!(e, MixerEvent::RequestKeyframe(x) if x == id))
        .count()
}

#[test]
fn corrupt_truncated_and_garbage_access_units() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let mut video = pattern(red, 65);
    let mut x: u32 = 99;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    };
    let half = video[10].as_ref().unwrap().len() / 2;
    video[10].as_mut().unwrap().truncate(half);
    video[11] = Some(rnd(3000));
    video[12] = Some(Vec::new());
    let mut fake = vec![0, 0, 0, 1, 0x65];
    fake.extend(rnd(2000));
    video[13] = Some(fake);
    let mut fake_sps = vec![0, 0, 0, 1, 0x67];
    fake_sps.extend(rnd(40));
    fake_sps.extend([0, 0, 0, 1, 0x68]);
    fake_sps.extend(rnd(10));
    fake_sps.extend([0, 0, 0, 1, 0x41]);
    fake_sps.extend(rnd(500));
    video[14] = Some(fake_sps);
    video[15] = Some(vec![0; 100_000]);
    video[16] = Some(vec![0x80, 0, 0, 1, 0xe5, 1, 2, 3]); // forbidden bit
                                                          // Default stall timeout (2 s): the damage (input frames 10..29) is held, not replaced.
    let c = MixConfig {
        stall_timeout_ms: 2000,
        ..cfg(320, 180)
    };
    let res = run(
        c,
        &[solo("alice", video, Some(440.0))],
        60,
        dir.path(),
        "corrupt",
        |_, _| {},
    );
    assert_eq!(probe(&res.flv), (320, 180, 60));
    let frames = decode_frames(&res.flv, 320, 180);
    // The last good picture is held through the damage; the IDR at input frame 30 recovers.
    for (i, f) in frames.iter().enumerate() {
        assert_color(f, 60, 60, 200, 100, red, 25.0, &format!("frame {i}"));
    }
    // One request at join, then at most one per second of damage.
    let n = keyframe_requests(&res, "alice");
    assert!((2..=3).contains(&n), "keyframe requests {n}");
}

#[test]
fn resolution_change_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let green = Yuv::from_rgb(30, 200, 60);
    let mut video = pattern(red, 30);
    video.extend(
        encode_pattern(176, 144, green, 35, 30)
            .into_iter()
            .map(Some),
    );
    let res = run(
        cfg(320, 180),
        &[solo("alice", video, None)],
        60,
        dir.path(),
        "reschange",
        |_, _| {},
    );
    assert_eq!(probe(&res.flv), (320, 180, 60));
    let frames = decode_frames(&res.flv, 320, 180);
    assert_color(&frames[20], 60, 60, 200, 100, red, 12.0, "before");
    assert_color(&frames[45], 60, 60, 200, 100, green, 12.0, "after");
    assert_color(&frames[59], 60, 60, 200, 100, green, 12.0, "end");
}

#[test]
fn input_stops_then_placeholder_then_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let mut video = pattern(red, 30);
    video.extend((0..45).map(|_| None));
    // The publisher comes back with a fresh encoder (starts with an IDR).
    video.extend(pattern(red, 50));
    let res = run(
        cfg(320, 180),
        &[solo("alice", video, Some(440.0))],
        115,
        dir.path(),
        "stall",
        |_, _| {},
    );
    let frames = decode_frames(&res.flv, 320, 180);
    assert_eq!(frames.len(), 115);
    // Held for the stall timeout (last picture at 967 ms, timeout 500 ms).
    assert_color(&frames[40], 60, 20, 200, 100, red, 12.0, "held");
    // Then the placeholder (identity colour, level bar along the bottom).
    let ph = identity_color("alice");
    assert_color(&frames[60], 60, 20, 200, 100, ph, 12.0, "placeholder");
    let bar = mean_yuv(&frames[60], 20, 180 - 26, 160, 10);
    let green = Yuv::from_rgb(80, 220, 100);
    assert!(
        (bar.1 - f64::from(green.u)).abs() < 15.0 && (bar.2 - f64::from(green.v)).abs() < 15.0,
        "level bar {bar:?} vs {green:?}"
    );
    // Back after the resume at input frame 75 (2500 ms).
    assert_color(&frames[80], 60, 20, 200, 100, red, 12.0, "resumed");
    let ev: Vec<&MixerEvent> = res
        .events()
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                MixerEvent::RequestKeyframe(_) | MixerEvent::Presented { .. }
            )
        })
        .collect();
    assert_eq!(
        ev,
        vec![
            &MixerEvent::InputStalled("alice".into()),
            &MixerEvent::InputResumed("alice".into())
        ]
    );
}

#[test]
fn zero_inputs_background_only() {
    let dir = tempfile::tempdir().unwrap();
    let c = MixConfig {
        background: mixer::Rgb(20, 120, 200),
        ..cfg(320, 180)
    };
    let res = run(c, &[], 30, dir.path(), "empty", |_, _| {});
    assert_eq!(probe(&res.flv), (320, 180, 30));
    let bg = Yuv::from_rgb(20, 120, 200);
    for f in decode_frames(&res.flv, 320, 180) {
        assert_color(&f, 0, 0, 320, 180, bg, 3.0, "background");
    }
    // The layout SEI still goes out on keyframes, with no regions.
    let v = res.videos();
    let d = h264::find_user_data(&v[0].data, &h264::LAYOUT_SEI_UUID);
    let j: serde_json::Value = serde_json::from_slice(&d[0]).unwrap();
    assert_eq!(j["regions"], json!([]));
    // Silent audio is still produced (players need a continuous track).
    let audio = decode_audio(&res.flv);
    assert!(audio.len() > 40_000);
    assert!(audio.iter().all(|s| s.abs() < 1e-3));
}

#[test]
fn nine_inputs_grid() {
    let dir = tempfile::tempdir().unwrap();
    let colors: Vec<Yuv> = (0..9)
        .map(|i| {
            let r = [230, 30, 30, 230, 230, 30, 128, 250, 60][i];
            let g = [30, 200, 30, 230, 30, 200, 128, 140, 60][i];
            let b = [30, 30, 230, 30, 230, 230, 128, 20, 60][i];
            Yuv::from_rgb(r, g, b)
        })
        .collect();
    let inputs: Vec<TestInput> = colors
        .iter()
        .enumerate()
        .map(|(i, c)| TestInput {
            identity: format!("p{i}"),
            is_host: i == 0,
            video: pattern(*c, 20),
            tone: Some(300.0 + 100.0 * i as f32),
            opus: false,
        })
        .collect();
    let res = run(cfg(480, 270), &inputs, 15, dir.path(), "nine", |_, _| {});
    assert_eq!(probe(&res.flv), (480, 270, 15));
    let frames = decode_frames(&res.flv, 480, 270);
    for (i, c) in colors.iter().enumerate() {
        let (col, row) = (i as u32 % 3, i as u32 / 3);
        assert_color(
            &frames[14],
            col * 160 + 30,
            row * 90 + 20,
            100,
            50,
            *c,
            14.0,
            &format!("tile {i}"),
        );
    }
}

#[test]
fn audio_only_participant_gets_placeholder_with_level() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [solo("radio", Vec::new(), Some(440.0))];
    let res = run(
        cfg(320, 180),
        &inputs,
        30,
        dir.path(),
        "audioonly",
        |_, _| {},
    );
    let frames = decode_frames(&res.flv, 320, 180);
    let ph = identity_color("radio");
    assert_color(&frames[29], 40, 20, 240, 100, ph, 12.0, "placeholder");
    // Loud input: the bar covers most of the width.
    let bar = mean_yuv(&frames[29], 20, 180 - 26, 160, 10);
    let green = Yuv::from_rgb(80, 220, 100);
    assert!(
        (bar.1 - f64::from(green.u)).abs() < 15.0 && (bar.2 - f64::from(green.v)).abs() < 15.0,
        "level bar {bar:?} vs {green:?}"
    );
}

#[test]
fn over_long_cue_is_refused_and_not_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let mut err = None;
    let res = run(cfg(320, 180), &[], 10, dir.path(), "longcue", |m, t| {
        if t == 100 {
            err = Some(m.cue("big", json!({"text": "x".repeat(300)}), 3));
        }
    });
    assert!(
        matches!(err, Some(Err(CueError::TooLarge { .. }))),
        "{err:?}"
    );
    for v in res.videos() {
        assert!(h264::find_user_data(&v.data, &CUE_SEI_UUID).is_empty());
    }
}

#[test]
fn portrait_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let blue = Yuv::from_rgb(30, 30, 220);
    let inputs = [
        solo("a", pattern(red, 20), None),
        TestInput {
            identity: "b".into(),
            is_host: false,
            video: pattern(blue, 20),
            tone: None,
            opus: false,
        },
    ];
    let res = run(
        cfg(180, 320),
        &inputs,
        15,
        dir.path(),
        "portrait",
        |_, _| {},
    );
    assert_eq!(probe(&res.flv), (180, 320, 15));
    let frames = decode_frames(&res.flv, 180, 320);
    assert_color(&frames[14], 20, 20, 140, 120, red, 12.0, "top");
    assert_color(&frames[14], 20, 180, 140, 120, blue, 12.0, "bottom");
}

#[test]
fn opus_input_through_jitter_buffer_reaches_aac() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [TestInput {
        identity: "caller".into(),
        is_host: true,
        video: Vec::new(),
        tone: Some(660.0),
        opus: true,
    }];
    let res = run(cfg(320, 180), &inputs, 60, dir.path(), "opus", |_, _| {});
    let audio = decode_audio(&res.flv);
    let body = &audio[9600..audio.len() - 4800];
    let p = tone_power(body, 660.0);
    let off = tone_power(body, 1500.0);
    assert!(p > 1000.0 * off && p > 1e-3, "660 {p} off {off}");
    // Opus program packets: one per 20 ms, 20 ms apart, and they carry the tone too.
    let packets: Vec<&mixer::OpusFrame> = res
        .outputs
        .iter()
        .filter_map(|o| {
            if let MixerOutput::Opus(p) = o {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    assert!(
        (95..=101).contains(&packets.len()),
        "opus {}",
        packets.len()
    );
    assert!(packets.windows(2).all(|w| w[1].pts_ms == w[0].pts_ms + 20));
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0f32; 5760 * 2];
    for p in &packets {
        let n = dec.decode_float(&p.data, &mut buf, false).unwrap();
        assert_eq!(n, 960);
        pcm.extend(buf[..n * 2].chunks(2).map(|c| c[0]));
    }
    let body = &pcm[9600..];
    assert!(tone_power(body, 660.0) > 1000.0 * tone_power(body, 1500.0));
}

#[test]
fn audio_lines_up_with_the_program_clock() {
    use mixer::mux::flv::{FlvMuxer, Metadata};
    use mixer::Mixer;
    use std::time::Duration;
    // A tone that starts at program time 1000 ms must be heard at 1000 ms in the decoded
    // program (encoder priming compensated), and the picture that changes at the same
    // moment must be the one stamped 1000 ms.
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(160, 90);
    let mut m = Mixer::new(c.clone()).unwrap();
    m.add_input("a", true);
    let asc = m.audio_specific_config();
    let mut mux = FlvMuxer::new();
    let mut bytes = mux.header(&Metadata {
        width: 160,
        height: 90,
        fps: 30.0,
        video_kbps: 1500,
        audio_kbps: 128,
    });
    let mut pos = 0usize;
    for t in (0..=2000u64).step_by(10) {
        while pos as u64 * 1000 / 48_000 <= t + 20 {
            let block = if pos >= 48_000 {
                sine(500.0, 0.5, 960, pos)
            } else {
                vec![0.0; 1920]
            };
            m.push_pcm("a", &block);
            pos += 960;
        }
        for o in m.poll(Duration::from_millis(t)) {
            match o {
                MixerOutput::Video(v) => bytes.extend(mux.video(&v.data, v.pts_ms, v.keyframe)),
                MixerOutput::Audio(a) => bytes.extend(mux.audio(&a.data, a.pts_ms, &asc)),
                _ => {}
            }
        }
    }
    let path = dir.path().join("sync.flv");
    std::fs::write(&path, bytes).unwrap();
    let audio = decode_audio(&path);
    let onset = audio.iter().position(|s| s.abs() > 0.1).unwrap();
    let onset_ms = onset as f64 / 48.0;
    assert!(
        (995.0..=1010.0).contains(&onset_ms),
        "tone heard at {onset_ms} ms"
    );
}

#[test]
fn input_that_starts_late_shows_placeholder_first() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let mut video: Vec<Option<Vec<u8>>> = (0..30).map(|_| None).collect();
    video.extend(pattern(red, 40));
    let res = run(
        cfg(320, 180),
        &[solo("late", video, None)],
        60,
        dir.path(),
        "late",
        |_, _| {},
    );
    let frames = decode_frames(&res.flv, 320, 180);
    assert_color(
        &frames[10],
        60,
        20,
        200,
        100,
        identity_color("late"),
        12.0,
        "before",
    );
    assert_color(&frames[40], 60, 20, 200, 100, red, 12.0, "after");
    // No stall events for an input that never had video yet.
    assert!(res.events().iter().all(|e| matches!(
        e,
        MixerEvent::RequestKeyframe(_) | MixerEvent::Presented { .. }
    )));
}

#[test]
fn custom_regions_z_order_and_letterbox() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let blue = Yuv::from_rgb(30, 30, 220);
    let inputs = [
        solo("a", pattern(red, 20), None),
        TestInput {
            identity: "b".into(),
            is_host: false,
            video: pattern(blue, 20),
            tone: None,
            opus: false,
        },
    ];
    // "b" (z 1) sits on top of "a" (z 0, full canvas); "b" is 16:9 letterboxed into a
    // square region, so background bars appear above and below it.
    let layout: mixer::Layout = serde_json::from_value(json!({"regions": [
        {"identity": "b", "x": 200, "y": 20, "w": 100, "h": 100, "z": 1, "fit": "letterbox"},
        {"identity": "a", "x": 0, "y": 0, "w": 320, "h": 180, "z": 0}
    ]}))
    .unwrap();
    let c = MixConfig {
        layout,
        ..cfg(320, 180)
    };
    let res = run(c, &inputs, 15, dir.path(), "custom", |_, _| {});
    let f = &decode_frames(&res.flv, 320, 180)[14];
    assert_color(f, 20, 20, 140, 140, red, 12.0, "a behind");
    // 100x100 region, 16:9 source: 100x56 picture centred (y 42..98), bars of background.
    assert_color(f, 210, 50, 80, 40, blue, 14.0, "b on top");
    assert_color(
        f,
        204,
        22,
        92,
        16,
        Yuv::from_rgb(0, 0, 0),
        12.0,
        "bar above",
    );
    assert_color(
        f,
        204,
        102,
        92,
        16,
        Yuv::from_rgb(0, 0, 0),
        12.0,
        "bar below",
    );
    // The layout SEI lists both regions, lowest z first.
    let d = h264::find_user_data(&res.videos()[0].data, &h264::LAYOUT_SEI_UUID);
    let j: serde_json::Value = serde_json::from_slice(&d[0]).unwrap();
    assert_eq!(j["regions"][0]["identity"], "a");
    assert_eq!(j["regions"][1]["identity"], "b");
    assert_eq!(j["regions"][1]["z"], 1);
}

#[test]
fn a_cue_waits_for_the_picture_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let red = Yuv::from_rgb(220, 30, 30);
    let mut deferred = None;
    let mut answers = Vec::new();
    // Asked for at 0 ms for input frame 20 (RTP 60000), which arrives at ~667 ms.
    let res = run(
        cfg(320, 180),
        &[solo("alice", pattern(red, 40), None)],
        40,
        dir.path(),
        "cue_when_shown",
        |m, t| {
            if t == 0 {
                deferred = Some(m.cue_when_shown(
                    "press",
                    json!({"k": 1}),
                    1,
                    "alice",
                    20 * 3000,
                    std::time::Duration::from_secs(2),
                ));
            }
            answers.extend(m.take_cue_answers());
        },
    );
    assert!(matches!(deferred, Some(Ok(None))), "{deferred:?}");
    // The program frame made right after alice's frame 20 went on screen carries the cue.
    let mut shown = false;
    let mut carrier = None;
    for o in &res.outputs {
        match o {
            MixerOutput::Event(MixerEvent::Presented { rtp_ts, .. }) if *rtp_ts >= 60_000 => {
                shown = true
            }
            MixerOutput::Video(v) => {
                let has = !h264::find_user_data(&v.data, &CUE_SEI_UUID).is_empty();
                if has {
                    assert!(shown, "cue stamped at {} ms before its picture", v.pts_ms);
                    carrier.get_or_insert(v.pts_ms);
                } else if shown {
                    assert!(carrier.is_some(), "the frame showing it has no cue");
                }
            }
            _ => {}
        }
    }
    let pts = carrier.expect("cue stamped");
    assert!((600..=733).contains(&pts), "stamped at {pts} ms");
    // The answer came once it was stamped, with that frame's time.
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1.as_ref().map(|a| a.pts_ms), Ok(pts));
}

/// Runs one co-host whose pictures reach the mixer `video_late` ms after the sound captured
/// with them, and returns (first white picture's program time, tone onset in the decoded
/// program audio), ms. The picture turns white and the tone starts at the same capture
/// instant (3 s); with `reports`, sender reports say so.
fn late_video_skew(video_late: u64, reports: bool) -> (f64, f64) {
    use mixer::mux::flv::{FlvMuxer, Metadata};
    use mixer::sync::SenderReport;
    use mixer::Mixer;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let c = MixConfig {
        lip_sync: true,
        ..cfg(160, 90)
    };
    let mut m = Mixer::new(c).unwrap();
    m.add_input("a", true);
    let (v0, a0) = (3_000_000_000u32, 77_777u32);
    if reports {
        let wall = 1.7e12;
        m.sender_report(
            "a",
            true,
            SenderReport {
                unix_ms: wall,
                rtp: v0,
            },
        );
        m.sender_report(
            "a",
            false,
            SenderReport {
                unix_ms: wall,
                rtp: a0,
            },
        );
    }
    let black = Yuv {
        y: 16,
        u: 128,
        v: 128,
    };
    let white = Yuv {
        y: 235,
        u: 128,
        v: 128,
    };
    let mut video = encode_pattern(160, 90, black, 90, 30);
    video.extend(encode_pattern(160, 90, white, 45, 30));
    let mut opus =
        opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
    let audio: Vec<Vec<u8>> = (0..225usize)
        .map(|n| {
            let pcm = if n >= 150 {
                sine(500.0, 0.5, 960, n * 960)
            } else {
                vec![0.0; 1920]
            };
            opus.encode_vec_float(&pcm, 4000).unwrap()
        })
        .collect();
    let asc = m.audio_specific_config();
    let mut mux = FlvMuxer::new();
    let mut bytes = mux.header(&Metadata {
        width: 160,
        height: 90,
        fps: 30.0,
        video_kbps: 1500,
        audio_kbps: 128,
    });
    let (mut vi, mut ai) = (0usize, 0usize);
    let mut video_pts = Vec::new();
    for t in (0..=4400u64).step_by(5) {
        // Audio arrives 10 ms after capture; video `video_late` ms after that.
        while ai < audio.len() && ai as u64 * 20 + 10 <= t {
            let at = Duration::from_millis(ai as u64 * 20 + 10);
            m.push_opus("a", &audio[ai], a0.wrapping_add(ai as u32 * 960), at);
            ai += 1;
        }
        while vi < video.len() && vi as u64 * 1000 / 30 + 10 + video_late <= t {
            let at = Duration::from_millis(vi as u64 * 1000 / 30 + 10 + video_late);
            m.push_video("a", &video[vi], v0.wrapping_add(vi as u32 * 3000), at);
            vi += 1;
        }
        for o in m.poll(Duration::from_millis(t)) {
            match o {
                MixerOutput::Video(v) => {
                    video_pts.push(v.pts_ms);
                    bytes.extend(mux.video(&v.data, v.pts_ms, v.keyframe))
                }
                MixerOutput::Audio(a) => bytes.extend(mux.audio(&a.data, a.pts_ms, &asc)),
                _ => {}
            }
        }
    }
    let path = dir.path().join("late.flv");
    std::fs::write(&path, bytes).unwrap();
    let frames = decode_frames(&path, 160, 90);
    let first_white = frames
        .iter()
        .position(|f| mean_yuv(f, 40, 30, 80, 30).0 > 128.0)
        .expect("the picture turns white");
    let audio = decode_audio(&path);
    let onset = audio.iter().position(|s| s.abs() > 0.1).expect("the tone");
    (video_pts[first_white] as f64, onset as f64 / 48.0)
}

#[test]
fn sender_reports_pair_pictures_with_the_sound_captured_with_them() {
    // A sender whose video path is 100 ms slower than its audio (a phone's encoder): paired
    // by arrival the picture comes 100 ms after its sound; through the sender reports they
    // are in step (the picture a little ahead, as lip sync leads it for the video path).
    let (white, tone) = late_video_skew(100, true);
    let skew = white - tone;
    eprintln!("with reports: picture {white} ms, sound {tone} ms");
    assert!(
        (-40.0..=20.0).contains(&skew),
        "picture − sound {skew} ms with reports"
    );
    let (white, tone) = late_video_skew(100, false);
    let skew = white - tone;
    eprintln!("by arrival: picture {white} ms, sound {tone} ms");
    assert!(skew > 60.0, "picture − sound {skew} ms by arrival");
}
