//! ICE servers announced to clients (CONTRACT "clients in the field", RFC 9725 §4.4):
//! `--ice-servers` appear as `Link: <url>; rel="ice-server"` on WHIP/WHEP `OPTIONS` and `201`
//! and in the signaling `joined` message; TURN comes with time-limited credentials minted for
//! the caller (coturn REST scheme) and only for a caller with a valid token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use common::*;
use reqwest::Method;
use serde_json::json;

const STUN: &str = "stun:stun.example.net:3478";
const TURN: &str = "turn:127.0.0.1:3478?transport=udp";

fn links(h: &reqwest::header::HeaderMap) -> Vec<String> {
    h.get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn check_turn(link: &str, identity: &str) {
    assert!(
        link.starts_with(&format!("<{TURN}>; rel=\"ice-server\"")),
        "{link}"
    );
    let user = link
        .split("username=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    let (exp, who) = user.split_once(':').unwrap();
    assert_eq!(who, identity);
    let exp: u64 = exp.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp > now + 3600 && exp <= now + 13 * 3600, "expiry {exp}");
    assert!(link.contains("credential-type=\"password\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_reach_whip_whep_and_signaling_clients() {
    let s = start_server_with(|c| {
        c.signaling.ice =
            signaling::ice::IceConfig::parse(&format!("{STUN},{TURN}"), Some("north".into()))
                .unwrap();
    })
    .await;
    let http = reqwest::Client::new();
    // OPTIONS without a token: STUN only (no credentials for strangers).
    let r = http
        .request(Method::OPTIONS, s.url("/whip/r"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        links(r.headers()),
        vec![format!("<{STUN}>; rel=\"ice-server\"")]
    );
    // With a token of the room: TURN too, with credentials for that identity.
    let token = s.token("r", "alice", "host").await;
    let r = http
        .request(Method::OPTIONS, s.url("/whip/r"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let l = links(r.headers());
    assert_eq!(l.len(), 2, "{l:?}");
    check_turn(&l[1], "alice");
    // The 201 of a WHIP POST carries them.
    let peer = client_peer().await;
    let _sender = add_sender(&peer, "alice").await;
    let r = http
        .post(s.url("/whip/r"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(peer.offer().await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let l = links(r.headers());
    assert_eq!(l.len(), 2, "{l:?}");
    check_turn(&l[1], "alice");
    // The signaling `joined` message: RTCIceServer objects.
    let mut ws = Ws::connect(&s, &s.token("r", "bob", "guest").await).await;
    ws.send(json!({"type": "join"}));
    let j = ws.wait_type("joined").await;
    let servers = j["ice_servers"].as_array().unwrap();
    assert_eq!(servers[0]["urls"], json!([STUN]));
    assert!(servers[0].get("username").is_none());
    assert_eq!(servers[1]["urls"], json!([TURN]));
    let user = servers[1]["username"].as_str().unwrap();
    assert!(user.ends_with(":bob"), "{user}");
    assert_eq!(servers[1]["credential"].as_str().unwrap().len(), 28);
}
