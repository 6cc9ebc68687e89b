//! wechatpy (PyPI, pinned in `.ci/requirements.txt`) against the simulator:
//! global token, user info, the OAuth code exchange and userinfo, the
//! signature and decryption of a push the simulator encrypted, and an
//! encrypted reply that the simulator must accept.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const STATE: &str = "wechatpy42";
const REPLY_CONTENT: &str = "你好 from wechatpy";

fn script() -> std::path::PathBuf {
    repo_root().join(".ci/py/wechatpy_against_sim.py")
}

/// Runs the script with `cfg` as its only argument; panics with its output
/// unless it exits 0 and prints a JSON object.
async fn run_script(python: &std::path::Path, cfg: &Value) -> Value {
    let script = script();
    assert!(script.is_file(), "{} is missing", script.display());
    let child = tokio::process::Command::new(python)
        .arg(&script)
        .arg(cfg.to_string())
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the wechatpy script finishes within 120 s")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wechatpy script failed ({}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}):\n{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_fetches_tokens_and_userinfo_and_decrypts_a_push() {
    if skipped("wechatpy_fetches_tokens_and_userinfo_and_decrypts_a_push") {
        return;
    }
    let python = python_with_wechatpy();
    let sim = Sim::start().await;
    let (push_url, inbox) = push_receiver().await;
    sim.post(
        &format!("/_sim/accounts/{APPID}"),
        json!({"push_url": push_url, "push_mode": "safe"}),
    )
    .await;

    // Bob follows: the simulator encrypts a subscribe event and pushes it.
    let followed = sim
        .post(
            &format!("/_sim/people/{BOB}/follow"),
            json!({"appid": APPID, "wait": true}),
        )
        .await;
    assert_eq!(followed["delivery"]["status"], "delivered", "{followed}");
    let bob = sim.openid(BOB).await;
    assert_eq!(followed["openid"], bob.as_str());
    let (query, body) = {
        let posts = inbox.posts.lock().expect("inbox");
        assert_eq!(posts.len(), 1, "one push for one follow");
        posts[0].clone()
    };
    for key in ["signature", "timestamp", "nonce", "msg_signature"] {
        assert!(query.contains_key(key), "{key} on the push URL: {query:?}");
    }
    assert_eq!(query["timestamp"], START.to_string(), "virtual time");
    assert!(
        !body.contains(&bob),
        "safe mode leaks the openid in the body: {body}"
    );

    // Nothing here redirects to it: the script stops at the 302.
    let redirect_uri = "http://127.0.0.1:9/wechatpy/callback";
    let cfg = json!({
        "base_url": sim.base,
        "appid": APPID,
        "secret": SECRET,
        "person": BOB,
        "redirect_uri": redirect_uri,
        "state": STATE,
        "expect": {"openid": bob, "nickname": BOB_NICKNAME, "original_id": ORIGINAL_ID},
        "push": {
            "token": PUSH_TOKEN,
            "encoding_aes_key": AES_KEY,
            "query": string_map(&query),
            "body": body,
        },
        "reply_content": REPLY_CONTENT,
    });
    let out = run_script(&python, &cfg).await;
    println!("wechatpy {} passed its checks", out["wechatpy_version"]);

    // The script checked all this; the test checks it again from its side.
    assert_eq!(out["token_expires_in"], 7200);
    assert_eq!(out["user_info"]["openid"], bob.as_str());
    assert_eq!(out["user_info"]["subscribe"], 1);
    assert_eq!(out["user_info"]["subscribe_time"], START);
    let oauth = &out["oauth"];
    let location = oauth["location"].as_str().expect("location");
    assert!(location.starts_with(redirect_uri), "{location}");
    assert_eq!(query_param(location, "state").as_deref(), Some(STATE));
    assert_eq!(
        query_param(location, "code").as_deref(),
        oauth["code"].as_str()
    );
    assert_eq!(oauth["grant"]["openid"], bob.as_str());
    assert_eq!(oauth["grant"]["scope"], "snsapi_userinfo");
    assert_eq!(oauth["userinfo"]["openid"], bob.as_str());
    assert_eq!(oauth["userinfo"]["nickname"], BOB_NICKNAME);
    let push = &out["push"];
    let xml = push["xml"].as_str().expect("decrypted xml");
    assert!(
        xml.contains("<Event><![CDATA[subscribe]]></Event>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<FromUserName><![CDATA[{bob}]]></FromUserName>")),
        "{xml}"
    );
    assert_eq!(push["event"], "subscribe");
    assert_eq!(push["source"], bob.as_str());
    assert_eq!(push["target"], ORIGINAL_ID);
    assert_eq!(push["create_time"], START);

    // The other direction: the reply wechatpy encrypted must be accepted and
    // decrypted by the simulator when Bob writes next.
    let reply = out["encrypted_reply"].as_str().expect("encrypted reply");
    let reply_plain = out["reply_plain"].as_str().expect("reply plaintext");
    assert!(reply_plain.contains(REPLY_CONTENT), "{reply_plain}");
    *inbox.reply.lock().expect("inbox") = reply.to_string();
    let texted = sim
        .post(
            &format!("/_sim/people/{BOB}/text"),
            json!({"appid": APPID, "content": "hello", "wait": true}),
        )
        .await;
    let attempt = &texted["delivery"]["attempts"][0];
    assert_eq!(texted["delivery"]["status"], "delivered", "{texted}");
    assert_eq!(attempt["reply_kind"], "encrypted_xml", "{attempt}");
    assert_eq!(attempt["reply_plain"], reply_plain, "{attempt}");
}
