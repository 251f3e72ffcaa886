//! Roles, callers, and bearer tokens. Roles: `viewer` < `self` < `operator` < `admin`. Plain
//! data, no HTTP types: the request extractors that use this table are in
//! [`crate::http::auth`]; people who sign in through the organisation's identity provider get a
//! [`Caller`] from [`crate::signin`].
//!
//! Tokens are configured as the SHA-256 of the token, never in clear; a request's token is
//! hashed and looked up, and the comparison of the digests is constant-time. Tokens are long
//! random strings, so an unsalted hash is enough (there is nothing to brute-force in a
//! 256-bit space) — do not use passwords as tokens.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a caller may do. Each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read presence, search, stream.
    Viewer,
    /// A signed-in colleague: reads as a viewer, and sets, changes and clears their own
    /// absences only. Needs a person, so no token has it.
    #[serde(rename = "self")]
    SelfService,
    /// Also set and clear anyone's absences.
    Operator,
    /// Also providers, stats, signal push.
    Admin,
}

impl Role {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::SelfService => "self",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        [Role::Viewer, Role::SelfService, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; roles: viewer, self, operator, admin"))
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A bearer token (`Authorization: Bearer`, or `?access_token=` on a stream).
    Token,
    /// A sign-in session's cookie; the session's public id.
    Session(String),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name, or the signed-in person's name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The signed-in person's directory id (`None` for tokens, and for people the directory
    /// does not know).
    pub person: Option<String>,
    /// Token or session.
    pub via: Via,
}

/// A caller's role is below what the request needs (the API answers 403).
#[derive(Debug, Clone, thiserror::Error)]
#[error("this needs the {} role; the caller has {}", .needed.as_str(), .has.as_str())]
pub struct MissingRole {
    /// The role the request needs.
    pub needed: Role,
    /// The caller's role.
    pub has: Role,
}

impl Caller {
    /// A token's caller.
    pub fn token(name: &str, role: Role) -> Caller {
        Caller { name: name.to_string(), role, person: None, via: Via::Token }
    }

    /// Who the audit log names: the person's id when signed in as a known person, else the
    /// token's or the person's name.
    pub fn actor(&self) -> &str {
        self.person.as_deref().unwrap_or(&self.name)
    }

    /// `token` or `oidc` (for the audit log and `GET /api/me`).
    pub fn via_str(&self) -> &'static str {
        match self.via {
            Via::Token => "token",
            Via::Session(_) => "oidc",
        }
    }

    /// Fails unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), MissingRole> {
        if self.role >= role {
            Ok(())
        } else {
            Err(MissingRole { needed: role, has: self.role })
        }
    }
}

/// The token table: SHA-256 digest → caller.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Caller>,
}

/// Hex SHA-256 of a token (what goes into the config).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// From `(name, role, sha256-hex)` entries; bad digests are skipped (config validation
    /// rejects them first).
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Role, &'a str)>) -> Tokens {
        let by_digest = entries
            .into_iter()
            .filter_map(|(n, r, h)| Some((parse_hex32(h)?, Caller::token(n, r))))
            .collect();
        Tokens { by_digest }
    }

    /// From `(role, token)` entries in clear, each token named after itself (the demo's
    /// documented tokens).
    pub fn in_clear<'a>(entries: impl IntoIterator<Item = (Role, &'a str)>) -> Tokens {
        let by_digest = entries
            .into_iter()
            .map(|(r, t)| (Sha256::digest(t.as_bytes()).into(), Caller::token(t, r)))
            .collect();
        Tokens { by_digest }
    }

    /// Looks a token up.
    pub fn check(&self, token: &str) -> Option<&Caller> {
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Constant-time over the digest of the one candidate the map finds: the map lookup
        // itself works on a hash of a hash, which leaks nothing useful about the token.
        let (k, c) = self.by_digest.get_key_value(&d)?;
        let diff = k.iter().zip(d.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(c)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True if none are configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_roles_are_ordered() {
        let t = Tokens::in_clear([(Role::Viewer, "demo-viewer"), (Role::Operator, "demo-operator")]);
        assert_eq!(t.check("demo-operator").map(|c| c.role), Some(Role::Operator));
        assert!(t.check("demo-operatorx").is_none());
        assert!(t.check("").is_none());
        let op = t.check("demo-operator").unwrap();
        assert_eq!(op.name, "demo-operator");
        assert!(op.require(Role::Viewer).is_ok());
        assert!(op.require(Role::Operator).is_ok());
        assert_eq!(op.require(Role::Admin).unwrap_err().to_string(), "this needs the admin role; the caller has operator");
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let h = hash_token("demo-viewer");
        let configured = Tokens::new([("v", Role::Viewer, h.as_str()), ("bad", Role::Admin, "not-hex")]);
        assert_eq!(configured.len(), 1);
        assert_eq!(configured.check("demo-viewer").map(|c| c.name.as_str()), Some("v"));
    }
}
