//! WHEP program viewers: a peer connection per viewer sending the room's encoded program, within the room's viewer cap.

use super::*;

use webrtc::media_stream::track_local::TrackLocalEvent;

/// Least time between two program keyframes asked for by WHEP viewers' PLI/FIR.
pub const VIEWER_KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

impl Programs {
    pub(super) async fn add_viewer(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        let (media_rx, driver, fps, viewer_keyframe) = {
            let g = lock(&self.rooms);
            let r = g
                .get(room)
                .filter(|r| r.running.is_some())
                .ok_or_else(|| self.no_program(room, g.get(room)))?;
            if self.viewers_full(r) {
                return Err(self.viewers_full_error(room));
            }
            (
                r.media_tx.subscribe(),
                r.running.as_ref().map(|x| x.driver.clone()),
                r.mix.fps.max(1),
                r.running.as_ref().map(|x| x.viewer_keyframe.clone()),
            )
        };
        let peer = self.engine.new_peer().await?;
        let vssrc: u32 = rand::random();
        let assrc: u32 = rand::random();
        let mk = |kind, ssrc, codec: RTCRtpCodec, k: &str| {
            TrackLocalStaticSample::new(
                Instant::now(),
                crate::rtc::local_track(
                    format!("program-{room}"),
                    format!("program-{k}"),
                    kind,
                    ssrc,
                    codec,
                ),
            )
            .map(Arc::new)
            .map_err(|e| MediaError::Internal(e.to_string()))
        };
        let video = mk(
            RtpCodecKind::Video,
            vssrc,
            crate::rtc::h264_codec("42e01f"),
            "video",
        )?;
        let audio = mk(
            RtpCodecKind::Audio,
            assrc,
            crate::rtc::opus_codec(),
            "audio",
        )?;
        let vs = peer
            .pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let as_ = peer
            .pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let answer = match peer.answer(offer).await {
            Ok(a) => a,
            Err(e) => {
                let _ = peer.pc.close().await;
                return Err(e.into());
            }
        };
        let pt_of = |params: Option<rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters>,
                     mime: &str| {
            params.and_then(|p| {
                p.rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    .map(|c| c.payload_type)
            })
        };
        let vpt = pt_of(vs.get_parameters().await.ok(), "video/H264");
        let apt = pt_of(as_.get_parameters().await.ok(), "audio/opus");
        if let Some(d) = &driver {
            let _ = d.request_keyframe();
        }
        // Each picture lasts one frame of the program's rate (its RTP timestamps advance so).
        // webrtc-rs advances the RTP timestamp by `duration × 90 kHz` truncated: 1/30 s as
        // whole nanoseconds (33 333 333) would give 2 999 ticks a picture, the video clock
        // running slow against the audio's. Rounded up, it is exactly 90 000 / fps.
        let frame = Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(fps.max(1))));
        let mut rx = media_rx;
        // Pictures wait for the connection (what is written before DTLS is up is lost): the
        // first one sent is the keyframe asked for once it is connected, not the next GOP's.
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let video_rtcp = video.clone();
        let task = tokio::spawn(
            async move {
                let mut started = false;
                loop {
                    let m = match rx.recv().await {
                        Ok(m) => m,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            started = false;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    match m {
                        ProgramMedia::Video { data, keyframe } => {
                            let Some(pt) = vpt else { continue };
                            if !*connected.borrow() {
                                continue;
                            }
                            started |= keyframe;
                            if !started {
                                continue;
                            }
                            let s = Sample {
                                data,
                                duration: frame,
                                ..Sample::new(Instant::now())
                            };
                            if video.write_sample(vssrc, pt, &s, &[]).await.is_err() {
                                break;
                            }
                        }
                        ProgramMedia::Opus { data } => {
                            let Some(pt) = apt else { continue };
                            let s = Sample {
                                data,
                                duration: Duration::from_millis(20),
                                ..Sample::new(Instant::now())
                            };
                            if audio.write_sample(assrc, pt, &s, &[]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            .instrument(info_span!("whep_program", room = %room, viewer = %viewer)),
        );
        // The viewer's PLI/FIR (a lost picture): a keyframe, at most one per
        // VIEWER_KEYFRAME_INTERVAL for all the room's viewers.
        let rtcp_task = {
            let (video, driver) = (video_rtcp, driver.clone());
            tokio::spawn(async move {
                while let Some(ev) = video.poll().await {
                    let TrackLocalEvent::OnRtcpPacket(pkts) = ev else {
                        continue;
                    };
                    if !pkts
                        .iter()
                        .any(|x| crate::rtc::is_keyframe_request(x.as_ref()))
                    {
                        continue;
                    }
                    let due = viewer_keyframe.as_ref().is_some_and(|last| {
                        let mut last = lock(last);
                        let now = Instant::now();
                        let due =
                            last.is_none_or(|t| now.duration_since(t) >= VIEWER_KEYFRAME_INTERVAL);
                        if due {
                            *last = Some(now);
                        }
                        due
                    });
                    if let (true, Some(d)) = (due, &driver) {
                        let _ = d.request_keyframe();
                    }
                }
            })
        };
        let pc = peer.pc.clone();
        let mut events = peer.events;
        let me = self.me.clone();
        let (room2, viewer2) = (room.to_owned(), viewer.to_owned());
        let watcher = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let crate::rtc::PeerEvent::State(s) = ev {
                    use webrtc::peer_connection::RTCPeerConnectionState as S;
                    if matches!(s, S::Failed | S::Closed) {
                        break;
                    }
                    if s == S::Connected && !*connected_tx.borrow() {
                        let _ = connected_tx.send(true);
                        if let Some(d) = &driver {
                            let _ = d.request_keyframe();
                        }
                    }
                }
            }
            if let Some(me) = me.upgrade() {
                me.remove_viewer(&room2, &viewer2).await;
            }
        });
        let refused: Option<Viewer> = {
            let entry = (pc, vec![task, watcher, rtcp_task]);
            let mut g = lock(&self.rooms);
            match g.get_mut(room) {
                // Others took the last places while this one was being set up.
                Some(r) if self.viewers_full(r) => Some(entry),
                Some(r) => {
                    r.viewers.insert(viewer.to_owned(), entry);
                    if let Some(run) = &r.running {
                        let _ = run.driver.set_opus_output(true);
                    }
                    None
                }
                None => None,
            }
        };
        if let Some((pc, tasks)) = refused {
            tasks.iter().for_each(|t| t.abort());
            let _ = pc.close().await;
            return Err(self.viewers_full_error(room));
        }
        info!(room, viewer, "program viewer");
        Ok(answer)
    }

    pub(super) fn viewers_full(&self, r: &RoomProgram) -> bool {
        self.config.max_viewers > 0 && r.viewers.len() >= self.config.max_viewers
    }

    pub(super) fn viewers_full_error(&self, room: &str) -> MediaError {
        MediaError::Unavailable(format!(
            "the program of `{room}` has its {} WHEP viewers; the audience watches /live/{room}/index.m3u8 or the CDN",
            self.config.max_viewers
        ))
    }

    pub(super) async fn remove_viewer(&self, room: &str, viewer: &str) -> bool {
        let v = lock(&self.rooms).get_mut(room).and_then(|r| {
            let v = r.viewers.remove(viewer);
            if let (true, Some(run)) = (r.viewers.is_empty(), &r.running) {
                let _ = run.driver.set_opus_output(false);
            }
            v
        });
        let Some((pc, tasks)) = v else {
            return false;
        };
        tasks.iter().for_each(|t| t.abort());
        let _ = pc.close().await;
        true
    }
}
