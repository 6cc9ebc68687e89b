use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn two_hundred_concurrent_first_requests_make_one_upstream_fetch() {
    let hub = TestHub::start().await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let http = hub.http.clone();
        let url = hub.url(&format!("/v1/apps/{APPID}/access_token"));
        let key = hub.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.get(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_string()
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "everyone got the same token"
    );
    assert_eq!(hub.calls("/cgi-bin/stable_token"), 1);
    assert_eq!(hub.issued("stable"), 1);
}

#[tokio::test]
async fn a_hundred_reports_of_the_same_token_make_one_refresh_and_an_old_token_none() {
    for mode in ["stable", "classic"] {
        let hub = TestHub::with(Options {
            mode,
            ..Options::default()
        })
        .await;
        let kind = if mode == "stable" {
            "stable"
        } else {
            "classic"
        };
        let t1 = hub.token().await;
        // Another system kills it: the platform now rejects t1.
        hub.kill_token_elsewhere(mode).await;
        assert_ne!(hub.use_token(&t1).await, 0, "{mode}: t1 is dead");
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let http = hub.http.clone();
            let url = hub.url(&format!("/v1/apps/{APPID}/access_token/invalidate"));
            let key = hub.key.clone();
            let t1 = t1.clone();
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({"access_token": t1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: serde_json::Value = r.json().await.unwrap();
                (
                    v["access_token"].as_str().unwrap().to_string(),
                    v["outcome"].as_str().unwrap().to_string(),
                )
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        let t2 = got[0].0.clone();
        assert_ne!(t2, t1, "{mode}");
        assert!(
            got.iter().all(|(t, _)| *t == t2),
            "{mode}: everyone gets the new token"
        );
        assert!(
            got.iter()
                .all(|(_, o)| o == "replaced" || o == "already_replaced"),
            "{mode}: {got:?}"
        );
        assert_eq!(
            hub.issued(kind),
            3,
            "{mode}: the hub's first token, the other system's, and exactly one refresh"
        );
        assert_eq!(
            hub.calls("/cgi-bin/openapi/quota/get"),
            1,
            "{mode}: one confirmation for a hundred reports"
        );
        assert_eq!(hub.use_token(&t2).await, 0, "{mode}: the new token works");
        if mode == "stable" {
            assert_eq!(
                hub.stats()["force_refreshes"],
                2,
                "the other system's force and the hub's one passive refresh"
            );
        }
        // A report of an older token: no refresh, the current token back.
        let (s, v) = hub.invalidate(&t1).await;
        assert_eq!(s, 200);
        assert_eq!(v["access_token"], t2.as_str());
        assert_eq!(v["outcome"], "already_replaced");
        assert_eq!(
            hub.issued(kind),
            3,
            "{mode}: an old token causes no refresh"
        );
    }
}

#[tokio::test]
async fn expires_at_in_classic_mode_never_outlives_the_token() {
    let hub = TestHub::with(Options {
        mode: "classic",
        ..Options::default()
    })
    .await;
    let (_, v) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    let now = hub.now();
    let expires_at = v["expires_at"].as_i64().unwrap();
    assert_eq!(v["expires_in"].as_i64().unwrap(), expires_at - now);
    assert!(expires_at <= now + 7200);
    // The hub refreshes inside the last 300 s, so the old token lives to its
    // own expiry: telling clients that expiry is safe.
    let status = hub.hub().app().creds.status().await;
    let next = status[0].slots[0].next_refresh_at;
    assert!(
        next >= now + 7200 - 300 && next < now + 7200,
        "refresh planned at +{}",
        next - now
    );
}

#[tokio::test]
async fn jsapi_tickets_are_fetched_with_the_token_and_kept_from_first_sight() {
    let hub = TestHub::start().await;
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    assert_eq!(s, 200, "{v}");
    let t1 = v["jsapi_ticket"].as_str().unwrap().to_string();
    assert_eq!(v["expires_at"].as_i64().unwrap(), START + 7200);
    hub.advance(3600);
    hub.run_due().await;
    let (_, v) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    assert_eq!(v["jsapi_ticket"], t1.as_str());
    assert_eq!(
        v["expires_at"].as_i64().unwrap(),
        START + 7200,
        "lifetime counts from first sight"
    );
    hub.advance(3600 + 10);
    hub.run_due().await;
    let (_, v) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    assert_ne!(v["jsapi_ticket"], t1.as_str());
    assert_eq!(hub.stats()["tickets_issued"]["jsapi"], 2);
    // wx_card is not kept by this account.
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/wx_card_ticket")).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn jssdk_config_signs_the_url_without_its_fragment_for_allowed_domains() {
    use sha1::{Digest, Sha1};
    let hub = TestHub::start().await;
    let config = |url: String| {
        let hub = &hub;
        async move {
            let (s, v) = hub
                .post(
                    &format!("/v1/apps/{APPID}/jssdk/config"),
                    json!({"url": url}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    // What the page computes: the ticket, the nonce, the time and `signed`.
    let signature = |v: &serde_json::Value, ticket: &str, signed: &str| {
        let string1 = format!(
            "jsapi_ticket={ticket}&noncestr={}&timestamp={}&url={signed}",
            v["nonceStr"].as_str().unwrap(),
            v["timestamp"]
        );
        hex(&Sha1::digest(string1.as_bytes()))
    };
    let v = config("https://app.example.com/page?x=1#section".into()).await;
    let (_, t) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    let ticket = t["jsapi_ticket"].as_str().unwrap();
    assert_eq!(
        v["signature"].as_str().unwrap(),
        signature(&v, ticket, "https://app.example.com/page?x=1")
    );
    assert_eq!(v["appId"], APPID);
    assert_eq!(v["timestamp"], hub.now());
    // Signed as given, never re-serialized: a URL parser would lower the
    // host, drop the default port and the dot segment, and upper the
    // escapes, and the page's own signature check would then fail.
    let raw = "https://APP.example.com:443/a/./b?q=%e4%b8%ad&x&y=a+b";
    let v = config(format!("{raw}#frag")).await;
    assert_eq!(
        v["signature"].as_str().unwrap(),
        signature(&v, ticket, raw),
        "signed byte for byte"
    );
    let cases = [
        (json!({"url": "https://evil.example.com/"}), 403),
        (json!({"url": "not a url"}), 400),
        (json!({"url": "ftp://app.example.com/"}), 400),
        (json!({}), 400),
    ];
    for (body, want) in cases {
        let (s, v) = hub
            .post(&format!("/v1/apps/{APPID}/jssdk/config"), body.clone())
            .await;
        assert_eq!(s, want, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("url")),
            "{v}"
        );
    }
}
