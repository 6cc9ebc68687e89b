//! `/cgi-bin/component/*` and `/sns/oauth2/component/*`: thin handlers over
//! the rules in the parent module. JSON bodies, HTTP 200, errors with a
//! `rid` like every platform API (§1).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::any;
use serde_json::{Map, Value};

use crate::Sim;
use crate::api::{json_object, param, str_field, wx_response};
use crate::errors::{self as e, WxErr};
use crate::state::SimState;

type Params = Query<HashMap<String, String>>;

/// Routes of the component APIs.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/cgi-bin/component/api_component_token",
            any(component_token),
        )
        .route(
            "/cgi-bin/component/api_create_preauthcode",
            any(create_preauthcode),
        )
        .route("/cgi-bin/component/api_query_auth", any(query_auth))
        .route(
            "/cgi-bin/component/api_authorizer_token",
            any(authorizer_token),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_info",
            any(authorizer_info),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_list",
            any(authorizer_list),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_option",
            any(get_option),
        )
        .route(
            "/cgi-bin/component/api_set_authorizer_option",
            any(set_option),
        )
        .route(
            "/cgi-bin/component/api_start_push_ticket",
            any(start_push_ticket),
        )
        .route("/sns/oauth2/component/access_token", any(sns_access_token))
        .route(
            "/sns/oauth2/component/refresh_token",
            any(sns_refresh_token),
        )
}

/// The component token of a call: both query names are accepted (§1).
fn token_param(q: &HashMap<String, String>) -> Option<&str> {
    q.get("component_access_token")
        .or_else(|| q.get("access_token"))
        .map(String::as_str)
}

/// Which component a call belongs to, for stats and faults:
/// `component_appid` in the query, the owner of the token, or
/// `component_appid` in the JSON body. Buffers the body.
pub(crate) async fn attribute(sim: &Sim, req: Request) -> (Request, Option<String>) {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    if let Some(c) = query.get("component_appid").filter(|c| !c.is_empty()) {
        return (req, Some(c.clone()));
    }
    if let Some(owner) = token_param(&query).and_then(|t| sim.lock().components.appid_of_token(t)) {
        return (req, Some(owner));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let appid = json_object(&bytes).and_then(|m| {
        m.get("component_appid")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    (Request::from_parts(parts, Body::from(bytes)), appid)
}

/// Counts an on-behalf OAuth call against the component as well (the
/// platform layer counts it against the account through `appid`).
pub(crate) fn count_sns_call(st: &mut SimState, query: Option<&str>, path: &str) {
    let q: HashMap<String, String> = query
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    if let Some(c) = q.get("component_appid") {
        st.components.count_call(c, path);
    }
}

impl Sim {
    fn answer_component(
        &self,
        f: impl FnOnce(&mut SimState, i64) -> Result<Value, WxErr>,
    ) -> Response {
        let now = self.clock.now();
        let result = f(&mut self.lock(), now);
        wx_response(now, result)
    }

    /// Every component API taking the component token: POST, the token,
    /// the whitelist, a JSON body whose `component_appid` (when given) is
    /// the token's.
    fn with_component_token(
        &self,
        method: &Method,
        q: &HashMap<String, String>,
        peer: SocketAddr,
        body: &[u8],
        f: impl FnOnce(&mut SimState, &str, &Map<String, Value>, i64) -> Result<Value, WxErr>,
    ) -> Response {
        self.answer_component(|st, now| {
            if method != Method::POST {
                return Err(e::REQUIRE_POST);
            }
            let component = st.check_component_token(token_param(q), now)?;
            st.component_ip(&component, peer.ip())?;
            let m = json_object(body).ok_or(e::DATA_FORMAT_ERROR)?;
            let named = str_field(&m, "component_appid");
            if !named.is_empty() && named != component {
                return Err(e::INVALID_APPID);
            }
            f(st, &component, &m, now)
        })
    }
}

/// `POST /cgi-bin/component/api_component_token` (§3).
async fn component_token(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    body: Bytes,
) -> Response {
    sim.answer_component(|st, now| {
        if method != Method::POST {
            return Err(e::REQUIRE_POST);
        }
        let m = json_object(&body).ok_or(e::DATA_FORMAT_ERROR)?;
        st.component_token(
            str_field(&m, "component_appid"),
            str_field(&m, "component_appsecret"),
            // `null`, a number or a missing key are all "no ticket": 61006.
            str_field(&m, "component_verify_ticket"),
            peer.ip(),
            now,
        )
    })
}

/// `POST /cgi-bin/component/api_create_preauthcode` (§4.1).
async fn create_preauthcode(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, _, now| {
        st.create_preauth(c, now)
    })
}

/// `POST /cgi-bin/component/api_query_auth` (§5.1).
async fn query_auth(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, m, now| {
        let code = str_field(m, "authorization_code");
        if code.is_empty() {
            return Err(e::INVALID_ARGS);
        }
        if let Some(authorizer) = st.code_authorizer(code) {
            st.count_call(Some(&authorizer), "/cgi-bin/component/api_query_auth");
        }
        st.query_auth(c, code, now)
    })
}

/// `POST /cgi-bin/component/api_authorizer_token` (§5.2).
async fn authorizer_token(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, m, now| {
        let authorizer = str_field(m, "authorizer_appid");
        if authorizer.is_empty() {
            return Err(e::APPID_MISSING);
        }
        if st.account(authorizer).is_some() {
            st.count_call(Some(authorizer), "/cgi-bin/component/api_authorizer_token");
        }
        st.authorizer_token(c, authorizer, str_field(m, "authorizer_refresh_token"), now)
    })
}

/// `POST /cgi-bin/component/api_get_authorizer_info` (§5.3).
async fn authorizer_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, m, _| {
        let authorizer = str_field(m, "authorizer_appid");
        if authorizer.is_empty() {
            return Err(e::APPID_MISSING);
        }
        st.authorizer_info(c, authorizer)
    })
}

/// `POST /cgi-bin/component/api_get_authorizer_list` (§5.4).
async fn authorizer_list(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, m, _| {
        let offset = m.get("offset").and_then(Value::as_i64).unwrap_or(0);
        let count = m.get("count").and_then(Value::as_i64).unwrap_or(500);
        st.authorizer_list(c, offset, count)
    })
}

/// `POST /cgi-bin/component/api_get_authorizer_option` (§5.5, old path).
async fn get_option(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, m, _| {
        st.authorizer_option(
            c,
            str_field(m, "authorizer_appid"),
            str_field(m, "option_name"),
            None,
        )
    })
}

/// `POST /cgi-bin/component/api_set_authorizer_option` (§5.5, old path).
async fn set_option(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_component_token(&method, &q, peer, &body, |st, c, m, _| {
        let value = match m.get("option_value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(e::INVALID_OPTION_VALUE),
        };
        st.authorizer_option(
            c,
            str_field(m, "authorizer_appid"),
            str_field(m, "option_name"),
            Some(&value),
        )
    })
}

/// `POST /cgi-bin/component/api_start_push_ticket` (§2.2): secret, no token.
async fn start_push_ticket(State(sim): State<Arc<Sim>>, method: Method, body: Bytes) -> Response {
    sim.answer_component(|st, now| {
        if method != Method::POST {
            return Err(e::REQUIRE_POST);
        }
        let m = json_object(&body).ok_or(e::DATA_FORMAT_ERROR)?;
        st.start_push_ticket(
            str_field(&m, "component_appid"),
            str_field(&m, "component_secret"),
            now,
        )
    })
}

/// The checks both on-behalf OAuth endpoints share (§7): the component
/// token must be the named component's (else 40001, as a foreign token is
/// reported to answer), the account must have authorized it.
fn check_on_behalf(
    st: &mut SimState,
    q: &HashMap<String, String>,
    peer: SocketAddr,
    now: i64,
) -> Result<(String, String), WxErr> {
    let appid = param(q, "appid");
    if appid.is_empty() {
        return Err(e::APPID_MISSING);
    }
    let component = param(q, "component_appid");
    if component.is_empty() {
        return Err(e::APPID_MISSING);
    }
    let owner =
        st.check_component_token(q.get("component_access_token").map(String::as_str), now)?;
    if owner != component {
        return Err(e::INVALID_CREDENTIAL);
    }
    st.component_ip(component, peer.ip())?;
    st.account(appid).ok_or(e::INVALID_APPID)?;
    st.grants(component, appid, super::FUNC_WEB)?;
    Ok((appid.to_string(), component.to_string()))
}

/// `GET /sns/oauth2/component/access_token` (§7).
async fn sns_access_token(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Params,
) -> Response {
    sim.answer_component(|st, now| {
        if param(&q, "code").is_empty() {
            return Err(e::CODE_MISSING);
        }
        if param(&q, "grant_type") != "authorization_code" {
            return Err(e::INVALID_GRANT_TYPE);
        }
        let (appid, component) = check_on_behalf(st, &q, peer, now)?;
        st.charge(&appid, "/sns/oauth2/component/access_token", now)?;
        st.exchange_code(&appid, param(&q, "code"), Some(&component), now)
    })
}

/// `GET /sns/oauth2/component/refresh_token` (§7).
async fn sns_refresh_token(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Params,
) -> Response {
    sim.answer_component(|st, now| {
        if param(&q, "grant_type") != "refresh_token" {
            return Err(e::INVALID_GRANT_TYPE);
        }
        let refresh = param(&q, "refresh_token");
        if refresh.is_empty() {
            return Err(e::REFRESH_TOKEN_MISSING);
        }
        let (appid, component) = check_on_behalf(st, &q, peer, now)?;
        st.charge(&appid, "/sns/oauth2/component/refresh_token", now)?;
        st.refresh_sns(&appid, refresh, Some(&component), now)
    })
}
