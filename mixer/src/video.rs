//! Per-input H.264 decoding with openh264, hardened for untrusted access units.

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::OpenH264API;

use crate::compose::I420Frame;
use crate::h264::{self, nal_type};

/// Largest access unit accepted from an input (bytes).
pub const MAX_AU_BYTES: usize = 4 << 20;
/// Largest decoded picture accepted (either side, pixels).
pub const MAX_SIDE: u32 = 4096;

/// What happened to one access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// A new picture is available.
    Picture,
    /// Accepted, no picture yet (e.g. parameter sets only, or decoder delay).
    NoPicture,
    /// Rejected or failed to decode; the last good picture is kept.
    Error(String),
    /// Skipped: after an error the input waits for an IDR picture before showing anything
    /// new, so that damaged references never reach the program.
    WaitingForKeyframe,
}

/// Decoder state of one input.
pub struct InputDecoder {
    decoder: Option<Decoder>,
    picture: Option<I420Frame>,
    /// Pictures decoded so far.
    pub pictures: u64,
    /// Access units rejected or failed.
    pub errors: u64,
    scratch: Vec<u8>,
    /// The buffer of the picture before the current one, reused for the next (a fresh
    /// 640x360 buffer per frame cost ~2000 page faults a second at 6 rooms).
    spare: Vec<u8>,
    need_idr: bool,
}

impl std::fmt::Debug for InputDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputDecoder")
            .field("picture", &self.picture)
            .field("pictures", &self.pictures)
            .field("errors", &self.errors)
            .finish()
    }
}

impl Default for InputDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn new_decoder() -> Option<Decoder> {
    let cfg = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    Decoder::with_api_config(OpenH264API::from_source(), cfg).ok()
}

impl InputDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        InputDecoder {
            decoder: new_decoder(),
            picture: None,
            pictures: 0,
            errors: 0,
            scratch: Vec::new(),
            spare: Vec::new(),
            need_idr: true,
        }
    }

    /// The last good picture.
    pub fn picture(&self) -> Option<&I420Frame> {
        self.picture.as_ref()
    }

    /// Access units were dropped before reaching the decoder: decode nothing until the next
    /// keyframe (the references are gone); the last picture stays.
    pub fn skip_to_keyframe(&mut self) {
        self.need_idr = true;
    }

    /// Decodes one Annex-B access unit. Never panics; on failure the last picture stays.
    pub fn decode(&mut self, au: &[u8]) -> DecodeOutcome {
        if au.len() > MAX_AU_BYTES {
            self.errors += 1;
            self.need_idr = true;
            return DecodeOutcome::Error(format!("access unit of {} bytes too large", au.len()));
        }
        // Re-frame the NAL units we understand with clean start codes; refuse units with the
        // forbidden bit set and access units with nothing decodable.
        self.scratch.clear();
        let mut has_idr = false;
        let mut useful = false;
        for n in h264::split_annexb(au) {
            let Some(&hdr) = n.first() else { continue };
            if hdr & 0x80 != 0 {
                self.errors += 1;
                self.need_idr = true;
                return DecodeOutcome::Error("forbidden_zero_bit set".into());
            }
            let t = hdr & 0x1f;
            match t {
                1..=5 | nal_type::SPS | nal_type::PPS => {
                    useful = true;
                    has_idr |= t == nal_type::IDR;
                    h264::push_nal(&mut self.scratch, n);
                }
                _ => {} // SEI, AUD, filler, extensions: not needed to decode.
            }
        }
        if !useful {
            self.errors += 1;
            self.need_idr = true;
            return DecodeOutcome::Error("no decodable NAL unit".into());
        }
        if self.need_idr && !has_idr {
            return DecodeOutcome::WaitingForKeyframe;
        }
        let Some(dec) = self.decoder.as_mut() else {
            self.decoder = new_decoder();
            self.errors += 1;
            return DecodeOutcome::Error("decoder unavailable".into());
        };
        let result = match dec.decode(&self.scratch) {
            Ok(Some(yuv)) => Ok(I420Frame::from_yuv_source_into(
                &yuv,
                std::mem::take(&mut self.spare),
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(Some(pic)) if pic.width() <= MAX_SIDE && pic.height() <= MAX_SIDE => {
                self.need_idr = false;
                if let Some(old) = self.picture.replace(pic) {
                    self.spare = old.into_bytes();
                }
                self.pictures += 1;
                DecodeOutcome::Picture
            }
            Ok(Some(_)) => {
                self.errors += 1;
                self.need_idr = true;
                DecodeOutcome::Error("picture too large".into())
            }
            Ok(None) => DecodeOutcome::NoPicture,
            Err(e) => {
                self.errors += 1;
                self.need_idr = true;
                if has_idr {
                    // A keyframe failed: start from a fresh decoder for the next one.
                    self.decoder = new_decoder();
                }
                DecodeOutcome::Error(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::Yuv;
    use crate::encode::VideoEncoder;

    #[test]
    fn decoded_pictures_reuse_two_buffers() {
        let mut enc = VideoEncoder::new(30, 800).expect("encoder");
        let mut dec = InputDecoder::new();
        let mut ptrs = Vec::new();
        for (i, y) in [40u8, 90, 140, 190, 240].into_iter().enumerate() {
            let pic = I420Frame::new(64, 48, Yuv { y, u: 128, v: 128 });
            let au = enc
                .encode(&pic, i as u64 * 33, i == 0)
                .expect("encode")
                .expect("a picture");
            assert!(matches!(dec.decode(&au.data), DecodeOutcome::Picture));
            let got = dec.picture().expect("picture");
            assert_eq!((got.width(), got.height()), (64, 48));
            let mean = got.plane(0).0.iter().map(|&p| u32::from(p)).sum::<u32>() / (64 * 48);
            assert!(
                mean.abs_diff(u32::from(y)) <= 3,
                "frame {i}: mean {mean} vs {y}"
            );
            ptrs.push(got.as_bytes().as_ptr());
        }
        // Two buffers alternate: the current picture and the spare one.
        assert_eq!(ptrs[0], ptrs[2]);
        assert_eq!(ptrs[1], ptrs[3]);
        assert_eq!(ptrs[2], ptrs[4]);
    }
}
