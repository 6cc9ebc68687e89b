//! Third-party platforms (第三方平台): what the platform pushes to a
//! component's authorization-event URL, and what an authorization does to
//! the hub (`component-platform.md` §2, §5, §6.1, §12).
//!
//! - A verify ticket is stored (the newest by `CreateTime`); the component
//!   token is fetched with it by the credentials machinery.
//! - `authorized` / `updateauthorized`: the code is exchanged at once
//!   (`api_query_auth`), the refresh token stored before anything else, then
//!   the access token, then the account is written to the directory, so it
//!   survives restarts and every instance sees it.
//! - `unauthorized`: the directory row says revoked (no more refreshes, the
//!   token API answers `authorization_revoked`) and the tokens are dropped.
//!
//! The start page and return handler (`routes/component.rs`) go through
//! [`exchange`] too, so the event and the redirect, which both carry the
//! code, make one account.

use std::sync::Arc;

use wx_api::AppId;
use wx_api::endpoint::component::AuthorizationCode;
use wx_api::push::component::{ComponentEvent, ComponentPush};

use crate::app::App;
use crate::config::{ComponentConfig, Via};
use crate::directory::Actor;
use crate::error::ApiError;

/// The largest body taken at the authorization-event URL: a push is a few
/// hundred bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// The configured component `appid`.
///
/// # Errors
/// 404 when there is none.
pub fn find<'a>(app: &'a App, appid: &str) -> Result<&'a ComponentConfig, ApiError> {
    app.config
        .components
        .iter()
        .find(|c| c.appid.as_str() == appid)
        .ok_or_else(|| ApiError::not_found(format!("no third-party platform {appid} in this hub")))
}

fn count(app: &App, component: &str, what: &str) {
    app.metrics.inc(
        "wxhub_component_events_total",
        &[("component", component), ("event", what)],
    );
}

/// Handles one push to `/component/{appid}/events`. Nothing is stored
/// before the signature, the decryption and the AppID are checked; the
/// answer to a good push is exactly `success`.
///
/// # Errors
/// 404 for an unknown component, 403 for a push that fails its checks, 400
/// for one that does not parse, 503 when storing or exchanging failed (the
/// platform retries authorization events).
pub async fn receive(
    app: &Arc<App>,
    appid: &str,
    query: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let cfg = find(app, appid)?;
    let crypto = cfg.crypto(app.clock.now()).map_err(ApiError::internal)?;
    let q = wx_api::push::PushQuery::from_query_str(query);
    let push = match ComponentPush::open(&crypto, &q, body) {
        Ok(p) => p,
        Err(e) => {
            use wx_api::push::PushError as P;
            count(app, appid, "rejected");
            // The kind of failure only: never the body.
            tracing::warn!(component.appid = %appid, error = %e, "refused a push to the authorization-event URL");
            return Err(match e {
                P::SignatureMismatch | P::AppIdMismatch | P::InvalidKey => ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "push_rejected",
                    format!("the push failed its check: {e}"),
                ),
                _ => ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid_push",
                    format!("the push does not parse: {e}"),
                ),
            });
        }
    };
    match push.event {
        ComponentEvent::VerifyTicket { ticket } => {
            count(app, appid, "component_verify_ticket");
            let newer = app
                .creds
                .take_ticket(appid, ticket, push.create_time)
                .await
                .map_err(|e| ApiError::unavailable(format!("cannot store the ticket: {e}"), 1))?;
            if newer {
                tracing::info!(component.appid = %appid, create_time = push.create_time, "verify ticket stored");
                app.creds.ticket_arrived(appid);
            }
        }
        ComponentEvent::Authorized {
            update,
            authorizer,
            code,
            ..
        } => {
            count(
                app,
                appid,
                if update {
                    "updateauthorized"
                } else {
                    "authorized"
                },
            );
            exchange(app, cfg, code, Some(&authorizer)).await?;
        }
        ComponentEvent::Unauthorized { authorizer } => {
            count(app, appid, "unauthorized");
            revoke(app, cfg, &authorizer).await?;
        }
        ComponentEvent::Other { info_type } => {
            count(app, appid, "other");
            tracing::info!(component.appid = %appid, info_type = %info_type, "a push of a kind the hub does not act on");
        }
    }
    Ok(())
}

/// Exchanges an authorization code and makes the account appear (or come
/// back, or take its new refresh token). `expected`: the account the event
/// named, checked against what the platform says. Returns the account.
///
/// # Errors
/// 502 when the platform refuses the code; 503 when the component has no
/// token yet or the refresh token cannot be stored.
pub async fn exchange(
    app: &Arc<App>,
    cfg: &ComponentConfig,
    code: AuthorizationCode,
    expected: Option<&AppId>,
) -> Result<AppId, ApiError> {
    let component = app
        .creds
        .account(cfg.appid.as_str())
        .ok_or_else(|| ApiError::internal("a configured component has no account"))?;
    let info = app
        .creds
        .with_component_token(&component, |ct| {
            let code = &code;
            async move { app.wx.query_auth(&cfg.appid, &ct, code).await }
        })
        .await
        .map_err(|e| {
            tracing::warn!(component.appid = %cfg.appid.as_str(), error = %e, "api_query_auth failed");
            match e {
                wx_api::WxError::InvalidInput { reason } => ApiError::unavailable(reason, 5),
                e => ApiError::upstream(format!("the platform refused the authorization code: {e}")),
            }
        })?
        .authorization_info;
    let appid = info.authorizer_appid.clone();
    if let Some(want) = expected
        && want != &appid
    {
        tracing::warn!(component.appid = %cfg.appid.as_str(), event = %want.as_str(), platform = %appid.as_str(), "the event and api_query_auth name different accounts; using the platform's");
    }
    let Some(refresh) = info.authorizer_refresh_token else {
        return Err(ApiError::upstream(format!(
            "{} authorized {} without API permission: the platform gave no refresh token",
            appid.as_str(),
            cfg.appid.as_str()
        )));
    };
    let access = info
        .authorizer_access_token
        .map(|t| (t.into_secret(), info.expires_in.unwrap_or(7200) as i64));
    app.creds
        .store_authorization(appid.as_str(), &refresh, access)
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot store the authorization: {e}"), 5))?;
    let current = app.creds.account(appid.as_str());
    let held = current
        .as_ref()
        .is_some_and(|a| a.cfg.via == Via::Authorizer(cfg.appid.clone()));
    if !held {
        if let Some(a) = &current
            && a.cfg.via.component() != Some(&cfg.appid)
        {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "account_exists",
                format!(
                    "{} is already in this hub with its own secret or another platform; its authorization of {} is stored but not used",
                    appid.as_str(),
                    cfg.appid.as_str()
                ),
            ));
        }
        let name = current
            .as_ref()
            .map_or_else(|| appid.as_str().to_string(), |a| a.cfg.name.clone());
        app.directory
            .put_account(
                app,
                &Actor(format!("component:{}", cfg.appid.as_str())),
                appid.as_str(),
                cfg.authorizer_definition(&name),
            )
            .await?;
    }
    tracing::info!(component.appid = %cfg.appid.as_str(), account.appid = %appid.as_str(), "account authorized through the third-party platform");
    Ok(appid)
}

/// The account's administrator revoked the platform: the directory row
/// says so (no refreshes, `authorization_revoked` from the token API, on
/// every instance and after restarts) and the stored tokens go.
///
/// # Errors
/// 503 when the directory cannot be written.
pub async fn revoke(
    app: &Arc<App>,
    cfg: &ComponentConfig,
    authorizer: &AppId,
) -> Result<(), ApiError> {
    let Some(account) = app.creds.account(authorizer.as_str()) else {
        return Ok(());
    };
    if account.cfg.via != Via::Authorizer(cfg.appid.clone()) {
        return Ok(());
    }
    let mut body = cfg.authorizer_definition(&account.cfg.name);
    body["revoked_at"] = app.clock.now().into();
    app.directory
        .put_account(
            app,
            &Actor(format!("component:{}", cfg.appid.as_str())),
            authorizer.as_str(),
            body,
        )
        .await?;
    app.creds.forget_revoked(authorizer.as_str()).await;
    tracing::warn!(component.appid = %cfg.appid.as_str(), account.appid = %authorizer.as_str(), "the account's administrator revoked the third-party platform: refreshing stopped");
    Ok(())
}
