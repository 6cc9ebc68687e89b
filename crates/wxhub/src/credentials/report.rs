//! Callers' reports of a value the platform rejected. Nothing is refreshed
//! on a caller's word alone: the platform is asked first (one question per
//! value per confirm window), and a refresh a report causes is drawn from
//! the caller budget (docs/lifecycle.md, "Reports").

use std::sync::Arc;
use std::time::Instant;

use super::Credentials;
use super::model::{
    Account, Confirmation, CredError, CredKind, Note, ReportOutcome, Reported, Secret, Served,
    Slot, Trigger, Verdict,
};
use crate::budget::{Budget, Decision, Exhausted};
use crate::clock::beijing_day;
use crate::config::TokenMode;

impl Credentials {
    /// A caller (the client named `client`) reports that `failed` was rejected. If `failed` is still the
    /// current value, the platform is asked whether it works (reports
    /// arriving together, or within `confirm_window_secs`, share one
    /// question), and only a value the platform rejects (or cannot vouch
    /// for) is replaced, once however many report it, and within the caller
    /// budget. Returns what to use now and what the report led to.
    ///
    /// # Errors
    /// As [`Credentials::get`].
    pub async fn invalidate(
        self: &Arc<Self>,
        appid: &str,
        kind: CredKind,
        failed: &str,
        client: &str,
    ) -> Result<Reported, CredError> {
        let account = self.find(appid, kind)?;
        let slot = account.slot(kind).expect("find checked the slot");
        // For the refresh history, should the report lead to a fetch.
        slot.lock().note = Some(Note {
            reason: crate::history::Reason::Report,
            client: Some(client.into()),
            at: self.clock.now(),
        });
        let outcome = self.report(&account, slot, Secret::new(failed)).await;
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
        if !slot.lock().is_current(&failed) || !live {
            let served = match self.served(account, slot) {
                Some(s) => s,
                None => self.get(account.appid(), kind).await?,
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
            let trigger = Trigger::Reported { failed, rejected };
            self.refresh_and_wait(account.clone(), kind, trigger).await
        };
        match replaced {
            // A ticket fetched again comes back unchanged while it lives.
            Ok(served) if served.value.ct_eq(&reported) => {
                Ok(answer(served, ReportOutcome::StillValid))
            }
            Ok(served) => Ok(answer(served, ReportOutcome::Replaced)),
            // The platform said the value is dead and the hub's own fetch of
            // a new one failed (it retries with backoff, outside the
            // caller's budget): serving the dead value again would only
            // send the caller back with it. Wait for that retry instead.
            Err(CredError::OverBudget {
                reason,
                retry_after,
            }) if rejected && slot.lock().failures > 0 && slot.lock().is_current(&reported) => {
                let now = self.clock.now();
                let retry = slot.lock().next_refresh_at - now;
                Err(CredError::Unavailable {
                    reason: format!(
                        "the platform rejected the current {}, and {}; the hub replaces it itself at its next attempt",
                        kind.label(),
                        reason.trim_end_matches("; the current value is still served")
                    ),
                    retry_after: retry.clamp(1, retry_after.max(1)),
                })
            }
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

    /// Asks the platform whether a reported value works, once per value per
    /// confirm window. A token is checked with `openapi/quota/get`, which
    /// takes the global token, costs no business API's quota and tells the
    /// token endpoint's remaining fetches. A ticket needs no call: the
    /// platform hands out the same ticket until it expires (`docs/platform.md` §7.1, §12), so
    /// before its expiry a fetch could only return it again.
    async fn confirm(&self, account: &Account, slot: &Slot, failed: &Secret) -> Verdict {
        if let CredKind::Ticket(_) = slot.kind {
            return Verdict::Valid;
        }
        let _one_question = slot.confirm.lock().await;
        let now = self.clock.now();
        let window = self.settings.confirm_window_secs;
        if let Some(c) = &slot.lock().confirmed
            && c.value.ct_eq(failed)
            && now - c.at < window
        {
            return c.verdict;
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
                tracing::info!(account.appid = %account.appid(), error = %e, "cannot confirm a reported token with the platform; treating the report as unconfirmed");
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
    fn budget_for(&self, account: &Account, kind: CredKind) -> (&'static str, Budget) {
        let s = &self.settings;
        let forced = kind == CredKind::AccessToken && account.cfg.token_mode == TokenMode::Stable;
        let budget = Budget {
            min_interval: s.caller_min_interval_secs,
            per_hour: s.caller_max_per_hour,
            per_day: if forced {
                s.caller_max_forced_per_day
            } else {
                s.caller_max_per_day
            },
        };
        (if forced { "forced" } else { kind.label() }, budget)
    }

    /// Spends one caller-triggered refresh, if the budget has one.
    /// Refused: the reason and the seconds to wait. A store that does not
    /// answer refuses too: an unmetered refresh is what this exists to stop.
    pub(crate) async fn caller_budget(
        &self,
        account: &Account,
        slot: &Slot,
    ) -> Result<(), CredError> {
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
        match self
            .store
            .budget(account.appid(), scope, budget, now, true)
            .await
        {
            Ok(Decision::Allowed(_)) => Ok(()),
            Ok(Decision::Refused { limit, retry_after }) => {
                let what = exhausted_reason(limit, slot.kind, scope == "forced", budget);
                Err(self.over_budget(account, slot, limit.label(), what, retry_after))
            }
            Err(e) => {
                let reason =
                    format!("the refresh budget cannot be read ({e}); not refreshing on a report");
                Err(self.over_budget(account, slot, "store", reason, 1))
            }
        }
    }

    /// Counts and (at most once per confirm window) logs a refused
    /// caller-triggered refresh.
    fn over_budget(
        &self,
        account: &Account,
        slot: &Slot,
        limit: &'static str,
        reason: String,
        retry_after: i64,
    ) -> CredError {
        let appid = account.appid();
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
}

/// Which ceiling a refused report hit, naming its setting.
fn exhausted_reason(limit: Exhausted, kind: CredKind, forced: bool, budget: Budget) -> String {
    match limit {
        Exhausted::Interval => format!(
            "a report refreshed the {} less than {} s ago (refresh.caller_min_interval_secs)",
            kind.label(),
            budget.min_interval
        ),
        Exhausted::Hour => format!(
            "reports already caused {} refreshes of the {} this hour (refresh.caller_max_per_hour)",
            budget.per_hour,
            kind.label()
        ),
        Exhausted::Day if forced => format!(
            "reports already caused {} forced refreshes of the {} today (refresh.caller_max_forced_per_day)",
            budget.per_day,
            kind.label()
        ),
        Exhausted::Day => format!(
            "reports already caused {} refreshes of the {} today (refresh.caller_max_per_day)",
            budget.per_day,
            kind.label()
        ),
    }
}
