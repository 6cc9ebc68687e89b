//! Accounts added, changed and removed while the hub runs (the admin API).

use std::sync::Arc;

use super::Credentials;
use super::model::Account;
use crate::config::AccountConfig;

impl Credentials {
    /// Adds an account, or replaces one's configuration. A replaced
    /// account's refreshes in flight finish first, and the new one starts
    /// from what the store holds: a changed name or domain costs no fetch,
    /// a changed secret (after a reset on the platform) is used at the next
    /// fetch, and one that could not fetch before fetches at once.
    pub async fn upsert(&self, cfg: AccountConfig) {
        let appid = cfg.appid.as_str().to_string();
        let old = self.account(&appid);
        if let Some(old) = &old {
            self.unschedule(old);
            // Holding every fetch lock of the old account: nothing of it
            // writes to the store after the new one has read it.
            let mut held = Vec::new();
            for slot in old.slots() {
                held.push(slot.fetch.lock().await);
            }
        }
        let account = Arc::new(Account::new(cfg));
        self.accounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(appid.clone(), account.clone());
        if let Some(old) = old {
            // Callers waiting on the old slots look again, now at the new.
            for slot in old.slots() {
                slot.changed();
            }
        }
        let now = self.clock.now();
        for slot in account.slots() {
            slot.lock().note = Some(super::model::Note {
                reason: crate::history::Reason::Config,
                client: None,
                at: now,
            });
        }
        self.load_stored(&account).await;
        tracing::info!(account.appid = %appid, "account configuration applied");
    }

    /// Removes an account: no more refreshes, its lease given back, its
    /// stored credentials forgotten. Returns whether it existed.
    pub async fn remove(&self, appid: &str) -> bool {
        let Some(old) = self
            .accounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(appid)
        else {
            return false;
        };
        self.unschedule(&old);
        let mut held = Vec::new();
        for slot in old.slots() {
            held.push(slot.fetch.lock().await);
        }
        let stamped = old.stamped.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(sh) = &self.shared
            && stamped != 0
            && let Err(e) = sh.unstamp(appid, stamped).await
        {
            tracing::warn!(account.appid = %appid, error = %e, "cannot remove the removed account's lease stamp from redis; it stays until the next owner of its partition stamps it again");
        }
        let keys = old.slots().map(|s| old.store_key(s.kind)).collect();
        if let Err(e) = self.store.forget_credentials(appid, keys).await {
            tracing::warn!(account.appid = %appid, error = %e, "cannot forget the removed account's credentials");
        }
        for slot in old.slots() {
            slot.changed();
        }
        tracing::info!(account.appid = %appid, "account removed");
        true
    }

    fn unschedule(&self, account: &Account) {
        for slot in account.slots() {
            self.schedule
                .remove(&(Arc::from(account.appid()), slot.kind));
        }
    }
}
