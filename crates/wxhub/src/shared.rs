//! Shared mode: several instances, one Redis, exactly one refresher per
//! account.
//!
//! Accounts are hashed into a fixed number of partitions (64 unless
//! configured; the first instance's count is kept in Redis), and each
//! partition is owned through one lease whose value names the holder and a
//! fencing number. Leasing costs the same few dozen scripts a round for ten
//! accounts or a hundred thousand; balancing and takeover move whole
//! partitions.
//!
//! A new owner stamps each of the partition's accounts with its holder and
//! fence (`{appid}:lease`, no expiry) before it refreshes or writes anything
//! for it, and every write of a credential runs in a script that checks,
//! atomically, that the stamp is the writer's: an instance that was paused
//! (GC, SIGSTOP, a slow disk) or cut off past its lease can still finish an
//! upstream call, but can no longer overwrite the newer token (WxJava
//! #2803). The stamp is checked again, in Redis, right before every upstream
//! fetch, and a holder trusts its partition only while it was confirmed
//! within two thirds of the lease time, so one that lost it does not even
//! ask.
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

/// A partition lease this instance holds.
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

/// How many partitions when the configuration does not say: enough that
/// three to a dozen instances get even shares, few enough that a lease
/// round is a few dozen small scripts.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// The Redis side of shared mode.
pub struct Shared {
    redis: RedisStore,
    instance: String,
    lease_ttl: Duration,
    partitions: u32,
    // Indexed by partition.
    held: Mutex<Vec<Option<Held>>>,
    // Partitions handed over to balance the load: not taken back before.
    cooling: Mutex<Vec<Option<Instant>>>,
    // Instances whose heartbeat was heard, and when: the share of
    // partitions each should hold.
    peers: Mutex<HashMap<String, Instant>>,
    // Whether Redis answered last time; when not, since when and why.
    health: Mutex<Result<(), (i64, String)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("instance", &self.instance)
            .field("lease_ttl", &self.lease_ttl)
            .field("partitions", &self.partitions())
            .finish_non_exhaustive()
    }
}

// Takes or renews a partition's lease. KEYS: lease, fence (one partition's
// hash tag). Returns {fence, 1} when newly taken, {fence, 0} when renewed,
// {0, ms} when another instance holds it for ms more milliseconds.
//
// A new fencing number is never below the server's clock in microseconds:
// fences then grow across partitions too, so a store whose partition count
// was changed, or that still holds fences from per-account leases, never
// holds a fence above a new owner's.
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
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if f < now then
  f = now
  redis.call('SET', KEYS[2], string.format('%.0f', f))
end
local fs = string.format('%.0f', f)
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fs, 'PX', ARGV[2])
return {f, 1}
";

// Marks an account as refreshed under a partition's lease: the value its
// fenced writes check. Refused (0) when a higher fence is stamped, which
// means another instance took the partition since. KEYS: the account's
// lease. ARGV: holder (`instance:fence`), fence.
const STAMP: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return 1 end
if cur then
  local f = tonumber(string.match(cur, ':(%d+)$') or '0')
  if f > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

// Gives a lease (or an account's stamp) up, only if still ours. KEYS: lease.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

// Agrees on the partition count: the first instance's configuration wins,
// so instances configured differently still hash accounts alike.
const AGREE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return tonumber(redis.call('GET', KEYS[1]))
";

// Compiled once: a Script hashes its source, and invoking it sends EVALSHA
// first, so each call is one small round trip.
static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static STAMP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(STAMP));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static AGREE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(AGREE));

fn script(s: &Script) -> redis::ScriptInvocation<'_> {
    s.prepare_invoke()
}

/// The partition of `appid` among `n`: FNV-1a, written out so that every
/// version and platform of the hub hashes alike.
pub fn partition_of(appid: &str, n: u32) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in appid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(n.max(1))) as usize
}

impl Shared {
    /// Wraps a connected store with [`DEFAULT_PARTITIONS`] partitions.
    /// `instance` names this process in leases.
    pub fn new(redis: RedisStore, instance: String, lease_ttl: Duration) -> Shared {
        Shared::with_partitions(redis, instance, lease_ttl, DEFAULT_PARTITIONS)
    }

    /// Wraps a connected store, hashing accounts into `partitions` leases
    /// (which every instance on this store must agree on: see
    /// [`Shared::agree_partitions`]).
    pub fn with_partitions(
        redis: RedisStore,
        instance: String,
        lease_ttl: Duration,
        partitions: u32,
    ) -> Shared {
        let n = partitions.max(1) as usize;
        Shared {
            redis,
            instance,
            lease_ttl,
            partitions: n as u32,
            held: Mutex::new(vec![None; n]),
            cooling: Mutex::new(vec![None; n]),
            peers: Mutex::new(HashMap::new()),
            health: Mutex::new(Ok(())),
        }
    }

    /// The partition count stored in Redis, set to `wanted` by the first
    /// instance: a later instance configured otherwise follows the store
    /// (accounts must hash alike everywhere).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn agree_partitions(redis: &RedisStore, wanted: u32) -> Result<u32, StoreError> {
        let n: i64 = script(&AGREE_SCRIPT)
            .key(redis.key("lease_partitions"))
            .arg(wanted)
            .invoke_async(&mut redis.conn())
            .await?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| StoreError::new(format!("redis holds a bad partition count: {n}")))
    }

    /// This instance's name in leases.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long a lease lasts without renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// How many partitions the accounts are hashed into.
    pub fn partitions(&self) -> usize {
        self.partitions as usize
    }

    /// The partition whose lease covers `appid`.
    pub fn partition(&self, appid: &str) -> usize {
        partition_of(appid, self.partitions)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Held>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn partition_key(&self, p: usize, suffix: &str) -> String {
        // A hash tag of its own per partition: each script touches one slot
        // on Redis Cluster, and no appid can be spelled `part-N`.
        self.redis.key(&format!("{{part-{p}}}:{suffix}"))
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

    /// Takes or renews partition `p`'s lease.
    ///
    /// # Errors
    /// If Redis cannot be asked; the lease then counts as lost once its time
    /// has passed locally.
    pub async fn acquire_partition(&self, p: usize) -> Result<LeaseOutcome, StoreError> {
        let asked = Instant::now();
        let (fence, extra): (u64, i64) = script(&ACQUIRE_SCRIPT)
            .key(self.partition_key(p, "lease"))
            .key(self.partition_key(p, "fence"))
            .arg(&self.instance)
            .arg(self.lease_ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await?;
        let mut held = self.lock();
        if fence == 0 {
            held[p] = None;
            return Ok(LeaseOutcome::Other {
                lapses_in: Duration::from_millis(extra.max(0) as u64),
            });
        }
        // The lease runs from when Redis set it, which is after `asked`.
        held[p] = Some(Held {
            fence,
            confirmed: asked,
        });
        Ok(LeaseOutcome::Held {
            fence,
            new: extra == 1,
        })
    }

    /// The instance that holds the lease of the account's partition now,
    /// as Redis says (`None`: no one does).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn lease_holder(&self, appid: &str) -> Result<Option<String>, StoreError> {
        use redis::AsyncCommands;
        let value: Option<String> = self
            .redis
            .conn()
            .get(self.partition_key(self.partition(appid), "lease"))
            .await?;
        Ok(value.map(|v| match v.rsplit_once(':') {
            Some((instance, _fence)) => instance.to_string(),
            None => v,
        }))
    }

    /// Marks `appid` as refreshed by this instance under `fence` (its
    /// partition's). `Ok(false)`: a newer owner stamped it; the partition is
    /// lost.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn stamp(&self, appid: &str, fence: u64) -> Result<bool, StoreError> {
        let ok: i64 = script(&STAMP_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .arg(self.holder(fence))
            .arg(fence)
            .invoke_async(&mut self.redis.conn())
            .await?;
        if ok == 0 {
            self.forget(appid);
        }
        Ok(ok == 1)
    }

    /// Takes or renews the lease of `appid`'s partition and stamps the
    /// account: what a caller that needs one account's refresh right now
    /// does. `new` is the partition's.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn acquire(&self, appid: &str) -> Result<LeaseOutcome, StoreError> {
        let out = self.acquire_partition(self.partition(appid)).await?;
        if let LeaseOutcome::Held { fence, .. } = out
            && !self.stamp(appid, fence).await?
        {
            return Ok(LeaseOutcome::Other {
                lapses_in: self.lease_ttl,
            });
        }
        Ok(out)
    }

    /// The fencing number of partition `p`'s lease, if this instance holds
    /// it and was confirmed recently enough to act on it. A margin of a
    /// third of the lease time keeps a holder from acting on a lease that
    /// is about to lapse.
    pub fn holding_partition(&self, p: usize) -> Option<u64> {
        // A lapsed entry stays until renewal or loss decides, so shutdown
        // can still give it back if Redis kept it.
        let h = (*self.lock().get(p)?)?;
        (h.confirmed.elapsed() < self.lease_ttl.mul_f64(2.0 / 3.0)).then_some(h.fence)
    }

    /// The fencing number under which this instance refreshes `appid`, if
    /// it holds the account's partition (see [`Shared::holding_partition`]).
    pub fn holding(&self, appid: &str) -> Option<u64> {
        self.holding_partition(self.partition(appid))
    }

    /// Forgets the lease of `appid`'s partition (lost).
    pub fn forget(&self, appid: &str) {
        let p = self.partition(appid);
        self.lock()[p] = None;
    }

    /// Whether partition `p` was handed over a moment ago and is not to be
    /// taken back yet.
    pub fn cooling(&self, p: usize) -> bool {
        self.cooling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(p)
            .copied()
            .flatten()
            .is_some_and(|t| Instant::now() < t)
    }

    /// Gives partition `p`'s lease back (to balance refreshing across
    /// instances), leaving it alone for `cooldown`.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn release_partition(&self, p: usize, cooldown: Duration) -> Result<(), StoreError> {
        if let Some(c) = self
            .cooling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(p)
        {
            *c = Some(Instant::now() + cooldown);
        }
        let Some(h) = self.lock().get_mut(p).and_then(Option::take) else {
            return Ok(());
        };
        let _: i64 = script(&RELEASE_SCRIPT)
            .key(self.partition_key(p, "lease"))
            .arg(self.holder(h.fence))
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Removes `appid`'s stamp if it is still this instance's under `fence`
    /// (the account was removed).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn unstamp(&self, appid: &str, fence: u64) -> Result<(), StoreError> {
        let _: i64 = script(&RELEASE_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .arg(self.holder(fence))
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// The partitions this instance holds (confirmed lately or not).
    pub fn held_partitions(&self) -> Vec<usize> {
        self.lock()
            .iter()
            .enumerate()
            .filter_map(|(p, h)| h.map(|_| p))
            .collect()
    }

    /// How many partition leases this instance holds.
    pub fn held_count(&self) -> usize {
        self.lock().iter().flatten().count()
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

    /// Gives every held lease back, so another instance takes over at once
    /// instead of after the lease time.
    pub async fn release_all(&self) {
        let held: Vec<(usize, Held)> = self
            .lock()
            .iter_mut()
            .enumerate()
            .filter_map(|(p, h)| h.take().map(|h| (p, h)))
            .collect();
        for (p, h) in held {
            let _: Result<i64, _> = script(&RELEASE_SCRIPT)
                .key(self.partition_key(p, "lease"))
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
