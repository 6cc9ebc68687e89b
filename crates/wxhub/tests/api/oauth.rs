use serde_json::{Value, json};

use crate::helpers::*;

/// One step of a login as a browser would see it.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub status: u16,
    pub url: String,
    pub location: String,
    pub body: String,
}

pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) fn param(u: &str, key: &str) -> Option<String> {
    url::Url::parse(u)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Follows redirects from `start` as `person` until it lands on RETURN (not
/// fetched) or a page. On a consent page, answers `decision`.
pub(crate) async fn walk(hub: &TestHub, start: &str, person: &str, decision: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut url = start.to_string();
    for _ in 0..12 {
        if url.starts_with("http://127.0.0.1:9/") {
            break;
        }
        let r = hub
            .http
            .get(&url)
            .header("cookie", format!("wxsim_person={person}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = r.text().await.unwrap_or_default();
        steps.push(Step {
            status,
            url: url.clone(),
            location: location.clone(),
            body: body.clone(),
        });
        if status == 302 {
            url = location;
            continue;
        }
        if status == 200 && body.contains("name=\"pending\"") {
            let pending = body
                .split("name=\"pending\" value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let r = hub
                .http
                .post(format!("{}/connect/oauth2/decide", hub.sim.base_url()))
                .form(&[("pending", pending), ("decision", decision)])
                .send()
                .await
                .unwrap();
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let status = r.status().as_u16();
            // A refusal with `deny_mode = "no_redirect"` stays on a page.
            let body = if location.is_empty() {
                r.text().await.unwrap_or_default()
            } else {
                String::new()
            };
            steps.push(Step {
                status,
                url: "decide".into(),
                location: location.clone(),
                body,
            });
            if location.is_empty() {
                break;
            }
            url = location;
            continue;
        }
        break;
    }
    steps
}

pub(crate) fn authorize_url(hub: &TestHub, appid: &str, scope: &str) -> String {
    hub.url(&format!(
        "/oauth/{appid}/authorize?scope={scope}&return_to={}",
        enc(RETURN)
    ))
}

/// The hub callback URL WeChat redirected to in a walk.
pub(crate) fn callback_url(steps: &[Step]) -> String {
    steps
        .iter()
        .find(|s| s.url.contains("/callback?"))
        .expect("a callback in the walk")
        .url
        .clone()
}

pub(crate) fn landed(steps: &[Step]) -> String {
    steps.last().map(|s| s.location.clone()).unwrap_or_default()
}

fn sim_visits(hub: &TestHub, steps: &[Step]) -> usize {
    steps
        .iter()
        .filter(|s| s.url.starts_with(&hub.sim.base_url()))
        .count()
}

/// The state with one character changed: a forgery.
fn flip(s: &str, at: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

pub(crate) async fn redeem(hub: &TestHub, ticket: &str) -> (u16, Value) {
    hub.post("/v1/oauth/tickets/redeem", json!({"ticket": ticket}))
        .await
}

async fn login(hub: &TestHub, scope: &str, person: &str) -> (Vec<Step>, Value) {
    let steps = walk(hub, &authorize_url(hub, APPID, scope), person, "allow").await;
    let to = landed(&steps);
    let ticket = param(&to, "wxhub_ticket").unwrap_or_else(|| panic!("ticket in {to}: {steps:#?}"));
    let (s, v) = redeem(hub, &ticket).await;
    assert_eq!(s, 200, "{v}");
    (steps, v)
}

#[tokio::test]
async fn base_login_hands_over_the_openid_through_a_single_use_ticket() {
    let hub = TestHub::start().await;
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "carol", "allow").await;
    let first = &steps[0];
    assert_eq!(first.status, 302);
    assert!(
        first.location.starts_with(&format!(
            "{}/connect/oauth2/authorize?appid={APPID}&redirect_uri=",
            hub.sim.base_url()
        )),
        "{}",
        first.location
    );
    assert!(
        first.location.contains("scope=snsapi_base")
            && first.location.ends_with("#wechat_redirect")
    );
    let state = param(&first.location, "state").unwrap();
    assert!(
        state.len() <= 128 && state.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{state}"
    );
    let to = landed(&steps);
    assert!(
        to.starts_with("http://127.0.0.1:9/done?x=1&wxhub_ticket="),
        "{to}"
    );
    let ticket = param(&to, "wxhub_ticket").unwrap();
    let (s, v) = redeem(&hub, &ticket).await;
    assert_eq!(s, 200);
    let carol = hub
        .sim_get(&format!("/_sim/openid?appid={APPID}&person=carol"))
        .await["openid"]
        .clone();
    assert_eq!(v["openid"], carol);
    assert_eq!(v["scope"], "snsapi_base");
    assert!(v.get("profile").is_none());
    let (s, v) = redeem(&hub, &ticket).await;
    assert_eq!(s, 404, "single use: {v}");
    // A ticket lives 60 s.
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "carol", "allow").await;
    let ticket = param(&landed(&steps), "wxhub_ticket").unwrap();
    hub.advance(61);
    assert_eq!(redeem(&hub, &ticket).await.0, 404);
}

#[tokio::test]
async fn a_profile_login_asks_once_then_is_silent_for_a_person_with_a_grant() {
    let hub = TestHub::start().await;
    let (steps, v) = login(&hub, "userinfo", "bob").await;
    assert_eq!(
        sim_visits(&hub, &steps),
        2,
        "a silent base round, then snsapi_userinfo: {steps:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.location.contains("scope=snsapi_userinfo"))
    );
    assert_eq!(v["scope"], "snsapi_userinfo");
    assert_eq!(v["profile"]["nickname"], "Bob");
    assert_eq!(v["unionid"], "oUNION_bob_0000000000000000");
    // Next time: the grant is on file, no consent round.
    let (steps, v) = login(&hub, "userinfo", "bob").await;
    assert_eq!(sim_visits(&hub, &steps), 1, "{steps:#?}");
    assert!(
        !steps
            .iter()
            .any(|s| s.location.contains("scope=snsapi_userinfo"))
    );
    assert_eq!(v["profile"]["nickname"], "Bob");
    // The stored profile is served to clients.
    let openid = v["openid"].as_str().unwrap();
    let (s, u) = hub.get(&format!("/v1/apps/{APPID}/users/{openid}")).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["profile"]["nickname"], "Bob");
}

#[tokio::test]
async fn a_person_who_refuses_comes_back_with_access_denied() {
    let hub = TestHub::start().await;
    // carol refuses at once; dave is asked and clicks Deny.
    for (person, decision) in [("carol", "allow"), ("dave", "deny")] {
        let steps = walk(
            &hub,
            &authorize_url(&hub, APPID, "userinfo"),
            person,
            decision,
        )
        .await;
        let to = landed(&steps);
        assert_eq!(
            to, "http://127.0.0.1:9/done?x=1&wxhub_error=access_denied",
            "{person}: {steps:#?}"
        );
    }
    assert_eq!(
        hub.calls("/sns/oauth2/access_token"),
        2,
        "only the silent base rounds exchanged a code"
    );
    // The console counts how they ended.
    let page = hub
        .get_as(&format!("/console/apps/{APPID}"), &hub.admin)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<b>0</b> signed in, <b>2</b> refused, <b>0</b> failed"),
        "{page}"
    );
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "carol", "allow").await;
    assert!(landed(&steps).contains("wxhub_ticket="));
    let page = hub
        .get_as(&format!("/console/apps/{APPID}"), &hub.admin)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<b>1</b> signed in, <b>2</b> refused"),
        "{page}"
    );
}

#[tokio::test]
async fn wechats_double_redirect_gets_the_same_result_not_a_40163() {
    let hub = TestHub::start().await;
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "bob", "allow").await;
    let callback = callback_url(&steps);
    let first = param(&landed(&steps), "wxhub_ticket").unwrap();
    // The same callback again, before the page redeemed its ticket: the same
    // ticket, not a second one.
    let again = hub.http.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), 302);
    let to = again.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(param(&to, "wxhub_ticket").as_deref(), Some(first.as_str()));
    let (s, v) = redeem(&hub, &first).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["appid"], APPID);
    assert_eq!(
        hub.calls("/sns/oauth2/access_token"),
        1,
        "the code was exchanged once"
    );
    // Once redeemed, a replay is told the sign-in was used: no new ticket.
    let later = hub.http.get(&callback).send().await.unwrap();
    assert_eq!(later.status(), 302);
    let to = later.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, format!("{RETURN}&wxhub_error=already_used"));
    assert_eq!(hub.calls("/sns/oauth2/access_token"), 1);
}

#[tokio::test]
async fn replayed_forged_and_expired_states_exchange_nothing() {
    let hub = TestHub::start().await;
    let a = walk(&hub, &authorize_url(&hub, APPID, "base"), "bob", "allow").await;
    let used_state = param(&a[0].location, "state").unwrap();
    // A fresh code with an already used state: refused.
    let b = walk(&hub, &authorize_url(&hub, APPID, "base"), "bob", "allow").await;
    let b_code = param(&b[1].location, "code");
    let exchanges = hub.calls("/sns/oauth2/access_token");
    // A used state with another code: the page is told, nothing exchanged.
    let mut used = vec![format!("code=whatever&state={used_state}")];
    if let Some(c) = &b_code {
        used.push(format!("code={c}&state={used_state}"));
    }
    for q in &used {
        let r = hub.get_raw(&format!("/oauth/{APPID}/callback?{q}")).await;
        assert_eq!(r.status(), 302, "{q}");
        assert_eq!(
            r.headers()["location"],
            format!("{RETURN}&wxhub_error=already_used").as_str(),
            "{q}"
        );
    }
    let cases: Vec<(String, &str)> = vec![
        (
            format!("code=x&state={}", flip(&used_state, 70)),
            "invalid_state",
        ),
        (
            format!("code=x&state={}", flip(&used_state, 40)),
            "invalid_state",
        ),
        ("code=x&state=abc".to_string(), "invalid_state"),
        ("code=x".to_string(), "invalid_state"),
    ];
    for (q, code) in &cases {
        let r = hub.get_raw(&format!("/oauth/{APPID}/callback?{q}")).await;
        assert_eq!(r.status(), 400, "{q}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!("data-code=\"{code}\"")),
            "{q}: {body}"
        );
    }
    // A state for another account does not verify either.
    let r = hub
        .get_raw(&format!(
            "/oauth/{WEB_APPID}/callback?code=x&state={used_state}"
        ))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        hub.calls("/sns/oauth2/access_token"),
        exchanges,
        "nothing was exchanged"
    );

    // Expired: the person takes longer than state_ttl (600 s).
    let r = hub
        .http
        .get(authorize_url(&hub, APPID, "base"))
        .send()
        .await
        .unwrap();
    let wechat = r.headers()["location"].to_str().unwrap().to_string();
    hub.advance(601);
    let steps = walk(&hub, &wechat, "bob", "allow").await;
    let last = steps.last().unwrap();
    assert_eq!(last.status, 400);
    assert!(
        last.body.contains("data-code=\"expired_state\""),
        "{}",
        last.body
    );
    assert!(
        last.body.contains("id=\"restart\""),
        "offers to start again"
    );
    assert_eq!(hub.calls("/sns/oauth2/access_token"), exchanges);
}

#[tokio::test]
async fn return_to_must_be_an_allowed_origin() {
    let hub = TestHub::start().await;
    let cases = [
        "https://evil.example.com/",
        "http://127.0.0.1:10/done",
        "http://127.0.0.1:9@evil.example.com/",
        "http://user:pw@127.0.0.1:9/",
        "//evil.example.com/x",
        "javascript:alert(1)",
        "/relative",
        "",
    ];
    for rt in cases {
        let r = hub
            .get_raw(&format!(
                "/oauth/{APPID}/authorize?scope=base&return_to={}",
                enc(rt)
            ))
            .await;
        assert_eq!(r.status(), 400, "{rt}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("return_to"),
            "{rt}: {v}"
        );
    }
    let r = hub
        .get_raw(&format!(
            "/oauth/{APPID}/authorize?scope=everything&return_to={}",
            enc(RETURN)
        ))
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn grants_expire_after_30_days_and_the_next_login_asks_again() {
    let hub = TestHub::start().await;
    let (_, v) = login(&hub, "userinfo", "bob").await;
    let openid = v["openid"].as_str().unwrap().to_string();
    // Within 30 days the profile is refreshed through the grant.
    hub.advance(2 * 86400);
    let refreshes = hub.calls("/sns/oauth2/refresh_token");
    let (s, u) = hub.get(&format!("/v1/apps/{APPID}/users/{openid}")).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["profile_fetched_at"], hub.now());
    assert_eq!(
        hub.calls("/sns/oauth2/refresh_token"),
        refreshes + 1,
        "the user token was refreshed"
    );
    hub.advance(28 * 86400);
    let (s, u) = hub.get(&format!("/v1/apps/{APPID}/users/{openid}")).await;
    assert_eq!(s, 404, "{u}");
    assert!(
        u["error"]["message"].as_str().unwrap().contains("expired"),
        "{u}"
    );
    let (steps, v) = login(&hub, "userinfo", "bob").await;
    assert_eq!(sim_visits(&hub, &steps), 2, "asked again: {steps:#?}");
    assert_eq!(v["profile"]["nickname"], "Bob");
}

#[tokio::test]
async fn a_48001_leads_to_snsapi_userinfo_not_to_an_error() {
    let hub = TestHub::start().await;
    login(&hub, "userinfo", "bob").await;
    // The grant on file no longer reads the profile.
    hub.fault(json!({"endpoint": "/sns/userinfo", "count": 1, "errcode": 48001}))
        .await;
    let (steps, v) = login(&hub, "userinfo", "bob").await;
    assert!(
        steps
            .iter()
            .any(|s| s.location.contains("scope=snsapi_userinfo")),
        "escalated: {steps:#?}"
    );
    assert_eq!(v["profile"]["nickname"], "Bob");
    // A base-only person asking for nothing more gets no profile and no error.
    let (_, v) = login(&hub, "base", "dave").await;
    let openid = v["openid"].as_str().unwrap();
    let (s, u) = hub.get(&format!("/v1/apps/{APPID}/users/{openid}")).await;
    assert_eq!(s, 404);
    assert!(
        u["error"]["message"]
            .as_str()
            .unwrap()
            .contains("snsapi_userinfo"),
        "{u}"
    );
}

#[tokio::test]
async fn a_snapshot_user_gets_an_openid_without_a_profile_and_no_loop() {
    let hub = TestHub::start().await;
    let (steps, v) = login(&hub, "userinfo", "erin").await;
    assert!(steps.len() < 8, "{steps:#?}");
    assert_eq!(v["snapshot"], true);
    assert_eq!(v["profile_error"], "api_unauthorized");
    assert!(v.get("profile").is_none());
}

#[tokio::test]
async fn website_qr_login_goes_through_the_same_flow() {
    let hub = TestHub::start().await;
    let steps = walk(
        &hub,
        &authorize_url(&hub, WEB_APPID, "login"),
        "bob",
        "allow",
    )
    .await;
    assert!(
        steps[0].location.starts_with(&format!(
            "{}/connect/qrconnect?appid={WEB_APPID}",
            hub.sim.base_url()
        )),
        "{steps:#?}"
    );
    let (s, v) = redeem(&hub, &param(&landed(&steps), "wxhub_ticket").unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(v["scope"], "snsapi_login");
    assert_eq!(v["profile"]["nickname"], "Bob");
    assert_eq!(v["unionid"], "oUNION_bob_0000000000000000");
    let r = hub
        .get_raw(&format!(
            "/oauth/{WEB_APPID}/authorize?scope=userinfo&return_to={}",
            enc(RETURN)
        ))
        .await;
    assert_eq!(r.status(), 400);
    // A website app has no global token.
    let (s, _) = hub.get(&format!("/v1/apps/{WEB_APPID}/access_token")).await;
    assert_eq!(s, 404);
}

/// A refusal that never comes back (Android's blank page: the platform
/// does not redirect, so neither the hub nor the business server hears of
/// it). The abandoned sign-in holds its state only until the state
/// expires: the same person can start again at once, and when abandoned
/// rounds fill `oauth.max_pending_states`, sign-ins are refused (503, no
/// upstream call) until the states expire, then work again.
#[tokio::test]
async fn a_refusal_that_never_comes_back_holds_its_state_only_until_it_expires() {
    let hub = TestHub::with(Options {
        world: format!("{}\n[settings]\ndeny_mode = \"no_redirect\"\n", world("")),
        oauth: "max_pending_states = 4".into(),
        ..Options::default()
    })
    .await;
    // dave is asked, refuses, and stays on the platform's page.
    let steps = walk(
        &hub,
        &authorize_url(&hub, APPID, "userinfo"),
        "dave",
        "deny",
    )
    .await;
    let last = steps.last().unwrap();
    assert!(
        last.url == "decide" && last.status == 200 && last.location.is_empty(),
        "no redirect back: {steps:#?}"
    );
    // He tries again, and agrees.
    let steps = walk(
        &hub,
        &authorize_url(&hub, APPID, "userinfo"),
        "dave",
        "allow",
    )
    .await;
    assert!(landed(&steps).contains("wxhub_ticket="), "{steps:#?}");
    // Each consent round took two states (the silent round and the asked
    // one): the four are used up, and the next sign-in is refused without
    // a call to the platform.
    let exchanges = hub.calls("/sns/oauth2/access_token");
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "bob", "allow").await;
    let last = steps.last().unwrap();
    assert_eq!(last.status, 503, "{steps:#?}");
    assert!(last.body.contains("too_many_sign_ins"), "{}", last.body);
    assert_eq!(hub.calls("/sns/oauth2/access_token"), exchanges);
    // Once the states have expired (and their count with them), sign-ins
    // work again.
    hub.advance(2 * 600 + 1);
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "bob", "allow").await;
    assert!(landed(&steps).contains("wxhub_ticket="), "{steps:#?}");
}

#[tokio::test]
async fn a_replayed_failure_keeps_its_code() {
    // Room for one sign-in: bob has no grant, so the silent round's callback
    // needs a second state, for consent, and gets none.
    let hub = TestHub::with(Options {
        oauth: "max_pending_states = 1".into(),
        ..Options::default()
    })
    .await;
    let steps = walk(
        &hub,
        &authorize_url(&hub, APPID, "userinfo"),
        "bob",
        "allow",
    )
    .await;
    let last = steps.last().unwrap();
    assert_eq!(last.status, 503, "{steps:#?}");
    assert!(
        last.body.contains("data-code=\"too_many_sign_ins\""),
        "{}",
        last.body
    );
    let callback = callback_url(&steps);
    // The same callback again (WeChat's double redirect): the same answer,
    // with its own code; it used to come back as `sign_in_failed`.
    let r = hub.http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("data-code=\"too_many_sign_ins\""), "{body}");
    assert_eq!(
        hub.calls("/sns/oauth2/access_token"),
        1,
        "the code was exchanged once"
    );
}

/// The log lines that name `reference`.
fn logged_with(reference: &str) -> Vec<String> {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(reference))
        .map(str::to_string)
        .collect()
}

/// The reference of an internal error's message, checked for its form.
fn reference_in(message: &str) -> String {
    let reference = message
        .strip_prefix("internal error; reference ")
        .unwrap_or_else(|| panic!("no reference in {message:?}"));
    assert!(
        reference.len() == 12 && reference.bytes().all(|b| b.is_ascii_hexdigit()),
        "{message}"
    );
    reference.to_string()
}

/// Stops `hub` and starts it again on a store that refuses `op` (INSERT,
/// UPDATE) on states, with `cause`.
async fn refuse_states(hub: &mut TestHub, op: &str, cause: &str) {
    hub.restart_with(|db| {
        db.execute_batch(&format!(
            "CREATE TRIGGER refuse_{op} BEFORE {op} ON oauth_states BEGIN SELECT RAISE(ABORT, '{cause}'); END;"
        ))
        .unwrap();
    })
    .await;
}

/// An internal error's reference, checked: the cause is logged once, at
/// error level, with it.
fn check_logged(message: &str, cause: &str) {
    let reference = reference_in(message);
    let lines = logged_with(&reference);
    assert_eq!(lines.len(), 1, "logged once: {lines:#?}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains(cause),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_store_failure_answers_a_reference_and_logs_its_cause_once() {
    const CAUSE: &str = "injected store failure 7d41";
    let mut hub = TestHub::start().await;

    // The person's page: a state that cannot be used.
    refuse_states(&mut hub, "UPDATE", CAUSE).await;
    let steps = walk(&hub, &authorize_url(&hub, APPID, "base"), "bob", "allow").await;
    let last = steps.last().unwrap();
    assert_eq!(last.status, 500, "{steps:#?}");
    assert!(!last.body.contains("injected"), "{}", last.body);
    let message = last
        .body
        .split("data-code=\"internal\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("{}", last.body));
    check_logged(message, CAUSE);
    assert_eq!(
        hub.calls("/sns/oauth2/access_token"),
        0,
        "nothing was exchanged"
    );

    // A JSON route: a state that cannot be recorded.
    refuse_states(&mut hub, "INSERT", CAUSE).await;
    let r = hub
        .http
        .get(authorize_url(&hub, APPID, "base"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "internal", "{v}");
    assert!(!v.to_string().contains("injected"), "{v}");
    check_logged(v["error"]["message"].as_str().unwrap(), CAUSE);
}
