//! Lenient deserializers for the platform's loosely typed JSON.
//!
//! The platform (and old fixtures copied from it) sometimes sends numbers as strings
//! (`"errcode":"40001"`, `"sex":"1"`) and empty strings where a value is absent
//! (`"unionid":""`). These helpers accept both so that a cosmetic change upstream does not
//! become an outage.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

struct I64Visitor;

impl Visitor<'_> for I64Visitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string of digits")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        // Deliberately not echoing `v`: the message ends up in a Decode error.
        v.trim()
            .parse()
            .map_err(|_| E::custom("expected a string of digits"))
    }
}

/// An `i64` sent as a number or as a string of digits.
pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(I64Visitor)
}

/// A non-negative integer (a lifetime, a count) sent as a number or a string of digits.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = lenient_i64(d)?;
    u64::try_from(v).map_err(|_| de::Error::custom("expected a non-negative integer"))
}

struct OptI64Visitor;

impl<'de> Visitor<'de> for OptI64Visitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, a string of digits, an empty string or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        I64Visitor.visit_u64(v).map(Some)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim().is_empty() {
            Ok(None)
        } else {
            I64Visitor.visit_str(v).map(Some)
        }
    }
}

/// An optional `i64`: absent, `null`, `""`, a number or a string of digits.
pub(crate) fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(OptI64Visitor)
}

/// A flag sent as `0`/`1` (or `"0"`/`"1"`); absent means `false`.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(lenient_opt_i64(d)?.is_some_and(|v| v != 0))
}

/// An optional value whose wire form is a string, where `""` means absent.
pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String>,
    T::Error: fmt::Display,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => T::try_from(s).map(Some).map_err(de::Error::custom),
    }
}

/// A string that may be absent or `null`; both become `""`.
pub(crate) fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UnionId;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "lenient_opt_i64")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "flag")]
        f: bool,
        #[serde(default, deserialize_with = "empty_as_none")]
        u: Option<UnionId>,
        #[serde(default, deserialize_with = "string_or_empty")]
        s: String,
    }

    #[test]
    fn lenient_forms() {
        let t: T = serde_json::from_str(r#"{"n":"12","f":"1","u":"","s":null}"#).unwrap();
        assert_eq!(t.n, Some(12));
        assert!(t.f);
        assert!(t.u.is_none());
        assert_eq!(t.s, "");
        let t: T = serde_json::from_str(r#"{"n":null,"f":0,"u":"oX"}"#).unwrap();
        assert_eq!(t.n, None);
        assert!(!t.f);
        assert_eq!(t.u.unwrap().as_str(), "oX");
        let t: T = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(t.n, None);
        assert!(!t.f);
        assert!(serde_json::from_str::<T>(r#"{"n":"x"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"n":true}"#).is_err());
    }
}
