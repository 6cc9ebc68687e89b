//! The authorization page an account administrator opens (§4.2): the PC
//! `componentloginpage` and both mobile `bindcomponent` hosts' paths. One
//! plain HTML form (no script), so headless Chromium or a plain HTTP client
//! can drive it. Errors are HTML pages with HTTP 200, as on WeChat, with the
//! text in `#error` and the code in the `X-Wxsim-Error` header.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::{ALL_FUNCS, PageCtx};
use crate::Sim;

/// Where the page's form posts.
const DECIDE: &str = "/safe/bindcomponent/decide";

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/cgi-bin/componentloginpage", get(page))
        .route("/safe/bindcomponent", get(page))
        .route("/wxaopen/safe/bindcomponent", get(page))
        .route(DECIDE, post(decide))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:-apple-system,'PingFang SC',sans-serif;background:#ededed;margin:0;padding:24px;color:#111}\
.card{background:#fff;border-radius:8px;padding:24px;max-width:480px;margin:40px auto}\
select{width:100%;padding:8px;font-size:15px}label{display:block;margin:6px 0}\
button{display:block;width:100%;padding:12px;margin:12px 0;border:0;border-radius:6px;font-size:17px}\
.approve{background:#07c160;color:#fff}.cancel{background:#f2f2f2;color:#07c160}";

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{}</title><style>{STYLE}</style></head><body><div class=\"card\">{body}</div></body></html>",
        esc(title)
    )
}

fn error_page(code: &str, message: &str) -> Response {
    let mut resp = Html(shell(
        "公众号授权",
        &format!(
            "<h3>授权失败</h3><p id=\"error\">{}</p><p class=\"code\">{}</p>",
            esc(message),
            esc(code)
        ),
    ))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        resp.headers_mut().insert("x-wxsim-error", v);
    }
    resp
}

/// Host (or host:port) must equal a configured 授权发起页域名.
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

fn func_name(id: u32) -> &'static str {
    match id {
        1 => "消息管理",
        2 => "用户管理",
        3 => "帐号服务",
        4 => "网页服务",
        7 => "群发与通知",
        11 => "素材管理",
        15 => "自定义菜单",
        _ => "权限集",
    }
}

async fn page(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let now = sim.clock.now();
    let component = p("component_appid");
    let mut st = sim.lock();
    let Some(cfg) = st.components.config(component).cloned() else {
        return error_page("61011", "component_appid 无效 (invalid component)");
    };
    let code = p("pre_auth_code");
    if let Err(msg) = st.check_preauth(component, code, now) {
        return error_page("61005", msg);
    }
    let raw = p("redirect_uri");
    if raw.is_empty() {
        return error_page("10011", "redirect_uri 不能为空");
    }
    let Ok(redirect_uri) = url::Url::parse(raw) else {
        return error_page("10003", "redirect_uri 不是有效的 URL");
    };
    if !domain_allowed(&cfg.auth_domains, &redirect_uri) {
        return error_page(
            "10003",
            "redirect_uri 的域名与第三方平台登记的授权发起页域名不一致",
        );
    }
    let (auth_type, biz_appid) = (p("auth_type"), p("biz_appid"));
    if !auth_type.is_empty() && !biz_appid.is_empty() {
        return error_page("10005", "auth_type、biz_appid 两个字段互斥");
    }
    let auth_type: u8 = match auth_type {
        "" => 3,
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return error_page("10005", "auth_type 无效: 1, 2 或 3"),
    };
    let biz = (!biz_appid.is_empty()).then(|| biz_appid.to_string());
    let accounts = if auth_type == 2 {
        // Mini programs are not simulated.
        Vec::new()
    } else {
        st.authorizable(component, biz.as_deref())
    };
    if biz.is_some() && accounts.is_empty() {
        return error_page("61003", "biz_appid 对应的帐号不能授权给该第三方平台");
    }
    st.set_page_ctx(
        code,
        PageCtx {
            redirect_uri,
            biz_appid: biz,
            auth_type,
        },
    );
    drop(st);
    let options: String = accounts
        .iter()
        .map(|(appid, name)| {
            format!(
                "<option value=\"{}\">{} ({})</option>",
                esc(appid),
                esc(name),
                esc(appid)
            )
        })
        .collect();
    let funcs: String = ALL_FUNCS
        .iter()
        .map(|id| {
            format!(
                "<label><input type=\"checkbox\" name=\"func\" value=\"{id}\" id=\"func-{id}\" checked> {}</label>",
                func_name(*id)
            )
        })
        .collect();
    Html(shell(
        "公众号授权",
        &format!(
            "<h3 id=\"component\">授权给 {}</h3>\
<form method=\"post\" action=\"{DECIDE}\">\
<input type=\"hidden\" name=\"component_appid\" value=\"{}\">\
<input type=\"hidden\" name=\"pre_auth_code\" value=\"{}\">\
<p>选择要授权的公众号</p><select id=\"account\" name=\"account\">{options}</select>\
<p>授权权限集</p>{funcs}\
<button type=\"submit\" name=\"action\" value=\"approve\" id=\"approve\" class=\"approve\">授权</button>\
<button type=\"submit\" name=\"action\" value=\"cancel\" id=\"cancel\" class=\"cancel\">取消</button>\
</form>",
            esc(&cfg.name),
            esc(component),
            esc(code)
        ),
    ))
    .into_response()
}

async fn decide(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut funcs = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if k == "func" {
            match v.parse::<u32>() {
                Ok(f) => funcs.push(f),
                Err(_) => return error_page("wxsim", "func: not a permission set id"),
            }
        } else {
            fields.insert(k.into_owned(), v.into_owned());
        }
    }
    let f = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let now = sim.clock.now();
    let (component, code) = (f("component_appid"), f("pre_auth_code"));
    let approval = {
        let mut st = sim.lock();
        let ctx = match st.check_preauth(component, code, now) {
            Ok(Some(ctx)) => ctx,
            Ok(None) => return error_page("wxsim", "open the authorization page first"),
            Err(msg) => return error_page("61005", msg),
        };
        if f("action") != "approve" {
            drop(st);
            return Html(shell(
                "公众号授权",
                "<h3 id=\"cancelled\">已取消授权</h3><p>你取消了本次授权，第三方平台未获得任何权限。</p>",
            ))
            .into_response();
        }
        let account = f("account");
        let allowed = ctx.auth_type != 2
            && st
                .authorizable(component, ctx.biz_appid.as_deref())
                .iter()
                .any(|(a, _)| a == account);
        if !allowed {
            return error_page("61003", "该帐号不能授权给该第三方平台");
        }
        if funcs.is_empty() {
            return error_page("wxsim", "至少选择一个权限集");
        }
        match st.approve(component, account, &funcs, Some(code), now) {
            Ok(a) => (a, ctx.redirect_uri),
            Err(msg) => return error_page("wxsim", &msg),
        }
    };
    let (approval, redirect_uri) = approval;
    tokio::spawn({
        let sim = sim.clone();
        let component = component.to_string();
        async move {
            super::pusher::push_event(sim, &component, approval.info_type, approval.xml).await;
        }
    });
    let mut to = redirect_uri;
    to.query_pairs_mut()
        .append_pair("auth_code", &approval.code)
        .append_pair("expires_in", &approval.expires_in.to_string());
    (
        StatusCode::FOUND,
        [(header::LOCATION, to.as_str().to_string())],
    )
        .into_response()
}
