//! Fragmented MP4 (ISO/IEC 14496-12 ISO BMFF, CMAF-like) writer for recordings, as pure
//! state over byte buffers (no I/O, no clock).
//!
//! The file is an init segment (`ftyp` + `moov`, every duration 0, `mvex` with a `trex` per
//! track) followed by fragments (`moof` + `mdat`), each appended as soon as it is complete, so
//! a file cut anywhere (a killed process) stays playable up to its last complete fragment.
//!
//! Two tracks: H.264 video (track [`VIDEO_TRACK_ID`], timescale [`VIDEO_TIMESCALE`], sample
//! entry `avc1` + `avcC`, samples as 4-byte length-prefixed NAL units with SPS/PPS/SEI kept
//! in-band) and AAC audio (track [`AUDIO_TRACK_ID`], timescale = the AudioSpecificConfig's
//! sampling rate, [`AAC_FRAME_SAMPLES`] per access unit, sample entry `mp4a` + `esds`). The
//! movie timescale is [`MOVIE_TIMESCALE`]. Video has no B-frames (DTS == PTS), so no
//! composition offsets are written.
//!
//! ```
//! use mixer::mux::mp4::{Mp4Config, Mp4Writer};
//! let mut w = Mp4Writer::new(Mp4Config::new(640, 360, vec![0x11, 0x90])).unwrap();
//! // Nothing before the first keyframe.
//! assert!(w.push_audio(0, &[0x21, 0x10]).is_empty());
//! // An IDR access unit with its SPS and PPS (Annex-B): the init segment comes out.
//! let idr = [
//!     0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
//!     0, 0, 0, 1, 0x65, 0x88, 0x84,
//! ];
//! let init = w.push_video(0, true, &idr);
//! assert_eq!(&init[4..8], b"ftyp");
//! assert!(w.started());
//! // The open fragment is written by the next keyframe, or at the end.
//! let frag = w.finish();
//! assert_eq!(&frag[4..8], b"moof");
//! ```

use crate::h264;
use crate::mux::flv::avc_decoder_configuration_record;

mod boxes;
pub mod read;

pub use boxes::*;

/// Video ticks per program millisecond.
const VIDEO_TICKS_PER_MS: u64 = VIDEO_TIMESCALE as u64 / 1000;
/// Duration given to the final video sample when there is no previous sample (1/30 s).
const FALLBACK_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;
/// How far (ms) an audio frame's `pts_ms` may stray from the sample-counted audio timeline
/// before the timeline follows it (a gap) or the frame is dropped (an overlap).
const AUDIO_RESYNC_MS: u64 = 100;

/// Settings of an [`Mp4Writer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Config {
    /// Picture width in pixels (the `avc1` and `tkhd` size; decoders follow the SPS).
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// The AAC AudioSpecificConfig (typically `[0x11, 0x90]`: AAC-LC, 48 kHz, stereo).
    pub audio_specific_config: Vec<u8>,
    /// A fragment closes at the next video sample once it spans at least this long (and at
    /// every keyframe). What a killed process can lose is about this much.
    pub fragment_ms: u64,
}

impl Mp4Config {
    /// A configuration with [`DEFAULT_FRAGMENT_MS`] fragments.
    pub fn new(width: u32, height: u32, audio_specific_config: Vec<u8>) -> Self {
        Self {
            width,
            height,
            audio_specific_config,
            fragment_ms: DEFAULT_FRAGMENT_MS,
        }
    }
}

/// A video sample of the open fragment whose duration is not known yet.
#[derive(Debug, Clone)]
struct PendingVideo {
    /// Decode time, video ticks from the file's start.
    dts: u64,
    sync: bool,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first keyframe.
    Waiting,
    /// The init segment is out; fragments follow.
    Writing,
    /// [`Mp4Writer::finish`] was called.
    Finished,
}

/// The fragmented MP4 writer: program pictures and AAC access units in, bytes to append to
/// the file out. A pure state machine (no I/O, no clock).
///
/// - Nothing is written before the first keyframe that carries an SPS and a PPS: pictures
///   before it and audio timestamped before it are dropped. That keyframe returns the init
///   segment (its `avcC` built from the keyframe's SPS/PPS) and nothing else; the file's
///   timeline starts at 0 there (its `pts_ms` is subtracted from every timestamp).
/// - A video sample lasts until the next one, so the open fragment closes when a video
///   sample arrives that is a keyframe, or once the fragment already spans at least
///   [`Mp4Config::fragment_ms`]; that call returns the completed `moof` + `mdat`.
/// - Audio samples join the fragment open when they arrive. The audio timeline is counted in
///   samples ([`AAC_FRAME_SAMPLES`] per access unit) from the first audio frame's `pts_ms`;
///   only a frame more than 100 ms off that count moves it (a gap lengthens the previous
///   sample, an overlap drops the frame).
/// - A video `pts_ms` that does not advance is nudged to one tick after the previous sample.
///
/// Parameter sets are kept in-band, but the `avcC` is the first keyframe's: when a later
/// keyframe brings different ones, [`Mp4Writer::parameter_sets_changed`] turns true and the
/// caller should [`finish`](Mp4Writer::finish) this file and start a new one.
#[derive(Debug)]
pub struct Mp4Writer {
    cfg: Mp4Config,
    width: u16,
    height: u16,
    aac: AacInfo,
    phase: Phase,
    /// `pts_ms` of the first keyframe (the file's time 0).
    base_pts_ms: u64,
    /// The AVCDecoderConfigurationRecord of the init segment.
    avcc: Vec<u8>,
    params_changed: bool,
    /// Sequence number of the last fragment written.
    sequence: u32,
    video: Vec<PendingVideo>,
    audio: Vec<Sample>,
    /// Decode time of the open fragment's first audio sample (audio ticks).
    audio_base: u64,
    /// Decode time of the next audio sample, once audio started.
    audio_next: Option<u64>,
    /// Duration of the last video sample written, video ticks.
    last_video_duration: Option<u32>,
    /// End of the media written, video and audio ticks.
    written_video_end: u64,
    written_audio_end: u64,
}

impl Mp4Writer {
    /// A writer; fails on an unusable AudioSpecificConfig or picture size.
    pub fn new(cfg: Mp4Config) -> Result<Self, Mp4Error> {
        let aac = parse_audio_specific_config(&cfg.audio_specific_config)?;
        let size = |v: u32| u16::try_from(v).ok().filter(|v| *v > 0);
        let (Some(width), Some(height)) = (size(cfg.width), size(cfg.height)) else {
            return Err(Mp4Error::BadSize(cfg.width, cfg.height));
        };
        Ok(Self {
            cfg,
            width,
            height,
            aac,
            phase: Phase::Waiting,
            base_pts_ms: 0,
            avcc: Vec::new(),
            params_changed: false,
            sequence: 0,
            video: Vec::new(),
            audio: Vec::new(),
            audio_base: 0,
            audio_next: None,
            last_video_duration: None,
            written_video_end: 0,
            written_audio_end: 0,
        })
    }

    /// One program picture (an Annex-B access unit) at `pts_ms`; returns the bytes to append
    /// to the file (possibly none): the init segment on the first keyframe, later a completed
    /// fragment whenever this picture closes one. Ignored after [`finish`](Self::finish).
    pub fn push_video(&mut self, pts_ms: u64, keyframe: bool, annexb: &[u8]) -> Vec<u8> {
        let record = if keyframe {
            h264::first_sps_pps(annexb).and_then(|(s, p)| avc_decoder_configuration_record(s, p))
        } else {
            None
        };
        let mut out = Vec::new();
        match self.phase {
            Phase::Finished => return out,
            Phase::Waiting => {
                let Some(record) = record else {
                    return out;
                };
                out = init_segment(
                    self.width,
                    self.height,
                    &record,
                    &self.cfg.audio_specific_config,
                    &self.aac,
                );
                self.avcc = record;
                self.base_pts_ms = pts_ms;
                self.phase = Phase::Writing;
            }
            Phase::Writing => {
                if record.as_ref().is_some_and(|r| *r != self.avcc) {
                    self.params_changed = true;
                }
            }
        }
        let mut dts = pts_ms.saturating_sub(self.base_pts_ms) * VIDEO_TICKS_PER_MS;
        if let Some(last) = self.video.last() {
            dts = dts.max(last.dts + 1);
        } else {
            dts = dts.max(self.written_video_end);
        }
        if let Some(first) = self.video.first() {
            let span = dts - first.dts;
            if keyframe || span >= self.cfg.fragment_ms.saturating_mul(VIDEO_TICKS_PER_MS) {
                out = self.close_fragment(dts);
            }
        }
        self.video.push(PendingVideo {
            dts,
            sync: keyframe,
            data: annexb_to_sample(annexb),
        });
        out
    }

    /// One raw AAC access unit at `pts_ms`. It joins the open fragment, so this returns no
    /// bytes (the `Vec` keeps the API uniform). Dropped before the first keyframe, when
    /// timestamped before it, and after [`finish`](Self::finish).
    pub fn push_audio(&mut self, pts_ms: u64, aac: &[u8]) -> Vec<u8> {
        if self.phase != Phase::Writing || pts_ms < self.base_pts_ms {
            return Vec::new();
        }
        let rate = u64::from(self.aac.sample_rate);
        let expected = (pts_ms - self.base_pts_ms) * rate / 1000;
        let resync = AUDIO_RESYNC_MS * rate / 1000;
        let mut t = self.audio_next.unwrap_or(expected);
        if expected + resync < t {
            // Overlaps what is already written: drop it.
            return Vec::new();
        }
        if expected > t + resync {
            // A gap: the previous sample lasts until this one.
            if let Some(last) = self.audio.last_mut() {
                let gap = u32::try_from(expected - t).unwrap_or(u32::MAX);
                last.duration = last.duration.saturating_add(gap);
            }
            t = expected;
        }
        if self.audio.is_empty() {
            self.audio_base = t;
        }
        self.audio.push(Sample {
            duration: AAC_FRAME_SAMPLES,
            flags: SAMPLE_FLAGS_SYNC,
            data: aac.to_vec(),
        });
        self.audio_next = Some(t + u64::from(AAC_FRAME_SAMPLES));
        Vec::new()
    }

    /// Ends the file: returns the open fragment (its last video sample lasts as long as the
    /// one before it, 1/30 s when there is none), or nothing before the first keyframe. Later
    /// pushes are ignored.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.phase != Phase::Writing {
            self.phase = Phase::Finished;
            return Vec::new();
        }
        self.phase = Phase::Finished;
        let n = self.video.len();
        let duration = match (
            self.video.get(n.wrapping_sub(2)),
            self.video.get(n.wrapping_sub(1)),
        ) {
            (Some(a), Some(b)) => b.dts - a.dts,
            _ => u64::from(self.last_video_duration.unwrap_or(FALLBACK_VIDEO_DURATION)),
        };
        let end = self.video.last().map_or(self.written_video_end, |v| v.dts) + duration;
        self.close_fragment(end)
    }

    /// Closes the open fragment; `next_dts` is the decode time of the video sample after it.
    fn close_fragment(&mut self, next_dts: u64) -> Vec<u8> {
        if self.video.is_empty() && self.audio.is_empty() {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.video);
        let video_base = pending.first().map_or(self.written_video_end, |v| v.dts);
        let next: Vec<u64> = pending
            .iter()
            .skip(1)
            .map(|v| v.dts)
            .chain([next_dts])
            .collect();
        let video: Vec<Sample> = pending
            .into_iter()
            .zip(next)
            .map(|(v, next)| Sample {
                duration: u32::try_from(next.saturating_sub(v.dts)).unwrap_or(u32::MAX),
                flags: if v.sync {
                    SAMPLE_FLAGS_SYNC
                } else {
                    SAMPLE_FLAGS_NON_SYNC
                },
                data: v.data,
            })
            .collect();
        let audio = std::mem::take(&mut self.audio);
        self.sequence = self.sequence.wrapping_add(1);
        let out = fragment(
            self.sequence,
            &[
                TrackRun {
                    track_id: VIDEO_TRACK_ID,
                    base_media_decode_time: video_base,
                    samples: &video,
                },
                TrackRun {
                    track_id: AUDIO_TRACK_ID,
                    base_media_decode_time: self.audio_base,
                    samples: &audio,
                },
            ],
        );
        if let Some(last) = video.last() {
            self.last_video_duration = Some(last.duration);
            self.written_video_end = next_dts;
        }
        if !audio.is_empty() {
            self.written_audio_end =
                self.audio_base + audio.iter().map(|s| u64::from(s.duration)).sum::<u64>();
        }
        out
    }

    /// Media time written so far (the end of the later track in the fragments returned), ms.
    pub fn duration_ms(&self) -> u64 {
        let video = self.written_video_end / VIDEO_TICKS_PER_MS;
        let audio = self.written_audio_end * 1000 / u64::from(self.aac.sample_rate);
        video.max(audio)
    }

    /// Whether the init segment is out (the first keyframe arrived).
    pub fn started(&self) -> bool {
        !self.avcc.is_empty()
    }

    /// Whether a keyframe since the init segment carried an SPS/PPS different from the one in
    /// its `avcC` (the caller should start a new file).
    pub fn parameter_sets_changed(&self) -> bool {
        self.params_changed
    }

    /// Number of fragments returned so far.
    pub fn fragments(&self) -> u32 {
        self.sequence
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::h264::{build_user_data_sei, push_nal, LAYOUT_SEI_UUID};

    /// One parsed box: type, where it starts in the buffer it was parsed from, its body.
    #[derive(Debug, Clone, Copy)]
    struct Bx<'a> {
        typ: [u8; 4],
        start: usize,
        body: &'a [u8],
    }

    /// Parses consecutive boxes; panics on a malformed one (a test failure). `base` is the
    /// offset of `data` in the outer buffer.
    fn boxes(data: &[u8], base: usize) -> Vec<Bx<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            assert!(pos + 8 <= data.len(), "truncated box header at {pos}");
            let mut size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let typ: [u8; 4] = data[pos + 4..pos + 8].try_into().unwrap();
            let mut header = 8;
            if size == 1 {
                size = u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap()) as usize;
                header = 16;
            }
            assert!(
                size >= header && pos + size <= data.len(),
                "bad size {size} of {typ:?}"
            );
            out.push(Bx {
                typ,
                start: base + pos,
                body: &data[pos + header..pos + size],
            });
            pos += size;
        }
        out
    }

    fn types(bs: &[Bx<'_>]) -> Vec<String> {
        bs.iter()
            .map(|b| String::from_utf8_lossy(&b.typ).into_owned())
            .collect()
    }

    fn child<'a>(bs: &[Bx<'a>], typ: &[u8; 4]) -> Bx<'a> {
        *bs.iter()
            .find(|b| &b.typ == typ)
            .unwrap_or_else(|| panic!("no {:?} in {:?}", typ, types(bs)))
    }

    fn children<'a>(b: &Bx<'a>) -> Vec<Bx<'a>> {
        boxes(b.body, b.start + 8)
    }

    /// Follows a path of container boxes.
    fn path<'a>(bs: &[Bx<'a>], p: &[&[u8; 4]]) -> Bx<'a> {
        let mut cur = child(bs, p[0]);
        for t in &p[1..] {
            cur = child(&children(&cur), t);
        }
        cur
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes(b[i..i + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], i: usize) -> u64 {
        u64::from_be_bytes(b[i..i + 8].try_into().unwrap())
    }

    const SPS: [u8; 5] = [0x67, 0x42, 0xc0, 0x1e, 0xda];
    const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

    fn idr(n: u8) -> Vec<u8> {
        let mut au = Vec::new();
        push_nal(&mut au, &[0x09, 0xf0]); // AUD: dropped
        push_nal(&mut au, &SPS);
        push_nal(&mut au, &PPS);
        push_nal(&mut au, &layout_sei(n));
        push_nal(&mut au, &[0x65, 0x88, 0x84, 0x80 | n]);
        au
    }

    fn slice(n: u8) -> Vec<u8> {
        let mut au = Vec::new();
        let n = 0x80 | n;
        push_nal(&mut au, &[0x41, 0x9a, n, n, n]);
        au
    }

    fn layout_sei(n: u8) -> Vec<u8> {
        build_user_data_sei(
            &LAYOUT_SEI_UUID,
            format!("{{\"v\":1,\"n\":{n}}}").as_bytes(),
        )
    }

    fn writer(fragment_ms: u64) -> Mp4Writer {
        Mp4Writer::new(Mp4Config {
            fragment_ms,
            ..Mp4Config::new(640, 360, vec![0x11, 0x90])
        })
        .unwrap()
    }

    /// A parsed sample: (duration, flags, bytes).
    type ParsedSample = (u32, u32, Vec<u8>);

    /// A parsed fragment: sequence number and per track (id, tfdt, samples).
    #[derive(Debug)]
    struct Frag {
        seq: u32,
        tracks: Vec<(u32, u64, Vec<ParsedSample>)>,
    }

    /// Parses one `moof` + `mdat` pair starting at `bs[i]`, checking the data offsets land
    /// in the `mdat` and the runs fill it exactly.
    fn parse_fragment(buf: &[u8], bs: &[Bx<'_>], i: usize) -> Frag {
        let moof = bs[i];
        let mdat = bs[i + 1];
        assert_eq!(&moof.typ, b"moof");
        assert_eq!(&mdat.typ, b"mdat");
        let mdat_start = mdat.start + 8;
        let mdat_end = mdat_start + mdat.body.len();
        let kids = children(&moof);
        assert_eq!(&kids[0].typ, b"mfhd");
        let seq = u32_at(kids[0].body, 4);
        let mut tracks = Vec::new();
        let mut expect_offset = mdat_start;
        for traf in kids.iter().filter(|b| &b.typ == b"traf") {
            let tk = children(traf);
            assert_eq!(types(&tk), vec!["tfhd", "tfdt", "trun"]);
            let tfhd = tk[0].body;
            assert_eq!(u32_at(tfhd, 0), TFHD_DEFAULT_BASE_IS_MOOF);
            let id = u32_at(tfhd, 4);
            let tfdt = tk[1].body;
            assert_eq!(tfdt[0], 1, "tfdt version 1");
            let base = u64_at(tfdt, 4);
            let trun = tk[2].body;
            assert_eq!(u32_at(trun, 0), TRUN_FLAGS);
            let count = u32_at(trun, 4) as usize;
            let offset = u32_at(trun, 8) as usize;
            assert_eq!(trun.len(), 12 + 12 * count);
            let mut at = moof.start + offset;
            assert_eq!(at, expect_offset, "track {id} data offset");
            let mut samples = Vec::new();
            for k in 0..count {
                let d = u32_at(trun, 12 + 12 * k);
                let size = u32_at(trun, 16 + 12 * k) as usize;
                let flags = u32_at(trun, 20 + 12 * k);
                assert!(at + size <= mdat_end, "sample past mdat");
                samples.push((d, flags, buf[at..at + size].to_vec()));
                at += size;
            }
            expect_offset = at;
            tracks.push((id, base, samples));
        }
        assert_eq!(expect_offset, mdat_end, "mdat filled exactly");
        Frag { seq, tracks }
    }

    fn all_fragments(buf: &[u8]) -> Vec<Frag> {
        let bs = boxes(buf, 0);
        assert_eq!(types(&bs[..2]), vec!["ftyp", "moov"]);
        assert_eq!((bs.len() - 2) % 2, 0, "{:?}", types(&bs));
        (2..bs.len())
            .step_by(2)
            .map(|i| parse_fragment(buf, &bs, i))
            .collect()
    }

    #[test]
    fn init_segment_boxes() {
        let mut w = writer(1000);
        let init = w.push_video(5000, true, &idr(0));
        let bs = boxes(&init, 0);
        assert_eq!(types(&bs), vec!["ftyp", "moov"]);
        let ftyp = bs[0].body;
        assert_eq!(&ftyp[0..4], b"isom");
        assert_eq!(&ftyp[8..], b"isomiso6avc1mp41");

        let moov = children(&bs[1]);
        assert_eq!(types(&moov), vec!["mvhd", "trak", "trak", "mvex"]);
        let mvhd = moov[0].body;
        assert_eq!(u32_at(mvhd, 12), 1000, "movie timescale");
        assert_eq!(u32_at(mvhd, 16), 0, "movie duration");
        assert_eq!(u32_at(mvhd, 96), 3, "next track id");

        let traks: Vec<Bx<'_>> = moov.iter().filter(|b| &b.typ == b"trak").copied().collect();
        // Video.
        let v = children(&traks[0]);
        let tkhd = child(&v, b"tkhd").body;
        assert_eq!(u32_at(tkhd, 12), VIDEO_TRACK_ID);
        assert_eq!(u32_at(tkhd, 20), 0, "tkhd duration");
        assert_eq!(u32_at(tkhd, 76), 640 << 16);
        assert_eq!(u32_at(tkhd, 80), 360 << 16);
        let mdhd = path(&v, &[b"mdia", b"mdhd"]).body;
        assert_eq!(u32_at(mdhd, 12), 90_000);
        assert_eq!(u32_at(mdhd, 16), 0);
        assert_eq!(&path(&v, &[b"mdia", b"hdlr"]).body[8..12], b"vide");
        let stbl = path(&v, &[b"mdia", b"minf", b"stbl"]);
        assert_eq!(
            types(&children(&stbl)),
            vec!["stsd", "stts", "stsc", "stsz", "stco"]
        );
        let stsd = child(&children(&stbl), b"stsd");
        assert_eq!(u32_at(stsd.body, 4), 1, "one entry");
        let entries = boxes(&stsd.body[8..], stsd.start + 16);
        assert_eq!(types(&entries), vec!["avc1"]);
        let avc1 = entries[0];
        assert_eq!(u16_at(avc1.body, 6), 1, "data_reference_index");
        assert_eq!(u16_at(avc1.body, 24), 640);
        assert_eq!(u16_at(avc1.body, 26), 360);
        let avc_kids = boxes(&avc1.body[78..], avc1.start + 8 + 78);
        assert_eq!(types(&avc_kids), vec!["avcC"]);
        let mut expected = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 5];
        expected.extend_from_slice(&SPS);
        expected.extend_from_slice(&[1, 0, 4]);
        expected.extend_from_slice(&PPS);
        assert_eq!(avc_kids[0].body, &expected[..]);
        assert_eq!(avc_kids[0].body[4] & 3, 3, "lengthSizeMinusOne");

        // Audio.
        let a = children(&traks[1]);
        assert_eq!(u32_at(child(&a, b"tkhd").body, 12), AUDIO_TRACK_ID);
        let mdhd = path(&a, &[b"mdia", b"mdhd"]).body;
        assert_eq!(u32_at(mdhd, 12), 48_000);
        assert_eq!(&path(&a, &[b"mdia", b"hdlr"]).body[8..12], b"soun");
        path(&a, &[b"mdia", b"minf", b"smhd"]);
        let stsd = path(&a, &[b"mdia", b"minf", b"stbl", b"stsd"]);
        let entries = boxes(&stsd.body[8..], stsd.start + 16);
        assert_eq!(types(&entries), vec!["mp4a"]);
        let mp4a = entries[0];
        assert_eq!(u16_at(mp4a.body, 16), 2, "channels");
        assert_eq!(u16_at(mp4a.body, 18), 16, "sample size");
        assert_eq!(u32_at(mp4a.body, 24), 48_000 << 16);
        let esds = boxes(&mp4a.body[28..], mp4a.start + 8 + 28);
        assert_eq!(types(&esds), vec!["esds"]);
        let e = esds[0].body;
        assert_eq!(u32_at(e, 0), 0, "version/flags");
        // ES_Descriptor(3) { ES_ID 2, flags 0, DecoderConfig(4) { 0x40, 0x15, ...,
        // DecoderSpecificInfo(5) { ASC } }, SLConfig(6) { 2 } }
        let expected: Vec<u8> = [
            &[0x03, 25, 0, 2, 0][..],
            &[0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x05, 2, 0x11, 0x90],
            &[0x06, 1, 2],
        ]
        .concat();
        assert_eq!(&e[4..], &expected[..]);

        let mvex = children(&moov[3]);
        assert_eq!(types(&mvex), vec!["trex", "trex"]);
        assert_eq!(u32_at(mvex[0].body, 4), VIDEO_TRACK_ID);
        assert_eq!(u32_at(mvex[1].body, 4), AUDIO_TRACK_ID);
        assert_eq!(u32_at(mvex[1].body, 8), 1, "sample description index");
    }

    #[test]
    fn nothing_before_the_first_keyframe() {
        let mut w = writer(1000);
        assert!(!w.started());
        assert!(w.push_audio(0, &[1, 2, 3]).is_empty());
        assert!(w.push_video(0, false, &slice(0)).is_empty());
        // A keyframe without parameter sets cannot make an avcC: still waiting.
        let mut bare = Vec::new();
        push_nal(&mut bare, &[0x65, 0x88]);
        assert!(w.push_video(33, true, &bare).is_empty());
        assert!(!w.started());
        assert_eq!(w.duration_ms(), 0);
        let init = w.push_video(66, true, &idr(1));
        assert!(w.started());
        assert_eq!(types(&boxes(&init, 0)), vec!["ftyp", "moov"]);
        // Audio from before the keyframe's time is dropped, later audio is kept.
        assert!(w.push_audio(50, &[9; 5]).is_empty());
        w.push_audio(70, &[7; 6]);
        let mut file = init;
        file.extend(w.finish());
        let frags = all_fragments(&file);
        assert_eq!(frags.len(), 1);
        let video = &frags[0].tracks[0];
        assert_eq!(
            (video.0, video.1),
            (VIDEO_TRACK_ID, 0),
            "timeline starts at 0"
        );
        assert_eq!(video.2.len(), 1);
        let audio = &frags[0].tracks[1];
        assert_eq!(audio.0, AUDIO_TRACK_ID);
        // Anchored at its pts - the keyframe's: 4 ms = 192 ticks.
        assert_eq!(audio.1, 192);
        assert_eq!(audio.2, vec![(1024, SAMPLE_FLAGS_SYNC, vec![7; 6])]);
        assert_eq!(w.fragments(), 1);
        // Finished: pushes are ignored, a second finish writes nothing.
        assert!(w.push_video(100, true, &idr(2)).is_empty());
        assert!(w.finish().is_empty());
    }

    /// 30 fps video with a keyframe every `gop` frames and 48 kHz AAC with ms-rounded
    /// timestamps, `secs` seconds; returns the whole file and the per-call outputs' lengths.
    fn run(gop: u64, fragment_ms: u64, frames: u64) -> (Vec<u8>, Mp4Writer, Vec<usize>) {
        let mut w = writer(fragment_ms);
        let mut file = Vec::new();
        let mut emitted = Vec::new();
        let mut audio_n = 0u64;
        for i in 0..frames {
            let pts = 1000 + i * 1000 / 30;
            let au = if i % gop == 0 {
                idr(i as u8)
            } else {
                slice(i as u8)
            };
            let out = w.push_video(pts, i % gop == 0, &au);
            emitted.push(out.len());
            file.extend(out);
            // Audio up to this picture's time.
            while 1000 + (audio_n * 1024 * 1000 + 24_000) / 48_000 <= pts {
                let apts = 1000 + (audio_n * 1024 * 1000 + 24_000) / 48_000;
                let out = w.push_audio(apts, &[(audio_n % 251) as u8; 7]);
                assert!(out.is_empty());
                audio_n += 1;
            }
        }
        file.extend(w.finish());
        (file, w, emitted)
    }

    #[test]
    fn fragments_at_keyframes_with_continuous_timelines() {
        // 90 frames, keyframes every 30: fragments [0,30) [30,60) [60,90).
        let (file, w, emitted) = run(30, 1000, 90);
        // Only the first keyframe (init) and the two later keyframes emitted anything.
        let nonempty: Vec<usize> = (0..emitted.len()).filter(|&i| emitted[i] > 0).collect();
        assert_eq!(nonempty, vec![0, 30, 60]);
        let frags = all_fragments(&file);
        assert_eq!(frags.len(), 3);
        let mut video_next = 0u64;
        let mut audio_next = None;
        let mut frame = 0usize;
        for (k, f) in frags.iter().enumerate() {
            assert_eq!(f.seq, k as u32 + 1, "sequence numbers from 1");
            assert_eq!(f.tracks.len(), 2);
            let (id, base, samples) = &f.tracks[0];
            assert_eq!(*id, VIDEO_TRACK_ID);
            assert_eq!(*base, video_next, "video tfdt continuity");
            assert_eq!(samples.len(), 30);
            for (j, (d, flags, data)) in samples.iter().enumerate() {
                // Durations follow the ms timestamps: 33 or 34 ms.
                let pts = |i: usize| (i as u64 * 1000 / 30) * 90;
                let expect = if frame + 1 < 90 {
                    pts(frame + 1) - pts(frame)
                } else {
                    pts(frame) - pts(frame - 1)
                };
                assert_eq!(u64::from(*d), expect, "duration of frame {frame}");
                let sync = j == 0;
                assert_eq!(
                    *flags,
                    if sync {
                        SAMPLE_FLAGS_SYNC
                    } else {
                        SAMPLE_FLAGS_NON_SYNC
                    }
                );
                // The sample is the access unit with length prefixes, AUD dropped.
                let mut expected = Vec::new();
                let n = 0x80 | frame as u8;
                let nals: Vec<Vec<u8>> = if sync {
                    vec![
                        SPS.to_vec(),
                        PPS.to_vec(),
                        layout_sei(frame as u8),
                        vec![0x65, 0x88, 0x84, n],
                    ]
                } else {
                    vec![vec![0x41, 0x9a, n, n, n]]
                };
                for nal in &nals {
                    expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    expected.extend_from_slice(nal);
                }
                assert_eq!(data, &expected, "frame {frame}");
                video_next += u64::from(*d);
                frame += 1;
            }
            let (id, base, samples) = &f.tracks[1];
            assert_eq!(*id, AUDIO_TRACK_ID);
            if let Some(next) = audio_next {
                assert_eq!(*base, next, "audio tfdt continuity");
            } else {
                assert_eq!(*base, 0, "first audio at the keyframe's time");
            }
            assert!(samples
                .iter()
                .all(|s| s.0 == 1024 && s.1 == SAMPLE_FLAGS_SYNC));
            assert!(samples.iter().all(|s| s.2.len() == 7));
            // About a second of audio per fragment.
            assert!((45..=48).contains(&samples.len()), "{}", samples.len());
            audio_next = Some(base + 1024 * samples.len() as u64);
        }
        assert_eq!(frame, 90);
        // Video ends at 89 frames' time + one frame duration (the last copies the previous).
        assert_eq!(
            video_next,
            (89 * 1000 / 30 + (89 * 1000 / 30 - 88 * 1000 / 30)) * 90
        );
        assert_eq!(video_next, 2999 * 90);
        let audio_end_ms = audio_next.unwrap() * 1000 / 48_000;
        assert!((2900..=3030).contains(&audio_end_ms), "{audio_end_ms}");
        assert_eq!(w.duration_ms(), 2999.max(audio_end_ms));
        // The layout SEI rides in the keyframe samples, byte for byte.
        let sei = layout_sei(30);
        assert!(file.windows(sei.len()).any(|win| win == &sei[..]));
    }

    #[test]
    fn fragments_close_at_fragment_ms_without_keyframes() {
        // One keyframe only; 500 ms fragments close at the first picture >= 500 ms after
        // the fragment's first.
        let (file, _w, _) = run(1000, 500, 61);
        let frags = all_fragments(&file);
        let counts: Vec<usize> = frags.iter().map(|f| f.tracks[0].2.len()).collect();
        // Frame 15 is at 500 ms, frame 30 at 1000 ms, frame 45 at 1500 ms, frame 60 at 2000.
        assert_eq!(counts, vec![15, 15, 15, 15, 1]);
        for f in &frags[1..] {
            assert_eq!(f.tracks[0].2[0].1, SAMPLE_FLAGS_NON_SYNC);
        }
        let bases: Vec<u64> = frags.iter().map(|f| f.tracks[0].1).collect();
        assert_eq!(bases, vec![0, 500 * 90, 1000 * 90, 1500 * 90, 2000 * 90]);
    }

    #[test]
    fn duration_grows_fragment_by_fragment() {
        let mut w = writer(5000);
        assert!(!w.push_video(0, true, &idr(0)).is_empty());
        for i in 1..30u64 {
            assert!(w.push_video(i * 40, false, &slice(0)).is_empty());
        }
        assert_eq!(w.duration_ms(), 0, "nothing written yet");
        let frag = w.push_video(1200, true, &idr(1));
        assert!(!frag.is_empty());
        assert_eq!(w.duration_ms(), 1200);
        // The same parameter sets: no change.
        assert!(!w.parameter_sets_changed());
        let last = w.finish();
        let f = parse_fragment(&last, &boxes(&last, 0), 0);
        assert_eq!(f.seq, 2);
        assert_eq!(f.tracks.len(), 1, "no audio: no audio traf");
        // The lone sample copies the previous fragment's last duration (1200 - 1160 ms).
        assert_eq!(f.tracks[0].2[0].0, 40 * 90);
        assert_eq!(w.duration_ms(), 1240);
    }

    #[test]
    fn parameter_set_change_is_reported() {
        let mut w = writer(1000);
        w.push_video(0, true, &idr(0));
        let mut other = Vec::new();
        push_nal(&mut other, &[0x67, 0x42, 0xc0, 0x28, 0xda]);
        push_nal(&mut other, &PPS);
        push_nal(&mut other, &[0x65, 0x88]);
        assert!(!w.push_video(40, true, &other).is_empty());
        assert!(w.parameter_sets_changed());
    }

    #[test]
    fn timestamps_that_do_not_advance_are_nudged() {
        let mut w = writer(1000);
        let mut file = w.push_video(100, true, &idr(0));
        file.extend(w.push_video(100, false, &slice(1)));
        file.extend(w.push_video(90, false, &slice(2)));
        file.extend(w.push_video(200, false, &slice(3)));
        file.extend(w.finish());
        let frags = all_fragments(&file);
        let d: Vec<u32> = frags[0].tracks[0].2.iter().map(|s| s.0).collect();
        assert_eq!(d, vec![1, 1, 100 * 90 - 2, 100 * 90 - 2]);
    }

    #[test]
    fn audio_timeline_counts_samples_and_follows_gaps() {
        let mut w = writer(1000);
        let mut file = w.push_video(0, true, &idr(0));
        // Jittery ms timestamps do not move the sample-counted timeline.
        for (k, pts) in [10u64, 33, 52, 75].iter().enumerate() {
            w.push_audio(*pts, &[k as u8]);
        }
        // A 500 ms gap: the previous sample is lengthened to reach it.
        w.push_audio(600, &[4]);
        w.push_audio(621, &[5]);
        // An overlap (over 100 ms before the timeline) is dropped.
        w.push_audio(400, &[0xee]);
        w.push_audio(643, &[6]);
        file.extend(w.push_video(700, true, &idr(1)));
        let frags = all_fragments(&file);
        let (_, base, samples) = &frags[0].tracks[1];
        assert_eq!(*base, 480);
        let d: Vec<u32> = samples.iter().map(|s| s.0).collect();
        let gap = (600 * 48 - (480 + 4 * 1024)) as u32;
        assert_eq!(d, vec![1024, 1024, 1024, 1024 + gap, 1024, 1024, 1024]);
        let bytes: Vec<u8> = samples.iter().map(|s| s.2[0]).collect();
        assert_eq!(bytes, vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn audio_specific_config_parsing() {
        assert_eq!(
            parse_audio_specific_config(&[0x11, 0x90]),
            Ok(AacInfo {
                object_type: 2,
                sample_rate: 48_000,
                channels: 2
            })
        );
        // 44.1 kHz mono.
        assert_eq!(
            parse_audio_specific_config(&[0x12, 0x08]).map(|a| (a.sample_rate, a.channels)),
            Ok((44_100, 1))
        );
        // Explicit rate 32000 (index 15), channel configuration 7 = 8 channels.
        let rate = 32_000u32;
        let v: u64 = (2 << 35) | (15 << 31) | (u64::from(rate) << 7) | (7 << 3);
        let asc = &v.to_be_bytes()[3..];
        assert_eq!(
            parse_audio_specific_config(asc).map(|a| (a.sample_rate, a.channels)),
            Ok((32_000, 8))
        );
        for bad in [
            &[][..],
            &[0x11],
            &[0x29, 0x90],       // object type 5 (SBR)
            &[0xf9, 0x90],       // escape object type
            &[0x16, 0x90],       // reserved index 13
            &[0x11, 0x80],       // channel configuration 0
            &[0x17, 0x80, 0, 0], // explicit rate truncated
        ] {
            assert!(
                matches!(
                    parse_audio_specific_config(bad),
                    Err(Mp4Error::BadAudioConfig(_))
                ),
                "{bad:?}"
            );
            assert!(Mp4Writer::new(Mp4Config::new(640, 360, bad.to_vec())).is_err());
        }
        assert_eq!(
            Mp4Writer::new(Mp4Config::new(0, 360, vec![0x11, 0x90])).err(),
            Some(Mp4Error::BadSize(0, 360))
        );
        assert!(Mp4Writer::new(Mp4Config::new(70_000, 360, vec![0x11, 0x90])).is_err());
    }

    #[test]
    fn descriptor_lengths() {
        let mut v = Vec::new();
        descriptor_len(&mut v, 5);
        assert_eq!(v, vec![5]);
        v.clear();
        descriptor_len(&mut v, 200);
        assert_eq!(v, vec![0x81, 0x48]);
        v.clear();
        descriptor_len(&mut v, 0x4000);
        assert_eq!(v, vec![0x81, 0x80, 0x00]);
    }

    #[test]
    fn garbage_access_units_never_panic() {
        let mut w = writer(0);
        let mut x: u32 = 99;
        let mut file = Vec::new();
        for i in 0..300u64 {
            let au: Vec<u8> = (0..(i % 50))
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let b = (x >> 24) as u8;
                    if b < 80 {
                        0
                    } else if b < 100 {
                        1
                    } else {
                        b
                    }
                })
                .collect();
            file.extend(w.push_video(i * 33, i % 7 == 0, &au));
            if i == 10 {
                file.extend(w.push_video(i * 33, true, &idr(0)));
            }
            file.extend(w.push_audio(i * 21, &au));
        }
        file.extend(w.finish());
        // Every fragment parses and its offsets hold.
        let frags = all_fragments(&file);
        assert!(frags.len() > 100);
    }
}
