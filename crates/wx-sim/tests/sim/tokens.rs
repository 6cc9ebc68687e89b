use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn each_classic_fetch_issues_a_new_token_and_the_previous_lives_300s_more() {
    let sim = TestSim::start().await;
    let t1 = sim.token().await;
    let t2 = sim.token().await;
    assert_ne!(t1, t2);
    assert_eq!(
        sim.use_token(&t1).await,
        0,
        "old token works during the grace"
    );
    sim.advance(299).await;
    assert_eq!(sim.use_token(&t1).await, 0);
    sim.advance(1).await;
    assert_eq!(
        sim.use_token(&t1).await,
        40001,
        "superseded token dies after 300 s"
    );
    assert_eq!(sim.use_token(&t2).await, 0);
    assert_eq!(sim.stats(APPID).await["tokens_issued"]["classic"], 2);
}

#[tokio::test]
async fn a_token_two_generations_old_dies_at_the_second_refresh() {
    let sim = TestSim::start().await;
    let t1 = sim.token().await;
    let t2 = sim.token().await;
    let t3 = sim.token().await;
    assert_eq!(sim.use_token(&t1).await, 40001);
    assert_eq!(sim.use_token(&t2).await, 0);
    assert_eq!(sim.use_token(&t3).await, 0);
}

#[tokio::test]
async fn grace_is_a_world_setting() {
    let sim = TestSim::with(&world("[settings]\ntoken_grace_seconds = 10")).await;
    let t1 = sim.token().await;
    sim.token().await;
    sim.advance(10).await;
    assert_eq!(sim.use_token(&t1).await, 40001);
}

#[tokio::test]
async fn natural_expiry_is_42001_and_expires_in_is_7200() {
    let sim = TestSim::start().await;
    let v = sim.classic(APPID, SECRET).await;
    assert_eq!(v["expires_in"], 7200);
    let t = v["access_token"].as_str().unwrap().to_string();
    assert!(t.len() > 100, "looks like a real token");
    sim.advance(7199).await;
    assert_eq!(sim.use_token(&t).await, 0);
    sim.advance(1).await;
    assert_eq!(sim.use_token(&t).await, 42001);
}

#[tokio::test]
async fn a_token_superseded_in_its_last_minutes_expires_as_42001() {
    let sim = TestSim::start().await;
    let t1 = sim.token().await;
    sim.advance(7100).await;
    sim.token().await;
    sim.advance(100).await;
    assert_eq!(sim.use_token(&t1).await, 42001);
}

#[tokio::test]
async fn the_access_token_check_is_the_same_on_every_api() {
    let sim = TestSim::start().await;
    let paths = [
        "/cgi-bin/user/get?",
        "/cgi-bin/user/info?openid=x&",
        "/cgi-bin/ticket/getticket?type=jsapi&",
    ];
    for path in paths {
        let cases = [
            ("", 41001),
            ("access_token=&", 41001),
            ("access_token=garbage", 40014),
        ];
        for (q, want) in cases {
            let v = sim.get(&format!("{path}{q}")).await;
            assert_eq!(errcode(&v), want, "{path}{q}: {v}");
        }
    }
    let v = sim
        .post("/cgi-bin/user/info/batchget", json!({"user_list": []}))
        .await;
    assert_eq!(errcode(&v), 41001);
    let v = sim
        .post(
            "/cgi-bin/openapi/quota/get?access_token=nope",
            json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(errcode(&v), 40014);
}

#[tokio::test]
async fn bad_token_requests_get_the_platforms_errcodes() {
    let sim = TestSim::start().await;
    let cases = [
        ("grant_type=client_credential&secret=x", 41002),
        (
            "grant_type=client_credential&appid=wx1111111111111111",
            41004,
        ),
        (
            "grant_type=password&appid=wx1111111111111111&secret=x",
            40002,
        ),
        ("appid=wx1111111111111111&secret=x", 40002),
        (
            "grant_type=client_credential&appid=wx9999999999999999&secret=x",
            40013,
        ),
        (
            "grant_type=client_credential&appid=wx1111111111111111&secret=wrong",
            40125,
        ),
    ];
    for (q, want) in cases {
        let v = sim.get(&format!("/cgi-bin/token?{q}")).await;
        assert_eq!(errcode(&v), want, "{q}: {v}");
    }
    let v: serde_json::Value = sim
        .http
        .post(sim.url(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&v), 43001);
    assert_eq!(sim.stats(APPID).await["tokens_issued"]["classic"], 0);
}

#[tokio::test]
async fn a_frozen_secret_is_40243() {
    let sim = TestSim::start().await;
    sim.patch_account(APPID, json!({"secret_frozen": true}))
        .await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 40243);
    assert_eq!(errcode(&sim.stable(APPID, SECRET, false).await), 40243);
    sim.patch_account(APPID, json!({"secret_frozen": false}))
        .await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 0);
}

#[tokio::test]
async fn the_ip_whitelist_names_the_callers_ip_and_can_be_fixed_at_run_time() {
    let sim = TestSim::start().await;
    sim.patch_account(APPID, json!({"ip_whitelist": ["10.1.2.3"]}))
        .await;
    for v in [
        sim.classic(APPID, SECRET).await,
        sim.stable(APPID, SECRET, false).await,
    ] {
        assert_eq!(errcode(&v), 40164, "{v}");
        let msg = v["errmsg"].as_str().unwrap();
        assert!(
            msg.starts_with("invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist rid: "),
            "{msg}"
        );
    }
    sim.patch_account(APPID, json!({"ip_whitelist": ["10.1.2.3", "127.0.0.1"]}))
        .await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 0);
    // The other account has no whitelist: no check.
    assert_eq!(errcode(&sim.classic(APPID2, SECRET2).await), 0);
}

#[tokio::test]
async fn errmsg_ends_with_a_rid_whose_first_group_is_the_time() {
    let sim = TestSim::start().await;
    let now = sim.now().await;
    let v = sim.get("/cgi-bin/user/get?access_token=x").await;
    let msg = v["errmsg"].as_str().unwrap();
    let (base, rid) = msg.split_once(" rid: ").expect("rid suffix");
    assert_eq!(base, "invalid access_token");
    let groups: Vec<&str> = rid.split('-').collect();
    assert_eq!(groups.len(), 3);
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 8 && g.chars().all(|c| c.is_ascii_hexdigit()))
    );
    assert_eq!(groups[0], format!("{:08x}", now));
}

#[tokio::test]
async fn tickets_are_stable_for_7200s_and_independent_of_the_token() {
    let sim = TestSim::start().await;
    let t = sim.token().await;
    let get = |t: String, ty: &'static str| {
        let sim = &sim;
        async move {
            sim.get(&format!(
                "/cgi-bin/ticket/getticket?access_token={t}&type={ty}"
            ))
            .await
        }
    };
    let a = get(t.clone(), "jsapi").await;
    assert_eq!((errcode(&a), a["errmsg"].as_str()), (0, Some("ok")));
    assert_eq!(a["expires_in"], 7200);
    sim.advance(3600).await;
    let t2 = sim.token().await;
    let b = get(t2.clone(), "jsapi").await;
    assert_eq!(
        a["ticket"], b["ticket"],
        "same ticket, token refresh does not change it"
    );
    assert_eq!(b["expires_in"], 7200, "always 7200, not the remaining time");
    let card = get(t2.clone(), "wx_card").await;
    assert_ne!(card["ticket"], a["ticket"]);
    assert_eq!(errcode(&get(t2.clone(), "bogus").await), 40097);
    sim.advance(3600).await;
    let t3 = sim.token().await;
    let c = get(t3, "jsapi").await;
    assert_ne!(c["ticket"], a["ticket"], "a new ticket after 7200 s");
    assert_eq!(sim.stats(APPID).await["tickets_issued"]["jsapi"], 2);
}
