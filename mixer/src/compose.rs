//! I420 pictures and compositing: background fill, scaling each source into its region
//! (crop-to-fill or letterbox) with `fast_image_resize` (SIMD), placeholder tiles.

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use crate::layout::{Fit, Region};

/// A planar YUV 4:2:0 picture with tightly packed planes (stride = plane width).
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

/// A colour in limited-range BT.601 Y'CbCr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuv {
    /// Luma.
    pub y: u8,
    /// Blue-difference chroma.
    pub u: u8,
    /// Red-difference chroma.
    pub v: u8,
}

impl Yuv {
    /// Converts 8-bit RGB to limited-range BT.601 Y'CbCr.
    pub fn from_rgb(r: u8, g: u8, b: u8) -> Self {
        let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        let c = |x: i32| x.clamp(0, 255) as u8;
        Yuv {
            y: c(y),
            u: c(u),
            v: c(v),
        }
    }
}

fn chroma(v: u32) -> u32 {
    v.div_ceil(2)
}

/// A rectangle in luma coordinates `(x, y, w, h)` as `(x0, y0, x1, y1)` on plane `p` of size
/// `(pw, ph)` (chroma halved, widened outwards), clipped; `None` when nothing is left.
fn plane_rect(
    p: usize,
    (x, y, w, h): (u32, u32, u32, u32),
    (pw, ph): (u32, u32),
) -> Option<(u32, u32, u32, u32)> {
    let (x1, y1) = (x.saturating_add(w), y.saturating_add(h));
    let (x0, y0, x1, y1) = if p == 0 {
        (x, y, x1, y1)
    } else {
        (x / 2, y / 2, chroma(x1), chroma(y1))
    };
    let (x1, y1) = (x1.min(pw), y1.min(ph));
    (x0 < x1).then_some((x0, y0, x1, y1))
}

impl I420Frame {
    /// A new picture filled with `color`. Sizes are clamped to at least 1.
    pub fn new(width: u32, height: u32, color: Yuv) -> Self {
        let width = width.max(1);
        let height = height.max(1);
        let ys = (width * height) as usize;
        let cs = (chroma(width) * chroma(height)) as usize;
        let mut data = vec![color.y; ys + 2 * cs];
        if let Some(u) = data.get_mut(ys..ys + cs) {
            u.fill(color.u);
        }
        if let Some(v) = data.get_mut(ys + cs..) {
            v.fill(color.v);
        }
        I420Frame {
            width,
            height,
            data,
        }
    }

    /// Builds a picture from packed planes (`y` then `u` then `v`); `None` if too short.
    pub fn from_packed(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        let need = (width * height + 2 * chroma(width) * chroma(height)) as usize;
        (width > 0 && height > 0 && data.len() >= need).then(|| {
            let mut data = data;
            data.truncate(need);
            I420Frame {
                width,
                height,
                data,
            }
        })
    }

    /// Copies a picture with arbitrary strides (e.g. a decoder output).
    pub fn from_yuv_source(src: &impl openh264::formats::YUVSource) -> Option<Self> {
        Self::from_yuv_source_into(src, Vec::new())
    }

    /// [`from_yuv_source`](Self::from_yuv_source) into a recycled buffer (e.g. from
    /// [`into_bytes`](Self::into_bytes) of an older picture): no fresh allocation, no page
    /// faults, when the size is unchanged.
    pub fn from_yuv_source_into(
        src: &impl openh264::formats::YUVSource,
        mut data: Vec<u8>,
    ) -> Option<Self> {
        let (w, h) = src.dimensions();
        let (sy, su, sv) = src.strides();
        let (w32, h32) = (u32::try_from(w).ok()?, u32::try_from(h).ok()?);
        if w == 0 || h == 0 {
            return None;
        }
        let (cw, ch) = (chroma(w32) as usize, chroma(h32) as usize);
        data.clear();
        data.reserve(w * h + 2 * cw * ch);
        for (plane, stride, pw, ph) in [
            (src.y(), sy, w, h),
            (src.u(), su, cw, ch),
            (src.v(), sv, cw, ch),
        ] {
            for row in 0..ph {
                let start = row.checked_mul(stride)?;
                data.extend_from_slice(plane.get(start..start.checked_add(pw)?)?);
            }
        }
        Some(I420Frame {
            width: w32,
            height: h32,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// All planes packed: Y, then U, then V.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
    /// The picture's buffer, to be reused.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
    fn plane_range(&self, p: usize) -> std::ops::Range<usize> {
        let ys = (self.width * self.height) as usize;
        let cs = (chroma(self.width) * chroma(self.height)) as usize;
        match p {
            0 => 0..ys,
            1 => ys..ys + cs,
            _ => ys + cs..ys + 2 * cs,
        }
    }
    /// Plane `p` (0 = Y, 1 = U, 2 = V) and its width and height.
    pub fn plane(&self, p: usize) -> (&[u8], u32, u32) {
        let (w, h) = self.plane_size(p);
        (self.data.get(self.plane_range(p)).unwrap_or_default(), w, h)
    }
    fn plane_size(&self, p: usize) -> (u32, u32) {
        if p == 0 {
            (self.width, self.height)
        } else {
            (chroma(self.width), chroma(self.height))
        }
    }
    pub(crate) fn plane_mut(&mut self, p: usize) -> (&mut [u8], u32, u32) {
        let (w, h) = self.plane_size(p);
        let r = self.plane_range(p);
        (self.data.get_mut(r).unwrap_or_default(), w, h)
    }

    /// Fills a rectangle (luma coordinates, clipped) with a colour.
    pub fn fill_rect(&mut self, x: u32, y: u32, w: u32, h: u32, color: Yuv) {
        for (p, val) in [(0usize, color.y), (1, color.u), (2, color.v)] {
            let (buf, pw, ph) = self.plane_mut(p);
            let Some((x0, y0, x1, y1)) = plane_rect(p, (x, y, w, h), (pw, ph)) else {
                continue;
            };
            for row in y0..y1 {
                let s = (row * pw + x0) as usize;
                let e = (row * pw + x1) as usize;
                if let Some(line) = buf.get_mut(s..e) {
                    line.fill(val);
                }
            }
        }
    }

    /// Copies a rectangle (luma coordinates, even-aligned outwards for chroma, clipped) from
    /// `src`, a picture of the same size; does nothing if the sizes differ.
    pub fn copy_rect_from(&mut self, src: &I420Frame, x: u32, y: u32, w: u32, h: u32) {
        if (src.width, src.height) != (self.width, self.height) {
            return;
        }
        for p in 0..3 {
            let (from, _, _) = src.plane(p);
            let (to, pw, ph) = self.plane_mut(p);
            let Some((x0, y0, x1, y1)) = plane_rect(p, (x, y, w, h), (pw, ph)) else {
                continue;
            };
            for row in y0..y1 {
                let r = (row * pw + x0) as usize..(row * pw + x1) as usize;
                if let (Some(d), Some(s)) = (to.get_mut(r.clone()), from.get(r)) {
                    d.copy_from_slice(s);
                }
            }
        }
    }

    /// Copies all of `src`, a picture of the same size; does nothing if the sizes differ.
    pub fn copy_from(&mut self, src: &I420Frame) {
        if (src.width, src.height) == (self.width, self.height) {
            self.data.copy_from_slice(&src.data);
        }
    }

    /// Mean value of plane `p` over a rectangle given in luma coordinates (for tests and
    /// diagnostics).
    pub fn mean(&self, p: usize, x: u32, y: u32, w: u32, h: u32) -> f64 {
        let (buf, pw, ph) = self.plane(p);
        let (xe, ye) = (x.saturating_add(w), y.saturating_add(h));
        let (x0, y0, x1, y1) = if p == 0 {
            (x, y, xe, ye)
        } else {
            (x / 2, y / 2, xe / 2, ye / 2)
        };
        let (x1, y1) = (x1.min(pw), y1.min(ph));
        let mut sum = 0u64;
        let mut n = 0u64;
        for row in y0..y1 {
            for col in x0..x1 {
                if let Some(v) = buf.get((row * pw + col) as usize) {
                    sum += u64::from(*v);
                    n += 1;
                }
            }
        }
        if n == 0 {
            0.0
        } else {
            sum as f64 / n as f64
        }
    }
}

impl openh264::formats::YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width as usize, self.height as usize)
    }
    fn strides(&self) -> (usize, usize, usize) {
        let c = chroma(self.width) as usize;
        (self.width as usize, c, c)
    }
    fn y(&self) -> &[u8] {
        self.plane(0).0
    }
    fn u(&self) -> &[u8] {
        self.plane(1).0
    }
    fn v(&self) -> &[u8] {
        self.plane(2).0
    }
}

/// Source crop `(x, y, w, h)` in source pixels.
pub type CropRect = (f64, f64, f64, f64);
/// Destination `(x, y, w, h)` in canvas pixels.
pub type DestRect = (u32, u32, u32, u32);

/// Source crop and destination rectangle (luma pixels) for drawing a `sw` x `sh` picture into
/// a region with the given fit. Returns `(crop_x, crop_y, crop_w, crop_h)` as floats in source
/// pixels and `(dx, dy, dw, dh)` even-aligned in canvas pixels.
pub fn fit_geometry(sw: u32, sh: u32, region: &Region, fit: Fit) -> (CropRect, DestRect) {
    let (sw_f, sh_f) = (f64::from(sw.max(1)), f64::from(sh.max(1)));
    let (rw, rh) = (f64::from(region.w), f64::from(region.h));
    match fit {
        Fit::Crop => {
            let scale = (rw / sw_f).max(rh / sh_f);
            let cw = (rw / scale).min(sw_f);
            let ch = (rh / scale).min(sh_f);
            (
                ((sw_f - cw) / 2.0, (sh_f - ch) / 2.0, cw, ch),
                (region.x, region.y, region.w, region.h),
            )
        }
        Fit::Letterbox => {
            let scale = (rw / sw_f).min(rh / sh_f);
            let dw = (((sw_f * scale) as u32) & !1).max(2).min(region.w);
            let dh = (((sh_f * scale) as u32) & !1).max(2).min(region.h);
            let dx = region.x + (((region.w - dw) / 2) & !1);
            let dy = region.y + (((region.h - dh) / 2) & !1);
            ((0.0, 0.0, sw_f, sh_f), (dx, dy, dw, dh))
        }
    }
}

/// Scales a crop of an 8-bit plane with bilinear interpolation (fixed point, 8-bit weights)
/// into `dst` (`dw` x `dh`, tightly packed). `crop` is `(x, y, w, h)` in source pixels.
/// Pure scalar code the compiler vectorises; good for upscaling and mild (< 2x) downscaling.
pub fn scale_plane_bilinear(
    src: &[u8],
    sw: u32,
    sh: u32,
    crop: CropRect,
    dst: &mut [u8],
    dw: u32,
    dh: u32,
) {
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return;
    }
    let (cx, cy, cw, ch) = crop;
    let sx = cw / f64::from(dw);
    let sy = ch / f64::from(dh);
    let max_x = f64::from(sw - 1);
    let max_y = f64::from(sh - 1);
    // Column tables: left index and right weight (0..=256).
    let cols: Vec<(usize, usize, u32)> = (0..dw)
        .map(|x| {
            let fx = ((f64::from(x) + 0.5) * sx + cx - 0.5).clamp(0.0, max_x);
            let x0 = fx.floor();
            let w = ((fx - x0) * 256.0).round() as u32;
            let x0 = x0 as usize;
            (x0, (x0 + 1).min(sw as usize - 1), w)
        })
        .collect();
    let stride = sw as usize;
    let mut row_buf = vec![0u16; dw as usize];
    for (y, out_row) in dst
        .chunks_exact_mut(dw as usize)
        .take(dh as usize)
        .enumerate()
    {
        let fy = ((y as f64 + 0.5) * sy + cy - 0.5).clamp(0.0, max_y);
        let y0 = fy.floor();
        let wy = ((fy - y0) * 256.0).round() as u32;
        let y0 = y0 as usize;
        let y1 = (y0 + 1).min(sh as usize - 1);
        let (Some(r0), Some(r1)) = (
            src.get(y0 * stride..(y0 + 1) * stride),
            src.get(y1 * stride..(y1 + 1) * stride),
        ) else {
            continue;
        };
        // Vertical pass into 16-bit, then horizontal.
        for ((acc, &(x0, x1, wx)), _) in row_buf.iter_mut().zip(&cols).zip(0..) {
            let a = u32::from(r0.get(x0).copied().unwrap_or(0)) * (256 - wy)
                + u32::from(r1.get(x0).copied().unwrap_or(0)) * wy;
            let b = u32::from(r0.get(x1).copied().unwrap_or(0)) * (256 - wy)
                + u32::from(r1.get(x1).copied().unwrap_or(0)) * wy;
            *acc = ((a * (256 - wx) + b * wx + (1 << 15)) >> 16) as u16;
        }
        for (o, v) in out_row.iter_mut().zip(&row_buf) {
            *o = *v as u8;
        }
    }
}

/// Upscales a crop of an 8-bit plane by exactly 2 in both directions with bilinear
/// interpolation (pixel centres aligned: the 9-3-3-1 kernel, the same result as a generic
/// bilinear resize to twice the size) into `dst`: `2*ch` rows of `2*cw` bytes, each starting
/// `dst_stride` bytes after the previous one (so it can write straight into a canvas plane).
/// `(cx, cy, cw, ch)` is the crop in whole source pixels; neighbours outside the crop but
/// inside the plane are used, the plane's edges are repeated. Returns false (and writes
/// nothing) when the crop does not fit in the plane, `dst_stride < 2*cw` or `dst` is too
/// small.
///
/// This is the 2-up layout's hot path (640x360 co-hosts into 640x720 tiles): a dedicated
/// kernel is ~5x faster than `fast_image_resize`'s generic interpolation
/// (`cargo bench -p mixer --bench mix -- scale`).
#[allow(clippy::too_many_arguments)]
pub fn upscale2x_plane(
    src: &[u8],
    sw: usize,
    sh: usize,
    (cx, cy, cw, ch): (usize, usize, usize, usize),
    dst: &mut [u8],
    dst_stride: usize,
    rows: &mut Vec<u16>,
) -> bool {
    let dw = 2 * cw;
    let fits = cw > 0
        && ch > 0
        && cx.checked_add(cw).is_some_and(|e| e <= sw)
        && cy.checked_add(ch).is_some_and(|e| e <= sh)
        && src.len() >= sw * sh
        && dst_stride >= dw
        && dst.len() >= (2 * ch - 1) * dst_stride + dw;
    if !fits {
        return false;
    }
    // One vertically interpolated row, with one extra column on each side (edge repeated).
    rows.clear();
    rows.resize(cw + 2, 0);
    let left = cx.saturating_sub(1);
    let right = (cx + cw).min(sw - 1);
    let row = |y: usize| &src[y * sw..(y + 1) * sw];
    for j in 0..ch {
        let y = cy + j;
        let cur = row(y);
        let above = row(y.saturating_sub(1));
        let below = row((y + 1).min(sh - 1));
        for (half, nb) in [(0usize, above), (1, below)] {
            // Vertical: 3 x nearest row + 1 x the other neighbour (0..=1020).
            let c = &cur[cx..cx + cw];
            let n = &nb[cx..cx + cw];
            if let Some(mid) = rows.get_mut(1..cw + 1) {
                for ((o, &a), &b) in mid.iter_mut().zip(c).zip(n) {
                    *o = 3 * u16::from(a) + u16::from(b);
                }
            }
            rows[0] = 3 * u16::from(cur[left]) + u16::from(nb[left]);
            rows[cw + 1] = 3 * u16::from(cur[right]) + u16::from(nb[right]);
            // Horizontal: out[2x] = (3 v[x] + v[x-1] + 8) / 16, out[2x+1] = (3 v[x] + v[x+1] + 8) / 16.
            let start = (2 * j + half) * dst_stride;
            let out = &mut dst[start..start + dw];
            // Three shifted views of the row so the loop has no bounds checks and vectorizes.
            let (l, m, r) = (&rows[..cw], &rows[1..cw + 1], &rows[2..cw + 2]);
            for (((pair, &l), &m), &r) in out.chunks_exact_mut(2).zip(l).zip(m).zip(r) {
                let m = 3 * m + 8;
                let v = ((m + l) >> 4) | (((m + r) >> 4) << 8);
                pair.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    true
}

/// Draws pictures into a canvas; holds the scaler and its scratch buffers.
pub struct Compositor {
    resizer: Resizer,
    scratch: Vec<u8>,
    rows: Vec<u16>,
}

impl std::fmt::Debug for Compositor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compositor")
    }
}

impl Default for Compositor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compositor {
    /// A new compositor.
    pub fn new() -> Self {
        Compositor {
            resizer: Resizer::new(),
            scratch: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Draws `src` into `region` of `canvas`, fitted as `fit`. With letterboxing the bars are
    /// filled with `bg`.
    pub fn draw(
        &mut self,
        canvas: &mut I420Frame,
        src: &I420Frame,
        region: &Region,
        fit: Fit,
        bg: Yuv,
    ) {
        if fit == Fit::Letterbox {
            canvas.fill_rect(region.x, region.y, region.w, region.h, bg);
        }
        self.draw_picture(canvas, src, region, fit);
    }

    /// [`draw`](Self::draw) without filling letterbox bars (what is under them stays).
    pub fn draw_picture(
        &mut self,
        canvas: &mut I420Frame,
        src: &I420Frame,
        region: &Region,
        fit: Fit,
    ) {
        let ((cx, cy, cw, ch), (dx, dy, dw, dh)) = fit_geometry(src.width, src.height, region, fit);
        for p in 0..3 {
            let div = if p == 0 { 1.0 } else { 2.0 };
            let (sbuf, spw, sph) = src.plane(p);
            let (ddx, ddy, ddw, ddh) = if p == 0 {
                (dx, dy, dw, dh)
            } else {
                (dx / 2, dy / 2, dw / 2, dh / 2)
            };
            if ddw == 0 || ddh == 0 {
                continue;
            }
            let need = (ddw * ddh) as usize;
            if self.scratch.len() < need {
                self.scratch.resize(need, 0);
            }
            let (ccx, ccy, ccw, cch) = (cx / div, cy / div, cw / div, ch / div);
            let direct = ccx == 0.0
                && ccy == 0.0
                && ccw as u32 == spw
                && cch as u32 == sph
                && spw == ddw
                && sph == ddh;
            // Exactly 2x from whole-pixel crop offsets (the 2-up layout): dedicated kernel.
            let whole = |v: f64| v.fract() == 0.0 && v >= 0.0;
            let exact2x = whole(ccx)
                && whole(ccy)
                && whole(ccw)
                && whole(cch)
                && f64::from(ddw) == 2.0 * ccw
                && f64::from(ddh) == 2.0 * cch;
            let crop = (ccx as usize, ccy as usize, ccw as usize, cch as usize);
            if exact2x {
                // Straight into the canvas when the tile lies inside it: no second copy.
                let (cbuf, cpw, cph) = canvas.plane_mut(p);
                if ddx + ddw <= cpw && ddy + ddh <= cph {
                    let at = (ddy * cpw + ddx) as usize;
                    if let Some(dst) = cbuf.get_mut(at..) {
                        let (sw, sh) = (spw as usize, sph as usize);
                        if upscale2x_plane(sbuf, sw, sh, crop, dst, cpw as usize, &mut self.rows) {
                            continue;
                        }
                    }
                }
            }
            let scaled: &[u8] = if direct {
                sbuf
            } else if exact2x
                && upscale2x_plane(
                    sbuf,
                    spw as usize,
                    sph as usize,
                    crop,
                    &mut self.scratch,
                    ddw as usize,
                    &mut self.rows,
                )
            {
                self.scratch.get(..need).unwrap_or_default()
            } else {
                let Ok(src_img) = TypedImageRef::<U8>::from_buffer(spw, sph, sbuf) else {
                    continue;
                };
                let Some(scratch) = self.scratch.get_mut(..need) else {
                    continue;
                };
                let Ok(mut dst_img) = TypedImage::<U8>::from_buffer(ddw, ddh, scratch) else {
                    continue;
                };
                // Upscaling: the fixed 2-tap interpolation is about twice as fast as the
                // convolution and looks the same; downscaling: the convolution (its kernel
                // widens with the factor) avoids aliasing.
                let alg = if f64::from(ddw) >= ccw && f64::from(ddh) >= cch {
                    ResizeAlg::Interpolation(FilterType::Bilinear)
                } else {
                    ResizeAlg::Convolution(FilterType::Bilinear)
                };
                let opts = ResizeOptions::new()
                    .resize_alg(alg)
                    .crop(ccx, ccy, ccw, cch);
                if self
                    .resizer
                    .resize_typed(&src_img, &mut dst_img, &opts)
                    .is_err()
                {
                    continue;
                }
                self.scratch.get(..need).unwrap_or_default()
            };
            let (cbuf, cpw, cph) = canvas.plane_mut(p);
            let w = ddw.min(cpw.saturating_sub(ddx)) as usize;
            for row in 0..ddh.min(cph.saturating_sub(ddy)) {
                let s = (row * ddw) as usize;
                let d = ((ddy + row) * cpw + ddx) as usize;
                if let (Some(from), Some(to)) = (scaled.get(s..s + w), cbuf.get_mut(d..d + w)) {
                    to.copy_from_slice(from);
                }
            }
        }
    }

    /// Draws a placeholder tile: a solid colour with an audio level bar (level in 0..=1)
    /// along the bottom.
    pub fn draw_placeholder(
        &mut self,
        canvas: &mut I420Frame,
        region: &Region,
        color: Yuv,
        level: f32,
    ) {
        canvas.fill_rect(region.x, region.y, region.w, region.h, color);
        let bar_h = ((region.h / 12).max(2)) & !1;
        let margin = ((region.w / 20).max(2)) & !1;
        let full = region.w.saturating_sub(2 * margin);
        let bw = ((f64::from(full) * f64::from(level.clamp(0.0, 1.0))) as u32) & !1;
        let by = (region.y + region.h).saturating_sub(2 * bar_h) & !1;
        canvas.fill_rect(
            region.x + margin,
            by,
            full,
            bar_h,
            Yuv::from_rgb(40, 40, 40),
        );
        if bw > 0 {
            canvas.fill_rect(
                region.x + margin,
                by,
                bw,
                bar_h,
                Yuv::from_rgb(80, 220, 100),
            );
        }
    }
}

/// A stable, pleasant placeholder colour for an identity.
pub fn identity_color(identity: &str) -> Yuv {
    // FNV-1a hash picks one of a small palette.
    let mut h: u32 = 0x811c_9dc5;
    for b in identity.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const PALETTE: [(u8, u8, u8); 8] = [
        (52, 73, 94),
        (142, 68, 173),
        (41, 128, 185),
        (22, 160, 133),
        (192, 57, 43),
        (211, 84, 0),
        (39, 174, 96),
        (127, 140, 141),
    ];
    let (r, g, b) = PALETTE
        .get((h % 8) as usize)
        .copied()
        .unwrap_or((60, 60, 60));
    Yuv::from_rgb(r, g, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(x: u32, y: u32, w: u32, h: u32) -> Region {
        Region {
            identity: "a".into(),
            x,
            y,
            w,
            h,
            z: 0,
            fit: Fit::Crop,
        }
    }

    #[test]
    fn crop_to_fill_covers_region() {
        let mut canvas = I420Frame::new(
            64,
            32,
            Yuv {
                y: 16,
                u: 128,
                v: 128,
            },
        );
        let src = I420Frame::new(
            40,
            40,
            Yuv {
                y: 200,
                u: 60,
                v: 190,
            },
        );
        let mut c = Compositor::new();
        c.draw(
            &mut canvas,
            &src,
            &region(8, 4, 32, 16),
            Fit::Crop,
            Yuv {
                y: 16,
                u: 128,
                v: 128,
            },
        );
        assert!((canvas.mean(0, 8, 4, 32, 16) - 200.0).abs() < 1.0);
        assert!((canvas.mean(1, 8, 4, 32, 16) - 60.0).abs() < 1.0);
        assert!((canvas.mean(2, 8, 4, 32, 16) - 190.0).abs() < 1.0);
        // Outside untouched.
        assert!((canvas.mean(0, 40, 0, 24, 32) - 16.0).abs() < 0.01);
        assert!((canvas.mean(0, 0, 0, 8, 32) - 16.0).abs() < 0.01);
    }

    #[test]
    fn letterbox_keeps_bars() {
        let bg = Yuv {
            y: 16,
            u: 128,
            v: 128,
        };
        let mut canvas = I420Frame::new(
            64,
            32,
            Yuv {
                y: 100,
                u: 100,
                v: 100,
            },
        );
        let src = I420Frame::new(
            20,
            20,
            Yuv {
                y: 200,
                u: 60,
                v: 190,
            },
        );
        let mut c = Compositor::new();
        let r = region(0, 0, 64, 32);
        c.draw(&mut canvas, &src, &r, Fit::Letterbox, bg);
        let (_, (dx, dy, dw, dh)) = fit_geometry(20, 20, &r, Fit::Letterbox);
        assert_eq!((dx, dy, dw, dh), (16, 0, 32, 32));
        assert!((canvas.mean(0, 0, 0, 16, 32) - 16.0).abs() < 0.01);
        assert!((canvas.mean(0, 48, 0, 16, 32) - 16.0).abs() < 0.01);
        assert!((canvas.mean(0, 16, 0, 32, 32) - 200.0).abs() < 1.0);
    }

    #[test]
    fn crop_keeps_centre() {
        // Source: left half dark, right half bright, wide; region square => centre crop
        // shows both halves equally.
        let mut src = I420Frame::new(
            80,
            20,
            Yuv {
                y: 20,
                u: 128,
                v: 128,
            },
        );
        src.fill_rect(
            40,
            0,
            40,
            20,
            Yuv {
                y: 220,
                u: 128,
                v: 128,
            },
        );
        let mut canvas = I420Frame::new(
            20,
            20,
            Yuv {
                y: 0,
                u: 128,
                v: 128,
            },
        );
        Compositor::new().draw(
            &mut canvas,
            &src,
            &region(0, 0, 20, 20),
            Fit::Crop,
            Yuv {
                y: 0,
                u: 128,
                v: 128,
            },
        );
        assert!(canvas.mean(0, 0, 0, 8, 20) < 40.0);
        assert!(canvas.mean(0, 12, 0, 8, 20) > 200.0);
    }

    #[test]
    fn own_bilinear_matches_flat_and_ramp() {
        let src: Vec<u8> = (0..64u32)
            .flat_map(|_| (0..64u32).map(|x| (x * 4) as u8))
            .collect();
        let mut dst = vec![0u8; 128 * 32];
        scale_plane_bilinear(&src, 64, 64, (0.0, 0.0, 64.0, 64.0), &mut dst, 128, 32);
        // Horizontal ramp stays a monotonic ramp.
        let row = &dst[..128];
        assert!(row.windows(2).all(|w| w[1] >= w[0]));
        assert!(row[0] <= 2 && row[127] >= 250);
    }

    #[test]
    fn upscale2x_matches_generic_bilinear() {
        // A textured 64x36 plane; crop the centre 32x36 and scale 2x both ways.
        let (sw, sh) = (64u32, 36u32);
        let src: Vec<u8> = (0..sw * sh)
            .map(|i| ((i * 37 + (i / sw) * 11) % 251) as u8)
            .collect();
        let (cx, cy, cw, ch) = (16u32, 0u32, 32u32, 36u32);
        let mut fast = vec![0u8; (4 * cw * ch) as usize];
        let mut rows = Vec::new();
        assert!(upscale2x_plane(
            &src,
            sw as usize,
            sh as usize,
            (cx as usize, cy as usize, cw as usize, ch as usize),
            &mut fast,
            2 * cw as usize,
            &mut rows
        ));
        let mut generic = vec![0u8; (4 * cw * ch) as usize];
        scale_plane_bilinear(
            &src,
            sw,
            sh,
            (f64::from(cx), f64::from(cy), f64::from(cw), f64::from(ch)),
            &mut generic,
            2 * cw,
            2 * ch,
        );
        let max = fast
            .iter()
            .zip(&generic)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(max <= 1, "max difference {max}");
        // A crop that does not fit, or a short destination, is refused.
        assert!(!upscale2x_plane(
            &src,
            64,
            36,
            (40, 0, 32, 36),
            &mut fast,
            64,
            &mut rows
        ));
        assert!(!upscale2x_plane(
            &src,
            64,
            36,
            (0, 0, 32, 36),
            &mut [0u8; 10],
            64,
            &mut rows
        ));
        // A stride shorter than a row is refused.
        assert!(!upscale2x_plane(
            &src,
            64,
            36,
            (0, 0, 32, 36),
            &mut fast,
            63,
            &mut rows
        ));
        // Into a wider plane (a canvas): the same rows, the bytes between them untouched.
        let stride = 2 * cw as usize + 10;
        let mut wide = vec![7u8; stride * 2 * ch as usize];
        assert!(upscale2x_plane(
            &src,
            sw as usize,
            sh as usize,
            (cx as usize, cy as usize, cw as usize, ch as usize),
            &mut wide,
            stride,
            &mut rows
        ));
        for (r, packed) in fast.chunks_exact(2 * cw as usize).enumerate() {
            let row = &wide[r * stride..(r + 1) * stride];
            assert_eq!(&row[..2 * cw as usize], packed, "row {r}");
            assert!(
                row[2 * cw as usize..].iter().all(|&b| b == 7),
                "row {r} padding"
            );
        }
    }

    #[test]
    fn compositor_2up_matches_generic_bilinear() {
        // 2-up crop-to-fill of a 640x360 picture into a 640x720 tile is exactly 2x.
        let mut src = I420Frame::new(
            640,
            360,
            Yuv {
                y: 0,
                u: 128,
                v: 128,
            },
        );
        for b in 0..20u32 {
            src.fill_rect(
                b * 32,
                (b * 17) % 320,
                16,
                40,
                Yuv::from_rgb((b * 12) as u8, 90, 200),
            );
        }
        let bg = Yuv {
            y: 16,
            u: 128,
            v: 128,
        };
        let r = region(640, 0, 640, 720);
        let mut canvas = I420Frame::new(1280, 720, bg);
        Compositor::new().draw(&mut canvas, &src, &r, Fit::Crop, bg);
        let ((cx, cy, cw, ch), _) = fit_geometry(640, 360, &r, Fit::Crop);
        assert_eq!((cx, cy, cw, ch), (160.0, 0.0, 320.0, 360.0));
        let mut generic = vec![0u8; 640 * 720];
        scale_plane_bilinear(
            src.plane(0).0,
            640,
            360,
            (cx, cy, cw, ch),
            &mut generic,
            640,
            720,
        );
        let (cy_plane, cpw, _) = canvas.plane(0);
        let mut max = 0u8;
        for row in 0..720usize {
            for col in 0..640usize {
                let a = cy_plane[row * cpw as usize + 640 + col];
                max = max.max(a.abs_diff(generic[row * 640 + col]));
            }
        }
        assert!(max <= 1, "max difference {max}");
    }

    #[test]
    fn rgb_conversion() {
        assert_eq!(
            Yuv::from_rgb(0, 0, 0),
            Yuv {
                y: 16,
                u: 128,
                v: 128
            }
        );
        assert_eq!(
            Yuv::from_rgb(255, 255, 255),
            Yuv {
                y: 235,
                u: 128,
                v: 128
            }
        );
        let red = Yuv::from_rgb(255, 0, 0);
        assert!(red.v > 200 && red.u < 128);
    }

    #[test]
    fn placeholder_has_bar() {
        let mut canvas = I420Frame::new(
            64,
            48,
            Yuv {
                y: 16,
                u: 128,
                v: 128,
            },
        );
        let r = region(0, 0, 64, 48);
        Compositor::new().draw_placeholder(
            &mut canvas,
            &r,
            Yuv {
                y: 50,
                u: 128,
                v: 128,
            },
            1.0,
        );
        assert!((canvas.mean(0, 0, 0, 64, 20) - 50.0).abs() < 0.01);
        let bar = canvas.mean(0, 10, 40, 40, 2);
        assert!(bar > 100.0, "bar {bar}");
    }
}
