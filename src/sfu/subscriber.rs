//! A subscription: one peer connection per subscriber and publisher, answered like WHEP;
//! its tasks forward the publisher's packets (rewritten per subscriber) and pass keyframe
//! requests upstream.

use super::*;

pub(super) struct Subscription {
    pub(super) pc: Arc<dyn PeerConnection>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
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

impl Sfu {
    pub(super) async fn start_subscribe(
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
