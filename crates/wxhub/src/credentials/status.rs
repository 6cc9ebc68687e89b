//! What the console, `/v1/apps`, `/readyz` and the gauges show of each
//! account: read from memory, with today's counts from the store when asked.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Credentials;
use super::model::{Account, CredKind, Problem, Severity, Slot};
use crate::clock::beijing_day;
use crate::metrics;

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
    /// The platform's error code of the last failed fetch, while it lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    /// When the current value was fetched (Unix seconds).
    #[serde(skip)]
    pub fetched_at: Option<i64>,
    /// When the current value expires (Unix seconds).
    #[serde(skip)]
    pub expires_at: Option<i64>,
    /// The token endpoint's daily limit, when a confirmation read it.
    #[serde(skip)]
    pub daily_limit: Option<i64>,
}

/// A page of the console's overview; see [`Credentials::console_page`].
#[derive(Debug, Clone)]
pub struct ConsolePage {
    /// Accounts that match the search.
    pub total: usize,
    /// Of those, unhealthy.
    pub unhealthy: usize,
    /// Of those, degraded.
    pub degraded: usize,
    /// The page, the unhealthy first, then the degraded, then the rest,
    /// each in AppID order.
    pub apps: Vec<AccountStatus>,
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
    /// Whether the hub keeps its credentials (not a website app).
    #[serde(skip)]
    pub managed: bool,
    /// `official`, `website`, or `component` (a third-party platform, whose
    /// token slot holds the component_access_token).
    pub kind: &'static str,
    /// The third-party platform the account is authorized to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// When its administrator revoked the platform's authorization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// A third-party platform's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformStatus>,
}

/// What status shows of a third-party platform.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformStatus {
    /// `CreateTime` of the newest verify ticket, if one was ever received.
    pub ticket_created_at: Option<i64>,
    /// Its age in seconds.
    pub ticket_age_secs: Option<i64>,
    /// A warning when the newest ticket is older than 30 minutes (pushes
    /// arrive every 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_warning: Option<String>,
    /// Accounts authorized to it now.
    pub authorizers: usize,
}

impl Credentials {
    /// Every account's state, with today's fetch counts from the store.
    pub async fn status(&self) -> Vec<AccountStatus> {
        self.list(&ListQuery::default()).await.1
    }

    /// A page of accounts in AppID order, those matching `q`: the total
    /// that match, and the page, with today's fetch counts from the store
    /// (read for the page only).
    pub async fn list(&self, q: &ListQuery) -> (usize, Vec<AccountStatus>) {
        let now = self.clock.now();
        let matching: Vec<Arc<Account>> = self
            .accounts()
            .into_iter()
            .filter(|a| q.matches(a, now))
            .collect();
        let total = matching.len();
        let page: Vec<Arc<Account>> = matching.into_iter().skip(q.offset).take(q.limit).collect();
        let counts = self.today_counts(&page, now).await;
        let out = self.with_platforms(self.status_with(&page, &counts)).await;
        (total, out)
    }

    /// Adds their own figures to the third-party platforms among `out`.
    async fn with_platforms(&self, mut out: Vec<AccountStatus>) -> Vec<AccountStatus> {
        for st in &mut out {
            if st.kind == "component" {
                st.platform = Some(self.platform_status(&st.appid).await);
            }
        }
        out
    }

    /// A third-party platform's ticket and authorizers.
    pub async fn platform_status(&self, component: &str) -> PlatformStatus {
        let age = self.ticket_age(component).await;
        PlatformStatus {
            ticket_created_at: age.map(|a| a.created_at),
            ticket_age_secs: age.map(|a| a.age),
            ticket_warning: match age {
                None => Some("no component_verify_ticket received yet: the component token waits for the platform's push to /component/{appid}/events".replace("{appid}", component)),
                Some(a) if a.age > 30 * 60 => Some(format!(
                    "the newest component_verify_ticket is {} minutes old (the platform pushes every 10): check the authorization-event URL; it is usable for 12 hours",
                    a.age / 60
                )),
                Some(_) => None,
            },
            authorizers: self.authorizer_count(component),
        }
    }

    /// Today's token fetches and forced refreshes of each account of a
    /// page, from the store (read for the page only).
    async fn today_counts(&self, page: &[Arc<Account>], now: i64) -> BTreeMap<String, (i64, i64)> {
        let day = beijing_day(now);
        let mut counts = BTreeMap::new();
        for account in page {
            let appid = account.appid();
            let fetches = self
                .store
                .counter(appid, "fetches:access_token", day)
                .await
                .unwrap_or(0);
            let forced = self.store.counter(appid, "forced", day).await.unwrap_or(0);
            counts.insert(appid.to_string(), (fetches, forced));
        }
        counts
    }

    /// The console's overview: the accounts whose AppID or name contains
    /// `q` (any case), the unhealthy first, then the degraded, then the
    /// rest, each in AppID order; the page at `offset`, with today's fetch
    /// counts from the store (read for the page only).
    pub async fn console_page(&self, q: &str, offset: usize, limit: usize) -> ConsolePage {
        let now = self.clock.now();
        let q = q.trim().to_lowercase();
        let mut ranked: Vec<(u8, Arc<Account>)> = self
            .read_accounts()
            .values()
            .filter(|a| {
                q.is_empty()
                    || a.appid().to_lowercase().contains(&q)
                    || a.cfg.name.to_lowercase().contains(&q)
            })
            .map(|a| (rank(a, now), a.clone()))
            .collect();
        // Stable: AppID order within each rank.
        ranked.sort_by_key(|(r, _)| *r);
        let unhealthy = ranked.iter().filter(|(r, _)| *r == 0).count();
        let degraded = ranked.iter().filter(|(r, _)| *r == 1).count();
        let total = ranked.len();
        let page: Vec<Arc<Account>> = ranked
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, a)| a)
            .collect();
        let counts = self.today_counts(&page, now).await;
        ConsolePage {
            total,
            unhealthy,
            degraded,
            apps: self.with_platforms(self.status_with(&page, &counts)).await,
        }
    }

    /// One account's state, with today's fetch counts from the store.
    pub async fn status_of(&self, appid: &str) -> Option<AccountStatus> {
        let account = self.account(appid)?;
        let day = beijing_day(self.clock.now());
        let fetches = self
            .store
            .counter(appid, "fetches:access_token", day)
            .await
            .unwrap_or(0);
        let forced = self.store.counter(appid, "forced", day).await.unwrap_or(0);
        let counts = BTreeMap::from([(appid.to_string(), (fetches, forced))]);
        self.with_platforms(self.status_with(&[account], &counts))
            .await
            .pop()
    }

    /// Whether this instance can serve, from memory only (`/readyz` must
    /// answer at once, even while the store does not): the accounts that
    /// keep credentials, how many are unhealthy, how many this instance
    /// owns, and the first `max_listed` problems, the unhealthy first.
    pub fn readiness(&self, max_listed: usize) -> Readiness {
        let now = self.clock.now();
        let mut r = Readiness::default();
        let mut problems = Vec::new();
        for account in self.managed() {
            r.accounts += 1;
            if self
                .shared
                .as_ref()
                .is_some_and(|sh| sh.holding(account.appid()).is_some())
            {
                r.owned += 1;
            }
            let status = account_status(&account, now, &BTreeMap::new(), None);
            if let Some(p) = status.problem {
                if p.severity == Severity::Unhealthy {
                    r.unhealthy += 1;
                }
                problems.push((status.appid, p));
            }
        }
        problems.sort_by_key(|(_, p)| p.severity != Severity::Unhealthy);
        r.listed = problems.into_iter().take(max_listed).collect();
        r
    }

    fn status_with(
        &self,
        accounts: &[Arc<Account>],
        counts: &BTreeMap<String, (i64, i64)>,
    ) -> Vec<AccountStatus> {
        let now = self.clock.now();
        accounts
            .iter()
            .map(|a| {
                let owner = self
                    .shared
                    .as_ref()
                    .map(|sh| sh.holding(a.appid()).is_some());
                account_status(a, now, counts, owner)
            })
            .collect()
    }

    /// Writes the series that describe every account's state, computed now:
    /// aggregates that do not grow with the accounts (accounts by health,
    /// credentials by state, a histogram of time left), and per-account
    /// gauges for every account while there are at most `limit`, else only
    /// for those that need attention. Switches the registry's per-account
    /// counters the same way.
    pub fn render_metrics(&self, out: &mut String, limit: usize) {
        let now = self.clock.now();
        let accounts = self.managed();
        let per_account = accounts.len() <= limit;
        self.metrics.set_per_account(per_account);
        let mut tally = Tally::default();
        let mut detail = String::new();
        for account in &accounts {
            let health = tally.add(account, now);
            if per_account || health != Health::Ok {
                self.account_series(&mut detail, account, health, now);
            }
        }
        tally.write(out);
        metrics::family(
            out,
            "wxhub_account_healthy",
            "gauge",
            "1 when the account can get credentials, 0 when it needs attention (every account up to metrics.per_account_limit, then only those not ok).",
        );
        metrics::family(
            out,
            "wxhub_token_seconds_remaining",
            "gauge",
            "Seconds until the current credential expires (per account, as wxhub_account_healthy).",
        );
        // Declared in every mode, so dashboards and alerts written for
        // shared mode find the family; its samples come with shared mode.
        metrics::family(
            out,
            "wxhub_lease_held",
            "gauge",
            "Shared mode: 1 when this instance owns the account's refresh (per account, as wxhub_account_healthy).",
        );
        metrics::family(
            out,
            "wxhub_lease_partitions_held",
            "gauge",
            "Shared mode: how many of the lease partitions (wxhub_lease_partitions) this instance holds; each instance should hold about its share.",
        );
        metrics::family(
            out,
            "wxhub_lease_partitions",
            "gauge",
            "Shared mode: how many lease partitions the accounts are hashed into.",
        );
        if let Some(sh) = &self.shared {
            metrics::sample(
                out,
                "wxhub_lease_partitions_held",
                &[],
                sh.held_count() as f64,
            );
            metrics::sample(out, "wxhub_lease_partitions", &[], sh.partitions() as f64);
        }
        out.push_str(&detail);
    }

    fn account_series(&self, out: &mut String, account: &Account, health: Health, now: i64) {
        let appid = account.appid();
        let healthy = if health == Health::Unhealthy {
            0.0
        } else {
            1.0
        };
        metrics::sample(out, "wxhub_account_healthy", &[("appid", appid)], healthy);
        for slot in account.slots() {
            let remaining = slot
                .lock()
                .current
                .as_ref()
                .map_or(0, |c| (c.expires_at - now).max(0));
            metrics::sample(
                out,
                "wxhub_token_seconds_remaining",
                &[("appid", appid), ("kind", slot.kind.label())],
                remaining as f64,
            );
        }
        if let Some(sh) = &self.shared {
            let held = if sh.holding(appid).is_some() {
                1.0
            } else {
                0.0
            };
            metrics::sample(out, "wxhub_lease_held", &[("appid", appid)], held);
        }
    }
}

/// An account's health as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok,
    Degraded,
    Unhealthy,
}

impl Health {
    fn label(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Less time left than this is a late refresh (the alert on
/// `wxhub_token_seconds_remaining` fires below 120 s).
const NEARLY_EXPIRED: i64 = 180;

/// Upper bounds of the time-left histogram, seconds.
const LEFT: [i64; 6] = [60, 300, 900, 1800, 3600, 7200];

/// Per kind: valid, expired, missing, and the time left of the valid ones.
#[derive(Debug, Default)]
struct KindTally {
    valid: u64,
    expired: u64,
    missing: u64,
    left: [u64; LEFT.len()],
    left_sum: i64,
}

#[derive(Debug, Default)]
struct Tally {
    health: [u64; 3],
    kinds: BTreeMap<&'static str, KindTally>,
}

impl Tally {
    /// Counts an account's slots and returns its health: unhealthy when a
    /// slot has no valid value or an unhealthy problem, degraded when one
    /// has any other problem.
    fn add(&mut self, account: &Account, now: i64) -> Health {
        let mut health = Health::Ok;
        for slot in account.slots() {
            let st = slot.lock();
            let k = self.kinds.entry(slot.kind.label()).or_default();
            match (&st.current, st.valid(now)) {
                (_, Some(c)) => {
                    let left = c.expires_at - now;
                    k.valid += 1;
                    k.left_sum += left;
                    for (i, b) in LEFT.iter().enumerate() {
                        if left <= *b {
                            k.left[i] += 1;
                        }
                    }
                }
                (Some(_), None) => k.expired += 1,
                (None, None) => k.missing += 1,
            }
            let slot_health = match (&st.problem, st.valid(now)) {
                (_, None) => Health::Unhealthy,
                (Some(p), _) if p.severity == Severity::Unhealthy => Health::Unhealthy,
                (Some(_), _) => Health::Degraded,
                // A token nearly expired and not yet replaced: its refresh
                // is late, worth a per-account series whatever the limit.
                // (Tickets are replaced only once expired: not late.)
                (None, Some(c))
                    if slot.kind == CredKind::AccessToken
                        && c.expires_at - now < NEARLY_EXPIRED =>
                {
                    Health::Degraded
                }
                (None, Some(_)) => Health::Ok,
            };
            health = health.max_by(slot_health);
        }
        self.health[health as usize] += 1;
        health
    }

    fn write(&self, out: &mut String) {
        metrics::family(
            out,
            "wxhub_accounts",
            "gauge",
            "Accounts by health: ok, degraded (refreshing fails, a valid credential is still served), unhealthy (cannot serve, or needs a person).",
        );
        for h in [Health::Ok, Health::Degraded, Health::Unhealthy] {
            let n = self.health[h as usize] as f64;
            metrics::sample(out, "wxhub_accounts", &[("state", h.label())], n);
        }
        metrics::family(
            out,
            "wxhub_credentials",
            "gauge",
            "Credentials by kind and state: valid, expired, missing (never fetched).",
        );
        for (kind, k) in &self.kinds {
            for (state, n) in [
                ("valid", k.valid),
                ("expired", k.expired),
                ("missing", k.missing),
            ] {
                metrics::sample(
                    out,
                    "wxhub_credentials",
                    &[("kind", kind), ("state", state)],
                    n as f64,
                );
            }
        }
        metrics::family(
            out,
            "wxhub_credential_seconds_left",
            "histogram",
            "Time left of the valid credentials, by kind, as of the scrape (a snapshot, not a history).",
        );
        for (kind, k) in &self.kinds {
            for (i, b) in LEFT.iter().enumerate() {
                let le = b.to_string();
                let labels = [("kind", *kind), ("le", le.as_str())];
                metrics::sample(
                    out,
                    "wxhub_credential_seconds_left_bucket",
                    &labels,
                    k.left[i] as f64,
                );
            }
            let labels = [("kind", *kind), ("le", "+Inf")];
            metrics::sample(
                out,
                "wxhub_credential_seconds_left_bucket",
                &labels,
                k.valid as f64,
            );
            let kind = [("kind", *kind)];
            metrics::sample(
                out,
                "wxhub_credential_seconds_left_sum",
                &kind,
                k.left_sum as f64,
            );
            metrics::sample(
                out,
                "wxhub_credential_seconds_left_count",
                &kind,
                k.valid as f64,
            );
        }
    }
}

impl Health {
    fn max_by(self, other: Health) -> Health {
        if (other as u8) > (self as u8) {
            other
        } else {
            self
        }
    }
}

/// One account's snapshot.
fn account_status(
    a: &Account,
    now: i64,
    counts: &BTreeMap<String, (i64, i64)>,
    refresh_owner: Option<bool>,
) -> AccountStatus {
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
        refresh_owner,
        managed: a.managed(),
        kind: match (&a.cfg.via, a.cfg.kind) {
            (crate::config::Via::Component, _) => "component",
            (_, crate::config::AccountKind::Website) => "website",
            _ => "official",
        },
        component: a.cfg.via.component().map(|c| c.as_str().to_string()),
        revoked_at: match &a.cfg.via {
            crate::config::Via::Revoked { at, .. } => Some(*at),
            _ => None,
        },
        platform: None,
        slots,
        problem,
    }
}

/// Which accounts a listing shows.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Skip this many matches.
    #[serde(default)]
    pub offset: usize,
    /// Show at most this many (at most 1000).
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Only accounts whose AppID or name contains this (any case).
    #[serde(default)]
    pub q: Option<String>,
    /// Only accounts that need attention (`problem`), or healthy ones (`ok`).
    #[serde(default)]
    pub state: Option<StateFilter>,
}

fn default_limit() -> usize {
    MAX_PAGE
}

/// The largest page a listing returns.
pub const MAX_PAGE: usize = 1000;

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            offset: 0,
            limit: usize::MAX,
            q: None,
            state: None,
        }
    }
}

/// A listing's health filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// No problem.
    Ok,
    /// Degraded or unhealthy.
    Problem,
}

impl ListQuery {
    fn matches(&self, a: &Account, now: i64) -> bool {
        let text = self.q.as_deref().is_none_or(|q| {
            let q = q.to_lowercase();
            a.appid().to_lowercase().contains(&q) || a.cfg.name.to_lowercase().contains(&q)
        });
        let state = self.state.is_none_or(|want| {
            let troubled = a.slots().any(|s| {
                let st = s.lock();
                st.problem.is_some() || st.valid(now).is_none()
            }) && a.managed();
            (want == StateFilter::Problem) == troubled
        });
        text && state
    }
}

/// What `/readyz` reports; see [`Credentials::readiness`].
#[derive(Debug, Default)]
pub struct Readiness {
    /// Accounts that keep credentials.
    pub accounts: usize,
    /// Of those, how many cannot serve.
    pub unhealthy: usize,
    /// Shared mode: how many this instance refreshes.
    pub owned: usize,
    /// The first problems, unhealthy first: (AppID, problem).
    pub listed: Vec<(String, Problem)>,
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
        errcode: st.last_errcode,
        fetched_at: cur.map(|c| c.fetched_at),
        expires_at: cur.map(|c| c.expires_at),
        daily_limit: st
            .quota
            .as_ref()
            .and_then(|(_, q)| i64::try_from(q.daily_limit).ok()),
    }
}

/// 0 unhealthy, 1 degraded, 2 ok: the console's order, from memory.
fn rank(a: &Account, now: i64) -> u8 {
    if !a.managed() {
        return 2;
    }
    let mut rank = 2;
    for slot in a.slots() {
        let st = slot.lock();
        let r = match (&st.problem, st.valid(now)) {
            (_, None) => 0,
            (Some(p), _) if p.severity == Severity::Unhealthy => 0,
            (Some(_), _) => 1,
            (None, Some(_)) => 2,
        };
        rank = rank.min(r);
    }
    rank
}
