//! A publisher that sends H.264 FU-A fragments that never end (issue 11, item 3): no end bit,
//! no marker, ~1.2 KB a packet. The program's input assembler holds at most one access unit's
//! worth of it (`cohost_program_input_assembling_bytes`, sampled through the flood), the
//! process stays bounded, and a healthy room beside it keeps decoding its program. The
//! 10-minute RSS figure is `cargo bench --bench hostile`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

/// Resident memory of this process (server and peers), in bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn rtp_track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let k = if kind == RtpCodecKind::Video {
        "v"
    } else {
        "a"
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "flood".into(),
        format!("flood-{k}"),
        format!("flood-{k}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_fu_a_fragments_keep_memory_flat() {
    let s = start_server().await;
    // The healthy room: a co-host and a viewer of its program.
    let (_host, _loc, _stop) = whip_publish(&s, "healthy", "host", "host", 320, 240).await;
    let viewer = s.token("healthy", "fan", "viewer").await;
    let mut prog = whep_program(&s, "healthy", &viewer).await;
    let (pv, _pa) = collect_both(&mut prog).await;
    eventually("healthy program", 15, || decoded_at(&pv, (1280, 720)) > 10).await;

    // The attacker: a WHIP co-host whose tracks carry hand-made RTP.
    let peer = client_peer().await;
    let vssrc: u32 = rand::random();
    let video = rtp_track(
        RtpCodecKind::Video,
        RTCRtpCodec {
            mime_type: "video/H264".into(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .into(),
            rtcp_feedback: vec![],
        },
        vssrc,
    );
    let audio_ssrc: u32 = rand::random();
    let audio = rtp_track(
        RtpCodecKind::Audio,
        RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        audio_ssrc,
    );
    let vsender = peer
        .pc
        .add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let asender = peer
        .pc
        .add_track(audio.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let token = s.token("flood", "mallory", "host").await;
    let offer = peer.offer().await;
    let (status, _loc, body) = post_sdp(&s.url("/whip/flood"), &token, &offer).await;
    assert_eq!(status, 201, "{body}");
    peer.set_answer(&body).await;
    eventually("attacker connected", 15, || {
        *peer.state.lock().unwrap() == RTCPeerConnectionState::Connected
    })
    .await;

    // The payload type negotiated for H.264 packetization-mode 1.
    let params = vsender.get_parameters().await.unwrap();
    let pt = params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case("video/H264")
                && c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
        })
        .map(|c| c.payload_type)
        .expect("H.264 negotiated");
    // Opus silence next to it, as a real client sends, so the co-host is on the program.
    let apt = asender
        .get_parameters()
        .await
        .unwrap()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("audio/opus"))
        .map(|c| c.payload_type)
        .expect("Opus negotiated");
    let assrc = audio_ssrc;
    tokio::spawn({
        let audio = audio.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for i in 0u32.. {
                tick.tick().await;
                let mut p = rtp::Packet::default();
                p.header.version = 2;
                p.header.payload_type = apt;
                p.header.ssrc = assrc;
                p.header.sequence_number = i as u16;
                p.header.timestamp = i.wrapping_mul(960);
                p.payload = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
                if audio.write_rtp(p).await.is_err() {
                    break;
                }
            }
        }
    });
    // FU-A (type 28) of an IDR, start bit on the first packet, then middles for ever: one
    // timestamp, no end bit, no marker. ~2 000 packets (2.4 MB) a second.
    let mut payload = vec![0x7c, 0x85];
    payload.extend((0..1200).map(|i| (i % 251) as u8));
    let start = Bytes::from(payload.clone());
    payload[1] = 0x05;
    let middle = Bytes::from(payload);
    let mut seq: u16 = rand::random();
    let mut sent = 0u64;
    let mut send = |n: usize, first: bool| {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut p = rtp::Packet::default();
            p.header.version = 2;
            p.header.payload_type = pt;
            p.header.ssrc = vssrc;
            p.header.sequence_number = seq;
            p.header.timestamp = 90_000;
            p.payload = if first && i == 0 {
                start.clone()
            } else {
                middle.clone()
            };
            seq = seq.wrapping_add(1);
            sent += p.payload.len() as u64;
            out.push(p);
        }
        out
    };
    let mut base = None;
    let mut first = true;
    let mut most_held = 0u64;
    let mut samples = 0;
    let t0 = tokio::time::Instant::now();
    let attack = Duration::from_secs(16);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while t0.elapsed() < attack {
        tick.tick().await;
        for p in send(20, first) {
            video.write_rtp(p).await.unwrap();
        }
        first = false;
        n += 1;
        // What the server holds for the access unit being assembled, every 0.5 s.
        if n.is_multiple_of(50) {
            most_held = most_held.max(s.metric("cohost_program_input_assembling_bytes").await);
            samples += 1;
        }
        if base.is_none() && t0.elapsed() >= Duration::from_secs(4) {
            base = Some((rss(), decoded_at(&pv, (1280, 720))));
        }
    }
    let (base_rss, base_pictures) = base.unwrap();
    let grown = rss().saturating_sub(base_rss);
    let attack_bytes = sent * 12 / 16; // what was sent after the warm-up
    eprintln!(
        "FU-A flood: {} MB sent after warm-up, RSS grew {:.1} MB, at most {most_held} bytes held in {samples} samples",
        attack_bytes / 1_000_000,
        grown as f64 / 1e6
    );
    // Without the cap the assembler held all of it (28 MB here); with it, at most one access
    // unit (4 MiB) for this co-host and the healthy one's frame in progress.
    assert!(samples >= 25);
    assert!(most_held > 0, "the flood never reached the program's input");
    assert!(
        most_held <= (4 << 20) + 256 * 1024,
        "{most_held} bytes held for unending fragments"
    );
    // The process as a whole stays bounded too (RSS is noisy: the healthy viewer keeps every
    // frame it receives, allocators keep what they freed).
    assert!(
        grown < attack_bytes,
        "RSS grew {grown} bytes while {attack_bytes} bytes of unending fragments arrived"
    );
    // The healthy room decoded on through the flood (12 s at 30 fps, with a wide margin).
    let during = decoded_at(&pv, (1280, 720)) - base_pictures;
    assert!(
        during > 200,
        "only {during} program pictures in 12 s of flood"
    );
}
