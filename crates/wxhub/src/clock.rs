//! Time, injected: every refresh decision reads a [`Clock`], so tests share
//! the simulator's virtual clock and jump hours in one call.

use std::sync::Arc;

/// Unix seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// The virtual clock of an in-process simulator (`wxhub dev`, tests).
#[derive(Debug, Clone)]
pub struct SimClock(pub Arc<wx_sim::Sim>);

impl Clock for SimClock {
    fn now(&self) -> i64 {
        self.0.clock.now()
    }
}

/// Beijing-time day number: the platform's quota day.
pub fn beijing_day(now: i64) -> i64 {
    (now + 8 * 3600).div_euclid(86400)
}
