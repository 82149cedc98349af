//! A publisher's clock as its RTCP sender reports give it (RFC 3550 §6.4.1), a pure core: each
//! report pairs the sender's wall clock (NTP) with its RTP clock; with the latest pair, a time
//! on the sender's own clock (e.g. when a host pressed a cue button, `performance.timeOrigin +
//! performance.now()`) maps to the RTP timestamp of the picture captured then. No clock of
//! the server's needs to agree with the sender's.

/// NTP time (RFC 3550: seconds since 1900 in 32.32 fixed point) as Unix milliseconds.
pub fn ntp_to_unix_ms(ntp: u64) -> f64 {
    const UNIX_EPOCH_IN_NTP_S: f64 = 2_208_988_800.0;
    let secs = (ntp >> 32) as f64;
    let frac = (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
    (secs - UNIX_EPOCH_IN_NTP_S + frac) * 1000.0
}

/// The latest (wall clock, RTP) pair of one track.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SenderClock {
    /// Last sender report: (NTP time as Unix ms, RTP timestamp).
    last: Option<(f64, u32)>,
}

impl SenderClock {
    /// A sender report arrived: NTP timestamp `ntp` was RTP timestamp `rtp`.
    pub fn report(&mut self, ntp: u64, rtp: u32) {
        self.last = Some((ntp_to_unix_ms(ntp), rtp));
    }

    /// The latest report: (NTP time as Unix ms, RTP timestamp).
    pub fn last(&self) -> Option<(f64, u32)> {
        self.last
    }

    /// The RTP timestamp (at `clock_rate` Hz) the track had at `unix_ms` on the sender's own
    /// clock: `None` before the first report, or for a time so far away (about 6.6 hours at
    /// 90 kHz) that the RTP clock has wrapped in between.
    pub fn rtp_at(&self, unix_ms: f64, clock_rate: f64) -> Option<u32> {
        let (ntp_ms, rtp) = self.last?;
        let delta = ((unix_ms - ntp_ms) * clock_rate / 1000.0).round();
        if !delta.is_finite() || delta.abs() > f64::from(i32::MAX) {
            return None;
        }
        Some(rtp.wrapping_add_signed(delta as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_conversion() {
        // 2024-01-01T00:00:00Z = 1704067200 Unix = 3913056000 NTP seconds; .5 s fraction.
        let ntp = (3_913_056_000u64 << 32) | 0x8000_0000;
        assert!((ntp_to_unix_ms(ntp) - 1_704_067_200_500.0).abs() < 0.01);
    }

    #[test]
    fn capture_times_map_to_rtp_timestamps() {
        let ntp = (3_913_056_000u64 << 32) | 0x8000_0000; // Unix 1704067200500 ms
        let t = 1_704_067_200_500.0;
        let mut c = SenderClock::default();
        assert_eq!(c.rtp_at(t, 90_000.0), None, "no report yet");
        c.report(ntp, 1_000_000);
        // (time from the report in ms, clock rate, expected RTP timestamp)
        let cases: [(f64, f64, Option<u32>); 7] = [
            (0.0, 90_000.0, Some(1_000_000)),
            (33.4, 90_000.0, Some(1_003_006)),
            (-100.0, 90_000.0, Some(991_000)),
            (20.0, 48_000.0, Some(1_000_960)),
            (
                1_000.0 * 3600.0,
                90_000.0,
                Some(1_000_000u32.wrapping_add(324_000_000)),
            ),
            (1_000.0 * 3600.0 * 7.0, 90_000.0, None),
            (f64::NAN, 90_000.0, None),
        ];
        for (dt, rate, want) in cases {
            assert_eq!(c.rtp_at(t + dt, rate), want, "{dt} ms at {rate} Hz");
        }
        // A report near the wrap: the mapping wraps with it.
        c.report(ntp, u32::MAX - 10);
        assert_eq!(c.rtp_at(t + 1.0, 90_000.0), Some(79));
    }
}
