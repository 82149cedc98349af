//! Per-input video play-out: each access unit is shown at the time its RTP timestamp says,
//! through an adaptive delay, instead of "latest picture wins".
//!
//! The sender's clock is mapped onto the mixer's by a line fitted to (RTP time, arrival) over
//! the last [`FIT_FRAMES`] frames (it absorbs a sender whose timestamps run a little fast or
//! slow) and the lower envelope of the arrivals around it (the fastest transit). A frame's
//! lateness is how far behind that envelope it arrived; the play-out delay is the 99th
//! percentile of the recent lateness (4 s) plus up to [`MARGIN`] (it rises at once, falls by at most
//! 1 ms a frame), so network jitter costs a little delay instead of frames that are never on
//! screen. With a steady network the delay is a couple of milliseconds. `floor` lets the mixer
//! hold video back to stay in step with the input's audio. Pure: timestamps and times in.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// Frames the clock fit and the envelope look back over (10 s at 30 fps).
pub const FIT_FRAMES: usize = 300;
/// Frames the lateness percentile looks back over (4 s at 30 fps).
const LATENESS_FRAMES: usize = 120;
/// Added to the measured lateness (at most as much as the lateness itself: a perfectly steady
/// input needs none).
pub const MARGIN: Duration = Duration::from_millis(2);
/// A jump in RTP time larger than this (seconds) restarts the mapping.
const RESYNC_S: f64 = 3.0;

/// An access unit waiting for its time.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Annex-B bytes.
    pub data: Bytes,
    /// Its RTP timestamp (90 kHz).
    pub rtp_ts: u32,
    /// When it is due on the mixer's clock.
    pub due: Duration,
}

/// Most access units an input's play-out buffer holds (over 2 s at 30 fps; a sane sender
/// never comes near it since frames wait at most `max_delay`). A flood beyond it is dropped
/// whole and the input waits for a keyframe: memory and decoding stay bounded.
pub const MAX_QUEUED: usize = 64;

/// The play-out state of one input's video.
#[derive(Debug)]
pub struct VideoPlayout {
    /// Access units were dropped (queue overflow) since the last [`Self::take_overflow`].
    overflowed: bool,
    max_delay: Duration,
    floor: Duration,
    last_ext: Option<i64>,
    /// (RTP seconds since the first frame, arrival seconds).
    history: VecDeque<(f64, f64)>,
    lateness: VecDeque<f64>,
    delay: f64,
    /// The delay this input's video needs by itself (without the lip-sync floor), seconds.
    own: f64,
    queue: VecDeque<Queued>,
    first_rtp: Option<i64>,
}

impl VideoPlayout {
    /// A play-out buffer whose delay never exceeds `max_delay` (beyond it frames are shown
    /// as they come).
    pub fn new(max_delay: Duration) -> Self {
        VideoPlayout {
            overflowed: false,
            max_delay,
            floor: Duration::ZERO,
            last_ext: None,
            history: VecDeque::new(),
            lateness: VecDeque::new(),
            delay: 0.0,
            own: 0.0,
            queue: VecDeque::new(),
            first_rtp: None,
        }
    }

    /// Holds video back at least this long (to stay in step with audio).
    pub fn set_floor(&mut self, floor: Duration) {
        self.floor = floor.min(self.max_delay);
    }

    /// The current play-out delay (beyond the fastest transit).
    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.delay)
    }

    /// The delay this input's video needs by itself to show every picture (its recent
    /// lateness, without the lip-sync floor): what its audio must wait for lip sync when the
    /// video is the slower of the two.
    pub fn own_delay(&self) -> Duration {
        Duration::from_secs_f64(self.own.max(0.0))
    }

    /// The median lateness of recent frames (how far a typical frame arrives behind the
    /// fastest transit).
    pub fn median_lateness(&self) -> Duration {
        let mut v: Vec<f64> = self.lateness.iter().copied().collect();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort_by(f64::total_cmp);
        Duration::from_secs_f64(v[v.len() / 2].max(0.0))
    }

    /// Access units waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn reset(&mut self) {
        self.history.clear();
        self.lateness.clear();
        self.first_rtp = None;
        self.delay = 0.0;
        self.own = 0.0;
    }

    /// Clock fit: (slope, intercept) of arrival = slope * rtp + intercept, lower envelope.
    fn fit(&self) -> (f64, f64) {
        let n = self.history.len() as f64;
        let slope = if self.history.len() >= 30 {
            let (sx, sy) = self
                .history
                .iter()
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            let (mx, my) = (sx / n, sy / n);
            let (sxy, sxx) = self.history.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
                (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
            });
            if sxx > 1e-6 {
                (sxy / sxx).clamp(0.98, 1.02)
            } else {
                1.0
            }
        } else {
            1.0
        };
        let intercept = self
            .history
            .iter()
            .map(|(x, y)| y - slope * x)
            .fold(f64::INFINITY, f64::min);
        (slope, intercept)
    }

    /// Were access units dropped since the last call (the decoder must skip to a keyframe)?
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflowed)
    }

    /// Queues an access unit that arrived at `arrival` (mixer clock).
    pub fn push(&mut self, data: Bytes, rtp_ts: u32, arrival: Duration) {
        if self.queue.len() >= MAX_QUEUED {
            self.queue.clear();
            self.overflowed = true;
        }
        let prev = self.last_ext;
        let ext = crate::audio::unwrap_rtp(&mut self.last_ext, rtp_ts);
        if prev.is_some_and(|p| ext == p) {
            // No timing to go by (a repeated timestamp): show it as it comes, after the
            // frames before it.
            let due = self.queue.back().map_or(arrival, |q| q.due.max(arrival));
            self.queue.push_back(Queued { data, rtp_ts, due });
            return;
        }
        let first = *self.first_rtp.get_or_insert(ext);
        let mut x = (ext - first) as f64 / 90_000.0;
        let y = arrival.as_secs_f64();
        if let Some(&(lx, ly)) = self.history.back() {
            if (x - lx).abs() > RESYNC_S || (y - ly) > RESYNC_S {
                // A restarted sender or a long pause: map afresh.
                self.reset();
                self.first_rtp = Some(ext);
                x = 0.0;
            }
        }
        self.history.push_back((x, y));
        if self.history.len() > FIT_FRAMES {
            self.history.pop_front();
        }
        let (slope, intercept) = self.fit();
        let late = (y - (slope * x + intercept)).max(0.0);
        self.lateness.push_back(late);
        if self.lateness.len() > LATENESS_FRAMES {
            self.lateness.pop_front();
        }
        let mut sorted: Vec<f64> = self.lateness.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
        // The lip-sync floor moves with the audio's measured delay: it is part of the target,
        // so a falling floor too lowers the delay by at most 1 ms a frame (a sudden drop would
        // make two frames due in one program tick).
        // What the delay would be without the floor (same rise-at-once, fall-slowly rule).
        let own = (p99 + p99.min(MARGIN.as_secs_f64())).min(self.max_delay.as_secs_f64());
        self.own = if own > self.own {
            own
        } else {
            (self.own - 0.001).max(own)
        };
        let target = (p99 + p99.min(MARGIN.as_secs_f64()))
            .max(self.floor.as_secs_f64())
            .min(self.max_delay.as_secs_f64());
        self.delay = if target > self.delay {
            target
        } else {
            (self.delay - 0.001).max(target)
        };
        let due_s = (slope * x + intercept + self.delay).max(0.0);
        let due = Duration::from_secs_f64(due_s).min(arrival + self.max_delay);
        self.queue.push_back(Queued { data, rtp_ts, due });
    }

    /// Puts back the access unit just taken (it is decoded at the next tick).
    pub fn unpop(&mut self, q: Queued) {
        self.queue.push_front(q);
    }

    /// Takes the next access unit due at or before `now`, in arrival order.
    pub fn pop_due(&mut self, now: Duration) -> Option<Queued> {
        if self.queue.front().is_some_and(|q| q.due <= now) {
            self.queue.pop_front()
        } else {
            None
        }
    }

    /// Takes the next access unit to decode for the program picture at `now`, whose ticks
    /// are `frame` apart; `shown` says whether this tick already has a new picture of this
    /// input. The first picture of a tick is the next one due by `now`. A second one is
    /// taken (and the one before it never shown) only when it too is more than half a frame
    /// late: due times that wobble by a few milliseconds around a tick (a moving lip-sync
    /// floor, a late frame) cost one tick of delay instead of a picture that is never on
    /// screen. Only a real backlog (a burst after a stall, a falling delay) skips pictures.
    pub fn pop_for_tick(&mut self, now: Duration, frame: Duration, shown: bool) -> Option<Queued> {
        let by = if shown {
            now.checked_sub(frame / 2)?
        } else {
            now
        };
        self.pop_due(by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_dropped_whole_and_reported() {
        let mut p = VideoPlayout::new(Duration::from_millis(400));
        for i in 0..1000u32 {
            p.push(Bytes::from_static(b"au"), i * 3000, ms(f64::from(i) * 0.01));
            assert!(p.queued() <= MAX_QUEUED);
        }
        assert!(p.take_overflow());
        assert!(!p.take_overflow(), "reported once");
        // A sane sender never overflows.
        let mut q = VideoPlayout::new(Duration::from_millis(400));
        for i in 0..300u32 {
            q.push(Bytes::from_static(b"au"), i * 3000, ms(f64::from(i) * 33.3));
            while q.pop_due(ms(f64::from(i) * 33.3)).is_some() {}
        }
        assert!(!q.take_overflow());
    }

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    /// Feeds `n` frames at 30 fps whose arrivals are delayed by `extra(i)` ms; returns how many
    /// distinct frames a 30 fps program (ticks offset by `phase` ms) shows, and the last delay.
    fn run(n: usize, extra: impl Fn(usize) -> f64, phase: f64) -> (usize, Duration) {
        let mut p = VideoPlayout::new(Duration::from_millis(500));
        // Frames leave the reorder buffer in order: one delayed holds back those after it.
        let mut last = Duration::ZERO;
        let arrivals: Vec<(Duration, u32)> = (0..n)
            .map(|i| {
                last = last.max(ms(i as f64 * 1000.0 / 30.0 + 5.0 + extra(i)));
                (last, (i * 3000) as u32)
            })
            .collect();
        let mut shown = 0;
        let mut next = 0;
        let mut tick = 0;
        loop {
            let now = ms(tick as f64 * 1000.0 / 30.0 + phase);
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, ts) = arrivals[next];
                p.push(Bytes::new(), ts, at);
                next += 1;
            }
            let mut got = false;
            while p.pop_for_tick(now, ms(1000.0 / 30.0), got).is_some() {
                got = true;
            }
            if got {
                shown += 1;
            }
            tick += 1;
            if next == arrivals.len() && p.queued() == 0 {
                break;
            }
        }
        (shown, p.delay())
    }

    #[test]
    fn a_steady_input_is_shown_frame_for_frame_with_almost_no_delay() {
        for phase in [0.0, 3.0, 16.0, 30.0] {
            let (shown, delay) = run(300, |_| 0.0, phase);
            assert!(shown >= 299, "phase {phase}: {shown} of 300 shown");
            assert!(delay <= ms(3.0), "{delay:?}");
        }
    }

    #[test]
    fn jitter_costs_delay_not_pictures() {
        // Up to 40 ms of extra delay per frame, pseudo-random (frames arrive out of step).
        let jitter = |i: usize| ((i * 7919) % 41) as f64;
        let (shown, delay) = run(600, jitter, 10.0);
        assert!(shown >= 590, "{shown} of 600 shown");
        assert!(delay >= ms(30.0) && delay <= ms(45.0), "{delay:?}");
        // Without the play-out buffer ("latest wins") many would be lost: check the premise.
        let mut latest_wins = 0;
        let mut last = 0.0f64;
        let arr: Vec<f64> = (0..600)
            .map(|i| {
                last = last.max(i as f64 * 1000.0 / 30.0 + 5.0 + jitter(i));
                last
            })
            .collect();
        let mut k = 0;
        for tick in 0..700 {
            let now = tick as f64 * 1000.0 / 30.0 + 10.0;
            let before = k;
            while k < arr.len() && arr[k] <= now {
                k += 1;
            }
            if k > before {
                latest_wins += 1;
            }
        }
        assert!(
            latest_wins < 520,
            "premise: latest-wins shows {latest_wins}"
        );
    }

    #[test]
    fn due_times_wobbling_around_a_tick_cost_no_pictures() {
        // A steady input whose lip-sync floor moves by a few ms (it rises at once and falls
        // 1 ms a frame), with due times right on the program ticks: each wobble would put two
        // pictures in one tick and none in the next.
        let frame = ms(1000.0 / 30.0);
        let shown_with = |tick_policy: bool| {
            let mut p = VideoPlayout::new(Duration::from_millis(500));
            let mut shown = 0;
            let mut next = 0u32;
            for tick in 0..330u32 {
                // Due = arrival (5 ms + i frames) + 90 ms floor: ticks at 95 ms + k frames.
                let now = ms(f64::from(tick) * 1000.0 / 30.0 + 95.0);
                while next < 300 && ms(f64::from(next) * 1000.0 / 30.0 + 5.0) <= now {
                    p.set_floor(ms(if next % 12 < 3 { 92.5 } else { 89.5 }));
                    p.push(
                        Bytes::new(),
                        next * 3000,
                        ms(f64::from(next) * 1000.0 / 30.0 + 5.0),
                    );
                    next += 1;
                }
                let mut got = false;
                loop {
                    let q = if tick_policy {
                        p.pop_for_tick(now, frame, got)
                    } else {
                        p.pop_due(now)
                    };
                    if q.is_none() {
                        break;
                    }
                    got = true;
                }
                shown += usize::from(got);
            }
            shown
        };
        let latest_wins = shown_with(false);
        assert!(
            latest_wins < 290,
            "premise: latest-wins shows {latest_wins}"
        );
        let shown = shown_with(true);
        assert!(shown >= 299, "{shown} of 300 shown");
    }

    #[test]
    fn a_sender_clock_that_runs_fast_does_not_grow_the_delay() {
        // Timestamps step 2970 (33 ms) while frames come every 33.33 ms (1 % fast).
        let mut p = VideoPlayout::new(Duration::from_millis(500));
        for i in 0..900u32 {
            p.push(Bytes::new(), i * 2970, ms(f64::from(i) * 1000.0 / 30.0));
        }
        assert!(p.delay() <= ms(4.0), "{:?}", p.delay());
    }

    #[test]
    fn repeated_timestamps_are_shown_as_they_come() {
        let mut p = VideoPlayout::new(Duration::from_millis(500));
        for i in 0..100u32 {
            p.push(Bytes::new(), 0, ms(f64::from(i) * 33.0));
            assert!(
                p.pop_due(ms(f64::from(i) * 33.0 + 3.0)).is_some(),
                "frame {i}"
            );
        }
    }

    #[test]
    fn a_restart_remaps_and_the_floor_holds_video_back() {
        let mut p = VideoPlayout::new(Duration::from_millis(500));
        p.push(Bytes::new(), 1_000_000, ms(0.0));
        assert_eq!(p.pop_due(ms(3.0)).map(|q| q.rtp_ts), Some(1_000_000));
        p.push(Bytes::new(), 5, ms(33.0));
        assert!(p.pop_due(ms(36.0)).is_some(), "restart shown at once");
        p.set_floor(Duration::from_millis(40));
        p.push(Bytes::new(), 3005, ms(66.0));
        assert!(p.pop_due(ms(70.0)).is_none());
        assert!(p.pop_due(ms(107.0)).is_some());
    }
}
