//! Program video encoder (openh264): constrained baseline, no B-frames, constant bitrate,
//! keyframes only when asked (the mixer asks every `gop_s` and on demand).

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::{OpenH264API, Timestamp};

use crate::compose::I420Frame;
use crate::config::MixerError;
use crate::h264::{self, nal_type};

/// One encoded picture.
#[derive(Debug, Clone)]
pub struct RawEncoded {
    /// Annex-B access unit (4-byte start codes).
    pub data: Vec<u8>,
    /// True for an IDR picture.
    pub keyframe: bool,
}

/// The program encoder.
pub struct VideoEncoder {
    enc: Encoder,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl std::fmt::Debug for VideoEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VideoEncoder")
    }
}

impl VideoEncoder {
    /// A new encoder for `fps` and `kbps`.
    pub fn new(fps: u32, kbps: u32) -> Result<Self, MixerError> {
        let cfg = EncoderConfig::new()
            .bitrate(BitRate::from_bps(kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .complexity(Complexity::Low)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .scene_change_detect(false)
            // Both are per-frame picture analyses (~10 % of the encode at 720p, measured with
            // perf in `cargo bench --bench rooms`); the program is a composite of already
            // encoded camera pictures at a fixed bitrate, where they buy little.
            .background_detection(false)
            .adaptive_quantization(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .num_threads(1);
        let enc = Encoder::with_api_config(OpenH264API::from_source(), cfg)
            .map_err(|e| MixerError::VideoEncoder(e.to_string()))?;
        Ok(VideoEncoder {
            enc,
            sps: None,
            pps: None,
        })
    }

    /// Latest SPS and PPS (NAL units without start codes), known after the first keyframe.
    pub fn sps_pps(&self) -> Option<(&[u8], &[u8])> {
        Some((self.sps.as_deref()?, self.pps.as_deref()?))
    }

    /// Encodes a picture at `pts_ms`; `force_idr` makes it an IDR picture.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        pts_ms: u64,
        force_idr: bool,
    ) -> Result<Option<RawEncoded>, MixerError> {
        if force_idr {
            self.enc.force_intra_frame();
        }
        let bs = self
            .enc
            .encode_at(frame, Timestamp::from_millis(pts_ms))
            .map_err(|e| MixerError::VideoEncoder(e.to_string()))?;
        if matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = bs.to_vec();
        let mut keyframe = false;
        let mut has_slice = false;
        for n in h264::split_annexb(&data) {
            match h264::nal_unit_type(n) {
                Some(nal_type::SPS) => self.sps = Some(n.to_vec()),
                Some(nal_type::PPS) => self.pps = Some(n.to_vec()),
                Some(nal_type::IDR) => {
                    keyframe = true;
                    has_slice = true;
                }
                Some(1..=4) => has_slice = true,
                _ => {}
            }
        }
        Ok(has_slice.then_some(RawEncoded { data, keyframe }))
    }
}
