//! A user name and password, as every config that logs in to its peer with one declares it:
//! SIP digest (`sip_presence`, `sip_dialog`, `sfb`), Exchange EWS with Basic authentication
//! (`calendar`), an operator's polled endpoint (`operator`'s `[poll]`). Taken flat
//! (`#[serde(flatten)] login: Login`, so the keys stay `username` and `password`), checked
//! once, used one way.
//!
//! It sits in the provider's config itself, not inside another flattened piece: serde cannot
//! flatten a struct that flattens another and still tell the outer config which keys it took.

use serde::Deserialize;

/// `username` and `password`: both or neither.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Login {
    /// User name (the SIP digest user; for Exchange, `DOMAIN\user` or a UPN).
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
}

impl Login {
    /// Both set (the user name not blank), or neither.
    pub fn check(&self) -> Result<(), String> {
        match (&self.username, &self.password) {
            (None, None) => Ok(()),
            (Some(u), Some(_)) if !u.trim().is_empty() => Ok(()),
            (Some(_), Some(_)) => Err("username must not be empty".into()),
            _ => Err("username and password go together".into()),
        }
    }

    /// The user name and password, when both are set and the name is not blank.
    pub fn pair(&self) -> Option<(&str, &str)> {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.trim().is_empty() => Some((u, p)),
            _ => None,
        }
    }

    /// The pair, owned (SIP digest keeps it for the life of the subscriptions).
    pub fn credentials(&self) -> Option<(String, String)> {
        self.pair().map(|(u, p)| (u.to_string(), p.to_string()))
    }

    /// Whether any of the two is set (so another way of signing in must not be).
    pub fn is_set(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }

    /// `req` with HTTP Basic authentication, when the pair is set; else `req` as it is.
    pub fn basic(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.pair() {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_or_neither() {
        let login = |u: Option<&str>, p: Option<&str>| Login { username: u.map(String::from), password: p.map(String::from) };
        assert_eq!((login(None, None).check(), login(None, None).pair()), (Ok(()), None));
        assert_eq!((login(Some("u"), Some("p")).check(), login(Some("u"), Some("p")).pair()), (Ok(()), Some(("u", "p"))));
        assert_eq!(login(Some("u"), None).check().unwrap_err(), "username and password go together");
        assert_eq!(login(None, Some("p")).check().unwrap_err(), "username and password go together");
        assert_eq!(login(Some(" "), Some("p")).check().unwrap_err(), "username must not be empty");
        assert_eq!(login(Some(" "), Some("p")).pair(), None);
        assert!(login(None, Some("p")).is_set() && !login(None, None).is_set());
    }
}
