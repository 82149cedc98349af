//! A WHEP program viewer's video runs at the room's `mix.fps` (issue 11, item 8): at 15 fps its
//! RTP timestamps advance 6 000 (90 kHz) a picture, not the 3 000 of a fixed 1/30 s, so a
//! player's clock and the program's agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::sync::{Arc, Mutex};

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_pictures_last_one_frame_of_the_mix_rate() {
    let s = start_server().await;
    assert_eq!(ticks_per_picture(&s, "slow", 15).await, 6000, "at 15 fps");
    // 1/30 s is no whole number of nanoseconds: truncated, a picture would advance 2 999
    // ticks and the video clock run 0.03 % slow against the audio's.
    assert_eq!(ticks_per_picture(&s, "usual", 30).await, 3000, "at 30 fps");
}

/// The median RTP timestamp step between the program pictures a WHEP viewer of a new room at
/// `fps` receives.
async fn ticks_per_picture(s: &TestServer, room: &str, fps: u32) -> u32 {
    let r = reqwest::Client::new()
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": room, "mix": {"width": 640, "height": 360, "fps": fps}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (_p, _l, _stop) = whip_publish(s, room, "host", "host", 320, 240).await;
    let viewer = s.token(room, "fan", "viewer").await;
    let mut prog = whep_program(s, room, &viewer).await;
    // The RTP timestamp of every picture's last packet.
    let stamps = Arc::new(Mutex::new(Vec::<u32>::new()));
    for _ in 0..2 {
        let t = tokio::time::timeout(std::time::Duration::from_secs(15), prog.tracks.recv())
            .await
            .unwrap()
            .unwrap();
        if t.kind().await != RtpCodecKind::Video {
            continue;
        }
        let out = stamps.clone();
        tokio::spawn(async move {
            while let Some(ev) = t.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    if p.header.marker {
                        out.lock().unwrap().push(p.header.timestamp);
                    }
                }
            }
        });
    }
    eventually("program pictures", 20, || stamps.lock().unwrap().len() > 40).await;
    let st = stamps.lock().unwrap().clone();
    let mut deltas: Vec<u32> = st.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    deltas.sort_unstable();
    deltas[deltas.len() / 2]
}

/// A WHEP program viewer that lost a picture sends a PLI: the program answers with a keyframe
/// long before its next scheduled one (a 20 s GOP here), once per second for all its viewers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_viewers_pli_brings_a_keyframe() {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    let s = start_server().await;
    let r = reqwest::Client::new()
        .post(s.url("/api/rooms"))
        .bearer_auth(API_KEY)
        .json(
            &json!({"name": "pli", "mix": {"width": 320, "height": 180, "fps": 15, "gop_s": 20.0}}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (_p, _l, _stop) = whip_publish(&s, "pli", "host", "host", 320, 240).await;
    let viewer = s.token("pli", "fan", "viewer").await;
    let mut prog = whep_program(&s, "pli", &viewer).await;
    let keyframes = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
    let video = loop {
        let t = tokio::time::timeout(std::time::Duration::from_secs(15), prog.tracks.recv())
            .await
            .unwrap()
            .unwrap();
        if t.kind().await == RtpCodecKind::Video {
            break t;
        }
    };
    {
        let (t, out) = (video.clone(), keyframes.clone());
        tokio::spawn(async move {
            while let Some(ev) = t.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    if mixer::h264::rtp_payload_is_keyframe(&p.payload) {
                        out.lock().unwrap().push(std::time::Instant::now());
                    }
                }
            }
        });
    }
    // The first picture is a keyframe (asked for when the viewer connected).
    eventually("the first keyframe", 15, || {
        !keyframes.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let before = keyframes.lock().unwrap().len();
    let ssrc = video.ssrcs().await.first().copied().unwrap_or(0);
    let sent = std::time::Instant::now();
    video
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: ssrc,
        })])
        .await
        .unwrap();
    eventually("a keyframe after the PLI", 5, || {
        keyframes.lock().unwrap().iter().any(|t| *t > sent)
    })
    .await;
    assert!(
        keyframes.lock().unwrap().len() > before,
        "no keyframe came for the PLI"
    );
}
