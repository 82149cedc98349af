//! Audio/video synchronisation of one input through its RTCP sender reports (RFC 3550 §6.4.1,
//! what Chromium's `RtpStreamsSynchronizer` does): each report pairs the sender's wall clock
//! with one track's RTP clock, so a picture and a sound captured at the same moment can be
//! matched even when the sender's video and audio paths take different times (a phone's
//! encoder holding pictures longer than its sound, a sender whose RTP clocks start apart).
//!
//! For each packet the time it arrived minus the time it was captured (on the sender's clock,
//! from the latest report) is its transit; the median transit of the recent video minus that
//! of the recent audio is how much later a picture arrives than the sound captured with it.
//! The unknown offset between the sender's clock and the mixer's cancels in that difference.
//! Without reports for both tracks there is no offset and the mixer pairs audio and video by
//! arrival, as before. Pure: reports, timestamps and arrivals in.

use std::collections::VecDeque;
use std::time::Duration;

/// Transit samples each track keeps (about 2 s of video at 30 fps, 1.3 s of 20 ms audio).
const WINDOW: usize = 64;
/// Samples each track needs before an offset is given.
const MIN_SAMPLES: usize = 16;
/// Offsets larger than this are a sender whose reports do not describe its media (or a
/// clock that jumped): ignored rather than followed.
pub const MAX_OFFSET: Duration = Duration::from_millis(1000);
/// A new report that moves a track's mapping by more than this restarts its samples.
const REMAP_MS: f64 = 50.0;

/// One sender report: the sender's wall clock (Unix ms) and the track's RTP timestamp then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SenderReport {
    /// NTP time of the report, as Unix milliseconds.
    pub unix_ms: f64,
    /// RTP timestamp at that time.
    pub rtp: u32,
}

impl SenderReport {
    /// When (sender's clock, Unix ms) the media stamped `rtp` was captured, at `rate` Hz.
    pub fn capture_ms(&self, rtp: u32, rate: f64) -> f64 {
        let delta = rtp.wrapping_sub(self.rtp) as i32;
        self.unix_ms + f64::from(delta) * 1000.0 / rate
    }
}

#[derive(Debug, Default)]
struct Track {
    report: Option<SenderReport>,
    transits: VecDeque<f64>,
}

impl Track {
    fn report(&mut self, r: SenderReport, rate: f64) {
        if let Some(old) = self.report {
            // Where the old mapping put the new report's RTP time, against where it says.
            if (old.capture_ms(r.rtp, rate) - r.unix_ms).abs() > REMAP_MS {
                self.transits.clear();
            }
        }
        self.report = Some(r);
    }

    fn sample(&mut self, rtp: u32, arrival: Duration, rate: f64) {
        let Some(r) = self.report else { return };
        let transit = arrival.as_secs_f64() * 1000.0 - r.capture_ms(rtp, rate);
        if !transit.is_finite() {
            return;
        }
        if self.transits.len() == WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
    }

    fn median(&self) -> Option<f64> {
        if self.transits.len() < MIN_SAMPLES {
            return None;
        }
        let mut v: Vec<f64> = self.transits.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

/// The A/V offset of one input, from its sender reports.
#[derive(Debug, Default)]
pub struct AvSync {
    video: Track,
    audio: Track,
}

/// Video RTP clock rate.
const VIDEO_RATE: f64 = 90_000.0;
/// Audio (Opus) RTP clock rate.
const AUDIO_RATE: f64 = 48_000.0;

impl AvSync {
    /// A sender report for the video track.
    pub fn video_report(&mut self, r: SenderReport) {
        self.video.report(r, VIDEO_RATE);
    }

    /// A sender report for the audio track.
    pub fn audio_report(&mut self, r: SenderReport) {
        self.audio.report(r, AUDIO_RATE);
    }

    /// A video access unit stamped `rtp` (90 kHz) arrived at `arrival` (mixer's clock).
    pub fn video(&mut self, rtp: u32, arrival: Duration) {
        self.video.sample(rtp, arrival, VIDEO_RATE);
    }

    /// An audio packet stamped `rtp` (48 kHz) arrived at `arrival` (mixer's clock).
    pub fn audio(&mut self, rtp: u32, arrival: Duration) {
        self.audio.sample(rtp, arrival, AUDIO_RATE);
    }

    /// How much later (ms; negative: earlier) a picture arrives than the sound captured with
    /// it, once both tracks have reports and enough packets; `None` before, or when the
    /// reports do not make sense (beyond [`MAX_OFFSET`]).
    pub fn offset_ms(&self) -> Option<f64> {
        let d = self.video.median()? - self.audio.median()?;
        (d.abs() <= MAX_OFFSET.as_secs_f64() * 1000.0).then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    /// A sender whose video is captured with its audio but arrives `video_late` ms later;
    /// its RTP clocks start at arbitrary values, its wall clock far from the mixer's.
    fn feed(s: &mut AvSync, video_late: f64, reports: bool) {
        let (v0, a0) = (4_000_000_000u32, 123_456u32);
        let wall = 1.7e12;
        if reports {
            s.video_report(SenderReport {
                unix_ms: wall,
                rtp: v0,
            });
            s.audio_report(SenderReport {
                unix_ms: wall,
                rtp: a0,
            });
        }
        for k in 0..60u32 {
            let t = f64::from(k) * 1000.0 / 30.0;
            let jitter = f64::from(k % 5) * 3.0;
            s.video(
                v0.wrapping_add(k * 3000),
                ms(500.0 + t + video_late + jitter),
            );
        }
        for n in 0..100u32 {
            let t = f64::from(n) * 20.0;
            let jitter = f64::from(n % 7) * 2.0;
            s.audio(a0.wrapping_add(n * 960), ms(500.0 + t + jitter));
        }
    }

    #[test]
    fn the_offset_is_how_much_later_pictures_arrive_than_their_sound() {
        let mut s = AvSync::default();
        feed(&mut s, 80.0, true);
        let d = s.offset_ms().unwrap();
        assert!((d - 80.0).abs() < 8.0, "{d}");
        let mut s = AvSync::default();
        feed(&mut s, -30.0, true);
        let d = s.offset_ms().unwrap();
        assert!((d + 30.0).abs() < 8.0, "{d}");
    }

    #[test]
    fn no_offset_without_reports_or_with_nonsense_ones() {
        let mut s = AvSync::default();
        feed(&mut s, 80.0, false);
        assert_eq!(s.offset_ms(), None);
        // Reports an hour apart from the media they describe.
        let mut s = AvSync::default();
        s.video_report(SenderReport {
            unix_ms: 0.0,
            rtp: 0,
        });
        s.audio_report(SenderReport {
            unix_ms: 3.6e6,
            rtp: 0,
        });
        for k in 0..MIN_SAMPLES as u32 * 2 {
            s.video(k * 3000, ms(f64::from(k) * 33.0));
            s.audio(k * 960, ms(f64::from(k) * 20.0));
        }
        assert_eq!(s.offset_ms(), None);
    }

    #[test]
    fn a_report_that_moves_the_mapping_restarts_its_track() {
        let mut s = AvSync::default();
        feed(&mut s, 80.0, true);
        // The sender restarted its video clock: the old samples no longer describe it.
        s.video_report(SenderReport {
            unix_ms: 1.7e12,
            rtp: 17,
        });
        assert_eq!(s.offset_ms(), None);
    }

    #[test]
    fn capture_time_wraps_with_the_rtp_clock() {
        let r = SenderReport {
            unix_ms: 1000.0,
            rtp: u32::MAX - 899,
        };
        assert!((r.capture_ms(8_100, 90_000.0) - 1100.0).abs() < 1e-6);
        assert!((r.capture_ms(u32::MAX - 9_899, 90_000.0) - 900.0).abs() < 1e-6);
    }
}
