//! Mixer benchmarks: one 1280x720 program frame (decode of one access unit per input +
//! compose + encode) with 2, 4 and 9 inputs of 640x360, its parts separately, and one 20 ms
//! audio tick (jitter buffer + Opus decode per input, mix, limiter, AAC + Opus encode).
//!
//! Run: `cargo bench -p mixer --bench mix`
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mixer::audio::{AacEncoder, JitterBuffer, Limiter, OpusEncoder, BLOCK_FRAMES, CHANNELS};
use mixer::compose::{Compositor, I420Frame, Yuv};
use mixer::encode::VideoEncoder;
use mixer::layout::{compute_regions, Fit, Layout, LayoutParticipant};
use mixer::video::InputDecoder;
use mixer::{MixConfig, Mixer, MixerOutput};
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

criterion_group!(benches, program_frame, audio_tick);
criterion_main!(benches);
