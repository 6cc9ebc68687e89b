//! The JS-SDK `wx.config` signature.
//!
//! `signature = hex(sha1("jsapi_ticket=T&noncestr=N&timestamp=S&url=U"))`, lowercase, with the
//! raw values (no URL escaping) and the page URL cut at `#`. Peers have shipped a doubled `&`
//! and an escaped URL here; both produce a signature the page rejects with "invalid
//! signature", so the tests pin the official vectors.

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::error::WxError;
use crate::ids::AppId;
use crate::secret::JsapiTicket;

/// The page URL as it must be signed: everything before the first `#`.
pub fn signing_url(page_url: &str) -> &str {
    page_url
        .split_once('#')
        .map_or(page_url, |(before, _)| before)
}

/// Computes the `wx.config` signature.
///
/// `url` is cut at `#` here, so the full `location.href` may be passed.
pub fn sign(ticket: &JsapiTicket, noncestr: &str, timestamp: &str, url: &str) -> String {
    let mut h = Sha1::new();
    h.update(b"jsapi_ticket=");
    h.update(ticket.expose_secret().as_bytes());
    h.update(b"&noncestr=");
    h.update(noncestr.as_bytes());
    h.update(b"&timestamp=");
    h.update(timestamp.as_bytes());
    h.update(b"&url=");
    h.update(signing_url(url).as_bytes());
    hex::encode(h.finalize())
}

/// The values a page passes to `wx.config` (serialized with the JS-SDK's camel-case names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsSdkConfig {
    /// The account's AppID.
    pub app_id: AppId,
    /// The signed timestamp (Unix seconds).
    pub timestamp: u64,
    /// The signed nonce (`nonceStr` in `wx.config`, `noncestr` in the signed string).
    pub nonce_str: String,
    /// The signature.
    pub signature: String,
}

impl JsSdkConfig {
    /// Signs a page URL with a fresh random nonce.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] if `page_url` is not an absolute `http`/`https` URL.
    pub fn new(
        app_id: AppId,
        ticket: &JsapiTicket,
        page_url: &str,
        timestamp: u64,
    ) -> Result<Self, WxError> {
        Self::with_nonce(app_id, ticket, page_url, timestamp, random_nonce())
    }

    /// Signs a page URL with a given nonce.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] if `page_url` is not an absolute `http`/`https` URL, or the
    /// nonce is empty, longer than 32 bytes or not alphanumeric (a `&` or `=` in it would make
    /// the signed string ambiguous).
    pub fn with_nonce(
        app_id: AppId,
        ticket: &JsapiTicket,
        page_url: &str,
        timestamp: u64,
        nonce_str: String,
    ) -> Result<Self, WxError> {
        let url = signing_url(page_url);
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url::Url::parse(url).is_err() {
            return Err(WxError::invalid_input(
                "the page URL must be an absolute http or https URL",
            ));
        }
        if nonce_str.is_empty()
            || nonce_str.len() > 32
            || !nonce_str.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(WxError::invalid_input(
                "the nonce must be 1 to 32 alphanumeric characters",
            ));
        }
        let signature = sign(ticket, &nonce_str, &timestamp.to_string(), url);
        Ok(Self {
            app_id,
            timestamp,
            nonce_str,
            signature,
        })
    }
}

/// A 16-character alphanumeric nonce from the OS RNG.
pub fn random_nonce() -> String {
    use rand::Rng as _;
    use rand::distributions::Alphanumeric;
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKET: &str =
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";

    #[test]
    fn official_example() {
        let t = JsapiTicket::new(TICKET);
        assert_eq!(
            sign(
                &t,
                "Wm3WZYTPz0wzccnW",
                "1414587457",
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn fragment_is_not_signed() {
        let t = JsapiTicket::new(TICKET);
        assert_eq!(
            sign(
                &t,
                "Wm3WZYTPz0wzccnW",
                "1414587457",
                "http://mp.weixin.qq.com?params=value#/spa/route?x=1"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
        assert_eq!(signing_url("https://a/b#c#d"), "https://a/b");
        assert_eq!(signing_url("https://a/b"), "https://a/b");
    }

    #[test]
    fn config_signs_with_the_given_values() {
        let t = JsapiTicket::new(TICKET);
        let c = JsSdkConfig::with_nonce(
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
            &t,
            "http://mp.weixin.qq.com#x",
            1414587457,
            "Wm3WZYTPz0wzccnW".into(),
        )
        .unwrap();
        assert_eq!(c.signature, "f4d90daf4b3bca3078ab155816175ba34c443a7b");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["nonceStr"], "Wm3WZYTPz0wzccnW");
        assert_eq!(json["appId"], "wx2c2769f8efd9abc2");
        assert_eq!(json["timestamp"], 1414587457);

        let fresh = JsSdkConfig::new(
            AppId::parse("wx2c2769f8efd9abc2").unwrap(),
            &t,
            "https://a.example/p",
            1,
        )
        .unwrap();
        assert_eq!(fresh.nonce_str.len(), 16);
    }

    #[test]
    fn config_rejects_bad_input() {
        let t = JsapiTicket::new(TICKET);
        let id = AppId::parse("wx2c2769f8efd9abc2").unwrap();
        for url in ["", "/relative", "mp.weixin.qq.com", "ftp://x/"] {
            assert!(JsSdkConfig::new(id.clone(), &t, url, 1).is_err(), "{url}");
        }
        for nonce in ["", "a&b", "a=b", &"x".repeat(33)] {
            assert!(
                JsSdkConfig::with_nonce(id.clone(), &t, "https://a/", 1, nonce.to_string())
                    .is_err(),
                "{nonce}"
            );
        }
    }
}
