//! A publisher that sends H.264 FU-A fragments that never end (issue 11, item 3): no end bit,
//! no marker, ~1.2 KB a packet. The program's input assembler holds at most one access unit's
//! worth of it (`cohost_program_input_assembling_bytes`, sampled through the flood), the
//! process stays bounded, and a healthy room beside it keeps decoding its program. The
//! 10-minute RSS figure is `cargo bench --bench hostile`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::time::Duration;

use common::*;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

/// Resident memory of this process (server and peers), in bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_fu_a_fragments_keep_memory_flat() {
    let s = start_server().await;
    // The healthy room: a co-host and a viewer of its program.
    let (_host, _loc, _stop) = whip_publish(&s, "healthy", "host", "host", 320, 240).await;
    let viewer = s.token("healthy", "fan", "viewer").await;
    let mut prog = whep_program(&s, "healthy", &viewer).await;
    let (pv, _pa) = collect_both(&mut prog).await;
    eventually("healthy program", 15, || decoded_at(&pv, (1280, 720)) > 10).await;

    // The attacker: a WHIP co-host whose tracks carry hand-made RTP.
    let token = s.token("flood", "mallory", "host").await;
    let attacker = common::raw::raw_publisher(&s.url("/whip/flood"), &token).await;
    eventually("attacker connected", 15, || {
        *attacker.peer.state.lock().unwrap() == RTCPeerConnectionState::Connected
    })
    .await;
    // ~2 000 packets (2.4 MB) a second of fragments that never end.
    let mut flood = common::raw::EndlessFuA::default();
    let mut base = None;
    let mut most_held = 0u64;
    let mut samples = 0;
    let t0 = tokio::time::Instant::now();
    let attack = Duration::from_secs(16);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while t0.elapsed() < attack {
        tick.tick().await;
        for p in flood.next(&attacker, 20) {
            attacker.video.write_rtp(p).await.unwrap();
        }
        n += 1;
        // What the server holds for the access unit being assembled, every 0.5 s.
        if n.is_multiple_of(50) {
            most_held = most_held.max(s.metric("cohost_program_input_assembling_bytes").await);
            samples += 1;
        }
        if base.is_none() && t0.elapsed() >= Duration::from_secs(4) {
            base = Some((rss(), decoded_at(&pv, (1280, 720))));
        }
    }
    let (base_rss, base_pictures) = base.unwrap();
    let grown = rss().saturating_sub(base_rss);
    let attack_bytes = flood.sent * 12 / 16; // what was sent after the warm-up
    eprintln!(
        "FU-A flood: {} MB sent after warm-up, RSS grew {:.1} MB, at most {most_held} bytes held in {samples} samples",
        attack_bytes / 1_000_000,
        grown as f64 / 1e6
    );
    // Without the cap the assembler held all of it (28 MB here); with it, at most one access
    // unit (4 MiB) for this co-host and the healthy one's frame in progress.
    assert!(samples >= 25);
    assert!(most_held > 0, "the flood never reached the program's input");
    assert!(
        most_held <= (4 << 20) + 256 * 1024,
        "{most_held} bytes held for unending fragments"
    );
    // The process as a whole stays bounded too (RSS is noisy: the healthy viewer keeps every
    // frame it receives, allocators keep what they freed).
    assert!(
        grown < attack_bytes,
        "RSS grew {grown} bytes while {attack_bytes} bytes of unending fragments arrived"
    );
    // The healthy room decoded on through the flood (12 s at 30 fps, with a wide margin).
    let during = decoded_at(&pv, (1280, 720)) - base_pictures;
    assert!(
        during > 200,
        "only {during} program pictures in 12 s of flood"
    );
}
