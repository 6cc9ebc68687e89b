//! The admin API: listing many accounts a page at a time, and readiness
//! that one bad account among many does not take away.

use serde_json::Value;

use crate::helpers::*;

/// `n` more accounts, known to the simulator and the hub; the hub has the
/// wrong secret for the last one.
fn more_accounts(n: usize) -> Options {
    let mut sim = String::new();
    let mut hub = String::new();
    for i in 1..=n {
        let appid = format!("wx20000000000000{i:02}");
        let secret = format!("secret-of-{appid}");
        sim.push_str(&format!(
            "\n[[accounts]]\nappid = \"{appid}\"\nsecret = \"{secret}\"\nname = \"Shop {i}\"\n"
        ));
        let given = if i == n { "wrong".to_string() } else { secret };
        hub.push_str(&format!(
            "\n[[accounts]]\nappid = \"{appid}\"\nsecret = \"{given}\"\nname = \"Shop {i}\"\ntickets = []\n"
        ));
    }
    Options {
        world: world(&sim),
        extra: hub,
        ..Options::default()
    }
}

async fn page(hub: &TestHub, query: &str) -> Value {
    let r = hub.get_as(&format!("/v1/apps?{query}"), &hub.admin).await;
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

fn appids(v: &Value) -> Vec<String> {
    v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["appid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn accounts_are_listed_a_page_at_a_time_and_found_by_search() {
    let hub = TestHub::with(more_accounts(5)).await;
    // 5 more, the test account and the website app.
    let first = page(&hub, "limit=3").await;
    assert_eq!(first["total"], 7);
    assert_eq!(first["next_offset"], 3);
    let second = page(&hub, "offset=3&limit=3").await;
    let third = page(&hub, "offset=6&limit=3").await;
    assert!(third["next_offset"].is_null());
    let mut all = appids(&first);
    all.extend(appids(&second));
    all.extend(appids(&third));
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "AppID order, no gaps or repeats");
    assert_eq!(all.len(), 7);
    // By name, any case, and by part of the AppID.
    assert_eq!(
        appids(&page(&hub, "q=SHOP%203").await),
        ["wx2000000000000003"]
    );
    assert_eq!(page(&hub, "q=200000000000000").await["total"], 5);
    // Only those that need attention: the one with the wrong secret, once
    // the hub has tried it.
    hub.run_due().await;
    let troubled = page(&hub, "state=problem").await;
    assert_eq!(appids(&troubled), ["wx2000000000000005"], "{troubled}");
    let bad = hub.get_as("/v1/apps?limit=100000", &hub.admin).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn one_bad_account_among_many_does_not_make_the_hub_unready() {
    let hub = TestHub::with(more_accounts(3)).await;
    hub.run_due().await;
    let (s, r) = hub.readyz().await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["unhealthy"], 1, "{r}");
    assert_eq!(r["problems"][0]["appid"], "wx2000000000000003", "{r}");
    assert!(
        r["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("AppSecret"),
        "{r}"
    );
}
