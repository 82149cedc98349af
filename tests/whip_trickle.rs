//! Trickle ICE over HTTP (RFC 9725 §4.3, RFC 8840): a WHIP publisher and a WHEP program
//! viewer whose offers carry no candidates send them afterwards with `PATCH`, and connect;
//! the `201` carries `ETag` and `Accept-Patch`; a stale `If-Match` is `412`, a malformed
//! fragment `400` (and leaves the session working), a wrong media type `415`, an unknown
//! session `404`. An ICE restart (a fragment with new credentials, RFC 9725 §4.4) is `200`
//! with the server's new credentials and candidates and a new `ETag`, and the viewer that
//! restarted keeps decoding the program over the restarted ICE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::time::{Duration, Instant};

use common::*;
use rtc::peer_connection::configuration::RTCOfferOptions;
use webrtc::peer_connection::RTCPeerConnectionState;

const FRAG: &str = "application/trickle-ice-sdpfrag";

/// The offer without its candidates, and those candidates as an RFC 8840 fragment.
fn split_offer(sdp: &str) -> (String, String) {
    let mut offer = String::new();
    let mut frag = String::new();
    let (mut ufrag, mut pwd) = (None, None);
    let mut first_mid = None;
    for l in sdp.split_inclusive("\r\n") {
        let t = l.trim_end();
        if let Some(u) = t.strip_prefix("a=ice-ufrag:") {
            ufrag.get_or_insert(u.to_owned());
        }
        if let Some(p) = t.strip_prefix("a=ice-pwd:") {
            pwd.get_or_insert(p.to_owned());
        }
        if let Some(m) = t.strip_prefix("a=mid:") {
            first_mid.get_or_insert(m.to_owned());
        }
        if t.starts_with("a=candidate:") {
            // Candidates of the first media section are enough (the transport is bundled).
            if !frag.contains(t) {
                frag.push_str(t);
                frag.push_str("\r\n");
            }
            continue;
        }
        if t == "a=end-of-candidates" {
            continue;
        }
        offer.push_str(l);
    }
    let head = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{}\r\n",
        ufrag.unwrap(),
        pwd.unwrap(),
        first_mid.unwrap()
    );
    (offer, format!("{head}{frag}a=end-of-candidates\r\n"))
}

async fn patch(url: &str, token: &str, ct: &str, if_match: Option<&str>, body: &str) -> u16 {
    let mut r = reqwest::Client::new()
        .patch(url)
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body.to_owned());
    if let Some(m) = if_match {
        r = r.header("if-match", m);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_connect_and_bad_patches_are_refused() {
    let s = start_server().await;
    let token = s.token("t", "cam", "host").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "cam").await;
    let (offer, frag) = split_offer(&peer.offer().await);
    assert!(
        !offer.contains("a=candidate"),
        "the offer must carry no candidates"
    );
    assert!(frag.contains("a=candidate:"), "{frag}");
    let t0 = Instant::now();
    let r = reqwest::Client::new()
        .post(s.url("/whip/t"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["accept-patch"], FRAG);
    let location = s.url(r.headers()["location"].to_str().unwrap());
    peer.set_answer(&r.text().await.unwrap()).await;

    // The refusals, none of which touches the session.
    assert_eq!(
        patch(&location, &token, "text/plain", None, &frag).await,
        415
    );
    assert_eq!(
        patch(&location, &token, FRAG, Some("\"stale\""), &frag).await,
        412
    );
    assert_eq!(
        patch(
            &location,
            &token,
            FRAG,
            None,
            "a=candidate:1 1 udp 1 127.0.0.1 x typ host\r\n"
        )
        .await,
        400
    );
    let other = s.token("t", "nobody", "guest").await;
    assert_eq!(
        patch(&location, &other, FRAG, None, &frag).await,
        403,
        "another identity's session"
    );
    assert_eq!(
        patch(&s.url("/whip/t/nobody"), &other, FRAG, None, &frag).await,
        404
    );

    // The candidates, trickled: 204, and the publisher connects.
    assert_eq!(
        patch(&location, &token, FRAG, Some(&etag), &frag).await,
        204
    );
    eventually("the trickling publisher connects", 15, || {
        *peer.state.lock().unwrap() == RTCPeerConnectionState::Connected
    })
    .await;
    println!(
        "WHIP trickle: POST to connected in {} ms",
        t0.elapsed().as_millis()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 60.0, stop.clone());

    // A WHEP program viewer that trickles too.
    let viewer_token = s.token("t", "fan", "viewer").await;
    let mut viewer = client_peer().await;
    viewer.add_recv().await;
    let (voffer, vfrag) = split_offer(&viewer.offer().await);
    let (st, vloc, answer) = loop {
        let r = post_sdp(&s.url("/whep/t"), &viewer_token, &voffer).await;
        if r.0 == 201 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st, 201);
    viewer.set_answer(&answer).await;
    let vloc = s.url(&vloc.unwrap());
    assert_eq!(patch(&vloc, &viewer_token, FRAG, None, &vfrag).await, 204);
    let (pv, _pa) = collect_both(&mut viewer).await;
    eventually("the trickling viewer decodes the program", 20, || {
        decoded_at(&pv, (1280, 720)) >= 10
    })
    .await;
    // The viewer restarts ICE (new credentials, RFC 9725 §4.4): 200 with the server's new
    // credentials and candidates, a new entity tag; the old one is then stale.
    let old_tag = {
        let r = reqwest::Client::new()
            .patch(&vloc)
            .bearer_auth(&viewer_token)
            .header("content-type", FRAG)
            .body("a=end-of-candidates\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        r.headers()["etag"].to_str().unwrap().to_owned()
    };
    let restart = viewer
        .pc
        .create_offer(Some(RTCOfferOptions { ice_restart: true }))
        .await
        .unwrap();
    viewer.pc.set_local_description(restart).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // gathering (loopback)
    let (_, rfrag) = split_offer(&viewer.pc.local_description().await.unwrap().sdp);
    assert!(!rfrag.contains(&old_tag.replace('"', "")), "{rfrag}");
    let r = reqwest::Client::new()
        .patch(&vloc)
        .bearer_auth(&viewer_token)
        .header("content-type", FRAG)
        .header("if-match", "*")
        .body(rfrag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "ICE restart");
    assert_eq!(r.headers()["content-type"], FRAG);
    let new_tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_tag, old_tag);
    let server_frag = r.text().await.unwrap();
    let ufrag = server_frag
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim();
    let pwd = server_frag
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-pwd:"))
        .unwrap()
        .trim();
    assert_eq!(new_tag, format!("\"{ufrag}\""));
    assert!(
        server_frag.contains("a=candidate:") && server_frag.contains("a=end-of-candidates"),
        "{server_frag}"
    );
    // The client applies the server's new credentials and candidates (as RFC 9725 clients do).
    let remote = viewer.pc.remote_description().await.unwrap().sdp;
    let mut answer = String::new();
    for l in remote.split_inclusive("\r\n") {
        let t = l.trim_end();
        if t.starts_with("a=ice-ufrag:") {
            answer.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if t.starts_with("a=ice-pwd:") {
            answer.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else if !t.starts_with("a=candidate:") && t != "a=end-of-candidates" {
            answer.push_str(l);
            if t.starts_with("a=mid:") {
                for c in server_frag
                    .lines()
                    .filter(|c| c.starts_with("a=candidate:"))
                {
                    answer.push_str(c.trim_end());
                    answer.push_str("\r\n");
                }
            }
        }
    }
    viewer.set_answer(&answer).await;
    assert_eq!(
        patch(&vloc, &viewer_token, FRAG, Some(&old_tag), &rfrag).await,
        412,
        "the tag from before the restart is stale"
    );
    assert_eq!(
        patch(&vloc, &viewer_token, FRAG, Some(&new_tag), &rfrag).await,
        204
    );
    // Still decoding over the restarted ICE: pictures keep arriving well past the old
    // credentials' consent (checks with the old ufrag are refused by both agents now).
    let before = decoded_at(&pv, (1280, 720));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let at = pv.lock().unwrap().packets;
    eventually(
        "the restarted viewer keeps receiving the program",
        20,
        || pv.lock().unwrap().packets > at + 100,
    )
    .await;
    let after = decoded_at(&pv, (1280, 720));
    assert!(after >= before + 60, "decoded {before} then {after}");
    assert_eq!(
        *viewer.state.lock().unwrap(),
        RTCPeerConnectionState::Connected
    );

    // An ended session is 404.
    assert_eq!(delete(&vloc, &viewer_token).await, 200);
    assert_eq!(patch(&vloc, &viewer_token, FRAG, None, &vfrag).await, 404);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A client that sends no candidates at all, neither in its offer nor later (some do exactly
/// this): the server learns its address from the connectivity checks it receives (a
/// peer-reflexive candidate, RFC 8445 §7.3.1.3) and the media flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_a_candidate_connects() {
    let s = start_server().await;
    let token = s.token("quiet", "cam", "host").await;
    let peer = client_peer().await;
    let sender = add_sender(&peer, "cam").await;
    let (offer, _never_sent) = split_offer(&peer.offer().await);
    assert!(!offer.contains("a=candidate"));
    let (status, _loc, answer) = post_sdp(&s.url("/whip/quiet"), &token, &offer).await;
    assert_eq!(status, 201, "{answer}");
    peer.set_answer(&answer).await;
    eventually("the silent publisher connects", 15, || {
        *peer.state.lock().unwrap() == RTCPeerConnectionState::Connected
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    sender.spawn(320, 240, 60.0, stop.clone());
    let guest = s.token("quiet", "g", "guest").await;
    let (mut sub, _) = whep_subscribe(&s, "quiet", "cam", &guest).await;
    let (video, _audio) = collect_both(&mut sub).await;
    eventually("its video reaches a subscriber", 20, || {
        decoded_at(&video, (320, 240)) >= 10
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
