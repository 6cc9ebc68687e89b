//! The least a push endpoint can do and still have each push on disk
//! before it answers: the body handed to one writer thread, which commits
//! whatever is queued as one SQLite transaction (one insert per push, the
//! file and durability settings of the hub's store) and then answers. No
//! signature, no parse, no duplicate check, no queue for subscribers.
//! Against it the push bench shows what the hub adds beyond the durable
//! write every acknowledged push needs, as the minimal forwarder does for
//! the proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::new_store_path;

type Job = (Bytes, oneshot::Sender<bool>);

/// The hub's batching: what is queued at once goes in one commit, and
/// under load a batch smaller than `GROUP` waits `GROUP_WAIT` once for
/// more (without it batches of a few writes each left the cores idle).
const MAX_BATCH: usize = 512;
const GROUP: usize = 16;
const GROUP_WAIT: Duration = Duration::from_micros(100);

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

fn take_queued(jobs: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => return,
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached("INSERT INTO push (body) VALUES (?1)")?;
        for (body, _) in batch {
            insert.execute([body.as_ref()])?;
        }
    }
    tx.commit()
}

/// Runs until every sender is gone; the checkpointer stops with it.
fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>, _checkpointer: mpsc::Sender<()>) {
    let mut last_len = 0;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        take_queued(&jobs, &mut batch);
        if last_len > 1 && batch.len() < GROUP {
            std::thread::sleep(GROUP_WAIT);
            take_queued(&jobs, &mut batch);
        }
        last_len = batch.len();
        let ok = commit(&mut conn, &batch).is_ok();
        for (_, reply) in batch {
            let _ = reply.send(ok);
        }
    }
}

/// Copies the WAL into the file beside the writer, as the hub's
/// checkpointer does, so no commit stalls on a checkpoint of its own.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_millis(100)) {
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

/// Starts the handler; answers `success` (plain) or an empty body (safe)
/// once the push is committed. Returns its address and its store's file.
pub(crate) async fn minimal_durable(safe: bool) -> anyhow::Result<(SocketAddr, PathBuf)> {
    let path = new_store_path();
    let conn = open(&path)?;
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    conn.execute_batch("CREATE TABLE push (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    let checkpointer = open(&path)?;
    checkpointer.pragma_update(None, "wal_autocheckpoint", 0)?;
    let (stop, stopped) = mpsc::channel();
    std::thread::spawn(move || checkpoint_loop(checkpointer, stopped));
    let (jobs, queued) = mpsc::channel::<Job>();
    std::thread::spawn(move || write_loop(conn, queued, stop));
    let app = axum::Router::new()
        .route(
            "/push/{appid}",
            axum::routing::post(
                move |State(jobs): State<mpsc::Sender<Job>>, body: Bytes| async move {
                    let (reply, written) = oneshot::channel();
                    if jobs.send((body, reply)).is_err() || written.await != Ok(true) {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "not written");
                    }
                    (StatusCode::OK, if safe { "" } else { "success" })
                },
            ),
        )
        .with_state(jobs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, path))
}
