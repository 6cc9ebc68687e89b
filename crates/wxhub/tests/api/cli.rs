use crate::helpers::*;

/// `wxhub check --online` proves the credentials and the IP whitelist
/// without killing the classic token a running hub serves.
#[tokio::test]
async fn check_online_leaves_a_running_hubs_classic_token_alive() {
    let hub = TestHub::with(Options {
        mode: "classic",
        ..Options::default()
    })
    .await;
    let token = hub.token().await;
    let classic_fetches = hub.calls("/cgi-bin/token");
    let dir = hub.store.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("check.toml");
    std::fs::write(&config, &hub.config_text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .arg("--online")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{APPID}: ok")), "{stdout}");
    assert!(!stdout.contains(SECRET), "no secret printed");
    assert_eq!(
        hub.calls("/cgi-bin/token"),
        classic_fetches,
        "no classic fetch"
    );
    // Past the 300 s grace a replaced token would be dead by now.
    hub.advance(400);
    assert_eq!(
        hub.use_token(&token).await,
        0,
        "the hub's token still works"
    );
}

/// Runs `wxhub serve` with `format` until it logs that it serves, and
/// returns what it wrote to stderr (a pipe: not a terminal).
async fn serve_log(hub: &TestHub, format: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let dir = hub.store.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join(format!("serve-{format}.toml"));
    std::fs::write(&config, &hub.config_text).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("WXHUB_LOG_FORMAT", format)
        .env("WXHUB__LISTEN", "127.0.0.1:0")
        .env("WXHUB__STORE__PATH", dir.join(format!("serve-{format}.db")))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("serving") {
                return;
            }
        }
    })
    .await;
    child.kill().await.unwrap();
    assert!(found.is_ok(), "no 'serving' line:\n{seen}");
    seen
}

/// Log collectors get one JSON object per line; a log file never gets
/// colour escape codes.
#[tokio::test]
async fn logs_are_json_on_request_and_never_coloured_off_a_terminal() {
    let hub = TestHub::start().await;
    let json = serve_log(&hub, "json").await;
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(!json.contains(SECRET));
    let text = serve_log(&hub, "text").await;
    assert!(!text.contains('\u{1b}'), "escape codes in a pipe: {text:?}");
    assert!(text.contains("INFO"), "{text}");
}
