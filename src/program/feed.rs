//! Feeding a room's mixer from a publisher: RTP in, reorder buffer, access units and Opus frames out to the mixer driver.

use super::*;

impl Programs {
    pub(super) fn feed(
        &self,
        room: &str,
        p: &Arc<Publisher>,
        driver: Arc<MixerDriver>,
        room_counters: Arc<RoomCounters>,
    ) -> Vec<JoinHandle<()>> {
        let span = info_span!("program_input", room = %room, identity = %p.identity);
        let mut tasks = Vec::new();
        let mut vrx = p.video.tx.subscribe();
        let (pv, dv, m) = (p.clone(), driver.clone(), self.metrics.clone());
        tasks.push(tokio::spawn(
            async move {
                let mut asm = H264Assembler::new();
                let mut reorder = ReorderBuffer::new(ReorderConfig::default());
                let mut counted = ReorderStats::default();
                // What this input's assembler holds, as counted in the gauge (given back
                // when the task ends or is aborted).
                let mut report = None;
                let mut held = Held {
                    gauge: m.clone(),
                    bytes: 0,
                };
                pv.request_keyframe();
                loop {
                    let deadline = reorder.deadline();
                    let released = tokio::select! {
                        r = vrx.recv() => match r {
                            Ok(p) => reorder.push(p.packet, p.at),
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                asm = H264Assembler::new();
                                reorder = ReorderBuffer::new(ReorderConfig::default());
                                counted = ReorderStats::default();
                                pv.request_keyframe();
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                        () = sleep_until_opt(deadline) => reorder.poll(Instant::now()),
                    };
                    let st = reorder.stats();
                    if st.lost > counted.lost || st.repaired > counted.repaired {
                        debug!(
                            lost = st.lost - counted.lost,
                            repaired = st.repaired - counted.repaired,
                            wait_ms = reorder.wait().as_millis() as u64,
                            "video input holes"
                        );
                    }
                    m.input_packets_lost
                        .fetch_add(st.lost - counted.lost, Ordering::Relaxed);
                    m.input_packets_repaired
                        .fetch_add(st.repaired - counted.repaired, Ordering::Relaxed);
                    counted = st;
                    for r in released {
                        let Released::Packet(pkt) = r else {
                            // The assembler sees the gap in sequence numbers and drops frames
                            // until a keyframe; it asks for one below.
                            continue;
                        };
                        match asm.push(&pkt) {
                            Assembled::AccessUnit { data, rtp_ts } => {
                                forward_report(&dv, &pv.identity, true, &pv.video, &mut report);
                                m.frames_in.fetch_add(1, Ordering::Relaxed);
                                room_counters.frames_in.fetch_add(1, Ordering::Relaxed);
                                if dv
                                    .push_video(&pv.identity, Bytes::from(data), rtp_ts)
                                    .is_err()
                                {
                                    m.frames_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Assembled::NeedKeyframe => pv.request_keyframe(),
                            Assembled::Pending => {}
                        }
                    }
                    held.set(asm.buffered() as u64);
                }
            }
            .instrument(span.clone()),
        ));
        let mut arx = p.audio.tx.subscribe();
        let (pa, da) = (p.clone(), driver);
        tasks.push(tokio::spawn(
            async move {
                let mut report = None;
                loop {
                    match arx.recv().await {
                        Ok(pkt) => {
                            forward_report(&da, &pa.identity, false, &pa.audio, &mut report);
                            let _ = da.push_opus(
                                &pa.identity,
                                pkt.packet.payload.clone(),
                                pkt.packet.header.timestamp,
                            );
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            .instrument(span),
        ));
        tasks
    }
}

/// Passes the track's sender report on to the mixer when it is a new one.
fn forward_report(
    driver: &MixerDriver,
    identity: &str,
    video: bool,
    track: &crate::sfu::PubTrack,
    last: &mut Option<mixer::sync::SenderReport>,
) {
    let Some(r) = track.sender_report() else {
        return;
    };
    if *last != Some(r) && driver.sender_report(identity, video, r).is_ok() {
        *last = Some(r);
    }
}
