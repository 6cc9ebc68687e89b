//! Leases and fenced writes: a holder that lapsed can neither fetch nor
//! write, marks of fetches in flight, sequence numbers that never go back.

use std::time::Duration;

use wxhub::credentials::Secret;
use wxhub::shared::{LeaseOutcome, Shared};
use wxhub::store::{Record, RedisStore, Store, Written};

/// Two instances on one Redis prefix: their Shared sides and a store each.
struct Pair {
    a: Shared,
    b: Shared,
    store_a: Store,
    store_b: Store,
    prefix: String,
}

async fn pair(lease_ms: u64) -> Pair {
    let prefix = crate::unique_prefix("leases");
    let connect = || async {
        RedisStore::connect(&crate::url(), &prefix)
            .await
            .expect("a Redis for tests (WXHUB_TEST_REDIS)")
    };
    let ttl = Duration::from_millis(lease_ms);
    Pair {
        a: Shared::new(connect().await, "a".into(), ttl),
        b: Shared::new(connect().await, "b".into(), ttl),
        store_a: Store::Redis(connect().await),
        store_b: Store::Redis(connect().await),
        prefix,
    }
}

impl Pair {
    async fn cleanup(&self) {
        let redis = self.a.redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut redis.conn())
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut redis.conn())
                .await;
        }
    }
}

fn record(value: &str, fence: u64) -> Record {
    Record {
        value: Secret::new(value),
        expires_at: 9_000,
        fetched_at: 1_000,
        first_seen: 1_000,
        fence,
        seq: 0,
        refresh_at: 8_000,
        pending_since: None,
    }
}

fn stored(w: Written) -> u64 {
    match w {
        Written::Stored(seq) => seq,
        Written::Refused => panic!("the write was refused"),
    }
}

const K: &str = "access_token:classic";

/// The fencing number of a lease just taken (not renewed).
fn taken(outcome: Result<LeaseOutcome, wxhub::store::StoreError>, what: &str) -> u64 {
    match outcome {
        Ok(LeaseOutcome::Held { fence, new: true }) => fence,
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test]
async fn a_lapsed_holder_can_neither_fetch_nor_write() {
    let p = pair(300).await;
    let f1 = taken(p.a.acquire("wx1").await, "a takes the free lease");
    assert_eq!(
        p.a.acquire("wx1").await.unwrap(),
        LeaseOutcome::Held {
            fence: f1,
            new: false
        },
        "renewed"
    );
    assert!(matches!(
        p.b.acquire("wx1").await.unwrap(),
        LeaseOutcome::Other { lapses_in } if lapses_in <= Duration::from_millis(300)
    ));
    let (ha1, hb) = (p.a.holder(f1), |f| p.b.holder(f));
    let s1 = stored(
        p.store_a
            .write_credential("wx1", K, &record("T1", f1), &ha1)
            .await
            .unwrap(),
    );
    // a pauses past its lease; b takes over with a higher fence.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(p.a.holding("wx1"), None, "a no longer trusts its lease");
    let f2 = taken(p.b.acquire("wx1").await, "b takes the lapsed lease");
    assert!(f2 > f1);
    assert!(
        p.store_b
            .begin_fetch("wx1", K, &hb(f2), 1_100)
            .await
            .unwrap()
    );
    let s2 = stored(
        p.store_b
            .write_credential("wx1", K, &record("T2", f2), &hb(f2))
            .await
            .unwrap(),
    );
    assert!(s2 > s1, "sequence grows");
    // a resumes: nothing it does lands.
    assert!(!p.store_a.begin_fetch("wx1", K, &ha1, 1_200).await.unwrap());
    assert!(matches!(
        p.store_a
            .write_credential("wx1", K, &record("T3", f1), &ha1)
            .await
            .unwrap(),
        Written::Refused
    ));
    let now = p.store_b.load_credential("wx1", K).await.unwrap().unwrap();
    assert_eq!(
        (now.value.expose_secret(), now.fence, now.seq),
        ("T2", f2, s2)
    );
    assert_eq!(now.pending_since, None, "a write clears the mark");
    // Releasing is for the holder only.
    p.a.release_all().await;
    assert!(matches!(
        p.a.acquire("wx1").await.unwrap(),
        LeaseOutcome::Other { .. }
    ));
    p.cleanup().await;
}

#[tokio::test]
async fn the_earliest_fetch_mark_stays_until_its_own_fetch_clears_it() {
    let p = pair(5_000).await;
    let fence = taken(p.a.acquire("wx1").await, "lease");
    let (s, h) = (&p.store_a, p.a.holder(fence));
    stored(
        s.write_credential("wx1", K, &record("T1", fence), &h)
            .await
            .unwrap(),
    );
    assert!(s.begin_fetch("wx1", K, &h, 1_000).await.unwrap());
    assert!(s.begin_fetch("wx1", K, &h, 1_030).await.unwrap());
    let pending = async || {
        s.load_credential("wx1", K)
            .await
            .unwrap()
            .unwrap()
            .pending_since
    };
    assert_eq!(pending().await, Some(1_000));
    s.end_fetch("wx1", K, &h, 1_030).await.unwrap();
    assert_eq!(pending().await, Some(1_000), "not its mark");
    s.end_fetch("wx1", K, &h, 1_000).await.unwrap();
    assert_eq!(pending().await, None);
    s.mark_minted("wx1", K, 1_050).await.unwrap();
    assert_eq!(pending().await, Some(1_050));
    p.cleanup().await;
}

#[tokio::test]
async fn sequence_numbers_grow_across_an_emptied_redis() {
    let p = pair(5_000).await;
    let k = "ticket:jsapi";
    let fence = taken(p.a.acquire("wx1").await, "lease");
    let mut last = 0;
    for _ in 0..20 {
        let h = p.a.holder(fence);
        let s = stored(
            p.store_a
                .write_credential("wx1", k, &record("T", fence), &h)
                .await
                .unwrap(),
        );
        assert!(s > last);
        last = s;
    }
    // Redis restarted empty: the fence counter starts over (from the
    // server's clock, so not below the old fences either), and the sequence
    // does not go back.
    p.cleanup().await;
    let f = taken(p.a.acquire("wx1").await, "lease again");
    assert!(f >= fence, "{f} after {fence}");
    let h = p.a.holder(f);
    let s = stored(
        p.store_a
            .write_credential("wx1", k, &record("T", f), &h)
            .await
            .unwrap(),
    );
    assert!(s > last, "{s} after {last}");
    p.cleanup().await;
}

/// An appid other than `appid` in the same partition (`same`) or another.
fn neighbour(appid: &str, same: bool) -> String {
    let n = wxhub::shared::DEFAULT_PARTITIONS;
    let p = wxhub::shared::partition_of(appid, n);
    (0..10_000)
        .map(|i| format!("wx{i:016}"))
        .find(|c| c != appid && (wxhub::shared::partition_of(c, n) == p) == same)
        .expect("a neighbour among 10,000")
}

#[tokio::test]
async fn one_lease_covers_a_partition_of_accounts() {
    let p = pair(5_000).await;
    let (near, far) = (neighbour("wx1", true), neighbour("wx1", false));
    let f = taken(p.a.acquire("wx1").await, "a takes wx1's partition");
    assert_eq!(
        p.a.holding(&near),
        Some(f),
        "the partition covers its neighbour"
    );
    assert_eq!(p.a.holding(&far), None);
    assert!(
        matches!(
            p.b.acquire(&near).await.unwrap(),
            LeaseOutcome::Other { .. }
        ),
        "b cannot take an account of a's partition"
    );
    taken(p.b.acquire(&far).await, "b takes another partition");
    // The neighbour is a's only once stamped: its fenced writes check that.
    let h = p.a.holder(f);
    assert!(!p.store_a.begin_fetch(&near, K, &h, 1_000).await.unwrap());
    assert!(p.a.stamp(&near, f).await.unwrap());
    assert!(p.store_a.begin_fetch(&near, K, &h, 1_000).await.unwrap());
    assert_eq!(p.a.held_count(), 1);
    p.cleanup().await;
}

#[tokio::test]
async fn a_stamp_under_a_newer_fence_is_never_replaced_by_an_older_one() {
    let p = pair(300).await;
    let f1 = taken(p.a.acquire("wx1").await, "a");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let f2 = taken(p.b.acquire("wx1").await, "b after a lapsed");
    assert!(f2 > f1);
    // a, resumed, still believes in f1: its stamp is refused and it lets
    // the partition go.
    assert!(!p.a.stamp("wx1", f1).await.unwrap());
    assert_eq!(p.a.held_count(), 0);
    let hb = p.b.holder(f2);
    assert!(p.store_b.begin_fetch("wx1", K, &hb, 1_000).await.unwrap());
    p.cleanup().await;
}

#[tokio::test]
async fn fences_grow_when_the_partition_count_changes() {
    let p = pair(300).await;
    let f1 = taken(p.a.acquire("wx1").await, "a, 64 partitions");
    stored(
        p.store_a
            .write_credential("wx1", K, &record("T1", f1), &p.a.holder(f1))
            .await
            .unwrap(),
    );
    p.a.release_all().await;
    // Every instance stopped, the count changed: wx1's partition now has a
    // counter of its own, and its fence must still beat the stored one.
    let redis = RedisStore::connect(&crate::url(), &p.prefix).await.unwrap();
    let c = Shared::with_partitions(redis, "c".into(), Duration::from_millis(300), 7);
    let f2 = taken(c.acquire("wx1").await, "c, 7 partitions");
    assert!(f2 > f1, "{f2} after {f1}");
    stored(
        p.store_b
            .write_credential("wx1", K, &record("T2", f2), &c.holder(f2))
            .await
            .unwrap(),
    );
    p.cleanup().await;
}

#[tokio::test]
async fn the_first_instance_sets_the_partition_count() {
    let p = pair(5_000).await;
    let r = p.a.redis();
    assert_eq!(Shared::agree_partitions(r, 16).await.unwrap(), 16);
    assert_eq!(
        Shared::agree_partitions(r, 64).await.unwrap(),
        16,
        "the stored count wins"
    );
    p.cleanup().await;
}

#[tokio::test]
async fn every_instance_can_tell_which_one_holds_a_lease() {
    let p = pair(10_000).await;
    let appid = "wx1111111111111111";
    assert_eq!(p.b.lease_holder(appid).await.unwrap(), None);
    assert!(matches!(
        p.a.acquire(appid).await.unwrap(),
        LeaseOutcome::Held { .. }
    ));
    assert_eq!(p.b.lease_holder(appid).await.unwrap().as_deref(), Some("a"));
    p.a.release_all().await;
    assert_eq!(p.b.lease_holder(appid).await.unwrap(), None);
    p.cleanup().await;
}
