//! `[limits]` and `clients[].limits`: how fast callers may go.

use serde::Deserialize;

use super::ConfigError;
use crate::limits::Rate;

/// A rate as written: `{ per_second = N, burst = B }` or `{ per_minute = N, burst = B }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: Option<u32>,
    per_minute: Option<u32>,
    burst: u32,
}

impl RawRate {
    fn resolve(&self, key: &str) -> Result<Rate, ConfigError> {
        let per_minute = match (self.per_second, self.per_minute) {
            (Some(s), None) => u64::from(s) * 60,
            (None, Some(m)) => u64::from(m),
            _ => {
                return Err(ConfigError::new(
                    key,
                    "give exactly one of per_second or per_minute",
                ));
            }
        };
        if per_minute == 0 || self.burst == 0 {
            return Err(ConfigError::new(key, "rate and burst must be positive"));
        }
        Ok(Rate::per_minute(per_minute, self.burst))
    }
}

/// A rate that may be absent, resolved against its default.
fn rate_or(raw: Option<RawRate>, key: &str, default: Rate) -> Result<Rate, ConfigError> {
    raw.map_or(Ok(default), |r| r.resolve(key))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientLimits {
    proxy: Option<RawRate>,
    invalidate: Option<RawRate>,
}

impl RawClientLimits {
    pub(crate) fn validate(&self, at: &str, d: &Limits) -> Result<ClientLimits, ConfigError> {
        Ok(ClientLimits {
            proxy: rate_or(self.proxy, &format!("{at}.proxy"), d.proxy)?,
            invalidate: rate_or(self.invalidate, &format!("{at}.invalidate"), d.invalidate)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    proxy: Option<RawRate>,
    invalidate: Option<RawRate>,
    anonymous: Option<RawRate>,
}

impl RawLimits {
    pub(crate) fn validate(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        Ok(Limits {
            proxy: rate_or(self.proxy, "limits.proxy", d.proxy)?,
            invalidate: rate_or(self.invalidate, "limits.invalidate", d.invalidate)?,
            anonymous: rate_or(self.anonymous, "limits.anonymous", d.anonymous)?,
        })
    }
}

/// `[limits]`: the defaults every client gets, and the per-IP limit of the
/// anonymous web-authorization routes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Proxied calls per client key.
    pub proxy: Rate,
    /// Invalidate reports per client key (tokens and tickets together).
    pub invalidate: Rate,
    /// Requests to `/oauth/*` per client IP.
    pub anonymous: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Far above what one business server sends through a proxy to
            // a platform whose own per-API quotas are per day.
            proxy: Rate::per_minute(12_000, 400),
            // A fleet of workers that all saw one rotation reports once
            // each; a loop that reports without end is what this stops.
            invalidate: Rate::per_minute(60, 60),
            // A sign-in is two or three of these; an office behind one NAT
            // signs many people in at nine o'clock.
            anonymous: Rate::per_minute(120, 60),
        }
    }
}

/// A client's rate limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Proxied calls.
    pub proxy: Rate,
    /// Invalidate reports.
    pub invalidate: Rate,
}

impl Default for ClientLimits {
    fn default() -> Self {
        let d = Limits::default();
        ClientLimits {
            proxy: d.proxy,
            invalidate: d.invalidate,
        }
    }
}
