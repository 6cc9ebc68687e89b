//! What the status page, `/v1/apps`, `/readyz` and the gauges show of each
//! account: read from memory, with today's counts from the store when asked.

use std::collections::BTreeMap;

use super::Credentials;
use super::model::{Account, Problem, Severity, Slot};
use crate::clock::beijing_day;

/// A snapshot of one credential.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotStatus {
    /// `access_token`, `jsapi_ticket`, `wx_card_ticket`.
    pub kind: &'static str,
    /// Whether a valid value is held.
    pub valid: bool,
    /// Seconds since it was fetched.
    pub age_secs: Option<i64>,
    /// Seconds until it expires.
    pub remaining_secs: Option<i64>,
    /// Last successful refresh (Unix seconds).
    pub last_refresh_at: Option<i64>,
    /// Next planned refresh (Unix seconds).
    pub next_refresh_at: i64,
    /// Consecutive failures.
    pub failures: u32,
    /// What needs attention.
    pub problem: Option<Problem>,
}

/// A snapshot of one account.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountStatus {
    /// The AppID.
    pub appid: String,
    /// Display name.
    pub name: String,
    /// stable or classic.
    pub token_mode: &'static str,
    /// Token and tickets.
    pub slots: Vec<SlotStatus>,
    /// Upstream token fetches today (Beijing day).
    pub fetches_today: i64,
    /// Forced stable refreshes today (the platform allows 20).
    pub forced_today: i64,
    /// The worst problem of its slots.
    pub problem: Option<Problem>,
    /// Shared mode: whether this instance holds the account's refresh lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_owner: Option<bool>,
}

impl Credentials {
    /// Every account's state, with today's fetch counts from the store.
    pub async fn status(&self) -> Vec<AccountStatus> {
        let day = beijing_day(self.clock.now());
        let mut counts = BTreeMap::new();
        for account in self.accounts() {
            let appid = account.appid();
            let fetches = self
                .store
                .counter(appid, "fetches:access_token", day)
                .await
                .unwrap_or(0);
            let forced = self.store.counter(appid, "forced", day).await.unwrap_or(0);
            counts.insert(appid.to_string(), (fetches, forced));
        }
        self.status_with(&counts)
    }

    /// Every account's state, from memory only: `/readyz` must answer at
    /// once, even while the store does not.
    pub fn status_now(&self) -> Vec<AccountStatus> {
        self.status_with(&BTreeMap::new())
    }

    fn status_with(&self, counts: &BTreeMap<String, (i64, i64)>) -> Vec<AccountStatus> {
        let now = self.clock.now();
        self.accounts()
            .iter()
            .map(|a| {
                let appid = a.appid();
                let slots: Vec<SlotStatus> = a.slots().map(|s| slot_status(s, now)).collect();
                let problem = slots
                    .iter()
                    .filter_map(|s| s.problem.clone())
                    .max_by_key(|p| p.severity == Severity::Unhealthy);
                let (fetches_today, forced_today) = counts.get(appid).copied().unwrap_or((0, 0));
                AccountStatus {
                    appid: appid.to_string(),
                    name: a.cfg.name.clone(),
                    token_mode: a.cfg.token_mode.as_str(),
                    fetches_today,
                    forced_today,
                    refresh_owner: self.shared.as_ref().map(|sh| sh.holding(appid).is_some()),
                    slots,
                    problem,
                }
            })
            .collect()
    }

    /// Updates the remaining-seconds gauges (at scrape time).
    pub fn update_gauges(&self) {
        let now = self.clock.now();
        for account in self.accounts() {
            for slot in account.slots() {
                self.gauge(&account, slot, now);
            }
        }
    }

    fn gauge(&self, account: &Account, slot: &Slot, now: i64) {
        let remaining = slot
            .lock()
            .current
            .as_ref()
            .map_or(0, |c| (c.expires_at - now).max(0));
        self.metrics.set(
            "wxhub_token_seconds_remaining",
            &[("appid", account.appid()), ("kind", slot.kind.label())],
            remaining as f64,
        );
    }
}

fn slot_status(slot: &Slot, now: i64) -> SlotStatus {
    let st = slot.lock();
    let cur = st.current.as_ref();
    SlotStatus {
        kind: slot.kind.label(),
        valid: st.valid(now).is_some(),
        age_secs: cur.map(|c| now - c.fetched_at),
        remaining_secs: cur.map(|c| (c.expires_at - now).max(0)),
        last_refresh_at: st.last_refresh_at,
        next_refresh_at: st.next_refresh_at,
        failures: st.failures,
        problem: st.problem.clone(),
    }
}
