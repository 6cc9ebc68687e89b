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
//! Pub/sub carries only "this account's credential changed" and "please
//! refresh" notes; the values stay in keys, read after the note.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use crate::store::{RedisStore, StoreError};

/// A credential as shared in Redis.
#[derive(Clone)]
pub struct Record {
    /// The secret value.
    pub value: String,
    /// When the platform stops accepting it.
    pub expires_at: i64,
    /// When it was fetched.
    pub fetched_at: i64,
    /// When this value was first seen (tickets repeat).
    pub first_seen: i64,
    /// The fencing number of the lease it was written under.
    pub fence: u64,
    /// The write's place in the account's history: larger is newer, also
    /// across a Redis restart (it is the Redis server's clock in
    /// microseconds when that is larger than the last one plus one).
    /// 0 before it is written.
    pub seq: u64,
    /// The owner's planned refresh time: every instance derives the
    /// `expires_at` it tells clients from it.
    pub refresh_at: i64,
    /// When the owner started an upstream fetch that has not been written
    /// yet: in classic mode the value above dies 300 s after that at the latest.
    pub pending_since: Option<i64>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("fetched_at", &self.fetched_at)
            .field("fence", &self.fence)
            .field("seq", &self.seq)
            .field("refresh_at", &self.refresh_at)
            .field("pending_since", &self.pending_since)
            .finish()
    }
}

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

// Marks an upstream fetch as started, if the caller still holds the lease.
// The earliest unwritten start is kept: a token minted then dooms the stored
// one from then on, whatever later attempts do.
// KEYS: lease, credential. ARGV: holder, now, channel, note.
const BEGIN_FETCH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HSETNX', KEYS[2], 'pending', ARGV[2]) == 1 then
    redis.call('PUBLISH', ARGV[3], ARGV[4])
  end
end
return 1
";

// Clears the mark when the platform answered this fetch with an error
// (nothing was minted), unless an earlier fetch's mark is there.
// KEYS: lease, credential. ARGV: holder, start, channel, note.
const END_FETCH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'pending') == ARGV[2] then
  redis.call('HDEL', KEYS[2], 'pending')
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
";

// A refused writer's fetch minted a token nobody will use; in classic mode
// it dooms the stored one. Marked without a lease: it only shortens what
// clients are told. KEYS: credential. ARGV: start, channel, note.
const MARK_MINTED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'pending', ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
";

// The fenced write. KEYS: lease, credential. ARGV: holder, fence, value,
// expires_at, fetched_at, first_seen, refresh_at, channel, note.
// Rejected (0) unless the writer holds the lease now and no write under a
// higher fencing number is stored; else returns the write's sequence number.
// Timestamps in seconds cannot order two writes of the same second, and a
// counter restarts with an empty Redis: the server's microsecond clock,
// kept strictly increasing, does both.
const WRITE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local stored = tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')
if tonumber(ARGV[2]) < stored then return 0 end
local last = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local t = redis.call('TIME')
local seq = math.max(last + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'fence', ARGV[2], 'v', ARGV[3], 'exp', ARGV[4],
  'fetched', ARGV[5], 'first', ARGV[6], 'refresh_at', ARGV[7],
  'seq', string.format('%.0f', seq))
redis.call('PUBLISH', ARGV[8], ARGV[9])
return seq
";

// Compiled once: a Script hashes its source, and invoking it sends EVALSHA
// first, so each call is one small round trip.
static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static BEGIN_FETCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BEGIN_FETCH));
static END_FETCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(END_FETCH));
static MARK_MINTED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(MARK_MINTED));
static WRITE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE));

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

    fn cred_key(&self, appid: &str, kind: &str) -> String {
        self.redis.app_key(appid, &format!("cred:{kind}"))
    }

    fn holder(&self, fence: u64) -> String {
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

    fn note(appid: &str, kind: &str) -> String {
        format!("{appid}\t{kind}")
    }

    /// The shared credential of `kind` for `appid`.
    ///
    /// # Errors
    /// If Redis cannot be asked or the record is damaged.
    pub async fn load(&self, appid: &str, kind: &str) -> Result<Option<Record>, StoreError> {
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.cred_key(appid, kind))
            .query_async(&mut self.redis.conn())
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        let num = |k: &str| -> Result<i64, StoreError> {
            map.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                StoreError::new(format!("shared credential {appid}/{kind}: bad {k}"))
            })
        };
        let Some(value) = map.get("v") else {
            // Only a pending mark, left on a record deleted under it.
            return Ok(None);
        };
        Ok(Some(Record {
            value: value.clone(),
            expires_at: num("exp")?,
            fetched_at: num("fetched")?,
            first_seen: num("first")?,
            fence: num("fence")? as u64,
            seq: map.get("seq").and_then(|v| v.parse().ok()).unwrap_or(0),
            refresh_at: num("refresh_at")?,
            pending_since: map.get("pending").and_then(|v| v.parse().ok()),
        }))
    }

    /// Marks an upstream fetch as started, checking the lease in Redis
    /// first. `Ok(false)`: the lease is gone; do not fetch.
    ///
    /// # Errors
    /// If Redis cannot be asked: do not fetch either.
    pub async fn begin_fetch(
        &self,
        appid: &str,
        kind: &str,
        fence: u64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let ok: i64 = script(&BEGIN_FETCH_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .key(self.cred_key(appid, kind))
            .arg(self.holder(fence))
            .arg(now)
            .arg(self.changes_channel())
            .arg(Self::note(appid, kind))
            .invoke_async(&mut self.redis.conn())
            .await?;
        if ok == 0 {
            self.forget(appid);
        }
        Ok(ok == 1)
    }

    /// Clears the started-fetch mark of the fetch begun at `started` after
    /// the platform answered it with an error.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn end_fetch(
        &self,
        appid: &str,
        kind: &str,
        fence: u64,
        started: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = script(&END_FETCH_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .key(self.cred_key(appid, kind))
            .arg(self.holder(fence))
            .arg(started)
            .arg(self.changes_channel())
            .arg(Self::note(appid, kind))
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// The fenced write; tells every instance. `Ok(Some(seq))`: written as
    /// that sequence number; `Ok(None)`: rejected, a newer holder exists.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn write(
        &self,
        appid: &str,
        kind: &str,
        r: &Record,
    ) -> Result<Option<u64>, StoreError> {
        let seq: u64 = script(&WRITE_SCRIPT)
            .key(self.redis.app_key(appid, "lease"))
            .key(self.cred_key(appid, kind))
            .arg(self.holder(r.fence))
            .arg(r.fence)
            .arg(&r.value)
            .arg(r.expires_at)
            .arg(r.fetched_at)
            .arg(r.first_seen)
            .arg(r.refresh_at)
            .arg(self.changes_channel())
            .arg(Self::note(appid, kind))
            .invoke_async(&mut self.redis.conn())
            .await?;
        if seq == 0 {
            self.forget(appid);
            return Ok(None);
        }
        Ok(Some(seq))
    }

    /// Marks the stored value as doomed by a fetch begun at `started` whose
    /// token was thrown away (its write was refused).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn mark_minted(
        &self,
        appid: &str,
        kind: &str,
        started: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = script(&MARK_MINTED_SCRIPT)
            .key(self.cred_key(appid, kind))
            .arg(started)
            .arg(self.changes_channel())
            .arg(Self::note(appid, kind))
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
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
        let reason = reason.replace(['\t', '\n'], " ");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.changes_channel())
            .arg(format!(
                "{appid}\t{kind}\trefused\t{failed_sha256}\t{retry_after}\t{reason}"
            ))
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
            .arg(format!("\theartbeat\t{}", self.instance))
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
        let n: i64 = redis::cmd("PUBLISH")
            .arg(self.requests_channel())
            .arg(format!(
                "{appid}\t{kind}\t{}{}",
                failed_sha256.unwrap_or(""),
                match why {
                    RequestKind::Plain => "",
                    RequestKind::Rejected => "\trejected",
                    RequestKind::Doomed => "\tdoomed",
                }
            ))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(n)
    }
}

/// Why an instance asks the owner to replace a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A caller reported it; the platform could not vouch either way (or
    /// nothing is held at all).
    Plain,
    /// A caller reported it and the platform confirmed it is dead.
    Rejected,
    /// Not rejected by the platform but doomed by a fetch whose token was
    /// thrown away: not a foreign refresh, and not a caller's doing.
    Doomed,
}

/// A parsed pub/sub note.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    /// An instance's heartbeat.
    Heartbeat {
        /// Its name.
        instance: String,
    },
    /// The owner will not replace a reported value: its caller budget is
    /// spent. The instances waiting on it answer at once.
    Refused {
        /// The account.
        appid: String,
        /// The store kind.
        kind: String,
        /// SHA-256 (hex) of the reported value.
        failed_sha256: String,
        /// Seconds until a report could refresh again.
        retry_after: i64,
        /// Why, in words.
        reason: String,
    },
    /// The account's credential changed in Redis.
    Changed {
        /// The account.
        appid: String,
        /// The store kind (`access_token:classic`, `ticket:jsapi`, ...).
        kind: String,
    },
    /// Someone asks the owner to refresh.
    Request {
        /// The account.
        appid: String,
        /// The store kind.
        kind: String,
        /// SHA-256 (hex) of the value that failed; None when none is held.
        failed_sha256: Option<String>,
        /// Why.
        why: RequestKind,
    },
}

impl Note {
    /// Parses a message of one of the two channels.
    pub fn parse(request: bool, payload: &str) -> Option<Note> {
        let mut parts = payload.split('\t');
        let appid = parts.next()?.to_string();
        let kind = parts.next()?.to_string();
        if appid.is_empty() && kind == "heartbeat" && !request {
            return Some(Note::Heartbeat {
                instance: parts.next()?.to_string(),
            });
        }
        if !request && parts.clone().next() == Some("refused") {
            parts.next();
            return Some(Note::Refused {
                appid,
                kind,
                failed_sha256: parts.next()?.to_string(),
                retry_after: parts.next()?.parse().ok()?,
                reason: parts.next()?.to_string(),
            });
        }
        if request {
            let failed = parts.next()?;
            Some(Note::Request {
                appid,
                kind,
                failed_sha256: (!failed.is_empty()).then(|| failed.to_string()),
                why: match parts.next() {
                    Some("doomed") => RequestKind::Doomed,
                    Some("rejected") => RequestKind::Rejected,
                    _ => RequestKind::Plain,
                },
            })
        } else {
            Some(Note::Changed { appid, kind })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse() {
        assert_eq!(
            Note::parse(false, "wx1\taccess_token:stable"),
            Some(Note::Changed {
                appid: "wx1".into(),
                kind: "access_token:stable".into()
            })
        );
        assert_eq!(
            Note::parse(true, "wx1\tticket:jsapi\t"),
            Some(Note::Request {
                appid: "wx1".into(),
                kind: "ticket:jsapi".into(),
                failed_sha256: None,
                why: RequestKind::Plain
            })
        );
        assert_eq!(Note::parse(true, "wx1\tticket:jsapi"), None);
        assert_eq!(
            Note::parse(true, "wx1\taccess_token:classic\tab12\tdoomed"),
            Some(Note::Request {
                appid: "wx1".into(),
                kind: "access_token:classic".into(),
                failed_sha256: Some("ab12".into()),
                why: RequestKind::Doomed
            })
        );
        assert_eq!(
            Note::parse(
                false,
                "wx1\taccess_token:classic\trefused\tab12\t30\tno budget"
            ),
            Some(Note::Refused {
                appid: "wx1".into(),
                kind: "access_token:classic".into(),
                failed_sha256: "ab12".into(),
                retry_after: 30,
                reason: "no budget".into()
            })
        );
        assert_eq!(
            Note::parse(true, "wx1\taccess_token:classic\tab12\trejected"),
            Some(Note::Request {
                appid: "wx1".into(),
                kind: "access_token:classic".into(),
                failed_sha256: Some("ab12".into()),
                why: RequestKind::Rejected
            })
        );
        assert_eq!(
            Note::parse(false, "\theartbeat\t123-ab"),
            Some(Note::Heartbeat {
                instance: "123-ab".into()
            })
        );
    }

    fn redis_url() -> String {
        std::env::var("WXHUB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    async fn pair(lease_ms: u64) -> (Shared, Shared, String) {
        let prefix = format!(
            "wxhub-shared-unit-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let a = RedisStore::connect(&redis_url(), &prefix)
            .await
            .expect("redis");
        let b = RedisStore::connect(&redis_url(), &prefix)
            .await
            .expect("redis");
        let ttl = Duration::from_millis(lease_ms);
        (
            Shared::new(a, "a".into(), ttl),
            Shared::new(b, "b".into(), ttl),
            prefix,
        )
    }

    async fn cleanup(s: &Shared, prefix: &str) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut s.redis.conn())
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut s.redis.conn())
                .await;
        }
    }

    fn record(value: &str, fence: u64) -> Record {
        Record {
            value: value.into(),
            expires_at: 9_000,
            fetched_at: 1_000,
            first_seen: 1_000,
            fence,
            seq: 0,
            refresh_at: 8_000,
            pending_since: None,
        }
    }

    #[tokio::test]
    async fn a_lapsed_holder_can_neither_fetch_nor_write() {
        let (a, b, prefix) = pair(300).await;
        let k = "access_token:classic";
        let Ok(LeaseOutcome::Held {
            fence: f1,
            new: true,
        }) = a.acquire("wx1").await
        else {
            panic!("a takes the free lease");
        };
        assert_eq!(
            a.acquire("wx1").await.unwrap(),
            LeaseOutcome::Held {
                fence: f1,
                new: false
            },
            "renewed"
        );
        assert!(matches!(
            b.acquire("wx1").await.unwrap(),
            LeaseOutcome::Other { lapses_in } if lapses_in <= Duration::from_millis(300)
        ));
        let s1 = a
            .write("wx1", k, &record("T1", f1))
            .await
            .unwrap()
            .expect("written");
        // a pauses past its lease; b takes over with a higher fence.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(a.holding("wx1"), None, "a no longer trusts its lease");
        let Ok(LeaseOutcome::Held {
            fence: f2,
            new: true,
        }) = b.acquire("wx1").await
        else {
            panic!("b takes the lapsed lease");
        };
        assert!(f2 > f1);
        assert!(b.begin_fetch("wx1", k, f2, 1_100).await.unwrap());
        let s2 = b
            .write("wx1", k, &record("T2", f2))
            .await
            .unwrap()
            .expect("written");
        assert!(s2 > s1, "sequence grows");
        // a resumes: nothing it does lands.
        assert!(!a.begin_fetch("wx1", k, f1, 1_200).await.unwrap());
        assert_eq!(a.write("wx1", k, &record("T3", f1)).await.unwrap(), None);
        let stored = b.load("wx1", k).await.unwrap().unwrap();
        assert_eq!(
            (stored.value.as_str(), stored.fence, stored.seq),
            ("T2", f2, s2)
        );
        assert_eq!(stored.pending_since, None, "a write clears the mark");
        // Releasing is for the holder only.
        a.release_all().await;
        assert!(matches!(
            a.acquire("wx1").await.unwrap(),
            LeaseOutcome::Other { .. }
        ));
        cleanup(&a, &prefix).await;
    }

    #[tokio::test]
    async fn the_earliest_fetch_mark_stays_until_its_own_fetch_clears_it() {
        let (a, _b, prefix) = pair(5_000).await;
        let k = "access_token:classic";
        let Ok(LeaseOutcome::Held { fence, .. }) = a.acquire("wx1").await else {
            panic!("lease");
        };
        a.write("wx1", k, &record("T1", fence))
            .await
            .unwrap()
            .unwrap();
        assert!(a.begin_fetch("wx1", k, fence, 1_000).await.unwrap());
        assert!(a.begin_fetch("wx1", k, fence, 1_030).await.unwrap());
        let pending = |r: Option<Record>| r.unwrap().pending_since;
        assert_eq!(pending(a.load("wx1", k).await.unwrap()), Some(1_000));
        a.end_fetch("wx1", k, fence, 1_030).await.unwrap();
        assert_eq!(
            pending(a.load("wx1", k).await.unwrap()),
            Some(1_000),
            "not its mark"
        );
        a.end_fetch("wx1", k, fence, 1_000).await.unwrap();
        assert_eq!(pending(a.load("wx1", k).await.unwrap()), None);
        a.mark_minted("wx1", k, 1_050).await.unwrap();
        assert_eq!(pending(a.load("wx1", k).await.unwrap()), Some(1_050));
        cleanup(&a, &prefix).await;
    }

    #[tokio::test]
    async fn sequence_numbers_grow_across_an_emptied_redis() {
        let (a, _b, prefix) = pair(5_000).await;
        let k = "ticket:jsapi";
        let Ok(LeaseOutcome::Held { fence, .. }) = a.acquire("wx1").await else {
            panic!("lease");
        };
        let mut last = 0;
        for _ in 0..20 {
            let s = a
                .write("wx1", k, &record("T", fence))
                .await
                .unwrap()
                .unwrap();
            assert!(s > last);
            last = s;
        }
        // Redis restarted empty: the fence counter starts over, the
        // sequence does not go back.
        cleanup(&a, &prefix).await;
        let Ok(LeaseOutcome::Held {
            fence: f,
            new: true,
        }) = a.acquire("wx1").await
        else {
            panic!("lease again");
        };
        assert_eq!(f, 1);
        let s = a.write("wx1", k, &record("T", f)).await.unwrap().unwrap();
        assert!(s > last, "{s} after {last}");
        cleanup(&a, &prefix).await;
    }

    #[test]
    fn records_hide_their_value() {
        let r = Record {
            value: "SECRET-TOKEN".into(),
            expires_at: 1,
            fetched_at: 0,
            first_seen: 0,
            fence: 1,
            seq: 1,
            refresh_at: 0,
            pending_since: None,
        };
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}
