//! Downstream TLS of `ssl` proxy listeners: the rustls server config built
//! from Kong's `ssl_*` settings, and the certificate resolver that reads the
//! live configuration snapshot on every handshake (so a config push or a
//! SIGHUP changes the certificate of the next handshake, with no restart).

pub mod certs;
pub mod defaults;

use std::sync::Arc;

use config_sync::settings::{CipherSuite, SslSettings, TlsProtocol};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};

pub use certs::{CertError, CertIndex};
pub use defaults::{DefaultCertError, DefaultCerts};

use crate::snapshot::ConfigHandle;

/// Why the TLS settings cannot be served (start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Default(#[from] DefaultCertError),
    #[error("ssl_ciphers: none of '{0}' is served by this gateway (TLS 1.2 ciphers served: {1})")]
    NoCipher(String, String),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Picks each handshake's certificate from the snapshot live at that
/// moment (`ArcSwap` load, no lock), then the default certificate.
#[derive(Debug)]
pub struct SniResolver {
    pub config: ConfigHandle,
    pub defaults: DefaultCerts,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        let snapshot = self.config.load();
        match snapshot.server_certs.find(hello.server_name()) {
            Some(pair) => Some(pair.choose(offered)),
            None => self.defaults.choose(offered),
        }
    }
}

/// OpenSSL's names of the TLS 1.2 suites rustls (ring) has.
const TLS12_SUITES: [(&str, SupportedCipherSuite); 6] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// nginx's `$ssl_cipher` (OpenSSL's name) for a negotiated rustls suite.
pub fn openssl_cipher_name(rustls_name: &str) -> String {
    match rustls_name {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256".to_string(),
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384".to_string(),
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256".to_string(),
        other => TLS12_SUITES
            .iter()
            .find(|(_, s)| s.suite().as_str() == Some(other))
            .map_or_else(|| other.to_string(), |(n, _)| (*n).to_string()),
    }
}

/// The cipher suites for Kong's `ssl_cipher_suite` / `ssl_ciphers`, and
/// the entries of the list that rustls cannot serve (DHE, CBC, RSA key
/// exchange, 3DES; OpenSSL keywords such as `HIGH` or `!aNULL`). TLS 1.3
/// suites are always all three, as with OpenSSL (`ssl_ciphers` does not
/// cover TLS 1.3).
fn suites(ssl: &SslSettings) -> Result<(Vec<SupportedCipherSuite>, Vec<String>), TlsSetupError> {
    let mut out = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let mut unmapped = Vec::new();
    match (ssl.cipher_suite, ssl.ciphers.as_deref()) {
        // OpenSSL's "TLSv1.2+FIPS:kRSA+FIPS": the FIPS-approved AEADs
        // rustls has (AES-GCM with ECDHE; ring is not a validated module).
        (CipherSuite::Fips, _) => {
            out.extend(
                TLS12_SUITES
                    .iter()
                    .filter(|(n, _)| n.contains("AES"))
                    .map(|(_, s)| *s),
            );
            out.retain(|s| s.suite() != cs::TLS13_CHACHA20_POLY1305_SHA256.suite());
        }
        (_, None) => out.extend(TLS12_SUITES.iter().map(|(_, s)| *s)),
        (_, Some(list)) => {
            let mut tls12 = Vec::new();
            for name in list
                .split([':', ',', ' '])
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                match TLS12_SUITES.iter().find(|(n, _)| *n == name) {
                    Some((_, s)) if !tls12.contains(s) => tls12.push(*s),
                    Some(_) => {}
                    None => unmapped.push(name.to_string()),
                }
            }
            let wants_tls12 = ssl.protocols.contains(&TlsProtocol::TlsV1_2);
            if tls12.is_empty() && wants_tls12 {
                let served: Vec<&str> = TLS12_SUITES.iter().map(|(n, _)| *n).collect();
                return Err(TlsSetupError::NoCipher(list.to_string(), served.join(":")));
            }
            out.extend(tls12);
        }
    }
    Ok((out, unmapped))
}

/// The rustls server config of `ssl` proxy listeners.
pub fn server_config(
    ssl: &SslSettings,
    resolver: Arc<SniResolver>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let (cipher_suites, unmapped) = suites(ssl)?;
    if !unmapped.is_empty() && ssl.cipher_suite == CipherSuite::Custom {
        log::warn!(
            "ssl_ciphers: not served by this gateway (rustls has no DHE, CBC, RSA key exchange or 3DES suites, and OpenSSL keywords are not read): {}",
            unmapped.join(":")
        );
    }
    let unserved: Vec<&str> = ssl
        .protocols
        .iter()
        .filter(|p| !p.served())
        .map(|p| p.as_str())
        .collect();
    if !unserved.is_empty() {
        log::warn!(
            "ssl protocols not served (rustls speaks TLSv1.2 and TLSv1.3 only): {}",
            unserved.join(" ")
        );
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if ssl.protocols.contains(&TlsProtocol::TlsV1_3) {
        versions.push(&rustls::version::TLS13);
    }
    if ssl.protocols.contains(&TlsProtocol::TlsV1_2) {
        versions.push(&rustls::version::TLS12);
    }
    let provider = CryptoProvider {
        cipher_suites,
        ..rustls::crypto::ring::default_provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.ignore_client_order = ssl.prefer_server_ciphers;
    // HTTP/1.1; `http2` listeners get a copy offering h2 first
    // (`proxy::edge`). A client offering ALPN without anything served is
    // refused, as nginx refuses one offering nothing it serves.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // nginx's `shared:SSL:<size>` holds about 4000 sessions per MiB.
    let sessions = usize::try_from(ssl.session_cache_size / 1024 * 4)
        .unwrap_or(usize::MAX)
        .max(1);
    config.session_storage = ServerSessionMemoryCache::new(sessions);
    if ssl.session_tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> SslSettings {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        config_sync::settings::Settings::load(None, env)
            .unwrap()
            .ssl
    }

    fn names(s: &SslSettings) -> Vec<String> {
        suites(s)
            .unwrap()
            .0
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn named_suites_map_to_rustls() {
        let intermediate = names(&settings(&[]));
        assert_eq!(intermediate.len(), 9, "{intermediate:?}");
        let fips = names(&settings(&[("KONG_SSL_CIPHER_SUITE", "fips")]));
        assert!(fips.iter().all(|n| !n.contains("CHACHA")), "{fips:?}");
        assert_eq!(fips.len(), 6);
        let custom = settings(&[
            ("KONG_SSL_CIPHER_SUITE", "custom"),
            (
                "KONG_SSL_CIPHERS",
                "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:HIGH",
            ),
        ]);
        let (got, unmapped) = suites(&custom).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(unmapped, vec!["DHE-RSA-AES128-GCM-SHA256", "HIGH"]);
        let none = settings(&[
            ("KONG_SSL_CIPHER_SUITE", "custom"),
            ("KONG_SSL_CIPHERS", "AES128-SHA"),
        ]);
        assert!(matches!(suites(&none), Err(TlsSetupError::NoCipher(..))));
    }

    #[test]
    fn openssl_names() {
        assert_eq!(
            openssl_cipher_name("TLS13_AES_256_GCM_SHA384"),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            openssl_cipher_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }
}
