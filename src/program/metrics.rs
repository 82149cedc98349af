//! The programs' Prometheus lines: per-room and pool-wide counters, outputs.

use super::*;
use crate::output::OutputState;

impl Programs {
    /// Prometheus lines for the programs and their outputs.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let m = &self.metrics;
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        line(
            "cohost_programs_running",
            "gauge",
            "Rooms whose program is running.",
            self.running() as u64,
        );
        line(
            "cohost_programs_waiting",
            "gauge",
            "Rooms whose program waits for a free slot (max_programs).",
            self.waiting() as u64,
        );
        line(
            "cohost_programs_deferred_total",
            "counter",
            "Programs that had to wait for a free slot (max_programs).",
            m.programs_deferred.load(Ordering::Relaxed),
        );
        line(
            "cohost_programs_max",
            "gauge",
            "Most programs running at once (0 = no limit).",
            self.config.max_programs as u64,
        );
        line(
            "cohost_program_frames_in_total",
            "counter",
            "Co-host access units fed to mixers.",
            m.frames_in.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_frames_dropped_total",
            "counter",
            "Co-host access units dropped (mixer queue full).",
            m.frames_dropped.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_input_packets_lost_total",
            "counter",
            "Co-host video packets lost for good on the way into the mixer (after waiting for a retransmission).",
            m.input_packets_lost.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_input_packets_repaired_total",
            "counter",
            "Co-host video packets that filled their hole in time (reordered or retransmitted).",
            m.input_packets_repaired.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_input_assembling_bytes",
            "gauge",
            "Bytes held for co-host access units being reassembled (at most one access unit each).",
            m.input_assembling_bytes.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_frames_out_total",
            "counter",
            "Program pictures encoded.",
            m.frames_out.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_late_frames_total",
            "counter",
            "Program pictures out of the mixer more than one frame interval after their due time.",
            m.driver.late_pictures.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_video_bytes_total",
            "counter",
            "Program H.264 bytes.",
            m.video_bytes.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_audio_frames_total",
            "counter",
            "Program AAC frames.",
            m.audio_frames.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_keyframe_requests_total",
            "counter",
            "Keyframe requests from mixers to publishers.",
            m.keyframe_requests.load(Ordering::Relaxed),
        );
        line(
            "cohost_program_cues_total",
            "counter",
            "Cues stamped into programs.",
            m.cues.load(Ordering::Relaxed),
        );
        let (workers, mixers) = lock(&self.pool)
            .as_ref()
            .map_or((0, 0), |p| (p.threads(), p.mixers()));
        line(
            "cohost_mixer_workers",
            "gauge",
            "Worker threads of the mixer pool (0 before the first program).",
            workers as u64,
        );
        line(
            "cohost_mixers",
            "gauge",
            "Mixers in the pool (one per running program; more means stopped ones linger).",
            mixers as u64,
        );
        let mix_s = m.driver.poll_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(o, "# HELP cohost_program_mix_seconds_total Time mixer threads spent compositing and encoding (video and audio).\n# TYPE cohost_program_mix_seconds_total counter\ncohost_program_mix_seconds_total {mix_s:.6}");
        let g = lock(&self.rooms);
        let viewers: usize = g.values().map(|r| r.viewers.len()).sum();
        let _ = writeln!(o, "# HELP cohost_whep_program_viewers WHEP viewers of programs.\n# TYPE cohost_whep_program_viewers gauge\ncohost_whep_program_viewers {viewers}");
        o.push_str(&m.flv.render());
        o.push_str(&m.recordings.render());
        let _ = writeln!(o, "# HELP cohost_program_rooms Rooms with program state (running, waiting, with outputs, created through the API, or with a layout set).\n# TYPE cohost_program_rooms gauge\ncohost_program_rooms {}", g.len());
        let _ = writeln!(o, "# HELP cohost_rtmp_output_bytes_total Bytes sent per RTMP output.\n# TYPE cohost_rtmp_output_bytes_total counter");
        let mut states = String::new();
        let mut reconnects = String::new();
        let mut segs = String::new();
        let (mut rin, mut rout, mut rlate, mut rmix) =
            (String::new(), String::new(), String::new(), String::new());
        for (room, r) in g.iter() {
            if let Some(run) = &r.running {
                let c = &run.counters;
                let _ = writeln!(
                    rin,
                    "cohost_room_program_frames_in_total{{room=\"{room}\"}} {}",
                    c.frames_in.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    rout,
                    "cohost_room_program_frames_out_total{{room=\"{room}\"}} {}",
                    c.frames_out.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    rlate,
                    "cohost_room_program_late_frames_total{{room=\"{room}\"}} {}",
                    c.driver.late_pictures.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    rmix,
                    "cohost_room_program_mix_seconds_total{{room=\"{room}\"}} {:.6}",
                    c.driver.poll_nanos.load(Ordering::Relaxed) as f64 / 1e9
                );
            }
            for out in r.outputs.outputs() {
                let (bytes, rc) = (out.status.bytes_sent, out.status.reconnects);
                let _ = writeln!(
                    o,
                    "cohost_rtmp_output_bytes_total{{room=\"{room}\",output=\"{}\"}} {bytes}",
                    out.id
                );
                let _ = writeln!(
                    reconnects,
                    "cohost_rtmp_output_reconnects_total{{room=\"{room}\",output=\"{}\"}} {rc}",
                    out.id
                );
                // `stopped` outputs are removed, not listed.
                for s in &OutputState::ALL[..4] {
                    let _ = writeln!(
                        states,
                        "cohost_rtmp_output_state{{room=\"{room}\",output=\"{}\",state=\"{}\"}} {}",
                        out.id,
                        s.as_str(),
                        u8::from(*s == out.status.state)
                    );
                }
            }
            if let Some(last) = r.outputs.hls().sequences().last() {
                let _ = writeln!(
                    segs,
                    "cohost_hls_segments_total{{room=\"{room}\"}} {}",
                    last + 1
                );
            }
        }
        let _ = writeln!(o, "# HELP cohost_rtmp_output_reconnects_total Reconnects per RTMP output.\n# TYPE cohost_rtmp_output_reconnects_total counter\n{reconnects}# HELP cohost_rtmp_output_state RTMP output state (1 = current).\n# TYPE cohost_rtmp_output_state gauge\n{states}# HELP cohost_hls_segments_total HLS segments produced per room.\n# TYPE cohost_hls_segments_total counter\n{segs}");
        let _ = writeln!(o, "# HELP cohost_room_program_frames_in_total Co-host access units fed to the room's running program.\n# TYPE cohost_room_program_frames_in_total counter\n{rin}# HELP cohost_room_program_frames_out_total Pictures encoded by the room's running program.\n# TYPE cohost_room_program_frames_out_total counter\n{rout}# HELP cohost_room_program_late_frames_total Late pictures of the room's running program.\n# TYPE cohost_room_program_late_frames_total counter\n{rlate}# HELP cohost_room_program_mix_seconds_total Mixer time of the room's running program.\n# TYPE cohost_room_program_mix_seconds_total counter\n{rmix}");
        o
    }
}
