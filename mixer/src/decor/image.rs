//! Uploaded images: untrusted PNG/JPEG bytes into an [`Image`] (RGBA8, at most
//! [`MAX_IMAGE_SIDE`] pixels a side) or an [`ImageError`] whose message can be shown to an
//! API client as is (HTTP 400). The server limits the bytes (4 MiB) first.

use std::sync::Arc;

/// Largest width and height of an uploaded image, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// Why bytes are not an acceptable image. The messages are meant for API clients (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Not a PNG or JPEG file.
    #[error("unsupported image format: only PNG and JPEG images are accepted")]
    UnsupportedFormat,
    /// Wider or taller than [`MAX_IMAGE_SIDE`].
    #[error("image is {width}x{height} pixels; at most {max}x{max} are accepted")]
    TooLarge {
        /// Width of the image.
        width: u32,
        /// Height of the image.
        height: u32,
        /// The limit on either side.
        max: u32,
    },
    /// A PNG or JPEG that does not decode (corrupt or truncated), or has no pixels.
    #[error("the image could not be decoded (corrupt or truncated file): {0}")]
    Invalid(String),
}

/// A decoded image: 8-bit RGBA, not premultiplied, rows packed. Cheap to clone (the pixels
/// are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    rgba: Arc<[u8]>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}x{})", self.width, self.height)
    }
}

impl Image {
    /// An image from RGBA8 pixels (`width * height * 4` bytes, rows packed). Fails when the
    /// size is zero, above [`MAX_IMAGE_SIDE`], or does not match the buffer.
    pub fn from_rgba(width: u32, height: u32, rgba: Vec<u8>) -> Result<Self, ImageError> {
        if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
            return Err(ImageError::TooLarge {
                width,
                height,
                max: MAX_IMAGE_SIDE,
            });
        }
        let need = (width as usize) * (height as usize) * 4;
        if width == 0 || height == 0 || rgba.len() != need {
            return Err(ImageError::Invalid(format!(
                "{width}x{height} RGBA needs {need} bytes, got {}",
                rgba.len()
            )));
        }
        Ok(Image {
            width,
            height,
            rgba: rgba.into(),
        })
    }

    /// A single-colour image.
    pub fn solid(width: u32, height: u32, rgba: [u8; 4]) -> Result<Self, ImageError> {
        let n = (width as usize).saturating_mul(height as usize);
        Self::from_rgba(width, height, rgba.repeat(n.min(1 << 26)))
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels: RGBA8, rows packed.
    pub fn rgba(&self) -> &[u8] {
        &self.rgba
    }
}

/// Decodes a PNG or JPEG file (the format is recognised from its bytes) into RGBA8.
///
/// Accepts at most [`MAX_IMAGE_SIDE`] x [`MAX_IMAGE_SIDE`] pixels (checked from the header,
/// before any pixel is decoded); other formats, corrupt or truncated files are refused.
pub fn decode_image(bytes: &[u8]) -> Result<Image, ImageError> {
    use ::image::{ImageFormat, ImageReader, Limits};
    let reader = || {
        ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Invalid(e.to_string()))
    };
    let probe = reader()?;
    if !matches!(probe.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err(ImageError::UnsupportedFormat);
    }
    let (width, height) = probe
        .into_dimensions()
        .map_err(|e| map_image_error(e, (0, 0)))?;
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(ImageError::TooLarge {
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    let mut r = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    // The largest accepted image as 16-bit RGBA, plus the decoders' working memory.
    limits.max_alloc = Some(256 << 20);
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| map_image_error(e, (width, height)))?
        .into_rgba8();
    let (w, h) = img.dimensions();
    Image::from_rgba(w, h, img.into_raw())
}

/// The decoder's error as ours; `(width, height)` are the image's, if known.
fn map_image_error(e: ::image::ImageError, (width, height): (u32, u32)) -> ImageError {
    use ::image::ImageError as E;
    match e {
        E::Unsupported(_) => ImageError::UnsupportedFormat,
        // Within the size limits but needing too much memory to decode.
        E::Limits(_) if width > 0 => ImageError::TooLarge {
            width,
            height,
            max: MAX_IMAGE_SIDE,
        },
        other => ImageError::Invalid(other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    pub(crate) fn png(w: u32, h: u32, px: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
        let img = ::image::RgbaImage::from_fn(w, h, |x, y| ::image::Rgba(px(x, y)));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ::image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    }

    #[test]
    fn decodes_png_with_alpha() {
        let bytes = png(5, 3, |x, _| [255, 0, 0, if x == 0 { 0 } else { 128 }]);
        let img = decode_image(&bytes).expect("png");
        assert_eq!((img.width(), img.height()), (5, 3));
        assert_eq!(&img.rgba()[..8], &[255, 0, 0, 0, 255, 0, 0, 128]);
        assert_eq!(img.rgba().len(), 5 * 3 * 4);
    }

    #[test]
    fn decodes_jpeg() {
        let img = ::image::RgbImage::from_pixel(32, 16, ::image::Rgb([20, 200, 40]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ::image::ImageFormat::Jpeg)
            .expect("jpeg");
        let img = decode_image(out.get_ref()).expect("jpeg");
        assert_eq!((img.width(), img.height()), (32, 16));
        let px = &img.rgba()[4 * (8 * 32 + 16)..][..4];
        assert!(px[0].abs_diff(20) < 8 && px[1].abs_diff(200) < 8 && px[2].abs_diff(40) < 8);
        assert_eq!(px[3], 255, "JPEG is opaque");
    }

    #[test]
    fn refuses_garbage_other_formats_truncated_and_too_large() {
        assert!(matches!(
            decode_image(b"definitely not an image, just some text"),
            Err(ImageError::UnsupportedFormat)
        ));
        assert!(matches!(
            decode_image(&[]),
            Err(ImageError::UnsupportedFormat)
        ));
        // GIF magic: a real format, not accepted.
        assert!(matches!(
            decode_image(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
            Err(ImageError::UnsupportedFormat)
        ));
        let ok = png(64, 64, |x, y| [x as u8, y as u8, 7, 255]);
        let cut = &ok[..ok.len() / 2];
        let e = decode_image(cut).expect_err("truncated");
        assert!(matches!(e, ImageError::Invalid(_)), "{e:?}");
        // A PNG signature followed by nonsense.
        let mut bad = ok[..8].to_vec();
        bad.extend_from_slice(&[0xAB; 40]);
        assert!(matches!(decode_image(&bad), Err(ImageError::Invalid(_))));
        let wide = png(5000, 10, |_, _| [0, 0, 0, 255]);
        let e = decode_image(&wide).expect_err("too wide");
        assert_eq!(
            e,
            ImageError::TooLarge {
                width: 5000,
                height: 10,
                max: 4096
            }
        );
        assert!(e.to_string().contains("5000x10"), "{e}");
        assert!(Image::from_rgba(2, 2, vec![0; 15]).is_err());
    }
}
