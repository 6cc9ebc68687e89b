use super::*;
use crate::store::{Stage, StateRecord, scope_from_name, scope_name};

/// A directory of this test's own, emptied, and the store file's path in it.
fn fresh(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("wxhub-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("t.db");
    (dir, path)
}

#[tokio::test]
async fn credentials_and_counters_survive_reopening() {
    let (dir, path) = fresh("reopen");
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

    let (dir, path) = fresh("names");
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
/// A write that fails after writing is undone to its savepoint; the write
/// batched after it, and the batch's commit, stand.
#[tokio::test]
async fn a_write_failing_halfway_is_undone_alone() {
    let dir = std::env::temp_dir().join(format!("wxhub-store-undo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = SqliteStore::open(&dir.join("t.db")).expect("open");
    let put = |b: &mut Batch<'_>, name: &str| {
        b.tx.execute(
            "INSERT INTO meta (name, value) VALUES (?1, 'x')",
            params![name],
        )
    };
    // The first holds the writer, so the next two queue and share a batch.
    let hold = s.run(|_| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    });
    let failing = s.run(move |b| {
        put(b, "undone")?;
        Err::<(), _>(StoreError::new("fails after writing"))
    });
    let fine = s.run(move |b| Ok(put(b, "kept")?));
    let (held, failed, kept) = tokio::join!(hold, failing, fine);
    assert!(held.is_ok() && failed.is_err());
    assert_eq!(kept.expect("the neighbour's write"), 1);
    let names = s
        .run(|b| {
            Ok(b.tx
                .prepare("SELECT name FROM meta WHERE name IN ('undone', 'kept')")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .expect("read");
    assert_eq!(names, ["kept"]);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

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

#[tokio::test]
async fn grants_tokens_are_sealed_in_the_file_and_a_moved_value_does_not_open() {
    use crate::seal::{EncryptionKey, StoreKeys};
    use crate::store::Grant;
    let (dir, path) = fresh("seal");
    let key = EncryptionKey::generate();
    let sealer = Arc::new(Sealer::new(&StoreKeys {
        current: Some(key),
        previous: None,
    }));
    let g = |openid: &str| Grant {
        appid: "wx1".into(),
        openid: openid.into(),
        unionid: None,
        scope: "snsapi_userinfo".into(),
        snapshot: false,
        access_token: format!("CANARY-access-{openid}"),
        access_expires_at: 10,
        refresh_token: format!("CANARY-refresh-{openid}"),
        refresh_expires_at: 100,
        profile: None,
        profile_fetched_at: None,
    };
    let s = SqliteStore::open_sealed(&path, sealer.clone()).expect("open");
    s.save_grant(&g("o1")).await.expect("save");
    s.save_grant(&g("o2")).await.expect("save");
    let back = s
        .load_grant("wx1", "o1")
        .await
        .expect("load")
        .expect("present");
    assert_eq!(back.refresh_token, "CANARY-refresh-o1");
    s.close().await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(dir.join("t.db-wal")).unwrap_or_default());
    assert!(
        !bytes.windows(7).any(|w| w == b"CANARY-"),
        "a grant token in plaintext"
    );
    // o2's sealed token copied onto o1's record: refused, never served.
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("UPDATE grants SET access_token = (SELECT access_token FROM grants WHERE openid = 'o2') WHERE openid = 'o1'").unwrap();
    }
    let s = SqliteStore::open_sealed(&path, sealer).expect("reopen");
    let e = s.load_grant("wx1", "o1").await.expect_err("moved value");
    assert!(e.to_string().contains("copied from another record"), "{e}");
    s.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_second_hub_on_the_same_file_is_refused_until_the_first_closes() {
    let (dir, path) = fresh("lock");
    let first = SqliteStore::open(&path).expect("open");
    let started = std::time::Instant::now();
    let second = tokio::task::spawn_blocking({
        let path = path.clone();
        move || SqliteStore::open(&path).map(|_| ())
    })
    .await
    .unwrap();
    // (Its failed open closed a descriptor of the file, which drops this
    // process's fcntl locks on it: harmless here, one process only.)
    let e = second.expect_err("the file is held");
    assert!(e.to_string().contains("in use by another hub"), "{e}");
    assert!(
        started.elapsed() >= LOCK_WAIT,
        "it waited for a stopping hub"
    );
    first.close().await;
    let third = SqliteStore::open(&path).expect("free once the first has closed");
    third.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_checkpointer_moves_writes_into_the_file_without_the_writer() {
    let (dir, path) = fresh("checkpoint");
    let s = SqliteStore::open(&path).expect("open");
    for i in 0..50 {
        assert_eq!(s.bump("wx1", &format!("c{i}"), 5).await.expect("bump"), 1);
    }
    // What the file itself holds, its WAL ignored (`immutable`): the
    // writer's own checkpoint waits for 16384 pages of WAL, far off, so
    // only the checkpointer can have put the counters there.
    let in_file = || {
        let db = rusqlite::Connection::open_with_flags(
            format!("file:{}?immutable=1", path.display()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .expect("opens read-only");
        db.query_row(
            "SELECT COUNT(*) FROM counters WHERE appid = 'wx1'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while in_file() < 50 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(in_file(), 50, "the file holds {} of 50 counters", in_file());
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
