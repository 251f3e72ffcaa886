//! Bounded JSON decoding shared by the providers' pure parsers: one error type for "this body
//! is not what the peer should have sent", a size check before any parsing, fields of the wrong
//! shape read as absent, and arrays that keep at most N items.
//!
//! No I/O and no clock: parsers built on this stay pure and fuzzable.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use presence_actors::model::activity::truncate;

/// Largest body [`from_json`] accepts, in bytes (answers are cut at their call's own limit
/// before they get here; this is the parsers' last line).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Longest serde error message kept (they may quote the input).
const MAX_ERROR_MESSAGE: usize = 200;

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is larger than allowed.
    #[error("body too large: {len} > {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON at all (syntax error, truncated).
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not the expected shape (wrong types).
    #[error("unexpected JSON shape: {0}")]
    Shape(String),
    /// A required field is absent or null.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has an unusable value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// More items than allowed.
    #[error("too many {what}: {n} > {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// A list that must not be empty is empty.
    #[error("no {0}")]
    Empty(&'static str),
}

/// Decodes `body` (at most `max` bytes) as `T`.
pub fn from_json_max<T: DeserializeOwned>(body: &[u8], max: usize) -> Result<T, ParseError> {
    if body.len() > max {
        return Err(ParseError::TooLarge { len: body.len(), max });
    }
    serde_json::from_slice(body).map_err(json_error)
}

/// Decodes `body` (at most [`MAX_BODY`] bytes) as `T`.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    from_json_max(body, MAX_BODY)
}

/// A serde_json error as a [`ParseError`], its message bounded.
pub fn json_error(e: serde_json::Error) -> ParseError {
    let msg = e.to_string();
    let msg = truncate(&msg, MAX_ERROR_MESSAGE).to_string();
    match e.classify() {
        serde_json::error::Category::Data => ParseError::Shape(msg),
        _ => ParseError::NotJson(msg),
    }
}

/// `deserialize_with` for optional fields: a value of the wrong shape becomes `None` instead
/// of failing the whole object.
pub fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// Whole seconds from a JSON number (integer or a non-negative finite float) or a numeric
/// string, as token endpoints send `expires_in` either way.
pub fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            // `as` saturates; the range check keeps negative and non-finite values out.
            (f.is_finite() && f >= 0.0).then_some(f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON array of which at most `N` items are kept; the rest are counted, not stored.
pub struct Capped<T, const N: usize> {
    items: Vec<T>,
    total: usize,
}

impl<T, const N: usize> Capped<T, N> {
    /// The items, or [`ParseError::TooMany`] naming `what` when there were more than `N`.
    pub fn check(self, what: &'static str) -> Result<Vec<T>, ParseError> {
        if self.total > N {
            return Err(ParseError::TooMany { what, n: self.total, max: N });
        }
        Ok(self.items)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Capped<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                let mut total = 0usize;
                loop {
                    let more = if total < N {
                        seq.next_element::<T>()?.map(|x| items.push(x)).is_some()
                    } else {
                        seq.next_element::<IgnoredAny>()?.is_some()
                    };
                    if !more {
                        break;
                    }
                    total += 1;
                }
                Ok(Capped { items, total })
            }
        }
        d.deserialize_seq(V::<T, N>(PhantomData))
    }
}

/// `base` with the keys of `extra` set on it (both JSON objects): a config block with a few
/// settings changed, as the providers' config tests build them.
#[cfg(test)]
pub(crate) fn with_keys(mut base: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().into_iter().flatten() {
        base[k] = x.clone();
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_shape_and_syntax_are_told_apart() {
        assert!(matches!(from_json_max::<Value>(b"[1,2,3]", 3), Err(ParseError::TooLarge { len: 7, max: 3 })));
        assert!(matches!(from_json::<Value>(b"{\"a\":"), Err(ParseError::NotJson(_))));
        assert!(matches!(from_json::<Vec<u8>>(b"{}"), Err(ParseError::Shape(_))));
    }

    #[test]
    fn capped_arrays_count_what_they_drop() {
        let c: Capped<u8, 2> = serde_json::from_str("[1,2,3,4]").unwrap();
        assert_eq!(c.check("numbers"), Err(ParseError::TooMany { what: "numbers", n: 4, max: 2 }));
        let c: Capped<u8, 2> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(c.check("numbers").unwrap(), vec![1, 2]);
    }

    #[test]
    fn seconds_take_numbers_and_numeric_strings() {
        assert_eq!(seconds(&serde_json::json!(3599)), Some(3599));
        assert_eq!(seconds(&serde_json::json!(12.7)), Some(12));
        assert_eq!(seconds(&serde_json::json!("3600")), Some(3600));
        assert_eq!(seconds(&serde_json::json!(-1)), None);
        assert_eq!(seconds(&serde_json::json!("soon")), None);
        assert_eq!(seconds(&serde_json::json!(null)), None);
    }
}
