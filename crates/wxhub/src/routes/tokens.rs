//! Tokens, tickets and the JS-SDK signature.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::app::App;
use crate::auth::AuthedClient;
use crate::config::TicketKind;
use crate::credentials::{CredKind, Reported, Served};
use crate::error::ApiError;
use crate::extract::{AppPath, JsonBody};
use crate::limits::ClientLimit;

/// Resolves the account and the client's right to it: 404, then 403.
pub(crate) fn authorize(app: &App, client: &AuthedClient, appid: &str) -> Result<(), ApiError> {
    let Some(account) = app.creds.account(appid) else {
        return Err(ApiError::not_found(format!(
            "no account {appid} in this hub"
        )));
    };
    match &account.cfg.via {
        // The component token opens every authorized account's component
        // calls: it is read only through its own route, by clients granted
        // the component.
        crate::config::Via::Component => Err(ApiError {
            code: "component_token",
            ..ApiError::forbidden(format!(
                "{appid} is a third-party platform: its component_access_token is served by GET /v1/components/{appid}/token to clients granted the component"
            ))
        }),
        via => client.check_via(appid, via.component().map(wx_api::AppId::as_str)),
    }
}

/// `{"<kind>": "...", "expires_at": .., "expires_in": ..}`, written directly:
/// this is the hub's hottest answer.
fn body(kind: CredKind, s: Served) -> Response {
    let value = s.value.expose_secret();
    let mut out = String::with_capacity(value.len() + 80);
    out.push_str("{\"");
    out.push_str(kind.label());
    out.push_str("\":");
    // The platform's tokens and tickets need no JSON escaping; anything
    // else is escaped.
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
    {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into()));
    }
    use std::fmt::Write as _;
    let _ = write!(
        out,
        ",\"expires_at\":{},\"expires_in\":{}}}",
        s.expires_at, s.expires_in
    );
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

async fn get_cred(
    app: Arc<App>,
    client: AuthedClient,
    appid: String,
    kind: CredKind,
) -> Result<Response, ApiError> {
    authorize(&app, &client, &appid)?;
    let served = app.creds.get(&appid, kind).await?;
    app.creds.note_use(&appid, &client.name);
    Ok(body(kind, served))
}

/// The body of an invalidate report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    access_token: Option<String>,
    ticket: Option<String>,
}

/// The answer to a report: the value to use now, with what the report led
/// to (`outcome`) and, when the caller budget refused a refresh, why.
fn reported_body(kind: CredKind, r: Reported) -> Response {
    let mut v = serde_json::json!({
        kind.label(): r.served.value.expose_secret(),
        "expires_at": r.served.expires_at,
        "expires_in": r.served.expires_in,
        "outcome": r.outcome.label(),
    });
    if let Some((reason, retry_after)) = r.budget {
        v["budget"] = serde_json::json!({"reason": reason, "retry_after": retry_after});
    }
    Json(v).into_response()
}

async fn invalidate_cred(
    app: Arc<App>,
    client: AuthedClient,
    appid: String,
    kind: CredKind,
    req: InvalidateBody,
) -> Result<Response, ApiError> {
    authorize(&app, &client, &appid)?;
    let (field, failed) = match kind {
        CredKind::AccessToken => ("access_token", req.access_token),
        CredKind::Ticket(_) => ("ticket", req.ticket),
    };
    let failed = failed.filter(|f| !f.is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!("{field}: required: the value that failed"))
    })?;
    app.charge(&client, ClientLimit::Invalidate).await?;
    let reported = app
        .creds
        .invalidate(&appid, kind, &failed, &client.name)
        .await?;
    Ok(reported_body(kind, reported))
}

/// `GET /v1/apps/{appid}/access_token`.
pub async fn get_access_token(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
) -> Result<Response, ApiError> {
    get_cred(app, client, appid, CredKind::AccessToken).await
}

/// `POST /v1/apps/{appid}/access_token/invalidate`.
pub async fn invalidate_access_token(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
    JsonBody(req): JsonBody<InvalidateBody>,
) -> Result<Response, ApiError> {
    invalidate_cred(app, client, appid, CredKind::AccessToken, req).await
}

/// `GET /v1/apps/{appid}/jsapi_ticket`.
pub async fn get_jsapi_ticket(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
) -> Result<Response, ApiError> {
    get_cred(app, client, appid, CredKind::Ticket(TicketKind::Jsapi)).await
}

/// `POST /v1/apps/{appid}/jsapi_ticket/invalidate`.
pub async fn invalidate_jsapi_ticket(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
    JsonBody(req): JsonBody<InvalidateBody>,
) -> Result<Response, ApiError> {
    invalidate_cred(app, client, appid, CredKind::Ticket(TicketKind::Jsapi), req).await
}

/// `GET /v1/apps/{appid}/wx_card_ticket`.
pub async fn get_card_ticket(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
) -> Result<Response, ApiError> {
    get_cred(app, client, appid, CredKind::Ticket(TicketKind::WxCard)).await
}

/// `POST /v1/apps/{appid}/wx_card_ticket/invalidate`.
pub async fn invalidate_card_ticket(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
    JsonBody(req): JsonBody<InvalidateBody>,
) -> Result<Response, ApiError> {
    invalidate_cred(
        app,
        client,
        appid,
        CredKind::Ticket(TicketKind::WxCard),
        req,
    )
    .await
}

/// The body of `jssdk/config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsSdkBody {
    url: String,
}

/// Host (or host:port) must be one of the account's JS-SDK domains.
fn domain_allowed(domains: &[String], url: &url::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let with_port = url.port().map(|p| format!("{host}:{p}"));
    domains.iter().any(|d| {
        d.eq_ignore_ascii_case(host)
            || with_port
                .as_deref()
                .is_some_and(|hp| d.eq_ignore_ascii_case(hp))
    })
}

/// `POST /v1/apps/{appid}/jssdk/config` → `{appId, timestamp, nonceStr, signature}`.
pub async fn jssdk_config(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
    JsonBody(req): JsonBody<JsSdkBody>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &client, &appid)?;
    let page = wx_api::jssdk::signing_url(&req.url);
    let parsed =
        url::Url::parse(page).map_err(|_| ApiError::bad_request("url: not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::bad_request("url: must be http or https"));
    }
    let account = app
        .creds
        .account(&appid)
        .expect("authorize checked the account");
    if !domain_allowed(&account.cfg.jssdk_domains, &parsed) {
        return Err(ApiError::forbidden(format!(
            "url: {} is not one of the account's JS-SDK domains (accounts.jssdk_domains)",
            parsed.host_str().unwrap_or("")
        )));
    }
    let ticket = app
        .creds
        .get(&appid, CredKind::Ticket(TicketKind::Jsapi))
        .await?;
    let ticket = wx_api::secret::JsapiTicket::new(ticket.value.expose_secret());
    let now = app.clock.now().max(0) as u64;
    let cfg = wx_api::jssdk::JsSdkConfig::new(account.cfg.appid.clone(), &ticket, &req.url, now)
        .map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
    Ok(Json(serde_json::to_value(cfg).unwrap_or(Value::Null)))
}
