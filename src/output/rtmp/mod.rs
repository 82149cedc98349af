//! RTMP publish client over a tokio `TcpStream`: URL parsing, simple handshake,
//! `connect` → `releaseStream`/`FCPublish` → `createStream` → `publish`, then FLV tag
//! bodies as RTMP audio/video/data messages.
//!
//! Hand-written rather than built on `rml_rtmp`: a publisher needs only a small part
//! of RTMP (a few commands, one chunk writer, a tolerant chunk reader), and owning it
//! keeps timeouts, acknowledgements, extended timestamps and error typing under our
//! control, without an unmaintained dependency and its session/event layer.

use std::time::Duration;

use rand::RngCore;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, trace, warn};

use super::amf0::{self, Amf0Error, Amf0Value};

mod publish;
mod url;

use super::chunk::{self, ChunkError, ChunkReader, ChunkWriter, RtmpMessage};
pub use url::{RtmpUrl, RtmpUrlError};

/// Default RTMP port.
pub const DEFAULT_PORT: u16 = 1935;
/// Chunk size this client announces and uses for sending.
pub const OUT_CHUNK_SIZE: usize = 4096;
const FLASH_VER: &str = "FMLE/3.0 (compatible; cohost)";
const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_AUDIO: u32 = 4;
const CSID_DATA: u32 = 5;
const CSID_VIDEO: u32 = 6;
const CSID_STREAM_COMMAND: u32 = 8;
const OUR_WINDOW_ACK: u32 = 2_500_000;
/// Chunks parsed at most before the parse loop gives the runtime back (`yield_now`, or a
/// return to the caller's `select!` loop): a server streaming one-byte chunks never holds a
/// worker thread for long.
pub const MAX_CHUNKS_PER_POLL: usize = 512;
/// Bytes parsed at most before the parse loop gives the runtime back.
pub const MAX_BYTES_PER_POLL: usize = 64 * 1024;
/// Bytes read from the socket at once.
const READ_SIZE: usize = 8192;
/// Control answers (acknowledgements, ping responses) queued at most between two writes;
/// beyond that a server flooding pings or asking for an ack per byte gets no more answers.
const MAX_PENDING: usize = 16 * 1024;
/// Pings answered at most this often (servers ping every few seconds; a flood of pings gets
/// a trickle of answers, not an echo of the flood).
const PING_ANSWER_INTERVAL: Duration = Duration::from_millis(100);

/// What one pass of the parse loop may still do.
struct Budget {
    chunks: usize,
    bytes: usize,
}

impl Budget {
    fn new() -> Self {
        Budget {
            chunks: MAX_CHUNKS_PER_POLL,
            bytes: MAX_BYTES_PER_POLL,
        }
    }
}

/// Errors of an RTMP connection.
#[derive(Debug, Error)]
pub enum RtmpError {
    /// Socket error (connection refused, reset, broken pipe...).
    #[error("RTMP I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("RTMP server closed the connection")]
    Closed,
    /// A step took too long.
    #[error("RTMP timeout during {0}")]
    Timeout(&'static str),
    /// The handshake failed.
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    /// Broken chunk stream from the server.
    #[error("RTMP protocol error: {0}")]
    Chunk(#[from] ChunkError),
    /// Undecodable AMF0 in a server command.
    #[error("RTMP AMF0 error: {0}")]
    Amf(#[from] Amf0Error),
    /// The server refused `connect`, `createStream` or `publish`.
    #[error("RTMP server rejected {step}: {reason}")]
    Rejected {
        /// Which command.
        step: &'static str,
        /// The server's code/description.
        reason: String,
    },
}

/// Kind of an FLV tag / RTMP media message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// FLV tag type 8, RTMP message type 8.
    Audio,
    /// FLV tag type 9, RTMP message type 9.
    Video,
    /// FLV tag type 18 (script data, e.g. `onMetaData`), RTMP message type 18.
    Script,
}

impl TagKind {
    /// From an FLV tag type byte.
    pub fn from_flv_type(t: u8) -> Option<Self> {
        match t & 0x1F {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        }
    }
}

/// An open RTMP connection in the publishing state.
#[derive(Debug)]
pub struct RtmpPublisher {
    stream: TcpStream,
    writer: ChunkWriter,
    reader: ChunkReader,
    /// Received bytes not parsed yet start at `rpos`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// The parse loop stopped on its budget with whole chunks still buffered.
    backlog: bool,
    /// While a server message is partly received: when it must be complete.
    partial_deadline: Option<tokio::time::Instant>,
    /// While connecting: when the whole publish sequence must be done.
    connect_deadline: Option<tokio::time::Instant>,
    /// When the last ping was answered.
    last_ping_answer: Option<tokio::time::Instant>,
    wbuf: Vec<u8>,
    pending: Vec<u8>,
    stream_id: u32,
    stream_name: String,
    bytes_sent: u64,
    bytes_received: u64,
    last_ack_sent: u64,
    peer_window: u32,
    io_timeout: Duration,
}

impl RtmpPublisher {
    /// Connects to `url`, performs the handshake and the publish sequence, and returns
    /// once the server answered `NetStream.Publish.Start`. The whole sequence is bounded
    /// by `timeout`, and later writes by the same duration.
    pub async fn connect(url: &RtmpUrl, timeout: Duration) -> Result<Self, RtmpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Each step checks the deadline itself (and names itself in the error); this is the
        // safety net.
        tokio::time::timeout_at(
            deadline + Duration::from_millis(100),
            Self::connect_inner(url, timeout, deadline),
        )
        .await
        .map_err(|_| RtmpError::Timeout("connect"))?
    }

    fn queue_command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values);
        self.writer.write_payload(
            &mut self.wbuf,
            CSID_COMMAND,
            0,
            chunk::MSG_COMMAND_AMF0,
            stream_id,
            &payload,
        );
    }

    fn queue_stream_command(&mut self, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values);
        self.writer.write_payload(
            &mut self.wbuf,
            CSID_STREAM_COMMAND,
            0,
            chunk::MSG_COMMAND_AMF0,
            self.stream_id,
            &payload,
        );
    }

    /// Writes everything queued (control answers first), bounded by the I/O timeout.
    async fn flush(&mut self) -> Result<(), RtmpError> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.write_bytes(&pending).await?;
        }
        if !self.wbuf.is_empty() {
            let buf = std::mem::take(&mut self.wbuf);
            let r = self.write_bytes(&buf).await;
            self.wbuf = buf;
            self.wbuf.clear();
            r?;
        }
        Ok(())
    }

    async fn write_bytes(&mut self, buf: &[u8]) -> Result<(), RtmpError> {
        let mut deadline = tokio::time::Instant::now() + self.io_timeout;
        if let Some(d) = self.connect_deadline {
            deadline = deadline.min(d);
        }
        tokio::time::timeout_at(deadline, self.stream.write_all(buf))
            .await
            .map_err(|_| RtmpError::Timeout("write"))??;
        self.bytes_sent += buf.len() as u64;
        Ok(())
    }

    /// Waits for `_result` (Ok, with the whole command) or `_error` for `txn`; each read
    /// is bounded by the I/O timeout (`waiting` names the step in a timeout error).
    async fn wait_result(
        &mut self,
        txn: f64,
        step: &'static str,
        waiting: &'static str,
    ) -> Result<Vec<Amf0Value>, RtmpError> {
        loop {
            let cmd = self.next_command(waiting).await?;
            let name = cmd.first().and_then(Amf0Value::as_str).unwrap_or("");
            let id = cmd.get(1).and_then(Amf0Value::as_number);
            if id != Some(txn) {
                trace!(name, ?id, "RTMP command ignored while waiting for {step}");
                continue;
            }
            match name {
                "_result" => return Ok(cmd),
                "_error" => {
                    return Err(RtmpError::Rejected {
                        step,
                        reason: describe_error(&cmd),
                    })
                }
                _ => {}
            }
        }
    }

    /// Reads until the next AMF0 command, handling control messages on the way; each read
    /// is bounded by the I/O timeout (`waiting` names the step in a timeout error).
    async fn next_command(&mut self, waiting: &'static str) -> Result<Vec<Amf0Value>, RtmpError> {
        loop {
            let mut budget = Budget::new();
            while let Some(msg) = self.parse_one(&mut budget)? {
                if msg.type_id == chunk::MSG_COMMAND_AMF0 {
                    return Ok(amf0::decode_all(&msg.payload)?);
                }
                self.handle_message(msg);
            }
            self.flush().await?;
            if self.backlog {
                tokio::task::yield_now().await;
                continue;
            }
            let deadline = self.read_deadline(waiting)?;
            tokio::time::timeout_at(deadline, self.read_more())
                .await
                .map_err(|_| RtmpError::Timeout(waiting))??;
        }
    }

    /// The next whole message from the bytes received, within `budget`: `None` when no
    /// whole chunk is buffered, or when the budget is spent (then `backlog` is set).
    fn parse_one(&mut self, budget: &mut Budget) -> Result<Option<RtmpMessage>, RtmpError> {
        loop {
            if budget.chunks == 0 || budget.bytes == 0 {
                self.backlog = self.rpos < self.rbuf.len();
                return Ok(None);
            }
            let data = self.rbuf.get(self.rpos..).unwrap_or_default();
            match self.reader.read_chunk(data)? {
                None => {
                    self.backlog = false;
                    return Ok(None);
                }
                Some((n, msg)) => {
                    self.rpos += n;
                    budget.chunks -= 1;
                    budget.bytes = budget.bytes.saturating_sub(n);
                    if let Some(m) = msg {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }

    /// Reads what the socket has (at least one byte) after the unparsed rest.
    async fn read_more(&mut self) -> Result<(), RtmpError> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let mut tmp = [0u8; READ_SIZE];
        let n = self.stream.read(&mut tmp).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        self.on_received(&tmp[..n]);
        Ok(())
    }

    async fn read_exact(&mut self, buf: &mut [u8], step: &'static str) -> Result<(), RtmpError> {
        let deadline = self.read_deadline(step)?;
        tokio::time::timeout_at(deadline, read_exact_or_closed(&mut self.stream, buf))
            .await
            .map_err(|_| RtmpError::Timeout(step))?
    }

    /// When a read must be done: within the I/O timeout, and while connecting within the
    /// whole sequence's deadline (already past: a timeout error now, since a server that
    /// always has bytes ready would never let a timer fire).
    fn read_deadline(&self, step: &'static str) -> Result<tokio::time::Instant, RtmpError> {
        let now = tokio::time::Instant::now();
        let mut deadline = now + self.io_timeout;
        if let Some(d) = self.connect_deadline {
            if now >= d {
                return Err(RtmpError::Timeout(step));
            }
            deadline = deadline.min(d);
        }
        Ok(deadline)
    }

    /// Queues a protocol control answer, unless too many are queued already.
    fn queue_control(&mut self, type_id: u8, payload: &[u8]) {
        if self.pending.len() >= MAX_PENDING {
            trace!(type_id, "RTMP control answer dropped: too many queued");
            return;
        }
        self.writer
            .write_payload(&mut self.pending, CSID_CONTROL, 0, type_id, 0, payload);
    }

    fn on_received(&mut self, data: &[u8]) {
        self.rbuf.extend_from_slice(data);
        self.bytes_received += data.len() as u64;
        if self.bytes_received - self.last_ack_sent >= u64::from(self.peer_window.max(1)) {
            self.last_ack_sent = self.bytes_received;
            let seq = (self.bytes_received & 0xFFFF_FFFF) as u32;
            self.queue_control(chunk::MSG_ACK, &seq.to_be_bytes());
        }
    }

    /// Applies a non-command message from the server.
    fn handle_message(&mut self, msg: RtmpMessage) {
        let p = &msg.payload;
        let be32 = |p: &[u8]| -> Option<u32> {
            p.get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match msg.type_id {
            // Applied by the chunk reader itself (which refuses invalid values).
            chunk::MSG_SET_CHUNK_SIZE => trace!(size = be32(p), "RTMP server chunk size"),
            chunk::MSG_ABORT => trace!(csid = be32(p), "RTMP server aborted a message"),
            chunk::MSG_ACK => trace!(seq = be32(p), "RTMP ack from server"),
            chunk::MSG_WINDOW_ACK_SIZE => {
                if let Some(n) = be32(p) {
                    self.peer_window = n;
                }
            }
            chunk::MSG_SET_PEER_BANDWIDTH => {
                self.queue_control(chunk::MSG_WINDOW_ACK_SIZE, &OUR_WINDOW_ACK.to_be_bytes());
            }
            chunk::MSG_USER_CONTROL => {
                // Ping request (6) → ping response (7) with the same timestamp.
                if p.len() >= 6 && p[0] == 0 && p[1] == 6 {
                    let now = tokio::time::Instant::now();
                    if self
                        .last_ping_answer
                        .is_none_or(|t| now.duration_since(t) >= PING_ANSWER_INTERVAL)
                    {
                        self.last_ping_answer = Some(now);
                        let resp = [0, 7, p[2], p[3], p[4], p[5]];
                        self.queue_control(chunk::MSG_USER_CONTROL, &resp);
                    } else {
                        trace!("RTMP ping not answered: too many");
                    }
                }
            }
            chunk::MSG_COMMAND_AMF0 => match amf0::decode_all(p) {
                Ok(cmd) => {
                    let name = cmd.first().and_then(Amf0Value::as_str).unwrap_or("");
                    let code = status_field(&cmd, "code");
                    if name == "onStatus" && !code.starts_with("NetStream.Publish.Start") {
                        warn!(code, "RTMP server status while publishing");
                    } else {
                        trace!(name, "RTMP command from server");
                    }
                }
                Err(e) => debug!(error = %e, "undecodable RTMP command from server"),
            },
            t => trace!(
                type_id = t,
                len = p.len(),
                "RTMP message from server ignored"
            ),
        }
    }

    /// Reads and handles whatever the server sends (acks, pings, status), at most
    /// [`MAX_CHUNKS_PER_POLL`] chunks / [`MAX_BYTES_PER_POLL`] bytes per call (the rest on
    /// the next call, after a `yield_now`). Cancel-safe: use it as a `select!` branch
    /// beside sending. Errors when the server closes, breaks the protocol or a limit, or
    /// leaves a message partly sent for longer than the I/O timeout.
    pub async fn poll_read(&mut self) -> Result<(), RtmpError> {
        self.update_partial_deadline(false);
        if self.backlog {
            tokio::task::yield_now().await;
        } else if let Some(deadline) = self.partial_deadline {
            tokio::time::timeout_at(deadline, self.read_more())
                .await
                .map_err(|_| RtmpError::Timeout("a partly received server message"))??;
        } else {
            self.read_more().await?;
        }
        let mut budget = Budget::new();
        let mut completed = false;
        while let Some(msg) = self.parse_one(&mut budget)? {
            self.handle_message(msg);
            completed = true;
        }
        self.update_partial_deadline(completed);
        Ok(())
    }

    /// Starts the clock for a partly received message (or a chunk not whole yet), or stops
    /// it when nothing is partly received or a message was just completed (the server is
    /// making progress).
    fn update_partial_deadline(&mut self, completed: bool) {
        if completed {
            self.partial_deadline = None;
        }
        if !self.reader.in_message() && self.rpos == self.rbuf.len() {
            self.partial_deadline = None;
        } else if self.partial_deadline.is_none() {
            self.partial_deadline = Some(tokio::time::Instant::now() + self.io_timeout);
        }
    }

    /// Sends an FLV tag body as an RTMP message with `timestamp_ms`. Script tags get
    /// the `@setDataFrame` prefix RTMP servers expect for `onMetaData`.
    pub async fn send_tag(
        &mut self,
        kind: TagKind,
        timestamp_ms: u32,
        body: &[u8],
    ) -> Result<(), RtmpError> {
        let (csid, type_id) = match kind {
            TagKind::Audio => (CSID_AUDIO, chunk::MSG_AUDIO),
            TagKind::Video => (CSID_VIDEO, chunk::MSG_VIDEO),
            TagKind::Script => (CSID_DATA, chunk::MSG_DATA_AMF0),
        };
        if kind == TagKind::Script && !body_starts_with_set_data_frame(body) {
            let mut payload = amf0::encode_all(&[Amf0Value::str("@setDataFrame")]);
            payload.extend_from_slice(body);
            self.writer.write_payload(
                &mut self.wbuf,
                csid,
                timestamp_ms,
                type_id,
                self.stream_id,
                &payload,
            );
        } else {
            self.writer.write_payload(
                &mut self.wbuf,
                csid,
                timestamp_ms,
                type_id,
                self.stream_id,
                body,
            );
        }
        self.flush().await
    }

    /// Total bytes written to the socket on this connection (handshake included).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Message stream id the server assigned.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Politely ends the publish (`FCUnpublish`, `deleteStream`) and closes the socket.
    pub async fn close(mut self) {
        let name = Amf0Value::String(self.stream_name.clone());
        self.queue_command(
            0,
            &[
                Amf0Value::str("FCUnpublish"),
                Amf0Value::Number(6.0),
                Amf0Value::Null,
                name,
            ],
        );
        self.queue_command(
            0,
            &[
                Amf0Value::str("deleteStream"),
                Amf0Value::Number(7.0),
                Amf0Value::Null,
                Amf0Value::Number(self.stream_id as f64),
            ],
        );
        self.io_timeout = self.io_timeout.min(Duration::from_secs(1));
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

fn body_starts_with_set_data_frame(body: &[u8]) -> bool {
    matches!(amf0::decode(body), Ok((Amf0Value::String(s), _)) if s == "@setDataFrame")
}

/// A string field (`code`, `level`, `description`) of a command's info object (an
/// `onStatus` or `_error`'s fourth value); empty when absent.
fn status_field<'a>(cmd: &'a [Amf0Value], field: &str) -> &'a str {
    cmd.get(3)
        .and_then(|i| i.get(field))
        .and_then(Amf0Value::as_str)
        .unwrap_or("")
}

fn describe_error(cmd: &[Amf0Value]) -> String {
    let code = match status_field(cmd, "code") {
        "" => "_error",
        c => c,
    };
    let desc = status_field(cmd, "description");
    format!("{code} {desc}").trim().to_owned()
}

async fn read_exact_or_closed(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), RtmpError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(RtmpError::Closed),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn set_data_frame_detection() {
        let meta = amf0::encode_all(&[Amf0Value::str("onMetaData"), Amf0Value::EcmaArray(vec![])]);
        assert!(!body_starts_with_set_data_frame(&meta));
        let wrapped = amf0::encode_all(&[Amf0Value::str("@setDataFrame")]);
        assert!(body_starts_with_set_data_frame(&wrapped));
        assert!(!body_starts_with_set_data_frame(&[0xFF]));
    }

    async fn collect_until_closed(
        ev: &mut tokio::sync::mpsc::UnboundedReceiver<super::super::test_server::MockEvent>,
    ) -> Vec<RtmpMessage> {
        use super::super::test_server::MockEvent;
        let mut msgs = Vec::new();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(5), ev.recv())
                .await
                .expect("mock events")
                .expect("mock alive");
            match e {
                MockEvent::Message(_, m) => msgs.push(m),
                MockEvent::Closed(_) => return msgs,
                MockEvent::Connected(_) => {}
            }
        }
    }

    fn command_name(m: &RtmpMessage) -> Option<String> {
        if m.type_id != chunk::MSG_COMMAND_AMF0 {
            return None;
        }
        amf0::decode_all(&m.payload)
            .ok()?
            .first()?
            .as_str()
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn publishes_to_mock_server() {
        let (port, mut ev) = super::super::test_server::start(Default::default()).await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        let mut p = RtmpPublisher::connect(&url, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p.stream_id(), 1);
        let meta = amf0::encode_all(&[
            Amf0Value::str("onMetaData"),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(320.0))]),
        ]);
        p.send_tag(TagKind::Script, 0, &meta).await.unwrap();
        let big = vec![0x17u8; 10_000];
        p.send_tag(TagKind::Video, 40, &big).await.unwrap();
        p.send_tag(TagKind::Audio, 0x0100_0000, &[0xAF, 1, 2])
            .await
            .unwrap();
        assert!(p.bytes_sent() > 3073 + 10_000);
        p.close().await;
        let msgs = collect_until_closed(&mut ev).await;

        assert_eq!(msgs[0].type_id, chunk::MSG_SET_CHUNK_SIZE);
        assert_eq!(msgs[0].payload, 4096u32.to_be_bytes());
        let names: Vec<String> = msgs.iter().filter_map(command_name).collect();
        assert_eq!(
            names,
            [
                "connect",
                "releaseStream",
                "FCPublish",
                "createStream",
                "publish",
                "FCUnpublish",
                "deleteStream"
            ]
        );
        let connect = amf0::decode_all(&msgs[1].payload).unwrap();
        assert_eq!(
            connect[2].get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        let tc = format!("rtmp://127.0.0.1:{port}/live");
        assert_eq!(
            connect[2].get("tcUrl").and_then(Amf0Value::as_str),
            Some(tc.as_str())
        );
        let publish = msgs
            .iter()
            .find(|m| command_name(m).as_deref() == Some("publish"))
            .unwrap();
        assert_eq!(publish.stream_id, 1);
        let args = amf0::decode_all(&publish.payload).unwrap();
        assert_eq!(args[3], Amf0Value::str("key"));
        assert_eq!(args[4], Amf0Value::str("live"));
        // Ping answered; Set Peer Bandwidth answered with Window Ack Size.
        assert!(
            msgs.iter()
                .any(|m| m.type_id == chunk::MSG_USER_CONTROL
                    && m.payload == [0, 7, 0, 0, 0x30, 0x39])
        );
        assert!(msgs.iter().any(|m| m.type_id == chunk::MSG_WINDOW_ACK_SIZE));
        // Media.
        let data = msgs
            .iter()
            .find(|m| m.type_id == chunk::MSG_DATA_AMF0)
            .unwrap();
        let vals = amf0::decode_all(&data.payload).unwrap();
        assert_eq!(vals[0], Amf0Value::str("@setDataFrame"));
        assert_eq!(vals[1], Amf0Value::str("onMetaData"));
        let v = msgs.iter().find(|m| m.type_id == chunk::MSG_VIDEO).unwrap();
        assert_eq!((v.timestamp, v.stream_id, v.payload.len()), (40, 1, 10_000));
        let a = msgs.iter().find(|m| m.type_id == chunk::MSG_AUDIO).unwrap();
        assert_eq!(a.timestamp, 0x0100_0000);
        assert_eq!(a.payload, [0xAF, 1, 2]);
    }

    #[tokio::test]
    async fn rejected_publish_is_a_typed_error() {
        let (port, _ev) =
            super::super::test_server::start(super::super::test_server::MockBehaviour {
                reject_publish: true,
                ..Default::default()
            })
            .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        match RtmpPublisher::connect(&url, Duration::from_secs(5)).await {
            Err(RtmpError::Rejected { step, reason }) => {
                assert_eq!(step, "publish");
                assert!(reason.contains("BadName"), "{reason}");
            }
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_server_is_an_error_not_a_panic() {
        use tokio::io::AsyncWriteExt as _;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut junk = vec![3u8];
            junk.extend((0..5000u32).map(|i| (i * 7919 % 251) as u8));
            let _ = s.write_all(&junk).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        assert!(RtmpPublisher::connect(&url, Duration::from_secs(2))
            .await
            .is_err());
    }

    /// A server that does the handshake, then writes what `attack` makes of the socket.
    async fn hostile_server<F, Fut>(attack: F) -> u16
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut c0c1 = vec![0u8; 1537];
                if s.read_exact(&mut c0c1).await.is_err() {
                    continue;
                }
                let mut hs = vec![3u8];
                hs.extend_from_slice(&[7u8; 1536]);
                hs.extend_from_slice(&c0c1[1..]);
                if s.write_all(&hs).await.is_err() {
                    continue;
                }
                tokio::spawn(attack(s));
            }
        });
        port
    }

    fn control(out: &mut Vec<u8>, type_id: u8, payload: &[u8]) {
        let mut w = ChunkWriter::new();
        w.write_payload(out, CSID_CONTROL, 0, type_id, 0, payload);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn huge_message_in_one_byte_chunks_is_refused_at_its_header() {
        let port = hostile_server(|mut s| async move {
            let mut out = Vec::new();
            control(
                &mut out,
                chunk::MSG_SET_CHUNK_SIZE,
                &(4u32 << 20).to_be_bytes(),
            );
            // A 16 MiB command (the 24-bit maximum) on chunk stream 3 ...
            out.extend_from_slice(&[0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 20, 0, 0, 0, 0]);
            out.extend(std::iter::repeat_n(0u8, 4 << 20));
            // ... then chunk size 1 and one-byte type 3 chunks for ever.
            control(&mut out, chunk::MSG_SET_CHUNK_SIZE, &1u32.to_be_bytes());
            let _ = s.write_all(&out).await;
            let flood = [0xC3u8, 0].repeat(32 * 1024);
            while s.write_all(&flood).await.is_ok() {}
        })
        .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        let t0 = std::time::Instant::now();
        match RtmpPublisher::connect(&url, Duration::from_secs(5)).await {
            Err(RtmpError::Chunk(ChunkError::MessageTooLarge { csid: 3, len, max })) => {
                assert_eq!((len, max), (0xFF_FFFF, 1 << 20));
            }
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    /// Endless valid pings in one-byte chunks: the connect times out, and meanwhile the
    /// parse loop gives the (single-threaded) runtime back, so other tasks keep running.
    #[tokio::test(flavor = "current_thread")]
    async fn endless_small_messages_yield_and_time_out() {
        let port = hostile_server(|mut s| async move {
            let mut out = Vec::new();
            control(&mut out, chunk::MSG_SET_CHUNK_SIZE, &1u32.to_be_bytes());
            let _ = s.write_all(&out).await;
            // A ping request, 6 bytes in 1-byte chunks (type 0 then type 3), again and again.
            let mut ping = vec![0x02, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0, 0];
            for b in [6u8, 0, 0, 0, 1] {
                ping.extend_from_slice(&[0xC2, b]);
            }
            let flood = ping.repeat(4096);
            // Drain what the client writes (ping answers) so that only reading matters.
            let (mut rd, mut wr) = s.into_split();
            tokio::spawn(async move {
                let mut sink = vec![0u8; 65536];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            while wr.write_all(&flood).await.is_ok() {}
        })
        .await;
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        let t0 = std::time::Instant::now();
        let r = RtmpPublisher::connect(&url, Duration::from_millis(1500)).await;
        let took = t0.elapsed();
        assert!(
            matches!(r, Err(RtmpError::Timeout(_))),
            "expected a timeout, got {r:?}"
        );
        assert!(took < Duration::from_millis(2500), "{took:?}");
        // 1.5 s of 10 ms ticks: most of them ran although the parser had work all along.
        let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n >= 50, "only {n} ticks while parsing");
        ticker.abort();
    }

    #[tokio::test]
    async fn silent_server_after_the_handshake_times_out() {
        let port = hostile_server(|s| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        })
        .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        match RtmpPublisher::connect(&url, Duration::from_millis(300)).await {
            Err(RtmpError::Timeout(step)) => assert!(step.starts_with("connect"), "{step}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn message_left_half_sent_while_publishing_fails_the_connection() {
        let port = hostile_server(|s| async move {
            let (mut rd, mut wr) = s.into_split();
            tokio::spawn(async move {
                let mut sink = vec![0u8; 65536];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            // The replies the client waits for, unasked, then half a message.
            let mut w = ChunkWriter::new();
            let mut out = Vec::new();
            for cmd in [
                vec![
                    Amf0Value::str("_result"),
                    Amf0Value::Number(1.0),
                    Amf0Value::Null,
                ],
                vec![
                    Amf0Value::str("_result"),
                    Amf0Value::Number(4.0),
                    Amf0Value::Null,
                    Amf0Value::Number(1.0),
                ],
                vec![
                    Amf0Value::str("onStatus"),
                    Amf0Value::Number(0.0),
                    Amf0Value::Null,
                    Amf0Value::Object(vec![(
                        "code".into(),
                        Amf0Value::str("NetStream.Publish.Start"),
                    )]),
                ],
            ] {
                let payload = amf0::encode_all(&cmd);
                w.write_payload(&mut out, 3, 0, chunk::MSG_COMMAND_AMF0, 0, &payload);
            }
            out.extend_from_slice(&[0x03, 0, 0, 0, 0, 1, 0, 20, 0, 0, 0, 0]);
            out.extend_from_slice(&[2; 100]);
            let _ = wr.write_all(&out).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        let mut p = RtmpPublisher::connect(&url, Duration::from_millis(400))
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let err = loop {
            if let Err(e) = p.poll_read().await {
                break e;
            }
        };
        assert!(
            matches!(err, RtmpError::Timeout(s) if s.contains("partly received")),
            "{err:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
}
