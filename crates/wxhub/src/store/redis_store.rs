//! The Redis back end: what several instances share.
//!
//! Every key an account owns carries the account in a hash tag
//! (`prefix:{appid}:...`), so the scripts that touch several of an account's
//! keys at once stay on one slot under Redis Cluster. Keys not tied to an
//! account (OAuth states, hand-over tickets) are touched one at a time.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use redis::AsyncCommands;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{StoreError, credential_aad, grant_aad};
use crate::budget::{Budget, Decision, Usage, decide};
use crate::seal::{Found, Plan, Resealed, Sealer};

/// A connection to the shared Redis.
#[derive(Clone)]
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    sealer: Arc<Sealer>,
    pub(super) push_lanes: Arc<std::sync::Mutex<super::push_redis::LaneBook>>,
}

/// The client and connection every clone shares: replaced together when
/// Sentinel names a new primary.
struct Link {
    current: std::sync::RwLock<(redis::Client, ConnectionManager)>,
    sentinel: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("sentinel", &self.link.sentinel.is_some())
            .finish_non_exhaustive()
    }
}

async fn manager(client: redis::Client) -> Result<ConnectionManager, StoreError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(std::time::Duration::from_secs(2))
        .set_number_of_retries(1)
        .set_max_delay(1000);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// `host:port` of a client's server: what the logs may show of it.
fn address(client: &redis::Client) -> String {
    match &client.get_connection_info().addr {
        redis::ConnectionAddr::Tcp(h, p)
        | redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        other => format!("{other:?}"),
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
        let conn = manager(client.clone()).await?;
        Ok(RedisStore::new(client, conn, None, prefix))
    }

    /// Connects to the primary that the Sentinels at `sentinels` (`host:port`)
    /// name for `master`, with the credentials and database of `url` (its
    /// host and port are not used). [`RedisStore::follow_sentinel`] keeps
    /// following the primary after a failover.
    ///
    /// # Errors
    /// If the URL is invalid or no Sentinel names a reachable primary now.
    pub async fn connect_sentinel(
        sentinels: &[String],
        master: &str,
        url: &str,
        prefix: &str,
    ) -> Result<RedisStore, StoreError> {
        use redis::IntoConnectionInfo;
        use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
        let info = url.into_connection_info()?;
        let tls_mode = match info.addr {
            redis::ConnectionAddr::TcpTls { insecure: true, .. } => Some(redis::TlsMode::Insecure),
            redis::ConnectionAddr::TcpTls { .. } => Some(redis::TlsMode::Secure),
            _ => None,
        };
        let node = SentinelNodeConnectionInfo {
            tls_mode,
            redis_connection_info: Some(info.redis),
        };
        let mut sentinel = SentinelClient::build(
            sentinels.iter().map(|s| format!("redis://{s}")).collect(),
            master.to_string(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let client = sentinel.async_get_client().await?;
        let conn = manager(client.clone()).await?;
        tracing::info!(primary = %address(&client), master, "sentinel names the redis primary");
        Ok(RedisStore::new(
            client,
            conn,
            Some(tokio::sync::Mutex::new(sentinel)),
            prefix,
        ))
    }

    fn new(
        client: redis::Client,
        conn: ConnectionManager,
        sentinel: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
        prefix: &str,
    ) -> RedisStore {
        RedisStore {
            link: Arc::new(Link {
                current: std::sync::RwLock::new((client, conn)),
                sentinel,
            }),
            prefix: prefix.to_string(),
            sealer: Arc::new(Sealer::plaintext()),
            push_lanes: Arc::default(),
        }
    }

    /// With Sentinel: asks it for the primary every second until shutdown,
    /// and moves every clone's connection there when it changes. A command
    /// sent to the old primary in between fails (it is gone, or answers
    /// READONLY as a replica), and the hub treats that as Redis being away
    /// for a moment: it serves what it holds and tries again. Without
    /// Sentinel: only waits for shutdown (a task that ends early is taken
    /// for a failure).
    pub async fn follow_sentinel(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(sentinel) = &self.link.sentinel else {
            let _ = shutdown.changed().await;
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            let named = sentinel.lock().await.async_get_client().await;
            let client = match named {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "sentinel names no primary now");
                    continue;
                }
            };
            let now = address(&client);
            if now == address(&self.client()) {
                continue;
            }
            match manager(client.clone()).await {
                Ok(conn) => {
                    tracing::warn!(primary = %now, "sentinel names a new redis primary: moving there");
                    *self.link.current.write().unwrap_or_else(|e| e.into_inner()) = (client, conn);
                }
                Err(e) => {
                    tracing::warn!(primary = %now, error = %e, "cannot reach the new redis primary yet")
                }
            }
        }
    }

    /// The same connection, sealing what it writes with `sealer`. Run
    /// [`RedisStore::prepare_keys`] before using it.
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> RedisStore {
        self.sealer = sealer;
        self
    }

    /// The sealer of this store's values.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// A multiplexed connection, cheap to clone.
    pub fn conn(&self) -> ConnectionManager {
        self.link
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// The client (the current primary's), for the pub/sub connection.
    pub fn client(&self) -> redis::Client {
        self.link
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
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

// Re-seals one field of a hash if it still holds what was read: fencing
// numbers, sequence numbers and the TTL stay as they are, and a write that
// landed in between wins. No note is published: the plaintext is the same.
// KEYS: the hash. ARGV: field, value read, value re-sealed.
static RESEAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        return 1
        ",
    )
});

impl RedisStore {
    /// Start-up's key check: refuses a store sealed under a key that is not
    /// configured, and, with a key, re-seals every plaintext value and every
    /// value under the previous key (credentials and grants of every
    /// account under this prefix, found by `SCAN`), then stores the key
    /// check under the current key.
    ///
    /// Each value is rewritten by a compare-and-set on its own field, so a
    /// credential's fencing and sequence numbers are untouched and a fenced
    /// write that lands meanwhile is kept (and counted as skipped). Without
    /// a key, only the key check is read: a store whose key check is gone
    /// but which holds sealed values fails at the first read instead.
    ///
    /// # Errors
    /// On a Redis failure, or values under a key that is not configured.
    pub async fn prepare_keys(&self) -> Result<Resealed, StoreError> {
        let check_key = self.key("key_check");
        let stored: Option<String> = self.conn().get(&check_key).await?;
        let mut done = Resealed::default();
        if self.sealer.plan(stored.as_deref())? != Plan::Reseal {
            return Ok(done);
        }
        let sealed = [
            ("cred:", &["v"][..]),
            ("grant:", &["access_token", "refresh_token"][..]),
        ];
        for (kind, fields) in sealed {
            let pattern = format!("{}:{{*}}:{kind}*", self.prefix);
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut self.conn())
                    .await?;
                for key in keys {
                    let Some((appid, name)) = self.parse_app_key(&key, kind) else {
                        continue;
                    };
                    for field in fields {
                        let value: Option<String> = self.conn().hget(&key, field).await?;
                        let Some(value) = value else { continue };
                        let aad = match kind {
                            "cred:" => credential_aad(appid, name),
                            _ => grant_aad(field, appid, name),
                        };
                        self.reseal_field(&key, field, &aad, &value, &mut done)
                            .await?;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // Accounts and clients changed at run time: one hash per section,
        // the row's name as field.
        for section in ["account", "client"] {
            let key = self.key(&format!("dir:{section}"));
            let rows: Vec<(String, String)> = self.conn().hgetall(&key).await?;
            for (name, value) in rows {
                let aad = crate::seal::aad("directory", &[section, &name]);
                self.reseal_field(&key, &name, &aad, &value, &mut done)
                    .await?;
            }
        }
        if let Some(check) = self.sealer.key_check() {
            let _: () = self.conn().set(&check_key, check).await?;
        }
        tracing::info!(
            store.key_id = self.sealer.current_id().unwrap_or_default(),
            sealed_plaintext = done.plaintext,
            resealed_previous = done.previous,
            skipped_rewritten_meanwhile = done.skipped,
            "store values sealed under store.encryption_key"
        );
        Ok(done)
    }

    /// Re-seals one hash field if it needs it, by compare-and-set, and
    /// counts what was done.
    async fn reseal_field(
        &self,
        key: &str,
        field: &str,
        aad: &str,
        value: &str,
        done: &mut Resealed,
    ) -> Result<(), StoreError> {
        let Some((resealed, found)) = self.sealer.reseal(aad, value)? else {
            return Ok(());
        };
        let written: i64 = RESEAL
            .key(key)
            .arg(field)
            .arg(value)
            .arg(&resealed)
            .invoke_async(&mut self.conn())
            .await?;
        match (written, found) {
            (0, _) => done.skipped += 1,
            (_, Found::Plain) => done.plaintext += 1,
            _ => done.previous += 1,
        }
        Ok(())
    }

    /// `prefix:{appid}:KIND NAME` → (appid, name).
    pub(super) fn parse_app_key<'a>(&self, key: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (appid, rest) = rest.split_once("}:")?;
        Some((appid, rest.strip_prefix(kind)?))
    }
}

// Redis TTLs below only collect garbage: every validity decision compares
// against the hub's `now`, which may be a virtual clock far from Redis's, so
// the TTLs are the virtual remaining life plus a generous margin.

/// Counters are only read for the current day; three days covers a virtual
/// clock a little ahead of or behind the real one.
pub const COUNTER_TTL: i64 = 3 * 86400;
/// A cap on any TTL, so a nonsense time cannot overflow Redis's expiry.
const MAX_TTL: i64 = 400 * 86400;

/// A TTL in seconds from a virtual remaining life plus a margin.
pub(super) fn ttl(remaining: i64, grace: i64) -> i64 {
    remaining.saturating_add(grace).clamp(1, MAX_TTL)
}

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
pub(super) fn field<'a>(
    h: &'a HashMap<String, String>,
    what: &str,
    name: &str,
) -> Result<&'a str, StoreError> {
    h.get(name)
        .map(String::as_str)
        .ok_or_else(|| StoreError::new(format!("redis: {what} record lacks `{name}`")))
}

/// A required integer field of a stored hash.
pub(super) fn int_field(
    h: &HashMap<String, String>,
    what: &str,
    name: &str,
) -> Result<i64, StoreError> {
    parse_int(field(h, what, name)?, what, name)
}

pub(super) fn parse_int(v: &str, what: &str, name: &str) -> Result<i64, StoreError> {
    v.parse()
        .map_err(|_| StoreError::new(format!("redis: {what} record has a bad `{name}`")))
}

impl RedisStore {
    fn counter_key(&self, appid: &str, name: &str, day: i64) -> String {
        self.app_key(appid, &format!("count:{name}:{day}"))
    }

    /// Redis expires states and tickets itself: nothing to sweep.
    pub async fn sweep(&self, _now: i64) -> Result<(usize, usize), StoreError> {
        Ok((0, 0))
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
}
