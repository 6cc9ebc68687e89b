//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::credentials::Severity;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when every account can serve, 503 naming each account
/// that needs attention and why (a wrong secret, the IP to whitelist, a
/// quota). Degraded accounts are listed but do not make the hub unready.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let status = app.creds.status_now();
    let problems: Vec<_> = status
        .iter()
        .filter_map(|a| {
            a.problem.as_ref().map(|p| {
                json!({"appid": a.appid, "severity": p.severity, "reason": p.reason, "since": p.since})
            })
        })
        .collect();
    let mut ready = status.iter().all(|a| {
        a.problem
            .as_ref()
            .is_none_or(|p| p.severity != Severity::Unhealthy)
    });
    let mut body = json!({"ready": ready, "accounts": status.len(), "problems": problems});
    if let Some(sh) = app.creds.shared() {
        let owned = status
            .iter()
            .filter(|a| a.refresh_owner == Some(true))
            .count();
        let redis = match sh.health() {
            Ok(()) => json!({"up": true}),
            Err((since, reason)) => {
                // Held tokens are still served, but nothing is refreshed:
                // the load balancer should prefer an instance that can.
                ready = false;
                json!({
                    "up": false,
                    "since": since,
                    "reason": format!("redis unreachable ({reason}): serving the tokens held in memory until they expire, refreshing nothing"),
                })
            }
        };
        body["ready"] = json!(ready);
        body["shared"] =
            json!({"instance": sh.instance(), "redis": redis, "owned_accounts": owned});
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.metrics.render();
    app.creds
        .render_metrics(&mut text, app.config.metrics.per_account_limit);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
