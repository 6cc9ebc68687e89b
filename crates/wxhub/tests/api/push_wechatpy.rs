//! wechatpy (PyPI, in the CI venv) against the push gateway: its
//! `WeChatCrypto` encrypts a safe-mode push the hub accepts, and decrypts
//! the hub's encrypted passive reply.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::push_support::*;

/// `WXHUB_PYTHON`, or the repository's `.ci/venv`; `None` (after saying
/// so) only when `WXHUB_SKIP_EXTERNAL=1`.
fn python() -> Option<std::path::PathBuf> {
    if std::env::var("WXHUB_SKIP_EXTERNAL").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED wechatpy push test: WXHUB_SKIP_EXTERNAL=1");
        return None;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = std::env::var_os("WXHUB_PYTHON")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".ci/venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with wechatpy at {} (set WXHUB_PYTHON, or run bash .ci/run once)",
        p.display()
    );
    Some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_encrypts_a_push_the_hub_accepts_and_decrypts_its_reply() {
    let Some(python) = python() else { return };
    let crm = Subscriber::start(Mode::Up).await;
    let bot = Subscriber::start(Mode::Slow(
        Duration::ZERO,
        "{\"text\":\"收到 from the hub\"}".into(),
    ))
    .await;
    let hub = TestHub::with(Options {
        world: sim_account("safe", AES_KEY, ""),
        push: push_section(
            "safe",
            "",
            &[("crm", crm.url(), ""), ("bot", bot.url(), "replier = true")],
        ),
        extra: FAST.to_string(),
        ..Options::default()
    })
    .await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/py/wechatpy_push.py");
    let cfg = json!({
        "url": hub.url(&format!("/push/{APPID}")),
        "token": PUSH_TOKEN,
        "aes_key": AES_KEY,
        "appid": APPID,
        "to": "gh_0123456789ab",
        "openid": "oWECHATPY0000000000000000000",
        "content": "你好 from wechatpy",
        "timestamp": hub.now(),
    });
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(cfg.to_string())
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the script finishes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON");
    assert_eq!(v["type"], "text", "{v}");
    assert_eq!(v["content"], "收到 from the hub");
    assert_eq!(
        v["target"], "oWECHATPY0000000000000000000",
        "the reply goes to the person"
    );
    let got = crm.wait_for(1).await;
    assert_eq!(got[0].body["fields"]["content"], "你好 from wechatpy");
}
