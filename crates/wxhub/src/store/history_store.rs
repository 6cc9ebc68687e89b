//! The refresh history in both stores (see [`crate::history`]): a table in
//! SQLite, a capped list per account in Redis. Entries hold no value, so
//! nothing here is sealed.

use redis::AsyncCommands;
use rusqlite::params;

use super::{RedisStore, SqliteStore, StoreError};
use crate::history::Entry;

/// The SQLite table, created on open if missing.
pub(super) const HISTORY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS refresh_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        appid TEXT NOT NULL,
        at INTEGER NOT NULL,
        entry TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS refresh_history_appid ON refresh_history (appid, id);
    CREATE INDEX IF NOT EXISTS refresh_history_at ON refresh_history (at);";

fn encode(e: &Entry) -> Result<String, StoreError> {
    serde_json::to_string(e).map_err(|e| StoreError::new(format!("history entry: {e}")))
}

fn decode(s: &str) -> Option<Entry> {
    serde_json::from_str(s).ok()
}

impl SqliteStore {
    /// Adds an entry and drops the account's entries older than
    /// `keep_from` or beyond the newest `cap`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn history_add(
        &self,
        appid: &str,
        entry: &Entry,
        keep_from: i64,
        cap: usize,
    ) -> Result<(), StoreError> {
        let (appid, at, text) = (appid.to_string(), entry.at, encode(entry)?);
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.run(move |b| {
            b.tx.prepare_cached(
                "INSERT INTO refresh_history (appid, at, entry) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![appid, at, text])?;
            b.tx.prepare_cached(
                "DELETE FROM refresh_history WHERE appid = ?1 AND (at < ?2 OR id <= (
                     SELECT id FROM refresh_history WHERE appid = ?1
                     ORDER BY id DESC LIMIT 1 OFFSET ?3))",
            )?
            .execute(params![appid, keep_from, cap])?;
            Ok(())
        })
        .await
    }

    /// The account's newest `limit` entries at or after `since`, newest
    /// first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn history(
        &self,
        appid: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let appid = appid.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |b| {
            let mut stmt = b.tx.prepare_cached(
                "SELECT entry FROM refresh_history WHERE appid = ?1 AND at >= ?2
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![appid, since, limit], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                if let Some(e) = decode(&row?) {
                    out.push(e);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Drops every entry older than `keep_from` (removed accounts' too).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn history_sweep(&self, keep_from: i64) -> Result<usize, StoreError> {
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("DELETE FROM refresh_history WHERE at < ?1")?
                .execute(params![keep_from])?)
        })
        .await
    }
}

impl RedisStore {
    fn history_key(&self, appid: &str) -> String {
        self.app_key(appid, "history")
    }

    /// Adds an entry to the account's list (newest first), capped at `cap`;
    /// the list expires `keep_from`'s distance after its last write, and
    /// older entries are skipped on reading.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn history_add(
        &self,
        appid: &str,
        entry: &Entry,
        keep_from: i64,
        cap: usize,
    ) -> Result<(), StoreError> {
        let key = self.history_key(appid);
        let ttl = (entry.at - keep_from).clamp(60, 400 * 86400);
        let cap = isize::try_from(cap.max(1)).unwrap_or(isize::MAX);
        let () = redis::pipe()
            .atomic()
            .lpush(&key, encode(entry)?)
            .ignore()
            .ltrim(&key, 0, cap - 1)
            .ignore()
            .expire(&key, ttl)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The account's newest `limit` entries at or after `since`, newest
    /// first.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn history(
        &self,
        appid: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let end = isize::try_from(limit.max(1)).unwrap_or(isize::MAX) - 1;
        let raw: Vec<String> = self.conn().lrange(self.history_key(appid), 0, end).await?;
        Ok(raw
            .iter()
            .filter_map(|s| decode(s))
            .filter(|e| e.at >= since)
            .collect())
    }

    /// Nothing to do: each list expires, and reads skip old entries.
    ///
    /// # Errors
    /// Never.
    pub async fn history_sweep(&self, _keep_from: i64) -> Result<usize, StoreError> {
        Ok(0)
    }
}
