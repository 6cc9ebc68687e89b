//! Third-party platforms: the verify ticket, the component token, accounts
//! authorized through the simulator's control API (the same pushes an
//! administrator's approval on the authorization page makes), their tokens
//! over 48 virtual hours, revocation, restarts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

pub const COMPONENT: &str = "wxcc00000000000001";
const C_SECRET: &str = "component-secret-canary-8a1f2e3d4c";
const C_TOKEN: &str = "componentpushtoken";
const C_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const AUTHORIZER: &str = "wx2222222222222222";

/// A hub with one component, its events URL known to the simulator's
/// world, the `shop` client granted it; `authorizers` official accounts in
/// the world that may authorize it.
async fn platform_with(authorizers: usize, o: Options) -> TestHub {
    let port = free_port();
    let mut extra = format!(
        r#"
[[components]]
appid = "{COMPONENT}"
secret = "{C_SECRET}"
token = "{C_TOKEN}"
encoding_aes_key = "{C_KEY}"
name = "Hub Test Platform"
event_url = "http://127.0.0.1:{port}/component/{COMPONENT}/events"
message_url = "http://127.0.0.1:{port}/push/$APPID$"
auth_domains = ["127.0.0.1"]
oauth_domains = ["127.0.0.1"]
ticket_push = false
"#
    );
    for i in 0..authorizers {
        extra.push_str(&format!(
            "\n[[accounts]]\nappid = \"{}\"\nsecret = \"authorizer-own-secret-{i}\"\nname = \"Shop {i}\"\n",
            authorizer(i)
        ));
    }
    TestHub::with(Options {
        world: world(&extra),
        listen: format!("127.0.0.1:{port}"),
        shop_components: format!("[\"{COMPONENT}\"]"),
        components: format!(
            r#"
[[components]]
appid = "{COMPONENT}"
secret = "{C_SECRET}"
token = "{C_TOKEN}"
encoding_aes_key = "{C_KEY}"
name = "Hub Test Platform"
return_origins = ["http://127.0.0.1:9"]
tickets = ["jsapi"]
oauth_return_origins = ["http://127.0.0.1:9"]
{}
"#,
            o.components
        ),
        ..o
    })
    .await
}

async fn platform(authorizers: usize) -> TestHub {
    platform_with(authorizers, Options::default()).await
}

pub fn authorizer(i: usize) -> String {
    if i == 0 {
        AUTHORIZER.to_string()
    } else {
        format!("wx3{i:015}")
    }
}

fn component_stats(t: &TestHub) -> Value {
    t.sim.sim().stats()["components"][COMPONENT].clone()
}

fn component_tokens(t: &TestHub) -> u64 {
    component_stats(t)["tokens_issued"]["component_access_token"]
        .as_u64()
        .unwrap_or(0)
}

fn authorizer_tokens(t: &TestHub, appid: &str) -> u64 {
    t.sim.sim().stats()["apps"][appid]["tokens_issued"]["authorizer_access_token"]
        .as_u64()
        .unwrap_or(0)
}

fn authorizer_calls(t: &TestHub, appid: &str) -> u64 {
    t.sim.sim().stats()["apps"][appid]["calls"]["/cgi-bin/component/api_authorizer_token"]
        .as_u64()
        .unwrap_or(0)
}

/// The account's entry in `GET /v1/apps` (null if it is not listed).
async fn app_entry(t: &TestHub, appid: &str) -> Value {
    let apps = t.apps().await;
    apps["apps"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["appid"] == appid))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits (real time, bounded) for something the hub does in a task of its
/// own after answering a push.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

/// The platform pushes a ticket now; the hub answers `success`.
async fn push_ticket(t: &TestHub) -> Value {
    let r = t
        .sim_post(&format!("/_sim/components/{COMPONENT}/ticket"), json!({}))
        .await;
    assert_eq!(r["delivered"], true, "{r}");
    assert_eq!(r["body"], "success", "{r}");
    r
}

/// A first ticket, and the component token the hub fetches with it.
async fn first_ticket(t: &TestHub) {
    push_ticket(t).await;
    eventually("the component token", || component_tokens(t) == 1).await;
}

/// The platform refuses the next `count` authorizer refreshes with
/// `errcode`; two hours pass (with a fresh ticket) and what is due runs.
async fn next_refresh_refused(t: &TestHub, errcode: i64, count: u32) {
    t.fault(json!({"endpoint": "/cgi-bin/component/api_authorizer_token", "count": count, "errcode": errcode}))
        .await;
    t.advance(7200);
    push_ticket(t).await;
    t.run_due().await;
}

/// A platform with its component token and `AUTHORIZER` authorized to it.
async fn authorized_platform() -> TestHub {
    let t = platform(1).await;
    first_ticket(&t).await;
    authorize(&t, AUTHORIZER).await;
    t
}

async fn authorize(t: &TestHub, appid: &str) -> Value {
    let r = t
        .sim_post(
            &format!("/_sim/components/{COMPONENT}/authorize"),
            json!({"authorizer_appid": appid}),
        )
        .await;
    assert_eq!(r["event_delivered"], true, "{r}");
    r
}

/// The account's administrator revokes the platform (the event is pushed).
async fn unauthorize(t: &TestHub, appid: &str) {
    let r = t
        .sim_post(
            &format!("/_sim/components/{COMPONENT}/unauthorize"),
            json!({"authorizer_appid": appid}),
        )
        .await;
    assert_eq!(r["event_delivered"], true, "{r}");
}

async fn token_of(t: &TestHub, appid: &str) -> (u16, Value) {
    t.get(&format!("/v1/apps/{appid}/access_token")).await
}

/// Waits (real time, bounded) until the token API answers `status` for
/// `appid`: the hub applies an authorization event in a task of its own.
async fn answers(t: &TestHub, appid: &str, status: u16) {
    for _ in 0..200 {
        if token_of(t, appid).await.0 == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{appid}'s token never answered {status}");
}

/// Whether the platform takes `token` as `appid`'s on a business API.
async fn works(t: &TestHub, token: &str) -> bool {
    let v = t
        .sim_get(&format!(
            "/cgi-bin/ticket/getticket?access_token={token}&type=jsapi"
        ))
        .await;
    v["errcode"].as_i64().unwrap_or(0) == 0
}

#[tokio::test]
async fn a_pushed_ticket_fetches_the_component_token_once_and_a_restart_fetches_nothing() {
    let mut t = platform(0).await;
    // No ticket yet: the caller is told why, nothing is sent to
    // api_component_token (a null ticket only earns 61006), and the hub asks
    // the platform to restart its pushes, which pushes one at once.
    let (s, v) = t.get(&format!("/v1/components/{COMPONENT}/token")).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("component_verify_ticket"),
        "{v}"
    );
    let calls = |t: &TestHub, path: &str| component_stats(t)["calls"][path].as_u64().unwrap_or(0);
    assert_eq!(calls(&t, "/cgi-bin/component/api_start_push_ticket"), 1);
    eventually("the pushed ticket fetches the component token", || {
        component_tokens(&t) == 1
    })
    .await;
    assert_eq!(
        calls(&t, "/cgi-bin/component/api_component_token"),
        1,
        "no call without a ticket"
    );
    let (s, v) = t.get(&format!("/v1/components/{COMPONENT}/token")).await;
    assert_eq!(s, 200, "{v}");
    let first = v["component_access_token"].as_str().unwrap().to_string();

    // A second ticket is stored, and costs nothing.
    push_ticket(&t).await;
    t.run_due().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(component_tokens(&t), 1);

    t.restart().await;
    t.run_due().await;
    assert_eq!(component_tokens(&t), 1, "the stored token is used");
    let (_, v) = t.get(&format!("/v1/components/{COMPONENT}/token")).await;
    assert_eq!(v["component_access_token"], first.as_str());

    // The component token is not an account token, whoever asks.
    let (s, v) = t.get(&format!("/v1/apps/{COMPONENT}/access_token")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "component_token");
    let r = t
        .get_as(&format!("/v1/components/{COMPONENT}/token"), &t.good_key)
        .await;
    assert_eq!(
        r.status().as_u16(),
        403,
        "a client not granted the component"
    );
}

#[tokio::test]
async fn a_bad_push_is_refused_before_anything_is_stored() {
    let t = platform(0).await;
    let url = t.url(&format!(
        "/component/{COMPONENT}/events?timestamp=1&nonce=2&encrypt_type=aes&msg_signature={}",
        "0".repeat(40)
    ));
    let body = format!("<xml><AppId>{COMPONENT}</AppId><Encrypt>AAAA</Encrypt></xml>");
    let r = t.http.post(&url).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = t.http.post(&url).body("<xml><AppId>").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = t
        .http
        .post(t.url("/component/wx9999999999999999/events"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let big = "x".repeat(64 * 1024);
    let r = t.http.post(&url).body(big).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(t.hub().app().creds.ticket_age(COMPONENT).await.is_none());
    let m = t.metrics().await;
    assert!(
        m.contains(&format!(
            "wxhub_component_events_total{{component=\"{COMPONENT}\",event=\"rejected\"}} 2"
        )),
        "{m}"
    );
}

#[tokio::test]
async fn an_authorized_account_is_served_like_any_other_for_48_hours() {
    let t = platform(1).await;
    first_ticket(&t).await;

    let r = authorize(&t, AUTHORIZER).await;
    assert_eq!(r["info_type"], "authorized");
    // The code was exchanged while the push was answered: the account is
    // here with the token api_query_auth gave, and nothing more was fetched.
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(authorizer_calls(&t, AUTHORIZER), 0);
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
    let (s, v) = t.get(&format!("/v1/apps/{AUTHORIZER}/jsapi_ticket")).await;
    assert_eq!(s, 200, "a jsapi ticket through the authorizer token: {v}");
    let (s, v) = t
        .post(
            &format!("/v1/apps/{AUTHORIZER}/jssdk/config"),
            json!({"url": "https://app.example.com/page"}),
        )
        .await;
    assert!(s == 200 || s == 403, "jssdk/config answers: {s} {v}");

    // `/v1/apps` says where it came from.
    let listed = app_entry(&t, AUTHORIZER).await;
    assert_eq!(listed["component"], COMPONENT, "{listed}");

    let end = t.now() + 48 * 3600;
    let mut dead = 0;
    let mut step = 0;
    while t.now() < end {
        if step % 24 == 0 {
            // The platform's pushes, every 10 min in reality; every 2 h is
            // plenty for a ticket that lives 12.
            push_ticket(&t).await;
        }
        t.run_due().await;
        if step % 6 == 0 {
            let (s, v) = token_of(&t, AUTHORIZER).await;
            assert_eq!(s, 200, "{v}");
            if !works(&t, v["access_token"].as_str().unwrap()).await {
                dead += 1;
            }
        }
        step += 1;
        t.advance(300);
    }
    assert_eq!(dead, 0, "no dead token was ever served");
    let issued = authorizer_tokens(&t, AUTHORIZER);
    // One from api_query_auth, then one per lifetime (7200 s less the
    // classic margin): 48 h / ~6960 s ≈ 25.
    assert!(
        (24..=27).contains(&issued),
        "{issued} authorizer tokens in 48 h"
    );
    let comp = component_tokens(&t);
    assert!((24..=27).contains(&comp), "{comp} component tokens in 48 h");
    let check = t
        .sim_get(&format!(
            "/_sim/components/{COMPONENT}/authorizers/{AUTHORIZER}"
        ))
        .await;
    assert_eq!(check["refresh_token_rejections"], 0, "{check}");
    assert_eq!(check["current_refresh_token_works"], true, "{check}");
}

#[tokio::test]
async fn unauthorize_stops_refreshing_and_a_new_authorization_brings_it_back() {
    let t = authorized_platform().await;
    assert_eq!(token_of(&t, AUTHORIZER).await.0, 200);

    unauthorize(&t, AUTHORIZER).await;
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "authorization_revoked");
    assert!(v["error"]["message"].as_str().unwrap().contains(AUTHORIZER));
    let before = authorizer_calls(&t, AUTHORIZER);
    for _ in 0..12 {
        push_ticket(&t).await;
        t.run_due().await;
        t.advance(3600);
    }
    assert_eq!(
        authorizer_calls(&t, AUTHORIZER),
        before,
        "a revoked account is not refreshed"
    );
    assert_eq!(token_of(&t, AUTHORIZER).await.0, 403);

    let r = authorize(&t, AUTHORIZER).await;
    assert_eq!(r["info_type"], "authorized");
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
    t.advance(7200);
    t.run_due().await;
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
}

/// `method path` with the admin key and a JSON body: (status, body).
async fn admin_send(
    t: &TestHub,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let r = t.send_as(method, path, &t.admin, body).await;
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn what_the_operator_set_on_an_authorized_account_outlives_a_revocation_and_a_new_authorization()
 {
    let t = authorized_platform().await;
    let path = format!("/v1/admin/accounts/{AUTHORIZER}");
    let change = json!({"name": "Shop A", "jssdk_domains": ["shop.example.com"], "tickets": []});
    let (s, v) = admin_send(&t, reqwest::Method::PATCH, &path, Some(&change)).await;
    assert_eq!(s, 200, "{v}");
    let kept = |v: &Value| {
        assert_eq!(v["name"], "Shop A", "{v}");
        assert_eq!(v["jssdk_domains"], json!(["shop.example.com"]), "{v}");
        assert_eq!(v["tickets"], json!([]), "{v}");
        assert_eq!(v["component"], COMPONENT, "{v}");
    };

    unauthorize(&t, AUTHORIZER).await;
    answers(&t, AUTHORIZER, 403).await;
    let (s, v) = admin_send(&t, reqwest::Method::GET, &path, None).await;
    assert_eq!(s, 200, "{v}");
    kept(&v);
    assert!(v["revoked_at"].is_i64(), "{v}");

    authorize(&t, AUTHORIZER).await;
    answers(&t, AUTHORIZER, 200).await;
    let (s, v) = admin_send(&t, reqwest::Method::GET, &path, None).await;
    assert_eq!(s, 200, "{v}");
    kept(&v);
    assert!(v.get("revoked_at").is_none_or(Value::is_null), "{v}");

    // The platform's events are in the audit as changes of `revoked_at`
    // alone, by the platform.
    let (s, audit) = admin_send(&t, reqwest::Method::GET, "/v1/admin/audit?limit=100", None).await;
    assert_eq!(s, 200, "{audit}");
    let by_platform: Vec<(&str, Value)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == AUTHORIZER && e["actor"] == format!("component:{COMPONENT}"))
        .map(|e| (e["action"].as_str().unwrap(), e["fields"].clone()))
        .collect();
    let changes = by_platform
        .iter()
        .filter(|(action, fields)| *action == "account.change" && *fields == json!(["revoked_at"]))
        .count();
    assert_eq!(changes, 2, "{audit:#}");
    assert!(
        by_platform
            .iter()
            .all(|(action, _)| *action != "account.replace"),
        "{audit:#}"
    );
}

#[tokio::test]
async fn a_restart_keeps_refreshing_with_the_stored_refresh_token_and_a_killed_refresh_loses_nothing()
 {
    let mut t = authorized_platform().await;
    t.restart().await;
    assert_eq!(
        token_of(&t, AUTHORIZER).await.0,
        200,
        "the account survived"
    );
    t.advance(7200);
    push_ticket(&t).await;
    t.run_due().await;
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
    let calls = authorizer_calls(&t, AUTHORIZER);
    assert!(calls >= 1);

    // A refresh in flight when the hub dies.
    t.advance(7200);
    push_ticket(&t).await;
    t.fault(json!({"endpoint": "/cgi-bin/component/api_authorizer_token", "count": 1, "delay_ms": 1500}))
        .await;
    let creds = t.hub().app().creds.clone();
    let running = tokio::spawn(async move { creds.run_due().await });
    eventually("the slow refresh is in flight", || {
        authorizer_calls(&t, AUTHORIZER) > calls
            || t.sim.sim().stats()["components"][COMPONENT]["calls"]
                ["/cgi-bin/component/api_component_token"]
                .as_u64()
                .unwrap_or(0)
                > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Killed: its tasks are dropped where they stand, the slow call with
    // them. The next hub waits for the file as a restarted process would
    // for the dead one's lock (the kernel drops a dead process's at once;
    // here the dropped hub's writer lets go once its tasks are gone). The
    // probe's descriptor, closed, drops this process's fcntl locks on the
    // file: nothing else uses it meanwhile.
    drop(t.hub.take());
    running.abort();
    for _ in 0..100 {
        let free = std::fs::File::open(&t.store)
            .map(|f| f.try_lock().is_ok())
            .unwrap_or(false);
        if free {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.restart().await;
    let stored = t
        .hub()
        .app()
        .store
        .load_credential(AUTHORIZER, "authorizer_refresh_token")
        .await
        .unwrap()
        .expect("the refresh token is stored")
        .value
        .expose_secret()
        .to_string();
    let check = t
        .sim_post(
            &format!("/_sim/components/{COMPONENT}/refresh_token/check"),
            json!({"authorizer_appid": AUTHORIZER, "refresh_token": stored}),
        )
        .await;
    assert_eq!(check["valid"], true, "the stored refresh token still works");
    t.run_due().await;
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn a_ticket_missed_for_hours_breaks_nothing_while_the_last_one_is_valid() {
    let t = authorized_platform().await;
    // No push for 6 hours: the stored ticket (12 h) keeps the component
    // token, and with it the authorizer's, fresh.
    let end = t.now() + 6 * 3600;
    while t.now() < end {
        t.run_due().await;
        let (s, v) = token_of(&t, AUTHORIZER).await;
        assert_eq!(s, 200, "{v}");
        assert!(works(&t, v["access_token"].as_str().unwrap()).await);
        t.advance(600);
    }
    assert!(
        component_tokens(&t) >= 3,
        "the component token was refreshed"
    );
    // An hour without a ticket: the hub asked the platform to restart its
    // pushes, bounded (at most once per 10 minutes), and they came back.
    let restarts = component_stats(&t)["calls"]["/cgi-bin/component/api_start_push_ticket"]
        .as_u64()
        .unwrap_or(0);
    assert!((1..=36).contains(&restarts), "{restarts} restart requests");
    eventually("a ticket pushed again", || {
        component_stats(&t)["tickets_delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    })
    .await;
}

#[tokio::test]
async fn a_thousand_authorized_accounts_are_refreshed_once_per_lifetime() {
    let t = platform_with(
        0,
        Options {
            extra: "max_fetches_per_second = 1000\nmax_concurrent = 64".into(),
            ..Options::default()
        },
    )
    .await;
    const N: usize = 1000;
    for i in 1..=N {
        let r = t
            .http
            .post(format!("{}/_sim/accounts", t.sim.base_url()))
            .json(&json!({"appid": authorizer(i), "secret": format!("own-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    first_ticket(&t).await;
    for i in 1..=N {
        authorize(&t, &authorizer(i)).await;
    }
    assert_eq!(
        t.hub().app().creds.authorizer_count(COMPONENT),
        N,
        "every account appeared"
    );
    let end = t.now() + 48 * 3600;
    let mut step = 0;
    while t.now() < end {
        if step % 12 == 0 {
            push_ticket(&t).await;
        }
        t.run_due().await;
        step += 1;
        t.advance(600);
    }
    let mut total = 0;
    for i in 1..=N {
        let n = authorizer_tokens(&t, &authorizer(i));
        assert!(
            (24..=27).contains(&n),
            "{}: {n} tokens in 48 h",
            authorizer(i)
        );
        total += n;
    }
    assert!(total <= 27 * N as u64);
    // A client's reports beyond the caller budget cost no fetch.
    let a = authorizer(1);
    let (_, v) = token_of(&t, &a).await;
    let tok = v["access_token"].as_str().unwrap().to_string();
    let before = authorizer_calls(&t, &a);
    for _ in 0..20 {
        let _ = t
            .post(
                &format!("/v1/apps/{a}/access_token/invalidate"),
                json!({"token": tok}),
            )
            .await;
    }
    let after = authorizer_calls(&t, &a);
    assert!(
        after - before <= 1,
        "a report of a working token costs no fetch ({before} → {after})"
    );
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_string()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn the_start_page_and_the_return_handler_add_the_account() {
    let t = platform(1).await;
    first_ticket(&t).await;

    let r = t
        .http
        .get(t.url(&format!(
            "/component/{COMPONENT}/authorize?return={}",
            enc(RETURN)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let page_url = location(&r);
    assert!(
        page_url.starts_with(&format!("{}/cgi-bin/componentloginpage?", t.sim.base_url())),
        "{page_url}"
    );
    let page = t
        .http
        .get(&page_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"approve\""), "{page}");
    let pre = url::Url::parse(&page_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "pre_auth_code")
        .unwrap()
        .1
        .to_string();
    // The administrator approves.
    let form = format!(
        "component_appid={COMPONENT}&pre_auth_code={}&account={AUTHORIZER}&func=1&func=4&action=approve",
        enc(&pre)
    );
    let r = t
        .http
        .post(format!("{}/safe/bindcomponent/decide", t.sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let back = location(&r);
    assert!(
        back.starts_with(&t.url(&format!("/component/{COMPONENT}/return?"))),
        "{back}"
    );
    let r = t.http.get(&back).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "{:?}", r.text().await);
    assert_eq!(
        location(&r),
        format!("{RETURN}&authorizer_appid={AUTHORIZER}")
    );
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
    // The event carried the same code: still one account.
    eventually("the event was answered", || {
        t.sim.sim().stats()["apps"][AUTHORIZER]["calls"]["/cgi-bin/component/api_query_auth"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    assert_eq!(t.hub().app().creds.authorizer_count(COMPONENT), 1);

    // The same return again (a reload, a replay): refused before the
    // platform is asked.
    let exchanges = || {
        t.sim.sim().stats()["apps"][AUTHORIZER]["calls"]["/cgi-bin/component/api_query_auth"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = exchanges();
    let r = t.http.get(&back).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_state", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("already"),
        "{v}"
    );
    assert_eq!(exchanges(), before, "a replayed return asked the platform");

    // A return URL the platform was not told about, a forged state, a
    // return that is not the one signed.
    let r = t
        .http
        .get(t.url(&format!(
            "/component/{COMPONENT}/authorize?return={}",
            enc("https://evil.example/x")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_return");
    let forged = back.replace("state=", "state=0");
    let r = t.http.get(&forged).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let other = back.replace(&enc(RETURN), &enc("http://127.0.0.1:9/other"));
    assert_ne!(other, back);
    let r = t.http.get(&other).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_state");
}

#[tokio::test]
async fn starts_of_the_authorization_page_are_bounded_per_platform() {
    let t = platform_with(
        0,
        Options {
            limits: r#"
[limits]
anonymous = { per_minute = 3, burst = 3 }
"#
            .into(),
            ..Options::default()
        },
    )
    .await;
    first_ticket(&t).await;
    let mut codes = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let r = t
            .http
            .get(t.url(&format!(
                "/component/{COMPONENT}/authorize?return={}",
                enc(RETURN)
            )))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            302 => codes += 1,
            429 => limited += 1,
            s => panic!("{s}"),
        }
    }
    assert!(codes <= 3, "{codes} starts went through");
    assert_eq!(codes + limited, 20);
    let made = component_stats(&t)["calls"]["/cgi-bin/component/api_create_preauthcode"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(made, codes, "a refused start costs no upstream call");
}

#[tokio::test]
async fn no_component_secret_ticket_code_or_token_reaches_a_log_metrics_or_a_listing() {
    let t = platform(1).await;
    let ticket = push_ticket(&t).await["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the component token", || component_tokens(&t) == 1).await;
    let code = authorize(&t, AUTHORIZER).await["auth_code"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = t.get(&format!("/v1/components/{COMPONENT}/token")).await;
    let ctoken = v["component_access_token"].as_str().unwrap().to_string();
    let (_, v) = token_of(&t, AUTHORIZER).await;
    let atoken = v["access_token"].as_str().unwrap().to_string();
    let refresh = t
        .hub()
        .app()
        .store
        .load_credential(AUTHORIZER, "authorizer_refresh_token")
        .await
        .unwrap()
        .unwrap()
        .value
        .expose_secret()
        .to_string();
    // A refresh, a bad push, an unauthorize: what gets logged.
    t.advance(7200);
    t.run_due().await;
    let _ = t
        .http
        .post(t.url(&format!(
            "/component/{COMPONENT}/events?timestamp=1&nonce=2&encrypt_type=aes&msg_signature=00"
        )))
        .body(format!("<xml><Encrypt>{ticket}</Encrypt></xml>"))
        .send()
        .await
        .unwrap();
    let r = t
        .http
        .get(t.url(&format!(
            "/component/{COMPONENT}/authorize?return={}",
            enc(RETURN)
        )))
        .send()
        .await
        .unwrap();
    let pre = location(&r);
    let pre = url::Url::parse(&pre)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "pre_auth_code")
        .unwrap()
        .1
        .to_string();
    t.sim_post(
        &format!("/_sim/components/{COMPONENT}/unauthorize"),
        json!({"authorizer_appid": AUTHORIZER}),
    )
    .await;
    let (_, revoked) = token_of(&t, AUTHORIZER).await;
    let apps = t.apps().await.to_string();
    let history = t
        .get_as(
            &format!("/v1/apps/{AUTHORIZER}/history?limit=100"),
            &t.admin,
        )
        .await
        .text()
        .await
        .unwrap();
    let metrics = t.metrics().await;
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logs.contains(COMPONENT), "logs were captured");
    for (name, secret) in [
        ("component secret", C_SECRET),
        ("push token", C_TOKEN),
        ("encoding key", C_KEY),
        ("verify ticket", ticket.as_str()),
        ("authorization code", code.as_str()),
        ("pre-auth code", pre.as_str()),
        ("component token", ctoken.as_str()),
        ("authorizer token", atoken.as_str()),
        ("refresh token", refresh.as_str()),
    ] {
        assert!(!logs.contains(secret), "{name} in logs");
        for (what, text) in [
            ("/metrics", &metrics),
            ("/v1/apps", &apps),
            ("history", &history),
            ("the revoked answer", &revoked.to_string()),
        ] {
            assert!(!text.contains(secret), "{name} in {what}");
        }
    }
}

#[tokio::test]
async fn a_refresh_token_the_platform_rejects_is_read_back_from_the_authorizer_list_once() {
    let t = authorized_platform().await;
    // The next refresh is refused once with 61023: the hub reads the
    // refresh token back from api_get_authorizer_list and tries again.
    next_refresh_refused(&t, 61023, 1).await;
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 200, "{v}");
    assert!(works(&t, v["access_token"].as_str().unwrap()).await);
    let listed = component_stats(&t)["calls"]["/cgi-bin/component/api_get_authorizer_list"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(listed, 1, "one reconciliation");
    // Rejected for good: the account says what to do, and is not hammered.
    next_refresh_refused(&t, 61023, 1000).await;
    let a = app_entry(&t, AUTHORIZER).await;
    let reason = a["problem"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("authorize the third-party platform again"),
        "{a}"
    );
    let calls = authorizer_calls(&t, AUTHORIZER);
    for _ in 0..10 {
        t.advance(30);
        t.run_due().await;
    }
    assert!(
        authorizer_calls(&t, AUTHORIZER) <= calls + 1,
        "a refresh token the platform rejects is retried slowly"
    );
}

#[tokio::test]
async fn a_61003_on_refresh_revokes_the_account_as_the_event_would() {
    let t = authorized_platform().await;
    next_refresh_refused(&t, 61003, 1).await;
    for _ in 0..200 {
        if token_of(&t, AUTHORIZER).await.0 == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (s, v) = token_of(&t, AUTHORIZER).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "authorization_revoked");
    let calls = authorizer_calls(&t, AUTHORIZER);
    t.advance(7200);
    t.run_due().await;
    assert_eq!(authorizer_calls(&t, AUTHORIZER), calls, "no more refreshes");
    authorize(&t, AUTHORIZER).await;
    assert_eq!(token_of(&t, AUTHORIZER).await.0, 200);
}

#[tokio::test]
async fn web_authorization_of_an_authorized_account_goes_through_the_component_endpoints() {
    use crate::oauth::{authorize_url, landed, param, redeem, walk};
    let t = platform(1).await;
    push_ticket(&t).await;
    authorize(&t, AUTHORIZER).await;
    answers(&t, AUTHORIZER, 200).await;

    // A profile sign-in: the silent probe, consent, the code exchanged and
    // the profile read, every exchange on the component's endpoints (the
    // simulator refuses an on-behalf code at the plain endpoint: 40029).
    let steps = walk(
        &t,
        &authorize_url(&t, AUTHORIZER, "userinfo"),
        "alice",
        "allow",
    )
    .await;
    assert!(
        steps
            .iter()
            .any(|s| s.url.contains("/connect/oauth2/authorize")
                && s.url.contains(&format!("component_appid={COMPONENT}"))),
        "WeChat's page is asked on the platform's behalf: {steps:#?}"
    );
    let to = landed(&steps);
    let ticket = param(&to, "wxhub_ticket").unwrap_or_else(|| panic!("ticket in {to}: {steps:#?}"));
    // `shop` is granted the platform, not the account: it redeems anyway.
    let (s, v) = redeem(&t, &ticket).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["appid"], AUTHORIZER, "{v}");
    assert!(v["openid"].as_str().is_some_and(|o| !o.is_empty()), "{v}");
    assert_eq!(v["profile"]["nickname"], "Alice", "{v}");
    let stats = t.sim.sim().stats();
    let calls = |path: &str| {
        stats["apps"][AUTHORIZER]["calls"][path]
            .as_u64()
            .unwrap_or(0)
            + stats["components"][COMPONENT]["calls"][path]
                .as_u64()
                .unwrap_or(0)
    };
    assert!(calls("/sns/oauth2/component/access_token") >= 1, "{stats}");
    assert_eq!(calls("/sns/oauth2/access_token"), 0, "{stats}");

    // Revoked: a sign-in is refused up front, with the same clear error.
    unauthorize(&t, AUTHORIZER).await;
    let mut refused = None;
    for _ in 0..200 {
        let r = t
            .http
            .get(authorize_url(&t, AUTHORIZER, "base"))
            .send()
            .await
            .unwrap();
        if r.status() == 403 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let v = refused.expect("a revoked account's sign-in is refused");
    assert_eq!(v["error"]["code"], "authorization_revoked", "{v}");
}

#[tokio::test]
async fn an_authorized_accounts_messages_reach_the_platforms_subscribers() {
    use crate::subscriber::{Mode, SUB_SECRET, Subscriber};
    let sub = Subscriber::start(Mode::Up).await;
    let t = platform_with(
        1,
        Options {
            components: format!(
                "[components.push]\n[[components.push.subscribers]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{SUB_SECRET}\"\ntimeout_ms = 2000\n",
                sub.url()
            ),
            extra: "\n[push]\ntick_ms = 20\n".into(),
            ..Options::default()
        },
    )
    .await;
    push_ticket(&t).await;
    authorize(&t, AUTHORIZER).await;
    answers(&t, AUTHORIZER, 200).await;

    // The platform sends the account's messages to its message URL with
    // the account's AppID for $APPID$, encrypted with the platform's key
    // and AppID: the hub takes them for that account.
    let f = t
        .sim_post(
            "/_sim/people/alice/follow",
            json!({"appid": AUTHORIZER, "wait": true}),
        )
        .await;
    assert_eq!(f["delivery"]["status"], "delivered", "{f}");
    let v = t
        .sim_post(
            "/_sim/people/alice/text",
            json!({"appid": AUTHORIZER, "content": "hello platform", "wait": true}),
        )
        .await;
    let d = &v["delivery"];
    assert_eq!(d["via"], COMPONENT, "{v}");
    assert_eq!(d["status"], "delivered", "{v}");
    let got = sub.wait_for(2).await;
    assert!(got.iter().all(|r| r.body["appid"] == AUTHORIZER), "{got:?}");
    // The follow comes with the follower's profile, read with the
    // authorizer token the hub keeps.
    let follow = got
        .iter()
        .find(|r| r.body["event"] == "subscribe")
        .unwrap_or_else(|| panic!("a subscribe among {got:?}"));
    let profile = &follow.body["follower"]["profile"];
    assert_eq!(profile["subscribe"], true, "{:?}", follow.body);
    assert_eq!(profile["openid"], follow.body["from_user_name"]);
    assert!(
        got.iter()
            .any(|r| r.body["fields"]["content"] == "hello platform"),
        "{got:?}"
    );
    assert_eq!(sub.bad_signatures(), 0);

    // Revoked: the hub no longer takes the account's pushes.
    unauthorize(&t, AUTHORIZER).await;
    answers(&t, AUTHORIZER, 403).await;
    let r = t
        .http
        .post(t.url(&format!(
            "/push/{AUTHORIZER}?signature=x&timestamp=1&nonce=1"
        )))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a revoked account takes no pushes");
}

/// The console page of a platform shows its verify ticket (or that none
/// came) and how many accounts are authorized to it; an authorized
/// account's page names its platform, and says when its administrator
/// revoked it.
#[tokio::test]
async fn the_console_shows_a_platforms_ticket_and_authorizers_and_an_accounts_platform() {
    let t = platform(1).await;
    let page = |appid: &'static str| {
        let req = t
            .http
            .get(t.url(&format!("/console/apps/{appid}")))
            .bearer_auth(&t.admin);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        }
    };
    let p = page(COMPONENT).await;
    assert!(p.contains("no component_verify_ticket received yet"), "{p}");
    assert!(
        p.contains("<b class=\"authorizers\">0</b> accounts authorized"),
        "{p}"
    );

    first_ticket(&t).await;
    authorize(&t, AUTHORIZER).await;
    let p = page(COMPONENT).await;
    assert!(p.contains(&format!("id=\"platform-{COMPONENT}\"")), "{p}");
    assert!(
        p.contains("<b class=\"authorizers\">1</b> account authorized"),
        "{p}"
    );
    assert!(p.contains("newest verify ticket"), "{p}");
    assert!(!p.contains("no component_verify_ticket"), "{p}");

    let via = format!(
        "authorized through the third-party platform <a href=\"/console/apps/{COMPONENT}\">"
    );
    let p = page(AUTHORIZER).await;
    assert!(p.contains(&via), "{p}");
    assert!(!p.contains("<b>revoked</b>"), "{p}");
    unauthorize(&t, AUTHORIZER).await;
    let p = page(AUTHORIZER).await;
    assert!(p.contains("<b>revoked</b>"), "{p}");
}

/// A restricted account (50002 on every refresh) may stay so for days: it
/// is shown as a problem and tried once an hour, not every few minutes.
#[tokio::test]
async fn a_restricted_account_is_tried_hourly_and_says_why() {
    let t = authorized_platform().await;
    let r = t
        .sim_post(
            &format!("/_sim/accounts/{AUTHORIZER}"),
            json!({"restricted": true}),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let calls = authorizer_calls(&t, AUTHORIZER);
    // A day in steps of five minutes, the ticket pushed as the platform would.
    for step in 0..288 {
        if step % 12 == 0 {
            push_ticket(&t).await;
        }
        t.advance(300);
        t.run_due().await;
    }
    let tried = authorizer_calls(&t, AUTHORIZER) - calls;
    assert!(
        (20..=26).contains(&tried),
        "{tried} refreshes of a restricted account in a day"
    );
    let a = app_entry(&t, AUTHORIZER).await;
    let reason = a["problem"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("50002"), "{a}");
    assert!(reason.contains("hourly"), "{a}");
}
