//! Third-party platforms: the authorization-event URL the platform pushes
//! to, and the component token for clients granted the component.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::auth::AuthedClient;
use crate::credentials::CredKind;
use crate::error::ApiError;
use crate::extract::AppPath;
use crate::router::Passthrough;

/// The body cap of the authorization-event URL.
pub const MAX_BODY: usize = crate::component::MAX_BODY;

/// `POST /component/{appid}/events`: the 授权事件接收URL. Answers exactly
/// `success` to a push it took.
pub async fn events(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::component::receive(&app, &appid, query.as_deref().unwrap_or_default(), &body).await?;
    let mut resp = ([("content-type", "text/plain")], "success").into_response();
    resp.extensions_mut().insert(Passthrough);
    Ok(resp)
}

/// `GET /v1/components/{appid}/token`: the component_access_token, for a
/// client whose `components` names the platform (its own component API
/// calls: pre-auth codes, authorizer info, …).
pub async fn token(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
) -> Result<Response, ApiError> {
    crate::component::find(&app, &appid)?;
    if !client.components.contains(&appid) {
        return Err(ApiError::forbidden(format!(
            "client {} is not granted the third-party platform {appid} (clients[].components)",
            client.name
        )));
    }
    let served = app.creds.get(&appid, CredKind::AccessToken).await?;
    app.creds.note_use(&appid, &client.name);
    Ok(Json(json!({
        "component_access_token": served.value.expose_secret(),
        "expires_at": served.expires_at,
        "expires_in": served.expires_in,
    }))
    .into_response())
}

/// `?return=` of the start page.
#[derive(Debug, serde::Deserialize)]
pub struct StartQuery {
    /// Where the administrator goes back to, with `authorizer_appid=`.
    #[serde(rename = "return")]
    return_to: String,
}

/// `?auth_code=&expires_in=&state=&return=` of the return handler.
#[derive(Debug, serde::Deserialize)]
pub struct ReturnQuery {
    /// The authorization code (absent when the administrator cancelled).
    auth_code: Option<String>,
    /// Its lifetime, as the platform says.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "the platform sends it; the code is exchanged at once"
    )]
    expires_in: Option<String>,
    /// The signed state, binding `return` to this start.
    state: String,
    /// The return URL the start page was given.
    #[serde(rename = "return")]
    return_to: String,
}

/// `GET /component/{appid}/authorize?return=URL`: the authorization start
/// page. Checks `return`, creates a pre-auth code and sends the
/// administrator to the platform's authorization page. Anonymous: limited
/// per client IP and per platform (each start costs an upstream call).
pub async fn start(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    crate::extract::AppQuery(q): crate::extract::AppQuery<StartQuery>,
) -> Result<Response, ApiError> {
    let url = crate::component::start(&app, &appid, &q.return_to).await?;
    Ok(redirect(&url))
}

/// `GET /component/{appid}/return`: where the platform sends the
/// administrator back: the code is exchanged (the account appears, as with
/// the `authorized` event, which carries the same code), then 302 to the
/// start's `return` with `authorizer_appid=`.
pub async fn finish(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    crate::extract::AppQuery(q): crate::extract::AppQuery<ReturnQuery>,
) -> Result<Response, ApiError> {
    let url = crate::component::finish(&app, &appid, q.auth_code, &q.state, &q.return_to).await?;
    Ok(redirect(&url))
}

fn redirect(url: &str) -> Response {
    let mut resp = axum::http::StatusCode::FOUND.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(url) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}
