//! Interop with a WebRTC stack nobody here wrote: aiortc (Python, pinned by
//! `tests/aiortc/requirements.txt`) publishing through WHIP and playing through WHEP, in
//! trickle mode (offer without candidates, candidates in `PATCH`; `tests/aiortc/whip.py`).
//!
//! What a user would check: the aiortc co-host's own pictures (its frame counter, read from
//! pictures decoded here by openh264) reach a webrtc-rs subscriber through the SFU; an aiortc
//! player decodes that co-host through the SFU and decodes the room's mixed program.
//!
//! Needs `python3` with `venv`; the virtual environment is made once in
//! `target/aiortc-venv` (by `scripts/test.sh`, or here when missing) from the pinned list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, made from the pinned requirements when missing (once: the players and
/// the publisher start at the same time).
fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(make_venv).clone()
}

fn make_venv() -> PathBuf {
    let venv = root().join("target/aiortc-venv");
    let py = venv.join("bin/python");
    let marker = venv.join(".installed");
    if marker.exists() {
        return py;
    }
    let run = |cmd: &Path, args: &[&str]| {
        let st = std::process::Command::new(cmd)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", cmd.display()));
        assert!(st.success(), "{} {args:?} failed", cmd.display());
    };
    run(
        Path::new("python3"),
        &["-m", "venv", venv.to_str().unwrap()],
    );
    let req = root().join("tests/aiortc/requirements.txt");
    run(
        &venv.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--no-deps",
            "-r",
            req.to_str().unwrap(),
        ],
    );
    std::fs::write(&marker, b"").unwrap();
    py
}

/// Runs `whip.py ARGS` and returns its JSON result line.
async fn aiortc(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(python())
        .arg(root().join("tests/aiortc/whip.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiortc {:?} failed ({}): {stdout}",
        &args[..2],
        out.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("aiortc printed {stdout:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_and_plays_in_trickle_mode() {
    // The virtual environment first (a minute on a fresh machine), then the clock starts.
    tokio::task::spawn_blocking(python).await.unwrap();
    let s = start_server().await;
    let pub_token = s.token("ai", "aio", "host").await;
    let whip = s.url("/whip/ai");
    let publisher =
        tokio::spawn(async move { aiortc(&["publish", &whip, &pub_token, "14"]).await });

    // A webrtc-rs subscriber of the aiortc co-host through the SFU (per-co-host WHEP takes a
    // host or guest token; viewers watch the program).
    let viewer = s.token("ai", "g1", "guest").await;
    let (mut peer, _res) = whep_subscribe(&s, "ai", "aio", &viewer).await;
    let (video, audio) = collect_both(&mut peer).await;

    // aiortc players: the co-host through the SFU, and the mixed program.
    let t1 = s.token("ai", "g2", "guest").await;
    let t2 = s.token("ai", "p2", "viewer").await;
    let (sfu_url, prog_url) = (s.url("/whep/ai/aio"), s.url("/whep/ai"));
    let sfu_player = tokio::spawn(async move { aiortc(&["play", &sfu_url, &t1, "60"]).await });
    let prog_player = tokio::spawn(async move { aiortc(&["play", &prog_url, &t2, "60"]).await });
    let sfu = sfu_player.await.unwrap();
    let prog = prog_player.await.unwrap();
    println!("aiortc SFU player: {sfu}\naiortc program player: {prog}");
    assert!(sfu["video_frames"].as_u64().unwrap() >= 60);
    assert_eq!(sfu["size"], serde_json::json!([320, 240]));
    assert!(sfu["audio_frames"].as_u64().unwrap() > 0);
    assert_eq!(sfu["delete"], 200);
    assert!(prog["video_frames"].as_u64().unwrap() >= 60);
    let psize = prog["size"].as_array().unwrap();
    assert!(
        psize[0].as_u64().unwrap() >= 640,
        "the program is the mixed picture: {psize:?}"
    );

    // The pictures the webrtc-rs subscriber got are aiortc's: its counter advances.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frames = video.lock().unwrap().frames.clone();
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let mut counters = Vec::new();
    for au in &frames {
        use openh264::formats::YUVSource;
        if let Ok(Some(pic)) = dec.decode(au) {
            if pic.dimensions() == (320, 240) {
                counters.push(read_counter(pic.y(), pic.strides().0, 120, 10, 20));
            }
        }
    }
    assert!(counters.len() >= 60, "decoded {} pictures", counters.len());
    let advancing = counters.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        advancing * 10 >= (counters.len() - 1) * 9,
        "the counter must advance: {:?}",
        &counters[..counters.len().min(40)]
    );
    let (n_audio, rms) = decode_opus(&audio.lock().unwrap().frames);
    assert!(
        n_audio > 0 && rms > 100.0,
        "aiortc's tone: {n_audio} frames, rms {rms}"
    );

    let published = publisher.await.unwrap();
    println!("aiortc publisher: {published}");
    assert_eq!(published["delete"], 200);
}
