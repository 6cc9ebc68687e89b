//! The router, assembled in one place, and its middleware: the request log
//! that identifies the caller once per request, the request timeout, the
//! per-IP limit of the anonymous routes, and the layer that makes every
//! error the API's JSON error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::app::App;
use crate::auth::identify;
use crate::error::ApiError;
use crate::routes;

/// Marks a response whose error status is deliberate and not the API's to
/// reformat: the platform's answer through the proxy, a page for a person.
#[derive(Debug, Clone, Copy)]
pub struct Passthrough;

/// Every route of the hub.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(crate::console::pages::overview))
        .route(
            "/console/apps/{appid}",
            get(crate::console::pages::account_page),
        )
        .route(
            "/console/sign-in",
            post(crate::console::pages::sign_in).layer(DefaultBodyLimit::max(8 * 1024)),
        )
        .route(
            "/console/sign-out",
            post(crate::console::pages::sign_out).layer(DefaultBodyLimit::max(8 * 1024)),
        )
        .route(
            "/v1/apps/{appid}/history",
            get(crate::console::pages::history_json),
        )
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
        // The platform's: anonymous, but nothing is stored before the
        // signature is checked, and the body is capped.
        .route(
            "/push/{appid}",
            get(routes::push::verify)
                .post(routes::push::receive)
                .layer(DefaultBodyLimit::max(routes::push::MAX_BODY)),
        )
        .route(
            "/component/{appid}/events",
            post(routes::component::events)
                .layer(DefaultBodyLimit::max(routes::component::MAX_BODY)),
        )
        .route(
            "/v1/components/{appid}/token",
            get(routes::component::token),
        )
        .route("/v1/apps/{appid}/followers", get(routes::push::followers))
        .route(
            "/v1/apps/{appid}/followers/{openid}",
            get(routes::push::follower),
        )
        .route("/v1/push", get(routes::push::backlog))
        .route("/v1/push/{appid}/parked", get(routes::push::parked))
        .route(
            "/v1/push/{appid}/parked/{id}/replay",
            post(routes::push::replay),
        )
        .route(
            "/v1/admin/accounts/{appid}",
            get(routes::directory::get_account)
                .put(routes::directory::put_account)
                .patch(routes::directory::patch_account)
                .delete(routes::directory::delete_account),
        )
        .route(
            "/v1/admin/clients",
            get(routes::directory::list_clients).post(routes::directory::create_client),
        )
        .route(
            "/v1/admin/clients/{name}",
            axum::routing::delete(routes::directory::revoke_client),
        )
        .route("/v1/admin/audit", get(routes::directory::audit))
        .merge(anonymous(app.clone()))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), edge))
        .with_state(app)
}

/// The routes anyone may call (a person's browser): limited per client IP.
fn anonymous(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route(
            "/oauth/{appid}/authorize",
            get(routes::oauth::authorize_route),
        )
        .route(
            "/oauth/{appid}/callback",
            get(routes::oauth::callback_route),
        )
        .route(
            "/component/{appid}/authorize",
            get(routes::component::start),
        )
        .route("/component/{appid}/return", get(routes::component::finish))
        .route_layer(axum::middleware::from_fn_with_state(app, per_ip_limit))
}

/// The client's address: the peer's, or from `X-Forwarded-For` when the
/// peer is a configured trusted proxy.
pub(crate) fn client_ip(app: &App, req: &Request) -> Option<std::net::IpAddr> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    Some(crate::limits::client_ip(
        peer,
        forwarded,
        &app.config.http.trusted_proxies,
    ))
}

async fn per_ip_limit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&app, &req)
        && let Err(l) = app.limiter.ip(ip, app.config.limits.anonymous)
    {
        app.metrics.inc(
            "wxhub_rate_limited_total",
            &[("limit", "anonymous"), ("client", "-")],
        );
        return ApiError::rate_limited(
            format!(
                "too many sign-in requests from this address; retry after {} s",
                l.retry_after_secs()
            ),
            l.retry_after_secs(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Every error in the API's format: an error answer that is not JSON (an
/// extractor's or the framework's plain-text rejection) is replaced by
/// `{"error":{"code","message"}}` for its status, keeping its headers.
fn json_error(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.extensions().get::<Passthrough>().is_some()
    {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::extract::is_json_content_type);
    if is_json {
        return resp;
    }
    // Kept: Retry-After, Allow and the rest; only the body is the API's.
    let mut headers = resp.headers().clone();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("invalid_request", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "authentication is required"),
        StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such route; see /openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method; see /openapi.json",
        ),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
        s if s.is_server_error() => ("internal", "the hub failed to answer this request"),
        _ => ("invalid_request", "the request cannot be served"),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    out.headers_mut().extend(headers);
    out
}

/// What every request goes through, in one layer (each layer costs a boxed
/// future per request): the caller identified from `Authorization` (by
/// hash; the key itself goes nowhere), the request timeout, the error
/// format, and one log line and one count by client name and route
/// template, never by raw path (which could hold an openid).
async fn edge(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let caller = identify(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        &app.clients(),
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
    let limit = app.config.http.request_timeout;
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => json_error(resp),
        Err(_) => ApiError::request_timeout(format!(
            "the request was not complete within {} ms (http.request_timeout_ms)",
            limit.as_millis()
        ))
        .into_response(),
    };
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
