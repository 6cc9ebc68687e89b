use std::time::Instant;

use serde_json::{Value, json};

use crate::helpers::*;

async fn arm(sim: &TestSim, spec: Value) {
    let resp = sim
        .http
        .post(sim.url("/_sim/faults"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn an_errcode_fault_hits_the_next_n_calls_then_clears() {
    let sim = TestSim::start().await;
    arm(
        &sim,
        json!({"endpoint": "/cgi-bin/token", "count": 2, "errcode": -1}),
    )
    .await;
    for _ in 0..2 {
        let v = sim.classic(APPID, SECRET).await;
        assert_eq!(errcode(&v), -1);
        assert!(
            v["errmsg"]
                .as_str()
                .unwrap()
                .starts_with("system error rid: ")
        );
    }
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 0);
    let st = sim.stats(APPID).await;
    assert_eq!(st["calls"]["/cgi-bin/token"], 3);
    assert_eq!(st["faults_fired"], 2);
    assert_eq!(st["tokens_issued"]["classic"], 1);
}

#[tokio::test]
async fn faults_can_target_one_account() {
    let sim = TestSim::start().await;
    arm(
        &sim,
        json!({"endpoint": "/cgi-bin/stable_token", "appid": APPID2, "errcode": 89503}),
    )
    .await;
    assert_eq!(errcode(&sim.stable(APPID, SECRET, false).await), 0);
    assert_eq!(errcode(&sim.stable(APPID2, SECRET2, false).await), 89503);
    // A token-checked call is attributed through its token.
    let t = sim.token().await;
    arm(
        &sim,
        json!({"endpoint": "*", "appid": APPID, "errcode": 45009}),
    )
    .await;
    assert_eq!(sim.use_token(&t).await, 45009);
}

#[tokio::test]
async fn http_status_malformed_drop_and_delay_faults() {
    let sim = TestSim::start().await;
    let token_url = sim.url(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
    ));

    arm(
        &sim,
        json!({"endpoint": "/cgi-bin/token", "http_status": 502}),
    )
    .await;
    let resp = sim.http.get(&token_url).send().await.unwrap();
    assert_eq!(resp.status(), 502);

    arm(
        &sim,
        json!({"endpoint": "/cgi-bin/token", "malformed": true}),
    )
    .await;
    let resp = sim.http.get(&token_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err(), "malformed JSON");

    arm(&sim, json!({"endpoint": "/cgi-bin/token", "drop": true})).await;
    let err = sim
        .http
        .get(&token_url)
        .send()
        .await
        .expect_err("connection dropped");
    assert!(!err.is_status());

    arm(&sim, json!({"endpoint": "/cgi-bin/token", "delay_ms": 300})).await;
    let started = Instant::now();
    let v: Value = sim
        .http
        .get(&token_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(started.elapsed().as_millis() >= 300);
    assert_eq!(errcode(&v), 0, "a delayed call then answers normally");

    // A client with a shorter timeout sees a hang.
    arm(
        &sim,
        json!({"endpoint": "/cgi-bin/token", "delay_ms": 5000}),
    )
    .await;
    let err = sim
        .http
        .get(&token_url)
        .timeout(std::time::Duration::from_millis(100))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout());
}

#[tokio::test]
async fn bad_fault_specs_are_rejected_with_a_clear_error() {
    let sim = TestSim::start().await;
    let cases = [
        json!({"endpoint": "/cgi-bin/token"}),
        json!({"endpoint": "/cgi-bin/token", "errcode": -1, "drop": true}),
        json!({"endpoint": "cgi-bin/token", "errcode": -1}),
        json!({"endpoint": "/cgi-bin/token", "errcode": -1, "count": 0}),
        json!({"endpoint": "/cgi-bin/token", "http_status": 42}),
        json!({"endpoint": "/cgi-bin/token", "errcode": -1, "colour": "red"}),
    ];
    for spec in cases {
        let resp = sim
            .http
            .post(sim.url("/_sim/faults"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{spec}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{spec}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let listed = sim.get("/_sim/faults").await;
    assert_eq!(listed["faults"], json!([]));
    arm(&sim, json!({"endpoint": "*", "errcode": -1, "count": 5})).await;
    let cleared: Value = sim
        .http
        .delete(sim.url("/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["cleared"], 1);
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 0);
}
