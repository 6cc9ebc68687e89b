//! The push gateway against the simulator over HTTP, with real subscriber
//! servers: modes, message types, duplicates, outages, the replier, key
//! rotation, followers, bounds.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::push_support::*;

async fn hub_for(
    mode: &str,
    subs: &[(&str, String, &str)],
    push_extra: &str,
    settings: &str,
) -> TestHub {
    let hub = TestHub::with(Options {
        world: sim_account(mode, AES_KEY, settings),
        push: push_section(mode, push_extra, subs),
        extra: FAST.to_string(),
        ..Options::default()
    })
    .await;
    hub.point_push_here().await;
    hub
}

#[tokio::test]
async fn the_platform_checks_the_url_and_a_bad_signature_is_refused() {
    let sub = Subscriber::start(Mode::Up).await;
    let hub = hub_for("safe", &[("crm", sub.url(), "")], "", "").await;
    let v = hub
        .sim_post("/_sim/push/verify", json!({"appid": APPID}))
        .await;
    assert_eq!(v["ok"], true, "the echostr comes back verbatim: {v}");

    let r = hub
        .http
        .get(hub.url(&format!(
            "/push/{APPID}?signature=0000&timestamp=1&nonce=2&echostr=3"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "push_signature");
    assert_eq!(
        hub.push_metric(
            "wxhub_push_rejected_total",
            &[("appid", APPID), ("reason", "signature")]
        ),
        1
    );
    let (s, _) = hub.get("/push/wx9999999999999999?echostr=1").await;
    assert_eq!(s, 404, "an account without push has no URL");
}

/// Every message type and event of docs/platform.md §8.2 through the
/// simulator in one mode: each arrives once, typed, signed, with its raw
/// XML; the platform is answered `success` (plain) or an empty body.
async fn every_type_in(mode: &str) {
    let sub = Subscriber::start(Mode::Up).await;
    let hub = hub_for(mode, &[("crm", sub.url(), "")], "", "").await;
    let d = hub.act("bob", "follow", json!({"qr_scene": "42"})).await;
    let want_reply = if mode == "plain" { "success" } else { "empty" };
    assert_eq!(last_attempt(&d)["reply_kind"], want_reply, "{d}");
    hub.act("bob", "text", json!({"content": "你好 <&>"})).await;
    hub.act("bob", "click", json!({"key": "MENU_A"})).await;
    hub.act("bob", "scan", json!({"qr_scene": "7"})).await;
    hub.act(
        "bob",
        "event",
        json!({"type": "VIEW", "fields": {"EventKey": "https://m.example.com/"}}),
    )
    .await;
    hub.act("bob", "event", json!({"type": "LOCATION", "fields": {"Latitude": "23.1", "Longitude": "113.3", "Precision": "119.4"}})).await;
    hub.act(
        "bob",
        "event",
        json!({"type": "TEMPLATESENDJOBFINISH", "fields": {"Status": "success"}}),
    )
    .await;
    hub.act(
        "bob",
        "message",
        json!({"type": "image", "fields": {"PicUrl": "http://p/1.jpg", "MediaId": "m1"}}),
    )
    .await;
    hub.act(
        "bob",
        "message",
        json!({"type": "voice", "fields": {"MediaId": "v1", "Format": "amr", "Recognition": "hi"}}),
    )
    .await;
    hub.act(
        "bob",
        "message",
        json!({"type": "video", "fields": {"MediaId": "v2", "ThumbMediaId": "t2"}}),
    )
    .await;
    hub.act(
        "bob",
        "message",
        json!({"type": "shortvideo", "fields": {"MediaId": "v3", "ThumbMediaId": "t3"}}),
    )
    .await;
    hub.act("bob", "message", json!({"type": "location", "fields": {"Label": "Guangzhou", "Location_X": "23.13", "Location_Y": "113.26", "Scale": "20"}})).await;
    hub.act(
        "bob",
        "message",
        json!({"type": "link", "fields": {"Description": "d", "Title": "t", "Url": "https://l/"}}),
    )
    .await;
    hub.act(
        "bob",
        "message",
        json!({"type": "miniprogrampage", "fields": {"AppId": "wxapp", "Title": "mp"}}),
    )
    .await;
    hub.act("bob", "unfollow", json!({})).await;
    let got = sub.wait_for(15).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sub.delivered().len(), 15, "each once");
    assert_eq!(sub.bad_signatures(), 0);
    let by = |t: &str, e: Option<&str>| -> Value {
        got.iter()
            .find(|r| r.body["msg_type"] == t && e.is_none_or(|e| r.body["event"] == e))
            .unwrap_or_else(|| panic!("no {t} {e:?}"))
            .body
            .clone()
    };
    let f = |t: &str, e: Option<&str>| by(t, e)["fields"].clone();
    // Order per person is kept: the follow first, the unfollow last.
    assert_eq!(got[0].body["event"], "subscribe");
    assert_eq!(got[14].body["event"], "unsubscribe");
    assert_eq!(f("event", Some("subscribe"))["scene"], "42");
    assert_eq!(f("text", None)["content"], "你好 <&>");
    assert_eq!(f("event", Some("CLICK"))["key"], "MENU_A");
    assert_eq!(f("event", Some("SCAN"))["scene"], "7");
    assert_eq!(f("event", Some("VIEW"))["url"], "https://m.example.com/");
    assert_eq!(f("event", Some("LOCATION"))["precision"], 119.4);
    let unknown_event = by("event", Some("TEMPLATESENDJOBFINISH"));
    assert_eq!(unknown_event["known_type"], false);
    assert_eq!(unknown_event["fields"]["Status"], "success");
    assert_eq!(f("image", None)["media_id"], "m1");
    assert_eq!(f("voice", None)["recognition"], "hi");
    assert_eq!(f("video", None)["thumb_media_id"], "t2");
    assert_eq!(f("shortvideo", None)["media_id"], "v3");
    assert_eq!(f("location", None)["label"], "Guangzhou");
    assert_eq!(f("link", None)["url"], "https://l/");
    let unknown = by("miniprogrampage", None);
    assert_eq!(unknown["known_type"], false);
    assert_eq!(unknown["fields"]["AppId"], "wxapp");
    for r in &got {
        assert_eq!(r.body["appid"], APPID);
        assert!(
            r.body["raw_xml"].as_str().unwrap().starts_with("<xml>"),
            "the plaintext XML, decrypted"
        );
        assert_eq!(r.delivery_id, r.body["delivery_id"].as_str().unwrap());
        assert!(r.delivery_id.ends_with(".crm"));
    }
}

#[tokio::test]
async fn every_type_plain() {
    every_type_in("plain").await;
}

#[tokio::test]
async fn every_type_compat() {
    every_type_in("compat").await;
}

#[tokio::test]
async fn every_type_safe() {
    every_type_in("safe").await;
}

#[tokio::test]
async fn bad_pushes_get_4xx_and_leave_nothing_behind() {
    let sub = Subscriber::start(Mode::Up).await;
    let hub = hub_for("safe", &[("crm", sub.url(), "")], "", "").await;
    let now = hub.now().to_string();
    let sig = |parts: &[&str]| {
        use sha1::Digest;
        let mut v = parts.to_vec();
        v.sort_unstable();
        hex(&sha1::Sha1::digest(v.concat().as_bytes()))
    };
    let post = |query: String, body: String| {
        let http = hub.http.clone();
        let url = hub.url(&format!("/push/{APPID}?{query}"));
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let xml = "<xml><ToUserName>gh</ToUserName><FromUserName>oX</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>";
    // Encrypted for another appid, correctly signed.
    let other = wx_sim::push::crypto::encrypt(xml, "wx2222222222222222", AES_KEY).unwrap();
    let q = |enc: &str| {
        format!(
            "timestamp={now}&nonce=n1&encrypt_type=aes&signature={}&msg_signature={}",
            sig(&[PUSH_TOKEN, &now, "n1"]),
            sig(&[PUSH_TOKEN, &now, "n1", enc])
        )
    };
    let envelope = |enc: &str| {
        format!("<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>")
    };
    let (s, v) = post(q(&other), envelope(&other)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("push_appid")),
        "{v}"
    );
    // A bad msg_signature.
    let ours = wx_sim::push::crypto::encrypt(xml, APPID, AES_KEY).unwrap();
    let (s, _) = post(
        q(&ours).replace("msg_signature=", "msg_signature=0"),
        envelope(&ours),
    )
    .await;
    assert_eq!(s, 401);
    // Malformed XML inside a correctly signed and encrypted push.
    let broken = wx_sim::push::crypto::encrypt("<xml><ToUserName>gh", APPID, AES_KEY).unwrap();
    let (s, v) = post(q(&broken), envelope(&broken)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("push_malformed")),
        "{v}"
    );
    // Plaintext in safe mode, correctly signed.
    let plain_q = format!(
        "timestamp={now}&nonce=n1&signature={}",
        sig(&[PUSH_TOKEN, &now, "n1"])
    );
    let (s, v) = post(plain_q, xml.to_string()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("push_encryption_required"))
    );
    // An old timestamp, correctly signed: a replay.
    let old = (hub.now() - 3600).to_string();
    let old_q = format!(
        "timestamp={old}&nonce=n1&encrypt_type=aes&msg_signature={}",
        sig(&[PUSH_TOKEN, &old, "n1", &ours])
    );
    let (s, v) = post(old_q, envelope(&ours)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("push_stale")));
    // Over the body limit.
    let (s, _) = post(q(&ours), "x".repeat(70 * 1024)).await;
    assert_eq!(s, 413);

    for reason in ["appid", "signature", "xml", "plaintext", "stale"] {
        assert_eq!(
            hub.push_metric(
                "wxhub_push_rejected_total",
                &[("appid", APPID), ("reason", reason)]
            ),
            1,
            "{reason}"
        );
    }
    let (_, b) = hub.admin_get("/v1/push").await;
    assert_eq!(b["subscribers"][0]["queued"], 0, "{b}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sub.all().is_empty(), "nothing was delivered");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(!logs.contains(&ours), "no body in a log line");
}

#[tokio::test]
async fn the_platforms_four_deliveries_of_one_push_reach_each_subscriber_once() {
    let crm = Subscriber::start(Mode::Up).await;
    let bot = Subscriber::start(Mode::Slow(Duration::from_millis(1200), "success".into())).await;
    // The platform gives up on an attempt after 250 ms and sends again,
    // three more times; the replier makes the hub take 1.2 s.
    let hub = hub_for(
        "safe",
        &[("crm", crm.url(), ""), ("bot", bot.url(), "replier = true")],
        "reply_deadline_ms = 2000",
        "[settings]\npush_timeout_ms = 250",
    )
    .await;
    let d = hub.act("alice", "text", json!({"content": "once"})).await;
    let attempts = d["delivery"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "the platform tried four times: {d}");
    let got = crm.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(crm.delivered().len(), 1, "{:?}", crm.delivered());
    assert_eq!(got[0].body["fields"]["content"], "once");
    assert_eq!(bot.delivered().len(), 1, "the replier was asked once");
    assert_eq!(
        hub.push_metric(
            "wxhub_push_received_total",
            &[("appid", APPID), ("result", "duplicate")]
        ),
        3
    );
}

#[tokio::test]
async fn a_subscriber_down_for_two_hours_gets_everything_afterwards_in_order_once() {
    let sub = Subscriber::start(Mode::Down(503)).await;
    let hub = hub_for("safe", &[("crm", sub.url(), "")], "", "").await;
    hub.act("bob", "follow", json!({})).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        for person in ["alice", "bob"] {
            let content = format!("{person}-{i}");
            hub.act(person, "text", json!({"content": content})).await;
            sent.push(content);
        }
    }
    // Two virtual hours of failures.
    hub.advance_slowly(7200, 600).await;
    let failed = sub.all().len();
    assert!(failed >= 10, "it was retried while down: {failed} attempts");
    assert!(sub.delivered().is_empty());
    sub.set(Mode::Up);
    hub.advance_slowly(1200, 300).await;
    let got = sub.wait_for(13).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_all = sub.delivered();
    assert_eq!(got_all.len(), 13, "each once");
    let mut ids: Vec<&str> = got.iter().map(|r| r.delivery_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 13, "delivery ids are distinct");
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for r in &got {
        if r.body["msg_type"] == "text" {
            per.entry(r.body["from_user_name"].as_str().unwrap().into())
                .or_default()
                .push(r.body["fields"]["content"].as_str().unwrap().into());
        }
    }
    for list in per.values() {
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(list, &sorted, "in order per person");
        assert_eq!(list.len(), 6);
    }
    // The first entry of each person was retried, under one delivery id.
    for who in per.keys() {
        let r = got
            .iter()
            .find(|r| r.body["from_user_name"] == who.as_str())
            .unwrap();
        assert!(r.body["attempt"].as_u64().unwrap() > 1, "{}", r.body);
        let tries = sub
            .all()
            .iter()
            .filter(|x| x.delivery_id == r.delivery_id)
            .count();
        assert_eq!(tries as u64, r.body["attempt"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn a_replier_that_takes_six_seconds_still_lets_the_platform_get_its_answer() {
    let crm = Subscriber::start(Mode::Up).await;
    let bot = Subscriber::start(Mode::Slow(
        Duration::from_secs(6),
        "{\"text\":\"late\"}".into(),
    ))
    .await;
    let hub = hub_for(
        "safe",
        &[("crm", crm.url(), ""), ("bot", bot.url(), "replier = true")],
        "",
        "",
    )
    .await;
    let d = hub.act("alice", "text", json!({"content": "hello"})).await;
    let a = last_attempt(&d);
    assert_eq!(
        d["delivery"]["attempts"].as_array().unwrap().len(),
        1,
        "{d}"
    );
    assert_eq!(a["reply_kind"], "empty", "safe mode: an empty body: {a}");
    assert!(a["duration_ms"].as_u64().unwrap() < 4800, "{a}");
    let got = crm.wait_for(1).await;
    assert_eq!(got[0].body["fields"]["content"], "hello");
    assert_eq!(
        hub.push_metric(
            "wxhub_push_replies_total",
            &[("appid", APPID), ("result", "failed")]
        ),
        1
    );
}

#[tokio::test]
async fn the_repliers_answer_is_the_passive_reply_encrypted_and_repeated_for_duplicates() {
    let bot = Subscriber::start(Mode::Slow(Duration::ZERO, "{\"text\":\"欢迎\"}".into())).await;
    let hub = hub_for("safe", &[("bot", bot.url(), "replier = true")], "", "").await;
    let d = hub.act("alice", "text", json!({"content": "hi"})).await;
    let a = last_attempt(&d);
    assert_eq!(a["reply_kind"], "encrypted_xml", "{a}");
    let plain = a["reply_plain"].as_str().unwrap();
    assert!(
        plain.contains("欢迎") && plain.contains("<MsgType><![CDATA[text]]></MsgType>"),
        "{plain}"
    );
    // The replier is not sent the message a second time.
    hub.advance_slowly(60, 30).await;
    assert_eq!(bot.delivered().len(), 1);
}

#[tokio::test]
async fn a_push_under_the_previous_key_is_accepted_and_answered_with_that_key() {
    let bot = Subscriber::start(Mode::Slow(Duration::ZERO, "{\"text\":\"rotated\"}".into())).await;
    let until = START + 3600;
    // The hub has the new key; the platform still encrypts with the old one.
    let section = push_section(
        "safe",
        &format!("previous_encoding_aes_key = \"{AES_KEY}\"\nprevious_key_until = {until}"),
        &[("bot", bot.url(), "replier = true")],
    )
    .replacen(
        &format!("encoding_aes_key = \"{AES_KEY}\""),
        &format!("encoding_aes_key = \"{AES_KEY_2}\""),
        1,
    );
    assert!(section.contains(&format!("previous_encoding_aes_key = \"{AES_KEY}\"")));
    let hub = TestHub::with(Options {
        world: sim_account("safe", AES_KEY, ""),
        push: section,
        extra: FAST.to_string(),
        ..Options::default()
    })
    .await;
    hub.point_push_here().await;
    let d = hub
        .act("alice", "text", json!({"content": "old key"}))
        .await;
    let a = last_attempt(&d);
    // The simulator opens the reply with the old key only.
    assert_eq!(a["reply_kind"], "encrypted_xml", "{a}");
    assert!(a["reply_plain"].as_str().unwrap().contains("rotated"));
    // After the window the old key is refused.
    hub.advance(3600);
    let d = hub
        .act("alice", "text", json!({"content": "too late"}))
        .await;
    assert_eq!(last_attempt(&d)["http_status"], 400, "{d}");
    assert_eq!(
        hub.push_metric(
            "wxhub_push_rejected_total",
            &[("appid", APPID), ("reason", "decrypt")]
        ) + hub.push_metric(
            "wxhub_push_rejected_total",
            &[("appid", APPID), ("reason", "appid")]
        ) + hub.push_metric(
            "wxhub_push_rejected_total",
            &[("appid", APPID), ("reason", "xml")]
        ),
        4,
        "each of the platform's four attempts"
    );
}
