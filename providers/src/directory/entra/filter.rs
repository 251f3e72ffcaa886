//! The `filter` setting, applied by the source itself.
//!
//! Graph's `/users/delta` takes no `$filter` but `id eq '…'` (Microsoft documents it as the
//! only supported expression; others answer `Request_UnsupportedQuery`), and a delta round must
//! see every user to report the ones that stop matching. So the source reads every user and
//! applies the filter to the properties it selects, on the merged state of each user.
//!
//! The language is a small subset of OData: comparisons `property eq value` and
//! `property ne value`, joined by `and`. Properties: `accountEnabled` (`true`/`false`), and the
//! text properties `displayName`, `givenName`, `surname`, `mail`, `userPrincipalName`,
//! `jobTitle`, `department`, `mobilePhone` (a `'quoted'` value, `''` for a quote inside, or
//! `null`). Text compares without regard to case, as Entra does. Anything else is refused when
//! the configuration is checked.

use super::parse::User;

/// A parsed filter: every clause must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    property: Property,
    negate: bool,
    value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Property {
    AccountEnabled,
    DisplayName,
    GivenName,
    Surname,
    Mail,
    Upn,
    JobTitle,
    Department,
    MobilePhone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Literal {
    Bool(bool),
    Text(String),
    Null,
}

/// Longest filter accepted, in bytes.
const MAX_FILTER: usize = 2048;

impl Filter {
    /// Parses `text`; the error says what is wrong, for the configuration check.
    pub fn parse(text: &str) -> Result<Filter, String> {
        if text.len() > MAX_FILTER {
            return Err(format!("filter is longer than {MAX_FILTER} bytes"));
        }
        let tokens = tokens(text)?;
        let mut clauses = Vec::new();
        let mut it = tokens.into_iter().peekable();
        loop {
            let Some(Token::Word(p)) = it.next() else { return Err("filter: expected a property name".into()) };
            let property = property(&p)?;
            let negate = match it.next() {
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("eq") => false,
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("ne") => true,
                _ => return Err(format!("filter: expected eq or ne after {p} (only eq, ne and and are supported)")),
            };
            let value = match it.next() {
                Some(Token::Text(t)) => Literal::Text(t),
                Some(Token::Word(w)) if w == "true" || w == "false" => Literal::Bool(w == "true"),
                Some(Token::Word(w)) if w == "null" => Literal::Null,
                _ => return Err(format!("filter: expected a value after {p}")),
            };
            match (property, &value) {
                (Property::AccountEnabled, Literal::Text(_)) => return Err("filter: accountEnabled takes true or false".into()),
                (Property::AccountEnabled, _) => {}
                (_, Literal::Bool(_)) => return Err(format!("filter: {p} takes a 'quoted' value or null")),
                _ => {}
            }
            clauses.push(Clause { property, negate, value });
            match it.next() {
                None => break,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => continue,
                Some(_) => return Err("filter: clauses can only be joined with and".into()),
            }
        }
        Ok(Filter { clauses })
    }

    /// Whether `u` matches.
    pub fn matches(&self, u: &User) -> bool {
        self.clauses.iter().all(|c| {
            let text = |v: &Option<String>| match (&c.value, v) {
                (Literal::Null, v) => v.is_none(),
                (Literal::Text(want), Some(v)) => v.eq_ignore_ascii_case(want),
                _ => false,
            };
            let holds = match c.property {
                Property::AccountEnabled => match c.value {
                    Literal::Bool(b) => u.account_enabled == Some(b),
                    _ => u.account_enabled.is_none(),
                },
                Property::DisplayName => text(&u.display_name),
                Property::GivenName => text(&u.given_name),
                Property::Surname => text(&u.surname),
                Property::Mail => text(&u.mail),
                Property::Upn => text(&u.upn),
                Property::JobTitle => text(&u.job_title),
                Property::Department => text(&u.department),
                Property::MobilePhone => text(&u.mobile_phone),
            };
            holds != c.negate
        })
    }
}

fn property(name: &str) -> Result<Property, String> {
    Ok(match name {
        "accountEnabled" => Property::AccountEnabled,
        "displayName" => Property::DisplayName,
        "givenName" => Property::GivenName,
        "surname" => Property::Surname,
        "mail" => Property::Mail,
        "userPrincipalName" => Property::Upn,
        "jobTitle" => Property::JobTitle,
        "department" => Property::Department,
        "mobilePhone" => Property::MobilePhone,
        other => return Err(format!("filter: unknown property {other:?} (accountEnabled, displayName, givenName, surname, mail, userPrincipalName, jobTitle, department, mobilePhone)")),
    })
}

enum Token {
    Word(String),
    Text(String),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(ch) => s.push(ch),
                    None => return Err("filter: a quoted value is not closed".into()),
                }
            }
            out.push(Token::Text(s));
        } else if c.is_ascii_alphabetic() {
            let mut w = String::new();
            while let Some(&ch) = chars.peek().filter(|ch| ch.is_ascii_alphanumeric()) {
                w.push(ch);
                chars.next();
            }
            out.push(Token::Word(w));
        } else {
            return Err(format!("filter: unexpected {c:?} (only eq, ne and and are supported)"));
        }
    }
    if out.is_empty() {
        return Err("filter is empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_hold_on_the_merged_user() {
        let f = Filter::parse("accountEnabled eq true and department ne 'Ex''ternal'").unwrap();
        let mut u = User { account_enabled: Some(true), department: Some("Sales".into()), ..User::default() };
        assert!(f.matches(&u));
        u.department = Some("ex'TERNAL".into());
        assert!(!f.matches(&u), "text compares without case");
        u.department = None;
        assert!(f.matches(&u));
        u.account_enabled = Some(false);
        assert!(!f.matches(&u));
        assert!(Filter::parse("mail eq null").unwrap().matches(&User::default()));
    }

    #[test]
    fn what_is_not_supported_is_refused_with_a_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("startswith(mail,'a')", "unexpected"),
            ("city eq 'Oslo'", "unknown property"),
            ("accountEnabled eq 'true'", "true or false"),
            ("mail eq true", "quoted"),
            ("mail gt 'a'", "eq or ne"),
            ("mail eq 'a' or mail eq 'b'", "and"),
            ("mail eq 'a", "not closed"),
            ("accountEnabled eq", "value"),
        ] {
            let e = Filter::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
