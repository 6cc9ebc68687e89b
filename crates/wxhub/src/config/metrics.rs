//! `[metrics]`: how much `/metrics` says per account.

use serde::Deserialize;

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Up to this many accounts, every account has its own series (health,
    /// time left, refreshes by result); above it, counters are aggregates
    /// and per-account gauges cover only the accounts that need attention,
    /// so a scrape stays small however many accounts there are (a
    /// Prometheus server takes a few thousand series per target well, not
    /// hundreds of thousands). Per-account detail stays on `/v1/apps`.
    pub per_account_limit: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            per_account_limit: 1000,
        }
    }
}
