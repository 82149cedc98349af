//! The SFU as signaling's [`MediaBackend`]: publications, subscriptions and sessions'
//! ICE, and the program's part handed to [`ProgramControl`].

use super::*;

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
        // The API's JSON becomes the mixer's types here, at the edge from signaling.
        let mix = mix
            .map(serde_json::from_value::<mixer::MixConfig>)
            .transpose()
            .map_err(|e| MediaError::BadRequest(format!("mix: {e}")))?;
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
        let (layout, decor) = crate::studio::split_layout(layout)
            .map_err(|e| MediaError::BadRequest(format!("layout: {e}")))?;
        let Some(p) = &self.program else {
            return Err(MediaError::Unavailable("no program pipeline".into()));
        };
        // The decor first: a bad overlay changes nothing.
        let decor = match decor {
            Some(d) => Some(p.set_decor(room, d)?),
            None => None,
        };
        let mut applied = match layout {
            Some(l) => serde_json::to_value(p.set_layout(room, l)?),
            None => Ok(serde_json::json!({})),
        }
        .map_err(|e| MediaError::Internal(e.to_string()))?;
        if let (Some(d), Some(o)) = (decor, applied.as_object_mut()) {
            o.insert("overlays".into(), serde_json::json!(d.overlays));
            o.insert(
                "background_image".into(),
                serde_json::json!(d.background_image),
            );
            o.insert("labels".into(), serde_json::json!(d.labels));
        }
        Ok(applied)
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
    fn create_room(&self, room: &str, mix: Option<mixer::MixConfig>) -> Result<(), MediaError>;
    /// Drops a room's program.
    fn close_room(&self, room: &str);
    /// Frees a room's program state if no program runs, it was not created through the API
    /// and it has no outputs (see [`MediaBackend::room_emptied`]).
    fn forget_idle(&self, room: &str);
    /// Program state for the API.
    async fn room_info(&self, room: &str) -> serde_json::Value;
    /// Applies a layout; returns it as applied.
    fn set_layout(&self, room: &str, layout: mixer::Layout) -> Result<mixer::Layout, MediaError>;
    /// Changes the studio decor (overlays, background image, labels) from the next frame;
    /// returns it as applied.
    fn set_decor(
        &self,
        room: &str,
        change: crate::studio::DecorChange,
    ) -> Result<mixer::decor::Decor, MediaError>;
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
