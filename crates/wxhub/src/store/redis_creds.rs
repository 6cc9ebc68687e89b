//! Credentials in Redis: one hash per credential, `prefix:{appid}:cred:KEY`,
//! written only through fenced scripts.
//!
//! Every write of a credential runs in a script that checks, atomically,
//! that the writer still holds the account's lease (`prefix:{appid}:lease`
//! = `instance:fence`) and that no write under a higher fencing number is
//! stored: an instance that was paused or cut off past its lease can still
//! finish an upstream call, but can no longer overwrite a newer token
//! (WxJava #2803). A fetch is marked as started, under the same check,
//! right before every upstream call. Each script touches one account's keys,
//! which share the hash tag `{appid}`, so it runs unchanged on Redis Cluster.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;

use super::{Record, RedisStore, StoreError, Written, credential_aad};
use crate::credentials::Secret;
use crate::shared::note::Note;

// Marks an upstream fetch as started, if the caller still holds the lease.
// The earliest unwritten start is kept: a token minted then dooms the stored
// one from then on, whatever later attempts do.
// KEYS: lease, credential. ARGV: holder, now, channel, note.
static BEGIN_FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if redis.call('EXISTS', KEYS[2]) == 1 then
          if redis.call('HSETNX', KEYS[2], 'pending', ARGV[2]) == 1 then
            redis.call('PUBLISH', ARGV[3], ARGV[4])
          end
        end
        return 1
        ",
    )
});

// Clears the mark when the platform answered this fetch with an error
// (nothing was minted), unless an earlier fetch's mark is there.
// KEYS: lease, credential. ARGV: holder, start, channel, note.
static END_FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if redis.call('HGET', KEYS[2], 'pending') == ARGV[2] then
          redis.call('HDEL', KEYS[2], 'pending')
          redis.call('PUBLISH', ARGV[3], ARGV[4])
        end
        return 1
        ",
    )
});

// A refused writer's fetch minted a token nobody will use; in classic mode
// it dooms the stored one. Marked without a lease: it only shortens what
// clients are told. KEYS: credential. ARGV: start, channel, note.
static MARK_MINTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then
          redis.call('HSETNX', KEYS[1], 'pending', ARGV[1])
          redis.call('PUBLISH', ARGV[2], ARGV[3])
        end
        return 1
        ",
    )
});

// The fenced write. KEYS: lease, credential. ARGV: holder, fence, value,
// expires_at, fetched_at, first_seen, refresh_at, channel, note.
// Rejected (0) unless the writer holds the lease now and no write under a
// higher fencing number is stored; else returns the write's sequence number.
// Timestamps in seconds cannot order two writes of the same second, and a
// counter restarts with an empty Redis: the server's microsecond clock,
// kept strictly increasing, does both.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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
        ",
    )
});

// The unfenced newest-wins write of a value any instance may receive.
// KEYS: credential. ARGV: value, expires_at, fetched_at, first_seen,
// channel, note, refresh_at. 1 when written, 0 when the stored one is as
// new.
static WRITE_NEWEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local stored = tonumber(redis.call('HGET', KEYS[1], 'fetched') or '-1')
        if tonumber(ARGV[3]) <= stored then return 0 end
        local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
        local t = redis.call('TIME')
        local seq = math.max(last + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 'fence', '0', 'v', ARGV[1], 'exp', ARGV[2],
          'fetched', ARGV[3], 'first', ARGV[4], 'refresh_at', ARGV[7],
          'seq', string.format('%.0f', seq))
        redis.call('PUBLISH', ARGV[5], ARGV[6])
        return 1
        ",
    )
});

impl RedisStore {
    /// The unfenced newest-wins write (a verify ticket).
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn write_newest(
        &self,
        appid: &str,
        key: &str,
        r: &Record,
    ) -> Result<bool, StoreError> {
        let value = self
            .sealer()
            .seal(&credential_aad(appid, key), r.value.expose_secret());
        let written: u64 = WRITE_NEWEST
            .key(self.cred_key(appid, key))
            .arg(value)
            .arg(r.expires_at)
            .arg(r.fetched_at)
            .arg(r.first_seen)
            .arg(self.key("changes"))
            .arg(Self::changed_note(appid, key))
            .arg(r.refresh_at)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(written == 1)
    }

    fn cred_key(&self, appid: &str, key: &str) -> String {
        self.app_key(appid, &format!("cred:{key}"))
    }

    fn changed_note(appid: &str, key: &str) -> String {
        Note::Changed {
            appid: appid.to_string(),
            kind: key.to_string(),
        }
        .encode()
    }

    /// The shared credential `key` of `appid`.
    ///
    /// # Errors
    /// If Redis cannot be asked or the record is damaged.
    pub async fn load_credential(
        &self,
        appid: &str,
        key: &str,
    ) -> Result<Option<Record>, StoreError> {
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.cred_key(appid, key))
            .query_async(&mut self.conn())
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        let num = |k: &str| -> Result<i64, StoreError> {
            map.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StoreError::new(format!("shared credential {appid}/{key}: bad {k}")))
        };
        let Some(value) = map.get("v") else {
            // Only a pending mark, left on a record deleted under it.
            return Ok(None);
        };
        let value = self.sealer().open(&credential_aad(appid, key), value)?;
        Ok(Some(Record {
            value: Secret::new(value.value),
            expires_at: num("exp")?,
            fetched_at: num("fetched")?,
            first_seen: num("first")?,
            fence: num("fence")? as u64,
            seq: map.get("seq").and_then(|v| v.parse().ok()).unwrap_or(0),
            refresh_at: num("refresh_at")?,
            pending_since: map.get("pending").and_then(|v| v.parse().ok()),
        }))
    }

    /// The fenced write; tells every instance.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn write_credential(
        &self,
        appid: &str,
        key: &str,
        r: &Record,
        holder: &str,
    ) -> Result<Written, StoreError> {
        // The scripts never look at the value: they store the sealed text.
        let value = self
            .sealer()
            .seal(&credential_aad(appid, key), r.value.expose_secret());
        let seq: u64 = WRITE
            .key(self.app_key(appid, "lease"))
            .key(self.cred_key(appid, key))
            .arg(holder)
            .arg(r.fence)
            .arg(value)
            .arg(r.expires_at)
            .arg(r.fetched_at)
            .arg(r.first_seen)
            .arg(r.refresh_at)
            .arg(self.key("changes"))
            .arg(Self::changed_note(appid, key))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(if seq == 0 {
            Written::Refused
        } else {
            Written::Stored(seq)
        })
    }

    /// Marks an upstream fetch as started, checking the lease first.
    /// `Ok(false)`: the lease is gone.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn begin_fetch(
        &self,
        appid: &str,
        key: &str,
        holder: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let ok = self
            .fetch_mark(&BEGIN_FETCH, appid, key, holder, now)
            .await?;
        Ok(ok == 1)
    }

    /// Clears the mark of the fetch begun at `started`.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn end_fetch(
        &self,
        appid: &str,
        key: &str,
        holder: &str,
        started: i64,
    ) -> Result<(), StoreError> {
        self.fetch_mark(&END_FETCH, appid, key, holder, started)
            .await?;
        Ok(())
    }

    /// Marks the stored value as doomed by a fetch begun at `started`.
    ///
    /// # Errors
    /// If Redis cannot be asked.
    pub async fn mark_minted(
        &self,
        appid: &str,
        key: &str,
        started: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = MARK_MINTED
            .key(self.cred_key(appid, key))
            .arg(started)
            .arg(self.key("changes"))
            .arg(Self::changed_note(appid, key))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Runs a fetch-mark script (begin or end) for `holder`'s fetch at `at`,
    /// checked against the account's lease.
    async fn fetch_mark(
        &self,
        script: &Script,
        appid: &str,
        key: &str,
        holder: &str,
        at: i64,
    ) -> Result<i64, StoreError> {
        Ok(script
            .key(self.app_key(appid, "lease"))
            .key(self.cred_key(appid, key))
            .arg(holder)
            .arg(at)
            .arg(self.key("changes"))
            .arg(Self::changed_note(appid, key))
            .invoke_async(&mut self.conn())
            .await?)
    }
}
