//! The webrtc-rs edge: one factory for peer connections (codecs, interceptors, ports, ICE
//! settings), an interceptor that hands keyframe requests to the application, and helpers for
//! answering offers. Everything WebRTC-specific in cohost is here and in [`crate::sfu`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::NackResponderBuilder;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::Registry;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::config::RtcConfig;

/// Errors of the WebRTC edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtcError {
    /// The peer's SDP could not be applied.
    #[error("invalid SDP: {0}")]
    Sdp(String),
    /// No UDP port of the range could be bound.
    #[error("no free UDP port in {0}-{1}")]
    NoPort(u16, u16),
    /// Another webrtc-rs failure.
    #[error("webrtc: {0}")]
    Webrtc(String),
}

impl From<RtcError> for signaling::backend::MediaError {
    fn from(e: RtcError) -> Self {
        use signaling::backend::MediaError as M;
        match e {
            RtcError::Sdp(m) => M::BadSdp(m),
            RtcError::NoPort(..) => M::Unavailable(e.to_string()),
            RtcError::Webrtc(m) => M::Internal(m),
        }
    }
}

/// Is this RTCP packet a keyframe request (PLI or FIR)?
pub fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let a = p.as_any();
    a.is::<PictureLossIndication>() || a.is::<FullIntraRequest>()
}

/// Is this RTCP packet a sender report (NTP ↔ RTP time of a publisher's stream)?
pub fn is_sender_report(p: &dyn rtc::rtcp::Packet) -> bool {
    p.as_any().is::<rtc::rtcp::sender_report::SenderReport>()
}

/// Marks inbound PLI/FIR (keyframe requests from subscribers) and SR (a publisher's NTP ↔ RTP
/// mapping, used to place cues on the frame a host captured) for delivery to the application
/// (webrtc-rs 0.21 stops inbound RTCP at the end of the interceptor chain otherwise); every
/// other RTCP packet ends there as usual, after the interceptors before this one used it.
struct KeyframeRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let keep: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()) || is_sender_report(p.as_ref()))
                .cloned()
                .collect();
            if keep.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(keep);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .iter()
    .map(|(t, p)| RTCPFeedback {
        typ: (*t).to_owned(),
        parameter: (*p).to_owned(),
    })
    .collect()
}

/// H.264 packetization-mode 1 with `profile` (`42e01f` constrained baseline, `42001f`
/// baseline): what cohost negotiates and what the program is encoded as. No RTCP feedback
/// (the media engine adds it for negotiation).
pub fn h264_codec(profile: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
        ),
        rtcp_feedback: vec![],
    }
}

/// Opus, stereo, with in-band FEC (RFC 7587).
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A local track's description: stream `stream_id`, track `track_id` (also its label), one
/// active encoding on `ssrc` with `codec`. The SFU's forwarded tracks and the program's WHEP
/// tracks are built with it.
pub fn local_track(
    stream_id: String,
    track_id: String,
    kind: RtpCodecKind,
    ssrc: u32,
    codec: RTCRtpCodec,
) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream_id,
        track_id.clone(),
        track_id,
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
    )
}

/// The codecs cohost negotiates: H.264 packetization-mode 1 (constrained baseline preferred,
/// then baseline), each with RTX, and Opus. Forwarding untouched needs every co-host on the
/// same codec, and the mixer decodes only these.
pub fn media_engine() -> Result<MediaEngine, RtcError> {
    let mut me = MediaEngine::default();
    let w = |e: rtc::shared::error::Error| RtcError::Webrtc(e.to_string());
    let h264 = |pt: u8, profile: &str| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            rtcp_feedback: video_feedback(),
            ..h264_codec(profile)
        },
        payload_type: pt,
    };
    let rtx = |pt: u8, apt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "video/rtx".to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: format!("apt={apt}"),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    };
    for c in [
        h264(102, "42e01f"),
        rtx(103, 102),
        h264(104, "42001f"),
        rtx(105, 104),
    ] {
        me.register_codec(c, RtpCodecKind::Video).map_err(w)?;
    }
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
    .map_err(w)?;
    Ok(me)
}

/// The interceptors of every server peer connection: webrtc-rs' defaults (NACK responder,
/// TWCC feedback to publishers, sender/receiver reports), with cohost's own NACK generator
/// ([`crate::nack`]) in place of the default one.
fn interceptors(me: &mut MediaEngine) -> Result<Registry, rtc::shared::error::Error> {
    configure_simulcast_extension_headers(me)?;
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(
            Slot::NackGenerator,
            crate::nack::NackGenerator::new(crate::nack::NackConfig::default()),
        );
    let registry = configure_twcc_receiver_only(registry, me)?;
    Ok(configure_rtcp_reports(registry))
}

/// What a peer connection reports to its owner.
#[derive(Clone)]
pub enum PeerEvent {
    /// New connection state.
    State(RTCPeerConnectionState),
    /// A remote track arrived.
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
    gathered: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track(track));
    }
}

/// A built peer connection and the means to follow it.
pub struct Peer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// State changes and remote tracks.
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    gathered: Arc<tokio::sync::Notify>,
    /// Local UDP address.
    pub addr: SocketAddr,
}

/// Builds peer connections with cohost's settings.
pub struct RtcEngine {
    cfg: RtcConfig,
    next_port: AtomicU32,
}

impl RtcEngine {
    /// New factory.
    pub fn new(cfg: RtcConfig) -> Self {
        RtcEngine {
            next_port: AtomicU32::new(0),
            cfg,
        }
    }

    /// A new peer connection bound to a port of the configured range.
    pub async fn new_peer(&self) -> Result<Peer, RtcError> {
        let span = u32::from(self.cfg.port_max - self.cfg.port_min) + 1;
        let tries = span.min(64);
        let mut last = String::new();
        for _ in 0..tries {
            let off = self.next_port.fetch_add(1, Ordering::Relaxed) % span;
            let port = self.cfg.port_min + off as u16;
            let addr = SocketAddr::new(self.cfg.media_ip, port);
            // Skip ports held by someone else without handing them to webrtc-rs.
            if std::net::UdpSocket::bind(addr).is_err() {
                continue;
            }
            match self.build(addr).await {
                Ok(p) => return Ok(p),
                Err(e) => last = e.to_string(),
            }
        }
        tracing::warn!(error = %last, "no UDP port available");
        Err(RtcError::NoPort(self.cfg.port_min, self.cfg.port_max))
    }

    async fn build(&self, addr: SocketAddr) -> Result<Peer, RtcError> {
        let w = |e: rtc::shared::error::Error| RtcError::Webrtc(e.to_string());
        let mut me = media_engine()?;
        let registry = interceptors(&mut me).map_err(w)?;
        let registry = registry.with(
            Slot::from(14_000),
            KeyframeRequestForwarder {
                read: VecDeque::new(),
                write: VecDeque::new(),
            },
        );
        let mut se = SettingEngineBuilder::new()
            .with_include_loopback_candidate(self.cfg.media_ip.is_loopback())
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(2)),
            );
        if let Some(ip) = self.cfg.public_ip {
            se = se.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let gathered = Arc::new(tokio::sync::Notify::new());
        let handler = Arc::new(Handler {
            events: tx,
            gathered: gathered.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_setting_engine(se.build())
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![addr])
            .build()
            .await
            .map_err(|e| RtcError::Webrtc(e.to_string()))?;
        Ok(Peer {
            pc: Arc::new(pc),
            events: rx,
            gathered,
            addr,
        })
    }
}

impl Peer {
    /// Applies `offer` and returns the answer with all of our candidates (non-trickle on our
    /// side: host candidates gather at once).
    pub async fn answer(&self, offer: String) -> Result<String, RtcError> {
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| RtcError::Sdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| RtcError::Sdp(e.to_string()))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| RtcError::Sdp(e.to_string()))?;
        let gathered = self.gathered.notified();
        // Applying the answer starts the receivers the offer declared: what fails here is the
        // offer's (an `a=ssrc:` that does not parse leaves a track without its stream).
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| RtcError::Sdp(format!("the offer cannot be negotiated: {e}")))?;
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| RtcError::Webrtc("no local description".into()))
    }
}

/// Restarts ICE on a peer connection that answered the client's offer (a WHIP/WHEP `PATCH`
/// with new credentials, RFC 9725 §4.4): the client's offer is applied again with its new
/// ufrag and password, which restarts the ICE agent (new local credentials too), and answered
/// again. Returns the new local description (credentials and candidates for the client).
pub async fn restart_ice(
    pc: &Arc<dyn PeerConnection>,
    ufrag: &str,
    pwd: &str,
) -> Result<String, RtcError> {
    let remote = pc
        .remote_description()
        .await
        .ok_or_else(|| RtcError::Webrtc("no remote description".into()))?;
    let offer = signaling::trickle::with_ice_credentials(&remote.sdp, ufrag, pwd);
    let offer = RTCSessionDescription::offer(offer).map_err(|e| RtcError::Sdp(e.to_string()))?;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| RtcError::Sdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| RtcError::Sdp(e.to_string()))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| RtcError::Sdp(e.to_string()))?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| RtcError::Webrtc("no local description".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_registers() {
        assert!(media_engine().is_ok());
    }
}
