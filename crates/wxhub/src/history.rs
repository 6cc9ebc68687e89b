//! The refresh history: one entry per upstream fetch of an account's token
//! or ticket (when, why, the outcome, the platform's error code), kept in
//! the store for `refresh.history_days` and at most
//! `refresh.history_max_per_account` entries an account. An entry holds no
//! value: not the token, not a hash of it, not the secret.

use serde::{Deserialize, Serialize};

/// Why a fetch happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The refresher found it due.
    Schedule,
    /// A caller found no valid value (the first fetch, or after expiry).
    Missing,
    /// A caller reported the value rejected (`client` names it when known).
    Report,
    /// This instance took the account's refresh over (shared mode).
    Takeover,
    /// The account's configuration changed (admin API).
    Config,
    /// Another instance's thrown-away fetch doomed the value (shared mode,
    /// classic tokens).
    Doomed,
}

impl Reason {
    /// The reason in words, for the console.
    pub fn words(self) -> &'static str {
        match self {
            Reason::Schedule => "scheduled refresh",
            Reason::Missing => "no valid value when a caller asked",
            Reason::Report => "a caller's report",
            Reason::Takeover => "takeover by this instance",
            Reason::Config => "configuration change",
            Reason::Doomed => "doomed by another instance's fetch",
        }
    }
}

/// One fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it finished (Unix seconds, the hub's clock).
    pub at: i64,
    /// `access_token`, `jsapi_ticket`, `wx_card_ticket`.
    pub kind: String,
    /// Why.
    pub reason: Reason,
    /// The client whose report caused it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The platform's error code, on failure when it answered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    /// What went wrong, in words (never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds the fetched value lives, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// Shared mode: the instance that fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The most entries one request returns.
pub const MAX_READ: usize = 1000;

/// Successful access-token fetches per Beijing day, for the `days` days
/// ending with `today`: `(day, count)`, oldest first.
pub fn token_fetches_per_day(entries: &[Entry], today: i64, days: i64) -> Vec<(i64, i64)> {
    let first = today - days + 1;
    let mut out: Vec<(i64, i64)> = (first..=today).map(|d| (d, 0)).collect();
    for e in entries {
        if e.kind != "access_token" || e.outcome != "ok" {
            continue;
        }
        let d = crate::clock::beijing_day(e.at);
        if d >= first && d <= today {
            out[(d - first) as usize].1 += 1;
        }
    }
    out
}
