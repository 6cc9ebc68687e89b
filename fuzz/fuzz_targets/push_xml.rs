//! Push XML parsing: plaintext messages and safe-mode envelopes from arbitrary bytes.
//!
//! Beyond "no panic", a parsed text message must survive a reply round trip: its content,
//! written into a reply with CDATA escaping and parsed again, comes back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wx_api::push::{EncryptedEnvelope, MessageKind, PushMessage, Reply};

fuzz_target!(|data: &[u8]| {
    let _ = EncryptedEnvelope::parse(data);
    if let Ok(message) = PushMessage::parse(data) {
        if let MessageKind::Text { content } = &message.kind {
            let xml = Reply::text_to(&message, 1, content.clone()).to_xml();
            let again = PushMessage::parse(xml.as_bytes());
            // A reply to ourselves: the reply's sender is the original recipient, which need
            // not be a valid OpenID, so only compare when it parses.
            if let Ok(again) = again {
                assert_eq!(
                    again.kind,
                    MessageKind::Text {
                        content: content.clone()
                    }
                );
            }
        }
    }
});
