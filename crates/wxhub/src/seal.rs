//! Secrets at rest: what the store writes of a token, a ticket, a person's
//! grant or an AppSecret is sealed with XChaCha20-Poly1305 under a key from
//! the configuration (`store.encryption_key`, `_env` or `_file`).
//!
//! A sealed value is text, so both stores keep it where the plaintext was:
//!
//! ```text
//! wxs1:<key id>:<base64 of nonce (24 bytes) || ciphertext and tag>
//! ```
//!
//! - The **key id** is the first 8 hex digits of SHA-256 over a label and
//!   the key: it tells which key sealed a value without telling anything of
//!   the key, so a value under an unknown key is reported as such (naming
//!   the configuration keys), never opened into garbage.
//! - The **nonce** is random per value; XChaCha20's 192-bit nonces make a
//!   collision negligible however many values are sealed under one key.
//! - The **associated data** is the record's identity (which table or hash,
//!   which account, which kind; see [`aad`]) plus the version and key id, so
//!   a sealed value copied onto another record does not open.
//!
//! Encryption is opt-in: with no key configured values pass through as
//! plaintext, as before. Text without the `wxs1:` prefix opens as itself
//! and is reported as plaintext ([`Found::Plain`]), which is how stores
//! from before encryption upgrade in place. A store that holds sealed values
//! refuses to open without a key. `store.previous_encryption_key` opens
//! values sealed under the key before a rotation; every store re-seals them
//! under the current key at start-up.

use base64::Engine as _;
use chacha20poly1305::aead::rand_core::RngCore as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What every sealed value starts with; a new format gets a new version.
pub const PREFIX: &str = "wxs1:";
/// The domain-separation label of key ids.
const KEY_ID_LABEL: &[u8] = b"wxhub store encryption key id v1\0";
const NONCE_LEN: usize = 24;
/// The associated data of the key check record.
pub const KEY_CHECK_AAD: &str = "key-check";
/// What the key check record holds, sealed under the current key.
const KEY_CHECK_TEXT: &str = "wxhub store key check v1";

/// The configuration keys, for errors.
const CURRENT: &str = "store.encryption_key";
const PREVIOUS: &str = "store.previous_encryption_key";

/// The associated data of a stored value: its record's kind and identity,
/// e.g. `aad("cred", &[appid, "access_token:stable"])`. Two records with
/// different kinds or identities never share associated data, so a sealed
/// value moved from one to the other does not open.
pub fn aad(kind: &str, identity: &[&str]) -> String {
    let mut s = String::from(kind);
    for part in identity {
        // NUL never occurs in an appid, openid or kind name.
        s.push('\0');
        s.push_str(part);
    }
    s
}

/// A 32-byte store encryption key, written as 64 hex digits.
///
/// # Security
/// No `Display`; `Debug` shows only the key id; the bytes are zeroed when
/// the key is dropped.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey(id {}, [redacted])", self.id)
    }
}

impl EncryptionKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// A message for the configuration key, which never quotes the text.
    pub fn from_hex(text: &str) -> Result<EncryptionKey, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "must be 64 hex digits (32 bytes), e.g. from `wxhub key --encryption` or `openssl rand -hex 32`; this is {} characters{}",
                text.chars().count(),
                if text.len() == 64 {
                    " with a character that is not a hex digit"
                } else {
                    ""
                }
            ));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        // Checked above: cannot fail, and its error would quote the key.
        hex::decode_to_slice(text, bytes.as_mut())
            .map_err(|_| "must be 64 hex digits".to_string())?;
        if bytes.iter().all(|b| *b == bytes[0]) {
            return Err("is one byte repeated, not a random key; generate one with `wxhub key --encryption`".into());
        }
        Ok(Self::from_bytes(bytes))
    }

    /// A new random key.
    pub fn generate() -> EncryptionKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> EncryptionKey {
        let digest = Sha256::new()
            .chain_update(KEY_ID_LABEL)
            .chain_update(bytes.as_ref())
            .finalize();
        EncryptionKey {
            id: hex::encode(&digest[..4]),
            bytes,
        }
    }

    /// The key as 64 hex digits, for `wxhub key --encryption`.
    ///
    /// # Security
    /// This is the key itself.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_ref()))
    }

    /// The key id stored in every value it seals: 8 hex digits, safe to log.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// `[store]`'s encryption keys as configured.
#[derive(Debug, Clone, Default)]
pub struct StoreKeys {
    /// `store.encryption_key`: seals every write; `None`: plaintext.
    pub current: Option<EncryptionKey>,
    /// `store.previous_encryption_key`: only opens, during a rotation.
    pub previous: Option<EncryptionKey>,
}

/// Which key a stored value was under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not sealed: written before encryption was turned on (or without it).
    Plain,
    /// Sealed under `store.encryption_key`.
    Current,
    /// Sealed under `store.previous_encryption_key`: re-seal it.
    Previous,
}

/// An opened value and which key it was under.
pub struct Opened {
    /// The plaintext.
    pub value: String,
    /// Which key it was under.
    pub found: Found,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("value", &"[redacted]")
            .field("found", &self.found)
            .finish()
    }
}

/// Why a stored value does not open. Never contains a value or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Sealed, but no key is configured.
    #[error(
        "the store holds values sealed with key id {id}, but {CURRENT} is not set: give the key they were sealed with ({CURRENT}, {CURRENT}_env or {CURRENT}_file)"
    )]
    NoKey {
        /// The value's key id.
        id: String,
    },
    /// Sealed under a key that is neither configured key.
    #[error(
        "the store holds values sealed with key id {id}, which is neither {CURRENT} (id {current}) nor {PREVIOUS} ({previous}): the key is wrong, or the store was encrypted under another one"
    )]
    UnknownKey {
        /// The value's key id.
        id: String,
        /// The current key's id.
        current: String,
        /// The previous key's id, or "not set".
        previous: String,
    },
    /// The key id matches but the value does not open: altered, or copied
    /// from another record.
    #[error(
        "a stored value sealed with key id {id} does not open ({what}): it was altered or copied from another record"
    )]
    Rejected {
        /// The value's key id.
        id: String,
        /// Which record.
        what: String,
    },
    /// Not in the sealed format.
    #[error("a stored value starts with {PREFIX} but is damaged ({what})")]
    Damaged {
        /// Which record.
        what: String,
    },
}

/// A key ready to seal and open.
struct Keyed {
    id: String,
    // Zeroes its copy of the key on drop.
    cipher: XChaCha20Poly1305,
}

impl Keyed {
    fn new(key: &EncryptionKey) -> Keyed {
        Keyed {
            id: key.id.clone(),
            cipher: XChaCha20Poly1305::new(key.bytes.as_ref().into()),
        }
    }

    /// The associated data actually authenticated: version, key id, record.
    fn full_aad(&self, aad: &str) -> Vec<u8> {
        format!("wxs1\0{}\0{aad}", self.id).into_bytes()
    }
}

/// What start-up must do with the store, from its key check record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No key configured and no key check: nothing is sealed (the store
    /// still checks its values for the `wxs1:` prefix where that is cheap).
    Plaintext,
    /// Everything is under the current key.
    UpToDate,
    /// Re-seal every plaintext value and every value under the previous key
    /// under the current one, then write the key check.
    Reseal,
}

/// How many values a re-seal pass rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Plaintext values now sealed.
    pub plaintext: u64,
    /// Values under the previous key now under the current one.
    pub previous: u64,
    /// Values changed by another writer while the pass ran (Redis only):
    /// whoever wrote them sealed them under its own key.
    pub skipped: u64,
}

/// Seals and opens stored values under the configured keys.
pub struct Sealer {
    current: Option<Keyed>,
    previous: Option<Keyed>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl Sealer {
    /// A sealer for the configured keys. A previous key without a current
    /// one is refused by the configuration; here it is only used to open.
    pub fn new(keys: &StoreKeys) -> Sealer {
        Sealer {
            current: keys.current.as_ref().map(Keyed::new),
            previous: keys.previous.as_ref().map(Keyed::new),
        }
    }

    /// No key: every value passes through as plaintext.
    pub fn plaintext() -> Sealer {
        Sealer {
            current: None,
            previous: None,
        }
    }

    /// Whether writes are sealed.
    pub fn is_enabled(&self) -> bool {
        self.current.is_some()
    }

    /// The current key's id.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seals `plain` for the record `aad` under the current key; without a
    /// key, returns it unchanged.
    pub fn seal(&self, aad: &str, plain: &str) -> String {
        let Some(k) = &self.current else {
            return plain.to_string();
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = k
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: &k.full_aad(aad),
                },
            )
            // Fails only for messages over 256 GiB.
            .expect("XChaCha20-Poly1305 seals any value the store holds");
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}:{}",
            k.id,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
        )
    }

    /// Opens a stored value of the record `aad`. Text without the `wxs1:`
    /// prefix is plaintext and comes back as itself ([`Found::Plain`]).
    ///
    /// # Errors
    /// A value sealed under a key that is not configured, or that does not
    /// open (altered, or copied from another record), or damaged.
    pub fn open(&self, aad: &str, text: &str) -> Result<Opened, SealError> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Ok(Opened {
                value: text.to_string(),
                found: Found::Plain,
            });
        };
        let what = || describe(aad);
        let (id, body) = rest
            .split_once(':')
            .ok_or_else(|| SealError::Damaged { what: what() })?;
        let (k, found) = self.key_for(id)?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(body)
                .map_err(|_| SealError::Damaged { what: what() })?,
        );
        if raw.len() < NONCE_LEN + 16 {
            return Err(SealError::Damaged { what: what() });
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = k
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &k.full_aad(aad),
                },
            )
            .map_err(|_| SealError::Rejected {
                id: id.to_string(),
                what: what(),
            })?;
        let value = String::from_utf8(plain).map_err(|e| {
            // Zero the bytes rather than leave them in the error.
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            SealError::Damaged { what: what() }
        })?;
        Ok(Opened { value, found })
    }

    /// The configured key with id `id`, and which one it is.
    fn key_for(&self, id: &str) -> Result<(&Keyed, Found), SealError> {
        fn is<'a>(k: &'a Option<Keyed>, id: &str) -> Option<&'a Keyed> {
            k.as_ref()
                .filter(|k| bool::from(k.id.as_bytes().ct_eq(id.as_bytes())))
        }
        if let Some(k) = is(&self.current, id) {
            return Ok((k, Found::Current));
        }
        if let Some(k) = is(&self.previous, id) {
            return Ok((k, Found::Previous));
        }
        // Only the id is quoted, and only when it looks like one.
        let id = if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            id.to_string()
        } else {
            "(malformed)".to_string()
        };
        match &self.current {
            None => Err(SealError::NoKey { id }),
            Some(c) => Err(SealError::UnknownKey {
                id,
                current: c.id.clone(),
                previous: self
                    .previous
                    .as_ref()
                    .map_or_else(|| "not set".to_string(), |p| format!("id {}", p.id)),
            }),
        }
    }

    /// The value re-sealed under the current key, if it is plaintext or
    /// under the previous key; `None` when it needs nothing (already
    /// current, or no key is configured).
    ///
    /// # Errors
    /// As [`Sealer::open`].
    pub fn reseal(&self, aad: &str, text: &str) -> Result<Option<(String, Found)>, SealError> {
        if self.current.is_none() {
            // Still refuse what cannot be opened.
            self.open(aad, text)?;
            return Ok(None);
        }
        let opened = self.open(aad, text)?;
        let plain = Zeroizing::new(opened.value);
        Ok(match opened.found {
            Found::Current => None,
            found => Some((self.seal(aad, &plain), found)),
        })
    }

    /// The key check record to store: a constant sealed under the current
    /// key. `None` without a key.
    pub fn key_check(&self) -> Option<String> {
        self.current
            .as_ref()
            .map(|_| self.seal(KEY_CHECK_AAD, KEY_CHECK_TEXT))
    }

    /// What start-up must do, given the store's key check record.
    ///
    /// # Errors
    /// The store was sealed under a key that is not configured (or no key
    /// is configured), or its key check is altered.
    pub fn plan(&self, stored: Option<&str>) -> Result<Plan, SealError> {
        let Some(stored) = stored.filter(|s| s.starts_with(PREFIX)) else {
            return Ok(if self.current.is_some() {
                Plan::Reseal
            } else {
                Plan::Plaintext
            });
        };
        let opened = self.open(KEY_CHECK_AAD, stored)?;
        if !bool::from(opened.value.as_bytes().ct_eq(KEY_CHECK_TEXT.as_bytes())) {
            return Err(SealError::Damaged {
                what: "the key check".into(),
            });
        }
        Ok(match opened.found {
            Found::Current if self.previous.is_none() => Plan::UpToDate,
            _ => Plan::Reseal,
        })
    }
}

/// Names a record for an error from its associated data, which holds
/// identities (appids, openids, kinds), never values.
fn describe(aad: &str) -> String {
    aad.replace('\0', " ")
}

/// The key id of a sealed value, for a start-up error (`None`: plaintext or
/// malformed).
pub fn key_id_of(text: &str) -> Option<&str> {
    let id = text.strip_prefix(PREFIX)?.split_once(':')?.0;
    (id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests;
