//! Text for tile labels: a fallback chain of fonts ([`Fonts`], `ab_glyph`), one line of text
//! rendered to a coverage mask ([`Fonts::render_line`], ellipsized with "…" to a width), and
//! the label picture (white text on a translucent dark box, [`render_label`]) with its
//! bounded cache ([`LabelCache`]).
//!
//! The server loads the font files once at start ([`DEFAULT_FONT_PATHS`] are the Debian
//! packages `fonts-dejavu-core` and `fonts-wqy-microhei`) and hands the same `Arc<Fonts>` to
//! every mixer; without fonts no label is drawn.

use std::collections::HashMap;
use std::sync::Arc;

use ab_glyph::{point, Font, FontVec, GlyphId, PxScale, ScaleFont};

use crate::decor::OverlayPicture;

/// Where the fonts of the default chain are installed on Debian: DejaVu Sans Bold (Latin,
/// Greek, Cyrillic; package `fonts-dejavu-core`), then WenQuanYi Micro Hei (CJK; package
/// `fonts-wqy-microhei`, a collection of which face 0 is used).
pub const DEFAULT_FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
];

/// Characters of a label beyond this are dropped before layout.
pub const MAX_LABEL_CHARS: usize = 256;

/// Why fonts could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FontError {
    /// No font data was given.
    #[error("no font given")]
    Empty,
    /// The data at this position in the list is not a TrueType/OpenType font (or
    /// collection).
    #[error("font {index} is not a valid TrueType/OpenType font")]
    Invalid {
        /// Position in the list given.
        index: usize,
    },
}

/// A fallback chain of fonts: each character is drawn with the first font that has a glyph
/// for it.
pub struct Fonts {
    fonts: Vec<FontVec>,
}

impl std::fmt::Debug for Fonts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fonts({})", self.fonts.len())
    }
}

/// One line of text as 8-bit coverage (0 = background, 255 = ink), rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (the fonts' ascent + descent).
    pub height: u32,
    /// Coverage, `width * height` bytes.
    pub coverage: Vec<u8>,
    /// Whether the text was cut and ended with "…".
    pub ellipsized: bool,
}

struct Placed {
    font: usize,
    id: GlyphId,
    x: f32,
}

impl Fonts {
    /// Loads fonts from their files' bytes, in fallback order (TrueType, OpenType, or a
    /// collection such as `.ttc`, of which the first face is used).
    pub fn from_bytes(data: Vec<Vec<u8>>) -> Result<Self, FontError> {
        if data.is_empty() {
            return Err(FontError::Empty);
        }
        let fonts = data
            .into_iter()
            .enumerate()
            .map(|(index, d)| {
                FontVec::try_from_vec_and_index(d, 0).map_err(|_| FontError::Invalid { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fonts { fonts })
    }

    /// Number of fonts in the chain.
    pub fn count(&self) -> usize {
        self.fonts.len()
    }

    /// The first font with a glyph for `c`.
    fn pick(&self, c: char) -> Option<(usize, GlyphId)> {
        self.fonts.iter().enumerate().find_map(|(i, f)| {
            let id = f.glyph_id(c);
            (id.0 != 0).then_some((i, id))
        })
    }

    /// Whether some font of the chain has a glyph for `c`.
    pub fn has_glyph(&self, c: char) -> bool {
        self.pick(c).is_some()
    }

    /// The scale of font `i` for an em of `px` pixels (so that every font of the chain draws
    /// letters of the same size).
    fn scale(&self, i: usize, px: f32) -> PxScale {
        let f = &self.fonts[i];
        let upem = f.units_per_em().unwrap_or(1000.0).max(1.0);
        PxScale::from(px * f.height_unscaled() / upem)
    }

    /// Lays `chars` out from x = 0; returns the glyphs and the advance width.
    fn layout(&self, chars: &[(usize, GlyphId)], px: f32) -> (Vec<Placed>, f32) {
        let mut x = 0.0f32;
        let mut out = Vec::with_capacity(chars.len());
        let mut prev: Option<(usize, GlyphId)> = None;
        for &(font, id) in chars {
            let sf = self.fonts[font].as_scaled(self.scale(font, px));
            if let Some((pf, pid)) = prev {
                if pf == font {
                    x += sf.kern(pid, id);
                }
            }
            out.push(Placed { font, id, x });
            x += sf.h_advance(id);
            prev = Some((font, id));
        }
        (out, x)
    }

    /// Renders one line of `text` with an em of `px` pixels, at most `max_width` pixels wide:
    /// a longer text is cut at a character and ends with "…". Control characters and
    /// characters no font has are left out. `None` when nothing can be drawn (empty text, or
    /// not even "…" fits).
    pub fn render_line(&self, text: &str, px: f32, max_width: u32) -> Option<TextMask> {
        if !(px.is_finite() && px >= 1.0) || max_width == 0 {
            return None;
        }
        let chars: Vec<(usize, GlyphId)> = text
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_LABEL_CHARS)
            .filter_map(|c| self.pick(c))
            .collect();
        let limit = max_width as f32;
        let (mut placed, mut width) = self.layout(&chars, px);
        let mut ellipsized = false;
        if width > limit {
            ellipsized = true;
            let dots: Vec<(usize, GlyphId)> = self
                .pick('…')
                .map(|g| vec![g])
                .or_else(|| self.pick('.').map(|g| vec![g; 3]))
                .unwrap_or_default();
            // The longest prefix (without trailing spaces) that fits with the ellipsis.
            let mut n = chars.len();
            loop {
                let mut line: Vec<(usize, GlyphId)> = chars[..n].to_vec();
                while line
                    .last()
                    .is_some_and(|&(f, id)| self.fonts[f].glyph_id(' ') == id)
                {
                    line.pop();
                }
                line.extend_from_slice(&dots);
                let (p, w) = self.layout(&line, px);
                if w <= limit || n == 0 {
                    (placed, width) = (p, w);
                    break;
                }
                n -= 1;
            }
            if width > limit {
                return None;
            }
        }
        if placed.is_empty() {
            return None;
        }
        // Line metrics: the tallest ascent and deepest descent of the fonts used.
        let (mut ascent, mut descent) = (0.0f32, 0.0f32);
        for g in &placed {
            let sf = self.fonts[g.font].as_scaled(self.scale(g.font, px));
            ascent = ascent.max(sf.ascent());
            descent = descent.min(sf.descent());
        }
        let w = (width.ceil() as u32).clamp(1, max_width);
        let h = ((ascent - descent).ceil() as u32).max(1);
        let mut coverage = vec![0u8; (w as usize) * (h as usize)];
        for g in &placed {
            let font = &self.fonts[g.font];
            let glyph =
                g.id.with_scale_and_position(self.scale(g.font, px), point(g.x, ascent));
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // a space
            };
            let b = outline.px_bounds();
            let (ox, oy) = (b.min.x as i64, b.min.y as i64);
            outline.draw(|gx, gy, c| {
                let (x, y) = (ox + i64::from(gx), oy + i64::from(gy));
                if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
                    return;
                }
                let v = (c.clamp(0.0, 1.0) * 255.0).round() as u8;
                if let Some(p) = coverage.get_mut((y as usize) * (w as usize) + x as usize) {
                    *p = (*p).max(v);
                }
            });
        }
        Some(TextMask {
            width: w,
            height: h,
            coverage,
            ellipsized,
        })
    }
}

/// Opacity of the label box (0..=255).
pub const LABEL_BOX_ALPHA: u8 = 150;

/// The label font size (em, pixels) for a tile `tile_h` pixels high: a 14th of it, 12..=48.
pub fn label_font_px(tile_h: u32) -> u32 {
    (tile_h / 14).clamp(12, 48)
}

/// A label: `text` in white at `font_px`, on a dark box ([`LABEL_BOX_ALPHA`]) with padding,
/// at most `max_width` pixels wide in all (longer text is ellipsized). Sizes are even.
pub fn render_label(
    fonts: &Fonts,
    text: &str,
    font_px: u32,
    max_width: u32,
) -> Option<OverlayPicture> {
    let (pad_x, pad_y) = ((font_px / 3).max(2), (font_px / 6).max(1));
    let text_max = max_width.checked_sub(2 * pad_x)?;
    let mask = fonts.render_line(text, font_px as f32, text_max)?;
    let bw = (mask.width + 2 * pad_x).div_ceil(2) * 2;
    let bh = (mask.height + 2 * pad_y).div_ceil(2) * 2;
    if bw > max_width.div_ceil(2) * 2 {
        return None;
    }
    let box_a = u32::from(LABEL_BOX_ALPHA);
    let mut rgba = Vec::with_capacity((bw * bh * 4) as usize);
    for y in 0..bh {
        for x in 0..bw {
            let c = if x >= pad_x && y >= pad_y {
                let (mx, my) = (x - pad_x, y - pad_y);
                if mx < mask.width && my < mask.height {
                    u32::from(mask.coverage[(my * mask.width + mx) as usize])
                } else {
                    0
                }
            } else {
                0
            };
            // White text over the black box: premultiplied white = c, alpha = c + box (1 - c).
            let a = c + (box_a * (255 - c) + 127) / 255;
            let white = (c * 255 + a / 2).checked_div(a).unwrap_or(0);
            let white = white.min(255) as u8;
            rgba.extend_from_slice(&[white, white, white, a.min(255) as u8]);
        }
    }
    OverlayPicture::from_rgba(bw, bh, &rgba)
}

type LabelKey = (String, u32, u32);

/// Rendered labels by (text, font size, max width), at most [`LabelCache::CAPACITY`]; the
/// least recently used goes first.
#[derive(Debug, Default)]
pub struct LabelCache {
    /// By (text, font size, max width): the label (`None`: nothing to draw) and when it was
    /// last used.
    entries: HashMap<LabelKey, (Option<Arc<OverlayPicture>>, u64)>,
    tick: u64,
    renders: u64,
}

impl LabelCache {
    /// Most labels kept.
    pub const CAPACITY: usize = 64;

    /// The label for `text` at `font_px` within `max_width`, rendered on first use.
    pub fn get(
        &mut self,
        fonts: &Fonts,
        text: &str,
        font_px: u32,
        max_width: u32,
    ) -> Option<Arc<OverlayPicture>> {
        self.tick += 1;
        let key = (text.to_owned(), font_px, max_width);
        if let Some(e) = self.entries.get_mut(&key) {
            e.1 = self.tick;
            return e.0.clone();
        }
        if self.entries.len() >= Self::CAPACITY {
            if let Some(old) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.1)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&old);
            }
        }
        self.renders += 1;
        let pic = render_label(fonts, text, font_px, max_width).map(Arc::new);
        self.entries.insert(key, (pic.clone(), self.tick));
        pic
    }

    /// Drops every label (the fonts changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Labels rendered so far (cache misses).
    pub fn renders(&self) -> u64 {
        self.renders
    }

    /// Labels held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no label is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::compose::{I420Frame, Yuv};
    use crate::decor::blend;

    /// The default chain, read from the installed Debian packages (the tests need them: see
    /// `scripts/deps.sh`).
    pub(crate) fn fonts() -> Fonts {
        let data = DEFAULT_FONT_PATHS
            .iter()
            .map(|p| {
                std::fs::read(p).unwrap_or_else(|e| {
                    panic!("font {p}: {e} (install fonts-dejavu-core and fonts-wqy-microhei)")
                })
            })
            .collect();
        Fonts::from_bytes(data).expect("fonts")
    }

    fn ink(m: &TextMask) -> usize {
        m.coverage.iter().filter(|&&c| c > 128).count()
    }

    #[test]
    fn latin_and_chinese_render_with_the_fallback_chain() {
        let f = fonts();
        assert_eq!(f.count(), 2);
        assert_eq!(f.pick('A').map(|g| g.0), Some(0));
        assert_eq!(
            f.pick('主').map(|g| g.0),
            Some(1),
            "CJK from the second font"
        );
        let latin = f.render_line("Alice", 24.0, 1000).expect("latin");
        assert!(ink(&latin) > 50, "latin ink {}", ink(&latin));
        assert!(!latin.ellipsized);
        let cjk = f.render_line("主播小美", 24.0, 1000).expect("cjk");
        assert!(ink(&cjk) > 100, "cjk ink {}", ink(&cjk));
        // Four CJK glyphs are about four ems wide.
        assert!((80..=110).contains(&cjk.width), "cjk width {}", cjk.width);
        // Without the CJK font, nothing of it can be drawn.
        let latin_only = Fonts::from_bytes(vec![std::fs::read(DEFAULT_FONT_PATHS[0]).expect("f")])
            .expect("font");
        assert!(latin_only.render_line("主播小美", 24.0, 1000).is_none());
        assert!(f.render_line("", 24.0, 1000).is_none());
        assert!(f.render_line("\u{7}\n", 24.0, 1000).is_none());
    }

    #[test]
    fn long_names_are_ellipsized_within_the_width() {
        let f = fonts();
        let full = f
            .render_line("Maximilian Alexander von Habsburg", 20.0, 10_000)
            .expect("full");
        let max = full.width / 2;
        let cut = f
            .render_line("Maximilian Alexander von Habsburg", 20.0, max)
            .expect("cut");
        assert!(cut.ellipsized);
        assert!(cut.width <= max, "{} > {max}", cut.width);
        assert!(cut.width + 30 > max, "cut too much: {} of {max}", cut.width);
        // The ellipsis is drawn: ink near the right end.
        let right_ink = (0..cut.height)
            .flat_map(|y| (cut.width - 12..cut.width).map(move |x| (x, y)))
            .filter(|&(x, y)| cut.coverage[(y * cut.width + x) as usize] > 128)
            .count();
        assert!(right_ink > 0);
        // Too narrow for even the ellipsis.
        assert!(f.render_line("Bob", 20.0, 3).is_none());
        // Mixed scripts ellipsize too.
        let cjk = f
            .render_line("主播小美和她的朋友们一起直播", 24.0, 100)
            .expect("cjk");
        assert!(cjk.ellipsized && cjk.width <= 100);
    }

    #[test]
    fn label_puts_bright_text_inside_its_box_only() {
        let f = fonts();
        let pic = render_label(&f, "Alice 主播", 24, 400).expect("label");
        assert_eq!((pic.width() % 2, pic.height() % 2), (0, 0));
        let mut canvas = I420Frame::new(640, 360, Yuv::from_rgb(0, 0, 0));
        let (x, y) = (20u32, 300u32);
        blend(&mut canvas, &pic, i64::from(x), i64::from(y), 255);
        let (luma, w, _) = canvas.plane(0);
        let mut inside = 0;
        for row in 0..360u32 {
            for col in 0..640u32 {
                let v = luma[(row * w + col) as usize];
                let in_box =
                    (x..x + pic.width()).contains(&col) && (y..y + pic.height()).contains(&row);
                if v > 180 {
                    assert!(in_box, "bright pixel at {col},{row} outside the label");
                    inside += 1;
                } else if !in_box {
                    assert_eq!(v, 16, "touched at {col},{row}");
                }
            }
        }
        assert!(inside > 100, "bright text pixels {inside}");
        // The box darkens a light canvas.
        let mut light = I420Frame::new(640, 360, Yuv::from_rgb(200, 200, 200));
        blend(&mut light, &pic, 20, 300, 255);
        let corner = light.mean(0, 20, 300, 2, 2);
        assert!(corner < 120.0, "box corner luma {corner}");
    }

    #[test]
    fn label_cache_renders_once_and_is_bounded() {
        let f = fonts();
        let mut c = LabelCache::default();
        let a = c.get(&f, "alice", 20, 300).expect("a");
        let b = c.get(&f, "alice", 20, 300).expect("b");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(c.renders(), 1);
        for i in 0..100 {
            c.get(&f, &format!("guest {i}"), 20, 300);
        }
        assert_eq!(c.len(), LabelCache::CAPACITY);
        // The most recent are kept, the oldest gone.
        let before = c.renders();
        c.get(&f, "guest 99", 20, 300);
        assert_eq!(c.renders(), before);
        c.get(&f, "alice", 20, 300);
        assert_eq!(c.renders(), before + 1);
    }

    #[test]
    fn bad_font_data_is_an_error() {
        assert_eq!(Fonts::from_bytes(vec![]).err(), Some(FontError::Empty));
        assert_eq!(
            Fonts::from_bytes(vec![b"not a font".to_vec()]).err(),
            Some(FontError::Invalid { index: 0 })
        );
        assert_eq!(label_font_px(100), 12);
        assert_eq!(label_font_px(360), 25);
        assert_eq!(label_font_px(2000), 48);
    }
}
