//! Identifiers that look like the platform's: tokens, codes, openids, rids.
//!
//! § numbers refer to `docs/platform.md`.

use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_from(chars: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| chars[rng.gen_range(0..chars.len())] as char)
        .collect()
}

/// `<generation>_<~136 chars>`, the observed shape of access tokens (§1).
pub fn access_token(generation: u64) -> String {
    format!("{generation}_{}", random_from(TOKEN_CHARS, 136))
}

/// A jsapi or wx_card ticket (§7.1 example: 86 characters).
pub fn ticket() -> String {
    random_from(TOKEN_CHARS, 86)
}

/// An OAuth code: 32 alphanumeric characters.
pub fn code() -> String {
    random_from(ALNUM, 32)
}

/// A refresh token.
pub fn refresh_token(generation: u64) -> String {
    format!("{generation}_{}", random_from(TOKEN_CHARS, 110))
}

/// A `component_verify_ticket`: `ticket@@@` and 86 characters (component-platform.md §1).
pub fn component_ticket() -> String {
    format!("ticket@@@{}", random_from(TOKEN_CHARS, 86))
}

/// A pre-auth code: `preauthcode@@@` and 64 characters.
pub fn preauth_code() -> String {
    format!("preauthcode@@@{}", random_from(TOKEN_CHARS, 64))
}

/// An authorization code: `queryauthcode@@@` and 86 characters.
pub fn auth_code() -> String {
    format!("queryauthcode@@@{}", random_from(TOKEN_CHARS, 86))
}

/// An authorizer refresh token: `refreshtoken@@@` and 43 characters.
pub fn authorizer_refresh_token() -> String {
    format!("refreshtoken@@@{}", random_from(TOKEN_CHARS, 43))
}

/// An opaque id for pending consents and deliveries.
pub fn opaque(n: usize) -> String {
    random_from(ALNUM, n)
}

/// A 28-character openid, stable per (account, person). The first six
/// characters depend only on the account, as real openids share a prefix
/// per account.
pub fn openid(appid: &str, person: &str, snapshot: bool) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let prefix = b64.encode(Sha256::digest(format!("wxsim-app:{appid}")));
    let salt = if snapshot { "snapshot" } else { "person" };
    let body = b64.encode(Sha256::digest(format!("wxsim-{salt}:{appid}:{person}")));
    format!("o{}{}", &prefix[..5], &body[..22])
}

/// A virtual unionid for a snapshot user, unlike the real one (§5.1).
pub fn snapshot_unionid(person: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = b64.encode(Sha256::digest(format!("wxsim-snapshot-union:{person}")));
    format!("o{}", &body[..27])
}

/// `rid` suffix: first group is the request time as hex Unix seconds (§1.1).
pub fn rid(now: i64) -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{:08x}-{:08x}-{:08x}",
        now as u32,
        rng.r#gen::<u32>(),
        rng.r#gen::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openids_are_stable_and_realistic() {
        let a = openid("wx1234567890abcdef", "alice", false);
        assert_eq!(a.len(), 28);
        assert!(a.starts_with('o'));
        assert_eq!(a, openid("wx1234567890abcdef", "alice", false));
        let b = openid("wx1234567890abcdef", "bob", false);
        assert_eq!(a[..6], b[..6], "same account prefix");
        assert_ne!(a, b);
        assert_ne!(a, openid("wx1234567890abcdef", "alice", true));
        assert_ne!(a, openid("wxffffffffffffffff", "alice", false));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn rid_starts_with_hex_time() {
        let r = rid(0x64e5d2d0);
        assert!(r.starts_with("64e5d2d0-"));
        assert_eq!(r.len(), 26);
    }
}
