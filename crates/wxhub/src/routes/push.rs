//! The push gateway's routes: the platform's `/push/{appid}`, the
//! follower records for business servers, and the admin view of
//! backlogs and parked deliveries.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{Admin, AuthedClient};
use crate::error::ApiError;
use crate::extract::{AppPath, AppQuery};
use crate::routes::tokens::authorize;

/// The largest push body taken: the platform's are a few KiB.
pub const MAX_BODY: usize = wx_api::push::MAX_BODY_BYTES;

/// `GET /push/{appid}`: the platform's URL check (echostr).
pub async fn verify(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    app.push
        .verify(&appid, query.as_deref().unwrap_or_default())
}

/// `POST /push/{appid}`: a message or event from the platform.
pub async fn receive(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.push
        .receive(&appid, query.as_deref().unwrap_or_default(), &body)
        .await
}

/// Paging of the follower list.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// The last openid of the previous page.
    #[serde(default)]
    after: String,
    /// At most this many (1 to 1000, default 100).
    limit: Option<usize>,
}

fn push_account(app: &App, appid: &str) -> Result<(), ApiError> {
    if app.push.account(appid).is_none() {
        return Err(ApiError::not_found(format!(
            "{appid} takes no pushes here (accounts[].push is not configured)"
        )));
    }
    Ok(())
}

/// `GET /v1/apps/{appid}/followers`: follower records by openid.
pub async fn followers(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath(appid): AppPath<String>,
    AppQuery(page): AppQuery<Page>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &client, &appid)?;
    push_account(&app, &appid)?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: between 1 and 1000"));
    }
    let list = app
        .store
        .followers(&appid, &page.after, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = (list.len() == limit)
        .then(|| list.last().map(|f| f.openid.clone()))
        .flatten();
    Ok(Json(json!({ "followers": list, "next": next })))
}

/// `GET /v1/apps/{appid}/followers/{openid}`: one follower record.
pub async fn follower(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath((appid, openid)): AppPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &client, &appid)?;
    push_account(&app, &appid)?;
    match app
        .store
        .follower(&appid, &openid)
        .await
        .map_err(ApiError::internal)?
    {
        Some(f) => Ok(Json(json!(f))),
        None => Err(ApiError::not_found(
            "no follow or unfollow of this openid has reached the hub",
        )),
    }
}

/// `GET /v1/push`: every subscriber's backlog (admin key).
pub async fn backlog(State(app): State<Arc<App>>, _: Admin) -> Json<Value> {
    Json(json!({ "subscribers": app.push.backlog().await }))
}

/// `GET /v1/push/{appid}/parked`: parked deliveries, oldest first (admin).
pub async fn parked(
    State(app): State<Arc<App>>,
    _: Admin,
    AppPath(appid): AppPath<String>,
) -> Result<Json<Value>, ApiError> {
    let account = app
        .push
        .account(&appid)
        .ok_or_else(|| ApiError::not_found(format!("{appid} takes no pushes here")))?;
    let subs: Vec<String> = account
        .config
        .subscribers
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let list = app
        .store
        .push_parked(&appid, &subs, 1000)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "parked": list })))
}

/// `POST /v1/push/{appid}/parked/{id}/replay`: back into its subscriber's
/// queue, with a new retry window (admin).
pub async fn replay(
    State(app): State<Arc<App>>,
    _: Admin,
    AppPath((appid, id)): AppPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    push_account(&app, &appid)?;
    let now = app.clock.now();
    let done = app
        .store
        .push_replay(&appid, &id, now, app.config.push.keep_secs)
        .await
        .map_err(ApiError::internal)?;
    if !done {
        return Err(ApiError::not_found(format!("no parked delivery {id}")));
    }
    app.push.wake();
    Ok(Json(json!({ "replayed": id })))
}
