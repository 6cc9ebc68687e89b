//! Web authorization routes: the person-facing redirect and callback, and
//! the client-facing ticket redemption and profile lookup.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::app::App;
use crate::auth::AuthedClient;
use crate::error::ApiError;
use crate::extract::{AppPath, AppQuery, JsonBody};
use crate::oauth;
use crate::routes::tokens::authorize;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page for the person: WeChat's webview shows it; no JSON here.
fn error_page(e: ApiError) -> Response {
    let restart = e
        .restart
        .as_deref()
        .map(|u| {
            format!(
                "<p><a id=\"restart\" href=\"{}\">Start again / 重新登录</a></p>",
                esc(u)
            )
        })
        .unwrap_or_default();
    (
        e.status,
        axum::Extension(crate::router::Passthrough),
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Sign-in failed</title></head>\
<body style=\"font-family:sans-serif;margin:32px\"><h2>Sign-in did not complete / 登录未完成</h2>\
<p id=\"error\" data-code=\"{}\">{}</p>{restart}</body></html>",
            e.code,
            esc(&e.message)
        )),
    )
        .into_response()
}

fn found(url: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, url)]).into_response()
}

/// The query of the authorize route.
#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    scope: Option<String>,
    return_to: Option<String>,
}

/// `GET /oauth/{appid}/authorize?scope=base|userinfo|login&return_to=URL`:
/// 302 to WeChat with a signed state.
pub async fn authorize_route(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    AppQuery(q): AppQuery<AuthorizeQuery>,
) -> Result<Response, ApiError> {
    let want = q
        .scope
        .as_deref()
        .and_then(oauth::parse_scope)
        .ok_or_else(|| ApiError::bad_request("scope: one of base, userinfo, login"))?;
    let return_to = q
        .return_to
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("return_to: required: the page to come back to"))?;
    oauth::start(&app, &appid, want, &return_to)
        .await
        .map(found)
}

/// `GET /oauth/{appid}/callback?code=..&state=..`: WeChat's redirect back.
pub async fn callback_route(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    AppQuery(q): AppQuery<HashMap<String, String>>,
) -> Response {
    match oauth::callback(
        &app,
        &appid,
        q.get("code").map(String::as_str),
        q.get("state").map(String::as_str),
    )
    .await
    {
        Ok(url) => found(url),
        Err(e) => error_page(e),
    }
}

/// The body of a ticket redemption.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    ticket: String,
}

/// `POST /v1/oauth/tickets/redeem` `{"ticket"}` → the authorization result.
pub async fn redeem_route(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    JsonBody(body): JsonBody<RedeemBody>,
) -> Result<Json<Value>, ApiError> {
    if body.ticket.is_empty() {
        return Err(ApiError::bad_request("ticket: required"));
    }
    // Through the same check as every app route: a client granted a
    // third-party platform redeems its authorized accounts' sign-ins too.
    let allowed = app.clone();
    oauth::redeem(
        &app,
        move |appid| super::tokens::authorize(&allowed, &client, appid).is_ok(),
        &body.ticket,
    )
    .await
    .map(Json)
}

/// `GET /v1/apps/{appid}/users/{openid}`: the stored profile.
pub async fn user_route(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath((appid, openid)): AppPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &client, &appid)?;
    oauth::user(&app, &appid, &openid).await.map(Json)
}
