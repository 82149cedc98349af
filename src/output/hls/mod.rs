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
//! // 90 kHz timestamps; Annex-B access units; raw AAC frames (no ADTS header). A live
//! // low-latency playlist is served from the second segment on.
//! for i in 0..3u64 {
//!     seg.push_audio(i * 90_000, &[0x21, 0x10, 0x04]);
//!     seg.push_video(i * 90_000, true, &[0, 0, 0, 1, 0x65, 0x88]);
//! }
//! assert!(store.playlist().unwrap().contains("seg0.ts"));
//! assert!(store.segment(0).is_some());
//! ```

use std::time::Duration;

use bytes::Bytes;

mod playlist;
mod segmenter;
mod store;
#[cfg(test)]
mod tests;

pub use playlist::{iso8601_ms, render_playlist, render_playlist_entries, PlaylistEntry};
pub use segmenter::{HlsSegmenter, MAX_INTERLEAVE_TICKS};
pub use store::{HlsStore, Readiness};

use mixer::mux::ts::AacConfig;

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

/// `EXT-X-TARGETDURATION` for segments of at most `max_ticks`: RFC 8216 asks that every
/// `EXTINF` *rounded to the nearest integer* be at most it, so a 2.033 s segment (a keyframe a
/// frame late) keeps a 2 s target — the ceiling made it 3 s for the rest of the program, and
/// classic players (3 target durations behind) 9 s behind instead of 6.
pub fn target_duration_secs(max_ticks: u64) -> u64 {
    ((max_ticks + TICKS_PER_SECOND / 2) / TICKS_PER_SECOND).max(1)
}

fn duration_ticks(d: Duration) -> u64 {
    (d.as_micros() as u64).saturating_mul(9) / 100
}
