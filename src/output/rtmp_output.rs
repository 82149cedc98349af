//! The RTMP output task: publishes the program's FLV tags to one RTMP URL, reconnects
//! with exponential backoff, and exposes its state.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use cohost::output::{FlvTag, RtmpOutput, RtmpOutputConfig, SequenceHeaders, TagKind};
//! let (tags_tx, _) = tokio::sync::broadcast::channel::<FlvTag>(512);
//! let (headers_tx, headers_rx) = tokio::sync::watch::channel(SequenceHeaders::default());
//! let config = RtmpOutputConfig::new("rtmp://127.0.0.1/live/test".parse()?);
//! let output = RtmpOutput::spawn(config, headers_rx, tags_tx.subscribe());
//! // The mixer sets the sequence headers, then sends every encoded tag:
//! let _ = tags_tx.send(FlvTag { kind: TagKind::Video, timestamp_ms: 0, body: Bytes::new(), keyframe: true });
//! println!("{:?}", output.status());
//! output.stop().await;
//! # drop(headers_tx); Ok(()) }
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::rtmp::{RtmpError, RtmpPublisher, RtmpUrl, TagKind};

/// One FLV tag of the program (the body as it would follow the 11-byte FLV tag header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Audio, video or script data.
    pub kind: TagKind,
    /// Decoding timestamp in milliseconds (program time).
    pub timestamp_ms: u32,
    /// Tag body (FLV AUDIODATA / VIDEODATA / SCRIPTDATA).
    pub body: Bytes,
    /// True for a video keyframe (the AU an output may start from).
    pub keyframe: bool,
}

/// The tags a player needs before any media: sent at every (re)connect, and again
/// before the next keyframe whenever they change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceHeaders {
    /// `onMetaData` script tag body (AMF0 "onMetaData" + ECMA array), if any.
    pub metadata: Option<Bytes>,
    /// AVC sequence header video tag body (AVCDecoderConfigurationRecord).
    pub video: Option<Bytes>,
    /// AAC sequence header audio tag body (AudioSpecificConfig).
    pub audio: Option<Bytes>,
}

/// State of an output, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    /// First connection attempt in progress.
    Connecting,
    /// Publishing.
    Live,
    /// The connection dropped or failed; waiting to reconnect (or reconnecting).
    Retrying,
    /// Gave up: the server refused the publication too many times in a row.
    Failed,
    /// Stopped on request (or because the tag source ended).
    Stopped,
}

impl OutputState {
    /// Every state, in the order metrics list them.
    pub const ALL: [OutputState; 5] = [
        OutputState::Connecting,
        OutputState::Live,
        OutputState::Retrying,
        OutputState::Failed,
        OutputState::Stopped,
    ];
}

impl OutputState {
    /// The lower-case name used in the API and metrics (`connecting`, `live`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OutputState::Connecting => "connecting",
            OutputState::Live => "live",
            OutputState::Retrying => "retrying",
            OutputState::Failed => "failed",
            OutputState::Stopped => "stopped",
        }
    }
}

/// A snapshot of an output's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputStatus {
    /// Current state.
    pub state: OutputState,
    /// Bytes written to RTMP sockets, over all connections.
    pub bytes_sent: u64,
    /// Number of reconnection attempts made after the first connection attempt.
    pub reconnects: u32,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// Settings of an [`RtmpOutput`].
#[derive(Debug, Clone)]
pub struct RtmpOutputConfig {
    /// Where to publish.
    pub url: RtmpUrl,
    /// First retry delay (default 0.5 s); doubles after each failure.
    pub backoff_initial: Duration,
    /// Longest retry delay (default 10 s).
    pub backoff_max: Duration,
    /// Give up (state `failed`) after the server refused `connect`/`publish` this many
    /// times in a row (a wrong app or stream key does not fix itself; a few refusals right
    /// after a reconnect are normal while the server still holds the old stream). Network
    /// failures — refused or reset connections, timeouts, a CDN down for an hour — are
    /// retried for ever at the longest delay. `None`: never give up. Default 20 (about 3
    /// minutes of refusals).
    pub max_consecutive_rejections: Option<u32>,
    /// Bound on the connect + publish sequence (and each of its reads and writes), on each
    /// later socket write, and on a server message left partly received while publishing
    /// (default 10 s).
    pub io_timeout: Duration,
}

impl RtmpOutputConfig {
    /// Defaults for `url`.
    pub fn new(url: RtmpUrl) -> Self {
        RtmpOutputConfig {
            url,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            max_consecutive_rejections: Some(20),
            io_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: watch::Sender<OutputState>,
    bytes_sent: AtomicU64,
    reconnects: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn set_state(&self, s: OutputState) {
        self.state.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s;
            changed
        });
    }
    fn set_error(&self, e: &RtmpError) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// A running RTMP output task. Dropping the handle does not stop the task; call
/// [`RtmpOutput::stop`] (or drop every tag sender, which stops it too).
#[derive(Debug)]
pub struct RtmpOutput {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    url: RtmpUrl,
}

impl RtmpOutput {
    /// Starts publishing: `headers` gives the current sequence headers, `tags` the
    /// program's tags (a `broadcast` receiver, so the producer never blocks; when this
    /// output lags it skips to the next keyframe). Must be called inside a tokio runtime.
    pub fn spawn(
        config: RtmpOutputConfig,
        headers: watch::Receiver<SequenceHeaders>,
        tags: broadcast::Receiver<FlvTag>,
    ) -> Self {
        let (state_tx, _) = watch::channel(OutputState::Connecting);
        let shared = Arc::new(Shared {
            state: state_tx,
            bytes_sent: AtomicU64::new(0),
            reconnects: AtomicU32::new(0),
            last_error: Mutex::new(None),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let url = config.url.clone();
        let task = tokio::spawn(run(config, shared.clone(), headers, tags, stop_rx));
        RtmpOutput {
            shared,
            stop_tx,
            task: Mutex::new(Some(task)),
            url,
        }
    }

    /// The URL this output publishes to.
    pub fn url(&self) -> &RtmpUrl {
        &self.url
    }

    /// Current state.
    pub fn state(&self) -> OutputState {
        *self.shared.state.borrow()
    }

    /// A receiver to await state changes (`changed()` / `wait_for`).
    pub fn subscribe_state(&self) -> watch::Receiver<OutputState> {
        self.shared.state.subscribe()
    }

    /// State, bytes sent, reconnect count, last error.
    pub fn status(&self) -> OutputStatus {
        OutputStatus {
            state: self.state(),
            bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            last_error: self.shared.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }

    /// Stops the task (unpublishing politely if live) and waits for it to end.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let task = self.task.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for RtmpOutput {
    fn drop(&mut self) {
        // Stop the task when the handle goes away.
        let _ = self.stop_tx.send(true);
    }
}

/// Resolves when a stop was requested (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum SessionEnd {
    Stopped,
    SourceClosed,
    Failed(RtmpError),
}

async fn run(
    config: RtmpOutputConfig,
    shared: Arc<Shared>,
    mut headers: watch::Receiver<SequenceHeaders>,
    mut tags: broadcast::Receiver<FlvTag>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = config.backoff_initial;
    let mut rejections: u32 = 0;
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        if attempt > 0 {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        attempt += 1;
        let connect = RtmpPublisher::connect(&config.url, config.io_timeout);
        let conn = tokio::select! {
            r = connect => r,
            _ = stopped(&mut stop) => break,
        };
        let end = match conn {
            Ok(conn) => {
                info!(url = %config.url.redacted(), "RTMP output live");
                shared.set_state(OutputState::Live);
                rejections = 0;
                backoff = config.backoff_initial;
                // Start from what the producer sends now, not from stale buffered tags.
                tags = tags.resubscribe();
                session(conn, &shared, &mut headers, &mut tags, &mut stop).await
            }
            Err(e) => SessionEnd::Failed(e),
        };
        match end {
            SessionEnd::Stopped | SessionEnd::SourceClosed => break,
            SessionEnd::Failed(e) => {
                warn!(url = %config.url.redacted(), error = %e, "RTMP output: connection failed");
                shared.set_error(&e);
                if matches!(e, RtmpError::Rejected { .. }) {
                    rejections += 1;
                } else {
                    rejections = 0;
                }
                if config
                    .max_consecutive_rejections
                    .is_some_and(|m| rejections >= m)
                {
                    shared.set_state(OutputState::Failed);
                    return;
                }
                shared.set_state(OutputState::Retrying);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => break,
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    shared.set_state(OutputState::Stopped);
}

/// A backward jump of the program clock larger than this is a restart, not jitter.
const BACK_JUMP_MS: i64 = 1_000;
/// A forward jump larger than this is a discontinuity too.
const FORWARD_JUMP_MS: i64 = 10_000;

/// Keeps one connection's RTMP timeline continuous when the program clock jumps (a
/// mixer restart starts again at 0): such a jump is rebased to just after the last
/// timestamp sent.
#[derive(Debug, Default)]
struct Timeline {
    offset: i64,
    last: Option<i64>,
}

impl Timeline {
    /// The RTMP timestamp for a program timestamp, and whether a jump was absorbed.
    fn map(&mut self, program_ts: u32) -> (u32, bool) {
        let raw = i64::from(program_ts);
        let mut out = raw + self.offset;
        let mut jumped = false;
        if let Some(last) = self.last {
            if out < last - BACK_JUMP_MS || out > last + FORWARD_JUMP_MS {
                self.offset = last + 33 - raw;
                out = last + 33;
                jumped = true;
            }
        }
        (out.clamp(0, i64::from(u32::MAX)) as u32, jumped)
    }

    /// Records a timestamp actually sent.
    fn sent(&mut self, ts: u32) {
        let t = i64::from(ts);
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }
}

async fn send_headers(
    conn: &mut RtmpPublisher,
    h: &SequenceHeaders,
    ts: u32,
) -> Result<(), RtmpError> {
    if let Some(m) = &h.metadata {
        conn.send_tag(TagKind::Script, ts, m).await?;
    }
    if let Some(v) = &h.video {
        conn.send_tag(TagKind::Video, ts, v).await?;
    }
    if let Some(a) = &h.audio {
        conn.send_tag(TagKind::Audio, ts, a).await?;
    }
    Ok(())
}

async fn session(
    mut conn: RtmpPublisher,
    shared: &Shared,
    headers: &mut watch::Receiver<SequenceHeaders>,
    tags: &mut broadcast::Receiver<FlvTag>,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut counted = conn.bytes_sent();
    shared.bytes_sent.fetch_add(counted, Ordering::Relaxed);
    let mut need_headers = true;
    let mut wait_keyframe = true;
    let mut skipped: u64 = 0;
    let mut timeline = Timeline::default();
    let result: Result<SessionEnd, RtmpError> = async {
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(SessionEnd::Stopped),
                r = conn.poll_read() => r?,
                t = tags.recv() => match t {
                    Ok(tag) => {
                        if headers.has_changed().unwrap_or(false) {
                            need_headers = true;
                        }
                        let is_key = tag.kind == TagKind::Video && tag.keyframe;
                        let (ts, jumped) = timeline.map(tag.timestamp_ms);
                        if jumped {
                            warn!(
                                program_ts = tag.timestamp_ms,
                                rtmp_ts = ts,
                                "program clock jumped: RTMP timeline kept continuous, restarting at a keyframe"
                            );
                            wait_keyframe = true;
                            need_headers = true;
                        }
                        if wait_keyframe || need_headers {
                            if !is_key {
                                if tag.kind != TagKind::Script {
                                    skipped += 1;
                                }
                                continue;
                            }
                            if need_headers {
                                let h = headers.borrow_and_update().clone();
                                send_headers(&mut conn, &h, ts).await?;
                                need_headers = false;
                            }
                            wait_keyframe = false;
                        }
                        conn.send_tag(tag.kind, ts, &tag.body).await?;
                        timeline.sent(ts);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "RTMP output lagging: skipping to the next keyframe");
                        wait_keyframe = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(SessionEnd::SourceClosed),
                },
            }
            let now = conn.bytes_sent();
            shared
                .bytes_sent
                .fetch_add(now - counted, Ordering::Relaxed);
            counted = now;
        }
    }
    .await;
    if skipped > 0 {
        tracing::debug!(skipped, "RTMP output skipped tags waiting for a keyframe");
    }
    match result {
        Ok(end) => {
            conn.close().await;
            end
        }
        Err(e) => SessionEnd::Failed(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejections_fail_the_output_network_failures_retry_for_ever() {
        // A server that refuses the publication (a wrong stream key): `failed` after the
        // configured number of refusals in a row.
        let (port, _ev) =
            super::super::test_server::start(super::super::test_server::MockBehaviour {
                reject_publish: true,
                ..Default::default()
            })
            .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).unwrap();
        let mut cfg = RtmpOutputConfig::new(url);
        cfg.backoff_initial = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(40);
        cfg.max_consecutive_rejections = Some(4);
        let (_htx, hrx) = watch::channel(SequenceHeaders::default());
        let (ttx, trx) = broadcast::channel(16);
        let out = RtmpOutput::spawn(cfg, hrx, trx);
        let mut st = out.subscribe_state();
        tokio::time::timeout(
            Duration::from_secs(5),
            st.wait_for(|s| *s == OutputState::Failed),
        )
        .await
        .unwrap()
        .unwrap();
        let s = out.status();
        assert_eq!(s.reconnects, 3);
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("rejected")),
            "{s:?}"
        );
        out.stop().await;
        drop(ttx);

        // Nothing listening (a CDN down): many more failures than that, still retrying.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).unwrap();
        let mut cfg = RtmpOutputConfig::new(url);
        cfg.backoff_initial = Duration::from_millis(5);
        cfg.backoff_max = Duration::from_millis(5);
        cfg.max_consecutive_rejections = Some(4);
        let (_htx, hrx) = watch::channel(SequenceHeaders::default());
        let (_ttx, trx) = broadcast::channel(16);
        let out = RtmpOutput::spawn(cfg, hrx, trx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while out.status().reconnects < 12 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", out.status());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(out.state(), OutputState::Failed);
        out.stop().await;
        assert_eq!(out.state(), OutputState::Stopped);
    }

    #[tokio::test]
    async fn silent_server_times_out_and_retries() {
        // Accepts TCP but never answers the handshake.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut socks = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                socks.push(s);
            }
        });
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).unwrap();
        let mut cfg = RtmpOutputConfig::new(url);
        cfg.io_timeout = Duration::from_millis(100);
        cfg.backoff_initial = Duration::from_millis(10);
        let (_htx, hrx) = watch::channel(SequenceHeaders::default());
        let (_ttx, trx) = broadcast::channel(16);
        let out = RtmpOutput::spawn(cfg, hrx, trx);
        let mut st = out.subscribe_state();
        tokio::time::timeout(
            Duration::from_secs(5),
            st.wait_for(|s| *s == OutputState::Retrying),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(out
            .status()
            .last_error
            .unwrap()
            .contains("timeout during connect"));
        out.stop().await;
        holder.abort();
    }

    #[tokio::test]
    async fn lagging_output_skips_to_the_next_keyframe() {
        use super::super::chunk::{MSG_AUDIO, MSG_VIDEO};
        use super::super::test_server::{start, MockBehaviour, MockEvent};
        let (port, mut ev) = start(MockBehaviour {
            pause_after_media: Some((20, Duration::from_millis(700))),
            ..Default::default()
        })
        .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).unwrap();
        let cfg = RtmpOutputConfig::new(url);
        let (_htx, hrx) = watch::channel(SequenceHeaders::default());
        let (ttx, trx) = broadcast::channel(32);
        let out = RtmpOutput::spawn(cfg, hrx, trx);
        out.subscribe_state()
            .wait_for(|s| *s == OutputState::Live)
            .await
            .unwrap();
        // Big tags, fast: the paused server's socket buffers fill, writes block, and
        // the 32-tag channel overflows. Body: [flags, index (4 bytes), padding].
        let producer = tokio::spawn(async move {
            for i in 0u32..3000 {
                let key = i % 30 == 0;
                let audio = i % 3 == 1;
                let mut body = vec![0u8; if audio { 300 } else { 64 * 1024 }];
                body[0] = if audio {
                    0xAF
                } else if key {
                    0x17
                } else {
                    0x27
                };
                body[1..5].copy_from_slice(&i.to_be_bytes());
                let _ = ttx.send(FlvTag {
                    kind: if audio {
                        TagKind::Audio
                    } else {
                        TagKind::Video
                    },
                    timestamp_ms: i,
                    body: Bytes::from(body),
                    keyframe: key,
                });
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        });
        let mut got: Vec<(u32, bool)> = Vec::new(); // (index, is keyframe video)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while got.len() < 400 && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), ev.recv()).await {
                Ok(Some(MockEvent::Message(_, m)))
                    if matches!(m.type_id, MSG_AUDIO | MSG_VIDEO) && m.payload.len() >= 5 =>
                {
                    let i = u32::from_be_bytes(m.payload[1..5].try_into().unwrap());
                    got.push((i, m.payload[0] == 0x17));
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        out.stop().await;
        producer.abort();
        assert!(got[0].1, "starts at a keyframe");
        let mut gaps = 0;
        for w in got.windows(2) {
            assert!(w[1].0 > w[0].0, "in order: {:?}", w);
            if w[1].0 > w[0].0 + 1 {
                gaps += 1;
                assert!(
                    w[1].1,
                    "after a gap ({} → {}) the output resumes at a keyframe",
                    w[0].0, w[1].0
                );
            }
        }
        assert!(gaps >= 1, "the output never lagged; got {} tags", got.len());
    }

    #[test]
    fn timeline_absorbs_clock_jumps() {
        let mut t = Timeline::default();
        for ts in [5000, 5033, 5021, 5066] {
            let (out, jumped) = t.map(ts);
            assert_eq!(
                (out, jumped),
                (ts, false),
                "small interleaving jitter passes"
            );
            t.sent(out);
        }
        // Program restarted at 0: rebased after the last sent timestamp.
        assert_eq!(t.map(0), (5099, true));
        t.sent(5099);
        assert_eq!(t.map(33), (5132, false));
        t.sent(5132);
        // A big forward jump is rebased too.
        assert_eq!(t.map(60_000), (5165, true));
        // Before anything was sent nothing is a jump.
        let mut t = Timeline::default();
        assert_eq!(t.map(123_456), (123_456, false));
    }

    #[tokio::test]
    async fn resends_headers_and_starts_at_keyframe_after_reconnect() {
        use super::super::chunk::{MSG_AUDIO, MSG_DATA_AMF0, MSG_VIDEO};
        use super::super::test_server::{start, MockBehaviour, MockEvent};
        let (port, mut ev) = start(MockBehaviour {
            close_after_media: Some(12),
            ..Default::default()
        })
        .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).unwrap();
        let mut cfg = RtmpOutputConfig::new(url);
        cfg.backoff_initial = Duration::from_millis(20);
        let headers = SequenceHeaders {
            metadata: Some(Bytes::from(super::super::amf0::encode_all(&[
                super::super::amf0::Amf0Value::str("onMetaData"),
                super::super::amf0::Amf0Value::EcmaArray(vec![]),
            ]))),
            video: Some(Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1E])),
            audio: Some(Bytes::from_static(&[0xAF, 0, 0x11, 0x90])),
        };
        let (_htx, hrx) = watch::channel(headers);
        let (ttx, trx) = broadcast::channel(64);
        let out = RtmpOutput::spawn(cfg, hrx, trx);
        // Producer: P-frames, audio and a keyframe every 10 tags, every 2 ms.
        let producer = tokio::spawn(async move {
            for i in 1u32.. {
                let (kind, body, key): (TagKind, &'static [u8], bool) = match i % 10 {
                    0 => (TagKind::Video, &[0x17, 1, 0, 0, 0, 0xAA], true),
                    n if n % 2 == 1 => (TagKind::Audio, &[0xAF, 1, 0x21], false),
                    _ => (TagKind::Video, &[0x27, 1, 0, 0, 0, 0xBB], false),
                };
                let tag = FlvTag {
                    kind,
                    timestamp_ms: i * 2,
                    body: Bytes::from_static(body),
                    keyframe: key,
                };
                if ttx.send(tag).is_err() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        // Two whole connections.
        let mut per_conn: Vec<Vec<(u8, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
        let mut closed = 0;
        while closed < 2 {
            let e = tokio::time::timeout(Duration::from_secs(10), ev.recv())
                .await
                .expect("mock events")
                .expect("mock alive");
            match e {
                MockEvent::Message(c, m) if c < 2 => {
                    if matches!(m.type_id, MSG_AUDIO | MSG_VIDEO | MSG_DATA_AMF0) {
                        per_conn[c].push((m.type_id, m.payload));
                    }
                }
                MockEvent::Closed(c) if c < 2 => closed += 1,
                _ => {}
            }
        }
        let st = out.status();
        assert!(st.reconnects >= 1, "{st:?}");
        assert!(st.bytes_sent > 2 * 3073, "{st:?}");
        out.stop().await;
        producer.abort();
        for (c, msgs) in per_conn.iter().enumerate() {
            assert!(msgs.len() >= 12, "conn {c}: {msgs:?}");
            assert_eq!(msgs[0].0, MSG_DATA_AMF0, "conn {c}");
            assert_eq!(
                (msgs[1].0, &msgs[1].1[..2]),
                (MSG_VIDEO, &[0x17, 0][..]),
                "conn {c}"
            );
            assert_eq!(
                (msgs[2].0, &msgs[2].1[..2]),
                (MSG_AUDIO, &[0xAF, 0][..]),
                "conn {c}"
            );
            assert_eq!(
                (msgs[3].0, &msgs[3].1[..2]),
                (MSG_VIDEO, &[0x17, 1][..]),
                "conn {c}"
            );
            // Headers only once per connection.
            let seq_headers = msgs
                .iter()
                .filter(|m| m.0 != MSG_DATA_AMF0 && m.1.get(1) == Some(&0))
                .count();
            assert_eq!(seq_headers, 2, "conn {c}");
        }
    }
}
