//! The push gateway's records in the SQLite store. Every write goes through
//! the store's one writer thread, so a push's message and its follower
//! change land in one transaction, committed before the platform is
//! answered.
//!
//! The layout keeps a push's write small, since it is paid before every
//! acknowledgement:
//!
//! - `push_inbox`: each message once, keyed by its row (the order of
//!   arrival), with the duplicate key as the one unique index and
//!   `(appid, id)` for reading an account's messages in order. The row
//!   also names the subscribers it was queued for.
//! - `push_cursors`: per subscriber, the row up to which every message of
//!   its queue is settled (delivered, parked, or in `push_retry`). A
//!   subscriber's queue is what follows its cursor: no row per message and
//!   subscriber is written, nor deleted once delivered.
//! - `push_retry`: rows only for entries that failed once (until delivered
//!   or parked) and replayed ones, placed in the queue by `(pos, seq)`.
//! - `push_parked`: deliveries that failed for their whole window.
//!
//! The writer keeps, per subscriber, the entries it handed out and has not
//! heard back about; the cursor moves up to the first of them as they
//! settle. A cursor is only ever behind what was delivered, so a hub that
//! stops between a delivery and the cursor's next move sends that message
//! again after restart (with the same delivery id), never loses it.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::push::{Accepted, Backlog, Follower, NewPush, Parked, Queued, StoredMessage};
use super::sqlite::{Batch, SqliteStore};

/// The push tables, created on open if missing.
const PUSH_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS push_inbox (
        id INTEGER PRIMARY KEY,
        appid TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        openid TEXT NOT NULL,
        raw_xml TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        keep_until INTEGER NOT NULL,
        subs TEXT NOT NULL,
        reply TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS push_inbox_dedup ON push_inbox (appid, dedup_key);
    CREATE INDEX IF NOT EXISTS push_inbox_account ON push_inbox (appid, id);
    CREATE TABLE IF NOT EXISTS push_cursors (
        appid TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        settled INTEGER NOT NULL,
        PRIMARY KEY (appid, subscriber)
    );
    CREATE TABLE IF NOT EXISTS push_retry (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        appid TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        pos INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        msg INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        openid TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        first_at INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS push_retry_place ON push_retry (appid, subscriber, pos, seq);
    CREATE INDEX IF NOT EXISTS push_retry_msg ON push_retry (msg);
    CREATE TABLE IF NOT EXISTS push_parked (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        appid TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        message_id TEXT NOT NULL,
        openid TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        parked_at INTEGER NOT NULL,
        error TEXT NOT NULL,
        msg INTEGER
    );
    CREATE INDEX IF NOT EXISTS push_parked_sub ON push_parked (appid, subscriber, id);
    CREATE TABLE IF NOT EXISTS push_followers (
        appid TEXT NOT NULL,
        openid TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (appid, openid)
    );";

/// Moves a file written before the cursor layout (one `push_messages` row
/// with three indexes per message, one `push_queue` row with two per
/// message and subscriber) to it, in one transaction: each message keeps
/// its row number, each queue entry becomes a `push_retry` row in its old
/// order, and parked deliveries learn their message's row.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let old: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'push_messages'",
        [],
        |r| r.get(0),
    )?;
    let tx = conn.transaction()?;
    let parked_has_msg: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('push_parked') WHERE name = 'msg'",
        [],
        |r| r.get(0),
    )?;
    if !parked_has_msg {
        tx.execute_batch("ALTER TABLE push_parked ADD COLUMN msg INTEGER")?;
    }
    if old {
        tx.execute_batch(
            "INSERT INTO push_inbox (id, appid, dedup_key, message_id, openid, raw_xml, received_at, keep_until, subs, reply)
                 SELECT rowid, appid, dedup_key, message_id, openid, raw_xml, received_at, keep_until, '', reply
                 FROM push_messages ORDER BY rowid;
             INSERT INTO push_retry (id, appid, subscriber, pos, seq, msg, message_id, openid, attempts, next_at, first_at, last_error)
                 SELECT q.id, q.appid, q.subscriber, m.rowid, q.id, m.rowid, q.message_id, q.openid, q.attempts, q.next_at, q.first_at, q.last_error
                 FROM push_queue q JOIN push_messages m ON m.message_id = q.message_id ORDER BY q.id;
             UPDATE push_parked SET msg = (SELECT rowid FROM push_messages m WHERE m.message_id = push_parked.message_id)
                 WHERE msg IS NULL;
             DROP TABLE push_queue;
             DROP TABLE push_messages;
             DROP INDEX IF EXISTS push_parked_msg;",
        )?;
    }
    tx.execute_batch("CREATE INDEX IF NOT EXISTS push_parked_row ON push_parked (msg);")?;
    tx.commit()?;
    Ok(())
}

/// Creates the push tables, moving an older layout's records over.
pub(super) fn open_push(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(PUSH_SCHEMA)?;
    migrate(conn)
}

/// What the writer knows of one subscriber's queue between its writes.
#[derive(Debug, Default)]
pub(super) struct LaneCursor {
    // The cursor on file.
    saved: i64,
    // Every message of the account up to this row was read for the lane.
    read: i64,
    // Messages handed out since the lane was taken over and not yet
    // settled: the cursor stays below the first.
    open: BTreeSet<i64>,
    // Set after a failed commit, when this may no longer match the file
    // or what the lane holds: the cursor stays where it is until the lane
    // is taken over again (a restart), so nothing is passed that was not
    // settled; at worst some messages are delivered again then.
    stuck: bool,
}

impl LaneCursor {
    /// After a failed commit.
    pub(super) fn forget(&mut self) {
        self.stuck = true;
    }
}

fn lane_key(appid: &str, sub: &str) -> String {
    with_lane_key(appid, sub, str::to_owned)
}

/// Runs `f` with the lane key of `appid` and `sub` in a reused buffer: the
/// per-push lookups of the queue counts allocate nothing.
fn with_lane_key<R>(appid: &str, sub: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with_borrow_mut(|key| {
        key.clear();
        key.push_str(appid);
        key.push('\0');
        key.push_str(sub);
        f(key)
    })
}

/// `subs` holds `\nname\n` per subscriber (names have no newline).
fn encode_subs(names: &[&String]) -> String {
    let mut out = String::from("\n");
    for n in names {
        out.push_str(n);
        out.push('\n');
    }
    out
}

fn has_sub(subs: &str, sub: &str) -> bool {
    subs.match_indices(sub).any(|(i, _)| {
        subs.as_bytes().get(i.wrapping_sub(1)) == Some(&b'\n')
            && subs.as_bytes().get(i + sub.len()) == Some(&b'\n')
    })
}

fn saved_cursor(b: &Batch<'_>, appid: &str, sub: &str) -> Result<i64, StoreError> {
    Ok(b.tx
        .prepare_cached("SELECT settled FROM push_cursors WHERE appid = ?1 AND subscriber = ?2")?
        .query_row(params![appid, sub], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Moves the lane's cursor up to its first unsettled message.
fn advance(b: &mut Batch<'_>, appid: &str, sub: &str) -> Result<(), StoreError> {
    let Some(lane) = b.lanes.get_mut(&lane_key(appid, sub)) else {
        return Ok(());
    };
    if lane.stuck {
        return Ok(());
    }
    let to = lane.open.first().map_or(lane.read, |f| f - 1);
    if to <= lane.saved {
        return Ok(());
    }
    lane.saved = to;
    b.tx.prepare_cached(
        "INSERT INTO push_cursors (appid, subscriber, settled) VALUES (?1, ?2, ?3)
         ON CONFLICT (appid, subscriber) DO UPDATE SET settled = excluded.settled",
    )?
    .execute(params![appid, sub, to])?;
    Ok(())
}

/// A handed-out message is settled for its lane.
fn settle(b: &mut Batch<'_>, appid: &str, sub: &str, row: i64) -> Result<(), StoreError> {
    if let Some(lane) = b.lanes.get_mut(&lane_key(appid, sub)) {
        lane.open.remove(&row);
    }
    advance(b, appid, sub)
}

/// Entries queued for a subscriber: counted once, then kept in step with
/// every push, delivery and replay (the writer thread is the file's only
/// writer).
fn queued_count(b: &mut Batch<'_>, appid: &str, sub: &str) -> Result<u64, StoreError> {
    if let Some(n) = with_lane_key(appid, sub, |k| b.queued.get(k).copied()) {
        return Ok(n);
    }
    let cursor = saved_cursor(b, appid, sub)?;
    let retrying: i64 = b
        .tx
        .prepare_cached("SELECT COUNT(*) FROM push_retry WHERE appid = ?1 AND subscriber = ?2")?
        .query_row(params![appid, sub], |r| r.get(0))?;
    // Messages past the cursor that were delivered but not yet passed by
    // it count too: the bound errs on the safe side until they are.
    let fresh: i64 = b
        .tx
        .prepare_cached(
            "SELECT COUNT(*) FROM push_inbox i WHERE appid = ?1 AND id > ?2
             AND instr(subs, char(10) || ?3 || char(10)) > 0
             AND NOT EXISTS (SELECT 1 FROM push_retry r WHERE r.appid = ?1 AND r.subscriber = ?3 AND r.pos = i.id AND r.seq = 0)",
        )?
        .query_row(params![appid, cursor, sub], |r| r.get(0))?;
    let n = (retrying + fresh) as u64;
    b.queued.insert(lane_key(appid, sub), n);
    Ok(n)
}

fn queued_add(b: &mut Batch<'_>, appid: &str, sub: &str, delta: i64) {
    with_lane_key(appid, sub, |k| {
        if let Some(n) = b.queued.get_mut(k) {
            *n = n.saturating_add_signed(delta);
        }
    });
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

/// Up to `limit` entries of a lane after `after` in queue order: its
/// `push_retry` rows, and the messages past what was read that name it.
fn fetch(
    b: &mut Batch<'_>,
    appid: &str,
    sub: &str,
    after: Option<(u64, u64)>,
    limit: usize,
) -> Result<Vec<Queued>, StoreError> {
    let key = lane_key(appid, sub);
    let (from, rows_after) = match after {
        // A take-over: everything not settled on file.
        None => {
            let saved = saved_cursor(b, appid, sub)?;
            b.lanes.insert(
                key.clone(),
                LaneCursor {
                    saved,
                    read: saved,
                    ..LaneCursor::default()
                },
            );
            (saved, (-1, -1))
        }
        Some((pos, seq)) => {
            let lane = b.lanes.entry(key.clone()).or_insert_with(|| LaneCursor {
                stuck: true,
                ..LaneCursor::default()
            });
            // Past what was read for the lane and skipped as not its own;
            // after a failed commit `read` may be ahead of what the lane
            // got, so only its own place counts.
            let from = if lane.stuck {
                pos as i64
            } else {
                lane.read.max(pos as i64)
            };
            (from, (pos as i64, seq as i64))
        }
    };
    let limit_sql = i64::try_from(limit).unwrap_or(-1);
    let mut out = b
        .tx
        .prepare_cached(
            "SELECT r.pos, r.seq, r.message_id, r.openid, r.attempts, r.next_at, r.first_at, r.last_error, r.msg
             FROM push_retry r WHERE r.appid = ?1 AND r.subscriber = ?2
             AND (r.pos > ?3 OR (r.pos = ?3 AND r.seq > ?4)) ORDER BY r.pos, r.seq LIMIT ?5",
        )?
        .query_map(
            params![appid, sub, rows_after.0, rows_after.1, limit_sql],
            |r| {
                Ok(Queued {
                    order: (r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64),
                    message_id: r.get(2)?,
                    openid: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                    next_at: r.get(5)?,
                    first_at: r.get(6)?,
                    last_error: r.get(7)?,
                    row: Some(r.get(8)?),
                    message: None,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let mut last_read = from;
    let mut fresh = Vec::new();
    {
        let mut stmt = b.tx.prepare_cached(
            "SELECT i.id, i.message_id, i.openid, i.raw_xml, i.received_at, i.reply, i.subs,
                EXISTS (SELECT 1 FROM push_retry r WHERE r.appid = ?1 AND r.subscriber = ?4 AND r.pos = i.id AND r.seq = 0)
             FROM push_inbox i WHERE i.appid = ?1 AND i.id > ?2 ORDER BY i.id LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![appid, from, limit_sql, sub])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            last_read = id;
            let subs = r.get_ref(6)?.as_str().map_err(rusqlite::Error::from)?;
            if !has_sub(subs, sub) || r.get::<_, bool>(7)? {
                continue;
            }
            let (openid, received_at): (String, i64) = (r.get(2)?, r.get(4)?);
            fresh.push(Queued {
                order: (id as u64, 0),
                message_id: r.get(1)?,
                openid: openid.clone(),
                attempts: 0,
                next_at: received_at,
                first_at: received_at,
                last_error: None,
                row: Some(id),
                message: Some(StoredMessage {
                    message_id: r.get(1)?,
                    openid,
                    raw_xml: r.get(3)?,
                    received_at,
                    reply: r.get(5)?,
                }),
            });
        }
    }
    out.append(&mut fresh);
    out.sort_unstable_by_key(|q| q.order);
    if out.len() > limit {
        out.truncate(limit);
        // What follows the last entry handed out is read again next time.
        if let Some(q) = out.last() {
            last_read = last_read.min(q.order.0 as i64);
        }
    }
    if let Some(lane) = b.lanes.get_mut(&key) {
        lane.read = lane.read.max(last_read);
        for q in &out {
            if q.order.1 == 0 && q.message.is_some() {
                lane.open.insert(q.order.0 as i64);
            }
        }
    }
    // A lane with nothing open moves past messages that are not its own.
    advance(b, appid, sub)?;
    Ok(out)
}

impl SqliteStore {
    /// Writes a verified push: the message (unless its duplicate key is on
    /// file), naming the subscribers with room in their queue, and the
    /// follower change, in one transaction.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_accept(&self, p: &NewPush) -> Result<Accepted, StoreError> {
        let p = p.clone();
        // A message alone is one insert; a follow change adds a second
        // write that must go with it or not at all.
        let single = p.follow.is_none();
        let job = move |b: &mut Batch<'_>| {
            let mut kept = Vec::with_capacity(p.subscribers.len());
            let mut dropped = Vec::new();
            for sub in &p.subscribers {
                if queued_count(b, &p.appid, sub)? >= u64::from(p.max_backlog) {
                    dropped.push(sub.clone());
                } else {
                    kept.push(sub);
                }
            }
            // The insert is the duplicate check: the unique index is
            // walked once, not once to look and once to write.
            let written = b
                .tx
                .prepare_cached(
                    "INSERT INTO push_inbox (appid, dedup_key, message_id, openid, raw_xml, received_at, keep_until, subs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (appid, dedup_key) DO NOTHING",
                )?
                .execute(params![
                    p.appid,
                    p.dedup_key,
                    p.message_id,
                    p.openid,
                    p.raw_xml,
                    p.received_at,
                    p.keep_until,
                    encode_subs(&kept)
                ])?;
            if written == 0 {
                let (message_id, reply) = b
                    .tx
                    .prepare_cached(
                        "SELECT message_id, reply FROM push_inbox WHERE appid = ?1 AND dedup_key = ?2",
                    )?
                    .query_row(params![p.appid, p.dedup_key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                return Ok(Accepted::Duplicate { message_id, reply });
            }
            for sub in kept {
                queued_add(b, &p.appid, sub, 1);
            }
            if let Some(change) = p.follow {
                let f = load_follower(b, &p.appid, &p.openid)?
                    .unwrap_or_else(|| Follower::new(&p.openid))
                    .apply(change);
                save_follower(b, &p.appid, &f)?;
            }
            Ok(Accepted::New { dropped })
        };
        if single {
            self.run_single(job).await
        } else {
            self.run(job).await
        }
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
                "UPDATE push_inbox SET reply = ?3 WHERE appid = ?1 AND dedup_key = ?2",
            )?
            .execute(params![appid, id, reply])?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` queue entries of a subscriber after `after`, in order,
    /// each with its message. One instance owns a SQLite file, so
    /// `instance` is not needed.
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
        self.run_single(move |b| fetch(b, &appid, &sub, after, limit))
            .await
    }

    /// Every entry not settled on file: with one instance there is nobody
    /// to take entries over from, but a restarted hub starts here.
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

    /// The message of a queue entry, by its row.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_message(
        &self,
        appid: &str,
        q: &Queued,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let Some(row) = q.row else {
            return Ok(None);
        };
        let appid = appid.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT message_id, openid, raw_xml, received_at, reply FROM push_inbox WHERE id = ?1 AND appid = ?2")?
                .query_row(params![row, appid], |r| {
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

    /// A delivered entry leaves the queue: its `push_retry` row goes, or
    /// the cursor may pass it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_done(&self, appid: &str, sub: &str, q: &Queued) -> Result<(), StoreError> {
        let (appid, sub, order) = (appid.to_string(), sub.to_string(), q.order);
        self.run(move |b| {
            let gone = b
                .tx
                .prepare_cached(
                    "DELETE FROM push_retry WHERE appid = ?1 AND subscriber = ?2 AND pos = ?3 AND seq = ?4",
                )?
                .execute(params![appid, sub, order.0 as i64, order.1 as i64])?;
            if gone > 0 || order.1 == 0 {
                queued_add(b, &appid, &sub, -1);
            }
            if gone == 0 && order.1 == 0 {
                settle(b, &appid, &sub, order.0 as i64)?;
            }
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: `q` carries the new count, time and error.
    /// An entry's first failure gives it a `push_retry` row, so the cursor
    /// can pass it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_retry(&self, appid: &str, sub: &str, q: &Queued) -> Result<(), StoreError> {
        let (appid, sub) = (appid.to_string(), sub.to_string());
        let q = Queued {
            message: None,
            ..q.clone()
        };
        self.run(move |b| {
            let (pos, seq) = (q.order.0 as i64, q.order.1 as i64);
            let changed = b
                .tx
                .prepare_cached(
                    "UPDATE push_retry SET attempts = ?5, next_at = ?6, last_error = ?7
                     WHERE appid = ?1 AND subscriber = ?2 AND pos = ?3 AND seq = ?4",
                )?
                .execute(params![appid, sub, pos, seq, q.attempts, q.next_at, q.last_error])?;
            if changed == 0 && seq == 0 {
                b.tx.prepare_cached(
                    "INSERT INTO push_retry (appid, subscriber, pos, seq, msg, message_id, openid, attempts, next_at, first_at, last_error)
                     VALUES (?1, ?2, ?3, 0, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![appid, sub, pos, q.message_id, q.openid, q.attempts, q.next_at, q.first_at, q.last_error])?;
                settle(b, &appid, &sub, pos)?;
            }
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
        let (appid, sub) = (appid.to_string(), sub.to_string());
        let q = Queued {
            message: None,
            ..q.clone()
        };
        self.run(move |b| {
            let (pos, seq) = (q.order.0 as i64, q.order.1 as i64);
            let gone = b
                .tx
                .prepare_cached(
                    "DELETE FROM push_retry WHERE appid = ?1 AND subscriber = ?2 AND pos = ?3 AND seq = ?4",
                )?
                .execute(params![appid, sub, pos, seq])?;
            if gone > 0 || seq == 0 {
                queued_add(b, &appid, &sub, -1);
            }
            if gone == 0 && seq == 0 {
                settle(b, &appid, &sub, pos)?;
            }
            b.tx.prepare_cached(
                "INSERT INTO push_parked (appid, subscriber, message_id, openid, attempts, parked_at, error, msg)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![appid, sub, q.message_id, q.openid, q.attempts, now, q.last_error.unwrap_or_default(), q.row])?;
            let parked: i64 = b
                .tx
                .prepare_cached("SELECT COUNT(*) FROM push_parked WHERE appid = ?1 AND subscriber = ?2")?
                .query_row(params![appid, sub], |r| r.get(0))?;
            let over = (parked as u64).saturating_sub(u64::from(max));
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

    /// Puts a parked delivery back at the end of its subscriber's queue,
    /// with a new retry window from `now`. `Ok(false)`: no such parked
    /// delivery.
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
            let row: Option<(String, String, String, Option<i64>)> = b
                .tx
                .prepare_cached("SELECT subscriber, message_id, openid, msg FROM push_parked WHERE appid = ?1 AND id = ?2")?
                .query_row(params![appid, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let Some((sub, message_id, openid, msg)) = row else {
                return Ok(false);
            };
            b.tx.prepare_cached("DELETE FROM push_parked WHERE id = ?1")?
                .execute(params![id])?;
            // After every message so far, and after every earlier replay
            // there: `seq` is the row's own id, never 0 and never reused
            // (AUTOINCREMENT; a migrated row keeps its old id as both), so
            // a worker reading on from the last entry it saw finds it even
            // when the replay before it was delivered and its row is gone.
            b.tx.prepare_cached(
                "INSERT INTO push_retry (appid, subscriber, pos, seq, msg, message_id, openid, next_at, first_at)
                 VALUES (?1, ?2, (SELECT COALESCE(MAX(id), 0) FROM push_inbox), -1, ?3, ?4, ?5, ?6, ?6)",
            )?
            .execute(params![appid, sub, msg.unwrap_or(0), message_id, openid, now])?;
            b.tx.prepare_cached("UPDATE push_retry SET seq = id WHERE id = last_insert_rowid()")?
                .execute([])?;
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
            let queued = queued_count(b, &appid, &sub)?;
            let parked: i64 =
                b.tx.prepare_cached(
                    "SELECT COUNT(*) FROM push_parked WHERE appid = ?1 AND subscriber = ?2",
                )?
                .query_row(params![appid, sub], |r| r.get(0))?;
            Ok(Backlog {
                queued,
                parked: parked as u64,
            })
        })
        .await
    }

    /// Forgets messages kept past their time that no subscriber still
    /// needs (past its cursor, or in a retry or parked row). Returns how
    /// many. Rows arrive in the order of their keep time (one
    /// `push.keep_secs` for all), so the walk stops at the first one still
    /// kept: no index on the time is written per push.
    ///
    /// Only the subscribers in `live` (account, name: those configured now)
    /// hold a message past its time: a subscriber removed from the
    /// configuration, or an account that no longer takes pushes, would
    /// otherwise keep its undelivered messages, retries and parked entries
    /// for ever. Within `keep_secs` they stay, in case it comes back.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_sweep(
        &self,
        now: i64,
        live: &[(String, String)],
        // Each message carries its own time, from when it came.
        _keep_secs: i64,
    ) -> Result<usize, StoreError> {
        let live: HashSet<(String, String)> = live.iter().cloned().collect();
        self.run(move |b| {
            // A lane gone from the configuration is counted afresh if it
            // comes back, not from what it had when it went.
            let keys: HashSet<String> = live.iter().map(|(a, s)| lane_key(a, s)).collect();
            b.queued.retain(|k, _| keys.contains(k));
            let cursors: HashMap<(String, String), i64> = b
                .tx
                .prepare_cached("SELECT appid, subscriber, settled FROM push_cursors")?
                .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut gone = 0;
            let mut after = 0i64;
            loop {
                let rows: Vec<(i64, String, String, i64)> = b
                    .tx
                    .prepare_cached(
                        "SELECT id, appid, subs, keep_until FROM push_inbox WHERE id > ?1 ORDER BY id LIMIT 1000",
                    )?
                    .query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<Result<_, _>>()?;
                let Some(last) = rows.last() else {
                    return Ok(gone);
                };
                after = last.0;
                for (id, appid, subs, keep_until) in rows {
                    if keep_until >= now {
                        return Ok(gone);
                    }
                    let pending = subs.split('\n').filter(|s| !s.is_empty()).any(|s| {
                        let lane = (appid.clone(), s.to_string());
                        live.contains(&lane) && cursors.get(&lane).is_none_or(|c| *c < id)
                    });
                    if pending {
                        continue;
                    }
                    // What subscribers gone from the configuration left of
                    // it: their retry and parked entries go with it.
                    let left: Vec<(bool, String)> = b
                        .tx
                        .prepare_cached(
                            "SELECT 1, subscriber FROM push_retry WHERE msg = ?1
                             UNION ALL SELECT 0, subscriber FROM push_parked WHERE msg = ?1",
                        )?
                        .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(bool, String)>, _>>()?
                        .into_iter()
                        .filter(|(_, sub)| !live.contains(&(appid.clone(), sub.clone())))
                        .collect();
                    for (retrying, sub) in left {
                        let sql = if retrying {
                            "DELETE FROM push_retry WHERE msg = ?1 AND subscriber = ?2"
                        } else {
                            "DELETE FROM push_parked WHERE msg = ?1 AND subscriber = ?2"
                        };
                        let n = b.tx.prepare_cached(sql)?.execute(params![id, sub])?;
                        if retrying {
                            queued_add(b, &appid, &sub, -(n as i64));
                        }
                    }
                    gone += b
                        .tx
                        .prepare_cached(
                            "DELETE FROM push_inbox WHERE id = ?1
                             AND NOT EXISTS (SELECT 1 FROM push_retry WHERE msg = ?1)
                             AND NOT EXISTS (SELECT 1 FROM push_parked WHERE msg = ?1)",
                        )?
                        .execute(params![id])?;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wxhub-push-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("t.db")
    }

    fn lanes(subs: &[&str]) -> Vec<(String, String)> {
        subs.iter()
            .map(|s| ("wx1".to_string(), (*s).to_string()))
            .collect()
    }

    fn new_push(key: &str, id: &str, subs: &[&str]) -> NewPush {
        NewPush {
            appid: "wx1".into(),
            dedup_key: key.into(),
            message_id: id.into(),
            openid: "o1".into(),
            raw_xml: format!("<xml>{id}</xml>"),
            received_at: 100,
            subscribers: subs.iter().map(|s| (*s).to_string()).collect(),
            follow: None,
            max_backlog: 10,
            keep_until: 200,
        }
    }

    #[tokio::test]
    async fn a_file_of_the_old_layout_opens_with_its_queue_parked_and_duplicates() {
        let p = path("migrate");
        std::fs::create_dir_all(p.parent().expect("dir")).expect("dir");
        {
            let c = Connection::open(&p).expect("open");
            c.execute_batch(
                "CREATE TABLE push_messages (appid TEXT NOT NULL, dedup_key TEXT NOT NULL, message_id TEXT NOT NULL,
                    openid TEXT NOT NULL, raw_xml TEXT NOT NULL, received_at INTEGER NOT NULL, reply TEXT,
                    keep_until INTEGER NOT NULL, PRIMARY KEY (appid, dedup_key));
                 CREATE UNIQUE INDEX push_messages_id ON push_messages (message_id);
                 CREATE TABLE push_queue (id INTEGER PRIMARY KEY AUTOINCREMENT, appid TEXT NOT NULL, subscriber TEXT NOT NULL,
                    message_id TEXT NOT NULL, openid TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                    next_at INTEGER NOT NULL, first_at INTEGER NOT NULL, last_error TEXT);
                 CREATE TABLE push_parked (id INTEGER PRIMARY KEY AUTOINCREMENT, appid TEXT NOT NULL, subscriber TEXT NOT NULL,
                    message_id TEXT NOT NULL, openid TEXT NOT NULL, attempts INTEGER NOT NULL, parked_at INTEGER NOT NULL,
                    error TEXT NOT NULL);
                 CREATE INDEX push_parked_msg ON push_parked (message_id);
                 INSERT INTO push_messages VALUES ('wx1', 'm:1', 'id1', 'o1', '<xml>1</xml>', 100, NULL, 200);
                 INSERT INTO push_messages VALUES ('wx1', 'm:2', 'id2', 'o1', '<xml>2</xml>', 101, '1<xml/>', 201);
                 INSERT INTO push_queue (appid, subscriber, message_id, openid, attempts, next_at, first_at, last_error)
                    VALUES ('wx1', 'a', 'id1', 'o1', 2, 150, 100, 'HTTP 500');
                 INSERT INTO push_queue (appid, subscriber, message_id, openid, next_at, first_at)
                    VALUES ('wx1', 'a', 'id2', 'o1', 101, 101);
                 INSERT INTO push_parked (appid, subscriber, message_id, openid, attempts, parked_at, error)
                    VALUES ('wx1', 'b', 'id1', 'o1', 9, 300, 'timeout');",
            )
            .expect("old layout");
        }
        let s = SqliteStore::open(&p).expect("migrates");
        let q = s.push_take_over("wx1", "a", "-", 100).await.expect("fetch");
        let got: Vec<_> = q
            .iter()
            .map(|q| (q.message_id.as_str(), q.attempts))
            .collect();
        assert_eq!(got, [("id1", 2), ("id2", 0)]);
        assert_eq!(q[0].last_error.as_deref(), Some("HTTP 500"));
        let m = s
            .push_message("wx1", &q[1])
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(
            (m.raw_xml.as_str(), m.reply.as_deref()),
            ("<xml>2</xml>", Some("1<xml/>"))
        );
        // Duplicates of what was on file are still recognised.
        match s
            .push_accept(&new_push("m:2", "idx", &["a"]))
            .await
            .expect("accept")
        {
            Accepted::Duplicate { message_id, .. } => assert_eq!(message_id, "id2"),
            other => panic!("not a duplicate: {other:?}"),
        }
        let parked = s.push_parked("wx1", &[], 10).await.expect("parked");
        assert_eq!(parked.len(), 1);
        assert!(
            s.push_replay("wx1", &parked[0].id, 400, 0)
                .await
                .expect("replay")
        );
        let b = s
            .push_take_over("wx1", "b", "-", 100)
            .await
            .expect("fetch b");
        let m = s
            .push_message("wx1", &b[0])
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(m.raw_xml, "<xml>1</xml>");
        for q in &q {
            s.push_done("wx1", "a", q).await.expect("done");
        }
        assert_eq!(s.push_backlog("wx1", "a").await.expect("backlog").queued, 0);
        s.close().await;
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[tokio::test]
    async fn the_cursor_passes_only_what_was_settled_and_a_restart_resumes_there() {
        let p = path("cursor");
        {
            let s = SqliteStore::open(&p).expect("open");
            for i in 1..=4 {
                let subs: &[&str] = if i == 2 { &["other"] } else { &["a"] };
                let r = s
                    .push_accept(&new_push(&format!("m:{i}"), &format!("id{i}"), subs))
                    .await
                    .expect("accept");
                assert_eq!(r, Accepted::New { dropped: vec![] });
            }
            let q = s.push_take_over("wx1", "a", "-", 100).await.expect("fetch");
            let ids: Vec<_> = q.iter().map(|q| q.message_id.as_str()).collect();
            assert_eq!(ids, ["id1", "id3", "id4"]);
            assert_eq!(
                q[0].message.as_ref().expect("carried").raw_xml,
                "<xml>id1</xml>"
            );
            // The first fails once (it gets a row), the last is delivered;
            // the third is still out.
            let failed = Queued {
                attempts: 1,
                next_at: 500,
                last_error: Some("HTTP 502".into()),
                ..q[0].clone()
            };
            s.push_retry("wx1", "a", &failed).await.expect("retry");
            s.push_done("wx1", "a", &q[2]).await.expect("done");
            assert_eq!(s.push_backlog("wx1", "a").await.expect("backlog").queued, 2);
            // Kept while a subscriber still needs them, whatever their time
            // (`other` has read nothing yet).
            assert_eq!(
                s.push_sweep(10_000, &lanes(&["a", "other"]), 86_400)
                    .await
                    .expect("sweep"),
                0
            );
            s.close().await;
        }
        let s = SqliteStore::open(&p).expect("reopen");
        let q = s.push_take_over("wx1", "a", "-", 100).await.expect("fetch");
        let got: Vec<_> = q
            .iter()
            .map(|q| (q.message_id.as_str(), q.attempts))
            .collect();
        // The delivered one past the undelivered one comes again (the
        // cursor cannot pass a gap); nothing undelivered is lost.
        assert_eq!(got, [("id1", 1), ("id3", 0), ("id4", 0)]);
        for q in &q {
            s.push_done("wx1", "a", q).await.expect("done");
        }
        assert_eq!(s.push_backlog("wx1", "a").await.expect("backlog").queued, 0);
        assert_eq!(
            s.push_sweep(10_000, &lanes(&["a", "other"]), 86_400)
                .await
                .expect("sweep"),
            3
        );
        assert_eq!(
            s.push_take_over("wx1", "other", "-", 100)
                .await
                .expect("other")
                .len(),
            1
        );
        s.close().await;
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[tokio::test]
    async fn a_replay_after_a_delivered_replay_still_comes_after_it() {
        // A worker reads on from the last entry it saw, so a replay must
        // sort after every earlier one, even one delivered and gone.
        let p = path("replays");
        let s = SqliteStore::open(&p).expect("open");
        for i in 1..=2 {
            s.push_accept(&new_push(&format!("m:{i}"), &format!("id{i}"), &["a"]))
                .await
                .expect("accept");
        }
        for q in s.push_take_over("wx1", "a", "-", 100).await.expect("fetch") {
            s.push_park("wx1", "a", &q, 300, 100).await.expect("park");
        }
        let parked = s.push_parked("wx1", &[], 10).await.expect("parked");
        assert_eq!(parked.len(), 2);
        let mut last = None;
        for p in &parked {
            assert!(s.push_replay("wx1", &p.id, 400, 0).await.expect("replay"));
            let got = s
                .push_fetch("wx1", "a", last, "-", 100)
                .await
                .expect("fetch");
            assert_eq!(got.len(), 1, "the replay of {} is read", p.message_id);
            assert_eq!(got[0].message_id, p.message_id);
            last = Some(got[0].order);
            s.push_done("wx1", "a", &got[0]).await.expect("done");
        }
        assert_eq!(s.push_backlog("wx1", "a").await.expect("backlog").queued, 0);
        s.close().await;
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[tokio::test]
    async fn a_removed_subscriber_holds_nothing_past_the_keep_time() {
        let p = path("removed");
        let s = SqliteStore::open(&p).expect("open");
        for i in 1..=3 {
            s.push_accept(&new_push(
                &format!("m:{i}"),
                &format!("id{i}"),
                &["a", "gone"],
            ))
            .await
            .expect("accept");
        }
        // `a` has everything; `gone` failed once on the first and parked
        // the second, and never read the third.
        for q in s.push_take_over("wx1", "a", "-", 100).await.expect("a") {
            s.push_done("wx1", "a", &q).await.expect("done");
        }
        let g = s
            .push_take_over("wx1", "gone", "-", 100)
            .await
            .expect("gone");
        let failed = Queued {
            attempts: 1,
            next_at: 500,
            last_error: Some("HTTP 502".into()),
            ..g[0].clone()
        };
        s.push_retry("wx1", "gone", &failed).await.expect("retry");
        s.push_park("wx1", "gone", &g[1], 150, 100)
            .await
            .expect("park");
        // While it is configured, it holds all three.
        assert_eq!(
            s.push_sweep(10_000, &lanes(&["a", "gone"]), 86_400)
                .await
                .expect("sweep"),
            0
        );
        // Not before their time, configured or not.
        assert_eq!(
            s.push_sweep(150, &lanes(&["a"]), 86_400)
                .await
                .expect("sweep"),
            0
        );
        assert_eq!(
            s.push_sweep(10_000, &lanes(&["a"]), 86_400)
                .await
                .expect("sweep"),
            3
        );
        assert!(
            s.push_parked("wx1", &[], 10)
                .await
                .expect("parked")
                .is_empty()
        );
        assert!(
            s.push_take_over("wx1", "gone", "-", 100)
                .await
                .expect("gone")
                .is_empty()
        );
        s.close().await;
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }
}
