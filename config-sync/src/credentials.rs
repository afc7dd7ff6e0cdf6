//! Rules of the auth plugins' credential entities that both the loader and
//! the gateway need: basic-auth's password hash
//! (`kong/plugins/basic-auth/crypto.lua`) and the public keys of
//! `jwt_secrets` (`kong/plugins/jwt/daos.lua`, `jwt_parser.lua`).

use base64::Engine as _;
use x509_parser::prelude::FromDer as _;

/// Kong's stored basic-auth password: `hex(sha1(password .. consumer_id))`
/// (`crypto.hash(consumer_id, password)`).
pub fn basicauth_hash(consumer_id: &str, password: &str) -> String {
    let mut salted = Vec::with_capacity(password.len() + consumer_id.len());
    salted.extend_from_slice(password.as_bytes());
    salted.extend_from_slice(consumer_id.as_bytes());
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &salted);
    hex::encode(d.as_ref())
}

/// Elliptic curves a JWT key may be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
    P521,
}

/// A `jwt_secrets.rsa_public_key`, parsed, in the forms verifiers take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtPublicKey {
    /// PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// The uncompressed point.
    Ec(EcCurve, Vec<u8>),
    Ed25519(Vec<u8>),
    Ed448(Vec<u8>),
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
const OID_ED25519: &str = "1.3.101.112";
const OID_ED448: &str = "1.3.101.113";

/// The body of the first PEM block and its label.
fn pem_block(pem: &str) -> Option<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_and_end = &rest[label_end + 5..];
    let end = body_and_end.find(&format!("-----END {label}-----"))?;
    let b64: String = body_and_end[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

/// Kong's `validate_ssl_key` (`openssl_pkey.new(key)`), for the public key
/// forms: `PUBLIC KEY` (SubjectPublicKeyInfo) and `RSA PUBLIC KEY`
/// (PKCS#1). Kong's message is `invalid key`.
pub fn parse_jwt_public_key(pem: &str) -> Result<JwtPublicKey, String> {
    let invalid = || "invalid key".to_string();
    let (label, der) = pem_block(pem).ok_or_else(invalid)?;
    match label.as_str() {
        "RSA PUBLIC KEY" => {
            x509_parser::public_key::RSAPublicKey::from_der(&der).map_err(|_| invalid())?;
            Ok(JwtPublicKey::Rsa(der))
        }
        "PUBLIC KEY" => {
            let (rest, spki) =
                x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).map_err(|_| invalid())?;
            if !rest.is_empty() {
                return Err(invalid());
            }
            let key = spki.subject_public_key.data.to_vec();
            match spki.algorithm.algorithm.to_id_string().as_str() {
                OID_RSA | OID_RSA_PSS => {
                    x509_parser::public_key::RSAPublicKey::from_der(&key).map_err(|_| invalid())?;
                    Ok(JwtPublicKey::Rsa(key))
                }
                OID_EC => {
                    let curve = spki
                        .algorithm
                        .parameters
                        .as_ref()
                        .and_then(|p| p.as_oid().ok())
                        .map(|o| o.to_id_string());
                    let curve = match curve.as_deref() {
                        Some(OID_P256) => EcCurve::P256,
                        Some(OID_P384) => EcCurve::P384,
                        Some(OID_P521) => EcCurve::P521,
                        _ => return Err(invalid()),
                    };
                    if key.first() != Some(&4) {
                        return Err(invalid());
                    }
                    Ok(JwtPublicKey::Ec(curve, key))
                }
                OID_ED25519 if key.len() == 32 => Ok(JwtPublicKey::Ed25519(key)),
                OID_ED448 if key.len() == 57 => Ok(JwtPublicKey::Ed448(key)),
                _ => Err(invalid()),
            }
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basicauth_hash_is_sha1_of_password_and_consumer_id() {
        // `echo -n secretid | sha1sum`
        assert_eq!(
            basicauth_hash("id", "secret"),
            "e75884c74ffa5f27ddbfe67e0dbce87a9729bad7"
        );
        let h = basicauth_hash("123e4567-e89b-12d3-a456-426614174000", "kong");
        assert_eq!(h.len(), 40);
        assert_ne!(
            h,
            basicauth_hash("123e4567-e89b-12d3-a456-426614174000", "Kong")
        );
    }

    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw5mp3MS3hVLkHwB9lMrE
x34MjYCmKeH/XeMLexNpTd1FzuNv6rArovTY763CDo1Tp0xHz0LPlDJJtpqAgsnf
DwCcgn6ddZTo1u7XYzgEDfS8J4SYdcKxZiSdVTpb9k7pByXfnwK/fwq5oeBAJXIS
v5ZLB1IEVZHhUvGCH0udlJ2vadquR03phBHcvlNmMbJGWAetkdcKyi+7TaW7OUSj
lge4WYERgYzBB6eJH+UfPjmw3aSPZcNXt2RckPXEbNrL8TVXYdEvwLJoJv9/I8JP
FLiGOm5uTMEk8S4txs2efueg1XyymilCKzzuXlJvrvPA4u6HI7qNvuvkvUjQmwBH
gwIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn public_keys_parse_and_garbage_is_an_invalid_key() {
        assert!(matches!(
            parse_jwt_public_key(RSA_PUB),
            Ok(JwtPublicKey::Rsa(_))
        ));
        assert_eq!(
            parse_jwt_public_key("not a key"),
            Err("invalid key".to_string())
        );
        assert_eq!(
            parse_jwt_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
            Err("invalid key".to_string())
        );
        // The PKCS#1 form of the same key.
        let (_, der) = pem_block(RSA_PUB).unwrap();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
        let pkcs1 = base64::engine::general_purpose::STANDARD.encode(spki.subject_public_key.data);
        let pem =
            format!("-----BEGIN RSA PUBLIC KEY-----\n{pkcs1}\n-----END RSA PUBLIC KEY-----\n");
        assert!(matches!(
            parse_jwt_public_key(&pem),
            Ok(JwtPublicKey::Rsa(_))
        ));
    }
}
