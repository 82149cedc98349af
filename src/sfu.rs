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

/// A packet as received, for the subscribers and the mixer.
#[derive(Clone, Debug)]
pub struct InPacket {
    /// The RTP packet.
    pub packet: rtp::Packet,
    /// When it was read from the publisher's track.
    pub at: Instant,
}

/// One published track kind.
pub struct PubTrack {
    /// Fan-out to subscribers (and the program).
    pub tx: broadcast::Sender<InPacket>,
    codec: Mutex<Option<RTCRtpCodec>>,
    muted: AtomicBool,
    /// The publisher's clock from its sender reports.
    sender_clock: Mutex<SenderClock>,
}

impl PubTrack {
    fn new() -> Self {
        PubTrack {
            tx: broadcast::channel(1024).0,
            codec: Mutex::new(None),
            muted: AtomicBool::new(false),
            sender_clock: Mutex::new(SenderClock::default()),
        }
    }
    fn set_sender_report(&self, ntp: u64, rtp: u32) {
        crate::sync::lock(&self.sender_clock).report(ntp, rtp);
    }

    /// The RTP timestamp this track had at `unix_ms` on the publisher's own clock, from its
    /// last sender report (`None` before the first one), see [`SenderClock::rtp_at`].
    pub fn rtp_at(&self, unix_ms: f64, clock_rate: f64) -> Option<u32> {
        crate::sync::lock(&self.sender_clock).rtp_at(unix_ms, clock_rate)
    }

    fn codec(&self) -> Option<RTCRtpCodec> {
        crate::sync::lock(&self.codec).clone()
    }
}

/// A co-host's publication.
pub struct Publisher {
    /// Identity.
    pub identity: String,
    pc: Arc<dyn PeerConnection>,
    /// Video (H.264).
    pub video: PubTrack,
    /// Audio (Opus).
    pub audio: PubTrack,
    keyframes: Mutex<KeyframeRequester>,
    kick: Notify,
    ready: watch::Sender<bool>,
    expect_video: bool,
    expect_audio: bool,
    via_whip: AtomicBool,
    /// The room's host (featured by speaker/pip layouts).
    pub is_host: bool,
    video_remote: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    /// The publication's tasks (events, tracks, keyframe requests). They hold the publisher,
    /// and the connection's event and track streams need not end when it is closed, so they
    /// are aborted when the publication ends ([`Publisher::end`]).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Publications alive (dropped ones are gone; more than `cohost_publishers` means a leak).
pub static PUBLISHERS_ALIVE: AtomicUsize = AtomicUsize::new(0);

impl Drop for Publisher {
    fn drop(&mut self) {
        PUBLISHERS_ALIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Publisher {
    fn add_task(&self, t: tokio::task::JoinHandle<()>) {
        let mut g = crate::sync::lock(&self.tasks);
        g.retain(|t| !t.is_finished());
        g.push(t);
    }

    /// Ends the publication's tasks (they hold `Arc`s of it), so it is freed.
    fn end(&self) {
        for t in crate::sync::lock(&self.tasks).drain(..) {
            t.abort();
        }
        *crate::sync::lock(&self.video_remote) = None;
    }

    /// Asks for a keyframe: a PLI is sent now if none went out in the last
    /// [`PLI_MIN_INTERVAL`], and repeated every [`PLI_RETRY`] until a keyframe arrives.
    pub fn request_keyframe(&self) {
        crate::sync::lock(&self.keyframes).want();
        self.kick.notify_one();
    }

    fn track(&self, kind: RtpCodecKind) -> &PubTrack {
        if kind == RtpCodecKind::Audio {
            &self.audio
        } else {
            &self.video
        }
    }
}

struct Subscription {
    pc: Arc<dyn PeerConnection>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Closing is async; without a runtime (process teardown) the connection just drops.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pc = self.pc.clone();
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
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

    async fn start_publish(
        self: &Arc<Self>,
        room: &str,
        identity: &str,
        offer: String,
        opts: PublishOptions,
    ) -> Result<String, MediaError> {
        let (expect_video, expect_audio) = kinds_offered(&offer);
        if !expect_video && !expect_audio {
            return Err(MediaError::BadSdp(
                "the offer sends no audio or video".into(),
            ));
        }
        let peer = self.engine.new_peer().await?;
        let pc = &peer.pc;
        PUBLISHERS_ALIVE.fetch_add(1, Ordering::Relaxed);
        let publisher = Arc::new(Publisher {
            identity: identity.to_owned(),
            pc: pc.clone(),
            video: PubTrack::new(),
            audio: PubTrack::new(),
            keyframes: Mutex::new(KeyframeRequester::wanting()),
            kick: Notify::new(),
            ready: watch::channel(false).0,
            expect_video,
            expect_audio,
            via_whip: AtomicBool::new(opts.whip),
            is_host: opts.host,
            video_remote: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        // A mute the host set before this publication holds for it too.
        publisher
            .audio
            .muted
            .store(opts.audio_muted, Ordering::Relaxed);
        publisher
            .video
            .muted
            .store(opts.video_muted, Ordering::Relaxed);
        let answer = match peer.answer(offer).await {
            Ok(a) => a,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e.into());
            }
        };
        // Replace an older publication of the same identity.
        let old = self
            .lock()
            .entry(room.to_owned())
            .or_default()
            .publishers
            .insert(identity.to_owned(), publisher.clone());
        if let Some(old) = old {
            old.end();
            let pc = old.pc.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
        self.spawn_publisher(room, publisher, peer.events);
        info!(
            room,
            identity,
            video = expect_video,
            audio = expect_audio,
            "publishing"
        );
        Ok(answer)
    }

    fn spawn_publisher(
        self: &Arc<Self>,
        room: &str,
        p: Arc<Publisher>,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
    ) {
        let span = info_span!("publisher", room = %room, identity = %p.identity);
        // Keyframe requester: throttled, repeated while wanted.
        {
            let pk = p.clone();
            let m = self.metrics.clone();
            let task = tokio::spawn(
                async move {
                    let p = pk;
                    loop {
                        // Until the requester's next chance, or a new want (at most a retry
                        // period, to notice the publisher going away).
                        let now = Instant::now();
                        let next = crate::sync::lock(&p.keyframes)
                            .poll_timeout(now)
                            .unwrap_or(now + PLI_RETRY);
                        let _ = tokio::time::timeout_at(next.into(), p.kick.notified()).await;
                        if Arc::strong_count(&p) == 1 {
                            break;
                        }
                        let track = p.video_remote().await;
                        let Some((track, ssrc)) = track else { continue };
                        if !crate::sync::lock(&p.keyframes).poll(Instant::now()) {
                            continue;
                        }
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: ssrc,
                        };
                        if track.write_rtcp(vec![Box::new(pli)]).await.is_err() {
                            break;
                        }
                        m.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        debug!("PLI sent");
                    }
                }
                .instrument(span.clone()),
            );
            p.add_task(task);
        }
        let sfu = self.clone();
        let room = room.to_owned();
        let pe = p.clone();
        let task = tokio::spawn(
            async move {
                let p = pe;
                while let Some(ev) = events.recv().await {
                    match ev {
                        PeerEvent::Track(track) => sfu.on_publisher_track(&room, &p, track).await,
                        PeerEvent::State(s) => {
                            debug!(state = %s, "publisher connection");
                            if matches!(
                                s,
                                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                            ) {
                                break;
                            }
                        }
                    }
                }
                let whip = p.via_whip.load(Ordering::Relaxed);
                // A publication replaced by a newer one (a WHIP publisher posting again) does
                // not end the participant's session.
                if sfu.remove_publisher(&room, &p.identity, Some(&p.pc)) && whip {
                    let _ = sfu.events.send(MediaEvent::WhipEnded {
                        room: room.clone(),
                        identity: p.identity.clone(),
                    });
                }
            }
            .instrument(span),
        );
        p.add_task(task);
    }

    async fn on_publisher_track(
        self: &Arc<Self>,
        room: &str,
        p: &Arc<Publisher>,
        track: Arc<dyn TrackRemote>,
    ) {
        let kind = track.kind().await;
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let codec = track.codec(ssrc).await;
        info!(?kind, ssrc, codec = ?codec.as_ref().map(|c| c.mime_type.clone()), "track");
        {
            let pt = p.track(kind);
            *crate::sync::lock(&pt.codec) = codec;
        }
        if kind == RtpCodecKind::Video {
            p.set_video_remote(track.clone(), ssrc);
            p.request_keyframe();
        }
        let ready = (!p.expect_video || p.video.codec().is_some())
            && (!p.expect_audio || p.audio.codec().is_some());
        if ready && !*p.ready.borrow() {
            p.ready.send_replace(true);
            let _ = self.program_events.send(SfuEvent::PublisherReady {
                room: room.to_owned(),
                publisher: p.clone(),
            });
            let tracks = [(MediaKind::Video, &p.video), (MediaKind::Audio, &p.audio)]
                .into_iter()
                .filter_map(|(kind, t)| {
                    Some(TrackInfo {
                        kind,
                        codec: t.codec()?.mime_type,
                    })
                })
                .collect();
            let _ = self.events.send(MediaEvent::Publishing {
                room: room.to_owned(),
                identity: p.identity.clone(),
                publishing: true,
                tracks,
            });
        }
        let pt = p.clone();
        let m = self.metrics.clone();
        let task = tokio::spawn(
            async move {
                let p = pt;
                while let Some(ev) = track.poll().await {
                    let packet = match ev {
                        TrackRemoteEvent::OnRtpPacket(packet) => packet,
                        TrackRemoteEvent::OnRtcpPacket(pkts) => {
                            for x in &pkts {
                                if let Some(sr) = x
                                    .as_any()
                                    .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                                {
                                    p.track(kind).set_sender_report(sr.ntp_time, sr.rtp_time);
                                }
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    m.packets_in.fetch_add(1, Ordering::Relaxed);
                    m.bytes_in
                        .fetch_add((packet.payload.len() + 12) as u64, Ordering::Relaxed);
                    let t = p.track(kind);
                    if kind == RtpCodecKind::Video && rtp_payload_is_keyframe(&packet.payload) {
                        crate::sync::lock(&p.keyframes).keyframe_seen();
                    }
                    if t.muted.load(Ordering::Relaxed) {
                        continue;
                    }
                    let _ = t.tx.send(InPacket {
                        packet,
                        at: Instant::now(),
                    });
                }
                debug!(?kind, "remote track ended");
            }
            .in_current_span(),
        );
        p.add_task(task);
    }

    async fn start_subscribe(
        self: &Arc<Self>,
        room: &str,
        subscriber: &str,
        target: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        let p = self
            .publisher(room, target)
            .ok_or_else(|| MediaError::NotFound(format!("`{target}` is not publishing")))?;
        let mut ready = p.ready.subscribe();
        if tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r))
            .await
            .is_err()
        {
            return Err(MediaError::Unavailable(format!(
                "`{target}`'s tracks are not ready"
            )));
        }
        let peer = self.engine.new_peer().await?;
        let mut locals = Vec::new();
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            let Some(codec) = p.track(kind).codec() else {
                continue;
            };
            let ssrc: u32 = rand::random();
            let k = if kind == RtpCodecKind::Video {
                "video"
            } else {
                "audio"
            };
            let track = Arc::new(TrackLocalStaticRTP::new(crate::rtc::local_track(
                target.to_owned(),
                format!("{target}-{k}"),
                kind,
                ssrc,
                codec.clone(),
            )));
            let sender = peer
                .pc
                .add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| MediaError::Internal(e.to_string()))?;
            locals.push((kind, codec, ssrc, track, sender));
        }
        let answer = match peer.answer(offer).await {
            Ok(a) => a,
            Err(e) => {
                let _ = peer.pc.close().await;
                return Err(e.into());
            }
        };
        let span =
            info_span!("subscription", room = %room, subscriber = %subscriber, target = %target);
        let mut tasks = Vec::new();
        for (kind, codec, ssrc, track, sender) in locals {
            // The payload type this subscriber negotiated for the publisher's codec.
            let params = sender.get_parameters().await.ok();
            let pt = params.as_ref().and_then(|prm| {
                prm.rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| {
                        c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
                            && (kind == RtpCodecKind::Audio
                                || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
                    })
                    .map(|c| c.payload_type)
            });
            let Some(pt) = pt else {
                debug!(?kind, "subscriber did not accept this kind");
                continue;
            };
            let mut rx = p.track(kind).tx.subscribe();
            let m = self.metrics.clone();
            let pub_ = p.clone();
            let t2 = track.clone();
            tasks.push(tokio::spawn(
                async move {
                    let mut fwd = Forwarder::new(kind == RtpCodecKind::Video, ssrc, pt);
                    loop {
                        let pkt = match rx.recv().await {
                            Ok(pkt) => pkt,
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                m.packets_dropped.fetch_add(n, Ordering::Relaxed);
                                fwd.lost();
                                if fwd.waiting_for_keyframe() {
                                    pub_.request_keyframe();
                                }
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        };
                        let at = pkt.at;
                        let mut packet = pkt.packet;
                        if !fwd.rewrite(&mut packet) {
                            continue;
                        }
                        let len = packet.payload.len() + 12;
                        if t2.write_rtp(packet).await.is_err() {
                            break;
                        }
                        if let Some(f) = FORWARD_OBSERVER.get() {
                            f(at);
                        }
                        m.packets_out.fetch_add(1, Ordering::Relaxed);
                        m.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
                    }
                }
                .instrument(span.clone()),
            ));
            if kind == RtpCodecKind::Video {
                let pub_ = p.clone();
                tasks.push(tokio::spawn(
                    async move {
                        while let Some(ev) = track.poll().await {
                            let TrackLocalEvent::OnRtcpPacket(pkts) = ev else {
                                continue;
                            };
                            if pkts.iter().any(|x| is_keyframe_request(x.as_ref())) {
                                pub_.request_keyframe();
                            }
                        }
                    }
                    .instrument(span.clone()),
                ));
            }
        }
        p.request_keyframe();
        let Peer { pc, events, .. } = peer;
        {
            let sfu = self.clone();
            let room = room.to_owned();
            let key = (subscriber.to_owned(), target.to_owned());
            let pc2 = pc.clone();
            let mut events = events;
            tasks.push(tokio::spawn(
                async move {
                    while let Some(ev) = events.recv().await {
                        if let PeerEvent::State(s) = ev {
                            if matches!(
                                s,
                                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                            ) {
                                break;
                            }
                        }
                    }
                    let mut g = sfu.lock();
                    if let Some(r) = g.get_mut(&room) {
                        if r.subs.get(&key).is_some_and(|s| Arc::ptr_eq(&s.pc, &pc2)) {
                            r.subs.remove(&key);
                        }
                    }
                }
                .instrument(span),
            ));
        }
        let old = self.lock().entry(room.to_owned()).or_default().subs.insert(
            (subscriber.to_owned(), target.to_owned()),
            Subscription { pc, tasks },
        );
        drop(old);
        info!(room, subscriber, target, "subscribed");
        Ok(answer)
    }
}

impl Publisher {
    async fn video_remote(&self) -> Option<(Arc<dyn TrackRemote>, u32)> {
        crate::sync::lock(&self.video_remote).clone()
    }
    fn set_video_remote(&self, t: Arc<dyn TrackRemote>, ssrc: u32) {
        *crate::sync::lock(&self.video_remote) = Some((t, ssrc));
    }
}

#[async_trait::async_trait]
impl MediaBackend for SfuBackend {
    async fn publish(
        &self,
        room: &str,
        identity: &str,
        offer: String,
        opts: PublishOptions,
    ) -> Result<String, MediaError> {
        self.sfu.start_publish(room, identity, offer, opts).await
    }
    async fn unpublish(&self, room: &str, identity: &str) {
        self.sfu.remove_publisher(room, identity, None);
    }
    async fn subscribe(
        &self,
        room: &str,
        subscriber: &str,
        target: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        self.sfu
            .start_subscribe(room, subscriber, target, offer)
            .await
    }
    async fn ice_ufrags(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
    ) -> Option<(String, String)> {
        let conn = self.session_pc(room, identity, pc)?;
        let ours = conn.local_description().await?;
        let theirs = conn.remote_description().await?;
        Some((
            signaling::trickle::sdp_ufrag(&ours.sdp)?.to_owned(),
            signaling::trickle::sdp_ufrag(&theirs.sdp)?.to_owned(),
        ))
    }
    async fn room_emptied(&self, room: &str) {
        if let Some(p) = &self.program {
            p.forget_idle(room);
        }
    }
    async fn subscribers(&self, room: &str) -> Vec<String> {
        self.sfu
            .lock()
            .get(room)
            .map(|r| r.subs.keys().map(|(sub, _)| sub.clone()).collect())
            .unwrap_or_default()
    }
    async fn unsubscribe(&self, room: &str, subscriber: &str, target: &str) -> bool {
        let sub = self
            .sfu
            .lock()
            .get_mut(room)
            .and_then(|r| r.subs.remove(&(subscriber.to_owned(), target.to_owned())));
        sub.is_some()
    }
    async fn add_candidate(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
        candidate: serde_json::Value,
    ) -> Result<(), MediaError> {
        let init: rtc::peer_connection::transport::RTCIceCandidateInit =
            serde_json::from_value(candidate)
                .map_err(|e| MediaError::BadRequest(format!("candidate: {e}")))?;
        if init.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        let conn = self
            .session_pc(room, identity, pc)
            .ok_or_else(|| MediaError::NotFound(format!("peer connection `{pc}`")))?;
        conn.add_ice_candidate(init)
            .await
            .map_err(|e| MediaError::BadSdp(format!("candidate: {e}")))
    }
    async fn restart_ice(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
        ufrag: &str,
        pwd: &str,
    ) -> Result<String, MediaError> {
        let conn = self
            .session_pc(room, identity, pc)
            .ok_or_else(|| MediaError::NotFound(format!("peer connection `{pc}`")))?;
        crate::rtc::restart_ice(&conn, ufrag, pwd)
            .await
            .map_err(|e| MediaError::BadSdp(format!("ICE restart: {e}")))
    }
    async fn set_muted(&self, room: &str, identity: &str, kind: MediaKind, muted: bool) {
        if let Some(p) = self.sfu.publisher(room, identity) {
            let t = if kind == MediaKind::Audio {
                &p.audio
            } else {
                &p.video
            };
            t.muted.store(muted, Ordering::Relaxed);
            if kind == MediaKind::Video && !muted {
                p.request_keyframe();
            }
        }
    }
    async fn leave(&self, room: &str, identity: &str) {
        self.sfu.remove_publisher(room, identity, None);
        let subs: Vec<Subscription> = {
            let mut g = self.sfu.lock();
            let Some(r) = g.get_mut(room) else { return };
            let keys: Vec<_> = r
                .subs
                .keys()
                .filter(|(s, _)| s == identity)
                .cloned()
                .collect();
            keys.into_iter().filter_map(|k| r.subs.remove(&k)).collect()
        };
        drop(subs);
        let mut g = self.sfu.lock();
        if g.get(room)
            .is_some_and(|r| r.publishers.is_empty() && r.subs.is_empty())
        {
            g.remove(room);
        }
    }
    async fn create_room(
        &self,
        room: &str,
        mix: Option<serde_json::Value>,
    ) -> Result<(), MediaError> {
        if let Some(p) = &self.program {
            p.create_room(room, mix)?;
        }
        Ok(())
    }
    async fn close_room(&self, room: &str) {
        let r = self.sfu.lock().remove(room);
        if let Some(r) = r {
            for p in r.publishers.values() {
                let pc = p.pc.clone();
                tokio::spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
        if let Some(p) = &self.program {
            p.close_room(room);
        }
    }
    async fn room_info(&self, room: &str) -> serde_json::Value {
        let tracks: Vec<serde_json::Value> = {
            let g = self.sfu.lock();
            g.get(room)
                .map(|r| {
                    r.publishers
                        .values()
                        .map(|p| {
                            serde_json::json!({
                                "identity": p.identity,
                                "video": p.video.codec().map(|c| c.mime_type),
                                "audio": p.audio.codec().map(|c| c.mime_type),
                                "video_muted": p.video.muted.load(Ordering::Relaxed),
                                "audio_muted": p.audio.muted.load(Ordering::Relaxed),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let program = match &self.program {
            Some(p) => Some(p.room_info(room).await),
            None => None,
        };
        serde_json::json!({"tracks": tracks, "program": program})
    }
    async fn set_layout(
        &self,
        room: &str,
        layout: serde_json::Value,
    ) -> Result<serde_json::Value, MediaError> {
        match &self.program {
            Some(p) => p.set_layout(room, layout),
            None => Err(MediaError::Unavailable("no program pipeline".into())),
        }
    }
    async fn cue(
        &self,
        room: &str,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
        at_capture_ms: Option<f64>,
    ) -> Result<CueAck, MediaError> {
        match &self.program {
            Some(p) => p.cue(room, id, data, repeat, at_capture_ms).await,
            None => Err(MediaError::Unavailable("no program pipeline".into())),
        }
    }
    async fn subscribe_program(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        match &self.program {
            Some(p) => p.subscribe(room, viewer, offer).await,
            None => Err(MediaError::Unavailable(
                "the program is not available".into(),
            )),
        }
    }
    async fn unsubscribe_program(&self, room: &str, viewer: &str) -> bool {
        match &self.program {
            Some(p) => p.unsubscribe(room, viewer).await,
            None => false,
        }
    }
}

/// What the live program offers the API (layout, cues, program viewers, room info).
#[async_trait::async_trait]
pub trait ProgramControl: Send + Sync + 'static {
    /// Creates a room's program config.
    fn create_room(&self, room: &str, mix: Option<serde_json::Value>) -> Result<(), MediaError>;
    /// Drops a room's program.
    fn close_room(&self, room: &str);
    /// Frees a room's program state if no program runs, it was not created through the API
    /// and it has no outputs (see [`MediaBackend::room_emptied`]).
    fn forget_idle(&self, room: &str);
    /// Program state for the API.
    async fn room_info(&self, room: &str) -> serde_json::Value;
    /// Applies a layout.
    fn set_layout(
        &self,
        room: &str,
        layout: serde_json::Value,
    ) -> Result<serde_json::Value, MediaError>;
    /// Stamps a cue.
    async fn cue(
        &self,
        room: &str,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
        at_capture_ms: Option<f64>,
    ) -> Result<CueAck, MediaError>;
    /// A WHEP program viewer.
    async fn subscribe(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError>;
    /// Ends a WHEP program viewer; `false` if there was none.
    async fn unsubscribe(&self, room: &str, viewer: &str) -> bool;
    /// A WHEP program viewer's peer connection (trickle ICE).
    fn viewer_pc(&self, room: &str, viewer: &str) -> Option<Arc<dyn PeerConnection>>;
}

impl SfuBackend {
    /// A session's peer connection: the publication of `identity`, its subscription to a
    /// target, or the program viewer `identity`'s.
    fn session_pc(
        &self,
        room: &str,
        identity: &str,
        pc: &PeerConnId,
    ) -> Option<Arc<dyn PeerConnection>> {
        if *pc == PeerConnId::Program {
            return self.program.as_ref()?.viewer_pc(room, identity);
        }
        let g = self.sfu.lock();
        let r = g.get(room)?;
        match pc {
            PeerConnId::Publish => r.publishers.get(identity).map(|p| p.pc.clone()),
            PeerConnId::Subscribe(target) => r
                .subs
                .get(&(identity.to_owned(), target.clone()))
                .map(|s| s.pc.clone()),
            PeerConnId::Program => None,
        }
    }
}

/// The [`MediaBackend`] the server hands to signaling: the SFU plus, when attached, the program.
pub struct SfuBackend {
    /// The SFU.
    pub sfu: Arc<Sfu>,
    /// The live program, if any.
    pub program: Option<Arc<dyn ProgramControl>>,
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
