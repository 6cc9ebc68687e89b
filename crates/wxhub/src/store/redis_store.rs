//! The Redis back end: what several instances share.
//!
//! Every key an account owns carries the account in a hash tag
//! (`prefix:{appid}:...`), so the scripts that touch several of an account's
//! keys at once stay on one slot under Redis Cluster. Keys not tied to an
//! account (OAuth states, hand-over tickets) are touched one at a time.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::AsyncCommands;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Consumed, FinishedSignIn, Grant, Redeemed, StateRecord, StoreError};
use crate::budget::{Budget, Decision, Usage, decide};

/// A connection to the shared Redis.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects. The connection manager reconnects by itself after Redis
    /// restarts; commands in between fail fast instead of queueing.
    ///
    /// # Errors
    /// If the URL is invalid or Redis cannot be reached now.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        Self::connect_with(url, prefix, None).await
    }

    /// Connects, trusting `tls_ca` (PEM) for `rediss://` when given.
    ///
    /// # Errors
    /// If the URL or the certificates are invalid or Redis cannot be
    /// reached now.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        tls_ca: Option<&[u8]>,
    ) -> Result<RedisStore, StoreError> {
        let client = match tls_ca {
            None => redis::Client::open(url)?,
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(2))
            .set_response_timeout(std::time::Duration::from_secs(2))
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(RedisStore {
            client,
            conn,
            prefix: prefix.to_string(),
        })
    }

    /// A multiplexed connection, cheap to clone.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for the pub/sub connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix:{appid}:suffix`: an account's key, hash-tagged by account.
    pub fn app_key(&self, appid: &str, suffix: &str) -> String {
        format!("{}:{{{appid}}}:{suffix}", self.prefix)
    }

    /// `prefix:suffix`: a key not tied to an account.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }
}

// Redis TTLs below only collect garbage: every validity decision compares
// against the hub's `now`, which may be a virtual clock far from Redis's, so
// the TTLs are the virtual remaining life plus a generous margin.

use super::{STATE_GRACE, TICKET_GRACE};
/// How long a grant outlives its refresh token.
const GRANT_GRACE: i64 = 86400;
/// The longest a user access token lives (WeChat says 7200 s): the most by
/// which `access_expires_at` can run ahead of the moment a grant is saved.
const ACCESS_TOKEN_LIFE: i64 = 7200;
/// Counters are only read for the current day; three days covers a virtual
/// clock a little ahead of or behind the real one.
const COUNTER_TTL: i64 = 3 * 86400;
/// A cap on any TTL, so a nonsense time cannot overflow Redis's expiry.
const MAX_TTL: i64 = 400 * 86400;

/// A TTL in seconds from a virtual remaining life plus a margin.
fn ttl(remaining: i64, grace: i64) -> i64 {
    remaining.saturating_add(grace).clamp(1, MAX_TTL)
}

// Single key (Redis Cluster): KEYS[1], the new record's hash.
// Written only if absent, like SQLite's INSERT on a primary key.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], unpack(ARGV, 2))
        redis.call('EXPIRE', KEYS[1], ARGV[1])
        return 1
        ",
    )
});

// One slot (Redis Cluster): KEYS[1], the new state's hash; KEYS[2], the
// account's index of states by expiry (both hash-tagged by account).
// ARGV: TTL, the account's cap, the oldest expiry still counted, this
// state's expiry, its id, then its fields. Returns 1 when saved, 0 when the
// account is at its cap, -1 when the id exists.
static CREATE_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
        if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
        redis.call('HSET', KEYS[1], unpack(ARGV, 6))
        redis.call('EXPIRE', KEYS[1], ARGV[1])
        redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
        if redis.call('TTL', KEYS[2]) < tonumber(ARGV[1]) then
          redis.call('EXPIRE', KEYS[2], ARGV[1])
        end
        return 1
        ",
    )
});

// Single key (Redis Cluster): KEYS[1], the state's hash.
// Check-and-mark in one step so exactly one of racing callbacks gets Fresh.
static CONSUME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, {}} end
        local fresh = 0
        if redis.call('HEXISTS', KEYS[1], 'used_at') == 0 then
            redis.call('HSET', KEYS[1], 'used_at', ARGV[1])
            if ARGV[2] == '1' then
                redis.call('HSET', KEYS[1], 'code_hash', ARGV[3])
            end
            fresh = 1
        end
        return {fresh, redis.call('HGETALL', KEYS[1])}
        ",
    )
});

// Single key (Redis Cluster): KEYS[1], the state's hash.
// A plain HSET would recreate a swept state with only a result in it.
static SET_RESULT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[1], 'result', ARGV[1])
        return 1
        ",
    )
});

// Single key (Redis Cluster): KEYS[1], the ticket's hash.
// Flags it used rather than deleting it: SQLite keeps redeemed tickets too.
static REDEEM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('HMGET', KEYS[1], 'appid', 'payload', 'expires_at', 'used')
        if not t[1] or t[4] then return false end
        if tonumber(t[3]) <= tonumber(ARGV[1]) then return false end
        redis.call('HSET', KEYS[1], 'used', '1')
        return {t[1], t[2]}
        ",
    )
});

// Single key (Redis Cluster): KEYS[1], a budget's hash. Writes the new usage
// only if nobody wrote since it was read (the `v` field); the decision itself
// is made in Rust (`budget::decide`), so both stores share one rule.
static BUDGET_CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then return 0 end
        redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'last', ARGV[2],
          'hour', ARGV[3], 'hc', ARGV[4], 'day', ARGV[5], 'dc', ARGV[6])
        redis.call('EXPIRE', KEYS[1], ARGV[7])
        return 1
        ",
    )
});

/// A required field of a stored hash. Names the field, never its value,
/// which may be a token.
fn field<'a>(
    h: &'a HashMap<String, String>,
    what: &str,
    name: &str,
) -> Result<&'a str, StoreError> {
    h.get(name)
        .map(String::as_str)
        .ok_or_else(|| StoreError::new(format!("redis: {what} record lacks `{name}`")))
}

/// A required integer field of a stored hash.
fn int_field(h: &HashMap<String, String>, what: &str, name: &str) -> Result<i64, StoreError> {
    parse_int(field(h, what, name)?, what, name)
}

fn parse_int(v: &str, what: &str, name: &str) -> Result<i64, StoreError> {
    v.parse()
        .map_err(|_| StoreError::new(format!("redis: {what} record has a bad `{name}`")))
}

fn state_record(h: &HashMap<String, String>) -> Result<StateRecord, StoreError> {
    Ok(StateRecord {
        appid: field(h, "state", "appid")?.to_string(),
        want: field(h, "state", "want")?.to_string(),
        stage: field(h, "state", "stage")?.to_string(),
        return_to: field(h, "state", "return_to")?.to_string(),
        expires_at: int_field(h, "state", "expires_at")?,
    })
}

impl RedisStore {
    fn state_key(&self, appid: &str, id: &str) -> String {
        self.app_key(appid, &format!("state:{id}"))
    }

    fn ticket_key(&self, hash: &str) -> String {
        self.key(&format!("ticket:{hash}"))
    }

    fn grant_key(&self, appid: &str, openid: &str) -> String {
        self.app_key(appid, &format!("grant:{openid}"))
    }

    fn counter_key(&self, appid: &str, name: &str, day: i64) -> String {
        self.app_key(appid, &format!("count:{name}:{day}"))
    }

    /// Decides whether a caller-triggered refresh fits the budget of
    /// (`appid`, `scope`), and with `take` records it when it does, atomically
    /// across instances (compare-and-set, retried on a race).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn budget(
        &self,
        appid: &str,
        scope: &str,
        budget: Budget,
        now: i64,
        take: bool,
    ) -> Result<Decision, StoreError> {
        let key = self.app_key(appid, &format!("budget:{scope}"));
        for _ in 0..16 {
            let h: HashMap<String, String> = self.conn().hgetall(&key).await?;
            let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
            let used = Usage {
                last_at: num("last"),
                hour: num("hour").unwrap_or(0),
                hour_count: num("hc").unwrap_or(0),
                day: num("day").unwrap_or(0),
                day_count: num("dc").unwrap_or(0),
            };
            let decision = decide(used, budget, now);
            let Decision::Allowed(u) = decision else {
                return Ok(decision);
            };
            if !take {
                return Ok(decision);
            }
            let written: i64 = BUDGET_CAS
                .key(&key)
                .arg(h.get("v").map_or("0", String::as_str))
                .arg(u.last_at.unwrap_or(now))
                .arg(u.hour)
                .arg(u.hour_count)
                .arg(u.day)
                .arg(u.day_count)
                .arg(COUNTER_TTL)
                .invoke_async(&mut self.conn())
                .await?;
            if written == 1 {
                return Ok(decision);
            }
        }
        Err(StoreError::new(
            "redis: a refresh budget kept changing under this instance",
        ))
    }

    /// Adds one to a per-day counter and returns the new value.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn bump(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        let key = self.counter_key(appid, name, day);
        // MULTI so a counter never exists without its TTL.
        let (value,): (i64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, COUNTER_TTL)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(value)
    }

    /// A per-day counter (0 when never bumped).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn counter(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        let value: Option<i64> = self.conn().get(self.counter_key(appid, name, day)).await?;
        Ok(value.unwrap_or(0))
    }

    /// Records a new pending authorization, unless the account already has
    /// `max_pending` states on file (`Ok(false)`). Like SQLite's primary key,
    /// an id already on file is an error, not a replacement.
    ///
    /// # Errors
    /// On a Redis failure or a duplicate id.
    pub async fn save_state(
        &self,
        id: &str,
        r: &StateRecord,
        now: i64,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let created: i64 = CREATE_STATE
            .key(self.state_key(&r.appid, id))
            .key(self.app_key(&r.appid, "states"))
            .arg(ttl(r.expires_at.saturating_sub(now), STATE_GRACE))
            .arg(max_pending)
            .arg(now - STATE_GRACE)
            .arg(r.expires_at)
            .arg(id)
            .arg(&[
                ("appid", r.appid.as_str()),
                ("want", r.want.as_str()),
                ("stage", r.stage.as_str()),
                ("return_to", r.return_to.as_str()),
            ])
            .arg("expires_at")
            .arg(r.expires_at)
            .invoke_async(&mut self.conn())
            .await?;
        match created {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StoreError::new(
                "redis: a state with this id already exists",
            )),
        }
    }

    /// Looks a state up without using it.
    ///
    /// # Errors
    /// On a Redis failure or a malformed record.
    pub async fn peek_state(
        &self,
        appid: &str,
        id: &str,
    ) -> Result<Option<StateRecord>, StoreError> {
        let h: HashMap<String, String> = self.conn().hgetall(self.state_key(appid, id)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        state_record(&h).map(Some)
    }

    /// Uses a state, once, atomically across instances. `code_hash` is the
    /// hash of the code that came with it (None for a refusal). Expiry is
    /// the caller's to check, as with SQLite.
    ///
    /// # Errors
    /// On a Redis failure or a malformed record.
    pub async fn consume_state(
        &self,
        appid: &str,
        id: &str,
        code_hash: Option<&str>,
        now: i64,
    ) -> Result<Consumed, StoreError> {
        let (status, h): (i64, HashMap<String, String>) = CONSUME
            .key(self.state_key(appid, id))
            .arg(now)
            .arg(if code_hash.is_some() { "1" } else { "0" })
            .arg(code_hash.unwrap_or(""))
            .invoke_async(&mut self.conn())
            .await?;
        if status < 0 {
            return Ok(Consumed::Missing);
        }
        let record = state_record(&h)?;
        if status == 1 {
            return Ok(Consumed::Fresh(record));
        }
        if let Some(code) = code_hash
            && h.get("code_hash").is_some_and(|stored| stored == code)
        {
            return Ok(Consumed::Again {
                record,
                used_at: int_field(&h, "state", "used_at")?,
                result: h.get("result").cloned(),
            });
        }
        Ok(Consumed::Used(record))
    }

    /// Stores the outcome of a finished authorization on its state, for a
    /// repeated callback. Does nothing if the state is gone.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn set_state_result(
        &self,
        appid: &str,
        id: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = SET_RESULT
            .key(self.state_key(appid, id))
            .arg(result)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The stored outcome of a used state.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn state_result(&self, appid: &str, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .hget(self.state_key(appid, id), "result")
            .await?)
    }

    /// Whether a ticket exists, is unused and has not expired.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn ticket_live(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        let (expires_at, used): (Option<i64>, Option<String>) = self
            .conn()
            .hget(self.ticket_key(hash), &["expires_at", "used"])
            .await?;
        Ok(used.is_none() && expires_at.is_some_and(|e| e > now))
    }

    /// The account of an unused ticket. Like SQLite, it does not look at
    /// the expiry; redeeming does.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn ticket_appid(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let (appid, used): (Option<String>, Option<String>) = self
            .conn()
            .hget(self.ticket_key(hash), &["appid", "used"])
            .await?;
        Ok(appid.filter(|_| used.is_none()))
    }

    /// Stores a hand-over ticket by its hash. A hash already on file is an
    /// error, as with SQLite's primary key.
    ///
    /// # Errors
    /// On a Redis failure or a duplicate hash.
    pub async fn save_ticket(
        &self,
        hash: &str,
        appid: &str,
        payload: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let created: i64 = CREATE
            .key(self.ticket_key(hash))
            .arg(ttl(expires_at.saturating_sub(now), TICKET_GRACE))
            .arg(&[("appid", appid), ("payload", payload)])
            .arg("expires_at")
            .arg(expires_at)
            .invoke_async(&mut self.conn())
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::new(
                "redis: a ticket with this hash already exists",
            ))
        }
    }

    /// Redeems a ticket once, atomically across instances: (appid, payload)
    /// if it exists, is unused and `expires_at > now`.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn redeem_ticket(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(REDEEM
            .key(self.ticket_key(hash))
            .arg(now)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Stores (replaces) a grant.
    ///
    /// The call carries no `now`, so the garbage-collection TTL counts the
    /// refresh token's life from the access token's expiry, which is at most
    /// a user token's lifetime (7200 s) after the save.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn save_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let key = self.grant_key(&g.appid, &g.openid);
        let mut fields: Vec<(&str, String)> = vec![
            ("appid", g.appid.clone()),
            ("openid", g.openid.clone()),
            ("scope", g.scope.clone()),
            ("snapshot", if g.snapshot { "1" } else { "0" }.to_string()),
            ("access_token", g.access_token.clone()),
            ("access_expires_at", g.access_expires_at.to_string()),
            ("refresh_token", g.refresh_token.clone()),
            ("refresh_expires_at", g.refresh_expires_at.to_string()),
        ];
        // A None is an absent field, so it reads back as None.
        if let Some(u) = &g.unionid {
            fields.push(("unionid", u.clone()));
        }
        if let Some(p) = &g.profile {
            fields.push(("profile", p.clone()));
        }
        if let Some(t) = g.profile_fetched_at {
            fields.push(("profile_fetched_at", t.to_string()));
        }
        let remaining = g
            .refresh_expires_at
            .saturating_sub(g.access_expires_at)
            .saturating_add(ACCESS_TOKEN_LIFE);
        // MULTI on one key: the DEL drops fields now None, and no reader
        // sees the grant half replaced.
        let _: () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, ttl(remaining, GRANT_GRACE))
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Stores a base-scope grant unless a userinfo grant whose refresh token
    /// is alive at `now` is on file.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn save_base_grant(&self, g: &Grant, now: i64) -> Result<(), StoreError> {
        let keep = self
            .load_grant(&g.appid, &g.openid)
            .await?
            .is_some_and(|old| old.scope != "snsapi_base" && old.refresh_expires_at > now);
        if keep {
            return Ok(());
        }
        self.save_grant(g).await
    }

    /// Stores a finished sign-in: the grant, the ticket, the outcome.
    ///
    /// # Errors
    /// On a Redis failure or a duplicate ticket.
    pub async fn finish_sign_in(&self, f: &FinishedSignIn<'_>) -> Result<(), StoreError> {
        if let Some(g) = f.base_grant {
            self.save_base_grant(g, f.now).await?;
        }
        self.save_ticket(
            f.ticket_hash,
            f.appid,
            f.payload,
            f.ticket_expires_at,
            f.now,
        )
        .await?;
        self.set_state_result(f.appid, f.state_id, f.outcome).await
    }

    /// Redeems a ticket once if `allowed` accepts its account.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn redeem_ticket_for(
        &self,
        hash: &str,
        now: i64,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Redeemed, StoreError> {
        let Some(appid) = self.ticket_appid(hash).await? else {
            return Ok(Redeemed::Missing);
        };
        if !allowed(&appid) {
            return Ok(Redeemed::Forbidden(appid));
        }
        Ok(match self.redeem_ticket(hash, now).await? {
            Some((appid, payload)) => Redeemed::Done(appid, payload),
            None => Redeemed::Missing,
        })
    }

    /// A person's grant to an account.
    ///
    /// # Errors
    /// On a Redis failure or a malformed record.
    pub async fn load_grant(&self, appid: &str, openid: &str) -> Result<Option<Grant>, StoreError> {
        let h: HashMap<String, String> = self.conn().hgetall(self.grant_key(appid, openid)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(Grant {
            appid: field(&h, "grant", "appid")?.to_string(),
            openid: field(&h, "grant", "openid")?.to_string(),
            unionid: h.get("unionid").cloned(),
            scope: field(&h, "grant", "scope")?.to_string(),
            snapshot: field(&h, "grant", "snapshot")? == "1",
            access_token: field(&h, "grant", "access_token")?.to_string(),
            access_expires_at: int_field(&h, "grant", "access_expires_at")?,
            refresh_token: field(&h, "grant", "refresh_token")?.to_string(),
            refresh_expires_at: int_field(&h, "grant", "refresh_expires_at")?,
            profile: h.get("profile").cloned(),
            profile_fetched_at: h
                .get("profile_fetched_at")
                .map(|v| parse_int(v, "grant", "profile_fetched_at"))
                .transpose()?,
        }))
    }

    /// Forgets a grant (expired or revoked).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn delete_grant(&self, appid: &str, openid: &str) -> Result<(), StoreError> {
        let _: () = self.conn().del(self.grant_key(appid, openid)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    // A virtual clock far from real time: TTLs must not depend on it.
    const NOW: i64 = 4_000_000_000;

    fn url() -> String {
        std::env::var("WXHUB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    fn unique_prefix() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!(
            "wxhub-test-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn store() -> RedisStore {
        RedisStore::connect(&url(), &unique_prefix())
            .await
            .expect("a Redis for tests (WXHUB_TEST_REDIS)")
    }

    async fn keys(s: &RedisStore) -> Vec<String> {
        let mut conn = s.conn();
        let mut cursor = 0u64;
        let mut found = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .cursor_arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", s.prefix()))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scan");
            found.extend(batch);
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    }

    async fn cleanup(s: &RedisStore) {
        let found = keys(s).await;
        if !found.is_empty() {
            let _: () = s.conn().del(found).await.expect("del");
        }
        assert!(keys(s).await.is_empty());
    }

    async fn key_ttl(s: &RedisStore, key: &str) -> i64 {
        s.conn().ttl(key).await.expect("ttl")
    }

    fn state(expires_at: i64) -> StateRecord {
        StateRecord {
            appid: "wx1".into(),
            want: "userinfo".into(),
            stage: "probe".into(),
            return_to: "https://app.example/back?x=1".into(),
            expires_at,
        }
    }

    #[tokio::test]
    async fn counters_are_per_day_and_account() {
        let s = store().await;
        assert_eq!(s.counter("wx1", "fetches", 5).await.unwrap(), 0);
        assert_eq!(s.bump("wx1", "fetches", 5).await.unwrap(), 1);
        assert_eq!(s.bump("wx1", "fetches", 5).await.unwrap(), 2);
        assert_eq!(s.bump("wx1", "fetches", 6).await.unwrap(), 1);
        assert_eq!(s.bump("wx2", "fetches", 5).await.unwrap(), 1);
        assert_eq!(s.bump("wx1", "forced", 5).await.unwrap(), 1);
        assert_eq!(s.counter("wx1", "fetches", 5).await.unwrap(), 2);
        assert_eq!(s.counter("wx1", "fetches", 6).await.unwrap(), 1);
        assert_eq!(s.counter("wx1", "fetches", 7).await.unwrap(), 0);
        let t = key_ttl(&s, &s.app_key("wx1", "count:fetches:5")).await;
        assert!(t > COUNTER_TTL - 60 && t <= COUNTER_TTL, "ttl {t}");
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn states_are_used_once() {
        let s = store().await;
        assert!(s.peek_state("wx1", "nope").await.unwrap().is_none());
        assert!(matches!(
            s.consume_state("wx1", "nope", Some("c"), NOW)
                .await
                .unwrap(),
            Consumed::Missing
        ));
        // An UPDATE: no result lands on a state that does not exist.
        s.set_state_result("wx1", "nope", "{}").await.unwrap();
        assert!(s.peek_state("wx1", "nope").await.unwrap().is_none());
        assert!(s.state_result("wx1", "nope").await.unwrap().is_none());

        assert!(
            s.save_state("s1", &state(NOW + 600), NOW, 1000)
                .await
                .unwrap()
        );
        assert!(
            s.save_state("s1", &state(NOW + 600), NOW, 1000)
                .await
                .is_err()
        );
        let t = key_ttl(&s, &s.app_key("wx1", "state:s1")).await;
        assert!(
            t > 600 + STATE_GRACE - 60 && t <= 600 + STATE_GRACE,
            "ttl {t}"
        );

        let p = s.peek_state("wx1", "s1").await.unwrap().expect("saved");
        assert_eq!(
            (p.appid.as_str(), p.want.as_str(), p.stage.as_str()),
            ("wx1", "userinfo", "probe")
        );
        assert_eq!(
            (p.return_to.as_str(), p.expires_at),
            ("https://app.example/back?x=1", NOW + 600)
        );
        assert!(s.state_result("wx1", "s1").await.unwrap().is_none());

        // Expiry is the caller's: a state past it is still Fresh.
        match s
            .consume_state("wx1", "s1", Some("c1"), NOW + 700)
            .await
            .unwrap()
        {
            Consumed::Fresh(r) => assert_eq!(r.expires_at, NOW + 600),
            other => panic!("{other:?}"),
        }
        match s
            .consume_state("wx1", "s1", Some("c1"), NOW + 701)
            .await
            .unwrap()
        {
            Consumed::Again {
                record,
                used_at,
                result,
            } => {
                assert_eq!(record.appid, "wx1");
                assert_eq!(used_at, NOW + 700);
                assert!(result.is_none());
            }
            other => panic!("{other:?}"),
        }
        s.set_state_result("wx1", "s1", r#"{"openid":"o1"}"#)
            .await
            .unwrap();
        assert_eq!(
            s.state_result("wx1", "s1").await.unwrap().as_deref(),
            Some(r#"{"openid":"o1"}"#)
        );
        match s
            .consume_state("wx1", "s1", Some("c1"), NOW + 702)
            .await
            .unwrap()
        {
            Consumed::Again {
                used_at, result, ..
            } => {
                assert_eq!(used_at, NOW + 700);
                assert_eq!(result.as_deref(), Some(r#"{"openid":"o1"}"#));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.consume_state("wx1", "s1", Some("c2"), NOW).await.unwrap(),
            Consumed::Used(_)
        ));
        assert!(matches!(
            s.consume_state("wx1", "s1", None, NOW).await.unwrap(),
            Consumed::Used(_)
        ));
        // Consuming keeps the record and its TTL.
        assert!(s.peek_state("wx1", "s1").await.unwrap().is_some());
        assert!(key_ttl(&s, &s.app_key("wx1", "state:s1")).await > 0);

        // A refusal uses the state with no code: nothing repeats it.
        assert!(
            s.save_state("s2", &state(NOW + 600), NOW, 1000)
                .await
                .unwrap()
        );
        assert!(matches!(
            s.consume_state("wx1", "s2", None, NOW).await.unwrap(),
            Consumed::Fresh(_)
        ));
        assert!(matches!(
            s.consume_state("wx1", "s2", None, NOW).await.unwrap(),
            Consumed::Used(_)
        ));
        assert!(matches!(
            s.consume_state("wx1", "s2", Some("c1"), NOW).await.unwrap(),
            Consumed::Used(_)
        ));
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn an_account_holds_at_most_its_cap_of_states() {
        let s = store().await;
        assert!(s.save_state("a", &state(NOW + 600), NOW, 2).await.unwrap());
        assert!(s.save_state("b", &state(NOW + 600), NOW, 2).await.unwrap());
        assert!(
            !s.save_state("c", &state(NOW + 600), NOW, 2).await.unwrap(),
            "the third is refused"
        );
        assert!(s.peek_state("wx1", "c").await.unwrap().is_none());
        // Another account has its own cap.
        let other = StateRecord {
            appid: "wx2".into(),
            ..state(NOW + 600)
        };
        assert!(s.save_state("d", &other, NOW, 2).await.unwrap());
        // Once the first two have expired and their grace has passed, room again.
        let later = NOW + 600 + STATE_GRACE + 1;
        assert!(
            s.save_state("e", &state(later + 600), later, 2)
                .await
                .unwrap()
        );
        cleanup(&s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_consumers_get_one_fresh() {
        let s = store().await;
        assert!(
            s.save_state("race", &state(NOW + 600), NOW, 1000)
                .await
                .unwrap()
        );
        // Separate connections, as separate instances would have.
        let mut stores = Vec::new();
        for _ in 0..20 {
            stores.push(
                RedisStore::connect(&url(), s.prefix())
                    .await
                    .expect("connect"),
            );
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(i, st)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    st.consume_state("wx1", "race", Some("same"), NOW + i as i64)
                        .await
                        .expect("consume")
                })
            })
            .collect();
        let (mut fresh, mut again) = (0, 0);
        let mut used_ats = std::collections::HashSet::new();
        for t in futures::future::join_all(tasks).await {
            match t.expect("task") {
                Consumed::Fresh(_) => fresh += 1,
                Consumed::Again { used_at, .. } => {
                    again += 1;
                    used_ats.insert(used_at);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((fresh, again), (1, 19));
        // Every repeat saw the winner's mark.
        assert_eq!(used_ats.len(), 1);
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let s = store().await;
        assert!(s.ticket_appid("h0").await.unwrap().is_none());
        assert!(s.redeem_ticket("h0", NOW).await.unwrap().is_none());

        s.save_ticket("h1", "wx1", r#"{"openid":"o1"}"#, NOW + 60, NOW)
            .await
            .unwrap();
        assert!(
            s.save_ticket("h1", "wx9", "{}", NOW + 60, NOW)
                .await
                .is_err()
        );
        let t = key_ttl(&s, &s.key("ticket:h1")).await;
        assert!(
            t > 60 + TICKET_GRACE - 60 && t <= 60 + TICKET_GRACE,
            "ttl {t}"
        );
        assert_eq!(s.ticket_appid("h1").await.unwrap().as_deref(), Some("wx1"));
        assert_eq!(
            s.redeem_ticket("h1", NOW + 59).await.unwrap(),
            Some(("wx1".to_string(), r#"{"openid":"o1"}"#.to_string()))
        );
        assert!(s.redeem_ticket("h1", NOW + 59).await.unwrap().is_none());
        assert!(s.ticket_appid("h1").await.unwrap().is_none());
        // The record stays until its TTL, only flagged.
        assert!(key_ttl(&s, &s.key("ticket:h1")).await > 0);

        s.save_ticket("h2", "wx1", "p", NOW + 60, NOW)
            .await
            .unwrap();
        assert!(s.redeem_ticket("h2", NOW + 60).await.unwrap().is_none());
        assert!(s.redeem_ticket("h2", NOW + 3600).await.unwrap().is_none());
        // Like SQLite, ticket_appid leaves the expiry to redeeming.
        assert_eq!(s.ticket_appid("h2").await.unwrap().as_deref(), Some("wx1"));
        // A failed redeem does not use the ticket up.
        assert_eq!(
            s.redeem_ticket("h2", NOW).await.unwrap(),
            Some(("wx1".to_string(), "p".to_string()))
        );

        // Already expired when saved: kept briefly, never redeemable.
        s.save_ticket("h3", "wx1", "p", NOW - 10, NOW)
            .await
            .unwrap();
        assert!(key_ttl(&s, &s.key("ticket:h3")).await > 0);
        assert!(s.redeem_ticket("h3", NOW).await.unwrap().is_none());
        cleanup(&s).await;
    }

    fn grant() -> Grant {
        Grant {
            appid: "wx1".into(),
            openid: "o1".into(),
            unionid: None,
            scope: "snsapi_base".into(),
            snapshot: false,
            access_token: "AT-secret-1".into(),
            access_expires_at: NOW + 7200,
            refresh_token: "RT-secret-1".into(),
            refresh_expires_at: NOW + 30 * 86400,
            profile: None,
            profile_fetched_at: None,
        }
    }

    fn same(a: &Grant, b: &Grant) -> bool {
        (
            &a.appid,
            &a.openid,
            &a.unionid,
            &a.scope,
            a.snapshot,
            &a.access_token,
            a.access_expires_at,
        ) == (
            &b.appid,
            &b.openid,
            &b.unionid,
            &b.scope,
            b.snapshot,
            &b.access_token,
            b.access_expires_at,
        ) && (
            &a.refresh_token,
            a.refresh_expires_at,
            &a.profile,
            a.profile_fetched_at,
        ) == (
            &b.refresh_token,
            b.refresh_expires_at,
            &b.profile,
            b.profile_fetched_at,
        )
    }

    #[tokio::test]
    async fn grants_round_trip_replace_and_delete() {
        let s = store().await;
        assert!(s.load_grant("wx1", "o1").await.unwrap().is_none());

        let bare = grant();
        s.save_grant(&bare).await.unwrap();
        let got = s.load_grant("wx1", "o1").await.unwrap().expect("saved");
        assert!(same(&got, &bare));
        let t = key_ttl(&s, &s.app_key("wx1", "grant:o1")).await;
        let want = 30 * 86400 + GRANT_GRACE;
        assert!(t > want - 60 && t <= want, "ttl {t}");

        let full = Grant {
            unionid: Some("u1".into()),
            scope: "snsapi_userinfo".into(),
            snapshot: true,
            access_token: "AT-secret-2".into(),
            profile: Some(r#"{"nickname":"N"}"#.into()),
            profile_fetched_at: Some(NOW + 5),
            ..grant()
        };
        s.save_grant(&full).await.unwrap();
        let got = s.load_grant("wx1", "o1").await.unwrap().expect("saved");
        assert!(same(&got, &full));

        // Replacing with None fields drops the old values.
        s.save_grant(&bare).await.unwrap();
        let got = s.load_grant("wx1", "o1").await.unwrap().expect("saved");
        assert!(same(&got, &bare));

        // Another person's and another account's grants are separate.
        s.save_grant(&Grant {
            openid: "o2".into(),
            ..full.clone()
        })
        .await
        .unwrap();
        s.save_grant(&Grant {
            appid: "wx2".into(),
            ..full.clone()
        })
        .await
        .unwrap();
        s.delete_grant("wx1", "o1").await.unwrap();
        assert!(s.load_grant("wx1", "o1").await.unwrap().is_none());
        assert!(s.load_grant("wx1", "o2").await.unwrap().is_some());
        assert!(s.load_grant("wx2", "o1").await.unwrap().is_some());
        s.delete_grant("wx1", "o1").await.unwrap();
        assert!(!format!("{got:?}").contains("secret"));
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn malformed_records_name_the_field_not_the_value() {
        let s = store().await;
        let key = s.app_key("wx1", "grant:o1");
        let _: () = s
            .conn()
            .hset_multiple(&key, &[("appid", "wx1"), ("access_token", "AT-secret")])
            .await
            .unwrap();
        let e = s.load_grant("wx1", "o1").await.unwrap_err().to_string();
        assert!(e.contains("openid") && !e.contains("secret"), "{e}");
        cleanup(&s).await;
    }
}
