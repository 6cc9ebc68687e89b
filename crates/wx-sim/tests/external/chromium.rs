//! Headless Chromium clicks the simulator's consent page.

use crate::browser::{Browser, ONE_BROWSER};
use crate::support::*;

/// Opens the consent page for Alice (consent "ask"), checks it, clicks
/// `button`, and returns the simulator, the browser's final URL and the
/// requests the landing page received.
async fn click_consent(button: &str, state: &str) -> (Sim, String, Vec<String>) {
    let _one = ONE_BROWSER.lock().await;
    let sim = Sim::start().await;
    let (landing, seen) = landing_server().await;
    let redirect_uri = format!("{landing}/landing");
    let authorize = sim.url(&format!(
        "/connect/oauth2/authorize?appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_userinfo&state={state}&wxsim_person={ALICE}#wechat_redirect",
        url_encode(&redirect_uri)
    ));

    let mut driver = Browser::start().await;
    driver.goto(&authorize).await;
    let page = driver.current_url().await;
    assert!(
        page.starts_with(&sim.url("/connect/oauth2/authorize")),
        "the consent page is shown, not a redirect: {page}"
    );
    let person = driver.wait_for("#person").await;
    assert_eq!(driver.text(&person).await, ALICE_NICKNAME);
    let account = driver.wait_for("#account").await;
    assert_eq!(driver.text(&account).await, "External Clients Account");
    assert!(
        seen.lock().expect("landings").is_empty(),
        "nothing lands before the click"
    );

    let target = driver.wait_for(button).await;
    driver.click(&target).await;
    let landed = driver.wait_for_url(&redirect_uri).await;
    // The page has loaded, so the landing server has seen the request.
    let requests = seen.lock().expect("landings").clone();
    driver.quit().await;
    drop(driver);
    (sim, landed, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_allow_on_the_consent_page_lands_with_a_code_for_alice() {
    if skipped("chromium_allow_on_the_consent_page_lands_with_a_code_for_alice") {
        return;
    }
    let state = "chromiumAllow1";
    let (sim, landed, requests) = click_consent("#allow", state).await;

    assert_eq!(requests.len(), 1, "one landing: {requests:?}");
    let request = &requests[0];
    assert!(request.starts_with("/landing?"), "{request}");
    assert_eq!(query_param(request, "state").as_deref(), Some(state));
    let code = query_param(request, "code").unwrap_or_else(|| panic!("code in {request}"));
    assert_eq!(query_param(&landed, "code").as_deref(), Some(code.as_str()));
    assert_eq!(query_param(&landed, "state").as_deref(), Some(state));

    let grant = exchange_for_openid(&sim, &code).await;
    assert_eq!(grant["openid"], sim.openid(ALICE).await.as_str(), "{grant}");
    assert_eq!(grant["scope"], "snsapi_userinfo", "{grant}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_deny_on_the_consent_page_lands_with_the_state_only() {
    if skipped("chromium_deny_on_the_consent_page_lands_with_the_state_only") {
        return;
    }
    let state = "chromiumDeny2";
    let (sim, landed, requests) = click_consent("#deny", state).await;

    assert_eq!(requests.len(), 1, "one landing: {requests:?}");
    let request = &requests[0];
    assert!(request.starts_with("/landing?"), "{request}");
    assert_eq!(query_param(request, "state").as_deref(), Some(state));
    assert_eq!(query_param(request, "code"), None, "{request}");
    assert_eq!(query_param(&landed, "state").as_deref(), Some(state));
    assert_eq!(query_param(&landed, "code"), None, "{landed}");
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["apps"][APPID]["codes_issued"], 0, "{stats}");
}
