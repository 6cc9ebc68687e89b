//! Secrets at rest (issue #13): the SQLite file holds no AppSecret, token
//! or ticket in plaintext; a wrong or missing key refuses to start; a
//! plaintext store upgrades in place; a rotation re-seals.

use std::sync::Arc;

use crate::helpers::*;

const KEY_A: &str = "4a1f9c0e7b3d5a2f8e6c1b0d9a7f3e5c2b8d6a4f1e0c9b7a5d3f2e1c0b9a8d7f";
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff1";

fn key_id(hex: &str) -> String {
    wxhub::seal::EncryptionKey::from_hex(hex)
        .unwrap()
        .id()
        .to_string()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn sealed_with(bytes: &[u8], key: &str) -> bool {
    contains(bytes, &format!("wxs1:{}:", key_id(key)))
}

async fn token_and_ticket(hub: &TestHub) -> (String, String) {
    let token = hub.token().await;
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    assert_eq!(s, 200, "{v}");
    (token, v["jsapi_ticket"].as_str().unwrap().to_string())
}

/// Builds a hub from the test's current configuration, expecting failure.
async fn start_error(hub: &TestHub) -> String {
    let clock = Arc::new(wxhub::clock::SystemClock);
    let e = wxhub::Application::build(hub.config(), clock)
        .await
        .expect_err("the hub must refuse to start");
    format!("{e:#}")
}

#[tokio::test]
async fn the_store_file_holds_no_secret_token_or_ticket_in_plaintext() {
    let mut hub = TestHub::with(Options {
        store: format!("encryption_key = \"{KEY_A}\""),
        ..Options::default()
    })
    .await;
    let (token, ticket) = token_and_ticket(&hub).await;
    // An AppSecret given through the admin API is kept in the store.
    let r = hub
        .send_as(
            reqwest::Method::PATCH,
            &format!("/v1/admin/accounts/{APPID}"),
            &hub.admin,
            Some(&serde_json::json!({"secret": SECRET, "name": "Renamed"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    // On disk after a clean stop, and while running.
    let running = hub.store_contents();
    hub.restart().await;
    assert_eq!(
        token_and_ticket(&hub).await,
        (token.clone(), ticket.clone())
    );
    assert_eq!(
        hub.issued("stable"),
        1,
        "served from the store, not refetched"
    );
    hub.stop().await;
    for bytes in [running, hub.store_contents()] {
        assert!(
            sealed_with(&bytes, KEY_A),
            "values are sealed under the key"
        );
        for (name, canary) in [
            ("appsecret", SECRET),
            ("token", &token),
            ("ticket", &ticket),
        ] {
            assert!(!contains(&bytes, canary), "{name} in the store file");
        }
        assert!(!contains(&bytes, KEY_A), "the key itself in the store file");
    }
}

#[tokio::test]
async fn a_wrong_or_missing_key_refuses_to_start() {
    let line = format!("encryption_key = \"{KEY_A}\"");
    let mut hub = TestHub::with(Options {
        store: line.clone(),
        ..Options::default()
    })
    .await;
    token_and_ticket(&hub).await;
    hub.stop().await;
    hub.config_text = hub
        .config_text
        .replace(&line, &format!("encryption_key = \"{KEY_B}\""));
    let e = start_error(&hub).await;
    assert!(e.contains("store.encryption_key"), "{e}");
    assert!(e.contains(&key_id(KEY_A)), "names the stored key id: {e}");
    assert!(!e.contains(KEY_A) && !e.contains(KEY_B), "no key in errors");
    hub.config_text = hub
        .config_text
        .replace(&format!("encryption_key = \"{KEY_B}\""), "");
    let e = start_error(&hub).await;
    assert!(e.contains("store.encryption_key is not set"), "{e}");
}

#[tokio::test]
async fn a_plaintext_store_upgrades_in_place_and_a_rotation_reseals() {
    let mut hub = TestHub::start().await;
    let (token, ticket) = token_and_ticket(&hub).await;
    hub.stop().await;
    // Without a key, as before: plaintext (which is what the grep sees).
    assert!(
        contains(&hub.store_contents(), &token),
        "the control: plaintext"
    );

    // Upgrade: the same values, now sealed, still served without a fetch.
    hub.restart_with_store_lines("", &format!("encryption_key = \"{KEY_A}\""))
        .await;
    assert_eq!(
        token_and_ticket(&hub).await,
        (token.clone(), ticket.clone())
    );
    assert_eq!(hub.issued("stable"), 1);
    hub.stop().await;
    let bytes = hub.store_contents();
    assert!(sealed_with(&bytes, KEY_A));
    assert!(
        !contains(&bytes, &token) && !contains(&bytes, &ticket),
        "old plaintext left on disk"
    );

    // Rotation: A becomes the previous key.
    hub.restart_with_store_lines(
        &format!("encryption_key = \"{KEY_A}\""),
        &format!("encryption_key = \"{KEY_B}\"\nprevious_encryption_key = \"{KEY_A}\""),
    )
    .await;
    assert_eq!(
        token_and_ticket(&hub).await,
        (token.clone(), ticket.clone())
    );
    hub.stop().await;
    let bytes = hub.store_contents();
    assert!(sealed_with(&bytes, KEY_B), "re-sealed under the new key");
    assert!(
        !sealed_with(&bytes, KEY_A),
        "nothing left under the old key"
    );

    // The old key is no longer needed.
    hub.restart_with_store_lines(
        &format!("encryption_key = \"{KEY_B}\"\nprevious_encryption_key = \"{KEY_A}\""),
        &format!("encryption_key = \"{KEY_B}\""),
    )
    .await;
    assert_eq!(token_and_ticket(&hub).await, (token, ticket));
    assert_eq!(hub.issued("stable"), 1, "no token was lost on the way");
    // And the old key alone is refused.
    hub.stop().await;
    hub.config_text = hub.config_text.replace(KEY_B, KEY_A);
    let e = start_error(&hub).await;
    assert!(
        e.contains(&key_id(KEY_B)) && e.contains("store.encryption_key"),
        "{e}"
    );
}
