//! Program snapshots: the per-room rate limit and reuse in front of
//! `GET /api/rooms/{room}/snapshot.jpg` ([`SnapshotLimiter`]); the JPEG itself is made by
//! [`mixer::jpeg::jpeg`] from the mixer's canvas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A JPEG asked for again within this long is the one made before (a room list polled by
/// many moderators costs one encode per size).
pub const REUSE: Duration = Duration::from_millis(250);
/// Snapshots encoded per room per second at most (over all sizes); past it `429`.
pub const PER_ROOM_PER_S: usize = 8;
/// Sizes a room's cache keeps.
const SIZES: usize = 4;

/// What [`SnapshotLimiter::check`] decides for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAdmit {
    /// The same picture was encoded less than [`REUSE`] ago: serve it.
    Cached(Bytes),
    /// Encode a new one (and [`SnapshotLimiter::put`] it).
    Encode,
    /// The room had [`PER_ROOM_PER_S`] encodes in the last second: `429`, retry after this.
    Limited(Duration),
}

/// Per room: the latest JPEG of each asked width and the times of the recent encodes. Pure
/// (the caller gives `now`); bounded (a few sizes per room, rooms idle for a minute
/// forgotten).
#[derive(Debug, Default)]
pub struct SnapshotLimiter {
    rooms: HashMap<String, RoomShots>,
}

#[derive(Debug, Default)]
struct RoomShots {
    /// (width asked, when, JPEG), newest last.
    cached: Vec<(Option<u32>, Instant, Bytes)>,
    /// Encodes in the last second.
    encodes: Vec<Instant>,
}

impl SnapshotLimiter {
    /// What to do with a request for `room` at width `w`.
    pub fn check(&mut self, room: &str, w: Option<u32>, now: Instant) -> SnapshotAdmit {
        let r = self.rooms.entry(room.to_owned()).or_default();
        if let Some((_, _, jpeg)) = r
            .cached
            .iter()
            .find(|(cw, at, _)| *cw == w && now.saturating_duration_since(*at) < REUSE)
        {
            return SnapshotAdmit::Cached(jpeg.clone());
        }
        r.encodes
            .retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(1));
        if r.encodes.len() >= PER_ROOM_PER_S {
            let oldest = r.encodes.first().copied().unwrap_or(now);
            return SnapshotAdmit::Limited(
                Duration::from_secs(1).saturating_sub(now.saturating_duration_since(oldest)),
            );
        }
        // Counted now, so concurrent requests cannot all pass.
        r.encodes.push(now);
        SnapshotAdmit::Encode
    }

    /// Keeps a JPEG just encoded for `room` at width `w`.
    pub fn put(&mut self, room: &str, w: Option<u32>, now: Instant, jpeg: Bytes) {
        let recent = |t: &Instant| now.saturating_duration_since(*t) < Duration::from_secs(60);
        self.rooms.retain(|_, r| {
            r.cached.last().is_some_and(|(_, at, _)| recent(at)) || r.encodes.iter().any(recent)
        });
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.cached.retain(|(cw, _, _)| *cw != w);
        if r.cached.len() >= SIZES {
            r.cached.remove(0);
        }
        r.cached.push((w, now, jpeg));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_reused_briefly_and_limited_per_room() {
        let mut l = SnapshotLimiter::default();
        let t0 = Instant::now();
        let jpeg = Bytes::from_static(b"jpeg");
        assert_eq!(l.check("a", None, t0), SnapshotAdmit::Encode);
        l.put("a", None, t0, jpeg.clone());
        // Asked again at once: the same bytes, no encode.
        let t = t0 + Duration::from_millis(100);
        assert_eq!(l.check("a", None, t), SnapshotAdmit::Cached(jpeg.clone()));
        // Another size is another encode; other rooms are not affected.
        assert_eq!(l.check("a", Some(160), t), SnapshotAdmit::Encode);
        assert_eq!(l.check("b", Some(160), t), SnapshotAdmit::Encode);
        // Encodes per second are capped per room.
        let mut admitted = 2;
        for k in 0..20u32 {
            match l.check("a", Some(200 + k), t) {
                SnapshotAdmit::Encode => admitted += 1,
                SnapshotAdmit::Limited(after) => assert!(after <= Duration::from_secs(1)),
                SnapshotAdmit::Cached(_) => panic!("nothing cached for that size"),
            }
        }
        assert_eq!(admitted, PER_ROOM_PER_S);
        // A second later encodes are admitted again; the old JPEG is stale.
        let later = t0 + Duration::from_millis(1200);
        assert_eq!(l.check("a", None, later), SnapshotAdmit::Encode);
    }
}
