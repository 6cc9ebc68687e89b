//! The heart of the hub: each account's access token and tickets, fetched
//! ahead of expiry, persisted, served from memory, and refreshed at most once
//! however many callers ask (token-lifecycle.md).
//!
//! Each credential lives in a [`Slot`]: its state behind a `std::sync::Mutex`
//! (short sections, never held across `.await`) and a `tokio::sync::Mutex`
//! that makes fetching single-flight. Whoever takes the fetch lock re-checks
//! the state first, so callers that queued behind a fetch return its result
//! instead of fetching again (the re-check WxJava #1293 was missing).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;
use wx_api::{Action, BackOffUntil, ConfigPart, WxError};

use crate::budget::{Budget, Decision, Exhausted};
use crate::clock::{Clock, beijing_day};
use crate::config::{AccountConfig, RefreshSettings, TicketKind, TokenMode};
use crate::metrics::Metrics;
use crate::shared::{LeaseOutcome, Note, Record, RequestKind, Shared};
use crate::store::{Store, StoreError, StoredCredential};

wx_api::secret_type!(
    /// A credential value (access token or ticket) held by the hub.
    Secret
);

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CredKind {
    /// The global access token.
    AccessToken,
    /// A ticket.
    Ticket(TicketKind),
}

impl CredKind {
    /// Label for metrics and the API: `access_token`, `jsapi_ticket`, `wx_card_ticket`.
    pub fn label(self) -> &'static str {
        match self {
            CredKind::AccessToken => "access_token",
            CredKind::Ticket(TicketKind::Jsapi) => "jsapi_ticket",
            CredKind::Ticket(TicketKind::WxCard) => "wx_card_ticket",
        }
    }
}

/// A credential as the hub holds it.
#[derive(Debug, Clone)]
pub struct Cred {
    /// The value.
    pub value: Secret,
    /// When the platform stops accepting it.
    pub expires_at: i64,
    /// When the hub fetched it.
    pub fetched_at: i64,
    /// When the hub first saw this value (tickets repeat, §7.1).
    pub first_seen: i64,
}

impl Cred {
    /// This value as written to Redis under `fence`, with the owner's plan.
    fn record(&self, fence: u64, refresh_at: i64) -> Record {
        Record {
            value: self.value.expose_secret().to_string(),
            expires_at: self.expires_at,
            fetched_at: self.fetched_at,
            first_seen: self.first_seen,
            fence,
            seq: 0,
            refresh_at,
            pending_since: None,
        }
    }
}

/// A credential handed to a client.
#[derive(Debug, Clone)]
pub struct Served {
    /// The value.
    pub value: Secret,
    /// Cache it until then, no longer.
    pub expires_at: i64,
    /// `expires_at - now`.
    pub expires_in: i64,
}

/// How urgent an account's problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Still serving a valid credential, but refreshing fails.
    Degraded,
    /// Cannot serve, or a human must fix the configuration.
    Unhealthy,
}

/// Why an account needs attention.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// How bad.
    pub severity: Severity,
    /// What to do, in words; never a secret.
    pub reason: String,
    /// Since when (Unix seconds).
    pub since: i64,
}

#[derive(Debug, Default)]
struct SlotState {
    current: Option<Cred>,
    next_refresh_at: i64,
    failures: u32,
    blocked_until: i64,
    problem: Option<Problem>,
    last_refresh_at: Option<i64>,
    in_flight: bool,
    // Shared mode: the fencing number and write sequence of the current
    // value, the owner's planned refresh, and the start of its unwritten fetch.
    fence: u64,
    seq: u64,
    shared_refresh_at: i64,
    pending_since: Option<i64>,
    // Shared mode: fetched while Redis could not take the write.
    dirty: bool,
    // Shared mode: Redis failed right before a fetch; the refresher waits
    // until then (real time: the virtual clock may stand still) instead of
    // asking again on every tick.
    redis_retry_at: Option<Instant>,
    // The last time the platform was asked whether a reported value works,
    // and what it said: reports of the same value within the confirm window
    // share the answer.
    confirmed: Option<Confirmation>,
    // The token endpoint's quota as the last confirmation read it (classic
    // mode): caller-triggered fetches stop at half the day's quota.
    quota: Option<(i64, wx_api::endpoint::quota::ApiQuota)>,
    // A refused caller-triggered refresh was logged at this time; logged
    // again only after the confirm window, not once per report.
    refused_logged_at: Option<i64>,
}

/// What the platform said of a reported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It works: the caller's error was not about it.
    Valid,
    /// 40001, 40014 or 42001: it is dead.
    Rejected,
    /// The platform could not be asked (timeout, quota, an error of its
    /// own): treated as a report, under the caller budget.
    Unknown,
}

#[derive(Debug, Clone)]
struct Confirmation {
    value: Secret,
    at: i64,
    verdict: Verdict,
}

/// One credential of one account.
#[derive(Debug)]
pub struct Slot {
    kind: CredKind,
    state: Mutex<SlotState>,
    fetch: tokio::sync::Mutex<()>,
    // Reports arriving together share one confirmation.
    confirm: tokio::sync::Mutex<()>,
    // Bumped whenever the value changes, for callers waiting on the owner.
    version: tokio::sync::watch::Sender<u64>,
    // Shared mode: the owner's last refusal to replace a reported value
    // (its caller budget was spent), for callers waiting on the owner.
    refused: tokio::sync::watch::Sender<Option<Refusal>>,
}

/// An owner's "not replacing this one": the SHA-256 of the reported value,
/// why, and when a report could refresh again.
#[derive(Debug, Clone)]
struct Refusal {
    failed_sha256: String,
    reason: String,
    retry_after: i64,
}

impl Slot {
    fn new(kind: CredKind) -> Slot {
        Slot {
            kind,
            state: Mutex::new(SlotState::default()),
            fetch: tokio::sync::Mutex::new(()),
            confirm: tokio::sync::Mutex::new(()),
            version: tokio::sync::watch::Sender::new(0),
            refused: tokio::sync::watch::Sender::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// One account and its slots.
#[derive(Debug)]
pub struct Account {
    /// Its configuration.
    pub cfg: AccountConfig,
    token: Slot,
    tickets: BTreeMap<TicketKind, Slot>,
    // Shared mode: this instance holds the lease and has finished taking
    // over (read, written back, checked for an interrupted fetch).
    settled: std::sync::atomic::AtomicBool,
    // Shared mode: handed over to balance the load; not taken back before.
    cooling_until: Mutex<Option<Instant>>,
}

impl Account {
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        std::iter::once(&self.token).chain(self.tickets.values())
    }

    fn slot_by_key(&self, key: &str) -> Option<&Slot> {
        self.slots().find(|s| self.store_key(s.kind) == key)
    }

    fn slot(&self, kind: CredKind) -> Option<&Slot> {
        match kind {
            CredKind::AccessToken => Some(&self.token),
            CredKind::Ticket(t) => self.tickets.get(&t),
        }
    }

    fn store_key(&self, kind: CredKind) -> String {
        match kind {
            CredKind::AccessToken => format!("access_token:{}", self.cfg.token_mode.as_str()),
            CredKind::Ticket(t) => format!("ticket:{}", t.as_str()),
        }
    }
}

/// Why a credential cannot be served now.
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    /// No such account.
    #[error("no account {0}")]
    UnknownAccount(String),
    /// The account does not keep this ticket.
    #[error("account {appid} does not keep a {kind}; add it to accounts.tickets")]
    NotKept {
        /// The account.
        appid: String,
        /// The credential.
        kind: &'static str,
    },
    /// No valid credential, and none could be fetched in time.
    #[error("{reason}")]
    Unavailable {
        /// Why, in words.
        reason: String,
        /// When trying again makes sense, seconds.
        retry_after: i64,
    },
    /// A caller's report would need a refresh, and the refreshes callers may
    /// trigger for this credential are used up for now.
    #[error("{reason}")]
    OverBudget {
        /// Which limit, in words.
        reason: String,
        /// When the budget allows one again, seconds.
        retry_after: i64,
    },
}

/// What became of a caller's report of a value the platform rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The reported value was no longer the current one: use the one served.
    AlreadyReplaced,
    /// The platform accepts the reported value: the caller's error was not
    /// about it; keep using it.
    StillValid,
    /// The platform rejected it, and the hub replaced it.
    Replaced,
    /// The platform rejected it (or could not say), but the refreshes
    /// callers may trigger are used up for now: the current value is served
    /// anyway, and the scheduled refresh still runs.
    OverBudget,
}

impl ReportOutcome {
    /// `already_replaced`, `still_valid`, `replaced`, `over_budget`.
    pub fn label(self) -> &'static str {
        match self {
            ReportOutcome::AlreadyReplaced => "already_replaced",
            ReportOutcome::StillValid => "still_valid",
            ReportOutcome::Replaced => "replaced",
            ReportOutcome::OverBudget => "over_budget",
        }
    }
}

/// The answer to a report: what to use now, and why.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The credential to use now.
    pub served: Served,
    /// What the report led to.
    pub outcome: ReportOutcome,
    /// With [`ReportOutcome::OverBudget`]: why, and when a report could
    /// refresh again (seconds).
    pub budget: Option<(String, i64)>,
}

/// What started a refresh.
#[derive(Debug, Clone)]
enum Trigger {
    /// The refresher found the slot due.
    Scheduled,
    /// A caller found no valid credential.
    Missing,
    /// A caller reports this value failed; `rejected` when the platform
    /// confirmed it (not only the caller said so). Under the caller budget.
    Reported { failed: Secret, rejected: bool },
    /// Another instance's thrown-away fetch doomed this value (classic mode).
    Doomed(Secret),
}

/// Every account's credentials.
pub struct Credentials {
    accounts: BTreeMap<String, Arc<Account>>,
    store: Arc<Store>,
    shared: Option<Arc<Shared>>,
    clock: Arc<dyn Clock>,
    wx: wx_api::Client,
    metrics: Arc<Metrics>,
    settings: RefreshSettings,
    concurrency: Arc<Semaphore>,
    // Shared mode: consecutive lease rounds this instance held more than
    // its share of the accounts.
    over_share: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("accounts", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

/// A snapshot of one slot for the status page and `/v1/apps`.
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

const TOKEN_GRACE: i64 = 300;
const FORCED_DAILY_LIMIT: i64 = 20;

impl Credentials {
    /// Loads stored credentials for every configured account. Nothing is
    /// fetched here: a valid stored token is served as is. In shared mode the
    /// values come from Redis and refreshing waits for a lease.
    pub async fn new(
        accounts: &[AccountConfig],
        store: Arc<Store>,
        shared: Option<Arc<Shared>>,
        clock: Arc<dyn Clock>,
        wx: wx_api::Client,
        metrics: Arc<Metrics>,
        settings: RefreshSettings,
    ) -> Arc<Credentials> {
        let concurrency = Arc::new(Semaphore::new(settings.max_concurrent));
        let accounts = accounts
            .iter()
            .map(|cfg| {
                let account = Account {
                    cfg: cfg.clone(),
                    token: Slot::new(CredKind::AccessToken),
                    tickets: cfg
                        .tickets
                        .iter()
                        .map(|t| (*t, Slot::new(CredKind::Ticket(*t))))
                        .collect(),
                    settled: std::sync::atomic::AtomicBool::new(false),
                    cooling_until: Mutex::new(None),
                };
                (cfg.appid.as_str().to_string(), Arc::new(account))
            })
            .collect();
        let creds = Arc::new(Credentials {
            accounts,
            store,
            shared,
            clock,
            wx,
            metrics,
            settings,
            concurrency,
            over_share: std::sync::atomic::AtomicU32::new(0),
        });
        let now = creds.clock.now();
        if creds.shared.is_some() {
            creds.metrics.set("wxhub_redis_up", &[], 1.0);
        }
        for account in creds.accounts.values() {
            for slot in account.slots() {
                slot.lock().next_refresh_at = now;
                let appid = account.cfg.appid.as_str();
                match creds
                    .load_record(appid, &account.store_key(slot.kind))
                    .await
                {
                    Ok(Some(rec)) => {
                        creds.adopt(account, slot, rec);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(account.appid = %appid, error = %e, "cannot read stored credential; will fetch");
                    }
                }
            }
        }
        creds
    }

    /// The stored credential, as a shared record (local stores have no
    /// fence and no owner's plan).
    async fn load_record(&self, appid: &str, key: &str) -> Result<Option<Record>, StoreError> {
        match (&self.shared, self.store.as_ref()) {
            (Some(sh), _) => sh.load(appid, key).await,
            (None, Store::Sqlite(db)) => Ok(db.load(appid, key).await?.map(|s| Record {
                value: s.value,
                expires_at: s.expires_at,
                fetched_at: s.fetched_at,
                first_seen: s.first_seen,
                fence: 0,
                seq: 0,
                refresh_at: 0,
                pending_since: None,
            })),
            (None, Store::Redis(_)) => Err(StoreError::new(
                "a Redis store needs shared mode; this is a bug",
            )),
        }
    }

    /// Takes a stored record as the slot's value if it is newer than what is
    /// held (by write sequence: reads race each other and the owner's own
    /// writes). Returns whether the value changed.
    fn adopt(&self, account: &Account, slot: &Slot, rec: Record) -> bool {
        let now = self.clock.now();
        let mut st = slot.lock();
        if rec.expires_at <= now {
            return false;
        }
        if st.current.is_some() {
            if rec.seq < st.seq {
                return false;
            }
            if rec.seq == st.seq {
                // The same write, seen again: only the owner's marks move.
                st.shared_refresh_at = rec.refresh_at;
                st.pending_since = rec.pending_since;
                return false;
            }
        }
        let value = Secret::new(rec.value);
        let same = st.current.as_ref().is_some_and(|c| c.value.ct_eq(&value));
        let cred = Cred {
            value,
            expires_at: rec.expires_at,
            fetched_at: rec.fetched_at,
            first_seen: rec.first_seen,
        };
        // An owner whose own write comes back keeps its schedule (and any
        // backoff); everyone else follows the owner's plan.
        let owner_keeps = same
            && self
                .shared
                .as_ref()
                .is_some_and(|sh| sh.holding(account.cfg.appid.as_str()).is_some());
        if self.shared.is_none() {
            st.next_refresh_at = self.plan(account.cfg.token_mode, slot.kind, &cred);
        } else if !owner_keeps {
            st.next_refresh_at = rec.refresh_at;
        }
        st.shared_refresh_at = rec.refresh_at;
        st.pending_since = rec.pending_since;
        st.last_refresh_at = Some(rec.fetched_at);
        st.fence = rec.fence;
        st.seq = rec.seq;
        st.current = Some(cred);
        st.dirty = false;
        drop(st);
        if !same {
            slot.changed();
        }
        !same
    }

    /// Shared mode's Redis side, when configured.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// The configured accounts.
    pub fn accounts(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.accounts.values()
    }

    /// One account.
    pub fn account(&self, appid: &str) -> Option<&Arc<Account>> {
        self.accounts.get(appid)
    }

    fn jitter(&self, max: i64) -> i64 {
        if max <= 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=max)
        }
    }

    /// When to refresh a freshly fetched credential (token-lifecycle.md).
    fn plan(&self, mode: TokenMode, kind: CredKind, cred: &Cred) -> i64 {
        let s = &self.settings;
        match (kind, mode) {
            (CredKind::AccessToken, TokenMode::Classic) => {
                let life = (cred.expires_at - cred.fetched_at).max(2);
                // Never more than half the lifetime, so short-lived tokens
                // cannot cause a refresh loop.
                let margin = s.classic_margin_secs.min(life / 2);
                cred.expires_at - margin - self.jitter(s.jitter_secs.min(margin / 2))
            }
            (CredKind::AccessToken, TokenMode::Stable) => {
                // An earlier call returns the same token; the platform only
                // rotates inside the last 300 s.
                let room = (TOKEN_GRACE - 1 - s.stable_refresh_before_secs).max(0);
                cred.expires_at
                    - s.stable_refresh_before_secs
                    - self.jitter(s.jitter_secs.min(room))
            }
            // The platform hands out a new ticket only once the old one has
            // expired, so there is nothing to gain by asking earlier.
            (CredKind::Ticket(_), _) => cred.expires_at + self.jitter(s.jitter_secs.min(5)),
        }
    }

    /// The `expires_at` to tell clients: in classic mode the token dies 300 s
    /// after the next refresh, so nobody may cache it past that.
    fn serve_until(
        &self,
        mode: TokenMode,
        kind: CredKind,
        st: &SlotState,
        cred: &Cred,
        now: i64,
    ) -> i64 {
        match (kind, mode) {
            (CredKind::AccessToken, TokenMode::Classic) => {
                // The value dies TOKEN_GRACE after the next fetch. Alone, the
                // hub knows when that is; shared, it goes by the owner's plan,
                // or by the start of the owner's fetch in flight, which may
                // have minted a new token before its owner died.
                let next_fetch = match (&self.shared, st.pending_since) {
                    (None, _) => st.next_refresh_at.max(now),
                    (Some(_), Some(started)) => started,
                    (Some(_), None) => st.shared_refresh_at.max(now),
                };
                cred.expires_at
                    .min(next_fetch + TOKEN_GRACE - self.settings.client_safety_secs)
            }
            _ => cred.expires_at,
        }
    }

    fn served(&self, account: &Account, slot: &Slot) -> Option<Served> {
        let now = self.clock.now();
        let st = slot.lock();
        let cred = st.current.as_ref().filter(|c| now < c.expires_at)?;
        let expires_at = self.serve_until(account.cfg.token_mode, slot.kind, &st, cred, now);
        Some(Served {
            value: cred.value.clone(),
            expires_at,
            expires_in: (expires_at - now).max(0),
        })
    }

    fn find(&self, appid: &str, kind: CredKind) -> Result<(Arc<Account>, CredKind), CredError> {
        let account = self
            .accounts
            .get(appid)
            .ok_or_else(|| CredError::UnknownAccount(appid.to_string()))?;
        let website = account.cfg.kind == crate::config::AccountKind::Website;
        if account.slot(kind).is_none() || website {
            return Err(CredError::NotKept {
                appid: appid.to_string(),
                kind: kind.label(),
            });
        }
        Ok((account.clone(), kind))
    }

    /// A valid credential: from memory, or by waiting (bounded) for a fetch.
    ///
    /// # Errors
    /// [`CredError`]; `Unavailable` carries the reason and a retry delay.
    pub async fn get(self: &Arc<Self>, appid: &str, kind: CredKind) -> Result<Served, CredError> {
        let (account, kind) = self.find(appid, kind)?;
        let slot = account.slot(kind).expect("find checked the slot");
        if let Some(s) = self.served(&account, slot) {
            return Ok(s);
        }
        if self.shared.is_some() {
            return self.get_shared(account, kind, None, false).await;
        }
        self.refresh_and_wait(account, kind, Trigger::Missing).await
    }

    /// A caller reports that `failed` was rejected. Nothing is refreshed on
    /// a caller's word alone: if `failed` is still the current value, the
    /// platform is asked first whether it works (reports arriving together,
    /// or within `confirm_window_secs`, share one question), and only a value
    /// the platform rejects (or cannot vouch for) is replaced, once however
    /// many report it, and within the caller budget. Returns what to use now
    /// and what the report led to.
    ///
    /// # Errors
    /// As [`Credentials::get`].
    pub async fn invalidate(
        self: &Arc<Self>,
        appid: &str,
        kind: CredKind,
        failed: &str,
    ) -> Result<Reported, CredError> {
        let (account, kind) = self.find(appid, kind)?;
        let slot = account.slot(kind).expect("find checked the slot");
        let failed = Secret::new(failed);
        let outcome = self.report(&account, slot, failed).await;
        let label = match &outcome {
            Ok(r) => r.outcome.label(),
            Err(_) => "unavailable",
        };
        self.metrics.inc(
            "wxhub_reports_total",
            &[("appid", appid), ("kind", kind.label()), ("outcome", label)],
        );
        outcome
    }

    async fn report(
        self: &Arc<Self>,
        account: &Arc<Account>,
        slot: &Slot,
        failed: Secret,
    ) -> Result<Reported, CredError> {
        let kind = slot.kind;
        let answer = |served: Served, outcome| Reported {
            served,
            outcome,
            budget: None,
        };
        // A value no longer current, or past its expiry, needs no report: the
        // current one, or a fetch as for any caller without one.
        let live = self.served(account, slot).is_some();
        if !self.is_current(slot, &failed) || !live {
            let served = match self.served(account, slot) {
                Some(s) => s,
                None if self.shared.is_some() => {
                    self.get_shared(account.clone(), kind, None, false).await?
                }
                None => {
                    self.refresh_and_wait(account.clone(), kind, Trigger::Missing)
                        .await?
                }
            };
            return Ok(answer(served, ReportOutcome::AlreadyReplaced));
        }
        let verdict = self.confirm(account, slot, &failed).await;
        if verdict == Verdict::Valid
            && let Some(served) = self.served(account, slot)
        {
            return Ok(answer(served, ReportOutcome::StillValid));
        }
        let rejected = verdict == Verdict::Rejected;
        let reported = failed.clone();
        let replaced = if self.shared.is_some() {
            self.get_shared(account.clone(), kind, Some(failed), rejected)
                .await
        } else {
            self.refresh_and_wait(
                account.clone(),
                kind,
                Trigger::Reported { failed, rejected },
            )
            .await
        };
        match replaced {
            // A ticket fetched again comes back unchanged while it lives.
            Ok(served) if served.value.ct_eq(&reported) => {
                Ok(answer(served, ReportOutcome::StillValid))
            }
            Ok(served) => Ok(answer(served, ReportOutcome::Replaced)),
            Err(CredError::OverBudget {
                reason,
                retry_after,
            }) => match self.served(account, slot) {
                Some(served) => Ok(Reported {
                    served,
                    outcome: ReportOutcome::OverBudget,
                    budget: Some((reason, retry_after)),
                }),
                None => Err(CredError::OverBudget {
                    reason,
                    retry_after,
                }),
            },
            Err(e) => Err(e),
        }
    }

    fn is_current(&self, slot: &Slot, value: &Secret) -> bool {
        slot.lock()
            .current
            .as_ref()
            .is_some_and(|c| c.value.ct_eq(value))
    }

    /// Asks the platform whether a reported value works, once per value per
    /// confirm window. A token is checked with `openapi/quota/get`, which
    /// takes the global token, costs no business API's quota and tells the
    /// token endpoint's remaining fetches. A ticket needs no call: the
    /// platform hands out the same ticket until it expires (§7.1, §12), so
    /// before its expiry a fetch could only return it again.
    async fn confirm(&self, account: &Account, slot: &Slot, failed: &Secret) -> Verdict {
        if let CredKind::Ticket(_) = slot.kind {
            return Verdict::Valid;
        }
        let _one_question = slot.confirm.lock().await;
        let now = self.clock.now();
        let window = self.settings.confirm_window_secs;
        {
            let st = slot.lock();
            if let Some(c) = &st.confirmed
                && c.value.ct_eq(failed)
                && now - c.at < window
            {
                return c.verdict;
            }
        }
        let path = match account.cfg.token_mode {
            TokenMode::Classic => "/cgi-bin/token",
            TokenMode::Stable => "/cgi-bin/stable_token",
        };
        let token = wx_api::AccessToken::new(failed.expose_secret());
        let started = Instant::now();
        let asked = self.wx.api_quota(&token, path).await;
        self.metrics.observe(
            "wxhub_upstream_duration_seconds",
            &[("endpoint", "/cgi-bin/openapi/quota/get")],
            started.elapsed().as_secs_f64(),
        );
        let verdict = match asked {
            Ok(quota) => {
                slot.lock().quota = Some((beijing_day(now), quota));
                Verdict::Valid
            }
            Err(e) if e.is_token_invalid() => Verdict::Rejected,
            Err(e) => {
                tracing::info!(account.appid = %account.cfg.appid.as_str(), error = %e, "cannot confirm a reported token with the platform; treating the report as unconfirmed");
                Verdict::Unknown
            }
        };
        slot.lock().confirmed = Some(Confirmation {
            value: failed.clone(),
            at: now,
            verdict,
        });
        verdict
    }

    /// The budget of caller-triggered refreshes this credential draws on:
    /// its store scope and limits.
    fn budget_for(&self, account: &Account, kind: CredKind) -> (String, Budget) {
        let s = &self.settings;
        let forced = kind == CredKind::AccessToken && account.cfg.token_mode == TokenMode::Stable;
        let scope = if forced {
            "forced".to_string()
        } else {
            kind.label().to_string()
        };
        let budget = Budget {
            min_interval: s.caller_min_interval_secs,
            per_hour: s.caller_max_per_hour,
            per_day: if forced {
                s.caller_max_forced_per_day
            } else {
                s.caller_max_per_day
            },
        };
        (scope, budget)
    }

    /// Checks (and with `take`, spends) one caller-triggered refresh.
    /// Refused: the reason and the seconds to wait. A store that does not
    /// answer refuses too: an unmetered refresh is what this exists to stop.
    async fn caller_budget(
        &self,
        account: &Account,
        slot: &Slot,
        take: bool,
    ) -> Result<(), CredError> {
        let appid = account.cfg.appid.as_str();
        let now = self.clock.now();
        // Classic mode: never let callers spend the second half of the day's
        // token quota, whatever the configured ceilings say.
        if slot.kind == CredKind::AccessToken
            && account.cfg.token_mode == TokenMode::Classic
            && let Some((day, q)) = slot.lock().quota
            && day == beijing_day(now)
            && q.remain.saturating_mul(2) < q.daily_limit
        {
            let reason = format!(
                "the platform reports {} of today's {} token fetches left: reports no longer trigger fetches today",
                q.remain, q.daily_limit
            );
            let next_day = (beijing_day(now) + 1) * 86400 - 8 * 3600;
            return Err(self.over_budget(account, slot, "quota_half", reason, next_day - now));
        }
        let (scope, budget) = self.budget_for(account, slot.kind);
        match self.store.budget(appid, &scope, budget, now, take).await {
            Ok(Decision::Allowed(_)) => Ok(()),
            Ok(Decision::Refused { limit, retry_after }) => {
                let what = match limit {
                    Exhausted::Interval => format!(
                        "a report refreshed the {} less than {} s ago (refresh.caller_min_interval_secs)",
                        slot.kind.label(),
                        budget.min_interval
                    ),
                    Exhausted::Hour => format!(
                        "reports already caused {} refreshes of the {} this hour (refresh.caller_max_per_hour)",
                        budget.per_hour,
                        slot.kind.label()
                    ),
                    Exhausted::Day => format!(
                        "reports already caused {} {} of the {} today (refresh.caller_max_{}per_day)",
                        budget.per_day,
                        if scope == "forced" {
                            "forced refreshes"
                        } else {
                            "refreshes"
                        },
                        slot.kind.label(),
                        if scope == "forced" { "forced_" } else { "" }
                    ),
                };
                Err(self.over_budget(account, slot, limit.label(), what, retry_after))
            }
            Err(e) => {
                let reason =
                    format!("the refresh budget cannot be read ({e}); not refreshing on a report");
                Err(self.over_budget(account, slot, "store", reason, 1))
            }
        }
    }

    fn over_budget(
        &self,
        account: &Account,
        slot: &Slot,
        limit: &'static str,
        reason: String,
        retry_after: i64,
    ) -> CredError {
        let appid = account.cfg.appid.as_str();
        let now = self.clock.now();
        self.metrics.inc(
            "wxhub_caller_refresh_refused_total",
            &[
                ("appid", appid),
                ("kind", slot.kind.label()),
                ("limit", limit),
            ],
        );
        let log = {
            let mut st = slot.lock();
            let due = st
                .refused_logged_at
                .is_none_or(|t| now - t >= self.settings.confirm_window_secs);
            if due {
                st.refused_logged_at = Some(now);
            }
            due
        };
        if log {
            tracing::warn!(account.appid = %appid, kind = slot.kind.label(), limit, retry_in_secs = retry_after, "not refreshing on a caller's report: {reason}; serving the current value");
        }
        CredError::OverBudget {
            reason: format!("{reason}; the current value is still served"),
            retry_after: retry_after.max(1),
        }
    }

    /// Shared mode, when the local copy will not do: what Redis holds may be
    /// newer; the owner refreshes (this instance, if no one holds the lease);
    /// anyone else asks the owner and waits for its write.
    async fn get_shared(
        self: &Arc<Self>,
        account: Arc<Account>,
        kind: CredKind,
        failed: Option<Secret>,
        rejected: bool,
    ) -> Result<Served, CredError> {
        let sh = self.shared.as_ref().expect("shared mode");
        let slot = account.slot(kind).expect("find checked the slot");
        let appid = account.cfg.appid.as_str();
        let key = account.store_key(kind);
        // Subscribed before anything is read, so no change is missed.
        let mut version = slot.version.subscribe();
        let mut refusals = slot.refused.subscribe();
        let usable = |this: &Self| {
            this.served(&account, slot)
                .filter(|s| !failed.as_ref().is_some_and(|f| s.value.ct_eq(f)))
        };
        match sh.load(appid, &key).await {
            Ok(Some(rec)) => {
                self.redis_ok();
                self.adopt(&account, slot, rec);
            }
            Ok(None) => self.redis_ok(),
            Err(e) => {
                self.redis_failed(&e);
                return Err(self.redis_unavailable(kind));
            }
        }
        if let Some(s) = usable(self) {
            return Ok(s);
        }
        let owner = sh.holding(appid).is_some()
            || match sh.acquire(appid).await {
                Ok(LeaseOutcome::Held { fence, new }) => {
                    self.acquired(&account, fence, new).await;
                    true
                }
                _ => false,
            };
        if owner {
            let trigger = match failed {
                Some(failed) => Trigger::Reported { failed, rejected },
                None => Trigger::Missing,
            };
            return self.refresh_and_wait(account.clone(), kind, trigger).await;
        }
        let failed_hash = failed.as_ref().map(|f| sha256_hex(f.expose_secret()));
        let note = match (&failed, rejected) {
            (Some(_), true) => RequestKind::Rejected,
            _ => RequestKind::Plain,
        };
        if let Err(e) = sh.request(appid, &key, failed_hash.as_deref(), note).await {
            self.redis_failed(&e);
            return Err(self.redis_unavailable(kind));
        }
        // The owner answers with a change, or (its caller budget spent) with
        // a refusal naming the reported value.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.wait_for_token_ms);
        loop {
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    r = version.changed() => r.is_ok(),
                    r = refusals.changed() => r.is_ok(),
                }
            })
            .await;
            if !matches!(woke, Ok(true)) {
                break;
            }
            if let Some(s) = usable(self) {
                return Ok(s);
            }
            let refusal = refusals.borrow_and_update().clone();
            if let (Some(r), Some(h)) = (refusal, &failed_hash)
                && r.failed_sha256 == *h
            {
                return Err(CredError::OverBudget {
                    reason: r.reason,
                    retry_after: r.retry_after,
                });
            }
        }
        Err(CredError::Unavailable {
            reason: format!(
                "waiting for the instance that owns {appid}'s refresh to replace the {}",
                kind.label()
            ),
            retry_after: 1,
        })
    }

    fn redis_unavailable(&self, kind: CredKind) -> CredError {
        CredError::Unavailable {
            reason: format!(
                "redis is unreachable and no valid {} is held here; not fetching one, which would replace the owner's",
                kind.label()
            ),
            retry_after: 1,
        }
    }

    fn redis_failed(&self, e: &StoreError) {
        let Some(sh) = &self.shared else { return };
        sh.set_up(false, self.clock.now(), &e.to_string(), || {
            self.metrics.set("wxhub_redis_up", &[], 0.0);
            tracing::error!(error = %e, "redis unreachable: serving the values held in memory, refreshing nothing until it is back");
        });
    }

    fn redis_ok(&self) {
        let Some(sh) = &self.shared else { return };
        sh.set_up(true, self.clock.now(), "", || {
            self.metrics.set("wxhub_redis_up", &[], 1.0);
            tracing::info!("redis reachable again");
        });
    }

    /// Runs the refresh in its own task, so a caller that gives up waiting
    /// does not cancel an upstream call half-way.
    async fn refresh_and_wait(
        self: &Arc<Self>,
        account: Arc<Account>,
        kind: CredKind,
        trigger: Trigger,
    ) -> Result<Served, CredError> {
        let this = self.clone();
        let acc = account.clone();
        let task = tokio::spawn(async move { this.refresh(&acc, kind, trigger).await });
        let wait = Duration::from_millis(self.settings.wait_for_token_ms);
        match tokio::time::timeout(wait, task).await {
            Ok(Ok(Ok(()))) => {
                let slot = account.slot(kind).expect("slot exists");
                self.served(&account, slot)
                    .ok_or_else(|| CredError::Unavailable {
                        reason: "the platform returned an already expired credential".into(),
                        retry_after: 1,
                    })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(join)) => Err(CredError::Unavailable {
                reason: format!("refresh task failed: {join}"),
                retry_after: 1,
            }),
            Err(_) => Err(CredError::Unavailable {
                reason: format!(
                    "no valid {} yet: a fetch from the WeChat platform is in flight",
                    kind.label()
                ),
                retry_after: 1,
            }),
        }
    }

    /// Forced stable refreshes used today, from the store.
    async fn forced_today(&self, appid: &str) -> i64 {
        let day = beijing_day(self.clock.now());
        self.store.counter(appid, "forced", day).await.unwrap_or(0)
    }

    /// The single-flight refresh. `Ok(())` means the slot holds a valid
    /// credential now (fetched or, after the re-check, already there).
    async fn refresh(
        &self,
        account: &Account,
        kind: CredKind,
        trigger: Trigger,
    ) -> Result<(), CredError> {
        let slot = account.slot(kind).expect("slot exists");
        let _fetching = slot.fetch.lock().await;
        let now = self.clock.now();
        let appid = account.cfg.appid.as_str();
        {
            let st = slot.lock();
            let valid = st.current.as_ref().is_some_and(|c| now < c.expires_at);
            let skip = match &trigger {
                Trigger::Scheduled => now < st.next_refresh_at && st.current.is_some(),
                Trigger::Missing => valid,
                Trigger::Reported { failed, .. } | Trigger::Doomed(failed) => {
                    valid && !st.current.as_ref().is_some_and(|c| c.value.ct_eq(failed))
                }
            };
            if skip {
                return Ok(());
            }
            // Callers with no token respect the backoff too: a client
            // retrying in a loop must not become an upstream hot loop.
            if st.failures > 0 && now < st.next_refresh_at && !matches!(trigger, Trigger::Scheduled)
            {
                let reason = st
                    .problem
                    .as_ref()
                    .map(|p| p.reason.clone())
                    .unwrap_or_else(|| "retrying after an upstream failure".into());
                return Err(CredError::Unavailable {
                    reason,
                    retry_after: st.next_refresh_at - now,
                });
            }
            if now < st.blocked_until {
                let reason = st
                    .problem
                    .as_ref()
                    .map(|p| p.reason.clone())
                    .unwrap_or_else(|| "fetching is paused".into());
                return Err(CredError::Unavailable {
                    reason,
                    retry_after: st.blocked_until - now,
                });
            }
        }
        if matches!(trigger, Trigger::Reported { .. }) {
            self.caller_budget(account, slot, true).await?;
        }
        let force = matches!(trigger, Trigger::Reported { .. });
        // A foreign refresh is one the platform confirmed: the current token
        // rejected before its expiry, and not by a fetch of ours.
        if let Trigger::Reported {
            failed,
            rejected: true,
        } = &trigger
            && kind == CredKind::AccessToken
        {
            let current_not_expired = slot
                .lock()
                .current
                .as_ref()
                .is_some_and(|c| c.value.ct_eq(failed) && now < c.expires_at);
            if current_not_expired {
                self.metrics
                    .inc("wxhub_foreign_refresh_total", &[("appid", appid)]);
                tracing::warn!(
                    account.appid = %appid,
                    "the platform rejected the current access token before its expiry: another system fetched or forced a token for this account. Point every system at wxhub, or use token_mode = \"stable\" everywhere"
                );
            }
        }
        if force && kind == CredKind::AccessToken && account.cfg.token_mode == TokenMode::Stable {
            let used = self.forced_today(appid).await;
            if used >= FORCED_DAILY_LIMIT {
                let reason = format!(
                    "the {FORCED_DAILY_LIMIT} forced stable_token refreshes of today are used up; the token reported bad cannot be replaced before tomorrow (Beijing time). Find the system that forces refreshes for this account"
                );
                self.set_problem(slot, Severity::Degraded, reason.clone(), now);
                return Err(CredError::Unavailable {
                    reason,
                    retry_after: 60,
                });
            }
        }
        let key = account.store_key(kind);
        let now_at_start = now;
        let fence = match &self.shared {
            None => 0,
            Some(sh) => {
                let Some(fence) = sh.holding(appid) else {
                    return Err(CredError::Unavailable {
                        reason: format!(
                            "another instance owns {appid}'s refresh; waiting for its {}",
                            kind.label()
                        ),
                        retry_after: 1,
                    });
                };
                // Checked in Redis right before the upstream call: a holder
                // that lost its lease while paused must not even ask.
                match sh.begin_fetch(appid, &key, fence, now).await {
                    Ok(true) => fence,
                    Ok(false) => {
                        self.lease_lost(appid);
                        return Err(CredError::Unavailable {
                            reason: format!(
                                "this instance lost {appid}'s refresh lease to another; waiting for its {}",
                                kind.label()
                            ),
                            retry_after: 1,
                        });
                    }
                    Err(e) => {
                        self.redis_failed(&e);
                        slot.lock().redis_retry_at = Some(Instant::now() + Duration::from_secs(1));
                        return Err(self.redis_unavailable(kind));
                    }
                }
            }
        };
        slot.lock().redis_retry_at = None;
        let started = Instant::now();
        let result = match kind {
            CredKind::AccessToken => self.fetch_token(account, force).await,
            CredKind::Ticket(t) => self.fetch_ticket(account, t).await,
        };
        let endpoint = match kind {
            CredKind::AccessToken if account.cfg.token_mode == TokenMode::Classic => {
                "/cgi-bin/token"
            }
            CredKind::AccessToken => "/cgi-bin/stable_token",
            CredKind::Ticket(_) => "/cgi-bin/ticket/getticket",
        };
        self.metrics.observe(
            "wxhub_upstream_duration_seconds",
            &[("endpoint", endpoint)],
            started.elapsed().as_secs_f64(),
        );
        let now = self.clock.now();
        let day = beijing_day(now);
        match result {
            Ok((value, expires_in)) => {
                let value = Secret::new(value);
                let record = {
                    let mut st = slot.lock();
                    // A ticket keeps its first-seen time while the platform keeps
                    // returning it: its real lifetime counts from then (§7.1).
                    let first_seen = match (&st.current, kind) {
                        (Some(c), CredKind::Ticket(_)) if c.value.ct_eq(&value) => c.first_seen,
                        _ => now,
                    };
                    let expires_at = match kind {
                        CredKind::Ticket(_) => first_seen + expires_in,
                        CredKind::AccessToken => now + expires_in,
                    };
                    if expires_at <= now {
                        drop(st);
                        return Err(self.failed(
                            account,
                            slot,
                            now,
                            FailureClass::Transient,
                            format!(
                                "the platform returned the same {} after its expiry",
                                kind.label()
                            ),
                        ));
                    }
                    let cred = Cred {
                        value,
                        expires_at,
                        fetched_at: now,
                        first_seen,
                    };
                    st.next_refresh_at = self.plan(account.cfg.token_mode, kind, &cred);
                    st.failures = 0;
                    st.blocked_until = 0;
                    st.problem = None;
                    st.last_refresh_at = Some(now);
                    let record = cred.record(fence, st.next_refresh_at);
                    st.current = Some(cred);
                    st.fence = fence;
                    st.shared_refresh_at = st.next_refresh_at;
                    st.pending_since = None;
                    record
                };
                slot.changed();
                self.persist(account, slot, &key, record, Some(now_at_start))
                    .await;
                let _ = self
                    .store
                    .bump(appid, &format!("fetches:{}", kind.label()), day)
                    .await;
                if force
                    && kind == CredKind::AccessToken
                    && account.cfg.token_mode == TokenMode::Stable
                {
                    let _ = self.store.bump(appid, "forced", day).await;
                    self.metrics
                        .inc("wxhub_forced_refresh_total", &[("appid", appid)]);
                }
                self.metrics.inc(
                    "wxhub_refresh_total",
                    &[("appid", appid), ("kind", kind.label()), ("result", "ok")],
                );
                self.metrics
                    .set("wxhub_account_healthy", &[("appid", appid)], 1.0);
                tracing::info!(account.appid = %appid, kind = kind.label(), expires_in, "refreshed");
                Ok(())
            }
            Err(e) => {
                // The platform answered with an error: nothing was minted,
                // so the mark of a fetch in flight goes. After a timeout it
                // stays: a token may have been minted on the way.
                if let Some(sh) = &self.shared
                    && e.errcode().is_some()
                    && let Err(err) = sh.end_fetch(appid, &key, fence, now_at_start).await
                {
                    self.redis_failed(&err);
                }
                let (class, reason) = classify(&e, now);
                let result_label = match class {
                    FailureClass::Transient => "upstream_error",
                    FailureClass::Quota(_) => "quota",
                    FailureClass::Config => "config_error",
                };
                self.metrics.inc(
                    "wxhub_refresh_total",
                    &[
                        ("appid", appid),
                        ("kind", kind.label()),
                        ("result", result_label),
                    ],
                );
                Err(self.failed(account, slot, now, class, reason))
            }
        }
    }

    /// Writes a fetched value: to the SQLite file, or to Redis under the
    /// lease's fencing number. A refused fenced write means a newer holder
    /// exists: its value replaces ours.
    /// `fetch_started`: when the upstream fetch that produced the value
    /// began (None for a write-back of a value already held).
    async fn persist(
        &self,
        account: &Account,
        slot: &Slot,
        key: &str,
        record: Record,
        fetch_started: Option<i64>,
    ) {
        let appid = account.cfg.appid.as_str();
        let Some(sh) = &self.shared else {
            let stored = StoredCredential {
                value: record.value,
                expires_at: record.expires_at,
                fetched_at: record.fetched_at,
                first_seen: record.first_seen,
            };
            if let Store::Sqlite(db) = self.store.as_ref()
                && let Err(e) = db.save(appid, key, &stored).await
            {
                tracing::error!(account.appid = %appid, error = %e, "cannot persist credential; a restart will fetch again");
            }
            return;
        };
        match sh.write(appid, key, &record).await {
            Ok(Some(seq)) => {
                self.redis_ok();
                let mut st = slot.lock();
                let written = Secret::new(record.value.as_str());
                if st.current.as_ref().is_some_and(|c| c.value.ct_eq(&written)) {
                    st.seq = st.seq.max(seq);
                }
            }
            Ok(None) => {
                self.redis_ok();
                self.metrics
                    .inc("wxhub_fenced_write_rejected_total", &[("appid", appid)]);
                tracing::warn!(
                    account.appid = %appid,
                    fence = record.fence,
                    "a newer refresh lease holder exists (this instance was paused or cut off): the value it fetched is discarded"
                );
                self.lease_lost(appid);
                slot.lock().current = None;
                let newer = sh.load(appid, key).await.ok().flatten();
                let newer_hash = newer.as_ref().map(|r| sha256_hex(&r.value));
                if let Some(newer) = newer {
                    self.adopt(account, slot, newer);
                }
                // In classic mode the token thrown away still killed the
                // stored one: every instance must stop promising it a full
                // life, and the owner must replace it now.
                if let Some(started) = fetch_started
                    && slot.kind == CredKind::AccessToken
                    && account.cfg.token_mode == TokenMode::Classic
                {
                    let marked = sh.mark_minted(appid, key, started).await;
                    let asked = match &newer_hash {
                        Some(h) => sh
                            .request(appid, key, Some(h), RequestKind::Doomed)
                            .await
                            .map(|_| ()),
                        None => Ok(()),
                    };
                    if let Err(e) = marked.and(asked) {
                        self.redis_failed(&e);
                    }
                }
            }
            Err(e) => {
                self.redis_failed(&e);
                slot.lock().dirty = true;
                tracing::warn!(account.appid = %appid, "the fetched value is served from memory and written to redis once it is back");
            }
        }
    }

    fn lease_lost(&self, appid: &str) {
        if let Some(sh) = &self.shared {
            sh.forget(appid);
        }
        self.metrics
            .set("wxhub_lease_held", &[("appid", appid)], 0.0);
        self.metrics
            .inc("wxhub_lease_lost_total", &[("appid", appid)]);
    }

    fn set_problem(&self, slot: &Slot, severity: Severity, reason: String, now: i64) {
        let mut st = slot.lock();
        let since = st.problem.as_ref().map_or(now, |p| p.since);
        st.problem = Some(Problem {
            severity,
            reason,
            since,
        });
    }

    /// Records a failed fetch and schedules the next attempt: exponential
    /// backoff with jitter for transient faults, the end of the window for
    /// quotas, a slow retry for configuration errors. Never a hot loop.
    fn failed(
        &self,
        account: &Account,
        slot: &Slot,
        now: i64,
        class: FailureClass,
        reason: String,
    ) -> CredError {
        let appid = account.cfg.appid.as_str();
        let s = &self.settings;
        let mut st = slot.lock();
        let valid = st.current.as_ref().is_some_and(|c| now < c.expires_at);
        st.failures = st.failures.saturating_add(1);
        let (next, severity) = match class {
            FailureClass::Transient => {
                let exp = s
                    .backoff_initial_secs
                    .saturating_mul(1i64 << st.failures.saturating_sub(1).min(20))
                    .min(s.backoff_max_secs);
                let spread = (exp / 5).max(0);
                let delay = (exp - spread + self.jitter(2 * spread)).max(1);
                (
                    now + delay,
                    if valid {
                        Severity::Degraded
                    } else {
                        Severity::Unhealthy
                    },
                )
            }
            FailureClass::Quota(until) => {
                st.blocked_until = until;
                (
                    until,
                    if valid {
                        Severity::Degraded
                    } else {
                        Severity::Unhealthy
                    },
                )
            }
            FailureClass::Config => (now + s.config_error_retry_secs, Severity::Unhealthy),
        };
        st.next_refresh_at = next;
        let reason = if valid && severity == Severity::Degraded {
            format!(
                "{reason}; still serving the current {} until it expires",
                slot.kind.label()
            )
        } else {
            reason
        };
        let changed = st.problem.as_ref().is_none_or(|p| p.reason != reason);
        let since = st.problem.as_ref().map_or(now, |p| p.since);
        st.problem = Some(Problem {
            severity,
            reason: reason.clone(),
            since,
        });
        let retry_after = (next - now).max(1);
        drop(st);
        if severity == Severity::Unhealthy {
            self.metrics
                .set("wxhub_account_healthy", &[("appid", appid)], 0.0);
        }
        // Logged when the reason changes, not on every retry.
        if changed {
            tracing::warn!(account.appid = %appid, kind = slot.kind.label(), retry_in_secs = retry_after, "{reason}");
        }
        CredError::Unavailable {
            reason,
            retry_after,
        }
    }

    async fn fetch_token(&self, account: &Account, force: bool) -> Result<(String, i64), WxError> {
        let cfg = &account.cfg;
        let resp = match cfg.token_mode {
            TokenMode::Classic => self.wx.fetch_access_token(&cfg.appid, &cfg.secret).await?,
            TokenMode::Stable => {
                self.wx
                    .fetch_stable_access_token(&cfg.appid, &cfg.secret, force)
                    .await?
            }
        };
        Ok((resp.access_token.into_secret(), resp.expires_in as i64))
    }

    /// Fetches a ticket with the current token; a token error there is a
    /// token problem: compare-and-refresh the token, then retry once.
    async fn fetch_ticket(
        &self,
        account: &Account,
        kind: TicketKind,
    ) -> Result<(String, i64), WxError> {
        let appid = account.cfg.appid.as_str();
        let mut retried = false;
        loop {
            let token = self.token_for_ticket(account).await?;
            let token = wx_api::AccessToken::new(token.value.expose_secret());
            let result = match kind {
                TicketKind::Jsapi => self
                    .wx
                    .jsapi_ticket(&token)
                    .await
                    .map(|r| (r.ticket.into_secret(), r.expires_in as i64)),
                TicketKind::WxCard => self
                    .wx
                    .card_ticket(&token)
                    .await
                    .map(|r| (r.ticket.into_secret(), r.expires_in as i64)),
            };
            match result {
                Err(e) if e.is_token_invalid() && !retried => {
                    retried = true;
                    tracing::info!(account.appid = %appid, "ticket fetch hit a token error; refreshing the token once");
                    self.invalidate_token_inline(account, token.expose_secret())
                        .await;
                }
                other => return other,
            }
        }
    }

    async fn token_for_ticket(&self, account: &Account) -> Result<Served, WxError> {
        if let Some(s) = self.served(account, &account.token) {
            return Ok(s);
        }
        match Box::pin(self.refresh(account, CredKind::AccessToken, Trigger::Missing)).await {
            Ok(()) => self
                .served(account, &account.token)
                .ok_or_else(|| WxError::InvalidInput {
                    reason: "no valid access token".into(),
                }),
            Err(e) => Err(WxError::InvalidInput {
                reason: format!("no valid access token: {e}").into(),
            }),
        }
    }

    /// `getticket` answered the token it was given with a token error: the
    /// platform itself rejected that token. Replaced under the caller
    /// budget, like a report: ticket requests are what caused it.
    async fn invalidate_token_inline(&self, account: &Account, failed: &str) {
        let _ = Box::pin(self.refresh(
            account,
            CredKind::AccessToken,
            Trigger::Reported {
                failed: Secret::new(failed),
                rejected: true,
            },
        ))
        .await;
    }

    /// Starts a refresh for every due slot, at most `max_concurrent` at once,
    /// and returns the tasks. The refresher loop lets them run; tests await them.
    pub fn start_due(self: &Arc<Self>) -> tokio::task::JoinSet<()> {
        let now = self.clock.now();
        let mut set = tokio::task::JoinSet::new();
        // Website apps (QR login) have no global token or tickets.
        let managed = self
            .accounts
            .values()
            .filter(|a| a.cfg.kind != crate::config::AccountKind::Website);
        for account in managed {
            // Shared mode: only the lease holder refreshes.
            if let Some(sh) = &self.shared
                && sh.holding(account.cfg.appid.as_str()).is_none()
            {
                continue;
            }
            let kinds = std::iter::once(CredKind::AccessToken)
                .chain(account.tickets.keys().map(|t| CredKind::Ticket(*t)));
            for kind in kinds {
                let slot = account.slot(kind).expect("slot exists");
                {
                    let mut st = slot.lock();
                    let backing_off = st.redis_retry_at.is_some_and(|t| Instant::now() < t);
                    if st.in_flight || now < st.next_refresh_at || backing_off {
                        continue;
                    }
                    st.in_flight = true;
                }
                let this = self.clone();
                let account = account.clone();
                set.spawn(async move {
                    let _permit = this.concurrency.clone().acquire_owned().await;
                    let _ = this.refresh(&account, kind, Trigger::Scheduled).await;
                    account.slot(kind).expect("slot exists").lock().in_flight = false;
                });
            }
        }
        set
    }

    /// Runs every due refresh and waits for all of them.
    pub async fn run_due(self: &Arc<Self>) {
        self.start_due().join_all().await;
    }

    /// Updates the remaining-seconds gauges.
    pub fn update_gauges(&self) {
        let now = self.clock.now();
        for account in self.accounts.values() {
            for slot in std::iter::once(&account.token).chain(account.tickets.values()) {
                let remaining = slot
                    .lock()
                    .current
                    .as_ref()
                    .map_or(0, |c| (c.expires_at - now).max(0));
                self.metrics.set(
                    "wxhub_token_seconds_remaining",
                    &[
                        ("appid", account.cfg.appid.as_str()),
                        ("kind", slot.kind.label()),
                    ],
                    remaining as f64,
                );
            }
        }
    }

    /// The refresher: looks for due work every `tick_ms`.
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.start_due().detach_all();
                    self.update_gauges();
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Shared mode: keeps the leases and the local copies current until
    /// shutdown, then gives the leases back so another instance takes over
    /// at once rather than after the lease time.
    pub async fn run_shared(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(sh) = self.shared.clone() else {
            return;
        };
        let notes = tokio::spawn(self.clone().subscriber_loop(shutdown.clone()));
        self.clone().lease_loop(shutdown).await;
        let _ = notes.await;
        sh.release_all().await;
    }

    async fn lease_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let period = self
            .shared
            .as_ref()
            .map_or(Duration::from_secs(1), |sh| sh.lease_ttl() / 3);
        loop {
            // Wake when another holder's lease would lapse, if that comes
            // before the next renewal: a dead holder's accounts are then
            // taken over within the lease time, not a renewal period later.
            let lapse = self.lease_round().await;
            let wait = lapse.map_or(period, |l| period.min(l + Duration::from_millis(5)));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn managed(&self) -> impl Iterator<Item = &Arc<Account>> {
        // Website apps (QR login) have no global token or tickets.
        self.accounts
            .values()
            .filter(|a| a.cfg.kind != crate::config::AccountKind::Website)
    }

    /// One pass over every account: renews or takes its lease; takes over
    /// what a dead holder left; follows the owner where another holds it.
    /// Returns when the soonest lease held by another instance lapses.
    pub async fn lease_round(self: &Arc<Self>) -> Option<Duration> {
        use futures::StreamExt;
        let sh = self.shared.clone()?;
        if let Err(e) = sh.heartbeat().await {
            self.redis_failed(&e);
        }
        let asked = futures::stream::iter(self.managed().cloned().collect::<Vec<_>>())
            .map(|account| {
                let sh = sh.clone();
                async move {
                    let appid = account.cfg.appid.as_str();
                    let had = sh.holding(appid).is_some();
                    let cooling = account
                        .cooling_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_some_and(|t| Instant::now() < t);
                    // Handed over a moment ago: leave it to the others.
                    let outcome = if cooling && !had {
                        Ok(LeaseOutcome::Other {
                            lapses_in: sh.lease_ttl(),
                        })
                    } else {
                        sh.acquire(appid).await
                    };
                    (account, had, outcome)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let mut soonest = None;
        for (account, had, outcome) in asked {
            let appid = account.cfg.appid.as_str();
            match outcome {
                Ok(LeaseOutcome::Held { fence, new }) => {
                    self.redis_ok();
                    self.acquired(&account, fence, new).await;
                }
                Ok(LeaseOutcome::Other { lapses_in }) => {
                    soonest = Some(soonest.map_or(lapses_in, |s: Duration| s.min(lapses_in)));
                    self.redis_ok();
                    account
                        .settled
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    if had {
                        self.lease_lost(appid);
                        tracing::warn!(account.appid = %appid, "another instance took over the account's refresh");
                    }
                    self.metrics
                        .set("wxhub_lease_held", &[("appid", appid)], 0.0);
                    self.follow(&account).await;
                }
                Err(e) => {
                    self.redis_failed(&e);
                    if had {
                        tracing::warn!(account.appid = %appid, "cannot renew the refresh lease: refreshing stops when it lapses");
                    }
                }
            }
        }
        self.balance(&sh).await;
        soonest
    }

    /// Hands leases over while this instance holds more than its share
    /// (the accounts divided by the instances heard lately). Only after the
    /// surplus has lasted longer than a lease, so the share of an instance
    /// that just died is not shuffled around while its heartbeat ages out.
    /// A handover costs no fetch: the next owner adopts what Redis holds.
    async fn balance(&self, sh: &Shared) {
        use std::sync::atomic::Ordering;
        let total = self.managed().count();
        let share = total.div_ceil(sh.live_instances());
        let held = sh.held_count();
        if held <= share {
            self.over_share.store(0, Ordering::Relaxed);
            return;
        }
        if self.over_share.fetch_add(1, Ordering::Relaxed) < 4 {
            return;
        }
        let mut surplus = held - share;
        let cooldown = sh.lease_ttl() * 2;
        for account in self.managed() {
            if surplus == 0 {
                break;
            }
            let appid = account.cfg.appid.as_str();
            if sh.holding(appid).is_none() {
                continue;
            }
            // Never in the middle of a refresh.
            let guards: Vec<_> = account
                .slots()
                .map_while(|slot| slot.fetch.try_lock().ok())
                .collect();
            if guards.len() != account.slots().count() {
                continue;
            }
            *account
                .cooling_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + cooldown);
            account.settled.store(false, Ordering::Relaxed);
            if let Err(e) = sh.release(appid).await {
                self.redis_failed(&e);
                return;
            }
            drop(guards);
            self.metrics
                .set("wxhub_lease_held", &[("appid", appid)], 0.0);
            self.metrics
                .inc("wxhub_lease_handed_over_total", &[("appid", appid)]);
            tracing::info!(account.appid = %appid, held, share, "handing the account's refresh over to balance the instances");
            surplus -= 1;
        }
        self.over_share.store(0, Ordering::Relaxed);
    }

    /// After a lease was taken or renewed: a new owner takes over (again,
    /// until that succeeds); a settled one writes back what Redis missed.
    async fn acquired(&self, account: &Account, fence: u64, new: bool) {
        use std::sync::atomic::Ordering;
        let appid = account.cfg.appid.as_str();
        self.metrics
            .set("wxhub_lease_held", &[("appid", appid)], 1.0);
        if new {
            account.settled.store(false, Ordering::Relaxed);
            self.metrics
                .inc("wxhub_lease_acquired_total", &[("appid", appid)]);
            tracing::info!(account.appid = %appid, fence, "this instance now owns the account's refresh");
        }
        if !account.settled.load(Ordering::Relaxed) {
            let done = self.take_over(account, fence).await;
            account.settled.store(done, Ordering::Relaxed);
        } else {
            self.flush_dirty(account, fence).await;
        }
    }

    /// A new owner's first look: adopt what Redis holds, write back a newer
    /// value held here (Redis restarted empty, or failed over and lost the
    /// last write), and refresh at once if the previous owner died in the
    /// middle of a fetch. Returns false if Redis did not answer: the next
    /// round tries again.
    async fn take_over(&self, account: &Account, fence: u64) -> bool {
        let Some(sh) = &self.shared else { return true };
        let appid = account.cfg.appid.as_str();
        for slot in account.slots() {
            // No refresh of this slot may run between the read and the
            // write-back, or the write-back could replace its newer value.
            let _fetching = slot.fetch.lock().await;
            let now = self.clock.now();
            let key = account.store_key(slot.kind);
            let rec = match sh.load(appid, &key).await {
                Ok(r) => r,
                Err(e) => {
                    self.redis_failed(&e);
                    return false;
                }
            };
            let stored_seq = rec.as_ref().map(|r| r.seq);
            let interrupted = rec.as_ref().and_then(|r| r.pending_since);
            if let Some(rec) = rec {
                self.adopt(account, slot, rec);
            }
            let mine = {
                let mut st = slot.lock();
                if interrupted.is_some()
                    && slot.kind == CredKind::AccessToken
                    && account.cfg.token_mode == TokenMode::Classic
                {
                    st.next_refresh_at = st.next_refresh_at.min(now);
                }
                let newer_here = stored_seq.is_none_or(|s| st.seq > s);
                st.current
                    .as_ref()
                    .filter(|c| now < c.expires_at && newer_here)
                    .map(|c| c.record(fence, st.next_refresh_at))
            };
            if let Some(record) = mine {
                tracing::info!(account.appid = %appid, kind = slot.kind.label(), "redis lacks the value held here; writing it back");
                self.persist(account, slot, &key, record, None).await;
            }
        }
        true
    }

    /// Writes back values fetched while Redis was away.
    async fn flush_dirty(&self, account: &Account, fence: u64) {
        for slot in account.slots() {
            if !slot.lock().dirty {
                continue;
            }
            let _fetching = slot.fetch.lock().await;
            let record = {
                let st = slot.lock();
                if !st.dirty {
                    continue;
                }
                st.current
                    .as_ref()
                    .map(|c| c.record(fence, st.next_refresh_at))
            };
            if let Some(record) = record {
                slot.lock().dirty = false;
                self.persist(account, slot, &account.store_key(slot.kind), record, None)
                    .await;
            }
        }
    }

    /// A follower re-reads what is due, in case a note was missed.
    async fn follow(&self, account: &Account) {
        let now = self.clock.now();
        for slot in account.slots() {
            let due = {
                let st = slot.lock();
                now >= st.next_refresh_at || st.current.as_ref().is_none_or(|c| now >= c.expires_at)
            };
            if due {
                self.reload(account, slot).await;
            }
        }
    }

    async fn reload(&self, account: &Account, slot: &Slot) {
        let Some(sh) = &self.shared else { return };
        match sh
            .load(account.cfg.appid.as_str(), &account.store_key(slot.kind))
            .await
        {
            Ok(Some(rec)) => {
                self.adopt(account, slot, rec);
            }
            Ok(None) => {}
            Err(e) => self.redis_failed(&e),
        }
    }

    async fn subscriber_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.subscribe(&mut shutdown).await {
                Ok(()) => return,
                Err(e) => self.redis_failed(&e),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Listens for notes until shutdown (`Ok`) or until the connection
    /// breaks. Every (re)connection starts with a full re-read, so notes
    /// missed while away cost nothing.
    async fn subscribe(
        self: &Arc<Self>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        use futures::StreamExt;
        let sh = self.shared.clone().expect("shared mode");
        let mut pubsub = sh.redis().client().get_async_pubsub().await?;
        let changes = sh.changes_channel();
        pubsub.subscribe(&changes).await?;
        pubsub.subscribe(sh.requests_channel()).await?;
        self.redis_ok();
        for account in self.managed() {
            for slot in account.slots() {
                self.reload(account, slot).await;
            }
        }
        let mut messages = pubsub.on_message();
        // A connection cut without a reset stays silent forever: not hearing
        // our own heartbeat (sent every lease round) for this long means
        // the connection is dead.
        let silence = sh.lease_ttl() * 2;
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err(StoreError::new("redis pub/sub connection closed"));
                    };
                    let payload: String = msg.get_payload().unwrap_or_default();
                    let request = msg.get_channel_name() != changes;
                    match Note::parse(request, &payload) {
                        Some(Note::Heartbeat { instance }) => {
                            if instance == sh.instance() {
                                heard = tokio::time::Instant::now();
                            }
                            sh.heard(&instance);
                        }
                        Some(note) => self.on_note(note),
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(heard + silence) => {
                    return Err(StoreError::new("redis pub/sub connection silent; reconnecting"));
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    fn on_note(self: &Arc<Self>, note: Note) {
        let this = self.clone();
        match note {
            Note::Heartbeat { .. } => {}
            Note::Refused {
                appid,
                kind,
                failed_sha256,
                retry_after,
                reason,
            } => {
                if let Some(slot) = self.accounts.get(&appid).and_then(|a| a.slot_by_key(&kind)) {
                    slot.refused.send_replace(Some(Refusal {
                        failed_sha256,
                        reason,
                        retry_after,
                    }));
                }
            }
            Note::Changed { appid, kind } => {
                let Some(account) = self.accounts.get(&appid).cloned() else {
                    return;
                };
                tokio::spawn(async move {
                    if let Some(slot) = account.slot_by_key(&kind) {
                        this.reload(&account, slot).await;
                    }
                });
            }
            Note::Request {
                appid,
                kind,
                failed_sha256,
                why,
            } => {
                let Some(account) = self.accounts.get(&appid).cloned() else {
                    return;
                };
                let owner = self
                    .shared
                    .as_ref()
                    .is_some_and(|sh| sh.holding(&appid).is_some());
                let Some(slot) = account.slot_by_key(&kind).filter(|_| owner) else {
                    return;
                };
                let trigger = match failed_sha256 {
                    None => Trigger::Missing,
                    Some(hash) => {
                        let current = slot.lock().current.as_ref().map(|c| c.value.clone());
                        match current {
                            Some(v) if sha256_hex(v.expose_secret()) == hash => match why {
                                RequestKind::Doomed => {
                                    tracing::info!(account.appid = %appid, "a paused instance's thrown-away fetch doomed the current token; replacing it");
                                    Trigger::Doomed(v)
                                }
                                RequestKind::Rejected => Trigger::Reported {
                                    failed: v,
                                    rejected: true,
                                },
                                RequestKind::Plain => Trigger::Reported {
                                    failed: v,
                                    rejected: false,
                                },
                            },
                            // Already replaced: the asker gets the change note.
                            _ => return,
                        }
                    }
                };
                let kind = slot.kind;
                let key = account.store_key(kind);
                let reported = match &trigger {
                    Trigger::Reported { failed, .. } => Some(sha256_hex(failed.expose_secret())),
                    _ => None,
                };
                tokio::spawn(async move {
                    let refused = this.refresh(&account, kind, trigger).await;
                    // The asker waits for a change; tell it none is coming.
                    if let (
                        Err(CredError::OverBudget {
                            reason,
                            retry_after,
                        }),
                        Some(hash),
                        Some(sh),
                    ) = (refused, reported, this.shared.as_ref())
                        && let Err(e) = sh
                            .refused(
                                account.cfg.appid.as_str(),
                                &key,
                                &hash,
                                retry_after,
                                &reason,
                            )
                            .await
                    {
                        this.redis_failed(&e);
                    }
                });
            }
        }
    }

    /// Every account's state, with today's fetch counts from the store.
    pub async fn status(&self) -> Vec<AccountStatus> {
        self.status_with(true).await
    }

    /// Every account's state, from memory only: `/readyz` must answer at
    /// once, even while the store does not.
    pub async fn status_now(&self) -> Vec<AccountStatus> {
        self.status_with(false).await
    }

    async fn status_with(&self, counts_from_store: bool) -> Vec<AccountStatus> {
        let now = self.clock.now();
        let day = beijing_day(now);
        let mut counts = BTreeMap::new();
        for appid in self.accounts.keys().filter(|_| counts_from_store) {
            let fetches = self
                .store
                .counter(appid, "fetches:access_token", day)
                .await
                .unwrap_or(0);
            let forced = self.store.counter(appid, "forced", day).await.unwrap_or(0);
            counts.insert(appid.as_str(), (fetches, forced));
        }
        self.accounts
            .values()
            .map(|a| {
                let appid = a.cfg.appid.as_str();
                let slots: Vec<SlotStatus> = std::iter::once(&a.token)
                    .chain(a.tickets.values())
                    .map(|slot| {
                        let st = slot.lock();
                        let cur = st.current.as_ref();
                        SlotStatus {
                            kind: slot.kind.label(),
                            valid: cur.is_some_and(|c| now < c.expires_at),
                            age_secs: cur.map(|c| now - c.fetched_at),
                            remaining_secs: cur.map(|c| (c.expires_at - now).max(0)),
                            last_refresh_at: st.last_refresh_at,
                            next_refresh_at: st.next_refresh_at,
                            failures: st.failures,
                            problem: st.problem.clone(),
                        }
                    })
                    .collect();
                let problem = slots
                    .iter()
                    .filter_map(|s| s.problem.clone())
                    .max_by_key(|p| p.severity == Severity::Unhealthy);
                AccountStatus {
                    appid: appid.to_string(),
                    name: a.cfg.name.clone(),
                    token_mode: a.cfg.token_mode.as_str(),
                    fetches_today: counts.get(appid).map_or(0, |c| c.0),
                    forced_today: counts.get(appid).map_or(0, |c| c.1),
                    refresh_owner: self.shared.as_ref().map(|sh| sh.holding(appid).is_some()),
                    slots,
                    problem,
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum FailureClass {
    Transient,
    Quota(i64),
    Config,
}

/// What a fetch error means for the schedule, and a reason a person can act on.
fn classify(e: &WxError, now: i64) -> (FailureClass, String) {
    match e.action() {
        Action::BackOff { until } => {
            let resume = until.resume_at(now.max(0) as u64) as i64;
            let what = match until {
                BackOffUntil::NextMinute => {
                    "the per-minute limit (45011) was hit; fetching resumes next minute".to_string()
                }
                _ => format!(
                    "the daily quota is used up (45009); fetching resumes at the next Beijing day (in {} s), or after clear_quota",
                    resume - now
                ),
            };
            (FailureClass::Quota(resume), what)
        }
        Action::FixConfiguration(part) => {
            let what = match part {
                ConfigPart::AppId => "the AppID is wrong (40013): check accounts.appid".to_string(),
                ConfigPart::AppSecret => "the AppSecret is wrong (40125): check the account's secret; it changes when reset in the console".to_string(),
                ConfigPart::IpWhitelist { ip: Some(ip) } => format!(
                    "this server's egress IP {ip} is not in the account's API IP whitelist (40164): add {ip} in the WeChat console (开发 > 基本配置 > IP白名单)"
                ),
                ConfigPart::IpWhitelist { ip: None } => "this server's egress IP is not in the account's API IP whitelist (40164): add it in the WeChat console".to_string(),
                ConfigPart::SecretFrozen => "the AppSecret is frozen (40243): an admin must unfreeze it in the WeChat console".to_string(),
                ConfigPart::AdminConfirmation => "the platform wants an admin to approve calls from this IP (89503): approve it in the WeChat message sent to the admin".to_string(),
                _ => format!("the account's configuration is wrong: {e}"),
            };
            (FailureClass::Config, what)
        }
        _ => (FailureClass::Transient, format!("upstream failure: {e}")),
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
