//! What callers may make the hub spend: refreshes triggered by a caller's
//! report (invalidate, or a proxied call answered with a token error) rather
//! than by the schedule.
//!
//! Each account and credential has one budget: a minimum interval between
//! such refreshes, a ceiling per hour and a ceiling per Beijing day (the
//! platform's quota day). The decision is a pure function of the stored
//! usage, so both stores apply the same rule (SQLite in a transaction, Redis
//! in a script that mirrors [`decide`]; the store tests hold both to it).

use crate::clock::beijing_day;

/// The limits of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Seconds between two caller-triggered refreshes, at least.
    pub min_interval: i64,
    /// At most this many an hour.
    pub per_hour: i64,
    /// At most this many a Beijing day.
    pub per_day: i64,
}

/// How much of a budget has been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// When the last one was taken (Unix seconds); `None` if never.
    pub last_at: Option<i64>,
    /// The hour (`now / 3600`) `hour_count` counts.
    pub hour: i64,
    /// Taken in `hour`.
    pub hour_count: i64,
    /// The Beijing day `day_count` counts.
    pub day: i64,
    /// Taken in `day`.
    pub day_count: i64,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Too soon after the last one.
    Interval,
    /// The hour's ceiling.
    Hour,
    /// The day's ceiling.
    Day,
}

impl Exhausted {
    /// For logs, metrics and answers.
    pub fn label(self) -> &'static str {
        match self {
            Exhausted::Interval => "min_interval",
            Exhausted::Hour => "per_hour",
            Exhausted::Day => "per_day",
        }
    }
}

/// A budget's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; the usage to store.
    Allowed(Usage),
    /// Not now: which limit, and in how many seconds it would pass.
    Refused {
        /// The limit that refused.
        limit: Exhausted,
        /// Seconds until it would allow one.
        retry_after: i64,
    },
}

/// The hour number of `now`.
pub fn hour_of(now: i64) -> i64 {
    now.div_euclid(3600)
}

/// Whether one more may be taken at `now`, and the usage after taking it.
pub fn decide(used: Usage, budget: Budget, now: i64) -> Decision {
    let hour = hour_of(now);
    let day = beijing_day(now);
    let hour_count = if used.hour == hour {
        used.hour_count
    } else {
        0
    };
    let day_count = if used.day == day { used.day_count } else { 0 };
    if day_count >= budget.per_day {
        // The next Beijing day starts at 16:00 UTC.
        let next_day = (day + 1) * 86400 - 8 * 3600;
        return Decision::Refused {
            limit: Exhausted::Day,
            retry_after: (next_day - now).max(1),
        };
    }
    if hour_count >= budget.per_hour {
        return Decision::Refused {
            limit: Exhausted::Hour,
            retry_after: ((hour + 1) * 3600 - now).max(1),
        };
    }
    if let Some(last) = used.last_at
        && now < last + budget.min_interval
    {
        return Decision::Refused {
            limit: Exhausted::Interval,
            retry_after: (last + budget.min_interval - now).max(1),
        };
    }
    Decision::Allowed(Usage {
        last_at: Some(now),
        hour,
        hour_count: hour_count + 1,
        day,
        day_count: day_count + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget {
        min_interval: 60,
        per_hour: 3,
        per_day: 5,
    };
    // 2023-11-14 22:13:20 UTC = 06:13:20 Beijing.
    const T: i64 = 1_700_000_000;

    fn take(used: &mut Usage, now: i64) -> Decision {
        let d = decide(*used, B, now);
        if let Decision::Allowed(u) = d {
            *used = u;
        }
        d
    }

    #[test]
    fn the_interval_the_hour_and_the_day_each_refuse_in_turn() {
        let mut u = Usage::default();
        assert!(matches!(take(&mut u, T), Decision::Allowed(_)));
        assert_eq!(
            take(&mut u, T + 59),
            Decision::Refused {
                limit: Exhausted::Interval,
                retry_after: 1
            }
        );
        assert!(matches!(take(&mut u, T + 60), Decision::Allowed(_)));
        // T is 20 s past an hour boundary + 13 min: three fit in the hour.
        let next_hour = (hour_of(T) + 1) * 3600;
        assert!(matches!(take(&mut u, T + 120), Decision::Allowed(_)));
        assert_eq!(
            take(&mut u, T + 180),
            Decision::Refused {
                limit: Exhausted::Hour,
                retry_after: next_hour - (T + 180)
            }
        );
        assert!(matches!(take(&mut u, next_hour), Decision::Allowed(_)));
        assert!(matches!(take(&mut u, next_hour + 60), Decision::Allowed(_)));
        let d = take(&mut u, next_hour + 120);
        let Decision::Refused {
            limit: Exhausted::Day,
            retry_after,
        } = d
        else {
            panic!("{d:?}");
        };
        // The next Beijing day: 00:00 UTC+8.
        let next_day = now_day_start(T) + 86400;
        assert_eq!(retry_after, next_day - (next_hour + 120));
        assert!(matches!(take(&mut u, next_day), Decision::Allowed(_)));
        assert_eq!(u.day_count, 1, "a new day starts from zero");
    }

    fn now_day_start(now: i64) -> i64 {
        beijing_day(now) * 86400 - 8 * 3600
    }

    #[test]
    fn a_zero_budget_refuses_everything() {
        let zero = Budget {
            min_interval: 0,
            per_hour: 0,
            per_day: 0,
        };
        assert!(matches!(
            decide(Usage::default(), zero, T),
            Decision::Refused {
                limit: Exhausted::Day,
                ..
            }
        ));
    }
}
