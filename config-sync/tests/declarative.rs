//! Declarative config parsing and validation, against fixtures and small
//! inline documents (one rule per test).
#![allow(clippy::unwrap_used)]

use config_sync::{
    config_hash, entity_uuid, parse_declarative_str, parse_declarative_value, ConfigError,
    ConfigErrors, DeclarativeConfig, ParseOptions,
};
use serde_json::json;

fn opts() -> ParseOptions {
    ParseOptions::with_plugins(["key-auth", "rate-limiting", "cors", "basic-auth", "acl"])
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn parse(text: &str) -> Result<DeclarativeConfig, ConfigErrors> {
    parse_declarative_str(text, &opts())
}

fn ok(text: &str) -> DeclarativeConfig {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.errors,
    }
}

/// Asserts one error matches entity, field and (a substring of) the reason.
fn assert_err(errs: &[ConfigError], entity: &str, field: &str, reason: &str) {
    assert!(
        errs.iter()
            .any(|e| e.entity == entity && e.field == field && e.reason.contains(reason)),
        "no error {entity}/{field}/{reason:?} in:\n{}",
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A string as a JSON (and so YAML) scalar, for PEM in inline documents.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Wraps YAML entity lists in a 3.0 document.
fn doc(body: &str) -> String {
    format!("_format_version: \"3.0\"\n{body}")
}

// ---------------------------------------------------------------------------
// fixtures

#[test]
fn nested_fixture_flattens_with_defaults_and_ids() {
    let cfg = ok(&fixture("nested.yaml"));
    assert_eq!(cfg.format_version, "3.0");
    assert!(cfg.transform);
    assert_eq!(cfg.services.len(), 3);
    assert_eq!(cfg.routes.len(), 5);
    assert_eq!(cfg.plugins.len(), 5);
    assert_eq!(cfg.consumers.len(), 2);
    assert_eq!(cfg.credentials.len(), 3);
    assert_eq!(cfg.upstreams.len(), 2);
    assert_eq!(cfg.targets.len(), 3);
    assert_eq!(cfg.certificates.len(), 1);
    assert_eq!(cfg.snis.len(), 2);
    assert_eq!(cfg.ca_certificates.len(), 1);

    // url shorthand and defaults
    let echo = cfg
        .services
        .iter()
        .find(|s| s.name.as_deref() == Some("echo"))
        .unwrap();
    assert_eq!(echo.id, entity_uuid("services", "echo"));
    assert_eq!(echo.protocol, "https");
    assert_eq!(echo.host, "echo.internal");
    assert_eq!(echo.port, 8443);
    assert_eq!(echo.path.as_deref(), Some("/api"));
    assert_eq!(echo.retries, 3);
    assert_eq!(echo.connect_timeout, 60000);
    assert!(echo.enabled);
    assert_eq!(echo.tags, vec!["team-a", "team b"]);
    let tcp = cfg
        .services
        .iter()
        .find(|s| s.name.as_deref() == Some("tcp-svc"))
        .unwrap();
    assert_eq!((tcp.protocol.as_str(), tcp.port), ("tcp", 5432));

    // nested route → service fk, header order kept, defaults
    let r = cfg
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("echo-route"))
        .unwrap();
    assert_eq!(r.id, entity_uuid("routes", "echo-route"));
    assert_eq!(r.service, Some(echo.id));
    assert_eq!(r.protocols, vec!["http", "https"]);
    assert!(!r.strip_path);
    assert!(r.request_buffering && r.response_buffering && !r.preserve_host);
    assert_eq!(r.https_redirect_status_code, 426);
    assert_eq!(r.path_handling, "v0");
    assert_eq!(
        r.headers[0],
        (
            "x-version".to_string(),
            vec!["1".to_string(), "2".to_string()]
        )
    );
    assert_eq!(r.headers[1].0, "x-team");
    assert_eq!(r.hosts.as_ref().unwrap().len(), 3);

    let grpc = cfg
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("grpc-route"))
        .unwrap();
    assert!(!grpc.strip_path, "grpc routes default to strip_path=false");

    let top = cfg
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("top-level-route"))
        .unwrap();
    assert_eq!(top.service, Some(echo.id));
    assert_eq!(top.https_redirect_status_code, 301);
    let serviceless = cfg
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("serviceless"))
        .unwrap();
    assert_eq!(serviceless.service, None);
    assert_eq!(serviceless.hosts, Some(vec![]));
    assert!(r.hosts.is_some());
    let stream = cfg
        .routes
        .iter()
        .find(|r| r.protocols == vec!["tcp"])
        .unwrap();
    assert_eq!(stream.destinations[0].ip.as_deref(), Some("10.0.0.0/8"));
    assert_eq!(stream.destinations[0].port, Some(5432));
    assert_eq!(
        cfg.routes
            .iter()
            .find(|r| r.name.is_none())
            .map(|r| r.id.get_version_num()),
        Some(4)
    );

    // plugins: nested ids follow Kong's cache key, references by name resolve
    let key_auth = cfg.plugins.iter().find(|p| p.name == "key-auth").unwrap();
    assert_eq!(key_auth.service, Some(echo.id));
    assert_eq!(key_auth.route, None);
    assert_eq!(
        key_auth.id,
        entity_uuid("plugins", &format!("plugins:*:key-auth::{}:", echo.id))
    );
    assert_eq!(key_auth.protocols, vec!["grpc", "grpcs", "http", "https"]);
    assert!(key_auth.enabled);
    assert_eq!(key_auth.config, json!({"key_names": ["apikey"]}));
    let cors = cfg.plugins.iter().find(|p| p.name == "cors").unwrap();
    assert_eq!(cors.route, Some(top.id));
    assert_eq!(cors.config, json!({}));
    let grpc_svc = cfg
        .services
        .iter()
        .find(|s| s.name.as_deref() == Some("grpc-svc"))
        .unwrap();
    assert!(cfg
        .plugins
        .iter()
        .any(|p| p.name == "rate-limiting" && p.service == Some(grpc_svc.id)));
    assert!(cfg
        .plugins
        .iter()
        .any(|p| p.name == "rate-limiting" && p.route == Some(r.id)));
    let alice = cfg
        .consumers
        .iter()
        .find(|c| c.username.as_deref() == Some("alice"))
        .unwrap();
    assert_eq!(alice.id, entity_uuid("consumers", "alice"));
    assert!(cfg.plugins.iter().any(|p| p.consumer == Some(alice.id)));
    assert!(cfg
        .consumers
        .iter()
        .any(|c| c.custom_id.as_deref() == Some("bob-only")));

    // credentials
    for c in &cfg.credentials {
        assert_eq!(c.consumer, alice.id);
    }
    let kinds: Vec<&str> = cfg.credentials.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["keyauth_credentials", "basicauth_credentials", "acls"]
    );
    let basic = &cfg.credentials[1];
    assert_eq!(
        basic.id,
        entity_uuid("basicauth_credentials", "basicauth_credentials:*:alice")
    );
    // Stored as Kong's on_write transformation leaves it (`_transform`
    // defaults to true): hex(sha1(password .. consumer_id)).
    assert_eq!(
        basic.fields["password"],
        config_sync::credentials::basicauth_hash(&alice.id.to_string(), "s3cret")
    );
    let acl = &cfg.credentials[2];
    assert_eq!(
        acl.id,
        entity_uuid("acls", &format!("acls:*:{}:admins", alice.id))
    );

    // upstreams, healthchecks, targets
    let up = cfg.upstream_by_name("backend.svc").unwrap();
    assert_eq!(up.slots, 10000);
    assert_eq!(up.hash_on, "none");
    assert_eq!(up.hash_on_cookie_path, "/");
    let hc = &up.healthchecks;
    assert_eq!(hc.threshold, 50.0);
    assert_eq!(hc.active.http_path, "/health");
    assert_eq!(hc.active.healthy.interval, 5.0);
    assert_eq!(hc.active.healthy.successes, 2);
    assert_eq!(hc.active.healthy.http_statuses, vec![200, 302]);
    assert_eq!(hc.active.unhealthy.http_failures, 3);
    assert_eq!(hc.active.concurrency, 10);
    assert_eq!(hc.passive, config_sync::PassiveHealthcheck::default());
    let hashed = cfg.upstream_by_name("hashed.svc").unwrap();
    assert_eq!(hashed.algorithm, "consistent-hashing");
    assert_eq!(hashed.hash_on_header.as_deref(), Some("x-user"));

    let targets: Vec<(&str, u32)> = cfg
        .targets
        .iter()
        .map(|t| (t.target.as_str(), t.weight))
        .collect();
    assert!(targets.contains(&("10.0.0.1:8080", 50)));
    assert!(targets.contains(&("backend-2.internal:8000", 100)));
    assert!(targets.contains(&("[0000:0000:0000:0000:0000:0000:0000:0001]:9000", 100)));
    let t = cfg
        .targets
        .iter()
        .find(|t| t.target == "10.0.0.1:8080")
        .unwrap();
    assert_eq!(t.upstream, up.id);
    assert_eq!(
        t.id,
        entity_uuid("targets", &format!("targets:*:{}:10.0.0.1:8080", up.id))
    );
    assert!(cfg.targets.iter().any(|t| t.upstream == hashed.id));

    // certificates and snis
    let cert = &cfg.certificates[0];
    assert!(cfg.snis.iter().all(|s| s.certificate == cert.id));
    let names: Vec<&str> = cfg.snis.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["example.com", "*.example.com"]);

    assert!(cfg.raw.is_object());
}

#[test]
fn nested_fixture_ids_are_stable_across_parses() {
    let a = ok(&fixture("nested.yaml"));
    let b = ok(&fixture("nested.yaml"));
    let ids = |c: &DeclarativeConfig| c.services.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    let pids = |c: &DeclarativeConfig| c.plugins.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(pids(&a), pids(&b));
}

#[test]
fn flat_control_plane_export_parses() {
    let text = fixture("flat.json");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cfg = parse_declarative_value(value.clone(), &opts()).unwrap();
    assert!(!cfg.transform);
    assert_eq!(cfg.services.len(), 1);
    let svc = &cfg.services[0];
    assert_eq!(svc.id.to_string(), "30ad7332-8b11-4d1e-9c1b-1a2b3c4d5e6f");
    assert_eq!(svc.tls_verify, None);
    assert!(svc.ca_certificates.is_empty());
    assert_eq!(cfg.routes[0].service, Some(svc.id));
    assert_eq!(cfg.routes[0].hosts, None);
    assert!(cfg.routes[0].methods.is_empty());
    assert_eq!(cfg.plugins[0].service, Some(svc.id));
    assert_eq!(cfg.plugins[0].config["hide_credentials"], false);
    assert_eq!(cfg.credentials[0].consumer, cfg.consumers[0].id);
    assert_eq!(cfg.credentials[0].fields["key"], "k1");
    assert_eq!(cfg.targets[0].upstream, cfg.upstreams[0].id);
    assert_eq!(cfg.targets[0].target, "10.0.0.1:80");
    assert_eq!(
        cfg.upstreams[0].healthchecks.passive.healthy.http_statuses,
        vec![200, 201]
    );
    // raw keeps the input for hashing
    assert_eq!(cfg.raw, value);
    assert_eq!(config_hash(&cfg.raw).len(), 32);

    // the same text through the string entry point (JSON fast path)
    let again = parse_declarative_str(&text, &opts()).unwrap();
    assert_eq!(again.routes[0].id, cfg.routes[0].id);
}

#[test]
fn three_errors_are_all_reported() {
    let errs = errors(&fixture("three_errors.yaml"));
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_err(
        &errs,
        "service",
        "port",
        "value should be between 0 and 65535",
    );
    assert_err(
        &errs,
        "route",
        "paths.1",
        "should start with: / (fixed path) or ~/ (regex path)",
    );
    assert_err(
        &errs,
        "upstream",
        "slots",
        "value should be between 10 and 65536",
    );
    let all = ConfigErrors { errors: errs }.to_string();
    assert_eq!(all.lines().count(), 3);
    assert!(all.contains(
        "in 'routes' entity 'bad-route': field 'paths.1': should start with: / (fixed path) or ~/ (regex path)"
    ));
}

// ---------------------------------------------------------------------------
// document level

#[test]
fn format_version_rules() {
    let errs = errors("services: []\n");
    assert_eq!(errs[0].field, "_format_version");
    assert_eq!(errs[0].reason, "required field missing");
    let errs = errors("_format_version: \"4.0\"\n");
    assert_eq!(errs[0].reason, "expected one of: 1.1, 2.1, 3.0");
    let errs = errors("_format_version: 3.0\n");
    assert_eq!(errs[0].reason, "expected a string");
    for v in ["1.1", "2.1", "3.0"] {
        ok(&format!("_format_version: \"{v}\"\n"));
    }
}

#[test]
fn metadata_keys_are_ignored_and_unknown_keys_rejected() {
    ok(r#"
_format_version: "3.0"
_transform: false
_workspace: default
_comment: hi
_info: { select_tags: [a] }
workspaces: [{ name: default }]
parameters: [{ key: cluster_id, value: x }]
"#);
    let errs = errors("_format_version: \"3.0\"\nservicez: []\n");
    assert_eq!(errs[0].field, "servicez");
    assert_eq!(errs[0].reason, "unknown field");
    let errs = errors("_format_version: \"3.0\"\n_transform: yes please\n");
    assert_eq!(errs[0].reason, "expected a boolean");
}

#[test]
fn parse_errors_are_reported() {
    let e = parse("{ \"_format_version\": ").unwrap_err();
    assert!(e.errors[0]
        .reason
        .starts_with("failed parsing declarative configuration"));
    let e = parse("services: [\n").unwrap_err();
    assert!(e.errors[0]
        .reason
        .starts_with("failed parsing declarative configuration"));
    let e = parse_declarative_value(json!([1, 2]), &opts()).unwrap_err();
    assert_eq!(e.errors[0].reason, "expected a record");
}

#[test]
fn unknown_entity_fields_are_rejected_but_export_columns_accepted() {
    let errs = errors(&doc(
        "services:\n  - name: s\n    host: h\n    colour: blue\n",
    ));
    assert_err(&errs, "service", "colour", "unknown field");
    ok(&doc(r#"
services:
  - name: s
    host: h
    created_at: 1
    updated_at: 2
    ws_id: 0dc6f45b-8f8d-40d2-a504-473544ee190b
    tls_sans: null
    routes:
      - name: r
        paths: [/]
        expression: null
        priority: 0
        created_at: 1
plugins:
  - name: cors
    instance_name: cors-1
    ordering: null
upstreams:
  - name: u
    client_certificate: null
"#));
}

#[test]
fn explicit_null_means_default() {
    let cfg = ok(&doc(r#"
services:
  - name: s
    host: h
    port: null
    retries: null
    protocol: null
    routes:
      - name: r
        paths: [/]
        strip_path: null
        protocols: null
        https_redirect_status_code: null
"#));
    assert_eq!(cfg.services[0].port, 80);
    assert_eq!(cfg.services[0].retries, 5);
    assert_eq!(cfg.services[0].protocol, "http");
    assert!(cfg.routes[0].strip_path);
    assert_eq!(cfg.routes[0].protocols, vec!["http", "https"]);
}

#[test]
fn non_record_entities_are_rejected() {
    let errs = errors(&doc("services:\n  - just-a-string\n"));
    assert_err(&errs, "service", "@entity", "expected a record");
    assert_eq!(errs[0].ident, "#1");
    let errs = errors(&doc("services: {}\n"));
    assert_eq!(errs[0].field, "services");
}

// ---------------------------------------------------------------------------
// services

#[test]
fn service_rules() {
    let errs = errors(&doc(r#"
services:
  - name: a
    host: h
    connect_timeout: 0
    read_timeout: 2147483647
    retries: 32768
    protocol: ftp
  - name: b
    host: "h:80"
    tls_verify: true
  - name: c
    protocol: grpc
    host: h
    path: /x
  - name: d
    host: h
    path: nope
  - name: e
    url: "http://"
  - name: f
    host: h
    port: "80"
  - name: "bad name"
    host: h
"#));
    assert_err(
        &errs,
        "service",
        "connect_timeout",
        "value should be between 1 and 2147483646",
    );
    assert_err(
        &errs,
        "service",
        "read_timeout",
        "value should be between 1 and 2147483646",
    );
    assert_err(
        &errs,
        "service",
        "retries",
        "value should be between 0 and 32767",
    );
    assert_err(
        &errs,
        "service",
        "protocol",
        "expected one of: grpc, grpcs, http, https",
    );
    assert_err(&errs, "service", "host", "must not have a port");
    assert_err(&errs, "service", "tls_verify", "value must be null");
    assert_err(&errs, "service", "path", "value must be null");
    assert_err(&errs, "service", "path", "should start with: /");
    assert_err(&errs, "service", "host", "required field missing");
    assert_err(&errs, "service", "port", "expected an integer");
    assert_err(&errs, "service", "name", "invalid value 'bad name'");
    let c = errs.iter().find(|e| e.ident == "c").unwrap();
    assert_eq!(c.field, "path");
}

#[test]
fn service_tls_fields_allowed_for_https() {
    // tls_verify is applied; the other upstream TLS fields are accepted as
    // null (or an empty list), as a control plane exports them.
    let cfg = ok(&doc(r#"
services:
  - name: s
    url: https://h
    tls_verify: true
    tls_verify_depth: null
    client_certificate: null
    ca_certificates: []
    tls_sans: null
"#));
    let s = &cfg.services[0];
    assert_eq!(
        (s.port, s.tls_verify, s.tls_verify_depth),
        (443, Some(true), None)
    );
    assert!(s.ca_certificates.is_empty() && s.client_certificate.is_none());
}

#[test]
fn upstream_tls_fields_are_loaded() {
    // Kong 3.10's upstream TLS (kong/runloop/upstream_ssl.lua): the
    // service's trust store, depth and client certificate, and the
    // upstream's client certificate (its fallback).
    let text = doc(&r#"
ca_certificates:
  - id: 5e2f9d34-0000-4000-8000-000000000001
    cert: {CA}
certificates:
  - id: 5e2f9d34-0000-4000-8000-000000000002
    cert: {CERT}
    key: {KEY}
services:
  - name: s
    url: https://h
    tls_verify: true
    tls_verify_depth: 3
    ca_certificates: [5e2f9d34-0000-4000-8000-000000000001]
    client_certificate: 5e2f9d34-0000-4000-8000-000000000002
upstreams:
  - name: u
    client_certificate: {id: 5e2f9d34-0000-4000-8000-000000000002}
"#
    .replace("{CA}", &json_str(&fixture("certs/ca.crt")))
    .replace("{CERT}", &json_str(&fixture("certs/example.com.crt")))
    .replace("{KEY}", &json_str(&fixture("certs/example.com.key"))));
    let cfg = ok(&text);
    let id = |n: u8| format!("5e2f9d34-0000-4000-8000-00000000000{n}");
    let s = &cfg.services[0];
    assert_eq!((s.tls_verify, s.tls_verify_depth), (Some(true), Some(3)));
    assert_eq!(
        s.ca_certificates
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>(),
        vec![id(1)]
    );
    assert_eq!(s.client_certificate.map(|u| u.to_string()), Some(id(2)));
    assert_eq!(
        cfg.upstreams[0].client_certificate.map(|u| u.to_string()),
        Some(id(2))
    );
    // The transformation Kong runs on write: the SHA-256 of the DER.
    let digest = cfg.ca_certificates[0].cert_digest.clone().unwrap();
    assert_eq!(digest.len(), 64, "{digest}");
    assert!(digest
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[test]
fn upstream_tls_references_must_exist() {
    let errs = errors(&doc(r#"
services:
  - name: s
    url: https://h
    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000aa]
    client_certificate: 5e2f9d34-0000-4000-8000-0000000000bb
upstreams:
  - name: u
    client_certificate: 5e2f9d34-0000-4000-8000-0000000000bb
"#));
    let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        got.contains(&"in 'services' entity 's': field 'ca_certificates': CA Certificate '5e2f9d34-0000-4000-8000-0000000000aa' does not exist".to_string()),
        "{got:#?}"
    );
    assert_err(
        &errs,
        "service",
        "client_certificate",
        "invalid reference 'client_certificate: 5e2f9d34-0000-4000-8000-0000000000bb' (no such entry in 'certificates')",
    );
    assert_err(
        &errs,
        "upstream",
        "client_certificate",
        "no such entry in 'certificates'",
    );
}

#[test]
fn ca_certificate_digests_are_unique_as_given() {
    let ca = json_str(&fixture("certs/ca.crt"));
    let errs = errors(&doc(&format!(
        "ca_certificates:\n  - cert: {ca}\n    cert_digest: abc\n  - cert: {ca}\n    cert_digest: abc\n"
    )));
    assert_err(
        &errs,
        "ca_certificate",
        "cert_digest",
        "uniqueness violation: 'ca_certificates' entity with cert_digest set to 'abc' already declared",
    );
    // Already transformed (a control plane's export): kept as given.
    let cfg = ok(&format!(
        "_format_version: '3.0'\n_transform: false\nca_certificates:\n  - cert: {ca}\n    cert_digest: abc\n"
    ));
    assert_eq!(cfg.ca_certificates[0].cert_digest.as_deref(), Some("abc"));
}

#[test]
fn unsupported_upstream_tls_fields_are_refused() {
    // Kong Enterprise's extra names and SRV lookups are not done: refused,
    // each named with its entity, not loaded and ignored.
    let errs = errors(&doc(r#"
services:
  - name: s
    url: https://h
    tls_sans: {dnsnames: [a.test]}
upstreams:
  - name: u
    use_srv_name: true
"#));
    let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{got:#?}");
    assert_err(&errs, "service", "tls_sans", "not supported yet");
    assert_err(&errs, "upstream", "use_srv_name", "never SRV");
}

#[test]
fn enterprise_and_expressions_fields_are_refused_when_set() {
    let errs = errors(&doc(r#"
routes:
  - name: r
    paths: [/]
    expression: 'http.path == "/"'
plugins:
  - name: cors
    ordering: {before: {access: [x]}}
    consumer_group: {id: 5e2f9d34-0000-4000-8000-000000000003}
"#));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_err(&errs, "route", "expression", "expressions router");
    assert_err(&errs, "plugin", "ordering", "not supported yet");
    assert_err(&errs, "plugin", "consumer_group", "consumer groups");
    // As a control plane exports them: null, accepted.
    ok(&doc(r#"
routes:
  - name: r
    paths: [/]
    expression: null
plugins:
  - name: cors
    ordering: null
    consumer_group: null
"#));
}

// ---------------------------------------------------------------------------
// routes

fn route_errors(route_yaml: &str) -> Vec<ConfigError> {
    errors(&doc(&format!("routes:\n  - name: r\n{route_yaml}")))
}

#[test]
fn route_path_rules() {
    let errs = route_errors(
        "    paths: [\"/ok\", \"nope\", \"/a//b\", \"/a/../b\", \"~/(unclosed\", \"/bad%zz\"]\n",
    );
    assert_err(
        &errs,
        "route",
        "paths.2",
        "should start with: / (fixed path) or ~/ (regex path)",
    );
    assert_err(&errs, "route", "paths.3", "must not have empty segments");
    assert_err(
        &errs,
        "route",
        "paths.4",
        "non-normalized path, consider use '/b' instead",
    );
    assert_err(&errs, "route", "paths.5", "invalid regex: '/(unclosed'");
    assert_err(
        &errs,
        "route",
        "paths.6",
        "invalid url-encoded value: '%zz'",
    );
    assert_eq!(errs.len(), 5);
    let cfg = ok(&doc(
        "routes:\n  - paths: [\"~/users/(?<id>\\\\d+)$\", \"/x\"]\n",
    ));
    assert_eq!(cfg.routes[0].paths[0], "~/users/(?<id>\\d+)$");
}

#[test]
fn route_host_rules() {
    let errs = route_errors("    hosts: [\"*.a.com\", \"a.*\", \"a.*.com\", \"*.*.com\", \"bad host\", \"a.com:99999\"]\n");
    assert_err(
        &errs,
        "route",
        "hosts.3",
        "must be placed at leftmost or rightmost label",
    );
    assert_err(&errs, "route", "hosts.4", "must have at most one wildcard");
    assert_err(&errs, "route", "hosts.5", "invalid hostname");
    assert_err(&errs, "route", "hosts.6", "invalid port number");
    assert_eq!(errs.len(), 4);
}

/// Wildcard hosts with a port, as Kong's router spec uses them
/// (`*.route.net:123`, `route.*:80`); kept verbatim for the router.
#[test]
fn route_wildcard_hosts_with_port() {
    let cfg = ok(&doc(
        "routes:\n  - hosts: [\"*.example.com:8123\", \"example.*:80\", \"route.*:123\"]\n",
    ));
    assert_eq!(
        cfg.routes[0].hosts.as_deref(),
        Some(
            &[
                "*.example.com:8123".to_string(),
                "example.*:80".into(),
                "route.*:123".into()
            ][..]
        )
    );
    let errs = route_errors(
        "    hosts: [\"example.*:99999\", \"a.*.com:80\", \"*.a.*:80\", \"example.*:x\"]\n",
    );
    assert_err(&errs, "route", "hosts.1", "invalid port number");
    assert_err(
        &errs,
        "route",
        "hosts.2",
        "invalid wildcard: must be placed at leftmost or rightmost label",
    );
    assert_err(
        &errs,
        "route",
        "hosts.3",
        "invalid wildcard: must have at most one wildcard",
    );
    assert_err(
        &errs,
        "route",
        "hosts.4",
        "invalid wildcard: must be placed at leftmost or rightmost label",
    );
    assert_eq!(errs.len(), 4);
}

#[test]
fn route_header_method_and_sni_rules() {
    let errs = route_errors("    headers: { Host: [a], \"x y\": [b], x-ok: [c] }\n    methods: [GET, post]\n    protocols: [http]\n    snis: [a.com]\n");
    assert_err(&errs, "route", "headers", "cannot contain 'host' header");
    assert_err(&errs, "route", "headers", "bad header name 'x y'");
    assert_err(&errs, "route", "methods.2", "invalid value: post");
    assert_err(
        &errs,
        "route",
        "snis",
        "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
    );
}

#[test]
fn route_needs_a_matching_field() {
    let errs = route_errors("    protocols: [http]\n");
    assert_err(
        &errs,
        "route",
        "@entity",
        "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'",
    );
    let errs = route_errors("    hosts: []\n");
    assert_err(&errs, "route", "@entity", "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'");
    // snis alone suffice for an https route
    ok(&doc("routes:\n  - protocols: [https]\n    snis: [a.com]\n"));
}

#[test]
fn route_protocol_rules() {
    let errs = route_errors("    protocols: [http, grpc]\n    paths: [/]\n");
    assert_err(
        &errs,
        "route",
        "protocols",
        "these sets are mutually exclusive: ('http', 'https'), ('grpc', 'grpcs')",
    );
    let errs = route_errors("    protocols: [gopher]\n    paths: [/]\n");
    assert_err(&errs, "route", "protocols.1", "expected one of:");
    let errs = route_errors("    protocols: []\n    paths: [/]\n");
    assert_err(&errs, "route", "protocols", "length must be at least 1");
    let errs = route_errors(
        "    protocols: [grpc]\n    paths: [/]\n    strip_path: true\n    methods: [GET]\n",
    );
    assert_err(
        &errs,
        "route",
        "strip_path",
        "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
    );
    assert_err(
        &errs,
        "route",
        "methods",
        "cannot set 'methods' when 'protocols' is 'grpc' or 'grpcs'",
    );
    let errs = route_errors("    paths: [/]\n    sources: [{ ip: 10.0.0.1 }]\n");
    assert_err(
        &errs,
        "route",
        "sources",
        "cannot set 'sources' when 'protocols' is 'http' or 'https'",
    );
    let errs = route_errors("    protocols: [tcp]\n    paths: [/]\n");
    assert_err(
        &errs,
        "route",
        "paths",
        "cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'",
    );
    assert_err(
        &errs,
        "route",
        "@entity",
        "must set one of 'sources', 'destinations', 'snis'",
    );
    let errs = route_errors("    protocols: [tls_passthrough]\n");
    assert_err(
        &errs,
        "route",
        "@entity",
        "must set snis when 'protocols' is 'tls_passthrough'",
    );
    let errs =
        route_errors("    protocols: [tcp]\n    sources: [{ ip: nope }, {}, { port: 70000 }]\n");
    assert_err(
        &errs,
        "route",
        "sources.1.ip",
        "invalid ip or cidr range: 'nope'",
    );
    assert_err(
        &errs,
        "route",
        "sources.2",
        "at least one of these fields must be non-empty: 'ip', 'port'",
    );
    assert_err(
        &errs,
        "route",
        "sources.3.port",
        "value should be between 0 and 65535",
    );
}

#[test]
fn route_scalar_rules() {
    let errs = route_errors("    paths: [/]\n    https_redirect_status_code: 300\n    regex_priority: high\n    path_handling: v2\n    strip_path: \"yes\"\n");
    assert_err(
        &errs,
        "route",
        "https_redirect_status_code",
        "expected one of: 426, 301, 302, 307, 308",
    );
    assert_err(&errs, "route", "regex_priority", "expected an integer");
    assert_err(&errs, "route", "path_handling", "expected one of: v0, v1");
    assert_err(&errs, "route", "strip_path", "expected a boolean");
    let cfg = ok(&doc("routes:\n  - paths: [/]\n    regex_priority: -5\n    path_handling: v1\n    https_redirect_status_code: 308\n"));
    assert_eq!(cfg.routes[0].regex_priority, -5);
    assert_eq!(cfg.routes[0].path_handling, "v1");
    assert_eq!(cfg.routes[0].https_redirect_status_code, 308);
}

// ---------------------------------------------------------------------------
// references, uniqueness

#[test]
fn dangling_references_are_reported_like_kong() {
    let errs = errors(&doc(r#"
routes:
  - name: r
    service: missing
    paths: [/]
plugins:
  - name: cors
    route: { id: 769bdf51-16df-5476-9830-ef26800b5448 }
targets:
  - upstream: nowhere
    target: a.b
"#));
    assert_err(
        &errs,
        "route",
        "service",
        "invalid reference 'service: missing' (no such entry in 'services')",
    );
    assert_err(
        &errs,
        "plugin",
        "route",
        "invalid reference 'route: {\"id\":\"769bdf51-16df-5476-9830-ef26800b5448\"}' (no such entry in 'routes')",
    );
    assert_err(
        &errs,
        "target",
        "upstream",
        "invalid reference 'upstream: nowhere'",
    );
    let r = errs.iter().find(|e| e.entity == "route").unwrap();
    assert_eq!(
        r.to_string(),
        "in 'routes' entity 'r': field 'service': invalid reference 'service: missing' (no such entry in 'services')"
    );
}

#[test]
fn references_by_id_string_and_object() {
    let cfg = ok(&doc(r#"
services:
  - id: 0855b320-0dd2-547d-891d-601e9b38647f
    host: h
routes:
  - service: 0855b320-0dd2-547d-891d-601e9b38647f
    paths: [/a]
  - service: { id: 0855b320-0dd2-547d-891d-601e9b38647f }
    paths: [/b]
"#));
    assert!(cfg
        .routes
        .iter()
        .all(|r| r.service == Some(cfg.services[0].id)));
}

#[test]
fn duplicates_are_rejected() {
    let errs = errors(&doc(r#"
services:
  - name: s
    host: h
  - name: s
    host: h2
  - id: 0855b320-0dd2-547d-891d-601e9b38647f
    host: h
  - id: 0855b320-0dd2-547d-891d-601e9b38647f
    host: h
consumers:
  - username: u
  - username: u
  - custom_id: c
  - custom_id: c
"#));
    assert_err(
        &errs,
        "service",
        "name",
        "uniqueness violation: 'services' entity with name set to 's' already declared",
    );
    assert_err(&errs, "service", "id", "uniqueness violation: 'services' entity with primary key set to '0855b320-0dd2-547d-891d-601e9b38647f' already declared");
    assert_err(
        &errs,
        "consumer",
        "username",
        "uniqueness violation: 'consumers' entity with username set to 'u'",
    );
    assert_err(&errs, "consumer", "custom_id", "with custom_id set to 'c'");
    assert_eq!(errs.len(), 4);
}

#[test]
fn invalid_ids_are_rejected() {
    let errs = errors(&doc(
        "services:\n  - id: not-a-uuid\n    host: h\n  - id: 5\n    host: h\n",
    ));
    assert_err(&errs, "service", "id", "expected a valid UUID");
    assert_err(&errs, "service", "id", "expected a string");
}

// ---------------------------------------------------------------------------
// upstreams and targets

#[test]
fn upstream_rules() {
    let errs = errors(&doc(r#"
upstreams:
  - name: 10.0.0.1
  - name: "a:80"
  - name: ok.svc
    algorithm: fastest
    slots: 70000
    hash_on: header
  - name: c.svc
    hash_on: cookie
    hash_fallback: ip
  - name: d.svc
    healthchecks:
      active:
        type: smtp
        concurrency: 0
        timeout: -1
        http_path: nope
        healthy: { http_statuses: [99, 200], successes: 300 }
      passive:
        unhealthy: { tcp_failures: 1.5 }
      threshold: 101
      extra: 1
"#));
    assert_err(
        &errs,
        "upstream",
        "name",
        "Invalid name ('10.0.0.1'); no ip addresses allowed",
    );
    assert_err(
        &errs,
        "upstream",
        "name",
        "Invalid name ('a:80'); no port allowed",
    );
    assert_err(
        &errs,
        "upstream",
        "slots",
        "value should be between 10 and 65536",
    );
    assert_err(
        &errs,
        "upstream",
        "hash_on_header",
        "required field missing",
    );
    assert_err(
        &errs,
        "upstream",
        "hash_on_cookie",
        "required field missing",
    );
    assert_err(
        &errs,
        "upstream",
        "hash_fallback",
        "failed conditional validation given value of field 'hash_on'",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.active.type",
        "expected one of: tcp, http, https, grpc, grpcs",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.active.concurrency",
        "value should be between 1 and 2147483648",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.active.timeout",
        "value should be between 0 and 65535",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.active.http_path",
        "should start with: /",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.active.healthy.http_statuses.1",
        "value should be between 100 and 999",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.active.healthy.successes",
        "value should be between 0 and 255",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.passive.unhealthy.tcp_failures",
        "expected an integer",
    );
    assert_err(
        &errs,
        "upstream",
        "healthchecks.threshold",
        "value should be between 0 and 100",
    );
    assert_err(&errs, "upstream", "healthchecks.extra", "unknown field");
    // algorithm is checked after the hash_on shorthand switched it
    assert!(!errs
        .iter()
        .any(|e| e.field == "algorithm" && e.ident == "ok.svc"));
}

#[test]
fn upstream_algorithm_shorthands() {
    let cfg = ok(&doc(r#"
upstreams:
  - name: a.svc
    algorithm: least-connections
    hash_on: ip
  - name: b.svc
    algorithm: consistent-hashing
    hash_on: none
  - name: c.svc
    hash_on: ip
    hash_fallback: header
    hash_fallback_header: x-id
"#));
    let a = cfg.upstream_by_name("a.svc").unwrap();
    assert_eq!(
        (a.algorithm.as_str(), a.hash_on.as_str()),
        ("least-connections", "none")
    );
    let b = cfg.upstream_by_name("b.svc").unwrap();
    assert_eq!(b.algorithm, "round-robin");
    let c = cfg.upstream_by_name("c.svc").unwrap();
    assert_eq!(c.algorithm, "consistent-hashing");
}

#[test]
fn target_rules() {
    let errs = errors(&doc(r#"
upstreams:
  - name: u.svc
    targets:
      - target: "bad host"
      - target: a.svc
        weight: 70000
      - target: b.svc
      - target: b.svc:8000
      - weight: 5
"#));
    assert_err(
        &errs,
        "target",
        "target",
        "Invalid target ('bad host'); not a valid hostname or ip address",
    );
    assert_err(
        &errs,
        "target",
        "weight",
        "value should be between 0 and 65535",
    );
    assert_err(
        &errs,
        "target",
        "target",
        "uniqueness violation: 'targets' entity with target set to 'b.svc:8000'",
    );
    assert_err(&errs, "target", "target", "required field missing");
    assert_eq!(errs.len(), 4);
    // the same address under different upstreams is fine
    ok(&doc("upstreams:\n  - name: a.svc\n    targets: [{ target: x.svc }]\n  - name: b.svc\n    targets: [{ target: x.svc }]\n"));
}

// ---------------------------------------------------------------------------
// plugins, consumers, credentials, certificates

#[test]
fn plugin_must_be_available() {
    let errs = errors(&doc("plugins:\n  - name: jwt-magic\n"));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "name");
    assert_eq!(
        errs[0].reason,
        "plugin 'jwt-magic' not enabled; add it to the 'plugins' configuration property"
    );
}

#[test]
fn plugin_rules() {
    let errs = errors(&doc(r#"
services:
  - name: s
    host: h
    plugins:
      - name: cors
      - name: cors
        instance_name: second
plugins:
  - name: cors
    service: s
  - name: key-auth
    config: [1]
    protocols: [http, carrier-pigeon]
    enabled: maybe
  - config: {}
"#));
    // Two nested plugins of one name derive the same id (Kong's cache key).
    assert_err(
        &errs,
        "plugin",
        "id",
        "uniqueness violation: 'plugins' entity with primary key set to",
    );
    // A top-level one referencing the service by name derives another id,
    // so the (name, route, service, consumer) check catches it.
    assert_err(
        &errs,
        "plugin",
        "name",
        "uniqueness violation: 'plugins' entity with name set to 'cors'",
    );
    assert_err(&errs, "plugin", "config", "expected a record");
    assert_err(&errs, "plugin", "protocols.2", "expected one of:");
    assert_err(&errs, "plugin", "enabled", "expected a boolean");
    assert_err(&errs, "plugin", "name", "required field missing");
    // same plugin on different scopes is fine
    ok(&doc(r#"
services:
  - name: s
    host: h
    plugins: [{ name: cors }]
    routes:
      - name: r
        paths: [/]
        plugins: [{ name: cors }]
plugins:
  - name: cors
"#));
}

#[test]
fn consumer_and_credential_rules() {
    let errs = errors(&doc(r#"
consumers:
  - tags: [x]
  - username: alice
    basicauth_credentials:
      - username: alice
    acls:
      - {}
    jwt_secrets:
      - algorithm: RS256
    keyauth_credentials:
      - key: k
        secret: nope
keyauth_credentials:
  - key: k2
"#));
    assert_err(
        &errs,
        "consumer",
        "@entity",
        "at least one of these fields must be non-empty: 'custom_id', 'username'",
    );
    assert_err(
        &errs,
        "basicauth_credential",
        "password",
        "required field missing",
    );
    assert_err(&errs, "acl", "group", "required field missing");
    assert_err(
        &errs,
        "jwt_secret",
        "rsa_public_key",
        "required field missing",
    );
    assert_err(&errs, "keyauth_credential", "secret", "unknown field");
    assert_err(
        &errs,
        "keyauth_credential",
        "consumer",
        "required field missing",
    );
}

#[test]
fn top_level_credentials_reference_consumers() {
    let cfg = ok(&doc(r#"
consumers:
  - username: alice
keyauth_credentials:
  - consumer: alice
  - consumer: { username: alice }
    key: given
jwt_secrets:
  - consumer: alice
"#));
    assert_eq!(cfg.credentials.len(), 3);
    assert!(cfg
        .credentials
        .iter()
        .all(|c| c.consumer == cfg.consumers[0].id));
    // auto fields are generated when missing
    assert_eq!(cfg.credentials[0].fields["key"].as_str().unwrap().len(), 32);
    assert_eq!(cfg.credentials[1].fields["key"], "given");
    assert_eq!(cfg.credentials[2].fields["algorithm"], "HS256");
}

#[test]
fn certificate_rules() {
    let errs = errors(&doc(&r#"
certificates:
  - cert: not a pem
    key: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----"
    cert_alt: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"
    snis: ["a..b", "10.0.0.1", "*.ok.com", "a.*.com"]
  - key: "-----BEGIN PRIVATE KEY-----"
snis:
  - name: orphan.com
ca_certificates:
  - cert: {TWO_CAS}
  - cert: nope
"#
    .replace(
        "{TWO_CAS}",
        &json_str(&format!(
            "{}{}",
            fixture("certs/ca.crt"),
            fixture("certs/ca.crt")
        )),
    )));
    assert_err(&errs, "certificate", "cert", "invalid certificate");
    assert_err(
        &errs,
        "certificate",
        "@entity",
        "all or none of these fields must be set: 'cert_alt', 'key_alt'",
    );
    assert_err(&errs, "certificate", "cert", "required field missing");
    assert_err(&errs, "sni", "name", "invalid value: a..b");
    assert_err(&errs, "sni", "name", "must not be an IP");
    assert_err(
        &errs,
        "sni",
        "name",
        "wildcard must be leftmost or rightmost character",
    );
    assert_err(&errs, "sni", "certificate", "required field missing");
    assert_err(
        &errs,
        "ca_certificate",
        "@entity",
        "please submit only one certificate at a time",
    );
    assert_err(&errs, "ca_certificate", "cert", "invalid certificate");
}

/// A self-signed certificate and its key (PEM), generated with rcgen.
fn gen_cert(
    alg: &'static rcgen::SignatureAlgorithm,
    ca: bool,
    not_after_year: i32,
) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn cert_doc(entries: &[(&str, &str)]) -> String {
    let mut out = String::from("certificates:\n  - snis: [a.com]\n");
    for (k, v) in entries {
        out.push_str(&format!("    {k}: {}\n", json_str(v)));
    }
    doc(&out)
}

#[test]
fn certificates_are_parsed_and_must_match_their_key() {
    let (ec_cert, ec_key) = gen_cert(&rcgen::PKCS_ECDSA_P256_SHA256, false, 2090);
    let (ed_cert, ed_key) = gen_cert(&rcgen::PKCS_ED25519, false, 2090);
    let (other_cert, other_key) = gen_cert(&rcgen::PKCS_ECDSA_P384_SHA384, false, 2090);

    // Real pairs, with an alternative of another key type.
    let cfg = ok(&cert_doc(&[
        ("cert", &ec_cert),
        ("key", &ec_key),
        ("cert_alt", &ed_cert),
        ("key_alt", &ed_key),
    ]));
    assert_eq!(cfg.certificates.len(), 1);
    ok(&doc(&format!(
        "certificates:\n  - cert: {}\n    key: {}\n",
        json_str(&fixture("certs/example.com.crt")),
        json_str(&fixture("certs/example.com.key"))
    )));

    // Kong's messages (kong/db/schema/entities/certificates.lua).
    let errs = errors(&cert_doc(&[("cert", &ec_cert), ("key", &other_key)]));
    assert_err(
        &errs,
        "certificate",
        "@entity",
        "certificate does not match key",
    );
    let errs = errors(&cert_doc(&[
        ("cert", &ec_cert),
        ("key", &ec_key),
        ("cert_alt", &ed_cert),
        ("key_alt", &other_key),
    ]));
    assert_err(
        &errs,
        "certificate",
        "@entity",
        "alternative certificate does not match key",
    );
    let errs = errors(&cert_doc(&[
        ("cert", &ec_cert),
        ("key", &ec_key),
        ("cert_alt", &other_cert),
        ("key_alt", &other_key),
    ]));
    assert_err(
        &errs,
        "certificate",
        "@entity",
        "certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type",
    );

    // Well-formed PEM around garbage: refused by the parsers, not by a
    // look at the markers.
    let garbage_cert =
        "-----BEGIN CERTIFICATE-----\nTUlJQmZha2VjZXJ0aWZpY2F0ZQ==\n-----END CERTIFICATE-----\n";
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1ub3QtdG8tYmUtZWNob2Vk";
    let garbage_key = format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n");
    let errs = errors(&cert_doc(&[("cert", garbage_cert), ("key", &garbage_key)]));
    assert_err(&errs, "certificate", "cert", "invalid certificate: ");
    assert_err(&errs, "certificate", "key", "invalid key: ");
    // No match check on fields that failed their own validation.
    assert!(!errs.iter().any(|e| e.reason.contains("does not match")));
    for e in &errs {
        assert!(!e.reason.contains(secret), "key echoed: {e}");
    }
    // A certificate where the key goes, a key where the certificate goes.
    let errs = errors(&cert_doc(&[("cert", &ec_key), ("key", &ec_cert)]));
    assert_err(&errs, "certificate", "cert", "invalid certificate: ");
    assert_err(&errs, "certificate", "key", "invalid key: ");

    // Vault references are resolved later: not parsed here.
    ok(&cert_doc(&[
        ("cert", "{vault://env/cert}"),
        ("key", "{vault://env/key}"),
    ]));
}

#[test]
fn ca_certificates_must_be_valid_unexpired_cas() {
    ok(&doc(&format!(
        "ca_certificates:\n  - cert: {}\n",
        json_str(&fixture("certs/ca.crt"))
    )));
    let (ca, _) = gen_cert(&rcgen::PKCS_ECDSA_P256_SHA256, true, 2090);
    ok(&doc(&format!(
        "ca_certificates:\n  - cert: {}\n",
        json_str(&ca)
    )));

    // Kong's messages (kong/db/schema/entities/ca_certificates.lua).
    let (expired, _) = gen_cert(&rcgen::PKCS_ECDSA_P256_SHA256, true, 2001);
    let errs = errors(&doc(&format!(
        "ca_certificates:\n  - cert: {}\n",
        json_str(&expired)
    )));
    assert_err(
        &errs,
        "ca_certificate",
        "@entity",
        "certificate expired, \"Not After\" time is in the past",
    );
    let errs = errors(&doc(&format!(
        "ca_certificates:\n  - cert: {}\n",
        json_str(&fixture("certs/example.com.crt"))
    )));
    assert_err(
        &errs,
        "ca_certificate",
        "@entity",
        "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint",
    );
    let errs = errors(&doc(
        "ca_certificates:\n  - cert: \"-----BEGIN CERTIFICATE-----\\nTUlJQmZha2U=\\n-----END CERTIFICATE-----\"\n",
    ));
    assert_err(&errs, "ca_certificate", "cert", "invalid certificate: ");
}

#[test]
fn sni_names_are_unique_and_reference_certificates() {
    let errs = errors(&doc(r#"
certificates:
  - id: 2b1f0000-0000-4000-8000-000000000001
    cert: "-----BEGIN CERTIFICATE-----"
    key: "-----BEGIN PRIVATE KEY-----"
    snis: [a.com]
snis:
  - name: a.com
    certificate: 2b1f0000-0000-4000-8000-000000000001
"#));
    assert_err(
        &errs,
        "sni",
        "name",
        "uniqueness violation: 'snis' entity with name set to 'a.com'",
    );
}

// ---------------------------------------------------------------------------
// error identification

#[test]
fn nested_unnamed_entities_are_identified_by_position() {
    let errs = errors(&doc(r#"
services:
  - name: svc
    host: h
    routes:
      - paths: [/ok]
      - paths: [bad]
"#));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].ident, "svc.routes#2");
    assert_eq!(errs[0].field, "paths.1");
}

#[test]
fn tags_are_validated() {
    let errs = errors(&doc(
        "services:\n  - name: s\n    host: h\n    tags: [ok, \"a,b\", 5]\n",
    ));
    assert_err(&errs, "service", "tags.2", "invalid tag 'a,b'");
    assert_err(&errs, "service", "tags.3", "expected a string");
}

#[test]
fn json_text_with_flow_yaml_fallback() {
    // '{' starts a JSON document, but flow-style YAML must still work.
    let cfg = ok("{_format_version: \"3.0\", services: [{name: s, host: h}]}");
    assert_eq!(cfg.services[0].host, "h");
}

#[test]
fn empty_config_is_valid() {
    let cfg = ok("_format_version: \"3.0\"\n");
    assert!(cfg.is_empty());
}

// ---------------------------------------------------------------------------
// consumers and the auth plugins' credentials (Kong's DAO schemas)

const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
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
fn basicauth_passwords_are_hashed_unless_transform_is_false() {
    let body = r#"
consumers:
  - username: bob
    id: 5e2f9d34-0000-4000-8000-00000000000b
    basicauth_credentials:
      - username: bob
        password: kong
"#;
    let cfg = ok(&doc(body));
    let hashed =
        config_sync::credentials::basicauth_hash("5e2f9d34-0000-4000-8000-00000000000b", "kong");
    assert_eq!(cfg.credentials[0].fields["password"], hashed.as_str());
    assert!(cfg.transform);
    // A control plane's export: already hashed, stored as given.
    let cfg = ok(&format!(
        "_format_version: \"3.0\"\n_transform: false\n{}",
        body.replace("password: kong", &format!("password: {hashed}"))
    ));
    assert!(!cfg.transform);
    assert_eq!(cfg.credentials[0].fields["password"], hashed.as_str());
    // The flat form hashes with the referenced consumer's id too.
    let cfg = ok(&doc(r#"
consumers:
  - username: bob
    id: 5e2f9d34-0000-4000-8000-00000000000b
basicauth_credentials:
  - consumer: bob
    username: bob
    password: kong
"#));
    assert_eq!(cfg.credentials[0].fields["password"], hashed.as_str());
}

#[test]
fn keyauth_ttl_is_an_epoch_and_keys_are_unique() {
    let cfg = ok(&doc(r#"
consumers:
  - username: bob
    keyauth_credentials:
      - key: k1
        ttl: 1900000000
"#));
    assert_eq!(cfg.credentials[0].fields["ttl"], 1900000000);
    let errs = errors(&doc(r#"
consumers:
  - username: bob
    keyauth_credentials:
      - key: k1
        ttl: soon
  - username: alice
    keyauth_credentials:
      - key: k1
"#));
    assert_err(&errs, "keyauth_credential", "ttl", "expected a number");
    assert_err(
        &errs,
        "keyauth_credential",
        "key",
        "uniqueness violation: 'keyauth_credentials' entity with key set to 'k1' already declared",
    );
}

#[test]
fn credential_uniqueness_follows_kong() {
    let errs = errors(&doc(r#"
consumers:
  - username: bob
    custom_id: c1
    basicauth_credentials:
      - username: shared
        password: a
    jwt_secrets:
      - key: j1
    acls:
      - group: admins
      - group: admins
  - username: bob
    custom_id: c1
    basicauth_credentials:
      - username: shared
        password: b
    jwt_secrets:
      - key: j1
"#));
    assert_err(
        &errs,
        "consumer",
        "username",
        "uniqueness violation: 'consumers' entity with username set to 'bob' already declared",
    );
    assert_err(
        &errs,
        "consumer",
        "custom_id",
        "uniqueness violation: 'consumers' entity with custom_id set to 'c1' already declared",
    );
    assert_err(
        &errs,
        "basicauth_credential",
        "username",
        "uniqueness violation: 'basicauth_credentials' entity with username set to 'shared' already declared",
    );
    assert_err(
        &errs,
        "jwt_secret",
        "key",
        "uniqueness violation: 'jwt_secrets' entity with key set to 'j1' already declared",
    );
    // Same consumer and group: the same cache-key id.
    assert_err(
        &errs,
        "acl",
        "id",
        "uniqueness violation: 'acls' entity with primary key set to",
    );
}

#[test]
fn credentials_reference_consumers_by_id_or_username() {
    let errs = errors(&doc(r#"
consumers:
  - username: bob
keyauth_credentials:
  - consumer: nobody
    key: k
"#));
    assert_err(
        &errs,
        "keyauth_credential",
        "consumer",
        "invalid reference 'consumer: nobody' (no such entry in 'consumers')",
    );
    let cfg = ok(&doc(r#"
consumers:
  - id: 5e2f9d34-0000-4000-8000-00000000000c
    custom_id: only-custom
acls:
  - consumer: 5e2f9d34-0000-4000-8000-00000000000c
    group: g
"#));
    assert_eq!(
        cfg.credentials[0].consumer.to_string(),
        "5e2f9d34-0000-4000-8000-00000000000c"
    );
}

#[test]
fn jwt_secret_rules() {
    let cfg = ok(&doc(&format!(
        r#"
consumers:
  - username: bob
    jwt_secrets:
      - key: hs
      - key: rs
        algorithm: RS256
        rsa_public_key: {}
      - key: es
        algorithm: ES256
"#,
        json_str(RSA_PUBLIC_KEY)
    )));
    assert_eq!(cfg.credentials[0].fields["algorithm"], "HS256");
    // Generated secret.
    assert!(!cfg.credentials[0].fields["secret"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(cfg.credentials[1].fields["algorithm"], "RS256");
    // ES* keys are not required by Kong's conditional.
    assert!(cfg.credentials[2].fields.get("rsa_public_key").is_none());

    let errs = errors(&doc(r#"
consumers:
  - username: bob
    jwt_secrets:
      - key: a
        algorithm: PS256
      - key: b
        algorithm: EdDSA
        rsa_public_key: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"
      - key: c
        algorithm: HS1
"#));
    assert_err(
        &errs,
        "jwt_secret",
        "rsa_public_key",
        "required field missing",
    );
    assert_err(
        &errs,
        "jwt_secret",
        "@entity",
        "failed conditional validation given value of field 'algorithm'",
    );
    assert_err(&errs, "jwt_secret", "rsa_public_key", "invalid key");
    assert_err(
        &errs,
        "jwt_secret",
        "algorithm",
        "expected one of: HS256, HS384",
    );
}
