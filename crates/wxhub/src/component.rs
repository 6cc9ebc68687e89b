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
    // The event and the return handler carry the same code and may race:
    // one of them adds the account, the other finds it.
    static ADDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ADDING.lock().await;
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
        // A revoked account comes back as its operator left it.
        app.directory
            .record_authorization(
                app,
                &Actor(format!("component:{}", cfg.appid.as_str())),
                appid.as_str(),
                cfg.appid.as_str(),
                cfg.authorizer_definition(&name),
                None,
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
    // Only `revoked_at` changes: what the operator set on the account
    // stays for when its administrator authorizes the platform again.
    app.directory
        .record_authorization(
            app,
            &Actor(format!("component:{}", cfg.appid.as_str())),
            authorizer.as_str(),
            cfg.appid.as_str(),
            cfg.authorizer_definition(&account.cfg.name),
            Some(app.clock.now()),
        )
        .await?;
    app.creds.forget_revoked(authorizer.as_str()).await;
    tracing::warn!(component.appid = %cfg.appid.as_str(), account.appid = %authorizer.as_str(), "the account's administrator revoked the third-party platform: refreshing stopped");
    Ok(())
}

/// How long the administrator has from the start page to the return (the
/// pre-auth code's own 1800 s).
const START_TTL: i64 = 1800;

/// The state's audience: a component's start, never a web authorization's.
fn audience(component: &str) -> String {
    format!("component:{component}")
}

/// The state's id: 64 random bits, so that no two starts share a state
/// (each is used once), then 64 bits of a hash of them and the return URL,
/// so that the signature covers the return URL.
fn start_id(return_to: &str) -> String {
    let mut nonce = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
    let nonce = hex::encode(nonce);
    let bound = return_hash(&nonce, return_to);
    format!("{nonce}{bound}")
}

fn return_hash(nonce: &str, return_to: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(nonce.as_bytes());
    h.update(b"\0");
    h.update(return_to.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Whether a verified state's id was made for `return_to`.
fn id_is_for(id: &str, return_to: &str) -> bool {
    let (Some(nonce), Some(bound)) = (id.get(..16), id.get(16..)) else {
        return false;
    };
    let want = return_hash(nonce, return_to);
    bool::from(subtle::ConstantTimeEq::ct_eq(
        bound.as_bytes(),
        want.as_bytes(),
    ))
}

/// Where a start's state is kept until its return uses it, among the
/// hand-over tickets (whose keys are bare SHA-256 hex, so none can be
/// this).
fn start_key(state: &str) -> String {
    use sha2::Digest;
    format!(
        "component-start:{}",
        hex::encode(sha2::Sha256::digest(state.as_bytes()))
    )
}

/// `return` parsed and checked against the component's `return_origins`.
fn check_return(cfg: &ComponentConfig, return_to: &str) -> Result<url::Url, ApiError> {
    let bad = |m: &str| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_return",
            format!("return: {m}"),
        )
    };
    let u = url::Url::parse(return_to).map_err(|_| bad("not an absolute URL"))?;
    let origin = crate::config::origin_of(&u).ok_or_else(|| bad("has no host"))?;
    if !cfg.return_origins.contains(&origin) {
        return Err(bad(&format!(
            "{origin} is not in components[].return_origins of {}",
            cfg.appid.as_str()
        )));
    }
    Ok(u)
}

/// The start page's work: the platform's authorization page URL, with a
/// fresh pre-auth code and the hub's return handler as `redirect_uri`.
///
/// # Errors
/// 404, 400 `invalid_return`, 429 over the per-platform bound, 503 without
/// a component token.
pub async fn start(app: &Arc<App>, appid: &str, return_to: &str) -> Result<String, ApiError> {
    let cfg = find(app, appid)?;
    check_return(cfg, return_to)?;
    app.limiter
        .client(
            &Arc::from(appid),
            crate::limits::ClientLimit::ComponentStart,
            app.config.limits.anonymous,
        )
        .await
        .map_err(|l| {
            app.metrics.inc(
                "wxhub_rate_limited_total",
                &[("limit", "component_start"), ("client", appid)],
            );
            ApiError::rate_limited(
                format!(
                    "the authorization page of {appid} is being started faster than limits.anonymous allows; retry after {} s",
                    l.retry_after_secs()
                ),
                l.retry_after_secs(),
            )
        })?;
    let component = app
        .creds
        .account(appid)
        .ok_or_else(|| ApiError::internal("a configured component has no account"))?;
    let pre = app
        .creds
        .with_component_token(&component, |ct| async move {
            app.wx.create_preauth_code(&cfg.appid, &ct).await
        })
        .await
        .map_err(|e| match e {
            wx_api::WxError::InvalidInput { reason } => ApiError::unavailable(reason, 5),
            e => ApiError::upstream(format!("the platform gave no pre-auth code: {e}")),
        })?;
    let now = app.clock.now();
    let state = crate::oauth::sign_state(
        &app.config.oauth.state_secret,
        &audience(appid),
        &start_id(return_to),
        now + START_TTL,
    );
    // The return may come once: a replayed return URL would spend a call
    // of the platform's on a code it already took.
    app.store
        .save_ticket(&start_key(&state), appid, "", now + START_TTL, now)
        .await
        .map_err(ApiError::internal)?;
    let mut back = url::Url::parse(&format!(
        "{}/component/{appid}/return",
        app.public_url.trim_end_matches('/')
    ))
    .map_err(ApiError::internal)?;
    back.query_pairs_mut()
        .append_pair("return", return_to)
        .append_pair("state", &state);
    wx_api::endpoint::component::LoginPageUrl::new(&cfg.appid, &pre.pre_auth_code, back.as_str())
        .build(&app.config.upstream.mp_base)
        .map_err(ApiError::internal)
}

/// The return handler's work: the state checked, the code exchanged, the
/// URL to send the administrator back to.
///
/// # Errors
/// 400 `invalid_state` / `invalid_return` / `authorization_cancelled`, and
/// what [`exchange`] answers.
pub async fn finish(
    app: &Arc<App>,
    appid: &str,
    auth_code: Option<String>,
    state: &str,
    return_to: &str,
) -> Result<String, ApiError> {
    let cfg = find(app, appid)?;
    let bad_state = |m: &str| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_state",
            m.to_string(),
        )
    };
    let id = crate::oauth::verify_state(
        &app.config.oauth.state_secret,
        &audience(appid),
        state,
        app.clock.now(),
    )
    .map_err(|e| match e {
        crate::oauth::BadState::Expired(_) => {
            bad_state("this authorization was started more than 30 minutes ago: start it again")
        }
        _ => bad_state("the state is not one this hub signed for this platform"),
    })?;
    if !id_is_for(&id, return_to) {
        return Err(bad_state(
            "the return URL is not the one the start page was given",
        ));
    }
    let mut back = check_return(cfg, return_to)?;
    let Some(code) = auth_code.filter(|c| !c.is_empty()) else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "authorization_cancelled",
            "the platform sent no auth_code: the administrator did not approve",
        ));
    };
    let unused = app
        .store
        .redeem_ticket(&start_key(state), app.clock.now())
        .await
        .map_err(ApiError::internal)?;
    if unused.is_none() {
        return Err(bad_state(
            "this authorization's return was already taken: start it again",
        ));
    }
    let authorizer = exchange(app, cfg, AuthorizationCode::new(code), None).await?;
    back.query_pairs_mut()
        .append_pair("authorizer_appid", authorizer.as_str());
    Ok(back.into())
}

/// Records as revoked the accounts whose refresh the platform answered
/// 61003 (the `unauthorized` event was missed, or arrived elsewhere), until
/// shutdown.
pub async fn run_revoker(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(mut rx) = app.creds.take_revocations() else {
        // Another run of this hub took it; nothing to do but wait.
        let _ = shutdown.changed().await;
        return;
    };
    loop {
        let (component, account) = tokio::select! {
            got = rx.recv() => match got {
                Some(g) => g,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let Ok(cfg) = find(&app, &component) else {
            continue;
        };
        let Ok(account) = AppId::parse(account) else {
            continue;
        };
        tracing::warn!(component.appid = %component, account.appid = %account.as_str(), "the platform says the account revoked the third-party platform (61003)");
        if let Err(e) = revoke(&app, cfg, &account).await {
            tracing::warn!(account.appid = %account.as_str(), error = %e.message, "cannot record the revocation; the account keeps failing with 61003 until it is");
        }
    }
}
