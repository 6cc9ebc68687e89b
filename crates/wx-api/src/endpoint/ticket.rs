//! `GET /cgi-bin/ticket/getticket`: the JS-SDK ticket and the card API ticket.
//!
//! Within its validity the platform returns the same ticket with `expires_in` always 7200,
//! so the true remaining lifetime cannot be read from the response: remember when a ticket
//! value was first seen.

use http::StatusCode;
use serde::Deserialize;

use super::{Endpoint, get, parse_json};
use crate::error::WxError;
use crate::hosts::Hosts;
use crate::secret::{AccessToken, CardTicket, JsapiTicket};
use crate::serde_util::lenient_u64;

/// A ticket and the `expires_in` printed next to it.
#[derive(Debug, Deserialize)]
pub struct TicketResponse<T> {
    /// The ticket.
    pub ticket: T,
    /// Always 7200 in practice, even for a ticket issued earlier (see the module docs).
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
}

fn ticket_request(
    hosts: &Hosts,
    path: &str,
    token: &AccessToken,
    kind: &str,
) -> Result<http::Request<Vec<u8>>, WxError> {
    get(hosts.api_url(
        path,
        &[("access_token", token.expose_secret()), ("type", kind)],
    ))
}

/// `getticket?type=jsapi`.
#[derive(Debug)]
pub struct GetJsapiTicket<'a> {
    access_token: &'a AccessToken,
}

impl<'a> GetJsapiTicket<'a> {
    /// The request, made with the account's global token.
    pub fn new(access_token: &'a AccessToken) -> Self {
        Self { access_token }
    }
}

impl Endpoint for GetJsapiTicket<'_> {
    type Output = TicketResponse<JsapiTicket>;
    const PATH: &'static str = "/cgi-bin/ticket/getticket";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        ticket_request(hosts, Self::PATH, self.access_token, "jsapi")
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `getticket?type=wx_card`.
#[derive(Debug)]
pub struct GetCardTicket<'a> {
    access_token: &'a AccessToken,
}

impl<'a> GetCardTicket<'a> {
    /// The request, made with the account's global token.
    pub fn new(access_token: &'a AccessToken) -> Self {
        Self { access_token }
    }
}

impl Endpoint for GetCardTicket<'_> {
    type Output = TicketResponse<CardTicket>;
    const PATH: &'static str = "/cgi-bin/ticket/getticket";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        ticket_request(hosts, Self::PATH, self.access_token, "wx_card")
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Action, ErrCode};

    const SPEC_OK: &[u8] = br#"{"errcode":0,"errmsg":"ok","ticket":"bxLdikRXVbTPdHSM05e5u5sUoXNKd8-41ZO3MhKoyN5OfkWITDGgnr2fwJ0m9E8NYzWKVZvdVtaUgWvsdshFKA","expires_in":7200}"#;

    #[test]
    fn requests() {
        let t = AccessToken::new("TOK");
        let r = GetJsapiTicket::new(&t)
            .build_request(&Hosts::default())
            .unwrap();
        assert_eq!(
            r.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/ticket/getticket?access_token=TOK&type=jsapi"
        );
        let r = GetCardTicket::new(&t)
            .build_request(&Hosts::default())
            .unwrap();
        assert!(r.uri().to_string().ends_with("&type=wx_card"));
    }

    #[test]
    fn parses_spec_example_and_token_errors() {
        let t = AccessToken::new("TOK");
        let ep = GetJsapiTicket::new(&t);
        let ok = ep.parse_body(StatusCode::OK, SPEC_OK).unwrap();
        assert!(
            ok.ticket
                .expose_secret()
                .starts_with("bxLdikRXVbTPdHSM05e5u5sU")
        );
        assert_eq!(ok.expires_in, 7200);
        let card = GetCardTicket::new(&t)
            .parse_body(StatusCode::OK, SPEC_OK)
            .unwrap();
        assert!(card.ticket.expose_secret().starts_with("bxLd"));

        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 1-2-3"}"#,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::InvalidCredential));
        assert_eq!(err.action(), Action::RefreshTokenAndRetryOnce);
    }
}
