//! The `jwt` plugin (Kong's `kong/plugins/jwt`, `jwt_parser.lua`): a JWT
//! from the query, cookies or headers, signed with a `jwt_secrets` row found
//! by a claim (`iss` by default), with `exp`/`nbf` checks. Every refusal is
//! a `kong.response.exit` (a JSON body without `request_id`).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use config_sync::credentials::{EcCurve, JwtPublicKey};
use config_sync::schema::{
    boolean, number, set, string, Cond, EntityCheck, PluginSchema, Record, PROTOCOLS_HTTP,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::consumers::{ngx_decode_base64, set_anonymous_consumer, set_consumer, CredentialRef};
use super::pdk::QueryArg;
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "jwt";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 1450,
    version: VERSION,
    schema,
    build,
};

const TABLE: &str = "jwt_secrets";

/// `alg_verify`'s keys: a token naming another `alg` is refused as
/// `invalid alg`.
const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            (
                "uri_param_names",
                set(string().len_min(1)).default(json!(["jwt"])),
            ),
            ("cookie_names", set(string().len_min(1)).default(json!([]))),
            ("key_claim_name", string().len_min(1).default("iss")),
            ("secret_is_base64", boolean().required().default(false)),
            ("claims_to_verify", set(string().one_of(&["exp", "nbf"]))),
            ("anonymous", string().len_min(1)),
            ("run_on_preflight", boolean().required().default(true)),
            (
                "maximum_expiration",
                number().default(0).between(0.0, 31536000.0),
            ),
            (
                "header_names",
                set(string().len_min(1)).default(json!(["authorization"])),
            ),
            ("realm", string().len_min(1)),
        ])
        .with_checks(vec![EntityCheck::Conditional {
            if_field: "maximum_expiration",
            if_match: Cond::Gt(0.0),
            then_field: "claims_to_verify",
            then_match: Cond::Contains(json!("exp")),
            then_err: None,
        }]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: true,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// `config` of a `jwt` instance.
#[derive(Debug, Clone, Deserialize)]
struct Config {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    key_claim_name: String,
    secret_is_base64: bool,
    claims_to_verify: Option<Vec<String>>,
    anonymous: Option<String>,
    run_on_preflight: bool,
    maximum_expiration: f64,
    header_names: Vec<String>,
    realm: Option<String>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: Config =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    let (base, with_error) = match &cfg.realm {
        Some(r) => {
            let base = format!("Bearer realm=\"{r}\"");
            let with = format!("{base}, error=\"invalid_token\"");
            (base, with)
        }
        None => (
            "Bearer".to_string(),
            "Bearer error=\"invalid_token\"".to_string(),
        ),
    };
    Ok(Arc::new(Jwt {
        cfg,
        www_authenticate: base,
        www_authenticate_error: with_error,
    }))
}

struct Jwt {
    cfg: Config,
    www_authenticate: String,
    www_authenticate_error: String,
}

/// A token source's value: strings, or a query flag (Lua `true`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Str(String),
    Flag,
}

/// How an authentication attempt failed.
enum Failure {
    /// 401 with `{"message": ...}` or an error map, and this
    /// `WWW-Authenticate`.
    Unauthorized(Value, String),
    /// Kong raised an error (an assertion in the verifier): 500.
    Error,
}

impl Failure {
    fn into_exit(self) -> Exit {
        match self {
            Failure::Unauthorized(body, www) => {
                Exit::json(401, body).header("WWW-Authenticate", www)
            }
            Failure::Error => Exit::error(500, "An unexpected error occurred"),
        }
    }
}

#[async_trait]
impl Plugin for Jwt {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if !self.cfg.run_on_preflight && kong.method() == http::Method::OPTIONS {
            return Ok(());
        }
        match &self.cfg.anonymous {
            Some(anonymous) => {
                if kong.credential().is_some() {
                    return Ok(());
                }
                match self.authenticate(kong) {
                    Ok(()) => Ok(()),
                    // An error is raised, not a failed login (Kong's
                    // `return error(err)` paths).
                    Err(Failure::Error) => Err(Failure::Error.into_exit()),
                    Err(Failure::Unauthorized(..)) => {
                        set_anonymous_consumer(kong, anonymous)?;
                        kong.shared().remove("authenticated_jwt_token");
                        Ok(())
                    }
                }
            }
            None => self.authenticate(kong).map_err(Failure::into_exit),
        }
    }
}

/// `\s*[Bb]earer\s+(.+)` (unanchored, first match).
fn bearer_re() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\s*[Bb]earer\s+(.+)").unwrap_or_else(|_| unreachable!()))
}

/// nginx's `$cookie_<name>`: the first cookie of that name (names compare
/// case-insensitively) across the `Cookie` headers.
fn cookie(kong: &Kong<'_>, name: &str) -> Option<String> {
    for h in kong.headers().get_all(http::header::COOKIE) {
        let h = String::from_utf8_lossy(h.as_bytes());
        for pair in h.split(';') {
            let pair = pair.trim_start_matches([' ', '\t']);
            if let Some((k, v)) = pair.split_once('=') {
                if k.eq_ignore_ascii_case(name) {
                    return Some(v.trim_end().to_string());
                }
            }
        }
    }
    None
}

/// `kong.request.get_headers()[name]`, first value.
fn header_first(kong: &Kong<'_>, name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let mut names = Vec::new();
    if lower == name {
        names.push(lower.clone());
    }
    names.push(lower.replace('_', "-"));
    names.into_iter().find_map(|n| {
        kong.headers()
            .get(n.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

/// A decoded token (`jwt_parser.decode_token`).
struct Decoded {
    header: Map<String, Value>,
    /// The claims when they are an object (a Lua table indexed by name);
    /// an array or string has no named claims.
    claims: Map<String, Value>,
    signature: Vec<u8>,
    /// `header_64 .. "." .. claims_64`.
    signed: String,
}

/// `jwt_parser:new(token)`: `Err(Some(reason))` is a "Bad token" reason,
/// `Err(None)` an error Kong raises (a header it cannot index).
fn decode(token: &str) -> Result<Decoded, Option<&'static str>> {
    let mut parts = token.splitn(3, '.');
    let header_64 = parts.next().unwrap_or_default();
    let claims_64 = parts.next();
    let signature_64 = parts.next();
    let (Some(claims_64), Some(signature_64)) = (claims_64, signature_64) else {
        // base64_decode(nil) raises inside the pcall.
        return Err(Some("invalid JSON"));
    };
    let json_of = |s: &str| -> Option<Value> {
        let bytes = ngx_decode_base64(s, true)?;
        serde_json::from_slice(&bytes).ok()
    };
    let (Some(header), Some(claims)) = (json_of(header_64), json_of(claims_64)) else {
        return Err(Some("invalid JSON"));
    };
    let signature = ngx_decode_base64(signature_64, true);
    let header = match header {
        Value::Object(m) => m,
        // A string or an array indexes to nil: no alg.
        Value::String(_) | Value::Array(_) => return Err(Some("invalid alg")),
        _ => return Err(None),
    };
    match header.get("alg").and_then(Value::as_str) {
        Some(alg) if ALGORITHMS.contains(&alg) => {}
        _ => return Err(Some("invalid alg")),
    }
    let claims = match claims {
        Value::Object(m) => m,
        Value::String(_) | Value::Array(_) => Map::new(),
        // A number, boolean or null cannot be indexed: Kong raises.
        _ => return Err(None),
    };
    let Some(signature) = signature else {
        return Err(Some("invalid signature"));
    };
    Ok(Decoded {
        header,
        claims,
        signature,
        signed: format!("{header_64}.{claims_64}"),
    })
}

/// `ngx.time()`.
fn now() -> f64 {
    super::consumers::now_secs() as f64
}

/// `verify_signature`: `Err(())` where Kong's verifier raises (a key that
/// does not load, a signature of the wrong size).
fn verify(
    alg: &str,
    signed: &[u8],
    sig: &[u8],
    key: &[u8],
    public: Option<&Result<JwtPublicKey, String>>,
) -> Result<bool, ()> {
    use ring::{hmac, signature as sg};
    let hmac_alg = match alg {
        "HS256" => Some(hmac::HMAC_SHA256),
        "HS384" => Some(hmac::HMAC_SHA384),
        "HS512" => Some(hmac::HMAC_SHA512),
        _ => None,
    };
    if let Some(a) = hmac_alg {
        let tag = hmac::sign(&hmac::Key::new(a, key), signed);
        return Ok(tag.as_ref() == sig);
    }
    let Some(Ok(public)) = public else {
        // "Consumer Public Key is Invalid".
        return Err(());
    };
    let ok = |params: &'static dyn sg::VerificationAlgorithm, der: &[u8]| {
        sg::UnparsedPublicKey::new(params, der)
            .verify(signed, sig)
            .is_ok()
    };
    match (alg, public) {
        ("RS256", JwtPublicKey::Rsa(der)) => {
            Ok(ok(&sg::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, der))
        }
        ("RS384", JwtPublicKey::Rsa(der)) => Ok(ok(&sg::RSA_PKCS1_2048_8192_SHA384, der)),
        ("RS512", JwtPublicKey::Rsa(der)) => {
            Ok(ok(&sg::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY, der))
        }
        ("PS256" | "PS384" | "PS512", _) if sig.len() != 256 => Err(()),
        ("PS256", JwtPublicKey::Rsa(der)) => Ok(ok(&sg::RSA_PSS_2048_8192_SHA256, der)),
        ("PS384", JwtPublicKey::Rsa(der)) => Ok(ok(&sg::RSA_PSS_2048_8192_SHA384, der)),
        ("PS512", JwtPublicKey::Rsa(der)) => Ok(ok(&sg::RSA_PSS_2048_8192_SHA512, der)),
        ("ES256", _) if sig.len() != 64 => Err(()),
        ("ES384", _) if sig.len() != 96 => Err(()),
        ("ES512", _) if sig.len() != 132 => Err(()),
        ("ES256", JwtPublicKey::Ec(EcCurve::P256, p)) => Ok(ok(&sg::ECDSA_P256_SHA256_FIXED, p)),
        ("ES384", JwtPublicKey::Ec(EcCurve::P384, p)) => Ok(ok(&sg::ECDSA_P384_SHA384_FIXED, p)),
        ("EdDSA", JwtPublicKey::Ed25519(p)) => Ok(ok(&sg::ED25519, p)),
        // Kong verifies these; this gateway's crypto (ring) has neither
        // P-521 nor Ed448: an error, not a verdict on the token.
        ("ES512", JwtPublicKey::Ec(EcCurve::P521, _)) | ("EdDSA", JwtPublicKey::Ed448(_)) => {
            log::error!("jwt: {alg} with this key type cannot be verified by this gateway");
            Err(())
        }
        // A key of another type does not verify the signature.
        _ => Ok(false),
    }
}

impl Jwt {
    fn fail(&self, message: &str) -> Failure {
        Failure::Unauthorized(
            json!({ "message": message }),
            self.www_authenticate_error.clone(),
        )
    }

    /// Kong's `retrieve_tokens`: every distinct non-empty token.
    fn tokens(&self, kong: &Kong<'_>) -> Vec<Token> {
        let mut set: Vec<Token> = Vec::new();
        let mut add = |t: Token| {
            if t != Token::Str(String::new()) && !set.contains(&t) {
                set.push(t);
            }
        };
        for name in &self.cfg.uri_param_names {
            match kong.query_arg(name) {
                Some(QueryArg::One(s)) => add(Token::Str(s)),
                Some(QueryArg::Flag) => add(Token::Flag),
                Some(QueryArg::Many(list)) => {
                    for s in list {
                        add(Token::Str(s));
                    }
                }
                None => {}
            }
        }
        for name in &self.cfg.cookie_names {
            if let Some(c) = cookie(kong, name) {
                add(Token::Str(c));
            }
        }
        for name in &self.cfg.header_names {
            if let Some(h) = header_first(kong, name) {
                if let Some(m) = bearer_re().captures(&h).and_then(|c| c.get(1)) {
                    add(Token::Str(m.as_str().to_string()));
                }
            }
        }
        set
    }

    /// Kong's `do_authentication`.
    fn authenticate(&self, kong: &mut Kong<'_>) -> Result<(), Failure> {
        let claim = self.cfg.key_claim_name.as_str();
        let mut tokens = self.tokens(kong);
        let token = match tokens.len() {
            0 => {
                return Err(Failure::Unauthorized(
                    json!({"message": "Unauthorized"}),
                    self.www_authenticate.clone(),
                ))
            }
            1 => match tokens.pop() {
                Some(Token::Str(s)) => s,
                _ => return Err(self.fail("Unrecognizable token")),
            },
            _ => return Err(self.fail("Multiple tokens provided")),
        };
        let jwt = match decode(&token) {
            Ok(j) => j,
            Err(Some(reason)) => return Err(self.fail(&format!("Bad token; {reason}"))),
            Err(None) => return Err(Failure::Error),
        };
        // The key claim: from the claims, then the header (Lua `or`: a
        // `false` or absent claim falls through).
        let pick = |m: &Map<String, Value>| match m.get(claim) {
            None | Some(Value::Bool(false)) | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        };
        let key = match pick(&jwt.claims).or_else(|| pick(&jwt.header)) {
            None => return Err(self.fail(&format!("No mandatory '{claim}' in claims"))),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(self.fail(&format!("Invalid '{claim}' in claims")))
            }
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => None,
        };
        let no_secret = || self.fail(&format!("No credentials found for given '{claim}'"));
        let db = kong.consumers();
        let cred: CredentialRef = key
            .as_deref()
            .and_then(|k| db.credential_by(TABLE, k))
            .ok_or_else(no_secret)?;
        let row = db.credential(cred).ok_or_else(no_secret)?;
        let algorithm = row.str("algorithm").unwrap_or("HS256");
        if jwt.header.get("alg").and_then(Value::as_str) != Some(algorithm) {
            return Err(self.fail("Invalid algorithm"));
        }
        let symmetric = algorithm.starts_with("HS");
        let secret: Option<Vec<u8>> = if symmetric {
            let s = row.str("secret");
            if self.cfg.secret_is_base64 {
                s.and_then(|s| ngx_decode_base64(s, true))
            } else {
                s.map(|s| s.as_bytes().to_vec())
            }
        } else {
            row.str("rsa_public_key").map(|s| s.as_bytes().to_vec())
        };
        let Some(secret) = secret else {
            return Err(self.fail("Invalid key/secret"));
        };
        let public = if symmetric {
            None
        } else {
            db.jwt_public_key(cred)
        };
        match verify(
            algorithm,
            jwt.signed.as_bytes(),
            &jwt.signature,
            &secret,
            public,
        ) {
            Ok(true) => {}
            Ok(false) => return Err(self.fail("Invalid signature")),
            Err(()) => return Err(Failure::Error),
        }
        // Registered claims (`verify_registered_claims`), in config order.
        let mut errors = Map::new();
        for name in self.cfg.claims_to_verify.iter().flatten() {
            let err = match jwt.claims.get(name).and_then(Value::as_f64) {
                None => "must be a number",
                Some(nbf) if name == "nbf" && nbf > now() => "token not valid yet",
                Some(exp) if name == "exp" && exp <= now() => "token expired",
                Some(_) => continue,
            };
            errors.insert(name.clone(), Value::String(err.to_string()));
        }
        if !errors.is_empty() {
            return Err(Failure::Unauthorized(
                Value::Object(errors),
                self.www_authenticate_error.clone(),
            ));
        }
        if self.cfg.maximum_expiration > 0.0 {
            let exp = jwt.claims.get("exp").and_then(Value::as_f64);
            if exp.is_none_or(|e| e - now() > self.cfg.maximum_expiration) {
                return Err(Failure::Unauthorized(
                    json!({"exp": "exceeds maximum allowed expiration"}),
                    self.www_authenticate_error.clone(),
                ));
            }
        }
        let consumer = row.consumer;
        let identifier = row.str("key").unwrap_or_default().to_string();
        set_consumer(kong, consumer, Some((cred, identifier)));
        kong.shared()
            .insert("authenticated_jwt_token".into(), Value::String(token));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(v: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    fn hs256(claims: &Value, secret: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            b64(br#"{"typ":"JWT","alg":"HS256"}"#),
            b64(claims.to_string().as_bytes())
        );
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        );
        format!("{signed}.{}", b64(tag.as_ref()))
    }

    #[test]
    fn decoding_follows_jwt_parser() {
        let t = hs256(&json!({"iss": "k"}), b"s");
        let d = decode(&t).ok().unwrap();
        assert_eq!(d.claims["iss"], "k");
        assert!(verify("HS256", d.signed.as_bytes(), &d.signature, b"s", None).unwrap());
        assert!(!verify("HS256", d.signed.as_bytes(), &d.signature, b"x", None).unwrap());
        assert_eq!(decode("a").err(), Some(Some("invalid JSON")));
        assert_eq!(decode("a.b.c").err(), Some(Some("invalid JSON")));
        let bad_alg = format!("{}.{}.x", b64(br#"{"alg":"none"}"#), b64(b"{}"));
        assert_eq!(decode(&bad_alg).err(), Some(Some("invalid alg")));
        let bad_sig = format!("{}.{}.a+b", b64(br#"{"alg":"HS256"}"#), b64(b"{}"));
        assert_eq!(decode(&bad_sig).err(), Some(Some("invalid signature")));
        // A number header cannot be indexed: Kong raises.
        let num = format!("{}.{}.x", b64(b"1"), b64(b"{}"));
        assert_eq!(decode(&num).err(), Some(None));
    }

    #[test]
    fn schema_requires_exp_with_maximum_expiration() {
        let s = schema();
        let e = config_sync::schema::validate_record(
            &s.config,
            &json!({"maximum_expiration": 60, "claims_to_verify": ["nbf"]}),
            "config",
        )
        .unwrap_err();
        assert!(e[0].message.contains("expected to contain: exp"), "{e:?}");
        let e = config_sync::schema::validate_record(
            &s.config,
            &json!({"maximum_expiration": -1}),
            "config",
        )
        .unwrap_err();
        assert_eq!(e[0].message, "value should be between 0 and 31536000");
        assert!(config_sync::schema::validate_record(
            &s.config,
            &json!({"maximum_expiration": 60, "claims_to_verify": ["exp", "nbf"]}),
            "config",
        )
        .is_ok());
    }
}
