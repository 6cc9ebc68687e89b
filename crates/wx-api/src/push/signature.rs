//! Push signatures: `signature` on every push URL and `msg_signature` in safe mode.
//!
//! Both are `hex(sha1(concat(sort(parts))))` with a plain byte-wise sort, checked in constant
//! time so that a forger learns nothing from response timing.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::secret::PushToken;

fn sorted_sha1(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts.iter() {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn ct_hex_eq(expected: &str, given: &str) -> bool {
    // The platform sends lowercase hex; lowering the input only depends on public data.
    let given = given.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// `signature = hex(sha1(sort([token, timestamp, nonce]).join("")))`.
pub fn signature(token: &PushToken, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(&mut [token.expose_secret(), timestamp, nonce])
}

/// Checks a push URL's `signature` (server verification GET and every POST) in constant time.
pub fn verify_signature(token: &PushToken, timestamp: &str, nonce: &str, given: &str) -> bool {
    ct_hex_eq(&signature(token, timestamp, nonce), given)
}

/// `msg_signature = hex(sha1(sort([token, timestamp, nonce, encrypt]).join("")))`.
pub fn msg_signature(token: &PushToken, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(&mut [token.expose_secret(), timestamp, nonce, encrypt])
}

/// Checks a safe-mode `msg_signature` in constant time.
pub fn verify_msg_signature(
    token: &PushToken,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    given: &str,
) -> bool {
    ct_hex_eq(&msg_signature(token, timestamp, nonce, encrypt), given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_example_and_sort_order() {
        let t = PushToken::new("AAAAA");
        assert_eq!(
            signature(&t, "1714036504", "1514711492"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        // The sort is over the values, so swapping timestamp and nonce changes nothing.
        assert_eq!(
            signature(&t, "1514711492", "1714036504"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert!(verify_signature(
            &t,
            "1714036504",
            "1514711492",
            "F464B24FC39322E44B38AA78F5EDD27BD1441696"
        ));
        assert!(!verify_signature(&t, "1714036504", "1514711492", ""));
        assert!(!verify_signature(
            &t,
            "1714036504",
            "1514711493",
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        ));
    }

    #[test]
    fn wechatpy_signer() {
        // wechatpy's WeChatSigner of "789", "456", "123" is the same sorted-sha1.
        assert_eq!(
            sorted_sha1(&mut ["789", "456", "123"]),
            "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
        );
    }
}
