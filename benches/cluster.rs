//! Cluster mode, measured (`cargo bench --bench cluster`; results in
//! `benches/RESULTS-cluster.md`).
//!
//! 1. **Three real nodes** (`cohost` binaries, `COHOST_BIN` or `target/release/cohost`, else
//!    the test build) on one `redis-server`: placement latency (the first request for a new
//!    room, `POST /api/rooms`, through a node that is not the one chosen), the cost of a
//!    proxied request (`GET /api/rooms/{room}` through another node vs the owner directly, same
//!    run), failover (SIGKILL of a room's owner → the room answered again through a living
//!    node).
//! 2. **A simulated fleet**: `CLUSTER_SIM_NODES` (default 1000) nodes running the real
//!    `RedisCluster` code (heartbeats, leases, placement) as tasks against one local Redis,
//!    `CLUSTER_SIM_ROOMS` rooms each (default 8), no media. After `CLUSTER_SIM_SECS` of steady
//!    state 5 % of the nodes are killed (their tasks stop): Redis commands/s and CPU, keys,
//!    placement p50/p99, re-homing p50/p99, double owners (must be 0).
//!
//! `CLUSTER_BENCH_ONLY=nodes|sim` runs one part.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohost::cluster::{Cluster, ClusterConfig, NodeHooks, Placement, RedisCluster};
use serde_json::json;
use testkit::cluster::{Node, Redis};
use testkit::API_KEY;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn binary() -> String {
    if let Ok(b) = std::env::var("COHOST_BIN") {
        return b;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for p in ["target/release/cohost", "target/debug/cohost"] {
        let path = format!("{root}/{p}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("build the binary first: cargo build --release --bin cohost");
}

async fn timed_get(http: &reqwest::Client, url: &str) -> f64 {
    let t = Instant::now();
    let r = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.bytes().await;
    t.elapsed().as_secs_f64() * 1e3
}

async fn real_nodes() {
    let bin = binary();
    println!("## Three nodes ({bin})\n");
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        nodes.push(Node::start(&bin, &redis, id, i as u16, &[]).await);
    }
    let http = reqwest::Client::new();
    // Placement: new rooms through n1; those placed elsewhere went through a non-owner.
    let n = env_or("CLUSTER_BENCH_ROOMS", 300usize);
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    for i in 0..n {
        let room = format!("bench-{i}");
        let t = Instant::now();
        let r = http
            .post(nodes[0].url("/api/rooms"))
            .bearer_auth(API_KEY)
            .json(&json!({"name": room}))
            .send()
            .await
            .unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(r.status().as_u16(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        if v["node"] == "n1" {
            local.push(ms);
        } else {
            remote.push(ms);
        }
    }
    println!(
        "placement (POST /api/rooms, new room): through a non-owner p50 {:.2} ms p99 {:.2} ms (n={}); placed on the node asked p50 {:.2} ms p99 {:.2} ms (n={})",
        pct(&mut remote.clone(), 0.5),
        pct(&mut remote.clone(), 0.99),
        remote.len(),
        pct(&mut local.clone(), 0.5),
        pct(&mut local.clone(), 0.99),
        local.len()
    );
    // Proxy overhead: the same GET at the owner and through another node, interleaved.
    let (_, v) = nodes[0].get("/api/rooms/bench-0").await;
    let owner = v["node"].as_str().unwrap().to_owned();
    let o = nodes.iter().position(|n| n.id == owner).unwrap();
    let via = (o + 1) % 3;
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..500 {
        direct.push(timed_get(&http, &nodes[o].url("/api/rooms/bench-0")).await);
        proxied.push(timed_get(&http, &nodes[via].url("/api/rooms/bench-0")).await);
    }
    let (d50, p50) = (pct(&mut direct, 0.5), pct(&mut proxied, 0.5));
    println!(
        "GET /api/rooms/{{room}}: at the owner p50 {d50:.2} ms p99 {:.2} ms; through another node p50 {p50:.2} ms p99 {:.2} ms; proxy overhead p50 {:.2} ms",
        pct(&mut direct, 0.99),
        pct(&mut proxied, 0.99),
        p50 - d50
    );
    // Failover: SIGKILL the owner of bench-0; the room answers again through another node.
    let mut rc = redis.conn().await;
    let saved: Option<String> = redis::cmd("GET")
        .arg("cohost:state:bench-0")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(saved.is_some(), "bench-0's state is saved before the kill");
    let t = Instant::now();
    nodes[o].signal("KILL");
    let _ = nodes[o].wait().await;
    let served = loop {
        let r = http
            .put(nodes[via].url("/api/rooms/bench-0/layout"))
            .bearer_auth(API_KEY)
            .json(&json!({"template": "grid"}))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        if st == 200 {
            break t.elapsed();
        }
        let body = r.text().await.unwrap_or_default();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no failover: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "failover: SIGKILL of the owner → the room answered again through a living node after {:.2} s (lease 6 s, heartbeat 2 s)\n",
        served.as_secs_f64()
    );
}

/// One simulated node: the real cluster code, rooms as a set.
struct SimNode {
    cluster: Arc<RedisCluster>,
    rooms: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn sim_node(url: &str, id: &str, per_node: usize) -> SimNode {
    let mut cfg = ClusterConfig::new(
        url,
        id,
        &format!("http://{id}.sim"),
        "sim-secret-0123456789",
    );
    cfg.max_programs = per_node * 2;
    let cluster = RedisCluster::connect(cfg).await.unwrap();
    let rooms: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (r1, r2) = (rooms.clone(), rooms.clone());
    let hooks = NodeHooks {
        load: Box::new(move || (r1.lock().unwrap().len(), 0, 0.0)),
        has_room: Box::new(move |room| r2.lock().unwrap().contains(room)),
        lost: Box::new(|_| {}),
        snapshot: Box::new(|_| None),
        restore: Box::new(|_, _| Box::pin(async {})),
        image: Box::new(|_, _| {}),
    };
    let task = cluster.start(hooks).await;
    SimNode {
        cluster,
        rooms,
        task,
    }
}

/// Places `room` from `front` as a request would: the owner learns it when the forwarded
/// request reaches it. The owner's index.
async fn place(nodes: &[SimNode], ids: &[String], front: usize, room: &str) -> Option<usize> {
    match nodes[front].cluster.locate(room).await {
        Ok(Placement::Here { .. }) => {
            nodes[front].rooms.lock().unwrap().insert(room.to_owned());
            Some(front)
        }
        Ok(Placement::There { node, .. }) => {
            let i = ids.iter().position(|id| *id == node)?;
            if let Ok(Some(Placement::Here { .. })) = nodes[i].cluster.owner(room).await {
                nodes[i].rooms.lock().unwrap().insert(room.to_owned());
            }
            Some(i)
        }
        Err(_) => None,
    }
}

fn redis_stats(c: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
    let cmds = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let keys: u64 = redis::cmd("DBSIZE").query(c).unwrap();
    (cmds, keys)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

async fn simulation() {
    let n = env_or("CLUSTER_SIM_NODES", 1000usize);
    let per = env_or("CLUSTER_SIM_ROOMS", 8usize);
    let secs = env_or("CLUSTER_SIM_SECS", 20u64);
    println!("## Simulated fleet: {n} nodes × {per} rooms\n");
    let redis = Redis::start().await;
    let url = redis.url();
    let ids: Vec<String> = (0..n).map(|i| format!("sim{i:04}")).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        nodes.push(sim_node(&url, id, per).await);
    }
    let mut places = Vec::new();
    for r in 0..n * per {
        let room = format!("room{r:05}");
        let front = rand::random::<usize>() % n;
        let t = Instant::now();
        assert!(place(&nodes, &ids, front, &room).await.is_some(), "{room}");
        places.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "placement of {} rooms (locate from a random node): p50 {:.2} ms p99 {:.2} ms",
        places.len(),
        pct(&mut places.clone(), 0.5),
        pct(&mut places, 0.99)
    );
    // Steady state.
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let pid = redis_pid(redis.port);
    let (c0, _) = redis_stats(&mut c);
    let t0 = cpu_ticks(pid);
    let w = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, keys) = redis_stats(&mut c);
    let t1 = cpu_ticks(pid);
    let el = w.elapsed().as_secs_f64();
    let hz = 100.0;
    println!(
        "steady state over {el:.0} s: Redis {:.0} commands/s, CPU {:.1} % of one core, {keys} keys",
        (c1 - c0) as f64 / el,
        (t1 - t0) as f64 / hz / el * 100.0
    );
    // Kill 5 %.
    let killed: Vec<usize> = (0..n).filter(|i| i % 20 == 7).collect();
    let orphans: Vec<String> = killed
        .iter()
        .flat_map(|&i| {
            nodes[i]
                .rooms
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    for &i in &killed {
        nodes[i].task.abort();
    }
    let dead: HashSet<usize> = killed.iter().copied().collect();
    let at = Instant::now();
    let mut rehome = Vec::new();
    let mut pending: Vec<String> = orphans.clone();
    while !pending.is_empty() {
        let mut left = Vec::new();
        for room in pending {
            let front = loop {
                let f = rand::random::<usize>() % n;
                if !dead.contains(&f) {
                    break f;
                }
            };
            match place(&nodes, &ids, front, &room).await {
                Some(owner) if !dead.contains(&owner) => rehome.push(at.elapsed().as_secs_f64()),
                _ => left.push(room),
            }
        }
        pending = left;
        if !pending.is_empty() {
            assert!(at.elapsed() < Duration::from_secs(60), "re-homing stuck");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "killed {} nodes ({} rooms): re-homed p50 {:.2} s p99 {:.2} s after the kill",
        killed.len(),
        orphans.len(),
        pct(&mut rehome.clone(), 0.5),
        pct(&mut rehome, 0.99)
    );
    // Double owners: after a heartbeat, no room is held by two living nodes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut double = 0;
    for r in 0..n * per {
        let room = format!("room{r:05}");
        let holders = (0..n)
            .filter(|i| !dead.contains(i) && nodes[*i].cluster.holds(&room))
            .count();
        if holders > 1 {
            double += 1;
        }
    }
    println!("double owners: {double}\n");
    for nd in &nodes {
        nd.task.abort();
    }
}

fn redis_pid(port: u16) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("redis-server 127.0.0.1:{port}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("CLUSTER_BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        if only.is_empty() || only == "nodes" {
            real_nodes().await;
        }
        if only.is_empty() || only == "sim" {
            simulation().await;
        }
    });
}
