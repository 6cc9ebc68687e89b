//! Client authentication: `Authorization: Bearer <client key>`, checked
//! against SHA-256 hashes from the configuration in constant time. Keys are
//! never stored, logged or echoed; logs see the client's name.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientConfig;
use crate::error::ApiError;

/// Prefix of keys made by `wxhub key`.
pub const KEY_PREFIX: &str = "wxh_";

/// The client a request authenticated as, placed in the request by the
/// logging middleware.
#[derive(Debug, Clone)]
pub struct AuthedClient {
    /// Its configured name.
    pub name: std::sync::Arc<str>,
    /// AppIDs it may use.
    pub apps: std::sync::Arc<[String]>,
    /// Third-party platforms whose authorized accounts it may use.
    pub components: std::sync::Arc<[String]>,
    /// Its rate limits.
    pub limits: crate::config::ClientLimits,
}

/// The result of looking at a request's `Authorization` header.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No header.
    Anonymous,
    /// A key no client has.
    Unknown,
    /// The admin key.
    Admin,
    /// A configured client.
    Client(AuthedClient),
}

impl Caller {
    /// Name for logs and metrics.
    pub fn label(&self) -> &str {
        match self {
            Caller::Anonymous => "-",
            Caller::Unknown => "unknown",
            Caller::Admin => "admin",
            Caller::Client(c) => &c.name,
        }
    }
}

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random client key, `wxh_` + 43 URL-safe characters.
pub fn new_key() -> String {
    use rand::Rng;
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..43)
        .map(|_| A[rng.gen_range(0..A.len())] as char)
        .collect();
    format!("{KEY_PREFIX}{body}")
}

/// Identifies the caller. Every configured hash is compared, so timing does
/// not tell which client (if any) a key belongs to.
pub fn identify(
    header: Option<&str>,
    clients: &[ClientConfig],
    admin: Option<&[u8; 32]>,
) -> Caller {
    let Some(h) = header else {
        return Caller::Anonymous;
    };
    let Some(key) = h
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Caller::Unknown;
    };
    let digest = hash_key(key);
    let mut found: Option<&ClientConfig> = None;
    for c in clients {
        if bool::from(c.key_sha256.ct_eq(&digest)) {
            found = Some(c);
        }
    }
    let is_admin = admin.is_some_and(|a| bool::from(a.ct_eq(&digest)));
    match (found, is_admin) {
        (_, true) => Caller::Admin,
        (Some(c), false) => Caller::Client(AuthedClient {
            name: c.name.clone(),
            apps: c.apps.clone(),
            components: c.components.clone(),
            limits: c.limits,
        }),
        (None, false) => Caller::Unknown,
    }
}

/// Extractor for client routes: 401 without a known client key.
impl<S: Send + Sync> FromRequestParts<S> for AuthedClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::Client(c)) => Ok(c.clone()),
            Some(Caller::Anonymous) | None => Err(ApiError::unauthorized(
                "missing client key: send Authorization: Bearer <client key>",
            )),
            _ => Err(ApiError::unauthorized("unknown client key")),
        }
    }
}

/// Extractor for admin routes.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::Admin) => Ok(Admin),
            _ => Err(ApiError::unauthorized(
                "this page needs the admin key: Authorization: Bearer <admin key> (admin_key_sha256 in the config)",
            )),
        }
    }
}

impl AuthedClient {
    /// 403 unless this client may use `appid`.
    ///
    /// # Errors
    /// [`ApiError::forbidden`].
    pub fn check(&self, appid: &str) -> Result<(), ApiError> {
        self.check_via(appid, None)
    }

    /// 403 unless this client may use `appid`, which is authorized to
    /// `component` if it is: a grant of the component covers every account
    /// authorized to it, now and later.
    ///
    /// # Errors
    /// [`ApiError::forbidden`].
    pub fn check_via(&self, appid: &str, component: Option<&str>) -> Result<(), ApiError> {
        if self.apps.iter().any(|a| a == "*" || a == appid)
            || component.is_some_and(|c| self.components.iter().any(|g| g == c))
        {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "client {} may not use account {appid}",
                self.name
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_identified_by_hash() {
        let key = new_key();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == 47);
        let clients = vec![ClientConfig {
            components: Vec::new().into(),
            name: "shop".into(),
            key_sha256: hash_key(&key),
            apps: vec!["wx1".to_string()].into(),
            limits: Default::default(),
        }];
        let admin = hash_key("admin-key");
        let bearer = format!("Bearer {key}");
        assert!(
            matches!(identify(Some(&bearer), &clients, Some(&admin)), Caller::Client(c) if &*c.name == "shop")
        );
        assert!(matches!(
            identify(Some("Bearer admin-key"), &clients, Some(&admin)),
            Caller::Admin
        ));
        assert!(matches!(
            identify(Some("Bearer nope"), &clients, Some(&admin)),
            Caller::Unknown
        ));
        assert!(matches!(
            identify(Some(&key), &clients, None),
            Caller::Unknown
        ));
        assert!(matches!(identify(None, &clients, None), Caller::Anonymous));
    }
}
