//! Pictures on the canvas: an [`Image`] scaled and converted once into an [`OverlayPicture`]
//! (limited-range BT.601 Y'CbCr like [`Yuv::from_rgb`], alpha at luma resolution and
//! 2x2-averaged at chroma resolution, chroma alpha-weighted so transparent pixels leave no
//! fringe), [`blend`] onto an [`I420Frame`], and the caches that make a frame cost only the
//! blend ([`PictureCache`]) or a copy ([`BackgroundCache`]).

use std::collections::HashMap;
use std::sync::Arc;

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x4;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use super::Image;
use crate::compose::{I420Frame, Yuv};
use crate::config::Rgb;

/// What a row of an [`OverlayPicture`]'s alpha holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKind {
    /// Every pixel transparent: nothing to draw.
    Clear,
    /// Every pixel opaque: a copy (at full opacity).
    Opaque,
    /// Anything else: blended.
    Mixed,
}

fn row_kind(alpha: &[u8]) -> RowKind {
    if alpha.iter().all(|&a| a == 0) {
        RowKind::Clear
    } else if alpha.iter().all(|&a| a == 255) {
        RowKind::Opaque
    } else {
        RowKind::Mixed
    }
}

/// A picture with alpha ready to blend onto an I420 canvas: Y, U, V planes (chroma at half
/// resolution, rounded up), alpha at luma resolution and at chroma resolution (2x2 average).
#[derive(Clone, PartialEq, Eq)]
pub struct OverlayPicture {
    width: u32,
    height: u32,
    /// Y, U, V, alpha (luma), alpha (chroma).
    planes: [Vec<u8>; 5],
    /// Per luma row and per chroma row.
    rows: [Vec<RowKind>; 2],
}

impl std::fmt::Debug for OverlayPicture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OverlayPicture({}x{})", self.width, self.height)
    }
}

impl OverlayPicture {
    /// Converts RGBA8 pixels (`width * height * 4` bytes, not premultiplied) to limited-range
    /// BT.601 Y'CbCr with alpha. `None` if the size is zero or the buffer is too short.
    pub fn from_rgba(width: u32, height: u32, rgba: &[u8]) -> Option<Self> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 || rgba.len() < w.checked_mul(h)?.checked_mul(4)? {
            return None;
        }
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut y = Vec::with_capacity(w * h);
        let mut a = Vec::with_capacity(w * h);
        // Full-resolution chroma first, averaged 2x2 (alpha-weighted) below.
        let mut u_full = Vec::with_capacity(w * h);
        let mut v_full = Vec::with_capacity(w * h);
        for px in rgba.chunks_exact(4).take(w * h) {
            let c = Yuv::from_rgb(px[0], px[1], px[2]);
            y.push(c.y);
            u_full.push(c.u);
            v_full.push(c.v);
            a.push(px[3]);
        }
        let mut u = vec![128u8; cw * ch];
        let mut v = vec![128u8; cw * ch];
        let mut ac = vec![0u8; cw * ch];
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut sa, mut su, mut sv, mut n) = (0u32, 0u32, 0u32, 0u32);
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (py, px) = (2 * cy + dy, 2 * cx + dx);
                    if py >= h || px >= w {
                        continue;
                    }
                    let i = py * w + px;
                    let al = u32::from(a[i]);
                    sa += al;
                    su += al * u32::from(u_full[i]);
                    sv += al * u32::from(v_full[i]);
                    n += 1;
                }
                let o = cy * cw + cx;
                ac[o] = ((sa + n / 2) / n.max(1)) as u8;
                if let (Some(cu), Some(cv)) =
                    ((su + sa / 2).checked_div(sa), (sv + sa / 2).checked_div(sa))
                {
                    u[o] = cu as u8;
                    v[o] = cv as u8;
                }
            }
        }
        let rows_y = a.chunks_exact(w).map(row_kind).collect();
        let rows_c = ac.chunks_exact(cw).map(row_kind).collect();
        Some(OverlayPicture {
            width,
            height,
            planes: [y, u, v, a, ac],
            rows: [rows_y, rows_c],
        })
    }

    /// [`Image`] scaled (stretched) to `width` x `height` with `resizer` (Catmull-Rom, alpha
    /// aware), then converted.
    pub fn from_image(
        image: &Image,
        width: u32,
        height: u32,
        resizer: &mut Resizer,
    ) -> Option<Self> {
        let rgba = scale_rgba(image, width, height, false, resizer)?;
        Self::from_rgba(width, height, &rgba)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether every pixel is opaque.
    pub fn is_opaque(&self) -> bool {
        self.rows[0].iter().all(|r| *r == RowKind::Opaque)
    }

    /// The luma-resolution alpha plane.
    pub fn alpha(&self) -> &[u8] {
        &self.planes[3]
    }
}

/// `image` scaled to `w` x `h` as RGBA8 (alpha-aware Catmull-Rom). With `cover` the image
/// keeps its aspect and covers the size, centred, the overflow cropped; else it is stretched.
fn scale_rgba(
    image: &Image,
    w: u32,
    h: u32,
    cover: bool,
    resizer: &mut Resizer,
) -> Option<Vec<u8>> {
    if w == 0 || h == 0 {
        return None;
    }
    let mut out = vec![0u8; (w as usize) * (h as usize) * 4];
    let src =
        TypedImageRef::<U8x4>::from_buffer(image.width(), image.height(), image.rgba()).ok()?;
    let mut dst = TypedImage::<U8x4>::from_buffer(w, h, &mut out).ok()?;
    let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    if cover {
        opts = opts.fit_into_destination(None);
    }
    resizer.resize_typed(&src, &mut dst, &opts).ok()?;
    Some(out)
}

/// Fast exact `(x + 127) / 255` for `x <= 255 * 255`.
#[inline(always)]
fn div255(x: u16) -> u16 {
    let t = x + 128;
    (t + (t >> 8)) >> 8
}

/// Blends `src` with per-pixel `alpha` (times `opacity`, 0..=255) into `dst`.
#[inline]
fn blend_row(dst: &mut [u8], src: &[u8], alpha: &[u8], opacity: u16) {
    if opacity == 255 {
        for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha) {
            let a = u16::from(a);
            *d = div255(a * u16::from(s) + (255 - a) * u16::from(*d)) as u8;
        }
    } else {
        for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha) {
            let a = div255(u16::from(a) * opacity);
            *d = div255(a * u16::from(s) + (255 - a) * u16::from(*d)) as u8;
        }
    }
}

/// An opacity in 0..=1 as 0..=255 (NaN is 0).
pub fn opacity_u8(opacity: f32) -> u8 {
    (opacity.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Blends `pic` onto `canvas` with its top-left corner at (`x`, `y`) (rounded down to even;
/// either may be negative or past the canvas: the picture is clipped), its alpha times
/// `opacity` (0..=255).
pub fn blend(canvas: &mut I420Frame, pic: &OverlayPicture, x: i64, y: i64, opacity: u8) {
    if opacity == 0 {
        return;
    }
    let (x, y) = (x & !1, y & !1);
    let op = u16::from(opacity);
    for p in 0..3usize {
        let (div, kind) = if p == 0 { (1, 0) } else { (2, 1) };
        let (sw, sh) = if p == 0 {
            (pic.width as i64, pic.height as i64)
        } else {
            (
                i64::from(pic.width.div_ceil(2)),
                i64::from(pic.height.div_ceil(2)),
            )
        };
        let (px, py) = (x / div, y / div);
        let src = &pic.planes[p];
        let alpha = &pic.planes[if p == 0 { 3 } else { 4 }];
        let rows = &pic.rows[kind];
        let (dst, dw, dh) = canvas.plane_mut(p);
        let (dw, dh) = (i64::from(dw), i64::from(dh));
        let (x0, x1) = (px.max(0), (px + sw).min(dw));
        let (y0, y1) = (py.max(0), (py + sh).min(dh));
        if x0 >= x1 || y0 >= y1 {
            continue;
        }
        let n = (x1 - x0) as usize;
        for row in y0..y1 {
            let sr = (row - py) as usize;
            let kind = rows.get(sr).copied().unwrap_or(RowKind::Clear);
            if kind == RowKind::Clear {
                continue;
            }
            let s = sr * sw as usize + (x0 - px) as usize;
            let d = (row * dw + x0) as usize;
            let (Some(srow), Some(arow), Some(drow)) = (
                src.get(s..s + n),
                alpha.get(s..s + n),
                dst.get_mut(d..d + n),
            ) else {
                continue;
            };
            if kind == RowKind::Opaque && op == 255 {
                drow.copy_from_slice(srow);
            } else {
                blend_row(drow, srow, arow, op);
            }
        }
    }
}

struct CacheEntry {
    pic: Option<Arc<OverlayPicture>>,
    used: u64,
}

/// Images scaled to the sizes they are drawn at, by (image name, width, height). An entry not
/// used during a frame is dropped at its end ([`end_frame`](Self::end_frame)); replacing an
/// image drops its entries ([`invalidate`](Self::invalidate)).
pub struct PictureCache {
    entries: HashMap<(String, u32, u32), CacheEntry>,
    resizer: Resizer,
    frame: u64,
    scaled: u64,
}

impl std::fmt::Debug for PictureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PictureCache({} entries)", self.entries.len())
    }
}

impl Default for PictureCache {
    fn default() -> Self {
        PictureCache {
            entries: HashMap::new(),
            resizer: Resizer::new(),
            frame: 0,
            scaled: 0,
        }
    }
}

impl PictureCache {
    /// `image` (named `name`) at `w` x `h`: scaled and converted on the first use only.
    pub fn get(
        &mut self,
        name: &str,
        image: &Image,
        w: u32,
        h: u32,
    ) -> Option<Arc<OverlayPicture>> {
        let frame = self.frame;
        if let Some(e) = self.entries.get_mut(&(name.to_owned(), w, h)) {
            e.used = frame;
            return e.pic.clone();
        }
        self.scaled += 1;
        let pic = OverlayPicture::from_image(image, w, h, &mut self.resizer).map(Arc::new);
        self.entries.insert(
            (name.to_owned(), w, h),
            CacheEntry {
                pic: pic.clone(),
                used: frame,
            },
        );
        pic
    }

    /// Forgets every size of image `name` (it was replaced or removed).
    pub fn invalidate(&mut self, name: &str) {
        self.entries.retain(|(n, _, _), _| n != name);
    }

    /// Ends a frame: entries it did not use are dropped.
    pub fn end_frame(&mut self) {
        let frame = self.frame;
        self.entries.retain(|_, e| e.used == frame);
        self.frame += 1;
    }

    /// How many times an image was scaled (cache misses) so far.
    pub fn scaled(&self) -> u64 {
        self.scaled
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The background image scaled to cover the canvas, over the background colour, as I420.
pub struct BackgroundCache {
    key: Option<(String, u32, u32, Rgb)>,
    frame: Option<I420Frame>,
    resizer: Resizer,
    scaled: u64,
}

impl std::fmt::Debug for BackgroundCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackgroundCache({:?})", self.key)
    }
}

impl Default for BackgroundCache {
    fn default() -> Self {
        BackgroundCache {
            key: None,
            frame: None,
            resizer: Resizer::new(),
            scaled: 0,
        }
    }
}

impl BackgroundCache {
    /// `image` (named `name`) covering a `w` x `h` canvas, transparent parts showing `bg`.
    pub fn get(
        &mut self,
        name: &str,
        image: &Image,
        w: u32,
        h: u32,
        bg: Rgb,
    ) -> Option<&I420Frame> {
        let key = (name.to_owned(), w, h, bg);
        if self.key.as_ref() != Some(&key) {
            self.scaled += 1;
            self.frame = background_frame(image, w, h, bg, &mut self.resizer);
            self.key = Some(key);
        }
        self.frame.as_ref()
    }

    /// Forgets the picture if it was made from image `name`.
    pub fn invalidate(&mut self, name: &str) {
        if self.key.as_ref().is_some_and(|k| k.0 == name) {
            self.key = None;
            self.frame = None;
        }
    }

    /// How many times a background was scaled so far.
    pub fn scaled(&self) -> u64 {
        self.scaled
    }
}

/// `image` scaled to cover `w` x `h` (centred, cropped), composited over `bg`, as I420
/// (chroma the 2x2 average).
pub fn background_frame(
    image: &Image,
    w: u32,
    h: u32,
    bg: Rgb,
    resizer: &mut Resizer,
) -> Option<I420Frame> {
    let rgba = scale_rgba(image, w, h, true, resizer)?;
    let (wu, hu) = (w as usize, h as usize);
    let (cw, ch) = (wu.div_ceil(2), hu.div_ceil(2));
    let over = |c: u8, b: u8, a: u8| {
        let (c, b, a) = (u16::from(c), u16::from(b), u16::from(a));
        div255(a * c + (255 - a) * b) as u8
    };
    let mut data = vec![0u8; wu * hu + 2 * cw * ch];
    let mut u_full = vec![0u8; wu * hu];
    let mut v_full = vec![0u8; wu * hu];
    for (i, px) in rgba.chunks_exact(4).enumerate().take(wu * hu) {
        let c = Yuv::from_rgb(
            over(px[0], bg.0, px[3]),
            over(px[1], bg.1, px[3]),
            over(px[2], bg.2, px[3]),
        );
        data[i] = c.y;
        u_full[i] = c.u;
        v_full[i] = c.v;
    }
    let ys = wu * hu;
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut su, mut sv, mut n) = (0u32, 0u32, 0u32);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (py, px) = (2 * cy + dy, 2 * cx + dx);
                if py < hu && px < wu {
                    su += u32::from(u_full[py * wu + px]);
                    sv += u32::from(v_full[py * wu + px]);
                    n += 1;
                }
            }
            let o = cy * cw + cx;
            data[ys + o] = ((su + n / 2) / n.max(1)) as u8;
            data[ys + cw * ch + o] = ((sv + n / 2) / n.max(1)) as u8;
        }
    }
    I420Frame::from_packed(w, h, data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn black(w: u32, h: u32) -> I420Frame {
        I420Frame::new(w, h, Yuv::from_rgb(0, 0, 0))
    }

    #[test]
    fn half_white_over_black_is_mid_grey() {
        let mut c = black(16, 16);
        let pic = OverlayPicture::from_rgba(8, 8, &[255u8; 8 * 8 * 4]).expect("pic");
        assert!(pic.is_opaque());
        blend(&mut c, &pic, 4, 4, opacity_u8(0.5));
        let (y, u, v) = (
            c.mean(0, 4, 4, 8, 8),
            c.mean(1, 4, 4, 8, 8),
            c.mean(2, 4, 4, 8, 8),
        );
        assert!((y - 125.5).abs() <= 1.0, "Y {y}");
        assert!((u - 128.0).abs() <= 1.0 && (v - 128.0).abs() <= 1.0);
        // Outside: untouched.
        assert_eq!(c.mean(0, 0, 0, 16, 4), 16.0);
        assert_eq!(c.mean(0, 12, 0, 4, 16), 16.0);
        // Full opacity: a copy.
        blend(&mut c, &pic, 4, 4, 255);
        assert_eq!(c.mean(0, 4, 4, 8, 8), 235.0);
    }

    #[test]
    fn transparent_pixels_leave_the_canvas_untouched() {
        let mut c = I420Frame::new(16, 16, Yuv::from_rgb(10, 120, 200));
        let before = c.clone();
        // Alpha 0 with a loud colour.
        let pic = OverlayPicture::from_rgba(16, 16, &[255, 0, 255, 0].repeat(256)).expect("p");
        blend(&mut c, &pic, 0, 0, 255);
        assert_eq!(c, before);
        // Opacity 0 of an opaque picture.
        let pic = OverlayPicture::from_rgba(16, 16, &[255u8; 1024]).expect("p");
        blend(&mut c, &pic, 0, 0, 0);
        assert_eq!(c, before);
    }

    #[test]
    fn per_pixel_alpha_and_chroma_average() {
        // Left column transparent red, the rest opaque green: chroma of the 2x2 blocks on the
        // left edge is green's (alpha-weighted), with half alpha.
        let pic = OverlayPicture::from_rgba(4, 2, &{
            let mut v = Vec::new();
            for _ in 0..2 {
                v.extend_from_slice(&[255, 0, 0, 0]);
                for _ in 0..3 {
                    v.extend_from_slice(&[0, 255, 0, 255]);
                }
            }
            v
        })
        .expect("pic");
        let green = Yuv::from_rgb(0, 255, 0);
        assert_eq!(pic.planes[4], vec![128, 255]);
        assert_eq!(pic.planes[1], vec![green.u, green.u]);
        let mut c = black(4, 2);
        blend(&mut c, &pic, 0, 0, 255);
        assert_eq!(
            c.plane(0).0,
            &[16, green.y, green.y, green.y, 16, green.y, green.y, green.y]
        );
    }

    #[test]
    fn clipping_at_negative_and_overflowing_positions() {
        let pic = OverlayPicture::from_rgba(8, 8, &[255u8; 256]).expect("pic");
        let mut c = black(16, 16);
        blend(&mut c, &pic, -4, -6, 255);
        // Visible part: x 0..4, y 0..2.
        assert_eq!(c.mean(0, 0, 0, 4, 2), 235.0);
        assert_eq!(c.mean(0, 4, 0, 12, 16), 16.0);
        assert_eq!(c.mean(0, 0, 2, 16, 14), 16.0);
        assert_eq!(c.mean(1, 0, 0, 4, 2), 128.0);
        // Odd coordinates round down to even: -3 -> -4.
        let mut d = black(16, 16);
        blend(&mut d, &pic, -3, -5, 255);
        assert_eq!(c, d);
        // Past the bottom-right corner.
        let mut c = black(16, 16);
        blend(&mut c, &pic, 12, 14, 255);
        assert_eq!(c.mean(0, 12, 14, 4, 2), 235.0);
        assert_eq!(c.mean(0, 0, 0, 12, 16), 16.0);
        // Entirely outside, far away: nothing, no panic.
        let before = c.clone();
        for (x, y) in [
            (-100, 0),
            (16, 0),
            (0, 16),
            (i64::from(i32::MIN), i64::from(i32::MAX)),
        ] {
            blend(&mut c, &pic, x, y, 255);
        }
        assert_eq!(c, before);
    }

    #[test]
    fn cache_scales_once_per_size() {
        let img = Image::solid(64, 32, [255, 0, 0, 200]).expect("img");
        let mut cache = PictureCache::default();
        let a = cache.get("logo", &img, 32, 16).expect("pic");
        cache.end_frame();
        let b = cache.get("logo", &img, 32, 16).expect("pic");
        cache.end_frame();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.scaled(), 1);
        assert_eq!(b.alpha()[0], 200);
        // Another size is another entry; an unused one goes at the frame's end.
        cache.get("logo", &img, 16, 8);
        assert_eq!(cache.scaled(), 2);
        cache.end_frame();
        assert_eq!(cache.len(), 1);
        cache.invalidate("logo");
        assert!(cache.is_empty());
    }

    #[test]
    fn background_covers_and_crops() {
        // Left half red, right half blue, 2:1 -> a square canvas shows the centre.
        let img = Image::from_rgba(
            40,
            20,
            (0..20)
                .flat_map(|_| {
                    (0..40).flat_map(|x| {
                        if x < 20 {
                            [255, 0, 0, 255]
                        } else {
                            [0, 0, 255, 255]
                        }
                    })
                })
                .collect(),
        )
        .expect("img");
        let mut r = Resizer::new();
        let f = background_frame(&img, 20, 20, Rgb(0, 0, 0), &mut r).expect("bg");
        let (red, blue) = (Yuv::from_rgb(255, 0, 0), Yuv::from_rgb(0, 0, 255));
        assert!((f.mean(0, 0, 0, 8, 20) - f64::from(red.y)).abs() < 2.0);
        assert!((f.mean(0, 12, 0, 8, 20) - f64::from(blue.y)).abs() < 2.0);
        // Transparent pixels show the background colour.
        let clear = Image::solid(8, 8, [255, 255, 255, 0]).expect("img");
        let f = background_frame(&clear, 8, 8, Rgb(0, 0, 0), &mut r).expect("bg");
        assert_eq!(f.mean(0, 0, 0, 8, 8), 16.0);
    }

    #[test]
    fn div255_is_exact() {
        for x in 0..=(255u32 * 255) {
            assert_eq!(u32::from(div255(x as u16)), (x + 127) / 255, "{x}");
        }
    }
}
