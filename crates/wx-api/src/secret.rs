//! Secret values: credentials and tokens that must never reach a log line.
//!
//! Every type here comes from one [`secret_type!`](crate::secret_type) macro so that they all
//! behave the same way:
//!
//! - `Debug` prints `Name([redacted])`; there is no `Display`, so `format!("{}", secret)`
//!   does not compile and `{:?}` is safe in logs.
//! - There is no `PartialEq`/`Hash`: comparing a secret is a decision about timing, so the
//!   only comparison offered is [`ct_eq`](AccessToken::ct_eq), which runs in constant time
//!   for values of equal length.
//! - The value is reachable only through `expose_secret()`, whose name makes every use easy
//!   to find in review.
//! - They implement `Deserialize` (token responses and configuration files carry them) but not
//!   `Serialize`: request builders put the exposed value on the wire explicitly, so a secret
//!   cannot end up in some unrelated JSON by accident.

/// Generates a secret newtype over `String` with a redacted `Debug`, no `Display`, constant-time
/// comparison and `Deserialize`.
///
/// ```
/// wx_api::secret_type!(
///     /// A hub-internal signing key.
///     HubKey
/// );
/// wx_api::secret_type!(
///     /// A one-time value: `noclone` leaves out `Clone`.
///     noclone OneTimeCode
/// );
/// let k = HubKey::new("k");
/// assert_eq!(format!("{k:?}"), "HubKey([redacted])");
/// assert!(k.ct_eq(&HubKey::new("k")));
/// ```
#[macro_export]
macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(String);
        $crate::secret_type!(@impls $name);
    };
    ($(#[$meta:meta])* noclone $name:ident) => {
        $(#[$meta])*
        pub struct $name(String);
        $crate::secret_type!(@impls $name);
    };
    (@impls $name:ident) => {
        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// Returns the secret value.
            ///
            /// # Security
            ///
            /// The returned string is the credential itself. Do not log it, put it in an error
            /// message or a metrics label, or compare it with `==` (use `ct_eq`).
            pub fn expose_secret(&self) -> &str {
                &self.0
            }

            /// Consumes the wrapper and returns the secret value.
            ///
            /// # Security
            ///
            /// Same rules as `expose_secret`: the string is the credential itself.
            pub fn into_secret(mut self) -> String {
                ::core::mem::take(&mut self.0)
            }

            /// Compares two secrets in time that does not depend on where they differ.
            ///
            /// Values of different lengths compare unequal at once; the length of a token is
            /// not secret (WeChat tokens have a well-known shape).
            pub fn ct_eq(&self, other: &Self) -> bool {
                use $crate::__private::subtle::ConstantTimeEq as _;
                self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
            }
        }

        // The buffer is wiped when the value goes, so a freed credential
        // does not linger in memory for a core dump or a swap file. Copies
        // taken through `expose_secret` are the caller's to keep short.
        impl Drop for $name {
            fn drop(&mut self) {
                $crate::__private::zeroize::Zeroize::zeroize(&mut self.0);
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <String as $crate::__private::serde::Deserialize>::deserialize(d).map(Self)
            }
        }
    };
}

secret_type!(
    /// An official account's AppSecret (开发者密码), used to fetch global access tokens and
    /// to exchange OAuth codes.
    AppSecret
);
secret_type!(
    /// A global access token (`/cgi-bin/token` or `/cgi-bin/stable_token`).
    AccessToken
);
secret_type!(
    /// A JS-SDK ticket (`getticket?type=jsapi`), used to sign `wx.config`.
    JsapiTicket
);
secret_type!(
    /// A card API ticket (`getticket?type=wx_card`).
    CardTicket
);
secret_type!(
    /// An OAuth authorization code from the redirect.
    ///
    /// Not `Clone`: a code is single use (a second exchange gets `40163`), and a value that
    /// cannot be copied is harder to exchange twice by accident.
    noclone OAuthCode
);
secret_type!(
    /// A web-authorization refresh token (valid 30 days).
    RefreshToken
);
secret_type!(
    /// A user-level (web authorization, `/sns/oauth2/access_token`) access token. It only
    /// reads that user's profile; it is not a global token.
    UserAccessToken
);
secret_type!(
    /// A key that a wxhub client presents to the hub.
    ClientKey
);
secret_type!(
    /// The 43-character EncodingAESKey of safe-mode message push.
    EncodingAesKey
);
secret_type!(
    /// The push Token (令牌) configured for server verification and message signatures.
    PushToken
);

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "s3cr3t-canary-value";

    /// Every secret type, so a type added to the macro list above without being added here
    /// shows up as an obvious gap in review.
    #[test]
    fn debug_is_redacted_for_every_secret_type() {
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{:?}", AppSecret::new(CANARY)),
                "AppSecret([redacted])",
            ),
            (
                format!("{:?}", AccessToken::new(CANARY)),
                "AccessToken([redacted])",
            ),
            (
                format!("{:?}", JsapiTicket::new(CANARY)),
                "JsapiTicket([redacted])",
            ),
            (
                format!("{:?}", CardTicket::new(CANARY)),
                "CardTicket([redacted])",
            ),
            (
                format!("{:?}", OAuthCode::new(CANARY)),
                "OAuthCode([redacted])",
            ),
            (
                format!("{:?}", RefreshToken::new(CANARY)),
                "RefreshToken([redacted])",
            ),
            (
                format!("{:?}", UserAccessToken::new(CANARY)),
                "UserAccessToken([redacted])",
            ),
            (
                format!("{:?}", ClientKey::new(CANARY)),
                "ClientKey([redacted])",
            ),
            (
                format!("{:?}", EncodingAesKey::new(CANARY)),
                "EncodingAesKey([redacted])",
            ),
            (
                format!("{:?}", PushToken::new(CANARY)),
                "PushToken([redacted])",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
            assert!(!got.contains(CANARY));
        }
    }

    #[test]
    fn pretty_debug_inside_a_struct_is_redacted() {
        #[derive(Debug)]
        #[expect(dead_code, reason = "only read through Debug")]
        struct Holder {
            token: AccessToken,
        }
        let s = format!(
            "{:#?}",
            Holder {
                token: AccessToken::new(CANARY)
            }
        );
        assert!(!s.contains(CANARY), "{s}");
        assert!(s.contains("AccessToken([redacted])"));
    }

    #[test]
    fn expose_and_into_return_the_value() {
        let t = RefreshToken::new(CANARY);
        assert_eq!(t.expose_secret(), CANARY);
        assert_eq!(t.into_secret(), CANARY);
    }

    #[test]
    fn ct_eq_compares_values() {
        let a = AccessToken::new("abc");
        assert!(a.ct_eq(&AccessToken::new("abc")));
        assert!(!a.ct_eq(&AccessToken::new("abd")));
        assert!(!a.ct_eq(&AccessToken::new("abcd")));
        assert!(!a.ct_eq(&AccessToken::new("")));
    }

    #[test]
    fn deserializes_from_a_json_string() {
        #[derive(serde::Deserialize)]
        struct Body {
            access_token: AccessToken,
        }
        let b: Body = serde_json::from_str(r#"{"access_token":"tok"}"#).unwrap();
        assert_eq!(b.access_token.expose_secret(), "tok");
    }
}
