//! The push gateway's records in Redis (shared mode), all under the
//! account's hash tag:
//!
//! | Key | Type | What |
//! |---|---|---|
//! | `push:d:<dedup key>` | hash `m`, `r` | the message id and the reply, for duplicates; expires after `push.keep_secs` |
//! | `push:m:<message id>` | hash | the message (openid, raw XML, received_at); same expiry |
//! | `push:q:<subscriber>` | stream, group `g` | the subscriber's queue: one entry per message, removed once delivered |
//! | `push:r:<subscriber>` | hash | attempts, next try and error per queue entry that failed |
//! | `push:p:<subscriber>` | stream | parked deliveries, with a copy of the message; capped |
//! | `push:f:<openid>`, `push:fz` | hash, sorted set | follower records and their openids |
//!
//! Not under the account: `push:lanes`, a sorted set of every configured
//! (account, subscriber) and when an instance last had it, so that the
//! queues of one gone for `push.keep_secs` are forgotten; and
//! `push:lanes:adopted`, set once the queues older than that set were
//! found and recorded in it.
//!
//! A queue entry is read into the consumer group by the one instance that
//! delivers for the account (its lease holder), so it sits in that
//! consumer's pending list until it is acknowledged. When that instance
//! dies, the next holder claims every pending entry (`XAUTOCLAIM`) and reads
//! the retry state from `push:r:`: nothing is lost, and the backoff goes on.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script, Value};

use super::StoreError;
use super::push::{
    Accepted, Backlog, FollowChange, Follower, NewPush, Parked, Queued, StoredMessage,
};
use super::redis_store::RedisStore;

const GROUP: &str = "g";

/// How often an instance records every subscriber it has in `push:lanes`
/// (those new to it are recorded at once).
const LANE_REFRESH_SECS: i64 = 3600;

/// Gone subscribers whose queues one sweep forgets, at most.
const SWEEP_LANES: isize = 100;

/// A subscriber's member in `push:lanes`: an appid has no newline.
fn lane_member(appid: &str, sub: &str) -> String {
    format!("{appid}\n{sub}")
}

/// What this instance last recorded in `push:lanes`, so that a sweep
/// writes only what changed between the hourly refreshes.
#[derive(Debug, Default)]
pub(super) struct LaneBook {
    registered: HashSet<String>,
    refreshed_at: Option<i64>,
    // Where the search for queues older than `push:lanes` is (see
    // `adopt_unrecorded`); done once the marker key says so.
    adopt_cursor: u64,
    adopted: bool,
}

/// Keys one sweep's `SCAN` step looks at while adopting old queues.
const ADOPT_SCAN: usize = 10_000;

// KEYS: dedup, message, follower hash, follower zset, then one queue per
// subscriber. ARGV: message id, openid, raw xml, received_at, keep secs,
// max backlog, follow kind (s/u/-), follow at, then the subscribers' names.
// Returns {1, dropped names...} or {0, message id, reply or ''}.
static ACCEPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = redis.call('HMGET', KEYS[1], 'm', 'r')
if seen[1] then
  return {0, seen[1], seen[2] or ''}
end
local keep = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'm', ARGV[1])
redis.call('EXPIRE', KEYS[1], keep)
redis.call('HSET', KEYS[2], 'openid', ARGV[2], 'raw_xml', ARGV[3], 'received_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], keep)
local out = {1}
for i = 5, #KEYS do
  if redis.call('XLEN', KEYS[i]) >= tonumber(ARGV[6]) then
    table.insert(out, ARGV[4 + i])
  else
    redis.call('XADD', KEYS[i], '*', 'message_id', ARGV[1], 'openid', ARGV[2], 'first_at', ARGV[4])
  end
end
if ARGV[7] ~= '-' then
  local at = tonumber(ARGV[8])
  local f = redis.call('HMGET', KEYS[3], 'subscribed_at', 'unsubscribed_at')
  local s, u = tonumber(f[1]), tonumber(f[2])
  local last = math.max(s or -1e18, u or -1e18)
  if ARGV[7] == 's' then
    redis.call('HSET', KEYS[3], 'subscribed_at', math.max(s or at, at))
    if at >= last then redis.call('HSET', KEYS[3], 'subscribed', '1') end
  else
    redis.call('HSET', KEYS[3], 'unsubscribed_at', math.max(u or at, at))
    if at >= last then redis.call('HSET', KEYS[3], 'subscribed', '0') end
  end
  redis.call('ZADD', KEYS[4], 0, ARGV[2])
end
return out
",
    )
});

// KEYS: queue, retry hash, parked stream. ARGV: entry id, then the parked
// fields as name/value pairs, then the cap. Returns how many parked entries
// the cap removed.
static PARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('XACK', KEYS[1], 'g', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local fields = {}
for i = 2, #ARGV - 1 do table.insert(fields, ARGV[i]) end
redis.call('XADD', KEYS[3], '*', unpack(fields))
local cap = tonumber(ARGV[#ARGV])
local over = redis.call('XLEN', KEYS[3]) - cap
if over > 0 then
  redis.call('XTRIM', KEYS[3], 'MAXLEN', cap)
  return over
end
return 0
",
    )
});

// KEYS: parked stream, queue, message. ARGV: parked id, now, keep secs.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = {}
local kv = e[1][2]
for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
redis.call('HSET', KEYS[3], 'openid', f['openid'], 'raw_xml', f['raw_xml'], 'received_at', f['received_at'])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
redis.call('XADD', KEYS[2], '*', 'message_id', f['message_id'], 'openid', f['openid'], 'first_at', ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
",
    )
});

fn parse_order(id: &str) -> Result<(u64, u64), StoreError> {
    let (a, b) = id
        .split_once('-')
        .ok_or_else(|| StoreError::new(format!("redis: bad stream id {id}")))?;
    let n = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| StoreError::new(format!("redis: bad stream id {id}")))
    };
    Ok((n(a)?, n(b)?))
}

fn text(map: &HashMap<String, Value>, name: &str) -> String {
    match map.get(name) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

/// `attempts|next_at|first_at|error`.
fn retry_value(q: &Queued) -> String {
    format!(
        "{}|{}|{}|{}",
        q.attempts,
        q.next_at,
        q.first_at,
        q.last_error.as_deref().unwrap_or_default()
    )
}

fn apply_retry(q: &mut Queued, v: &str) {
    let mut parts = v.splitn(4, '|');
    let mut num = || parts.next().and_then(|p| p.parse::<i64>().ok());
    if let (Some(a), Some(n), Some(f)) = (num(), num(), num()) {
        q.attempts = a as u32;
        q.next_at = n;
        q.first_at = f;
    }
    q.last_error = v
        .splitn(4, '|')
        .nth(3)
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
}

impl RedisStore {
    fn push_key(&self, appid: &str, suffix: &str) -> String {
        self.app_key(appid, &format!("push:{suffix}"))
    }

    /// Writes a verified push in one script: duplicate check, message,
    /// queue entries, follower change.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_accept(&self, p: &NewPush) -> Result<Accepted, StoreError> {
        let keep = (p.keep_until - p.received_at).max(60);
        let mut inv = ACCEPT.prepare_invoke();
        inv.key(self.push_key(&p.appid, &format!("d:{}", p.dedup_key)))
            .key(self.push_key(&p.appid, &format!("m:{}", p.message_id)))
            .key(self.push_key(&p.appid, &format!("f:{}", p.openid)))
            .key(self.push_key(&p.appid, "fz"));
        for s in &p.subscribers {
            inv.key(self.push_key(&p.appid, &format!("q:{s}")));
        }
        let (kind, at) = match p.follow {
            None => ("-", 0),
            Some(FollowChange::Subscribe(at)) => ("s", at),
            Some(FollowChange::Unsubscribe(at)) => ("u", at),
        };
        inv.arg(&p.message_id)
            .arg(&p.openid)
            .arg(&p.raw_xml)
            .arg(p.received_at)
            .arg(keep)
            .arg(p.max_backlog)
            .arg(kind)
            .arg(at);
        for s in &p.subscribers {
            inv.arg(s);
        }
        let out: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        match out.first().map(String::as_str) {
            Some("1") => Ok(Accepted::New {
                dropped: out[1..].to_vec(),
            }),
            Some("0") if out.len() == 3 => Ok(Accepted::Duplicate {
                message_id: out[1].clone(),
                reply: Some(out[2].clone()).filter(|r| !r.is_empty()),
            }),
            _ => Err(StoreError::new(
                "redis: unexpected answer to the push script",
            )),
        }
    }

    /// Records the passive reply a message was answered with.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_set_reply(
        &self,
        appid: &str,
        dedup_key: &str,
        message_id: &str,
        reply: &str,
    ) -> Result<(), StoreError> {
        let _: () = redis::pipe()
            .hset(self.push_key(appid, &format!("d:{dedup_key}")), "r", reply)
            .hset(self.push_key(appid, &format!("m:{message_id}")), "r", reply)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn ensure_group(&self, key: &str) -> Result<(), StoreError> {
        let made: redis::RedisResult<()> =
            self.conn().xgroup_create_mkstream(key, GROUP, "0").await;
        match made {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn with_retry_state(
        &self,
        appid: &str,
        sub: &str,
        mut qs: Vec<Queued>,
    ) -> Result<Vec<Queued>, StoreError> {
        if qs.is_empty() {
            return Ok(qs);
        }
        let ids: Vec<String> = qs.iter().map(Queued::stream_id).collect();
        let states: Vec<Option<String>> = self
            .conn()
            .hget(self.push_key(appid, &format!("r:{sub}")), ids)
            .await?;
        for (q, s) in qs.iter_mut().zip(states) {
            if let Some(s) = s {
                apply_retry(q, &s);
            }
        }
        Ok(qs)
    }

    fn to_queued(id: &str, map: &HashMap<String, Value>) -> Result<Queued, StoreError> {
        let first_at = text(map, "first_at").parse().unwrap_or(0);
        Ok(Queued {
            order: parse_order(id)?,
            message_id: text(map, "message_id"),
            openid: text(map, "openid"),
            attempts: 0,
            next_at: first_at,
            first_at,
            last_error: None,
            row: None,
            message: None,
        })
    }

    /// Reads up to `limit` new entries of a subscriber's queue into this
    /// instance's pending list (`after` is not needed: the group remembers).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_fetch(
        &self,
        appid: &str,
        sub: &str,
        _after: Option<(u64, u64)>,
        instance: &str,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let key = self.push_key(appid, &format!("q:{sub}"));
        let opts = StreamReadOptions::default()
            .group(GROUP, instance)
            .count(limit);
        let reply: redis::RedisResult<StreamReadReply> =
            self.conn().xread_options(&[&key], &[">"], &opts).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(&key).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for k in reply.keys {
            for e in k.ids {
                out.push(Self::to_queued(&e.id, &e.map)?);
            }
        }
        self.with_retry_state(appid, sub, out).await
    }

    /// Claims every entry pending in the group, whoever read it: called by
    /// an instance that just became the account's deliverer, so entries a
    /// dead one had read are delivered. Then as [`RedisStore::push_fetch`].
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_take_over(
        &self,
        appid: &str,
        sub: &str,
        instance: &str,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let key = self.push_key(appid, &format!("q:{sub}"));
        self.ensure_group(&key).await?;
        let mut out = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let reply: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(instance)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.conn())
                .await?;
            for e in reply.claimed {
                out.push(Self::to_queued(&e.id, &e.map)?);
            }
            cursor = reply.next_stream_id;
            if cursor == "0-0" || out.len() >= limit {
                break;
            }
        }
        out.sort_by_key(|q| q.order);
        self.with_retry_state(appid, sub, out).await
    }

    /// The message of a queue entry.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_message(
        &self,
        appid: &str,
        q: &Queued,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.message(appid, &q.message_id).await
    }

    async fn message(
        &self,
        appid: &str,
        message_id: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let h: HashMap<String, String> = self
            .conn()
            .hgetall(self.push_key(appid, &format!("m:{message_id}")))
            .await?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(StoredMessage {
            message_id: message_id.to_string(),
            openid: h.get("openid").cloned().unwrap_or_default(),
            raw_xml: h.get("raw_xml").cloned().unwrap_or_default(),
            received_at: h
                .get("received_at")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            reply: h.get("r").cloned(),
        }))
    }

    /// A delivered entry leaves the queue.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_done(&self, appid: &str, sub: &str, q: &Queued) -> Result<(), StoreError> {
        let key = self.push_key(appid, &format!("q:{sub}"));
        let id = q.stream_id();
        let _: () = redis::pipe()
            .atomic()
            .xack(&key, GROUP, &[&id])
            .xdel(&key, &[&id])
            .hdel(self.push_key(appid, &format!("r:{sub}")), &id)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Records a failed attempt.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_retry(&self, appid: &str, sub: &str, q: &Queued) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(
                self.push_key(appid, &format!("r:{sub}")),
                q.stream_id(),
                retry_value(q),
            )
            .await?;
        Ok(())
    }

    /// Parks an entry whose retry window is over, with a copy of its
    /// message; past `max` the oldest parked are forgotten (returned).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_park(
        &self,
        appid: &str,
        sub: &str,
        q: &Queued,
        now: i64,
        max: u32,
    ) -> Result<u64, StoreError> {
        let msg = self.message(appid, &q.message_id).await?;
        let (raw, received) = msg.map_or((String::new(), 0), |m| (m.raw_xml, m.received_at));
        let over: i64 = PARK
            .key(self.push_key(appid, &format!("q:{sub}")))
            .key(self.push_key(appid, &format!("r:{sub}")))
            .key(self.push_key(appid, &format!("p:{sub}")))
            .arg(q.stream_id())
            .arg("message_id")
            .arg(&q.message_id)
            .arg("openid")
            .arg(&q.openid)
            .arg("attempts")
            .arg(q.attempts)
            .arg("parked_at")
            .arg(now)
            .arg("error")
            .arg(q.last_error.as_deref().unwrap_or_default())
            .arg("raw_xml")
            .arg(raw)
            .arg("received_at")
            .arg(received)
            .arg(max)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(over.max(0) as u64)
    }

    /// Parked deliveries of an account's subscribers, oldest first per
    /// subscriber, at most `limit`. Their ids are `subscriber:stream-id`.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_parked(
        &self,
        appid: &str,
        subs: &[String],
        limit: usize,
    ) -> Result<Vec<Parked>, StoreError> {
        let mut out = Vec::new();
        for sub in subs {
            if out.len() >= limit {
                break;
            }
            let r: StreamRangeReply = self
                .conn()
                .xrange_count(
                    self.push_key(appid, &format!("p:{sub}")),
                    "-",
                    "+",
                    limit - out.len(),
                )
                .await?;
            for e in r.ids {
                out.push(Parked {
                    id: format!("{sub}:{}", e.id),
                    subscriber: sub.clone(),
                    message_id: text(&e.map, "message_id"),
                    openid: text(&e.map, "openid"),
                    attempts: text(&e.map, "attempts").parse().unwrap_or(0),
                    parked_at: text(&e.map, "parked_at").parse().unwrap_or(0),
                    error: text(&e.map, "error"),
                });
            }
        }
        Ok(out)
    }

    /// Puts a parked delivery back in its subscriber's queue.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_replay(
        &self,
        appid: &str,
        id: &str,
        now: i64,
        keep_secs: i64,
    ) -> Result<bool, StoreError> {
        let Some((sub, entry)) = id.rsplit_once(':') else {
            return Ok(false);
        };
        if parse_order(entry).is_err() {
            return Ok(false);
        }
        let r: StreamRangeReply = self
            .conn()
            .xrange(self.push_key(appid, &format!("p:{sub}")), entry, entry)
            .await?;
        let Some(e) = r.ids.first() else {
            return Ok(false);
        };
        let message_id = text(&e.map, "message_id");
        let done: i64 = REPLAY
            .key(self.push_key(appid, &format!("p:{sub}")))
            .key(self.push_key(appid, &format!("q:{sub}")))
            .key(self.push_key(appid, &format!("m:{message_id}")))
            .arg(entry)
            .arg(now)
            .arg(keep_secs)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    /// Queued and parked entries of one subscriber.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_backlog(&self, appid: &str, sub: &str) -> Result<Backlog, StoreError> {
        let (queued, parked): (u64, u64) = redis::pipe()
            .xlen(self.push_key(appid, &format!("q:{sub}")))
            .xlen(self.push_key(appid, &format!("p:{sub}")))
            .query_async(&mut self.conn())
            .await?;
        Ok(Backlog { queued, parked })
    }

    /// Forgets the queues of subscribers gone from the configuration.
    ///
    /// Redis expires messages by itself, but a subscriber's queue, retry
    /// states and parked entries are kept for as long as it is configured.
    /// Every configured (account, subscriber) is recorded in `push:lanes`
    /// with the last time an instance had it (when it first appears here,
    /// and once an hour after); one that no instance has had for
    /// `keep_secs` (its messages have expired by then) loses those keys. A
    /// subscriber that comes back sooner keeps them. At most
    /// 100 per call: the rest go on the next sweeps. Returns
    /// how many subscribers' queues went.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn push_sweep(
        &self,
        now: i64,
        live: &[(String, String)],
        keep_secs: i64,
    ) -> Result<usize, StoreError> {
        let registry = self.key("push:lanes");
        let live: HashSet<String> = live.iter().map(|(a, s)| lane_member(a, s)).collect();
        let (full, fresh): (bool, Vec<String>) = {
            let book = self.push_lanes.lock().unwrap_or_else(|e| e.into_inner());
            let full = book
                .refreshed_at
                .is_none_or(|at| now - at >= LANE_REFRESH_SECS);
            let fresh = live
                .iter()
                .filter(|m| full || !book.registered.contains(*m))
                .cloned()
                .collect();
            (full, fresh)
        };
        for chunk in fresh.chunks(1000) {
            let members: Vec<(i64, &String)> = chunk.iter().map(|m| (now, m)).collect();
            let _: () = self.conn().zadd_multiple(&registry, &members).await?;
        }
        {
            let mut book = self.push_lanes.lock().unwrap_or_else(|e| e.into_inner());
            book.registered.clone_from(&live);
            if full {
                book.refreshed_at = Some(now);
            }
        }
        self.adopt_unrecorded(now, &live).await?;
        let cutoff = now - keep_secs;
        let old: Vec<String> = self
            .conn()
            .zrangebyscore_limit(&registry, "-inf", cutoff, 0, SWEEP_LANES)
            .await?;
        let mut gone = 0;
        for member in old {
            if live.contains(&member) {
                let _: () = self.conn().zadd(&registry, &member, now).await?;
                continue;
            }
            let Some((appid, sub)) = member.split_once('\n') else {
                let _: () = self.conn().zrem(&registry, &member).await?;
                continue;
            };
            // Another instance may have just found it configured again.
            let score: Option<i64> = self.conn().zscore(&registry, &member).await?;
            if score.is_some_and(|s| s > cutoff) {
                continue;
            }
            let keys: Vec<String> = ["q", "r", "p"]
                .iter()
                .map(|k| self.push_key(appid, &format!("{k}:{sub}")))
                .collect();
            let _: () = self.conn().del(keys).await?;
            let _: () = self.conn().zrem(&registry, &member).await?;
            tracing::info!(account.appid = %appid, subscriber = %sub, "forgot the queue of a subscriber gone for push.keep_secs");
            gone += 1;
        }
        Ok(gone)
    }

    /// Records in `push:lanes` the queues of subscribers removed before
    /// hubs kept that set, so that they are forgotten like any other: one
    /// `SCAN` step per sweep until the keyspace has been walked once, then
    /// a marker key ends it for every instance. A queue found is recorded
    /// as of now (when its subscriber went is not known), and only if it is
    /// not recorded already.
    async fn adopt_unrecorded(&self, now: i64, live: &HashSet<String>) -> Result<(), StoreError> {
        let marker = self.key("push:lanes:adopted");
        let cursor = {
            let book = self.push_lanes.lock().unwrap_or_else(|e| e.into_inner());
            if book.adopted {
                return Ok(());
            }
            book.adopt_cursor
        };
        if cursor == 0 && self.conn().exists::<_, bool>(&marker).await? {
            self.push_lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .adopted = true;
            return Ok(());
        }
        let pattern = format!("{}:{{*}}:push:q:*", self.prefix());
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(ADOPT_SCAN)
            .query_async(&mut self.conn())
            .await?;
        let found: Vec<(i64, String)> = keys
            .iter()
            .filter_map(|k| self.parse_app_key(k, "push:q:"))
            .map(|(appid, sub)| lane_member(appid, sub))
            .filter(|m| !live.contains(m))
            .map(|m| (now, m))
            .collect();
        if !found.is_empty() {
            let _: () = redis::cmd("ZADD")
                .arg(self.key("push:lanes"))
                .arg("NX")
                .arg(&found)
                .query_async(&mut self.conn())
                .await?;
        }
        if next == 0 {
            let _: () = self.conn().set(&marker, 1).await?;
        }
        let mut book = self.push_lanes.lock().unwrap_or_else(|e| e.into_inner());
        book.adopt_cursor = next;
        book.adopted = next == 0;
        Ok(())
    }

    /// A follower record.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn follower(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<Follower>, StoreError> {
        let h: HashMap<String, String> = self
            .conn()
            .hgetall(self.push_key(appid, &format!("f:{openid}")))
            .await?;
        if h.is_empty() {
            return Ok(None);
        }
        let int = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok(Some(Follower {
            openid: openid.to_string(),
            subscribed: h.get("subscribed").is_some_and(|v| v == "1"),
            subscribed_at: int("subscribed_at"),
            unsubscribed_at: int("unsubscribed_at"),
            profile: h.get("profile").and_then(|p| serde_json::from_str(p).ok()),
            profile_fetched_at: int("profile_fetched_at"),
        }))
    }

    /// Follower records by openid, after `after`, at most `limit`.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn followers(
        &self,
        appid: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Follower>, StoreError> {
        let min = if after.is_empty() {
            "-".to_string()
        } else {
            format!("({after}")
        };
        let openids: Vec<String> = self
            .conn()
            .zrangebylex_limit(self.push_key(appid, "fz"), min, "+", 0, limit as isize)
            .await?;
        let mut out = Vec::with_capacity(openids.len());
        for o in openids {
            if let Some(f) = self.follower(appid, &o).await? {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Stores a fetched profile on the follower record.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn follower_profile(
        &self,
        appid: &str,
        openid: &str,
        profile: &serde_json::Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let _: () = redis::pipe()
            .hset_multiple(
                self.push_key(appid, &format!("f:{openid}")),
                &[
                    ("profile", profile.to_string()),
                    ("profile_fetched_at", now.to_string()),
                ],
            )
            .zadd(self.push_key(appid, "fz"), openid, 0)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
