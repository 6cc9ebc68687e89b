//! Every published vector in `shared/spec/vectors.json`, loaded at test time so that a vector
//! added to the file later is tested too. The repository keeps a copy (`spec/vectors.json`), so a
//! clean clone tests on its own; when the shared original sits beside the checkout, the copy must
//! match it.
//!
//! Every array in the file must be a kind this test knows; a new kind fails the test until
//! someone teaches it here.

use std::path::PathBuf;

use serde_json::Value;
use wx_api::push::crypto::{self, AesKey};
use wx_api::push::signature;
use wx_api::push::{PushCrypto, PushQuery};
use wx_api::{AppId, EncodingAesKey, JsapiTicket, PushToken, jssdk};

fn copy_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors.json")
}

fn load() -> Value {
    let path = copy_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

#[test]
fn the_copy_matches_the_shared_original_when_it_is_there() {
    let original =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/vectors.json");
    if let Ok(shared) = std::fs::read(&original) {
        let copy = std::fs::read(copy_path()).expect("spec/vectors.json");
        assert!(
            copy == shared,
            "spec/vectors.json differs from {}: copy the original again",
            original.display()
        );
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} missing in {v}"))
}

fn check_push_signature(v: &Value) {
    let token = PushToken::new(s(v, "token"));
    let (ts, nonce, sig) = (s(v, "timestamp"), s(v, "nonce"), s(v, "signature"));
    assert_eq!(signature::signature(&token, ts, nonce), sig, "{v}");
    assert!(signature::verify_signature(&token, ts, nonce, sig));
    if let Some(echostr) = v["echostr"].as_str() {
        let crypto = PushCrypto::plaintext(token, AppId::parse("wx0000000000000000").unwrap());
        let q = PushQuery {
            signature: Some(sig.into()),
            timestamp: Some(ts.into()),
            nonce: Some(nonce.into()),
            echostr: Some(echostr.into()),
            ..PushQuery::default()
        };
        assert_eq!(crypto.verify_url(&q).unwrap(), echostr);
    }
}

fn check_jssdk(v: &Value) {
    let ticket = JsapiTicket::new(s(v, "jsapi_ticket"));
    let got = jssdk::sign(&ticket, s(v, "noncestr"), s(v, "timestamp"), s(v, "url"));
    assert_eq!(got, s(v, "signature"), "{v}");
}

fn key_of(v: &Value) -> AesKey {
    AesKey::from_encoding_aes_key(&EncodingAesKey::new(s(v, "encoding_aes_key")))
        .expect("vector key decodes")
}

fn check_decrypt(v: &Value) {
    let key = key_of(v);
    if let Some(hex_key) = v["aes_key_hex"].as_str() {
        assert_eq!(hex::encode(key.expose_secret()), hex_key, "{}", v["name"]);
    }
    let token = PushToken::new(s(v, "token"));
    let (ts, nonce, encrypt) = (s(v, "timestamp"), s(v, "nonce"), s(v, "encrypt"));
    assert_eq!(
        signature::msg_signature(&token, ts, nonce, encrypt),
        s(v, "msg_signature"),
        "{}",
        v["name"]
    );

    let d = crypto::decrypt(&key, encrypt).unwrap();
    assert_eq!(d.random.as_slice(), s(v, "random").as_bytes());
    assert_eq!(std::str::from_utf8(&d.msg).unwrap(), s(v, "msg"));
    assert_eq!(std::str::from_utf8(&d.appid).unwrap(), s(v, "appid"));

    // The same through the receiving-side API, which also checks signature and appid.
    let pc = PushCrypto::new(
        token,
        AppId::parse(s(v, "appid")).unwrap(),
        &EncodingAesKey::new(s(v, "encoding_aes_key")),
    )
    .unwrap();
    let (msg, _) = pc
        .decrypt(s(v, "msg_signature"), ts, nonce, encrypt)
        .unwrap();
    assert_eq!(msg, s(v, "msg").as_bytes());
}

fn check_encrypt(v: &Value) {
    let key = key_of(v);
    let random: [u8; 16] = s(v, "random")
        .as_bytes()
        .try_into()
        .expect("16-byte random");
    let got =
        crypto::encrypt_with_random(&key, s(v, "appid"), s(v, "msg").as_bytes(), &random).unwrap();
    assert_eq!(got, s(v, "encrypt"), "{}", v["name"]);
    let token = PushToken::new(s(v, "token"));
    assert_eq!(
        signature::msg_signature(&token, s(v, "timestamp"), s(v, "nonce"), &got),
        s(v, "msg_signature"),
        "{}",
        v["name"]
    );
    let back = crypto::decrypt(&key, &got).unwrap();
    assert_eq!(back.msg, s(v, "msg").as_bytes());
}

#[test]
fn every_published_vector() {
    let doc = load();
    let obj = doc.as_object().expect("top level is an object");
    let mut checked = 0;
    for (kind, entries) in obj {
        let Some(entries) = entries.as_array() else {
            continue;
        };
        let check: fn(&Value) = match kind.as_str() {
            "push_signature" => check_push_signature,
            "jssdk_signature" => check_jssdk,
            "message_decrypt" => check_decrypt,
            "message_encrypt" => check_encrypt,
            other => panic!("vectors.json has a kind this test does not know: {other}"),
        };
        assert!(!entries.is_empty(), "{kind} is empty");
        for v in entries {
            check(v);
            checked += 1;
        }
    }
    // 4 + 2 + 2 + 2 today; more is fine, fewer means the file was not read properly.
    assert!(checked >= 10, "only {checked} vectors checked");
}
