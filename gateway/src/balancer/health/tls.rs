//! TLS for `https` active health checks.
//!
//! Kong verifies the target's certificate unless
//! `https_verify_certificate` is off; without verification the handshake
//! still has to complete (a target that cannot speak TLS is down).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// Accepts any certificate but still checks the handshake signatures
/// (health probes and upstream `tls_verify` off).
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// The connector for one upstream's https probes (Debug for the balancer).
#[derive(Clone)]
pub struct ProbeTls(pub TlsConnector);

impl std::fmt::Debug for ProbeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeTls")
    }
}

/// The connector for one upstream's https probes.
pub fn connector(verify: bool) -> ProbeTls {
    connector_with_cert(verify, None)
}

/// Like [`connector`], presenting `client_cert`: Kong's healthchecker uses
/// the upstream's `client_certificate`, else `client_ssl_cert`
/// (`kong/runloop/balancer/healthcheckers.lua` create_healthchecker).
pub fn connector_with_cert(verify: bool, client_cert: Option<Arc<CertifiedKey>>) -> ProbeTls {
    ProbeTls(build(verify, client_cert))
}

fn build(verify: bool, client_cert: Option<Arc<CertifiedKey>>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            log::error!("https health checks: TLS setup failed: {e}");
            return TlsConnector::from(Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            ));
        }
    };
    let config = if verify {
        let mut roots = RootCertStore::empty();
        match rustls_native_certs::load_native_certs() {
            Ok(certs) => {
                for cert in certs {
                    let _ = roots.add(cert);
                }
            }
            Err(e) => log::warn!("https health checks: no system CA certificates: {e}"),
        }
        let builder = builder.with_root_certificates(roots);
        match client_cert {
            Some(ck) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ck))),
            None => builder.with_no_client_auth(),
        }
    } else {
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)));
        match client_cert {
            Some(ck) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ck))),
            None => builder.with_no_client_auth(),
        }
    };
    TlsConnector::from(Arc::new(config))
}

/// The SNI for a probe: `https_sni`, else the target host (IPs included).
pub fn server_name(sni: Option<&str>, host: &str) -> Option<ServerName<'static>> {
    let name = sni
        .unwrap_or(host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(name.to_string()).ok()
}
