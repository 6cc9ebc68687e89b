//! A small client for business servers that get WeChat credentials from a
//! wxhub central control server.
//!
//! - [`HubClient::access_token`] caches the token until shortly before the
//!   `expires_at` the hub gave, so it never holds a token the platform killed.
//! - [`HubClient::invalidate`] reports a token the platform rejected; the hub
//!   refreshes only if it is still current, once however many report it.
//! - [`HubClient::call`] wraps a WeChat API call with exactly one retry after
//!   40001, 40014 or 42001.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wxhub_client::Error> {
//! let hub = wxhub_client::HubClient::new(
//!     "http://127.0.0.1:8780",
//!     std::env::var("WXHUB_CLIENT_KEY").unwrap_or_default(),
//!     "wx0123456789abcdef",
//! )?;
//! let user = hub
//!     .call(reqwest::Method::GET, "https://api.weixin.qq.com/cgi-bin/user/info", &[("openid", "o6_bm...")], None)
//!     .await?;
//! println!("{user}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Errors of the client. None of them contains a token or the client key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The hub answered with an error (`{"error":{"code","message"}}`).
    #[error("wxhub {status}: {code}: {message}")]
    Hub {
        /// HTTP status.
        status: u16,
        /// The hub's error code.
        code: String,
        /// The hub's message.
        message: String,
    },
    /// The hub or the platform could not be reached.
    #[error("transport: {0}")]
    Transport(String),
    /// The platform answered a non-zero errcode (after the one retry, for token errors).
    #[error("WeChat errcode {errcode}: {errmsg}")]
    WeChat {
        /// errcode.
        errcode: i64,
        /// errmsg.
        errmsg: String,
    },
    /// A body that is not the expected JSON.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// A credential and when to stop using it.
#[derive(Clone)]
struct Cached {
    value: String,
    expires_at: i64,
}

type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A client for one account on one hub.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: String,
    key: String,
    appid: String,
    cache: Arc<Mutex<Option<Cached>>>,
    now: Now,
    margin: i64,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base)
            .field("appid", &self.appid)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const TOKEN_ERRORS: [i64; 3] = [40001, 40014, 42001];

impl HubClient {
    /// A client for `appid` on the hub at `hub_url`.
    ///
    /// # Errors
    /// [`Error::Transport`] if the HTTP client cannot be built.
    pub fn new(
        hub_url: &str,
        client_key: impl Into<String>,
        appid: &str,
    ) -> Result<HubClient, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(HubClient {
            http,
            base: hub_url.trim_end_matches('/').to_string(),
            key: client_key.into(),
            appid: appid.to_string(),
            cache: Arc::new(Mutex::new(None)),
            now: Arc::new(system_now),
            margin: 10,
        })
    }

    /// Uses another clock (tests on a virtual clock).
    pub fn with_clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> HubClient {
        self.now = Arc::new(now);
        self
    }

    /// Stops using a cached token this many seconds before its `expires_at` (default 10).
    pub fn with_margin(mut self, seconds: i64) -> HubClient {
        self.margin = seconds;
        self
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v1/apps/{}/{tail}", self.base, self.appid)
    }

    async fn hub(&self, req: reqwest::RequestBuilder) -> Result<Value, Error> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| Error::Decode(e.without_url().to_string()))?;
        if status >= 400 {
            return Err(Error::Hub {
                status,
                code: body["error"]["code"].as_str().unwrap_or("").to_string(),
                message: body["error"]["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(body)
    }

    fn remember(&self, body: &Value) -> Result<String, Error> {
        let value = body["access_token"]
            .as_str()
            .ok_or_else(|| Error::Decode("no access_token in the hub's answer".into()))?
            .to_string();
        let expires_at = body["expires_at"]
            .as_i64()
            .ok_or_else(|| Error::Decode("no expires_at in the hub's answer".into()))?;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            value: value.clone(),
            expires_at,
        });
        Ok(value)
    }

    /// The access token: cached until `margin` seconds before the hub's
    /// `expires_at`, then asked again.
    ///
    /// # Errors
    /// [`Error::Hub`] (e.g. 503 while the hub cannot fetch), [`Error::Transport`].
    pub async fn access_token(&self) -> Result<String, Error> {
        let now = (self.now)();
        if let Some(c) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone()
            && now < c.expires_at - self.margin
        {
            return Ok(c.value);
        }
        let body = self.hub(self.http.get(self.url("access_token"))).await?;
        self.remember(&body)
    }

    /// Reports a token the platform rejected and returns the one to use now.
    ///
    /// # Errors
    /// As [`HubClient::access_token`].
    pub async fn invalidate(&self, failed: &str) -> Result<String, Error> {
        let body = self
            .hub(
                self.http
                    .post(self.url("access_token/invalidate"))
                    .json(&serde_json::json!({ "access_token": failed })),
            )
            .await?;
        self.remember(&body)
    }

    /// Calls a WeChat API at `url` with the token in the query; on 40001,
    /// 40014 or 42001 reports the token and retries exactly once.
    ///
    /// # Errors
    /// [`Error::WeChat`] for any other errcode (or a second token error).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let mut token = self.access_token().await?;
        let mut retried = false;
        loop {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("access_token", &token));
            let mut req = self.http.request(method.clone(), url).query(&q);
            if let Some(b) = body {
                req = req.json(b);
            }
            let v: Value = req
                .send()
                .await
                .map_err(|e| Error::Transport(e.without_url().to_string()))?
                .json()
                .await
                .map_err(|e| Error::Decode(e.without_url().to_string()))?;
            let errcode = v["errcode"].as_i64().unwrap_or(0);
            if errcode == 0 {
                return Ok(v);
            }
            if !retried && TOKEN_ERRORS.contains(&errcode) {
                retried = true;
                token = self.invalidate(&token).await?;
                continue;
            }
            return Err(Error::WeChat {
                errcode,
                errmsg: v["errmsg"].as_str().unwrap_or("").to_string(),
            });
        }
    }
}
