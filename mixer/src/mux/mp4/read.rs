//! Reading back what [`super`] writes, as far as a recordings list needs: where a
//! fragment's track ends (`moof` → `traf` → `tfhd`/`tfdt`/`trun`). Pure and bounded: it
//! reads only the boxes it is given and never trusts a size beyond them.

/// The boxes of `buf` at one level: (type, body).
fn boxes(buf: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        if size < 8 || size > rest.len() {
            return None;
        }
        let body = &rest[8..size];
        rest = &rest[size..];
        Some((kind, body))
    })
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Where track `track_id` ends after the `moof` box `moof` (the whole box, header
/// included), in the track's timescale: its `tfdt` plus the durations of its `trun`
/// samples. `None` when the fragment has no such track or is malformed.
pub fn track_end(moof: &[u8], track_id: u32) -> Option<u64> {
    let (kind, body) = boxes(moof).next()?;
    if &kind != b"moof" {
        return None;
    }
    for (kind, traf) in boxes(body) {
        if &kind != b"traf" {
            continue;
        }
        let (mut id, mut default_duration, mut base, mut total) = (None, None, None, 0u64);
        for (kind, b) in boxes(traf) {
            match &kind {
                b"tfhd" => {
                    let flags = be32(b, 0)? & 0x00FF_FFFF;
                    id = be32(b, 4);
                    // Optional fields in order: base data offset (8), description index (4),
                    // default duration (4).
                    let mut at = 8;
                    if flags & 0x01 != 0 {
                        at += 8;
                    }
                    if flags & 0x02 != 0 {
                        at += 4;
                    }
                    if flags & 0x08 != 0 {
                        default_duration = be32(b, at);
                    }
                }
                b"tfdt" => {
                    base = if b.first() == Some(&1) {
                        be64(b, 4)
                    } else {
                        be32(b, 4).map(u64::from)
                    };
                }
                b"trun" => {
                    let flags = be32(b, 0)? & 0x00FF_FFFF;
                    let count = be32(b, 4)? as usize;
                    let mut at = 8;
                    if flags & 0x01 != 0 {
                        at += 4;
                    }
                    if flags & 0x04 != 0 {
                        at += 4;
                    }
                    let per = [0x100, 0x200, 0x400, 0x800]
                        .iter()
                        .filter(|f| flags & **f != 0)
                        .count()
                        * 4;
                    if count.checked_mul(per)? > b.len().saturating_sub(at) {
                        return None;
                    }
                    for k in 0..count {
                        let d = if flags & 0x100 != 0 {
                            be32(b, at + k * per)?
                        } else {
                            default_duration?
                        };
                        total += u64::from(d);
                    }
                }
                _ => {}
            }
        }
        if id == Some(track_id) {
            return Some(base? + total);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mux::mp4::{Mp4Config, Mp4Writer, VIDEO_TIMESCALE, VIDEO_TRACK_ID};

    #[test]
    fn a_writers_fragments_end_where_its_media_does() {
        let mut w = Mp4Writer::new(Mp4Config::new(64, 64, vec![0x11, 0x90])).unwrap();
        let idr = [
            0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x02, 0x68, 0x40, 0, 0, 0, 1, 0x68,
            0xCE, 0x3C, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00,
        ];
        let p = [0, 0, 0, 1, 0x41, 0x9A, 0x20];
        let mut out = Vec::new();
        for n in 0..90u64 {
            let key = n % 30 == 0;
            out.extend(w.push_video(1000 + n * 1000 / 30, key, if key { &idr } else { &p }));
        }
        out.extend(w.finish());
        // The last moof of the file.
        let mut last = None;
        let mut rest = &out[..];
        while rest.len() >= 8 {
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            if &rest[4..8] == b"moof" {
                last = Some(&rest[..size]);
            }
            rest = &rest[size..];
        }
        let end = track_end(last.unwrap(), VIDEO_TRACK_ID).unwrap();
        let ms = end * 1000 / u64::from(VIDEO_TIMESCALE);
        assert!((2990..=3010).contains(&ms), "{ms}");
        assert_eq!(track_end(last.unwrap(), 9), None);
        // Truncated or garbage: no answer, no panic.
        assert_eq!(track_end(&last.unwrap()[..20], VIDEO_TRACK_ID), None);
        assert_eq!(track_end(b"garbage!garbage!", VIDEO_TRACK_ID), None);
        for cut in 0..last.unwrap().len() {
            let _ = track_end(&last.unwrap()[..cut], VIDEO_TRACK_ID);
        }
    }
}
