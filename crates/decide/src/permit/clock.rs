//! Clock-rate drift: the one assumption about clocks the permit protocol
//! makes. Every monotonic clock and every watchdog timer runs at a rate
//! within `1 ± ρ` of real time; no clock is ever compared with another, and
//! no wall clock is read.

use std::time::Duration;

/// The bound ρ on every clock's rate error, in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drift {
    ppm: u32,
}

impl Drift {
    /// The largest bound accepted: 1 % (real clocks are within 100 ppm;
    /// the default leaves ten times that).
    pub const MAX_PPM: u32 = 10_000;

    /// The default bound: 1000 ppm.
    pub const DEFAULT: Drift = Drift { ppm: 1000 };

    pub fn from_ppm(ppm: u32) -> Option<Drift> {
        (ppm <= Self::MAX_PPM).then_some(Drift { ppm })
    }

    pub fn ppm(self) -> u32 {
        self.ppm
    }

    /// `d · s`, `s = (1 + ρ)/(1 − ρ)`, rounded up: the longest that a
    /// duration `d` measured by one clock can measure on another.
    pub fn stretch(self, d: Duration) -> Duration {
        let n = d.as_nanos();
        let (num, den) = (
            1_000_000u128 + u128::from(self.ppm),
            1_000_000u128 - u128::from(self.ppm),
        );
        nanos(n.saturating_mul(num).div_ceil(den))
    }

    /// `d · (s − 1)`, rounded up: how much [`Drift::stretch`] adds.
    pub fn excess(self, d: Duration) -> Duration {
        self.stretch(d).saturating_sub(d)
    }
}

impl Default for Drift {
    fn default() -> Self {
        Drift::DEFAULT
    }
}

fn nanos(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (n % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_covers_one_fast_and_one_slow_clock() {
        let d = Drift::from_ppm(1000).unwrap();
        // 10 s on a clock running 0.1 % slow is 10.01001… s of real time,
        // which a clock running 0.1 % fast reads as 10.02002… s.
        let real = 10.0 / (1.0 - 1e-3);
        let fast = real * (1.0 + 1e-3);
        let got = d.stretch(Duration::from_secs(10)).as_secs_f64();
        assert!(got >= fast && got < fast + 1e-6, "{got} vs {fast}");
        assert_eq!(
            Drift::from_ppm(0).unwrap().stretch(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert!(d.excess(Duration::from_secs(10)) > Duration::from_millis(20));
        assert!(d.excess(Duration::from_secs(10)) < Duration::from_millis(21));
    }

    #[test]
    fn a_drift_bound_above_one_percent_is_refused() {
        assert_eq!(Drift::from_ppm(250).map(Drift::ppm), Some(250));
        assert_eq!(Drift::default().ppm(), 1000);
        assert!(Drift::from_ppm(10_000).is_some());
        assert!(Drift::from_ppm(10_001).is_none());
        assert_eq!(
            Drift::DEFAULT.stretch(Duration::MAX),
            Drift::DEFAULT.stretch(Duration::MAX)
        );
    }
}
