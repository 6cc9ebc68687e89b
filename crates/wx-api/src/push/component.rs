//! Pushes to a third-party platform's authorization-event URL (授权事件接收URL,
//! `component-platform.md` §2.1, §6.1): the verify ticket every ten minutes and the
//! authorization events.
//!
//! Always safe mode with the component's own token and EncodingAESKey; the outer body has an
//! `AppId` element where account pushes have `ToUserName`, and the plaintext's trailing id is
//! the component's AppID. The reply is the bare string `success`.

use super::message::parse_fields;
use super::{PushCrypto, PushError, PushQuery, required};
use crate::endpoint::component::{AuthorizationCode, ComponentVerifyTicket};
use crate::ids::AppId;

/// What a component push said.
#[derive(Debug)]
pub enum ComponentEvent {
    /// A new `component_verify_ticket`.
    VerifyTicket {
        /// The ticket.
        ticket: ComponentVerifyTicket,
    },
    /// An account authorized the component (`authorized`) or changed what it granted
    /// (`updateauthorized`).
    Authorized {
        /// `true` for `updateauthorized`.
        update: bool,
        /// The account.
        authorizer: AppId,
        /// The code to exchange with `api_query_auth` (≈1 h).
        code: AuthorizationCode,
        /// When the code expires (absolute Unix seconds), when given.
        code_expires_at: Option<i64>,
    },
    /// An account revoked its authorization.
    Unauthorized {
        /// The account.
        authorizer: AppId,
    },
    /// Any other `InfoType` (e.g. `notify_third_fasteregister`): its name only.
    Other {
        /// The `InfoType`.
        info_type: String,
    },
}

/// A checked and decrypted component push.
#[derive(Debug)]
pub struct ComponentPush {
    /// The component it was for (the plaintext's `AppId`, equal to the configured one).
    pub component: AppId,
    /// `CreateTime`.
    pub create_time: i64,
    /// What it says.
    pub event: ComponentEvent,
    /// The decrypted document, for a receiver that keeps unknown kinds.
    pub plaintext: Vec<u8>,
}

impl ComponentPush {
    /// Checks `msg_signature`, decrypts with the component's crypto (`crypto` built with the
    /// component's token, AppID and key, so the trailing id must be the component's) and
    /// parses the event. The envelope's `AppId`, when present, must be the component too.
    ///
    /// # Errors
    /// [`PushError`]: a missing parameter, a bad signature, a key or AppID mismatch, XML that
    /// does not parse, or a known `InfoType` without its fields. The body is never echoed.
    pub fn open(
        crypto: &PushCrypto,
        query: &PushQuery,
        body: &[u8],
    ) -> Result<ComponentPush, PushError> {
        let ts = required(&query.timestamp, "timestamp")?;
        let nonce = required(&query.nonce, "nonce")?;
        let msg_sig = required(&query.msg_signature, "msg_signature")?;
        let outer = parse_fields(body)?;
        let get = |f: &'_ [(String, String)], name: &str| -> Option<String> {
            f.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let encrypt = get(&outer, "Encrypt").ok_or(PushError::MissingField("Encrypt"))?;
        if let Some(a) = get(&outer, "AppId").filter(|a| !a.is_empty())
            && a != crypto.appid.as_str()
        {
            return Err(PushError::AppIdMismatch);
        }
        let (plain, _) = crypto.decrypt(msg_sig, ts, nonce, &encrypt)?;
        let f = parse_fields(&plain)?;
        let component = get(&f, "AppId")
            .filter(|a| a == crypto.appid.as_str())
            .ok_or(PushError::AppIdMismatch)?;
        let component = AppId::parse(component).map_err(|_| PushError::InvalidField("AppId"))?;
        let create_time = get(&f, "CreateTime")
            .ok_or(PushError::MissingField("CreateTime"))?
            .parse::<i64>()
            .map_err(|_| PushError::InvalidField("CreateTime"))?;
        let info_type = get(&f, "InfoType").ok_or(PushError::MissingField("InfoType"))?;
        let authorizer = || {
            get(&f, "AuthorizerAppid")
                .ok_or(PushError::MissingField("AuthorizerAppid"))
                .and_then(|a| {
                    AppId::parse(a).map_err(|_| PushError::InvalidField("AuthorizerAppid"))
                })
        };
        let event = match info_type.as_str() {
            "component_verify_ticket" => ComponentEvent::VerifyTicket {
                ticket: ComponentVerifyTicket::new(
                    get(&f, "ComponentVerifyTicket")
                        .filter(|t| !t.is_empty())
                        .ok_or(PushError::MissingField("ComponentVerifyTicket"))?,
                ),
            },
            "authorized" | "updateauthorized" => ComponentEvent::Authorized {
                update: info_type == "updateauthorized",
                authorizer: authorizer()?,
                code: AuthorizationCode::new(
                    get(&f, "AuthorizationCode")
                        .filter(|c| !c.is_empty())
                        .ok_or(PushError::MissingField("AuthorizationCode"))?,
                ),
                code_expires_at: get(&f, "AuthorizationCodeExpiredTime")
                    .and_then(|t| t.parse().ok()),
            },
            "unauthorized" => ComponentEvent::Unauthorized {
                authorizer: authorizer()?,
            },
            _ => ComponentEvent::Other { info_type },
        };
        Ok(ComponentPush {
            component,
            create_time,
            event,
            plaintext: plain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::crypto::{AesKey, encrypt_with_random};
    use crate::push::signature::msg_signature;
    use crate::secret::{EncodingAesKey, PushToken};

    fn crypto(appid: &str) -> PushCrypto {
        PushCrypto::new(
            PushToken::new("AAAAA"),
            AppId::parse(appid).unwrap(),
            &EncodingAesKey::new("A".repeat(43)),
        )
        .unwrap()
    }

    fn query(ts: &str, nonce: &str, sig: &str) -> PushQuery {
        PushQuery {
            timestamp: Some(ts.into()),
            nonce: Some(nonce.into()),
            msg_signature: Some(sig.into()),
            encrypt_type: Some("aes".into()),
            ..PushQuery::default()
        }
    }

    /// §6.2's [VERIFIED] vector: component crypto, trailer = the component's AppID. The
    /// plaintext is a message (no InfoType), so the decryption and checks pass and parsing
    /// reports the missing field: the crypto path is the one a ticket push takes.
    #[test]
    fn official_vector_decrypts_with_the_component_crypto() {
        let encrypt = "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==";
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        let q = query(
            "1715943329",
            "1590219412",
            "6c12a4205838198b8fa631b3220723bb07f1015c",
        );
        let (plain, _) = crypto("wx134c8103faa5a59e")
            .decrypt(
                q.msg_signature.as_deref().unwrap(),
                "1715943329",
                "1590219412",
                encrypt,
            )
            .unwrap();
        assert_eq!(plain.len(), 292);
        assert!(plain.starts_with(b"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>"));
        // The trailer is the component's: the authorizer's AppID does not open it.
        assert_eq!(
            crypto("wxba5fad812f8e6fb9")
                .decrypt(
                    "6c12a4205838198b8fa631b3220723bb07f1015c",
                    "1715943329",
                    "1590219412",
                    encrypt
                )
                .unwrap_err(),
            PushError::AppIdMismatch
        );
        // No AppId element, no InfoType inside: not a component event.
        let e =
            ComponentPush::open(&crypto("wx134c8103faa5a59e"), &q, body.as_bytes()).unwrap_err();
        assert_eq!(e, PushError::AppIdMismatch);
    }

    fn sealed(appid: &str, plain: &str) -> (PushQuery, String) {
        let key = AesKey::from_encoding_aes_key(&EncodingAesKey::new("A".repeat(43))).unwrap();
        let enc = encrypt_with_random(&key, appid, plain.as_bytes(), b"0123456789abcdef").unwrap();
        let sig = msg_signature(&PushToken::new("AAAAA"), "1504073875", "n1", &enc);
        (
            query("1504073875", "n1", &sig),
            format!(
                "<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
            ),
        )
    }

    /// §2.1's captured ticket push and §6.1's captured `authorized` event.
    #[test]
    fn captured_ticket_and_authorized_event() {
        let c = crypto("wx991ec14508b7d1e7");
        let (q, body) = sealed(
            "wx991ec14508b7d1e7",
            "<xml><AppId><![CDATA[wx991ec14508b7d1e7]]></AppId>\n<CreateTime>1504073875</CreateTime>\n<InfoType><![CDATA[component_verify_ticket]]></InfoType>\n<ComponentVerifyTicket><![CDATA[ticket@@@7CiP6eLB1jG1jG_MEQXDOi3dmWe2uBvOX_y-OsbxlPh9R0Ds9HtwApjNYutja0mtM5i5XdrOIFb4kl_uezA8_Q]]></ComponentVerifyTicket>\n</xml>",
        );
        let p = ComponentPush::open(&c, &q, body.as_bytes()).unwrap();
        assert_eq!(p.create_time, 1504073875);
        let ComponentEvent::VerifyTicket { ticket } = p.event else {
            panic!("a ticket");
        };
        assert!(ticket.expose_secret().starts_with("ticket@@@7CiP6e"));

        let c = crypto("wx6001eeeefe06e0af");
        let (q, body) = sealed(
            "wx6001eeeefe06e0af",
            "<xml><AppId><![CDATA[wx6001eeeefe06e0af]]></AppId><CreateTime>1512552185</CreateTime>\n<InfoType><![CDATA[authorized]]></InfoType><AuthorizerAppid><![CDATA[wxf7d2ddffc117e8de]]></AuthorizerAppid>\n<AuthorizationCode><![CDATA[queryauthcode@@@y-s2Y--e_oDQxH_PNnGOGGq_4Kho1fVlJU58YHqp4TqAcZfQjsAbASpu77TpfUrZKumCl5hMFjlBrh31C30e6Q]]></AuthorizationCode>\n<AuthorizationCodeExpiredTime><![CDATA[1512555785]]></AuthorizationCodeExpiredTime>\n<PreAuthCode><![CDATA[preauthcode@@@cy2CSaTTstMDNRMQK_le2DX9qEUiwEIsqTCpbyrVaf34M49hoE47kCoMM0FogkCN]]></PreAuthCode></xml>",
        );
        let p = ComponentPush::open(&c, &q, body.as_bytes()).unwrap();
        let ComponentEvent::Authorized {
            update,
            authorizer,
            code,
            code_expires_at,
        } = p.event
        else {
            panic!("authorized");
        };
        assert!(!update);
        assert_eq!(authorizer.as_str(), "wxf7d2ddffc117e8de");
        assert!(code.expose_secret().starts_with("queryauthcode@@@"));
        assert_eq!(code_expires_at, Some(1512555785));

        let (q, body) = sealed(
            "wx6001eeeefe06e0af",
            "<xml><AppId>wx6001eeeefe06e0af</AppId><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType><AuthorizerAppid>wxf7d2ddffc117e8de</AuthorizerAppid></xml>",
        );
        assert!(matches!(
            ComponentPush::open(&c, &q, body.as_bytes()).unwrap().event,
            ComponentEvent::Unauthorized { .. }
        ));
        let (q, body) = sealed(
            "wx6001eeeefe06e0af",
            "<xml><AppId>wx6001eeeefe06e0af</AppId><CreateTime>1</CreateTime><InfoType>notify_third_fasteregister</InfoType></xml>",
        );
        assert!(matches!(
            ComponentPush::open(&c, &q, body.as_bytes()).unwrap().event,
            ComponentEvent::Other { info_type } if info_type == "notify_third_fasteregister"
        ));
    }

    #[test]
    fn refusals() {
        let c = crypto("wx6001eeeefe06e0af");
        let plain = "<xml><AppId>wx6001eeeefe06e0af</AppId><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType><AuthorizerAppid>wxf7d2ddffc117e8de</AuthorizerAppid></xml>";
        let (mut q, body) = sealed("wx6001eeeefe06e0af", plain);
        q.msg_signature = Some("0".repeat(40));
        assert_eq!(
            ComponentPush::open(&c, &q, body.as_bytes()).unwrap_err(),
            PushError::SignatureMismatch
        );
        // Another component's push (its trailer) is refused even with a valid signature.
        let (q, body) = sealed("wx991ec14508b7d1e7", plain);
        assert_eq!(
            ComponentPush::open(&c, &q, body.as_bytes()).unwrap_err(),
            PushError::AppIdMismatch
        );
        let (q, _) = sealed("wx6001eeeefe06e0af", plain);
        assert!(ComponentPush::open(&c, &q, b"<xml><AppId>").is_err());
    }
}
