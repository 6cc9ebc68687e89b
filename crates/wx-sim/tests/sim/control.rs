use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_clock_starts_where_the_world_says_and_moves_only_when_told() {
    let sim = TestSim::start().await;
    assert_eq!(sim.now().await, START);
    assert_eq!(sim.now().await, START);
    assert_eq!(sim.advance(7200).await, START + 7200);
    let v = sim.post("/_sim/clock/set", json!({"now": START + 5})).await;
    assert_eq!(v["now"], START + 5);
    let resp = sim
        .http
        .post(sim.url("/_sim/clock/advance"))
        .json(&json!({"seconds": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = sim
        .http
        .post(sim.url("/_sim/clock/advance"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn stats_count_calls_per_appid_and_endpoint() {
    let sim = TestSim::start().await;
    let t = sim.token().await;
    sim.use_token(&t).await;
    sim.use_token(&t).await;
    sim.stable(APPID2, SECRET2, false).await;
    sim.classic(APPID, "wrong").await;
    let stats = sim.get("/_sim/stats").await;
    let a = &stats["apps"][APPID];
    assert_eq!(a["calls"]["/cgi-bin/token"], 2);
    assert_eq!(a["calls"]["/cgi-bin/user/get"], 2);
    assert_eq!(a["errors"]["40125"], 1);
    assert_eq!(
        a["tokens_issued"],
        json!({"classic": 1, "stable": 0, "authorizer_access_token": 0})
    );
    assert_eq!(
        stats["apps"][APPID2]["tokens_issued"],
        json!({"classic": 0, "stable": 1, "authorizer_access_token": 0})
    );
    assert_eq!(stats["apps"][APPID2]["calls"]["/cgi-bin/stable_token"], 1);
}

#[tokio::test]
async fn reset_returns_to_the_world_as_loaded() {
    let sim = TestSim::start().await;
    let t = sim.token().await;
    sim.advance(100).await;
    sim.post("/_sim/people/carol/consent", json!({"consent": "allow"}))
        .await;
    sim.post("/_sim/reset", json!({})).await;
    assert_eq!(sim.now().await, START);
    assert_eq!(sim.use_token(&t).await, 40014, "tokens forgotten");
    assert_eq!(sim.stats(APPID).await["tokens_issued"]["classic"], 0);
    let resp = sim.authorize(APPID, "snsapi_userinfo", "s", "carol").await;
    assert_eq!(
        query_param(&location(&resp), "code"),
        None,
        "carol refuses again"
    );
}

#[tokio::test]
async fn unknown_people_and_accounts_are_404s_naming_them() {
    let sim = TestSim::start().await;
    let cases = [
        ("/_sim/people/zed/follow", json!({"appid": APPID})),
        ("/_sim/people/bob/follow", json!({"appid": "wx0"})),
        ("/_sim/people/zed/consent", json!({"consent": "allow"})),
        ("/_sim/accounts/wx0", json!({"secret_frozen": true})),
    ];
    for (path, body) in cases {
        let resp = sim
            .http
            .post(sim.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }
    let resp = sim
        .http
        .post(sim.url("/_sim/accounts/wx1111111111111111"))
        .json(&json!({"encoding_aes_key": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("encoding_aes_key"),
        "{v}"
    );
}

#[tokio::test]
async fn the_world_and_the_index_are_served() {
    let sim = TestSim::start().await;
    let w = sim.get("/_sim/world").await;
    assert_eq!(w["accounts"][0]["appid"], APPID);
    let html = sim
        .http
        .get(sim.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/_sim/clock"));
}
