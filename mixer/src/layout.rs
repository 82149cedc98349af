//! Layouts: templates and custom regions, and their geometry on the canvas.
//!
//! [`compute_regions`] is a pure function from a [`Layout`], the canvas size and the ordered
//! list of participants to the regions drawn. All coordinates are even so that I420 chroma
//! planes line up, and every region lies inside the canvas.

use serde::{Deserialize, Serialize};

/// Maximum number of tiles a template shows (the first ones in participant order).
pub const MAX_TILES: usize = 9;

/// A layout template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// Equal tiles side by side in one row (one column on a portrait canvas).
    SideBySide,
    /// An equal grid of up to 9 tiles.
    Grid,
    /// The speaker large; the others in a strip along the bottom.
    Speaker,
    /// The host full canvas; the guests small on top, bottom right.
    Pip,
}

/// How a source picture fills its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Scale to cover the whole region, cropping the overflow (centred).
    #[default]
    Crop,
    /// Scale to fit inside the region, bars of background colour around.
    Letterbox,
}

/// A region given explicitly in canvas pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSpec {
    /// Participant shown in the region.
    pub identity: String,
    /// Left edge in canvas pixels.
    pub x: i32,
    /// Top edge in canvas pixels.
    pub y: i32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
    /// Stacking order: higher is drawn on top.
    #[serde(default)]
    pub z: i32,
    /// How the source fills the region (default: crop to fill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
}

/// A layout: a template or custom regions.
///
/// JSON form (CONTRACT): `{"template": "grid"}` or `{"regions": [{"identity", "x", "y", "w",
/// "h", "z"}]}`; a bare string `"grid"` is accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Layout {
    /// A template applied to the current participants.
    Template {
        /// The template.
        template: Template,
    },
    /// Explicit regions.
    Regions {
        /// The regions.
        regions: Vec<RegionSpec>,
    },
    /// A bare template name (`"grid"`).
    Bare(Template),
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Template {
            template: Template::Grid,
        }
    }
}

impl Layout {
    /// A template layout.
    pub fn template(template: Template) -> Self {
        Layout::Template { template }
    }
}

/// One participant as the layout sees it, in display order (host first, then join order).
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutParticipant<'a> {
    /// Identity.
    pub identity: &'a str,
    /// Whether the participant is a host.
    pub is_host: bool,
}

/// A region placed on the canvas, clipped and even-aligned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Participant shown.
    pub identity: String,
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width (even, > 0).
    pub w: u32,
    /// Height (even, > 0).
    pub h: u32,
    /// Stacking order.
    pub z: i32,
    /// Fit mode.
    #[serde(skip)]
    pub fit: Fit,
}

fn even_down(v: u32) -> u32 {
    v & !1
}

/// Clips an arbitrary rectangle to the canvas and aligns it to even pixels.
fn clip(x: i64, y: i64, w: i64, h: i64, cw: u32, ch: u32) -> Option<(u32, u32, u32, u32)> {
    let x0 = x.clamp(0, i64::from(cw));
    let y0 = y.clamp(0, i64::from(ch));
    let x1 = x.saturating_add(w).clamp(0, i64::from(cw));
    let y1 = y.saturating_add(h).clamp(0, i64::from(ch));
    let x0 = even_down(u32::try_from(x0).ok()?);
    let y0 = even_down(u32::try_from(y0).ok()?);
    let x1 = even_down(u32::try_from(x1).ok()?);
    let y1 = even_down(u32::try_from(y1).ok()?);
    (x1 > x0 && y1 > y0).then(|| (x0, y0, x1 - x0, y1 - y0))
}

#[allow(clippy::too_many_arguments)]
fn rect(
    identity: &str,
    x: i64,
    y: i64,
    w: i64,
    h: i64,
    z: i32,
    fit: Fit,
    cw: u32,
    ch: u32,
) -> Option<Region> {
    let (x, y, w, h) = clip(x, y, w, h, cw, ch)?;
    Some(Region {
        identity: identity.to_owned(),
        x,
        y,
        w,
        h,
        z,
        fit,
    })
}

/// Computes the regions of `layout` on a `cw` x `ch` canvas.
///
/// `participants` is in display order; `speaker` is the identity to show large in the
/// `speaker` template and full canvas in `pip` (usually the host or the dominant speaker; the
/// first participant when `None` or unknown). Regions are returned sorted by `z` (stable), so
/// drawing them in order paints higher `z` on top. Custom regions naming an identity that is
/// not a participant are dropped.
pub fn compute_regions(
    layout: &Layout,
    cw: u32,
    ch: u32,
    participants: &[LayoutParticipant<'_>],
    speaker: Option<&str>,
    fit: Fit,
) -> Vec<Region> {
    let mut out = match layout {
        Layout::Regions { regions } => regions
            .iter()
            .filter(|r| participants.iter().any(|p| p.identity == r.identity))
            .filter_map(|r| {
                rect(
                    &r.identity,
                    i64::from(r.x),
                    i64::from(r.y),
                    i64::from(r.w),
                    i64::from(r.h),
                    r.z,
                    r.fit.unwrap_or(fit),
                    cw,
                    ch,
                )
            })
            .collect(),
        Layout::Template { template } | Layout::Bare(template) => {
            template_regions(*template, cw, ch, participants, speaker, fit)
        }
    };
    out.sort_by_key(|r| r.z);
    out
}

fn template_regions(
    template: Template,
    cw: u32,
    ch: u32,
    participants: &[LayoutParticipant<'_>],
    speaker: Option<&str>,
    fit: Fit,
) -> Vec<Region> {
    let shown: Vec<&str> = participants
        .iter()
        .take(MAX_TILES)
        .map(|p| p.identity)
        .collect();
    let n = shown.len();
    if n == 0 || cw < 2 || ch < 2 {
        return Vec::new();
    }
    let (w, h) = (i64::from(cw), i64::from(ch));
    let portrait = ch > cw;
    let mk =
        |id: &str, x: i64, y: i64, rw: i64, rh: i64, z: i32| rect(id, x, y, rw, rh, z, fit, cw, ch);
    match template {
        Template::Grid => {
            let n64 = n as i64;
            let mut major = 1i64;
            while major * major < n64 {
                major += 1;
            }
            let minor = (n64 + major - 1) / major;
            let (cols, rows) = if portrait {
                (minor, major)
            } else {
                (major, minor)
            };
            let tw = w / cols;
            let th = h / rows;
            let mut out = Vec::with_capacity(n);
            for (i, id) in shown.iter().enumerate() {
                let i = i as i64;
                let row = i / cols;
                let col = i % cols;
                // Centre an incomplete last row.
                let in_row = if row == rows - 1 {
                    n64 - row * cols
                } else {
                    cols
                };
                let x0 = (w - in_row * tw) / 2;
                out.extend(mk(id, x0 + col * tw, row * th, tw, th, 0));
            }
            out
        }
        Template::SideBySide => {
            let n64 = n as i64;
            shown
                .iter()
                .enumerate()
                .filter_map(|(i, id)| {
                    let i = i as i64;
                    if portrait {
                        let th = h / n64;
                        mk(id, 0, i * th, w, th, 0)
                    } else {
                        let tw = w / n64;
                        mk(id, i * tw, 0, tw, h, 0)
                    }
                })
                .collect()
        }
        Template::Speaker | Template::Pip => {
            let main = speaker
                .and_then(|s| shown.iter().position(|id| *id == s))
                .unwrap_or(0);
            let main_id = shown.get(main).copied().unwrap_or_default();
            let others: Vec<&str> = shown
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != main)
                .map(|(_, id)| *id)
                .collect();
            let k = others.len() as i64;
            let mut out = Vec::with_capacity(n);
            if template == Template::Speaker {
                if k == 0 {
                    out.extend(mk(main_id, 0, 0, w, h, 0));
                    return out;
                }
                // Strip along the bottom, a fifth of the height; tiles keep the canvas aspect.
                let sh = if portrait { h / 6 } else { h / 5 };
                let tw = (sh * w / h).min(w / k);
                let th = (tw * h / w).min(sh);
                out.extend(mk(main_id, 0, 0, w, h - sh, 0));
                let x0 = (w - k * tw) / 2;
                let y0 = h - sh + (sh - th) / 2;
                for (i, id) in others.iter().enumerate() {
                    out.extend(mk(id, x0 + i as i64 * tw, y0, tw, th, 0));
                }
            } else {
                out.extend(mk(main_id, 0, 0, w, h, 0));
                let margin = (w.min(h) / 40).max(2);
                let mut tw = if portrait { w / 3 } else { w / 4 };
                let mut th = tw * h / w;
                let mut per_row = ((w - margin) / (tw + margin)).max(1);
                // Shrink the tiles until every guest fits on the canvas.
                while tw > 8 && ((k + per_row - 1) / per_row) * (th + margin) > h - margin {
                    tw = tw * 4 / 5;
                    th = tw * h / w;
                    per_row = ((w - margin) / (tw + margin)).max(1);
                }
                for (i, id) in others.iter().enumerate() {
                    let i = i as i64;
                    let row = i / per_row;
                    let col = i % per_row;
                    let x = w - (col + 1) * (tw + margin);
                    let y = h - (row + 1) * (th + margin);
                    out.extend(mk(id, x, y, tw, th, 1));
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    fn parts(names: &[String]) -> Vec<LayoutParticipant<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, s)| LayoutParticipant {
                identity: s,
                is_host: i == 0,
            })
            .collect()
    }

    fn check_common(regions: &[Region], cw: u32, ch: u32) {
        for r in regions {
            assert!(r.w > 0 && r.h > 0);
            assert_eq!(r.x % 2, 0);
            assert_eq!(r.y % 2, 0);
            assert_eq!(r.w % 2, 0);
            assert_eq!(r.h % 2, 0);
            assert!(r.x + r.w <= cw, "{r:?}");
            assert!(r.y + r.h <= ch, "{r:?}");
        }
    }

    fn overlap(a: &Region, b: &Region) -> bool {
        a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
    }

    #[test]
    fn every_template_1_to_9_landscape_and_portrait() {
        for (cw, ch) in [
            (1280, 720),
            (720, 1280),
            (320, 180),
            (1920, 1080),
            (1080, 1920),
        ] {
            for n in 0..=9 {
                let names = people(n);
                let ps = parts(&names);
                for t in [
                    Template::Grid,
                    Template::SideBySide,
                    Template::Speaker,
                    Template::Pip,
                ] {
                    let rs = compute_regions(&Layout::template(t), cw, ch, &ps, None, Fit::Crop);
                    assert_eq!(rs.len(), n, "{t:?} n={n} {cw}x{ch}");
                    check_common(&rs, cw, ch);
                    // Every participant appears exactly once.
                    for name in &names {
                        assert_eq!(rs.iter().filter(|r| &r.identity == name).count(), 1);
                    }
                    if t != Template::Pip {
                        for (i, a) in rs.iter().enumerate() {
                            for b in rs.iter().skip(i + 1) {
                                assert!(!overlap(a, b), "{t:?} n={n} {a:?} {b:?}");
                            }
                        }
                    } else {
                        // Guests are on top of the host and inside it.
                        for g in rs.iter().filter(|r| r.identity != "p0") {
                            assert_eq!(g.z, 1);
                            for h in rs
                                .iter()
                                .filter(|r| r.identity != "p0" && r.identity != g.identity)
                            {
                                assert!(!overlap(g, h), "pip guests overlap {g:?} {h:?}");
                            }
                        }
                        if n > 0 {
                            assert_eq!(rs.first().map(|r| r.identity.as_str()), Some("p0"));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn grid_geometry() {
        let names = people(4);
        let rs = compute_regions(
            &Layout::default(),
            1280,
            720,
            &parts(&names),
            None,
            Fit::Crop,
        );
        let got: Vec<(u32, u32, u32, u32)> = rs.iter().map(|r| (r.x, r.y, r.w, r.h)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 640, 360),
                (640, 0, 640, 360),
                (0, 360, 640, 360),
                (640, 360, 640, 360)
            ]
        );
        // 3 in landscape: 2 columns, 2 rows, the last row centred.
        let names = people(3);
        let rs = compute_regions(
            &Layout::default(),
            1280,
            720,
            &parts(&names),
            None,
            Fit::Crop,
        );
        let got: Vec<(u32, u32)> = rs.iter().map(|r| (r.x, r.y)).collect();
        assert_eq!(got, vec![(0, 0), (640, 0), (320, 360)]);
        // 2 in portrait: stacked.
        let names = people(2);
        let rs = compute_regions(
            &Layout::default(),
            720,
            1280,
            &parts(&names),
            None,
            Fit::Crop,
        );
        let got: Vec<(u32, u32, u32, u32)> = rs.iter().map(|r| (r.x, r.y, r.w, r.h)).collect();
        assert_eq!(got, vec![(0, 0, 720, 640), (0, 640, 720, 640)]);
        // 1: full canvas.
        let names = people(1);
        let rs = compute_regions(
            &Layout::default(),
            1280,
            720,
            &parts(&names),
            None,
            Fit::Crop,
        );
        assert_eq!((rs[0].w, rs[0].h), (1280, 720));
    }

    #[test]
    fn grid_caps_at_nine() {
        let names = people(12);
        let rs = compute_regions(
            &Layout::default(),
            1280,
            720,
            &parts(&names),
            None,
            Fit::Crop,
        );
        assert_eq!(rs.len(), 9);
    }

    #[test]
    fn speaker_uses_given_speaker() {
        let names = people(3);
        let rs = compute_regions(
            &Layout::template(Template::Speaker),
            1280,
            720,
            &parts(&names),
            Some("p2"),
            Fit::Crop,
        );
        let big = rs.iter().max_by_key(|r| r.w * r.h).expect("regions");
        assert_eq!(big.identity, "p2");
        assert_eq!((big.w, big.h), (1280, 576));
    }

    #[test]
    fn custom_regions_clip_and_filter() {
        let layout: Layout = serde_json::from_str(
            r#"{"regions":[{"identity":"p0","x":-10,"y":5,"w":101,"h":2000,"z":2},
                          {"identity":"ghost","x":0,"y":0,"w":10,"h":10,"z":0},
                          {"identity":"p1","x":100,"y":100,"w":50,"h":50,"z":1,"fit":"letterbox"}]}"#,
        )
        .expect("parse");
        let names = people(2);
        let rs = compute_regions(&layout, 320, 180, &parts(&names), None, Fit::Crop);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].identity, "p1");
        assert_eq!(rs[0].fit, Fit::Letterbox);
        assert_eq!(
            (rs[1].x, rs[1].y, rs[1].w, rs[1].h, rs[1].z),
            (0, 4, 90, 176, 2)
        );
        check_common(&rs, 320, 180);
    }

    #[test]
    fn serde_forms() {
        let l: Layout = serde_json::from_str(r#"{"template":"side_by_side"}"#).expect("t");
        assert_eq!(l, Layout::template(Template::SideBySide));
        let l: Layout = serde_json::from_str(r#""pip""#).expect("bare");
        assert_eq!(l, Layout::Bare(Template::Pip));
        assert!(serde_json::from_str::<Layout>(r#"{"template":"nope"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Layout::default()).expect("ser"),
            r#"{"template":"grid"}"#
        );
    }
}
