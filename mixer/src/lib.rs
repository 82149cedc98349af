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
//! # Choices worth knowing
//!
//! - Cue size: the whole SEI payload (16-byte UUID + JSON user data) must fit in 255 bytes
//!   ([`mixer::MAX_CUE_PAYLOAD`]); the JSON itself is thus at most 239 bytes. A cue's `pts_ms`
//!   is the program time of the first frame that carries it; repeats carry the same JSON.
//! - Cue idempotence: the last 4096 ids are remembered; a repeated id returns the first
//!   [`CueAck`] with `duplicate: true` (HTTP 200 instead of 202) and queues nothing.
//! - Layout SEI `audio` is the participant's smoothed level (RMS dBFS mapped from -50..0 dB
//!   to 0..1, ~300 ms release), rounded to 2 decimals. A "layout change" is any change of
//!   region geometry, identity or z (joins and leaves included), not of audio levels.
//! - Templates show at most 9 tiles ([`layout::MAX_TILES`]), hosts first then join order.
//!   `speaker` enlarges the dominant speaker (someone else must be loudest for 1 s),
//!   initially the host; `pip` shows the host full canvas.
//! - Each input's pictures are played out by their RTP timestamps through an adaptive delay
//!   ([`playout`]: the sender's clock fitted to the arrivals, the 99th percentile of recent
//!   lateness); audio through the jitter buffer (`jitter_ms`, default 60 ms). With
//!   `lip_sync` (default) the slower of the two sets the pace: video is held back to its
//!   audio (less [`mixer::lip_sync_lead`]), and audio waits for video that needs longer.
//! - After any decode error an input shows its last good picture until the next IDR decodes
//!   (never a smeared picture), and keyframe requests are throttled to one per
//!   `keyframe_request_interval_ms` per input.
//! - AAC: fdk-aac's priming delay (2048 samples) is compensated by dropping the first two
//!   access units, so access unit `k` carries program samples from `1024 k` and its
//!   timestamp is `1024 k / 48` ms; decoded audio lines up with the video clock.
//! - OpenH264 runs with frame skipping off so the program keeps its exact frame rate; on very
//!   hard content it can overshoot the bitrate (it warns about this at start-up).
//! - Studio decor ([`decor`], [`text`]): a background image (scaled to cover the canvas)
//!   instead of the colour, a label with each tile's display name at its bottom left, and
//!   up to 16 image overlays (alpha, opacity, z order) above everything. Images are pushed in
//!   by name ([`Mixer::set_image`], decoded with [`decode_image`]); each is scaled once per
//!   size and each label rendered once (cached), so a frame costs only the blending. Per
//!   frame: background, tiles, labels, overlays by `z`.
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
pub mod decor;
pub mod driver;
pub mod encode;
pub mod h264;
pub mod jpeg;
pub mod layout;
pub mod mixer;
pub mod mux;
pub mod playout;
pub mod sync;
pub mod text;
pub mod video;

pub use config::{CueError, MixConfig, MixerError, Rgb};
pub use decor::{decode_image, Decor, Image, ImageError, Overlay};
pub use layout::{Fit, Layout, Region, RegionSpec, Template};
pub use mixer::{
    AacFrame, CueAck, EncodedVideo, InputState, MixState, Mixer, MixerEvent, MixerOutput, OpusFrame,
};
pub use text::{FontError, Fonts};
