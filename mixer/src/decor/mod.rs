//! Studio decor: uploaded images (PNG, JPEG), the overlays and background image of a
//! program, and the I420 + alpha pictures they become on the canvas.
//!
//! - [`decode_image`] turns untrusted bytes into an [`Image`] (RGBA8, at most
//!   [`MAX_IMAGE_SIDE`] pixels a side); anything else is an [`ImageError`] whose message can
//!   be shown to an API client as is (HTTP 400). The server limits the bytes (4 MiB) first.
//! - [`OverlayPicture`] is a picture ready to blend: limited-range BT.601 Y'CbCr like
//!   [`Yuv::from_rgb`], with its alpha at luma resolution and 2x2-averaged at chroma
//!   resolution (chroma itself alpha-weighted, so transparent pixels leave no fringe).
//! - [`blend`] draws one onto an [`I420Frame`]: `dst = (a*src + (255-a)*dst + 127) / 255`
//!   with `a = alpha * opacity`, clipped to the canvas, at even coordinates; rows that are
//!   fully transparent are skipped, fully opaque ones copied.
//! - [`PictureCache`] keeps each image scaled to each size it is drawn at, so a frame costs
//!   only the blend; [`BackgroundCache`] keeps the background image scaled to cover the
//!   canvas, as an I420 picture to copy.
//! - [`Decor`] and [`Overlay`] are the configuration (`mix.overlays`,
//!   `mix.background_image`, `mix.labels`).

use serde::{Deserialize, Serialize};

use crate::config::MixerError;

mod image;
mod picture;

pub use self::image::{decode_image, Image, ImageError, MAX_IMAGE_SIDE};
pub use picture::*;

/// Most overlays a program shows.
pub const MAX_OVERLAYS: usize = 16;
/// Largest overlay width and height on the canvas, in pixels (the largest canvas side).
pub const MAX_OVERLAY_SIDE: u32 = 1920;
/// Longest image name, in bytes.
pub const MAX_IMAGE_NAME: usize = 128;

/// An image placed over the program (the room's `mix.overlays[]`): JSON
/// `{"image", "x", "y", "w", "h", "z", "opacity"}`.
///
/// The image is stretched to `w` x `h` (give the image's aspect to keep it); `x`, `y` may lie
/// off the canvas (the overlay is clipped) and are rounded down to even pixels, as `w` and
/// `h` are (chroma alignment). An overlay naming an image the mixer does not have is skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Name of the image (in the server's image library).
    pub image: String,
    /// Left edge in canvas pixels.
    pub x: i32,
    /// Top edge in canvas pixels.
    pub y: i32,
    /// Width in pixels (2..=1920).
    pub w: u32,
    /// Height in pixels (2..=1920).
    pub h: u32,
    /// Stacking order among overlays: higher is drawn on top (overlays are always above the
    /// tiles and labels).
    #[serde(default)]
    pub z: i32,
    /// Opacity, 0 (invisible) to 1 (as the image's own alpha says).
    #[serde(default = "one")]
    pub opacity: f32,
}

fn one() -> f32 {
    1.0
}

/// The studio decor of a program: overlays, background image and labels, as in
/// [`MixConfig`](crate::MixConfig); changed live with [`Mixer::set_decor`](crate::Mixer::set_decor).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Decor {
    /// Images over the program, at most [`MAX_OVERLAYS`].
    pub overlays: Vec<Overlay>,
    /// Name of an image filling the canvas behind the tiles (scaled to cover it, centred,
    /// the overflow cropped), instead of the background colour.
    pub background_image: Option<String>,
    /// Draw each tile's display name at its bottom left.
    pub labels: bool,
}

fn check_name(what: &str, name: &str) -> Result<(), MixerError> {
    if name.is_empty() || name.len() > MAX_IMAGE_NAME {
        return Err(MixerError::InvalidConfig(format!(
            "{what}: image name must be 1..={MAX_IMAGE_NAME} bytes"
        )));
    }
    Ok(())
}

impl Decor {
    /// Checks the decor; the message names the bad field.
    pub fn validate(&self) -> Result<(), MixerError> {
        let bad = |m: String| Err(MixerError::InvalidConfig(m));
        if self.overlays.len() > MAX_OVERLAYS {
            return bad(format!(
                "overlays: {} given, at most {MAX_OVERLAYS}",
                self.overlays.len()
            ));
        }
        for (i, o) in self.overlays.iter().enumerate() {
            check_name(&format!("overlays[{i}].image"), &o.image)?;
            if !(2..=MAX_OVERLAY_SIDE).contains(&o.w) || !(2..=MAX_OVERLAY_SIDE).contains(&o.h) {
                return bad(format!(
                    "overlays[{i}]: w and h must be in 2..={MAX_OVERLAY_SIDE} (got {}x{})",
                    o.w, o.h
                ));
            }
            if !(0.0..=1.0).contains(&o.opacity) {
                return bad(format!("overlays[{i}].opacity {} not in 0..=1", o.opacity));
            }
        }
        if let Some(b) = &self.background_image {
            check_name("background_image", b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn decor_validation_and_json() {
        let d: Decor = serde_json::from_str(
            r#"{"overlays":[{"image":"logo","x":-10,"y":20,"w":320,"h":120}],"labels":true}"#,
        )
        .expect("json");
        assert_eq!(d.overlays[0].opacity, 1.0);
        assert_eq!(d.overlays[0].z, 0);
        assert!(d.validate().is_ok());
        assert!(serde_json::from_str::<Overlay>(
            r#"{"image":"a","x":0,"y":0,"w":2,"h":2,"alpha":1}"#
        )
        .is_err());
        let o = d.overlays[0].clone();
        for bad in [
            Overlay {
                opacity: 1.5,
                ..o.clone()
            },
            Overlay {
                opacity: f32::NAN,
                ..o.clone()
            },
            Overlay { w: 0, ..o.clone() },
            Overlay {
                h: 5000,
                ..o.clone()
            },
            Overlay {
                image: String::new(),
                ..o.clone()
            },
        ] {
            assert!(
                Decor {
                    overlays: vec![bad.clone()],
                    ..Decor::default()
                }
                .validate()
                .is_err(),
                "{bad:?}"
            );
        }
        let many = Decor {
            overlays: vec![o; 17],
            ..Decor::default()
        };
        assert!(many.validate().is_err());
        assert!(Decor {
            background_image: Some(String::new()),
            ..Decor::default()
        }
        .validate()
        .is_err());
    }
}
