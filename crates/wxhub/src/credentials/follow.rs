//! Shared mode from a follower's side: what Redis holds may be newer than
//! the local copy; the owner refreshes, and everyone else asks it (a note on
//! the requests channel) and waits for its write (a note on the changes
//! channel). Every (re)connection of the subscriber starts with a full
//! re-read, so notes missed while away cost nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::futures::Notified;

use super::model::{Account, CredError, CredKind, Refusal, Secret, Served, Slot, Trigger};
use super::{Credentials, sha256_hex};
use crate::shared::note::{Note, RequestKind};
use crate::store::StoreError;

impl Credentials {
    /// Shared mode, when the local copy will not do: what Redis holds may be
    /// newer; the owner refreshes (this instance, if no one holds the lease);
    /// anyone else asks the owner and waits for its write, or its refusal.
    pub(crate) async fn get_shared(
        self: &Arc<Self>,
        account: Arc<Account>,
        kind: CredKind,
        failed: Option<Secret>,
        rejected: bool,
    ) -> Result<Served, CredError> {
        let slot = account.slot(kind).expect("find checked the slot");
        let appid = account.appid();
        let key = account.store_key(kind);
        // Armed before anything is read, so no change is missed.
        let news = slot.news.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        let usable = |this: &Self| {
            this.served(&account, slot)
                .filter(|s| !failed.as_ref().is_some_and(|f| s.value.ct_eq(f)))
        };
        match self.store.load_credential(appid, &key).await {
            Ok(rec) => {
                self.redis_ok();
                if let Some(rec) = rec {
                    self.adopt(&account, slot, rec);
                }
            }
            Err(e) => {
                self.redis_failed(&e);
                return Err(self.redis_unavailable(kind));
            }
        }
        if let Some(s) = usable(self) {
            return Ok(s);
        }
        let owner = self.own(&account).await;
        if owner {
            let trigger = match failed {
                Some(failed) => Trigger::Reported { failed, rejected },
                None => Trigger::Missing,
            };
            return self.refresh_and_wait(account.clone(), kind, trigger).await;
        }
        self.ask_owner(&account, slot, failed.as_ref(), rejected, news)
            .await
    }

    /// Asks the owner to replace (or fetch) the slot's value, and waits for
    /// its write, or for its refusal of the reported value.
    async fn ask_owner<'s>(
        &self,
        account: &Account,
        slot: &'s Slot,
        failed: Option<&Secret>,
        rejected: bool,
        mut news: Pin<&mut Notified<'s>>,
    ) -> Result<Served, CredError> {
        let sh = self.shared.as_ref().expect("shared mode");
        let (appid, kind) = (account.appid(), slot.kind);
        let failed_hash = failed.map(|f| sha256_hex(f.expose_secret()));
        let why = if failed.is_some() && rejected {
            RequestKind::Rejected
        } else {
            RequestKind::Plain
        };
        let key = account.store_key(kind);
        let asked = Instant::now();
        if let Err(e) = sh.request(appid, &key, failed_hash.as_deref(), why).await {
            self.redis_failed(&e);
            return Err(self.redis_unavailable(kind));
        }
        let deadline = tokio::time::Instant::now() + self.settings.wait_for_token;
        while tokio::time::timeout_at(deadline, news.as_mut())
            .await
            .is_ok()
        {
            // Re-armed before the state is read, so the next change wakes us.
            news.set(slot.news.notified());
            news.as_mut().enable();
            if let Some(s) = self
                .served(account, slot)
                .filter(|s| !failed.is_some_and(|f| s.value.ct_eq(f)))
            {
                return Ok(s);
            }
            let refusal = slot.lock().shared.refusal.clone();
            if let (Some(r), Some(h)) = (refusal, &failed_hash)
                && r.failed_sha256 == *h
                && r.heard >= asked
            {
                return Err(CredError::OverBudget {
                    reason: r.reason,
                    retry_after: r.retry_after,
                });
            }
        }
        Err(CredError::Unavailable {
            reason: format!(
                "waiting for the instance that owns {appid}'s refresh to replace the {}",
                kind.label()
            ),
            retry_after: 1,
        })
    }

    /// A follower re-reads what is due, in case a note was missed.
    pub(crate) async fn follow(&self, account: &Account) {
        let now = self.clock.now();
        for slot in account.slots() {
            let due = {
                let st = slot.lock();
                now >= st.next_refresh_at || st.valid(now).is_none()
            };
            if due {
                self.reload_or_note(account, slot).await;
            }
        }
    }

    async fn reload_or_note(&self, account: &Account, slot: &Slot) {
        if let Err(e) = self.reload(account, slot).await {
            self.redis_failed(&e);
        }
    }

    pub(crate) async fn subscriber_loop(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            match self.subscribe(&mut shutdown).await {
                Ok(()) => return,
                Err(e) => self.redis_failed(&e),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Listens for notes until shutdown (`Ok`) or until the connection
    /// breaks.
    async fn subscribe(
        self: &Arc<Self>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        use futures::StreamExt;
        let sh = self.shared.clone().expect("shared mode");
        let mut pubsub = sh.redis().client().get_async_pubsub().await?;
        let changes = sh.changes_channel();
        pubsub.subscribe(&changes).await?;
        pubsub.subscribe(sh.requests_channel()).await?;
        self.redis_ok();
        for account in self.managed() {
            for slot in account.slots() {
                self.reload_or_note(&account, slot).await;
            }
        }
        let mut messages = pubsub.on_message();
        // A connection cut without a reset stays silent forever: not hearing
        // our own heartbeat (sent every lease round) for this long means
        // the connection is dead.
        let silence = sh.lease_ttl() * 2;
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err(StoreError::new("redis pub/sub connection closed"));
                    };
                    let payload: String = msg.get_payload().unwrap_or_default();
                    let request = msg.get_channel_name() != changes;
                    match Note::parse(request, &payload) {
                        Some(Note::Heartbeat { instance }) => {
                            if instance == sh.instance() {
                                heard = tokio::time::Instant::now();
                            }
                            sh.heard(&instance);
                        }
                        Some(note) => self.on_note(note),
                        None => {}
                    }
                }
                () = tokio::time::sleep_until(heard + silence) => {
                    return Err(StoreError::new("redis pub/sub connection silent; reconnecting"));
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    fn on_note(self: &Arc<Self>, note: Note) {
        match note {
            Note::Heartbeat { .. } => {}
            Note::Refused {
                appid,
                kind,
                failed_sha256,
                retry_after,
                reason,
            } => {
                if let Some(account) = self.account(&appid)
                    && let Some(slot) = account.slot_by_key(&kind)
                {
                    slot.lock().shared.refusal = Some(Refusal {
                        failed_sha256,
                        reason,
                        retry_after,
                        heard: Instant::now(),
                    });
                    slot.changed();
                }
            }
            Note::Changed { appid, kind } => {
                let Some(account) = self.account(&appid) else {
                    return;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    if let Some(slot) = account.slot_by_key(&kind) {
                        this.reload_or_note(&account, slot).await;
                    }
                });
            }
            Note::Request {
                appid,
                kind,
                failed_sha256,
                why,
            } => self.on_request(&appid, &kind, failed_sha256, why),
        }
    }

    /// The owner's side of a request: refresh, unless the reported value was
    /// already replaced (the asker then gets the change note); refused by
    /// the caller budget, say so, so the asker stops waiting.
    fn on_request(
        self: &Arc<Self>,
        appid: &str,
        key: &str,
        failed_sha256: Option<String>,
        why: RequestKind,
    ) {
        let owner = self
            .shared
            .as_ref()
            .is_some_and(|sh| sh.holding(appid).is_some());
        let Some(account) = self.account(appid).filter(|_| owner) else {
            return;
        };
        let Some(kind) = account.slot_by_key(key).map(|s| s.kind) else {
            return;
        };
        let slot = account.slot(kind).expect("found by key");
        let trigger = match failed_sha256 {
            None => Trigger::Missing,
            Some(hash) => {
                let current = slot.lock().current.as_ref().map(|c| c.value.clone());
                match current {
                    Some(v) if sha256_hex(v.expose_secret()) == hash => match why {
                        RequestKind::Doomed => {
                            tracing::info!(account.appid = %appid, "a paused instance's thrown-away fetch doomed the current token; replacing it");
                            Trigger::Doomed(v)
                        }
                        RequestKind::Rejected => Trigger::Reported {
                            failed: v,
                            rejected: true,
                        },
                        RequestKind::Plain => Trigger::Reported {
                            failed: v,
                            rejected: false,
                        },
                    },
                    _ => return,
                }
            }
        };
        let reported = match &trigger {
            Trigger::Reported { failed, .. } => Some(sha256_hex(failed.expose_secret())),
            _ => None,
        };
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            let refused = this.refresh(&account, kind, trigger).await;
            if let (
                Err(CredError::OverBudget {
                    reason,
                    retry_after,
                }),
                Some(hash),
                Some(sh),
            ) = (refused, reported, this.shared.as_ref())
                && let Err(e) = sh
                    .refused(account.appid(), &key, &hash, retry_after, &reason)
                    .await
            {
                this.redis_failed(&e);
            }
        });
    }
}
