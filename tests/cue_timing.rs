//! Cues on time: a cue carrying the host's capture time of a frame is stamped into the
//! program frame composed from that frame, not into whatever frame is next when the request
//! arrives. The host (a webrtc-rs co-host) draws its frame counter into its picture; a WHEP
//! program viewer decodes the program, reads the counter back from the frame carrying each
//! cue SEI, and the error in frames is measured and asserted — against cues sent at the same
//! moments without a capture time, which land earlier.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use std::time::Duration;

use common::*;
use openh264::formats::YUVSource;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cue_lands_on_the_frame_the_host_captured() {
    let s = start_server().await;
    let room = "cue-timing";
    let (_host, captures, _stop) = whip_publish_timed(&s, room, "host", "host", 320, 240).await;
    let viewer = s.token(room, "fan", "viewer").await;
    // The program exists once the host's tracks are up.
    let mut peer = whep_program(&s, room, &viewer).await;
    let (video, _audio) = collect_both(&mut peer).await;
    // Sender reports (about one per second) map the host's clock to its RTP clock.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let http = reqwest::Client::new();
    let mut sent = Vec::new(); // (cue id, frame number pressed, timed?)
    for k in 0..6 {
        // "Press" right when frame F is captured: the cue request reaches the server long
        // before frame F reaches the mixer.
        let before = captures.lock().unwrap().len();
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if captures.lock().unwrap().len() > before {
                break;
            }
        }
        let (f, t) = {
            let c = captures.lock().unwrap();
            (c.len() - 1, c[c.len() - 1])
        };
        let timed = k % 2 == 0;
        let id = format!("cue-{k}");
        let mut body = json!({"id": id, "data": {"k": k}, "repeat": 1});
        if timed {
            body["at_capture_ms"] = json!(t);
        }
        let r = http
            .post(s.url(&format!("/api/rooms/{room}/cues")))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        sent.push((id, f as u32, timed));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Decode the program; for each cue SEI read the host's counter from that picture.
    let frames = video.lock().unwrap().frames.clone();
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let mut landed = std::collections::HashMap::new();
    for au in &frames {
        let Ok(Some(pic)) = dec.decode(au) else {
            continue;
        };
        assert_eq!(pic.dimensions(), (1280, 720));
        // 320x240 crop-to-fill on 1280x720: x4, 120 rows cropped at the top; the band's
        // centre row 120 → 360, block i's centre (20 i + 10) x4.
        let n = read_counter(pic.y(), pic.strides().0, 360, 40, 80);
        for c in mixer::h264::find_user_data(au, &mixer::h264::CUE_SEI_UUID) {
            let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
            landed.insert(v["id"].as_str().unwrap().to_owned(), n);
        }
    }
    let mut timed_err = Vec::new();
    let mut untimed_err = Vec::new();
    for (id, f, timed) in &sent {
        let n = *landed
            .get(id)
            .unwrap_or_else(|| panic!("cue {id} not found in {} program frames", frames.len()));
        let err = n as i64 - i64::from(*f);
        eprintln!("{id}: pressed at host frame {f}, stamped on the program frame showing host frame {n}: error {err} frames (at_capture_ms: {timed})");
        if *timed {
            timed_err.push(err)
        } else {
            untimed_err.push(err)
        }
    }
    eprintln!(
        "cue timing error in frames: with at_capture_ms {timed_err:?}, without {untimed_err:?}"
    );
    // The mixer stamps the cue into the program frame that shows the pressed host frame (it
    // waits for that picture to be presented); the only slack left is the sender-report
    // mapping of the press time to the host's RTP clock (a few ms): the pressed frame or the
    // next.
    assert!(
        timed_err.iter().all(|e| (0..=1).contains(e)),
        "timed cues must land on the pressed frame or just after: {timed_err:?}"
    );
}
