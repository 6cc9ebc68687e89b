use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_proxy_injects_the_token_and_passes_the_answer_through() {
    let hub = TestHub::start().await;
    let openid = hub.openid("alice").await;
    let (s, v) = hub
        .get(&format!(
            "/v1/apps/{APPID}/proxy/cgi-bin/user/info?openid={openid}&lang=zh_CN"
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["openid"], openid.as_str());
    // A POST body is forwarded.
    let (s, v) = hub
        .post(
            &format!("/v1/apps/{APPID}/proxy/cgi-bin/user/info/batchget"),
            json!({"user_list": [{"openid": openid}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user_info_list"][0]["subscribe"], 1);
    // A caller's own access_token parameter is replaced, not forwarded.
    let (_, v) = hub
        .get(&format!(
            "/v1/apps/{APPID}/proxy/cgi-bin/user/info?openid={openid}&access_token=evil"
        ))
        .await;
    assert_eq!(v["subscribe"], 1);
    // Platform errors other than token errors pass through untouched.
    let (s, v) = hub
        .get(&format!(
            "/v1/apps/{APPID}/proxy/cgi-bin/user/info?openid=nope"
        ))
        .await;
    assert_eq!((s, v["errcode"].as_i64()), (200, Some(40003)));
    let (s, _) = hub.proxy("../_sim/stats").await;
    assert!(s == 400 || s == 404, "{s}");
    let (s, _) = hub.proxy("_sim/stats").await;
    assert_eq!(s, 404, "only the platform's API paths are forwarded");
}

#[tokio::test]
async fn on_a_token_error_the_proxy_confirms_before_refreshing_and_retries_once() {
    // The platform answers a token error once, though the token works (a
    // glitch, or an error that is not about the token): confirmed valid,
    // nothing refreshed, the retry with the same token succeeds.
    for code in [40001, 40014, 42001] {
        let hub = TestHub::with(Options {
            tickets: "[]",
            ..Options::default()
        })
        .await;
        let t1 = hub.token().await;
        hub.fault(json!({"endpoint": "/cgi-bin/user/get", "count": 1, "errcode": code}))
            .await;
        let (s, v) = hub.proxy("cgi-bin/user/get").await;
        assert_eq!(s, 200);
        assert!(
            v.get("errcode").is_none(),
            "{code}: the client never sees it: {v}"
        );
        assert_eq!(
            hub.calls("/cgi-bin/user/get"),
            2,
            "{code}: retried exactly once"
        );
        assert_eq!(
            hub.calls("/cgi-bin/openapi/quota/get"),
            1,
            "{code}: confirmed"
        );
        assert_eq!(hub.token().await, t1, "{code}: a working token is kept");
        assert_eq!(hub.issued("stable"), 1);
        assert_eq!(hub.stats()["force_refreshes"], 0);
    }
    // The token really is dead (another system forced a refresh): the proxy
    // has it replaced once and retries once with the new one.
    for mode in ["stable", "classic"] {
        let hub = TestHub::with(Options {
            mode,
            tickets: "[]",
            ..Options::default()
        })
        .await;
        let t1 = hub.token().await;
        hub.kill_token_elsewhere(mode).await;
        let (s, v) = hub.proxy("cgi-bin/user/get").await;
        assert_eq!(s, 200, "{mode}");
        assert!(v.get("errcode").is_none(), "{mode}: {v}");
        assert_eq!(hub.calls("/cgi-bin/user/get"), 2, "{mode}");
        let t2 = hub.token().await;
        assert_ne!(t2, t1, "{mode}: the hub refreshed");
        assert_eq!(hub.issued(mode), 3, "{mode}: one refresh");
    }
    // Two token errors in a row: one retry only, the second answer passes through.
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    hub.token().await;
    hub.fault(json!({"endpoint": "/cgi-bin/user/get", "count": 2, "errcode": 40001}))
        .await;
    let (_, v): (u16, Value) = hub.proxy("cgi-bin/user/get").await;
    assert_eq!(v["errcode"], 40001);
    assert_eq!(hub.calls("/cgi-bin/user/get"), 2);
}

#[tokio::test]
async fn an_unreachable_platform_is_a_502() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    hub.token().await;
    hub.fault(json!({"endpoint": "/cgi-bin/user/get", "count": 1, "drop": true}))
        .await;
    let (s, v) = hub.proxy("cgi-bin/user/get").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        !v.to_string().contains("access_token="),
        "no URL with the token in errors: {v}"
    );
}
