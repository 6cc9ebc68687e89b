//! The push gateway: the account's one message URL (`/push/{appid}`),
//! verified, deduplicated, written before it is answered, and fanned out to
//! the account's subscribers (docs/platform.md §8).
//!
//! | Module | Job |
//! |---|---|
//! | `receive` | The platform's side: the echostr handshake; a push checked (signature, AES, appid, timestamp), written, answered (the replier's passive reply, encrypted with the key the push came with) |
//! | `deliver` | The subscribers' side: the worker that delivers each queue entry, in order per person, with backoff, and parks what fails for the whole window; follower profiles |
//! | `payload` | The JSON a subscriber receives and its HMAC signature |
//!
//! Nothing is stored before the signature (and, in safe mode, the
//! decryption and the appid inside) has been checked: the route is
//! anonymous.

mod deliver;
pub mod payload;
mod receive;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wx_api::AppId;
use wx_api::push::PushCrypto;

use crate::clock::Clock;
use crate::config::{AccountConfig, ComponentConfig, PushConfig, PushMode, PushSettings, Via};
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::store::Store;

/// Replier calls in flight: each one's answer, once known.
type Asking = HashMap<String, tokio::sync::watch::Receiver<Option<Option<String>>>>;

/// One account's push set-up.
#[derive(Debug)]
pub struct PushAccount {
    /// The account.
    pub appid: AppId,
    /// Its settings.
    pub config: PushConfig,
    // Two openers: the previous key is tried only until its deadline.
    current_only: PushCrypto,
    with_previous: Option<PushCrypto>,
}

impl PushAccount {
    fn new(a: &AccountConfig, p: &PushConfig) -> anyhow::Result<PushAccount> {
        let token = p.token.clone();
        let appid = a.appid.clone();
        // A platform's accounts' pushes carry the platform's AppID inside
        // the ciphertext, not the account's (spec component §6.2).
        let inside = match &a.via {
            Via::Authorizer(component) => component.clone(),
            _ => a.appid.clone(),
        };
        let bad = |_| anyhow::anyhow!("accounts: the EncodingAESKey of {appid} does not decode");
        let current_only = match (p.mode, &p.encoding_aes_key) {
            (PushMode::Plain, _) | (_, None) => PushCrypto::plaintext(token, inside),
            (PushMode::Compat, Some(k)) => PushCrypto::compat(token, inside, k).map_err(bad)?,
            (PushMode::Safe, Some(k)) => PushCrypto::new(token, inside, k).map_err(bad)?,
        };
        let with_previous = match &p.previous_encoding_aes_key {
            Some(prev) if p.mode != PushMode::Plain => {
                Some(current_only.clone().with_previous_key(prev).map_err(bad)?)
            }
            _ => None,
        };
        Ok(PushAccount {
            appid: a.appid.clone(),
            config: p.clone(),
            current_only,
            with_previous,
        })
    }

    /// The opener for a push arriving at `now`: with the previous key while
    /// the rotation window lasts.
    pub fn crypto(&self, now: i64) -> &PushCrypto {
        match &self.with_previous {
            Some(c) if now < self.config.previous_key_until => c,
            _ => &self.current_only,
        }
    }
}

/// An account's push set-up: its own `push` section or, for an account
/// authorized to a third-party platform, the platform's (the platform's
/// message URL is `{hub}/push/$APPID$`). A revoked account takes none.
fn setup_of<'a>(
    platforms: &'a HashMap<String, PushConfig>,
    a: &'a AccountConfig,
) -> Option<&'a PushConfig> {
    match &a.via {
        Via::Authorizer(component) => a
            .push
            .as_ref()
            .or_else(|| platforms.get(component.as_str())),
        Via::Revoked { .. } | Via::Component => None,
        Via::Own => a.push.as_ref(),
    }
}

/// Every account's push gateway and its delivery worker.
#[derive(Debug)]
pub struct Gateway {
    // Changed at run time by the admin API.
    accounts: std::sync::RwLock<HashMap<String, Arc<PushAccount>>>,
    // Each third-party platform's push section, by its AppID: the set-up of
    // every account authorized to it.
    platforms: HashMap<String, PushConfig>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    creds: Arc<Credentials>,
    wx: wx_api::Client,
    settings: PushSettings,
    // Shared mode: this instance's consumer name in the queues' group.
    instance: String,
    // Replier calls, and (`deliver_http`) deliveries: one client each, as
    // a client's connections are driven on the runtime that opened them,
    // and deliveries run on a thread of lower priority. Neither follows
    // redirects: a subscriber URL is the operator's, and a redirect could
    // point anywhere.
    http: reqwest::Client,
    deliver_http: reqwest::Client,
    // The hub's main runtime, for work a delivery starts that others share.
    main: std::sync::OnceLock<tokio::runtime::Handle>,
    // Woken when a push is written, so delivery starts at once.
    wake: tokio::sync::Notify,
    // Profile fetches per account in the current minute.
    profile_budget: Mutex<HashMap<String, (i64, u32)>>,
    // Pushes whose replier is being asked, by account and duplicate key: a
    // platform retry arriving meanwhile waits for the same answer.
    asking: Mutex<Asking>,
    // One permit per verified push waiting for its write
    // (`push.max_pending_writes`): the store's queue is not bounded itself,
    // and anything that reaches the push URL with the Token could grow it.
    writing: tokio::sync::Semaphore,
}

impl Gateway {
    /// Builds the gateway for every account with a `push` section.
    ///
    /// # Errors
    /// If an account's key does not decode (validated at load already) or
    /// the HTTP client cannot be built.
    pub fn new(
        settings: &PushSettings,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        creds: Arc<Credentials>,
        wx: wx_api::Client,
        components: &[ComponentConfig],
    ) -> anyhow::Result<Gateway> {
        let platforms: HashMap<String, PushConfig> = components
            .iter()
            .filter_map(|c| Some((c.appid.as_str().to_string(), c.push.clone()?)))
            .collect();
        let mut map = HashMap::new();
        for account in creds.accounts() {
            let a = &account.cfg;
            if let Some(p) = setup_of(&platforms, a) {
                map.insert(
                    a.appid.as_str().to_string(),
                    Arc::new(PushAccount::new(a, p)?),
                );
            }
        }
        let instance = creds
            .shared()
            .map_or_else(|| "local".to_string(), |s| s.instance().to_string());
        let client = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(std::time::Duration::from_secs(5))
                .pool_max_idle_per_host(settings.max_in_flight)
                .build()
        };
        let (http, deliver_http) = (client()?, client()?);
        Ok(Gateway {
            accounts: std::sync::RwLock::new(map),
            platforms,
            store,
            clock,
            metrics,
            creds,
            wx,
            settings: settings.clone(),
            instance,
            http,
            deliver_http,
            main: std::sync::OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            profile_budget: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashMap::new()),
            writing: tokio::sync::Semaphore::new(settings.max_pending_writes),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<PushAccount>>> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The account's push set-up, if it has one.
    pub fn account(&self, appid: &str) -> Option<Arc<PushAccount>> {
        self.read().get(appid).cloned()
    }

    /// Every account with a push set-up.
    pub fn accounts(&self) -> Vec<Arc<PushAccount>> {
        self.read().values().cloned().collect()
    }

    /// Applies an account's push settings changed at run time: `None` (or
    /// no `push` section) stops taking its pushes. What is queued for its
    /// subscribers stays and is delivered to those still configured.
    ///
    /// # Errors
    /// If its EncodingAESKey does not decode (validated already).
    pub fn set_account(&self, appid: &str, cfg: Option<&AccountConfig>) -> anyhow::Result<()> {
        let entry = match cfg.and_then(|a| setup_of(&self.platforms, a).map(|p| (a, p))) {
            Some((a, p)) => Some(Arc::new(PushAccount::new(a, p)?)),
            None => None,
        };
        let names = |a: &PushAccount| -> Vec<String> {
            a.config
                .subscribers
                .iter()
                .map(|s| s.name.clone())
                .collect()
        };
        let kept = entry.as_deref().map(names).unwrap_or_default();
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        let old = match entry {
            Some(e) => map.insert(appid.to_string(), e),
            None => map.remove(appid),
        };
        drop(map);
        for gone in old.as_deref().map(names).unwrap_or_default() {
            if !kept.contains(&gone) {
                self.metrics.forget_subscriber(appid, &gone);
            }
        }
        self.wake();
        Ok(())
    }

    /// Starts a delivery round now (a push was written or replayed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether any account takes pushes (the worker runs only then).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Whether this instance delivers for `appid` now: always with SQLite;
    /// in shared mode only while it holds the account's lease, so each
    /// queue has one deliverer at a time.
    fn delivers(&self, appid: &str) -> bool {
        self.creds
            .shared()
            .is_none_or(|s| s.holding(appid).is_some())
    }

    /// Takes one profile fetch from the account's per-minute allowance.
    fn take_profile_fetch(&self, appid: &str, per_minute: u32, now: i64) -> bool {
        let mut b = self
            .profile_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let minute = now.div_euclid(60);
        let e = b.entry(appid.to_string()).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        if e.1 >= per_minute {
            return false;
        }
        e.1 += 1;
        true
    }

    /// Current backlog gauges for every subscriber (the console and
    /// `/metrics`).
    pub async fn backlog(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut accounts = self.accounts();
        accounts.sort_by(|a, b| a.appid.as_str().cmp(b.appid.as_str()));
        for a in accounts {
            for s in &a.config.subscribers {
                let b = self
                    .store
                    .push_backlog(a.appid.as_str(), &s.name)
                    .await
                    .ok();
                if let Some(b) = &b {
                    for (state, v) in [("queued", b.queued), ("parked", b.parked)] {
                        self.metrics.set(
                            "wxhub_push_backlog",
                            &[
                                ("appid", a.appid.as_str()),
                                ("subscriber", &s.name),
                                ("state", state),
                            ],
                            v as f64,
                        );
                    }
                }
                out.push(serde_json::json!({
                    "appid": a.appid.as_str(),
                    "subscriber": s.name,
                    "replier": s.replier,
                    "queued": b.map(|b| b.queued),
                    "parked": b.map(|b| b.parked),
                }));
            }
        }
        out
    }
}
