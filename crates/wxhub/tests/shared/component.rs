//! A third-party platform in shared mode: the platform's pushes reach the
//! instances in turn (as through a load balancer), and three instances
//! refresh the component token and an authorized account's token once per
//! lifetime in all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::cluster::{Cluster, Setup, free_port};

const COMPONENT: &str = "wxcc00000000000001";
const AUTHORIZER: &str = "wx2222222222222222";
const C_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// A round-robin forwarder in front of the hubs: the platform's one URL.
async fn balancer(port: u16, hubs: Arc<Mutex<Vec<String>>>) {
    use axum::body::Bytes;
    use axum::http::Uri;
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let hubs = hubs.clone();
        let turn = turn.clone();
        let http = http.clone();
        async move {
            let base = {
                let h = hubs.lock().unwrap();
                if h.is_empty() {
                    // The hubs are still starting.
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                }
                h[turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % h.len()].clone()
            };
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            match http.post(format!("{base}{path}")).body(body).send().await {
                Ok(r) => {
                    let s = r.status();
                    (s, r.text().await.unwrap_or_default())
                }
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

async fn ticket(c: &Cluster) {
    let r = c
        .sim_post(&format!("/_sim/components/{COMPONENT}/ticket"), json!({}))
        .await;
    assert_eq!(r["delivered"], true, "{r}");
}

fn issued(c: &Cluster, appid: &str, kind: &str) -> u64 {
    let stats = c.sim.sim().stats();
    let at = if appid == COMPONENT {
        &stats["components"][appid]
    } else {
        &stats["apps"][appid]
    };
    at["tokens_issued"][kind].as_u64().unwrap_or(0)
}

/// Three instances behind the balancer, a ticket in each, the component
/// token fetched, and the account authorized and served by every instance.
async fn platform_cluster() -> Cluster {
    let port = free_port();
    let hubs = Arc::new(Mutex::new(Vec::new()));
    balancer(port, hubs.clone()).await;
    let c = Cluster::start(Setup {
        sim_account: format!(
            r#"
[[components]]
appid = "{COMPONENT}"
secret = "component-secret-shared"
token = "ctoken"
encoding_aes_key = "{C_KEY}"
event_url = "http://127.0.0.1:{port}/component/{COMPONENT}/events"
ticket_push = false

[[accounts]]
appid = "{AUTHORIZER}"
secret = "authorizer-own-secret"
"#
        ),
        push: format!(
            r#"
[[components]]
appid = "{COMPONENT}"
secret = "component-secret-shared"
token = "ctoken"
encoding_aes_key = "{C_KEY}"
"#
        ),
        ..Setup::default()
    })
    .await;
    *hubs.lock().unwrap() = c.live().iter().map(|i| c.hub(*i).base.clone()).collect();
    c.wait_owner(Duration::from_secs(10)).await;

    // Three tickets, one to each instance: each stored, the newest kept.
    for _ in 0..3 {
        ticket(&c).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while issued(&c, COMPONENT, "component_access_token") == 0 {
        assert!(std::time::Instant::now() < deadline, "no component token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .sim_post(
            &format!("/_sim/components/{COMPONENT}/authorize"),
            json!({"authorizer_appid": AUTHORIZER}),
        )
        .await;
    assert_eq!(r["event_delivered"], true, "{r}");
    // Every instance serves the account (the directory's change log).
    for i in c.live() {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = authorizer_token(&c, i).await;
            if status == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "hub {i}: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_refresh_the_component_and_an_authorizer_once_per_lifetime() {
    let c = platform_cluster().await;
    let start_c = issued(&c, COMPONENT, "component_access_token");
    let start_a = issued(&c, AUTHORIZER, "authorizer_access_token");
    let end = c.now() + 12 * 3600;
    let mut step = 0;
    while c.now() < end {
        if step % 120 == 0 {
            ticket(&c).await;
        }
        c.advance(60).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        step += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let comp = issued(&c, COMPONENT, "component_access_token") - start_c;
    let auth = issued(&c, AUTHORIZER, "authorizer_access_token") - start_a;
    // 12 h / (7200 s - the classic margin) ≈ 6.2 lifetimes.
    assert!((6..=7).contains(&comp), "{comp} component tokens in 12 h");
    let history: serde_json::Value = c
        .http
        .get(format!("{}/v1/apps/{AUTHORIZER}/history", c.hub(0).base))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        (6..=7).contains(&auth),
        "{auth} authorizer tokens in 12 h from {}: {history}",
        end - 12 * 3600
    );
    let check = authorizer_state(&c).await;
    assert_eq!(check["current_refresh_token_works"], true, "{check}");
    for i in c.live() {
        let (_, v) = authorizer_token(&c, i).await;
        let used = getticket(&c, v["access_token"].as_str().unwrap()).await;
        assert_eq!(
            used["errcode"].as_i64().unwrap_or(0),
            0,
            "hub {i} serves a working token: {used}"
        );
    }
}

/// What the simulator says of the authorization (its refresh token's state).
async fn authorizer_state(c: &Cluster) -> serde_json::Value {
    c.sim_get(&format!(
        "/_sim/components/{COMPONENT}/authorizers/{AUTHORIZER}"
    ))
    .await
}

/// The platform's answer to a business call with `token`.
async fn getticket(c: &Cluster, token: &str) -> serde_json::Value {
    c.sim_get(&format!(
        "/cgi-bin/ticket/getticket?type=jsapi&access_token={token}"
    ))
    .await
}

async fn authorizer_token(c: &Cluster, i: usize) -> (u16, serde_json::Value) {
    c.token_of(i, AUTHORIZER).await
}

/// Every instance SIGKILLed while the platform holds an authorizer refresh
/// open, then one started again: the stored refresh token still works, the
/// new instance refreshes with it and serves a working token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sigkilled_mid_refresh_lose_no_refresh_token() {
    let mut c = platform_cluster().await;
    let old = authorizer_token(&c, 0).await.1["access_token"].clone();
    assert!(old.is_string(), "{old}");
    c.sim_post(
        "/_sim/faults",
        json!({"endpoint": "/cgi-bin/component/api_authorizer_token", "count": 1, "delay_ms": 3000}),
    )
    .await;
    // Past the refresh point of the authorizer token (and the component's):
    // the owner's refresh is held open at the platform.
    c.advance(7050).await;
    // The fault fires as the call arrives: once it is gone, the call is
    // held open at the platform for 3 s.
    let since = std::time::Instant::now();
    loop {
        let armed = c
            .http
            .get(format!("{}/_sim/faults", c.sim.base_url()))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        if armed["faults"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_millis(2000),
            "no refresh began: {armed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in c.live() {
        c.kill(i);
    }
    // The held call ends with nobody to take its answer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let h = c.spawn_hub().await;
    c.hubs[0] = Some(h);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        c.advance(60).await;
        let (s, v) = authorizer_token(&c, 0).await;
        // Refreshed by the new instance with the stored refresh token.
        let fresh = v["access_token"] != old;
        if s == 200 && fresh {
            let works = getticket(&c, v["access_token"].as_str().unwrap_or_default()).await;
            if works["errcode"].as_i64().unwrap_or(0) == 0 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted instance never refreshed: {s} {v}; stats {}",
            c.sim.sim().stats()["apps"][AUTHORIZER]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let check = authorizer_state(&c).await;
    assert_eq!(check["current_refresh_token_works"], true, "{check}");
    assert_eq!(check["refresh_token_rejections"], 0, "{check}");
}
