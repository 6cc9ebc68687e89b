use super::*;

const BASE: &str = r#"
[[accounts]]
appid = "wx1111111111111111"
secret_env = "SECRET_A"

[[clients]]
name = "shop"
key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
apps = ["wx1111111111111111"]
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| (k == "SECRET_A").then(|| "the-secret".to_string());
    Config::from_toml_with_env(text, &env, &lookup)
}

#[test]
fn a_valid_config_loads_with_defaults() {
    let c = load(BASE, &[]).expect("valid");
    assert_eq!(c.accounts[0].secret.expose_secret(), "the-secret");
    assert_eq!(c.accounts[0].token_mode, TokenMode::Stable);
    assert_eq!(c.refresh.classic_margin_secs, 240);
    assert!(matches!(c.store, StoreConfig::Sqlite { .. }));
}

#[test]
fn a_redis_store_takes_its_url_from_the_environment_and_hides_it() {
    let c = load(
        BASE,
        &[
            ("WXHUB__STORE__KIND", "redis"),
            ("WXHUB__STORE__URL_ENV", "SECRET_A"),
        ],
    );
    // SECRET_A resolves to "the-secret", not a redis:// URL.
    assert!(c.expect_err("scheme").to_string().contains("store.url"));
    let c = load(
        &format!("[store]\nkind = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379/2\"\n{BASE}"),
        &[],
    )
    .expect("valid");
    let StoreConfig::Redis {
        url, prefix, lease, ..
    } = &c.store
    else {
        panic!("redis store");
    };
    assert_eq!(
        (prefix.as_str(), *lease),
        ("wxhub", std::time::Duration::from_secs(10))
    );
    assert_eq!(url.0, "redis://:pw@127.0.0.1:6379/2");
    assert!(
        !format!("{c:?}").contains("pw@"),
        "the password stays out of Debug"
    );
}

#[test]
fn environment_overrides_reach_nested_keys_and_arrays() {
    let c = load(
        BASE,
        &[
            ("WXHUB__REFRESH__TICK_MS", "50"),
            ("WXHUB__ACCOUNTS__0__TOKEN_MODE", "classic"),
            ("WXHUB__STORE__PATH", "/tmp/x.db"),
            ("WXHUB__LISTEN", "127.0.0.1:1"),
        ],
    )
    .expect("valid");
    assert_eq!(c.refresh.tick, std::time::Duration::from_millis(50));
    assert_eq!(c.accounts[0].token_mode, TokenMode::Classic);
    assert_eq!(c.listen.port(), 1);
}

/// A configuration, `WXHUB__*` overrides, and the key its error must name.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn errors_name_the_key() {
    let cases: Vec<Case> = vec![
        (
            BASE.replace("SECRET_A", "NOPE"),
            vec![],
            "accounts[0].secret_env",
        ),
        (
            BASE.replace("wx1111111111111111\"\nsecret", "bad id\"\nsecret"),
            vec![],
            "accounts[0].appid",
        ),
        (
            BASE.replace(
                "0000000000000000000000000000000000000000000000000000000000000000",
                "xyz",
            ),
            vec![],
            "clients[0].key_sha256",
        ),
        (
            BASE.replace(
                "apps = [\"wx1111111111111111\"]",
                "apps = [\"wx2222222222222222\"]",
            ),
            vec![],
            "clients[0].apps[0]",
        ),
        (
            format!("{BASE}\n[refresh]\nstable_refresh_before_secs = 400\n"),
            vec![],
            "refresh.stable_refresh_before_secs",
        ),
        (
            BASE.to_string(),
            vec![("WXHUB__ACCOUNTS__3__SECRET", "x")],
            "WXHUB__ACCOUNTS__3__SECRET",
        ),
        (format!("colour = 1\n{BASE}"), vec![], "colour"),
        (
            BASE.replace(
                "secret_env = \"SECRET_A\"",
                "secret_env = \"SECRET_A\"\nsecret = \"x\"",
            ),
            vec![],
            "accounts[0].secret_env",
        ),
        (
            BASE.replace(
                "secret_env = \"SECRET_A\"",
                "secret_file = \"/nonexistent/secret\"",
            ),
            vec![],
            "accounts[0].secret_file",
        ),
        (
            BASE.replace("token_mode", "x")
                .replace("secret_env", "token_mode = \"fast\"\nsecret_env"),
            vec![],
            "accounts[0].token_mode",
        ),
        (
            format!("[oauth]\nstate_secret_env = \"SECRET_A\"\n{BASE}"),
            vec![],
            "oauth.state_secret",
        ),
    ];
    assert_errors_name(cases);
}

#[test]
fn store_errors_name_the_key() {
    let cases: Vec<Case> = vec![
        (
            format!("[store]\nkind = \"mongo\"\n{BASE}"),
            vec![],
            "store.kind",
        ),
        (
            format!("[store]\nkind = \"redis\"\n{BASE}"),
            vec![],
            "store.url",
        ),
        (
            format!("[store]\nkind = \"redis\"\nurl = \"http://x\"\n{BASE}"),
            vec![],
            "store.url",
        ),
        (
            format!("[store]\nkind = \"redis\"\nurl_env = \"NOPE\"\n{BASE}"),
            vec![],
            "store.url_env",
        ),
        (
            format!("[store]\nkind = \"redis\"\nurl = \"redis://h\"\nprefix = \"a{{b}}\"\n{BASE}"),
            vec![],
            "store.prefix",
        ),
        (
            format!("[store]\nkind = \"redis\"\nurl = \"redis://h\"\nlease_ms = 5\n{BASE}"),
            vec![],
            "store.lease_ms",
        ),
        (
            format!("[store]\nkind = \"redis\"\nurl = \"redis://h\"\nlease_partitions = 0\n{BASE}"),
            vec![],
            "store.lease_partitions",
        ),
        (
            format!(
                "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nsentinels = [\"s:26379\"]\n{BASE}"
            ),
            vec![],
            "store.sentinel_master",
        ),
        (
            format!(
                "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nsentinel_master = \"m\"\n{BASE}"
            ),
            vec![],
            "store.sentinels",
        ),
        (
            format!(
                "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nsentinels = [\"no-port\"]\nsentinel_master = \"m\"\n{BASE}"
            ),
            vec![],
            "store.sentinels",
        ),
        (
            format!("[store]\nsentinel_master = \"m\"\n{BASE}"),
            vec![],
            "store.sentinel_master",
        ),
        (
            format!(
                "[store]\nkind = \"redis\"\nurl = \"redis://h\"\ntls_ca_file = \"/etc/hostname\"\n{BASE}"
            ),
            vec![],
            "store.tls_ca_file",
        ),
        (
            format!(
                "[store]\nkind = \"redis\"\nurl = \"rediss://h\"\ntls_ca_file = \"/nonexistent.pem\"\n{BASE}"
            ),
            vec![],
            "store.tls_ca_file",
        ),
        (
            format!("[store]\nurl = \"redis://h\"\n{BASE}"),
            vec![],
            "store.url",
        ),
    ];
    assert_errors_name(cases);
}

fn assert_errors_name(cases: Vec<Case>) {
    for (text, env, key) in cases {
        let err = load(&text, &env).expect_err(key).to_string();
        assert!(err.contains(key), "{err} should name {key}");
        assert!(!err.contains("the-secret"), "no secret in errors");
    }
}

#[test]
fn every_secret_can_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("wxhub-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let secret = write("secret", "app-secret-from-file\n");
    let state = write("state", &"s".repeat(40));
    let url = write("url", "redis://:pw@127.0.0.1:6379/3\n");
    let text = format!(
        "[store]\nkind = \"redis\"\nurl_file = \"{url}\"\n\n[oauth]\nstate_secret_file = \"{state}\"\n\n{}",
        BASE.replace(
            "secret_env = \"SECRET_A\"",
            &format!("secret_file = \"{secret}\"")
        )
    );
    let c = load(&text, &[]).expect("valid");
    assert_eq!(c.accounts[0].secret.expose_secret(), "app-secret-from-file");
    assert_eq!(c.oauth.state_secret, "s".repeat(40).into_bytes());
    let StoreConfig::Redis { url, .. } = &c.store else {
        panic!("redis store");
    };
    assert_eq!(url.0, "redis://:pw@127.0.0.1:6379/3", "trimmed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn secret_sources_hide_inline_values() {
    let s = SecretSource::Value("hunter2".into());
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(format!("{:?}", SecretSource::Env("APP_SECRET".into())).contains("APP_SECRET"));
}

const KEY_A: &str = "1f2e3d4c5b6a79880112233445566778899aabbccddeeff00102030405060708";
const KEY_B: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";

/// Loads with `KEY_A` in the environment as `STORE_KEY`.
fn load_with_key(text: &str) -> Result<Config, ConfigError> {
    let lookup = |k: &str| match k {
        "SECRET_A" => Some("the-secret".to_string()),
        "STORE_KEY" => Some(KEY_A.to_string()),
        _ => None,
    };
    Config::from_toml_with_env(text, &[], &lookup)
}

#[test]
fn store_encryption_keys_come_from_any_source_for_either_store() {
    let dir = std::env::temp_dir().join(format!("wxhub-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("key");
    std::fs::write(&file, format!("{KEY_B}\n")).unwrap();
    let c = load_with_key(&format!(
        "[store]\nencryption_key_env = \"STORE_KEY\"\nprevious_encryption_key_file = \"{}\"\n{BASE}",
        file.display()
    ))
    .expect("valid");
    let id = |k: &str| {
        crate::seal::EncryptionKey::from_hex(k)
            .unwrap()
            .id()
            .to_string()
    };
    assert_eq!(
        c.store_keys.current.as_ref().map(|k| k.id().to_string()),
        Some(id(KEY_A))
    );
    assert_eq!(
        c.store_keys.previous.as_ref().map(|k| k.id().to_string()),
        Some(id(KEY_B))
    );
    assert!(!format!("{c:?}").contains(KEY_A), "keys stay out of Debug");
    let c = load_with_key(&format!(
        "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nencryption_key = \"{KEY_B}\"\n{BASE}"
    ))
    .expect("valid");
    assert!(matches!(c.store, StoreConfig::Redis { .. }));
    assert!(c.store_keys.current.is_some() && c.store_keys.previous.is_none());
    assert!(
        load(BASE, &[]).unwrap().store_keys.current.is_none(),
        "opt-in"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn store_encryption_key_errors_name_the_key_and_never_the_value() {
    let cases: Vec<(String, &str)> = vec![
        (
            "encryption_key = \"0123\"".into(),
            "store.encryption_key: must be 64 hex digits",
        ),
        (
            format!("encryption_key = \"{}\"", KEY_A.replace('1', "x")),
            "store.encryption_key: must be 64 hex digits",
        ),
        (
            "encryption_key_env = \"NOPE\"".into(),
            "store.encryption_key_env: environment variable NOPE is not set",
        ),
        (
            "encryption_key_file = \"/nonexistent/key\"".into(),
            "store.encryption_key_file",
        ),
        (
            format!("encryption_key = \"{KEY_A}\"\nencryption_key_env = \"STORE_KEY\""),
            "store.encryption_key_env: give only one of",
        ),
        (
            format!("previous_encryption_key = \"{KEY_A}\""),
            "store.previous_encryption_key: is only for a rotation",
        ),
        (
            format!("encryption_key_env = \"STORE_KEY\"\nprevious_encryption_key = \"{KEY_A}\""),
            "store.previous_encryption_key: is the same key",
        ),
        (
            "encryption_key_env = \"SECRET_A\"".into(),
            "store.encryption_key_env: must be 64 hex digits",
        ),
    ];
    for (lines, want) in cases {
        let err = load_with_key(&format!("[store]\n{lines}\n{BASE}"))
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{err} should contain {want}");
        for secret in [KEY_A, KEY_B, "the-secret", &KEY_A.replace('1', "x")] {
            assert!(!err.contains(secret), "no key in errors: {err}");
        }
    }
}

const COMPONENT: &str = r#"
[[components]]
appid = "wxcc00000000000001"
secret_env = "SECRET_A"
token = "t"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
return_origins = ["https://saas.example.com"]
"#;

#[test]
fn a_component_is_an_account_of_its_own_kind_and_its_errors_name_the_key() {
    let c = load(&format!("{BASE}{COMPONENT}"), &[]).expect("valid");
    assert_eq!(c.components.len(), 1);
    assert_eq!(c.components[0].tickets, vec![TicketKind::Jsapi]);
    let acc = c
        .accounts
        .iter()
        .find(|a| a.appid.as_str() == "wxcc00000000000001")
        .expect("the component is held as an account");
    assert_eq!(acc.via, Via::Component);
    assert_eq!(acc.token_mode, TokenMode::Classic);
    assert!(acc.tickets.is_empty());
    assert!(!format!("{c:?}").contains("the-secret"));

    let e = load(
        &format!("{BASE}{}", COMPONENT.replace("ABCDEFG", "ABC")),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "components[0].encoding_aes_key");
    let e = load(
        &format!("{BASE}{}", COMPONENT.replace("token = \"t\"\n", "")),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "components[0].token_env");
    let e = load(
        &format!(
            "{BASE}{}",
            COMPONENT.replace("https://saas.example.com", "https://x/path")
        ),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "components[0].return_origins[0]");
    let e = load(
        &format!(
            "{BASE}{}",
            COMPONENT.replace("wxcc00000000000001", "wx1111111111111111")
        ),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "components[0].appid");
    let e = load(
        &format!(
            "{}{COMPONENT}",
            BASE.replace(
                "apps = [",
                "components = [\"wx9999999999999999\"]\napps = ["
            )
        ),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "clients[0].components[0]");
}

#[test]
fn an_authorized_account_has_no_secret_and_needs_its_component() {
    let authorized =
        "\n[[accounts]]\nappid = \"wx2222222222222222\"\ncomponent = \"wxcc00000000000001\"\n";
    let c = load(&format!("{BASE}{COMPONENT}{authorized}"), &[]).expect("valid");
    let a = c
        .accounts
        .iter()
        .find(|a| a.appid.as_str() == "wx2222222222222222")
        .unwrap();
    assert_eq!(
        a.token_mode,
        TokenMode::Classic,
        "authorizer tokens live like classic ones"
    );
    assert_eq!(
        a.via.component().map(|c| c.as_str()),
        Some("wxcc00000000000001")
    );
    let e = load(&format!("{BASE}{authorized}"), &[]).unwrap_err();
    assert_eq!(e.key, "accounts[1].component");
    let e = load(
        &format!("{BASE}{COMPONENT}{authorized}secret = \"s\"\n"),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "accounts[1].secret");
}
