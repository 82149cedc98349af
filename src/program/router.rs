//! The output router of one room's program: each mixer output goes where it belongs — every
//! item to the RTMP/HLS outputs, pictures and Opus to the WHEP viewers' broadcast, keyframe
//! requests to the co-host's publication — and is counted.

use super::*;

/// Where a running program's outputs go.
pub(super) struct OutputRouter {
    pub(super) room: String,
    pub(super) outputs: ProgramOutputs,
    pub(super) media_tx: broadcast::Sender<ProgramMedia>,
    pub(super) metrics: Arc<ProgramMetrics>,
    pub(super) counters: Arc<RoomCounters>,
    /// The programs, for the publications keyframe requests go to.
    pub(super) programs: Weak<Programs>,
}

impl OutputRouter {
    /// Routes what the mixer sends on `rx` until it stops (the task is aborted when the
    /// program stops).
    pub(super) fn spawn(self, mut rx: mpsc::Receiver<MixerOutput>) -> JoinHandle<()> {
        let span = info_span!("program", room = %self.room);
        tokio::spawn(
            async move {
                while let Some(o) = rx.recv().await {
                    self.route(o);
                }
            }
            .instrument(span),
        )
    }

    fn route(&self, o: MixerOutput) {
        self.outputs.push(&o);
        match o {
            MixerOutput::Video(v) => {
                self.metrics.frames_out.fetch_add(1, Ordering::Relaxed);
                self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .video_bytes
                    .fetch_add(v.data.len() as u64, Ordering::Relaxed);
                let _ = self.media_tx.send(ProgramMedia::Video {
                    data: v.data,
                    keyframe: v.keyframe,
                });
            }
            MixerOutput::Audio(_) => {
                self.metrics.audio_frames.fetch_add(1, Ordering::Relaxed);
            }
            MixerOutput::Opus(op) => {
                let _ = self.media_tx.send(ProgramMedia::Opus { data: op.data });
            }
            MixerOutput::Event(MixerEvent::RequestKeyframe(id)) => {
                self.metrics
                    .keyframe_requests
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(p) = self
                    .programs
                    .upgrade()
                    .and_then(|s| s.publisher(&self.room, &id))
                {
                    p.request_keyframe();
                }
            }
            MixerOutput::Event(MixerEvent::Presented { .. }) => {}
            MixerOutput::Event(e) => debug!(event = ?e, "mixer"),
            _ => {}
        }
    }
}
