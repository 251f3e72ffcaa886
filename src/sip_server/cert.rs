//! Client certificates as SIP credentials: `[[sip.accounts]] certificate_subject` names the
//! certificate that stands in for an account's digest password over TLS.
//!
//! The endpoint hands the server the leaf certificate of a client whose chain it verified
//! against `[sip] tls_client_ca_file`; this module reads its subject and subjectAltNames
//! (x509-parser) and says which account, if any, it is. Two forms of `certificate_subject`:
//!
//! - **A distinguished name** (it contains `=`), written as RFC 4514 strings are, and as
//!   `openssl x509 -noout -subject -nameopt RFC2253 -in cert.pem` prints it: the most specific
//!   RDN first, `,` between RDNs, `+` inside a multi-valued RDN, `\` escapes
//!   (`CN=console1,OU=Switchboard,O=Nordvik AB,C=SE`). Attribute types by their short names
//!   (`CN`, `C`, `L`, `ST`, `O`, `OU`, `STREET`, `DC`, `UID`, `emailAddress`, `serialNumber`,
//!   `SN`, `GN`, `title`) or dotted OIDs, in any case. The whole subject must match: the same
//!   RDNs in the same order; values compare ignoring case and runs of spaces (as X.520's
//!   caseIgnoreMatch does); spaces around `,`, `+` and `=` do not count.
//! - **Anything else** (no `=`) is a subjectAltName: it matches a `URI` entry exactly
//!   (`sip:console1@nordvik.se`, ignoring the case of the scheme) or a `DNS` entry ignoring
//!   case (`console1.nordvik.se`). Desk phones' and SBCs' certificates often name the device
//!   only there.
//!
//! Pure: no I/O; bounded by the certificate the TLS layer already took (a few KiB).

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a `certificate_subject` or a certificate cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The configured subject is not a distinguished name as RFC 4514 writes it.
    #[error("certificate_subject {0:?}: {1}")]
    Subject(String, String),
    /// The certificate does not parse.
    #[error("client certificate: {0}")]
    Certificate(String),
}

/// One RDN: its attributes as (type, normalised value), sorted.
type Rdn = Vec<(String, String)>;

/// What a configured `certificate_subject` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMatch {
    /// A whole subject DN, RDNs most specific first (RFC 4514 order).
    Subject(Vec<Rdn>),
    /// A subjectAltName (URI or DNS).
    AltName(String),
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject as an RFC 4514 string (for logs and errors).
    pub subject: String,
    subject_rdns: Vec<Rdn>,
    /// URI and DNS subjectAltNames.
    pub alt_names: Vec<String>,
}

/// Short names of the attribute types, by OID (RFC 4514 §3 and what openssl prints).
const TYPES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "GN"),
    ("2.5.4.12", "title"),
];

/// The canonical (lower-case short name or dotted OID) form of an attribute type.
fn canonical_type(t: &str) -> Option<String> {
    let t = t.trim();
    let lower = t.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "e" | "email" => "emailaddress",
        "s" => "st",
        "givenname" => "gn",
        "surname" => "sn",
        other => other,
    };
    if let Some((_, short)) = TYPES.iter().find(|(oid, short)| short.eq_ignore_ascii_case(alias) || *oid == alias) {
        return Some(short.to_ascii_lowercase());
    }
    let oid = lower.strip_prefix("oid.").unwrap_or(&lower);
    (!oid.is_empty() && oid.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))).then(|| oid.to_string())
}

/// A value as compared: lower case, runs of white space as one space, trimmed.
fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl CertMatch {
    /// Reads a configured `certificate_subject`.
    pub fn parse(s: &str) -> Result<CertMatch, CertError> {
        let bad = |m: &str| CertError::Subject(s.to_string(), m.to_string());
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        if t.len() > 4096 {
            return Err(bad("longer than 4096 bytes"));
        }
        if !t.contains('=') {
            return Ok(CertMatch::AltName(t.to_string()));
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(t, ',') {
            let mut attrs = Vec::new();
            for atv in split_unescaped(&rdn, '+') {
                let (ty, value) = atv.split_once('=').ok_or_else(|| bad(&format!("{:?} is not TYPE=value", atv.trim())))?;
                let ty = canonical_type(ty).ok_or_else(|| bad(&format!("unknown attribute type {:?} (use a short name such as CN, O, OU, C or a dotted OID)", ty.trim())))?;
                let value = unescape(value.trim()).map_err(|m| bad(&m))?;
                if value.is_empty() {
                    return Err(bad(&format!("{ty}= has no value")));
                }
                attrs.push((ty, normalise(&value)));
            }
            attrs.sort();
            rdns.push(attrs);
        }
        Ok(CertMatch::Subject(rdns))
    }

    /// Whether a certificate's holder is the one this names.
    pub fn matches(&self, who: &PeerIdentity) -> bool {
        match self {
            CertMatch::Subject(rdns) => *rdns == who.subject_rdns,
            CertMatch::AltName(name) => who.alt_names.iter().any(|a| alt_name_eq(name, a)),
        }
    }
}

fn alt_name_eq(want: &str, have: &str) -> bool {
    match (want.split_once(':'), have.split_once(':')) {
        // URIs: the scheme in any case, the rest exactly.
        (Some((ws, wr)), Some((hs, hr))) => ws.eq_ignore_ascii_case(hs) && wr == hr,
        // DNS names: any case.
        _ => want.eq_ignore_ascii_case(have),
    }
}

/// Splits at `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            cur.push(c);
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// RFC 4514 §3 escapes: `\` before a special character, or `\XX` hex pairs (UTF-8 bytes).
fn unescape(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        match (b.get(i + 1), b.get(i + 2)) {
            (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (Some(&c), _) => {
                out.push(c);
                i += 2;
            }
            (None, _) => return Err("ends in a lone backslash".into()),
        }
    }
    String::from_utf8(out).map_err(|_| "an escaped value is not UTF-8".to_string())
}

/// RFC 4514 §2.4: escapes a value for the text form.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || (i == 0 && matches!(c, '#' | ' ')) || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads the holder of a certificate (DER).
pub fn identity(der: &[u8]) -> Result<PeerIdentity, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Certificate(e.to_string()))?;
    let mut rdns = Vec::new();
    let mut text = Vec::new();
    // DER lists the RDNs most general first; RFC 4514 writes them the other way round.
    for rdn in cert.subject().iter().collect::<Vec<_>>().into_iter().rev() {
        let mut attrs = Vec::new();
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let short = TYPES.iter().find(|(o, _)| *o == oid).map(|(_, s)| s.to_string());
            let value = match atv.as_str() {
                Ok(s) => s.to_string(),
                // BMPString, TeletexString…: rare in client certificates; by their bytes.
                Err(_) => match std::str::from_utf8(atv.as_slice()) {
                    Ok(s) => s.to_string(),
                    Err(_) => format!("#{}", atv.as_slice().iter().map(|b| format!("{b:02x}")).collect::<String>()),
                },
            };
            parts.push(format!("{}={}", short.clone().unwrap_or_else(|| oid.clone()), escape(&value)));
            attrs.push((short.map(|s| s.to_ascii_lowercase()).unwrap_or(oid), normalise(&value)));
        }
        attrs.sort();
        rdns.push(attrs);
        text.push(parts.join("+"));
    }
    let mut alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => alt_names.push(u.to_string()),
                GeneralName::DNSName(d) => alt_names.push(d.to_string()),
                _ => {}
            }
        }
    }
    Ok(PeerIdentity { subject: text.join(","), subject_rdns: rdns, alt_names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/tls/sip/{name}", env!("CARGO_MANIFEST_DIR"));
        presence_sip::tls::certificates(std::path::Path::new(&path)).unwrap()[0].to_vec()
    }

    #[test]
    fn the_subject_reads_as_openssl_prints_it_and_matches_loosely() {
        let app = identity(&der("app-cert.pem")).unwrap();
        assert_eq!(app.subject, "CN=hub.example.test");
        assert_eq!(app.alt_names, vec!["hub.example.test".to_string()]);
        for ok in ["CN=hub.example.test", "cn = HUB.example.test", "2.5.4.3=hub.example.test", "hub.example.test", "HUB.EXAMPLE.TEST"] {
            assert!(CertMatch::parse(ok).unwrap().matches(&app), "{ok}");
        }
        for no in ["CN=pool.example.test", "CN=hub.example.test,O=Nordvik", "OU=hub.example.test", "pool.example.test", "sip:hub.example.test"] {
            assert!(!CertMatch::parse(no).unwrap().matches(&app), "{no}");
        }
        let pool = identity(&der("pool-cert.pem")).unwrap();
        assert_eq!(pool.subject, "CN=pool.example.test");
    }

    #[test]
    fn a_multi_rdn_subject_is_written_most_specific_first() {
        let m = CertMatch::parse(r"CN=Växel 1,OU=Switchboard\, Stockholm,O=Nordvik AB+L=Solna,C=SE").unwrap();
        let CertMatch::Subject(rdns) = &m else { panic!("{m:?}") };
        assert_eq!(rdns.len(), 4);
        assert_eq!(rdns[0], vec![("cn".to_string(), "växel 1".to_string())]);
        assert_eq!(rdns[1], vec![("ou".to_string(), "switchboard, stockholm".to_string())]);
        assert_eq!(rdns[2], vec![("l".to_string(), "solna".to_string()), ("o".to_string(), "nordvik ab".to_string())]);
        assert_eq!(escape("a,b"), r"a\,b");
        assert_eq!(unescape(r"caf\C3\A9").unwrap(), "café");
    }

    #[test]
    fn bad_subjects_say_what_is_wrong() {
        let e = CertMatch::parse("CN=a,XYZ=b").unwrap_err().to_string();
        assert!(e.contains("unknown attribute type \"XYZ\""), "{e}");
        let e = CertMatch::parse("CN=").unwrap_err().to_string();
        assert!(e.contains("no value"), "{e}");
        assert!(CertMatch::parse("  ").is_err());
        assert!(CertMatch::parse(r"CN=a\").is_err());
        assert!(identity(b"not a certificate").is_err());
    }
}
