//! The push gateway's records and bounds: followers and their profiles,
//! the bounded queue, parking and replay, a restart, the secrets.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::push_support::*;

async fn hub_with(sub: &Subscriber, push_extra: &str) -> TestHub {
    let hub = TestHub::with(Options {
        world: sim_account("safe", AES_KEY, ""),
        push: push_section("safe", push_extra, &[("crm", sub.url(), "")]),
        extra: FAST.to_string(),
        ..Options::default()
    })
    .await;
    hub.point_push_here().await;
    hub
}

#[tokio::test]
async fn a_follow_arrives_with_the_profile_and_keeps_a_follower_record() {
    let sub = Subscriber::start(Mode::Up).await;
    let hub = hub_with(&sub, "profile_fetches_per_minute = 2").await;
    let d = hub
        .act(
            "bob",
            "follow",
            json!({"qr_scene": "98765", "scene": "ADD_SCENE_QR_CODE"}),
        )
        .await;
    let openid = d["openid"].as_str().unwrap().to_string();
    let got = sub.wait_for(1).await;
    let f = &got[0].body["follower"];
    assert_eq!(f["profile"]["subscribe"], true, "{f}");
    assert_eq!(f["profile"]["subscribe_scene"], "ADD_SCENE_QR_CODE");
    assert_eq!(f["profile"]["openid"], openid.as_str());
    assert_eq!(f["subscribed"], true);
    assert_eq!(hub.calls("/cgi-bin/user/info"), 1);

    let (s, v) = hub
        .get(&format!("/v1/apps/{APPID}/followers/{openid}"))
        .await;
    assert_eq!((s, &v["subscribed"]), (200, &json!(true)), "{v}");
    hub.act("bob", "unfollow", json!({})).await;
    sub.wait_for(2).await;
    let (_, v) = hub
        .get(&format!("/v1/apps/{APPID}/followers/{openid}"))
        .await;
    assert_eq!(v["subscribed"], false, "{v}");
    // Following again within profile_cache_secs: the cached profile. (A
    // second later: the same second would be the same event to the platform.)
    hub.advance(1);
    hub.act("bob", "follow", json!({})).await;
    let got = sub.wait_for(3).await;
    assert_eq!(
        got[2].body["follower"]["profile"]["openid"],
        openid.as_str()
    );
    assert_eq!(hub.calls("/cgi-bin/user/info"), 1, "served from the cache");
    // Fetches are bounded per minute: the third newcomer's follow is
    // delivered without a profile, saying why.
    hub.act("carol", "follow", json!({})).await;
    hub.act("dave", "follow", json!({})).await;
    let got = sub.wait_for(5).await;
    assert_eq!(hub.calls("/cgi-bin/user/info"), 2);
    let summary: Vec<String> = got
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.body["event"], r.body["from_user_name"], r.delivery_id
            )
        })
        .collect();
    assert_eq!(got.len(), 5, "{summary:?}");
    let limited: Vec<&Value> = got[3..]
        .iter()
        .map(|r| &r.body["follower"])
        .filter(|f| f["profile"].is_null())
        .collect();
    assert_eq!(limited.len(), 1, "one of the two newcomers: {summary:?}");
    assert_eq!(
        limited[0]["profile_error"],
        "profile_fetches_per_minute reached"
    );

    let (s, v) = hub
        .get(&format!("/v1/apps/{APPID}/followers?limit=2"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["followers"].as_array().unwrap().len(), 2);
    let next = v["next"].as_str().unwrap().to_string();
    let (_, v2) = hub
        .get(&format!("/v1/apps/{APPID}/followers?limit=2&after={next}"))
        .await;
    assert_eq!(v2["followers"].as_array().unwrap().len(), 1, "{v2}");
    let (s, _) = hub.get(&format!("/v1/apps/{APPID}/followers/nobody")).await;
    assert_eq!(s, 404);
    let (s, _) = hub
        .get(&format!("/v1/apps/{APPID}/followers?limit=5000"))
        .await;
    assert_eq!(s, 400);
    let r = hub
        .http
        .get(hub.url(&format!("/v1/apps/{APPID}/followers")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "business servers' data: a client key is needed"
    );
}

#[tokio::test]
async fn the_queue_is_bounded_what_fails_all_window_is_parked_and_replayed() {
    let sub = Subscriber::start(Mode::Down(500)).await;
    let hub = hub_with(&sub, "max_backlog = 3\nretry_window_secs = 1200").await;
    for i in 0..5 {
        hub.act("alice", "text", json!({"content": format!("m{i}")}))
            .await;
    }
    assert_eq!(
        hub.push_metric(
            "wxhub_push_deliveries_total",
            &[
                ("appid", APPID),
                ("subscriber", "crm"),
                ("result", "dropped")
            ]
        ),
        2,
        "over max_backlog the subscriber does not get it"
    );
    let (_, b) = hub.admin_get("/v1/push").await;
    assert_eq!(b["subscribers"][0]["queued"], 3, "{b}");
    // Past the retry window, one after the other (in order per person).
    hub.advance_slowly(3 * 1800, 300).await;
    for _ in 0..100 {
        if hub.admin_get("/v1/push").await.1["subscribers"][0]["parked"] == 3 {
            break;
        }
        hub.advance_slowly(600, 300).await;
    }
    let (s, p) = hub.admin_get(&format!("/v1/push/{APPID}/parked")).await;
    assert_eq!(s, 200);
    let parked = p["parked"].as_array().unwrap().clone();
    assert_eq!(parked.len(), 3, "{p}");
    assert_eq!(parked[0]["error"], "HTTP 500");
    let page = hub
        .http
        .get(hub.url("/"))
        .bearer_auth(&hub.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Push") && page.contains("crm"),
        "the console lists the backlog"
    );
    let (s, _) = hub.get(&format!("/v1/push/{APPID}/parked")).await;
    assert_eq!(s, 401, "the client key is not the admin key");

    sub.set(Mode::Up);
    for e in &parked {
        let id = e["id"].as_str().unwrap();
        let (s, v) = hub
            .admin_post(&format!("/v1/push/{APPID}/parked/{id}/replay"))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, _) = hub
        .admin_post(&format!(
            "/v1/push/{APPID}/parked/{}/replay",
            parked[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 404, "a replayed delivery is no longer parked");
    let got = sub.wait_for(3).await;
    let contents: Vec<&str> = got
        .iter()
        .map(|r| r.body["fields"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["m0", "m1", "m2"]);
    let (_, b) = hub.admin_get("/v1/push").await;
    assert_eq!(
        (
            &b["subscribers"][0]["queued"],
            &b["subscribers"][0]["parked"]
        ),
        (&json!(0), &json!(0))
    );
}

#[tokio::test]
async fn what_was_acknowledged_is_delivered_after_a_restart() {
    let sub = Subscriber::start(Mode::Down(503)).await;
    let mut hub = hub_with(&sub, "").await;
    hub.act("alice", "text", json!({"content": "before"})).await;
    hub.restart().await;
    hub.point_push_here().await;
    sub.set(Mode::Up);
    hub.advance_slowly(900, 300).await;
    let got = sub.wait_for(1).await;
    assert_eq!(got[0].body["fields"]["content"], "before");
}

#[tokio::test]
async fn push_secrets_never_reach_logs_errors_or_metrics() {
    let sub = Subscriber::start(Mode::Down(502)).await;
    let hub = hub_with(&sub, "").await;
    hub.act("bob", "follow", json!({})).await;
    hub.act("bob", "text", json!({"content": "x"})).await;
    let mut bodies = Vec::new();
    for q in [
        "signature=1&timestamp=1&nonce=1&echostr=1",
        "timestamp=1&nonce=1&encrypt_type=aes&msg_signature=2",
    ] {
        let r = hub
            .http
            .post(hub.url(&format!("/push/{APPID}?{q}")))
            .body("<xml><Encrypt>AAAA</Encrypt></xml>")
            .send()
            .await
            .unwrap();
        bodies.push(r.text().await.unwrap());
    }
    hub.advance_slowly(600, 300).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, b) = hub.admin_get("/v1/push").await;
    bodies.push(b.to_string());
    let metrics = hub.metrics().await;
    assert!(
        metrics.contains("wxhub_push_deliveries_total"),
        "deliveries were counted"
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    for (name, secret) in [
        ("push token", PUSH_TOKEN),
        ("EncodingAESKey", AES_KEY),
        ("subscriber secret", SUB_SECRET),
    ] {
        assert!(!logs.contains(secret), "{name} in logs");
        assert!(!metrics.contains(secret), "{name} in /metrics");
        for body in &bodies {
            assert!(!body.contains(secret), "{name} in an error body: {body}");
        }
    }
    let debug = format!("{:?}", hub.config());
    assert!(!debug.contains(PUSH_TOKEN) && !debug.contains(AES_KEY) && !debug.contains(SUB_SECRET));
    let _: Value = serde_json::from_str(&bodies[0]).expect("errors are JSON");
}

/// A plain push with its own MsgId, signed as the platform signs it.
fn plain_push(hub: &TestHub, msg_id: u64) -> (String, String) {
    use sha1::Digest;
    let now = hub.now().to_string();
    let nonce = format!("n{msg_id}");
    let mut parts = [PUSH_TOKEN, now.as_str(), nonce.as_str()];
    parts.sort_unstable();
    let signature = hex(&sha1::Sha1::digest(parts.concat().as_bytes()));
    (
        hub.url(&format!(
            "/push/{APPID}?signature={signature}&timestamp={now}&nonce={nonce}"
        )),
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o{}</FromUserName><CreateTime>{now}</CreateTime><MsgType>text</MsgType><Content>m{msg_id}</Content><MsgId>{msg_id}</MsgId></xml>",
            msg_id % 7
        ),
    )
}

#[tokio::test]
async fn past_max_pending_writes_a_push_is_refused_at_once_and_nothing_acknowledged_is_lost() {
    // Down: every entry stays queued, so the backlog counts what was written.
    let sub = Subscriber::start(Mode::Down(500)).await;
    let hub = TestHub::with(Options {
        world: sim_account("plain", AES_KEY, ""),
        push: push_section(
            "plain",
            "retry_window_secs = 86400",
            &[("crm", sub.url(), "")],
        ),
        extra: format!("{FAST}max_pending_writes = 1\n"),
        ..Options::default()
    })
    .await;
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut next = 1u64;
    // Waves of concurrent pushes until the bound has refused some: one
    // push may wait for its write at a time, so a wave overflows it.
    for _ in 0..20 {
        let mut wave = Vec::new();
        for _ in 0..32 {
            let (url, body) = plain_push(&hub, next);
            let http = hub.http.clone();
            let id = next;
            next += 1;
            wave.push(tokio::spawn(async move {
                let r = http.post(url).body(body).send().await.unwrap();
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").cloned();
                (id, status, retry, r.text().await.unwrap())
            }));
        }
        for t in wave {
            let (id, status, retry, body) = t.await.unwrap();
            match status {
                200 => {
                    assert_eq!(body, "success");
                    acked.push(id);
                }
                503 => {
                    let v: Value = serde_json::from_str(&body).expect("a JSON error");
                    assert_eq!(v["error"]["code"], "overloaded", "{v}");
                    assert_eq!(retry.unwrap(), "1");
                    refused.push(id);
                }
                s => panic!("push {id}: {s} {body}"),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(!refused.is_empty(), "the bound never refused a push");
    assert!(!acked.is_empty(), "the bound refused everything");
    assert_eq!(
        hub.push_metric(
            "wxhub_push_rejected_total",
            &[("appid", APPID), ("reason", "overloaded")]
        ),
        refused.len() as u64
    );
    // Every acknowledged push is queued; no refused one was written.
    let (_, b) = hub.admin_get("/v1/push").await;
    assert_eq!(b["subscribers"][0]["queued"], acked.len(), "{b}");
    // The platform's retry of a refused push, one at a time, is taken.
    for id in &refused {
        let (url, body) = plain_push(&hub, *id);
        let r = hub.http.post(url).body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let (_, b) = hub.admin_get("/v1/push").await;
    assert_eq!(
        b["subscribers"][0]["queued"],
        acked.len() + refused.len(),
        "{b}"
    );
}
