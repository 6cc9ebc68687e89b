//! The embedded SQLite store: credentials, counters, budgets, web
//! authorization's states, tickets and grants, in one file.
//!
//! One thread owns the one connection and runs every statement: it takes
//! whatever has queued up and runs it as a single transaction (group
//! commit), so under load a commit's cost is shared by every request
//! waiting on it, and no tokio worker ever blocks on SQLite. Each operation
//! runs in a savepoint of its own, so one that fails does not undo its
//! neighbours, and its caller hears back only after the commit. The
//! hub holds the file with a lock of its own for as long as it runs, so a
//! second hub started on the same file is refused rather than racing this
//! one. Checkpoints (the WAL copied into the file, two fsyncs) run on a
//! thread and connection of their own, so no commit waits for a disk flush.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Record, StoreError, Written, credential_aad};
use crate::budget::{Budget, Decision, Usage, decide};
use crate::credentials::Secret;
use crate::seal::{Found, PREFIX, Plan, Resealed, SealError, Sealer, aad, key_id_of};

/// What a write sees: the batch's transaction, and the writer's own
/// bookkeeping.
pub(super) struct Batch<'a> {
    pub(super) tx: &'a Transaction<'a>,
    // States on file per account, counted once from the table and then kept
    // in step with inserts (the writer is the file's only writer); forgotten
    // at every sweep and after a failed commit.
    pub(super) states: &'a mut HashMap<String, u32>,
    // Push queue entries per `appid\0subscriber`, kept like `states`: a
    // push checks its subscribers' bound without counting rows.
    pub(super) queued: &'a mut HashMap<String, u64>,
    // Each push subscriber's cursor and what was handed out past it.
    pub(super) lanes: &'a mut HashMap<String, super::push_sqlite::LaneCursor>,
}

/// Delivers a write's result once its batch's commit is known.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued write.
trait Write: Send {
    /// Runs in the batch: whether it succeeded, and how to answer once the
    /// commit is known.
    fn run(self: Box<Self>, batch: &mut Batch<'_>) -> (bool, Finish);
    /// Whether it needs a savepoint of its own: not when it makes at most
    /// one change, in one statement, which SQLite undoes by itself if it
    /// fails (a savepoint copies every page the write touches, a fifth of
    /// the writer's time per push before).
    fn savepoint(&self) -> bool;
    /// Answers without running (no transaction could be opened).
    fn fail(self: Box<Self>, e: StoreError);
}

/// A write and where its caller waits for the answer.
struct Pending<F, T> {
    f: F,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    savepoint: bool,
}

impl<F, T> Write for Pending<F, T>
where
    F: FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, batch: &mut Batch<'_>) -> (bool, Finish) {
        let Pending { f, reply, .. } = *self;
        let out = f(batch);
        let ok = out.is_ok();
        (
            ok,
            Box::new(move |committed| {
                let _ = reply.send(committed.and(out));
            }),
        )
    }

    fn savepoint(&self) -> bool {
        self.savepoint
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.reply.send(Err(e));
    }
}

type Job = Box<dyn Write>;

/// Writes queued at once are committed together, at most this many.
const MAX_BATCH: usize = 512;

/// Under load (the last batch had company) a batch smaller than this waits
/// [`GROUP_WAIT`] once for more: a commit writes the same few pages for
/// one push or for twenty, and without the wait batches averaged four.
const GROUP: usize = 16;
const GROUP_WAIT: std::time::Duration = std::time::Duration::from_micros(100);

/// The embedded SQLite store.
pub struct SqliteStore {
    jobs: std::sync::mpsc::Sender<Option<Job>>,
    // Taken by `close`: the writer stops once it has run what is queued.
    stop: Mutex<Option<std::thread::JoinHandle<()>>>,
    sealer: Arc<Sealer>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

/// How long a hub waits for the file's lock: a hub that is stopping still
/// holds it for a moment.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the hub's lock on the database file (`flock`, released by the
/// kernel when the process dies), waiting up to [`LOCK_WAIT`] for a hub
/// that is stopping. The file is kept open until every connection to it is
/// closed: closing a descriptor of the file drops the process's `fcntl`
/// locks on it, which are SQLite's.
fn lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::new(format!("{}: {e}", path.display())))?;
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::new(format!(
                    "store.path {}: in use by another hub (its lock was not released within {} s)",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::new(format!(
                    "store.path {}: cannot lock: {e}",
                    path.display()
                )));
            }
        }
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(LOCK_WAIT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // What a write replaces or deletes (a plaintext token, a value under a
    // retired key) is overwritten with zeros rather than left on a free page.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // Every write runs in a savepoint, whose journal (the pages as they were
    // before it) went to a temporary file: a 4 KiB write per page and write,
    // six times the WAL's own under push load, and copies of pages (tokens
    // among them) in a file other than the 0600 one. In memory it is a
    // copy, freed at the savepoint's release.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB of pages instead of 2: under push load the writer re-read
    // recent index pages and the messages being delivered from the OS
    // (pread and the page cache's copies stood out in its profile).
    conn.pragma_update(None, "cache_size", -16_384)?;
    // Checkpoints are the checkpointer's (see [`checkpoint_loop`]). The
    // writer runs one itself only when the WAL has grown to 16384 pages
    // (64 MiB), which sustained writes can outrun the checkpointer to: the
    // WAL only starts over once a checkpoint has copied all of it. Inline,
    // a checkpoint stalled every push waiting on the writer for its fsyncs
    // (6 % of a push benchmark's time, both cores idle).
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    // A WAL a burst grew is cut back to 16 MiB when it starts over.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    Ok(conn)
}

/// How often the checkpointer copies what the WAL has gained into the file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The checkpointer's thread: every [`CHECKPOINT_EVERY`] a passive
/// checkpoint on its own connection, which never blocks the writer (and
/// costs a few shared-memory reads when the WAL has nothing new). Stops
/// when `stop` says so or is dropped.
fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        // A busy checkpoint (the writer's own is running) says so in its
        // row, not as an error: the next one picks up what it left.
        if let Err(e) = checkpoint(&conn, "PASSIVE") {
            tracing::warn!(error = %e, "store checkpoint failed; the writer checkpoints at 64 MiB of WAL");
        }
    }
}

/// Runs a checkpoint in `mode`; true when it copied the whole WAL (SQLite
/// reports a checkpoint it could not finish in its result row, not as an
/// error).
fn checkpoint(conn: &Connection, mode: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(r.get::<_, i64>(0)? == 0 && r.get::<_, i64>(1)? == r.get::<_, i64>(2)?)
    })
}

/// Starts the checkpointer on a connection of its own.
fn start_checkpointer(
    path: &Path,
) -> Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>), StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(LOCK_WAIT)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let (stop, stopped) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("wxhub-checkpoint".into())
        .spawn(move || checkpoint_loop(conn, stopped))
        .map_err(|e| StoreError::new(format!("cannot start the store's checkpointer: {e}")))?;
    Ok((stop, thread))
}

/// Takes what is queued into `batch`, up to [`MAX_BATCH`]; true when the
/// store is closing.
fn take_queued(jobs: &std::sync::mpsc::Receiver<Option<Job>>, batch: &mut Vec<Job>) -> bool {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(Some(job)) => batch.push(job),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// The writer thread: waits for a write, takes every other one queued
/// behind it, runs them in one transaction and answers them all.
fn write_loop(mut held: Held, jobs: std::sync::mpsc::Receiver<Option<Job>>) {
    let conn = &mut held.conn;
    let mut states = HashMap::new();
    let mut queued = HashMap::new();
    let mut lanes: HashMap<String, super::push_sqlite::LaneCursor> = HashMap::new();
    let mut last_len = 0;
    while let Ok(Some(first)) = jobs.recv() {
        let mut batch = vec![first];
        let mut closing = take_queued(&jobs, &mut batch);
        // Alone (the last batch was one write too): no wait at all. A
        // sleeping writer is not woken by each send, as one blocked in
        // `recv` would be (a futex wake per push, a sixth of the handler).
        if !closing && last_len > 1 && batch.len() < GROUP {
            std::thread::sleep(GROUP_WAIT);
            closing = take_queued(&jobs, &mut batch);
        }
        last_len = batch.len();
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
                queued: &mut queued,
                lanes: &mut lanes,
            };
            // Cached statements: parsing these three per write was a
            // measurable share of the writer's time under load.
            let step = |sql: &str| {
                let _ = tx.prepare_cached(sql).and_then(|mut s| s.execute([]));
            };
            for job in batch {
                if !job.savepoint() {
                    finishers.push(job.run(&mut ctx).1);
                    continue;
                }
                step("SAVEPOINT job");
                let (ok, finish) = job.run(&mut ctx);
                if !ok {
                    step("ROLLBACK TO job");
                }
                step("RELEASE job");
                finishers.push(finish);
            }
        }
        let committed = tx.commit().map_err(StoreError::from);
        if committed.is_err() {
            states.clear();
            queued.clear();
            lanes
                .values_mut()
                .for_each(super::push_sqlite::LaneCursor::forget);
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

/// What the writer holds, released in order however it stops (a close, a
/// panic, a thread that never started): the checkpointer (stopped and
/// joined in `drop`), then, as fields drop in declaration order, the
/// writer's connection, then the file's lock, whose descriptor must
/// outlive the connections (closing it drops the process's `fcntl` locks
/// on the file, SQLite's).
struct Held {
    checkpointer: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    conn: Connection,
    // Held for its drop: the flock goes with the descriptor.
    _lock: std::fs::File,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
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
    CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS counters (
        appid TEXT NOT NULL,
        name TEXT NOT NULL,
        day INTEGER NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (appid, name, day)
    );";

impl SqliteStore {
    /// Opens (creating if needed) the database file. The file and its
    /// `-wal` and `-shm` companions hold live tokens, so they are made
    /// readable by their owner only (0600), whatever they were before; a
    /// file whose mode cannot be fixed is refused.
    ///
    /// # Errors
    /// If the file cannot be opened, made private or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_sealed(path, Arc::new(Sealer::plaintext()))
    }

    /// Opens the file as [`SqliteStore::open`], sealing what it writes with
    /// `sealer`. Before anything else, checks the file's key check record
    /// and, when a key is configured, re-seals in one transaction every
    /// plaintext value and every value under the previous key (see
    /// [`crate::seal`]).
    ///
    /// # Errors
    /// As [`SqliteStore::open`]; and if the file holds values sealed under a
    /// key that is not configured, or sealed values and no key is.
    pub fn open_sealed(path: &Path, sealer: Arc<Sealer>) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new(format!("{}: {e}", dir.display())))?;
        }
        make_private(path, true)?;
        let lock = lock_file(path)?;
        let conn = connect(path)?;
        // SQLite creates these with the database file's mode, but ones left
        // from an earlier run keep whatever mode they had.
        for suffix in ["-wal", "-shm"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            make_private(Path::new(&companion), false)?;
        }
        conn.execute_batch(SCHEMA)?;
        let mut conn = conn;
        super::push_sqlite::open_push(&mut conn)?;
        conn.execute_batch(super::directory::DIRECTORY_SCHEMA)?;
        conn.execute_batch(super::history_store::HISTORY_SCHEMA)?;
        prepare_keys(&mut conn, &sealer)?;
        let mut held = Held {
            checkpointer: None,
            conn,
            _lock: lock,
        };
        held.checkpointer = Some(start_checkpointer(path)?);
        let (jobs, queue) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wxhub-sqlite".into())
            .spawn(move || write_loop(held, queue))
            .map_err(|e| StoreError::new(format!("cannot start the store's thread: {e}")))?;
        Ok(SqliteStore {
            jobs,
            stop: Mutex::new(Some(thread)),
            sealer,
        })
    }

    /// The sealer of this file's values.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
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

    /// Shared mode's fetch marks mean nothing with one instance: always
    /// go ahead.
    pub async fn begin_fetch(
        &self,
        _appid: &str,
        _key: &str,
        _holder: &str,
        _now: i64,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// See [`SqliteStore::begin_fetch`].
    pub async fn end_fetch(
        &self,
        _appid: &str,
        _key: &str,
        _holder: &str,
        _started: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// See [`SqliteStore::begin_fetch`].
    pub async fn mark_minted(
        &self,
        _appid: &str,
        _key: &str,
        _started: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Runs `f` on the store's thread, in the next batch, and answers once
    /// that batch is committed.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue(f, true).await
    }

    /// As [`SqliteStore::run`], for `f` that only reads, or makes one
    /// change in one statement: no savepoint around it.
    pub(super) async fn run_single<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue(f, false).await
    }

    async fn queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
        savepoint: bool,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(Pending {
            f,
            reply,
            savepoint,
        });
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
        let aad = credential_aad(appid, key);
        let (appid, key) = (appid.to_string(), key.to_string());
        let record = self.run(move |b| {
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
        .await?;
        record
            .map(|mut r| {
                let opened = self.sealer.open(&aad, r.value.expose_secret())?;
                r.value = Secret::new(opened.value);
                Ok(r)
            })
            .transpose()
    }

    /// Stores (replaces) a credential; the holder is for Redis's fencing
    /// and means nothing here.
    ///
    /// # Errors
    /// On a database failure.
    /// The newest-wins write (a verify ticket): lands only if `fetched_at`
    /// is newer than the stored one's.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn write_newest(
        &self,
        appid: &str,
        key: &str,
        c: &Record,
    ) -> Result<bool, StoreError> {
        let value = self
            .sealer
            .seal(&credential_aad(appid, key), c.value.expose_secret());
        let (appid, key, c) = (appid.to_string(), key.to_string(), c.clone());
        self.run(move |b| {
            let n = b.tx.prepare_cached(
                "INSERT INTO credentials (appid, kind, value, expires_at, fetched_at, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (appid, kind) DO UPDATE SET value = excluded.value,
                   expires_at = excluded.expires_at, fetched_at = excluded.fetched_at,
                   first_seen = excluded.first_seen
                 WHERE excluded.fetched_at > credentials.fetched_at",
            )?
            .execute(params![
                appid,
                key,
                value,
                c.expires_at,
                c.fetched_at,
                c.first_seen
            ])?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn write_credential(
        &self,
        appid: &str,
        key: &str,
        c: &Record,
        holder: &str,
    ) -> Result<Written, StoreError> {
        let _ = holder;
        let value = self
            .sealer
            .seal(&credential_aad(appid, key), c.value.expose_secret());
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
                value,
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
}

/// A column that holds a secret: its table, the columns that identify a
/// row, the column, and the record kind its associated data names (the
/// identity columns follow it, in order; see [`credential_aad`] and
/// [`super::grant_aad`]). A new table with a secret adds a line here, and
/// start-up upgrades and rotates it with the rest.
struct SealedColumn {
    table: &'static str,
    id: [&'static str; 2],
    column: &'static str,
    kind: &'static str,
}

const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "credentials",
        id: ["appid", "kind"],
        column: "value",
        kind: "cred",
    },
    SealedColumn {
        table: "grants",
        id: ["appid", "openid"],
        column: "access_token",
        kind: "grant.access_token",
    },
    SealedColumn {
        table: "grants",
        id: ["appid", "openid"],
        column: "refresh_token",
        kind: "grant.refresh_token",
    },
    // Accounts and clients changed at run time hold AppSecrets and push
    // keys; see `directory::seal`.
    SealedColumn {
        table: "directory",
        id: ["section", "name"],
        column: "body",
        kind: "directory",
    },
];

/// Start-up's key check: refuses a file sealed under a key that is not
/// configured, and, with a key, re-seals what is plaintext or under the
/// previous key in one transaction, then stores the key check.
fn prepare_keys(conn: &mut Connection, sealer: &Sealer) -> Result<(), StoreError> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE name = 'key_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match sealer.plan(stored.as_deref())? {
        Plan::UpToDate => Ok(()),
        Plan::Plaintext => {
            // No key and no key check: still refuse sealed values (a key
            // check deleted by hand), which would only fail later.
            for s in SEALED {
                let sql = format!(
                    "SELECT {c} FROM {t} WHERE substr({c}, 1, {n}) = '{PREFIX}' LIMIT 1",
                    c = s.column,
                    t = s.table,
                    n = PREFIX.len()
                );
                let sealed: Option<String> = conn.query_row(&sql, [], |r| r.get(0)).optional()?;
                if let Some(v) = sealed {
                    return Err(SealError::NoKey {
                        id: key_id_of(&v).unwrap_or("(malformed)").to_string(),
                    }
                    .into());
                }
            }
            Ok(())
        }
        Plan::Reseal => {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut done = Resealed::default();
            for s in SEALED {
                let [a, b] = s.id;
                let rows: Vec<(String, String, String)> = tx
                    .prepare(&format!(
                        "SELECT {a}, {b}, {c} FROM {t}",
                        c = s.column,
                        t = s.table
                    ))?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let mut update = tx.prepare(&format!(
                    "UPDATE {t} SET {c} = ?3 WHERE {a} = ?1 AND {b} = ?2",
                    c = s.column,
                    t = s.table
                ))?;
                for (x, y, value) in rows {
                    if let Some((sealed, found)) = sealer.reseal(&aad(s.kind, &[&x, &y]), &value)? {
                        update.execute(params![x, y, sealed])?;
                        match found {
                            Found::Plain => done.plaintext += 1,
                            _ => done.previous += 1,
                        }
                    }
                }
            }
            let check = sealer
                .key_check()
                .ok_or_else(|| StoreError::new("a re-seal without a key"))?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('key_check', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![check],
            )?;
            tx.commit()?;
            // Move the re-sealed pages into the file and empty the WAL, so the
            // old values are nowhere on disk. Only another program reading
            // the file can hold the WAL back: then the start-up fails rather
            // than claim the plaintext is gone.
            if !checkpoint(conn, "TRUNCATE")? {
                return Err(StoreError::new(
                    "the store file is open in another program: its WAL, which still holds the values sealed just now, cannot be emptied; close it and start again",
                ));
            }
            tracing::info!(
                store.key_id = sealer.current_id().unwrap_or_default(),
                sealed_plaintext = done.plaintext,
                resealed_previous = done.previous,
                "store values sealed under store.encryption_key"
            );
            Ok(())
        }
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

#[cfg(test)]
mod tests;
