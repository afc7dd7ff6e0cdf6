//! Upstream TLS as Kong 3.10 applies it to a proxied request.
//!
//! Kong sets up each try's TLS from the service
//! (`kong/runloop/upstream_ssl.lua` set_service_ssl, through
//! lua-kong-nginx-module), falling back to nginx's `proxy_ssl_*`:
//!
//! - verify: `tls_verify`, else `proxy_ssl_verify` (off);
//! - depth: `tls_verify_depth`, else `proxy_ssl_verify_depth` (1) when
//!   `proxy_ssl_verify` is on (nginx sets the depth on the SSL context only
//!   then), else OpenSSL's own limit (no limit here);
//! - trust store: the service's `ca_certificates`, else
//!   `proxy_ssl_trusted_certificate` (loaded only with `proxy_ssl_verify`
//!   on), else nothing is trusted;
//! - client certificate: the service's `client_certificate`, else its
//!   upstream's (`fallback_upstream_client_cert`), else `client_ssl_cert`.
//!
//! nginx checks the chain, then the name (`$upstream_host` without its
//! port), logs "upstream SSL certificate verify error: (N:reason)" or
//! "upstream SSL certificate does not match ..." and fails the try like a
//! connect error: the next target, then Kong's 502.
//!
//! Each distinct combination is one rustls `ClientConfig`, built when a
//! configuration is compiled. A peer carries it (patched Pingora,
//! `PeerOptions::rustls_client_config`) with a `group_key` naming the
//! combination by content, so pooled connections are never shared across
//! combinations (Kong's pool key, `kong/init.lua` balancer: ip, port,
//! host, verify, depth, CA ids, client certificate id).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use config_sync::model::{self, DeclarativeConfig};
use config_sync::settings::Settings;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use uuid::Uuid;

use crate::balancer::health::tls::NoVerify;

/// What Pingora's `HttpPeer` asks for (`ALPN::H1`), so the prebuilt
/// config is used without a copy.
const ALPN_H1: &[u8] = b"http/1.1";

/// A certificate setting or entity that cannot be used for upstream TLS.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    #[error("in '{entity}s' entity '{ident}': field '{field}': {reason}")]
    Entity {
        entity: &'static str,
        ident: String,
        field: &'static str,
        reason: String,
    },
    #[error("cannot build the upstream TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A trust store and a content key (same certificates, same key).
#[derive(Debug)]
pub struct TrustStore {
    roots: Arc<RootCertStore>,
    key: u64,
}

impl TrustStore {
    /// Trusts nothing: nginx without `proxy_ssl_trusted_certificate`.
    pub fn empty() -> TrustStore {
        TrustStore {
            roots: Arc::new(RootCertStore::empty()),
            key: 0,
        }
    }

    fn new(certs: Vec<CertificateDer<'static>>) -> Result<TrustStore, rustls::Error> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut roots = RootCertStore::empty();
        for c in certs {
            c.as_ref().hash(&mut h);
            roots.add(c)?;
        }
        Ok(TrustStore {
            roots: Arc::new(roots),
            key: h.finish(),
        })
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// A client certificate and a content key.
#[derive(Debug)]
pub struct ClientCert {
    key: Arc<CertifiedKey>,
    id: u64,
}

impl ClientCert {
    fn new(key: CertifiedKey) -> ClientCert {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in &key.cert {
            c.as_ref().hash(&mut h);
        }
        ClientCert {
            key: Arc::new(key),
            id: h.finish(),
        }
    }
}

/// nginx's and Kong's process-wide upstream TLS settings, loaded once at
/// start (files read here).
#[derive(Debug, Clone)]
pub struct UpstreamTlsDefaults {
    /// `proxy_ssl_verify`.
    pub verify: bool,
    /// The depth for services without `tls_verify_depth`: nginx's
    /// `proxy_ssl_verify_depth` with `proxy_ssl_verify` on, else none.
    pub depth: Option<u32>,
    /// `proxy_ssl_trusted_certificate` with `proxy_ssl_verify` on.
    pub store: Arc<TrustStore>,
    /// `client_ssl` (`proxy_ssl_certificate`).
    pub client_cert: Option<Arc<ClientCert>>,
}

impl Default for UpstreamTlsDefaults {
    /// Kong's defaults: no verification, nothing trusted, no certificate.
    fn default() -> Self {
        UpstreamTlsDefaults {
            verify: false,
            depth: None,
            store: Arc::new(TrustStore::empty()),
            client_cert: None,
        }
    }
}

impl UpstreamTlsDefaults {
    /// Reads `proxy_ssl_trusted_certificate` (relative to the prefix, as
    /// nginx does) and `client_ssl_cert`/`_key`; nginx and Kong refuse to
    /// start when they cannot be loaded, and so does this.
    pub fn from_settings(s: &Settings) -> Result<UpstreamTlsDefaults, UpstreamTlsError> {
        let u = &s.upstream_tls;
        let mut out = UpstreamTlsDefaults::default();
        if u.proxy_ssl_verify {
            out.verify = true;
            out.depth = Some(u.proxy_ssl_verify_depth);
            if let Some(path) = u.trusted_certificate_path(&s.prefix) {
                let setting = "proxy_ssl_trusted_certificate";
                let err = |reason: String| UpstreamTlsError::Setting { setting, reason };
                let pem = std::fs::read(&path).map_err(|e| {
                    err(format!(
                        "SSL_CTX_load_verify_locations(\"{}\") failed: {e}",
                        path.display()
                    ))
                })?;
                let certs = rustls_pemfile::certs(&mut pem.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(format!("{}: invalid PEM: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(err(format!("{}: no certificate found", path.display())));
                }
                out.store = Arc::new(
                    TrustStore::new(certs).map_err(|e| err(format!("{}: {e}", path.display())))?,
                );
            }
        }
        if let Some((cert, key)) = &u.client_ssl_cert {
            // Kong's words (kong/conf_loader/parse.lua).
            let certs =
                config_sync::cluster::tls::load_certs("client_ssl_cert", cert).map_err(|_| {
                    UpstreamTlsError::Setting {
                        setting: "client_ssl_cert",
                        reason: format!("failed loading certificate from {cert}"),
                    }
                })?;
            let failed_key = || UpstreamTlsError::Setting {
                setting: "client_ssl_cert_key",
                reason: "failed loading key".to_string(),
            };
            let key = config_sync::cluster::tls::load_key("client_ssl_cert_key", key)
                .map_err(|_| failed_key())?;
            let ck = CertifiedKey::from_der(certs, key, &provider()).map_err(|_| failed_key())?;
            out.client_cert = Some(Arc::new(ClientCert::new(ck)));
        }
        Ok(out)
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// What one try's TLS needs: the prebuilt config and its pool group.
#[derive(Debug)]
pub struct PeerTls {
    pub config: Arc<ClientConfig>,
    /// For `HttpPeer::group_key`: equal only for equal TLS settings.
    pub group_key: u64,
}

/// One combination of settings, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Combination {
    verify: bool,
    depth: Option<u32>,
    store: u64,
    client: Option<u64>,
}

/// Builds each distinct combination once per compile.
pub struct Builder<'a> {
    cfg: &'a DeclarativeConfig,
    defaults: &'a UpstreamTlsDefaults,
    provider: Arc<CryptoProvider>,
    stores: HashMap<Vec<Uuid>, Arc<TrustStore>>,
    client_certs: HashMap<Uuid, Arc<ClientCert>>,
    configs: HashMap<Combination, Arc<PeerTls>>,
}

impl<'a> Builder<'a> {
    pub fn new(cfg: &'a DeclarativeConfig, defaults: &'a UpstreamTlsDefaults) -> Builder<'a> {
        Builder {
            cfg,
            defaults,
            provider: Arc::new(provider()),
            stores: HashMap::new(),
            client_certs: HashMap::new(),
            configs: HashMap::new(),
        }
    }

    /// The TLS of an https service; `upstream` is the upstream entity it
    /// balances over, if any (its `client_certificate` is the fallback).
    pub fn service(
        &mut self,
        s: &model::Service,
        upstream: Option<&model::Upstream>,
    ) -> Result<Arc<PeerTls>, UpstreamTlsError> {
        let ident = s.name.clone().unwrap_or_else(|| s.id.to_string());
        let entity_err = |field: &'static str, reason: String| UpstreamTlsError::Entity {
            entity: "service",
            ident: ident.clone(),
            field,
            reason,
        };
        let verify = s.tls_verify.unwrap_or(self.defaults.verify);
        let depth = s.tls_verify_depth.or(self.defaults.depth);
        let store = if s.ca_certificates.is_empty() {
            self.defaults.store.clone()
        } else {
            self.store(&s.ca_certificates)
                .map_err(|(id, why)| entity_err("ca_certificates", format!("'{id}': {why}")))?
        };
        let client = match (
            s.client_certificate,
            upstream.and_then(|u| u.client_certificate),
        ) {
            (Some(id), _) => Some(
                self.client_cert(id)
                    .map_err(|why| entity_err("client_certificate", why))?,
            ),
            (None, Some(id)) => {
                Some(
                    self.client_cert(id)
                        .map_err(|reason| UpstreamTlsError::Entity {
                            entity: "upstream",
                            ident: upstream.map(|u| u.name.clone()).unwrap_or_default(),
                            field: "client_certificate",
                            reason,
                        })?,
                )
            }
            (None, None) => self.defaults.client_cert.clone(),
        };
        let combo = Combination {
            verify,
            // Only verification uses a depth or a store.
            depth: depth.filter(|_| verify),
            store: if verify { store.key } else { 0 },
            client: client.as_ref().map(|c| c.id),
        };
        if let Some(done) = self.configs.get(&combo) {
            return Ok(done.clone());
        }
        let verifier: Arc<dyn ServerCertVerifier> = if verify {
            Arc::new(KongVerifier::new(
                store.roots.clone(),
                combo.depth,
                self.provider.clone(),
            ))
        } else {
            // `tls_verify` off: nginx does not even look at the
            // certificate, but the handshake signatures must hold.
            Arc::new(NoVerify(self.provider.clone()))
        };
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &client {
            Some(c) => {
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(c.key.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H1.to_vec()];
        let mut h = std::collections::hash_map::DefaultHasher::new();
        combo.hash(&mut h);
        let tls = Arc::new(PeerTls {
            config: Arc::new(config),
            group_key: h.finish(),
        });
        self.configs.insert(combo, tls.clone());
        Ok(tls)
    }

    /// The client certificate of an upstream's `https` health checks: its
    /// `client_certificate`, else `client_ssl_cert`.
    pub fn probe_client_cert(
        &mut self,
        up: &model::Upstream,
    ) -> Result<Option<Arc<CertifiedKey>>, UpstreamTlsError> {
        let cert = match up.client_certificate {
            Some(id) => Some(
                self.client_cert(id)
                    .map_err(|reason| UpstreamTlsError::Entity {
                        entity: "upstream",
                        ident: up.name.clone(),
                        field: "client_certificate",
                        reason,
                    })?,
            ),
            None => self.defaults.client_cert.clone(),
        };
        Ok(cert.map(|c| c.key.clone()))
    }

    /// The trust store of a `ca_certificates` list (Kong caches it by the
    /// sorted ids: `ca_ids_cache_key`).
    fn store(&mut self, ids: &[Uuid]) -> Result<Arc<TrustStore>, (Uuid, String)> {
        let mut key = ids.to_vec();
        key.sort();
        if let Some(s) = self.stores.get(&key) {
            return Ok(s.clone());
        }
        let mut certs = Vec::with_capacity(ids.len());
        for id in &key {
            // config-sync refuses unknown ids; this is the same check.
            let ca = self
                .cfg
                .ca_certificates
                .iter()
                .find(|c| c.id == *id)
                .ok_or_else(|| (*id, "CA Certificate does not exist".to_string()))?;
            let der = rustls_pemfile::certs(&mut ca.cert.as_bytes())
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| (*id, "not a PEM-encoded certificate".to_string()))?;
            certs.push(der);
        }
        let store = Arc::new(TrustStore::new(certs).map_err(|e| (key[0], e.to_string()))?);
        self.stores.insert(key, store.clone());
        Ok(store)
    }

    fn client_cert(&mut self, id: Uuid) -> Result<Arc<ClientCert>, String> {
        if let Some(c) = self.client_certs.get(&id) {
            return Ok(c.clone());
        }
        let c = self
            .cfg
            .certificates
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("certificate '{id}' does not exist"))?;
        if [&c.cert, &c.key]
            .iter()
            .any(|v| config_sync::validate::is_vault_reference(v))
        {
            return Err(format!(
                "certificate '{id}': vault references are not supported by this gateway"
            ));
        }
        let ck = crate::tls::certs::certified_key(c.cert.as_bytes(), c.key.as_bytes())
            .map_err(|(_, why)| format!("certificate '{id}': {why}"))?;
        let cert = Arc::new(ClientCert::new(ck));
        self.client_certs.insert(id, cert.clone());
        Ok(cert)
    }
}

/// nginx's name for the upstream certificate (`ngx_http_upstream_ssl_name`
/// on `proxy_ssl_name $upstream_host`): the Host sent upstream without its
/// port. A literal IP gets no SNI (RFC 6066), as in nginx and rustls.
pub fn ssl_name(upstream_host: &str) -> &str {
    let end = if upstream_host.starts_with('[') {
        match upstream_host.find(']') {
            Some(i) => upstream_host[i..].find(':').map(|j| i + j),
            None => upstream_host.find(':'),
        }
    } else {
        upstream_host.find(':')
    };
    let name = match end {
        Some(i) => &upstream_host[..i],
        None => upstream_host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}

/// Why a verification failed: the error rustls gets (for its alert) and
/// what nginx logs (`ngx_http_upstream_ssl_handshake`).
#[derive(Debug)]
struct Failure {
    error: rustls::Error,
    reason: String,
}

impl Failure {
    /// `upstream SSL certificate verify error: (N:OpenSSL's string)`.
    fn openssl(error: CertificateError, code: u32, why: &str) -> Failure {
        Failure {
            error: rustls::Error::InvalidCertificate(error),
            reason: format!("upstream SSL certificate verify error: ({code}:{why})"),
        }
    }
}

/// A failed chain (`webpki`) as OpenSSL reports it (`X509_V_ERR_*`).
fn chain_failure(
    e: &webpki::Error,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Failure {
    use webpki::Error as W;
    use CertificateError as C;
    let other = |code, why: &'static str| {
        Failure::openssl(C::Other(OtherError(Arc::new(OpenSslError(why)))), code, why)
    };
    match e {
        W::UnknownIssuer => {
            if self_signed(end_entity) {
                Failure::openssl(C::UnknownIssuer, 18, "self-signed certificate")
            } else if intermediates.iter().any(self_signed) {
                Failure::openssl(
                    C::UnknownIssuer,
                    19,
                    "self-signed certificate in certificate chain",
                )
            } else {
                Failure::openssl(
                    C::UnknownIssuer,
                    20,
                    "unable to get local issuer certificate",
                )
            }
        }
        W::CertExpired { .. } | W::InvalidCertValidity => {
            Failure::openssl(C::Expired, 10, "certificate has expired")
        }
        W::CertNotValidYet { .. } => {
            Failure::openssl(C::NotValidYet, 9, "certificate is not yet valid")
        }
        W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | W::SignatureAlgorithmMismatch => {
            Failure::openssl(C::BadSignature, 7, "certificate signature failure")
        }
        W::MaximumPathDepthExceeded => other(22, "certificate chain too long"),
        W::RequiredEkuNotFoundContext(_) => {
            Failure::openssl(C::InvalidPurpose, 26, "unsupported certificate purpose")
        }
        W::EndEntityUsedAsCa => other(24, "invalid CA certificate"),
        W::PathLenConstraintViolated => other(25, "path length constraint exceeded"),
        W::NameConstraintViolation => other(47, "permitted subtree violation"),
        W::BadDer | W::BadDerTime | W::TrailingData(_) => {
            Failure::openssl(C::BadEncoding, 0, "unable to decode the certificate")
        }
        other => Failure {
            error: rustls::Error::InvalidCertificate(C::Other(OtherError(Arc::new(OpenSslError(
                "verification failed",
            ))))),
            reason: format!("upstream SSL certificate verify error: ({other})"),
        },
    }
}

fn self_signed(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref())
        .is_ok_and(|(_, c)| c.tbs_certificate.subject.as_raw() == c.tbs_certificate.issuer.as_raw())
}

/// A verification error in OpenSSL's words.
#[derive(Debug)]
struct OpenSslError(&'static str);

impl std::fmt::Display for OpenSslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for OpenSslError {}

/// OpenSSL's `X509_check_host(cert, name, 0, 0)`, nginx's name check: the
/// DNS names of the subjectAltName, or, when it has none, the subject's
/// common names; case-insensitive; a wildcard only in the first label of
/// a pattern with at least two dots, matching one label (partial
/// wildcards such as `f*.example.com` allowed). An IP name is compared as
/// text: IP address entries are not looked at (nginx calls no
/// `X509_check_ip`).
pub fn check_host(der: &[u8], name: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let dns: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !dns.is_empty() {
        return dns
            .iter()
            .any(|p| equal_wildcard(p.as_bytes(), name.as_bytes()));
    }
    let by_cn = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|p| equal_wildcard(p.as_bytes(), name.as_bytes()));
    by_cn
}

/// OpenSSL's `equal_wildcard` (crypto/x509/v3_utl.c), flags 0.
fn equal_wildcard(pattern: &[u8], subject: &[u8]) -> bool {
    let star = if subject.len() > 1 && subject[0] == b'.' {
        None
    } else {
        valid_star(pattern)
    };
    match star {
        None => pattern.eq_ignore_ascii_case(subject) && !pattern.contains(&0),
        Some(i) => wildcard_match(&pattern[..i], &pattern[i + 1..], subject),
    }
}

/// OpenSSL's `valid_star`: the position of the one legal `*`, if any.
fn valid_star(p: &[u8]) -> Option<usize> {
    let (mut star, mut dots) = (None, 0);
    let (mut label_start, mut hyphen, mut idna) = (true, false, false);
    for (i, &c) in p.iter().enumerate() {
        if c == b'*' {
            let at_end = i + 1 == p.len() || p[i + 1] == b'.';
            if star.is_some() || idna || dots > 0 || (!label_start && !at_end) {
                return None;
            }
            star = Some(i);
            label_start = false;
        } else if c.is_ascii_alphanumeric() {
            if label_start && p.len() - i >= 4 && p[i..i + 4].eq_ignore_ascii_case(b"xn--") {
                idna = true;
            }
            label_start = false;
            hyphen = false;
        } else if c == b'.' {
            if label_start || hyphen {
                return None;
            }
            label_start = true;
            idna = false;
            dots += 1;
        } else if c == b'-' {
            if label_start {
                return None;
            }
            hyphen = true;
        } else {
            return None;
        }
    }
    if label_start || hyphen || dots < 2 {
        return None;
    }
    star
}

/// OpenSSL's `wildcard_match`.
fn wildcard_match(prefix: &[u8], suffix: &[u8], subject: &[u8]) -> bool {
    if subject.len() < prefix.len() + suffix.len() {
        return false;
    }
    let (start, end) = (prefix.len(), subject.len() - suffix.len());
    if !subject[..start].eq_ignore_ascii_case(prefix)
        || !subject[end..].eq_ignore_ascii_case(suffix)
    {
        return false;
    }
    let mut allow_idna = false;
    if prefix.is_empty() && suffix.first() == Some(&b'.') {
        // A whole-label wildcard matches at least one character.
        if start == end {
            return false;
        }
        allow_idna = true;
    }
    if !allow_idna && subject.len() >= 4 && subject[..4].eq_ignore_ascii_case(b"xn--") {
        return false;
    }
    let matched = &subject[start..end];
    matched == b"*"
        || matched
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// nginx's upstream verification: the chain to the trust store (dates,
/// signatures, server purpose) within OpenSSL's depth limit, at most
/// `max_depth` intermediates between the certificate and a trusted one
/// (`SSL_set_verify_depth`; Kong's spec: a leaf under one intermediate
/// fails at `tls_verify_depth` 0 and passes at 1); then the name, as
/// `X509_check_host`. Failures are logged in nginx's words.
#[derive(Debug)]
pub struct KongVerifier {
    roots: Arc<RootCertStore>,
    max_depth: Option<u32>,
    provider: Arc<CryptoProvider>,
}

impl KongVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        max_depth: Option<u32>,
        provider: Arc<CryptoProvider>,
    ) -> KongVerifier {
        KongVerifier {
            roots,
            max_depth,
            provider,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), Failure> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| chain_failure(&e, end_entity, intermediates))?;
        // Path building goes past a longer path: OpenSSL's may find
        // another too.
        let within = |path: &webpki::VerifiedPath<'_>| match self.max_depth {
            Some(max) if path.intermediate_certificates().count() > max as usize => {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
            _ => Ok(()),
        };
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&within),
        )
        .map_err(|e| chain_failure(&e, end_entity, intermediates))?;
        let name = name.to_str();
        if !check_host(end_entity.as_ref(), &name) {
            return Err(Failure {
                error: rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                reason: format!("upstream SSL certificate does not match \"{name}\""),
            });
        }
        Ok(())
    }
}

impl ServerCertVerifier for KongVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, server_name, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(f) => {
                log::error!(
                    "{} while SSL handshaking to upstream, ssl name: \"{}\"",
                    f.reason,
                    server_name.to_str()
                );
                Err(f.error)
            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    struct Pki {
        root: rcgen::Certificate,
        inter: rcgen::Certificate,
        inter_key: KeyPair,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    }

    /// Root -> intermediate, as Kong's `spec/fixtures/mtls_certs`.
    fn pki(cn: &str) -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params(cn).self_signed(&root_key).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let inter = ca_params("Intermediate CA")
            .signed_by(&inter_key, &root, &root_key)
            .unwrap();
        Pki {
            root,
            inter,
            inter_key,
        }
    }

    fn issue(pki: &Pki, p: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &pki.inter, &pki.inter_key)
            .unwrap()
            .der()
            .clone()
    }

    fn leaf(pki: &Pki, name: &str, expired: bool) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        issue(pki, p)
    }

    fn verifier(roots: &[&CertificateDer<'static>], depth: Option<u32>) -> KongVerifier {
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add((*r).clone()).unwrap();
        }
        KongVerifier::new(Arc::new(store), depth, Arc::new(provider()))
    }

    fn verify(
        v: &KongVerifier,
        leaf: &CertificateDer<'static>,
        chain: &[CertificateDer<'static>],
        name: &str,
    ) -> Result<(), String> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify(leaf, chain, &name, UnixTime::now())
            .map_err(|f| f.reason)
    }

    #[test]
    fn depth_counts_intermediates_as_openssl_does() {
        // Kong's spec: leaf <- intermediate <- trusted root fails at
        // tls_verify_depth 0 and passes at 1.
        let pki = pki("Root CA");
        let l = leaf(&pki, "example.com", false);
        let chain = [pki.inter.der().clone()];
        let at = |d| verify(&verifier(&[pki.root.der()], d), &l, &chain, "example.com");
        assert_eq!(
            at(Some(0)).unwrap_err(),
            "upstream SSL certificate verify error: (22:certificate chain too long)"
        );
        at(Some(1)).unwrap();
        at(Some(5)).unwrap();
        at(None).unwrap();
        // The intermediate trusted itself: a shorter path, depth 0 is enough.
        let v = verifier(&[pki.root.der(), pki.inter.der()], Some(0));
        verify(&v, &l, &chain, "example.com").unwrap();
        // And the rustls entry point agrees.
        let name = ServerName::try_from("example.com").unwrap();
        let v = verifier(&[pki.root.der()], Some(0));
        assert!(v
            .verify_server_cert(&l, &chain, &name, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn failures_in_nginx_words() {
        let pki = pki("Root CA");
        let other = super::tests::pki("Other Root");
        let l = leaf(&pki, "example.com", false);
        let chain = [pki.inter.der().clone()];
        assert_eq!(
            verify(
                &verifier(&[other.root.der()], None),
                &l,
                &chain,
                "example.com"
            )
            .unwrap_err(),
            "upstream SSL certificate verify error: (20:unable to get local issuer certificate)"
        );
        // Nothing trusted (no proxy_ssl_trusted_certificate).
        let empty = verifier(&[], None);
        assert!(verify(&empty, &l, &chain, "example.com")
            .unwrap_err()
            .contains("(20:"));
        // The root sent along but not trusted.
        let full = [pki.inter.der().clone(), pki.root.der().clone()];
        assert_eq!(
            verify(&empty, &l, &full, "example.com").unwrap_err(),
            "upstream SSL certificate verify error: (19:self-signed certificate in certificate chain)"
        );
        // A self-signed upstream.
        let key = KeyPair::generate().unwrap();
        let selfie = CertificateParams::new(vec!["example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            verify(&empty, selfie.der(), &[], "example.com").unwrap_err(),
            "upstream SSL certificate verify error: (18:self-signed certificate)"
        );
        let v = verifier(&[pki.root.der()], Some(1));
        assert_eq!(
            verify(&v, &l, &chain, "other.test").unwrap_err(),
            "upstream SSL certificate does not match \"other.test\""
        );
        let old = leaf(&pki, "example.com", true);
        assert_eq!(
            verify(&v, &old, &chain, "example.com").unwrap_err(),
            "upstream SSL certificate verify error: (10:certificate has expired)"
        );
    }

    #[test]
    fn names_are_checked_as_x509_check_host_does() {
        let pki = pki("Root CA");
        let with = |sans: Vec<SanType>, cn: Option<&str>| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = sans;
            p.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(cn) = cn {
                p.distinguished_name.push(DnType::CommonName, cn);
            }
            issue(&pki, p)
        };
        let dns = |n: &str| SanType::DnsName(n.try_into().unwrap());
        let ip = SanType::IpAddress("127.0.0.1".parse().unwrap());

        // No DNS name in the SAN: the common name (IP entries do not count).
        let cn_only = with(vec![], Some("legacy.test"));
        assert!(check_host(&cn_only, "legacy.test"));
        assert!(check_host(&cn_only, "LEGACY.test"));
        let ip_and_cn = with(vec![ip.clone()], Some("127.0.0.1"));
        assert!(check_host(&ip_and_cn, "127.0.0.1"), "the CN, as text");
        let ip_only = with(vec![ip], None);
        assert!(
            !check_host(&ip_only, "127.0.0.1"),
            "IP entries are not looked at"
        );
        // DNS names present: the common name is ignored.
        let both = with(vec![dns("a.test")], Some("b.test"));
        assert!(check_host(&both, "a.test"));
        assert!(!check_host(&both, "b.test"));
        let ip_as_dns = with(vec![dns("127.0.0.1")], None);
        assert!(check_host(&ip_as_dns, "127.0.0.1"));

        // Wildcards: first label only, one label, at least two dots after.
        let wild = with(
            vec![dns("*.example.com"), dns("f*.partial.test"), dns("*.com")],
            None,
        );
        assert!(check_host(&wild, "a.example.com"));
        assert!(!check_host(&wild, "example.com"));
        assert!(!check_host(&wild, "a.b.example.com"));
        assert!(check_host(&wild, "foo.partial.test"));
        assert!(!check_host(&wild, "bar.partial.test"));
        assert!(!check_host(&wild, "x.com"), "*.com: too few dots");

        // Through the verifier, with the chain.
        let v = verifier(&[pki.root.der()], None);
        let chain = [pki.inter.der().clone()];
        verify(&v, &cn_only, &chain, "legacy.test").unwrap();
        verify(&v, &ip_and_cn, &chain, "127.0.0.1").unwrap();
        assert_eq!(
            verify(&v, &ip_only, &chain, "127.0.0.1").unwrap_err(),
            "upstream SSL certificate does not match \"127.0.0.1\""
        );
    }

    #[test]
    fn the_name_is_the_upstream_host_without_its_port() {
        assert_eq!(ssl_name("example.com"), "example.com");
        assert_eq!(ssl_name("example.com:8443"), "example.com");
        assert_eq!(ssl_name("127.0.0.1:443"), "127.0.0.1");
        assert_eq!(ssl_name("[::1]:8443"), "::1");
        assert_eq!(ssl_name("[::1]"), "::1");
        assert_eq!(ssl_name(""), "");
    }

    fn config(extra: &str) -> DeclarativeConfig {
        let pki = pki("Root CA");
        let yaml = format!(
            "_format_version: '3.0'\nca_certificates:\n  - id: 5e2f9d34-0000-4000-8000-000000000001\n    cert: {}\n{extra}",
            serde_json::to_string(&pki.root.pem()).unwrap()
        );
        config_sync::parse_declarative_str(&yaml, &Default::default()).unwrap()
    }

    #[test]
    fn one_config_per_distinct_combination() {
        let cfg = config(
            r#"
services:
  - {name: a, url: "https://a.test", tls_verify: true, ca_certificates: [5e2f9d34-0000-4000-8000-000000000001]}
  - {name: b, url: "https://b.test", tls_verify: true, ca_certificates: [5e2f9d34-0000-4000-8000-000000000001]}
  - {name: c, url: "https://c.test", tls_verify: true, tls_verify_depth: 0, ca_certificates: [5e2f9d34-0000-4000-8000-000000000001]}
  - {name: d, url: "https://d.test", tls_verify: true}
  - {name: e, url: "https://e.test"}
  - {name: f, url: "https://f.test", tls_verify: false, ca_certificates: [5e2f9d34-0000-4000-8000-000000000001]}
"#,
        );
        let defaults = UpstreamTlsDefaults::default();
        let mut b = Builder::new(&cfg, &defaults);
        let t: Vec<Arc<PeerTls>> = cfg
            .services
            .iter()
            .map(|s| b.service(s, None).unwrap())
            .collect();
        assert!(Arc::ptr_eq(&t[0], &t[1]), "same settings, one config");
        let keys: Vec<u64> = t.iter().map(|p| p.group_key).collect();
        assert_ne!(keys[0], keys[2], "depth differs");
        assert_ne!(keys[0], keys[3], "trust store differs");
        // Without verification the store and depth do not matter.
        assert!(Arc::ptr_eq(&t[4], &t[5]));
        assert_eq!(t[0].config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(b.configs.len(), 4);
    }
}
