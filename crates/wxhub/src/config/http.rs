//! `[http]`: what the server does about slow, idle and numerous
//! connections, and whose `X-Forwarded-For` it believes.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::limits::Cidr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHttp {
    header_read_timeout_ms: u64,
    idle_timeout_ms: u64,
    request_timeout_ms: u64,
    max_connections: usize,
    trusted_proxies: Vec<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        let d = HttpSettings::default();
        RawHttp {
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            max_connections: d.max_connections,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The HTTP server's own protection.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// A request's head must arrive within this; a client that trickles it
    /// (or never ends it) is disconnected.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A whole request, body and answer included, gets this long (408 after).
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Peers (reverse proxies, load balancers) whose `X-Forwarded-For` names
    /// the real client: per-IP limits apply to that address instead.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_connections: 4096,
            trusted_proxies: Vec::new(),
        }
    }
}

impl RawHttp {
    pub(crate) fn validate(&self) -> Result<HttpSettings, ConfigError> {
        let ms = |key: &str, v: u64| {
            if v < 100 {
                Err(ConfigError::new(key, "must be at least 100"))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        if self.max_connections == 0 {
            return Err(ConfigError::new("http.max_connections", "must be positive"));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Cidr::parse(c)
                    .map_err(|m| ConfigError::new(format!("http.trusted_proxies[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpSettings {
            header_read_timeout: ms("http.header_read_timeout_ms", self.header_read_timeout_ms)?,
            idle_timeout: ms("http.idle_timeout_ms", self.idle_timeout_ms)?,
            request_timeout: ms("http.request_timeout_ms", self.request_timeout_ms)?,
            max_connections: self.max_connections,
            trusted_proxies,
        })
    }
}
