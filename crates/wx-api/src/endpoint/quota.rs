//! Quota management: resetting the day's counters and reading one API's quota.
//!
//! Resets (`clear_quota` and `clear_quota/v2` together) are limited to 10 a month per
//! account; the 11th gets `48006`.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Endpoint, parse_ack, parse_json, post_json};
use crate::error::WxError;
use crate::hosts::Hosts;
use crate::ids::AppId;
use crate::secret::{AccessToken, AppSecret};
use crate::serde_util::lenient_u64;

/// `POST /cgi-bin/clear_quota?access_token=…` with `{"appid"}`: resets every API's daily
/// counter for the account.
#[derive(Debug)]
pub struct ClearQuota<'a> {
    access_token: &'a AccessToken,
    appid: &'a AppId,
}

impl<'a> ClearQuota<'a> {
    /// The request; `appid` must be the token's own account (else `40013`).
    pub fn new(access_token: &'a AccessToken, appid: &'a AppId) -> Self {
        Self {
            access_token,
            appid,
        }
    }
}

#[derive(Serialize)]
struct AppIdBody<'a> {
    appid: &'a str,
}

impl Endpoint for ClearQuota<'_> {
    type Output = ();
    const PATH: &'static str = "/cgi-bin/clear_quota";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(
                Self::PATH,
                &[("access_token", self.access_token.expose_secret())],
            ),
            &AppIdBody {
                appid: self.appid.as_str(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<(), WxError> {
        parse_ack(Self::PATH, status, body)
    }
}

/// `POST /cgi-bin/clear_quota/v2`: the same reset, authenticated by AppSecret, for when the
/// token endpoint's own quota is what ran out.
#[derive(Debug)]
pub struct ClearQuotaBySecret<'a> {
    appid: &'a AppId,
    secret: &'a AppSecret,
}

impl<'a> ClearQuotaBySecret<'a> {
    /// The request for one account.
    pub fn new(appid: &'a AppId, secret: &'a AppSecret) -> Self {
        Self { appid, secret }
    }
}

#[derive(Serialize)]
struct SecretBody<'a> {
    appid: &'a str,
    appsecret: &'a str,
}

impl Endpoint for ClearQuotaBySecret<'_> {
    type Output = ();
    const PATH: &'static str = "/cgi-bin/clear_quota/v2";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        // One official page says these are URL parameters, another lists them in the body.
        // Sending both satisfies either reading; the secret goes to the same host either way.
        let (appid, appsecret) = (self.appid.as_str(), self.secret.expose_secret());
        post_json(
            hosts.api_url(Self::PATH, &[("appid", appid), ("appsecret", appsecret)]),
            &SecretBody { appid, appsecret },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<(), WxError> {
        parse_ack(Self::PATH, status, body)
    }
}

/// One API's daily quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ApiQuota {
    /// Calls allowed per day.
    #[serde(deserialize_with = "lenient_u64")]
    pub daily_limit: u64,
    /// Calls made today.
    #[serde(deserialize_with = "lenient_u64")]
    pub used: u64,
    /// Calls left today.
    #[serde(deserialize_with = "lenient_u64")]
    pub remain: u64,
}

#[derive(Deserialize)]
struct QuotaBody {
    quota: ApiQuota,
}

#[derive(Serialize)]
struct CgiPathBody<'a> {
    cgi_path: &'a str,
}

/// Checks a `cgi_path` client-side: the platform answers `76003` to anything that is not an
/// absolute API path.
fn check_cgi_path(path: &str) -> Result<(), WxError> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.contains(['?', '#'])
        && path.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(WxError::invalid_input(
            "cgi_path must be an API path such as /cgi-bin/token",
        ))
    }
}

/// `POST /cgi-bin/openapi/quota/get?access_token=…` with `{"cgi_path"}`.
#[derive(Debug)]
pub struct GetApiQuota<'a> {
    access_token: &'a AccessToken,
    cgi_path: &'a str,
}

impl<'a> GetApiQuota<'a> {
    /// The request for one API path, e.g. `/cgi-bin/token`.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] unless `cgi_path` is an absolute path without query.
    pub fn new(access_token: &'a AccessToken, cgi_path: &'a str) -> Result<Self, WxError> {
        check_cgi_path(cgi_path)?;
        Ok(Self {
            access_token,
            cgi_path,
        })
    }
}

impl Endpoint for GetApiQuota<'_> {
    type Output = ApiQuota;
    const PATH: &'static str = "/cgi-bin/openapi/quota/get";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(
                Self::PATH,
                &[("access_token", self.access_token.expose_secret())],
            ),
            &CgiPathBody {
                cgi_path: self.cgi_path,
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<ApiQuota, WxError> {
        parse_json::<QuotaBody>(Self::PATH, status, body).map(|b| b.quota)
    }
}

/// `POST /cgi-bin/openapi/quota/clear?access_token=…` with `{"cgi_path"}`: resets one API.
#[derive(Debug)]
pub struct ClearApiQuota<'a> {
    access_token: &'a AccessToken,
    cgi_path: &'a str,
}

impl<'a> ClearApiQuota<'a> {
    /// The request for one API path.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] unless `cgi_path` is an absolute path without query.
    pub fn new(access_token: &'a AccessToken, cgi_path: &'a str) -> Result<Self, WxError> {
        check_cgi_path(cgi_path)?;
        Ok(Self {
            access_token,
            cgi_path,
        })
    }
}

impl Endpoint for ClearApiQuota<'_> {
    type Output = ();
    const PATH: &'static str = "/cgi-bin/openapi/quota/clear";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(
                Self::PATH,
                &[("access_token", self.access_token.expose_secret())],
            ),
            &CgiPathBody {
                cgi_path: self.cgi_path,
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<(), WxError> {
        parse_ack(Self::PATH, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Action, ErrCode};

    #[test]
    fn clear_quota_request_and_ack() {
        let token = AccessToken::new("TOK");
        let appid = AppId::parse("wx2c2769f8efd9abc2").unwrap();
        let ep = ClearQuota::new(&token, &appid);
        let req = ep.build_request(&Hosts::default()).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/clear_quota?access_token=TOK"
        );
        assert_eq!(req.body(), br#"{"appid":"wx2c2769f8efd9abc2"}"#);
        ep.parse_body(StatusCode::OK, br#"{"errcode":0,"errmsg":"ok"}"#)
            .unwrap();
        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":48006,"errmsg":"forbid to clear quota because of reaching the limit"}"#,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::ClearQuotaLimit));
        assert_eq!(err.action(), Action::GiveUp);
    }

    #[test]
    fn clear_quota_v2_sends_appid_and_secret() {
        let secret = AppSecret::new("SEC");
        let appid = AppId::parse("wx2c2769f8efd9abc2").unwrap();
        let req = ClearQuotaBySecret::new(&appid, &secret)
            .build_request(&Hosts::default())
            .unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/clear_quota/v2?appid=wx2c2769f8efd9abc2&appsecret=SEC"
        );
        let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body["appsecret"], "SEC");
    }

    #[test]
    fn quota_get_parses_the_spec_example() {
        let token = AccessToken::new("TOK");
        let ep = GetApiQuota::new(&token, "/cgi-bin/token").unwrap();
        let req = ep.build_request(&Hosts::default()).unwrap();
        assert_eq!(req.body(), br#"{"cgi_path":"/cgi-bin/token"}"#);
        let q = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":0,"errmsg":"ok","quota":{"daily_limit":2000,"used":3,"remain":1997}}"#,
            )
            .unwrap();
        assert_eq!(
            q,
            ApiQuota {
                daily_limit: 2000,
                used: 3,
                remain: 1997
            }
        );
        let err = ep
            .parse_body(StatusCode::OK, br#"{"errcode":0,"errmsg":"ok"}"#)
            .unwrap_err();
        assert!(
            matches!(&err, WxError::Decode { path, .. } if path == "."),
            "{err:?}"
        );
    }

    #[test]
    fn cgi_path_is_checked() {
        let token = AccessToken::new("TOK");
        for bad in ["", "/", "cgi-bin/token", "/cgi-bin/token?x=1", "/a b"] {
            assert!(GetApiQuota::new(&token, bad).is_err(), "{bad}");
            assert!(ClearApiQuota::new(&token, bad).is_err(), "{bad}");
        }
        ClearApiQuota::new(&token, "/cgi-bin/user/info").unwrap();
    }
}
