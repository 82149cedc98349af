//! Program snapshots: the latest composed picture as a JPEG thumbnail, a pure function
//! (I420 in, JPEG bytes out) behind `GET /api/rooms/{room}/snapshot.jpg`, and the per-room
//! rate limit in front of it ([`SnapshotLimiter`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jpeg_encoder::{ColorType, Encoder};
use mixer::compose::I420Frame;
use thiserror::Error;

/// JPEG quality of snapshots (1–100).
pub const QUALITY: u8 = 85;
/// The smallest width a snapshot may be scaled to.
pub const MIN_WIDTH: u32 = 16;

/// Why a snapshot could not be made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The picture is larger than JPEG allows (65 535 pixels a side).
    #[error("picture of {0}x{1} is too large for JPEG")]
    TooLarge(u32, u32),
    /// The encoder failed.
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// `frame` as a JPEG, scaled down (nearest pixel) to `width` when that is smaller than the
/// picture (at least [`MIN_WIDTH`], even), keeping its aspect ratio.
pub fn jpeg(frame: &I420Frame, width: Option<u32>) -> Result<Vec<u8>, SnapshotError> {
    let (sw, sh) = (frame.width(), frame.height());
    let w = width
        .map(|w| w.clamp(MIN_WIDTH, sw.max(MIN_WIDTH)) & !1)
        .unwrap_or(sw)
        .min(sw)
        .max(2);
    let h = ((u64::from(sh) * u64::from(w) / u64::from(sw.max(1))) as u32).max(2) & !1;
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(SnapshotError::TooLarge(w, h));
    };
    let data = frame.as_bytes();
    let (sw_us, sh_us) = (sw as usize, sh as usize);
    let (cw, ch) = (sw_us.div_ceil(2), sh_us.div_ceil(2));
    let (y_plane, rest) = data.split_at((sw_us * sh_us).min(data.len()));
    let (u_plane, v_plane) = rest.split_at((cw * ch).min(rest.len()));
    // The canvas is limited range (BT.601, Y 16..235); JPEG is full range.
    let (luma, chroma) = full_range_tables();
    let mut ycbcr = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as usize {
        let sy = (y * sh_us / h as usize).min(sh_us.saturating_sub(1));
        for x in 0..w as usize {
            let sx = (x * sw_us / w as usize).min(sw_us.saturating_sub(1));
            let c = (sy / 2) * cw + sx / 2;
            let (y, u, v) = (
                y_plane.get(sy * sw_us + sx).copied().unwrap_or(16),
                u_plane.get(c).copied().unwrap_or(128),
                v_plane.get(c).copied().unwrap_or(128),
            );
            ycbcr.push(luma[usize::from(y)]);
            ycbcr.push(chroma[usize::from(u)]);
            ycbcr.push(chroma[usize::from(v)]);
        }
    }
    let mut out = Vec::with_capacity(64 * 1024);
    Encoder::new(&mut out, QUALITY)
        .encode(&ycbcr, w16, h16, ColorType::Ycbcr)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok(out)
}

/// Limited-range (video) luma and chroma values to full-range (JPEG) ones.
fn full_range_tables() -> ([u8; 256], [u8; 256]) {
    let mut luma = [0u8; 256];
    let mut chroma = [0u8; 256];
    for i in 0..256 {
        let v = i as f32;
        luma[i] = ((v - 16.0) * 255.0 / 219.0).round().clamp(0.0, 255.0) as u8;
        chroma[i] = ((v - 128.0) * 255.0 / 224.0 + 128.0).round().clamp(0.0, 255.0) as u8;
    }
    (luma, chroma)
}

/// A JPEG asked for again within this long is the one made before (a room list polled by
/// many moderators costs one encode per size).
pub const REUSE: Duration = Duration::from_millis(250);
/// Snapshots encoded per room per second at most (over all sizes); past it `429`.
pub const PER_ROOM_PER_S: usize = 8;
/// Sizes a room's cache keeps.
const SIZES: usize = 4;

/// What [`SnapshotLimiter::check`] decides for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAdmit {
    /// The same picture was encoded less than [`REUSE`] ago: serve it.
    Cached(Bytes),
    /// Encode a new one (and [`SnapshotLimiter::put`] it).
    Encode,
    /// The room had [`PER_ROOM_PER_S`] encodes in the last second: `429`, retry after this.
    Limited(Duration),
}

/// Per room: the latest JPEG of each asked width and the times of the recent encodes. Pure
/// (the caller gives `now`); bounded (a few sizes per room, rooms idle for a minute
/// forgotten).
#[derive(Debug, Default)]
pub struct SnapshotLimiter {
    rooms: HashMap<String, RoomShots>,
}

#[derive(Debug, Default)]
struct RoomShots {
    /// (width asked, when, JPEG), newest last.
    cached: Vec<(Option<u32>, Instant, Bytes)>,
    /// Encodes in the last second.
    encodes: Vec<Instant>,
}

impl SnapshotLimiter {
    /// What to do with a request for `room` at width `w`.
    pub fn check(&mut self, room: &str, w: Option<u32>, now: Instant) -> SnapshotAdmit {
        let r = self.rooms.entry(room.to_owned()).or_default();
        if let Some((_, _, jpeg)) = r
            .cached
            .iter()
            .find(|(cw, at, _)| *cw == w && now.saturating_duration_since(*at) < REUSE)
        {
            return SnapshotAdmit::Cached(jpeg.clone());
        }
        r.encodes
            .retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(1));
        if r.encodes.len() >= PER_ROOM_PER_S {
            let oldest = r.encodes.first().copied().unwrap_or(now);
            return SnapshotAdmit::Limited(
                Duration::from_secs(1).saturating_sub(now.saturating_duration_since(oldest)),
            );
        }
        // Counted now, so concurrent requests cannot all pass.
        r.encodes.push(now);
        SnapshotAdmit::Encode
    }

    /// Keeps a JPEG just encoded for `room` at width `w`.
    pub fn put(&mut self, room: &str, w: Option<u32>, now: Instant, jpeg: Bytes) {
        let recent = |t: &Instant| now.saturating_duration_since(*t) < Duration::from_secs(60);
        self.rooms.retain(|_, r| {
            r.cached.last().is_some_and(|(_, at, _)| recent(at)) || r.encodes.iter().any(recent)
        });
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.cached.retain(|(cw, _, _)| *cw != w);
        if r.cached.len() >= SIZES {
            r.cached.remove(0);
        }
        r.cached.push((w, now, jpeg));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mixer::compose::Yuv;

    #[test]
    fn snapshots_are_reused_briefly_and_limited_per_room() {
        let mut l = SnapshotLimiter::default();
        let t0 = Instant::now();
        let jpeg = Bytes::from_static(b"jpeg");
        assert_eq!(l.check("a", None, t0), SnapshotAdmit::Encode);
        l.put("a", None, t0, jpeg.clone());
        // Asked again at once: the same bytes, no encode.
        let t = t0 + Duration::from_millis(100);
        assert_eq!(l.check("a", None, t), SnapshotAdmit::Cached(jpeg.clone()));
        // Another size is another encode; other rooms are not affected.
        assert_eq!(l.check("a", Some(160), t), SnapshotAdmit::Encode);
        assert_eq!(l.check("b", Some(160), t), SnapshotAdmit::Encode);
        // Encodes per second are capped per room.
        let mut admitted = 2;
        for k in 0..20u32 {
            match l.check("a", Some(200 + k), t) {
                SnapshotAdmit::Encode => admitted += 1,
                SnapshotAdmit::Limited(after) => assert!(after <= Duration::from_secs(1)),
                SnapshotAdmit::Cached(_) => panic!("nothing cached for that size"),
            }
        }
        assert_eq!(admitted, PER_ROOM_PER_S);
        // A second later encodes are admitted again; the old JPEG is stale.
        let later = t0 + Duration::from_millis(1200);
        assert_eq!(l.check("a", None, later), SnapshotAdmit::Encode);
    }

    #[test]
    fn a_picture_becomes_a_jpeg_of_the_asked_width() {
        let mut f = I420Frame::new(
            1280,
            720,
            Yuv {
                y: 81,
                u: 90,
                v: 240,
            },
        );
        f.fill_rect(
            640,
            0,
            640,
            720,
            Yuv {
                y: 145,
                u: 54,
                v: 34,
            },
        );
        let full = jpeg(&f, None).unwrap();
        assert_eq!(&full[..2], &[0xFF, 0xD8], "SOI");
        assert_eq!(&full[full.len() - 2..], &[0xFF, 0xD9], "EOI");
        let small = jpeg(&f, Some(321)).unwrap();
        assert!(small.len() < full.len());
        // SOF0 holds the size: 320 wide (even), 180 high.
        let sof = small.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let h = u16::from_be_bytes([small[sof + 5], small[sof + 6]]);
        let w = u16::from_be_bytes([small[sof + 7], small[sof + 8]]);
        assert_eq!((w, h), (320, 180));
        // Wider than the picture, or tiny: clamped.
        let same = jpeg(&f, Some(5000)).unwrap();
        let sof = same.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(u16::from_be_bytes([same[sof + 7], same[sof + 8]]), 1280);
        assert!(jpeg(&f, Some(0)).is_ok());
    }
}
