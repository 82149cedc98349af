//! Shared helpers for the golden pipeline tests: synthetic inputs, a simulated clock, FLV
//! writing and reading the result back with ffmpeg.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::too_many_arguments
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mixer::compose::{I420Frame, Yuv};
use mixer::mux::flv::{FlvMuxer, Metadata};
use mixer::{MixConfig, Mixer, MixerEvent, MixerOutput};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
};
use openh264::OpenH264API;

/// Encodes `frames` pictures of a solid colour with a small moving square in the top-left
/// corner, at 30 fps, IDR every `gop` frames.
pub fn encode_pattern(w: u32, h: u32, color: Yuv, frames: usize, gop: u32) -> Vec<Vec<u8>> {
    let cfg = EncoderConfig::new()
        .bitrate(BitRate::from_bps(600_000))
        .max_frame_rate(FrameRate::from_hz(30.0))
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(gop));
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).expect("encoder");
    (0..frames)
        .map(|i| {
            let mut f = I420Frame::new(w, h, color);
            let s = (w / 16).max(2) & !1;
            let x = ((i as u32 * 2) % (w / 4)) & !1;
            f.fill_rect(
                x,
                0,
                s,
                s,
                Yuv {
                    y: 235,
                    u: 128,
                    v: 128,
                },
            );
            enc.encode(&f).expect("encode").to_vec()
        })
        .collect()
}

/// Interleaved stereo sine at 48 kHz.
pub fn sine(freq: f32, amp: f32, frames: usize, start: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let s = amp * (2.0 * std::f32::consts::PI * freq * (start + i) as f32 / 48_000.0).sin();
        v.push(s);
        v.push(s);
    }
    v
}

/// One synthetic participant.
pub struct TestInput {
    pub identity: String,
    pub is_host: bool,
    /// Access units at 30 fps; `None` entries are skipped (the input is silent then).
    pub video: Vec<Option<Vec<u8>>>,
    /// Tone frequency; `None` for no audio.
    pub tone: Option<f32>,
    /// Send the tone as Opus packets through the jitter buffer instead of PCM.
    pub opus: bool,
}

/// Everything a run produced.
pub struct RunResult {
    pub outputs: Vec<MixerOutput>,
    pub flv: std::path::PathBuf,
}

impl RunResult {
    pub fn videos(&self) -> Vec<&mixer::EncodedVideo> {
        self.outputs
            .iter()
            .filter_map(|o| {
                if let MixerOutput::Video(v) = o {
                    Some(v)
                } else {
                    None
                }
            })
            .collect()
    }
    pub fn events(&self) -> Vec<&MixerEvent> {
        self.outputs
            .iter()
            .filter_map(|o| {
                if let MixerOutput::Event(e) = o {
                    Some(e)
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Runs the mixer on a simulated clock (10 ms ticks) for `frames` program pictures and
/// writes the program to `dir/name.flv`. `hook(mixer, tick_ms)` runs before each tick's
/// pushes.
pub fn run(
    cfg: MixConfig,
    inputs: &[TestInput],
    frames: u64,
    dir: &Path,
    name: &str,
    mut hook: impl FnMut(&mut Mixer, u64),
) -> RunResult {
    let mut m = Mixer::new(cfg.clone()).expect("mixer");
    for i in inputs {
        m.add_input(&i.identity, i.is_host);
    }
    let mut outputs = Vec::new();
    let mut next_frame = vec![0usize; inputs.len()];
    let mut pcm_pos = 0usize;
    let mut opus_enc: Vec<Option<opus::Encoder>> = inputs
        .iter()
        .map(|i| {
            i.opus.then(|| {
                opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio)
                    .unwrap()
            })
        })
        .collect();
    let end_ms = (frames - 1) * 1000 / u64::from(cfg.fps);
    let mut t = 0u64;
    let origin = Duration::from_secs(1000); // an arbitrary clock origin
    while t <= end_ms + 40 {
        hook(&mut m, t);
        for (k, input) in inputs.iter().enumerate() {
            while next_frame[k] < input.video.len() && (next_frame[k] as u64) * 1000 / 30 <= t {
                if let Some(Some(au)) = input.video.get(next_frame[k]) {
                    let rtp = (next_frame[k] as u32).wrapping_mul(3000);
                    m.push_video(&input.identity, au, rtp, origin + Duration::from_millis(t));
                }
                next_frame[k] += 1;
            }
        }
        // Audio: keep PCM 20 ms ahead of the program clock.
        while (pcm_pos as u64) * 1000 / 48_000 <= t + 20 {
            for (k, input) in inputs.iter().enumerate() {
                if let Some(f) = input.tone {
                    let pcm = sine(f, 0.3, 960, pcm_pos);
                    if let Some(Some(enc)) = opus_enc.get_mut(k) {
                        let pkt = enc.encode_vec_float(&pcm, 4000).unwrap();
                        // RTP clock starts at an arbitrary offset; arrival is "now".
                        let ts = (pcm_pos as u32).wrapping_add(0xfff0_0000);
                        m.push_opus(&input.identity, &pkt, ts, origin + Duration::from_millis(t));
                    } else {
                        m.push_pcm(&input.identity, &pcm);
                    }
                }
            }
            pcm_pos += 960;
        }
        let mut out = m.poll(origin + Duration::from_millis(t));
        outputs.append(&mut out);
        if outputs
            .iter()
            .filter(|o| matches!(o, MixerOutput::Video(_)))
            .count() as u64
            >= frames
        {
            break;
        }
        t += 10;
    }
    // Keep only the first `frames` pictures (and media up to the last one).
    let mut seen = 0u64;
    let mut cut = outputs.len();
    for (i, o) in outputs.iter().enumerate() {
        if matches!(o, MixerOutput::Video(_)) {
            seen += 1;
            if seen == frames {
                cut = i + 1;
                break;
            }
        }
    }
    outputs.truncate(cut);
    let flv = dir.join(format!("{name}.flv"));
    let asc = m.audio_specific_config();
    let mut mux = FlvMuxer::new();
    let mut bytes = mux.header(&Metadata {
        width: cfg.width,
        height: cfg.height,
        fps: f64::from(cfg.fps),
        video_kbps: cfg.video_kbps,
        audio_kbps: cfg.audio_kbps,
    });
    for o in &outputs {
        match o {
            MixerOutput::Video(v) => bytes.extend(mux.video(&v.data, v.pts_ms, v.keyframe)),
            MixerOutput::Audio(a) => bytes.extend(mux.audio(&a.data, a.pts_ms, &asc)),
            _ => {}
        }
    }
    std::fs::write(&flv, bytes).expect("write flv");
    RunResult { outputs, flv }
}

/// (width, height, frame count) of the first video stream, by ffprobe.
pub fn probe(path: &Path) -> (u32, u32, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let s = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<&str> = s.trim().split(',').collect();
    assert_eq!(
        parts.len(),
        3,
        "ffprobe said {s:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

/// Every decoded picture as I420, by ffmpeg.
pub fn decode_frames(path: &Path, w: u32, h: u32) -> Vec<I420Frame> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = (w * h * 3 / 2) as usize;
    out.stdout
        .chunks_exact(size)
        .map(|c| I420Frame::from_packed(w, h, c.to_vec()).unwrap())
        .collect()
}

/// Decoded audio as mono f32 at 48 kHz, by ffmpeg.
pub fn decode_audio(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-ac", "1", "-ar", "48000", "-f", "f32le", "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Per decoded frame: the (UUID, user data) pairs ffmpeg's showinfo prints.
pub fn showinfo_user_data(path: &Path) -> Vec<Vec<(String, Vec<u8>)>> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr);
    let mut frames: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    let mut uuid = String::new();
    for line in text.lines() {
        if line.contains(" n:") && line.contains("pts:") {
            frames.push(Vec::new());
        } else if let Some(p) = line.find("UUID=") {
            uuid = line[p + 5..].trim().to_string();
        } else if let Some(p) = line.find("User Data=") {
            let hex: String = line[p + 10..]
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            if let Some(f) = frames.last_mut() {
                f.push((uuid.clone(), bytes));
            }
        }
    }
    frames
}

/// Goertzel power of `freq` in `x` (mono 48 kHz), normalised by length.
pub fn tone_power(x: &[f32], freq: f32) -> f32 {
    let k = 2.0 * (2.0 * std::f32::consts::PI * freq / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s0 = v + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / (x.len() as f32).powi(2)
}

/// Mean Y, U, V of a rectangle.
pub fn mean_yuv(f: &I420Frame, x: u32, y: u32, w: u32, h: u32) -> (f64, f64, f64) {
    (
        f.mean(0, x, y, w, h),
        f.mean(1, x, y, w, h),
        f.mean(2, x, y, w, h),
    )
}

/// Asserts a rectangle's mean colour is within `tol` of `c` on every plane.
pub fn assert_color(f: &I420Frame, x: u32, y: u32, w: u32, h: u32, c: Yuv, tol: f64, what: &str) {
    let (my, mu, mv) = mean_yuv(f, x, y, w, h);
    let ok = (my - f64::from(c.y)).abs() <= tol
        && (mu - f64::from(c.u)).abs() <= tol
        && (mv - f64::from(c.v)).abs() <= tol;
    assert!(
        ok,
        "{what}: mean ({my:.1},{mu:.1},{mv:.1}) expected {c:?} ±{tol}"
    );
}
