//! Studio decor end to end: the real mixer on a simulated clock with synthetic co-hosts, a
//! background image, a 50 % logo overlay and labels; the program decoded by ffmpeg and its
//! pictures checked, before and after a live `set_decor`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use mixer::compose::{I420Frame, Yuv};
use mixer::layout::{Layout, RegionSpec};
use mixer::text::{Fonts, DEFAULT_FONT_PATHS};
use mixer::{decode_image, Decor, MixConfig, Overlay, Rgb};

const W: u32 = 640;
const H: u32 = 360;
/// The two tiles: the top half of the canvas; the bottom half shows the background image.
const TILES: [(u32, u32, u32, u32); 2] = [(0, 0, 320, 180), (320, 0, 320, 180)];

fn png(w: u32, h: u32, rgba: [u8; 4]) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(w, h, image::Rgba(rgba));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// The fonts the server uses; the tests need them installed (`scripts/deps.sh`).
fn fonts() -> Arc<Fonts> {
    let data = DEFAULT_FONT_PATHS
        .iter()
        .map(|p| {
            std::fs::read(p).unwrap_or_else(|e| {
                panic!("font {p}: {e} (install fonts-dejavu-core and fonts-wqy-microhei)")
            })
        })
        .collect();
    Arc::new(Fonts::from_bytes(data).unwrap())
}

fn input(id: &str, host: bool, color: Yuv) -> TestInput {
    TestInput {
        identity: id.into(),
        is_host: host,
        video: encode_pattern(320, 180, color, 95, 30)
            .into_iter()
            .map(Some)
            .collect(),
        tone: None,
        opus: false,
    }
}

/// Luma pixels brighter than any decor colour but the labels' white text, in a rectangle.
fn bright(f: &I420Frame, x: u32, y: u32, w: u32, h: u32) -> usize {
    let (luma, pw, _) = f.plane(0);
    (y..y + h)
        .flat_map(|r| (x..x + w).map(move |c| (r * pw + c) as usize))
        .filter(|&i| luma[i] > 200)
        .count()
}

fn blend(a: Yuv, b: Yuv) -> Yuv {
    let m = |x: u8, y: u8| (u16::from(x) + u16::from(y)).div_ceil(2) as u8;
    Yuv {
        y: m(a.y, b.y),
        u: m(a.u, b.u),
        v: m(a.v, b.v),
    }
}

#[test]
fn decor_in_the_decoded_program_and_live_changes() {
    let logo = Overlay {
        image: "logo".into(),
        x: 400,
        y: 220,
        w: 160,
        h: 80,
        z: 0,
        opacity: 0.5,
    };
    let cfg = MixConfig {
        width: W,
        height: H,
        fps: 30,
        video_kbps: 2000,
        gop_s: 1.0,
        background: Rgb(0, 0, 0),
        layout: Layout::Regions {
            regions: ["alice", "bob"]
                .iter()
                .zip(TILES)
                .map(|(id, (x, y, w, h))| RegionSpec {
                    identity: (*id).into(),
                    x: x as i32,
                    y: y as i32,
                    w,
                    h,
                    z: 0,
                    fit: None,
                })
                .collect(),
        },
        overlays: vec![logo.clone()],
        background_image: Some("studio".into()),
        labels: true,
        ..MixConfig::default()
    };
    let (red, blue) = (Yuv::from_rgb(200, 40, 40), Yuv::from_rgb(40, 40, 200));
    let inputs = [input("alice", true, red), input("bob", false, blue)];
    let logo_img = decode_image(&png(64, 32, [255, 0, 0, 255])).unwrap();
    let studio_img = decode_image(&jpeg(64, 36, [0, 200, 0])).unwrap();
    let fonts = fonts();
    let dir = tempfile::tempdir().unwrap();
    let moved = Overlay {
        x: 40,
        ..logo.clone()
    };
    let res = run(cfg, &inputs, 90, dir.path(), "decor", |m, t| {
        if t == 0 {
            m.set_fonts(Arc::clone(&fonts));
            m.set_image("logo", Some(logo_img.clone()));
            m.set_image("studio", Some(studio_img.clone()));
            m.set_display_name("bob", "主播小美");
        }
        // Frame 45 is due at 1500 ms: the decor changes just before it.
        if t == 1490 {
            m.set_decor(Decor {
                overlays: vec![moved.clone()],
                background_image: Some("studio".into()),
                labels: false,
            })
            .unwrap();
        }
    });
    assert_eq!(probe(&res.flv), (W, H, 90));
    let frames = decode_frames(&res.flv, W, H);
    assert_eq!(frames.len(), 90);
    let green = Yuv::from_rgb(0, 200, 0);
    let logo_color = blend(Yuv::from_rgb(255, 0, 0), green);

    // Before the change (frame 40): the tiles, the background image below them, the logo at
    // half opacity over it, a label at the bottom left of each tile.
    let f = &frames[40];
    assert_color(f, 8, 30, 300, 100, red, 8.0, "alice's tile");
    assert_color(f, 330, 30, 300, 100, blue, 8.0, "bob's tile");
    assert_color(f, 8, 196, 380, 150, green, 6.0, "background image");
    assert_color(
        f,
        410,
        230,
        140,
        60,
        logo_color,
        6.0,
        "50 % red logo over green",
    );
    assert_color(f, 50, 230, 140, 60, green, 6.0, "where the logo will move");
    for (x, y, w, h) in TILES {
        let label = bright(f, x, y + h / 2, w / 2, h / 2);
        assert!(label >= 20, "label pixels in the tile at {x}: {label}");
        assert!(
            bright(f, x + w / 2, y + h / 2, w / 2, h / 2) <= 2,
            "bottom right of {x}"
        );
    }
    assert_eq!(
        bright(f, 0, 180, W, 180),
        0,
        "bright pixels outside the tiles"
    );

    // After the change (frame 50): the logo moved, the old place shows the background, and
    // the labels are gone.
    let f = &frames[50];
    assert_color(f, 50, 230, 140, 60, logo_color, 6.0, "moved logo");
    assert_color(f, 410, 230, 140, 60, green, 6.0, "old logo place");
    for (x, y, w, h) in TILES {
        let label = bright(f, x, y + h / 2, w, h / 2);
        assert!(label <= 2, "a label left in the tile at {x}: {label}");
    }
    assert_eq!(bright(f, 0, 180, W, 180), 0);
}

#[test]
fn the_driver_handle_sets_images_decor_names_and_fonts() {
    use mixer::driver::MixerDriver;
    use mixer::{Image, MixerError};
    let cfg = MixConfig {
        width: 160,
        height: 90,
        fps: 20,
        video_kbps: 200,
        background: Rgb(0, 0, 0),
        ..MixConfig::default()
    };
    let d = MixerDriver::spawn(cfg, |_| {}).unwrap();
    d.add_input("a", true).unwrap();
    d.set_image(
        "logo",
        Some(Image::solid(8, 8, [255, 255, 255, 255]).unwrap()),
    )
    .unwrap();
    let logo = Overlay {
        image: "logo".into(),
        x: 0,
        y: 0,
        w: 40,
        h: 20,
        z: 0,
        opacity: 1.0,
    };
    let bad = Decor {
        overlays: vec![Overlay {
            opacity: -1.0,
            ..logo.clone()
        }],
        ..Decor::default()
    };
    assert!(matches!(
        d.set_decor(bad),
        Err(MixerError::InvalidConfig(_))
    ));
    d.set_fonts(fonts()).unwrap();
    d.set_display_name("a", "Alice").unwrap();
    d.set_decor(Decor {
        overlays: vec![logo],
        background_image: None,
        labels: true,
    })
    .unwrap();
    // The worker applies commands before its next picture; wait for one showing the logo.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let snap = loop {
        if let Some(s) = d.snapshot().unwrap() {
            if s.mean(0, 0, 0, 40, 20) == 235.0 {
                break s;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no picture with the logo"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The placeholder tile (the whole canvas) carries its label at the bottom left.
    assert!(bright(&snap, 0, 45, 80, 45) > 10, "label");
    d.set_image("logo", None).unwrap();
    d.stop();
}
