//! `[oauth]`: the web-authorization gateway.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use super::accounts::AccountConfig;
use super::secret::{self, Given};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOAuth {
    public_url: Option<String>,
    state_secret: Option<String>,
    state_secret_env: Option<String>,
    state_secret_file: Option<PathBuf>,
    state_ttl_secs: i64,
    ticket_ttl_secs: i64,
    profile_max_age_secs: i64,
    max_pending_states: u32,
}

impl Default for RawOAuth {
    fn default() -> Self {
        let d = OAuthSettings::default();
        RawOAuth {
            public_url: None,
            state_secret: None,
            state_secret_env: None,
            state_secret_file: None,
            state_ttl_secs: d.state_ttl_secs,
            ticket_ttl_secs: d.ticket_ttl_secs,
            profile_max_age_secs: d.profile_max_age_secs,
            max_pending_states: d.max_pending_states,
        }
    }
}

/// The web-authorization gateway's settings.
#[derive(Clone)]
pub struct OAuthSettings {
    /// The hub's public base URL; its host must be an OAuth domain (网页授权域名)
    /// of every account. Absent: `http://<listen address>`.
    pub public_url: Option<String>,
    /// Key for the HMAC that signs `state`.
    pub state_secret: Vec<u8>,
    /// How long a login may take from redirect to callback, seconds.
    pub state_ttl_secs: i64,
    /// How long a hand-over ticket lives, seconds.
    pub ticket_ttl_secs: i64,
    /// A stored profile older than this (seconds) is fetched again.
    pub profile_max_age_secs: i64,
    /// Sign-ins in progress per account (states not yet swept): beyond
    /// this, new ones are refused with 503.
    pub max_pending_states: u32,
    /// Whether the state secret was given (else it is random per process,
    /// and an account added at run time may not use web authorization).
    pub state_secret_given: bool,
}

impl Default for OAuthSettings {
    /// The defaults, with a fresh random state secret: fine for a single
    /// process that never restarts mid-sign-in (`wxhub dev`, tests).
    fn default() -> Self {
        OAuthSettings {
            public_url: None,
            state_secret: crate::auth::new_key().into_bytes(),
            state_ttl_secs: 600,
            ticket_ttl_secs: 60,
            profile_max_age_secs: 86400,
            // A busy account signs in a few people a second; 20,000 states
            // in flight (each kept for the state's lifetime) is far above
            // that, and bounds what anonymous visitors can make the hub
            // store per account.
            max_pending_states: 20_000,
            state_secret_given: false,
        }
    }
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

impl RawOAuth {
    pub(crate) fn validate(
        self,
        accounts: &[AccountConfig],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OAuthSettings, ConfigError> {
        let given = Given::new(
            self.state_secret,
            self.state_secret_env,
            self.state_secret_file,
        );
        let read = secret::read("oauth", "state_secret", given, lookup)?;
        let state_secret_given = read.is_some();
        let state_secret = match read {
            Some(v) => {
                if v.len() < 32 {
                    return Err(ConfigError::new(
                        "oauth.state_secret",
                        "must be at least 32 bytes",
                    ));
                }
                v.into_bytes()
            }
            None if accounts.iter().any(|a| !a.oauth_return_origins.is_empty()) => {
                return Err(ConfigError::new(
                    "oauth.state_secret_env",
                    "web authorization is configured (oauth_return_origins) but no state secret is: give one of state_secret_env, state_secret_file or state_secret (32 bytes or more)",
                ));
            }
            // No account uses web authorization; any key will do.
            None => crate::auth::new_key().into_bytes(),
        };
        if let Some(u) = &self.public_url {
            let parsed = url::Url::parse(u)
                .map_err(|e| ConfigError::new("oauth.public_url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::new(
                    "oauth.public_url",
                    "must be an http or https URL",
                ));
            }
        }
        for (key, v) in [
            ("oauth.state_ttl_secs", self.state_ttl_secs),
            ("oauth.ticket_ttl_secs", self.ticket_ttl_secs),
            ("oauth.profile_max_age_secs", self.profile_max_age_secs),
            (
                "oauth.max_pending_states",
                i64::from(self.max_pending_states),
            ),
        ] {
            if v <= 0 {
                return Err(ConfigError::new(key, "must be positive"));
            }
        }
        Ok(OAuthSettings {
            public_url: self.public_url.map(|u| u.trim_end_matches('/').to_string()),
            state_secret,
            state_ttl_secs: self.state_ttl_secs,
            ticket_ttl_secs: self.ticket_ttl_secs,
            profile_max_age_secs: self.profile_max_age_secs,
            max_pending_states: self.max_pending_states,
            state_secret_given,
        })
    }
}
