//! Program snapshots as JPEG: the composed I420 canvas (limited range) scaled down and
//! encoded as a full-range JPEG with the pure-Rust `jpeg-encoder`, for room lists and
//! moderation (`GET /api/rooms/{room}/snapshot.jpg`). Pure: picture in, bytes out.

use jpeg_encoder::{ColorType, Encoder};
use thiserror::Error;

use crate::compose::I420Frame;

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
        chroma[i] = ((v - 128.0) * 255.0 / 224.0 + 128.0)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    (luma, chroma)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::compose::Yuv;

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
