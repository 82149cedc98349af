//! Cluster mode with the real thing: a `redis-server` of the test's own and three `cohost`
//! binaries on loopback, each with its own UDP range. Any node answers; a room lives on one
//! node; media goes straight to the owner.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use testkit as common;
use testkit::cluster::{Node, Redis};
use testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_cohost");

async fn fleet(redis: &Redis, extra: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        nodes.push(Node::start(BIN, redis, id, i as u16, extra).await);
    }
    // Every node registered (first heartbeat before serving).
    let (st, v) = nodes[0].get("/api/nodes").await;
    assert_eq!(st, 200, "{v}");
    let ids: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n2", "n3"], "{v}");
    nodes
}

/// The ports of the `a=candidate` lines of an SDP.
fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
        .collect()
}

async fn owner_of(node: &Node, room: &str) -> String {
    let (st, v) = node.get(&format!("/api/rooms/{room}")).await;
    assert_eq!(st, 200, "{v}");
    v["node"].as_str().expect("node field").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_and_media_goes_to_the_owner() {
    common::init_tracing();
    let redis = Redis::start().await;
    let nodes = fleet(&redis, &[]).await;
    let room = "fleet-a";

    // WHIP to node 2: the room is placed on some node, whose candidates answer.
    let token = nodes[0].token(room, "alice", "guest").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "alice").await;
    let offer = peer.offer().await;
    let (st, loc, answer) = post_sdp(&nodes[1].url(&format!("/whip/{room}")), &token, &offer).await;
    assert_eq!(st, 201, "{answer}");
    let loc = loc.expect("Location");
    assert!(loc.starts_with(&format!("/whip/{room}/")), "{loc}");
    peer.set_answer(&answer).await;
    let stop = Arc::new(AtomicBool::new(false));
    sender.spawn(320, 240, 60.0, stop.clone());

    let owner = owner_of(&nodes[2], room).await;
    for n in &nodes {
        assert_eq!(
            owner_of(n, room).await,
            owner,
            "every node names the same owner"
        );
    }
    let owner_node = nodes.iter().find(|n| n.id == owner).unwrap();
    let ports = candidate_ports(&answer);
    assert!(!ports.is_empty(), "{answer}");
    assert!(
        ports
            .iter()
            .all(|p| (owner_node.udp.0..=owner_node.udp.1).contains(p)),
        "the answer's candidates are the owner's ({:?}): {ports:?}",
        owner_node.udp
    );

    // WHEP of that co-host through node 3 decodes the pictures.
    let viewer = nodes[2].token(room, "bob", "guest").await;
    let mut sub = client_peer().await;
    sub.add_recv().await;
    let offer = sub.offer().await;
    let mut tries = 0;
    let (sloc, sanswer) = loop {
        let (st, loc, body) = post_sdp(
            &nodes[2].url(&format!("/whep/{room}/alice")),
            &viewer,
            &offer,
        )
        .await;
        if st == 201 {
            break (loc.unwrap(), body);
        }
        tries += 1;
        assert!(tries < 60, "WHEP through node 3: {st} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sub.set_answer(&sanswer).await;
    let (video, _audio) = collect_both(&mut sub).await;
    eventually("pictures through the owner", 15, || {
        decoded_at(&video, (320, 240)) >= 30
    })
    .await;
    assert!(candidate_ports(&sanswer)
        .iter()
        .all(|p| (owner_node.udp.0..=owner_node.udp.1).contains(p)));

    // The session's Location works on the node the client used (node 3), and on another.
    let st = delete(&nodes[0].url(&sloc), &viewer).await;
    assert_eq!(st, 200, "DELETE of the WHEP session through node 1");
    let st = delete(&nodes[1].url(&loc), &token).await;
    assert_eq!(st, 200, "DELETE of the WHIP session through node 2");

    // The cluster's room list: every room once, with its node.
    let (st, v) = nodes[1].get("/api/rooms").await;
    assert_eq!(st, 200);
    let rooms: Vec<&Value> = v["rooms"].as_array().unwrap().iter().collect();
    let mine: Vec<&&Value> = rooms.iter().filter(|r| r["name"] == room).collect();
    assert!(mine.len() <= 1, "{v}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_hosts_joining_through_different_nodes_see_each_other() {
    common::init_tracing();
    let redis = Redis::start().await;
    let nodes = fleet(&redis, &[]).await;
    let room = "fleet-ws";
    let ws_url = |n: &Node, t: &str| format!("{}/ws?token={t}", n.base.replacen("http", "ws", 1));
    let mut host = Ws::connect_url(&ws_url(
        &nodes[0],
        &nodes[0].token(room, "host", "host").await,
    ))
    .await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;
    let mut guest = Ws::connect_url(&ws_url(
        &nodes[1],
        &nodes[1].token(room, "guest", "guest").await,
    ))
    .await;
    guest.send(json!({"type": "join"}));
    let joined = guest.wait_type("joined").await;
    let names: Vec<&str> = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"host"), "the guest sees the host: {joined}");
    host.wait("the guest joining", |v| {
        v["type"] == "participant_joined" && v["participant"]["identity"] == "guest"
    })
    .await;
    let mut third = Ws::connect_url(&ws_url(
        &nodes[2],
        &nodes[2].token(room, "viewer", "viewer").await,
    ))
    .await;
    third.send(json!({"type": "join"}));
    third.wait_type("joined").await;
    host.wait("the viewer joining", |v| {
        v["type"] == "participant_joined" && v["participant"]["identity"] == "viewer"
    })
    .await;
    let (_, info) = nodes[2].get(&format!("/api/rooms/{room}")).await;
    assert_eq!(
        info["participants"].as_array().map(Vec::len),
        Some(3),
        "{info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_is_atomic_and_spreads_rooms_over_free_slots() {
    common::init_tracing();
    let redis = Redis::start().await;
    let nodes = fleet(&redis, &["--max-programs", "1"]).await;

    // 20 concurrent first requests for one room, through all three nodes: one owner.
    let mut asks = Vec::new();
    for i in 0..20 {
        let base = nodes[i % 3].base.clone();
        asks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/rooms"))
                .bearer_auth(API_KEY)
                .json(&json!({"name": "contested"}))
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (st, v["node"].as_str().map(str::to_owned))
        }));
    }
    let mut owners = std::collections::BTreeSet::new();
    for a in asks {
        let (st, node) = a.await.unwrap();
        assert_eq!(st, 201);
        owners.insert(node.expect("node in the created room"));
    }
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
    let mut c = redis.conn().await;
    let epoch: u64 = redis::cmd("GET")
        .arg("cohost:epoch:contested")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(epoch, 1, "claimed once");
    let owner = owners.iter().next().unwrap().clone();

    // With one program slot per node, two more rooms land on the two other nodes.
    let mut placed = owners.clone();
    for room in ["spread-1", "spread-2"] {
        let (st, v) = nodes[0]
            .send(Method::POST, "/api/rooms", json!({"name": room}))
            .await;
        assert_eq!(st, 201, "{v}");
        placed.insert(v["node"].as_str().unwrap().to_owned());
    }
    assert_eq!(placed.len(), 3, "three rooms on three nodes: {placed:?}");
    // The cluster's list has all three, each once, with its node.
    let (_, v) = nodes[2].get("/api/rooms").await;
    let listed: Vec<(&str, &str)> = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["node"].as_str().unwrap()))
        .collect();
    assert_eq!(listed.len(), 3, "{v}");
    // The owners renew their leases (they learned them from the forwarded requests): past
    // a lease's life the rooms are still theirs, same epoch, and their state is saved.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let lease: Option<String> = redis::cmd("GET")
        .arg("cohost:room:contested")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(lease, Some(format!("{owner}|1")));
    for room in ["contested", "spread-1", "spread-2"] {
        let state: Option<String> = redis::cmd("GET")
            .arg(format!("cohost:state:{room}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(state.is_some(), "{room}'s state saved");
    }
    // Each node's record says so at its next heartbeat (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let (_, nv) = nodes[1].get("/api/nodes").await;
        let list = nv["nodes"].as_array().unwrap();
        assert!(list.iter().all(|n| n["state"] == "serving"), "{nv}");
        if list.iter().all(|n| n["free_slots"] == 0 && n["rooms"] == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "records not updated: {nv}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_room_comes_back_with_its_state() {
    common::init_tracing();
    if let Some(why) = testkit::nginx::missing_tools() {
        panic!("{why}");
    }
    let redis = Redis::start().await;
    let mut nodes = fleet(&redis, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let rtmp_port = testkit::nginx::free_port();
    let nginx = testkit::nginx::Nginx::start(dir.path(), rtmp_port);
    let room = "fleet-kill";

    // An API room with a layout and an RTMP output, fed by a WHIP co-host.
    let owner = create_room(&nodes[0], room, Duration::from_secs(5)).await;
    let (st, v) = nodes[1]
        .send(
            Method::PUT,
            &format!("/api/rooms/{room}/layout"),
            json!({"template": "speaker"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, out) = nodes[2]
        .send(
            Method::POST,
            &format!("/api/rooms/{room}/outputs"),
            json!({"url": format!("rtmp://127.0.0.1:{rtmp_port}/live/fleetkill")}),
        )
        .await;
    assert_eq!(st, 201, "{out}");
    let out_id = out["id"].as_str().unwrap().to_owned();
    let token = nodes[0].token(room, "alice", "host").await;
    let publish = |n: &Node| whip_co_host(n.url(&format!("/whip/{room}")), token.clone());
    let (st, body, _first) = publish(&nodes[0]).await;
    assert_eq!(st, 201, "{body}");
    let publishes = || nginx.log().matches("publish: name='fleetkill'").count();
    eventually("nginx fed by the first owner", 20, || publishes() >= 1).await;

    // The audience's HLS, through a node that is not the owner.
    let i = nodes.iter().position(|n| n.id == owner).unwrap();
    let hls = format!("/live/{room}/index.m3u8");
    let http = reqwest::Client::new();
    let playlist = |n: &Node| {
        let (http, url) = (http.clone(), n.url(&hls));
        async move {
            let r = http.get(url).send().await.ok()?;
            if r.status() != 200 {
                return None;
            }
            r.text().await.ok()
        }
    };
    let last_seq = |p: &str| {
        p.lines()
            .filter_map(|l| {
                l.strip_prefix("seg")?
                    .strip_suffix(".ts")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
    };
    let watcher = &nodes[(i + 2) % 3];
    let started = Instant::now();
    let seen = loop {
        if let Some(s) = playlist(watcher).await.as_deref().and_then(last_seq) {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no HLS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A cue, answered by the first owner.
    let (st, cue) = nodes[(i + 1) % 3]
        .send(
            Method::POST,
            &format!("/api/rooms/{room}/cues"),
            json!({"id": "coupon-1", "data": {"kind": "coupon"}}),
        )
        .await;
    assert_eq!(st, 202, "{cue}");
    // A heartbeat saves the position.
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[i].signal("KILL");
    nodes[i].wait().await;
    let killed = Instant::now();
    let other = &nodes[(i + 1) % 3];
    // A read through a living node brings the room back once the dead node's lease ends.
    let room_back = loop {
        let (st, v) = other.get(&format!("/api/rooms/{room}")).await;
        if st == 200 && v["node"] != owner.as_str() {
            break v;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "not placed again within 15 s: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        room_back["media"]["program"]["layout"]["template"],
        "speaker"
    );
    // The co-host's WHIP POST again, through a living node.
    let (served, _second) = loop {
        let (st, body, peer) = publish(other).await;
        if st == 201 {
            break (killed.elapsed(), peer);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "not placed again within 15 s: {st} {body}"
        );
        assert_eq!(st, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let new_owner = owner_of(other, room).await;
    assert_ne!(new_owner, owner);
    eprintln!("failover: served again {served:?} after SIGKILL, on {new_owner}");
    // Its layout and output (same id) came back, and nginx is fed again.
    let (_, info) = other.get(&format!("/api/rooms/{room}")).await;
    let program = &info["media"]["program"];
    assert_eq!(program["layout"]["template"], "speaker", "{info}");
    let ids: Vec<&str> = program["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [out_id.as_str()], "{info}");
    eventually("nginx fed by the new owner", 20, || publishes() >= 2).await;
    // HLS goes on: numbers move forward, a discontinuity marks the change of node.
    let deadline = Instant::now() + Duration::from_secs(20);
    let p = loop {
        if let Some(p) = playlist(other).await {
            break p;
        }
        assert!(Instant::now() < deadline, "no HLS after the failover");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let first: u64 = p
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(first > seen, "media sequence {first} after {seen}: {p}");
    assert!(p.contains("#EXT-X-DISCONTINUITY"), "{p}");
    // The cue retried after the move gets its first answer, not a second cue.
    let (st, again) = other
        .send(
            Method::POST,
            &format!("/api/rooms/{room}/cues"),
            json!({"id": "coupon-1", "data": {"kind": "coupon"}}),
        )
        .await;
    assert_eq!((st, &again["pts_ms"]), (200, &cue["pts_ms"]), "{again}");
    // The stream key is not in Redis in the clear.
    let mut c = redis.conn().await;
    let state: String = redis::cmd("GET")
        .arg(format!("cohost:state:{room}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!state.contains("fleetkill"), "{state}");
    assert!(state.contains("speaker"), "{state}");
    assert!(
        state.contains("\"mutes\""),
        "the host's mutes travel too: {state}"
    );
}

/// A WHIP co-host "alice" posting to `url`; once answered it sends 320x240 media for a
/// minute. (status, answer or error body, its peer).
async fn whip_co_host(url: String, token: String) -> (u16, String, ClientPeer) {
    let peer = client_peer().await;
    let sender = add_sender(&peer, "alice").await;
    let offer = peer.offer().await;
    let (st, _, body) = post_sdp(&url, &token, &offer).await;
    if st == 201 {
        peer.set_answer(&body).await;
        sender.spawn(320, 240, 60.0, Arc::new(AtomicBool::new(false)));
    }
    (st, body, peer)
}

fn ws_url(n: &Node, token: &str) -> String {
    format!("{}/ws?token={token}", n.base.replacen("http", "ws", 1))
}

/// Creates `room` through `via` until it is answered (a new placement may wait for a dead
/// node's lease); its node.
async fn create_room(via: &Node, room: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let (st, v) = via
            .send(Method::POST, "/api/rooms", json!({"name": room}))
            .await;
        if st == 201 {
            return v["node"].as_str().unwrap().to_owned();
        }
        assert!(
            start.elapsed() < within,
            "room `{room}` not placed: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_lost_its_lease_stops_the_room() {
    common::init_tracing();
    let redis = Redis::start().await;
    let nodes = fleet(&redis, &[]).await;
    let room = "fleet-stop";
    let owner = create_room(&nodes[0], room, Duration::from_secs(5)).await;
    let old = nodes.iter().find(|n| n.id == owner).unwrap();
    let mut host = Ws::connect_url(&ws_url(old, &old.token(room, "host", "host").await)).await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;

    old.signal("STOP");
    let other = nodes.iter().find(|n| n.id != owner).unwrap();
    let paused = Instant::now();
    // Past its lease, the room is placed on a living node.
    let taken = loop {
        let (st, v) = other
            .send(Method::POST, "/api/rooms", json!({"name": room}))
            .await;
        if st == 201 && v["node"] != owner.as_str() {
            break v["node"].as_str().unwrap().to_owned();
        }
        assert!(
            paused.elapsed() < Duration::from_secs(15),
            "not taken over: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    old.signal("CONT");
    // Its next renewal finds the lease someone else's: the room stops there at once.
    let moved = host
        .wait("room_moved", |v| {
            v["type"] == "error" && v["code"] == "room_moved"
        })
        .await;
    assert_eq!(moved["code"], "room_moved");
    assert_eq!(
        owner_of(old, room).await,
        taken,
        "the old node forwards to the new owner"
    );
    let mut c = redis.conn().await;
    let lease: String = redis::cmd("GET")
        .arg(format!("cohost:room:{room}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(lease.starts_with(&format!("{taken}|")), "{lease}");
    assert!(!lease.ends_with("|1"), "a larger epoch: {lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits() {
    common::init_tracing();
    let redis = Redis::start().await;
    let mut nodes = fleet(&redis, &["--drain-timeout", "30"]).await;
    let room = "fleet-drain";
    let owner = create_room(&nodes[0], room, Duration::from_secs(5)).await;
    let i = nodes.iter().position(|n| n.id == owner).unwrap();
    let mut host = Ws::connect_url(&ws_url(
        &nodes[i],
        &nodes[i].token(room, "host", "host").await,
    ))
    .await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;

    nodes[i].signal("TERM");
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let st = http
            .get(nodes[i].url("/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if st == 503 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "/healthz {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, nv) = nodes[i].get("/api/nodes").await;
    let me = nv["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == owner.as_str())
        .cloned();
    assert_eq!(
        me.map(|n| n["state"].clone()),
        Some(json!("draining")),
        "{nv}"
    );
    // A new room asked of the draining node goes elsewhere; its room goes on.
    let placed = create_room(&nodes[i], "fleet-drain-new", Duration::from_secs(5)).await;
    assert_ne!(placed, owner);
    assert_eq!(owner_of(&nodes[i], room).await, owner);
    // The last participant leaves: the node exits, 0.
    host.close();
    let code = tokio::time::timeout(Duration::from_secs(15), nodes[i].wait())
        .await
        .expect("the drained node exits");
    assert_eq!(code, Some(0));
    let (_, nv) = nodes[(i + 1) % 3].get("/api/nodes").await;
    assert_eq!(
        nv["nodes"].as_array().unwrap().len(),
        2,
        "it left the fleet: {nv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_go_on_without_redis_and_the_fleet_recovers() {
    common::init_tracing();
    let mut redis = Redis::start().await;
    let nodes = fleet(&redis, &[]).await;
    let room = "fleet-redis";
    let owner = create_room(&nodes[0], room, Duration::from_secs(5)).await;
    let o = nodes.iter().find(|n| n.id == owner).unwrap();
    let mut host = Ws::connect_url(&ws_url(o, &o.token(room, "host", "host").await)).await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;

    redis.kill().await;
    // A new room cannot be placed: 503 with the reason.
    let (st, v) = nodes[1]
        .send(
            Method::POST,
            "/api/rooms",
            json!({"name": "fleet-redis-new"}),
        )
        .await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "cluster_unavailable", "{v}");
    // The running room goes on at its node: its API answers, its host stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, v) = o.get(&format!("/api/rooms/{room}")).await;
    assert_eq!(st, 200, "{v}");
    host.send(json!({"type": "set_layout", "layout": {"template": "grid"}}));
    host.wait("the layout while Redis is down", |v| {
        v["type"] == "layout_changed"
    })
    .await;
    assert!(
        !host.seen_any(|v| v["code"] == "room_moved"),
        "the room was not stopped"
    );

    // Redis returns (empty): the nodes register again, the owner takes its lease back.
    redis.restart().await;
    let created = create_room(&nodes[1], "fleet-redis-new", Duration::from_secs(15)).await;
    assert!(!created.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, nv) = nodes[2].get("/api/nodes").await;
        let back = nv["nodes"].as_array().map(Vec::len) == Some(3);
        let (st, info) = nodes[2].get(&format!("/api/rooms/{room}")).await;
        if back && st == 200 && info["node"] == owner.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {nv} {info}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rtmp_publisher_at_a_time_across_a_pause() {
    common::init_tracing();
    if let Some(why) = testkit::nginx::missing_tools() {
        panic!("{why}");
    }
    let redis = Redis::start().await;
    let nodes = fleet(&redis, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let rtmp_port = testkit::nginx::free_port();
    let nginx = testkit::nginx::Nginx::start(dir.path(), rtmp_port);
    let room = "fleet-fence";
    let owner = create_room(&nodes[0], room, Duration::from_secs(5)).await;
    let (st, out) = nodes[1]
        .send(
            Method::POST,
            &format!("/api/rooms/{room}/outputs"),
            json!({"url": format!("rtmp://127.0.0.1:{rtmp_port}/live/fence")}),
        )
        .await;
    assert_eq!(st, 201, "{out}");
    let token = nodes[0].token(room, "alice", "host").await;
    let publish = |n: &Node| {
        let ask = whip_co_host(n.url(&format!("/whip/{room}")), token.clone());
        async move {
            let (st, _, peer) = ask.await;
            (st, peer)
        }
    };
    let old = nodes.iter().find(|n| n.id == owner).unwrap();
    let (st, _first) = publish(old).await;
    assert_eq!(st, 201);
    // Publications nginx took (a refused one is logged `already publishing`).
    let publishes = || {
        let log = nginx.log();
        log.matches("publish: name='fence'").count() - log.matches("already publishing").count()
    };
    eventually("nginx fed by the first owner", 20, || publishes() >= 1).await;

    // The owner pauses past its lease; another node takes the room and its output, but
    // nginx still has the paused node's publisher: the new one is refused meanwhile.
    old.signal("STOP");
    let other = nodes.iter().find(|n| n.id != owner).unwrap();
    let paused = Instant::now();
    let _second = loop {
        let (st, peer) = publish(other).await;
        if st == 201 {
            break peer;
        }
        assert!(
            paused.elapsed() < Duration::from_secs(15),
            "not taken over: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eventually("the new owner's output trying", 15, || {
        nginx.log().contains("already publishing")
    })
    .await;
    assert_eq!(
        publishes(),
        1,
        "one publisher at nginx while the old one holds the stream:\n{}",
        nginx.log()
    );
    // Resumed, the old node finds its lease gone and stops the room and its output: the new
    // owner's output gets the stream.
    old.signal("CONT");
    eventually("the new owner publishing", 30, || publishes() >= 2).await;
    let (_, info) = other.get(&format!("/api/rooms/{room}")).await;
    assert_ne!(info["node"], owner.as_str(), "{info}");
    assert_eq!(owner_of(old, room).await, info["node"].as_str().unwrap());
}

/// The names in `GET /api/images` of `node`.
async fn image_names(node: &Node) -> Vec<String> {
    let (st, v) = node.get("/api/images").await;
    assert_eq!(st, 200, "{v}");
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_uploaded_to_one_node_reaches_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("logo.png");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=32x16",
        ])
        .args(["-frames:v", "1"])
        .arg(&png)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: ffmpeg not installed (scripts/test.sh installs it)");
        return;
    }
    let redis = Redis::start().await;
    let nodes = fleet(&redis, &[]).await;
    let http = reqwest::Client::new();
    let r = http
        .put(nodes[0].url("/api/images/logo"))
        .bearer_auth(API_KEY)
        .body(std::fs::read(&png).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The others take it at their next heartbeat (2 s).
    for n in &nodes[1..] {
        let deadline = Instant::now() + Duration::from_secs(8);
        while image_names(n).await != ["logo"] {
            assert!(Instant::now() < deadline, "{} never got the image", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A node started later gets the library too.
    let late = Node::start(BIN, &redis, "n4", 3, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while image_names(&late).await != ["logo"] {
        assert!(
            Instant::now() < deadline,
            "the late node never got the image"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Removed through another node, it goes everywhere.
    let r = http
        .delete(nodes[2].url("/api/images/logo"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for n in nodes.iter().chain([&late]) {
        let deadline = Instant::now() + Duration::from_secs(8);
        while !image_names(n).await.is_empty() {
            assert!(Instant::now() < deadline, "{} kept the image", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
