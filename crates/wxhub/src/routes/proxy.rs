//! `/v1/apps/{appid}/proxy/{*path}`: forwards a call to the platform's API
//! host with the token injected, and does the drop-and-retry everyone
//! hand-writes: on 40001, 40014 or 42001 it compare-and-refreshes and retries
//! exactly once. The response is passed through.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::auth::AuthedClient;
use crate::credentials::CredKind;
use crate::error::ApiError;
use crate::routes::tokens::authorize;

/// Largest request body forwarded (media uploads included).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// Only bodies this small are inspected for an errcode; larger answers
/// (media downloads) pass through untouched.
const INSPECT_LIMIT: usize = 64 * 1024;

/// The errcode of a small JSON answer, if any.
fn errcode(body: &[u8]) -> Option<i64> {
    if body.len() > INSPECT_LIMIT || !body.windows(9).any(|w| w == b"\"errcode\"") {
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
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// Forwards the call; see the module docs.
pub async fn proxy(
    State(app): State<Arc<App>>,
    client: AuthedClient,
    Path((appid, path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    authorize(&app, &client, &appid)?;
    if path.split('/').any(|seg| seg == ".." || seg == ".") || path.starts_with('/') {
        return Err(ApiError::bad_request(
            "path: must be a plain API path such as cgi-bin/user/info",
        ));
    }
    let method = req.method().clone();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::bad_request(format!("body: larger than {MAX_BODY} bytes")))?;
    let query: Vec<(String, String)> = query
        .into_iter()
        .filter(|(k, _)| k != "access_token")
        .collect();
    let base = app.config.upstream.api_base.trim_end_matches('/');
    let url = format!("{base}/{path}");

    let token = app.creds.get(&appid, CredKind::AccessToken).await?;
    let first = send(
        &app,
        &method,
        &url,
        &query,
        token.value.expose_secret(),
        &headers,
        &body,
    )
    .await?;
    let retry = errcode(&first.body).is_some_and(|c| matches!(c, 40001 | 40014 | 42001));
    let answer = if retry {
        app.metrics
            .inc("wxhub_proxy_retries_total", &[("appid", &appid)]);
        let fresh = app
            .creds
            .invalidate(&appid, CredKind::AccessToken, token.value.expose_secret())
            .await?;
        send(
            &app,
            &method,
            &url,
            &query,
            fresh.value.expose_secret(),
            &headers,
            &body,
        )
        .await?
    } else {
        first
    };
    let mut resp = (answer.status, answer.body).into_response();
    if let Some(ct) = answer.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(resp)
}

async fn send(
    app: &App,
    method: &Method,
    url: &str,
    query: &[(String, String)],
    token: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Upstream, ApiError> {
    use http_body_util::BodyExt;
    let mut q: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    q.push(("access_token", token));
    let qs = serde_urlencoded::to_string(&q)
        .map_err(|_| ApiError::bad_request("query: cannot be encoded"))?;
    let uri: http::Uri = format!("{url}?{qs}")
        .parse()
        .map_err(|_| ApiError::bad_request("path: not a valid URL path"))?;
    let mut req = http::Request::builder().method(method.clone()).uri(uri);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct.clone());
    }
    let req = req
        .body(http_body_util::Full::new(body.clone()))
        .map_err(|_| ApiError::bad_request("request: cannot be built"))?;
    let started = std::time::Instant::now();
    let timeout = std::time::Duration::from_millis(app.config.upstream.timeout_ms);
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
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| ApiError::upstream("reading the platform's answer failed"))?
            .to_bytes();
        Ok::<_, ApiError>((status, content_type, body))
    };
    let (status, content_type, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ApiError::upstream("the WeChat platform did not answer in time"))??;
    app.metrics.observe(
        "wxhub_upstream_duration_seconds",
        &[("endpoint", "proxy")],
        started.elapsed().as_secs_f64(),
    );
    Ok(Upstream {
        status,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::errcode;

    #[test]
    fn errcodes_are_read_from_small_json_answers_only() {
        assert_eq!(errcode(br#"{"errcode":40001,"errmsg":"x"}"#), Some(40001));
        assert_eq!(errcode(br#"{"errcode":"42001","errmsg":"x"}"#), Some(42001));
        assert_eq!(errcode(br#"{"subscribe":1}"#), None);
        assert_eq!(errcode(b"\x89PNG not json \"errcode\""), None);
    }
}
