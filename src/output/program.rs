//! [`ProgramOutputs`]: the one place the mixed program goes out of the process. Feed it
//! the mixer's encoded pictures and AAC frames; it keeps the FLV sequence headers, fans
//! tags out to every RTMP output (each its own task, never blocking the feeder), and
//! segments the program for HLS.
//!
//! ```no_run
//! # async fn demo(outputs_from_mixer: Vec<mixer::MixerOutput>) {
//! use cohost::output::{ProgramOutputs, ProgramOutputsConfig};
//! use mixer::mux::flv::Metadata;
//! let meta = Metadata { width: 1280, height: 720, fps: 30.0, video_kbps: 2500, audio_kbps: 128 };
//! let program = ProgramOutputs::new(ProgramOutputsConfig::new(meta, vec![0x11, 0x90]));
//! let hls = program.hls(); // serve hls.playlist() / hls.segment(n)
//! let out = program.add_rtmp("rtmp://127.0.0.1/live/test").expect("valid URL"); // 400 on Err
//! for o in &outputs_from_mixer {
//!     program.push(o);
//! }
//! println!("{:?}", program.outputs());
//! program.remove_rtmp(&out.id).await;
//! # }
//! ```

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mixer::mux::flv;
use mixer::{AacFrame, EncodedVideo, MixerOutput};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::flv_live::{FlvHub, FlvStart, Seat};
use super::hls::{HlsConfig, HlsSegmenter, HlsStore};
use super::recording::{RecordingStats, RecordingsConfig, RoomRecordings, Stopping};
use super::rtmp::{RtmpUrl, RtmpUrlError, TagKind};
use super::rtmp_output::{FlvTag, OutputStatus, RtmpOutput, RtmpOutputConfig, SequenceHeaders};

/// Settings of [`ProgramOutputs`].
#[derive(Debug, Clone)]
pub struct ProgramOutputsConfig {
    /// Stream properties for `onMetaData`.
    pub metadata: flv::Metadata,
    /// The AAC AudioSpecificConfig of the program audio (`[0x11, 0x90]` for AAC-LC 48 kHz stereo).
    pub audio_specific_config: Vec<u8>,
    /// HLS segmenting.
    pub hls: HlsConfig,
    /// Tags buffered per RTMP output before it lags and skips to the next keyframe
    /// (default 1024: about 10 s of 30 fps video + audio).
    pub channel_capacity: usize,
    /// First reconnect delay of RTMP outputs (default 0.5 s, doubling).
    pub backoff_initial: Duration,
    /// Longest reconnect delay (default 10 s).
    pub backoff_max: Duration,
    /// Consecutive refusals by the RTMP server (bad app or stream key) before an output is
    /// `failed` (default 20; `None`: never). Network failures are retried for ever.
    pub max_consecutive_rejections: Option<u32>,
    /// The room (names its recordings' directory).
    pub room: String,
    /// Where recordings go.
    pub recordings: RecordingsConfig,
    /// Recording counters shared by all rooms.
    pub recording_stats: Arc<RecordingStats>,
}

impl ProgramOutputsConfig {
    /// Defaults for the given stream properties and AudioSpecificConfig.
    pub fn new(metadata: flv::Metadata, audio_specific_config: Vec<u8>) -> Self {
        ProgramOutputsConfig {
            metadata,
            audio_specific_config,
            hls: HlsConfig::default(),
            channel_capacity: 1024,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            max_consecutive_rejections: Some(20),
            room: "room".into(),
            recordings: RecordingsConfig::default(),
            recording_stats: Arc::default(),
        }
    }
}

/// What the API shows for one RTMP output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputInfo {
    /// Output id (for `DELETE .../outputs/{id}`).
    pub id: String,
    /// The destination with the stream key masked (`rtmp://host/app/***`).
    pub url: String,
    /// State, bytes sent, reconnect count, last error.
    #[serde(flatten)]
    pub status: OutputStatus,
}

/// Fans the program out to RTMP outputs and HLS. Cheap to clone (shared inside).
#[derive(Debug, Clone)]
pub struct ProgramOutputs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ProgramOutputsConfig,
    tags_tx: broadcast::Sender<FlvTag>,
    headers_tx: watch::Sender<SequenceHeaders>,
    /// HTTP-FLV: the GOP cache (tags are sent under its lock), viewers, end of program.
    flv: FlvHub,
    hls: Mutex<HlsSegmenter>,
    hls_store: HlsStore,
    outputs: Mutex<BTreeMap<u64, Arc<RtmpOutput>>>,
    next_id: AtomicU64,
    recordings: RoomRecordings,
}

impl ProgramOutputs {
    /// A new fan-out with no RTMP output yet.
    pub fn new(config: ProgramOutputsConfig) -> Self {
        let (tags_tx, _) = broadcast::channel(config.channel_capacity.max(16));
        let headers = SequenceHeaders {
            metadata: Some(Bytes::from(flv::on_metadata_body(&config.metadata))),
            video: None,
            audio: Some(Bytes::from(flv::aac_sequence_header_body(
                &config.audio_specific_config,
            ))),
        };
        let (headers_tx, _) = watch::channel(headers);
        let mut hls_config = config.hls.clone();
        if let Ok(aac) =
            mixer::mux::ts::AacConfig::from_audio_specific_config(&config.audio_specific_config)
        {
            hls_config.aac = aac;
        }
        let segmenter = HlsSegmenter::new(hls_config);
        let hls_store = segmenter.store();
        let recordings = RoomRecordings::new(
            &config.room,
            config.recordings.clone(),
            config.recording_stats.clone(),
            (config.metadata.width, config.metadata.height),
            config.audio_specific_config.clone(),
        );
        ProgramOutputs {
            inner: Arc::new(Inner {
                config,
                tags_tx,
                headers_tx,
                flv: FlvHub::default(),
                hls: Mutex::new(segmenter),
                hls_store,
                outputs: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                recordings,
            }),
        }
    }

    /// The AudioSpecificConfig the outputs announce (FLV sequence header, HLS ADTS).
    pub fn audio_specific_config(&self) -> &[u8] {
        &self.inner.config.audio_specific_config
    }

    /// Announces new stream metadata (`onMetaData`) from now on: a room's `mix` changed
    /// before its program started.
    pub fn set_metadata(&self, metadata: &flv::Metadata) {
        self.inner
            .recordings
            .set_size((metadata.width, metadata.height));
        let body = Bytes::from(flv::on_metadata_body(metadata));
        self.inner
            .headers_tx
            .send_modify(|h| h.metadata = Some(body));
    }

    /// The room's recordings.
    pub fn recordings(&self) -> &RoomRecordings {
        &self.inner.recordings
    }

    /// The HLS store to serve `index.m3u8` / `seg{N}.ts` from.
    pub fn hls(&self) -> HlsStore {
        self.inner.hls_store.clone()
    }

    /// Current FLV sequence headers (metadata, AVC and AAC sequence headers).
    pub fn sequence_headers(&self) -> SequenceHeaders {
        self.inner.headers_tx.borrow().clone()
    }

    /// A receiver of every program tag (e.g. for an FLV recorder); lagging receivers
    /// miss tags rather than slow the program.
    pub fn subscribe_tags(&self) -> broadcast::Receiver<FlvTag> {
        self.inner.tags_tx.subscribe()
    }

    /// An HTTP-FLV viewer's start: the sequence headers, the latest GOP from its keyframe and
    /// the tags after it, taken in one step (none lost or repeated in between).
    pub fn flv_subscribe(&self) -> FlvStart {
        self.inner
            .flv
            .subscribe(&self.inner.tags_tx, &self.inner.headers_tx)
    }

    /// An HTTP-FLV viewer's place, unless `max` (0 = no limit) are watching already.
    pub fn flv_seat(&self, max: usize) -> Option<Seat> {
        self.inner.flv.seat(max)
    }

    /// HTTP-FLV viewers now.
    pub fn flv_viewers(&self) -> usize {
        self.inner.flv.viewers()
    }

    /// The program ended: every HTTP-FLV viewer's stream ends, the GOP cache empties (the
    /// next program starts a new one at its first keyframe).
    pub fn end_flv(&self) {
        self.inner.flv.end();
    }

    /// Feeds one mixer output (pictures and AAC frames; other items are ignored).
    pub fn push(&self, item: &MixerOutput) {
        match item {
            MixerOutput::Video(v) => self.push_video(v),
            MixerOutput::Audio(a) => self.push_audio(a),
            _ => {}
        }
    }

    /// Feeds one encoded program picture (Annex-B, SPS/PPS on keyframes). Never blocks
    /// on the network.
    pub fn push_video(&self, v: &EncodedVideo) {
        let tag = FlvTag {
            kind: TagKind::Video,
            timestamp_ms: v.dts_ms as u32,
            body: Bytes::from(flv::avc_nalu_body(&v.data, v.keyframe)),
            keyframe: v.keyframe,
        };
        // The AVC header changes under the GOP cache's lock, with the keyframe it goes with.
        self.inner.flv.publish(&self.inner.tags_tx, tag, || {
            if !v.keyframe {
                return;
            }
            if let Some(record) = avc_record(&v.data) {
                let body = Bytes::from(flv::avc_sequence_header_body(&record));
                self.inner.headers_tx.send_if_modified(|h| {
                    if h.video.as_ref() == Some(&body) {
                        false
                    } else {
                        h.video = Some(body);
                        true
                    }
                });
            }
        });
        // The picture was composed just now (encoding takes milliseconds): the wall clock of
        // HLS's EXT-X-PROGRAM-DATE-TIME, which players measure their latency by.
        let composed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        lock(&self.inner.hls).push_video_at(v.pts_ms * 90, v.keyframe, &v.data, composed);
        self.inner
            .recordings
            .push_video(v.pts_ms, v.keyframe, &v.data);
    }

    /// Feeds one raw AAC frame of the program.
    pub fn push_audio(&self, a: &AacFrame) {
        let tag = FlvTag {
            kind: TagKind::Audio,
            timestamp_ms: a.pts_ms as u32,
            body: Bytes::from(flv::aac_raw_body(&a.data)),
            keyframe: false,
        };
        self.inner.flv.publish(&self.inner.tags_tx, tag, || {});
        lock(&self.inner.hls).push_audio(a.pts_ms * 90, &a.data);
        self.inner.recordings.push_audio(a.pts_ms, &a.data);
    }

    /// Starts publishing to `url` (call inside a tokio runtime). A malformed URL is an
    /// error (answer 400 with its message).
    pub fn add_rtmp(&self, url: &str) -> Result<OutputInfo, RtmpUrlError> {
        // A refused URL takes no id.
        RtmpUrl::parse(url)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.add_rtmp_as(id, url)
    }

    /// [`ProgramOutputs::add_rtmp`] under the id `id` (`rtmp-N`) it had on another node (a
    /// room restored after its node died); an id in use or malformed is refused as a bad URL
    /// would be.
    pub fn restore_rtmp(&self, id: &str, url: &str) -> Result<OutputInfo, RtmpUrlError> {
        let n = parse_id(id).ok_or(RtmpUrlError::InvalidCharacter)?;
        if lock(&self.inner.outputs).contains_key(&n) {
            return Err(RtmpUrlError::InvalidCharacter);
        }
        self.inner.next_id.fetch_max(n + 1, Ordering::Relaxed);
        self.add_rtmp_as(n, url)
    }

    /// Continues the HLS stream another node published up to `position`
    /// ([`HlsStore::position`]): no sequence number goes backwards, a discontinuity marks the
    /// change of node.
    pub fn continue_hls(&self, position: (u64, u64)) {
        lock(&self.inner.hls).continue_from(position.0, position.1);
    }

    /// Every RTMP output's id and whole URL (stream key included).
    pub fn rtmp_destinations(&self) -> Vec<(String, String)> {
        lock(&self.inner.outputs)
            .iter()
            .map(|(id, o)| (format_id(*id), o.url().full()))
            .collect()
    }

    fn add_rtmp_as(&self, id: u64, url: &str) -> Result<OutputInfo, RtmpUrlError> {
        let url = RtmpUrl::parse(url)?;
        let c = &self.inner.config;
        let config = RtmpOutputConfig {
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
            max_consecutive_rejections: c.max_consecutive_rejections,
            ..RtmpOutputConfig::new(url)
        };
        let output = Arc::new(RtmpOutput::spawn(
            config,
            self.inner.headers_tx.subscribe(),
            self.inner.tags_tx.subscribe(),
        ));
        let info = info(id, &output);
        lock(&self.inner.outputs).insert(id, output);
        Ok(info)
    }

    /// Stops and removes an output; false if there is no such id.
    pub async fn remove_rtmp(&self, id: &str) -> bool {
        let Some(n) = parse_id(id) else {
            return false;
        };
        let removed = lock(&self.inner.outputs).remove(&n);
        match removed {
            Some(o) => {
                o.stop().await;
                true
            }
            None => false,
        }
    }

    /// Every output with its status, in creation order.
    pub fn outputs(&self) -> Vec<OutputInfo> {
        lock(&self.inner.outputs)
            .iter()
            .map(|(id, o)| info(*id, o))
            .collect()
    }

    /// One output's status.
    pub fn output(&self, id: &str) -> Option<OutputInfo> {
        let n = parse_id(id)?;
        lock(&self.inner.outputs).get(&n).map(|o| info(n, o))
    }

    /// Stops every output, ends the HTTP-FLV streams and the HLS playlist (`#EXT-X-ENDLIST`).
    pub async fn shutdown(&self) {
        self.end_flv();
        let writers = self.inner.recordings.stop_all();
        let _ =
            tokio::task::spawn_blocking(move || writers.into_iter().for_each(Stopping::wait)).await;
        let all: Vec<Arc<RtmpOutput>> = std::mem::take(&mut *lock(&self.inner.outputs))
            .into_values()
            .collect();
        for o in all {
            o.stop().await;
        }
        lock(&self.inner.hls).finish();
    }
}

fn info(id: u64, o: &RtmpOutput) -> OutputInfo {
    OutputInfo {
        id: format_id(id),
        url: o.url().redacted(),
        status: o.status(),
    }
}

fn format_id(n: u64) -> String {
    format!("rtmp-{n}")
}

fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix("rtmp-")?.parse().ok()
}

/// AVCDecoderConfigurationRecord from the first SPS and PPS of an Annex-B access unit.
fn avc_record(annexb: &[u8]) -> Option<Vec<u8>> {
    let (sps, pps) = mixer::h264::first_sps_pps(annexb)?;
    flv::avc_decoder_configuration_record(sps, pps)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_metadata_is_announced() {
        let p = ProgramOutputs::new(ProgramOutputsConfig::new(meta(), vec![0x11, 0x90]));
        let before = p.sequence_headers().metadata;
        p.set_metadata(&flv::Metadata {
            width: 640,
            height: 360,
            ..meta()
        });
        let after = p.sequence_headers().metadata;
        assert_ne!(before, after);
        assert_eq!(
            after.map(|b| b.to_vec()),
            Some(flv::on_metadata_body(&flv::Metadata {
                width: 640,
                height: 360,
                ..meta()
            }))
        );
        assert_eq!(p.audio_specific_config(), &[0x11, 0x90]);
    }

    fn meta() -> flv::Metadata {
        flv::Metadata {
            width: 320,
            height: 240,
            fps: 30.0,
            video_kbps: 500,
            audio_kbps: 128,
        }
    }

    fn video(pts_ms: u64, keyframe: bool, sps_byte: u8) -> EncodedVideo {
        let data: Vec<u8> = if keyframe {
            vec![
                0, 0, 0, 1, 0x67, 0x42, 0xC0, sps_byte, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65,
                0x88,
            ]
        } else {
            vec![0, 0, 0, 1, 0x41, 0x9A]
        };
        EncodedVideo {
            data: Bytes::from(data),
            pts_ms,
            dts_ms: pts_ms,
            keyframe,
        }
    }

    #[tokio::test]
    async fn headers_tags_hls_and_output_registry() {
        let p = ProgramOutputs::new(ProgramOutputsConfig::new(meta(), vec![0x11, 0x90]));
        let h = p.sequence_headers();
        assert!(h.video.is_none());
        assert_eq!(h.audio.as_deref(), Some(&[0xAF, 0x00, 0x11, 0x90][..]));
        let mut tags = p.subscribe_tags();

        p.push(&MixerOutput::Video(video(0, true, 0x1E)));
        p.push(&MixerOutput::Audio(AacFrame {
            data: Bytes::from_static(&[0x21, 0x00]),
            pts_ms: 10,
        }));
        p.push_video(&video(33, false, 0));
        let h = p.sequence_headers();
        let v = h.video.unwrap();
        assert_eq!(&v[..5], &[0x17, 0x00, 0, 0, 0]);
        assert_eq!(v[5 + 3], 0x1E, "level from the SPS");
        let t = tags.recv().await.unwrap();
        assert_eq!(
            (t.kind, t.timestamp_ms, t.keyframe),
            (TagKind::Video, 0, true)
        );
        assert_eq!(&t.body[..5], &[0x17, 0x01, 0, 0, 0]);
        let t = tags.recv().await.unwrap();
        assert_eq!((t.kind, t.timestamp_ms), (TagKind::Audio, 10));
        assert_eq!(&t.body[..], &[0xAF, 0x01, 0x21, 0x00]);
        let t = tags.recv().await.unwrap();
        assert_eq!(&t.body[..2], &[0x27, 0x01]);

        // A new SPS on a keyframe replaces the AVC header.
        p.push_video(&video(1000, true, 0x1F));
        assert_eq!(p.sequence_headers().video.unwrap()[8], 0x1F);
        // HLS writes a picture once the audio of its time is in.
        assert!(p.hls().playlist().is_none());
        p.push_audio(&AacFrame {
            data: Bytes::from_static(&[0x21, 0x00]),
            pts_ms: 1000,
        });
        // Served from the second segment on (low-latency HLS).
        assert!(p.hls().playlist().is_none());
        p.push_video(&video(2000, true, 0x1F));
        p.push_audio(&AacFrame {
            data: Bytes::from_static(&[0x21, 0x00]),
            pts_ms: 2000,
        });
        assert!(p.hls().playlist().unwrap().contains("seg0.ts"));

        // Output registry.
        assert_eq!(
            p.add_rtmp("rtmp://h/live").unwrap_err(),
            RtmpUrlError::MissingStream
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let o = p
            .add_rtmp(&format!("rtmp://127.0.0.1:{port}/live/secret"))
            .unwrap();
        assert_eq!(o.id, "rtmp-1");
        assert_eq!(o.url, format!("rtmp://127.0.0.1:{port}/live/***"));
        assert_eq!(p.outputs().len(), 1);
        let json = serde_json::to_value(p.output("rtmp-1").unwrap()).unwrap();
        assert!(json["state"] == "connecting" || json["state"] == "retrying");
        assert!(json["bytes_sent"].is_u64() && json["reconnects"].is_u64());
        assert!(p.output("rtmp-9").is_none());
        assert!(!p.remove_rtmp("nope").await);
        assert!(p.remove_rtmp("rtmp-1").await);
        assert!(p.outputs().is_empty());
        p.shutdown().await;
        assert!(p.hls().playlist().unwrap().ends_with("#EXT-X-ENDLIST\n"));
    }
}
