//! Shared mode: several instances, one Redis, exactly one refresher per
//! account.
//!
//! Each account's refresh is owned through a lease in Redis whose value names
//! the holder and a fencing number taken from a per-account counter. Every
//! write of a credential runs in a script that checks, atomically, that the
//! writer still holds the lease under that number: an instance that was
//! paused (GC, SIGSTOP, a slow disk) or cut off past its lease can still
//! finish an upstream call, but can no longer overwrite the newer token
//! (WxJava #2803). The lease is checked again, in Redis, right before every
//! upstream fetch, so a holder that lost it does not even ask.
//!
//! All of an account's keys share the hash tag `{appid}`, so each script
//! touches one slot and works unchanged on Redis Cluster (WxJava #3378).
//! Pub/sub carries only notes ([`note`]); the values stay in keys, read
//! after the note. The credential records and their fenced writes are the
//! store's (`store/redis_creds.rs`); this module keeps the leases, the
//! instances heard, and Redis's health.

pub mod note;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use self::note::{Note, RequestKind};
use crate::store::{RedisStore, StoreError};

/// A lease this instance holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    fence: u64,
    // Local monotonic time of the last confirmation by Redis. A process that
    // was stopped sees this jump and stops trusting the lease at once.
    confirmed: Instant,
}

/// What asking for a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Held by this instance; `new` when it was not held a moment ago.
    Held {
        /// The fencing number.
        fence: u64,
        /// Just acquired (rather than renewed).
        new: bool,
    },
    /// Another instance holds it, for this long unless it renews.
    Other {
        /// Until the lease lapses.
        lapses_in: Duration,
    },
}

/// The Redis side of shared mode.
pub struct Shared {
    redis: RedisStore,
    instance: String,
    lease_ttl: Duration,
    held: Mutex<HashMap<String, Held>>,
    // Instances whose heartbeat was heard, and when: the share of accounts
    // each should refresh.
    peers: Mutex<HashMap<String, Instant>>,
    // Whether Redis answered last time; when not, since when and why.
    health: Mutex<Result<(), (i64, String)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("instance", &self.instance)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

// Takes or renews the lease. KEYS: lease, fence (one account's hash tag).
// Returns {fence, 1} when newly taken, {fence, 0} when renewed, {0, ms} when
// another instance holds it for ms more milliseconds.
const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(string.sub(cur, sep + 1)), 0}
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. f, 'PX', ARGV[2])
return {f, 1}
";

// Gives the lease up on shutdown, only if still ours. KEYS: lease.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

// Compiled once: a Script hashes its source, and invoking it sends EVALSHA
// first, so each call is one small round trip.
static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

fn script(s: &Script) -> redis::ScriptInvocation<'_> {
    s.prepare_invoke()
}

impl Shared {
    /// Wraps a connected store. `instance` names this process in leases.
    pub fn new(redis: RedisStore, instance: String, lease_ttl: Duration) -> Shared {
        Shared {
            redis,
            instance,
            lease_ttl,
            held: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            health: Mutex::new(Ok(())),
        }
    }

    /// This instance's name in leases.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long a lease lasts without renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The store.
    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }

    /// The channel of "credential changed" notes.
    pub fn changes_channel(&self) -> String {
        self.redis.key("changes")
    }

    /// The channel of refresh requests for owners.
    pub fn requests_channel(&self) -> String {
        self.redis.key("requests")
    }

    /// This instance's lease value under `fence`: what the store's fenced
    /// scripts check.
    pub fn holder(&self, fence: u64) -> String {
        format!("{}:{fence}", self.instance)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records whether Redis answered. When that changes, `changed` runs
    /// under the same lock, so the metric and the log it updates cannot
    /// disagree with the state when a success and a failure race.
    pub fn set_up(&self, up: bool, now: i64, reason: &str, changed: impl FnOnce()) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match (&*h, up) {
            (Ok(()), true) | (Err(_), false) => {}
            (Ok(()), false) => {
                *h = Err((now, reason.to_string()));
                changed();
            }
            (Err(_), true) => {
                *h = Ok(());
                changed();
            }
        }
    }

    /// Whether Redis answered last time, and if not since when and why.
    pub fn health(&self) -> Result<(), (i64, String)> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes or renews the account's lease.
    ///
    /// # Errors
    /// If Redis cannot be asked; the lease then counts as lost once its time
    /// has passed locally.
    pub async fn acquire(&self, appid: &str) -> Result<LeaseOutcome, StoreError> {
        let asked = Instant::now();
        let (fence, extra): (u64, i64) = script(&ACQUIRE_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .key(self.redis.app_key(appid, "fence"))
            .arg(&self.instance)
            .arg(self.lease_ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        let mut held = self.lock();
        if fence == 0 {
            held.remove(appid);
            return Ok(LeaseOutcome::Other {
                lapses_in: Duration::from_millis(extra.max(0) as u64),
            });
        }
        // The lease runs from when Redis set it, which is after `asked`.
        held.insert(
            appid.to_string(),
            Held {
                fence,
                confirmed: asked,
            },
        );
        Ok(LeaseOutcome::Held {
            fence,
            new: extra == 1,
        })
    }

    /// The instance that holds the account's lease now, as Redis says
    /// (`None`: no one does).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn lease_holder(&self, appid: &str) -> Result<Option<String>, StoreError> {
        use redis::AsyncCommands;
        let value: Option<String> = self
            .redis
            .conn()
            .get(self.redis.app_key(appid, "lease"))
            .await?;
        Ok(value.map(|v| match v.rsplit_once(':') {
            Some((instance, _fence)) => instance.to_string(),
            None => v,
        }))
    }

    /// The fencing number of the account's lease, if this instance holds it
    /// and was confirmed recently enough to act on it. A margin of a third
    /// of the lease time keeps a holder from acting on a lease that is about
    /// to lapse.
    pub fn holding(&self, appid: &str) -> Option<u64> {
        // A lapsed entry stays until renewal or loss decides, so shutdown
        // can still give it back if Redis kept it.
        let h = *self.lock().get(appid)?;
        (h.confirmed.elapsed() < self.lease_ttl.mul_f64(2.0 / 3.0)).then_some(h.fence)
    }

    /// Forgets a lease (lost, or about to be released).
    pub fn forget(&self, appid: &str) {
        self.lock().remove(appid);
    }

    /// Gives one lease back (to balance refreshing across instances).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn release(&self, appid: &str) -> Result<(), StoreError> {
        let Some(h) = self.lock().remove(appid) else {
            return Ok(());
        };
        let _: i64 = script(&RELEASE_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .arg(self.holder(h.fence))
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Records a heartbeat heard from `instance`.
    pub fn heard(&self, instance: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(instance.to_string(), Instant::now());
    }

    /// Instances heard from lately, this one included (at least 1).
    pub fn live_instances(&self) -> usize {
        // Heartbeats come every lease round (a third of the lease): three
        // missed means gone.
        let window = self.lease_ttl;
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|_, at| at.elapsed() < window);
        peers.len().max(1)
    }

    /// How many leases this instance holds (confirmed lately or not).
    pub fn held_count(&self) -> usize {
        self.lock().len()
    }

    /// Gives every held lease back, so another instance takes over at once
    /// instead of after the lease time.
    pub async fn release_all(&self) {
        let held: Vec<(String, Held)> = self.lock().drain().collect();
        for (appid, h) in held {
            let _: Result<i64, _> = script(&RELEASE_SCRIPT)
                .key(self.redis.app_key(&appid, "lease"))
                .arg(self.holder(h.fence))
                .invoke_async(&mut self.redis.conn())
                .await;
        }
    }

    /// Tells the instances waiting for a reported value to be replaced that
    /// the owner will not replace it now.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn refused(
        &self,
        appid: &str,
        kind: &str,
        failed_sha256: &str,
        retry_after: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let note = Note::Refused {
            appid: appid.to_string(),
            kind: kind.to_string(),
            failed_sha256: failed_sha256.to_string(),
            retry_after,
            reason: reason.to_string(),
        };
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.changes_channel())
            .arg(note.encode())
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Tells every instance (itself included) that this one is alive and
    /// listening: a subscriber that stops hearing its own heartbeat has a
    /// dead connection, even if TCP never said so.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.changes_channel())
            .arg(
                Note::Heartbeat {
                    instance: self.instance.clone(),
                }
                .encode(),
            )
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Asks the owner to refresh: after `failed_sha256` was reported (see
    /// [`RequestKind`] for why), or because no valid value is held (`None`).
    /// Returns how many instances listen.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn request(
        &self,
        appid: &str,
        kind: &str,
        failed_sha256: Option<&str>,
        why: RequestKind,
    ) -> Result<i64, StoreError> {
        let note = Note::Request {
            appid: appid.to_string(),
            kind: kind.to_string(),
            failed_sha256: failed_sha256.map(str::to_string),
            why,
        };
        let n: i64 = redis::cmd("PUBLISH")
            .arg(self.requests_channel())
            .arg(note.encode())
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(n)
    }
}
