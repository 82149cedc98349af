//! The studio's costs on a live program (issue 16), in one process with the server:
//!
//! 1. **Recording overhead.** A 1280x720 program of two WHIP co-hosts (moving content) is
//!    recorded; the recording's writer thread (`rec-{room}`: muxing and writing the fragments)
//!    is timed from the kernel's per-thread run time (`/proc/self/task/*/schedstat`), against
//!    the mixer threads (`cohost-mixer`: compositing and encoding every program) over the
//!    same window. Reported: the writer's share of one core (goal < 2 %), its ratio to the
//!    mixer time, and the bytes written per second.
//! 2. **Snapshot latency.** `GET /api/rooms/{room}/snapshot.jpg` at full size and `?w=320`,
//!    one request every 300 ms (past the 250 ms reuse, so every one is a new encode):
//!    p50/p95/max from request to last byte.
//!
//! Run: `cargo bench --bench studio`. `STUDIO_BENCH_SECS` (default 20) sets the window of
//! part 1, `STUDIO_BENCH_SNAPSHOTS` (default 40) the requests per size of part 2.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use testkit as common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Run time (ns) of this process's threads whose name starts with `prefix`.
fn thread_ns(prefix: &str) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = e.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

fn pct(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::var("STUDIO_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let shots: usize = std::env::var("STUDIO_BENCH_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let s = start_server_with(move |c| c.program.recordings.dir = d).await;
    let http = reqwest::Client::new();
    let r = http
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "bench", "mix": {"width": 1280, "height": 720}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (_a, _ra, _sa) = whip_publish(&s, "bench", "host", "host", 640, 360).await;
    let (_b, _rb, _sb) = whip_publish(&s, "bench", "guest", "guest", 640, 360).await;
    eventually_async("the program", 20, || {
        let http = http.clone();
        let url = s.url("/api/rooms/bench/snapshot.jpg");
        async move {
            http.get(url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Recording.
    let r = http
        .post(s.url("/api/rooms/bench/recordings"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rec0, mix0, t0) = (thread_ns("rec-"), thread_ns("cohost-mixer"), Instant::now());
    let bytes0 = s.metric("cohost_recording_bytes_total").await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rec1, mix1, wall) = (thread_ns("rec-"), thread_ns("cohost-mixer"), t0.elapsed());
    let bytes1 = s.metric("cohost_recording_bytes_total").await;
    let id = rec["id"].as_str().unwrap();
    let r = http
        .delete(s.url(&format!("/api/rooms/bench/recordings/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["state"], "finished");
    let wall_ns = wall.as_nanos() as f64;
    let rec_core = (rec1 - rec0) as f64 / wall_ns * 100.0;
    let mix_core = (mix1 - mix0) as f64 / wall_ns * 100.0;
    println!(
        "| recording writer | {rec_core:.2} % of a core | mixer threads {mix_core:.1} % of a core | writer / mixer {:.2} % | {:.0} kB/s written | {:.1} s window |",
        rec_core / mix_core * 100.0,
        (bytes1 - bytes0) as f64 / wall.as_secs_f64() / 1000.0,
        wall.as_secs_f64()
    );

    // 2. Snapshots.
    for (label, query) in [("1280x720", ""), ("?w=320", "?w=320")] {
        let mut ms = Vec::new();
        for _ in 0..shots {
            let t = Instant::now();
            let r = http
                .get(s.url(&format!("/api/rooms/bench/snapshot.jpg{query}")))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.unwrap();
            assert!(body.len() > 1000);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let max = ms.iter().copied().fold(0.0, f64::max);
        println!(
            "| snapshot {label} | p50 {:.1} ms | p95 {:.1} ms | max {max:.1} ms | {} requests |",
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.95),
            ms.len()
        );
    }
}
