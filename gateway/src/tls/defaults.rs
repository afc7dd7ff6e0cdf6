//! The default certificate of `ssl` proxy listeners: Kong's `ssl_cert` /
//! `ssl_cert_key` (each entry a file path, inline PEM or base64 PEM, as
//! `conf_loader/parse.lua` takes them), or, when unset, the self-signed
//! pair Kong's `prefix_handler.lua` `gen_default_ssl_cert` writes under
//! `<prefix>/ssl/` (kept across restarts, reused when present).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::certs::certified_key;

/// Why the default certificate could not be set up (start-up error).
#[derive(Debug, thiserror::Error)]
pub enum DefaultCertError {
    /// Kong's wording: "ssl_cert: failed loading certificate from <value>".
    #[error("{key}: failed loading {what} from {value}: {reason}")]
    Load {
        key: &'static str,
        what: &'static str,
        /// The path, or `<inline value>` (a key is never echoed).
        value: String,
        reason: String,
    },
    #[error("cannot write the default certificate under '{path}': {reason}")]
    Write { path: String, reason: String },
    #[error("cannot generate the default certificate: {0}")]
    Generate(String),
}

/// The default certificates, one per key type (nginx holds an RSA and an
/// ECDSA one side by side and picks by what the client verifies).
#[derive(Debug, Clone)]
pub struct DefaultCerts {
    keys: Vec<Arc<CertifiedKey>>,
}

impl DefaultCerts {
    /// The key the client can verify, in the client's order of signature
    /// schemes; the first one otherwise.
    pub fn choose(&self, offered: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        if self.keys.len() > 1 {
            for scheme in offered {
                let one = std::slice::from_ref(scheme);
                if let Some(k) = self
                    .keys
                    .iter()
                    .find(|k| k.key.choose_scheme(one).is_some())
                {
                    return Some(k.clone());
                }
            }
        }
        self.keys.first().cloned()
    }

    /// From `ssl_cert` / `ssl_cert_key` (same length, checked by the
    /// settings), or generated under `prefix` when both are empty.
    pub fn load(
        cert: &[String],
        cert_key: &[String],
        prefix: &Path,
    ) -> Result<DefaultCerts, DefaultCertError> {
        if cert.is_empty() {
            return generated(prefix);
        }
        let mut keys = Vec::with_capacity(cert.len());
        for (c, k) in cert.iter().zip(cert_key) {
            let cert_pem = read_value(c, "ssl_cert", "certificate")?;
            let key_pem = read_value(k, "ssl_cert_key", "key")?;
            let ck = certified_key(&cert_pem, &key_pem).map_err(|(on_cert, reason)| {
                let (key, what, v) = if on_cert {
                    ("ssl_cert", "certificate", c)
                } else {
                    ("ssl_cert_key", "key", k)
                };
                DefaultCertError::Load {
                    key,
                    what,
                    value: shown(v),
                    reason,
                }
            })?;
            keys.push(Arc::new(ck));
        }
        Ok(DefaultCerts { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A path is named as written; inline material is not echoed.
fn shown(v: &str) -> String {
    if v.contains('\n') || v.contains("-----") || !Path::new(v).is_absolute() && v.len() > 64 {
        "<inline value>".to_string()
    } else {
        v.to_string()
    }
}

/// Kong: `exists(value)` reads the file; otherwise `try_decode_base64`
/// (a value that is not base64, such as inline PEM, stays as written).
fn read_value(v: &str, key: &'static str, what: &'static str) -> Result<Vec<u8>, DefaultCertError> {
    let path = Path::new(v);
    if path.exists() {
        return std::fs::read(path).map_err(|e| DefaultCertError::Load {
            key,
            what,
            value: v.to_string(),
            reason: e.to_string(),
        });
    }
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact));
    Ok(match decoded {
        Ok(bytes) if !v.contains("-----") => bytes,
        _ => v.as_bytes().to_vec(),
    })
}

/// Kong's `ssl/kong-default.{crt,key}` (RSA) and
/// `ssl/kong-default-ecdsa.{crt,key}` (P-256): each pair is used when both
/// files exist; a missing ECDSA pair is generated (CN=localhost, Kong's
/// subject, 20 years). ring generates no RSA keys, so the RSA pair is only
/// used when present (e.g. left by Kong in the same prefix).
fn generated(prefix: &Path) -> Result<DefaultCerts, DefaultCertError> {
    let dir = prefix.join("ssl");
    let mut keys = Vec::new();
    for (stem, generate) in [("kong-default-ecdsa", true), ("kong-default", false)] {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        if !(crt.exists() && key.exists()) {
            if !generate {
                continue;
            }
            let (crt_pem, key_pem) = generate_ecdsa()?;
            let write = |p: &Path, bytes: &[u8]| {
                config_sync::private_fs::write_atomic(p, bytes).map_err(|e| {
                    DefaultCertError::Write {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    }
                })
            };
            write(&key, key_pem.as_bytes())?;
            write(&crt, crt_pem.as_bytes())?;
            log::info!(
                "generated the default SSL certificate {} and key {}",
                crt.display(),
                key.display()
            );
        }
        let c = crt.display().to_string();
        let k = key.display().to_string();
        let loaded =
            DefaultCerts::load(std::slice::from_ref(&c), std::slice::from_ref(&k), prefix)?;
        keys.extend(loaded.keys);
    }
    // ECDSA first unless the client can only verify RSA (nginx lists the
    // RSA one first, but a client offering both gets ECDSA from OpenSSL's
    // TLS 1.3 signature-algorithm order too).
    Ok(DefaultCerts { keys })
}

fn generate_ecdsa() -> Result<(String, String), DefaultCertError> {
    use chrono::Datelike;
    use rcgen::{
        date_time_ymd, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    let gen = |e: rcgen::Error| DefaultCertError::Generate(e.to_string());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(gen)?;
    let mut name = DistinguishedName::new();
    for (t, v) in [
        (DnType::CountryName, "US"),
        (DnType::StateOrProvinceName, "California"),
        (DnType::LocalityName, "San Francisco"),
        (DnType::OrganizationName, "Kong"),
        (DnType::OrganizationalUnitName, "IT Department"),
        (DnType::CommonName, "localhost"),
    ] {
        name.push(t, v);
    }
    params.distinguished_name = name;
    let today = chrono::Utc::now().date_naive();
    let (m, d) = (today.month() as u8, today.day().min(28) as u8);
    params.not_before = date_time_ymd(today.year(), m, d);
    params.not_after = date_time_ymd(today.year() + 20, m, d);
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok((cert.pem(), key.serialize_pem()))
}
