//! The segmenter: the program's pictures and AAC frames in, MPEG-TS segments and parts out
//! into an [`HlsStore`]; cue SEI as timed ID3.

use std::collections::VecDeque;

use mixer::h264::{find_user_data, split_annexb, CUE_SEI_UUID};
use mixer::mux::ts::{id3_priv_tag, TsMuxer};
use tracing::{debug, warn};

use super::*;

#[derive(Debug)]
struct OpenSegment {
    sequence: u64,
    start_pts: u64,
    last_video_pts: u64,
    discontinuity: bool,
    buf: Vec<u8>,
    program_date_ms: Option<u64>,
    /// Where the part being written starts: (its first picture's PTS, offset in `buf`,
    /// whether that picture is a keyframe).
    part_start: (u64, usize, bool),
    /// Parts out so far: (byte range in `buf`, duration ticks, independent).
    parts: Vec<(std::ops::Range<usize>, u64, bool)>,
}

/// The segmenter: feed it the program's access units and audio frames in time order.
#[derive(Debug)]
pub struct HlsSegmenter {
    config: HlsConfig,
    mux: TsMuxer,
    open: Option<OpenSegment>,
    next_sequence: u64,
    frame_ticks: u64,
    parameter_sets: Option<Vec<u8>>,
    /// End of the last closed segment (to flag a discontinuity after `finish`).
    last_end_pts: Option<u64>,
    store: HlsStore,
    /// Continuing another node's stream: the first segment is a discontinuity.
    resumed: bool,
    /// Cue SEI payloads already written as ID3.
    cues_seen: VecDeque<Vec<u8>>,
    /// Pictures waiting for the audio of their time.
    pending: VecDeque<PendingVideo>,
    /// The audio written reaches this PTS (`None`: no audio yet, pictures do not wait).
    audio_until: Option<u64>,
}

#[derive(Debug)]
struct PendingVideo {
    pts: u64,
    keyframe: bool,
    data: Vec<u8>,
    composed: Option<u64>,
}

/// Samples in an AAC-LC frame.
const AAC_FRAME_SAMPLES: u64 = 1024;
/// Longest a picture waits for its audio (0.5 s).
pub const MAX_INTERLEAVE_TICKS: u64 = TICKS_PER_SECOND / 2;

impl HlsSegmenter {
    /// A segmenter publishing into a new [`HlsStore`].
    pub fn new(config: HlsConfig) -> Self {
        let store = HlsStore::with_parts(
            config.window,
            config.keep_extra,
            config.part_target,
            config.parts_listed,
        );
        HlsSegmenter {
            config,
            mux: {
                let mut m = TsMuxer::new();
                m.set_pcr_delay(TS_OFFSET_TICKS);
                m.set_id3(true);
                m
            },
            open: None,
            next_sequence: 0,
            frame_ticks: 3000,
            parameter_sets: None,
            last_end_pts: None,
            store,
            resumed: false,
            cues_seen: VecDeque::new(),
            pending: VecDeque::new(),
            audio_until: None,
        }
    }

    /// Goes on from a stream another node published up to [`HlsStore::position`]: the next
    /// segment is number `next_sequence`, marked as a discontinuity after `discontinuity`
    /// earlier ones, so a player moves on without a sequence going backwards.
    pub fn continue_from(&mut self, next_sequence: u64, discontinuity: u64) {
        if self.open.is_some() || !self.store.sequences().is_empty() {
            return;
        }
        self.next_sequence = next_sequence;
        self.resumed = true;
        self.store.set_discontinuities_before(discontinuity);
    }

    /// The store this segmenter publishes into (clone it for the HTTP layer).
    pub fn store(&self) -> HlsStore {
        self.store.clone()
    }

    /// Sets the SPS and PPS (Annex-B, with start codes) to insert before keyframes that
    /// lack them. Keyframes that carry SPS/PPS update this automatically.
    pub fn set_parameter_sets(&mut self, annexb_sps_pps: &[u8]) {
        self.parameter_sets = Some(annexb_sps_pps.to_vec());
    }

    /// Adds one H.264 access unit (Annex-B) with its presentation time in 90 kHz ticks
    /// (no B-frames: DTS = PTS). Returns the segment this keyframe closed, if any.
    /// Video before the first keyframe is dropped.
    pub fn push_video(
        &mut self,
        pts_90k: u64,
        keyframe: bool,
        annexb: &[u8],
    ) -> Option<HlsSegment> {
        self.push_video_at(pts_90k, keyframe, annexb, None)
    }

    /// [`HlsSegmenter::push_video`] with the wall clock (Unix ms) at which the picture was
    /// composed: a segment starting with it gets that `EXT-X-PROGRAM-DATE-TIME`.
    ///
    /// Once the stream has audio, a picture waits until the audio up to its time is in
    /// (the AAC encoder hands its frames out a little after the pictures of the same time):
    /// a segment or part then ends with the audio of its last picture, which low-latency
    /// players need (hls.js re-requests a part whose audio ends early). It waits at most
    /// [`MAX_INTERLEAVE_TICKS`].
    pub fn push_video_at(
        &mut self,
        pts_90k: u64,
        keyframe: bool,
        annexb: &[u8],
        composed_unix_ms: Option<u64>,
    ) -> Option<HlsSegment> {
        self.pending.push_back(PendingVideo {
            pts: pts_90k,
            keyframe,
            data: annexb.to_vec(),
            composed: composed_unix_ms,
        });
        self.drain_video()
    }

    /// Writes the pictures waiting for audio that may go now: those the audio has reached
    /// (all of them before the stream has audio) or that waited too long.
    fn drain_video(&mut self) -> Option<HlsSegment> {
        let mut closed = None;
        while let Some(v) = self.pending.front() {
            let newest = self.pending.back().map_or(v.pts, |n| n.pts);
            let go = self.audio_until.is_none_or(|a| a >= v.pts)
                || newest.saturating_sub(v.pts) > MAX_INTERLEAVE_TICKS;
            if !go {
                break;
            }
            let Some(v) = self.pending.pop_front() else {
                break;
            };
            if let Some(seg) = self.write_video(v.pts, v.keyframe, &v.data, v.composed) {
                closed = Some(seg);
            }
        }
        closed
    }

    fn write_video(
        &mut self,
        pts_90k: u64,
        keyframe: bool,
        annexb: &[u8],
        composed_unix_ms: Option<u64>,
    ) -> Option<HlsSegment> {
        let mut closed = None;
        if keyframe {
            self.learn_parameter_sets(annexb);
            // A jump backwards, or forwards by more than MAX_GAP, is a discontinuity.
            let (cut, jump) = match &self.open {
                None => (
                    true,
                    self.last_end_pts.is_some_and(|e| {
                        pts_90k + TICKS_PER_SECOND < e || pts_90k > e + MAX_GAP_TICKS
                    }),
                ),
                Some(o) => {
                    let jump =
                        pts_90k < o.last_video_pts || pts_90k - o.last_video_pts > MAX_GAP_TICKS;
                    let long_enough = pts_90k.saturating_sub(o.start_pts)
                        >= duration_ticks(self.config.target_duration);
                    (jump || long_enough, jump)
                }
            };
            if cut {
                let end = match &self.open {
                    Some(o) if jump => o.last_video_pts + self.frame_ticks,
                    _ => pts_90k,
                };
                closed = self.close(end);
                let resumed = std::mem::take(&mut self.resumed);
                let mut o = OpenSegment {
                    sequence: self.next_sequence,
                    start_pts: pts_90k,
                    last_video_pts: pts_90k,
                    discontinuity: jump || resumed,
                    buf: Vec::with_capacity(512 * 1024),
                    program_date_ms: composed_unix_ms,
                    part_start: (pts_90k, 0, true),
                    parts: Vec::new(),
                };
                self.next_sequence += 1;
                self.mux.write_psi(&mut o.buf);
                self.open = Some(o);
            }
        }
        self.cut_part_before(pts_90k, keyframe);
        let Some(o) = self.open.as_mut() else {
            return closed;
        };
        if pts_90k > o.last_video_pts {
            self.frame_ticks = (pts_90k - o.last_video_pts).min(TICKS_PER_SECOND);
        }
        o.last_video_pts = pts_90k;
        let t = pts_90k + TS_OFFSET_TICKS;
        let needs_ps = keyframe && !split_annexb(annexb).any(|n| n[0] & 0x1F == 7);
        match (&self.parameter_sets, needs_ps) {
            (Some(ps), true) => {
                // Access unit delimiter (if any) first, then SPS/PPS, then the rest.
                let mut au = Vec::with_capacity(ps.len() + annexb.len() + 16);
                let mut inserted = false;
                for nal in split_annexb(annexb) {
                    if !inserted && nal[0] & 0x1F != 9 {
                        au.extend_from_slice(ps);
                        inserted = true;
                    }
                    au.extend_from_slice(&[0, 0, 0, 1]);
                    au.extend_from_slice(nal);
                }
                self.mux.write_video(&mut o.buf, t, t, keyframe, &au);
            }
            _ => self.mux.write_video(&mut o.buf, t, t, keyframe, annexb),
        }
        for cue in find_user_data(annexb, &CUE_SEI_UUID) {
            // The SEI's user data is the cue's JSON; a cue repeated over several pictures
            // is one tag, at the first.
            let json = cue.as_slice();
            if self.cues_seen.iter().any(|c| c == json) {
                continue;
            }
            if self.cues_seen.len() == CUES_REMEMBERED {
                self.cues_seen.pop_front();
            }
            self.cues_seen.push_back(json.to_vec());
            self.mux
                .write_id3(&mut o.buf, t, &id3_priv_tag(CUE_ID3_OWNER, json));
        }
        closed
    }

    /// Closes the part being written before the picture at `pts_90k` when it has lasted
    /// 90 % of the part target (so no part exceeds it), and starts the next one with its
    /// own PAT/PMT.
    fn cut_part_before(&mut self, pts_90k: u64, keyframe: bool) {
        let Some(target) = self.config.part_target else {
            return;
        };
        let Some(o) = self.open.as_mut() else { return };
        let (start_pts, start_off, independent) = o.part_start;
        let elapsed = pts_90k.saturating_sub(start_pts);
        if o.buf.len() == start_off || elapsed < duration_ticks(target) * 9 / 10 {
            return;
        }
        let range = start_off..o.buf.len();
        let part = HlsPart {
            duration_ticks: elapsed,
            independent,
            data: Bytes::copy_from_slice(&o.buf[range.clone()]),
        };
        o.parts.push((range, elapsed, independent));
        self.store.push_part(o.sequence, o.discontinuity, part);
        o.part_start = (pts_90k, o.buf.len(), keyframe);
        self.mux.write_psi(&mut o.buf);
    }

    /// Adds one raw AAC frame (no ADTS header) with its PTS in 90 kHz ticks. Audio
    /// before the first keyframe is dropped.
    pub fn push_audio(&mut self, pts_90k: u64, raw_aac: &[u8]) {
        // Pictures before this frame go first (the stream stays in time order).
        self.audio_until = Some(self.audio_until.unwrap_or(0).max(pts_90k));
        self.drain_video();
        self.write_audio(pts_90k, raw_aac);
        let frame_ticks =
            AAC_FRAME_SAMPLES * TICKS_PER_SECOND / u64::from(self.config.aac.sample_rate().max(1));
        self.audio_until = Some(self.audio_until.unwrap_or(0).max(pts_90k + frame_ticks));
        self.drain_video();
    }

    fn write_audio(&mut self, pts_90k: u64, raw_aac: &[u8]) {
        let Some(o) = self.open.as_mut() else {
            return;
        };
        if let Err(e) = self.mux.write_audio(
            &mut o.buf,
            pts_90k + TS_OFFSET_TICKS,
            &self.config.aac,
            raw_aac,
        ) {
            warn!(error = %e, "HLS: AAC frame dropped");
        }
    }

    /// Closes the open segment (duration: up to the end of its last video frame) and
    /// marks the playlist as ended.
    pub fn finish(&mut self) -> Option<HlsSegment> {
        let pending: Vec<PendingVideo> = self.pending.drain(..).collect();
        for v in pending {
            self.write_video(v.pts, v.keyframe, &v.data, v.composed);
        }
        // A program that starts again starts its clocks again.
        self.audio_until = None;
        let end = self
            .open
            .as_ref()
            .map(|o| o.last_video_pts + self.frame_ticks);
        let closed = end.and_then(|e| self.close(e));
        self.store.set_ended();
        closed
    }

    fn close(&mut self, end_pts: u64) -> Option<HlsSegment> {
        let mut o = self.open.take()?;
        self.last_end_pts = Some(end_pts);
        if self.config.part_target.is_some() {
            let (start_pts, start_off, independent) = o.part_start;
            if o.buf.len() > start_off {
                o.parts.push((
                    start_off..o.buf.len(),
                    end_pts.saturating_sub(start_pts).max(1),
                    independent,
                ));
            }
        }
        let data = Bytes::from(o.buf);
        let parts = o
            .parts
            .into_iter()
            .map(|(range, duration_ticks, independent)| HlsPart {
                duration_ticks,
                independent,
                data: data.slice(range),
            })
            .collect();
        let seg = HlsSegment {
            sequence: o.sequence,
            duration_ticks: end_pts.saturating_sub(o.start_pts).max(1),
            data,
            discontinuity: o.discontinuity,
            parts,
            program_date_ms: o.program_date_ms,
        };
        debug!(
            sequence = seg.sequence,
            secs = seg.duration_secs(),
            bytes = seg.data.len(),
            parts = seg.parts.len(),
            "HLS segment"
        );
        self.store.push(seg.clone());
        Some(seg)
    }

    fn learn_parameter_sets(&mut self, annexb: &[u8]) {
        let mut ps = Vec::new();
        for n in split_annexb(annexb) {
            if matches!(n[0] & 0x1F, 7 | 8) {
                ps.extend_from_slice(&[0, 0, 0, 1]);
                ps.extend_from_slice(n);
            }
        }
        if !ps.is_empty() {
            self.parameter_sets = Some(ps);
        }
    }
}
