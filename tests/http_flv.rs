//! HTTP-FLV (`GET /live/{room}.flv`) end to end, against the real server and a webrtc-rs
//! co-host publishing over WHIP:
//!
//! - a viewer gets `200 video/x-flv`, chunked, `no-cache`, `Access-Control-Allow-Origin: *`;
//!   its stream starts with the FLV header, `onMetaData`, the AVC and AAC sequence headers and
//!   a keyframe, all at the keyframe's timestamp; timestamps only grow per track; the layout
//!   SEI is in the pictures; ffprobe finds H.264 at the program's size and AAC 48 kHz in 3 s of
//!   it, and ffmpeg decodes every picture without a "non-existing PPS";
//! - a second viewer joining mid-GOP starts at once with the cached GOP: its first picture is
//!   the keyframe the first viewer got last, older than the live edge, and it decodes;
//! - past the room's viewer limit a viewer gets `429 limit_reached`; a room without a program
//!   and a path that is not `{room}.flv` get `404` JSON;
//! - a client that sends its request and never reads is dropped and counted in
//!   `cohost_flv_viewers_dropped_total` while the first viewer keeps receiving (asserted in
//!   bytes), and `cohost_flv_viewers` follows the viewers;
//! - when the program ends the viewer's response ends;
//! - in cluster mode, a node that does not own the room streams it from the owner.
//!
//! Skipped (with a message) without ffmpeg/ffprobe (and the cluster case without
//! redis-server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit as common;
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_cohost");
const LAYOUT_UUID: [u8; 16] = [
    0xbe, 0xb5, 0x99, 0x04, 0x64, 0x93, 0x40, 0xf3, 0x8a, 0x26, 0x14, 0x0d, 0x6a, 0xef, 0x0e, 0x04,
];

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One FLV tag as read back.
#[derive(Debug, Clone)]
struct Tag {
    kind: u8,
    ts: u32,
    body: Vec<u8>,
}

impl Tag {
    /// Audio or video media (not a sequence header, not script data).
    fn is_media(&self) -> bool {
        match self.kind {
            8 => self.body.get(1) == Some(&1),
            9 => self.body.get(1) == Some(&1),
            _ => false,
        }
    }

    fn is_keyframe(&self) -> bool {
        self.kind == 9 && self.body.first() == Some(&0x17) && self.body.get(1) == Some(&1)
    }

    /// The NAL unit types of a video tag (AVCC, 4-byte lengths).
    fn nal_types(&self) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        let mut i = 5;
        while i + 4 <= self.body.len() {
            let n = u32::from_be_bytes(self.body[i..i + 4].try_into().unwrap()) as usize;
            let Some(nal) = self.body.get(i + 4..i + 4 + n) else {
                break;
            };
            if let Some(b) = nal.first() {
                out.push((b & 0x1f, nal));
            }
            i += 4 + n;
        }
        out
    }
}

/// An FLV stream parsed as it arrives.
#[derive(Debug, Default)]
struct Flv {
    buf: Vec<u8>,
    /// End of the last complete tag in `buf`.
    complete: usize,
    tags: Vec<Tag>,
    /// The response ended cleanly (end of the chunked body).
    ended: bool,
    error: Option<String>,
}

impl Flv {
    fn feed(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.complete == 0 {
            if self.buf.len() < 13 {
                return;
            }
            assert_eq!(&self.buf[..3], b"FLV", "FLV signature");
            assert_eq!(self.buf[3], 1, "version 1");
            assert_eq!(self.buf[4], 5, "audio and video flags");
            assert_eq!(&self.buf[5..13], &[0, 0, 0, 9, 0, 0, 0, 0]);
            self.complete = 13;
        }
        loop {
            let p = self.complete;
            let Some(h) = self.buf.get(p..p + 11) else {
                return;
            };
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let kind = h[0];
            let Some(prev) = self.buf.get(p + 11 + size..p + 11 + size + 4) else {
                return;
            };
            assert_eq!(
                u32::from_be_bytes(prev.try_into().unwrap()) as usize,
                size + 11,
                "PreviousTagSize"
            );
            assert!([8, 9, 18].contains(&kind), "tag type {kind}");
            self.tags.push(Tag {
                kind,
                ts,
                body: self.buf[p + 11..p + 11 + size].to_vec(),
            });
            self.complete = p + 11 + size + 4;
        }
    }

    fn media(&self) -> impl Iterator<Item = &Tag> {
        self.tags.iter().filter(|t| t.is_media())
    }

    /// The latest media timestamp.
    fn edge(&self) -> Option<u32> {
        self.media().map(|t| t.ts).max()
    }

    fn keyframes(&self) -> Vec<u32> {
        self.tags
            .iter()
            .filter(|t| t.is_keyframe())
            .map(|t| t.ts)
            .collect()
    }

    fn first_media_ts(&self) -> Option<u32> {
        self.media().next().map(|t| t.ts)
    }

    /// Program time covered so far, ms.
    fn span_ms(&self) -> u32 {
        match (self.first_media_ts(), self.edge()) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }

    fn bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Reads a response body into an [`Flv`] until it ends.
fn read_into(mut resp: reqwest::Response) -> (Arc<Mutex<Flv>>, tokio::task::JoinHandle<()>) {
    let flv = Arc::new(Mutex::new(Flv::default()));
    let f = flv.clone();
    let task = tokio::spawn(async move {
        loop {
            match resp.chunk().await {
                Ok(Some(b)) => f.lock().unwrap().feed(&b),
                Ok(None) => {
                    f.lock().unwrap().ended = true;
                    return;
                }
                Err(e) => {
                    f.lock().unwrap().error = Some(e.to_string());
                    return;
                }
            }
        }
    });
    (flv, task)
}

async fn wait_for(what: &str, secs: u64, flv: &Arc<Mutex<Flv>>, f: impl Fn(&Flv) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        {
            let g = flv.lock().unwrap();
            if f(&g) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} bytes, {} tags, ended {}, error {:?}",
                g.bytes(),
                g.tags.len(),
                g.ended,
                g.error
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream starts as players need: script, AVC header, AAC header, a keyframe, all at the
/// keyframe's timestamp; media timestamps never go back per track and start at the keyframe.
fn check_start(flv: &Flv) {
    let t = &flv.tags;
    assert!(t.len() >= 4, "{} tags", t.len());
    assert_eq!(t[0].kind, 18, "onMetaData first");
    assert!(
        t[0].body.starts_with(&[0x02, 0x00, 0x0a]) && &t[0].body[3..13] == b"onMetaData",
        "onMetaData"
    );
    assert_eq!(
        (t[1].kind, t[1].body[0], t[1].body[1]),
        (9, 0x17, 0),
        "AVC header"
    );
    assert_eq!(t[1].body[5], 1, "AVCDecoderConfigurationRecord version");
    assert_eq!(
        (t[2].kind, &t[2].body[..]),
        (8, &[0xAF, 0x00, 0x11, 0x90][..]),
        "AAC header (LC 48 kHz stereo)"
    );
    assert!(t[3].is_keyframe(), "the first picture is a keyframe");
    let ts0 = t[3].ts;
    assert!(
        t[..4].iter().all(|x| x.ts == ts0),
        "headers at the keyframe's time"
    );
    for kind in [8, 9] {
        let ts: Vec<u32> = flv
            .media()
            .filter(|x| x.kind == kind)
            .map(|x| x.ts)
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "type {kind} timestamps go back"
        );
        assert!(
            ts.iter().all(|&x| x >= ts0),
            "type {kind} before the keyframe"
        );
    }
}

fn ffprobe_streams(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// Decodes every picture of `path`: (pictures decoded, ffmpeg's errors).
fn decode_all(path: &Path) -> (usize, String) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"])
        .output()
        .expect("ffmpeg");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0);
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// ffprobe and ffmpeg on the complete tags of `flv` written to `path`: H.264 `w`x`h`, AAC
/// 48 kHz, every picture decodes from the first on.
fn check_with_ffmpeg(flv: &Flv, path: &Path, (w, h): (u64, u64)) {
    std::fs::write(path, &flv.buf[..flv.complete]).unwrap();
    let v = ffprobe_streams(path);
    let streams = v["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("no video stream: {v}"));
    assert_eq!(video["codec_name"], "h264", "{video}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(w), Some(h)),
        "{video}"
    );
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .unwrap_or_else(|| panic!("no audio stream: {v}"));
    assert_eq!(audio["codec_name"], "aac", "{audio}");
    assert_eq!(audio["sample_rate"], "48000", "{audio}");
    let pictures = flv
        .tags
        .iter()
        .filter(|t| t.kind == 9 && t.is_media())
        .count();
    let (decoded, errors) = decode_all(path);
    assert!(
        !errors.contains("non-existing PPS") && !errors.contains("no frame!"),
        "the stream does not start decodable: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg errors decoding {}: {errors}",
        path.display()
    );
    assert_eq!(decoded, pictures, "every picture decodes");
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.unwrap()
}

/// Waits until the room's program answers `/live/{room}.flv` with 200.
async fn wait_program(url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(url).await;
        if r.status() == 200 {
            return r;
        }
        assert_eq!(r.status(), 404, "before the program");
        assert!(Instant::now() < deadline, "the program never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that sends its request, reads the answer's head and then never reads again (a
/// small receive buffer, so the server's socket fills soon).
async fn stalled_client(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "answer head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_flv_viewers_start_at_a_keyframe_and_slow_ones_are_dropped() {
    if !have("ffprobe") || !have("ffmpeg") {
        eprintln!("SKIPPED http_flv: ffmpeg/ffprobe not installed (scripts/test.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start_server_with(|c| c.program.max_flv_viewers = 3).await;
    let room = "flv-show";
    let url = s.url(&format!("/live/{room}.flv"));

    // 404s: no such room's program; not `{room}.flv`.
    for path in ["/live/nobody.flv", "/live/nobody", "/live/.flv"] {
        let r = get(&s.url(path)).await;
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
    }

    // A room with its own mix (640x360, a keyframe every 4 s) and a co-host publishing.
    let r = reqwest::Client::new()
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": room, "mix": {"width": 640, "height": 360, "gop_s": 4}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = get(&url).await;
    assert_eq!(r.status(), 404, "a room whose program has not started");
    let (_peer, whip, stop) = whip_publish(&s, room, "alice", "host", 320, 240).await;

    // Viewer A.
    let resp = wait_program(&url).await;
    let h = resp.headers();
    assert_eq!(h["content-type"], "video/x-flv");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["transfer-encoding"], "chunked");
    assert!(h.get("content-length").is_none());
    let connected = Instant::now();
    let (a, a_task) = read_into(resp);
    wait_for("3 s of program", 30, &a, |f| f.span_ms() >= 3000).await;
    eprintln!("viewer A: 3 s of program after {:?}", connected.elapsed());
    {
        let f = a.lock().unwrap();
        check_start(&f);
        let sei = f
            .tags
            .iter()
            .filter(|t| t.is_media() && t.kind == 9)
            .flat_map(|t| t.nal_types())
            .filter(|(ty, nal)| *ty == 6 && nal.windows(16).any(|w| w == LAYOUT_UUID))
            .count();
        assert!(sei > 0, "the layout SEI rides in the pictures");
        check_with_ffmpeg(&f, &dir.path().join("a.flv"), (640, 360));
    }
    // HLS beside it still routes (`/live/{room}/{file}`).
    eventually_async("HLS playlist", 20, || async {
        get(&s.url(&format!("/live/{room}/index.m3u8")))
            .await
            .status()
            == 200
    })
    .await;

    // Viewer B joins mid-GOP (1 to 2.5 s after A's latest keyframe, keyframes 4 s apart).
    wait_for("two keyframes", 20, &a, |f| f.keyframes().len() >= 2).await;
    wait_for("the middle of a GOP", 20, &a, |f| {
        let (k, e) = (*f.keyframes().last().unwrap(), f.edge().unwrap());
        (1000..2500).contains(&(e - k))
    })
    .await;
    let (a_key, a_edge) = {
        let f = a.lock().unwrap();
        (*f.keyframes().last().unwrap(), f.edge().unwrap())
    };
    let asked = Instant::now();
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    let (b, b_task) = read_into(r);
    wait_for("B's first picture", 10, &b, |f| f.media().next().is_some()).await;
    let b_first = asked.elapsed();
    wait_for("B's live edge past A's", 20, &b, |f| {
        f.edge().is_some_and(|e| e > a_edge + 1000)
    })
    .await;
    {
        let f = b.lock().unwrap();
        check_start(&f);
        let first = f.media().next().unwrap();
        assert!(first.is_keyframe(), "B's first media tag is a keyframe");
        assert!(
            first.ts <= a_edge,
            "B starts from the cached GOP ({} ms), not a later keyframe (edge {a_edge} ms)",
            first.ts
        );
        assert_eq!(first.ts, a_key, "the GOP's keyframe is A's latest");
        eprintln!(
            "viewer B: first picture {b_first:?} after asking; it is {} ms behind the live edge",
            a_edge - first.ts
        );
        check_with_ffmpeg(&f, &dir.path().join("b.flv"), (640, 360));
    }
    // B has exactly A's tags from the keyframe on (A's copy up to B's edge).
    {
        let (fa, fb) = (a.lock().unwrap(), b.lock().unwrap());
        let from = fa
            .tags
            .iter()
            .position(|t| t.is_keyframe() && t.ts == a_key)
            .unwrap();
        let ours: Vec<(u8, u32, usize)> =
            fb.media().map(|t| (t.kind, t.ts, t.body.len())).collect();
        let theirs: Vec<(u8, u32, usize)> = fa.tags[from..]
            .iter()
            .filter(|t| t.is_media() && t.ts >= a_key)
            .map(|t| (t.kind, t.ts, t.body.len()))
            .take(ours.len())
            .collect();
        let n = ours.len().min(theirs.len());
        assert!(n > 100, "{n} tags to compare");
        assert_eq!(ours[..n], theirs[..n], "no tag lost or repeated");
    }

    // A client that never reads, and the viewer limit (3: A, B and it).
    let stalled = stalled_client(s.addr, &format!("/live/{room}.flv")).await;
    assert_eq!(s.metric("cohost_flv_viewers").await, 3);
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "limit_reached", "{v}");
    b_task.abort();
    drop(b);
    let before = a.lock().unwrap().bytes();
    let deadline = Instant::now() + Duration::from_secs(90);
    while s.metric("cohost_flv_viewers_dropped_total").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the client that does not read was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = a.lock().unwrap().bytes() - before;
    assert!(
        during > 50_000,
        "A received only {during} bytes while the stalled client was dropped"
    );
    let after_drop = a.lock().unwrap().bytes();
    wait_for("A keeps receiving", 20, &a, |f| {
        f.bytes() > after_drop + 50_000
    })
    .await;
    assert!(a.lock().unwrap().error.is_none());
    eprintln!("A received {during} bytes while the stalled client filled its queue");
    drop(stalled);
    eventually_async("viewers back to A alone", 30, || async {
        s.metric("cohost_flv_viewers").await == 1
    })
    .await;
    assert_eq!(s.metric("cohost_flv_viewers_dropped_total").await, 1);

    // The co-host leaves: after the grace period the program ends, and so does A's stream.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let t = s.token(room, "alice", "host").await;
    assert_eq!(delete(&whip, &t).await, 200);
    wait_for("A's stream to end with the program", 30, &a, |f| {
        f.ended || f.error.is_some()
    })
    .await;
    {
        let f = a.lock().unwrap();
        assert!(f.ended, "a clean end of the response: {:?}", f.error);
        assert_eq!(f.complete, f.bytes(), "ends after a whole tag");
    }
    a_task.await.unwrap();
    eventually_async("no viewers", 10, || async {
        s.metric("cohost_flv_viewers").await == 0
    })
    .await;
    assert_eq!(get(&url).await.status(), 404, "no program, no stream");
    let m = s.metrics().await;
    assert!(m.contains("# TYPE cohost_flv_viewers gauge"), "{m}");
    assert!(
        m.contains("# TYPE cohost_flv_viewers_dropped_total counter"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_flv_streams_through_a_node_that_does_not_own_the_room() {
    let redis_ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !redis_ok || !have("ffprobe") || !have("ffmpeg") {
        eprintln!("SKIPPED http_flv cluster: redis-server or ffmpeg not installed");
        return;
    }
    common::init_tracing();
    let redis = testkit::cluster::Redis::start().await;
    let n1 = testkit::cluster::Node::start(BIN, &redis, "f1", 0, &[]).await;
    let n2 = testkit::cluster::Node::start(BIN, &redis, "f2", 1, &[]).await;
    let room = "flv-fleet";
    let (st, v) = n1
        .send(
            reqwest::Method::POST,
            "/api/rooms",
            json!({"name": room, "mix": {"width": 320, "height": 180}}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let owner = v["node"].as_str().unwrap().to_owned();
    let (own, other) = if owner == n1.id {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };

    let token = own.token(room, "alice", "host").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "alice").await;
    let offer = peer.offer().await;
    let (st, _, answer) = post_sdp(&own.url(&format!("/whip/{room}")), &token, &offer).await;
    assert_eq!(st, 201, "{answer}");
    peer.set_answer(&answer).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 60.0, stop.clone());

    // From the node that does not own the room: proxied, and streamed as it comes.
    let resp = wait_program(&other.url(&format!("/live/{room}.flv"))).await;
    assert_eq!(resp.headers()["content-type"], "video/x-flv");
    let (f, task) = read_into(resp);
    wait_for("2 s of program through the proxy", 30, &f, |f| {
        f.span_ms() >= 2000
    })
    .await;
    {
        let g = f.lock().unwrap();
        check_start(&g);
    }
    let n = f.lock().unwrap().tags.len();
    wait_for("more tags", 10, &f, |g| g.tags.len() > n + 30).await;
    let dir = tempfile::tempdir().unwrap();
    check_with_ffmpeg(&f.lock().unwrap(), &dir.path().join("c.flv"), (320, 180));
    task.abort();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
