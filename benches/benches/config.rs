//! Applying a declarative config at 1,000 and 10,000 routes, phase by
//! phase and whole:
//!
//! * `config_decode`: text → JSON value (JSON and YAML);
//! * `config_validate`: `parse_declarative_value` (structure, ids, foreign
//!   keys, field validation) on a control plane's flat export, as a JSON
//!   value (`cp_export`) and as the wire decoder's `ConfigTable`
//!   (`cp_table`, what a push validates);
//! * `config_decode_frame`: inflate + parse of a push (no validation);
//! * `config_cache_load`: a start from the cache: integrity check, typed
//!   decode of the validated config, compile, swap;
//! * `config_compile`: `Snapshot::compile` (router, balancers, metrics);
//! * `config_apply`: a gzip `reconfigure` frame through `process_frame`
//!   into a fresh gateway sink (inflate, parse, validate, compile, swap),
//!   which is what a control-plane push and a cold start from the cache do;
//!   `cp_frame_prefix_only` is the shape of the test control plane's
//!   pushes (one service, prefix routes only; the load harness's `push`
//!   scenario times those end to end against the real binary);
//! * `config_load_text`: the DB-less path, nested JSON text to a snapshot;
//! * `config_hash`: Kong's config hash of the 10,000-route export.
//!
//! The configs are generated here: services with urls, routes with mixed
//! hosts (exact, wildcard), prefix and regex paths, headers and methods, a
//! few upstreams with targets, consumers and a global prometheus plugin.

use std::io::Write;
use std::time::Duration;

use config_sync::cluster::{cache, process_frame, ClusterStatus, ConfigSink, Outcome};
use config_sync::{
    config_hash, parse_declarative_table, parse_declarative_value, text_to_value, ParseOptions,
};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use gateway::cluster::GatewaySink;
use gateway::snapshot::{ConfigHandle, Snapshot};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Route counts measured. `--test` (the CI smoke run, dev profile, each
/// benchmark once) only checks that every phase works, on a small config.
fn sizes() -> &'static [usize] {
    if std::env::args().any(|a| a == "--test") {
        &[200]
    } else {
        &[1_000, 10_000]
    }
}
// As the gateway binary: allocation patterns dominate config decoding.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUTES_PER_SERVICE: usize = 10;
const UPSTREAMS: usize = 4;
const TS: u64 = 1_700_000_000;

fn plugins() -> Vec<String> {
    vec!["prometheus".to_string()]
}

fn opts() -> ParseOptions {
    ParseOptions::with_schemas(gateway::plugins::schemas(&plugins()))
}

fn id(kind: &str, i: usize) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{kind}-{i}").as_bytes()).to_string()
}

/// The matching fields of route `j`: a mix close to a real estate.
fn route_fields(j: usize) -> Map<String, Value> {
    let mut r = Map::new();
    match j % 20 {
        // exact host + prefix, some with methods
        0..=7 => {
            r.insert(
                "hosts".into(),
                json!([format!("api{}.example.com", j % 200)]),
            );
            r.insert("paths".into(), json!([format!("/v{}/res{j}", j % 3)]));
            if j.is_multiple_of(2) {
                r.insert("methods".into(), json!(["GET", "POST"]));
            }
        }
        // wildcard hosts
        8 | 9 => {
            r.insert("hosts".into(), json!([format!("*.tenant{j}.example.net")]));
            r.insert("paths".into(), json!([format!("/t{j}")]));
        }
        10 => {
            r.insert(
                "hosts".into(),
                json!([format!("shop{j}.*"), format!("store{j}.example.org:8080")]),
            );
            r.insert("paths".into(), json!(["/cart", "/checkout"]));
        }
        // host-less prefixes
        11..=14 => {
            r.insert(
                "paths".into(),
                json!([format!("/public/{j}/items"), format!("/public/{j}/list")]),
            );
            r.insert("methods".into(), json!(["GET"]));
            r.insert("strip_path".into(), json!(false));
        }
        // regex paths (one in 20 routes), one with a priority
        15 => {
            r.insert(
                "paths".into(),
                json!([format!(r"~/users/{j}/(?<id>\d+)/profile$")]),
            );
            r.insert("regex_priority".into(), json!(j % 3));
        }
        // header routes, one value a regex
        16 | 17 => {
            r.insert("paths".into(), json!([format!("/hdr/{j}")]));
            r.insert(
                "headers".into(),
                json!({"x-version": ["v1", r"~*^beta-\d+$"], "x-tenant": [format!("t{}", j % 50)]}),
            );
        }
        // host + path, https only
        _ => {
            r.insert(
                "hosts".into(),
                json!([format!("secure{}.example.com", j % 100)]),
            );
            r.insert("paths".into(), json!([format!("/s/{j}")]));
            r.insert("protocols".into(), json!(["https"]));
            r.insert("https_redirect_status_code".into(), json!(301));
        }
    }
    if j.is_multiple_of(4) {
        r.insert("tags".into(), json!(["team-a", format!("batch-{}", j % 7)]));
    }
    r
}

fn service_host(i: usize) -> String {
    // One service in 25 balances over an upstream.
    if i.is_multiple_of(25) {
        format!("up-{}.internal", i % UPSTREAMS)
    } else {
        format!("svc-{i}.internal")
    }
}

/// A hand-written (DB-less) style config: nested, names, no ids, urls.
fn user_config(n: usize) -> Value {
    let services: Vec<Value> = (0..n.div_ceil(ROUTES_PER_SERVICE))
        .map(|i| {
            let routes: Vec<Value> = (i * ROUTES_PER_SERVICE
                ..((i + 1) * ROUTES_PER_SERVICE).min(n))
                .map(|j| {
                    let mut r = route_fields(j);
                    r.insert("name".into(), json!(format!("route-{j}")));
                    Value::Object(r)
                })
                .collect();
            json!({
                "name": format!("svc-{i}"),
                "url": format!("http://{}:8080/api/{i}", service_host(i)),
                "retries": 3,
                "read_timeout": 30000,
                "routes": routes,
            })
        })
        .collect();
    let upstreams: Vec<Value> = (0..UPSTREAMS)
        .map(|k| {
            json!({
                "name": format!("up-{k}.internal"),
                "algorithm": if k % 2 == 0 { "round-robin" } else { "least-connections" },
                "targets": (0..3).map(|t| json!({
                    "target": format!("10.0.{k}.{}:8080", t + 1), "weight": 100 - t * 10
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let consumers: Vec<Value> = (0..20)
        .map(|c| json!({"username": format!("user-{c}"), "custom_id": format!("c{c}")}))
        .collect();
    json!({
        "_format_version": "3.0",
        "services": services,
        "upstreams": upstreams,
        "consumers": consumers,
        "plugins": [{
            "name": "prometheus",
            "config": {"status_code_metrics": true, "latency_metrics": true,
                       "bandwidth_metrics": true, "upstream_health_metrics": false},
        }],
    })
}

/// A control plane's flat export of the same config: ids, every column,
/// explicit nulls, timestamps (what `reconfigure` carries).
fn cp_config(n: usize) -> Value {
    let n_services = n.div_ceil(ROUTES_PER_SERVICE);
    let services: Vec<Value> = (0..n_services)
        .map(|i| {
            json!({
                "id": id("service", i), "name": format!("svc-{i}"), "protocol": "http",
                "host": service_host(i), "port": 8080, "path": format!("/api/{i}"),
                "retries": 3, "connect_timeout": 60000, "write_timeout": 60000,
                "read_timeout": 30000, "tags": null, "client_certificate": null,
                "tls_verify": null, "tls_verify_depth": null, "ca_certificates": null,
                "enabled": true, "created_at": TS, "updated_at": TS,
            })
        })
        .collect();
    let routes: Vec<Value> = (0..n)
        .map(|j| {
            let mut r = Map::new();
            for (k, v) in [
                ("id", json!(id("route", j))),
                ("name", json!(format!("route-{j}"))),
                ("service", json!(id("service", j / ROUTES_PER_SERVICE))),
                ("protocols", json!(["http", "https"])),
                ("methods", Value::Null),
                ("hosts", Value::Null),
                ("paths", Value::Null),
                ("headers", Value::Null),
                ("snis", Value::Null),
                ("sources", Value::Null),
                ("destinations", Value::Null),
                ("strip_path", json!(true)),
                ("preserve_host", json!(false)),
                ("regex_priority", json!(0)),
                ("path_handling", json!("v0")),
                ("https_redirect_status_code", json!(426)),
                ("request_buffering", json!(true)),
                ("response_buffering", json!(true)),
                ("tags", Value::Null),
                ("created_at", json!(TS)),
                ("updated_at", json!(TS)),
            ] {
                r.insert(k.into(), v);
            }
            r.extend(route_fields(j));
            Value::Object(r)
        })
        .collect();
    let healthchecks = json!({
        "threshold": 0,
        "active": {
            "type": "http", "timeout": 1, "concurrency": 10, "http_path": "/",
            "https_sni": null, "https_verify_certificate": true, "headers": null,
            "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
            "unhealthy": {"interval": 0, "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
                          "tcp_failures": 0, "timeouts": 0, "http_failures": 0},
        },
        "passive": {
            "type": "http",
            "healthy": {"http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                          300, 301, 302, 303, 304, 305, 306, 307, 308],
                        "successes": 0},
            "unhealthy": {"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0,
                          "http_failures": 0},
        },
    });
    let upstreams: Vec<Value> = (0..UPSTREAMS)
        .map(|k| {
            json!({
                "id": id("upstream", k), "name": format!("up-{k}.internal"),
                "algorithm": if k % 2 == 0 { "round-robin" } else { "least-connections" },
                "hash_on": "none", "hash_fallback": "none", "hash_on_header": null,
                "hash_fallback_header": null, "hash_on_cookie": null,
                "hash_on_cookie_path": "/", "hash_on_query_arg": null,
                "hash_fallback_query_arg": null, "hash_on_uri_capture": null,
                "hash_fallback_uri_capture": null, "slots": 10000, "host_header": null,
                "use_srv_name": false, "client_certificate": null, "tags": null,
                "healthchecks": healthchecks, "created_at": TS, "updated_at": TS,
            })
        })
        .collect();
    let targets: Vec<Value> = (0..UPSTREAMS * 3)
        .map(|t| {
            json!({
                "id": id("target", t), "upstream": id("upstream", t / 3),
                "target": format!("10.0.{}.{}:8080", t / 3, t % 3 + 1),
                "weight": 100 - (t % 3) * 10, "tags": null, "created_at": TS, "updated_at": TS,
            })
        })
        .collect();
    let consumers: Vec<Value> = (0..20)
        .map(|c| {
            json!({"id": id("consumer", c), "username": format!("user-{c}"),
                   "custom_id": format!("c{c}"), "tags": null, "created_at": TS, "updated_at": TS})
        })
        .collect();
    json!({
        "_format_version": "3.0",
        "_transform": false,
        "workspaces": default_workspace(),
        "parameters": [{"key": "cluster_id", "value": id("cluster", 0), "created_at": TS}],
        "services": services,
        "routes": routes,
        "upstreams": upstreams,
        "targets": targets,
        "consumers": consumers,
        "plugins": [{
            "id": id("plugin", 0), "name": "prometheus", "instance_name": null,
            "config": {"per_consumer": false, "status_code_metrics": true, "ai_metrics": false,
                       "latency_metrics": true, "bandwidth_metrics": true,
                       "upstream_health_metrics": false, "wasm_metrics": false},
            "service": null, "route": null, "consumer": null, "enabled": true,
            "protocols": ["grpc", "grpcs", "http", "https"], "tags": null,
            "created_at": TS, "updated_at": TS,
        }],
    })
}

/// The `workspaces` of a CP export: Kong's default one.
fn default_workspace() -> Value {
    json!([{"id": id("workspace", 0), "name": "default", "comment": null,
            "config": {}, "meta": {}, "created_at": TS, "updated_at": TS}])
}

/// The shape `tests/tests/hybrid.rs` pushes: one service, `n` prefix
/// routes, every column exported.
fn simple_cp_config(n: usize) -> Value {
    let svc = id("service", 0);
    let routes: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": id("route", i), "service": svc, "name": format!("route-{i}"),
                "paths": [format!("/r{i}")], "protocols": ["http", "https"],
                "strip_path": true, "preserve_host": false, "hosts": null, "methods": null,
                "headers": null, "snis": null, "sources": null, "destinations": null,
                "regex_priority": 0, "path_handling": "v0", "https_redirect_status_code": 426,
                "request_buffering": true, "response_buffering": true, "tags": null,
                "created_at": TS, "updated_at": TS,
            })
        })
        .collect();
    json!({
        "_format_version": "3.0",
        "_transform": false,
        "workspaces": default_workspace(),
        "services": [{
            "id": svc, "name": "echo", "protocol": "http", "host": "127.0.0.1",
            "port": 9000, "path": "/n", "retries": 5, "connect_timeout": 60000,
            "write_timeout": 60000, "read_timeout": 60000, "tags": null,
            "client_certificate": null, "tls_verify": null, "tls_verify_depth": null,
            "ca_certificates": null, "enabled": true, "created_at": TS, "updated_at": TS,
        }],
        "routes": routes,
    })
}

/// A gzip `reconfigure` frame, as a control plane sends it (and as the
/// cache stores it).
fn reconfigure_frame(config_table: &Value, hash: &str) -> Vec<u8> {
    let msg = json!({
        "type": "reconfigure",
        "timestamp": 1_700_000_000.123,
        "config_table": config_table,
        "config_hash": hash,
    });
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let written = e.write_all(msg.to_string().as_bytes());
    match written.and_then(|()| e.finish()) {
        Ok(v) => v,
        Err(err) => panic!("gzip: {err}"),
    }
}

fn bench(c: &mut Criterion) {
    let opts = opts();

    let mut g = c.benchmark_group("config_decode");
    g.sample_size(10);
    for &n in sizes() {
        let json_text = user_config(n).to_string();
        let yaml_text = match serde_yaml::to_string(&user_config(n)) {
            Ok(t) => t,
            Err(e) => panic!("yaml: {e}"),
        };
        g.bench_with_input(BenchmarkId::new("json", n), &json_text, |b, t| {
            b.iter(|| text_to_value(black_box(t)).expect("decode"))
        });
        g.bench_with_input(BenchmarkId::new("yaml", n), &yaml_text, |b, t| {
            b.iter(|| text_to_value(black_box(t)).expect("decode"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("config_validate");
    g.sample_size(10);
    for &n in sizes() {
        let v = cp_config(n);
        g.bench_with_input(BenchmarkId::new("cp_export", n), &v, |b, v| {
            b.iter_batched(
                || v.clone(),
                |v| parse_declarative_value(v, &opts).expect("valid"),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("config_validate");
    g.sample_size(10);
    for &n in sizes() {
        // What a push validates: the wire decoder's `ConfigTable`.
        let v = cp_config(n);
        let Value::Object(m) = v else {
            panic!("not an object")
        };
        let table = config_sync::table::ConfigTable::from_map(m);
        g.bench_with_input(BenchmarkId::new("cp_table", n), &table, |b, t| {
            b.iter_batched(
                || t.clone(),
                |t| parse_declarative_table(t, &opts).expect("valid"),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    // Inflate + parse of a push, without validation.
    let mut g = c.benchmark_group("config_decode_frame");
    g.sample_size(10);
    for &n in sizes() {
        let v = cp_config(n);
        let frame = reconfigure_frame(&v, &config_hash(&v));
        g.bench_with_input(BenchmarkId::new("cp_frame", n), &frame, |b, f| {
            b.iter(|| {
                config_sync::cluster::protocol::decode_frame(black_box(f), 256 << 20)
                    .expect("decode")
            })
        });
    }
    g.finish();

    // A start from the cache: read back the validated config (digest,
    // typed decode), compile and swap.
    let mut g = c.benchmark_group("config_cache_load");
    g.sample_size(10);
    for &n in sizes() {
        let v = cp_config(n);
        let cfg = parse_declarative_value(v.clone(), &opts).expect("valid");
        let frame = reconfigure_frame(&v, &config_hash(&v));
        let bytes = cache::encode("bench", "h", &frame, Some(&cfg));
        g.bench_with_input(BenchmarkId::new("cp_cache", n), &bytes, |b, bytes| {
            b.iter_batched(
                || {
                    (
                        bytes.clone(),
                        GatewaySink::new(ConfigHandle::default(), &plugins()),
                    )
                },
                |(bytes, sink)| {
                    match cache::decode(bytes, "bench") {
                        cache::Cached::Validated { hash, config, .. } => {
                            sink.apply_validated(*config, hash).expect("applies")
                        }
                        cache::Cached::Frame { why, .. } => panic!("not trusted: {why}"),
                    }
                    sink
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("config_compile");
    g.sample_size(10);
    for &n in sizes() {
        let cfg = parse_declarative_value(cp_config(n), &opts).expect("valid");
        g.bench_with_input(BenchmarkId::new("snapshot", n), &cfg, |b, cfg| {
            b.iter(|| Snapshot::compile(cfg, "h".into()).expect("compiles"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("config_apply");
    g.sample_size(10);
    let cases = sizes().iter().flat_map(|&n| {
        [
            ("cp_frame", n, cp_config(n)),
            ("cp_frame_prefix_only", n, simple_cp_config(n)),
        ]
    });
    for (name, n, v) in cases {
        let frame = reconfigure_frame(&v, &config_hash(&v));
        let status = ClusterStatus::default();
        g.bench_with_input(BenchmarkId::new(name, n), &frame, |b, frame| {
            b.iter_batched(
                || GatewaySink::new(ConfigHandle::default(), &plugins()),
                |sink| {
                    let out = process_frame(frame, &sink, &status, 256 << 20, None);
                    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
                    sink
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("config_load_text");
    g.sample_size(10);
    for &n in sizes() {
        let text = user_config(n).to_string();
        g.bench_with_input(BenchmarkId::new("json", n), &text, |b, t| {
            b.iter(|| {
                gateway::loader::compile_text(t, &plugins(), "bench", &Default::default())
                    .expect("loads")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("config_hash");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    let n = sizes().last().copied().unwrap_or(10_000);
    let v = cp_config(n);
    g.bench_with_input(BenchmarkId::new("kong", n), &v, |b, v| {
        b.iter(|| config_hash(black_box(v)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
