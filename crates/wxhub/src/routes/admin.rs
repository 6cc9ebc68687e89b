//! The account list (admin key). The page for people is the console
//! ([`crate::console`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Admin;
use crate::credentials::{ListQuery, MAX_PAGE};
use crate::error::ApiError;
use crate::extract::AppQuery;

/// `GET /v1/apps?offset=&limit=&q=&state=`: a page of accounts (at most
/// 1000), searched by AppID or name, optionally only those that need
/// attention.
pub async fn list_apps(
    State(app): State<Arc<App>>,
    _: Admin,
    AppQuery(mut q): AppQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.limit == 0 || q.limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: between 1 and {MAX_PAGE}"
        )));
    }
    q.limit = q.limit.min(MAX_PAGE);
    let (total, apps) = app.creds.list(&q).await;
    let next = (q.offset + apps.len() < total).then_some(q.offset + apps.len());
    Ok(Json(json!({
        "now": app.clock.now(),
        "total": total,
        "offset": q.offset,
        "next_offset": next,
        "apps": apps,
    })))
}
