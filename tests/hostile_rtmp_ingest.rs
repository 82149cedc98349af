//! Hostile RTMP ingests (issue 11, item 2): cohost pushes its program to servers it does not
//! control. Fake ingests in this test complete the handshake and then attack:
//! * `BigMessage`: Set Chunk Size 4 MiB, a 16 MiB command message started (its first 4 MiB
//!   chunk), Set Chunk Size 1, then one-byte chunks for ever (this once made `/healthz` time
//!   out for ~75 s: the reader cloned the partial message on every chunk);
//! * `PingFlood`: chunk size 1 and an endless stream of valid pings in one-byte chunks (within
//!   every cap, so the parser has work all the time);
//! * `Silent`: nothing after the handshake.
//!
//! Each attacked output reports `retrying` (or `failed`) with the reason through the outputs
//! API, `/healthz` answers within 1 s on every probe during the attack, an output of the same
//! server to a real nginx-rtmp stays live (when nginx is installed), and a healthy room beside
//! them keeps decoding its program. WebRTC here is webrtc-rs on loopback only (media bound to
//! 127.0.0.1, as every Rust test in `tests/`): no network namespace needed.
//!
//! Figures: `cargo test --test hostile_rtmp_ingest -- --nocapture` prints the `/healthz`
//! latencies and the healthy room's pictures (see `benches/RESULTS-hostile-rtmp.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nginx::{free_port, missing_tools, Nginx};
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Attack {
    BigMessage,
    PingFlood,
    Silent,
    /// Accepts the publication (replies sent unasked), then [`Attack::BigMessage`].
    LiveBigMessage,
    /// Accepts the publication, then [`Attack::PingFlood`] while the program is sent.
    LivePingFlood,
}

/// `_result` for connect (1) and createStream (4, stream 1), `onStatus` Publish.Start.
fn publish_replies() -> Vec<u8> {
    use cohost::output::amf0::{encode_all, Amf0Value as A};
    let mut w = cohost::output::chunk::ChunkWriter::new();
    let mut out = Vec::new();
    for cmd in [
        vec![A::str("_result"), A::Number(1.0), A::Null],
        vec![A::str("_result"), A::Number(4.0), A::Null, A::Number(1.0)],
        vec![
            A::str("onStatus"),
            A::Number(0.0),
            A::Null,
            A::Object(vec![("code".into(), A::str("NetStream.Publish.Start"))]),
        ],
    ] {
        w.write_payload(&mut out, 3, 0, 20, 0, &encode_all(&cmd));
    }
    out
}

/// A fake ingest on 127.0.0.1; counts connections and bytes it wrote after the handshake.
struct Ingest {
    port: u16,
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// A type 0 chunk header on chunk stream `csid` (< 64), message stream 0.
fn type0(csid: u8, len: u32, type_id: u8) -> Vec<u8> {
    let mut v = vec![csid, 0, 0, 0];
    v.extend_from_slice(&len.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&[0, 0, 0, 0]);
    v
}

fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut v = type0(2, 4, 1);
    v.extend_from_slice(&size.to_be_bytes());
    v
}

async fn write_counted(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    b: &[u8],
    bytes: &AtomicU64,
) -> bool {
    let ok = wr.write_all(b).await.is_ok();
    if ok {
        bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    ok
}

async fn attack(mut s: TcpStream, kind: Attack, bytes: Arc<AtomicU64>) {
    let mut c0c1 = vec![0u8; 1537];
    if s.read_exact(&mut c0c1).await.is_err() {
        return;
    }
    let mut hs = vec![3u8];
    hs.extend_from_slice(&[7u8; 1536]);
    hs.extend_from_slice(&c0c1[1..]);
    if s.write_all(&hs).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = s.into_split();
    // Read (and drop) whatever the client sends, so only the attack decides.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 65536];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let kind = match kind {
        Attack::LiveBigMessage | Attack::LivePingFlood => {
            // Let the client send its commands first, as a real server would answer them.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !write_counted(&mut wr, &publish_replies(), &bytes).await {
                return;
            }
            // Some seconds of calm publishing, then the attack.
            tokio::time::sleep(Duration::from_secs(2)).await;
            if matches!(kind, Attack::LiveBigMessage) {
                Attack::BigMessage
            } else {
                Attack::PingFlood
            }
        }
        k => k,
    };
    match kind {
        Attack::BigMessage => {
            let mut out = set_chunk_size(4 << 20);
            out.extend(type0(3, 0xFF_FFFF, 20));
            out.extend(std::iter::repeat_n(0x02u8, 4 << 20));
            out.extend(set_chunk_size(1));
            let flood = [0xC3u8, 0x41].repeat(32 * 1024);
            if write_counted(&mut wr, &out, &bytes).await {
                while write_counted(&mut wr, &flood, &bytes).await {}
            }
        }
        Attack::PingFlood => {
            let mut ping = type0(2, 6, 4);
            ping.push(0);
            for b in [6u8, 0, 0, 0, 1] {
                ping.extend_from_slice(&[0xC2, b]);
            }
            let flood = ping.repeat(4096);
            if write_counted(&mut wr, &set_chunk_size(1), &bytes).await {
                while write_counted(&mut wr, &flood, &bytes).await {}
            }
        }
        Attack::Silent => {
            let _ = drain.await;
            drop(wr);
            return;
        }
        Attack::LiveBigMessage | Attack::LivePingFlood => {}
    }
    drain.abort();
}

impl Ingest {
    async fn start(kind: Attack) -> Ingest {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (c, b) = (connections.clone(), bytes.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(attack(s, kind, b.clone()));
            }
        });
        Ingest {
            port,
            connections,
            bytes,
        }
    }
}

async fn add_output(s: &TestServer, room: &str, url: &str) -> String {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/api/rooms/{room}/outputs")))
        .bearer_auth(API_KEY)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn output(s: &TestServer, room: &str, id: &str) -> Value {
    s.get_api(&format!("/api/rooms/{room}/outputs/{id}")).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ingests_fail_their_own_outputs_and_nothing_else() {
    let s = start_server().await;
    let attack_secs: u64 = std::env::var("COHOST_ATTACK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);

    // A healthy room: a co-host and a WHEP viewer of its program.
    let room = "healthy";
    let (_host, _loc, _stop) = whip_publish(&s, room, "host", "host", 320, 240).await;
    let viewer = s.token(room, "fan", "viewer").await;
    let mut prog = whep_program(&s, room, &viewer).await;
    let (pv, _pa) = collect_both(&mut prog).await;
    eventually("program pictures", 15, || decoded_at(&pv, (1280, 720)) > 10).await;

    // Its output to a real nginx-rtmp, when installed: stays live through the attack.
    let dir = tempfile::tempdir().unwrap();
    let nginx = match missing_tools() {
        Some(m) => {
            eprintln!("no nginx output beside the attack: missing {m}");
            None
        }
        None => {
            let port = free_port();
            let n = Nginx::start(dir.path(), port);
            let id = add_output(&s, room, &format!("rtmp://127.0.0.1:{port}/live/healthy")).await;
            eventually_async("nginx output live", 15, || async {
                output(&s, room, &id).await["state"] == "live"
            })
            .await;
            Some((n, id))
        }
    };

    // The attacked room (a small program of its own, so that its outputs have tags to send):
    // two outputs to the big-message ingest (as in the issue), one to the ping flood, one to
    // the silent ingest, and one to each ingest that accepts the publication first.
    let r = reqwest::Client::new()
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "attacked", "mix": {"width": 320, "height": 240, "video_kbps": 300}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (_guest, _gloc, _gstop) = whip_publish(&s, "attacked", "host", "host", 160, 120).await;
    let big = Ingest::start(Attack::BigMessage).await;
    let flood = Ingest::start(Attack::PingFlood).await;
    let silent = Ingest::start(Attack::Silent).await;
    let live_big = Ingest::start(Attack::LiveBigMessage).await;
    let live_flood = Ingest::start(Attack::LivePingFlood).await;
    let url = |i: &Ingest| format!("rtmp://127.0.0.1:{}/live/key", i.port);
    let outputs = [
        ("big-1", add_output(&s, "attacked", &url(&big)).await),
        ("big-2", add_output(&s, "attacked", &url(&big)).await),
        ("ping-flood", add_output(&s, "attacked", &url(&flood)).await),
        ("silent", add_output(&s, "attacked", &url(&silent)).await),
        (
            "live-big",
            add_output(&s, "attacked", &url(&live_big)).await,
        ),
    ];
    let live_flood_id = add_output(&s, "attacked", &url(&live_flood)).await;
    eventually_async("output to the live ping flood live", 15, || async {
        output(&s, "attacked", &live_flood_id).await["state"] == "live"
    })
    .await;

    // During the attack: /healthz every 100 ms, each answered within 1 s.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Its calm 2 s pass, then the flood: count what the output sends under the flood.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flood_bytes_before = output(&s, "attacked", &live_flood_id).await["bytes_sent"]
        .as_u64()
        .unwrap();
    let frames_before = pv.lock().unwrap().frames.len();
    let decoded_before = decoded_at(&pv, (1280, 720));
    let nginx_bytes_before = match &nginx {
        Some((_, id)) => output(&s, room, id).await["bytes_sent"].as_u64().unwrap(),
        None => 0,
    };
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let live_big_id = outputs[4].1.clone();
    let mut live_big_seen_retrying = false;
    while t0.elapsed() < Duration::from_secs(attack_secs) {
        let t = Instant::now();
        let r = http.get(s.url("/healthz")).send().await;
        let d = t.elapsed();
        assert!(
            r.as_ref().is_ok_and(|r| r.status().is_success()),
            "/healthz failed during the attack after {:?}: {r:?}",
            t0.elapsed()
        );
        assert!(
            d < Duration::from_secs(1),
            "/healthz took {d:?} at {:?} into the attack",
            t0.elapsed()
        );
        lat.push(d);
        // The output whose ingest accepts and then attacks goes live and fails over and over.
        if !live_big_seen_retrying {
            live_big_seen_retrying =
                output(&s, "attacked", &live_big_id).await["state"] == "retrying";
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t0.elapsed();
    let frames = pv.lock().unwrap().frames.len() - frames_before;
    let decoded = decoded_at(&pv, (1280, 720)) - decoded_before;
    lat.sort();
    let expected = (elapsed.as_secs_f64() * 30.0).round() as usize;
    eprintln!(
        "attack {:.1} s: /healthz {} probes, p50 {:?}, p99 {:?}, max {:?}; healthy program \
         {frames} pictures received, {decoded} decoded at 1280x720, ~{expected} expected at 30 fps",
        elapsed.as_secs_f64(),
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    for (name, i) in [
        ("big-message", &big),
        ("ping-flood", &flood),
        ("silent", &silent),
        ("live big-message", &live_big),
        ("live ping-flood", &live_flood),
    ] {
        eprintln!(
            "ingest {name}: {} connections, {} bytes sent to cohost",
            i.connections.load(Ordering::Relaxed),
            i.bytes.load(Ordering::Relaxed)
        );
    }

    // Each attacked output failed on its own, with the reason.
    for (name, id) in &outputs {
        let v = output(&s, "attacked", id).await;
        eprintln!("{name}: {v}");
        let state = v["state"].as_str().unwrap_or("");
        let err = v["last_error"].as_str().unwrap_or("");
        if *name == "live-big" {
            assert!(live_big_seen_retrying, "{name} never seen retrying: {v}");
        } else {
            assert!(state == "retrying" || state == "failed", "{name}: {v}");
        }
        let want = match *name {
            "big-1" | "big-2" | "live-big" => "at most 1048576 accepted",
            _ => "timeout",
        };
        assert!(err.contains(want), "{name}: {v}");
        assert!(v["reconnects"].as_u64().unwrap() >= 1, "{name}: {v}");
    }
    // The big-message ingest was refused at its header: it never got its first write out.
    assert!(big.connections.load(Ordering::Relaxed) >= 2);
    assert_eq!(big.bytes.load(Ordering::Relaxed), 0);
    // A flood of valid pings while publishing is only load: the output stays live and the
    // program keeps going out to it.
    let v = output(&s, "attacked", &live_flood_id).await;
    eprintln!("live-ping-flood: {v}");
    assert_eq!(v["state"], "live", "{v}");
    assert_eq!(v["reconnects"], 0, "{v}");
    let sent = v["bytes_sent"].as_u64().unwrap() - flood_bytes_before;
    eprintln!(
        "live-ping-flood output sent {sent} bytes during the attack while the ingest sent {} bytes",
        live_flood.bytes.load(Ordering::Relaxed)
    );
    assert!(
        sent > attack_secs * 10_000,
        "sent {sent} bytes under the flood"
    );

    // Everything else went on.
    assert!(
        decoded * 10 >= expected * 8,
        "the healthy room decoded {decoded} pictures in {elapsed:?} (~{expected} expected)"
    );
    if let Some((_n, id)) = &nginx {
        let v = output(&s, room, id).await;
        assert_eq!(v["state"], "live", "{v}");
        assert_eq!(v["reconnects"], 0, "{v}");
        let sent = v["bytes_sent"].as_u64().unwrap() - nginx_bytes_before;
        // 2.5 Mbit/s program: a good part of it during the attack.
        assert!(
            sent > attack_secs * 100_000,
            "nginx output sent {sent} bytes"
        );
    }
}
