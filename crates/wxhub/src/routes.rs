//! HTTP handlers, one module per area.

pub mod admin;
pub mod component;
pub mod directory;
pub mod health;
pub mod oauth;
pub mod openapi;
pub mod proxy;
pub mod push;
pub mod tokens;

use crate::error::ApiError;

/// 404 for unknown paths, in the API's error format.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

/// 405 for a known path with another method, in the API's error format.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed("this route does not take that method; see /openapi.json")
}
