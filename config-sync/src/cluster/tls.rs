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

use crate::settings::{is_sensitive, ClusterMtls, Settings};

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
/// (`kong/conf_loader/parse.lua` try_decode_base64). Errors name the setting
/// and say why; the value is quoted only for settings that are not
/// sensitive (`cluster_cert_key` never is: it may be the key itself).
pub fn read_pem_source(setting: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    let secret = is_sensitive(setting);
    let path = Path::new(value);
    if path.exists() {
        return std::fs::read(path).map_err(|e| {
            if secret {
                setting_err(setting, format!("cannot read the file it names: {e}"))
            } else {
                setting_err(setting, format!("cannot read '{value}': {e}"))
            }
        });
    }
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => Ok(bytes),
        _ if secret => Err(setting_err(
            setting,
            "is neither a readable file nor a PEM (or base64 PEM) value (value not shown: sensitive setting)",
        )),
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

/// The private key of a PEM setting, checked to be one rustls can sign
/// with. PEM parser errors can quote the input (a section marker, a line),
/// so for a key they are replaced by what was wrong, in our words.
pub fn load_key(setting: &'static str, value: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem_source(setting, value)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|_| setting_err(setting, "invalid PEM: cannot decode a private key from it"))?
        .ok_or_else(|| setting_err(setting, "no private key found in PEM"))?;
    rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| {
            setting_err(
                setting,
                "not a usable private key (RSA of 2048+ bits, ECDSA P-256/P-384 or Ed25519)",
            )
        })?;
    Ok(key)
}

/// Accepts exactly one server certificate (by DER), as Kong's shared mode
/// effectively does; signatures are still verified so the peer must hold
/// the key.
///
/// Kong's DP connects with `ssl_verify = true` and the shared cert as a
/// trusted certificate (`kong/clustering/utils.lua` connect_cp,
/// `kong/conf_loader/parse.lua`: `insert(conf.lua_ssl_trusted_certificate,
/// conf.cluster_cert)`); OpenSSL then verifies the trusted self-signed leaf
/// like any chain, validity dates included (no `X509_V_FLAG_NO_CHECK_TIME`),
/// so an expired (or not yet valid) shared cert fails the handshake with
/// "certificate has expired". The same here.
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
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() != self.pinned.as_ref() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        check_validity(end_entity.as_ref(), now)?;
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

/// `notBefore` / `notAfter` of a DER certificate, in UNIX seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.max(0).unsigned_abs()))
}

/// OpenSSL's time check (`X509_V_ERR_CERT_NOT_YET_VALID` /
/// `X509_V_ERR_CERT_HAS_EXPIRED`) for the pinned certificate.
fn check_validity(der: &[u8], now: UnixTime) -> Result<(), rustls::Error> {
    let (not_before, not_after) = validity(der).ok_or(rustls::Error::InvalidCertificate(
        rustls::CertificateError::BadEncoding,
    ))?;
    let t = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if t < not_before {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidYetContext {
                time: now,
                not_before: unix_time(not_before),
            },
        ));
    }
    if t > not_after {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ExpiredContext {
                time: now,
                not_after: unix_time(not_after),
            },
        ));
    }
    Ok(())
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
            // Kong starts with an expired shared cert and fails every
            // handshake; say why once, at startup, too.
            if let Some((_, not_after)) = validity(pinned.as_ref()) {
                let now = UnixTime::now().as_secs();
                if i64::try_from(now).is_ok_and(|now| now > not_after) {
                    log::warn!(
                        "[clustering] cluster_cert expired (notAfter {not_after} UNIX): in shared mode the control plane presents it and it will be refused"
                    );
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed `kong_clustering` cert (as `kong hybrid gen_cert`)
    /// valid in `[from, to]` (years), and its key.
    fn shared_cert(from: i32, to: i32) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, SHARED_SERVER_NAME);
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let cert = params.self_signed(&key).expect("self-sign");
        (cert.pem(), key.serialize_pem())
    }

    /// The error for `cluster_cert_key = value` names the setting and shows
    /// nothing of the value (no 6-character run of it).
    fn assert_key_error_hides(value: &str) {
        let err = load_key("cluster_cert_key", value).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.starts_with("cluster_cert_key: "), "{msg}");
        let chars: Vec<char> = value.chars().collect();
        for w in chars.windows(6) {
            let frag: String = w.iter().collect();
            if frag.trim().len() == 6 {
                assert!(!msg.contains(&frag), "'{frag}' of the value leaked: {msg}");
            }
        }
    }

    #[test]
    fn bad_key_values_are_never_echoed() {
        // Inline PEM with garbage inside, and one whose markers do not close.
        assert_key_error_hides(
            "-----BEGIN PRIVATE KEY-----\nZm9vYmFyc2VjcmV0a2V5bWF0ZXJpYWw!!!\n-----END PRIVATE KEY-----\n",
        );
        assert_key_error_hides("-----BEGIN SECRETKEYMATERIAL-----MIIEvQIBADANBgkqhkiG9w0BAQEF");
        // Decodes as PEM but holds no usable key.
        assert_key_error_hides(
            "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD\n-----END PRIVATE KEY-----\n",
        );
        // A long base64 string that is no PEM.
        let b64 = "TUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFDN1Z3K2tleW1hdGVyaWFs".repeat(4);
        assert_key_error_hides(&b64);
        // A path that does not exist.
        assert_key_error_hides("/nonexistent-9f8e7d/zq-hidden-material-x1.pem");
        // A certificate where the key should be: still nothing echoed.
        let (cert, _) = shared_cert(2020, 2090);
        assert_key_error_hides(&cert);
    }

    #[test]
    fn non_sensitive_settings_still_quote_the_value() {
        let err = load_certs("cluster_cert", "/nonexistent-9f8e7d/cluster.crt")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("/nonexistent-9f8e7d/cluster.crt"), "{err}");
    }

    #[test]
    fn inline_and_base64_keys_load() {
        let (_, key) = shared_cert(2020, 2090);
        assert!(load_key("cluster_cert_key", &key).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
        assert!(load_key("cluster_cert_key", &b64).is_ok());
    }

    fn pinned(pem: &str) -> PinnedCertVerifier {
        PinnedCertVerifier {
            pinned: load_certs("cluster_cert", pem).expect("cert").remove(0),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn verify(v: &PinnedCertVerifier, der: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(SHARED_SERVER_NAME).expect("name");
        v.verify_server_cert(der, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn shared_mode_refuses_an_expired_or_not_yet_valid_pinned_cert() {
        let (valid, _) = shared_cert(2020, 2090);
        let v = pinned(&valid);
        let der = v.pinned.clone();
        assert!(verify(&v, &der).is_ok());

        let (other, _) = shared_cert(2020, 2090);
        let other = load_certs("cluster_cert", &other).expect("cert").remove(0);
        assert!(matches!(
            verify(&v, &other),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure
            ))
        ));

        let (expired, _) = shared_cert(2000, 2001);
        let v = pinned(&expired);
        let der = v.pinned.clone();
        let err = verify(&v, &der).expect_err("expired");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("expired"), "{err}");

        let (future, _) = shared_cert(2080, 2090);
        let v = pinned(&future);
        let der = v.pinned.clone();
        assert!(matches!(
            verify(&v, &der),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYetContext { .. }
            ))
        ));
    }
}
