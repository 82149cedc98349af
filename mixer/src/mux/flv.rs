//! FLV tags as pure functions: file header, `onMetaData` (AMF0), AVC and AAC sequence
//! headers, AVC NALU tags (AVCC, composition time 0) and raw AAC tags.
//!
//! The `*_body` functions return a tag *body*, which is also the payload of the matching
//! RTMP message (type 8 audio, 9 video, 18 data); [`tag`] wraps a body into a full file tag
//! followed by its PreviousTagSize. [`FlvMuxer`] strings them together for a file.

use crate::h264::{self, nal_type};
use crate::mux::amf0::{self, Amf0Value};

/// FLV tag type: audio.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type: video.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type: script data.
pub const TAG_SCRIPT: u8 = 18;

/// The FLV file header (version 1, audio/video flags) followed by PreviousTagSize0.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// A full FLV file tag: 11-byte header, `body`, 4-byte PreviousTagSize. Bodies larger than
/// 16 MiB - 1 are truncated to what the 24-bit size field can express (never happens for
/// sane media).
pub fn tag(tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Vec<u8> {
    let body = body.get(..body.len().min(0xff_ffff)).unwrap_or_default();
    let size = body.len() as u32;
    let mut out = Vec::with_capacity(body.len() + 15);
    out.push(tag_type);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&timestamp_ms.to_be_bytes()[1..]);
    out.push((timestamp_ms >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + 11).to_be_bytes());
    out
}

/// AVCDecoderConfigurationRecord (ISO 14496-15) from one SPS and one PPS (NAL units without
/// start codes). `None` if the SPS is too short or either is longer than 65535 bytes.
pub fn avc_decoder_configuration_record(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let (profile, compat, level) = (*sps.get(1)?, *sps.get(2)?, *sps.get(3)?);
    let sps_len = u16::try_from(sps.len()).ok()?;
    let pps_len = u16::try_from(pps.len()).ok()?;
    if pps.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(11 + sps.len() + pps.len());
    out.extend_from_slice(&[1, profile, compat, level, 0xff, 0xe1]);
    out.extend_from_slice(&sps_len.to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&pps_len.to_be_bytes());
    out.extend_from_slice(pps);
    Some(out)
}

/// Video tag body: AVC sequence header carrying an AVCDecoderConfigurationRecord.
pub fn avc_sequence_header_body(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 5);
    out.extend_from_slice(&[0x17, 0x00, 0, 0, 0]);
    out.extend_from_slice(record);
    out
}

/// Video tag body: one access unit as AVCC (4-byte lengths), composition time 0. Access
/// unit delimiters are dropped; everything else (SPS, PPS, SEI, slices) is kept in order.
pub fn avc_nalu_body(annexb: &[u8], keyframe: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(annexb.len() + 16);
    out.extend_from_slice(&[if keyframe { 0x17 } else { 0x27 }, 0x01, 0, 0, 0]);
    for n in h264::split_annexb(annexb) {
        if h264::nal_unit_type(n) == Some(nal_type::AUD) {
            continue;
        }
        let len = u32::try_from(n.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(n);
    }
    out
}

/// Audio tag body flag byte for AAC, 44 kHz class (FLV always says so for AAC), 16-bit,
/// stereo.
const AAC_FLAGS: u8 = 0xaf;

/// Audio tag body: AAC sequence header carrying the AudioSpecificConfig.
pub fn aac_sequence_header_body(asc: &[u8]) -> Vec<u8> {
    let mut out = vec![AAC_FLAGS, 0x00];
    out.extend_from_slice(asc);
    out
}

/// Audio tag body: one raw AAC access unit.
pub fn aac_raw_body(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len() + 2);
    out.extend_from_slice(&[AAC_FLAGS, 0x01]);
    out.extend_from_slice(au);
    out
}

/// Stream properties written in `onMetaData`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metadata {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate.
    pub fps: f64,
    /// Video bitrate in kbit/s.
    pub video_kbps: u32,
    /// Audio bitrate in kbit/s.
    pub audio_kbps: u32,
}

/// Script tag body: AMF0 `"onMetaData"` followed by an ECMA array of the stream properties
/// (H.264 codec id 7, AAC codec id 10, 48 kHz stereo).
pub fn on_metadata_body(m: &Metadata) -> Vec<u8> {
    let n = |k: &str, v: f64| (k.to_owned(), Amf0Value::Number(v));
    let props = vec![
        n("duration", 0.0),
        n("width", f64::from(m.width)),
        n("height", f64::from(m.height)),
        n("videodatarate", f64::from(m.video_kbps)),
        n("framerate", m.fps),
        n("videocodecid", 7.0),
        n("audiodatarate", f64::from(m.audio_kbps)),
        n("audiosamplerate", 48_000.0),
        n("audiosamplesize", 16.0),
        ("stereo".to_owned(), Amf0Value::Boolean(true)),
        n("audiocodecid", 10.0),
        ("encoder".to_owned(), Amf0Value::str("cohost")),
    ];
    amf0::encode_all(&[Amf0Value::str("onMetaData"), Amf0Value::EcmaArray(props)])
}

/// RTMP data message (type 18) body for publishing metadata: AMF0 `"@setDataFrame"` followed
/// by the [`on_metadata_body`] (what encoders such as OBS and ffmpeg send after `publish`).
pub fn set_data_frame_body(m: &Metadata) -> Vec<u8> {
    let mut out = amf0::encode_all(&[Amf0Value::str("@setDataFrame")]);
    out.extend_from_slice(&on_metadata_body(m));
    out
}

/// Builds an FLV file from program outputs: header and metadata first, then sequence
/// headers before the first keyframe (and again when the SPS/PPS change), dropping pictures
/// before the first keyframe and audio before the first picture.
#[derive(Debug, Clone, Default)]
pub struct FlvMuxer {
    started: bool,
    avc_record: Option<Vec<u8>>,
    asc_sent: bool,
}

impl FlvMuxer {
    /// A new muxer.
    pub fn new() -> Self {
        Self::default()
    }

    /// File header plus the `onMetaData` tag.
    pub fn header(&self, meta: &Metadata) -> Vec<u8> {
        let mut out = file_header(true, true).to_vec();
        out.extend_from_slice(&tag(TAG_SCRIPT, 0, &on_metadata_body(meta)));
        out
    }

    /// Tags for one access unit (Annex-B), at `pts_ms`.
    pub fn video(&mut self, annexb: &[u8], pts_ms: u64, keyframe: bool) -> Vec<u8> {
        let ts = pts_ms as u32;
        let mut out = Vec::new();
        if keyframe {
            if let Some(rec) = h264::first_sps_pps(annexb)
                .and_then(|(s, p)| avc_decoder_configuration_record(s, p))
            {
                if self.avc_record.as_ref() != Some(&rec) {
                    out.extend_from_slice(&tag(TAG_VIDEO, ts, &avc_sequence_header_body(&rec)));
                    self.avc_record = Some(rec);
                }
            }
            self.started |= self.avc_record.is_some();
        }
        if self.started {
            out.extend_from_slice(&tag(TAG_VIDEO, ts, &avc_nalu_body(annexb, keyframe)));
        }
        out
    }

    /// Tags for one raw AAC access unit at `pts_ms`; `asc` is the AudioSpecificConfig.
    pub fn audio(&mut self, au: &[u8], pts_ms: u64, asc: &[u8]) -> Vec<u8> {
        let ts = pts_ms as u32;
        let mut out = Vec::new();
        if !self.started {
            return out;
        }
        if !self.asc_sent {
            out.extend_from_slice(&tag(TAG_AUDIO, ts, &aac_sequence_header_body(asc)));
            self.asc_sent = true;
        }
        out.extend_from_slice(&tag(TAG_AUDIO, ts, &aac_raw_body(au)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        assert_eq!(
            file_header(true, true),
            [0x46, 0x4c, 0x56, 1, 5, 0, 0, 0, 9, 0, 0, 0, 0]
        );
        assert_eq!(file_header(false, true)[4], 1);
    }

    #[test]
    fn tag_bytes() {
        let t = tag(TAG_AUDIO, 0x0102_0304, &[0xaa, 0xbb]);
        assert_eq!(
            t,
            vec![8, 0, 0, 2, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0xaa, 0xbb, 0, 0, 0, 13]
        );
    }

    #[test]
    fn avc_record_and_headers() {
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xaa];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let rec = avc_decoder_configuration_record(&sps, &pps).expect("record");
        assert_eq!(
            rec,
            vec![
                1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 5, 0x67, 0x42, 0xc0, 0x1f, 0xaa, 1, 0, 4, 0x68,
                0xce, 0x3c, 0x80
            ]
        );
        assert!(avc_decoder_configuration_record(&[0x67], &pps).is_none());
        let body = avc_sequence_header_body(&rec);
        assert_eq!(&body[..5], &[0x17, 0, 0, 0, 0]);
        assert_eq!(&body[5..], &rec[..]);
    }

    #[test]
    fn nalu_body_is_avcc() {
        let mut au = Vec::new();
        h264::push_nal(&mut au, &[0x09, 0xf0]); // AUD dropped
        h264::push_nal(&mut au, &[0x06, 1, 2]);
        au.extend_from_slice(&[0, 0, 1, 0x65, 9, 9, 9]); // 3-byte start code
        let body = avc_nalu_body(&au, true);
        assert_eq!(
            body,
            vec![0x17, 1, 0, 0, 0, 0, 0, 0, 3, 0x06, 1, 2, 0, 0, 0, 4, 0x65, 9, 9, 9]
        );
        assert_eq!(
            avc_nalu_body(&[0, 0, 1, 0x41, 7], false),
            vec![0x27, 1, 0, 0, 0, 0, 0, 0, 2, 0x41, 7]
        );
    }

    #[test]
    fn aac_bodies() {
        assert_eq!(
            aac_sequence_header_body(&[0x11, 0x90]),
            vec![0xaf, 0, 0x11, 0x90]
        );
        assert_eq!(aac_raw_body(&[1, 2, 3]), vec![0xaf, 1, 1, 2, 3]);
    }

    #[test]
    fn metadata_amf0() {
        let b = on_metadata_body(&Metadata {
            width: 1280,
            height: 720,
            fps: 30.0,
            video_kbps: 2500,
            audio_kbps: 128,
        });
        assert_eq!(
            &b[..13],
            &[2, 0, 10, b'o', b'n', b'M', b'e', b't', b'a', b'D', b'a', b't', b'a']
        );
        assert_eq!(&b[13..18], &[8, 0, 0, 0, 12]);
        assert!(b.ends_with(&[0, 0, 9]));
        // "width" key followed by number 1280.0
        let pos = b.windows(5).position(|w| w == b"width").expect("width");
        assert_eq!(b[pos + 5], 0);
        assert_eq!(&b[pos + 6..pos + 14], &1280.0f64.to_be_bytes());
    }

    #[test]
    fn set_data_frame_prefix() {
        let m = Metadata {
            width: 2,
            height: 2,
            fps: 1.0,
            video_kbps: 1,
            audio_kbps: 1,
        };
        let b = set_data_frame_body(&m);
        assert_eq!(&b[..3], &[2, 0, 13]);
        assert_eq!(&b[3..16], b"@setDataFrame");
        assert_eq!(&b[16..], &on_metadata_body(&m)[..]);
    }

    #[test]
    fn muxer_waits_for_keyframe() {
        let mut m = FlvMuxer::new();
        let mut p = Vec::new();
        h264::push_nal(&mut p, &[0x41, 1]);
        assert!(m.video(&p, 0, false).is_empty());
        assert!(m.audio(&[1], 0, &[0x11, 0x90]).is_empty());
        let mut k = Vec::new();
        h264::push_nal(&mut k, &[0x67, 0x42, 0xc0, 0x1f]);
        h264::push_nal(&mut k, &[0x68, 0xce]);
        h264::push_nal(&mut k, &[0x65, 1]);
        let out = m.video(&k, 33, true);
        assert_eq!(out[0], TAG_VIDEO);
        assert_eq!(out[11..13], [0x17, 0x00]); // sequence header first
                                               // Same SPS/PPS on the next keyframe: no new sequence header.
        let out2 = m.video(&k, 66, true);
        assert_eq!(out2[11..13], [0x17, 0x01]);
        let a = m.audio(&[1], 40, &[0x11, 0x90]);
        assert_eq!(a[11..13], [0xaf, 0x00]);
    }
}
