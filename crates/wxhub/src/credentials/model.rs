//! The words of the credentials module: what an account and its slots hold,
//! what is served, and what goes wrong. Types only, with small accessors.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use crate::config::{AccountConfig, TicketKind};
use crate::store::Record;

wx_api::secret_type!(
    /// A credential value (access token or ticket) held by the hub.
    Secret
);

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// When the hub first saw this value (tickets repeat, docs/lifecycle.md).
    pub first_seen: i64,
}

impl Cred {
    /// This value as written to the store under `fence`, with the owner's
    /// plan.
    pub(crate) fn record(&self, fence: u64, refresh_at: i64) -> Record {
        Record {
            value: self.value.clone(),
            expires_at: self.expires_at,
            fetched_at: self.fetched_at,
            first_seen: self.first_seen,
            fence,
            seq: 0,
            refresh_at,
            pending_since: None,
        }
    }

    /// A stored record's value.
    pub(crate) fn from_record(rec: &Record) -> Cred {
        Cred {
            value: rec.value.clone(),
            expires_at: rec.expires_at,
            fetched_at: rec.fetched_at,
            first_seen: rec.first_seen,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// How bad.
    pub severity: Severity,
    /// What to do, in words; never a secret.
    pub reason: String,
    /// Since when (Unix seconds).
    pub since: i64,
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
    /// The account's administrator revoked its authorization of the
    /// third-party platform it came through.
    #[error(
        "the administrator of {appid} revoked its authorization of the third-party platform {component}; the hub holds no token for it until it authorizes the platform again"
    )]
    Revoked {
        /// The account.
        appid: String,
        /// The platform.
        component: String,
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
pub(crate) enum Trigger {
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

/// What the platform said of a reported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It works: the caller's error was not about it.
    Valid,
    /// 40001, 40014 or 42001: it is dead.
    Rejected,
    /// The platform could not be asked (timeout, quota, an error of its
    /// own): treated as a report, under the caller budget.
    Unknown,
}

/// The last question about a reported value, and the answer.
#[derive(Debug, Clone)]
pub(crate) struct Confirmation {
    pub value: Secret,
    pub at: i64,
    pub verdict: Verdict,
}

/// An owner's "not replacing this one": the SHA-256 of the reported value,
/// why, when a report could refresh again, and when it was heard.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub failed_sha256: String,
    pub reason: String,
    pub retry_after: i64,
    pub heard: Instant,
}

/// Shared mode's view of a slot's value in Redis.
#[derive(Debug, Default)]
pub(crate) struct SharedMarks {
    /// The fencing number and write sequence of the current value.
    pub fence: u64,
    pub seq: u64,
    /// The owner's planned refresh.
    pub refresh_at: i64,
    /// The start of the owner's unwritten fetch.
    pub pending_since: Option<i64>,
    /// Fetched while Redis could not take the write.
    pub dirty: bool,
    /// Redis failed right before a fetch; refreshes of this slot wait until
    /// then (real time: the virtual clock may stand still).
    pub redis_retry_at: Option<Instant>,
    /// The owner's last refusal to replace a reported value.
    pub refusal: Option<Refusal>,
}

/// Everything a slot knows, behind its `std::sync::Mutex`.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    pub current: Option<Cred>,
    pub next_refresh_at: i64,
    pub failures: u32,
    pub blocked_until: i64,
    pub problem: Option<Problem>,
    pub last_refresh_at: Option<i64>,
    pub in_flight: bool,
    pub shared: SharedMarks,
    /// The last time the platform was asked whether a reported value
    /// works, and what it said: reports of the same value within the
    /// confirm window share the answer.
    pub confirmed: Option<Confirmation>,
    /// The token endpoint's quota as the last confirmation read it (classic
    /// mode): caller-triggered fetches stop at half the day's quota.
    pub quota: Option<(i64, wx_api::endpoint::quota::ApiQuota)>,
    /// A refused caller-triggered refresh was logged then; logged again
    /// only after the confirm window, not once per report.
    pub refused_logged_at: Option<i64>,
    /// Why the next fetch will happen, when it is not the trigger's own
    /// reason (a takeover, a configuration change, a report by a named
    /// client), and when that was noted: for the refresh history.
    pub note: Option<Note>,
    /// The platform's error code of the last failed fetch, cleared by a
    /// success: the console explains it as `wxhub explain` does.
    pub last_errcode: Option<i64>,
    /// The value the platform rejected on a caller's report, once a fetch
    /// to replace it was let through: no longer served (a caller would
    /// only come back with it), whatever its expiry says. Cleared by the
    /// next value fetched.
    pub rejected: Option<Secret>,
}

/// A note on why the next fetch happens; see [`SlotState::note`].
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub reason: crate::history::Reason,
    pub client: Option<std::sync::Arc<str>>,
    pub at: i64,
}

impl SlotState {
    /// The current value, if it has not expired at `now`.
    pub fn valid(&self, now: i64) -> Option<&Cred> {
        self.current.as_ref().filter(|c| now < c.expires_at)
    }

    /// Whether `value` is the current value.
    pub fn is_current(&self, value: &Secret) -> bool {
        self.current.as_ref().is_some_and(|c| c.value.ct_eq(value))
    }

    /// The current value, if it has not expired at `now` and the platform
    /// has not rejected it: what callers may be given.
    pub fn servable(&self, now: i64) -> Option<&Cred> {
        self.valid(now)
            .filter(|c| !self.rejected.as_ref().is_some_and(|r| c.value.ct_eq(r)))
    }
}

/// One credential of one account.
#[derive(Debug)]
pub struct Slot {
    pub(crate) kind: CredKind,
    state: Mutex<SlotState>,
    /// Held for the whole of a fetch: fetching is single-flight.
    pub(crate) fetch: tokio::sync::Mutex<()>,
    /// Reports arriving together share one confirmation.
    pub(crate) confirm: tokio::sync::Mutex<()>,
    /// Woken whenever the value changes or the owner refuses to replace
    /// it, for callers waiting on the owner. A `Notify` rather than a
    /// channel: it allocates nothing, and a hub holds 100,000 of them.
    pub(crate) news: tokio::sync::Notify,
}

impl Slot {
    pub(crate) fn new(kind: CredKind) -> Slot {
        Slot {
            kind,
            state: Mutex::new(SlotState::default()),
            fetch: tokio::sync::Mutex::new(()),
            confirm: tokio::sync::Mutex::new(()),
            news: tokio::sync::Notify::new(),
        }
    }

    /// The state. Sections are short and never span an `.await`.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes whoever waits for this slot's value to change.
    pub(crate) fn changed(&self) {
        self.news.notify_waiters();
    }
}

/// One account and its slots.
#[derive(Debug)]
pub struct Account {
    /// Its configuration.
    pub cfg: AccountConfig,
    pub(crate) token: Slot,
    // At most two, looked at in order: a map's node would cost kilobytes
    // per account.
    pub(crate) tickets: Box<[Slot]>,
    /// Shared mode: this instance holds the lease and has finished taking
    /// over (read, written back, checked for an interrupted fetch).
    pub(crate) settled: AtomicBool,
    /// Shared mode: the fence this account was stamped with in Redis under
    /// its partition's lease (0: not stamped by this instance). Its fenced
    /// writes check the stamp.
    pub(crate) stamped: AtomicU64,
    /// Tokens and tickets served and proxied calls, per client, since this
    /// instance started (the console's account page).
    usage: Mutex<Vec<(std::sync::Arc<str>, u64)>>,
    /// Web authorization since this instance started: people signed in,
    /// refusals, failed exchanges.
    web_auth: [std::sync::atomic::AtomicU64; 3],
}

/// How a web authorization ended, for the console's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebAuth {
    /// A result was handed over.
    SignedIn = 0,
    /// The person refused.
    Refused = 1,
    /// The code exchange (or the profile) failed.
    Failed = 2,
}

impl Account {
    pub(crate) fn new(cfg: AccountConfig) -> Account {
        let mut kinds = cfg.tickets.clone();
        kinds.sort();
        kinds.dedup();
        Account {
            token: Slot::new(CredKind::AccessToken),
            tickets: kinds
                .into_iter()
                .map(|t| Slot::new(CredKind::Ticket(t)))
                .collect(),
            settled: AtomicBool::new(false),
            stamped: AtomicU64::new(0),
            usage: Mutex::new(Vec::new()),
            web_auth: Default::default(),
            cfg,
        }
    }

    /// Counts one use by `client`.
    pub(crate) fn note_use(&self, client: &std::sync::Arc<str>) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        match usage.iter_mut().find(|(c, _)| c == client) {
            Some((_, n)) => *n += 1,
            None => usage.push((client.clone(), 1)),
        }
    }

    /// Counts a web authorization's end.
    pub(crate) fn note_web_auth(&self, how: WebAuth) {
        self.web_auth[how as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Web authorizations since this instance started: signed in, refused,
    /// failed.
    pub fn web_auth(&self) -> [u64; 3] {
        self.web_auth
            .each_ref()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Uses per client since this instance started, the most first.
    pub fn usage(&self) -> Vec<(std::sync::Arc<str>, u64)> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        usage.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        usage
    }

    /// The AppID.
    pub fn appid(&self) -> &str {
        self.cfg.appid.as_str()
    }

    /// Whether the hub keeps credentials for it (a website app, used for QR
    /// login only, has no global token or tickets).
    pub fn managed(&self) -> bool {
        self.cfg.kind != crate::config::AccountKind::Website
            && !matches!(self.cfg.via, crate::config::Via::Revoked { .. })
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = &Slot> {
        std::iter::once(&self.token).chain(self.tickets.iter())
    }

    pub(crate) fn slot_by_key(&self, key: &str) -> Option<&Slot> {
        self.slots().find(|s| self.store_key(s.kind) == key)
    }

    pub(crate) fn slot(&self, kind: CredKind) -> Option<&Slot> {
        match kind {
            CredKind::AccessToken => Some(&self.token),
            CredKind::Ticket(_) => self.tickets.iter().find(|s| s.kind == kind),
        }
    }

    /// The store key of a slot: `access_token:stable`, `ticket:jsapi`, …
    pub(crate) fn store_key(&self, kind: CredKind) -> String {
        match kind {
            CredKind::AccessToken => format!("access_token:{}", self.cfg.token_mode.as_str()),
            CredKind::Ticket(t) => format!("ticket:{}", t.as_str()),
        }
    }
}
