//! `accounts[i].push`: the account's message URL (`/push/{appid}`) and the
//! business servers its messages are fanned out to; and `[push]`, the
//! delivery workers' own settings.
//!
//! Self-contained on purpose: an account's push settings are one value
//! ([`PushConfig`]) that can be stored and edited with the account.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wx_api::{EncodingAesKey, PushToken};

use super::ConfigError;
use super::secret::{self, Given};

wx_api::secret_type!(
    /// A subscriber's HMAC-SHA256 key: the hub signs every delivery with it
    /// (`X-Wxhub-Signature`), so the subscriber can tell the hub from anyone
    /// else who learns its URL.
    SubscriberSecret
);

/// How the platform sends this account's pushes (服务器配置 → 消息加解密方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// 明文模式: plaintext, checked by `signature`.
    Plain,
    /// 兼容模式: plaintext and `Encrypt` side by side; either is accepted.
    Compat,
    /// 安全模式: encrypted only; a plaintext push is refused.
    Safe,
}

impl PushMode {
    /// `plain`, `compat` or `safe`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushMode::Plain => "plain",
            PushMode::Compat => "compat",
            PushMode::Safe => "safe",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPush {
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    // Required for an account (checked, with the field's name, in
    // `validate`); a platform's section is always safe.
    mode: Option<PushMode>,
    encoding_aes_key: Option<String>,
    encoding_aes_key_env: Option<String>,
    encoding_aes_key_file: Option<PathBuf>,
    previous_encoding_aes_key: Option<String>,
    previous_encoding_aes_key_env: Option<String>,
    previous_encoding_aes_key_file: Option<PathBuf>,
    previous_key_until: Option<i64>,
    #[serde(default = "default_retry_window")]
    retry_window_secs: i64,
    #[serde(default = "default_max_backlog")]
    max_backlog: u32,
    #[serde(default = "default_profile_cache")]
    profile_cache_secs: i64,
    #[serde(default = "default_profile_rate")]
    profile_fetches_per_minute: u32,
    #[serde(default = "default_reply_deadline")]
    reply_deadline_ms: u64,
    #[serde(default = "default_skew")]
    max_clock_skew_secs: i64,
    #[serde(default)]
    subscribers: Vec<RawSubscriber>,
}

fn default_retry_window() -> i64 {
    86_400
}
fn default_max_backlog() -> u32 {
    10_000
}
fn default_profile_cache() -> i64 {
    3_600
}
fn default_profile_rate() -> u32 {
    60
}
fn default_reply_deadline() -> u64 {
    4_000
}
fn default_skew() -> i64 {
    600
}
fn default_timeout() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscriber {
    name: String,
    url: String,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    message_types: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    replier: bool,
}

/// One account's push settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The Token (令牌) configured on the platform, signing every push.
    pub token: PushToken,
    /// Plain, compatible or safe.
    pub mode: PushMode,
    /// The current EncodingAESKey (compat and safe mode).
    pub encoding_aes_key: Option<EncodingAesKey>,
    /// The key before the last change, accepted until `previous_key_until`.
    pub previous_encoding_aes_key: Option<EncodingAesKey>,
    /// Unix seconds after which the previous key is refused.
    pub previous_key_until: i64,
    /// How long a delivery is retried before it is parked.
    pub retry_window_secs: i64,
    /// The most messages waiting (queued or parked) per subscriber; past it
    /// pushes are refused with 503 so the platform retries later.
    pub max_backlog: u32,
    /// How long a follower's profile is reused.
    pub profile_cache_secs: i64,
    /// `/cgi-bin/user/info` calls per minute at most, for this account.
    pub profile_fetches_per_minute: u32,
    /// How long the replier is waited for (under the platform's 5 s).
    pub reply_deadline: Duration,
    /// Pushes whose `timestamp` is further than this from now are refused.
    pub max_clock_skew_secs: i64,
    /// Where messages go.
    pub subscribers: Vec<Subscriber>,
}

impl PushConfig {
    /// The replier, if one is configured.
    pub fn replier(&self) -> Option<&Subscriber> {
        self.subscribers.iter().find(|s| s.replier)
    }
}

/// A business server that receives an account's messages.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Its name, unique within the account: in delivery ids, logs, metrics.
    pub name: String,
    /// Where deliveries are POSTed. Operator-configured only.
    pub url: url::Url,
    /// Signs each delivery.
    pub secret: SubscriberSecret,
    /// `MsgType`s it wants (`text`, `image`, …, `event`); empty with
    /// `events` empty: everything.
    pub message_types: Vec<String>,
    /// `Event`s it wants (`subscribe`, `CLICK`, …), compared without case.
    pub events: Vec<String>,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
    /// Whether its answer is the passive reply.
    pub replier: bool,
}

impl Subscriber {
    /// Whether a message of `msg_type` (and `event`, for events) is for it.
    pub fn wants(&self, msg_type: &str, event: Option<&str>) -> bool {
        if self.message_types.is_empty() && self.events.is_empty() {
            return true;
        }
        if self.message_types.iter().any(|t| t == msg_type) {
            return true;
        }
        match event {
            Some(e) if msg_type == "event" => self.events.iter().any(|x| x.eq_ignore_ascii_case(e)),
            _ => false,
        }
    }
}

fn secret_of(
    at: &str,
    name: &str,
    given: Given,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    secret::read(at, name, given, lookup)
}

impl RawPush {
    /// A third-party platform's `push` section: its authorized accounts'
    /// messages come encrypted with the platform's Token and key (spec
    /// component §6.2), so those are the platform's, whatever the section
    /// says, and the mode is safe.
    pub(crate) fn for_component(
        mut self,
        token: &str,
        key: &str,
        previous: Option<(&str, i64)>,
    ) -> RawPush {
        self.token = Some(token.to_string());
        self.token_env = None;
        self.token_file = None;
        self.mode = Some(PushMode::Safe);
        self.encoding_aes_key = Some(key.to_string());
        self.encoding_aes_key_env = None;
        self.encoding_aes_key_file = None;
        self.previous_encoding_aes_key = previous.map(|(k, _)| k.to_string());
        self.previous_encoding_aes_key_env = None;
        self.previous_encoding_aes_key_file = None;
        self.previous_key_until = previous.map(|(_, until)| until);
        self
    }

    /// Validates `accounts[i].push`.
    pub(crate) fn validate(
        self,
        at: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PushConfig, ConfigError> {
        let at = format!("{at}.push");
        let key = |k: &str| format!("{at}.{k}");
        let mode = self
            .mode
            .ok_or_else(|| ConfigError::new(key("mode"), "required: plain, compat or safe"))?;
        let token = secret_of(
            &at,
            "token",
            Given::new(self.token, self.token_env, self.token_file),
            lookup,
        )?
        .ok_or_else(|| {
            ConfigError::new(
                key("token_env"),
                "give one of token_env, token_file or token",
            )
        })?;
        let aes = |name: &str, g: Given| -> Result<Option<EncodingAesKey>, ConfigError> {
            let Some(v) = secret_of(&at, name, g, lookup)? else {
                return Ok(None);
            };
            let k = EncodingAesKey::new(v);
            wx_api::push::AesKey::from_encoding_aes_key(&k).map_err(|_| {
                ConfigError::new(
                    key(name),
                    "must be the 43-character EncodingAESKey from the platform",
                )
            })?;
            Ok(Some(k))
        };
        let current = aes(
            "encoding_aes_key",
            Given::new(
                self.encoding_aes_key,
                self.encoding_aes_key_env,
                self.encoding_aes_key_file,
            ),
        )?;
        let previous = aes(
            "previous_encoding_aes_key",
            Given::new(
                self.previous_encoding_aes_key,
                self.previous_encoding_aes_key_env,
                self.previous_encoding_aes_key_file,
            ),
        )?;
        if mode != PushMode::Plain && current.is_none() {
            return Err(ConfigError::new(
                key("encoding_aes_key_env"),
                "compat and safe mode need the EncodingAESKey",
            ));
        }
        if previous.is_some() && self.previous_key_until.is_none() {
            return Err(ConfigError::new(
                key("previous_key_until"),
                "say until when (Unix seconds) the previous key is accepted",
            ));
        }
        for (k, v) in [
            ("retry_window_secs", self.retry_window_secs),
            ("profile_cache_secs", self.profile_cache_secs),
            ("max_clock_skew_secs", self.max_clock_skew_secs),
        ] {
            if v <= 0 {
                return Err(ConfigError::new(key(k), "must be positive"));
            }
        }
        if self.max_backlog == 0 {
            return Err(ConfigError::new(key("max_backlog"), "must be positive"));
        }
        // The platform gives up after 5 s and sends again; the answer must
        // be written and on its way before that.
        if self.reply_deadline_ms == 0 || self.reply_deadline_ms > 4_500 {
            return Err(ConfigError::new(
                key("reply_deadline_ms"),
                "must be between 1 and 4500 (the platform waits 5 s)",
            ));
        }
        let mut subscribers = Vec::with_capacity(self.subscribers.len());
        for (j, s) in self.subscribers.into_iter().enumerate() {
            let sub = s.validate(&format!("{at}.subscribers[{j}]"), lookup)?;
            if subscribers.iter().any(|o: &Subscriber| o.name == sub.name) {
                return Err(ConfigError::new(
                    format!("{at}.subscribers[{j}].name"),
                    "duplicate subscriber name",
                ));
            }
            subscribers.push(sub);
        }
        if subscribers.iter().filter(|s| s.replier).count() > 1 {
            return Err(ConfigError::new(
                key("subscribers"),
                "at most one subscriber may be the replier",
            ));
        }
        Ok(PushConfig {
            token: PushToken::new(token),
            mode,
            encoding_aes_key: current,
            previous_encoding_aes_key: previous,
            previous_key_until: self.previous_key_until.unwrap_or(0),
            retry_window_secs: self.retry_window_secs,
            max_backlog: self.max_backlog,
            profile_cache_secs: self.profile_cache_secs,
            profile_fetches_per_minute: self.profile_fetches_per_minute,
            reply_deadline: Duration::from_millis(self.reply_deadline_ms),
            max_clock_skew_secs: self.max_clock_skew_secs,
            subscribers,
        })
    }
}

impl RawSubscriber {
    fn validate(
        self,
        at: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Subscriber, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        // The name goes into delivery ids, metric labels and Redis keys.
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                key("name"),
                "1 to 64 characters of a-z, A-Z, 0-9, - and _",
            ));
        }
        let url =
            url::Url::parse(&self.url).map_err(|e| ConfigError::new(key("url"), e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::new(key("url"), "must be http or https"));
        }
        let secret = secret_of(
            at,
            "secret",
            Given::new(self.secret, self.secret_env, self.secret_file),
            lookup,
        )?
        .ok_or_else(|| {
            ConfigError::new(
                key("secret_env"),
                "give one of secret_env, secret_file or secret",
            )
        })?;
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(ConfigError::new(
                key("timeout_ms"),
                "must be between 1 and 60000",
            ));
        }
        Ok(Subscriber {
            name: self.name,
            url,
            secret: SubscriberSecret::new(secret),
            message_types: self.message_types,
            events: self.events,
            timeout: Duration::from_millis(self.timeout_ms),
            replier: self.replier,
        })
    }
}

/// `[push]`: the delivery workers of every account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// How often the workers look for due deliveries (`tick_ms`). Deliveries
    /// are also started at once when a push arrives.
    #[serde(rename = "tick_ms", with = "super::refresh::millis")]
    pub tick: Duration,
    /// Delivery attempts in flight at once, across all accounts.
    pub max_in_flight: usize,
    /// First retry after this many seconds; doubled each time, with jitter.
    pub backoff_initial_secs: i64,
    /// Retries are never further apart than this.
    pub backoff_max_secs: i64,
    /// How long a message's record (and its duplicate detection) is kept
    /// after its last delivery.
    pub keep_secs: i64,
    /// Verified pushes waiting for their write at once, across all
    /// accounts; past it a push is answered 503 `overloaded` at once (the
    /// platform sends it again) rather than held in memory.
    pub max_pending_writes: usize,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            tick: Duration::from_millis(250),
            max_in_flight: 32,
            backoff_initial_secs: 5,
            backoff_max_secs: 1800,
            keep_secs: 3 * 86_400,
            max_pending_writes: 4096,
        }
    }
}

impl PushSettings {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.tick.is_zero() {
            return Err(ConfigError::new("push.tick_ms", "must be positive"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 4096 {
            return Err(ConfigError::new(
                "push.max_in_flight",
                "must be between 1 and 4096",
            ));
        }
        if self.backoff_initial_secs <= 0 || self.backoff_max_secs < self.backoff_initial_secs {
            return Err(ConfigError::new(
                "push.backoff_max_secs",
                "backoff_initial_secs must be positive and at most backoff_max_secs",
            ));
        }
        if self.max_pending_writes == 0 || self.max_pending_writes > 1_000_000 {
            return Err(ConfigError::new(
                "push.max_pending_writes",
                "must be between 1 and 1000000",
            ));
        }
        if self.keep_secs < 86_400 {
            return Err(ConfigError::new(
                "push.keep_secs",
                "at least 86400: the platform's retries and the replay of parked deliveries need the record",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn load(push: &str) -> Result<Config, ConfigError> {
        let text = format!("[[accounts]]\nappid = \"wx1111111111111111\"\nsecret = \"s\"\n{push}");
        let lookup = |k: &str| (k == "PUSH_TOKEN").then(|| "tok-from-env".to_string());
        Config::from_toml_with_env(&text, &[], &lookup)
    }

    #[test]
    fn a_push_section_loads_with_its_defaults() {
        let c = load(&format!(
            "[accounts.push]\ntoken_env = \"PUSH_TOKEN\"\nmode = \"safe\"\nencoding_aes_key = \"{KEY}\"\n\
             [[accounts.push.subscribers]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"sub-secret\"\nevents = [\"subscribe\"]\n"
        ))
        .unwrap();
        let p = c.accounts[0].push.as_ref().unwrap();
        assert_eq!(p.token.expose_secret(), "tok-from-env");
        assert_eq!(p.retry_window_secs, 86_400);
        assert_eq!(p.reply_deadline.as_millis(), 4000);
        let s = &p.subscribers[0];
        assert!(s.wants("event", Some("SUBSCRIBE")));
        assert!(!s.wants("text", None));
        assert!(!s.wants("event", Some("CLICK")));
        // Secrets are redacted in Debug.
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("tok-from-env")
                && !debug.contains(KEY)
                && !debug.contains("sub-secret"),
            "{debug}"
        );
        assert_eq!(c.push.max_in_flight, 32);
    }

    #[test]
    fn errors_name_the_key() {
        let sub = "[[accounts.push.subscribers]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"x\"\n";
        let cases = [
            (
                "[accounts.push]\nmode = \"plain\"\n".to_string(),
                "accounts[0].push.token_env",
            ),
            (
                "[accounts.push]\ntoken = \"t\"\nmode = \"safe\"\n".to_string(),
                "accounts[0].push.encoding_aes_key_env",
            ),
            (
                "[accounts.push]\ntoken = \"t\"\nmode = \"safe\"\nencoding_aes_key = \"short\"\n"
                    .to_string(),
                "accounts[0].push.encoding_aes_key",
            ),
            (
                format!(
                    "[accounts.push]\ntoken = \"t\"\nmode = \"safe\"\nencoding_aes_key = \"{KEY}\"\nprevious_encoding_aes_key = \"{KEY}\"\n"
                ),
                "accounts[0].push.previous_key_until",
            ),
            (
                "[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\nreply_deadline_ms = 5000\n"
                    .to_string(),
                "accounts[0].push.reply_deadline_ms",
            ),
            (
                "[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\nmax_backlog = 0\n".to_string(),
                "accounts[0].push.max_backlog",
            ),
            (
                format!("[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\n{sub}{sub}"),
                "accounts[0].push.subscribers[1].name",
            ),
            (
                format!(
                    "[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\n{}",
                    sub.replace("http://127.0.0.1:9/h", "ftp://x/")
                ),
                "accounts[0].push.subscribers[0].url",
            ),
            (
                format!(
                    "[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\n{}",
                    sub.replace("crm", "c r m")
                ),
                "accounts[0].push.subscribers[0].name",
            ),
            (
                format!(
                    "[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\n{}",
                    sub.replace("secret = \"x\"\n", "")
                ),
                "accounts[0].push.subscribers[0].secret_env",
            ),
            (
                format!(
                    "[accounts.push]\ntoken = \"t\"\nmode = \"plain\"\n{}replier = true\n{}replier = true\n",
                    sub,
                    sub.replace("crm", "bot")
                ),
                "accounts[0].push.subscribers",
            ),
            (
                "[accounts.push]\ntoken = \"t\"\nmode = \"loud\"\n".to_string(),
                "accounts[0].push.mode",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text).expect_err(&text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(!e.to_string().contains(KEY), "no key in the message: {e}");
        }
        let e = Config::from_toml_with_env("[push]\nkeep_secs = 5\n", &[], &|_| None).unwrap_err();
        assert_eq!(e.key, "push.keep_secs");
    }
}
