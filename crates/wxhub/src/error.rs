//! The one error type of the HTTP API: a status, a stable machine code and a
//! message, written as `{"error":{"code":"...","message":"..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::credentials::CredError;

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
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
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
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status.as_u16(), e.code), (status, code));
        }
        let resp = ApiError::unavailable("x", 3).into_response();
        assert_eq!(resp.headers().get("retry-after").unwrap(), "3");
    }
}
