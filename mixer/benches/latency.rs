//! Mixer-added latency: from an input access unit handed to the mixer (`push_video` at its
//! arrival time) to the program access unit that first shows it.
//!
//! Four 640x360 30 fps inputs (first arrivals at 105, 113, 121, 129 ms) on a 1280x720 30 fps 2x2 grid. Each
//! input picture carries its frame counter as 12 blocks (and the inverted bits below, as a
//! check) over a moving texture with a band of fresh noise, encoded with openh264 at 1 Mbit/s. The pure core is driven on a
//! simulated clock the way the driver drives it: pushes at the arrival times, `poll` at
//! `poll_timeout()`. Every program access unit is decoded (openh264) and each tile's counter
//! read back. Jitter: each arrival gets a seeded uniform 0..=J ms delay (kept in order per
//! input, as a depacketizer delivers them).
//!
//! Figures, per scenario (J = 0 and J = 30 ms):
//! - `clock`: on the simulated clock, `now` of the poll that returned the first program AU
//!   showing frame k, minus k's arrival (processing takes no time);
//! - `serial`: the same with the measured processing time of every push (decode) and poll
//!   (compose + encode + audio) laid on one virtual thread, as the driver runs them, so work
//!   queues behind work: the program AU exists when its poll returns;
//! - the wall time of `push_video` and of each poll that produced a picture.
//!
//! Frames replaced by a newer one before any program picture took them ("superseded") have
//! no latency of their own; `reached` also counts them, at the first program AU showing that
//! frame or a newer one.
//!
//! Run: `cargo bench -p mixer --bench latency` (env `LATENCY_SECONDS`, default 20;
//! `LATENCY_SEED`, default 1).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mixer::compose::{I420Frame, Yuv};
use mixer::layout::{Layout, Template};
use mixer::{MixConfig, Mixer, MixerOutput};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

const W: u32 = 640;
const H: u32 = 360;
const N_IN: usize = 4;
const BITS: u32 = 12;
const BX: u32 = 32;
const DX: u32 = 48;
const BY: u32 = 32;
const BY_INV: u32 = 80;
const BS: u32 = 32;

/// splitmix64, seeded.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn input_stream(seed: u32, frames: u32) -> Vec<Vec<u8>> {
    let cfg = EncoderConfig::new()
        .bitrate(BitRate::from_bps(1_000_000))
        .max_frame_rate(FrameRate::from_hz(30.0))
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(60));
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).unwrap();
    let white = Yuv::from_rgb(255, 255, 255);
    let black = Yuv::from_rgb(0, 0, 0);
    (0..frames)
        .map(|i| {
            // Moving diagonal texture, a band of fresh noise every frame and moving bars:
            // content the program encoder has to work on (not flat colour).
            let (w, h) = (W as usize, H as usize);
            let mut data = vec![0u8; w * h * 3 / 2];
            let mut noise = Rng(u64::from(seed) << 32 | u64::from(i));
            for y in 0..h {
                for x in 0..w {
                    data[y * w + x] = if y >= 2 * h / 3 {
                        64 + (noise.next_f64() * 128.0) as u8
                    } else {
                        ((x + 2 * y + 3 * i as usize + seed as usize * 40) % 200 + 28) as u8
                    };
                }
            }
            for (j, c) in data[w * h..].iter_mut().enumerate() {
                *c = (96 + (j / 7 + i as usize + seed as usize * 20) % 64) as u8;
            }
            let mut f = I420Frame::from_packed(W, H, data).unwrap();
            for b in 0..8u32 {
                let x = ((i * 6 + b * 80 + seed * 13) % 600) & !1;
                f.fill_rect(
                    x,
                    136 + b * 12,
                    40,
                    10,
                    Yuv::from_rgb((b * 30) as u8, 200, (i * 4) as u8),
                );
            }
            for b in 0..BITS {
                let one = (i >> (BITS - 1 - b)) & 1 == 1;
                let x = BX + b * DX;
                f.fill_rect(x, BY, BS, BS, if one { white } else { black });
                f.fill_rect(x, BY_INV, BS, BS, if one { black } else { white });
            }
            enc.encode(&f).unwrap().to_vec()
        })
        .collect()
}

/// Reads the counter of the tile at (`tx`, `ty`) (1:1 scale); `None` if the check row
/// disagrees.
fn read_mark(y: &[u8], stride: usize, tx: u32, ty: u32) -> Option<u32> {
    let mean = |x0: u32, y0: u32| {
        let mut s = 0u32;
        for yy in y0 + 8..y0 + 24 {
            for xx in x0 + 8..x0 + 24 {
                s += u32::from(y[yy as usize * stride + xx as usize]);
            }
        }
        s / 256
    };
    let mut n = 0;
    for b in 0..BITS {
        let x = tx + BX + b * DX;
        let v = mean(x, ty + BY);
        let inv = mean(x, ty + BY_INV);
        let one = v > 128;
        if one == (inv > 128) || v.abs_diff(inv) < 60 {
            return None;
        }
        n = (n << 1) | u32::from(one);
    }
    Some(n)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn summary(name: &str, v: &[f64]) {
    let mut v = v.to_vec();
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n.max(1) as f64;
    println!(
        "  {name:<34} n={n:<5} mean={mean:7.2} p50={:7.2} p95={:7.2} p99={:7.2} max={:7.2} ms",
        pct(&mut v, 50.0),
        pct(&mut v, 95.0),
        pct(&mut v, 99.0),
        pct(&mut v, 100.0),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(streams: &[Vec<Vec<u8>>], jitter_ms: f64, seed: u64) {
    let frames = streams[0].len();
    let cfg = MixConfig {
        layout: Layout::template(Template::Grid),
        ..MixConfig::default()
    };
    let fps = f64::from(cfg.fps);
    let mut m = Mixer::new(cfg).unwrap();
    let ids: Vec<String> = (0..N_IN).map(|i| format!("in{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        m.add_input(id, i == 0);
    }
    // Arrivals: capture (phase + k/30 s) + jitter, in order per input; 100 ms lead-in.
    let mut rng = Rng(seed);
    let mut events: Vec<(Duration, usize, usize)> = Vec::new();
    let mut arrival = vec![vec![Duration::ZERO; frames]; N_IN];
    for (i, arr) in arrival.iter_mut().enumerate() {
        let mut prev = Duration::ZERO;
        for (k, a) in arr.iter_mut().enumerate() {
            let cap = 105.0 + i as f64 * 8.0 + k as f64 * 1000.0 / fps;
            let t = Duration::from_secs_f64((cap + rng.next_f64() * jitter_ms) / 1000.0).max(prev);
            prev = t;
            *a = t;
            events.push((t, i, k));
        }
    }
    events.sort();
    let end = *events.last().map(|(t, _, _)| t).unwrap() + Duration::from_millis(100);

    let mut dec = openh264::decoder::Decoder::new().unwrap();
    // Per input: first (clock, serial) time a program AU showed exactly k / k or newer.
    let mut shown: Vec<Vec<Option<(Duration, Duration)>>> = vec![vec![None; frames]; N_IN];
    let mut reached: Vec<Vec<Option<(Duration, Duration)>>> = vec![vec![None; frames]; N_IN];
    let mut push_ms = Vec::new();
    let mut poll_ms = Vec::new();
    let mut bad_reads = 0usize;
    let mut last_mark: Vec<Option<u32>> = vec![None; N_IN];
    let mut repeats = 0usize;
    let mut cursor = Duration::ZERO; // serial virtual thread: busy until
    let mut ev = events.iter().peekable();
    let mut out_frames = 0usize;
    loop {
        let due = m.poll_timeout();
        let next_push = ev.peek().map(|(t, _, _)| *t);
        if next_push.is_some_and(|t| t <= due) {
            let (t, i, k) = *ev.next().unwrap();
            let start = t.max(cursor);
            let w = Instant::now();
            m.push_video(&ids[i], &streams[i][k], (k as u32) * 3000, t);
            let el = w.elapsed();
            push_ms.push(ms(el));
            cursor = start + el;
            continue;
        }
        if due > end {
            break;
        }
        let start = due.max(cursor);
        let w = Instant::now();
        let outs = m.poll(due);
        let el = w.elapsed();
        cursor = start + el;
        let mut had_video = false;
        for o in outs {
            let MixerOutput::Video(v) = o else { continue };
            had_video = true;
            out_frames += 1;
            let Ok(Some(pic)) = dec.decode(&v.data) else {
                continue;
            };
            let stride = pic.strides().0;
            for i in 0..N_IN {
                let (tx, ty) = ((i as u32 % 2) * W, (i as u32 / 2) * H);
                match read_mark(pic.y(), stride, tx, ty) {
                    Some(c) if (c as usize) < frames => {
                        if last_mark[i] == Some(c) && (c as usize) + 3 < frames {
                            repeats += 1;
                        }
                        last_mark[i] = Some(c);
                        let c = c as usize;
                        if shown[i][c].is_none() {
                            shown[i][c] = Some((due, cursor));
                        }
                        for r in reached[i][..=c].iter_mut().rev() {
                            if r.is_some() {
                                break;
                            }
                            *r = Some((due, cursor));
                        }
                    }
                    Some(_) => {}
                    None => bad_reads += 1,
                }
            }
        }
        if had_video {
            poll_ms.push(ms(el));
        }
    }

    let mut clock = Vec::new();
    let mut serial = Vec::new();
    let mut rclock = Vec::new();
    let mut rserial = Vec::new();
    let mut superseded = 0usize;
    let mut never = 0usize;
    for i in 0..N_IN {
        // Skip the first second (decoder start-up, first IDR) and the last 100 ms.
        for k in 30..frames.saturating_sub(3) {
            let a = arrival[i][k];
            match shown[i][k] {
                Some((c, s)) => {
                    clock.push(ms(c - a));
                    serial.push(ms(s - a));
                }
                None => superseded += 1,
            }
            match reached[i][k] {
                Some((c, s)) => {
                    rclock.push(ms(c - a));
                    rserial.push(ms(s - a));
                }
                None => never += 1,
            }
        }
    }
    println!(
        "jitter 0..={jitter_ms} ms (uniform, seed {seed}): {} input AUs x {N_IN}, {out_frames} program AUs, \
         {superseded} superseded (never shown), {repeats} tile repeats (same input picture \
         as the previous program picture), {never} never reached, {bad_reads} unreadable tiles",
        frames
    );
    summary("shown: clock (poll now - arrival)", &clock);
    summary("shown: serial (+ processing)", &serial);
    summary("reached: clock", &rclock);
    summary("reached: serial", &rserial);
    summary("wall: push_video (decode)", &push_ms);
    summary("wall: poll with a picture", &poll_ms);
}

/// Where a poll's time goes on real files (`LATENCY_FILES=a.h264,b.h264,...`): the core
/// driven as `cohost mix` drives it (30 fps inputs, 5 ms clock steps), with the wall time of
/// `push_video` (input decode) and of `poll` (compose + program encode + audio) summed.
fn time_files(paths: &str) {
    let streams: Vec<Vec<Vec<u8>>> = paths
        .split(',')
        .map(|p| mixer::h264::access_units(&std::fs::read(p).expect("read input")))
        .collect();
    let cfg = MixConfig {
        layout: Layout::template(Template::Grid),
        ..MixConfig::default()
    };
    let mut m = Mixer::new(cfg).unwrap();
    for i in 0..streams.len() {
        m.add_input(&format!("in{i}"), i == 0);
    }
    let frames = streams.iter().map(Vec::len).max().unwrap_or(0);
    let (mut push, mut poll, mut video) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut next = 0usize;
    let mut t = Duration::ZERO;
    while next < frames {
        while next < frames && Duration::from_nanos(next as u64 * 1_000_000_000 / 30) <= t {
            for (i, s) in streams.iter().enumerate() {
                if let Some(au) = s.get(next) {
                    let w = Instant::now();
                    m.push_video(&format!("in{i}"), au, 0, t);
                    push += w.elapsed();
                }
            }
            next += 1;
        }
        let w = Instant::now();
        let outs = m.poll(t);
        poll += w.elapsed();
        video += outs
            .iter()
            .filter(|o| matches!(o, MixerOutput::Video(_)))
            .count() as u64;
        t += Duration::from_millis(5);
    }
    let per = |d: Duration| ms(d) / video.max(1) as f64;
    println!(
        "files: {} inputs x {frames} AUs -> {video} program pictures: push_video (decode) {:.2} s = {:.2} ms/picture, \
         poll (compose + encode + audio) {:.2} s = {:.2} ms/picture",
        streams.len(),
        push.as_secs_f64(),
        per(push),
        poll.as_secs_f64(),
        per(poll),
    );
}

fn main() {
    if let Ok(paths) = std::env::var("LATENCY_FILES") {
        time_files(&paths);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run small then.
    let benching = std::env::args().any(|a| a == "--bench");
    let seconds: u32 = std::env::var("LATENCY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 20 } else { 2 });
    let seed: u64 = std::env::var("LATENCY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let frames = seconds * 30;
    let t = Instant::now();
    let streams: Vec<Vec<Vec<u8>>> = (0..N_IN as u32).map(|s| input_stream(s, frames)).collect();
    println!(
        "inputs: {N_IN} x {frames} AUs 640x360 encoded in {:.1} s; program 1280x720 grid 30 fps 2500 kbps",
        t.elapsed().as_secs_f64()
    );
    run(&streams, 0.0, seed);
    run(&streams, 30.0, seed);
}
