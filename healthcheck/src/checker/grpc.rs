//! The grpc check: the standard health checking protocol, `grpc.health.v1.Health/Check`, over HTTP/2 in
//! cleartext (prior knowledge) or TLS (ALPN `h2`). SERVING is up; any other serving status, a grpc-status other
//! than OK (UNIMPLEMENTED from a server without the health service, NOT_FOUND for an unknown service name) or a
//! malformed answer is down, with the status in the reason.
//!
//! The two messages are small enough to write and read here without generated code:
//!
//! ```text
//! length-prefixed message (gRPC over HTTP/2):
//!  0       1               5
//! +-------+---------------+-------------------------+
//! | flag  | length (BE32) | protobuf message ...    |
//! +-------+---------------+-------------------------+
//!   flag 0: not compressed (the check offers no compression)
//!
//! HealthCheckRequest  { string service = 1; }       0x0a <varint len> <utf-8 name>   (empty when no name)
//! HealthCheckResponse { ServingStatus status = 1; } 0x08 <varint status>             (absent: UNKNOWN)
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;

use super::http::{authority, roundtrip};
use super::{connect, tls, Check, CheckError, READ_LIMIT};

/// The method the check calls.
pub const PATH: &str = "/grpc.health.v1.Health/Check";

/// The SERVING status.
pub const SERVING: u64 = 1;

/// What a gRPC check asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcProbe {
    /// The service name asked about (empty: the server as a whole).
    pub service: String,
    /// :authority and TLS server name (default: the address and port).
    pub authority: Option<String>,
    /// TLS: `Some(verify)`; cleartext HTTP/2 when `None`.
    pub tls: Option<bool>,
}

/// Why an answer is not a health-check response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body ended inside the 5-byte prefix or the message.
    #[error("truncated message")]
    Truncated,
    /// The message is compressed although no compression was offered.
    #[error("compressed message")]
    Compressed,
    /// The body held no message at all.
    #[error("no message")]
    Empty,
    /// The protobuf encoding is broken (a varint too long, a field past the end, an unknown wire type).
    #[error("malformed protobuf")]
    Protobuf,
}

/// The request body: one length-prefixed HealthCheckRequest.
pub fn request_body(service: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        msg.push(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = Vec::with_capacity(msg.len() + 5);
    body.push(0);
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    body
}

/// The serving status in a response body (the first length-prefixed message).
pub fn response_status(body: &[u8]) -> Result<u64, MessageError> {
    let (&flag, rest) = body.split_first().ok_or(MessageError::Empty)?;
    if flag != 0 {
        return Err(MessageError::Compressed);
    }
    let len = rest
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(MessageError::Truncated)?;
    let mut msg = rest.get(4..4 + len).ok_or(MessageError::Truncated)?;
    let mut status = 0;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut msg)?,
            (_, 0) => {
                varint(&mut msg)?;
            }
            (_, 1) => msg = msg.get(8..).ok_or(MessageError::Protobuf)?,
            (_, 2) => {
                let n = usize::try_from(varint(&mut msg)?).map_err(|_| MessageError::Protobuf)?;
                msg = msg.get(n..).ok_or(MessageError::Protobuf)?;
            }
            (_, 5) => msg = msg.get(4..).ok_or(MessageError::Protobuf)?,
            _ => return Err(MessageError::Protobuf),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(buf: &mut &[u8]) -> Result<u64, MessageError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(MessageError::Protobuf)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(MessageError::Protobuf)
}

/// The name of a serving status.
pub fn serving_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unknown value",
    }
}

/// The name of a grpc-status code.
pub fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown code")
}

pub(super) async fn check(c: &Check, p: &GrpcProbe) -> Result<(), CheckError> {
    let s = connect(c).await?;
    let authority = authority(c, p.authority.as_deref());
    let scheme = if p.tls.is_some() { "https" } else { "http" };
    let req = Request::post(format!("{scheme}://{authority}{PATH}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .header(hyper::header::USER_AGENT, "anylb-healthcheck")
        .body(Full::new(Bytes::from(request_body(&p.service))))
        .map_err(CheckError::Request)?;
    match p.tls {
        None => roundtrip(TokioIo::new(s), true, req, judge).await,
        Some(verify) => {
            let s = tls::handshake(c, s, p.authority.as_deref(), verify, tls::Alpn::H2).await?;
            roundtrip(TokioIo::new(s), true, req, judge).await
        }
    }
}

/// The HTTP status, the grpc-status (in the trailers, or in the headers of a trailers-only answer), then the
/// serving status in the message.
async fn judge(resp: Response<Incoming>) -> Result<(), CheckError> {
    let code = resp.status().as_u16();
    if code != 200 {
        return Err(CheckError::Status(code));
    }
    let (head, mut body) = resp.into_parts();
    if let Some(e) = status_error(&head.headers) {
        return Err(e);
    }
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CheckError::Http)?;
        match frame.into_data() {
            Ok(d) if data.len() + d.len() <= READ_LIMIT => data.extend_from_slice(&d),
            Ok(_) => break,
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    if let Some(e) = trailers.as_ref().and_then(status_error) {
        return Err(e);
    }
    match response_status(&data).map_err(CheckError::GrpcMessage)? {
        SERVING => Ok(()),
        other => Err(CheckError::NotServing(other)),
    }
}

/// A grpc-status other than 0 in `h`, as an error.
fn status_error(h: &HeaderMap) -> Option<CheckError> {
    let code: u32 = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    (code != 0).then(|| CheckError::GrpcStatus {
        code,
        message: h
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_service() {
        assert_eq!(request_body(""), [0, 0, 0, 0, 0]);
        assert_eq!(request_body("web"), [0, 0, 0, 0, 5, 0x0a, 3, b'w', b'e', b'b']);
        let long = "s".repeat(200);
        let b = request_body(&long);
        assert_eq!(&b[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn the_status_is_read_past_unknown_fields() {
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(SERVING));
        assert_eq!(
            response_status(&[0, 0, 0, 0, 0]),
            Ok(0),
            "proto3: an absent field is UNKNOWN"
        );
        // Field 2 (length-delimited, "ab") and field 3 (fixed32) before the status.
        let msg = [0x12, 2, b'a', b'b', 0x1d, 1, 2, 3, 4, 0x08, 2];
        let mut body = vec![0, 0, 0, 0, msg.len() as u8];
        body.extend_from_slice(&msg);
        assert_eq!(response_status(&body), Ok(2));
    }

    #[test]
    fn broken_messages_are_errors() {
        assert_eq!(response_status(&[]), Err(MessageError::Empty));
        assert_eq!(
            response_status(&[1, 0, 0, 0, 2, 0x08, 1]),
            Err(MessageError::Compressed)
        );
        assert_eq!(response_status(&[0, 0, 0]), Err(MessageError::Truncated));
        assert_eq!(
            response_status(&[0, 0, 0, 0, 3, 0x08, 1]),
            Err(MessageError::Truncated)
        );
        assert_eq!(
            response_status(&[0, 0, 0, 0, 2, 0x12, 5]),
            Err(MessageError::Protobuf)
        );
        assert_eq!(
            response_status(&[0, 0, 0, 0, 1, 0x0f]),
            Err(MessageError::Protobuf)
        );
        let endless = [
            0, 0, 0, 0, 12, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(response_status(&endless), Err(MessageError::Protobuf));
    }

    #[test]
    fn codes_and_statuses_have_names() {
        assert_eq!(code_name(12), "UNIMPLEMENTED");
        assert_eq!(code_name(99), "unknown code");
        assert_eq!(serving_name(2), "NOT_SERVING");
    }
}
