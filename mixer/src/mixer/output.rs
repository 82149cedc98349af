//! What the mixer hands out: program pictures and audio frames, events, cue answers and
//! status snapshots.

use bytes::Bytes;
use serde::Serialize;

use crate::layout::{Layout, Region};

/// An encoded program picture.
#[derive(Debug, Clone)]
pub struct EncodedVideo {
    /// Annex-B access unit (4-byte start codes): SPS/PPS on keyframes, then SEI NAL units,
    /// then the slices.
    pub data: Bytes,
    /// Presentation time in program milliseconds.
    pub pts_ms: u64,
    /// Decode time (equal to `pts_ms`: there are no B-frames).
    pub dts_ms: u64,
    /// IDR picture.
    pub keyframe: bool,
}

/// One raw AAC-LC access unit (no ADTS header), 1024 samples at 48 kHz stereo.
#[derive(Debug, Clone)]
pub struct AacFrame {
    /// The access unit.
    pub data: Bytes,
    /// Presentation time in program milliseconds.
    pub pts_ms: u64,
}

/// One Opus packet (48 kHz stereo, 20 ms) of the program audio, for WebRTC viewers.
#[derive(Debug, Clone)]
pub struct OpusFrame {
    /// The packet.
    pub data: Bytes,
    /// Presentation time in program milliseconds.
    pub pts_ms: u64,
}

/// Something the caller should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MixerEvent {
    /// Ask this input's publisher for a keyframe (PLI/FIR). Throttled per input.
    RequestKeyframe(String),
    /// The input's video stopped; its tile now shows the placeholder.
    InputStalled(String),
    /// The input's video is back.
    InputResumed(String),
    /// A new picture of this input is on screen from the next program frame on: the one with
    /// this RTP timestamp (90 kHz).
    Presented {
        /// The input.
        identity: String,
        /// RTP timestamp of the picture shown.
        rtp_ts: u32,
    },
}

/// An item produced by [`Mixer::poll`](super::Mixer::poll).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MixerOutput {
    /// A program picture.
    Video(EncodedVideo),
    /// A program AAC access unit.
    Audio(AacFrame),
    /// A program Opus packet.
    Opus(OpusFrame),
    /// An event.
    Event(MixerEvent),
}

/// Answer to a cue: its id and the program time of the frame that carries it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CueAck {
    /// Cue id.
    pub id: String,
    /// Program time of the first frame carrying the cue.
    pub pts_ms: u64,
    /// True when this id was seen before and this is the first answer again.
    #[serde(skip)]
    pub duplicate: bool,
}

/// A snapshot of one input, for status APIs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputState {
    /// Identity.
    pub identity: String,
    /// Host or not.
    pub is_host: bool,
    /// Whether the tile shows live video (else the placeholder).
    pub video_live: bool,
    /// Pictures decoded.
    pub pictures: u64,
    /// Access units that failed.
    pub decode_errors: u64,
    /// Video play-out delay now, beyond the fastest transit (jitter, repairs, lip sync), ms.
    pub video_delay_ms: f64,
    /// What the video needs by itself (its lateness, without lip sync), ms.
    pub video_own_delay_ms: f64,
    /// How much later its pictures arrive than the sound captured with them (from its RTCP
    /// sender reports), ms; `None` without reports (then audio and video pair by arrival).
    pub av_offset_ms: Option<f64>,
    /// Audio wait from arrival to play-out now (smoothed), ms; 0 before it plays.
    pub audio_delay_ms: f64,
    /// Audio blocks inserted (net of those skipped) to wait for slower video (lip sync).
    pub audio_sync_blocks: i64,
    /// Audio concealed (lost or late), in 20 ms blocks; of those recovered from FEC.
    pub audio_concealed_blocks: u64,
    /// Audio blocks recovered from in-band FEC.
    pub audio_fec_blocks: u64,
    /// Audio level 0..=1.
    pub audio_level: f32,
}

/// A snapshot of the mix, for status APIs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixState {
    /// Current layout.
    pub layout: Layout,
    /// Regions of the last frame.
    pub regions: Vec<Region>,
    /// Inputs in display order.
    pub inputs: Vec<InputState>,
    /// Program pictures produced.
    pub video_frames: u64,
    /// Program time of the next picture.
    pub next_pts_ms: u64,
}
