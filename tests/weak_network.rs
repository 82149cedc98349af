//! Co-hosts on weak networks: a WHIP co-host whose uplink goes through the impairment relay
//! (`testkit/src/impair.rs`: seeded random loss, jitter) must stay fluid in the mixed program,
//! not freeze until the next keyframe. A WHEP viewer of the program decodes every program
//! picture and reads the co-host's frame counter back from it; a second viewer watches the
//! co-host through the SFU for comparison. Asserted on the media: the share of program
//! pictures that show a new co-host picture, the longest stand-still, which co-host pictures
//! reached the program, and gaps in the program's decoded audio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::impair::{whip_publish_via, LinkConfig, Relay};
use common::*;
use openh264::formats::YUVSource;

// The co-host's counter: in the program, a 1280x720 canvas with one 320x240 co-host cropped
// to fill (see `tests/cue_timing.rs`), band centre row 360, blocks every 80 px from 40; in its
// own 320x240 picture, row 120, blocks every 20 px from 10.

/// (share of pictures showing a newer co-host picture than the one before, longest run of
/// pictures showing the same one).
fn fluidity(counters: &[u32]) -> (f64, usize) {
    let mut fresh = 0;
    let mut run = 1;
    let mut longest = 1;
    for w in counters.windows(2) {
        if w[1] != w[0] {
            fresh += 1;
            run = 1;
        } else {
            run += 1;
            longest = longest.max(run);
        }
    }
    (
        fresh as f64 / counters.len().saturating_sub(1).max(1) as f64,
        longest,
    )
}

/// Longest stretch (ms) of near-silence in the decoded program audio (a 440 Hz tone when the
/// co-host's audio is there).
fn longest_audio_gap_ms(packets: &[Vec<u8>]) -> usize {
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 5760 * 2];
    for p in packets {
        if let Ok(n) = dec.decode(p, &mut buf, false) {
            pcm.extend_from_slice(&buf[..n * 2]);
        }
    }
    // 5 ms windows (240 stereo frames), RMS of the left channel.
    let mut longest = 0;
    let mut run = 0;
    for w in pcm.chunks(480) {
        let rms = rms_left(w);
        if rms < 300.0 {
            run += 5;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

struct Run {
    program: Vec<u32>,
    sfu: Vec<u32>,
    audio: Vec<Vec<u8>>,
    dropped_rtp: u64,
}

/// Publishes a co-host through a relay with `up` on its uplink, watches the program and the
/// co-host's SFU forward for `secs` seconds after both play, and returns what they showed.
async fn run(up: LinkConfig, seed: u64, secs: u64) -> Run {
    let s = start_server().await;
    let room = "weak";
    let relay = Relay::start(up, LinkConfig::clean(), seed).await;
    let (_host, _loc, stop, _sender) =
        whip_publish_via(&s, room, "host", "host", 320, 240, &relay).await;
    let viewer = s.token(room, "fan", "viewer").await;
    let mut prog = whep_program(&s, room, &viewer).await;
    let guest = s.token(room, "guest", "guest").await;
    let (mut sfu, _) = whep_subscribe(&s, room, "host", &guest).await;
    let (pv, pa) = collect_both(&mut prog).await;
    let (sv, _sa) = collect_both(&mut sfu).await;
    eventually("program pictures", 15, || decoded_at(&pv, (1280, 720)) > 30).await;
    // Start counting from here: the program and the SFU forward both run.
    let (p0, a0) = (
        pv.lock().unwrap().frames.len(),
        pa.lock().unwrap().frames.len(),
    );
    let s0 = sv.lock().unwrap().frames.len();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    // What arrived up to now (the program goes on showing a still picture and silence once
    // the co-host stops).
    let p_frames = pv.lock().unwrap().frames.clone();
    let s_frames = sv.lock().unwrap().frames.clone();
    let audio = pa.lock().unwrap().frames[a0..].to_vec();
    stop.store(true, Ordering::Relaxed);
    let dropped_rtp = relay.stats().0.dropped_rtp;
    // Decode the whole stream (from its first keyframe), keep the measured window.
    let decode = |frames: &[Vec<u8>], start: usize, read: &dyn Fn(&[u8], usize) -> u32| {
        let mut dec = openh264::decoder::Decoder::new().unwrap();
        let mut out = Vec::new();
        for (i, au) in frames.iter().enumerate() {
            if let Ok(Some(pic)) = dec.decode(au) {
                if i >= start {
                    out.push(read(pic.y(), pic.strides().0));
                }
            }
        }
        out
    };
    let program = decode(&p_frames, p0, &|y, stride| {
        read_counter(y, stride, 360, 40, 80)
    });
    let sfu = decode(&s_frames, s0, &|y, stride| {
        read_counter(y, stride, 120, 10, 20)
    });
    Run {
        program,
        sfu,
        audio,
        dropped_rtp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_percent_uplink_loss_keeps_the_cohost_fluid_in_the_program() {
    let r = run(LinkConfig::random_loss(0.03), 7, 10).await;
    assert!(
        r.dropped_rtp > 20,
        "the relay dropped {} RTP packets",
        r.dropped_rtp
    );
    let (fresh, longest) = fluidity(&r.program);
    let (sfu_fresh, sfu_longest) = fluidity(&r.sfu);
    let gap = longest_audio_gap_ms(&r.audio);
    eprintln!(
        "3 % loss ({} RTP dropped): program {} pictures, {:.1} % fresh, longest stand-still {} pictures; SFU {} pictures, {:.1} % fresh, longest {}; program audio longest gap {gap} ms",
        r.dropped_rtp,
        r.program.len(),
        fresh * 100.0,
        longest,
        r.sfu.len(),
        sfu_fresh * 100.0,
        sfu_longest
    );
    assert!(
        r.program.len() > 200,
        "{} program pictures",
        r.program.len()
    );
    assert!(
        fresh >= 0.90,
        "the co-host advanced on only {:.1} % of program pictures",
        fresh * 100.0
    );
    // 500 ms at 30 fps.
    assert!(
        longest <= 15,
        "the co-host stood still for {longest} program pictures"
    );
    assert!(gap <= 60, "program audio gap of {gap} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_ms_jitter_costs_delay_not_pictures() {
    let r = run(LinkConfig::jitter(40), 11, 10).await;
    let c = &r.program;
    assert!(c.len() > 200, "{} program pictures", c.len());
    // Every co-host picture between the first and the last one seen is on screen at least once.
    let (lo, hi) = (c[0], c[c.len() - 1]);
    let seen: std::collections::HashSet<u32> = c.iter().copied().collect();
    let missing: Vec<u32> = (lo..=hi).filter(|n| !seen.contains(n)).collect();
    let (fresh, longest) = fluidity(c);
    let gap = longest_audio_gap_ms(&r.audio);
    eprintln!(
        "40 ms jitter: co-host pictures {lo}..={hi}, {} not shown {missing:?}; {:.1} % fresh, longest stand-still {longest}; audio gap {gap} ms",
        missing.len(),
        fresh * 100.0
    );
    let expected = (hi.wrapping_sub(lo) + 1) as usize;
    assert!(
        (250..=400).contains(&expected),
        "the program showed co-host pictures {lo}..={hi} in 10 s"
    );
    assert!(fresh >= 0.9, "only {:.1} % fresh", fresh * 100.0);
    assert!(
        missing.len() * 100 <= expected,
        "{} of {expected} co-host pictures never reached the program: {missing:?}",
        missing.len()
    );
    assert!(gap <= 60, "program audio gap of {gap} ms");
}
