//! The live program of each room: the SFU's publishers feed a mixer (on its own thread); its
//! output goes to RTMP outputs and HLS ([`crate::output::ProgramOutputs`]) and to WHEP program
//! viewers. The program starts when the first co-host publishes and stops a grace period after
//! the last one leaves; layout, cues and outputs are controlled through the API.

use crate::sync::lock;
use std::collections::HashMap;
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
use crate::sfu::{ProgramControl, Publisher, SfuEvent};

mod control;
pub use control::RoomSnapshot;
mod cues;
use cues::CueBook;
mod feed;
mod inputs;
mod metrics;
mod router;
mod slots;
use slots::{Admission, Slots};
mod viewers;

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
    /// Most HTTP-FLV viewers of one room's program (0 = no limit; `--max-room-viewers`);
    /// past it `GET /live/{room}.flv` answers 429.
    pub max_flv_viewers: usize,
    /// Where program recordings are written (`--recordings-dir`).
    pub recordings: crate::output::recording::RecordingsConfig,
    /// Fonts of the tile labels (`mix.labels`), in fallback order (`--label-fonts`).
    pub label_fonts: Vec<std::path::PathBuf>,
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
            max_flv_viewers: 256,
            recordings: Default::default(),
            label_fonts: mixer::text::DEFAULT_FONT_PATHS
                .iter()
                .map(std::path::PathBuf::from)
                .collect(),
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
    /// HTTP-FLV viewers over all rooms.
    pub flv: Arc<crate::output::flv_live::FlvStats>,
    /// Program recordings over all rooms.
    pub recordings: Arc<crate::output::recording::RecordingStats>,
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
    /// When a WHEP viewer's PLI/FIR last made the program send a keyframe (all viewers of
    /// the room share it: one lossy viewer cannot make every output's bitrate jump).
    viewer_keyframe: Arc<Mutex<Option<Instant>>>,
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
    /// The room's cue rate limit and the answers to its latest cues.
    cues: CueBook,
    layout: Layout,
    /// The room's publications the SFU announced ready (keyframe requests, the host's
    /// sender clock for cues on time); weak, the SFU owns them.
    publishers: HashMap<String, Weak<Publisher>>,
    /// Publishers ready while no program slot was free (`max_programs`), in order.
    waiting: Vec<Arc<Publisher>>,
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
    fn new(room: &str, mix: MixConfig, programs: &Programs) -> Self {
        let meta = metadata(&mix);
        // AAC-LC, 48 kHz, stereo: what the mixer encodes (checked against it at start).
        let outputs = ProgramOutputs::new(ProgramOutputsConfig {
            room: room.to_owned(),
            recordings: programs.config.recordings.clone(),
            recording_stats: programs.metrics.recordings.clone(),
            ..ProgramOutputsConfig::new(meta, PROGRAM_ASC.to_vec())
        });
        RoomProgram {
            layout: mix.layout.clone(),
            mix,
            outputs,
            running: None,
            media_tx: broadcast::channel(512).0,
            viewers: HashMap::new(),
            cues: CueBook::default(),
            publishers: HashMap::new(),
            waiting: Vec::new(),
            persistent: false,
        }
    }
}

/// All rooms' programs.
pub struct Programs {
    config: ProgramConfig,
    engine: Arc<RtcEngine>,
    rooms: Mutex<HashMap<String, RoomProgram>>,
    /// Who holds a program slot and who waits (locked after `rooms`, never before).
    slots: Mutex<Slots>,
    /// Mixer worker threads shared by all rooms (created with the first program).
    pool: Mutex<Option<Arc<MixerPool>>>,
    /// Counters.
    pub metrics: Arc<ProgramMetrics>,
    /// Set by [`Programs::shutdown`]: no waiting program starts any more.
    closing: AtomicBool,
    /// Snapshots reused and rate-limited per room.
    pub snapshots: Mutex<crate::output::snapshot::SnapshotLimiter>,
    /// The images overlays and background images name.
    images: crate::studio::ImageLibrary,
    /// The tile labels' fonts (none: labels are not drawn).
    fonts: Option<Arc<mixer::text::Fonts>>,
    me: Weak<Programs>,
}

impl Programs {
    /// New; [`Programs::follow`] hands it the SFU's publishers.
    pub fn new(config: ProgramConfig, engine: Arc<RtcEngine>) -> Arc<Self> {
        let fonts = crate::studio::load_fonts(&config.label_fonts);
        Arc::new_cyclic(|me| Programs {
            slots: Mutex::new(Slots::new(config.max_programs)),
            config,
            engine,
            rooms: Mutex::new(HashMap::new()),
            pool: Mutex::new(None),
            metrics: Arc::new(ProgramMetrics::default()),
            closing: AtomicBool::new(false),
            snapshots: Mutex::default(),
            images: Default::default(),
            fonts,
            me: me.clone(),
        })
    }

    /// The HLS store of a room's program.
    pub fn hls(&self, room: &str) -> Option<crate::output::HlsStore> {
        lock(&self.rooms).get(room).map(|r| r.outputs.hls())
    }

    /// The latest picture of a room's running program (`None` without a program or before
    /// its first picture); a short round trip to the mixer thread, off the async workers.
    pub async fn picture(&self, room: &str) -> Option<mixer::compose::I420Frame> {
        let h = lock(&self.rooms)
            .get(room)
            .and_then(|r| r.running.as_ref().map(|x| x.driver.handle()))?;
        tokio::task::spawn_blocking(move || h.snapshot())
            .await
            .ok()?
            .ok()
            .flatten()
    }

    /// The image library.
    pub fn images(&self) -> &crate::studio::ImageLibrary {
        &self.images
    }

    /// Stores an image and hands it to every running program (from its next frame).
    pub fn put_image(
        &self,
        name: &str,
        image: mixer::decor::Image,
        bytes: usize,
    ) -> Result<crate::studio::ImageInfo, crate::studio::LibraryError> {
        let info = self.images.put(name, image.clone(), bytes)?;
        for d in self.drivers() {
            let _ = d.set_image(name, Some(image.clone()));
        }
        Ok(info)
    }

    /// Removes an image from the library and from every running program.
    pub fn remove_image(&self, name: &str) -> bool {
        let removed = self.images.remove(name);
        if removed {
            for d in self.drivers() {
                let _ = d.set_image(name, None);
            }
        }
        removed
    }

    fn drivers(&self) -> Vec<Arc<MixerDriver>> {
        lock(&self.rooms)
            .values()
            .filter_map(|r| r.running.as_ref().map(|x| x.driver.clone()))
            .collect()
    }

    /// Where recordings are written.
    pub fn recordings_config(&self) -> &crate::output::recording::RecordingsConfig {
        &self.config.recordings
    }

    /// Starts recording `room`'s program (`POST /api/rooms/{room}/recordings`): from a
    /// keyframe the running program sends at once, or from the room's next program.
    pub fn start_recording(
        &self,
        room: &str,
    ) -> Option<
        Result<crate::output::recording::RecordingInfo, crate::output::recording::RecordingError>,
    > {
        let outputs = self.outputs(room, true)?;
        let started = outputs.recordings().start();
        if started.is_ok() {
            let driver = lock(&self.rooms)
                .get(room)
                .and_then(|r| r.running.as_ref().map(|x| x.driver.clone()));
            if let Some(d) = driver {
                let _ = d.request_keyframe();
            }
        }
        Some(started)
    }

    /// The outputs of a room whose program is running (HTTP-FLV viewers join only those).
    pub fn running_outputs(&self, room: &str) -> Option<ProgramOutputs> {
        lock(&self.rooms)
            .get(room)
            .filter(|r| r.running.is_some())
            .map(|r| r.outputs.clone())
    }

    /// Most HTTP-FLV viewers of one room's program (0 = no limit).
    pub fn max_flv_viewers(&self) -> usize {
        self.config.max_flv_viewers
    }

    /// The outputs of a room, created on demand (so outputs can be added before the show).
    /// `create`: the caller adds an output, which makes the room's program state persistent.
    pub fn outputs(&self, room: &str, create: bool) -> Option<ProgramOutputs> {
        let mut g = lock(&self.rooms);
        if create {
            g.entry(room.to_owned())
                .or_insert_with(|| RoomProgram::new(room, self.config.default_mix.clone(), self))
                .persistent = true;
        }
        g.get(room).map(|r| r.outputs.clone())
    }

    /// Number of running programs.
    pub fn running(&self) -> usize {
        lock(&self.slots).running()
    }

    /// Number of rooms whose program waits for a free slot (`max_programs`).
    pub fn waiting(&self) -> usize {
        lock(&self.slots).waiting()
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

    /// Starts waiting programs, oldest first, while slots are free.
    fn start_waiting(&self) {
        let mut g = lock(&self.rooms);
        while !self.closing.load(Ordering::SeqCst) {
            let next = lock(&self.slots).next().map(str::to_owned);
            let Some(room) = next else { return };
            let Some(r) = g.get_mut(&room) else {
                lock(&self.slots).withdraw(&room);
                continue;
            };
            // On failure the room keeps waiting with its publishers.
            if let Err(e) = self.start(&room, r) {
                warn!(room, error = %e, "cannot start the waiting program");
                return;
            }
            let publishers = std::mem::take(&mut r.waiting);
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
        first: bool,
    ) {
        let Some(r) = g.get_mut(room) else { return };
        if first {
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
        let _ = run
            .driver
            .set_display_name(&publisher.identity, &publisher.name);
        let tasks = self.feed(room, publisher, run.driver.clone(), run.counters.clone());
        if let Some(old) = run.feeders.insert(publisher.identity.clone(), tasks) {
            old.iter().for_each(|t| t.abort());
        }
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
        let (tx, rx) = mpsc::channel::<MixerOutput>(1024);
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
        // The studio: fonts, images, decor (the mix's, changed live since).
        if let Some(f) = &self.fonts {
            let _ = driver.set_fonts(f.clone());
        }
        for (name, image) in self.images.all() {
            let _ = driver.set_image(&name, Some(image));
        }
        let _ = driver.set_decor(r.mix.decor());
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
        let pump = router::OutputRouter {
            room: room.to_owned(),
            outputs: r.outputs.clone(),
            media_tx: r.media_tx.clone(),
            metrics: self.metrics.clone(),
            counters: counters.clone(),
            programs: self.me.clone(),
        }
        .spawn(rx);
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
        let waited = lock(&self.slots).started(room, Instant::now());
        if waited.is_some() {
            info!(room, ?waited, "program slot free: waiting program started");
        }
        // Recordings continue into new files, `mix.record` starts one (from this program's
        // first picture, a keyframe).
        r.outputs.recordings().program_started(r.mix.record);
        r.running = Some(Running {
            driver: Arc::new(driver),
            viewer_keyframe: Arc::new(Mutex::new(None)),
            counters,
            feeders: HashMap::new(),
            pump,
            stop_timer: None,
        });
        Ok(())
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
            lock(&self.slots).clear_waiting();
            for r in g.values_mut() {
                r.waiting.clear();
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
            if run.is_some() {
                lock(&self.slots).stopped(room);
                // Its HTTP-FLV viewers get the end of the stream, its recordings finish.
                r.outputs.end_flv();
                r.outputs.recordings().program_stopped();
            }
            let viewers: Vec<Viewer> = r.viewers.drain().map(|(_, v)| v).collect();
            let keep = !close && (r.persistent || !r.outputs.outputs().is_empty());
            let outputs = if keep {
                None
            } else {
                lock(&self.slots).withdraw(room);
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
}

/// Sleeps until `t`, or for ever when there is none.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
