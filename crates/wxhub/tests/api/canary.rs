use serde_json::json;

use crate::helpers::*;

/// A known secret, token and client key go through full flows, including
/// failures; none may appear in a log line, an error body, /metrics, the
/// console's pages and cookie, or the refresh history.
#[tokio::test]
async fn secrets_tokens_and_keys_never_reach_logs_errors_or_metrics() {
    let hub = TestHub::start().await;
    let token = hub.token().await;
    let (_, ticket) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    let ticket = ticket["jsapi_ticket"].as_str().unwrap().to_string();
    let mut bodies = Vec::new();
    // Failures of every kind.
    hub.fault(json!({"endpoint": "/cgi-bin/user/get", "count": 2, "errcode": 40001}))
        .await;
    bodies.push(hub.proxy("cgi-bin/user/get").await.1.to_string());
    hub.fault(json!({"endpoint": "/cgi-bin/user/get", "count": 1, "drop": true}))
        .await;
    bodies.push(hub.proxy("cgi-bin/user/get").await.1.to_string());
    // A report of a token the platform rejects: the answer carries a new one.
    hub.kill_token_elsewhere("stable").await;
    let (_, v) = hub.invalidate(&token).await;
    assert_eq!(v["outcome"], "replaced", "{v}");
    bodies.push(v.to_string());
    bodies.push(
        hub.post(
            &format!("/v1/apps/{APPID}/access_token/invalidate"),
            json!({"nope": 1}),
        )
        .await
        .1
        .to_string(),
    );
    let r = hub
        .http
        .get(hub.url(&format!("/v1/apps/{APPID}/access_token")))
        .bearer_auth(format!("{}x", hub.key))
        .send()
        .await
        .unwrap();
    bodies.push(r.text().await.unwrap());
    hub.sim_post(
        &format!("/_sim/accounts/{APPID}"),
        json!({"secret": "rotated"}),
    )
    .await;
    // The current token rejected after the secret changed: the refresh
    // fails with 40125.
    let current = hub.token().await;
    hub.fault(json!({"endpoint": "/cgi-bin/openapi/quota/get", "count": 1, "errcode": 40001}))
        .await;
    hub.advance(61);
    let (_, v) = hub.invalidate(&current).await;
    bodies.push(v.to_string());
    hub.advance(7200);
    bodies.push(
        hub.get(&format!("/v1/apps/{APPID}/access_token"))
            .await
            .1
            .to_string(),
    );
    bodies.push(hub.readyz().await.1.to_string());
    // The console: its pages, its cookie and the refresh history.
    let (cookie, set_cookie) = crate::console::sign_in(&hub).await;
    bodies.push(set_cookie);
    for path in ["/".to_string(), format!("/console/apps/{APPID}")] {
        let page = hub
            .http
            .get(hub.url(&path))
            .header("accept", "text/html")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains(APPID), "{path} shown: {page}");
        bodies.push(page);
    }
    let history = hub
        .get_as(&format!("/v1/apps/{APPID}/history?limit=1000"), &hub.admin)
        .await
        .text()
        .await
        .unwrap();
    assert!(history.contains("40125"), "{history}");
    bodies.push(history);
    let metrics = hub.metrics().await;
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logs.contains(APPID), "logs were captured");
    for (name, secret) in [
        ("appsecret", SECRET),
        ("token", token.as_str()),
        ("ticket", ticket.as_str()),
        ("client key", hub.key.as_str()),
        ("admin key", hub.admin.as_str()),
    ] {
        assert!(!logs.contains(secret), "{name} in logs");
        assert!(!metrics.contains(secret), "{name} in /metrics");
        for b in &bodies {
            assert!(!b.contains(secret), "{name} in an error body: {b}");
        }
    }
    assert!(
        bodies.iter().any(|b| b.contains("40125")),
        "the wrong-secret error was exercised: {bodies:?}"
    );
}
