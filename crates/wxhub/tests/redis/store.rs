//! The Redis store's records: states, tickets, grants, counters.
use redis::AsyncCommands;
use std::sync::atomic::{AtomicU32, Ordering};
use wx_api::oauth::Scope;
use wxhub::store::*;

// A virtual clock far from real time: TTLs must not depend on it.
const NOW: i64 = 4_000_000_000;

fn url() -> String {
    std::env::var("WXHUB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "wxhub-test-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn store() -> RedisStore {
    RedisStore::connect(&url(), &unique_prefix())
        .await
        .expect("a Redis for tests (WXHUB_TEST_REDIS)")
}

async fn keys(s: &RedisStore) -> Vec<String> {
    let mut conn = s.conn();
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .cursor_arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", s.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        found.extend(batch);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

async fn cleanup(s: &RedisStore) {
    let found = keys(s).await;
    if !found.is_empty() {
        let _: () = s.conn().del(found).await.expect("del");
    }
    assert!(keys(s).await.is_empty());
}

async fn key_ttl(s: &RedisStore, key: &str) -> i64 {
    s.conn().ttl(key).await.expect("ttl")
}

fn state(expires_at: i64) -> StateRecord {
    StateRecord {
        appid: "wx1".into(),
        want: Scope::SnsapiUserinfo,
        stage: Stage::Probe,
        return_to: "https://app.example/back?x=1".into(),
        expires_at,
    }
}

#[tokio::test]
async fn counters_are_per_day_and_account() {
    let s = store().await;
    assert_eq!(s.counter("wx1", "fetches", 5).await.unwrap(), 0);
    assert_eq!(s.bump("wx1", "fetches", 5).await.unwrap(), 1);
    assert_eq!(s.bump("wx1", "fetches", 5).await.unwrap(), 2);
    assert_eq!(s.bump("wx1", "fetches", 6).await.unwrap(), 1);
    assert_eq!(s.bump("wx2", "fetches", 5).await.unwrap(), 1);
    assert_eq!(s.bump("wx1", "forced", 5).await.unwrap(), 1);
    assert_eq!(s.counter("wx1", "fetches", 5).await.unwrap(), 2);
    assert_eq!(s.counter("wx1", "fetches", 6).await.unwrap(), 1);
    assert_eq!(s.counter("wx1", "fetches", 7).await.unwrap(), 0);
    let t = key_ttl(&s, &s.app_key("wx1", "count:fetches:5")).await;
    assert!(t > COUNTER_TTL - 60 && t <= COUNTER_TTL, "ttl {t}");
    cleanup(&s).await;
}

#[tokio::test]
async fn states_are_used_once() {
    let s = store().await;
    assert!(s.peek_state("wx1", "nope").await.unwrap().is_none());
    assert!(matches!(
        s.consume_state("wx1", "nope", Some("c"), NOW)
            .await
            .unwrap(),
        Consumed::Missing
    ));
    // An UPDATE: no result lands on a state that does not exist.
    s.set_state_result("wx1", "nope", "{}").await.unwrap();
    assert!(s.peek_state("wx1", "nope").await.unwrap().is_none());
    assert!(s.state_result("wx1", "nope").await.unwrap().is_none());

    assert!(
        s.save_state("s1", &state(NOW + 600), NOW, 1000)
            .await
            .unwrap()
    );
    assert!(
        s.save_state("s1", &state(NOW + 600), NOW, 1000)
            .await
            .is_err()
    );
    let t = key_ttl(&s, &s.app_key("wx1", "state:s1")).await;
    assert!(
        t > 600 + STATE_GRACE - 60 && t <= 600 + STATE_GRACE,
        "ttl {t}"
    );

    let p = s.peek_state("wx1", "s1").await.unwrap().expect("saved");
    assert_eq!(
        (p.appid.as_str(), p.want, p.stage),
        ("wx1", Scope::SnsapiUserinfo, Stage::Probe)
    );
    // Stored by the names older hubs wrote and read.
    let stored: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(s.app_key("wx1", "state:s1"))
        .arg(&["want", "stage"])
        .query_async(&mut s.conn())
        .await
        .unwrap();
    assert_eq!(
        stored,
        [Some("userinfo".to_string()), Some("probe".to_string())]
    );
    assert_eq!(
        (p.return_to.as_str(), p.expires_at),
        ("https://app.example/back?x=1", NOW + 600)
    );
    assert!(s.state_result("wx1", "s1").await.unwrap().is_none());

    // Expiry is the caller's: a state past it is still Fresh.
    match s
        .consume_state("wx1", "s1", Some("c1"), NOW + 700)
        .await
        .unwrap()
    {
        Consumed::Fresh(r) => assert_eq!(r.expires_at, NOW + 600),
        other => panic!("{other:?}"),
    }
    match s
        .consume_state("wx1", "s1", Some("c1"), NOW + 701)
        .await
        .unwrap()
    {
        Consumed::Again {
            record,
            used_at,
            result,
        } => {
            assert_eq!(record.appid, "wx1");
            assert_eq!(used_at, NOW + 700);
            assert!(result.is_none());
        }
        other => panic!("{other:?}"),
    }
    s.set_state_result("wx1", "s1", r#"{"openid":"o1"}"#)
        .await
        .unwrap();
    assert_eq!(
        s.state_result("wx1", "s1").await.unwrap().as_deref(),
        Some(r#"{"openid":"o1"}"#)
    );
    match s
        .consume_state("wx1", "s1", Some("c1"), NOW + 702)
        .await
        .unwrap()
    {
        Consumed::Again {
            used_at, result, ..
        } => {
            assert_eq!(used_at, NOW + 700);
            assert_eq!(result.as_deref(), Some(r#"{"openid":"o1"}"#));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.consume_state("wx1", "s1", Some("c2"), NOW).await.unwrap(),
        Consumed::Used(_)
    ));
    assert!(matches!(
        s.consume_state("wx1", "s1", None, NOW).await.unwrap(),
        Consumed::Used(_)
    ));
    // Consuming keeps the record and its TTL.
    assert!(s.peek_state("wx1", "s1").await.unwrap().is_some());
    assert!(key_ttl(&s, &s.app_key("wx1", "state:s1")).await > 0);

    // A refusal uses the state with no code: nothing repeats it.
    assert!(
        s.save_state("s2", &state(NOW + 600), NOW, 1000)
            .await
            .unwrap()
    );
    assert!(matches!(
        s.consume_state("wx1", "s2", None, NOW).await.unwrap(),
        Consumed::Fresh(_)
    ));
    assert!(matches!(
        s.consume_state("wx1", "s2", None, NOW).await.unwrap(),
        Consumed::Used(_)
    ));
    assert!(matches!(
        s.consume_state("wx1", "s2", Some("c1"), NOW).await.unwrap(),
        Consumed::Used(_)
    ));
    cleanup(&s).await;
}

#[tokio::test]
async fn an_account_holds_at_most_its_cap_of_states() {
    let s = store().await;
    assert!(s.save_state("a", &state(NOW + 600), NOW, 2).await.unwrap());
    assert!(s.save_state("b", &state(NOW + 600), NOW, 2).await.unwrap());
    assert!(
        !s.save_state("c", &state(NOW + 600), NOW, 2).await.unwrap(),
        "the third is refused"
    );
    assert!(s.peek_state("wx1", "c").await.unwrap().is_none());
    // Another account has its own cap.
    let other = StateRecord {
        appid: "wx2".into(),
        ..state(NOW + 600)
    };
    assert!(s.save_state("d", &other, NOW, 2).await.unwrap());
    // Once the first two have expired and their grace has passed, room again.
    let later = NOW + 600 + STATE_GRACE + 1;
    assert!(
        s.save_state("e", &state(later + 600), later, 2)
            .await
            .unwrap()
    );
    cleanup(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_get_one_fresh() {
    let s = store().await;
    assert!(
        s.save_state("race", &state(NOW + 600), NOW, 1000)
            .await
            .unwrap()
    );
    // Separate connections, as separate instances would have.
    let mut stores = Vec::new();
    for _ in 0..20 {
        stores.push(
            RedisStore::connect(&url(), s.prefix())
                .await
                .expect("connect"),
        );
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                st.consume_state("wx1", "race", Some("same"), NOW + i as i64)
                    .await
                    .expect("consume")
            })
        })
        .collect();
    let (mut fresh, mut again) = (0, 0);
    let mut used_ats = std::collections::HashSet::new();
    for t in futures::future::join_all(tasks).await {
        match t.expect("task") {
            Consumed::Fresh(_) => fresh += 1,
            Consumed::Again { used_at, .. } => {
                again += 1;
                used_ats.insert(used_at);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((fresh, again), (1, 19));
    // Every repeat saw the winner's mark.
    assert_eq!(used_ats.len(), 1);
    cleanup(&s).await;
}

#[tokio::test]
async fn tickets_are_single_use_and_expire() {
    let s = store().await;
    assert!(s.ticket_appid("h0").await.unwrap().is_none());
    assert!(s.redeem_ticket("h0", NOW).await.unwrap().is_none());

    s.save_ticket("h1", "wx1", r#"{"openid":"o1"}"#, NOW + 60, NOW)
        .await
        .unwrap();
    assert!(
        s.save_ticket("h1", "wx9", "{}", NOW + 60, NOW)
            .await
            .is_err()
    );
    let t = key_ttl(&s, &s.key("ticket:h1")).await;
    assert!(
        t > 60 + TICKET_GRACE - 60 && t <= 60 + TICKET_GRACE,
        "ttl {t}"
    );
    assert_eq!(s.ticket_appid("h1").await.unwrap().as_deref(), Some("wx1"));
    assert_eq!(
        s.redeem_ticket("h1", NOW + 59).await.unwrap(),
        Some(("wx1".to_string(), r#"{"openid":"o1"}"#.to_string()))
    );
    assert!(s.redeem_ticket("h1", NOW + 59).await.unwrap().is_none());
    assert!(s.ticket_appid("h1").await.unwrap().is_none());
    // The record stays until its TTL, only flagged.
    assert!(key_ttl(&s, &s.key("ticket:h1")).await > 0);

    s.save_ticket("h2", "wx1", "p", NOW + 60, NOW)
        .await
        .unwrap();
    assert!(s.redeem_ticket("h2", NOW + 60).await.unwrap().is_none());
    assert!(s.redeem_ticket("h2", NOW + 3600).await.unwrap().is_none());
    // Like SQLite, ticket_appid leaves the expiry to redeeming.
    assert_eq!(s.ticket_appid("h2").await.unwrap().as_deref(), Some("wx1"));
    // A failed redeem does not use the ticket up.
    assert_eq!(
        s.redeem_ticket("h2", NOW).await.unwrap(),
        Some(("wx1".to_string(), "p".to_string()))
    );

    // Already expired when saved: kept briefly, never redeemable.
    s.save_ticket("h3", "wx1", "p", NOW - 10, NOW)
        .await
        .unwrap();
    assert!(key_ttl(&s, &s.key("ticket:h3")).await > 0);
    assert!(s.redeem_ticket("h3", NOW).await.unwrap().is_none());
    cleanup(&s).await;
}

fn grant() -> Grant {
    Grant {
        appid: "wx1".into(),
        openid: "o1".into(),
        unionid: None,
        scope: "snsapi_base".into(),
        snapshot: false,
        access_token: "AT-secret-1".into(),
        access_expires_at: NOW + 7200,
        refresh_token: "RT-secret-1".into(),
        refresh_expires_at: NOW + 30 * 86400,
        profile: None,
        profile_fetched_at: None,
    }
}

fn same(a: &Grant, b: &Grant) -> bool {
    (
        &a.appid,
        &a.openid,
        &a.unionid,
        &a.scope,
        a.snapshot,
        &a.access_token,
        a.access_expires_at,
    ) == (
        &b.appid,
        &b.openid,
        &b.unionid,
        &b.scope,
        b.snapshot,
        &b.access_token,
        b.access_expires_at,
    ) && (
        &a.refresh_token,
        a.refresh_expires_at,
        &a.profile,
        a.profile_fetched_at,
    ) == (
        &b.refresh_token,
        b.refresh_expires_at,
        &b.profile,
        b.profile_fetched_at,
    )
}

#[tokio::test]
async fn grants_round_trip_replace_and_delete() {
    let s = store().await;
    assert!(s.load_grant("wx1", "o1").await.unwrap().is_none());

    let bare = grant();
    s.save_grant(&bare).await.unwrap();
    let got = s.load_grant("wx1", "o1").await.unwrap().expect("saved");
    assert!(same(&got, &bare));
    let t = key_ttl(&s, &s.app_key("wx1", "grant:o1")).await;
    let want = 30 * 86400 + GRANT_GRACE;
    assert!(t > want - 60 && t <= want, "ttl {t}");

    let full = Grant {
        unionid: Some("u1".into()),
        scope: "snsapi_userinfo".into(),
        snapshot: true,
        access_token: "AT-secret-2".into(),
        profile: Some(r#"{"nickname":"N"}"#.into()),
        profile_fetched_at: Some(NOW + 5),
        ..grant()
    };
    s.save_grant(&full).await.unwrap();
    let got = s.load_grant("wx1", "o1").await.unwrap().expect("saved");
    assert!(same(&got, &full));

    // Replacing with None fields drops the old values.
    s.save_grant(&bare).await.unwrap();
    let got = s.load_grant("wx1", "o1").await.unwrap().expect("saved");
    assert!(same(&got, &bare));

    // Another person's and another account's grants are separate.
    s.save_grant(&Grant {
        openid: "o2".into(),
        ..full.clone()
    })
    .await
    .unwrap();
    s.save_grant(&Grant {
        appid: "wx2".into(),
        ..full.clone()
    })
    .await
    .unwrap();
    s.delete_grant("wx1", "o1").await.unwrap();
    assert!(s.load_grant("wx1", "o1").await.unwrap().is_none());
    assert!(s.load_grant("wx1", "o2").await.unwrap().is_some());
    assert!(s.load_grant("wx2", "o1").await.unwrap().is_some());
    s.delete_grant("wx1", "o1").await.unwrap();
    assert!(!format!("{got:?}").contains("secret"));
    cleanup(&s).await;
}

#[tokio::test]
async fn malformed_records_name_the_field_not_the_value() {
    let s = store().await;
    let key = s.app_key("wx1", "grant:o1");
    let _: () = s
        .conn()
        .hset_multiple(&key, &[("appid", "wx1"), ("access_token", "AT-secret")])
        .await
        .unwrap();
    let e = s.load_grant("wx1", "o1").await.unwrap_err().to_string();
    assert!(e.contains("openid") && !e.contains("secret"), "{e}");
    cleanup(&s).await;
}

fn entry(at: i64, reason: wxhub::history::Reason) -> wxhub::history::Entry {
    wxhub::history::Entry {
        at,
        kind: "access_token".into(),
        reason,
        client: Some("shop".into()),
        outcome: "ok".into(),
        errcode: None,
        error: None,
        expires_in: Some(7200),
        instance: None,
    }
}

#[tokio::test]
async fn the_refresh_history_is_capped_newest_first_and_expires() {
    use wxhub::history::Reason;
    let s = store().await;
    let appid = "wx1111111111111111";
    for i in 0..5 {
        s.history_add(appid, &entry(NOW + i, Reason::Schedule), NOW - 86400, 3)
            .await
            .expect("add");
    }
    let got = s.history(appid, 0, 100).await.expect("read");
    let times: Vec<i64> = got.iter().map(|e| e.at).collect();
    assert_eq!(
        times,
        vec![NOW + 4, NOW + 3, NOW + 2],
        "capped, newest first"
    );
    assert_eq!(got[0].client.as_deref(), Some("shop"));
    // Entries before `since` are not returned; the list expires by itself.
    assert_eq!(s.history(appid, NOW + 3, 100).await.unwrap().len(), 2);
    assert_eq!(s.history(appid, 0, 1).await.unwrap().len(), 1);
    let ttl: i64 = s
        .conn()
        .ttl(s.app_key(appid, "history"))
        .await
        .expect("ttl");
    assert!(ttl > 86000 && ttl <= 86400 + 4, "{ttl}");
    cleanup(&s).await;
}

fn push_for(key: &str, subs: &[&str]) -> push::NewPush {
    push::NewPush {
        appid: "wx1111111111111111".into(),
        dedup_key: key.into(),
        message_id: format!("id-{key}"),
        openid: "o1".into(),
        raw_xml: format!("<xml>{key}</xml>"),
        received_at: NOW,
        subscribers: subs.iter().map(|s| (*s).to_string()).collect(),
        follow: None,
        max_backlog: 10,
        keep_until: NOW + 86_400,
    }
}

#[tokio::test]
async fn a_subscriber_gone_for_the_keep_time_leaves_no_queue_and_one_back_keeps_it() {
    const KEEP: i64 = 86_400;
    let appid = "wx1111111111111111";
    let s = store().await;
    // A sweep at `now` with `subs` configured: how many queues went.
    let sweep = |now: i64, subs: &[&str]| {
        let live: Vec<(String, String)> = subs
            .iter()
            .map(|x| (appid.to_string(), (*x).to_string()))
            .collect();
        let s = s.clone();
        async move { s.push_sweep(now, &live, KEEP).await.expect("sweep") }
    };
    s.push_accept(&push_for("m:1", &["a", "gone", "back"]))
        .await
        .expect("accept");
    // What a failing and a parked delivery leave besides the queue.
    let (r, p) = (
        s.app_key(appid, "push:r:gone"),
        s.app_key(appid, "push:p:gone"),
    );
    let _: () = s.conn().hset(&r, "1-0", "1|0|0|").await.expect("hset");
    let _: () = s
        .conn()
        .xadd(&p, "*", &[("message_id", "id-m:1")])
        .await
        .expect("xadd");
    let exists = |k: String| {
        let s = s.clone();
        async move { s.conn().exists::<_, bool>(k).await.expect("exists") }
    };
    let queue = |sub: &str| s.app_key(appid, &format!("push:q:{sub}"));

    assert_eq!(sweep(NOW, &["a", "gone", "back"]).await, 0);
    // Both taken off; `back` returns before the keep time is over.
    assert_eq!(sweep(NOW + 60, &["a"]).await, 0);
    assert_eq!(sweep(NOW + 600, &["a", "back"]).await, 0);
    assert_eq!(sweep(NOW + 660, &["a"]).await, 0);
    assert!(exists(queue("gone")).await, "kept within the keep time");

    assert_eq!(
        sweep(NOW + KEEP + 120, &["a"]).await,
        1,
        "only the subscriber gone since the first sweep"
    );
    for k in [queue("gone"), r, p] {
        assert!(!exists(k.clone()).await, "{k} is gone");
    }
    assert!(
        exists(queue("a")).await,
        "a configured subscriber keeps its queue"
    );
    assert!(
        exists(queue("back")).await,
        "`back` was configured again at NOW + 600"
    );
    assert_eq!(sweep(NOW + KEEP + 700, &["a"]).await, 1);
    assert!(!exists(queue("back")).await);
    assert!(
        exists(queue("a")).await,
        "hourly refreshes keep `a` recorded"
    );
    let recorded: Vec<String> = s
        .conn()
        .zrange(format!("{}:push:lanes", s.prefix()), 0, -1)
        .await
        .expect("zrange");
    assert_eq!(recorded, vec![format!("{appid}\na")]);
    cleanup(&s).await;
}

/// A queue left by a subscriber removed before hubs recorded subscribers in
/// `push:lanes` is found by the sweeps' one-off `SCAN`, recorded as of
/// then, and forgotten once the keep time has passed; a configured
/// subscriber's is kept, and once the walk is done no instance walks again.
#[tokio::test]
async fn a_queue_older_than_the_record_of_subscribers_is_found_and_forgotten() {
    const KEEP: i64 = 86_400;
    let appid = "wx1111111111111111";
    let s = store().await;
    s.push_accept(&push_for("m:1", &["kept", "orphan"]))
        .await
        .expect("accept");
    let queue = |sub: &str| s.app_key(appid, &format!("push:q:{sub}"));
    let exists = |k: String| {
        let s = s.clone();
        async move { s.conn().exists::<_, bool>(k).await.expect("exists") }
    };
    let live = vec![(appid.to_string(), "kept".to_string())];
    // Walk the whole keyspace (one SCAN step per sweep): within the keep
    // time, nothing goes.
    let marker = format!("{}:push:lanes:adopted", s.prefix());
    let mut sweeps = 0;
    while !exists(marker.clone()).await {
        assert_eq!(s.push_sweep(NOW, &live, KEEP).await.expect("sweep"), 0);
        sweeps += 1;
        assert!(sweeps < 10_000, "the walk never ended");
    }
    let recorded: f64 = s
        .conn()
        .zscore(
            format!("{}:push:lanes", s.prefix()),
            format!("{appid}\norphan"),
        )
        .await
        .expect("zscore");
    assert_eq!(
        recorded as i64, NOW,
        "recorded as of the sweep that found it"
    );
    assert!(exists(queue("orphan")).await);

    assert_eq!(
        s.push_sweep(NOW + KEEP + 60, &live, KEEP)
            .await
            .expect("sweep"),
        1
    );
    assert!(
        !exists(queue("orphan")).await,
        "forgotten after the keep time"
    );
    assert!(exists(queue("kept")).await);
    cleanup(&s).await;
}
