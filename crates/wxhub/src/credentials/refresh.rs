//! The single-flight refresh: take the slot's fetch lock, ask the policy
//! whether to fetch, pass the gates (the caller budget, the platform's
//! forced-refresh limit, the lease in shared mode), fetch, and apply what
//! the policy says of the answer: store, metrics, logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wx_api::WxError;

use super::model::{Account, CredError, CredKind, Problem, Secret, Severity, Slot, Trigger};
use super::policy::{self, Admission, Cause, FailureClass};
use super::{Credentials, Served};
use crate::clock::beijing_day;
use crate::config::TokenMode;
use crate::history::{Entry, Reason};
use crate::store::{Record, Written};

/// How often a paused slot is looked at again (an un-pause re-applies the
/// account and looks at once).
const PAUSED_RECHECK_SECS: i64 = 3600;

impl Credentials {
    /// Runs the refresh in its own task, so a caller that gives up waiting
    /// does not cancel an upstream call half-way.
    pub(crate) async fn refresh_and_wait(
        self: &Arc<Self>,
        account: Arc<Account>,
        kind: CredKind,
        trigger: Trigger,
    ) -> Result<Served, CredError> {
        let this = self.clone();
        let acc = account.clone();
        let task = tokio::spawn(async move { this.refresh(&acc, kind, trigger).await });
        let wait = self.settings.wait_for_token;
        match tokio::time::timeout(wait, task).await {
            Ok(Ok(Ok(()))) => {
                let slot = account.slot(kind).expect("slot exists");
                self.served(&account, slot).ok_or_else(|| {
                    let now = self.clock.now();
                    let st = slot.lock();
                    if st.rejected.is_some() && st.valid(now).is_some() {
                        // Its replacement failed; the next attempt is the
                        // scheduler's, after the backoff.
                        CredError::Unavailable {
                            reason: format!(
                                "the platform rejected the current {}; the hub fetches a new one at its next attempt",
                                kind.label()
                            ),
                            retry_after: (st.next_refresh_at - now).clamp(1, 300),
                        }
                    } else {
                        CredError::Unavailable {
                            reason: "the platform returned an already expired credential".into(),
                            retry_after: 1,
                        }
                    }
                })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(join)) => {
                // A panic's text is ours, not the caller's business.
                tracing::error!(account.appid = %account.appid(), kind = kind.label(), error = %join, "refresh task failed");
                Err(CredError::Unavailable {
                    reason: format!("the {} could not be refreshed; try again", kind.label()),
                    retry_after: 1,
                })
            }
            Err(_) => Err(CredError::Unavailable {
                reason: format!(
                    "no valid {} yet: a fetch from the WeChat platform is in flight",
                    kind.label()
                ),
                retry_after: 1,
            }),
        }
    }

    /// The single-flight refresh. `Ok(())` means the slot holds a valid
    /// credential now (fetched or, after the re-check, already there).
    /// Whatever happened, the slot's next deadline goes back on the
    /// schedule.
    pub(crate) async fn refresh(
        &self,
        account: &Account,
        kind: CredKind,
        trigger: Trigger,
    ) -> Result<(), CredError> {
        let slot = account.slot(kind).expect("slot exists");
        let result = self.refresh_slot(account, slot, trigger).await;
        if account.managed() {
            let next = slot.lock().next_refresh_at;
            self.reschedule(account.appid(), kind, next);
        }
        result
    }

    async fn refresh_slot(
        &self,
        account: &Account,
        slot: &Slot,
        trigger: Trigger,
    ) -> Result<(), CredError> {
        let kind = slot.kind;
        let _fetching = slot.fetch.lock().await;
        let now = self.clock.now();
        let admission = {
            let st = slot.lock();
            let cause = match &trigger {
                Trigger::Scheduled => Cause::Scheduled,
                Trigger::Missing => Cause::Missing,
                Trigger::Reported { failed, .. } => Cause::Reported {
                    current: st.is_current(failed),
                },
                Trigger::Doomed(v) => Cause::Doomed {
                    current: st.is_current(v),
                },
            };
            policy::admit(cause, &st, now)
        };
        match admission {
            Admission::Skip => return Ok(()),
            Admission::Refuse {
                reason,
                retry_after,
            } => {
                return Err(CredError::Unavailable {
                    reason,
                    retry_after,
                });
            }
            Admission::Fetch => {}
        }
        if account.cfg.paused {
            return Err(self.paused(slot, now));
        }
        self.gate(account, slot, &trigger, now).await?;
        // The fetch is let through: from now on the value the platform
        // rejected is not handed out; callers wait for its replacement
        // (bounded) instead of coming back with it.
        if let Trigger::Reported {
            failed,
            rejected: true,
        } = &trigger
        {
            let mut st = slot.lock();
            if st.is_current(failed) {
                st.rejected = Some(failed.clone());
            }
        }
        self.pace.turn().await;
        let fence = self.claim(account, slot, now).await?;
        let force = matches!(trigger, Trigger::Reported { .. });
        let (reason, client) = fetch_reason(slot, &trigger, now);
        let mut entry = Entry {
            at: now,
            kind: kind.label().to_string(),
            reason,
            client: client.map(|c| c.to_string()),
            outcome: "ok".into(),
            errcode: None,
            error: None,
            expires_in: None,
            instance: self.shared.as_ref().map(|sh| sh.instance().to_string()),
        };
        let result = match self.fetch(account, kind, force, fence).await {
            Ok((value, expires_in)) => {
                entry.expires_in = Some(expires_in);
                slot.lock().rejected = None;
                self.fetched(account, slot, fence, now, force, value, expires_in)
                    .await
            }
            Err(e) => {
                entry.errcode = e.errcode().map(wx_api::ErrCode::as_i64);
                slot.lock().last_errcode = entry.errcode;
                Err(self.fetch_failed(account, slot, fence, now, e).await)
            }
        };
        if let Err(e) = &result {
            entry.outcome = "failed".into();
            entry.error = Some(e.to_string());
        }
        entry.at = self.clock.now();
        self.record_history(account.appid(), &entry).await;
        result
    }

    /// An operator paused the account's fetches: nothing is fetched, the
    /// slot is looked at again in an hour (un-pausing applies a new
    /// configuration, which looks at once), and the status page says why.
    /// Degraded, not unhealthy, even with nothing left to serve: the pause
    /// is deliberate and must not take the hub out of a load balancer.
    fn paused(&self, slot: &Slot, now: i64) -> CredError {
        let reason = format!(
            "fetching the {} is paused by an operator (paused = true); what the store holds is served while it is valid",
            slot.kind.label()
        );
        slot.lock().next_refresh_at = now + PAUSED_RECHECK_SECS;
        self.set_problem(slot, Severity::Degraded, reason.clone(), now);
        CredError::Unavailable {
            reason,
            retry_after: 60,
        }
    }

    /// Adds an entry to the account's refresh history; a failure to write
    /// it is logged, never a reason to fail the refresh.
    pub(crate) async fn record_history(&self, appid: &str, entry: &Entry) {
        let keep_from = entry.at - self.settings.history_days * 86400;
        if let Err(e) = self
            .store
            .history_add(
                appid,
                entry,
                keep_from,
                self.settings.history_max_per_account,
            )
            .await
        {
            tracing::warn!(account.appid = %appid, error = %e, "cannot write the refresh history");
        }
    }

    /// What a caller-triggered fetch must pass: the caller budget, the
    /// foreign-refresh alarm, and in stable mode the platform's 20 forced
    /// refreshes a day.
    async fn gate(
        &self,
        account: &Account,
        slot: &Slot,
        trigger: &Trigger,
        now: i64,
    ) -> Result<(), CredError> {
        let Trigger::Reported { failed, rejected } = trigger else {
            return Ok(());
        };
        self.caller_budget(account, slot).await?;
        let appid = account.appid();
        let is_token = slot.kind == CredKind::AccessToken;
        // A foreign refresh is one the platform confirmed: the current token
        // rejected before its expiry, and not by a fetch of ours.
        if *rejected
            && is_token
            && slot
                .lock()
                .valid(now)
                .is_some_and(|c| c.value.ct_eq(failed))
        {
            self.metrics
                .inc("wxhub_foreign_refresh_total", &[("appid", appid)]);
            tracing::warn!(
                account.appid = %appid,
                "the platform rejected the current access token before its expiry: another system fetched or forced a token for this account. Point every system at wxhub, or use token_mode = \"stable\" everywhere"
            );
        }
        if is_token
            && account.cfg.token_mode == TokenMode::Stable
            && !policy::forced_left(self.forced_today(appid).await)
        {
            let reason = policy::forced_exhausted_reason();
            self.set_problem(slot, Severity::Degraded, reason.clone(), now);
            return Err(CredError::Unavailable {
                reason,
                retry_after: 60,
            });
        }
        Ok(())
    }

    /// Shared mode: the lease's fencing number, checked in Redis right
    /// before the upstream call (a holder that lost its lease while paused
    /// must not even ask). Alone: 0.
    async fn claim(&self, account: &Account, slot: &Slot, now: i64) -> Result<u64, CredError> {
        let Some(sh) = &self.shared else {
            return Ok(0);
        };
        let appid = account.appid();
        let kind = slot.kind;
        let Some(fence) = sh.holding(appid) else {
            return Err(CredError::Unavailable {
                reason: format!(
                    "another instance owns {appid}'s refresh; waiting for its {}",
                    kind.label()
                ),
                retry_after: 1,
            });
        };
        // An account added since the partition was taken is stamped first:
        // its fenced writes check the stamp.
        if self.stamp_account(account, fence).await.is_none() {
            return Err(CredError::Unavailable {
                reason: format!(
                    "this instance cannot claim {appid}'s refresh now; waiting for its {}",
                    kind.label()
                ),
                retry_after: 1,
            });
        }
        let key = account.store_key(kind);
        match self
            .store
            .begin_fetch(appid, &key, &sh.holder(fence), now)
            .await
        {
            Ok(true) => {
                slot.lock().shared.redis_retry_at = None;
                Ok(fence)
            }
            Ok(false) => {
                self.lease_lost(appid);
                Err(CredError::Unavailable {
                    reason: format!(
                        "this instance lost {appid}'s refresh lease to another; waiting for its {}",
                        kind.label()
                    ),
                    retry_after: 1,
                })
            }
            Err(e) => {
                self.redis_failed(&e);
                slot.lock().shared.redis_retry_at = Some(Instant::now() + Duration::from_secs(1));
                Err(self.redis_unavailable(kind))
            }
        }
    }

    /// A value came back: hold it, plan its refresh, store it, count it.
    #[expect(clippy::too_many_arguments, reason = "one fetch's facts, applied once")]
    async fn fetched(
        &self,
        account: &Account,
        slot: &Slot,
        fence: u64,
        started: i64,
        force: bool,
        value: String,
        expires_in: i64,
    ) -> Result<(), CredError> {
        let appid = account.appid();
        let kind = slot.kind;
        let now = self.clock.now();
        let accepted = {
            let st = slot.lock();
            policy::accept(
                kind,
                st.current.as_ref(),
                Secret::new(value),
                expires_in,
                now,
            )
        };
        let cred = match accepted {
            Ok(c) => c,
            Err(reason) => {
                return Err(self.apply_failure(
                    account,
                    slot,
                    now,
                    FailureClass::Transient,
                    reason,
                ));
            }
        };
        let record = {
            let mut st = slot.lock();
            st.next_refresh_at = policy::plan(
                &self.settings,
                account.cfg.token_mode,
                kind,
                &cred,
                Self::jitter(),
            );
            st.failures = 0;
            st.blocked_until = 0;
            st.problem = None;
            st.last_errcode = None;
            st.last_refresh_at = Some(now);
            let record = cred.record(fence, st.next_refresh_at);
            st.current = Some(cred);
            st.shared.fence = fence;
            st.shared.refresh_at = st.next_refresh_at;
            st.shared.pending_since = None;
            record
        };
        slot.changed();
        self.persist(
            account,
            slot,
            &account.store_key(kind),
            record,
            Some(started),
        )
        .await;
        self.count_fetch(account, kind, force, now).await;
        tracing::info!(account.appid = %appid, kind = kind.label(), expires_in, "refreshed");
        Ok(())
    }

    /// Today's counters (what the console and the forced-refresh limit
    /// read) and the metrics of a successful fetch.
    async fn count_fetch(&self, account: &Account, kind: CredKind, force: bool, now: i64) {
        let appid = account.appid();
        let day = beijing_day(now);
        let _ = self
            .store
            .bump(appid, &format!("fetches:{}", kind.label()), day)
            .await;
        if force && kind == CredKind::AccessToken && account.cfg.token_mode == TokenMode::Stable {
            let _ = self.store.bump(appid, "forced", day).await;
            self.metrics
                .inc("wxhub_forced_refresh_total", &[("appid", appid)]);
        }
        self.metrics.inc(
            "wxhub_refresh_total",
            &[("appid", appid), ("kind", kind.label()), ("result", "ok")],
        );
    }

    /// The platform (or the way to it) failed.
    async fn fetch_failed(
        &self,
        account: &Account,
        slot: &Slot,
        fence: u64,
        started: i64,
        e: WxError,
    ) -> CredError {
        let appid = account.appid();
        let now = self.clock.now();
        // The platform answered with an error: nothing was minted, so the
        // mark of a fetch in flight goes. After a timeout it stays: a token
        // may have been minted on the way.
        if let Some(sh) = &self.shared
            && e.errcode().is_some()
            && let Err(err) = self
                .store
                .end_fetch(
                    appid,
                    &account.store_key(slot.kind),
                    &sh.holder(fence),
                    started,
                )
                .await
        {
            self.redis_failed(&err);
        }
        let (class, reason) = policy::classify(&e, now);
        self.metrics.inc(
            "wxhub_refresh_total",
            &[
                ("appid", appid),
                ("kind", slot.kind.label()),
                ("result", class.label()),
            ],
        );
        self.apply_failure(account, slot, now, class, reason)
    }

    /// Writes a fetched value: to the SQLite file, or to Redis under the
    /// lease's fencing number. A refused fenced write means a newer holder
    /// exists: its value replaces ours. `fetch_started`: when the upstream
    /// fetch that produced the value began (None for a write-back of a value
    /// already held).
    pub(crate) async fn persist(
        &self,
        account: &Account,
        slot: &Slot,
        key: &str,
        record: Record,
        fetch_started: Option<i64>,
    ) {
        let appid = account.appid();
        let holder = self
            .shared
            .as_ref()
            .map_or_else(String::new, |sh| sh.holder(record.fence));
        match self
            .store
            .write_credential(appid, key, &record, &holder)
            .await
        {
            Ok(Written::Stored(seq)) => {
                self.redis_ok();
                let mut st = slot.lock();
                if st.is_current(&record.value) {
                    st.shared.seq = st.shared.seq.max(seq);
                }
            }
            Ok(Written::Refused) => {
                self.write_refused(account, slot, key, &record, fetch_started)
                    .await
            }
            Err(e) if self.shared.is_some() => {
                self.redis_failed(&e);
                slot.lock().shared.dirty = true;
                tracing::warn!(account.appid = %appid, "the fetched value is served from memory and written to redis once it is back");
            }
            Err(e) => {
                tracing::error!(account.appid = %appid, error = %e, "cannot persist credential; a restart will fetch again");
            }
        }
    }

    /// Redis refused our write: a newer lease holder exists. Its value
    /// replaces ours; in classic mode the token thrown away still killed the
    /// stored one, so every instance must stop promising it a full life and
    /// the owner must replace it now.
    async fn write_refused(
        &self,
        account: &Account,
        slot: &Slot,
        key: &str,
        record: &Record,
        fetch_started: Option<i64>,
    ) {
        let appid = account.appid();
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
        let newer = self.store.load_credential(appid, key).await.ok().flatten();
        let newer_hash = newer
            .as_ref()
            .map(|r| super::sha256_hex(r.value.expose_secret()));
        if let Some(newer) = newer {
            self.adopt(account, slot, newer);
        }
        if let (Some(started), Some(sh)) = (fetch_started, &self.shared)
            && slot.kind == CredKind::AccessToken
            && account.cfg.token_mode == TokenMode::Classic
        {
            let marked = self.store.mark_minted(appid, key, started).await;
            let asked = match &newer_hash {
                Some(h) => sh
                    .request(
                        appid,
                        key,
                        Some(h),
                        crate::shared::note::RequestKind::Doomed,
                    )
                    .await
                    .map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = marked.and(asked) {
                self.redis_failed(&e);
            }
        }
    }

    pub(crate) fn set_problem(&self, slot: &Slot, severity: Severity, reason: String, now: i64) {
        let mut st = slot.lock();
        let since = st.problem.as_ref().map_or(now, |p| p.since);
        st.problem = Some(Problem {
            severity,
            reason,
            since,
        });
    }

    /// Applies the policy's answer to a failed fetch (see
    /// [`policy::failed`]): the next attempt, the problem shown, a log line
    /// when the reason is news.
    fn apply_failure(
        &self,
        account: &Account,
        slot: &Slot,
        now: i64,
        class: FailureClass,
        reason: String,
    ) -> CredError {
        let appid = account.appid();
        let f = {
            let mut st = slot.lock();
            let f = policy::failed(
                &self.settings,
                &st,
                slot.kind,
                class,
                reason,
                now,
                Self::jitter(),
            );
            st.failures = f.failures;
            st.next_refresh_at = f.next_refresh_at;
            if let Some(until) = f.blocked_until {
                st.blocked_until = until;
            }
            st.problem = Some(f.problem.clone());
            f
        };
        if f.news {
            tracing::warn!(account.appid = %appid, kind = slot.kind.label(), retry_in_secs = f.retry_after, "{}", f.problem.reason);
        }
        CredError::Unavailable {
            reason: f.problem.reason,
            retry_after: f.retry_after,
        }
    }

    /// Forced stable refreshes used today, from the store.
    async fn forced_today(&self, appid: &str) -> i64 {
        let day = beijing_day(self.clock.now());
        self.store.counter(appid, "forced", day).await.unwrap_or(0)
    }
}

/// A note older than this no longer explains a fetch.
const NOTE_FRESH_SECS: i64 = 120;

/// Why this fetch happens: the trigger's reason, refined by a fresh note
/// (a report's client, a takeover, a configuration change), which is used
/// up.
fn fetch_reason(slot: &Slot, trigger: &Trigger, now: i64) -> (Reason, Option<std::sync::Arc<str>>) {
    let note = slot
        .lock()
        .note
        .take()
        .filter(|n| now - n.at <= NOTE_FRESH_SECS);
    match trigger {
        Trigger::Reported { .. } => (
            Reason::Report,
            note.filter(|n| n.reason == Reason::Report)
                .and_then(|n| n.client),
        ),
        Trigger::Doomed(_) => (Reason::Doomed, None),
        Trigger::Scheduled | Trigger::Missing => {
            let base = if matches!(trigger, Trigger::Scheduled) {
                Reason::Schedule
            } else {
                Reason::Missing
            };
            match note {
                Some(n) if matches!(n.reason, Reason::Takeover | Reason::Config) => {
                    (n.reason, None)
                }
                _ => (base, None),
            }
        }
    }
}
