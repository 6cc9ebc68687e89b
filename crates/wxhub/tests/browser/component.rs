//! Issue 14: on `wxhub dev`, an account's administrator authorizes the demo
//! third-party platform in a real browser: the hub's start page → the
//! simulated authorization page → approve → the hub's return handler (the
//! code exchanged) → back to the demo page; the account's authorizer token
//! is then served through the same API as any account's.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::driver::{Browser, ONE_BROWSER};
use crate::support;

const NEWCOMER: &str = "wx5555555555555555";

fn query_param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn token_status(env: &wxhub::dev::DevEnv, appid: &str) -> u16 {
    support::http()
        .get(format!(
            "{}/v1/apps/{appid}/access_token",
            env.hub.base_url()
        ))
        .bearer_auth(&env.client_key)
        .send()
        .await
        .expect("GET access_token")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_authorizes_the_demo_platform_in_a_browser() {
    if support::skipped("an_administrator_authorizes_the_demo_platform_in_a_browser") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let any = "127.0.0.1:0".parse().expect("socket address");
    let env = wxhub::dev::start(any, any, any)
        .await
        .expect("wxhub dev starts");
    // The demo platform starts with its shop authorized.
    assert_eq!(token_status(&env, &env.shop).await, 200);
    // Another official account, not yet in the hub.
    let created = support::http()
        .post(format!("{}/_sim/accounts", env.sim.base_url()))
        .json(&json!({"appid": NEWCOMER, "secret": "newcomer-own-secret", "name": "Newcomer shop"}))
        .send()
        .await
        .expect("POST /_sim/accounts");
    assert_eq!(created.status(), 201);
    assert_eq!(token_status(&env, NEWCOMER).await, 404);

    let mut b = Browser::start().await;
    let back = format!("{}/", env.demo_url);
    let start = url::Url::parse_with_params(
        &format!(
            "{}/component/{}/authorize",
            env.hub.base_url(),
            env.platform
        ),
        [("return", back.as_str())],
    )
    .expect("start URL");
    b.goto(start.as_str()).await;
    let option = b
        .wait_for(&format!("#account option[value='{NEWCOMER}']"))
        .await;
    let page = b.current_url().await;
    assert!(
        page.starts_with(&env.sim.base_url()) && page.contains("componentloginpage"),
        "the administrator is on WeChat's authorization page: {page}"
    );
    b.click(&option).await;
    b.screenshot("component-1-authorization-page").await;
    let approve = b.wait_for("#approve").await;
    b.click(&approve).await;
    let landed = b.wait_for_url(&env.demo_url).await;
    assert_eq!(
        query_param(&landed, "authorizer_appid").as_deref(),
        Some(NEWCOMER),
        "back on the business page with the account: {landed}"
    );
    let since = Instant::now();
    while token_status(&env, NEWCOMER).await != 200 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the authorized account's token is served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.quit().await;
    drop(b);
    let wxhub::dev::DevEnv { sim, hub, .. } = env;
    hub.shutdown().await;
    sim.shutdown().await;
}
