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

/// Errors of the chunk reader: the peer broke the protocol.
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
}

#[derive(Debug, Default, Clone)]
struct InState {
    timestamp: u32,
    delta: u32,
    len: usize,
    type_id: u8,
    stream_id: u32,
    ext: bool,
    buf: Vec<u8>,
}

/// Reassembles chunks received from the peer into messages.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    streams: HashMap<u32, InState>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    /// A reader with the initial chunk size of 128.
    pub fn new() -> Self {
        ChunkReader {
            chunk_size: 128,
            streams: HashMap::new(),
        }
    }

    /// Applies the peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.clamp(1, 0x7FFF_FFFF);
    }

    /// Drops a partly received message (peer's Abort message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            s.buf.clear();
        }
    }

    /// Parses at most one chunk from the front of `data`. Returns `None` when `data`
    /// does not yet hold a whole chunk (nothing consumed); otherwise the number of
    /// bytes consumed and the message this chunk completed, if any.
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
        let hdr_len = [11usize, 7, 3, 0][fmt as usize];
        let Some(h) = data.get(pos..pos + hdr_len) else {
            return Ok(None);
        };
        pos += hdr_len;
        let prev = self.streams.get(&csid);
        if fmt > 0 && prev.is_none() {
            return Err(ChunkError::NoPreviousHeader { fmt, csid });
        }
        let mut st = prev.cloned().unwrap_or_default();
        let field = if fmt <= 2 {
            u32::from_be_bytes([0, h[0], h[1], h[2]])
        } else {
            0
        };
        if fmt <= 2 {
            st.ext = field == EXTENDED;
        }
        let mut field = field;
        if st.ext {
            let Some(e) = data.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            if fmt <= 2 {
                field = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            }
        }
        let continuing = fmt == 3 && !st.buf.is_empty();
        if !continuing {
            // A new message starts here; a half-received one on this stream is dropped.
            st.buf.clear();
            match fmt {
                0 => {
                    st.timestamp = field;
                    st.delta = 0;
                    st.len = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                    st.type_id = h[6];
                    st.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                }
                1 => {
                    st.delta = field;
                    st.timestamp = st.timestamp.wrapping_add(field);
                    st.len = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                    st.type_id = h[6];
                }
                2 => {
                    st.delta = field;
                    st.timestamp = st.timestamp.wrapping_add(field);
                }
                _ => {
                    st.timestamp = st.timestamp.wrapping_add(st.delta);
                }
            }
        }
        let n = (st.len - st.buf.len()).min(self.chunk_size);
        let Some(body) = data.get(pos..pos + n) else {
            return Ok(None);
        };
        pos += n;
        st.buf.extend_from_slice(body);
        let msg = if st.buf.len() >= st.len {
            Some(RtmpMessage {
                csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
                payload: std::mem::take(&mut st.buf),
            })
        } else {
            None
        };
        self.streams.insert(csid, st);
        Ok(Some((pos, msg)))
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
}
