//! Shared mode's leases: each round renews or takes every partition's
//! lease, a new owner stamps and takes over the partition's accounts from
//! what Redis holds, and an instance holding more than its share of
//! partitions hands some over. Following the owner (reads, notes,
//! requests) is in `follow.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

    /// One pass: renews or takes every partition's lease (a fixed number of
    /// scripts, however many accounts); then, for each account, stamps it
    /// where its partition was just taken, takes over what a dead holder
    /// left, and follows the owner where another holds it. Returns when the
    /// soonest lease held by another instance lapses.
    pub async fn lease_round(self: &Arc<Self>) -> Option<Duration> {
        use futures::StreamExt;
        let sh = self.shared.clone()?;
        if let Err(e) = sh.heartbeat().await {
            self.redis_failed(&e);
        }
        let before = sh.held_partitions();
        let asked = futures::stream::iter(0..sh.partitions())
            .map(|p| {
                let sh = sh.clone();
                async move {
                    let had = sh.holding_partition(p).is_some();
                    let outcome = if sh.cooling(p) && !had {
                        // Handed over a moment ago: leave it to the others.
                        Ok(LeaseOutcome::Other {
                            lapses_in: sh.lease_ttl(),
                        })
                    } else {
                        sh.acquire_partition(p).await
                    };
                    (p, outcome)
                }
            })
            // The connection is multiplexed: asked together, the partitions'
            // scripts travel in a few writes and the round takes one round
            // trip or so, however many partitions.
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        // None where Redis did not answer: those accounts are left as they
        // are until the next round.
        let mut outcomes: Vec<Option<LeaseOutcome>> = vec![None; sh.partitions()];
        let mut soonest: Option<Duration> = None;
        let mut failed = None;
        for (p, outcome) in asked {
            match outcome {
                Ok(o) => {
                    match o {
                        LeaseOutcome::Held { fence, new: true } => {
                            tracing::info!(
                                partition = p,
                                fence,
                                "this instance now owns a lease partition: taking over its accounts' refresh"
                            );
                        }
                        LeaseOutcome::Other { lapses_in } => {
                            soonest = Some(soonest.map_or(lapses_in, |s| s.min(lapses_in)));
                            if before.contains(&p) {
                                tracing::warn!(
                                    partition = p,
                                    "another instance took over a lease partition"
                                );
                            }
                        }
                        LeaseOutcome::Held { .. } => {}
                    }
                    outcomes[p] = Some(o);
                }
                Err(e) => failed = Some((p, e)),
            }
        }
        match failed {
            Some((p, e)) => {
                self.redis_failed(&e);
                if before.contains(&p) {
                    tracing::warn!(
                        partition = p,
                        "cannot renew a lease partition: its accounts' refreshing stops when it lapses"
                    );
                }
            }
            None => self.redis_ok(),
        }
        // Concurrently: a partition just taken is hundreds of accounts to
        // stamp and read, each a round trip.
        futures::stream::iter(self.managed())
            .for_each_concurrent(32, |account| {
                let (sh, outcomes) = (&sh, &outcomes);
                async move {
                    match outcomes[sh.partition(account.appid())] {
                        Some(LeaseOutcome::Held { fence, .. }) => {
                            if let Some(new) = self.stamp_account(&account, fence).await {
                                self.acquired(&account, fence, new).await;
                            }
                        }
                        Some(LeaseOutcome::Other { .. }) => {
                            self.held_by_other(&account).await;
                        }
                        None => {}
                    }
                }
            })
            .await;
        self.balance(&sh).await;
        soonest
    }

    /// Stamps the account under its partition's `fence` unless it already
    /// is. `Some(new)`: stamped (`new` when not already so); `None`: another
    /// instance stamped it with a newer fence, or Redis did not answer.
    pub(crate) async fn stamp_account(&self, account: &Account, fence: u64) -> Option<bool> {
        let sh = self.shared.as_ref()?;
        if account.stamped.load(Ordering::Relaxed) == fence {
            return Some(false);
        }
        match sh.stamp(account.appid(), fence).await {
            Ok(true) => {
                self.redis_ok();
                account.stamped.store(fence, Ordering::Relaxed);
                Some(true)
            }
            Ok(false) => {
                tracing::warn!(account.appid = %account.appid(), "a newer owner stamped the account: its partition's lease is lost");
                self.lease_lost(account.appid());
                None
            }
            Err(e) => {
                self.redis_failed(&e);
                None
            }
        }
    }

    /// Makes this instance the account's refresher if its partition is
    /// free or already this instance's: what a caller that needs a value
    /// nobody holds does, rather than wait for the next round.
    pub(crate) async fn own(&self, account: &Account) -> bool {
        let Some(sh) = &self.shared else { return true };
        let fence = match sh.holding(account.appid()) {
            Some(fence) => fence,
            None => match sh.acquire_partition(sh.partition(account.appid())).await {
                Ok(LeaseOutcome::Held { fence, .. }) => fence,
                _ => return false,
            },
        };
        match self.stamp_account(account, fence).await {
            Some(true) => {
                self.acquired(account, fence, true).await;
                true
            }
            Some(false) => true,
            None => false,
        }
    }

    async fn held_by_other(&self, account: &Account) {
        account.settled.store(false, Ordering::Relaxed);
        if account.stamped.swap(0, Ordering::Relaxed) != 0 {
            self.metrics
                .inc("wxhub_lease_lost_total", &[("appid", account.appid())]);
        }
        self.follow(account).await;
    }

    /// Hands partitions over while this instance holds more than its share
    /// (the partitions divided by the instances heard lately). Only after
    /// the surplus has lasted longer than a lease, so the share of an
    /// instance that just died is not shuffled around while its heartbeat
    /// ages out. A handover costs no fetch: the next owner adopts what Redis
    /// holds.
    async fn balance(&self, sh: &Shared) {
        let share = sh.partitions().div_ceil(sh.live_instances());
        let held = sh.held_partitions();
        if held.len() <= share {
            self.over_share.store(0, Ordering::Relaxed);
            return;
        }
        if self.over_share.fetch_add(1, Ordering::Relaxed) < 4 {
            return;
        }
        let mut surplus = held.len() - share;
        let cooldown = sh.lease_ttl() * 2;
        // Grouped once: hashing every account again per partition would be
        // partitions × accounts.
        let mut by_partition = vec![Vec::new(); sh.partitions()];
        for a in self.managed() {
            by_partition[sh.partition(a.appid())].push(a);
        }
        for p in held {
            if surplus == 0 {
                break;
            }
            let accounts = &by_partition[p];
            // Never in the middle of a refresh.
            let guards: Vec<_> = accounts
                .iter()
                .flat_map(|a| a.slots())
                .map_while(|slot| slot.fetch.try_lock().ok())
                .collect();
            if guards.len() != accounts.iter().map(|a| a.slots().count()).sum::<usize>() {
                continue;
            }
            for a in accounts {
                a.settled.store(false, Ordering::Relaxed);
                a.stamped.store(0, Ordering::Relaxed);
            }
            if let Err(e) = sh.release_partition(p, cooldown).await {
                self.redis_failed(&e);
                return;
            }
            drop(guards);
            for a in accounts {
                self.metrics
                    .inc("wxhub_lease_handed_over_total", &[("appid", a.appid())]);
            }
            tracing::info!(
                partition = p,
                accounts = accounts.len(),
                held = sh.held_count() + 1,
                share,
                "handing a lease partition over to balance the instances"
            );
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
            // At INFO per partition (lease_round), not per account: a
            // takeover is hundreds of accounts.
            tracing::debug!(account.appid = %appid, fence, "this instance now owns the account's refresh");
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

    /// This instance no longer holds the lease of the account's partition
    /// (a refused stamp, fetch mark or write showed it): counted here, once,
    /// and the next round finds who holds it.
    pub(crate) fn lease_lost(&self, appid: &str) {
        if let Some(sh) = &self.shared {
            sh.forget(appid);
        }
        if let Some(account) = self.account(appid) {
            account.stamped.store(0, Ordering::Relaxed);
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
