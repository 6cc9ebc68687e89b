//! Every decision of a credential's lifecycle, as functions of the slot's
//! state, the event, the time and a jitter value: no clock, no lock, no
//! random source, no I/O. The refresh driver (`refresh.rs`) gathers the facts,
//! asks here, and applies the answer. The rules and why they are so are in
//! docs/lifecycle.md; the tables at the end of this file hold the code to
//! them.

use wx_api::{Action, BackOffUntil, ConfigPart, WxError};

use super::model::{Cred, CredKind, Problem, Secret, Severity, SlotState};
use crate::config::{RefreshSettings, TokenMode};
use crate::store::Record;

/// A superseded classic token lives this long after the fetch that
/// replaced it (docs/lifecycle.md).
pub const TOKEN_GRACE: i64 = 300;
/// Forced `stable_token` refreshes the platform allows an account a day.
pub const FORCED_DAILY_LIMIT: i64 = 20;

/// A uniform draw from [0, 1), made by the caller, that spreads refresh
/// times: with it the decisions are deterministic and testable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter(f64);

impl Jitter {
    /// No spread: the earliest of every range.
    #[cfg(test)]
    pub const NONE: Jitter = Jitter(0.0);
    /// The most spread: the last of every range.
    #[cfg(test)]
    pub const MOST: Jitter = Jitter(0.999_999);

    /// A draw; values outside [0, 1) are clamped into it.
    pub fn new(unit: f64) -> Jitter {
        Jitter(unit.clamp(0.0, 0.999_999))
    }

    /// A whole number in `0..=max`, uniform over the draw.
    pub fn of(self, max: i64) -> i64 {
        if max <= 0 {
            return 0;
        }
        (((max + 1) as f64 * self.0) as i64).min(max)
    }
}

/// When to refresh a freshly fetched credential.
pub fn plan(s: &RefreshSettings, mode: TokenMode, kind: CredKind, cred: &Cred, j: Jitter) -> i64 {
    match (kind, mode) {
        (CredKind::AccessToken, TokenMode::Classic) => {
            let life = (cred.expires_at - cred.fetched_at).max(2);
            // Never more than half the lifetime, so short-lived tokens
            // cannot cause a refresh loop.
            let margin = s.classic_margin_secs.min(life / 2);
            cred.expires_at - margin - j.of(s.jitter_secs.min(margin / 2))
        }
        (CredKind::AccessToken, TokenMode::Stable) => {
            // An earlier call returns the same token; the platform only
            // rotates inside the last 300 s.
            let room = (TOKEN_GRACE - 1 - s.stable_refresh_before_secs).max(0);
            cred.expires_at - s.stable_refresh_before_secs - j.of(s.jitter_secs.min(room))
        }
        // The platform hands out a new ticket only once the old one has
        // expired, so there is nothing to gain by asking earlier.
        (CredKind::Ticket(_), _) => cred.expires_at + j.of(s.jitter_secs.min(5)),
    }
}

/// When the next fetch may replace (and so, in classic mode, doom) the
/// current value. Alone, the hub knows its own plan; shared, it goes by the
/// owner's plan, or by the start of the owner's fetch in flight, which may
/// have minted a new token before its owner died.
pub fn next_fetch(shared: bool, st: &SlotState, now: i64) -> i64 {
    match (shared, st.shared.pending_since) {
        (false, _) => st.next_refresh_at.max(now),
        (true, Some(started)) => started,
        (true, None) => st.shared.refresh_at.max(now),
    }
}

/// The `expires_at` to tell clients: in classic mode the token dies 300 s
/// after the next fetch, so nobody may cache it past that.
pub fn serve_until(
    s: &RefreshSettings,
    mode: TokenMode,
    kind: CredKind,
    cred: &Cred,
    next_fetch: i64,
) -> i64 {
    match (kind, mode) {
        (CredKind::AccessToken, TokenMode::Classic) => cred
            .expires_at
            .min(next_fetch + TOKEN_GRACE - s.client_safety_secs),
        _ => cred.expires_at,
    }
}

/// Why a fetch is being considered, as the policy needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The schedule says the slot is due.
    Scheduled,
    /// A caller has no valid value.
    Missing,
    /// A caller reported a value; `current` when it is still the held one.
    Reported {
        /// The reported value is the current one.
        current: bool,
    },
    /// A value was doomed by a thrown-away fetch; `current` as above.
    Doomed {
        /// The doomed value is the current one.
        current: bool,
    },
}

/// Whether to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Nothing to do: what is held will do (the re-check after the lock).
    Skip,
    /// Not now: the backoff after a failure, or a quota pause.
    Refuse {
        /// Why, in words.
        reason: String,
        /// Seconds until trying makes sense.
        retry_after: i64,
    },
    /// Fetch.
    Fetch,
}

/// Whether a fetch for `cause` goes ahead at `now`.
pub fn admit(cause: Cause, st: &SlotState, now: i64) -> Admission {
    let valid = st.valid(now).is_some();
    let skip = match cause {
        Cause::Scheduled => now < st.next_refresh_at && st.current.is_some(),
        Cause::Missing => valid,
        Cause::Reported { current } | Cause::Doomed { current } => valid && !current,
    };
    if skip {
        return Admission::Skip;
    }
    let reason = |fallback: &str| {
        st.problem
            .as_ref()
            .map_or_else(|| fallback.to_string(), |p| p.reason.clone())
    };
    // Callers with no token respect the backoff too: a client retrying in a
    // loop must not become an upstream hot loop.
    if st.failures > 0 && now < st.next_refresh_at && cause != Cause::Scheduled {
        return Admission::Refuse {
            reason: reason("retrying after an upstream failure"),
            retry_after: st.next_refresh_at - now,
        };
    }
    if now < st.blocked_until {
        return Admission::Refuse {
            reason: reason("fetching is paused"),
            retry_after: st.blocked_until - now,
        };
    }
    Admission::Fetch
}

/// Whether a forced stable refresh is still possible today, given how many
/// the hub used.
pub fn forced_left(used_today: i64) -> bool {
    used_today < FORCED_DAILY_LIMIT
}

/// The reason given once the platform's forced refreshes are used up.
pub fn forced_exhausted_reason() -> String {
    format!(
        "the {FORCED_DAILY_LIMIT} forced stable_token refreshes of today are used up; the token reported bad cannot be replaced before tomorrow (Beijing time). Find the system that forces refreshes for this account"
    )
}

/// A fetched value as the slot will hold it. A ticket keeps its first-seen
/// time while the platform keeps returning it: its real lifetime counts
/// from then. A value that is already dead is a failure.
///
/// # Errors
/// The reason, when the platform returned a value past its expiry.
pub fn accept(
    kind: CredKind,
    current: Option<&Cred>,
    value: Secret,
    expires_in: i64,
    now: i64,
) -> Result<Cred, String> {
    let first_seen = match (current, kind) {
        (Some(c), CredKind::Ticket(_)) if c.value.ct_eq(&value) => c.first_seen,
        _ => now,
    };
    let expires_at = match kind {
        CredKind::Ticket(_) => first_seen + expires_in,
        CredKind::AccessToken => now + expires_in,
    };
    if expires_at <= now {
        return Err(format!(
            "the platform returned the same {} after its expiry",
            kind.label()
        ));
    }
    Ok(Cred {
        value,
        expires_at,
        fetched_at: now,
        first_seen,
    })
}

/// What a fetch error means for the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry with exponential backoff.
    Transient,
    /// A quota is used up: nothing until this time.
    Quota(i64),
    /// A person must fix the configuration: retry slowly.
    Config,
    /// Nothing here can fix it and it may last for days (a restricted
    /// account, an authorization to renew on the platform): a check an
    /// hour, not a fetch every few minutes that costs the platform's quota.
    Suspended,
}

/// How often a suspended account is tried again, at the least.
pub const SUSPENDED_RETRY_SECS: i64 = 3600;

impl FailureClass {
    /// For the `result` label of `wxhub_refresh_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::Transient => "upstream_error",
            FailureClass::Quota(_) => "quota",
            // Among the documented results: a person must act.
            FailureClass::Config | FailureClass::Suspended => "config_error",
        }
    }
}

/// What a fetch error means, and a reason a person can act on.
pub fn classify(e: &WxError, now: i64) -> (FailureClass, String) {
    // A third-party platform's authorizer: these need a person, not a retry
    // loop (component-platform.md §12).
    match e.errcode().map(wx_api::ErrCode::as_i64) {
        Some(61003) => return (FailureClass::Config, "the account's administrator revoked the third-party platform's authorization (61003): it must authorize the platform again".to_string()),
        Some(61023) => return (FailureClass::Suspended, "the platform rejected the authorizer_refresh_token (61023) and api_get_authorizer_list did not give a working one: the account's administrator must authorize the third-party platform again (a new authorization is taken at once; until then the hub tries hourly)".to_string()),
        Some(50002) => return (FailureClass::Suspended, "the account is restricted (50002 user limited): it must be lifted on the WeChat side; the hub tries hourly until then".to_string()),
        _ => {}
    }
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
        Action::FixConfiguration(part) => (FailureClass::Config, config_reason(part, e)),
        _ => (FailureClass::Transient, format!("upstream failure: {e}")),
    }
}

fn config_reason(part: ConfigPart, e: &WxError) -> String {
    match part {
        ConfigPart::AppId => "the AppID is wrong (40013): check accounts.appid".to_string(),
        ConfigPart::AppSecret => "the AppSecret is wrong (40125): check the account's secret; it changes when reset in the console".to_string(),
        ConfigPart::IpWhitelist { ip: Some(ip) } => format!(
            "this server's egress IP {ip} is not in the account's API IP whitelist (40164): add {ip} in the WeChat console (开发 > 基本配置 > IP白名单)"
        ),
        ConfigPart::IpWhitelist { ip: None } => "this server's egress IP is not in the account's API IP whitelist (40164): add it in the WeChat console".to_string(),
        ConfigPart::SecretFrozen => "the AppSecret is frozen (40243): an admin must unfreeze it in the WeChat console".to_string(),
        ConfigPart::AdminConfirmation => "the platform wants an admin to approve calls from this IP (89503): approve it in the WeChat message sent to the admin".to_string(),
        ConfigPart::VerifyTicket => "the platform refused the component_verify_ticket (61005 expired / 61006 invalid): pushes to the component's authorization-event URL (/component/{appid}/events) are not arriving; check that URL, its token and key in the WeChat open platform console".to_string(),
        _ => format!("the account's configuration is wrong: {e}"),
    }
}

/// The slot after a failed fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The next attempt.
    pub next_refresh_at: i64,
    /// Set for quotas: no fetch before then.
    pub blocked_until: Option<i64>,
    /// Consecutive failures, this one included.
    pub failures: u32,
    /// What the account shows.
    pub problem: Problem,
    /// Seconds until the next attempt, at least 1.
    pub retry_after: i64,
    /// The reason differs from the last one: worth a log line.
    pub news: bool,
}

/// Schedules the next attempt after a failure: exponential backoff for
/// transient faults (the delay capped at `backoff_max_secs`, then spread by
/// ±20 %, so at most 1.2 times the cap), the end of the window for quotas, a
/// slow retry for configuration errors. Never a hot loop.
pub fn failed(
    s: &RefreshSettings,
    st: &SlotState,
    kind: CredKind,
    class: FailureClass,
    reason: String,
    now: i64,
    j: Jitter,
) -> Failed {
    let valid = st.valid(now).is_some();
    let failures = st.failures.saturating_add(1);
    let mild = if valid {
        Severity::Degraded
    } else {
        Severity::Unhealthy
    };
    let (next, severity, blocked_until) = match class {
        FailureClass::Transient => {
            let exp = s
                .backoff_initial_secs
                .saturating_mul(1i64 << failures.saturating_sub(1).min(20))
                .min(s.backoff_max_secs);
            let spread = (exp / 5).max(0);
            ((now + (exp - spread + j.of(2 * spread)).max(1)), mild, None)
        }
        FailureClass::Quota(until) => (until, mild, Some(until)),
        FailureClass::Config => (now + s.config_error_retry_secs, Severity::Unhealthy, None),
        FailureClass::Suspended => (
            now + s.config_error_retry_secs.max(SUSPENDED_RETRY_SECS),
            Severity::Unhealthy,
            None,
        ),
    };
    let reason = if valid && severity == Severity::Degraded {
        format!(
            "{reason}; still serving the current {} until it expires",
            kind.label()
        )
    } else {
        reason
    };
    Failed {
        next_refresh_at: next,
        blocked_until,
        failures,
        news: st.problem.as_ref().is_none_or(|p| p.reason != reason),
        problem: Problem {
            severity,
            since: st.problem.as_ref().map_or(now, |p| p.since),
            reason,
        },
        retry_after: (next - now).max(1),
    }
}

/// How an adopted value's refresh is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Alone: plan it as a fetch of our own.
    Plan,
    /// Shared: follow the owner's plan.
    FollowOwner(i64),
    /// The owner's own write come back: keep its schedule (and backoff).
    Keep,
}

/// What to do with a value read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// Older than (or as old as an expired copy of) what is held.
    Ignore,
    /// The same write seen again: only the owner's marks move.
    MarksOnly,
    /// Take it; `changed` when the value differs from the held one.
    Take {
        /// The value differs.
        changed: bool,
        /// How its refresh is scheduled.
        schedule: Schedule,
    },
}

/// Whether a stored record replaces what the slot holds: by write sequence,
/// since reads race each other and the owner's own writes.
pub fn adopt(st: &SlotState, rec: &Record, now: i64, shared: bool, holding: bool) -> Adoption {
    if rec.expires_at <= now {
        return Adoption::Ignore;
    }
    if st.current.is_some() {
        if rec.seq < st.shared.seq {
            return Adoption::Ignore;
        }
        if rec.seq == st.shared.seq {
            return Adoption::MarksOnly;
        }
    }
    let same = st.is_current(&rec.value);
    let schedule = match (shared, same && holding) {
        (false, _) => Schedule::Plan,
        (true, true) => Schedule::Keep,
        (true, false) => Schedule::FollowOwner(rec.refresh_at),
    };
    Adoption::Take {
        changed: !same,
        schedule,
    }
}

/// A new owner refreshes at once when the last owner died in the middle of
/// a classic fetch: the token it may have minted dooms the stored one.
pub fn refresh_after_takeover(kind: CredKind, mode: TokenMode, interrupted: bool) -> bool {
    interrupted && kind == CredKind::AccessToken && mode == TokenMode::Classic
}

/// A new owner writes back what it holds when Redis lacks it or holds an
/// older write (Redis restarted empty, or failed over and lost the last
/// write).
pub fn write_back(stored_seq: Option<u64>, held_seq: u64) -> bool {
    stored_seq.is_none_or(|s| held_seq > s)
}

#[cfg(test)]
mod tests;
