//! The operator's console: the pages the hub itself shows a person in a
//! browser, with nothing else installed. Sign-in with the admin key starts
//! a session; the pages are drawn on the server (charts as inline SVG) and
//! need no JavaScript.
//!
//! Sessions: the cookie holds a random session id and its HMAC, never the
//! admin key. With SQLite the HMAC key is drawn at start and sessions are
//! kept in this process's memory (at most [`MAX_SESSIONS`], each for
//! [`SESSION_TTL`]): a restart ends them. In shared mode every instance
//! must accept the cookie: the HMAC key is derived from the admin key's
//! SHA-256 (changing the admin key ends every session), and sessions are
//! kept in Redis with [`SESSION_TTL`], so a person's requests may reach
//! any instance and signing out on one ends the session on all. Every POST of the console
//! checks `Sec-Fetch-Site`/`Origin` and, once signed in, a per-session form
//! token; the cookie is `SameSite=Strict`. Failed sign-ins are limited per
//! client IP ([`MAX_FAILURES`] per [`FAILURE_WINDOW`]).

pub mod pages;
mod render;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "wxhub_console";

/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Sessions kept at most; the oldest go first.
pub const MAX_SESSIONS: usize = 1000;

/// Failed sign-ins allowed per client IP per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;

/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Client IPs whose failures are remembered at most: beyond, a new address
/// is refused until old windows end (bounded memory, never no limit).
const MAX_TRACKED_IPS: usize = 10_000;

/// A signed-in session, as a page sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The form token its POSTs carry.
    pub csrf: String,
}

/// The console's sessions and sign-in limit.
pub struct Console {
    key: [u8; 32],
    sessions: Mutex<HashMap<[u8; 16], Instant>>,
    // Shared mode: sessions live here instead, for every instance.
    redis: Option<crate::store::RedisStore>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Default for Console {
    fn default() -> Self {
        Console {
            key: rand::random(),
            sessions: Mutex::new(HashMap::new()),
            redis: None,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Console {
    /// Shared mode: sessions in `redis`, signed under a key every instance
    /// derives alike from the admin key's SHA-256 (none configured: a
    /// random key, and no one can sign in anyway).
    pub fn shared(redis: crate::store::RedisStore, admin_key_sha256: Option<&[u8; 32]>) -> Console {
        let key = admin_key_sha256.map_or_else(rand::random, |h| {
            let mut m = Hmac::<Sha256>::new_from_slice(h).expect("HMAC takes any key");
            m.update(b"wxhub console session key");
            m.finalize().into_bytes().into()
        });
        Console {
            key,
            redis: Some(redis),
            ..Console::default()
        }
    }

    fn session_key(redis: &crate::store::RedisStore, id: &[u8; 16]) -> String {
        redis.key(&format!("console:session:{}", hex::encode(id)))
    }

    fn mac(&self, label: &str, id: &[u8; 16]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        m.update(label.as_bytes());
        m.update(id);
        m.finalize().into_bytes().into()
    }

    /// Starts a session: the cookie's value.
    ///
    /// # Errors
    /// In shared mode, if Redis cannot be asked.
    pub async fn start(&self) -> Result<String, crate::store::StoreError> {
        let id: [u8; 16] = rand::random();
        if let Some(redis) = &self.redis {
            let _: () = redis::cmd("SET")
                .arg(Self::session_key(redis, &id))
                .arg(1)
                .arg("PX")
                .arg(SESSION_TTL.as_millis() as u64)
                .query_async(&mut redis.conn())
                .await?;
            return Ok(self.cookie_value(&id));
        }
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, until| *until > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id, now + SESSION_TTL);
        Ok(self.cookie_value(&id))
    }

    fn cookie_value(&self, id: &[u8; 16]) -> String {
        format!(
            "{}.{}",
            hex::encode(id),
            hex::encode(self.mac("session", id))
        )
    }

    /// The session id of a cookie value whose signature holds.
    fn id_of(&self, value: &str) -> Option<[u8; 16]> {
        let (id, sig) = value.split_once('.')?;
        let id: [u8; 16] = hex::decode(id).ok()?.try_into().ok()?;
        let sig = hex::decode(sig).ok()?;
        bool::from(self.mac("session", &id).ct_eq(sig.as_slice())).then_some(id)
    }

    /// The live session the request's cookie names, if any. In shared
    /// mode, a Redis that does not answer counts as no session.
    pub async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = self.id_of(&cookie(headers, COOKIE)?)?;
        let live = match &self.redis {
            Some(redis) => {
                let n: Result<i64, _> = redis::cmd("EXISTS")
                    .arg(Self::session_key(redis, &id))
                    .query_async(&mut redis.conn())
                    .await;
                n.is_ok_and(|n| n == 1)
            }
            None => lock(&self.sessions)
                .get(&id)
                .is_some_and(|until| *until > Instant::now()),
        };
        live.then(|| Session {
            csrf: hex::encode(&self.mac("csrf", &id)[..16]),
        })
    }

    /// Ends the request's session, if it has one.
    ///
    /// # Errors
    /// In shared mode, if Redis cannot be asked.
    pub async fn end(&self, headers: &HeaderMap) -> Result<(), crate::store::StoreError> {
        if let Some(id) = cookie(headers, COOKIE).and_then(|v| self.id_of(&v)) {
            if let Some(redis) = &self.redis {
                let _: i64 = redis::cmd("DEL")
                    .arg(Self::session_key(redis, &id))
                    .query_async(&mut redis.conn())
                    .await?;
            }
            lock(&self.sessions).remove(&id);
        }
        Ok(())
    }

    /// Live sessions kept in this process (not in shared mode).
    pub fn live(&self) -> usize {
        let now = Instant::now();
        lock(&self.sessions).values().filter(|u| **u > now).count()
    }

    /// Whether `ip` may try to sign in now: `Err(seconds to wait)` after
    /// [`MAX_FAILURES`] failures in the window.
    pub fn may_try(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        match failures.get(&ip) {
            Some((start, n)) if now.duration_since(*start) < FAILURE_WINDOW => {
                if *n >= MAX_FAILURES {
                    let left = FAILURE_WINDOW - now.duration_since(*start);
                    return Err(left.as_secs().max(1));
                }
                Ok(())
            }
            Some(_) => Ok(()),
            None if failures.len() >= MAX_TRACKED_IPS => {
                failures.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
                if failures.len() >= MAX_TRACKED_IPS {
                    Err(60)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        let e = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= FAILURE_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` of a new session: HttpOnly, SameSite=Strict, Secure
/// when the console is served over HTTPS.
pub fn set_cookie(value: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    ))
    .expect("a cookie of hex digits is a header value")
}

/// The `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .expect("a plain header value")
}

/// Whether a POST comes from the console's own pages: a browser's
/// `Sec-Fetch-Site` must say same-origin (or a person typed it); without
/// it (an older browser), an `Origin` must be this host's. A request with neither (curl) passes this
/// check; the form token still applies where there is a session.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    // A browser that says where the request comes from is believed: it
    // is what a page elsewhere cannot forge.
    if let Some(site) = get("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = get("origin") else {
        return true;
    };
    let host = get("host").unwrap_or_default();
    let public = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    origin == format!("http://{host}")
        || origin == format!("https://{host}")
        || public.as_deref() == Some(origin)
}

/// Whether the request reached the hub over HTTPS (its public URL says so,
/// or the proxy in front does).
pub fn over_https(headers: &HeaderMap, public_url: &str) -> bool {
    public_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Whether the request asks for a page (a browser) rather than JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn sessions_are_signed_live_and_revocable() {
        let c = Console::default();
        let value = c.start().await.unwrap();
        let h = with_cookie(&format!("a=b; {COOKIE}={value}"));
        let s = c.session(&h).await.expect("a live session");
        assert_eq!(s.csrf.len(), 32);
        // Another key does not accept it.
        assert!(Console::default().session(&h).await.is_none());
        // A changed signature or id is refused.
        let (id, sig) = value.split_once('.').unwrap();
        let forged = format!("{id}.{}", "0".repeat(sig.len()));
        assert!(
            c.session(&with_cookie(&format!("{COOKIE}={forged}")))
                .await
                .is_none()
        );
        c.end(&h).await.unwrap();
        assert!(c.session(&h).await.is_none(), "signed out");
        assert_eq!(c.live(), 0);
    }

    #[test]
    fn failed_sign_ins_are_limited_per_ip() {
        let c = Console::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(c.may_try(ip).is_ok());
            c.failed(ip);
        }
        assert!(c.may_try(ip).is_err());
        assert!(c.may_try(other).is_ok());
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8780"));
        assert!(same_origin(&h, "http://127.0.0.1:8780"), "curl");
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:8780"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, "http://127.0.0.1:8780"));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h, "http://127.0.0.1:8780"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(!same_origin(&h, "http://127.0.0.1:8780"), "another port");
        h.remove("sec-fetch-site");
        h.insert("origin", HeaderValue::from_static("null"));
        assert!(!same_origin(&h, "http://127.0.0.1:8780"));
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:9999"));
        assert!(!same_origin(&h, "http://127.0.0.1:8780"));
    }
}
