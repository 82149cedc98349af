//! Weak networks, side by side: one WHIP co-host whose uplink goes through the impairment
//! relay (`testkit/src/impair.rs`), watched at once through the SFU (WHEP of that co-host) and
//! as the mixed program (WHEP of the room), per condition (random loss 0/1/3/5/10 %, 2 % burst
//! loss, 40/80 ms jitter, 3 % loss with 40 ms jitter).
//!
//! The co-host (a webrtc-rs peer, openh264 320x240 at 30 fps, a keyframe a second) draws its
//! frame counter into each picture and records each frame's capture time; its audio is silent
//! but for a 100 ms tone that starts with the capture of every 30th frame. Both viewers are
//! browser-like receivers (sequence reorder buffer that waits for retransmissions, then RFC
//! 6184 reassembly; the viewers' NACKs go to the server) and decode with openh264. Per path:
//! - fresh pictures/s: how often the counter on screen changed, per second;
//! - longest freeze: the longest time between two changes (arrival clock);
//! - latency p50/p95: arrival of the first picture showing frame n − n's capture time (one
//!   clock, one process); "added" is p50 minus the clean run's p50;
//! - program A/V skew p50/p95: |arrival of the program picture showing a beep's frame − arrival
//!   of the beep's onset in the decoded program audio| (the onset placed inside its packet).
//!
//! Run: `cargo bench --bench weak_network`. `WEAK_BENCH_SECS` (measured seconds per condition,
//! default 15, after the program starts), `WEAK_BENCH_ONLY` (run the conditions whose name
//! contains it).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use testkit as common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohost::depack::{Assembled, H264Assembler};
use cohost::reorder::{Released, ReorderBuffer, ReorderConfig};
use common::impair::{LinkConfig, Relay};
use common::*;
use openh264::formats::YUVSource;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

#[derive(Default)]
struct Got {
    /// (arrival Unix ms, access unit).
    video: Vec<(f64, Vec<u8>)>,
    /// (arrival Unix ms, Opus payload).
    audio: Vec<(f64, Vec<u8>)>,
}

/// A browser-like receiver: reorders by sequence number, waits for repairs, reassembles.
fn receive(track: Arc<dyn TrackRemote>, kind: RtpCodecKind, got: Arc<Mutex<Got>>) {
    tokio::spawn(async move {
        let mut rb = ReorderBuffer::new(ReorderConfig::default());
        let mut asm = H264Assembler::new();
        loop {
            let deadline = rb.deadline();
            let released = tokio::select! {
                ev = track.poll() => match ev {
                    Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                        if kind == RtpCodecKind::Audio {
                            got.lock().unwrap().audio.push((unix_ms(), p.payload.to_vec()));
                            continue;
                        }
                        rb.push(p, Instant::now())
                    }
                    Some(_) => continue,
                    None => break,
                },
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => rb.poll(Instant::now()),
            };
            for r in released {
                if let Released::Packet(p) = r {
                    if let Assembled::AccessUnit { data, .. } = asm.push(&p) {
                        got.lock().unwrap().video.push((unix_ms(), data));
                    }
                }
            }
        }
    });
}

async fn watch(peer: &mut ClientPeer) -> Arc<Mutex<Got>> {
    let got = Arc::new(Mutex::new(Got::default()));
    for _ in 0..2 {
        let t = tokio::time::timeout(Duration::from_secs(15), peer.tracks.recv())
            .await
            .expect("no remote track")
            .unwrap();
        let kind = t.kind().await;
        receive(t, kind, got.clone());
    }
    got
}

/// (arrival, counter) of every decoded picture.
fn counters(video: &[(f64, Vec<u8>)], program: bool) -> Vec<(f64, u32)> {
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let mut out = Vec::new();
    for (at, au) in video {
        if let Ok(Some(pic)) = dec.decode(au) {
            let (y, stride) = (pic.y(), pic.strides().0);
            let n = if program {
                read_counter(y, stride, 360, 40, 80)
            } else {
                read_counter(y, stride, 120, 10, 20)
            };
            out.push((*at, n));
        }
    }
    out
}

struct PathStats {
    fresh_per_s: f64,
    longest_freeze_ms: f64,
    latency_p50: f64,
    latency_p95: f64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Stats over pictures that arrived in [from, to].
fn path_stats(c: &[(f64, u32)], capture: &[f64], from: f64, to: f64) -> PathStats {
    let w: Vec<&(f64, u32)> = c.iter().filter(|(t, _)| *t >= from && *t <= to).collect();
    let mut changes = 0;
    let mut last_change = from;
    let mut longest: f64 = 0.0;
    let mut first_seen: HashMap<u32, f64> = HashMap::new();
    for pair in w.windows(2) {
        if pair[1].1 != pair[0].1 {
            changes += 1;
            longest = longest.max(pair[1].0 - last_change);
            last_change = pair[1].0;
        }
    }
    longest = longest.max(to - last_change);
    for (t, n) in &w {
        first_seen.entry(*n).or_insert(*t);
    }
    let mut lat: Vec<f64> = first_seen
        .iter()
        .filter_map(|(n, t)| capture.get(*n as usize).map(|c| t - c))
        .filter(|l| (0.0..5000.0).contains(l))
        .collect();
    PathStats {
        fresh_per_s: changes as f64 / ((to - from) / 1000.0),
        longest_freeze_ms: longest,
        latency_p50: pct(&mut lat, 0.5),
        latency_p95: pct(&mut lat, 0.95),
    }
}

/// Beep onsets (Unix ms) in the decoded program audio.
fn beep_onsets(audio: &[(f64, Vec<u8>)]) -> Vec<f64> {
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut buf = vec![0i16; 5760 * 2];
    let mut out = Vec::new();
    let mut quiet_ms = 1000.0;
    for (at, p) in audio {
        let Ok(n) = dec.decode(p, &mut buf, false) else {
            continue;
        };
        let dur = n as f64 / 48.0;
        // 1 ms windows of the left channel.
        for (k, w) in buf[..n * 2].chunks(96).enumerate() {
            let rms = rms_left(w);
            if rms > 1000.0 {
                if quiet_ms > 300.0 {
                    // The packet arrived when its last sample was due: its first sample is
                    // `dur` earlier.
                    out.push(at - dur + k as f64);
                }
                quiet_ms = 0.0;
            } else {
                quiet_ms += 1.0;
            }
        }
    }
    out
}

struct Condition {
    name: &'static str,
    up: LinkConfig,
}

async fn measure(
    c: &Condition,
    secs: u64,
    seed: u64,
) -> (PathStats, PathStats, (f64, f64), u64, f64, u64) {
    let s = start_server().await;
    let room = "weak-bench";
    let relay = Relay::start(c.up.clone(), LinkConfig::clean(), seed).await;
    let token = s.token(room, "host", "host").await;
    let peer = client_peer().await;
    let mut sender = add_sender(&peer, "host").await;
    sender.beep_every = Some(30);
    let offer = relay.rewrite_offer(&peer.offer().await);
    let (st, _loc, body) = post_sdp(&s.url(&format!("/whip/{room}")), &token, &offer).await;
    assert_eq!(st, 201, "{body}");
    peer.set_answer(&relay.rewrite_answer(&body)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 600.0, stop.clone());
    let viewer = s.token(room, "fan", "viewer").await;
    let mut prog = whep_program(&s, room, &viewer).await;
    let guest = s.token(room, "guest", "guest").await;
    let (mut sfu, _) = whep_subscribe(&s, room, "host", &guest).await;
    let pg = watch(&mut prog).await;
    let sg = watch(&mut sfu).await;
    // Warm-up: both paths play and the estimators have settled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = unix_ms();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let to = unix_ms();
    let info = s.get_api(&format!("/api/rooms/{room}")).await;
    let delay = info
        .pointer("/media/program/inputs/0/video_delay_ms")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN);
    let plis = s.metric("cohost_keyframe_requests_total").await;
    if let Some(i) = info.pointer("/media/program/inputs/0") {
        eprintln!(
            "  input: video delay {} (own {}) ms, audio delay {} ms, audio sync blocks {}",
            i["video_delay_ms"],
            i["video_own_delay_ms"],
            i["audio_delay_ms"],
            i["audio_sync_blocks"]
        );
    }
    stop.store(true, Ordering::Relaxed);
    let capture = sender.capture_ms.lock().unwrap().clone();
    let (pv, pa) = {
        let g = pg.lock().unwrap();
        (g.video.clone(), g.audio.clone())
    };
    let sv = sg.lock().unwrap().video.clone();
    let pc = counters(&pv, true);
    let sc = counters(&sv, false);
    let program = path_stats(&pc, &capture, from, to);
    let sfu_stats = path_stats(&sc, &capture, from, to);
    // A/V skew: each beep onset against the program picture that first shows its frame.
    let first_shown: HashMap<u32, f64> = pc.iter().rev().map(|(t, n)| (*n, *t)).collect();
    let mut skew: Vec<f64> = beep_onsets(&pa)
        .into_iter()
        .filter(|t| *t >= from && *t <= to)
        .filter_map(|t| {
            // The beep's frame: the multiple of 30 captured nearest (onset − latency) — find
            // the beep frame whose program picture arrived closest to the onset.
            first_shown
                .iter()
                .filter(|(n, _)| **n % 30 == 0)
                .map(|(_, v)| t - v)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()))
        })
        .filter(|d| d.abs() < 500.0)
        .collect();
    // Signed (onset − picture: > 0 when the picture comes first), for tuning.
    eprintln!(
        "  A/V skew signed p5/p50/p95: {:.0}/{:.0}/{:.0} ms over {} beeps",
        pct(&mut skew, 0.05),
        pct(&mut skew, 0.5),
        pct(&mut skew, 0.95),
        skew.len()
    );
    let mut skew: Vec<f64> = skew.into_iter().map(f64::abs).collect();
    let av = (pct(&mut skew, 0.5), pct(&mut skew, 0.95));
    let dropped = relay.stats().0.dropped_rtp;
    (program, sfu_stats, av, dropped, delay, plis)
}

fn main() {
    let secs: u64 = std::env::var("WEAK_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let only = std::env::var("WEAK_BENCH_ONLY").unwrap_or_default();
    let j = |ms: u64| LinkConfig::clean().with_jitter(Duration::from_millis(ms));
    let conditions = [
        Condition {
            name: "clean",
            up: LinkConfig::clean(),
        },
        Condition {
            name: "loss 1%",
            up: LinkConfig::random_loss(0.01),
        },
        Condition {
            name: "loss 3%",
            up: LinkConfig::random_loss(0.03),
        },
        Condition {
            name: "loss 5%",
            up: LinkConfig::random_loss(0.05),
        },
        Condition {
            name: "loss 10%",
            up: LinkConfig::random_loss(0.10),
        },
        Condition {
            name: "burst 2% (mean 3)",
            up: LinkConfig::burst_loss(0.02, 3.0),
        },
        Condition {
            name: "jitter 40ms",
            up: j(40),
        },
        Condition {
            name: "jitter 80ms",
            up: j(80),
        },
        Condition {
            name: "loss 3% + jitter 40ms",
            up: LinkConfig::random_loss(0.03).with_jitter(Duration::from_millis(40)),
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| uplink | RTP dropped | SFU fresh/s | SFU longest freeze ms | SFU latency p50/p95 ms | program fresh/s | program longest freeze ms | program latency p50/p95 ms | program added p50 ms | program video delay ms | program A/V skew p50/p95 ms | PLIs to publisher |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut clean_p50 = None;
    for (i, c) in conditions.iter().enumerate() {
        if !only.is_empty() && !c.name.contains(only.as_str()) {
            continue;
        }
        let (p, s, av, dropped, delay, plis) = rt.block_on(measure(c, secs, 1000 + i as u64));
        if c.name == "clean" {
            clean_p50 = Some(p.latency_p50);
        }
        let added = clean_p50.map_or("-".to_owned(), |b| format!("{:.0}", p.latency_p50 - b));
        println!(
            "| {} | {dropped} | {:.1} | {:.0} | {:.0}/{:.0} | {:.1} | {:.0} | {:.0}/{:.0} | {added} | {delay:.0} | {:.0}/{:.0} | {plis} |",
            c.name,
            s.fresh_per_s,
            s.longest_freeze_ms,
            s.latency_p50,
            s.latency_p95,
            p.fresh_per_s,
            p.longest_freeze_ms,
            p.latency_p50,
            p.latency_p95,
            av.0,
            av.1
        );
    }
}
