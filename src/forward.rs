//! The SFU's forwarder for one subscriber's copy of one published track: a pure core (packets
//! in, rewritten packets or nothing out), driven by the subscription task in [`crate::sfu`].
//!
//! - SSRC and payload type are rewritten to what that subscriber negotiated;
//! - header extensions are dropped (their ids are per connection);
//! - video starts on a keyframe (earlier pictures cannot decode) and waits for the next one
//!   after packets were lost on the way to it (the fan-out queue lagged);
//! - sequence numbers stay contiguous across what was held back (and what was lost before a
//!   restart on a keyframe), so the subscriber never NACKs packets it could not use.

use mixer::h264::rtp_payload_is_keyframe;
use rtc::rtp;

/// One subscriber's rewriting state for one track.
#[derive(Debug, Clone)]
pub struct Forwarder {
    ssrc: u32,
    payload_type: u8,
    video: bool,
    seq_offset: u16,
    started: bool,
    last_in: Option<u16>,
}

impl Forwarder {
    /// A forwarder sending on `ssrc` with `payload_type`; `video` waits for a keyframe.
    pub fn new(video: bool, ssrc: u32, payload_type: u8) -> Self {
        Forwarder {
            ssrc,
            payload_type,
            video,
            seq_offset: 0,
            started: !video,
            last_in: None,
        }
    }

    /// Packets were lost before reaching the forwarder: video waits for the next keyframe
    /// (the caller asks the publisher for one).
    pub fn lost(&mut self) {
        if self.video {
            self.started = false;
        }
    }

    /// Is video waiting for a keyframe?
    pub fn waiting_for_keyframe(&self) -> bool {
        !self.started
    }

    /// Rewrites `packet` for the subscriber; `false` when it is held back (video before a
    /// keyframe), and the sequence numbers after it close over it.
    pub fn rewrite(&mut self, packet: &mut rtp::Packet) -> bool {
        let seq = packet.header.sequence_number;
        if !self.started {
            if !rtp_payload_is_keyframe(&packet.payload) {
                if let Some(l) = self.last_in {
                    self.seq_offset = self.seq_offset.wrapping_sub(seq.wrapping_sub(l));
                }
                self.last_in = Some(seq);
                return false;
            }
            self.started = true;
        }
        self.last_in = Some(seq);
        packet.header.ssrc = self.ssrc;
        packet.header.payload_type = self.payload_type;
        packet.header.sequence_number = seq.wrapping_add(self.seq_offset);
        packet.header.extension = false;
        packet.header.extensions.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDR: &[u8] = &[0x65, 1, 2];
    const P: &[u8] = &[0x41, 1, 2];

    fn pkt(seq: u16, payload: &[u8]) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.header.ssrc = 0xdead;
        p.header.payload_type = 96;
        p.header.extension = true;
        p.payload = bytes::Bytes::copy_from_slice(payload);
        p
    }

    /// Feeds (seq, payload, lost-before) and returns the output sequence numbers (None: held).
    fn run(f: &mut Forwarder, input: &[(u16, &[u8], bool)]) -> Vec<Option<u16>> {
        input
            .iter()
            .map(|&(seq, payload, lost)| {
                if lost {
                    f.lost();
                }
                let mut p = pkt(seq, payload);
                f.rewrite(&mut p).then(|| {
                    assert_eq!(p.header.ssrc, 7);
                    assert_eq!(p.header.payload_type, 102);
                    assert!(!p.header.extension && p.header.extensions.is_empty());
                    p.header.sequence_number
                })
            })
            .collect()
    }

    #[test]
    fn forwarding_table() {
        struct Case {
            name: &'static str,
            video: bool,
            input: Vec<(u16, &'static [u8], bool)>,
            want: Vec<Option<u16>>,
        }
        let cases = [
            Case {
                name: "video starts on the first keyframe, numbers contiguous from there",
                video: true,
                input: vec![
                    (10, P, false),
                    (11, P, false),
                    (12, IDR, false),
                    (13, P, false),
                ],
                want: vec![None, None, Some(11), Some(12)],
            },
            Case {
                name: "audio goes at once, numbers untouched",
                video: false,
                input: vec![(500, P, false), (501, P, false)],
                want: vec![Some(500), Some(501)],
            },
            Case {
                name: "after a loss video waits for a keyframe and closes the hole it held",
                video: true,
                input: vec![
                    (1, IDR, false),
                    (2, P, false),
                    (5, P, true),
                    (6, P, false),
                    (7, IDR, false),
                    (8, P, false),
                ],
                // 3 and 4 lost upstream, 5 and 6 held: the keyframe follows 2 as 3, so the
                // subscriber asks for nothing it cannot use.
                want: vec![Some(1), Some(2), None, None, Some(3), Some(4)],
            },
            Case {
                name: "sequence numbers wrap",
                video: true,
                input: vec![
                    (65533, P, false),
                    (65534, P, false),
                    (65535, IDR, false),
                    (0, P, false),
                    (1, P, false),
                ],
                want: vec![None, None, Some(65534), Some(65535), Some(0)],
            },
        ];
        for c in cases {
            let mut f = Forwarder::new(c.video, 7, 102);
            assert_eq!(run(&mut f, &c.input), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_forwarder_reports_when_it_waits() {
        let mut f = Forwarder::new(true, 7, 102);
        assert!(f.waiting_for_keyframe());
        assert!(f.rewrite(&mut pkt(1, IDR)));
        assert!(!f.waiting_for_keyframe());
        f.lost();
        assert!(f.waiting_for_keyframe());
        let mut audio = Forwarder::new(false, 7, 102);
        audio.lost();
        assert!(!audio.waiting_for_keyframe(), "audio never waits");
    }
}
