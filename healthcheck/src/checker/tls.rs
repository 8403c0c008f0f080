//! TLS for the https and grpc checks: rustls with the server certificate verified against the Mozilla roots or,
//! by default, accepted as it comes (backends often have self-signed certificates, and keepalived's SSL_GET does
//! not verify either); the handshake signature is checked in both cases. ALPN offers HTTP/2 and HTTP/1.1 to
//! https checks and HTTP/2 only to gRPC.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Check, CheckError};

/// The application protocols offered in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    /// `h2` and `http/1.1`.
    Http,
    /// `h2` only (gRPC).
    H2,
}

/// The TLS handshake over `s`, with the configured host as SNI (its port cut off) or else the address.
pub(super) async fn handshake(
    c: &Check,
    s: TcpStream,
    host: Option<&str>,
    verify: bool,
    alpn: Alpn,
) -> Result<TlsStream<TcpStream>, CheckError> {
    let name = match host.map(strip_port) {
        Some(h) => ServerName::try_from(h.to_owned()).map_err(|_| CheckError::TlsName(h.to_owned()))?,
        None => ServerName::IpAddress(c.target.ip().into()),
    };
    tokio_rustls::TlsConnector::from(config(verify, alpn).map_err(CheckError::TlsSetup)?)
        .connect(name, s)
        .await
        .map_err(CheckError::Tls)
}

/// Whether the handshake chose HTTP/2.
pub(super) fn is_h2(s: &TlsStream<TcpStream>) -> bool {
    s.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// `host`, `host:port` or `[v6]:port` without the port and brackets.
fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(a, _)| a);
    }
    match h.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => h,
    }
}

/// The client configuration for a verification mode and ALPN list, built once each.
fn config(verify: bool, alpn: Alpn) -> Result<Arc<ClientConfig>, rustls::Error> {
    static CONFIGS: [OnceLock<Result<Arc<ClientConfig>, rustls::Error>>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let cell = &CONFIGS[usize::from(verify) * 2 + usize::from(alpn == Alpn::H2)];
    cell.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let mut cfg = if verify {
            let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        cfg.alpn_protocols = match alpn {
            Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        Ok(Arc::new(cfg))
    })
    .clone()
}

/// Accepts any server certificate but verifies the handshake signatures with it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn the_server_name_is_the_host_without_its_port() {
        assert_eq!(strip_port("backend.test"), "backend.test");
        assert_eq!(strip_port("backend.test:8443"), "backend.test");
        assert_eq!(strip_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
    }
}
