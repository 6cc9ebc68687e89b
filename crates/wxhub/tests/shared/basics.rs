use std::time::Duration;

use crate::cluster::{Cluster, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_one_fetch_and_every_instance_serves_the_same_token() {
    let c = Cluster::start(Setup::default()).await;
    let (owner, _) = c.wait_owner(Duration::from_secs(10)).await;
    let mut tokens = Vec::new();
    for i in c.live() {
        let (s, v) = c.token_from(i).await;
        assert_eq!(s, 200, "hub {i}: {v}");
        tokens.push(v["access_token"].as_str().unwrap().to_string());
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "one token for all");
    assert_eq!(c.fetches(), 1, "one upstream fetch for three instances");
    assert_eq!(c.use_token(&tokens[0]).await, 0);
    let m = c.metrics(owner).await;
    assert!(
        m.contains("wxhub_lease_held{appid=\"wx1111111111111111\"} 1"),
        "{m}"
    );
    let (s, r) = c.readyz(owner).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["shared"]["redis"]["up"], true);
    let page = |i: usize| {
        let req = c
            .http
            .get(format!("{}/", c.hub(i).base))
            .bearer_auth(&c.admin);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    // The owner's console says it refreshes the account; every other
    // instance's names the owner.
    let owned = page(owner).await;
    let marker = "refreshed by this instance (<code>";
    let at = owned.find(marker).unwrap_or_else(|| panic!("{owned}")) + marker.len();
    let instance = owned[at..].split('<').next().unwrap().to_string();
    assert!(owned.contains("Redis is up"), "{owned}");
    for i in c.live().into_iter().filter(|i| *i != owner) {
        let page = page(i).await;
        assert!(
            page.contains(&format!("refreshed by instance <code>{instance}</code>"))
                && page.contains("Redis is up"),
            "hub {i}: {page}"
        );
        // The history is in Redis: every instance shows the owner's fetch.
        let v: serde_json::Value = c
            .http
            .get(format!(
                "{}/v1/apps/{}/history",
                c.hub(i).base,
                crate::cluster::APPID
            ))
            .bearer_auth(&c.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "access_token")
            .unwrap_or_else(|| panic!("hub {i}: {v}"));
        assert_eq!(token["instance"], instance.as_str(), "{v}");
        assert_eq!(token["outcome"], "ok", "{v}");
    }
    // Canary: nothing secret in any instance's log or metrics.
    for i in c.live() {
        let text = std::fs::read_to_string(&c.hub(i).log).unwrap() + &c.metrics(i).await;
        assert!(text.contains("INFO"), "the log is captured");
        for secret in [crate::cluster::SECRET, tokens[0].as_str(), c.key.as_str()] {
            assert!(!text.contains(secret), "hub {i} leaks a secret");
        }
    }
}

/// 100 reports of the same token spread over three instances, two of which
/// do not own the refresh: they forward to the owner, and one fetch results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_reports_to_any_instance_make_one_fetch() {
    let c = Cluster::start(Setup::default()).await;
    c.wait_owner(Duration::from_secs(10)).await;
    let (_, v) = c.token_from(0).await;
    let old = v["access_token"].as_str().unwrap().to_string();
    for i in c.live() {
        c.token_from(i).await;
    }
    // Another system's fetch: the platform now rejects the held token.
    c.kill_token_elsewhere().await;
    let before = c.fetches();
    let mut tasks = Vec::new();
    for n in 0..100 {
        let i = n % 3;
        let http = c.http.clone();
        let url = format!(
            "{}/v1/apps/{}/access_token/invalidate",
            c.hub(i).base,
            crate::cluster::APPID
        );
        let key = c.key.clone();
        let old = old.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&serde_json::json!({ "access_token": old }))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (s, v["access_token"].as_str().unwrap_or("").to_string())
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(c.fetches() - before, 1, "exactly one refresh");
    let new = &answers[0].1;
    assert_ne!(new, &old);
    for (s, t) in &answers {
        assert_eq!(*s, 200);
        assert_eq!(t, new, "every caller gets the new token");
    }
    for i in c.live() {
        let (_, v) = c.token_from(i).await;
        assert_eq!(v["access_token"].as_str().unwrap(), new, "hub {i}");
    }
    // A report of the older token changes nothing.
    let (s, v) = c.invalidate_at(2, &old).await;
    assert_eq!(
        (s, v["access_token"].as_str().unwrap()),
        (200, new.as_str())
    );
    assert_eq!(c.fetches() - before, 1);
}

/// A client's rate limit holds across the instances: spreading its calls
/// over them gains it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rate_limits_hold_across_instances() {
    let c = Cluster::start(Setup {
        limits: "[limits]\ninvalidate = { per_minute = 60, burst = 4 }\n",
        ..Setup::default()
    })
    .await;
    c.wait_owner(Duration::from_secs(10)).await;
    let (_, v) = c.token_from(0).await;
    let token = v["access_token"].as_str().unwrap().to_string();
    let mut codes = Vec::new();
    for n in 0..6 {
        codes.push(c.invalidate_at(n % 3, &token).await.0);
    }
    assert_eq!(
        codes,
        [200, 200, 200, 200, 429, 429],
        "one bucket for three instances"
    );
}

/// Web authorization started on one instance finishes on another and is
/// redeemed on a third: states, grants and tickets live in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_can_cross_instances() {
    let c = Cluster::start(Setup::default()).await;
    let app = crate::cluster::APPID;
    let r = c
        .http
        .get(format!(
            "{}/oauth/{app}/authorize?scope=userinfo&return_to=http://127.0.0.1:9/done",
            c.hub(0).base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let mut url = r.headers()["location"].to_str().unwrap().to_string();
    // Follow the simulator's redirects as Bob (who consents); the hub's
    // callback is answered by instance 1 instead of instance 0.
    let mut ticket = None;
    for _ in 0..8 {
        let url_now = url.replace(&c.hub(0).base, &c.hub(1).base);
        let r = c
            .http
            .get(&url_now)
            .header("cookie", "wxsim_person=bob")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            302,
            "{url_now}: {}",
            r.text().await.unwrap()
        );
        let next = r.headers()["location"].to_str().unwrap().to_string();
        if next.starts_with("http://127.0.0.1:9/done") {
            let u = url::Url::parse(&next).unwrap();
            ticket = u
                .query_pairs()
                .find(|(k, _)| k == "wxhub_ticket")
                .map(|(_, v)| v.to_string());
            break;
        }
        url = next;
    }
    let ticket = ticket.expect("a hand-over ticket");
    let r = c
        .http
        .post(format!("{}/v1/oauth/tickets/redeem", c.hub(2).base))
        .bearer_auth(&c.key)
        .json(&serde_json::json!({ "ticket": ticket }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["profile"]["nickname"], "Bob", "{v}");
    // Single use across instances too.
    let r = c
        .http
        .post(format!("{}/v1/oauth/tickets/redeem", c.hub(0).base))
        .bearer_auth(&c.key)
        .json(&serde_json::json!({ "ticket": ticket }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // The stored profile is readable from any instance.
    let openid = v["openid"].as_str().unwrap();
    let r = c
        .http
        .get(format!("{}/v1/apps/{app}/users/{openid}", c.hub(0).base))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// A rolling restart: SIGTERM gives the leases back, so the next owner
/// takes over at its next renewal instead of after the lease time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_its_leases_over_at_once() {
    let lease = Duration::from_millis(9000);
    let mut c = Cluster::start(Setup {
        lease_ms: lease.as_millis() as u64,
        instances: 2,
        ..Setup::default()
    })
    .await;
    let (owner, _) = c.wait_owner(Duration::from_secs(10)).await;
    c.signal(owner, "TERM");
    let t = std::time::Instant::now();
    let status = c.hubs[owner].as_mut().unwrap().child.wait().await.unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    c.hubs[owner] = None;
    let (next, _) = c.wait_owner(Duration::from_secs(10)).await;
    let took = t.elapsed();
    assert_ne!(next, owner);
    assert!(
        took < lease.mul_f64(0.6),
        "taken over after {took:?}, not after the {lease:?} lease"
    );
}

/// Tickets follow their account's lease: one getticket for the cluster,
/// and every instance signs JS-SDK configs with the same ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_fetched_once_and_shared() {
    let c = Cluster::start(Setup {
        mode: "stable",
        tickets: "[\"jsapi\"]",
        ..Setup::default()
    })
    .await;
    c.wait_owner(Duration::from_secs(10)).await;
    let app = crate::cluster::APPID;
    let mut tickets = Vec::new();
    for i in c.live() {
        let r = c
            .http
            .get(format!("{}/v1/apps/{app}/jsapi_ticket", c.hub(i).base))
            .bearer_auth(&c.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "hub {i}");
        let v: serde_json::Value = r.json().await.unwrap();
        tickets.push(v["jsapi_ticket"].as_str().unwrap().to_string());
    }
    assert!(
        tickets.windows(2).all(|w| w[0] == w[1]),
        "one ticket for all"
    );
    assert_eq!(c.calls("/cgi-bin/ticket/getticket"), 1);
    assert_eq!(c.fetches(), 1);
}

/// Many accounts (a third-party platform's case): every account has
/// exactly one owner, one fetch, and the same token on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_accounts_one_owner_and_one_fetch_each() {
    let extra = 300;
    let c = Cluster::start(Setup {
        instances: 2,
        extra_accounts: extra,
        ..Setup::default()
    })
    .await;
    let appids: Vec<String> = std::iter::once(crate::cluster::APPID.to_string())
        .chain((0..extra).map(crate::cluster::extra_appid))
        .collect();
    let t = std::time::Instant::now();
    loop {
        let mut owners = std::collections::HashMap::new();
        for i in c.live() {
            for a in c.apps(i).await.unwrap()["apps"].as_array().unwrap() {
                if a["refresh_owner"] == true {
                    *owners
                        .entry(a["appid"].as_str().unwrap().to_string())
                        .or_insert(0) += 1;
                }
            }
        }
        assert!(
            owners.values().all(|n| *n == 1),
            "two owners of one account"
        );
        if owners.len() == appids.len() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} of {} owned",
            owners.len(),
            appids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for appid in &appids {
        let mut seen = Vec::new();
        for i in c.live() {
            let r = c
                .http
                .get(format!("{}/v1/apps/{appid}/access_token", c.hub(i).base))
                .bearer_auth(&c.key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{appid} on hub {i}");
            let v: serde_json::Value = r.json().await.unwrap();
            seen.push(v["access_token"].as_str().unwrap().to_string());
        }
        assert_eq!(seen[0], seen[1], "{appid}: one token on both instances");
    }
    let stats = c.sim.sim().stats();
    for appid in &appids {
        let calls = &stats["apps"][appid]["calls"];
        let fetches = calls["/cgi-bin/token"].as_u64().unwrap_or(0)
            + calls["/cgi-bin/stable_token"].as_u64().unwrap_or(0);
        assert_eq!(fetches, 1, "{appid}: one fetch");
    }
}

/// Refreshing is spread over the instances: each ends up with its share,
/// a dead instance's accounts go to the survivors, a new instance gets its
/// share back, and none of it costs a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_is_balanced_across_instances() {
    let extra = 29;
    let mut c = Cluster::start(Setup {
        extra_accounts: extra,
        ..Setup::default()
    })
    .await;
    async fn owned(c: &Cluster) -> Vec<usize> {
        let mut counts = Vec::new();
        for i in c.live() {
            let apps = c.apps(i).await.unwrap();
            counts.push(
                apps["apps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["refresh_owner"] == true)
                    .count(),
            );
        }
        counts
    }
    async fn partitions(c: &Cluster) -> Vec<usize> {
        let mut counts = Vec::new();
        for i in c.live() {
            let m = c.metrics(i).await;
            let held = m
                .lines()
                .find_map(|l| l.strip_prefix("wxhub_lease_partitions_held "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(-1.0);
            counts.push(held as usize);
        }
        counts.sort();
        counts
    }
    // Leases are balanced by partition (64, hashed from the appid): each
    // instance holds its share of partitions, and every account has exactly
    // one owner.
    async fn until(c: &Cluster, instances: usize) {
        let share = 64usize.div_ceil(instances);
        let t = std::time::Instant::now();
        loop {
            let got = partitions(c).await;
            let owners: usize = owned(c).await.iter().sum();
            if got.len() == instances
                && got.iter().sum::<usize>() == 64
                && got.iter().all(|n| *n <= share)
                && owners == 30
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "partitions held {got:?}, want 64 with at most {share} each; accounts owned {owners} of 30"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    until(&c, 3).await;
    let (owner, _) = c.wait_owner(Duration::from_secs(5)).await;
    c.kill(owner);
    until(&c, 2).await;
    let h = c.spawn_hub().await;
    c.hubs[owner] = Some(h);
    until(&c, 3).await;
    let stats = c.sim.sim().stats();
    for appid in std::iter::once(crate::cluster::APPID.to_string())
        .chain((0..extra).map(crate::cluster::extra_appid))
    {
        let calls = &stats["apps"][&appid]["calls"];
        let fetches = calls["/cgi-bin/token"].as_u64().unwrap_or(0)
            + calls["/cgi-bin/stable_token"].as_u64().unwrap_or(0);
        assert_eq!(fetches, 1, "{appid}: handovers cost no fetch");
    }
    for i in c.live() {
        let (s, _) = c.token_from(i).await;
        assert_eq!(s, 200);
    }
}
