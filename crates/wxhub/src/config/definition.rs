//! Accounts and clients given through the admin API as JSON: the same
//! fields as an `[[accounts]]` or `[[clients]]` entry of the file, checked
//! by the same rules, with errors naming the field.
//!
//! Two differences from the file: a secret is given inline (`secret`, the
//! push `token`, ...), never as `*_env` or `*_file`, which would read the
//! hub's own environment and files on an API caller's say-so; and an
//! account can be changed field by field ([`patch_account`]), each field
//! given replacing the whole field.

use serde::Deserialize;
use serde_json::{Map, Value};
use wx_api::AppSecret;

use super::ConfigError;
use super::accounts::{
    AccountConfig, AccountKind, ClientConfig, RawAccount, RawClient, TicketKind, TokenMode,
    check_domains, check_origins, check_push_kind,
};
use super::limits::Limits;
use super::push::RawPush;

/// A JSON body's key path for errors: `push.subscribers[0].url`.
fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let key = e.path().to_string();
    let key = if key == "." { "body".to_string() } else { key };
    ConfigError::new(key, e.into_inner().to_string())
}

/// Refuses `*_env` and `*_file` anywhere in the body.
fn refuse_indirection(at: &str, v: &Value) -> Result<(), ConfigError> {
    match v {
        Value::Object(m) => {
            for (k, inner) in m {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if k.ends_with("_env") || k.ends_with("_file") {
                    let plain = k.trim_end_matches("_env").trim_end_matches("_file");
                    return Err(ConfigError::new(
                        here,
                        format!(
                            "the admin API takes the value itself ({plain}); *_env and *_file read the hub's environment and files and are for the configuration file"
                        ),
                    ));
                }
                refuse_indirection(&here, inner)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, inner) in a.iter().enumerate() {
                refuse_indirection(&format!("{at}[{i}]"), inner)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn no_lookup(_: &str) -> Option<String> {
    None
}

/// The file's rules name keys under a section (`accounts[0].secret`); a
/// body has none, so `.secret` becomes `secret`.
fn at_top(mut e: ConfigError) -> ConfigError {
    if let Some(k) = e.key.strip_prefix('.') {
        e.key = k.to_string();
    }
    e
}

/// A whole account definition for `appid`. The body's `appid`, if given,
/// must be the same.
///
/// # Errors
/// [`ConfigError`] naming the field.
pub fn account_from_json(appid: &str, body: &Value) -> Result<AccountConfig, ConfigError> {
    let Value::Object(map) = body else {
        return Err(ConfigError::new("body", "an account is a JSON object"));
    };
    refuse_indirection("", body)?;
    let mut map = map.clone();
    match map.get("appid") {
        Some(Value::String(a)) if a != appid => {
            return Err(ConfigError::new(
                "appid",
                format!("the body names {a} but the path {appid}"),
            ));
        }
        _ => {
            map.insert("appid".into(), Value::String(appid.to_string()));
        }
    }
    let raw: RawAccount =
        serde_path_to_error::deserialize(Value::Object(map)).map_err(json_error)?;
    raw.validate_at("", &no_lookup).map_err(at_top)
}

/// The fields of an account a change may give; each one given replaces
/// the account's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountPatch {
    appid: Option<String>,
    secret: Option<String>,
    name: Option<String>,
    token_mode: Option<TokenMode>,
    tickets: Option<Vec<TicketKind>>,
    jssdk_domains: Option<Vec<String>>,
    kind: Option<AccountKind>,
    oauth_return_origins: Option<Vec<String>>,
    paused: Option<bool>,
    // `null` removes the push set-up; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    push: Option<Option<RawPush>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `base` with the fields of `patch` replaced.
///
/// # Errors
/// [`ConfigError`] naming the field.
pub fn patch_account(base: &AccountConfig, patch: &Value) -> Result<AccountConfig, ConfigError> {
    if !patch.is_object() {
        return Err(ConfigError::new("body", "a change is a JSON object"));
    }
    refuse_indirection("", patch)?;
    let p: AccountPatch = serde_path_to_error::deserialize(patch.clone()).map_err(json_error)?;
    if let Some(a) = p.appid.filter(|a| a != base.appid.as_str()) {
        return Err(ConfigError::new(
            "appid",
            format!("an account's AppID cannot change ({a}): add the new one and remove the old"),
        ));
    }
    let mut out = base.clone();
    if let Some(s) = p.secret {
        if s.trim().is_empty() {
            return Err(ConfigError::new("secret", "must not be empty"));
        }
        out.secret = AppSecret::new(s.trim().to_string());
    }
    if let Some(n) = p.name {
        out.name = if n.is_empty() {
            base.appid.as_str().to_string()
        } else {
            n
        };
    }
    if let Some(m) = p.token_mode {
        out.token_mode = m;
    }
    if let Some(t) = p.tickets {
        out.tickets = t;
    }
    if let Some(d) = p.jssdk_domains {
        check_domains("", &d).map_err(at_top)?;
        out.jssdk_domains = d;
    }
    if let Some(k) = p.kind {
        out.kind = k;
    }
    if let Some(o) = p.oauth_return_origins {
        out.oauth_return_origins = check_origins("", &o).map_err(at_top)?;
    }
    if let Some(paused) = p.paused {
        out.paused = paused;
    }
    if let Some(push) = p.push {
        out.push = push
            .map(|r| r.validate("", &no_lookup))
            .transpose()
            .map_err(at_top)?;
    }
    check_push_kind("", out.kind, out.push.is_some()).map_err(at_top)?;
    Ok(out)
}

/// Merges a change into the stored body it applies to: each given field
/// replaces the stored one.
pub fn merge(stored: &mut Map<String, Value>, patch: &Value) {
    if let Value::Object(p) = patch {
        for (k, v) in p {
            stored.insert(k.clone(), v.clone());
        }
    }
}

/// A client given as JSON: `name`, `key_sha256`, `apps`, `limits`.
/// `exists` says whether an AppID is an account now.
///
/// # Errors
/// [`ConfigError`] naming the field.
pub fn client_from_json(
    body: &Value,
    exists: &dyn Fn(&str) -> bool,
    defaults: &Limits,
) -> Result<ClientConfig, ConfigError> {
    if !body.is_object() {
        return Err(ConfigError::new("body", "a client is a JSON object"));
    }
    let raw: RawClient = serde_path_to_error::deserialize(body.clone()).map_err(json_error)?;
    raw.validate_at("", exists, defaults).map_err(at_top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> AccountConfig {
        account_from_json("wx0000000000000001", &json!({"secret": "s1"})).unwrap()
    }

    #[test]
    fn a_whole_definition_takes_the_file_rules_and_names_fields() {
        let a = base();
        assert_eq!(a.appid.as_str(), "wx0000000000000001");
        assert_eq!(a.name, "wx0000000000000001");
        let e = account_from_json(
            "wx0000000000000001",
            &json!({"secret": "s", "jssdk_domains": ["https://x"]}),
        )
        .unwrap_err();
        assert_eq!(e.key, "jssdk_domains[0]");
        let e =
            account_from_json("wx0000000000000001", &json!({"secret_env": "HOME"})).unwrap_err();
        assert_eq!(e.key, "secret_env");
        let e = account_from_json(
            "wx0000000000000001",
            &json!({"secret": "s", "push": {"mode": "plain", "token_file": "/etc/passwd"}}),
        )
        .unwrap_err();
        assert_eq!(e.key, "push.token_file");
        let e = account_from_json("wx0000000000000001", &json!({"secret": "s", "colour": 1}))
            .unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        let e = account_from_json("wx0000000000000001", &json!({})).unwrap_err();
        assert!(e.key.starts_with("secret"), "{e}");
        let e = account_from_json(
            "wx0000000000000001",
            &json!({"appid": "wx0000000000000002", "secret": "s"}),
        )
        .unwrap_err();
        assert_eq!(e.key, "appid");
        let e = account_from_json("nope", &json!({"secret": "s"})).unwrap_err();
        assert_eq!(e.key, "appid");
    }

    #[test]
    fn a_change_replaces_only_the_fields_given() {
        let a = base();
        let b = patch_account(&a, &json!({"secret": "s2", "token_mode": "classic"})).unwrap();
        assert_eq!(b.secret.expose_secret(), "s2");
        assert_eq!(b.token_mode, TokenMode::Classic);
        assert_eq!(b.tickets, a.tickets);
        let c = patch_account(&b, &json!({"push": {"mode": "plain", "token": "t"}})).unwrap();
        assert!(c.push.is_some());
        let d = patch_account(&c, &json!({"push": null})).unwrap();
        assert!(d.push.is_none());
        let e = patch_account(&c, &json!({"kind": "website"})).unwrap_err();
        assert_eq!(e.key, "push");
        let e = patch_account(&a, &json!({"appid": "wx0000000000000009"})).unwrap_err();
        assert_eq!(e.key, "appid");
        let e = patch_account(&a, &json!({"secret": " "})).unwrap_err();
        assert_eq!(e.key, "secret");
        let e = patch_account(&a, &json!({"oauth_return_origins": ["ftp://x"]})).unwrap_err();
        assert_eq!(e.key, "oauth_return_origins[0]");
    }
}
