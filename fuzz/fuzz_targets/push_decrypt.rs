//! Safe-mode decryption and the whole receiving path from arbitrary input.
//!
//! The first byte picks what the rest is: a base64 `Encrypt` string, raw ciphertext (base64
//! encoded here so the fuzzer reaches the AES and padding code), a safe-mode body for
//! `PushCrypto::open` with a correct signature, or a plaintext to round-trip.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use wx_api::push::crypto::{self, AesKey};
use wx_api::push::{PushCrypto, PushQuery, signature};
use wx_api::{AppId, EncodingAesKey, PushToken};

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx2c2769f8efd9abc2";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = AesKey::from_encoding_aes_key(&EncodingAesKey::new(KEY)).expect("sample key");
    match mode % 4 {
        0 => {
            let _ = crypto::decrypt(&key, &String::from_utf8_lossy(rest));
        }
        1 => {
            let _ = crypto::decrypt(&key, &STANDARD.encode(rest));
        }
        2 => {
            // Sign whatever Encrypt the body carries, so the fuzzer gets past the signature
            // check into decryption, appid check and XML parsing.
            let token = PushToken::new("spamtest");
            let pc = PushCrypto::new(
                PushToken::new("spamtest"),
                AppId::parse(APPID).expect("appid"),
                &EncodingAesKey::new(KEY),
            )
            .expect("crypto");
            let encrypt = wx_api::push::EncryptedEnvelope::parse(rest)
                .map(|e| e.encrypt)
                .unwrap_or_default();
            let q = PushQuery {
                timestamp: Some("1409735669".into()),
                nonce: Some("1320562132".into()),
                encrypt_type: Some("aes".into()),
                msg_signature: Some(signature::msg_signature(
                    &token,
                    "1409735669",
                    "1320562132",
                    &encrypt,
                )),
                ..PushQuery::default()
            };
            let _ = pc.open(&q, rest);
        }
        _ => {
            let random: [u8; 16] = core::array::from_fn(|i| rest.get(i).copied().unwrap_or(0));
            let enc = crypto::encrypt_with_random(&key, APPID, rest, &random).expect("encrypt");
            let d = crypto::decrypt(&key, &enc).expect("round trip");
            assert_eq!(d.msg, rest);
            assert_eq!(d.appid, APPID.as_bytes());
        }
    }
});
