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
