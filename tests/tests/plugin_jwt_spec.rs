//! Port of Kong's `spec/03-plugins/16-jwt/03-access_spec.lua` (DB-less) and
//! the config side of `06-schema_spec.lua`: one gateway per Kong `describe`
//! block, each Kong `it(...)` a named case; what Kong's mock upstream
//! echoes is read from the recording upstream. Tokens are made here with
//! ring (Kong's `jwt_encoder.encode`): the RSA key is Kong's `rs256` fixture
//! (for every RS*/PS* case), the EC and Ed25519 keys are generated.
//!
//! Skipped: the gRPC cases (no gRPC client in this harness), "ES512 verifies
//! JWT" / "identifies Consumer" and "verifies JWT with Ed448 key" (this
//! gateway's crypto, ring, has no P-521 nor Ed448: such secrets load, as in
//! Kong, and a token for them gets a 500), and "is added to kong.ctx.shared
//! when authenticated" (needs Kong's `ctx-checker` test plugin).
#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{request, Response};
use ring::rand::SystemRandom;
use ring::signature::{self as sg, KeyPair as _};
use serde_json::{json, Value};

const RS256_PRIVATE_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAw5mp3MS3hVLkHwB9lMrEx34MjYCmKeH/XeMLexNpTd1FzuNv
6rArovTY763CDo1Tp0xHz0LPlDJJtpqAgsnfDwCcgn6ddZTo1u7XYzgEDfS8J4SY
dcKxZiSdVTpb9k7pByXfnwK/fwq5oeBAJXISv5ZLB1IEVZHhUvGCH0udlJ2vadqu
R03phBHcvlNmMbJGWAetkdcKyi+7TaW7OUSjlge4WYERgYzBB6eJH+UfPjmw3aSP
ZcNXt2RckPXEbNrL8TVXYdEvwLJoJv9/I8JPFLiGOm5uTMEk8S4txs2efueg1Xyy
milCKzzuXlJvrvPA4u6HI7qNvuvkvUjQmwBHgwIDAQABAoIBAQCP3ZblTT8abdRh
xQ+Y/+bqQBjlfwk4ZwRXvuYz2Rwr7CMrP3eSq4785ZAmAaxo3aP4ug9bL23UN4Sm
LU92YxqQQ0faZ1xTHnp/k96SGKJKzYYSnuEwREoMscOS60C2kmWtHzsyDmhg/bd5
i6JCqHuHtPhsYvPTKGANjJrDf+9gXazArmwYrdTnyBeFC88SeRG8uH2lP2VyqHiw
ZvEQ3PkRRY0yJRqEtrIRIlgVDuuu2PhPg+MR4iqR1RONjDUFaSJjR7UYWY/m/dmg
HlalqpKjOzW6RcMmymLKaW6wF3y8lbs0qCjCYzrD3bZnlXN1kIw6cxhplfrSNyGZ
BY/qWytJAoGBAO8UsagT8tehCu/5smHpG5jgMY96XKPxFw7VYcZwuC5aiMAbhKDO
OmHxYrXBT/8EQMIk9kd4r2JUrIx+VKO01wMAn6fF4VMrrXlEuOKDX6ZE1ay0OJ0v
gCmFtKB/EFXXDQLV24pgYgQLxnj+FKFV2dQLmv5ZsAVcmBHSkM9PBdUlAoGBANFx
QPuVaSgRLFlXw9QxLXEJbBFuljt6qgfL1YDj/ANgafO8HMepY6jUUPW5LkFye188
J9wS+EPmzSJGxdga80DUnf18yl7wme0odDI/7D8gcTfu3nYcCkQzeykZNGAwEe+0
SvhXB9fjWgs8kFIjJIxKGmlMJRMHWN1qaECEkg2HAoGBAIb93EHW4as21wIgrsPx
5w8up00n/d7jZe2ONiLhyl0B6WzvHLffOb/Ll7ygZhbLw/TbAePhFMYkoTjCq++z
UCP12i/U3yEi7FQopWvgWcV74FofeEfoZikLwa1NkV+miUYskkVTnoRCUdJHREbE
PrYnx2AOLAEbAxItHm6vY8+xAoGAL85JBePpt8KLu+zjfximhamf6C60zejGzLbD
CgN/74lfRcoHS6+nVs73l87n9vpZnLhPZNVTo7QX2J4M5LHqGj8tvMFyM895Yv+b
3ihnFVWjYh/82Tq3QS/7Cbt+EAKI5Yzim+LJoIZ9dBkj3Au3eOolMym1QK2ppAh4
uVlJORsCgYBv/zpNukkXrSxVHjeZj582nkdAGafYvT0tEQ1u3LERgifUNwhmHH+m
1OcqJKpbgQhGzidXK6lPiVFpsRXv9ICP7o96FjmQrMw2lAfC7stYnFLKzv+cj8L9
h4hhNWM6i/DHXjPsHgwdzlX4ulq8M7dR8Oqm9DrbdAyWz8h8/kzsnA==
-----END RSA PRIVATE KEY-----

";
const RS256_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw5mp3MS3hVLkHwB9lMrE
x34MjYCmKeH/XeMLexNpTd1FzuNv6rArovTY763CDo1Tp0xHz0LPlDJJtpqAgsnf
DwCcgn6ddZTo1u7XYzgEDfS8J4SYdcKxZiSdVTpb9k7pByXfnwK/fwq5oeBAJXIS
v5ZLB1IEVZHhUvGCH0udlJ2vadquR03phBHcvlNmMbJGWAetkdcKyi+7TaW7OUSj
lge4WYERgYzBB6eJH+UfPjmw3aSPZcNXt2RckPXEbNrL8TVXYdEvwLJoJv9/I8JP
FLiGOm5uTMEk8S4txs2efueg1XyymilCKzzuXlJvrvPA4u6HI7qNvuvkvUjQmwBH
gwIDAQAB
-----END PUBLIC KEY-----
";

const NONEXISTING: &str = "8b3d5e6f-0000-4000-8000-00000000dead";
const HS384_SECRET: &str = "zxhk1H1Y11ax99xO20EGf00FDAOuPb9kEOmOQZMpR1BElx7sWjBIX2okAJiqjulH";
const HS512_SECRET: &str = "eCCyv047A0rmH2-TfDIg89JJ9Kbmo8lp5z4C9LelCV8tPPYqg-22BBtWhairPSWR";
/// jwt_secret (consumer 1) and jwt_secret_2 (consumer 6).
const SECRET_1: &str = "secret-one-for-hs256";
const SECRET_2: &str = "secret-two-for-hs256";
/// The raw secret of base64_jwt_secret; the row stores its base64.
const BASE64_RAW: &str = "abcdefghijklmnopqrstuvwxyz012345";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64url(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Signing keys for the asymmetric cases.
enum Signer {
    Hmac(&'static str),
    Rsa(&'static dyn sg::RsaEncoding),
    Ecdsa(sg::EcdsaKeyPair),
    Ed(sg::Ed25519KeyPair),
}

fn rsa_key() -> sg::RsaKeyPair {
    sg::RsaKeyPair::from_der(&pem_der(RS256_PRIVATE_KEY)).unwrap()
}

/// Kong's `jwt_encoder.encode(payload, key, alg, header)`.
fn encode(
    payload: &Value,
    alg: &str,
    header: Option<Value>,
    signer: &Signer,
    secret: &[u8],
) -> String {
    let header = header.unwrap_or_else(|| json!({"typ": "JWT", "alg": alg}));
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes())
    );
    let rng = SystemRandom::new();
    let sig: Vec<u8> = match signer {
        Signer::Hmac(h) => {
            let a = match *h {
                "HS384" => ring::hmac::HMAC_SHA384,
                "HS512" => ring::hmac::HMAC_SHA512,
                _ => ring::hmac::HMAC_SHA256,
            };
            ring::hmac::sign(&ring::hmac::Key::new(a, secret), signed.as_bytes())
                .as_ref()
                .to_vec()
        }
        Signer::Rsa(pad) => {
            let key = rsa_key();
            let mut out = vec![0; key.public().modulus_len()];
            key.sign(*pad, &rng, signed.as_bytes(), &mut out).unwrap();
            out
        }
        Signer::Ecdsa(k) => k.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec(),
        Signer::Ed(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
    };
    format!("{signed}.{}", b64url(&sig))
}

fn hs256(payload: &Value, secret: &str) -> String {
    encode(
        payload,
        "HS256",
        None,
        &Signer::Hmac("HS256"),
        secret.as_bytes(),
    )
}

/// Kong's PAYLOAD with `iss`.
fn payload(iss: Option<&str>) -> Value {
    let mut p = json!({"nbf": now(), "iat": now(), "exp": now() + 3600});
    if let Some(i) = iss {
        p["iss"] = json!(i);
    }
    p
}

fn ec_key(alg: &'static sg::EcdsaSigningAlgorithm) -> sg::EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = sg::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    sg::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
}

/// SubjectPublicKeyInfo PEM of a public key, from its DER prefix.
fn spki_pem(prefix_hex: &str, key: &[u8]) -> String {
    let mut der: Vec<u8> = (0..prefix_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&prefix_hex[i..i + 2], 16).unwrap())
        .collect();
    der.extend_from_slice(key);
    pem("PUBLIC KEY", &der)
}

const P256_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
const P384_SPKI: &str = "3076301006072a8648ce3d020106052b81040022036200";
const ED25519_SPKI: &str = "302a300506032b6570032100";

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    request(gw.port, "GET", path, headers, b"")
}

fn assert_401(r: &Response, body: Value, www: &str) {
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(r.json(), body);
    // kong.response.exit: no request_id, JSON.
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("WWW-Authenticate"), Some(www));
}

const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

#[test]
fn jwt_access() {
    let es256 = ec_key(&sg::ECDSA_P256_SHA256_FIXED_SIGNING);
    let es384 = ec_key(&sg::ECDSA_P384_SHA384_FIXED_SIGNING);
    let ed = {
        let rng = SystemRandom::new();
        let pkcs8 = sg::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        sg::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let es256_pub = spki_pem(P256_SPKI, es256.public_key().as_ref());
    let es384_pub = spki_pem(P384_SPKI, es384.public_key().as_ref());
    let ed_pub = spki_pem(ED25519_SPKI, ed.public_key().as_ref());
    let base64_secret = base64::engine::general_purpose::STANDARD.encode(BASE64_RAW);
    let js = |s: &str| serde_json::to_string(s).unwrap();

    let mut routes = String::new();
    let plugin_conf = [
        "{}",
        "{uri_param_names: [token, jwt]}",
        "{claims_to_verify: [nbf, exp]}",
        "{key_claim_name: aud}",
        "{secret_is_base64: true}",
        "{anonymous: 8b3d5e6f-0000-4000-8000-0000000000a0}",
        "{anonymous: 8b3d5e6f-0000-4000-8000-00000000dead}",
        "{run_on_preflight: false}",
        "{cookie_names: [silly, crumble], realm: test-jwt}",
        "{key_claim_name: kid}",
        "{claims_to_verify: [nbf, exp], maximum_expiration: 300}",
        "{header_names: [CustomAuthorization]}",
        "{anonymous: no-body}",
    ];
    for (i, conf) in plugin_conf.iter().enumerate() {
        routes.push_str(&format!(
            "  - hosts: [jwt{}.test]\n    plugins: [{{name: jwt, config: {conf}}}]\n",
            i + 1
        ));
    }
    let secret =
        |user: &str, body: String| format!("- username: {user}\n  jwt_secrets:\n  - {body}\n");
    let mut consumers = String::new();
    consumers.push_str(&secret(
        "jwt_tests_consumer",
        format!("{{key: key-1, secret: {SECRET_1}}}"),
    ));
    consumers.push_str(&secret(
        "jwt_tests_base64_consumer",
        format!("{{key: key-b64, secret: {}}}", js(&base64_secret)),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_1",
        format!(
            "{{key: rsa-1, algorithm: RS256, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_2",
        format!(
            "{{key: rsa-2, algorithm: RS256, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_5",
        format!(
            "{{key: rsa-3, algorithm: RS512, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_consumer_6",
        format!("{{key: key-2, secret: {SECRET_2}}}"),
    ));
    consumers.push_str(&secret(
        "jwt_tests_hs_consumer_7",
        format!("{{key: hs-1, algorithm: HS384, secret: {HS384_SECRET}}}"),
    ));
    consumers.push_str(&secret(
        "jwt_tests_hs_consumer_8",
        format!("{{key: hs-2, algorithm: HS512, secret: {HS512_SECRET}}}"),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_9",
        format!(
            "{{key: rsa-4, algorithm: RS384, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_10",
        format!(
            "{{key: rsa-5, algorithm: ES384, rsa_public_key: {}}}",
            js(&es384_pub)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_11",
        format!(
            "{{key: es256, algorithm: ES256, rsa_public_key: {}}}",
            js(&es256_pub)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_12",
        format!(
            "{{key: rsa-7, algorithm: PS256, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_13",
        format!(
            "{{key: rsa-8, algorithm: PS384, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_14",
        format!(
            "{{key: rsa-9, algorithm: PS512, rsa_public_key: {}}}",
            js(RS256_PUBLIC_KEY)
        ),
    ));
    consumers.push_str(&secret(
        "jwt_tests_rsa_consumer_15",
        format!(
            "{{key: rsa-10, algorithm: EdDSA, rsa_public_key: {}}}",
            js(&ed_pub)
        ),
    ));
    consumers.push_str("- username: no-body\n  id: 8b3d5e6f-0000-4000-8000-0000000000a0\n");
    let yml = fill_ports(
        &format!("_format_version: \"3.0\"\nconsumers:\n{consumers}services:\n- url: http://{{UP0}}\n  routes:\n{routes}"),
        &[0],
    );
    let up = Recorder::start();
    let gw = Gateway::start(&yml.replace("127.0.0.1:0", &format!("127.0.0.1:{}", up.port)));
    let mut t = Cases::new();

    // describe("refusals")
    t.it(
        "returns 401 Unauthorized if no JWT is found in the request",
        || {
            let r = get(&gw, "/request", &[("Host", "jwt1.test")]);
            assert_401(&r, json!({"message": "Unauthorized"}), "Bearer");
        },
    );
    t.it(
        "returns 401 if the claims do not contain the key to identify a secret",
        || {
            let auth = format!("Bearer {}", hs256(&payload(None), "foo"));
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt1.test"), ("Authorization", &auth)],
            );
            assert_401(
                &r,
                json!({"message": "No mandatory 'iss' in claims"}),
                INVALID_TOKEN,
            );
        },
    );
    t.it(
        "returns 401 if the claims do not contain a valid key to identify a secret",
        || {
            let auth = format!("Bearer {}", hs256(&payload(Some("")), "foo"));
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt1.test"), ("Authorization", &auth)],
            );
            assert_401(
                &r,
                json!({"message": "Invalid 'iss' in claims"}),
                INVALID_TOKEN,
            );
        },
    );
    t.it(
        "returns 401 Unauthorized if the iss does not match a credential",
        || {
            let auth = format!("Bearer {}", hs256(&payload(Some("123456789")), SECRET_1));
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt1.test"), ("Authorization", &auth)],
            );
            assert_401(
                &r,
                json!({"message": "No credentials found for given 'iss'"}),
                INVALID_TOKEN,
            );
        },
    );
    t.it(
        "returns 401 Unauthorized if the signature is invalid",
        || {
            let auth = format!("Bearer {}", hs256(&payload(Some("key-1")), "foo"));
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt1.test"), ("Authorization", &auth)],
            );
            assert_401(&r, json!({"message": "Invalid signature"}), INVALID_TOKEN);
        },
    );
    t.it(
        "returns 401 Unauthorized if the alg does not match the credential",
        || {
            let jwt = encode(
                &payload(Some("key-1")),
                "HS256",
                Some(json!({"typ": "JWT", "alg": "RS256"})),
                &Signer::Hmac("HS256"),
                SECRET_1.as_bytes(),
            );
            let auth = format!("Bearer {jwt}");
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt1.test"), ("Authorization", &auth)],
            );
            assert_401(&r, json!({"message": "Invalid algorithm"}), INVALID_TOKEN);
        },
    );
    t.it(
        "returns 200 on OPTIONS requests if run_on_preflight is false",
        || {
            let r = request(
                gw.port,
                "OPTIONS",
                "/request",
                &[("Host", "jwt8.test")],
                b"",
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "returns Unauthorized on OPTIONS requests if run_on_preflight is true",
        || {
            let r = request(
                gw.port,
                "OPTIONS",
                "/request",
                &[("Host", "jwt1.test")],
                b"",
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.body_str(), r#"{"message":"Unauthorized"}"#);
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        },
    );
    t.it(
        "returns 401 if the token exceeds the maximum allowed expiration limit",
        || {
            let p = json!({"iss": "key-1", "exp": now() + 3600, "nbf": now() - 30});
            let r = get(
                &gw,
                &format!("/request/?jwt={}", hs256(&p, SECRET_1)),
                &[("Host", "jwt11.test")],
            );
            assert_eq!(r.status, 401);
            assert_eq!(
                r.body_str(),
                r#"{"exp":"exceeds maximum allowed expiration"}"#
            );
            assert_eq!(r.header("WWW-Authenticate"), Some(INVALID_TOKEN));
        },
    );
    t.it(
        "accepts a JWT token within the maximum allowed expiration limit",
        || {
            let p = json!({"iss": "key-1", "exp": now() + 270, "nbf": now() - 30});
            let r = get(
                &gw,
                &format!("/request/?jwt={}", hs256(&p, SECRET_1)),
                &[("Host", "jwt11.test")],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it("reject if multiple different tokens found", || {
        let jwt = hs256(&payload(Some("key-1")), SECRET_1);
        let r = get(
            &gw,
            &format!("/request?jwt={jwt}"),
            &[
                ("Host", "jwt1.test"),
                ("Authorization", "Bearer invalid.jwt.token"),
            ],
        );
        assert_401(
            &r,
            json!({"message": "Multiple tokens provided"}),
            INVALID_TOKEN,
        );
        // The same token twice is one token.
        let r = get(
            &gw,
            &format!("/request?jwt={jwt}"),
            &[
                ("Host", "jwt1.test"),
                ("Authorization", &format!("Bearer {jwt}")),
            ],
        );
        assert_eq!(r.status, 200);
    });

    // describe("HS256")
    t.it(
        "proxies the request with token and consumer headers if it was verified",
        || {
            let auth = format!("Bearer {}", hs256(&payload(Some("key-1")), SECRET_1));
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt1.test"), ("Authorization", &auth)],
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("authorization"), Some(auth.as_str()));
            assert_eq!(
                got.header("x-consumer-username"),
                Some("jwt_tests_consumer")
            );
            assert_eq!(got.header("x-credential-identifier"), Some("key-1"));
            assert_eq!(got.header("x-anonymous-consumer"), None);
        },
    );
    t.it("proxies the request if the key is found in headers", || {
        let jwt = encode(
            &payload(None),
            "HS256",
            Some(json!({"typ": "JWT", "alg": "HS256", "kid": "key-2"})),
            &Signer::Hmac("HS256"),
            SECRET_2.as_bytes(),
        );
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "jwt10.test"),
                ("Authorization", &format!("Bearer {jwt}")),
            ],
        );
        assert_eq!(r.status, 200);
    });
    t.it(
        "proxies the request if secret key is stored in a field other than iss",
        || {
            let mut p = payload(Some("key-b64"));
            p["aud"] = json!("key-1");
            let auth = format!("Bearer {}", hs256(&p, SECRET_1));
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt4.test"), ("Authorization", &auth)],
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("authorization"), Some(auth.as_str()));
            assert_eq!(
                got.header("x-consumer-username"),
                Some("jwt_tests_consumer")
            );
            assert_eq!(got.header("x-credential-identifier"), Some("key-1"));
        },
    );
    t.it("proxies the request if secret is base64", || {
        let auth = format!("Bearer {}", hs256(&payload(Some("key-b64")), BASE64_RAW));
        let r = get(
            &gw,
            "/request",
            &[("Host", "jwt5.test"), ("Authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        let got = up.last();
        assert_eq!(
            got.header("x-consumer-username"),
            Some("jwt_tests_base64_consumer")
        );
        assert_eq!(got.header("x-credential-identifier"), Some("key-b64"));
    });
    t.it("returns 200 the JWT is found in the cookie crumble", || {
        let jwt = hs256(&payload(Some("key-1")), SECRET_1);
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "jwt9.test"),
                (
                    "Cookie",
                    &format!("crumble={jwt}; path=/;domain=.jwt9.test"),
                ),
            ],
        );
        assert_eq!(r.status, 200);
    });
    t.it(
        "returns 200 if the JWT is found in the cookie silly",
        || {
            let jwt = hs256(&payload(Some("key-1")), SECRET_1);
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "jwt9.test"),
                    ("Cookie", &format!("silly={jwt}; path=/;domain=.jwt9.test")),
                ],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "returns 401 if the JWT found in the cookie does not match a credential",
        || {
            let jwt = hs256(&payload(Some("incorrect-issuer")), SECRET_1);
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "jwt9.test"),
                    ("Cookie", &format!("silly={jwt}; path=/;domain=.jwt9.test")),
                ],
            );
            assert_401(
                &r,
                json!({"message": "No credentials found for given 'iss'"}),
                "Bearer realm=\"test-jwt\", error=\"invalid_token\"",
            );
        },
    );
    t.it(
        "returns a 401 if the JWT in the cookie is corrupted",
        || {
            let jwt = format!(
                "no-way-this-works{}",
                hs256(&payload(Some("key-1")), SECRET_1)
            );
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "jwt9.test"),
                    ("Cookie", &format!("silly={jwt}; path=/;domain=.jwt9.test")),
                ],
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.body_str(), r#"{"message":"Bad token; invalid JSON"}"#);
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Bearer realm=\"test-jwt\", error=\"invalid_token\"")
            );
        },
    );
    t.it(
        "reports a 200 without cookies but with a JWT token in the Authorization header",
        || {
            let jwt = hs256(&payload(Some("key-1")), SECRET_1);
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "jwt9.test"),
                    ("Authorization", &format!("Bearer {jwt}")),
                ],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "returns 401 if no JWT tokens are found in cookies or Authorization header",
        || {
            let r = get(&gw, "/request", &[("Host", "jwt9.test")]);
            assert_eq!(r.status, 401);
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Bearer realm=\"test-jwt\"")
            );
        },
    );
    t.it(
        "returns 200 without cookies but with a JWT token in the CustomAuthorization header",
        || {
            let jwt = hs256(&payload(Some("key-1")), SECRET_1);
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "jwt12.test"),
                    ("CustomAuthorization", &format!("Bearer {jwt}")),
                ],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "finds the JWT in the first header occurrence of a duplicated custom authorization header",
        || {
            let jwt = hs256(&payload(Some("key-1")), SECRET_1);
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "jwt12.test"),
                    ("CustomAuthorization", &format!("Bearer {jwt}")),
                    ("CustomAuthorization", "Bearer other-token"),
                ],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it("finds the JWT if given in URL parameters", || {
        let jwt = hs256(&payload(Some("key-1")), SECRET_1);
        let r = get(
            &gw,
            &format!("/request/?jwt={jwt}"),
            &[("Host", "jwt1.test")],
        );
        assert_eq!(r.status, 200);
    });
    t.it("finds the JWT if given in a custom URL parameter", || {
        let jwt = hs256(&payload(Some("key-1")), SECRET_1);
        let r = get(
            &gw,
            &format!("/request/?token={jwt}"),
            &[("Host", "jwt2.test")],
        );
        assert_eq!(r.status, 200);
    });

    // RS*, PS*, ES256/ES384, EdDSA (Ed25519), HS384, HS512: "verifies JWT" and
    // "identifies Consumer".
    let cases: Vec<(&str, &str, &str, Signer)> = vec![
        (
            "RS256",
            "rsa-1",
            "jwt_tests_rsa_consumer_1",
            Signer::Rsa(&sg::RSA_PKCS1_SHA256),
        ),
        (
            "RS256",
            "rsa-2",
            "jwt_tests_rsa_consumer_2",
            Signer::Rsa(&sg::RSA_PKCS1_SHA256),
        ),
        (
            "RS512",
            "rsa-3",
            "jwt_tests_rsa_consumer_5",
            Signer::Rsa(&sg::RSA_PKCS1_SHA512),
        ),
        (
            "RS384",
            "rsa-4",
            "jwt_tests_rsa_consumer_9",
            Signer::Rsa(&sg::RSA_PKCS1_SHA384),
        ),
        (
            "ES384",
            "rsa-5",
            "jwt_tests_rsa_consumer_10",
            Signer::Ecdsa(es384),
        ),
        (
            "ES256",
            "es256",
            "jwt_tests_rsa_consumer_11",
            Signer::Ecdsa(es256),
        ),
        (
            "PS256",
            "rsa-7",
            "jwt_tests_rsa_consumer_12",
            Signer::Rsa(&sg::RSA_PSS_SHA256),
        ),
        (
            "PS384",
            "rsa-8",
            "jwt_tests_rsa_consumer_13",
            Signer::Rsa(&sg::RSA_PSS_SHA384),
        ),
        (
            "PS512",
            "rsa-9",
            "jwt_tests_rsa_consumer_14",
            Signer::Rsa(&sg::RSA_PSS_SHA512),
        ),
        (
            "EdDSA",
            "rsa-10",
            "jwt_tests_rsa_consumer_15",
            Signer::Ed(ed),
        ),
        (
            "HS384",
            "hs-1",
            "jwt_tests_hs_consumer_7",
            Signer::Hmac("HS384"),
        ),
        (
            "HS512",
            "hs-2",
            "jwt_tests_hs_consumer_8",
            Signer::Hmac("HS512"),
        ),
    ];
    for (alg, key, user, signer) in &cases {
        let secret: &[u8] = match *key {
            "hs-1" => HS384_SECRET.as_bytes(),
            "hs-2" => HS512_SECRET.as_bytes(),
            _ => b"",
        };
        t.it(
            &format!("{alg} ({key}): verifies JWT and identifies Consumer"),
            || {
                let auth = format!(
                    "Bearer {}",
                    encode(&payload(Some(key)), alg, None, signer, secret)
                );
                let r = get(
                    &gw,
                    "/request",
                    &[("Host", "jwt1.test"), ("Authorization", &auth)],
                );
                assert_eq!(r.status, 200, "{}", r.body_str());
                let got = up.last();
                assert_eq!(got.header("authorization"), Some(auth.as_str()));
                assert_eq!(got.header("x-consumer-username"), Some(*user));
                assert_eq!(got.header("x-credential-identifier"), Some(*key));
                assert_eq!(got.header("x-anonymous-consumer"), None);
            },
        );
        t.it(
            &format!("{alg} ({key}): a token signed for another key is refused"),
            || {
                let jwt = encode(&payload(Some(key)), alg, None, signer, secret);
                // Change one signature character (not the last: its low bits
                // may be padding that decoding ignores).
                let at = jwt.rfind('.').unwrap() + 3;
                let c = if &jwt[at..at + 1] == "A" { "B" } else { "A" };
                let jwt = format!("{}{c}{}", &jwt[..at], &jwt[at + 1..]);
                let r = get(
                    &gw,
                    "/request",
                    &[
                        ("Host", "jwt1.test"),
                        ("Authorization", &format!("Bearer {jwt}")),
                    ],
                );
                assert_401(&r, json!({"message": "Invalid signature"}), INVALID_TOKEN);
            },
        );
    }
    t.it(
        "RS256: proxies the request if conf.secret is base64",
        || {
            let auth = format!(
                "Bearer {}",
                encode(
                    &payload(Some("rsa-2")),
                    "RS256",
                    None,
                    &Signer::Rsa(&sg::RSA_PKCS1_SHA256),
                    b""
                )
            );
            let r = get(
                &gw,
                "/request",
                &[("Host", "jwt5.test"), ("Authorization", &auth)],
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(
                got.header("x-consumer-username"),
                Some("jwt_tests_rsa_consumer_2")
            );
            assert_eq!(got.header("x-credential-identifier"), Some("rsa-2"));
        },
    );

    // describe("JWT private claims checks")
    t.it("requires the checked fields to be in the claims", || {
        let jwt = hs256(&json!({"iss": "key-1"}), SECRET_1);
        let r = get(
            &gw,
            &format!("/request/?jwt={jwt}"),
            &[("Host", "jwt3.test")],
        );
        assert_401(
            &r,
            json!({"nbf": "must be a number", "exp": "must be a number"}),
            INVALID_TOKEN,
        );
    });
    t.it("checks if the fields are valid: `exp` claim", || {
        let jwt = hs256(
            &json!({"iss": "key-1", "exp": now() - 10, "nbf": now() - 10}),
            SECRET_1,
        );
        let r = get(
            &gw,
            &format!("/request/?jwt={jwt}"),
            &[("Host", "jwt3.test")],
        );
        assert_eq!(r.status, 401);
        assert_eq!(r.body_str(), r#"{"exp":"token expired"}"#);
        assert_eq!(r.header("WWW-Authenticate"), Some(INVALID_TOKEN));
    });
    t.it("checks if the fields are valid: `nbf` claim", || {
        let jwt = hs256(
            &json!({"iss": "key-1", "exp": now() + 10, "nbf": now() + 5}),
            SECRET_1,
        );
        let r = get(
            &gw,
            &format!("/request/?jwt={jwt}"),
            &[("Host", "jwt3.test")],
        );
        assert_eq!(r.status, 401);
        assert_eq!(r.body_str(), r#"{"nbf":"token not valid yet"}"#);
        assert_eq!(r.header("WWW-Authenticate"), Some(INVALID_TOKEN));
    });

    // describe("config.anonymous")
    t.it("works with right credentials and anonymous", || {
        let auth = format!("Bearer {}", hs256(&payload(Some("key-1")), SECRET_1));
        let r = get(
            &gw,
            "/request",
            &[("Host", "jwt6.test"), ("Authorization", &auth)],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(
            got.header("x-consumer-username"),
            Some("jwt_tests_consumer")
        );
        assert_eq!(got.header("x-credential-identifier"), Some("key-1"));
        assert_eq!(got.header("x-anonymous-consumer"), None);
    });
    t.it("works with wrong credentials and anonymous", || {
        let r = get(&gw, "/request", &[("Host", "jwt6.test")]);
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(got.header("x-consumer-username"), Some("no-body"));
        assert_eq!(got.header("x-credential-identifier"), None);
    });
    t.it(
        "works with wrong credentials and username in anonymous",
        || {
            let r = get(&gw, "/request", &[("Host", "jwt13.test")]);
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
            assert_eq!(got.header("x-consumer-username"), Some("no-body"));
            assert_eq!(got.header("x-credential-identifier"), None);
        },
    );
    t.it("errors when anonymous user doesn't exist", || {
        let r = get(&gw, "/request", &[("Host", "jwt7.test")]);
        assert_eq!(r.status, 500);
        assert_eq!(
            r.json()["message"],
            format!("anonymous consumer {NONEXISTING} is configured but doesn't exist")
        );
    });
    t.finish();
}

const MULTI: &str = r#"_format_version: "3.0"
consumers:
- username: Anonymous
  id: 8b3d5e6f-0000-4000-8000-0000000000e0
- username: Mickey
  id: 8b3d5e6f-0000-4000-8000-0000000000e1
  keyauth_credentials: [{key: Mouse, id: 8b3d5e6f-0000-4000-8000-0000000000c1}]
- username: Aladdin
  id: 8b3d5e6f-0000-4000-8000-0000000000e2
  jwt_secrets: [{key: aladdin-key, secret: aladdin-secret}]
services:
- url: http://{UP0}/request
  routes:
  - hosts: [logical-and.test]
    plugins: [{name: jwt}, {name: key-auth}]
- url: http://{UP0}/request
  routes:
  - hosts: [logical-or.test]
    plugins:
    - {name: jwt, config: {anonymous: 8b3d5e6f-0000-4000-8000-0000000000e0}}
    - {name: key-auth, config: {anonymous: 8b3d5e6f-0000-4000-8000-0000000000e0}}
"#;

#[test]
fn jwt_with_key_auth_logical_and_or() {
    let anonymous = "8b3d5e6f-0000-4000-8000-0000000000e0";
    let user1 = "8b3d5e6f-0000-4000-8000-0000000000e1";
    let user2 = "8b3d5e6f-0000-4000-8000-0000000000e2";
    let key_auth_id = "8b3d5e6f-0000-4000-8000-0000000000c1";
    let token = format!(
        "Bearer {}",
        hs256(&payload(Some("aladdin-key")), "aladdin-secret")
    );
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(MULTI, &[up.port]));
    let mut t = Cases::new();
    t.it("AND: passes with all credentials provided", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "logical-and.test"),
                ("apikey", "Mouse"),
                ("Authorization", &token),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        let id = got.header("x-consumer-id").unwrap();
        assert_ne!(id, anonymous);
        assert!(id == user1 || id == user2);
        // key-auth (1250) runs after jwt (1450): its credential wins.
        assert_eq!(got.header("x-credential-identifier"), Some(key_auth_id));
    });
    t.it(
        "AND: fails 401, with only the first credential provided",
        || {
            let r = get(
                &gw,
                "/request",
                &[("Host", "logical-and.test"), ("apikey", "Mouse")],
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        },
    );
    t.it(
        "AND: fails 401, with only the second credential provided",
        || {
            let r = get(
                &gw,
                "/request",
                &[("Host", "logical-and.test"), ("Authorization", &token)],
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
        },
    );
    t.it("AND: fails 401, with no credential provided", || {
        let r = get(&gw, "/request", &[("Host", "logical-and.test")]);
        assert_eq!(r.status, 401);
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    });
    t.it("OR: passes with all credentials provided", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "logical-or.test"),
                ("apikey", "Mouse"),
                ("Authorization", &token),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        let id = got.header("x-consumer-id").unwrap();
        assert_ne!(id, anonymous);
        assert!(id == user1 || id == user2);
        assert_eq!(got.header("x-credential-identifier"), Some("aladdin-key"));
    });
    t.it("OR: passes with only the first credential provided", || {
        let r = get(
            &gw,
            "/request",
            &[("Host", "logical-or.test"), ("apikey", "Mouse")],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        assert_eq!(got.header("x-consumer-id"), Some(user1));
        assert_ne!(got.header("x-credential-identifier"), Some("aladdin-key"));
    });
    t.it(
        "OR: passes with only the second credential provided",
        || {
            let r = get(
                &gw,
                "/request",
                &[("Host", "logical-or.test"), ("Authorization", &token)],
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-anonymous-consumer"), None);
            assert_eq!(got.header("x-consumer-id"), Some(user2));
            assert_eq!(got.header("x-credential-identifier"), Some("aladdin-key"));
        },
    );
    t.it("OR: passes with no credential provided", || {
        let r = get(&gw, "/request", &[("Host", "logical-or.test")]);
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(got.header("x-consumer-id"), Some(anonymous));
        assert_eq!(got.header("x-credential-identifier"), None);
    });
    t.finish();
}

#[test]
fn jwt_schema_and_secret_rules_refuse_the_config() {
    // 06-schema_spec.lua: "when 'maximum_expiration' is specified without
    // 'exp' in 'claims_to_verify'" and "when 'maximum_expiration' is negative".
    let refused = |conf: &str| {
        Gateway::try_start(&format!(
            "_format_version: \"3.0\"\nservices:\n- url: http://127.0.0.1:9\n  routes:\n  - paths: [/]\n    plugins: [{{name: jwt, config: {conf}}}]\n"
        ))
        .err()
        .expect("config must be refused")
    };
    let out = refused("{maximum_expiration: 60, claims_to_verify: [nbf]}");
    assert!(out.contains("expected to contain: exp"), "{out}");
    let out = refused("{maximum_expiration: -1, claims_to_verify: [exp, nbf]}");
    assert!(
        out.contains("value should be between 0 and 31536000"),
        "{out}"
    );
    // "validates 'maximum_expiration'".
    let up = Recorder::start();
    let _ok = Gateway::start(&fill_ports(
        "_format_version: \"3.0\"\nservices:\n- url: http://{UP0}\n  routes:\n  - paths: [/]\n    plugins: [{name: jwt, config: {maximum_expiration: 60, claims_to_verify: [exp, nbf]}}]\n",
        &[up.port],
    ));
    // jwt_secrets: RS256 needs a key that loads.
    let out = Gateway::try_start(
        "_format_version: \"3.0\"\nconsumers:\n- username: u\n  jwt_secrets:\n  - {key: k, algorithm: RS256, rsa_public_key: nope}\n",
    )
    .err()
    .expect("an RS256 secret without a valid key must be refused");
    assert!(out.contains("invalid key"), "{out}");
}
