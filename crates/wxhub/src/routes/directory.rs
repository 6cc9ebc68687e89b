//! The admin API for accounts and clients at run time, and the audit log
//! (admin key). A change takes effect at once here and, in shared mode,
//! within a second on every other instance.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Admin;
use crate::directory::{Actor, Precondition, account_view, client_view};
use crate::error::ApiError;
use crate::extract::{AppPath, AppQuery, JsonBody};

/// Who is calling: the admin key, the name the caller gives in
/// `X-Wxhub-Actor` (the CLI sends the user's login), and its address.
pub struct Who(Actor);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let given: String = parts
            .headers
            .get("x-wxhub-actor")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(64)
            .collect();
        let mut who = "admin".to_string();
        if !given.trim().is_empty() {
            who.push_str(&format!(" ({})", given.trim()));
        }
        if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            who.push_str(&format!(" from {}", addr.ip()));
        }
        Ok(Who(Actor(who)))
    }
}

/// `GET /v1/admin/accounts/{appid}`: its configuration, without secrets,
/// and its version in `ETag`.
pub async fn get_account(
    State(app): State<Arc<App>>,
    _: Admin,
    AppPath(appid): AppPath<String>,
) -> Result<Response, ApiError> {
    let account = app
        .creds
        .account(&appid)
        .ok_or_else(|| ApiError::not_found(format!("no account {appid}")))?;
    let (source, etag) = app.directory.version(&app, &appid).await?;
    Ok(with_etag(
        StatusCode::OK,
        account_view(&account.cfg, source),
        &etag,
    ))
}

/// `PUT /v1/admin/accounts/{appid}`: adds or replaces an account with a
/// whole definition (the fields of an `[[accounts]]` entry, secrets
/// inline). 201 when new, 200 when replaced.
pub async fn put_account(
    State(app): State<Arc<App>>,
    _: Admin,
    Who(who): Who,
    AppPath(appid): AppPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let cond = Precondition::from_headers(&headers);
    let (new, etag) = app
        .directory
        .put_account(&app, &who, &appid, body, &cond)
        .await?;
    let view = current(&app, &appid).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, view, &etag))
}

/// `PATCH /v1/admin/accounts/{appid}`: replaces the fields given.
pub async fn patch_account(
    State(app): State<Arc<App>>,
    _: Admin,
    Who(who): Who,
    AppPath(appid): AppPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let cond = Precondition::from_headers(&headers);
    let etag = app
        .directory
        .patch_account(&app, &who, &appid, body, &cond)
        .await?;
    Ok(with_etag(
        StatusCode::OK,
        current(&app, &appid).await?,
        &etag,
    ))
}

/// `DELETE /v1/admin/accounts/{appid}`: stops its refreshes and forgets
/// its credentials; its routes answer 404.
pub async fn delete_account(
    State(app): State<Arc<App>>,
    _: Admin,
    Who(who): Who,
    AppPath(appid): AppPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let cond = Precondition::from_headers(&headers);
    app.directory
        .remove_account(&app, &who, &appid, &cond)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The account's version in `ETag`, and in the body as `etag` for clients
/// that read only the JSON (the CLI among them).
fn with_etag(status: StatusCode, mut view: Value, etag: &str) -> Response {
    view["etag"] = Value::String(etag.to_string());
    let mut resp = (status, Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

async fn current(app: &App, appid: &str) -> Result<Value, ApiError> {
    let account = app
        .creds
        .account(appid)
        .ok_or_else(|| ApiError::internal(format!("account {appid} vanished after a change")))?;
    let source = app.directory.source(app, appid).await?;
    Ok(account_view(&account.cfg, source))
}

/// `GET /v1/admin/clients`: every client in force, without keys.
pub async fn list_clients(State(app): State<Arc<App>>, _: Admin) -> Json<Value> {
    let clients: Vec<Value> = app
        .clients()
        .iter()
        .map(|c| client_view(c, app.directory.client_source(&c.name)))
        .collect();
    Json(json!({ "clients": clients }))
}

/// `POST /v1/admin/clients`: `{name, apps, limits}` → 201 with the new key,
/// shown this once.
pub async fn create_client(
    State(app): State<Arc<App>>,
    _: Admin,
    Who(who): Who,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (client, key) = app.directory.create_client(&app, &who, body).await?;
    let mut view = client_view(&client, "api");
    view["key"] = Value::String(key);
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/admin/clients/{name}`: its key stops working at once.
pub async fn revoke_client(
    State(app): State<Arc<App>>,
    _: Admin,
    Who(who): Who,
    AppPath(name): AppPath<String>,
) -> Result<StatusCode, ApiError> {
    app.directory.revoke_client(&app, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?limit=&before=` of the audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: usize,
    before: Option<u64>,
}

fn default_limit() -> usize {
    100
}

/// `GET /v1/admin/audit?limit=&before=`: the newest changes first.
pub async fn audit(
    State(app): State<Arc<App>>,
    _: Admin,
    AppQuery(q): AppQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.limit == 0 || q.limit > 1000 {
        return Err(ApiError::bad_request("limit: between 1 and 1000"));
    }
    let entries = app
        .store
        .audit_list(q.limit, q.before)
        .await
        .map_err(ApiError::internal)?;
    let next = (entries.len() == q.limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({ "entries": entries, "next_before": next })))
}
