//! The configuration's `certificates` and `snis`, compiled once per config
//! apply into signing keys and an SNI index, so a handshake only looks up.
//!
//! Selection follows Kong's `kong/runloop/certificate.lua`
//! (`find_certificate`, `produce_wild_snis`): the exact name, then the
//! leading wildcard (`*.example.com` for `a.example.com`), then the
//! trailing wildcard (`a.example.*`), then the `*` SNI, then the default
//! certificate (`ssl_cert` or the generated one). A client sending no SNI
//! gets the default certificate at once (Kong: "no SNI provided by client,
//! serving default SSL certificate").

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use config_sync::model::{self, DeclarativeConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use uuid::Uuid;

/// A certificate the configuration holds that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate '{id}': {field}: {reason}")]
pub struct CertError {
    pub id: Uuid,
    /// `cert`, `key`, `cert_alt` or `key_alt`.
    pub field: &'static str,
    pub reason: String,
}

/// One certificate entity: its key, and the alternate (other key type)
/// when it has `cert_alt`/`key_alt`, as nginx holds both.
#[derive(Clone)]
pub struct CertPair {
    pub primary: Arc<CertifiedKey>,
    pub alt: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair")
            .field("primary", &self.primary.key.algorithm())
            .field("alt", &self.alt.as_ref().map(|a| a.key.algorithm()))
            .finish()
    }
}

impl CertPair {
    /// The key the client can verify, in the client's order of signature
    /// schemes (OpenSSL picks a certificate by the shared signature
    /// algorithms the same way); the primary when neither fits (the
    /// handshake then fails in rustls, as it would in nginx).
    pub fn choose(&self, offered: &[SignatureScheme]) -> Arc<CertifiedKey> {
        let Some(alt) = &self.alt else {
            return self.primary.clone();
        };
        for scheme in offered {
            let one = std::slice::from_ref(scheme);
            if self.primary.key.choose_scheme(one).is_some() {
                return self.primary.clone();
            }
            if alt.key.choose_scheme(one).is_some() {
                return alt.clone();
            }
        }
        self.primary.clone()
    }
}

/// Parses one PEM certificate chain and its key into a signing identity.
/// Reasons never quote the key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, (bool, String)> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| (true, format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err((true, "not a PEM-encoded certificate".to_string()));
    }
    let key: PrivateKeyDer<'static> = match rustls_pemfile::private_key(&mut &key_pem[..]) {
        Ok(Some(k)) => k,
        Ok(None) => return Err((false, "not a PEM-encoded private key".to_string())),
        Err(_) => {
            return Err((
                false,
                "invalid PEM, cannot decode a private key".to_string(),
            ))
        }
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        (
            false,
            "unsupported or malformed private key (supported: RSA of 2048+ bits, ECDSA P-256/P-384, Ed25519)"
                .to_string(),
        )
    })?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        // ring cannot tell the public key of some keys: not a mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(_) => Err((false, "certificate does not match key".to_string())),
    }
}

/// The served certificates of one configuration, by SNI name.
#[derive(Debug, Default)]
pub struct CertIndex {
    certs: Vec<CertPair>,
    /// SNI name (lower case, wildcards as written) -> `certs` index.
    names: HashMap<String, usize>,
}

/// Kong's `DEFAULT_SNI`: the SNI entity that catches every other name.
const DEFAULT_SNI: &str = "*";

impl CertIndex {
    /// Compiles every certificate of `cfg` (all of them, with or without
    /// SNIs: a bad one is refused whether or not it is reachable yet).
    pub fn compile(cfg: &DeclarativeConfig) -> Result<CertIndex, CertError> {
        if cfg.certificates.is_empty() {
            return Ok(CertIndex::default());
        }
        let mut certs = Vec::with_capacity(cfg.certificates.len());
        let mut index_of: HashMap<Uuid, usize> = HashMap::with_capacity(cfg.certificates.len());
        for c in &cfg.certificates {
            index_of.insert(c.id, certs.len());
            certs.push(compile_pair(c)?);
        }
        let mut names = HashMap::with_capacity(cfg.snis.len());
        for sni in &cfg.snis {
            // The foreign key is checked by config-sync.
            if let Some(&i) = index_of.get(&sni.certificate) {
                names.insert(sni.name.to_ascii_lowercase(), i);
            }
        }
        Ok(CertIndex { certs, names })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The certificate for a client's SNI (already lower case from rustls),
    /// or `None` for the default certificate.
    pub fn find(&self, sni: Option<&str>) -> Option<&CertPair> {
        if self.names.is_empty() {
            return None;
        }
        let sni = sni?;
        let (prefix, suffix) = wild_snis(sni);
        let i = self
            .names
            .get(sni)
            .or_else(|| prefix.and_then(|p| self.names.get(&p)))
            .or_else(|| suffix.and_then(|s| self.names.get(&s)))
            .or_else(|| self.names.get(DEFAULT_SNI))?;
        self.certs.get(*i)
    }
}

fn compile_pair(c: &model::Certificate) -> Result<CertPair, CertError> {
    let err = |field: &'static str, reason: String| CertError {
        id: c.id,
        field,
        reason,
    };
    for (field, v) in [
        ("cert", Some(&c.cert)),
        ("key", Some(&c.key)),
        ("cert_alt", c.cert_alt.as_ref()),
        ("key_alt", c.key_alt.as_ref()),
    ] {
        if v.is_some_and(|v| config_sync::validate::is_vault_reference(v)) {
            return Err(err(
                field,
                "vault references are not supported by this gateway".to_string(),
            ));
        }
    }
    let one = |cert: &str, key: &str, names: (&'static str, &'static str)| {
        certified_key(cert.as_bytes(), key.as_bytes())
            .map(Arc::new)
            .map_err(|(on_cert, why)| err(if on_cert { names.0 } else { names.1 }, why))
    };
    let primary = one(&c.cert, &c.key, ("cert", "key"))?;
    let alt = match (&c.cert_alt, &c.key_alt) {
        (Some(cert), Some(key)) => Some(one(cert, key, ("cert_alt", "key_alt"))?),
        _ => None,
    };
    Ok(CertPair { primary, alt })
}

/// Kong's `produce_wild_snis`: the leading wildcard
/// (`([^.]+)(\.[^.]+\.\S+)` -> `*$2`: only with three labels or more) and
/// the trailing one (`([^.]+\.)([^.]+)$` -> `$1*`). A name that already
/// holds a `*` is its own wildcard on the side it stands.
pub fn wild_snis(sni: &str) -> (Option<String>, Option<String>) {
    let star = sni.find('*');
    let prefix = match star {
        Some(0) => Some(sni.to_string()),
        Some(_) => None,
        None => sni.split_once('.').and_then(|(first, rest)| {
            let (label, tail) = rest.split_once('.')?;
            let ok = !first.is_empty()
                && !label.is_empty()
                && !tail.is_empty()
                && !tail.starts_with(char::is_whitespace);
            ok.then(|| format!("*.{rest}"))
        }),
    };
    let suffix = match star {
        Some(i) if i + 1 == sni.len() => Some(sni.to_string()),
        Some(_) => None,
        None => sni.rsplit_once('.').and_then(|(head, last)| {
            let before = head.rsplit('.').next().unwrap_or(head);
            (!before.is_empty() && !last.is_empty()).then(|| format!("{head}.*"))
        }),
    };
    (prefix, suffix)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_as_kong_produces_them() {
        assert_eq!(
            wild_snis("test.wildcard.com"),
            (
                Some("*.wildcard.com".into()),
                Some("test.wildcard.*".into())
            )
        );
        // Two labels: no leading wildcard (the regex needs three).
        assert_eq!(wild_snis("wildcard.eu"), (None, Some("wildcard.*".into())));
        assert_eq!(
            wild_snis("test.www.wildcard.com"),
            (
                Some("*.www.wildcard.com".into()),
                Some("test.www.wildcard.*".into())
            )
        );
        assert_eq!(wild_snis("localhost"), (None, None));
        assert_eq!(
            wild_snis("*.example.com"),
            (Some("*.example.com".into()), None)
        );
        assert_eq!(wild_snis("example.*"), (None, Some("example.*".into())));
    }
}
