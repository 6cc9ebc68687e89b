use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::helpers::*;

#[derive(Default)]
struct Inbox {
    posts: Mutex<Vec<(HashMap<String, String>, String)>>,
    gets: Mutex<Vec<HashMap<String, String>>>,
    /// The first `slow` requests answer after `delay`.
    slow: AtomicU32,
    delay_ms: AtomicU32,
    reply: Mutex<String>,
}

async fn on_post(
    State(inbox): State<Arc<Inbox>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> String {
    inbox.posts.lock().unwrap().push((q, body));
    if inbox.slow.load(Ordering::SeqCst) > 0 {
        inbox.slow.fetch_sub(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(
            inbox.delay_ms.load(Ordering::SeqCst).into(),
        ))
        .await;
    }
    inbox.reply.lock().unwrap().clone()
}

async fn on_get(
    State(inbox): State<Arc<Inbox>>,
    Query(q): Query<HashMap<String, String>>,
) -> String {
    inbox.gets.lock().unwrap().push(q.clone());
    q.get("echostr").cloned().unwrap_or_default()
}

async fn receiver() -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    *inbox.reply.lock().unwrap() = "success".into();
    let app = axum::Router::new()
        .route("/wx", axum::routing::post(on_post).get(on_get))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/wx"), inbox)
}

fn sha1_sorted(parts: &[&str]) -> String {
    let mut v = parts.to_vec();
    v.sort();
    hex::encode(Sha1::digest(v.concat()))
}

async fn sim_pushing_to(mode: &str, timeout_ms: u64) -> (TestSim, Arc<Inbox>) {
    let (url, inbox) = receiver().await;
    let sim = TestSim::with(&world(&format!(
        "[settings]\npush_timeout_ms = {timeout_ms}"
    )))
    .await;
    sim.patch_account(APPID, json!({"push_url": url, "push_mode": mode}))
        .await;
    (sim, inbox)
}

#[tokio::test]
async fn follow_pushes_a_signed_subscribe_event_with_the_openid() {
    let (sim, inbox) = sim_pushing_to("plain", 2000).await;
    let v = sim
        .post(
            "/_sim/people/bob/follow",
            json!({"appid": APPID, "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["status"], "delivered", "{v}");
    let bob = sim.openid(APPID, "bob").await;
    assert_eq!(v["openid"], bob.as_str());
    let posts = inbox.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    let (q, body) = &posts[0];
    assert_eq!(q["openid"], bob);
    assert_eq!(
        q["signature"],
        sha1_sorted(&["pushtoken1", &q["timestamp"], &q["nonce"]])
    );
    assert!(!q.contains_key("encrypt_type"));
    assert!(
        body.contains("<MsgType><![CDATA[event]]></MsgType>"),
        "{body}"
    );
    assert!(body.contains("<Event><![CDATA[subscribe]]></Event>"));
    assert!(body.contains(&format!("<FromUserName><![CDATA[{bob}]]></FromUserName>")));
    assert!(body.contains("<ToUserName><![CDATA[gh_000000000001]]></ToUserName>"));
    assert_eq!(v["delivery"]["attempts"][0]["reply_kind"], "success");
    // Now bob follows: user/info says so.
    let t = sim.token().await;
    let info = sim
        .get(&format!("/cgi-bin/user/info?access_token={t}&openid={bob}"))
        .await;
    assert_eq!(info["subscribe"], 1);
    assert_eq!(info["subscribe_time"], START);
}

#[tokio::test]
async fn qr_follow_carries_the_scene_and_a_second_scan_is_a_scan_event() {
    let (sim, inbox) = sim_pushing_to("plain", 2000).await;
    sim.post(
        "/_sim/people/bob/follow",
        json!({"appid": APPID, "qr_scene": "123", "wait": true}),
    )
    .await;
    sim.post(
        "/_sim/people/bob/follow",
        json!({"appid": APPID, "qr_scene": "123", "wait": true}),
    )
    .await;
    let posts = inbox.posts.lock().unwrap().clone();
    assert!(
        posts[0]
            .1
            .contains("<EventKey><![CDATA[qrscene_123]]></EventKey><Ticket>")
    );
    assert!(
        posts[1]
            .1
            .contains("<Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[123]]></EventKey>"),
        "{}",
        posts[1].1
    );
    let t = sim.token().await;
    let bob = sim.openid(APPID, "bob").await;
    let info = sim
        .get(&format!("/cgi-bin/user/info?access_token={t}&openid={bob}"))
        .await;
    assert_eq!(
        (info["subscribe_scene"].as_str(), info["qr_scene"].as_i64()),
        (Some("ADD_SCENE_QR_CODE"), Some(123))
    );
}

#[tokio::test]
async fn unfollow_and_text_are_pushed() {
    let (sim, inbox) = sim_pushing_to("plain", 2000).await;
    let v = sim
        .post(
            "/_sim/people/alice/text",
            json!({"appid": APPID, "content": "hi ]]> there", "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["status"], "delivered");
    let v = sim
        .post(
            "/_sim/people/alice/unfollow",
            json!({"appid": APPID, "wait": true}),
        )
        .await;
    assert_eq!(v["changed"], true);
    let posts = inbox.posts.lock().unwrap().clone();
    assert!(posts[0].1.contains("<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi ]]]]><![CDATA[> there]]></Content><MsgId>"), "{}", posts[0].1);
    assert!(
        posts[1]
            .1
            .contains("<Event><![CDATA[unsubscribe]]></Event>")
    );
    // An unfollowed person cannot message the account.
    let resp = sim
        .http
        .post(sim.url("/_sim/people/alice/text"))
        .json(&json!({"appid": APPID, "content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn safe_mode_encrypts_and_signs_the_body() {
    let (sim, inbox) = sim_pushing_to("safe", 2000).await;
    sim.post(
        "/_sim/people/bob/follow",
        json!({"appid": APPID, "wait": true}),
    )
    .await;
    let (q, body) = inbox.posts.lock().unwrap()[0].clone();
    assert_eq!(q["encrypt_type"], "aes");
    let enc = body
        .split("<Encrypt><![CDATA[")
        .nth(1)
        .unwrap()
        .split("]]>")
        .next()
        .unwrap();
    assert_eq!(
        q["msg_signature"],
        sha1_sorted(&["pushtoken1", &q["timestamp"], &q["nonce"], enc])
    );
    assert!(
        !body.contains("<FromUserName>"),
        "safe mode carries only Encrypt: {body}"
    );
    let (msg, appid) =
        wx_sim::push::crypto::decrypt(enc, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
    assert_eq!(appid, APPID);
    assert!(msg.contains("<Event><![CDATA[subscribe]]></Event>"));
}

#[tokio::test]
async fn compat_mode_sends_plaintext_and_encrypt() {
    let (sim, inbox) = sim_pushing_to("compat", 2000).await;
    sim.post(
        "/_sim/people/bob/follow",
        json!({"appid": APPID, "wait": true}),
    )
    .await;
    let (_, body) = inbox.posts.lock().unwrap()[0].clone();
    assert!(
        body.contains("<FromUserName>") && body.contains("<Encrypt>"),
        "{body}"
    );
}

#[tokio::test]
async fn an_encrypted_reply_is_verified_and_decrypted() {
    let (sim, inbox) = sim_pushing_to("safe", 2000).await;
    let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let reply = "<xml><Content><![CDATA[hello]]></Content></xml>";
    let enc = wx_sim::push::crypto::encrypt(reply, APPID, key).unwrap();
    let sig = sha1_sorted(&["pushtoken1", "1700000000", "42", &enc]);
    *inbox.reply.lock().unwrap() = format!(
        "<xml><Encrypt><![CDATA[{enc}]]></Encrypt><MsgSignature><![CDATA[{sig}]]></MsgSignature><TimeStamp>1700000000</TimeStamp><Nonce><![CDATA[42]]></Nonce></xml>"
    );
    let v = sim
        .post(
            "/_sim/people/bob/follow",
            json!({"appid": APPID, "wait": true}),
        )
        .await;
    let a = &v["delivery"]["attempts"][0];
    assert_eq!(a["reply_kind"], "encrypted_xml", "{a}");
    assert_eq!(a["reply_plain"], reply);
    *inbox.reply.lock().unwrap() = "this is not xml".into();
    let v = sim
        .post(
            "/_sim/people/bob/text",
            json!({"appid": APPID, "content": "x", "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["attempts"][0]["reply_kind"], "invalid");
}

#[tokio::test]
async fn a_slow_server_gets_the_first_attempt_and_three_retries_with_the_same_message() {
    let (sim, inbox) = sim_pushing_to("plain", 150).await;
    inbox.slow.store(10, Ordering::SeqCst);
    inbox.delay_ms.store(600, Ordering::SeqCst);
    let v = sim
        .post(
            "/_sim/people/alice/text",
            json!({"appid": APPID, "content": "ping", "wait": true}),
        )
        .await;
    let d = &v["delivery"];
    assert_eq!(d["status"], "failed", "{d}");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a["outcome"] == "timeout"));
    let posts = inbox.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 4);
    assert!(
        posts.iter().all(|(_, b)| *b == posts[0].1),
        "MsgId and CreateTime stable across retries"
    );

    inbox.slow.store(1, Ordering::SeqCst);
    let v = sim
        .post(
            "/_sim/people/alice/text",
            json!({"appid": APPID, "content": "pong", "wait": true}),
        )
        .await;
    assert_eq!(v["delivery"]["status"], "delivered");
    assert_eq!(v["delivery"]["attempts"].as_array().unwrap().len(), 2);
    let log = sim.get(&format!("/_sim/push/log?appid={APPID}")).await;
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn retries_are_a_setting_and_unreachable_servers_are_recorded() {
    let sim = TestSim::with(&world("[settings]\npush_retries = 1")).await;
    sim.patch_account(APPID, json!({"push_url": "http://127.0.0.1:9/wx"}))
        .await;
    let v = sim
        .post(
            "/_sim/people/bob/follow",
            json!({"appid": APPID, "wait": true}),
        )
        .await;
    let attempts = v["delivery"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts.iter().all(|a| a["outcome"] == "connect_error"),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn the_get_verification_sends_an_echostr() {
    let (sim, inbox) = sim_pushing_to("safe", 2000).await;
    let v = sim.post("/_sim/push/verify", json!({"appid": APPID})).await;
    assert_eq!(v["ok"], true, "{v}");
    let q = inbox.gets.lock().unwrap()[0].clone();
    assert_eq!(
        q["signature"],
        sha1_sorted(&["pushtoken1", &q["timestamp"], &q["nonce"]])
    );
    assert_eq!(v["echostr"], q["echostr"].as_str());
}

#[tokio::test]
async fn deliveries_without_wait_finish_in_the_background() {
    let (sim, inbox) = sim_pushing_to("plain", 2000).await;
    let v = sim
        .post("/_sim/people/bob/follow", json!({"appid": APPID}))
        .await;
    let id = v["delivery_id"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..200 {
        status = sim.get(&format!("/_sim/push/deliveries/{id}")).await["status"].clone();
        if status != "pending" {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "delivered");
    assert_eq!(inbox.posts.lock().unwrap().len(), 1);
}
