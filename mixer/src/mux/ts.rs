//! MPEG-TS (ISO/IEC 13818-1) muxer for HLS, as pure state over byte buffers (no I/O).
//!
//! One program with an H.264 video elementary stream (stream type `0x1B`, PID
//! [`VIDEO_PID`]) and an AAC audio elementary stream (stream type `0x0F`, ADTS framing,
//! PID [`AUDIO_PID`]). PCR rides on the video PID when there is video.
//!
//! Timestamps are 90 kHz ticks (`pts_ms * 90`); they are wrapped to 33 bits when written.
//!
//! ```
//! use mixer::mux::ts::{AacConfig, TsMuxer};
//! let mut mux = TsMuxer::new();
//! let mut out = Vec::new();
//! mux.write_psi(&mut out);
//! // An IDR access unit in Annex-B form (here just a fake IDR slice NAL).
//! mux.write_video(&mut out, 0, 0, true, &[0, 0, 0, 1, 0x65, 0x88, 0x84]);
//! mux.write_audio(&mut out, 0, &AacConfig::LC_48K_STEREO, &[0x21, 0x10, 0x04]).unwrap();
//! assert_eq!(out.len() % 188, 0);
//! ```

use thiserror::Error;

use crate::h264;

/// Size of one transport stream packet.
pub const TS_PACKET_SIZE: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// PID of the timed ID3 metadata stream (when enabled, [`TsMuxer::set_id3`]).
pub const ID3_PID: u16 = 0x102;
/// Stream type of metadata carried in PES packets (ISO/IEC 13818-1), used for timed ID3.
pub const STREAM_TYPE_METADATA: u8 = 0x15;
/// MPEG-TS stream type of H.264 video.
pub const STREAM_TYPE_H264: u8 = 0x1B;
/// MPEG-TS stream type of AAC audio with ADTS framing.
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;

const PAT_PID: u16 = 0x0000;
const SYNC_BYTE: u8 = 0x47;
const PTS_MASK: u64 = (1 << 33) - 1;
/// An H.264 access unit delimiter NAL (primary_pic_type 7: any slice type).
const AUD_NAL: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

/// Errors of the AAC helpers.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TsError {
    /// The AudioSpecificConfig is shorter than 2 bytes or uses an escape value.
    #[error("unsupported AudioSpecificConfig")]
    BadAudioConfig,
    /// An ADTS frame cannot carry this much data (13-bit frame length).
    #[error("AAC frame of {0} bytes is too large for ADTS")]
    FrameTooLarge(usize),
}

/// The AAC parameters needed to build ADTS headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling frequency index (3 = 48000 Hz).
    pub sample_rate_index: u8,
    /// Channel configuration (2 = stereo).
    pub channels: u8,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AacConfig {
    /// AAC-LC, 48 kHz, stereo: the program's audio format.
    pub const LC_48K_STEREO: AacConfig = AacConfig {
        object_type: 2,
        sample_rate_index: 3,
        channels: 2,
    };

    /// Parses the 2-byte AudioSpecificConfig (the body of an FLV AAC sequence header
    /// after its two-byte prefix).
    pub fn from_audio_specific_config(asc: &[u8]) -> Result<Self, TsError> {
        if asc.len() < 2 {
            return Err(TsError::BadAudioConfig);
        }
        let object_type = asc[0] >> 3;
        let sample_rate_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
        let channels = (asc[1] >> 3) & 0x0F;
        if object_type == 0 || object_type >= 31 || sample_rate_index as usize >= SAMPLE_RATES.len()
        {
            return Err(TsError::BadAudioConfig);
        }
        Ok(AacConfig {
            object_type,
            sample_rate_index,
            channels,
        })
    }

    /// The 2-byte AudioSpecificConfig of this configuration.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        [
            (self.object_type << 3) | (self.sample_rate_index >> 1),
            ((self.sample_rate_index & 1) << 7) | (self.channels << 3),
        ]
    }

    /// Sampling rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        SAMPLE_RATES
            .get(self.sample_rate_index as usize)
            .copied()
            .unwrap_or(48000)
    }

    /// The 7-byte ADTS header (no CRC) for a raw AAC frame of `raw_len` bytes.
    pub fn adts_header(&self, raw_len: usize) -> Result<[u8; 7], TsError> {
        let len = raw_len + 7;
        if len > 0x1FFF {
            return Err(TsError::FrameTooLarge(raw_len));
        }
        let profile = self.object_type.saturating_sub(1) & 0x03;
        Ok([
            0xFF,
            0xF1, // MPEG-4, layer 0, no CRC
            (profile << 6) | ((self.sample_rate_index & 0x0F) << 2) | ((self.channels >> 2) & 1),
            ((self.channels & 3) << 6) | ((len >> 11) as u8 & 0x03),
            ((len >> 3) & 0xFF) as u8,
            (((len & 7) as u8) << 5) | 0x1F,
            0xFC, // buffer fullness 0x7FF (VBR), one raw data block
        ])
    }

    /// A raw AAC frame wrapped in an ADTS header.
    pub fn to_adts(&self, raw: &[u8]) -> Result<Vec<u8>, TsError> {
        let mut v = Vec::with_capacity(raw.len() + 7);
        v.extend_from_slice(&self.adts_header(raw.len())?);
        v.extend_from_slice(raw);
        Ok(v)
    }
}

/// Converts length-prefixed (AVCC, as in FLV) NAL units to Annex-B with 4-byte start
/// codes. `length_size` is 1, 2 or 4; a truncated unit ends the conversion.
pub fn avcc_to_annexb(data: &[u8], length_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut i = 0;
    while i + length_size <= data.len() {
        let mut len = 0usize;
        for b in &data[i..i + length_size] {
            len = (len << 8) | *b as usize;
        }
        i += length_size;
        if len == 0 || i + len > data.len() {
            break;
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&data[i..i + len]);
        i += len;
    }
    out
}

/// CRC-32/MPEG-2 of PSI sections.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Encodes a 33-bit timestamp in the 5-byte PES form with the 4-bit `prefix`
/// (`0b0010` PTS only, `0b0011` PTS followed by DTS, `0b0001` DTS).
pub fn encode_pes_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = ts & PTS_MASK;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7F) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7F) << 1) | 1,
    ]
}

/// Decodes a 5-byte PES timestamp (inverse of [`encode_pes_timestamp`]).
pub fn decode_pes_timestamp(b: &[u8; 5]) -> u64 {
    (((b[0] >> 1) & 0x07) as u64) << 30
        | (b[1] as u64) << 22
        | ((b[2] >> 1) as u64) << 15
        | (b[3] as u64) << 7
        | (b[4] >> 1) as u64
}

/// Encodes a PCR (base in 90 kHz, extension 0) as the 6 bytes of an adaptation field.
pub fn encode_pcr(base_90k: u64) -> [u8; 6] {
    let base = base_90k & PTS_MASK;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7E,
        0,
    ]
}

/// The MPEG-TS muxer state: continuity counters and stream set.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    has_video: bool,
    has_audio: bool,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    cc_id3: u8,
    has_id3: bool,
    pcr_delay: u64,
}

impl Default for TsMuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsMuxer {
    /// A muxer for one H.264 and one AAC stream.
    pub fn new() -> Self {
        Self::with_streams(true, true)
    }

    /// A muxer with only the given streams (at least one should be true).
    pub fn with_streams(has_video: bool, has_audio: bool) -> Self {
        TsMuxer {
            has_video,
            has_audio,
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
            cc_id3: 0,
            has_id3: false,
            pcr_delay: 0,
        }
    }

    /// Makes the PCR run `ticks` behind the DTS of the PES that carries it (decoder
    /// buffering time, as ffmpeg's 0.7 s mux delay); default 0. Callers should offset
    /// their timestamps by at least this much so the PCR never saturates at 0.
    pub fn set_pcr_delay(&mut self, ticks: u64) {
        self.pcr_delay = ticks;
    }

    /// Declares a timed ID3 metadata stream in the PMT (stream type 0x15 with the metadata
    /// descriptor for `ID3 `, as Apple's timed metadata and ffmpeg write it), for
    /// [`TsMuxer::write_id3`].
    pub fn set_id3(&mut self, on: bool) {
        self.has_id3 = on;
    }

    fn pcr_pid(&self) -> u16 {
        if self.has_video || !self.has_audio {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// Appends a PAT packet and a PMT packet (put them at the start of every segment).
    pub fn write_psi(&mut self, out: &mut Vec<u8>) {
        // PAT
        let mut pat = vec![0x00, 0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00];
        pat.extend_from_slice(&[0x00, 0x01, 0xE0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
        finish_section(&mut pat);
        let cc = next_cc(&mut self.cc_pat);
        write_section_packet(out, PAT_PID, cc, &pat);

        // PMT
        let pcr = self.pcr_pid();
        let mut pmt = vec![0x02, 0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00];
        pmt.extend_from_slice(&[0xE0 | (pcr >> 8) as u8, pcr as u8, 0xF0, 0x00]);
        let mut streams = Vec::new();
        if self.has_video {
            streams.push((STREAM_TYPE_H264, VIDEO_PID));
        }
        if self.has_audio {
            streams.push((STREAM_TYPE_AAC_ADTS, AUDIO_PID));
        }
        for (st, pid) in streams {
            pmt.extend_from_slice(&[st, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0x00]);
        }
        if self.has_id3 {
            // metadata_descriptor (tag 0x26): application format 0xFFFF + 'ID3 ', metadata
            // format 0xFF + 'ID3 ', service id 0, decoder-config flags.
            let desc: [u8; 15] = [
                0x26, 13, 0xFF, 0xFF, b'I', b'D', b'3', b' ', 0xFF, b'I', b'D', b'3', b' ', 0x00,
                0x0F,
            ];
            pmt.extend_from_slice(&[
                STREAM_TYPE_METADATA,
                0xE0 | (ID3_PID >> 8) as u8,
                ID3_PID as u8,
                0xF0,
                desc.len() as u8,
            ]);
            pmt.extend_from_slice(&desc);
        }
        finish_section(&mut pmt);
        let cc = next_cc(&mut self.cc_pmt);
        write_section_packet(out, PMT_PID, cc, &pmt);
    }

    /// Appends one H.264 access unit (Annex-B) as a PES on the video PID, with a PCR
    /// (= DTS) and, for keyframes, the random-access indicator. An access unit
    /// delimiter is prepended when the AU does not start with one.
    pub fn write_video(
        &mut self,
        out: &mut Vec<u8>,
        pts_90k: u64,
        dts_90k: u64,
        keyframe: bool,
        annexb: &[u8],
    ) {
        let has_aud = h264::split_annexb(annexb)
            .next()
            .is_some_and(|n| n[0] & 0x1F == 9);
        let mut payload = Vec::with_capacity(annexb.len() + 6);
        if !has_aud {
            payload.extend_from_slice(&AUD_NAL);
        }
        payload.extend_from_slice(annexb);
        let pes = pes_packet(0xE0, pts_90k, Some(dts_90k), &payload);
        let pcr = if self.pcr_pid() == VIDEO_PID {
            Some(dts_90k.saturating_sub(self.pcr_delay))
        } else {
            None
        };
        let mut cc = self.cc_video;
        write_pes_packets(out, VIDEO_PID, &mut cc, &pes, pcr, keyframe);
        self.cc_video = cc;
    }

    /// Appends one raw AAC frame, wrapped in ADTS with `config`, as a PES on the audio PID.
    pub fn write_audio(
        &mut self,
        out: &mut Vec<u8>,
        pts_90k: u64,
        config: &AacConfig,
        raw_aac: &[u8],
    ) -> Result<(), TsError> {
        let adts = config.to_adts(raw_aac)?;
        self.write_audio_adts(out, pts_90k, &adts);
        Ok(())
    }

    /// Appends an ID3v2 tag (see [`id3_priv_tag`]) as a timed metadata PES (private stream
    /// 1) at `pts_90k` on [`ID3_PID`]. Does nothing unless [`TsMuxer::set_id3`] is on.
    pub fn write_id3(&mut self, out: &mut Vec<u8>, pts_90k: u64, tag: &[u8]) {
        if !self.has_id3 {
            return;
        }
        let pes = pes_packet(0xBD, pts_90k, None, tag);
        let mut cc = self.cc_id3;
        write_pes_packets(out, ID3_PID, &mut cc, &pes, None, false);
        self.cc_id3 = cc;
    }

    /// Appends already ADTS-framed AAC (one or more frames) as a PES on the audio PID.
    pub fn write_audio_adts(&mut self, out: &mut Vec<u8>, pts_90k: u64, adts: &[u8]) {
        let pes = pes_packet(0xC0, pts_90k, None, adts);
        let pcr = if self.pcr_pid() == AUDIO_PID {
            Some(pts_90k.saturating_sub(self.pcr_delay))
        } else {
            None
        };
        let mut cc = self.cc_audio;
        write_pes_packets(out, AUDIO_PID, &mut cc, &pes, pcr, !self.has_video);
        self.cc_audio = cc;
    }
}

/// An ID3v2.4 tag holding one `PRIV` frame: `owner` (e.g. `cohost/cue`), a NUL, `data`.
/// Sizes are synchsafe, as ID3v2.4 and hls.js read them.
pub fn id3_priv_tag(owner: &str, data: &[u8]) -> Vec<u8> {
    fn synchsafe(n: usize) -> [u8; 4] {
        let n = n as u32;
        [
            ((n >> 21) & 0x7F) as u8,
            ((n >> 14) & 0x7F) as u8,
            ((n >> 7) & 0x7F) as u8,
            (n & 0x7F) as u8,
        ]
    }
    let frame_len = owner.len() + 1 + data.len();
    let mut tag = Vec::with_capacity(20 + frame_len);
    tag.extend_from_slice(b"ID3\x04\x00\x00");
    tag.extend_from_slice(&synchsafe(10 + frame_len));
    tag.extend_from_slice(b"PRIV");
    tag.extend_from_slice(&synchsafe(frame_len));
    tag.extend_from_slice(&[0, 0]);
    tag.extend_from_slice(owner.as_bytes());
    tag.push(0);
    tag.extend_from_slice(data);
    tag
}

fn next_cc(cc: &mut u8) -> u8 {
    let v = *cc;
    *cc = (*cc + 1) & 0x0F;
    v
}

/// Fills in section_length and appends the CRC.
fn finish_section(sec: &mut Vec<u8>) {
    let len = sec.len() - 3 + 4;
    sec[1] = 0xB0 | ((len >> 8) as u8 & 0x0F);
    sec[2] = len as u8;
    let crc = crc32_mpeg2(sec);
    sec.extend_from_slice(&crc.to_be_bytes());
}

fn write_section_packet(out: &mut Vec<u8>, pid: u16, cc: u8, section: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[
        SYNC_BYTE,
        0x40 | (pid >> 8) as u8,
        pid as u8,
        0x10 | cc,
        0x00,
    ]);
    out.extend_from_slice(section);
    out.resize(start + TS_PACKET_SIZE, 0xFF);
}

fn pes_packet(stream_id: u8, pts: u64, dts: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let dts = dts.filter(|&d| d & PTS_MASK != pts & PTS_MASK);
    let header_len: usize = if dts.is_some() { 10 } else { 5 };
    let mut pes = Vec::with_capacity(payload.len() + 9 + header_len);
    pes.extend_from_slice(&[0, 0, 1, stream_id]);
    let len = 3 + header_len + payload.len();
    let len_field = if len > 0xFFFF { 0 } else { len as u16 };
    pes.extend_from_slice(&len_field.to_be_bytes());
    pes.push(0x84); // '10', data_alignment_indicator
    match dts {
        Some(d) => {
            pes.push(0xC0);
            pes.push(10);
            pes.extend_from_slice(&encode_pes_timestamp(0b0011, pts));
            pes.extend_from_slice(&encode_pes_timestamp(0b0001, d));
        }
        None => {
            pes.push(0x80);
            pes.push(5);
            pes.extend_from_slice(&encode_pes_timestamp(0b0010, pts));
        }
    }
    pes.extend_from_slice(payload);
    pes
}

/// Splits a PES into TS packets: the first carries PUSI (and PCR / random-access
/// indicator when asked), the last is padded with adaptation-field stuffing.
fn write_pes_packets(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    pes: &[u8],
    pcr: Option<u64>,
    random_access: bool,
) {
    let mut pos = 0;
    let mut first = true;
    while pos < pes.len() {
        // Adaptation field body (after its length byte): flags + optional PCR.
        let mut af: Vec<u8> = Vec::new();
        if first && (pcr.is_some() || random_access) {
            let mut flags = 0u8;
            if random_access {
                flags |= 0x40;
            }
            if pcr.is_some() {
                flags |= 0x10;
            }
            af.push(flags);
            if let Some(p) = pcr {
                af.extend_from_slice(&encode_pcr(p));
            }
        }
        let remaining = pes.len() - pos;
        let af_total = if af.is_empty() && remaining >= 184 {
            0
        } else {
            1 + af.len()
        };
        let room = 184 - af_total;
        let take = remaining.min(room);
        let stuffing = room - take;
        let has_af = af_total > 0 || stuffing > 0;
        if stuffing > 0 {
            // af_total > 0 here (af_total == 0 only when remaining >= 184).
            if af.is_empty() {
                af.push(0x00); // flags byte
                af.resize(stuffing, 0xFF);
            } else {
                af.resize(af.len() + stuffing, 0xFF);
            }
        }
        let af_len_byte = af.len();
        let c = next_cc(cc);
        let afc = if has_af { 0x30 } else { 0x10 };
        let pusi = if first { 0x40 } else { 0 };
        let start = out.len();
        out.extend_from_slice(&[
            SYNC_BYTE,
            pusi | (pid >> 8) as u8 & 0x1F,
            pid as u8,
            afc | c,
        ]);
        if has_af {
            out.push(af_len_byte as u8);
            out.extend_from_slice(&af);
        }
        out.extend_from_slice(&pes[pos..pos + take]);
        debug_assert_eq!(out.len() - start, TS_PACKET_SIZE);
        pos += take;
        first = false;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn packets(buf: &[u8]) -> Vec<&[u8]> {
        assert_eq!(buf.len() % TS_PACKET_SIZE, 0, "not 188-aligned");
        buf.chunks(TS_PACKET_SIZE).collect()
    }
    fn pid(p: &[u8]) -> u16 {
        ((p[1] as u16 & 0x1F) << 8) | p[2] as u16
    }
    fn cc(p: &[u8]) -> u8 {
        p[3] & 0x0F
    }
    fn payload(p: &[u8]) -> &[u8] {
        if p[3] & 0x20 != 0 {
            &p[5 + p[4] as usize..]
        } else {
            &p[4..]
        }
    }

    #[test]
    fn pes_timestamp_roundtrip_and_bytes() {
        // Known vector: PTS 0 with prefix 0010 → 21 00 01 00 01.
        assert_eq!(encode_pes_timestamp(0b0010, 0), [0x21, 0, 1, 0, 1]);
        // 90000 (1 s) = 0x15F90.
        assert_eq!(
            encode_pes_timestamp(0b0010, 90000),
            [0x21, 0x00, 0x05, 0xBF, 0x21]
        );
        for ts in [0u64, 1, 90000, 0x1_2345_6789, PTS_MASK] {
            assert_eq!(decode_pes_timestamp(&encode_pes_timestamp(2, ts)), ts);
        }
        // Wraps at 33 bits.
        assert_eq!(decode_pes_timestamp(&encode_pes_timestamp(2, 1 << 33)), 0);
    }

    #[test]
    fn crc_known_value() {
        // CRC-32/MPEG-2 check value of "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn psi_packets() {
        let mut m = TsMuxer::new();
        let mut out = Vec::new();
        m.write_psi(&mut out);
        m.write_psi(&mut out);
        let p = packets(&out);
        assert_eq!(p.len(), 4);
        assert_eq!(pid(p[0]), 0);
        assert_eq!(pid(p[1]), PMT_PID);
        assert_eq!((cc(p[0]), cc(p[2])), (0, 1));
        assert_eq!((cc(p[1]), cc(p[3])), (0, 1));
        // PAT: pointer 0, table 0, program 1 → PMT PID, CRC over section is 0 residue.
        let pat = &p[0][5..];
        assert_eq!(pat[0], 0x00);
        let sec_len = (((pat[1] & 0x0F) as usize) << 8) | pat[2] as usize;
        assert_eq!(sec_len, 13);
        assert_eq!(&pat[8..12], &[0x00, 0x01, 0xF0, 0x00]);
        assert_eq!(crc32_mpeg2(&pat[..3 + sec_len]), 0);
        // PMT: PCR PID = video, two streams with the right types.
        let pmt = &p[1][5..];
        assert_eq!(pmt[0], 0x02);
        let sec_len = (((pmt[1] & 0x0F) as usize) << 8) | pmt[2] as usize;
        assert_eq!(sec_len, 13 + 10);
        assert_eq!(((pmt[8] as u16 & 0x1F) << 8) | pmt[9] as u16, VIDEO_PID);
        assert_eq!(pmt[12], STREAM_TYPE_H264);
        assert_eq!(pmt[17], STREAM_TYPE_AAC_ADTS);
        assert_eq!(crc32_mpeg2(&pmt[..3 + sec_len]), 0);
        assert!(p[0][5 + 3 + 13..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn video_pes_split_with_pcr_rai_and_stuffing() {
        let mut m = TsMuxer::new();
        let mut out = Vec::new();
        let mut au = vec![0, 0, 0, 1, 0x65];
        au.resize(1005, 0xAB);
        m.write_video(&mut out, 93_000, 90_000, true, &au);
        let p = packets(&out);
        for (i, pk) in p.iter().enumerate() {
            assert_eq!(pk[0], 0x47);
            assert_eq!(pid(pk), VIDEO_PID);
            assert_eq!(cc(pk) as usize, i % 16);
            assert_eq!(pk[1] & 0x40 != 0, i == 0, "PUSI only on first");
        }
        // First packet: adaptation field with RAI + PCR = 90000.
        let f = p[0];
        assert_eq!(f[3] & 0x30, 0x30);
        assert_eq!(f[4], 7);
        assert_eq!(f[5], 0x50);
        assert_eq!(&f[6..12], &encode_pcr(90_000));
        // PES header follows: start code, stream id, PTS+DTS.
        let pes = payload(f);
        assert_eq!(&pes[..4], &[0, 0, 1, 0xE0]);
        assert_eq!(pes[7], 0xC0);
        assert_eq!(pes[8], 10);
        let pts: [u8; 5] = pes[9..14].try_into().unwrap();
        let dts: [u8; 5] = pes[14..19].try_into().unwrap();
        assert_eq!(pts[0] >> 4, 0b0011);
        assert_eq!(dts[0] >> 4, 0b0001);
        assert_eq!(decode_pes_timestamp(&pts), 93_000);
        assert_eq!(decode_pes_timestamp(&dts), 90_000);
        // AUD inserted first.
        assert_eq!(&pes[19..25], &AUD_NAL);
        // Reassembled payload equals PES; PES length field is consistent.
        let all: Vec<u8> = p.iter().flat_map(|pk| payload(pk).to_vec()).collect();
        let pes_len = u16::from_be_bytes([all[4], all[5]]) as usize;
        assert_eq!(all.len(), 6 + pes_len);
        assert_eq!(&all[25..], &au[..]);
        // Last packet is stuffed with 0xFF in its adaptation field.
        let last = p[p.len() - 1];
        assert_eq!(last[3] & 0x30, 0x30);
        assert!(last[4] > 1);
        assert_eq!(last[5], 0x00);
        assert!(last[6..5 + last[4] as usize].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn cc_wraps_and_non_keyframe_has_pcr_only() {
        let mut m = TsMuxer::new();
        let mut out = Vec::new();
        for i in 0..20u64 {
            m.write_video(
                &mut out,
                i * 3000,
                i * 3000,
                false,
                &[0, 0, 1, 0x41, 1, 2, 3],
            );
        }
        let p = packets(&out);
        assert_eq!(p.len(), 20);
        for (i, pk) in p.iter().enumerate() {
            assert_eq!(cc(pk) as usize, i % 16);
            assert_eq!(pk[5], 0x10, "PCR flag only, no RAI");
            // PTS only when DTS == PTS.
            let pes = payload(pk);
            assert_eq!(pes[7], 0x80);
            assert_eq!(
                decode_pes_timestamp(&pes[9..14].try_into().unwrap()),
                i as u64 * 3000
            );
        }
    }

    #[test]
    fn exact_fit_and_one_byte_stuffing() {
        // Audio PES on a non-PCR PID: find payload sizes that need 0, 1 and 2 bytes of stuffing.
        for raw_len in 150..200usize {
            let mut m = TsMuxer::new();
            let mut out = Vec::new();
            m.write_audio(&mut out, 0, &AacConfig::LC_48K_STEREO, &vec![0x11; raw_len])
                .unwrap();
            let p = packets(&out);
            let all: Vec<u8> = p.iter().flat_map(|pk| payload(pk).to_vec()).collect();
            // PES header 14 + ADTS 7 + raw.
            assert_eq!(all.len(), 14 + 7 + raw_len, "raw_len {raw_len}");
            for pk in &p {
                assert_eq!(pid(pk), AUDIO_PID);
            }
        }
    }

    #[test]
    fn pcr_delay() {
        let mut m = TsMuxer::new();
        m.set_pcr_delay(63_000);
        let mut out = Vec::new();
        m.write_video(&mut out, 153_000, 153_000, true, &[0, 0, 1, 0x65, 1]);
        assert_eq!(&out[6..12], &encode_pcr(90_000));
    }

    #[test]
    fn adts_header_bytes() {
        let c = AacConfig::LC_48K_STEREO;
        let h = c.adts_header(100).unwrap();
        // profile LC(1), sf index 3, channels 2, length 107.
        assert_eq!(h, [0xFF, 0xF1, 0x4C, 0x80, 0x0D, 0x7F, 0xFC]);
        assert_eq!(c.audio_specific_config(), [0x11, 0x90]);
        assert_eq!(AacConfig::from_audio_specific_config(&[0x11, 0x90]), Ok(c));
        assert!(AacConfig::from_audio_specific_config(&[0x11]).is_err());
        assert!(c.adts_header(9000).is_err());
        assert_eq!(c.sample_rate(), 48000);
    }

    #[test]
    fn nal_helpers() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = h264::split_annexb(&au).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert!(h264::has_nal_type(&au, 5));
        assert!(!h264::has_nal_type(&au, 1));
        let avcc = [0, 0, 0, 2, 0x65, 9, 0, 0, 0, 1, 0x06];
        assert_eq!(
            avcc_to_annexb(&avcc, 4),
            vec![0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x06]
        );
        // Truncated input stops cleanly.
        assert_eq!(avcc_to_annexb(&[0, 0, 0, 9, 1], 4), Vec::<u8>::new());
    }
}
