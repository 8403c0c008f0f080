//! The TCP check: by default a half-open SYN probe ([`crate::syn`]) when raw sockets are available; otherwise,
//! or with `syn = false`, the connection opens. With `send`, those bytes are written first; with `expect`, the reply is
//! read until it contains the expected text (a banner such as SMTP's `220` or SSH's `SSH-2.0-`: servers that
//! speak first answer whether or not anything was sent), the server closes, or [`READ_LIMIT`] bytes came.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{connect, contains, Check, CheckError, Probe, READ_LIMIT};

/// What a TCP check sends and expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpProbe {
    /// Probe with a SYN alone (no bytes to send or expect, raw sockets available).
    pub syn: bool,
    /// Bytes written once connected.
    pub send: Option<Vec<u8>>,
    /// Bytes the reply must contain.
    pub expect: Option<Vec<u8>>,
}

/// The SYN prober, when check `c` is a plain TCP check that may use it (no banner to send or expect, SYN
/// probes allowed, a raw socket of the target's family open).
pub(crate) fn syn_prober(c: &Check) -> Option<std::sync::Arc<crate::syn::Prober>> {
    let Probe::Tcp(p) = &c.probe else {
        return None;
    };
    if !p.syn || p.send.is_some() || p.expect.is_some() {
        return None;
    }
    let prober = crate::syn::Prober::get();
    prober.usable(&c.target).then_some(prober)
}

/// A TCP check by connection (a SYN probe is sent by [`super::run`] instead, when it may be): connect, send
/// what it says, read until the expected text.
pub(super) async fn check(c: &Check, p: &TcpProbe) -> Result<(), CheckError> {
    let mut s = connect(c).await?;
    if let Some(data) = &p.send {
        s.write_all(data).await.map_err(CheckError::Send)?;
    }
    let Some(expect) = &p.expect else {
        return Ok(());
    };
    let lacks = || CheckError::ReplyLacks(String::from_utf8_lossy(expect).into_owned());
    let mut reply = Vec::new();
    let mut buf = [0u8; 2048];
    while reply.len() < READ_LIMIT {
        let n = s.read(&mut buf).await.map_err(CheckError::Receive)?;
        if n == 0 {
            return Err(lacks());
        }
        reply.extend_from_slice(&buf[..n]);
        // Only the tail that could complete a match is searched again.
        let from = reply.len().saturating_sub(n + expect.len());
        if contains(&reply[from..], expect) {
            return Ok(());
        }
    }
    Err(lacks())
}
