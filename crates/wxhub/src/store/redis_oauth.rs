//! Web authorization's records in Redis: pending states (hash-tagged by
//! account, with a per-account index by expiry that bounds them), hand-over
//! tickets and grants.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::AsyncCommands;
use redis::Script;

use super::redis_store::{RedisStore, field, int_field, parse_int, ttl};
use super::{Consumed, FinishedSignIn, Grant, Redeemed, StateRecord, StoreError};
use super::{STATE_GRACE, TICKET_GRACE};
use super::{Stage, scope_from_name, scope_name};

/// How long a grant outlives its refresh token.
pub const GRANT_GRACE: i64 = 86400;
/// The longest a user access token lives (WeChat says 7200 s): the most by
/// which `access_expires_at` can run ahead of the moment a grant is saved.
const ACCESS_TOKEN_LIFE: i64 = 7200;

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

fn state_record(h: &HashMap<String, String>) -> Result<StateRecord, StoreError> {
    Ok(StateRecord {
        appid: field(h, "state", "appid")?.to_string(),
        want: scope_from_name(field(h, "state", "want")?)
            .ok_or_else(|| StoreError::new("redis: state record has a bad `want`"))?,
        stage: Stage::parse(field(h, "state", "stage")?)
            .ok_or_else(|| StoreError::new("redis: state record has a bad `stage`"))?,
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
                ("want", scope_name(r.want)),
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
        let g = &super::seal_grant(self.sealer(), g);
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
        let g = Grant {
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
        };
        super::open_grant(self.sealer(), g).map(Some)
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
