//! The console's routes: `GET /` (the overview, or the sign-in page),
//! `GET /console/apps/{appid}`, `POST /console/sign-in`,
//! `POST /console/sign-out`, and the refresh history as JSON
//! (`GET /v1/apps/{appid}/history`, admin key).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::render::{Timeline, beijing, day_chart, dur, esc, gauge, page, query_value, rel};
use super::{Session, clear_cookie, over_https, same_origin, set_cookie, wants_html};
use crate::app::App;
use crate::auth::{Admin, Caller, hash_key};
use crate::clock::beijing_day;
use crate::credentials::{AccountStatus, Severity, SlotStatus};
use crate::error::ApiError;
use crate::extract::{AppPath, AppQuery};
use crate::history::{self, Entry};
use crate::router::Passthrough;

/// Accounts on one page of the overview.
pub const PAGE_SIZE: usize = 50;

/// The platform's default daily limit of token fetches (test accounts get
/// 200); the console shows the limit a confirmation read when it has one.
pub const TOKEN_DAILY_QUOTA: i64 = 2000;

/// Forced stable-token refreshes the platform allows a day.
pub const FORCED_DAILY_QUOTA: i64 = 20;

/// Who is looking.
enum Viewer {
    /// The admin key in `Authorization` (curl): no forms to protect.
    Bearer,
    /// A browser's session.
    Session(Session),
}

impl Viewer {
    fn csrf(&self) -> Option<&str> {
        match self {
            Viewer::Bearer => None,
            Viewer::Session(s) => Some(&s.csrf),
        }
    }
}

// Takes what it needs out of the request, not the request: a request's
// body is not Sync, so a borrow of it must not live across the store lookup.
fn viewer<'a>(app: &'a App, req: &Request) -> impl Future<Output = Option<Viewer>> + Send + 'a {
    let admin = matches!(req.extensions().get::<Caller>(), Some(Caller::Admin));
    let headers = req.headers().clone();
    async move {
        if admin {
            return Some(Viewer::Bearer);
        }
        app.console.session(&headers).await.map(Viewer::Session)
    }
}

/// An HTML answer, kept as it is by the router's error layer, never cached
/// or framed.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    r.extensions_mut().insert(Passthrough);
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(to).unwrap_or(header::HeaderValue::from_static("/")),
    );
    r.extensions_mut().insert(Passthrough);
    r
}

/// The sign-in page, with a message when there is one.
fn sign_in_page(app: &App, status: StatusCode, message: Option<&str>) -> Response {
    let msg = message
        .map(|m| {
            format!(
                "<p class=\"error\" id=\"sign-in-error\" role=\"alert\">{}</p>",
                esc(m)
            )
        })
        .unwrap_or_default();
    let configured = if app.config.admin_key_sha256.is_some() {
        ""
    } else {
        "<p class=\"error\">No admin key is configured (<code>admin_key_sha256</code>): the console cannot be opened.</p>"
    };
    let body = format!(
        "<div class=\"card\" style=\"max-width:420px\"><h2>Sign in</h2>{configured}{msg}\
<form method=\"post\" action=\"/console/sign-in\"><p><label for=\"key\">Admin key</label><br>\
<input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required style=\"width:100%\"></p>\
<p><button id=\"sign-in\" type=\"submit\">Sign in</button></p></form>\
<p class=\"muted\">The key is the one whose SHA-256 is <code>admin_key_sha256</code> in the configuration (<code>wxhub dev</code> prints it). It starts a session of {} on this instance; the key itself is not kept.</p></div>",
        dur(super::SESSION_TTL.as_secs() as i64)
    );
    html(status, page("Sign in", None, &body))
}

/// `GET /`'s query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// Only accounts whose AppID or name contains this.
    #[serde(default)]
    q: Option<String>,
    /// The page, from 1.
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /`: the overview for a signed-in person or the admin key; the
/// sign-in page for a browser without either; 401 JSON for the rest.
pub async fn overview(State(app): State<Arc<App>>, req: Request) -> Response {
    let q: OverviewQuery = match serde_urlencoded::from_str(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return ApiError::bad_request(format!("query: {e}")).into_response(),
    };
    let Some(viewer) = viewer(&app, &req).await else {
        if wants_html(req.headers()) {
            return sign_in_page(&app, StatusCode::OK, None);
        }
        return ApiError::unauthorized(
            "this page needs the admin key: Authorization: Bearer <admin key> (admin_key_sha256 in the config), or sign in with a browser",
        )
        .into_response();
    };
    let page_no = q.page.unwrap_or(1);
    if page_no == 0 {
        return ApiError::bad_request("page: from 1").into_response();
    }
    let search = q.q.unwrap_or_default();
    html(
        StatusCode::OK,
        render_overview(&app, &viewer, &search, page_no).await,
    )
}

/// The overview's HTML.
async fn render_overview(app: &App, viewer: &Viewer, search: &str, page_no: usize) -> String {
    let now = app.clock.now();
    let offset = (page_no - 1).saturating_mul(PAGE_SIZE);
    let p = app.creds.console_page(search, offset, PAGE_SIZE).await;
    let mut body = String::new();
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/\" class=\"row\" role=\"search\"><label class=\"sr\" for=\"q\">Search by AppID or name</label>\
<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" placeholder=\"AppID or name\"><button type=\"submit\">Search</button></form>\
<p id=\"summary\">{} accounts{} · <span class=\"badge unhealthy\">{} unhealthy</span> <span class=\"badge degraded\">{} degraded</span> · shown unhealthy first · \
<a href=\"/readyz\">/readyz</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/openapi.json\">/openapi.json</a></p>",
        esc(search),
        p.total,
        if search.is_empty() {
            String::new()
        } else {
            format!(" match “{}”", esc(search))
        },
        p.unhealthy,
        p.degraded,
    );
    body.push_str(&shared_banner(app, now));
    if p.apps.is_empty() {
        body.push_str("<p id=\"no-match\">No account matches.</p>");
    }
    let owners = owners(app, &p.apps).await;
    for a in &p.apps {
        body.push_str(&account_card(app, a, now, true, &owners));
    }
    let pages = p.total.div_ceil(PAGE_SIZE).max(1);
    if pages > 1 {
        let link = |n: usize, label: &str, id: &str| {
            format!(
                "<a id=\"{id}\" href=\"/?page={n}{}\">{label}</a>",
                if search.is_empty() {
                    String::new()
                } else {
                    format!("&amp;q={}", query_value(search))
                }
            )
        };
        let _ = write!(
            body,
            "<nav class=\"pages\" aria-label=\"pages\">{}<span>page {page_no} of {pages}</span>{}</nav>",
            if page_no > 1 {
                link(page_no - 1, "← previous", "prev")
            } else {
                String::new()
            },
            if page_no < pages {
                link(page_no + 1, "next →", "next")
            } else {
                String::new()
            },
        );
    }
    body.push_str(&push_rows(app, None).await);
    page("Overview", viewer.csrf(), &body)
}

/// The health of an account in one word, and the class of its badge.
fn health(a: &AccountStatus) -> &'static str {
    if !a.managed {
        return "ok";
    }
    let invalid = a.slots.iter().any(|s| !s.valid);
    match a.problem.as_ref().map(|p| p.severity) {
        Some(Severity::Unhealthy) => "unhealthy",
        _ if invalid => "unhealthy",
        Some(_) => "degraded",
        None => "ok",
    }
}

/// What `wxhub explain` says of a code, for a failed fetch.
fn explained(code: i64) -> String {
    crate::cli::explain(code)
}

/// Shared mode: which instance refreshes each account another instance
/// owns, from Redis (one read per account on the page).
async fn owners(app: &App, apps: &[AccountStatus]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(sh) = app.creds.shared() else {
        return out;
    };
    for a in apps.iter().filter(|a| a.refresh_owner == Some(false)) {
        if let Ok(Some(holder)) = sh.lease_holder(&a.appid).await {
            out.insert(a.appid.clone(), holder);
        }
    }
    out
}

fn account_card(
    app: &App,
    a: &AccountStatus,
    now: i64,
    link: bool,
    owners: &HashMap<String, String>,
) -> String {
    let state = health(a);
    let mut out = String::new();
    let title = if link {
        format!(
            "<a href=\"/console/apps/{0}\" class=\"account-link\"><code>{0}</code></a>",
            esc(&a.appid)
        )
    } else {
        format!("<code>{}</code>", esc(&a.appid))
    };
    let owner = match a.refresh_owner {
        None => String::new(),
        Some(true) => format!(
            "<span class=\"muted\">refreshed by this instance (<code>{}</code>)</span>",
            esc(app.creds.shared().map_or("", |s| s.instance()))
        ),
        Some(false) => match owners.get(&a.appid) {
            Some(other) => format!(
                "<span class=\"muted\">refreshed by instance <code>{}</code> (this one follows)</span>",
                esc(other)
            ),
            None => {
                "<span class=\"muted\">no instance holds its lease right now</span>".to_string()
            }
        },
    };
    let _ = write!(
        out,
        "<section class=\"card account\" id=\"app-{}\"><div class=\"row\"><span class=\"badge {state}\">{state}</span>{title}<b>{}</b><span class=\"muted\">{} mode</span>{owner}</div>",
        esc(&a.appid),
        esc(&a.name),
        a.token_mode,
    );
    out.push_str(&platform_lines(a, now));
    if !a.managed {
        // A revoked authorizer keeps no token either, and says why above.
        if a.component.is_none() {
            out.push_str("<p class=\"muted\">A website app: the hub keeps no token for it.</p>");
        }
        out.push_str("</section>");
        return out;
    }
    for s in &a.slots {
        if let Some(p) = &s.problem {
            let _ = write!(
                out,
                "<div class=\"reason\"><b>{}</b>: {} <span class=\"muted\">(since {})</span>",
                s.kind,
                esc(&p.reason),
                rel(p.since, now)
            );
            if let Some(code) = s.errcode {
                let _ = write!(
                    out,
                    "<details><summary>wxhub explain {code}</summary><pre>{}</pre></details>",
                    esc(&explained(code))
                );
            }
            out.push_str("</div>");
        } else if !s.valid {
            let _ = write!(
                out,
                "<div class=\"reason\"><b>{}</b>: no valid value held; next attempt {}</div>",
                s.kind,
                rel(s.next_refresh_at, now)
            );
        }
    }
    out.push_str("<div class=\"slots\">");
    for s in &a.slots {
        out.push_str(&slot_line(a, s, now));
    }
    out.push_str("</div><div class=\"gauges\">");
    let limit = a
        .slots
        .iter()
        .find(|s| s.kind == "access_token")
        .and_then(|s| s.daily_limit)
        .unwrap_or(TOKEN_DAILY_QUOTA);
    out.push_str(&gauge("token fetches today", a.fetches_today, limit));
    if a.token_mode == "stable" {
        out.push_str(&gauge(
            "forced refreshes today",
            a.forced_today,
            FORCED_DAILY_QUOTA,
        ));
    }
    out.push_str("</div></section>");
    out
}

/// A third-party platform's verify ticket and authorizers; for an account
/// authorized to one, which, and whether its administrator revoked it.
fn platform_lines(a: &AccountStatus, now: i64) -> String {
    let mut out = String::new();
    if let Some(p) = &a.platform {
        let ticket = match (p.ticket_created_at, &p.ticket_warning) {
            (_, Some(w)) => format!(
                "<div class=\"reason\"><b>verify ticket</b>: {}</div>",
                esc(w)
            ),
            (Some(at), None) => format!(
                "<span class=\"muted\">newest verify ticket {}</span>",
                rel(at, now)
            ),
            (None, None) => String::new(),
        };
        let _ = write!(
            out,
            "<div class=\"platform\" id=\"platform-{0}\"><p>Third-party platform: <b class=\"authorizers\">{1}</b> account{2} authorized · \
administrators authorize at <code>/component/{0}/authorize?return=…</code> (a URL under its <code>return_origins</code>) {3}</p></div>",
            esc(&a.appid),
            p.authorizers,
            if p.authorizers == 1 { "" } else { "s" },
            ticket,
        );
    }
    if let Some(c) = &a.component {
        let _ = write!(
            out,
            "<p class=\"muted via\">authorized through the third-party platform <a href=\"/console/apps/{0}\"><code>{0}</code></a></p>",
            esc(c)
        );
        if let Some(at) = a.revoked_at {
            let _ = write!(
                out,
                "<div class=\"reason\"><b>revoked</b>: its administrator revoked the platform's authorization ({}); it is refreshed again once they authorize it anew</div>",
                rel(at, now)
            );
        }
    }
    out
}

fn slot_line(a: &AccountStatus, s: &SlotStatus, now: i64) -> String {
    let (Some(fetched_at), Some(expires_at)) = (s.fetched_at, s.expires_at) else {
        return format!(
            "<div class=\"slot\"><b>{}</b><p class=\"muted\">none held yet; next attempt {}</p></div>",
            s.kind,
            rel(s.next_refresh_at, now)
        );
    };
    let classic_token = a.token_mode == "classic" && s.kind == "access_token";
    let t = Timeline {
        kind: s.kind,
        now,
        fetched_at,
        expires_at,
        refresh_at: s.next_refresh_at,
        // The platform keeps the previous classic token alive 300 s after
        // a new one is fetched.
        previous_dies_at: classic_token.then_some(fetched_at + 300),
    };
    format!(
        "<div class=\"slot\"><b>{}</b>{}<p class=\"muted timeline-text\">{}</p></div>",
        s.kind,
        t.svg(),
        esc(&t.words())
    )
}

fn shared_banner(app: &App, now: i64) -> String {
    match app.creds.shared() {
        None => String::new(),
        Some(sh) => match sh.health() {
            Ok(()) => format!(
                "<p class=\"card\">Shared mode: this is instance <code>{}</code>; Redis is up. Sessions are this instance's own.</p>",
                esc(sh.instance())
            ),
            Err((since, reason)) => format!(
                "<p class=\"card unhealthy\">Shared mode: instance <code>{}</code>, <b>Redis unreachable</b> for {} ({}): serving held tokens, refreshing nothing.</p>",
                esc(sh.instance()),
                dur(now - since),
                esc(&reason)
            ),
        },
    }
}

/// The push gateway's subscribers (of one account, or all): what is queued
/// and parked for each. Replay a parked delivery through
/// `POST /v1/push/{appid}/parked/{id}/replay`.
async fn push_rows(app: &App, only: Option<&str>) -> String {
    if app.push.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for s in app.push.backlog().await {
        let appid = s["appid"].as_str().unwrap_or_default();
        if only.is_some_and(|o| o != appid) {
            continue;
        }
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        let class = if n("parked") > 0 { "unhealthy" } else { "ok" };
        let _ = write!(
            rows,
            "<tr><td><code>{}</code></td><td>{}{}</td><td>{}</td><td><span class=\"badge {class}\">{}</span></td></tr>",
            esc(appid),
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
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<h2>Push subscribers</h2><div class=\"scroll\"><table><tr><th>account</th><th>subscriber</th><th>queued</th><th>parked</th></tr>{rows}</table></div>"
    )
}

/// `GET /console/apps/{appid}`: one account's page.
pub async fn account_page(
    State(app): State<Arc<App>>,
    AppPath(appid): AppPath<String>,
    req: Request,
) -> Response {
    let Some(viewer) = viewer(&app, &req).await else {
        if wants_html(req.headers()) {
            return see_other("/");
        }
        return ApiError::unauthorized("this page needs the admin key or a console session")
            .into_response();
    };
    let Some(a) = app.creds.status_of(&appid).await else {
        let body = format!(
            "<p class=\"error\">No account <code>{}</code>.</p><p><a href=\"/\">Back to the overview</a></p>",
            esc(&appid)
        );
        return html(
            StatusCode::NOT_FOUND,
            page("No such account", viewer.csrf(), &body),
        );
    };
    let now = app.clock.now();
    let entries = app
        .creds
        .history(&appid, history::MAX_READ)
        .await
        .unwrap_or_default();
    let owners = owners(&app, std::slice::from_ref(&a)).await;
    let mut body = account_card(&app, &a, now, false, &owners);
    let limit = a
        .slots
        .iter()
        .find(|s| s.kind == "access_token")
        .and_then(|s| s.daily_limit)
        .unwrap_or(TOKEN_DAILY_QUOTA);
    let days = history::token_fetches_per_day(&entries, beijing_day(now), 30);
    let _ = write!(
        body,
        "<h2>Token fetches per day</h2>{}",
        day_chart(
            "Access-token fetches per Beijing day, last 30 days",
            &days,
            limit
        )
    );
    let _ = write!(
        body,
        "<h2>Clients</h2>{}",
        clients_table(
            app.creds
                .account(&appid)
                .map(|acc| acc.usage())
                .unwrap_or_default()
        )
    );
    if let Some(acc) = app.creds.account(&appid) {
        let [signed_in, refused, failed] = acc.web_auth();
        if signed_in + refused + failed > 0 || !acc.cfg.oauth_return_origins.is_empty() {
            let _ = write!(
                body,
                "<h2>Web authorization</h2><p id=\"web-auth\">Since this instance started: <b>{signed_in}</b> signed in, <b>{refused}</b> refused, <b>{failed}</b> failed (code exchange or profile).</p>"
            );
        }
    }
    let push = push_rows(&app, Some(&appid)).await;
    if !push.is_empty() {
        body.push_str(&push);
    }
    let _ = write!(
        body,
        "<h2>Refresh history</h2><p class=\"muted\">Kept {} days (<code>refresh.history_days</code>), at most {} entries; newest first. As JSON: <code>GET /v1/apps/{}/history</code> with the admin key.</p>{}",
        app.config.refresh.history_days,
        app.config.refresh.history_max_per_account,
        esc(&appid),
        history_table(&entries, now)
    );
    html(StatusCode::OK, page(&a.appid, viewer.csrf(), &body))
}

fn clients_table(usage: Vec<(Arc<str>, u64)>) -> String {
    if usage.is_empty() {
        return "<p class=\"muted\" id=\"clients\">No client has used this account since this instance started.</p>".into();
    }
    let mut rows = String::new();
    for (c, n) in usage {
        let _ = write!(rows, "<tr><td>{}</td><td>{n}</td></tr>", esc(&c));
    }
    format!(
        "<div class=\"scroll\"><table id=\"clients\"><tr><th>client</th><th>tokens and tickets served, calls proxied (since this instance started)</th></tr>{rows}</table></div>"
    )
}

/// How many history entries the page lists.
const HISTORY_ROWS: usize = 200;

fn history_table(entries: &[Entry], now: i64) -> String {
    if entries.is_empty() {
        return "<p class=\"muted\" id=\"history-empty\">No refresh recorded yet.</p>".into();
    }
    let mut rows = String::new();
    for e in entries.iter().take(HISTORY_ROWS) {
        let why = match &e.client {
            Some(c) => format!("{} by client <b>{}</b>", e.reason.words(), esc(c)),
            None => e.reason.words().to_string(),
        };
        let class = if e.outcome == "ok" { "ok" } else { "unhealthy" };
        let mut detail = String::new();
        if let Some(code) = e.errcode {
            let _ = write!(
                detail,
                "<details><summary>errcode {code}</summary><pre>{}</pre></details>",
                esc(&explained(code))
            );
        }
        if let Some(err) = &e.error {
            let _ = write!(detail, "{}", esc(err));
        }
        if let Some(s) = e.expires_in {
            let _ = write!(detail, "lives {}", dur(s));
        }
        let _ = write!(
            rows,
            "<tr class=\"history-row\"><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{why}</td><td><span class=\"badge {class}\">{}</span></td><td class=\"wide\">{detail}</td><td class=\"wide\">{}</td></tr>",
            beijing(e.at),
            rel(e.at, now),
            esc(&e.kind),
            esc(&e.outcome),
            e.instance.as_deref().map(esc).unwrap_or_default(),
        );
    }
    format!(
        "<div class=\"scroll\"><table id=\"history\"><tr><th>when (Beijing)</th><th>credential</th><th>why</th><th>outcome</th><th class=\"wide\">detail</th><th class=\"wide\">instance</th></tr>{rows}</table></div>"
    )
}

/// Reads a small form body.
async fn form(req: Request) -> Option<std::collections::HashMap<String, String>> {
    let bytes = axum::body::to_bytes(req.into_body(), 8 * 1024).await.ok()?;
    serde_urlencoded::from_bytes(&bytes).ok()
}

fn cross_site(app: &App) -> Response {
    app.metrics.inc(
        "wxhub_rate_limited_total",
        &[("limit", "console_cross_site"), ("client", "-")],
    );
    html(
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            None,
            "<p class=\"error\" id=\"refused\">Refused: this request did not come from the console's own page (cross-site request).</p><p><a href=\"/\">Open the console</a></p>",
        ),
    )
}

/// `POST /console/sign-in`: the admin key from the form starts a session.
pub async fn sign_in(State(app): State<Arc<App>>, req: Request) -> Response {
    if !same_origin(req.headers(), &app.public_url) {
        return cross_site(&app);
    }
    let ip = crate::router::client_ip(&app, &req);
    if let Some(ip) = ip
        && let Err(wait) = app.console.may_try(ip)
    {
        app.metrics.inc(
            "wxhub_rate_limited_total",
            &[("limit", "console_sign_in"), ("client", "-")],
        );
        let mut r = sign_in_page(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins from this address: try again in {}.",
                dur(wait as i64)
            )),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return r;
    }
    let secure = over_https(req.headers(), &app.public_url);
    let key = form(req)
        .await
        .and_then(|mut f| f.remove("key"))
        .unwrap_or_default();
    let right = app
        .config
        .admin_key_sha256
        .as_ref()
        .is_some_and(|h| !key.is_empty() && bool::from(h.ct_eq(&hash_key(key.trim()))));
    if !right {
        if let Some(ip) = ip {
            app.console.failed(ip);
        }
        tracing::warn!(client.ip = ?ip, "console: a sign-in with a wrong key");
        return sign_in_page(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin key. Check it and try again."),
        );
    }
    tracing::info!(client.ip = ?ip, "console: signed in");
    let value = match app.console.start().await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot store the session");
            return sign_in_page(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The hub cannot reach its store to keep the session: try again in a moment."),
            );
        }
    };
    let mut r = see_other("/");
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&value, secure));
    r
}

/// `POST /console/sign-out`: ends the session (its form token required).
pub async fn sign_out(State(app): State<Arc<App>>, req: Request) -> Response {
    if !same_origin(req.headers(), &app.public_url) {
        return cross_site(&app);
    }
    let headers: HeaderMap = req.headers().clone();
    let secure = over_https(&headers, &app.public_url);
    if let Some(session) = app.console.session(&headers).await {
        let token = form(req)
            .await
            .and_then(|mut f| f.remove("csrf"))
            .unwrap_or_default();
        if !bool::from(token.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return cross_site(&app);
        }
        if let Err(e) = app.console.end(&headers).await {
            tracing::error!(error = %e, "console: cannot end the session in the store");
            return sign_in_page(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The hub cannot reach its store to end the session: try again in a moment."),
            );
        }
        tracing::info!("console: signed out");
    }
    let mut r = see_other("/");
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(secure));
    r
}

/// `GET /v1/apps/{appid}/history`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many entries (1 to 1000, default 100).
    #[serde(default = "default_history_limit")]
    limit: usize,
}

fn default_history_limit() -> usize {
    100
}

/// `GET /v1/apps/{appid}/history?limit=`: the account's refresh history,
/// newest first (admin key).
pub async fn history_json(
    State(app): State<Arc<App>>,
    _: Admin,
    AppPath(appid): AppPath<String>,
    AppQuery(q): AppQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.limit == 0 || q.limit > history::MAX_READ {
        return Err(ApiError::bad_request(format!(
            "limit: between 1 and {}",
            history::MAX_READ
        )));
    }
    if app.creds.account(&appid).is_none() {
        return Err(ApiError::not_found(format!("no account {appid}")));
    }
    let entries = app
        .creds
        .history(&appid, q.limit)
        .await
        .map_err(|e| ApiError::unavailable(format!("the store did not answer: {e}"), 1))?;
    Ok(Json(json!({
        "appid": appid,
        "now": app.clock.now(),
        "retention_days": app.config.refresh.history_days,
        "entries": entries,
    })))
}
