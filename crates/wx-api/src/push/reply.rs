//! Passive replies: reply XML, the encrypted reply envelope, and `success`.

use super::PushMessage;

/// The body that tells the platform "received, nothing to say" (an empty body works too, and
/// is the safer choice in safe mode).
pub const SUCCESS: &str = "success";

/// Wraps text in CDATA. A `]]>` inside would end the section early, so it is split across
/// two sections.
pub fn cdata(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 12);
    out.push_str("<![CDATA[");
    out.push_str(&text.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
    out
}

/// A passive reply to a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The user's OpenID (the push's `FromUserName`).
    pub to_user_name: String,
    /// The account's original id (the push's `ToUserName`).
    pub from_user_name: String,
    /// Unix seconds.
    pub create_time: i64,
    /// What to send.
    pub kind: ReplyKind,
}

/// The type-specific part of a [`Reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyKind {
    /// A text reply.
    Text {
        /// The text.
        content: String,
    },
    /// An image, by media id.
    Image {
        /// The media id.
        media_id: String,
    },
    /// A voice message, by media id.
    Voice {
        /// The media id.
        media_id: String,
    },
    /// A video, by media id.
    Video {
        /// The media id.
        media_id: String,
        /// Optional title.
        title: Option<String>,
        /// Optional description.
        description: Option<String>,
    },
}

impl Reply {
    /// A reply to `message` (addresses swapped) created at `now`.
    pub fn to(message: &PushMessage, now: i64, kind: ReplyKind) -> Self {
        Self {
            to_user_name: message.from_user_name.to_string(),
            from_user_name: message.to_user_name.clone(),
            create_time: now,
            kind,
        }
    }

    /// A text reply to `message`.
    pub fn text_to(message: &PushMessage, now: i64, content: impl Into<String>) -> Self {
        Self::to(
            message,
            now,
            ReplyKind::Text {
                content: content.into(),
            },
        )
    }

    /// The reply document.
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(256);
        x.push_str("<xml><ToUserName>");
        x.push_str(&cdata(&self.to_user_name));
        x.push_str("</ToUserName><FromUserName>");
        x.push_str(&cdata(&self.from_user_name));
        x.push_str("</FromUserName><CreateTime>");
        x.push_str(&self.create_time.to_string());
        x.push_str("</CreateTime>");
        match &self.kind {
            ReplyKind::Text { content } => {
                x.push_str("<MsgType><![CDATA[text]]></MsgType><Content>");
                x.push_str(&cdata(content));
                x.push_str("</Content>");
            }
            ReplyKind::Image { media_id } => {
                x.push_str("<MsgType><![CDATA[image]]></MsgType><Image><MediaId>");
                x.push_str(&cdata(media_id));
                x.push_str("</MediaId></Image>");
            }
            ReplyKind::Voice { media_id } => {
                x.push_str("<MsgType><![CDATA[voice]]></MsgType><Voice><MediaId>");
                x.push_str(&cdata(media_id));
                x.push_str("</MediaId></Voice>");
            }
            ReplyKind::Video {
                media_id,
                title,
                description,
            } => {
                x.push_str("<MsgType><![CDATA[video]]></MsgType><Video><MediaId>");
                x.push_str(&cdata(media_id));
                x.push_str("</MediaId>");
                if let Some(t) = title {
                    x.push_str("<Title>");
                    x.push_str(&cdata(t));
                    x.push_str("</Title>");
                }
                if let Some(d) = description {
                    x.push_str("<Description>");
                    x.push_str(&cdata(d));
                    x.push_str("</Description>");
                }
                x.push_str("</Video>");
            }
        }
        x.push_str("</xml>");
        x
    }
}

/// The encrypted reply envelope
/// `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.
pub fn encrypted_envelope(
    encrypt: &str,
    msg_signature: &str,
    timestamp: u64,
    nonce: &str,
) -> String {
    format!(
        "<xml>\n<Encrypt>{}</Encrypt>\n<MsgSignature>{}</MsgSignature>\n<TimeStamp>{timestamp}</TimeStamp>\n<Nonce>{}</Nonce>\n</xml>",
        cdata(encrypt),
        cdata(msg_signature),
        cdata(nonce),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::message::{MessageKind, PushMessage};

    #[test]
    fn cdata_splits_the_terminator() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
        assert_eq!(cdata(""), "<![CDATA[]]>");
    }

    #[test]
    fn text_reply_round_trips_through_the_parser() {
        let push = PushMessage::parse(b"<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId></xml>").unwrap();
        let content = "evil ]]> <xml> & \"quotes\" 中文";
        let reply = Reply::text_to(&push, 1700000000, content);
        let xml = reply.to_xml();
        assert!(xml.starts_with("<xml><ToUserName><![CDATA[o1]]></ToUserName><FromUserName><![CDATA[gh_1]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"));
        // The reply parses as a push-shaped document with the content intact.
        let fields = crate::push::message::parse_fields(xml.as_bytes()).unwrap();
        assert!(fields.iter().any(|(k, v)| k == "Content" && v == content));
        let again = PushMessage::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            again.kind,
            MessageKind::Text {
                content: content.into()
            }
        );
    }

    #[test]
    fn media_replies() {
        let r = Reply {
            to_user_name: "o".into(),
            from_user_name: "gh".into(),
            create_time: 2,
            kind: ReplyKind::Video {
                media_id: "m".into(),
                title: Some("t".into()),
                description: None,
            },
        };
        let xml = r.to_xml();
        assert!(xml.contains(
            "<Video><MediaId><![CDATA[m]]></MediaId><Title><![CDATA[t]]></Title></Video>"
        ));
        let fields = crate::push::message::parse_fields(xml.as_bytes()).unwrap();
        assert!(fields.iter().any(|(k, v)| k == "Video/MediaId" && v == "m"));
    }

    #[test]
    fn envelope_shape() {
        assert_eq!(
            encrypted_envelope("E==", "sig", 1409304348, "xxxxxx"),
            "<xml>\n<Encrypt><![CDATA[E==]]></Encrypt>\n<MsgSignature><![CDATA[sig]]></MsgSignature>\n<TimeStamp>1409304348</TimeStamp>\n<Nonce><![CDATA[xxxxxx]]></Nonce>\n</xml>"
        );
    }
}
