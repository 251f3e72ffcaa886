//! The `ldap` directory source: Active Directory or any LDAP server (OpenLDAP, 389-ds…).
//!
//! Each pass binds with the service account (simple bind over LDAPS or StartTLS; several URLs
//! are tried in order), reads the entries under `base_dn` that match `filter` with the Simple
//! Paged Results control (RFC 2696), asking only for the mapped attributes, and maps them to
//! [`Record`](super::Record)s keyed by a stable identity (`objectGUID` in AD, formatted as the
//! usual GUID text; `entryUUID` in OpenLDAP). Referrals are not followed.
//!
//! Incremental passes read only what changed since the cursor: `uSNChanged` in Active
//! Directory (numbered per domain controller, so the cursor names the server it came from and
//! a cursor from another one means a full pass), `modifyTimestamp` elsewhere. LDAP does not
//! report deletions to such a search: the full pass (`full_pass_secs`) finds them.
//!
//! - [`parse`]: the pure part — entries from the wire, the mapping to records, GUIDs, the
//!   cursor, filters (RFC 4515 escaping).
//! - `runtime`: connecting (fail-over, TLS), binding, the paged search, the cursor's rules.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::SourceError;
use crate::common::defaults::{check_range, u32_, u64_};

pub mod parse;
mod runtime;

pub use runtime::LdapSource;

/// The default `filter`: Active Directory's enabled user accounts (people, not computers; bit 2
/// of `userAccountControl`, "account disabled", clear — `1.2.840.113556.1.4.803` is the
/// bitwise-AND matching rule).
pub const DEFAULT_FILTER: &str = "(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))";

/// `[[directory.sources]] type = "ldap"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Name of the source.
    pub name: String,
    /// The server(s): `ldaps://host[:port]` or `ldap://host[:port]`; several are tried in
    /// order (fail-over). A string or an array of strings.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS (RFC 4513) before binding.
    #[serde(default)]
    pub start_tls: bool,
    /// PEM file of the CA(s) that signed the servers' certificates (LDAPS and StartTLS); the
    /// system's roots when absent.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The service account's DN (or, in AD, its UPN `user@domain`); none: an anonymous bind.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// The service account's password (never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// Where the people are (subtree search).
    pub base_dn: String,
    /// Which entries are people (RFC 4515). The default fits Active Directory: enabled users.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Seconds between incremental passes.
    #[serde(default = "u64_::<{ super::defaults::INTERVAL_SECS }>")]
    pub interval_secs: u64,
    /// Seconds between full passes (which also find deletions).
    #[serde(default = "u64_::<{ super::defaults::FULL_PASS_SECS }>")]
    pub full_pass_secs: u64,
    /// Seconds allowed to connect (TCP and TLS) and for each answer of the server.
    #[serde(default = "u64_::<30>")]
    pub timeout_secs: u64,
    /// Entries per page of the paged search (Active Directory answers at most its
    /// `MaxPageSize`, 1000 by default, whatever is asked).
    #[serde(default = "u32_::<500>")]
    pub page_size: u32,
    /// Most entries one pass accepts; more fails the pass (`limit`) and keeps the directory.
    #[serde(default = "u64_::<1_000_000>")]
    pub max_entries: u64,
    /// How incremental passes find changes: `auto` (`uSNChanged` when the server has it,
    /// as Active Directory does, else `modifyTimestamp`), `usn` or `modify_timestamp`.
    #[serde(default)]
    pub incremental: Incremental,
    /// When an entry lacks the `key` attribute, use its DN (lower-cased) as the key instead of
    /// skipping it. A DN changes on rename or move, which then looks like a removal and a new
    /// person: only for directories without a stable identity attribute.
    #[serde(default)]
    pub key_fallback_dn: bool,
    /// Hub field → LDAP attribute.
    #[serde(default)]
    pub attributes: Attributes,
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("start_tls", &self.start_tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("bind_dn", &self.bind_dn)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("base_dn", &self.base_dn)
            .field("filter", &self.filter)
            .field("interval_secs", &self.interval_secs)
            .field("full_pass_secs", &self.full_pass_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("page_size", &self.page_size)
            .field("max_entries", &self.max_entries)
            .field("incremental", &self.incremental)
            .field("key_fallback_dn", &self.key_fallback_dn)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// `incremental`: how changes are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Incremental {
    /// `uSNChanged` when the server has it (the rootDSE's `highestCommittedUSN`, or every entry
    /// of the full pass carries it), else `modifyTimestamp`.
    #[default]
    Auto,
    /// `uSNChanged` (Active Directory).
    Usn,
    /// `modifyTimestamp` (one-second resolution: entries changed in the last second of a pass
    /// are read again by the next).
    ModifyTimestamp,
}

/// `[directory.sources.attributes]`: hub field → LDAP attribute. An empty string leaves the
/// field unmapped. The defaults fit Active Directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attributes {
    /// The stable identity (`objectGUID`; OpenLDAP: `entryUUID`). Binary 16-byte values are
    /// formatted as GUIDs in AD's byte order.
    pub key: String,
    /// The hub id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Given name (used when there is no display name).
    pub first_name: String,
    /// Surname (used when there is no display name).
    pub last_name: String,
    /// E-mail.
    pub email: String,
    /// Sign-in name (the e-mail when there is none).
    pub upn: String,
    /// Mobile number.
    pub mobile: String,
    /// Work number.
    pub phone: String,
    /// Internal extension.
    pub extension: String,
    /// Job title.
    pub title: String,
    /// Department.
    pub department: String,
    /// SIP address.
    pub sip_uri: String,
    /// Entra object id.
    pub entra_id: String,
}

impl Default for Attributes {
    fn default() -> Attributes {
        let s = String::from;
        Attributes {
            key: s("objectGUID"),
            id: s("sAMAccountName"),
            name: s("displayName"),
            first_name: s("givenName"),
            last_name: s("sn"),
            email: s("mail"),
            upn: s("userPrincipalName"),
            mobile: s("mobile"),
            phone: s("telephoneNumber"),
            extension: s("ipPhone"),
            title: s("title"),
            department: s("department"),
            sip_uri: s("msRTCSIP-PrimaryUserAddress"),
            entra_id: s("msDS-ExternalDirectoryObjectId"),
        }
    }
}

impl Attributes {
    /// Each field with its attribute (empty: unmapped).
    pub fn fields(&self) -> [(&'static str, &str); 14] {
        [
            ("key", &self.key),
            ("id", &self.id),
            ("name", &self.name),
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("email", &self.email),
            ("upn", &self.upn),
            ("mobile", &self.mobile),
            ("phone", &self.phone),
            ("extension", &self.extension),
            ("title", &self.title),
            ("department", &self.department),
            ("sip_uri", &self.sip_uri),
            ("entra_id", &self.entra_id),
        ]
    }
}

fn default_filter() -> String {
    DEFAULT_FILTER.into()
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d).map_err(|_| serde::de::Error::custom("url must be a string or an array of strings"))? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl LdapConfig {
    /// Whether any connection will use TLS (an `ldaps://` URL, or StartTLS).
    pub fn uses_tls(&self) -> bool {
        self.start_tls || self.url.iter().any(|u| is_ldaps(u))
    }

    /// Checks the settings without connecting (the CA file is read).
    pub fn validate(&self) -> Result<(), SourceError> {
        let config = |m: String| SourceError::Config(m);
        if self.url.is_empty() {
            return Err(config("url: give at least one ldap:// or ldaps:// URL".into()));
        }
        if self.url.len() > 16 {
            return Err(config("url: at most 16 servers".into()));
        }
        for u in &self.url {
            check_url(u).map_err(|e| config(format!("url {u:?}: {e}")))?;
            if self.start_tls && is_ldaps(u) {
                return Err(config(format!("url {u:?}: start_tls is for ldap:// URLs; ldaps:// is TLS already")));
            }
        }
        if self.tls_ca_file.is_some() && !self.uses_tls() {
            return Err(config("tls_ca_file needs an ldaps:// URL or start_tls = true".into()));
        }
        if let Some(path) = &self.tls_ca_file {
            runtime::read_ca_file(path)?;
        }
        match (&self.bind_dn, &self.password) {
            (None, None) => {}
            (Some(dn), Some(pw)) => {
                if dn.trim().is_empty() {
                    return Err(config("bind_dn must not be empty".into()));
                }
                // A simple bind with an empty password is an "unauthenticated bind" (RFC 4513
                // 5.1.2): many servers accept it without checking anything.
                if pw.is_empty() {
                    return Err(config("password must not be empty".into()));
                }
            }
            _ => return Err(config("bind_dn and password go together".into())),
        }
        if self.base_dn.trim().is_empty() {
            return Err(config("base_dn must not be empty".into()));
        }
        parse::check_filter(&self.filter).map_err(|e| config(format!("filter: {e}")))?;
        check_range("interval_secs", self.interval_secs, 10..=86_400).map_err(config)?;
        check_range("full_pass_secs", self.full_pass_secs, 60..=7 * 86_400).map_err(config)?;
        if self.full_pass_secs < self.interval_secs {
            return Err(config("full_pass_secs must not be shorter than interval_secs".into()));
        }
        check_range("timeout_secs", self.timeout_secs, 1..=600).map_err(config)?;
        check_range("page_size", self.page_size, 1..=10_000).map_err(config)?;
        check_range("max_entries", self.max_entries, 1..=10_000_000).map_err(config)?;
        for (field, attr) in self.attributes.fields() {
            if !attr.is_empty() && !parse::is_attribute_name(attr) {
                return Err(config(format!("attributes.{field}: {attr:?} is not an LDAP attribute name")));
            }
        }
        if self.attributes.key.is_empty() {
            return Err(config("attributes.key must name the stable identity attribute (objectGUID, entryUUID…)".into()));
        }
        if self.attributes.name.is_empty() && (self.attributes.first_name.is_empty() || self.attributes.last_name.is_empty()) {
            return Err(config("attributes.name (or first_name and last_name) must be mapped".into()));
        }
        Ok(())
    }
}

fn is_ldaps(url: &str) -> bool {
    url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("ldaps://"))
}

/// `ldap://host[:port][/]` or `ldaps://…`: a host, a port that is a number, nothing after.
fn check_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("ldaps://").or_else(|| lower.strip_prefix("ldap://")).ok_or("must start with ldap:// or ldaps://")?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains(['/', '?', '@', ' ']) {
        return Err("only the scheme, host and port (no DN, attributes or user)".into());
    }
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or("unclosed [")?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(p) = port {
        p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("the port must be 1-65535")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<LdapConfig, String> {
        // The base settings, less those `extra` gives (TOML refuses a key twice).
        let base = [("url", "\"ldaps://dc1.example.com\""), ("bind_dn", "\"CN=svc,DC=example,DC=com\""), ("password", "\"pw-123\""), ("base_dn", "\"DC=example,DC=com\"")];
        let mut text = String::from("name = \"ad\"\n");
        for (k, v) in base.iter().filter(|(k, _)| !extra.lines().any(|l| l.starts_with(&format!("{k} =")))) {
            text.push_str(&format!("{k} = {v}\n"));
        }
        let text = format!("{text}{extra}");
        toml::from_str::<LdapConfig>(&text).map_err(|e| e.to_string())
    }

    fn error(extra: &str) -> String {
        match parse(extra) {
            Err(e) => e,
            Ok(c) => c.validate().err().map(|e| e.to_string()).unwrap_or_default(),
        }
    }

    #[test]
    fn the_defaults_fit_active_directory() {
        let c = parse("").unwrap();
        c.validate().unwrap();
        assert_eq!((c.url.len(), c.start_tls, c.page_size, c.max_entries, c.timeout_secs), (1, false, 500, 1_000_000, 30));
        assert_eq!((c.interval_secs, c.full_pass_secs, c.incremental), (300, 3600, Incremental::Auto));
        assert_eq!((c.attributes.key.as_str(), c.attributes.id.as_str(), c.attributes.extension.as_str()), ("objectGUID", "sAMAccountName", "ipPhone"));
        assert_eq!(c.filter, DEFAULT_FILTER);
    }

    #[test]
    fn url_is_a_string_or_a_list_and_attributes_override_one_by_one() {
        let text = "name = \"o\"\nurl = [\"ldap://a:389\", \"ldap://[::1]:3389/\"]\nstart_tls = true\nbase_dn = \"dc=x\"\nincremental = \"modify_timestamp\"\n[attributes]\nkey = \"entryUUID\"\nextension = \"\"\n";
        let c: LdapConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.url, ["ldap://a:389", "ldap://[::1]:3389/"]);
        assert_eq!((c.incremental, c.attributes.key.as_str(), c.attributes.extension.as_str(), c.attributes.name.as_str()), (Incremental::ModifyTimestamp, "entryUUID", "", "displayName"));
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        assert!(error("colour = \"red\"").contains("unknown field `colour`"), "{}", error("colour = 1"));
        assert!(error("[attributes]\nphoto = \"jpegPhoto\"").contains("unknown field `photo`"));
        assert!(error("incremental = \"dirsync\"").contains("unknown variant"));
        assert!(parse("url = 5").unwrap_err().contains("url must be a string or an array of strings"));
        let e = |s| error(s);
        assert!(e("start_tls = true").contains("start_tls is for ldap:// URLs"), "{}", e("start_tls = true"));
        assert_eq!(error("").as_str(), "");
        let cases = [
            ("url = []", "url: give at least one"),
            ("url = \"http://dc1\"", "must start with ldap:// or ldaps://"),
            ("url = \"ldap://dc1:0\"", "the port must be 1-65535"),
            ("url = \"ldap://dc1/dc=x??sub\"", "only the scheme, host and port"),
            ("url = \"ldap://\"", "no host"),
            ("url = \"ldap://dc1\"\ntls_ca_file = \"/x.pem\"", "tls_ca_file needs an ldaps:// URL or start_tls = true"),
            ("tls_ca_file = \"/nonexistent/ca.pem\"", "tls_ca_file"),
            ("password = \"\"", "password must not be empty"),
            ("base_dn = \" \"", "base_dn must not be empty"),
            ("filter = \"(&(objectClass=user)\"", "filter"),
            ("interval_secs = 5", "interval_secs must be 10-86400"),
            ("full_pass_secs = 600\ninterval_secs = 900", "full_pass_secs must not be shorter than interval_secs"),
            ("timeout_secs = 0", "timeout_secs must be 1-600"),
            ("page_size = 0", "page_size must be 1-10000"),
            ("max_entries = 0", "max_entries must be 1-10000000"),
            ("[attributes]\nmobile = \"mobile)(x=*\"", "attributes.mobile"),
            ("[attributes]\nkey = \"\"", "attributes.key must name"),
            ("[attributes]\nname = \"\"\nlast_name = \"\"", "attributes.name (or first_name and last_name)"),
        ];
        for (extra, want) in cases {
            let got = e(extra);
            assert!(got.contains(want), "{extra}: {got}");
            assert!(got.starts_with("configuration: ") || got.contains("TOML") || got.contains("unknown"), "{got}");
        }
        let c: LdapConfig = toml::from_str("name = \"x\"\nurl = \"ldap://a\"\nbind_dn = \"cn=a\"\nbase_dn = \"dc=x\"").unwrap();
        assert_eq!(c.validate().unwrap_err().to_string(), "configuration: bind_dn and password go together");
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let c = parse("").unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("pw-123") && d.contains("password: Some(\"…\")"), "{d}");
    }
}
