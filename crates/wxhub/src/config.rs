//! Configuration: a TOML file, then `WXHUB__SECTION__KEY` environment
//! overrides, then validation, section by section. Every error names the
//! key it is about, and never a secret's value.
//!
//! | Module | Section |
//! |---|---|
//! | `accounts` | `[[accounts]]`, `[[clients]]` |
//! | `store` | `[store]`: SQLite or Redis |
//! | `refresh` | `[upstream]`, `[refresh]` |
//! | `oauth` | `[oauth]` |
//! | `http` | `[http]` |
//! | `limits` | `[limits]`, `clients[].limits` |
//! | `metrics` | `[metrics]` |
//! | `push` | `accounts[].push` (message URL, subscribers), `[push]` |
//! | `definition` | accounts and clients given as JSON through the admin API |
//! | `secret` | the three ways any secret is given |

mod accounts;
mod components;
pub mod definition;
mod http;
mod limits;
mod metrics;
mod oauth;
mod push;
mod refresh;
mod secret;
mod store;

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

pub use crate::seal::StoreKeys;
pub use accounts::{AccountConfig, AccountKind, ClientConfig, TicketKind, TokenMode};
pub use components::{ComponentConfig, Via};
pub use http::HttpSettings;
pub use limits::{ClientLimits, Limits};
pub use metrics::MetricsSettings;
pub use oauth::OAuthSettings;
pub use push::{PushConfig, PushMode, PushSettings, Subscriber, SubscriberSecret};
pub use refresh::{RefreshSettings, Upstream};
pub use secret::SecretSource;
pub use store::{Pem, RedisUrl, StoreConfig, StoreKind};

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted key, e.g. `accounts[0].secret_env`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    admin_key_sha256: Option<String>,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    upstream: Upstream,
    #[serde(default)]
    refresh: RefreshSettings,
    #[serde(default)]
    oauth: oauth::RawOAuth,
    #[serde(default)]
    http: http::RawHttp,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    metrics: MetricsSettings,
    #[serde(default)]
    push: PushSettings,
    #[serde(default)]
    accounts: Vec<accounts::RawAccount>,
    #[serde(default)]
    clients: Vec<accounts::RawClient>,
    #[serde(default)]
    components: Vec<components::RawComponent>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8780".parse().expect("literal address")
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// SHA-256 of the admin key, for `/` and `/v1/apps`.
    pub admin_key_sha256: Option<[u8; 32]>,
    /// Storage.
    pub store: StoreConfig,
    /// `[store]`'s encryption keys (both backends): secrets at rest.
    pub store_keys: StoreKeys,
    /// Platform hosts and timeouts.
    pub upstream: Upstream,
    /// Refresh policy.
    pub refresh: RefreshSettings,
    /// Web authorization.
    pub oauth: OAuthSettings,
    /// The HTTP server's own protection.
    pub http: HttpSettings,
    /// Default rate limits.
    pub limits: Limits,
    /// What `/metrics` says per account.
    pub metrics: MetricsSettings,
    /// The push delivery workers.
    pub push: PushSettings,
    /// Accounts.
    pub accounts: Vec<AccountConfig>,
    /// Clients.
    pub clients: Vec<ClientConfig>,
    /// Third-party platforms. Each is in `accounts` too, as an account of
    /// kind [`Via::Component`].
    pub components: Vec<ComponentConfig>,
}

impl Config {
    /// Reads `path`, applies `WXHUB__*` overrides from the process
    /// environment, resolves secrets and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key (or the file).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_toml_with_env(&text, &env, &|k| std::env::var(k).ok())
    }

    /// Parses TOML text, applies overrides and validates. `env` holds the
    /// `WXHUB__*` overrides; `lookup` resolves `*_env` names.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_toml_with_env(
        text: &str,
        env: &[(String, String)],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Value = toml::from_str(text).map_err(|e| {
            ConfigError::new(
                "config",
                e.message().to_string() + &span_hint(text, e.span()),
            )
        })?;
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix("WXHUB__") {
                apply_override(&mut tree, rest, value)?;
            }
        }
        // The path names the key of a type error ("store.kind: unknown
        // variant") that serde alone would report without one.
        let raw: RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "config".to_string()
            } else {
                key
            };
            ConfigError::new(key, e.into_inner().message().to_string())
        })?;
        raw.validate(lookup)
    }
}

impl RawConfig {
    /// Section by section, in the order a person reads the file.
    fn validate(self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (store, store_keys) = self.store.validate(lookup)?;
        self.upstream.validate()?;
        self.refresh.validate()?;
        self.push.validate()?;
        let mut accounts = accounts::validate_accounts(self.accounts, lookup)?;
        let components = components::validate_components(self.components, &accounts, lookup)?;
        accounts.extend(components.iter().map(ComponentConfig::as_account));
        let limits = self.limits.validate()?;
        let clients = self
            .clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(i, &accounts, &limits))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, c) in clients.iter().enumerate() {
            for (j, g) in c.components.iter().enumerate() {
                if !components.iter().any(|k| k.appid.as_str() == g) {
                    return Err(ConfigError::new(
                        format!("clients[{i}].components[{j}]"),
                        format!("{g} is not a configured component"),
                    ));
                }
            }
        }
        let oauth = self.oauth.validate(&accounts, lookup)?;
        let http = self.http.validate()?;
        let admin_key_sha256 = self
            .admin_key_sha256
            .as_deref()
            .map(|h| parse_sha256("admin_key_sha256", h))
            .transpose()?;
        Ok(Config {
            listen: self.listen,
            admin_key_sha256,
            store,
            store_keys,
            upstream: self.upstream,
            refresh: self.refresh,
            oauth,
            http,
            limits,
            metrics: self.metrics,
            push: self.push,
            accounts,
            clients,
            components,
        })
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].lines().count().max(1);
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

/// `WXHUB__REFRESH__TICK_MS=50` sets `refresh.tick_ms`;
/// `WXHUB__ACCOUNTS__0__SECRET_ENV=X` sets `accounts[0].secret_env`.
fn apply_override(tree: &mut toml::Value, path: &str, value: &str) -> Result<(), ConfigError> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let key = format!("WXHUB__{path}");
    let mut node = tree;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let parsed = parse_scalar(value);
        node = match node {
            toml::Value::Table(t) => {
                if last {
                    t.insert(part.clone(), parsed);
                    return Ok(());
                }
                t.entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(a) => {
                let idx: usize = part
                    .parse()
                    .map_err(|_| ConfigError::new(&key, format!("{part:?} is not an index")))?;
                let len = a.len();
                let slot = a.get_mut(idx).ok_or_else(|| {
                    ConfigError::new(&key, format!("index {idx} out of range ({len} entries)"))
                })?;
                if last {
                    *slot = parsed;
                    return Ok(());
                }
                slot
            }
            _ => return Err(ConfigError::new(&key, "not a table or array in the config")),
        };
    }
    Ok(())
}

fn parse_scalar(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if value.starts_with('[')
        && let Ok(toml::Value::Table(t)) = toml::from_str::<toml::Value>(&format!("v = {value}"))
        && let Some(v) = t.get("v")
    {
        return v.clone();
    }
    toml::Value::String(value.to_string())
}

/// `scheme://host[:port]`, lower-cased, no path: what a `return_to` URL's
/// origin is compared with.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be http or https".into());
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty()
    {
        return Err("an origin has no path, query or user: e.g. https://m.example.com".into());
    }
    origin_of(&u).ok_or_else(|| "has no host".to_string())
}

/// The origin of a URL, in the form [`parse_origin`] returns.
pub fn origin_of(u: &url::Url) -> Option<String> {
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

fn parse_sha256(key: &str, hex_str: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(hex_str.trim())
        .map_err(|_| ConfigError::new(key, "must be 64 hex characters (SHA-256 of the key)"))?;
    bytes
        .try_into()
        .map_err(|_| ConfigError::new(key, "must be 64 hex characters (SHA-256 of the key)"))
}

#[cfg(test)]
mod tests;
