//! Configuration: a TOML file, then `WXHUB__SECTION__KEY` environment
//! overrides, then validation. Every error names the key it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wx_api::{AppId, AppSecret};

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

/// Which endpoint fetches an account's access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token`: shared safely with other systems.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every fetch kills the previous token 300 s later.
    Classic,
}

impl TokenMode {
    /// `stable` or `classic`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Stable => "stable",
            TokenMode::Classic => "classic",
        }
    }
}

/// Ticket types kept fresh per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketKind {
    /// JS-SDK `jsapi_ticket`.
    Jsapi,
    /// Card API ticket.
    WxCard,
}

impl TicketKind {
    /// `jsapi` or `wx_card`.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketKind::Jsapi => "jsapi",
            TicketKind::WxCard => "wx_card",
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
    store: RawStore,
    #[serde(default)]
    upstream: Upstream,
    #[serde(default)]
    refresh: RefreshSettings,
    #[serde(default)]
    oauth: RawOAuth,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    clients: Vec<RawClient>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8780".parse().expect("literal address")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_store_kind")]
    kind: String,
    #[serde(default = "default_store_path")]
    path: PathBuf,
    url: Option<String>,
    url_env: Option<String>,
    tls_ca_file: Option<PathBuf>,
    #[serde(default = "default_redis_prefix")]
    prefix: String,
    #[serde(default = "default_lease_ms")]
    lease_ms: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            kind: default_store_kind(),
            path: default_store_path(),
            url: None,
            url_env: None,
            tls_ca_file: None,
            prefix: default_redis_prefix(),
            lease_ms: default_lease_ms(),
        }
    }
}

fn default_redis_prefix() -> String {
    "wxhub".into()
}

// Long enough that a GC pause or a slow Redis does not move ownership, short
// enough that a dead owner's accounts are taken over well inside the
// 240 s refresh margin.
fn default_lease_ms() -> u64 {
    10_000
}

fn default_store_kind() -> String {
    "sqlite".into()
}

fn default_store_path() -> PathBuf {
    PathBuf::from("./wxhub.db")
}

/// Where the platform is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `https://api.weixin.qq.com`, or a simulator.
    pub api_base: String,
    /// `https://open.weixin.qq.com`, or a simulator.
    pub open_base: String,
    /// Total timeout of one upstream call, milliseconds.
    pub timeout_ms: u64,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            api_base: "https://api.weixin.qq.com".into(),
            open_base: "https://open.weixin.qq.com".into(),
            timeout_ms: 10_000,
        }
    }
}

/// When and how tokens are refreshed (token-lifecycle.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSettings {
    /// Classic mode refreshes this long before expiry (capped at half the
    /// lifetime). The default, 240 s, lands the refresh inside the old
    /// token's last 300 s, so the old token simply lives to its own expiry and
    /// a 7200 s token is replaced about every 6950 s (25 fetches in 48 h). A
    /// larger margin buys more time to retry through an outage, at the cost
    /// of more fetches; clients are then told an earlier `expires_at`.
    pub classic_margin_secs: i64,
    /// Stable mode refreshes when this much is left; must be under 300, where
    /// the platform rotates.
    pub stable_refresh_before_secs: i64,
    /// Tickets are refetched this long after they expire at the latest, and
    /// refreshes get up to this much random spread.
    pub jitter_secs: i64,
    /// Safety subtracted from the `expires_at` told to clients.
    pub client_safety_secs: i64,
    /// How often the refresher looks for due work, milliseconds.
    pub tick_ms: u64,
    /// How long a request with no valid token waits for a fetch, milliseconds.
    pub wait_for_token_ms: u64,
    /// First retry delay after an upstream failure, seconds.
    pub backoff_initial_secs: i64,
    /// Longest retry delay, seconds.
    pub backoff_max_secs: i64,
    /// Retry delay while an account is misconfigured (40013, 40125, 40164, ...).
    pub config_error_retry_secs: i64,
    /// Refreshes running at once across accounts.
    pub max_concurrent: usize,
    /// Run the background refresher. Off only where something else drives
    /// refreshes (tests on a virtual clock call `Credentials::run_due`).
    pub background: bool,
    /// A reported token is confirmed with the platform before anything is
    /// refreshed; reports of the same value within this many seconds share
    /// one confirmation.
    pub confirm_window_secs: i64,
    /// Refreshes triggered by callers (reports, the proxy), per account and
    /// credential: at least this long apart…
    pub caller_min_interval_secs: i64,
    /// …at most this many an hour…
    pub caller_max_per_hour: i64,
    /// …and this many a Beijing day (classic token fetches, ticket fetches).
    /// The default, 100, is half a test account's daily token quota (200).
    pub caller_max_per_day: i64,
    /// Forced stable-token refreshes a caller's reports may cause per
    /// Beijing day; the platform allows 20 for everything, the default 10
    /// keeps half of them for the scheduled path and for people.
    pub caller_max_forced_per_day: i64,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            classic_margin_secs: 240,
            stable_refresh_before_secs: 240,
            jitter_secs: 30,
            client_safety_secs: 30,
            tick_ms: 1000,
            wait_for_token_ms: 5000,
            backoff_initial_secs: 2,
            backoff_max_secs: 300,
            config_error_retry_secs: 300,
            max_concurrent: 16,
            background: true,
            confirm_window_secs: 30,
            caller_min_interval_secs: 60,
            caller_max_per_hour: 6,
            caller_max_per_day: 100,
            caller_max_forced_per_day: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    appid: String,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    token_mode: TokenMode,
    #[serde(default = "default_tickets")]
    tickets: Vec<TicketKind>,
    #[serde(default)]
    jssdk_domains: Vec<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: AccountKind,
    #[serde(default)]
    oauth_return_origins: Vec<String>,
}

/// What an AppID is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// An official account (公众号): web authorization inside WeChat.
    #[default]
    Official,
    /// An open-platform website app (网站应用): QR-code login.
    Website,
}

/// `[oauth]`: the web-authorization gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    public_url: Option<String>,
    state_secret: Option<String>,
    state_secret_env: Option<String>,
    state_secret_file: Option<PathBuf>,
    #[serde(default = "default_state_ttl")]
    state_ttl_secs: i64,
    #[serde(default = "default_ticket_ttl")]
    ticket_ttl_secs: i64,
    #[serde(default = "default_profile_max_age")]
    profile_max_age_secs: i64,
    #[serde(default = "default_max_pending_states")]
    max_pending_states: u32,
}

impl Default for RawOAuth {
    fn default() -> Self {
        RawOAuth {
            public_url: None,
            state_secret: None,
            state_secret_env: None,
            state_secret_file: None,
            state_ttl_secs: default_state_ttl(),
            ticket_ttl_secs: default_ticket_ttl(),
            profile_max_age_secs: default_profile_max_age(),
            max_pending_states: default_max_pending_states(),
        }
    }
}

// A busy account signs in a few people a second; 20,000 states in flight
// (each kept for the state's lifetime, 600 s by default) is far above that,
// and bounds what anonymous visitors can make the hub store per account.
fn default_max_pending_states() -> u32 {
    20_000
}

fn default_state_ttl() -> i64 {
    600
}

fn default_ticket_ttl() -> i64 {
    60
}

fn default_profile_max_age() -> i64 {
    86400
}

/// The web-authorization gateway's settings.
#[derive(Clone)]
pub struct OAuthSettings {
    /// The hub's public base URL; its host must be an OAuth domain (网页授权域名)
    /// of every account. Absent: `http://<listen address>`.
    pub public_url: Option<String>,
    /// Key for the HMAC that signs `state`.
    pub state_secret: Vec<u8>,
    /// How long a login may take from redirect to callback.
    pub state_ttl_secs: i64,
    /// How long a hand-over ticket lives.
    pub ticket_ttl_secs: i64,
    /// A stored profile older than this is fetched again.
    pub profile_max_age_secs: i64,
    /// Sign-ins in progress per account (states not yet swept): beyond
    /// this, new ones are refused with 503.
    pub max_pending_states: u32,
}

impl std::fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("public_url", &self.public_url)
            .field("state_secret", &"[redacted]")
            .field("state_ttl_secs", &self.state_ttl_secs)
            .field("ticket_ttl_secs", &self.ticket_ttl_secs)
            .field("profile_max_age_secs", &self.profile_max_age_secs)
            .field("max_pending_states", &self.max_pending_states)
            .finish()
    }
}

fn default_tickets() -> Vec<TicketKind> {
    vec![TicketKind::Jsapi]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    key_sha256: String,
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    limits: RawClientLimits,
}

/// One WeChat account served by this hub.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The AppID.
    pub appid: AppId,
    /// The AppSecret, from the environment, a file or (discouraged) inline.
    pub secret: AppSecret,
    /// Display name on the status page.
    pub name: String,
    /// Stable (default) or classic.
    pub token_mode: TokenMode,
    /// Tickets kept fresh.
    pub tickets: Vec<TicketKind>,
    /// Hosts whose pages may get a JS-SDK signature.
    pub jssdk_domains: Vec<String>,
    /// Official account or website app.
    pub kind: AccountKind,
    /// Origins (`scheme://host[:port]`) that web authorization may return to.
    pub oauth_return_origins: Vec<String>,
}

/// A business server allowed to call the hub.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Shown in logs and metrics instead of the key. Shared, not copied:
    /// every request carries its client.
    pub name: std::sync::Arc<str>,
    /// SHA-256 of the client key.
    pub key_sha256: [u8; 32],
    /// AppIDs it may use; `*` for all.
    pub apps: std::sync::Arc<[String]>,
    /// Its rate limits.
    pub limits: ClientLimits,
}

impl ClientConfig {
    /// Whether this client may use `appid`.
    pub fn may_use(&self, appid: &str) -> bool {
        self.apps.iter().any(|a| a == "*" || a == appid)
    }
}

/// Storage backend.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// An embedded SQLite file.
    Sqlite {
        /// Path of the database file.
        path: PathBuf,
    },
    /// A Redis server shared by several instances.
    Redis {
        /// `redis://[:password@]host:port[/db]`; may hold a password, so
        /// it is never logged.
        url: RedisUrl,
        /// Prefix of every key and channel, so several hubs (or test runs)
        /// can share one Redis.
        prefix: String,
        /// How long a refresh lease lasts without renewal.
        lease_ms: u64,
        /// PEM certificates to trust for `rediss://` instead of the system's
        /// and the web's roots (a private CA).
        tls_ca: Option<Pem>,
    },
}

/// PEM text, shown in `Debug` by size only.
#[derive(Clone)]
pub struct Pem(pub Vec<u8>);

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

/// A Redis URL, which may hold a password.
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl([redacted])")
    }
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
    /// Accounts.
    pub accounts: Vec<AccountConfig>,
    /// Clients.
    pub clients: Vec<ClientConfig>,
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
    /// `WXHUB__*` overrides; `lookup` resolves `secret_env` names.
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
        let raw: RawConfig = tree
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new("config", e.message().to_string()))?;
        validate(raw, lookup)
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

fn validate(
    raw: RawConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let store = match raw.store.kind.as_str() {
        "sqlite" => StoreConfig::Sqlite {
            path: raw.store.path,
        },
        "redis" => {
            let url = match (&raw.store.url, &raw.store.url_env) {
                (Some(u), None) => u.clone(),
                (None, Some(name)) => lookup(name).filter(|s| !s.is_empty()).ok_or_else(|| {
                    ConfigError::new(
                        "store.url_env",
                        format!("environment variable {name} is not set"),
                    )
                })?,
                _ => {
                    return Err(ConfigError::new(
                        "store.url",
                        "a redis store needs exactly one of url or url_env",
                    ));
                }
            };
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "store.url",
                    "must start with redis:// or rediss://",
                ));
            }
            let prefix = raw.store.prefix;
            if prefix.is_empty()
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(ConfigError::new(
                    "store.prefix",
                    "letters, digits, '-', '_' and '.' only (braces would break the hash tags)",
                ));
            }
            if !(300..=600_000).contains(&raw.store.lease_ms) {
                return Err(ConfigError::new(
                    "store.lease_ms",
                    "must be between 300 and 600000",
                ));
            }
            let tls_ca = match &raw.store.tls_ca_file {
                None => None,
                Some(path) => {
                    if !url.starts_with("rediss://") {
                        return Err(ConfigError::new(
                            "store.tls_ca_file",
                            "only for rediss:// URLs",
                        ));
                    }
                    let pem = std::fs::read(path).map_err(|e| {
                        ConfigError::new("store.tls_ca_file", format!("{}: {e}", path.display()))
                    })?;
                    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                        return Err(ConfigError::new(
                            "store.tls_ca_file",
                            format!("{}: no PEM certificate in it", path.display()),
                        ));
                    }
                    Some(Pem(pem))
                }
            };
            StoreConfig::Redis {
                url: RedisUrl(url),
                prefix,
                lease_ms: raw.store.lease_ms,
                tls_ca,
            }
        }
        other => {
            return Err(ConfigError::new(
                "store.kind",
                format!("{other:?} is not a store; use \"sqlite\" or \"redis\""),
            ));
        }
    };
    for (key, url) in [
        ("upstream.api_base", &raw.upstream.api_base),
        ("upstream.open_base", &raw.upstream.open_base),
    ] {
        url::Url::parse(url).map_err(|e| ConfigError::new(key, e.to_string()))?;
    }
    let r = &raw.refresh;
    if !(0..300).contains(&r.stable_refresh_before_secs) || r.stable_refresh_before_secs < 30 {
        return Err(ConfigError::new(
            "refresh.stable_refresh_before_secs",
            "must be between 30 and 299: the platform rotates stable tokens only in their last 300 s",
        ));
    }
    for (key, v) in [
        ("refresh.classic_margin_secs", r.classic_margin_secs),
        ("refresh.backoff_initial_secs", r.backoff_initial_secs),
        ("refresh.backoff_max_secs", r.backoff_max_secs),
        ("refresh.config_error_retry_secs", r.config_error_retry_secs),
    ] {
        if v <= 0 {
            return Err(ConfigError::new(key, "must be positive"));
        }
    }
    if r.confirm_window_secs <= 0 {
        return Err(ConfigError::new(
            "refresh.confirm_window_secs",
            "must be positive",
        ));
    }
    for (key, v) in [
        (
            "refresh.caller_min_interval_secs",
            r.caller_min_interval_secs,
        ),
        ("refresh.caller_max_per_hour", r.caller_max_per_hour),
        ("refresh.caller_max_per_day", r.caller_max_per_day),
    ] {
        if v < 0 {
            return Err(ConfigError::new(key, "must not be negative"));
        }
    }
    if !(0..=20).contains(&r.caller_max_forced_per_day) {
        return Err(ConfigError::new(
            "refresh.caller_max_forced_per_day",
            "must be between 0 and 20: the platform allows 20 forced refreshes a day in all",
        ));
    }
    if r.tick_ms == 0 || r.max_concurrent == 0 {
        return Err(ConfigError::new(
            if r.tick_ms == 0 {
                "refresh.tick_ms"
            } else {
                "refresh.max_concurrent"
            },
            "must be positive",
        ));
    }
    let mut accounts = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, a) in raw.accounts.into_iter().enumerate() {
        let key = |f: &str| format!("accounts[{i}].{f}");
        let appid = AppId::parse(a.appid.clone())
            .map_err(|e| ConfigError::new(key("appid"), e.to_string()))?;
        if seen.insert(a.appid.clone(), i).is_some() {
            return Err(ConfigError::new(key("appid"), "duplicate appid"));
        }
        let sources = [
            a.secret.is_some(),
            a.secret_env.is_some(),
            a.secret_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(ConfigError::new(
                key("secret_env"),
                "give exactly one of secret_env, secret_file or secret",
            ));
        }
        let secret = if let Some(name) = &a.secret_env {
            lookup(name).filter(|s| !s.is_empty()).ok_or_else(|| {
                ConfigError::new(
                    key("secret_env"),
                    format!("environment variable {name} is not set"),
                )
            })?
        } else if let Some(path) = &a.secret_file {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    ConfigError::new(key("secret_file"), format!("{}: {e}", path.display()))
                })?
        } else {
            a.secret.clone().unwrap_or_default()
        };
        if secret.is_empty() {
            return Err(ConfigError::new(key("secret"), "is empty"));
        }
        for (j, d) in a.jssdk_domains.iter().enumerate() {
            if d.contains('/') || d.is_empty() {
                return Err(ConfigError::new(
                    format!("accounts[{i}].jssdk_domains[{j}]"),
                    "a host name (optionally host:port), not a URL",
                ));
            }
        }
        let mut origins = Vec::new();
        for (j, o) in a.oauth_return_origins.iter().enumerate() {
            origins.push(parse_origin(o).map_err(|m| {
                ConfigError::new(format!("accounts[{i}].oauth_return_origins[{j}]"), m)
            })?);
        }
        accounts.push(AccountConfig {
            name: if a.name.is_empty() {
                a.appid.clone()
            } else {
                a.name
            },
            appid,
            secret: AppSecret::new(secret),
            token_mode: a.token_mode,
            tickets: a.tickets,
            jssdk_domains: a.jssdk_domains,
            kind: a.kind,
            oauth_return_origins: origins,
        });
    }
    let limits = validate_limits(&raw.limits)?;
    let http = validate_http(&raw.http)?;
    let mut clients = Vec::new();
    for (i, c) in raw.clients.into_iter().enumerate() {
        let key_sha256 = parse_sha256(&format!("clients[{i}].key_sha256"), &c.key_sha256)?;
        if c.name.is_empty() {
            return Err(ConfigError::new(
                format!("clients[{i}].name"),
                "must not be empty",
            ));
        }
        for (j, app) in c.apps.iter().enumerate() {
            if app != "*" && !seen.contains_key(app) {
                return Err(ConfigError::new(
                    format!("clients[{i}].apps[{j}]"),
                    format!("{app} is not a configured account"),
                ));
            }
        }
        let key = |f: &str| format!("clients[{i}].limits.{f}");
        let client_limits = ClientLimits {
            proxy: match &c.limits.proxy {
                Some(r) => r.resolve(&key("proxy"))?,
                None => limits.proxy,
            },
            invalidate: match &c.limits.invalidate {
                Some(r) => r.resolve(&key("invalidate"))?,
                None => limits.invalidate,
            },
        };
        clients.push(ClientConfig {
            name: c.name.into(),
            key_sha256,
            apps: c.apps.into(),
            limits: client_limits,
        });
    }
    let o = raw.oauth;
    let sources = [
        o.state_secret.is_some(),
        o.state_secret_env.is_some(),
        o.state_secret_file.is_some(),
    ];
    let state_secret = match sources.iter().filter(|s| **s).count() {
        0 => {
            if accounts.iter().any(|a| !a.oauth_return_origins.is_empty()) {
                return Err(ConfigError::new(
                    "oauth.state_secret_env",
                    "web authorization is configured (oauth_return_origins) but no state secret is: give one of state_secret_env, state_secret_file or state_secret (32 bytes or more)",
                ));
            }
            // No account uses web authorization; any key will do.
            crate::auth::new_key().into_bytes()
        }
        1 => {
            let v = if let Some(name) = &o.state_secret_env {
                lookup(name).ok_or_else(|| {
                    ConfigError::new(
                        "oauth.state_secret_env",
                        format!("environment variable {name} is not set"),
                    )
                })?
            } else if let Some(path) = &o.state_secret_file {
                std::fs::read_to_string(path)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| {
                        ConfigError::new(
                            "oauth.state_secret_file",
                            format!("{}: {e}", path.display()),
                        )
                    })?
            } else {
                o.state_secret.clone().unwrap_or_default()
            };
            if v.len() < 32 {
                return Err(ConfigError::new(
                    "oauth.state_secret",
                    "must be at least 32 bytes",
                ));
            }
            v.into_bytes()
        }
        _ => {
            return Err(ConfigError::new(
                "oauth.state_secret_env",
                "give only one of state_secret_env, state_secret_file or state_secret",
            ));
        }
    };
    if let Some(u) = &o.public_url {
        let parsed =
            url::Url::parse(u).map_err(|e| ConfigError::new("oauth.public_url", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "oauth.public_url",
                "must be an http or https URL",
            ));
        }
    }
    for (key, v) in [
        ("oauth.state_ttl_secs", o.state_ttl_secs),
        ("oauth.ticket_ttl_secs", o.ticket_ttl_secs),
        ("oauth.profile_max_age_secs", o.profile_max_age_secs),
    ] {
        if v <= 0 {
            return Err(ConfigError::new(key, "must be positive"));
        }
    }
    let oauth = OAuthSettings {
        public_url: o.public_url.map(|u| u.trim_end_matches('/').to_string()),
        state_secret,
        state_ttl_secs: o.state_ttl_secs,
        ticket_ttl_secs: o.ticket_ttl_secs,
        profile_max_age_secs: o.profile_max_age_secs,
        max_pending_states: o.max_pending_states,
    };
    if oauth.max_pending_states == 0 {
        return Err(ConfigError::new(
            "oauth.max_pending_states",
            "must be positive",
        ));
    }
    let admin_key_sha256 = raw
        .admin_key_sha256
        .as_deref()
        .map(|h| parse_sha256("admin_key_sha256", h))
        .transpose()?;
    Ok(Config {
        listen: raw.listen,
        admin_key_sha256,
        store,
        upstream: raw.upstream,
        refresh: raw.refresh,
        oauth,
        http,
        limits,
        accounts,
        clients,
    })
}

/// `[http]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    header_read_timeout_ms: u64,
    idle_timeout_ms: u64,
    request_timeout_ms: u64,
    max_connections: usize,
    trusted_proxies: Vec<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        let d = HttpSettings::default();
        RawHttp {
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            max_connections: d.max_connections,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[http]`: what the server does about slow, idle and numerous connections,
/// and whose `X-Forwarded-For` it believes.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// A request's head must arrive within this; a client that trickles it
    /// (or never ends it) is disconnected.
    pub header_read_timeout: std::time::Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: std::time::Duration,
    /// A whole request, body and answer included, gets this long (408 after).
    pub request_timeout: std::time::Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Peers (reverse proxies, load balancers) whose `X-Forwarded-For` names
    /// the real client: per-IP limits apply to that address instead.
    pub trusted_proxies: Vec<crate::limits::Cidr>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            request_timeout: std::time::Duration::from_secs(60),
            max_connections: 4096,
            trusted_proxies: Vec::new(),
        }
    }
}

fn validate_http(raw: &RawHttp) -> Result<HttpSettings, ConfigError> {
    let ms = |key: &str, v: u64, min: u64| {
        if v < min {
            Err(ConfigError::new(key, format!("must be at least {min}")))
        } else {
            Ok(std::time::Duration::from_millis(v))
        }
    };
    if raw.max_connections == 0 {
        return Err(ConfigError::new("http.max_connections", "must be positive"));
    }
    let mut trusted_proxies = Vec::new();
    for (i, c) in raw.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(
            crate::limits::Cidr::parse(c)
                .map_err(|m| ConfigError::new(format!("http.trusted_proxies[{i}]"), m))?,
        );
    }
    Ok(HttpSettings {
        header_read_timeout: ms(
            "http.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            100,
        )?,
        idle_timeout: ms("http.idle_timeout_ms", raw.idle_timeout_ms, 100)?,
        request_timeout: ms("http.request_timeout_ms", raw.request_timeout_ms, 100)?,
        max_connections: raw.max_connections,
        trusted_proxies,
    })
}

/// A rate as written: `{ per_second = N, burst = B }` or `{ per_minute = N, burst = B }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: Option<u32>,
    per_minute: Option<u32>,
    burst: u32,
}

impl RawRate {
    fn resolve(&self, key: &str) -> Result<crate::limits::Rate, ConfigError> {
        let per_minute = match (self.per_second, self.per_minute) {
            (Some(s), None) => u64::from(s) * 60,
            (None, Some(m)) => u64::from(m),
            _ => {
                return Err(ConfigError::new(
                    key,
                    "give exactly one of per_second or per_minute",
                ));
            }
        };
        if per_minute == 0 || self.burst == 0 {
            return Err(ConfigError::new(key, "rate and burst must be positive"));
        }
        Ok(crate::limits::Rate::per_minute(per_minute, self.burst))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientLimits {
    proxy: Option<RawRate>,
    invalidate: Option<RawRate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    proxy: Option<RawRate>,
    invalidate: Option<RawRate>,
    anonymous: Option<RawRate>,
}

/// `[limits]`: the defaults every client gets, and the per-IP limit of the
/// anonymous web-authorization routes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Proxied calls per client key.
    pub proxy: crate::limits::Rate,
    /// Invalidate reports per client key (tokens and tickets together).
    pub invalidate: crate::limits::Rate,
    /// Requests to `/oauth/*` per client IP.
    pub anonymous: crate::limits::Rate,
}

impl Default for Limits {
    fn default() -> Self {
        use crate::limits::Rate;
        Limits {
            // Far above what one business server sends through a proxy to
            // a platform whose own per-API quotas are per day.
            proxy: Rate::per_minute(12_000, 400),
            // A fleet of workers that all saw one rotation reports once
            // each; a loop that reports without end is what this stops.
            invalidate: Rate::per_minute(60, 60),
            // A sign-in is two or three of these; an office behind one NAT
            // signs many people in at nine o'clock.
            anonymous: Rate::per_minute(120, 60),
        }
    }
}

fn validate_limits(raw: &RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        proxy: raw
            .proxy
            .map(|r| r.resolve("limits.proxy"))
            .transpose()?
            .unwrap_or(d.proxy),
        invalidate: raw
            .invalidate
            .map(|r| r.resolve("limits.invalidate"))
            .transpose()?
            .unwrap_or(d.invalidate),
        anonymous: raw
            .anonymous
            .map(|r| r.resolve("limits.anonymous"))
            .transpose()?
            .unwrap_or(d.anonymous),
    })
}

/// A client's rate limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Proxied calls.
    pub proxy: crate::limits::Rate,
    /// Invalidate reports.
    pub invalidate: crate::limits::Rate,
}

impl Default for ClientLimits {
    fn default() -> Self {
        let d = Limits::default();
        ClientLimits {
            proxy: d.proxy,
            invalidate: d.invalidate,
        }
    }
}

#[cfg(test)]
mod tests {
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
            url,
            prefix,
            lease_ms,
            ..
        } = &c.store
        else {
            panic!("redis store");
        };
        assert_eq!((prefix.as_str(), *lease_ms), ("wxhub", 10_000));
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
        assert_eq!(c.refresh.tick_ms, 50);
        assert_eq!(c.accounts[0].token_mode, TokenMode::Classic);
        assert_eq!(c.listen.port(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
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
                format!(
                    "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nprefix = \"a{{b}}\"\n{BASE}"
                ),
                vec![],
                "store.prefix",
            ),
            (
                format!("[store]\nkind = \"redis\"\nurl = \"redis://h\"\nlease_ms = 5\n{BASE}"),
                vec![],
                "store.lease_ms",
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
                BASE.to_string(),
                vec![("WXHUB__ACCOUNTS__3__SECRET", "x")],
                "WXHUB__ACCOUNTS__3__SECRET",
            ),
            (format!("colour = 1\n{BASE}"), vec![], "colour"),
        ];
        for (text, env, key) in cases {
            let err = load(&text, &env).expect_err(key).to_string();
            assert!(err.contains(key), "{err} should name {key}");
            assert!(!err.contains("the-secret"), "no secret in errors");
        }
    }
}
