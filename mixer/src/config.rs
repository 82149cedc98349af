//! Mixer configuration and errors.

use serde::{Deserialize, Deserializer, Serialize};

use crate::decor::{Decor, Overlay};
use crate::layout::{Fit, Layout};

/// An 8-bit RGB colour. JSON: `"#rrggbb"` or `[r, g, b]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl<'de> Deserialize<'de> for Rgb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Arr([u8; 3]),
            Str(String),
        }
        match Form::deserialize(d)? {
            Form::Arr([r, g, b]) => Ok(Rgb(r, g, b)),
            Form::Str(s) => {
                let hex = s.strip_prefix('#').unwrap_or(&s);
                let v = (hex.len() == 6)
                    .then(|| u32::from_str_radix(hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        serde::de::Error::custom("background must be \"#rrggbb\" or [r,g,b]")
                    })?;
                Ok(Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8))
            }
        }
    }
}

/// Configuration of a mix (the room's `mix` object in the API; every field optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixConfig {
    /// Canvas width in pixels (even, 16..=1920; portrait allowed).
    pub width: u32,
    /// Canvas height in pixels (even, 16..=1920, the short side at most 1080).
    pub height: u32,
    /// Program frame rate (1..=60).
    pub fps: u32,
    /// Video target bitrate in kbit/s.
    pub video_kbps: u32,
    /// Audio bitrate in kbit/s (AAC-LC and the Opus program encode).
    pub audio_kbps: u32,
    /// Keyframe interval in seconds.
    pub gop_s: f64,
    /// Initial layout.
    pub layout: Layout,
    /// Background colour.
    pub background: Rgb,
    /// How template regions fit their sources (default crop to fill).
    pub fit: Fit,
    /// After this long without a decodable picture an input shows its placeholder tile.
    pub stall_timeout_ms: u64,
    /// Audio jitter buffer target delay per input.
    pub jitter_ms: u64,
    /// Minimum interval between two keyframe requests to the same input.
    pub keyframe_request_interval_ms: u64,
    /// Hold each input's video back to within 20 ms of its audio, which plays `jitter_ms`
    /// after arrival (lip sync; costs `jitter_ms - 20` ms of video delay). Off, video is
    /// delayed only as much as its own jitter needs.
    pub lip_sync: bool,
    /// Images drawn over the program (at most 16; see [`Overlay`]); changed live with
    /// [`Mixer::set_decor`](crate::Mixer::set_decor).
    pub overlays: Vec<Overlay>,
    /// Name of an image filling the canvas behind the tiles (scaled to cover it, centred,
    /// cropped) instead of the background colour.
    pub background_image: Option<String>,
    /// Draw each tile's display name at its bottom left (needs
    /// [`Mixer::set_fonts`](crate::Mixer::set_fonts)).
    pub labels: bool,
    /// The server records every program of the room; the mixer ignores it.
    pub record: bool,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            width: 1280,
            height: 720,
            fps: 30,
            video_kbps: 2500,
            audio_kbps: 128,
            gop_s: 2.0,
            layout: Layout::default(),
            background: Rgb(16, 16, 16),
            fit: Fit::Crop,
            stall_timeout_ms: 2000,
            jitter_ms: 60,
            keyframe_request_interval_ms: 1000,
            lip_sync: true,
            overlays: Vec::new(),
            background_image: None,
            labels: false,
            record: false,
        }
    }
}

impl MixConfig {
    /// Checks the configuration; returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), MixerError> {
        let bad = |m: String| Err(MixerError::InvalidConfig(m));
        let (long, short) = (self.width.max(self.height), self.width.min(self.height));
        if !self.width.is_multiple_of(2)
            || !self.height.is_multiple_of(2)
            || short < 16
            || long > 1920
            || short > 1080
        {
            return bad(format!(
                "canvas {}x{}: sides must be even, at least 16, at most 1920x1080 (or 1080x1920)",
                self.width, self.height
            ));
        }
        if !(1..=60).contains(&self.fps) {
            return bad(format!("fps {} not in 1..=60", self.fps));
        }
        if !(50..=50_000).contains(&self.video_kbps) {
            return bad(format!("video_kbps {} not in 50..=50000", self.video_kbps));
        }
        if !(32..=320).contains(&self.audio_kbps) {
            return bad(format!("audio_kbps {} not in 32..=320", self.audio_kbps));
        }
        if self.jitter_ms > 2000
            || self.stall_timeout_ms > 3_600_000
            || self.keyframe_request_interval_ms > 60_000
        {
            return bad("jitter_ms <= 2000, stall_timeout_ms <= 3600000, keyframe_request_interval_ms <= 60000".into());
        }
        if !(self.gop_s > 0.0 && self.gop_s <= 60.0) {
            return bad(format!("gop_s {} not in (0, 60]", self.gop_s));
        }
        self.decor().validate()
    }

    /// The studio decor part of the configuration.
    pub fn decor(&self) -> Decor {
        Decor {
            overlays: self.overlays.clone(),
            background_image: self.background_image.clone(),
            labels: self.labels,
        }
    }

    /// Frames between keyframes (at least 1).
    pub fn gop_frames(&self) -> u64 {
        ((self.gop_s * f64::from(self.fps)).round() as u64).max(1)
    }
}

/// Errors creating or running the mixer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixerError {
    /// The configuration is invalid.
    #[error("invalid mix config: {0}")]
    InvalidConfig(String),
    /// The video encoder failed.
    #[error("video encoder: {0}")]
    VideoEncoder(String),
    /// An audio codec failed.
    #[error("audio codec: {0}")]
    AudioCodec(String),
    /// The driver thread is gone.
    #[error("mixer driver stopped")]
    Stopped,
    /// The driver's input queue is full; the item was dropped.
    #[error("mixer input queue full")]
    QueueFull,
}

/// Errors answering a cue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CueError {
    /// The cue SEI payload would exceed 255 bytes (HTTP 413).
    #[error("cue SEI payload is {size} bytes, more than {max}")]
    TooLarge {
        /// Payload size the cue would need (16-byte UUID + JSON).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The id is empty or longer than 64 bytes.
    #[error("cue id must be 1..=64 bytes")]
    InvalidId,
    /// The mixer is not running.
    #[error("mixer stopped")]
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_json() {
        let c: MixConfig = serde_json::from_str("{}").expect("empty");
        assert_eq!(c, MixConfig::default());
        assert_eq!(
            (c.width, c.height, c.fps, c.video_kbps, c.audio_kbps),
            (1280, 720, 30, 2500, 128)
        );
        assert_eq!(c.gop_frames(), 60);
        let c: MixConfig = serde_json::from_str(
            r##"{"width":720,"height":1280,"layout":{"template":"pip"},"background":"#ff8000","gop_s":1}"##,
        )
        .expect("partial");
        assert_eq!(c.background, Rgb(255, 128, 0));
        assert!(c.validate().is_ok());
        let c: MixConfig = serde_json::from_str(r#"{"background":[1,2,3]}"#).expect("arr");
        assert_eq!(c.background, Rgb(1, 2, 3));
        assert!(serde_json::from_str::<MixConfig>(r#"{"background":"red"}"#).is_err());
    }

    #[test]
    fn decor_fields_per_the_contract() {
        let c: MixConfig = serde_json::from_str(
            r#"{"overlays":[{"image":"logo","x":1180,"y":-4,"w":320,"h":120,"z":2,"opacity":0.5}],
                "background_image":"studio","labels":true,"record":true}"#,
        )
        .expect("decor");
        assert!(c.validate().is_ok());
        assert!(c.record && c.labels);
        assert_eq!(c.background_image.as_deref(), Some("studio"));
        let o = &c.overlays[0];
        assert_eq!(
            (o.image.as_str(), o.x, o.y, o.w, o.h, o.z, o.opacity),
            ("logo", 1180, -4, 320, 120, 2, 0.5)
        );
        assert_eq!(c.decor().overlays.len(), 1);
        let back: MixConfig =
            serde_json::from_value(serde_json::to_value(&c).expect("ser")).expect("de");
        assert_eq!(back, c);
        // Defaults: none of it.
        let d = MixConfig::default();
        assert!(d.overlays.is_empty() && d.background_image.is_none() && !d.labels && !d.record);
        // Unknown fields are still refused, in the overlays too.
        assert!(serde_json::from_str::<MixConfig>(r#"{"labelz":true}"#).is_err());
        assert!(serde_json::from_str::<MixConfig>(
            r#"{"overlays":[{"image":"a","x":0,"y":0,"w":2,"h":2,"zz":1}]}"#
        )
        .is_err());
        let bad: MixConfig = serde_json::from_str(
            r#"{"overlays":[{"image":"a","x":0,"y":0,"w":2,"h":2,"opacity":2}]}"#,
        )
        .expect("parses");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn validation() {
        let ok = MixConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            MixConfig {
                width: 1281,
                ..ok.clone()
            },
            MixConfig {
                width: 2560,
                height: 1440,
                ..ok.clone()
            },
            MixConfig {
                fps: 0,
                ..ok.clone()
            },
            MixConfig {
                gop_s: 0.0,
                ..ok.clone()
            },
            MixConfig {
                gop_s: f64::NAN,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(MixConfig {
            width: 1080,
            height: 1920,
            ..ok
        }
        .validate()
        .is_ok());
    }
}
