//! A co-host's publication: its tracks, sender clocks and keyframe requests, and the tasks
//! that read its peer connection and fan its packets out.

use super::*;

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
    pub(super) codec: Mutex<Option<RTCRtpCodec>>,
    pub(super) muted: AtomicBool,
    /// The publisher's clock from its sender reports.
    pub(super) sender_clock: Mutex<SenderClock>,
}

impl PubTrack {
    pub(super) fn new() -> Self {
        PubTrack {
            tx: broadcast::channel(1024).0,
            codec: Mutex::new(None),
            muted: AtomicBool::new(false),
            sender_clock: Mutex::new(SenderClock::default()),
        }
    }
    pub(super) fn set_sender_report(&self, ntp: u64, rtp: u32) {
        crate::sync::lock(&self.sender_clock).report(ntp, rtp);
    }

    /// The RTP timestamp this track had at `unix_ms` on the publisher's own clock, from its
    /// last sender report (`None` before the first one), see [`SenderClock::rtp_at`].
    pub fn rtp_at(&self, unix_ms: f64, clock_rate: f64) -> Option<u32> {
        crate::sync::lock(&self.sender_clock).rtp_at(unix_ms, clock_rate)
    }

    /// The latest sender report of this track, for the mixer's lip sync.
    pub fn sender_report(&self) -> Option<mixer::sync::SenderReport> {
        crate::sync::lock(&self.sender_clock)
            .last()
            .map(|(unix_ms, rtp)| mixer::sync::SenderReport { unix_ms, rtp })
    }

    pub(super) fn codec(&self) -> Option<RTCRtpCodec> {
        crate::sync::lock(&self.codec).clone()
    }
}

/// A co-host's publication.
pub struct Publisher {
    /// Identity.
    pub identity: String,
    pub(super) pc: Arc<dyn PeerConnection>,
    /// Video (H.264).
    pub video: PubTrack,
    /// Audio (Opus).
    pub audio: PubTrack,
    pub(super) keyframes: Mutex<KeyframeRequester>,
    pub(super) kick: Notify,
    pub(super) ready: watch::Sender<bool>,
    pub(super) expect_video: bool,
    pub(super) expect_audio: bool,
    pub(super) via_whip: AtomicBool,
    /// The room's host (featured by speaker/pip layouts).
    pub is_host: bool,
    /// Display name (the program's tile label); the identity when it has none.
    pub name: String,
    pub(super) video_remote: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    /// The publication's tasks (events, tracks, keyframe requests). They hold the publisher,
    /// and the connection's event and track streams need not end when it is closed, so they
    /// are aborted when the publication ends ([`Publisher::end`]).
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Publications alive (dropped ones are gone; more than `cohost_publishers` means a leak).
pub static PUBLISHERS_ALIVE: AtomicUsize = AtomicUsize::new(0);

impl Drop for Publisher {
    fn drop(&mut self) {
        PUBLISHERS_ALIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Publisher {
    pub(super) fn add_task(&self, t: tokio::task::JoinHandle<()>) {
        let mut g = crate::sync::lock(&self.tasks);
        g.retain(|t| !t.is_finished());
        g.push(t);
    }

    /// Ends the publication's tasks (they hold `Arc`s of it), so it is freed.
    pub(super) fn end(&self) {
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

    pub(super) fn track(&self, kind: RtpCodecKind) -> &PubTrack {
        if kind == RtpCodecKind::Audio {
            &self.audio
        } else {
            &self.video
        }
    }
}

impl Sfu {
    pub(super) async fn start_publish(
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
            name: opts.name.clone().unwrap_or_else(|| identity.to_owned()),
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

    pub(super) fn spawn_publisher(
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

    pub(super) async fn on_publisher_track(
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
}

impl Publisher {
    pub(super) async fn video_remote(&self) -> Option<(Arc<dyn TrackRemote>, u32)> {
        crate::sync::lock(&self.video_remote).clone()
    }
    pub(super) fn set_video_remote(&self, t: Arc<dyn TrackRemote>, ssrc: u32) {
        *crate::sync::lock(&self.video_remote) = Some((t, ssrc));
    }
}
