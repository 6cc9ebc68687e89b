//! Property tests for safe-mode crypto: round trips for random keys, messages and appids;
//! tampering is rejected; no input makes decryption or parsing panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use wx_api::push::crypto::{self, AesKey};
use wx_api::push::{PushCrypto, PushError, PushMessage, signature};
use wx_api::{AppId, EncodingAesKey, PushToken};

fn appid_strategy() -> impl Strategy<Value = String> {
    "wx[0-9a-f]{16}"
}

fn key_strategy() -> impl Strategy<Value = AesKey> {
    any::<[u8; 32]>().prop_map(AesKey::from_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(key in key_strategy(), appid in appid_strategy(), msg in proptest::collection::vec(any::<u8>(), 0..2048), random in any::<[u8; 16]>()) {
        let enc = crypto::encrypt_with_random(&key, &appid, &msg, &random).unwrap();
        let raw = STANDARD.decode(&enc).unwrap();
        prop_assert_eq!(raw.len() % 32, 0);
        let d = crypto::decrypt(&key, &enc).unwrap();
        prop_assert_eq!(d.msg, msg);
        prop_assert_eq!(d.appid, appid.as_bytes());
        prop_assert_eq!(d.random, random);
    }

    /// Any 43-character alphanumeric key is accepted, whatever its trailing bits, and keys
    /// survive the EncodingAESKey round trip.
    #[test]
    fn every_alphanumeric_key_decodes(s in "[A-Za-z0-9]{43}") {
        let key = AesKey::from_encoding_aes_key(&EncodingAesKey::new(s)).unwrap();
        let again = AesKey::from_encoding_aes_key(&key.to_encoding_aes_key()).unwrap();
        prop_assert!(again.ct_eq(&key));
    }

    /// The full receiving path (signature, decrypt, appid) round-trips text.
    #[test]
    fn push_crypto_round_trip(key in key_strategy(), appid in appid_strategy(), msg in "\\PC{0,300}", token in "[A-Za-z0-9]{3,32}", ts in "[0-9]{10}", nonce in "[0-9a-z]{1,16}") {
        let encoding = key.to_encoding_aes_key();
        let pc = PushCrypto::new(PushToken::new(token.clone()), AppId::parse(appid.clone()).unwrap(), &encoding).unwrap();
        let enc = crypto::encrypt(&key, &appid, msg.as_bytes()).unwrap();
        let sig = signature::msg_signature(&PushToken::new(token), &ts, &nonce, &enc);
        let (plain, _) = pc.decrypt(&sig, &ts, &nonce, &enc).unwrap();
        prop_assert_eq!(plain, msg.as_bytes());
    }

    /// A flipped ciphertext byte never yields the original plaintext (and never panics); with
    /// the signature in place, tampering is caught before decryption.
    #[test]
    fn tampered_ciphertext_is_rejected(key in key_strategy(), appid in appid_strategy(), msg in proptest::collection::vec(any::<u8>(), 0..512), random in any::<[u8; 16]>(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let enc = crypto::encrypt_with_random(&key, &appid, &msg, &random).unwrap();
        let original = crypto::decrypt(&key, &enc).unwrap();
        let mut raw = STANDARD.decode(&enc).unwrap();
        let i = pos.index(raw.len());
        raw[i] ^= flip;
        let tampered = STANDARD.encode(&raw);
        if let Ok(d) = crypto::decrypt(&key, &tampered) {
            prop_assert_ne!(d, original);
        }

        let token = PushToken::new("tok");
        let pc = PushCrypto::new(PushToken::new("tok"), AppId::parse(appid).unwrap(), &key.to_encoding_aes_key()).unwrap();
        let sig = signature::msg_signature(&token, "1", "n", &enc);
        prop_assert_eq!(pc.decrypt(&sig, "1", "n", &tampered).unwrap_err(), PushError::SignatureMismatch);
    }

    /// A message for another appid is refused even with a valid signature.
    #[test]
    fn foreign_appid_is_rejected(key in key_strategy(), a in appid_strategy(), b in appid_strategy(), msg in "\\PC{0,100}") {
        prop_assume!(a != b);
        let enc = crypto::encrypt(&key, &a, msg.as_bytes()).unwrap();
        let token = PushToken::new("tok");
        let sig = signature::msg_signature(&token, "1", "n", &enc);
        let pc = PushCrypto::new(token, AppId::parse(b).unwrap(), &key.to_encoding_aes_key()).unwrap();
        prop_assert_eq!(pc.decrypt(&sig, "1", "n", &enc).unwrap_err(), PushError::AppIdMismatch);
    }

    /// A wrong key never decrypts to the original message.
    #[test]
    fn wrong_key_is_rejected(k1 in key_strategy(), k2 in key_strategy(), appid in appid_strategy(), msg in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assume!(!k1.ct_eq(&k2));
        let enc = crypto::encrypt(&k1, &appid, &msg).unwrap();
        if let Ok(d) = crypto::decrypt(&k2, &enc) {
            prop_assert!(d.msg != msg || d.appid != appid.as_bytes());
        }
    }

    #[test]
    fn decrypt_never_panics(key in key_strategy(), input in "\\PC{0,200}") {
        let _ = crypto::decrypt(&key, &input);
    }

    #[test]
    fn decrypt_of_random_blocks_never_panics(key in key_strategy(), blocks in proptest::collection::vec(any::<[u8; 16]>(), 0..16)) {
        let raw: Vec<u8> = blocks.concat();
        let _ = crypto::decrypt(&key, &STANDARD.encode(raw));
    }

    #[test]
    fn xml_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PushMessage::parse(&body);
    }

    #[test]
    fn xml_parser_never_panics_on_xmlish_text(body in "(<xml>|</xml>|<[A-Za-z]{1,6}>|</[A-Za-z]{1,6}>|<!\\[CDATA\\[|\\]\\]>|&[a-z#0-9]{0,5};|[a-z0-9 ]{0,8}){0,40}") {
        let _ = PushMessage::parse(body.as_bytes());
    }
}
