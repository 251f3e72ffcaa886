//! Microsoft Graph change notifications with resource data: decryption (and, for the simulator
//! and tests, encryption) of `encryptedContent` — pure, bounded, never panics on input.
//!
//! A subscription created with `includeResourceData: true` carries our certificate
//! (`encryptionCertificate`, base64 DER, public key only) and our id for it
//! (`encryptionCertificateId`). Each notification then holds
//! `encryptedContent = {data, dataSignature, dataKey, encryptionCertificateId,
//! encryptionCertificateThumbprint}` (learn.microsoft.com/graph/changenotifications-for-presence;
//! learn.microsoft.com/graph/change-notifications-with-resource-data, "Decrypting resource data
//! from change notifications"; learn.microsoft.com/graph/api/resources/changenotificationencryptedcontent):
//!
//! 1. `encryptionCertificateId` names the certificate (we hold one: [`NotificationKey`]); the
//!    thumbprint is the SHA-1 of the certificate's DER in hex ([`thumbprint`]).
//! 2. `dataKey` is a single-use symmetric key encrypted with our public key by
//!    `RSA/ECB/OAEPWithSHA1AndMGF1Padding` (RSA-OAEP, SHA-1, MGF1-SHA-1); we decrypt it with
//!    our private key. It is 32 bytes (AES-256).
//! 3. `dataSignature` is HMAC-SHA256 with that key over the base64-decoded `data` bytes (the
//!    ciphertext); it is checked, in constant time, before anything is decrypted.
//! 4. `data` is AES-256-CBC with PKCS7 padding, IV = the first 16 bytes of the key; the
//!    plaintext is the resource as JSON (for presence `{"@odata.type":"#microsoft.graph.presence",
//!    "id":…,"availability":…,"activity":…}`, see [`super::parse::parse_presence`]).
//!
//! Besides [`NotificationKey`] (load a PKCS#8 key and its certificate, decrypt) there are the
//! PEM and certificate helpers it needs — [`pem_blocks`], [`certificate_spki`] (a minimal,
//! bounds-checked DER walker), [`thumbprint`] — and [`encrypt`], the sender's side, used by the
//! Graph simulator and the tests.

use std::fmt;

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey, AES_256,
};
use aws_lc_rs::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1,
};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::parse::EncryptedContent;

/// Longest `encryptedContent.data` accepted, in base64 characters (1 MiB).
pub const MAX_DATA_BASE64: usize = 1024 * 1024;
/// Longest `encryptedContent.dataKey` accepted, in base64 characters (a 4,096-bit RSA block is
/// 684 characters).
pub const MAX_DATA_KEY_BASE64: usize = 1024;
/// Longest `encryptedContent.dataSignature` accepted, in base64 characters (an HMAC-SHA256 tag
/// is 44 characters).
pub const MAX_SIGNATURE_BASE64: usize = 256;
/// Longest `encryptionCertificateId` (Graph allows up to 128 characters).
pub const MAX_CERTIFICATE_ID: usize = 128;
/// Smallest RSA key Graph accepts for `encryptionCertificate`, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA key Graph accepts for `encryptionCertificate`, in bits.
pub const MAX_RSA_BITS: usize = 4096;
/// Length of the symmetric key (AES-256).
pub const SYMMETRIC_KEY_LEN: usize = 32;
/// Length of the AES-CBC IV: the first bytes of the symmetric key.
const IV_LEN: usize = 16;
/// Longest received certificate id or thumbprint quoted in an error.
const MAX_QUOTED: usize = 128;
/// Longest PEM input read, in bytes (a certificate chain is a few KiB).
const MAX_PEM: usize = 1024 * 1024;

/// Standard base64, padding optional (Graph pads; a missing `=` is not worth a rejection).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why loading a key or decrypting (or encrypting) a notification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The notification names a certificate other than ours (`encryptionCertificateId`).
    #[error("wrong certificate id {got:?} (ours is {ours:?})")]
    WrongCertificateId {
        /// The id received (bounded to 128 bytes).
        got: String,
        /// Our id.
        ours: String,
    },
    /// The notification's `encryptionCertificateThumbprint` is not our certificate's.
    #[error("wrong certificate thumbprint {got:?} (ours is {ours})")]
    WrongThumbprint {
        /// The thumbprint received (bounded to 128 bytes).
        got: String,
        /// Ours (uppercase hex SHA-1).
        ours: String,
    },
    /// A field is not valid base64.
    #[error("{0} is not base64")]
    NotBase64(&'static str),
    /// A field is longer than its limit.
    #[error("{field} is too large: {len} bytes (at most {max})")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `dataKey` does not decrypt with our private key (RSA-OAEP-SHA1), or the result is not
    /// a 32-byte key: another key was used, or the value was altered.
    #[error("bad key: dataKey does not decrypt to an AES-256 key with our private key")]
    BadDataKey,
    /// `dataSignature` is not the HMAC-SHA256 of `data`: altered, or not from Graph.
    #[error("signature mismatch: dataSignature is not the HMAC-SHA256 of data")]
    SignatureMismatch,
    /// `data` passed the signature check but is not AES-256-CBC/PKCS7 (bad length or padding).
    #[error("data does not decrypt (AES-256-CBC, PKCS7): bad length or padding")]
    BadCiphertext,
    /// The private key could not be used (not PKCS#8 RSA, wrong size…).
    #[error("bad key: {0}")]
    BadKey(String),
    /// The certificate could not be used (not PEM/DER X.509, not RSA, wrong size…).
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// The private key is not the certificate's.
    #[error("bad key: the private key does not match the certificate's public key")]
    KeyMismatch,
    /// Our certificate id is unusable (empty, longer than 128 characters, control characters).
    #[error("bad certificate id: {0}")]
    BadCertificateId(&'static str),
    /// Encryption failed (the sender's side).
    #[error("encryption failed: {0}")]
    Encryption(&'static str),
}

// ---------------------------------------------------------------------------------------------
// PEM and certificates

/// The DER contents of every `-----BEGIN {label}-----` … `-----END {label}-----` block of `pem`,
/// in order. Blocks whose body is not base64 (e.g. an encrypted key with `Proc-Type` headers)
/// or that are not closed are skipped; other text around the blocks is ignored. At most 1 MiB of
/// input is read.
pub fn pem_blocks(pem: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in prefix(pem, MAX_PEM).lines() {
        let line = line.trim();
        match &mut body {
            None if line == begin => body = Some(String::new()),
            None => {}
            Some(b) if line == end => {
                if let Ok(der) = LENIENT_BASE64.decode(b.as_bytes()) {
                    if !der.is_empty() {
                        out.push(der);
                    }
                }
                body = None;
            }
            Some(_) if line.starts_with("-----") => body = None,
            Some(b) => b.extend(line.chars().filter(|c| !c.is_whitespace())),
        }
    }
    out
}

/// One DER element: its tag, its contents, and the whole encoding (tag and length included).
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
}

/// Reads one DER element from the start of `input`; returns it and what follows. Only
/// single-byte tags and definite lengths of up to four bytes; `None` when anything is out of
/// bounds.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers: not used by the certificate fields we walk
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None; // indefinite length (BER only) or absurdly long
        }
        let (bytes, after) = (rest.get(..n)?, rest.get(n..)?);
        rest = after;
        bytes.iter().try_fold(0usize, |acc, &b| acc.checked_mul(256)?.checked_add(usize::from(b)))?
    };
    let contents = rest.get(..len)?;
    let after = rest.get(len..)?;
    let header = input.len().checked_sub(rest.len())?;
    let whole = input.get(..header.checked_add(len)?)?;
    Some((Tlv { tag, contents, whole }, after))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed

/// The `SubjectPublicKeyInfo` (its whole DER encoding) of an X.509 certificate in DER:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber
/// INTEGER, signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE, subject SEQUENCE,
/// subjectPublicKeyInfo SEQUENCE, … }, … }` (RFC 5280 §4.1). `None` when the bytes are not
/// shaped like that; never panics.
pub fn certificate_spki(cert_der: &[u8]) -> Option<&[u8]> {
    let (cert, trailing) = read_tlv(cert_der)?;
    if cert.tag != SEQUENCE || !trailing.is_empty() {
        return None;
    }
    let (tbs, _) = read_tlv(cert.contents)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let (mut field, mut rest) = read_tlv(tbs.contents)?;
    if field.tag == VERSION {
        (field, rest) = read_tlv(rest)?;
    }
    if field.tag != INTEGER {
        return None; // serialNumber
    }
    // signature, issuer, validity, subject: four SEQUENCEs to skip.
    for _ in 0..4 {
        let (f, r) = read_tlv(rest)?;
        if f.tag != SEQUENCE {
            return None;
        }
        rest = r;
    }
    let (spki, _) = read_tlv(rest)?;
    (spki.tag == SEQUENCE).then_some(spki.whole)
}

/// The certificate's thumbprint as Graph shows it in `encryptionCertificateThumbprint`: the
/// SHA-1 of its DER, 40 uppercase hex digits (compare case-insensitively).
pub fn thumbprint(cert_der: &[u8]) -> String {
    use fmt::Write as _;
    digest(&SHA1_FOR_LEGACY_USE_ONLY, cert_der).as_ref().iter().fold(String::with_capacity(40), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn bounded(s: &str, max: usize) -> String {
    prefix(s, max).to_string()
}

fn check_certificate_id(id: &str) -> Result<(), CryptoError> {
    if id.trim().is_empty() {
        Err(CryptoError::BadCertificateId("empty"))
    } else if id.chars().count() > MAX_CERTIFICATE_ID {
        Err(CryptoError::BadCertificateId("longer than 128 characters"))
    } else if id.chars().any(char::is_control) {
        Err(CryptoError::BadCertificateId("control character"))
    } else {
        Ok(())
    }
}

/// The RSA public key of a DER `SubjectPublicKeyInfo`, 2,048–4,096 bits.
fn rsa_public_key(spki_der: &[u8]) -> Result<PublicEncryptingKey, CryptoError> {
    let key = PublicEncryptingKey::from_der(spki_der)
        .map_err(|e| CryptoError::BadCertificate(format!("not an RSA public key ({e})")))?;
    let bits = key.key_size_bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(CryptoError::BadCertificate(format!("RSA key of {bits} bits; Graph needs 2048-4096")));
    }
    Ok(key)
}

fn decode(field: &'static str, value: &str, max: usize) -> Result<Vec<u8>, CryptoError> {
    let v = value.trim();
    if v.len() > max {
        return Err(CryptoError::TooLarge { field, len: v.len(), max });
    }
    LENIENT_BASE64.decode(v.as_bytes()).map_err(|_| CryptoError::NotBase64(field))
}

/// Best-effort wipe of key material before it is dropped.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    let _ = std::hint::black_box(bytes);
}

// ---------------------------------------------------------------------------------------------
// The receiving side

/// Our certificate and its private key: decrypts the `encryptedContent` of notifications of
/// subscriptions created with [`NotificationKey::certificate_base64`] and [`NotificationKey::id`].
pub struct NotificationKey {
    id: String,
    key: OaepPrivateDecryptingKey,
    cert_der: Vec<u8>,
    thumbprint: String,
}

impl fmt::Debug for NotificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationKey")
            .field("id", &self.id)
            .field("thumbprint", &self.thumbprint)
            .field("bits", &self.key.key_size_bits())
            .finish_non_exhaustive()
    }
}

impl NotificationKey {
    /// Loads the key pair: `private_key_pem` holds an unencrypted PKCS#8 `PRIVATE KEY` block
    /// (RSA, 2,048–4,096 bits, as Graph requires), `certificate_pem` the certificate (the first
    /// `CERTIFICATE` block), whose public key must be the private key's. `certificate_id` is
    /// our name for the certificate (`encryptionCertificateId`, 1–128 characters).
    pub fn from_pem(private_key_pem: &str, certificate_pem: &str, certificate_id: &str) -> Result<NotificationKey, CryptoError> {
        check_certificate_id(certificate_id)?;
        let Some(pkcs8) = pem_blocks(private_key_pem, "PRIVATE KEY").into_iter().next() else {
            let hint = if private_key_pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
                "a PKCS#1 \"RSA PRIVATE KEY\"; convert it with `openssl pkcs8 -topk8 -nocrypt`"
            } else if private_key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                "an encrypted key; decrypt it with `openssl pkcs8 -nocrypt` (or `openssl pkey`)"
            } else {
                "no \"PRIVATE KEY\" PEM block"
            };
            return Err(CryptoError::BadKey(format!("expected a PKCS#8 \"PRIVATE KEY\" PEM block, found {hint}")));
        };
        let private =
            PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|e| CryptoError::BadKey(format!("not a PKCS#8 RSA private key ({e})")))?;
        let bits = private.key_size_bits();
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(CryptoError::BadKey(format!("RSA key of {bits} bits; Graph needs 2048-4096")));
        }
        let cert_der = pem_blocks(certificate_pem, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or_else(|| CryptoError::BadCertificate("no \"CERTIFICATE\" PEM block".into()))?;
        let spki = certificate_spki(&cert_der).ok_or_else(|| CryptoError::BadCertificate("not an X.509 certificate".into()))?;
        let cert_key = rsa_public_key(spki)?;
        // Both encodings come from aws-lc, so equal keys give equal bytes.
        let ours = private.public_key().as_der().map_err(|_| CryptoError::BadKey("public key not encodable".into()))?;
        let theirs = cert_key.as_der().map_err(|_| CryptoError::BadCertificate("public key not encodable".into()))?;
        if ours.as_ref() != theirs.as_ref() {
            return Err(CryptoError::KeyMismatch);
        }
        let key = OaepPrivateDecryptingKey::new(private).map_err(|_| CryptoError::BadKey("not usable for RSA-OAEP".into()))?;
        Ok(NotificationKey { id: certificate_id.to_string(), key, thumbprint: thumbprint(&cert_der), cert_der })
    }

    /// The certificate's DER in base64: the subscription's `encryptionCertificate`.
    pub fn certificate_base64(&self) -> String {
        STANDARD.encode(&self.cert_der)
    }

    /// Our certificate id: the subscription's `encryptionCertificateId`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The certificate's thumbprint (uppercase hex SHA-1 of its DER).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Decrypts one notification's `encryptedContent`; returns the resource's JSON bytes.
    ///
    /// In order: `encryptionCertificateId` and `encryptionCertificateThumbprint`, when present
    /// and not blank, must be ours (the thumbprint case-insensitively); the sizes are bounded
    /// ([`MAX_DATA_BASE64`], [`MAX_DATA_KEY_BASE64`], [`MAX_SIGNATURE_BASE64`]); `dataKey` is
    /// decrypted (RSA-OAEP-SHA1) to a 32-byte key; `dataSignature` is checked against
    /// HMAC-SHA256 of the `data` bytes in constant time; only then is `data` decrypted
    /// (AES-256-CBC, PKCS7, IV = the key's first 16 bytes).
    pub fn decrypt(&self, c: &EncryptedContent) -> Result<Vec<u8>, CryptoError> {
        if let Some(got) = c.certificate_id.as_deref().filter(|s| !s.trim().is_empty()) {
            if got.trim() != self.id {
                return Err(CryptoError::WrongCertificateId { got: bounded(got, MAX_QUOTED), ours: self.id.clone() });
            }
        }
        if let Some(got) = c.certificate_thumbprint.as_deref().filter(|s| !s.trim().is_empty()) {
            if !got.trim().eq_ignore_ascii_case(&self.thumbprint) {
                return Err(CryptoError::WrongThumbprint { got: bounded(got, MAX_QUOTED), ours: self.thumbprint.clone() });
            }
        }
        let signature = decode("dataSignature", &c.data_signature, MAX_SIGNATURE_BASE64)?;
        let wrapped = decode("dataKey", &c.data_key, MAX_DATA_KEY_BASE64)?;
        let mut data = decode("data", &c.data, MAX_DATA_BASE64)?;

        if wrapped.len() != self.key.key_size_bytes() {
            return Err(CryptoError::BadDataKey);
        }
        let mut buf = vec![0u8; self.key.min_output_size()];
        let mut key = [0u8; SYMMETRIC_KEY_LEN];
        let unwrapped = match self.key.decrypt(&OAEP_SHA1_MGF1SHA1, &wrapped, &mut buf, None) {
            Ok(k) if k.len() == SYMMETRIC_KEY_LEN => {
                key.copy_from_slice(k);
                Ok(())
            }
            _ => Err(CryptoError::BadDataKey),
        };
        wipe(&mut buf);
        unwrapped?;

        let result = open(&key, &mut data, &signature);
        wipe(&mut key);
        result
    }
}

/// Checks the signature, then decrypts `data` in place and returns the plaintext.
fn open(key: &[u8; SYMMETRIC_KEY_LEN], data: &mut Vec<u8>, signature: &[u8]) -> Result<Vec<u8>, CryptoError> {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), data, signature).map_err(|_| CryptoError::SignatureMismatch)?;
    // CBC ciphertext is one or more whole blocks (written without `is_multiple_of`, which
    // is newer than the workspace's rust-version, 1.85).
    if data.is_empty() || data.len() / IV_LEN * IV_LEN != data.len() {
        return Err(CryptoError::BadCiphertext);
    }
    let cipher = UnboundCipherKey::new(&AES_256, key)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(|_| CryptoError::BadCiphertext)?;
    let iv = FixedLength::<IV_LEN>::try_from(&key[..IV_LEN]).map_err(|_| CryptoError::BadCiphertext)?;
    let len = cipher.decrypt(data, DecryptionContext::Iv128(iv)).map_err(|_| CryptoError::BadCiphertext)?.len();
    data.truncate(len);
    Ok(std::mem::take(data))
}

// ---------------------------------------------------------------------------------------------
// The sending side

/// Encrypts `plaintext` as Graph does for a subscriber whose certificate has the public key
/// `spki_der` (DER `SubjectPublicKeyInfo`, e.g. from [`certificate_spki`]): a fresh random
/// 32-byte key; `data` = AES-256-CBC/PKCS7 with IV = the key's first 16 bytes;
/// `dataSignature` = HMAC-SHA256 of the ciphertext bytes; `dataKey` = RSA-OAEP-SHA1 of the
/// key. `certificate_id` and `thumbprint` are copied into the result. The plaintext is bounded
/// so that `data` stays within [`MAX_DATA_BASE64`].
pub fn encrypt(spki_der: &[u8], plaintext: &[u8], certificate_id: &str, thumbprint: &str) -> Result<EncryptedContent, CryptoError> {
    let max_plaintext = MAX_DATA_BASE64 / 4 * 3 - IV_LEN;
    if plaintext.len() > max_plaintext {
        return Err(CryptoError::TooLarge { field: "plaintext", len: plaintext.len(), max: max_plaintext });
    }
    let public = OaepPublicEncryptingKey::new(rsa_public_key(spki_der)?)
        .map_err(|_| CryptoError::BadCertificate("not usable for RSA-OAEP".into()))?;

    let mut key = [0u8; SYMMETRIC_KEY_LEN];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| CryptoError::Encryption("no randomness"))?;
    let sealed = seal(&public, &key, plaintext);
    wipe(&mut key);
    let (data, signature, wrapped) = sealed?;
    Ok(EncryptedContent {
        data: STANDARD.encode(data),
        data_signature: STANDARD.encode(signature),
        data_key: STANDARD.encode(wrapped),
        certificate_id: Some(certificate_id.to_string()),
        certificate_thumbprint: Some(thumbprint.to_string()),
    })
}

/// (ciphertext, HMAC tag, wrapped key) of `plaintext` under `key`.
type Sealed = (Vec<u8>, hmac::Tag, Vec<u8>);

fn seal(public: &OaepPublicEncryptingKey, key: &[u8; SYMMETRIC_KEY_LEN], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
    let cipher = UnboundCipherKey::new(&AES_256, key)
        .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
        .map_err(|_| CryptoError::Encryption("AES key"))?;
    let iv = FixedLength::<IV_LEN>::try_from(&key[..IV_LEN]).map_err(|_| CryptoError::Encryption("IV"))?;
    let mut data = plaintext.to_vec();
    cipher.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv)).map_err(|_| CryptoError::Encryption("AES-256-CBC"))?;
    let signature = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &data);
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let n = public.encrypt(&OAEP_SHA1_MGF1SHA1, key, &mut wrapped, None).map_err(|_| CryptoError::Encryption("RSA-OAEP"))?.len();
    wrapped.truncate(n);
    Ok((data, signature, wrapped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::parse::{parse_notifications, parse_presence};
    use crate::mutate::Xorshift;
    use presence_actors::model::{Activity, Availability};

    const KEY_PEM: &str = include_str!("../../../fixtures/graph/test-notification-key.pem");
    const CERT_PEM: &str = include_str!("../../../fixtures/graph/test-notification-cert.pem");
    const REAL: &[u8] = include_bytes!("../../../fixtures/graph/notification_encrypted_real.json");
    /// `openssl x509 -in fixtures/graph/test-notification-cert.pem -noout -fingerprint -sha1`.
    const FIXTURE_THUMBPRINT: &str = "3B738402E18177028CBBFD1DC0F3D3F27F89A6A5";
    const USER: &str = "5b4c7a62-2f1e-4d3a-9c8b-7e6f5d4c3b2a";

    fn key() -> NotificationKey {
        NotificationKey::from_pem(KEY_PEM, CERT_PEM, "hub-cert-1").expect("fixture key")
    }

    fn cert_der() -> Vec<u8> {
        pem_blocks(CERT_PEM, "CERTIFICATE").remove(0)
    }

    fn presence_plaintext(availability: &str, activity: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "@odata.id": format!("users/{USER}/presence"),
            "@odata.type": "#microsoft.graph.presence",
            "id": USER,
            "availability": availability,
            "activity": activity,
        }))
        .unwrap()
    }

    fn sealed(plain: &[u8]) -> EncryptedContent {
        let der = cert_der();
        encrypt(certificate_spki(&der).unwrap(), plain, "hub-cert-1", &thumbprint(&der)).unwrap()
    }

    /// Flips the bits `mask` of byte `i` of a base64 value (decoded), re-encoded.
    fn flip(b64: &str, i: usize, mask: u8) -> String {
        let mut v = STANDARD.decode(b64).unwrap();
        let n = v.len();
        v[i % n] ^= mask;
        STANDARD.encode(v)
    }

    #[test]
    fn fixture_key_loads_with_the_openssl_thumbprint() {
        let k = key();
        assert_eq!(k.id(), "hub-cert-1");
        assert_eq!(k.thumbprint(), FIXTURE_THUMBPRINT);
        assert_eq!(thumbprint(&cert_der()), FIXTURE_THUMBPRINT);
        assert_eq!(STANDARD.decode(k.certificate_base64()).unwrap(), cert_der());
        let dbg = format!("{k:?}");
        assert!(dbg.contains("hub-cert-1") && dbg.contains("2048") && !dbg.contains("MII"), "{dbg}");
    }

    #[test]
    fn known_answer_openssl_encrypted_notification_decrypts() {
        // Produced by fixtures/graph/make_notification_encrypted_real.sh with the openssl CLI:
        // an implementation independent of `encrypt`.
        let batch = parse_notifications(REAL).unwrap();
        assert!(batch.invalid.is_empty());
        let n = &batch.value[0];
        let c = n.encrypted.as_ref().expect("encryptedContent");
        assert!(c.certificate_thumbprint.as_deref().unwrap().eq_ignore_ascii_case(FIXTURE_THUMBPRINT));
        let plain = key().decrypt(c).unwrap();
        let text = std::str::from_utf8(&plain).unwrap();
        assert!(text.starts_with("{\"@odata.id\":\"users/5b4c7a62"), "{text}");
        let p = parse_presence(&plain).unwrap();
        assert_eq!(p.id, USER);
        assert_eq!(n.user_id.as_deref(), Some(USER));
        assert_eq!(p.availability, Availability::Busy);
        assert_eq!(p.activity, Some(Activity::InAMeeting));
    }

    #[test]
    fn round_trip_then_parse_presence() {
        let k = key();
        for (a, act, want_a, want_act) in [
            ("Busy", "InACall", Availability::Busy, Some(Activity::InACall)),
            ("Available", "Available", Availability::Available, None),
            ("DoNotDisturb", "Presenting", Availability::DoNotDisturb, Some(Activity::Presenting)),
            ("Away", "Away", Availability::Away, None),
        ] {
            let plain = presence_plaintext(a, act);
            let c = sealed(&plain);
            assert_eq!(c.certificate_id.as_deref(), Some("hub-cert-1"));
            assert_eq!(c.certificate_thumbprint.as_deref(), Some(FIXTURE_THUMBPRINT));
            let out = k.decrypt(&c).unwrap();
            assert_eq!(out, plain);
            let p = parse_presence(&out).unwrap();
            assert_eq!((p.id.as_str(), p.availability, p.activity), (USER, want_a, want_act));
        }
        // Every block size: empty, one byte short of a block, exactly a block, longer.
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let c = sealed(&plain);
            assert_eq!(STANDARD.decode(&c.data).unwrap().len(), (len / 16 + 1) * 16);
            assert_eq!(k.decrypt(&c).unwrap(), plain);
        }
        // Each call uses a fresh key.
        let plain = presence_plaintext("Busy", "Busy");
        assert_ne!(sealed(&plain).data_key, sealed(&plain).data_key);
    }

    #[test]
    fn absent_certificate_id_and_thumbprint_are_accepted_and_case_is_ignored() {
        let k = key();
        let plain = presence_plaintext("Busy", "Busy");
        let mut c = sealed(&plain);
        c.certificate_id = None;
        c.certificate_thumbprint = Some(FIXTURE_THUMBPRINT.to_ascii_lowercase());
        assert_eq!(k.decrypt(&c).unwrap(), plain);
        c.certificate_thumbprint = None;
        assert_eq!(k.decrypt(&c).unwrap(), plain);
        c.certificate_id = Some(" ".into());
        assert_eq!(k.decrypt(&c).unwrap(), plain);
        // Unpadded base64 is accepted too.
        c.data = c.data.trim_end_matches('=').to_string();
        assert_eq!(k.decrypt(&c).unwrap(), plain);
    }

    #[test]
    fn wrong_certificate_id_or_thumbprint_is_refused() {
        let k = key();
        let mut c = sealed(&presence_plaintext("Busy", "Busy"));
        c.certificate_id = Some("hub-cert-0".into());
        let e = k.decrypt(&c).unwrap_err();
        assert_eq!(e, CryptoError::WrongCertificateId { got: "hub-cert-0".into(), ours: "hub-cert-1".into() });
        assert!(e.to_string().starts_with("wrong certificate id"), "{e}");
        c.certificate_id = Some("x".repeat(10_000));
        match k.decrypt(&c).unwrap_err() {
            CryptoError::WrongCertificateId { got, .. } => assert_eq!(got.len(), MAX_QUOTED),
            e => panic!("{e:?}"),
        }
        c.certificate_id = Some("hub-cert-1".into());
        c.certificate_thumbprint = Some("07293748CC064953A3052FB978C735FB89E61C3D".into());
        assert!(matches!(k.decrypt(&c), Err(CryptoError::WrongThumbprint { .. })));
    }

    #[test]
    fn tampering_is_detected_and_never_panics() {
        let k = key();
        let c = sealed(&presence_plaintext("Busy", "InAMeeting"));
        let mut rng = Xorshift::default();

        // A flipped bit in data or dataSignature breaks the signature; in dataKey, OAEP refuses
        // the altered block. (field, flips, bytes to pick from, the error.)
        type Field = fn(&mut EncryptedContent) -> &mut String;
        let flips: [(Field, usize, usize, CryptoError); 3] = [
            (|t| &mut t.data, 64, 1 << 16, CryptoError::SignatureMismatch),
            (|t| &mut t.data_signature, 32, 32, CryptoError::SignatureMismatch),
            (|t| &mut t.data_key, 32, 256, CryptoError::BadDataKey),
        ];
        for (field, rounds, bytes, want) in flips {
            for _ in 0..rounds {
                let mut t = c.clone();
                let v = field(&mut t);
                *v = flip(v, rng.below(bytes), 1 << rng.below(8));
                assert_eq!(k.decrypt(&t), Err(want.clone()));
            }
        }
        let mut t = c.clone();
        t.data_signature = STANDARD.encode(&STANDARD.decode(&c.data_signature).unwrap()[..31]);
        assert_eq!(k.decrypt(&t), Err(CryptoError::SignatureMismatch));
        let mut t = c.clone();
        t.data_key = STANDARD.encode([0u8; 255]);
        assert_eq!(k.decrypt(&t), Err(CryptoError::BadDataKey));
        // A dataKey that decrypts, but to something other than 32 bytes.
        let der = cert_der();
        let public = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(certificate_spki(&der).unwrap()).unwrap()).unwrap();
        let mut wrapped = vec![0u8; public.ciphertext_size()];
        let n = public.encrypt(&OAEP_SHA1_MGF1SHA1, &[7u8; 16], &mut wrapped, None).unwrap().len();
        let mut t = c.clone();
        t.data_key = STANDARD.encode(&wrapped[..n]);
        assert_eq!(k.decrypt(&t), Err(CryptoError::BadDataKey));
        // Not base64.
        for field in 0..3 {
            let mut t = c.clone();
            let (slot, name) = match field {
                0 => (&mut t.data, "data"),
                1 => (&mut t.data_signature, "dataSignature"),
                _ => (&mut t.data_key, "dataKey"),
            };
            *slot = "not*base64!".into();
            let e = k.decrypt(&t).unwrap_err();
            assert_eq!(e, CryptoError::NotBase64(name));
            assert_eq!(e.to_string(), format!("{name} is not base64"));
        }
        // Too large: refused before any work.
        let mut t = c.clone();
        t.data = "A".repeat(MAX_DATA_BASE64 + 4);
        assert!(matches!(k.decrypt(&t), Err(CryptoError::TooLarge { field: "data", .. })));
        let mut t = c.clone();
        t.data_key = "A".repeat(MAX_DATA_KEY_BASE64 + 4);
        assert!(matches!(k.decrypt(&t), Err(CryptoError::TooLarge { field: "dataKey", .. })));
        // Random garbage in every field, never a panic.
        for _ in 0..300 {
            let mut t = c.clone();
            let junk = |rng: &mut Xorshift| {
                let n = rng.below(400);
                STANDARD.encode((0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>())
            };
            match rng.below(3) {
                0 => t.data = junk(&mut rng),
                1 => t.data_signature = junk(&mut rng),
                _ => t.data_key = junk(&mut rng),
            }
            assert!(k.decrypt(&t).is_err());
        }
    }

    #[test]
    fn a_valid_signature_over_a_bad_ciphertext_is_reported_as_such() {
        // Signed but not a whole number of blocks, or with bad padding: a sender bug, not tampering.
        let k = key();
        let c = sealed(b"x");
        let mut raw_key = [0u8; 32];
        let mut buf = vec![0u8; k.key.min_output_size()];
        raw_key.copy_from_slice(k.key.decrypt(&OAEP_SHA1_MGF1SHA1, &STANDARD.decode(&c.data_key).unwrap(), &mut buf, None).unwrap());
        let sign = |data: &[u8]| STANDARD.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &raw_key), data));
        // One block that decrypts to sixteen zero bytes: the last byte, 0, is not PKCS7 padding.
        let mut bad_padding = [0u8; 16];
        let iv = FixedLength::<IV_LEN>::try_from(&raw_key[..IV_LEN]).unwrap();
        aws_lc_rs::cipher::EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, &raw_key).unwrap())
            .unwrap()
            .less_safe_encrypt(&mut bad_padding, EncryptionContext::Iv128(iv))
            .unwrap();
        for data in [vec![1u8; 15], vec![], bad_padding.to_vec()] {
            let t = EncryptedContent { data: STANDARD.encode(&data), data_signature: sign(&data), ..c.clone() };
            assert_eq!(k.decrypt(&t), Err(CryptoError::BadCiphertext), "{} bytes", data.len());
        }
    }

    #[test]
    fn certificate_spki_finds_the_fixture_key() {
        let der = cert_der();
        let spki = certificate_spki(&der).unwrap();
        // The SPKI is the public half of the fixture's private key, byte for byte.
        let private = PrivateDecryptingKey::from_pkcs8(&pem_blocks(KEY_PEM, "PRIVATE KEY")[0]).unwrap();
        assert_eq!(spki, private.public_key().as_der().unwrap().as_ref());
        assert_eq!(spki.len(), 294); // RSA-2048 SubjectPublicKeyInfo
        assert!(spki.starts_with(&[0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09])); // SEQUENCE, AlgorithmIdentifier, OID
        assert_eq!(rsa_public_key(spki).unwrap().key_size_bits(), 2048);
        // Not a certificate: the SPKI itself, an empty input, trailing bytes.
        assert_eq!(certificate_spki(spki), None);
        assert_eq!(certificate_spki(&[]), None);
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(certificate_spki(&trailing), None);
    }

    #[test]
    fn certificate_spki_survives_mutations_and_truncations() {
        let der = cert_der();
        let mut rng = Xorshift::new(0x1234_5678_9abc_def1);
        let mut found = 0;
        for round in 0..4000 {
            let mut m = der.clone();
            match round % 4 {
                0 => m.truncate(rng.below(der.len())),
                1 => {
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(m.len());
                        m[i] = rng.next() as u8;
                    }
                }
                2 => {
                    // Length bytes near the start are where walkers go wrong.
                    let i = rng.below(40);
                    m[i] = [0x80, 0x81, 0x84, 0x85, 0xff, 0x00, 0x7f][rng.below(7)];
                }
                _ => {
                    let i = rng.below(m.len());
                    let extra: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                    m.splice(i..i, extra);
                }
            }
            if let Some(s) = certificate_spki(&m) {
                // Whatever is returned lies within the input.
                let (start, end) = (s.as_ptr() as usize, s.as_ptr() as usize + s.len());
                assert!(start >= m.as_ptr() as usize && end <= m.as_ptr() as usize + m.len());
                found += 1;
            }
        }
        assert!(found > 0, "some mutations leave the certificate readable");
        // Pure noise.
        for _ in 0..2000 {
            let n = rng.below(300);
            let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let _ = certificate_spki(&noise);
        }
        // Lengths that overflow or point past the end.
        for bad in [
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x30, 0x88, 1, 0, 0, 0, 0, 0, 0, 0],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x30, 0x03, 0x30, 0x01],
            &[0x3f, 0x01, 0x00],
        ] {
            assert_eq!(certificate_spki(bad), None);
        }
    }

    #[test]
    fn pem_blocks_reads_labelled_blocks_only() {
        assert_eq!(pem_blocks(CERT_PEM, "CERTIFICATE").len(), 1);
        assert_eq!(pem_blocks(CERT_PEM, "PRIVATE KEY").len(), 0);
        assert_eq!(pem_blocks(KEY_PEM, "PRIVATE KEY").len(), 1);
        let two = format!("junk before\r\n{CERT_PEM}\n{CERT_PEM}\ntrailing");
        assert_eq!(pem_blocks(&two, "CERTIFICATE"), vec![cert_der(), cert_der()]);
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nAAAA", "CERTIFICATE").is_empty()); // not closed
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\n*!*\n-----END CERTIFICATE-----", "CERTIFICATE").is_empty());
        let encrypted = "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END PRIVATE KEY-----";
        assert!(pem_blocks(encrypted, "PRIVATE KEY").is_empty());
    }

    #[test]
    fn from_pem_refuses_unusable_inputs() {
        let err = |k: &str, c: &str, id: &str| NotificationKey::from_pem(k, c, id).unwrap_err();
        assert!(matches!(err(CERT_PEM, CERT_PEM, "id"), CryptoError::BadKey(_)));
        let pkcs1 = err("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----", CERT_PEM, "id");
        assert!(pkcs1.to_string().contains("openssl pkcs8"), "{pkcs1}");
        assert!(matches!(err(KEY_PEM, KEY_PEM, "id"), CryptoError::BadCertificate(_)));
        assert_eq!(err(KEY_PEM, CERT_PEM, ""), CryptoError::BadCertificateId("empty"));
        assert!(matches!(err(KEY_PEM, CERT_PEM, &"x".repeat(129)), CryptoError::BadCertificateId(_)));
        assert!(matches!(err(KEY_PEM, CERT_PEM, "a\nb"), CryptoError::BadCertificateId(_)));
        assert!(NotificationKey::from_pem(KEY_PEM, CERT_PEM, &"x".repeat(128)).is_ok());
        // A different key pair: generated here (fast enough at 2048 bits).
        let other = PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let other_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(other.as_der().unwrap().as_ref())
        );
        assert_eq!(err(&other_pem, CERT_PEM, "id"), CryptoError::KeyMismatch);
        // encrypt refuses what is not an RSA SPKI.
        assert!(matches!(encrypt(b"nope", b"x", "id", "t"), Err(CryptoError::BadCertificate(_))));
    }
}
