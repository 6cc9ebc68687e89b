//! Accounts changed through one instance's admin API reach every instance
//! within a second; a removed one answers 404 everywhere and is no longer
//! fetched.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Cluster, Setup};

const NEW: &str = "wx4444444444444444";
const NEW_SECRET: &str = "shared-new-secret-0123456789abcdef";

async fn token_status(c: &Cluster, i: usize) -> u16 {
    c.http
        .get(format!("{}/v1/apps/{NEW}/access_token", c.hub(i).base))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until every live instance answers `want` for the new account;
/// how long that took.
async fn everywhere(c: &Cluster, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for i in c.live() {
            all &= token_status(c, i).await == want;
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not {want} everywhere after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_added_on_one_instance_is_served_by_every_instance_within_a_second() {
    let c = Cluster::start(Setup {
        sim_account: format!("\n[[accounts]]\nappid = \"{NEW}\"\nsecret = \"{NEW_SECRET}\"\n"),
        ..Setup::default()
    })
    .await;
    c.wait_owner(Duration::from_secs(10)).await;
    for i in c.live() {
        assert_eq!(token_status(&c, i).await, 404);
    }
    let r = c
        .http
        .put(format!("{}/v1/admin/accounts/{NEW}", c.hub(0).base))
        .bearer_auth(&c.admin)
        .json(&json!({"secret": NEW_SECRET, "tickets": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let took = everywhere(&c, 200).await;
    assert!(
        took < Duration::from_secs(1),
        "served everywhere after {took:?}"
    );
    let fetched = |c: &Cluster| {
        c.sim.sim().stats()["apps"][NEW]["tokens_issued"]["stable"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(fetched(&c), 1, "one fetch for three instances");

    let r = c
        .http
        .delete(format!("{}/v1/admin/accounts/{NEW}", c.hub(1).base))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let took = everywhere(&c, 404).await;
    assert!(
        took < Duration::from_secs(1),
        "gone everywhere after {took:?}"
    );
    // Past the token's refresh time: nobody fetches it again.
    c.advance(3 * 7200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fetched(&c), 1);
    let audit = c.admin_get(2, "/v1/admin/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["account.remove", "account.create"]);
}

/// Two operators change different fields of one account at once, each
/// through another instance: both changes land. Each change reads the
/// stored row, merges and writes it back only if the row is still what it
/// read (else it reads again), so neither write undoes the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_different_fields_made_at_once_on_two_instances_both_land() {
    let c = Cluster::start(Setup::default()).await;
    c.wait_owner(Duration::from_secs(10)).await;
    let path = format!("/v1/admin/accounts/{}", crate::cluster::APPID);
    let patch = |i: usize, body: Value| {
        let url = format!("{}{path}", c.hub(i).base);
        let req = c.http.patch(url).bearer_auth(&c.admin).json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for round in 0..8 {
        let name = format!("Name {round}");
        let domain = format!("d{round}.example.com");
        let (a, b) = tokio::join!(
            patch(0, json!({"name": name})),
            patch(1, json!({"jssdk_domains": [domain]}))
        );
        assert_eq!((a, b), (200, 200), "round {round}");
        // Both fields everywhere: a lost write never shows up.
        let started = Instant::now();
        loop {
            let mut all = true;
            for i in c.live() {
                let v = c.admin_get(i, &path).await;
                all &= v["name"] == name.as_str() && v["jssdk_domains"] == json!([domain]);
            }
            if all {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "round {round}: one of the two changes was lost"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
