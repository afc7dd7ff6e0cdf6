//! A small synchronous TLS client for the downstream TLS specs (`ssl` proxy
//! listeners), and self-signed certificates made with rcgen.
//!
//! - [`SelfSigned`]: a certificate and key (ECDSA P-256 or Ed25519 by
//!   default; see [`SelfSigned::new`]) with a CN and DNS names.
//! - [`TlsClient`]: rustls over a blocking `TcpStream` that accepts any
//!   server certificate and keeps what the server showed (leaf DER, SNI
//!   sent, protocol version, cipher, ALPN, whether the session resumed),
//!   then speaks raw HTTP/1.1 with [`crate::parse_response`].
#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::Response;

/// A self-signed certificate with its key, as PEM.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    /// The leaf in DER: what a client sees in the handshake.
    pub der: Vec<u8>,
}

impl SelfSigned {
    /// ECDSA P-256, `CN=<cn>`, subjectAltName `names`.
    pub fn new(cn: &str, names: &[&str]) -> SelfSigned {
        SelfSigned::with_alg(cn, names, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// Another key type (e.g. `rcgen::PKCS_ED25519`, or P-384): a
    /// certificate entity's `cert_alt` must differ from its `cert`.
    pub fn with_alg(
        cn: &str,
        names: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> SelfSigned {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        SelfSigned {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// The PEMs indented for a YAML block scalar at `indent` spaces.
    pub fn yaml(pem: &str, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let mut out = String::from("|\n");
        for line in pem.lines() {
            out.push_str(&pad);
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Accepts any certificate (the specs check which one was served).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
}

/// How a client connects.
#[derive(Clone)]
pub struct TlsOptions {
    /// `None`: no SNI extension (rustls sends none for an IP address).
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// Signature schemes the client accepts (`None`: all it has).
    pub schemes: Option<Vec<SignatureScheme>>,
    /// Share one to resume sessions across connections.
    pub resumption: Option<Arc<ClientConfig>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            sni: None,
            alpn: vec![b"http/1.1".to_vec()],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            schemes: None,
            resumption: None,
        }
    }
}

impl TlsOptions {
    pub fn sni(name: &str) -> TlsOptions {
        TlsOptions {
            sni: Some(name.to_string()),
            ..TlsOptions::default()
        }
    }

    /// The client config these options make (reuse it across connections
    /// to resume sessions: it holds the session store).
    pub fn config(&self) -> Arc<ClientConfig> {
        if let Some(c) = &self.resumption {
            return c.clone();
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(schemes) = &self.schemes {
            let schemes = schemes.clone();
            let all = provider.signature_verification_algorithms;
            let mappings: Vec<_> = all
                .mapping
                .iter()
                .filter(|(s, _)| schemes.contains(s))
                .copied()
                .collect();
            provider.signature_verification_algorithms =
                rustls::crypto::WebPkiSupportedAlgorithms {
                    all: all.all,
                    mapping: Box::leak(mappings.into_boxed_slice()),
                };
        }
        let provider = Arc::new(provider);
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        config.alpn_protocols = self.alpn.clone();
        config.resumption = Resumption::in_memory_sessions(32);
        Arc::new(config)
    }
}

/// One TLS connection to the gateway.
pub struct TlsClient {
    pub stream: rustls::StreamOwned<ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects to 127.0.0.1:`port` and completes the handshake.
    pub fn connect(port: u16, opts: &TlsOptions) -> Result<TlsClient, String> {
        TlsClient::connect_with(port, opts, &opts.config(), b"")
    }

    /// Like [`TlsClient::connect`] with `config` (to resume its sessions)
    /// and `preamble` sent in clear first (a PROXY protocol header).
    pub fn connect_with(
        port: u16,
        opts: &TlsOptions,
        config: &Arc<ClientConfig>,
        preamble: &[u8],
    ) -> Result<TlsClient, String> {
        let name = match &opts.sni {
            Some(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
            None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        tcp.write_all(preamble).map_err(|e| e.to_string())?;
        let mut conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        Ok(TlsClient {
            stream: rustls::StreamOwned::new(conn, tcp),
        })
    }

    /// The leaf certificate the server sent.
    pub fn peer_der(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    pub fn peer_cn(&self) -> Option<String> {
        common_name(&self.peer_der())
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn resumed(&self) -> bool {
        matches!(
            self.stream.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        )
    }

    /// Sends one raw request and reads one response (Connection: close
    /// framing or a length).
    pub fn request(&mut self, raw: &[u8]) -> io::Result<Response> {
        self.stream.write_all(raw)?;
        self.stream.flush()?;
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((r, _)) = crate::parse_response(&buf) {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no response"));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A close without close_notify ends the response too.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        crate::parse_response(&buf)
            .map(|(r, _)| r)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete response"))
    }

    /// `GET path` with `Host: host`.
    pub fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut h: Vec<(&str, &str)> = vec![("Host", host)];
        h.extend_from_slice(headers);
        let raw = crate::build_request("GET", path, &h, b"");
        self.request(&raw).unwrap()
    }
}

/// One `GET` over a new TLS connection with `sni`.
pub fn https_get(port: u16, sni: Option<&str>, host: &str, path: &str) -> Response {
    let opts = TlsOptions {
        sni: sni.map(str::to_string),
        ..TlsOptions::default()
    };
    let mut c = TlsClient::connect(port, &opts).unwrap();
    c.get(host, path, &[("Connection", "close")])
}

/// The certificate a handshake with `sni` gets.
pub fn served_cert(port: u16, sni: Option<&str>) -> Vec<u8> {
    let opts = TlsOptions {
        sni: sni.map(str::to_string),
        ..TlsOptions::default()
    };
    TlsClient::connect(port, &opts).unwrap().peer_der()
}
