//! The http, grpc, dns and tcp-banner checks against real servers on loopback: raw HTTP/1.1 servers that keep
//! the connection open or send chunks, hyper's HTTP/2 server over TLS, grpcio's gRPC server (Debian's
//! python3-grpcio), dnsmasq (Debian's dnsmasq-base), and an SMTP-like banner server.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anylb_healthcheck::checker::dns::{self, DnsProbe};
use anylb_healthcheck::checker::{self, Check, GrpcProbe, HttpProbe, Probe, TcpProbe};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

fn check(probe: Probe, target: SocketAddr, timeout: Duration) -> Check {
    Check {
        probe,
        target,
        source: None,
        timeout,
    }
}

fn http(body: Option<&str>, tls: Option<bool>) -> Probe {
    Probe::Http(HttpProbe {
        path: "/healthz".into(),
        host: Some("backend.test".into()),
        status: vec![200],
        body: body.map(str::to_owned),
        tls,
    })
}

async fn run(c: &Check) -> Result<(), String> {
    checker::run(c).await.map_err(|e| e.to_string())
}

/// A raw HTTP/1.1 server: reads a request, writes each of `parts` (with a pause between them, so each arrives
/// in its own segment), then keeps the connection open for 10 s whatever the request said.
async fn raw_http(parts: Vec<&'static str>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let parts = parts.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                for p in parts {
                    let _ = s.write_all(p.as_bytes()).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_keep_alive_answer_ends_at_its_content_length() {
    let addr = raw_http(vec!["HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhealthy"]).await;
    for body in [None, Some("healthy")] {
        let c = check(http(body, None), addr, Duration::from_secs(3));
        let t = Instant::now();
        assert_eq!(run(&c).await, Ok(()));
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "answered in {took:?}, not at once"
        );
    }
    let c = check(http(Some("sick"), None), addr, Duration::from_secs(3));
    let t = Instant::now();
    assert_eq!(run(&c).await, Err("body lacks \"sick\"".into()));
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_chunked_body_is_decoded_before_the_search() {
    let addr = raw_http(vec![
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "4\r\nheal\r\n",
        "3\r\nthy\r\n",
        "0\r\n\r\n",
    ])
    .await;
    let c = check(http(Some("healthy"), None), addr, Duration::from_secs(3));
    let t = Instant::now();
    assert_eq!(run(&c).await, Ok(()), "the text straddles two chunks");
    assert!(t.elapsed() < Duration::from_millis(500));
    // Raw bytes would contain "4\r\nheal": the decoded body does not.
    let c = check(http(Some("heal\r\n3"), None), addr, Duration::from_secs(3));
    assert_eq!(run(&c).await, Err("body lacks \"heal\\r\\n3\"".into()));
}

#[tokio::test]
async fn a_redirect_is_a_status_like_any_other() {
    let addr = raw_http(vec![
        "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
    ])
    .await;
    let c = check(http(None, None), addr, Duration::from_secs(3));
    assert_eq!(run(&c).await, Err("status 302".into()));
}

/// A self-signed certificate for "backend.test": (certificate DER, key DER, certificate PEM, key PEM).
fn certificate() -> (
    rustls::pki_types::CertificateDer<'static>,
    Vec<u8>,
    String,
    String,
) {
    let c = rcgen::generate_simple_self_signed(vec!["backend.test".to_owned()]).unwrap();
    (
        c.cert.der().clone(),
        c.key_pair.serialize_der(),
        c.cert.pem(),
        c.key_pair.serialize_pem(),
    )
}

/// hyper's HTTP/2 server over TLS (ALPN h2 only); `saw_h2` is set when a request came as HTTP/2.
async fn h2_tls_server(saw_h2: Arc<AtomicBool>) -> SocketAddr {
    let (cert, key, _, _) = certificate();
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))
            .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, saw_h2) = (acceptor.clone(), saw_h2.clone());
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(s).await else { return };
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let h2 = req.version() == hyper::Version::HTTP_2;
                        saw_h2.store(h2, Ordering::SeqCst);
                        let status = if req.uri().path() == "/healthz" { 200 } else { 404 };
                        async move {
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"serving over h2")))
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_speaks_http2_when_alpn_chooses_it() {
    let saw_h2 = Arc::new(AtomicBool::new(false));
    let addr = h2_tls_server(saw_h2.clone()).await;
    let c = check(http(Some("over h2"), Some(false)), addr, Duration::from_secs(3));
    assert_eq!(run(&c).await, Ok(()));
    assert!(saw_h2.load(Ordering::SeqCst), "the request came as HTTP/2");
    let wrong_path = Probe::Http(HttpProbe {
        path: "/nope".into(),
        ..match http(None, Some(false)) {
            Probe::Http(p) => p,
            _ => unreachable!(),
        }
    });
    assert_eq!(
        run(&check(wrong_path, addr, Duration::from_secs(3))).await,
        Err("status 404".into())
    );
}

/// grpcio's server (tests/grpc_health_server.py) with its serving status in a file; TLS when `tls`.
struct GrpcServer {
    _child: tokio::process::Child,
    addr: SocketAddr,
    status_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl GrpcServer {
    async fn start(tls: bool) -> GrpcServer {
        let dir = tempfile::tempdir().unwrap();
        let status_file = dir.path().join("status");
        std::fs::write(&status_file, "1").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_health_server.py");
        let mut cmd = tokio::process::Command::new("/usr/bin/python3");
        cmd.arg(script).arg(&status_file);
        if tls {
            let (_, _, cert, key) = certificate();
            let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            cmd.arg(c).arg(k);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with grpcio (Debian python3-grpcio)");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line),
        )
        .await
        .expect("the gRPC server printed its port")
        .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port line {line:?}"));
        GrpcServer {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            status_file,
            _dir: dir,
        }
    }

    fn set(&self, status: u8) {
        std::fs::write(&self.status_file, status.to_string()).unwrap();
    }
}

fn grpc(service: &str, tls: Option<bool>) -> Probe {
    Probe::Grpc(GrpcProbe {
        service: service.into(),
        authority: tls.map(|_| "backend.test".into()),
        tls,
    })
}

#[tokio::test]
async fn grpc_health_serving_then_not_serving() {
    let server = GrpcServer::start(false).await;
    let c = |service: &str| check(grpc(service, None), server.addr, Duration::from_secs(3));
    assert_eq!(run(&c("")).await, Ok(()));
    assert_eq!(run(&c("web")).await, Ok(()));
    server.set(2);
    assert_eq!(run(&c("web")).await, Err("health status NOT_SERVING".into()));
    server.set(1);
    assert_eq!(run(&c("web")).await, Ok(()));
    assert_eq!(
        run(&c("mail")).await,
        Err("grpc status 5 (NOT_FOUND): unknown service".into())
    );
}

#[tokio::test]
async fn grpc_health_over_tls() {
    let server = GrpcServer::start(true).await;
    let c = check(grpc("web", Some(false)), server.addr, Duration::from_secs(3));
    assert_eq!(run(&c).await, Ok(()));
    server.set(2);
    assert_eq!(run(&c).await, Err("health status NOT_SERVING".into()));
    // Cleartext HTTP/2 to the TLS port is no success.
    let plain = check(grpc("web", None), server.addr, Duration::from_secs(3));
    assert!(run(&plain).await.is_err());
}

/// dnsmasq on 127.0.0.1 answering for `test` from a hosts file: ok.test (one address), big.test (40 addresses,
/// more than a 512-byte UDP answer holds), NXDOMAIN for any other name in `test`.
struct Dnsmasq {
    _child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    async fn start() -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let mut text = String::from("192.0.2.10 ok.test\n2001:db8::10 ok.test\n");
        for i in 1..=40 {
            text.push_str(&format!("198.51.100.{i} big.test\n"));
        }
        std::fs::write(&hosts, text).unwrap();
        // A port free for UDP; dnsmasq listens on TCP at the same port.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
                "--local=/test/",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("dnsmasq (Debian dnsmasq-base)");
        let d = Dnsmasq {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        let ready = check(
            dns_probe("ok.test", 1, 0, None),
            d.addr,
            Duration::from_millis(200),
        );
        for _ in 0..50 {
            if run(&ready).await.is_ok() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dnsmasq did not answer on {}", d.addr);
    }
}

fn dns_probe(name: &str, qtype: u16, rcode: u8, address: Option<&str>) -> Probe {
    Probe::Dns(DnsProbe {
        name: name.into(),
        qtype,
        rcode,
        address: address.map(|a| a.parse().unwrap()),
    })
}

#[tokio::test]
async fn dns_checks_rcode_address_and_truncation() {
    let d = Dnsmasq::start().await;
    let c = |p: Probe| check(p, d.addr, Duration::from_secs(2));
    assert_eq!(
        run(&c(dns_probe("ok.test", 1, 0, Some("192.0.2.10")))).await,
        Ok(())
    );
    assert_eq!(
        run(&c(dns_probe("ok.test", 28, 0, Some("2001:db8::10")))).await,
        Ok(())
    );
    assert_eq!(
        run(&c(dns_probe("ok.test", 1, 0, Some("192.0.2.11")))).await,
        Err("answer lacks 192.0.2.11".into())
    );
    assert_eq!(
        run(&c(dns_probe("gone.test", 1, 0, None))).await,
        Err("rcode NXDOMAIN, expected NOERROR".into())
    );
    assert_eq!(
        run(&c(dns_probe("gone.test", 1, 3, None))).await,
        Ok(()),
        "NXDOMAIN expected"
    );

    // big.test does not fit in a UDP answer: dnsmasq sets TC ...
    let q = dns::query(7, "big.test", 1).unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    u.send_to(&q, d.addr).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), u.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let udp = dns::parse(&buf[..n], 7).unwrap();
    assert!(udp.truncated, "{udp:?}");
    assert!(!udp.addresses.contains(&"198.51.100.40".parse().unwrap()));
    // ... and the check asks again over TCP, where the whole answer comes.
    assert_eq!(
        run(&c(dns_probe("big.test", 1, 0, Some("198.51.100.40")))).await,
        Ok(())
    );
}

/// An SMTP-like server: greets with a 220 banner, answers QUIT with 221 and closes.
async fn banner_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let _ = w.write_all(b"220 mail.test ESMTP ready\r\n").await;
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.eq_ignore_ascii_case("QUIT") {
                        let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    }
                    let _ = w.write_all(b"502 5.5.2 not here\r\n").await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_checks_read_the_banner_and_the_answer() {
    let addr = banner_server().await;
    let tcp = |send: Option<&str>, expect: Option<&str>| {
        check(
            Probe::Tcp(TcpProbe {
                syn: false,
                send: send.map(|s| s.as_bytes().to_vec()),
                expect: expect.map(|s| s.as_bytes().to_vec()),
            }),
            addr,
            Duration::from_secs(2),
        )
    };
    assert_eq!(run(&tcp(None, None)).await, Ok(()));
    assert_eq!(
        run(&tcp(None, Some("220 "))).await,
        Ok(()),
        "the server speaks first"
    );
    assert_eq!(run(&tcp(Some("QUIT\r\n"), Some("221"))).await, Ok(()));
    // The server closes after QUIT without the text: a failure at once, not at the timeout.
    let t = Instant::now();
    assert_eq!(
        run(&tcp(Some("QUIT\r\n"), Some("SSH-2.0"))).await,
        Err("reply lacks \"SSH-2.0\"".into())
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn syn_probes_find_open_and_closed_ports_without_connecting() {
    let syn = |target: SocketAddr| {
        check(
            Probe::Tcp(TcpProbe {
                syn: true,
                send: None,
                expect: None,
            }),
            target,
            Duration::from_secs(1),
        )
    };
    for any in ["127.0.0.1:0", "[::1]:0"] {
        let l = TcpListener::bind(any).await.unwrap();
        let open = l.local_addr().unwrap();
        assert!(
            anylb_healthcheck::syn::Prober::get().usable(&open),
            "raw sockets (the tests run as root)"
        );
        for _ in 0..3 {
            assert_eq!(run(&syn(open)).await, Ok(()), "{open}");
        }
        // Half-open only: the kernel's RST ends each probe before the listener sees a connection.
        let accepted = tokio::time::timeout(Duration::from_millis(200), l.accept()).await;
        assert!(accepted.is_err(), "a SYN probe completed a connection");
        drop(l);
        let e = run(&syn(open)).await.unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }
}
