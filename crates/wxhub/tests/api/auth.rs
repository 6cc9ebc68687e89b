use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn unknown_keys_are_401_wrong_accounts_403_unknown_accounts_404() {
    let hub = TestHub::start().await;
    let path = |appid: &str| hub.url(&format!("/v1/apps/{appid}/access_token"));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (hub.http.get(path(APPID)), 401, "unauthorized"),
        (
            hub.http.get(path(APPID)).bearer_auth("wxh_nope"),
            401,
            "unauthorized",
        ),
        (
            hub.http
                .get(path(APPID))
                .header("authorization", hub.key.clone()),
            401,
            "unauthorized",
        ),
        (
            hub.http
                .get(path("wx9999999999999999"))
                .bearer_auth(&hub.key),
            404,
            "not_found",
        ),
        (
            hub.http.get(hub.url("/v1/apps")).bearer_auth(&hub.key),
            401,
            "unauthorized",
        ),
        (
            hub.http.get(hub.url("/nope")).bearer_auth(&hub.key),
            404,
            "not_found",
        ),
    ];
    for (req, status, code) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let r = hub
        .http
        .get(hub.url("/v1/apps"))
        .bearer_auth(&hub.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["apps"][0]["appid"], APPID);
    let r = hub
        .http
        .get(hub.url("/"))
        .bearer_auth(&hub.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(APPID));
}

#[tokio::test]
async fn a_client_limited_to_one_account_gets_403_for_another() {
    let o = Options {
        world: world("").replacen(
            "[[people]]",
            "[[accounts]]\nappid = \"wx2222222222222222\"\nsecret = \"other-secret\"\n\n[[people]]",
            1,
        ),
        ..Options::default()
    };
    let hub = TestHub::with(o).await;
    // Add the second account to the hub's config and restart.
    let mut hub = hub;
    hub.config_text = hub.config_text.replacen(
        "[[clients]]",
        "[[accounts]]\nappid = \"wx2222222222222222\"\nsecret = \"other-secret\"\n\n[[clients]]",
        1,
    );
    hub.restart().await;
    let (s, v) = hub.get("/v1/apps/wx2222222222222222/access_token").await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
}

#[tokio::test]
async fn the_openapi_document_describes_every_client_route() {
    let hub = TestHub::start().await;
    let r = hub.http.get(hub.url("/openapi.json")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["openapi"], "3.0.3");
    // Every route the router declares, read from its source.
    let router = include_str!("../../src/router.rs");
    let declared: Vec<String> = router
        .split(".route(")
        .skip(1)
        .filter_map(|r| r.split('"').nth(1))
        .map(|p| p.replace("{*path}", "{path}"))
        .collect();
    assert!(declared.len() >= 20, "{declared:?}");
    for p in &declared {
        assert!(v["paths"].get(p).is_some(), "{p} missing");
    }
}

#[tokio::test]
async fn bad_bodies_are_400_with_the_field_named() {
    let hub = TestHub::start().await;
    let r = hub
        .http
        .post(hub.url(&format!("/v1/apps/{APPID}/access_token/invalidate")))
        .bearer_auth(&hub.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, v) = hub
        .post(
            &format!("/v1/apps/{APPID}/access_token/invalidate"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access_token"),
        "{v}"
    );
}
