//! A room's cue book, a pure core: the rate limit (at most `limit` cues per `window`) and
//! idempotency (a retried id gets its first answer, even past the limit or after the program
//! restarted; the last [`CUE_IDS_KEPT`] ids are remembered).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Cue ids a room remembers for idempotency (as many as the mixer does).
pub const CUE_IDS_KEPT: usize = 4096;

/// One room's cues: when recent ones were taken, and the answers by id.
#[derive(Debug, Default)]
pub(crate) struct CueBook {
    times: VecDeque<Instant>,
    acks: HashMap<String, u64>,
    order: VecDeque<String>,
}

impl CueBook {
    /// The `pts_ms` a cue `id` was answered with, if it was.
    pub(crate) fn answered(&self, id: &str) -> Option<u64> {
        self.acks.get(id).copied()
    }

    /// Takes a slot of the rate limit at `now` (`false`: `limit` cues in the last `window`).
    pub(crate) fn take_slot(&mut self, now: Instant, limit: usize, window: Duration) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.times.pop_front();
        }
        if self.times.len() >= limit {
            return false;
        }
        self.times.push_back(now);
        true
    }

    /// Gives the last slot back: the cue was refused, or its id was a duplicate.
    pub(crate) fn give_back(&mut self) {
        self.times.pop_back();
    }

    /// The answers to the last `n` ids, oldest first (what a room takes to another node).
    pub(crate) fn recent(&self, n: usize) -> Vec<(String, u64)> {
        let skip = self.order.len().saturating_sub(n);
        self.order
            .iter()
            .skip(skip)
            .filter_map(|id| Some((id.clone(), *self.acks.get(id)?)))
            .collect()
    }

    /// Remembers the answer to `id` (the oldest id is forgotten past [`CUE_IDS_KEPT`]).
    pub(crate) fn remember(&mut self, id: &str, pts_ms: u64) {
        if self.acks.insert(id.to_owned(), pts_ms).is_none() {
            self.order.push_back(id.to_owned());
            while self.order.len() > CUE_IDS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.acks.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_slides_and_slots_come_back() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let w = Duration::from_secs(10);
        let mut b = CueBook::default();
        // (at s, expected take_slot with a limit of 2 per 10 s)
        for (at, want) in [
            (0, true),
            (1, true),
            (2, false),
            (9, false),
            (11, true),
            (12, true),
        ] {
            assert_eq!(b.take_slot(s(at), 2, w), want, "at {at} s");
        }
        b.give_back(); // the cue at 12 s was refused
        assert!(b.take_slot(s(12), 2, w), "its slot is free again");
        assert!(!b.take_slot(s(13), 2, w));
    }

    #[test]
    fn the_latest_answers_travel_in_order() {
        let mut b = CueBook::default();
        for i in 0..10u64 {
            b.remember(&format!("c{i}"), i * 100);
        }
        b.remember("c3", 999); // a second answer to an id keeps its place
        assert_eq!(
            b.recent(3),
            vec![("c7".into(), 700), ("c8".into(), 800), ("c9".into(), 900)]
        );
        let mut other = CueBook::default();
        for (id, pts) in b.recent(100) {
            other.remember(&id, pts);
        }
        assert_eq!(other.answered("c3"), Some(999));
        assert_eq!(other.recent(100), b.recent(100));
    }

    #[test]
    fn answers_are_remembered_and_the_oldest_forgotten() {
        let mut b = CueBook::default();
        assert_eq!(b.answered("a"), None);
        b.remember("a", 40);
        b.remember("a", 99); // a retry keeps its first answer's place, and is not doubled
        assert_eq!(b.answered("a"), Some(99));
        for i in 0..CUE_IDS_KEPT {
            b.remember(&format!("id{i}"), i as u64);
        }
        assert_eq!(b.answered("a"), None, "the oldest id is forgotten");
        assert_eq!(b.answered("id0"), Some(0));
        assert_eq!(
            b.answered(&format!("id{}", CUE_IDS_KEPT - 1)),
            Some(CUE_IDS_KEPT as u64 - 1)
        );
    }
}
