//! Untrusted RTP from a publisher: bytes parsed as RTP packets (the `rtc` parser the media
//! plane uses), then a second stream of packets built from the input with chosen sequence
//! numbers, timestamps and markers, all through the H.264 access-unit assembler that feeds the
//! mixer. Never a panic, and an access unit never exceeds the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc::rtp;
use rtc::shared::marshal::Unmarshal;

#[allow(dead_code)]
#[path = "../../src/depack.rs"]
mod depack;

use depack::{Assembled, H264Assembler, MAX_AU_BYTES};

fn check(out: Assembled) {
    if let Assembled::AccessUnit { data, .. } = out {
        assert!(data.len() <= MAX_AU_BYTES);
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The input as whole RTP packets, split on a 2-byte length prefix.
    let mut a = H264Assembler::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut raw = &rest[2..2 + n];
        if let Ok(pkt) = rtp::Packet::unmarshal(&mut raw) {
            check(a.push(&pkt));
        }
        rest = &rest[2 + n..];
    }
    // 2. The input as payloads with a header byte each: length, marker, sequence and
    //    timestamp steps (so gaps, reordering and timestamp changes are reached).
    let mut a = H264Assembler::new();
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut rest = data;
    while rest.len() >= 2 {
        let h = rest[0];
        let n = usize::from(rest[1]).min(rest.len() - 2);
        seq = seq.wrapping_add(u16::from(h & 0x03));
        ts = ts.wrapping_add(u32::from((h >> 2) & 0x03) * 3000);
        let mut pkt = rtp::Packet::default();
        pkt.header.sequence_number = seq;
        pkt.header.timestamp = ts;
        pkt.header.marker = h & 0x80 != 0;
        pkt.payload = bytes::Bytes::copy_from_slice(&rest[2..2 + n]);
        check(a.push(&pkt));
        rest = &rest[2 + n..];
    }
});
