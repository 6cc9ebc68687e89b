//! The world file: accounts, people, the clock and the settings that decide
//! the platform's uncertain behaviours (`docs/platform.md` §12).

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Everything the simulator knows at start: parsed from TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Where the virtual clock starts and whether it follows the wall clock.
    #[serde(default)]
    pub clock: ClockConfig,
    /// Durations and the choices made where the platform is uncertain.
    #[serde(default)]
    pub settings: Settings,
    /// Behaviours reported by developers that the official docs deny.
    #[serde(default)]
    pub quirks: Quirks,
    /// Official accounts and website apps.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// WeChat users.
    #[serde(default)]
    pub people: Vec<Person>,
    /// Third-party platforms (第三方平台, `component-platform.md`).
    #[serde(default)]
    pub components: Vec<Component>,
}

/// `[clock]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// Unix seconds at start. Absent: the wall clock's now.
    pub start: Option<i64>,
    /// `manual`: time moves only through the control API. `wall`: time also
    /// follows the wall clock. Default: `manual` when `start` is given,
    /// `wall` otherwise, so a test world is deterministic and a dev world
    /// expires tokens like the real platform.
    pub mode: Option<ClockMode>,
}

/// How the virtual clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// Only `/_sim/clock/advance` and `/_sim/clock/set` move time.
    Manual,
    /// Time follows the wall clock, plus any advance.
    Wall,
}

/// `[settings]`: every duration and every §12 decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Lifetime of a global access token, seconds (§2.1).
    pub access_token_ttl: i64,
    /// How long a superseded classic token keeps working (§2.1, §12).
    pub token_grace_seconds: i64,
    /// How long a stable token keeps working after a forced refresh (§12: 0).
    pub stable_force_grace_seconds: i64,
    /// Stable tokens rotate when a normal call comes this close to expiry (§2.2).
    pub stable_rotate_window: i64,
    /// Forced stable refreshes allowed per day (§2.2).
    pub stable_force_daily_limit: u32,
    /// Minimum gap between forced stable refreshes, seconds (§2.2).
    pub stable_force_min_interval: i64,
    /// Lifetime of jsapi / wx_card tickets (§7.1).
    pub ticket_ttl: i64,
    /// Lifetime of an OAuth code (§5.1).
    pub code_ttl: i64,
    /// errcode for an expired code: 40029 (observed) or 42003 (documented).
    pub expired_code_errcode: i64,
    /// Lifetime of a user (sns) access token (§5.2).
    pub sns_token_ttl: i64,
    /// Lifetime of a refresh_token (§5.3).
    pub refresh_token_ttl: i64,
    /// How long the platform remembers a refresh_token after it expired:
    /// until then it answers 42002 (expired), after that 40030 (unknown).
    pub refresh_token_memory: i64,
    /// What a refusal does (§12).
    pub deny_mode: DenyMode,
    /// Resets allowed per account per month through clear_quota (§2.4).
    pub clear_quota_monthly_limit: u32,
    /// Page size of `/cgi-bin/user/get` (§6.3); small values test paging.
    pub user_get_page_size: usize,
    /// How long a push waits for the business server (§8.2), real milliseconds.
    pub push_timeout_ms: u64,
    /// Retries after the first push attempt (§12: 3).
    pub push_retries: u32,
    /// A verify ticket is accepted by `api_component_token` while younger than this.
    pub component_ticket_ttl: i64,
    /// Virtual seconds between regular verify-ticket pushes.
    pub ticket_push_interval: i64,
    /// Lifetime of a component access token.
    pub component_token_ttl: i64,
    /// How long a superseded component token keeps working.
    pub component_grace: i64,
    /// Lifetime of an authorizer access token.
    pub authorizer_token_ttl: i64,
    /// How long a superseded authorizer token keeps working.
    pub authorizer_grace: i64,
    /// Lifetime of a pre-auth code (single use).
    pub preauth_ttl: i64,
    /// Lifetime of an authorization code; the redirect's `expires_in`.
    pub auth_code_ttl: i64,
    /// An authorization code can be exchanged only once.
    pub auth_code_single_use: bool,
    /// `updateauthorized` issues a new refresh token; the old one works
    /// `authorizer_grace` more.
    pub rotate_on_update: bool,
    /// `api_component_token` calls per component per Beijing day.
    pub component_token_daily_limit: u64,
    /// `api_authorizer_token` calls per authorizer per Beijing day.
    pub authorizer_token_daily_limit: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            access_token_ttl: 7200,
            token_grace_seconds: 300,
            stable_force_grace_seconds: 0,
            stable_rotate_window: 300,
            stable_force_daily_limit: 20,
            stable_force_min_interval: 30,
            ticket_ttl: 7200,
            code_ttl: 300,
            expired_code_errcode: 40029,
            sns_token_ttl: 7200,
            refresh_token_ttl: 30 * 86400,
            refresh_token_memory: 365 * 86400,
            deny_mode: DenyMode::StateOnly,
            clear_quota_monthly_limit: 10,
            user_get_page_size: 10000,
            push_timeout_ms: 5000,
            push_retries: 3,
            component_ticket_ttl: 43200,
            ticket_push_interval: 600,
            component_token_ttl: 7200,
            component_grace: 300,
            authorizer_token_ttl: 7200,
            authorizer_grace: 300,
            preauth_ttl: 1800,
            auth_code_ttl: 3600,
            auth_code_single_use: false,
            rotate_on_update: true,
            component_token_daily_limit: 10000,
            authorizer_token_daily_limit: 2000,
        }
    }
}

/// What happens when a person refuses consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyMode {
    /// Redirect to `redirect_uri?state=STATE`, no code.
    StateOnly,
    /// Stay on a WeChat page; no redirect happens.
    NoRedirect,
}

/// `[quirks]`: behaviour the seed articles report (§12).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quirks {
    /// A snsapi_base token reads `/sns/userinfo` while the person's latest
    /// snsapi_userinfo grant to the account is younger than the
    /// refresh_token lifetime.
    pub base_userinfo_after_grant: bool,
    /// In that state `/sns/userinfo` accepts any non-empty openid.
    pub userinfo_ignores_openid: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            base_userinfo_after_grant: true,
            userinfo_ignores_openid: false,
        }
    }
}

/// `[[accounts]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The AppID.
    pub appid: String,
    /// The AppSecret.
    pub secret: String,
    /// Display name, shown on the consent page.
    #[serde(default)]
    pub name: String,
    /// `gh_…`, the ToUserName of pushes.
    #[serde(default)]
    pub original_id: String,
    /// Verified service accounts have web authorization; others get 10005.
    #[serde(default = "yes")]
    pub verified: bool,
    /// An official account or an open-platform website app (qrconnect).
    #[serde(default)]
    pub kind: AccountKind,
    /// 网页授权域名: hosts (optionally `host:port`) allowed as redirect_uri.
    #[serde(default)]
    pub oauth_domains: Vec<String>,
    /// API IP whitelist; absent or empty means no check.
    #[serde(default)]
    pub ip_whitelist: Vec<String>,
    /// Daily quota of `/cgi-bin/token` (§3: 2000).
    #[serde(default = "default_token_limit")]
    pub token_daily_limit: u64,
    /// Other daily quotas, by API path, overriding the defaults.
    #[serde(default)]
    pub daily_limits: BTreeMap<String, u64>,
    /// Per-minute limits, by API path, overriding the defaults.
    #[serde(default)]
    pub minute_limits: BTreeMap<String, u64>,
    /// The AppSecret is frozen: token calls answer 40243.
    #[serde(default)]
    pub secret_frozen: bool,
    /// Bound to an open-platform account, so unionids are returned.
    #[serde(default = "yes")]
    pub unionid_bound: bool,
    /// Where pushes are POSTed.
    #[serde(default)]
    pub push_url: Option<String>,
    /// The push Token used in signatures.
    #[serde(default)]
    pub push_token: Option<String>,
    /// EncodingAESKey, 43 characters, for safe and compat mode.
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    /// plain, safe or compat.
    #[serde(default)]
    pub push_mode: PushMode,
    /// The account is restricted: `api_authorizer_token` answers 50002.
    #[serde(default)]
    pub restricted: bool,
}

/// `[[components]]`: a third-party platform (第三方平台). Authorizers are
/// ordinary `[[accounts]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The component appid.
    pub appid: String,
    /// The component secret.
    pub secret: String,
    /// 消息校验Token: signs every push of the platform.
    pub token: String,
    /// 消息加解密Key, 43 characters.
    pub encoding_aes_key: String,
    /// Shown on the authorization page.
    #[serde(default)]
    pub name: String,
    /// 授权事件接收URL: tickets and authorization events; none pushed when absent.
    #[serde(default)]
    pub event_url: Option<String>,
    /// 消息与事件接收URL of authorized accounts; `$APPID$` is replaced by the
    /// authorizer appid.
    #[serde(default)]
    pub message_url: Option<String>,
    /// 授权发起页域名: hosts (or `host:port`) allowed in the authorization
    /// page's redirect_uri.
    #[serde(default)]
    pub auth_domains: Vec<String>,
    /// 公众号开发域名: redirect_uri hosts for web authorization on behalf.
    #[serde(default)]
    pub oauth_domains: Vec<String>,
    /// 全网发布: when false only `test_accounts` may authorize.
    #[serde(default = "yes")]
    pub published: bool,
    /// 授权测试公众号列表.
    #[serde(default)]
    pub test_accounts: Vec<String>,
    /// API IP whitelist; absent or empty means no check (61004 otherwise).
    #[serde(default)]
    pub ip_whitelist: Vec<String>,
    /// The regular verify-ticket pusher runs from the start.
    #[serde(default = "yes")]
    pub ticket_push: bool,
}

fn yes() -> bool {
    true
}

fn default_token_limit() -> u64 {
    2000
}

/// What an AppID belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// 公众号: `/connect/oauth2/authorize`.
    #[default]
    Official,
    /// 网站应用: `/connect/qrconnect`, scope snsapi_login.
    Website,
}

/// Message push encryption mode (§8.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// 明文模式.
    #[default]
    Plain,
    /// 安全模式: only `<Encrypt>`.
    Safe,
    /// 兼容模式: plaintext fields and `<Encrypt>`.
    Compat,
}

/// `[[people]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// Stable identifier used by the control API and `wxsim_person`.
    pub id: String,
    /// Nickname returned by `/sns/userinfo`.
    #[serde(default)]
    pub nickname: String,
    /// Avatar URL.
    #[serde(default)]
    pub headimgurl: String,
    /// The person's unionid, returned where the account is bound.
    #[serde(default)]
    pub unionid: Option<String>,
    /// AppIDs the person follows at start.
    #[serde(default)]
    pub follows: Vec<String>,
    /// Scripted decision on the consent page.
    #[serde(default)]
    pub consent: Consent,
    /// Snapshot (快照页) user: virtual openid, `is_snapshotuser: 1`.
    #[serde(default)]
    pub snapshot: bool,
}

/// A person's scripted answer to `snsapi_userinfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Agrees at once.
    #[default]
    Allow,
    /// Refuses at once.
    Deny,
    /// Shows a consent page with Allow and Deny buttons.
    Ask,
}

/// A world file that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// TOML syntax or an unknown or mistyped key.
    #[error("world file: {0}")]
    Parse(String),
    /// A value that parses but makes no sense.
    #[error("world file: {field}: {message}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `accounts[1].encoding_aes_key`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl World {
    /// Parses and validates a world file.
    ///
    /// # Errors
    /// [`WorldError`] naming the offending key.
    pub fn from_toml_str(text: &str) -> Result<World, WorldError> {
        let world: World = toml::from_str(text).map_err(|e| WorldError::Parse(e.to_string()))?;
        world.validate()?;
        Ok(world)
    }

    /// Renders the world as TOML, e.g. to print the demo world at start.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render world: {e}\n"))
    }

    /// Checks cross-references and formats.
    ///
    /// # Errors
    /// [`WorldError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), WorldError> {
        let invalid = |field: String, message: &str| WorldError::Invalid {
            field,
            message: message.to_string(),
        };
        let mut appids = HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            if a.appid.is_empty() {
                return Err(invalid(format!("accounts[{i}].appid"), "must not be empty"));
            }
            if !appids.insert(a.appid.as_str()) {
                return Err(invalid(format!("accounts[{i}].appid"), "duplicate appid"));
            }
            if a.secret.is_empty() {
                return Err(invalid(
                    format!("accounts[{i}].secret"),
                    "must not be empty",
                ));
            }
            if let Some(key) = &a.encoding_aes_key
                && (key.len() != 43 || !key.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(invalid(
                    format!("accounts[{i}].encoding_aes_key"),
                    "must be 43 characters of a-zA-Z0-9",
                ));
            }
            if a.push_mode != PushMode::Plain && a.encoding_aes_key.is_none() {
                return Err(invalid(
                    format!("accounts[{i}].encoding_aes_key"),
                    "required when push_mode is safe or compat",
                ));
            }
            if let Some(url) = &a.push_url
                && url::Url::parse(url).is_err()
            {
                return Err(invalid(format!("accounts[{i}].push_url"), "not a URL"));
            }
            for (j, ip) in a.ip_whitelist.iter().enumerate() {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(
                        format!("accounts[{i}].ip_whitelist[{j}]"),
                        "not an IP address",
                    ));
                }
            }
        }
        let mut ids = HashSet::new();
        for (i, p) in self.people.iter().enumerate() {
            if p.id.is_empty() {
                return Err(invalid(format!("people[{i}].id"), "must not be empty"));
            }
            if !ids.insert(p.id.as_str()) {
                return Err(invalid(format!("people[{i}].id"), "duplicate person id"));
            }
            for (j, f) in p.follows.iter().enumerate() {
                if !appids.contains(f.as_str()) {
                    return Err(invalid(
                        format!("people[{i}].follows[{j}]"),
                        "no account has this appid",
                    ));
                }
            }
        }
        self.validate_components(&appids)?;
        let s = &self.settings;
        for (name, v) in [
            ("access_token_ttl", s.access_token_ttl),
            ("ticket_ttl", s.ticket_ttl),
            ("code_ttl", s.code_ttl),
            ("sns_token_ttl", s.sns_token_ttl),
            ("refresh_token_ttl", s.refresh_token_ttl),
            ("component_ticket_ttl", s.component_ticket_ttl),
            ("ticket_push_interval", s.ticket_push_interval),
            ("component_token_ttl", s.component_token_ttl),
            ("authorizer_token_ttl", s.authorizer_token_ttl),
            ("preauth_ttl", s.preauth_ttl),
            ("auth_code_ttl", s.auth_code_ttl),
        ] {
            if v <= 0 {
                return Err(invalid(format!("settings.{name}"), "must be positive"));
            }
        }
        if s.refresh_token_memory < 0 || s.component_grace < 0 || s.authorizer_grace < 0 {
            return Err(invalid(
                "settings.refresh_token_memory, component_grace, authorizer_grace".into(),
                "must not be negative",
            ));
        }
        if s.user_get_page_size == 0 {
            return Err(invalid(
                "settings.user_get_page_size".into(),
                "must be positive",
            ));
        }
        Ok(())
    }

    fn validate_components(&self, account_appids: &HashSet<&str>) -> Result<(), WorldError> {
        let invalid = |field: String, message: &str| WorldError::Invalid {
            field,
            message: message.to_string(),
        };
        let mut seen = HashSet::new();
        for (i, c) in self.components.iter().enumerate() {
            let field = |name: &str| format!("components[{i}].{name}");
            if c.appid.is_empty() {
                return Err(invalid(field("appid"), "must not be empty"));
            }
            if !seen.insert(c.appid.as_str()) || account_appids.contains(c.appid.as_str()) {
                return Err(invalid(
                    field("appid"),
                    "duplicate appid (components and accounts share one namespace)",
                ));
            }
            if c.secret.is_empty() {
                return Err(invalid(field("secret"), "must not be empty"));
            }
            if c.token.is_empty() {
                return Err(invalid(field("token"), "must not be empty"));
            }
            if c.encoding_aes_key.len() != 43
                || !c
                    .encoding_aes_key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
            {
                return Err(invalid(
                    field("encoding_aes_key"),
                    "must be 43 characters of a-zA-Z0-9",
                ));
            }
            for (name, url) in [("event_url", &c.event_url), ("message_url", &c.message_url)] {
                if let Some(url) = url
                    && url::Url::parse(&url.replace("$APPID$", "wx")).is_err()
                {
                    return Err(invalid(field(name), "not a URL"));
                }
            }
            for (j, ip) in c.ip_whitelist.iter().enumerate() {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(
                        format!("components[{i}].ip_whitelist[{j}]"),
                        "not an IP address",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The built-in demo world: one official account with a freshly generated
    /// secret, one website app, and four people covering the consent cases.
    pub fn demo() -> World {
        let mut rng = rand::thread_rng();
        let hex = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
            (0..n)
                .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let alnum = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            (0..n)
                .map(|_| A[rng.gen_range(0..A.len())] as char)
                .collect()
        };
        let appid = format!("wx{}", hex(&mut rng, 16));
        let web_appid = format!("wx{}", hex(&mut rng, 16));
        let shop_appid = format!("wx{}", hex(&mut rng, 16));
        let component_appid = format!("wx{}", hex(&mut rng, 16));
        World {
            clock: ClockConfig::default(),
            settings: Settings::default(),
            quirks: Quirks::default(),
            accounts: vec![
                Account {
                    appid: appid.clone(),
                    secret: hex(&mut rng, 32),
                    name: "wxhub demo".into(),
                    original_id: format!("gh_{}", hex(&mut rng, 12)),
                    verified: true,
                    kind: AccountKind::Official,
                    oauth_domains: vec!["127.0.0.1".into(), "localhost".into()],
                    ip_whitelist: vec![],
                    token_daily_limit: 2000,
                    daily_limits: BTreeMap::new(),
                    minute_limits: BTreeMap::new(),
                    secret_frozen: false,
                    unionid_bound: true,
                    push_url: None,
                    push_token: Some(alnum(&mut rng, 16)),
                    encoding_aes_key: Some(alnum(&mut rng, 43)),
                    push_mode: PushMode::Safe,
                    restricted: false,
                },
                Account {
                    appid: shop_appid.clone(),
                    secret: hex(&mut rng, 32),
                    name: "wxhub demo shop (authorized to the demo platform)".into(),
                    original_id: format!("gh_{}", hex(&mut rng, 12)),
                    verified: true,
                    kind: AccountKind::Official,
                    oauth_domains: vec![],
                    ip_whitelist: vec![],
                    token_daily_limit: 2000,
                    daily_limits: BTreeMap::new(),
                    minute_limits: BTreeMap::new(),
                    secret_frozen: false,
                    unionid_bound: true,
                    push_url: None,
                    push_token: None,
                    encoding_aes_key: None,
                    push_mode: PushMode::Plain,
                    restricted: false,
                },
                Account {
                    appid: web_appid.clone(),
                    secret: hex(&mut rng, 32),
                    name: "wxhub demo website".into(),
                    original_id: String::new(),
                    verified: true,
                    kind: AccountKind::Website,
                    oauth_domains: vec!["127.0.0.1".into(), "localhost".into()],
                    ip_whitelist: vec![],
                    token_daily_limit: 2000,
                    daily_limits: BTreeMap::new(),
                    minute_limits: BTreeMap::new(),
                    secret_frozen: false,
                    unionid_bound: true,
                    push_url: None,
                    push_token: None,
                    encoding_aes_key: None,
                    push_mode: PushMode::Plain,
                    restricted: false,
                },
            ],
            people: vec![
                Person {
                    id: "alice".into(),
                    nickname: "Alice 爱丽丝".into(),
                    headimgurl: "https://thirdwx.qlogo.cn/mmopen/vi_32/alice/132".into(),
                    unionid: Some(format!("o{}", alnum(&mut rng, 27))),
                    follows: vec![appid.clone()],
                    consent: Consent::Ask,
                    snapshot: false,
                },
                Person {
                    id: "bob".into(),
                    nickname: "Bob".into(),
                    headimgurl: "https://thirdwx.qlogo.cn/mmopen/vi_32/bob/132".into(),
                    unionid: Some(format!("o{}", alnum(&mut rng, 27))),
                    follows: vec![],
                    consent: Consent::Allow,
                    snapshot: false,
                },
                Person {
                    id: "carol".into(),
                    nickname: "Carol".into(),
                    headimgurl: String::new(),
                    unionid: None,
                    follows: vec![appid],
                    consent: Consent::Deny,
                    snapshot: false,
                },
                Person {
                    id: "dave".into(),
                    nickname: "Dave".into(),
                    headimgurl: String::new(),
                    unionid: None,
                    follows: vec![],
                    consent: Consent::Allow,
                    snapshot: true,
                },
            ],
            // A third-party platform the shop account authorizes; `wxhub
            // dev` points its URLs at the hub once the hub is listening.
            components: vec![Component {
                appid: component_appid,
                secret: hex(&mut rng, 32),
                token: alnum(&mut rng, 16),
                encoding_aes_key: alnum(&mut rng, 43),
                name: "wxhub demo platform".into(),
                event_url: None,
                message_url: None,
                auth_domains: vec!["127.0.0.1".into(), "localhost".into()],
                oauth_domains: vec!["127.0.0.1".into(), "localhost".into()],
                published: true,
                test_accounts: vec![],
                ip_whitelist: vec![],
                ticket_push: true,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_world_round_trips_and_validates() {
        let demo = World::demo();
        let text = demo.to_toml_string();
        let back = World::from_toml_str(&text).expect("demo world parses");
        assert_eq!(back.accounts.len(), 3);
        assert_eq!(back.components.len(), 1);
        assert_eq!(back.people.len(), 4);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (
                "[[accounts]]\nappid='wx1'\nsecret='s'\nencoding_aes_key='short'\n",
                "accounts[0].encoding_aes_key",
            ),
            (
                "[[accounts]]\nappid='wx1'\nsecret='s'\n[[people]]\nid='a'\nfollows=['wx2']\n",
                "people[0].follows[0]",
            ),
            (
                "[[accounts]]\nappid='wx1'\nsecret='s'\n[[accounts]]\nappid='wx1'\nsecret='t'\n",
                "accounts[1].appid",
            ),
            (
                "[[accounts]]\nappid='wx1'\nsecret='s'\nip_whitelist=['nope']\n",
                "accounts[0].ip_whitelist[0]",
            ),
            (
                "[[accounts]]\nappid='wx1'\nsecret='s'\ncolour=1\n",
                "colour",
            ),
        ];
        for (text, field) in cases {
            let err = World::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
