use serde_json::json;

use crate::helpers::*;

async fn page(sim: &TestSim, query: &str) -> (u16, Option<String>, String) {
    let resp = sim
        .http
        .get(sim.url(&format!("/connect/oauth2/authorize?{query}")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let err = resp
        .headers()
        .get("x-wxsim-error")
        .map(|v| v.to_str().unwrap().to_string());
    let loc = location(&resp);
    (
        status,
        err,
        if loc.is_empty() {
            resp.text().await.unwrap()
        } else {
            loc
        },
    )
}

#[tokio::test]
async fn authorize_validates_like_the_platform() {
    let sim = TestSim::start().await;
    let ok_redirect = url_encode("http://127.0.0.1/cb");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("redirect_uri={ok_redirect}&response_type=code&scope=snsapi_base"),
            "10012",
        ),
        (
            format!(
                "appid=wx0000000000000000&redirect_uri={ok_redirect}&response_type=code&scope=snsapi_base"
            ),
            "40013",
        ),
        (
            format!("appid={APPID}&response_type=code&scope=snsapi_base"),
            "10011",
        ),
        (
            format!(
                "appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_base",
                url_encode("https://evil.example.com/cb")
            ),
            "10003",
        ),
        // A subdomain is not covered (docs/platform.md §5.1).
        (
            format!(
                "appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_base",
                url_encode("https://pay.app.example.com/cb")
            ),
            "10003",
        ),
        (
            format!("appid={APPID}&redirect_uri={ok_redirect}&response_type=code"),
            "10010",
        ),
        (
            format!(
                "appid={APPID}&redirect_uri={ok_redirect}&response_type=code&scope=snsapi_login"
            ),
            "10005",
        ),
        (
            format!(
                "appid={APPID}&redirect_uri={ok_redirect}&response_type=token&scope=snsapi_base"
            ),
            "10005",
        ),
        (
            format!(
                "appid={APPID}&redirect_uri={ok_redirect}&response_type=code&scope=snsapi_base&state=a-b"
            ),
            "10013",
        ),
        (
            format!(
                "appid={APPID}&redirect_uri={ok_redirect}&response_type=code&scope=snsapi_base&state={}",
                "a".repeat(129)
            ),
            "10013",
        ),
        (
            format!(
                "appid={WEB_APPID}&redirect_uri={ok_redirect}&response_type=code&scope=snsapi_base"
            ),
            "10016",
        ),
    ];
    for (q, want) in cases {
        let (status, err, body) = page(&sim, &format!("{q}&wxsim_person=bob")).await;
        assert_eq!(status, 200, "{q}: error pages are HTTP 200");
        assert_eq!(err.as_deref(), Some(want), "{q}: {body}");
        assert!(body.contains(want));
    }
    // 128 bytes of state is fine, and the domain may carry the port.
    let q = format!(
        "appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}&wxsim_person=bob",
        url_encode("http://app.example.com:8080/cb"),
        "a".repeat(128)
    );
    let (status, _, loc) = page(&sim, &q).await;
    assert_eq!(status, 302, "{loc}");
}

#[tokio::test]
async fn without_a_person_a_picker_is_shown() {
    let sim = TestSim::start().await;
    let q = format!(
        "appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_base",
        url_encode("http://127.0.0.1/cb")
    );
    let (status, _, body) = page(&sim, &q).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("wxsim_person=alice") && body.contains("wxsim_person=dave"),
        "{body}"
    );
}

#[tokio::test]
async fn base_scope_is_silent_and_yields_only_the_openid() {
    let sim = TestSim::start().await;
    // carol refuses userinfo, but snsapi_base never asks.
    let resp = sim.authorize(APPID, "snsapi_base", "xyz", "carol").await;
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with("http://127.0.0.1/cb?x=1&code="), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("xyz"));
    let code = query_param(&loc, "code").unwrap();
    let v = sim.exchange(APPID, SECRET, &code).await;
    assert_eq!(v["scope"], "snsapi_base");
    assert_eq!(v["expires_in"], 7200);
    assert_eq!(v["openid"], sim.openid(APPID, "carol").await);
    assert!(
        v.get("unionid").is_none() && v.get("is_snapshotuser").is_none(),
        "{v}"
    );
    let token = v["access_token"].as_str().unwrap();
    let openid = v["openid"].as_str().unwrap();
    let u = sim
        .get(&format!(
            "/sns/userinfo?access_token={token}&openid={openid}&lang=zh_CN"
        ))
        .await;
    assert_eq!(errcode(&u), 48001, "base token on userinfo: {u}");
    assert!(
        u["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("api unauthorized")
    );
}

#[tokio::test]
async fn userinfo_scope_yields_the_profile_without_sex_or_region() {
    let sim = TestSim::start().await;
    let code = sim.code(APPID, "snsapi_userinfo", "bob").await;
    let v = sim.exchange(APPID, SECRET, &code).await;
    assert_eq!(v["scope"], "snsapi_userinfo");
    assert_eq!(v["unionid"], "oUNION_bob_0000000000000000");
    let token = v["access_token"].as_str().unwrap();
    let openid = v["openid"].as_str().unwrap();
    let u = sim
        .get(&format!(
            "/sns/userinfo?access_token={token}&openid={openid}"
        ))
        .await;
    assert_eq!(u["nickname"], "Bob");
    assert_eq!(u["sex"], 0);
    assert_eq!(
        (
            u["province"].as_str(),
            u["city"].as_str(),
            u["country"].as_str()
        ),
        (Some(""), Some(""), Some(""))
    );
    assert_eq!(u["privilege"], json!([]));
    assert_eq!(u["unionid"], "oUNION_bob_0000000000000000");
    let wrong = sim.openid(APPID, "alice").await;
    let u = sim
        .get(&format!(
            "/sns/userinfo?access_token={token}&openid={wrong}"
        ))
        .await;
    assert_eq!(errcode(&u), 40003);
    let u = sim
        .get(&format!("/sns/userinfo?access_token={token}"))
        .await;
    assert_eq!(errcode(&u), 41009);
    let a = sim
        .get(&format!("/sns/auth?access_token={token}&openid={openid}"))
        .await;
    assert_eq!((errcode(&a), a["errmsg"].as_str()), (0, Some("ok")));
    let a = sim
        .get(&format!("/sns/auth?access_token={token}&openid={wrong}"))
        .await;
    assert_eq!(errcode(&a), 40003);
    let a = sim.get("/sns/auth?access_token=nope&openid=x").await;
    assert_eq!(errcode(&a), 40014);
    sim.advance(7200).await;
    let u = sim
        .get(&format!(
            "/sns/userinfo?access_token={token}&openid={openid}"
        ))
        .await;
    assert_eq!(errcode(&u), 42001);
}

#[tokio::test]
async fn a_base_token_reads_the_profile_after_a_recent_userinfo_grant() {
    // The seed articles' "sometimes works" (§12).
    let sim = TestSim::start().await;
    let code = sim.code(APPID, "snsapi_userinfo", "bob").await;
    sim.exchange(APPID, SECRET, &code).await;
    sim.advance(86400).await;
    let code = sim.code(APPID, "snsapi_base", "bob").await;
    let v = sim.exchange(APPID, SECRET, &code).await;
    let (token, openid) = (
        v["access_token"].as_str().unwrap(),
        v["openid"].as_str().unwrap(),
    );
    let u = sim
        .get(&format!(
            "/sns/userinfo?access_token={token}&openid={openid}"
        ))
        .await;
    assert_eq!(u["nickname"], "Bob", "{u}");
    // Another account's grant does not count.
    let code = sim.code(APPID2, "snsapi_base", "bob").await;
    let v = sim.exchange(APPID2, SECRET2, &code).await;
    let (t2, o2) = (
        v["access_token"].as_str().unwrap(),
        v["openid"].as_str().unwrap(),
    );
    assert_eq!(
        errcode(
            &sim.get(&format!("/sns/userinfo?access_token={t2}&openid={o2}"))
                .await
        ),
        48001
    );
    // After 30 days the grant no longer helps.
    sim.advance(29 * 86400).await;
    let code = sim.code(APPID, "snsapi_base", "bob").await;
    let v = sim.exchange(APPID, SECRET, &code).await;
    let (token, openid) = (
        v["access_token"].as_str().unwrap(),
        v["openid"].as_str().unwrap(),
    );
    let u = sim
        .get(&format!(
            "/sns/userinfo?access_token={token}&openid={openid}"
        ))
        .await;
    assert_eq!(errcode(&u), 48001);
}

#[tokio::test]
async fn the_quirks_are_settings() {
    let off = TestSim::with(&world("[quirks]\nbase_userinfo_after_grant = false")).await;
    let code = off.code(APPID, "snsapi_userinfo", "bob").await;
    off.exchange(APPID, SECRET, &code).await;
    let code = off.code(APPID, "snsapi_base", "bob").await;
    let v = off.exchange(APPID, SECRET, &code).await;
    let (t, o) = (
        v["access_token"].as_str().unwrap(),
        v["openid"].as_str().unwrap(),
    );
    assert_eq!(
        errcode(
            &off.get(&format!("/sns/userinfo?access_token={t}&openid={o}"))
                .await
        ),
        48001
    );

    let lax = TestSim::with(&world("[quirks]\nuserinfo_ignores_openid = true")).await;
    let code = lax.code(APPID, "snsapi_userinfo", "bob").await;
    lax.exchange(APPID, SECRET, &code).await;
    let code = lax.code(APPID, "snsapi_base", "bob").await;
    let v = lax.exchange(APPID, SECRET, &code).await;
    let t = v["access_token"].as_str().unwrap();
    let u = lax
        .get(&format!("/sns/userinfo?access_token={t}&openid=anything"))
        .await;
    assert_eq!(u["nickname"], "Bob");
}

#[tokio::test]
async fn codes_are_single_use_short_lived_and_bound_to_their_appid() {
    let sim = TestSim::start().await;
    let code = sim.code(APPID, "snsapi_base", "bob").await;
    assert_eq!(
        errcode(&sim.exchange(APPID2, SECRET2, &code).await),
        40029,
        "another appid"
    );
    assert_eq!(errcode(&sim.exchange(APPID, "wrong", &code).await), 40125);
    assert_eq!(errcode(&sim.exchange(APPID, SECRET, &code).await), 0);
    let again = sim.exchange(APPID, SECRET, &code).await;
    assert_eq!(errcode(&again), 40163, "{again}");
    assert!(
        again["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("code been used")
    );

    let code = sim.code(APPID, "snsapi_base", "bob").await;
    sim.advance(299).await;
    let fresh = sim.code(APPID, "snsapi_base", "bob").await;
    sim.advance(1).await;
    assert_eq!(
        errcode(&sim.exchange(APPID, SECRET, &code).await),
        40029,
        "expired after 300 s"
    );
    assert_eq!(errcode(&sim.exchange(APPID, SECRET, &fresh).await), 0);
    let cases = [
        (
            format!("appid={APPID}&secret={SECRET}&grant_type=authorization_code"),
            41008,
        ),
        (
            format!("appid={APPID}&secret={SECRET}&code=x&grant_type=client_credential"),
            40002,
        ),
        (
            format!(
                "appid={APPID}&secret={SECRET}&code=never-issued&grant_type=authorization_code"
            ),
            40029,
        ),
        (
            format!("secret={SECRET}&code=x&grant_type=authorization_code"),
            41002,
        ),
        (
            format!("appid={APPID}&code=x&grant_type=authorization_code"),
            41004,
        ),
    ];
    for (q, want) in cases {
        assert_eq!(
            errcode(&sim.get(&format!("/sns/oauth2/access_token?{q}")).await),
            want,
            "{q}"
        );
    }

    let strict = TestSim::with(&world("[settings]\nexpired_code_errcode = 42003")).await;
    let code = strict.code(APPID, "snsapi_base", "bob").await;
    strict.advance(300).await;
    assert_eq!(errcode(&strict.exchange(APPID, SECRET, &code).await), 42003);
}

#[tokio::test]
async fn refusal_redirects_with_state_only() {
    let sim = TestSim::start().await;
    let resp = sim
        .authorize(APPID, "snsapi_userinfo", "abc", "carol")
        .await;
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert_eq!(loc, "http://127.0.0.1/cb?x=1&state=abc");

    let stay = TestSim::with(&world("[settings]\ndeny_mode = \"no_redirect\"")).await;
    let resp = stay
        .authorize(APPID, "snsapi_userinfo", "abc", "carol")
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("拒绝"));
}

#[tokio::test]
async fn ask_shows_a_consent_page_whose_buttons_decide() {
    let sim = TestSim::start().await;
    for (decision, expect_code) in [("allow", true), ("deny", false)] {
        let resp = sim.authorize(APPID, "snsapi_userinfo", "s1", "alice").await;
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("id=\"allow\"") && html.contains("id=\"deny\""),
            "{html}"
        );
        assert!(html.contains("Test Account") && html.contains("Alice"));
        let pending = html
            .split("name=\"pending\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let resp = sim
            .http
            .post(sim.url("/connect/oauth2/decide"))
            .form(&[("pending", pending), ("decision", decision)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        let loc = location(&resp);
        assert_eq!(query_param(&loc, "code").is_some(), expect_code, "{loc}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("s1"));
        // A consent page answers once.
        let again = sim
            .http
            .post(sim.url("/connect/oauth2/decide"))
            .form(&[("pending", pending), ("decision", decision)])
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200);
    }
}

#[tokio::test]
async fn a_follower_from_the_menu_gets_userinfo_silently() {
    let sim = TestSim::start().await;
    let url = format!(
        "/connect/oauth2/authorize?appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_userinfo&state=m&wxsim_person=alice&wxsim_from=menu",
        url_encode("http://127.0.0.1/cb")
    );
    let resp = sim.http.get(sim.url(&url)).send().await.unwrap();
    assert_eq!(resp.status(), 302, "alice follows and comes from the menu");
    // bob does not follow: the menu does not make him silent.
    sim.post("/_sim/people/bob/consent", json!({"consent": "ask"}))
        .await;
    let resp = sim
        .http
        .get(sim.url(&url.replace("alice", "bob")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_person_cookie_is_remembered() {
    let sim = TestSim::start().await;
    let resp = sim.authorize(APPID, "snsapi_base", "c", "bob").await;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("wxsim_person=bob"));
    let url = format!(
        "/connect/oauth2/authorize?appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_base&state=c",
        url_encode("http://127.0.0.1/cb")
    );
    let resp = sim
        .http
        .get(sim.url(&url))
        .header("cookie", "wxsim_person=bob")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let code = query_param(&location(&resp), "code").unwrap();
    assert_eq!(
        sim.exchange(APPID, SECRET, &code).await["openid"],
        sim.openid(APPID, "bob").await
    );
}

#[tokio::test]
async fn snapshot_users_get_virtual_ids_and_no_profile() {
    let sim = TestSim::start().await;
    let code = sim.code(APPID, "snsapi_userinfo", "dave").await;
    let v = sim.exchange(APPID, SECRET, &code).await;
    assert_eq!(v["is_snapshotuser"], 1);
    let real = sim.openid(APPID, "dave").await;
    assert_ne!(v["openid"], real, "virtual openid");
    let (t, o) = (
        v["access_token"].as_str().unwrap(),
        v["openid"].as_str().unwrap(),
    );
    assert_eq!(
        errcode(
            &sim.get(&format!("/sns/userinfo?access_token={t}&openid={o}"))
                .await
        ),
        48001
    );
}

#[tokio::test]
async fn refresh_tokens_live_30_days_and_do_not_rotate() {
    let sim = TestSim::start().await;
    let code = sim.code(APPID, "snsapi_userinfo", "bob").await;
    let v = sim.exchange(APPID, SECRET, &code).await;
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let path = format!(
        "/sns/oauth2/refresh_token?appid={APPID}&grant_type=refresh_token&refresh_token={refresh}"
    );
    sim.advance(7200).await;
    let r = sim.get(&path).await;
    assert_eq!(r["refresh_token"], refresh.as_str());
    assert_ne!(r["access_token"], v["access_token"]);
    assert_eq!(r["scope"], "snsapi_userinfo");
    assert_eq!(r["openid"], v["openid"]);
    let (t, o) = (
        r["access_token"].as_str().unwrap(),
        r["openid"].as_str().unwrap(),
    );
    assert_eq!(
        sim.get(&format!("/sns/userinfo?access_token={t}&openid={o}"))
            .await["nickname"],
        "Bob"
    );
    assert_eq!(errcode(&sim.get(&path.replace(APPID, APPID2)).await), 40030);
    assert_eq!(errcode(&sim.get(&format!("/sns/oauth2/refresh_token?appid={APPID}&grant_type=refresh_token&refresh_token=nope")).await), 40030);
    assert_eq!(
        errcode(
            &sim.get(&format!(
                "/sns/oauth2/refresh_token?appid={APPID}&grant_type=refresh_token"
            ))
            .await
        ),
        41003
    );
    sim.advance(30 * 86400 - 7201).await;
    assert_eq!(errcode(&sim.get(&path).await), 0);
    sim.advance(1).await;
    assert_eq!(errcode(&sim.get(&path).await), 42002);
    // Long past the day the simulator used to keep it: still 42002 (the
    // platform remembers the token), not 40030 (an unknown one). Another
    // call first, so the hourly pruning has run in between.
    sim.advance(10 * 86400).await;
    assert_eq!(
        errcode(&sim.get(&path.replace(&refresh, "nope")).await),
        40030
    );
    assert_eq!(errcode(&sim.get(&path).await), 42002);
}

#[tokio::test]
async fn qrconnect_is_for_website_apps_and_returns_unionid() {
    let sim = TestSim::start().await;
    let url = |appid: &str, scope: &str| {
        format!(
            "/connect/qrconnect?appid={appid}&redirect_uri={}&response_type=code&scope={scope}&state=w&wxsim_person=bob",
            url_encode("http://127.0.0.1/login")
        )
    };
    let resp = sim
        .http
        .get(sim.url(&url(APPID, "snsapi_login")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-wxsim-error").unwrap(), "10005");
    let resp = sim
        .http
        .get(sim.url(&url(WEB_APPID, "snsapi_base")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-wxsim-error").unwrap(), "10005");
    let resp = sim
        .http
        .get(sim.url(&url(WEB_APPID, "snsapi_login")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let code = query_param(&location(&resp), "code").unwrap();
    let v = sim.exchange(WEB_APPID, WEB_SECRET, &code).await;
    assert_eq!(v["scope"], "snsapi_login");
    assert_eq!(v["unionid"], "oUNION_bob_0000000000000000");
    let (t, o) = (
        v["access_token"].as_str().unwrap(),
        v["openid"].as_str().unwrap(),
    );
    assert_eq!(
        sim.get(&format!("/sns/userinfo?access_token={t}&openid={o}"))
            .await["nickname"],
        "Bob"
    );
}
