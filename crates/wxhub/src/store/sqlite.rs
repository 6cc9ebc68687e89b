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
use super::{STATE_GRACE, TICKET_GRACE};
use crate::budget::{Budget, Decision, Usage, decide};

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    // States on file per account, counted once from the table and then
    // kept in step with inserts (this process is the file's only writer);
    // forgotten at every sweep. Counting on every insert would make each
    // sign-in pay for every other one in flight.
    states: Mutex<std::collections::HashMap<String, u32>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file. The file and its
    /// `-wal` and `-shm` companions hold live tokens, so they are made
    /// readable by their owner only (0600), whatever they were before; a
    /// file whose mode cannot be fixed is refused.
    ///
    /// # Errors
    /// If the file cannot be opened, made private or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new(format!("{}: {e}", dir.display())))?;
        }
        make_private(path, true)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // SQLite creates these with the database file's mode, but ones left
        // from an earlier run keep whatever mode they had.
        for suffix in ["-wal", "-shm"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            make_private(Path::new(&companion), false)?;
        }
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
            CREATE INDEX IF NOT EXISTS oauth_states_appid ON oauth_states (appid);
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
            CREATE TABLE IF NOT EXISTS budgets (
                appid TEXT NOT NULL,
                scope TEXT NOT NULL,
                last_at INTEGER,
                hour INTEGER NOT NULL,
                hour_count INTEGER NOT NULL,
                day INTEGER NOT NULL,
                day_count INTEGER NOT NULL,
                PRIMARY KEY (appid, scope)
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
            states: Mutex::new(std::collections::HashMap::new()),
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

/// Makes `path` readable and writable by its owner only. A missing file is
/// created that way when `create` is set (so it is never briefly readable by
/// others), and otherwise left alone.
fn make_private(path: &Path, create: bool) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| {
                            StoreError::new(format!(
                                "{} holds tokens but is readable by others (mode {mode:o}) and cannot be made private: {e}; run the hub as the file's owner or fix its mode with chmod 600",
                                path.display()
                            ))
                        })?;
                    tracing::warn!(path = %path.display(), old_mode = format!("{mode:o}"), "the store file was readable by others; made it private (0600)");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| StoreError::new(format!("{}: {e}", path.display())))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::new(format!("{}: {e}", path.display()))),
        }
    }
    #[cfg(not(unix))]
    let _ = (path, create);
    Ok(())
}

impl SqliteStore {
    /// Decides whether a caller-triggered refresh fits the budget of
    /// (`appid`, `scope`), and with `take` records it when it does.
    ///
    /// # Errors
    /// On a database failure.
    pub fn budget(
        &self,
        appid: &str,
        scope: &str,
        budget: Budget,
        now: i64,
        take: bool,
    ) -> Result<Decision, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let used = tx
            .prepare_cached(
                "SELECT last_at, hour, hour_count, day, day_count FROM budgets WHERE appid = ?1 AND scope = ?2",
            )?
            .query_row(params![appid, scope], |r| {
                Ok(Usage {
                    last_at: r.get(0)?,
                    hour: r.get(1)?,
                    hour_count: r.get(2)?,
                    day: r.get(3)?,
                    day_count: r.get(4)?,
                })
            })
            .optional()?
            .unwrap_or_default();
        let decision = decide(used, budget, now);
        if let (true, Decision::Allowed(u)) = (take, decision) {
            tx.prepare_cached(
                "INSERT INTO budgets (appid, scope, last_at, hour, hour_count, day, day_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (appid, scope) DO UPDATE SET last_at = excluded.last_at,
                   hour = excluded.hour, hour_count = excluded.hour_count,
                   day = excluded.day, day_count = excluded.day_count",
            )?
            .execute(params![
                appid,
                scope,
                u.last_at,
                u.hour,
                u.hour_count,
                u.day,
                u.day_count
            ])?;
        }
        tx.commit()?;
        Ok(decision)
    }

    /// Records a new pending authorization, unless the account already has
    /// `max_pending` states on file (after sweeping its expired ones):
    /// `Ok(false)` then.
    ///
    /// # Errors
    /// On a database failure.
    pub fn save_state(
        &self,
        id: &str,
        r: &StateRecord,
        now: i64,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let count = |conn: &Connection| -> Result<u32, StoreError> {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM oauth_states WHERE appid = ?1")?
                .query_row(params![r.appid], |row| row.get(0))?)
        };
        let mut n = match states.get(&r.appid) {
            Some(n) => *n,
            None => count(&conn)?,
        };
        if n >= max_pending {
            conn.prepare_cached("DELETE FROM oauth_states WHERE appid = ?1 AND expires_at < ?2")?
                .execute(params![r.appid, now - STATE_GRACE])?;
            n = count(&conn)?;
            if n >= max_pending {
                states.insert(r.appid.clone(), n);
                return Ok(false);
            }
        }
        conn.prepare_cached("INSERT INTO oauth_states (id, appid, want, stage, return_to, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(
            params![id, r.appid, r.want, r.stage, r.return_to, r.expires_at],
        )?;
        states.insert(r.appid.clone(), n + 1);
        Ok(true)
    }

    /// Deletes states expired more than [`STATE_GRACE`] ago and tickets
    /// expired more than [`TICKET_GRACE`] ago. Returns how many of each.
    ///
    /// # Errors
    /// On a database failure.
    pub fn sweep(&self, now: i64) -> Result<(usize, usize), StoreError> {
        let conn = self.conn();
        let states = conn
            .prepare_cached("DELETE FROM oauth_states WHERE expires_at < ?1")?
            .execute(params![now - STATE_GRACE])?;
        let tickets = conn
            .prepare_cached("DELETE FROM oauth_tickets WHERE expires_at < ?1")?
            .execute(params![now - TICKET_GRACE])?;
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok((states, tickets))
    }

    /// Looks a state up without using it.
    ///
    /// # Errors
    /// On a database failure.
    pub fn peek_state(&self, appid: &str, id: &str) -> Result<Option<StateRecord>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT appid, want, stage, return_to, expires_at FROM oauth_states WHERE id = ?1 AND appid = ?2",
            )?
            .query_row(params![id, appid], |r| {
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
        appid: &str,
        id: &str,
        code_hash: Option<&str>,
        now: i64,
    ) -> Result<Consumed, StoreError> {
        let conn = self.conn();
        let changed = conn.prepare_cached("UPDATE oauth_states SET used_at = ?3, code_hash = ?4 WHERE id = ?1 AND appid = ?2 AND used_at IS NULL")?
            .execute(
            params![id, appid, now, code_hash],
        )?;
        let row = conn
            .prepare_cached("SELECT appid, want, stage, return_to, expires_at, used_at, code_hash, result FROM oauth_states WHERE id = ?1 AND appid = ?2")?
            .query_row(
                params![id, appid],
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
            Some((record, _, _, _)) => Consumed::Used(record),
        })
    }

    /// Stores the outcome of a finished authorization on its state, for a
    /// repeated callback.
    ///
    /// # Errors
    /// On a database failure.
    pub fn set_state_result(&self, appid: &str, id: &str, result: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE oauth_states SET result = ?3 WHERE id = ?1 AND appid = ?2")?
            .execute(params![id, appid, result])?;
        Ok(())
    }

    /// The stored outcome of a used state.
    ///
    /// # Errors
    /// On a database failure.
    pub fn state_result(&self, appid: &str, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT result FROM oauth_states WHERE id = ?1 AND appid = ?2")?
            .query_row(params![id, appid], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// Whether a ticket exists, is unused and has not expired.
    ///
    /// # Errors
    /// On a database failure.
    pub fn ticket_live(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT 1 FROM oauth_tickets WHERE hash = ?1 AND used = 0 AND expires_at > ?2",
            )?
            .query_row(params![hash, now], |_| Ok(()))
            .optional()?
            .is_some())
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

    #[cfg(unix)]
    #[test]
    fn the_file_and_its_companions_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wxhub-store-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        {
            let s = SqliteStore::open(&path).expect("open");
            s.bump("wx1", "x", 1).unwrap();
        }
        assert_eq!(mode(&path), 0o600, "created private");
        // Loosened by someone, with stale companions left 0644.
        for p in [path.clone(), dir.join("t.db-wal"), dir.join("t.db-shm")] {
            if !p.exists() {
                std::fs::write(&p, b"").unwrap();
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let s = SqliteStore::open(&path).expect("reopen");
        s.bump("wx1", "x", 1).unwrap();
        for p in [path.clone(), dir.join("t.db-wal"), dir.join("t.db-shm")] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
