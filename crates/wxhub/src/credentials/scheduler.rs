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
use super::model::{CredKind, Trigger};

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

    /// Takes every slot due at `now` out of the queue.
    pub(crate) fn take_due(&self, now: i64) -> Vec<Key> {
        let mut q = self.lock();
        let mut due = Vec::new();
        while let Some((at, _)) = q.order.first() {
            if *at > now {
                break;
            }
            let (_, key) = q.order.pop_first().expect("looked at it");
            q.due_at.remove(&key);
            due.push(key);
        }
        due
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

    /// Starts a refresh for every due slot, at most `max_concurrent` at
    /// once, and returns the tasks. The refresher lets them run; tests await
    /// them.
    pub fn start_due(self: &Arc<Self>) -> tokio::task::JoinSet<()> {
        let now = self.clock.now();
        let mut set = tokio::task::JoinSet::new();
        for key in self.schedule.take_due(now) {
            let Some(account) = self.account(&key.0).filter(|a| a.managed()) else {
                continue;
            };
            let Some(slot) = account.slot(key.1) else {
                continue;
            };
            // Shared mode: only the lease holder refreshes; a lease taken
            // later puts the account's slots back.
            if let Some(sh) = &self.shared
                && sh.holding(account.appid()).is_none()
            {
                continue;
            }
            {
                let mut st = slot.lock();
                if st.in_flight {
                    // The running refresh puts it back when it ends.
                    continue;
                }
                // A refresh a caller triggered moved the deadline since.
                if st.current.is_some() && now < st.next_refresh_at {
                    let at = st.next_refresh_at;
                    drop(st);
                    self.schedule.set(key, at);
                    continue;
                }
                if st.shared.redis_retry_at.is_some_and(|t| Instant::now() < t) {
                    drop(st);
                    self.schedule.set(key, now);
                    continue;
                }
                st.in_flight = true;
            }
            let this = self.clone();
            let kind = key.1;
            set.spawn(async move {
                let _permit = this.concurrency.clone().acquire_owned().await;
                let _ = this.refresh(&account, kind, Trigger::Scheduled).await;
                let slot = account.slot(kind).expect("slot exists");
                let next = {
                    let mut st = slot.lock();
                    st.in_flight = false;
                    st.next_refresh_at
                };
                this.reschedule(account.appid(), kind, next);
            });
        }
        set
    }

    /// Runs every due refresh and waits for all of them.
    pub async fn run_due(self: &Arc<Self>) {
        self.start_due().join_all().await;
    }

    /// The refresher: starts what is due, then sleeps until the next
    /// deadline (at most `refresh.tick_ms`), or until an earlier one arrives.
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let nap = self.settings.tick;
        loop {
            self.start_due().detach_all();
            let now = self.clock.now();
            let wait = self.schedule.next().map_or(nap, |at| {
                Duration::from_secs(at.saturating_sub(now).max(0) as u64).min(nap)
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
        assert_eq!(q.take_due(9), vec![key("c")]);
        assert_eq!(q.take_due(20), vec![key("a"), key("b")]);
        assert_eq!(q.take_due(1000), Vec::<Key>::new());
        assert_eq!(q.next(), None);
    }
}
