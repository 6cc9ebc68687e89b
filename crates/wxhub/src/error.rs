//! The one error type of the HTTP API: a status, a stable machine code and a
//! message, written as `{"error":{"code":"...","message":"..."}}`.
//!
//! A failure inside the hub (a store error, data the hub itself wrote that
//! no longer reads) is answered by [`ApiError::internal`]: the caller gets a
//! reference and nothing of the cause, which is logged once, with that
//! reference, where the error is made.

use std::fmt;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::credentials::CredError;

/// What an internal error says, before its reference.
const INTERNAL: &str = "internal error; reference ";

/// An API error. Messages never contain a secret, a token or a client key.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// What went wrong and, where possible, what to do.
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<i64>,
    /// Where "start again" leads, for an error a person sees as a page (web
    /// authorization's callback); JSON answers leave it out.
    pub restart: Option<String>,
}

impl ApiError {
    /// An error with any code. The named constructors below are the codes
    /// the hub answers; this is for codes read back from the store.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            restart: None,
        }
    }

    /// The same error, with a "start again" link for the person's page.
    #[must_use]
    pub fn with_restart(self, restart: Option<String>) -> ApiError {
        ApiError { restart, ..self }
    }

    /// 500: the hub failed, not the caller nor the platform. The answer
    /// carries a short random reference and nothing of `cause`; the cause
    /// is logged here, once, at error level with the reference, so an
    /// operator can find it from what the caller reports. Causes are store
    /// errors and the like, which hold no secret; never pass one that does.
    pub fn internal(cause: impl fmt::Display) -> ApiError {
        let reference = hex::encode(rand::random::<[u8; 6]>());
        tracing::error!(error.reference = %reference, error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{INTERNAL}{reference}"),
        )
    }

    /// The answer an [`ApiError::internal`] gave, given again (a replayed
    /// sign-in) without logging its cause a second time. `None` when
    /// `message` is not such an answer.
    pub fn internal_repeated(message: &str) -> Option<ApiError> {
        let reference = message.strip_prefix(INTERNAL)?;
        (reference.len() == 12 && reference.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message))
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 502: the platform could not be reached or answered garbage.
    pub fn upstream(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: i64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 429 with `Retry-After`: this caller is over its rate.
    pub fn rate_limited(message: impl Into<String>, retry_after: i64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// 405, naming what is allowed.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 408: the request took longer than `http.request_timeout_ms`.
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// 400: a web authorization callback without a valid state: missing,
    /// forged, damaged, another account's or unknown.
    pub fn invalid_state(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "invalid_state", message)
    }

    /// 400: a web authorization state past its expiry.
    pub fn expired_state(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "expired_state", message)
    }

    /// 400: the platform says the sign-in code was already used (40163).
    pub fn code_used(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "code_used", message)
    }

    /// 400: the platform refuses the sign-in code as invalid or expired.
    pub fn code_expired(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "code_expired", message)
    }

    /// 503 with `Retry-After: 60`: the account holds
    /// `oauth.max_pending_states` sign-ins in progress.
    pub fn too_many_sign_ins(message: impl Into<String>) -> ApiError {
        ApiError {
            code: "too_many_sign_ins",
            ..Self::unavailable(message, 60)
        }
    }

    /// 503 with `Retry-After: 1`: more verified pushes wait for their write
    /// than `push.max_pending_writes`.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            code: "overloaded",
            ..Self::unavailable(message, 1)
        }
    }

    /// 503 with `Retry-After: 1`: a replayed callback whose first request
    /// has not finished.
    pub fn in_progress(message: impl Into<String>) -> ApiError {
        ApiError {
            code: "in_progress",
            ..Self::unavailable(message, 1)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<CredError> for ApiError {
    fn from(e: CredError) -> ApiError {
        match e {
            CredError::UnknownAccount(appid) => {
                ApiError::not_found(format!("no account {appid} in this hub"))
            }
            CredError::NotKept { .. } => ApiError::not_found(e.to_string()),
            CredError::Revoked { .. } => ApiError {
                code: "authorization_revoked",
                ..ApiError::forbidden(e.to_string())
            },
            CredError::Unavailable {
                reason,
                retry_after,
            } => ApiError::unavailable(reason, retry_after),
            CredError::OverBudget {
                reason,
                retry_after,
            } => ApiError {
                code: "over_budget",
                ..ApiError::unavailable(reason, retry_after)
            },
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_and_code() {
        let cases = [
            (ApiError::bad_request("x"), 400, "invalid_request"),
            (ApiError::unauthorized("x"), 401, "unauthorized"),
            (ApiError::forbidden("x"), 403, "forbidden"),
            (ApiError::not_found("x"), 404, "not_found"),
            (ApiError::upstream("x"), 502, "upstream_error"),
            (ApiError::unavailable("x", 3), 503, "unavailable"),
            (ApiError::rate_limited("x", 3), 429, "rate_limited"),
            (ApiError::method_not_allowed("x"), 405, "method_not_allowed"),
            (ApiError::payload_too_large("x"), 413, "payload_too_large"),
            (
                ApiError::unsupported_media_type("x"),
                415,
                "unsupported_media_type",
            ),
            (ApiError::request_timeout("x"), 408, "request_timeout"),
            (ApiError::invalid_state("x"), 400, "invalid_state"),
            (ApiError::expired_state("x"), 400, "expired_state"),
            (ApiError::code_used("x"), 400, "code_used"),
            (ApiError::code_expired("x"), 400, "code_expired"),
            (ApiError::too_many_sign_ins("x"), 503, "too_many_sign_ins"),
            (ApiError::in_progress("x"), 503, "in_progress"),
            (ApiError::overloaded("x"), 503, "overloaded"),
            (ApiError::internal("x"), 500, "internal"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status.as_u16(), e.code), (status, code));
        }
        let resp = ApiError::unavailable("x", 3).into_response();
        assert_eq!(resp.headers().get("retry-after").unwrap(), "3");
        assert_eq!(ApiError::too_many_sign_ins("x").retry_after, Some(60));
        assert_eq!(ApiError::in_progress("x").retry_after, Some(1));
        assert_eq!(ApiError::overloaded("x").retry_after, Some(1));
    }

    std::thread_local! {
        static CAPTURED: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
    }

    /// Writes to the capture of the thread that logs, if it captures.
    struct ThreadLines;

    impl std::io::Write for ThreadLines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            CAPTURED.with(|c| {
                if let Some(v) = c.borrow_mut().as_mut() {
                    v.extend_from_slice(b);
                }
            });
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with every log line it writes on this thread captured.
    ///
    /// One process-wide subscriber, set once: with a scoped subscriber per
    /// test, a callsite another test thread registered first kept a cached
    /// interest of "never", and the line was lost (a flake seen in CI).
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .with_writer(|| ThreadLines)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the library's tests");
            tracing::callsite::rebuild_interest_cache();
        });
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        let out = f();
        let text = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
        (out, String::from_utf8(text).unwrap())
    }

    #[tokio::test]
    async fn an_internal_error_answers_a_reference_and_logs_its_cause_once() {
        let cause = "store: disk I/O error";
        let (e, log) = logged(|| ApiError::internal(cause));
        let reference = e
            .message
            .strip_prefix("internal error; reference ")
            .expect("a reference")
            .to_string();
        assert!(
            reference.len() == 12 && reference.bytes().all(|b| b.is_ascii_hexdigit()),
            "{reference}"
        );
        let lines: Vec<_> = log.lines().filter(|l| l.contains(&reference)).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains("ERROR") && lines[0].contains(cause),
            "{log}"
        );
        assert_ne!(
            ApiError::internal("again").message,
            e.message,
            "each failure has its own reference"
        );
        let resp = e.into_response();
        assert_eq!(resp.status(), 500);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "internal", "message": format!("internal error; reference {reference}")}})
        );
    }

    #[tokio::test]
    async fn a_restart_link_stays_out_of_the_json_answer() {
        let e = ApiError::expired_state("x").with_restart(Some("https://hub/again".into()));
        assert_eq!(e.restart.as_deref(), Some("https://hub/again"));
        let body = axum::body::to_bytes(e.into_response().into_body(), 4096)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "expired_state", "message": "x"}})
        );
    }
}
