//! When each slot is next due, in one ordered queue. The refresher takes
//! what is due, starts those refreshes (at most `max_concurrent` at once),
//! and sleeps until the earliest deadline, woken early when an earlier one
//! arrives: no periodic walk over every slot (mini-redis's purge task has
//! the same shape). Because the clock may be virtual (tests, `wxhub dev`),
//! the sleep is never longer than `refresh.tick_ms`: a jump of the virtual clock is
//! noticed within one nap.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Credentials;
use super::model::{Account, CredKind, Trigger};

/// A slot in the queue: its account and kind.
pub(crate) type Key = (Arc<str>, CredKind);

#[derive(Debug, Default)]
struct Inner {
    order: BTreeSet<(i64, Key)>,
    due_at: HashMap<Key, i64>,
}

/// The deadlines of every slot this instance may refresh.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts (or moves) a slot's deadline; wakes the refresher when it is
    /// now the earliest.
    pub(crate) fn set(&self, key: Key, at: i64) {
        let mut q = self.lock();
        if let Some(old) = q.due_at.insert(key.clone(), at) {
            if old == at {
                return;
            }
            q.order.remove(&(old, key.clone()));
        }
        let earliest = q.order.first().is_none_or(|(head, _)| at < *head);
        q.order.insert((at, key));
        drop(q);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Forgets a slot (its account was removed).
    pub(crate) fn remove(&self, key: &Key) {
        let mut q = self.lock();
        if let Some(at) = q.due_at.remove(key) {
            q.order.remove(&(at, key.clone()));
        }
    }

    /// Takes the earliest slot due at `now` out of the queue.
    pub(crate) fn pop_due(&self, now: i64) -> Option<Key> {
        let mut q = self.lock();
        if q.order.first().is_none_or(|(at, _)| *at > now) {
            return None;
        }
        let (_, key) = q.order.pop_first()?;
        q.due_at.remove(&key);
        Some(key)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<i64> {
        self.lock().order.first().map(|(at, _)| *at)
    }
}

impl Credentials {
    /// Puts a slot back in the queue at its planned refresh.
    pub(crate) fn reschedule(&self, appid: &str, kind: CredKind, at: i64) {
        self.schedule.set((Arc::from(appid), kind), at);
    }

    /// Starts refreshes for the due slots, earliest first, as long as fewer
    /// than `max_concurrent` run; the rest stay queued (a task per due
    /// slot, with 100,000 due at once, would hold 100 MB of waiting tasks).
    /// Returns the tasks started. The refresher lets them run and is woken
    /// when one ends; tests await them.
    pub fn start_due(self: &Arc<Self>) -> tokio::task::JoinSet<()> {
        let now = self.clock.now();
        let mut set = tokio::task::JoinSet::new();
        // Slots to look at again later: put back once the loop is done, so
        // one that is due again at once is not popped again in this pass.
        let mut later = Vec::new();
        loop {
            let Ok(permit) = self.concurrency.clone().try_acquire_owned() else {
                break;
            };
            let Some(key) = self.schedule.pop_due(now) else {
                break;
            };
            let Some((account, kind)) = self.ready_to_refresh(&key, now, &mut later) else {
                continue;
            };
            let this = self.clone();
            set.spawn(async move {
                let _ = this.refresh(&account, kind, Trigger::Scheduled).await;
                let slot = account.slot(kind).expect("slot exists");
                let next = {
                    let mut st = slot.lock();
                    st.in_flight = false;
                    st.next_refresh_at
                };
                this.reschedule(account.appid(), kind, next);
                drop(permit);
                // A permit is free: whatever waits in the queue may start.
                this.schedule.wake.notify_one();
            });
        }
        for (key, at) in later {
            self.schedule.set(key, at);
        }
        set
    }

    /// The account and kind of a due slot, marked in flight, unless it
    /// must not be refreshed now: not ours (shared mode: a lease taken
    /// later puts the account's slots back), already in flight (that
    /// refresh puts it back), its deadline moved since, or Redis just
    /// failed.
    fn ready_to_refresh(
        &self,
        key: &Key,
        now: i64,
        later: &mut Vec<(Key, i64)>,
    ) -> Option<(Arc<Account>, CredKind)> {
        let account = self.account(&key.0).filter(|a| a.managed())?;
        let slot = account.slot(key.1)?;
        if let Some(sh) = &self.shared
            && sh.holding(account.appid()).is_none()
        {
            return None;
        }
        let mut st = slot.lock();
        if st.in_flight {
            return None;
        }
        if st.current.is_some() && now < st.next_refresh_at {
            later.push((key.clone(), st.next_refresh_at));
            return None;
        }
        if st.shared.redis_retry_at.is_some_and(|t| Instant::now() < t) {
            later.push((key.clone(), now));
            return None;
        }
        st.in_flight = true;
        drop(st);
        Some((account.clone(), key.1))
    }

    /// Runs every due refresh and waits for all of them.
    pub async fn run_due(self: &Arc<Self>) {
        loop {
            let started = self.start_due();
            if started.is_empty() {
                return;
            }
            started.join_all().await;
        }
    }

    /// The refresher: starts what is due, then sleeps until the next
    /// deadline (at most `refresh.tick_ms`), or until an earlier one arrives.
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let nap = self.settings.tick;
        loop {
            self.start_due().detach_all();
            let now = self.clock.now();
            // Something due that could not start (every permit taken, or
            // put back for later) waits for a finished refresh's wake-up,
            // not in a spin.
            let wait = self.schedule.next().map_or(nap, |at| {
                if at <= now {
                    nap
                } else {
                    Duration::from_secs((at - now) as u64).min(nap)
                }
            });
            tokio::select! {
                () = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                () = self.schedule.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(appid: &str) -> Key {
        (Arc::from(appid), CredKind::AccessToken)
    }

    #[test]
    fn deadlines_come_out_in_order_and_move_when_set_again() {
        let q = Queue::default();
        q.set(key("b"), 20);
        q.set(key("a"), 10);
        q.set(key("c"), 30);
        q.set(key("c"), 5);
        assert_eq!(q.next(), Some(5));
        assert_eq!(q.pop_due(9), Some(key("c")));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(20), Some(key("a")));
        assert_eq!(q.pop_due(20), Some(key("b")));
        assert_eq!(q.pop_due(1000), None);
        assert_eq!(q.next(), None);
    }
}
