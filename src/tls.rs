//! HTTPS for the hub's own listener: `[http] tls_cert_file` and `tls_key_file` (PEM) make the
//! API, the web page, the streams and the provider webhooks (`/hooks/…`) speak TLS 1.2/1.3
//! (rustls with the aws-lc-rs provider), so webhook senders that insist on HTTPS — Microsoft
//! Graph, operators' platforms, O2G in webhook mode — can reach the hub without a proxy in front.
//! Behind a TLS-terminating reverse proxy leave both unset and set `[http] public_url`.

use std::path::Path;

/// Why the TLS settings cannot be used (the SIP layer's, which reads the same PEM files).
pub use presence_sip::tls::TlsError;

/// The server configuration for a PEM certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1). Offers HTTP/1.1 by ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = presence_sip::tls::server_config(cert_file, key_file, None)?;
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
        assert!(e.starts_with("TLS settings"), "{e}");
    }
}
