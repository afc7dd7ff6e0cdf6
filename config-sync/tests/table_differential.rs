//! The wire path (`config_table` parsed as a `ConfigTable`, validated by
//! `parse_declarative_table`) against the `Value` path
//! (`parse_declarative_value`): same typed config for valid input, the same
//! errors (entity, name, field, reason, order) for invalid input. Large
//! generated configs, then thousands of seeded random mutations of smaller
//! ones.
#![allow(clippy::unwrap_used)]

use config_sync::table::parse_table;
use config_sync::{
    parse_declarative_str, parse_declarative_table, parse_declarative_value, ConfigErrors,
    DeclarativeConfig, ParseOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn opts() -> ParseOptions {
    ParseOptions::with_plugins(["key-auth", "rate-limiting", "cors", "basic-auth", "acl"])
}

fn id(kind: &str, i: usize) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{kind}-{i}").as_bytes()).to_string()
}

/// A control plane's flat export: every entity kind the gateway reads,
/// ids, explicit nulls, a mix of route shapes.
fn cp_config(n: usize) -> Value {
    let services: Vec<Value> = (0..n.div_ceil(10))
        .map(|i| {
            json!({"id": id("service", i), "name": format!("svc-{i}"), "protocol": "http",
                   "host": format!("svc-{i}.internal"), "port": 8080, "path": format!("/api/{i}"),
                   "retries": 3, "connect_timeout": 60000, "write_timeout": 60000,
                   "read_timeout": 30000, "tags": null, "client_certificate": null,
                   "tls_verify": null, "tls_verify_depth": null, "ca_certificates": null,
                   "enabled": i % 7 != 3, "created_at": 1, "updated_at": 1})
        })
        .collect();
    let routes: Vec<Value> = (0..n)
        .map(|j| {
            let mut r = json!({"id": id("route", j), "name": format!("route-{j}"),
                "service": id("service", j / 10), "protocols": ["http", "https"],
                "methods": null, "hosts": null, "paths": null, "headers": null, "snis": null,
                "sources": null, "destinations": null, "strip_path": j % 3 == 0,
                "preserve_host": false, "regex_priority": 0, "path_handling": "v0",
                "https_redirect_status_code": 426, "request_buffering": true,
                "response_buffering": true, "tags": null, "created_at": 1, "updated_at": 1});
            let m = r.as_object_mut().unwrap();
            match j % 5 {
                0 => {
                    m.insert(
                        "hosts".into(),
                        json!([format!("api{}.example.com", j % 50)]),
                    );
                    m.insert("paths".into(), json!([format!("/v1/res{j}")]));
                    m.insert("methods".into(), json!(["GET", "POST"]));
                }
                1 => {
                    m.insert("paths".into(), json!([format!(r"~/users/{j}/(?<id>\d+)$")]));
                    m.insert("regex_priority".into(), json!(j % 4));
                }
                2 => {
                    m.insert("paths".into(), json!([format!("/h/{j}")]));
                    m.insert("headers".into(), json!({"x-v": ["1", r"~*^b-\d+$"]}));
                    m.insert("tags".into(), json!(["a", format!("b{}", j % 3)]));
                }
                3 => {
                    m.insert("hosts".into(), json!([format!("*.t{j}.example.net")]));
                    m.insert("protocols".into(), json!(["https"]));
                    m.insert("https_redirect_status_code".into(), json!(301));
                }
                _ => {
                    m.insert(
                        "paths".into(),
                        json!([format!("/p/{j}"), format!("/q/{j}")]),
                    );
                }
            }
            r
        })
        .collect();
    let upstreams: Vec<Value> = (0..3)
        .map(|k| {
            json!({"id": id("upstream", k), "name": format!("up-{k}"), "algorithm": "round-robin",
                   "slots": 100, "hash_on": "none", "tags": null,
                   "healthchecks": {"threshold": 25.5, "active": {"timeout": 1.5,
                       "healthy": {"interval": 0, "successes": 0}}},
                   "created_at": 1})
        })
        .collect();
    let targets: Vec<Value> = (0..6)
        .map(|t| {
            json!({"id": id("target", t), "upstream": {"id": id("upstream", t / 2)},
                   "target": format!("10.0.0.{}:80", t + 1), "weight": 100, "created_at": 1.5})
        })
        .collect();
    let consumers: Vec<Value> = (0..5)
        .map(|c| json!({"id": id("consumer", c), "username": format!("u{c}"), "custom_id": null}))
        .collect();
    let creds: Vec<Value> = (0..5)
        .map(|c| {
            json!({"id": id("keyauth", c), "consumer": {"id": id("consumer", c)},
                        "key": format!("k{c}"), "ttl": null, "tags": null})
        })
        .collect();
    let acls: Vec<Value> = (0..5)
        .map(|c| json!({"id": id("acl", c), "consumer": id("consumer", c), "group": "g"}))
        .collect();
    let plugins = json!([
        {"id": id("plugin", 0), "name": "key-auth", "config": {"key_names": ["apikey"]},
         "service": {"id": id("service", 0)}, "route": null, "consumer": null,
         "enabled": true, "protocols": ["http", "https"], "instance_name": null},
        {"id": id("plugin", 1), "name": "cors", "route": {"id": id("route", 1)},
         "config": {"origins": ["*"], "max_age": 3600.5}},
        {"id": id("plugin", 2), "name": "acl", "consumer": {"id": id("consumer", 1)},
         "config": {"allow": ["g"]}, "enabled": false},
    ]);
    json!({
        "_format_version": "3.0", "_transform": false,
        "workspaces": [{"id": id("ws", 0), "name": "default"}],
        "parameters": [{"key": "cluster_id", "value": "x"}],
        "services": services, "routes": routes, "upstreams": upstreams, "targets": targets,
        "consumers": consumers, "keyauth_credentials": creds, "acls": acls,
        "plugins": plugins,
    })
}

/// Both paths on `v` (the wire one from its JSON text, as a CP sends it).
fn both(
    v: &Value,
) -> (
    Result<DeclarativeConfig, ConfigErrors>,
    Result<DeclarativeConfig, ConfigErrors>,
) {
    let by_value = parse_declarative_value(v.clone(), &opts());
    let text = v.to_string();
    let by_table = match parse_table(text.as_bytes()).unwrap() {
        Some(t) => parse_declarative_table(t, &opts()),
        // Not an object: the same top-level error.
        None => parse_declarative_value(v.clone(), &opts()),
    };
    (by_value, by_table)
}

/// `c` with what each parse draws at random masked: ids Kong derives from
/// nothing (UUIDv4) and generated key-auth keys (32 hex digits).
fn masked(c: &DeclarativeConfig) -> String {
    let mut c = c.clone();
    c.raw = Value::Null;
    let random = regex::Regex::new(
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}|\"[0-9a-f]{32}\"",
    )
    .unwrap();
    random
        .replace_all(&format!("{c:?}"), "<random>")
        .into_owned()
}

fn assert_same(v: &Value, what: &str) {
    match both(v) {
        (Ok(a), Ok(b)) => {
            if !a.same_entities(&b) {
                let (a, b) = (masked(&a), masked(&b));
                if let Some(i) = a.bytes().zip(b.bytes()).position(|(x, y)| x != y) {
                    let at = |s: &str| {
                        s.get(i.saturating_sub(200)..(i + 200).min(s.len()))
                            .map(str::to_string)
                    };
                    panic!("{what}: configs differ at {i}:\n{:?}\n{:?}", at(&a), at(&b));
                }
                assert_eq!(a.len(), b.len(), "{what}: configs differ");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.errors, b.errors, "{what}"),
        (a, b) => panic!(
            "{what}: one path accepts, the other refuses: {:?} / {:?}",
            a.err(),
            b.err()
        ),
    }
}

#[test]
fn a_large_export_types_the_same_on_both_paths() {
    let v = cp_config(5_000);
    let (a, b) = both(&v);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.routes.len(), 5_000);
    assert!(a.same_entities(&b));
    assert!(!a.plugins.is_empty() && !a.credentials.is_empty() && !a.targets.is_empty());
}

/// A palette of values that hit most of the validators' branches.
fn odd_value(rng: &mut StdRng) -> Value {
    let palette = [
        Value::Null,
        json!(""),
        json!("x"),
        json!("/a//b"),
        json!("~/(unclosed"),
        json!("*.ex.com"),
        json!("GET"),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(70000),
        json!(true),
        json!([]),
        json!(["a"]),
        json!([1, "b"]),
        json!(["/ok", "/ok"]),
        json!({}),
        json!({"a": 1}),
        json!({"x-h": ["v"]}),
        json!({"id": "not-a-uuid"}),
        json!("11111111-1111-1111-1111-111111111111"),
    ];
    palette[rng.gen_range(0..palette.len())].clone()
}

fn mutate(v: &mut Value, rng: &mut StdRng) {
    let top = v.as_object_mut().unwrap();
    let tables: Vec<String> = top.keys().cloned().collect();
    let table = tables[rng.gen_range(0..tables.len())].clone();
    let Some(slot) = top.get_mut(&table) else {
        return;
    };
    let Value::Array(list) = slot else {
        *slot = odd_value(rng);
        return;
    };
    if list.is_empty() || rng.gen_ratio(1, 20) {
        *slot = odd_value(rng);
        return;
    }
    let i = rng.gen_range(0..list.len());
    if rng.gen_ratio(1, 15) {
        // Duplicate an entity (ids, names) or replace it.
        if rng.gen_bool(0.5) {
            let e = list[i].clone();
            list.push(e);
        } else {
            list[i] = odd_value(rng);
        }
        return;
    }
    let Value::Object(e) = &mut list[i] else {
        return;
    };
    let keys: Vec<String> = e.keys().cloned().collect();
    match rng.gen_range(0..10) {
        0 => {
            e.insert(format!("unknown_{}", rng.gen_range(0..3)), odd_value(rng));
        }
        1 if !keys.is_empty() => {
            e.shift_remove(&keys[rng.gen_range(0..keys.len())]);
        }
        _ if !keys.is_empty() => {
            let k = &keys[rng.gen_range(0..keys.len())];
            e.insert(k.clone(), odd_value(rng));
        }
        _ => {}
    }
}

#[test]
fn mutated_exports_get_the_same_errors_on_both_paths() {
    let base = cp_config(60);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut refused = 0;
    for round in 0..800 {
        let mut v = base.clone();
        for _ in 0..rng.gen_range(1..4) {
            mutate(&mut v, &mut rng);
        }
        if both(&v).0.is_err() {
            refused += 1;
        }
        assert_same(&v, &format!("round {round}"));
    }
    // The mutations do reach the validators.
    assert!(refused > 250, "only {refused} refused");
}

#[test]
fn nested_configs_and_odd_documents_agree() {
    let nested = json!({
        "_format_version": "3.0",
        "services": [{"name": "s", "url": "http://h:1/p", "routes": [{"name": "r", "paths": ["/a"],
            "plugins": [{"name": "cors"}]}], "plugins": [{"name": "key-auth"}]}],
        "certificates": [],
        "consumers": [{"username": "c", "acls": [{"group": "g"}], "keyauth_credentials": [{"key": "k"}]}],
        "upstreams": [{"name": "u", "targets": [{"target": "1.2.3.4"}]}],
    });
    assert_same(&nested, "nested");
    for doc in [
        json!({}),
        json!({"_format_version": "3.0"}),
        json!({"_format_version": "1.0", "services": "x", "routes": 1, "extra": true}),
        json!({"_format_version": "3.0", "filter_chains": [{"a": 1}], "services": [1, "x", null]}),
        json!({"_format_version": "3.0", "certificates": [{"cert": "x", "key": "y", "snis": ["a.com", 1]}]}),
        json!({"_format_version": "3.0", "routes": [{"paths": ["/a"], "service": "nope"}]}),
    ] {
        assert_same(&doc, &doc.to_string());
    }
    // Repeated keys: the last value at the first position, on both paths.
    let text = r#"{"_format_version": "3.0", "routes": [{"name": "r", "paths": ["/a"], "bogus": 1,
        "name": "r2", "bogus": 2}]}"#;
    let by_str = parse_declarative_str(text, &opts()).unwrap_err();
    let by_table = parse_declarative_table(parse_table(text.as_bytes()).unwrap().unwrap(), &opts())
        .unwrap_err();
    assert_eq!(by_str.errors, by_table.errors);
    assert_eq!(by_str.errors.len(), 1);
    assert_eq!(by_str.errors[0].ident, "r2");
}

#[test]
fn the_table_keeps_map_order_for_the_hash() {
    let v = cp_config(50);
    let t = parse_table(v.to_string().as_bytes()).unwrap().unwrap();
    assert_eq!(t.to_value().to_string(), v.to_string());
    assert_eq!(
        config_sync::config_hash(&t.to_value()),
        config_sync::config_hash(&v)
    );
}
