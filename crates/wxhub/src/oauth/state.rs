//! The `state` parameter: signed, time-limited, pointing at a stored record.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub(super) type HmacSha256 = Hmac<Sha256>;

const STATE_LEN: usize = 32 + 12 + 32;

fn mac(key: &[u8], appid: &str, id: &str, exp: &str) -> String {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"wxhub-oauth-state\0");
    m.update(appid.as_bytes());
    m.update(b"\0");
    m.update(id.as_bytes());
    m.update(b"\0");
    m.update(exp.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..16])
}

/// `id(32 hex) ‖ expiry(12 digits) ‖ mac(32 hex)`: 76 characters of a-z0-9.
pub fn sign_state(key: &[u8], appid: &str, id: &str, expires_at: i64) -> String {
    let exp = format!("{:012}", expires_at.max(0));
    format!("{id}{exp}{}", mac(key, appid, id, &exp))
}

/// A state that does not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum BadState {
    /// Not our format.
    Malformed,
    /// Our format, wrong signature (or another account's).
    Forged,
    /// Past its expiry: the id, for a "start again" link.
    Expired(String),
}

/// Checks format, signature and expiry; returns the record id.
///
/// # Errors
/// [`BadState`].
pub fn verify_state(key: &[u8], appid: &str, state: &str, now: i64) -> Result<String, BadState> {
    if state.len() != STATE_LEN
        || !state
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(BadState::Malformed);
    }
    let (id, rest) = state.split_at(32);
    let (exp, tag) = rest.split_at(12);
    let expected = mac(key, appid, id, exp);
    if !bool::from(expected.as_bytes().ct_eq(tag.as_bytes())) {
        return Err(BadState::Forged);
    }
    let expires_at: i64 = exp.parse().map_err(|_| BadState::Malformed)?;
    if now >= expires_at {
        return Err(BadState::Expired(id.to_string()));
    }
    Ok(id.to_string())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // A CSPRNG seeded from the OS, without a system call per state.
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A state's id: 12 hex digits of the time in milliseconds, then 80 random
/// bits. Ids that grow with time land at the end of the store's index, so a
/// busy sign-in page appends instead of touching a random page per login;
/// the signature, not the id, is what makes a state unforgeable.
pub(super) fn state_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{:012x}{}", ms & 0xffff_ffff_ffff, random_hex(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_short_alphanumeric_signed_and_expire() {
        let key = b"0123456789abcdef0123456789abcdef";
        let s = sign_state(key, "wx1", &"a".repeat(32), 1000);
        assert!(s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(verify_state(key, "wx1", &s, 999), Ok("a".repeat(32)));
        assert_eq!(
            verify_state(key, "wx1", &s, 1000),
            Err(BadState::Expired("a".repeat(32)))
        );
        assert_eq!(
            verify_state(key, "wx2", &s, 999),
            Err(BadState::Forged),
            "bound to the account"
        );
        assert_eq!(
            verify_state(b"another key another key another k", "wx1", &s, 999),
            Err(BadState::Forged)
        );
        let mut tampered = s.clone();
        tampered.replace_range(40..41, if &s[40..41] == "9" { "8" } else { "9" });
        assert_eq!(
            verify_state(key, "wx1", &tampered, 999),
            Err(BadState::Forged),
            "expiry is signed"
        );
        assert_eq!(verify_state(key, "wx1", "abc", 0), Err(BadState::Malformed));
    }
}
