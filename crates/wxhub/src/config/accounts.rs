//! `[[accounts]]` and `[[clients]]`: the WeChat accounts the hub keeps, and
//! the business servers that may use them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use wx_api::{AppId, AppSecret};

use super::components::Via;
use super::limits::{ClientLimits, Limits, RawClientLimits};
use super::push::{PushConfig, RawPush};
use super::secret::{self, Given};
use super::{ConfigError, parse_origin, parse_sha256};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
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
    push: Option<RawPush>,
    /// Authorized to this third-party platform: no secret of its own.
    component: Option<String>,
    /// With `component`: revoked by its administrator then.
    revoked_at: Option<i64>,
    #[serde(default)]
    paused: bool,
}

fn default_tickets() -> Vec<TicketKind> {
    vec![TicketKind::Jsapi]
}

/// One WeChat account served by this hub.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The AppID.
    pub appid: AppId,
    /// The AppSecret, from the environment, a file or (discouraged) inline.
    pub secret: AppSecret,
    /// Display name in the console.
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
    /// The account's message URL (`/push/{appid}`) and its subscribers.
    pub push: Option<PushConfig>,
    /// How its access token is obtained: its own secret, or as a
    /// third-party platform, or through one.
    pub via: Via,
    /// An operator stopped its fetches (`paused = true`): nothing is
    /// fetched, scheduled, reported or missing, and what the store holds is
    /// served while it is valid.
    pub paused: bool,
}

impl RawAccount {
    /// Validates `accounts[i]`, resolving its secret.
    pub(crate) fn validate(
        self,
        i: usize,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AccountConfig, ConfigError> {
        self.validate_at(&format!("accounts[{i}]"), lookup)
    }

    /// Validates the account at key `at`, resolving its secret.
    pub(crate) fn validate_at(
        self,
        at: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AccountConfig, ConfigError> {
        let appid = AppId::parse(self.appid.clone())
            .map_err(|e| ConfigError::new(format!("{at}.appid"), e.to_string()))?;
        let given = Given::new(self.secret, self.secret_env, self.secret_file);
        let via = match (self.component, self.revoked_at) {
            (Some(c), revoked) => {
                let c = AppId::parse(c)
                    .map_err(|e| ConfigError::new(format!("{at}.component"), e.to_string()))?;
                match revoked {
                    Some(at) => Via::Revoked { component: c, at },
                    None => Via::Authorizer(c),
                }
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.revoked_at"),
                    "only an account authorized to a component can be revoked",
                ));
            }
            (None, None) => Via::Own,
        };
        let secret = secret::read(at, "secret", given, lookup)?;
        let secret = match (&via, secret) {
            (Via::Authorizer(_) | Via::Revoked { .. }, None) => String::new(),
            (Via::Authorizer(_) | Via::Revoked { .. }, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.secret"),
                    "an account authorized to a component has no secret of its own: its tokens come through the component",
                ));
            }
            (_, Some(s)) => s,
            (_, None) => {
                return Err(ConfigError::new(
                    format!("{at}.secret_env"),
                    "give one of secret_env, secret_file or secret",
                ));
            }
        };
        if via != Via::Own && self.kind == AccountKind::Website {
            return Err(ConfigError::new(
                format!("{at}.kind"),
                "an account authorized to a component is an official account",
            ));
        }
        check_domains(at, &self.jssdk_domains)?;
        let oauth_return_origins = check_origins(at, &self.oauth_return_origins)?;
        let push = self.push.map(|p| p.validate(at, lookup)).transpose()?;
        check_push_kind(at, self.kind, push.is_some())?;
        Ok(AccountConfig {
            name: if self.name.is_empty() {
                self.appid
            } else {
                self.name
            },
            appid,
            secret: AppSecret::new(secret),
            tickets: self.tickets,
            jssdk_domains: self.jssdk_domains,
            kind: self.kind,
            oauth_return_origins,
            push,
            paused: self.paused,
            // Authorizer tokens behave as classic tokens: every fetch mints
            // a new one and the previous dies soon after.
            token_mode: if via == Via::Own {
                self.token_mode
            } else {
                TokenMode::Classic
            },
            via,
        })
    }
}

/// JS-SDK domains are host names, not URLs.
pub(crate) fn check_domains(at: &str, domains: &[String]) -> Result<(), ConfigError> {
    for (j, d) in domains.iter().enumerate() {
        if d.contains('/') || d.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.jssdk_domains[{j}]"),
                "a host name (optionally host:port), not a URL",
            ));
        }
    }
    Ok(())
}

/// Return origins in their normal form.
pub(crate) fn check_origins(at: &str, origins: &[String]) -> Result<Vec<String>, ConfigError> {
    origins
        .iter()
        .enumerate()
        .map(|(j, o)| {
            parse_origin(o)
                .map_err(|m| ConfigError::new(format!("{at}.oauth_return_origins[{j}]"), m))
        })
        .collect()
}

/// Website apps get no pushes.
pub(crate) fn check_push_kind(
    at: &str,
    kind: AccountKind,
    has_push: bool,
) -> Result<(), ConfigError> {
    if has_push && kind == AccountKind::Website {
        return Err(ConfigError::new(
            format!("{at}.push"),
            "website apps get no message pushes",
        ));
    }
    Ok(())
}

/// Validates every account; AppIDs must be unique.
pub(crate) fn validate_accounts(
    raw: Vec<RawAccount>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<AccountConfig>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut accounts = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let account = a.validate(i, lookup)?;
        if !seen.insert(account.appid.as_str().to_string()) {
            return Err(ConfigError::new(
                format!("accounts[{i}].appid"),
                "duplicate appid",
            ));
        }
        accounts.push(account);
    }
    Ok(accounts)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    name: String,
    key_sha256: String,
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    limits: RawClientLimits,
}

/// A business server allowed to call the hub.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Shown in logs and metrics instead of the key. Shared, not copied:
    /// every request carries its client.
    pub name: Arc<str>,
    /// SHA-256 of the client key.
    pub key_sha256: [u8; 32],
    /// AppIDs it may use; `*` for all.
    pub apps: Arc<[String]>,
    /// Third-party platforms whose authorized accounts (now and later) it
    /// may use, and whose component token it may read.
    pub components: Arc<[String]>,
    /// Its rate limits.
    pub limits: ClientLimits,
}

impl ClientConfig {
    /// Whether this client may use `appid`, authorized to `component` if
    /// it is.
    pub fn may_use(&self, appid: &str, component: Option<&str>) -> bool {
        self.apps.iter().any(|a| a == "*" || a == appid)
            || component.is_some_and(|c| self.components.iter().any(|g| g == c))
    }
}

impl RawClient {
    /// Validates `clients[i]` against the accounts and default limits.
    pub(crate) fn validate(
        self,
        i: usize,
        accounts: &[AccountConfig],
        defaults: &Limits,
    ) -> Result<ClientConfig, ConfigError> {
        let exists = |app: &str| accounts.iter().any(|a| a.appid.as_str() == app);
        self.validate_at(&format!("clients[{i}]"), &exists, defaults)
    }

    /// Validates the client at key `at`; `exists` says whether an AppID is
    /// an account.
    pub(crate) fn validate_at(
        self,
        at: &str,
        exists: &dyn Fn(&str) -> bool,
        defaults: &Limits,
    ) -> Result<ClientConfig, ConfigError> {
        let key_sha256 = parse_sha256(&format!("{at}.key_sha256"), &self.key_sha256)?;
        if self.name.is_empty() {
            return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
        }
        for (j, app) in self.apps.iter().enumerate() {
            if app != "*" && !exists(app) {
                return Err(ConfigError::new(
                    format!("{at}.apps[{j}]"),
                    format!("{app} is not a configured account"),
                ));
            }
        }
        for (j, c) in self.components.iter().enumerate() {
            AppId::parse(c.clone())
                .map_err(|e| ConfigError::new(format!("{at}.components[{j}]"), e.to_string()))?;
        }
        Ok(ClientConfig {
            name: self.name.into(),
            key_sha256,
            apps: self.apps.into(),
            components: self.components.into(),
            limits: self.limits.validate(&format!("{at}.limits"), defaults)?,
        })
    }
}
