//! A WHIP co-host whose tracks carry hand-made RTP (hostile-input tests and the hostile bench):
//! real ICE/DTLS/SRTP through webrtc-rs, any payload inside. It sends Opus silence beside its
//! video, as a real client does, so the server puts it on its room's program.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use super::{client_peer, post_sdp, ClientPeer};

/// A connected raw publisher.
pub struct RawPublisher {
    pub peer: ClientPeer,
    /// Its video track: `write_rtp` whatever H.264 RTP the test wants.
    pub video: Arc<TrackLocalStaticRTP>,
    pub vssrc: u32,
    /// The payload type negotiated for H.264 packetization-mode 1.
    pub vpt: u8,
    silence: tokio::task::JoinHandle<()>,
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        self.silence.abort();
    }
}

fn track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let k = if kind == RtpCodecKind::Video {
        "v"
    } else {
        "a"
    };
    Arc::new(TrackLocalStaticRTP::new(cohost::rtc::local_track(
        "raw".into(),
        format!("raw-{k}"),
        kind,
        ssrc,
        codec,
    )))
}

/// Publishes to `whip_url` with `token` (201 asserted) and starts the Opus silence; the
/// caller waits for the connection if it needs to.
pub async fn raw_publisher(whip_url: &str, token: &str) -> RawPublisher {
    let peer = client_peer().await;
    let (vssrc, assrc): (u32, u32) = (rand::random(), rand::random());
    let video = track(
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
    let audio = track(
        RtpCodecKind::Audio,
        RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        assrc,
    );
    let vs = peer
        .pc
        .add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let asend = peer
        .pc
        .add_track(audio.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = peer.offer().await;
    let (status, _loc, body) = post_sdp(whip_url, token, &offer).await;
    assert_eq!(status, 201, "{body}");
    peer.set_answer(&body).await;
    let pt = |params: rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters, mime: &str| {
        params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| {
                c.rtp_codec.mime_type.eq_ignore_ascii_case(mime)
                    && (mime != "video/H264"
                        || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
            })
            .map(|c| c.payload_type)
            .unwrap_or_else(|| panic!("{mime} negotiated"))
    };
    let vpt = pt(vs.get_parameters().await.unwrap(), "video/H264");
    let apt = pt(asend.get_parameters().await.unwrap(), "audio/opus");
    let silence = tokio::spawn(async move {
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
    });
    RawPublisher {
        peer,
        video,
        vssrc,
        vpt,
        silence,
    }
}

/// H.264 FU-A fragments (RFC 6184 §5.8) of an IDR that never ends: the first with the start
/// bit, then middles for ever, one timestamp, no end bit, no marker, 1 202 bytes each.
pub struct EndlessFuA {
    start: Bytes,
    middle: Bytes,
    seq: u16,
    /// Payload bytes handed out so far.
    pub sent: u64,
}

impl Default for EndlessFuA {
    fn default() -> Self {
        let mut payload = vec![0x7c, 0x85];
        payload.extend((0..1200).map(|i| (i % 251) as u8));
        let start = Bytes::from(payload.clone());
        payload[1] = 0x05;
        EndlessFuA {
            start,
            middle: Bytes::from(payload),
            seq: rand::random(),
            sent: 0,
        }
    }
}

impl EndlessFuA {
    /// The next `n` packets for `publisher`'s video track.
    pub fn next(&mut self, publisher: &RawPublisher, n: usize) -> Vec<rtp::Packet> {
        (0..n)
            .map(|_| {
                let mut p = rtp::Packet::default();
                p.header.version = 2;
                p.header.payload_type = publisher.vpt;
                p.header.ssrc = publisher.vssrc;
                p.header.sequence_number = self.seq;
                p.header.timestamp = 90_000;
                p.payload = if self.sent == 0 {
                    self.start.clone()
                } else {
                    self.middle.clone()
                };
                self.seq = self.seq.wrapping_add(1);
                self.sent += p.payload.len() as u64;
                p
            })
            .collect()
    }
}
