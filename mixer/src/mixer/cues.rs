//! Cues: the SEI payloads for the layout and app cues, and stamping them into the frames
//! they belong to (at once, or when the host's picture captured at a given time is shown).

use super::*;

pub(super) struct DeferredCue {
    id: String,
    data: serde_json::Value,
    repeat: u32,
    identity: String,
    rtp_ts: u32,
    give_up_after: Duration,
    /// Set at the first frame after the request (the mixer's clock may not be known before).
    give_up_at: Option<Duration>,
}

/// Is RTP time `a` at or after `b` (modulo wrap-around)?
pub(super) fn rtp_at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

pub(super) struct PendingCue {
    pub(super) sei: Vec<u8>,
    pub(super) remaining: u32,
}

#[derive(Serialize)]
pub(super) struct LayoutSeiRegion<'a> {
    identity: &'a str,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    z: i32,
    audio: f64,
}

#[derive(Serialize)]
pub(super) struct LayoutSei<'a> {
    v: u32,
    pts_ms: u64,
    w: u32,
    h: u32,
    regions: Vec<LayoutSeiRegion<'a>>,
}

#[derive(Serialize)]
pub(super) struct CueSei<'a> {
    v: u32,
    id: &'a str,
    pts_ms: u64,
    data: &'a serde_json::Value,
}

/// Builds the layout SEI user data (JSON) for a frame.
pub fn layout_sei_json(
    pts_ms: u64,
    w: u32,
    h: u32,
    regions: &[Region],
    level: impl Fn(&str) -> f32,
) -> Vec<u8> {
    let sei = LayoutSei {
        v: 1,
        pts_ms,
        w,
        h,
        regions: regions
            .iter()
            .map(|r| LayoutSeiRegion {
                identity: &r.identity,
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                z: r.z,
                audio: (f64::from(level(&r.identity).clamp(0.0, 1.0)) * 100.0).round() / 100.0,
            })
            .collect(),
    };
    serde_json::to_vec(&sei).unwrap_or_default()
}

/// Builds the cue SEI user data (JSON).
pub fn cue_sei_json(id: &str, pts_ms: u64, data: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&CueSei {
        v: 1,
        id,
        pts_ms,
        data,
    })
    .unwrap_or_default()
}

impl Mixer {
    /// Stamps a cue into the next encoded frame and `repeat - 1` following frames
    /// (`repeat` is clamped to `1..=`[`MAX_CUE_REPEAT`]). The same id again returns the first answer (with
    /// `duplicate` set) and queues nothing. Fails if the SEI payload would exceed 255 bytes.
    pub fn cue(
        &mut self,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
    ) -> Result<CueAck, CueError> {
        if let Some(ack) = self.cue_acks.get(id) {
            return Ok(CueAck {
                duplicate: true,
                ..ack.clone()
            });
        }
        if id.is_empty() {
            return Err(CueError::InvalidId);
        }
        let pts_ms = self.next_pts_ms();
        let json = cue_sei_json(id, pts_ms, &data);
        let size = 16 + json.len();
        if size > MAX_CUE_PAYLOAD {
            return Err(CueError::TooLarge {
                size,
                max: MAX_CUE_PAYLOAD,
            });
        }
        self.cues.push(PendingCue {
            sei: h264::build_user_data_sei(&h264::CUE_SEI_UUID, &json),
            remaining: repeat.clamp(1, MAX_CUE_REPEAT),
        });
        let ack = CueAck {
            id: id.to_owned(),
            pts_ms,
            duplicate: false,
        };
        self.cue_acks.insert(id.to_owned(), ack.clone());
        self.cue_order.push_back(id.to_owned());
        while self.cue_order.len() > CUE_MEMORY {
            if let Some(old) = self.cue_order.pop_front() {
                self.cue_acks.remove(&old);
            }
        }
        Ok(ack)
    }

    /// Like [`Mixer::cue`], stamped into the first program frame that shows `identity`'s
    /// picture with RTP timestamp `rtp_ts` or a later one (the frame a host captured when it
    /// pressed the button), or after `give_up_after` if that picture never comes. `Ok(None)`:
    /// deferred, its answer comes from [`Mixer::take_cue_answers`] once stamped. Answers at once
    /// when the picture is already on screen or the input is unknown.
    pub fn cue_when_shown(
        &mut self,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
        identity: &str,
        rtp_ts: u32,
        give_up_after: Duration,
    ) -> Result<Option<CueAck>, CueError> {
        let shown = self
            .inputs
            .iter()
            .find(|i| i.identity == identity)
            .map(|i| i.shown_ts.is_some_and(|t| rtp_at_or_after(t, rtp_ts)));
        if self.cue_acks.contains_key(id) || shown != Some(false) {
            return self.cue(id, data, repeat).map(Some);
        }
        if id.is_empty() {
            return Err(CueError::InvalidId);
        }
        if self.deferred.iter().any(|d| d.id == id) {
            // The same cue again while it waits: one cue, answered once stamped.
            return Ok(None);
        }
        // The size with the largest program time it may get.
        let late_pts = self.next_pts_ms() + give_up_after.as_millis() as u64 + 1000;
        let size = 16 + cue_sei_json(id, late_pts, &data).len();
        if size > MAX_CUE_PAYLOAD {
            return Err(CueError::TooLarge {
                size,
                max: MAX_CUE_PAYLOAD,
            });
        }
        self.deferred.push(DeferredCue {
            id: id.to_owned(),
            data,
            repeat,
            identity: identity.to_owned(),
            rtp_ts,
            give_up_after,
            give_up_at: None,
        });
        Ok(None)
    }

    /// Answers of deferred cues stamped (or refused) since the last call.
    pub fn take_cue_answers(&mut self) -> Vec<(String, Result<CueAck, CueError>)> {
        std::mem::take(&mut self.cue_answers)
    }

    /// Turns deferred cues whose picture is on screen (or whose wait is over) into cues of
    /// the frame being made.
    pub(super) fn release_deferred(&mut self, now: Duration) {
        if self.deferred.is_empty() {
            return;
        }
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.deferred.len() {
            let d = &mut self.deferred[i];
            let give_up_at = *d.give_up_at.get_or_insert(now + d.give_up_after);
            let d = &self.deferred[i];
            let input = self.inputs.iter().find(|x| x.identity == d.identity);
            let go = match input {
                None => true,
                Some(x) => x.shown_ts.is_some_and(|t| rtp_at_or_after(t, d.rtp_ts)),
            } || now >= give_up_at;
            if go {
                ready.push(self.deferred.remove(i));
            } else {
                i += 1;
            }
        }
        for d in ready {
            if d.give_up_at.is_some_and(|t| now >= t) {
                tracing::debug!(id = %d.id, "cue: the picture did not come in time; stamping now");
            }
            let r = self.cue(&d.id, d.data, d.repeat);
            self.cue_answers.push((d.id, r));
        }
    }
}
