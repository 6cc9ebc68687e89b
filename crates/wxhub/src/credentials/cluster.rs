//! Shared mode's leases: each round renews or takes every account's lease,
//! a new owner takes over what Redis holds, and an instance holding more
//! than its share hands some over. Following the owner (reads, notes,
//! requests) is in `follow.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Credentials;
use super::model::Account;
use super::policy;
use crate::shared::{LeaseOutcome, Shared};
use crate::store::StoreError;

impl Credentials {
    /// Shared mode: keeps renewing and taking leases until shutdown. The
    /// caller gives the leases back afterwards.
    pub async fn run_leases(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.lease_loop(shutdown).await;
    }

    /// Shared mode: keeps the local copies current from the owners' notes
    /// until shutdown.
    pub async fn run_subscriber(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.subscriber_loop(shutdown).await;
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
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
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
        let asked = futures::stream::iter(self.managed())
            .map(|account| {
                let sh = sh.clone();
                async move {
                    let had = sh.holding(account.appid()).is_some();
                    let outcome = if account.cooling() && !had {
                        // Handed over a moment ago: leave it to the others.
                        Ok(LeaseOutcome::Other {
                            lapses_in: sh.lease_ttl(),
                        })
                    } else {
                        sh.acquire(account.appid()).await
                    };
                    (account, had, outcome)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let mut soonest: Option<Duration> = None;
        for (account, had, outcome) in asked {
            match outcome {
                Ok(LeaseOutcome::Held { fence, new }) => {
                    self.redis_ok();
                    self.acquired(&account, fence, new).await;
                }
                Ok(LeaseOutcome::Other { lapses_in }) => {
                    soonest = Some(soonest.map_or(lapses_in, |s| s.min(lapses_in)));
                    self.redis_ok();
                    self.held_by_other(&account, had).await;
                }
                Err(e) => {
                    self.redis_failed(&e);
                    if had {
                        tracing::warn!(account.appid = %account.appid(), "cannot renew the refresh lease: refreshing stops when it lapses");
                    }
                }
            }
        }
        self.balance(&sh).await;
        soonest
    }

    async fn held_by_other(&self, account: &Account, had: bool) {
        let appid = account.appid();
        account.settled.store(false, Ordering::Relaxed);
        if had {
            self.lease_lost(appid);
            tracing::warn!(account.appid = %appid, "another instance took over the account's refresh");
        }
        self.follow(account).await;
    }

    /// Hands leases over while this instance holds more than its share
    /// (the accounts divided by the instances heard lately). Only after the
    /// surplus has lasted longer than a lease, so the share of an instance
    /// that just died is not shuffled around while its heartbeat ages out.
    /// A handover costs no fetch: the next owner adopts what Redis holds.
    async fn balance(&self, sh: &Shared) {
        let managed = self.managed();
        let share = managed.len().div_ceil(sh.live_instances());
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
        for account in managed {
            if surplus == 0 {
                break;
            }
            let appid = account.appid();
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
                .inc("wxhub_lease_handed_over_total", &[("appid", appid)]);
            tracing::info!(account.appid = %appid, held, share, "handing the account's refresh over to balance the instances");
            surplus -= 1;
        }
        self.over_share.store(0, Ordering::Relaxed);
    }

    /// After a lease was taken or renewed: a new owner takes over (again,
    /// until that succeeds); a settled one writes back what Redis missed.
    pub(crate) async fn acquired(&self, account: &Account, fence: u64, new: bool) {
        let appid = account.appid();
        if new {
            account.settled.store(false, Ordering::Relaxed);
            self.metrics
                .inc("wxhub_lease_acquired_total", &[("appid", appid)]);
            tracing::info!(account.appid = %appid, fence, "this instance now owns the account's refresh");
            let now = self.clock.now();
            for slot in account.slots() {
                slot.lock().note = Some(super::model::Note {
                    reason: crate::history::Reason::Takeover,
                    client: None,
                    at: now,
                });
            }
        }
        if account.settled.load(Ordering::Relaxed) {
            self.flush_dirty(account, fence).await;
        } else {
            let done = self.take_over(account, fence).await;
            account.settled.store(done, Ordering::Relaxed);
        }
        // The refresher drops the deadlines of accounts it does not hold
        // (while Redis was away, say): every held account's go back.
        for slot in account.slots() {
            let next = slot.lock().next_refresh_at;
            self.reschedule(appid, slot.kind, next);
        }
    }

    /// A new owner's first look: adopt what Redis holds, write back a newer
    /// value held here, and refresh at once if the previous owner died in
    /// the middle of a classic fetch. Returns false if Redis did not answer:
    /// the next round tries again.
    async fn take_over(&self, account: &Account, fence: u64) -> bool {
        let appid = account.appid();
        for slot in account.slots() {
            // No refresh of this slot may run between the read and the
            // write-back, or the write-back could replace its newer value.
            let _fetching = slot.fetch.lock().await;
            let now = self.clock.now();
            let key = account.store_key(slot.kind);
            let rec = match self.store.load_credential(appid, &key).await {
                Ok(r) => r,
                Err(e) => {
                    self.redis_failed(&e);
                    return false;
                }
            };
            let stored_seq = rec.as_ref().map(|r| r.seq);
            let interrupted = rec.as_ref().is_some_and(|r| r.pending_since.is_some());
            if let Some(rec) = rec {
                self.adopt(account, slot, rec);
            }
            let mine = {
                let mut st = slot.lock();
                if policy::refresh_after_takeover(slot.kind, account.cfg.token_mode, interrupted) {
                    st.next_refresh_at = st.next_refresh_at.min(now);
                }
                let newer_here = policy::write_back(stored_seq, st.shared.seq);
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
            if !slot.lock().shared.dirty {
                continue;
            }
            let _fetching = slot.fetch.lock().await;
            let record = {
                let mut st = slot.lock();
                if !st.shared.dirty {
                    continue;
                }
                st.shared.dirty = false;
                st.current
                    .as_ref()
                    .map(|c| c.record(fence, st.next_refresh_at))
            };
            if let Some(record) = record {
                self.persist(account, slot, &account.store_key(slot.kind), record, None)
                    .await;
            }
        }
    }

    /// This instance no longer holds the account's lease.
    pub(crate) fn lease_lost(&self, appid: &str) {
        if let Some(sh) = &self.shared {
            sh.forget(appid);
        }
        self.metrics
            .inc("wxhub_lease_lost_total", &[("appid", appid)]);
    }

    pub(crate) fn redis_unavailable(&self, kind: super::CredKind) -> super::CredError {
        super::CredError::Unavailable {
            reason: format!(
                "redis is unreachable and no valid {} is held here; not fetching one, which would replace the owner's",
                kind.label()
            ),
            retry_after: 1,
        }
    }

    /// Redis failed: logged once per outage, not per call.
    pub(crate) fn redis_failed(&self, e: &StoreError) {
        let Some(sh) = &self.shared else { return };
        sh.set_up(false, self.clock.now(), &e.to_string(), || {
            self.metrics.set("wxhub_redis_up", &[], 0.0);
            tracing::error!(error = %e, "redis unreachable: serving the values held in memory, refreshing nothing until it is back");
        });
    }

    pub(crate) fn redis_ok(&self) {
        let Some(sh) = &self.shared else { return };
        sh.set_up(true, self.clock.now(), "", || {
            self.metrics.set("wxhub_redis_up", &[], 1.0);
            tracing::info!("redis reachable again");
        });
    }
}
