//! Extractors whose rejections are API errors: every bad path, query or
//! body gets the JSON error format, a message naming the part at fault, and
//! never the name of an internal type (axum's own rejections are plain text
//! and say "expected struct InvalidateBody").

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest JSON body any route takes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Path parameters, with rejections as [`ApiError`].
#[derive(Debug, Clone)]
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(AppPath(v)),
            Err(r) => {
                let text = r.body_text();
                let detail = text.strip_prefix("Invalid URL: ").unwrap_or(&text);
                Err(ApiError::bad_request(format!("path: {detail}")))
            }
        }
    }
}

/// A query string, with rejections as [`ApiError`].
#[derive(Debug, Clone)]
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str::<T>(query)
            .map(AppQuery)
            .map_err(|e| ApiError::bad_request(format!("query: {e}")))
    }
}

/// A JSON object body: `Content-Type: application/json` (else 415), at most
/// [`MAX_JSON_BODY`] bytes (else 413), an object whose fields are the
/// route's (else 400 naming the field).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_content_type);
        if !json {
            return Err(ApiError::unsupported_media_type(
                "body: send JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    ApiError::payload_too_large(format!("body: larger than {MAX_JSON_BODY} bytes"))
                } else {
                    ApiError::bad_request("body: could not be read")
                }
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("body: not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::bad_request("body: must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("body: {e}")))
    }
}

/// Whether reading a body failed on its size limit.
pub fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a `Content-Type` value is JSON: `application/json`,
/// `application/*+json` or `text/json`, parameters ignored.
pub fn is_json_content_type(v: &str) -> bool {
    let essence = v
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "text/json",
            "application/problem+json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in ["text/plain", "", "image/jpeg", "application/jsonx"] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }
}
