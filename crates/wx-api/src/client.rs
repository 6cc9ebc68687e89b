//! The async client: one [`HttpClient`] trait for transports, and [`Client`], which runs
//! [`Endpoint`]s over it.
//!
//! The client adds no retry, cache or refresh policy: those belong to the central server,
//! which reads [`WxError::action`] to decide. It also logs nothing, so no URL (with its
//! `access_token=` or `secret=`) can leak from here.

#[cfg(feature = "client")]
mod reqwest_client;

#[cfg(feature = "client")]
pub use reqwest_client::{HttpConfig, ReqwestClient};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::endpoint::component;
use crate::endpoint::quota::{
    ApiQuota, ClearApiQuota, ClearQuota, ClearQuotaBySecret, GetApiQuota,
};
use crate::endpoint::sns::{
    CheckUserToken, ExchangeCode, GetSnsUserInfo, RefreshUserToken, SnsUserInfo, UserToken,
};
use crate::endpoint::ticket::{GetCardTicket, GetJsapiTicket, TicketResponse};
use crate::endpoint::token::{AccessTokenResponse, GetAccessToken, GetStableAccessToken};
use crate::endpoint::user::{BatchGetUserInfo, GetUserInfo, GetUserList, UserInfo, UserList};
use crate::error::{TransportKind, WxError};
use crate::hosts::Hosts;
use crate::ids::{AppId, OpenId};
use crate::secret::{
    AccessToken, AppSecret, CardTicket, JsapiTicket, OAuthCode, RefreshToken, UserAccessToken,
};

/// A boxed, `Send` future, so that [`HttpClient`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A transport failure reported by an [`HttpClient`].
///
/// # Security
///
/// Implementations must not put the request URL in `source`: it carries credentials.
#[derive(Debug)]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportKind,
    /// The underlying error, URL stripped.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// A failure of `kind` with an optional cause.
    pub fn new(
        kind: TransportKind,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self { kind, source }
    }

    fn into_wx(self, endpoint: &'static str) -> WxError {
        WxError::Transport {
            kind: self.kind,
            endpoint,
            source: self.source,
        }
    }
}

/// Sends one request and returns the whole response. Implemented by [`ReqwestClient`] and by
/// any `Fn(http::Request<Vec<u8>>) -> impl Future<Output = Result<http::Response<Vec<u8>>,
/// TransportError>>`, so tests and other stacks can plug in.
///
/// Implementations must **not follow redirects**: a redirect from an API host is either a
/// misconfiguration or an attack, and following it would send the query (with its token) to
/// another host.
pub trait HttpClient: Send + Sync {
    /// Sends `request`.
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>, TransportError>>;
}

impl<F, Fut> HttpClient for F
where
    F: Fn(http::Request<Vec<u8>>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<http::Response<Vec<u8>>, TransportError>> + Send + 'static,
{
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>, TransportError>> {
        Box::pin(self(request))
    }
}

/// Runs endpoints against the platform (or a simulator) over an [`HttpClient`].
///
/// Cheap to clone: the transport is shared.
#[derive(Clone)]
pub struct Client {
    http: Arc<dyn HttpClient>,
    hosts: Hosts,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client over the default [`ReqwestClient`] (rustls, no redirects, timeouts from
    /// [`HttpConfig::default`]).
    ///
    /// # Errors
    ///
    /// [`WxError::Transport`] if the TLS backend cannot be initialised.
    #[cfg(feature = "client")]
    pub fn new(hosts: Hosts) -> Result<Self, WxError> {
        Ok(Self::with_http(
            hosts,
            Arc::new(ReqwestClient::new(&HttpConfig::default())?),
        ))
    }

    /// A client over any transport.
    pub fn with_http(hosts: Hosts, http: Arc<dyn HttpClient>) -> Self {
        Self { http, hosts }
    }

    /// The hosts this client calls.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// Builds, sends and parses one endpoint call.
    ///
    /// # Errors
    ///
    /// Whatever building, sending or parsing returns; see [`WxError`].
    pub async fn call<E: Endpoint + Sync>(&self, endpoint: &E) -> Result<E::Output, WxError> {
        let request = endpoint.build_request(&self.hosts)?;
        let response = self
            .http
            .send(request)
            .await
            .map_err(|e| e.into_wx(E::PATH))?;
        endpoint.parse_response(&response)
    }

    /// `GET /cgi-bin/token`: a new global token (the previous one dies 300 s later).
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn fetch_access_token(
        &self,
        appid: &AppId,
        secret: &AppSecret,
    ) -> Result<AccessTokenResponse, WxError> {
        self.call(&GetAccessToken::new(appid, secret)).await
    }

    /// `POST /cgi-bin/stable_token`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn fetch_stable_access_token(
        &self,
        appid: &AppId,
        secret: &AppSecret,
        force_refresh: bool,
    ) -> Result<AccessTokenResponse, WxError> {
        self.call(&GetStableAccessToken::new(appid, secret).force_refresh(force_refresh))
            .await
    }

    /// `POST /cgi-bin/clear_quota`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn clear_quota(&self, token: &AccessToken, appid: &AppId) -> Result<(), WxError> {
        self.call(&ClearQuota::new(token, appid)).await
    }

    /// `POST /cgi-bin/clear_quota/v2`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn clear_quota_by_secret(
        &self,
        appid: &AppId,
        secret: &AppSecret,
    ) -> Result<(), WxError> {
        self.call(&ClearQuotaBySecret::new(appid, secret)).await
    }

    /// `POST /cgi-bin/openapi/quota/get`.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] for a malformed `cgi_path`; otherwise see [`Client::call`].
    pub async fn api_quota(
        &self,
        token: &AccessToken,
        cgi_path: &str,
    ) -> Result<ApiQuota, WxError> {
        self.call(&GetApiQuota::new(token, cgi_path)?).await
    }

    /// `POST /cgi-bin/openapi/quota/clear`.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] for a malformed `cgi_path`; otherwise see [`Client::call`].
    pub async fn clear_api_quota(
        &self,
        token: &AccessToken,
        cgi_path: &str,
    ) -> Result<(), WxError> {
        self.call(&ClearApiQuota::new(token, cgi_path)?).await
    }

    /// `GET /cgi-bin/ticket/getticket?type=jsapi`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn jsapi_ticket(
        &self,
        token: &AccessToken,
    ) -> Result<TicketResponse<JsapiTicket>, WxError> {
        self.call(&GetJsapiTicket::new(token)).await
    }

    /// `GET /cgi-bin/ticket/getticket?type=wx_card`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn card_ticket(
        &self,
        token: &AccessToken,
    ) -> Result<TicketResponse<CardTicket>, WxError> {
        self.call(&GetCardTicket::new(token)).await
    }

    /// `GET /cgi-bin/user/info`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn user_info(
        &self,
        token: &AccessToken,
        openid: &OpenId,
    ) -> Result<UserInfo, WxError> {
        self.call(&GetUserInfo::new(token, openid)).await
    }

    /// `POST /cgi-bin/user/info/batchget` for 1 to 100 users.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] for 0 or more than 100 OpenIDs; otherwise see
    /// [`Client::call`].
    pub async fn user_info_batch(
        &self,
        token: &AccessToken,
        openids: &[OpenId],
    ) -> Result<Vec<UserInfo>, WxError> {
        self.call(&BatchGetUserInfo::new(
            token,
            openids.iter().map(|o| (o, None)),
        )?)
        .await
    }

    /// `GET /cgi-bin/user/get`, from the start or after `next_openid`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn user_list(
        &self,
        token: &AccessToken,
        next_openid: Option<&OpenId>,
    ) -> Result<UserList, WxError> {
        let ep = match next_openid {
            Some(next) => GetUserList::after(token, next),
            None => GetUserList::first(token),
        };
        self.call(&ep).await
    }

    /// `GET /sns/oauth2/access_token`: exchanges an OAuth code (single use).
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn exchange_code(
        &self,
        appid: &AppId,
        secret: &AppSecret,
        code: &OAuthCode,
    ) -> Result<UserToken, WxError> {
        self.call(&ExchangeCode::new(appid, secret, code)).await
    }

    /// `GET /sns/oauth2/refresh_token`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn refresh_user_token(
        &self,
        appid: &AppId,
        refresh_token: &RefreshToken,
    ) -> Result<UserToken, WxError> {
        self.call(&RefreshUserToken::new(appid, refresh_token))
            .await
    }

    /// `GET /sns/auth`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn check_user_token(
        &self,
        token: &UserAccessToken,
        openid: &OpenId,
    ) -> Result<(), WxError> {
        self.call(&CheckUserToken::new(token, openid)).await
    }

    /// `GET /sns/userinfo`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`]; a `snsapi_base` token gets `48001`, whose action is
    /// [`Reauthorize`](crate::error::Action::Reauthorize).
    pub async fn sns_user_info(
        &self,
        token: &UserAccessToken,
        openid: &OpenId,
    ) -> Result<SnsUserInfo, WxError> {
        self.call(&GetSnsUserInfo::new(token, openid)).await
    }

    /// `POST /cgi-bin/component/api_component_token`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`]; 61005/61006 for an expired or unknown ticket.
    pub async fn component_token(
        &self,
        component: &AppId,
        secret: &AppSecret,
        ticket: &component::ComponentVerifyTicket,
    ) -> Result<component::ComponentTokenResponse, WxError> {
        self.call(&component::ComponentToken::new(component, secret, ticket))
            .await
    }

    /// `POST /cgi-bin/component/api_create_preauthcode`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn create_preauth_code(
        &self,
        component: &AppId,
        token: &component::ComponentAccessToken,
    ) -> Result<component::PreAuthCodeResponse, WxError> {
        self.call(&component::CreatePreAuthCode::new(component, token))
            .await
    }

    /// `POST /cgi-bin/component/api_query_auth`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`]; 61009/61010 for a bad or expired code.
    pub async fn query_auth(
        &self,
        component: &AppId,
        token: &component::ComponentAccessToken,
        code: &component::AuthorizationCode,
    ) -> Result<component::QueryAuthResponse, WxError> {
        self.call(&component::QueryAuth::new(component, token, code))
            .await
    }

    /// `POST /cgi-bin/component/api_authorizer_token`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`]; 61023 for a stale refresh token, 61003 once revoked.
    pub async fn authorizer_token(
        &self,
        component: &AppId,
        token: &component::ComponentAccessToken,
        authorizer: &AppId,
        refresh_token: &component::AuthorizerRefreshToken,
    ) -> Result<component::AuthorizerTokenResponse, WxError> {
        self.call(&component::AuthorizerToken::new(
            component,
            token,
            authorizer,
            refresh_token,
        ))
        .await
    }

    /// `POST /cgi-bin/component/api_get_authorizer_info`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn authorizer_info(
        &self,
        component: &AppId,
        token: &component::ComponentAccessToken,
        authorizer: &AppId,
    ) -> Result<component::AuthorizerInfoResponse, WxError> {
        self.call(&component::GetAuthorizerInfo::new(
            component, token, authorizer,
        ))
        .await
    }

    /// `POST /cgi-bin/component/api_get_authorizer_list`, one page.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn authorizer_list(
        &self,
        component: &AppId,
        token: &component::ComponentAccessToken,
        offset: u64,
        count: u32,
    ) -> Result<component::AuthorizerListResponse, WxError> {
        self.call(&component::GetAuthorizerList::new(
            component, token, offset, count,
        ))
        .await
    }

    /// `POST /cgi-bin/component/api_start_push_ticket`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn start_push_ticket(
        &self,
        component: &AppId,
        secret: &AppSecret,
    ) -> Result<(), WxError> {
        self.call(&component::StartPushTicket::new(component, secret))
            .await
    }

    /// `GET /sns/oauth2/component/access_token`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`]; 40001 for a stale component token.
    pub async fn component_exchange_code(
        &self,
        appid: &AppId,
        code: OAuthCode,
        component: &AppId,
        token: &component::ComponentAccessToken,
    ) -> Result<UserToken, WxError> {
        self.call(&component::ComponentExchangeCode::new(
            appid, code, component, token,
        ))
        .await
    }

    /// `GET /sns/oauth2/component/refresh_token`.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub async fn component_refresh_user_token(
        &self,
        appid: &AppId,
        refresh_token: &RefreshToken,
        component: &AppId,
        token: &component::ComponentAccessToken,
    ) -> Result<UserToken, WxError> {
        self.call(&component::ComponentRefreshUserToken::new(
            appid,
            refresh_token,
            component,
            token,
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrCode;
    use std::sync::Mutex;

    /// A transport that records the request and answers with a canned body.
    fn canned(
        status: u16,
        body: &'static str,
        seen: Arc<Mutex<Vec<String>>>,
    ) -> Arc<dyn HttpClient> {
        Arc::new(move |req: http::Request<Vec<u8>>| {
            seen.lock()
                .unwrap()
                .push(format!("{} {}", req.method(), req.uri()));
            async move {
                Ok(http::Response::builder()
                    .status(status)
                    .body(body.as_bytes().to_vec())
                    .unwrap())
            }
        })
    }

    #[tokio::test]
    async fn call_sends_the_built_request_and_parses() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = Client::with_http(
            Hosts::single("http://127.0.0.1:1").unwrap(),
            canned(
                200,
                r#"{"access_token":"T","expires_in":7200}"#,
                seen.clone(),
            ),
        );
        let appid = AppId::parse("wx2c2769f8efd9abc2").unwrap();
        let t = client
            .fetch_access_token(&appid, &AppSecret::new("S"))
            .await
            .unwrap();
        assert_eq!(t.access_token.expose_secret(), "T");
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [
                "GET http://127.0.0.1:1/cgi-bin/token?grant_type=client_credential&appid=wx2c2769f8efd9abc2&secret=S"
            ]
        );
    }

    #[tokio::test]
    async fn transport_errors_carry_the_endpoint_only() {
        let client = Client::with_http(
            Hosts::default(),
            Arc::new(|_req: http::Request<Vec<u8>>| async {
                Err(TransportError::new(TransportKind::Timeout, None))
            }),
        );
        let err = client
            .user_info(
                &AccessToken::new("SECRET_TOKEN"),
                &OpenId::parse("o1").unwrap(),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            WxError::Transport {
                kind: TransportKind::Timeout,
                endpoint: "/cgi-bin/user/info",
                ..
            }
        ));
        assert!(!format!("{err} {err:?}").contains("SECRET_TOKEN"));
    }

    #[tokio::test]
    async fn invalid_input_is_refused_before_sending() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = Client::with_http(Hosts::default(), canned(200, "{}", seen.clone()));
        let t = AccessToken::new("T");
        let ids: Vec<OpenId> = (0..101)
            .map(|i| OpenId::parse(format!("o{i}")).unwrap())
            .collect();
        assert!(matches!(
            client.user_info_batch(&t, &ids).await,
            Err(WxError::InvalidInput { .. })
        ));
        assert!(client.api_quota(&t, "nope").await.is_err());
        assert!(seen.lock().unwrap().is_empty());

        let client = Client::with_http(
            Hosts::default(),
            canned(
                200,
                r#"{"errcode":45011,"errmsg":"api minute-quota reach limit"}"#,
                seen.clone(),
            ),
        );
        let err = client.jsapi_ticket(&t).await.unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::MinuteQuotaReached));
    }
}
