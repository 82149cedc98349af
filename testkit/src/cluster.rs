//! Cluster mode with the real thing: a `redis-server` of its own (free port, no persistence)
//! and `cohost` binaries on loopback, each with its own ports, killed when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::nginx::free_port;
use crate::{API_KEY, API_SECRET};

static NEXT_SLOT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A `redis-server` on a free loopback port, without persistence.
pub struct Redis {
    child: tokio::process::Child,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts one and waits until it answers.
    pub async fn start() -> Redis {
        Redis::start_on(free_port()).await
    }

    /// Kills it and starts a new, empty one on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        let _ = self.child.wait().await;
        *self = Redis::start_on(self.port).await;
    }

    async fn start_on(port: u16) -> Redis {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (scripts/deps.sh --test installs it)");
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A connection for the test's own look at the keys.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Stops it (SIGKILL).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// One `cohost` node of a cluster.
pub struct Node {
    child: Option<tokio::process::Child>,
    /// Its id.
    pub id: String,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Its media ports.
    pub udp: (u16, u16),
}

impl Node {
    /// Starts node `id` of the fleet on `redis`, with `extra` flags, and waits for it.
    pub async fn start(bin: &str, redis: &Redis, id: &str, n: u16, extra: &[&str]) -> Node {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        // Its own 100 ports: per test binary, and per node started in it (tests run in
        // parallel within a binary).
        let _ = n;
        let slot = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12;
        let first = 30000 + (std::process::id() % 20) as u16 * 1200 + slot * 100;
        let udp = (first, first + 99);
        let mut args: Vec<String> = [
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            API_KEY,
            "--api-secret",
            API_SECRET,
            "--media-ip",
            "127.0.0.1",
            "--udp-ports",
            &format!("{}-{}", udp.0, udp.1),
            "--redis-url",
            &redis.url(),
            "--node-id",
            id,
            "--advertise-url",
            &base,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = tokio::process::Command::new(bin)
            .args(&args)
            .env(
                "COHOST_LOG",
                std::env::var("COHOST_TEST_LOG").unwrap_or("error".into()),
            )
            .kill_on_drop(true)
            .spawn()
            .expect("cohost binary");
        let node = Node {
            child: Some(child),
            id: id.to_owned(),
            base,
            udp,
        };
        crate::wait_healthy(&reqwest::Client::new(), &node.base).await;
        node
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to it.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// Waits for it to exit; its status code.
    pub async fn wait(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        c.wait().await.ok()?.code()
    }

    /// A participant token minted by this node.
    pub async fn token(&self, room: &str, identity: &str, role: &str) -> String {
        let v: Value = reqwest::Client::new()
            .post(self.url("/api/tokens"))
            .bearer_auth(API_KEY)
            .json(&json!({"room": room, "identity": identity, "role": role}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    /// `GET path` with the API key: (status, JSON body or null).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or(Value::Null))
    }

    /// `method path` with the API key and a JSON body: (status, JSON body or null).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or(Value::Null))
    }
}
