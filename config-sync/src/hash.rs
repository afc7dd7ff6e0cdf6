//! Kong's hybrid-mode config hash (`kong/clustering/config_helper.lua`).
//!
//! The data plane only needs it when a control plane sends a config without
//! a hash, and to report a hash for a local declarative config; a received
//! hash is otherwise treated as opaque. The algorithm is reproduced byte for
//! byte because a CP compares the hash we report against its own.

use md5::{Digest, Md5};
use serde_json::Value;

/// Hash of an absent value (Kong's `DECLARATIVE_EMPTY_CONFIG_HASH`).
pub const EMPTY_HASH: &str = "00000000000000000000000000000000";

/// Kong squashes the canonical buffer into its raw MD5 once it grows past
/// this many bytes, to bound memory on huge configs.
const SQUASH_THRESHOLD: usize = 1_000_000;

/// The config hash plus the per-entity "granular" hashes Kong uses to decide
/// what to rebuild (router, plugins iterator, balancer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigHashes {
    pub config: String,
    pub routes: String,
    pub services: String,
    pub plugins: String,
    pub upstreams: String,
    pub targets: String,
}

/// Kong's `calculate_config_hash`: 32 lowercase hex characters.
pub fn config_hash(v: &Value) -> String {
    config_hashes(v).config
}

/// The config hash together with the granular hashes.
pub fn config_hashes(v: &Value) -> ConfigHashes {
    const SPLIT: [&str; 5] = ["routes", "services", "plugins", "upstreams", "targets"];
    match v {
        // Lua sees both objects and arrays as tables; an array simply has
        // none of the five keys.
        Value::Object(_) | Value::Array(_) => {
            let part = |k: &str| match v.get(k) {
                Some(x) => hash_value(x),
                None => EMPTY_HASH.to_string(),
            };
            let routes = part("routes");
            let services = part("services");
            let plugins = part("plugins");
            let upstreams = part("upstreams");
            let targets = part("targets");
            let rest = match v {
                // The hash of the object without the five keys (no copy).
                Value::Object(m) => {
                    let mut buf = Vec::new();
                    canonical_members(
                        m.iter().filter(|(k, _)| !SPLIT.contains(&k.as_str())),
                        &mut buf,
                    );
                    hex::encode(Md5::digest(&buf))
                }
                other => hash_value(other),
            };
            let mut h = Md5::new();
            for part in [&routes, &services, &plugins, &upstreams, &targets, &rest] {
                h.update(part.as_bytes());
            }
            ConfigHashes {
                config: hex::encode(h.finalize()),
                routes,
                services,
                plugins,
                upstreams,
                targets,
            }
        }
        scalar => {
            let config = hash_value(scalar);
            ConfigHashes {
                config,
                routes: EMPTY_HASH.to_string(),
                services: EMPTY_HASH.to_string(),
                plugins: EMPTY_HASH.to_string(),
                upstreams: EMPTY_HASH.to_string(),
                targets: EMPTY_HASH.to_string(),
            }
        }
    }
}

/// `H(v)`: hex MD5 of the canonical string.
pub fn hash_value(v: &Value) -> String {
    let mut buf = Vec::new();
    canonical(v, &mut buf);
    hex::encode(Md5::digest(&buf))
}

/// Appends Kong's canonical (`to_sorted_string`) form of `v` to `buf`.
pub fn canonical(v: &Value, buf: &mut Vec<u8>) {
    squash(buf);
    match v {
        Value::Null => buf.extend_from_slice(b"/null/"),
        Value::String(s) => buf.extend_from_slice(s.as_bytes()),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            // LuaJIT holds every JSON number as a double.
            let f = n.as_f64().unwrap_or(0.0);
            write_g14(f, buf);
        }
        Value::Array(a) if a.is_empty() => buf.extend_from_slice(b"{}"),
        Value::Array(a) => {
            if a.len() <= 5 {
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        buf.push(b';');
                    }
                    canonical(item, buf);
                }
            } else {
                for item in a {
                    canonical(item, buf);
                    buf.push(b';');
                }
            }
        }
        Value::Object(o) => members(o.iter(), buf),
    }
}

/// Kong squashes the buffer into its raw MD5 once it is past the threshold
/// (checked each time a value starts).
fn squash(buf: &mut Vec<u8>) {
    if buf.len() > SQUASH_THRESHOLD {
        let digest = Md5::digest(&buf[..]);
        buf.clear();
        buf.extend_from_slice(&digest);
    }
}

/// [`canonical`] of an object made of `entries` (distinct keys).
fn canonical_members<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    buf: &mut Vec<u8>,
) {
    squash(buf);
    members(entries, buf);
}

/// An object's members sorted by key (bytewise), `key:value;` each; `{}`
/// for none.
fn members<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>, buf: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    if entries.is_empty() {
        buf.extend_from_slice(b"{}");
        return;
    }
    // Keys of one object are distinct: an unstable sort is exact.
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (k, val) in entries {
        buf.extend_from_slice(k.as_bytes());
        buf.push(b':');
        canonical(val, buf);
        buf.push(b';');
    }
}

/// Appends [`format_g14`] of `x`; integers (the common case: ports,
/// timeouts, timestamps) without going through a formatted float.
fn write_g14(x: f64, buf: &mut Vec<u8>) {
    // Below 1e14 an integral double has at most 14 significant digits, so
    // `%.14g` prints it as a plain integer. (Zero keeps its sign there.)
    if x.fract() == 0.0 && x.abs() < 1e14 && x != 0.0 {
        let mut n = x as i64;
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let neg = n < 0;
        while n != 0 {
            i -= 1;
            digits[i] = b'0' + (n % 10).unsigned_abs() as u8;
            n /= 10;
        }
        if neg {
            buf.push(b'-');
        }
        buf.extend_from_slice(&digits[i..]);
        return;
    }
    buf.extend_from_slice(format_g14(x).as_bytes());
}

/// C's `printf("%.14g", x)`, which is how LuaJIT turns numbers into strings.
pub fn format_g14(x: f64) -> String {
    const P: i32 = 14;
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // The exponent must be the one after rounding to P significant digits.
    let sci = format!("{:.*e}", (P - 1) as usize, x);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    if !(-4..P).contains(&exp) {
        let m = trim_fraction(&mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let fixed = format!("{:.*}", (P - 1 - exp) as usize, x);
        trim_fraction(&fixed).to_string()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md5_hex(s: &str) -> String {
        hex::encode(Md5::digest(s.as_bytes()))
    }

    #[test]
    fn g14_formatting() {
        assert_eq!(format_g14(80.0), "80");
        assert_eq!(format_g14(0.9), "0.9");
        assert_eq!(format_g14(1.1), "1.1");
        assert_eq!(format_g14(1e15), "1e+15");
        assert_eq!(format_g14(123456789012345678.0), "1.2345678901235e+17");
        assert_eq!(format_g14(-0.0), "-0");
        assert_eq!(format_g14(0.0001), "0.0001");
        assert_eq!(format_g14(0.00001), "1e-05");
        assert_eq!(format_g14(1700000000123.5), "1700000000123.5");
        assert_eq!(format_g14(99999999999999.0), "99999999999999");
        assert_eq!(format_g14(999999999999999.0), "1e+15");
        assert_eq!(format_g14(-2.5), "-2.5");
        assert_eq!(format_g14(1.0 / 3.0), "0.33333333333333");
    }

    #[test]
    fn integer_fast_path_matches_g14() {
        let mut xs = vec![
            1.0,
            -1.0,
            7.0,
            10.0,
            80.0,
            -80.0,
            65535.0,
            1_700_000_000.0,
            99_999_999_999_999.0,
            -99_999_999_999_999.0,
            100_000_000_000_000.0,
            123_456_789_012_345.0,
            9_007_199_254_740_993.0,
            0.0,
            -0.0,
            0.5,
            -2.5,
            1e15,
            f64::MAX,
        ];
        let mut x = 1.0f64;
        while x < 1e16 {
            xs.push(x);
            xs.push(x - 1.0);
            xs.push(-x + 1.0);
            x *= 7.0;
        }
        for x in xs {
            let mut buf = Vec::new();
            write_g14(x, &mut buf);
            assert_eq!(String::from_utf8(buf).unwrap(), format_g14(x), "{x}");
        }
    }

    #[test]
    fn scalar_known_answers() {
        assert_eq!(
            config_hash(&json!(null)),
            "5bf07a8b7343015026657d1108d8206e"
        );
        assert_eq!(config_hash(&json!(10)), "d3d9446802a44259755d38e6d163e820");
        assert_eq!(config_hash(&json!(0.9)), "a894124cc6d5c5c71afe060d5dde0762");
        assert_eq!(config_hash(&json!("")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            config_hash(&json!("hello")),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            config_hash(&json!(false)),
            "68934a3e9455fa72420237eb05902327"
        );
        assert_eq!(
            config_hash(&json!(true)),
            "b326b5062b2f0e69046810717534cb09"
        );
        assert_eq!(md5_hex("/null/"), "5bf07a8b7343015026657d1108d8206e");
    }

    #[test]
    fn table_known_answers() {
        let h = config_hashes(&json!({}));
        assert_eq!(h.config, "2da3c26e4dbd6dd6ea3ab60a3dd7fb3e");
        assert_eq!(h.routes, EMPTY_HASH);
        assert_eq!(h.targets, EMPTY_HASH);

        let h = config_hashes(&json!({"routes": [], "services": [], "plugins": []}));
        assert_eq!(h.config, "81aac97a81ad03c0cf0b36663806488e");
        assert_eq!(h.routes, "99914b932bd37a50b983c5e7c90ae93b");
        assert_eq!(h.services, "99914b932bd37a50b983c5e7c90ae93b");
        assert_eq!(h.plugins, "99914b932bd37a50b983c5e7c90ae93b");
        assert_eq!(h.upstreams, EMPTY_HASH);
        assert_eq!(h.targets, EMPTY_HASH);

        let h = config_hashes(&json!({"upstreams": [], "targets": []}));
        assert_eq!(h.config, "4d60dd9998ea4314039da5ca2f1db96f");
        assert_eq!(h.upstreams, "99914b932bd37a50b983c5e7c90ae93b");
        assert_eq!(h.routes, EMPTY_HASH);
    }

    #[test]
    fn complex_table_known_answer() {
        let mut consumers = Vec::new();
        for i in 1..=1000 {
            consumers.push(json!({"username": format!("user-{i}")}));
        }
        let v = json!({
            "plugins": [
                {"name": "0", "config": {"param": "value"}},
                {"name": "1", "config": {"param": ["v1", "v2", "v3", "v4", "v5", "v6"]}},
                {"name": "2", "config": {"param": ["v1", "v2", "v3", "v4", "v5"]}},
                {"name": "3", "config": {"param": ["v1", "v2", "v3", "v4"]}},
                {"name": "4", "config": {"param": ["v1", "v2", "v3"]}},
                {"name": "5", "config": {"param": ["v1", "v2"]}},
                {"name": "6", "config": {"param": ["v1"]}},
                {"name": "7", "config": {"param": []}},
                {"name": "8", "config": {"param": "value", "array": ["v1", "v2", "v3", "v4", "v5", "v6"]}},
                {"name": "9", "config": {"bool1": true, "bool2": false, "number": 1, "double": 1.1,
                    "empty": {}, "null": null, "string": "test", "hash": {"k": "v"},
                    "array": ["v1", "v2", "v3", "v4", "v5", "v6"]}}
            ],
            "consumers": consumers,
        });
        assert_eq!(config_hash(&v), "675ff4b6b1c8cefa5198284110786ad0");
    }

    #[test]
    fn canonical_rules() {
        let mut b = Vec::new();
        canonical(&json!([1, 2, 3]), &mut b);
        assert_eq!(b, b"1;2;3");
        b.clear();
        canonical(&json!([1, 2, 3, 4, 5, 6]), &mut b);
        assert_eq!(b, b"1;2;3;4;5;6;");
        b.clear();
        canonical(&json!({"b": 1, "a": [], "B": null}), &mut b);
        assert_eq!(b, b"B:/null/;a:{};b:1;");
    }

    #[test]
    fn explicit_null_section_differs_from_absent() {
        let h = config_hashes(&json!({"routes": null}));
        assert_eq!(h.routes, "5bf07a8b7343015026657d1108d8206e");
        assert_eq!(h.services, EMPTY_HASH);
    }

    #[test]
    fn squash_keeps_hash_deterministic_for_large_docs() {
        let big: Vec<Value> = (0..40_000)
            .map(|i| json!({"name": format!("consumer-number-{i}"), "n": i}))
            .collect();
        let v = json!({"consumers": big});
        let a = config_hash(&v);
        assert_eq!(a.len(), 32);
        assert_eq!(a, config_hash(&v));
    }
}
