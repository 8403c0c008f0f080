//! The checkers against real servers on loopback, and the monitor's rise/fall, slow start and drains.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anylb_healthcheck::checker::{self, Check, HttpProbe, Probe};
use anylb_healthcheck::monitor::{BackendStatus, Key, Monitor};
use anylb_healthcheck::state::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP server answering the n-th request with `statuses[n]` (the last one after the end).
async fn scripted_http(statuses: Vec<u16>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let i = c.fetch_add(1, Ordering::SeqCst);
            let st = statuses.get(i).or(statuses.last()).copied().unwrap_or(200);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = "healthy";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {st} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, count)
}

fn topology(port: u16, health: &str) -> anylb_conf::NodeConfig {
    let t = include_str!("one_backend.toml")
        .replace("{health}", health)
        .replace("{port}", &port.to_string());
    anylb_conf::load_str(&t, "h.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .resolve("n")
        .unwrap()
}

fn key(port: u16) -> Key {
    Key {
        service: "web".into(),
        address: "127.0.0.1".parse().unwrap(),
        port,
    }
}

/// Waits up to 5 s for the backend on `port` to satisfy `done`; panics saying what it waited for.
async fn wait_for(m: &Monitor, port: u16, what: &str, done: impl Fn(&BackendStatus) -> bool) {
    let find = || m.backends(None).into_iter().find(|b| b.key == key(port));
    for _ in 0..500 {
        if find().is_some_and(|b| done(&b)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} within 5 s: {:?}", find());
}

async fn wait_checks(m: &Monitor, port: u16, n: u64) {
    wait_for(m, port, &format!("fewer than {n} checks"), |b| b.checks >= n).await;
}

async fn wait_health(m: &Monitor, port: u16, h: Health) {
    wait_for(m, port, &format!("not {h:?}"), |b| b.health == h).await;
}

#[tokio::test]
async fn syn_checks_follow_their_listener_down_and_up() {
    // As root (the tests' way), TCP checks are SYN probes, sent for every backend by the monitor's scheduler:
    // a SYN-ACK is up, a RST from the closed port down, and the listener back is up again.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    // Two failures to go down: a probe lost when another test's runtime ends (the prober is shared) is one.
    let m = Monitor::start(&topology(
        port,
        r#"{ kind = "tcp", interval = "40ms", timeout = "30ms", rise = 1, fall = 2 }"#,
    ));
    wait_health(&m, port, Health::Up).await;
    drop(l);
    wait_health(&m, port, Health::Down).await;
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    wait_health(&m, port, Health::Up).await;
    let b = m.backends(Some("web")).remove(0);
    let seq: Vec<Health> = b.transitions.iter().map(|t| t.to).collect();
    assert_eq!(seq, vec![Health::Up, Health::Down, Health::Up]);
    assert!(
        b.transitions[1].reason.contains("refused"),
        "{}",
        b.transitions[1].reason
    );
    assert_eq!(b.durations.count(), b.checks);
    assert_eq!(b.last_result.as_deref(), Some("ok"));
    drop(l);
    m.stop();
}

#[tokio::test]
async fn a_backend_whose_probes_cannot_be_sent_is_checked_once_per_interval() {
    // A SYN probe that fails before it is sent (UDP may not connect to the broadcast address, so its source
    // cannot be found; nothing leaves the host) is one failed check. It used to be reported a second time, as
    // timed out, and the scheduler then filed the backend twice: 40 checks in these 400 ms instead of 20.
    let t = include_str!("one_backend.toml")
        .replace(
            "{health}",
            r#"{ kind = "tcp", interval = "20ms", timeout = "10ms", rise = 1, fall = 1, jitter = 0.0 }"#,
        )
        .replace("{port}", "80")
        .replace("\"127.0.0.1\"", "\"255.255.255.255\"");
    let cfg = anylb_conf::load_str(&t, "h.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .resolve("n")
        .unwrap();
    let m = Monitor::start(&cfg);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = m.backends(Some("web")).remove(0);
    assert!((10..=30).contains(&b.checks), "{} checks", b.checks);
    assert_eq!(b.health, Health::Down);
    assert!(
        b.last_result.as_deref().is_some_and(|r| r.contains("ermission")),
        "{:?}",
        b.last_result
    );
    m.stop();
}

#[tokio::test]
async fn a_flapping_backend_honours_rise_and_fall_exactly() {
    // rise 2, fall 3: up at check 2; two failures then a success change nothing; three failures (checks 6-8)
    // take it down at 8; two successes (9-10) bring it back at 10.
    let (port, _) = scripted_http(vec![200, 200, 500, 500, 200, 500, 500, 500, 200, 200, 200]).await;
    let m = Monitor::start(&topology(
        port,
        r#"{ kind = "http", interval = "50ms", timeout = "40ms", rise = 2, fall = 3, jitter = 0.0 }"#,
    ));
    wait_checks(&m, port, 11).await;
    let b = m.backends(Some("web")).remove(0);
    let seq: Vec<(Health, u64)> = b.transitions.iter().map(|t| (t.to, t.check)).collect();
    assert_eq!(
        seq,
        vec![(Health::Up, 2), (Health::Down, 8), (Health::Up, 10)],
        "{:?}",
        b.transitions
    );
    assert_eq!(b.transitions[1].reason, "status 500");
    assert!(m.services()[0].announce);
    // Every check's duration is in the histogram; the last failure is kept after later successes.
    assert_eq!(b.durations.count(), b.checks);
    assert!(
        b.last_check_ms.is_some_and(|ms| ms > 0.0 && ms < 40.0),
        "{:?}",
        b.last_check_ms
    );
    assert_eq!(b.last_result.as_deref(), Some("ok"));
    assert_eq!(b.last_failure.map(|f| f.reason).as_deref(), Some("status 500"));
}

#[tokio::test]
async fn a_server_that_never_answers_is_down_after_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    // Accept and hold connections without answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let c = Check {
        probe: Probe::Http(HttpProbe {
            path: "/".into(),
            host: None,
            status: vec![200],
            body: None,
            tls: None,
        }),
        target: format!("127.0.0.1:{port}").parse().unwrap(),
        source: None,
        timeout: Duration::from_millis(200),
    };
    let t0 = std::time::Instant::now();
    let r = checker::run(&c).await.map_err(|e| e.to_string());
    assert!(r.as_ref().unwrap_err().contains("timed out"), "{r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(200) && t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_wrong_status_or_body_is_a_failure() {
    let (port, _) = scripted_http(vec![503]).await;
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let c = Check {
        probe: Probe::Http(HttpProbe {
            path: "/healthz".into(),
            host: Some("web.example".into()),
            status: vec![200, 204],
            body: None,
            tls: None,
        }),
        target,
        source: None,
        timeout: Duration::from_secs(1),
    };
    assert_eq!(
        checker::run(&c).await.map_err(|e| e.to_string()),
        Err("status 503".into())
    );
    let (port, _) = scripted_http(vec![200]).await;
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let c = Check {
        probe: Probe::Http(HttpProbe {
            path: "/".into(),
            host: None,
            status: vec![200],
            body: Some("sick".into()),
            tls: None,
        }),
        target,
        source: None,
        timeout: Duration::from_secs(1),
    };
    assert!(checker::run(&c)
        .await
        .map_err(|e| e.to_string())
        .unwrap_err()
        .contains("body lacks"));
    let c2 = Check {
        probe: Probe::Http(HttpProbe {
            path: "/".into(),
            host: None,
            status: vec![200],
            body: Some("healthy".into()),
            tls: None,
        }),
        ..c
    };
    assert_eq!(checker::run(&c2).await.map_err(|e| e.to_string()), Ok(()));
}

#[tokio::test]
async fn a_hanging_exec_check_is_killed_with_its_process_group() {
    let dir = tempfile_dir();
    let pidfile = format!("{dir}/pid");
    let script = format!("sleep 30 & echo $! > {pidfile}; wait");
    let c = Check {
        probe: Probe::Exec(vec!["sh".into(), "-c".into(), script]),
        target: "127.0.0.1:1".parse().unwrap(),
        source: None,
        timeout: Duration::from_millis(300),
    };
    let r = checker::run(&c).await.map_err(|e| e.to_string());
    assert!(r.unwrap_err().contains("timed out"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let alive = std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the grandchild sleep {} survived", pid.trim());
    let ok = Check {
        probe: Probe::Exec(vec!["sh".into(), "-c".into(), "test {port} = 1".into()]),
        ..c.clone()
    };
    assert_eq!(checker::run(&ok).await.map_err(|e| e.to_string()), Ok(()));
    let bad = Check {
        probe: Probe::Exec(vec!["false".into()]),
        ..c
    };
    assert!(checker::run(&bad)
        .await
        .map_err(|e| e.to_string())
        .unwrap_err()
        .contains("exit status"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> String {
    let d = std::env::temp_dir().join(format!("anylb-hc-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn slow_start_ramps_the_weight_after_recovery() {
    let (port, _) = scripted_http(vec![200]).await;
    let m = Monitor::start(&topology(
        port,
        r#"{ kind = "http", interval = "50ms", timeout = "40ms", rise = 1, fall = 1, jitter = 0.0, slow_start = "1s" }"#,
    ));
    wait_checks(&m, port, 1).await;
    let w0 = m.weights()[&("web".to_string(), "127.0.0.1".parse().unwrap(), port)];
    assert!(w0 < 50, "just up: {w0}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w1 = m.weights()[&("web".to_string(), "127.0.0.1".parse().unwrap(), port)];
    assert!(w1 > w0 && w1 < 100, "half way: {w1}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        m.weights()[&("web".to_string(), "127.0.0.1".parse().unwrap(), port)],
        100
    );
}

#[tokio::test]
async fn manual_drain_survives_health_changes_and_withdraws_the_service() {
    let (port, _) = scripted_http(vec![200]).await;
    let m = Monitor::start(&topology(
        port,
        r#"{ kind = "tcp", interval = "50ms", timeout = "40ms", rise = 1, fall = 1 }"#,
    ));
    wait_checks(&m, port, 2).await;
    assert!(m.services()[0].announce);
    assert!(m.set_drained(&key(port), true));
    wait_checks(&m, port, 4).await;
    assert_eq!(
        m.weights()[&("web".to_string(), "127.0.0.1".parse().unwrap(), port)],
        0
    );
    let s = &m.services()[0];
    assert_eq!((s.healthy, s.announce), (0, false));
    assert!(m.set_drained(&key(port), false));
    assert!(m.services()[0].announce);
    assert!(!m.set_drained(&key(9), true));
}

#[tokio::test]
async fn udp_checks_see_replies_and_port_unreachable() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 100];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let mut r = b"pong:".to_vec();
            r.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&r, from).await;
        }
    });
    let c = Check {
        probe: Probe::Udp {
            payload: b"ping".to_vec(),
            expect: Some(b"pong".to_vec()),
        },
        target: format!("127.0.0.1:{port}").parse().unwrap(),
        source: None,
        timeout: Duration::from_secs(1),
    };
    assert_eq!(checker::run(&c).await.map_err(|e| e.to_string()), Ok(()));
    // Nobody listens on this port: ICMP port unreachable → connection refused.
    let closed = {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let c2 = Check { target: closed, ..c };
    assert!(checker::run(&c2)
        .await
        .map_err(|e| e.to_string())
        .unwrap_err()
        .contains("refused"));
}

#[tokio::test]
async fn icmp_echo_to_loopback_succeeds() {
    for a in ["127.0.0.1:0", "[::1]:0"] {
        let c = Check {
            probe: Probe::Icmp,
            target: a.parse().unwrap(),
            source: None,
            timeout: Duration::from_secs(2),
        };
        assert_eq!(checker::run(&c).await.map_err(|e| e.to_string()), Ok(()), "{a}");
    }
}

/// An HTTPS server on 127.0.0.1 with a self-signed certificate for "backend.test": answers every request with
/// `status` and "ok".
async fn https_server(status: u16) -> u16 {
    let cert = rcgen::generate_simple_self_signed(vec!["backend.test".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_checks_speak_tls_and_verify_certificates_when_asked() {
    let port = https_server(200).await;
    let https = |verify: bool, status: Vec<u16>| Check {
        probe: Probe::Http(HttpProbe {
            path: "/healthz".into(),
            host: Some("backend.test".into()),
            status,
            body: Some("ok".into()),
            tls: Some(verify),
        }),
        target: format!("127.0.0.1:{port}").parse().unwrap(),
        source: None,
        timeout: Duration::from_secs(2),
    };
    // Self-signed and not verified (the default, as keepalived's SSL_GET): up.
    assert_eq!(
        checker::run(&https(false, vec![200]))
            .await
            .map_err(|e| e.to_string()),
        Ok(())
    );
    // Verified against the public roots: a self-signed certificate is refused.
    let e = checker::run(&https(true, vec![200]))
        .await
        .map_err(|e| e.to_string())
        .unwrap_err();
    assert!(
        e.contains("tls") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    // A status outside the accepted set is down over TLS too.
    assert_eq!(
        checker::run(&https(false, vec![204]))
            .await
            .map_err(|e| e.to_string()),
        Err("status 200".into())
    );
    // Plain HTTP to a TLS port is no success.
    let plain = Check {
        probe: Probe::Http(HttpProbe {
            path: "/".into(),
            host: None,
            status: vec![200],
            body: None,
            tls: None,
        }),
        ..https(false, vec![200])
    };
    assert!(checker::run(&plain).await.map_err(|e| e.to_string()).is_err());
}
