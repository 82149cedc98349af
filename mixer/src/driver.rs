//! A driver running a [`Mixer`] on its own thread at the program rate.
//!
//! The driver owns the real clock: it takes an `Instant` at start and stamps every input with
//! the time elapsed since then. Inputs and commands go in through one bounded
//! `std::sync::mpsc::sync_channel`; media pushes never block (a full queue drops the item and
//! says so), control commands wait for room and answer on a reply channel. Outputs go to a
//! callback run on the mixer thread: keep it short (e.g. forward into a channel).
//!
//! ```no_run
//! use mixer::{driver::MixerDriver, MixConfig, MixerOutput};
//! let (tx, rx) = std::sync::mpsc::sync_channel::<MixerOutput>(256);
//! let driver = MixerDriver::spawn(MixConfig::default(), move |o| { let _ = tx.try_send(o); })?;
//! driver.add_input("alice", true)?;
//! // driver.push_video("alice", access_unit, rtp_ts)?;
//! let _ack = driver.cue("ad-1", serde_json::json!({"x": 1}), 3)?;
//! driver.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{CueError, MixConfig, MixerError};
use crate::layout::Layout;
use crate::mixer::{CueAck, MixState, Mixer, MixerOutput};

/// Capacity of the driver's input queue.
pub const QUEUE_CAPACITY: usize = 1024;

type CueReply = Box<dyn FnOnce(Result<CueAck, CueError>) + Send>;

enum Command {
    AddInput(String, bool),
    RemoveInput(String),
    Video(String, Bytes, u32),
    Opus(String, Bytes, u32),
    Pcm(String, Vec<f32>),
    SetLayout(Layout),
    Cue(String, serde_json::Value, u32, CueReply),
    RequestKeyframe,
    Headers(SyncSender<Headers>),
    State(SyncSender<MixState>),
    Stop,
}

/// Codec headers muxers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// AVCDecoderConfigurationRecord, once the first picture is encoded.
    pub avc_decoder_config: Option<Vec<u8>>,
    /// AAC AudioSpecificConfig.
    pub audio_specific_config: Vec<u8>,
}

/// A cheap, cloneable sender of inputs and commands to a running mixer thread.
#[derive(Debug, Clone)]
pub struct MixerHandle {
    tx: SyncSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl MixerHandle {
    fn send(&self, c: Command) -> Result<(), MixerError> {
        self.tx.send(c).map_err(|_| MixerError::Stopped)
    }

    fn try_send(&self, c: Command) -> Result<(), MixerError> {
        self.tx.try_send(c).map_err(|e| match e {
            TrySendError::Full(_) => MixerError::QueueFull,
            TrySendError::Disconnected(_) => MixerError::Stopped,
        })
    }

    /// Adds an input (queues a keyframe request for it).
    pub fn add_input(&self, identity: &str, is_host: bool) -> Result<(), MixerError> {
        self.send(Command::AddInput(identity.to_owned(), is_host))
    }

    /// Removes an input.
    pub fn remove_input(&self, identity: &str) -> Result<(), MixerError> {
        self.send(Command::RemoveInput(identity.to_owned()))
    }

    /// Pushes a video access unit (Annex-B); never blocks (`QueueFull` drops it).
    pub fn push_video(
        &self,
        identity: &str,
        access_unit: Bytes,
        rtp_ts_90k: u32,
    ) -> Result<(), MixerError> {
        self.try_send(Command::Video(identity.to_owned(), access_unit, rtp_ts_90k))
    }

    /// Pushes an Opus packet; never blocks (`QueueFull` drops it).
    pub fn push_opus(
        &self,
        identity: &str,
        packet: Bytes,
        rtp_ts_48k: u32,
    ) -> Result<(), MixerError> {
        self.try_send(Command::Opus(identity.to_owned(), packet, rtp_ts_48k))
    }

    /// Pushes interleaved stereo 48 kHz PCM; never blocks.
    pub fn push_pcm(&self, identity: &str, samples: Vec<f32>) -> Result<(), MixerError> {
        self.try_send(Command::Pcm(identity.to_owned(), samples))
    }

    /// Changes the layout from the next frame.
    pub fn set_layout(&self, layout: Layout) -> Result<(), MixerError> {
        self.send(Command::SetLayout(layout))
    }

    /// Asks for an IDR picture next (a new RTMP/HLS/WHEP consumer).
    pub fn request_keyframe(&self) -> Result<(), MixerError> {
        self.send(Command::RequestKeyframe)
    }

    /// Queues a cue; `reply` runs on the mixer thread with the answer (use it to complete
    /// an async oneshot). Fails only if the mixer is gone (then `reply` is not called).
    pub fn cue_then<F>(
        &self,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
        reply: F,
    ) -> Result<(), MixerError>
    where
        F: FnOnce(Result<CueAck, CueError>) + Send + 'static,
    {
        self.send(Command::Cue(id.to_owned(), data, repeat, Box::new(reply)))
    }

    /// Queues a cue and waits for its answer (at most about one frame).
    pub fn cue(&self, id: &str, data: serde_json::Value, repeat: u32) -> Result<CueAck, CueError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.cue_then(id, data, repeat, move |r| {
            let _ = tx.send(r);
        })
        .map_err(|_| CueError::Stopped)?;
        rx.recv().map_err(|_| CueError::Stopped)?
    }

    /// The codec headers for muxers (waits for the mixer thread).
    pub fn headers(&self) -> Result<Headers, MixerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::Headers(tx))?;
        rx.recv().map_err(|_| MixerError::Stopped)
    }

    /// A status snapshot (waits for the mixer thread).
    pub fn state(&self) -> Result<MixState, MixerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::State(tx))?;
        rx.recv().map_err(|_| MixerError::Stopped)
    }
}

/// Counters a driver adds to (one set may be shared by several drivers).
#[derive(Debug, Default)]
pub struct DriverCounters {
    /// Program pictures handed on more than one frame interval after their due time.
    pub late_pictures: AtomicU64,
    /// Nanoseconds spent in polls (compose, video encode, audio mix and encode).
    pub poll_nanos: AtomicU64,
}

/// Owner of a mixer thread: a [`MixerHandle`] (through `Deref`) that also stops and joins
/// the thread when stopped or dropped.
#[derive(Debug)]
pub struct MixerDriver {
    handle: MixerHandle,
    join: Option<JoinHandle<()>>,
}

impl std::ops::Deref for MixerDriver {
    type Target = MixerHandle;
    fn deref(&self) -> &MixerHandle {
        &self.handle
    }
}

impl MixerDriver {
    /// Creates the mixer and starts its thread; `sink` receives every output, on the mixer
    /// thread, in time order.
    pub fn spawn<F>(config: MixConfig, sink: F) -> Result<Self, MixerError>
    where
        F: FnMut(MixerOutput) + Send + 'static,
    {
        Self::spawn_counted(config, Arc::default(), sink)
    }

    /// [`spawn`](Self::spawn), adding to `counters`: every *late* program picture (one handed
    /// to `sink` more than one frame interval after its due time on the program clock, i.e.
    /// the mixer thread did not keep up in real time) and the time spent producing pictures.
    pub fn spawn_counted<F>(
        config: MixConfig,
        counters: Arc<DriverCounters>,
        sink: F,
    ) -> Result<Self, MixerError>
    where
        F: FnMut(MixerOutput) + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let join = std::thread::Builder::new()
            .name("cohost-mixer".into())
            .spawn(move || match Mixer::new(config) {
                Ok(m) => {
                    let _ = ready_tx.send(Ok(()));
                    run(m, rx, sink, &counters);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|_| MixerError::Stopped)?;
        ready_rx.recv().map_err(|_| MixerError::Stopped)??;
        Ok(MixerDriver {
            handle: MixerHandle { tx },
            join: Some(join),
        })
    }

    /// A cloneable handle for other threads/tasks.
    pub fn handle(&self) -> MixerHandle {
        self.handle.clone()
    }

    /// Stops the thread and waits for it. Clones of the handle then get `Stopped`.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.handle.tx.send(Command::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for MixerDriver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<F: FnMut(MixerOutput)>(
    mut mixer: Mixer,
    rx: Receiver<Command>,
    mut sink: F,
    counters: &DriverCounters,
) {
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / u64::from(mixer.config().fps));
    for o in mixer.poll(Duration::ZERO) {
        sink(o);
    }
    loop {
        let deadline = mixer.poll_timeout();
        let now = start.elapsed();
        if now >= deadline {
            let outs = mixer.poll(now);
            // Pictures of one poll are due one interval apart, the last at
            // `last_video_due`; they are all handed over now.
            let done = start.elapsed();
            let busy = done.saturating_sub(now);
            counters.poll_nanos.fetch_add(
                u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let pictures = outs
                .iter()
                .filter(|o| matches!(o, MixerOutput::Video(_)))
                .count() as u32;
            if let (Some(last), true) = (mixer.last_video_due(), pictures > 0) {
                let first = last.saturating_sub(interval * (pictures - 1));
                let n = (0..pictures)
                    .filter(|k| done > first + interval * *k + interval)
                    .count();
                if n > 0 {
                    counters
                        .late_pictures
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            for o in outs {
                sink(o);
            }
            continue;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(cmd) => {
                let at = start.elapsed();
                match cmd {
                    Command::AddInput(id, host) => mixer.add_input(&id, host),
                    Command::RemoveInput(id) => mixer.remove_input(&id),
                    Command::Video(id, au, ts) => mixer.push_video(&id, &au, ts, at),
                    Command::Opus(id, p, ts) => mixer.push_opus(&id, &p, ts, at),
                    Command::Pcm(id, s) => mixer.push_pcm(&id, &s),
                    Command::SetLayout(l) => mixer.set_layout(l),
                    Command::Cue(id, data, repeat, reply) => reply(mixer.cue(&id, data, repeat)),
                    Command::RequestKeyframe => mixer.request_keyframe(),
                    Command::Headers(reply) => {
                        let _ = reply.send(Headers {
                            avc_decoder_config: mixer.avc_decoder_config(),
                            audio_specific_config: mixer.audio_specific_config(),
                        });
                    }
                    Command::State(reply) => {
                        let _ = reply.send(mixer.state());
                    }
                    Command::Stop => return,
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn driver_runs_in_real_time() {
        let cfg = MixConfig {
            width: 160,
            height: 90,
            fps: 20,
            video_kbps: 200,
            ..MixConfig::default()
        };
        let seen = Arc::new(Mutex::new((0usize, 0usize)));
        let s2 = Arc::clone(&seen);
        let d = MixerDriver::spawn(cfg, move |o| {
            if let Ok(mut g) = s2.lock() {
                match o {
                    MixerOutput::Video(_) => g.0 += 1,
                    MixerOutput::Audio(_) => g.1 += 1,
                    _ => {}
                }
            }
        })
        .expect("spawn");
        d.add_input("a", true).expect("add");
        let ack = d.cue("c1", serde_json::json!(1), 1).expect("cue");
        let h2 = d.handle();
        let (tx, rx) = mpsc::sync_channel(1);
        h2.cue_then("c2", serde_json::json!(2), 1, move |r| {
            let _ = tx.send(r);
        })
        .expect("cue_then");
        assert!(rx.recv().expect("reply").is_ok());
        assert_eq!(
            d.cue("c1", serde_json::json!(2), 1).expect("dup").pts_ms,
            ack.pts_ms
        );
        std::thread::sleep(Duration::from_millis(500));
        let h = d.headers().expect("headers");
        assert!(h.avc_decoder_config.is_some());
        assert_eq!(h.audio_specific_config, vec![0x11, 0x90]);
        assert_eq!(d.state().expect("state").inputs.len(), 1);
        d.stop();
        assert!(matches!(
            h2.add_input("late", false),
            Err(MixerError::Stopped)
        ));
        let (v, a) = *seen.lock().expect("lock");
        // ~10 pictures and ~23 AAC frames in 0.5 s; allow scheduling slack.
        assert!((7..=13).contains(&v), "video {v}");
        assert!(a >= 15, "audio {a}");
    }

    #[test]
    fn invalid_config_fails_spawn() {
        let cfg = MixConfig {
            width: 7,
            ..MixConfig::default()
        };
        assert!(MixerDriver::spawn(cfg, |_| {}).is_err());
    }
}
