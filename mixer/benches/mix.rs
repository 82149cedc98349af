//! Mixer benchmarks: one 1280x720 program frame (decode of one access unit per input +
//! compose + encode) with 2, 4 and 9 inputs of 640x360, its parts separately, and one 20 ms
//! audio tick (jitter buffer + Opus decode per input, mix, limiter, AAC + Opus encode).
//!
//! `studio_1280x720`: the same program frame (2, 3, 4 inputs) plain and with the studio decor
//! (a 320x120 logo with alpha, labels, a background image, all of them), and
//! `studio_decor_only`: just the decor's per-frame work on a composed canvas.
//!
//! Run: `cargo bench -p mixer --bench mix` (`-- studio` for the decor only)
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mixer::audio::{AacEncoder, JitterBuffer, Limiter, OpusEncoder, BLOCK_FRAMES, CHANNELS};
use mixer::compose::{Compositor, I420Frame, Yuv};
use mixer::decor::{blend, BackgroundCache, PictureCache};
use mixer::encode::VideoEncoder;
use mixer::layout::{compute_regions, Fit, Layout, LayoutParticipant};
use mixer::text::{label_font_px, Fonts, LabelCache, DEFAULT_FONT_PATHS};
use mixer::video::InputDecoder;
use mixer::{Decor, Image, MixConfig, Mixer, MixerOutput, Overlay, Rgb};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
};
use openh264::OpenH264API;

/// 60 access units of a moving 640x360 test pattern, IDR every 30.
fn input_stream(seed: u32) -> Vec<Vec<u8>> {
    let cfg = EncoderConfig::new()
        .bitrate(BitRate::from_bps(1_000_000))
        .max_frame_rate(FrameRate::from_hz(30.0))
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(30));
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).unwrap();
    (0..60u32)
        .map(|i| {
            let mut f = I420Frame::new(640, 360, Yuv::from_rgb((seed * 40) as u8, 90, 160));
            // Moving bars and a gradient-ish block keep the encoder busy.
            for b in 0..8u32 {
                let x = ((i * 6 + b * 80 + seed * 13) % 600) & !1;
                f.fill_rect(
                    x,
                    b * 44,
                    40,
                    40,
                    Yuv::from_rgb((b * 30) as u8, 200, (i * 4) as u8),
                );
            }
            enc.encode(&f).unwrap().to_vec()
        })
        .collect()
}

fn program_frame(c: &mut Criterion) {
    let streams: Vec<Vec<Vec<u8>>> = (0..9).map(input_stream).collect();
    let mut g = c.benchmark_group("program_frame_1280x720");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for n in [2usize, 4, 9] {
        g.bench_with_input(BenchmarkId::new("decode+compose+encode", n), &n, |b, &n| {
            let mut m = Mixer::new(MixConfig::default()).unwrap();
            for k in 0..n {
                m.add_input(&format!("p{k}"), k == 0);
            }
            let mut frame = 0u64;
            b.iter(|| {
                let t = Duration::from_nanos(frame * 1_000_000_000 / 30);
                for (k, s) in streams.iter().take(n).enumerate() {
                    let au = &s[(frame % 60) as usize];
                    m.push_video(&format!("p{k}"), au, 0, t);
                }
                let out = m.poll(t);
                frame += 1;
                out.iter()
                    .filter(|o| matches!(o, MixerOutput::Video(_)))
                    .count()
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parts");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("decode_640x360", |b| {
        let mut d = InputDecoder::new();
        let mut i = 0usize;
        b.iter(|| {
            let o = d.decode(&streams[0][i % 60]);
            i += 1;
            o
        });
    });
    let mut pics = Vec::new();
    for s in &streams {
        let mut d = InputDecoder::new();
        for au in s.iter().take(10) {
            d.decode(au);
        }
        pics.push(d.picture().cloned().unwrap());
    }
    for n in [2usize, 4, 9] {
        g.bench_with_input(BenchmarkId::new("compose_1280x720", n), &n, |b, &n| {
            let names: Vec<String> = (0..n).map(|k| format!("p{k}")).collect();
            let parts: Vec<LayoutParticipant<'_>> = names
                .iter()
                .map(|s| LayoutParticipant {
                    identity: s,
                    is_host: false,
                })
                .collect();
            let regions = compute_regions(&Layout::default(), 1280, 720, &parts, None, Fit::Crop);
            let bg = Yuv::from_rgb(16, 16, 16);
            let mut canvas = I420Frame::new(1280, 720, bg);
            let mut comp = Compositor::new();
            b.iter(|| {
                canvas.fill_rect(0, 0, 1280, 720, bg);
                for (r, p) in regions.iter().zip(&pics) {
                    comp.draw(&mut canvas, p, r, Fit::Crop, bg);
                }
            });
        });
    }
    // Scaler choice: fast_image_resize (SIMD convolution) vs the scalar bilinear, on the
    // luma plane of a 640x360 picture into a 2-up tile (crop + 2x up) and a 9-grid tile.
    let (y, sw, sh) = pics[0].plane(0);
    for (name, dw, dh, crop) in [
        ("up_640x720", 640u32, 720u32, (160.0, 0.0, 320.0, 360.0)),
        ("down_426x240", 426, 240, (0.0, 0.0, 640.0, 360.0)),
    ] {
        let mut dst = vec![0u8; (dw * dh) as usize];
        g.bench_function(format!("scale_fir_bilinear_{name}"), |b| {
            use fast_image_resize::images::{TypedImage, TypedImageRef};
            use fast_image_resize::pixels::U8;
            use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
            let mut r = Resizer::new();
            b.iter(|| {
                let src = TypedImageRef::<U8>::from_buffer(sw, sh, y).unwrap();
                let mut d = TypedImage::<U8>::from_buffer(dw, dh, &mut dst).unwrap();
                let o = ResizeOptions::new()
                    .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
                    .crop(crop.0, crop.1, crop.2, crop.3);
                r.resize_typed(&src, &mut d, &o).unwrap();
            });
        });
        let mut dst = vec![0u8; (dw * dh) as usize];
        g.bench_function(format!("scale_fir_interpolation_{name}"), |b| {
            use fast_image_resize::images::{TypedImage, TypedImageRef};
            use fast_image_resize::pixels::U8;
            use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
            let mut r = Resizer::new();
            b.iter(|| {
                let src = TypedImageRef::<U8>::from_buffer(sw, sh, y).unwrap();
                let mut d = TypedImage::<U8>::from_buffer(dw, dh, &mut dst).unwrap();
                let o = ResizeOptions::new()
                    .resize_alg(ResizeAlg::Interpolation(FilterType::Bilinear))
                    .crop(crop.0, crop.1, crop.2, crop.3);
                r.resize_typed(&src, &mut d, &o).unwrap();
            });
        });
        if dw as f64 == 2.0 * crop.2 && dh as f64 == 2.0 * crop.3 {
            let mut dst = vec![0u8; (dw * dh) as usize];
            let mut rows = Vec::new();
            let c = (
                crop.0 as usize,
                crop.1 as usize,
                crop.2 as usize,
                crop.3 as usize,
            );
            g.bench_function(format!("scale_own_exact2x_{name}"), |b| {
                b.iter(|| {
                    mixer::compose::upscale2x_plane(
                        y,
                        sw as usize,
                        sh as usize,
                        c,
                        &mut dst,
                        dw as usize,
                        &mut rows,
                    )
                });
            });
        }
        let mut dst = vec![0u8; (dw * dh) as usize];
        g.bench_function(format!("scale_own_bilinear_{name}"), |b| {
            b.iter(|| mixer::compose::scale_plane_bilinear(y, sw, sh, crop, &mut dst, dw, dh));
        });
    }
    g.bench_function("encode_1280x720", |b| {
        let mut enc = VideoEncoder::new(30, 2500).unwrap();
        let mut canvas = I420Frame::new(1280, 720, Yuv::from_rgb(16, 16, 16));
        let mut comp = Compositor::new();
        let regions = compute_regions(
            &Layout::default(),
            1280,
            720,
            &[LayoutParticipant {
                identity: "a",
                is_host: true,
            }],
            None,
            Fit::Crop,
        );
        let mut i = 0u64;
        b.iter(|| {
            // Change the picture each frame so the encoder has real work.
            comp.draw(
                &mut canvas,
                &pics[(i % 9) as usize],
                &regions[0],
                Fit::Crop,
                Yuv::from_rgb(0, 0, 0),
            );
            let r = enc.encode(&canvas, i * 33, i.is_multiple_of(60)).unwrap();
            i += 1;
            r.map(|e| e.data.len())
        });
    });
    g.finish();
}

fn audio_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("audio_tick_20ms");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut enc = OpusEncoder::new(64).unwrap();
    let packets: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let pcm: Vec<f32> = (0..BLOCK_FRAMES * CHANNELS)
                .map(|k| 0.3 * ((i * BLOCK_FRAMES + k / 2) as f32 * 0.05).sin())
                .collect();
            enc.encode(&pcm).unwrap()
        })
        .collect();
    for n in [2usize, 4, 9] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut jbs: Vec<JitterBuffer> = (0..n)
                .map(|_| JitterBuffer::new(Duration::from_millis(40)))
                .collect();
            let mut aac = AacEncoder::new(128).unwrap();
            let mut opus = OpusEncoder::new(128).unwrap();
            let mut lim = Limiter::default();
            let mut mix = vec![0.0f32; BLOCK_FRAMES * CHANNELS];
            let mut buf = vec![0.0f32; BLOCK_FRAMES * CHANNELS];
            let mut tick = 0u64;
            b.iter(|| {
                let now = Duration::from_millis(tick * 20);
                mix.fill(0.0);
                for jb in &mut jbs {
                    let p = &packets[(tick % 50) as usize];
                    jb.push_opus(p, (tick as u32).wrapping_mul(960), now);
                    jb.pull(&mut buf, now + Duration::from_millis(40));
                    for (m, s) in mix.iter_mut().zip(&buf) {
                        *m += *s;
                    }
                }
                lim.process(&mut mix);
                let o = opus.encode(&mix);
                let a = aac.encode(&mix);
                tick += 1;
                (o.map(|x| x.len()), a.len())
            });
        });
    }
    g.finish();
}

/// A 320x120 logo: an opaque rounded plate with soft (anti-aliased) edges, transparent
/// corners, a translucent band across it.
fn logo_image() -> Image {
    let (w, h) = (320u32, 120u32);
    let mut px = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (
                (f64::from(x) - 159.5).abs() - 130.0,
                (f64::from(y) - 59.5).abs() - 30.0,
            );
            let d = (dx.max(0.0).hypot(dy.max(0.0)) - 28.0).clamp(-1.0, 1.0);
            let a = ((0.5 - d / 2.0) * 255.0) as u8;
            let a = if (50..70).contains(&y) { a / 2 } else { a };
            px.extend_from_slice(&[230, (x % 256) as u8, 40, a]);
        }
    }
    Image::from_rgba(w, h, px).unwrap()
}

/// A 1920x1080 gradient (scaled down to the canvas once).
fn background_image() -> Image {
    let (w, h) = (1920u32, 1080u32);
    let px = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x / 8) as u8, (y / 5) as u8, 120, 255]))
        .collect();
    Image::from_rgba(w, h, px).unwrap()
}

fn bench_fonts() -> Arc<Fonts> {
    let data = DEFAULT_FONT_PATHS
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("font {p}: {e}")))
        .collect();
    Arc::new(Fonts::from_bytes(data).unwrap())
}

fn decor_variants() -> Vec<(&'static str, Decor)> {
    let logo = Overlay {
        image: "logo".into(),
        x: 940,
        y: 20,
        w: 320,
        h: 120,
        z: 0,
        opacity: 0.9,
    };
    let all = Decor {
        overlays: vec![logo.clone()],
        background_image: Some("studio".into()),
        labels: true,
    };
    vec![
        ("plain", Decor::default()),
        (
            "logo",
            Decor {
                overlays: vec![logo],
                ..Decor::default()
            },
        ),
        (
            "labels",
            Decor {
                labels: true,
                ..Decor::default()
            },
        ),
        (
            "background",
            Decor {
                background_image: Some("studio".into()),
                ..Decor::default()
            },
        ),
        ("all", all),
    ]
}

/// A mixer at 1280x720 with `n` inputs, the images, fonts and names, and `decor`.
fn studio_mixer(n: usize, decor: &Decor, logo: &Image, bg: &Image, fonts: &Arc<Fonts>) -> Mixer {
    let mut m = Mixer::new(MixConfig::default()).unwrap();
    m.set_image("logo", Some(logo.clone()));
    m.set_image("studio", Some(bg.clone()));
    m.set_image(
        "flat",
        Some(Image::solid(1920, 1080, [16, 16, 16, 255]).unwrap()),
    );
    m.set_fonts(Arc::clone(fonts));
    m.set_decor(decor.clone()).unwrap();
    for k in 0..n {
        m.add_input(&format!("p{k}"), k == 0);
        m.set_display_name(&format!("p{k}"), &format!("Co-host number {k}"));
    }
    m
}

/// One program frame: an access unit per input (30 fps, their own RTP clock), then the poll
/// that decodes, composes and encodes it.
fn studio_frame(m: &mut Mixer, streams: &[Vec<Vec<u8>>], n: usize, frame: &mut u64) -> usize {
    let t = Duration::from_nanos(*frame * 1_000_000_000 / 30);
    for (k, s) in streams.iter().take(n).enumerate() {
        let au = &s[(*frame % 60) as usize];
        m.push_video(&format!("p{k}"), au, (*frame as u32).wrapping_mul(3000), t);
    }
    let out = m.poll(t);
    *frame += 1;
    out.iter()
        .filter(|o| matches!(o, MixerOutput::Video(_)))
        .count()
}

/// The variants' mixers run frame by frame in turn (so a machine shared with other work
/// slows them alike); prints each variant's mean and median frame time and its ratio to
/// plain.
fn studio_interleaved(streams: &[Vec<Vec<u8>>], logo: &Image, bg: &Image, fonts: &Arc<Fonts>) {
    const FRAMES: usize = 240;
    println!("studio interleaved: {FRAMES} frames per variant, 1280x720, 30 fps inputs");
    for n in [2usize, 3, 4] {
        // Two more variants doing the same mixer work but leaving the picture as plain (so
        // the encoder's work is unchanged): the logo at opacity 1/255 (every pixel blended,
        // none visibly changed) and a background image of the background colour.
        let mut variants = decor_variants();
        let logo_invisible = Decor {
            overlays: vec![Overlay {
                opacity: 1.0 / 255.0,
                ..variants[1].1.overlays[0].clone()
            }],
            ..Decor::default()
        };
        variants.push(("logo_1/255", logo_invisible));
        variants.push((
            "bg_flat",
            Decor {
                background_image: Some("flat".into()),
                ..Decor::default()
            },
        ));
        let mut mixers: Vec<(Mixer, u64, Vec<f64>)> = variants
            .iter()
            .map(|(_, d)| (studio_mixer(n, d, logo, bg, fonts), 0u64, Vec::new()))
            .collect();
        for (m, frame, _) in &mut mixers {
            for _ in 0..30 {
                studio_frame(m, streams, n, frame);
            }
        }
        for i in 0..FRAMES {
            let k = mixers.len();
            for j in 0..k {
                let (m, frame, times) = &mut mixers[(i + j) % k];
                let t0 = std::time::Instant::now();
                studio_frame(m, streams, n, frame);
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let stats: Vec<(f64, f64)> = mixers
            .iter_mut()
            .map(|(_, _, t)| {
                t.sort_by(f64::total_cmp);
                (t.iter().sum::<f64>() / t.len() as f64, t[t.len() / 2])
            })
            .collect();
        let (plain_mean, plain_median) = stats[0];
        for ((name, _), (mean, median)) in variants.iter().zip(&stats) {
            println!(
                "  n={n} {name:<10} mean {mean:6.3} ms ({:+5.1} %)  median {median:6.3} ms ({:+5.1} %)",
                (mean / plain_mean - 1.0) * 100.0,
                (median / plain_median - 1.0) * 100.0
            );
        }
    }
}

fn studio(c: &mut Criterion) {
    let streams: Vec<Vec<Vec<u8>>> = (0..4).map(input_stream).collect();
    let (logo, bg, fonts) = (logo_image(), background_image(), bench_fonts());
    if std::env::args().any(|a| a.contains("studio")) {
        studio_interleaved(&streams, &logo, &bg, &fonts);
    }
    let mut g = c.benchmark_group("studio_1280x720");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    // 2 and 4 inputs tile the whole canvas (the background is not drawn at all); 3 leave
    // two corners to it.
    for n in [2usize, 3, 4] {
        for (name, decor) in decor_variants() {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut m = studio_mixer(n, &decor, &logo, &bg, &fonts);
                let mut frame = 0u64;
                b.iter(|| studio_frame(&mut m, &streams, n, &mut frame));
            });
        }
    }
    g.finish();

    // The decor's own per-frame work on a 1280x720 canvas with 4 tiles, as the mixer does it
    // (caches warm): background copy, 4 labels, the logo.
    let mut g = c.benchmark_group("studio_decor_only");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    let mut canvas = I420Frame::new(1280, 720, Yuv::from_rgb(16, 16, 16));
    let mut pictures = PictureCache::default();
    let mut backgrounds = BackgroundCache::default();
    let mut labels = LabelCache::default();
    let tiles = [(0u32, 0u32), (640, 0), (0, 360), (640, 360)];
    g.bench_function("background_copy", |b| {
        b.iter(|| {
            let f = backgrounds
                .get("studio", &bg, 1280, 720, Rgb(16, 16, 16))
                .unwrap();
            canvas.copy_from(f);
        })
    });
    g.bench_function("logo_320x120", |b| {
        b.iter(|| {
            let p = pictures.get("logo", &logo, 320, 120).unwrap();
            blend(&mut canvas, &p, 940, 20, 230);
            pictures.end_frame();
        })
    });
    g.bench_function("labels_4", |b| {
        b.iter(|| {
            let size = label_font_px(360);
            let margin = (size / 2 + 1) & !1;
            for (k, (x, y)) in tiles.iter().enumerate() {
                let name = ["Co-host number 0", "Co-host number 1", "主播小美", "Bob"][k];
                let p = labels.get(&fonts, name, size, 640 - 2 * margin).unwrap();
                let ly = y + 360 - margin - p.height();
                blend(&mut canvas, &p, i64::from(x + margin), i64::from(ly), 255);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, program_frame, audio_tick, studio);
criterion_main!(benches);
