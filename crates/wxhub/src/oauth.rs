//! Web authorization (网页授权) end to end, so a business page gets the
//! person's identity without touching a code, a secret or a 48001.
//!
//! - `state` is `id ‖ expiry ‖ HMAC`: signed, time-limited, at most 128
//!   characters of a-zA-Z0-9, and needs no cookie (the WeChat webview loses
//!   them). The id points at a stored record (the return URL), used once.
//! - A page that wants the profile first goes through a silent `snsapi_base`
//!   round: a person with a userinfo grant on file is not asked again; one
//!   without (or whose grant answers 48001) is sent to `snsapi_userinfo`.
//! - WeChat sometimes calls the callback twice with the same code; the second
//!   call gets the same result instead of a 40163 error page. A callback URL
//!   is not a reusable login: a replay gets the same hand-over ticket while
//!   it is unredeemed and alive (the ticket is derived from the state and the
//!   code, never minted twice), then "already used"; a failed code exchange
//!   is remembered and its replays get the real reason at once.
//! - The result goes back as a one-time ticket the business server redeems.
//! - What anonymous visitors can make the hub store is bounded: `return_to`
//!   is at most [`MAX_RETURN_TO`] bytes and an account holds at most
//!   `oauth.max_pending_states` states.
//!
//! # Layout
//! - `state`: the signed `state` parameter.
//! - `callback`: WeChat's redirect back, replays, the silent probe and
//!   escalation to consent.
//! - `grants`: a person's grant, the profile read through it, and
//!   `GET /v1/apps/{appid}/users/{openid}`.
//! - `tickets`: the hand-over ticket and its redemption.
//!
//! Every failure is an [`ApiError`] with its own code (`expired_state`,
//! `code_used`, ...); the routes answer it as JSON or, on the callback, as a
//! page for the person with its "start again" link.

mod callback;
mod grants;
mod state;
mod tickets;

pub use callback::callback;
pub use grants::{ProfileError, profile_via_grant, user};
pub use state::{BadState, sign_state, verify_state};
pub use tickets::redeem;

use sha2::{Digest, Sha256};
use wx_api::oauth::{AuthorizeUrl, OAuthState, QrConnectUrl, RedirectUri, Scope};

use crate::app::App;
use crate::config::{AccountConfig, AccountKind, Via, origin_of};
use crate::error::ApiError;
use crate::store::{Stage, StateRecord, scope_from_name, scope_name};

/// Parses `scope=` of the authorize route: `base`, `userinfo` or `login`,
/// or the platform's own names.
pub fn parse_scope(s: &str) -> Option<Scope> {
    scope_from_name(s).or_else(|| s.parse().ok())
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn account(app: &App, appid: &str) -> Result<AccountConfig, ApiError> {
    app.creds
        .account(appid)
        .map(|a| a.cfg.clone())
        .ok_or_else(|| ApiError::not_found(format!("no account {appid} in this hub")))
}

/// The authorize route's URL for a page, used for "start again" links.
fn restart_url(app: &App, appid: &str, want: Scope, return_to: &str) -> String {
    let q = serde_urlencoded::to_string([("scope", scope_name(want)), ("return_to", return_to)])
        .unwrap_or_default();
    format!("{}/oauth/{appid}/authorize?{q}", app.public_url)
}

/// The longest `return_to` accepted: a page URL, not a place to store data.
pub const MAX_RETURN_TO: usize = 2048;

/// Checks `return_to` against the account's allowed origins: no open redirect.
fn check_return_to(account: &AccountConfig, return_to: &str) -> Result<url::Url, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("return_to: {m}"));
    if return_to.len() > MAX_RETURN_TO {
        return Err(bad(&format!("longer than {MAX_RETURN_TO} bytes")));
    }
    let u = url::Url::parse(return_to).map_err(|_| bad("not an absolute URL"))?;
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some()
    {
        return Err(bad("must be a plain http or https URL"));
    }
    let origin = origin_of(&u).ok_or_else(|| bad("has no host"))?;
    if !account.oauth_return_origins.contains(&origin) {
        return Err(bad(&format!(
            "{origin} is not one of the account's oauth_return_origins"
        )));
    }
    Ok(u)
}

/// Starts a web authorization: records a state and returns WeChat's URL.
///
/// # Errors
/// [`ApiError`]: unknown account, a scope the account cannot do, a bad
/// `return_to`, too many sign-ins in progress, a store failure.
pub async fn start(
    app: &App,
    appid: &str,
    want: Scope,
    return_to: &str,
) -> Result<String, ApiError> {
    let account = &account(app, appid)?;
    if let Via::Revoked { component, .. } = &account.via {
        return Err(crate::credentials::CredError::Revoked {
            appid: appid.to_string(),
            component: component.as_str().to_string(),
        }
        .into());
    }
    match (account.kind, want) {
        (AccountKind::Website, Scope::SnsapiLogin)
        | (AccountKind::Official, Scope::SnsapiBase | Scope::SnsapiUserinfo) => {}
        (AccountKind::Website, _) => {
            return Err(ApiError::bad_request(
                "scope: a website app signs in with scope=login",
            ));
        }
        (AccountKind::Official, Scope::SnsapiLogin) => {
            return Err(ApiError::bad_request(
                "scope: login is for website apps; use base or userinfo",
            ));
        }
    }
    if account.oauth_return_origins.is_empty() {
        return Err(ApiError::forbidden(format!(
            "web authorization is not enabled for {appid}: set accounts.oauth_return_origins"
        )));
    }
    check_return_to(account, return_to)?;
    let stage = match want {
        Scope::SnsapiUserinfo => Stage::Probe,
        Scope::SnsapiBase => Stage::Base,
        Scope::SnsapiLogin => Stage::Login,
    };
    redirect_to_wechat(app, account, want, stage, return_to).await
}

/// Records a state for this round of a sign-in and returns WeChat's URL
/// for it.
async fn redirect_to_wechat(
    app: &App,
    account: &AccountConfig,
    want: Scope,
    stage: Stage,
    return_to: &str,
) -> Result<String, ApiError> {
    let now = app.clock.now();
    let appid = account.appid.as_str();
    let id = state::state_id();
    let expires_at = now + app.config.oauth.state_ttl_secs;
    let saved = app
        .store
        .save_state(
            &id,
            &StateRecord {
                appid: appid.to_string(),
                want,
                stage,
                return_to: return_to.to_string(),
                expires_at,
            },
            now,
            app.config.oauth.max_pending_states,
        )
        .await
        .map_err(|e| ApiError::internal(format_args!("saving a state: {e}")))?;
    if !saved {
        app.metrics
            .inc("wxhub_oauth_states_refused_total", &[("appid", appid)]);
        return Err(ApiError::too_many_sign_ins(format!(
            "{appid} has {} sign-ins in progress (oauth.max_pending_states); try again in a minute",
            app.config.oauth.max_pending_states
        )));
    }
    // What follows is built from the hub's own configuration and state:
    // a failure here is a bug or a bad `oauth.public_url`, not the caller's.
    let state = OAuthState::parse(sign_state(
        &app.config.oauth.state_secret,
        appid,
        &id,
        expires_at,
    ))
    .map_err(|e| ApiError::internal(format_args!("a signed state: {e}")))?;
    let redirect = RedirectUri::parse(format!("{}/oauth/{appid}/callback", app.public_url))
        .map_err(|e| ApiError::internal(format_args!("oauth.public_url: {e}")))?;
    let hosts = app.wx.hosts();
    Ok(match account.kind {
        AccountKind::Website => QrConnectUrl::new(account.appid.clone(), redirect)
            .state(state)
            .build(hosts),
        AccountKind::Official => {
            let url = AuthorizeUrl::new(account.appid.clone(), redirect, stage.scope())
                .map_err(|e| ApiError::internal(format_args!("an authorize URL: {e}")))?
                .state(state);
            // An account authorized to a third-party platform signs people
            // in on the platform's behalf (spec component §7): the same
            // page, with `component_appid`.
            match &account.via {
                Via::Authorizer(component) => url.component(component.clone()).build(hosts),
                _ => url.build(hosts),
            }
        }
    })
}

/// The third-party platform an authorized account signs people in through:
/// its code exchange and refresh need the platform's token.
fn platform_of(
    app: &App,
    component: &wx_api::AppId,
) -> Result<std::sync::Arc<crate::credentials::Account>, wx_api::WxError> {
    app.creds
        .account(component.as_str())
        .ok_or_else(|| wx_api::WxError::InvalidInput {
            reason: format!("third-party platform {component} is not in this hub").into(),
        })
}

/// Appends `key=value` to a URL's query.
fn with_param(url: &str, key: &str, value: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair(key, value);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}
