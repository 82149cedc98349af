//! RTP → media frames for the mixer: H.264 access units (RFC 6184 via the `rtc` depacketizer)
//! and Opus packets, with loss handling: after a gap, video is dropped until the next keyframe
//! and the caller is told to request one.

use mixer::h264::{has_nal_type, nal_type, stap_a_well_formed};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// What one RTP packet produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// Nothing complete yet.
    Pending,
    /// A complete access unit (Annex B) with its RTP timestamp.
    AccessUnit {
        /// Annex-B bytes.
        data: Vec<u8>,
        /// 90 kHz RTP timestamp.
        rtp_ts: u32,
    },
    /// Loss: frames are dropped until a keyframe; request one.
    NeedKeyframe,
}

/// Reassembles H.264 access units from RTP.
#[derive(Debug, Default)]
pub struct H264Assembler {
    depack: H264Packet,
    /// FU-A fragment bytes inside `depack` not yet released (no end bit seen).
    pending_fu: usize,
    buf: Vec<u8>,
    ts: Option<u32>,
    last_seq: Option<u16>,
    waiting_keyframe: bool,
    broken: bool,
}

/// Largest access unit accepted (a 1080p keyframe at high quality is well under this); also
/// the most a stream may hold buffered, fragments included.
pub const MAX_AU_BYTES: usize = 4 << 20;

/// FU-A (RFC 6184 §5.8) payload: `Some(end bit)`, or `None` for other packet types.
fn fu_a_end(payload: &[u8]) -> Option<bool> {
    match payload {
        [ind, hdr, ..] if ind & 0x1f == 28 => Some(hdr & 0x40 != 0),
        _ => None,
    }
}

impl H264Assembler {
    /// New assembler; the first access unit must be a keyframe.
    pub fn new() -> Self {
        H264Assembler {
            waiting_keyframe: true,
            ..Default::default()
        }
    }

    /// Forgets any fragment the depacketizer holds (its FU-A buffer grows until an end bit).
    fn reset_fragments(&mut self) {
        if self.pending_fu > 0 {
            self.depack = H264Packet::default();
            self.pending_fu = 0;
        }
    }

    /// Bytes held for the access unit being assembled, fragments included.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.pending_fu
    }

    fn flush(&mut self) -> Assembled {
        // A fragment that did not end within its access unit is never completed.
        if self.pending_fu > 0 {
            self.reset_fragments();
            self.broken = true;
        }
        let data = std::mem::take(&mut self.buf);
        let ts = self.ts.take();
        let broken = std::mem::replace(&mut self.broken, false);
        let Some(rtp_ts) = ts else {
            return Assembled::Pending;
        };
        if broken {
            self.waiting_keyframe = true;
            return Assembled::NeedKeyframe;
        }
        if data.is_empty() {
            return Assembled::Pending;
        }
        if self.waiting_keyframe {
            if !has_nal_type(&data, nal_type::IDR) {
                return Assembled::Pending;
            }
            self.waiting_keyframe = false;
        }
        Assembled::AccessUnit { data, rtp_ts }
    }

    /// Feeds one packet (any order problems show as gaps).
    pub fn push(&mut self, pkt: &rtp::Packet) -> Assembled {
        let seq = pkt.header.sequence_number;
        let mut out = Assembled::Pending;
        if self.ts.is_some_and(|t| t != pkt.header.timestamp) {
            // A new frame began without the previous one's marker: it is incomplete.
            self.broken = true;
            out = self.flush();
        }
        if let Some(last) = self.last_seq {
            if seq != last.wrapping_add(1) {
                self.broken = true;
                self.depack = H264Packet::default();
                self.pending_fu = 0;
            }
        }
        self.last_seq = Some(seq);
        self.ts = Some(pkt.header.timestamp);
        let fu_end = fu_a_end(&pkt.payload);
        if fu_end.is_some() && self.buf.len() + self.pending_fu + pkt.payload.len() > MAX_AU_BYTES {
            // Fragments without an end: the hard cap on what one stream may hold.
            self.reset_fragments();
            self.broken = true;
        } else {
            let parsed = if stap_a_well_formed(&pkt.payload) {
                self.depack.depacketize(&pkt.payload).ok()
            } else {
                None
            };
            match fu_end {
                Some(false) => self.pending_fu += pkt.payload.len(),
                _ => self.pending_fu = 0,
            }
            match parsed {
                Some(b) if self.buf.len() + b.len() <= MAX_AU_BYTES => {
                    self.buf.extend_from_slice(&b)
                }
                _ => {
                    self.reset_fragments();
                    self.broken = true;
                }
            }
        }
        if pkt.header.marker {
            let done = self.flush();
            if done != Assembled::Pending {
                return done;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.header.marker = marker;
        p.payload = Bytes::copy_from_slice(payload);
        p
    }

    #[test]
    fn waits_for_keyframe_then_assembles_fu_a() {
        let mut a = H264Assembler::new();
        // A P slice first: dropped.
        assert_eq!(
            a.push(&pkt(1, 100, true, &[0x41, 9, 9])),
            Assembled::Pending
        );
        // IDR split in two FU-A fragments.
        assert_eq!(
            a.push(&pkt(2, 200, false, &[0x7c, 0x85, 1, 2])),
            Assembled::Pending
        );
        match a.push(&pkt(3, 200, true, &[0x7c, 0x45, 3])) {
            Assembled::AccessUnit { data, rtp_ts } => {
                assert_eq!(rtp_ts, 200);
                assert_eq!(data, vec![0, 0, 0, 1, 0x65, 1, 2, 3]);
            }
            o => panic!("{o:?}"),
        }
        // Then P frames pass.
        assert!(matches!(
            a.push(&pkt(4, 300, true, &[0x41, 9, 9])),
            Assembled::AccessUnit { .. }
        ));
    }

    #[test]
    fn loss_asks_for_keyframe_and_drops_until_one() {
        let mut a = H264Assembler::new();
        assert!(matches!(
            a.push(&pkt(1, 100, true, &[0x65, 1, 1])),
            Assembled::AccessUnit { .. }
        ));
        assert_eq!(
            a.push(&pkt(2, 200, false, &[0x7c, 0x81, 1])),
            Assembled::Pending
        );
        // seq 3 lost
        assert_eq!(
            a.push(&pkt(4, 200, true, &[0x7c, 0x41, 3])),
            Assembled::NeedKeyframe
        );
        assert_eq!(
            a.push(&pkt(5, 300, true, &[0x41, 1, 1])),
            Assembled::Pending
        );
        assert!(matches!(
            a.push(&pkt(6, 400, true, &[0x65, 1, 1])),
            Assembled::AccessUnit { .. }
        ));
    }

    #[test]
    fn truncated_stap_a_is_refused_not_a_panic() {
        assert!(!stap_a_well_formed(&[0x78, 0, 1, 0x65, 9]));
        assert!(stap_a_well_formed(&[0x78, 0, 1, 0x65, 0, 1, 0x41]));
        let mut a = H264Assembler::new();
        assert_eq!(
            a.push(&pkt(1, 1, true, &[0x78, 0, 1, 0x65, 9])),
            Assembled::NeedKeyframe
        );
    }

    #[test]
    fn fragments_without_an_end_stay_bounded() {
        let mut a = H264Assembler::new();
        let mut frag = vec![0x7c, 0x85];
        frag.extend(std::iter::repeat_n(7u8, 1200));
        frag[1] = 0x05; // FU-A, neither start nor end: a stream of middles
        let mut most = 0;
        for seq in 0..10_000u16 {
            // The same timestamp, no marker: an access unit that never ends.
            a.push(&pkt(seq, 900, false, &frag));
            most = most.max(a.buffered());
        }
        assert!(most <= MAX_AU_BYTES, "{most}");
        // Then a good keyframe is assembled again.
        a.push(&pkt(10_000, 1000, true, &[0x65, 1, 1]));
        assert!(matches!(
            a.push(&pkt(10_001, 1100, true, &[0x65, 2, 2])),
            Assembled::AccessUnit { .. }
        ));
    }

    #[test]
    fn a_new_timestamp_or_a_marker_ends_an_unfinished_fragment() {
        let mut a = H264Assembler::new();
        assert_eq!(
            a.push(&pkt(1, 100, false, &[0x7c, 0x85, 1, 2])),
            Assembled::Pending
        );
        assert_eq!(a.buffered(), 4);
        // A new timestamp: the unfinished fragment is dropped, not continued.
        assert_eq!(
            a.push(&pkt(2, 200, false, &[0x7c, 0x85, 3])),
            Assembled::NeedKeyframe
        );
        assert_eq!(a.buffered(), 3);
        // A marker on a fragment that did not end: dropped too.
        assert_eq!(
            a.push(&pkt(3, 200, true, &[0x7c, 0x05, 4])),
            Assembled::NeedKeyframe
        );
        assert_eq!(a.buffered(), 0);
        // A whole IDR after it is the first access unit out, without old bytes.
        match a.push(&pkt(4, 300, true, &[0x65, 5, 5])) {
            Assembled::AccessUnit { data, .. } => assert_eq!(data, vec![0, 0, 0, 1, 0x65, 5, 5]),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut a = H264Assembler::new();
        for i in 0..2000u32 {
            let len = (i * 7 % 40) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|j| (i as u8).wrapping_mul(13).wrapping_add(j as u8))
                .collect();
            let _ = a.push(&pkt(i as u16 * 3, i / 3, i % 5 == 0, &payload));
        }
    }
}
