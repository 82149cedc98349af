//! SIGTERM ends the real binary gracefully and promptly while a room is live: a co-host
//! publishing over WHIP (so a program runs), an RTMP output retrying, a signaling WebSocket
//! open. The process exits 0 within a bound and says it closed its programs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_a_live_room_and_exits() {
    let port = common::nginx::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let udp = 47000 + (std::process::id() % 50) as u16 * 20;
    let recordings = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohost"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--media-ip",
            "127.0.0.1",
        ])
        .args(["--udp-ports", &format!("{udp}-{}", udp + 19)])
        .args([
            "--api-key",
            API_KEY,
            "--api-secret",
            API_SECRET,
            "--log",
            "info,webrtc=warn,rtc=warn",
        ])
        .arg("--recordings-dir")
        .arg(recordings.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let token = |identity: &str, role: &str| {
        let http = http.clone();
        let url = format!("{base}/api/tokens");
        let body = json!({"room": "bye", "identity": identity, "role": role});
        async move {
            let v: Value = http
                .post(url)
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    // A co-host publishing (the program starts) and an RTMP output that cannot connect.
    let host = token("h", "host").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "h").await;
    let offer = peer.offer().await;
    let (st, _, answer) = post_sdp(&format!("{base}/whip/bye"), &host, &offer).await;
    assert_eq!(st, 201, "{answer}");
    peer.set_answer(&answer).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 60.0, stop.clone());
    let r = http
        .post(format!("{base}/api/rooms/bye/outputs"))
        .bearer_auth(API_KEY)
        .json(&json!({"url": "rtmp://127.0.0.1:9/live/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = http
            .get(format!("{base}/metrics"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.lines().any(|l| l == "cohost_programs_running 1") {
            break;
        }
        assert!(Instant::now() < deadline, "no program: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A recording of the program.
    let r = http
        .post(format!("{base}/api/rooms/bye/recordings"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // An open signaling socket.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/ws?token={}",
        token("v", "viewer").await
    ))
    .await
    .unwrap();
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "join"}).to_string().into(),
    ))
    .await
    .unwrap();

    let pid = child.id().unwrap().to_string();
    let t0 = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exited within 15 s")
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut log = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("closing programs")
            && log.contains("program stopped")
            && log.contains("server stopped"),
        "{log}"
    );
    eprintln!("graceful shutdown took {:?}", t0.elapsed());
    // The recording was finished, not cut: the file ends with a complete fragment holding
    // the pictures up to the shutdown.
    let file = recordings
        .path()
        .join("bye")
        .join(format!("{}.mp4", rec["id"].as_str().unwrap()));
    let bytes = std::fs::read(&file).unwrap();
    let (mut at, mut last) = (0usize, [0u8; 4]);
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(size >= 8 && at + size <= bytes.len(), "a cut box at {at}");
        last.copy_from_slice(&bytes[at + 4..at + 8]);
        at += size;
    }
    assert_eq!(
        (at, &last),
        (bytes.len(), b"mdat"),
        "ends with a whole fragment"
    );
}

/// The binary's configuration surface: `--help` lists the flags with their environment
/// variables, a bad `--log` filter or port range is refused with exit code 2, and settings
/// given only through `COHOST_*` variables take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_flags_and_environment() {
    let bin = env!("CARGO_BIN_EXE_cohost");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for s in [
        "--max-programs",
        "COHOST_MAX_PROGRAMS",
        "--udp-ports",
        "COHOST_API_KEY",
    ] {
        assert!(text.contains(s), "--help lacks {s}: {text}");
    }
    for args in [["--log", "info,=[bad"], ["--udp-ports", "9000-8000"]] {
        let out = Command::new(bin)
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cohost"),
            "{args:?}: a message on stderr"
        );
    }

    // Development mode on a public address is refused unless asked for.
    let out = Command::new(bin)
        .args(["--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev-public"));

    let port = common::nginx::free_port();
    let mport = common::nginx::free_port();
    let udp = 46000 + (std::process::id() % 50) as u16 * 20;
    let mut child = tokio::process::Command::new(bin)
        .env("COHOST_BIND", format!("127.0.0.1:{port}"))
        .env("COHOST_METRICS_BIND", format!("127.0.0.1:{mport}"))
        .env("COHOST_MEDIA_IP", "127.0.0.1")
        .env("COHOST_UDP_PORTS", format!("{udp}-{}", udp + 19))
        .env("COHOST_API_KEY", API_KEY)
        .env("COHOST_API_SECRET", API_SECRET)
        .env("COHOST_MAX_PROGRAMS", "3")
        .env("COHOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&http, &base).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "cohost_programs_max 3"),
        "COHOST_MAX_PROGRAMS not applied"
    );
    // Without the key the main address does not list the rooms; --metrics-bind does.
    let st = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 401);
    let open = http
        .get(format!("http://127.0.0.1:{mport}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    assert!(open.text().await.unwrap().contains("cohost_programs_max 3"));
    // The API key came from the environment.
    let st = http
        .get(format!("{base}/api/rooms"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 200);
    let _ = child.kill().await;
}
