//! TLS for the control-plane link (`kong/clustering/utils.lua` connect_cp,
//! `kong/conf_loader/parse.lua` trust-store rules).
//!
//! * The DP always presents `cluster_cert` / `cluster_cert_key`.
//! * `shared`: Kong's shared certificate is CN-only (`kong_clustering`, no
//!   SAN), which WebPKI cannot match by name; OpenSSL with a trust store of
//!   that one self-signed cert accepts exactly that cert. So: pin by DER and
//!   still check the handshake signature. SNI is `kong_clustering`.
//! * `pki`: normal WebPKI chain + name verification against
//!   `cluster_ca_cert` and `lua_ssl_trusted_certificate` (`system` = OS
//!   roots); the name is `cluster_server_name`, else the CP host.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::settings::{ClusterMtls, Settings};

/// SNI (and verified name, in Kong) of shared-mode clustering.
pub const SHARED_SERVER_NAME: &str = "kong_clustering";

/// A certificate or key setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    #[error("invalid server name '{0}' for the control plane")]
    ServerName(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn setting_err(setting: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError::Setting {
        setting,
        reason: reason.into(),
    }
}

/// A Kong certificate setting: a file path, inline PEM, or base64 of PEM
/// (`kong/conf_loader/parse.lua` try_decode_base64).
pub fn read_pem_source(setting: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    let path = Path::new(value);
    if path.exists() {
        return std::fs::read(path)
            .map_err(|e| setting_err(setting, format!("cannot read '{value}': {e}")));
    }
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => Ok(bytes),
        _ => Err(setting_err(
            setting,
            format!("'{value}' is neither a readable file nor a PEM (or base64 PEM) value"),
        )),
    }
}

/// All certificates of a PEM setting (at least one).
pub fn load_certs(
    setting: &'static str,
    value: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem_source(setting, value)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting_err(setting, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(setting_err(setting, "no certificate found in PEM"));
    }
    Ok(certs)
}

pub fn load_key(setting: &'static str, value: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem_source(setting, value)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| setting_err(setting, format!("invalid PEM: {e}")))?
        .ok_or_else(|| setting_err(setting, "no private key found in PEM"))
}

/// Accepts exactly one server certificate (by DER), as Kong's shared mode
/// effectively does; signatures are still verified so the peer must hold
/// the key.
#[derive(Debug)]
struct PinnedCertVerifier {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the client needs to open the TLS session.
#[derive(Clone)]
pub struct ClusterTls {
    pub config: Arc<ClientConfig>,
    /// SNI sent (and, in pki mode, the name verified).
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn pki_roots(settings: &Settings) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &settings.cluster_ca_cert {
        for c in load_certs("cluster_ca_cert", ca)? {
            roots
                .add(c)
                .map_err(|e| setting_err("cluster_ca_cert", e.to_string()))?;
        }
    }
    for entry in &settings.lua_ssl_trusted_certificate {
        if entry == "system" {
            // A few unreadable system certs are normal; Kong skips them too.
            match rustls_native_certs::load_native_certs() {
                Ok(certs) => {
                    let (_added, _ignored) = roots.add_parsable_certificates(certs);
                }
                Err(e) => log::warn!("[clustering] cannot load the system trust store: {e}"),
            }
            continue;
        }
        for c in load_certs("lua_ssl_trusted_certificate", entry)? {
            roots
                .add(c)
                .map_err(|e| setting_err("lua_ssl_trusted_certificate", e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(setting_err(
            "cluster_ca_cert",
            "cluster_mtls = pki but no trusted certificate could be loaded (set cluster_ca_cert or lua_ssl_trusted_certificate)",
        ));
    }
    Ok(roots)
}

/// Builds the rustls client config from Kong settings; every certificate
/// problem is a startup error.
pub fn client_tls(settings: &Settings) -> Result<ClusterTls, TlsError> {
    let cert_setting = settings
        .cluster_cert
        .as_deref()
        .ok_or_else(|| setting_err("cluster_cert", "must be set when role = data_plane"))?;
    let key_setting = settings
        .cluster_cert_key
        .as_deref()
        .ok_or_else(|| setting_err("cluster_cert_key", "must be set when role = data_plane"))?;
    let chain = load_certs("cluster_cert", cert_setting)?;
    let key = load_key("cluster_cert_key", key_setting)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;

    let (builder, name) = match settings.cluster_mtls {
        ClusterMtls::Shared => {
            let pinned = chain
                .first()
                .cloned()
                .ok_or_else(|| setting_err("cluster_cert", "no certificate"))?;
            let verifier = Arc::new(PinnedCertVerifier { pinned, provider });
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier),
                SHARED_SERVER_NAME.to_string(),
            )
        }
        ClusterMtls::Pki => {
            let roots = Arc::new(pki_roots(settings)?);
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| setting_err("cluster_ca_cert", e.to_string()))?;
            let name = settings
                .cluster_server_name
                .clone()
                .unwrap_or_else(|| settings.cluster_control_plane.host.clone());
            (builder.with_webpki_verifier(verifier), name)
        }
    };
    let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
        setting_err(
            "cluster_cert_key",
            format!("does not fit cluster_cert: {e}"),
        )
    })?;
    let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
    Ok(ClusterTls {
        config: Arc::new(config),
        server_name,
    })
}
