//! The heart of the hub: each account's access token and tickets, fetched
//! ahead of expiry, persisted, served from memory, and refreshed at most once
//! however many callers ask (docs/lifecycle.md).
//!
//! | Module | Job |
//! |---|---|
//! | `model` | the types: accounts, slots, values, errors |
//! | `policy` | every lifecycle decision, as pure functions with tables of tests |
//! | `refresh` | the single-flight refresh that applies the policy's decisions |
//! | `fetch` | the upstream calls: the token, and tickets with a valid token |
//! | `report` | callers' reports: confirmed with the platform, under the caller budget |
//! | `scheduler` | the deadline queue and the refresher that sleeps on it |
//! | `cluster` | shared mode: leases, takeover, balancing |
//! | `follow` | shared mode: reading the owner's writes, asking it to refresh |
//! | `change` | accounts added, changed and removed at run time |
//! | `status` | what the console, `/v1/apps` and `/readyz` show |
//!
//! Each credential lives in a [`Slot`]: its state behind a `std::sync::Mutex`
//! (short sections, never held across `.await`) and a `tokio::sync::Mutex`
//! that makes fetching single-flight. Whoever takes the fetch lock re-checks
//! the state first, so callers that queued behind a fetch return its result
//! instead of fetching again (the re-check WxJava #1293 was missing).

mod change;
mod cluster;
pub mod component;
mod fetch;
mod follow;
mod model;
pub(crate) mod policy;
mod refresh;
mod report;
mod scheduler;
mod status;

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;

pub(crate) use model::Trigger;
pub use model::{
    Account, Cred, CredError, CredKind, Problem, ReportOutcome, Reported, Secret, Served, Severity,
    Slot, WebAuth,
};
pub use status::{
    AccountStatus, ConsolePage, ListQuery, MAX_PAGE, PlatformStatus, Readiness, SlotStatus,
    StateFilter,
};

use self::policy::{Adoption, Jitter, Schedule};
use crate::clock::Clock;
use crate::config::{AccountConfig, RefreshSettings};
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::store::{Record, Store};

/// Every account's credentials.
pub struct Credentials {
    // A hash map: every token request looks its account up, and with
    // 100,000 accounts a B-tree walk is a dozen cold cache lines.
    accounts: RwLock<HashMap<String, Arc<Account>>>,
    store: Arc<Store>,
    shared: Option<Arc<Shared>>,
    clock: Arc<dyn Clock>,
    wx: wx_api::Client,
    metrics: Arc<Metrics>,
    settings: RefreshSettings,
    concurrency: Arc<Semaphore>,
    pace: fetch::Pace,
    schedule: scheduler::Queue,
    // Shared mode: consecutive lease rounds this instance held more than
    // its share of the accounts.
    over_share: AtomicU32,
    // Third-party platforms: when each last asked the platform to restart
    // its ticket pushes (at most once per 10 minutes each).
    push_restarts: std::sync::Mutex<HashMap<String, i64>>,
    // Authorized accounts the platform answered 61003 for (component,
    // account): the revoker (`component::run_revoker`) makes them revoked
    // in the directory, which this module cannot reach.
    revoked: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    revoked_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("accounts", &self.read_accounts().len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads stored credentials for every configured account. Nothing is
    /// fetched here: a valid stored token is served as is. In shared mode the
    /// values come from Redis and refreshing waits for a lease.
    pub async fn new(
        accounts: Vec<AccountConfig>,
        store: Arc<Store>,
        shared: Option<Arc<Shared>>,
        clock: Arc<dyn Clock>,
        wx: wx_api::Client,
        metrics: Arc<Metrics>,
        settings: RefreshSettings,
    ) -> Arc<Credentials> {
        let (revoked, revoked_rx) = tokio::sync::mpsc::unbounded_channel();
        let creds = Arc::new(Credentials {
            revoked,
            revoked_rx: std::sync::Mutex::new(Some(revoked_rx)),
            accounts: RwLock::new(
                accounts
                    .into_iter()
                    .map(|cfg| (cfg.appid.as_str().to_string(), Arc::new(Account::new(cfg))))
                    .collect(),
            ),
            concurrency: Arc::new(Semaphore::new(settings.max_concurrent)),
            pace: fetch::Pace::new(settings.max_fetches_per_second),
            store,
            shared,
            clock,
            wx,
            metrics,
            settings,
            schedule: scheduler::Queue::default(),
            over_share: AtomicU32::new(0),
            push_restarts: std::sync::Mutex::new(HashMap::new()),
        });
        if creds.shared.is_some() {
            creds.metrics.set("wxhub_redis_up", &[], 1.0);
        }
        for account in creds.accounts() {
            creds.load_stored(&account).await;
        }
        creds
    }

    /// Takes what the store holds for an account's slots, and schedules
    /// them: due now unless the stored value says otherwise.
    async fn load_stored(&self, account: &Account) {
        let now = self.clock.now();
        for slot in account.slots() {
            slot.lock().next_refresh_at = now;
            if let Err(e) = self.reload(account, slot).await {
                tracing::warn!(account.appid = %account.appid(), error = %e, "cannot read stored credential; will fetch");
            }
            let next = slot.lock().next_refresh_at;
            if account.managed() {
                self.reschedule(account.appid(), slot.kind, next);
            }
        }
    }

    /// Adopts what the store holds for a slot, if it is newer.
    async fn reload(&self, account: &Account, slot: &Slot) -> Result<(), crate::store::StoreError> {
        let key = account.store_key(slot.kind);
        if let Some(rec) = self.store.load_credential(account.appid(), &key).await? {
            self.adopt(account, slot, rec);
        }
        Ok(())
    }

    fn read_accounts(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Account>>> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Shared mode's Redis side, when configured.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Every account, in AppID order.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        let mut all: Vec<_> = self.read_accounts().values().cloned().collect();
        all.sort_unstable_by(|a, b| a.appid().cmp(b.appid()));
        all
    }

    /// Counts a use of `appid`'s credentials by `client` (the console's
    /// per-client figures).
    pub fn note_use(&self, appid: &str, client: &Arc<str>) {
        if let Some(a) = self.read_accounts().get(appid) {
            a.note_use(client);
        }
    }

    /// Counts how a web authorization of `appid` ended (the console's
    /// figures).
    pub fn note_web_auth(&self, appid: &str, how: WebAuth) {
        if let Some(a) = self.read_accounts().get(appid) {
            a.note_web_auth(how);
        }
    }

    /// The refresh history of `appid`, newest first, within the configured
    /// retention: at most `limit` entries.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn history(
        &self,
        appid: &str,
        limit: usize,
    ) -> Result<Vec<crate::history::Entry>, crate::store::StoreError> {
        let since = self.clock.now() - self.settings.history_days * 86400;
        self.store.history(appid, since, limit).await
    }

    /// The refresh settings in force.
    pub fn settings(&self) -> &RefreshSettings {
        &self.settings
    }

    /// How many accounts there are.
    pub fn account_count(&self) -> usize {
        self.read_accounts().len()
    }

    /// One account.
    pub fn account(&self, appid: &str) -> Option<Arc<Account>> {
        self.read_accounts().get(appid).cloned()
    }

    /// The accounts whose credentials the hub keeps (not website apps).
    fn managed(&self) -> Vec<Arc<Account>> {
        self.read_accounts()
            .values()
            .filter(|a| a.managed())
            .cloned()
            .collect()
    }

    /// A fresh draw for the policy's spread.
    fn jitter() -> Jitter {
        Jitter::new(rand::random::<f64>())
    }

    /// The slot's value as a client may have it now, if it is valid.
    fn served(&self, account: &Account, slot: &Slot) -> Option<Served> {
        let now = self.clock.now();
        let st = slot.lock();
        let cred = st.servable(now)?;
        let next = policy::next_fetch(self.shared.is_some(), &st, now);
        let expires_at = policy::serve_until(
            &self.settings,
            account.cfg.token_mode,
            slot.kind,
            cred,
            next,
        );
        Some(Served {
            value: cred.value.clone(),
            expires_at,
            expires_in: (expires_at - now).max(0),
        })
    }

    fn find(&self, appid: &str, kind: CredKind) -> Result<Arc<Account>, CredError> {
        let account = self
            .account(appid)
            .ok_or_else(|| CredError::UnknownAccount(appid.to_string()))?;
        if let crate::config::Via::Revoked { component, .. } = &account.cfg.via {
            return Err(CredError::Revoked {
                appid: appid.to_string(),
                component: component.as_str().to_string(),
            });
        }
        if account.slot(kind).is_none() || !account.managed() {
            return Err(CredError::NotKept {
                appid: appid.to_string(),
                kind: kind.label(),
            });
        }
        Ok(account)
    }

    /// A valid credential: from memory, or by waiting (bounded) for a fetch.
    ///
    /// # Errors
    /// [`CredError`]; `Unavailable` carries the reason and a retry delay.
    pub async fn get(self: &Arc<Self>, appid: &str, kind: CredKind) -> Result<Served, CredError> {
        let account = self.find(appid, kind)?;
        let slot = account.slot(kind).expect("find checked the slot");
        if let Some(s) = self.served(&account, slot) {
            return Ok(s);
        }
        if self.shared.is_some() {
            return self.get_shared(account, kind, None, false).await;
        }
        self.refresh_and_wait(account, kind, Trigger::Missing).await
    }

    /// Takes a stored record as the slot's value if it is newer than what is
    /// held (see [`policy::adopt`]). Returns whether the value changed.
    fn adopt(&self, account: &Account, slot: &Slot, rec: Record) -> bool {
        let now = self.clock.now();
        let shared = self.shared.is_some();
        let holding = self
            .shared
            .as_ref()
            .is_some_and(|sh| sh.holding(account.appid()).is_some());
        let mut st = slot.lock();
        let (changed, schedule) = match policy::adopt(&st, &rec, now, shared, holding) {
            Adoption::Ignore => return false,
            Adoption::MarksOnly => {
                st.shared.refresh_at = rec.refresh_at;
                st.shared.pending_since = rec.pending_since;
                return false;
            }
            Adoption::Take { changed, schedule } => (changed, schedule),
        };
        let cred = Cred::from_record(&rec);
        match schedule {
            Schedule::Plan => {
                st.next_refresh_at = policy::plan(
                    &self.settings,
                    account.cfg.token_mode,
                    slot.kind,
                    &cred,
                    Self::jitter(),
                );
            }
            Schedule::FollowOwner(at) => st.next_refresh_at = at,
            Schedule::Keep => {}
        }
        st.shared.refresh_at = rec.refresh_at;
        st.shared.pending_since = rec.pending_since;
        st.shared.fence = rec.fence;
        st.shared.seq = rec.seq;
        st.shared.dirty = false;
        st.last_refresh_at = Some(rec.fetched_at);
        st.current = Some(cred);
        let next = st.next_refresh_at;
        drop(st);
        if account.managed() {
            self.reschedule(account.appid(), slot.kind, next);
        }
        if changed {
            slot.changed();
        }
        changed
    }
}

/// SHA-256 in hex: how a value is named in notes between instances.
fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
