//! The router, assembled in one place, and the request-log middleware that
//! identifies the caller once per request.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::app::App;
use crate::auth::identify;
use crate::routes;

/// Every route of the hub.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(routes::admin::status_page))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/openapi.json", get(routes::openapi::openapi))
        .route("/v1/apps", get(routes::admin::list_apps))
        .route(
            "/v1/apps/{appid}/access_token",
            get(routes::tokens::get_access_token),
        )
        .route(
            "/v1/apps/{appid}/access_token/invalidate",
            post(routes::tokens::invalidate_access_token),
        )
        .route(
            "/v1/apps/{appid}/jsapi_ticket",
            get(routes::tokens::get_jsapi_ticket),
        )
        .route(
            "/v1/apps/{appid}/jsapi_ticket/invalidate",
            post(routes::tokens::invalidate_jsapi_ticket),
        )
        .route(
            "/v1/apps/{appid}/wx_card_ticket",
            get(routes::tokens::get_card_ticket),
        )
        .route(
            "/v1/apps/{appid}/wx_card_ticket/invalidate",
            post(routes::tokens::invalidate_card_ticket),
        )
        .route(
            "/v1/apps/{appid}/jssdk/config",
            post(routes::tokens::jssdk_config),
        )
        .route(
            "/v1/apps/{appid}/proxy/{*path}",
            any(routes::proxy::proxy).layer(DefaultBodyLimit::max(routes::proxy::MAX_BODY)),
        )
        .route(
            "/v1/apps/{appid}/users/{openid}",
            get(routes::oauth::user_route),
        )
        .route(
            "/v1/oauth/tickets/redeem",
            post(routes::oauth::redeem_route),
        )
        .route(
            "/oauth/{appid}/authorize",
            get(routes::oauth::authorize_route),
        )
        .route(
            "/oauth/{appid}/callback",
            get(routes::oauth::callback_route),
        )
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            request_log,
        ))
        .with_state(app)
}

/// Identifies the caller from `Authorization` (by hash; the key itself goes
/// nowhere), then logs one line and counts the request by client name and
/// route template, never by raw path (which could hold an openid).
async fn request_log(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let caller = identify(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        app.clients(),
        app.config.admin_key_sha256.as_ref(),
    );
    // MatchedPath is an Arc inside: cloning it copies no string.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    // A clone is a few reference counts: the label outlives the move below.
    let client = caller.clone();
    let client = client.label();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    req.extensions_mut().insert(caller);
    let resp = next.run(req).await;
    let status = resp.status();
    let status = status.as_str();
    app.metrics.inc(
        "wxhub_http_requests_total",
        &[("client", client), ("route", route), ("status", status)],
    );
    tracing::info!(
        http.method = %method,
        http.route = %route,
        http.status = %status,
        client = %client,
        duration_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}
