//! Global access tokens: `GET /cgi-bin/token` and `POST /cgi-bin/stable_token`.
//!
//! Every classic fetch issues a new token and gives the previous one 300 s more; stable
//! tokens are shared and come back unchanged while more than 300 s remain. Which one to use
//! and when to refresh is the central server's business (see `docs/lifecycle.md`);
//! this module only speaks the protocol.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Endpoint, get, parse_json, post_json};
use crate::error::WxError;
use crate::hosts::Hosts;
use crate::ids::AppId;
use crate::secret::{AccessToken, AppSecret};
use crate::serde_util::lenient_u64;

/// A global access token and its lifetime, as both token endpoints return it.
#[derive(Debug, Deserialize)]
pub struct AccessTokenResponse {
    /// The token.
    pub access_token: AccessToken,
    /// Seconds of validity from the moment of the response (for stable tokens: what remains).
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
}

impl AccessTokenResponse {
    /// `expires_in` as a duration.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.expires_in)
    }
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`: a new token on every
/// call (the previous one dies 300 s later).
#[derive(Debug)]
pub struct GetAccessToken<'a> {
    appid: &'a AppId,
    secret: &'a AppSecret,
}

impl<'a> GetAccessToken<'a> {
    /// The request for one account.
    pub fn new(appid: &'a AppId, secret: &'a AppSecret) -> Self {
        Self { appid, secret }
    }
}

impl Endpoint for GetAccessToken<'_> {
    type Output = AccessTokenResponse;
    const PATH: &'static str = "/cgi-bin/token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        get(hosts.api_url(
            Self::PATH,
            &[
                ("grant_type", "client_credential"),
                ("appid", self.appid.as_str()),
                ("secret", self.secret.expose_secret()),
            ],
        ))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `POST /cgi-bin/stable_token` with a JSON body (a form body gets `41002`).
#[derive(Debug)]
pub struct GetStableAccessToken<'a> {
    appid: &'a AppId,
    secret: &'a AppSecret,
    force_refresh: bool,
}

impl<'a> GetStableAccessToken<'a> {
    /// A normal call: returns the current stable token while more than 300 s remain.
    pub fn new(appid: &'a AppId, secret: &'a AppSecret) -> Self {
        Self {
            appid,
            secret,
            force_refresh: false,
        }
    }

    /// Sets `force_refresh`: a new token that kills the previous one at once. Limited to 20 a
    /// day, at least 30 s apart (closer calls just return the current token).
    pub fn force_refresh(mut self, force: bool) -> Self {
        self.force_refresh = force;
        self
    }
}

#[derive(Serialize)]
struct StableTokenBody<'a> {
    grant_type: &'static str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

impl Endpoint for GetStableAccessToken<'_> {
    type Output = AccessTokenResponse;
    const PATH: &'static str = "/cgi-bin/stable_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(Self::PATH, &[]),
            &StableTokenBody {
                grant_type: "client_credential",
                appid: self.appid.as_str(),
                secret: self.secret.expose_secret(),
                force_refresh: self.force_refresh,
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Action, ConfigPart, ErrCode};

    fn appid() -> AppId {
        AppId::parse("wx2c2769f8efd9abc2").unwrap()
    }

    #[test]
    fn classic_request_shape() {
        let secret = AppSecret::new("s3cr3t");
        let req = GetAccessToken::new(&appid(), &secret)
            .build_request(&Hosts::default())
            .unwrap();
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx2c2769f8efd9abc2&secret=s3cr3t"
        );
        assert!(req.body().is_empty());
    }

    #[test]
    fn stable_request_is_json() {
        let secret = AppSecret::new("s3cr3t");
        let id = appid();
        let req = GetStableAccessToken::new(&id, &secret)
            .force_refresh(true)
            .build_request(&Hosts::default())
            .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/stable_token"
        );
        assert_eq!(
            req.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"grant_type":"client_credential","appid":"wx2c2769f8efd9abc2","secret":"s3cr3t","force_refresh":true})
        );
    }

    #[test]
    fn parses_success_and_errors() {
        let secret = AppSecret::new("x");
        let id = appid();
        let ep = GetAccessToken::new(&id, &secret);
        let ok = ep
            .parse_body(
                StatusCode::OK,
                br#"{"access_token":"84_bxCYrlRKebZuFM-004HeO7Hw9x","expires_in":7200}"#,
            )
            .unwrap();
        assert_eq!(
            ok.access_token.expose_secret(),
            "84_bxCYrlRKebZuFM-004HeO7Hw9x"
        );
        assert_eq!(ok.lifetime(), Duration::from_secs(7200));
        assert!(!format!("{ok:?}").contains("84_bx"));

        let stable = GetStableAccessToken::new(&id, &secret)
            .parse_body(StatusCode::OK, br#"{"access_token":"T","expires_in":345}"#)
            .unwrap();
        assert_eq!(stable.expires_in, 345);

        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40164,"errmsg":"invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6513aa28-57d848c6-68a55827"}"#,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::IpNotInWhitelist));
        assert_eq!(err.rid(), Some("6513aa28-57d848c6-68a55827"));
        assert_eq!(
            err.action(),
            Action::FixConfiguration(ConfigPart::IpWhitelist {
                ip: Some("1.2.3.4".parse().unwrap())
            })
        );

        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40013,"errmsg":"invalid appid"}"#,
            )
            .unwrap_err();
        assert_eq!(err.action(), Action::FixConfiguration(ConfigPart::AppId));
    }
}
