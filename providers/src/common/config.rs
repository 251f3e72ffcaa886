//! What provider configs built from shared pieces need: [`NoOtherKeys`], which refuses unknown
//! keys where `#[serde(deny_unknown_fields)]` cannot be used.
//!
//! serde does not combine `deny_unknown_fields` with `#[serde(flatten)]`. A config that takes a
//! shared piece flat (e.g. [`super::microsoft::MicrosoftApp`]) ends with
//! `#[serde(flatten)] _other: NoOtherKeys` instead: the flattened structs before it take their
//! keys, and any key left over fails the parse with serde's own wording (`unknown field `x``),
//! as `deny_unknown_fields` would.

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, Error, IgnoredAny};

/// The keys no field took: none, or the parse fails. Declare it last, flattened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoOtherKeys;

impl<'de> Deserialize<'de> for NoOtherKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NoOtherKeys, D::Error> {
        let other = BTreeMap::<String, IgnoredAny>::deserialize(d)?;
        match other.keys().next() {
            None => Ok(NoOtherKeys),
            Some(key) => Err(D::Error::custom(format_args!("unknown field `{key}`"))),
        }
    }
}

/// A `[[providers]]` entry (TOML, with its `type`) read through the provider table as the hub
/// reads it, and validated; the test fails with the error otherwise.
#[cfg(test)]
pub(crate) fn valid_provider(text: &str) -> crate::ProviderConfig {
    let c: crate::ProviderConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    c.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    c
}

/// What the hub says of a `[[providers]]` entry: the parse error, else the `validate` error,
/// else nothing (`""`).
#[cfg(test)]
pub(crate) fn provider_error(text: &str) -> String {
    match toml::from_str::<crate::ProviderConfig>(text) {
        Err(e) => e.to_string(),
        Ok(c) => c.validate().err().map(|e| e.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Piece {
        #[serde(default)]
        a: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Config {
        name: String,
        #[serde(flatten)]
        piece: Piece,
        #[serde(flatten)]
        _other: NoOtherKeys,
    }

    #[test]
    fn the_pieces_take_their_keys_and_any_other_key_is_refused_by_name() {
        let c: Config = toml::from_str("name = \"n\"\na = \"x\"").expect("known keys");
        assert_eq!((c.name.as_str(), c.piece.a.as_deref()), ("n", Some("x")));
        let c: Config = toml::from_str("name = \"n\"").expect("optional key left out");
        assert_eq!(c.piece.a, None);
        let e = toml::from_str::<Config>("name = \"n\"\nb = 1").expect_err("unknown key").to_string();
        assert!(e.contains("unknown field `b`"), "{e}");
        let e = toml::from_str::<Config>("a = \"x\"").expect_err("required key").to_string();
        assert!(e.contains("missing field `name`"), "{e}");
    }
}
