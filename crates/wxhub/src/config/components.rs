//! `[[components]]`: third-party platforms (第三方平台) whose tokens the hub
//! keeps, and the defaults for the accounts authorized to them
//! (`component-platform.md`, docs/README "Third-party platform").
//!
//! A component becomes an account of its own kind ([`Via::Component`]): its
//! access-token slot holds the `component_access_token`, fetched with the
//! newest stored verify ticket. Each account authorized to it is an account
//! of kind [`Via::Authorizer`], whose access-token slot is fetched through
//! `api_authorizer_token` with its stored refresh token. Both go through the
//! same refresh machinery as every account.

use std::path::PathBuf;

use serde::Deserialize;
use wx_api::{AppId, AppSecret, EncodingAesKey, PushToken};

use super::ConfigError;
use super::accounts::{
    AccountConfig, AccountKind, TicketKind, TokenMode, check_domains, check_origins,
};
use super::secret::{self, Given};

/// How an account's access token is obtained.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Via {
    /// With its own AppSecret (`/cgi-bin/token` or `/cgi-bin/stable_token`).
    #[default]
    Own,
    /// It is a third-party platform: its slot holds the
    /// `component_access_token` (`api_component_token` with the stored
    /// verify ticket). Never served through `/v1/apps/{appid}/…`.
    Component,
    /// Authorized to this third-party platform: `api_authorizer_token` with
    /// the account's stored refresh token and the component's token.
    Authorizer(AppId),
    /// Was authorized to this platform until its administrator revoked it
    /// (at this Unix time): nothing is refreshed, and the token API answers
    /// `authorization_revoked`. A later `authorized` event brings it back.
    Revoked {
        /// The platform.
        component: AppId,
        /// When the hub heard of the revocation.
        at: i64,
    },
}

impl Via {
    /// The component an authorized (or revoked) account belongs to.
    pub fn component(&self) -> Option<&AppId> {
        match self {
            Via::Authorizer(c) | Via::Revoked { component: c, .. } => Some(c),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    appid: String,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    name: String,
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    encoding_aes_key: Option<String>,
    encoding_aes_key_env: Option<String>,
    encoding_aes_key_file: Option<PathBuf>,
    previous_encoding_aes_key: Option<String>,
    previous_encoding_aes_key_env: Option<String>,
    previous_encoding_aes_key_file: Option<PathBuf>,
    previous_key_until: Option<i64>,
    #[serde(default)]
    return_origins: Vec<String>,
    #[serde(default = "default_tickets")]
    tickets: Vec<TicketKind>,
    #[serde(default)]
    jssdk_domains: Vec<String>,
    #[serde(default)]
    oauth_return_origins: Vec<String>,
    push: Option<super::push::RawPush>,
}

fn default_tickets() -> Vec<TicketKind> {
    vec![TicketKind::Jsapi]
}

/// One third-party platform.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    /// The component AppID.
    pub appid: AppId,
    /// The component AppSecret.
    pub secret: AppSecret,
    /// Shown in the console and status.
    pub name: String,
    /// 消息校验Token: signs the pushes to the authorization-event URL.
    pub token: PushToken,
    /// 消息加解密Key.
    pub encoding_aes_key: EncodingAesKey,
    /// The key before the last change, accepted until `previous_key_until`.
    pub previous_encoding_aes_key: Option<EncodingAesKey>,
    /// Unix seconds after which the previous key is refused.
    pub previous_key_until: i64,
    /// Origins the authorization start page may send the administrator back to.
    pub return_origins: Vec<String>,
    /// Tickets kept for each authorized account.
    pub tickets: Vec<TicketKind>,
    /// JS-SDK domains of each authorized account.
    pub jssdk_domains: Vec<String>,
    /// Web-authorization return origins of each authorized account.
    pub oauth_return_origins: Vec<String>,
    /// The subscribers of every authorized account's messages, which the
    /// platform sends to its message URL (`{hub}/push/$APPID$`), encrypted
    /// with the platform's Token and key. `None`: the hub takes no pushes
    /// for its accounts.
    pub push: Option<super::PushConfig>,
}

impl ComponentConfig {
    /// The push crypto of the authorization-event URL (safe mode, the
    /// component's AppID as the trailer), with the previous key while it is
    /// accepted at `now`.
    ///
    /// # Errors
    /// A key that does not decode (checked when the configuration was read).
    pub fn crypto(&self, now: i64) -> Result<wx_api::push::PushCrypto, wx_api::push::PushError> {
        let c = wx_api::push::PushCrypto::new(
            self.token.clone(),
            self.appid.clone(),
            &self.encoding_aes_key,
        )?;
        match &self.previous_encoding_aes_key {
            Some(k) if now < self.previous_key_until => c.with_previous_key(k),
            _ => Ok(c),
        }
    }

    /// The component as an account of the credentials machinery: its one
    /// slot is the component token (classic semantics: every fetch kills the
    /// previous token after 300 s).
    pub fn as_account(&self) -> AccountConfig {
        AccountConfig {
            appid: self.appid.clone(),
            secret: self.secret.clone(),
            name: self.name.clone(),
            token_mode: TokenMode::Classic,
            tickets: Vec::new(),
            jssdk_domains: Vec::new(),
            kind: AccountKind::Official,
            oauth_return_origins: Vec::new(),
            push: None,
            via: Via::Component,
            paused: false,
        }
    }

    /// The JSON definition (as the admin API takes it) of an account
    /// authorized to this component, with its defaults.
    pub fn authorizer_definition(&self, name: &str) -> serde_json::Value {
        // No secret, no push: the tokens come through the component.
        serde_json::json!({
            "component": self.appid.as_str(),
            "name": name,
            "tickets": self.tickets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "jssdk_domains": self.jssdk_domains,
            "oauth_return_origins": self.oauth_return_origins,
        })
    }
}

fn key(
    at: &str,
    name: &str,
    given: Given,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<EncodingAesKey>, ConfigError> {
    let Some(k) = secret::read(at, name, given, lookup)? else {
        return Ok(None);
    };
    let k = EncodingAesKey::new(k);
    wx_api::push::AesKey::from_encoding_aes_key(&k).map_err(|_| {
        ConfigError::new(
            format!("{at}.{name}"),
            "an EncodingAESKey is 43 characters of base64 (the platform's 消息加解密Key)",
        )
    })?;
    Ok(Some(k))
}

impl RawComponent {
    fn validate(
        self,
        i: usize,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ComponentConfig, ConfigError> {
        let at = format!("components[{i}]");
        let appid = AppId::parse(self.appid.clone())
            .map_err(|e| ConfigError::new(format!("{at}.appid"), e.to_string()))?;
        let need = |v: Option<String>, name: &str| {
            v.ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.{name}_env"),
                    format!("give one of {name}_env, {name}_file or {name}"),
                )
            })
        };
        let secret = need(
            secret::read(
                &at,
                "secret",
                Given::new(self.secret, self.secret_env, self.secret_file),
                lookup,
            )?,
            "secret",
        )?;
        let token = need(
            secret::read(
                &at,
                "token",
                Given::new(self.token, self.token_env, self.token_file),
                lookup,
            )?,
            "token",
        )?;
        let encoding_aes_key = key(
            &at,
            "encoding_aes_key",
            Given::new(
                self.encoding_aes_key,
                self.encoding_aes_key_env,
                self.encoding_aes_key_file,
            ),
            lookup,
        )?
        .ok_or_else(|| {
            ConfigError::new(
                format!("{at}.encoding_aes_key_env"),
                "give one of encoding_aes_key_env, encoding_aes_key_file or encoding_aes_key: third-party platforms push in safe mode only",
            )
        })?;
        let previous = key(
            &at,
            "previous_encoding_aes_key",
            Given::new(
                self.previous_encoding_aes_key,
                self.previous_encoding_aes_key_env,
                self.previous_encoding_aes_key_file,
            ),
            lookup,
        )?;
        if previous.is_some() && self.previous_key_until.is_none() {
            return Err(ConfigError::new(
                format!("{at}.previous_key_until"),
                "a previous key needs the Unix time after which it is refused",
            ));
        }
        check_domains(&at, &self.jssdk_domains)?;
        let oauth_return_origins = check_origins(&at, &self.oauth_return_origins)?;
        let return_origins = self
            .return_origins
            .iter()
            .enumerate()
            .map(|(j, o)| {
                super::parse_origin(o)
                    .map_err(|m| ConfigError::new(format!("{at}.return_origins[{j}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let push = match self.push {
            Some(raw) => Some(
                raw.for_component(
                    &token,
                    encoding_aes_key.expose_secret(),
                    previous
                        .as_ref()
                        .map(|k| (k.expose_secret(), self.previous_key_until.unwrap_or(0))),
                )
                .validate(&at, lookup)?,
            ),
            None => None,
        };
        Ok(ComponentConfig {
            push,
            name: if self.name.is_empty() {
                appid.as_str().to_string()
            } else {
                self.name
            },
            appid,
            secret: AppSecret::new(secret),
            token: PushToken::new(token),
            encoding_aes_key,
            previous_encoding_aes_key: previous,
            previous_key_until: self.previous_key_until.unwrap_or(0),
            return_origins,
            tickets: self.tickets,
            jssdk_domains: self.jssdk_domains,
            oauth_return_origins,
        })
    }
}

/// Validates every component: AppIDs unique, and none is also an account.
pub(crate) fn validate_components(
    raw: Vec<RawComponent>,
    accounts: &[AccountConfig],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ComponentConfig>, ConfigError> {
    let mut out: Vec<ComponentConfig> = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let c = c.validate(i, lookup)?;
        if out.iter().any(|o| o.appid == c.appid) || accounts.iter().any(|a| a.appid == c.appid) {
            return Err(ConfigError::new(
                format!("components[{i}].appid"),
                "duplicate appid (a component is not also an account)",
            ));
        }
        out.push(c);
    }
    for (i, a) in accounts.iter().enumerate() {
        if let Some(c) = a.via.component()
            && !out.iter().any(|o| &o.appid == c)
        {
            return Err(ConfigError::new(
                format!("accounts[{i}].component"),
                format!("{} is not a configured component", c.as_str()),
            ));
        }
    }
    Ok(out)
}
