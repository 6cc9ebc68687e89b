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

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wx_api::endpoint::sns::UserToken;
use wx_api::oauth::{AuthorizeUrl, OAuthState, QrConnectUrl, RedirectUri, Scope};
use wx_api::secret::{OAuthCode, RefreshToken, UserAccessToken};
use wx_api::{AppId, ErrCode, OpenId, WxError};

use crate::app::App;
use crate::config::{AccountConfig, AccountKind, origin_of};
use crate::error::ApiError;
use crate::store::{
    Consumed, FinishedSignIn, Grant, Redeemed, Stage, StateRecord, scope_from_name, scope_name,
};

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
    let id = state_id();
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
        AccountKind::Official => AuthorizeUrl::new(account.appid.clone(), redirect, stage.scope())
            .map_err(|e| ApiError::internal(format_args!("an authorize URL: {e}")))?
            .state(state)
            .build(hosts),
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

type HmacSha256 = Hmac<Sha256>;

const STATE_LEN: usize = 32 + 12 + 32;

fn mac(key: &[u8], appid: &str, id: &str, exp: &str) -> String {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"wxhub-oauth-state\0");
    m.update(appid.as_bytes());
    m.update(b"\0");
    m.update(id.as_bytes());
    m.update(b"\0");
    m.update(exp.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..16])
}

/// `id(32 hex) ‖ expiry(12 digits) ‖ mac(32 hex)`: 76 characters of a-z0-9.
pub fn sign_state(key: &[u8], appid: &str, id: &str, expires_at: i64) -> String {
    let exp = format!("{:012}", expires_at.max(0));
    format!("{id}{exp}{}", mac(key, appid, id, &exp))
}

/// A state that does not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum BadState {
    /// Not our format.
    Malformed,
    /// Our format, wrong signature (or another account's).
    Forged,
    /// Past its expiry: the id, for a "start again" link.
    Expired(String),
}

/// Checks format, signature and expiry; returns the record id.
///
/// # Errors
/// [`BadState`].
pub fn verify_state(key: &[u8], appid: &str, state: &str, now: i64) -> Result<String, BadState> {
    if state.len() != STATE_LEN
        || !state
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(BadState::Malformed);
    }
    let (id, rest) = state.split_at(32);
    let (exp, tag) = rest.split_at(12);
    let expected = mac(key, appid, id, exp);
    if !bool::from(expected.as_bytes().ct_eq(tag.as_bytes())) {
        return Err(BadState::Forged);
    }
    let expires_at: i64 = exp.parse().map_err(|_| BadState::Malformed)?;
    if now >= expires_at {
        return Err(BadState::Expired(id.to_string()));
    }
    Ok(id.to_string())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // A CSPRNG seeded from the OS, without a system call per state.
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A state's id: 12 hex digits of the time in milliseconds, then 80 random
/// bits. Ids that grow with time land at the end of the store's index, so a
/// busy sign-in page appends instead of touching a random page per login;
/// the signature, not the id, is what makes a state unforgeable.
fn state_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{:012x}{}", ms & 0xffff_ffff_ffff, random_hex(10))
}

/// The hand-over ticket of one callback: derived from the state and the
/// code it came with, so a replayed callback names the same ticket instead
/// of minting another one.
fn derive_ticket(key: &[u8], appid: &str, id: &str, code_hash: &str) -> String {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"wxhub-hand-over-ticket\0");
    m.update(appid.as_bytes());
    m.update(b"\0");
    m.update(id.as_bytes());
    m.update(b"\0");
    m.update(code_hash.as_bytes());
    format!("wxt{}", hex::encode(&m.finalize().into_bytes()[..24]))
}

/// Redeems a hand-over ticket for a client allowed to use its account.
///
/// # Errors
/// [`ApiError`]: 404 unknown, used or expired; 403 another account's; 500
/// when the store fails or holds a result that does not read.
pub async fn redeem(
    app: &App,
    allowed: impl Fn(&str) -> bool + Send + 'static,
    ticket: &str,
) -> Result<Value, ApiError> {
    let now = app.clock.now();
    let hash = sha256_hex(ticket);
    let redeemed = app
        .store
        .redeem_ticket_for(&hash, now, allowed)
        .await
        .map_err(|e| ApiError::internal(format_args!("redeeming a ticket: {e}")))?;
    match redeemed {
        // The hub wrote this payload itself: one that does not parse is ours.
        Redeemed::Done(_, payload) => serde_json::from_str(&payload)
            .map_err(|e| ApiError::internal(format_args!("a stored sign-in result: {e}"))),
        Redeemed::Forbidden(appid) => Err(ApiError::forbidden(format!(
            "this client may not use account {appid}"
        ))),
        Redeemed::Missing => Err(ApiError::not_found("unknown, used or expired ticket")),
    }
}

/// How long a refresh_token lives (§5.3): the grant's lifetime.
const REFRESH_TOKEN_LIFE: i64 = 30 * 86400;

/// The grant a code exchange returned, as stored.
fn new_grant(appid: &str, token: &UserToken, now: i64) -> Grant {
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
async fn save_grant(app: &App, g: &Grant) {
    if let Err(e) = app.store.save_grant(g).await {
        tracing::error!(account.appid = %g.appid, error = %e, "cannot store a grant");
    }
}

/// Stores a base grant unless a userinfo grant that still works is on file.
async fn save_unless_downgrade(app: &App, g: &Grant, now: i64) {
    if let Err(e) = app.store.save_base_grant(g, now).await {
        tracing::error!(account.appid = %g.appid, error = %e, "cannot store a grant");
    }
}

/// What a sign-in hands over: the identity, and the profile when there is one.
fn payload(g: &Grant, profile_error: Option<&str>) -> Value {
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
            refresh_grant(app, &account.appid, &mut g).await?;
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

async fn refresh_grant(app: &App, appid: &AppId, g: &mut Grant) -> Result<(), ProfileError> {
    let now = app.clock.now();
    match app
        .wx
        .refresh_user_token(appid, &RefreshToken::new(g.refresh_token.clone()))
        .await
    {
        Ok(t) => {
            g.access_token = t.access_token.expose_secret().to_string();
            g.access_expires_at = now + t.expires_in as i64;
            // The platform returns the same refresh_token and does not extend
            // its 30 days (§12); store whatever comes back.
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
        return Ok(with_param(
            &record.return_to,
            "wxhub_error",
            "access_denied",
        ));
    };
    let finished = finish(app, &account, &record, code, now).await;
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
    let token = match app
        .wx
        .exchange_code(&account.appid, &account.secret, &OAuthCode::new(code))
        .await
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_short_alphanumeric_signed_and_expire() {
        let key = b"0123456789abcdef0123456789abcdef";
        let s = sign_state(key, "wx1", &"a".repeat(32), 1000);
        assert!(s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(verify_state(key, "wx1", &s, 999), Ok("a".repeat(32)));
        assert_eq!(
            verify_state(key, "wx1", &s, 1000),
            Err(BadState::Expired("a".repeat(32)))
        );
        assert_eq!(
            verify_state(key, "wx2", &s, 999),
            Err(BadState::Forged),
            "bound to the account"
        );
        assert_eq!(
            verify_state(b"another key another key another k", "wx1", &s, 999),
            Err(BadState::Forged)
        );
        let mut tampered = s.clone();
        tampered.replace_range(40..41, if &s[40..41] == "9" { "8" } else { "9" });
        assert_eq!(
            verify_state(key, "wx1", &tampered, 999),
            Err(BadState::Forged),
            "expiry is signed"
        );
        assert_eq!(verify_state(key, "wx1", "abc", 0), Err(BadState::Malformed));
    }

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
