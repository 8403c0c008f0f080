//! The UDP check: a datagram out, any reply (or one containing the expected bytes) back. The socket is
//! connected, so an ICMP port unreachable comes back as a refused receive: a failure at once, not at the timeout.

use tokio::net::UdpSocket;

use super::{contains, local_address, Check, CheckError};

pub(super) async fn check(c: &Check, payload: &[u8], expect: Option<&[u8]>) -> Result<(), CheckError> {
    let addr = local_address(c);
    let s = UdpSocket::bind(std::net::SocketAddr::new(addr, 0))
        .await
        .map_err(|source| CheckError::Bind { addr, source })?;
    s.connect(c.target).await.map_err(CheckError::Connect)?;
    s.send(payload).await.map_err(CheckError::Send)?;
    let mut buf = vec![0u8; 2048];
    let n = s.recv(&mut buf).await.map_err(CheckError::Receive)?;
    match expect {
        Some(x) if !contains(&buf[..n], x) => {
            Err(CheckError::ReplyLacks(String::from_utf8_lossy(x).into_owned()))
        }
        _ => Ok(()),
    }
}
