//! HLS output: a pure segmenter (H.264 access units + AAC frames → MPEG-TS segments
//! and an m3u8 playlist) and a shared store the HTTP layer serves from.
//!
//! Segments are cut at the first keyframe after the target duration (default 1 s), so
//! with a keyframe every `gop_s` a segment lasts `max(target, gop)` rounded up to whole
//! GOPs. The playlist lists a sliding window (default 6 segments); the store keeps a few
//! more so a player that read a slightly older playlist still gets its segments.
//!
//! ```
//! use cohost::output::hls::{HlsConfig, HlsSegmenter};
//! let mut seg = HlsSegmenter::new(HlsConfig::default());
//! let store = seg.store(); // clone this into the HTTP layer
//! // 90 kHz timestamps; Annex-B access units; raw AAC frames (no ADTS header).
//! seg.push_video(0, true, &[0, 0, 0, 1, 0x65, 0x88]);
//! seg.push_audio(0, &[0x21, 0x10, 0x04]);
//! seg.push_video(90_000, true, &[0, 0, 0, 1, 0x65, 0x88]);
//! assert!(store.playlist().unwrap().contains("seg0.ts"));
//! assert!(store.segment(0).is_some());
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use mixer::h264::split_annexb;
use mixer::mux::ts::{AacConfig, TsMuxer};
use tracing::{debug, warn};

/// `Content-Type` of `index.m3u8`.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// `Content-Type` of `seg{N}.ts`.
pub const SEGMENT_CONTENT_TYPE: &str = "video/mp2t";

/// 90 kHz ticks per second (MPEG-TS clock).
pub const TICKS_PER_SECOND: u64 = 90_000;
/// A forward jump of the video clock larger than this (10 s) starts a new segment
/// marked as a discontinuity.
const MAX_GAP_TICKS: u64 = 10 * TICKS_PER_SECOND;
/// Added to every timestamp written to the segments, so the PCR can run this far
/// (0.7 s) behind the DTS from the very first frame.
pub const TS_OFFSET_TICKS: u64 = 63_000;

/// Settings of the segmenter.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// Shortest segment: a segment is cut at the first keyframe after this (default 1 s).
    pub target_duration: Duration,
    /// Number of segments listed in the playlist (default 6).
    pub window: usize,
    /// Extra segments kept available beyond the window (default 3).
    pub keep_extra: usize,
    /// Format of the raw AAC frames (default AAC-LC 48 kHz stereo).
    pub aac: AacConfig,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_duration: Duration::from_secs(1),
            window: 6,
            keep_extra: 3,
            aac: AacConfig::LC_48K_STEREO,
        }
    }
}

/// A finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsSegment {
    /// Media sequence number (served as `seg{sequence}.ts`).
    pub sequence: u64,
    /// Duration in 90 kHz ticks.
    pub duration_ticks: u64,
    /// The MPEG-TS bytes.
    pub data: Bytes,
    /// Timestamps do not continue from the previous segment (`#EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
}

impl HlsSegment {
    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.duration_ticks as f64 / TICKS_PER_SECOND as f64
    }
    /// File name in the playlist: `seg{N}.ts`.
    pub fn file_name(&self) -> String {
        segment_file_name(self.sequence)
    }
}

/// `seg{N}.ts`.
pub fn segment_file_name(sequence: u64) -> String {
    format!("seg{sequence}.ts")
}

/// Parses `seg{N}.ts` back to N (for the HTTP route).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let n = name.strip_prefix("seg")?.strip_suffix(".ts")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// One playlist line group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistEntry {
    /// Media sequence number.
    pub sequence: u64,
    /// Duration in 90 kHz ticks.
    pub duration_ticks: u64,
    /// Preceded by `#EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
}

/// Renders a version-3 media playlist for `(sequence, duration_ticks)` entries, in
/// order. `ended` appends `#EXT-X-ENDLIST`. Returns `None` for no segments.
pub fn render_playlist(entries: &[(u64, u64)], ended: bool) -> Option<String> {
    let e: Vec<PlaylistEntry> = entries
        .iter()
        .map(|&(sequence, duration_ticks)| PlaylistEntry {
            sequence,
            duration_ticks,
            discontinuity: false,
        })
        .collect();
    render_playlist_entries(&e, 0, 0, ended)
}

/// Renders a version-3 media playlist; `discontinuity_sequence` is the number of
/// discontinuities before the first entry (written when non-zero). The target duration
/// covers the longest entry and at least `min_target_ticks`.
pub fn render_playlist_entries(
    entries: &[PlaylistEntry],
    discontinuity_sequence: u64,
    min_target_ticks: u64,
    ended: bool,
) -> Option<String> {
    let first = entries.first()?;
    let max_ticks = entries
        .iter()
        .map(|e| e.duration_ticks)
        .max()
        .unwrap_or(0)
        .max(min_target_ticks);
    let target = max_ticks.div_ceil(TICKS_PER_SECOND).max(1);
    let mut s = String::with_capacity(128 + entries.len() * 32);
    s.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{}", first.sequence);
    if discontinuity_sequence > 0 {
        let _ = writeln!(s, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}");
    }
    for e in entries {
        if e.discontinuity {
            s.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(
            s,
            "#EXTINF:{:.3},",
            e.duration_ticks as f64 / TICKS_PER_SECOND as f64
        );
        let _ = writeln!(s, "{}", segment_file_name(e.sequence));
    }
    if ended {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    Some(s)
}

#[derive(Debug, Default)]
struct StoreInner {
    segments: VecDeque<HlsSegment>,
    window: usize,
    keep: usize,
    ended: bool,
    /// Discontinuities of segments already dropped from the store.
    dropped_discontinuities: u64,
    /// Longest segment ever stored: the target duration never goes down.
    max_ticks: u64,
}

/// Shared, cheaply clonable store of the live window, read by the HTTP layer.
#[derive(Debug, Clone)]
pub struct HlsStore {
    inner: Arc<RwLock<StoreInner>>,
}

impl HlsStore {
    /// An empty store listing `window` segments and keeping `keep_extra` more.
    pub fn new(window: usize, keep_extra: usize) -> Self {
        HlsStore {
            inner: Arc::new(RwLock::new(StoreInner {
                segments: VecDeque::new(),
                window: window.max(1),
                keep: window.max(1) + keep_extra,
                ended: false,
                dropped_discontinuities: 0,
                max_ticks: 0,
            })),
        }
    }

    /// Adds a finished segment, dropping the oldest beyond the kept count.
    pub fn push(&self, seg: HlsSegment) {
        if let Ok(mut g) = self.inner.write() {
            g.max_ticks = g.max_ticks.max(seg.duration_ticks);
            g.segments.push_back(seg);
            while g.segments.len() > g.keep {
                if g.segments.pop_front().is_some_and(|s| s.discontinuity) {
                    g.dropped_discontinuities += 1;
                }
            }
            g.ended = false;
        }
    }

    /// Where the stream stands, to go on elsewhere: (the next media sequence number, the
    /// discontinuity number of the newest segment). `None` before the first segment.
    pub fn position(&self) -> Option<(u64, u64)> {
        let g = self.inner.read().ok()?;
        let last = g.segments.back()?;
        let tags = g.segments.iter().filter(|s| s.discontinuity).count() as u64;
        Some((last.sequence + 1, g.dropped_discontinuities + tags))
    }

    /// Marks the stream as ended (the playlist gets `#EXT-X-ENDLIST`).
    pub fn set_ended(&self) {
        if let Ok(mut g) = self.inner.write() {
            g.ended = true;
        }
    }

    /// The current `index.m3u8` text, or `None` before the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        let g = self.inner.read().ok()?;
        let skip = g.segments.len().saturating_sub(g.window);
        let disc_seq = g.dropped_discontinuities
            + g.segments
                .iter()
                .take(skip)
                .filter(|s| s.discontinuity)
                .count() as u64;
        let entries: Vec<PlaylistEntry> = g
            .segments
            .iter()
            .skip(skip)
            .map(|s| PlaylistEntry {
                sequence: s.sequence,
                duration_ticks: s.duration_ticks,
                discontinuity: s.discontinuity,
            })
            .collect();
        render_playlist_entries(&entries, disc_seq, g.max_ticks, g.ended)
    }

    /// The bytes of `seg{n}.ts`, while it is kept.
    pub fn segment(&self, n: u64) -> Option<Bytes> {
        let g = self.inner.read().ok()?;
        g.segments
            .iter()
            .find(|s| s.sequence == n)
            .map(|s| s.data.clone())
    }

    /// Sequence numbers currently kept (oldest first).
    pub fn sequences(&self) -> Vec<u64> {
        self.inner
            .read()
            .map(|g| g.segments.iter().map(|s| s.sequence).collect())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct OpenSegment {
    sequence: u64,
    start_pts: u64,
    last_video_pts: u64,
    discontinuity: bool,
    buf: Vec<u8>,
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
}

impl HlsSegmenter {
    /// A segmenter publishing into a new [`HlsStore`].
    pub fn new(config: HlsConfig) -> Self {
        let store = HlsStore::new(config.window, config.keep_extra);
        HlsSegmenter {
            config,
            mux: {
                let mut m = TsMuxer::new();
                m.set_pcr_delay(TS_OFFSET_TICKS);
                m
            },
            open: None,
            next_sequence: 0,
            frame_ticks: 3000,
            parameter_sets: None,
            last_end_pts: None,
            store,
            resumed: false,
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
        if let Ok(mut g) = self.store.inner.write() {
            g.dropped_discontinuities = discontinuity;
        }
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
                self.open = Some(OpenSegment {
                    sequence: self.next_sequence,
                    start_pts: pts_90k,
                    last_video_pts: pts_90k,
                    discontinuity: jump || resumed,
                    buf: Vec::with_capacity(512 * 1024),
                });
                self.next_sequence += 1;
                if let Some(o) = self.open.as_mut() {
                    self.mux.write_psi(&mut o.buf);
                }
            }
        }
        let Some(o) = self.open.as_mut() else {
            return closed;
        };
        if pts_90k > o.last_video_pts {
            self.frame_ticks = (pts_90k - o.last_video_pts).min(TICKS_PER_SECOND);
        }
        o.last_video_pts = pts_90k;
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
                let t = pts_90k + TS_OFFSET_TICKS;
                self.mux.write_video(&mut o.buf, t, t, keyframe, &au);
            }
            _ => {
                let t = pts_90k + TS_OFFSET_TICKS;
                self.mux.write_video(&mut o.buf, t, t, keyframe, annexb)
            }
        }
        closed
    }

    /// Adds one raw AAC frame (no ADTS header) with its PTS in 90 kHz ticks. Audio
    /// before the first keyframe is dropped.
    pub fn push_audio(&mut self, pts_90k: u64, raw_aac: &[u8]) {
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
        let end = self
            .open
            .as_ref()
            .map(|o| o.last_video_pts + self.frame_ticks);
        let closed = end.and_then(|e| self.close(e));
        self.store.set_ended();
        closed
    }

    fn close(&mut self, end_pts: u64) -> Option<HlsSegment> {
        let o = self.open.take()?;
        self.last_end_pts = Some(end_pts);
        let seg = HlsSegment {
            sequence: o.sequence,
            duration_ticks: end_pts.saturating_sub(o.start_pts).max(1),
            data: Bytes::from(o.buf),
            discontinuity: o.discontinuity,
        };
        debug!(
            sequence = seg.sequence,
            secs = seg.duration_secs(),
            bytes = seg.data.len(),
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

fn duration_ticks(d: Duration) -> u64 {
    (d.as_micros() as u64).saturating_mul(9) / 100
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_goes_on_where_another_node_left_it() {
        let cfg = HlsConfig {
            target_duration: Duration::from_millis(500),
            ..HlsConfig::default()
        };
        let mut a = HlsSegmenter::new(cfg.clone());
        let kf = [0, 0, 0, 1, 0x65, 0x88];
        for i in 0..8u64 {
            a.push_video(i * 45_000, true, &kf);
        }
        let (next, disc) = a.store().position().expect("segments");
        assert!(next >= 5, "{next}");
        let mut b = HlsSegmenter::new(cfg);
        b.continue_from(next, disc);
        for i in 0..4u64 {
            b.push_video(i * 45_000, true, &kf);
        }
        let p = b.store().playlist().expect("playlist");
        assert!(
            p.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{next}\n")),
            "{p}"
        );
        let first_seg = p.find(".ts").unwrap();
        assert!(p[..first_seg].contains("#EXT-X-DISCONTINUITY\n"), "{p}");
        assert_eq!(
            b.store().position().map(|(n, d)| (n > next, d)),
            Some((true, disc + 1))
        );
    }

    const IDR: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 0x88,
    ];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9A];

    /// Feeds `secs` seconds of 30 fps video with a keyframe every `gop` frames and
    /// 48 kHz audio, returning the closed segments.
    fn feed(seg: &mut HlsSegmenter, frames: u64, gop: u64) -> Vec<HlsSegment> {
        let mut out = Vec::new();
        let mut audio_pts = 0u64;
        for i in 0..frames {
            let pts = i * 3000;
            while audio_pts <= pts {
                seg.push_audio(audio_pts, &[0x21, 0x00]);
                audio_pts += 1920;
            }
            let key = i % gop == 0;
            out.extend(seg.push_video(pts, key, if key { IDR } else { P }));
        }
        out
    }

    #[test]
    fn cuts_at_first_keyframe_after_target() {
        // Keyframe every 0.5 s, target 1 s → 1.0 s segments.
        let mut s = HlsSegmenter::new(HlsConfig::default());
        let segs = feed(&mut s, 30 * 5, 15);
        assert_eq!(segs.len(), 4);
        for (i, g) in segs.iter().enumerate() {
            assert_eq!(g.sequence, i as u64);
            assert_eq!(g.duration_ticks, 90_000);
            assert_eq!(g.data.len() % 188, 0);
            assert_eq!(g.data[0], 0x47);
        }
        // Keyframe every 0.7 s (21 frames): cuts at 1.4 s.
        let mut s = HlsSegmenter::new(HlsConfig::default());
        let segs = feed(&mut s, 30 * 5, 21);
        assert!(segs.len() >= 2);
        for g in &segs {
            assert_eq!(g.duration_ticks, 42 * 3000);
        }
        // Keyframe every 2 s: 2 s segments.
        let mut s = HlsSegmenter::new(HlsConfig::default());
        let segs = feed(&mut s, 30 * 7, 60);
        assert_eq!(segs.len(), 3);
        assert!(segs.iter().all(|g| g.duration_ticks == 180_000));
        let last = s.finish().unwrap();
        assert_eq!(last.duration_ticks, 30 * 3000);
    }

    #[test]
    fn drops_media_before_first_keyframe() {
        let mut s = HlsSegmenter::new(HlsConfig::default());
        s.push_audio(0, &[1, 2]);
        assert!(s.push_video(0, false, P).is_none());
        assert!(s.finish().is_none());
        assert!(s.store().playlist().is_none());
    }

    #[test]
    fn inserts_parameter_sets_before_bare_keyframes() {
        let mut s = HlsSegmenter::new(HlsConfig::default());
        s.push_video(0, true, IDR);
        s.push_video(90_000, true, &[0, 0, 0, 1, 0x65, 0x77]);
        let seg = s.finish().unwrap();
        // The second segment's video PES carries the SPS NAL learnt from the first.
        let needle = [0, 0, 0, 1, 0x67, 0x42];
        assert!(seg.data.windows(needle.len()).any(|w| w == needle));
        // After an access unit delimiter, not before it.
        s.push_video(
            180_000,
            true,
            &[0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x65, 0x66],
        );
        let seg = s.finish().unwrap();
        let needle = [0x09, 0xF0, 0, 0, 0, 1, 0x67, 0x42];
        assert!(seg.data.windows(needle.len()).any(|w| w == needle));
        let double_aud = [0x09, 0xF0, 0, 0, 0, 1, 0x09];
        assert!(!seg.data.windows(double_aud.len()).any(|w| w == double_aud));
    }

    #[test]
    fn sliding_window_playlist() {
        let cfg = HlsConfig {
            window: 3,
            keep_extra: 1,
            ..HlsConfig::default()
        };
        let mut s = HlsSegmenter::new(cfg);
        let store = s.store();
        feed(&mut s, 30 * 8, 30); // 7 closed segments of 1 s
        let pl = store.playlist().unwrap();
        let want = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:4\n\
                    #EXTINF:1.000,\nseg4.ts\n#EXTINF:1.000,\nseg5.ts\n#EXTINF:1.000,\nseg6.ts\n";
        assert_eq!(pl, want);
        assert_eq!(store.sequences(), vec![3, 4, 5, 6]);
        assert!(store.segment(3).is_some());
        assert!(store.segment(2).is_none());
        s.finish();
        let pl = store.playlist().unwrap();
        assert!(pl.ends_with("seg7.ts\n#EXT-X-ENDLIST\n"));
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:5\n"));
    }

    #[test]
    fn timestamp_jumps_are_discontinuities() {
        let cfg = HlsConfig {
            window: 2,
            keep_extra: 0,
            ..HlsConfig::default()
        };
        let mut s = HlsSegmenter::new(cfg);
        let store = s.store();
        s.push_video(900_000, true, IDR);
        s.push_video(903_000, false, P);
        // The program restarted at 0: cut here even though the segment is short.
        let closed = s.push_video(0, true, IDR).unwrap();
        assert_eq!(closed.duration_ticks, 6000);
        assert!(!closed.discontinuity);
        s.push_video(90_000, true, IDR);
        let pl = store.playlist().unwrap();
        assert_eq!(
            pl,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXTINF:0.067,\nseg0.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg1.ts\n"
        );
        // A forward jump over 10 s too; once seg1 leaves the window the discontinuity
        // sequence counts it.
        s.push_video(90_000 + 20 * 90_000, true, IDR);
        s.push_video(90_000 + 21 * 90_000, true, IDR);
        let pl = store.playlist().unwrap();
        assert!(
            pl.contains(
                "#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n\
                 #EXTINF:0.033,\nseg2.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg3.ts\n"
            ),
            "{pl}"
        );
    }

    #[test]
    fn restart_after_finish_is_a_discontinuity() {
        let mut s = HlsSegmenter::new(HlsConfig::default());
        s.push_video(450_000, true, IDR);
        s.push_video(540_000, true, IDR);
        s.finish();
        // The program starts again from 0.
        s.push_video(0, true, IDR);
        let seg = s.push_video(90_000, true, IDR).unwrap();
        assert!(seg.discontinuity);
        let pl = s.store().playlist().unwrap();
        assert!(
            pl.contains("#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg2.ts\n"),
            "{pl}"
        );
        assert!(!pl.contains("ENDLIST"));
    }

    #[test]
    fn playlist_text_and_names() {
        assert_eq!(render_playlist(&[], false), None);
        let pl = render_playlist(&[(10, 135_000), (11, 90_000)], true).unwrap();
        assert_eq!(
            pl,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
             #EXTINF:1.500,\nseg10.ts\n#EXTINF:1.000,\nseg11.ts\n#EXT-X-ENDLIST\n"
        );
        assert_eq!(parse_segment_file_name("seg42.ts"), Some(42));
        assert_eq!(parse_segment_file_name("seg.ts"), None);
        assert_eq!(parse_segment_file_name("seg-1.ts"), None);
        assert_eq!(parse_segment_file_name("../seg1.ts"), None);
        assert_eq!(segment_file_name(7), "seg7.ts");
    }
}
