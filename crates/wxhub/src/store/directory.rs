//! Accounts and clients changed at run time, and the audit log of every
//! change. The configuration file is the starting set; the store holds what
//! the admin API changed since: a whole definition, a change to a file
//! entry's fields, or a removal.
//!
//! SQLite: tables `directory` and `audit`. Redis (shared mode):
//!
//! | Key | Type | What |
//! |---|---|---|
//! | `dir:account`, `dir:client` | hash | name → stored body |
//! | `dir:log` | stream (capped) | one entry per change: section and name; the other instances read it to apply the change |
//! | `audit` | list (capped) | the audit entries, newest first |
//! | `audit:id` | counter | the audit entries' ids |

use redis::AsyncCommands;
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::redis_store::RedisStore;
use super::sqlite::SqliteStore;

// The id and the entry in one step, so the list stays in id order across
// instances. KEYS: list, id counter. ARGV: the entry with `"id":0`, last
// index kept.
static AUDIT_PUSH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local id = redis.call('INCR', KEYS[2])
local body = string.gsub(ARGV[1], '"id":0', '"id":' .. id, 1)
redis.call('LPUSH', KEYS[1], body)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]))
"#,
    )
});

// A directory write, if the entry is still what the admin change read:
// two changes made at once on two instances must not silently undo each
// other. KEYS: the section's hash, the change log. ARGV: name, whether an
// entry was read (1/0), what was read, whether to store (1) or delete (0),
// the body, the section, the log's length.
static DIR_SET: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local now = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if now ~= ARGV[3] then return 0 end
elseif now then
  return 0
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 's', ARGV[6], 'n', ARGV[1])
return 1
",
    )
});

/// Changes the other instances can catch up on by reading the log; one that
/// falls further behind reads everything again.
const LOG_LEN: usize = 10_000;
/// Audit entries kept.
pub const AUDIT_KEEP: i64 = 100_000;

/// Which kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// A WeChat account, by AppID.
    Account,
    /// A business server's client, by name.
    Client,
}

impl Section {
    /// `account` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Account => "account",
            Section::Client => "client",
        }
    }

    fn parse(s: &str) -> Option<Section> {
        match s {
            "account" => Some(Section::Account),
            "client" => Some(Section::Client),
            _ => None,
        }
    }
}

/// A stored entry. The body is what [`crate::directory`] wrote (sealed
/// when it holds a secret); the store does not look inside.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Account or client.
    pub section: Section,
    /// AppID or client name.
    pub name: String,
    /// The stored body.
    pub body: String,
}

/// Everything stored, and where the change log stood when it was read.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every entry.
    pub entries: Vec<Entry>,
    /// The log position to read changes after.
    pub cursor: String,
}

/// What the change log says since a position.
#[derive(Debug)]
pub enum Changes {
    /// These entries changed (read each again); the new position.
    Some(Vec<(Section, String)>, String),
    /// The log no longer reaches back that far: read everything again.
    Gap,
}

/// One audited change.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Increasing id (0 until stored).
    pub id: u64,
    /// When (Unix seconds).
    pub at: i64,
    /// Who: `admin`, with the name the caller gave, and its address.
    pub actor: String,
    /// `account.create`, `account.replace`, `account.change`,
    /// `account.remove`, `client.create`, `client.revoke`.
    pub action: String,
    /// The AppID or client name.
    pub target: String,
    /// The fields given, by name (a secret's name, never its value).
    pub fields: Vec<String>,
}

impl SqliteStore {
    /// Every stored entry.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn dir_all(&self) -> Result<Snapshot, StoreError> {
        self.run(|b| {
            let mut st =
                b.tx.prepare_cached("SELECT section, name, body FROM directory")?;
            let entries = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })?
                .filter_map(|r| match r {
                    Ok((s, name, body)) => Section::parse(&s).map(|section| {
                        Ok(Entry {
                            section,
                            name,
                            body,
                        })
                    }),
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Snapshot {
                entries,
                cursor: String::new(),
            })
        })
        .await
    }

    /// One stored entry.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn dir_get(
        &self,
        section: Section,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let name = name.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT body FROM directory WHERE section = ?1 AND name = ?2")?
                .query_row(params![section.as_str(), name], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Stores (replaces) an entry, or deletes it (`None`), if it still is
    /// `expect` (`None`: absent); false, writing nothing, if not.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn dir_set(
        &self,
        section: Section,
        name: &str,
        expect: Option<&str>,
        body: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (name, expect, body) = (
            name.to_string(),
            expect.map(str::to_string),
            body.map(str::to_string),
        );
        self.run(move |b| {
            let now: Option<String> =
                b.tx.prepare_cached("SELECT body FROM directory WHERE section = ?1 AND name = ?2")?
                    .query_row(params![section.as_str(), name], |r| r.get(0))
                    .optional()?;
            if now != expect {
                return Ok(false);
            }
            match body {
                Some(body) => {
                    b.tx.prepare_cached(
                        "INSERT INTO directory (section, name, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (section, name) DO UPDATE SET body = excluded.body",
                    )?
                    .execute(params![section.as_str(), name, body])?
                }
                None => {
                    b.tx.prepare_cached("DELETE FROM directory WHERE section = ?1 AND name = ?2")?
                        .execute(params![section.as_str(), name])?
                }
            };
            Ok(true)
        })
        .await
    }

    /// One instance reads no log: its own changes apply where they are made.
    pub async fn dir_changes(&self, since: &str) -> Result<Changes, StoreError> {
        Ok(Changes::Some(Vec::new(), since.to_string()))
    }

    /// Forgets an account's stored credentials.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn forget_credentials(
        &self,
        appid: &str,
        _keys: Vec<String>,
    ) -> Result<(), StoreError> {
        let appid = appid.to_string();
        self.run(move |b| {
            b.tx.prepare_cached("DELETE FROM credentials WHERE appid = ?1")?
                .execute(params![appid])?;
            Ok(())
        })
        .await
    }

    /// Appends an audit entry, keeping the last [`AUDIT_KEEP`].
    ///
    /// # Errors
    /// On a database failure.
    pub async fn audit_append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.run(move |b| {
            b.tx.prepare_cached(
                "INSERT INTO audit (at, actor, action, target, fields) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                e.at,
                e.actor,
                e.action,
                e.target,
                e.fields.join(",")
            ])?;
            let id = b.tx.last_insert_rowid();
            b.tx.prepare_cached("DELETE FROM audit WHERE id <= ?1")?
                .execute(params![id - AUDIT_KEEP])?;
            Ok(())
        })
        .await
    }

    /// The newest audit entries, before id `before` when given.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn audit_list(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.run(move |b| {
            let before = before.map_or(i64::MAX, |b| b as i64);
            let mut st = b.tx.prepare_cached(
                "SELECT id, at, actor, action, target, fields FROM audit WHERE id < ?1
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![before, limit as i64], |r| {
                let fields: String = r.get(5)?;
                Ok(AuditEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    fields: fields
                        .split(',')
                        .filter(|f| !f.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// The SQLite tables.
pub(super) const DIRECTORY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS directory (
        section TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (section, name)
    );
    CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        fields TEXT NOT NULL
    );";

impl RedisStore {
    fn dir_key(&self, section: Section) -> String {
        self.key(&format!("dir:{}", section.as_str()))
    }

    /// Every stored entry, and the log's position before they were read
    /// (changes made meanwhile are read again from the log: applying an
    /// entry twice does no harm).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn dir_all(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.conn();
        let last: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.key("dir:log"), "+", "-", 1)
            .await?;
        let cursor = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_string(), |e| e.id.clone());
        let mut entries = Vec::new();
        for section in [Section::Account, Section::Client] {
            let all: Vec<(String, String)> = conn.hgetall(self.dir_key(section)).await?;
            entries.extend(all.into_iter().map(|(name, body)| Entry {
                section,
                name,
                body,
            }));
        }
        Ok(Snapshot { entries, cursor })
    }

    /// One stored entry.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn dir_get(
        &self,
        section: Section,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.conn().hget(self.dir_key(section), name).await?)
    }

    /// Stores (replaces) or deletes an entry if it still is `expect`
    /// (`None`: absent), and logs the change for the other instances, in
    /// one script; false, writing nothing, if another instance changed it
    /// since it was read.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn dir_set(
        &self,
        section: Section,
        name: &str,
        expect: Option<&str>,
        body: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done: i64 = DIR_SET
            .key(self.dir_key(section))
            .key(self.key("dir:log"))
            .arg(name)
            .arg(if expect.is_some() { "1" } else { "0" })
            .arg(expect.unwrap_or(""))
            .arg(if body.is_some() { "1" } else { "0" })
            .arg(body.unwrap_or(""))
            .arg(section.as_str())
            .arg(LOG_LEN)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    /// The changes logged after `since`.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn dir_changes(&self, since: &str) -> Result<Changes, StoreError> {
        let key = self.key("dir:log");
        let (first, after): (
            redis::streams::StreamRangeReply,
            redis::streams::StreamRangeReply,
        ) = redis::pipe()
            .xrange_count(&key, "-", "+", 1)
            .xrange_count(&key, format!("({since}"), "+", 1000)
            .query_async(&mut self.conn())
            .await?;
        if let Some(oldest) = first.ids.first()
            && since != "0-0"
            && stream_id_after(&oldest.id, since)
        {
            // What we last read was trimmed, and perhaps entries after it:
            // what happened in between is unknown.
            return Ok(Changes::Gap);
        }
        let mut out = Vec::with_capacity(after.ids.len());
        let mut cursor = since.to_string();
        for e in after.ids {
            let section = e.get::<String>("s").and_then(|s| Section::parse(&s));
            if let (Some(section), Some(name)) = (section, e.get::<String>("n")) {
                out.push((section, name));
            }
            cursor = e.id;
        }
        Ok(Changes::Some(out, cursor))
    }

    /// Forgets an account's stored credentials (`keys`: their store keys).
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn forget_credentials(
        &self,
        appid: &str,
        keys: Vec<String>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| self.app_key(appid, &format!("cred:{k}")))
            .collect();
        if !keys.is_empty() {
            self.conn().del::<_, ()>(keys).await?;
        }
        Ok(())
    }

    /// Appends an audit entry, keeping the last [`AUDIT_KEEP`].
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn audit_append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let mut e = e.clone();
        e.id = 0;
        let body = serde_json::to_string(&e).map_err(|e| StoreError::new(e.to_string()))?;
        AUDIT_PUSH
            .key(self.key("audit"))
            .key(self.key("audit:id"))
            .arg(body)
            .arg(AUDIT_KEEP - 1)
            .invoke_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The newest audit entries, before id `before` when given.
    ///
    /// # Errors
    /// On a Redis failure.
    pub async fn audit_list(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // Newest first; ids fall by one per entry, so `before` is an offset.
        let start = match before {
            Some(b) => {
                let newest: Option<u64> = self.conn().get(self.key("audit:id")).await?;
                newest.unwrap_or(0).saturating_sub(b.saturating_sub(1))
            }
            None => 0,
        };
        let raw: Vec<String> = self
            .conn()
            .lrange(
                self.key("audit"),
                start as isize,
                (start as usize + limit) as isize - 1,
            )
            .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }
}

/// Whether stream id `a` comes after `b` (`ms-seq`).
fn stream_id_after(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(super::stream_id_after("2-0", "1-5"));
        assert!(super::stream_id_after("1-6", "1-5"));
        assert!(!super::stream_id_after("1-5", "1-5"));
        assert!(!super::stream_id_after("0-9", "1-0"));
    }
}
