//! Persistence of credentials and counters, so a restart serves stored
//! tokens at once and fetches nothing.
//!
//! The SQLite connection sits behind a `std::sync::Mutex`: every statement is
//! a single-row upsert or select that takes microseconds, no lock is held
//! across an `.await`, and writes happen only when a credential changes.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Consumed, Grant, StateRecord, StoreError, StoredCredential};

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    // Inserts since the last sweep of expired states and tickets: sweeping
    // on every insert would make each login pay for the others.
    inserts: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file. The file holds live
    /// tokens, so it is created readable by its owner only.
    ///
    /// # Errors
    /// If the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new(format!("{}: {e}", dir.display())))?;
        }
        let existed = path.exists();
        let conn = Connection::open(path)?;
        #[cfg(unix)]
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS credentials (
                appid TEXT NOT NULL,
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                fetched_at INTEGER NOT NULL,
                first_seen INTEGER NOT NULL,
                PRIMARY KEY (appid, kind)
            );
            CREATE TABLE IF NOT EXISTS oauth_states (
                id TEXT PRIMARY KEY,
                appid TEXT NOT NULL,
                want TEXT NOT NULL,
                stage TEXT NOT NULL,
                return_to TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER,
                code_hash TEXT,
                result TEXT
            );
            CREATE INDEX IF NOT EXISTS oauth_states_expiry ON oauth_states (expires_at);
            CREATE TABLE IF NOT EXISTS oauth_tickets (
                hash TEXT PRIMARY KEY,
                appid TEXT NOT NULL,
                payload TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                used INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS oauth_tickets_expiry ON oauth_tickets (expires_at);
            CREATE TABLE IF NOT EXISTS grants (
                appid TEXT NOT NULL,
                openid TEXT NOT NULL,
                unionid TEXT,
                scope TEXT NOT NULL,
                snapshot INTEGER NOT NULL DEFAULT 0,
                access_token TEXT NOT NULL,
                access_expires_at INTEGER NOT NULL,
                refresh_token TEXT NOT NULL,
                refresh_expires_at INTEGER NOT NULL,
                profile TEXT,
                profile_fetched_at INTEGER,
                PRIMARY KEY (appid, openid)
            );
            CREATE TABLE IF NOT EXISTS counters (
                appid TEXT NOT NULL,
                name TEXT NOT NULL,
                day INTEGER NOT NULL,
                value INTEGER NOT NULL,
                PRIMARY KEY (appid, name, day)
            );",
        )?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            inserts: std::sync::atomic::AtomicU32::new(0),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored credential of `kind` for `appid`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn load(&self, appid: &str, kind: &str) -> Result<Option<StoredCredential>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value, expires_at, fetched_at, first_seen FROM credentials WHERE appid = ?1 AND kind = ?2")?
            .query_row(
                params![appid, kind],
                |r| {
                    Ok(StoredCredential {
                        value: r.get(0)?,
                        expires_at: r.get(1)?,
                        fetched_at: r.get(2)?,
                        first_seen: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Stores (replaces) a credential.
    ///
    /// # Errors
    /// On a database failure.
    pub fn save(&self, appid: &str, kind: &str, c: &StoredCredential) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO credentials (appid, kind, value, expires_at, fetched_at, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (appid, kind) DO UPDATE SET value = excluded.value,
               expires_at = excluded.expires_at, fetched_at = excluded.fetched_at,
               first_seen = excluded.first_seen",
            )?
            .execute(params![
                appid,
                kind,
                c.value,
                c.expires_at,
                c.fetched_at,
                c.first_seen
            ])?;
        Ok(())
    }

    /// Adds one to a per-day counter and returns the new value.
    ///
    /// # Errors
    /// On a database failure.
    pub fn bump(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO counters (appid, name, day, value) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (appid, name, day) DO UPDATE SET value = value + 1",
        )?
        .execute(params![appid, name, day])?;
        Ok(conn
            .prepare_cached(
                "SELECT value FROM counters WHERE appid = ?1 AND name = ?2 AND day = ?3",
            )?
            .query_row(params![appid, name, day], |r| r.get(0))?)
    }

    /// A per-day counter.
    ///
    /// # Errors
    /// On a database failure.
    pub fn counter(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT value FROM counters WHERE appid = ?1 AND name = ?2 AND day = ?3",
            )?
            .query_row(params![appid, name, day], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }
}

impl SqliteStore {
    /// Records a new pending authorization; drops long-expired ones.
    ///
    /// # Errors
    /// On a database failure.
    pub fn save_state(&self, id: &str, r: &StateRecord, now: i64) -> Result<(), StoreError> {
        let conn = self.conn();
        if self.sweep_due() {
            conn.prepare_cached("DELETE FROM oauth_states WHERE expires_at < ?1")?
                .execute(params![now - 86400])?;
            conn.prepare_cached("DELETE FROM oauth_tickets WHERE expires_at < ?1")?
                .execute(params![now - 3600])?;
        }
        conn.prepare_cached("INSERT INTO oauth_states (id, appid, want, stage, return_to, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(
            params![id, r.appid, r.want, r.stage, r.return_to, r.expires_at],
        )?;
        Ok(())
    }

    fn sweep_due(&self) -> bool {
        self.inserts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(1000)
    }

    /// Looks a state up without using it.
    ///
    /// # Errors
    /// On a database failure.
    pub fn peek_state(&self, id: &str) -> Result<Option<StateRecord>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT appid, want, stage, return_to, expires_at FROM oauth_states WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok(StateRecord {
                    appid: r.get(0)?,
                    want: r.get(1)?,
                    stage: r.get(2)?,
                    return_to: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// Uses a state, once. `code_hash` is the hash of the code that came
    /// with it (None for a refusal).
    ///
    /// # Errors
    /// On a database failure.
    pub fn consume_state(
        &self,
        id: &str,
        code_hash: Option<&str>,
        now: i64,
    ) -> Result<Consumed, StoreError> {
        let conn = self.conn();
        let changed = conn.prepare_cached("UPDATE oauth_states SET used_at = ?2, code_hash = ?3 WHERE id = ?1 AND used_at IS NULL")?
            .execute(
            params![id, now, code_hash],
        )?;
        let row = conn
            .prepare_cached("SELECT appid, want, stage, return_to, expires_at, used_at, code_hash, result FROM oauth_states WHERE id = ?1")?
            .query_row(
                params![id],
                |r| {
                    Ok((
                        StateRecord {
                            appid: r.get(0)?,
                            want: r.get(1)?,
                            stage: r.get(2)?,
                            return_to: r.get(3)?,
                            expires_at: r.get(4)?,
                        },
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                },
            )
            .optional()?;
        Ok(match row {
            None => Consumed::Missing,
            Some((record, _, _, _)) if changed == 1 => Consumed::Fresh(record),
            Some((record, Some(used_at), Some(stored), result))
                if code_hash.is_some_and(|c| c == stored) =>
            {
                Consumed::Again {
                    record,
                    used_at,
                    result,
                }
            }
            Some(_) => Consumed::Used,
        })
    }

    /// Stores the result of a finished authorization on its state, for a
    /// repeated callback.
    ///
    /// # Errors
    /// On a database failure.
    pub fn set_state_result(&self, id: &str, result: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE oauth_states SET result = ?2 WHERE id = ?1")?
            .execute(params![id, result])?;
        Ok(())
    }

    /// The stored result of a used state.
    ///
    /// # Errors
    /// On a database failure.
    pub fn state_result(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT result FROM oauth_states WHERE id = ?1")?
            .query_row(params![id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// The account of an unused, unexpired ticket.
    ///
    /// # Errors
    /// On a database failure.
    pub fn ticket_appid(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT appid FROM oauth_tickets WHERE hash = ?1 AND used = 0")?
            .query_row(params![hash], |r| r.get(0))
            .optional()?)
    }

    /// Stores a hand-over ticket by its hash.
    ///
    /// # Errors
    /// On a database failure.
    pub fn save_ticket(
        &self,
        hash: &str,
        appid: &str,
        payload: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let _ = now;
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO oauth_tickets (hash, appid, payload, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![hash, appid, payload, expires_at])?;
        Ok(())
    }

    /// Redeems a ticket once: (appid, payload) if it exists, is unused and unexpired.
    ///
    /// # Errors
    /// On a database failure.
    pub fn redeem_ticket(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("UPDATE oauth_tickets SET used = 1 WHERE hash = ?1 AND used = 0 AND expires_at > ?2 RETURNING appid, payload")?
            .query_row(
                params![hash, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Stores (replaces) a grant.
    ///
    /// # Errors
    /// On a database failure.
    pub fn save_grant(&self, g: &Grant) -> Result<(), StoreError> {
        self.conn().prepare_cached("INSERT INTO grants (appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (appid, openid) DO UPDATE SET unionid = excluded.unionid, scope = excluded.scope,
               snapshot = excluded.snapshot, access_token = excluded.access_token,
               access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
               refresh_expires_at = excluded.refresh_expires_at, profile = excluded.profile,
               profile_fetched_at = excluded.profile_fetched_at")?
            .execute(
            params![
                g.appid, g.openid, g.unionid, g.scope, g.snapshot, g.access_token, g.access_expires_at,
                g.refresh_token, g.refresh_expires_at, g.profile, g.profile_fetched_at
            ],
        )?;
        Ok(())
    }

    /// A person's grant to an account.
    ///
    /// # Errors
    /// On a database failure.
    pub fn load_grant(&self, appid: &str, openid: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at
                 FROM grants WHERE appid = ?1 AND openid = ?2")?
            .query_row(
                params![appid, openid],
                |r| {
                    Ok(Grant {
                        appid: r.get(0)?,
                        openid: r.get(1)?,
                        unionid: r.get(2)?,
                        scope: r.get(3)?,
                        snapshot: r.get(4)?,
                        access_token: r.get(5)?,
                        access_expires_at: r.get(6)?,
                        refresh_token: r.get(7)?,
                        refresh_expires_at: r.get(8)?,
                        profile: r.get(9)?,
                        profile_fetched_at: r.get(10)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forgets a grant (expired or revoked).
    ///
    /// # Errors
    /// On a database failure.
    pub fn delete_grant(&self, appid: &str, openid: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM grants WHERE appid = ?1 AND openid = ?2")?
            .execute(params![appid, openid])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_counters_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("wxhub-store-{}", std::process::id()));
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        {
            let s = SqliteStore::open(&path).expect("open");
            let c = StoredCredential {
                value: "tok".into(),
                expires_at: 10,
                fetched_at: 1,
                first_seen: 1,
            };
            s.save("wx1", "access_token:stable", &c).expect("save");
            assert_eq!(s.bump("wx1", "fetches", 5).expect("bump"), 1);
            assert_eq!(s.bump("wx1", "fetches", 5).expect("bump"), 2);
        }
        let s = SqliteStore::open(&path).expect("reopen");
        let c = s
            .load("wx1", "access_token:stable")
            .expect("load")
            .expect("present");
        assert_eq!((c.value.as_str(), c.expires_at), ("tok", 10));
        assert!(!format!("{c:?}").contains("tok"));
        assert_eq!(s.counter("wx1", "fetches", 5).expect("counter"), 2);
        assert!(
            s.load("wx1", "access_token:classic")
                .expect("load")
                .is_none()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
