//! Audio: per-input jitter buffer and Opus decoding with PLC, f32 mixing with a limiter,
//! audio levels, and the program encoders (AAC-LC via fdk-aac, Opus).
//!
//! Everything runs at 48 kHz stereo, interleaved `f32` in `-1.0..=1.0`, in blocks of
//! [`BLOCK_FRAMES`] frames (20 ms).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::config::MixerError;

/// Program sample rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Channels in the program.
pub const CHANNELS: usize = 2;
/// Frames per mixing block (20 ms).
pub const BLOCK_FRAMES: usize = 960;
/// Frames per AAC-LC access unit.
pub const AAC_FRAMES: usize = 1024;
/// Largest Opus packet duration in frames (120 ms).
const MAX_OPUS_FRAMES: usize = 5760;
/// Most PCM an input may hold before old samples are dropped (2 s).
const MAX_FIFO_FRAMES: usize = 2 * SAMPLE_RATE as usize;
/// Most packets the jitter buffer holds (1 s of 20 ms packets).
const MAX_PACKETS: usize = 50;
/// Consecutive concealed blocks before an input is considered stopped and re-buffers.
const MAX_PLC_BLOCKS: u32 = 3;
/// A jump in RTP time larger than this (frames) re-synchronises instead of concealing.
const RESYNC_FRAMES: i64 = 10 * BLOCK_FRAMES as i64;

/// A 32-bit RTP timestamp unwrapped to the value nearest `*newest` (the largest seen so far,
/// which it updates).
pub(crate) fn unwrap_rtp(newest: &mut Option<i64>, ts: u32) -> i64 {
    let ext = match *newest {
        None => i64::from(ts),
        Some(last) => last + i64::from(ts.wrapping_sub(last as u32) as i32),
    };
    if newest.is_none_or(|l| ext > l) {
        *newest = Some(ext);
    }
    ext
}

/// Per-input jitter buffer ordered by (unwrapped) RTP timestamp, with an Opus decoder.
pub struct JitterBuffer {
    packets: BTreeMap<i64, Vec<u8>>,
    last_ext: Option<i64>,
    next_ts: Option<i64>,
    first_arrival: Option<Duration>,
    target: Duration,
    decoder: Option<opus::Decoder>,
    fifo: VecDeque<f32>,
    plc_run: u32,
    scratch: Vec<f32>,
    /// Packets dropped because they arrived after their play-out time.
    pub late_packets: u64,
    /// Packets that failed to decode.
    pub decode_errors: u64,
    /// Blocks filled by loss concealment.
    pub concealed_blocks: u64,
    /// Of those, blocks recovered from the next packet's in-band FEC.
    pub fec_blocks: u64,
    /// The newest packet: (extended RTP timestamp, arrival).
    newest: Option<(i64, Duration)>,
    /// Smoothed delay from a packet's arrival to its play-out, ms: over ~200 ms (decides
    /// the lip-sync steps) and over ~1 s with the number of samples so far (what video
    /// follows: each packet's age carries its network jitter, ±40 ms at 80 ms of jitter,
    /// which a picture due time must not follow).
    delay_ms: Option<f64>,
    delay_slow: Option<(f64, u32)>,
    /// The delay lip sync asks of this audio (its video needs that long), see
    /// [`JitterBuffer::set_sync_delay`].
    sync_delay: Duration,
    /// When the delay was last stretched or shrunk (program clock).
    last_adjust: Option<Duration>,
    /// Blocks of concealment inserted to raise the delay for lip sync.
    pub stretched_blocks: u64,
    /// Blocks skipped to lower a delay no longer needed.
    pub shrunk_blocks: u64,
}

/// Lip sync moves an audio delay one block at a time, at most this often (the measured
/// delay is smoothed over ~200 ms and must see one step before the next).
const ADJUST_EVERY: Duration = Duration::from_millis(300);
/// Raise the delay when it is this far below what lip sync asks (little: audio a few ms
/// early of its picture costs the picture a whole program frame)...
const STRETCH_BELOW_MS: f64 = 5.0;
/// ...and lower it when this far above what is needed (hysteresis over one 20 ms block).
const SHRINK_ABOVE_MS: f64 = 45.0;
/// The most delay lip sync may ask of audio.
pub const MAX_SYNC_DELAY: Duration = Duration::from_millis(400);

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("packets", &self.packets.len())
            .field("fifo_frames", &(self.fifo.len() / CHANNELS))
            .finish()
    }
}

impl JitterBuffer {
    /// A jitter buffer with the given target delay.
    pub fn new(target: Duration) -> Self {
        JitterBuffer {
            packets: BTreeMap::new(),
            last_ext: None,
            next_ts: None,
            first_arrival: None,
            target,
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).ok(),
            fifo: VecDeque::new(),
            plc_run: 0,
            scratch: vec![0.0; MAX_OPUS_FRAMES * CHANNELS],
            late_packets: 0,
            decode_errors: 0,
            concealed_blocks: 0,
            fec_blocks: 0,
            newest: None,
            delay_ms: None,
            delay_slow: None,
            sync_delay: Duration::ZERO,
            last_adjust: None,
            stretched_blocks: 0,
            shrunk_blocks: 0,
        }
    }

    /// Asks this audio to play `d` after arrival (at most [`MAX_SYNC_DELAY`]) because its
    /// video needs that long: lip sync in the direction the video play-out cannot go. The
    /// delay rises by inserting one 20 ms block of concealment (libopus PLC continues the
    /// sound) and falls, once no longer needed, by skipping one, each at most every 300 ms —
    /// what NetEq's expand and accelerate do, in coarser steps. Never below the target.
    pub fn set_sync_delay(&mut self, d: Duration) {
        self.sync_delay = d.min(MAX_SYNC_DELAY);
    }

    /// Raises or lowers the playing delay by a block toward what is wanted (see
    /// [`Self::set_sync_delay`]); called at the start of a pull, `next` is the next timestamp
    /// to play.
    fn adjust_delay(&mut self, next: &mut i64, now: Duration) {
        let Some(d) = self.delay_ms else { return };
        if self
            .last_adjust
            .is_some_and(|t| now.saturating_sub(t) < ADJUST_EVERY)
        {
            return;
        }
        let wanted = self.target.max(self.sync_delay).as_secs_f64() * 1000.0;
        let block_ms = BLOCK_FRAMES as f64 / 48.0;
        if d < wanted - STRETCH_BELOW_MS {
            self.decode_into_fifo(None);
            self.stretched_blocks += 1;
            self.last_adjust = Some(now);
            self.step_delay(block_ms);
        } else if d > wanted + SHRINK_ABOVE_MS && self.stretched_blocks > self.shrunk_blocks {
            // Only what lip sync added is given back: the rest of the delay is the target's
            // and the drift control's.
            if let Some(pkt) = self.packets.remove(next) {
                drop(pkt);
                *next += BLOCK_FRAMES as i64;
                self.shrunk_blocks += 1;
                self.last_adjust = Some(now);
                self.step_delay(-block_ms);
            }
        }
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        unwrap_rtp(&mut self.last_ext, ts)
    }

    /// Adds an Opus packet with its RTP timestamp (48 kHz clock) and arrival time.
    pub fn push_opus(&mut self, packet: &[u8], rtp_ts: u32, arrival: Duration) {
        let ext = self.unwrap_ts(rtp_ts);
        if let Some(next) = self.next_ts {
            if ext < next {
                // Too late to play, or a far jump backwards (a restarted sender).
                if next - ext > RESYNC_FRAMES * 10 {
                    self.reset();
                    self.last_ext = Some(ext);
                } else {
                    self.late_packets += 1;
                    return;
                }
            }
        }
        if self.packets.is_empty() && self.next_ts.is_none() {
            self.first_arrival = Some(arrival);
        }
        if packet.is_empty() || packet.len() > 1500 {
            self.decode_errors += 1;
            return;
        }
        self.packets.insert(ext, packet.to_vec());
        if self.newest.is_none_or(|(n, _)| ext > n) {
            self.newest = Some((ext, arrival));
        }
        while self.packets.len() > MAX_PACKETS {
            self.packets.pop_first();
        }
    }

    /// Appends interleaved stereo PCM (48 kHz) that bypasses the jitter buffer.
    pub fn push_pcm(&mut self, samples: &[f32]) {
        self.fifo.extend(samples.iter().map(|s| {
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }));
        let max = MAX_FIFO_FRAMES * CHANNELS;
        if self.fifo.len() > max {
            let drop = self.fifo.len() - max;
            self.fifo.drain(..drop);
        }
    }

    /// How long audio waits here from arrival to play-out (smoothed over ~200 ms), once it
    /// plays: what video must wait too to stay in sync.
    pub fn delay(&self) -> Option<Duration> {
        self.delay_slow
            .map(|(d, _)| Duration::from_secs_f64(d.max(0.0) / 1000.0))
    }

    /// A step of the playing delay by `ms` (a block inserted or skipped): exact, so both
    /// estimates take it at once.
    fn step_delay(&mut self, ms: f64) {
        if let Some(d) = self.delay_ms.as_mut() {
            *d += ms;
        }
        if let Some((d, _)) = self.delay_slow.as_mut() {
            *d += ms;
        }
    }

    fn reset(&mut self) {
        self.packets.clear();
        self.newest = None;
        self.delay_ms = None;
        self.delay_slow = None;
        self.next_ts = None;
        self.first_arrival = None;
        self.plc_run = 0;
    }

    /// Recovers the block before packet `k` from `k`'s in-band FEC (libopus falls back to PLC
    /// when `k` carries none). False when nothing could be decoded.
    fn decode_fec(&mut self, k: i64) -> bool {
        let (Some(dec), Some(pkt)) = (self.decoder.as_mut(), self.packets.get(&k)) else {
            return false;
        };
        let n = BLOCK_FRAMES * CHANNELS;
        let Some(buf) = self.scratch.get_mut(..n) else {
            return false;
        };
        match dec.decode_float(pkt, buf, true) {
            Ok(frames) if frames > 0 => {
                let n = (frames * CHANNELS).min(buf.len());
                self.fifo.extend(buf.iter().take(n).copied());
                self.fec_blocks += 1;
                true
            }
            _ => false,
        }
    }

    fn decode_into_fifo(&mut self, packet: Option<&[u8]>) -> usize {
        let Some(dec) = self.decoder.as_mut() else {
            return 0;
        };
        let res = match packet {
            Some(p) => dec.decode_float(p, &mut self.scratch, false),
            None => {
                let n = BLOCK_FRAMES * CHANNELS;
                match self.scratch.get_mut(..n) {
                    Some(buf) => dec.decode_float(&[], buf, false),
                    None => Ok(0),
                }
            }
        };
        match res {
            Ok(frames) => {
                let n = (frames * CHANNELS).min(self.scratch.len());
                self.fifo.extend(self.scratch.iter().take(n).copied());
                frames
            }
            Err(_) => {
                self.decode_errors += 1;
                0
            }
        }
    }

    /// Fills `out` (interleaved stereo, `BLOCK_FRAMES` frames) with the next block of audio at
    /// program time `now`. Missing audio is concealed (briefly) or silent.
    pub fn pull(&mut self, out: &mut [f32], now: Duration) {
        let want = out.len();
        if self.next_ts.is_none() {
            if let (Some(first), Some((&ts, _))) =
                (self.first_arrival, self.packets.first_key_value())
            {
                if now.saturating_sub(first) >= self.target {
                    self.next_ts = Some(ts);
                }
            }
        }
        if let Some(mut next) = self.next_ts {
            self.adjust_delay(&mut next, now);
            // Drift control: keep the buffered span near the target.
            if let Some((&last, _)) = self.packets.last_key_value() {
                let span_ms = self.target.max(self.sync_delay).as_millis() as i64;
                let max_span = (span_ms * 48).max(BLOCK_FRAMES as i64) * 3;
                if last - next > max_span {
                    let keep_from = last - max_span / 3;
                    while let Some((&k, _)) = self.packets.first_key_value() {
                        if k < keep_from {
                            self.packets.pop_first();
                        } else {
                            break;
                        }
                    }
                    if let Some((&k, _)) = self.packets.first_key_value() {
                        next = k;
                    }
                }
            }
            let mut guard = 0;
            while self.fifo.len() < want && guard < 64 {
                guard += 1;
                // Drop stale packets.
                while let Some((&k, _)) = self.packets.first_key_value() {
                    if k < next {
                        self.packets.pop_first();
                        self.late_packets += 1;
                    } else {
                        break;
                    }
                }
                match self.packets.first_key_value().map(|(&k, _)| k) {
                    Some(k) if k == next => {
                        let pkt = self.packets.remove(&k).unwrap_or_default();
                        let frames = self.decode_into_fifo(Some(&pkt));
                        next += if frames > 0 {
                            frames as i64
                        } else {
                            BLOCK_FRAMES as i64
                        };
                        self.plc_run = 0;
                    }
                    Some(k) if k - next > RESYNC_FRAMES => {
                        next = k;
                    }
                    Some(k) => {
                        // Missing: the next packet's in-band FEC (RFC 7587, `useinbandfec=1`)
                        // carries a low-bitrate copy of this one; without it, PLC.
                        if k != next + BLOCK_FRAMES as i64 || !self.decode_fec(k) {
                            self.decode_into_fifo(None);
                        }
                        self.concealed_blocks += 1;
                        next += BLOCK_FRAMES as i64;
                    }
                    None => {
                        if self.plc_run < MAX_PLC_BLOCKS {
                            self.plc_run += 1;
                            self.decode_into_fifo(None);
                            self.concealed_blocks += 1;
                            next += BLOCK_FRAMES as i64;
                        } else {
                            // The input stopped: re-buffer when it comes back.
                            self.reset();
                            break;
                        }
                    }
                }
            }
            if self.next_ts.is_some() {
                self.next_ts = Some(next);
            }
        }
        for o in out.iter_mut() {
            *o = self.fifo.pop_front().unwrap_or(0.0);
        }
        // The newest packet starts playing after this block, the decoded audio still queued
        // and the packets before it: that, plus how long ago it arrived, is the audio's delay.
        if let (Some(next), Some((ext, at))) = (self.next_ts, self.newest) {
            if ext >= next {
                let block_ms = (want / CHANNELS) as f64 / 48.0;
                let d = now.saturating_sub(at).as_secs_f64() * 1000.0
                    + block_ms
                    + (self.fifo.len() / CHANNELS) as f64 / 48.0
                    + (ext - next) as f64 / 48.0;
                self.delay_ms = Some(match self.delay_ms {
                    None => d,
                    Some(x) => x * 0.9 + d * 0.1,
                });
                self.delay_slow = Some(match self.delay_slow {
                    None => (d, 1),
                    Some((x, n)) => {
                        let a = (1.0 / f64::from(n + 1)).max(1.0 / 50.0);
                        (x * (1.0 - a) + d * a, n.saturating_add(1))
                    }
                });
            }
        }
    }
}

/// Smoothed audio level in `0..=1` from block RMS (dBFS mapped linearly from -50..0).
#[derive(Debug, Clone, Copy, Default)]
pub struct LevelMeter {
    level: f32,
}

impl LevelMeter {
    /// Updates the level with one block of samples; returns the new level.
    pub fn update(&mut self, block: &[f32]) -> f32 {
        let n = block.len().max(1) as f32;
        let rms = (block.iter().map(|s| s * s).sum::<f32>() / n).sqrt();
        let db = 20.0 * rms.max(1e-6).log10();
        let instant = ((db + 50.0) / 50.0).clamp(0.0, 1.0);
        // Instant attack, ~300 ms release.
        self.level = instant.max(self.level * 0.85);
        self.level
    }
    /// Current level.
    pub fn level(&self) -> f32 {
        self.level
    }
}

/// A stereo-linked peak limiter with instant attack and smooth release, so that summed
/// inputs never clip (and never wrap around).
#[derive(Debug, Clone, Copy)]
pub struct Limiter {
    gain: f32,
    threshold: f32,
    release: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            gain: 1.0,
            threshold: 0.89, // about -1 dBFS
            release: 1.0 - (-1.0f32 / (0.15 * SAMPLE_RATE as f32)).exp(),
        }
    }
}

impl Limiter {
    /// Processes interleaved stereo samples in place. Output is within
    /// `-threshold..=threshold`; NaN and infinities become silence.
    pub fn process(&mut self, buf: &mut [f32]) {
        for frame in buf.chunks_mut(CHANNELS) {
            for s in frame.iter_mut() {
                if !s.is_finite() {
                    *s = 0.0;
                }
            }
            let peak = frame.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            let needed = if peak > self.threshold {
                self.threshold / peak
            } else {
                1.0
            };
            self.gain += (1.0 - self.gain) * self.release;
            if needed < self.gain {
                self.gain = needed;
            }
            for s in frame.iter_mut() {
                *s = (*s * self.gain).clamp(-self.threshold, self.threshold);
            }
        }
    }
}

/// Converts `f32` samples to `i16` with saturation.
pub fn to_i16(src: &[f32], dst: &mut Vec<i16>) {
    dst.clear();
    dst.extend(
        src.iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16),
    );
}

/// AAC-LC 48 kHz stereo encoder (fdk-aac), raw access units (no ADTS).
pub struct AacEncoder {
    enc: fdk_aac::enc::Encoder,
    asc: Vec<u8>,
    pending: Vec<f32>,
    pcm16: Vec<i16>,
    out: Vec<u8>,
    frames_out: u64,
    delay: u64,
}

impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("frames_out", &self.frames_out)
            .finish()
    }
}

impl AacEncoder {
    /// A new encoder at `kbps` (CBR).
    pub fn new(kbps: u32) -> Result<Self, MixerError> {
        use fdk_aac::enc::{
            AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport,
        };
        let enc = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(kbps * 1000),
            sample_rate: SAMPLE_RATE,
            transport: Transport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| MixerError::AudioCodec(format!("fdk-aac init: {e}")))?;
        let info = enc
            .info()
            .map_err(|e| MixerError::AudioCodec(format!("fdk-aac info: {e}")))?;
        let n = (info.confSize as usize).min(info.confBuf.len());
        let asc = info.confBuf.get(..n).unwrap_or_default().to_vec();
        // Fall back to the well-known AudioSpecificConfig for AAC-LC 48 kHz stereo.
        let asc = if asc.is_empty() {
            vec![0x11, 0x90]
        } else {
            asc
        };
        // Encoder delay (priming) in samples per channel; 2048 for AAC-LC in fdk-aac.
        let delay = if info.nDelay > 0 && info.nDelay < 8192 {
            u64::from(info.nDelay)
        } else {
            2048
        };
        Ok(AacEncoder {
            enc,
            asc,
            pending: Vec::new(),
            pcm16: Vec::new(),
            out: vec![0; 8192],
            frames_out: 0,
            delay,
        })
    }

    /// The AudioSpecificConfig (for FLV/MP4 sequence headers).
    pub fn audio_specific_config(&self) -> &[u8] {
        &self.asc
    }

    /// The encoder's priming delay in samples per channel.
    pub fn delay_samples(&self) -> u64 {
        self.delay
    }

    /// Feeds interleaved stereo samples; returns the raw AAC access units completed, each
    /// with the program sample position of its first sample. The encoder's priming delay is
    /// compensated: access units that would start before sample 0 (pure priming) are
    /// dropped, so the decoded audio lines up with its timestamps.
    pub fn encode(&mut self, samples: &[f32]) -> Vec<(u64, Vec<u8>)> {
        self.pending.extend_from_slice(samples);
        let mut out = Vec::new();
        let chunk = AAC_FRAMES * CHANNELS;
        while self.pending.len() >= chunk {
            let block: Vec<f32> = self.pending.drain(..chunk).collect();
            to_i16(&block, &mut self.pcm16);
            match self.enc.encode(&self.pcm16, &mut self.out) {
                Ok(info) if info.output_size > 0 => {
                    let start = (self.frames_out * AAC_FRAMES as u64).checked_sub(self.delay);
                    self.frames_out += 1;
                    if let (Some(start), Some(au)) = (start, self.out.get(..info.output_size)) {
                        out.push((start, au.to_vec()));
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("fdk-aac encode: {e}"),
            }
        }
        out
    }
}

/// Opus 48 kHz stereo 20 ms encoder for the program (WebRTC viewers).
pub struct OpusEncoder {
    enc: opus::Encoder,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpusEncoder")
    }
}

impl OpusEncoder {
    /// A new encoder at `kbps`.
    pub fn new(kbps: u32) -> Result<Self, MixerError> {
        let mut enc = opus::Encoder::new(
            SAMPLE_RATE,
            opus::Channels::Stereo,
            opus::Application::Audio,
        )
        .map_err(|e| MixerError::AudioCodec(format!("opus encoder: {e}")))?;
        let bps = i32::try_from(kbps.saturating_mul(1000)).unwrap_or(128_000);
        enc.set_bitrate(opus::Bitrate::Bits(bps))
            .map_err(|e| MixerError::AudioCodec(format!("opus bitrate: {e}")))?;
        Ok(OpusEncoder {
            enc,
            out: vec![0; 4000],
        })
    }

    /// Forgets the signal so far (before a stream restarts after a pause).
    pub fn reset(&mut self) {
        if let Err(e) = self.enc.reset_state() {
            tracing::warn!("opus reset: {e}");
        }
    }

    /// Encodes one 20 ms block (`BLOCK_FRAMES` stereo frames).
    pub fn encode(&mut self, block: &[f32]) -> Option<Vec<u8>> {
        match self.enc.encode_float(block, &mut self.out) {
            Ok(n) => self.out.get(..n).map(<[u8]>::to_vec),
            Err(e) => {
                tracing::warn!("opus encode: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, amp: f32, frames: usize, start: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(frames * 2);
        for i in 0..frames {
            let s = amp * (2.0 * std::f32::consts::PI * freq * (start + i) as f32 / 48_000.0).sin();
            v.push(s);
            v.push(s);
        }
        v
    }

    #[test]
    fn limiter_never_clips_or_wraps() {
        let mut mix = vec![0.0f32; 4800 * 2];
        for (k, f) in [220.0, 330.0, 440.0, 550.0].iter().enumerate() {
            for (m, s) in mix.iter_mut().zip(sine(*f, 0.9, 4800, k * 10)) {
                *m += s;
            }
        }
        let orig = mix.clone();
        let mut lim = Limiter::default();
        lim.process(&mut mix);
        for (o, i) in mix.iter().zip(&orig) {
            assert!(o.abs() <= 0.891, "{o}");
            // No wrap-around: the sign is kept.
            assert!(o * i >= 0.0);
        }
        // Quiet signals pass unchanged (after release).
        let mut quiet = sine(1000.0, 0.3, 48_000, 0);
        let q0 = quiet.clone();
        let mut lim = Limiter::default();
        lim.process(&mut quiet);
        assert!(quiet.iter().zip(&q0).all(|(a, b)| (a - b).abs() < 1e-6));
        let mut bad = vec![f32::NAN, f32::INFINITY, -5.0, 0.1];
        Limiter::default().process(&mut bad);
        assert!(bad.iter().all(|s| s.is_finite() && s.abs() <= 0.891));
        let mut i16s = Vec::new();
        to_i16(&[2.0, -2.0, 0.5], &mut i16s);
        assert_eq!(i16s, vec![32767, -32767, 16384]);
    }

    #[test]
    fn level_meter() {
        let mut m = LevelMeter::default();
        assert!(m.update(&vec![0.0; 1920]) < 0.01);
        assert!(m.update(&sine(440.0, 0.5, 960, 0)) > 0.8);
        for _ in 0..50 {
            m.update(&vec![0.0; 1920]);
        }
        assert!(m.level() < 0.01);
    }

    fn opus_packets(n: usize) -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(64).expect("enc");
        (0..n)
            .map(|i| enc.encode(&sine(440.0, 0.5, 960, i * 960)).expect("pkt"))
            .collect()
    }

    #[test]
    fn jitter_buffer_reorders_and_conceals() {
        let pkts = opus_packets(30);
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        let base: u32 = u32::MAX - 960 * 5; // exercise RTP wrap-around
                                            // Deliver out of order: swap pairs, and lose packet 10.
        let mut order: Vec<usize> = (0..30).collect();
        for c in order.chunks_mut(2) {
            c.reverse();
        }
        let mut out = vec![0.0; 1920];
        let mut energy = Vec::new();
        for step in 0..33usize {
            if let Some(&k) = order.get(step) {
                if k != 10 {
                    let ts = base.wrapping_add((k * 960) as u32);
                    jb.push_opus(&pkts[k], ts, Duration::from_millis(step as u64 * 20));
                }
            }
            jb.pull(&mut out, Duration::from_millis(step as u64 * 20));
            energy.push(out.iter().map(|s| s * s).sum::<f32>());
        }
        // Silent until the 60 ms target is reached, then every block carries the tone,
        // including the concealed one.
        assert!(energy[..3].iter().all(|e| *e == 0.0), "{energy:?}");
        assert!(energy[4..].iter().all(|e| *e > 1.0), "{energy:?}");
        assert_eq!(jb.concealed_blocks, 1);
        assert_eq!(jb.late_packets, 0);
    }

    #[test]
    fn lip_sync_raises_the_audio_delay_a_block_at_a_time_and_gives_it_back() {
        // Packets arrive every 20 ms on time; pulls every 20 ms. Returns the smoothed delay.
        let pkts = opus_packets(200);
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        let mut out = vec![0.0; 1920];
        let mut energy_ok = true;
        let mut step = 0usize;
        let mut run = |jb: &mut JitterBuffer, n: usize, step: &mut usize| {
            for _ in 0..n {
                let k = *step;
                jb.push_opus(
                    &pkts[k % 200],
                    (k * 960) as u32,
                    Duration::from_millis(k as u64 * 20),
                );
                jb.pull(&mut out, Duration::from_millis(k as u64 * 20 + 1));
                if k > 10 {
                    // Continuous sound throughout: insertions are concealment, not silence.
                    energy_ok &= out.iter().map(|s| s * s).sum::<f32>() > 1.0;
                }
                *step += 1;
            }
            jb.delay().unwrap().as_secs_f64() * 1000.0
        };
        let before = run(&mut jb, 50, &mut step);
        assert!((55.0..90.0).contains(&before), "{before}");
        // The video needs 160 ms: the audio's delay climbs to it, 20 ms per 300 ms.
        jb.set_sync_delay(Duration::from_millis(160));
        let raised = run(&mut jb, 150, &mut step);
        assert!((140.0..190.0).contains(&raised), "{raised}");
        assert!(
            jb.stretched_blocks >= 4 && jb.stretched_blocks <= 7,
            "{}",
            jb.stretched_blocks
        );
        assert_eq!(jb.shrunk_blocks, 0);
        // No longer needed: back down near the target, by skipped blocks.
        jb.set_sync_delay(Duration::ZERO);
        let back = run(&mut jb, 200, &mut step);
        assert!(back < 110.0, "{back}");
        assert!(jb.shrunk_blocks >= 3, "{}", jb.shrunk_blocks);
        assert!(energy_ok, "the sound must not stop");
        assert_eq!(jb.late_packets, 0);
    }

    #[test]
    fn the_measured_delay_is_the_wait_from_arrival_to_play_out() {
        let pkts = opus_packets(100);
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        let mut out = vec![0.0; 1920];
        assert_eq!(jb.delay(), None);
        for (k, p) in pkts.iter().enumerate() {
            // Packets arrive 5 ms into each 20 ms block.
            let at = Duration::from_millis(k as u64 * 20 + 5);
            jb.push_opus(p, (k * 960) as u32, at);
            jb.pull(&mut out, Duration::from_millis(k as u64 * 20 + 20));
        }
        // The 60 ms target, plus the phase of the 20 ms blocks against the arrivals.
        let d = jb.delay().expect("measured").as_secs_f64() * 1000.0;
        assert!((60.0..=100.0).contains(&d), "{d} ms");
    }

    #[test]
    fn a_lost_packet_is_recovered_from_the_next_ones_fec() {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Stereo, opus::Application::Voip)
                .expect("enc");
        enc.set_inband_fec(true).expect("fec");
        enc.set_packet_loss_perc(20).expect("loss");
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).expect("rate");
        let pkts: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                enc.encode_vec_float(&sine(440.0, 0.5, 960, i * 960), 4000)
                    .expect("pkt")
            })
            .collect();
        let mut jb = JitterBuffer::new(Duration::from_millis(40));
        let mut out = vec![0.0; 1920];
        for (k, p) in pkts.iter().enumerate() {
            if k != 8 {
                jb.push_opus(p, (k * 960) as u32, Duration::from_millis(k as u64 * 20));
            }
            jb.pull(&mut out, Duration::from_millis(k as u64 * 20));
        }
        assert_eq!(jb.concealed_blocks, 1);
        assert_eq!(jb.fec_blocks, 1, "recovered from packet 9's FEC");
    }

    #[test]
    fn jitter_buffer_waits_for_target_and_drops_late() {
        let pkts = opus_packets(10);
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        jb.push_opus(&pkts[1], 960, Duration::from_millis(0));
        let mut out = vec![1.0; 1920];
        jb.pull(&mut out, Duration::from_millis(20));
        assert!(
            out.iter().all(|s| *s == 0.0),
            "not started before target delay"
        );
        jb.pull(&mut out, Duration::from_millis(60));
        // Packet 0 now arrives late and is dropped.
        jb.push_opus(&pkts[0], 0, Duration::from_millis(61));
        assert_eq!(jb.late_packets, 1);
        // Garbage never panics.
        jb.push_opus(&[0xff, 0xff, 0xff], 1920, Duration::from_millis(62));
        jb.push_opus(&[], 2880, Duration::from_millis(62));
        for i in 0..10 {
            jb.pull(&mut out, Duration::from_millis(80 + i * 20));
        }
    }

    #[test]
    fn aac_encoder_produces_frames() {
        let mut enc = AacEncoder::new(128).expect("aac");
        assert_eq!(enc.audio_specific_config(), &[0x11, 0x90]);
        let mut n = 0;
        for i in 0..50 {
            n += enc.encode(&sine(440.0, 0.5, 960, i * 960)).len();
        }
        // 48000 frames / 1024 = 46 access units, minus the encoder's priming.
        assert_eq!(enc.delay_samples(), 2048);
        assert!((40..=45).contains(&n), "{n}");
    }
}
