//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

/// Problems listed by `/readyz` at most; the rest are counted, and listed
/// by `GET /v1/apps?state=problem`.
const MAX_PROBLEMS_LISTED: usize = 100;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 while the instance can serve, 503 when none of its
/// accounts can (or, in shared mode, Redis is away). One misconfigured
/// account among many must not take the whole hub out of the load
/// balancer: it is listed (with what to do: a wrong secret, the IP to
/// whitelist, a quota) but does not make the instance unready; with a
/// single account, its problem does.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let r = app.creds.readiness(MAX_PROBLEMS_LISTED);
    let problems: Vec<_> = r
        .listed
        .iter()
        .map(|(appid, p)| {
            json!({"appid": appid, "severity": p.severity, "reason": p.reason, "since": p.since})
        })
        .collect();
    let mut ready = r.accounts == 0 || r.unhealthy < r.accounts;
    let mut body = json!({
        "ready": ready,
        "accounts": r.accounts,
        "unhealthy": r.unhealthy,
        "problems": problems,
    });
    if let Some(sh) = app.creds.shared() {
        let owned = r.owned;
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
