//! One health check of one backend: TCP connect, HTTP GET (status codes, body substring, Host header), UDP
//! request/response (an ICMP port unreachable is a failure), ICMP/ICMPv6 echo, or a command's exit code (killed
//! with its process group at the timeout). Each returns `Ok` or why it failed; the timeout is applied here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Runs the check once.
pub async fn run(c: &Check) -> Result<(), String> {
    match tokio::time::timeout(c.timeout, run_inner(c)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", c.timeout)),
    }
}

async fn connect(c: &Check) -> Result<TcpStream, String> {
    let s = if c.target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let Some(src) = c.source {
        s.bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    s.connect(c.target).await.map_err(|e| format!("connect: {e}"))
}

async fn run_inner(c: &Check) -> Result<(), String> {
    match &c.probe {
        Probe::None => Ok(()),
        Probe::Tcp => connect(c).await.map(|_| ()),
        Probe::Http {
            path,
            host,
            status,
            body,
        } => {
            let mut s = connect(c).await?;
            let host = host.clone().unwrap_or_else(|| match c.target.ip() {
                IpAddr::V6(a) => format!("[{a}]:{}", c.target.port()),
                a => format!("{a}:{}", c.target.port()),
            });
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: anylb-healthcheck\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let mut resp = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the peer closes or 64 KB, enough for a status and a small body.
            loop {
                let n = s.read(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
                if n == 0 {
                    break;
                }
                resp.extend_from_slice(&buf[..n]);
                if resp.len() > 65536 {
                    break;
                }
                if body.is_none() && resp.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&resp);
            let line = text.lines().next().ok_or("empty response")?;
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("bad status line {line:?}"))?;
            if !status.contains(&code) {
                return Err(format!("status {code}"));
            }
            if let Some(b) = body {
                let payload = text.split_once("\r\n\r\n").map_or("", |(_, p)| p);
                if !payload.contains(b.as_str()) {
                    return Err(format!("body lacks {b:?}"));
                }
            }
            Ok(())
        }
        Probe::Udp { payload, expect } => {
            let bind = match (c.source, c.target) {
                (Some(s), _) => SocketAddr::new(s, 0),
                (None, SocketAddr::V4(_)) => "0.0.0.0:0".parse().map_err(|_| "bind")?,
                (None, SocketAddr::V6(_)) => "[::]:0".parse().map_err(|_| "bind")?,
            };
            let s = UdpSocket::bind(bind).await.map_err(|e| format!("bind: {e}"))?;
            // A connected socket reports ICMP port unreachable as ECONNREFUSED.
            s.connect(c.target).await.map_err(|e| format!("connect: {e}"))?;
            s.send(payload).await.map_err(|e| format!("send: {e}"))?;
            let mut buf = vec![0u8; 2048];
            let n = s.recv(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
            match expect {
                Some(x) if !buf[..n].windows(x.len().max(1)).any(|w| w == x.as_slice()) => {
                    Err("unexpected reply".into())
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
            let (prog, rest) = args.split_first().ok_or("empty command")?;
            let mut child = tokio::process::Command::new(prog)
                .args(rest)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("{prog}: {e}"))?;
            // Kill the whole process group if the check is abandoned at its timeout.
            let mut guard = GroupKill(child.id());
            let st = child.wait().await.map_err(|e| e.to_string())?;
            guard.0 = None;
            if st.success() {
                Ok(())
            } else {
                Err(format!("exit status {st}"))
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
