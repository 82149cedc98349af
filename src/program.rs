//! The live program of each room: the SFU's publishers feed a mixer (on its own thread); its
//! output goes to RTMP outputs and HLS ([`crate::output::ProgramOutputs`]) and to WHEP program
//! viewers. The program starts when the first co-host publishes and stops a grace period after
//! the last one leaves; layout, cues and outputs are controlled through the API.

use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mixer::driver::{MixerDriver, MixerPool};
use mixer::mux::flv::Metadata;
use mixer::{CueError, Layout, MixConfig, MixerEvent, MixerOutput};
use rtc::media::Sample;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use serde_json::{json, Value};
use signaling::backend::{CueAck, MediaError};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

use crate::depack::{Assembled, H264Assembler};
use crate::output::{ProgramOutputs, ProgramOutputsConfig};
use crate::reorder::{Released, ReorderBuffer, ReorderConfig, ReorderStats};
use crate::rtc::RtcEngine;
use crate::sfu::{ProgramControl, ProgramSink, Publisher, Sfu};

/// Cue ids a room remembers for idempotency (as many as the mixer does).
const CUE_IDS_KEPT: usize = 4096;

/// Program settings.
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    /// Mix settings used when a room was not created with its own.
    pub default_mix: MixConfig,
    /// How long a program outlives its last co-host.
    pub grace: Duration,
    /// Cues accepted per room per [`ProgramConfig::cue_window`].
    pub cue_limit: usize,
    /// Window of the cue rate limit.
    pub cue_window: Duration,
    /// Worker threads of the mixer pool all rooms share; 0 = one per CPU.
    pub mixer_threads: usize,
    /// Most programs running at once (0 = no limit). Past it, a room whose first co-host
    /// publishes waits, first come first served, until a running program stops; its co-hosts
    /// still talk through the SFU. Set it from the rooms-per-machine measurement, so that the
    /// programs that run stay real time instead of all of them falling behind.
    pub max_programs: usize,
    /// Most WHEP viewers of one room's program (0 = no limit). Each is a peer connection
    /// with its own encryption: the WHEP view is for a studio's monitors, the audience
    /// watches the CDN (RTMP) or HLS.
    pub max_viewers: usize,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        ProgramConfig {
            default_mix: MixConfig::default(),
            grace: Duration::from_secs(5),
            cue_limit: 20,
            cue_window: Duration::from_secs(10),
            mixer_threads: 0,
            max_programs: 0,
            max_viewers: 50,
        }
    }
}

/// Program counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ProgramMetrics {
    /// Input access units handed to mixers.
    pub frames_in: AtomicU64,
    /// Input access units the mixer queue refused (full).
    pub frames_dropped: AtomicU64,
    /// Co-host video packets the mixer input gave up as lost (after waiting for a repair).
    pub input_packets_lost: AtomicU64,
    /// Co-host video packets that came late or retransmitted and filled their hole in time.
    pub input_packets_repaired: AtomicU64,
    /// Bytes held by the programs' input assemblers for access units not complete yet
    /// (fragments included): at most one access unit per co-host, whatever it sends.
    pub input_assembling_bytes: AtomicU64,
    /// Program pictures encoded.
    pub frames_out: AtomicU64,
    /// Late pictures and mixing time, shared with every mixer thread.
    pub driver: Arc<mixer::driver::DriverCounters>,
    /// Program video bytes.
    pub video_bytes: AtomicU64,
    /// AAC frames produced.
    pub audio_frames: AtomicU64,
    /// Keyframe requests the mixers made to publishers.
    pub keyframe_requests: AtomicU64,
    /// Cues stamped.
    pub cues: AtomicU64,
    /// Programs started.
    pub programs_started: AtomicU64,
    /// Programs that had to wait for a free slot (`max_programs`).
    pub programs_deferred: AtomicU64,
}

#[derive(Clone, Debug)]
enum ProgramMedia {
    Video { data: Bytes, keyframe: bool },
    Opus { data: Bytes },
}

/// Per-room program counters (`cohost_room_program_*{room=...}`; they restart with the
/// program, which Prometheus reads as a counter reset).
#[derive(Debug, Default)]
struct RoomCounters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    driver: Arc<mixer::driver::DriverCounters>,
}

struct Running {
    driver: Arc<MixerDriver>,
    counters: Arc<RoomCounters>,
    feeders: HashMap<String, Vec<JoinHandle<()>>>,
    pump: JoinHandle<()>,
    stop_timer: Option<JoinHandle<()>>,
}

/// One input's share of [`ProgramMetrics::input_assembling_bytes`].
struct Held {
    gauge: Arc<ProgramMetrics>,
    bytes: u64,
}

impl Held {
    fn set(&mut self, bytes: u64) {
        if bytes != self.bytes {
            let g = &self.gauge.input_assembling_bytes;
            g.fetch_add(bytes, Ordering::Relaxed);
            g.fetch_sub(self.bytes, Ordering::Relaxed);
            self.bytes = bytes;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// A WHEP program viewer: its connection and tasks.
type Viewer = (Arc<dyn PeerConnection>, Vec<JoinHandle<()>>);

struct RoomProgram {
    mix: MixConfig,
    outputs: ProgramOutputs,
    running: Option<Running>,
    media_tx: broadcast::Sender<ProgramMedia>,
    viewers: HashMap<String, Viewer>,
    cue_times: VecDeque<Instant>,
    /// Answers to the room's latest cues, by id (at most [`CUE_IDS_KEPT`]): a retried id gets
    /// its first answer, even past the rate limit or after the program restarted.
    cue_acks: HashMap<String, u64>,
    cue_ack_order: VecDeque<String>,
    layout: Layout,
    /// Publishers ready while no program slot was free (`max_programs`), in order.
    waiting: Vec<Arc<Publisher>>,
    /// When the room began to wait for a program slot.
    waiting_since: Option<Instant>,
    /// Created or configured through the API: its mix, layout and outputs outlive its
    /// programs until the room is deleted. A room created by a join forgets them once its
    /// program stops (unless it has outputs).
    persistent: bool,
}

/// The AudioSpecificConfig of the program's AAC (LC, 48 kHz, stereo) that the outputs
/// announce before the mixer runs.
const PROGRAM_ASC: [u8; 2] = [0x11, 0x90];

fn metadata(mix: &MixConfig) -> Metadata {
    Metadata {
        width: mix.width,
        height: mix.height,
        fps: f64::from(mix.fps),
        video_kbps: mix.video_kbps,
        audio_kbps: mix.audio_kbps,
    }
}

impl RoomProgram {
    fn new(mix: MixConfig) -> Self {
        let meta = metadata(&mix);
        // AAC-LC, 48 kHz, stereo: what the mixer encodes (checked against it at start).
        let outputs = ProgramOutputs::new(ProgramOutputsConfig::new(meta, PROGRAM_ASC.to_vec()));
        RoomProgram {
            layout: mix.layout.clone(),
            mix,
            outputs,
            running: None,
            media_tx: broadcast::channel(512).0,
            viewers: HashMap::new(),
            cue_times: VecDeque::new(),
            cue_acks: HashMap::new(),
            cue_ack_order: VecDeque::new(),
            waiting: Vec::new(),
            waiting_since: None,
            persistent: false,
        }
    }
}

/// All rooms' programs.
pub struct Programs {
    config: ProgramConfig,
    sfu: Weak<Sfu>,
    engine: Arc<RtcEngine>,
    rooms: Mutex<HashMap<String, RoomProgram>>,
    /// Mixer worker threads shared by all rooms (created with the first program).
    pool: Mutex<Option<Arc<MixerPool>>>,
    /// Counters.
    pub metrics: Arc<ProgramMetrics>,
    /// Set by [`Programs::shutdown`]: no waiting program starts any more.
    closing: AtomicBool,
    me: Weak<Programs>,
}

impl Programs {
    /// New, attached to `sfu`.
    pub fn new(config: ProgramConfig, sfu: &Arc<Sfu>, engine: Arc<RtcEngine>) -> Arc<Self> {
        Arc::new_cyclic(|me| Programs {
            config,
            sfu: Arc::downgrade(sfu),
            engine,
            rooms: Mutex::new(HashMap::new()),
            pool: Mutex::new(None),
            metrics: Arc::new(ProgramMetrics::default()),
            closing: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// The HLS store of a room's program.
    pub fn hls(&self, room: &str) -> Option<crate::output::HlsStore> {
        lock(&self.rooms).get(room).map(|r| r.outputs.hls())
    }

    /// The outputs of a room, created on demand (so outputs can be added before the show).
    /// `create`: the caller adds an output, which makes the room's program state persistent.
    pub fn outputs(&self, room: &str, create: bool) -> Option<ProgramOutputs> {
        let mut g = lock(&self.rooms);
        if create {
            g.entry(room.to_owned())
                .or_insert_with(|| RoomProgram::new(self.config.default_mix.clone()))
                .persistent = true;
        }
        g.get(room).map(|r| r.outputs.clone())
    }

    /// Number of running programs.
    pub fn running(&self) -> usize {
        lock(&self.rooms)
            .values()
            .filter(|r| r.running.is_some())
            .count()
    }

    /// Number of rooms whose program waits for a free slot (`max_programs`).
    pub fn waiting(&self) -> usize {
        lock(&self.rooms)
            .values()
            .filter(|r| r.running.is_none() && !r.waiting.is_empty())
            .count()
    }

    /// Why `room` has no program now.
    fn no_program(&self, room: &str, r: Option<&RoomProgram>) -> MediaError {
        if r.is_some_and(|r| !r.waiting.is_empty()) {
            MediaError::Unavailable(format!(
                "room `{room}`'s program waits for a free slot ({} programs running, the \
                 server's max_programs)",
                self.config.max_programs
            ))
        } else {
            MediaError::Unavailable(format!(
                "room `{room}` has no program (no co-host is publishing)"
            ))
        }
    }

    fn at_capacity(&self, rooms: &HashMap<String, RoomProgram>) -> bool {
        let max = self.config.max_programs;
        max > 0 && rooms.values().filter(|r| r.running.is_some()).count() >= max
    }

    /// Starts waiting programs, oldest first, while slots are free.
    fn start_waiting(&self) {
        let mut g = lock(&self.rooms);
        while !self.closing.load(Ordering::SeqCst) && !self.at_capacity(&g) {
            let Some(room) = g
                .iter()
                .filter(|(_, r)| r.running.is_none() && !r.waiting.is_empty())
                .min_by_key(|(_, r)| r.waiting_since)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            let Some(r) = g.get_mut(&room) else { return };
            // On failure the room keeps waiting with its publishers.
            if let Err(e) = self.start(&room, r) {
                warn!(room, error = %e, "cannot start the waiting program");
                return;
            }
            let publishers = std::mem::take(&mut r.waiting);
            let waited = r.waiting_since.take().map(|t| t.elapsed());
            info!(room, ?waited, "program slot free: waiting program started");
            for p in &publishers {
                self.attach(&room, r, p);
            }
        }
    }

    /// Queues `publisher` until a program slot frees (first come, first served); a program in
    /// its grace period (no co-host left) yields its slot at once, and stop() then starts the
    /// oldest waiting one.
    fn wait_for_slot(
        &self,
        g: &mut HashMap<String, RoomProgram>,
        room: &str,
        publisher: &Arc<Publisher>,
    ) {
        let Some(r) = g.get_mut(room) else { return };
        if r.waiting_since.is_none() {
            r.waiting_since = Some(Instant::now());
            self.metrics
                .programs_deferred
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                room,
                max_programs = self.config.max_programs,
                "all program slots busy: the program waits for one"
            );
        }
        r.waiting.retain(|p| p.identity != publisher.identity);
        r.waiting.push(publisher.clone());
        let idle = g
            .iter()
            .find(|(_, r)| r.running.as_ref().is_some_and(|x| x.feeders.is_empty()))
            .map(|(k, _)| k.clone());
        if let (Some(idle), Some(me)) = (idle, self.me.upgrade()) {
            info!(room = %idle, "idle program stopped early: a room waits for its slot");
            tokio::spawn(async move { me.stop(&idle, false).await });
        }
    }

    /// Feeds `publisher` into `r`'s running program.
    fn attach(&self, room: &str, r: &mut RoomProgram, publisher: &Arc<Publisher>) {
        let Some(run) = r.running.as_mut() else {
            return;
        };
        if let Some(t) = run.stop_timer.take() {
            t.abort();
        }
        let _ = run.driver.add_input(&publisher.identity, publisher.is_host);
        let tasks = self.feed(room, publisher, run.driver.clone(), run.counters.clone());
        if let Some(old) = run.feeders.insert(publisher.identity.clone(), tasks) {
            old.iter().for_each(|t| t.abort());
        }
    }

    /// Prometheus lines for the programs and their outputs.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let m = &self.metrics;
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        line(
            "cohost_programs_running",
            "gauge",
            "Rooms whose program is running.",
            self.running() as u64,
        );
        line(
            "cohost_programs_waiting",
            "gauge",
            "Rooms whose program waits for a free slot (max_programs).",
            self.waiting() as u64,
        );
        line(
            "cohost_programs_deferred_total",
            "counter",
            "Programs that had to wait for a free slot (max_programs).",
            m.programs_deferred.load(Ordering::Relaxed),
        );
        line(
            "cohost_programs_max",
            "gauge",
            "Most programs running at once (0 = no limit).",
            self.config.max_programs as u64,
        );
        line(
            "cohost_program_frames_in_total",
            "counter",
            "Co-host access units fed to mixers.",
            m.frames_in.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_frames_dropped_total",
            "counter",
            "Co-host access units dropped (mixer queue full).",
            m.frames_dropped.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_input_packets_lost_total",
            "counter",
            "Co-host video packets lost for good on the way into the mixer (after waiting for a retransmission).",
            m.input_packets_lost.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_input_packets_repaired_total",
            "counter",
            "Co-host video packets that filled their hole in time (reordered or retransmitted).",
            m.input_packets_repaired.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_input_assembling_bytes",
            "gauge",
            "Bytes held for co-host access units being reassembled (at most one access unit each).",
            m.input_assembling_bytes.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_frames_out_total",
            "counter",
            "Program pictures encoded.",
            m.frames_out.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_late_frames_total",
            "counter",
            "Program pictures out of the mixer more than one frame interval after their due time.",
            m.driver.late_pictures.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_video_bytes_total",
            "counter",
            "Program H.264 bytes.",
            m.video_bytes.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_audio_frames_total",
            "counter",
            "Program AAC frames.",
            m.audio_frames.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_keyframe_requests_total",
            "counter",
            "Keyframe requests from mixers to publishers.",
            m.keyframe_requests.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_cues_total",
            "counter",
            "Cues stamped into programs.",
            m.cues.load(Ordering::Relaxed),
        );
        let (workers, mixers) = lock(&self.pool)
            .as_ref()
            .map_or((0, 0), |p| (p.threads(), p.mixers()));
        line(
            "cohost_mixer_workers",
            "gauge",
            "Worker threads of the mixer pool (0 before the first program).",
            workers as u64,
        );
        line(
            "cohost_mixers",
            "gauge",
            "Mixers in the pool (one per running program; more means stopped ones linger).",
            mixers as u64,
        );
        let mix_s = m.driver.poll_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(o, "# HELP cohost_program_mix_seconds_total Time mixer threads spent compositing and encoding (video and audio).\n# TYPE cohost_program_mix_seconds_total counter\ncohost_program_mix_seconds_total {mix_s:.6}");
        let g = lock(&self.rooms);
        let viewers: usize = g.values().map(|r| r.viewers.len()).sum();
        let _ = writeln!(o, "# HELP cohost_whep_program_viewers WHEP viewers of programs.\n# TYPE cohost_whep_program_viewers gauge\ncohost_whep_program_viewers {viewers}");
        let _ = writeln!(o, "# HELP cohost_program_rooms Rooms with program state (running, waiting, with outputs, created through the API, or with a layout set).\n# TYPE cohost_program_rooms gauge\ncohost_program_rooms {}", g.len());
        let _ = writeln!(o, "# HELP cohost_rtmp_output_bytes_total Bytes sent per RTMP output.\n# TYPE cohost_rtmp_output_bytes_total counter");
        let mut states = String::new();
        let mut reconnects = String::new();
        let mut segs = String::new();
        let (mut rin, mut rout, mut rlate, mut rmix) =
            (String::new(), String::new(), String::new(), String::new());
        for (room, r) in g.iter() {
            if let Some(run) = &r.running {
                let c = &run.counters;
                let _ = writeln!(
                    rin,
                    "cohost_room_program_frames_in_total{{room=\"{room}\"}} {}",
                    c.frames_in.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    rout,
                    "cohost_room_program_frames_out_total{{room=\"{room}\"}} {}",
                    c.frames_out.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    rlate,
                    "cohost_room_program_late_frames_total{{room=\"{room}\"}} {}",
                    c.driver.late_pictures.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    rmix,
                    "cohost_room_program_mix_seconds_total{{room=\"{room}\"}} {:.6}",
                    c.driver.poll_nanos.load(Ordering::Relaxed) as f64 / 1e9
                );
            }
            for out in r.outputs.outputs() {
                let v = serde_json::to_value(&out).unwrap_or_default();
                let bytes = v["bytes_sent"].as_u64().unwrap_or(0);
                let rc = v["reconnects"].as_u64().unwrap_or(0);
                let state = v["state"].as_str().unwrap_or("unknown").to_owned();
                let _ = writeln!(
                    o,
                    "cohost_rtmp_output_bytes_total{{room=\"{room}\",output=\"{}\"}} {bytes}",
                    out.id
                );
                let _ = writeln!(
                    reconnects,
                    "cohost_rtmp_output_reconnects_total{{room=\"{room}\",output=\"{}\"}} {rc}",
                    out.id
                );
                for s in ["connecting", "live", "retrying", "failed"] {
                    let _ = writeln!(states, "cohost_rtmp_output_state{{room=\"{room}\",output=\"{}\",state=\"{s}\"}} {}", out.id, u8::from(s == state));
                }
            }
            if let Some(last) = r.outputs.hls().sequences().last() {
                let _ = writeln!(
                    segs,
                    "cohost_hls_segments_total{{room=\"{room}\"}} {}",
                    last + 1
                );
            }
        }
        let _ = writeln!(o, "# HELP cohost_rtmp_output_reconnects_total Reconnects per RTMP output.\n# TYPE cohost_rtmp_output_reconnects_total counter\n{reconnects}# HELP cohost_rtmp_output_state RTMP output state (1 = current).\n# TYPE cohost_rtmp_output_state gauge\n{states}# HELP cohost_hls_segments_total HLS segments produced per room.\n# TYPE cohost_hls_segments_total counter\n{segs}");
        let _ = writeln!(o, "# HELP cohost_room_program_frames_in_total Co-host access units fed to the room's running program.\n# TYPE cohost_room_program_frames_in_total counter\n{rin}# HELP cohost_room_program_frames_out_total Pictures encoded by the room's running program.\n# TYPE cohost_room_program_frames_out_total counter\n{rout}# HELP cohost_room_program_late_frames_total Late pictures of the room's running program.\n# TYPE cohost_room_program_late_frames_total counter\n{rlate}# HELP cohost_room_program_mix_seconds_total Mixer time of the room's running program.\n# TYPE cohost_room_program_mix_seconds_total counter\n{rmix}");
        o
    }

    /// The shared mixer pool, started on first use.
    fn pool(&self) -> Result<Arc<MixerPool>, MediaError> {
        let mut p = lock(&self.pool);
        if let Some(pool) = p.as_ref() {
            return Ok(Arc::clone(pool));
        }
        let n = match self.config.mixer_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pool = MixerPool::new(n).map_err(|e| MediaError::Internal(format!("mixer: {e}")))?;
        tracing::info!(threads = pool.threads(), "mixer pool started");
        *p = Some(Arc::clone(&pool));
        Ok(pool)
    }

    fn start(&self, room: &str, r: &mut RoomProgram) -> Result<(), MediaError> {
        let (tx, mut rx) = mpsc::channel::<MixerOutput>(1024);
        let counters = Arc::new(RoomCounters {
            driver: mixer::driver::DriverCounters::child(&self.metrics.driver),
            ..Default::default()
        });
        let driver = self
            .pool()?
            .spawn(r.mix.clone(), counters.driver.clone(), move |o| {
                // The mixer thread never waits on the async side.
                let _ = tx.try_send(o);
            })
            .map_err(|e| MediaError::Internal(format!("mixer: {e}")))?;
        let _ = driver.set_layout(r.layout.clone());
        // The outputs announced the AAC configuration before the mixer ran: check it is the
        // one it encodes (players would fail on every audio frame otherwise).
        let (h, announced) = (driver.handle(), r.outputs.audio_specific_config().to_vec());
        let checked = room.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Ok(headers) = h.headers() {
                if headers.audio_specific_config != announced {
                    tracing::error!(
                        room = %checked,
                        mixer = ?headers.audio_specific_config,
                        outputs = ?announced,
                        "the mixer's AAC configuration differs from the one the outputs announce"
                    );
                }
            }
        });
        // Opus program audio only while WHEP viewers watch (add_viewer / remove_viewer).
        let _ = driver.set_opus_output(!r.viewers.is_empty());
        let outputs = r.outputs.clone();
        let media_tx = r.media_tx.clone();
        let metrics = self.metrics.clone();
        let sfu = self.sfu.clone();
        let room_name = room.to_owned();
        let room_counters = counters.clone();
        let pump = tokio::spawn(
            async move {
                while let Some(o) = rx.recv().await {
                    outputs.push(&o);
                    match o {
                        MixerOutput::Video(v) => {
                            metrics.frames_out.fetch_add(1, Ordering::Relaxed);
                            room_counters.frames_out.fetch_add(1, Ordering::Relaxed);
                            metrics
                                .video_bytes
                                .fetch_add(v.data.len() as u64, Ordering::Relaxed);
                            let _ = media_tx.send(ProgramMedia::Video {
                                data: v.data,
                                keyframe: v.keyframe,
                            });
                        }
                        MixerOutput::Audio(_) => {
                            metrics.audio_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        MixerOutput::Opus(op) => {
                            let _ = media_tx.send(ProgramMedia::Opus { data: op.data });
                        }
                        MixerOutput::Event(MixerEvent::RequestKeyframe(id)) => {
                            metrics.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            if let Some(p) =
                                sfu.upgrade().and_then(|s| s.publisher(&room_name, &id))
                            {
                                p.request_keyframe();
                            }
                        }
                        MixerOutput::Event(MixerEvent::Presented { .. }) => {}
                        MixerOutput::Event(e) => debug!(event = ?e, "mixer"),
                        _ => {}
                    }
                }
            }
            .instrument(info_span!("program", room = %room)),
        );
        self.metrics
            .programs_started
            .fetch_add(1, Ordering::Relaxed);
        info!(
            room,
            width = r.mix.width,
            height = r.mix.height,
            fps = r.mix.fps,
            "program started"
        );
        r.running = Some(Running {
            driver: Arc::new(driver),
            counters,
            feeders: HashMap::new(),
            pump,
            stop_timer: None,
        });
        Ok(())
    }

    fn feed(
        &self,
        room: &str,
        p: &Arc<Publisher>,
        driver: Arc<MixerDriver>,
        room_counters: Arc<RoomCounters>,
    ) -> Vec<JoinHandle<()>> {
        let span = info_span!("program_input", room = %room, identity = %p.identity);
        let mut tasks = Vec::new();
        let mut vrx = p.video.tx.subscribe();
        let (pv, dv, m) = (p.clone(), driver.clone(), self.metrics.clone());
        tasks.push(tokio::spawn(
            async move {
                let mut asm = H264Assembler::new();
                let mut reorder = ReorderBuffer::new(ReorderConfig::default());
                let mut counted = ReorderStats::default();
                // What this input's assembler holds, as counted in the gauge (given back
                // when the task ends or is aborted).
                let mut held = Held {
                    gauge: m.clone(),
                    bytes: 0,
                };
                pv.request_keyframe();
                loop {
                    let deadline = reorder.deadline();
                    let released = tokio::select! {
                        r = vrx.recv() => match r {
                            Ok(p) => reorder.push(p.packet, p.at),
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                asm = H264Assembler::new();
                                reorder = ReorderBuffer::new(ReorderConfig::default());
                                counted = ReorderStats::default();
                                pv.request_keyframe();
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                        () = sleep_until_opt(deadline) => reorder.poll(Instant::now()),
                    };
                    let st = reorder.stats();
                    if st.lost > counted.lost || st.repaired > counted.repaired {
                        debug!(
                            lost = st.lost - counted.lost,
                            repaired = st.repaired - counted.repaired,
                            wait_ms = reorder.wait().as_millis() as u64,
                            "video input holes"
                        );
                    }
                    m.input_packets_lost
                        .fetch_add(st.lost - counted.lost, Ordering::Relaxed);
                    m.input_packets_repaired
                        .fetch_add(st.repaired - counted.repaired, Ordering::Relaxed);
                    counted = st;
                    for r in released {
                        let Released::Packet(pkt) = r else {
                            // The assembler sees the gap in sequence numbers and drops frames
                            // until a keyframe; it asks for one below.
                            continue;
                        };
                        match asm.push(&pkt) {
                            Assembled::AccessUnit { data, rtp_ts } => {
                                m.frames_in.fetch_add(1, Ordering::Relaxed);
                                room_counters.frames_in.fetch_add(1, Ordering::Relaxed);
                                if dv
                                    .push_video(&pv.identity, Bytes::from(data), rtp_ts)
                                    .is_err()
                                {
                                    m.frames_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Assembled::NeedKeyframe => pv.request_keyframe(),
                            Assembled::Pending => {}
                        }
                    }
                    held.set(asm.buffered() as u64);
                }
            }
            .instrument(span.clone()),
        ));
        let mut arx = p.audio.tx.subscribe();
        let (pa, da) = (p.clone(), driver);
        tasks.push(tokio::spawn(
            async move {
                loop {
                    match arx.recv().await {
                        Ok(pkt) => {
                            let _ = da.push_opus(
                                &pa.identity,
                                pkt.packet.payload.clone(),
                                pkt.packet.header.timestamp,
                            );
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            .instrument(span),
        ));
        tasks
    }

    fn stop_later(&self, room: &str) -> JoinHandle<()> {
        self.stop_after(room, self.config.grace)
    }

    fn stop_after(&self, room: &str, grace: Duration) -> JoinHandle<()> {
        let me = self.me.clone();
        let room = room.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(me) = me.upgrade() {
                me.stop(&room, false).await;
            }
        })
    }

    /// Stops every program and its outputs (server shutdown).
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let rooms: Vec<String> = {
            let mut g = lock(&self.rooms);
            for r in g.values_mut() {
                r.waiting.clear();
                r.waiting_since = None;
                if let Some(run) = r.running.as_mut() {
                    for (_, t) in run.feeders.drain() {
                        t.iter().for_each(|t| t.abort());
                    }
                }
            }
            g.keys().cloned().collect()
        };
        for room in rooms {
            self.stop(&room, true).await;
        }
    }

    /// Stops `room`'s program if no co-host feeds it. Its RTMP outputs (operator resources)
    /// outlive it — idle, connected, resumed by the next program on a continuous timeline —
    /// unless `close` (the room was deleted) or there are none.
    async fn stop(&self, room: &str, close: bool) {
        let (run, viewers, outputs) = {
            let mut g = lock(&self.rooms);
            let Some(r) = g.get_mut(room) else { return };
            if r.running.as_ref().is_some_and(|x| !x.feeders.is_empty()) {
                return;
            }
            let run = r.running.take();
            let viewers: Vec<Viewer> = r.viewers.drain().map(|(_, v)| v).collect();
            let keep = !close && (r.persistent || !r.outputs.outputs().is_empty());
            let outputs = if keep {
                None
            } else {
                g.remove(room).map(|r| r.outputs)
            };
            (run, viewers, outputs)
        };
        if let Some(run) = run {
            run.pump.abort();
            if let Ok(d) = Arc::try_unwrap(run.driver) {
                tokio::task::spawn_blocking(move || d.stop());
            }
            info!(room, "program stopped");
            self.start_waiting();
        }
        for (pc, tasks) in viewers {
            tasks.iter().for_each(|t| t.abort());
            let _ = pc.close().await;
        }
        if let Some(o) = outputs {
            o.shutdown().await;
        }
    }

    async fn add_viewer(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        let (media_rx, driver, fps) = {
            let g = lock(&self.rooms);
            let r = g
                .get(room)
                .filter(|r| r.running.is_some())
                .ok_or_else(|| self.no_program(room, g.get(room)))?;
            if self.viewers_full(r) {
                return Err(self.viewers_full_error(room));
            }
            (
                r.media_tx.subscribe(),
                r.running.as_ref().map(|x| x.driver.clone()),
                r.mix.fps.max(1),
            )
        };
        let peer = self.engine.new_peer().await?;
        let vssrc: u32 = rand::random();
        let assrc: u32 = rand::random();
        let mk = |kind, ssrc, codec: RTCRtpCodec, k: &str| {
            TrackLocalStaticSample::new(
                Instant::now(),
                crate::rtc::local_track(
                    format!("program-{room}"),
                    format!("program-{k}"),
                    kind,
                    ssrc,
                    codec,
                ),
            )
            .map(Arc::new)
            .map_err(|e| MediaError::Internal(e.to_string()))
        };
        let video = mk(
            RtpCodecKind::Video,
            vssrc,
            crate::rtc::h264_codec("42e01f"),
            "video",
        )?;
        let audio = mk(
            RtpCodecKind::Audio,
            assrc,
            crate::rtc::opus_codec(),
            "audio",
        )?;
        let vs = peer
            .pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let as_ = peer
            .pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let answer = match peer.answer(offer).await {
            Ok(a) => a,
            Err(e) => {
                let _ = peer.pc.close().await;
                return Err(e.into());
            }
        };
        let pt_of = |params: Option<rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters>,
                     mime: &str| {
            params.and_then(|p| {
                p.rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    .map(|c| c.payload_type)
            })
        };
        let vpt = pt_of(vs.get_parameters().await.ok(), "video/H264");
        let apt = pt_of(as_.get_parameters().await.ok(), "audio/opus");
        if let Some(d) = &driver {
            let _ = d.request_keyframe();
        }
        // Each picture lasts one frame of the program's rate (its RTP timestamps advance so).
        let frame = Duration::from_secs_f64(1.0 / f64::from(fps));
        let mut rx = media_rx;
        let task = tokio::spawn(
            async move {
                let mut started = false;
                loop {
                    let m = match rx.recv().await {
                        Ok(m) => m,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            started = false;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    match m {
                        ProgramMedia::Video { data, keyframe } => {
                            let Some(pt) = vpt else { continue };
                            started |= keyframe;
                            if !started {
                                continue;
                            }
                            let s = Sample {
                                data,
                                duration: frame,
                                ..Sample::new(Instant::now())
                            };
                            if video.write_sample(vssrc, pt, &s, &[]).await.is_err() {
                                break;
                            }
                        }
                        ProgramMedia::Opus { data } => {
                            let Some(pt) = apt else { continue };
                            let s = Sample {
                                data,
                                duration: Duration::from_millis(20),
                                ..Sample::new(Instant::now())
                            };
                            if audio.write_sample(assrc, pt, &s, &[]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            .instrument(info_span!("whep_program", room = %room, viewer = %viewer)),
        );
        let pc = peer.pc.clone();
        let mut events = peer.events;
        let me = self.me.clone();
        let (room2, viewer2) = (room.to_owned(), viewer.to_owned());
        let watcher = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let crate::rtc::PeerEvent::State(s) = ev {
                    use webrtc::peer_connection::RTCPeerConnectionState as S;
                    if matches!(s, S::Failed | S::Closed) {
                        break;
                    }
                }
            }
            if let Some(me) = me.upgrade() {
                me.remove_viewer(&room2, &viewer2).await;
            }
        });
        let refused: Option<Viewer> = {
            let entry = (pc, vec![task, watcher]);
            let mut g = lock(&self.rooms);
            match g.get_mut(room) {
                // Others took the last places while this one was being set up.
                Some(r) if self.viewers_full(r) => Some(entry),
                Some(r) => {
                    r.viewers.insert(viewer.to_owned(), entry);
                    if let Some(run) = &r.running {
                        let _ = run.driver.set_opus_output(true);
                    }
                    None
                }
                None => None,
            }
        };
        if let Some((pc, tasks)) = refused {
            tasks.iter().for_each(|t| t.abort());
            let _ = pc.close().await;
            return Err(self.viewers_full_error(room));
        }
        info!(room, viewer, "program viewer");
        Ok(answer)
    }

    fn viewers_full(&self, r: &RoomProgram) -> bool {
        self.config.max_viewers > 0 && r.viewers.len() >= self.config.max_viewers
    }

    fn viewers_full_error(&self, room: &str) -> MediaError {
        MediaError::Unavailable(format!(
            "the program of `{room}` has its {} WHEP viewers; the audience watches /live/{room}/index.m3u8 or the CDN",
            self.config.max_viewers
        ))
    }

    async fn remove_viewer(&self, room: &str, viewer: &str) -> bool {
        let v = lock(&self.rooms).get_mut(room).and_then(|r| {
            let v = r.viewers.remove(viewer);
            if let (true, Some(run)) = (r.viewers.is_empty(), &r.running) {
                let _ = run.driver.set_opus_output(false);
            }
            v
        });
        let Some((pc, tasks)) = v else {
            return false;
        };
        tasks.iter().for_each(|t| t.abort());
        let _ = pc.close().await;
        true
    }
}

impl ProgramSink for Programs {
    fn publisher_ready(&self, room: &str, publisher: &Arc<Publisher>) {
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        let mut g = lock(&self.rooms);
        let full = self.at_capacity(&g);
        let r = g
            .entry(room.to_owned())
            .or_insert_with(|| RoomProgram::new(self.config.default_mix.clone()));
        if r.running.is_none() {
            if full {
                self.wait_for_slot(&mut g, room, publisher);
                return;
            }
            if let Err(e) = self.start(room, r) {
                warn!(room, error = %e, "cannot start the program");
                return;
            }
        }
        self.attach(room, r, publisher);
    }

    fn publisher_gone(&self, room: &str, identity: &str) {
        let mut g = lock(&self.rooms);
        if let Some(r) = g.get_mut(room) {
            r.waiting.retain(|p| p.identity != identity);
            if r.waiting.is_empty() {
                r.waiting_since = None;
            }
        }
        let someone_waits = g
            .values()
            .any(|r| r.running.is_none() && !r.waiting.is_empty());
        let Some(run) = g.get_mut(room).and_then(|r| r.running.as_mut()) else {
            return;
        };
        if let Some(tasks) = run.feeders.remove(identity) {
            tasks.iter().for_each(|t| t.abort());
        }
        let _ = run.driver.remove_input(identity);
        if run.feeders.is_empty() && run.stop_timer.is_none() {
            // No grace period when another room waits for this slot.
            run.stop_timer = Some(if someone_waits {
                self.stop_after(room, Duration::ZERO)
            } else {
                self.stop_later(room)
            });
        }
    }
}

/// `a` is at or after `b` in RTP timestamp order (wrapping).
/// Sleeps until `t`, or for ever when there is none.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Longest a cue waits for the host frame it refers to.
const CUE_WAIT_MAX: Duration = Duration::from_millis(1500);

impl Programs {
    /// Cues on time: the host's frame captured at `at_capture_ms` (the host's own clock, e.g.
    /// `performance.timeOrigin + performance.now()` when the button was pressed) as (host
    /// identity, RTP timestamp), so the mixer stamps the cue into the program frame that shows
    /// it rather than into whatever frame is next when the request arrives. The capture time
    /// is mapped to the host video's RTP clock through the host's RTCP sender reports (whose
    /// NTP time is the same clock), so no clock needs to agree with the server's. `None`
    /// without a host publishing or a sender report yet.
    fn capture_rtp(&self, room: &str, at_capture_ms: f64) -> Option<(String, u32)> {
        let host = self.sfu.upgrade().and_then(|s| s.host_publisher(room))?;
        let ts = host.video.rtp_at(at_capture_ms, 90_000.0)?;
        // The picture nearest the press, not the first after it: capture times and RTP
        // timestamps each carry a few ms of rounding (half a frame at 30 fps).
        Some((host.identity.clone(), ts.wrapping_sub(1500)))
    }
}

fn cue_error(e: CueError) -> MediaError {
    match e {
        CueError::TooLarge { .. } => MediaError::TooLarge(e.to_string()),
        CueError::Stopped => MediaError::Unavailable(e.to_string()),
        _ => MediaError::BadRequest(e.to_string()),
    }
}

#[async_trait::async_trait]
impl ProgramControl for Programs {
    fn create_room(&self, room: &str, mix: Option<Value>) -> Result<(), MediaError> {
        let mix = match mix {
            Some(v) => serde_json::from_value::<MixConfig>(v)
                .map_err(|e| MediaError::BadRequest(format!("mix: {e}")))?,
            None => self.config.default_mix.clone(),
        };
        mix.validate()
            .map_err(|e| MediaError::BadRequest(format!("mix: {e}")))?;
        let mut g = lock(&self.rooms);
        match g.get_mut(room) {
            Some(r) if r.running.is_some() => {
                return Err(MediaError::BadRequest(
                    "the room's program is running; its mix cannot change now".into(),
                ))
            }
            Some(r) => {
                r.layout = mix.layout.clone();
                // The outputs announce what the program will be.
                r.outputs.set_metadata(&metadata(&mix));
                r.mix = mix;
                r.persistent = true;
            }
            None => {
                let mut r = RoomProgram::new(mix);
                r.persistent = true;
                g.insert(room.to_owned(), r);
            }
        }
        Ok(())
    }

    fn forget_idle(&self, room: &str) {
        let mut g = lock(&self.rooms);
        let idle = g.get(room).is_some_and(|r| {
            r.running.is_none()
                && !r.persistent
                && r.viewers.is_empty()
                && r.waiting.is_empty()
                && r.outputs.outputs().is_empty()
        });
        if idle {
            g.remove(room);
        }
    }

    fn close_room(&self, room: &str) {
        if let Some(run) = lock(&self.rooms)
            .get_mut(room)
            .and_then(|r| r.running.as_mut())
        {
            for (_, t) in run.feeders.drain() {
                t.iter().for_each(|t| t.abort());
            }
        }
        if let Some(me) = self.me.upgrade() {
            let room = room.to_owned();
            tokio::spawn(async move { me.stop(&room, true).await });
        }
    }

    async fn room_info(&self, room: &str) -> Value {
        let (mut info, driver) = {
            let g = lock(&self.rooms);
            let Some(r) = g.get(room) else {
                return Value::Null;
            };
            let info = json!({
                "running": r.running.is_some(),
                "waiting_for_slot": r.running.is_none() && !r.waiting.is_empty(),
                "mix": r.mix,
                "layout": r.layout,
                "outputs": r.outputs.outputs(),
                "hls": format!("/live/{room}/index.m3u8"),
                "whep_viewers": r.viewers.len(),
            });
            (info, r.running.as_ref().map(|x| x.driver.handle()))
        };
        if let Some(h) = driver {
            // A short round trip to the mixer thread, off the async workers.
            if let Ok(Ok(st)) = tokio::task::spawn_blocking(move || h.state()).await {
                info["regions"] = json!(st.regions);
                info["frames"] = json!(st.video_frames);
                info["inputs"] = json!(st.inputs);
            }
        }
        info
    }

    fn set_layout(&self, room: &str, layout: Value) -> Result<Value, MediaError> {
        let l: Layout = serde_json::from_value(layout)
            .map_err(|e| MediaError::BadRequest(format!("layout: {e}")))?;
        let mut g = lock(&self.rooms);
        let r = g
            .entry(room.to_owned())
            .or_insert_with(|| RoomProgram::new(self.config.default_mix.clone()));
        r.layout = l.clone();
        if let Some(run) = &r.running {
            run.driver
                .set_layout(l.clone())
                .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        }
        serde_json::to_value(&l).map_err(|e| MediaError::Internal(e.to_string()))
    }

    async fn cue(
        &self,
        room: &str,
        id: &str,
        data: Value,
        repeat: u32,
        at_capture_ms: Option<f64>,
    ) -> Result<CueAck, MediaError> {
        // Cues on time: the host's frame captured at `at_capture_ms`, on the host video's RTP
        // clock (through its sender reports).
        let at = at_capture_ms.and_then(|t| self.capture_rtp(room, t));
        let driver = {
            let mut g = lock(&self.rooms);
            if let Some(&pts_ms) = g.get(room).and_then(|r| r.cue_acks.get(id)) {
                return Ok(CueAck {
                    id: id.to_owned(),
                    pts_ms,
                    duplicate: true,
                });
            }
            let r = match g.get_mut(room) {
                Some(r) if r.running.is_some() => r,
                other => return Err(self.no_program(room, other.map(|r| &*r))),
            };
            let now = Instant::now();
            while r
                .cue_times
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.config.cue_window)
            {
                r.cue_times.pop_front();
            }
            if r.cue_times.len() >= self.config.cue_limit {
                return Err(MediaError::RateLimited(format!(
                    "at most {} cues per {} s per room",
                    self.config.cue_limit,
                    self.config.cue_window.as_secs()
                )));
            }
            r.cue_times.push_back(now);
            r.running.as_ref().map(|x| x.driver.clone())
        };
        let Some(driver) = driver else {
            return Err(MediaError::Unavailable("no program".into()));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = move |r| {
            let _ = tx.send(r);
        };
        match at {
            Some((identity, rtp_ts)) => driver.handle().cue_when_shown_then(
                id,
                data,
                repeat,
                &identity,
                rtp_ts,
                CUE_WAIT_MAX,
                reply,
            ),
            None => driver.handle().cue_then(id, data, repeat, reply),
        }
        .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        let res = rx
            .await
            .map_err(|_| MediaError::Unavailable("the program stopped".into()))
            .and_then(|r| r.map_err(cue_error));
        if res.as_ref().map_or(true, |a| a.duplicate) {
            // A refused cue, or an id seen before, is not a new cue: give its slot back.
            if let Some(r) = lock(&self.rooms).get_mut(room) {
                r.cue_times.pop_back();
            }
        }
        let ack = res?;
        if !ack.duplicate {
            self.metrics.cues.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = lock(&self.rooms).get_mut(room) {
            if r.cue_acks.insert(ack.id.clone(), ack.pts_ms).is_none() {
                r.cue_ack_order.push_back(ack.id.clone());
                while r.cue_ack_order.len() > CUE_IDS_KEPT {
                    if let Some(old) = r.cue_ack_order.pop_front() {
                        r.cue_acks.remove(&old);
                    }
                }
            }
        }
        Ok(CueAck {
            id: ack.id,
            pts_ms: ack.pts_ms,
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(
        &self,
        room: &str,
        viewer: &str,
        offer: String,
    ) -> Result<String, MediaError> {
        self.add_viewer(room, viewer, offer).await
    }

    async fn unsubscribe(&self, room: &str, viewer: &str) -> bool {
        self.remove_viewer(room, viewer).await
    }
    fn viewer_pc(&self, room: &str, viewer: &str) -> Option<Arc<dyn PeerConnection>> {
        lock(&self.rooms)
            .get(room)?
            .viewers
            .get(viewer)
            .map(|(pc, _)| pc.clone())
    }
}
