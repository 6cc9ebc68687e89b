use serde_json::json;

use crate::helpers::*;

fn tok(v: &serde_json::Value) -> String {
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("token in {v}"))
        .to_string()
}

#[tokio::test]
async fn stable_returns_the_same_token_with_the_remaining_lifetime() {
    let sim = TestSim::start().await;
    let a = sim.stable(APPID, SECRET, false).await;
    assert_eq!(a["expires_in"], 7200);
    sim.advance(1000).await;
    let b = sim.stable(APPID, SECRET, false).await;
    assert_eq!(tok(&a), tok(&b));
    assert_eq!(b["expires_in"], 6200);
    assert_eq!(sim.stats(APPID).await["tokens_issued"]["stable"], 1);
}

#[tokio::test]
async fn stable_rotates_in_the_last_300s_and_the_old_token_lives_to_its_expiry() {
    let sim = TestSim::start().await;
    let a = tok(&sim.stable(APPID, SECRET, false).await);
    sim.advance(6900).await; // 300 s left: still the same
    let b = sim.stable(APPID, SECRET, false).await;
    assert_eq!(tok(&b), a);
    assert_eq!(b["expires_in"], 300);
    sim.advance(1).await; // 299 s left: rotate
    let c = sim.stable(APPID, SECRET, false).await;
    assert_ne!(tok(&c), a);
    assert_eq!(c["expires_in"], 7200);
    assert_eq!(sim.use_token(&a).await, 0, "old stable token still valid");
    sim.advance(299).await;
    assert_eq!(sim.use_token(&a).await, 42001);
    assert_eq!(sim.use_token(&tok(&c)).await, 0);
}

#[tokio::test]
async fn every_returned_stable_token_has_at_least_300s() {
    let sim = TestSim::start().await;
    for _ in 0..40 {
        let v = sim.stable(APPID, SECRET, false).await;
        assert!(v["expires_in"].as_i64().unwrap() >= 300, "{v}");
        sim.advance(250).await;
    }
}

#[tokio::test]
async fn force_refresh_kills_the_old_token_at_once_and_is_limited() {
    let sim = TestSim::start().await;
    let a = tok(&sim.stable(APPID, SECRET, false).await);
    let b = tok(&sim.stable(APPID, SECRET, true).await);
    assert_ne!(a, b);
    assert_eq!(sim.use_token(&a).await, 40001);
    // Within 30 s a force call does not refresh: the current token, no error.
    sim.advance(29).await;
    let c = sim.stable(APPID, SECRET, true).await;
    assert_eq!(tok(&c), b);
    assert_eq!(c["expires_in"], 7200 - 29);
    let mut forced = 1;
    while forced < 20 {
        sim.advance(30).await;
        tok(&sim.stable(APPID, SECRET, true).await);
        forced += 1;
    }
    sim.advance(30).await;
    let over = sim.stable(APPID, SECRET, true).await;
    assert_eq!(errcode(&over), 45009, "21st forced refresh: {over}");
    assert_eq!(sim.stats(APPID).await["force_refreshes"], 20);
    // Normal calls still work.
    assert_eq!(errcode(&sim.stable(APPID, SECRET, false).await), 0);
}

#[tokio::test]
async fn force_grace_is_a_world_setting() {
    let sim = TestSim::with(&world("[settings]\nstable_force_grace_seconds = 60")).await;
    let a = tok(&sim.stable(APPID, SECRET, false).await);
    sim.stable(APPID, SECRET, true).await;
    assert_eq!(sim.use_token(&a).await, 0);
    sim.advance(60).await;
    assert_eq!(sim.use_token(&a).await, 40001);
}

#[tokio::test]
async fn classic_and_stable_tokens_are_isolated() {
    let sim = TestSim::start().await;
    let s = tok(&sim.stable(APPID, SECRET, false).await);
    let c = sim.token().await;
    sim.token().await;
    sim.token().await;
    sim.advance(301).await;
    assert_eq!(
        sim.use_token(&s).await,
        0,
        "classic fetches do not touch the stable token"
    );
    assert_eq!(sim.use_token(&c).await, 40001);
    let c2 = sim.token().await;
    sim.stable(APPID, SECRET, true).await;
    assert_eq!(
        sim.use_token(&c2).await,
        0,
        "a forced stable refresh does not touch classic tokens"
    );
    let st = sim.stats(APPID).await;
    assert_eq!(st["tokens_issued"]["classic"], 4);
    assert_eq!(st["tokens_issued"]["stable"], 2);
}

#[tokio::test]
async fn stable_token_wants_post_and_json() {
    let sim = TestSim::start().await;
    let v: serde_json::Value = sim
        .http
        .get(sim.url("/cgi-bin/stable_token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&v), 43002);
    let v: serde_json::Value = sim
        .http
        .post(sim.url("/cgi-bin/stable_token"))
        .form(&[
            ("grant_type", "client_credential"),
            ("appid", APPID),
            ("secret", SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&v), 41002, "a form body reads as no appid");
    let cases = [
        (
            json!({"grant_type": "client_credential", "secret": SECRET}),
            41002,
        ),
        (
            json!({"grant_type": "client_credential", "appid": APPID}),
            41004,
        ),
        (
            json!({"grant_type": "x", "appid": APPID, "secret": SECRET}),
            40002,
        ),
        (
            json!({"grant_type": "client_credential", "appid": "wx0", "secret": SECRET}),
            40013,
        ),
        (
            json!({"grant_type": "client_credential", "appid": APPID, "secret": "no"}),
            40125,
        ),
    ];
    for (body, want) in cases {
        let v = sim.post("/cgi-bin/stable_token", body.clone()).await;
        assert_eq!(errcode(&v), want, "{body}: {v}");
    }
}
