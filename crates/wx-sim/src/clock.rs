//! The virtual clock. Every expiry, quota day and code lifetime reads it, so
//! tests jump hours or days in one call instead of sleeping.
//!
//! § numbers refer to `docs/platform.md`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use crate::world::{ClockConfig, ClockMode};

/// Unix seconds, virtual.
///
/// An atomic rather than a mutex: every simulated API call reads it, and the
/// simulator must never be the bottleneck of a benchmark.
#[derive(Debug)]
pub struct Clock {
    /// Virtual seconds at `anchor` (wall mode) or simply now (manual mode).
    base: AtomicI64,
    anchor: Instant,
    mode: ClockMode,
}

impl Clock {
    /// A clock configured by the world's `[clock]` table.
    pub fn new(config: &ClockConfig) -> Clock {
        let wall_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mode = config.mode.unwrap_or(if config.start.is_some() {
            ClockMode::Manual
        } else {
            ClockMode::Wall
        });
        Clock {
            base: AtomicI64::new(config.start.unwrap_or(wall_now)),
            anchor: Instant::now(),
            mode,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> i64 {
        let base = self.base.load(Ordering::Relaxed);
        match self.mode {
            ClockMode::Manual => base,
            ClockMode::Wall => base + self.anchor.elapsed().as_secs() as i64,
        }
    }

    /// Moves time forward (or back, with a negative value).
    pub fn advance(&self, seconds: i64) -> i64 {
        self.base.fetch_add(seconds, Ordering::Relaxed);
        self.now()
    }

    /// Sets the current virtual time.
    pub fn set(&self, now: i64) -> i64 {
        let delta = now - self.now();
        self.advance(delta)
    }

    /// How the clock moves.
    pub fn mode(&self) -> ClockMode {
        self.mode
    }
}

/// The platform's quota day: midnight to midnight, Beijing time (§12).
pub fn beijing_day(now: i64) -> i64 {
    (now + 8 * 3600).div_euclid(86400)
}

/// The minute used by per-minute limits.
pub fn minute(now: i64) -> i64 {
    now.div_euclid(60)
}

/// Year and month (Beijing time) as `year * 12 + month0`, for the monthly
/// clear_quota budget.
pub fn beijing_month(now: i64) -> i64 {
    let (y, m, _) = civil_from_days(beijing_day(now));
    y * 12 + (m as i64 - 1)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day):
/// Howard Hinnant's well-known algorithm, so no date crate is needed.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2023-08-23 (the rid example in the spec, §1.1)
        assert_eq!(civil_from_days(0x64e5d2d0 / 86400), (2023, 8, 23));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn beijing_day_turns_at_16_utc() {
        // 2024-01-01 15:59:59 UTC is 23:59:59 in Beijing.
        let t = 1_704_124_799;
        assert_eq!(beijing_day(t) + 1, beijing_day(t + 1));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::new(&ClockConfig {
            start: Some(1_000),
            mode: None,
        });
        assert_eq!(c.now(), 1_000);
        assert_eq!(c.advance(7200), 8_200);
        assert_eq!(c.set(50), 50);
    }
}
