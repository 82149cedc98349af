//! The control surface of the programs (`ProgramControl`): rooms' mix, layout, cues on time, outputs and WHEP viewers as the API and signaling see them.

use super::*;

/// Longest a cue waits for the host frame it refers to.
const CUE_WAIT_MAX: Duration = Duration::from_millis(1500);

impl Programs {
    /// Cues on time: the host's frame captured at `at_capture_ms` (the host's own clock, e.g.
    /// `performance.timeOrigin + performance.now()` when the button was pressed) as (host
    /// identity, RTP timestamp), so the mixer stamps the cue into the program frame that shows
    /// it rather than into whatever frame is next when the request arrives. The capture time
    /// is mapped to the host video's RTP clock through the host's RTCP sender reports (whose
    /// NTP time is the same clock), so no clock needs to agree with the server's. `None`
    /// without a host publishing or a sender report yet.
    fn capture_rtp(&self, room: &str, at_capture_ms: f64) -> Option<(String, u32)> {
        let host = self.host_publisher(room)?;
        let ts = host.video.rtp_at(at_capture_ms, 90_000.0)?;
        // The picture nearest the press, not the first after it: capture times and RTP
        // timestamps each carry a few ms of rounding (half a frame at 30 fps).
        Some((host.identity.clone(), ts.wrapping_sub(1500)))
    }
}

/// Media sequence numbers skipped when a room's HLS goes on on another node.
const HLS_RESUME_MARGIN: u64 = 5;

/// What of a room created through the API survives its node (cluster mode): its mix, layout
/// and RTMP outputs (id and whole URL: the stream key is a secret, encrypted by whoever
/// stores it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoomSnapshot {
    /// The room's mix.
    pub mix: MixConfig,
    /// Its layout.
    pub layout: Layout,
    /// Its RTMP outputs: (id, URL).
    pub outputs: Vec<(String, String)>,
    /// Where its HLS stream stood: (next media sequence, discontinuities so far).
    #[serde(default)]
    pub hls: Option<(u64, u64)>,
    /// The answers to its latest cue ids (a client retrying a cue after the room moved gets
    /// the first answer, not a second cue).
    #[serde(default)]
    pub cues: Vec<(String, u64)>,
}

/// Cue answers a room takes to another node.
const CUES_CARRIED: usize = 256;

impl Programs {
    /// The room's state to keep, if it was created or configured through the API.
    pub fn snapshot(&self, room: &str) -> Option<RoomSnapshot> {
        let g = lock(&self.rooms);
        let r = g.get(room).filter(|r| r.persistent)?;
        Some(RoomSnapshot {
            mix: r.mix.clone(),
            layout: r.layout.clone(),
            outputs: r.outputs.rtmp_destinations(),
            hls: r.outputs.hls().position(),
            cues: r.cues.recent(CUES_CARRIED),
        })
    }

    /// Gives a room created here (with `snap.mix`) the layout and outputs it had on its
    /// previous node; the outputs push again from here.
    pub fn restore(&self, room: &str, snap: RoomSnapshot) {
        let _ = ProgramControl::set_layout(self, room, snap.layout);
        if let Some(r) = lock(&self.rooms).get_mut(room) {
            for (id, pts_ms) in &snap.cues {
                r.cues.remember(id, *pts_ms);
            }
        }
        if let Some(o) = self.outputs(room, true) {
            if let Some((next, disc)) = snap.hls {
                // The position is saved with the room's other changes, not at every segment,
                // so the old node may have cut many more since. Segments last at least a
                // second and a program numbers them from 0, so numbering from the Unix time in
                // seconds is past any number the old node used (for programs younger than
                // decades), and past the saved one in any case.
                let now_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                o.continue_hls(((next + HLS_RESUME_MARGIN).max(now_s), disc));
            }
            for (id, url) in snap.outputs {
                if let Err(e) = o.restore_rtmp(&id, &url) {
                    warn!(room, id, error = %e, "output not restored");
                }
            }
        }
    }
}

fn cue_error(e: CueError) -> MediaError {
    match e {
        CueError::TooLarge { .. } => MediaError::TooLarge(e.to_string()),
        CueError::Stopped => MediaError::Unavailable(e.to_string()),
        _ => MediaError::BadRequest(e.to_string()),
    }
}

#[async_trait::async_trait]
impl ProgramControl for Programs {
    fn create_room(&self, room: &str, mix: Option<MixConfig>) -> Result<(), MediaError> {
        let mix = mix.unwrap_or_else(|| self.config.default_mix.clone());
        mix.validate()
            .map_err(|e| MediaError::BadRequest(format!("mix: {e}")))?;
        let mut g = lock(&self.rooms);
        match g.get_mut(room) {
            Some(r) if r.running.is_some() => {
                return Err(MediaError::BadRequest(
                    "the room's program is running; its mix cannot change now".into(),
                ))
            }
            Some(r) => {
                r.layout = mix.layout.clone();
                // The outputs announce what the program will be.
                r.outputs.set_metadata(&metadata(&mix));
                r.mix = mix;
                r.persistent = true;
            }
            None => {
                let mut r = RoomProgram::new(room, mix, self);
                r.persistent = true;
                g.insert(room.to_owned(), r);
            }
        }
        Ok(())
    }

    fn forget_idle(&self, room: &str) {
        let mut g = lock(&self.rooms);
        let idle = g.get(room).is_some_and(|r| {
            r.running.is_none()
                && !r.persistent
                && r.viewers.is_empty()
                && r.waiting.is_empty()
                && r.outputs.outputs().is_empty()
        });
        if idle {
            g.remove(room);
        }
    }

    fn close_room(&self, room: &str) {
        if let Some(run) = lock(&self.rooms)
            .get_mut(room)
            .and_then(|r| r.running.as_mut())
        {
            for (_, t) in run.feeders.drain() {
                t.iter().for_each(|t| t.abort());
            }
        }
        if let Some(me) = self.me.upgrade() {
            let room = room.to_owned();
            tokio::spawn(async move { me.stop(&room, true).await });
        }
    }

    async fn room_info(&self, room: &str) -> Value {
        let (mut info, driver) = {
            let g = lock(&self.rooms);
            let Some(r) = g.get(room) else {
                return Value::Null;
            };
            let info = json!({
                "running": r.running.is_some(),
                "waiting_for_slot": r.running.is_none() && !r.waiting.is_empty(),
                "mix": r.mix,
                "layout": r.layout,
                "outputs": r.outputs.outputs(),
                "hls": format!("/live/{room}/index.m3u8"),
                "whep_viewers": r.viewers.len(),
            });
            (info, r.running.as_ref().map(|x| x.driver.handle()))
        };
        if let Some(h) = driver {
            // A short round trip to the mixer thread, off the async workers.
            if let Ok(Ok(st)) = tokio::task::spawn_blocking(move || h.state()).await {
                info["regions"] = json!(st.regions);
                info["frames"] = json!(st.video_frames);
                info["inputs"] = json!(st.inputs);
            }
        }
        info
    }

    fn set_layout(&self, room: &str, l: Layout) -> Result<Layout, MediaError> {
        let mut g = lock(&self.rooms);
        let r = g
            .entry(room.to_owned())
            .or_insert_with(|| RoomProgram::new(room, self.config.default_mix.clone(), self));
        r.layout = l.clone();
        if let Some(run) = &r.running {
            run.driver
                .set_layout(l.clone())
                .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        }
        Ok(l)
    }

    fn set_decor(
        &self,
        room: &str,
        change: crate::studio::DecorChange,
    ) -> Result<mixer::decor::Decor, MediaError> {
        let mut g = lock(&self.rooms);
        let r = g
            .entry(room.to_owned())
            .or_insert_with(|| RoomProgram::new(room, self.config.default_mix.clone(), self));
        let decor = change.apply(r.mix.decor());
        decor
            .validate()
            .map_err(|e| MediaError::BadRequest(e.to_string()))?;
        // The mix shows (and carries to another node) the decor as it is now.
        r.mix.overlays = decor.overlays.clone();
        r.mix.background_image = decor.background_image.clone();
        r.mix.labels = decor.labels;
        if let Some(run) = &r.running {
            run.driver
                .set_decor(decor.clone())
                .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        }
        Ok(decor)
    }

    async fn cue(
        &self,
        room: &str,
        id: &str,
        data: Value,
        repeat: u32,
        at_capture_ms: Option<f64>,
    ) -> Result<CueAck, MediaError> {
        // Cues on time: the host's frame captured at `at_capture_ms`, on the host video's RTP
        // clock (through its sender reports).
        let at = at_capture_ms.and_then(|t| self.capture_rtp(room, t));
        let driver = {
            let mut g = lock(&self.rooms);
            if let Some(pts_ms) = g.get(room).and_then(|r| r.cues.answered(id)) {
                return Ok(CueAck {
                    id: id.to_owned(),
                    pts_ms,
                    duplicate: true,
                });
            }
            let r = match g.get_mut(room) {
                Some(r) if r.running.is_some() => r,
                other => return Err(self.no_program(room, other.map(|r| &*r))),
            };
            if !r.cues.take_slot(
                Instant::now(),
                self.config.cue_limit,
                self.config.cue_window,
            ) {
                return Err(MediaError::RateLimited(format!(
                    "at most {} cues per {} s per room",
                    self.config.cue_limit,
                    self.config.cue_window.as_secs()
                )));
            }
            r.running.as_ref().map(|x| x.driver.clone())
        };
        let Some(driver) = driver else {
            return Err(MediaError::Unavailable("no program".into()));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = move |r| {
            let _ = tx.send(r);
        };
        match at {
            Some((identity, rtp_ts)) => driver.handle().cue_when_shown_then(
                id,
                data,
                repeat,
                &identity,
                rtp_ts,
                CUE_WAIT_MAX,
                reply,
            ),
            None => driver.handle().cue_then(id, data, repeat, reply),
        }
        .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        let res = rx
            .await
            .map_err(|_| MediaError::Unavailable("the program stopped".into()))
            .and_then(|r| r.map_err(cue_error));
        if res.as_ref().map_or(true, |a| a.duplicate) {
            // A refused cue, or an id seen before, is not a new cue: give its slot back.
            if let Some(r) = lock(&self.rooms).get_mut(room) {
                r.cues.give_back();
            }
        }
        let ack = res?;
        if !ack.duplicate {
            self.metrics.cues.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = lock(&self.rooms).get_mut(room) {
            r.cues.remember(&ack.id, ack.pts_ms);
        }
        Ok(CueAck {
            id: ack.id,
            pts_ms: ack.pts_ms,
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        self.add_viewer(room, viewer, offer).await
    }

    async fn unsubscribe(&self, room: &str, viewer: &str) -> bool {
        self.remove_viewer(room, viewer).await
    }
    fn viewer_pc(&self, room: &str, viewer: &str) -> Option<Arc<dyn PeerConnection>> {
        lock(&self.rooms)
            .get(room)?
            .viewers
            .get(viewer)
            .map(|(pc, _)| pc.clone())
    }
}
