//! Kong's hybrid-mode config hash, written a second time for the test
//! control plane straight from `kong/clustering/config_helper.lua`
//! (`to_sorted_string`, `calculate_hash`, `calculate_config_hash`), without
//! the data plane's `config_sync::hash`. The test CP sends the hashes made
//! here, as Kong's CP computes them (the DP echoes them in its pings). The
//! tests below pin this module to Kong's own vectors
//! (spec/01-unit/19-hybrid/02-clustering_spec.lua) and check that it and
//! the data plane's implementation (which the DP uses for a config that
//! came without a hash, and for a declarative file) agree on a few configs.
//!
//! Kept small and literal rather than fast (no streaming, one `String` per
//! number).

use md5::{Digest, Md5};
use serde_json::Value;

/// `DECLARATIVE_EMPTY_CONFIG_HASH`: the hash of nil (an absent field).
pub const EMPTY: &str = "00000000000000000000000000000000";

/// The six hashes Kong's CP sends with a `reconfigure` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    pub config: String,
    pub routes: String,
    pub services: String,
    pub plugins: String,
    pub upstreams: String,
    pub targets: String,
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `tostring(n)` in LuaJIT: C's `%.14g`. Rust's `{:.13e}` gives the same
/// 14 significant digits, correctly rounded; the rest is `%g`'s layout.
fn lua_number(n: f64) -> String {
    if n.is_nan() {
        return "nan".into();
    }
    if n.is_infinite() {
        return if n < 0.0 { "-inf" } else { "inf" }.into();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{:.13e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect(); // 14 digits
    let sign = if n < 0.0 { "-" } else { "" };
    if !(-4..14).contains(&exp) {
        // d.ddde±XX, trailing zeros (and a bare point) removed.
        let frac = digits[1..].trim_end_matches('0');
        let point = if frac.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!(
            "{sign}{}{point}{frac}e{esign}{:02}",
            &digits[..1],
            exp.abs()
        );
    }
    // Fixed notation: the point goes after digit `exp` (0-based), padding
    // with leading zeros for negative exponents.
    let (int, frac) = if exp >= 0 {
        let at = exp as usize + 1;
        (digits[..at].to_string(), digits[at..].to_string())
    } else {
        let zeros = "0".repeat((-exp - 1) as usize);
        ("0".to_string(), format!("{zeros}{digits}"))
    };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// `to_sorted_string(value, o)`.
fn to_sorted_string(value: &Value, o: &mut Vec<u8>) {
    // "if #o > 1000000 then o:set(ngx_md5_bin(o:tostring())) end"
    if o.len() > 1_000_000 {
        let digest = Md5::digest(&o[..]).to_vec();
        *o = digest;
    }
    match value {
        Value::Null => o.extend_from_slice(b"/null/"),
        Value::String(s) => o.extend_from_slice(s.as_bytes()),
        Value::Number(n) => {
            o.extend_from_slice(lua_number(n.as_f64().expect("JSON number")).as_bytes())
        }
        Value::Bool(b) => o.extend_from_slice(b.to_string().as_bytes()),
        // isempty(value): an empty array and an empty object alike.
        Value::Array(a) if a.is_empty() => o.extend_from_slice(b"{}"),
        Value::Object(m) if m.is_empty() => o.extend_from_slice(b"{}"),
        // isarray(value): counts 1 to 5 are unrolled with ";" between the
        // items, longer arrays put ";" after each item.
        Value::Array(a) if a.len() <= 5 => {
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    o.push(b';');
                }
                to_sorted_string(item, o);
            }
        }
        Value::Array(a) => {
            for item in a {
                to_sorted_string(item, o);
                o.push(b';');
            }
        }
        // A hash table: "key:value;" by sorted key (byte order, as
        // strcmp in the C locale nginx runs with).
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for k in keys {
                o.extend_from_slice(k.as_bytes());
                o.push(b':');
                to_sorted_string(&m[k.as_str()], o);
                o.push(b';');
            }
        }
    }
}

/// `calculate_hash(input, o)`; `None` is Lua's nil.
fn calculate_hash(input: Option<&Value>) -> String {
    match input {
        None => EMPTY.to_string(),
        Some(v) => {
            let mut o = Vec::new();
            to_sorted_string(v, &mut o);
            md5_hex(&o)
        }
    }
}

/// `calculate_config_hash(config_table)`.
pub fn calculate_config_hash(config: &Value) -> Hashes {
    let field = |name: &str| match config {
        Value::Object(m) => m.get(name),
        _ => None,
    };
    let is_table = matches!(config, Value::Object(_) | Value::Array(_));
    if !is_table {
        let h = calculate_hash(Some(config));
        return Hashes {
            config: h,
            routes: EMPTY.into(),
            services: EMPTY.into(),
            plugins: EMPTY.into(),
            upstreams: EMPTY.into(),
            targets: EMPTY.into(),
        };
    }
    let routes = calculate_hash(field("routes"));
    let services = calculate_hash(field("services"));
    let plugins = calculate_hash(field("plugins"));
    let upstreams = calculate_hash(field("upstreams"));
    let targets = calculate_hash(field("targets"));
    // The table with those five fields set to nil.
    let mut rest = config.clone();
    if let Value::Object(m) = &mut rest {
        for k in ["routes", "services", "plugins", "upstreams", "targets"] {
            m.remove(k);
        }
    }
    let rest = calculate_hash(Some(&rest));
    let config =
        md5_hex(format!("{routes}{services}{plugins}{upstreams}{targets}{rest}").as_bytes());
    Hashes {
        config,
        routes,
        services,
        plugins,
        upstreams,
        targets,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// spec/01-unit/19-hybrid/02-clustering_spec.lua, `.calculate_config_hash()`.
    #[test]
    fn kongs_spec_vectors() {
        let h = |v: Value| calculate_config_hash(&v).config;
        assert_eq!(h(json!(null)), "5bf07a8b7343015026657d1108d8206e");
        assert_eq!(h(json!(10)), "d3d9446802a44259755d38e6d163e820");
        assert_eq!(h(json!(0.9)), "a894124cc6d5c5c71afe060d5dde0762");
        assert_eq!(h(json!("")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(h(json!("hello")), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(h(json!(false)), "68934a3e9455fa72420237eb05902327");
        assert_eq!(h(json!(true)), "b326b5062b2f0e69046810717534cb09");
        assert_eq!(h(json!({})), "2da3c26e4dbd6dd6ea3ab60a3dd7fb3e");

        let consumers: Vec<Value> = (1..=1000)
            .map(|i| json!({"username": format!("user-{i}")}))
            .collect();
        let complex = json!({
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
        assert_eq!(h(complex), "675ff4b6b1c8cefa5198284110786ad0");

        // "granular hashes"
        let empty = "99914b932bd37a50b983c5e7c90ae93b"; // md5("{}")
        assert_eq!(
            calculate_config_hash(&json!({"routes": [], "services": [], "plugins": []})),
            Hashes {
                config: "81aac97a81ad03c0cf0b36663806488e".into(),
                routes: empty.into(),
                services: empty.into(),
                plugins: empty.into(),
                upstreams: EMPTY.into(),
                targets: EMPTY.into(),
            }
        );
        assert_eq!(
            calculate_config_hash(&json!({"upstreams": [], "targets": []})),
            Hashes {
                config: "4d60dd9998ea4314039da5ca2f1db96f".into(),
                routes: EMPTY.into(),
                services: EMPTY.into(),
                plugins: EMPTY.into(),
                upstreams: empty.into(),
                targets: empty.into(),
            }
        );
    }

    #[test]
    fn lua_number_is_percent_14g() {
        for (n, want) in [
            (80.0, "80"),
            (0.9, "0.9"),
            (1.1, "1.1"),
            (-2.5, "-2.5"),
            (1e15, "1e+15"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.0 / 3.0, "0.33333333333333"),
            (99_999_999_999_999.0, "99999999999999"),
            (999_999_999_999_999.0, "1e+15"),
            (123_456_789_012_345_678.0, "1.2345678901235e+17"),
            (1_700_000_000.123, "1700000000.123"),
            (-0.0, "-0"),
        ] {
            assert_eq!(lua_number(n), want, "{n}");
        }
    }

    /// The data plane's implementation and this one agree: Kong-export
    /// shaped configs (numbers, nulls, long and short arrays, nested
    /// objects), one past the 1 MB squash threshold, and odd top-level
    /// shapes.
    #[test]
    fn agrees_with_the_data_planes_hash() {
        let mut big = crate::cp::kong_export(8000, "/", 3000);
        big["consumers"] = Value::Array(
            (0..200)
                .map(|i| json!({"username": format!("u{i}"), "custom_id": null, "tags": ["a", i, 2.5]}))
                .collect(),
        );
        let configs = [
            crate::cp::kong_export(8000, "/v1", 0),
            crate::cp::kong_export(1, "/x", 7),
            big,
            json!({"_format_version": "3.0", "routes": null, "plugins": [{"config": {"n": -0.25, "big": 1e300}}]}),
            json!([1, "two", null, {"b": 1, "a": [true]}, [], {}]),
            // Every array length around the unrolled 1..5 case.
            json!({"hosts": (0..8).map(|n| (0..n).collect::<Vec<u32>>()).collect::<Vec<_>>(),
                   "B": {"é": "ü", "a": [0.5, 3e-7, -12.0]}}),
            json!("just a string"),
        ];
        for (i, c) in configs.iter().enumerate() {
            let mine = calculate_config_hash(c);
            let dp = config_sync::config_hashes(c);
            assert_eq!(
                (
                    &mine.config,
                    &mine.routes,
                    &mine.services,
                    &mine.plugins,
                    &mine.upstreams,
                    &mine.targets
                ),
                (
                    &dp.config,
                    &dp.routes,
                    &dp.services,
                    &dp.plugins,
                    &dp.upstreams,
                    &dp.targets
                ),
                "config #{i}"
            );
        }
    }
}
