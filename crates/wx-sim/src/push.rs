//! Push delivery to the account's server (`docs/platform.md` §8): signatures, safe-mode
//! encryption, the 5-second wait and the retries, with every attempt recorded.
//!
//! The crypto here is the simulator's own; it shares nothing with wx-api, so a
//! mistake on one side shows up as a failing test on the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::world::PushMode;

/// Message push crypto (§8.3), written independently of wx-api.
pub mod crypto {
    use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
    use base64::Engine;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use rand::RngCore;
    use sha1::{Digest, Sha1};

    type Enc = cbc::Encryptor<aes::Aes256>;
    type Dec = cbc::Decryptor<aes::Aes256>;

    // A 43-character EncodingAESKey has two surplus bits in its last
    // character, usually non-zero; a strict decoder rejects real keys (§8.3).
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );

    /// The 32-byte AES key of an EncodingAESKey.
    pub fn aes_key(encoding_aes_key: &str) -> Result<[u8; 32], String> {
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|e| format!("EncodingAESKey is not base64: {e}"))?;
        bytes
            .try_into()
            .map_err(|_| "EncodingAESKey must decode to 32 bytes".to_string())
    }

    /// `sha1` of the sorted, concatenated parts, lowercase hex (§8.1).
    pub fn signature(parts: &[&str]) -> String {
        let mut v = parts.to_vec();
        v.sort_unstable();
        hex::encode(Sha1::digest(v.concat().as_bytes()))
    }

    /// random(16) ‖ len (BE u32) ‖ msg ‖ appid, PKCS#7 to 32, AES-256-CBC, base64.
    pub fn encrypt_with_random(
        msg: &str,
        appid: &str,
        encoding_aes_key: &str,
        random: [u8; 16],
    ) -> Result<String, String> {
        let key = aes_key(encoding_aes_key)?;
        let mut plain = Vec::with_capacity(16 + 4 + msg.len() + appid.len() + 32);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(appid.as_bytes());
        let pad = 32 - plain.len() % 32;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let cipher = Enc::new_from_slices(&key, &key[..16]).map_err(|e| e.to_string())?;
        let out = cipher.encrypt_padded_vec_mut::<NoPadding>(&plain);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// As [`encrypt_with_random`] with fresh random bytes.
    pub fn encrypt(msg: &str, appid: &str, encoding_aes_key: &str) -> Result<String, String> {
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        encrypt_with_random(msg, appid, encoding_aes_key, random)
    }

    /// Decrypts to (msg, appid).
    pub fn decrypt(encrypted: &str, encoding_aes_key: &str) -> Result<(String, String), String> {
        let key = aes_key(encoding_aes_key)?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(encrypted.trim())
            .map_err(|e| format!("Encrypt is not base64: {e}"))?;
        if data.is_empty() || data.len() % 32 != 0 {
            return Err("ciphertext is not a multiple of 32 bytes".into());
        }
        let cipher = Dec::new_from_slices(&key, &key[..16]).map_err(|e| e.to_string())?;
        let plain = cipher
            .decrypt_padded_vec_mut::<NoPadding>(&data)
            .map_err(|e| e.to_string())?;
        let pad = *plain.last().unwrap_or(&0) as usize;
        if !(1..=32).contains(&pad) || pad > plain.len() {
            return Err("bad padding".into());
        }
        let body = &plain[..plain.len() - pad];
        if body.len() < 20 {
            return Err("plaintext too short".into());
        }
        let len = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let rest = &body[20..];
        if len > rest.len() {
            return Err("length field exceeds plaintext".into());
        }
        let msg = String::from_utf8(rest[..len].to_vec()).map_err(|_| "msg is not UTF-8")?;
        let appid = String::from_utf8(rest[len..].to_vec()).map_err(|_| "appid is not UTF-8")?;
        Ok((msg, appid))
    }
}

/// Wraps text in CDATA, splitting any `]]>` inside it.
pub(crate) fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// The plaintext XML of an event push (§8.2).
pub(crate) fn event_xml(to: &str, from: &str, now: i64, event: &str, extra: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime><MsgType>{}</MsgType><Event>{}</Event>{extra}</xml>",
        cdata(to),
        cdata(from),
        cdata("event"),
        cdata(event)
    )
}

/// The plaintext XML of a text message push (§8.2).
pub(crate) fn text_xml(to: &str, from: &str, now: i64, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime><MsgType>{}</MsgType><Content>{}</Content><MsgId>{msg_id}</MsgId></xml>",
        cdata(to),
        cdata(from),
        cdata("text"),
        cdata(content)
    )
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Attempts under way.
    Pending,
    /// The business server answered within the timeout.
    Delivered,
    /// Every attempt failed.
    Failed,
    /// The account has no push URL.
    NoPushUrl,
}

/// One POST to the business server.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// 1 for the first try.
    pub n: u32,
    /// Virtual time of the attempt.
    pub at: i64,
    /// Real time it took.
    pub duration_ms: u64,
    /// `replied`, `timeout`, `http_error` or `connect_error`.
    pub outcome: String,
    /// HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// The raw reply body.
    pub reply: Option<String>,
    /// `success`, `empty`, `xml`, `encrypted_xml` or `invalid` (the user
    /// would see "该公众号暂时无法提供服务，请稍后再试").
    pub reply_kind: Option<String>,
    /// The decrypted reply, in safe mode.
    pub reply_plain: Option<String>,
    /// What went wrong, for failed attempts and invalid replies.
    pub error: Option<String>,
}

/// A push and all its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Opaque id.
    pub id: String,
    /// The account pushed to.
    pub appid: String,
    /// The person's openid.
    pub openid: String,
    /// `event:subscribe`, `event:unsubscribe`, `event:SCAN`, `text`.
    pub kind: String,
    /// Virtual time of CreateTime.
    pub created_at: i64,
    /// The plaintext XML (before encryption).
    pub xml: String,
    /// The encryption mode used.
    pub mode: PushMode,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt in order.
    pub attempts: Vec<Attempt>,
}

fn nonce() -> String {
    use rand::Rng;
    rand::thread_rng()
        .gen_range(100_000_000u64..10_000_000_000)
        .to_string()
}

/// Records a new delivery and returns its id. Nothing is sent yet.
pub(crate) fn enqueue(sim: &Sim, appid: &str, openid: &str, kind: &str, xml: String) -> String {
    let mode = sim
        .lock()
        .account(appid)
        .map(|a| a.push_mode)
        .unwrap_or_default();
    let id = crate::ids::opaque(16);
    let d = Delivery {
        id: id.clone(),
        appid: appid.to_string(),
        openid: openid.to_string(),
        kind: kind.to_string(),
        created_at: sim.clock.now(),
        xml,
        mode,
        status: DeliveryStatus::Pending,
        attempts: Vec::new(),
    };
    let mut log = sim.deliveries.lock().unwrap_or_else(|e| e.into_inner());
    // A long dev session must not grow without bound; the newest matter.
    if log.len() >= 10_000 {
        log.remove(0);
    }
    log.push(d);
    id
}

fn update(sim: &Sim, id: &str, f: impl FnOnce(&mut Delivery)) -> Option<Delivery> {
    let mut log = sim.deliveries.lock().unwrap_or_else(|e| e.into_inner());
    let d = log.iter_mut().rev().find(|d| d.id == id)?;
    f(d);
    Some(d.clone())
}

/// Sends a recorded delivery: the first attempt plus `push_retries`, each
/// waiting `push_timeout_ms` (§8.2, §12). Same body and parameters on every
/// attempt, so MsgId and CreateTime stay stable for de-duplication.
pub(crate) async fn deliver(sim: Arc<Sim>, id: String) -> Option<Delivery> {
    let (account, settings) = {
        let log = sim.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        let appid = log.iter().rev().find(|d| d.id == id)?.appid.clone();
        drop(log);
        let st = sim.lock();
        (st.account(&appid)?.clone(), st.world.settings.clone())
    };
    let xml = update(&sim, &id, |_| {})?.xml;
    let Some(push_url) = account.push_url.clone() else {
        return update(&sim, &id, |d| d.status = DeliveryStatus::NoPushUrl);
    };
    let token = account.push_token.clone().unwrap_or_default();
    let timestamp = sim.clock.now().to_string();
    let nonce = nonce();
    let openid = update(&sim, &id, |_| {})?.openid;
    let mut query: Vec<(String, String)> = vec![
        (
            "signature".into(),
            crypto::signature(&[&token, &timestamp, &nonce]),
        ),
        ("timestamp".into(), timestamp.clone()),
        ("nonce".into(), nonce.clone()),
        ("openid".into(), openid),
    ];
    let aes_key = account.encoding_aes_key.clone().unwrap_or_default();
    let body = match account.push_mode {
        PushMode::Plain => xml.clone(),
        PushMode::Safe | PushMode::Compat => {
            let encrypted = match crypto::encrypt(&xml, &account.appid, &aes_key) {
                Ok(e) => e,
                Err(err) => {
                    return update(&sim, &id, |d| {
                        d.status = DeliveryStatus::Failed;
                        d.attempts.push(failed_attempt(1, 0, "connect_error", err));
                    });
                }
            };
            query.push(("encrypt_type".into(), "aes".into()));
            query.push((
                "msg_signature".into(),
                crypto::signature(&[&token, &timestamp, &nonce, &encrypted]),
            ));
            if account.push_mode == PushMode::Safe {
                format!(
                    "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt></xml>",
                    cdata(&account.original_id),
                    cdata(&encrypted)
                )
            } else {
                let end = xml.rfind("</xml>").unwrap_or(xml.len());
                format!(
                    "{}<Encrypt>{}</Encrypt></xml>",
                    &xml[..end],
                    cdata(&encrypted)
                )
            }
        }
    };
    let url = match url::Url::parse_with_params(&push_url, &query) {
        Ok(u) => u,
        Err(err) => {
            return update(&sim, &id, |d| {
                d.status = DeliveryStatus::Failed;
                d.attempts
                    .push(failed_attempt(1, 0, "connect_error", err.to_string()));
            });
        }
    };
    let timeout = Duration::from_millis(settings.push_timeout_ms);
    for n in 1..=settings.push_retries + 1 {
        let at = sim.clock.now();
        let started = Instant::now();
        let sent = sim
            .http
            .post(url.clone())
            .header("content-type", "text/xml")
            .body(body.clone())
            .timeout(timeout)
            .send()
            .await;
        let result = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), resp.text())
                    .await
                {
                    Ok(Ok(text)) => Ok((status, text)),
                    Ok(Err(e)) => Err(("connect_error", e.without_url().to_string())),
                    Err(_) => Err(("timeout", "no reply within the timeout".to_string())),
                }
            }
            Err(e) if e.is_timeout() => Err(("timeout", "no reply within the timeout".into())),
            Err(e) => Err(("connect_error", e.without_url().to_string())),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok((status, text)) if (200..300).contains(&status) => {
                let mut a = classify_reply(&text, &account, &aes_key);
                a.n = n;
                a.at = at;
                a.duration_ms = duration_ms;
                a.http_status = Some(status);
                return update(&sim, &id, |d| {
                    d.attempts.push(a);
                    d.status = DeliveryStatus::Delivered;
                });
            }
            Ok((status, text)) => {
                update(&sim, &id, |d| {
                    let mut a = failed_attempt(n, at, "http_error", format!("HTTP {status}"));
                    a.http_status = Some(status);
                    a.reply = Some(text);
                    a.duration_ms = duration_ms;
                    d.attempts.push(a);
                });
            }
            Err((outcome, err)) => {
                update(&sim, &id, |d| {
                    let mut a = failed_attempt(n, at, outcome, err);
                    a.duration_ms = duration_ms;
                    d.attempts.push(a);
                });
            }
        }
    }
    update(&sim, &id, |d| d.status = DeliveryStatus::Failed)
}

fn failed_attempt(n: u32, at: i64, outcome: &str, error: String) -> Attempt {
    Attempt {
        n,
        at,
        duration_ms: 0,
        outcome: outcome.to_string(),
        http_status: None,
        reply: None,
        reply_kind: None,
        reply_plain: None,
        error: Some(error),
    }
}

/// The text of `<Tag>` in a flat XML document, CDATA or not.
pub(crate) fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let inner = xml[start..end].trim();
    Some(
        inner
            .strip_prefix("<![CDATA[")
            .and_then(|s| s.strip_suffix("]]>"))
            .unwrap_or(inner)
            .to_string(),
    )
}

/// Judges a reply the way the platform does (§8.2, §8.3).
fn classify_reply(text: &str, account: &crate::world::Account, aes_key: &str) -> Attempt {
    let mut a = failed_attempt(0, 0, "replied", String::new());
    a.error = None;
    a.reply = Some(text.to_string());
    let trimmed = text.trim();
    let kind = if trimmed.is_empty() {
        "empty"
    } else if trimmed == "success" {
        "success"
    } else if trimmed.starts_with("<xml") {
        match xml_field(trimmed, "Encrypt") {
            None => "xml",
            Some(enc) => {
                let token = account.push_token.clone().unwrap_or_default();
                let ts = xml_field(trimmed, "TimeStamp").unwrap_or_default();
                let nonce = xml_field(trimmed, "Nonce").unwrap_or_default();
                let sig = xml_field(trimmed, "MsgSignature").unwrap_or_default();
                if crypto::signature(&[&token, &ts, &nonce, &enc]) != sig {
                    a.error = Some("reply MsgSignature does not match".into());
                    "invalid"
                } else {
                    match crypto::decrypt(&enc, aes_key) {
                        Ok((msg, appid)) if appid == account.appid => {
                            a.reply_plain = Some(msg);
                            "encrypted_xml"
                        }
                        Ok(_) => {
                            a.error = Some("reply encrypted for another appid".into());
                            "invalid"
                        }
                        Err(e) => {
                            a.error = Some(format!("reply does not decrypt: {e}"));
                            "invalid"
                        }
                    }
                }
            }
        }
    } else {
        a.error = Some("reply is neither success, empty nor XML; the user sees 该公众号暂时无法提供服务，请稍后再试".into());
        "invalid"
    };
    a.reply_kind = Some(kind.to_string());
    a
}

/// The GET verification (§8.1): the business server must echo `echostr`.
pub(crate) async fn verify(sim: &Sim, appid: &str) -> Result<Value, String> {
    let account = sim
        .lock()
        .account(appid)
        .cloned()
        .ok_or_else(|| format!("no account with appid {appid:?}"))?;
    let push_url = account
        .push_url
        .clone()
        .ok_or_else(|| format!("account {appid} has no push_url"))?;
    let token = account.push_token.clone().unwrap_or_default();
    let timestamp = sim.clock.now().to_string();
    let nonce = nonce();
    let echostr = {
        use rand::Rng;
        rand::thread_rng().r#gen::<u64>().to_string()
    };
    let signature = crypto::signature(&[&token, &timestamp, &nonce]);
    let url = url::Url::parse_with_params(
        &push_url,
        &[
            ("signature", signature.as_str()),
            ("timestamp", &timestamp),
            ("nonce", &nonce),
            ("echostr", &echostr),
        ],
    )
    .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(sim.lock().world.settings.push_timeout_ms);
    match sim.http.get(url).timeout(timeout).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let ok = status == 200 && body == echostr;
            Ok(json!({"ok": ok, "http_status": status, "echostr": echostr, "reply": body}))
        }
        Err(e) => Ok(json!({"ok": false, "error": e.without_url().to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::crypto;

    fn vectors() -> serde_json::Value {
        // The repository's copy of shared/spec/vectors.json (wx-api's
        // tests check that the copy matches the original when it is there).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/vectors.json");
        let text = std::fs::read_to_string(path).expect("spec/vectors.json in the checkout");
        serde_json::from_str(&text).expect("vectors.json is JSON")
    }

    #[test]
    fn push_signature_vectors() {
        let v = vectors();
        let cases = v["push_signature"].as_array().expect("array");
        assert!(!cases.is_empty());
        for c in cases {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            assert_eq!(
                crypto::signature(&[&s("token"), &s("timestamp"), &s("nonce")]),
                s("signature")
            );
        }
    }

    #[test]
    fn decrypt_vectors() {
        let v = vectors();
        let cases = v["message_decrypt"].as_array().expect("array");
        assert!(!cases.is_empty());
        for c in cases {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            let key = crypto::aes_key(&s("encoding_aes_key")).expect("key");
            assert_eq!(hex::encode(key), s("aes_key_hex"));
            assert_eq!(
                crypto::signature(&[&s("token"), &s("timestamp"), &s("nonce"), &s("encrypt")]),
                s("msg_signature")
            );
            let (msg, appid) =
                crypto::decrypt(&s("encrypt"), &s("encoding_aes_key")).expect("decrypts");
            assert_eq!(msg, s("msg"));
            assert_eq!(appid, s("appid"));
        }
    }

    #[test]
    fn encrypt_vectors() {
        let v = vectors();
        let cases = v["message_encrypt"].as_array().expect("array");
        assert!(!cases.is_empty());
        for c in cases {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            let random: [u8; 16] = s("random").into_bytes().try_into().expect("16-byte random");
            let enc =
                crypto::encrypt_with_random(&s("msg"), &s("appid"), &s("encoding_aes_key"), random)
                    .expect("encrypts");
            assert_eq!(enc, s("encrypt"), "{}", s("name"));
            assert_eq!(
                crypto::signature(&[&s("token"), &s("timestamp"), &s("nonce"), &enc]),
                s("msg_signature")
            );
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let enc = crypto::encrypt("<xml>你好</xml>", "wx0123456789abcdef", key).expect("enc");
        let (m, a) = crypto::decrypt(&enc, key).expect("dec");
        assert_eq!(
            (m.as_str(), a.as_str()),
            ("<xml>你好</xml>", "wx0123456789abcdef")
        );
        let other = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
        assert!(crypto::decrypt(&enc, other).map(|(_, a)| a) != Ok("wx0123456789abcdef".into()));
    }
}
