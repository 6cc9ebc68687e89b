//! A person's grant: the user token a sign-in leaves, kept to read the
//! profile again, refreshed with its refresh_token, gone after 30 days.

use serde_json::{Value, json};
use wx_api::endpoint::sns::UserToken;
use wx_api::secret::{RefreshToken, UserAccessToken};
use wx_api::{ErrCode, OpenId, WxError};

use super::account;
use crate::app::App;
use crate::config::{AccountConfig, Via};
use crate::error::ApiError;
use crate::store::Grant;

/// How long a refresh_token lives (docs/platform.md §5.3): the grant's lifetime.
const REFRESH_TOKEN_LIFE: i64 = 30 * 86400;

/// The grant a code exchange returned, as stored.
pub(super) fn new_grant(appid: &str, token: &UserToken, now: i64) -> Grant {
    Grant {
        appid: appid.to_string(),
        openid: token.openid.as_str().to_string(),
        unionid: token.unionid.as_ref().map(|u| u.as_str().to_string()),
        scope: token.scope.clone(),
        snapshot: token.is_snapshotuser,
        access_token: token.access_token.expose_secret().to_string(),
        access_expires_at: now + token.expires_in as i64,
        refresh_token: token.refresh_token.expose_secret().to_string(),
        refresh_expires_at: now + REFRESH_TOKEN_LIFE,
        profile: None,
        profile_fetched_at: None,
    }
}

// A grant that cannot be stored costs the person a consent page next
// time, not this sign-in: logged, not answered.
pub(super) async fn save_grant(app: &App, g: &Grant) {
    if let Err(e) = app.store.save_grant(g).await {
        tracing::error!(account.appid = %g.appid, error = %e, "cannot store a grant");
    }
}

/// Stores a base grant unless a userinfo grant that still works is on file.
pub(super) async fn save_unless_downgrade(app: &App, g: &Grant, now: i64) {
    if let Err(e) = app.store.save_base_grant(g, now).await {
        tracing::error!(account.appid = %g.appid, error = %e, "cannot store a grant");
    }
}

/// What a sign-in hands over: the identity, and the profile when there is one.
pub(super) fn payload(g: &Grant, profile_error: Option<&str>) -> Value {
    let mut v = json!({
        "appid": g.appid,
        "openid": g.openid,
        "scope": g.scope,
    });
    if let Some(u) = &g.unionid {
        v["unionid"] = json!(u);
    }
    if g.snapshot {
        v["snapshot"] = json!(true);
    }
    if let Some(p) = g
        .profile
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
    {
        v["profile"] = p;
    }
    if let Some(e) = profile_error {
        v["profile_error"] = json!(e);
    }
    v
}

/// Why a profile could not be read through a grant.
#[derive(Debug)]
pub enum ProfileError {
    /// 48001: the grant does not cover the profile; re-authorize with snsapi_userinfo.
    Unauthorized,
    /// The grant is gone (30 days, 40030, 42002); it was deleted.
    Expired,
    /// The platform failed (`upstream_error`), or the hub did (`internal`).
    Failed(ApiError),
}

/// Reads (or refreshes) the profile through a grant, refreshing the user
/// token with the refresh_token when needed, and stores the result.
///
/// # Errors
/// [`ProfileError`].
pub async fn profile_via_grant(
    app: &App,
    account: &AccountConfig,
    mut g: Grant,
) -> Result<Grant, ProfileError> {
    let now = app.clock.now();
    if g.refresh_expires_at <= now {
        let _ = app.store.delete_grant(&g.appid, &g.openid).await;
        return Err(ProfileError::Expired);
    }
    // The openid came from the platform and was checked then: one that no
    // longer parses was damaged on our side.
    let openid = OpenId::parse(g.openid.clone()).map_err(|e| {
        ProfileError::Failed(ApiError::internal(format_args!(
            "a stored grant's openid: {e}"
        )))
    })?;
    let mut refreshed = false;
    loop {
        if g.access_expires_at <= now + 60 {
            refresh_grant(app, account, &mut g).await?;
            refreshed = true;
        }
        match app
            .wx
            .sns_user_info(&UserAccessToken::new(g.access_token.clone()), &openid)
            .await
        {
            Ok(info) => {
                let profile = json!({
                    "nickname": info.nickname,
                    "headimgurl": info.headimgurl,
                    "privilege": info.privilege,
                });
                if let Some(u) = info.unionid {
                    g.unionid = Some(u.as_str().to_string());
                }
                g.profile = Some(profile.to_string());
                g.profile_fetched_at = Some(now);
                save_grant(app, &g).await;
                return Ok(g);
            }
            Err(e) if e.errcode() == Some(ErrCode::ApiUnauthorized) => {
                return Err(ProfileError::Unauthorized);
            }
            Err(e) if e.is_token_invalid() && !refreshed => {
                g.access_expires_at = 0;
                continue;
            }
            Err(e) => {
                return Err(ProfileError::Failed(ApiError::upstream(format!(
                    "reading the profile failed: {e}"
                ))));
            }
        }
    }
}

async fn refresh_grant(
    app: &App,
    account: &AccountConfig,
    g: &mut Grant,
) -> Result<(), ProfileError> {
    let now = app.clock.now();
    match refresh_user_token(app, account, &RefreshToken::new(g.refresh_token.clone())).await {
        Ok(t) => {
            g.access_token = t.access_token.expose_secret().to_string();
            g.access_expires_at = now + t.expires_in as i64;
            // Whether the refresh_token rotates or is extended is undocumented
            // (docs/platform.md §5.3; the simulator keeps it, §12): store
            // whatever comes back; the grant still ends 30 days after consent.
            g.refresh_token = t.refresh_token.expose_secret().to_string();
            save_grant(app, g).await;
            Ok(())
        }
        Err(e) if gone(&e) => {
            let _ = app.store.delete_grant(&g.appid, &g.openid).await;
            Err(ProfileError::Expired)
        }
        Err(e) => Err(ProfileError::Failed(ApiError::upstream(format!(
            "refreshing the grant failed: {e}"
        )))),
    }
}

fn gone(e: &WxError) -> bool {
    matches!(
        e.errcode(),
        Some(
            ErrCode::InvalidRefreshToken
                | ErrCode::RefreshTokenExpired
                | ErrCode::UserTokensRevoked
        )
    )
}

/// `GET /v1/apps/{appid}/users/{openid}`: the stored profile, refreshed
/// through the grant when older than `profile_max_age_secs`.
///
/// # Errors
/// [`ApiError`]: 404 with the reason when there is no usable grant, 502
/// when the platform fails, 500 when the store does.
pub async fn user(app: &App, appid: &str, openid: &str) -> Result<Value, ApiError> {
    let account = account(app, appid)?;
    let now = app.clock.now();
    let reauth =
        format!("send the person through /oauth/{appid}/authorize?scope=userinfo&return_to=...");
    let g = app
        .store
        .load_grant(appid, openid)
        .await
        .map_err(|e| ApiError::internal(format_args!("loading a grant: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("no grant from this person: {reauth}")))?;
    if g.scope == "snsapi_base" {
        return Err(ApiError::not_found(format!(
            "this person granted snsapi_base only; the profile needs snsapi_userinfo: {reauth}"
        )));
    }
    let fresh = g
        .profile_fetched_at
        .is_some_and(|t| now - t < app.config.oauth.profile_max_age_secs)
        && g.profile.is_some();
    let g = if fresh {
        g
    } else {
        match profile_via_grant(app, &account, g).await {
            Ok(g) => g,
            Err(ProfileError::Expired) => {
                return Err(ApiError::not_found(format!(
                    "the grant has expired (30 days, or revoked): {reauth}"
                )));
            }
            Err(ProfileError::Unauthorized) => {
                return Err(ApiError::not_found(format!(
                    "the platform refuses the profile (48001): {reauth}"
                )));
            }
            Err(ProfileError::Failed(e)) => return Err(e),
        }
    };
    let mut v = payload(&g, None);
    v["profile_fetched_at"] = json!(g.profile_fetched_at);
    Ok(v)
}

/// The person's refresh: the plain endpoint, or for an account authorized
/// to a third-party platform the component one, which alone accepts its
/// refresh tokens (spec component §7).
async fn refresh_user_token(
    app: &App,
    account: &AccountConfig,
    refresh: &RefreshToken,
) -> Result<UserToken, WxError> {
    match &account.via {
        Via::Authorizer(component) => {
            let platform = super::platform_of(app, component)?;
            app.creds
                .with_component_token(&platform, |token| async move {
                    app.wx
                        .component_refresh_user_token(&account.appid, refresh, component, &token)
                        .await
                })
                .await
        }
        _ => app.wx.refresh_user_token(&account.appid, refresh).await,
    }
}
