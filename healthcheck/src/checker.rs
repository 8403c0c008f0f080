//! One health check of one backend: TCP connect, HTTP or HTTPS GET (status codes, body substring, Host header;
//! HTTPS with rustls, the certificate verified against the Mozilla roots or, by default, not at all), UDP
//! request/response (an ICMP port unreachable is a failure), ICMP/ICMPv6 echo, or a command's exit code (killed
//! with its process group at the timeout). Each returns `Ok` or why it failed; the timeout is applied here.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// What to check.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// TCP connect.
    Tcp,
    /// HTTP GET.
    Http {
        /// Path.
        path: String,
        /// Host header (default: the address).
        host: Option<String>,
        /// Accepted status codes.
        status: Vec<u16>,
        /// Substring the body must contain.
        body: Option<String>,
        /// HTTPS: `Some(verify)`, whether the server certificate must chain to a trusted root.
        tls: Option<bool>,
    },
    /// UDP request/response.
    Udp {
        /// Payload sent.
        payload: Vec<u8>,
        /// Substring the reply must contain.
        expect: Option<Vec<u8>>,
    },
    /// ICMP / ICMPv6 echo.
    Icmp,
    /// A command; `{address}` and `{port}` are substituted.
    Exec(Vec<String>),
    /// Always up.
    None,
}

/// A check of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The probe.
    pub probe: Probe,
    /// Target address and port.
    pub target: SocketAddr,
    /// Source address to bind.
    pub source: Option<IpAddr>,
    /// Time the check may take.
    pub timeout: Duration,
}

/// Why a check failed; its text is what `anylb health` shows as the last result.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No answer within the check's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A socket could not be made.
    #[error("socket: {0}")]
    Socket(std::io::Error),
    /// The source address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The source address.
        addr: IpAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection (or a connected UDP socket) failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Sending the request failed.
    #[error("send: {0}")]
    Send(std::io::Error),
    /// Receiving the answer failed.
    #[error("receive: {0}")]
    Receive(std::io::Error),
    /// The TLS client could not be set up.
    #[error("tls: {0}")]
    TlsSetup(rustls::Error),
    /// The configured host is not a valid TLS server name.
    #[error("tls name {0:?}: not a valid server name")]
    TlsName(String),
    /// The TLS handshake failed.
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// The server closed without answering.
    #[error("empty response")]
    EmptyResponse,
    /// The answer does not start with an HTTP status line.
    #[error("bad status line {0:?}")]
    BadStatusLine(String),
    /// An HTTP status the check does not accept.
    #[error("status {0}")]
    Status(u16),
    /// The body lacks the expected text.
    #[error("body lacks {0:?}")]
    BodyLacks(String),
    /// A UDP answer without the expected bytes.
    #[error("unexpected reply")]
    UnexpectedReply,
    /// No ICMP echo reply in time.
    #[error("no echo reply")]
    NoEchoReply,
    /// An exec check with no command.
    #[error("empty command")]
    EmptyCommand,
    /// The command could not be started or waited for.
    #[error("{program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command failed.
    #[error("exit status {0}")]
    Exit(std::process::ExitStatus),
    /// The blocking probe's thread failed.
    #[error("probe thread: {0}")]
    Thread(String),
}

/// Runs the check once.
pub async fn run(c: &Check) -> Result<(), CheckError> {
    match tokio::time::timeout(c.timeout, run_inner(c)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout(c.timeout)),
    }
}

async fn connect(c: &Check) -> Result<TcpStream, CheckError> {
    let s = if c.target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(CheckError::Socket)?;
    if let Some(src) = c.source {
        s.bind(SocketAddr::new(src, 0))
            .map_err(|source| CheckError::Bind { addr: src, source })?;
    }
    s.connect(c.target).await.map_err(CheckError::Connect)
}

/// Sends an HTTP request on `s` and reads the answer until the peer closes or 64 KB (only the status line when
/// `whole` is false). A TLS peer that closes without close_notify ends the answer like a TCP close.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &str,
    whole: bool,
) -> Result<Vec<u8>, CheckError> {
    s.write_all(req.as_bytes()).await.map_err(CheckError::Send)?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => 0,
            Err(e) => return Err(CheckError::Receive(e)),
        };
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
        if resp.len() > 65536 || (!whole && resp.windows(2).any(|w| w == b"\r\n")) {
            break;
        }
    }
    Ok(resp)
}

/// The TLS client configuration: certificates verified against the Mozilla roots, or accepted as they come
/// (the handshake signature is still checked), built once each.
fn tls_config(verify: bool) -> Result<Arc<ClientConfig>, rustls::Error> {
    static VERIFYING: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
    static TRUSTING: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
    let cell = if verify { &VERIFYING } else { &TRUSTING };
    cell.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let cfg = if verify {
            let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        Ok(Arc::new(cfg))
    })
    .clone()
}

/// Accepts any server certificate (health checks of backends with self-signed certificates, as keepalived's
/// SSL_GET does by default) but verifies the handshake signatures with it.
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

async fn run_inner(c: &Check) -> Result<(), CheckError> {
    match &c.probe {
        Probe::None => Ok(()),
        Probe::Tcp => connect(c).await.map(|_| ()),
        Probe::Http {
            path,
            host,
            status,
            body,
            tls,
        } => {
            let s = connect(c).await?;
            let host_header = host.clone().unwrap_or_else(|| match c.target.ip() {
                IpAddr::V6(a) => format!("[{a}]:{}", c.target.port()),
                a => format!("{a}:{}", c.target.port()),
            });
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: anylb-healthcheck\r\nConnection: close\r\n\r\n"
            );
            let resp = match tls {
                None => exchange(s, &req, body.is_some()).await?,
                Some(verify) => {
                    // SNI: the configured host name, else the address.
                    let name = match host.as_deref().map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n)) {
                        Some(h) => ServerName::try_from(h.to_owned())
                            .map_err(|_| CheckError::TlsName(h.to_owned()))?,
                        None => ServerName::IpAddress(c.target.ip().into()),
                    };
                    let s =
                        tokio_rustls::TlsConnector::from(tls_config(*verify).map_err(CheckError::TlsSetup)?)
                            .connect(name, s)
                            .await
                            .map_err(CheckError::Tls)?;
                    exchange(s, &req, body.is_some()).await?
                }
            };
            let text = String::from_utf8_lossy(&resp);
            let line = text.lines().next().ok_or(CheckError::EmptyResponse)?;
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| CheckError::BadStatusLine(line.to_owned()))?;
            if !status.contains(&code) {
                return Err(CheckError::Status(code));
            }
            if let Some(b) = body {
                let payload = text.split_once("\r\n\r\n").map_or("", |(_, p)| p);
                if !payload.contains(b.as_str()) {
                    return Err(CheckError::BodyLacks(b.clone()));
                }
            }
            Ok(())
        }
        Probe::Udp { payload, expect } => {
            let unspecified = match c.target {
                SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            };
            let addr = c.source.unwrap_or(unspecified);
            let s = UdpSocket::bind(SocketAddr::new(addr, 0))
                .await
                .map_err(|source| CheckError::Bind { addr, source })?;
            // A connected socket reports ICMP port unreachable as ECONNREFUSED.
            s.connect(c.target).await.map_err(CheckError::Connect)?;
            s.send(payload).await.map_err(CheckError::Send)?;
            let mut buf = vec![0u8; 2048];
            let n = s.recv(&mut buf).await.map_err(CheckError::Receive)?;
            match expect {
                Some(x) if !buf[..n].windows(x.len().max(1)).any(|w| w == x.as_slice()) => {
                    Err(CheckError::UnexpectedReply)
                }
                _ => Ok(()),
            }
        }
        Probe::Icmp => crate::icmp::echo(c.target.ip(), c.source, c.timeout).await,
        Probe::Exec(cmd) => {
            let args: Vec<String> = cmd
                .iter()
                .map(|a| {
                    a.replace("{address}", &c.target.ip().to_string())
                        .replace("{port}", &c.target.port().to_string())
                })
                .collect();
            let (prog, rest) = args.split_first().ok_or(CheckError::EmptyCommand)?;
            let mut child = tokio::process::Command::new(prog)
                .args(rest)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| CheckError::Spawn {
                    program: prog.clone(),
                    source,
                })?;
            // Kill the whole process group if the check is abandoned at its timeout.
            let mut guard = GroupKill(child.id());
            let st = child.wait().await.map_err(|source| CheckError::Spawn {
                program: prog.clone(),
                source,
            })?;
            guard.0 = None;
            if st.success() {
                Ok(())
            } else {
                Err(CheckError::Exit(st))
            }
        }
    }
}

/// Kills a process group when dropped before the command finished (the check timed out).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
