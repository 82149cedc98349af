//! Seats, names, mutes and roles against clients that push them (issue 11, item 5): viewers
//! cannot take the host's seat, the token's name wins and names are bounded, a muted guest
//! stays muted when it reconnects, `replaced` reaches the replaced socket, viewers watch the
//! program (no co-host tracks over the WebSocket either), and one identity cannot open
//! unbounded WHEP sessions. A room beside it keeps decoding its program throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn mint(s: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/api/tokens"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_names_mutes_and_roles_hold_against_pushy_clients() {
    let s = start_server_with(|c| {
        c.signaling.room_limits.viewers = 5;
        c.signaling.max_subscriptions_per_identity = 2;
    })
    .await;
    // The healthy room beside.
    let (_hp, _hl, _hs) = whip_publish(&s, "healthy", "anchor", "host", 320, 240).await;
    let fan = s.token("healthy", "fan", "viewer").await;
    let mut prog = whep_program(&s, "healthy", &fan).await;
    let (pv, _pa) = collect_both(&mut prog).await;
    eventually("healthy program", 15, || decoded_at(&pv, (1280, 720)) > 10).await;
    let before = decoded_at(&pv, (1280, 720));

    // Viewers fill their seats; the host still gets in.
    let mut viewers = Vec::new();
    for i in 0..5 {
        let mut v = Ws::connect(&s, &s.token("r", &format!("v{i}"), "viewer").await).await;
        v.send(json!({"type": "join"}));
        v.wait_type("joined").await;
        viewers.push(v);
    }
    let mut extra = Ws::connect(&s, &s.token("r", "v5", "viewer").await).await;
    extra.send(json!({"type": "join"}));
    assert_eq!(extra.wait_type("error").await["code"], "room_full");
    let mut host = Ws::connect(&s, &s.token("r", "hank", "host").await).await;
    host.send(json!({"type": "join"}));
    host.wait_type("joined").await;

    // The token's name wins over the one in `join`; names are bounded.
    let (st, t) = mint(
        &s,
        json!({"room": "r", "identity": "gina", "role": "guest", "name": "Gina"}),
    )
    .await;
    assert_eq!(st, 200);
    let gtoken = t["token"].as_str().unwrap().to_owned();
    let mut g = Ws::connect(&s, &gtoken).await;
    g.send(json!({"type": "join", "name": "HANK (the host)"}));
    let j = g.wait_type("joined").await;
    assert_eq!(j["you"]["name"], "Gina");
    let mut nameless = Ws::connect(&s, &s.token("r", "nn", "guest").await).await;
    nameless.send(json!({"type": "join", "name": "n".repeat(60_000)}));
    let e = nameless.wait_type("error").await;
    assert_eq!(e["code"], "bad_name");
    assert!(e["message"].as_str().unwrap().len() < 200);
    nameless.forget();
    nameless.send(json!({"type": "join", "name": "N".repeat(65)}));
    assert_eq!(nameless.wait_type("error").await["code"], "bad_name");
    nameless.send(json!({"type": "join", "name": "小明"}));
    assert_eq!(nameless.wait_type("joined").await["you"]["name"], "小明");
    // Identities and names with control characters are refused at minting.
    let (st, e) = mint(
        &s,
        json!({"room": "r", "identity": "eve\n2026-12-03 INFO forged", "role": "guest"}),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("bad_identity"))
    );
    let (st, e) = mint(
        &s,
        json!({"room": "r", "identity": "eve", "role": "guest", "name": "\u{1b}[31mred"}),
    )
    .await;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("bad_name")));

    // A muted guest reconnects: still muted. The replaced socket hears `replaced`, not the new.
    host.send(json!({"type": "mute", "identity": "gina", "kind": "audio", "muted": true}));
    g.wait("muted", |v| {
        v["type"] == "participant_updated"
            && v["participant"]["identity"] == "gina"
            && v["participant"]["audio_muted"] == true
    })
    .await;
    let mut g2 = Ws::connect(&s, &gtoken).await;
    g2.send(json!({"type": "join"}));
    let j = g2.wait_type("joined").await;
    assert_eq!(
        j["you"]["audio_muted"], true,
        "a rejoin undid the host's mute"
    );
    assert_eq!(g.wait_type("error").await["code"], "replaced");
    tokio::time::sleep(Duration::from_millis(300)).await;
    g2.forget();
    assert!(
        !g2.seen.iter().any(|v| v["code"] == "replaced"),
        "the new socket was told it was replaced"
    );

    // Viewers watch the program: no co-host's own tracks, over WHEP or the WebSocket.
    let (_cp, _cl, _cs) = whip_publish(&s, "r", "cam", "guest", 320, 240).await;
    viewers[0]
        .wait("cam publishing", |v| {
            v["type"] == "participant_updated"
                && v["participant"]["identity"] == "cam"
                && v["participant"]["publishing"] == true
        })
        .await;
    let peer = client_peer().await;
    peer.add_recv().await;
    let offer = peer.offer().await;
    viewers[0].send(json!({"type": "subscribe", "identity": "cam", "sdp": offer}));
    assert_eq!(
        viewers[0].wait_type("error").await["code"],
        "viewer_cannot_subscribe"
    );
    let vtoken = s.token("r", "v1", "viewer").await;
    let (st, _, _) = post_sdp(&s.url("/whep/r/cam"), &vtoken, &offer).await;
    assert_eq!(st, 403);

    // One guest identity: two WHEP sessions of the co-host, not a third.
    let wtoken = s.token("r", "watcher", "guest").await;
    let (_w1, _) = whep_subscribe(&s, "r", "cam", &wtoken).await;
    let (_w2, _) = whep_subscribe(&s, "r", "cam", &wtoken).await;
    let p3 = client_peer().await;
    p3.add_recv().await;
    let (st, _, body) = post_sdp(&s.url("/whep/r/cam"), &wtoken, &p3.offer().await).await;
    assert_eq!(st, 429, "{body}");
    assert!(body.contains("limit_reached"), "{body}");

    // A layout set in a room that never runs a program is freed with the room.
    let rooms_before = s.metric("cohost_program_rooms").await;
    let mut lay = Ws::connect(&s, &s.token("lay", "lh", "host").await).await;
    lay.send(json!({"type": "join"}));
    lay.wait_type("joined").await;
    lay.send(json!({"type": "set_layout", "layout": {"template": "pip"}}));
    lay.wait_type("layout_changed").await;
    assert_eq!(s.metric("cohost_program_rooms").await, rooms_before + 1);
    lay.close();
    eventually_async("the idle room's program state is freed", 10, || async {
        s.metric("cohost_program_rooms").await == rooms_before
    })
    .await;

    // The room beside went on.
    eventually("healthy program went on", 10, || {
        decoded_at(&pv, (1280, 720)) > before + 60
    })
    .await;
}
