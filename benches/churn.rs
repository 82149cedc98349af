//! Room churn: does the server give back what a room's life takes? Many cycles of a room
//! coming to life (two WHIP co-hosts publish, the program starts, a WHEP program viewer and a
//! WHEP subscriber of one co-host watch) and ending (everyone leaves, the program stops), one
//! room after another, in the real server. Prints the process's resident memory, threads and open file descriptors after
//! warm-up and every few cycles: a leak shows as steady growth.
//!
//! Run: `cargo bench --bench churn`. Environment: `CHURN_CYCLES` (default 40),
//! `CHURN_SAME_ROOM` (set: the same room name every cycle; unset: a new room each cycle),
//! `CHURN_EXIT_LIVE` (set: exit without freeing, for `heaptrack` to list what is still held).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use testkit as common;

use std::time::{Duration, Instant};

use common::{
    client_peer, delete, eventually_async, post_sdp, start_server_with, whep_subscribe,
    whip_publish, TestServer,
};

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

async fn cycle(s: &TestServer, room: &str) {
    let (a, ra, sa) = whip_publish(s, room, "alice", "host", 320, 240).await;
    let (b, rb, sb) = whip_publish(s, room, "bob", "guest", 320, 240).await;
    eventually_async("program running", 20, || async {
        s.metric("cohost_programs_running").await == 1
    })
    .await;
    // A WHEP viewer of the program (Opus program audio switches on and off with it).
    let viewer = client_peer().await;
    viewer.add_recv().await;
    let token = s.token(room, "viewer", "viewer").await;
    let offer = viewer.offer().await;
    let (status, loc, body) = post_sdp(&s.url(&format!("/whep/{room}")), &token, &offer).await;
    assert_eq!(status, 201, "WHEP program: {body}");
    viewer.set_answer(&body).await;
    // And a WHEP subscriber of one co-host (the SFU path).
    let sub_token = s.token(room, "fan", "guest").await;
    let (sub, sub_res) = whep_subscribe(s, room, "alice", &sub_token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(delete(&s.url(&loc.unwrap()), &token).await < 300);
    viewer.pc.close().await.ok();
    assert!(delete(&sub_res, &sub_token).await < 300);
    sub.pc.close().await.ok();
    for (who, res, stop) in [("alice", ra, sa), ("bob", rb, sb)] {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = s
            .token(room, who, if who == "alice" { "host" } else { "guest" })
            .await;
        assert!(delete(&res, &t).await < 300);
    }
    a.pc.close().await.ok();
    b.pc.close().await.ok();
    eventually_async("program stopped", 20, || async {
        s.metric("cohost_programs_running").await == 0
    })
    .await;
}

fn main() {
    let cycles: usize = std::env::var("CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // One room name for every cycle instead of a new room each time.
    let same_room = std::env::var_os("CHURN_SAME_ROOM").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = start_server_with(|c| c.program.grace = Duration::from_millis(200)).await;
        println!("# churn: {cycles} room lives (2 WHIP co-hosts, program, WHEP program viewer, WHEP subscriber, all leave)");
        println!("| cycle | RSS MiB | threads | open fds | mixers in the pool | publications alive | s/cycle |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let t0 = Instant::now();
        for i in 1..=cycles {
            let room = if same_room {
                "churn".to_owned()
            } else {
                format!("churn-{i}")
            };
            cycle(&s, &room).await;
            if i == 5 || i % 10 == 0 || i == cycles {
                // Let closed connections and stopped mixers finish tearing down.
                tokio::time::sleep(Duration::from_secs(2)).await;
                println!(
                    "| {i} | {:.1} | {} | {} | {} | {} | {:.2} |",
                    status("VmRSS:") as f64 / 1024.0,
                    status("Threads:"),
                    fds(),
                    s.metric("cohost_mixers").await,
                    s.metric("cohost_publishers_alive").await,
                    t0.elapsed().as_secs_f64() / i as f64
                );
            }
        }
        if std::env::var_os("CHURN_EXIT_LIVE").is_some() {
            // Exit with everything still allocated, so a heap profiler (heaptrack) lists what
            // the server holds after the cycles as "leaked".
            std::process::exit(0);
        }
    });
}
