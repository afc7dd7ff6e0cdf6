//! Active checks: background probes of an upstream's targets.
//!
//! As lua-resty-healthcheck: healthy targets are probed every
//! `healthy.interval`, unhealthy ones every `unhealthy.interval` (0 turns
//! that side off), at most `concurrency` at a time, each probe bounded by
//! `timeout`. An http probe is `GET http_path HTTP/1.0` whose status line
//! is judged against the status lists; a tcp probe only connects.
//!
//! The loops hold a `Weak` balancer: when the snapshot that owns it is
//! replaced the tasks are aborted, and if one is mid-round it ends at the
//! next upgrade.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::Failure;
use crate::balancer::Balancer;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Success,
    Status(u16),
    Tcp,
    Timeout,
}

/// Runs one side's probe loop until the balancer goes away.
pub async fn run(balancer: Weak<Balancer>, healthy_side: bool, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(b) = balancer.upgrade() else { return };
        round(&b, healthy_side).await;
    }
}

/// Probes every target on one side once (respecting `concurrency`).
pub async fn round(b: &Arc<Balancer>, healthy_side: bool) {
    let due: Vec<usize> = (0..b.targets.len())
        .filter(|&i| b.targets[i].weight > 0 && b.targets[i].health.is_healthy() == healthy_side)
        .collect();
    let mut set = JoinSet::new();
    for i in due {
        if set.len() >= b.health_cfg.concurrency {
            set.join_next().await;
        }
        let b = b.clone();
        set.spawn(async move {
            let result = probe(&b, i).await;
            apply(&b, i, result);
        });
    }
    while set.join_next().await.is_some() {}
}

fn apply(b: &Balancer, i: usize, result: Probe) {
    let Some(t) = b.targets.get(i) else { return };
    let th = &b.health_cfg.active;
    match result {
        Probe::Success => t.health.report_success(th),
        Probe::Status(s) => t.health.report_status(th, s),
        Probe::Tcp => t.health.report_failure(th, Failure::Tcp),
        Probe::Timeout => t.health.report_failure(th, Failure::Timeout),
    }
    log::debug!("active check of {} in {}: {result:?}", t.target, b.name);
}

async fn probe(b: &Balancer, i: usize) -> Probe {
    let Some(t) = b.targets.get(i) else {
        return Probe::Tcp;
    };
    let cfg = &b.health_cfg;
    let Ok(addr) = t.addr.resolve().await else {
        return Probe::Tcp;
    };
    let timeout = cfg.timeout.max(Duration::from_millis(1));
    let sock = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Probe::Timeout,
        Ok(Err(_)) => return Probe::Tcp,
        Ok(Ok(s)) => s,
    };
    let host = b.host_header.as_deref().unwrap_or(&t.addr.host);
    match cfg.active_type.as_str() {
        "http" => http_exchange(sock, cfg, host, timeout).await,
        "https" => {
            let (Some(tls), Some(name)) = (
                &b.probe_tls,
                super::tls::server_name(cfg.https_sni.as_deref(), &t.addr.host),
            ) else {
                return Probe::Tcp;
            };
            // A target that cannot complete the handshake is a TCP failure.
            match tokio::time::timeout(timeout, tls.0.connect(name, sock)).await {
                Err(_) => Probe::Timeout,
                Ok(Err(_)) => Probe::Tcp,
                Ok(Ok(stream)) => http_exchange(stream, cfg, host, timeout).await,
            }
        }
        // tcp: the connect is the check.
        _ => Probe::Success,
    }
}

/// Sends the probe request and reads the status line.
async fn http_exchange<S>(
    mut sock: S,
    cfg: &super::HealthConfig,
    host: &str,
    timeout: Duration,
) -> Probe
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!("GET {} HTTP/1.0\r\n", cfg.http_path);
    for (name, values) in &cfg.headers {
        for v in values {
            req.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    req.push_str(&format!("Host: {host}\r\nConnection: close\r\n\r\n"));
    let exchange = async {
        sock.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        // The status line is all a probe reads.
        while !buf.contains(&b'\n') && buf.len() < 1024 {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Probe::Timeout,
        Ok(Err(_)) => Probe::Tcp,
        Ok(Ok(buf)) => Probe::Status(status_of(&buf)),
    }
}

/// The status of `HTTP/1.x NNN ...`; 0 (an HTTP failure) when unreadable.
fn status_of(buf: &[u8]) -> u16 {
    let line = String::from_utf8_lossy(buf);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::balancer::tests::balancer_from;
    use std::sync::atomic::{AtomicU16, Ordering};
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), 200);
        assert_eq!(status_of(b"HTTP/1.0 503 x\r\n"), 503);
        assert_eq!(status_of(b"garbage"), 0);
    }

    /// A loopback server answering every probe with a settable status.
    async fn server(status: Arc<AtomicU16>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let code = status.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b).await;
                    let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    #[tokio::test(start_paused = true)]
    async fn probes_mark_down_and_back_up_on_their_intervals() {
        let status = Arc::new(AtomicU16::new(200));
        let port = server(status.clone()).await;
        let b = Arc::new(balancer_from(&format!(
            r#"
upstreams:
  - name: up
    healthchecks:
      active:
        http_path: /health
        healthy: {{interval: 5, successes: 2}}
        unhealthy: {{interval: 1, http_failures: 2}}
    targets:
      - {{target: "127.0.0.1:{port}"}}
"#
        )));
        b.start_active(&tokio::runtime::Handle::current());
        let t = &b.targets[0];
        status.store(500, Ordering::SeqCst);
        // Healthy targets are probed every 5 s: two failures take 10 s.
        tokio::time::sleep(Duration::from_millis(5500)).await;
        assert!(t.health.is_healthy(), "one failure of two");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!t.health.is_healthy());
        assert!(b.pick(None, &[]).is_err(), "no healthy target left");
        // Unhealthy targets are probed every second.
        status.store(200, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(t.health.is_healthy());
        assert!(b.pick(None, &[]).is_ok());
        b.stop_background();
    }

    #[tokio::test(start_paused = true)]
    async fn tcp_probes_and_a_dead_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = l.local_addr().unwrap().port();
        drop(l);
        let b = Arc::new(balancer_from(&format!(
            r#"
upstreams:
  - name: up
    healthchecks:
      active:
        type: tcp
        healthy: {{interval: 1}}
        unhealthy: {{tcp_failures: 3}}
    targets:
      - {{target: "127.0.0.1:{dead}"}}
"#
        )));
        b.start_active(&tokio::runtime::Handle::current());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(b.targets[0].health.is_healthy());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!b.targets[0].health.is_healthy());
        // Dropping the balancer ends its loops.
        let weak = Arc::downgrade(&b);
        drop(b);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(weak.upgrade().is_none());
    }

    /// A TLS target answering `status` to any request.
    async fn tls_server(status: u16) -> u16 {
        use tokio::io::AsyncWriteExt as _;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(sock).await {
                        let mut buf = [0u8; 512];
                        let _ = tls.read(&mut buf).await;
                        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                        let _ = tls.write_all(resp.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    fn https_balancer(port: u16, verify: bool) -> Balancer {
        balancer_from(&format!(
            r#"
upstreams:
  - name: up
    healthchecks:
      active:
        type: https
        https_verify_certificate: {verify}
        https_sni: localhost
        healthy: {{interval: 1}}
        unhealthy: {{interval: 1, http_failures: 1, tcp_failures: 1}}
    targets:
      - {{target: "127.0.0.1:{port}"}}
"#
        ))
    }

    #[tokio::test]
    async fn https_probes_complete_the_handshake_and_read_the_status() {
        let ok = tls_server(200).await;
        let b = https_balancer(ok, false);
        assert!(matches!(probe(&b, 0).await, Probe::Status(200)));
        let failing = tls_server(503).await;
        let b = https_balancer(failing, false);
        assert!(matches!(probe(&b, 0).await, Probe::Status(503)));
        // A self-signed certificate fails verification when it is on.
        let b = https_balancer(ok, true);
        assert!(matches!(probe(&b, 0).await, Probe::Tcp));
        // A plain-HTTP target cannot complete the handshake.
        let status = Arc::new(AtomicU16::new(200));
        let plain = server(status).await;
        let b = https_balancer(plain, false);
        assert!(matches!(probe(&b, 0).await, Probe::Tcp));
    }
}
