//! `/v1/apps/{appid}/proxy/{*path}`: forwards a call to the platform's API
//! host with the account's global token injected, and does the
//! drop-and-retry everyone hand-writes: on 40001, 40014 or 42001 it reports
//! the token (which the hub confirms with the platform before replacing
//! anything) and retries exactly once with the token to use now.
//!
//! It forwards only what takes the global token: GET and POST to the API
//! host's own paths. `/sns/*` (a person's token), the token endpoints, the
//! third-party platform's `component` calls and anything that is not a
//! plain API path are refused with a 4xx saying why; so is any path that
//! would read differently after another round of percent-decoding. Only a
//! JSON error body is read as an error: media and other answers pass
//! through untouched.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::auth::AuthedClient;
use crate::credentials::CredKind;
use crate::error::ApiError;
use crate::extract::{AppPath, is_json_content_type, is_length_limit};
use crate::limits::ClientLimit;
use crate::routes::tokens::authorize;

/// Largest request body forwarded (media uploads included).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// Only bodies this small are inspected for an errcode; larger answers
/// (media downloads) pass through untouched.
const INSPECT_LIMIT: usize = 64 * 1024;

/// The first segments of the API host's paths that take the global
/// access token (official accounts, mini programs, cards, statistics…).
const API_ROOTS: &[&str] = &[
    "bizwifi",
    "card",
    "cgi-bin",
    "channels",
    "customservice",
    "datacube",
    "device",
    "intp",
    "marketing",
    "merchant",
    "poi",
    "product",
    "scan",
    "semantic",
    "shakearound",
    "shop",
    "tcb",
    "union",
    "wxa",
    "wxaapi",
    "wxopen",
];

/// Why a path is not forwarded, as the API error to answer.
fn refuse(path: &str) -> Option<ApiError> {
    let plain = !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
    if !plain {
        // A `%` here came from a doubly encoded path: forwarded, it would
        // be decoded again upstream into something this check never saw.
        return Some(ApiError::bad_request(
            "path: must be a plain API path such as cgi-bin/user/info (letters, digits, '/', '_', '-', '.'; nothing percent-encoded)",
        ));
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some(ApiError::bad_request(
            "path: empty, '.' and '..' segments are not forwarded",
        ));
    }
    let root = path.split('/').next().unwrap_or_default();
    if root == "sns" {
        return Some(ApiError::bad_request(
            "path: sns/* calls take a person's access token from web authorization, not the account's: the hub does not inject its token there. Use /oauth/{appid}/authorize and /v1/apps/{appid}/users/{openid}",
        ));
    }
    if matches!(path, "cgi-bin/token" | "cgi-bin/stable_token") {
        return Some(ApiError::bad_request(
            "path: the hub is the only fetcher of this account's token; ask it with GET /v1/apps/{appid}/access_token",
        ));
    }
    if path.starts_with("cgi-bin/component/") {
        return Some(ApiError::bad_request(
            "path: cgi-bin/component/* calls take a third-party platform's component token, not the account's",
        ));
    }
    if !API_ROOTS.contains(&root) {
        return Some(ApiError::not_found(format!(
            "path: {root}/ is not a path of the platform's API host that takes the account's token"
        )));
    }
    None
}

/// The errcode of a small JSON error answer, if any. A body is read only
/// when it says it is JSON (or plain text, as some error answers do) and is
/// not an attachment: a media file is never taken for an error, whatever
/// its bytes.
fn errcode(headers: &HeaderMap, body: &[u8]) -> Option<i64> {
    if body.len() > INSPECT_LIMIT || headers.contains_key(header::CONTENT_DISPOSITION) {
        return None;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let textual = is_json_content_type(ct)
        || ct
            .split(';')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/plain"));
    if !textual || !body.windows(9).any(|w| w == b"\"errcode\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &v["errcode"] {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

struct Upstream {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Forwards the call; see the module docs.
pub async fn proxy(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    AppPath((appid, path)): AppPath<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    authorize(&app, &client, &appid)?;
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST {
        let mut resp = ApiError::method_not_allowed("the platform's API takes GET and POST only")
            .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
        return Ok(resp);
    }
    if let Some(e) = refuse(&path) {
        return Err(e);
    }
    app.charge(&client, ClientLimit::Proxy).await?;
    app.creds.note_use(&appid, &client.name);
    let query = upstream_query(req.uri().query().unwrap_or(""));
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            if is_length_limit(&e) {
                ApiError::payload_too_large(format!("body: larger than {MAX_BODY} bytes"))
            } else {
                ApiError::bad_request("body: could not be read")
            }
        })?;
    let base = app.config.upstream.api_base.trim_end_matches('/');
    let url = format!("{base}/{path}?{query}");

    let token = app.creds.get(&appid, CredKind::AccessToken).await?;
    let first = send(
        &app,
        &method,
        &url,
        token.value.expose_secret(),
        content_type.as_ref(),
        &body,
    )
    .await?;
    let retry =
        errcode(&first.headers, &first.body).is_some_and(|c| matches!(c, 40001 | 40014 | 42001));
    let answer = if retry {
        app.metrics
            .inc("wxhub_proxy_retries_total", &[("appid", &appid)]);
        let now = app
            .creds
            .invalidate(
                &appid,
                CredKind::AccessToken,
                token.value.expose_secret(),
                &client.name,
            )
            .await?;
        send(
            &app,
            &method,
            &url,
            now.served.value.expose_secret(),
            content_type.as_ref(),
            &body,
        )
        .await?
    } else {
        first
    };
    let mut resp = (answer.status, answer.body).into_response();
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(v) = answer.headers.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp.extensions_mut().insert(crate::router::Passthrough);
    Ok(resp)
}

/// The caller's query as it goes upstream, ready for `access_token=` to be
/// appended: as sent, unless it carries an `access_token` of its own (in any
/// encoding), which is dropped.
fn upstream_query(raw: &str) -> String {
    // Decoding every pair costs more than the rest of the query handling;
    // a key can only decode to `access_token` if it says so, or hides it
    // behind a percent sign.
    let might = raw.contains("access") || raw.contains('%');
    let own_token =
        might && url::form_urlencoded::parse(raw.as_bytes()).any(|(k, _)| k == "access_token");
    let mut q = if own_token {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                url::form_urlencoded::parse(raw.as_bytes()).filter(|(k, _)| k != "access_token"),
            )
            .finish()
    } else {
        raw.trim_end_matches('&').to_string()
    };
    if !q.is_empty() {
        q.push('&');
    }
    q
}

async fn send(
    app: &App,
    method: &Method,
    url: &str,
    token: &str,
    content_type: Option<&header::HeaderValue>,
    body: &Bytes,
) -> Result<Upstream, ApiError> {
    use http_body_util::BodyExt;
    let mut full = String::with_capacity(url.len() + 13 + token.len());
    full.push_str(url);
    full.push_str("access_token=");
    // The platform's tokens are URL-safe; anything else is encoded.
    if token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        full.push_str(token);
    } else {
        full.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
    }
    let uri: http::Uri = full
        .parse()
        .map_err(|_| ApiError::bad_request("query: not a valid query string"))?;
    let mut req = http::Request::builder().method(method.clone()).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct.clone());
    }
    let req = req
        .body(http_body_util::Full::new(body.clone()))
        .map_err(|_| ApiError::bad_request("request: cannot be built"))?;
    let started = std::time::Instant::now();
    let timeout = app.config.upstream.timeout;
    let exchange = async {
        // Only the error's kind is reported: nothing that could carry the
        // URL, which holds the token.
        let resp = app.upstream.request(req).await.map_err(|e| {
            ApiError::upstream(if e.is_connect() {
                "calling the WeChat platform failed: cannot connect"
            } else {
                "calling the WeChat platform failed: the connection broke"
            })
        })?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| ApiError::upstream("reading the platform's answer failed"))?
            .to_bytes();
        Ok::<_, ApiError>((parts.status, parts.headers, body))
    };
    let (status, headers, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ApiError::upstream("the WeChat platform did not answer in time"))??;
    app.metrics.observe(
        "wxhub_upstream_duration_seconds",
        &[("endpoint", "proxy")],
        started.elapsed().as_secs_f64(),
    );
    Ok(Upstream {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ct: &str, attachment: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        if attachment {
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"a.jpg\""),
            );
        }
        h
    }

    #[test]
    fn errcodes_are_read_from_small_json_answers_only() {
        let json = headers("application/json; encoding=utf-8", false);
        assert_eq!(
            errcode(&json, br#"{"errcode":40001,"errmsg":"x"}"#),
            Some(40001)
        );
        assert_eq!(
            errcode(&json, br#"{"errcode":"42001","errmsg":"x"}"#),
            Some(42001)
        );
        assert_eq!(errcode(&json, br#"{"subscribe":1}"#), None);
        assert_eq!(
            errcode(&headers("text/plain", false), br#"{"errcode":40001}"#),
            Some(40001)
        );
        // A media file that happens to hold the bytes of an error.
        let media = br#"{"errcode":40001}"#;
        assert_eq!(errcode(&headers("image/jpeg", false), media), None);
        assert_eq!(errcode(&headers("application/json", true), media), None);
        assert_eq!(errcode(&HeaderMap::new(), media), None);
    }

    #[test]
    fn a_callers_own_access_token_is_dropped_in_any_encoding() {
        assert_eq!(upstream_query(""), "");
        assert_eq!(
            upstream_query("openid=o1&lang=zh_CN"),
            "openid=o1&lang=zh_CN&"
        );
        assert_eq!(
            upstream_query("openid=o1&access_token=evil&lang=zh_CN"),
            "openid=o1&lang=zh_CN&"
        );
        assert_eq!(upstream_query("access%5Ftoken=evil&x=1"), "x=1&");
        assert_eq!(upstream_query("access_token=evil"), "");
        assert_eq!(upstream_query("a=%E4%B8%AD"), "a=%E4%B8%AD&", "as sent");
    }

    #[test]
    fn only_plain_api_paths_that_take_the_global_token_are_forwarded() {
        for ok in [
            "cgi-bin/user/info",
            "cgi-bin/media/get",
            "datacube/getusersummary",
            "wxa/getwxacode",
            "cgi-bin/message/custom/send",
        ] {
            assert!(refuse(ok).is_none(), "{ok}");
        }
        let cases = [
            ("sns/userinfo", 400),
            ("sns/oauth2/access_token", 400),
            ("cgi-bin/token", 400),
            ("cgi-bin/stable_token", 400),
            ("cgi-bin/component/api_component_token", 400),
            ("_sim/stats", 404),
            ("connect/oauth2/authorize", 404),
            ("cgi-bin/../_sim/stats", 400),
            ("cgi-bin//user", 400),
            ("cgi-bin/user/info%3Faccess_token=x", 400),
            ("cgi-bin/%2E%2E/_sim", 400),
            ("cgi-bin/user info", 400),
            ("", 400),
        ];
        for (path, status) in cases {
            let e = refuse(path).unwrap_or_else(|| panic!("{path} forwarded"));
            assert_eq!(e.status.as_u16(), status, "{path}: {}", e.message);
        }
    }
}
