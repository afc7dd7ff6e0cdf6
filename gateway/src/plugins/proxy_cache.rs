//! The `proxy-cache` plugin (Kong's `kong/plugins/proxy-cache`) with its
//! `memory` strategy: access looks the request's cache key up and answers a
//! hit from the store; header_filter decides whether the upstream's answer
//! may be stored; body_filter collects it and stores it at the last chunk.
//!
//! The store is Kong's shared dict (`ngx.shared[memory.dictionary_name]`):
//! one per dictionary name, process-wide, outside any config snapshot
//! ([`CacheStores`]), bounded in bytes with least-recently-used eviction
//! and a TTL per entry, as `lua_shared_dict` is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use config_sync::schema::{
    array, boolean, integer, record, string, PluginSchema, Record, PROTOCOLS_HTTP,
};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES};
use http::{HeaderMap, HeaderValue};
use pingora::http::{HeaderNameVariant, ResponseHeader};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http_log::PROTOCOLS_ALL;
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "proxy-cache";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 100,
    version: VERSION,
    schema,
    build,
};

/// Kong's answer to a Lua error in a handler (`kong/init.lua` turns it into
/// `kong.response.error(500, ...)`).
const UNEXPECTED: &str = "An unexpected error occurred";

/// `lua_max_uri_args`: `kong.request.get_query()` reads at most this many.
const MAX_URI_ARGS: usize = 100;

const MIB: u64 = 1024 * 1024;

/// Kong's `mem_cache_size` default (`kong/templates/kong_defaults.lua`).
pub const DEFAULT_MEM_CACHE_SIZE: u64 = 128 * MIB;

/// The `lua_shared_dict`s of Kong's http subsystem and their sizes
/// (`kong/templates/nginx_kong.lua:15-24`; `None` is `mem_cache_size`),
/// plus `prometheus_metrics`, which Kong's conf loader injects when the
/// prometheus plugin is loaded. `kong_dns_cache` exists only with
/// `new_dns_client = on` (default off).
const SHARED_DICTS: &[(&str, Option<u64>)] = &[
    ("kong", Some(5 * MIB)),
    ("kong_locks", Some(8 * MIB)),
    ("kong_healthchecks", Some(5 * MIB)),
    ("kong_cluster_events", Some(5 * MIB)),
    ("kong_rate_limiting_counters", Some(12 * MIB)),
    ("kong_core_db_cache", None),
    ("kong_core_db_cache_miss", Some(12 * MIB)),
    ("kong_db_cache", None),
    ("kong_db_cache_miss", Some(12 * MIB)),
    ("kong_secrets", Some(5 * MIB)),
    ("prometheus_metrics", Some(5 * MIB)),
];

// ---------------------------------------------------------------------------
// schema (`kong/plugins/proxy-cache/schema.lua`)

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            (
                "response_code",
                array(integer().between(100.0, 900.0))
                    .default(json!([200, 301, 404]))
                    .len_min(1)
                    .required(),
            ),
            (
                "request_method",
                array(string().one_of(&["HEAD", "GET", "POST", "PATCH", "PUT"]))
                    .default(json!(["GET", "HEAD"]))
                    .required(),
            ),
            (
                "content_type",
                array(string())
                    .default(json!(["text/plain", "application/json"]))
                    .required(),
            ),
            ("cache_ttl", integer().default(300).gt(0.0)),
            ("strategy", string().one_of(&["memory"]).required()),
            ("cache_control", boolean().default(false).required()),
            ("ignore_uri_case", boolean().default(false)),
            ("storage_ttl", integer()),
            (
                "memory",
                record(vec![(
                    "dictionary_name",
                    string().required().default("kong_db_cache"),
                )]),
            ),
            ("vary_query_params", array(string())),
            ("vary_headers", array(string())),
            (
                "response_headers",
                record(vec![
                    ("age", boolean().default(true)),
                    ("X-Cache-Status", boolean().default(true)),
                    ("X-Cache-Key", boolean().default(true)),
                ]),
            ),
        ]),
        // `typedefs.protocols`: any protocol, http ones by default.
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_ALL,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: vec![check_shdict_entity],
    }
}

/// Kong's `check_shdict`: `ngx.shared[name]` must exist.
fn check_shdict(name: &str) -> Result<(), String> {
    if SHARED_DICTS.iter().any(|(n, _)| *n == name) {
        Ok(())
    } else {
        Err(format!("missing shared dict '{name}'"))
    }
}

/// The schema's `custom_entity_check` on `config`: the memory strategy's
/// dictionary must be one nginx defines.
fn check_shdict_entity(entity: &Map<String, Value>) -> Result<(), String> {
    let config = entity.get("config");
    let strategy = config
        .and_then(|c| c.get("strategy"))
        .and_then(Value::as_str);
    if strategy != Some("memory") {
        return Ok(());
    }
    match config
        .and_then(|c| c.get("memory"))
        .and_then(|m| m.get("dictionary_name"))
        .and_then(Value::as_str)
    {
        Some(name) => check_shdict(name),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// config

#[derive(Debug, Deserialize)]
struct Memory {
    #[serde(default = "default_dict")]
    dictionary_name: String,
}

fn default_dict() -> String {
    "kong_db_cache".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct ResponseHeaders {
    #[serde(default = "yes")]
    age: bool,
    #[serde(rename = "X-Cache-Status", default = "yes")]
    x_cache_status: bool,
    #[serde(rename = "X-Cache-Key", default = "yes")]
    x_cache_key: bool,
}

#[derive(Debug, Deserialize)]
struct Config {
    response_code: Vec<i64>,
    request_method: Vec<String>,
    content_type: Vec<String>,
    cache_ttl: i64,
    cache_control: bool,
    #[serde(default)]
    ignore_uri_case: Option<bool>,
    #[serde(default)]
    storage_ttl: Option<i64>,
    memory: Memory,
    #[serde(default)]
    vary_query_params: Option<Vec<String>>,
    #[serde(default)]
    vary_headers: Option<Vec<String>>,
    response_headers: ResponseHeaders,
}

/// A configured content type, parsed once (`None`: Kong's parser refuses
/// it and the entry never matches).
type ExpectedType = Option<MimeType>;

struct ProxyCache {
    conf: Config,
    content_types: Vec<ExpectedType>,
    /// The instance's dictionary, looked up in the process's stores on
    /// first use (the stores outlive this instance).
    store: OnceLock<Option<Arc<MemoryStore>>>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Config = serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    check_shdict(&conf.memory.dictionary_name)?;
    let content_types = conf
        .content_type
        .iter()
        .map(|c| parse_mime_type(c.as_bytes()))
        .collect();
    Ok(Arc::new(ProxyCache {
        conf,
        content_types,
        store: OnceLock::new(),
    }))
}

// ---------------------------------------------------------------------------
// Lua values the handler compares

/// Lua's (C's) `isspace`, also PCRE's `\s`.
const LUA_SPACE: [char; 6] = [' ', '\t', '\n', '\r', '\x0b', '\x0c'];

/// `tonumber(s)` for the strings a header gives: decimal or hex, optional
/// sign, surrounding whitespace allowed; `None` otherwise.
fn lua_tonumber(s: &str) -> Option<f64> {
    let t = s.trim_matches(LUA_SPACE);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()? as f64
    } else {
        // Rust's parser also takes `inf` and `nan`, Lua's does not.
        let ok = !digits.is_empty()
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            && digits
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit() || b == b'.');
        if !ok {
            return None;
        }
        digits.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// One directive of a parsed `Cache-Control`: `tonumber(v) or v or true`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Directive {
    Flag,
    Num(f64),
    Str(String),
}

impl Directive {
    /// The value in a Lua comparison with a number: anything else is a Lua
    /// error ("attempt to compare ...").
    fn number(&self) -> Result<f64, LuaError> {
        match self {
            Directive::Num(n) => Ok(*n),
            _ => Err(LuaError("attempt to compare a non-number directive")),
        }
    }
}

/// A Lua runtime error the handler would raise in Kong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LuaError(&'static str);

pub(crate) type Directives = HashMap<String, Directive>;

/// Kong's `parse_directive_header` (`kong/tools/http.lua`): each run of
/// non-commas is matched with `^\s*([^=]+)(?:=(.+))?`; the name is
/// lower-cased (trailing blanks kept), the value is a number when it looks
/// like one. A run the pattern refuses (one starting with `=`) repeats the
/// previous match, or is a Lua error when it comes first (`lower(nil)`).
pub(crate) fn parse_directive_header(h: Option<&str>) -> Result<Directives, LuaError> {
    let mut t = Directives::new();
    let Some(h) = h else { return Ok(t) };
    let mut last: Option<(String, Directive)> = None;
    for seg in h.split(',').filter(|s| !s.is_empty()) {
        let body = seg.trim_start_matches(LUA_SPACE);
        let matched = if body.is_empty() || body.starts_with('=') {
            // `\s*` gives back a blank for `[^=]+` when there is one.
            let lead = &seg[..seg.len() - body.len()];
            lead.chars()
                .last()
                .map(|c| name_value(&c.to_string(), body.strip_prefix('=')))
        } else {
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            Some(name_value(name, value))
        };
        match matched {
            Some(m) => last = Some(m),
            None if last.is_none() => return Err(LuaError("bad argument #1 to 'lower'")),
            None => {}
        }
        if let Some((k, v)) = &last {
            t.insert(k.clone(), v.clone());
        }
    }
    Ok(t)
}

fn name_value(name: &str, value: Option<&str>) -> (String, Directive) {
    // `(.+)`: an empty value does not match, the directive is a flag.
    let d = match value.filter(|v| !v.is_empty()) {
        None => Directive::Flag,
        Some(v) => match lua_tonumber(v) {
            Some(n) => Directive::Num(n),
            None => Directive::Str(v.to_string()),
        },
    };
    (name.to_ascii_lowercase(), d)
}

/// `ngx.parse_http_time`: an HTTP date (RFC 1123, RFC 850 or asctime) as
/// seconds since the epoch. The `httpdate` crate parses the three forms;
/// unlike nginx it also checks the weekday and the `GMT` zone, so a
/// malformed `Expires` counts as none.
pub(crate) fn parse_http_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Kong's `calculate_resource_ttl` (`kong/tools/http.lua`): `s-maxage`,
/// else `max-age`, else `Expires` minus now; never below 0. A directive
/// that is not a number is a Lua error (`math.max`).
fn calculate_resource_ttl(
    cc: &Directives,
    expires: Option<&[u8]>,
    now: i64,
) -> Result<f64, LuaError> {
    let max_age = match cc.get("s-maxage").or_else(|| cc.get("max-age")) {
        Some(d) => Some(d.number()?),
        None => {
            // `parse_http_time(tostring(expires))`: "nil" parses to nothing.
            let exp = expires.and_then(parse_http_time);
            exp.map(|t| (t - now) as f64)
        }
    };
    Ok(max_age.map_or(0.0, |m| m.max(0.0)))
}

// ---------------------------------------------------------------------------
// content types (`kong/tools/mime_type.lua`)

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MimeType {
    pub(crate) ty: String,
    pub(crate) subtype: String,
    pub(crate) params: HashMap<String, String>,
}

fn is_token_char(b: u8) -> bool {
    b < 128 && b > 31 && b != 127 && !b"()<>@,;:\\\"/[]?={} \t".contains(&b)
}

/// Kong's `parse_mime_type`, an LPeg grammar: `type/subtype` tokens (or
/// `*`), lower-cased, then `; attribute=value` parameters (value a token
/// or a quoted string, kept as written), and nothing else.
pub(crate) fn parse_mime_type(s: &[u8]) -> Option<MimeType> {
    let token = |from: usize| {
        let n = s[from..].iter().take_while(|b| is_token_char(**b)).count();
        (n > 0).then_some(from + n)
    };
    let text = |a: usize, b: usize| String::from_utf8_lossy(&s[a..b]).into_owned();
    let (ty, subtype, mut p) = match token(0) {
        Some(e1) if s.get(e1) == Some(&b'/') => match token(e1 + 1) {
            Some(e2) => (
                text(0, e1).to_ascii_lowercase(),
                text(e1 + 1, e2).to_ascii_lowercase(),
                e2,
            ),
            None => star(s)?,
        },
        _ => star(s)?,
    };
    let mut params = HashMap::new();
    // One more `spacing ";" spacing attribute "=" value`, all or nothing.
    while let Some((key, value, next)) = parameter(s, p) {
        params.insert(key.to_ascii_lowercase(), value);
        p = next;
    }
    (p == s.len()).then_some(MimeType {
        ty,
        subtype,
        params,
    })
}

/// The grammar's other alternative: `*` alone is `*/*`.
fn star(s: &[u8]) -> Option<(String, String, usize)> {
    (s.first() == Some(&b'*')).then(|| ("*".to_string(), "*".to_string(), 1))
}

fn parameter(s: &[u8], mut p: usize) -> Option<(String, String, usize)> {
    let spacing = |mut p: usize| {
        while matches!(s.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        p
    };
    p = spacing(p);
    if s.get(p) != Some(&b';') {
        return None;
    }
    p = spacing(p + 1);
    let a = p;
    while s.get(p).is_some_and(|b| is_token_char(*b)) {
        p += 1;
    }
    if p == a || s.get(p) != Some(&b'=') {
        return None;
    }
    let key = String::from_utf8_lossy(&s[a..p]).into_owned();
    p += 1;
    let v = p;
    while s.get(p).is_some_and(|b| is_token_char(*b)) {
        p += 1;
    }
    if p > v {
        return Some((key, String::from_utf8_lossy(&s[v..p]).into_owned(), p));
    }
    // quoted-string: `qdtext` (any byte but CTLs and `"`) is tried before
    // `quoted-pair`, so a backslash never escapes the closing quote.
    if s.get(p) != Some(&b'"') {
        return None;
    }
    p += 1;
    let q = p;
    while s.get(p).is_some_and(|&b| b != b'"' && b > 31 && b != 127) {
        p += 1;
    }
    if s.get(p) != Some(&b'"') {
        return None;
    }
    Some((key, String::from_utf8_lossy(&s[q..p]).into_owned(), p + 1))
}

/// `cacheable_response`'s content type test: type and subtype equal or
/// `*`, the same parameters with the same values.
fn content_type_matches(expected: &[ExpectedType], content_type: &[u8]) -> bool {
    let got = parse_mime_type(content_type);
    let empty = HashMap::new();
    let (t, sub, params) = match &got {
        Some(m) => (Some(m.ty.as_str()), Some(m.subtype.as_str()), &m.params),
        None => (None, None, &empty),
    };
    expected.iter().flatten().any(|exp| {
        (exp.ty == "*" || t == Some(exp.ty.as_str()))
            && (exp.subtype == "*" || sub == Some(exp.subtype.as_str()))
            && exp.params.iter().all(|(k, v)| params.get(k) == Some(v))
            && params.len() == exp.params.len()
    })
}

// ---------------------------------------------------------------------------
// cache key (`kong/plugins/proxy-cache/cache_key.lua`)

/// One value of `kong.request.get_query()` / `get_headers()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArgValue {
    /// `?flag` (Lua `true`).
    Flag,
    One(Vec<u8>),
    /// Repeated: each a string, or `true` for a repeated flag.
    Many(Vec<Option<Vec<u8>>>),
}

impl ArgValue {
    fn push(&mut self, v: Option<Vec<u8>>) {
        let first = match std::mem::replace(self, ArgValue::Many(Vec::new())) {
            ArgValue::Flag => None,
            ArgValue::One(s) => Some(s),
            ArgValue::Many(mut list) => {
                list.push(v);
                *self = ArgValue::Many(list);
                return;
            }
        };
        *self = ArgValue::Many(vec![first, v]);
    }
}

/// Decodes a query component as nginx's args (`+` is a space; a `%` not
/// followed by two hex digits stays as is), as bytes.
fn unescape_component(s: &[u8]) -> Vec<u8> {
    let plus: Vec<u8> = s
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus).collect()
}

/// `kong.request.get_query()` (`ngx.req.get_uri_args(100)`): keys without
/// `=` are flags, empty keys are dropped, repeated keys give lists; at most
/// 100 `&`-ended arguments are read.
pub(crate) fn parse_query(raw: &[u8]) -> Vec<(Vec<u8>, ArgValue)> {
    let mut out: Vec<(Vec<u8>, ArgValue)> = Vec::new();
    let mut add = |k: Vec<u8>, v: Option<Vec<u8>>| {
        if k.is_empty() {
            return;
        }
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some((_, existing)) => existing.push(v),
            None => out.push((
                k,
                match v {
                    Some(v) => ArgValue::One(v),
                    None => ArgValue::Flag,
                },
            )),
        }
    };
    let mut count = 0usize;
    let mut parts = raw.split(|&b| b == b'&').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if last && part.is_empty() {
            break;
        }
        match part.iter().position(|&b| b == b'=') {
            Some(i) => add(
                unescape_component(&part[..i]),
                Some(unescape_component(&part[i + 1..])),
            ),
            None => add(unescape_component(part), None),
        }
        if !last {
            count += 1;
            if count == MAX_URI_ARGS {
                break;
            }
        }
    }
    out
}

/// `generate_key_from`: `field=value` for each field that has a value, in
/// the order of `fields`, joined by `:`; lists sorted and joined by `,`,
/// flags as the bare field. Sorting or joining a list holding `true` is a
/// Lua error.
fn generate_key_from(
    lookup: impl Fn(&[u8]) -> Option<ArgValue>,
    fields: &[&[u8]],
) -> Result<Vec<u8>, LuaError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for field in fields {
        let Some(arg) = lookup(field) else {
            continue;
        };
        let mut part = field.to_vec();
        match arg {
            ArgValue::Flag => {}
            ArgValue::One(v) => {
                part.push(b'=');
                part.extend_from_slice(&v);
            }
            ArgValue::Many(list) => {
                let mut vals: Vec<Vec<u8>> = list
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or(LuaError("attempt to compare boolean with string"))?;
                vals.sort();
                part.push(b'=');
                part.extend_from_slice(&vals.join(&b","[..]));
            }
        }
        parts.push(part);
    }
    Ok(parts.join(&b":"[..]))
}

/// `params_key`: every query argument by sorted name, or only the
/// `vary_query_params` in their configured order.
pub(crate) fn params_key(
    params: &[(Vec<u8>, ArgValue)],
    vary: Option<&[String]>,
) -> Result<Vec<u8>, LuaError> {
    let lookup = |name: &[u8]| {
        params
            .iter()
            .find(|(k, _)| k.as_slice() == name)
            .map(|(_, v)| v.clone())
    };
    match vary.filter(|v| !v.is_empty()) {
        Some(fields) => {
            let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
            generate_key_from(lookup, &fields)
        }
        None => {
            let mut keys: Vec<&[u8]> = params.iter().map(|(k, _)| k.as_slice()).collect();
            keys.sort();
            generate_key_from(lookup, &keys)
        }
    }
}

/// `kong.request.get_headers()[field]`: names are stored lower-cased, and a
/// missing name is retried lower-cased with `_` as `-` (the headers
/// table's metatable).
fn header_arg(headers: &HeaderMap, field: &str) -> Option<ArgValue> {
    let direct = || -> Option<ArgValue> {
        if field.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut values = headers.get_all(field).iter();
        let first = values.next()?.as_bytes().to_vec();
        let rest: Vec<Option<Vec<u8>>> = values.map(|v| Some(v.as_bytes().to_vec())).collect();
        if rest.is_empty() {
            return Some(ArgValue::One(first));
        }
        let mut all = vec![Some(first)];
        all.extend(rest);
        Some(ArgValue::Many(all))
    };
    if let Some(v) = direct() {
        return Some(v);
    }
    let normalized = field.to_ascii_lowercase().replace('_', "-");
    if normalized == field {
        return None;
    }
    header_arg(headers, &normalized)
}

/// `headers_key`: only the `vary_headers`, in their configured order.
pub(crate) fn headers_key(
    headers: &HeaderMap,
    vary: Option<&[String]>,
) -> Result<Vec<u8>, LuaError> {
    match vary.filter(|v| !v.is_empty()) {
        Some(fields) => {
            let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
            let lookup = |f: &[u8]| header_arg(headers, &String::from_utf8_lossy(f));
            generate_key_from(lookup, &fields)
        }
        None => Ok(Vec::new()),
    }
}

/// `prefix_uuid`: `consumer:route`, `route`, or `default`.
pub(crate) fn prefix_uuid(consumer_id: Option<&str>, route_id: Option<&str>) -> String {
    match (consumer_id, route_id) {
        (Some(c), Some(r)) => format!("{c}:{r}"),
        (None, Some(r)) => r.to_string(),
        _ => "default".to_string(),
    }
}

/// `build_cache_key`: `sha256_hex("prefix|method|uri|params|headers")`.
pub(crate) fn build_cache_key(
    prefix: &str,
    method: &str,
    uri: &[u8],
    params: &[u8],
    headers: &[u8],
) -> String {
    let mut s = Vec::with_capacity(prefix.len() + method.len() + uri.len() + params.len() + 80);
    s.extend_from_slice(prefix.as_bytes());
    s.push(b'|');
    s.extend_from_slice(method.as_bytes());
    s.push(b'|');
    s.extend_from_slice(uri);
    s.push(b'|');
    s.extend_from_slice(params);
    s.push(b'|');
    s.extend_from_slice(headers);
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &s))
}

/// The handler's `uri`: nginx's `$request` (the request line) with
/// everything from the first `?` removed, lower-cased for
/// `ignore_uri_case`.
pub(crate) fn request_line_uri(method: &str, target: &[u8], version: &str, lower: bool) -> Vec<u8> {
    let mut uri = Vec::with_capacity(method.len() + target.len() + 10);
    uri.extend_from_slice(method.as_bytes());
    uri.push(b' ');
    match target.iter().position(|&b| b == b'?') {
        Some(i) => uri.extend_from_slice(&target[..i]),
        None => {
            uri.extend_from_slice(target);
            uri.push(b' ');
            uri.extend_from_slice(version.as_bytes());
        }
    }
    if lower {
        uri.make_ascii_lowercase();
    }
    uri
}

fn http_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

// ---------------------------------------------------------------------------
// the memory strategy's store

/// One stored response (the memory strategy's JSON object).
#[derive(Debug)]
pub struct CachedResponse {
    pub status: u16,
    /// As the response carried them at the plugin's header_filter, names
    /// spelled as sent, one entry per line.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `ngx.time()` when stored.
    pub timestamp: i64,
    /// The freshness lifetime (`res.ttl`).
    pub ttl: f64,
    /// How long the dictionary keeps it (`None`: until evicted).
    expire: Option<Duration>,
    /// Bytes it takes in the dictionary, roughly.
    weight: u32,
}

/// Per-entry expiry: the TTL given to `dict:set`, renewed on every set.
struct StorageTtl;

impl moka::Expiry<String, Arc<CachedResponse>> for StorageTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _created_at: Instant,
    ) -> Option<Duration> {
        value.expire
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.expire
    }
}

/// One shared dictionary: least-recently-used entries go first when the
/// next one does not fit, as in `ngx.shared.DICT:set`.
pub struct MemoryStore {
    capacity: u64,
    cache: moka::sync::Cache<String, Arc<CachedResponse>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// Per-entry bookkeeping of a shared dict node, roughly.
const ENTRY_OVERHEAD: u64 = 64;

impl MemoryStore {
    pub fn new(capacity: u64) -> MemoryStore {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k: &String, v: &Arc<CachedResponse>| v.weight)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(StorageTtl)
            .build();
        MemoryStore { capacity, cache }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// `strategy:fetch(key)`.
    pub fn fetch(&self, key: &str) -> Option<Arc<CachedResponse>> {
        self.cache.get(key)
    }

    /// `strategy:store(key, res, ttl)`: `ttl` 0 keeps it until evicted.
    /// Refused (`false`) when it cannot fit in the dictionary at all.
    pub fn store(&self, key: String, mut res: CachedResponse, ttl: f64) -> bool {
        let size = ENTRY_OVERHEAD
            + key.len() as u64
            + res.body.len() as u64
            + res
                .headers
                .iter()
                .map(|(k, v)| (k.len() + v.len() + 8) as u64)
                .sum::<u64>();
        if size > self.capacity || ttl.is_nan() || ttl < 0.0 {
            return false;
        }
        res.weight = u32::try_from(size).unwrap_or(u32::MAX);
        res.expire = (ttl > 0.0).then(|| Duration::from_secs_f64(ttl.min(1e9)));
        self.cache.insert(key, Arc::new(res));
        // Keep the bound now rather than on moka's next housekeeping: a
        // store only happens on a miss.
        self.cache.run_pending_tasks();
        true
    }

    /// `strategy:purge(key)`.
    pub fn purge(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Bytes the live entries take.
    pub fn used(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

/// The memory strategy's stores, by `memory.dictionary_name` (Kong's
/// `ngx.shared[dictionary_name]`: instances naming the same dictionary
/// share it); held by `PluginEnv::caches`, outside any config snapshot, so
/// entries survive config pushes. Created on first use.
#[derive(Debug)]
pub struct CacheStores {
    /// Size of the dictionaries Kong sizes with `mem_cache_size`.
    mem_cache_size: u64,
    dicts: Mutex<HashMap<&'static str, Arc<MemoryStore>>>,
}

impl Default for CacheStores {
    fn default() -> CacheStores {
        CacheStores::new(DEFAULT_MEM_CACHE_SIZE)
    }
}

impl CacheStores {
    pub fn new(mem_cache_size: u64) -> CacheStores {
        CacheStores {
            mem_cache_size,
            dicts: Mutex::new(HashMap::new()),
        }
    }

    /// The dictionary `name`, if nginx would define it.
    pub fn dict(&self, name: &str) -> Option<Arc<MemoryStore>> {
        let (name, size) = SHARED_DICTS.iter().find(|(n, _)| *n == name)?;
        let mut dicts = self.dicts.lock().unwrap_or_else(|e| e.into_inner());
        let store = dicts
            .entry(name)
            .or_insert_with(|| Arc::new(MemoryStore::new(size.unwrap_or(self.mem_cache_size))));
        Some(store.clone())
    }
}

// ---------------------------------------------------------------------------
// handler (`kong/plugins/proxy-cache/handler.lua`)

/// `ngx.time()`.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `overwritable_header`: hop-by-hop headers (and Content-Length, which
/// the exit recomputes) and rate-limit counters are never replayed.
fn overwritable_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    ) && !n.contains("ratelimit-remaining")
}

/// Joins a header's lines as nginx's `$http_*` / `$sent_http_*` do.
fn joined<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<String> {
    let parts: Vec<String> = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `kong.ctx.plugin.proxy_cache`: the request may be stored.
#[derive(Default)]
struct ReqState {
    pending: Option<Box<Pending>>,
}

struct Pending {
    key: String,
    /// Set by header_filter once the response is cacheable.
    collect: Option<Collect>,
}

struct Collect {
    /// `kong.response.get_status()` (read here: the head may not be
    /// written yet when the body passes).
    status: u16,
    headers: Vec<(String, String)>,
    ttl: f64,
    body: BytesMut,
}

impl ProxyCache {
    fn store(&self, kong: &Kong<'_>) -> Option<Arc<MemoryStore>> {
        self.store
            .get_or_init(|| kong.env().caches.dict(&self.conf.memory.dictionary_name))
            .clone()
    }

    /// `set_header`: only when enabled, or the client sent `Kong-Debug`.
    fn header_enabled(&self, name: &str, debug: bool) -> bool {
        let h = &self.conf.response_headers;
        debug
            || match name {
                "age" => h.age,
                "X-Cache-Status" => h.x_cache_status,
                "X-Cache-Key" => h.x_cache_key,
                _ => false,
            }
    }

    /// `cacheable_request`. (Kong also tests `ngx.var.authorization`, a
    /// variable nginx does not define: always nil, so an `Authorization`
    /// header does not bypass.)
    fn cacheable_request(&self, kong: &Kong<'_>, cc: &Directives) -> bool {
        let method = kong.method().as_str();
        if !self.conf.request_method.iter().any(|m| m == method) {
            return false;
        }
        !(self.conf.cache_control && (cc.contains_key("no-store") || cc.contains_key("no-cache")))
    }

    /// `cacheable_response`, with the TTL header_filter keeps when it is.
    fn cacheable_response(&self, resp: &ResponseHeader, cc: &Directives) -> Option<f64> {
        let status = i64::from(resp.status.as_u16());
        if !self.conf.response_code.contains(&status) {
            return None;
        }
        // nginx keeps one Content-Type: the last the upstream sent.
        let ct = resp.headers.get_all(CONTENT_TYPE).iter().next_back()?;
        if ct.is_empty() || !content_type_matches(&self.content_types, ct.as_bytes()) {
            return None;
        }
        if !self.conf.cache_control {
            return Some(self.conf.cache_ttl as f64);
        }
        if ["private", "no-store", "no-cache"]
            .iter()
            .any(|d| cc.contains_key(*d))
        {
            return None;
        }
        let expires = joined(resp.headers.get_all(EXPIRES).iter());
        // A non-number max-age is a Lua error in Kong (the connection is
        // dropped); not storing is the closest a response can get to it.
        let ttl = calculate_resource_ttl(cc, expires.as_deref().map(str::as_bytes), now()).ok()?;
        (ttl > 0.0).then_some(ttl)
    }

    /// The request's cache key (`build_cache_key` with the handler's
    /// arguments).
    fn cache_key(&self, kong: &Kong<'_>) -> Result<String, LuaError> {
        let consumer = kong.consumer().map(|c| c.id.to_string());
        let route = kong.route().map(|r| r.id.to_string());
        let method = kong.method().as_str().to_string();
        let target = kong.raw_target();
        let version = http_version(kong.request_version());
        let uri = request_line_uri(
            &method,
            target.as_bytes(),
            version,
            self.conf.ignore_uri_case.unwrap_or(false),
        );
        let query = match target.find('?') {
            Some(i) => parse_query(&target.as_bytes()[i + 1..]),
            None => Vec::new(),
        };
        let params = params_key(&query, self.conf.vary_query_params.as_deref())?;
        let headers = headers_key(kong.headers(), self.conf.vary_headers.as_deref())?;
        Ok(build_cache_key(
            &prefix_uuid(consumer.as_deref(), route.as_deref()),
            &method,
            &uri,
            &params,
            &headers,
        ))
    }

    /// `signal_cache_req`: store what comes back, and say why.
    fn signal_cache_req(&self, kong: &mut Kong<'_>, key: String, status: &str, debug: bool) {
        kong.state::<ReqState>().pending = Some(Box::new(Pending { key, collect: None }));
        if self.header_enabled("X-Cache-Status", debug) {
            kong.set_response_header("X-Cache-Status", status);
        }
    }

    /// Whether the client accepts the stored response (`Ok(true)`), or
    /// wants it refreshed.
    fn fresh_enough(
        &self,
        res: &CachedResponse,
        cc: &Directives,
        now: i64,
    ) -> Result<bool, LuaError> {
        let age = (now - res.timestamp) as f64;
        if !self.conf.cache_control {
            // Stale data is not served; the entry may be kept up to
            // `storage_ttl`.
            return Ok(age <= self.conf.cache_ttl as f64);
        }
        if let Some(d) = cc.get("max-age") {
            if age > d.number()? {
                return Ok(false);
            }
        }
        if let Some(d) = cc.get("max-stale") {
            if age - res.ttl > d.number()? {
                return Ok(false);
            }
        }
        if let Some(d) = cc.get("min-fresh") {
            if res.ttl - age < d.number()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The hit: the stored status, headers and body, with Age and the
    /// X-Cache headers.
    fn hit(&self, res: &CachedResponse, key: &str, now: i64, debug: bool) -> Exit {
        let age = self.header_enabled("age", debug);
        let mut exit = Exit::raw(res.status, res.body.clone()).as_proxied();
        for (name, value) in &res.headers {
            // `reset_res_header` removes these by their exact names; the
            // X-Cache ones are ours (set with these names), and a new
            // `age` replaces any spelling.
            let ours = name.eq_ignore_ascii_case("X-Cache-Status")
                || name.eq_ignore_ascii_case("X-Cache-Key");
            if !overwritable_header(name)
                || ours
                || name == "Age"
                || (age && name.eq_ignore_ascii_case("age"))
            {
                continue;
            }
            exit = exit.header(name.clone(), value.clone());
        }
        if age {
            exit = exit.header("age", (now - res.timestamp).to_string());
        }
        if self.header_enabled("X-Cache-Status", debug) {
            exit = exit.header("X-Cache-Status", "Hit");
        }
        if self.header_enabled("X-Cache-Key", debug) {
            exit = exit.header("X-Cache-Key", key);
        }
        exit
    }

    /// The body is complete: store the response for its TTL.
    fn finish(&self, store: &MemoryStore, pending: Pending) {
        let Some(collect) = pending.collect else {
            return;
        };
        let conf = &self.conf;
        let ttl = match conf.storage_ttl {
            Some(s) => s as f64,
            None if conf.cache_control => collect.ttl,
            None => conf.cache_ttl as f64,
        };
        let res = CachedResponse {
            status: collect.status,
            headers: collect.headers,
            body: collect.body.freeze(),
            timestamp: now(),
            ttl: collect.ttl,
            expire: None,
            weight: 0,
        };
        if !store.store(pending.key, res, ttl) {
            log::info!("[{NAME}] response not stored: no memory");
        }
    }
}

/// The response headers as `ngx.resp.get_headers(0, true)` gives them.
fn snapshot_headers(resp: &ResponseHeader) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(resp.headers.len());
    let _ = resp.map(|name, value| {
        let name = match name {
            HeaderNameVariant::Case(c) => String::from_utf8_lossy(c.as_slice()).into_owned(),
            HeaderNameVariant::Titled(t) => t.to_string(),
        };
        out.push((name, String::from_utf8_lossy(value.as_bytes()).into_owned()));
        Ok(())
    });
    out
}

#[async_trait]
impl Plugin for ProxyCache {
    fn phases(&self) -> Phases {
        Phases::ACCESS | Phases::HEADER_FILTER | Phases::BODY_FILTER
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let debug = kong.headers().contains_key("kong-debug");
        let req_cc = joined(kong.headers().get_all(CACHE_CONTROL).iter());
        let cc = parse_directive_header(req_cc.as_deref()).map_err(lua_error)?;
        if !self.cacheable_request(kong, &cc) {
            if self.header_enabled("X-Cache-Status", debug) {
                kong.set_response_header("X-Cache-Status", "Bypass");
            }
            return Ok(());
        }
        let key = self.cache_key(kong).map_err(lua_error)?;
        if self.header_enabled("X-Cache-Key", debug) {
            kong.set_response_header("X-Cache-Key", &key);
        }
        let Some(store) = self.store(kong) else {
            log::error!(
                "[{NAME}] missing shared dict '{}'",
                self.conf.memory.dictionary_name
            );
            return Ok(());
        };
        let Some(res) = store.fetch(&key) else {
            // Only cached data was wanted (RFC 7234 5.2.1.7).
            if self.conf.cache_control && cc.contains_key("only-if-cached") {
                return Err(Exit::status(504));
            }
            self.signal_cache_req(kong, key, "Miss", debug);
            return Ok(());
        };
        let now = now();
        if !self.fresh_enough(&res, &cc, now).map_err(lua_error)? {
            self.signal_cache_req(kong, key, "Refresh", debug);
            return Ok(());
        }
        Err(self.hit(&res, &key, now, debug))
    }

    fn header_filter(&self, kong: &mut Kong<'_>, resp: &mut ResponseHeader) {
        if kong.state::<ReqState>().pending.is_none() {
            return;
        }
        let debug = kong.headers().contains_key("kong-debug");
        let res_cc = joined(resp.headers.get_all(CACHE_CONTROL).iter());
        let ttl = match parse_directive_header(res_cc.as_deref()) {
            Ok(cc) => self.cacheable_response(resp, &cc),
            Err(_) => None,
        };
        match ttl {
            Some(ttl) => {
                let status = resp.status.as_u16();
                // nginx runs the body filter on an empty body (not on HEAD,
                // 204 or 304 answers: `header_only`); Pingora has no body
                // step when the head says there is none, so store it here.
                let empty = kong.method() != http::Method::HEAD
                    && !matches!(status, 204 | 304)
                    && resp
                        .headers
                        .get(http::header::CONTENT_LENGTH)
                        .is_some_and(|v| v.as_bytes() == b"0");
                let state = kong.state::<ReqState>();
                if let Some(p) = state.pending.as_mut() {
                    p.collect = Some(Collect {
                        status,
                        headers: snapshot_headers(resp),
                        ttl,
                        body: BytesMut::new(),
                    });
                }
                if empty {
                    if let Some(pending) = state.pending.take() {
                        if let Some(store) = self.store(kong) {
                            self.finish(&store, *pending);
                        }
                    }
                }
            }
            None => {
                if self.header_enabled("X-Cache-Status", debug) {
                    let _ = resp.insert_header("X-Cache-Status", "Bypass");
                }
                kong.state::<ReqState>().pending = None;
            }
        }
    }

    fn body_filter(&self, kong: &mut Kong<'_>, body: &mut Option<Bytes>, eof: bool) {
        let Some(store) = self.store(kong) else {
            return;
        };
        let state = kong.state::<ReqState>();
        let Some(collect) = state.pending.as_mut().and_then(|p| p.collect.as_mut()) else {
            return;
        };
        if let Some(b) = body.as_ref() {
            // A body the dictionary cannot hold is not kept.
            if (collect.body.len() + b.len()) as u64 > store.capacity() {
                state.pending = None;
                return;
            }
            collect.body.extend_from_slice(b);
        }
        if !eof {
            return;
        }
        if let Some(pending) = state.pending.take() {
            self.finish(&store, *pending);
        }
    }
}

fn lua_error(e: LuaError) -> Exit {
    log::error!("[{NAME}] {e}");
    Exit::error(500, UNEXPECTED)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;

    fn validate(v: Value) -> Result<Value, Vec<(String, String)>> {
        let s = schema();
        let out = validate_record(&s.config, &v, "config").map_err(|e| {
            e.into_iter()
                .map(|e| (e.path, e.message))
                .collect::<Vec<_>>()
        })?;
        let whole: Map<String, Value> = [("config".to_string(), out.clone())].into_iter().collect();
        for check in &s.entity_checks {
            check(&whole).map_err(|m| vec![("@entity".to_string(), m)])?;
        }
        Ok(out)
    }

    fn errs(v: Value) -> Vec<(String, String)> {
        validate(v).unwrap_err()
    }

    fn e(path: &str, msg: &str) -> (String, String) {
        (path.to_string(), msg.to_string())
    }

    // 01-schema_spec.lua

    #[test]
    fn schema_accepts_a_minimal_config_with_kongs_defaults() {
        let v = validate(json!({"strategy": "memory"})).unwrap();
        assert_eq!(v["content_type"], json!(["text/plain", "application/json"]));
        assert_eq!(v["response_code"], json!([200, 301, 404]));
        assert_eq!(v["request_method"], json!(["GET", "HEAD"]));
        assert_eq!(v["cache_ttl"], json!(300));
        assert_eq!(v["cache_control"], json!(false));
        assert_eq!(v["memory"], json!({"dictionary_name": "kong_db_cache"}));
        assert_eq!(
            v["response_headers"],
            json!({"age": true, "X-Cache-Status": true, "X-Cache-Key": true})
        );
        assert!(build(&Instance {
            id: uuid::Uuid::nil(),
            config: &v,
            route: None,
            service: None,
            consumer: None,
            routes: 0,
            instance_name: None,
        })
        .is_ok());
    }

    #[test]
    fn schema_accepts_custom_values_wildcards_and_parameters() {
        for c in [
            json!({"strategy": "memory", "response_code": [200, 301], "request_method": ["GET"], "content_type": ["application/json"]}),
            json!({"strategy": "memory", "response_code": [123, 200]}),
            json!({"strategy": "memory", "vary_query_params": ["foo"]}),
            json!({"strategy": "memory", "vary_headers": ["foo"]}),
            json!({"strategy": "memory", "content_type": ["application/*", "*/text"]}),
            json!({"strategy": "memory", "content_type": ["*/*"]}),
            json!({"strategy": "memory", "content_type": ["application/json; charset=UTF-8"]}),
        ] {
            assert!(validate(c.clone()).is_ok(), "{c}");
        }
    }

    #[test]
    fn schema_refuses_bad_response_codes_and_ttls_with_kongs_messages() {
        assert_eq!(
            errs(json!({"strategy": "memory", "response_code": [99]})),
            vec![e(
                "config.response_code.1",
                "value should be between 100 and 900"
            )]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "response_code": []})),
            vec![e("config.response_code", "length must be at least 1")]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "response_code": ""})),
            vec![e("config.response_code", "expected an array")]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "response_code": [true, "alo", 123]})),
            vec![
                e("config.response_code.1", "expected an integer"),
                e("config.response_code.2", "expected an integer")
            ]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "response_code": [123.5]})),
            vec![e("config.response_code.1", "expected an integer")]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "cache_ttl": -1})),
            vec![e("config.cache_ttl", "value must be greater than 0")]
        );
    }

    #[test]
    fn schema_requires_a_known_strategy_and_an_existing_shared_dict() {
        assert_eq!(
            errs(json!({})),
            vec![e("config.strategy", "required field missing")]
        );
        assert_eq!(
            errs(json!({"strategy": "redis"})),
            vec![e("config.strategy", "expected one of: memory")]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "memory": {"dictionary_name": "my_cache"}})),
            vec![e("@entity", "missing shared dict 'my_cache'")]
        );
        assert_eq!(
            errs(json!({"strategy": "memory", "request_method": ["DELETE"]})),
            vec![e(
                "config.request_method.1",
                "expected one of: HEAD, GET, POST, PATCH, PUT"
            )]
        );
        for name in [
            "kong",
            "kong_db_cache",
            "kong_core_db_cache",
            "prometheus_metrics",
        ] {
            assert!(
                validate(json!({"strategy": "memory", "memory": {"dictionary_name": name}}))
                    .is_ok(),
                "{name}"
            );
        }
    }

    // 05-cache_key_spec.lua

    fn q(pairs: &[(&str, ArgValue)]) -> Vec<(Vec<u8>, ArgValue)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect()
    }

    fn one(s: &str) -> ArgValue {
        ArgValue::One(s.as_bytes().to_vec())
    }

    fn many(v: &[&str]) -> ArgValue {
        ArgValue::Many(v.iter().map(|s| Some(s.as_bytes().to_vec())).collect())
    }

    fn vary(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn text(b: Result<Vec<u8>, LuaError>) -> String {
        String::from_utf8(b.unwrap()).unwrap()
    }

    #[test]
    fn prefix_uuid_spec() {
        let (c1, c2) = ("c1", "c2");
        let (r1, r2) = ("r1", "r2");
        // distinct prefixes for a consumer on different routes
        assert_ne!(
            prefix_uuid(Some(c1), Some(r1)),
            prefix_uuid(Some(c1), Some(r2))
        );
        // distinct prefixes for different consumers on a route
        assert_ne!(
            prefix_uuid(Some(c1), Some(r1)),
            prefix_uuid(Some(c2), Some(r1))
        );
        // the same prefix for a route with no consumer
        assert_eq!(prefix_uuid(None, Some(r1)), prefix_uuid(None, Some(r1)));
        assert_ne!(prefix_uuid(None, Some(r1)), "default");
        // a consumer-specific prefix for routes
        assert_ne!(prefix_uuid(None, Some(r1)), prefix_uuid(Some(c1), Some(r1)));
        // 'default' without a route
        assert_eq!(prefix_uuid(None, None), "default");
        assert_eq!(prefix_uuid(Some(c1), None), "default");
        assert_eq!(prefix_uuid(Some(c1), Some(r1)), "c1:r1");
    }

    #[test]
    fn params_key_spec() {
        // defaults to all
        assert_eq!(
            text(params_key(&q(&[("a", one("1")), ("b", one("2"))]), None)),
            "a=1:b=2"
        );
        assert_eq!(
            text(params_key(
                &q(&[("a", one("1")), ("b", one("2"))]),
                Some(&[])
            )),
            "a=1:b=2"
        );
        // empty query_string returns empty, with or without vary
        assert_eq!(text(params_key(&[], None)), "");
        assert_eq!(text(params_key(&[], Some(&vary(&["a"])))), "");
        // sorts the arguments
        assert_eq!(
            text(params_key(&q(&[("bz", one("2")), ("ay", one("1"))]), None)),
            "ay=1:bz=2"
        );
        // uses only params specified in vary
        assert_eq!(
            text(params_key(
                &q(&[("a", one("1")), ("b", one("2"))]),
                Some(&vary(&["a"]))
            )),
            "a=1"
        );
        // multiple params with same name, sorted
        assert_eq!(
            text(params_key(
                &q(&[("a", many(&["1", "2"]))]),
                Some(&vary(&["a"]))
            )),
            "a=1,2"
        );
        assert_eq!(
            text(params_key(
                &q(&[("a", many(&["2", "1"]))]),
                Some(&vary(&["a"]))
            )),
            "a=1,2"
        );
        // discards params in config that are not in the request
        assert_eq!(
            text(params_key(
                &q(&[("a", many(&["1", "2"])), ("b", one("2"))]),
                Some(&vary(&["a", "b", "c"]))
            )),
            "a=1,2:b=2"
        );
        // vary order is the configured one, not sorted; flags are bare
        assert_eq!(
            text(params_key(
                &q(&[("a", one("1")), ("b", ArgValue::Flag)]),
                Some(&vary(&["b", "a"]))
            )),
            "b:a=1"
        );
        // a repeated flag cannot be sorted with strings (a Lua error)
        assert!(params_key(
            &q(&[("a", ArgValue::Many(vec![None, Some(b"1".to_vec())]))]),
            None
        )
        .is_err());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_key_spec() {
        let h = headers(&[("a", "1"), ("b", "2")]);
        // defaults to none
        assert_eq!(text(headers_key(&h, None)), "");
        assert_eq!(text(headers_key(&h, Some(&[]))), "");
        // uses only headers specified in vary, in the configured order
        assert_eq!(text(headers_key(&h, Some(&vary(&["a"])))), "a=1");
        assert_eq!(text(headers_key(&h, Some(&vary(&["b", "a"])))), "b=2:a=1");
        // multiple values sorted
        let h = headers(&[("a", "2"), ("a", "1"), ("b", "2")]);
        assert_eq!(text(headers_key(&h, Some(&vary(&["a"])))), "a=1,2");
        // discards headers in config that are not in the request
        assert_eq!(
            text(headers_key(&h, Some(&vary(&["a", "b", "c"])))),
            "a=1,2:b=2"
        );
        // the headers table's lookup: any case, `_` for `-`, the field as
        // configured in the key
        let h = headers(&[("x-foo", "bar"), ("x_bar", "baz")]);
        assert_eq!(text(headers_key(&h, Some(&vary(&["X-Foo"])))), "X-Foo=bar");
        assert_eq!(text(headers_key(&h, Some(&vary(&["X_FOO"])))), "X_FOO=bar");
        assert_eq!(text(headers_key(&h, Some(&vary(&["x_bar"])))), "x_bar=baz");
        assert_eq!(text(headers_key(&h, Some(&vary(&["X_Bar", "x-bar"])))), "");
    }

    #[test]
    fn query_parsing_follows_get_uri_args() {
        assert_eq!(
            parse_query(b"a=b&b=c"),
            q(&[("a", one("b")), ("b", one("c"))])
        );
        assert_eq!(
            parse_query(b"a&b=&c=1=2&=x&&a=3"),
            q(&[
                ("a", ArgValue::Many(vec![None, Some(b"3".to_vec())])),
                ("b", one("")),
                ("c", one("1=2")),
            ])
        );
        assert_eq!(parse_query(b"x+y=%41%zz%2B"), q(&[("x y", one("A%zz+"))]));
        assert_eq!(parse_query(b""), q(&[]));
        // at most 100 arguments
        let many: Vec<String> = (0..150).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_query(many.join("&").as_bytes()).len(), 100);
    }

    #[test]
    fn request_line_uri_cuts_from_the_query_on() {
        // Kong's note: `/a` keeps the version, `/a?` and `/a?x=1` do not.
        assert_eq!(
            request_line_uri("GET", b"/a", "HTTP/1.1", false),
            b"GET /a HTTP/1.1"
        );
        assert_eq!(
            request_line_uri("GET", b"/a?", "HTTP/1.1", false),
            b"GET /a"
        );
        assert_eq!(
            request_line_uri("GET", b"/a?x=1", "HTTP/1.1", false),
            b"GET /a"
        );
        assert_eq!(
            request_line_uri("GET", b"/Ignore-Case/KONG", "HTTP/1.1", true),
            b"get /ignore-case/kong http/1.1"
        );
    }

    /// Expected digests computed outside this code
    /// (`printf '%s' '<string>' | sha256sum`) over the string Kong's
    /// `build_cache_key` formats.
    #[test]
    fn cache_keys_are_kongs_sha256_hex() {
        // "default|GET|GET /get HTTP/1.1||"
        assert_eq!(
            build_cache_key("default", "GET", b"GET /get HTTP/1.1", b"", b""),
            "ff069ce619062d5b4eeb7a66c596f726a12bf5ed3ac61831568f760a3b871d17"
        );
        // A route, `GET /get?b=c&a=b`: "<route>|GET|GET /get|a=b:b=c|"
        let route = "6c2f9d7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
        let uri = request_line_uri("GET", b"/get?b=c&a=b", "HTTP/1.1", false);
        let params = params_key(&parse_query(b"b=c&a=b"), None).unwrap();
        assert_eq!(
            build_cache_key(&prefix_uuid(None, Some(route)), "GET", &uri, &params, b""),
            "d86d6b426229b9653c42ef86ecc31677fc47c82ce511f629aa822352daaf51e9"
        );
        // Consumer and route, ignore_uri_case, flags, a varied header with
        // two values: "<consumer>:<route>|HEAD|head /ignore-case/kong
        // http/1.1|a:b|foo=bar,baz"
        let consumer = "11111111-1111-4111-8111-111111111111";
        let uri = request_line_uri("HEAD", b"/Ignore-Case/KONG", "HTTP/1.1", true);
        let params = params_key(&q(&[("b", ArgValue::Flag), ("a", ArgValue::Flag)]), None).unwrap();
        let h = headers(&[("foo", "baz"), ("foo", "bar")]);
        let hk = headers_key(&h, Some(&vary(&["foo"]))).unwrap();
        assert_eq!(
            build_cache_key(
                &prefix_uuid(Some(consumer), Some(route)),
                "HEAD",
                &uri,
                &params,
                &hk
            ),
            "e7b56a290dc331b90b6a08745bc8bde50d99c5f77f5b93570c33b1f164ae513e"
        );
    }

    #[test]
    fn cache_control_parsing_follows_parse_directive_header() {
        let p = |s: &str| parse_directive_header(Some(s)).unwrap();
        let cc = p("public, max-age=3600");
        assert_eq!(cc.get("public"), Some(&Directive::Flag));
        assert_eq!(cc.get("max-age"), Some(&Directive::Num(3600.0)));
        let cc = p("No-Cache,MAX-AGE=\"5\",s-maxage= 7 ,x=abc,max-stale=");
        assert_eq!(cc.get("no-cache"), Some(&Directive::Flag));
        assert_eq!(cc.get("max-age"), Some(&Directive::Str("\"5\"".into())));
        assert_eq!(cc.get("s-maxage"), Some(&Directive::Num(7.0)));
        assert_eq!(cc.get("x"), Some(&Directive::Str("abc".into())));
        assert_eq!(cc.get("max-stale"), Some(&Directive::Flag));
        // the name keeps blanks before `=`
        let cc = p("no-store , max-age =1");
        assert!(cc.contains_key("no-store "));
        assert!(cc.contains_key("max-age "));
        assert!(!cc.contains_key("no-store"));
        assert_eq!(
            p("a=0x10, b=1e1, c=-2").get("a"),
            Some(&Directive::Num(16.0))
        );
        assert_eq!(p("b=1e1").get("b"), Some(&Directive::Num(10.0)));
        assert_eq!(p("c=-2").get("c"), Some(&Directive::Num(-2.0)));
        assert_eq!(p("c=inf").get("c"), Some(&Directive::Str("inf".into())));
        assert!(parse_directive_header(None).unwrap().is_empty());
        // a run starting with `=` repeats the previous match, or fails
        assert_eq!(p("a=1,=2").len(), 1);
        assert!(parse_directive_header(Some("=2")).is_err());
    }

    #[test]
    fn resource_ttl_from_cache_control_or_expires() {
        let p = |s: &str| parse_directive_header(Some(s)).unwrap();
        let now = 1_000_000;
        assert_eq!(
            calculate_resource_ttl(&p("max-age=10"), None, now),
            Ok(10.0)
        );
        assert_eq!(
            calculate_resource_ttl(&p("max-age=10, s-maxage=20"), None, now),
            Ok(20.0)
        );
        assert_eq!(calculate_resource_ttl(&p("max-age=-5"), None, now), Ok(0.0));
        assert_eq!(calculate_resource_ttl(&p("public"), None, now), Ok(0.0));
        assert!(calculate_resource_ttl(&p("max-age"), None, now).is_err());
        let exp = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let t = parse_http_time(exp).unwrap();
        assert_eq!(t, 784111777);
        assert_eq!(
            calculate_resource_ttl(&p("public"), Some(exp), t - 30),
            Ok(30.0)
        );
        assert_eq!(
            calculate_resource_ttl(&p("public"), Some(exp), t + 30),
            Ok(0.0)
        );
        assert_eq!(
            calculate_resource_ttl(&p("public"), Some(b"garbage"), now),
            Ok(0.0)
        );
    }

    #[test]
    fn http_dates_parse_as_nginx_does() {
        assert_eq!(
            parse_http_time(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(
            parse_http_time(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(
            parse_http_time(b"Sun Nov  6 08:49:37 1994"),
            Some(784111777)
        );
        assert_eq!(parse_http_time(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_time(b"Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951825600)
        );
        assert_eq!(parse_http_time(b"Thu, 29 Feb 2001 12:00:00 GMT"), None);
        assert_eq!(parse_http_time(b"Sun, 06 Nov 1994 24:00:00 GMT"), None);
        assert_eq!(parse_http_time(b"0"), None);
        assert_eq!(parse_http_time(b""), None);
        assert_eq!(parse_http_time(b"nil"), None);
    }

    #[test]
    fn mime_types_parse_as_kongs_grammar() {
        let m = parse_mime_type(b"Application/JSON; Charset=utf-8; q=\"1\"").unwrap();
        assert_eq!((m.ty.as_str(), m.subtype.as_str()), ("application", "json"));
        assert_eq!(m.params.get("charset").map(String::as_str), Some("utf-8"));
        assert_eq!(m.params.get("q").map(String::as_str), Some("1"));
        let m = parse_mime_type(b"*").unwrap();
        assert_eq!((m.ty.as_str(), m.subtype.as_str()), ("*", "*"));
        let m = parse_mime_type(b"*/*").unwrap();
        assert_eq!((m.ty.as_str(), m.subtype.as_str()), ("*", "*"));
        assert!(parse_mime_type(b"application/xml;").is_none());
        assert!(parse_mime_type(b"application/json ").is_none());
        assert!(parse_mime_type(b"application").is_none());
        assert!(parse_mime_type(b"").is_none());
    }

    #[test]
    fn content_types_match_with_kongs_parameter_rules() {
        let exp = |list: &[&str]| -> Vec<ExpectedType> {
            list.iter().map(|s| parse_mime_type(s.as_bytes())).collect()
        };
        let defaults = exp(&["text/plain", "application/json"]);
        assert!(content_type_matches(&defaults, b"application/json"));
        assert!(content_type_matches(&defaults, b"TEXT/Plain"));
        assert!(!content_type_matches(
            &defaults,
            b"application/json; charset=utf-8"
        ));
        assert!(!content_type_matches(&defaults, b"application/xml"));
        let with_param = exp(&["text/html; charset=utf-8"]);
        assert!(content_type_matches(
            &with_param,
            b"text/html; charset=utf-8"
        ));
        assert!(!content_type_matches(
            &with_param,
            b"text/html; charset=UTF-8"
        ));
        assert!(!content_type_matches(&with_param, b"text/html"));
        let any = exp(&["*/*"]);
        assert!(content_type_matches(&any, b"application/xml"));
        // an unparsable upstream type only matches */*
        assert!(content_type_matches(&any, b"application/xml;"));
        assert!(!content_type_matches(
            &exp(&["application/*"]),
            b"application/xml;"
        ));
        assert!(content_type_matches(
            &exp(&["application/*"]),
            b"application/xml"
        ));
        assert!(content_type_matches(&exp(&["*/xml"]), b"text/xml"));
        // a configured entry Kong cannot parse never matches
        assert!(!content_type_matches(
            &exp(&["application/xml;"]),
            b"application/xml"
        ));
    }

    #[test]
    fn hop_by_hop_and_rate_limit_headers_are_not_replayed() {
        for h in [
            "Connection",
            "keep-alive",
            "TE",
            "Transfer-Encoding",
            "Content-Length",
            "Upgrade",
        ] {
            assert!(!overwritable_header(h), "{h}");
        }
        assert!(!overwritable_header("X-RateLimit-Remaining-Minute"));
        assert!(!overwritable_header("RateLimit-Remaining"));
        assert!(overwritable_header("X-RateLimit-Limit-Minute"));
        assert!(overwritable_header("Content-Type"));
        assert!(overwritable_header("Set-Cookie"));
    }

    fn entry(body: &[u8]) -> CachedResponse {
        CachedResponse {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: Bytes::copy_from_slice(body),
            timestamp: now(),
            ttl: 10.0,
            expire: None,
            weight: 0,
        }
    }

    #[test]
    fn the_memory_store_is_bounded_in_bytes_and_evicts_the_least_recently_used() {
        let store = MemoryStore::new(10_000);
        assert!(
            !store.store("big".into(), entry(&[0u8; 20_000]), 0.0),
            "larger than the dict"
        );
        for i in 0..5 {
            assert!(store.store(format!("k{i}"), entry(&[1u8; 1500]), 0.0));
        }
        assert!(store.fetch("k0").is_some());
        for i in 5..12 {
            assert!(store.store(format!("k{i}"), entry(&[1u8; 1500]), 0.0));
        }
        assert!(store.used() <= 10_000, "{}", store.used());
        assert!(store.fetch("k11").is_some(), "the newest stays");
        assert!(store.fetch("k1").is_none(), "an old one went");
        store.purge("k11");
        assert!(store.fetch("k11").is_none());
    }

    #[test]
    fn store_ttls_expire_and_a_new_set_renews_them() {
        let store = MemoryStore::new(1 << 20);
        assert!(store.store("a".into(), entry(b"x"), 0.05));
        assert!(store.store("b".into(), entry(b"x"), 0.0));
        assert!(!store.store("c".into(), entry(b"x"), -1.0), "bad exptime");
        std::thread::sleep(Duration::from_millis(120));
        assert!(store.fetch("a").is_none());
        assert!(store.fetch("b").is_some(), "0 keeps it");
        assert!(store.store("b".into(), entry(b"y"), 0.05));
        std::thread::sleep(Duration::from_millis(120));
        assert!(store.fetch("b").is_none(), "the new set's TTL applies");
    }

    #[test]
    fn stores_are_shared_by_dictionary_name_and_sized_as_kongs_template() {
        let stores = CacheStores::default();
        let a = stores.dict("kong").unwrap();
        let b = stores.dict("kong").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.capacity(), 5 * MIB);
        assert_eq!(stores.dict("kong_db_cache").unwrap().capacity(), 128 * MIB);
        assert!(stores.dict("nope").is_none());
        assert_eq!(
            CacheStores::new(MIB)
                .dict("kong_db_cache")
                .unwrap()
                .capacity(),
            MIB
        );
    }

    #[test]
    fn lua_tonumber_accepts_what_lua_does() {
        assert_eq!(lua_tonumber(" 5 "), Some(5.0));
        assert_eq!(lua_tonumber("1.5"), Some(1.5));
        assert_eq!(lua_tonumber(".5"), Some(0.5));
        assert_eq!(lua_tonumber("0x1f"), Some(31.0));
        assert_eq!(lua_tonumber("-3"), Some(-3.0));
        assert_eq!(lua_tonumber("abc"), None);
        assert_eq!(lua_tonumber("nan"), None);
        assert_eq!(lua_tonumber(""), None);
        assert_eq!(lua_tonumber("1e"), None);
    }
}
