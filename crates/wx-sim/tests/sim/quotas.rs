use serde_json::json;

use crate::helpers::*;

fn limited(limit: u64) -> String {
    world("").replace(
        "name = \"Test Account\"",
        &format!("name = \"Test Account\"\ntoken_daily_limit = {limit}\nminute_limits = {{ \"/cgi-bin/stable_token\" = 2 }}"),
    )
}

#[tokio::test]
async fn the_daily_token_quota_gives_45009_until_beijing_midnight() {
    let sim = TestSim::with(&limited(3)).await;
    // 1_700_000_000 is 2023-11-15 06:13:20 Beijing time.
    for _ in 0..3 {
        assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 0);
    }
    let v = sim.classic(APPID, SECRET).await;
    assert_eq!(errcode(&v), 45009);
    assert!(
        v["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("reach max api daily quota limit")
    );
    // The other account has its own quota.
    assert_eq!(errcode(&sim.classic(APPID2, SECRET2).await), 0);
    let now = sim.now().await;
    let next_midnight_bj = ((now + 8 * 3600) / 86400 + 1) * 86400 - 8 * 3600;
    sim.advance(next_midnight_bj - now - 1).await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 45009);
    sim.advance(1).await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 0);
}

#[tokio::test]
async fn per_minute_limits_give_45011_until_the_next_minute() {
    let sim = TestSim::with(&limited(2000)).await;
    assert_eq!(errcode(&sim.stable(APPID, SECRET, false).await), 0);
    assert_eq!(errcode(&sim.stable(APPID, SECRET, false).await), 0);
    let v = sim.stable(APPID, SECRET, false).await;
    assert_eq!(errcode(&v), 45011, "{v}");
    let now = sim.now().await;
    sim.advance(60 - now % 60).await;
    assert_eq!(errcode(&sim.stable(APPID, SECRET, false).await), 0);
}

#[tokio::test]
async fn clear_quota_resets_the_day_within_a_monthly_budget() {
    let sim = TestSim::with(&limited(1)).await;
    let t = sim.token().await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 45009);
    let v = sim
        .post(
            &format!("/cgi-bin/clear_quota?access_token={t}"),
            json!({"appid": APPID2}),
        )
        .await;
    assert_eq!(errcode(&v), 40013, "appid must be the token's account");
    let v = sim
        .post(
            &format!("/cgi-bin/clear_quota?access_token={t}"),
            json!({"appid": APPID}),
        )
        .await;
    assert_eq!((errcode(&v), v["errmsg"].as_str()), (0, Some("ok")));
    let t = sim.token().await;
    // /v2 with the secret, both in the query and in the body (docs/platform.md §2.4).
    for i in 0..9 {
        let v = if i % 2 == 0 {
            sim.post(
                &format!("/cgi-bin/clear_quota/v2?appid={APPID}&appsecret={SECRET}"),
                json!({}),
            )
            .await
        } else {
            sim.post(
                "/cgi-bin/clear_quota/v2",
                json!({"appid": APPID, "appsecret": SECRET}),
            )
            .await
        };
        assert_eq!(errcode(&v), 0, "reset {i}: {v}");
    }
    let v = sim
        .post(
            &format!("/cgi-bin/clear_quota?access_token={t}"),
            json!({"appid": APPID}),
        )
        .await;
    assert_eq!(errcode(&v), 48006, "11th reset in a month");
    let v = sim
        .post(
            "/cgi-bin/clear_quota/v2",
            json!({"appid": APPID, "appsecret": "nope"}),
        )
        .await;
    assert_eq!(errcode(&v), 40125);
    // Next month the budget is back.
    sim.advance(31 * 86400).await;
    let v = sim
        .post(
            "/cgi-bin/clear_quota/v2",
            json!({"appid": APPID, "appsecret": SECRET}),
        )
        .await;
    assert_eq!(errcode(&v), 0);
}

#[tokio::test]
async fn quota_get_reports_use_and_quota_clear_resets_one_api() {
    let sim = TestSim::with(&limited(10)).await;
    let t = sim.token().await;
    sim.token().await;
    let q = |path: &'static str| {
        let sim = &sim;
        let t = t.clone();
        async move {
            sim.post(
                &format!("/cgi-bin/openapi/quota/get?access_token={t}"),
                json!({"cgi_path": path}),
            )
            .await
        }
    };
    let v = q("/cgi-bin/token").await;
    assert_eq!(
        v["quota"],
        json!({"daily_limit": 10, "used": 2, "remain": 8})
    );
    assert_eq!(errcode(&q("cgi-bin/token").await), 76003);
    let v = sim
        .post(
            &format!("/cgi-bin/openapi/quota/clear?access_token={t}"),
            json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(errcode(&v), 0);
    assert_eq!(q("/cgi-bin/token").await["quota"]["used"], 0);
}

#[tokio::test]
async fn user_get_has_a_small_daily_quota() {
    let sim = TestSim::start().await;
    let t = sim.token().await;
    for _ in 0..500 {
        assert_eq!(sim.use_token(&t).await, 0);
    }
    assert_eq!(sim.use_token(&t).await, 45009);
}
