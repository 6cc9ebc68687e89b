//! Identifiers that are not secret: AppID, OpenID, UnionID, and the `lang` parameter.
//!
//! Each is parsed once at the edge (`parse` / `TryFrom<String>` / `Deserialize`) so that code
//! further in never handles an unchecked string.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::WxError;

/// An official account's (or open-platform app's) AppID.
///
/// Real AppIDs are `wx` followed by 16 lowercase hex digits. Parsing accepts `wx` followed by
/// 1 to 30 ASCII letters or digits, so that hand-written test worlds with readable AppIDs still
/// work; [`AppId::is_canonical`] tells whether a value has the real shape.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    /// Parses an AppID.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] unless the value is `wx` followed by 1 to 30 ASCII letters or
    /// digits.
    pub fn parse(value: impl Into<String>) -> Result<Self, WxError> {
        let value = value.into();
        let ok = value.len() <= 32
            && value.strip_prefix("wx").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if ok {
            Ok(Self(value))
        } else {
            Err(WxError::invalid_input(
                "appid must be `wx` followed by ASCII letters or digits",
            ))
        }
    }

    /// Whether the AppID has the shape the platform issues: `wx` plus 16 lowercase hex digits.
    pub fn is_canonical(&self) -> bool {
        self.0.len() == 18
            && self.0[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The AppID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks the character set shared by OpenIDs and UnionIDs: URL-safe base64-ish, at most 128
/// bytes. Real ones are 28 characters of `[A-Za-z0-9_-]`; the limit is loose on purpose so that
/// a format change on the platform does not break parsing.
fn valid_user_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! user_id_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses the identifier.
            ///
            /// # Errors
            ///
            #[doc = concat!("[`WxError::InvalidInput`] unless the ", $what, " is 1 to 128 bytes of `[A-Za-z0-9_-]`.")]
            pub fn parse(value: impl Into<String>) -> Result<Self, WxError> {
                let value = value.into();
                if valid_user_id(&value) {
                    Ok(Self(value))
                } else {
                    Err(WxError::invalid_input(concat!(
                        $what,
                        " must be 1 to 128 bytes of [A-Za-z0-9_-]"
                    )))
                }
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

user_id_type!(
    /// A user's OpenID: unique per user *per official account*.
    OpenId,
    "openid"
);
user_id_type!(
    /// A user's UnionID: unique per user across the apps bound to one open-platform account.
    UnionId,
    "unionid"
);

macro_rules! string_id_impls {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = WxError;
            fn try_from(value: String) -> Result<Self, WxError> {
                Self::parse(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = WxError;
            fn try_from(value: &str) -> Result<Self, WxError> {
                Self::parse(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = WxError;
            fn from_str(value: &str) -> Result<Self, WxError> {
                Self::parse(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

string_id_impls!(AppId, OpenId, UnionId);

/// The `lang` parameter of the user-information endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lang {
    /// Simplified Chinese, `zh_CN` (the platform's default).
    #[serde(rename = "zh_CN")]
    ZhCn,
    /// Traditional Chinese, `zh_TW`.
    #[serde(rename = "zh_TW")]
    ZhTw,
    /// English, `en`.
    #[serde(rename = "en")]
    En,
}

impl Lang {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh_CN",
            Lang::ZhTw => "zh_TW",
            Lang::En => "en",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appid_accepts_real_and_readable_ids() {
        for ok in [
            "wx2c2769f8efd9abc2",
            "wxb11529c136998cb6",
            "wxDEMO01",
            "wx1",
        ] {
            AppId::parse(ok).unwrap();
        }
        assert!(AppId::parse("wx2c2769f8efd9abc2").unwrap().is_canonical());
        assert!(!AppId::parse("wxDEMO01").unwrap().is_canonical());
        assert!(!AppId::parse("wx2C2769F8EFD9ABC2").unwrap().is_canonical());
    }

    #[test]
    fn appid_rejects_other_shapes() {
        for bad in [
            "",
            "wx",
            "2c2769f8efd9abc2",
            "wx2c27-9f8efd9abc2",
            "wx 1",
            "wx0123456789012345678901234567890",
            "gh_10f6c3c3ac5a",
        ] {
            assert!(AppId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn openid_charset() {
        OpenId::parse("o6_bmjrPTlm6_2sgVt7hMZOPfL2M").unwrap();
        OpenId::parse("oyORnuP8q7ou2gfYjqLzSIWZf0rs").unwrap();
        assert!(OpenId::parse("").is_err());
        assert!(OpenId::parse("a b").is_err());
        assert!(OpenId::parse("a&b=c").is_err());
        assert!(OpenId::parse("x".repeat(129)).is_err());
        UnionId::parse("o6_bmasdasdsad6_2sgVt7hMZOPfL").unwrap();
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let id: OpenId = serde_json::from_str(r#""oABC""#).unwrap();
        assert_eq!(id.as_str(), "oABC");
        assert!(serde_json::from_str::<OpenId>(r#""o ABC""#).is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""oABC""#);
    }

    #[test]
    fn lang_wire_values() {
        assert_eq!(Lang::ZhCn.as_str(), "zh_CN");
        assert_eq!(serde_json::to_string(&Lang::ZhTw).unwrap(), r#""zh_TW""#);
    }
}
