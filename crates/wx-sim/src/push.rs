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
    /// The third-party platform it goes through: a message of an account
    /// authorized to it (sent to its `message_url`), or one of its own
    /// `info:*` pushes (sent to its `event_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Every attempt in order.
    pub attempts: Vec<Attempt>,
}

fn nonce() -> String {
    use rand::Rng;
    rand::thread_rng()
        .gen_range(100_000_000u64..10_000_000_000)
        .to_string()
}

/// Records a new delivery and returns its id. Nothing is sent yet. A
/// message of an account that authorized a component's message management
/// goes to that component instead of the account's own URL.
pub(crate) fn enqueue(sim: &Sim, appid: &str, openid: &str, kind: &str, xml: String) -> String {
    let (mode, via) = {
        let st = sim.lock();
        match st.components.message_route(appid) {
            Some(c) => (PushMode::Safe, Some(c)),
            None => (
                st.account(appid).map(|a| a.push_mode).unwrap_or_default(),
                None,
            ),
        }
    };
    record(sim, appid, openid, kind, xml, mode, via)
}

/// Records a component's own push (`info:<InfoType>`) to its `event_url`.
pub(crate) fn enqueue_info(sim: &Sim, component: &str, info_type: &str, xml: String) -> String {
    record(
        sim,
        component,
        "",
        &format!("info:{info_type}"),
        xml,
        PushMode::Safe,
        Some(component.to_string()),
    )
}

fn record(
    sim: &Sim,
    appid: &str,
    openid: &str,
    kind: &str,
    xml: String,
    mode: PushMode,
    via: Option<String>,
) -> String {
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
        via,
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

/// Where and how one delivery is sent: the account's own settings, or a
/// component's (component-platform.md §2.1, §6.2).
struct Target {
    url: String,
    token: String,
    aes_key: String,
    /// The id at the end of the plaintext: the account's appid, or the component's.
    trailer: String,
    mode: PushMode,
    /// `<AppId>` (a component's own pushes) rather than `<ToUserName>`.
    app_id_envelope: bool,
    with_openid: bool,
    retries: u32,
    /// Only the exact body `success` counts (a component's own pushes).
    strict_success: bool,
}

fn target(sim: &Sim, d: &Delivery) -> Result<Option<Target>, String> {
    let st = sim.lock();
    let settings = &st.world.settings;
    if let Some(component) = &d.via {
        let c = st
            .components
            .config(component)
            .ok_or_else(|| format!("no component {component:?}"))?;
        let info = d.kind.starts_with("info:");
        let url = if info {
            c.event_url.clone()
        } else {
            c.message_url
                .as_ref()
                .map(|u| u.replace("$APPID$", &d.appid))
        };
        return Ok(url.map(|url| Target {
            url,
            token: c.token.clone(),
            aes_key: c.encoding_aes_key.clone(),
            trailer: c.appid.clone(),
            mode: PushMode::Safe,
            app_id_envelope: info,
            with_openid: !info,
            // Ticket pushes are not retried; the next one comes on schedule (§14).
            retries: if d.kind == "info:component_verify_ticket" {
                0
            } else {
                settings.push_retries
            },
            strict_success: info,
        }));
    }
    let account = st
        .account(&d.appid)
        .ok_or_else(|| format!("no account {:?}", d.appid))?;
    Ok(account.push_url.clone().map(|url| Target {
        url,
        token: account.push_token.clone().unwrap_or_default(),
        aes_key: account.encoding_aes_key.clone().unwrap_or_default(),
        trailer: account.appid.clone(),
        mode: account.push_mode,
        app_id_envelope: false,
        with_openid: true,
        retries: settings.push_retries,
        strict_success: false,
    }))
}

/// Sends a recorded delivery: the first attempt plus `push_retries`, each
/// waiting `push_timeout_ms` (§8.2, §12). Same body and parameters on every
/// attempt, so MsgId and CreateTime stay stable for de-duplication.
pub(crate) async fn deliver(sim: Arc<Sim>, id: String) -> Option<Delivery> {
    deliver_notify(sim, id, None).await
}

/// As [`deliver`], telling `first` how the first attempt went as soon as it
/// is over (the retries go on).
pub(crate) async fn deliver_notify(
    sim: Arc<Sim>,
    id: String,
    mut first: Option<tokio::sync::oneshot::Sender<Attempt>>,
) -> Option<Delivery> {
    let d = update(&sim, &id, |_| {})?;
    let timeout = Duration::from_millis(sim.lock().world.settings.push_timeout_ms);
    let t = match target(&sim, &d) {
        Ok(Some(t)) => t,
        Ok(None) => return update(&sim, &id, |d| d.status = DeliveryStatus::NoPushUrl),
        Err(err) => {
            return update(&sim, &id, |d| {
                d.status = DeliveryStatus::Failed;
                d.attempts.push(failed_attempt(1, 0, "connect_error", err));
            });
        }
    };
    let xml = d.xml;
    let timestamp = sim.clock.now().to_string();
    let nonce = nonce();
    let mut query: Vec<(String, String)> = vec![
        (
            "signature".into(),
            crypto::signature(&[&t.token, &timestamp, &nonce]),
        ),
        ("timestamp".into(), timestamp.clone()),
        ("nonce".into(), nonce.clone()),
    ];
    if t.with_openid {
        query.push(("openid".into(), d.openid.clone()));
    }
    let body = match t.mode {
        PushMode::Plain => xml.clone(),
        PushMode::Safe | PushMode::Compat => {
            let encrypted = match crypto::encrypt(&xml, &t.trailer, &t.aes_key) {
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
                crypto::signature(&[&t.token, &timestamp, &nonce, &encrypted]),
            ));
            if t.app_id_envelope {
                format!(
                    "<xml><AppId>{}</AppId><Encrypt>{}</Encrypt></xml>",
                    cdata(&t.trailer),
                    cdata(&encrypted)
                )
            } else if t.mode == PushMode::Safe {
                let to = xml_field(&xml, "ToUserName").unwrap_or_default();
                format!(
                    "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt></xml>",
                    cdata(&to),
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
    let url = match url::Url::parse_with_params(&t.url, &query) {
        Ok(u) => u,
        Err(err) => {
            return update(&sim, &id, |d| {
                d.status = DeliveryStatus::Failed;
                d.attempts
                    .push(failed_attempt(1, 0, "connect_error", err.to_string()));
            });
        }
    };
    for n in 1..=t.retries + 1 {
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
        let (attempt, done) = match result {
            Ok((status, text)) if (200..300).contains(&status) => {
                let mut a = classify_reply(&text, &t);
                a.n = n;
                a.at = at;
                a.duration_ms = duration_ms;
                a.http_status = Some(status);
                if t.strict_success && text != "success" {
                    a.outcome = "not_success".into();
                    a.error = Some("the reply must be exactly `success`".into());
                    (a, false)
                } else {
                    (a, true)
                }
            }
            Ok((status, text)) => {
                let mut a = failed_attempt(n, at, "http_error", format!("HTTP {status}"));
                a.http_status = Some(status);
                a.reply = Some(text);
                a.duration_ms = duration_ms;
                (a, false)
            }
            Err((outcome, err)) => {
                let mut a = failed_attempt(n, at, outcome, err);
                a.duration_ms = duration_ms;
                (a, false)
            }
        };
        if let Some(tx) = first.take() {
            let _ = tx.send(attempt.clone());
        }
        let last = n == t.retries + 1;
        let d = update(&sim, &id, |d| {
            d.attempts.push(attempt);
            if done {
                d.status = DeliveryStatus::Delivered;
            } else if last {
                d.status = DeliveryStatus::Failed;
            }
        });
        if done || last {
            return d;
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
fn classify_reply(text: &str, t: &Target) -> Attempt {
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
                let token = &t.token;
                let ts = xml_field(trimmed, "TimeStamp").unwrap_or_default();
                let nonce = xml_field(trimmed, "Nonce").unwrap_or_default();
                let sig = xml_field(trimmed, "MsgSignature").unwrap_or_default();
                if crypto::signature(&[token, &ts, &nonce, &enc]) != sig {
                    a.error = Some("reply MsgSignature does not match".into());
                    "invalid"
                } else {
                    match crypto::decrypt(&enc, &t.aes_key) {
                        Ok((msg, appid)) if appid == t.trailer => {
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
