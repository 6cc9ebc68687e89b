//! The server APIs of `api.weixin.qq.com`: thin handlers over [`SimState`].
//!
//! § numbers refer to `docs/platform.md`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::Sim;
use crate::errors::{self as e, WxErr};
use crate::state::{QUOTA_PATHS, SimState, constant_time_eq};

type Params = Query<HashMap<String, String>>;

/// Routes of the API host.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/cgi-bin/token", any(token))
        .route("/cgi-bin/stable_token", any(stable_token))
        .route("/cgi-bin/clear_quota", any(clear_quota))
        .route("/cgi-bin/clear_quota/v2", any(clear_quota_v2))
        .route("/cgi-bin/openapi/quota/get", any(quota_get))
        .route("/cgi-bin/openapi/quota/clear", any(quota_clear))
        .route("/cgi-bin/ticket/getticket", any(getticket))
        .route("/cgi-bin/user/info", any(user_info))
        .route("/cgi-bin/user/info/batchget", any(user_batchget))
        .route("/cgi-bin/user/get", any(user_get))
        .route("/cgi-bin/media/get", any(media_get))
        .route("/sns/oauth2/access_token", any(sns_access_token))
        .route("/sns/oauth2/refresh_token", any(sns_refresh_token))
        .route("/sns/auth", any(sns_auth))
        .route("/sns/userinfo", any(sns_userinfo))
}

/// The platform's JSON answer; errors get the rid suffix (§1.1).
pub(crate) fn wx_response(now: i64, result: Result<Value, WxErr>) -> Response {
    let body = match result {
        Ok(v) => v,
        Err(err) => json!({
            "errcode": err.code,
            "errmsg": format!("{} rid: {}", err.msg, crate::ids::rid(now)),
        }),
    };
    (
        [(header::CONTENT_TYPE, "application/json; encoding=utf-8")],
        body.to_string(),
    )
        .into_response()
}

impl Sim {
    /// Runs one rule under the lock, counts an error against `appid`, and
    /// answers the platform's way.
    fn answer(
        &self,
        appid: Option<&str>,
        f: impl FnOnce(&mut SimState, i64) -> Result<Value, WxErr>,
    ) -> Response {
        let now = self.clock.now();
        let mut st = self.lock();
        let result = f(&mut st, now);
        if let Err(err) = &result {
            st.count_error(appid, err.code);
        }
        drop(st);
        wx_response(now, result)
    }

    /// Every API that takes the global `access_token`: the token check, then
    /// the quota, then the rule. Written once (§4).
    fn with_token(
        &self,
        token: Option<&String>,
        path: &str,
        f: impl FnOnce(&mut SimState, &str, i64) -> Result<Value, WxErr>,
    ) -> Response {
        let now = self.clock.now();
        let mut st = self.lock();
        let checked = st.check_access_token(token.map(String::as_str), now);
        let appid = checked.as_ref().ok().cloned();
        let result = checked.and_then(|appid| {
            st.charge(&appid, path, now)?;
            f(&mut st, &appid, now)
        });
        if let Err(err) = &result {
            st.count_error(appid.as_deref(), err.code);
        }
        drop(st);
        wx_response(now, result)
    }
}

pub(crate) fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> &'a str {
    q.get(key).map(String::as_str).unwrap_or("")
}

pub(crate) fn json_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

pub(crate) fn str_field<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `GET /cgi-bin/token` (§2.1).
async fn token(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Query(q): Params,
) -> Response {
    let appid = param(&q, "appid");
    sim.answer(Some(appid), |st, now| {
        if method != Method::GET {
            return Err(e::REQUIRE_GET);
        }
        if appid.is_empty() {
            return Err(e::APPID_MISSING);
        }
        if param(&q, "secret").is_empty() {
            return Err(e::APPSECRET_MISSING);
        }
        if param(&q, "grant_type") != "client_credential" {
            return Err(e::INVALID_GRANT_TYPE);
        }
        if st.components.contains(appid) {
            return Err(e::COMPONENT_APPID_ON_TOKEN);
        }
        st.check_credentials(appid, param(&q, "secret"), peer.ip())?;
        st.charge(appid, "/cgi-bin/token", now)?;
        st.issue_classic(appid, now)
    })
}

/// `POST /cgi-bin/stable_token` (§2.2): JSON only.
async fn stable_token(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    body: Bytes,
) -> Response {
    let req = json_object(&body);
    let appid = req.as_ref().map(|m| str_field(m, "appid").to_string());
    sim.answer(appid.as_deref(), |st, now| {
        if method != Method::POST {
            return Err(e::REQUIRE_POST);
        }
        // A form body cannot be read as JSON, so the platform sees no appid.
        let m = req.as_ref().ok_or(e::APPID_MISSING)?;
        let appid = str_field(m, "appid");
        let secret = str_field(m, "secret");
        if appid.is_empty() {
            return Err(e::APPID_MISSING);
        }
        if secret.is_empty() {
            return Err(e::APPSECRET_MISSING);
        }
        if str_field(m, "grant_type") != "client_credential" {
            return Err(e::INVALID_GRANT_TYPE);
        }
        let force = match m.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(e::INVALID_ARGS),
        };
        if st.components.contains(appid) {
            return Err(e::COMPONENT_APPID_ON_TOKEN);
        }
        st.check_credentials(appid, secret, peer.ip())?;
        st.charge(appid, "/cgi-bin/stable_token", now)?;
        st.issue_stable(appid, force, now)
    })
}

/// `POST /cgi-bin/clear_quota?access_token=` with `{"appid"}` (§2.4).
async fn clear_quota(
    State(sim): State<Arc<Sim>>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/clear_quota",
        |st, appid, now| {
            if method != Method::POST {
                return Err(e::REQUIRE_POST);
            }
            let m = json_object(&body).ok_or(e::DATA_FORMAT_ERROR)?;
            let requested = str_field(&m, "appid");
            if requested.is_empty() {
                return Err(e::APPID_MISSING);
            }
            if requested != appid {
                return Err(e::INVALID_APPID);
            }
            st.clear_quota(appid, now)
        },
    )
}

/// `POST /cgi-bin/clear_quota/v2`: appid and appsecret in the query or the
/// body, since the official pages disagree (§2.4).
async fn clear_quota_v2(
    State(sim): State<Arc<Sim>>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let from_body: HashMap<String, String> = match json_object(&body) {
        Some(m) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        None => serde_urlencoded::from_bytes(&body).unwrap_or_default(),
    };
    let get = |k: &str| {
        let v = param(&q, k);
        if v.is_empty() {
            param(&from_body, k)
        } else {
            v
        }
    };
    let appid = get("appid").to_string();
    let secret = get("appsecret").to_string();
    sim.answer(Some(&appid), |st, now| {
        if method != Method::POST {
            return Err(e::REQUIRE_POST);
        }
        if appid.is_empty() {
            return Err(e::APPID_MISSING);
        }
        if secret.is_empty() {
            return Err(e::APPSECRET_MISSING);
        }
        let account = st.account(&appid).ok_or(e::INVALID_APPID)?;
        if !constant_time_eq(account.secret.as_bytes(), secret.as_bytes()) {
            return Err(e::INVALID_APPSECRET);
        }
        st.clear_quota(&appid, now)
    })
}

fn cgi_path(body: &[u8]) -> Result<String, WxErr> {
    let m = json_object(body).ok_or(e::DATA_FORMAT_ERROR)?;
    let path = str_field(&m, "cgi_path");
    if !path.starts_with('/') {
        return Err(e::INVALID_CGI_PATH);
    }
    if !QUOTA_PATHS.contains(&path) {
        return Err(e::CGI_PATH_NOT_FOUND);
    }
    Ok(path.to_string())
}

/// `POST /cgi-bin/openapi/quota/get` (§2.4).
async fn quota_get(State(sim): State<Arc<Sim>>, Query(q): Params, body: Bytes) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/openapi/quota/get",
        |st, appid, now| {
            let path = cgi_path(&body)?;
            st.quota_get(appid, &path, now)
        },
    )
}

/// `POST /cgi-bin/openapi/quota/clear` (§2.4).
async fn quota_clear(State(sim): State<Arc<Sim>>, Query(q): Params, body: Bytes) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/openapi/quota/clear",
        |st, appid, _| {
            let path = cgi_path(&body)?;
            st.quota_clear(appid, &path)
        },
    )
}

/// `GET /cgi-bin/ticket/getticket?type=jsapi|wx_card` (§7.1).
async fn getticket(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/ticket/getticket",
        |st, appid, now| match param(&q, "type") {
            kind @ ("jsapi" | "wx_card") => st.ticket(appid, kind, now),
            _ => Err(e::INVALID_ARGS),
        },
    )
}

/// `GET /cgi-bin/media/get?media_id=`: a temporary media file, as bytes with
/// its own `Content-Type` and an attachment disposition; errors as JSON.
async fn media_get(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    let now = sim.clock.now();
    let mut st = sim.lock();
    let checked = st.check_access_token(q.get("access_token").map(String::as_str), now);
    let appid = checked.as_ref().ok().cloned();
    let found = checked.and_then(|appid| {
        st.charge(&appid, "/cgi-bin/media/get", now)?;
        st.media(&appid, param(&q, "media_id"))
    });
    match found {
        Ok((content_type, body)) => {
            drop(st);
            let disposition = format!(
                "attachment; filename=\"{}\"",
                param(&q, "media_id").replace(['"', '\\'], "")
            );
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                body,
            )
                .into_response()
        }
        Err(err) => {
            st.count_error(appid.as_deref(), err.code);
            drop(st);
            wx_response(now, Err(err))
        }
    }
}

/// `GET /cgi-bin/user/info` (§6.1).
async fn user_info(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/user/info",
        |st, appid, _| {
            let openid = param(&q, "openid");
            if openid.is_empty() {
                return Err(e::OPENID_MISSING);
            }
            let lang = match param(&q, "lang") {
                "" => "zh_CN",
                l => l,
            };
            st.user_info(appid, openid, lang)
        },
    )
}

/// `POST /cgi-bin/user/info/batchget`: at most 100 (§6.2).
async fn user_batchget(
    State(sim): State<Arc<Sim>>,
    method: Method,
    Query(q): Params,
    body: Bytes,
) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/user/info/batchget",
        |st, appid, _| {
            if method != Method::POST {
                return Err(e::REQUIRE_POST);
            }
            let m = json_object(&body).ok_or(e::DATA_FORMAT_ERROR)?;
            let list = m
                .get("user_list")
                .and_then(Value::as_array)
                .ok_or(e::DATA_FORMAT_ERROR)?;
            if list.is_empty() || list.len() > 100 {
                return Err(e::INVALID_OPENID_LIST_SIZE);
            }
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                let openid = item.get("openid").and_then(Value::as_str).unwrap_or("");
                let lang = item.get("lang").and_then(Value::as_str).unwrap_or("zh_CN");
                out.push(st.user_info(appid, openid, lang)?);
            }
            Ok(json!({ "user_info_list": out }))
        },
    )
}

/// `GET /cgi-bin/user/get` (§6.3).
async fn user_get(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    sim.with_token(
        q.get("access_token"),
        "/cgi-bin/user/get",
        |st, appid, _| st.user_list(appid, param(&q, "next_openid")),
    )
}

/// `GET /sns/oauth2/access_token` (§5.2).
async fn sns_access_token(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    let appid = param(&q, "appid");
    sim.answer(Some(appid), |st, now| {
        if appid.is_empty() {
            return Err(e::APPID_MISSING);
        }
        if param(&q, "secret").is_empty() {
            return Err(e::APPSECRET_MISSING);
        }
        if param(&q, "code").is_empty() {
            return Err(e::CODE_MISSING);
        }
        if param(&q, "grant_type") != "authorization_code" {
            return Err(e::INVALID_GRANT_TYPE);
        }
        let account = st.account(appid).ok_or(e::INVALID_APPID)?;
        if !constant_time_eq(account.secret.as_bytes(), param(&q, "secret").as_bytes()) {
            return Err(e::INVALID_APPSECRET);
        }
        st.charge(appid, "/sns/oauth2/access_token", now)?;
        st.exchange_code(appid, param(&q, "code"), None, now)
    })
}

/// `GET /sns/oauth2/refresh_token` (§5.3): no secret.
async fn sns_refresh_token(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    let appid = param(&q, "appid");
    sim.answer(Some(appid), |st, now| {
        if appid.is_empty() {
            return Err(e::APPID_MISSING);
        }
        if param(&q, "grant_type") != "refresh_token" {
            return Err(e::INVALID_GRANT_TYPE);
        }
        let refresh = param(&q, "refresh_token");
        if refresh.is_empty() {
            return Err(e::REFRESH_TOKEN_MISSING);
        }
        st.account(appid).ok_or(e::INVALID_APPID)?;
        st.charge(appid, "/sns/oauth2/refresh_token", now)?;
        st.refresh_sns(appid, refresh, None, now)
    })
}

/// `GET /sns/auth` (§5.4).
async fn sns_auth(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    let appid = sim.lock().appid_of_token(param(&q, "access_token"));
    sim.answer(appid.as_deref(), |st, now| {
        st.sns_auth(
            q.get("access_token").map(String::as_str),
            param(&q, "openid"),
            now,
        )
    })
}

/// `GET /sns/userinfo` (§5.5).
async fn sns_userinfo(State(sim): State<Arc<Sim>>, Query(q): Params) -> Response {
    let appid = sim.lock().appid_of_token(param(&q, "access_token"));
    sim.answer(appid.as_deref(), |st, now| {
        if let Some(appid) = &appid {
            st.charge(appid, "/sns/userinfo", now)?;
        }
        st.sns_userinfo(
            q.get("access_token").map(String::as_str),
            param(&q, "openid"),
            now,
        )
    })
}
