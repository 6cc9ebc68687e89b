//! Persistence of credentials and counters, so a restart serves stored
//! tokens at once and fetches nothing.
//!
//! The SQLite connection sits behind a `std::sync::Mutex`: every statement is
//! a single-row upsert or select that takes microseconds, no lock is held
//! across an `.await`, and writes happen only when a credential changes.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

/// A stored credential (access token or ticket).
#[derive(Clone)]
pub struct StoredCredential {
    /// The secret value. Exposed only to be sent on.
    pub value: String,
    /// Unix seconds when the platform will reject it.
    pub expires_at: i64,
    /// Unix seconds when the hub fetched it.
    pub fetched_at: i64,
    /// Unix seconds when the hub first saw this value (tickets repeat).
    pub first_seen: i64,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("fetched_at", &self.fetched_at)
            .finish()
    }
}

/// A storage failure; never contains a credential.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
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
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
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
            .query_row(
                "SELECT value, expires_at, fetched_at, first_seen FROM credentials WHERE appid = ?1 AND kind = ?2",
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
        self.conn().execute(
            "INSERT INTO credentials (appid, kind, value, expires_at, fetched_at, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (appid, kind) DO UPDATE SET value = excluded.value,
               expires_at = excluded.expires_at, fetched_at = excluded.fetched_at,
               first_seen = excluded.first_seen",
            params![
                appid,
                kind,
                c.value,
                c.expires_at,
                c.fetched_at,
                c.first_seen
            ],
        )?;
        Ok(())
    }

    /// Adds one to a per-day counter and returns the new value.
    ///
    /// # Errors
    /// On a database failure.
    pub fn bump(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO counters (appid, name, day, value) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (appid, name, day) DO UPDATE SET value = value + 1",
            params![appid, name, day],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM counters WHERE appid = ?1 AND name = ?2 AND day = ?3",
            params![appid, name, day],
            |r| r.get(0),
        )?)
    }

    /// A per-day counter.
    ///
    /// # Errors
    /// On a database failure.
    pub fn counter(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM counters WHERE appid = ?1 AND name = ?2 AND day = ?3",
                params![appid, name, day],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
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
