//! Fault injection: the next N calls of an endpoint (optionally of one
//! account) answer an errcode, an HTTP status, a delay, a dropped connection
//! or a malformed body.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::Sim;
use crate::errors::WxErr;

/// What a fault does to a call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer `{"errcode":..,"errmsg":..}` with HTTP 200.
    Errcode {
        /// The errcode.
        errcode: i64,
        /// The errmsg base text.
        errmsg: String,
    },
    /// Answer this HTTP status with a small HTML body, like a gateway would.
    HttpStatus(u16),
    /// Wait this many real milliseconds, then answer normally.
    DelayMs(u64),
    /// Close the connection without answering.
    Drop,
    /// Answer HTTP 200 with a truncated JSON body.
    Malformed,
}

/// An armed fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Id, for listing and removal.
    pub id: u64,
    /// The API path it applies to, or `*` for every platform path.
    pub endpoint: String,
    /// Only calls of this account, when set.
    pub appid: Option<String>,
    /// Calls left to hit.
    pub remaining: u32,
    /// What it does.
    pub action: FaultAction,
}

/// `POST /_sim/faults` body: exactly one action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The API path, e.g. `/cgi-bin/token`, or `*`.
    pub endpoint: String,
    /// Only this account's calls.
    pub appid: Option<String>,
    /// How many calls (default 1).
    pub count: Option<u32>,
    /// Answer this errcode.
    pub errcode: Option<i64>,
    /// With `errcode`: the errmsg (default: "system error" or "fault injected").
    pub errmsg: Option<String>,
    /// Answer this HTTP status.
    pub http_status: Option<u16>,
    /// Delay this many real milliseconds.
    pub delay_ms: Option<u64>,
    /// Drop the connection.
    pub drop: Option<bool>,
    /// Answer a malformed body.
    pub malformed: Option<bool>,
}

impl FaultSpec {
    /// Checks the spec names exactly one action.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn into_fault(self, id: u64) -> Result<Fault, String> {
        if !(self.endpoint == "*" || self.endpoint.starts_with('/')) {
            return Err("endpoint: must be an API path such as /cgi-bin/token, or *".into());
        }
        let mut actions = Vec::new();
        if let Some(code) = self.errcode {
            let errmsg = self.errmsg.clone().unwrap_or_else(|| {
                if code == -1 {
                    "system error".into()
                } else {
                    "fault injected by wxsim".into()
                }
            });
            actions.push(FaultAction::Errcode {
                errcode: code,
                errmsg,
            });
        }
        if let Some(s) = self.http_status {
            if !(100..=599).contains(&s) {
                return Err("http_status: must be 100..=599".into());
            }
            actions.push(FaultAction::HttpStatus(s));
        }
        if let Some(ms) = self.delay_ms {
            actions.push(FaultAction::DelayMs(ms));
        }
        if self.drop == Some(true) {
            actions.push(FaultAction::Drop);
        }
        if self.malformed == Some(true) {
            actions.push(FaultAction::Malformed);
        }
        if actions.len() != 1 {
            return Err(
                "give exactly one of errcode, http_status, delay_ms, drop, malformed".into(),
            );
        }
        let remaining = self.count.unwrap_or(1);
        if remaining == 0 {
            return Err("count: must be at least 1".into());
        }
        Ok(Fault {
            id,
            endpoint: self.endpoint,
            appid: self.appid,
            remaining,
            action: actions.remove(0),
        })
    }
}

/// Marks a response whose connection must be closed without answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

impl Sim {
    fn take_fault(&self, path: &str, appid: Option<&str>) -> Option<FaultAction> {
        if self.fault_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let idx = faults.iter().position(|f| {
            (f.endpoint == "*" || f.endpoint == path)
                && f.appid.as_deref().is_none_or(|a| Some(a) == appid)
        })?;
        let action = faults[idx].action.clone();
        faults[idx].remaining -= 1;
        if faults[idx].remaining == 0 {
            faults.remove(idx);
        }
        self.fault_count.store(faults.len(), Ordering::Relaxed);
        Some(action)
    }
}

/// Which account a platform call belongs to: `appid` in the query, the owner
/// of `access_token`, or `appid` in a JSON body. Buffers POST bodies.
async fn attribute(sim: &Sim, req: Request) -> (Request, Option<String>) {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if let Some(appid) = get("appid").filter(|a| !a.is_empty()) {
        return (req, Some(appid));
    }
    if let Some(token) = get("access_token") {
        return (req, sim.lock().appid_of_token(&token));
    }
    if req.method() != Method::POST {
        return (req, None);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let appid = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("appid").and_then(|a| a.as_str()).map(str::to_string));
    (Request::from_parts(parts, Body::from(bytes)), appid)
}

/// Middleware on every platform path: counts the call and fires faults.
pub(crate) async fn platform_layer(
    State(sim): State<Arc<Sim>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let (req, appid) = if path.starts_with("/cgi-bin/component/") {
        crate::component::api::attribute(&sim, req).await
    } else {
        attribute(&sim, req).await
    };
    let action = {
        let mut st = sim.lock();
        if path.starts_with("/cgi-bin/component/") {
            let counted = appid
                .as_deref()
                .is_some_and(|c| st.components.count_call(c, &path));
            if !counted {
                st.count_call(None, &path);
            }
        } else {
            st.count_call(appid.as_deref(), &path);
        }
        if path.starts_with("/sns/oauth2/component/") {
            crate::component::api::count_sns_call(&mut st, req.uri().query(), &path);
        }
        let action = sim.take_fault(&path, appid.as_deref());
        if action.is_some() {
            st.count_fault(appid.as_deref());
        }
        action
    };
    match action {
        None => next.run(req).await,
        Some(FaultAction::DelayMs(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultAction::Errcode { errcode, errmsg }) => {
            crate::api::wx_response(sim.clock.now(), Err(WxErr::owned(errcode, errmsg)))
        }
        Some(FaultAction::HttpStatus(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            (
                status,
                [(header::CONTENT_TYPE, "text/html")],
                format!("<html><body><h1>{code}</h1>wxsim injected fault</body></html>"),
            )
                .into_response()
        }
        Some(FaultAction::Drop) => {
            let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            resp.extensions_mut().insert(DropConnection);
            resp
        }
        Some(FaultAction::Malformed) => (
            [(header::CONTENT_TYPE, "application/json; encoding=utf-8")],
            "{\"access_token\":\"",
        )
            .into_response(),
    }
}
