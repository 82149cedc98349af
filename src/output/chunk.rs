//! RTMP chunk stream: splitting messages into chunks (writer) and reassembling them
//! (reader), with header compression (types 0–3) and extended timestamps.

use std::collections::HashMap;

use thiserror::Error;

/// Message type: Set Chunk Size.
pub const MSG_SET_CHUNK_SIZE: u8 = 1;
/// Message type: Abort.
pub const MSG_ABORT: u8 = 2;
/// Message type: Acknowledgement.
pub const MSG_ACK: u8 = 3;
/// Message type: User Control.
pub const MSG_USER_CONTROL: u8 = 4;
/// Message type: Window Acknowledgement Size.
pub const MSG_WINDOW_ACK_SIZE: u8 = 5;
/// Message type: Set Peer Bandwidth.
pub const MSG_SET_PEER_BANDWIDTH: u8 = 6;
/// Message type: audio.
pub const MSG_AUDIO: u8 = 8;
/// Message type: video.
pub const MSG_VIDEO: u8 = 9;
/// Message type: AMF0 data (e.g. `@setDataFrame`).
pub const MSG_DATA_AMF0: u8 = 18;
/// Message type: AMF0 command.
pub const MSG_COMMAND_AMF0: u8 = 20;

/// Largest message the reader accepts (the length field is 24 bits anyway).
pub const MAX_MESSAGE_LEN: usize = 0xFF_FFFF;
const EXTENDED: u32 = 0xFF_FFFF;

/// One RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// Chunk stream id it travels on (2 = protocol control, 3 = commands, ...).
    pub csid: u32,
    /// Timestamp in milliseconds (absolute, 32-bit wrapping).
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct OutHeader {
    timestamp: u32,
    /// Delta carried by the last type 1/2 header (None after a type 0).
    delta: Option<u32>,
    len: usize,
    type_id: u8,
    stream_id: u32,
}

struct MsgRef {
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
}

/// Splits messages into chunks, compressing headers against the previous message on
/// the same chunk stream.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
    prev: HashMap<u32, OutHeader>,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn write_basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    let f = fmt << 6;
    if (2..64).contains(&csid) {
        out.push(f | csid as u8);
    } else if (64..320).contains(&csid) {
        out.push(f);
        out.push((csid - 64) as u8);
    } else {
        let c = csid.saturating_sub(64).min(0xFFFF);
        out.push(f | 1);
        out.push(c as u8);
        out.push((c >> 8) as u8);
    }
}

fn be24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes()[1..]);
}

impl ChunkWriter {
    /// A writer with the protocol's initial chunk size of 128.
    pub fn new() -> Self {
        ChunkWriter {
            chunk_size: 128,
            prev: HashMap::new(),
        }
    }

    /// Current outgoing chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Changes the outgoing chunk size (send a Set Chunk Size message first).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.clamp(1, 0x7FFF_FFFF);
    }

    /// Forgets header state (e.g. on a new connection).
    pub fn reset(&mut self) {
        self.prev.clear();
    }

    /// Appends `msg` as chunks to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, msg: &RtmpMessage) {
        self.write_payload(
            out,
            msg.csid,
            msg.timestamp,
            msg.type_id,
            msg.stream_id,
            &msg.payload,
        );
    }

    /// Appends a message given by parts as chunks to `out` (no payload copy).
    pub fn write_payload(
        &mut self,
        out: &mut Vec<u8>,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) {
        let msg = MsgRef {
            csid,
            timestamp,
            type_id,
            stream_id,
        };
        let len = payload.len().min(MAX_MESSAGE_LEN);
        let payload = &payload[..len];
        let prev = self.prev.get(&msg.csid).copied();
        // Choose the header type.
        let (fmt, field, delta) = match prev {
            Some(p) if p.stream_id == msg.stream_id && msg.timestamp >= p.timestamp => {
                let d = msg.timestamp - p.timestamp;
                if p.len != len || p.type_id != msg.type_id {
                    (1u8, d, Some(d))
                } else if p.delta != Some(d) {
                    (2, d, Some(d))
                } else {
                    (3, d, Some(d))
                }
            }
            _ => (0, msg.timestamp, None),
        };
        let ext = field >= EXTENDED;
        write_basic_header(out, fmt, msg.csid);
        if fmt <= 2 {
            be24(out, if ext { EXTENDED } else { field });
        }
        if fmt <= 1 {
            be24(out, len as u32);
            out.push(msg.type_id);
        }
        if fmt == 0 {
            out.extend_from_slice(&msg.stream_id.to_le_bytes());
        }
        if ext {
            out.extend_from_slice(&field.to_be_bytes());
        }
        let mut pos = 0;
        loop {
            let n = (len - pos).min(self.chunk_size);
            out.extend_from_slice(&payload[pos..pos + n]);
            pos += n;
            if pos >= len {
                break;
            }
            write_basic_header(out, 3, msg.csid);
            if ext {
                out.extend_from_slice(&field.to_be_bytes());
            }
        }
        self.prev.insert(
            msg.csid,
            OutHeader {
                timestamp: msg.timestamp,
                delta,
                len,
                type_id: msg.type_id,
                stream_id: msg.stream_id,
            },
        );
    }
}

/// Errors of the chunk reader: the peer broke the protocol or went past a limit.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    /// A type 1/2/3 chunk on a chunk stream that never had a type 0 header.
    #[error("chunk type {fmt} on chunk stream {csid} without a previous header")]
    NoPreviousHeader {
        /// Chunk type.
        fmt: u8,
        /// Chunk stream id.
        csid: u32,
    },
    /// A message header announcing more bytes than the reader accepts per message.
    #[error("message of {len} bytes on chunk stream {csid} (at most {max} accepted)")]
    MessageTooLarge {
        /// Chunk stream id.
        csid: u32,
        /// Announced message length.
        len: usize,
        /// The per-message limit.
        max: usize,
    },
    /// Partly received messages over all chunk streams would hold more than the limit.
    #[error("partly received messages would buffer {buffered} bytes (at most {max})")]
    BufferedTooMuch {
        /// Bytes that would be buffered.
        buffered: usize,
        /// The limit over all chunk streams.
        max: usize,
    },
    /// More chunk streams than the reader keeps state for.
    #[error("more than {max} chunk streams (chunk stream {csid} is one too many)")]
    TooManyChunkStreams {
        /// The chunk stream id that went past the limit.
        csid: u32,
        /// The limit.
        max: usize,
    },
    /// Set Chunk Size with 0 or a value with the reserved top bit set (≥ 2^31).
    #[error("invalid chunk size {0} (1..=2147483647)")]
    BadChunkSize(u32),
    /// A protocol control message (Set Chunk Size, Abort) shorter than its 4 bytes.
    #[error("protocol control message type {type_id} with a {len}-byte payload")]
    BadControl {
        /// Message type id.
        type_id: u8,
        /// Payload length.
        len: usize,
    },
}

/// Limits of a [`ChunkReader`]: what a hostile peer can make it hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest message accepted (a longer announced length is an error at its header).
    pub max_message_len: usize,
    /// Most bytes held in partly received messages over all chunk streams.
    pub max_buffered: usize,
    /// Most chunk streams with state.
    pub max_chunk_streams: usize,
}

impl ReaderLimits {
    /// What a publishing client needs from a server: control messages and command replies,
    /// all small (1 MiB per message, 2 MiB buffered in all, 64 chunk streams).
    pub const SERVER_TO_CLIENT: ReaderLimits = ReaderLimits {
        max_message_len: 1 << 20,
        max_buffered: 2 << 20,
        max_chunk_streams: 64,
    };
    /// For reading media (a server or test reading a publisher): the protocol's own 24-bit
    /// message length, 32 MiB buffered, 64 chunk streams.
    pub const MEDIA: ReaderLimits = ReaderLimits {
        max_message_len: MAX_MESSAGE_LEN,
        max_buffered: 32 << 20,
        max_chunk_streams: 64,
    };
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits::SERVER_TO_CLIENT
    }
}

/// Header state of one incoming chunk stream (small, `Copy`); the partly received payload
/// lives beside it and is only ever appended to.
#[derive(Debug, Default, Clone, Copy)]
struct InHeader {
    timestamp: u32,
    delta: u32,
    len: usize,
    type_id: u8,
    stream_id: u32,
    ext: bool,
}

#[derive(Debug, Default)]
struct InState {
    hdr: InHeader,
    buf: Vec<u8>,
}

/// Reassembles chunks received from the peer into messages. A pure core: bytes in,
/// messages or [`ChunkError`]s out, state updated in place, every buffer bounded by its
/// [`ReaderLimits`]. It applies the peer's Set Chunk Size and Abort messages itself (and
/// still returns them).
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    limits: ReaderLimits,
    streams: HashMap<u32, InState>,
    /// Bytes held in partly received messages over all chunk streams.
    buffered: usize,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest chunk size the protocol allows (the top bit is reserved).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;

/// Payload bytes preallocated for a new message at most (the rest grows as it arrives, so
/// a header announcing a large message costs nothing until its bytes come).
const PREALLOC: usize = 64 * 1024;

impl ChunkReader {
    /// A reader with the initial chunk size of 128 and [`ReaderLimits::SERVER_TO_CLIENT`].
    pub fn new() -> Self {
        Self::with_limits(ReaderLimits::SERVER_TO_CLIENT)
    }

    /// A reader with the initial chunk size of 128 and `limits`.
    pub fn with_limits(limits: ReaderLimits) -> Self {
        ChunkReader {
            chunk_size: 128,
            limits,
            streams: HashMap::new(),
            buffered: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ReaderLimits {
        self.limits
    }

    /// Current incoming chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Bytes held in partly received messages over all chunk streams.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Number of chunk streams with state.
    pub fn chunk_streams(&self) -> usize {
        self.streams.len()
    }

    /// True while some message is partly received.
    pub fn in_message(&self) -> bool {
        self.streams.values().any(|s| !s.buf.is_empty())
    }

    /// Sets the incoming chunk size, clamped to 1..=2^31-1 (the reader applies the peer's
    /// Set Chunk Size itself, refusing invalid values; see [`Self::try_set_chunk_size`]).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE as usize);
    }

    /// Applies a Set Chunk Size value: 0 and values with the top bit set are refused.
    pub fn try_set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// Drops a partly received message and frees its buffer (the peer's Abort message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            self.buffered -= s.buf.len();
            s.buf = Vec::new();
        }
    }

    /// Parses at most one chunk from the front of `data`. Returns `None` when `data`
    /// does not yet hold a whole chunk (nothing consumed, no state changed); otherwise the
    /// number of bytes consumed and the message this chunk completed, if any. After an
    /// error the reader's state is unspecified: drop the connection.
    pub fn read_chunk(
        &mut self,
        data: &[u8],
    ) -> Result<Option<(usize, Option<RtmpMessage>)>, ChunkError> {
        let Some(&b0) = data.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3F {
            0 => match data.get(1) {
                Some(&b1) => (64 + b1 as u32, 2),
                None => return Ok(None),
            },
            1 => match (data.get(1), data.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + b1 as u32 + ((b2 as u32) << 8), 3),
                _ => return Ok(None),
            },
            c => (c as u32, 1),
        };
        let hdr_len = [11usize, 7, 3, 0][usize::from(fmt)];
        let Some(h) = data.get(pos..pos + hdr_len) else {
            return Ok(None);
        };
        pos += hdr_len;
        let (prev, partial) = match self.streams.get(&csid) {
            Some(s) => (Some(s.hdr), s.buf.len()),
            None => (None, 0),
        };
        if fmt > 0 && prev.is_none() {
            return Err(ChunkError::NoPreviousHeader { fmt, csid });
        }
        if prev.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ChunkError::TooManyChunkStreams {
                csid,
                max: self.limits.max_chunk_streams,
            });
        }
        // The new header, computed on a copy: nothing changes until the chunk is whole.
        let mut hdr = prev.unwrap_or_default();
        let mut field = if fmt <= 2 {
            u32::from_be_bytes([0, h[0], h[1], h[2]])
        } else {
            0
        };
        if fmt <= 2 {
            hdr.ext = field == EXTENDED;
        }
        if hdr.ext {
            let Some(e) = data.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            if fmt <= 2 {
                field = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            }
        }
        let continuing = fmt == 3 && partial > 0;
        if !continuing {
            match fmt {
                0 => {
                    hdr.timestamp = field;
                    hdr.delta = 0;
                    hdr.len = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                    hdr.type_id = h[6];
                    hdr.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                }
                1 => {
                    hdr.delta = field;
                    hdr.timestamp = hdr.timestamp.wrapping_add(field);
                    hdr.len = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                    hdr.type_id = h[6];
                }
                2 => {
                    hdr.delta = field;
                    hdr.timestamp = hdr.timestamp.wrapping_add(field);
                }
                _ => {
                    hdr.timestamp = hdr.timestamp.wrapping_add(hdr.delta);
                }
            }
            if hdr.len > self.limits.max_message_len {
                return Err(ChunkError::MessageTooLarge {
                    csid,
                    len: hdr.len,
                    max: self.limits.max_message_len,
                });
            }
        }
        // A new message drops a half-received one on this stream.
        let have = if continuing { partial } else { 0 };
        let n = (hdr.len - have).min(self.chunk_size);
        let Some(body) = data.get(pos..pos + n) else {
            return Ok(None);
        };
        pos += n;
        let complete = have + n >= hdr.len;
        let buffered_after = self.buffered - partial + if complete { 0 } else { have + n };
        if buffered_after > self.limits.max_buffered {
            return Err(ChunkError::BufferedTooMuch {
                buffered: buffered_after,
                max: self.limits.max_buffered,
            });
        }
        // Commit, in place.
        let st = self.streams.entry(csid).or_default();
        st.hdr = hdr;
        if !continuing && !st.buf.is_empty() {
            st.buf = Vec::new();
        }
        self.buffered = buffered_after;
        if complete && have == 0 {
            // The whole message in one chunk: no reassembly buffer at all.
            return self.completed(csid, hdr, body.to_vec(), pos);
        }
        if st.buf.capacity() == 0 {
            st.buf.reserve(hdr.len.min(PREALLOC));
        }
        st.buf.extend_from_slice(body);
        if complete {
            let payload = std::mem::take(&mut st.buf);
            return self.completed(csid, hdr, payload, pos);
        }
        Ok(Some((pos, None)))
    }

    /// A message is whole: applies it if it is Set Chunk Size or Abort, and returns it.
    fn completed(
        &mut self,
        csid: u32,
        hdr: InHeader,
        payload: Vec<u8>,
        pos: usize,
    ) -> Result<Option<(usize, Option<RtmpMessage>)>, ChunkError> {
        if matches!(hdr.type_id, MSG_SET_CHUNK_SIZE | MSG_ABORT) {
            let Some(v) = payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                return Err(ChunkError::BadControl {
                    type_id: hdr.type_id,
                    len: payload.len(),
                });
            };
            if hdr.type_id == MSG_SET_CHUNK_SIZE {
                self.try_set_chunk_size(v)?;
            } else {
                self.abort(v);
            }
        }
        Ok(Some((
            pos,
            Some(RtmpMessage {
                csid,
                timestamp: hdr.timestamp,
                type_id: hdr.type_id,
                stream_id: hdr.stream_id,
                payload,
            }),
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(csid: u32, ts: u32, type_id: u8, sid: u32, len: usize) -> RtmpMessage {
        RtmpMessage {
            csid,
            timestamp: ts,
            type_id,
            stream_id: sid,
            payload: (0..len).map(|i| i as u8).collect(),
        }
    }

    fn read_all(r: &mut ChunkReader, mut data: &[u8]) -> Vec<RtmpMessage> {
        let mut out = Vec::new();
        while let Some((n, m)) = r.read_chunk(data).unwrap() {
            data = &data[n..];
            out.extend(m);
        }
        assert!(data.is_empty(), "{} bytes left", data.len());
        out
    }

    #[test]
    fn header_types_0_to_3() {
        let mut w = ChunkWriter::new();
        let mut out = Vec::new();
        w.write(&mut out, &msg(4, 1000, 8, 1, 10));
        // Type 0: 1 + 11 + 10.
        assert_eq!(out.len(), 22);
        assert_eq!(out[0], 0x04);
        assert_eq!(&out[1..4], &[0x00, 0x03, 0xE8]);
        assert_eq!(&out[4..7], &[0, 0, 10]);
        assert_eq!(out[7], 8);
        assert_eq!(&out[8..12], &[1, 0, 0, 0]); // stream id little-endian
        out.clear();
        // Same stream, different length → type 1 with delta 20.
        w.write(&mut out, &msg(4, 1020, 8, 1, 12));
        assert_eq!(out[0], 0x44);
        assert_eq!(&out[1..4], &[0, 0, 20]);
        assert_eq!(&out[4..7], &[0, 0, 12]);
        assert_eq!(out.len(), 1 + 7 + 12);
        out.clear();
        // Same length/type, new delta → type 2.
        w.write(&mut out, &msg(4, 1041, 8, 1, 12));
        assert_eq!(out[0], 0x84);
        assert_eq!(&out[1..4], &[0, 0, 21]);
        assert_eq!(out.len(), 1 + 3 + 12);
        out.clear();
        // Same delta again → type 3.
        w.write(&mut out, &msg(4, 1062, 8, 1, 12));
        assert_eq!(out[0], 0xC4);
        assert_eq!(out.len(), 1 + 12);
        out.clear();
        // Timestamp going backwards → type 0 again.
        w.write(&mut out, &msg(4, 5, 8, 1, 12));
        assert_eq!(out[0], 0x04);
    }

    #[test]
    fn splits_at_chunk_size_and_reassembles() {
        let mut w = ChunkWriter::new();
        w.set_chunk_size(4096);
        let m = msg(6, 33, 9, 1, 10_000);
        let mut out = Vec::new();
        w.write(&mut out, &m);
        // 12-byte header + 4096 + (1 + 4096) + (1 + 1808).
        assert_eq!(out.len(), 12 + 10_000 + 2);
        assert_eq!(out[12 + 4096], 0xC6);
        assert_eq!(out[12 + 4096 + 1 + 4096], 0xC6);
        let mut r = ChunkReader::new();
        r.set_chunk_size(4096);
        // Feed byte by byte: partial input must never be consumed.
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for b in &out {
            buf.push(*b);
            while let Some((n, mm)) = r.read_chunk(&buf).unwrap() {
                buf.drain(..n);
                got.extend(mm);
            }
        }
        assert_eq!(got, vec![m]);
    }

    #[test]
    fn extended_timestamp() {
        let mut w = ChunkWriter::new();
        let m1 = msg(6, 0x0100_0000, 9, 1, 300);
        let mut out = Vec::new();
        w.write(&mut out, &m1);
        assert_eq!(&out[1..4], &[0xFF, 0xFF, 0xFF]);
        assert_eq!(&out[12..16], &[0x01, 0, 0, 0]);
        // Continuation chunks (type 3) repeat the extended timestamp.
        assert_eq!(out[16 + 128], 0xC6);
        assert_eq!(&out[16 + 128 + 1..16 + 128 + 5], &[0x01, 0, 0, 0]);
        assert_eq!(out.len(), 16 + 300 + 2 * 5);
        let m2 = msg(6, 0x0100_0000 + 40, 9, 1, 300);
        w.write(&mut out, &m2);
        let mut r = ChunkReader::new();
        assert_eq!(read_all(&mut r, &out), vec![m1, m2]);
    }

    #[test]
    fn reader_handles_interleaving_and_long_csids() {
        let mut w = ChunkWriter::new();
        let mut out = Vec::new();
        let a = msg(3, 0, 20, 0, 200);
        let b = msg(70, 0, 20, 0, 5);
        let c = msg(400, 7, 20, 0, 5);
        w.write(&mut out, &a);
        w.write(&mut out, &b);
        w.write(&mut out, &c);
        let d = msg(3, 10, 20, 0, 200);
        let e = msg(3, 20, 20, 0, 200);
        w.write(&mut out, &d);
        w.write(&mut out, &e);
        let mut r = ChunkReader::new();
        assert_eq!(read_all(&mut r, &out), vec![a, b, c, d, e]);
    }

    #[test]
    fn reader_rejects_type3_without_history() {
        let mut r = ChunkReader::new();
        assert_eq!(
            r.read_chunk(&[0xC5, 1, 2]),
            Err(ChunkError::NoPreviousHeader { fmt: 3, csid: 5 })
        );
        assert_eq!(r.read_chunk(&[0x05, 0, 0]), Ok(None));
    }

    /// A type 0 header for `len` bytes of `type_id` on `csid` (< 64).
    fn type0(csid: u8, ts: u32, len: usize, type_id: u8) -> Vec<u8> {
        let mut v = vec![csid];
        v.extend_from_slice(&ts.to_be_bytes()[1..]);
        v.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    fn set_chunk_size_msg(size: u32) -> Vec<u8> {
        let mut v = type0(2, 0, 4, MSG_SET_CHUNK_SIZE);
        v.extend_from_slice(&size.to_be_bytes());
        v
    }

    #[test]
    fn chunk_size_1_and_a_huge_message_is_refused_at_its_header() {
        let mut r = ChunkReader::new();
        let mut data = set_chunk_size_msg(4 << 20);
        data.extend(set_chunk_size_msg(1));
        let got = read_all(&mut r, &data);
        assert_eq!(got.len(), 2);
        assert_eq!(r.chunk_size(), 1);
        // 16 MiB announced (the 24-bit maximum): refused before a payload byte arrives.
        let hdr = type0(3, 0, MAX_MESSAGE_LEN, MSG_COMMAND_AMF0);
        assert_eq!(
            r.read_chunk(&hdr),
            Err(ChunkError::MessageTooLarge {
                csid: 3,
                len: MAX_MESSAGE_LEN,
                max: 1 << 20
            })
        );
        // Exactly the cap is fine, one byte per chunk, type 3 continuations.
        let mut r = ChunkReader::new();
        r.set_chunk_size(1);
        let len = 1 << 20;
        let mut data = type0(3, 0, len, MSG_COMMAND_AMF0);
        data.push(0xAB);
        for i in 1..len {
            data.push(0xC3);
            data.push(i as u8);
        }
        let got = read_all(&mut r, &data);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.len(), len);
        assert_eq!(got[0].payload[0], 0xAB);
        assert_eq!(got[0].payload[len - 1], (len - 1) as u8);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn total_buffered_bytes_are_capped() {
        let mut r = ChunkReader::new();
        r.set_chunk_size(512 * 1024);
        // Four 1 MiB messages half received: 2 MiB is fine, a fifth half goes past it.
        let mut data = Vec::new();
        for csid in 3..7u8 {
            data.extend(type0(csid, 0, 1 << 20, MSG_COMMAND_AMF0));
            data.extend(std::iter::repeat_n(0u8, 512 * 1024));
        }
        assert!(read_all(&mut r, &data).is_empty());
        assert_eq!(r.buffered(), 4 * 512 * 1024);
        let mut more = type0(7, 0, 1 << 20, MSG_COMMAND_AMF0);
        more.extend(std::iter::repeat_n(0u8, 512 * 1024));
        assert_eq!(
            r.read_chunk(&more),
            Err(ChunkError::BufferedTooMuch {
                buffered: 5 * 512 * 1024,
                max: 2 << 20
            })
        );
    }

    #[test]
    fn too_many_chunk_streams_are_refused() {
        let mut r = ChunkReader::new();
        let mut data = Vec::new();
        for csid in 0..64u32 {
            // Long-form ids 64.. (two-byte basic header), empty messages.
            data.push(0);
            data.push(csid as u8);
            data.extend_from_slice(&type0(0, 0, 0, MSG_USER_CONTROL)[1..]);
        }
        assert_eq!(read_all(&mut r, &data).len(), 64);
        assert_eq!(r.chunk_streams(), 64);
        let mut one_more = vec![0u8, 64];
        one_more.extend_from_slice(&type0(0, 0, 0, MSG_USER_CONTROL)[1..]);
        assert_eq!(
            r.read_chunk(&one_more),
            Err(ChunkError::TooManyChunkStreams { csid: 128, max: 64 })
        );
        // Known streams still work.
        let again = [0x40u8, 0, 0, 0, 0, 0, 0, 0, 4];
        assert!(r.read_chunk(&again).unwrap().is_some());
    }

    #[test]
    fn invalid_chunk_sizes_are_refused() {
        for bad in [0u32, 0x8000_0000, 0xFFFF_FFFF] {
            let mut r = ChunkReader::new();
            assert_eq!(
                r.read_chunk(&set_chunk_size_msg(bad)),
                Err(ChunkError::BadChunkSize(bad))
            );
            assert_eq!(r.chunk_size(), 128);
        }
        let mut r = ChunkReader::new();
        read_all(&mut r, &set_chunk_size_msg(MAX_CHUNK_SIZE));
        assert_eq!(r.chunk_size(), MAX_CHUNK_SIZE as usize);
        // Too short a payload.
        let mut short = type0(2, 0, 2, MSG_SET_CHUNK_SIZE);
        short.extend_from_slice(&[0, 1]);
        assert_eq!(
            ChunkReader::new().read_chunk(&short),
            Err(ChunkError::BadControl {
                type_id: MSG_SET_CHUNK_SIZE,
                len: 2
            })
        );
    }

    #[test]
    fn extended_timestamps_on_every_header_type() {
        let mut r = ChunkReader::new();
        r.set_chunk_size(2);
        let mut data = Vec::new();
        // Type 0 with an extended timestamp, 3 bytes in two chunks: the type 3
        // continuation repeats the extended field.
        data.extend_from_slice(&[0x04, 0xFF, 0xFF, 0xFF, 0, 0, 3, 8, 1, 0, 0, 0]);
        data.extend_from_slice(&0x0123_4567u32.to_be_bytes());
        data.extend_from_slice(&[1, 2]);
        data.push(0xC4);
        data.extend_from_slice(&0x0123_4567u32.to_be_bytes());
        data.push(3);
        // Type 2 with an extended delta: timestamp + 0x0100_0000.
        data.extend_from_slice(&[0x84, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        data.extend_from_slice(&[4, 5]);
        data.push(0xC4);
        data.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        data.push(6);
        // Type 1 back to a plain delta of 10: no extended field any more.
        data.extend_from_slice(&[0x44, 0, 0, 10, 0, 0, 1, 8, 7]);
        let got = read_all(&mut r, &data);
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [0x0123_4567, 0x0223_4567, 0x0223_4571]);
        assert_eq!(got[0].payload, [1, 2, 3]);
        assert_eq!(got[1].payload, [4, 5, 6]);
        assert_eq!(got[2].payload, [7]);
        assert!(got.iter().all(|m| m.stream_id == 1));
    }

    #[test]
    fn type3_continues_a_message_or_starts_the_next_with_the_same_header() {
        let mut r = ChunkReader::new();
        r.set_chunk_size(2);
        let mut data = type0(5, 100, 3, MSG_AUDIO);
        data.extend_from_slice(&[1, 2]);
        // Interleaved: another stream's whole message between the two chunks.
        data.extend(type0(6, 7, 1, MSG_VIDEO));
        data.push(9);
        data.extend_from_slice(&[0xC5, 3]);
        // Type 2 sets a delta of 20, then type 3 starts new messages with that delta.
        data.extend_from_slice(&[0x85, 0, 0, 20, 4, 5, 0xC5, 6]);
        data.extend_from_slice(&[0xC5, 7, 8, 0xC5, 9]);
        let got = read_all(&mut r, &data);
        let seen: Vec<(u32, u32, Vec<u8>)> = got
            .into_iter()
            .map(|m| (m.csid, m.timestamp, m.payload))
            .collect();
        assert_eq!(
            seen,
            [
                (6, 7, vec![9]),
                (5, 100, vec![1, 2, 3]),
                (5, 120, vec![4, 5, 6]),
                (5, 140, vec![7, 8, 9]),
            ]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn abort_frees_the_partial_message() {
        let mut r = ChunkReader::new();
        let mut data = type0(3, 0, 1000, MSG_COMMAND_AMF0);
        data.extend(std::iter::repeat_n(7u8, 128));
        assert!(read_all(&mut r, &data).is_empty());
        assert_eq!(r.buffered(), 128);
        assert!(r.in_message());
        let mut abort = type0(2, 0, 4, MSG_ABORT);
        abort.extend_from_slice(&3u32.to_be_bytes());
        let got = read_all(&mut r, &abort);
        assert_eq!(got[0].type_id, MSG_ABORT);
        assert_eq!(r.buffered(), 0);
        assert!(!r.in_message());
        // The stream keeps its header: a type 3 now starts a new 1000-byte message.
        let mut next = vec![0xC3];
        next.extend(std::iter::repeat_n(1u8, 128));
        assert!(read_all(&mut r, &next).is_empty());
        assert_eq!(r.buffered(), 128);
        // A new type 0 on the stream drops the half message too.
        let mut small = type0(3, 0, 2, MSG_COMMAND_AMF0);
        small.extend_from_slice(&[1, 2]);
        assert_eq!(read_all(&mut r, &small)[0].payload, [1, 2]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn incomplete_chunks_change_nothing() {
        let mut r = ChunkReader::new();
        let mut data = type0(3, 0, 200, MSG_COMMAND_AMF0);
        data.extend(std::iter::repeat_n(1u8, 128));
        for end in 0..data.len() {
            assert_eq!(r.read_chunk(&data[..end]), Ok(None), "{end}");
            assert_eq!(r.chunk_streams(), 0);
        }
        assert!(r.read_chunk(&data).unwrap().is_some());
        assert_eq!(r.buffered(), 128);
    }

    /// Random inputs, as the `rtmp_chunk` fuzz target feeds them (for machines without
    /// cargo-fuzz): never a panic, the limits always hold.
    #[test]
    fn random_inputs_never_panic_and_limits_hold() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 600) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias towards valid-looking headers: small chunk stream ids and short lengths.
            for b in data.iter_mut().step_by(7) {
                *b &= 0xC7;
            }
            fuzz_one(&data);
        }
    }

    /// The body of the `rtmp_chunk` fuzz target (the same code as `fuzz/fuzz_targets/rtmp_chunk.rs`): `data` is
    /// fed to a [`ChunkReader`] in pieces whose sizes come from the input, and every completed
    /// message's payload to the AMF0 decoder. Panics only if a limit is broken.
    fn fuzz_one(data: &[u8]) {
        let Some((&first, rest)) = data.split_first() else {
            return;
        };
        let mut r = ChunkReader::new();
        if first & 1 == 1 {
            r.set_chunk_size(usize::from(first >> 1) + 1);
        }
        let limits = r.limits();
        let mut buf: Vec<u8> = Vec::new();
        let step = usize::from(first >> 4) + 1;
        for piece in rest.chunks(step) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match r.read_chunk(&buf[pos..]) {
                    Ok(None) => break,
                    Ok(Some((n, msg))) => {
                        assert!(n > 0 && pos + n <= buf.len());
                        pos += n;
                        if let Some(m) = msg {
                            assert!(m.payload.len() <= limits.max_message_len);
                            let _ = crate::output::amf0::decode_all(&m.payload);
                        }
                    }
                    Err(_) => return,
                }
                assert!(r.buffered() <= limits.max_buffered);
                assert!(r.chunk_streams() <= limits.max_chunk_streams);
            }
            buf.drain(..pos);
        }
        let _ = crate::output::amf0::decode_all(rest);
    }
}
