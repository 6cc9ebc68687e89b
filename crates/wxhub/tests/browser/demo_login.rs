//! Issue 5 acceptance: a person signs in with their WeChat profile on the
//! demo page of `wxhub dev`, or refuses, in a real browser.

use std::time::Instant;

use serde_json::{Value, json};
use wxhub::dev::DevEnv;

use crate::driver::{Browser, ONE_BROWSER};
use crate::support;

/// `wxhub dev` in-process, every listener on a free loopback port.
async fn dev() -> DevEnv {
    let any = "127.0.0.1:0".parse().expect("socket address");
    wxhub::dev::start(any, any, any)
        .await
        .expect("wxhub dev starts")
}

/// Stops the hub and the simulator; the rest of the environment (its own
/// store directory) goes with `env`.
async fn stop(env: DevEnv) {
    let DevEnv { sim, hub, .. } = env;
    hub.shutdown().await;
    sim.shutdown().await;
}

async fn sim_get(env: &DevEnv, path: &str) -> Value {
    let url = format!("{}{path}", env.sim.base_url());
    let resp = support::http().get(&url).send().await.expect("GET");
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json().await.expect("JSON")
}

/// A person of the demo world as the simulator serves it (`GET /_sim/world`).
async fn person(env: &DevEnv, id: &str) -> Value {
    let world = sim_get(env, "/_sim/world").await;
    world["people"]
        .as_array()
        .and_then(|people| people.iter().find(|p| p["id"] == id))
        .unwrap_or_else(|| panic!("no {id} in the demo world: {world}"))
        .clone()
}

/// The account's name in the demo world, as the consent page shows it.
async fn account_name(env: &DevEnv) -> String {
    let world = sim_get(env, "/_sim/world").await;
    world["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["appid"] == env.appid.as_str()))
        .and_then(|a| a["name"].as_str())
        .unwrap_or_else(|| panic!("no account {} in {world}", env.appid))
        .to_string()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Demo page → "Sign in with my WeChat profile" → the simulator's person
/// picker → `person` → the consent page, checked to name the account and
/// the person. The browser is left on the consent page.
async fn to_consent_page(b: &Browser, env: &DevEnv, person_id: &str, nickname: &str) {
    b.goto(&env.demo_url).await;
    let login = b.wait_for("#login-profile").await;
    b.click(&login).await;

    // No wxsim_person cookie yet: the simulator asks who is using WeChat.
    let authorize = format!("{}/connect/oauth2/authorize", env.sim.base_url());
    let pick = b.wait_for(&format!("#person-{person_id}")).await;
    let picker = b.current_url().await;
    assert!(picker.starts_with(&authorize), "the picker at {picker}");
    assert_eq!(
        query_param(&picker, "scope").as_deref(),
        Some("snsapi_base"),
        "the hub's first round is the silent probe: {picker}"
    );
    b.screenshot(&format!("{person_id}-1-picker")).await;
    b.click(&pick).await;

    // The probe is answered silently, the hub finds no userinfo grant and
    // comes back with snsapi_userinfo: the consent page.
    b.wait_for("#allow").await;
    let consent = b.current_url().await;
    assert!(consent.starts_with(&authorize), "consent at {consent}");
    assert_eq!(
        query_param(&consent, "scope").as_deref(),
        Some("snsapi_userinfo"),
        "{consent}"
    );
    let shown = b.wait_for("#person").await;
    assert_eq!(b.text(&shown).await, nickname, "the consent page's person");
    let account = b.wait_for("#account").await;
    assert_eq!(b.text(&account).await, account_name(env).await);
    b.screenshot(&format!("{person_id}-2-consent")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_allows_is_greeted_by_their_nickname() {
    if support::skipped("a_person_who_allows_is_greeted_by_their_nickname") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let began = Instant::now();
    let env = dev().await;
    let alice = person(&env, "alice").await;
    assert_eq!(
        alice["consent"], "ask",
        "alice gets the consent page: {alice}"
    );
    let nickname = alice["nickname"].as_str().expect("alice's nickname");
    let openid = sim_get(
        &env,
        &format!("/_sim/openid?appid={}&person=alice", env.appid),
    )
    .await["openid"]
        .as_str()
        .expect("openid")
        .to_string();

    let mut b = Browser::start().await;
    to_consent_page(&b, &env, "alice", nickname).await;
    let allow = b.wait_for("#allow").await;
    b.click(&allow).await;

    // Hub callback, redemption of the ticket by the demo server: the browser
    // ends on the demo page's /welcome.
    let landed = b.wait_for_url(&format!("{}/welcome?", env.demo_url)).await;
    let shown = b.wait_for("#nickname").await;
    assert_eq!(b.text(&shown).await, nickname);
    assert!(
        query_param(&landed, "wxhub_ticket").is_some_and(|t| t.starts_with("wxt")),
        "with a hand-over ticket: {landed}"
    );
    assert_eq!(query_param(&landed, "wxhub_error"), None, "{landed}");
    let shown = b.wait_for("#openid").await;
    assert_eq!(
        b.text(&shown).await,
        openid,
        "alice's openid for the account"
    );
    let shown = b.wait_for("#scope").await;
    assert_eq!(b.text(&shown).await, "snsapi_userinfo");
    assert!(b.find_all("#refused").await.is_empty());
    assert!(b.find_all("#error").await.is_empty());

    b.screenshot("alice-3-welcome").await;
    // A reload shows the same page: the demo server remembers the ticket it
    // redeemed instead of redeeming a used one again.
    b.goto(&landed).await;
    let shown = b.wait_for("#nickname").await;
    assert_eq!(b.text(&shown).await, nickname, "after a reload");
    assert!(b.find_all("#error").await.is_empty());
    b.quit().await;
    drop(b);
    stop(env).await;
    eprintln!("allow: {:.1} s", began.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_refuses_is_told_so_and_not_signed_in() {
    if support::skipped("a_person_who_refuses_is_told_so_and_not_signed_in") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let began = Instant::now();
    let env = dev().await;
    // Bob agrees at once in the demo world; make him see the consent page.
    let url = format!("{}/_sim/people/bob/consent", env.sim.base_url());
    let resp = support::http()
        .post(&url)
        .json(&json!({"consent": "ask"}))
        .send()
        .await
        .expect("POST consent");
    assert_eq!(resp.status(), 200, "POST {url}");
    let bob = person(&env, "bob").await;
    assert_eq!(bob["consent"], "ask", "{bob}");
    let nickname = bob["nickname"].as_str().expect("bob's nickname");

    let mut b = Browser::start().await;
    to_consent_page(&b, &env, "bob", nickname).await;
    let deny = b.wait_for("#deny").await;
    b.click(&deny).await;

    // The simulator comes back with the state and no code; the hub sends the
    // person to the demo page with wxhub_error=access_denied.
    let landed = b.wait_for_url(&format!("{}/welcome?", env.demo_url)).await;
    let refused = b.wait_for("#refused").await;
    assert!(
        b.text(&refused).await.contains("You refused access"),
        "the demo page says why"
    );
    assert_eq!(
        query_param(&landed, "wxhub_error").as_deref(),
        Some("access_denied"),
        "{landed}"
    );
    assert_eq!(
        query_param(&landed, "wxhub_ticket"),
        None,
        "no identity is handed over: {landed}"
    );
    assert!(b.find_all("#nickname").await.is_empty(), "not signed in");
    assert!(b.find_all("#openid").await.is_empty(), "not signed in");

    b.screenshot("bob-3-refused").await;
    b.quit().await;
    drop(b);
    stop(env).await;
    eprintln!("deny: {:.1} s", began.elapsed().as_secs_f64());
}
