//! The mixer input's packet buffer: puts a publisher's RTP back in sequence order and waits a
//! bounded time for a missing packet to be repaired (NACK → retransmission, [`crate::nack`])
//! before counting it lost, so a packet that comes back 30–100 ms later is used instead of
//! breaking its frame and every frame after it until the next keyframe.
//!
//! The wait for a hole adapts to what repairs take here: it is twice the recent repair time
//! (fast to rise, slow to fall) plus 10 ms, at least [`ReorderConfig::min_wait`] and at most
//! [`ReorderConfig::max_wait`]. With no loss nothing waits: a packet in order is released
//! the moment it arrives. Pure: packets and `now` in, packets in order and losses out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rtc::rtp;

/// A 16-bit RTP sequence number extended to 64 bits: the value nearest `reference` (an
/// extended number seen before); the first one starts one cycle up, so a little reordering
/// before it stays positive.
pub fn extend_seq(reference: Option<u64>, seq: u16) -> u64 {
    let Some(r) = reference else {
        return u64::from(seq) + (1 << 16);
    };
    let diff = seq.wrapping_sub(r as u16) as i16;
    r.saturating_add_signed(i64::from(diff))
}

/// Limits of a [`ReorderBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// Longest wait for a missing packet.
    pub max_wait: Duration,
    /// Shortest wait for a missing packet (covers plain reordering).
    pub min_wait: Duration,
    /// Repair time assumed before one was measured.
    pub initial_repair: Duration,
    /// Packets held at most; past it the oldest hole is given up.
    pub max_packets: usize,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        ReorderConfig {
            max_wait: Duration::from_millis(300),
            min_wait: Duration::from_millis(20),
            initial_repair: Duration::from_millis(60),
            max_packets: 2048,
        }
    }
}

/// What the buffer hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    /// The next packet in sequence order.
    Packet(rtp::Packet),
    /// This many packets before the next one are lost for good.
    Lost(u64),
}

/// Counters of a [`ReorderBuffer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReorderStats {
    /// Packets released in order.
    pub released: u64,
    /// Packets given up as lost.
    pub lost: u64,
    /// Holes filled while waiting (late or retransmitted packets used).
    pub repaired: u64,
    /// Packets that came after their place was given up, or twice.
    pub dropped: u64,
}

/// A sequence-number reorder buffer with a bounded, adaptive wait for holes.
#[derive(Debug)]
pub struct ReorderBuffer {
    cfg: ReorderConfig,
    /// Next extended sequence number to release.
    next: Option<u64>,
    /// Packets after a hole, by extended sequence number, with their arrival.
    held: BTreeMap<u64, (Instant, rtp::Packet)>,
    /// When the hole at `next` was first seen.
    hole_since: Option<Instant>,
    /// Recent repair time (decaying maximum).
    repair: Duration,
    stats: ReorderStats,
}

impl ReorderBuffer {
    /// An empty buffer.
    pub fn new(cfg: ReorderConfig) -> Self {
        ReorderBuffer {
            repair: cfg.initial_repair,
            cfg,
            next: None,
            held: BTreeMap::new(),
            hole_since: None,
            stats: ReorderStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// How long a hole is waited for now.
    pub fn wait(&self) -> Duration {
        (self.repair * 2 + Duration::from_millis(10)).clamp(self.cfg.min_wait, self.cfg.max_wait)
    }

    /// Feeds one packet that arrived at `now`; returns what can be released.
    pub fn push(&mut self, pkt: rtp::Packet, now: Instant) -> Vec<Released> {
        let mut out = Vec::new();
        let ext = extend_seq(self.next, pkt.header.sequence_number);
        let Some(next) = self.next else {
            self.next = Some(ext + 1);
            self.stats.released += 1;
            out.push(Released::Packet(pkt));
            return out;
        };
        if ext < next || self.held.contains_key(&ext) {
            self.stats.dropped += 1;
            return out;
        }
        if ext == next {
            if let Some(since) = self.hole_since.take() {
                self.stats.repaired += 1;
                let took = now.saturating_duration_since(since);
                self.repair = if took > self.repair {
                    took
                } else {
                    (self.repair * 15 + took) / 16
                };
            }
            self.stats.released += 1;
            self.next = Some(next + 1);
            out.push(Released::Packet(pkt));
            self.release_contiguous(now, &mut out);
            return out;
        }
        // After a hole.
        if self.hole_since.is_none() {
            self.hole_since = Some(now);
        }
        self.held.insert(ext, (now, pkt));
        if self.held.len() > self.cfg.max_packets {
            self.give_up(now, &mut out);
        }
        out
    }

    /// Releases the packets in sequence from `next`; notes the next hole, if any.
    fn release_contiguous(&mut self, _now: Instant, out: &mut Vec<Released>) {
        while let Some(next) = self.next {
            let Some((_, pkt)) = self.held.remove(&next) else {
                break;
            };
            self.stats.released += 1;
            self.next = Some(next + 1);
            out.push(Released::Packet(pkt));
        }
        // A hole remains before the held packets: its wait started when the first of them
        // arrived.
        self.hole_since = self.held.values().map(|(t, _)| *t).min();
    }

    /// Gives up the hole at `next`: skips to the first held packet.
    fn give_up(&mut self, now: Instant, out: &mut Vec<Released>) {
        let (Some(next), Some((&first, _))) = (self.next, self.held.first_key_value()) else {
            return;
        };
        let lost = first - next;
        self.stats.lost += lost;
        out.push(Released::Lost(lost));
        self.next = Some(first);
        self.release_contiguous(now, out);
    }

    /// Gives up holes whose wait is over; call at [`ReorderBuffer::deadline`].
    pub fn poll(&mut self, now: Instant) -> Vec<Released> {
        let mut out = Vec::new();
        while self.hole_since.is_some_and(|t| now >= t + self.wait()) {
            self.give_up(now, &mut out);
        }
        out
    }

    /// When a hole's wait ends (`None`: no hole).
    pub fn deadline(&self) -> Option<Instant> {
        self.hole_since.map(|t| t + self.wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p
    }

    fn seqs(r: &[Released]) -> Vec<i64> {
        r.iter()
            .map(|r| match r {
                Released::Packet(p) => i64::from(p.header.sequence_number),
                Released::Lost(n) => -(*n as i64),
            })
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn in_order_packets_pass_at_once() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(ReorderConfig::default());
        for s in [65534u16, 65535, 0, 1] {
            assert_eq!(seqs(&b.push(pkt(s), t)), vec![i64::from(s)]);
        }
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_retransmission_fills_its_hole_and_the_wait_learns_from_it() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(ReorderConfig::default());
        b.push(pkt(1), t);
        assert!(b.push(pkt(3), t + ms(1)).is_empty());
        assert!(b.push(pkt(4), t + ms(2)).is_empty());
        assert_eq!(b.deadline(), Some(t + ms(1) + ms(130)));
        assert!(b.poll(t + ms(40)).is_empty());
        assert_eq!(seqs(&b.push(pkt(2), t + ms(41))), vec![2, 3, 4]);
        assert_eq!(b.deadline(), None);
        // The repair took 40 ms: 60 → 40 slowly (decaying), so the wait shrinks a little.
        assert!(b.wait() < ms(130) && b.wait() > ms(100), "{:?}", b.wait());
        // A late duplicate is dropped.
        assert!(b.push(pkt(2), t + ms(50)).is_empty());
        assert_eq!(b.stats().repaired, 1);
        assert_eq!(b.stats().dropped, 1);
    }

    #[test]
    fn a_hole_that_stays_is_lost_after_the_wait_and_later_holes_wait_from_their_own_start() {
        let t = Instant::now();
        let cfg = ReorderConfig {
            initial_repair: ms(20),
            ..ReorderConfig::default()
        };
        let mut b = ReorderBuffer::new(cfg);
        assert_eq!(b.wait(), ms(50));
        b.push(pkt(10), t);
        b.push(pkt(12), t + ms(5));
        b.push(pkt(14), t + ms(30));
        assert!(b.poll(t + ms(54)).is_empty());
        // 11 given up at 55 ms; 13's hole began when 14 arrived (30 ms): it waits until 80.
        assert_eq!(seqs(&b.poll(t + ms(55))), vec![-1, 12]);
        assert_eq!(b.deadline(), Some(t + ms(80)));
        assert_eq!(seqs(&b.poll(t + ms(80))), vec![-1, 14]);
        // 11 coming now is too late.
        assert!(b.push(pkt(11), t + ms(90)).is_empty());
        assert_eq!(b.stats().lost, 2);
        assert_eq!(b.stats().released, 3);
    }

    #[test]
    fn overflow_gives_up_the_oldest_hole_and_the_wait_is_capped() {
        let t = Instant::now();
        let cfg = ReorderConfig {
            max_packets: 4,
            ..ReorderConfig::default()
        };
        let mut b = ReorderBuffer::new(cfg);
        b.push(pkt(0), t);
        let mut out = Vec::new();
        for s in 2..=6 {
            out.extend(b.push(pkt(s), t));
        }
        assert_eq!(seqs(&out), vec![-1, 2, 3, 4, 5, 6]);
        // A repair slower than the cap does not raise the wait past it.
        b.push(pkt(8), t);
        b.push(pkt(7), t + ms(900));
        assert_eq!(b.wait(), ms(300));
    }
}
