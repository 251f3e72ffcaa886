//! HTTPS for the hub's own listener: `[http] tls_cert_file` and `tls_key_file` (PEM) make the
//! API, the web page, the streams and the provider webhooks (`/hooks/…`) speak TLS 1.2/1.3
//! (rustls with the aws-lc-rs provider), so webhook senders that insist on HTTPS — Microsoft
//! Graph, operators' platforms, O2G in webhook mode — can reach the hub without a proxy in front.
//! Behind a TLS-terminating reverse proxy leave both unset and set `[http] public_url`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM block.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The certificate and key do not make a server configuration (e.g. they do not match).
    #[error("certificate and key: {0}")]
    Config(String),
}

/// Largest PEM file read (a certificate chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |message: String| TlsError::File { path: path.display().to_string(), message };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(err(format!("{} bytes; a PEM file over {MAX_PEM_BYTES} bytes is refused", meta.len())));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}

/// The server configuration for a PEM certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1). Offers HTTP/1.1 by ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = read(cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File { path: cert_file.display().to_string(), message: format!("not a PEM certificate chain: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::File { path: cert_file.display().to_string(), message: "no CERTIFICATE block".into() });
    }
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::File { path: key_file.display().to_string(), message: format!("no usable private key: {e}") })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls").join(name)
    }

    #[test]
    fn the_test_certificate_loads() {
        server_config(&fixture("hub-cert.pem"), &fixture("hub-key.pem")).unwrap();
    }

    #[test]
    fn wrong_files_are_refused_with_the_file_named() {
        // The key where the certificate belongs.
        let e = server_config(&fixture("hub-key.pem"), &fixture("hub-key.pem")).unwrap_err().to_string();
        assert!(e.contains("hub-key.pem") && e.contains("CERTIFICATE"), "{e}");
        // The certificate where the key belongs.
        let e = server_config(&fixture("hub-cert.pem"), &fixture("hub-cert.pem")).unwrap_err().to_string();
        assert!(e.contains("private key"), "{e}");
        // A missing file.
        let e = server_config(&fixture("nope.pem"), &fixture("hub-key.pem")).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        // A key that is not the certificate's.
        let e = server_config(&fixture("hub-cert.pem"), &fixture("other-key.pem")).unwrap_err().to_string();
        assert!(e.starts_with("certificate and key"), "{e}");
    }
}
