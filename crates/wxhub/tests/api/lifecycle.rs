use serde_json::json;

use crate::helpers::*;

/// 48 simulated hours, one step a minute: clients call through the proxy and
/// a caching client (wxhub-client) calls the platform directly with the
/// token it got from the hub.
async fn two_days(hub: &TestHub) -> (u64, u64) {
    let openid = hub
        .sim_get(&format!("/_sim/openid?appid={APPID}&person=alice"))
        .await["openid"]
        .as_str()
        .unwrap()
        .to_string();
    let sim = hub.sim.sim().clone();
    let caching = wxhub_client::HubClient::new(&hub.hub().base_url(), hub.key.clone(), APPID)
        .unwrap()
        .with_clock(move || sim.clock.now());
    let direct = format!("{}/cgi-bin/user/info", hub.sim.base_url());
    let mut proxied_errors = 0;
    let mut direct_token_errors = 0;
    let end = hub.now() + 48 * 3600;
    while hub.now() < end {
        hub.run_due().await;
        let (s, v) = hub
            .get(&format!(
                "/v1/apps/{APPID}/proxy/cgi-bin/user/info?openid={openid}"
            ))
            .await;
        if s != 200 || v.get("errcode").is_some() {
            proxied_errors += 1;
        }
        // The caching client's token, used as it is: no retry here, so a dead
        // token would show up.
        let token = caching.access_token().await.unwrap();
        let code = hub.use_token(&token).await;
        if matches!(code, 40001 | 42001 | 40014) {
            direct_token_errors += 1;
        }
        let _ = &direct;
        hub.advance(60);
    }
    (proxied_errors, direct_token_errors)
}

#[tokio::test]
async fn classic_mode_for_48_hours_fetches_once_per_token_lifetime_and_nobody_sees_a_dead_token() {
    let hub = TestHub::with(Options {
        mode: "classic",
        ..Options::default()
    })
    .await;
    let (proxied_errors, direct_errors) = two_days(&hub).await;
    assert_eq!(proxied_errors, 0);
    assert_eq!(
        direct_errors, 0,
        "a client caching until expires_at never held a dead token"
    );
    let fetches = hub.issued("classic");
    assert!(fetches <= 25, "{fetches} classic fetches in 48 h");
    assert!(
        fetches >= 24,
        "{fetches}: the token was refreshed throughout"
    );
    let m = hub.metrics().await;
    assert!(
        !m.contains("wxhub_proxy_retries_total{"),
        "the proxy never needed its retry:\n{m}"
    );
}

#[tokio::test]
async fn stable_mode_for_48_hours_never_forces_and_never_loops() {
    let hub = TestHub::start().await;
    let (proxied_errors, direct_errors) = two_days(&hub).await;
    assert_eq!((proxied_errors, direct_errors), (0, 0));
    let st = hub.stats();
    assert_eq!(st["force_refreshes"], 0);
    let calls = hub.calls("/cgi-bin/stable_token");
    let issued = hub.issued("stable");
    assert_eq!(
        calls, issued,
        "every stable_token call minted a new token: none returned the same one"
    );
    assert!(issued <= 26, "{issued}");
}

#[tokio::test]
async fn a_restart_with_a_valid_stored_token_makes_no_upstream_call() {
    let mut hub = TestHub::start().await;
    let t1 = hub.token().await;
    let (_, ticket1) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    let calls_before = hub.stats()["calls"].clone();
    hub.restart().await;
    hub.run_due().await;
    assert_eq!(hub.token().await, t1);
    let (_, ticket2) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    assert_eq!(ticket1["jsapi_ticket"], ticket2["jsapi_ticket"]);
    assert_eq!(ticket1["expires_at"], ticket2["expires_at"]);
    assert_eq!(
        hub.stats()["calls"],
        calls_before,
        "no upstream call at all"
    );
}

#[tokio::test]
async fn a_restart_with_an_expired_stored_token_makes_exactly_one_fetch() {
    let mut hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    let t1 = hub.token().await;
    if let Some(h) = hub.hub.take() {
        h.shutdown().await;
    }
    hub.advance(7200);
    hub.restart().await;
    let t2 = hub.token().await;
    hub.run_due().await;
    assert_ne!(t1, t2);
    assert_eq!(hub.calls("/cgi-bin/stable_token"), 2);
}

#[tokio::test]
async fn a_foreign_fetch_is_detected_counted_and_repaired() {
    let hub = TestHub::with(Options {
        mode: "classic",
        tickets: "[]",
        ..Options::default()
    })
    .await;
    let t1 = hub.token().await;
    // Someone else (a test environment sharing the appid) fetches a token.
    let v = hub
        .sim_get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
        ))
        .await;
    assert!(v["access_token"].is_string());
    hub.advance(301);
    assert_eq!(hub.use_token(&t1).await, 40001);
    let (s, v) = hub.invalidate(&t1).await;
    assert_eq!(s, 200);
    let t2 = v["access_token"].as_str().unwrap();
    assert_eq!(hub.use_token(t2).await, 0);
    let m = hub.metrics().await;
    assert!(
        m.contains(&format!(
            "wxhub_foreign_refresh_total{{appid=\"{APPID}\"}} 1"
        )),
        "{m}"
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logs.contains("another system fetched or forced a token for this account"));
}

#[tokio::test]
async fn forced_refreshes_stop_at_the_platforms_daily_budget() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    let mut token = hub.token().await;
    for _ in 0..20 {
        hub.advance(31);
        let (s, v) = hub.invalidate(&token).await;
        assert_eq!(s, 200, "{v}");
        token = v["access_token"].as_str().unwrap().to_string();
    }
    hub.advance(31);
    let (s, v) = hub.invalidate(&token).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("forced"),
        "{v}"
    );
    assert_eq!(hub.stats()["force_refreshes"], 20);
    let (_, apps) = {
        let r = hub
            .http
            .get(hub.url("/v1/apps"))
            .bearer_auth(&hub.admin)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(apps["apps"][0]["forced_today"], 20);
    let _ = json!({});
}
