//! `[upstream]` and `[refresh]`: where the platform is, and when tokens are
//! refreshed (docs/lifecycle.md).
//!
//! Timers are `Duration`s; lifecycle spans (margins, backoff, windows) stay
//! whole seconds, because they are added to Unix timestamps read from the
//! hub's clock, which may be virtual.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[upstream]`: where the platform is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `https://api.weixin.qq.com`, or a simulator.
    pub api_base: String,
    /// `https://open.weixin.qq.com`, or a simulator.
    pub open_base: String,
    /// Total time one upstream call may take (`timeout_ms`).
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// `https://mp.weixin.qq.com`, or a simulator: where a third-party
    /// platform's authorization page is.
    pub mp_base: String,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            api_base: "https://api.weixin.qq.com".into(),
            open_base: "https://open.weixin.qq.com".into(),
            timeout: Duration::from_secs(10),
            mp_base: wx_api::endpoint::component::DEFAULT_MP_BASE.into(),
        }
    }
}

impl Upstream {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("upstream.api_base", &self.api_base),
            ("upstream.open_base", &self.open_base),
            ("upstream.mp_base", &self.mp_base),
        ] {
            url::Url::parse(url).map_err(|e| ConfigError::new(key, e.to_string()))?;
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("upstream.timeout_ms", "must be positive"));
        }
        Ok(())
    }
}

/// `[refresh]`: when and how tokens are refreshed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSettings {
    /// Classic mode refreshes this long before expiry (capped at half the
    /// lifetime). The default, 240 s, lands the refresh inside the old
    /// token's last 300 s, so the old token simply lives to its own expiry
    /// (docs/lifecycle.md, "The classic margin").
    pub classic_margin_secs: i64,
    /// Stable mode refreshes when this much is left; must be under 300, where
    /// the platform rotates.
    pub stable_refresh_before_secs: i64,
    /// Scheduled refreshes get up to this much random spread, capped at half
    /// the classic margin, at what is left of the stable rotation window, and
    /// at 5 s after a ticket's expiry.
    pub jitter_secs: i64,
    /// Safety subtracted from the `expires_at` told to clients in classic
    /// mode, where a token dies 300 s after the next fetch.
    pub client_safety_secs: i64,
    /// The refresher never sleeps longer than this (`tick_ms`), so a jump
    /// of a virtual clock is noticed.
    #[serde(rename = "tick_ms", with = "millis")]
    pub tick: Duration,
    /// How long a request with no valid token waits for a fetch
    /// (`wait_for_token_ms`).
    #[serde(rename = "wait_for_token_ms", with = "millis")]
    pub wait_for_token: Duration,
    /// First retry delay after an upstream failure, seconds.
    pub backoff_initial_secs: i64,
    /// Longest retry delay, seconds.
    pub backoff_max_secs: i64,
    /// Retry delay while an account is misconfigured (40013, 40125, 40164, ...).
    pub config_error_retry_secs: i64,
    /// Refreshes running at once across accounts.
    pub max_concurrent: usize,
    /// Upstream fetches started per second at most, across accounts (per
    /// instance). With N accounts due together the last is fetched N / this
    /// seconds late; the refresh margin (240 s) must cover that, so the
    /// default, 500, serves up to 120,000 accounts (docs/operations.md).
    pub max_fetches_per_second: u32,
    /// Run the background refresher. Off only where something else drives
    /// refreshes (tests on a virtual clock call `Credentials::run_due`).
    pub background: bool,
    /// A reported token is confirmed with the platform before anything is
    /// refreshed; reports of the same value within this many seconds share
    /// one confirmation.
    pub confirm_window_secs: i64,
    /// Refreshes triggered by callers (reports, the proxy), per account and
    /// credential: at least this long apart…
    pub caller_min_interval_secs: i64,
    /// …at most this many an hour…
    pub caller_max_per_hour: i64,
    /// …and this many a Beijing day (classic token fetches, ticket fetches).
    /// The default, 100, is half a test account's daily token quota (200).
    pub caller_max_per_day: i64,
    /// Forced stable-token refreshes a caller's reports may cause per
    /// Beijing day; the platform allows 20 for everything, the default 10
    /// keeps half of them for the scheduled path and for people.
    pub caller_max_forced_per_day: i64,
    /// Days of refresh history kept in the store (the console's account
    /// page and `GET /v1/apps/{appid}/history`); 1 to 400.
    pub history_days: i64,
    /// Refresh-history entries kept per account at most, whatever their age.
    pub history_max_per_account: usize,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            classic_margin_secs: 240,
            stable_refresh_before_secs: 240,
            jitter_secs: 30,
            client_safety_secs: 30,
            tick: Duration::from_secs(1),
            wait_for_token: Duration::from_secs(5),
            backoff_initial_secs: 2,
            backoff_max_secs: 300,
            config_error_retry_secs: 300,
            max_concurrent: 64,
            max_fetches_per_second: 500,
            background: true,
            confirm_window_secs: 30,
            caller_min_interval_secs: 60,
            caller_max_per_hour: 6,
            caller_max_per_day: 100,
            caller_max_forced_per_day: 10,
            history_days: 30,
            history_max_per_account: 2000,
        }
    }
}

impl RefreshSettings {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(30..300).contains(&self.stable_refresh_before_secs) {
            return Err(ConfigError::new(
                "refresh.stable_refresh_before_secs",
                "must be between 30 and 299: the platform rotates stable tokens only in their last 300 s",
            ));
        }
        for (key, v) in [
            ("refresh.classic_margin_secs", self.classic_margin_secs),
            ("refresh.backoff_initial_secs", self.backoff_initial_secs),
            ("refresh.backoff_max_secs", self.backoff_max_secs),
            (
                "refresh.config_error_retry_secs",
                self.config_error_retry_secs,
            ),
            ("refresh.confirm_window_secs", self.confirm_window_secs),
        ] {
            if v <= 0 {
                return Err(ConfigError::new(key, "must be positive"));
            }
        }
        for (key, v) in [
            ("refresh.jitter_secs", self.jitter_secs),
            ("refresh.client_safety_secs", self.client_safety_secs),
            (
                "refresh.caller_min_interval_secs",
                self.caller_min_interval_secs,
            ),
            ("refresh.caller_max_per_hour", self.caller_max_per_hour),
            ("refresh.caller_max_per_day", self.caller_max_per_day),
        ] {
            if v < 0 {
                return Err(ConfigError::new(key, "must not be negative"));
            }
        }
        if !(0..=20).contains(&self.caller_max_forced_per_day) {
            return Err(ConfigError::new(
                "refresh.caller_max_forced_per_day",
                "must be between 0 and 20: the platform allows 20 forced refreshes a day in all",
            ));
        }
        if !(1..=400).contains(&self.history_days) {
            return Err(ConfigError::new(
                "refresh.history_days",
                "must be between 1 and 400",
            ));
        }
        for (key, zero) in [
            (
                "refresh.history_max_per_account",
                self.history_max_per_account == 0,
            ),
            ("refresh.tick_ms", self.tick.is_zero()),
            ("refresh.wait_for_token_ms", self.wait_for_token.is_zero()),
            ("refresh.max_concurrent", self.max_concurrent == 0),
            (
                "refresh.max_fetches_per_second",
                self.max_fetches_per_second == 0,
            ),
        ] {
            if zero {
                return Err(ConfigError::new(key, "must be positive"));
            }
        }
        Ok(())
    }
}

/// A `Duration` written as whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
