//! Recordings of the program: fragmented MP4 files written as the show goes.
//!
//! * [`RoomRecordings`] — one room's recordings (held by its [`super::ProgramOutputs`]): start,
//!   stop, list; the program's pictures and AAC frames are handed to every running one.
//! * One writer thread per running recording: [`mixer::mux::mp4::Mp4Writer`] (pure) makes the
//!   boxes, the thread appends them to `{dir}/{room}/{id}.mp4` as each fragment (about a
//!   second) closes, so a crash or a kill loses at most the open fragment. The program never
//!   waits for the disk: a recording whose queue fills (the disk is that slow) fails.
//! * A write error (a full disk, a directory that is not writable) fails that recording with
//!   its reason; the program and every other output go on.
//! * One program, one file: when the program stops its recordings finish; a recording started
//!   through the API continues into a new file when the next program of the room starts
//!   (until it is stopped), and `mix.record` starts one with every program.
//! * [`RecordingStats`] — `cohost_recording_*` for `/metrics`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mixer::mux::mp4::{Mp4Config, Mp4Writer};
use serde::Serialize;
use tracing::{info, warn};

use crate::sync::lock;

/// Items queued per recording before it is failed as too slow (about 30 s of program).
const QUEUE: usize = 2048;

/// Where and how recordings are written.
#[derive(Debug, Clone)]
pub struct RecordingsConfig {
    /// Directory of the recordings (`--recordings-dir`); a room's files are in `{dir}/{room}/`.
    pub dir: PathBuf,
    /// Longest fragment, in ms: at most this much (and the open picture) is lost on a kill.
    pub fragment_ms: u64,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        RecordingsConfig {
            dir: PathBuf::from("recordings"),
            fragment_ms: 1000,
        }
    }
}

/// Recording counters over all rooms, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecordingStats {
    /// Recordings writing now.
    pub active: AtomicU64,
    /// Bytes written to recording files.
    pub bytes: AtomicU64,
    /// Recordings that failed (write error, unwritable directory, queue full).
    pub failures: AtomicU64,
}

impl RecordingStats {
    /// Prometheus lines.
    pub fn render(&self) -> String {
        format!(
            "# HELP cohost_recordings_active Program recordings writing now.\n\
             # TYPE cohost_recordings_active gauge\ncohost_recordings_active {}\n\
             # HELP cohost_recording_bytes_total Bytes written to program recordings.\n\
             # TYPE cohost_recording_bytes_total counter\ncohost_recording_bytes_total {}\n\
             # HELP cohost_recording_failures_total Program recordings that failed (write error, unwritable directory, disk too slow).\n\
             # TYPE cohost_recording_failures_total counter\ncohost_recording_failures_total {}\n",
            self.active.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// State of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Writing (or waiting for the program's next keyframe).
    Recording,
    /// Stopped; the file is complete.
    Finished,
    /// Stopped by an error (see `error`); the file holds what was written before it.
    Failed,
}

/// What the API shows of a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingInfo {
    /// Id (`rec-…`), unique in the room.
    pub id: String,
    /// `recording` | `finished` | `failed`.
    pub state: RecordingState,
    /// File format (`mp4`: fragmented MP4, H.264 + AAC).
    pub format: &'static str,
    /// When it was started, RFC 3339 UTC.
    pub started_at: String,
    /// Media time written, in seconds (from its first keyframe).
    pub duration_s: f64,
    /// Bytes in the file.
    pub bytes: u64,
    /// Where to download it (API key; range requests).
    pub url: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The recording this one continues (a new program of the room started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
}

/// What a recording's writer reports.
#[derive(Debug)]
struct Status {
    state: RecordingState,
    duration_ms: u64,
    bytes: u64,
    error: Option<String>,
}

/// One recording.
#[derive(Debug)]
struct Recording {
    id: String,
    started_at: String,
    url: String,
    continues: Option<String>,
    /// Started through the API (not by `mix.record`): continues into the next program.
    requested: bool,
    status: Arc<Mutex<Status>>,
    /// To its writer thread while it runs.
    tx: Option<SyncSender<Item>>,
    /// The writer thread, until someone waits for it.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recording {
    fn info(&self) -> RecordingInfo {
        let s = lock(&self.status);
        RecordingInfo {
            id: self.id.clone(),
            state: s.state,
            format: "mp4",
            started_at: self.started_at.clone(),
            duration_s: s.duration_ms as f64 / 1000.0,
            bytes: s.bytes,
            url: self.url.clone(),
            error: s.error.clone(),
            continues: self.continues.clone(),
        }
    }

    fn running(&self) -> bool {
        self.tx.is_some() && lock(&self.status).state == RecordingState::Recording
    }
}

#[derive(Debug)]
enum Item {
    Video {
        pts_ms: u64,
        keyframe: bool,
        data: Bytes,
    },
    Audio {
        pts_ms: u64,
        data: Bytes,
    },
}

/// Why a recording cannot be found or started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordingError {
    /// No recording of that id in the room.
    #[error("no recording `{0}`")]
    NotFound(String),
    /// Too many recordings running in the room.
    #[error("{0} recordings are running in this room already")]
    TooMany(usize),
}

/// A stopped recording's writer finishing its file: [`Stopping::wait`] blocks until it has.
#[derive(Debug)]
pub struct Stopping(Option<std::thread::JoinHandle<()>>);

impl Stopping {
    /// Blocks until the file is complete (call it off the async workers).
    pub fn wait(self) {
        if let Some(t) = self.0 {
            let _ = t.join();
        }
    }
}

/// Most recordings running at once in one room.
pub const MAX_RUNNING: usize = 4;

/// One room's recordings.
#[derive(Debug)]
pub struct RoomRecordings {
    room: String,
    config: RecordingsConfig,
    stats: Arc<RecordingStats>,
    inner: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    all: BTreeMap<String, Recording>,
    /// Canvas size for the MP4 track header.
    size: (u32, u32),
    /// The program's AAC AudioSpecificConfig.
    asc: Vec<u8>,
    /// The ids of the requested recordings that a stopped program finished: the next program
    /// continues them into new files.
    to_continue: Vec<String>,
    next: u64,
}

impl RoomRecordings {
    /// No recordings yet; `size` is the program's canvas, `asc` its AAC AudioSpecificConfig.
    pub fn new(
        room: &str,
        config: RecordingsConfig,
        stats: Arc<RecordingStats>,
        size: (u32, u32),
        asc: Vec<u8>,
    ) -> Self {
        RoomRecordings {
            room: room.to_owned(),
            config,
            stats,
            inner: Mutex::new(Book {
                size,
                asc,
                ..Book::default()
            }),
        }
    }

    /// The canvas size of programs from now on.
    pub fn set_size(&self, size: (u32, u32)) {
        lock(&self.inner).size = size;
    }

    /// Starts a recording (through the API): it writes from the program's next keyframe on
    /// (now, or when the room's next program starts). An unwritable directory gives a
    /// `failed` recording with the reason, not an error.
    pub fn start(&self) -> Result<RecordingInfo, RecordingError> {
        let mut b = lock(&self.inner);
        let running = b.all.values().filter(|r| r.running()).count();
        if running >= MAX_RUNNING {
            return Err(RecordingError::TooMany(running));
        }
        Ok(self.open(&mut b, true, None))
    }

    /// A program of the room started: continues the requested recordings the last program
    /// finished, and starts one if `record` (`mix.record`) and none is running.
    pub fn program_started(&self, record: bool) {
        let mut b = lock(&self.inner);
        for prev in std::mem::take(&mut b.to_continue) {
            let info = self.open(&mut b, true, Some(prev));
            info!(room = %self.room, id = %info.id, continues = ?info.continues, "recording continues into a new file");
        }
        if record && !b.all.values().any(Recording::running) {
            let info = self.open(&mut b, false, None);
            info!(room = %self.room, id = %info.id, "recording the show (mix.record)");
        }
    }

    /// The program stopped: every running recording finishes; the requested ones continue
    /// with the room's next program.
    pub fn program_stopped(&self) {
        let mut b = lock(&self.inner);
        let mut continued = Vec::new();
        for r in b.all.values_mut() {
            if r.running() && r.requested {
                continued.push(r.id.clone());
            }
            r.tx = None;
        }
        b.to_continue = continued;
    }

    /// Stops a recording (it becomes `finished` once its last fragment is written, which
    /// the returned waiter waits for; a failed one stays failed); the room's next program
    /// does not continue it.
    pub fn stop(&self, id: &str) -> Result<Stopping, RecordingError> {
        let mut b = lock(&self.inner);
        b.to_continue.retain(|x| x != id);
        let r = b
            .all
            .get_mut(id)
            .ok_or_else(|| RecordingError::NotFound(id.to_owned()))?;
        r.tx = None;
        Ok(Stopping(r.thread.take()))
    }

    /// Stops every recording (the room is closed, the server stops): wait for the returned
    /// writers to have their files complete.
    pub fn stop_all(&self) -> Vec<Stopping> {
        let mut b = lock(&self.inner);
        b.to_continue.clear();
        b.all
            .values_mut()
            .map(|r| {
                r.tx = None;
                Stopping(r.thread.take())
            })
            .collect()
    }

    /// Every recording of the room, oldest first: those of this process and the files of
    /// earlier runs found in the room's directory ([`on_disk`]).
    pub fn list(&self) -> Vec<RecordingInfo> {
        let b = lock(&self.inner);
        let mut out: Vec<RecordingInfo> = b.all.values().map(Recording::info).collect();
        out.extend(
            on_disk(&self.config, &self.room)
                .into_iter()
                .filter(|r| !b.all.contains_key(&r.id)),
        );
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// One recording.
    pub fn get(&self, id: &str) -> Option<RecordingInfo> {
        self.list().into_iter().find(|r| r.id == id)
    }

    /// The file of a recording (running or not), if it exists.
    pub fn file(&self, id: &str) -> Option<PathBuf> {
        file_on_disk(&self.config, &self.room, id)
    }

    /// A program picture (Annex-B) for every running recording.
    pub fn push_video(&self, pts_ms: u64, keyframe: bool, data: &Bytes) {
        self.send(|| Item::Video {
            pts_ms,
            keyframe,
            data: data.clone(),
        });
    }

    /// A raw AAC frame of the program for every running recording.
    pub fn push_audio(&self, pts_ms: u64, data: &Bytes) {
        self.send(|| Item::Audio {
            pts_ms,
            data: data.clone(),
        });
    }

    /// Whether a recording is running (the program should send a keyframe soon when one has
    /// just started).
    pub fn any_running(&self) -> bool {
        lock(&self.inner).all.values().any(Recording::running)
    }

    fn send(&self, item: impl Fn() -> Item) {
        let mut b = lock(&self.inner);
        for r in b.all.values_mut() {
            let Some(tx) = &r.tx else { continue };
            match tx.try_send(item()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    warn!(room = %self.room, id = %r.id, "recording queue full: the disk does not keep up");
                    fail(
                        &r.status,
                        &self.stats,
                        "the disk did not keep up with the program (queue full)".into(),
                    );
                    r.tx = None;
                }
                // The writer ended (it failed, and said why).
                Err(TrySendError::Disconnected(_)) => r.tx = None,
            }
        }
    }

    fn room_dir(&self) -> PathBuf {
        room_dir(&self.config, &self.room)
    }

    fn url(&self, id: &str) -> String {
        url(&self.room, id)
    }

    /// A new recording in `b`, its file opened and its writer started (or `failed`).
    fn open(&self, b: &mut Book, requested: bool, continues: Option<String>) -> RecordingInfo {
        let now_ms = unix_ms();
        let dir = self.room_dir();
        let mut id;
        loop {
            b.next += 1;
            id = format!("rec-{now_ms}-{}", b.next);
            if !b.all.contains_key(&id) && !dir.join(format!("{id}.mp4")).exists() {
                break;
            }
        }
        let status = Arc::new(Mutex::new(Status {
            state: RecordingState::Recording,
            duration_ms: 0,
            bytes: 0,
            error: None,
        }));
        let mut rec = Recording {
            id: id.clone(),
            started_at: super::hls::iso8601_ms(now_ms),
            url: self.url(&id),
            continues,
            requested,
            status: status.clone(),
            tx: None,
            thread: None,
        };
        let cfg = Mp4Config {
            width: b.size.0,
            height: b.size.1,
            audio_specific_config: b.asc.clone(),
            fragment_ms: self.config.fragment_ms,
        };
        match create_file(&dir, &id).and_then(|f| {
            Mp4Writer::new(cfg)
                .map(|w| (f, w))
                .map_err(|e| std::io::Error::other(e.to_string()))
        }) {
            Ok((file, writer)) => {
                let (tx, rx) = sync_channel(QUEUE);
                let stats = self.stats.clone();
                let span = tracing::info_span!("recording", room = %self.room, id = %id);
                self.stats.active.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new()
                    .name(format!("rec-{}", self.room))
                    .spawn(move || {
                        let _g = span.enter();
                        write_recording(rx, file, writer, &status, &stats);
                    });
                match spawned {
                    Ok(t) => {
                        rec.tx = Some(tx);
                        rec.thread = Some(t);
                        info!(room = %self.room, %id, "recording started");
                    }
                    Err(e) => {
                        self.stats.active.fetch_sub(1, Ordering::Relaxed);
                        fail(&rec.status, &self.stats, format!("cannot start: {e}"));
                    }
                }
            }
            Err(e) => {
                let why = format!(
                    "cannot create {}: {e}",
                    dir.join(format!("{id}.mp4")).display()
                );
                warn!(room = %self.room, %id, error = %why, "recording failed");
                fail(&rec.status, &self.stats, why);
            }
        }
        let info = rec.info();
        b.all.insert(id, rec);
        info
    }
}

fn create_file(dir: &Path, id: &str) -> std::io::Result<File> {
    // A directory whose mode has no write bit at all is the operator's "do not write here",
    // honoured even by a server running as root (which the kernel would let write): the
    // nearest existing one of `dir` and its parents decides.
    if let Some(d) = dir.ancestors().find(|d| d.exists()) {
        if std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().readonly()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is read-only", d.display()),
            ));
        }
    }
    std::fs::create_dir_all(dir)?;
    File::options()
        .write(true)
        .create_new(true)
        .open(dir.join(format!("{id}.mp4")))
}

fn fail(status: &Mutex<Status>, stats: &RecordingStats, why: String) {
    let mut s = lock(status);
    if s.state == RecordingState::Recording {
        s.state = RecordingState::Failed;
        s.error = Some(why);
        stats.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer thread: muxes what arrives, appends each fragment as it closes, finishes the
/// file when the sender goes (stop, program end); a write error fails the recording.
fn write_recording(
    rx: Receiver<Item>,
    mut out: impl Write,
    mut mp4: Mp4Writer,
    status: &Mutex<Status>,
    stats: &RecordingStats,
) {
    let write = |out: &mut dyn Write, bytes: &[u8], mp4: &Mp4Writer| -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        out.write_all(bytes)?;
        out.flush()?;
        stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut s = lock(status);
        s.bytes += bytes.len() as u64;
        s.duration_ms = mp4.duration_ms();
        Ok(())
    };
    let result = (|| {
        while let Ok(item) = rx.recv() {
            let bytes = match item {
                Item::Video {
                    pts_ms,
                    keyframe,
                    data,
                } => mp4.push_video(pts_ms, keyframe, &data),
                Item::Audio { pts_ms, data } => mp4.push_audio(pts_ms, &data),
            };
            write(&mut out, &bytes, &mp4)?;
        }
        let last = mp4.finish();
        write(&mut out, &last, &mp4)
    })();
    stats.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(()) => {
            let mut s = lock(status);
            if s.state == RecordingState::Recording {
                s.state = RecordingState::Finished;
            }
            info!(
                duration_ms = s.duration_ms,
                bytes = s.bytes,
                "recording finished"
            );
        }
        Err(e) => {
            warn!(error = %e, "recording failed");
            fail(status, stats, format!("write failed: {e}"));
        }
    }
}

/// The directory of a room's recordings: `{dir}/{room}`, leading dots written `%2E` (rooms
/// `.` and `..` are valid names; `%` is not in any).
fn room_dir(config: &RecordingsConfig, room: &str) -> PathBuf {
    let dots = room.len() - room.trim_start_matches('.').len();
    config
        .dir
        .join(format!("{}{}", "%2E".repeat(dots), &room[dots..]))
}

fn url(room: &str, id: &str) -> String {
    format!("/api/rooms/{room}/recordings/{id}.mp4")
}

/// The recordings found in a room's directory (of this run or earlier ones, a server killed
/// included) as `finished`: the start time from the id, the duration read from the file's
/// last fragment (cached per file size).
pub fn on_disk(config: &RecordingsConfig, room: &str) -> Vec<RecordingInfo> {
    let dir = room_dir(config, room);
    files_on_disk(&dir)
        .into_iter()
        .map(|(id, bytes)| RecordingInfo {
            url: url(room, &id),
            started_at: started_ms(&id)
                .map(super::hls::iso8601_ms)
                .unwrap_or_default(),
            duration_s: file_duration_ms(&dir.join(format!("{id}.mp4")), bytes) as f64 / 1000.0,
            id,
            state: RecordingState::Finished,
            format: "mp4",
            bytes,
            error: None,
            continues: None,
        })
        .collect()
}

/// The start time an id (`rec-{unix ms}-{n}`) carries.
fn started_ms(id: &str) -> Option<u64> {
    id.strip_prefix("rec-")?.split('-').next()?.parse().ok()
}

/// Video media time in a recording file (0 if unreadable), cached by path and size.
fn file_duration_ms(path: &Path, len: u64) -> u64 {
    type Cache = Mutex<std::collections::HashMap<PathBuf, (u64, u64)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    if let Some((l, ms)) = lock(cache).get(path) {
        if *l == len {
            return *ms;
        }
    }
    let ms = read_duration_ms(path).unwrap_or(0);
    let mut c = lock(cache);
    if c.len() > 4096 {
        c.clear();
    }
    c.insert(path.to_owned(), (len, ms));
    ms
}

/// Walks the file's top-level boxes (seeking over `mdat`s) and reads where the video track
/// of its last complete `moof` ends.
fn read_duration_ms(path: &Path) -> std::io::Result<u64> {
    use mixer::mux::mp4::{VIDEO_TIMESCALE, VIDEO_TRACK_ID};
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let (mut at, mut end) = (0u64, 0u64);
    while at + 8 <= len {
        let mut head = [0u8; 8];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut head)?;
        let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        if size < 8 || at + size > len {
            break;
        }
        // A moof is small (a second of samples); anything bigger is not ours.
        if &head[4..8] == b"moof" && size <= 1 << 20 {
            let mut moof = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut moof)?;
            if let Some(e) = mixer::mux::mp4::read::track_end(&moof, VIDEO_TRACK_ID) {
                end = end.max(e);
            }
        }
        at += size;
    }
    Ok(end * 1000 / u64::from(VIDEO_TIMESCALE))
}

/// The file of recording `id` of `room`, if it exists.
pub fn file_on_disk(config: &RecordingsConfig, room: &str, id: &str) -> Option<PathBuf> {
    if !valid_id(id) {
        return None;
    }
    let p = room_dir(config, room).join(format!("{id}.mp4"));
    p.is_file().then_some(p)
}

/// `rec-…` ids: letters, digits, `-` and `_` (nothing that leaves the directory).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The `.mp4` files of a room's directory: (id, size).
fn files_on_disk(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".mp4")?;
            let meta = e.metadata().ok()?;
            (valid_id(id) && meta.is_file()).then(|| (id.to_owned(), meta.len()))
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A disk that takes `room` bytes, then answers ENOSPC.
    struct FullDisk {
        room: usize,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            lock(&self.written).extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn keyframe() -> Bytes {
        // SPS (baseline, 64x64), PPS, IDR slice.
        Bytes::from_static(&[
            0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x02, 0x68, 0x40, 0, 0, 0, 1, 0x68,
            0xCE, 0x3C, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00,
        ])
    }

    fn run(disk: FullDisk, seconds: u64) -> (Status, RecordingStats) {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = RecordingStats::default();
        stats.active.store(1, Ordering::Relaxed);
        let status = Mutex::new(Status {
            state: RecordingState::Recording,
            duration_ms: 0,
            bytes: 0,
            error: None,
        });
        let mp4 = Mp4Writer::new(Mp4Config {
            width: 64,
            height: 64,
            audio_specific_config: vec![0x11, 0x90],
            fragment_ms: 1000,
        })
        .unwrap();
        for n in 0..seconds * 30 {
            let pts_ms = n * 1000 / 30;
            let (keyframe, data) = if n % 60 == 0 {
                (true, keyframe())
            } else {
                (false, Bytes::from_static(&[0, 0, 0, 1, 0x41, 0x9A, 0x20]))
            };
            tx.send(Item::Video {
                pts_ms,
                keyframe,
                data,
            })
            .unwrap();
        }
        drop(tx);
        write_recording(rx, disk, mp4, &status, &stats);
        (status.into_inner().unwrap(), stats)
    }

    #[test]
    fn a_full_disk_fails_the_recording_with_the_reason() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (status, stats) = run(
            FullDisk {
                room: 2000,
                written: written.clone(),
            },
            5,
        );
        assert_eq!(status.state, RecordingState::Failed);
        let why = status.error.unwrap();
        assert!(why.contains("No space left on device"), "{why}");
        assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
        assert_eq!(stats.active.load(Ordering::Relaxed), 0);
        // What fit is what was counted.
        assert_eq!(stats.bytes.load(Ordering::Relaxed), status.bytes);
        assert!(lock(&written).len() as u64 >= status.bytes);
    }

    #[test]
    fn a_recording_that_ends_is_finished_with_its_duration() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (status, stats) = run(
            FullDisk {
                room: usize::MAX,
                written: written.clone(),
            },
            3,
        );
        assert_eq!(status.state, RecordingState::Finished, "{:?}", status.error);
        assert!(
            (2900..=3100).contains(&status.duration_ms),
            "{}",
            status.duration_ms
        );
        assert_eq!(status.bytes, lock(&written).len() as u64);
        assert_eq!(&lock(&written)[4..8], b"ftyp");
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ids_and_room_directories_stay_inside_the_recordings_directory() {
        let c = RecordingsConfig {
            dir: PathBuf::from("/r"),
            fragment_ms: 1000,
        };
        assert_eq!(room_dir(&c, "show"), PathBuf::from("/r/show"));
        assert_eq!(room_dir(&c, ".."), PathBuf::from("/r/%2E%2E"));
        assert_eq!(room_dir(&c, ".a.b"), PathBuf::from("/r/%2Ea.b"));
        assert!(valid_id("rec-1-2"));
        for bad in ["", "../x", "a/b", "a.mp4", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
            assert!(file_on_disk(&c, "show", bad).is_none());
        }
    }
}
