//! Safe-mode message encryption (AES-256-CBC).
//!
//! Plaintext = `random(16) ‖ len(msg) as u32 big-endian ‖ msg ‖ appid`, padded PKCS#7-style
//! to a multiple of **32** bytes (pad values 1..=32), encrypted with AES-256-CBC where the key
//! is `base64(EncodingAESKey + "=")` and the IV is the key's first 16 bytes.

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use subtle::ConstantTimeEq;

use super::PushError;
use crate::secret::EncodingAesKey;

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// The padding block size of the scheme (not the AES block size).
const PAD_BLOCK: usize = 32;

/// A 43-character key carries 2 surplus bits in its last character, and for most real keys
/// they are non-zero (the official sample key ends in `G`). The default engine rejects those
/// bits; Python, Go and Java decoders ignore them, so we must too.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A decoded 32-byte AES key.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey([redacted])")
    }
}

impl AesKey {
    /// Decodes an EncodingAESKey (43 base64 characters, trailing bits allowed).
    ///
    /// # Errors
    ///
    /// [`PushError::InvalidKey`] unless the key is 43 characters that decode to 32 bytes.
    pub fn from_encoding_aes_key(key: &EncodingAesKey) -> Result<Self, PushError> {
        let s = key.expose_secret();
        if s.len() != 43 {
            return Err(PushError::InvalidKey);
        }
        let mut padded = String::with_capacity(44);
        padded.push_str(s);
        padded.push('=');
        let bytes = KEY_ENGINE
            .decode(padded.as_bytes())
            .map_err(|_| PushError::InvalidKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| PushError::InvalidKey)?;
        Ok(Self(arr))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A random key from the OS RNG.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self(b)
    }

    /// The EncodingAESKey for this key (43 characters, canonical trailing bits).
    pub fn to_encoding_aes_key(&self) -> EncodingAesKey {
        let mut s = STANDARD.encode(self.0);
        s.pop();
        EncodingAesKey::new(s)
    }

    /// The raw key bytes.
    ///
    /// # Security
    ///
    /// This is the key itself; do not log it.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares two keys in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// A decrypted safe-mode payload, before the appid check.
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The 16 random bytes that start the plaintext.
    pub random: [u8; 16],
    /// The message (an XML document for pushes).
    pub msg: Vec<u8>,
    /// The trailing app id.
    pub appid: Vec<u8>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Message bodies are personal data; show their size only.
        f.debug_struct("Decrypted")
            .field("msg_len", &self.msg.len())
            .field("appid", &String::from_utf8_lossy(&self.appid))
            .finish_non_exhaustive()
    }
}

/// Encrypts `msg` for `appid` with a given 16-byte random prefix and returns the base64
/// `Encrypt` value.
///
/// # Errors
///
/// [`PushError::MessageTooLarge`] if `msg` is longer than `u32::MAX` bytes.
pub fn encrypt_with_random(
    key: &AesKey,
    appid: &str,
    msg: &[u8],
    random: &[u8; 16],
) -> Result<String, PushError> {
    let len = u32::try_from(msg.len()).map_err(|_| PushError::MessageTooLarge)?;
    let unpadded = 16 + 4 + msg.len() + appid.len();
    let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
    let mut buf = Vec::with_capacity(unpadded + pad);
    buf.extend_from_slice(random);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    buf.extend_from_slice(appid.as_bytes());
    // pad is 1..=32, so it fits in a byte.
    buf.resize(unpadded + pad, pad as u8);
    let ct =
        Encryptor::new(&key.0.into(), &key.iv().into()).encrypt_padded_vec_mut::<NoPadding>(&buf);
    Ok(STANDARD.encode(ct))
}

/// Encrypts `msg` for `appid` with a fresh random prefix.
///
/// # Errors
///
/// As for [`encrypt_with_random`].
pub fn encrypt(key: &AesKey, appid: &str, msg: &[u8]) -> Result<String, PushError> {
    use rand::RngCore as _;
    let mut random = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut random);
    encrypt_with_random(key, appid, msg, &random)
}

/// Decrypts a base64 `Encrypt` value. The caller checks the appid (see
/// [`PushCrypto`](super::PushCrypto), which does).
///
/// # Errors
///
/// [`PushError::Base64`], [`PushError::CiphertextLength`], [`PushError::Padding`] or
/// [`PushError::PlaintextLength`]; never panics on any input.
pub fn decrypt(key: &AesKey, encrypt_b64: &str) -> Result<Decrypted, PushError> {
    let ct = STANDARD
        .decode(encrypt_b64.trim())
        .map_err(|_| PushError::Base64)?;
    if ct.is_empty() || ct.len() % 16 != 0 {
        return Err(PushError::CiphertextLength);
    }
    let pt = Decryptor::new(&key.0.into(), &key.iv().into())
        .decrypt_padded_vec_mut::<NoPadding>(&ct)
        .map_err(|_| PushError::CiphertextLength)?;
    let body = unpad(&pt)?;
    if body.len() < 20 {
        return Err(PushError::PlaintextLength);
    }
    let (random, rest) = body.split_at(16);
    let (len_bytes, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > rest.len() {
        return Err(PushError::PlaintextLength);
    }
    let (msg, appid) = rest.split_at(len);
    let mut r = [0u8; 16];
    r.copy_from_slice(random);
    Ok(Decrypted {
        random: r,
        msg: msg.to_vec(),
        appid: appid.to_vec(),
    })
}

/// Strips the 32-byte-block PKCS#7 padding: the last byte `n` must be 1..=32 and the last `n`
/// bytes must all equal `n`.
fn unpad(pt: &[u8]) -> Result<&[u8], PushError> {
    let n = usize::from(*pt.last().ok_or(PushError::Padding)?);
    if n == 0 || n > PAD_BLOCK || n > pt.len() {
        return Err(PushError::Padding);
    }
    let (body, pad) = pt.split_at(pt.len() - n);
    if pad.iter().any(|&b| usize::from(b) != n) {
        return Err(PushError::Padding);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_key_with_trailing_bits_decodes() {
        let k = AesKey::from_encoding_aes_key(&EncodingAesKey::new(
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ))
        .unwrap();
        assert_eq!(
            hex::encode(k.expose_secret()),
            "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
        );
        // The default engine would have rejected it; prove the pitfall is real.
        let strict = GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new());
        assert!(
            strict
                .decode("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=")
                .is_err()
        );
    }

    #[test]
    fn bad_keys() {
        for bad in ["", "short", &"a".repeat(44), &"!".repeat(43)] {
            assert!(
                AesKey::from_encoding_aes_key(&EncodingAesKey::new(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_round_trip() {
        let k = AesKey::generate();
        let e = k.to_encoding_aes_key();
        assert_eq!(e.expose_secret().len(), 43);
        assert!(AesKey::from_encoding_aes_key(&e).unwrap().ct_eq(&k));
        assert_eq!(format!("{k:?}"), "AesKey([redacted])");
    }

    #[test]
    fn padding_is_32_byte_blocks() {
        let k = AesKey::from_bytes([7u8; 32]);
        // 16 + 4 + 12 + 0 = 32 bytes: already aligned, so a full block of 0x20 is added.
        let e = encrypt_with_random(&k, "", b"twelve bytes", &[0u8; 16]).unwrap();
        let raw = STANDARD.decode(e).unwrap();
        assert_eq!(raw.len(), 64);
        let d = decrypt(
            &k,
            &encrypt_with_random(&k, "", b"twelve bytes", &[0u8; 16]).unwrap(),
        )
        .unwrap();
        assert_eq!(d.msg, b"twelve bytes");
    }

    #[test]
    fn unpad_rules() {
        assert!(unpad(&[]).is_err());
        assert!(unpad(&[0]).is_err());
        assert!(unpad(&[33; 40]).is_err());
        assert!(unpad(&[1, 2, 2]).is_ok());
        assert!(unpad(&[1, 3, 2]).is_err());
        assert_eq!(unpad(&[9, 1]).unwrap(), &[9]);
        assert!(unpad(&[2]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let k = AesKey::from_bytes([1u8; 32]);
        for input in [
            "",
            "====",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "not base64!",
        ] {
            assert!(decrypt(&k, input).is_err(), "{input}");
        }
    }
}
