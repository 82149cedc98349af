//! The boxes of [`super`]'s files as pure functions: the init segment (`ftyp` + `moov`),
//! fragments (`moof` + `mdat`), sample entries and descriptors, and the AudioSpecificConfig
//! they describe.

use thiserror::Error;

use crate::h264::{self, nal_type};

/// Track ID of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track ID of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;
/// Timescale of the video track (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Timescale of the movie (`mvhd`).
pub const MOVIE_TIMESCALE: u32 = 1000;
/// Samples per AAC access unit (AAC-LC and its 1024-sample relatives).
pub const AAC_FRAME_SAMPLES: u32 = 1024;
/// Default fragment length, ms.
pub const DEFAULT_FRAGMENT_MS: u64 = 1000;
/// `trun` sample flags of a sync sample (IDR): `sample_depends_on` = 2 (depends on no other).
pub const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// `trun` sample flags of a non-sync sample: `sample_depends_on` = 1, `is_non_sync_sample`.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;
/// `tfhd` flag: default-base-is-moof.
pub(super) const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags: data-offset, sample-duration, sample-size and sample-flags present.
pub(super) const TRUN_FLAGS: u32 = 0x0001 | 0x0100 | 0x0200 | 0x0400;
/// The unity transformation matrix of `mvhd` and `tkhd`.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// ISO 639-2 `und` packed into 15 bits.
const LANGUAGE_UND: u16 = 0x55c4;

/// Errors of [`Mp4Writer::new`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Mp4Error {
    /// The AudioSpecificConfig cannot be used (too short, escape object type, a
    /// non-1024-sample object type, reserved sampling index or unsupported channel layout).
    #[error("unsupported AudioSpecificConfig: {0}")]
    BadAudioConfig(&'static str),
    /// The picture size does not fit the sample entry (1..=65535 each way).
    #[error("picture size {0}x{1} out of range")]
    BadSize(u32, u32),
}

/// What an AudioSpecificConfig says, as far as the `mp4a` sample entry needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacInfo {
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling rate in Hz (also the audio track's timescale).
    pub sample_rate: u32,
    /// Number of channels.
    pub channels: u16,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Reads an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1): object type (Main, LC, SSR or
/// LTP, whose access units are 1024 samples), sampling rate (index or explicit 24-bit value)
/// and channel configuration 1..=7.
pub fn parse_audio_specific_config(asc: &[u8]) -> Result<AacInfo, Mp4Error> {
    let mut acc: u64 = 0;
    for i in 0..5 {
        acc = (acc << 8) | u64::from(asc.get(i).copied().unwrap_or(0));
    }
    // 40 bits read MSB first; `bits(pos, n)` takes n bits starting at bit `pos`.
    let bits = |pos: u32, n: u32| ((acc >> (40 - pos - n)) & ((1u64 << n) - 1)) as u32;
    if asc.len() < 2 {
        return Err(Mp4Error::BadAudioConfig("shorter than 2 bytes"));
    }
    let object_type = bits(0, 5) as u8;
    if !(1..=4).contains(&object_type) {
        return Err(Mp4Error::BadAudioConfig(
            "object type is not Main/LC/SSR/LTP",
        ));
    }
    let index = bits(5, 4);
    let (sample_rate, channel_pos) = if index == 15 {
        if asc.len() < 5 {
            return Err(Mp4Error::BadAudioConfig("explicit sampling rate truncated"));
        }
        (bits(9, 24), 33)
    } else {
        let rate = SAMPLE_RATES
            .get(index as usize)
            .copied()
            .ok_or(Mp4Error::BadAudioConfig(
                "reserved sampling frequency index",
            ))?;
        (rate, 9)
    };
    if sample_rate == 0 {
        return Err(Mp4Error::BadAudioConfig("sampling rate 0"));
    }
    let channels = match bits(channel_pos, 4) {
        c @ 1..=6 => c as u16,
        7 => 8,
        _ => {
            return Err(Mp4Error::BadAudioConfig(
                "channel configuration not in 1..=7",
            ))
        }
    };
    Ok(AacInfo {
        object_type,
        sample_rate,
        channels,
    })
}

/// Writes ISO BMFF boxes into a buffer; each box's size is filled in when it is closed.
#[derive(Debug, Default)]
struct BoxWriter {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl BoxWriter {
    fn new() -> Self {
        Self::default()
    }
    /// Opens a box of type `fourcc`.
    fn begin(&mut self, fourcc: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(fourcc);
    }
    /// Opens a full box (version and flags follow the type).
    fn begin_full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32) {
        self.begin(fourcc);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    }
    /// Closes the innermost open box, writing its size.
    fn end(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
            if let Some(field) = self.buf.get_mut(start..start + 4) {
                field.copy_from_slice(&size.to_be_bytes());
            }
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    /// Current length of the buffer (the position of the next byte).
    fn pos(&self) -> usize {
        self.buf.len()
    }
    /// Overwrites a big-endian u32 written earlier at `pos`.
    fn patch_u32(&mut self, pos: usize, v: u32) {
        if let Some(field) = self.buf.get_mut(pos..pos + 4) {
            field.copy_from_slice(&v.to_be_bytes());
        }
    }
    fn finish(mut self) -> Vec<u8> {
        while !self.open.is_empty() {
            self.end();
        }
        self.buf
    }
}

/// The `ftyp` box: major brand `isom` (minor version 512), compatible `isom`, `iso6`,
/// `avc1`, `mp41`.
pub fn ftyp() -> Vec<u8> {
    let mut w = BoxWriter::new();
    w.begin(b"ftyp");
    w.bytes(b"isom");
    w.u32(512);
    for brand in [b"isom", b"iso6", b"avc1", b"mp41"] {
        w.bytes(brand);
    }
    w.end();
    w.finish()
}

fn matrix(w: &mut BoxWriter) {
    for v in MATRIX {
        w.u32(v);
    }
}

fn mvhd(w: &mut BoxWriter) {
    w.begin_full(b"mvhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(MOVIE_TIMESCALE);
    w.u32(0); // duration: fragmented
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(2 + 8); // reserved
    matrix(w);
    w.zeros(24); // pre_defined
    w.u32(AUDIO_TRACK_ID + 1); // next_track_ID
    w.end();
}

/// `tkhd` with flags enabled | in_movie; `width`/`height` 0 for audio.
fn tkhd(w: &mut BoxWriter, track_id: u32, audio: bool, width: u16, height: u16) {
    w.begin_full(b"tkhd", 0, 0x000003);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(track_id);
    w.u32(0); // reserved
    w.u32(0); // duration: fragmented
    w.zeros(8); // reserved
    w.u16(0); // layer
    w.u16(u16::from(audio)); // alternate_group
    w.u16(if audio { 0x0100 } else { 0 }); // volume
    w.u16(0); // reserved
    matrix(w);
    w.u32(u32::from(width) << 16);
    w.u32(u32::from(height) << 16);
    w.end();
}

fn mdhd(w: &mut BoxWriter, timescale: u32) {
    w.begin_full(b"mdhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(timescale);
    w.u32(0); // duration: fragmented
    w.u16(LANGUAGE_UND);
    w.u16(0); // pre_defined
    w.end();
}

fn hdlr(w: &mut BoxWriter, handler: &[u8; 4], name: &str) {
    w.begin_full(b"hdlr", 0, 0);
    w.u32(0); // pre_defined
    w.bytes(handler);
    w.zeros(12); // reserved
    w.bytes(name.as_bytes());
    w.u8(0);
    w.end();
}

fn dinf(w: &mut BoxWriter) {
    w.begin(b"dinf");
    w.begin_full(b"dref", 0, 0);
    w.u32(1); // entry_count
    w.begin_full(b"url ", 0, 1); // self-contained
    w.end();
    w.end();
    w.end();
}

/// The empty sample tables of a fragmented track, after `stsd`.
fn empty_sample_tables(w: &mut BoxWriter) {
    w.begin_full(b"stts", 0, 0);
    w.u32(0);
    w.end();
    w.begin_full(b"stsc", 0, 0);
    w.u32(0);
    w.end();
    w.begin_full(b"stsz", 0, 0);
    w.u32(0); // sample_size
    w.u32(0); // sample_count
    w.end();
    w.begin_full(b"stco", 0, 0);
    w.u32(0);
    w.end();
}

fn avc1(w: &mut BoxWriter, width: u16, height: u16, avcc: &[u8]) {
    w.begin(b"avc1");
    w.zeros(6); // reserved
    w.u16(1); // data_reference_index
    w.zeros(16); // pre_defined, reserved, pre_defined[3]
    w.u16(width);
    w.u16(height);
    w.u32(0x0048_0000); // horizresolution 72 dpi
    w.u32(0x0048_0000); // vertresolution 72 dpi
    w.u32(0); // reserved
    w.u16(1); // frame_count
    w.zeros(32); // compressorname
    w.u16(0x0018); // depth
    w.u16(0xffff); // pre_defined = -1
    w.begin(b"avcC");
    w.bytes(avcc);
    w.end();
    w.end();
}

/// Appends an MPEG-4 descriptor length (ISO/IEC 14496-1 §8.3.3, 7 bits per byte).
pub(super) fn descriptor_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(0x0fff_ffff).min(0x0fff_ffff);
    let mut started = false;
    for shift in [21u32, 14, 7] {
        let part = ((len >> shift) & 0x7f) as u8;
        if started || part != 0 {
            out.push(part | 0x80);
            started = true;
        }
    }
    out.push((len & 0x7f) as u8);
}

fn descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    descriptor_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// The body of an `esds` box (after version/flags): ES_Descriptor with a
/// DecoderConfigDescriptor (objectTypeIndication 0x40 = MPEG-4 audio, streamType audio)
/// carrying the AudioSpecificConfig, and an SLConfigDescriptor (predefined 2).
pub fn es_descriptor(track_id: u32, asc: &[u8]) -> Vec<u8> {
    let mut dcd = vec![0x40, (0x05 << 2) | 0x01]; // objectTypeIndication, streamType audio
    dcd.extend_from_slice(&[0, 0, 0]); // bufferSizeDB
    dcd.extend_from_slice(&0u32.to_be_bytes()); // maxBitrate: unknown
    dcd.extend_from_slice(&0u32.to_be_bytes()); // avgBitrate: unknown (variable)
    dcd.extend_from_slice(&descriptor(0x05, asc));
    let mut es = u16::try_from(track_id).unwrap_or(0).to_be_bytes().to_vec();
    es.push(0); // no dependsOn, URL or OCR; streamPriority 0
    es.extend_from_slice(&descriptor(0x04, &dcd));
    es.extend_from_slice(&descriptor(0x06, &[0x02]));
    descriptor(0x03, &es)
}

fn mp4a(w: &mut BoxWriter, asc: &[u8], aac: &AacInfo) {
    w.begin(b"mp4a");
    w.zeros(6); // reserved
    w.u16(1); // data_reference_index
    w.zeros(8); // reserved (version 0)
    w.u16(aac.channels);
    w.u16(16); // samplesize
    w.u16(0); // pre_defined
    w.u16(0); // reserved
    w.u32(aac.sample_rate.min(0xffff) << 16);
    w.begin_full(b"esds", 0, 0);
    w.bytes(&es_descriptor(AUDIO_TRACK_ID, asc));
    w.end();
    w.end();
}

fn trex(w: &mut BoxWriter, track_id: u32) {
    w.begin_full(b"trex", 0, 0);
    w.u32(track_id);
    w.u32(1); // default_sample_description_index
    w.u32(0); // default_sample_duration
    w.u32(0); // default_sample_size
    w.u32(0); // default_sample_flags
    w.end();
}

/// The init segment: `ftyp` and `moov` (`mvhd`, a video and an audio `trak`, `mvex` with a
/// `trex` per track), every duration 0. `avcc` is the AVCDecoderConfigurationRecord.
pub fn init_segment(width: u16, height: u16, avcc: &[u8], asc: &[u8], aac: &AacInfo) -> Vec<u8> {
    let mut w = BoxWriter::new();
    w.bytes(&ftyp());
    w.begin(b"moov");
    mvhd(&mut w);

    w.begin(b"trak");
    tkhd(&mut w, VIDEO_TRACK_ID, false, width, height);
    w.begin(b"mdia");
    mdhd(&mut w, VIDEO_TIMESCALE);
    hdlr(&mut w, b"vide", "VideoHandler");
    w.begin(b"minf");
    w.begin_full(b"vmhd", 0, 1);
    w.u16(0); // graphicsmode
    w.zeros(6); // opcolor
    w.end();
    dinf(&mut w);
    w.begin(b"stbl");
    w.begin_full(b"stsd", 0, 0);
    w.u32(1);
    avc1(&mut w, width, height, avcc);
    w.end();
    empty_sample_tables(&mut w);
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak

    w.begin(b"trak");
    tkhd(&mut w, AUDIO_TRACK_ID, true, 0, 0);
    w.begin(b"mdia");
    mdhd(&mut w, aac.sample_rate);
    hdlr(&mut w, b"soun", "SoundHandler");
    w.begin(b"minf");
    w.begin_full(b"smhd", 0, 0);
    w.u16(0); // balance
    w.u16(0); // reserved
    w.end();
    dinf(&mut w);
    w.begin(b"stbl");
    w.begin_full(b"stsd", 0, 0);
    w.u32(1);
    mp4a(&mut w, asc, aac);
    w.end();
    empty_sample_tables(&mut w);
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak

    w.begin(b"mvex");
    trex(&mut w, VIDEO_TRACK_ID);
    trex(&mut w, AUDIO_TRACK_ID);
    w.end();
    w.end(); // moov
    w.finish()
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// `trun` sample flags ([`SAMPLE_FLAGS_SYNC`], [`SAMPLE_FLAGS_NON_SYNC`]).
    pub flags: u32,
    /// The sample's bytes as they go into `mdat`.
    pub data: Vec<u8>,
}

/// One track's samples in a fragment.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    /// The track.
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_media_decode_time: u64,
    /// The samples, in decode order.
    pub samples: &'a [Sample],
}

/// One fragment: `moof` (`mfhd` with `sequence_number`, a `traf` per run that has samples:
/// `tfhd` default-base-is-moof, `tfdt` version 1, `trun` with data offset and per-sample
/// duration, size and flags) and one `mdat` holding the runs' samples in order.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Vec<u8> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut w = BoxWriter::new();
    w.begin(b"moof");
    w.begin_full(b"mfhd", 0, 0);
    w.u32(sequence_number);
    w.end();
    let mut offset_fields = Vec::with_capacity(runs.len());
    for run in &runs {
        w.begin(b"traf");
        w.begin_full(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
        w.u32(run.track_id);
        w.end();
        w.begin_full(b"tfdt", 1, 0);
        w.u64(run.base_media_decode_time);
        w.end();
        w.begin_full(b"trun", 0, TRUN_FLAGS);
        w.u32(u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
        offset_fields.push(w.pos());
        w.u32(0); // data_offset, patched below
        for s in run.samples {
            w.u32(s.duration);
            w.u32(u32::try_from(s.data.len()).unwrap_or(u32::MAX));
            w.u32(s.flags);
        }
        w.end(); // trun
        w.end(); // traf
    }
    w.end(); // moof
    let moof_len = w.pos();
    let payload: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    // A large mdat (never for sane fragments) uses the 64-bit size.
    let large = payload + 8 > u32::MAX as usize;
    let header = if large { 16 } else { 8 };
    let mut offset = moof_len + header;
    for (run, field) in runs.iter().zip(offset_fields) {
        w.patch_u32(field, u32::try_from(offset).unwrap_or(u32::MAX));
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mut out = w.finish();
    out.reserve(header + payload);
    if large {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(b"mdat");
        out.extend_from_slice(&((payload + 16) as u64).to_be_bytes());
    } else {
        out.extend_from_slice(&((payload + 8) as u32).to_be_bytes());
        out.extend_from_slice(b"mdat");
    }
    for s in runs.iter().flat_map(|r| r.samples.iter()) {
        out.extend_from_slice(&s.data);
    }
    out
}

/// An Annex-B access unit as an MP4 sample: every NAL unit with a 4-byte big-endian length
/// instead of its start code. Access unit delimiters are dropped; everything else (SPS, PPS,
/// SEI, slices) is kept in order.
pub fn annexb_to_sample(annexb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(annexb.len() + 16);
    for n in h264::split_annexb(annexb) {
        if h264::nal_unit_type(n) == Some(nal_type::AUD) {
            continue;
        }
        out.extend_from_slice(&u32::try_from(n.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(n);
    }
    out
}
