//! The WeChat Official Account protocol as a library: typed endpoints, errcodes and what to do
//! about them, OAuth URLs, the JS-SDK signature, message-push crypto, and one async client.
//!
//! # Layout
//!
//! | Module | Job |
//! |---|---|
//! | [`secret`] | `secret_type!` and the secret newtypes ([`AppSecret`], [`AccessToken`], …): redacted `Debug`, no `Display`, constant-time `ct_eq` |
//! | [`ids`] | [`AppId`], [`OpenId`], [`UnionId`], [`Lang`]: parsed once at the edge |
//! | [`hosts`] | [`Hosts`]: the API and open base URLs (official by default, a simulator in tests) |
//! | [`error`] | [`WxError`], [`ErrCode`] with Chinese and English explanations, and the [`Action`] policy |
//! | [`endpoint`] | one type per endpoint: build an `http::Request<Vec<u8>>`, parse an `http::Response<Vec<u8>>`; no I/O |
//! | [`oauth`] | authorize and qrconnect URL builders, [`Scope`](oauth::Scope), state and redirect URI types |
//! | [`jssdk`] | the `wx.config` signature |
//! | [`push`] | push signatures, safe-mode AES, XML parsing into typed messages, replies |
//! | [`client`] | the [`HttpClient`](client::HttpClient) trait, [`Client`], and the reqwest transport (feature `client`) |
//!
//! Protocol code does no I/O, in the manner of oauth2-rs: every endpoint is a request builder
//! plus a pure parser that decides on `errcode` before the HTTP status, so the parsers are
//! tested on bytes alone. The [`Client`] is a thin adapter that sends what the endpoints build.
//!
//! # Errors and the retry policy
//!
//! The platform answers failures with `200 OK` and `{"errcode":N,"errmsg":"…"}`. Every call
//! returns [`WxError`], and [`WxError::action`] says what to do: refresh the token and retry
//! once (40001, 40014, 42001), back off to the next minute or day (45011, 45009), fix a named
//! part of the configuration (40013, 40125, 40164 with the IP to whitelist, 40243, 89503), send
//! the user through OAuth again (40029, 40163, 48001 on `/sns/userinfo`, …), retry with
//! back-off (-1), or give up.
//!
//! # Security
//!
//! Secrets are separate types whose `Debug` prints `Name([redacted])` and that have no
//! `Display`. Errors never contain a URL (ours carry `access_token=` and `secret=` in the
//! query) or a response body: reqwest errors are stripped with `without_url()`, and decode
//! errors keep only the JSON path. The reqwest transport does not follow redirects.
//!
//! # Example
//!
//! ```no_run
//! use wx_api::{Action, AppId, AppSecret, Client, Hosts, OpenId};
//!
//! # async fn run() -> Result<(), wx_api::WxError> {
//! let client = Client::new(Hosts::default())?;
//! let appid = AppId::parse("wx2c2769f8efd9abc2")?;
//! let secret = AppSecret::new(std::env::var("WX_SECRET").unwrap_or_default());
//!
//! let token = client.fetch_stable_access_token(&appid, &secret, false).await?;
//! println!("token valid for {:?}", token.lifetime());
//!
//! let openid = OpenId::parse("o6_bmjrPTlm6_2sgVt7hMZOPfL2M")?;
//! match client.user_info(&token.access_token, &openid).await {
//!     Ok(user) => println!("follows: {}", user.subscribe),
//!     Err(e) if e.action() == Action::RefreshTokenAndRetryOnce => {
//!         // Ask the central server for a fresh token, then retry once.
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Without the network, the same endpoint is a request and a parser:
//!
//! ```
//! use wx_api::endpoint::{Endpoint, token::GetAccessToken};
//! use wx_api::{AppId, AppSecret, ErrCode, Hosts};
//!
//! let appid = AppId::parse("wx2c2769f8efd9abc2")?;
//! let secret = AppSecret::new("secret");
//! let ep = GetAccessToken::new(&appid, &secret);
//! let request = ep.build_request(&Hosts::default())?;
//! assert_eq!(request.uri().path(), "/cgi-bin/token");
//!
//! let err = ep
//!     .parse_body(http::StatusCode::OK, br#"{"errcode":40164,"errmsg":"invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6513aa28-57d848c6-68a55827"}"#)
//!     .unwrap_err();
//! assert_eq!(err.errcode(), Some(ErrCode::IpNotInWhitelist));
//! assert_eq!(err.rid(), Some("6513aa28-57d848c6-68a55827"));
//! # Ok::<(), wx_api::WxError>(())
//! ```
//!
//! # Fuzzing
//!
//! `fuzz/` at the workspace root (its own cargo workspace) has cargo-fuzz targets for push XML
//! parsing and safe-mode decryption; see this crate's README.

#![warn(missing_docs)]

pub mod client;
pub mod endpoint;
pub mod error;
pub mod hosts;
pub mod ids;
pub mod jssdk;
pub mod oauth;
pub mod push;
pub mod secret;
mod serde_util;

pub use client::Client;
pub use error::{Action, BackOffUntil, ConfigPart, ErrCode, WxError};
pub use hosts::Hosts;
pub use ids::{AppId, Lang, OpenId, UnionId};
pub use secret::{
    AccessToken, AppSecret, CardTicket, ClientKey, EncodingAesKey, JsapiTicket, OAuthCode,
    PushToken, RefreshToken, UserAccessToken,
};

/// Re-exports used by [`secret_type!`] so that crates using the macro need no direct
/// dependency on them.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use subtle;
    pub use zeroize;
}
