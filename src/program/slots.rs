//! The program slots (`max_programs`) as a pure core: which rooms hold a slot, which wait for
//! one and since when, first come first served. No clock of its own (`now` comes in), no
//! locks, no tasks: [`Programs`](super::Programs) asks it and carries out the answers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What a room that wants a program gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A slot is free (or the room holds one): start the program, then [`Slots::started`].
    Start,
    /// Every slot is taken: the room waits in line. `first` when it just joined the line
    /// (it was not waiting before).
    Wait {
        /// The room was not waiting before.
        first: bool,
    },
}

/// Rooms holding a program slot and rooms waiting for one.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Most programs at once; 0 = no limit.
    max: usize,
    running: HashSet<String>,
    /// Waiting rooms in arrival order, each with the time it began to wait.
    waiting: Vec<(String, Instant)>,
}

impl Slots {
    /// `max` programs at most (0: no limit).
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            max,
            running: HashSet::new(),
            waiting: Vec::new(),
        }
    }

    /// Every slot is taken.
    pub(crate) fn is_full(&self) -> bool {
        self.max > 0 && self.running.len() >= self.max
    }

    /// `room` has a co-host ready and wants its program.
    pub(crate) fn request(&mut self, room: &str, now: Instant) -> Admission {
        if self.running.contains(room) || !self.is_full() {
            return Admission::Start;
        }
        if self.is_waiting(room) {
            return Admission::Wait { first: false };
        }
        self.waiting.push((room.to_owned(), now));
        Admission::Wait { first: true }
    }

    /// `room`'s program started: it holds a slot and waits no more; how long it waited.
    pub(crate) fn started(&mut self, room: &str, now: Instant) -> Option<Duration> {
        self.running.insert(room.to_owned());
        let i = self.waiting.iter().position(|(r, _)| r == room)?;
        let (_, since) = self.waiting.remove(i);
        Some(now.saturating_duration_since(since))
    }

    /// `room`'s program stopped: its slot is free.
    pub(crate) fn stopped(&mut self, room: &str) {
        self.running.remove(room);
    }

    /// `room` no longer wants a program (its waiting co-hosts left).
    pub(crate) fn withdraw(&mut self, room: &str) {
        self.waiting.retain(|(r, _)| r != room);
    }

    /// Nobody waits any more (shutdown).
    pub(crate) fn clear_waiting(&mut self) {
        self.waiting.clear();
    }

    /// The room to start next: the one waiting longest, when a slot is free.
    pub(crate) fn next(&self) -> Option<&str> {
        if self.is_full() {
            return None;
        }
        self.waiting.first().map(|(r, _)| r.as_str())
    }

    /// `room` waits for a slot.
    pub(crate) fn is_waiting(&self, room: &str) -> bool {
        self.waiting.iter().any(|(r, _)| r == room)
    }

    /// Some room waits for a slot (a program losing its last co-host then stops at once
    /// instead of after its grace period).
    pub(crate) fn someone_waits(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Rooms holding a slot.
    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// Rooms waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn no_limit_admits_everyone() {
        let mut s = Slots::new(0);
        let t0 = Instant::now();
        for i in 0..100 {
            let room = format!("r{i}");
            assert_eq!(s.request(&room, t0), Admission::Start);
            assert_eq!(s.started(&room, t0), None);
        }
        assert!(!s.is_full());
        assert_eq!((s.running(), s.waiting()), (100, 0));
    }

    #[test]
    fn first_come_first_served_when_full() {
        let t0 = Instant::now();
        let mut s = Slots::new(2);
        for room in ["a", "b"] {
            assert_eq!(s.request(room, t0), Admission::Start);
            s.started(room, t0);
        }
        assert!(s.is_full());
        // A room holding a slot asking again (a second co-host) is not queued.
        assert_eq!(s.request("a", t0), Admission::Start);
        // Table: (time, room, expected).
        let table = [
            (10, "c", Admission::Wait { first: true }),
            (20, "d", Admission::Wait { first: true }),
            (30, "c", Admission::Wait { first: false }),
        ];
        for (ms, room, want) in table {
            assert_eq!(s.request(room, at(t0, ms)), want, "{room} at {ms} ms");
        }
        assert_eq!(s.next(), None, "no slot free");
        assert!(s.someone_waits());
        s.stopped("b");
        assert_eq!(s.next(), Some("c"), "the oldest waiting room goes first");
        assert_eq!(
            s.started("c", at(t0, 110)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(s.next(), None, "full again");
        s.stopped("a");
        assert_eq!(s.next(), Some("d"));
        assert_eq!((s.running(), s.waiting()), (1, 1));
    }

    #[test]
    fn a_room_that_stops_waiting_leaves_the_line() {
        let t0 = Instant::now();
        let mut s = Slots::new(1);
        s.request("a", t0);
        s.started("a", t0);
        s.request("b", at(t0, 1));
        s.request("c", at(t0, 2));
        s.withdraw("b");
        assert!(!s.is_waiting("b"));
        s.stopped("a");
        assert_eq!(s.next(), Some("c"));
        s.clear_waiting();
        assert_eq!(s.next(), None);
        assert!(!s.someone_waits());
    }

    #[test]
    fn a_start_that_fails_keeps_the_room_in_line() {
        let t0 = Instant::now();
        let mut s = Slots::new(1);
        s.request("a", t0);
        s.started("a", t0);
        s.request("b", at(t0, 5));
        s.stopped("a");
        // The caller failed to start `b`: it did not call `started`, `b` is still next.
        assert_eq!(s.next(), Some("b"));
        assert_eq!(s.next(), Some("b"));
        assert_eq!(s.started("b", at(t0, 20)), Some(Duration::from_millis(15)));
    }
}
