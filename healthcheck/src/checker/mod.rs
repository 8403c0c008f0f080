//! One health check of one backend, with its timeout applied here. Each probe kind is one file:
//!
//! | kind | file | up when |
//! |---|---|---|
//! | tcp | `tcp` | the connection opens; with `send`/`expect`, the bytes are sent and the reply (a banner, as SMTP or SSH servers send first) contains the expected text |
//! | http, https | [`http`] | the answer (HTTP/1.1, or HTTP/2 when TLS's ALPN chose it) has an accepted status and its decoded body contains the expected text |
//! | grpc | [`grpc`] | `grpc.health.v1.Health/Check` answers SERVING |
//! | dns | [`dns`] | the answer has the expected rcode and, if asked, the expected address (UDP, TCP when truncated) |
//! | udp | `udp` | a reply comes (and contains the expected bytes); an ICMP port unreachable is a failure |
//! | icmp | [`crate::icmp`] | an echo reply comes |
//! | exec | `exec` | the command exits 0 (killed with its process group at the timeout) |
//!
//! Each returns `Ok` or a [`CheckError`] saying why; its text is what `anylb health` shows.

pub mod dns;
mod exec;
pub mod grpc;
pub mod http;
mod tcp;
mod tls;
mod udp;

pub(crate) use tcp::syn_prober;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

pub use dns::DnsProbe;
pub use grpc::GrpcProbe;
pub use http::HttpProbe;
pub use tcp::TcpProbe;

/// The most of an answer a check reads: an HTTP body, a gRPC message, a TCP banner.
pub const READ_LIMIT: usize = 64 * 1024;

/// What to check.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// TCP connect, optionally a request and an expected reply.
    Tcp(TcpProbe),
    /// HTTP or HTTPS GET.
    Http(HttpProbe),
    /// gRPC health checking protocol.
    Grpc(GrpcProbe),
    /// A DNS query.
    Dns(DnsProbe),
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
    /// The request could not be built from the configuration (a host or path HTTP refuses).
    #[error("request: {0}")]
    Request(::http::Error),
    /// The HTTP exchange failed (connection closed, malformed answer, protocol error).
    #[error("http: {0}")]
    Http(hyper::Error),
    /// An HTTP status the check does not accept.
    #[error("status {0}")]
    Status(u16),
    /// The body lacks the expected text.
    #[error("body lacks {0:?}")]
    BodyLacks(String),
    /// A gRPC call that ended with a status other than OK.
    #[error("grpc status {code} ({}){}", grpc::code_name(*.code), if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    GrpcStatus {
        /// The grpc-status code.
        code: u32,
        /// The grpc-message, if any.
        message: String,
    },
    /// A gRPC answer that is not a health-check response.
    #[error("grpc: {0}")]
    GrpcMessage(grpc::MessageError),
    /// The gRPC health service answered, but not SERVING.
    #[error("health status {}", grpc::serving_name(*.0))]
    NotServing(u64),
    /// The DNS query could not be built or its answer not read.
    #[error("dns: {0}")]
    Dns(dns::DnsError),
    /// The DNS answer has another rcode than expected.
    #[error("rcode {}, expected {}", dns::rcode_name(*.got), dns::rcode_name(*.want))]
    Rcode {
        /// The answer's rcode.
        got: u8,
        /// The expected one.
        want: u8,
    },
    /// The DNS answer lacks the expected address.
    #[error("answer lacks {0}")]
    AnswerLacks(IpAddr),
    /// A TCP or UDP reply without the expected bytes.
    #[error("reply lacks {0:?}")]
    ReplyLacks(String),
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
    // The SYN probe, the common check at scale, is awaited in place and bounds itself in time (one sweeper
    // instead of a timer per check); every other kind is boxed, so that the large state machines (TLS,
    // HTTP/2, a read buffer) do not make each check's future their size — it is created and moved at every
    // check.
    if let Some(prober) = syn_prober(c) {
        return prober.probe(c).await;
    }
    tokio::time::timeout(c.timeout, Box::pin(run_inner(c)))
        .await
        .unwrap_or(Err(CheckError::Timeout(c.timeout)))
}

async fn run_inner(c: &Check) -> Result<(), CheckError> {
    match &c.probe {
        Probe::None => Ok(()),
        Probe::Tcp(p) => tcp::check(c, p).await,
        Probe::Http(p) => http::check(c, p).await,
        Probe::Grpc(p) => grpc::check(c, p).await,
        Probe::Dns(p) => dns::check(c, p).await,
        Probe::Udp { payload, expect } => udp::check(c, payload, expect.as_deref()).await,
        Probe::Icmp => crate::icmp::echo(c.target.ip(), c.source, c.timeout).await,
        Probe::Exec(cmd) => exec::check(c, cmd).await,
    }
}

/// A TCP connection to the target, from the check's source address when it has one.
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

/// The unspecified address of the target's family, or the check's source.
fn local_address(c: &Check) -> IpAddr {
    c.source.unwrap_or(match c.target {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    })
}

/// Whether `hay` contains `needle` (an empty needle is everywhere).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
