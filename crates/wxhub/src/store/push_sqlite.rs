//! The push gateway's records in the SQLite store. Every write goes through
//! the store's one writer thread, so a push's message, its queue entries
//! and its follower change land in one transaction, committed before the
//! platform is answered.

use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::push::{Accepted, Backlog, Follower, NewPush, Parked, Queued, StoredMessage};
use super::sqlite::{Batch, SqliteStore};

/// The push tables, created on open if missing.
pub(super) const PUSH_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS push_messages (
        appid TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        openid TEXT NOT NULL,
        raw_xml TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        reply TEXT,
        keep_until INTEGER NOT NULL,
        PRIMARY KEY (appid, dedup_key)
    );
    CREATE UNIQUE INDEX IF NOT EXISTS push_messages_id ON push_messages (message_id);
    CREATE INDEX IF NOT EXISTS push_messages_keep ON push_messages (keep_until);
    CREATE TABLE IF NOT EXISTS push_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        appid TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        message_id TEXT NOT NULL,
        openid TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        first_at INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE INDEX IF NOT EXISTS push_queue_sub ON push_queue (appid, subscriber, id);
    CREATE INDEX IF NOT EXISTS push_queue_msg ON push_queue (message_id);
    CREATE TABLE IF NOT EXISTS push_parked (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        appid TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        message_id TEXT NOT NULL,
        openid TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        parked_at INTEGER NOT NULL,
        error TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS push_parked_sub ON push_parked (appid, subscriber, id);
    CREATE INDEX IF NOT EXISTS push_parked_msg ON push_parked (message_id);
    CREATE TABLE IF NOT EXISTS push_followers (
        appid TEXT NOT NULL,
        openid TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (appid, openid)
    );";

fn count(b: &Batch<'_>, table: &str, appid: &str, sub: &str) -> Result<u64, StoreError> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE appid = ?1 AND subscriber = ?2");
    Ok(b.tx
        .prepare_cached(&sql)?
        .query_row(params![appid, sub], |r| r.get::<_, i64>(0))? as u64)
}

/// Queue entries of a subscriber: counted once, then kept in step with
/// every insert and delete (the writer thread is the file's only writer).
fn queued_count(b: &mut Batch<'_>, appid: &str, sub: &str) -> Result<u64, StoreError> {
    let key = format!("{appid}\0{sub}");
    if let Some(n) = b.queued.get(&key) {
        return Ok(*n);
    }
    let n = count(b, "push_queue", appid, sub)?;
    b.queued.insert(key, n);
    Ok(n)
}

fn queued_add(b: &mut Batch<'_>, appid: &str, sub: &str, delta: i64) {
    if let Some(n) = b.queued.get_mut(&format!("{appid}\0{sub}")) {
        *n = n.saturating_add_signed(delta);
    }
}

fn load_follower(b: &Batch<'_>, appid: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
    let text: Option<String> =
        b.tx.prepare_cached("SELECT record FROM push_followers WHERE appid = ?1 AND openid = ?2")?
            .query_row(params![appid, openid], |r| r.get(0))
            .optional()?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::new(format!("follower record: {e}")))
    })
    .transpose()
}

fn save_follower(b: &Batch<'_>, appid: &str, f: &Follower) -> Result<(), StoreError> {
    let text = serde_json::to_string(f).map_err(|e| StoreError::new(e.to_string()))?;
    b.tx.prepare_cached(
        "INSERT INTO push_followers (appid, openid, record) VALUES (?1, ?2, ?3)
         ON CONFLICT (appid, openid) DO UPDATE SET record = excluded.record",
    )?
    .execute(params![appid, f.openid, text])?;
    Ok(())
}

fn queued(r: &rusqlite::Row<'_>) -> rusqlite::Result<Queued> {
    Ok(Queued {
        order: (r.get::<_, i64>(0)? as u64, 0),
        message_id: r.get(1)?,
        openid: r.get(2)?,
        attempts: r.get::<_, i64>(3)? as u32,
        next_at: r.get(4)?,
        first_at: r.get(5)?,
        last_error: r.get(6)?,
    })
}

impl SqliteStore {
    /// Writes a verified push: the message (unless its duplicate key is on
    /// file), one queue entry per subscriber with room, and the follower
    /// change, in one transaction.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_accept(&self, p: &NewPush) -> Result<Accepted, StoreError> {
        let p = p.clone();
        self.run(move |b| {
            let seen: Option<(String, Option<String>)> = b
                .tx
                .prepare_cached("SELECT message_id, reply FROM push_messages WHERE appid = ?1 AND dedup_key = ?2")?
                .query_row(params![p.appid, p.dedup_key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((message_id, reply)) = seen {
                return Ok(Accepted::Duplicate { message_id, reply });
            }
            b.tx.prepare_cached(
                "INSERT INTO push_messages (appid, dedup_key, message_id, openid, raw_xml, received_at, keep_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![p.appid, p.dedup_key, p.message_id, p.openid, p.raw_xml, p.received_at, p.keep_until])?;
            let mut dropped = Vec::new();
            for sub in &p.subscribers {
                if queued_count(b, &p.appid, sub)? >= u64::from(p.max_backlog) {
                    dropped.push(sub.clone());
                    continue;
                }
                b.tx.prepare_cached(
                    "INSERT INTO push_queue (appid, subscriber, message_id, openid, next_at, first_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )?
                .execute(params![p.appid, sub, p.message_id, p.openid, p.received_at])?;
                queued_add(b, &p.appid, sub, 1);
            }
            if let Some(change) = p.follow {
                let f = load_follower(b, &p.appid, &p.openid)?
                    .unwrap_or_else(|| Follower::new(&p.openid))
                    .apply(change);
                save_follower(b, &p.appid, &f)?;
            }
            Ok(Accepted::New { dropped })
        })
        .await
    }

    /// Records the passive reply a message was answered with, for its
    /// duplicates.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_set_reply(
        &self,
        appid: &str,
        dedup_key: &str,
        _message_id: &str,
        reply: &str,
    ) -> Result<(), StoreError> {
        let (appid, id, reply) = (appid.to_string(), dedup_key.to_string(), reply.to_string());
        self.run(move |b| {
            b.tx.prepare_cached(
                "UPDATE push_messages SET reply = ?3 WHERE appid = ?1 AND dedup_key = ?2",
            )?
            .execute(params![appid, id, reply])?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` queue entries of a subscriber after `after`, in order.
    /// One instance owns a SQLite file, so `instance` is not needed.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_fetch(
        &self,
        appid: &str,
        sub: &str,
        after: Option<(u64, u64)>,
        _instance: &str,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let (appid, sub) = (appid.to_string(), sub.to_string());
        let after = after.map_or(0, |a| a.0 as i64);
        self.run(move |b| {
            let rows = b
                .tx
                .prepare_cached(
                    "SELECT id, message_id, openid, attempts, next_at, first_at, last_error FROM push_queue
                     WHERE appid = ?1 AND subscriber = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                )?
                .query_map(params![appid, sub, after, limit as i64], queued)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The same as the first [`SqliteStore::push_fetch`]: with one instance
    /// there is nobody to take entries over from.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_take_over(
        &self,
        appid: &str,
        sub: &str,
        instance: &str,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        self.push_fetch(appid, sub, None, instance, limit).await
    }

    /// A stored message.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_message(
        &self,
        appid: &str,
        message_id: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let (appid, id) = (appid.to_string(), message_id.to_string());
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT message_id, openid, raw_xml, received_at, reply FROM push_messages WHERE appid = ?1 AND message_id = ?2")?
                .query_row(params![appid, id], |r| {
                    Ok(StoredMessage {
                        message_id: r.get(0)?,
                        openid: r.get(1)?,
                        raw_xml: r.get(2)?,
                        received_at: r.get(3)?,
                        reply: r.get(4)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// A delivered entry leaves the queue.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_done(&self, appid: &str, sub: &str, q: &Queued) -> Result<(), StoreError> {
        let (appid, sub, id) = (appid.to_string(), sub.to_string(), q.order.0 as i64);
        self.run(move |b| {
            let gone =
                b.tx.prepare_cached("DELETE FROM push_queue WHERE id = ?1")?
                    .execute(params![id])?;
            queued_add(b, &appid, &sub, -(gone as i64));
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: `q` carries the new count, time and error.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_retry(&self, _appid: &str, _sub: &str, q: &Queued) -> Result<(), StoreError> {
        let q = q.clone();
        self.run(move |b| {
            b.tx.prepare_cached(
                "UPDATE push_queue SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1",
            )?
            .execute(params![
                q.order.0 as i64,
                q.attempts,
                q.next_at,
                q.last_error
            ])?;
            Ok(())
        })
        .await
    }

    /// Moves an entry whose retry window is over to the parked list; past
    /// `max` parked entries the oldest are forgotten. Returns how many were.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_park(
        &self,
        appid: &str,
        sub: &str,
        q: &Queued,
        now: i64,
        max: u32,
    ) -> Result<u64, StoreError> {
        let (appid, sub, q) = (appid.to_string(), sub.to_string(), q.clone());
        self.run(move |b| {
            let gone = b
                .tx
                .prepare_cached("DELETE FROM push_queue WHERE id = ?1")?
                .execute(params![q.order.0 as i64])?;
            queued_add(b, &appid, &sub, -(gone as i64));
            b.tx.prepare_cached(
                "INSERT INTO push_parked (appid, subscriber, message_id, openid, attempts, parked_at, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![appid, sub, q.message_id, q.openid, q.attempts, now, q.last_error.unwrap_or_default()])?;
            let over = count(b, "push_parked", &appid, &sub)?.saturating_sub(u64::from(max));
            if over > 0 {
                b.tx.prepare_cached(
                    "DELETE FROM push_parked WHERE id IN (SELECT id FROM push_parked WHERE appid = ?1 AND subscriber = ?2 ORDER BY id LIMIT ?3)",
                )?
                .execute(params![appid, sub, over as i64])?;
            }
            Ok(over)
        })
        .await
    }

    /// Parked deliveries of an account, oldest first, at most `limit`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_parked(
        &self,
        appid: &str,
        _subs: &[String],
        limit: usize,
    ) -> Result<Vec<Parked>, StoreError> {
        let appid = appid.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached(
                    "SELECT id, subscriber, message_id, openid, attempts, parked_at, error FROM push_parked
                     WHERE appid = ?1 ORDER BY id LIMIT ?2",
                )?
                .query_map(params![appid, limit as i64], |r| {
                    Ok(Parked {
                        id: r.get::<_, i64>(0)?.to_string(),
                        subscriber: r.get(1)?,
                        message_id: r.get(2)?,
                        openid: r.get(3)?,
                        attempts: r.get::<_, i64>(4)? as u32,
                        parked_at: r.get(5)?,
                        error: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Puts a parked delivery back in its subscriber's queue, with a new
    /// retry window from `now`. `Ok(false)`: no such parked delivery.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_replay(
        &self,
        appid: &str,
        id: &str,
        now: i64,
        _keep_secs: i64,
    ) -> Result<bool, StoreError> {
        let appid = appid.to_string();
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        self.run(move |b| {
            let row: Option<(String, String, String)> = b
                .tx
                .prepare_cached("SELECT subscriber, message_id, openid FROM push_parked WHERE appid = ?1 AND id = ?2")?
                .query_row(params![appid, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((sub, message_id, openid)) = row else {
                return Ok(false);
            };
            b.tx.prepare_cached("DELETE FROM push_parked WHERE id = ?1")?
                .execute(params![id])?;
            b.tx.prepare_cached(
                "INSERT INTO push_queue (appid, subscriber, message_id, openid, next_at, first_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )?
            .execute(params![appid, sub, message_id, openid, now])?;
            queued_add(b, &appid, &sub, 1);
            Ok(true)
        })
        .await
    }

    /// Queued and parked entries of one subscriber.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_backlog(&self, appid: &str, sub: &str) -> Result<Backlog, StoreError> {
        let (appid, sub) = (appid.to_string(), sub.to_string());
        self.run(move |b| {
            Ok(Backlog {
                queued: count(b, "push_queue", &appid, &sub)?,
                parked: count(b, "push_parked", &appid, &sub)?,
            })
        })
        .await
    }

    /// Forgets messages kept past their time that no queue entry or parked
    /// delivery still needs. Returns how many.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_sweep(&self, now: i64) -> Result<usize, StoreError> {
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached(
                    "DELETE FROM push_messages WHERE keep_until < ?1
                     AND message_id NOT IN (SELECT message_id FROM push_queue)
                     AND message_id NOT IN (SELECT message_id FROM push_parked)",
                )?
                .execute(params![now])?)
        })
        .await
    }

    /// A follower record.
    ///
    /// # Errors
    /// On a database failure or a damaged record.
    pub async fn follower(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<Follower>, StoreError> {
        let (appid, openid) = (appid.to_string(), openid.to_string());
        self.run(move |b| load_follower(b, &appid, &openid)).await
    }

    /// Follower records by openid, after `after`, at most `limit`.
    ///
    /// # Errors
    /// On a database failure or a damaged record.
    pub async fn followers(
        &self,
        appid: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Follower>, StoreError> {
        let (appid, after) = (appid.to_string(), after.to_string());
        self.run(move |b| {
            let texts = b
                .tx
                .prepare_cached("SELECT record FROM push_followers WHERE appid = ?1 AND openid > ?2 ORDER BY openid LIMIT ?3")?
                .query_map(params![appid, after, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            texts
                .iter()
                .map(|t| serde_json::from_str(t).map_err(|e| StoreError::new(format!("follower record: {e}"))))
                .collect()
        })
        .await
    }

    /// Stores a fetched profile on the follower record.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn follower_profile(
        &self,
        appid: &str,
        openid: &str,
        profile: &serde_json::Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let (appid, openid, profile) = (appid.to_string(), openid.to_string(), profile.clone());
        self.run(move |b| {
            let mut f =
                load_follower(b, &appid, &openid)?.unwrap_or_else(|| Follower::new(&openid));
            f.profile = Some(profile);
            f.profile_fetched_at = Some(now);
            save_follower(b, &appid, &f)
        })
        .await
    }
}
