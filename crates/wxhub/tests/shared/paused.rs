//! An owner paused (SIGSTOP) in the middle of a refresh, past its lease,
//! then resumed: the token it fetched cannot overwrite the newer one.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{Cluster, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_overwrite_the_newer_token() {
    let lease = Duration::from_millis(1500);
    let c = Cluster::start(Setup {
        lease_ms: lease.as_millis() as u64,
        // Long enough that the resumed owner reads the answer it waited
        // for, instead of timing out: the case fencing exists for.
        upstream_timeout_ms: 30_000,
        instances: 2,
        ..Setup::default()
    })
    .await;
    let (owner, _) = c.wait_owner(Duration::from_secs(10)).await;
    let other = 1 - owner;
    let (_, v) = c.token_from(other).await;
    let first = v["access_token"].as_str().unwrap().to_string();

    // The owner's refresh call is held 300 ms in the simulator; the owner is
    // stopped while it waits. The platform mints its token meanwhile.
    let next = c.account(owner).await["slots"][0]["next_refresh_at"]
        .as_i64()
        .unwrap();
    let before = c.fetches();
    c.sim_post(
        "/_sim/faults",
        json!({"endpoint": "/cgi-bin/token", "delay_ms": 300}),
    )
    .await;
    c.advance(next - c.now()).await;
    let t = Instant::now();
    while c.fetches() == before {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the owner never fetched"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    c.signal(owner, "STOP");

    // The other instance takes over once the lease lapses and, knowing a
    // fetch was in flight, fetches at once.
    let t = Instant::now();
    let newer = loop {
        let (s, v) = c.token_from(other).await;
        assert_eq!(s, 200, "{v}");
        let tok = v["access_token"].as_str().unwrap().to_string();
        if tok != first && c.account(other).await["refresh_owner"] == true {
            break tok;
        }
        assert!(t.elapsed() < lease * 4, "no takeover\n{}", c.log(other));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        c.fetches() - before,
        2,
        "the paused owner's fetch and the new owner's"
    );

    c.signal(owner, "CONT");
    // The resumed instance finishes its call and tries to write: refused.
    let t = Instant::now();
    loop {
        let m = c.metrics(owner).await;
        if m.contains("wxhub_fenced_write_rejected_total{appid=\"wx1111111111111111\"} 1") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no refused write\n{m}\n{}",
            c.log(owner)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In classic mode the discarded token may have been minted after the
    // newer one and doomed it: the owner replaces it once, as a precaution.
    let t = Instant::now();
    let agreed = loop {
        let (_, a) = c.token_from(owner).await;
        let (_, b) = c.token_from(other).await;
        let (a, b) = (a["access_token"].clone(), b["access_token"].clone());
        if a == b && a != newer.as_str() && c.fetches() - before == 3 {
            break a.as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{a} vs {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(agreed, first);
    assert_eq!(
        c.use_token(&agreed).await,
        0,
        "the token everyone serves works"
    );
    assert_eq!(c.account(owner).await["refresh_owner"], false);
    assert_eq!(c.account(other).await["refresh_owner"], true);
    assert!(
        !c.metrics(other)
            .await
            .contains("wxhub_foreign_refresh_total{"),
        "a stale instance is not a foreign system"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.fetches() - before, 3, "nothing more");
}
