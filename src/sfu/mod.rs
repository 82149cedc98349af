//! The SFU: each co-host's publication (one peer connection, answered like WHIP) is fanned out
//! untouched to every subscription (one peer connection per subscriber and publisher, answered
//! like WHEP). SSRC, payload type and sequence numbers are rewritten per subscriber; keyframe
//! requests go upstream, repeated until a keyframe passes and throttled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use signaling::backend::{
    CueAck, MediaBackend, MediaError, MediaEvent, PeerConnId, PublishOptions,
};
use signaling::protocol::{MediaKind, TrackInfo};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tracing::{debug, info, info_span, Instrument};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::forward::Forwarder;
use crate::rtc::{is_keyframe_request, Peer, PeerEvent, RtcEngine};
use mixer::h264::rtp_payload_is_keyframe;

use crate::keyframe::KeyframeRequester;
pub use crate::keyframe::{PLI_MIN_INTERVAL, PLI_RETRY};
use crate::sender_clock::SenderClock;

mod backend;
mod publisher;
mod subscriber;

pub use backend::{ProgramControl, SfuBackend};
pub use publisher::{InPacket, PubTrack, Publisher, PUBLISHERS_ALIVE};
use subscriber::Subscription;

/// Optional forwarding-delay observer (for benchmarks): called after each successful
/// `write_rtp` to a subscriber with the packet's [`InPacket::at`]. Unset, it costs one atomic
/// load per forwarded packet.
static FORWARD_OBSERVER: std::sync::OnceLock<fn(Instant)> = std::sync::OnceLock::new();

/// Installs the forwarding-delay observer; once per process (returns false if one was set).
pub fn set_forward_observer(f: fn(Instant)) -> bool {
    FORWARD_OBSERVER.set(f).is_ok()
}

/// SFU counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SfuMetrics {
    /// RTP packets received from publishers.
    pub packets_in: AtomicU64,
    /// RTP payload+header bytes received.
    pub bytes_in: AtomicU64,
    /// RTP packets forwarded to subscribers.
    pub packets_out: AtomicU64,
    /// Bytes forwarded.
    pub bytes_out: AtomicU64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: AtomicU64,
    /// Packets a slow subscriber missed (its queue lagged).
    pub packets_dropped: AtomicU64,
}

#[derive(Default)]
struct RoomMedia {
    publishers: HashMap<String, Arc<Publisher>>,
    /// (subscriber, publisher) → subscription.
    subs: HashMap<(String, String), Subscription>,
}

/// What the SFU tells the program side (the mixer's inputs), in order, on one channel.
#[derive(Clone)]
pub enum SfuEvent {
    /// A publisher's tracks are ready (codecs known): the program may take it as an input.
    PublisherReady {
        /// Room.
        room: String,
        /// The publication: its media broadcasts, keyframe requests, sender clock.
        publisher: Arc<Publisher>,
    },
    /// A publisher left.
    PublisherGone {
        /// Room.
        room: String,
        /// Its identity.
        identity: String,
    },
}

impl std::fmt::Debug for SfuEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SfuEvent::PublisherReady { room, publisher } => f
                .debug_struct("PublisherReady")
                .field("room", room)
                .field("identity", &publisher.identity)
                .finish(),
            SfuEvent::PublisherGone { room, identity } => f
                .debug_struct("PublisherGone")
                .field("room", room)
                .field("identity", identity)
                .finish(),
        }
    }
}

/// The SFU, implementing signaling's [`MediaBackend`].
pub struct Sfu {
    engine: Arc<RtcEngine>,
    events: mpsc::UnboundedSender<MediaEvent>,
    rooms: Mutex<HashMap<String, RoomMedia>>,
    /// Counters.
    pub metrics: Arc<SfuMetrics>,
    /// Where publishers ready and gone are announced (the programs).
    program_events: mpsc::UnboundedSender<SfuEvent>,
}

fn kinds_offered(sdp: &str) -> (bool, bool) {
    // Which m-sections the publisher sends: video/audio not marked recvonly or inactive.
    let mut video = false;
    let mut audio = false;
    let mut cur: Option<&str> = None;
    let mut sends = true;
    let mut flush = |cur: Option<&str>, sends: bool| match cur {
        Some("video") if sends => video = true,
        Some("audio") if sends => audio = true,
        _ => {}
    };
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("m=") {
            flush(cur, sends);
            cur = rest.split_whitespace().next();
            sends = true;
        } else if line == "a=recvonly" || line == "a=inactive" {
            sends = false;
        }
    }
    flush(cur, sends);
    (video, audio)
}

impl Sfu {
    /// New SFU: it reports to signaling on `events` and announces its publishers on
    /// `program_events` (a closed receiver is fine: no program then).
    pub fn new(
        engine: Arc<RtcEngine>,
        events: mpsc::UnboundedSender<MediaEvent>,
        program_events: mpsc::UnboundedSender<SfuEvent>,
    ) -> Self {
        Sfu {
            engine,
            events,
            rooms: Mutex::new(HashMap::new()),
            metrics: Arc::new(SfuMetrics::default()),
            program_events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomMedia>> {
        crate::sync::lock(&self.rooms)
    }

    /// (rooms with media, publishers, subscriptions) for metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (
            g.len(),
            g.values().map(|r| r.publishers.len()).sum(),
            g.values().map(|r| r.subs.len()).sum(),
        )
    }

    /// A publisher, if present.
    pub fn publisher(&self, room: &str, identity: &str) -> Option<Arc<Publisher>> {
        self.lock().get(room)?.publishers.get(identity).cloned()
    }

    /// Ends `identity`'s publication (only the one on `pc_id`, if given); `true` if it did.
    fn remove_publisher(
        self: &Arc<Self>,
        room: &str,
        identity: &str,
        pc_id: Option<&Arc<dyn PeerConnection>>,
    ) -> bool {
        let removed = {
            let mut g = self.lock();
            let Some(r) = g.get_mut(room) else {
                return false;
            };
            match (r.publishers.get(identity), pc_id) {
                // A newer publication replaced this one.
                (Some(p), Some(pc)) if !Arc::ptr_eq(&p.pc, pc) => return false,
                (None, _) => return false,
                _ => {}
            }
            let p = r.publishers.remove(identity);
            r.subs.retain(|(_, target), _| target != identity);
            p
        };
        if let Some(p) = removed {
            info!(room, identity, "publication ended");
            let _ = self.program_events.send(SfuEvent::PublisherGone {
                room: room.to_owned(),
                identity: identity.to_owned(),
            });
            p.end();
            let pc = p.pc.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
            let _ = self.events.send(MediaEvent::Publishing {
                room: room.to_owned(),
                identity: identity.to_owned(),
                publishing: false,
                tracks: Vec::new(),
            });
        }
        true
    }
}

impl Sfu {
    /// Number of published tracks with a known codec.
    pub fn track_count(&self) -> usize {
        self.lock()
            .values()
            .flat_map(|r| r.publishers.values())
            .map(|p| {
                usize::from(p.video.codec().is_some()) + usize::from(p.audio.codec().is_some())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::kinds_offered;

    #[test]
    fn offered_kinds() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=sendonly\r\n";
        assert_eq!(kinds_offered(sdp), (true, true));
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=recvonly\r\nm=video 9 X 102\r\na=sendrecv\r\n";
        assert_eq!(kinds_offered(sdp), (true, false));
        assert_eq!(kinds_offered("garbage"), (false, false));
    }
}
