//! HTTP-FLV for audiences: `GET /live/{room}.flv` (CONTRACT "audiences"). The program as
//! one endless FLV file over a chunked response — the FLV header, `onMetaData`, the AVC and
//! AAC sequence headers, the latest GOP from its keyframe (so a player shows a picture at
//! once), then the live tags: the same tags, SEI included, as the RTMP push.
//!
//! * [`GopCache`] — the program's tags since its last keyframe, bounded. [`ProgramOutputs`]
//!   keeps one in an [`FlvHub`] and appends to it under the same lock it sends each tag to its
//!   subscribers under, so a viewer's snapshot of the GOP and its subscription to the live
//!   tags are one step ([`FlvHub::subscribe`]): no tag is lost or sent twice between them.
//! * [`live_file`] — the route. One task per viewer moves the tags from the program's
//!   broadcast into a bounded queue that the response body drains. A viewer that does not
//!   read is dropped, never buffered without bound: when its queue is full (or its broadcast
//!   receiver lags) its stream ends and `cohost_flv_viewers_dropped_total` counts it. The
//!   stream also ends when the program does. Tag bodies are not copied per viewer: the
//!   queues hold the program's own `Bytes` (the GOP and every live picture are shared by all
//!   viewers), only the 15 bytes of framing around each are a viewer's.
//! * [`FlvStats`] — `cohost_flv_viewers` and `cohost_flv_viewers_dropped_total`.
//!
//! ```no_run
//! # fn demo(outputs: cohost::output::ProgramOutputs) {
//! // What `GET /live/{room}.flv` starts from: headers, the GOP, and the tags after it.
//! let start = outputs.flv_subscribe();
//! let mut w = cohost::output::flv_live::FlvWriter::default();
//! let mut file = vec![bytes::Bytes::copy_from_slice(&w.file_header())];
//! for t in &start.gop {
//!     file.extend(w.tag(t, &start.headers).unwrap_or_default());
//! }
//! # }
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use mixer::mux::flv;
use signaling::http::ApiError;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, info_span, warn, Instrument};

use super::rtmp::TagKind;
use super::rtmp_output::{FlvTag, SequenceHeaders};
use crate::sync::lock;
use crate::AppState;

#[cfg(doc)]
use super::ProgramOutputs;

/// Most bytes of tag bodies a [`GopCache`] holds; past it the cache is dropped until the
/// next keyframe (a GOP that long is no use to a joining player anyway).
pub const GOP_MAX_BYTES: usize = 8 << 20;
/// Most tags a [`GopCache`] holds (about 26 s of 30 fps video and 48 kHz AAC).
pub const GOP_MAX_TAGS: usize = 2000;
/// Most chunks (tags) queued for one viewer before it counts as not reading and is dropped
/// (about 6 s of program).
pub const VIEWER_QUEUE_TAGS: usize = 512;
/// Most bytes queued for one viewer (its first chunk, the GOP, always fits an empty queue).
pub const VIEWER_QUEUE_BYTES: usize = 4 << 20;
/// Tag bodies shorter than this are copied into one piece with their framing (audio);
/// longer ones (pictures) go out as the program's own `Bytes`.
const COPY_BELOW: usize = 1024;

/// The program's tags since its latest keyframe: what a joining viewer gets first.
#[derive(Debug, Default)]
pub struct GopCache {
    tags: Vec<FlvTag>,
    bytes: usize,
    /// A keyframe opened the cache and nothing has overflowed it since.
    open: bool,
}

impl GopCache {
    /// Appends one program tag: a video keyframe starts a new GOP; other tags join the open
    /// one. Past [`GOP_MAX_TAGS`] or [`GOP_MAX_BYTES`] the cache empties until the next
    /// keyframe.
    pub fn push(&mut self, tag: &FlvTag) {
        if is_keyframe(tag) {
            self.clear();
            self.open = true;
        }
        if !self.open || tag.kind == TagKind::Script {
            return;
        }
        if self.tags.len() >= GOP_MAX_TAGS || self.bytes + tag.body.len() > GOP_MAX_BYTES {
            self.clear();
            return;
        }
        self.bytes += tag.body.len();
        self.tags.push(tag.clone());
    }

    /// Empties the cache; it opens again at the next keyframe.
    pub fn clear(&mut self) {
        self.tags.clear();
        self.bytes = 0;
        self.open = false;
    }

    /// The cached tags, the keyframe first (empty when there is no open GOP).
    pub fn tags(&self) -> &[FlvTag] {
        &self.tags
    }

    /// Bytes of tag bodies held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn is_keyframe(tag: &FlvTag) -> bool {
    tag.kind == TagKind::Video && tag.keyframe
}

/// The HTTP-FLV side of one room's [`ProgramOutputs`]: its GOP cache, the end-of-program
/// signal and the count of its viewers.
#[derive(Debug)]
pub struct FlvHub {
    gop: Mutex<GopCache>,
    /// Bumped when the program ends: every viewer's stream ends.
    show: watch::Sender<u64>,
    viewers: Arc<AtomicUsize>,
}

impl Default for FlvHub {
    fn default() -> Self {
        FlvHub {
            gop: Mutex::new(GopCache::default()),
            show: watch::channel(0).0,
            viewers: Arc::default(),
        }
    }
}

/// What a viewer starts from: taken with [`FlvHub::subscribe`] in one step.
#[derive(Debug)]
pub struct FlvStart {
    /// The sequence headers that go with [`FlvStart::gop`].
    pub headers: SequenceHeaders,
    /// The latest GOP from its keyframe (empty before the first keyframe or after an
    /// overflow: the viewer then starts at the next keyframe).
    pub gop: Vec<FlvTag>,
    /// Every tag after the GOP.
    pub tags: broadcast::Receiver<FlvTag>,
    /// The sequence headers as they change (a new SPS on a later keyframe).
    pub headers_rx: watch::Receiver<SequenceHeaders>,
    /// Changes (or closes) when the program ends.
    pub ended: watch::Receiver<u64>,
}

impl FlvHub {
    /// Runs `update` (the AVC sequence header of a keyframe), appends `tag` to the GOP cache
    /// and sends it on `tx`, all under the cache's lock.
    pub fn publish(&self, tx: &broadcast::Sender<FlvTag>, tag: FlvTag, update: impl FnOnce()) {
        let mut gop = lock(&self.gop);
        update();
        gop.push(&tag);
        let _ = tx.send(tag);
    }

    /// The current headers and GOP and a subscription to the tags after it, under the lock
    /// [`FlvHub::publish`] appends and sends under.
    pub fn subscribe(
        &self,
        tx: &broadcast::Sender<FlvTag>,
        headers: &watch::Sender<SequenceHeaders>,
    ) -> FlvStart {
        let gop = lock(&self.gop);
        FlvStart {
            headers: headers.borrow().clone(),
            gop: gop.tags().to_vec(),
            tags: tx.subscribe(),
            headers_rx: headers.subscribe(),
            ended: self.show.subscribe(),
        }
    }

    /// The program ended: every viewer's stream ends and the GOP cache empties.
    pub fn end(&self) {
        lock(&self.gop).clear();
        self.show.send_modify(|n| *n += 1);
    }

    /// Viewers of this room now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Bytes held by the GOP cache.
    pub fn gop_bytes(&self) -> usize {
        lock(&self.gop).bytes()
    }

    /// Takes a viewer's place unless `max` (0 = no limit) are watching; the place is given
    /// back when the [`Seat`] drops.
    pub fn seat(&self, max: usize) -> Option<Seat> {
        self.viewers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Seat(self.viewers.clone()))
    }
}

/// One viewer's place in its room (see [`FlvHub::seat`]).
#[derive(Debug)]
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counters of HTTP-FLV viewers over all rooms, for `/metrics`.
#[derive(Debug, Default)]
pub struct FlvStats {
    /// Viewers whose response is open now (`cohost_flv_viewers`).
    pub viewers: AtomicU64,
    /// Viewers dropped for not reading (`cohost_flv_viewers_dropped_total`).
    pub dropped: AtomicU64,
}

impl FlvStats {
    /// Prometheus lines.
    pub fn render(&self) -> String {
        format!(
            "# HELP cohost_flv_viewers HTTP-FLV viewers (GET /live/{{room}}.flv) now.\n\
             # TYPE cohost_flv_viewers gauge\ncohost_flv_viewers {}\n\
             # HELP cohost_flv_viewers_dropped_total HTTP-FLV viewers dropped for not reading (queue full or lagging).\n\
             # TYPE cohost_flv_viewers_dropped_total counter\ncohost_flv_viewers_dropped_total {}\n",
            self.viewers.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// Turns program tags into one viewer's FLV bytes: nothing before the first keyframe, then
/// `onMetaData`, the AVC and AAC sequence headers at the keyframe's timestamp, and the AVC
/// header again before any later keyframe whose SPS/PPS changed. Timestamps are the
/// program's, from the first keyframe's on (audio a little older than it is skipped). The
/// bytes come as pieces: framing, and the tag bodies themselves (shared, not copied).
#[derive(Debug, Default)]
pub struct FlvWriter {
    started: bool,
    start_ts: u32,
    video_header: Option<Bytes>,
}

impl FlvWriter {
    /// The FLV file header (audio and video) and PreviousTagSize0.
    pub fn file_header(&self) -> [u8; 13] {
        flv::file_header(true, true)
    }

    /// True once the first keyframe went out.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The pieces of bytes for `tag` given the current `headers`; `None` while waiting for
    /// the first keyframe (the tag is skipped).
    pub fn tag(&mut self, tag: &FlvTag, headers: &SequenceHeaders) -> Option<Vec<Bytes>> {
        let key = is_keyframe(tag);
        let ts = tag.timestamp_ms;
        let mut out = Vec::new();
        if !self.started {
            if !key {
                return None;
            }
            self.started = true;
            self.start_ts = ts;
            if let Some(m) = &headers.metadata {
                push_tag(&mut out, flv::TAG_SCRIPT, ts, m);
            }
            if let Some(v) = &headers.video {
                push_tag(&mut out, flv::TAG_VIDEO, ts, v);
            }
            self.video_header = headers.video.clone();
            if let Some(a) = &headers.audio {
                push_tag(&mut out, flv::TAG_AUDIO, ts, a);
            }
        } else if key && headers.video.is_some() && headers.video != self.video_header {
            if let Some(v) = &headers.video {
                push_tag(&mut out, flv::TAG_VIDEO, ts, v);
            }
            self.video_header = headers.video.clone();
        } else if ts < self.start_ts && tag.kind == TagKind::Audio {
            return None;
        }
        let kind = match tag.kind {
            TagKind::Audio => flv::TAG_AUDIO,
            TagKind::Video => flv::TAG_VIDEO,
            TagKind::Script => flv::TAG_SCRIPT,
        };
        push_tag(&mut out, kind, ts, &tag.body);
        Some(out)
    }
}

/// One FLV file tag (the bytes of [`flv::tag`]) as pieces: a short body copied into one
/// piece with its 11-byte header and 4-byte PreviousTagSize, a longer one shared between them.
fn push_tag(out: &mut Vec<Bytes>, tag_type: u8, ts: u32, body: &Bytes) {
    if body.len() < COPY_BELOW {
        out.push(Bytes::from(flv::tag(tag_type, ts, body)));
        return;
    }
    // As flv::tag: a body past the 24-bit size field is cut to what it can express.
    let body = body.slice(..body.len().min(0xff_ffff));
    let size = body.len() as u32;
    let [_, s2, s1, s0] = size.to_be_bytes();
    let [t3, t2, t1, t0] = ts.to_be_bytes();
    out.push(Bytes::copy_from_slice(&[
        tag_type, s2, s1, s0, t2, t1, t0, t3, 0, 0, 0,
    ]));
    out.push(body);
    out.push(Bytes::copy_from_slice(&(size + 11).to_be_bytes()));
}

fn pieces_len(p: &[Bytes]) -> usize {
    p.iter().map(Bytes::len).sum()
}

/// Why `GET /live/{file}` is refused.
#[derive(Debug, thiserror::Error)]
pub enum FlvError {
    /// Not `{room}.flv`.
    #[error("no `/live/{0}`: HTTP-FLV is /live/{{room}}.flv, HLS /live/{{room}}/index.m3u8")]
    NotFlv(String),
    /// The room has no running program.
    #[error("room `{0}` has no program (no co-host is publishing)")]
    NoProgram(String),
    /// The room's viewer places are taken.
    #[error("the program of `{room}` has its {max} HTTP-FLV viewers (--max-room-viewers)")]
    Full {
        /// The room.
        room: String,
        /// Its limit.
        max: usize,
    },
}

impl IntoResponse for FlvError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            FlvError::NotFlv(_) | FlvError::NoProgram(_) => (404, "not_found"),
            FlvError::Full { .. } => (429, "limit_reached"),
        };
        ApiError::new(status, code, self.to_string()).into_response()
    }
}

/// How a viewer's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client went away.
    ClientGone,
    /// The program ended (or its outputs went away).
    ProgramEnded,
    /// Its queue was full: it does not read fast enough.
    QueueFull,
    /// Its broadcast receiver lagged by this many tags.
    Lagged(u64),
}

/// `GET /live/{file}`: `{room}.flv` is the room's program as HTTP-FLV (see the module docs).
pub async fn live_file(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    match start(&s, &file) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn start(s: &AppState, file: &str) -> Result<Response, FlvError> {
    let room = file
        .strip_suffix(".flv")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| FlvError::NotFlv(file.to_owned()))?;
    let outputs = s
        .programs
        .running_outputs(room)
        .ok_or_else(|| FlvError::NoProgram(room.to_owned()))?;
    let max = s.programs.max_flv_viewers();
    let seat = outputs.flv_seat(max).ok_or_else(|| FlvError::Full {
        room: room.to_owned(),
        max,
    })?;
    let stats = s.programs.metrics.flv.clone();
    let begin = outputs.flv_subscribe();
    drop(outputs);
    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(VIEWER_QUEUE_TAGS);
    let queued = Arc::new(AtomicUsize::new(0));
    let queue = Queue {
        tx,
        queued: queued.clone(),
    };
    let span = info_span!("flv", room = %room);
    tokio::spawn(feed(begin, queue, stats.clone()).instrument(span));
    stats.viewers.fetch_add(1, Ordering::Relaxed);
    let guard = ViewerGuard { stats, _seat: seat };
    let pending: VecDeque<Bytes> = VecDeque::new();
    let body = futures_util::stream::unfold(
        (rx, pending, queued, guard),
        |(mut rx, mut pending, queued, guard)| async move {
            loop {
                if let Some(b) = pending.pop_front() {
                    queued.fetch_sub(b.len(), Ordering::AcqRel);
                    return Some((Ok::<_, Infallible>(b), (rx, pending, queued, guard)));
                }
                pending.extend(rx.recv().await?);
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "video/x-flv"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Held by the response body: the viewer counts while its response is open.
struct ViewerGuard {
    stats: Arc<FlvStats>,
    _seat: Seat,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.stats.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One viewer's bounded queue (in tags by the channel, in bytes by `queued`).
struct Queue {
    tx: mpsc::Sender<Vec<Bytes>>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Queues `b` unless the viewer is gone or its queue is full.
    fn offer(&self, b: Vec<Bytes>) -> Result<(), End> {
        let len = pieces_len(&b);
        let before = self.queued.load(Ordering::Acquire);
        if before > 0 && before + len > VIEWER_QUEUE_BYTES {
            return Err(End::QueueFull);
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.try_send(b).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => End::QueueFull,
                mpsc::error::TrySendError::Closed(_) => End::ClientGone,
            }
        })
    }
}

/// Moves one viewer's tags into its queue until it goes, falls behind or the program ends.
async fn feed(mut begin: FlvStart, queue: Queue, stats: Arc<FlvStats>) {
    let mut w = FlvWriter::default();
    let mut first = vec![Bytes::copy_from_slice(&w.file_header())];
    for t in &begin.gop {
        if let Some(b) = w.tag(t, &begin.headers) {
            first.extend(b);
        }
    }
    let gop_tags = begin.gop.len();
    let mut sent = pieces_len(&first) as u64;
    info!(gop_tags, bytes = sent, "HTTP-FLV viewer joined");
    let end = match queue.offer(first) {
        Err(e) => e,
        Ok(()) => loop {
            let tag = tokio::select! {
                _ = queue.tx.closed() => break End::ClientGone,
                _ = begin.ended.changed() => break End::ProgramEnded,
                r = begin.tags.recv() => match r {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Closed) => break End::ProgramEnded,
                    Err(broadcast::error::RecvError::Lagged(n)) => break End::Lagged(n),
                },
            };
            let headers = begin.headers_rx.borrow().clone();
            let Some(b) = w.tag(&tag, &headers) else {
                continue;
            };
            let len = pieces_len(&b) as u64;
            if let Err(e) = queue.offer(b) {
                break e;
            }
            sent += len;
        },
    };
    match end {
        End::QueueFull | End::Lagged(_) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            warn!(reason = ?end, bytes = sent, "HTTP-FLV viewer dropped: it does not read");
        }
        End::ClientGone | End::ProgramEnded => {
            info!(reason = ?end, bytes = sent, "HTTP-FLV viewer left");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn video(ts: u32, keyframe: bool, len: usize) -> FlvTag {
        FlvTag {
            kind: TagKind::Video,
            timestamp_ms: ts,
            body: Bytes::from(vec![if keyframe { 0x17 } else { 0x27 }; len]),
            keyframe,
        }
    }

    fn audio(ts: u32) -> FlvTag {
        FlvTag {
            kind: TagKind::Audio,
            timestamp_ms: ts,
            body: Bytes::from_static(&[0xAF, 0x01, 0x21]),
            keyframe: false,
        }
    }

    #[test]
    fn the_cache_holds_the_latest_gop_within_bounds() {
        let mut c = GopCache::default();
        c.push(&video(0, false, 10));
        c.push(&audio(5));
        assert!(c.tags().is_empty(), "nothing before the first keyframe");
        c.push(&video(33, true, 100));
        c.push(&audio(40));
        c.push(&video(66, false, 10));
        assert_eq!(c.tags().len(), 3);
        assert_eq!(c.bytes(), 113);
        c.push(&video(99, true, 50));
        assert_eq!(c.tags().len(), 1, "a keyframe starts a new GOP");
        assert_eq!(c.tags()[0].timestamp_ms, 99);
        // Too many tags: dropped until the next keyframe.
        for i in 0..GOP_MAX_TAGS {
            c.push(&audio(100 + i as u32));
        }
        assert!(c.tags().is_empty());
        c.push(&audio(9999));
        assert!(c.tags().is_empty());
        c.push(&video(10_000, true, 10));
        assert_eq!(c.tags().len(), 1);
        // Too many bytes.
        c.push(&video(10_033, false, GOP_MAX_BYTES));
        assert!(c.tags().is_empty() && c.bytes() == 0);
    }

    #[test]
    fn the_writer_starts_at_a_keyframe_with_its_headers() {
        let headers = SequenceHeaders {
            metadata: Some(Bytes::from_static(&[0x02, 0, 0])),
            video: Some(Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])),
            audio: Some(Bytes::from_static(&[0xAF, 0, 0x11, 0x90])),
        };
        let mut w = FlvWriter::default();
        assert!(w.tag(&audio(0), &headers).is_none());
        assert!(w.tag(&video(0, false, 4), &headers).is_none());
        assert!(!w.started());
        let b = flat(w.tag(&video(500, true, 4), &headers).unwrap());
        // Script, video header, audio header, keyframe: all at 500 ms.
        let mut types = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let size = u32::from_be_bytes([0, b[i + 1], b[i + 2], b[i + 3]]) as usize;
            let ts = u32::from_be_bytes([b[i + 7], b[i + 4], b[i + 5], b[i + 6]]);
            assert_eq!(ts, 500);
            types.push((b[i], b[i + 11]));
            i += 11 + size + 4;
        }
        assert_eq!(
            types,
            vec![(18, 0x02), (9, 0x17), (8, 0xAF), (9, 0x17)],
            "metadata (AMF0 string), AVC header, AAC header, keyframe"
        );
        let len = |p: Option<Vec<Bytes>>| pieces_len(&p.unwrap());
        assert_eq!(len(w.tag(&audio(510), &headers)), 11 + 3 + 4);
        assert!(
            w.tag(&audio(490), &headers).is_none(),
            "older than the start"
        );
        // Same SPS: no header again; a new one: the header before the keyframe.
        assert_eq!(len(w.tag(&video(1000, true, 4), &headers)), 19);
        let changed = SequenceHeaders {
            video: Some(Bytes::from_static(&[0x17, 0, 0, 0, 0, 2])),
            ..headers
        };
        assert_eq!(
            len(w.tag(&video(2000, true, 4), &changed)),
            (11 + 6 + 4) + 19
        );
    }

    fn flat(p: Vec<Bytes>) -> Vec<u8> {
        p.concat()
    }

    #[test]
    fn pictures_are_shared_not_copied_and_framed_as_flv_tag() {
        for len in [0, 3, COPY_BELOW - 1, COPY_BELOW, 100_000] {
            let body = Bytes::from(vec![0x27; len]);
            let mut out = Vec::new();
            push_tag(&mut out, flv::TAG_VIDEO, 0x0102_0304, &body);
            assert_eq!(
                flat(out.clone()),
                flv::tag(flv::TAG_VIDEO, 0x0102_0304, &body)
            );
            if len >= COPY_BELOW {
                assert_eq!(out.len(), 3);
                assert_eq!(out[1].as_ptr(), body.as_ptr(), "the program's own bytes");
            } else {
                assert_eq!(out.len(), 1);
            }
        }
    }

    #[tokio::test]
    async fn snapshot_and_subscription_neither_lose_nor_repeat_a_tag() {
        let hub = Arc::new(FlvHub::default());
        let (tx, _) = broadcast::channel::<FlvTag>(4096);
        let (htx, _) = watch::channel(SequenceHeaders::default());
        let feeder = {
            let (hub, tx) = (hub.clone(), tx.clone());
            std::thread::spawn(move || {
                for i in 0..3000u32 {
                    hub.publish(&tx, video(i, i % 30 == 0, 1), || {});
                }
            })
        };
        let mut starts = Vec::new();
        while starts.len() < 50 {
            starts.push(hub.subscribe(&tx, &htx));
            std::thread::yield_now();
        }
        feeder.join().unwrap();
        drop(tx);
        for mut s in starts {
            let mut seen: Vec<u32> = s.gop.iter().map(|t| t.timestamp_ms).collect();
            while let Ok(t) = s.tags.recv().await {
                seen.push(t.timestamp_ms);
            }
            if let Some(first) = s.gop.first() {
                assert!(first.keyframe);
            }
            assert!(
                seen.windows(2).all(|w| w[1] == w[0] + 1),
                "a gap or a repeat between the GOP and the live tags"
            );
        }
        hub.end();
        assert_eq!(hub.gop_bytes(), 0);
    }

    #[test]
    fn seats_are_limited_and_given_back() {
        let hub = FlvHub::default();
        let a = hub.seat(2).unwrap();
        let _b = hub.seat(2).unwrap();
        assert!(hub.seat(2).is_none());
        drop(a);
        assert_eq!(hub.viewers(), 1);
        assert!(hub.seat(2).is_some());
        assert!(hub.seat(0).is_some(), "0: no limit");
    }
}
