//! Typed endpoints, with no I/O.
//!
//! Each endpoint is a value that builds an `http::Request<Vec<u8>>` ([`Endpoint::build_request`])
//! and parses the matching `http::Response<Vec<u8>>` ([`Endpoint::parse_response`]). Sending
//! the request is someone else's job ([`crate::client`], or any HTTP stack), so every parser is
//! tested on bytes alone.
//!
//! Parsing decides on `errcode` first: a body with a non-zero `errcode` is a
//! [`WxError::Api`] whatever the HTTP status, because the platform reports failures with
//! `200 OK`. Only then does a non-success status without an errcode become
//! [`WxError::HttpStatus`], and only then is the body decoded into the endpoint's type.
//!
//! | Module | Endpoints |
//! |---|---|
//! | [`token`] | `GET /cgi-bin/token`, `POST /cgi-bin/stable_token` |
//! | [`quota`] | `POST /cgi-bin/clear_quota`, `/cgi-bin/clear_quota/v2`, `/cgi-bin/openapi/quota/get`, `/cgi-bin/openapi/quota/clear` |
//! | [`ticket`] | `GET /cgi-bin/ticket/getticket` (`jsapi`, `wx_card`) |
//! | [`user`] | `GET /cgi-bin/user/info`, `POST /cgi-bin/user/info/batchget`, `GET /cgi-bin/user/get` |
//! | [`component`] | the third-party platform: `api_component_token`, `api_create_preauthcode`, `api_query_auth`, `api_authorizer_token`, `api_get_authorizer_info`, `api_get_authorizer_list`, `api_start_push_ticket`, `/sns/oauth2/component/*` |
//! | [`sns`] | `GET /sns/oauth2/access_token`, `/sns/oauth2/refresh_token`, `/sns/auth`, `/sns/userinfo` |

pub mod component;
pub mod quota;
pub mod sns;
pub mod ticket;
pub mod token;
pub mod user;

use http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{DecodeKind, ErrCode, WxError};
use crate::hosts::Hosts;

/// One platform endpoint: a request builder and a pure response parser.
pub trait Endpoint {
    /// What a successful call yields.
    type Output;

    /// The endpoint's path, e.g. `/cgi-bin/token`. Safe to log (no host, no query).
    const PATH: &'static str;

    /// Builds the HTTP request.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] if the request cannot be expressed (it never echoes the
    /// offending value).
    ///
    /// # Security
    ///
    /// The request's URI and body hold credentials (`access_token=`, `secret=`). Do not log
    /// them.
    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError>;

    /// Parses a response body received with `status`.
    ///
    /// # Errors
    ///
    /// [`WxError::Api`] for a non-zero errcode, [`WxError::HttpStatus`] for a non-success
    /// status without one, [`WxError::Decode`] for a body of the wrong shape.
    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError>;

    /// Parses a response.
    ///
    /// # Errors
    ///
    /// As for [`Endpoint::parse_body`].
    fn parse_response(&self, response: &http::Response<Vec<u8>>) -> Result<Self::Output, WxError> {
        self.parse_body(response.status(), response.body())
    }
}

/// The `{errcode, errmsg}` part of any body. Unknown fields are ignored, so this reads success
/// payloads too.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    errcode: Option<ErrCode>,
    #[serde(default)]
    errmsg: Option<String>,
}

/// Decides on errcode, then status, then decodes `T`. Shared by every JSON endpoint.
///
/// # Errors
///
/// See [`Endpoint::parse_body`].
pub fn parse_json<T: DeserializeOwned>(
    endpoint: &'static str,
    status: StatusCode,
    body: &[u8],
) -> Result<T, WxError> {
    let probe: Probe = match from_slice(endpoint, body) {
        Ok(probe) => probe,
        // An HTML error page from a proxy is a status problem first, a decoding one second.
        Err(_) if !status.is_success() => {
            return Err(WxError::HttpStatus {
                status: status.as_u16(),
                endpoint,
            });
        }
        Err(e) => return Err(e),
    };
    if let Some(code) = probe.errcode.filter(|c| c.as_i64() != 0) {
        return Err(WxError::api(
            code,
            probe.errmsg.unwrap_or_default(),
            endpoint,
        ));
    }
    if !status.is_success() {
        return Err(WxError::HttpStatus {
            status: status.as_u16(),
            endpoint,
        });
    }
    from_slice(endpoint, body)
}

fn from_slice<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, WxError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| decode_error(endpoint, e))?;
    de.end().map_err(|e| WxError::Decode {
        endpoint,
        path: ".".to_owned(),
        kind: DecodeKind::Syntax,
        line: e.line(),
        column: e.column(),
    })?;
    Ok(value)
}

fn decode_error(
    endpoint: &'static str,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> WxError {
    let path = err.path().to_string();
    let inner = err.inner();
    // Only the category and position are kept: serde_json's message can quote the offending
    // value, and that value may be a token.
    let kind = match inner.classify() {
        serde_json::error::Category::Eof => DecodeKind::Eof,
        serde_json::error::Category::Data => DecodeKind::Data,
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => DecodeKind::Syntax,
    };
    WxError::Decode {
        endpoint,
        path,
        kind,
        line: inner.line(),
        column: inner.column(),
    }
}

/// The body of endpoints that answer `{"errcode":0,"errmsg":"ok"}` and nothing else.
#[derive(Deserialize)]
struct Ack {}

pub(crate) fn parse_ack(
    endpoint: &'static str,
    status: StatusCode,
    body: &[u8],
) -> Result<(), WxError> {
    parse_json::<Ack>(endpoint, status, body).map(|_| ())
}

pub(crate) fn get(url: Url) -> Result<http::Request<Vec<u8>>, WxError> {
    http::Request::builder()
        .method(Method::GET)
        .uri(url.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|_| WxError::invalid_input("the request URI was rejected"))
}

pub(crate) fn post_json(
    url: Url,
    body: &impl Serialize,
) -> Result<http::Request<Vec<u8>>, WxError> {
    let body = serde_json::to_vec(body)
        .map_err(|_| WxError::invalid_input("the request body cannot be encoded"))?;
    http::Request::builder()
        .method(Method::POST)
        .uri(url.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|_| WxError::invalid_input("the request URI was rejected"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Payload {
        #[expect(dead_code, reason = "only its presence is tested")]
        value: u32,
    }

    fn parse(status: u16, body: &str) -> Result<Payload, WxError> {
        parse_json(
            "/test",
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        )
    }

    #[test]
    fn errcode_wins_over_status() {
        for status in [200, 400, 500, 502] {
            let err = parse(
                status,
                r#"{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 1-2-3"}"#,
            )
            .unwrap_err();
            match err {
                WxError::Api {
                    code, rid, errmsg, ..
                } => {
                    assert_eq!(code, ErrCode::DailyQuotaReached);
                    assert_eq!(rid.as_deref(), Some("1-2-3"));
                    assert!(errmsg.starts_with("reach max"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn string_errcode_is_coerced() {
        let err = parse(200, r#"{"errcode":"40001","errmsg":"invalid credential"}"#).unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::InvalidCredential));
    }

    #[test]
    fn errcode_zero_is_success() {
        parse(200, r#"{"errcode":0,"errmsg":"ok","value":1}"#).unwrap();
        parse(200, r#"{"errcode":"0","errmsg":"ok","value":1}"#).unwrap();
        parse(200, r#"{"value":1}"#).unwrap();
    }

    #[test]
    fn status_without_errcode() {
        let err = parse(502, "<html>Bad Gateway</html>").unwrap_err();
        assert!(
            matches!(err, WxError::HttpStatus { status: 502, .. }),
            "{err:?}"
        );
        let err = parse(302, "").unwrap_err();
        assert!(
            matches!(err, WxError::HttpStatus { status: 302, .. }),
            "{err:?}"
        );
        let err = parse(500, r#"{"value":1}"#).unwrap_err();
        assert!(
            matches!(err, WxError::HttpStatus { status: 500, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn decode_errors_name_the_path_but_not_the_body() {
        let secret = "TOKEN-abcdef";
        let err = parse(200, &format!(r#"{{"value":"{secret}"}}"#)).unwrap_err();
        match &err {
            WxError::Decode { path, kind, .. } => {
                assert_eq!(path, "value");
                assert_eq!(*kind, DecodeKind::Data);
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));

        let err = parse(200, "not json").unwrap_err();
        assert!(
            matches!(
                err,
                WxError::Decode {
                    kind: DecodeKind::Syntax,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = parse(200, "").unwrap_err();
        assert!(
            matches!(
                err,
                WxError::Decode {
                    kind: DecodeKind::Eof,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = parse(200, r#"{"value":1} trailing"#).unwrap_err();
        assert!(matches!(err, WxError::Decode { .. }), "{err:?}");
        let err = parse(200, r#"{"errcode":true}"#).unwrap_err();
        assert!(
            matches!(&err, WxError::Decode { path, .. } if path == "errcode"),
            "{err:?}"
        );
    }
}
