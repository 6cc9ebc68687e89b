//! Authorize-page URLs for web authorization (`/connect/oauth2/authorize`) and website QR
//! login (`/connect/qrconnect`).
//!
//! The URL is built by hand, not by a URL library, because its exact bytes matter: every SDK
//! emits the parameters in the order `appid, redirect_uri, response_type, scope, state`, the
//! `redirect_uri` is percent-encoded with nothing left safe but unreserved characters (like
//! Python's `quote(safe="")`), and `#wechat_redirect` must end it.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::WxError;
use crate::hosts::Hosts;
use crate::ids::AppId;

/// Everything but `A-Z a-z 0-9 - . _ ~` is escaped, matching Python's `quote(s, safe="")`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `scope` of an authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// `snsapi_base`: silent, yields the OpenID only.
    #[serde(rename = "snsapi_base")]
    SnsapiBase,
    /// `snsapi_userinfo`: asks consent (except from the account's chat or menu), yields the
    /// profile.
    #[serde(rename = "snsapi_userinfo")]
    SnsapiUserinfo,
    /// `snsapi_login`: website QR login with an open-platform website AppID.
    #[serde(rename = "snsapi_login")]
    SnsapiLogin,
}

impl Scope {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SnsapiBase => "snsapi_base",
            Scope::SnsapiUserinfo => "snsapi_userinfo",
            Scope::SnsapiLogin => "snsapi_login",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = WxError;

    fn from_str(s: &str) -> Result<Self, WxError> {
        match s {
            "snsapi_base" => Ok(Scope::SnsapiBase),
            "snsapi_userinfo" => Ok(Scope::SnsapiUserinfo),
            "snsapi_login" => Ok(Scope::SnsapiLogin),
            _ => Err(WxError::invalid_input("unknown scope")),
        }
    }
}

/// The `state` parameter: at most 128 bytes of `a-zA-Z0-9`, possibly empty.
///
/// The platform passes it back unchanged; use it as the CSRF token of the flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct OAuthState(String);

impl OAuthState {
    /// The longest state the platform accepts.
    pub const MAX_LEN: usize = 128;

    /// Parses a state.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] if it is longer than 128 bytes or has a character outside
    /// `a-zA-Z0-9`.
    pub fn parse(value: impl Into<String>) -> Result<Self, WxError> {
        let value = value.into();
        if value.len() > Self::MAX_LEN {
            return Err(WxError::invalid_input("state is longer than 128 bytes"));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(WxError::invalid_input("state may only contain a-zA-Z0-9"));
        }
        Ok(Self(value))
    }

    /// A fresh random state of `len` alphanumeric characters (at most 128) from the OS RNG.
    pub fn random(len: usize) -> Self {
        use rand::Rng as _;
        use rand::distributions::Alphanumeric;
        let s = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(len.min(Self::MAX_LEN))
            .map(char::from)
            .collect();
        Self(s)
    }

    /// The empty state.
    pub fn empty() -> Self {
        Self(String::new())
    }

    /// The state as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for OAuthState {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An absolute `http`/`https` URL to send the user back to, kept as the caller wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RedirectUri {
    raw: String,
    parsed: Url,
}

impl RedirectUri {
    /// Parses a redirect URI.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] unless it is an absolute `http`/`https` URL with a host and
    /// without a fragment (the platform appends `?code=&state=`, which a fragment would
    /// swallow).
    pub fn parse(value: impl Into<String>) -> Result<Self, WxError> {
        let raw = value.into();
        let parsed =
            Url::parse(&raw).map_err(|_| WxError::invalid_input("redirect_uri does not parse"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(WxError::invalid_input(
                "redirect_uri must be http or https with a host",
            ));
        }
        if parsed.fragment().is_some() {
            return Err(WxError::invalid_input(
                "redirect_uri must not have a fragment",
            ));
        }
        Ok(Self { raw, parsed })
    }

    /// The URI as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The host, to compare with the account's web-authorization domain (it must match
    /// exactly, or the page shows error 10003).
    pub fn host(&self) -> &str {
        self.parsed.host_str().unwrap_or_default()
    }
}

/// Builder for the official-account authorize URL.
///
/// ```
/// use wx_api::{AppId, Hosts};
/// use wx_api::oauth::{AuthorizeUrl, OAuthState, RedirectUri, Scope};
///
/// let url = AuthorizeUrl::new(
///     AppId::parse("wx2c2769f8efd9abc2")?,
///     RedirectUri::parse("https://example.com/cb?x=1")?,
///     Scope::SnsapiUserinfo,
/// )?
/// .state(OAuthState::parse("abc123")?)
/// .build(&Hosts::default());
/// assert_eq!(
///     url,
///     "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx2c2769f8efd9abc2\
///      &redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fx%3D1&response_type=code\
///      &scope=snsapi_userinfo&state=abc123#wechat_redirect"
/// );
/// # Ok::<(), wx_api::WxError>(())
/// ```
#[derive(Clone, Debug)]
pub struct AuthorizeUrl {
    appid: AppId,
    redirect_uri: RedirectUri,
    scope: Scope,
    state: OAuthState,
    force_popup: bool,
    component: Option<AppId>,
}

impl AuthorizeUrl {
    /// Starts an authorize URL.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] for [`Scope::SnsapiLogin`], which only exists on the QR
    /// login page ([`QrConnectUrl`]).
    pub fn new(appid: AppId, redirect_uri: RedirectUri, scope: Scope) -> Result<Self, WxError> {
        if scope == Scope::SnsapiLogin {
            return Err(WxError::invalid_input(
                "snsapi_login is for qrconnect, not the official-account authorize page",
            ));
        }
        Ok(Self {
            appid,
            redirect_uri,
            scope,
            state: OAuthState::empty(),
            force_popup: false,
            component: None,
        })
    }

    /// Sets the state (default empty).
    pub fn state(mut self, state: OAuthState) -> Self {
        self.state = state;
        self
    }

    /// Authorization on behalf of an account authorized to this third-party platform
    /// (`component_appid=`, after `state`, as the doc insists on the order): the redirect
    /// URI must be under the platform's 公众号开发域名, the redirect adds `appid=`, and the code
    /// is exchanged with [`crate::endpoint::component::ComponentExchangeCode`].
    pub fn component(mut self, component_appid: AppId) -> Self {
        self.component = Some(component_appid);
        self
    }

    /// Adds `forcePopup=true`: show the consent popup even when it could be skipped.
    pub fn force_popup(mut self, force: bool) -> Self {
        self.force_popup = force;
        self
    }

    /// The URL to send the user to.
    pub fn build(&self, hosts: &Hosts) -> String {
        let mut url = base_url(
            hosts,
            "/connect/oauth2/authorize",
            &self.appid,
            &self.redirect_uri,
            self.scope,
            &self.state,
        );
        if let Some(c) = &self.component {
            url.push_str("&component_appid=");
            url.push_str(c.as_str());
        }
        if self.force_popup {
            url.push_str("&forcePopup=true");
        }
        url.push_str("#wechat_redirect");
        url
    }
}

/// The language of the QR login page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QrLang {
    /// `cn` (the default).
    Cn,
    /// `en`.
    En,
}

/// Builder for the website QR login URL (`/connect/qrconnect`, scope `snsapi_login`), used
/// with an open-platform *website* AppID.
#[derive(Clone, Debug)]
pub struct QrConnectUrl {
    appid: AppId,
    redirect_uri: RedirectUri,
    state: OAuthState,
    lang: Option<QrLang>,
}

impl QrConnectUrl {
    /// Starts a QR login URL.
    pub fn new(appid: AppId, redirect_uri: RedirectUri) -> Self {
        Self {
            appid,
            redirect_uri,
            state: OAuthState::empty(),
            lang: None,
        }
    }

    /// Sets the state (default empty).
    pub fn state(mut self, state: OAuthState) -> Self {
        self.state = state;
        self
    }

    /// Sets the page language.
    pub fn lang(mut self, lang: QrLang) -> Self {
        self.lang = Some(lang);
        self
    }

    /// The URL to send the user to.
    pub fn build(&self, hosts: &Hosts) -> String {
        let mut url = base_url(
            hosts,
            "/connect/qrconnect",
            &self.appid,
            &self.redirect_uri,
            Scope::SnsapiLogin,
            &self.state,
        );
        match self.lang {
            Some(QrLang::Cn) => url.push_str("&lang=cn"),
            Some(QrLang::En) => url.push_str("&lang=en"),
            None => {}
        }
        url.push_str("#wechat_redirect");
        url
    }
}

fn base_url(
    hosts: &Hosts,
    path: &str,
    appid: &AppId,
    redirect_uri: &RedirectUri,
    scope: Scope,
    state: &OAuthState,
) -> String {
    // An empty state is still sent (`state=`): it keeps the parameter order fixed, and the
    // page has an error (10013) for a missing state.
    format!(
        "{prefix}?appid={appid}&redirect_uri={redirect}&response_type=code&scope={scope}&state={state}",
        prefix = hosts.open_url_prefix(path),
        appid = appid.as_str(),
        redirect = utf8_percent_encode(redirect_uri.as_str(), COMPONENT),
        scope = scope.as_str(),
        state = state.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appid() -> AppId {
        AppId::parse("wx2c2769f8efd9abc2").unwrap()
    }

    #[test]
    fn authorize_url_exact_bytes() {
        let url = AuthorizeUrl::new(
            appid(),
            RedirectUri::parse("https://www.example.com/oauth/cb?next=/a b&x=é").unwrap(),
            Scope::SnsapiBase,
        )
        .unwrap()
        .state(OAuthState::parse("STATE123").unwrap())
        .build(&Hosts::default());
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx2c2769f8efd9abc2&redirect_uri=https%3A%2F%2Fwww.example.com%2Foauth%2Fcb%3Fnext%3D%2Fa%20b%26x%3D%C3%A9&response_type=code&scope=snsapi_base&state=STATE123#wechat_redirect"
        );
    }

    #[test]
    fn on_behalf_of_a_component() {
        // §7's order: component_appid after state, before the fragment.
        let url = AuthorizeUrl::new(
            appid(),
            RedirectUri::parse("https://a.example/cb").unwrap(),
            Scope::SnsapiBase,
        )
        .unwrap()
        .state(OAuthState::parse("S").unwrap())
        .component(AppId::parse("wx991ec14508b7d1e7").unwrap())
        .build(&Hosts::default());
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx2c2769f8efd9abc2&redirect_uri=https%3A%2F%2Fa.example%2Fcb&response_type=code&scope=snsapi_base&state=S&component_appid=wx991ec14508b7d1e7#wechat_redirect"
        );
    }

    #[test]
    fn empty_state_and_force_popup() {
        let url = AuthorizeUrl::new(
            appid(),
            RedirectUri::parse("http://127.0.0.1:8080/cb").unwrap(),
            Scope::SnsapiUserinfo,
        )
        .unwrap()
        .force_popup(true)
        .build(&Hosts::single("http://127.0.0.1:9000").unwrap());
        assert_eq!(
            url,
            "http://127.0.0.1:9000/connect/oauth2/authorize?appid=wx2c2769f8efd9abc2&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcb&response_type=code&scope=snsapi_userinfo&state=&forcePopup=true#wechat_redirect"
        );
    }

    #[test]
    fn login_scope_only_on_qrconnect() {
        assert!(
            AuthorizeUrl::new(
                appid(),
                RedirectUri::parse("https://a.example/").unwrap(),
                Scope::SnsapiLogin
            )
            .is_err()
        );
        let url = QrConnectUrl::new(appid(), RedirectUri::parse("https://a.example/cb").unwrap())
            .state(OAuthState::parse("s").unwrap())
            .lang(QrLang::En)
            .build(&Hosts::default());
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/qrconnect?appid=wx2c2769f8efd9abc2&redirect_uri=https%3A%2F%2Fa.example%2Fcb&response_type=code&scope=snsapi_login&state=s&lang=en#wechat_redirect"
        );
    }

    #[test]
    fn state_rules() {
        OAuthState::parse("").unwrap();
        OAuthState::parse("a".repeat(128)).unwrap();
        assert!(OAuthState::parse("a".repeat(129)).is_err());
        for bad in ["a-b", "a b", "a_b", "中", "a=b", "a&b"] {
            assert!(OAuthState::parse(bad).is_err(), "{bad}");
        }
        let r = OAuthState::random(32);
        assert_eq!(r.as_str().len(), 32);
        OAuthState::parse(r.as_str()).unwrap();
        assert_eq!(OAuthState::random(1000).as_str().len(), 128);
    }

    #[test]
    fn redirect_uri_rules() {
        for bad in [
            "",
            "/cb",
            "ftp://a/",
            "https://a/#frag",
            "javascript:alert(1)",
        ] {
            assert!(RedirectUri::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RedirectUri::parse("https://pay.qq.com/x").unwrap().host(),
            "pay.qq.com"
        );
    }

    #[test]
    fn scope_strings() {
        for s in [Scope::SnsapiBase, Scope::SnsapiUserinfo, Scope::SnsapiLogin] {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("snsapi_other".parse::<Scope>().is_err());
    }

    proptest::proptest! {
        /// The encoded redirect_uri decodes back to the original and leaves nothing that
        /// could split the outer query.
        #[test]
        fn redirect_encoding_round_trips(path in "[ -~]{0,40}") {
            let raw = format!("https://a.example/{}", path.replace('#', ""));
            let Ok(uri) = RedirectUri::parse(raw.clone()) else { return Ok(()); };
            let enc = utf8_percent_encode(uri.as_str(), COMPONENT).to_string();
            proptest::prop_assert!(!enc.contains(['&', '=', '?', '#', '/', ':', ' ', '+']));
            let dec = percent_encoding::percent_decode_str(&enc).decode_utf8().unwrap();
            proptest::prop_assert_eq!(dec, raw);
        }
    }
}
