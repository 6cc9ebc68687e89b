//! What a subscriber receives: the message as JSON (typed fields, the raw
//! XML, the appid, a stable delivery id), signed with its secret.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wx_api::push::{Event, MessageKind, PushMessage};

use crate::config::SubscriberSecret;
use crate::store::push::FollowChange;

/// The duplicate key (§8.2): the `MsgId` for messages; for events
/// `FromUserName` + `CreateTime` + `Event`, which the platform keeps across
/// its retries.
pub fn dedup_key(m: &PushMessage) -> String {
    match m.msg_id {
        Some(id) => format!("m:{id}"),
        None => format!(
            "e:{}:{}:{}",
            m.from_user_name,
            m.create_time,
            m.field("Event").unwrap_or_default().trim()
        ),
    }
}

/// A fresh message id: 32 hex digits, an order stamp (the wall clock's
/// milliseconds and a sequence within the millisecond) that only grows
/// within the process, then 64 random bits. Random ids landed on a random
/// leaf of every index on `message_id`, so each commit rewrote a page per
/// push and index and the store's WAL writes dominated a push's cost; ids
/// in arrival order append to the same few pages instead. The random part
/// keeps ids from several instances (shared mode) apart.
pub fn new_message_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        << 16;
    // After the previous stamp even if the wall clock steps back: the
    // order, not the time, is what it is for.
    let next = |last: u64| wall.max(last.saturating_add(1));
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(next(last))
        })
        .unwrap_or_else(|v| v);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&next(prev).to_be_bytes());
    raw[8..].copy_from_slice(&rand::random::<[u8; 8]>());
    hex::encode(raw)
}

/// `MsgType` and, for events, `Event`.
pub fn kind_of(m: &PushMessage) -> (String, Option<String>) {
    let msg_type = m.field("MsgType").unwrap_or_default().trim().to_string();
    let event =
        (msg_type == "event").then(|| m.field("Event").unwrap_or_default().trim().to_string());
    (msg_type, event)
}

/// What a subscribe or unsubscribe does to the follower record.
pub fn follow_change(m: &PushMessage) -> Option<FollowChange> {
    match &m.kind {
        MessageKind::Event(Event::Subscribe { .. }) => Some(FollowChange::Subscribe(m.create_time)),
        MessageKind::Event(Event::Unsubscribe) => Some(FollowChange::Unsubscribe(m.create_time)),
        _ => None,
    }
}

/// Whether the message is a follow (its delivery carries the profile).
pub fn is_subscribe(m: &PushMessage) -> bool {
    matches!(m.kind, MessageKind::Event(Event::Subscribe { .. }))
}

fn raw_fields(fields: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in fields {
        map.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Value::Object(map)
}

/// The type-specific fields, named in snake case. Unknown types and events
/// carry every leaf of the document under its own name.
pub fn typed(m: &PushMessage) -> Value {
    match &m.kind {
        MessageKind::Text { content } => json!({ "content": content }),
        MessageKind::Image { pic_url, media_id } => {
            json!({ "pic_url": pic_url, "media_id": media_id })
        }
        MessageKind::Voice {
            media_id,
            format,
            recognition,
        } => {
            json!({ "media_id": media_id, "format": format, "recognition": recognition })
        }
        MessageKind::Video {
            media_id,
            thumb_media_id,
        }
        | MessageKind::ShortVideo {
            media_id,
            thumb_media_id,
        } => {
            json!({ "media_id": media_id, "thumb_media_id": thumb_media_id })
        }
        MessageKind::Location {
            latitude,
            longitude,
            scale,
            label,
        } => {
            json!({ "latitude": latitude, "longitude": longitude, "scale": scale, "label": label })
        }
        MessageKind::Link {
            title,
            description,
            url,
        } => {
            json!({ "title": title, "description": description, "url": url })
        }
        MessageKind::Event(e) => match e {
            Event::Subscribe { scene, ticket } => json!({ "scene": scene, "ticket": ticket }),
            Event::Unsubscribe => json!({}),
            Event::Scan { scene, ticket } => json!({ "scene": scene, "ticket": ticket }),
            Event::Click { key } => json!({ "key": key }),
            Event::View { url, menu_id } => json!({ "url": url, "menu_id": menu_id }),
            Event::Location {
                latitude,
                longitude,
                precision,
            } => {
                json!({ "latitude": latitude, "longitude": longitude, "precision": precision })
            }
            Event::Unknown { fields, .. } => raw_fields(fields),
            _ => raw_fields(m.fields()),
        },
        MessageKind::Unknown { fields, .. } => raw_fields(fields),
        _ => raw_fields(m.fields()),
    }
}

/// Whether wx-api knows this message's type (and event): `false` for what
/// is delivered raw.
pub fn known(m: &PushMessage) -> bool {
    !matches!(
        m.kind,
        MessageKind::Unknown { .. } | MessageKind::Event(Event::Unknown { .. })
    )
}

/// One delivery's facts besides the message.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The account.
    pub appid: &'a str,
    /// The hub's id of the message.
    pub message_id: &'a str,
    /// `message_id.subscriber`: the same on every attempt and instance.
    pub delivery_id: &'a str,
    /// When the hub received it.
    pub received_at: i64,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// For subscribe events: the follower record with its profile, or why
    /// there is none.
    pub follower: Option<Value>,
}

/// The JSON body of a delivery.
pub fn body(e: &Envelope<'_>, m: &PushMessage, raw_xml: &str) -> Value {
    let (msg_type, event) = kind_of(m);
    let mut v = json!({
        "delivery_id": e.delivery_id,
        "message_id": e.message_id,
        "appid": e.appid,
        "received_at": e.received_at,
        "attempt": e.attempt,
        "to_user_name": m.to_user_name,
        "from_user_name": m.from_user_name.as_str(),
        "create_time": m.create_time,
        "msg_type": msg_type,
        "event": event,
        "msg_id": m.msg_id.map(|id| id.to_string()),
        "known_type": known(m),
        "fields": typed(m),
        "raw_xml": raw_xml,
    });
    if let Some(f) = &e.follower {
        v["follower"] = f.clone();
    }
    v
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, the value of
/// `X-Wxhub-Signature`. The timestamp goes in `X-Wxhub-Timestamp`, so a
/// subscriber can refuse old replays.
pub fn sign(secret: &SubscriberSecret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> PushMessage {
        PushMessage::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn message_ids_are_unique_and_in_arrival_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_message_id()).collect();
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        // Strictly increasing: unique, and appended to the index's last page.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{:?}", &ids[..3]);
    }

    #[test]
    fn dedup_keys_follow_the_platform() {
        let text = parse(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>42</MsgId></xml>",
        );
        assert_eq!(dedup_key(&text), "m:42");
        let ev = parse(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>CLICK</Event><EventKey>k</EventKey></xml>",
        );
        assert_eq!(dedup_key(&ev), "e:o1:5:CLICK");
        assert_eq!(typed(&ev), json!({"key": "k"}));
    }

    #[test]
    fn unknown_types_keep_every_field() {
        let m = parse(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>templatesendjobfinish</Event><Status>success</Status></xml>",
        );
        assert!(!known(&m));
        assert_eq!(typed(&m)["Status"], "success");
        assert_eq!(
            kind_of(&m),
            ("event".into(), Some("templatesendjobfinish".into()))
        );
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac k
        let s = sign(&SubscriberSecret::new("k"), 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "sha256=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
        assert_ne!(s, sign(&SubscriberSecret::new("k2"), 1_700_000_000, b"{}"));
        assert_ne!(s, sign(&SubscriberSecret::new("k"), 1_700_000_001, b"{}"));
    }
}
