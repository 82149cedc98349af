//! The m3u8 text: version-3 playlists and the pieces of the low-latency one, dates.

use std::fmt::Write as _;

use super::*;

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
    let target = target_duration_secs(max_ticks);
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

pub(super) fn write_extinf(s: &mut String, sequence: u64, ticks: u64) {
    let _ = writeln!(s, "#EXTINF:{:.3},", ticks as f64 / TICKS_PER_SECOND as f64);
    let _ = writeln!(s, "{}", segment_file_name(sequence));
}

pub(super) fn write_parts(s: &mut String, sequence: u64, parts: &[HlsPart]) {
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
