//! The pure mixer core: inputs in, program frames out, time given by the caller.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::audio::{
    AacEncoder, JitterBuffer, LevelMeter, Limiter, OpusEncoder, BLOCK_FRAMES, CHANNELS, SAMPLE_RATE,
};
use crate::compose::{identity_color, Compositor, I420Frame, Yuv};
use crate::config::{CueError, MixConfig, MixerError};
use crate::encode::VideoEncoder;
use crate::h264;
use crate::layout::{compute_regions, Fit, Layout, LayoutParticipant, Region, Template};
use crate::playout::VideoPlayout;
use crate::sync::{AvSync, SenderReport};
use crate::video::{DecodeOutcome, InputDecoder};

/// Largest cue SEI payload (16-byte UUID + JSON user data), per CONTRACT.
pub const MAX_CUE_PAYLOAD: usize = 255;
/// Most frames one cue is repeated in.
pub const MAX_CUE_REPEAT: u32 = 300;
/// Cue ids remembered for idempotence.
const CUE_MEMORY: usize = 4096;
/// How far `poll` may lag behind its schedule before program time pauses.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Audio block duration.
const BLOCK: Duration = Duration::from_millis(20);

mod cues;
mod output;
mod produce;
mod studio;

pub use cues::{cue_sei_json, layout_sei_json};
use cues::{DeferredCue, PendingCue};
pub use output::*;

/// Most access units one input decodes for one program picture: a backlog is worked off a
/// few a tick, so one input cannot make a tick (and every room on its worker) wait.
pub const MAX_DECODES_PER_TICK: usize = 4;

/// Longest video play-out delay of an input (beyond it pictures are shown as they come).
pub const MAX_VIDEO_DELAY: Duration = Duration::from_millis(400);

/// What a program picture takes beyond its audio to reach a viewer: video encoding and
/// packetization of a whole picture against one 20 ms Opus block (measured ~8–17 ms from a
/// picture's tick to its arrival, release and test builds).
pub const VIDEO_PATH_ALLOWANCE: Duration = Duration::from_millis(10);

/// With lip sync, how long before its audio a picture is due. A due picture is shown at the
/// next program tick, 0 to one frame later (half a frame on average), and then takes
/// [`VIDEO_PATH_ALLOWANCE`] more than its audio: so a picture is due half a frame plus that
/// allowance early, which centres its skew on zero whatever the phase of the sender's frames
/// against the program's ticks (±half a frame: ±17 ms at 30 fps, well inside the ±40 ms
/// viewers do not notice). With a fixed 10 ms lead, a sender in phase with the ticks left
/// pictures either 7 or 40 ms behind their sound.
pub fn lip_sync_lead(fps: u32) -> Duration {
    Duration::from_secs(1) / fps.max(1) / 2 + VIDEO_PATH_ALLOWANCE
}

/// The video hold-back before an input's audio delay is measured: the audio jitter buffer
/// aims at playing `jitter_ms` after arrival.
pub fn av_sync_floor(jitter_ms: u64, fps: u32) -> Duration {
    Duration::from_millis(jitter_ms).saturating_sub(lip_sync_lead(fps))
}

struct Input {
    identity: String,
    is_host: bool,
    seq: u64,
    video: InputDecoder,
    last_picture_at: Option<Duration>,
    stalled: bool,
    last_kf_request: Option<Duration>,
    /// Access units waiting for their play-out time.
    playout: VideoPlayout,
    /// RTP timestamp of the picture on screen.
    shown_ts: Option<u32>,
    jitter: JitterBuffer,
    level: LevelMeter,
    /// How much later its pictures arrive than their sound, from its sender reports.
    av: AvSync,
}

impl Input {
    /// A keyframe request for this input is due (at most one per `interval`; a clock that
    /// went back allows one); if so it is noted as sent.
    fn keyframe_request_due(&mut self, now: Duration, interval: Duration) -> bool {
        let due = self
            .last_kf_request
            .is_none_or(|t| now.saturating_sub(t) >= interval || now < t);
        if due {
            self.last_kf_request = Some(now);
        }
        due
    }
}

/// The mixer core. See the crate documentation for the model.
pub struct Mixer {
    cfg: MixConfig,
    layout: Layout,
    inputs: Vec<Input>,
    next_seq: u64,
    epoch: Option<Duration>,
    clock: Duration,
    next_video: u64,
    next_block: u64,
    gop: u64,
    force_keyframe: bool,
    canvas: I420Frame,
    background: Yuv,
    compositor: Compositor,
    encoder: VideoEncoder,
    aac: AacEncoder,
    opus: OpusEncoder,
    /// Whether the Opus program audio is encoded (only WebRTC viewers need it).
    opus_on: bool,
    limiter: Limiter,
    mix_buf: Vec<f32>,
    in_buf: Vec<f32>,
    events: VecDeque<MixerEvent>,
    cues: Vec<PendingCue>,
    /// Cues waiting for an input's picture to be on screen.
    deferred: Vec<DeferredCue>,
    /// Answers of deferred cues, for [`Mixer::take_cue_answers`].
    cue_answers: Vec<(String, Result<CueAck, CueError>)>,
    cue_acks: HashMap<String, CueAck>,
    cue_order: VecDeque<String>,
    last_regions: Option<Vec<Region>>,
    speaker: Option<String>,
    speaker_candidate: Option<(String, u32)>,
    video_frames: u64,
    /// Overlays, background image, labels.
    studio: studio::Studio,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer")
            .field("cfg", &self.cfg)
            .field("inputs", &self.inputs.len())
            .field("next_video", &self.next_video)
            .finish()
    }
}

impl Mixer {
    /// Creates a mixer. Fails on an invalid configuration or codec initialisation failure.
    pub fn new(cfg: MixConfig) -> Result<Self, MixerError> {
        cfg.validate()?;
        let background = Yuv::from_rgb(cfg.background.0, cfg.background.1, cfg.background.2);
        Ok(Mixer {
            layout: cfg.layout.clone(),
            inputs: Vec::new(),
            next_seq: 0,
            epoch: None,
            clock: Duration::ZERO,
            next_video: 0,
            next_block: 0,
            gop: cfg.gop_frames(),
            force_keyframe: false,
            canvas: I420Frame::new(cfg.width, cfg.height, background),
            background,
            compositor: Compositor::new(),
            encoder: VideoEncoder::new(cfg.fps, cfg.video_kbps)?,
            aac: AacEncoder::new(cfg.audio_kbps)?,
            opus: OpusEncoder::new(cfg.audio_kbps)?,
            opus_on: true,
            limiter: Limiter::default(),
            mix_buf: vec![0.0; BLOCK_FRAMES * CHANNELS],
            in_buf: vec![0.0; BLOCK_FRAMES * CHANNELS],
            events: VecDeque::new(),
            cues: Vec::new(),
            deferred: Vec::new(),
            cue_answers: Vec::new(),
            cue_acks: HashMap::new(),
            cue_order: VecDeque::new(),
            last_regions: None,
            speaker: None,
            speaker_candidate: None,
            video_frames: 0,
            studio: studio::Studio::new(cfg.decor()),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MixConfig {
        &self.cfg
    }

    /// Adds an input (a co-host). Re-adding an existing identity updates its host flag.
    /// A keyframe request for it is queued at once.
    pub fn add_input(&mut self, identity: &str, is_host: bool) {
        if let Some(i) = self.inputs.iter_mut().find(|i| i.identity == identity) {
            i.is_host = is_host;
            return;
        }
        self.inputs.push(Input {
            identity: identity.to_owned(),
            is_host,
            seq: self.next_seq,
            video: InputDecoder::new(),
            last_picture_at: None,
            stalled: false,
            last_kf_request: Some(self.clock),
            playout: {
                let mut p = VideoPlayout::new(MAX_VIDEO_DELAY);
                if self.cfg.lip_sync {
                    p.set_floor(av_sync_floor(self.cfg.jitter_ms, self.cfg.fps));
                }
                p
            },
            shown_ts: None,
            jitter: JitterBuffer::new(Duration::from_millis(self.cfg.jitter_ms)),
            level: LevelMeter::default(),
            av: AvSync::default(),
        });
        self.next_seq += 1;
        self.events
            .push_back(MixerEvent::RequestKeyframe(identity.to_owned()));
    }

    /// Removes an input; its tile disappears from the next frame.
    pub fn remove_input(&mut self, identity: &str) {
        self.inputs.retain(|i| i.identity != identity);
        if self.speaker.as_deref() == Some(identity) {
            self.speaker = None;
        }
    }

    /// Feeds one H.264 access unit (Annex-B) of an input. `rtp_ts_90k` is its RTP
    /// timestamp, `arrival` the time it arrived on the mixer's clock. Unknown identities are
    /// ignored. The access unit is decoded when its play-out time comes ([`crate::playout`]);
    /// undecodable data keeps the last good picture and queues a (throttled) keyframe request.
    pub fn push_video(
        &mut self,
        identity: &str,
        access_unit: &[u8],
        rtp_ts_90k: u32,
        arrival: Duration,
    ) {
        self.push_video_bytes(
            identity,
            Bytes::copy_from_slice(access_unit),
            rtp_ts_90k,
            arrival,
        );
    }

    /// [`Mixer::push_video`] for an access unit already in [`Bytes`] (no copy).
    pub fn push_video_bytes(
        &mut self,
        identity: &str,
        access_unit: Bytes,
        rtp_ts_90k: u32,
        arrival: Duration,
    ) {
        self.clock = self.clock.max(arrival);
        if let Some(input) = self.inputs.iter_mut().find(|i| i.identity == identity) {
            input.av.video(rtp_ts_90k, arrival);
            input.playout.push(access_unit, rtp_ts_90k, arrival);
        }
    }

    /// An RTCP sender report of an input's video (`video`) or audio track: with reports for
    /// both, lip sync pairs pictures and sounds by their capture time on the sender's clock
    /// instead of by arrival ([`crate::sync`]). Unknown identities are ignored.
    pub fn sender_report(&mut self, identity: &str, video: bool, report: SenderReport) {
        if let Some(input) = self.inputs.iter_mut().find(|i| i.identity == identity) {
            if video {
                input.av.video_report(report);
            } else {
                input.av.audio_report(report);
            }
        }
    }

    /// Decodes the access units of every input for the program picture at `now` (see
    /// [`crate::playout::VideoPlayout::pop_for_tick`]).
    fn decode_due(&mut self, now: Duration) {
        let interval = Duration::from_millis(self.cfg.keyframe_request_interval_ms);
        let frame = self.video_due(1);
        for input in &mut self.inputs {
            let mut shown = None;
            let skip = input.playout.take_overflow();
            if skip {
                tracing::debug!(identity = %input.identity, "input video flooded its play-out buffer; waiting for a keyframe");
                input.video.skip_to_keyframe();
            }
            let mut decoded = 0;
            while let Some(q) = input.playout.pop_for_tick(now, frame, shown.is_some()) {
                // A backlog is worked off a few access units a tick: one input cannot make a
                // tick (and every room on the same worker) wait for a burst of decodes.
                // The rest of a backlog waits in order for the next ticks (a real burst after
                // a stall clears in a few); a flood overflows the play-out buffer instead.
                if decoded == MAX_DECODES_PER_TICK {
                    input.playout.unpop(q);
                    break;
                }
                decoded += 1;
                match input.video.decode(&q.data) {
                    DecodeOutcome::Picture => {
                        input.last_picture_at = Some(now);
                        shown = Some(q.rtp_ts);
                    }
                    DecodeOutcome::NoPicture => {}
                    outcome @ (DecodeOutcome::Error(_) | DecodeOutcome::WaitingForKeyframe) => {
                        if let DecodeOutcome::Error(e) = outcome {
                            tracing::debug!(identity = %input.identity, error = %e, "input video decode failed");
                        }
                        if input.keyframe_request_due(now, interval) {
                            self.events
                                .push_back(MixerEvent::RequestKeyframe(input.identity.clone()));
                        }
                    }
                }
            }
            if skip && input.keyframe_request_due(now, interval) {
                self.events
                    .push_back(MixerEvent::RequestKeyframe(input.identity.clone()));
            }
            if let Some(ts) = shown {
                input.shown_ts = Some(ts);
                self.events.push_back(MixerEvent::Presented {
                    identity: input.identity.clone(),
                    rtp_ts: ts,
                });
            }
        }
    }

    /// The current video play-out delay of an input (beyond its fastest transit), if known.
    pub fn video_delay(&self, identity: &str) -> Option<Duration> {
        self.inputs
            .iter()
            .find(|i| i.identity == identity)
            .map(|i| i.playout.delay())
    }

    /// Feeds one Opus packet of an input with its RTP timestamp (48 kHz clock).
    pub fn push_opus(&mut self, identity: &str, packet: &[u8], rtp_ts_48k: u32, arrival: Duration) {
        self.clock = self.clock.max(arrival);
        if let Some(input) = self.inputs.iter_mut().find(|i| i.identity == identity) {
            input.av.audio(rtp_ts_48k, arrival);
            input.jitter.push_opus(packet, rtp_ts_48k, arrival);
        }
    }

    /// Feeds PCM for an input (offline use): interleaved stereo `f32` at 48 kHz, played in
    /// order without a jitter buffer.
    pub fn push_pcm(&mut self, identity: &str, samples: &[f32]) {
        if let Some(input) = self.inputs.iter_mut().find(|i| i.identity == identity) {
            input.jitter.push_pcm(samples);
        }
    }

    /// Changes the layout; it applies from the next frame, without a keyframe.
    pub fn set_layout(&mut self, layout: Layout) {
        self.layout = layout;
    }

    /// The current layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Turns the Opus program audio ([`MixerOutput::Opus`]) on or off (on at start). It costs
    /// an Opus encode per 20 ms; a server turns it on only while WebRTC viewers watch.
    pub fn set_opus_output(&mut self, on: bool) {
        if on && !self.opus_on {
            self.opus.reset();
        }
        self.opus_on = on;
    }

    /// Asks for an IDR picture as the next frame (e.g. a new RTMP/WHEP viewer).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Program time of the next picture.
    pub fn next_pts_ms(&self) -> u64 {
        self.next_video * 1000 / u64::from(self.cfg.fps)
    }

    /// The AAC AudioSpecificConfig (AAC-LC, 48 kHz, stereo).
    pub fn audio_specific_config(&self) -> Vec<u8> {
        self.aac.audio_specific_config().to_vec()
    }

    /// The current SPS and PPS (without start codes), known once the first frame is encoded.
    pub fn sps_pps(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.encoder
            .sps_pps()
            .map(|(s, p)| (s.to_vec(), p.to_vec()))
    }

    /// The AVCDecoderConfigurationRecord for FLV/MP4, once the first frame is encoded.
    pub fn avc_decoder_config(&self) -> Option<Vec<u8>> {
        let (sps, pps) = self.encoder.sps_pps()?;
        crate::mux::flv::avc_decoder_configuration_record(sps, pps)
    }

    /// The latest composed program picture (`None` before the first), for thumbnails: all
    /// of it, decor included.
    pub fn snapshot(&self) -> Option<I420Frame> {
        (self.video_frames > 0).then(|| self.canvas.clone())
    }

    /// A snapshot for status APIs.
    pub fn state(&self) -> MixState {
        let order = self.display_order();
        MixState {
            layout: self.layout.clone(),
            regions: self.last_regions.clone().unwrap_or_default(),
            inputs: order
                .iter()
                .filter_map(|&i| self.inputs.get(i))
                .map(|i| InputState {
                    identity: i.identity.clone(),
                    is_host: i.is_host,
                    video_live: i.last_picture_at.is_some() && !i.stalled,
                    pictures: i.video.pictures,
                    decode_errors: i.video.errors,
                    video_delay_ms: i.playout.delay().as_secs_f64() * 1000.0,
                    video_own_delay_ms: i.playout.own_delay().as_secs_f64() * 1000.0,
                    av_offset_ms: i.av.offset_ms(),
                    audio_delay_ms: i.jitter.delay().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                    audio_sync_blocks: i.jitter.stretched_blocks as i64
                        - i.jitter.shrunk_blocks as i64,
                    audio_concealed_blocks: i.jitter.concealed_blocks,
                    audio_fec_blocks: i.jitter.fec_blocks,
                    audio_level: i.level.level(),
                })
                .collect(),
            video_frames: self.video_frames,
            next_pts_ms: self.next_pts_ms(),
        }
    }

    /// When (on the caller's clock) the last picture produced was due, if any.
    pub fn last_video_due(&self) -> Option<Duration> {
        let n = self.next_video.checked_sub(1)?;
        Some(self.epoch? + self.video_due(n))
    }

    /// When the next program picture is due (zero before the first poll).
    pub fn next_video_due(&self) -> Duration {
        self.epoch
            .map_or(Duration::ZERO, |e| e + self.video_due(self.next_video))
    }

    fn video_due(&self, n: u64) -> Duration {
        Duration::from_nanos(n.saturating_mul(1_000_000_000) / u64::from(self.cfg.fps))
    }

    fn audio_due(&self, m: u64) -> Duration {
        BLOCK * u32::try_from(m + 1).unwrap_or(u32::MAX)
    }

    /// The time (on the caller's clock) at which [`poll`](Self::poll) next has work: the
    /// next picture or audio block deadline. Zero before the first poll; events queued by
    /// pushes are returned by any poll.
    pub fn poll_timeout(&self) -> Duration {
        let Some(epoch) = self.epoch else {
            return Duration::ZERO;
        };
        epoch
            + self
                .video_due(self.next_video)
                .min(self.audio_due(self.next_block))
    }

    /// Produces every program picture and audio frame due up to `now`, in time order, after
    /// any pending events. The first call fixes program time zero at `now`.
    pub fn poll(&mut self, now: Duration) -> Vec<MixerOutput> {
        let mut epoch = *self.epoch.get_or_insert(now);
        self.clock = self.clock.max(now);
        // If the caller fell far behind (a suspended process, a starved thread), do not
        // encode a burst of stale frames: program time pauses instead (timestamps stay
        // continuous, the program just runs later than before).
        let next_due = self
            .video_due(self.next_video)
            .min(self.audio_due(self.next_block));
        if now > epoch + next_due + MAX_LAG {
            let shift = now - (epoch + next_due);
            tracing::warn!(
                behind_ms = shift.as_millis() as u64,
                "mixer fell behind; skipping ahead"
            );
            epoch += shift;
            self.epoch = Some(epoch);
        }
        let mut out: Vec<MixerOutput> = Vec::new();
        loop {
            let tv = epoch + self.video_due(self.next_video);
            let ta = epoch + self.audio_due(self.next_block);
            if tv.min(ta) > now {
                break;
            }
            if tv <= ta {
                self.produce_video(tv, &mut out);
            } else {
                self.produce_audio(ta, &mut out);
            }
        }
        let mut all: Vec<MixerOutput> = self.events.drain(..).map(MixerOutput::Event).collect();
        all.append(&mut out);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::produce::covers;
    use super::*;

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Region {
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
    fn coverage_of_regions() {
        let (l, r) = (rect(0, 0, 640, 720), rect(640, 0, 640, 720));
        assert!(covers(&[&l, &r], 1280, 720));
        assert!(!covers(&[&l], 1280, 720));
        // Overlap (picture in picture) with the same total area is not coverage.
        let (big, small) = (rect(0, 0, 1280, 600), rect(0, 500, 1280, 220));
        assert!(!covers(&[&big, &small], 1280, 720));
        // Regions reaching past the canvas are clipped.
        assert!(covers(&[&rect(0, 0, 2000, 2000)], 1280, 720));
        assert!(!covers(&[], 1280, 720));
    }
    use serde_json::json;

    fn small() -> MixConfig {
        MixConfig {
            width: 160,
            height: 90,
            fps: 10,
            video_kbps: 300,
            ..MixConfig::default()
        }
    }

    #[test]
    fn cue_size_limit() {
        let mut m = Mixer::new(small()).expect("mixer");
        // 16 + len(json) must be <= 255.
        let base = cue_sei_json("c", 0, &json!("")).len();
        let fits = "x".repeat(MAX_CUE_PAYLOAD - 16 - base);
        let ack = m.cue("c", json!(fits), 3).expect("fits");
        assert_eq!(ack.pts_ms, 0);
        let too_big = "x".repeat(MAX_CUE_PAYLOAD - 16 - base + 1);
        assert_eq!(
            m.cue("d", json!(too_big), 3),
            Err(CueError::TooLarge {
                size: 256,
                max: MAX_CUE_PAYLOAD
            })
        );
        assert_eq!(m.cue("", json!(1), 1), Err(CueError::InvalidId));
    }

    #[test]
    fn cue_idempotent_and_repeated() {
        let mut m = Mixer::new(small()).expect("mixer");
        let _ = m.poll(Duration::ZERO); // frame 0 at t=0
        let ack = m.cue("ad-1", json!({"k": 1}), 2).expect("cue");
        assert_eq!(ack.pts_ms, 100);
        let again = m.cue("ad-1", json!({"k": 2}), 5).expect("again");
        assert_eq!(
            (again.id.as_str(), again.pts_ms, again.duplicate),
            ("ad-1", 100, true)
        );
        let outs = m.poll(Duration::from_millis(1000));
        let mut carrying = Vec::new();
        for o in outs {
            if let MixerOutput::Video(v) = o {
                for d in h264::find_user_data(&v.data, &h264::CUE_SEI_UUID) {
                    let j: serde_json::Value = serde_json::from_slice(&d).expect("json");
                    assert_eq!(j, json!({"v":1,"id":"ad-1","pts_ms":100,"data":{"k":1}}));
                    carrying.push(v.pts_ms);
                }
            }
        }
        assert_eq!(carrying, vec![100, 200]);
    }

    #[test]
    fn long_stall_pauses_instead_of_bursting() {
        let video_pts = |outs: &[MixerOutput]| -> Vec<u64> {
            outs.iter()
                .filter_map(|o| {
                    if let MixerOutput::Video(v) = o {
                        Some(v.pts_ms)
                    } else {
                        None
                    }
                })
                .collect()
        };
        let mut m = Mixer::new(small()).expect("mixer");
        let _ = m.poll(Duration::ZERO);
        // 30 s late: no burst of 300 stale frames; only what is due right now (one audio block).
        let outs = m.poll(Duration::from_secs(30));
        assert!(video_pts(&outs).is_empty());
        assert_eq!(
            outs.iter()
                .filter(|o| matches!(o, MixerOutput::Opus(_)))
                .count(),
            1
        );
        // Then the schedule continues at the normal rate with continuous timestamps.
        let outs = m.poll(Duration::from_secs(30) + Duration::from_millis(500));
        assert_eq!(video_pts(&outs), vec![100, 200, 300, 400, 500]);
    }

    #[test]
    fn speaker_layout_follows_the_dominant_speaker() {
        let mut m = Mixer::new(MixConfig {
            layout: Layout::template(Template::Speaker),
            ..small()
        })
        .expect("mixer");
        m.add_input("host", true);
        m.add_input("guest", false);
        let tone: Vec<f32> = (0..960)
            .flat_map(|i| {
                let s = 0.3 * (i as f32 * 0.06).sin();
                [s, s]
            })
            .collect();
        let big = |m: &Mixer| {
            m.state()
                .regions
                .iter()
                .max_by_key(|r| r.w * r.h)
                .map(|r| r.identity.clone())
                .unwrap_or_default()
        };
        let mut t = 0u64;
        let mut step = |m: &mut Mixer, until: u64| {
            while t <= until {
                m.push_pcm("guest", &tone);
                let _ = m.poll(Duration::from_millis(t));
                t += 20;
            }
        };
        step(&mut m, 500);
        assert_eq!(big(&m), "host", "the host stays large for the first second");
        step(&mut m, 1600);
        assert_eq!(
            big(&m),
            "guest",
            "the guest took over after talking for over 1 s"
        );
        let levels: Vec<f32> = m.state().inputs.iter().map(|i| i.audio_level).collect();
        assert!(levels[0] < 0.05 && levels[1] > 0.5, "{levels:?}");
    }

    #[test]
    fn opus_output_only_when_on() {
        let count = |outs: &[MixerOutput]| {
            outs.iter()
                .filter(|o| matches!(o, MixerOutput::Opus(_)))
                .count()
        };
        let mut m = Mixer::new(small()).expect("mixer");
        let base = Duration::from_secs(100);
        m.set_opus_output(false);
        let _ = m.poll(base);
        let outs = m.poll(base + Duration::from_millis(200));
        assert_eq!(count(&outs), 0);
        // AAC goes on regardless.
        assert!(outs.iter().any(|o| matches!(o, MixerOutput::Audio(_))));
        m.set_opus_output(true);
        let outs = m.poll(base + Duration::from_millis(400));
        assert!(count(&outs) >= 9, "{}", count(&outs));
    }

    #[test]
    fn poll_schedule_and_timeout() {
        let mut m = Mixer::new(small()).expect("mixer");
        assert_eq!(m.poll_timeout(), Duration::ZERO);
        let base = Duration::from_secs(100);
        let outs = m.poll(base);
        let videos = outs
            .iter()
            .filter(|o| matches!(o, MixerOutput::Video(_)))
            .count();
        assert_eq!(videos, 1);
        assert_eq!(m.poll_timeout(), base + Duration::from_millis(20));
        let outs = m.poll(base + Duration::from_millis(1000));
        let mut last = 0;
        let mut v = 0;
        let mut opus = 0;
        for o in &outs {
            match o {
                MixerOutput::Video(x) => {
                    v += 1;
                    last = x.pts_ms;
                }
                MixerOutput::Opus(_) => opus += 1,
                _ => {}
            }
        }
        assert_eq!((v, last, opus), (10, 1000, 50));
    }
}
