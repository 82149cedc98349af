//! The rooms a node holds leases on, as a pure core (`now` in, decisions out): which to
//! renew, which to release because the room is gone from this node, which were lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One lease held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    epoch: u64,
    /// When this node took or confirmed the lease.
    since: Instant,
    /// The room was seen on this node (so its end here is the room's end).
    seen: bool,
}

/// A lease to give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Room.
    pub room: String,
    /// The epoch held.
    pub epoch: u64,
    /// The room was here and ended (emptied, deleted): its saved state goes too. A room that
    /// never arrived keeps it (the next node restores it).
    pub ended: bool,
}

/// The leases a node holds: room → epoch.
#[derive(Debug)]
pub struct Leases {
    /// A claimed room that does not appear on this node within this long is released (the
    /// request that placed it never arrived).
    grace: Duration,
    rooms: HashMap<String, Held>,
}

impl Leases {
    /// No leases; `grace` as in [`Leases::to_release`].
    pub fn new(grace: Duration) -> Self {
        Leases {
            grace,
            rooms: HashMap::new(),
        }
    }

    /// This node holds `room` under `epoch` (claimed, or found in the store). A newer epoch
    /// replaces an older one; the same one keeps its start.
    pub fn hold(&mut self, room: &str, epoch: u64, now: Instant) {
        let fresh = Held {
            epoch,
            since: now,
            seen: false,
        };
        match self.rooms.get_mut(room) {
            Some(h) if h.epoch == epoch => {}
            Some(h) => *h = fresh,
            None => {
                self.rooms.insert(room.to_owned(), fresh);
            }
        }
    }

    /// The epoch this node holds `room` under.
    pub fn epoch(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(|h| h.epoch)
    }

    /// Every lease held, to renew: (room, epoch).
    pub fn held(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .rooms
            .iter()
            .map(|(r, h)| (r.clone(), h.epoch))
            .collect();
        v.sort();
        v
    }

    /// Leases to give back: rooms held past the grace period that are not on this node
    /// (emptied or deleted: `ended`; or never arrived). They are forgotten here.
    pub fn to_release(&mut self, now: Instant, present: impl Fn(&str) -> bool) -> Vec<Release> {
        let grace = self.grace;
        let mut gone = Vec::new();
        for (r, h) in self.rooms.iter_mut() {
            if present(r) {
                h.seen = true;
            } else if now.saturating_duration_since(h.since) >= grace {
                gone.push(Release {
                    room: r.clone(),
                    epoch: h.epoch,
                    ended: h.seen,
                });
            }
        }
        gone.sort_by(|a, b| a.room.cmp(&b.room));
        for g in &gone {
            self.rooms.remove(&g.room);
        }
        gone
    }

    /// The store says `room` is no longer this node's under `epoch`: forget it; `true` if
    /// it was held under that epoch (the room must stop here).
    pub fn lost(&mut self, room: &str, epoch: u64) -> bool {
        if self.epoch(room) == Some(epoch) {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    /// Leases held.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// No lease held.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_after_grace_only_what_is_gone() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut l = Leases::new(Duration::from_secs(10));
        l.hold("a", 1, t0);
        l.hold("b", 2, t0);
        l.hold("c", 3, s(5));
        // Table: (time, rooms present, released).
        type Row<'a> = (u64, &'a [&'a str], &'a [(&'a str, u64, bool)]);
        let table: [Row; 6] = [
            (5, &[], &[]),                    // within the grace period: nothing goes
            (10, &["a"], &[("b", 2, false)]), // b never showed up: its state stays
            (12, &["a"], &[]),                // c still in its grace
            (15, &["a", "c"], &[]),           // c arrived
            (16, &["c"], &[("a", 1, true)]),  // a ended here: its state goes
            (17, &["c"], &[]),
        ];
        for (t, present, want) in table {
            let got = l.to_release(s(t), |r| present.contains(&r));
            let want: Vec<Release> = want
                .iter()
                .map(|(r, e, ended)| Release {
                    room: r.to_string(),
                    epoch: *e,
                    ended: *ended,
                })
                .collect();
            assert_eq!(got, want, "at {t} s");
        }
        assert_eq!(l.held(), vec![("c".into(), 3)]);
    }

    #[test]
    fn a_lost_lease_is_dropped_only_for_its_epoch() {
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(10));
        l.hold("a", 1, t0);
        assert!(!l.lost("a", 7), "another epoch");
        assert!(l.lost("a", 1));
        assert!(!l.lost("a", 1), "once");
        assert!(l.is_empty());
        l.hold("a", 4, t0);
        l.hold("a", 5, t0);
        assert_eq!(l.epoch("a"), Some(5), "a newer claim replaces the older");
        assert_eq!(l.len(), 1);
    }
}
