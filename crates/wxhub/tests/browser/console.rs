//! Issue 16 acceptance: an operator opens the console of `wxhub dev` in
//! Chromium, signs in with the admin key, sees the demo account, opens its
//! page, watches the refresh history grow after the simulator's clock
//! moves past a refresh, and signs out; a wrong key is refused with a
//! message, and a cross-site POST is refused. The overview and the account
//! page are kept as screenshots in `target/console-screenshots/` (the
//! README's pictures are copies).

use std::time::{Duration, Instant};

use serde_json::json;
use wxhub::dev::DevEnv;

use crate::driver::{Browser, ONE_BROWSER};
use crate::support;

async fn dev() -> DevEnv {
    let any = "127.0.0.1:0".parse().expect("socket address");
    wxhub::dev::start(any, any, any)
        .await
        .expect("wxhub dev starts")
}

/// Keeps a screenshot where the README's copies come from.
async fn keep(b: &Browser, name: &str) {
    let shot = b.screenshot(name).await;
    let dir = support::repo_root().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
    std::fs::copy(&shot, dir.join(format!("{name}.png"))).expect("copy the screenshot");
}

async fn sign_in_with(b: &Browser, env: &DevEnv, key: &str) {
    b.goto(&format!("{}/", env.hub.base_url())).await;
    let field = b.wait_for("#key").await;
    b.type_into(&field, key).await;
    let button = b.wait_for("#sign-in").await;
    b.click(&button).await;
}

async fn history_rows(b: &Browser) -> usize {
    b.find_all("tr.history-row").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_the_history_grow_and_signs_out() {
    if support::skipped("an_operator_signs_in_watches_the_history_grow_and_signs_out") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let began = Instant::now();
    let env = dev().await;
    let hub = env.hub.base_url();
    // A token served to the demo client, so the page has a client to show.
    let r = support::http()
        .get(format!("{hub}/v1/apps/{}/access_token", env.appid))
        .bearer_auth(&env.client_key)
        .send()
        .await
        .expect("GET token");
    assert_eq!(r.status(), 200);

    let mut b = Browser::start().await;
    // A wrong key: refused, with a message, still on the sign-in page.
    sign_in_with(&b, &env, "wxh_not-the-admin-key").await;
    let error = b.wait_for("#sign-in-error").await;
    assert!(
        b.text(&error).await.contains("not the admin key"),
        "the page says why"
    );
    assert!(b.find_all(".account").await.is_empty(), "not signed in");

    // The admin key: the overview with the demo account.
    sign_in_with(&b, &env, &env.admin_key).await;
    b.wait_for("#summary").await;
    let card = b.wait_for(&format!("#app-{}", env.appid)).await;
    let text = b.text(&card).await;
    assert!(text.contains(&env.appid) && text.contains("ok"), "{text}");
    assert!(text.contains("token fetches today"), "{text}");
    b.resize(1100, 760).await;
    keep(&b, "console-overview").await;
    b.resize(480, 800).await;
    keep(&b, "console-overview-narrow").await;

    // Its page, with the history of the first fetches.
    // The demo also has a third-party platform and its shop: pick the
    // demo account's link among them.
    let link = b
        .wait_for(&format!(
            ".account-link[href='/console/apps/{}']",
            env.appid
        ))
        .await;
    b.click(&link).await;
    b.wait_for_url(&format!("{hub}/console/apps/{}", env.appid))
        .await;
    b.wait_for("#history").await;
    let before = history_rows(&b).await;
    assert!(before >= 1, "the first fetch is in the history");
    let clients = b.wait_for("#clients").await;
    assert!(b.text(&clients).await.contains("dev"), "the demo client");

    // Past the token's refresh: the refresher fetches, the history grows.
    let r = support::http()
        .post(format!("{}/_sim/clock/advance", env.sim.base_url()))
        .json(&json!({"seconds": 7000}))
        .send()
        .await
        .expect("advance the clock");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let account_url = format!("{hub}/console/apps/{}", env.appid);
    loop {
        b.goto(&account_url).await;
        b.wait_for("#history").await;
        if history_rows(&b).await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history did not grow past {before} rows within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let table = b.wait_for("#history").await;
    assert!(b.text(&table).await.contains("scheduled refresh"));
    b.resize(1100, 1400).await;
    keep(&b, "console-account").await;
    b.resize(480, 800).await;

    // A cross-site POST (a page elsewhere submitting the sign-out form):
    // refused, and the session lives on.
    let form = format!(
        "<form method=post action='{hub}/console/sign-out'><input type=hidden name=csrf value=guess><button id=go>go</button></form>"
    );
    // Spaces as %20: a data: URL does not read `+` as a space.
    let page = support::url_encode(&form).replace('+', "%20");
    b.goto(&format!("data:text/html,{page}")).await;
    let go = b.wait_for("#go").await;
    b.click(&go).await;
    let refused = b.wait_for("#refused").await;
    assert!(b.text(&refused).await.contains("cross-site"));
    b.goto(&format!("{hub}/")).await;
    b.wait_for(&format!("#app-{}", env.appid)).await;

    // Signing out ends the session: the overview asks to sign in again.
    let out = b.wait_for("#sign-out").await;
    b.click(&out).await;
    b.wait_for("#key").await;
    b.goto(&account_url).await;
    b.wait_for("#key").await;
    assert!(b.find_all(".account").await.is_empty(), "signed out");

    b.quit().await;
    drop(b);
    let DevEnv { sim, hub, .. } = env;
    hub.shutdown().await;
    sim.shutdown().await;
    eprintln!("console: {:.1} s", began.elapsed().as_secs_f64());
}
