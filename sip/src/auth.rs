//! SIP digest authentication (RFC 3261 §22, RFC 7616 algorithms as RFC 8760 brings them to SIP):
//! the server side that challenges subscribers and publishers of the hub's SIP presence server,
//! and the client side that answers a peer's challenge (a presence server or PBX that wants the
//! hub's service account to authenticate).
//!
//! Nonces are stateless: `hex(time) . hex(HMAC-SHA256(secret, time ∥ realm))[..32]`, valid for
//! [`NONCE_LIFETIME`]; an expired one gets a fresh challenge with `stale=true` so clients retry
//! without asking the user. Accounts are stored as HA1 values (`MD5(user:realm:password)` and
//! `SHA-256(…)`), never as plain passwords; comparisons are constant-time. Both `qop=auth` and
//! the RFC 2069 form without qop are accepted; `auth-int` and the `-sess` variants are not.

use crate::message::Message;
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{Algorithm, AlgorithmValue, AuthChallenge, AuthResponse, QopOption, Username};
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::Name;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a nonce is accepted.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Digest algorithms the hub speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl DigestAlgorithm {
    fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }

    fn from_ezk(a: &Algorithm) -> Option<DigestAlgorithm> {
        match a {
            Algorithm::AlgorithmValue(AlgorithmValue::MD5) => Some(DigestAlgorithm::Md5),
            Algorithm::AlgorithmValue(AlgorithmValue::SHA256) => Some(DigestAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// HA1 = H(user:realm:password).
pub fn ha1(alg: DigestAlgorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash(&format!("{user}:{realm}:{password}"))
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("malformed credentials")]
    Malformed,
    #[error("wrong realm")]
    Realm,
    #[error("unsupported algorithm or qop")]
    Unsupported,
    #[error("nonce not issued here")]
    BadNonce,
    #[error("nonce expired")]
    Stale,
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    Wrong,
    #[error("digest uri does not match the Request-URI")]
    UriMismatch,
}

/// An account's stored secrets.
#[derive(Debug, Clone)]
pub struct Ha1 {
    pub md5: String,
    pub sha256: String,
}

impl Ha1 {
    pub fn from_password(user: &str, realm: &str, password: &str) -> Ha1 {
        Ha1 {
            md5: ha1(DigestAlgorithm::Md5, user, realm, password),
            sha256: ha1(DigestAlgorithm::Sha256, user, realm, password),
        }
    }
}

/// The server side: issues challenges and checks responses.
#[derive(Clone)]
pub struct DigestServer {
    realm: String,
    secret: [u8; 32],
    algorithms: Vec<DigestAlgorithm>,
}

impl std::fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServer").field("realm", &self.realm).finish_non_exhaustive()
    }
}

impl DigestServer {
    /// A server for `realm` with a random nonce secret, offering SHA-256 then MD5.
    pub fn new(realm: &str) -> DigestServer {
        Self::with_algorithms(realm, &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5])
    }

    /// A server offering `algorithms`, one challenge each, in this order. Clients take the
    /// first they support — and many (sipp, older desk phones) only ever read the first, which
    /// is why MD5 first is the compatible choice.
    pub fn with_algorithms(realm: &str, algorithms: &[DigestAlgorithm]) -> DigestServer {
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&crate::random_u64().to_le_bytes());
        }
        let algorithms = if algorithms.is_empty() { vec![DigestAlgorithm::Md5] } else { algorithms.to_vec() };
        DigestServer { realm: realm.to_owned(), secret, algorithms }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `WWW-Authenticate` values to send with a 401, most preferred first (RFC 8760 §2.4).
    pub fn challenges(&self, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now_secs());
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|a| format!("Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}", self.realm, a.name()))
            .collect()
    }

    fn nonce(&self, t: u64) -> String {
        let mac = hmac_sha256(&self.secret, format!("{t:x}:{}", self.realm).as_bytes());
        format!("{t:x}.{}", &hex(&mac)[..32])
    }

    /// Checks the `Authorization` header of `msg`; `lookup` gives the account's HA1 values.
    /// Returns the authenticated user name.
    pub fn verify(&self, msg: &Message, lookup: impl Fn(&str) -> Option<Ha1>) -> Result<String, AuthError> {
        let method = msg.method().ok_or(AuthError::Malformed)?.to_string();
        let mut last = AuthError::Missing;
        for raw in msg.headers.get_raw(&Name::AUTHORIZATION) {
            match self.verify_one(raw, &method, msg.request_uri().unwrap_or(""), &lookup) {
                Ok(user) => return Ok(user),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_one(&self, raw: &BytesStr, method: &str, request_uri: &str, lookup: &impl Fn(&str) -> Option<Ha1>) -> Result<String, AuthError> {
        let src = bytes::Bytes::copy_from_slice(raw.as_bytes());
        let text = std::str::from_utf8(&src).map_err(|_| AuthError::Malformed)?;
        let AuthResponse::Digest(d) = AuthResponse::parse(&src, text).map_err(|_| AuthError::Malformed)?.1 else {
            return Err(AuthError::Unsupported);
        };
        if d.realm.as_str() != self.realm {
            return Err(AuthError::Realm);
        }
        let alg = DigestAlgorithm::from_ezk(&d.algorithm).filter(|a| self.algorithms.contains(a)).ok_or(AuthError::Unsupported)?;
        if d.userhash {
            return Err(AuthError::Unsupported);
        }
        // The nonce: ours, and fresh.
        let (t, _) = d.nonce.split_once('.').ok_or(AuthError::BadNonce)?;
        let t = u64::from_str_radix(t, 16).map_err(|_| AuthError::BadNonce)?;
        if !ct_eq(self.nonce(t).as_bytes(), d.nonce.as_bytes()) {
            return Err(AuthError::BadNonce);
        }
        if now_secs().saturating_sub(t) > NONCE_LIFETIME.as_secs() || t > now_secs() + 5 {
            return Err(AuthError::Stale);
        }
        // The digest-uri must name the Request-URI (RFC 3261 §22.4). Compared leniently, as
        // deployed servers do: the same text, or the same user part, or no user part at all (a
        // client naming the server it sends to — sipp does so).
        if d.uri.as_str() != request_uri {
            let theirs = crate::message::uri_user(d.uri.as_str());
            let ours = crate::message::uri_user(request_uri);
            let named_server = theirs.is_none() && (d.uri.starts_with("sip:") || d.uri.starts_with("sips:"));
            if !(named_server || (theirs.is_some() && theirs == ours)) {
                return Err(AuthError::UriMismatch);
            }
        }
        let user = match &d.username {
            Username::Username(u) => u.to_string(),
            Username::UsernameNonASCII(_) => return Err(AuthError::Unsupported),
        };
        let stored = lookup(&user).ok_or(AuthError::UnknownUser)?;
        let ha1 = match alg {
            DigestAlgorithm::Md5 => stored.md5,
            DigestAlgorithm::Sha256 => stored.sha256,
        };
        let ha2 = alg.hash(&format!("{method}:{}", d.uri));
        let expected = match &d.qop_response {
            None => alg.hash(&format!("{ha1}:{}:{ha2}", d.nonce)),
            Some(q) if q.qop == QopOption::Auth => {
                alg.hash(&format!("{ha1}:{}:{:08x}:{}:auth:{ha2}", d.nonce, q.nc, q.cnonce))
            }
            Some(_) => return Err(AuthError::Unsupported),
        };
        if ct_eq(expected.as_bytes(), d.response.to_ascii_lowercase().as_bytes()) {
            Ok(user)
        } else {
            Err(AuthError::Wrong)
        }
    }
}

/// The client side: the `Authorization` (or `Proxy-Authorization`) value answering the first
/// digest challenge of a 401/407 this side can meet. `nc` counts uses of the same nonce.
pub fn answer_challenge(resp: &Message, method: &str, uri: &str, user: &str, password: &str, nc: u32) -> Option<(Name, String)> {
    let (name_in, name_out) = if resp.code() == Some(407) {
        (Name::PROXY_AUTHENTICATE, Name::PROXY_AUTHORIZATION)
    } else {
        (Name::WWW_AUTHENTICATE, Name::AUTHORIZATION)
    };
    for raw in resp.headers.get_raw(&name_in) {
        let src = bytes::Bytes::copy_from_slice(raw.as_bytes());
        let Ok(text) = std::str::from_utf8(&src) else { continue };
        let Ok((_, AuthChallenge::Digest(c))) = AuthChallenge::parse(&src, text) else { continue };
        let Some(alg) = DigestAlgorithm::from_ezk(&c.algorithm) else { continue };
        let realm = c.realm.as_str();
        let ha1 = ha1(alg, user, realm, password);
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let opaque = c.opaque.as_ref().map(|o| format!(", opaque=\"{o}\"")).unwrap_or_default();
        let value = if c.qop.contains(&QopOption::Auth) {
            let cnonce = format!("{:016x}", crate::random_u64());
            let response = alg.hash(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", c.nonce));
            format!(
                "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"{opaque}",
                c.nonce,
                alg.name()
            )
        } else if c.qop.is_empty() {
            let response = alg.hash(&format!("{ha1}:{}:{ha2}", c.nonce));
            format!(
                "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}{opaque}",
                c.nonce,
                alg.name()
            )
        } else {
            continue;
        };
        return Some((name_out, value));
    }
    None
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Builder;
    use bytes::Bytes;

    fn request(auth: Option<&str>) -> Message {
        let mut b = Builder::request("SUBSCRIBE", "sip:2001@127.0.0.1")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc")
            .header("From", "<sip:console@127.0.0.1>;tag=1")
            .header("To", "<sip:2001@127.0.0.1>")
            .header("Call-ID", "c1")
            .header("CSeq", "2 SUBSCRIBE");
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        Message::parse(b.build()).unwrap()
    }

    fn challenge_response(server: &DigestServer) -> Message {
        let mut b = Builder::response(401, "Unauthorized")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc")
            .header("From", "<sip:console@127.0.0.1>;tag=1")
            .header("To", "<sip:2001@127.0.0.1>;tag=2")
            .header("Call-ID", "c1")
            .header("CSeq", "1 SUBSCRIBE");
        for c in server.challenges(false) {
            b = b.header("WWW-Authenticate", &c);
        }
        Message::parse(b.build()).unwrap()
    }

    #[test]
    fn client_answer_is_accepted_by_the_server() {
        let server = DigestServer::new("hub");
        let lookup = |u: &str| (u == "console").then(|| Ha1::from_password("console", "hub", "s3cret"));
        let resp = challenge_response(&server);
        let (name, value) = answer_challenge(&resp, "SUBSCRIBE", "sip:2001@127.0.0.1", "console", "s3cret", 1).unwrap();
        assert_eq!(name, Name::AUTHORIZATION);
        assert!(value.contains("algorithm=SHA-256"), "{value}");
        assert_eq!(server.verify(&request(Some(&value)), lookup), Ok("console".into()));
        // MD5 too.
        let md5_only = value.replace("SHA-256", "MD5");
        assert_eq!(server.verify(&request(Some(&md5_only)), lookup), Err(AuthError::Wrong));
        let (_, wrong) = answer_challenge(&resp, "SUBSCRIBE", "sip:2001@127.0.0.1", "console", "guess", 1).unwrap();
        assert_eq!(server.verify(&request(Some(&wrong)), lookup), Err(AuthError::Wrong));
        let (_, other_uri) = answer_challenge(&resp, "SUBSCRIBE", "sip:2002@127.0.0.1", "console", "s3cret", 1).unwrap();
        assert_eq!(server.verify(&request(Some(&other_uri)), lookup), Err(AuthError::UriMismatch));
        assert_eq!(server.verify(&request(None), lookup), Err(AuthError::Missing));
    }

    #[test]
    fn nonces_are_checked() {
        let server = DigestServer::new("hub");
        let other = DigestServer::new("hub");
        let lookup = |_: &str| Some(Ha1::from_password("console", "hub", "s3cret"));
        let (_, foreign) = answer_challenge(&challenge_response(&other), "SUBSCRIBE", "sip:2001@127.0.0.1", "console", "s3cret", 1).unwrap();
        assert_eq!(server.verify(&request(Some(&foreign)), lookup), Err(AuthError::BadNonce));
        // An old nonce of ours is stale.
        let old = server.nonce(now_secs() - 400);
        let ha1 = ha1(DigestAlgorithm::Md5, "console", "hub", "s3cret");
        let ha2 = DigestAlgorithm::Md5.hash("SUBSCRIBE:sip:2001@127.0.0.1");
        let r = DigestAlgorithm::Md5.hash(&format!("{ha1}:{old}:{ha2}"));
        let value = format!("Digest username=\"console\", realm=\"hub\", nonce=\"{old}\", uri=\"sip:2001@127.0.0.1\", response=\"{r}\", algorithm=MD5");
        assert_eq!(server.verify(&request(Some(&value)), lookup), Err(AuthError::Stale));
    }

    #[test]
    fn rfc2069_style_without_qop_is_accepted() {
        let server = DigestServer::new("hub");
        let nonce = server.nonce(now_secs());
        let ha1 = ha1(DigestAlgorithm::Md5, "console", "hub", "s3cret");
        let ha2 = DigestAlgorithm::Md5.hash("SUBSCRIBE:sip:2001@127.0.0.1");
        let r = DigestAlgorithm::Md5.hash(&format!("{ha1}:{nonce}:{ha2}"));
        let value = format!("Digest username=\"console\", realm=\"hub\", nonce=\"{nonce}\", uri=\"sip:2001@127.0.0.1\", response=\"{r}\"");
        let lookup = |_: &str| Some(Ha1::from_password("console", "hub", "s3cret"));
        assert_eq!(server.verify(&request(Some(&value)), lookup), Ok("console".into()));
        let _ = Bytes::new();
    }
}
