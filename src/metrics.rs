//! `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::AppState;

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Renders every metric.
pub fn render(state: &AppState) -> String {
    let mut o = String::new();
    let (rooms, participants) = state.signaling.counts();
    let (media_rooms, publishers, subs) = state.sfu.counts();
    line(
        &mut o,
        "cohost_rooms",
        "gauge",
        "Rooms with signaling participants.",
        rooms as u64,
    );
    let http = &state.http;
    line(
        &mut o,
        "cohost_http_connections",
        "gauge",
        "HTTP connections open (upgraded WebSockets included).",
        http.open.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_http_connections_refused_total",
        "counter",
        "Connections refused with 503 because the global or per-IP limit was full.",
        http.refused.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_http_idle_closed_total",
        "counter",
        "Connections closed by the idle timeout.",
        http.idle_closed.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_http_body_timeouts_total",
        "counter",
        "Requests answered 408 because their body did not arrive in time.",
        http.body_timeouts.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_media_rooms",
        "gauge",
        "Rooms with media.",
        media_rooms as u64,
    );
    line(
        &mut o,
        "cohost_participants",
        "gauge",
        "Participants connected to signaling or WHIP.",
        participants as u64,
    );
    line(
        &mut o,
        "cohost_publishers",
        "gauge",
        "Co-hosts publishing.",
        publishers as u64,
    );
    line(
        &mut o,
        "cohost_publishers_alive",
        "gauge",
        "Publication objects in memory (publishing or still tearing down; steadily above cohost_publishers means a leak).",
        crate::sfu::PUBLISHERS_ALIVE.load(std::sync::atomic::Ordering::Relaxed) as u64,
    );
    line(
        &mut o,
        "cohost_tracks",
        "gauge",
        "Published tracks (audio + video).",
        state.sfu.track_count() as u64,
    );
    line(
        &mut o,
        "cohost_subscriptions",
        "gauge",
        "SFU subscriptions (subscriber x publisher).",
        subs as u64,
    );
    let m = &state.sfu.metrics;
    line(
        &mut o,
        "cohost_rtp_packets_received_total",
        "counter",
        "RTP packets received from publishers.",
        m.packets_in.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_rtp_bytes_received_total",
        "counter",
        "RTP bytes received from publishers.",
        m.bytes_in.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_rtp_packets_forwarded_total",
        "counter",
        "RTP packets forwarded to subscribers.",
        m.packets_out.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_rtp_bytes_forwarded_total",
        "counter",
        "RTP bytes forwarded to subscribers.",
        m.bytes_out.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_rtp_packets_dropped_total",
        "counter",
        "Packets slow subscribers missed.",
        m.packets_dropped.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_keyframe_requests_total",
        "counter",
        "Keyframe requests (PLI) sent to publishers.",
        m.keyframe_requests.load(Ordering::Relaxed),
    );
    let s = &state.signaling.metrics;
    line(
        &mut o,
        "cohost_signaling_connections_total",
        "counter",
        "Signaling WebSocket connections accepted.",
        s.connections.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_signaling_messages_total",
        "counter",
        "Signaling messages received.",
        s.messages.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_signaling_errors_total",
        "counter",
        "Signaling errors returned to clients.",
        s.errors.load(Ordering::Relaxed),
    );
    line(
        &mut o,
        "cohost_signaling_slow_clients_dropped_total",
        "counter",
        "WebSocket clients dropped because they did not read (queue full or send timeout).",
        s.slow_dropped.load(Ordering::Relaxed),
    );
    if let Some(extra) = &state.extra_metrics {
        o.push_str(&extra());
    }
    o
}
