//! HLS output: a pure segmenter (H.264 access units + AAC frames → MPEG-TS segments, each
//! cut into partial segments for Low-Latency HLS, and an m3u8 playlist) and a shared store
//! the HTTP layer serves from.
//!
//! Segments are cut at the first keyframe after the target duration (default 1 s), so
//! with a keyframe every `gop_s` a segment lasts `max(target, gop)` rounded up to whole
//! GOPs. Each segment is also published as it grows, in parts of at most `part_target`
//! (default 0.334 s, Apple's example; a part closes at the first picture 90 % of the way
//! there), every part starting with its own PAT/PMT so a player can start on any part
//! (those starting with a keyframe are `INDEPENDENT=YES`). The playlist (RFC 8216bis) lists
//! a sliding window (default 6 segments) with `EXT-X-PROGRAM-DATE-TIME` on each, the parts
//! of the last segments and of the one being written, and a preload hint for the next part;
//! full segments stay listed, so players without LL-HLS play it as before. The store keeps a
//! few more segments so a player that read a slightly older playlist still gets them, and
//! tells waiting requests (blocking playlist reload, preload hints) when a part is out.
//!
//! Cue SEI found in the pictures are written once each as timed ID3 (`PRIV`, owner
//! `cohost/cue`, the SEI's JSON) at the picture's time, for players without SEI access.
//!
//! ```
//! use cohost::output::hls::{HlsConfig, HlsSegmenter};
//! let mut seg = HlsSegmenter::new(HlsConfig::default());
//! let store = seg.store(); // clone this into the HTTP layer
//! // 90 kHz timestamps; Annex-B access units; raw AAC frames (no ADTS header).
//! seg.push_video(0, true, &[0, 0, 0, 1, 0x65, 0x88]);
//! seg.push_audio(0, &[0x21, 0x10, 0x04]);
//! seg.push_video(90_000, true, &[0, 0, 0, 1, 0x65, 0x88]);
//! // A live low-latency playlist is served from the second segment on.
//! seg.push_video(180_000, true, &[0, 0, 0, 1, 0x65, 0x88]);
//! assert!(store.playlist().unwrap().contains("seg0.ts"));
//! assert!(store.segment(0).is_some());
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use mixer::h264::{find_user_data, split_annexb, CUE_SEI_UUID};
use mixer::mux::ts::{id3_priv_tag, AacConfig, TsMuxer};
use tokio::sync::watch;
use tracing::{debug, warn};

/// `Content-Type` of `index.m3u8`.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// `Content-Type` of `seg{N}.ts`.
pub const SEGMENT_CONTENT_TYPE: &str = "video/mp2t";
/// Owner of the ID3 `PRIV` frames that carry cues (CONTRACT).
pub const CUE_ID3_OWNER: &str = "cohost/cue";

/// 90 kHz ticks per second (MPEG-TS clock).
pub const TICKS_PER_SECOND: u64 = 90_000;
/// A forward jump of the video clock larger than this (10 s) starts a new segment
/// marked as a discontinuity.
const MAX_GAP_TICKS: u64 = 10 * TICKS_PER_SECOND;
/// Added to every timestamp written to the segments, so the PCR can run this far
/// (0.7 s) behind the DTS from the very first frame.
pub const TS_OFFSET_TICKS: u64 = 63_000;
/// Cue SEI payloads remembered so a cue repeated over several pictures is one ID3 tag.
const CUES_REMEMBERED: usize = 64;

/// Settings of the segmenter.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// Shortest segment: a segment is cut at the first keyframe after this (default 1 s).
    pub target_duration: Duration,
    /// Longest partial segment (Low-Latency HLS), default 0.334 s; `None`: no parts (a
    /// version-3 playlist).
    pub part_target: Option<Duration>,
    /// Number of segments listed in the playlist (default 6).
    pub window: usize,
    /// Extra segments kept available beyond the window (default 3).
    pub keep_extra: usize,
    /// Finished segments whose parts are still listed (default 2; the one being written
    /// always is).
    pub parts_listed: usize,
    /// Format of the raw AAC frames (default AAC-LC 48 kHz stereo).
    pub aac: AacConfig,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_duration: Duration::from_secs(1),
            part_target: Some(Duration::from_millis(334)),
            window: 6,
            keep_extra: 3,
            parts_listed: 2,
            aac: AacConfig::LC_48K_STEREO,
        }
    }
}

/// A partial segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsPart {
    /// Duration in 90 kHz ticks.
    pub duration_ticks: u64,
    /// It starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    /// The MPEG-TS bytes (PAT/PMT first).
    pub data: Bytes,
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
    /// Its parts, in order (their bytes are slices of `data`); empty without LL-HLS.
    pub parts: Vec<HlsPart>,
    /// Wall clock (Unix ms) at which its first picture was composed, if known
    /// (`#EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_ms: Option<u64>,
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

/// `seg{N}.{P}.ts`: part `P` of segment `N`.
pub fn part_file_name(sequence: u64, part: usize) -> String {
    format!("seg{sequence}.{part}.ts")
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `seg{N}.ts` back to N (for the HTTP route).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    digits(name.strip_prefix("seg")?.strip_suffix(".ts")?)
}

/// Parses `seg{N}.{P}.ts` back to (N, P) (for the HTTP route).
pub fn parse_part_file_name(name: &str) -> Option<(u64, usize)> {
    let (n, p) = name
        .strip_prefix("seg")?
        .strip_suffix(".ts")?
        .split_once('.')?;
    Some((digits(n)?, usize::try_from(digits(p)?).ok()?))
}

/// Unix milliseconds as an ISO 8601 UTC date-time with milliseconds
/// (`2026-12-04T01:20:00.123Z`), as `EXT-X-PROGRAM-DATE-TIME` wants.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
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
        write_extinf(&mut s, e.sequence, e.duration_ticks);
    }
    if ended {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    Some(s)
}

fn write_extinf(s: &mut String, sequence: u64, ticks: u64) {
    let _ = writeln!(s, "#EXTINF:{:.3},", ticks as f64 / TICKS_PER_SECOND as f64);
    let _ = writeln!(s, "{}", segment_file_name(sequence));
}

fn write_parts(s: &mut String, sequence: u64, parts: &[HlsPart]) {
    for (i, p) in parts.iter().enumerate() {
        let _ = write!(
            s,
            "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
            p.duration_ticks as f64 / TICKS_PER_SECOND as f64,
            part_file_name(sequence, i)
        );
        s.push_str(if p.independent {
            ",INDEPENDENT=YES\n"
        } else {
            "\n"
        });
    }
}

/// The segment being written, as far as its parts are out.
#[derive(Debug, Clone)]
struct OpenInfo {
    sequence: u64,
    discontinuity: bool,
    parts: Vec<HlsPart>,
}

/// Whether a playlist request blocked on `_HLS_msn`/`_HLS_part` can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist holds what was asked for (or later): answer now.
    Ready,
    /// Not yet: wait for [`HlsStore::changed`].
    Wait,
    /// Asked for more than two segments ahead: `400` (RFC 8216bis 6.2.5.2).
    TooFar,
}

#[derive(Debug, Default)]
struct StoreInner {
    segments: VecDeque<HlsSegment>,
    open: Option<OpenInfo>,
    window: usize,
    keep: usize,
    ended: bool,
    /// Discontinuities of segments already dropped from the store.
    dropped_discontinuities: u64,
    /// Longest segment ever stored: the target duration never goes down.
    max_ticks: u64,
    part_target: Option<Duration>,
    parts_listed: usize,
}

impl StoreInner {
    /// The newest part out: (segment, part index).
    fn newest_part(&self) -> Option<(u64, usize)> {
        if let Some(o) = self.open.as_ref().filter(|o| !o.parts.is_empty()) {
            return Some((o.sequence, o.parts.len() - 1));
        }
        self.segments
            .back()
            .map(|s| (s.sequence, s.parts.len().saturating_sub(1)))
    }

    /// The part a player will ask for next: the open segment's next one.
    fn next_part(&self) -> Option<(u64, usize)> {
        if self.ended || self.part_target.is_none() {
            return None;
        }
        match &self.open {
            Some(o) => Some((o.sequence, o.parts.len())),
            None => self.segments.back().map(|s| (s.sequence + 1, 0)),
        }
    }

    fn target_secs(&self) -> u64 {
        self.max_ticks.div_ceil(TICKS_PER_SECOND).max(1)
    }
}

/// Shared, cheaply clonable store of the live window, read by the HTTP layer.
#[derive(Debug, Clone)]
pub struct HlsStore {
    inner: Arc<RwLock<StoreInner>>,
    changed: Arc<watch::Sender<u64>>,
}

impl HlsStore {
    /// An empty store listing `window` segments and keeping `keep_extra` more, without
    /// parts (a version-3 playlist).
    pub fn new(window: usize, keep_extra: usize) -> Self {
        Self::with_parts(window, keep_extra, None, 0)
    }

    /// An empty store for Low-Latency HLS with parts of at most `part_target`, listing the
    /// parts of the last `parts_listed` finished segments.
    pub fn with_parts(
        window: usize,
        keep_extra: usize,
        part_target: Option<Duration>,
        parts_listed: usize,
    ) -> Self {
        HlsStore {
            inner: Arc::new(RwLock::new(StoreInner {
                segments: VecDeque::new(),
                open: None,
                window: window.max(1),
                keep: window.max(1) + keep_extra,
                ended: false,
                dropped_discontinuities: 0,
                max_ticks: 0,
                part_target,
                parts_listed,
            })),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver that sees every new part, segment and the end (for requests that wait).
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Adds a finished segment, dropping the oldest beyond the kept count.
    pub fn push(&self, seg: HlsSegment) {
        if let Ok(mut g) = self.inner.write() {
            g.max_ticks = g.max_ticks.max(seg.duration_ticks);
            if g.open.as_ref().is_some_and(|o| o.sequence <= seg.sequence) {
                g.open = None;
            }
            g.segments.push_back(seg);
            while g.segments.len() > g.keep {
                if g.segments.pop_front().is_some_and(|s| s.discontinuity) {
                    g.dropped_discontinuities += 1;
                }
            }
            g.ended = false;
        }
        self.notify();
    }

    /// A part of the segment being written is out (parts come in order).
    fn push_part(&self, sequence: u64, discontinuity: bool, part: HlsPart) {
        if let Ok(mut g) = self.inner.write() {
            let o = g.open.get_or_insert_with(|| OpenInfo {
                sequence,
                discontinuity,
                parts: Vec::new(),
            });
            if o.sequence != sequence {
                *o = OpenInfo {
                    sequence,
                    discontinuity,
                    parts: Vec::new(),
                };
            }
            o.parts.push(part);
            g.ended = false;
        }
        self.notify();
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
            g.open = None;
        }
        self.notify();
    }

    /// The current `index.m3u8` text, or `None` before the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        let g = self.inner.read().ok()?;
        let Some(part_target) = g.part_target else {
            return self.classic_playlist(&g);
        };
        // A live playlist starts with two segments: hls.js started on a lone first segment
        // re-requests its parts in a loop (it has no earlier fragment to align with).
        if g.segments.len() < 2 && !g.ended {
            return None;
        }
        let skip = g.segments.len().saturating_sub(g.window);
        let first = g.segments.get(skip)?;
        let disc_seq = g.dropped_discontinuities
            + g.segments
                .iter()
                .take(skip)
                .filter(|s| s.discontinuity)
                .count() as u64;
        let target = g.target_secs();
        let pt = part_target.as_secs_f64();
        let mut s = String::with_capacity(512 + g.window * 400);
        s.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(
            s,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={}",
            3.0 * pt,
            3 * target
        );
        let _ = writeln!(s, "#EXT-X-PART-INF:PART-TARGET={pt:.5}");
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{}", first.sequence);
        if disc_seq > 0 {
            let _ = writeln!(s, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
        }
        let listed = g.segments.len() - skip;
        for (i, seg) in g.segments.iter().skip(skip).enumerate() {
            if seg.discontinuity {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(ms) = seg.program_date_ms {
                let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(ms));
            }
            if !g.ended && i + g.parts_listed >= listed {
                write_parts(&mut s, seg.sequence, &seg.parts);
            }
            write_extinf(&mut s, seg.sequence, seg.duration_ticks);
        }
        if let Some(o) = g.open.as_ref().filter(|o| !g.ended && !o.parts.is_empty()) {
            if o.discontinuity {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            write_parts(&mut s, o.sequence, &o.parts);
        }
        if let Some((n, p)) = g.next_part() {
            let _ = writeln!(
                s,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                part_file_name(n, p)
            );
        }
        if g.ended {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        Some(s)
    }

    fn classic_playlist(&self, g: &StoreInner) -> Option<String> {
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

    /// Whether a playlist asked with `_HLS_msn=msn` (and `_HLS_part=part`) can be given:
    /// with a part, once that part of that segment or a later one is out; without, once
    /// segment `msn` is finished. An ended stream is always ready.
    pub fn readiness(&self, msn: u64, part: Option<u64>) -> Readiness {
        let Ok(g) = self.inner.read() else {
            return Readiness::Ready;
        };
        if g.ended {
            return Readiness::Ready;
        }
        let last_done = g.segments.back().map(|s| s.sequence);
        let horizon = match (last_done, &g.open) {
            (Some(l), _) => l + 2,
            (None, Some(o)) => o.sequence + 2,
            (None, None) => 2,
        };
        if msn > horizon {
            return Readiness::TooFar;
        }
        let ready = match part {
            None => last_done.is_some_and(|l| l >= msn),
            Some(p) => {
                g
                .newest_part()
                .is_some_and(|(n, i)| (n, i as u64) >= (msn, p))
                // A finished segment has no part beyond its last: the next segment's first
                // part is the one after it.
                || last_done.is_some_and(|l| l > msn)
            }
        };
        if ready {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    /// How long a blocked playlist request may wait: three target durations (RFC 8216bis).
    pub fn blocking_timeout(&self) -> Duration {
        let t = self.inner.read().map(|g| g.target_secs()).unwrap_or(1);
        Duration::from_secs(3 * t)
    }

    /// The bytes of `seg{n}.ts`, while it is kept.
    pub fn segment(&self, n: u64) -> Option<Bytes> {
        let g = self.inner.read().ok()?;
        g.segments
            .iter()
            .find(|s| s.sequence == n)
            .map(|s| s.data.clone())
    }

    /// The bytes of part `p` of segment `n` (`seg{n}.{p}.ts`), while they are kept.
    pub fn part(&self, n: u64, p: usize) -> Option<Bytes> {
        let g = self.inner.read().ok()?;
        if let Some(o) = g.open.as_ref().filter(|o| o.sequence == n) {
            return o.parts.get(p).map(|x| x.data.clone());
        }
        g.segments
            .iter()
            .find(|s| s.sequence == n)
            .and_then(|s| s.parts.get(p))
            .map(|x| x.data.clone())
    }

    /// Whether part `p` of segment `n` is the next to come out (the preload hint): a request
    /// for it waits for it instead of failing.
    pub fn part_is_next(&self, n: u64, p: usize) -> bool {
        self.inner
            .read()
            .is_ok_and(|g| g.next_part() == Some((n, p)))
    }

    /// The longest a part takes to come out (the part target, or 1 s without parts).
    pub fn part_target(&self) -> Duration {
        self.inner
            .read()
            .ok()
            .and_then(|g| g.part_target)
            .unwrap_or(Duration::from_secs(1))
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
        self.drain_video(None)
    }

    /// Writes the pictures waiting for audio that may go now: all of them with `flush`, or
    /// those the audio has reached (or that waited too long), or those before `before`.
    fn drain_video(&mut self, before: Option<u64>) -> Option<HlsSegment> {
        let mut closed = None;
        while let Some(v) = self.pending.front() {
            let newest = self.pending.back().map_or(v.pts, |n| n.pts);
            let go = self.audio_until.is_none_or(|a| a >= v.pts)
                || before.is_some_and(|b| v.pts <= b)
                || newest.saturating_sub(v.pts) > MAX_INTERLEAVE_TICKS
                || v.pts + TICKS_PER_SECOND < self.audio_until.unwrap_or(0);
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
        self.drain_video(Some(pts_90k));
        self.write_audio(pts_90k, raw_aac);
        let frame_ticks =
            AAC_FRAME_SAMPLES * TICKS_PER_SECOND / u64::from(self.config.aac.sample_rate().max(1));
        self.audio_until = Some(self.audio_until.unwrap_or(0).max(pts_90k + frame_ticks));
        self.drain_video(None);
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
            part_target: None,
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
            part_target: None,
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
        let mut s = HlsSegmenter::new(HlsConfig {
            part_target: None,
            ..HlsConfig::default()
        });
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

    /// Durations (s) of the parts listed for segment `n` in a playlist.
    fn listed_parts(pl: &str, n: u64) -> Vec<f64> {
        let prefix = format!("URI=\"seg{n}.");
        pl.lines()
            .filter(|l| l.starts_with("#EXT-X-PART:") && l.contains(&prefix))
            .map(|l| {
                let d = l.split("DURATION=").nth(1).unwrap();
                d.split(',').next().unwrap().parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn low_latency_parts_playlist_and_hints() {
        // 30 fps, keyframe every 2 s (the program's default GOP): 2 s segments of six
        // 0.333 s parts, the first independent.
        let mut s = HlsSegmenter::new(HlsConfig::default());
        let store = s.store();
        let wall0 = 1_764_800_000_000u64;
        let mut closed = Vec::new();
        let mut audio_pts = 0;
        for i in 0..(30 * 6 + 12) {
            let pts = i * 3000;
            while audio_pts <= pts {
                s.push_audio(audio_pts, &[0x21, 0x00]);
                audio_pts += 1920;
            }
            let key = i % 60 == 0;
            closed.extend(s.push_video_at(
                pts,
                key,
                if key { IDR } else { P },
                Some(wall0 + pts / 90),
            ));
        }
        assert_eq!(closed.len(), 3);
        for seg in &closed {
            assert_eq!(seg.parts.len(), 6, "{:?}", seg.parts.len());
            let target = 0.334 * TICKS_PER_SECOND as f64;
            for (i, p) in seg.parts.iter().enumerate() {
                assert!(p.duration_ticks as f64 <= target, "{}", p.duration_ticks);
                assert!(p.duration_ticks as f64 >= 0.85 * target);
                assert_eq!(p.independent, i == 0);
                // Every part starts with its own PAT.
                assert_eq!(&p.data[..4], &[0x47, 0x40, 0x00, p.data[3]]);
            }
            let joined: Vec<u8> = seg.parts.iter().flat_map(|p| p.data.to_vec()).collect();
            assert_eq!(joined, seg.data.to_vec());
            assert_eq!(
                seg.parts.iter().map(|p| p.duration_ticks).sum::<u64>(),
                seg.duration_ticks
            );
        }
        let pl = store.playlist().unwrap();
        for tag in [
            "#EXT-X-VERSION:6\n",
            "#EXT-X-TARGETDURATION:2\n",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,HOLD-BACK=6\n",
            "#EXT-X-PART-INF:PART-TARGET=0.33400\n",
            "#EXT-X-PROGRAM-DATE-TIME:2025-12-03T22:13:20.000Z\n",
            "#EXT-X-PROGRAM-DATE-TIME:2025-12-03T22:13:24.000Z\n",
            "#EXT-X-PART:DURATION=0.33333,URI=\"seg2.0.ts\",INDEPENDENT=YES\n",
            "#EXTINF:2.000,\nseg2.ts\n",
        ] {
            assert!(pl.contains(tag), "{tag} missing in\n{pl}");
        }
        // Parts of the last two finished segments and of the open one (12 frames: one
        // part out, the second being written and hinted); the oldest's no longer.
        assert!(listed_parts(&pl, 0).is_empty(), "{pl}");
        assert_eq!(listed_parts(&pl, 1).len(), 6);
        assert_eq!(listed_parts(&pl, 2).len(), 6);
        assert_eq!(listed_parts(&pl, 3).len(), 1);
        assert!(
            pl.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg3.1.ts\"\n"),
            "{pl}"
        );
        assert!(store.part_is_next(3, 1));
        assert!(store.part(3, 0).is_some() && store.part(3, 1).is_none());
        assert_eq!(store.part(1, 5), Some(closed[1].parts[5].data.clone()));
        // Blocking reload: what is out is ready, the next part waits, three ahead is refused.
        assert_eq!(store.readiness(3, Some(0)), Readiness::Ready);
        assert_eq!(store.readiness(2, Some(9)), Readiness::Ready);
        assert_eq!(store.readiness(3, Some(1)), Readiness::Wait);
        assert_eq!(store.readiness(2, None), Readiness::Ready);
        assert_eq!(store.readiness(3, None), Readiness::Wait);
        assert_eq!(store.readiness(4, Some(0)), Readiness::Wait);
        assert_eq!(store.readiness(5, None), Readiness::TooFar);
        assert_eq!(store.blocking_timeout(), Duration::from_secs(6));
        // Once ended: no hint, no parts, every request answered.
        s.finish();
        let pl = store.playlist().unwrap();
        assert!(
            !pl.contains("PRELOAD-HINT") && !pl.contains("#EXT-X-PART:"),
            "{pl}"
        );
        assert!(pl.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(store.readiness(4, Some(3)), Readiness::Ready);
    }

    #[test]
    fn a_cue_becomes_one_timed_id3_tag() {
        use mixer::h264::{build_user_data_sei, insert_sei_before_slices};
        let mut s = HlsSegmenter::new(HlsConfig::default());
        let json = br#"{"v":1,"id":"red-1","pts_ms":33,"data":{"kind":"red_packet"}}"#;
        let sei = build_user_data_sei(&CUE_SEI_UUID, json);
        // The mixer repeats a cue over three pictures.
        s.push_video(0, true, IDR);
        for i in 1..4 {
            let au = insert_sei_before_slices(P, std::slice::from_ref(&sei)).unwrap();
            s.push_video(i * 3000, false, &au);
        }
        let seg = s.finish().unwrap();
        let tag = id3_priv_tag(CUE_ID3_OWNER, json);
        let found = seg.data.windows(10).filter(|w| *w == &tag[..10]).count();
        assert_eq!(found, 1, "one ID3 tag for the cue");
        assert!(seg
            .data
            .windows(b"cohost/cue".len())
            .any(|w| w == b"cohost/cue"));
        // The PMT declares the metadata stream (type 0x15 on PID 0x102, 'ID3 ').
        assert!(seg.data.windows(3).any(|w| w == [0x15, 0xE1, 0x02]));
    }

    #[test]
    fn program_date_times_and_part_names() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_ms(1_796_342_399_999), "2026-12-03T23:59:59.999Z");
        assert_eq!(part_file_name(12, 3), "seg12.3.ts");
        assert_eq!(parse_part_file_name("seg12.3.ts"), Some((12, 3)));
        assert_eq!(parse_part_file_name("seg12.ts"), None);
        assert_eq!(parse_part_file_name("seg1.2.3.ts"), None);
        assert_eq!(parse_part_file_name("seg.1.ts"), None);
        assert_eq!(parse_segment_file_name("seg12.3.ts"), None);
    }
}
