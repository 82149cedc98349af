//! Keyframe requests toward one publisher, as a pure core (wants and `now` in, "send a PLI"
//! out): many reasons to want a keyframe (a subscriber starting or lagging, a subscriber's
//! own PLI/FIR, the program's decoder after a loss) make at most one PLI per
//! [`PLI_MIN_INTERVAL`], repeated every [`PLI_RETRY`] while no keyframe has come. The SFU's
//! requester task sleeps until [`KeyframeRequester::poll_timeout`] or a new want, then asks
//! [`KeyframeRequester::poll`]. One publisher's loss so never makes it send keyframes to
//! everyone every few packets.

use std::time::{Duration, Instant};

/// Least time between two PLIs to one publisher.
pub const PLI_MIN_INTERVAL: Duration = Duration::from_millis(300);
/// A PLI is repeated this often until a keyframe arrives.
pub const PLI_RETRY: Duration = Duration::from_millis(500);

/// The request state of one publisher's video.
#[derive(Debug, Clone, Default)]
pub struct KeyframeRequester {
    wanted: bool,
    last_sent: Option<Instant>,
}

impl KeyframeRequester {
    /// A requester that wants a keyframe at once (a new publisher: the program and the first
    /// subscribers need one).
    pub fn wanting() -> Self {
        KeyframeRequester {
            wanted: true,
            last_sent: None,
        }
    }

    /// Someone needs a keyframe.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// A keyframe came from the publisher: nothing is wanted any more.
    pub fn keyframe_seen(&mut self) {
        self.wanted = false;
    }

    /// Is a keyframe wanted?
    pub fn is_wanted(&self) -> bool {
        self.wanted
    }

    /// Should a PLI go out at `now`? When it should, it counts as sent.
    pub fn poll(&mut self, now: Instant) -> bool {
        let due = self.wanted
            && self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= PLI_MIN_INTERVAL);
        if due {
            self.last_sent = Some(now);
        }
        due
    }

    /// When [`Self::poll`] may say yes next: `None` while nothing is wanted; else the end of
    /// the throttle (or now) for a new want, or the retry after the last PLI.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.wanted {
            return None;
        }
        Some(match self.last_sent {
            None => now,
            Some(t) if now.saturating_duration_since(t) < PLI_MIN_INTERVAL => t + PLI_MIN_INTERVAL,
            Some(t) => (t + PLI_RETRY).max(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeline() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut k = KeyframeRequester::default();
        assert!(!k.poll(ms(0)), "nothing wanted");
        assert_eq!(k.poll_timeout(ms(0)), None);

        // (at ms, event, PLI expected from poll); the driver polls on a want and at
        // `poll_timeout`.
        enum Ev {
            Want,
            Keyframe,
            Poll(bool),
        }
        use Ev::*;
        let timeline = [
            (0, Want),
            (0, Poll(true)),   // first want: at once
            (10, Want),        // a second subscriber starts
            (10, Poll(false)), // throttled
            (299, Poll(false)),
            (300, Poll(true)), // throttle over, still wanted
            (800, Poll(true)), // repeated while no keyframe (the driver polls at the retry)
            (850, Keyframe),
            (1200, Poll(false)), // satisfied
            (1250, Want),
            (1250, Poll(true)), // a new want after the throttle: at once
        ];
        for (at, ev) in timeline {
            match ev {
                Want => k.want(),
                Keyframe => k.keyframe_seen(),
                Poll(want) => assert_eq!(k.poll(ms(at)), want, "poll at {at} ms"),
            }
        }
    }

    #[test]
    fn the_timeout_names_the_next_chance() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut k = KeyframeRequester::wanting();
        assert_eq!(k.poll_timeout(ms(5)), Some(ms(5)), "due now");
        assert!(k.poll(ms(5)));
        assert_eq!(k.poll_timeout(ms(100)), Some(ms(305)), "the throttle's end");
        assert_eq!(k.poll_timeout(ms(400)), Some(ms(505)), "the retry");
        assert_eq!(k.poll_timeout(ms(900)), Some(ms(900)), "overdue: now");
        k.keyframe_seen();
        assert_eq!(k.poll_timeout(ms(900)), None);
        assert!(!k.is_wanted());
    }
}
