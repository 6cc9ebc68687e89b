//! The third-party platform (component-platform.md): tickets, tokens, the
//! authorization page, authorizer tokens on the business APIs, pushes to a
//! listener on 127.0.0.1, on-behalf web authorization, control and stats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::helpers::*;

const C1: &str = "wxc000000000000001";
const C1_SECRET: &str = "componentsecret0000000000000001";
const C1_TOKEN: &str = "componenttoken1";
const C1_KEY: &str = "Componentkey0123456789abcdefghijklmnopqrstu";
const C2: &str = "wxc000000000000002";
const C2_SECRET: &str = "componentsecret0000000000000002";

/// One POST received: the path, the query and the body.
type Post = (String, HashMap<String, String>, String);

#[derive(Default)]
struct Inbox {
    posts: Mutex<Vec<Post>>,
    reply: Mutex<String>,
}

async fn on_post(
    State(inbox): State<Arc<Inbox>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> String {
    inbox
        .posts
        .lock()
        .unwrap()
        .push((format!("/{rest}"), q, body));
    inbox.reply.lock().unwrap().clone()
}

/// A listener answering `success` (or what `reply` says) on every path.
async fn receiver() -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    *inbox.reply.lock().unwrap() = "success".into();
    let app = axum::Router::new()
        .route("/{*rest}", axum::routing::post(on_post))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), inbox)
}

impl Inbox {
    fn take(&self) -> Vec<Post> {
        std::mem::take(&mut *self.posts.lock().unwrap())
    }

    fn count(&self) -> usize {
        self.posts.lock().unwrap().len()
    }

    /// Waits up to two seconds for `n` posts in all.
    async fn wait_for(&self, n: usize) -> Vec<Post> {
        for _ in 0..200 {
            if self.count() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.posts.lock().unwrap().clone()
    }
}

fn sha1_sorted(parts: &[&str]) -> String {
    let mut v = parts.to_vec();
    v.sort();
    hex::encode(Sha1::digest(v.concat()))
}

/// Checks both signatures of a component push and returns the plaintext.
fn open_push(q: &HashMap<String, String>, body: &str, outer: &str) -> String {
    let (ts, nonce) = (&q["timestamp"], &q["nonce"]);
    assert_eq!(q["encrypt_type"], "aes");
    assert_eq!(q["signature"], sha1_sorted(&[C1_TOKEN, ts, nonce]));
    let enc = field(body, "Encrypt").expect("Encrypt");
    assert_eq!(
        q["msg_signature"],
        sha1_sorted(&[C1_TOKEN, ts, nonce, &enc])
    );
    assert!(field(body, outer).is_some(), "{outer} in {body}");
    let (plain, trailer) = wx_sim::push::crypto::decrypt(&enc, C1_KEY).expect("decrypts");
    assert_eq!(trailer, C1, "the trailer is the component appid");
    plain
}

fn field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let inner = &xml[start..end];
    Some(
        inner
            .strip_prefix("<![CDATA[")
            .and_then(|s| s.strip_suffix("]]>"))
            .unwrap_or(inner)
            .to_string(),
    )
}

/// The test world plus two components; `event` and `message` are URLs.
fn component_world(
    settings: &str,
    event: Option<&str>,
    message: Option<&str>,
    push: bool,
) -> String {
    let opt = |k: &str, v: Option<&str>| v.map(|v| format!("{k} = \"{v}\"\n")).unwrap_or_default();
    let mut w = world(&format!("[settings]\npush_timeout_ms = 1000\n{settings}"));
    w.push_str(&format!(
        r#"
[[components]]
appid = "{C1}"
secret = "{C1_SECRET}"
token = "{C1_TOKEN}"
encoding_aes_key = "{C1_KEY}"
name = "Platform One"
{}{}auth_domains = ["127.0.0.1"]
oauth_domains = ["127.0.0.1"]
ticket_push = {push}

[[components]]
appid = "{C2}"
secret = "{C2_SECRET}"
token = "componenttoken2"
encoding_aes_key = "Componentkey0123456789abcdefghijklmnopqrst2"
name = "Unpublished"
auth_domains = ["127.0.0.1"]
published = false
test_accounts = ["{APPID2}"]
ticket_push = false
"#,
        opt("event_url", event),
        opt("message_url", message),
    ));
    w
}

async fn sim_with(settings: &str, push: bool) -> (TestSim, Arc<Inbox>, String) {
    let (base, inbox) = receiver().await;
    let sim = TestSim::with(&component_world(
        settings,
        Some(&format!("{base}/events")),
        Some(&format!("{base}/msg/$APPID$")),
        push,
    ))
    .await;
    (sim, inbox, base)
}

impl TestSim {
    async fn ticket(&self, component: &str) -> Value {
        self.post(&format!("/_sim/components/{component}/ticket"), json!({}))
            .await
    }

    async fn component_token_with(&self, ticket: &str) -> Value {
        self.post(
            "/cgi-bin/component/api_component_token",
            json!({"component_appid": C1, "component_appsecret": C1_SECRET, "component_verify_ticket": ticket}),
        )
        .await
    }

    async fn component_token(&self) -> String {
        let t = self.ticket(C1).await["ticket"]
            .as_str()
            .unwrap()
            .to_string();
        let v = self.component_token_with(&t).await;
        v["component_access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("token in {v}"))
            .to_string()
    }

    async fn capi(&self, api: &str, token: &str, body: Value) -> Value {
        self.post(
            &format!("/cgi-bin/component/{api}?component_access_token={token}"),
            body,
        )
        .await
    }

    async fn grant(&self, authorizer: &str, funcs: &[u32]) -> Value {
        self.post(
            &format!("/_sim/components/{C1}/authorize"),
            json!({"authorizer_appid": authorizer, "func_ids": funcs}),
        )
        .await
    }

    /// Authorizes `authorizer` with `funcs` and exchanges the code.
    async fn authorized(&self, ct: &str, authorizer: &str, funcs: &[u32]) -> Value {
        let code = self.grant(authorizer, funcs).await["auth_code"]
            .as_str()
            .unwrap()
            .to_string();
        let v = self
            .capi(
                "api_query_auth",
                ct,
                json!({"component_appid": C1, "authorization_code": code}),
            )
            .await;
        v["authorization_info"].clone()
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_string()
}

#[tokio::test]
async fn a_pushed_ticket_is_encrypted_for_the_component_and_buys_a_token() {
    let (sim, inbox, _) = sim_with("", false).await;
    let v = sim.ticket(C1).await;
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"], "success");
    let ticket = s(&v, "ticket");
    assert!(
        ticket.starts_with("ticket@@@") && ticket.len() == 9 + 86,
        "{ticket}"
    );
    let posts = inbox.take();
    assert_eq!(posts.len(), 1);
    let (path, q, body) = &posts[0];
    assert_eq!(path, "/events");
    assert!(!q.contains_key("openid"));
    assert_eq!(field(body, "AppId").as_deref(), Some(C1));
    assert!(field(body, "ToUserName").is_none());
    let plain = open_push(q, body, "AppId");
    assert_eq!(field(&plain, "AppId").as_deref(), Some(C1));
    assert_eq!(
        field(&plain, "InfoType").as_deref(),
        Some("component_verify_ticket")
    );
    assert_eq!(field(&plain, "ComponentVerifyTicket"), Some(ticket.clone()));
    assert_eq!(field(&plain, "CreateTime"), Some(START.to_string()));

    let v = sim.component_token_with(&ticket).await;
    assert_eq!(v["expires_in"], 7200, "{v}");
    assert!(s(&v, "component_access_token").len() > 100);
    let cases = [
        (
            json!({"component_appid": C1, "component_appsecret": "wrong", "component_verify_ticket": ticket}),
            40125,
        ),
        (
            json!({"component_appid": C1, "component_verify_ticket": ticket}),
            41004,
        ),
        (
            json!({"component_appid": "wx9999999999999999", "component_appsecret": C1_SECRET, "component_verify_ticket": ticket}),
            40013,
        ),
        (
            json!({"component_appid": APPID, "component_appsecret": SECRET, "component_verify_ticket": ticket}),
            61011,
        ),
        (
            json!({"component_appid": C1, "component_appsecret": C1_SECRET, "component_verify_ticket": null}),
            61006,
        ),
        (
            json!({"component_appid": C1, "component_appsecret": C1_SECRET, "component_verify_ticket": ""}),
            61006,
        ),
        (
            json!({"component_appid": C1, "component_appsecret": C1_SECRET, "component_verify_ticket": "ticket@@@nope"}),
            61006,
        ),
    ];
    for (body, code) in cases {
        let v = sim
            .post("/cgi-bin/component/api_component_token", body.clone())
            .await;
        assert_eq!(errcode(&v), code, "{body} → {v}");
        assert!(s(&v, "errmsg").contains(" rid: "), "{v}");
    }
    // Another component's ticket is not this one's.
    let other = s(&sim.ticket(C2).await, "ticket");
    assert_eq!(errcode(&sim.component_token_with(&other).await), 61006);
    let resp = sim
        .http
        .post(sim.url("/cgi-bin/component/api_component_token"))
        .body("component_appid=x")
        .send()
        .await
        .unwrap();
    assert_eq!(errcode(&resp.json().await.unwrap()), 47001);
    // Any ticket younger than 12 h works, not only the newest.
    sim.ticket(C1).await;
    sim.advance(43199).await;
    assert_eq!(errcode(&sim.component_token_with(&ticket).await), 0);
    sim.advance(1).await;
    assert_eq!(errcode(&sim.component_token_with(&ticket).await), 61005);
}

#[tokio::test]
async fn a_new_component_token_leaves_the_previous_300_seconds() {
    let (sim, _inbox, _) = sim_with("", false).await;
    let ticket = s(&sim.ticket(C1).await, "ticket");
    let mint = || async {
        s(
            &sim.component_token_with(&ticket).await,
            "component_access_token",
        )
    };
    let preauth = |t: String| {
        let sim = &sim;
        async move {
            errcode(
                &sim.capi("api_create_preauthcode", &t, json!({"component_appid": C1}))
                    .await,
            )
        }
    };
    let t1 = mint().await;
    let t2 = mint().await;
    assert_eq!(
        preauth(t1.clone()).await,
        0,
        "the previous token in its grace"
    );
    sim.advance(299).await;
    assert_eq!(preauth(t1.clone()).await, 0);
    sim.advance(1).await;
    assert_eq!(preauth(t1.clone()).await, 40001);
    let t3 = mint().await;
    let t4 = mint().await;
    assert_eq!(
        preauth(t2.clone()).await,
        40001,
        "two generations old dies at once"
    );
    assert_eq!(preauth(t3.clone()).await, 0);
    // The other query name works too.
    let v = sim
        .post(
            &format!("/cgi-bin/component/api_create_preauthcode?access_token={t4}"),
            json!({"component_appid": C1}),
        )
        .await;
    let code = s(&v, "pre_auth_code");
    assert!(code.starts_with("preauthcode@@@"), "{v}");
    assert_eq!(v["expires_in"], 1800);
    assert_eq!(preauth(String::new()).await, 41001);
    assert_eq!(preauth("garbage".into()).await, 40014);
    let oa = sim.token().await;
    assert_eq!(
        preauth(oa).await,
        48001,
        "an account token on a component API"
    );
    sim.advance(7200).await;
    assert_eq!(preauth(t4).await, 42001);
    let stats = sim.get("/_sim/stats").await;
    let c = &stats["components"][C1];
    assert_eq!(c["tokens_issued"]["component_access_token"], 4);
    assert_eq!(c["calls"]["/cgi-bin/component/api_component_token"], 4);
    assert_eq!(c["calls"]["/cgi-bin/component/api_create_preauthcode"], 10);
}

#[tokio::test]
async fn the_component_token_quota_whitelist_and_plain_token_refusal() {
    let (sim, _inbox, _) = sim_with("component_token_daily_limit = 2", false).await;
    let ticket = s(&sim.ticket(C1).await, "ticket");
    assert_eq!(errcode(&sim.component_token_with(&ticket).await), 0);
    assert_eq!(errcode(&sim.component_token_with(&ticket).await), 0);
    assert_eq!(errcode(&sim.component_token_with(&ticket).await), 45009);
    assert_eq!(errcode(&sim.classic(C1, C1_SECRET).await), 61024);
    let v = sim.stable(C1, C1_SECRET, false).await;
    assert_eq!(errcode(&v), 61024);

    let (base, _) = receiver().await;
    let w = component_world("", Some(&format!("{base}/e")), None, false).replace(
        "auth_domains = [\"127.0.0.1\"]\noauth",
        "ip_whitelist = [\"10.1.2.3\"]\nauth_domains = [\"127.0.0.1\"]\noauth",
    );
    let sim = TestSim::with(&w).await;
    let ticket = s(&sim.ticket(C1).await, "ticket");
    let v = sim.component_token_with(&ticket).await;
    assert_eq!(errcode(&v), 61004, "{v}");
    assert!(
        s(&v, "errmsg").starts_with("access clientip is not registered requestIP: 127.0.0.1 rid: "),
        "{v}"
    );
}

#[tokio::test]
async fn the_regular_pusher_follows_virtual_time_and_can_be_stopped() {
    let (sim, inbox, _) = sim_with("", true).await;
    // The first push comes at start.
    assert_eq!(inbox.wait_for(1).await.len(), 1);
    sim.advance(599).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox.count(), 1, "not before the interval");
    sim.advance(1).await;
    assert_eq!(inbox.wait_for(2).await.len(), 2);
    // A jump over ten intervals pushes once, the newest ticket.
    sim.advance(6000).await;
    inbox.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox.count(), 3);
    let tickets: Vec<String> = inbox
        .take()
        .iter()
        .map(|(_, q, b)| field(&open_push(q, b, "AppId"), "ComponentVerifyTicket").unwrap())
        .collect();
    assert_ne!(tickets[0], tickets[1], "each push carries a new ticket");
    assert_eq!(errcode(&sim.component_token_with(&tickets[2]).await), 0);

    let v = sim
        .post(
            &format!("/_sim/components/{C1}/pusher"),
            json!({"running": false}),
        )
        .await;
    assert_eq!(v["was_running"], true);
    sim.advance(3600).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox.count(), 0, "a stopped pusher misses its tickets");

    let start = |secret: &str| {
        let body = json!({"component_appid": C1, "component_secret": secret});
        let sim = &sim;
        async move {
            sim.post("/cgi-bin/component/api_start_push_ticket", body)
                .await
        }
    };
    assert_eq!(errcode(&start("wrong").await), 40125);
    assert_eq!(
        start(C1_SECRET).await,
        json!({"errcode": 0, "errmsg": "ok"})
    );
    assert_eq!(inbox.wait_for(1).await.len(), 1, "a restart pushes at once");
    assert_eq!(
        start(C1_SECRET).await,
        json!({"errcode": 0, "errmsg": "in a normal state"})
    );
    let v = sim
        .post(
            "/cgi-bin/component/api_start_push_ticket",
            json!({"component_appid": "wx9999999999999999", "component_secret": "x"}),
        )
        .await;
    assert_eq!(errcode(&v), 40013);
}

#[tokio::test]
async fn only_the_exact_body_success_counts_and_tickets_are_not_retried() {
    let (sim, inbox, _) = sim_with("", false).await;
    for reply in ["success\n", "ok", ""] {
        *inbox.reply.lock().unwrap() = reply.into();
        let v = sim.ticket(C1).await;
        assert_eq!(v["delivered"], false, "{reply:?} → {v}");
        assert_eq!(v["body"], reply);
    }
    *inbox.reply.lock().unwrap() = "success".into();
    assert_eq!(sim.ticket(C1).await["delivered"], true);
    assert_eq!(inbox.take().len(), 4, "one POST per ticket: no retries");
    let c = &sim.get("/_sim/stats").await["components"][C1];
    assert_eq!(c["tickets_pushed"], 4);
    assert_eq!(c["tickets_delivered"], 1);
    // Without an event URL a ticket is still minted, but nothing is pushed.
    let v = sim.ticket(C2).await;
    assert_eq!(v["delivered"], false);
    assert!(v["status"].is_null());
    let v = sim
        .post("/_sim/components/wx0000000000000000/ticket", json!({}))
        .await;
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn authorization_events_carry_their_fields_and_the_code_buys_authorizer_tokens() {
    let (sim, inbox, _) = sim_with("", false).await;
    let ct = sim.component_token().await;
    inbox.take();
    let v = sim.grant(APPID, &[1, 2, 4]).await;
    assert_eq!(v["info_type"], "authorized");
    assert_eq!(v["event_delivered"], true);
    assert_eq!(v["expires_in"], 3600);
    let code = s(&v, "auth_code");
    assert!(code.starts_with("queryauthcode@@@"));
    let posts = inbox.take();
    assert_eq!(posts.len(), 1);
    let plain = open_push(&posts[0].1, &posts[0].2, "AppId");
    assert_eq!(field(&plain, "InfoType").as_deref(), Some("authorized"));
    assert_eq!(field(&plain, "AuthorizerAppid").as_deref(), Some(APPID));
    assert_eq!(field(&plain, "AuthorizationCode"), Some(code.clone()));
    assert_eq!(
        field(&plain, "AuthorizationCodeExpiredTime"),
        Some((START + 3600).to_string())
    );

    // Before any exchange the list has no refresh token.
    let list = sim
        .capi(
            "api_get_authorizer_list",
            &ct,
            json!({"component_appid": C1, "offset": 0, "count": 100}),
        )
        .await;
    assert_eq!(list["total_count"], 1, "{list}");
    assert_eq!(
        list["list"][0],
        json!({"authorizer_appid": APPID, "auth_time": START})
    );

    let q = sim
        .capi(
            "api_query_auth",
            &ct,
            json!({"component_appid": C1, "authorization_code": code}),
        )
        .await;
    let info = &q["authorization_info"];
    assert_eq!(info["authorizer_appid"], APPID, "{q}");
    assert_eq!(info["expires_in"], 7200);
    assert_eq!(
        info["func_info"],
        json!([{"funcscope_category": {"id": 1}}, {"funcscope_category": {"id": 2}}, {"funcscope_category": {"id": 4}}])
    );
    let refresh = s(info, "authorizer_refresh_token");
    assert!(refresh.starts_with("refreshtoken@@@"));
    let at1 = s(info, "authorizer_access_token");
    // A second exchange: a new access token, the same refresh token.
    let q2 = sim
        .capi(
            "api_query_auth",
            &ct,
            json!({"component_appid": C1, "authorization_code": code}),
        )
        .await;
    assert_eq!(
        q2["authorization_info"]["authorizer_refresh_token"],
        refresh.as_str()
    );
    let at2 = s(&q2["authorization_info"], "authorizer_access_token");
    assert_ne!(at1, at2);
    let list = sim
        .capi(
            "api_get_authorizer_list",
            &ct,
            json!({"component_appid": C1, "offset": 0, "count": 100}),
        )
        .await;
    assert_eq!(list["list"][0]["refresh_token"], refresh.as_str());

    // Authorizer tokens work on the account's business APIs, alongside its own.
    let own = sim.token().await;
    let alice = sim.openid(APPID, "alice").await;
    for t in [&at2, &own] {
        let v = sim
            .get(&format!(
                "/cgi-bin/ticket/getticket?access_token={t}&type=jsapi"
            ))
            .await;
        assert_eq!(errcode(&v), 0, "{v}");
        let v = sim
            .get(&format!(
                "/cgi-bin/user/info?access_token={t}&openid={alice}"
            ))
            .await;
        assert_eq!(v["subscribe"], 1, "{v}");
    }
    let v = sim
        .get(&format!(
            "/cgi-bin/user/info?access_token={ct}&openid={alice}"
        ))
        .await;
    assert_eq!(
        errcode(&v),
        40014,
        "a component token is not an account token"
    );

    // Refresh: a new token, the refresh token echoed; the previous token lives 300 s.
    let r = sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": refresh})).await;
    assert_eq!(r["authorizer_refresh_token"], refresh.as_str(), "{r}");
    assert_eq!(r["expires_in"], 7200);
    let at3 = s(&r, "authorizer_access_token");
    assert_eq!(sim.use_token(&at1).await, 40001, "two generations old");
    assert_eq!(sim.use_token(&at2).await, 0);
    sim.advance(300).await;
    assert_eq!(sim.use_token(&at2).await, 40001);
    assert_eq!(sim.use_token(&at3).await, 0);
    assert_eq!(
        sim.use_token(&own).await,
        0,
        "the account's own token is independent"
    );
    let wrong = sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": "refreshtoken@@@nope"})).await;
    assert_eq!(errcode(&wrong), 61023);
    let other = sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID2, "authorizer_refresh_token": refresh})).await;
    assert_eq!(errcode(&other), 61003, "APPID2 never authorized");

    let report = sim
        .get(&format!("/_sim/components/{C1}/authorizers/{APPID}"))
        .await;
    assert_eq!(
        report,
        json!({"authorized": true, "func_ids": [1, 2, 4], "authorizer_tokens_issued": 3, "refresh_token_rejections": 1, "current_refresh_token_works": true})
    );
    let stats = sim.get("/_sim/stats").await;
    let app = &stats["apps"][APPID];
    assert_eq!(app["tokens_issued"]["authorizer_access_token"], 3);
    assert_eq!(app["calls"]["/cgi-bin/component/api_authorizer_token"], 2);
    assert_eq!(app["calls"]["/cgi-bin/component/api_query_auth"], 2);
    assert_eq!(
        app["calls"]["/cgi-bin/user/info"], 2,
        "counted against the account's own quota"
    );
    assert_eq!(stats["components"][C1]["authorizers"], 1);

    let info = sim
        .capi(
            "api_get_authorizer_info",
            &ct,
            json!({"component_appid": C1, "authorizer_appid": APPID}),
        )
        .await;
    assert_eq!(
        info["authorizer_info"]["user_name"], "gh_000000000001",
        "{info}"
    );
    assert_eq!(info["authorizer_info"]["nick_name"], "Test Account");
    assert_eq!(
        info["authorization_info"]["authorizer_refresh_token"],
        refresh.as_str()
    );
    let check = |t: String| {
        let sim = &sim;
        async move {
            sim.post(
                &format!("/_sim/components/{C1}/refresh_token/check"),
                json!({"authorizer_appid": APPID, "refresh_token": t}),
            )
            .await["valid"]
                .clone()
        }
    };
    assert_eq!(check(refresh.clone()).await, true);
    assert_eq!(check("x".into()).await, false);

    // Re-authorization is an update: a new refresh token, the old one 300 s more.
    let v = sim.grant(APPID, &[1]).await;
    assert_eq!(v["info_type"], "updateauthorized");
    let plain = {
        let posts = inbox.take();
        let last = posts.last().unwrap();
        open_push(&last.1, &last.2, "AppId")
    };
    assert_eq!(
        field(&plain, "InfoType").as_deref(),
        Some("updateauthorized")
    );
    let q3 = sim
        .capi(
            "api_query_auth",
            &ct,
            json!({"component_appid": C1, "authorization_code": s(&v, "auth_code")}),
        )
        .await;
    let refresh2 = s(&q3["authorization_info"], "authorizer_refresh_token");
    assert_ne!(refresh2, refresh);
    assert_eq!(
        q3["authorization_info"]["func_info"],
        json!([{"funcscope_category": {"id": 1}}])
    );
    let r = sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": refresh})).await;
    assert_eq!(
        r["authorizer_refresh_token"],
        refresh2.as_str(),
        "the old one in its grace learns the new one"
    );
    sim.advance(300).await;
    assert_eq!(check(refresh.clone()).await, false);
    let r = sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": refresh})).await;
    assert_eq!(errcode(&r), 61023);

    // Revocation: the event, every authorizer token dead at once, 61003.
    let ct = sim.component_token().await;
    let live = s(&sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": refresh2})).await, "authorizer_access_token");
    inbox.take();
    let v = sim
        .post(
            &format!("/_sim/components/{C1}/unauthorize"),
            json!({"authorizer_appid": APPID}),
        )
        .await;
    assert_eq!(v["event_delivered"], true);
    let posts = inbox.take();
    let plain = open_push(&posts[0].1, &posts[0].2, "AppId");
    assert_eq!(field(&plain, "InfoType").as_deref(), Some("unauthorized"));
    assert_eq!(field(&plain, "AuthorizerAppid").as_deref(), Some(APPID));
    assert!(field(&plain, "AuthorizationCode").is_none());
    assert_eq!(sim.use_token(&live).await, 40001);
    assert_eq!(sim.use_token(&own).await, 0);
    let r = sim.capi("api_authorizer_token", &ct, json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": refresh2})).await;
    assert_eq!(errcode(&r), 61003);
    let list = sim
        .capi(
            "api_get_authorizer_list",
            &ct,
            json!({"component_appid": C1, "offset": 0, "count": 500}),
        )
        .await;
    assert_eq!(list, json!({"total_count": 0, "list": []}));
    let info = sim
        .capi(
            "api_get_authorizer_info",
            &ct,
            json!({"component_appid": C1, "authorizer_appid": APPID}),
        )
        .await;
    assert_eq!(errcode(&info), 61003);
    let report = sim
        .get(&format!("/_sim/components/{C1}/authorizers/{APPID}"))
        .await;
    assert_eq!(report["authorized"], false);
    assert_eq!(report["current_refresh_token_works"], false);
    let v = sim
        .post(
            &format!("/_sim/components/{C1}/unauthorize"),
            json!({"authorizer_appid": APPID}),
        )
        .await;
    assert_eq!(v["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn authorization_codes_expire_and_may_be_single_use() {
    let (sim, _inbox, _) = sim_with("", false).await;
    let ct = sim.component_token().await;
    let q = |code: String| {
        let (sim, ct) = (&sim, &ct);
        async move {
            errcode(
                &sim.capi(
                    "api_query_auth",
                    ct,
                    json!({"component_appid": C1, "authorization_code": code}),
                )
                .await,
            )
        }
    };
    assert_eq!(q("queryauthcode@@@nope".into()).await, 61009);
    assert_eq!(q(String::new()).await, 40097);
    let code = s(&sim.grant(APPID, &[1]).await, "auth_code");
    sim.advance(3599).await;
    let ct2 = sim.component_token().await;
    let v = sim
        .capi(
            "api_query_auth",
            &ct2,
            json!({"component_appid": C1, "authorization_code": code}),
        )
        .await;
    assert_eq!(errcode(&v), 0);
    sim.advance(1).await;
    let v = sim
        .capi(
            "api_query_auth",
            &ct2,
            json!({"component_appid": C1, "authorization_code": code}),
        )
        .await;
    assert_eq!(errcode(&v), 61010);

    let (sim, _inbox, _) = sim_with("auth_code_single_use = true", false).await;
    let ct = sim.component_token().await;
    let code = s(&sim.grant(APPID, &[1]).await, "auth_code");
    let body = json!({"component_appid": C1, "authorization_code": code});
    assert_eq!(
        errcode(&sim.capi("api_query_auth", &ct, body.clone()).await),
        0
    );
    assert_eq!(errcode(&sim.capi("api_query_auth", &ct, body).await), 61009);
}

#[tokio::test]
async fn authorizer_refreshes_are_limited_per_day_and_refused_for_restricted_accounts() {
    let (sim, _inbox, _) = sim_with("authorizer_token_daily_limit = 2", false).await;
    let ct = sim.component_token().await;
    let info = sim.authorized(&ct, APPID, &[1]).await;
    let body = json!({"component_appid": C1, "authorizer_appid": APPID, "authorizer_refresh_token": s(&info, "authorizer_refresh_token")});
    assert_eq!(
        errcode(&sim.capi("api_authorizer_token", &ct, body.clone()).await),
        0
    );
    assert_eq!(
        errcode(&sim.capi("api_authorizer_token", &ct, body.clone()).await),
        0
    );
    assert_eq!(
        errcode(&sim.capi("api_authorizer_token", &ct, body.clone()).await),
        45009
    );
    sim.advance(86400).await;
    let ct = sim.component_token().await;
    assert_eq!(
        errcode(&sim.capi("api_authorizer_token", &ct, body.clone()).await),
        0
    );
    sim.patch_account(APPID, json!({"restricted": true})).await;
    assert_eq!(
        errcode(&sim.capi("api_authorizer_token", &ct, body.clone()).await),
        50002
    );
    // A foreign body component_appid is refused.
    let mut foreign = body.clone();
    foreign["component_appid"] = json!(C2);
    assert_eq!(
        errcode(&sim.capi("api_authorizer_token", &ct, foreign).await),
        40013
    );
}

#[tokio::test]
async fn authorizer_list_pages_and_options() {
    let (sim, _inbox, _) = sim_with("", false).await;
    let ct = sim.component_token().await;
    for i in 0..5 {
        let appid = format!("wx00000000000010{i:02}");
        let resp = sim
            .http
            .post(sim.url("/_sim/accounts"))
            .json(&json!({"appid": appid, "secret": "s", "original_id": format!("gh_{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        sim.grant(&appid, &[1]).await;
        sim.advance(1).await;
    }
    let page = sim
        .capi(
            "api_get_authorizer_list",
            &ct,
            json!({"component_appid": C1, "offset": 3, "count": 10}),
        )
        .await;
    assert_eq!(page["total_count"], 5);
    let got: Vec<&str> = page["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["authorizer_appid"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["wx0000000000001003", "wx0000000000001004"]);
    for count in [0, 501] {
        let v = sim
            .capi(
                "api_get_authorizer_list",
                &ct,
                json!({"component_appid": C1, "offset": 0, "count": count}),
            )
            .await;
        assert_eq!(errcode(&v), 40097);
    }
    let a = "wx0000000000001000";
    let get = sim
        .capi(
            "api_get_authorizer_option",
            &ct,
            json!({"component_appid": C1, "authorizer_appid": a, "option_name": "voice_recognize"}),
        )
        .await;
    assert_eq!(
        get,
        json!({"authorizer_appid": a, "option_name": "voice_recognize", "option_value": "0"})
    );
    let set = sim.capi("api_set_authorizer_option", &ct, json!({"component_appid": C1, "authorizer_appid": a, "option_name": "voice_recognize", "option_value": "1"})).await;
    assert_eq!(set, json!({"errcode": 0, "errmsg": "ok"}));
    let get = sim
        .capi(
            "api_get_authorizer_option",
            &ct,
            json!({"component_appid": C1, "authorizer_appid": a, "option_name": "voice_recognize"}),
        )
        .await;
    assert_eq!(get["option_value"], "1");
    let bad = sim.capi("api_set_authorizer_option", &ct, json!({"component_appid": C1, "authorizer_appid": a, "option_name": "voice_recognize", "option_value": "7"})).await;
    assert_eq!(errcode(&bad), 61013);
    let bad = sim
        .capi(
            "api_get_authorizer_option",
            &ct,
            json!({"component_appid": C1, "authorizer_appid": a, "option_name": "colour"}),
        )
        .await;
    assert_eq!(errcode(&bad), 61012);
}

#[tokio::test]
async fn a_thousand_accounts_are_created_quickly_and_a_duplicate_is_409() {
    let sim = TestSim::with(&component_world("", None, None, false)).await;
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let resp = sim
            .http
            .post(sim.url("/_sim/accounts"))
            .json(&json!({"appid": format!("wx{i:016x}"), "secret": "s3cr3t"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    for appid in [APPID, C1] {
        let resp = sim
            .http
            .post(sim.url("/_sim/accounts"))
            .json(&json!({"appid": appid, "secret": "s"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 409);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "conflict");
    }
    let resp = sim
        .http
        .post(sim.url("/_sim/accounts"))
        .json(&json!({"appid": "wxnew", "secret": "s", "colour": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A created account is a full account: tokens, openids, authorizations.
    let v = sim.classic("wx00000000000003e7", "s3cr3t").await;
    assert_eq!(errcode(&v), 0, "{v}");
    let v = sim.grant("wx00000000000003e7", &[1]).await;
    assert_eq!(v["info_type"], "authorized", "{v}");
    let openid = sim.openid("wx00000000000003e7", "alice").await;
    assert_eq!(openid.len(), 28);
}

/// Opens the authorization page at `path` and returns (status, body, error header).
async fn open_page(
    sim: &TestSim,
    path: &str,
    params: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let resp = sim
        .http
        .get(sim.url(&format!("{path}?{query}")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let err = resp
        .headers()
        .get("x-wxsim-error")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.text().await.unwrap(), err)
}

/// `name="..." value="..."` pairs of the page's form fields.
fn form_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!("name=\"{name}\" value=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

fn options(html: &str) -> Vec<String> {
    html.match_indices("<option value=\"")
        .map(|(i, _)| {
            let rest = &html[i + 15..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[tokio::test]
async fn the_authorization_page_approves_over_plain_http() {
    let (sim, inbox, _) = sim_with("", false).await;
    let ct = sim.component_token().await;
    let preauth = || async {
        s(
            &sim.capi(
                "api_create_preauthcode",
                &ct,
                json!({"component_appid": C1}),
            )
            .await,
            "pre_auth_code",
        )
    };
    let code = preauth().await;
    let redirect = "http://127.0.0.1/cb?x=1";
    let (status, html, err) = open_page(
        &sim,
        "/cgi-bin/componentloginpage",
        &[
            ("component_appid", C1),
            ("pre_auth_code", &code),
            ("redirect_uri", redirect),
            ("auth_type", "1"),
        ],
    )
    .await;
    assert_eq!((status, err), (200, None), "{html}");
    assert!(html.contains("id=\"account\" name=\"account\""));
    assert!(html.contains("id=\"approve\"") && html.contains("id=\"cancel\""));
    assert!(html.contains("Platform One"));
    assert_eq!(options(&html), [APPID, APPID2], "official accounts only");
    assert_eq!(
        form_values(&html, "func"),
        ["1", "2", "3", "4", "7", "11", "15"]
    );
    assert_eq!(html.matches(" checked>").count(), 7);
    assert!(!html.contains("<script"));
    let action = {
        let i = html.find("action=\"").unwrap() + 8;
        html[i..i + html[i..].find('"').unwrap()].to_string()
    };
    inbox.take();
    let form = format!(
        "component_appid={C1}&pre_auth_code={}&account={APPID2}&func=1&func=4&action=approve",
        url_encode(&code)
    );
    let resp = sim
        .http
        .post(sim.url(&action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(
        loc.starts_with("http://127.0.0.1/cb?x=1&auth_code=queryauthcode%40%40%40"),
        "{loc}"
    );
    assert_eq!(query_param(&loc, "expires_in").as_deref(), Some("3600"));
    let auth_code = query_param(&loc, "auth_code").unwrap();
    let posts = inbox.wait_for(1).await;
    let plain = open_push(&posts[0].1, &posts[0].2, "AppId");
    assert_eq!(field(&plain, "AuthorizationCode"), Some(auth_code.clone()));
    assert_eq!(field(&plain, "PreAuthCode"), Some(code.clone()));
    assert_eq!(field(&plain, "AuthorizerAppid").as_deref(), Some(APPID2));
    let q = sim
        .capi(
            "api_query_auth",
            &ct,
            json!({"component_appid": C1, "authorization_code": auth_code}),
        )
        .await;
    assert_eq!(
        q["authorization_info"]["func_info"],
        json!([{"funcscope_category": {"id": 1}}, {"funcscope_category": {"id": 4}}])
    );
    // The pre-auth code is used up.
    let resp = sim
        .http
        .post(sim.url(&action))
        .body(form)
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("id=\"error\""));
    let (_, html, err) = open_page(
        &sim,
        "/safe/bindcomponent",
        &[
            ("component_appid", C1),
            ("pre_auth_code", &code),
            ("redirect_uri", redirect),
        ],
    )
    .await;
    assert_eq!(err.as_deref(), Some("61005"), "{html}");
    assert!(html.contains("id=\"error\""));

    // Cancel: a page, no redirect, the account stays unauthorized.
    let code = preauth().await;
    let (_, html, _) = open_page(
        &sim,
        "/wxaopen/safe/bindcomponent",
        &[
            ("component_appid", C1),
            ("pre_auth_code", &code),
            ("redirect_uri", redirect),
            ("biz_appid", APPID),
        ],
    )
    .await;
    assert_eq!(options(&html), [APPID], "biz_appid restricts the list");
    let resp = sim
        .http
        .post(sim.url(&action))
        .body(format!(
            "component_appid={C1}&pre_auth_code={}&account={APPID}&func=1&action=cancel",
            url_encode(&code)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("id=\"cancelled\""));
    assert_eq!(
        sim.get(&format!("/_sim/components/{C1}/authorizers/{APPID}"))
            .await["authorized"],
        false
    );
    // An account outside the page's list cannot be slipped into the form.
    let resp = sim
        .http
        .post(sim.url(&action))
        .body(format!(
            "component_appid={C1}&pre_auth_code={}&account={APPID2}&func=1&action=approve",
            url_encode(&code)
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("id=\"error\""));

    // Errors.
    let code = preauth().await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("component_appid", "wx9999999999999999"),
                ("pre_auth_code", &code),
                ("redirect_uri", redirect),
            ],
            "61011",
        ),
        (
            vec![
                ("component_appid", C1),
                ("pre_auth_code", "preauthcode@@@nope"),
                ("redirect_uri", redirect),
            ],
            "61005",
        ),
        (
            vec![
                ("component_appid", C1),
                ("pre_auth_code", &code),
                ("redirect_uri", "http://evil.example/cb"),
            ],
            "10003",
        ),
        (
            vec![("component_appid", C1), ("pre_auth_code", &code)],
            "10011",
        ),
        (
            vec![
                ("component_appid", C1),
                ("pre_auth_code", &code),
                ("redirect_uri", redirect),
                ("auth_type", "1"),
                ("biz_appid", APPID),
            ],
            "10005",
        ),
        (
            vec![
                ("component_appid", C1),
                ("pre_auth_code", &code),
                ("redirect_uri", redirect),
                ("biz_appid", WEB_APPID),
            ],
            "61003",
        ),
    ];
    for (params, want) in cases {
        let (status, html, err) = open_page(&sim, "/cgi-bin/componentloginpage", &params).await;
        assert_eq!(status, 200);
        assert_eq!(err.as_deref(), Some(want), "{params:?}");
        assert!(html.contains("id=\"error\""));
    }
    sim.advance(1800).await;
    let (_, _, err) = open_page(
        &sim,
        "/cgi-bin/componentloginpage",
        &[
            ("component_appid", C1),
            ("pre_auth_code", &code),
            ("redirect_uri", redirect),
        ],
    )
    .await;
    assert_eq!(err.as_deref(), Some("61005"), "expired");
}

#[tokio::test]
async fn an_unpublished_platform_lists_only_its_test_accounts() {
    let (sim, _inbox, _) = sim_with("", false).await;
    let ticket = s(&sim.ticket(C2).await, "ticket");
    let v = sim.post("/cgi-bin/component/api_component_token", json!({"component_appid": C2, "component_appsecret": C2_SECRET, "component_verify_ticket": ticket})).await;
    let ct = s(&v, "component_access_token");
    let code = s(
        &sim.capi(
            "api_create_preauthcode",
            &ct,
            json!({"component_appid": C2}),
        )
        .await,
        "pre_auth_code",
    );
    let (_, html, _) = open_page(
        &sim,
        "/cgi-bin/componentloginpage",
        &[
            ("component_appid", C2),
            ("pre_auth_code", &code),
            ("redirect_uri", "http://127.0.0.1/cb"),
        ],
    )
    .await;
    assert_eq!(options(&html), [APPID2]);
    let v = sim
        .post(
            &format!("/_sim/components/{C2}/authorize"),
            json!({"authorizer_appid": APPID}),
        )
        .await;
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let v = sim
        .post(
            &format!("/_sim/components/{C2}/authorize"),
            json!({"authorizer_appid": APPID2}),
        )
        .await;
    assert_eq!(v["info_type"], "authorized");
    assert_eq!(v["event_delivered"], false, "no event URL");
    let report = sim
        .get(&format!("/_sim/components/{C2}/authorizers/{APPID2}"))
        .await;
    assert_eq!(
        report["func_ids"],
        json!([1, 2, 3, 4, 7, 11, 15]),
        "all sets by default"
    );
}

#[tokio::test]
async fn messages_of_an_authorizer_go_to_the_message_url_with_component_crypto() {
    let (sim, inbox, _) = sim_with("", false).await;
    let (own_url, own_inbox) = receiver().await;
    sim.patch_account(
        APPID,
        json!({"push_url": format!("{own_url}/own"), "push_mode": "safe"}),
    )
    .await;
    // Authorized without 消息管理: the account's own URL.
    sim.grant(APPID, &[2]).await;
    inbox.take();
    let v = sim
        .post(
            "/_sim/people/alice/text",
            json!({"appid": APPID, "content": "hi", "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["status"], "delivered", "{v}");
    assert_eq!(own_inbox.take().len(), 1);
    assert_eq!(inbox.count(), 0);

    sim.grant(APPID, &[1, 2]).await;
    inbox.take();
    let v = sim
        .post(
            "/_sim/people/alice/text",
            json!({"appid": APPID, "content": "你好", "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["status"], "delivered", "{v}");
    assert_eq!(v["delivery"]["via"], C1);
    let posts = inbox.take();
    assert_eq!(posts.len(), 1);
    let (path, q, body) = &posts[0];
    assert_eq!(path, &format!("/msg/{APPID}"), "$APPID$ replaced");
    let alice = sim.openid(APPID, "alice").await;
    assert_eq!(q["openid"], alice);
    assert_eq!(
        field(body, "ToUserName").as_deref(),
        Some("gh_000000000001")
    );
    let plain = open_push(q, body, "ToUserName");
    assert_eq!(field(&plain, "Content").as_deref(), Some("你好"));
    assert_eq!(field(&plain, "FromUserName"), Some(alice.clone()));
    assert_eq!(own_inbox.count(), 0);

    // A passive reply encrypted with the component's key is understood.
    let reply = "<xml><ToUserName><![CDATA[x]]></ToUserName><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[pong]]></Content></xml>";
    let enc = wx_sim::push::crypto::encrypt(reply, C1, C1_KEY).unwrap();
    let sig = sha1_sorted(&[C1_TOKEN, "1700000000", "42", &enc]);
    *inbox.reply.lock().unwrap() = format!(
        "<xml><Encrypt><![CDATA[{enc}]]></Encrypt><MsgSignature><![CDATA[{sig}]]></MsgSignature><TimeStamp>1700000000</TimeStamp><Nonce><![CDATA[42]]></Nonce></xml>"
    );
    let v = sim
        .post(
            "/_sim/people/alice/click",
            json!({"appid": APPID, "key": "K", "wait": true}),
        )
        .await;
    let attempt = &v["delivery"]["attempts"][0];
    assert_eq!(attempt["reply_kind"], "encrypted_xml", "{v}");
    assert_eq!(attempt["reply_plain"], reply);

    // Retries as for account pushes.
    *inbox.reply.lock().unwrap() = "success".into();
    let dead = component_world(
        "push_retries = 2",
        Some("http://127.0.0.1:9/e"),
        Some("http://127.0.0.1:9/m/$APPID$"),
        false,
    );
    let sim = TestSim::with(&dead).await;
    let v = sim.grant(APPID, &[1]).await;
    assert_eq!(v["event_delivered"], false);
    let v = sim
        .post(
            "/_sim/people/alice/text",
            json!({"appid": APPID, "content": "x", "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["status"], "failed");
    assert_eq!(v["delivery"]["attempts"].as_array().unwrap().len(), 3);

    // After revocation the account's own URL again.
    let (sim, inbox, _) = sim_with("", false).await;
    sim.patch_account(APPID, json!({"push_url": format!("{own_url}/own")}))
        .await;
    sim.grant(APPID, &[1]).await;
    sim.post(
        &format!("/_sim/components/{C1}/unauthorize"),
        json!({"authorizer_appid": APPID}),
    )
    .await;
    inbox.take();
    let v = sim
        .post(
            "/_sim/people/bob/follow",
            json!({"appid": APPID, "wait": true}),
        )
        .await;
    assert!(v["delivery"]["via"].is_null(), "{v}");
    assert_eq!(own_inbox.take().len(), 1);
    assert_eq!(inbox.count(), 0);
}

#[tokio::test]
async fn authorization_events_are_retried_until_success() {
    let (sim, inbox, _) = sim_with("push_retries = 2", false).await;
    *inbox.reply.lock().unwrap() = "ok".into();
    let v = sim.grant(APPID, &[1]).await;
    assert_eq!(v["event_delivered"], false);
    let posts = inbox.wait_for(3).await;
    assert_eq!(posts.len(), 3, "the first attempt and two retries");
    assert_eq!(posts[0].2, posts[2].2, "the same body each time");
    let log = sim.get(&format!("/_sim/push/log?appid={C1}")).await;
    let d = &log["deliveries"][0];
    assert_eq!(d["kind"], "info:authorized");
    assert_eq!(d["status"], "failed");
}

#[tokio::test]
async fn web_authorization_on_behalf_of_an_authorized_account() {
    let (sim, _inbox, _) = sim_with("", false).await;
    let ct = sim.component_token().await;
    let authorize = |appid: &str, redirect: &str, person: &str| {
        let url = format!(
            "/connect/oauth2/authorize?appid={appid}&redirect_uri={}&response_type=code&scope=snsapi_userinfo&state=st&component_appid={C1}&wxsim_person={person}",
            url_encode(redirect)
        );
        let sim = &sim;
        async move { sim.http.get(sim.url(&url)).send().await.unwrap() }
    };
    let err = |r: &reqwest::Response| {
        r.headers()
            .get("x-wxsim-error")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let r = authorize(APPID, "http://127.0.0.1/cb", "bob").await;
    assert_eq!(err(&r).as_deref(), Some("61003"), "not authorized yet");
    sim.grant(APPID, &[1]).await;
    let r = authorize(APPID, "http://127.0.0.1/cb", "bob").await;
    assert_eq!(err(&r).as_deref(), Some("61007"), "网页服务 not granted");
    sim.grant(APPID, &[1, 4]).await;
    let r = authorize(APPID, "http://app.example.com/cb", "bob").await;
    assert_eq!(
        err(&r).as_deref(),
        Some("10003"),
        "the account's own domain is not the platform's"
    );
    let r = authorize(APPID, "http://127.0.0.1/cb?x=1", "bob").await;
    assert_eq!(r.status(), 302);
    let loc = location(&r);
    assert_eq!(query_param(&loc, "appid").as_deref(), Some(APPID), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st"));
    let code = query_param(&loc, "code").unwrap();

    let exchange = |code: &str, token: &str| {
        let url = format!(
            "/sns/oauth2/component/access_token?appid={APPID}&code={code}&grant_type=authorization_code&component_appid={C1}&component_access_token={token}"
        );
        let sim = &sim;
        async move { sim.get(&url).await }
    };
    assert_eq!(
        errcode(&sim.exchange(APPID, SECRET, &code).await),
        40029,
        "the plain flow refuses it"
    );
    let v = exchange(&code, &ct).await;
    assert_eq!(v["openid"], sim.openid(APPID, "bob").await.as_str(), "{v}");
    assert_eq!(v["scope"], "snsapi_userinfo");
    assert_eq!(v["unionid"], "oUNION_bob_0000000000000000");
    let refresh = s(&v, "refresh_token");
    let user = sim
        .get(&format!(
            "/sns/userinfo?access_token={}&openid={}",
            s(&v, "access_token"),
            s(&v, "openid")
        ))
        .await;
    assert_eq!(user["nickname"], "Bob", "{user}");
    assert_eq!(errcode(&exchange(&code, &ct).await), 40163, "single use");

    let refresh_with = |token: &str, refresh: &str| {
        let url = format!(
            "/sns/oauth2/component/refresh_token?appid={APPID}&grant_type=refresh_token&component_appid={C1}&component_access_token={token}&refresh_token={refresh}"
        );
        let sim = &sim;
        async move { sim.get(&url).await }
    };
    let v = refresh_with(&ct, &refresh).await;
    assert_eq!(v["refresh_token"], refresh.as_str(), "{v}");
    let plain = sim.get(&format!("/sns/oauth2/refresh_token?appid={APPID}&grant_type=refresh_token&refresh_token={refresh}")).await;
    assert_eq!(errcode(&plain), 40030);

    // A code of the plain flow is not the component's either.
    let own_code = sim.code(APPID, "snsapi_base", "bob").await;
    assert_eq!(errcode(&exchange(&own_code, &ct).await), 40029);
    // A superseded component token: 40001, also across components' tokens.
    let _newer = sim.component_token().await;
    let _newest = sim.component_token().await;
    assert_eq!(errcode(&refresh_with(&ct, &refresh).await), 40001);
    let authorizer = sim.authorized(&_newest, APPID, &[1, 4]).await;
    let v = refresh_with(&s(&authorizer, "authorizer_access_token"), &refresh).await;
    assert_eq!(
        errcode(&v),
        48001,
        "an authorizer token is not a component token"
    );
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(
        stats["components"][C1]["calls"]["/sns/oauth2/component/access_token"],
        3
    );
    assert_eq!(
        stats["apps"][APPID]["calls"]["/sns/oauth2/component/refresh_token"],
        3
    );
}

#[tokio::test]
async fn faults_target_component_endpoints_and_reset_forgets_components() {
    let (sim, _inbox, _) = sim_with("", false).await;
    let ticket = s(&sim.ticket(C1).await, "ticket");
    let v = sim
        .post(
            "/_sim/faults",
            json!({"endpoint": "/cgi-bin/component/api_component_token", "errcode": -1}),
        )
        .await;
    assert!(v["fault"].is_object(), "{v}");
    let v = sim.component_token_with(&ticket).await;
    assert_eq!(errcode(&v), -1);
    assert!(s(&v, "errmsg").starts_with("system error rid: "));
    sim.post(
        "/_sim/faults",
        json!({"endpoint": "/cgi-bin/component/api_component_token", "appid": C2, "errcode": -1}),
    )
    .await;
    assert_eq!(
        errcode(&sim.component_token_with(&ticket).await),
        0,
        "a fault for another component"
    );
    sim.post(
        "/_sim/faults",
        json!({"endpoint": "/cgi-bin/component/api_component_token", "appid": C1, "delay_ms": 400}),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(errcode(&sim.component_token_with(&ticket).await), 0);
    assert!(started.elapsed() >= Duration::from_millis(400));

    sim.grant(APPID, &[1]).await;
    assert_eq!(
        sim.get("/_sim/stats").await["components"][C1]["authorizers"],
        1
    );
    sim.post("/_sim/reset", json!({})).await;
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["components"][C1]["authorizers"], 0);
    assert_eq!(stats["components"][C1]["calls"], json!({}));
    assert_eq!(
        errcode(&sim.component_token_with(&ticket).await),
        61006,
        "tickets are forgotten"
    );
}

#[test]
fn invalid_component_fields_are_named() {
    let base = "[[accounts]]\nappid='wx1'\nsecret='s'\n";
    let key = "Componentkey0123456789abcdefghijklmnopqrstu";
    let cases = [
        (
            format!(
                "{base}[[components]]\nappid='wxc'\nsecret='s'\ntoken='t'\nencoding_aes_key='short'\n"
            ),
            "components[0].encoding_aes_key",
        ),
        (
            format!(
                "{base}[[components]]\nappid='wx1'\nsecret='s'\ntoken='t'\nencoding_aes_key='{key}'\n"
            ),
            "components[0].appid",
        ),
        (
            format!(
                "{base}[[components]]\nappid='wxc'\nsecret='s'\ntoken='t'\nencoding_aes_key='{key}'\nevent_url='nope'\n"
            ),
            "components[0].event_url",
        ),
        (
            format!(
                "{base}[[components]]\nappid='wxc'\nsecret='s'\ntoken='t'\nencoding_aes_key='{key}'\nip_whitelist=['x']\n"
            ),
            "components[0].ip_whitelist[0]",
        ),
        (
            format!("{base}[settings]\nticket_push_interval=0\n"),
            "settings.ticket_push_interval",
        ),
    ];
    for (text, want) in cases {
        let err = wx_sim::World::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{err} should name {want}");
    }
}
