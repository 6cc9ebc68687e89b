//! WeChat's redirect back: consent, refusal, replays, escalation.

use axum::http::StatusCode;
use serde_json::Value;
use wx_api::endpoint::sns::UserToken;
use wx_api::oauth::Scope;
use wx_api::secret::OAuthCode;
use wx_api::{ErrCode, WxError};

use super::grants::{
    ProfileError, new_grant, payload, profile_via_grant, save_grant, save_unless_downgrade,
};
use super::state::{BadState, verify_state};
use super::tickets::derive_ticket;
use super::{account, redirect_to_wechat, restart_url, sha256_hex, with_param};
use crate::app::App;
use crate::config::{AccountConfig, Via};
use crate::credentials::WebAuth;
use crate::error::ApiError;
use crate::store::{Consumed, FinishedSignIn, Grant, Stage, StateRecord};

/// What a finished callback left on its state, for replays of it. Stored as
/// JSON; the format is read back by hubs of other versions.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// A ticket was handed over; a replay names the same one.
    Ticket,
    /// The person was sent on to WeChat again (consent after a silent probe).
    Redirect(String),
    /// It failed, for this reason.
    Failed {
        #[serde(with = "status_number")]
        status: StatusCode,
        code: String,
        message: String,
        restart: Option<String>,
    },
}

impl Outcome {
    fn failed(e: &ApiError) -> Outcome {
        Outcome::Failed {
            status: e.status,
            code: e.code.to_string(),
            message: e.message.clone(),
            restart: e.restart.clone(),
        }
    }
}

/// A status as the number it has always been stored as.
mod status_number {
    use axum::http::StatusCode;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u16(s.as_u16())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<StatusCode, D::Error> {
        StatusCode::from_u16(u16::deserialize(de)?).map_err(D::Error::custom)
    }
}

/// What a code exchange led to.
enum Finished {
    /// A result to hand over, and a base-scope grant to keep with it.
    Result(Value, Option<Box<Grant>>),
    /// Sent on to WeChat for consent.
    Redirect(String),
}

async fn remember(app: &App, appid: &str, id: &str, outcome: &Outcome) {
    let text = serde_json::to_string(outcome).unwrap_or_default();
    if let Err(e) = app.store.set_state_result(appid, id, &text).await {
        tracing::warn!(account.appid = %appid, error = %e, "cannot remember a sign-in's outcome; a replayed callback will be told it was already used");
    }
}

/// The return URL telling the page that this sign-in was already used.
fn already_used(return_to: &str) -> String {
    with_param(return_to, "wxhub_error", "already_used")
}

/// Handles WeChat's redirect back: consent, refusal, replays, escalation.
/// Returns where to send the person.
///
/// # Errors
/// [`ApiError`], shown as an error page; nothing is exchanged for a bad state.
pub async fn callback(
    app: &App,
    appid: &str,
    code: Option<&str>,
    state: Option<&str>,
) -> Result<String, ApiError> {
    let account = account(app, appid)?;
    let now = app.clock.now();
    let id = check_state(app, appid, state, now).await?;
    let code = code.filter(|c| !c.is_empty());
    let code_hash = code.map(sha256_hex);
    let record = match app
        .store
        .consume_state(appid, &id, code_hash.as_deref(), now)
        .await
        .map_err(|e| ApiError::internal(format_args!("consuming a state: {e}")))?
    {
        Consumed::Fresh(r) => r,
        Consumed::Again { record, result, .. } => {
            let code_hash = code_hash.unwrap_or_default();
            return replay(app, appid, &id, &code_hash, record, result).await;
        }
        // Another code, or a refusal replayed: the page learns that this
        // sign-in is over; nothing is exchanged.
        Consumed::Used(record) => return Ok(already_used(&record.return_to)),
        Consumed::Missing => {
            return Err(ApiError::invalid_state(
                "this login link is unknown to this hub; nothing was done",
            ));
        }
    };
    let (Some(code), Some(code_hash)) = (code, code_hash) else {
        // Refusal: WeChat comes back with state and no code.
        app.creds.note_web_auth(appid, WebAuth::Refused);
        return Ok(with_param(
            &record.return_to,
            "wxhub_error",
            "access_denied",
        ));
    };
    let finished = finish(app, &account, &record, code, now).await;
    match &finished {
        Ok(Finished::Result(..)) => app.creds.note_web_auth(appid, WebAuth::SignedIn),
        Ok(Finished::Redirect(_)) => {}
        Err(_) => app.creds.note_web_auth(appid, WebAuth::Failed),
    }
    conclude(app, appid, &id, &code_hash, &record, finished).await
}

/// The id of the record a callback's state points at, if it verifies.
async fn check_state(
    app: &App,
    appid: &str,
    state: Option<&str>,
    now: i64,
) -> Result<String, ApiError> {
    let state = state.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::invalid_state(
            "this page was opened without a login state: start from the page you came from",
        )
    })?;
    match verify_state(&app.config.oauth.state_secret, appid, state, now) {
        Ok(id) => Ok(id),
        Err(BadState::Expired(id)) => {
            let restart = app
                .store
                .peek_state(appid, &id)
                .await
                .ok()
                .flatten()
                .map(|r| restart_url(app, appid, r.want, &r.return_to));
            Err(ApiError::expired_state(
                "this login took too long and has expired; nothing was done",
            )
            .with_restart(restart))
        }
        Err(BadState::Malformed | BadState::Forged) => Err(ApiError::invalid_state(
            "this login link is not valid (forged or damaged); nothing was done",
        )),
    }
}

/// Keeps what a code exchange led to on its state, for replays, and says
/// where the person goes: back with a ticket, or on to WeChat.
async fn conclude(
    app: &App,
    appid: &str,
    id: &str,
    code_hash: &str,
    record: &StateRecord,
    finished: Result<Finished, ApiError>,
) -> Result<String, ApiError> {
    match finished {
        Ok(Finished::Result(result, grant)) => {
            let ticket = derive_ticket(&app.config.oauth.state_secret, appid, id, code_hash);
            let now = app.clock.now();
            let payload = result.to_string();
            let outcome = serde_json::to_string(&Outcome::Ticket).unwrap_or_default();
            app.store
                .finish_sign_in(&FinishedSignIn {
                    appid,
                    state_id: id,
                    ticket_hash: &sha256_hex(&ticket),
                    payload: &payload,
                    ticket_expires_at: now + app.config.oauth.ticket_ttl_secs,
                    outcome: &outcome,
                    base_grant: grant.as_deref(),
                    now,
                })
                .await
                .map_err(|e| ApiError::internal(format_args!("storing a sign-in: {e}")))?;
            Ok(with_param(&record.return_to, "wxhub_ticket", &ticket))
        }
        Ok(Finished::Redirect(url)) => {
            remember(app, appid, id, &Outcome::Redirect(url.clone())).await;
            Ok(url)
        }
        Err(e) => {
            remember(app, appid, id, &Outcome::failed(&e)).await;
            Err(e)
        }
    }
}

/// Exchanges the code and does what the page asked for: a result to hand
/// over, or a redirect to WeChat for consent.
async fn finish(
    app: &App,
    account: &AccountConfig,
    record: &StateRecord,
    code: &str,
    now: i64,
) -> Result<Finished, ApiError> {
    let appid = account.appid.as_str();
    let restart = restart_url(app, appid, record.want, &record.return_to);
    let token = match exchange(app, account, code).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(account.appid = %appid, error = %e, "code exchange failed");
            return Err(exchange_failed(&e).with_restart(Some(restart)));
        }
    };
    let grant = new_grant(appid, &token, now);
    match (record.want, record.stage) {
        (Scope::SnsapiUserinfo, Stage::Probe) => {
            probe(app, account, record, grant, now, restart).await
        }
        (Scope::SnsapiUserinfo | Scope::SnsapiLogin, _) => {
            with_profile(app, account, grant, restart).await
        }
        (Scope::SnsapiBase, _) => {
            let p = payload(&grant, None);
            Ok(Finished::Result(p, Some(Box::new(grant))))
        }
    }
}

fn exchange_failed(e: &WxError) -> ApiError {
    match e.errcode() {
        Some(ErrCode::CodeBeenUsed) => {
            ApiError::code_used("this sign-in code was already used; start again")
        }
        Some(ErrCode::InvalidCode | ErrCode::CodeExpired) => {
            ApiError::code_expired("this sign-in took too long; start again")
        }
        _ => ApiError::upstream("the WeChat platform did not complete the sign-in; start again"),
    }
}

/// The silent round of a page that wants the profile: a userinfo grant on
/// file for this person answers it; without one, on to consent.
async fn probe(
    app: &App,
    account: &AccountConfig,
    record: &StateRecord,
    grant: Grant,
    now: i64,
    restart: String,
) -> Result<Finished, ApiError> {
    let existing = app
        .store
        .load_grant(account.appid.as_str(), &grant.openid)
        .await
        .ok()
        .flatten();
    let usable = existing.filter(|g| g.scope != "snsapi_base" && g.refresh_expires_at > now);
    let Some(usable) = usable else {
        save_unless_downgrade(app, &grant, now).await;
        return consent(app, account, record).await;
    };
    match profile_via_grant(app, account, usable).await {
        Ok(g) => Ok(Finished::Result(payload(&g, None), None)),
        // 48001 or a dead grant: ask for consent, not an error.
        Err(ProfileError::Unauthorized | ProfileError::Expired) => {
            consent(app, account, record).await
        }
        Err(ProfileError::Failed(e)) => Err(e.with_restart(Some(restart))),
    }
}

async fn consent(
    app: &App,
    account: &AccountConfig,
    record: &StateRecord,
) -> Result<Finished, ApiError> {
    redirect_to_wechat(app, account, record.want, Stage::Consent, &record.return_to)
        .await
        .map(Finished::Redirect)
}

/// Consent given (or a website login): the profile through the new grant.
async fn with_profile(
    app: &App,
    account: &AccountConfig,
    grant: Grant,
    restart: String,
) -> Result<Finished, ApiError> {
    save_grant(app, &grant).await;
    let result = match profile_via_grant(app, account, grant.clone()).await {
        Ok(g) => payload(&g, None),
        // Consent was given and still 48001 (a snapshot user): hand
        // over the openid without a profile rather than loop.
        Err(ProfileError::Unauthorized) => payload(&grant, Some("api_unauthorized")),
        Err(ProfileError::Expired) => payload(&grant, Some("grant_expired")),
        Err(ProfileError::Failed(e)) => return Err(e.with_restart(Some(restart))),
    };
    Ok(Finished::Result(result, None))
}

/// A callback with a state and code seen before (WeChat's double redirect,
/// browser history, a shared link): what the first one led to. The same
/// ticket while it is unredeemed and alive, then "already used"; a failure
/// again, at once, with its reason. Nothing is exchanged or minted twice.
async fn replay(
    app: &App,
    appid: &str,
    id: &str,
    code_hash: &str,
    record: StateRecord,
    mut result: Option<String>,
) -> Result<String, ApiError> {
    // The first callback may still be exchanging the code: wait for it,
    // briefly, rather than exchange the code a second time.
    for _ in 0..50 {
        if result.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        result = app.store.state_result(appid, id).await.ok().flatten();
    }
    let Some(result) = result else {
        return Err(ApiError::in_progress(
            "this sign-in is still being completed; try again in a few seconds",
        ));
    };
    match serde_json::from_str::<Outcome>(&result) {
        Ok(Outcome::Ticket) => {
            let ticket = derive_ticket(&app.config.oauth.state_secret, appid, id, code_hash);
            let live = app
                .store
                .ticket_live(&sha256_hex(&ticket), app.clock.now())
                .await
                .map_err(|e| ApiError::internal(format_args!("looking a ticket up: {e}")))?;
            Ok(if live {
                with_param(&record.return_to, "wxhub_ticket", &ticket)
            } else {
                already_used(&record.return_to)
            })
        }
        Ok(Outcome::Redirect(url)) => Ok(url),
        Ok(Outcome::Failed {
            status,
            code,
            message,
            restart,
        }) => Err(remembered(status, &code, message).with_restart(restart)),
        // Written by an older version: nothing to repeat safely.
        Err(_) => Ok(already_used(&record.return_to)),
    }
}

/// A failure read back from a state, with the code it was first answered
/// with.
fn remembered(status: StatusCode, code: &str, message: String) -> ApiError {
    match code {
        "code_used" => ApiError::code_used(message),
        "code_expired" => ApiError::code_expired(message),
        "upstream_error" => ApiError::upstream(message),
        "too_many_sign_ins" => ApiError::too_many_sign_ins(message),
        // Its cause was logged, once, under the reference in the message.
        // Hubs before references stored the cause itself: not for the person.
        "internal" => ApiError::internal_repeated(&message).unwrap_or_else(|| {
            ApiError::new(
                status,
                "sign_in_failed",
                "the hub could not complete this sign-in; start again",
            )
        }),
        _ => ApiError::new(status, "sign_in_failed", message),
    }
}

/// The code exchange: with the account's own secret, or, for an account
/// authorized to a third-party platform, through the platform's endpoint
/// and token (spec component §7; the plain endpoint refuses such a code).
async fn exchange(app: &App, account: &AccountConfig, code: &str) -> Result<UserToken, WxError> {
    match &account.via {
        Via::Authorizer(component) => {
            let platform = super::platform_of(app, component)?;
            app.creds
                .with_component_token(&platform, |token| async move {
                    app.wx
                        .component_exchange_code(
                            &account.appid,
                            OAuthCode::new(code),
                            component,
                            &token,
                        )
                        .await
                })
                .await
        }
        _ => {
            app.wx
                .exchange_code(&account.appid, &account.secret, &OAuthCode::new(code))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hubs of other versions read what this one stores, and the reverse.
    #[test]
    fn a_failed_outcome_keeps_its_stored_form() {
        let e = ApiError::code_expired("too long").with_restart(Some("https://hub/a".into()));
        let text = serde_json::to_string(&Outcome::failed(&e)).unwrap();
        assert_eq!(
            text,
            r#"{"failed":{"status":400,"code":"code_expired","message":"too long","restart":"https://hub/a"}}"#
        );
        let Outcome::Failed {
            status,
            code,
            message,
            restart,
        } = serde_json::from_str(&text).unwrap()
        else {
            panic!("{text}")
        };
        let again = remembered(status, &code, message).with_restart(restart);
        assert_eq!(
            (again.status, again.code, again.message.as_str()),
            (e.status, e.code, "too long")
        );
        assert_eq!(again.restart, e.restart);
        assert_eq!(
            serde_json::to_string(&Outcome::Ticket).unwrap(),
            r#""ticket""#
        );
    }

    #[test]
    fn a_remembered_failure_keeps_its_code() {
        for e in [
            ApiError::code_used("x"),
            ApiError::code_expired("x"),
            ApiError::upstream("x"),
            ApiError::too_many_sign_ins("x"),
            ApiError::internal("cause"),
        ] {
            let again = remembered(e.status, e.code, e.message.clone());
            assert_eq!(
                (again.status, again.code, &again.message),
                (e.status, e.code, &e.message)
            );
        }
        // An older hub kept the internal cause itself: it stays hidden.
        let old = remembered(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "store: disk I/O error".into(),
        );
        assert_eq!((old.status.as_u16(), old.code), (500, "sign_in_failed"));
        assert!(!old.message.contains("disk"), "{}", old.message);
        let other = remembered(StatusCode::BAD_GATEWAY, "from_the_future", "m".into());
        assert_eq!((other.status.as_u16(), other.code), (502, "sign_in_failed"));
    }
}
