//! Kong's log serializer (`kong.log.serialize()`, `kong/pdk/log.lua`
//! 857-943): the JSON object the logging plugins send for each request.
//!
//! [`serialize`] gathers what the request left in its context and the
//! session into [`Facts`]; [`build`] lays them out in Kong's shape, so the
//! layout is unit-tested apart from a live request. The route and service
//! entities are kept as Kong's log shows them in the snapshot
//! ([`Entities`]), compiled once per config and only when a logging plugin
//! is configured.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use config_sync::model::{self, DeclarativeConfig};
use config_sync::schema::{map, string, Field};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::consumers::ConsumerRt;
use super::Kong;
use crate::proxy::ctx::TryRecord;
use crate::snapshot::RouteRt;

/// Plugins that call the serializer: a snapshot keeps the entities' JSON
/// only when one of them is configured.
pub const USERS: &[&str] = &["http-log", "file-log", "tcp-log", "udp-log"];

/// `kong.log.serialize()` of the request being logged.
pub fn serialize(kong: &Kong<'_>) -> Value {
    build(facts(kong))
}

/// The id of the one workspace a DB-less or hybrid data plane has
/// (`default`). Kong's DB-less node creates it with a random id when it
/// loads its first config; entities and the log's `workspace` carry it.
pub fn workspace_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| Uuid::new_v4().to_string())
}

/// Kong's `workspaces.get_workspace_name()` (always `default` in OSS).
pub const WORKSPACE_NAME: &str = "default";

/// `custom_fields_by_lua` (`typedefs.lua_code`: a map of field name to
/// Lua code) of the logging plugins. No Lua runs here: a config that sets
/// fields is refused at load, naming the field, rather than loaded without
/// them.
pub fn lua_code_refused() -> Field {
    map(string().len_min(1), string().len_min(1)).custom(|v| match v.as_object() {
        Some(m) if !m.is_empty() => Err(
            "not supported yet: this gateway does not run Lua code (custom_fields_by_lua); remove the field or set it to null"
                .into(),
        ),
        _ => Ok(()),
    })
}

// ---------------------------------------------------------------------------
// entities

/// Routes and services as JSON, the way Kong's log shows `ctx.route` and
/// `ctx.service` (the DAO rows: fields set or defaulted, absent ones left
/// out, foreign keys as `{"id": ...}`). Stored compact and parsed when a
/// request is logged: a 10,000-route config costs a few MB, not tens.
#[derive(Debug, Default)]
pub struct Entities {
    /// By route index of the snapshot; empty when not compiled.
    routes: Vec<Box<str>>,
    /// By service index of the snapshot (the config's order).
    services: Vec<Box<str>>,
    /// `created_at` / `updated_at` of entities: Kong's declarative import
    /// stamps them with the load time.
    loaded_at: u64,
}

impl Entities {
    /// The entities of `cfg` when an enabled logging plugin will serialize
    /// them; `routes` are the snapshot's (by index).
    pub fn compile(cfg: &DeclarativeConfig, routes: &[RouteRt]) -> Entities {
        let wanted = cfg
            .plugins
            .iter()
            .any(|p| p.enabled && USERS.contains(&p.name.as_str()));
        if !wanted {
            return Entities::default();
        }
        let loaded_at = super::consumers::now_secs();
        let by_id: HashMap<Uuid, &model::Route> = cfg.routes.iter().map(|r| (r.id, r)).collect();
        let compact = |v: Value| v.to_string().into_boxed_str();
        Entities {
            routes: routes
                .iter()
                .map(|r| match by_id.get(&r.id) {
                    Some(m) => compact(route_json(m, loaded_at)),
                    None => compact(json!({ "id": r.id.to_string() })),
                })
                .collect(),
            services: cfg
                .services
                .iter()
                .map(|s| compact(service_json(s, loaded_at)))
                .collect(),
            loaded_at,
        }
    }

    fn route(&self, index: usize) -> Option<Value> {
        serde_json::from_str(self.routes.get(index)?).ok()
    }

    fn service(&self, index: usize) -> Option<Value> {
        serde_json::from_str(self.services.get(index)?).ok()
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn cidr_ports(v: &[model::CidrPort]) -> Value {
    Value::Array(
        v.iter()
            .map(|c| {
                let mut m = Map::new();
                if let Some(ip) = &c.ip {
                    m.insert("ip".into(), Value::String(ip.clone()));
                }
                if let Some(p) = c.port {
                    m.insert("port".into(), p.into());
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// A route row (`kong/db/schema/entities/routes.lua`).
pub fn route_json(r: &model::Route, loaded_at: u64) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), r.id.to_string().into());
    m.insert("created_at".into(), loaded_at.into());
    m.insert("updated_at".into(), loaded_at.into());
    if let Some(n) = &r.name {
        m.insert("name".into(), n.clone().into());
    }
    m.insert("protocols".into(), strings(&r.protocols));
    if !r.methods.is_empty() {
        m.insert("methods".into(), strings(&r.methods));
    }
    if let Some(h) = &r.hosts {
        m.insert("hosts".into(), strings(h));
    }
    if !r.paths.is_empty() {
        m.insert("paths".into(), strings(&r.paths));
    }
    if !r.headers.is_empty() {
        let h: Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), strings(v)))
            .collect();
        m.insert("headers".into(), Value::Object(h));
    }
    if !r.snis.is_empty() {
        m.insert("snis".into(), strings(&r.snis));
    }
    if !r.sources.is_empty() {
        m.insert("sources".into(), cidr_ports(&r.sources));
    }
    if !r.destinations.is_empty() {
        m.insert("destinations".into(), cidr_ports(&r.destinations));
    }
    m.insert(
        "https_redirect_status_code".into(),
        r.https_redirect_status_code.into(),
    );
    m.insert("regex_priority".into(), r.regex_priority.into());
    m.insert("strip_path".into(), r.strip_path.into());
    m.insert("path_handling".into(), r.path_handling.clone().into());
    m.insert("preserve_host".into(), r.preserve_host.into());
    m.insert("request_buffering".into(), r.request_buffering.into());
    m.insert("response_buffering".into(), r.response_buffering.into());
    if !r.tags.is_empty() {
        m.insert("tags".into(), strings(&r.tags));
    }
    if let Some(s) = r.service {
        m.insert("service".into(), json!({ "id": s.to_string() }));
    }
    m.insert("ws_id".into(), workspace_id().into());
    Value::Object(m)
}

/// A service row (`kong/db/schema/entities/services.lua`).
pub fn service_json(s: &model::Service, loaded_at: u64) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), s.id.to_string().into());
    m.insert("created_at".into(), loaded_at.into());
    m.insert("updated_at".into(), loaded_at.into());
    if let Some(n) = &s.name {
        m.insert("name".into(), n.clone().into());
    }
    m.insert("retries".into(), s.retries.into());
    m.insert("protocol".into(), s.protocol.clone().into());
    m.insert("host".into(), s.host.clone().into());
    m.insert("port".into(), s.port.into());
    if let Some(p) = &s.path {
        m.insert("path".into(), p.clone().into());
    }
    m.insert("connect_timeout".into(), s.connect_timeout.into());
    m.insert("write_timeout".into(), s.write_timeout.into());
    m.insert("read_timeout".into(), s.read_timeout.into());
    if !s.tags.is_empty() {
        m.insert("tags".into(), strings(&s.tags));
    }
    if let Some(c) = s.client_certificate {
        m.insert("client_certificate".into(), json!({ "id": c.to_string() }));
    }
    if let Some(v) = s.tls_verify {
        m.insert("tls_verify".into(), v.into());
    }
    if let Some(d) = s.tls_verify_depth {
        m.insert("tls_verify_depth".into(), d.into());
    }
    if !s.ca_certificates.is_empty() {
        let ids = s
            .ca_certificates
            .iter()
            .map(|u| Value::String(u.to_string()))
            .collect();
        m.insert("ca_certificates".into(), Value::Array(ids));
    }
    m.insert("enabled".into(), s.enabled.into());
    m.insert("ws_id".into(), workspace_id().into());
    Value::Object(m)
}

/// A consumer row (`kong/db/schema/entities/consumers.lua`).
pub fn consumer_json(c: &ConsumerRt, loaded_at: u64) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), c.id.to_string().into());
    m.insert("created_at".into(), loaded_at.into());
    m.insert("updated_at".into(), loaded_at.into());
    if let Some(u) = &c.username {
        m.insert("username".into(), u.clone().into());
    }
    if let Some(u) = &c.custom_id {
        m.insert("custom_id".into(), u.clone().into());
    }
    if !c.tags.is_empty() {
        m.insert("tags".into(), strings(&c.tags));
    }
    m.insert("ws_id".into(), workspace_id().into());
    Value::Object(m)
}

// ---------------------------------------------------------------------------
// one request

/// Kong's `latencies`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// `KONG_PROXY_LATENCY` (proxied) or `KONG_RESPONSE_LATENCY`.
    pub kong: u64,
    /// `KONG_WAITING_TIME`: upstream wait, or -1 when not proxied.
    pub proxy: i64,
    /// `$request_time`.
    pub request: u64,
    /// `KONG_RECEIVE_TIME`: the upstream body, 0 when not proxied.
    pub receive: u64,
}

/// What the serializer reads of one request.
#[derive(Debug, Clone)]
pub struct Facts {
    pub request_id: String,
    /// `$request_uri`: the target as sent, with its query.
    pub request_uri: String,
    /// `$scheme`, `$host`, and the port the client used.
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// `kong.request.get_query()`.
    pub querystring: Value,
    pub method: String,
    /// `kong.request.get_headers()` (credentials redacted by [`build`]).
    pub request_headers: Map<String, Value>,
    /// `$request_length`.
    pub request_size: u64,
    /// `$upstream_uri` (with its query).
    pub upstream_uri: String,
    /// `$upstream_status`: one status per try, `", "`-joined.
    pub upstream_status: String,
    pub status: u16,
    pub response_headers: Map<String, Value>,
    /// `$bytes_sent`.
    pub response_size: u64,
    pub latencies: Latencies,
    /// `balancer_data.tries`: `None` when the request was not routed.
    pub tries: Option<Vec<TryRecord>>,
    /// The credential that authenticated the request.
    pub credential: Option<Uuid>,
    pub route: Option<Value>,
    pub service: Option<Value>,
    pub consumer: Option<Value>,
    /// `$remote_addr`.
    pub client_ip: String,
    /// `request.tls`: `$ssl_protocol` and `$ssl_cipher` (OpenSSL's name)
    /// of a TLS connection.
    pub tls: Option<(String, String)>,
    /// Request start, epoch milliseconds.
    pub started_at: u64,
    /// The upstream answered (`source: upstream`), not Kong.
    pub from_service: bool,
    /// `kong.log.set_serialize_value` entries.
    pub extra: Map<String, Value>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Kong's `ngx.req.get_headers()` and `ngx.resp.get_headers()` read at
/// most 100 header lines.
const MAX_HEADERS: usize = 100;

/// Header lines as Lua tables: lower-case names, a repeated name as an
/// array of its values.
fn header_table<'h>(
    headers: impl Iterator<Item = (&'h http::HeaderName, &'h http::HeaderValue)>,
    skip: &[&str],
) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers.take(MAX_HEADERS) {
        let name = name.as_str();
        if skip.contains(&name) {
            continue;
        }
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match out.get_mut(name) {
            None => {
                out.insert(name.to_string(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => {
                let prev = first.take();
                *first = Value::Array(vec![prev, v]);
            }
        }
    }
    out
}

/// `kong.request.get_query()` (`ngx.req.get_uri_args(100)`): decoded names
/// and values, `true` for a bare name, repeated names as arrays.
pub fn query_table(raw: &str) -> Value {
    let mut out = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()).take(100) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (k, Value::String(unescape(v))),
            None => (pair, Value::Bool(true)),
        };
        let k = unescape(k);
        if k.is_empty() {
            continue;
        }
        match out.get_mut(&k) {
            None => {
                out.insert(k, v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => {
                let prev = first.take();
                *first = Value::Array(vec![prev, v]);
            }
        }
    }
    Value::Object(out)
}

/// nginx's argument decoding: `+` is a space, `%XX` a byte.
fn unescape(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// `$upstream_status` from the tries: a failed try reports the status
/// nginx answered it with (502, or 504 for a timeout).
fn upstream_status(tries: &[TryRecord], last_status: Option<u16>) -> String {
    let n = tries.len();
    let parts: Vec<String> = tries
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            if i + 1 == n {
                last_status
                    .or(t.failure.map(|(_, c)| c))
                    .map(|c| c.to_string())
            } else {
                t.failure.map(|(_, c)| c.to_string())
            }
        })
        .collect();
    parts.join(", ")
}

/// Gathers the facts of the request being logged.
pub fn facts(kong: &Kong<'_>) -> Facts {
    let ctx = kong.ctx();
    let snap = ctx.snapshot.as_deref();
    let sample = kong.sample();
    let now = Instant::now();
    let since = |t: Instant| millis(now.saturating_duration_since(t));
    let proxied = ctx.tries > 0;
    let latencies = if proxied {
        // Kong splits at the end of the balancer step: `kong` up to it,
        // `proxy` from it to the upstream's response head, so that
        // `kong + proxy <= request`.
        Latencies {
            kong: ctx.upstream_start.map_or(sample.kong_ms, |t| {
                millis(t.saturating_duration_since(ctx.start))
            }),
            proxy: ctx
                .upstream_start
                .map(|a| {
                    let b = ctx.upstream_header_at.unwrap_or(now);
                    i64::try_from(millis(b.saturating_duration_since(a))).unwrap_or(i64::MAX)
                })
                .unwrap_or(-1),
            request: since(ctx.start),
            receive: ctx.upstream_header_at.map(since).unwrap_or(0),
        }
    } else {
        Latencies {
            kong: sample.kong_ms,
            proxy: -1,
            request: since(ctx.start),
            receive: 0,
        }
    };
    let started = SystemTime::now()
        .checked_sub(now.saturating_duration_since(ctx.start))
        .unwrap_or(UNIX_EPOCH);
    let loaded_at = snap.map_or(0, |s| s.log_entities.loaded_at);
    let route = ctx.route.and_then(|i| {
        let snap = snap?;
        snap.log_entities.route(i).or_else(|| {
            snap.routes
                .get(i)
                .map(|r| json!({ "id": r.id.to_string(), "ws_id": workspace_id() }))
        })
    });
    let service = ctx.service.and_then(|i| {
        let snap = snap?;
        snap.log_entities.service(i).or_else(|| {
            snap.services
                .get(i)
                .map(|s| json!({ "id": s.id.to_string(), "ws_id": workspace_id() }))
        })
    });
    let (request_uri, host) = uri_and_host(&kong.raw_target(), kong.header("host"));
    let response_headers = kong
        .response_written()
        .map(|r| {
            // nginx writes these itself; they are not among the headers
            // `ngx.resp.get_headers()` reads.
            header_table(
                r.headers.iter(),
                &["connection", "keep-alive", "transfer-encoding"],
            )
        })
        .unwrap_or_default();
    Facts {
        request_id: ctx.request_id.clone(),
        request_uri,
        scheme: kong.scheme(),
        host,
        port: ctx.host_port,
        querystring: query_table(&kong.raw_query()),
        method: kong.method().as_str().to_string(),
        request_headers: header_table(kong.headers().iter(), &[]),
        request_size: sample.ingress_bytes,
        upstream_uri: ctx.upstream_uri.clone(),
        upstream_status: upstream_status(&ctx.try_log, ctx.balancer.upstream_status),
        status: sample.status,
        response_headers,
        response_size: sample.egress_bytes,
        latencies,
        // Kong sets up `balancer_data` (and its empty `tries`) once the
        // request is routed, whether or not it is proxied.
        tries: ctx.route.map(|_| ctx.try_log.clone()),
        credential: kong.credential().map(|c| c.id),
        route,
        service,
        consumer: kong.consumer().map(|c| consumer_json(c, loaded_at)),
        client_ip: kong
            .remote_addr()
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        tls: ctx.conn.as_ref().and_then(|c| c.tls.as_ref()).map(|t| {
            (
                t.version.to_string(),
                crate::tls::openssl_cipher_name(t.cipher),
            )
        }),
        started_at: epoch_ms(started),
        from_service: kong.response_from_service(),
        extra: kong.serialize_values().cloned().unwrap_or_default(),
    }
}

/// nginx's `$request_uri` and `$host` for a request target: an
/// absolute-form target (`http://h:1/p?q`) gives its path and query, and
/// its host takes precedence over the `Host` header.
fn uri_and_host(target: &str, host_header: Option<&str>) -> (String, String) {
    use crate::proxy::forwarded::nginx_host;
    if !target.starts_with('/') {
        if let Some(i) = target.find("://") {
            let rest = &target[i + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let uri = match &rest[end..] {
                "" => "/".to_string(),
                r if r.starts_with('?') => format!("/{r}"),
                r => r.to_string(),
            };
            return (uri, nginx_host(Some(&rest[..end])));
        }
    }
    (target.to_string(), nginx_host(host_header))
}

fn try_json(t: &TryRecord, last: bool) -> Value {
    let mut m = Map::new();
    m.insert("balancer_start".into(), epoch_ms(t.start).into());
    m.insert("balancer_start_ns".into(), epoch_ns(t.start).into());
    m.insert("balancer_latency".into(), millis(t.latency).into());
    m.insert(
        "balancer_latency_ns".into(),
        u64::try_from(t.latency.as_nanos())
            .unwrap_or(u64::MAX)
            .into(),
    );
    m.insert("ip".into(), t.addr.ip().to_string().into());
    m.insert("port".into(), t.addr.port().into());
    // Kong records how a try failed when it starts the next one.
    if !last {
        if let Some((state, code)) = t.failure {
            m.insert("state".into(), state.into());
            m.insert("code".into(), code.into());
        }
    }
    Value::Object(m)
}

/// Kong's serialized table for `f`.
pub fn build(f: Facts) -> Value {
    let mut headers = f.request_headers;
    for name in ["authorization", "proxy-authorization"] {
        if let Some(v) = headers.get_mut(name) {
            *v = Value::String("REDACTED".into());
        }
    }
    let url = format!("{}://{}:{}{}", f.scheme, f.host, f.port, f.request_uri);
    let mut root = Map::new();
    let mut request = json!({
        "id": f.request_id,
        "uri": f.request_uri,
        "url": url,
        "querystring": f.querystring,
        "method": f.method,
        "headers": headers,
        "size": f.request_size,
    });
    // Kong's `build_tls_info`: only on TLS connections; no client
    // certificates are asked for, so `client_verify` is nginx's "NONE".
    if let (Some((version, cipher)), Some(obj)) = (f.tls, request.as_object_mut()) {
        obj.insert(
            "tls".into(),
            json!({ "version": version, "cipher": cipher, "client_verify": "NONE" }),
        );
    }
    root.insert("request".into(), request);
    root.insert("upstream_uri".into(), f.upstream_uri.into());
    root.insert("upstream_status".into(), f.upstream_status.into());
    root.insert(
        "response".into(),
        json!({
            "status": f.status,
            "headers": f.response_headers,
            "size": f.response_size,
        }),
    );
    root.insert(
        "latencies".into(),
        json!({
            "kong": f.latencies.kong,
            "proxy": f.latencies.proxy,
            "request": f.latencies.request,
            "receive": f.latencies.receive,
        }),
    );
    if let Some(tries) = &f.tries {
        let n = tries.len();
        let list = tries
            .iter()
            .enumerate()
            .map(|(i, t)| try_json(t, i + 1 == n))
            .collect();
        root.insert("tries".into(), Value::Array(list));
    }
    // Kong's `{id = credential.id, consumer_id = credential.consumer_id}`:
    // DAO credentials carry `consumer = {id}`, never `consumer_id`, so only
    // the id shows.
    if let Some(id) = f.credential {
        root.insert(
            "authenticated_entity".into(),
            json!({ "id": id.to_string() }),
        );
    }
    for (key, v) in [
        ("route", f.route),
        ("service", f.service),
        ("consumer", f.consumer),
    ] {
        if let Some(v) = v {
            root.insert(key.into(), v);
        }
    }
    root.insert("client_ip".into(), f.client_ip.into());
    root.insert("started_at".into(), f.started_at.into());
    let source = if f.from_service { "upstream" } else { "kong" };
    root.insert("source".into(), source.into());
    root.insert("workspace".into(), workspace_id().into());
    root.insert("workspace_name".into(), WORKSPACE_NAME.into());
    merge(&mut root, f.extra);
    Value::Object(root)
}

/// Applies `kong.log.set_serialize_value` entries: dotted keys were split
/// into nested objects when set, so an object merges into an existing one
/// and anything else replaces the value.
fn merge(into: &mut Map<String, Value>, extra: Map<String, Value>) {
    for (k, v) in extra {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(existing)), Value::Object(more)) => merge(existing, more),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Ports of `spec/01-unit/10-log_serializer_spec.lua` (#http) onto
    //! [`build`]: the spec mocks `ngx`, these give the same facts.
    use super::*;

    fn base() -> Facts {
        let mut req_headers = Map::new();
        req_headers.insert("header1".into(), "header1".into());
        req_headers.insert("header2".into(), "header2".into());
        req_headers.insert("authorization".into(), "authorization".into());
        let mut resp_headers = Map::new();
        resp_headers.insert("header1".into(), "respheader1".into());
        resp_headers.insert("header2".into(), "respheader2".into());
        resp_headers.insert("set-cookie".into(), "delicious=delicacy".into());
        Facts {
            request_id: "1234".into(),
            request_uri: "/request_uri".into(),
            scheme: "http",
            host: "test.test".into(),
            port: 80,
            querystring: query_table("arg1&arg2"),
            method: "POST".into(),
            request_headers: req_headers,
            request_size: 200,
            upstream_uri: "/upstream_uri".into(),
            upstream_status: "500, 200 : 200, 200".into(),
            status: 200,
            response_headers: resp_headers,
            response_size: 99,
            latencies: Latencies {
                kong: 200,
                proxy: -1,
                request: 2000,
                receive: 100,
            },
            tries: Some(vec![TryRecord {
                start: UNIX_EPOCH + Duration::from_millis(3),
                latency: Duration::from_millis(1),
                addr: "127.0.0.1:8000".parse().unwrap(),
                failure: None,
            }]),
            credential: None,
            route: None,
            service: None,
            consumer: None,
            client_ip: "1.1.1.1".into(),
            tls: None,
            started_at: 3000,
            from_service: true,
            extra: Map::new(),
        }
    }

    #[test]
    fn serializes_without_api_consumer_or_authenticated_entity() {
        let res = build(base());
        assert_eq!(res["client_ip"], "1.1.1.1");
        assert_eq!(res["started_at"], 3000);
        assert_eq!(
            res["latencies"],
            json!({"kong": 200, "proxy": -1, "request": 2000, "receive": 100})
        );
        assert_eq!(
            res["request"]["headers"],
            json!({"header1": "header1", "header2": "header2", "authorization": "REDACTED"})
        );
        assert_eq!(res["request"]["method"], "POST");
        assert_eq!(
            res["request"]["querystring"],
            json!({"arg1": true, "arg2": true})
        );
        assert_eq!(res["request"]["url"], "http://test.test:80/request_uri");
        assert_eq!(res["upstream_uri"], "/upstream_uri");
        assert_eq!(res["upstream_status"], "500, 200 : 200, 200");
        assert_eq!(res["request"]["size"], 200);
        assert_eq!(res["request"]["uri"], "/request_uri");
        assert_eq!(res["request"]["id"], "1234");
        assert_eq!(
            res["response"]["headers"],
            json!({"header1": "respheader1", "header2": "respheader2", "set-cookie": "delicious=delicacy"})
        );
        assert_eq!(res["response"]["size"], 99);
        assert!(res.get("api").is_none());
        assert!(res.get("consumer").is_none());
        assert!(res.get("authenticated_entity").is_none());
        assert!(res["tries"].is_array());
        assert_eq!(res["source"], "upstream");
        assert_eq!(res["workspace_name"], "default");
        assert_eq!(res["workspace"], workspace_id());
    }

    #[test]
    fn uses_the_port_map_for_the_request_url() {
        let mut f = base();
        f.port = 5000;
        assert_eq!(
            build(f)["request"]["url"],
            "http://test.test:5000/request_uri"
        );
    }

    #[test]
    fn serializes_the_matching_route_and_service() {
        let mut f = base();
        f.route = Some(json!({"id": "my_route"}));
        f.service = Some(json!({"id": "my_service"}));
        let res = build(f);
        assert_eq!(res["route"]["id"], "my_route");
        assert_eq!(res["service"]["id"], "my_service");
        assert!(res.get("consumer").is_none());
        assert!(res.get("authenticated_entity").is_none());
    }

    #[test]
    fn serializes_the_consumer_object() {
        let mut f = base();
        let c = ConsumerRt {
            id: Uuid::from_u128(7),
            username: Some("bob".into()),
            custom_id: None,
            tags: Vec::new(),
        };
        f.consumer = Some(consumer_json(&c, 42));
        let res = build(f);
        assert_eq!(res["consumer"]["id"], Uuid::from_u128(7).to_string());
        assert_eq!(res["consumer"]["username"], "bob");
        assert_eq!(res["consumer"]["created_at"], 42);
        assert!(res["consumer"].get("custom_id").is_none());
        assert!(res.get("authenticated_entity").is_none());
    }

    #[test]
    fn serializes_the_authenticated_entity_as_real_kong_does() {
        // The spec feeds `consumer_id`; real credentials carry `consumer =
        // {id}`, so Kong logs the id alone.
        let mut f = base();
        f.credential = Some(Uuid::from_u128(9));
        let res = build(f);
        assert_eq!(
            res["authenticated_entity"],
            json!({"id": Uuid::from_u128(9).to_string()})
        );
        assert!(res.get("consumer").is_none());
    }

    #[test]
    fn serializes_the_tries_and_failure_information() {
        let mut f = base();
        let at = |failure| TryRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            latency: Duration::from_micros(1500),
            addr: "127.0.0.1:1234".parse().unwrap(),
            failure,
        };
        f.tries = Some(vec![
            at(Some(("failed", 502))),
            at(Some(("failed", 504))),
            at(None),
        ]);
        let res = build(f);
        let tries = res["tries"].as_array().unwrap();
        assert_eq!(tries.len(), 3);
        assert_eq!(tries[0]["state"], "failed");
        assert_eq!(tries[0]["code"], 502);
        assert_eq!(tries[1]["code"], 504);
        for t in tries {
            assert_eq!(t["ip"], "127.0.0.1");
            assert_eq!(t["port"], 1234);
            assert_eq!(t["balancer_start"], 1_700_000_000_123u64);
            assert_eq!(t["balancer_start_ns"], 1_700_000_000_123_000_000u64);
            assert_eq!(t["balancer_latency"], 1);
            assert_eq!(t["balancer_latency_ns"], 1_500_000);
        }
        assert!(tries[2].get("state").is_none());
        assert!(tries[2].get("code").is_none());
    }

    #[test]
    fn the_last_try_shows_no_failure_but_upstream_status_lists_it() {
        let t = |failure| TryRecord {
            start: UNIX_EPOCH,
            latency: Duration::ZERO,
            addr: "127.0.0.1:1".parse().unwrap(),
            failure,
        };
        assert_eq!(upstream_status(&[], None), "");
        assert_eq!(upstream_status(&[t(None)], Some(200)), "200");
        assert_eq!(
            upstream_status(&[t(Some(("failed", 502))), t(None)], Some(200)),
            "502, 200"
        );
        assert_eq!(
            upstream_status(&[t(Some(("failed", 504))), t(Some(("failed", 502)))], None),
            "504, 502"
        );
    }

    #[test]
    fn serializes_the_response_source() {
        let mut f = base();
        f.from_service = false;
        assert_eq!(build(f)["source"], "kong");
    }

    #[test]
    fn does_not_fail_when_the_balancer_data_is_missing() {
        let mut f = base();
        f.tries = None;
        assert!(build(f).get("tries").is_none());
    }

    #[test]
    fn an_unproxied_routed_request_has_an_empty_tries_array() {
        // spec/03-plugins/01-tcp-log "tries field encoded as JSON array
        // instead of object #6390".
        let mut f = base();
        f.tries = Some(Vec::new());
        assert!(build(f).to_string().contains("\"tries\":[]"));
    }

    #[test]
    fn handles_json_null_and_nested_serialize_values() {
        let mut f = base();
        f.extra.insert("response".into(), json!({"body": null}));
        f.extra.insert("new_field".into(), json!(123));
        f.extra
            .insert("request".into(), json!({"headers": {"x": "y"}}));
        let res = build(f);
        assert_eq!(res["response"]["body"], Value::Null);
        assert_eq!(res["response"]["status"], 200);
        assert_eq!(res["new_field"], 123);
        assert_eq!(res["request"]["headers"]["x"], "y");
        assert_eq!(res["request"]["headers"]["header1"], "header1");
    }

    #[test]
    fn request_uri_and_host_as_nginx_sets_them() {
        assert_eq!(
            uri_and_host("/a?b", Some("Example.TEST:8000")),
            ("/a?b".to_string(), "example.test".to_string())
        );
        assert_eq!(
            uri_and_host("/", None),
            ("/".to_string(), "kong".to_string())
        );
        assert_eq!(
            uri_and_host("http://Other.test:81/p?q=1", Some("example.test")),
            ("/p?q=1".to_string(), "other.test".to_string())
        );
        assert_eq!(
            uri_and_host("http://other.test", Some("example.test")),
            ("/".to_string(), "other.test".to_string())
        );
    }

    #[test]
    fn query_tables_decode_like_nginx() {
        assert_eq!(query_table(""), json!({}));
        assert_eq!(
            query_table("a=1&b&a=2&c=&d=x+y%21&=z&e=%zz"),
            json!({"a": ["1", "2"], "b": true, "c": "", "d": "x y!", "e": "%zz"})
        );
    }

    #[test]
    fn repeated_headers_become_arrays() {
        let mut h = http::HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("x-b", "3".parse().unwrap());
        h.append("connection", "close".parse().unwrap());
        assert_eq!(
            Value::Object(header_table(h.iter(), &["connection"])),
            json!({"x-a": ["1", "2"], "x-b": "3"})
        );
    }

    #[test]
    fn entity_rows_keep_kongs_fields() {
        let cfg = config_sync::parse_declarative_str(
            r#"
_format_version: "3.0"
services:
- name: s1
  url: http://example.test:8080/p
  routes:
  - name: r1
    paths: ["/a"]
    methods: ["GET"]
plugins:
- name: file-log
  config: { path: /tmp/x.log }
"#,
            &config_sync::ParseOptions::with_plugins(["file-log"]),
        )
        .unwrap();
        let routes: Vec<RouteRt> = Vec::new();
        let e = Entities::compile(&cfg, &routes);
        assert_eq!(e.services.len(), 1);
        assert!(e.service(0).is_some());
        let r = route_json(&cfg.routes[0], 5);
        assert_eq!(r["name"], "r1");
        assert_eq!(r["paths"], json!(["/a"]));
        assert_eq!(r["methods"], json!(["GET"]));
        assert_eq!(r["strip_path"], true);
        assert_eq!(r["service"]["id"], cfg.services[0].id.to_string());
        assert!(r.get("hosts").is_none());
        let s = service_json(&cfg.services[0], 5);
        assert_eq!(s["host"], "example.test");
        assert_eq!(s["port"], 8080);
        assert_eq!(s["path"], "/p");
        assert_eq!(s["protocol"], "http");
        assert_eq!(s["created_at"], 5);
        assert_eq!(s["ws_id"], workspace_id());
    }
}
