//! Message push (服务器配置 / 消息推送): URL verification, signatures, safe-mode crypto, XML
//! parsing and replies.
//!
//! | Module | Job |
//! |---|---|
//! | [`signature`] | `signature` and `msg_signature`, checked in constant time |
//! | [`crypto`] | AES-256-CBC with 32-byte PKCS#7, the EncodingAESKey quirk |
//! | [`message`] | size-capped, entity-free XML parsing into [`PushMessage`] |
//! | [`reply`] | reply XML, the encrypted reply envelope, `success` |
//!
//! [`PushCrypto`] ties them together for a receiving endpoint: [`PushCrypto::verify_url`] for
//! the GET handshake, [`PushCrypto::open`] for a POST (plaintext, compat or safe mode), and
//! [`PushCrypto::seal_reply`] to encrypt a reply with the key the push came with.

pub mod component;
pub mod crypto;
pub mod message;
pub mod reply;
pub mod signature;

pub use crypto::AesKey;
pub use message::{EncryptedEnvelope, Event, MessageKind, PushMessage};
pub use reply::{Reply, ReplyKind, SUCCESS};

use serde::Deserialize;

use crate::ids::AppId;
use crate::secret::{EncodingAesKey, PushToken};

/// Push bodies larger than this are refused before parsing. Real pushes are a few KiB; a safe
/// mode envelope is about 4/3 of its plaintext.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a push was refused.
///
/// No variant echoes the body, the ciphertext or a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("push body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not well-formed XML.
    #[error("malformed XML near byte {position}")]
    Xml {
        /// Byte offset where the reader stopped.
        position: u64,
    },
    /// Not UTF-8.
    #[error("push body is not UTF-8")]
    Utf8,
    /// A `<!DOCTYPE>` was present; it could define entities, so it is never accepted.
    #[error("document type declarations are not accepted")]
    DocTypeRejected,
    /// Elements nested too deep.
    #[error("XML nested too deep")]
    TooDeep,
    /// Too many elements.
    #[error("too many XML elements")]
    TooManyFields,
    /// Not a single `<xml>` root element.
    #[error("not a push document (expected one <xml> root)")]
    NotAPush,
    /// A field the message type requires is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field has a value of the wrong shape.
    #[error("invalid value in field {0}")]
    InvalidField(&'static str),
    /// `signature` or `msg_signature` does not match.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// A required query parameter is missing.
    #[error("missing query parameter {0}")]
    MissingParameter(&'static str),
    /// The EncodingAESKey is not 43 base64 characters.
    #[error("invalid EncodingAESKey")]
    InvalidKey,
    /// `Encrypt` is not base64.
    #[error("Encrypt is not valid base64")]
    Base64,
    /// The ciphertext is empty or not a whole number of AES blocks.
    #[error("ciphertext length is not a multiple of the block size")]
    CiphertextLength,
    /// The padding is not 1..=32 bytes of equal value (wrong key, or tampering).
    #[error("invalid padding")]
    Padding,
    /// The length prefix points past the end of the plaintext.
    #[error("invalid plaintext length")]
    PlaintextLength,
    /// The decrypted message is for another app.
    #[error("decrypted message is for another appid")]
    AppIdMismatch,
    /// A plaintext push reached an account configured for safe mode, where every push
    /// must carry `encrypt_type=aes` and `msg_signature`.
    #[error("this account takes encrypted pushes only (encrypt_type=aes with msg_signature)")]
    EncryptionRequired,
    /// A message to encrypt is larger than 4 GiB.
    #[error("message too large to encrypt")]
    MessageTooLarge,
}

/// The query string of a push request (GET verification or POST).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PushQuery {
    /// `signature` over token, timestamp, nonce.
    #[serde(default)]
    pub signature: Option<String>,
    /// Unix seconds, as sent.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The nonce.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The GET handshake's echo string.
    #[serde(default)]
    pub echostr: Option<String>,
    /// The user's OpenID (POST only).
    #[serde(default)]
    pub openid: Option<String>,
    /// `aes` in safe and compat mode; absent or `raw` in plaintext mode.
    #[serde(default)]
    pub encrypt_type: Option<String>,
    /// `msg_signature` over token, timestamp, nonce and `Encrypt` (safe mode).
    #[serde(default)]
    pub msg_signature: Option<String>,
}

impl PushQuery {
    /// Parses a raw query string (without `?`). Unknown parameters are ignored.
    /// A parameter given twice makes the whole query unreadable (as
    /// serde's form decoding has it): no signature can then be checked.
    pub fn from_query_str(query: &str) -> Self {
        let mut q = PushQuery::default();
        // Decoded by hand rather than through serde: every push pays for
        // it before anything else.
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "echostr" => &mut q.echostr,
                "openid" => &mut q.openid,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                _ => continue,
            };
            if slot.is_some() {
                return PushQuery::default();
            }
            *slot = Some(v.into_owned());
        }
        q
    }

    fn is_encrypted(&self) -> bool {
        self.encrypt_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("aes"))
    }
}

fn required<'a>(v: &'a Option<String>, name: &'static str) -> Result<&'a str, PushError> {
    v.as_deref().ok_or(PushError::MissingParameter(name))
}

/// Which EncodingAESKey decrypted a push. Encrypt the reply with the same one: during a key
/// rotation the platform may still be using the previous key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyUsed {
    /// The current key.
    Current,
    /// The previous key (rotation in progress).
    Previous,
}

/// A push that passed its checks.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenedPush {
    /// The parsed message.
    pub message: PushMessage,
    /// The key that decrypted it, or `None` for a plaintext push.
    pub key: Option<KeyUsed>,
    /// The plaintext document as the platform wrote it (decrypted in safe
    /// mode), for a receiver that keeps or forwards it.
    pub plaintext: Vec<u8>,
}

/// One account's push configuration: token, AppID, current and optional previous
/// EncodingAESKey, and whether plaintext pushes are accepted.
#[derive(Clone, Debug)]
pub struct PushCrypto {
    token: PushToken,
    appid: AppId,
    current: Option<AesKey>,
    previous: Option<AesKey>,
    // Safe mode: a push without encryption is refused. Without this, anyone who learns the
    // push token (it is only a signing key, often shared with a developer) could post
    // plaintext messages to an account whose operator believes every push is encrypted.
    encrypted_only: bool,
}

impl PushCrypto {
    /// Plaintext mode only: signatures are checked, nothing is decrypted.
    pub fn plaintext(token: PushToken, appid: AppId) -> Self {
        Self {
            token,
            appid,
            current: None,
            previous: None,
            encrypted_only: false,
        }
    }

    /// Safe mode (安全模式) with the current EncodingAESKey: every push must carry
    /// `encrypt_type=aes` and `msg_signature`; a plaintext push is refused with
    /// [`PushError::EncryptionRequired`].
    ///
    /// # Errors
    ///
    /// [`PushError::InvalidKey`] if the key does not decode.
    pub fn new(token: PushToken, appid: AppId, key: &EncodingAesKey) -> Result<Self, PushError> {
        Ok(Self {
            token,
            appid,
            current: Some(AesKey::from_encoding_aes_key(key)?),
            previous: None,
            encrypted_only: true,
        })
    }

    /// Compatibility mode (兼容模式): encrypted pushes are opened with the key, and plaintext
    /// pushes, checked by `signature`, are accepted too (the platform sends both while an
    /// operator migrates).
    ///
    /// # Errors
    ///
    /// [`PushError::InvalidKey`] if the key does not decode.
    pub fn compat(token: PushToken, appid: AppId, key: &EncodingAesKey) -> Result<Self, PushError> {
        Ok(Self {
            encrypted_only: false,
            ..Self::new(token, appid, key)?
        })
    }

    /// Adds the previous EncodingAESKey, tried when the current one fails during a rotation.
    ///
    /// # Errors
    ///
    /// [`PushError::InvalidKey`] if the key does not decode.
    pub fn with_previous_key(mut self, key: &EncodingAesKey) -> Result<Self, PushError> {
        self.previous = Some(AesKey::from_encoding_aes_key(key)?);
        Ok(self)
    }

    /// The GET handshake: if `signature` matches, returns the `echostr` to send back verbatim
    /// (plain even in safe mode for official accounts).
    ///
    /// # Errors
    ///
    /// [`PushError::MissingParameter`] or [`PushError::SignatureMismatch`].
    pub fn verify_url<'q>(&self, query: &'q PushQuery) -> Result<&'q str, PushError> {
        let ts = required(&query.timestamp, "timestamp")?;
        let nonce = required(&query.nonce, "nonce")?;
        let sig = required(&query.signature, "signature")?;
        let echostr = required(&query.echostr, "echostr")?;
        if signature::verify_signature(&self.token, ts, nonce, sig) {
            Ok(echostr)
        } else {
            Err(PushError::SignatureMismatch)
        }
    }

    /// Checks and opens a POST push.
    ///
    /// With `encrypt_type=aes` the `msg_signature` over `Encrypt` is checked, the payload is
    /// decrypted with the current key and then the previous one, and its trailing appid must
    /// be ours. Otherwise, unless the account is in safe mode ([`PushCrypto::new`]),
    /// `signature` is checked and the body parsed as plaintext.
    ///
    /// Replay protection (rejecting an old `timestamp`) is left to the caller, which owns the
    /// clock.
    ///
    /// # Errors
    ///
    /// Any [`PushError`]; the body is never echoed.
    pub fn open(&self, query: &PushQuery, body: &[u8]) -> Result<OpenedPush, PushError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(PushError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        let ts = required(&query.timestamp, "timestamp")?;
        let nonce = required(&query.nonce, "nonce")?;
        if !query.is_encrypted() {
            if self.encrypted_only {
                return Err(PushError::EncryptionRequired);
            }
            let sig = required(&query.signature, "signature")?;
            if !signature::verify_signature(&self.token, ts, nonce, sig) {
                return Err(PushError::SignatureMismatch);
            }
            return Ok(OpenedPush {
                message: PushMessage::parse(body)?,
                key: None,
                plaintext: body.to_vec(),
            });
        }
        let msg_sig = required(&query.msg_signature, "msg_signature")?;
        let envelope = EncryptedEnvelope::parse(body)?;
        let (plain, key) = self.decrypt(msg_sig, ts, nonce, &envelope.encrypt)?;
        Ok(OpenedPush {
            message: PushMessage::parse(&plain)?,
            key: Some(key),
            plaintext: plain,
        })
    }

    /// Checks `msg_signature` and decrypts `encrypt`, falling back to the previous key, and
    /// checks the appid. Returns the plaintext message and the key that worked.
    ///
    /// # Errors
    ///
    /// [`PushError::SignatureMismatch`] first; then [`PushError::InvalidKey`] in plaintext-only
    /// mode; otherwise the current key's error if no key works.
    pub fn decrypt(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(Vec<u8>, KeyUsed), PushError> {
        if !signature::verify_msg_signature(&self.token, timestamp, nonce, encrypt, msg_signature) {
            return Err(PushError::SignatureMismatch);
        }
        let current = self.current.as_ref().ok_or(PushError::InvalidKey)?;
        let first = self.decrypt_with(current, encrypt);
        match (first, &self.previous) {
            (Ok(msg), _) => Ok((msg, KeyUsed::Current)),
            (Err(e), None) => Err(e),
            (Err(e), Some(prev)) => match self.decrypt_with(prev, encrypt) {
                Ok(msg) => Ok((msg, KeyUsed::Previous)),
                Err(_) => Err(e),
            },
        }
    }

    fn decrypt_with(&self, key: &AesKey, encrypt: &str) -> Result<Vec<u8>, PushError> {
        let d = crypto::decrypt(key, encrypt)?;
        if d.appid != self.appid.as_str().as_bytes() {
            return Err(PushError::AppIdMismatch);
        }
        Ok(d.msg)
    }

    /// Encrypts a reply document with `key` and wraps it in the reply envelope, signed with
    /// `timestamp` and `nonce`.
    ///
    /// # Errors
    ///
    /// [`PushError::InvalidKey`] if that key is not configured.
    pub fn seal_reply(
        &self,
        reply_xml: &str,
        timestamp: u64,
        nonce: &str,
        key: KeyUsed,
    ) -> Result<String, PushError> {
        let aes = match key {
            KeyUsed::Current => self.current.as_ref(),
            KeyUsed::Previous => self.previous.as_ref(),
        }
        .ok_or(PushError::InvalidKey)?;
        let encrypt = crypto::encrypt(aes, self.appid.as_str(), reply_xml.as_bytes())?;
        let ts = timestamp.to_string();
        let sig = signature::msg_signature(&self.token, &ts, nonce, &encrypt);
        Ok(reply::encrypted_envelope(&encrypt, &sig, timestamp, nonce))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";

    fn crypto() -> PushCrypto {
        PushCrypto::new(
            PushToken::new("spamtest"),
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
            &EncodingAesKey::new(KEY),
        )
        .unwrap()
    }

    fn safe_query() -> PushQuery {
        PushQuery::from_query_str(
            "signature=16120ec1b8dbb870f510d87ce6bc2463eae6ca1a&timestamp=1409735669&nonce=1320562132&openid=oyORnuP8q7ou2gfYjqLzSIWZf0rs&encrypt_type=aes&msg_signature=5d197aaffba7e9b25a30732f161a50dee96bd5fa",
        )
    }

    #[test]
    fn opens_the_official_safe_mode_sample() {
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>"
        );
        let opened = crypto().open(&safe_query(), body.as_bytes()).unwrap();
        assert_eq!(opened.key, Some(KeyUsed::Current));
        assert_eq!(
            opened.message.kind,
            MessageKind::Text {
                content: "abcdteT".into()
            }
        );
    }

    #[test]
    fn wrong_appid_and_wrong_signature_are_refused() {
        let other = PushCrypto::new(
            PushToken::new("spamtest"),
            AppId::parse("wxb11529c136998cb6").unwrap(),
            &EncodingAesKey::new(KEY),
        )
        .unwrap();
        assert_eq!(
            other
                .decrypt(
                    "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
                    "1409735669",
                    "1320562132",
                    ENCRYPT
                )
                .unwrap_err(),
            PushError::AppIdMismatch
        );
        assert_eq!(
            crypto()
                .decrypt(
                    "5d197aaffba7e9b25a30732f161a50dee96bd5fb",
                    "1409735669",
                    "1320562132",
                    ENCRYPT
                )
                .unwrap_err(),
            PushError::SignatureMismatch
        );
    }

    #[test]
    fn key_rotation_falls_back_and_reports_the_key() {
        let old = EncodingAesKey::new(KEY);
        let new = AesKey::generate().to_encoding_aes_key();
        let rotated = PushCrypto::new(
            PushToken::new("spamtest"),
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
            &new,
        )
        .unwrap()
        .with_previous_key(&old)
        .unwrap();
        let (msg, key) = rotated
            .decrypt(
                "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
                "1409735669",
                "1320562132",
                ENCRYPT,
            )
            .unwrap();
        assert_eq!(key, KeyUsed::Previous);
        assert!(msg.starts_with(b"<xml>"));

        // The reply sealed with the previous key opens with the old key alone.
        let sealed = rotated
            .seal_reply("<xml>r</xml>", 1409735670, "n1", KeyUsed::Previous)
            .unwrap();
        let env = EncryptedEnvelope::parse(sealed.as_bytes()).unwrap();
        let fields = message::parse_fields(sealed.as_bytes()).unwrap();
        let sig = fields
            .iter()
            .find(|(k, _)| k == "MsgSignature")
            .map(|(_, v)| v.clone())
            .unwrap();
        let (plain, key) = crypto()
            .decrypt(&sig, "1409735670", "n1", &env.encrypt)
            .unwrap();
        assert_eq!(key, KeyUsed::Current);
        assert_eq!(plain, b"<xml>r</xml>");

        let plain_only = PushCrypto::plaintext(
            PushToken::new("t"),
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
        );
        assert_eq!(
            plain_only
                .seal_reply("<xml/>", 1, "n", KeyUsed::Current)
                .unwrap_err(),
            PushError::InvalidKey
        );
    }

    #[test]
    fn safe_mode_refuses_plaintext_pushes_and_compat_mode_takes_both() {
        let plain_query = PushQuery::from_query_str(
            "signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492",
        );
        let body = b"<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>";
        let key = EncodingAesKey::new(KEY);
        let appid = AppId::parse("wx2c2769f8efd9abc2").unwrap();
        let safe = PushCrypto::new(PushToken::new("AAAAA"), appid.clone(), &key).unwrap();
        assert_eq!(
            safe.open(&plain_query, body).unwrap_err(),
            PushError::EncryptionRequired,
            "a correctly signed plaintext push is still refused in safe mode"
        );
        // encrypt_type=aes without msg_signature is refused too.
        let mut no_msg_sig = safe_query();
        no_msg_sig.msg_signature = None;
        let envelope = format!(
            "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>"
        );
        assert_eq!(
            crypto().open(&no_msg_sig, envelope.as_bytes()).unwrap_err(),
            PushError::MissingParameter("msg_signature")
        );
        let compat = PushCrypto::compat(PushToken::new("AAAAA"), appid, &key).unwrap();
        assert_eq!(compat.open(&plain_query, body).unwrap().key, None);
        let compat = PushCrypto::compat(
            PushToken::new("spamtest"),
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
            &key,
        )
        .unwrap();
        assert_eq!(
            compat.open(&safe_query(), envelope.as_bytes()).unwrap().key,
            Some(KeyUsed::Current)
        );
    }

    #[test]
    fn plaintext_push_and_handshake() {
        let c = PushCrypto::plaintext(
            PushToken::new("AAAAA"),
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
        );
        let q = PushQuery::from_query_str(
            "signature=f464b24fc39322e44b38aa78f5edd27bd1441696&echostr=4375120948345356249&timestamp=1714036504&nonce=1514711492",
        );
        assert_eq!(c.verify_url(&q).unwrap(), "4375120948345356249");
        let mut bad = q.clone();
        bad.nonce = Some("1".into());
        assert_eq!(
            c.verify_url(&bad).unwrap_err(),
            PushError::SignatureMismatch
        );
        assert_eq!(
            c.verify_url(&PushQuery::default()).unwrap_err(),
            PushError::MissingParameter("timestamp")
        );

        let body = b"<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>";
        let opened = c.open(&q, body).unwrap();
        assert_eq!(opened.key, None);
        assert_eq!(
            c.open(&bad, body).unwrap_err(),
            PushError::SignatureMismatch
        );
        let big = vec![b'x'; MAX_BODY_BYTES + 1];
        assert!(matches!(
            c.open(&q, &big).unwrap_err(),
            PushError::BodyTooLarge { .. }
        ));
    }

    #[test]
    fn a_query_is_read_by_name_and_a_repeated_parameter_makes_it_unreadable() {
        let q = PushQuery::from_query_str(
            "signature=ab%20c&timestamp=1&nonce=n&openid=o&encrypt_type=aes&msg_signature=m&other=x&echostr=e",
        );
        assert_eq!(q.signature.as_deref(), Some("ab c"));
        assert_eq!(q.timestamp.as_deref(), Some("1"));
        assert_eq!(q.nonce.as_deref(), Some("n"));
        assert_eq!(q.openid.as_deref(), Some("o"));
        assert_eq!(q.encrypt_type.as_deref(), Some("aes"));
        assert_eq!(q.msg_signature.as_deref(), Some("m"));
        assert_eq!(q.echostr.as_deref(), Some("e"));
        let twice = PushQuery::from_query_str("signature=a&timestamp=1&signature=b");
        assert!(twice.signature.is_none() && twice.timestamp.is_none());
    }
}
