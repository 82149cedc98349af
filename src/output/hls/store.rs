//! The live window the HTTP layer serves: segments, the parts of the one being written,
//! the playlist, and what tells waiting requests that a part is out.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::playlist::{write_extinf, write_parts};
use super::*;

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

    /// The segments the playlist lists: (how many kept ones it skips, the discontinuities
    /// before the first listed, its `EXT-X-DISCONTINUITY-SEQUENCE`).
    fn listed(&self) -> (usize, u64) {
        let skip = self.segments.len().saturating_sub(self.window);
        let before = self
            .segments
            .iter()
            .take(skip)
            .filter(|s| s.discontinuity)
            .count() as u64;
        (skip, self.dropped_discontinuities + before)
    }

    fn target_secs(&self) -> u64 {
        target_duration_secs(self.max_ticks)
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
    pub(super) fn push_part(&self, sequence: u64, discontinuity: bool, part: HlsPart) {
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

    /// Counts `n` discontinuities before the first segment (a stream continued from another
    /// node's).
    pub(super) fn set_discontinuities_before(&self, n: u64) {
        if let Ok(mut g) = self.inner.write() {
            g.dropped_discontinuities = n;
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
        let (skip, disc_seq) = g.listed();
        let first = g.segments.get(skip)?;
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
        let (skip, disc_seq) = g.listed();
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
