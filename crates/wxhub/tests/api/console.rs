//! The operator's console over plain HTTP: sign-in, sessions, sign-out,
//! the cross-site and sign-in limits, the pages' content, and the refresh
//! history as JSON. (Chromium drives the same pages in `tests/browser`.)

use serde_json::Value;

use crate::helpers::*;

/// `GET path` as a browser: `Accept: text/html`, the session cookie if any.
async fn browse(hub: &TestHub, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = hub
        .http
        .get(hub.url(path))
        .header("accept", "text/html,application/xhtml+xml");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

/// `POST path` with a form, from the console's own origin unless `origin`
/// says otherwise: the status, the `Set-Cookie` and the body.
async fn submit(
    hub: &TestHub,
    path: &str,
    form: &[(&str, &str)],
    cookie: Option<&str>,
    origin: Option<&str>,
) -> (u16, Option<String>, String, reqwest::header::HeaderMap) {
    let own = hub.hub().base_url();
    let mut req = hub
        .http
        .post(hub.url(path))
        .header("origin", origin.unwrap_or(&own))
        .form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    let headers = r.headers().clone();
    let set = headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    (s, set, r.text().await.unwrap(), headers)
}

/// Signs in with the admin key: the `name=value` to send back.
pub async fn sign_in(hub: &TestHub) -> (String, String) {
    let (s, set, body, _) =
        submit(hub, "/console/sign-in", &[("key", &hub.admin)], None, None).await;
    assert_eq!(s, 303, "{body}");
    let set = set.expect("a session cookie");
    let pair = set.split(';').next().unwrap().to_string();
    (pair, set)
}

fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a sign-out form")
        + 19;
    page[at..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn a_browser_signs_in_sees_the_pages_and_signs_out() {
    let hub = TestHub::start().await;
    hub.token().await;
    // No credentials: a browser gets the sign-in page, an API client 401.
    let (s, page) = browse(&hub, "/", None).await;
    assert_eq!(s, 200);
    assert!(
        page.contains("id=\"key\"") && !page.contains(APPID),
        "{page}"
    );
    let r = hub.get_raw("/").await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    // The account page without a session sends a browser to sign in.
    let (s, _) = browse(&hub, &format!("/console/apps/{APPID}"), None).await;
    assert_eq!(s, 303);

    let (cookie, set) = sign_in(&hub).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    assert!(!set.contains(&hub.admin), "the key is not in the cookie");
    let (s, page) = browse(&hub, "/", Some(&cookie)).await;
    assert_eq!(s, 200);
    assert!(page.contains(APPID) && page.contains(WEB_APPID), "{page}");
    assert!(page.contains("token fetches today: 1 of 2000"), "{page}");
    assert!(page.contains("<title>access_token time line</title>"));
    // Search.
    let (_, found) = browse(&hub, &format!("/?q={}", &APPID[..8]), Some(&cookie)).await;
    assert!(
        found.contains("2 accounts match") || found.contains("1 accounts match"),
        "{found}"
    );
    let (_, none) = browse(&hub, "/?q=no-such-account", Some(&cookie)).await;
    assert!(none.contains("id=\"no-match\""), "{none}");
    let (s, _) = browse(&hub, "/?page=0", Some(&cookie)).await;
    assert_eq!(s, 400);
    // The account page.
    let (s, account) = browse(&hub, &format!("/console/apps/{APPID}"), Some(&cookie)).await;
    assert_eq!(s, 200);
    assert!(account.contains("class=\"history-row\""), "{account}");
    assert!(account.contains("Access-token fetches per Beijing day"));
    assert!(
        account.contains("<td>shop</td>"),
        "the client that used it: {account}"
    );
    let (s, _) = browse(&hub, "/console/apps/wx0000000000000000", Some(&cookie)).await;
    assert_eq!(s, 404);

    // Sign-out needs the session's form token, and the console's origin.
    let token = csrf_of(&page);
    let (s, _, body, _) = submit(
        &hub,
        "/console/sign-out",
        &[("csrf", "wrong")],
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, _, body, _) = submit(
        &hub,
        "/console/sign-out",
        &[("csrf", &token)],
        Some(&cookie),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(s, 403, "a cross-site POST: {body}");
    assert!(body.contains("cross-site"), "{body}");
    let (s, _) = browse(&hub, "/", Some(&cookie)).await;
    assert_eq!(s, 200);
    let (s, set, _, _) = submit(
        &hub,
        "/console/sign-out",
        &[("csrf", &token)],
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, 303);
    assert!(set.unwrap().contains("Max-Age=0"));
    // The old cookie no longer opens anything.
    let (s, page) = browse(&hub, "/", Some(&cookie)).await;
    assert_eq!(s, 200);
    assert!(
        page.contains("id=\"key\"") && !page.contains(APPID),
        "signed out: {page}"
    );
    // A cookie with a forged signature neither.
    let forged = format!("{}0", &cookie[..cookie.len() - 1]);
    let (_, page) = browse(&hub, "/", Some(&forged)).await;
    assert!(!page.contains(APPID));
}

#[tokio::test]
async fn failed_sign_ins_are_refused_then_limited() {
    let hub = TestHub::start().await;
    for _ in 0..5 {
        let (s, set, body, _) = submit(
            &hub,
            "/console/sign-in",
            &[("key", "wxh_wrong")],
            None,
            None,
        )
        .await;
        assert_eq!(s, 401);
        assert!(set.is_none(), "no session for a wrong key");
        assert!(body.contains("That is not the admin key"), "{body}");
        assert!(!body.contains("wxh_wrong"), "the key is not echoed");
    }
    // Limited now, even with the right key.
    let (s, set, body, headers) =
        submit(&hub, "/console/sign-in", &[("key", &hub.admin)], None, None).await;
    assert_eq!(s, 429, "{body}");
    assert!(set.is_none());
    assert!(headers.get("retry-after").is_some());
    assert!(body.contains("Too many failed sign-ins"), "{body}");
    // A sign-in from another site is refused before the key is looked at.
    let (s, _, _, _) = submit(
        &hub,
        "/console/sign-in",
        &[("key", &hub.admin)],
        None,
        Some("null"),
    )
    .await;
    assert_eq!(s, 403);
    assert!(hub.metrics().await.contains("console_sign_in"));
}

#[tokio::test]
async fn the_refresh_history_says_when_why_and_how_each_fetch_went() {
    let hub = TestHub::start().await;
    let t1 = hub.token().await;
    // A scheduled refresh.
    hub.advance(7200);
    hub.run_due().await;
    // A caller's report of a token the platform rejects.
    let t2 = hub.token().await;
    assert_ne!(t1, t2);
    hub.kill_token_elsewhere("stable").await;
    hub.advance(61);
    let (_, v) = hub.invalidate(&t2).await;
    assert_eq!(v["outcome"], "replaced", "{v}");
    // A failed fetch: the secret changed on the platform.
    hub.sim_post(
        &format!("/_sim/accounts/{APPID}"),
        serde_json::json!({"secret": "rotated"}),
    )
    .await;
    hub.advance(7200);
    hub.run_due().await;

    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/history?limit=1000"), &hub.admin)
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["retention_days"], 30);
    let entries = v["entries"].as_array().unwrap();
    let tokens: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "access_token")
        .collect();
    let reasons: Vec<&str> = tokens
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons.last(),
        Some(&"missing"),
        "the first fetch, oldest last: {v}"
    );
    assert!(reasons.contains(&"schedule"), "{v}");
    let report = tokens
        .iter()
        .find(|e| e["reason"] == "report")
        .expect("a report");
    assert_eq!(report["client"], "shop", "{report}");
    assert_eq!(report["outcome"], "ok");
    let failed = tokens[0];
    assert_eq!(failed["outcome"], "failed", "the newest first: {v}");
    assert_eq!(failed["errcode"], 40125, "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("AppSecret"),
        "{failed}"
    );
    let times: Vec<i64> = entries.iter().map(|e| e["at"].as_i64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // The page explains the failure as `wxhub explain` does.
    let (cookie, _) = sign_in(&hub).await;
    let (_, page) = browse(&hub, &format!("/console/apps/{APPID}"), Some(&cookie)).await;
    assert!(
        page.contains("unhealthy") || page.contains("degraded"),
        "{page}"
    );
    assert!(
        page.contains("<summary>wxhub explain 40125</summary>"),
        "{page}"
    );
    let explained = wxhub::cli::explain(40125);
    let first_line = explained.lines().next().unwrap();
    assert!(first_line.starts_with("40125: "));
    assert!(page.contains(&first_line.replace('\'', "&#39;")), "{page}");
    assert!(page.contains("by client <b>shop</b>"), "{page}");

    // limit=1; bad input; the wrong key; an unknown account.
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/history?limit=1"), &hub.admin)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    for (path, status) in [
        (format!("/v1/apps/{APPID}/history?limit=0"), 400),
        (format!("/v1/apps/{APPID}/history?limit=1001"), 400),
        (format!("/v1/apps/{APPID}/history?nope=1"), 400),
        ("/v1/apps/wx0000000000000000/history".to_string(), 404),
    ] {
        let r = hub.get_as(&path, &hub.admin).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/history"), &hub.key)
        .await;
    assert_eq!(r.status(), 401, "a client key is not the admin key");
}

#[tokio::test]
async fn the_history_keeps_at_most_the_configured_entries() {
    let mut hub = TestHub::with(Options {
        extra: "history_max_per_account = 3\nhistory_days = 1".into(),
        ..Options::default()
    })
    .await;
    hub.token().await;
    for _ in 0..5 {
        hub.advance(7200);
        hub.run_due().await;
    }
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/history?limit=1000"), &hub.admin)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["retention_days"], 1);
    // Two days on: what is older than a day is gone.
    hub.advance(2 * 86400);
    hub.run_due().await;
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/history?limit=1000"), &hub.admin)
        .await;
    let v: Value = r.json().await.unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "the new fetch: {v}");
    let now = v["now"].as_i64().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e["at"].as_i64().unwrap() >= now - 86400),
        "{v}"
    );
    // The table holds no more than that (the hub holds the file while it
    // runs).
    hub.stop().await;
    let rows: i64 = rusqlite::Connection::open(&hub.store)
        .and_then(|c| c.query_row("SELECT count(*) FROM refresh_history", [], |r| r.get(0)))
        .unwrap_or(-1);
    assert!(
        rows >= 0 && rows as usize == entries.len(),
        "{rows} rows in the table: {v}"
    );
}
