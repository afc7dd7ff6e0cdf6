//! An in-tree Kong control plane (sync v1, `/v1/outlet`) for hybrid-mode
//! tests.
//!
//! - [`Certs`]: generates Kong-style certificates with rcgen: `shared` (one
//!   self-signed EC P-384 cert, CN `kong_clustering`, no SAN, used by both
//!   sides, like `kong hybrid gen_cert`) or `pki` (a CA issuing a server cert
//!   for a DNS name and a client cert).
//! - [`ControlPlane`]: a wss server on 127.0.0.1 requiring a client cert the
//!   way Kong's CP does (shared: the DP cert must equal the CP's; pki: it
//!   must chain to the CA), applying Kong's version check (close on an
//!   incompatible `node_version`) and plugin check (withhold configs naming a
//!   plugin the DP did not list). It records every `basic_info`, query string
//!   and ping payload, and every other frame a DP sends (a real CP would drop
//!   the DP for those). It pushes gzip `reconfigure` frames to new and live
//!   sessions, can send arbitrary (hostile) frames, dribble a frame slowly,
//!   go down (dropping every session) and come back on the same port.
//!
//! It runs on its own tokio runtime so the blocking tests drive it with
//! plain method calls.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::gateway::TempDir;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Certificates.

/// Cluster mTLS mode, as `KONG_CLUSTER_MTLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Pki,
}

/// PEM files for one test cluster, in a temp dir.
pub struct Certs {
    pub mode: Mode,
    /// DP side: `KONG_CLUSTER_CERT` / `KONG_CLUSTER_CERT_KEY`.
    pub dp_cert: PathBuf,
    pub dp_key: PathBuf,
    /// pki: `KONG_CLUSTER_CA_CERT`.
    pub ca_cert: Option<PathBuf>,
    /// pki: the name in the server cert (`KONG_CLUSTER_SERVER_NAME`).
    pub server_name: String,
    cp_cert_pem: String,
    cp_key_pem: String,
    ca_pem: Option<String>,
    _dir: TempDir,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

fn shared_pair() -> (String, String) {
    shared_pair_with(|_| {})
}

/// A shared cert as `kong hybrid gen_cert` makes it, with `tweak` applied
/// to its parameters (e.g. the validity period).
fn shared_pair_with(tweak: impl FnOnce(&mut rcgen::CertificateParams)) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kong_clustering");
    tweak(&mut params);
    let cert = params.self_signed(&key).expect("self-sign");
    (cert.pem(), key.serialize_pem())
}

impl Certs {
    /// Kong's shared mode: one cert and key on both sides.
    pub fn shared() -> Certs {
        let (cert, key) = shared_pair();
        let dir = TempDir::new("cp-certs");
        Certs {
            mode: Mode::Shared,
            dp_cert: write(dir.path(), "cluster.crt", &cert),
            dp_key: write(dir.path(), "cluster.key", &key),
            ca_cert: None,
            server_name: "kong_clustering".into(),
            cp_cert_pem: cert,
            cp_key_pem: key,
            ca_pem: None,
            _dir: dir,
        }
    }

    /// Shared mode with a cert (on both sides) that expired in 2001.
    pub fn shared_expired() -> Certs {
        let (cert, key) = shared_pair_with(|p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        });
        let dir = TempDir::new("cp-certs");
        Certs {
            mode: Mode::Shared,
            dp_cert: write(dir.path(), "cluster.crt", &cert),
            dp_key: write(dir.path(), "cluster.key", &key),
            ca_cert: None,
            server_name: "kong_clustering".into(),
            cp_cert_pem: cert,
            cp_key_pem: key,
            ca_pem: None,
            _dir: dir,
        }
    }

    /// Same as [`Certs::shared`] but the CP uses a *different* shared cert:
    /// the DP must refuse it.
    pub fn shared_mismatched() -> Certs {
        let mut c = Certs::shared();
        let (cert, key) = shared_pair();
        c.cp_cert_pem = cert;
        c.cp_key_pem = key;
        c
    }

    /// PKI: a CA issues the CP's server cert (for `server_name`) and the
    /// DP's client cert.
    pub fn pki(server_name: &str) -> Certs {
        let (ca_pem, ca_cert, ca_key) = make_ca("Test Cluster CA");
        let (cp_cert_pem, cp_key_pem) = issue(&ca_cert, &ca_key, server_name, true);
        let (dp_cert_pem, dp_key_pem) = issue(&ca_cert, &ca_key, "dp.kong.test", false);
        let dir = TempDir::new("cp-certs");
        Certs {
            mode: Mode::Pki,
            dp_cert: write(dir.path(), "cluster.crt", &dp_cert_pem),
            dp_key: write(dir.path(), "cluster.key", &dp_key_pem),
            ca_cert: Some(write(dir.path(), "ca.crt", &ca_pem)),
            server_name: server_name.to_string(),
            cp_cert_pem,
            cp_key_pem,
            ca_pem: Some(ca_pem),
            _dir: dir,
        }
    }

    /// PKI where the CP's server cert comes from another CA than the one
    /// the DP trusts.
    pub fn pki_untrusted_server(server_name: &str) -> Certs {
        let mut c = Certs::pki(server_name);
        let (_pem, other_ca, other_key) = make_ca("Rogue CA");
        let (cert, key) = issue(&other_ca, &other_key, server_name, true);
        c.cp_cert_pem = cert;
        c.cp_key_pem = key;
        c
    }

    /// The DP's `KONG_*` settings for this cluster.
    pub fn dp_env(&self, cp_port: u16) -> Vec<(String, String)> {
        let mut env = vec![
            ("KONG_ROLE".to_string(), "data_plane".to_string()),
            ("KONG_DATABASE".into(), "off".into()),
            ("KONG_DECLARATIVE_CONFIG".into(), String::new()),
            (
                "KONG_CLUSTER_CONTROL_PLANE".into(),
                format!("127.0.0.1:{cp_port}"),
            ),
            (
                "KONG_CLUSTER_CERT".into(),
                self.dp_cert.display().to_string(),
            ),
            (
                "KONG_CLUSTER_CERT_KEY".into(),
                self.dp_key.display().to_string(),
            ),
        ];
        match self.mode {
            Mode::Shared => env.push(("KONG_CLUSTER_MTLS".into(), "shared".into())),
            Mode::Pki => {
                env.push(("KONG_CLUSTER_MTLS".into(), "pki".into()));
                env.push(("KONG_CLUSTER_SERVER_NAME".into(), self.server_name.clone()));
                if let Some(ca) = &self.ca_cert {
                    env.push(("KONG_CLUSTER_CA_CERT".into(), ca.display().to_string()));
                }
                // Only our CA: keeps the test independent of the OS bundle.
                env.push((
                    "KONG_LUA_SSL_TRUSTED_CERTIFICATE".into(),
                    self.ca_cert
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ));
            }
        }
        env
    }
}

fn make_ca(cn: &str) -> (String, rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("keygen");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), cert, key)
}

fn issue(
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    name: &str,
    server: bool,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("keygen");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, ca, ca_key).expect("issue");
    (cert.pem(), key.serialize_pem())
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem certs")
}

fn pem_key(pem: &str) -> PrivateKeyDer<'static> {
    let der = rustls_pemfile::pkcs8_private_keys(&mut pem.as_bytes())
        .next()
        .expect("a pkcs8 key")
        .expect("pem key");
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.secret_pkcs8_der().to_vec()))
}

/// nginx `ssl_verify_client optional_no_ca`: any client cert completes the
/// handshake; the pin is checked afterwards, as Kong's Lua does.
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }
}

fn server_config(certs: &Certs) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let verifier: Arc<dyn ClientCertVerifier> = match certs.mode {
        Mode::Shared => Arc::new(AnyClientCert(provider.clone())),
        Mode::Pki => {
            let mut roots = RootCertStore::empty();
            for c in pem_certs(certs.ca_pem.as_deref().expect("pki has a CA")) {
                roots.add(c).expect("CA");
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier")
        }
    };
    let cfg = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(&certs.cp_cert_pem), pem_key(&certs.cp_key_pem))
        .expect("server cert");
    Arc::new(cfg)
}

// ---------------------------------------------------------------------------
// Frames.

/// gzip, as Kong's CP compresses every reconfigure payload.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// A `reconfigure` message for `config_table` with Kong's hashes (the
/// CP's `config_hash` is what the DP must echo in its pings), computed by
/// the test crate's own implementation ([`crate::kong_hash`]), not the data
/// plane's.
pub fn reconfigure(config_table: &Value) -> (Vec<u8>, String) {
    let h = crate::kong_hash::calculate_config_hash(config_table);
    let msg = json!({
        "type": "reconfigure",
        "timestamp": 1_700_000_000.123,
        "config_table": config_table,
        "config_hash": h.config,
        "hashes": {
            "config": h.config, "routes": h.routes, "services": h.services,
            "plugins": h.plugins, "upstreams": h.upstreams, "targets": h.targets,
        },
    });
    (gzip(msg.to_string().as_bytes()), h.config)
}

/// A gzip stream that inflates to about `total` bytes (gigabytes) while
/// being a few MB: a JSON-looking prefix (`{"type":"reconfigure",...,"x":"`)
/// so a DP cannot refuse it from its first bytes, then one sync-flushed
/// deflate block of 1 MiB of `a` repeated (each copy refers back only to
/// `a`s, so the stream stays valid), a final block and a correct trailer.
pub fn gzip_bomb(total: u64) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let prefix = br#"{"type":"reconfigure","config_table":{"x":""#;
    let fill = vec![b'a'; CHUNK];
    let deflate_block = |bytes: &[u8]| {
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut out = Vec::with_capacity(bytes.len() / 64 + 1024);
        c.compress_vec(bytes, &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        out
    };
    let head = deflate_block(prefix);
    let block = deflate_block(&fill);
    let reps = total / CHUNK as u64;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&head);
    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    let mut chunk_crc = flate2::Crc::new();
    chunk_crc.update(&fill);
    for _ in 0..reps {
        out.extend_from_slice(&block);
        crc.combine(&chunk_crc);
    }
    // Final empty fixed-Huffman block, then CRC32 and ISIZE (mod 2^32).
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    let size = prefix.len() as u64 + reps * CHUNK as u64;
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out
}

/// A server-to-client binary frame header (unmasked) for `len` bytes.
fn frame_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x82];
    if len < 126 {
        h.push(len as u8);
    } else if len <= 0xffff {
        h.push(126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h
}

// ---------------------------------------------------------------------------
// The control plane.

/// What the CP saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Completed WebSocket sessions (after the client-cert check).
    pub sessions: usize,
    /// TLS handshakes that failed, or shared-mode pin mismatches.
    pub tls_failures: usize,
    pub queries: Vec<String>,
    pub basic_infos: Vec<Value>,
    /// Ping payloads in arrival order.
    pub pings: Vec<String>,
    /// Frames a real CP would drop the DP for (not a 32-byte ping / close).
    pub invalid_frames: Vec<String>,
    /// Sessions closed for an incompatible version.
    pub version_rejects: usize,
    /// Pushes withheld because a configured plugin was missing on the DP.
    pub plugin_withheld: usize,
    /// Request headers of the upgrade, per session.
    pub upgrade_headers: Vec<Vec<(String, String)>>,
}

/// Options of the CP.
#[derive(Debug, Clone)]
pub struct CpOptions {
    /// The CP's Kong version (Kong's version check uses major.minor).
    pub version: String,
}

impl Default for CpOptions {
    fn default() -> Self {
        CpOptions {
            version: "3.10.0".into(),
        }
    }
}

#[derive(Debug, Clone)]
enum Cmd {
    /// Send a binary frame (a config push or hostile bytes).
    Binary(Arc<Vec<u8>>),
    /// Send raw bytes (a frame) in `chunk`-byte pieces every `every`.
    Dribble {
        bytes: Arc<Vec<u8>>,
        chunk: usize,
        every: Duration,
    },
}

/// An encoded push and the plugin names its config uses.
type Push = (Arc<Vec<u8>>, Vec<String>);

/// Query string and headers of an upgrade request.
type Upgrade = (String, Vec<(String, String)>);

struct Inner {
    seen: Mutex<Seen>,
    /// The current config push sent to each new session (as Kong does).
    current: Mutex<Option<Push>>,
    cmds: broadcast::Sender<Cmd>,
    opts: CpOptions,
}

/// A running test control plane. Dropping it stops it.
pub struct ControlPlane {
    pub port: u16,
    inner: Arc<Inner>,
    tls: Arc<rustls::ServerConfig>,
    pin: Option<Vec<u8>>,
    rt: tokio::runtime::Runtime,
    stop: Option<mpsc::Sender<()>>,
}

fn kong_minor(v: &str) -> Option<(u64, u64)> {
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next()?;
    patch.chars().next().filter(char::is_ascii_digit)?;
    Some((major, minor))
}

/// Names of the plugins configured in a config table (top level, flat).
fn configured_plugins(config: &Value) -> Vec<String> {
    config["plugins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl ControlPlane {
    pub fn start(certs: &Certs) -> ControlPlane {
        ControlPlane::start_with(certs, CpOptions::default())
    }

    pub fn start_with(certs: &Certs, opts: CpOptions) -> ControlPlane {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("cp runtime");
        let (cmds, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            seen: Mutex::new(Seen::default()),
            current: Mutex::new(None),
            cmds,
            opts,
        });
        let pin = match certs.mode {
            Mode::Shared => pem_certs(&certs.cp_cert_pem)
                .first()
                .map(|c| c.as_ref().to_vec()),
            Mode::Pki => None,
        };
        let mut cp = ControlPlane {
            port: 0,
            inner,
            tls: server_config(certs),
            pin,
            rt,
            stop: None,
        };
        let listener = cp
            .rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind cp");
        cp.port = listener.local_addr().expect("cp addr").port();
        cp.serve(listener);
        cp
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop_tx, mut stop_rx) = mpsc::channel::<()>(1);
        self.stop = Some(stop_tx);
        let inner = self.inner.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let pin = self.pin.clone();
        self.rt.spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.recv() => break,
                    r = listener.accept() => {
                        let Ok((tcp, _)) = r else { continue };
                        let inner = inner.clone();
                        let acceptor = acceptor.clone();
                        let pin = pin.clone();
                        sessions.spawn(async move {
                            handle_conn(tcp, acceptor, pin, inner).await;
                        });
                    }
                }
            }
            // Going down: every live session is dropped (TCP closed).
            sessions.abort_all();
        });
    }

    /// Stops listening and drops every session, like a killed CP.
    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = self.rt.block_on(s.send(()));
        }
        // Let the abort land before the caller looks.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Comes back on the same port (after [`ControlPlane::kill`]).
    pub fn restart(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match self.rt.block_on(TcpListener::bind(addr)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("rebind cp on {addr}: {e}"),
            }
        };
        self.serve(listener);
    }

    /// Sets the config and pushes it to every live session; returns the
    /// `config_hash` the DP must report.
    pub fn set_config(&self, config_table: &Value) -> String {
        let (frame, hash) = reconfigure(config_table);
        self.set_frame(frame, configured_plugins(config_table));
        hash
    }

    /// Sets an already-encoded push (sent to new sessions too).
    pub fn set_frame(&self, frame: Vec<u8>, plugins: Vec<String>) {
        let frame = Arc::new(frame);
        *lock(&self.inner.current) = Some((frame.clone(), plugins));
        let _ = self.inner.cmds.send(Cmd::Binary(frame));
    }

    /// Sends a binary frame to live sessions only (hostile bytes).
    pub fn send_binary(&self, bytes: Vec<u8>) {
        let _ = self.inner.cmds.send(Cmd::Binary(Arc::new(bytes)));
    }

    /// Sends one binary frame of `payload`, `chunk` bytes every `every`.
    pub fn dribble(&self, payload: &[u8], chunk: usize, every: Duration) {
        let mut bytes = frame_header(payload.len());
        bytes.extend_from_slice(payload);
        let _ = self.inner.cmds.send(Cmd::Dribble {
            bytes: Arc::new(bytes),
            chunk,
            every,
        });
    }

    pub fn seen(&self) -> Seen {
        lock(&self.inner.seen).clone()
    }

    /// Waits until `pred(seen)` holds.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&lock(&self.inner.seen)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a ping carrying `hash`.
    pub fn wait_ping(&self, hash: &str, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.pings.iter().any(|p| p == hash))
    }

    /// The most recent ping payload.
    pub fn last_ping(&self) -> Option<String> {
        lock(&self.inner.seen).pings.last().cloned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn handle_conn(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    pin: Option<Vec<u8>>,
    inner: Arc<Inner>,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        _ => {
            lock(&inner.seen).tls_failures += 1;
            return;
        }
    };
    if let Some(pin) = &pin {
        // Kong shared mode: the DP's cert must be the CP's own (444 otherwise).
        let ok = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .is_some_and(|c| c.as_ref() == pin.as_slice());
        if !ok {
            lock(&inner.seen).tls_failures += 1;
            return;
        }
    }

    let captured: Arc<Mutex<Upgrade>> = Arc::default();
    let cap = captured.clone();
    // tungstenite's callback signature fixes the error type.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let query = req.uri().query().unwrap_or("").to_string();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let has = |k: &str| {
            query
                .split('&')
                .any(|p| p.starts_with(&format!("{k}=")) && p.len() > k.len() + 1)
        };
        if req.uri().path() != "/v1/outlet" || !has("node_id") || !has("node_version") {
            let mut r = ErrorResponse::new(Some("bad request".into()));
            *r.status_mut() = http::StatusCode::BAD_REQUEST;
            return Err(r);
        }
        *lock(&cap) = (query, headers);
        Ok(resp)
    };
    let config = WebSocketConfig::default().max_frame_size(Some(16 << 20));
    let Ok(Ok(ws)) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::accept_hdr_async_with_config(tls, callback, Some(config)),
    )
    .await
    else {
        return;
    };
    let (query, headers) = lock(&captured).clone();
    let node_version = query
        .split('&')
        .find_map(|p| p.strip_prefix("node_version="))
        .unwrap_or("")
        .to_string();
    {
        let mut s = lock(&inner.seen);
        s.sessions += 1;
        s.queries.push(query);
        s.upgrade_headers.push(headers);
    }
    run_session(ws, &node_version, inner).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

async fn run_session(mut ws: Ws, node_version: &str, inner: Arc<Inner>) {
    // Subscribe before anything can be pushed so no command is missed.
    let mut cmds = inner.cmds.subscribe();
    // First frame: binary basic_info with a plugins array.
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let dp_plugins: Vec<String> = match first {
        Ok(Some(Ok(Message::Binary(b)))) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) if v["type"] == "basic_info" && v["plugins"].is_array() => {
                let names = v["plugins"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p["name"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                lock(&inner.seen).basic_infos.push(v);
                names
            }
            _ => {
                lock(&inner.seen)
                    .invalid_frames
                    .push("first frame is not basic_info".into());
                let _ = ws.close(None).await;
                return;
            }
        },
        other => {
            lock(&inner.seen)
                .invalid_frames
                .push(format!("first frame: {other:?}"));
            let _ = ws.close(None).await;
            return;
        }
    };
    // Kong's version check: same major, DP minor <= CP minor.
    let compatible = match (kong_minor(node_version), kong_minor(&inner.opts.version)) {
        (Some((dmaj, dmin)), Some((cmaj, cmin))) => dmaj == cmaj && dmin <= cmin,
        _ => false,
    };
    if !compatible {
        lock(&inner.seen).version_rejects += 1;
        let _ = ws.close(None).await;
        return;
    }
    let withheld = |plugins: &[String]| plugins.iter().any(|p| !dp_plugins.contains(p));
    let current = lock(&inner.current).clone();
    if let Some((frame, plugins)) = current {
        if withheld(&plugins) {
            lock(&inner.seen).plugin_withheld += 1;
        } else if ws
            .send(Message::Binary(Bytes::from(frame.as_ref().clone())))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                match msg {
                    Message::Ping(p) if p.len() == 32 => {
                        lock(&inner.seen).pings.push(String::from_utf8_lossy(&p).into_owned());
                    }
                    Message::Close(_) => return,
                    other => {
                        lock(&inner.seen).invalid_frames.push(format!("{other:?}"));
                    }
                }
            }
            cmd = cmds.recv() => {
                match cmd {
                    Ok(Cmd::Binary(frame)) => {
                        let is_current = lock(&inner.current)
                            .as_ref()
                            .filter(|(f, _)| Arc::ptr_eq(f, &frame))
                            .map(|(_, p)| p.clone());
                        if let Some(plugins) = is_current {
                            if withheld(&plugins) {
                                lock(&inner.seen).plugin_withheld += 1;
                                continue;
                            }
                        }
                        if ws.send(Message::Binary(Bytes::from(frame.as_ref().clone()))).await.is_err() {
                            return;
                        }
                    }
                    Ok(Cmd::Dribble { bytes, chunk, every }) => {
                        let stream = ws.get_mut();
                        for piece in bytes.chunks(chunk.max(1)) {
                            if stream.write_all(piece).await.is_err() || stream.flush().await.is_err() {
                                return;
                            }
                            tokio::time::sleep(every).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Configs shaped like a Kong CP export.

/// A flat config as Kong's CP exports it (`_transform: false`, every
/// column present, nulls, foreign keys as bare ids, workspaces and
/// parameters): one service to `upstream_port` with `path`, and routes
/// `/r0 … /r{n-1}` plus `/a`.
pub fn kong_export(upstream_port: u16, service_path: &str, n_routes: usize) -> Value {
    let svc_id = "30ad7332-0f40-4b30-9d5c-4c44e5c3f6a1";
    let ts = 1_700_000_000u64;
    let route = |i: usize, path: &str| {
        json!({
            "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("route-{i}").as_bytes()).to_string(),
            "service": svc_id,
            "name": format!("route-{i}"),
            "paths": [path],
            "protocols": ["http", "https"],
            "strip_path": true,
            "preserve_host": false,
            "hosts": null, "methods": null, "headers": null, "snis": null,
            "sources": null, "destinations": null,
            "regex_priority": 0,
            "path_handling": "v0",
            "https_redirect_status_code": 426,
            "request_buffering": true,
            "response_buffering": true,
            "tags": null,
            "created_at": ts, "updated_at": ts,
        })
    };
    let mut routes = vec![route(usize::MAX, "/a")];
    routes.extend((0..n_routes).map(|i| route(i, &format!("/r{i}"))));
    json!({
        "_format_version": "3.0",
        "_transform": false,
        "workspaces": [{"id": "a3f5c9b4-5a2f-4d2e-9d0b-5b4c5c5f0e01", "name": "default", "comment": null,
                        "config": {}, "meta": {}, "created_at": ts, "updated_at": ts}],
        "parameters": [{"key": "cluster_id", "value": "4f3f1e1c-1111-4a4a-9b9b-222233334444", "created_at": ts}],
        "services": [{
            "id": svc_id, "name": "echo", "protocol": "http", "host": "127.0.0.1",
            "port": upstream_port, "path": service_path, "retries": 5,
            "connect_timeout": 60000, "write_timeout": 60000, "read_timeout": 60000,
            "tags": null, "client_certificate": null, "tls_verify": null,
            "tls_verify_depth": null, "ca_certificates": null, "enabled": true,
            "created_at": ts, "updated_at": ts,
        }],
        "routes": routes,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn gzip_bomb_is_a_valid_gzip_stream() {
        let bomb = gzip_bomb(8 << 20);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bomb.as_slice())
            .read_to_end(&mut out)
            .expect("valid gzip (CRC and size checked)");
        assert_eq!(
            out.len(),
            (8 << 20) + r#"{"type":"reconfigure","config_table":{"x":""#.len()
        );
        assert!(out.starts_with(br#"{"type":"reconfigure""#));
        // ~1 KB per MiB: a few MB carry gigabytes.
        assert!(bomb.len() < 16 << 10, "{}", bomb.len());
    }
}
