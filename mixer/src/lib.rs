//! cohost mixer: composites co-hosts into one program.
//!
//! # Model
//!
//! [`Mixer`] is a pure, single-threaded core: inputs are pushed in, program frames come out
//! of [`Mixer::poll`]. It never reads the clock: every call carries a time (`arrival`, `now`)
//! on one monotonic timeline chosen by the caller (the [`driver`] uses an `Instant` taken at
//! start; tests use a simulated clock). The first `poll(now)` fixes program time zero.
//!
//! - Video: each input's H.264 access units are decoded at once (openh264); the last good
//!   picture is kept. Program picture `n` is due at `n / fps` and composites the latest
//!   pictures into the [`Layout`]'s regions on an I420 canvas, then is encoded (openh264,
//!   constrained baseline, CBR, no B-frames, IDR every `gop_s` and on
//!   [`Mixer::request_keyframe`]). An input whose video stops holds its last picture for
//!   `stall_timeout_ms`, then shows a placeholder tile (colour + audio level bar), as does an
//!   audio-only input.
//! - SEI (CONTRACT): a layout SEI on every keyframe and every frame whose regions changed; a
//!   cue SEI in the next `repeat` frames after [`Mixer::cue`]. SEI NAL units are inserted
//!   before the slices of the access unit.
//! - Audio: per input a jitter buffer ordered by RTP timestamp with Opus decoding and loss
//!   concealment ([`audio::JitterBuffer`]), or raw PCM ([`Mixer::push_pcm`]); every 20 ms
//!   block is mixed in `f32`, limited, and encoded to AAC-LC (fdk-aac) and Opus. Audio block
//!   `m` covers `[20m, 20m + 20)` ms of program time and is due at its end.
//! - Output: [`MixerOutput`] in time order: [`EncodedVideo`] (Annex-B), [`AacFrame`] (raw
//!   AAC), [`OpusFrame`], and [`MixerEvent`]s (keyframe requests, stalls).
//!
//! [`mux::flv`] turns these into FLV tags (files or RTMP message bodies) with the sequence
//! headers from [`Mixer::avc_decoder_config`] and [`Mixer::audio_specific_config`].
//!
//! ```no_run
//! use std::time::Duration;
//! use mixer::{MixConfig, Mixer, MixerOutput};
//! let mut m = Mixer::new(MixConfig::default())?;
//! m.add_input("alice", true);
//! // m.push_video("alice", &access_unit, rtp_ts, arrival);
//! for out in m.poll(Duration::from_millis(40)) {
//!     if let MixerOutput::Video(v) = out { let _ = v.keyframe; }
//! }
//! # Ok::<(), mixer::MixerError>(())
//! ```

pub mod audio;
pub mod compose;
pub mod config;
pub mod driver;
pub mod encode;
pub mod layout;
pub mod mixer;
pub mod mux;
pub mod nal;
pub mod video;

pub use config::{CueError, MixConfig, MixerError, Rgb};
pub use layout::{Fit, Layout, Region, RegionSpec, Template};
pub use mixer::{
    AacFrame, CueAck, EncodedVideo, InputState, MixState, Mixer, MixerEvent, MixerOutput, OpusFrame,
};
