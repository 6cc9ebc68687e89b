//! For people: the status page and the account list (admin key).

use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Admin;
use crate::credentials::{ListQuery, MAX_PAGE, StateFilter};
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn dur(secs: i64) -> String {
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// `GET /`: one row per account: token age and time left, the last refresh,
/// the last error, today's fetches.
pub async fn status_page(State(app): State<Arc<App>>, _: Admin) -> Html<String> {
    let now = app.clock.now();
    let mut rows = String::new();
    // The accounts that need attention first, then the rest, a page of each.
    let problems = ListQuery {
        state: Some(StateFilter::Problem),
        limit: MAX_PAGE,
        ..ListQuery::default()
    };
    let rest = ListQuery {
        state: Some(StateFilter::Ok),
        limit: MAX_PAGE,
        ..ListQuery::default()
    };
    let mut shown = app.creds.list(&problems).await.1;
    shown.extend(app.creds.list(&rest).await.1);
    for a in shown {
        for s in &a.slots {
            let _ = write!(
                rows,
                "<tr class=\"{}\"><td>{}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                match a.problem.as_ref().map(|p| p.severity) {
                    Some(crate::credentials::Severity::Unhealthy) => "bad",
                    Some(_) => "warn",
                    None => "ok",
                },
                esc(&a.appid),
                esc(&a.name),
                match a.refresh_owner {
                    None => a.token_mode.to_string(),
                    Some(true) => format!("{}<br><small>refreshed here</small>", a.token_mode),
                    Some(false) => format!("{}<br><small>followed</small>", a.token_mode),
                },
                s.kind,
                s.age_secs.map(dur).unwrap_or_else(|| "-".into()),
                s.remaining_secs.map(dur).unwrap_or_else(|| "-".into()),
                s.last_refresh_at
                    .map(|t| format!("{} ago", dur(now - t)))
                    .unwrap_or_else(|| "never".into()),
                s.problem
                    .as_ref()
                    .map(|p| esc(&p.reason))
                    .unwrap_or_default(),
                if s.kind == "access_token" {
                    format!("{} (forced {}/20)", a.fetches_today, a.forced_today)
                } else {
                    String::new()
                },
            );
        }
    }
    let shared = match app.creds.shared() {
        None => String::new(),
        Some(sh) => match sh.health() {
            Ok(()) => format!(
                "<p>Shared mode: instance <code>{}</code>, Redis up.</p>",
                esc(sh.instance())
            ),
            Err((since, reason)) => format!(
                "<p class=\"bad\">Shared mode: instance <code>{}</code>, <b>Redis unreachable</b> for {} ({}): serving held tokens, refreshing nothing.</p>",
                esc(sh.instance()),
                dur(now - since),
                esc(&reason)
            ),
        },
    };
    let push = push_rows(&app).await;
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>wxhub</title><style>\
body{{font-family:sans-serif;margin:24px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
tr.bad td,p.bad{{background:#fdd}}tr.warn td{{background:#ffd}}</style></head><body><h1>wxhub</h1>\
<p>{} accounts. <a href=\"/readyz\">/readyz</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/openapi.json\">/openapi.json</a></p>{shared}\
<table><tr><th>account</th><th>mode</th><th>credential</th><th>age</th><th>time left</th><th>last refresh</th><th>last error</th><th>fetches today</th></tr>{rows}</table>{push}</body></html>",
        app.creds.account_count()
    ))
}

/// The push gateway's subscribers: what is queued and parked for each. A
/// parked delivery failed for its whole retry window; replay it through
/// `POST /v1/push/{appid}/parked/{id}/replay` (list: `GET /v1/push/{appid}/parked`).
async fn push_rows(app: &App) -> String {
    if app.push.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for s in app.push.backlog().await {
        let n = |k: &str| {
            s[k].as_u64()
                .map_or_else(|| "?".to_string(), |v| v.to_string())
        };
        let class = if s["parked"].as_u64().unwrap_or(0) > 0 {
            "bad"
        } else {
            "ok"
        };
        let _ = write!(
            rows,
            "<tr class=\"{class}\"><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            esc(s["appid"].as_str().unwrap_or_default()),
            esc(s["subscriber"].as_str().unwrap_or_default()),
            if s["replier"] == true {
                " (replier)"
            } else {
                ""
            },
            n("queued"),
            n("parked"),
        );
    }
    format!(
        "<h2>Push subscribers</h2><table><tr><th>account</th><th>subscriber</th><th>queued</th><th>parked</th></tr>{rows}</table>"
    )
}
