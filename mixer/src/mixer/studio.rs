//! The studio decor of a program: the images the server pushed in, the decor in force
//! (overlays, background image, labels), display names and fonts, with the caches that make
//! a frame cost only its blending.

use std::sync::Arc;

use super::*;
use crate::config::Rgb;
use crate::decor::{blend, opacity_u8, BackgroundCache, Decor, Image, PictureCache};
use crate::text::{label_font_px, Fonts, LabelCache, MAX_LABEL_CHARS};

/// Display names kept beyond the current inputs' (names may be set before an input is
/// added); past it, names of identities that are not inputs are forgotten.
const MAX_NAMES: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Studio {
    decor: Decor,
    images: HashMap<String, Image>,
    names: HashMap<String, String>,
    fonts: Option<Arc<Fonts>>,
    pictures: PictureCache,
    background: BackgroundCache,
    labels: LabelCache,
}

impl Studio {
    pub(super) fn new(decor: Decor) -> Self {
        Studio {
            decor,
            ..Studio::default()
        }
    }

    /// The background image scaled to the canvas, if one is set and known.
    pub(super) fn background_frame(&mut self, w: u32, h: u32, bg: Rgb) -> Option<&I420Frame> {
        let name = self.decor.background_image.as_ref()?;
        let image = self.images.get(name)?;
        self.background.get(name, image, w, h, bg)
    }

    /// A label at the bottom left of every region (when labels are on and fonts are set).
    pub(super) fn draw_labels(&mut self, canvas: &mut I420Frame, regions: &[Region]) {
        if !self.decor.labels {
            return;
        }
        let Some(fonts) = self.fonts.as_deref() else {
            return;
        };
        for r in regions {
            let size = label_font_px(r.h);
            let margin = (size / 2 + 1) & !1;
            let max_w = r.w.saturating_sub(2 * margin);
            if max_w < 2 * size {
                continue;
            }
            let name = self
                .names
                .get(&r.identity)
                .map_or(r.identity.as_str(), String::as_str);
            let Some(pic) = self.labels.get(fonts, name, size, max_w) else {
                continue;
            };
            if pic.height() + 2 * margin > r.h {
                continue;
            }
            let x = i64::from(r.x + margin);
            let y = i64::from(r.y + r.h - margin - pic.height());
            blend(canvas, &pic, x, y, 255);
        }
    }

    /// The overlays, by `z` (stable), skipping those whose image is missing.
    pub(super) fn draw_overlays(&mut self, canvas: &mut I420Frame) {
        let mut order: Vec<usize> = (0..self.decor.overlays.len()).collect();
        order.sort_by_key(|&i| self.decor.overlays.get(i).map_or(0, |o| o.z));
        let (cw, ch) = (i64::from(canvas.width()), i64::from(canvas.height()));
        for i in order {
            let Some(o) = self.decor.overlays.get(i) else {
                continue;
            };
            let (w, h) = (o.w & !1, o.h & !1);
            let (x, y) = (i64::from(o.x) & !1, i64::from(o.y) & !1);
            let visible = w > 0
                && h > 0
                && x < cw
                && y < ch
                && x + i64::from(w) > 0
                && y + i64::from(h) > 0
                && o.opacity > 0.0;
            if !visible {
                continue;
            }
            let Some(image) = self.images.get(&o.image) else {
                continue;
            };
            if let Some(pic) = self.pictures.get(&o.image, image, w, h) {
                blend(canvas, &pic, x, y, opacity_u8(o.opacity));
            }
        }
    }

    pub(super) fn end_frame(&mut self) {
        self.pictures.end_frame();
    }
}

impl Mixer {
    /// Adds, replaces (`Some`) or removes (`None`) the image called `name`, for overlays and
    /// the background image that name it (from the next frame). Decor naming an image the
    /// mixer does not have is skipped, not an error.
    pub fn set_image(&mut self, name: &str, image: Option<Image>) {
        self.studio.pictures.invalidate(name);
        self.studio.background.invalidate(name);
        match image {
            Some(i) => {
                self.studio.images.insert(name.to_owned(), i);
            }
            None => {
                self.studio.images.remove(name);
            }
        }
    }

    /// Whether an image called `name` is known.
    pub fn has_image(&self, name: &str) -> bool {
        self.studio.images.contains_key(name)
    }

    /// Changes the studio decor (overlays, background image, labels) from the next frame.
    /// Fails, changing nothing, when it is invalid ([`Decor::validate`]).
    pub fn set_decor(&mut self, decor: Decor) -> Result<(), MixerError> {
        decor.validate()?;
        self.studio.decor = decor;
        Ok(())
    }

    /// The studio decor in force.
    pub fn decor(&self) -> &Decor {
        &self.studio.decor
    }

    /// The label text of an input (its identity until set); an empty or blank `name` goes
    /// back to the identity. May be set before the input is added; long names are cut at
    /// 256 characters (and ellipsized to the tile when drawn).
    pub fn set_display_name(&mut self, identity: &str, name: &str) {
        let name: String = name.trim().chars().take(MAX_LABEL_CHARS).collect();
        if name.is_empty() {
            self.studio.names.remove(identity);
            return;
        }
        if self.studio.names.len() >= MAX_NAMES && !self.studio.names.contains_key(identity) {
            let inputs = &self.inputs;
            self.studio
                .names
                .retain(|id, _| inputs.iter().any(|i| &i.identity == id));
        }
        self.studio.names.insert(identity.to_owned(), name);
    }

    /// The label text of an input: its display name, else its identity.
    pub fn display_name<'a>(&'a self, identity: &'a str) -> &'a str {
        self.studio
            .names
            .get(identity)
            .map_or(identity, String::as_str)
    }

    /// The fonts labels are drawn with (shared by every mixer of a server). Without fonts no
    /// label is drawn.
    pub fn set_fonts(&mut self, fonts: Arc<Fonts>) {
        self.studio.fonts = Some(fonts);
        self.studio.labels.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decor::Overlay;

    fn cfg() -> MixConfig {
        MixConfig {
            width: 320,
            height: 180,
            fps: 10,
            video_kbps: 300,
            background: Rgb(0, 0, 0),
            ..MixConfig::default()
        }
    }

    fn overlay(image: &str, x: i32, y: i32, w: u32, h: u32, z: i32, opacity: f32) -> Overlay {
        Overlay {
            image: image.into(),
            x,
            y,
            w,
            h,
            z,
            opacity,
        }
    }

    #[test]
    fn overlays_are_scaled_once_and_drawn_by_z() {
        let mut m = Mixer::new(MixConfig {
            overlays: vec![
                overlay("white", 20, 20, 64, 32, 5, 1.0),
                overlay("red", 40, 20, 64, 32, 1, 1.0),
                overlay("missing", 0, 0, 32, 32, 9, 1.0),
            ],
            ..cfg()
        })
        .expect("mixer");
        m.set_image(
            "white",
            Some(Image::solid(10, 10, [255, 255, 255, 255]).expect("i")),
        );
        m.set_image(
            "red",
            Some(Image::solid(10, 10, [255, 0, 0, 255]).expect("i")),
        );
        let _ = m.poll(Duration::ZERO);
        let _ = m.poll(Duration::from_millis(300));
        assert_eq!(
            m.studio.pictures.scaled(),
            2,
            "each overlay scaled once for 4 frames"
        );
        let snap = m.snapshot().expect("snapshot");
        // White (z 5) is on top of red (z 1) where they overlap; red shows right of it.
        assert_eq!(snap.mean(0, 40, 20, 44, 32), 235.0);
        let red = Yuv::from_rgb(255, 0, 0);
        assert_eq!(snap.mean(0, 84, 20, 20, 32), f64::from(red.y));
        assert_eq!(snap.mean(0, 0, 60, 320, 120), 16.0, "background elsewhere");
        // Replacing an image rescales it once; removing one skips its overlay.
        m.set_image(
            "red",
            Some(Image::solid(4, 4, [0, 0, 255, 255]).expect("i")),
        );
        let _ = m.poll(Duration::from_millis(500));
        assert_eq!(m.studio.pictures.scaled(), 3);
        m.set_image("white", None);
        let _ = m.poll(Duration::from_millis(600));
        let snap = m.snapshot().expect("snapshot");
        let blue = Yuv::from_rgb(0, 0, 255);
        assert_eq!(snap.mean(0, 40, 20, 64, 32), f64::from(blue.y));
        assert_eq!(snap.mean(0, 20, 20, 20, 32), 16.0);
    }

    #[test]
    fn set_decor_applies_on_the_next_frame_and_validates() {
        let mut m = Mixer::new(cfg()).expect("mixer");
        m.set_image(
            "bg",
            Some(Image::solid(16, 9, [0, 200, 0, 255]).expect("i")),
        );
        let _ = m.poll(Duration::ZERO);
        assert_eq!(m.snapshot().expect("s").mean(0, 0, 0, 320, 180), 16.0);
        m.set_decor(Decor {
            background_image: Some("bg".into()),
            ..Decor::default()
        })
        .expect("decor");
        let _ = m.poll(Duration::from_millis(100));
        let green = Yuv::from_rgb(0, 200, 0);
        let snap = m.snapshot().expect("s");
        assert!((snap.mean(0, 0, 0, 320, 180) - f64::from(green.y)).abs() < 1.0);
        let bad = Decor {
            overlays: vec![overlay("x", 0, 0, 2, 2, 0, 7.0)],
            ..Decor::default()
        };
        assert!(m.set_decor(bad).is_err());
        assert_eq!(m.decor().background_image.as_deref(), Some("bg"));
    }

    #[test]
    fn labels_need_fonts_and_follow_display_names() {
        let mut m = Mixer::new(MixConfig {
            labels: true,
            ..cfg()
        })
        .expect("mixer");
        m.add_input("alice", true);
        let _ = m.poll(Duration::ZERO);
        // No fonts: no label, no panic.
        assert!(m.studio.labels.is_empty());
        let plain = m.snapshot().expect("s");
        m.set_fonts(Arc::new(crate::text::tests::fonts()));
        let _ = m.poll(Duration::from_millis(100));
        let with = m.snapshot().expect("s");
        assert_ne!(plain, with, "the placeholder tile got a label");
        assert_eq!(m.studio.labels.renders(), 1);
        assert_eq!(m.display_name("alice"), "alice");
        m.set_display_name("alice", "  Alice 主播  ");
        assert_eq!(m.display_name("alice"), "Alice 主播");
        let _ = m.poll(Duration::from_millis(300));
        assert_eq!(
            m.studio.labels.renders(),
            2,
            "rendered once for three frames"
        );
        m.set_display_name("alice", "");
        assert_eq!(m.display_name("alice"), "alice");
    }
}
