//! The http and https checks on hyper's client: one GET per check, over HTTP/1.1 or, when TLS's ALPN chose it,
//! HTTP/2. The answer ends at its own framing (Content-Length, chunked encoding or the server's close), so a
//! server that keeps the connection open answers as fast as one that closes it. Redirects are not followed: a 3xx
//! is a status like any other. Only when a body substring is configured is the body read, decoded from its
//! transfer encoding and searched in its first [`READ_LIMIT`] bytes.

use std::future::Future;
use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{connect, contains, tls, Check, CheckError, READ_LIMIT};

/// What an HTTP check asks and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Request path.
    pub path: String,
    /// Host header and TLS server name (default: the address and port).
    pub host: Option<String>,
    /// Accepted status codes.
    pub status: Vec<u16>,
    /// Substring the body must contain.
    pub body: Option<String>,
    /// HTTPS: `Some(verify)`, whether the server certificate must chain to a trusted root.
    pub tls: Option<bool>,
}

pub(super) async fn check(c: &Check, p: &HttpProbe) -> Result<(), CheckError> {
    let s = connect(c).await?;
    let authority = authority(c, p.host.as_deref());
    let read = |resp: Response<Incoming>| judge(resp, p);
    match p.tls {
        None => roundtrip(TokioIo::new(s), false, request(&authority, &p.path, None)?, read).await,
        Some(verify) => {
            let s = tls::handshake(c, s, p.host.as_deref(), verify, tls::Alpn::Http).await?;
            let h2 = tls::is_h2(&s);
            let scheme = h2.then_some("https");
            roundtrip(TokioIo::new(s), h2, request(&authority, &p.path, scheme)?, read).await
        }
    }
}

/// The Host header or :authority: the configured host, else the target as `address:port` (IPv6 in brackets).
pub(super) fn authority(c: &Check, host: Option<&str>) -> String {
    host.map_or_else(
        || match c.target.ip() {
            IpAddr::V6(a) => format!("[{a}]:{}", c.target.port()),
            a => format!("{a}:{}", c.target.port()),
        },
        str::to_owned,
    )
}

/// The GET: origin-form with a Host header for HTTP/1.1; for HTTP/2 (`scheme` given) the absolute URI from
/// which hyper takes :scheme and :authority.
fn request(authority: &str, path: &str, scheme: Option<&str>) -> Result<Request<Full<Bytes>>, CheckError> {
    let b = match scheme {
        Some(s) => Request::get(format!("{s}://{authority}{path}")),
        None => Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONNECTION, "close"),
    };
    b.header(hyper::header::USER_AGENT, "anylb-healthcheck")
        .body(Full::new(Bytes::new()))
        .map_err(CheckError::Request)
}

/// The status, then (only when asked) the body.
async fn judge(resp: Response<Incoming>, p: &HttpProbe) -> Result<(), CheckError> {
    let code = resp.status().as_u16();
    if !p.status.contains(&code) {
        return Err(CheckError::Status(code));
    }
    let Some(want) = &p.body else {
        return Ok(());
    };
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while seen.len() < READ_LIMIT {
        match body.frame().await {
            None => break,
            Some(frame) => {
                if let Ok(data) = frame.map_err(CheckError::Http)?.into_data() {
                    let take = data.len().min(READ_LIMIT - seen.len());
                    seen.extend_from_slice(&data[..take]);
                    if contains(&seen, want.as_bytes()) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Err(CheckError::BodyLacks(want.clone()))
}

/// Sends `req` on a new HTTP/1.1 or HTTP/2 connection over `io` and hands the answer to `read`, driving the
/// connection meanwhile (no task is spawned: the connection ends with the check).
pub(super) async fn roundtrip<I, F, Fut>(
    io: I,
    h2: bool,
    req: Request<Full<Bytes>>,
    read: F,
) -> Result<(), CheckError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: FnOnce(Response<Incoming>) -> Fut,
    Fut: Future<Output = Result<(), CheckError>>,
{
    if h2 {
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(CheckError::Http)?;
        drive(conn, async move {
            read(tx.send_request(req).await.map_err(CheckError::Http)?).await
        })
        .await
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(CheckError::Http)?;
        drive(conn, async move {
            read(tx.send_request(req).await.map_err(CheckError::Http)?).await
        })
        .await
    }
}

/// Runs `work` while polling `conn`. When the connection ends first, `work` still finishes: it then reads what
/// the connection delivered, or the error that ended it.
async fn drive<C, W>(conn: C, work: W) -> Result<(), CheckError>
where
    C: Future<Output = Result<(), hyper::Error>>,
    W: Future<Output = Result<(), CheckError>>,
{
    tokio::pin!(conn, work);
    tokio::select! {
        r = &mut work => r,
        _ = &mut conn => work.await,
    }
}
