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
