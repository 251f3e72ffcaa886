//! SIP over TLS settings (RFC 3261 §26.2) from PEM files, for [`crate::endpoint::TlsSettings`]:
//! the client side (the CA the peer's certificate must chain to, the name it must carry, an
//! optional client certificate — a Skype for Business trusted application authenticates with
//! one) and the server side (certificate and key, optionally requiring client certificates
//! from a CA). rustls with the aws-lc-rs provider, TLS 1.2 and 1.3.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS settings cannot be used.
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
    /// The pieces do not make a configuration (e.g. the key is not the certificate's).
    #[error("TLS settings: {0}")]
    Config(String),
    /// Not a DNS name or IP address.
    #[error("{0:?} is not a host name or IP address to check a certificate against")]
    ServerName(String),
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

/// The certificates of a PEM file (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File { path: path.display().to_string(), message: format!("not PEM certificates: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::File { path: path.display().to_string(), message: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File { path: path.display().to_string(), message: format!("no usable private key: {e}") })
}

fn roots(ca_file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(ca_file)? {
        roots.add(c).map_err(|e| TlsError::File { path: ca_file.display().to_string(), message: format!("not a usable CA certificate: {e}") })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration: the server's certificate must chain to a certificate of `ca_file`;
/// with `identity` (certificate chain file, key file) this side presents that certificate.
pub fn client_config(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca_file)?);
    match identity {
        Some((cert, key)) => builder.with_client_auth_cert(certificates(cert)?, private_key(key)?).map_err(|e| TlsError::Config(e.to_string())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A server configuration with this certificate chain and key; with `client_ca`, a client must
/// present a certificate chaining to it.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider()).build().map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certificates(cert)?, private_key(key)?).map_err(|e| TlsError::Config(e.to_string()))
}

/// What a certificate says about itself, for health pages: who, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject as RFC 4514 writes it (`CN=pool01.contoso.com,O=Contoso`).
    pub subject: String,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The subject and expiry of a certificate (DER); `None` when it does not parse.
pub fn certificate_info(der: &[u8]) -> Option<CertificateInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(CertificateInfo { subject: cert.subject().to_string(), not_after: cert.validity().not_after.timestamp() })
}

/// The name a server's certificate must carry (and the SNI sent): a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::endpoint::{Endpoint, EndpointConfig, Peer, TlsSettings, Transport, TxError};
    use crate::message::Builder;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tls/sip")).join(name)
    }

    /// A server endpoint speaking TLS with `cert`, answering every request 200 with the
    /// certificate the client presented (as a header) when there was one.
    async fn server(cert: &str, client_ca: Option<&str>) -> Endpoint {
        let cfg = server_config(&fixture(&format!("{cert}-cert.pem")), &fixture(&format!("{cert}-key.pem")), client_ca.map(fixture).as_deref()).unwrap();
        let (ep, mut rx) = Endpoint::bind(EndpointConfig {
            udp: false,
            tls: TlsSettings { listen: Some(("127.0.0.1:0".parse().unwrap(), Arc::new(cfg))), connect: None },
            ..Default::default()
        })
        .await
        .unwrap();
        let answer = ep.clone();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let presented = if req.peer_certificate.is_some() { "yes" } else { "no" };
                assert_eq!(req.peer.transport, Transport::Tls);
                answer.respond(&req, Builder::response_to(&req.msg, 200, "OK", Some("s1")).header("X-Client-Certificate", presented)).await;
            }
        });
        ep
    }

    async fn client(ca: &str, name: &str, identity: Option<&str>) -> Endpoint {
        let (cert, key) = (identity.map(|i| fixture(&format!("{i}-cert.pem"))), identity.map(|i| fixture(&format!("{i}-key.pem"))));
        let cfg = client_config(&fixture(ca), cert.as_deref().zip(key.as_deref())).unwrap();
        let (ep, _rx) = Endpoint::bind(EndpointConfig { udp: false, tls: TlsSettings { listen: None, connect: Some((Arc::new(cfg), server_name(name).unwrap())) }, ..Default::default() })
            .await
            .unwrap();
        ep
    }

    async fn options(ep: &Endpoint, to: std::net::SocketAddr) -> Result<crate::message::Message, TxError> {
        let (request, branch) = crate::endpoint::tests::options(ep, Transport::Tls);
        ep.request_timeout(Peer { transport: Transport::Tls, addr: to }, &branch, request, Duration::from_secs(5)).await
    }

    /// The fixtures' subjects and expiries, and the server's certificate an endpoint kept
    /// from the connection it opened.
    #[tokio::test]
    async fn certificates_say_who_and_until_when() {
        let info = |name: &str| certificate_info(certificates(&fixture(name)).unwrap()[0].as_ref()).unwrap();
        let expired = info("expired-cert.pem");
        assert_eq!(expired.not_after, 1_609_459_200, "2021-01-01T00:00:00Z");
        let app = info("app-cert.pem");
        assert_eq!(app.subject, "CN=hub.example.test");
        assert!(app.not_after > 4_000_000_000, "valid until 2126: {app:?}");
        assert!(certificate_info(b"not a certificate").is_none());
        let pool = server("pool", None).await;
        let hub = client("ca-cert.pem", "pool.example.test", None).await;
        let peer = Peer { transport: Transport::Tls, addr: pool.tls_addr().unwrap() };
        assert!(hub.peer_certificate(peer).is_none());
        options(&hub, peer.addr).await.unwrap();
        let seen = certificate_info(&hub.peer_certificate(peer).expect("kept")).unwrap();
        assert_eq!(seen.subject, "CN=pool.example.test");
    }

    #[tokio::test]
    async fn a_request_and_its_answer_go_over_tls_checked_against_the_ca_and_the_name() {
        let pool = server("pool", None).await;
        let hub = client("ca-cert.pem", "pool.example.test", None).await;
        let r = options(&hub, pool.tls_addr().unwrap()).await.unwrap();
        assert_eq!(r.code(), Some(200));
        assert_eq!(r.header(&ezk_sip_types::Name::custom("X-Client-Certificate", &["x-client-certificate"])), Some("no"));
        assert!(hub.via(Transport::Tls).0.starts_with("SIP/2.0/TLS "), "{:?}", hub.via(Transport::Tls));
        assert!(hub.contact("hub", Transport::Tls).ends_with(";transport=tls>"));
        // A second request reuses the connection.
        assert_eq!(options(&hub, pool.tls_addr().unwrap()).await.unwrap().code(), Some(200));
        // By IP address, which the certificate also names.
        let by_ip = client("ca-cert.pem", "127.0.0.1", None).await;
        assert_eq!(options(&by_ip, pool.tls_addr().unwrap()).await.unwrap().code(), Some(200));
    }

    #[tokio::test]
    async fn a_wrong_name_an_unknown_ca_and_an_expired_certificate_are_refused_with_the_reason() {
        let pool = server("pool", None).await;
        let wrong_name = client("ca-cert.pem", "other.example.test", None).await;
        let e = options(&wrong_name, pool.tls_addr().unwrap()).await.unwrap_err().to_string();
        assert!(e.contains("TLS handshake") && e.contains("not valid for name \"other.example.test\""), "{e}");
        // The pool's own certificate is no CA: nothing chains to it.
        let unknown_ca = client("pool-cert.pem", "pool.example.test", None).await;
        let e = options(&unknown_ca, pool.tls_addr().unwrap()).await.unwrap_err().to_string();
        assert!(e.contains("TLS handshake") && e.contains("UnknownIssuer"), "{e}");
        let expired = server("expired", None).await;
        let hub = client("ca-cert.pem", "pool.example.test", None).await;
        let e = options(&hub, expired.tls_addr().unwrap()).await.unwrap_err().to_string();
        assert!(e.contains("TLS handshake") && e.contains("certificate expired"), "{e}");
    }

    #[tokio::test]
    async fn a_server_requiring_client_certificates_takes_the_trusted_application_and_no_one_else() {
        let pool = server("pool", Some("ca-cert.pem")).await;
        let app = client("ca-cert.pem", "pool.example.test", Some("app")).await;
        let r = options(&app, pool.tls_addr().unwrap()).await.unwrap();
        assert_eq!(r.header(&ezk_sip_types::Name::custom("X-Client-Certificate", &["x-client-certificate"])), Some("yes"));
        // Without a certificate: no answer (TLS 1.3 reports the refusal after the handshake, so
        // the request fails on the closed connection or by timeout).
        let stranger = client("ca-cert.pem", "pool.example.test", None).await;
        assert!(options(&stranger, pool.tls_addr().unwrap()).await.is_err());
    }

    #[tokio::test]
    async fn a_client_that_never_shakes_hands_holds_up_no_one() {
        let pool = server("pool", None).await;
        let _silent = tokio::net::TcpStream::connect(pool.tls_addr().unwrap()).await.unwrap();
        let hub = client("ca-cert.pem", "pool.example.test", None).await;
        let r = tokio::time::timeout(Duration::from_secs(3), options(&hub, pool.tls_addr().unwrap())).await;
        assert_eq!(r.expect("answered while another handshake hangs").unwrap().code(), Some(200));
    }

    #[test]
    fn bad_files_and_names_say_what_is_wrong() {
        let e = client_config(&fixture("missing.pem"), None).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let e = server_config(&fixture("pool-cert.pem"), &fixture("app-key.pem"), None).unwrap_err().to_string();
        assert!(e.starts_with("TLS settings"), "{e}");
        assert!(server_name("not a name").is_err());
    }

    /// Fifty requests at once to a peer that refuses every handshake (here: a certificate
    /// from an unknown CA) open one connection, not fifty; for the hold-down after it the
    /// next ones fail at once with the same reason and open none; after it, one again. With
    /// a TLS 1.3 server that refuses the client's certificate only after the handshake, the
    /// connection ended before anything arrived counts the same way.
    #[tokio::test]
    async fn a_refusing_peer_gets_one_handshake_per_hold_down_not_one_per_request() {
        let pool = server("pool", Some("ca-cert.pem")).await;
        let addr = pool.tls_addr().unwrap();
        // A forwarder in front of the pool counts the connections it is asked for.
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = front.accept().await {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
            }
        });
        for (client_ca, identity, why) in [("../ca-cert.pem", Some("app"), "UnknownIssuer"), ("ca-cert.pem", None, "CertificateRequired")] {
            accepted.store(0, std::sync::atomic::Ordering::SeqCst);
            let hub = client(client_ca, "pool.example.test", identity).await;
            let all = futures_join(&hub, front_addr, 50).await;
            assert!(all.iter().all(|r| matches!(r, Err(TxError::Transport(e)) if e.contains(why))), "{why}: {all:?}");
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "{why}: one connection for fifty requests");
            let e = options(&hub, front_addr).await.unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "{why}: none during the hold-down");
            tokio::time::sleep(Duration::from_millis(700)).await;
            let _ = options(&hub, front_addr).await;
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "{why}: one again after it");
        }
    }

    async fn futures_join(ep: &Endpoint, to: std::net::SocketAddr, n: usize) -> Vec<Result<crate::message::Message, TxError>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let ep = ep.clone();
                tokio::spawn(async move { options(&ep, to).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
