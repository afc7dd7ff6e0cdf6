//! Typed conversion of flattened entities, with Kong's per-entity rules
//! (`kong/db/schema/entities/*.lua`, `routes_subschemas.lua`, plugin daos).

use std::collections::HashSet;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::declarative::{Item, Kind, ParseOptions};
use crate::error::ConfigError;
use crate::model::*;
use crate::validate::*;

/// Columns every entity may carry that need no validation here: timestamps
/// and workspace ids from a control plane's export, and comment fields.
const COMMON: &[&str] = &["created_at", "updated_at", "ws_id", "_comment", "_ignore"];

pub(crate) fn build_all(
    items: &[Item<'_>],
    opts: &ParseOptions,
    cfg: &mut DeclarativeConfig,
    errs: &mut Vec<ConfigError>,
) {
    for item in items {
        match item.kind {
            Kind::Service => cfg.services.push(service(item, errs)),
            Kind::Route => {
                let r = route(item, errs);
                cfg.routes.push(r);
            }
            Kind::Upstream => cfg.upstreams.push(upstream(item, errs)),
            Kind::Target => cfg.targets.push(target(item, errs)),
            Kind::Plugin => cfg.plugins.push(plugin(item, opts, errs)),
            Kind::Consumer => cfg.consumers.push(consumer(item, errs)),
            Kind::Certificate => cfg.certificates.push(certificate(item, errs)),
            Kind::Sni => cfg.snis.push(sni(item, errs)),
            Kind::CaCertificate => {
                let transform = cfg.transform;
                cfg.ca_certificates
                    .push(ca_certificate(item, transform, errs))
            }
            k if k.is_credential() => {
                let transform = cfg.transform;
                cfg.credentials.push(credential(item, transform, errs))
            }
            _ => {}
        }
    }
}

fn reader<'a>(item: &'a Item<'_>, errs: &'a mut Vec<ConfigError>) -> Reader<'a> {
    let mut r = Reader::over(item.obj.iter(), errs, item.kind.singular(), &item.ident);
    r.detach(item.detached());
    r.accept(COMMON);
    for (fk, _) in item.kind.foreign_keys() {
        r.accept(&[fk]);
    }
    r
}

fn uuid_check(s: &str) -> Result<(), String> {
    Uuid::parse_str(s)
        .map(|_| ())
        .map_err(|_| "expected a valid UUID".to_string())
}

/// Reason for a field asking for what this gateway does not do yet: such a
/// config is refused, never loaded with the field silently dropped.
fn not_supported(what: &str) -> String {
    format!("not supported yet: this gateway does not {what}; remove the field or set it to null")
}

fn int_or<T: TryFrom<i64>>(v: Option<i64>, default: T) -> T {
    v.and_then(|n| T::try_from(n).ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------
// services

/// Expands the `url` shorthand into protocol/host/port/path like Kong's
/// services schema (LuaSocket's `url.parse` semantics).
fn expand_url(url: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let no_fragment = url.split('#').next().unwrap_or("");
    let (scheme, rest) = match no_fragment.split_once(':') {
        Some((s, r))
            if !s.is_empty()
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (Some(s.to_string()), r)
        }
        _ => (None, no_fragment),
    };
    let (authority, path_and_query) = match rest.strip_prefix("//") {
        Some(r) => match r.find(['/', '?']) {
            Some(i) => (Some(&r[..i]), &r[i..]),
            None => (Some(r), ""),
        },
        None => (None, rest),
    };
    let path = path_and_query.split('?').next().unwrap_or("");
    let mut host: Option<String> = None;
    let mut port: Option<String> = None;
    if let Some(auth) = authority {
        let hostport = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
        let (h, p) = match hostport.rfind(':') {
            Some(i) if !hostport[i + 1..].contains(']') => {
                (&hostport[..i], Some(&hostport[i + 1..]))
            }
            _ => (hostport, None),
        };
        let h = h
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(h);
        if !h.is_empty() {
            host = Some(h.to_string());
        }
        port = p.filter(|p| !p.is_empty()).map(str::to_string);
    }
    let port_num: Option<u64> = port.as_deref().and_then(|p| p.parse().ok());
    let by_port = match port_num {
        Some(80) => Some("http"),
        Some(443) => Some("https"),
        _ => None,
    };
    let protocol = scheme
        .clone()
        .or(by_port.map(str::to_string))
        .unwrap_or_else(|| "http".to_string());
    let port_value = match (port_num, &port) {
        (Some(n), _) => Value::from(n),
        // A non-numeric port is kept so that validation reports it.
        (None, Some(p)) => Value::String(p.clone()),
        (None, None) => Value::from(if protocol == "https" { 443 } else { 80 }),
    };
    out.insert("protocol".into(), Value::String(protocol));
    out.insert(
        "host".into(),
        host.map(Value::String).unwrap_or(Value::Null),
    );
    out.insert("port".into(), port_value);
    out.insert(
        "path".into(),
        if path.is_empty() {
            Value::Null
        } else {
            Value::String(path.to_string())
        },
    );
    out
}

fn service(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Service {
    // The shorthand overrides the fields it expands to.
    let expanded;
    let mut r = match item.obj.get("url") {
        Some(Value::String(url)) => {
            let mut m = item.fields_map();
            m.remove("url");
            m.extend(expand_url(url));
            expanded = m;
            Reader::new(&expanded, errs, item.kind.singular(), &item.ident)
        }
        _ => {
            let mut r = Reader::over(item.obj.iter(), errs, item.kind.singular(), &item.ident);
            r.detach(item.detached());
            r
        }
    };
    r.accept(COMMON);
    r.accept(&["client_certificate", "tls_sans"]);
    if r.raw("url").is_some() {
        r.err("url", "expected a string");
    }

    let name = r.checked_string("name", validate_utf8_name);
    let protocol = r.one_of("protocol", PROTOCOLS, "http");
    let host = match r.required_string("host") {
        Some(h) => match validate_host(&h) {
            Ok(()) => h,
            Err(e) => {
                r.err("host", e);
                h
            }
        },
        None => String::new(),
    };
    let port = int_or(r.int("port", 0, 65535), 80u16);
    let path = r.checked_string("path", validate_path);
    let retries = int_or(r.int("retries", 0, 32767), 5u32);
    let connect_timeout = int_or(r.int("connect_timeout", 1, MAX_TIMEOUT), 60000u64);
    let write_timeout = int_or(r.int("write_timeout", 1, MAX_TIMEOUT), 60000u64);
    let read_timeout = int_or(r.int("read_timeout", 1, MAX_TIMEOUT), 60000u64);
    let enabled = r.bool("enabled", true);
    let tags = r.tags();
    let tls_verify = r.opt_bool("tls_verify");
    let tls_verify_depth = r.int("tls_verify_depth", 0, 64).map(|n| n as u32);
    let ca_list = r.checked_list("ca_certificates", false, uuid_check);

    if path.is_some() && ["tcp", "tls", "udp", "grpc", "grpcs"].contains(&protocol.as_str()) {
        r.err(
            "path",
            format!("value must be null (a path is not allowed when 'protocol' is '{protocol}')"),
        );
    }
    if !["https", "tls"].contains(&protocol.as_str()) {
        let tls_only = [
            ("client_certificate", r.has("client_certificate")),
            ("tls_verify", tls_verify.is_some()),
            ("tls_verify_depth", tls_verify_depth.is_some()),
            (
                "ca_certificates",
                ca_list.as_ref().is_some_and(|l| !l.is_empty()),
            ),
        ];
        for (field, set) in tls_only {
            if set {
                r.err(
                    field,
                    "value must be null (only allowed when 'protocol' is 'https' or 'tls')",
                );
            }
        }
    }
    // Kong Enterprise's extra names to verify the upstream certificate by.
    if r.has("tls_sans") {
        r.err(
            "tls_sans",
            not_supported("verify upstream certificates against extra SANs (tls_sans)"),
        );
    }
    r.finish();

    Service {
        id: item.id,
        name,
        protocol,
        host,
        port,
        path,
        retries,
        connect_timeout,
        write_timeout,
        read_timeout,
        enabled,
        tags,
        tls_verify,
        tls_verify_depth,
        client_certificate: item.fks.get("client_certificate").copied(),
        ca_certificates: ca_list
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Uuid::parse_str(s).ok())
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// routes

const PROTOCOL_GROUPS: &[&[&str]] = &[
    &["http", "https"],
    &["tcp", "tls", "udp"],
    &["tls_passthrough"],
    &["grpc", "grpcs"],
];

fn cidr_ports(r: &mut Reader<'_>, key: &str) -> Option<Vec<CidrPort>> {
    let v = r.raw(key)?;
    let Value::Array(list) = v else {
        r.err(key, "expected a set");
        return None;
    };
    let mut out = Vec::new();
    for (i, el) in list.iter().enumerate() {
        let field = format!("{key}.{}", i + 1);
        let Value::Object(m) = el else {
            r.err(&field, "expected a record");
            continue;
        };
        let mut cp = CidrPort {
            ip: None,
            port: None,
        };
        for (k, val) in m {
            match (k.as_str(), val) {
                (_, Value::Null) => {}
                ("ip", Value::String(s)) => match validate_ip_or_cidr(s) {
                    Ok(()) => cp.ip = Some(s.clone()),
                    Err(e) => r.err(&format!("{field}.ip"), e),
                },
                ("ip", _) => r.err(&format!("{field}.ip"), "expected a string"),
                ("port", p) => match as_integer(p) {
                    Some(n) if (0..=65535).contains(&n) => cp.port = Some(n as u16),
                    Some(_) => r.err(
                        &format!("{field}.port"),
                        "value should be between 0 and 65535",
                    ),
                    None => r.err(&format!("{field}.port"), "expected an integer"),
                },
                _ => r.err(&format!("{field}.{k}"), "unknown field"),
            }
        }
        if cp.ip.is_none() && cp.port.is_none() && !m.values().any(|v| !v.is_null()) {
            r.err(
                &field,
                "at least one of these fields must be non-empty: 'ip', 'port'",
            );
        }
        out.push(cp);
    }
    Some(out)
}

fn route(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Route {
    let mut r = reader(item, errs);
    r.accept(&["priority"]);
    if let Some(e) = r.raw("expression") {
        if !e.is_string() {
            r.err("expression", "expected a string");
        } else {
            r.err(
                "expression",
                not_supported(
                    "have the expressions router (routes match by their traditional fields)",
                ),
            );
        }
    }

    let name = r.checked_string("name", validate_utf8_name);
    let protocols = match r.checked_list("protocols", true, |p| {
        if PROTOCOLS.contains(&p) {
            Ok(())
        } else {
            Err(format!("expected one of: {}", PROTOCOLS.join(", ")))
        }
    }) {
        Some(p) if p.is_empty() => {
            r.err("protocols", "length must be at least 1");
            vec!["http".to_string(), "https".to_string()]
        }
        Some(p) => p,
        None => vec!["http".to_string(), "https".to_string()],
    };
    let mut groups: Vec<&[&str]> = Vec::new();
    for p in &protocols {
        if let Some(g) = PROTOCOL_GROUPS.iter().find(|g| g.contains(&p.as_str())) {
            if !groups.contains(g) {
                groups.push(g);
            }
        }
    }
    if groups.len() > 1 {
        let list = groups
            .iter()
            .map(|g| format!("({})", quoted_list(g)))
            .collect::<Vec<_>>()
            .join(", ");
        r.err(
            "protocols",
            format!("these sets are mutually exclusive: {list}"),
        );
    }

    let code = match r.int("https_redirect_status_code", i64::MIN, i64::MAX) {
        Some(c) if [426, 301, 302, 307, 308].contains(&c) => c as u16,
        Some(_) => {
            r.err(
                "https_redirect_status_code",
                "expected one of: 426, 301, 302, 307, 308",
            );
            426
        }
        None => 426,
    };
    let strip_path_given = r.opt_bool("strip_path");
    let preserve_host = r.bool("preserve_host", false);
    let request_buffering = r.bool("request_buffering", true);
    let response_buffering = r.bool("response_buffering", true);
    let tags = r.tags();
    let snis = r.checked_list("snis", true, validate_wildcard_host);
    let sources = cidr_ports(&mut r, "sources");
    let destinations = cidr_ports(&mut r, "destinations");
    let methods = r.checked_list("methods", true, validate_method);
    let hosts = r.checked_list("hosts", false, validate_route_host);
    let paths = r.checked_list("paths", false, validate_router_path);
    let headers = r.headers("headers", validate_route_header_name);
    let regex_priority = r.int("regex_priority", i64::MIN, i64::MAX).unwrap_or(0);
    let path_handling = r.one_of("path_handling", &["v0", "v1"], "v0");

    // Entity checks look at what was given, even if some elements were
    // invalid (those are already reported), so one typo gives one error.
    let given = |k: &str| match r.peek(k) {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        _ => false,
    };
    let has_snis = given("snis");
    let has_methods = given("methods");
    let has_hosts = given("hosts");
    let has_paths = given("paths");
    let has_headers = given("headers");
    let has_sources = given("sources");
    let has_destinations = given("destinations");
    let has = |p: &str| protocols.iter().any(|x| x == p);

    if has_snis
        && !["grpcs", "https", "tls", "tls_passthrough"]
            .iter()
            .any(|p| has(p))
    {
        r.err(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        );
    }

    // Kong picks the subschema from the first protocol.
    let first = protocols.first().map(String::as_str).unwrap_or("http");
    let mut strip_path = strip_path_given.unwrap_or(true);
    match first {
        "http" | "https" => {
            for (f, set) in [("sources", has_sources), ("destinations", has_destinations)] {
                if set {
                    r.err(
                        f,
                        format!("cannot set '{f}' when 'protocols' is 'http' or 'https'"),
                    );
                }
            }
            if has("https") {
                if !(has_methods || has_hosts || has_headers || has_paths || has_snis) {
                    r.err(
                        "@entity",
                        format!(
                            "must set one of {} when 'protocols' is 'https'",
                            quoted_list(&["methods", "hosts", "headers", "paths", "snis"])
                        ),
                    );
                }
            } else if has("http") && !(has_methods || has_hosts || has_headers || has_paths) {
                r.err(
                    "@entity",
                    format!(
                        "must set one of {} when 'protocols' is 'http'",
                        quoted_list(&["methods", "hosts", "headers", "paths"])
                    ),
                );
            }
        }
        "grpc" | "grpcs" => {
            strip_path = strip_path_given.unwrap_or(false);
            if strip_path {
                r.err(
                    "strip_path",
                    "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
                );
            }
            for (f, set) in [
                ("methods", has_methods),
                ("sources", has_sources),
                ("destinations", has_destinations),
            ] {
                if set {
                    r.err(
                        f,
                        format!("cannot set '{f}' when 'protocols' is 'grpc' or 'grpcs'"),
                    );
                }
            }
            if has("grpcs") {
                if !(has_hosts || has_headers || has_paths || has_snis) {
                    r.err(
                        "@entity",
                        format!(
                            "must set one of {} when 'protocols' is 'grpcs'",
                            quoted_list(&["hosts", "headers", "paths", "snis"])
                        ),
                    );
                }
            } else if !(has_hosts || has_headers || has_paths) {
                r.err(
                    "@entity",
                    format!(
                        "must set one of {} when 'protocols' is 'grpc'",
                        quoted_list(&["hosts", "headers", "paths"])
                    ),
                );
            }
        }
        _ => {
            for (f, set) in [
                ("methods", has_methods),
                ("hosts", has_hosts),
                ("paths", has_paths),
                ("headers", has_headers),
            ] {
                if set {
                    r.err(f, format!(
                        "cannot set '{f}' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"
                    ));
                }
            }
            if protocols
                .iter()
                .all(|p| ["tcp", "tls", "udp"].contains(&p.as_str()))
                && !(has_sources || has_destinations || has_snis)
            {
                r.err(
                    "@entity",
                    format!(
                        "must set one of {} when 'protocols' is 'tcp', 'tls' or 'udp'",
                        quoted_list(&["sources", "destinations", "snis"])
                    ),
                );
            }
            if protocols.iter().all(|p| p == "tls_passthrough") && !has_snis {
                r.err(
                    "@entity",
                    "must set snis when 'protocols' is 'tls_passthrough'",
                );
            }
        }
    }
    r.finish();

    Route {
        id: item.id,
        name,
        protocols,
        methods: methods.unwrap_or_default(),
        hosts,
        paths: paths.unwrap_or_default(),
        headers: headers.unwrap_or_default(),
        snis: snis.unwrap_or_default(),
        sources: sources.unwrap_or_default(),
        destinations: destinations.unwrap_or_default(),
        strip_path,
        preserve_host,
        request_buffering,
        response_buffering,
        regex_priority,
        path_handling,
        https_redirect_status_code: code,
        service: item.fks.get("service").copied(),
        tags,
    }
}

// ---------------------------------------------------------------------------
// upstreams

const HASH_ON: &[&str] = &[
    "none",
    "consumer",
    "ip",
    "header",
    "cookie",
    "path",
    "query_arg",
    "uri_capture",
];
const CHECK_TYPES: &[&str] = &["tcp", "http", "https", "grpc", "grpcs"];

fn statuses(r: &mut Reader<'_>, key: &str, default: Vec<u16>) -> Vec<u16> {
    let Some(v) = r.raw(key) else { return default };
    let Value::Array(list) = v else {
        r.err(key, "expected an array");
        return default;
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        match as_integer(s) {
            Some(n) if (100..=999).contains(&n) => out.push(n as u16),
            Some(_) => r.err(
                &format!("{key}.{}", i + 1),
                "value should be between 100 and 999",
            ),
            None => r.err(&format!("{key}.{}", i + 1), "expected an integer"),
        }
    }
    out
}

fn counter(r: &mut Reader<'_>, key: &str) -> u8 {
    int_or(r.int(key, 0, 255), 0u8)
}

fn seconds(r: &mut Reader<'_>, key: &str, default: f64) -> f64 {
    r.number(key, 0.0, 65535.0).unwrap_or(default)
}

fn active_check(r: &mut Reader<'_>) -> ActiveHealthcheck {
    let d = ActiveHealthcheck::default();
    let check_type = r.one_of("type", CHECK_TYPES, "http");
    let timeout = seconds(r, "timeout", d.timeout);
    let concurrency = int_or(r.int("concurrency", 1, 1 << 31), d.concurrency);
    let http_path = r
        .checked_string("http_path", validate_path)
        .unwrap_or(d.http_path);
    let https_sni = r.checked_string("https_sni", validate_sni);
    let https_verify_certificate = r.bool("https_verify_certificate", true);
    let headers = r
        .headers("headers", validate_header_name)
        .unwrap_or_default();
    let healthy = r
        .record("healthy", &[], |h| {
            let d = ActiveHealthy::default();
            ActiveHealthy {
                interval: seconds(h, "interval", d.interval),
                http_statuses: statuses(h, "http_statuses", d.http_statuses),
                successes: counter(h, "successes"),
            }
        })
        .unwrap_or_default();
    let unhealthy = r
        .record("unhealthy", &[], |u| {
            let d = ActiveUnhealthy::default();
            ActiveUnhealthy {
                interval: seconds(u, "interval", d.interval),
                http_statuses: statuses(u, "http_statuses", d.http_statuses),
                tcp_failures: counter(u, "tcp_failures"),
                timeouts: counter(u, "timeouts"),
                http_failures: counter(u, "http_failures"),
            }
        })
        .unwrap_or_default();
    ActiveHealthcheck {
        check_type,
        timeout,
        concurrency,
        http_path,
        https_sni,
        https_verify_certificate,
        headers,
        healthy,
        unhealthy,
    }
}

fn passive_check(r: &mut Reader<'_>) -> PassiveHealthcheck {
    let check_type = r.one_of("type", CHECK_TYPES, "http");
    let healthy = r
        .record("healthy", &[], |h| {
            let d = PassiveHealthy::default();
            PassiveHealthy {
                http_statuses: statuses(h, "http_statuses", d.http_statuses),
                successes: counter(h, "successes"),
            }
        })
        .unwrap_or_default();
    let unhealthy = r
        .record("unhealthy", &[], |u| {
            let d = PassiveUnhealthy::default();
            PassiveUnhealthy {
                http_statuses: statuses(u, "http_statuses", d.http_statuses),
                tcp_failures: counter(u, "tcp_failures"),
                timeouts: counter(u, "timeouts"),
                http_failures: counter(u, "http_failures"),
            }
        })
        .unwrap_or_default();
    PassiveHealthcheck {
        check_type,
        healthy,
        unhealthy,
    }
}

fn upstream(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Upstream {
    let mut r = reader(item, errs);
    let name = r
        .required_string("name")
        .inspect(|n| {
            if let Err(e) = validate_upstream_name(n) {
                r.err("name", e);
            }
        })
        .unwrap_or_default();
    let algorithm_given = r.string("algorithm");
    let hash_on_given = r.string("hash_on");
    // Kong's shorthands: least-connections/latency force hash_on to none;
    // otherwise a given hash_on decides between round-robin and hashing.
    let mut algorithm = algorithm_given
        .clone()
        .unwrap_or_else(|| "round-robin".into());
    let mut hash_on = hash_on_given.clone().unwrap_or_else(|| "none".into());
    if matches!(algorithm.as_str(), "least-connections" | "latency") {
        hash_on = "none".into();
    } else if let Some(h) = &hash_on_given {
        algorithm = if h == "none" {
            "round-robin".into()
        } else {
            "consistent-hashing".into()
        };
    }
    let algorithms = [
        "consistent-hashing",
        "least-connections",
        "round-robin",
        "latency",
    ];
    if !algorithms.contains(&algorithm.as_str()) {
        r.err(
            "algorithm",
            format!("expected one of: {}", algorithms.join(", ")),
        );
    }
    if !HASH_ON.contains(&hash_on.as_str()) {
        r.err(
            "hash_on",
            format!("expected one of: {}", HASH_ON.join(", ")),
        );
    }
    let hash_fallback = r.one_of("hash_fallback", HASH_ON, "none");
    let hash_on_header = r.checked_string("hash_on_header", validate_header_name);
    let hash_fallback_header = r.checked_string("hash_fallback_header", validate_header_name);
    let hash_on_cookie = r.checked_string("hash_on_cookie", validate_http_token);
    let hash_on_cookie_path = r
        .checked_string("hash_on_cookie_path", validate_path)
        .unwrap_or_else(|| "/".into());
    let hash_on_query_arg = r.string("hash_on_query_arg");
    let hash_fallback_query_arg = r.string("hash_fallback_query_arg");
    let hash_on_uri_capture = r.string("hash_on_uri_capture");
    let hash_fallback_uri_capture = r.string("hash_fallback_uri_capture");
    let slots = int_or(r.int("slots", 10, 1 << 16), 10000u32);
    let host_header = r.checked_string("host_header", validate_host_with_optional_port);
    let use_srv_name = r.bool("use_srv_name", false);
    if use_srv_name {
        r.err(
            "use_srv_name",
            "not supported yet: this gateway resolves targets by A/AAAA records only, never SRV; set it to false",
        );
    }
    let tags = r.tags();
    let healthchecks = r
        .record("healthchecks", &[], |h| {
            let active = h.record("active", &[], active_check).unwrap_or_default();
            let passive = h.record("passive", &[], passive_check).unwrap_or_default();
            let threshold = h.number("threshold", 0.0, 100.0).unwrap_or(0.0);
            Healthchecks {
                active,
                passive,
                threshold,
            }
        })
        .unwrap_or_default();

    // Entity checks (`upstreams.lua`).
    if hash_on == "header" && hash_on_header.is_none() {
        r.err("hash_on_header", "required field missing");
    }
    if hash_fallback == "header" && hash_fallback_header.is_none() {
        r.err("hash_fallback_header", "required field missing");
    }
    if (hash_on == "cookie" || hash_fallback == "cookie") && hash_on_cookie.is_none() {
        r.err("hash_on_cookie", "required field missing");
    }
    if hash_on == "query_arg" && hash_on_query_arg.is_none() {
        r.err("hash_on_query_arg", "required field missing");
    }
    if hash_fallback == "query_arg" && hash_fallback_query_arg.is_none() {
        r.err("hash_fallback_query_arg", "required field missing");
    }
    if hash_on == "uri_capture" && hash_on_uri_capture.is_none() {
        r.err("hash_on_uri_capture", "required field missing");
    }
    if hash_fallback == "uri_capture" && hash_fallback_uri_capture.is_none() {
        r.err("hash_fallback_uri_capture", "required field missing");
    }
    let fallback_ok = match hash_on.as_str() {
        "none" | "cookie" => hash_fallback == "none",
        "consumer" | "ip" | "path" => hash_fallback != hash_on,
        _ => true,
    };
    if !fallback_ok {
        let allowed: Vec<&str> = match hash_on.as_str() {
            "none" | "cookie" => vec!["none"],
            other => HASH_ON.iter().copied().filter(|h| *h != other).collect(),
        };
        r.err(
            "hash_fallback",
            format!(
                "failed conditional validation given value of field 'hash_on': expected one of: {}",
                allowed.join(", ")
            ),
        );
    }
    for (a, b, va, vb) in [
        (
            "hash_on_header",
            "hash_fallback_header",
            &hash_on_header,
            &hash_fallback_header,
        ),
        (
            "hash_on_query_arg",
            "hash_fallback_query_arg",
            &hash_on_query_arg,
            &hash_fallback_query_arg,
        ),
        (
            "hash_on_uri_capture",
            "hash_fallback_uri_capture",
            &hash_on_uri_capture,
            &hash_fallback_uri_capture,
        ),
    ] {
        if va.is_some() && va == vb {
            r.err(
                "@entity",
                format!(
                    "values of these fields must be distinct: {}",
                    quoted_list(&[a, b])
                ),
            );
        }
    }
    r.finish();

    Upstream {
        id: item.id,
        name,
        algorithm,
        hash_on,
        hash_fallback,
        hash_on_header,
        hash_fallback_header,
        hash_on_cookie,
        hash_on_cookie_path,
        hash_on_query_arg,
        hash_fallback_query_arg,
        hash_on_uri_capture,
        hash_fallback_uri_capture,
        slots,
        host_header,
        use_srv_name,
        client_certificate: item.fks.get("client_certificate").copied(),
        healthchecks,
        tags,
    }
}

// ---------------------------------------------------------------------------
// targets, plugins, consumers, credentials, certificates

/// Reports a missing required foreign key (a dangling one is reported when
/// references are resolved).
fn required_fk(r: &mut Reader<'_>, item: &Item<'_>, field: &str) -> Option<Uuid> {
    let id = item.fks.get(field).copied();
    if id.is_none() && !r.has(field) {
        r.err(field, "required field missing");
    }
    id
}

fn target(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Target {
    let mut r = reader(item, errs);
    let upstream = required_fk(&mut r, item, "upstream");
    let target = r
        .required_string("target")
        .and_then(|t| match normalize_target(&t) {
            Ok(n) => Some(n),
            Err(e) => {
                r.err("target", e);
                None
            }
        });
    let weight = int_or(r.int("weight", 0, 65535), 100u32);
    let tags = r.tags();
    r.finish();
    Target {
        id: item.id,
        upstream: upstream.unwrap_or_default(),
        target: target.unwrap_or_default(),
        weight,
        tags,
    }
}

fn plugin(item: &Item<'_>, opts: &ParseOptions, errs: &mut Vec<ConfigError>) -> Plugin {
    let mut r = reader(item, errs);
    // The error list is shared with the other entities: only this plugin's
    // own errors keep its entity checks from running.
    let errors_before = r.error_count();
    // Kong Enterprise fields, exported as null by a control plane.
    r.accept(&["ordering", "consumer_group"]);
    if r.has("ordering") {
        r.err("ordering", not_supported("order plugins dynamically"));
    }
    if r.has("consumer_group") {
        r.err(
            "consumer_group",
            not_supported("scope plugins to consumer groups"),
        );
    }
    let name = r.required_string("name").unwrap_or_default();
    let schema = opts.plugins.get(&name);
    if !name.is_empty() && schema.is_none() {
        r.err(
            "name",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        );
    }
    let instance_name = r.checked_string("instance_name", validate_utf8_name);
    let raw_config = match r.raw("config") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            r.err("config", "expected a record");
            Value::Null
        }
    };
    // The plugin's own schema: Kong's messages at `config.<field>`, and the
    // config comes back with its defaults filled in.
    let config = match (schema, &raw_config) {
        (Some(s), Value::Object(_)) => {
            match crate::schema::validate_record(&s.config, &raw_config, "config") {
                Ok(v) => v,
                Err(list) => {
                    for e in list {
                        r.err(&e.path, e.message);
                    }
                    raw_config.clone()
                }
            }
        }
        _ => raw_config.clone(),
    };
    let allowed = schema.map_or(PROTOCOLS, |s| s.allowed_protocols);
    let protocols = r
        .checked_list("protocols", true, |p| {
            if allowed.contains(&p) {
                Ok(())
            } else {
                Err(format!("expected one of: {}", allowed.join(", ")))
            }
        })
        .unwrap_or_else(|| {
            schema
                .map_or(HTTP_PROTOCOLS, |s| s.default_protocols)
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
    let enabled = r.bool("enabled", true);
    let tags = r.tags();
    let service = item.fks.get("service").copied();
    let route = item.fks.get("route").copied();
    let consumer = item.fks.get("consumer").copied();
    if let Some(s) = schema {
        // Kong's `no_consumer` / `no_route` / `no_service` (`eq = null`).
        for (scoped, refused, field) in [
            (
                consumer.is_some() || r.has("consumer"),
                s.no_consumer,
                "consumer",
            ),
            (route.is_some() || r.has("route"), s.no_route, "route"),
            (
                service.is_some() || r.has("service"),
                s.no_service,
                "service",
            ),
        ] {
            if scoped && refused {
                r.err(field, "value must be null");
            }
        }
        if r.error_count() == errors_before {
            let mut whole = item.obj.to_map();
            whole.insert("config".into(), config.clone());
            for check in &s.entity_checks {
                if let Err(msg) = check(&whole) {
                    r.err("@entity", msg);
                }
            }
        }
    }
    r.finish();
    Plugin {
        id: item.id,
        name,
        instance_name,
        enabled,
        config,
        service,
        route,
        consumer,
        protocols,
        tags,
    }
}

fn consumer(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Consumer {
    let mut r = reader(item, errs);
    let username = r.string("username");
    let custom_id = r.string("custom_id");
    let tags = r.tags();
    if username.is_none() && custom_id.is_none() && !r.has("username") && !r.has("custom_id") {
        r.err(
            "@entity",
            "at least one of these fields must be non-empty: 'custom_id', 'username'",
        );
    }
    r.finish();
    Consumer {
        id: item.id,
        username,
        custom_id,
        tags,
    }
}

/// Random value for fields Kong generates (`auto = true`).
fn auto_value() -> Value {
    Value::String(Uuid::new_v4().simple().to_string())
}

/// `transform` is the document's `_transform`: rows are stored as Kong's
/// `on_write` transformations leave them (basic-auth passwords hashed)
/// unless the document says they already are (a control plane's export).
fn credential(item: &Item<'_>, transform: bool, errs: &mut Vec<ConfigError>) -> Credential {
    let mut r = reader(item, errs);
    r.accept(&["tags"]);
    let mut fields = item.fields_map();
    for (fk, _) in item.kind.foreign_keys() {
        fields.remove(*fk);
    }
    let consumer = required_fk(&mut r, item, "consumer");
    let _ = r.tags();
    let mut fill = |k: &str, v: Value| {
        if fields.get(k).is_none_or(Value::is_null) {
            fields.insert(k.to_string(), v);
        }
    };
    match item.kind {
        Kind::KeyAuth => {
            r.string("key");
            // `ttl = true` schemas take a `ttl` column Kong does not
            // validate; in a declarative payload it is the absolute epoch
            // second the credential expires at (off strategy:
            // `entity.ttl - ngx.time()`). Only numbers can work there.
            if let Some(v) = r.raw("ttl") {
                if !v.is_number() {
                    r.err("ttl", "expected a number");
                }
            }
            fill("key", auto_value());
        }
        Kind::BasicAuth => {
            r.required_string("username");
            let password = r.required_string("password");
            // Kong's `on_write`: password = hex(sha1(password .. consumer.id)).
            if let (true, Some(p), Some(c)) = (transform, password, consumer) {
                fields.insert(
                    "password".into(),
                    Value::String(crate::credentials::basicauth_hash(&c.to_string(), &p)),
                );
            }
        }
        Kind::Jwt => {
            r.string("key");
            r.string("secret");
            let key = r.string("rsa_public_key");
            let algs = [
                "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                "PS256", "PS384", "PS512", "EdDSA",
            ];
            let alg = r.one_of("algorithm", &algs, "HS256");
            // Kong's conditional: RS*, PS* and EdDSA need a key that loads
            // (`openssl_pkey.new`); ES* keys are only loaded at request time.
            let needs_key = alg.starts_with("RS") || alg.starts_with("PS") || alg == "EdDSA";
            let parsed = key.as_deref().map(crate::credentials::parse_jwt_public_key);
            if needs_key {
                let field_err = match &parsed {
                    None if !r.has("rsa_public_key") => Some("required field missing".to_string()),
                    Some(Err(e)) => Some(e.clone()),
                    _ => None,
                };
                if let Some(e) = field_err {
                    r.err("rsa_public_key", e);
                    r.err(
                        "@entity",
                        "failed conditional validation given value of field 'algorithm'",
                    );
                }
            }
            fill("key", auto_value());
            fill("secret", auto_value());
            fill("algorithm", Value::String(alg));
        }
        Kind::HmacAuth => {
            r.required_string("username");
            r.string("secret");
            fill("secret", auto_value());
        }
        Kind::Acl => {
            r.required_string("group");
        }
        Kind::Oauth2 => {
            r.required_string("name");
            r.string("client_id");
            r.string("client_secret");
            let hash_secret = r.bool("hash_secret", false);
            r.string_list("redirect_uris", false);
            let client_type = r.one_of("client_type", &["confidential", "public"], "confidential");
            fill("client_id", auto_value());
            fill("client_secret", auto_value());
            fill("hash_secret", Value::Bool(hash_secret));
            fill("client_type", Value::String(client_type));
        }
        Kind::MtlsAuth => {
            r.required_string("subject_name");
        }
        _ => {}
    }
    r.finish();
    Credential {
        kind: item.kind.table().to_string(),
        id: item.id,
        consumer: consumer.unwrap_or_default(),
        fields,
    }
}

fn certificate(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Certificate {
    let mut r = reader(item, errs);
    let cert = r.required_string("cert");
    let key = r.required_string("key");
    let cert_alt = r.string("cert_alt");
    let key_alt = r.string("key_alt");
    let tags = r.tags();
    // Field validators (Kong's typedefs.certificate / typedefs.key); vault
    // references are resolved later and not checked here.
    let check_cert = |r: &mut Reader<'_>, f: &str, v: &Option<String>| {
        let v = v.as_deref().filter(|v| !is_vault_reference(v))?;
        parse_certificate(v).map_err(|e| r.err(f, e)).ok()
    };
    let parsed_cert = check_cert(&mut r, "cert", &cert);
    let parsed_cert_alt = check_cert(&mut r, "cert_alt", &cert_alt);
    let check_key = |r: &mut Reader<'_>, f: &str, v: &Option<String>| {
        let v = v.as_deref().filter(|v| !is_vault_reference(v))?;
        parse_key(v).map_err(|e| r.err(f, e)).ok()
    };
    let parsed_key = check_key(&mut r, "key", &key);
    let parsed_key_alt = check_key(&mut r, "key_alt", &key_alt);
    if cert_alt.is_some() != key_alt.is_some() {
        r.err(
            "@entity",
            "all or none of these fields must be set: 'cert_alt', 'key_alt'",
        );
    }
    // Entity checks (kong/db/schema/entities/certificates.lua), only on
    // fields that passed their own validation, as in Kong.
    if let (Some(c), Some(k)) = (&parsed_cert, &parsed_key) {
        if !key_matches(c, k) {
            r.err("@entity", "certificate does not match key");
        }
    }
    if let (Some(c), Some(k)) = (&parsed_cert_alt, &parsed_key_alt) {
        if !key_matches(c, k) {
            r.err("@entity", "alternative certificate does not match key");
        }
    }
    if let (Some(c), Some(a)) = (&parsed_cert, &parsed_cert_alt) {
        if c.key_type == a.key_type {
            r.err(
                "@entity",
                "certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type",
            );
        }
    }
    r.finish();
    Certificate {
        id: item.id,
        cert: cert.unwrap_or_default(),
        key: key.unwrap_or_default(),
        cert_alt,
        key_alt,
        tags,
    }
}

fn sni(item: &Item<'_>, errs: &mut Vec<ConfigError>) -> Sni {
    let mut r = reader(item, errs);
    let certificate = required_fk(&mut r, item, "certificate");
    let name = if r.has("name") {
        r.checked_string("name", validate_wildcard_host)
    } else {
        r.required_string("name")
    };
    let tags = r.tags();
    r.finish();
    Sni {
        id: item.id,
        name: name.unwrap_or_default(),
        certificate: certificate.unwrap_or_default(),
        tags,
    }
}

/// kong/db/schema/entities/ca_certificates.lua: one certificate, a valid
/// one (typedefs.certificate), not expired, a CA. Its `on_write`
/// transformation sets `cert_digest` (hex SHA-256 of the DER) whatever was
/// given, unless the config is already transformed (`_transform: false`).
fn ca_certificate(item: &Item<'_>, transform: bool, errs: &mut Vec<ConfigError>) -> CaCertificate {
    const TAG: &str = "-----BEGIN CERTIFICATE-----";
    let mut r = reader(item, errs);
    let cert = r.required_string("cert");
    let mut digest = None;
    if let Some(c) = &cert {
        match parse_certificate(c) {
            Err(e) => r.err("cert", e),
            Ok(_) if c.matches(TAG).count() > 1 => {
                r.err("@entity", "please submit only one certificate at a time")
            }
            Ok(p) => {
                digest = p
                    .chain
                    .first()
                    .map(|der| hex::encode(ring::digest::digest(&ring::digest::SHA256, der)));
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                if p.not_after_unix < now {
                    r.err(
                        "@entity",
                        "certificate expired, \"Not After\" time is in the past",
                    );
                } else if !p.is_ca {
                    r.err(
                        "@entity",
                        "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint",
                    );
                }
            }
        }
    }
    let given_digest = r.string("cert_digest");
    let cert_digest = if transform {
        digest.or(given_digest)
    } else {
        given_digest
    };
    let tags = r.tags();
    r.finish();
    CaCertificate {
        id: item.id,
        cert: cert.unwrap_or_default(),
        cert_digest,
        tags,
    }
}

// ---------------------------------------------------------------------------
// cross-entity checks

pub(crate) fn cross_checks(
    items: &[Item<'_>],
    cfg: &DeclarativeConfig,
    errs: &mut Vec<ConfigError>,
) {
    // `build_all` keeps item order within each kind, so zipping pairs each
    // typed entity with its source item.
    let of = |kind: Kind| items.iter().filter(move |i| i.kind == kind);

    // One plugin of a given name per (route, service, consumer): Kong's cache key.
    type PluginKey<'a> = (&'a str, Option<Uuid>, Option<Uuid>, Option<Uuid>);
    let mut seen_plugins: HashSet<PluginKey<'_>> = HashSet::new();
    for (item, p) in of(Kind::Plugin).zip(&cfg.plugins) {
        if item.duplicate || p.name.is_empty() {
            continue;
        }
        if !seen_plugins.insert((p.name.as_str(), p.route, p.service, p.consumer)) {
            errs.push(item.err(
                "name",
                format!(
                    "uniqueness violation: 'plugins' entity with name set to '{}' already declared for the same route, service and consumer",
                    p.name
                ),
            ));
        }
    }

    // One target per address and upstream.
    let mut seen_targets: HashSet<(Uuid, &str)> = HashSet::new();
    for (item, t) in of(Kind::Target).zip(&cfg.targets) {
        if item.duplicate || t.target.is_empty() {
            continue;
        }
        if !seen_targets.insert((t.upstream, t.target.as_str())) {
            errs.push(item.err(
                "target",
                format!(
                    "uniqueness violation: 'targets' entity with target set to '{}' already declared for this upstream",
                    t.target
                ),
            ));
        }
    }

    // Unique columns that are not endpoint keys (Kong checks every `unique`
    // field, on the values as given: before `cert_digest` is computed).
    let mut digests: HashSet<&str> = HashSet::new();
    for item in of(Kind::CaCertificate) {
        if let Some(Value::String(d)) = item.obj.get("cert_digest") {
            if !digests.insert(d.as_str()) {
                errs.push(item.err(
                    "cert_digest",
                    format!("uniqueness violation: 'ca_certificates' entity with cert_digest set to '{d}' already declared"),
                ));
            }
        }
    }

    // A service's trust store: every CA certificate it names must exist.
    // Kong (kong/runloop/certificate.lua fetch_ca_certificates) only finds
    // out per request, logs "CA Certificate '<id>' does not exist" and
    // proxies with the default trust store; refused here instead, in its
    // words, so a typo cannot quietly change what is trusted.
    let ca_ids: HashSet<Uuid> = cfg.ca_certificates.iter().map(|c| c.id).collect();
    for (item, s) in of(Kind::Service).zip(&cfg.services) {
        if item.duplicate {
            continue;
        }
        for id in &s.ca_certificates {
            if !ca_ids.contains(id) {
                errs.push(item.err(
                    "ca_certificates",
                    format!("CA Certificate '{id}' does not exist"),
                ));
            }
        }
    }

    let mut custom_ids: HashSet<&str> = HashSet::new();
    for (item, c) in of(Kind::Consumer).zip(&cfg.consumers) {
        if let Some(cid) = c.custom_id.as_deref() {
            if !custom_ids.insert(cid) {
                errs.push(item.err(
                    "custom_id",
                    format!("uniqueness violation: 'consumers' entity with custom_id set to '{cid}' already declared"),
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_shorthand() {
        let m = expand_url("https://example.com/api?x=1#frag");
        assert_eq!(m["protocol"], "https");
        assert_eq!(m["host"], "example.com");
        assert_eq!(m["port"], 443);
        assert_eq!(m["path"], "/api");
        let m = expand_url("http://10.0.0.1:8080");
        assert_eq!(m["port"], 8080);
        assert!(m["path"].is_null());
        let m = expand_url("grpc://h:9000/");
        assert_eq!(m["protocol"], "grpc");
        assert_eq!(m["path"], "/");
        let m = expand_url("http://[::1]:81/x");
        assert_eq!(m["host"], "::1");
        assert_eq!(m["port"], 81);
        let m = expand_url("tcp://h");
        assert_eq!(m["port"], 80);
        let m = expand_url("http://u:p@h:abc");
        assert_eq!(m["host"], "h");
        assert_eq!(m["port"], "abc");
    }
}
