//! The user-facing pages of `open.weixin.qq.com`: authorize, qrconnect and
//! the consent page (`docs/platform.md` §5.1, §5.6).
//!
//! The simulated person is chosen by the `wxsim_person` query parameter or
//! cookie; their scripted decision (allow, deny, ask) comes from the world.
//!
//! With `component_appid`, the authorize page runs web authorization on
//! behalf of an authorized account (`component-platform.md` §7): the
//! redirect_uri must be under the component's 公众号开发域名, the account must
//! have granted the component 网页服务 (permission set 4), the code is
//! bound to the component, and the redirect adds `appid`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::Sim;
use crate::world::{AccountKind, Consent, DenyMode};

/// A consent page waiting for a click.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    appid: String,
    person: String,
    scope: String,
    redirect_uri: url::Url,
    state: String,
    created: i64,
    component: Option<String>,
}

/// How long a consent page stays answerable, virtual seconds.
const PENDING_TTL: i64 = 600;

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/connect/oauth2/authorize", get(authorize))
        .route("/connect/qrconnect", get(qrconnect))
        .route("/connect/oauth2/decide", post(decide))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:-apple-system,'PingFang SC',sans-serif;background:#ededed;margin:0;padding:24px;color:#111}\
.card{background:#fff;border-radius:8px;padding:24px;max-width:420px;margin:40px auto;text-align:center}\
button,a.btn{display:block;width:100%;padding:12px;margin:12px 0;border:0;border-radius:6px;font-size:17px;text-decoration:none;box-sizing:border-box}\
.allow{background:#07c160;color:#fff}.deny{background:#f2f2f2;color:#07c160}.code{color:#888;font-size:13px}";

/// The platform's error page: HTTP 200, an HTML text with the code. The
/// `X-Wxsim-Error` header lets tests read the code without scraping.
fn error_page(code: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>微信网页授权</title><style>{STYLE}</style></head>\
<body><div class=\"card\"><h3>Oops! Something went wrong:(</h3><p id=\"errcode\">{}</p><p id=\"errmsg\">{}</p></div></body></html>",
        esc(code),
        esc(message)
    );
    let mut resp = Html(body).into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        resp.headers_mut().insert("x-wxsim-error", v);
    }
    resp
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn redirect(to: &url::Url, set_person: Option<&str>) -> Response {
    let mut resp = (
        StatusCode::FOUND,
        [(header::LOCATION, to.as_str().to_string())],
    )
        .into_response();
    if let Some(p) = set_person
        && let Ok(v) = HeaderValue::from_str(&format!("wxsim_person={p}; Path=/; SameSite=Lax"))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

fn with_params(base: &url::Url, params: &[(&str, &str)]) -> url::Url {
    let mut u = base.clone();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    u
}

async fn authorize(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    flow(
        &sim,
        &headers,
        &q,
        AccountKind::Official,
        "/connect/oauth2/authorize",
    )
}

async fn qrconnect(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    flow(
        &sim,
        &headers,
        &q,
        AccountKind::Website,
        "/connect/qrconnect",
    )
}

/// Validates the request the way the platform does (§5.1), then plays the
/// person's scripted decision.
fn flow(
    sim: &Sim,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    kind: AccountKind,
    path: &str,
) -> Response {
    let p = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let now = sim.clock.now();
    let appid = p("appid");
    if appid.is_empty() {
        return error_page("10012", "appid不能为空");
    }
    let mut st = sim.lock();
    st.count_call(Some(appid), path);
    let Some(account) = st.account(appid).cloned() else {
        return error_page("40013", "invalid appid");
    };
    match (kind, account.kind) {
        (AccountKind::Official, AccountKind::Website) => {
            return error_page("10016", "不支持微信开放平台的Appid，请使用公众号Appid");
        }
        (AccountKind::Website, AccountKind::Official) => {
            return error_page("10005", "此公众号并没有这些scope的权限");
        }
        _ => {}
    }
    let raw_redirect = p("redirect_uri");
    if raw_redirect.is_empty() {
        return error_page("10011", "redirect_uri不能为空");
    }
    let Ok(redirect_uri) = url::Url::parse(raw_redirect) else {
        return error_page("10003", "redirect_uri域名与后台配置不一致");
    };
    let component = Some(p("component_appid"))
        .filter(|c| !c.is_empty() && kind == AccountKind::Official)
        .map(str::to_string);
    let domains = match &component {
        None => &account.oauth_domains,
        Some(c) => match st.components.config(c) {
            Some(cfg) => &cfg.oauth_domains.clone(),
            None => return error_page("61011", "component_appid 无效 (invalid component)"),
        },
    };
    if !domain_allowed(domains, &redirect_uri) {
        return error_page("10003", "redirect_uri域名与后台配置不一致");
    }
    if let Some(c) = &component
        && let Err(err) = st.grants(c, appid, crate::component::FUNC_WEB)
    {
        // The platform shows "该链接无法访问"; the reason is ours, for tests.
        let why = if err.code == 61003 {
            "the account has not authorized this platform"
        } else {
            "the account has not granted this platform 网页服务 (permission set 4)"
        };
        return error_page(&err.code.to_string(), &format!("该链接无法访问 ({why})"));
    }
    let scope = p("scope");
    if scope.is_empty() {
        return error_page("10010", "scope不能为空");
    }
    let scope_ok = match kind {
        AccountKind::Official => {
            account.verified && matches!(scope, "snsapi_base" | "snsapi_userinfo")
        }
        AccountKind::Website => scope == "snsapi_login",
    };
    if !scope_ok {
        return error_page("10005", "此公众号并没有这些scope的权限");
    }
    if p("response_type") != "code" {
        return error_page("10005", "response_type 参数错误，必须为 code");
    }
    let state = p("state");
    if state.len() > 128 || !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return error_page(
            "10013",
            "state 参数错误：最多 128 字节，只能是 a-zA-Z0-9 (wxsim, docs/platform.md §5.1)",
        );
    }
    let from_query = q.get("wxsim_person").cloned();
    let Some(person) = from_query
        .clone()
        .or_else(|| cookie(headers, "wxsim_person"))
    else {
        drop(st);
        return person_picker(sim, q, path);
    };
    let Some((consent, snapshot)) = st.consent_of(&person) else {
        return error_page(
            "wxsim",
            &format!("no person with id {person:?} in this world"),
        );
    };
    let silent = scope == "snsapi_base"
        || (kind == AccountKind::Official
            && p("wxsim_from") == "menu"
            && st.follows(appid, &person))
        || (kind == AccountKind::Official && snapshot);
    let set_cookie = from_query.as_deref();
    let decision = if silent { Consent::Allow } else { consent };
    match decision {
        Consent::Allow => {
            let code = st.issue_code(appid, &person, scope, component.as_deref(), now);
            drop(st);
            redirect(
                &code_redirect(&redirect_uri, &code, state, appid, component.is_some()),
                set_cookie,
            )
        }
        Consent::Deny => {
            let mode = st.world.settings.deny_mode;
            drop(st);
            denied(mode, &redirect_uri, state, set_cookie)
        }
        Consent::Ask => {
            let id = crate::ids::opaque(24);
            let pending = Pending {
                appid: appid.to_string(),
                person: person.clone(),
                scope: scope.to_string(),
                redirect_uri,
                state: state.to_string(),
                created: now,
                component,
            };
            let nickname = st
                .people
                .get(&person)
                .map(|p| p.nickname.clone())
                .unwrap_or_default();
            drop(st);
            let mut pendings = sim.pending.lock().unwrap_or_else(|e| e.into_inner());
            pendings.retain(|_, p| now - p.created < PENDING_TTL);
            pendings.insert(id.clone(), pending);
            drop(pendings);
            let mut resp = consent_page(&id, &account.name, &nickname, scope);
            if let Some(p) = set_cookie
                && let Ok(v) =
                    HeaderValue::from_str(&format!("wxsim_person={p}; Path=/; SameSite=Lax"))
            {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

/// `redirect_uri?code=..&state=..`, plus `&appid=..` on behalf of a component.
fn code_redirect(
    redirect_uri: &url::Url,
    code: &str,
    state: &str,
    appid: &str,
    on_behalf: bool,
) -> url::Url {
    if on_behalf {
        with_params(
            redirect_uri,
            &[("code", code), ("state", state), ("appid", appid)],
        )
    } else {
        with_params(redirect_uri, &[("code", code), ("state", state)])
    }
}

fn denied(
    mode: DenyMode,
    redirect_uri: &url::Url,
    state: &str,
    set_cookie: Option<&str>,
) -> Response {
    match mode {
        DenyMode::StateOnly => redirect(&with_params(redirect_uri, &[("state", state)]), set_cookie),
        DenyMode::NoRedirect => Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>微信网页授权</title><style>{STYLE}</style></head>\
<body><div class=\"card\" id=\"denied\"><h3>你已拒绝授权</h3></div></body></html>"
        ))
        .into_response(),
    }
}

/// Host (or host:port) must equal a configured 网页授权域名 exactly (§5.1).
fn domain_allowed(domains: &[String], uri: &url::Url) -> bool {
    let Some(host) = uri.host_str() else {
        return false;
    };
    let with_port = uri.port().map(|p| format!("{host}:{p}"));
    domains.iter().any(|d| {
        d.eq_ignore_ascii_case(host)
            || with_port
                .as_deref()
                .is_some_and(|hp| d.eq_ignore_ascii_case(hp))
    })
}

fn consent_page(id: &str, account: &str, nickname: &str, scope: &str) -> Response {
    let (title, what, allow) = if scope == "snsapi_login" {
        ("微信登录", "使用微信账号登录网站", "确认登录")
    } else {
        ("微信网页授权", "获得你的公开信息（昵称、头像等）", "允许")
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{title}</title><style>{STYLE}</style></head><body><div class=\"card\">\
<h3 id=\"account\">{}</h3><p>申请{what}</p><p class=\"code\">当前微信用户：<span id=\"person\">{}</span></p>\
<form method=\"post\" action=\"/connect/oauth2/decide\">\
<input type=\"hidden\" name=\"pending\" value=\"{}\">\
<button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\" class=\"allow\">{allow}</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\" class=\"deny\">拒绝</button>\
</form></div></body></html>",
        esc(account),
        esc(nickname),
        esc(id)
    ))
    .into_response()
}

fn person_picker(sim: &Sim, q: &HashMap<String, String>, path: &str) -> Response {
    let st = sim.lock();
    let mut links = String::new();
    for p in st.people.values() {
        let mut params: Vec<(&str, &str)> =
            q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        params.push(("wxsim_person", &p.id));
        let query = serde_urlencoded::to_string(&params).unwrap_or_default();
        links.push_str(&format!(
            "<a class=\"btn deny\" id=\"person-{}\" href=\"{path}?{}\">{} <span class=\"code\">({}, consent: {:?})</span></a>",
            esc(&p.id),
            esc(&query),
            esc(&p.nickname),
            esc(&p.id),
            p.consent
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>wxsim: choose a person</title><style>{STYLE}</style></head>\
<body><div class=\"card\"><h3>wxsim: who is using WeChat?</h3><p class=\"code\">Pick the simulated person (sets the <code>wxsim_person</code> cookie).</p>{links}</div></body></html>"
    ))
    .into_response()
}

#[derive(Deserialize)]
struct Decision {
    pending: String,
    decision: String,
}

async fn decide(State(sim): State<Arc<Sim>>, Form(d): Form<Decision>) -> Response {
    let now = sim.clock.now();
    let pending = {
        let mut pendings = sim.pending.lock().unwrap_or_else(|e| e.into_inner());
        pendings.remove(&d.pending)
    };
    let Some(p) = pending.filter(|p| now - p.created < PENDING_TTL) else {
        return error_page(
            "wxsim",
            "this consent page has expired or was already answered",
        );
    };
    match d.decision.as_str() {
        "allow" => {
            let code =
                sim.lock()
                    .issue_code(&p.appid, &p.person, &p.scope, p.component.as_deref(), now);
            redirect(
                &code_redirect(
                    &p.redirect_uri,
                    &code,
                    &p.state,
                    &p.appid,
                    p.component.is_some(),
                ),
                None,
            )
        }
        _ => {
            let mode = sim.lock().world.settings.deny_mode;
            denied(mode, &p.redirect_uri, &p.state, None)
        }
    }
}
