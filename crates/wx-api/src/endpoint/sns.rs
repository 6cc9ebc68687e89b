//! Web authorization (网页授权) server calls: code exchange, refresh, token check, profile.
//!
//! The user-level token these return only reads that user's profile; it cannot call
//! `/cgi-bin` APIs. The authorize-page URLs are built in [`crate::oauth`].

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;

use super::{Endpoint, get, parse_ack, parse_json};
use crate::error::WxError;
use crate::hosts::Hosts;
use crate::ids::{AppId, Lang, OpenId, UnionId};
use crate::oauth::Scope;
use crate::secret::{AppSecret, OAuthCode, RefreshToken, UserAccessToken};
use crate::serde_util::{empty_as_none, flag, lenient_opt_i64, lenient_u64, string_or_empty};

/// A user-level token as `/sns/oauth2/access_token` and `/sns/oauth2/refresh_token` return it.
#[derive(Debug, Deserialize)]
pub struct UserToken {
    /// The user-level access token (valid `expires_in` seconds, 7200 in practice).
    pub access_token: UserAccessToken,
    /// Seconds of validity.
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
    /// Valid 30 days; store whatever comes back (rotation is not documented).
    pub refresh_token: RefreshToken,
    /// The user's OpenID for this account (exists even if the user does not follow).
    pub openid: OpenId,
    /// The granted scope(s), comma-separated on the wire; see [`UserToken::grants`].
    #[serde(default, deserialize_with = "string_or_empty")]
    pub scope: String,
    /// True for a snapshot-page (快照页) virtual user: its OpenID, UnionID and profile are not
    /// the real ones. The platform sends the field only when it is 1.
    #[serde(default, deserialize_with = "flag")]
    pub is_snapshotuser: bool,
    /// Only for `snsapi_userinfo` (and `snsapi_login`) grants on accounts bound to an open
    /// platform account.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub unionid: Option<UnionId>,
}

impl UserToken {
    /// `expires_in` as a duration.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.expires_in)
    }

    /// Whether the token's scope includes `scope`.
    pub fn grants(&self, scope: Scope) -> bool {
        self.scope.split(',').any(|s| s.trim() == scope.as_str())
    }
}

/// `GET /sns/oauth2/access_token?appid=…&secret=…&code=…&grant_type=authorization_code`.
///
/// A code is single use: a second exchange gets `40163`.
#[derive(Debug)]
pub struct ExchangeCode<'a> {
    appid: &'a AppId,
    secret: &'a AppSecret,
    code: &'a OAuthCode,
}

impl<'a> ExchangeCode<'a> {
    /// The exchange for one code.
    pub fn new(appid: &'a AppId, secret: &'a AppSecret, code: &'a OAuthCode) -> Self {
        Self {
            appid,
            secret,
            code,
        }
    }
}

impl Endpoint for ExchangeCode<'_> {
    type Output = UserToken;
    const PATH: &'static str = "/sns/oauth2/access_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        get(hosts.api_url(
            Self::PATH,
            &[
                ("appid", self.appid.as_str()),
                ("secret", self.secret.expose_secret()),
                ("code", self.code.expose_secret()),
                ("grant_type", "authorization_code"),
            ],
        ))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<UserToken, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `GET /sns/oauth2/refresh_token?appid=…&grant_type=refresh_token&refresh_token=…` (no
/// secret).
#[derive(Debug)]
pub struct RefreshUserToken<'a> {
    appid: &'a AppId,
    refresh_token: &'a RefreshToken,
}

impl<'a> RefreshUserToken<'a> {
    /// The refresh for one user's grant.
    pub fn new(appid: &'a AppId, refresh_token: &'a RefreshToken) -> Self {
        Self {
            appid,
            refresh_token,
        }
    }
}

impl Endpoint for RefreshUserToken<'_> {
    type Output = UserToken;
    const PATH: &'static str = "/sns/oauth2/refresh_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        get(hosts.api_url(
            Self::PATH,
            &[
                ("appid", self.appid.as_str()),
                ("grant_type", "refresh_token"),
                ("refresh_token", self.refresh_token.expose_secret()),
            ],
        ))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<UserToken, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `GET /sns/auth?access_token=…&openid=…`: is this user token still valid? Success is
/// `{"errcode":0,"errmsg":"ok"}`.
#[derive(Debug)]
pub struct CheckUserToken<'a> {
    access_token: &'a UserAccessToken,
    openid: &'a OpenId,
}

impl<'a> CheckUserToken<'a> {
    /// The check for one token.
    pub fn new(access_token: &'a UserAccessToken, openid: &'a OpenId) -> Self {
        Self {
            access_token,
            openid,
        }
    }
}

impl Endpoint for CheckUserToken<'_> {
    type Output = ();
    const PATH: &'static str = "/sns/auth";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        get(hosts.api_url(
            Self::PATH,
            &[
                ("access_token", self.access_token.expose_secret()),
                ("openid", self.openid.as_str()),
            ],
        ))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<(), WxError> {
        parse_ack(Self::PATH, status, body)
    }
}

/// A profile as `/sns/userinfo` returns it.
///
/// Since 2021-10-20 `sex` is 0 and the region strings are empty; nickname and avatar are
/// still returned (this is the only way left to read them).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SnsUserInfo {
    /// The user's OpenID for this account.
    pub openid: OpenId,
    /// The nickname.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub nickname: String,
    /// 0 since 2021 (was 1 male, 2 female).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub sex: Option<i64>,
    /// Empty since 2021.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub province: String,
    /// Empty since 2021.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub city: String,
    /// Empty since 2021.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub country: String,
    /// Avatar URL; the last path segment is the size (0 = 640×640). Empty without an avatar.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub headimgurl: String,
    /// Privileges, e.g. `chinaunicom`.
    #[serde(default)]
    pub privilege: Vec<String>,
    /// Only when the account is bound to an open-platform account.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub unionid: Option<UnionId>,
}

/// `GET /sns/userinfo?access_token=…&openid=…&lang=…`. A `snsapi_base` token gets `48001`,
/// whose [`Action`](crate::error::Action) is to authorize again with `snsapi_userinfo`.
#[derive(Debug)]
pub struct GetSnsUserInfo<'a> {
    access_token: &'a UserAccessToken,
    openid: &'a OpenId,
    lang: Option<Lang>,
}

impl<'a> GetSnsUserInfo<'a> {
    /// The request for the token's user.
    pub fn new(access_token: &'a UserAccessToken, openid: &'a OpenId) -> Self {
        Self {
            access_token,
            openid,
            lang: None,
        }
    }

    /// Sets `lang`.
    pub fn lang(mut self, lang: Lang) -> Self {
        self.lang = Some(lang);
        self
    }
}

impl Endpoint for GetSnsUserInfo<'_> {
    type Output = SnsUserInfo;
    const PATH: &'static str = "/sns/userinfo";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        let mut query = vec![
            ("access_token", self.access_token.expose_secret()),
            ("openid", self.openid.as_str()),
        ];
        if let Some(lang) = self.lang {
            query.push(("lang", lang.as_str()));
        }
        get(hosts.api_url(Self::PATH, &query))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<SnsUserInfo, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Action, ErrCode};

    fn appid() -> AppId {
        AppId::parse("wx2c2769f8efd9abc2").unwrap()
    }

    #[test]
    fn exchange_request_and_spec_response() {
        let (id, secret, code) = (appid(), AppSecret::new("SEC"), OAuthCode::new("CODE"));
        let ep = ExchangeCode::new(&id, &secret, &code);
        assert_eq!(
            ep.build_request(&Hosts::default())
                .unwrap()
                .uri()
                .to_string(),
            "https://api.weixin.qq.com/sns/oauth2/access_token?appid=wx2c2769f8efd9abc2&secret=SEC&code=CODE&grant_type=authorization_code"
        );
        let t = ep
            .parse_body(
                StatusCode::OK,
                br#"{"access_token":"ACCESS_TOKEN","expires_in":7200,"refresh_token":"REFRESH_TOKEN",
     "openid":"OPENID","scope":"SCOPE","is_snapshotuser":1,"unionid":"UNIONID"}"#,
            )
            .unwrap();
        assert!(t.is_snapshotuser);
        assert_eq!(t.unionid.as_ref().unwrap().as_str(), "UNIONID");
        assert_eq!(t.refresh_token.expose_secret(), "REFRESH_TOKEN");
        assert_eq!(t.lifetime(), Duration::from_secs(7200));

        let t = ep
            .parse_body(
                StatusCode::OK,
                br#"{"access_token":"A","expires_in":7200,"refresh_token":"R","openid":"o1","scope":"snsapi_base"}"#,
            )
            .unwrap();
        assert!(!t.is_snapshotuser);
        assert!(t.unionid.is_none());
        assert!(t.grants(Scope::SnsapiBase));
        assert!(!t.grants(Scope::SnsapiUserinfo));
    }

    #[test]
    fn code_errors_ask_for_reauthorization() {
        let (id, secret, code) = (appid(), AppSecret::new("SEC"), OAuthCode::new("CODE"));
        let ep = ExchangeCode::new(&id, &secret, &code);
        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40163,"errmsg":"code been used, rid: 62bae58d-5bf58b34-5f8e035e"}"#,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::CodeBeenUsed));
        assert_eq!(err.rid(), Some("62bae58d-5bf58b34-5f8e035e"));
        assert_eq!(err.action(), Action::Reauthorize);
    }

    #[test]
    fn refresh_request() {
        let (id, rt) = (appid(), RefreshToken::new("RT"));
        let ep = RefreshUserToken::new(&id, &rt);
        assert_eq!(
            ep.build_request(&Hosts::default())
                .unwrap()
                .uri()
                .to_string(),
            "https://api.weixin.qq.com/sns/oauth2/refresh_token?appid=wx2c2769f8efd9abc2&grant_type=refresh_token&refresh_token=RT"
        );
        let t = ep
            .parse_body(
                StatusCode::OK,
                br#"{"access_token":"ACCESS_TOKEN","expires_in":7200,"refresh_token":"REFRESH_TOKEN","openid":"OPENID","scope":"SCOPE"}"#,
            )
            .unwrap();
        assert_eq!(t.scope, "SCOPE");
        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40030,"errmsg":"invalid refresh_token, rid: 6114eeb9-0032c16a-61fbf7ce"}"#,
            )
            .unwrap_err();
        assert_eq!(err.action(), Action::Reauthorize);
    }

    #[test]
    fn sns_auth() {
        let (t, o) = (UserAccessToken::new("UT"), OpenId::parse("o1").unwrap());
        let ep = CheckUserToken::new(&t, &o);
        ep.parse_body(StatusCode::OK, br#"{"errcode":0,"errmsg":"ok"}"#)
            .unwrap();
        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40003,"errmsg":"invalid openid"}"#,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::InvalidOpenId));
        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40014,"errmsg":"invalid access_token rid: 1-2-3"}"#,
            )
            .unwrap_err();
        assert!(err.is_token_invalid());
    }

    #[test]
    fn userinfo_post_2021_shape_and_48001() {
        let (t, o) = (UserAccessToken::new("UT"), OpenId::parse("OPENID").unwrap());
        let ep = GetSnsUserInfo::new(&t, &o).lang(Lang::En);
        assert!(
            ep.build_request(&Hosts::default())
                .unwrap()
                .uri()
                .to_string()
                .ends_with("&lang=en")
        );
        let u = ep
            .parse_body(
                StatusCode::OK,
                br#"{"openid":"OPENID","nickname":"NICKNAME","sex":0,"province":"","city":"","country":"",
     "headimgurl":"https://thirdwx.qlogo.cn/mmopen/x/46","privilege":[],"unionid":"UNIONID"}"#,
            )
            .unwrap();
        assert_eq!(u.nickname, "NICKNAME");
        assert_eq!(u.sex, Some(0));
        assert!(u.city.is_empty());
        // wechatpy's old fixture has sex as a string.
        let u = ep
            .parse_body(
                StatusCode::OK,
                br#"{"openid":"OPENID","nickname":"N","sex":"1","province":"P","city":"C","country":"CN","headimgurl":"","privilege":["chinaunicom"]}"#,
            )
            .unwrap();
        assert_eq!(u.sex, Some(1));
        assert_eq!(u.privilege, vec!["chinaunicom"]);

        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":48001,"errmsg":"api unauthorized rid: 1-2-3"}"#,
            )
            .unwrap_err();
        assert_eq!(err.action(), Action::Reauthorize);
    }
}
