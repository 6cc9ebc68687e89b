//! `[store]`: where state outlives a process.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::secret::{self, Given};
use crate::seal::{EncryptionKey, StoreKeys};

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// An embedded SQLite file: one instance.
    #[default]
    Sqlite,
    /// A Redis server: several instances share it.
    Redis,
}

/// `[store]` as written. Redis's keys under a SQLite store are refused: they
/// mean the `kind` line was forgotten.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    #[serde(default)]
    kind: StoreKind,
    path: Option<PathBuf>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    prefix: Option<String>,
    lease_ms: Option<u64>,
    lease_partitions: Option<u32>,
    sentinels: Option<Vec<String>>,
    sentinel_master: Option<String>,
    encryption_key: Option<String>,
    encryption_key_env: Option<String>,
    encryption_key_file: Option<PathBuf>,
    previous_encryption_key: Option<String>,
    previous_encryption_key_env: Option<String>,
    previous_encryption_key_file: Option<PathBuf>,
}

/// The storage backend.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// An embedded SQLite file.
    Sqlite {
        /// Path of the database file.
        path: PathBuf,
    },
    /// A Redis server shared by several instances.
    Redis {
        /// `redis://[:password@]host:port[/db]`; may hold a password, so
        /// it is never logged.
        url: RedisUrl,
        /// Prefix of every key and channel, so several hubs (or test runs)
        /// can share one Redis.
        prefix: String,
        /// How long a refresh lease lasts without renewal.
        lease: Duration,
        /// How many leases the accounts are hashed into (the first
        /// instance's count is kept in Redis and wins).
        partitions: u32,
        /// Redis Sentinel: the primary is the one these name; `url` then
        /// gives only the credentials and database.
        sentinel: Option<Sentinel>,
        /// PEM certificates to trust for `rediss://` instead of the system's
        /// and the web's roots (a private CA).
        tls_ca: Option<Pem>,
    },
}

/// Where Redis Sentinel is asked for the primary.
#[derive(Debug, Clone)]
pub struct Sentinel {
    /// The name the Sentinels monitor the primary under.
    pub master: String,
    /// `host:port` of each Sentinel.
    pub nodes: Vec<String>,
}

/// PEM text, shown in `Debug` by size only.
#[derive(Clone)]
pub struct Pem(pub Vec<u8>);

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

/// A Redis URL, which may hold a password.
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl([redacted])")
    }
}

// Long enough that a GC pause or a slow Redis does not move ownership, short
// enough that a dead owner's accounts are taken over well inside the 240 s
// refresh margin (docs/lifecycle.md).
const DEFAULT_LEASE_MS: u64 = 10_000;

impl RawStore {
    /// The backend and the encryption keys, which both backends take.
    pub(crate) fn validate(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(StoreConfig, StoreKeys), ConfigError> {
        let keys = self.keys(lookup)?;
        let store = match self.kind {
            StoreKind::Sqlite => self.sqlite(),
            StoreKind::Redis => self.redis(lookup),
        }?;
        Ok((store, keys))
    }

    /// `encryption_key` and `previous_encryption_key`, each given one of
    /// the three ways a secret is ([`secret::read`]), as 64 hex digits.
    fn keys(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<StoreKeys, ConfigError> {
        let read = |name: &str, given: Given| -> Result<Option<EncryptionKey>, ConfigError> {
            // Which of the three forms was given, for the error's key.
            let form = match (&given.value, &given.env, &given.file) {
                (_, Some(_), _) => "_env",
                (_, _, Some(_)) => "_file",
                _ => "",
            };
            secret::read("store", name, given, lookup)?
                .map(|text| {
                    let text = zeroize::Zeroizing::new(text);
                    EncryptionKey::from_hex(&text)
                        .map_err(|m| ConfigError::new(format!("store.{name}{form}"), m))
                })
                .transpose()
        };
        let current = read(
            "encryption_key",
            Given::new(
                self.encryption_key.take(),
                self.encryption_key_env.take(),
                self.encryption_key_file.take(),
            ),
        )?;
        let previous = read(
            "previous_encryption_key",
            Given::new(
                self.previous_encryption_key.take(),
                self.previous_encryption_key_env.take(),
                self.previous_encryption_key_file.take(),
            ),
        )?;
        match (&current, &previous) {
            (None, Some(_)) => Err(ConfigError::new(
                "store.previous_encryption_key",
                "is only for a rotation, beside the new store.encryption_key; give store.encryption_key too",
            )),
            (Some(c), Some(p)) if c.id() == p.id() => Err(ConfigError::new(
                "store.previous_encryption_key",
                "is the same key as store.encryption_key; give the key the store was sealed under before the rotation",
            )),
            _ => Ok(StoreKeys { current, previous }),
        }
    }

    fn sqlite(self) -> Result<StoreConfig, ConfigError> {
        let redis_only = [
            ("store.url", self.url.is_some()),
            ("store.url_env", self.url_env.is_some()),
            ("store.url_file", self.url_file.is_some()),
            ("store.tls_ca_file", self.tls_ca_file.is_some()),
            ("store.prefix", self.prefix.is_some()),
            ("store.lease_ms", self.lease_ms.is_some()),
            ("store.lease_partitions", self.lease_partitions.is_some()),
            ("store.sentinels", self.sentinels.is_some()),
            ("store.sentinel_master", self.sentinel_master.is_some()),
        ];
        if let Some((key, _)) = redis_only.iter().find(|(_, given)| *given) {
            return Err(ConfigError::new(
                *key,
                "only for kind = \"redis\"; the store is SQLite (store.kind)",
            ));
        }
        Ok(StoreConfig::Sqlite {
            path: self.path.unwrap_or_else(|| PathBuf::from("./wxhub.db")),
        })
    }

    fn redis(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StoreConfig, ConfigError> {
        // `path` is not refused here: images set a default one
        // (WXHUB__STORE__PATH) that a Redis configuration never unsets.
        let given = Given::new(self.url, self.url_env, self.url_file);
        let url = secret::read("store", "url", given, lookup)?.ok_or_else(|| {
            ConfigError::new(
                "store.url",
                "a redis store needs one of url, url_env or url_file",
            )
        })?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "store.url",
                "must start with redis:// or rediss://",
            ));
        }
        let prefix = self.prefix.unwrap_or_else(|| "wxhub".into());
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::new(
                "store.prefix",
                "letters, digits, '-', '_' and '.' only (braces would break the hash tags)",
            ));
        }
        let lease_ms = self.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !(300..=600_000).contains(&lease_ms) {
            return Err(ConfigError::new(
                "store.lease_ms",
                "must be between 300 and 600000",
            ));
        }
        let partitions = self
            .lease_partitions
            .unwrap_or(crate::shared::DEFAULT_PARTITIONS);
        if !(1..=4096).contains(&partitions) {
            return Err(ConfigError::new(
                "store.lease_partitions",
                "must be between 1 and 4096",
            ));
        }
        let sentinel = match (self.sentinels.take(), self.sentinel_master.take()) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "store.sentinel_master",
                    "store.sentinels needs the name the Sentinels monitor the primary under",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "store.sentinels",
                    "store.sentinel_master needs the Sentinels' addresses (\"host:port\", at least one)",
                ));
            }
            (Some(nodes), Some(master)) => {
                if nodes.is_empty() {
                    return Err(ConfigError::new(
                        "store.sentinels",
                        "at least one \"host:port\"",
                    ));
                }
                if let Some(bad) = nodes.iter().find(|n| {
                    n.rsplit_once(':')
                        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                }) {
                    return Err(ConfigError::new(
                        "store.sentinels",
                        format!("{bad:?} is not \"host:port\""),
                    ));
                }
                if master.is_empty() || master.contains(char::is_whitespace) {
                    return Err(ConfigError::new(
                        "store.sentinel_master",
                        "a name without spaces, as in the Sentinels' `sentinel monitor` line",
                    ));
                }
                if self.tls_ca_file.is_some() {
                    return Err(ConfigError::new(
                        "store.tls_ca_file",
                        "is not supported with store.sentinels yet; use the system's roots",
                    ));
                }
                Some(Sentinel { master, nodes })
            }
        };
        let tls_ca = match &self.tls_ca_file {
            None => None,
            Some(_) if !url.starts_with("rediss://") => {
                return Err(ConfigError::new(
                    "store.tls_ca_file",
                    "only for rediss:// URLs",
                ));
            }
            Some(path) => Some(read_pem(path)?),
        };
        Ok(StoreConfig::Redis {
            url: RedisUrl(url),
            prefix,
            lease: Duration::from_millis(lease_ms),
            partitions,
            sentinel,
            tls_ca,
        })
    }
}

fn read_pem(path: &std::path::Path) -> Result<Pem, ConfigError> {
    let key = "store.tls_ca_file";
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(Pem(pem))
}
