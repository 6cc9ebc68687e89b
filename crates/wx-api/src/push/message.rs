//! Parsing pushed XML into typed messages and events.
//!
//! The document is read into a flat list of `(path, text)` leaves first (nested elements get
//! `Parent/Child` paths), then typed. A document type declaration is refused outright, so no
//! entity can be defined, and only the five predefined entities and character references are
//! expanded: there is nothing to blow up. Size and depth are capped before and during parsing.

use quick_xml::Reader;
use quick_xml::events::Event as XmlEvent;

use super::{MAX_BODY_BYTES, PushError};
use crate::ids::OpenId;

/// Elements nested deeper than this below `<xml>` are refused. Real pushes go four deep
/// (`SendPicsInfo/PicList/item/PicMd5Sum`).
const MAX_DEPTH: usize = 8;

/// Leaves beyond this count are refused; real pushes have a few dozen at most.
const MAX_FIELDS: usize = 512;

/// The leaves of a flat push document, in document order.
pub(crate) type Fields = Vec<(String, String)>;

/// Reads `<xml>…</xml>` into `(path, text)` leaves.
pub(crate) fn parse_fields(body: &[u8]) -> Result<Fields, PushError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PushError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| PushError::Utf8)?;
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let xml_err = |r: &Reader<&[u8]>| PushError::Xml {
        position: r.buffer_position(),
    };

    // `stack` holds the open elements below the root; `had_child` tracks whether each one has
    // child elements, so mixed content is attributed to leaves only.
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut text_buf = String::new();
    let mut fields = Fields::new();
    let mut seen_root = false;
    let mut root_open = false;

    loop {
        let event = reader.read_event().map_err(|_| xml_err(&reader))?;
        match event {
            XmlEvent::DocType(_) => return Err(PushError::DocTypeRejected),
            XmlEvent::Decl(_) | XmlEvent::Comment(_) | XmlEvent::PI(_) => {}
            XmlEvent::Start(e) => {
                let name = std::str::from_utf8(e.name().as_ref())
                    .map_err(|_| PushError::Utf8)?
                    .to_owned();
                if !root_open {
                    if seen_root || name != "xml" {
                        return Err(PushError::NotAPush);
                    }
                    seen_root = true;
                    root_open = true;
                    continue;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(PushError::TooDeep);
                }
                if let Some(parent) = stack.last_mut() {
                    parent.1 = true;
                }
                stack.push((name, false));
                text_buf.clear();
            }
            XmlEvent::Empty(e) => {
                let name = std::str::from_utf8(e.name().as_ref())
                    .map_err(|_| PushError::Utf8)?
                    .to_owned();
                if !root_open {
                    if seen_root || name != "xml" {
                        return Err(PushError::NotAPush);
                    }
                    seen_root = true;
                    continue;
                }
                if let Some(parent) = stack.last_mut() {
                    parent.1 = true;
                }
                push_field(&mut fields, &stack, name, String::new())?;
            }
            XmlEvent::End(_) => {
                if let Some((name, had_child)) = stack.pop() {
                    if !had_child {
                        let value = text_buf.as_str().to_owned();
                        push_field(&mut fields, &stack, name, value)?;
                    }
                    text_buf.clear();
                } else if root_open {
                    root_open = false;
                } else {
                    return Err(xml_err(&reader));
                }
            }
            XmlEvent::Text(t) => {
                let s = t.unescape().map_err(|_| xml_err(&reader))?;
                if !root_open || stack.is_empty() {
                    if !s.trim().is_empty() {
                        return Err(PushError::NotAPush);
                    }
                } else {
                    text_buf.push_str(&s);
                }
            }
            XmlEvent::CData(c) => {
                if !root_open || stack.is_empty() {
                    return Err(PushError::NotAPush);
                }
                let s = std::str::from_utf8(&c).map_err(|_| PushError::Utf8)?;
                text_buf.push_str(s);
            }
            XmlEvent::Eof => break,
        }
    }
    if !seen_root || root_open {
        return Err(PushError::NotAPush);
    }
    Ok(fields)
}

fn push_field(
    fields: &mut Fields,
    stack: &[(String, bool)],
    name: String,
    value: String,
) -> Result<(), PushError> {
    if fields.len() >= MAX_FIELDS {
        return Err(PushError::TooManyFields);
    }
    // A push is flat but for a few events' nested lists: most leaves are
    // their own path, and the name they were read with is kept as it is.
    let path = if stack.is_empty() {
        name
    } else {
        let mut path = String::new();
        for (parent, _) in stack {
            path.push_str(parent);
            path.push('/');
        }
        path.push_str(&name);
        path
    };
    fields.push((path, value));
    Ok(())
}

/// A pushed message or event.
#[derive(Clone, Debug, PartialEq)]
pub struct PushMessage {
    /// The account's original id (`gh_…`).
    pub to_user_name: String,
    /// The user's OpenID.
    pub from_user_name: OpenId,
    /// When the platform created the message (Unix seconds); stable across retries.
    pub create_time: i64,
    /// The 64-bit message id; events have none.
    pub msg_id: Option<u64>,
    /// What was pushed.
    pub kind: MessageKind,
    fields: Fields,
}

/// The type-specific part of a [`PushMessage`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MessageKind {
    /// `text`.
    Text {
        /// The text.
        content: String,
    },
    /// `image`.
    Image {
        /// The picture's URL.
        pic_url: String,
        /// The media id, for downloading it.
        media_id: String,
    },
    /// `voice`.
    Voice {
        /// The media id.
        media_id: String,
        /// The audio format, e.g. `amr`.
        format: String,
        /// Speech recognition result, when enabled.
        recognition: Option<String>,
    },
    /// `video`.
    Video {
        /// The media id.
        media_id: String,
        /// The thumbnail's media id.
        thumb_media_id: String,
    },
    /// `shortvideo`.
    ShortVideo {
        /// The media id.
        media_id: String,
        /// The thumbnail's media id.
        thumb_media_id: String,
    },
    /// `location` (a location the user sent).
    Location {
        /// `Location_X`.
        latitude: f64,
        /// `Location_Y`.
        longitude: f64,
        /// Map zoom level.
        scale: Option<u32>,
        /// The place's label.
        label: String,
    },
    /// `link`.
    Link {
        /// The title.
        title: String,
        /// The description.
        description: String,
        /// The URL.
        url: String,
    },
    /// `event`.
    Event(Event),
    /// Any other `MsgType`, with every leaf field.
    Unknown {
        /// The `MsgType`.
        msg_type: String,
        /// Every `(path, text)` leaf of the document.
        fields: Vec<(String, String)>,
    },
}

/// An event push (`MsgType` = `event`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `subscribe`. Through a parametric QR code it carries the scene and ticket.
    Subscribe {
        /// The QR scene with the `qrscene_` prefix removed, if the follow came from one.
        scene: Option<String>,
        /// The QR code's ticket.
        ticket: Option<String>,
    },
    /// `unsubscribe`.
    Unsubscribe,
    /// `SCAN`: a follower scanned a parametric QR code.
    Scan {
        /// The QR scene (no prefix).
        scene: String,
        /// The QR code's ticket.
        ticket: Option<String>,
    },
    /// `CLICK`: a menu button.
    Click {
        /// The button's key.
        key: String,
    },
    /// `VIEW`: a menu link.
    View {
        /// The link's URL.
        url: String,
        /// The menu id, when sent.
        menu_id: Option<String>,
    },
    /// `LOCATION`: the periodic location report.
    Location {
        /// Latitude.
        latitude: f64,
        /// Longitude.
        longitude: f64,
        /// Precision.
        precision: f64,
    },
    /// Any other event, with every leaf field.
    Unknown {
        /// The `Event` value.
        event: String,
        /// Every `(path, text)` leaf of the document.
        fields: Vec<(String, String)>,
    },
}

struct Lookup<'a>(&'a Fields);

impl<'a> Lookup<'a> {
    fn opt(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn req(&self, name: &'static str) -> Result<&'a str, PushError> {
        self.opt(name).ok_or(PushError::MissingField(name))
    }

    fn string(&self, name: &'static str) -> Result<String, PushError> {
        self.req(name).map(str::to_owned)
    }

    fn nonempty(&self, name: &str) -> Option<String> {
        self.opt(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str) -> Result<T, PushError> {
        self.req(name)?
            .trim()
            .parse()
            .map_err(|_| PushError::InvalidField(name))
    }

    fn coordinate(&self, name: &'static str) -> Result<f64, PushError> {
        let v: f64 = self.parse(name)?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(PushError::InvalidField(name))
        }
    }
}

impl PushMessage {
    /// Parses a plaintext push document (also the decrypted payload of a safe-mode push).
    ///
    /// # Errors
    ///
    /// [`PushError::BodyTooLarge`] over 64 KiB; [`PushError::Xml`], [`PushError::Utf8`],
    /// [`PushError::DocTypeRejected`], [`PushError::TooDeep`], [`PushError::NotAPush`] for a
    /// bad document; [`PushError::MissingField`] / [`PushError::InvalidField`] for a document
    /// that lacks what its `MsgType` needs.
    pub fn parse(body: &[u8]) -> Result<Self, PushError> {
        let fields = parse_fields(body)?;
        Self::from_fields(fields)
    }

    fn from_fields(fields: Fields) -> Result<Self, PushError> {
        let f = Lookup(&fields);
        let to_user_name = f.string("ToUserName")?;
        let from_user_name = OpenId::parse(f.req("FromUserName")?.trim())
            .map_err(|_| PushError::InvalidField("FromUserName"))?;
        let create_time = f.parse("CreateTime")?;
        let msg_id = match f.nonempty("MsgId") {
            Some(s) => Some(s.parse().map_err(|_| PushError::InvalidField("MsgId"))?),
            None => None,
        };
        let msg_type = f.req("MsgType")?.trim().to_owned();
        let kind = match msg_type.as_str() {
            "text" => MessageKind::Text {
                content: f.string("Content")?,
            },
            "image" => MessageKind::Image {
                pic_url: f.string("PicUrl")?,
                media_id: f.string("MediaId")?,
            },
            "voice" => MessageKind::Voice {
                media_id: f.string("MediaId")?,
                format: f.string("Format")?,
                recognition: f.nonempty("Recognition"),
            },
            "video" => MessageKind::Video {
                media_id: f.string("MediaId")?,
                thumb_media_id: f.string("ThumbMediaId")?,
            },
            "shortvideo" => MessageKind::ShortVideo {
                media_id: f.string("MediaId")?,
                thumb_media_id: f.string("ThumbMediaId")?,
            },
            "location" => MessageKind::Location {
                latitude: f.coordinate("Location_X")?,
                longitude: f.coordinate("Location_Y")?,
                scale: match f.nonempty("Scale") {
                    Some(s) => Some(s.parse().map_err(|_| PushError::InvalidField("Scale"))?),
                    None => None,
                },
                label: f.opt("Label").unwrap_or_default().to_owned(),
            },
            "link" => MessageKind::Link {
                title: f.opt("Title").unwrap_or_default().to_owned(),
                description: f.opt("Description").unwrap_or_default().to_owned(),
                url: f.string("Url")?,
            },
            "event" => MessageKind::Event(parse_event(&f)?),
            _ => MessageKind::Unknown {
                msg_type,
                fields: fields.clone(),
            },
        };
        Ok(Self {
            to_user_name,
            from_user_name,
            create_time,
            msg_id,
            kind,
            fields,
        })
    }

    /// The text of a leaf field by path (`Content`, `ScanCodeInfo/ScanResult`, …), for fields
    /// this crate does not type.
    pub fn field(&self, path: &str) -> Option<&str> {
        Lookup(&self.fields).opt(path)
    }

    /// Every `(path, text)` leaf, in document order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The key to drop duplicate deliveries by: the `MsgId` for messages, `FromUserName` plus
    /// `CreateTime` for events (the platform's own rule; retries keep both stable).
    pub fn dedup_key(&self) -> String {
        match self.msg_id {
            Some(id) => format!("msg:{id}"),
            None => format!("evt:{}:{}", self.from_user_name, self.create_time),
        }
    }
}

fn parse_event(f: &Lookup<'_>) -> Result<Event, PushError> {
    let name = f.req("Event")?.trim();
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    Ok(if is("subscribe") {
        Event::Subscribe {
            scene: f
                .nonempty("EventKey")
                .map(|k| k.strip_prefix("qrscene_").map(str::to_owned).unwrap_or(k)),
            ticket: f.nonempty("Ticket"),
        }
    } else if is("unsubscribe") {
        Event::Unsubscribe
    } else if is("SCAN") {
        Event::Scan {
            scene: f.opt("EventKey").unwrap_or_default().trim().to_owned(),
            ticket: f.nonempty("Ticket"),
        }
    } else if is("CLICK") {
        Event::Click {
            key: f.opt("EventKey").unwrap_or_default().to_owned(),
        }
    } else if is("VIEW") {
        Event::View {
            url: f.opt("EventKey").unwrap_or_default().to_owned(),
            menu_id: f.nonempty("MenuId"),
        }
    } else if is("LOCATION") {
        Event::Location {
            latitude: f.coordinate("Latitude")?,
            longitude: f.coordinate("Longitude")?,
            precision: f.coordinate("Precision")?,
        }
    } else {
        Event::Unknown {
            event: name.to_owned(),
            fields: f.0.clone(),
        }
    })
}

/// The safe-mode envelope `<xml><ToUserName/><Encrypt/></xml>` (compat mode sends the
/// plaintext fields as well; only `Encrypt` is used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedEnvelope {
    /// The account's original id, when present.
    pub to_user_name: Option<String>,
    /// The base64 ciphertext.
    pub encrypt: String,
}

impl EncryptedEnvelope {
    /// Parses the envelope.
    ///
    /// # Errors
    ///
    /// As for [`PushMessage::parse`], and [`PushError::MissingField`] without `Encrypt`.
    pub fn parse(body: &[u8]) -> Result<Self, PushError> {
        let fields = parse_fields(body)?;
        let f = Lookup(&fields);
        Ok(Self {
            to_user_name: f.nonempty("ToUserName"),
            encrypt: f.req("Encrypt")?.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_push() -> &'static str {
        "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n<CreateTime>1409735668</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[abcdteT]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>"
    }

    #[test]
    fn text_message() {
        let m = PushMessage::parse(text_push().as_bytes()).unwrap();
        assert_eq!(m.to_user_name, "gh_10f6c3c3ac5a");
        assert_eq!(m.from_user_name.as_str(), "oyORnuP8q7ou2gfYjqLzSIWZf0rs");
        assert_eq!(m.create_time, 1409735668);
        assert_eq!(m.msg_id, Some(6054768590064713728));
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "abcdteT".into()
            }
        );
        assert_eq!(m.dedup_key(), "msg:6054768590064713728");
        assert_eq!(m.field("Content"), Some("abcdteT"));
    }

    #[test]
    fn escaped_text_and_split_cdata() {
        let xml = "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>a &lt;b&gt; &amp; &#20013; <![CDATA[x]]]]><![CDATA[>y]]></Content><MsgId>1</MsgId></xml>";
        let m = PushMessage::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "a <b> & 中 x]]>y".into()
            }
        );
    }

    #[test]
    fn media_location_link() {
        let base = |body: &str| {
            format!(
                "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1348831860</CreateTime>{body}<MsgId>1234567890123456</MsgId></xml>"
            )
        };
        let m = PushMessage::parse(
            base("<MsgType>image</MsgType><PicUrl>http://p/x</PicUrl><MediaId>m1</MediaId>")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            m.kind,
            MessageKind::Image {
                pic_url: "http://p/x".into(),
                media_id: "m1".into()
            }
        );
        let m = PushMessage::parse(
            base("<MsgType>voice</MsgType><MediaId>m</MediaId><Format>amr</Format><Recognition></Recognition>").as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            m.kind,
            MessageKind::Voice {
                recognition: None,
                ..
            }
        ));
        let m = PushMessage::parse(
            base("<MsgType>video</MsgType><MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId>")
                .as_bytes(),
        )
        .unwrap();
        assert!(matches!(m.kind, MessageKind::Video { .. }));
        let m = PushMessage::parse(
            base("<MsgType>shortvideo</MsgType><MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId>")
                .as_bytes(),
        )
        .unwrap();
        assert!(matches!(m.kind, MessageKind::ShortVideo { .. }));
        let m = PushMessage::parse(
            base("<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label>").as_bytes(),
        )
        .unwrap();
        assert_eq!(
            m.kind,
            MessageKind::Location {
                latitude: 23.134521,
                longitude: 113.358803,
                scale: Some(20),
                label: "位置信息".into()
            }
        );
        let m = PushMessage::parse(
            base("<MsgType>link</MsgType><Title>t</Title><Description>d</Description><Url>u</Url>")
                .as_bytes(),
        )
        .unwrap();
        assert!(matches!(m.kind, MessageKind::Link { .. }));
        assert!(
            PushMessage::parse(
                base("<MsgType>location</MsgType><Location_X>NaN</Location_X><Location_Y>1</Location_Y>").as_bytes()
            )
            .is_err()
        );
    }

    fn event(body: &str) -> PushMessage {
        PushMessage::parse(
            format!(
                "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType>{body}</xml>"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn events() {
        let e = event(
            "<Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>",
        );
        assert_eq!(
            e.kind,
            MessageKind::Event(Event::Subscribe {
                scene: Some("123123".into()),
                ticket: Some("TICKET".into())
            })
        );
        assert_eq!(e.msg_id, None);
        assert_eq!(e.dedup_key(), "evt:o1:123456789");
        let e = event("<Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey>");
        assert_eq!(
            e.kind,
            MessageKind::Event(Event::Subscribe {
                scene: None,
                ticket: None
            })
        );
        let e = event("<Event>unsubscribe</Event>");
        assert_eq!(e.kind, MessageKind::Event(Event::Unsubscribe));
        let e = event("<Event>SCAN</Event><EventKey>SCENE_VALUE</EventKey><Ticket>T</Ticket>");
        assert_eq!(
            e.kind,
            MessageKind::Event(Event::Scan {
                scene: "SCENE_VALUE".into(),
                ticket: Some("T".into())
            })
        );
        let e = event("<Event>CLICK</Event><EventKey>EVENTKEY</EventKey>");
        assert_eq!(
            e.kind,
            MessageKind::Event(Event::Click {
                key: "EVENTKEY".into()
            })
        );
        let e = event("<Event>VIEW</Event><EventKey>www.qq.com</EventKey><MenuId>MENUID</MenuId>");
        assert_eq!(
            e.kind,
            MessageKind::Event(Event::View {
                url: "www.qq.com".into(),
                menu_id: Some("MENUID".into())
            })
        );
        let e = event(
            "<Event>LOCATION</Event><Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision>",
        );
        assert!(matches!(e.kind, MessageKind::Event(Event::Location { .. })));
        let e = event(
            "<Event>scancode_push</Event><EventKey>k</EventKey><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>1</ScanResult></ScanCodeInfo>",
        );
        match e.kind {
            MessageKind::Event(Event::Unknown { event, fields }) => {
                assert_eq!(event, "scancode_push");
                assert!(
                    fields
                        .iter()
                        .any(|(k, v)| k == "ScanCodeInfo/ScanResult" && v == "1")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_type_keeps_fields() {
        let m = PushMessage::parse(b"<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime><MsgType>miniprogrampage</MsgType><Title>x</Title><AppId>wx1</AppId><MsgId>5</MsgId></xml>").unwrap();
        match &m.kind {
            MessageKind::Unknown { msg_type, fields } => {
                assert_eq!(msg_type, "miniprogrampage");
                assert!(fields.iter().any(|(k, v)| k == "AppId" && v == "wx1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_hostile_or_broken_documents() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><xml><Content>&b;</Content></xml>".to_vec(),
                "doctype",
            ),
            (b"<xml><Content>&custom;</Content></xml>".to_vec(), "unknown entity"),
            (b"<notxml></notxml>".to_vec(), "wrong root"),
            (b"<xml></xml><xml></xml>".to_vec(), "two roots"),
            (b"<xml><a></b></xml>".to_vec(), "mismatched"),
            (b"<xml><a>".to_vec(), "unterminated"),
            (b"".to_vec(), "empty"),
            (b"success".to_vec(), "plain text"),
            (b"<xml>\xff</xml>".to_vec(), "bad utf-8"),
            (
                format!("<xml>{}x{}</xml>", "<a>".repeat(20), "</a>".repeat(20)).into_bytes(),
                "deep",
            ),
            (
                format!("<xml><Content>{}</Content></xml>", "a".repeat(MAX_BODY_BYTES)).into_bytes(),
                "large",
            ),
        ];
        for (body, what) in cases {
            assert!(parse_fields(&body).is_err(), "{what} accepted");
        }
        let many = format!("<xml>{}</xml>", "<a/>".repeat(MAX_FIELDS + 1));
        assert!(matches!(
            parse_fields(many.as_bytes()),
            Err(PushError::TooManyFields)
        ));
    }

    #[test]
    fn missing_and_invalid_fields() {
        assert_eq!(
            PushMessage::parse(b"<xml><ToUserName>gh</ToUserName></xml>").unwrap_err(),
            PushError::MissingField("FromUserName")
        );
        assert_eq!(
            PushMessage::parse(b"<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>x</CreateTime></xml>").unwrap_err(),
            PushError::InvalidField("CreateTime")
        );
        assert_eq!(
            PushMessage::parse(
                b"<xml><ToUserName>gh</ToUserName><FromUserName>o o</FromUserName></xml>"
            )
            .unwrap_err(),
            PushError::InvalidField("FromUserName")
        );
    }

    #[test]
    fn envelopes() {
        let e = EncryptedEnvelope::parse(
            b"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>",
        )
        .unwrap();
        assert_eq!(e.to_user_name.as_deref(), Some("gh_10f6c3c3ac5a"));
        assert_eq!(e.encrypt, "abc=");
        // Compat mode: plaintext fields and Encrypt together.
        let compat = format!(
            "{}<Encrypt><![CDATA[zz]]></Encrypt></xml>",
            text_push().trim_end_matches("</xml>")
        );
        assert_eq!(
            EncryptedEnvelope::parse(compat.as_bytes()).unwrap().encrypt,
            "zz"
        );
        PushMessage::parse(compat.as_bytes()).unwrap();
        assert_eq!(
            EncryptedEnvelope::parse(b"<xml><ToUserName>gh</ToUserName></xml>").unwrap_err(),
            PushError::MissingField("Encrypt")
        );
    }
}
