//! The third-party platform (第三方平台, "component"): its own token, pre-auth codes, the
//! authorizers' tokens and lists, the ticket pusher's restart, and web authorization on
//! behalf of an authorized account (`component-platform.md` §3–§7).
//!
//! Component APIs take the component token as `component_access_token=` (the name every SDK
//! sends; newer pages accept `access_token=` too). Success bodies carry no `errcode`; errors
//! come as `200` with `{errcode, errmsg}` like every other API, so the shared parser applies.
//!
//! The authorization pages (`componentloginpage`, `bindcomponent`) are on `mp.weixin.qq.com`,
//! which is neither of [`Hosts`]' bases: [`LoginPageUrl::build`] takes that base itself.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Endpoint, get, parse_ack, parse_json, post_json};
use crate::error::WxError;
use crate::hosts::Hosts;
use crate::ids::AppId;
use crate::secret::{AccessToken, AppSecret, RefreshToken};
use crate::serde_util::lenient_u64;

/// The official host of the authorization page.
pub const DEFAULT_MP_BASE: &str = "https://mp.weixin.qq.com";

crate::secret_type!(
    /// A `component_access_token` (第三方平台接口调用令牌): valid 7200 s; every fetch mints a
    /// new one and the previous dies 300 s later.
    ComponentAccessToken
);
crate::secret_type!(
    /// A `component_verify_ticket` (`ticket@@@…`), pushed every ten minutes, usable 12 h.
    ComponentVerifyTicket
);
crate::secret_type!(
    /// A `pre_auth_code` (`preauthcode@@@…`): single use, 1800 s.
    PreAuthCode
);
crate::secret_type!(
    /// An authorization code (`queryauthcode@@@…`) from the authorization page's redirect or
    /// the `authorized` / `updateauthorized` event; exchanged with `api_query_auth`.
    AuthorizationCode
);
crate::secret_type!(
    /// An `authorizer_refresh_token`: no expiry while the authorization stands, and the only
    /// way to get the account's tokens. Losing it means asking the administrator again (or
    /// reading it back with `api_get_authorizer_list`).
    AuthorizerRefreshToken
);

fn component_url(hosts: &Hosts, path: &str, token: &ComponentAccessToken) -> url::Url {
    hosts.api_url(path, &[("component_access_token", token.expose_secret())])
}

/// `api_component_token`'s answer.
#[derive(Debug, Deserialize)]
pub struct ComponentTokenResponse {
    /// The token.
    pub component_access_token: ComponentAccessToken,
    /// Seconds of validity.
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
}

/// `POST /cgi-bin/component/api_component_token`: a new component token, with the component's
/// secret and a verify ticket still inside its 12 h.
#[derive(Debug)]
pub struct ComponentToken<'a> {
    component: &'a AppId,
    secret: &'a AppSecret,
    ticket: &'a ComponentVerifyTicket,
}

impl<'a> ComponentToken<'a> {
    /// The request. There is deliberately no way to send a null ticket (61006, the error
    /// every peer SDK hits while no ticket has arrived yet).
    pub fn new(
        component: &'a AppId,
        secret: &'a AppSecret,
        ticket: &'a ComponentVerifyTicket,
    ) -> Self {
        Self {
            component,
            secret,
            ticket,
        }
    }
}

#[derive(Serialize)]
struct ComponentTokenBody<'a> {
    component_appid: &'a str,
    component_appsecret: &'a str,
    component_verify_ticket: &'a str,
}

impl Endpoint for ComponentToken<'_> {
    type Output = ComponentTokenResponse;
    const PATH: &'static str = "/cgi-bin/component/api_component_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(Self::PATH, &[]),
            &ComponentTokenBody {
                component_appid: self.component.as_str(),
                component_appsecret: self.secret.expose_secret(),
                component_verify_ticket: self.ticket.expose_secret(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

#[derive(Serialize)]
struct ComponentOnly<'a> {
    component_appid: &'a str,
}

/// `api_create_preauthcode`'s answer.
#[derive(Debug, Deserialize)]
pub struct PreAuthCodeResponse {
    /// The code, for one authorization page.
    pub pre_auth_code: PreAuthCode,
    /// Seconds of validity (1800 observed).
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
}

/// `POST /cgi-bin/component/api_create_preauthcode`.
#[derive(Debug)]
pub struct CreatePreAuthCode<'a> {
    component: &'a AppId,
    token: &'a ComponentAccessToken,
}

impl<'a> CreatePreAuthCode<'a> {
    /// The request.
    pub fn new(component: &'a AppId, token: &'a ComponentAccessToken) -> Self {
        Self { component, token }
    }
}

impl Endpoint for CreatePreAuthCode<'_> {
    type Output = PreAuthCodeResponse;
    const PATH: &'static str = "/cgi-bin/component/api_create_preauthcode";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            component_url(hosts, Self::PATH, self.token),
            &ComponentOnly {
                component_appid: self.component.as_str(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// A granted permission set (`func_info[].funcscope_category.id`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FuncInfo {
    /// The set.
    pub funcscope_category: FuncScope,
}

/// The id of a permission set: 1 messages, 2 users, 3 account, 4 web, 7 mass send, 11
/// media, 15 menu, ….
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct FuncScope {
    /// The id.
    pub id: i64,
}

/// `authorization_info` of `api_query_auth`.
#[derive(Debug, Deserialize)]
pub struct AuthorizationInfo {
    /// The account that authorized.
    pub authorizer_appid: AppId,
    /// Present only if the account has API permission.
    #[serde(default)]
    pub authorizer_access_token: Option<AccessToken>,
    /// Seconds of validity of the access token.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub expires_in: Option<u64>,
    /// Present only if the account has API permission. Store it durably at once.
    #[serde(default)]
    pub authorizer_refresh_token: Option<AuthorizerRefreshToken>,
    /// The permission sets granted.
    #[serde(default)]
    pub func_info: Vec<FuncInfo>,
}

impl AuthorizationInfo {
    /// The granted permission-set ids.
    pub fn func_ids(&self) -> Vec<i64> {
        self.func_info
            .iter()
            .map(|f| f.funcscope_category.id)
            .collect()
    }
}

fn lenient_opt_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "lenient_u64")] u64);
    Option::<W>::deserialize(d).map(|o| o.map(|W(v)| v))
}

/// `api_query_auth`'s answer.
#[derive(Debug, Deserialize)]
pub struct QueryAuthResponse {
    /// What the authorization gave.
    pub authorization_info: AuthorizationInfo,
}

/// `POST /cgi-bin/component/api_query_auth`: exchanges an authorization code for the
/// authorizer's tokens.
#[derive(Debug)]
pub struct QueryAuth<'a> {
    component: &'a AppId,
    token: &'a ComponentAccessToken,
    code: &'a AuthorizationCode,
}

impl<'a> QueryAuth<'a> {
    /// The request.
    pub fn new(
        component: &'a AppId,
        token: &'a ComponentAccessToken,
        code: &'a AuthorizationCode,
    ) -> Self {
        Self {
            component,
            token,
            code,
        }
    }
}

#[derive(Serialize)]
struct QueryAuthBody<'a> {
    component_appid: &'a str,
    authorization_code: &'a str,
}

impl Endpoint for QueryAuth<'_> {
    type Output = QueryAuthResponse;
    const PATH: &'static str = "/cgi-bin/component/api_query_auth";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            component_url(hosts, Self::PATH, self.token),
            &QueryAuthBody {
                component_appid: self.component.as_str(),
                authorization_code: self.code.expose_secret(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `api_authorizer_token`'s answer.
#[derive(Debug, Deserialize)]
pub struct AuthorizerTokenResponse {
    /// The new access token.
    pub authorizer_access_token: AccessToken,
    /// Seconds of validity.
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
    /// The refresh token (the same one, in practice): store it whenever it comes back.
    pub authorizer_refresh_token: AuthorizerRefreshToken,
}

/// `POST /cgi-bin/component/api_authorizer_token`: a new authorizer access token from the
/// account's refresh token.
#[derive(Debug)]
pub struct AuthorizerToken<'a> {
    component: &'a AppId,
    token: &'a ComponentAccessToken,
    authorizer: &'a AppId,
    refresh_token: &'a AuthorizerRefreshToken,
}

impl<'a> AuthorizerToken<'a> {
    /// The request.
    pub fn new(
        component: &'a AppId,
        token: &'a ComponentAccessToken,
        authorizer: &'a AppId,
        refresh_token: &'a AuthorizerRefreshToken,
    ) -> Self {
        Self {
            component,
            token,
            authorizer,
            refresh_token,
        }
    }
}

#[derive(Serialize)]
struct AuthorizerTokenBody<'a> {
    component_appid: &'a str,
    authorizer_appid: &'a str,
    authorizer_refresh_token: &'a str,
}

impl Endpoint for AuthorizerToken<'_> {
    type Output = AuthorizerTokenResponse;
    const PATH: &'static str = "/cgi-bin/component/api_authorizer_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            component_url(hosts, Self::PATH, self.token),
            &AuthorizerTokenBody {
                component_appid: self.component.as_str(),
                authorizer_appid: self.authorizer.as_str(),
                authorizer_refresh_token: self.refresh_token.expose_secret(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `api_get_authorizer_info`'s answer. `authorizer_info` is kept as JSON: its fields differ
/// between official accounts and mini programs and between doc editions.
#[derive(Debug, Deserialize)]
pub struct AuthorizerInfoResponse {
    /// Nick name, `user_name` (gh_…), service and verify types, ….
    pub authorizer_info: serde_json::Value,
}

impl AuthorizerInfoResponse {
    /// `nick_name`, when given.
    pub fn nick_name(&self) -> Option<&str> {
        self.authorizer_info.get("nick_name")?.as_str()
    }

    /// `user_name`, the original id (`gh_…`) that pushes carry as `ToUserName`.
    pub fn user_name(&self) -> Option<&str> {
        self.authorizer_info.get("user_name")?.as_str()
    }
}

/// `POST /cgi-bin/component/api_get_authorizer_info`.
#[derive(Debug)]
pub struct GetAuthorizerInfo<'a> {
    component: &'a AppId,
    token: &'a ComponentAccessToken,
    authorizer: &'a AppId,
}

impl<'a> GetAuthorizerInfo<'a> {
    /// The request.
    pub fn new(
        component: &'a AppId,
        token: &'a ComponentAccessToken,
        authorizer: &'a AppId,
    ) -> Self {
        Self {
            component,
            token,
            authorizer,
        }
    }
}

#[derive(Serialize)]
struct AuthorizerBody<'a> {
    component_appid: &'a str,
    authorizer_appid: &'a str,
}

impl Endpoint for GetAuthorizerInfo<'_> {
    type Output = AuthorizerInfoResponse;
    const PATH: &'static str = "/cgi-bin/component/api_get_authorizer_info";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            component_url(hosts, Self::PATH, self.token),
            &AuthorizerBody {
                component_appid: self.component.as_str(),
                authorizer_appid: self.authorizer.as_str(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// One entry of `api_get_authorizer_list`.
#[derive(Debug, Deserialize)]
pub struct ListedAuthorizer {
    /// The account.
    pub authorizer_appid: AppId,
    /// Its refresh token; absent until its code was first exchanged.
    #[serde(default)]
    pub refresh_token: Option<AuthorizerRefreshToken>,
    /// When it authorized (Unix seconds).
    #[serde(default)]
    pub auth_time: Option<i64>,
}

/// `api_get_authorizer_list`'s answer.
#[derive(Debug, Deserialize)]
pub struct AuthorizerListResponse {
    /// How many accounts are authorized now.
    #[serde(deserialize_with = "lenient_u64")]
    pub total_count: u64,
    /// This page.
    #[serde(default)]
    pub list: Vec<ListedAuthorizer>,
}

/// The largest page `api_get_authorizer_list` serves.
pub const MAX_AUTHORIZER_PAGE: u32 = 500;

/// `POST /cgi-bin/component/api_get_authorizer_list`: the accounts authorized now, with
/// their refresh tokens (how a lost refresh token is read back).
#[derive(Debug)]
pub struct GetAuthorizerList<'a> {
    component: &'a AppId,
    token: &'a ComponentAccessToken,
    offset: u64,
    count: u32,
}

impl<'a> GetAuthorizerList<'a> {
    /// One page; `count` is capped at [`MAX_AUTHORIZER_PAGE`].
    pub fn new(
        component: &'a AppId,
        token: &'a ComponentAccessToken,
        offset: u64,
        count: u32,
    ) -> Self {
        Self {
            component,
            token,
            offset,
            count: count.clamp(1, MAX_AUTHORIZER_PAGE),
        }
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    component_appid: &'a str,
    offset: u64,
    count: u32,
}

impl Endpoint for GetAuthorizerList<'_> {
    type Output = AuthorizerListResponse;
    const PATH: &'static str = "/cgi-bin/component/api_get_authorizer_list";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            component_url(hosts, Self::PATH, self.token),
            &ListBody {
                component_appid: self.component.as_str(),
                offset: self.offset,
                count: self.count,
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `POST /cgi-bin/component/api_start_push_ticket`: restarts the platform's ticket pushes
/// (and pushes one at once) when they stopped.
#[derive(Debug)]
pub struct StartPushTicket<'a> {
    component: &'a AppId,
    secret: &'a AppSecret,
}

impl<'a> StartPushTicket<'a> {
    /// The request.
    pub fn new(component: &'a AppId, secret: &'a AppSecret) -> Self {
        Self { component, secret }
    }
}

#[derive(Serialize)]
struct StartPushBody<'a> {
    component_appid: &'a str,
    component_secret: &'a str,
}

impl Endpoint for StartPushTicket<'_> {
    type Output = ();
    const PATH: &'static str = "/cgi-bin/component/api_start_push_ticket";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(Self::PATH, &[]),
            &StartPushBody {
                component_appid: self.component.as_str(),
                component_secret: self.secret.expose_secret(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_ack(Self::PATH, status, body)
    }
}

/// `GET /sns/oauth2/component/access_token`: a web-authorization code of an authorized
/// account exchanged with the component's credentials instead of the account's secret.
#[derive(Debug)]
pub struct ComponentExchangeCode<'a> {
    appid: &'a AppId,
    code: crate::secret::OAuthCode,
    component: &'a AppId,
    token: &'a ComponentAccessToken,
}

impl<'a> ComponentExchangeCode<'a> {
    /// The request; the code is consumed (it is single use).
    pub fn new(
        appid: &'a AppId,
        code: crate::secret::OAuthCode,
        component: &'a AppId,
        token: &'a ComponentAccessToken,
    ) -> Self {
        Self {
            appid,
            code,
            component,
            token,
        }
    }
}

impl Endpoint for ComponentExchangeCode<'_> {
    type Output = super::sns::UserToken;
    const PATH: &'static str = "/sns/oauth2/component/access_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        get(hosts.api_url(
            Self::PATH,
            &[
                ("appid", self.appid.as_str()),
                ("code", self.code.expose_secret()),
                ("grant_type", "authorization_code"),
                ("component_appid", self.component.as_str()),
                ("component_access_token", self.token.expose_secret()),
            ],
        ))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `GET /sns/oauth2/component/refresh_token` (the plain refresh endpoint refuses component
/// flows).
#[derive(Debug)]
pub struct ComponentRefreshUserToken<'a> {
    appid: &'a AppId,
    refresh_token: &'a RefreshToken,
    component: &'a AppId,
    token: &'a ComponentAccessToken,
}

impl<'a> ComponentRefreshUserToken<'a> {
    /// The request.
    pub fn new(
        appid: &'a AppId,
        refresh_token: &'a RefreshToken,
        component: &'a AppId,
        token: &'a ComponentAccessToken,
    ) -> Self {
        Self {
            appid,
            refresh_token,
            component,
            token,
        }
    }
}

impl Endpoint for ComponentRefreshUserToken<'_> {
    type Output = super::sns::UserToken;
    const PATH: &'static str = "/sns/oauth2/component/refresh_token";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        get(hosts.api_url(
            Self::PATH,
            &[
                ("appid", self.appid.as_str()),
                ("grant_type", "refresh_token"),
                ("component_appid", self.component.as_str()),
                ("component_access_token", self.token.expose_secret()),
                ("refresh_token", self.refresh_token.expose_secret()),
            ],
        ))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Self::Output, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// Which accounts the authorization page offers (`auth_type`; exclusive with `biz_appid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// `1`: official accounts only.
    OfficialAccounts,
    /// `2`: mini programs only.
    MiniPrograms,
    /// `3`: both.
    Both,
}

/// The PC authorization page (`/cgi-bin/componentloginpage`, §4.2), where an account's
/// administrator approves the component.
#[derive(Debug)]
pub struct LoginPageUrl<'a> {
    component: &'a AppId,
    pre_auth_code: &'a PreAuthCode,
    redirect_uri: &'a str,
    restrict: Option<Result<AuthType, &'a AppId>>,
}

impl<'a> LoginPageUrl<'a> {
    /// The page for one pre-auth code; the administrator is sent back to `redirect_uri`
    /// (whose host must be the component's 授权发起页域名) with `auth_code` and `expires_in`.
    pub fn new(
        component: &'a AppId,
        pre_auth_code: &'a PreAuthCode,
        redirect_uri: &'a str,
    ) -> Self {
        Self {
            component,
            pre_auth_code,
            redirect_uri,
            restrict: None,
        }
    }

    /// Offers only these kinds of account (replaces a [`LoginPageUrl::only`]).
    pub fn auth_type(mut self, t: AuthType) -> Self {
        self.restrict = Some(Ok(t));
        self
    }

    /// Offers only this account (replaces an [`LoginPageUrl::auth_type`]: the two are
    /// mutually exclusive).
    pub fn only(mut self, biz_appid: &'a AppId) -> Self {
        self.restrict = Some(Err(biz_appid));
        self
    }

    /// The URL under `mp_base` (`https://mp.weixin.qq.com`, or a simulator).
    ///
    /// # Errors
    /// [`WxError::InvalidInput`] if `mp_base` is not an absolute http(s) URL.
    ///
    /// # Security
    /// The URL carries the pre-auth code; it is for the administrator's browser, not for logs.
    pub fn build(&self, mp_base: &str) -> Result<String, WxError> {
        let mut url = url::Url::parse(mp_base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                WxError::invalid_input("mp base URL must be http or https with a host")
            })?;
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/cgi-bin/componentloginpage"));
        {
            let mut q = url.query_pairs_mut();
            q.clear();
            q.append_pair("component_appid", self.component.as_str());
            q.append_pair("pre_auth_code", self.pre_auth_code.expose_secret());
            q.append_pair("redirect_uri", self.redirect_uri);
            match self.restrict {
                Some(Ok(t)) => {
                    let n = match t {
                        AuthType::OfficialAccounts => "1",
                        AuthType::MiniPrograms => "2",
                        AuthType::Both => "3",
                    };
                    q.append_pair("auth_type", n);
                }
                Some(Err(biz)) => {
                    q.append_pair("biz_appid", biz.as_str());
                }
                None => {}
            }
        }
        url.set_fragment(None);
        Ok(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Action, ConfigPart, ErrCode};

    fn component() -> &'static AppId {
        Box::leak(Box::new(AppId::parse("wx991ec14508b7d1e7").unwrap()))
    }

    fn body(req: &http::Request<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(req.body()).unwrap()
    }

    #[test]
    fn component_token_request_and_answer() {
        let secret = AppSecret::new("s3cr3t");
        let ticket = ComponentVerifyTicket::new("ticket@@@abc");
        let ep = ComponentToken::new(component(), &secret, &ticket);
        let req = ep.build_request(&Hosts::default()).unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/component/api_component_token"
        );
        assert_eq!(
            body(&req),
            serde_json::json!({"component_appid":"wx991ec14508b7d1e7","component_appsecret":"s3cr3t","component_verify_ticket":"ticket@@@abc"})
        );
        // §3's example body.
        let ok = ep
            .parse_body(StatusCode::OK, br#"{"component_access_token":"61W3mEpU66027wgNZ_MhGHNQDHnFATkDa9-2llqrMBjUwxRSNPbVsMmyD-yq8wZETSoE5NQgecigDrSHkPtIYA","expires_in":7200}"#)
            .unwrap();
        assert_eq!(ok.expires_in, 7200);
        assert!(
            ok.component_access_token
                .expose_secret()
                .starts_with("61W3mEpU")
        );
        let e = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":61006,"errmsg":"component ticket is invalid rid: 1-2-3"}"#,
            )
            .unwrap_err();
        assert_eq!(e.errcode(), Some(ErrCode::ComponentTicketInvalid));
        assert_eq!(
            e.action(),
            Action::FixConfiguration(ConfigPart::VerifyTicket)
        );
    }

    #[test]
    fn query_auth_answer() {
        let token = ComponentAccessToken::new("ct");
        let code = AuthorizationCode::new("queryauthcode@@@x");
        let ep = QueryAuth::new(component(), &token, &code);
        let req = ep.build_request(&Hosts::default()).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/cgi-bin/component/api_query_auth?component_access_token=ct"
        );
        assert_eq!(body(&req)["authorization_code"], "queryauthcode@@@x");
        // §5.1's example body.
        let r = ep.parse_body(StatusCode::OK, br#"{"authorization_info":{
      "authorizer_appid":"wxf8b4f85f3a794e77",
      "authorizer_access_token":"QXjUqNqfYVH0yBE1iI_7vuN_9gQbpjfK7hYwJ3P7xOa88a89-Aga5x1NMYJyB8G2yKt1KCl0nPC3W9GJzw0Zzq_dBxc8pxIGUNi_bFes0qM",
      "expires_in":7200,
      "authorizer_refresh_token":"dTo-YCXPL4llX-u1W1pPpnp8Hgm4wpJtlR6iV0doKdY",
      "func_info":[{"funcscope_category":{"id":1}},{"funcscope_category":{"id":15},"confirm_info":{"need_confirm":0,"already_confirm":0,"can_confirm":0}}]}}"#).unwrap();
        let info = r.authorization_info;
        assert_eq!(info.authorizer_appid.as_str(), "wxf8b4f85f3a794e77");
        assert_eq!(info.expires_in, Some(7200));
        assert_eq!(
            info.authorizer_refresh_token.unwrap().expose_secret(),
            "dTo-YCXPL4llX-u1W1pPpnp8Hgm4wpJtlR6iV0doKdY"
        );
        assert_eq!(info.func_info.len(), 2);
        let e = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":61010,"errmsg":"code is expired"}"#,
            )
            .unwrap_err();
        assert_eq!(e.action(), Action::Reauthorize);
    }

    #[test]
    fn authorizer_token_and_its_errors() {
        let token = ComponentAccessToken::new("ct");
        let authorizer = AppId::parse("wxf8b4f85f3a794e77").unwrap();
        let rt = AuthorizerRefreshToken::new("refreshtoken@@@r");
        let ep = AuthorizerToken::new(component(), &token, &authorizer, &rt);
        let req = ep.build_request(&Hosts::default()).unwrap();
        assert_eq!(
            body(&req),
            serde_json::json!({"component_appid":"wx991ec14508b7d1e7","authorizer_appid":"wxf8b4f85f3a794e77","authorizer_refresh_token":"refreshtoken@@@r"})
        );
        let ok = ep
            .parse_body(StatusCode::OK, br#"{"authorizer_access_token":"aaUl5s6kAByLwgV0BhXNuIFFUqfrR8vTATsoSHukcIGqJgrc4KmMJ-JlKoC_-NKCLBvuU1cWPv4vDcLN8Z0pn5I45mpATruU0b51hzeT1f8","expires_in":7200,"authorizer_refresh_token":"BstnRqgTJBXb9N2aJq6L5hzfJwP406tpfahQeLNxX0w"}"#)
            .unwrap();
        assert_eq!(ok.expires_in, 7200);
        for (code, want) in [
            (61023, ErrCode::AuthorizerRefreshTokenInvalid),
            (61003, ErrCode::ComponentUnauthorized),
            (50002, ErrCode::UserLimited),
            (45009, ErrCode::DailyQuotaReached),
        ] {
            let b = format!(r#"{{"errcode":{code},"errmsg":"x rid: 1-2-3"}}"#);
            let e = ep.parse_body(StatusCode::OK, b.as_bytes()).unwrap_err();
            assert_eq!(e.errcode(), Some(want));
        }
        let e = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":42001,"errmsg":"access_token expired"}"#,
            )
            .unwrap_err();
        assert!(e.is_token_invalid(), "a stale component token is refreshed");
    }

    #[test]
    fn authorizer_list_omits_unexchanged_refresh_tokens() {
        let token = ComponentAccessToken::new("ct");
        let ep = GetAuthorizerList::new(component(), &token, 0, 10_000);
        assert_eq!(
            body(&ep.build_request(&Hosts::default()).unwrap())["count"],
            500
        );
        let r = ep
            .parse_body(StatusCode::OK, br#"{"total_count":33,"list":[{"authorizer_appid":"wx1ae72c28abb93c09","refresh_token":"refresh_token_1","auth_time":1558000607},{"authorizer_appid":"wx1ae72c28abb93c0a","auth_time":1685428690}]}"#)
            .unwrap();
        assert_eq!(r.total_count, 33);
        assert!(r.list[0].refresh_token.is_some());
        assert!(r.list[1].refresh_token.is_none());
    }

    #[test]
    fn preauth_info_and_push_restart() {
        let token = ComponentAccessToken::new("ct");
        let pre = CreatePreAuthCode::new(component(), &token)
            .parse_body(StatusCode::OK, br#"{"pre_auth_code":"preauthcode@@@U7EQPjD8dYiElwlPF6ksSZU_WL_09CNUDgbuWBlW9ItYegY9uAzl00mEradfvljd","expires_in":1800}"#)
            .unwrap();
        assert_eq!(pre.expires_in, 1800);
        let a = AppId::parse("wxf8b4f85f3a794e77").unwrap();
        let info = GetAuthorizerInfo::new(component(), &token, &a)
            .parse_body(StatusCode::OK, r#"{"authorizer_info":{"nick_name":"微信SDK Demo Special","user_name":"gh_eb5e3a772040"},"authorization_info":{"authorizer_appid":"wxf8b4f85f3a794e77"}}"#.as_bytes())
            .unwrap();
        assert_eq!(info.user_name(), Some("gh_eb5e3a772040"));
        let secret = AppSecret::new("s");
        let start = StartPushTicket::new(component(), &secret);
        start
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":0,"errmsg":"in a normal state"}"#,
            )
            .unwrap();
        assert_eq!(
            body(&start.build_request(&Hosts::default()).unwrap()),
            serde_json::json!({"component_appid":"wx991ec14508b7d1e7","component_secret":"s"})
        );
    }

    #[test]
    fn component_oauth_requests() {
        let token = ComponentAccessToken::new("ct");
        let a = AppId::parse("wxf8b4f85f3a794e77").unwrap();
        let req =
            ComponentExchangeCode::new(&a, crate::secret::OAuthCode::new("c"), component(), &token)
                .build_request(&Hosts::default())
                .unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/sns/oauth2/component/access_token?appid=wxf8b4f85f3a794e77&code=c&grant_type=authorization_code&component_appid=wx991ec14508b7d1e7&component_access_token=ct"
        );
        let rt = RefreshToken::new("r");
        let req = ComponentRefreshUserToken::new(&a, &rt, component(), &token)
            .build_request(&Hosts::default())
            .unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://api.weixin.qq.com/sns/oauth2/component/refresh_token?appid=wxf8b4f85f3a794e77&grant_type=refresh_token&component_appid=wx991ec14508b7d1e7&component_access_token=ct&refresh_token=r"
        );
    }

    #[test]
    fn login_page_url() {
        let pre = PreAuthCode::new("preauthcode@@@p");
        let url = LoginPageUrl::new(
            component(),
            &pre,
            "https://hub.example/component/r?state=a b",
        )
        .auth_type(AuthType::OfficialAccounts)
        .build(DEFAULT_MP_BASE)
        .unwrap();
        assert_eq!(
            url,
            "https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=wx991ec14508b7d1e7&pre_auth_code=preauthcode%40%40%40p&redirect_uri=https%3A%2F%2Fhub.example%2Fcomponent%2Fr%3Fstate%3Da+b&auth_type=1"
        );
        let biz = AppId::parse("wxf8b4f85f3a794e77").unwrap();
        let url = LoginPageUrl::new(component(), &pre, "http://127.0.0.1/x")
            .auth_type(AuthType::Both)
            .only(&biz)
            .build("http://127.0.0.1:9000/sim")
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:9000/sim/cgi-bin/componentloginpage?"));
        assert!(url.ends_with("&biz_appid=wxf8b4f85f3a794e77"), "{url}");
        assert!(!url.contains("auth_type"));
        assert!(
            LoginPageUrl::new(component(), &pre, "x")
                .build("ftp://x")
                .is_err()
        );
    }
}
