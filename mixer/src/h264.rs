//! H.264 in one place, safe on untrusted bytes: the Annex-B splitter and NAL unit types,
//! parameter sets and keyframes, emulation prevention (adding and removing `0x03` bytes),
//! `user_data_unregistered` SEI (building, reading back, inserting), and the RFC 6184 RTP
//! payload checks the server's SFU and mixer input need. Everything here is a pure function
//! over byte slices; none of them panics on any input.

/// H.264 NAL unit types used by the mixer.
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
}

/// SEI payload type of `user_data_unregistered`.
pub const SEI_USER_DATA_UNREGISTERED: u32 = 5;

/// The 4-byte Annex-B start code the mixer writes.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Type of a NAL unit (the low 5 bits of its first byte); `None` for an empty unit.
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// True for VCL NAL unit types (coded slices, 1..=5).
pub fn is_vcl(nal: &[u8]) -> bool {
    matches!(nal_unit_type(nal), Some(1..=5))
}

/// Iterator over the NAL units of an Annex-B byte stream, see [`split_annexb`].
#[derive(Debug, Clone)]
pub struct AnnexBIter<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Finds the next start code (`00 00 01`) at or after `from`; returns (start, len) of the code.
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        // Fast skip: a start code needs data[i + 2] == 1 and data[i + 1] == 0.
        match data.get(i + 2) {
            Some(1) => {
                if data.get(i) == Some(&0) && data.get(i + 1) == Some(&0) {
                    if i > from && data.get(i - 1) == Some(&0) {
                        return Some((i - 1, 4));
                    }
                    return Some((i, 3));
                }
                i += 3;
            }
            Some(0) => i += 1,
            _ => i += 3,
        }
    }
    None
}

impl<'a> Iterator for AnnexBIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.pos >= self.data.len() {
                return None;
            }
            let (start, code_len) = find_start_code(self.data, self.pos)?;
            let begin = start + code_len;
            let end = match find_start_code(self.data, begin) {
                Some((next, _)) => next,
                None => self.data.len(),
            };
            self.pos = end;
            let mut nal = self.data.get(begin..end).unwrap_or_default();
            // Trailing zero bytes belong to the next start code or are trailing_zero_8bits.
            while let Some((&0, rest)) = nal.split_last() {
                nal = rest;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// Splits an Annex-B byte stream into NAL units (without start codes).
///
/// Bytes before the first start code are ignored, empty units are skipped, trailing zero
/// bytes are trimmed. Safe on any input: garbage yields garbage units or none, never a panic.
pub fn split_annexb(data: &[u8]) -> AnnexBIter<'_> {
    AnnexBIter { data, pos: 0 }
}

/// Whether an Annex-B access unit holds a NAL unit of type `t` (e.g. [`nal_type::IDR`]).
pub fn has_nal_type(annexb: &[u8], t: u8) -> bool {
    split_annexb(annexb).any(|n| nal_unit_type(n) == Some(t))
}

/// The first SPS and PPS of an Annex-B access unit, when it has both.
pub fn first_sps_pps(annexb: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut sps = None;
    let mut pps = None;
    for n in split_annexb(annexb) {
        match nal_unit_type(n) {
            Some(nal_type::SPS) if sps.is_none() => sps = Some(n),
            Some(nal_type::PPS) if pps.is_none() => pps = Some(n),
            _ => {}
        }
    }
    sps.zip(pps)
}

/// Is this H.264 RTP payload (RFC 6184) the start of a keyframe: an IDR slice or an SPS in a
/// single NAL unit, a STAP-A, or the first fragment of an FU-A?
pub fn rtp_payload_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let is_key = |t: u8| t == nal_type::IDR || t == nal_type::SPS;
    match first & 0x1f {
        t @ 1..=23 => is_key(t),
        24 => {
            // STAP-A: [hdr][size16][nal]...
            let mut i = 1usize;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                if let Some(nal) = payload.get(i + 2) {
                    if is_key(nal & 0x1f) {
                        return true;
                    }
                }
                i += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        _ => false,
    }
}

/// Is this RTP payload, if a STAP-A (RFC 6184 §5.7.1), made of whole units (every length
/// field complete, the last unit ending at the payload's end)? Other payloads are `true`.
/// `rtc`'s depacketizer indexes past the end of a STAP-A whose last length field is cut
/// (rtc-rtp 0.21.1), so such payloads are refused before it sees them.
pub fn stap_a_well_formed(payload: &[u8]) -> bool {
    if payload.first().map(|b| b & 0x1f) != Some(24) {
        return true;
    }
    let mut i = 1usize;
    while i < payload.len() {
        let (Some(&hi), Some(&lo)) = (payload.get(i), payload.get(i + 1)) else {
            return false;
        };
        i += 2 + usize::from(u16::from_be_bytes([hi, lo]));
    }
    i == payload.len()
}

/// Adds emulation prevention bytes: turns an RBSP into NAL unit payload bytes.
///
/// Whenever two zero bytes are followed by a byte `<= 3`, a `0x03` is inserted. A trailing
/// pair of zeros also gets a `0x03` so the unit cannot run into a following start code.
pub fn add_emulation_prevention(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 4);
    let mut zeros = 0usize;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    if zeros >= 2 {
        out.push(3);
    }
    out
}

/// Removes emulation prevention bytes: turns NAL unit payload bytes into the RBSP.
pub fn remove_emulation_prevention(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0usize;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    out
}

/// Builds a complete SEI NAL unit (header byte included, no start code) carrying one
/// `user_data_unregistered` message: the 16-byte `uuid` followed by `data`.
pub fn build_user_data_sei(uuid: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let payload_size = uuid.len() + data.len();
    let mut rbsp = Vec::with_capacity(payload_size + 8);
    write_sei_value(&mut rbsp, SEI_USER_DATA_UNREGISTERED as usize);
    write_sei_value(&mut rbsp, payload_size);
    rbsp.extend_from_slice(uuid);
    rbsp.extend_from_slice(data);
    // rbsp_trailing_bits: stop bit then alignment zeros.
    rbsp.push(0x80);
    let mut nal = Vec::with_capacity(rbsp.len() + 8);
    nal.push(nal_type::SEI); // forbidden_zero_bit 0, nal_ref_idc 0, type 6
    nal.extend_from_slice(&add_emulation_prevention(&rbsp));
    nal
}

fn write_sei_value(out: &mut Vec<u8>, mut v: usize) {
    while v >= 255 {
        out.push(0xff);
        v -= 255;
    }
    // v < 255 here.
    out.push(u8::try_from(v).unwrap_or(0xfe));
}

/// One SEI message read from an SEI NAL unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeiMessage {
    /// SEI payload type.
    pub payload_type: u32,
    /// Payload bytes (emulation prevention removed).
    pub payload: Vec<u8>,
}

impl SeiMessage {
    /// For a `user_data_unregistered` message: its UUID and user data.
    pub fn user_data_unregistered(&self) -> Option<([u8; 16], &[u8])> {
        if self.payload_type != SEI_USER_DATA_UNREGISTERED {
            return None;
        }
        let uuid: [u8; 16] = self.payload.get(..16)?.try_into().ok()?;
        Some((uuid, self.payload.get(16..)?))
    }
}

/// Parses the messages of an SEI NAL unit (header byte included). Stops quietly at the first
/// malformed or truncated message; returns the messages read so far. Never panics.
pub fn parse_sei(nal: &[u8]) -> Vec<SeiMessage> {
    let mut out = Vec::new();
    if nal_unit_type(nal) != Some(nal_type::SEI) {
        return out;
    }
    let rbsp = remove_emulation_prevention(nal.get(1..).unwrap_or_default());
    let mut pos = 0usize;
    // Each message needs at least 2 bytes; the final 0x80 is the trailing bits.
    while pos + 2 <= rbsp.len() && rbsp.get(pos) != Some(&0x80) {
        let Some(payload_type) = read_sei_value(&rbsp, &mut pos) else {
            break;
        };
        let Some(size) = read_sei_value(&rbsp, &mut pos) else {
            break;
        };
        let Some(end) = pos.checked_add(size as usize) else {
            break;
        };
        let Some(payload) = rbsp.get(pos..end) else {
            break;
        };
        out.push(SeiMessage {
            payload_type,
            payload: payload.to_vec(),
        });
        pos = end;
    }
    out
}

fn read_sei_value(data: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    loop {
        let b = *data.get(*pos)?;
        *pos += 1;
        v = v.checked_add(u32::from(b))?;
        if b != 0xff {
            return Some(v);
        }
    }
}

/// Finds every `user_data_unregistered` SEI with the given UUID in an Annex-B access unit
/// and returns their user data.
pub fn find_user_data(access_unit: &[u8], uuid: &[u8; 16]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for nal in split_annexb(access_unit) {
        if nal_unit_type(nal) == Some(nal_type::SEI) {
            for msg in parse_sei(nal) {
                if let Some((u, data)) = msg.user_data_unregistered() {
                    if &u == uuid {
                        out.push(data.to_vec());
                    }
                }
            }
        }
    }
    out
}

/// Parses a UUID in its canonical text form (`8-4-4-4-12` hex digits).
pub const fn parse_uuid(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    let mut n = 0;
    while i < b.len() && n < 32 {
        let c = b[i];
        let v = match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        if let Some(v) = v {
            out[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
            n += 1;
        }
        i += 1;
    }
    out
}

/// UUID of the layout SEI (CONTRACT): `beb59904-6493-40f3-8a26-140d6aef0e04`.
pub const LAYOUT_SEI_UUID: [u8; 16] = parse_uuid("beb59904-6493-40f3-8a26-140d6aef0e04");
/// UUID of the cue SEI (CONTRACT): `9a44be0e-9ad1-4c7b-99e9-b8618dd4c159`.
pub const CUE_SEI_UUID: [u8; 16] = parse_uuid("9a44be0e-9ad1-4c7b-99e9-b8618dd4c159");

/// Appends one NAL unit with a 4-byte start code to an Annex-B buffer.
pub fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&START_CODE);
    out.extend_from_slice(nal);
}

/// Rebuilds an access unit with the given SEI NAL units inserted before its first slice.
///
/// Returns `None` when the access unit has no slice (the mixer never emits an SEI-only
/// access unit).
pub fn insert_sei_before_slices(access_unit: &[u8], seis: &[Vec<u8>]) -> Option<Vec<u8>> {
    let extra: usize = seis.iter().map(|s| s.len() + 4).sum();
    let mut out = Vec::with_capacity(access_unit.len() + extra + 16);
    let mut inserted = false;
    for nal in split_annexb(access_unit) {
        if !inserted && is_vcl(nal) {
            for sei in seis {
                push_nal(&mut out, sei);
            }
            inserted = true;
        }
        push_nal(&mut out, nal);
    }
    inserted.then_some(out)
}

/// Groups the NAL units of an Annex-B elementary stream (e.g. a `.h264` file) into access
/// units: a new one starts at an AUD, SPS, PPS or SEI following a slice, or at a slice whose
/// `first_mb_in_slice` is 0 following a slice. Each access unit is re-emitted with 4-byte
/// start codes.
pub fn access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_has_slice = false;
    for n in split_annexb(stream) {
        let t = nal_unit_type(n).unwrap_or(0);
        let starts_new = if is_vcl(n) {
            // first_mb_in_slice is ue(v); a value of 0 is the single bit '1'.
            cur_has_slice && n.get(1).is_some_and(|b| b & 0x80 != 0)
        } else {
            cur_has_slice
                && matches!(
                    t,
                    nal_type::AUD | nal_type::SPS | nal_type::PPS | nal_type::SEI
                )
        };
        if starts_new && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur_has_slice = false;
        }
        push_nal(&mut cur, n);
        cur_has_slice |= is_vcl(n);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_prevention_round_trip() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0, 0, 0],
            vec![0, 0, 1],
            vec![0, 0, 2, 0, 0, 3, 0, 0, 0, 0],
            vec![0xff, 0, 0, 4, 0, 0],
            (0..=255u8).collect(),
            vec![0; 100],
        ];
        for rbsp in cases {
            let ebsp = add_emulation_prevention(&rbsp);
            // No start code prefix or 00 00 0x (x<=2) may appear in the escaped form.
            for w in ebsp.windows(3) {
                assert!(!(w[0] == 0 && w[1] == 0 && w[2] <= 2), "{ebsp:?}");
            }
            assert!(!ebsp.ends_with(&[0, 0]));
            assert_eq!(remove_emulation_prevention(&ebsp), rbsp);
        }
        assert_eq!(add_emulation_prevention(&[0, 0, 1]), vec![0, 0, 3, 1]);
        assert_eq!(
            add_emulation_prevention(&[0, 0, 0, 0]),
            vec![0, 0, 3, 0, 0, 3]
        );
        assert_eq!(remove_emulation_prevention(&[0, 0, 3, 3]), vec![0, 0, 3]);
    }

    #[test]
    fn emulation_prevention_pseudo_random_round_trip() {
        let mut x: u32 = 12345;
        for len in 0..300 {
            let rbsp: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    // Bias towards zeros to exercise escapes.
                    let v = (x >> 16) as u8;
                    if v < 128 {
                        0
                    } else {
                        v % 5
                    }
                })
                .collect();
            assert_eq!(
                remove_emulation_prevention(&add_emulation_prevention(&rbsp)),
                rbsp
            );
        }
    }

    #[test]
    fn split_basic() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0, 0,
        ];
        let nals: Vec<&[u8]> = split_annexb(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
    }

    #[test]
    fn split_garbage_never_panics() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 0, 1],
            vec![0, 0, 0, 1],
            vec![0, 0, 1, 0, 0, 1, 0, 0, 1],
            vec![1, 2, 3, 4, 5],
            vec![0; 1000],
            vec![0xff; 1000],
        ];
        for c in &cases {
            for nal in split_annexb(c) {
                assert!(!nal.is_empty());
                let _ = parse_sei(nal);
            }
        }
        assert_eq!(split_annexb(&[1, 2, 3, 4, 5]).count(), 0);
        assert_eq!(split_annexb(&[0, 0, 1, 0, 0, 1, 0, 0, 1]).count(), 0);
        let mut x: u32 = 7;
        for len in 0..2000 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let b = (x >> 24) as u8;
                    if b < 100 {
                        0
                    } else if b < 130 {
                        1
                    } else {
                        b
                    }
                })
                .collect();
            let total: usize = split_annexb(&v).map(|n| n.len()).sum();
            assert!(total <= v.len());
            for nal in split_annexb(&v) {
                let _ = parse_sei(nal);
            }
        }
    }

    #[test]
    fn sei_bytes_exact() {
        let uuid = [0x11u8; 16];
        let nal = build_user_data_sei(&uuid, b"{}");
        let mut expected = vec![0x06, 0x05, 18];
        expected.extend_from_slice(&[0x11; 16]);
        expected.extend_from_slice(b"{}");
        expected.push(0x80);
        assert_eq!(nal, expected);
    }

    #[test]
    fn sei_round_trip_with_escapes_and_long_payload() {
        let uuid = LAYOUT_SEI_UUID;
        let mut data = vec![0u8, 0, 1, 0, 0, 0, 2, 0, 0];
        data.extend(std::iter::repeat_n(b'x', 600));
        let nal = build_user_data_sei(&uuid, &data);
        assert_eq!(nal_unit_type(&nal), Some(6));
        // Payload size 625 = 255 + 255 + 115.
        assert_eq!(&nal[1..5], &[5, 0xff, 0xff, 115]);
        let msgs = parse_sei(&nal);
        assert_eq!(msgs.len(), 1);
        let (u, d) = msgs[0].user_data_unregistered().expect("udu");
        assert_eq!(u, uuid);
        assert_eq!(d, &data[..]);
        let mut au = Vec::new();
        push_nal(&mut au, &nal);
        push_nal(&mut au, &[0x65, 0x88, 0x84]);
        assert_eq!(find_user_data(&au, &uuid), vec![data]);
        assert!(find_user_data(&au, &CUE_SEI_UUID).is_empty());
    }

    #[test]
    fn access_unit_grouping() {
        let mut s = Vec::new();
        push_nal(&mut s, &[0x67, 1]);
        push_nal(&mut s, &[0x68, 2]);
        push_nal(&mut s, &[0x65, 0x88]); // first_mb 0
        push_nal(&mut s, &[0x65, 0x12]); // second slice of the same picture
        push_nal(&mut s, &[0x41, 0x9a]); // new picture
        push_nal(&mut s, &[0x06, 5, 1, 0, 0x80]);
        push_nal(&mut s, &[0x41, 0x9b]);
        let aus = access_units(&s);
        let types: Vec<Vec<u8>> = aus
            .iter()
            .map(|au| split_annexb(au).filter_map(nal_unit_type).collect())
            .collect();
        assert_eq!(types, vec![vec![7, 8, 5, 5], vec![1], vec![6, 1]]);
        assert!(access_units(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn uuids() {
        assert_eq!(LAYOUT_SEI_UUID[0], 0xbe);
        assert_eq!(LAYOUT_SEI_UUID[15], 0x04);
        assert_eq!(CUE_SEI_UUID[..4], [0x9a, 0x44, 0xbe, 0x0e]);
        assert_eq!(CUE_SEI_UUID[15], 0x59);
    }

    #[test]
    fn sei_inserted_before_slices() {
        let mut au = Vec::new();
        push_nal(&mut au, &[0x67, 1]);
        push_nal(&mut au, &[0x68, 2]);
        push_nal(&mut au, &[0x65, 3]);
        let sei = build_user_data_sei(&CUE_SEI_UUID, b"{}");
        let out = insert_sei_before_slices(&au, std::slice::from_ref(&sei)).expect("slice");
        let types: Vec<u8> = split_annexb(&out).filter_map(nal_unit_type).collect();
        assert_eq!(types, vec![7, 8, 6, 5]);
        // No slice: no access unit.
        let mut only_ps = Vec::new();
        push_nal(&mut only_ps, &[0x67, 1]);
        assert!(insert_sei_before_slices(&only_ps, &[sei]).is_none());
    }

    #[test]
    fn keyframes_on_rtp_payloads_and_in_access_units() {
        assert!(rtp_payload_is_keyframe(&[0x65, 1, 2]));
        assert!(!rtp_payload_is_keyframe(&[0x41, 1, 2]));
        assert!(rtp_payload_is_keyframe(&[0x78, 0, 2, 0x67, 1, 0, 1, 0x68]));
        assert!(!rtp_payload_is_keyframe(&[0x78, 0, 2, 0x41, 1]));
        assert!(rtp_payload_is_keyframe(&[0x7c, 0x85, 9]));
        assert!(!rtp_payload_is_keyframe(&[0x7c, 0x05, 9]));
        assert!(!rtp_payload_is_keyframe(&[]));
        assert!(!rtp_payload_is_keyframe(&[0x78, 0xff]));
        assert!(!rtp_payload_is_keyframe(&[0x7c]));
        assert!(stap_a_well_formed(&[0x78, 0, 2, 0x67, 1, 0, 1, 0x68]));
        assert!(!stap_a_well_formed(&[0x78, 0, 2, 0x67, 1, 0]));
        assert!(!stap_a_well_formed(&[0x78, 0, 9, 0x67]));
        assert!(stap_a_well_formed(&[0x65, 1]));

        let mut au = Vec::new();
        push_nal(&mut au, &[0x09, 0xf0]);
        push_nal(&mut au, &[0x67, 0x42]);
        push_nal(&mut au, &[0x68, 0xce]);
        push_nal(&mut au, &[0x65, 1]);
        assert!(has_nal_type(&au, nal_type::IDR));
        assert!(!has_nal_type(&au, nal_type::SLICE));
        assert_eq!(
            first_sps_pps(&au),
            Some((&[0x67u8, 0x42][..], &[0x68u8, 0xce][..]))
        );
        assert_eq!(first_sps_pps(&au[..8]), None);
    }
}
