//! The embedded SQLite store: credentials, counters, budgets, web
//! authorization's states, tickets and grants, in one file.
//!
//! One thread owns the one connection and runs every statement: it takes
//! whatever has queued up and runs it as a single transaction (group
//! commit), so under load a commit's cost is shared by every request
//! waiting on it, and no tokio worker ever blocks on SQLite. Each operation
//! runs in a savepoint of its own, so one that fails does not undo its
//! neighbours, and its caller hears back only after the commit. The
//! connection holds the file exclusively (`locking_mode = EXCLUSIVE`, WAL
//! without shared memory): no lock is taken per transaction, and a second
//! hub started on the same file is refused rather than racing this one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Consumed, FinishedSignIn, Grant, Record, Redeemed, StateRecord, StoreError, Written};
use super::{STATE_GRACE, TICKET_GRACE};
use super::{Stage, scope_from_name, scope_name};
use crate::budget::{Budget, Decision, Usage, decide};
use crate::credentials::Secret;

/// What a write sees: the batch's transaction, and the writer's own
/// bookkeeping.
struct Batch<'a> {
    tx: &'a Transaction<'a>,
    // States on file per account, counted once from the table and then kept
    // in step with inserts (the writer is the file's only writer); forgotten
    // at every sweep and after a failed commit.
    states: &'a mut HashMap<String, u32>,
}

/// Delivers a write's result once its batch's commit is known.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued write.
trait Write: Send {
    /// Runs in the batch: whether it succeeded, and how to answer once the
    /// commit is known.
    fn run(self: Box<Self>, batch: &mut Batch<'_>) -> (bool, Finish);
    /// Answers without running (no transaction could be opened).
    fn fail(self: Box<Self>, e: StoreError);
}

/// A write and where its caller waits for the answer.
struct Pending<F, T> {
    f: F,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Write for Pending<F, T>
where
    F: FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, batch: &mut Batch<'_>) -> (bool, Finish) {
        let Pending { f, reply } = *self;
        let out = f(batch);
        let ok = out.is_ok();
        (
            ok,
            Box::new(move |committed| {
                let _ = reply.send(committed.and(out));
            }),
        )
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.reply.send(Err(e));
    }
}

type Job = Box<dyn Write>;

/// Writes queued at once are committed together, at most this many.
const MAX_BATCH: usize = 512;

/// The embedded SQLite store.
pub struct SqliteStore {
    jobs: std::sync::mpsc::Sender<Option<Job>>,
    // Taken by `close`: the writer stops once it has run what is queued.
    stop: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // A hub that is stopping still holds the file for a moment.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Before WAL is entered, so the WAL index lives in this process's
    // memory instead of a shared-memory file with its locks.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// The writer thread: waits for a write, takes every other one queued
/// behind it, runs them in one transaction and answers them all.
fn write_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Option<Job>>) {
    let mut states = HashMap::new();
    while let Ok(Some(first)) = jobs.recv() {
        let mut batch = vec![first];
        let mut closing = false;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(Some(job)) => batch.push(job),
                Ok(None) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = StoreError::from(e);
                for job in batch {
                    job.fail(e.clone());
                }
                continue;
            }
        };
        let mut finishers = Vec::with_capacity(batch.len());
        {
            let mut ctx = Batch {
                tx: &tx,
                states: &mut states,
            };
            for job in batch {
                let _ = ctx.tx.execute_batch("SAVEPOINT job");
                let (ok, finish) = job.run(&mut ctx);
                let _ = if ok {
                    ctx.tx.execute_batch("RELEASE job")
                } else {
                    ctx.tx.execute_batch("ROLLBACK TO job; RELEASE job")
                };
                finishers.push(finish);
            }
        }
        let committed = tx.commit().map_err(StoreError::from);
        if committed.is_err() {
            states.clear();
        }
        for finish in finishers {
            finish(committed.clone());
        }
        if closing {
            break;
        }
    }
    // Whatever arrives after the close hears that the store has stopped.
    drop(jobs);
}

/// Every table, created on open if missing.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS credentials (
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
    );";

/// A state record from a row's first five columns: appid, want, stage,
/// return_to, expires_at.
fn state_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<StateRecord> {
    let bad = |column: usize, name: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("state record has a bad `{name}`").into(),
        )
    };
    let (want, stage): (String, String) = (r.get(1)?, r.get(2)?);
    Ok(StateRecord {
        appid: r.get(0)?,
        want: scope_from_name(&want).ok_or_else(|| bad(1, "want"))?,
        stage: Stage::parse(&stage).ok_or_else(|| bad(2, "stage"))?,
        return_to: r.get(3)?,
        expires_at: r.get(4)?,
    })
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
        let conn = connect(path)?;
        // SQLite creates these with the database file's mode, but ones left
        // from an earlier run keep whatever mode they had.
        for suffix in ["-wal", "-shm"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            make_private(Path::new(&companion), false)?;
        }
        conn.execute_batch(SCHEMA)?;
        let (jobs, queue) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wxhub-sqlite".into())
            .spawn(move || write_loop(conn, queue))
            .map_err(|e| StoreError::new(format!("cannot start the store's thread: {e}")))?;
        Ok(SqliteStore {
            jobs,
            stop: Mutex::new(Some(thread)),
        })
    }

    /// Runs what is queued, then closes the file, so another hub can open
    /// it at once. Operations after this fail.
    pub async fn close(&self) {
        let thread = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = self.jobs.send(None);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Runs `f` on the store's thread, in the next batch, and answers once
    /// that batch is committed.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(Pending { f, reply });
        let stopped = || StoreError::new("the store has been closed");
        self.jobs.send(Some(job)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The stored credential `key` of `appid`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn load_credential(
        &self,
        appid: &str,
        key: &str,
    ) -> Result<Option<Record>, StoreError> {
        let (appid, key) = (appid.to_string(), key.to_string());
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT value, expires_at, fetched_at, first_seen FROM credentials WHERE appid = ?1 AND kind = ?2")?
                .query_row(params![appid, key], |r| {
                    Ok(Record {
                        value: Secret::new(r.get::<_, String>(0)?),
                        expires_at: r.get(1)?,
                        fetched_at: r.get(2)?,
                        first_seen: r.get(3)?,
                        fence: 0,
                        seq: 0,
                        refresh_at: 0,
                        pending_since: None,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// Stores (replaces) a credential; the holder is for Redis's fencing
    /// and means nothing here.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn write_credential(
        &self,
        appid: &str,
        key: &str,
        c: &Record,
        holder: &str,
    ) -> Result<Written, StoreError> {
        let _ = holder;
        let (appid, key, c) = (appid.to_string(), key.to_string(), c.clone());
        self.run(move |b| {
            b.tx.prepare_cached(
                "INSERT INTO credentials (appid, kind, value, expires_at, fetched_at, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (appid, kind) DO UPDATE SET value = excluded.value,
                   expires_at = excluded.expires_at, fetched_at = excluded.fetched_at,
                   first_seen = excluded.first_seen",
            )?
            .execute(params![
                appid,
                key,
                c.value.expose_secret(),
                c.expires_at,
                c.fetched_at,
                c.first_seen
            ])?;
            Ok(Written::Stored(0))
        })
        .await
    }

    /// Adds one to a per-day counter and returns the new value.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn bump(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        let (appid, name) = (appid.to_string(), name.to_string());
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached(
                    "INSERT INTO counters (appid, name, day, value) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT (appid, name, day) DO UPDATE SET value = value + 1
                     RETURNING value",
                )?
                .query_row(params![appid, name, day], |r| r.get(0))?)
        })
        .await
    }

    /// A per-day counter.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn counter(&self, appid: &str, name: &str, day: i64) -> Result<i64, StoreError> {
        let (appid, name) = (appid.to_string(), name.to_string());
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached(
                    "SELECT value FROM counters WHERE appid = ?1 AND name = ?2 AND day = ?3",
                )?
                .query_row(params![appid, name, day], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    /// Decides whether a caller-triggered refresh fits the budget of
    /// (`appid`, `scope`), and with `take` records it when it does.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn budget(
        &self,
        appid: &str,
        scope: &str,
        budget: Budget,
        now: i64,
        take: bool,
    ) -> Result<Decision, StoreError> {
        fn used(conn: &Connection, appid: &str, scope: &str) -> Result<Usage, StoreError> {
            Ok(conn
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
                .unwrap_or_default())
        }
        let (appid, scope) = (appid.to_string(), scope.to_string());
        self.run(move |b| {
            let decision = decide(used(b.tx, &appid, &scope)?, budget, now);
            if let (true, Decision::Allowed(u)) = (take, decision) {
                b.tx.prepare_cached(
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
            Ok(decision)
        })
        .await
    }

    /// Records a new pending authorization, unless the account already has
    /// `max_pending` states on file (after sweeping its expired ones):
    /// `Ok(false)` then.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_state(
        &self,
        id: &str,
        r: &StateRecord,
        now: i64,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let (id, r) = (id.to_string(), r.clone());
        self.run(move |b| {
            let count = |tx: &Transaction<'_>| -> Result<u32, StoreError> {
                Ok(tx
                    .prepare_cached("SELECT COUNT(*) FROM oauth_states WHERE appid = ?1")?
                    .query_row(params![r.appid], |row| row.get(0))?)
            };
            let mut n = match b.states.get(&r.appid) {
                Some(n) => *n,
                None => count(b.tx)?,
            };
            if n >= max_pending {
                b.tx.prepare_cached(
                    "DELETE FROM oauth_states WHERE appid = ?1 AND expires_at < ?2",
                )?
                .execute(params![r.appid, now - STATE_GRACE])?;
                n = count(b.tx)?;
                if n >= max_pending {
                    b.states.insert(r.appid.clone(), n);
                    return Ok(false);
                }
            }
            b.tx.prepare_cached("INSERT INTO oauth_states (id, appid, want, stage, return_to, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                .execute(params![id, r.appid, scope_name(r.want), r.stage.as_str(), r.return_to, r.expires_at])?;
            b.states.insert(r.appid.clone(), n + 1);
            Ok(true)
        })
        .await
    }

    /// Deletes states expired more than [`STATE_GRACE`] ago and tickets
    /// expired more than [`TICKET_GRACE`] ago. Returns how many of each.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn sweep(&self, now: i64) -> Result<(usize, usize), StoreError> {
        self.run(move |b| {
            let states =
                b.tx.prepare_cached("DELETE FROM oauth_states WHERE expires_at < ?1")?
                    .execute(params![now - STATE_GRACE])?;
            let tickets =
                b.tx.prepare_cached("DELETE FROM oauth_tickets WHERE expires_at < ?1")?
                    .execute(params![now - TICKET_GRACE])?;
            b.states.clear();
            Ok((states, tickets))
        })
        .await
    }

    /// Looks a state up without using it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn peek_state(
        &self,
        appid: &str,
        id: &str,
    ) -> Result<Option<StateRecord>, StoreError> {
        let (appid, id) = (appid.to_string(), id.to_string());
        self.run(move |b| {
            Ok(b
            .tx
            .prepare_cached(
                "SELECT appid, want, stage, return_to, expires_at FROM oauth_states WHERE id = ?1 AND appid = ?2",
            )?
            .query_row(params![id, appid], state_record)
            .optional()?)
        })
        .await
    }

    /// Uses a state, once. `code_hash` is the hash of the code that came
    /// with it (None for a refusal).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn consume_state(
        &self,
        appid: &str,
        id: &str,
        code_hash: Option<&str>,
        now: i64,
    ) -> Result<Consumed, StoreError> {
        let (appid, id, code_hash) = (
            appid.to_string(),
            id.to_string(),
            code_hash.map(str::to_string),
        );
        self.run(move |b| {
            let changed = b.tx.prepare_cached("UPDATE oauth_states SET used_at = ?3, code_hash = ?4 WHERE id = ?1 AND appid = ?2 AND used_at IS NULL")?
                .execute(params![id, appid, now, code_hash])?;
            let row = b.tx
                .prepare_cached("SELECT appid, want, stage, return_to, expires_at, used_at, code_hash, result FROM oauth_states WHERE id = ?1 AND appid = ?2")?
                .query_row(params![id, appid], |r| {
                    Ok((
                        state_record(r)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })
                .optional()?;
            Ok(match row {
                None => Consumed::Missing,
                Some((record, _, _, _)) if changed == 1 => Consumed::Fresh(record),
                Some((record, Some(used_at), Some(stored), result))
                    if code_hash.as_deref().is_some_and(|c| c == stored) =>
                {
                    Consumed::Again {
                        record,
                        used_at,
                        result,
                    }
                }
                Some((record, _, _, _)) => Consumed::Used(record),
            })
        })
        .await
    }

    /// Stores the outcome of a finished authorization on its state, for a
    /// repeated callback.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn set_state_result(
        &self,
        appid: &str,
        id: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        let (appid, id, result) = (appid.to_string(), id.to_string(), result.to_string());
        self.run(move |b| {
            b.tx.prepare_cached(
                "UPDATE oauth_states SET result = ?3 WHERE id = ?1 AND appid = ?2",
            )?
            .execute(params![id, appid, result])?;
            Ok(())
        })
        .await
    }

    /// The stored outcome of a used state.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn state_result(&self, appid: &str, id: &str) -> Result<Option<String>, StoreError> {
        let (appid, id) = (appid.to_string(), id.to_string());
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT result FROM oauth_states WHERE id = ?1 AND appid = ?2")?
                .query_row(params![id, appid], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten())
        })
        .await
    }

    /// Whether a ticket exists, is unused and has not expired.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn ticket_live(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached(
                    "SELECT 1 FROM oauth_tickets WHERE hash = ?1 AND used = 0 AND expires_at > ?2",
                )?
                .query_row(params![hash, now], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    /// The account of an unused, unexpired ticket.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn ticket_appid(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT appid FROM oauth_tickets WHERE hash = ?1 AND used = 0")?
                .query_row(params![hash], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Stores a hand-over ticket by its hash.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_ticket(
        &self,
        hash: &str,
        appid: &str,
        payload: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let _ = now;
        let (hash, appid, payload) = (hash.to_string(), appid.to_string(), payload.to_string());
        self.run(move |b| {
            b.tx.prepare_cached(
                "INSERT INTO oauth_tickets (hash, appid, payload, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash, appid, payload, expires_at])?;
            Ok(())
        })
        .await
    }

    /// Redeems a ticket once: (appid, payload) if it exists, is unused and unexpired.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn redeem_ticket(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("UPDATE oauth_tickets SET used = 1 WHERE hash = ?1 AND used = 0 AND expires_at > ?2 RETURNING appid, payload")?
                .query_row(params![hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
        .await
    }

    /// Stores (replaces) a grant.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let g = g.clone();
        self.run(move |b| {
            b.tx.prepare_cached("INSERT INTO grants (appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (appid, openid) DO UPDATE SET unionid = excluded.unionid, scope = excluded.scope,
                   snapshot = excluded.snapshot, access_token = excluded.access_token,
                   access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
                   refresh_expires_at = excluded.refresh_expires_at, profile = excluded.profile,
                   profile_fetched_at = excluded.profile_fetched_at")?
                .execute(params![
                    g.appid, g.openid, g.unionid, g.scope, g.snapshot, g.access_token, g.access_expires_at,
                    g.refresh_token, g.refresh_expires_at, g.profile, g.profile_fetched_at
                ])?;
            Ok(())
        })
        .await
    }

    /// Stores a base-scope grant unless a userinfo grant whose refresh token
    /// is alive at `now` is on file.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_base_grant(&self, g: &Grant, now: i64) -> Result<(), StoreError> {
        let g = g.clone();
        self.run(move |b| upsert_base_grant(b.tx, &g, now)).await
    }

    /// Stores a finished sign-in in one write.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn finish_sign_in(&self, f: &FinishedSignIn<'_>) -> Result<(), StoreError> {
        let (appid, id, hash, payload, outcome) = (
            f.appid.to_string(),
            f.state_id.to_string(),
            f.ticket_hash.to_string(),
            f.payload.to_string(),
            f.outcome.to_string(),
        );
        let (expires_at, now, grant) = (f.ticket_expires_at, f.now, f.base_grant.cloned());
        self.run(move |b| {
            if let Some(g) = &grant {
                upsert_base_grant(b.tx, g, now)?;
            }
            b.tx.prepare_cached(
                "INSERT INTO oauth_tickets (hash, appid, payload, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash, appid, payload, expires_at])?;
            b.tx.prepare_cached("UPDATE oauth_states SET result = ?3 WHERE id = ?1 AND appid = ?2")?
                .execute(params![id, appid, outcome])?;
            Ok(())
        })
        .await
    }

    /// Redeems a ticket once if `allowed` accepts its account.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn redeem_ticket_for(
        &self,
        hash: &str,
        now: i64,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Redeemed, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            let appid: Option<String> = b
                .tx
                .prepare_cached("SELECT appid FROM oauth_tickets WHERE hash = ?1 AND used = 0 AND expires_at > ?2")?
                .query_row(params![hash, now], |r| r.get(0))
                .optional()?;
            let Some(appid) = appid else {
                return Ok(Redeemed::Missing);
            };
            if !allowed(&appid) {
                return Ok(Redeemed::Forbidden(appid));
            }
            let payload: String = b
                .tx
                .prepare_cached("UPDATE oauth_tickets SET used = 1 WHERE hash = ?1 RETURNING payload")?
                .query_row(params![hash], |r| r.get(0))?;
            Ok(Redeemed::Done(appid, payload))
        })
        .await
    }

    /// A person's grant to an account.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn load_grant(&self, appid: &str, openid: &str) -> Result<Option<Grant>, StoreError> {
        let (appid, openid) = (appid.to_string(), openid.to_string());
        self.run(move |b| {
            Ok(b
            .tx
            .prepare_cached("SELECT appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at
                 FROM grants WHERE appid = ?1 AND openid = ?2")?
            .query_row(params![appid, openid], |r| {
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
            })
            .optional()?)
        })
        .await
    }

    /// Forgets a grant (expired or revoked).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delete_grant(&self, appid: &str, openid: &str) -> Result<(), StoreError> {
        let (appid, openid) = (appid.to_string(), openid.to_string());
        self.run(move |b| {
            b.tx.prepare_cached("DELETE FROM grants WHERE appid = ?1 AND openid = ?2")?
                .execute(params![appid, openid])?;
            Ok(())
        })
        .await
    }
}

/// The grant, unless a userinfo grant whose refresh token is alive at `now`
/// is on file.
fn upsert_base_grant(tx: &Transaction<'_>, g: &Grant, now: i64) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO grants (appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (appid, openid) DO UPDATE SET unionid = excluded.unionid, scope = excluded.scope,
           snapshot = excluded.snapshot, access_token = excluded.access_token,
           access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
           refresh_expires_at = excluded.refresh_expires_at, profile = excluded.profile,
           profile_fetched_at = excluded.profile_fetched_at
         WHERE NOT (grants.scope != 'snsapi_base' AND grants.refresh_expires_at > ?12)")?
        .execute(params![
            g.appid, g.openid, g.unionid, g.scope, g.snapshot, g.access_token, g.access_expires_at,
            g.refresh_token, g.refresh_expires_at, g.profile, g.profile_fetched_at, now
        ])?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_and_counters_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("wxhub-store-{}", std::process::id()));
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        {
            let s = SqliteStore::open(&path).expect("open");
            let c = Record {
                value: Secret::new("tok"),
                expires_at: 10,
                fetched_at: 1,
                first_seen: 1,
                fence: 0,
                seq: 0,
                refresh_at: 0,
                pending_since: None,
            };
            s.write_credential("wx1", "access_token:stable", &c, "-")
                .await
                .expect("save");
            assert_eq!(s.bump("wx1", "fetches", 5).await.expect("bump"), 1);
            assert_eq!(s.bump("wx1", "fetches", 5).await.expect("bump"), 2);
        }
        let s = SqliteStore::open(&path).expect("reopen");
        let c = s
            .load_credential("wx1", "access_token:stable")
            .await
            .expect("load")
            .expect("present");
        assert_eq!((c.value.expose_secret(), c.expires_at), ("tok", 10));
        assert!(!format!("{c:?}").contains("tok"));
        assert_eq!(s.counter("wx1", "fetches", 5).await.expect("counter"), 2);
        assert!(
            s.load_credential("wx1", "access_token:classic")
                .await
                .expect("load")
                .is_none()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// States already on file were written with these names; a name this
    /// hub does not know is a store error, not a guess.
    #[tokio::test]
    async fn states_keep_their_stored_names() {
        use wx_api::oauth::Scope;
        let stages: Vec<_> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(stages, ["probe", "consent", "base", "login"]);
        let scopes = [Scope::SnsapiBase, Scope::SnsapiUserinfo, Scope::SnsapiLogin];
        let names: Vec<_> = scopes.iter().map(|s| scope_name(*s)).collect();
        assert_eq!(names, ["base", "userinfo", "login"]);
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
        for s in scopes {
            assert_eq!(scope_from_name(scope_name(s)), Some(s));
        }
        assert_eq!(scope_from_name("snsapi_base"), None);

        let dir = std::env::temp_dir().join(format!("wxhub-store-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.db");
        let s = SqliteStore::open(&path).expect("open");
        let r = StateRecord {
            appid: "wx1".into(),
            want: Scope::SnsapiUserinfo,
            stage: Stage::Probe,
            return_to: "https://x/".into(),
            expires_at: 100,
        };
        assert!(s.save_state("s1", &r, 0, 10).await.unwrap());
        let back = s.peek_state("wx1", "s1").await.unwrap().expect("saved");
        assert_eq!((back.want, back.stage), (r.want, r.stage));
        s.close().await;
        let db = Connection::open(&path).unwrap();
        let stored: (String, String) = db
            .query_row(
                "SELECT want, stage FROM oauth_states WHERE id = 's1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (stored.0.as_str(), stored.1.as_str()),
            ("userinfo", "probe")
        );
        db.execute(
            "UPDATE oauth_states SET stage = 'later' WHERE id = 's1'",
            [],
        )
        .unwrap();
        drop(db);
        let s = SqliteStore::open(&path).expect("reopen");
        let e = s.peek_state("wx1", "s1").await.unwrap_err();
        assert!(e.to_string().contains("`stage`"), "{e}");
        s.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_file_and_its_companions_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wxhub-store-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        {
            let s = SqliteStore::open(&path).expect("open");
            s.bump("wx1", "x", 1).await.unwrap();
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
        s.bump("wx1", "x", 1).await.unwrap();
        for p in [path.clone(), dir.join("t.db-wal"), dir.join("t.db-shm")] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Writes queued together share a commit; one that fails leaves the
    /// others in place and hears its own error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_committed_together_and_fail_alone() {
        let dir = std::env::temp_dir().join(format!("wxhub-store-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = std::sync::Arc::new(SqliteStore::open(&dir.join("t.db")).expect("open"));
        let state = |appid: &str| StateRecord {
            appid: appid.into(),
            want: wx_api::oauth::Scope::SnsapiBase,
            stage: Stage::Base,
            return_to: "https://x/".into(),
            expires_at: 100,
        };
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            let r = state("wx1");
            tasks.push(tokio::spawn(async move {
                // Ids repeat: every tenth insert hits the primary key.
                let id = if i % 10 == 0 {
                    "dup".to_string()
                } else {
                    format!("s{i}")
                };
                s.save_state(&id, &r, 0, 1000).await
            }));
        }
        let mut saved = 0;
        let mut failed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(true) => saved += 1,
                Ok(false) => panic!("cap not reached"),
                Err(_) => failed += 1,
            }
        }
        assert_eq!(
            (saved, failed),
            (181, 19),
            "one dup saved, the other 19 refused"
        );
        assert!(s.peek_state("wx1", "s1").await.unwrap().is_some());
        assert!(s.peek_state("wx1", "dup").await.unwrap().is_some());
        // The writer's count kept step: 181 on file, cap 181 refuses the next.
        assert!(!s.save_state("x", &state("wx1"), 0, 181).await.unwrap());
        assert!(s.save_state("x", &state("wx1"), 0, 182).await.unwrap());
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
