//! `cohost mix`: composite Annex-B H.264 files (and WAV audio) into an FLV program with the
//! same mixer the server uses, on a simulated clock (as fast as possible) or paced in real
//! time with `--realtime`.
//!
//! ```text
//! cohost mix --input a.h264 --input b.h264 --audio a.wav --layout grid --size 1280x720 -o program.flv
//! ```
//!
//! The n-th `--audio` file is the n-th `--input`'s voice; extra audio files become audio-only
//! participants (placeholder tiles). The first input is the host. WAV files must be 16-bit
//! PCM, mono or stereo, any sample rate (resampled linearly to 48 kHz).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mixer::layout::{Layout, Template};
use mixer::mux::flv::{FlvMuxer, Metadata};
use mixer::{MixConfig, Mixer, MixerOutput};

/// Arguments of `cohost mix`.
#[derive(clap::Args, Debug, Clone)]
pub struct MixArgs {
    /// An Annex-B H.264 file (repeatable); one participant each, the first is the host.
    #[arg(long = "input", value_name = "FILE.h264")]
    pub inputs: Vec<PathBuf>,
    /// A WAV file (16-bit PCM; repeatable): the n-th belongs to the n-th input, extra ones are
    /// audio-only participants.
    #[arg(long = "audio", value_name = "FILE.wav")]
    pub audio: Vec<PathBuf>,
    /// Layout: grid, side_by_side, speaker, pip, or layout JSON (`{"regions":[...]}`).
    #[arg(long, default_value = "grid")]
    pub layout: String,
    /// Canvas size WIDTHxHEIGHT (even, up to 1920x1080 or 1080x1920).
    #[arg(long, default_value = "1280x720")]
    pub size: String,
    /// Program frame rate.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Video bitrate in kbit/s.
    #[arg(long, default_value_t = 2500)]
    pub kbps: u32,
    /// Audio (AAC-LC) bitrate in kbit/s.
    #[arg(long, default_value_t = 128)]
    pub audio_kbps: u32,
    /// Keyframe interval in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub gop: f64,
    /// Frame rate assumed for the .h264 inputs (they carry no timestamps).
    #[arg(long, default_value_t = 30.0)]
    pub input_fps: f64,
    /// Background colour, "#rrggbb".
    #[arg(long, default_value = "#101010")]
    pub background: String,
    /// Program length in seconds (default: the longest input).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Pace the mix in real time instead of as fast as possible.
    #[arg(long)]
    pub realtime: bool,
    /// Output FLV file.
    #[arg(short = 'o', long = "output", value_name = "FILE.flv")]
    pub output: PathBuf,
}

/// Errors of `cohost mix`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixCmdError {
    /// Bad arguments.
    #[error("{0}")]
    Args(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A WAV file is not usable.
    #[error("{path}: {message}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The mixer failed.
    #[error(transparent)]
    Mixer(#[from] mixer::MixerError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MixCmdError + '_ {
    move |source| MixCmdError::Io {
        path: path.to_owned(),
        source,
    }
}

fn parse_size(s: &str) -> Result<(u32, u32), MixCmdError> {
    let bad = || MixCmdError::Args(format!("--size {s:?}: expected WIDTHxHEIGHT"));
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

fn parse_layout(s: &str) -> Result<Layout, MixCmdError> {
    let t = match s {
        "grid" => Template::Grid,
        "side_by_side" | "side-by-side" => Template::SideBySide,
        "speaker" => Template::Speaker,
        "pip" => Template::Pip,
        json => {
            return serde_json::from_str(json)
                .map_err(|e| MixCmdError::Args(format!("--layout: {e}")));
        }
    };
    Ok(Layout::template(t))
}

/// Reads a 16-bit PCM WAV file as interleaved stereo `f32` at 48 kHz.
pub fn read_wav_48k_stereo(path: &Path) -> Result<Vec<f32>, MixCmdError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let wav_err = |m: &str| MixCmdError::Wav {
        path: path.to_owned(),
        message: m.to_owned(),
    };
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(wav_err("not a RIFF/WAVE file"));
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 12usize;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut data: Option<&[u8]> = None;
    while let (Some(id), Some(len)) = (bytes.get(pos..pos + 4), u32_at(pos + 4)) {
        let body = pos + 8;
        let end = body.saturating_add(len as usize).min(bytes.len());
        match id {
            b"fmt " => {
                fmt = Some((
                    u16_at(body).unwrap_or(0),
                    u16_at(body + 2).unwrap_or(0),
                    u32_at(body + 4).unwrap_or(0),
                    u16_at(body + 14).unwrap_or(0),
                ));
            }
            b"data" => data = bytes.get(body..end),
            _ => {}
        }
        pos = end + (len as usize & 1);
    }
    let (format, channels, rate, bits) = fmt.ok_or_else(|| wav_err("no fmt chunk"))?;
    let data = data.ok_or_else(|| wav_err("no data chunk"))?;
    if !(format == 1 || format == 0xfffe) || bits != 16 {
        return Err(wav_err("only 16-bit PCM is supported"));
    }
    if !(1..=2).contains(&channels) || rate == 0 {
        return Err(wav_err("only mono or stereo is supported"));
    }
    let ch = usize::from(channels);
    let frames: Vec<(f32, f32)> = data
        .chunks_exact(2 * ch)
        .map(|f| {
            let s = |i: usize| {
                f.get(2 * i..2 * i + 2).map_or(0.0, |b| {
                    f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0
                })
            };
            if ch == 1 {
                (s(0), s(0))
            } else {
                (s(0), s(1))
            }
        })
        .collect();
    let out_frames = (frames.len() as u64 * 48_000 / u64::from(rate)) as usize;
    let mut out = Vec::with_capacity(out_frames * 2);
    for i in 0..out_frames {
        let src = i as f64 * f64::from(rate) / 48_000.0;
        let k = src.floor() as usize;
        let frac = (src - k as f64) as f32;
        let a = frames.get(k).copied().unwrap_or((0.0, 0.0));
        let b = frames.get(k + 1).copied().unwrap_or(a);
        out.push(a.0 + (b.0 - a.0) * frac);
        out.push(a.1 + (b.1 - a.1) * frac);
    }
    Ok(out)
}

fn identity_for(path: &Path, used: &mut Vec<String>) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let mut id = stem.clone();
    let mut n = 2;
    while used.contains(&id) {
        id = format!("{stem}-{n}");
        n += 1;
    }
    used.push(id.clone());
    id
}

/// Runs `cohost mix`.
pub fn run(args: &MixArgs) -> Result<(), MixCmdError> {
    let (width, height) = parse_size(&args.size)?;
    if !(args.input_fps > 0.0 && args.input_fps <= 240.0) {
        return Err(MixCmdError::Args("--input-fps must be in (0, 240]".into()));
    }
    if args.inputs.is_empty() && args.audio.is_empty() {
        return Err(MixCmdError::Args(
            "give at least one --input or --audio".into(),
        ));
    }
    let background: mixer::Rgb =
        serde_json::from_value(serde_json::Value::String(args.background.clone()))
            .map_err(|e| MixCmdError::Args(format!("--background: {e}")))?;
    let cfg = MixConfig {
        width,
        height,
        fps: args.fps,
        video_kbps: args.kbps,
        audio_kbps: args.audio_kbps,
        gop_s: args.gop,
        layout: parse_layout(&args.layout)?,
        background,
        ..MixConfig::default()
    };
    let mut mixer = Mixer::new(cfg.clone())?;

    struct Part {
        id: String,
        aus: Vec<Vec<u8>>,
        next_au: usize,
        pcm: Vec<f32>,
    }
    let mut used = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    for (i, path) in args.inputs.iter().enumerate() {
        let data = std::fs::read(path).map_err(io_err(path))?;
        let aus = mixer::h264::access_units(&data);
        if aus.is_empty() {
            return Err(MixCmdError::Args(format!(
                "{}: no H.264 access units",
                path.display()
            )));
        }
        let id = identity_for(path, &mut used);
        mixer.add_input(&id, i == 0);
        parts.push(Part {
            id,
            aus,
            next_au: 0,
            pcm: Vec::new(),
        });
    }
    for (i, path) in args.audio.iter().enumerate() {
        let pcm = read_wav_48k_stereo(path)?;
        if let Some(p) = parts.get_mut(i).filter(|_| i < args.inputs.len()) {
            p.pcm = pcm;
        } else {
            let id = identity_for(path, &mut used);
            mixer.add_input(&id, parts.is_empty());
            parts.push(Part {
                id,
                aus: Vec::new(),
                next_au: 0,
                pcm,
            });
        }
    }
    let longest = parts
        .iter()
        .map(|p| (p.aus.len() as f64 / args.input_fps).max(p.pcm.len() as f64 / 96_000.0))
        .fold(0.0f64, f64::max);
    let duration = args.duration.unwrap_or(longest).max(0.0);
    let frames_total = ((duration * f64::from(args.fps)).round() as u64).max(1);

    let file = std::fs::File::create(&args.output).map_err(io_err(&args.output))?;
    let mut w = std::io::BufWriter::new(file);
    let mut mux = FlvMuxer::new();
    let asc = mixer.audio_specific_config();
    w.write_all(&mux.header(&Metadata {
        width,
        height,
        fps: f64::from(args.fps),
        video_kbps: args.kbps,
        audio_kbps: args.audio_kbps,
    }))
    .map_err(io_err(&args.output))?;

    let start = Instant::now();
    let mut pcm_pos = 0usize; // frames pushed per participant
    let mut frames_out = 0u64;
    let mut t = Duration::ZERO;
    let step = Duration::from_millis(5);
    while frames_out < frames_total {
        for p in &mut parts {
            while p.next_au < p.aus.len()
                && Duration::from_secs_f64(p.next_au as f64 / args.input_fps) <= t
            {
                if let Some(au) = p.aus.get(p.next_au) {
                    let rtp = ((p.next_au as f64 / args.input_fps) * 90_000.0) as u32;
                    mixer.push_video(&p.id, au, rtp, t);
                }
                p.next_au += 1;
            }
        }
        while Duration::from_micros(pcm_pos as u64 * 1_000_000 / 48_000)
            <= t + Duration::from_millis(20)
        {
            for p in &parts {
                let a = (pcm_pos * 2).min(p.pcm.len());
                let b = ((pcm_pos + 960) * 2).min(p.pcm.len());
                if let Some(chunk) = p.pcm.get(a..b) {
                    if !chunk.is_empty() {
                        mixer.push_pcm(&p.id, chunk);
                    }
                }
            }
            pcm_pos += 960;
        }
        if args.realtime {
            if let Some(wait) = t.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for o in mixer.poll(t) {
            let bytes = match o {
                MixerOutput::Video(v) if frames_out < frames_total => {
                    frames_out += 1;
                    mux.video(&v.data, v.pts_ms, v.keyframe)
                }
                MixerOutput::Audio(a) if frames_out < frames_total => {
                    mux.audio(&a.data, a.pts_ms, &asc)
                }
                MixerOutput::Event(e) => {
                    tracing::debug!(?e, "mixer event");
                    Vec::new()
                }
                _ => Vec::new(),
            };
            w.write_all(&bytes).map_err(io_err(&args.output))?;
        }
        t += step;
    }
    w.flush().map_err(io_err(&args.output))?;
    tracing::info!(
        frames = frames_out,
        seconds = duration,
        output = %args.output.display(),
        elapsed_ms = start.elapsed().as_millis() as u64,
        "mix written"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_layouts() {
        assert_eq!(parse_size("640x360").ok(), Some((640, 360)));
        assert!(parse_size("640").is_err());
        assert!(matches!(
            parse_layout("pip"),
            Ok(Layout::Template {
                template: Template::Pip
            })
        ));
        assert!(parse_layout(r#"{"regions":[]}"#).is_ok());
        assert!(parse_layout("nope").is_err());
    }

    #[test]
    fn mixes_h264_files_to_flv() {
        use openh264::encoder::Encoder;
        let dir = std::env::temp_dir().join(format!("cohost-mix-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let mut inputs = Vec::new();
        for (name, luma) in [("a", 60u8), ("b", 200u8)] {
            let mut enc = Encoder::new().ok();
            let mut stream = Vec::new();
            for _ in 0..30 {
                let mut yuv = vec![luma; 160 * 90];
                yuv.extend(vec![128u8; 2 * 80 * 45]);
                let frame = openh264::formats::YUVBuffer::from_vec(yuv, 160, 90);
                if let Some(bs) = enc.as_mut().and_then(|e| e.encode(&frame).ok()) {
                    stream.extend(bs.to_vec());
                }
            }
            let path = dir.join(format!("{name}.h264"));
            std::fs::write(&path, &stream).ok();
            inputs.push(path);
        }
        let out = dir.join("program.flv");
        let args = MixArgs {
            inputs,
            audio: Vec::new(),
            layout: "side_by_side".into(),
            size: "320x180".into(),
            fps: 30,
            kbps: 500,
            audio_kbps: 64,
            gop: 1.0,
            input_fps: 30.0,
            background: "#000000".into(),
            duration: None,
            realtime: false,
            output: out.clone(),
        };
        let r = run(&args);
        assert!(r.is_ok(), "{r:?}");
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=width,height,nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(&out)
            .output();
        let text = probe
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert_eq!(text, "320,180,30");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn wav_reader_resamples() {
        let dir = std::env::temp_dir().join(format!("cohost-mixcmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("t.wav");
        let rate = 24_000u32;
        let samples: Vec<i16> = (0..2400)
            .map(|i| if i % 2 == 0 { 16384 } else { -16384 })
            .collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + samples.len() as u32 * 2).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(samples.len() as u32 * 2).to_le_bytes());
        for s in &samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        std::fs::write(&path, &b).ok();
        let pcm = read_wav_48k_stereo(&path).ok().unwrap_or_default();
        assert_eq!(pcm.len(), 4800 * 2);
        assert!((pcm.first().copied().unwrap_or(0.0) - 0.5).abs() < 1e-3);
        std::fs::write(&path, b"RIFFxxxxWAVE").ok();
        assert!(read_wav_48k_stereo(&path).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
