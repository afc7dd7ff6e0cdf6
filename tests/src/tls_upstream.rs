//! An HTTPS upstream for the upstream TLS specs, and certificates for it.
//!
//! - [`Pki`]: a root CA, an intermediate CA under it, and leaf certificates
//!   the intermediate issues (rcgen), the shape of Kong's
//!   `spec/fixtures/mtls_certs` (`example.com` <- "Kong Testing
//!   Intermidiate CA" <- "Kong Testing Root CA").
//! - [`TlsUpstream`]: a tokio-rustls HTTP/1.1 server on a free loopback
//!   port, on its own thread. Every request is answered `200 it works`
//!   (Kong's fixture body) and recorded with the SNI and the client
//!   certificate of its connection. Given a client CA it asks for a client
//!   certificate as Kong's fixture (nginx `ssl_verify_client on`) does: a
//!   client without one completes the handshake and gets
//!   `400 No required SSL certificate was sent`; a certificate that does
//!   not chain to the CA fails the handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate with its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf alone.
    pub cert_pem: String,
    /// The leaf then its issuer (what a server sends).
    pub chain_pem: String,
    pub key_pem: String,
    /// The leaf, DER.
    pub der: Vec<u8>,
}

/// Root CA -> intermediate CA -> leaves.
pub struct Pki {
    root: rcgen::Certificate,
    inter: rcgen::Certificate,
    inter_key: KeyPair,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name
        .push(DnType::OrganizationName, "Kong Testing");
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

impl Pki {
    /// A fresh hierarchy; `name` tells roots apart ("Kong Testing Root CA").
    pub fn new(name: &str) -> Pki {
        let root_key = KeyPair::generate().expect("keygen");
        let root = ca_params(name).self_signed(&root_key).expect("root");
        let inter_key = KeyPair::generate().expect("keygen");
        let inter = ca_params(&format!("{name} Intermediate"))
            .signed_by(&inter_key, &root, &root_key)
            .expect("intermediate");
        Pki {
            root,
            inter,
            inter_key,
        }
    }

    /// The root, PEM: what a `ca_certificates` entity holds.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// The intermediate, PEM (a CA too).
    pub fn intermediate_pem(&self) -> String {
        self.inter.pem()
    }

    fn issue(&self, p: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("keygen");
        let cert = p
            .signed_by(&key, &self.inter, &self.inter_key)
            .expect("leaf");
        Issued {
            cert_pem: cert.pem(),
            chain_pem: format!("{}{}", cert.pem(), self.inter.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `names` (DNS names or IPs).
    pub fn server(&self, names: &[&str]) -> Issued {
        let p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
        self.issue(p)
    }

    /// Like [`Pki::server`], valid only in 2001.
    pub fn server_expired(&self, names: &[&str]) -> Issued {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 12, 31);
        self.issue(p)
    }

    /// A client certificate (`CN=<cn>`).
    pub fn client(&self, cn: &str) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        self.issue(p)
    }
}

/// A self-signed certificate for `names` (no CA at all).
pub fn self_signed(names: &[&str]) -> Issued {
    let key = KeyPair::generate().expect("keygen");
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    Issued {
        cert_pem: cert.pem(),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// One request as the TLS upstream saw it.
#[derive(Debug, Clone)]
pub struct TlsRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The SNI of its connection (none for an IP name).
    pub sni: Option<String>,
    /// The client certificate of its connection (leaf, DER).
    pub client_cert: Option<Vec<u8>>,
    /// Which accepted connection (1-based) carried it.
    pub connection: usize,
}

impl TlsRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<TlsRequest>>,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

/// The HTTPS upstream; stops on drop.
pub struct TlsUpstream {
    pub port: u16,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

impl TlsUpstream {
    /// Serves `cert` (its chain) without asking for a client certificate.
    pub fn start(cert: &Issued) -> TlsUpstream {
        TlsUpstream::start_with(cert, None)
    }

    /// Serves `cert`; with `client_ca` (PEM) it asks for a client
    /// certificate issued under it.
    pub fn start_with(cert: &Issued, client_ca: Option<&str>) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in pem_certs(ca) {
                    roots.add(c).expect("client CA");
                }
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .expect("client verifier")
            }
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
            .expect("PEM key")
            .expect("a key");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(pem_certs(&cert.chain_pem), key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let require_cert = client_ca.is_some();

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = std_listener.local_addr().expect("addr").port();
        std_listener.set_nonblocking(true).expect("nonblocking");
        let seen = Arc::new(Seen::default());
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let s = seen.clone();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let n = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
                            let acceptor = acceptor.clone();
                            let s = s.clone();
                            tokio::spawn(async move {
                                match acceptor.accept(tcp).await {
                                    Ok(tls) => {
                                        s.handshakes.fetch_add(1, Ordering::SeqCst);
                                        serve(tls, &s, n, require_cert).await;
                                    }
                                    Err(_) => {
                                        s.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        TlsUpstream {
            port,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<TlsRequest> {
        self.seen
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn count(&self) -> usize {
        self.seen
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The last request; panics if none arrived.
    pub fn last(&self) -> TlsRequest {
        self.requests()
            .pop()
            .expect("the TLS upstream received no request")
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Handshakes completed.
    pub fn handshakes(&self) -> usize {
        self.seen.handshakes.load(Ordering::SeqCst)
    }

    /// Handshakes that failed (the client gave up, or a bad certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.seen.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// HTTP/1.1 keep-alive on one TLS connection.
async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    seen: &Seen,
    connection: usize,
    require_cert: bool,
) {
    let (sni, client_cert) = {
        let (_, conn) = tls.get_ref();
        (
            conn.server_name().map(str::to_string),
            conn.peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
        )
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut hdrs = vec![httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut hdrs);
        if !matches!(
            req.parse(&buf[..head_end]),
            Ok(httparse::Status::Complete(_))
        ) {
            return;
        }
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let rec = TlsRequest {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers,
            sni: sni.clone(),
            client_cert: client_cert.clone(),
            connection,
        };
        let length = rec
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let close = rec
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        buf.drain(..head_end);
        while buf.len() < length {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        seen.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
        let resp = if require_cert && client_cert.is_none() {
            // nginx's page for `ssl_verify_client on` without a certificate.
            let body = "<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>No required SSL certificate was sent</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            let body = "it works\n";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Connection: {connection}\r\n\r\n{body}",
                body.len()
            )
        };
        if tls.write_all(resp.as_bytes()).await.is_err()
            || close
            || require_cert && client_cert.is_none()
        {
            let _ = tls.shutdown().await;
            return;
        }
    }
}
