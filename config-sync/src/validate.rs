//! Kong-like field validation: a typed reader over one entity's JSON object
//! that records every error it meets, and the value validators Kong's
//! typedefs use (`kong/db/schema/typedefs.lua`, `kong/tools/ip.lua`).
//!
//! Error reasons reuse Kong's wording (`kong/db/schema/init.lua`) so that
//! operators see familiar messages.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Kong's `constants.PROTOCOLS` (sorted).
pub const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];

/// Default plugin protocols: every protocol of the http subsystem, sorted.
pub const HTTP_PROTOCOLS: &[&str] = &["grpc", "grpcs", "http", "https"];

/// Largest value of Kong's timeout typedef (2^31 - 2).
pub const MAX_TIMEOUT: i64 = (1 << 31) - 2;

/// Reads typed fields from one entity object, collecting errors.
///
/// Explicit JSON `null` is treated like an absent field ("use the default"),
/// which is how a control plane's export marks unset columns.
pub struct Reader<'a> {
    /// The object's members in order, each with whether it was read or
    /// accepted. Entity objects are small: a scan beats hashing the key.
    fields: Vec<(&'a str, &'a Value, bool)>,
    errs: &'a mut Vec<ConfigError>,
    entity: &'a str,
    ident: &'a str,
    prefix: String,
    /// Keys of the object that are not fields (see [`Reader::detach`]).
    detached: &'static [&'static str],
}

impl<'a> Reader<'a> {
    pub fn new(
        obj: &'a Map<String, Value>,
        errs: &'a mut Vec<ConfigError>,
        entity: &'a str,
        ident: &'a str,
    ) -> Self {
        Reader::over(
            obj.iter().map(|(k, v)| (k.as_str(), v)),
            errs,
            entity,
            ident,
        )
    }

    /// A reader over an object's members, in order.
    pub fn over(
        members: impl Iterator<Item = (&'a str, &'a Value)>,
        errs: &'a mut Vec<ConfigError>,
        entity: &'a str,
        ident: &'a str,
    ) -> Self {
        Reader {
            fields: members.map(|(k, v)| (k, v, false)).collect(),
            errs,
            entity,
            ident,
            prefix: String::new(),
            detached: &[],
        }
    }

    /// Treats `keys` as removed from the object, in this order, by
    /// `Map::remove` (a `swap_remove`): they are never reported, and the
    /// unknown fields are reported in the order the removals leave. Must
    /// not name a key this reader reads.
    pub(crate) fn detach(&mut self, keys: &'static [&'static str]) {
        self.detached = keys;
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|(k, _, _)| *k == key)
    }

    /// Records `key` as known if the object has it.
    fn mark(&mut self, key: &str) {
        if let Some(i) = self.find(key) {
            self.fields[i].2 = true;
        }
    }

    /// The value of `key` as given (null included), without marking it.
    pub(crate) fn peek(&self, key: &str) -> Option<&'a Value> {
        self.find(key).map(|i| self.fields[i].1)
    }

    /// Full dotted path of `key` inside this (possibly nested) record.
    pub fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// Records an error on `key` (relative to this record).
    pub fn err(&mut self, key: &str, reason: impl Into<String>) {
        let field = if key == "@entity" {
            "@entity".to_string()
        } else {
            self.path(key)
        };
        self.errs
            .push(ConfigError::new(self.entity, self.ident, field, reason));
    }

    /// Number of errors recorded so far (by this reader and others sharing
    /// the same list).
    pub fn error_count(&self) -> usize {
        self.errs.len()
    }

    /// Marks keys as known without reading them (e.g. timestamps).
    pub fn accept(&mut self, keys: &[&str]) {
        for k in keys {
            self.mark(k);
        }
    }

    /// Whether the key is present with a non-null value (does not consume it).
    pub fn has(&self, key: &str) -> bool {
        matches!(self.peek(key), Some(v) if !v.is_null())
    }

    /// The value if present and not null; marks the key as known.
    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        let i = self.find(key)?;
        let field = &mut self.fields[i];
        field.2 = true;
        match field.1 {
            Value::Null => None,
            v => Some(v),
        }
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        let v = self.raw(key)?;
        match v {
            Value::String(s) if s.is_empty() => {
                self.err(key, "length must be at least 1");
                None
            }
            Value::String(s) => Some(s.clone()),
            _ => {
                self.err(key, "expected a string");
                None
            }
        }
    }

    /// A required string: reports "required field missing" when absent.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        if !self.has(key) {
            self.mark(key);
            self.err(key, "required field missing");
            return None;
        }
        self.string(key)
    }

    /// A string validated by `check`; invalid values are reported and dropped.
    pub fn checked_string(
        &mut self,
        key: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let s = self.string(key)?;
        match check(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    pub fn one_of(&mut self, key: &str, options: &[&str], default: &str) -> String {
        match self.string(key) {
            Some(s) if options.contains(&s.as_str()) => s,
            Some(_) => {
                self.err(key, format!("expected one of: {}", options.join(", ")));
                default.to_string()
            }
            None => default.to_string(),
        }
    }

    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        self.opt_bool(key).unwrap_or(default)
    }

    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.raw(key)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.err(key, "expected a boolean");
                None
            }
        }
    }

    /// An integer within `[min, max]`; `None` when absent or invalid.
    pub fn int(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.raw(key)?;
        let Some(n) = as_integer(v) else {
            self.err(key, "expected an integer");
            return None;
        };
        if n < min || n > max {
            self.err(key, format!("value should be between {min} and {max}"));
            return None;
        }
        Some(n)
    }

    /// A number (integer or float) within `[min, max]`.
    pub fn number(&mut self, key: &str, min: f64, max: f64) -> Option<f64> {
        let v = self.raw(key)?;
        let Some(n) = v.as_f64() else {
            self.err(key, "expected a number");
            return None;
        };
        if n < min || n > max {
            self.err(
                key,
                format!("value should be between {} and {}", min as i64, max as i64),
            );
            return None;
        }
        Some(n)
    }

    /// An array of strings; each bad element is reported as `key.N` (1-based,
    /// like Kong). `None` when absent or not an array.
    pub fn string_list(&mut self, key: &str, set: bool) -> Option<Vec<String>> {
        let v = self.raw(key)?;
        let Value::Array(items) = v else {
            self.err(
                key,
                if set {
                    "expected a set"
                } else {
                    "expected an array"
                },
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) if s.is_empty() => {
                    self.err(&format!("{key}.{}", i + 1), "length must be at least 1")
                }
                Value::String(s) => {
                    // A set silently drops repeated members.
                    if !(set && out.contains(s)) {
                        out.push(s.clone());
                    }
                }
                _ => self.err(&format!("{key}.{}", i + 1), "expected a string"),
            }
        }
        Some(out)
    }

    /// A list of strings each validated by `check`; invalid elements are
    /// reported as `key.N` and dropped.
    pub fn checked_list(
        &mut self,
        key: &str,
        set: bool,
        mut check: impl FnMut(&str) -> Result<(), String>,
    ) -> Option<Vec<String>> {
        let v = self.raw(key)?;
        let Value::Array(items) = v else {
            self.err(
                key,
                if set {
                    "expected a set"
                } else {
                    "expected an array"
                },
            );
            return None;
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = || format!("{key}.{}", i + 1);
            match item {
                Value::String(s) if s.is_empty() => self.err(&field(), "length must be at least 1"),
                Value::String(s) => match check(s) {
                    Ok(()) => {
                        if !(set && out.contains(s)) {
                            out.push(s.clone());
                        }
                    }
                    Err(e) => self.err(&field(), e),
                },
                _ => self.err(&field(), "expected a string"),
            }
        }
        Some(out)
    }

    /// `tags`: a set of printable tag strings.
    pub fn tags(&mut self) -> Vec<String> {
        self.checked_list("tags", true, validate_tag)
            .unwrap_or_default()
    }

    /// A map of header name to list of values, in config order.
    pub fn headers(
        &mut self,
        key: &str,
        check_name: impl Fn(&str) -> Result<(), String>,
    ) -> Option<Vec<(String, Vec<String>)>> {
        let v = self.raw(key)?;
        let Value::Object(m) = v else {
            self.err(key, "expected a map");
            return None;
        };
        let mut out = Vec::with_capacity(m.len());
        for (name, values) in m {
            if let Err(e) = check_name(name) {
                self.err(key, e);
                continue;
            }
            let Value::Array(items) = values else {
                self.err(&format!("{key}.{name}"), "expected an array");
                continue;
            };
            let mut vals = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => vals.push(s.clone()),
                    _ => self.err(&format!("{key}.{name}.{}", i + 1), "expected a string"),
                }
            }
            out.push((name.clone(), vals));
        }
        Some(out)
    }

    /// A nested record: runs `f` with a reader scoped to it, then reports its
    /// unknown fields. Absent/null records yield `None` (use the default).
    pub fn record<T>(
        &mut self,
        key: &str,
        known: &[&str],
        f: impl FnOnce(&mut Reader<'_>) -> T,
    ) -> Option<T> {
        let v = self.raw(key)?;
        let Value::Object(m) = v else {
            self.err(key, "expected a record");
            return None;
        };
        let prefix = self.path(key);
        let mut sub = Reader::new(m, &mut *self.errs, self.entity, self.ident);
        sub.prefix = prefix;
        let out = f(&mut sub);
        sub.accept(known);
        sub.finish();
        Some(out)
    }

    /// Reports every key that was neither read nor accepted as "unknown field".
    pub fn finish(mut self) {
        let detached = self.detached;
        let unknown = |(k, _, seen): &(&str, &Value, bool)| !seen && !detached.contains(k);
        if !self.fields.iter().any(unknown) {
            return;
        }
        // In the order the object's members have once the detached keys
        // are swap-removed (what a copy without them would iterate).
        let mut order: Vec<(&str, &Value, bool)> = self.fields.clone();
        for d in detached {
            if let Some(i) = order.iter().position(|(k, _, _)| k == d) {
                order.swap_remove(i);
            }
        }
        for (k, _, _) in order.into_iter().filter(|f| unknown(f)) {
            self.err(k, "unknown field");
        }
    }
}

/// A JSON number that is an integer (Kong accepts `80.0` as an integer).
pub fn as_integer(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.is_u64() {
        return Some(i64::MAX);
    }
    let f = n.as_f64()?;
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        Some(f as i64)
    } else {
        None
    }
}

/// Kong's `quoted_list`: `'a', 'b'`.
pub fn quoted_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// hosts and IPs (`kong/tools/ip.lua`)

/// What `normalize_ip` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Name,
    Ipv4,
    Ipv6,
}

/// Result of Kong's `normalize_ip`: kind, normalised host, optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub kind: HostKind,
    pub host: String,
    pub port: Option<u32>,
}

/// Kong's `hostname_type`: more than one colon means IPv6, digits and dots
/// only (ignoring a port colon) means IPv4, anything else a name.
pub fn hostname_type(name: &str) -> HostKind {
    if name.matches(':').count() > 1 {
        return HostKind::Ipv6;
    }
    let rest: String = name.chars().filter(|c| *c != ':').collect();
    if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.') {
        HostKind::Ipv4
    } else {
        HostKind::Name
    }
}

fn parse_port(p: &str) -> Result<u32, String> {
    if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
        return Err("invalid port".into());
    }
    let n: u64 = p.parse().unwrap_or(u64::MAX);
    if n > 65535 {
        return Err("invalid port number".into());
    }
    Ok(n as u32)
}

/// Kong's `normalize_ip`: validates a hostname / IPv4 / IPv6 with an
/// optional port and returns its normalised form.
pub fn normalize_ip(address: &str) -> Result<HostPort, String> {
    match hostname_type(address) {
        HostKind::Ipv4 => {
            let (addr, port) = match address.split_once(':') {
                Some((a, p)) => (a, Some(p)),
                None => (address, None),
            };
            let parts: Vec<&str> = addr.split('.').collect();
            let bad = || format!("invalid ipv4 address: {address}");
            if parts.len() != 4 {
                return Err(bad());
            }
            let mut octets = [0u32; 4];
            for (i, p) in parts.iter().enumerate() {
                if p.is_empty() || p.len() > 3 {
                    return Err(bad());
                }
                octets[i] = p.parse().map_err(|_| bad())?;
                if octets[i] > 255 {
                    return Err(bad());
                }
            }
            let port = match port {
                Some(p) => Some(parse_port(p).map_err(|e| {
                    if e == "invalid port number" {
                        e
                    } else {
                        bad()
                    }
                })?),
                None => None,
            };
            Ok(HostPort {
                kind: HostKind::Ipv4,
                host: format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3]),
                port,
            })
        }
        HostKind::Ipv6 => {
            let bad = || format!("invalid ipv6 address: {address}");
            let (inner, port) = if let Some(rest) = address.strip_prefix('[') {
                let Some((inner, after)) = rest.split_once(']') else {
                    return Err(bad());
                };
                let port = if after.is_empty() {
                    None
                } else {
                    let Some(p) = after.strip_prefix(':') else {
                        return Err("invalid ipv6 address".into());
                    };
                    Some(parse_port(p).map_err(|e| {
                        if e == "invalid port number" {
                            e
                        } else {
                            "invalid ipv6 address".to_string()
                        }
                    })?)
                };
                (inner, port)
            } else {
                (address, None)
            };
            let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| bad())?;
            let seg = ip.segments();
            let host = seg
                .iter()
                .map(|s| format!("{s:04x}"))
                .collect::<Vec<_>>()
                .join(":");
            Ok(HostPort {
                kind: HostKind::Ipv6,
                host,
                port,
            })
        }
        HostKind::Name => {
            let (name, port) = match address.rsplit_once(':') {
                Some((n, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
                    (n, Some(parse_port(p)?))
                }
                _ => (address, None),
            };
            let bad = || format!("invalid hostname: {address}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            {
                return Err(bad());
            }
            let segments: Vec<&str> = name.split('.').collect();
            let last = segments.len() - 1;
            for (i, seg) in segments.iter().enumerate() {
                // Only a trailing dot (FQDN) may leave an empty label.
                if seg.ends_with('-') || (seg.is_empty() && i != last) {
                    return Err(bad());
                }
            }
            Ok(HostPort {
                kind: HostKind::Name,
                host: name.to_string(),
                port,
            })
        }
    }
}

/// Kong's `host` typedef: a hostname or IP without a port.
pub fn validate_host(host: &str) -> Result<(), String> {
    match normalize_ip(host) {
        Err(e) if e == "invalid port number" => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {host}")),
        Ok(p) if p.port.is_some() => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

/// Kong's `host_with_optional_port` typedef.
pub fn validate_host_with_optional_port(host: &str) -> Result<(), String> {
    normalize_ip(host).map(|_| ())
}

/// Kong's `sni` typedef: a hostname, not an IP, without port.
pub fn validate_sni(host: &str) -> Result<(), String> {
    match normalize_ip(host) {
        Err(e) if e == "invalid port number" => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {host}")),
        Ok(p) if p.kind != HostKind::Name => Err("must not be an IP".into()),
        Ok(p) if p.port.is_some() => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

/// Kong's `wildcard_host` typedef (SNI names, route `snis`).
pub fn validate_wildcard_host(host: &str) -> Result<(), String> {
    let mut h = host.to_string();
    if let Some(idx) = host.find('*') {
        if idx != 0 && idx != host.len() - 1 {
            return Err("wildcard must be leftmost or rightmost character".into());
        }
        if host.matches('*').count() > 1 {
            return Err("only one wildcard must be specified".into());
        }
        h = host.replacen('*', "wildcard", 1);
    }
    match normalize_ip(&h) {
        Err(e) if e == "invalid port number" => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {h}")),
        Ok(p) if p.kind != HostKind::Name => Err("must not be an IP".into()),
        Ok(p) if p.port.is_some() => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

/// Route `hosts` element: at most one `*`, as a whole leftmost or rightmost
/// label, optional `:port`.
///
/// Unlike Kong's schema (pattern `%.%*$`), a rightmost wildcard may carry a
/// port too (`example.*:80`): Kong's router handles that form
/// (`split_host_port` in `kong/router/transform.lua`) and its unit specs use
/// it, only the schema pattern is anchored too tightly.
pub fn validate_route_host(host: &str) -> Result<(), String> {
    let stars = host.matches('*').count();
    if stars > 1 {
        return Err("invalid wildcard: must have at most one wildcard".into());
    }
    // Same port split as `normalize_ip` for names: a trailing `:digits`.
    let name = match host.rsplit_once(':') {
        Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    if stars == 1 && !(host.starts_with("*.") || name.ends_with(".*")) {
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".into());
    }
    validate_host_with_optional_port(&host.replace('*', "abc"))
}

/// Upstream `name`: a hostname without IP or port.
pub fn validate_upstream_name(name: &str) -> Result<(), String> {
    let label = format!("Invalid name ('{name}')");
    match normalize_ip(name) {
        Err(_) => Err(format!("{label}; must be a valid hostname")),
        Ok(p) if p.kind != HostKind::Name => Err(format!("{label}; no ip addresses allowed")),
        Ok(p) if p.port.is_some() => Err(format!("{label}; no port allowed")),
        Ok(_) => Ok(()),
    }
}

/// Target `target`: returns the normalised `host:port` (default port 8000,
/// IPv6 in brackets), as Kong's targets DAO stores it.
pub fn normalize_target(target: &str) -> Result<String, String> {
    let p = normalize_ip(target)
        .map_err(|_| format!("Invalid target ('{target}'); not a valid hostname or ip address"))?;
    let port = p.port.unwrap_or(8000);
    Ok(match p.kind {
        HostKind::Ipv6 => format!("[{}]:{port}", p.host),
        _ => format!("{}:{port}", p.host),
    })
}

/// `ip_or_cidr` typedef (route sources/destinations).
pub fn validate_ip_or_cidr(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() || s.parse::<ipnet::IpNet>().is_ok() {
        Ok(())
    } else {
        Err(format!("invalid ip or cidr range: '{s}'"))
    }
}

// ---------------------------------------------------------------------------
// names, tags, headers

/// `utf8_name` typedef: alphanumerics, `.-_~` and any non-ASCII.
pub fn validate_utf8_name(name: &str) -> Result<(), String> {
    if name
        .chars()
        .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || ".-_~".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid value '{name}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"
        ))
    }
}

/// `tag` typedef: printable ASCII except `,` and `/`, or any non-ASCII.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag
        .chars()
        .all(|c| !c.is_ascii() || c == ' ' || (c.is_ascii_graphic() && c != ',' && c != '/'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid tag '{tag}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
        ))
    }
}

/// `header_name` typedef.
pub fn validate_header_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

/// Route `headers` keys: a header name that is not `host`.
pub fn validate_route_header_name(name: &str) -> Result<(), String> {
    validate_header_name(name)?;
    if name.eq_ignore_ascii_case("host") {
        return Err(
            "cannot contain 'host' header, which must be specified in the 'hosts' attribute".into(),
        );
    }
    Ok(())
}

/// HTTP token (RFC 7230), used for cookie names.
pub fn validate_http_token(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    {
        Ok(())
    } else {
        Err(format!("contains one or more invalid characters. ASCII control characters (0-31;127), space, tab and the characters ()<>@,;:\\\"/?={{}}[] are not allowed.: {name}"))
    }
}

/// Route `methods` element: uppercase letters only.
pub fn validate_method(m: &str) -> Result<(), String> {
    if !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("invalid value: {m}"))
    }
}

// ---------------------------------------------------------------------------
// paths (`typedefs.path`, `typedefs.router_path`, `kong/tools/uri.lua`)

fn is_rfc3986_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".-_~/%:@!$&'()*+,;=".contains(c)
}

/// Which check of Kong's `validate_path` failed.
#[derive(Debug, PartialEq, Eq)]
enum PathErr {
    Rfc3986(String),
    Percent(String),
}

fn check_path_chars(path: &str) -> Result<(), PathErr> {
    if !path.starts_with('/') || !path.chars().all(is_rfc3986_path_char) {
        return Err(PathErr::Rfc3986(format!(
            "invalid path: '{path}' (characters outside of the reserved list of RFC 3986 found)"
        )));
    }
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let valid = b.get(i + 1).is_some_and(|c| c.is_ascii_hexdigit())
                && b.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit());
            if !valid {
                let end = (i + 3).min(b.len());
                let bad = String::from_utf8_lossy(&b[i..end]).into_owned();
                return Err(PathErr::Percent(format!(
                    "invalid url-encoded value: '{bad}'"
                )));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// `typedefs.path` (service path, healthcheck path, cookie path).
pub fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("should start with: /".into());
    }
    if path.contains("//") {
        return Err("must not have empty segments".into());
    }
    match check_path_chars(path) {
        Ok(()) => Ok(()),
        Err(PathErr::Rfc3986(e)) | Err(PathErr::Percent(e)) => Err(e),
    }
}

/// Percent-decodes unreserved and "other" characters but keeps reserved
/// ones (upper-casing their hex), then removes dot segments and merges
/// slashes: Kong's `normalize(uri, true)`.
pub fn normalize_uri(uri: &str) -> String {
    if uri.is_empty() || uri == "/" {
        return uri.to_string();
    }
    const RESERVED: &[u8] = b"!*'();:@&=+$,/?%#[]";
    let src = uri.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        if src[i] == b'%'
            && i + 2 < src.len()
            && src[i + 1].is_ascii_hexdigit()
            && src[i + 2].is_ascii_hexdigit()
        {
            let hex = &uri[i + 1..i + 3];
            let n = u8::from_str_radix(hex, 16).unwrap_or(0);
            if RESERVED.contains(&n) {
                decoded.push(b'%');
                decoded.extend_from_slice(hex.to_ascii_uppercase().as_bytes());
            } else {
                decoded.push(n);
            }
            i += 3;
        } else {
            decoded.push(src[i]);
            i += 1;
        }
    }
    let mut rest: &[u8] = &decoded;
    let mut out: Vec<&[u8]> = Vec::new();
    while !rest.is_empty() {
        if rest == b"/." {
            rest = b"/";
        } else if rest == b"/.." {
            rest = b"/";
            out.pop();
        } else if rest == b"." || rest == b".." {
            rest = b"";
        } else if rest.starts_with(b"../") {
            rest = &rest[3..];
        } else if rest.starts_with(b"./") || rest.starts_with(b"/./") {
            rest = &rest[2..];
        } else if rest.starts_with(b"/../") {
            rest = &rest[3..];
            out.pop();
        } else if rest.starts_with(b"//") {
            rest = &rest[1..];
        } else {
            match rest[1..].iter().position(|c| *c == b'/') {
                Some(p) => {
                    out.push(&rest[..p + 1]);
                    rest = &rest[p + 1..];
                }
                None => {
                    out.push(rest);
                    rest = b"";
                }
            }
        }
    }
    String::from_utf8_lossy(&out.concat()).into_owned()
}

/// Translates PCRE named groups `(?<name>` into the `(?P<name>` form (not
/// touching look-behinds `(?<=` / `(?<!`).
pub fn pcre_to_rust_regex(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 8);
    let mut rest = re;
    while let Some(pos) = rest.find("(?<") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 3..];
        if after.starts_with('=') || after.starts_with('!') {
            out.push_str("(?<");
        } else {
            out.push_str("(?P<");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A route path: `/prefix` (normalised, properly percent-encoded) or
/// `~/regex` (must compile with the `regex` crate, as the router uses it).
pub fn validate_router_path(path: &str) -> Result<(), String> {
    if !(path.starts_with('/') || path.starts_with("~/")) {
        return Err("should start with: / (fixed path) or ~/ (regex path)".into());
    }
    if path.contains("//") {
        return Err("must not have empty segments".into());
    }
    // Kong only enforces the percent-encoding part of the path typedef for
    // router paths; other characters are allowed and matched literally.
    if let Err(PathErr::Percent(e)) = check_path_chars(path) {
        return Err(e);
    }
    if let Some(re) = path.strip_prefix('~') {
        let translated = pcre_to_rust_regex(re);
        // Parsing finds every syntax error; compiling (about 100 µs a
        // regex, most of a large config's apply time) is left to the router,
        // which does it after the config is live. Only counted repetitions
        // can make a valid pattern too big to compile: those are compiled
        // here so that the config is refused as Kong would refuse it.
        let parsed = regex_syntax::Parser::new().parse(&translated);
        if parsed.is_ok() && !translated.contains('{') {
            return Ok(());
        }
        if let Err(e) = regex::Regex::new(&translated) {
            let msg = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            return Err(format!("invalid regex: '{re}' (regex error: {msg})"));
        }
        return Ok(());
    }
    // Without '%' nothing is decoded and without "/." there is no dot
    // segment ("//" is refused above): the path is its own normal form.
    if !path.contains('%') && !path.contains("/.") {
        return Ok(());
    }
    let normalized = normalize_uri(path);
    if normalized != path {
        return Err(format!(
            "non-normalized path, consider use '{normalized}' instead"
        ));
    }
    Ok(())
}

/// A vault reference (`{vault://...}`), resolved later: referenceable
/// fields (`certificates.cert`, `.key`, ...) skip value checks for it.
pub fn is_vault_reference(s: &str) -> bool {
    s.starts_with("{vault://")
}

/// A certificate that parsed: the DER of each PEM block (leaf first) and
/// what the entity checks need from the leaf.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    pub chain: Vec<Vec<u8>>,
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// The leaf's public key algorithm (OID, dotted): Kong's "key type".
    pub key_type: String,
    pub not_after_unix: i64,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
}

/// Kong's `typedefs.certificate` (`openssl_x509.new`): PEM with at least one
/// certificate, each a well-formed X.509 certificate. The reason starts
/// with "invalid certificate: ", as Kong's.
pub fn parse_certificate(pem: &str) -> Result<ParsedCert, String> {
    let invalid = |why: String| format!("invalid certificate: {why}");
    let ders = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("invalid PEM: {e}")))?;
    let Some(leaf_der) = ders.first() else {
        return Err(invalid("not a PEM-encoded certificate".to_string()));
    };
    for der in &ders {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok(([], _)) => {}
            Ok(_) => return Err(invalid("trailing data after the certificate".to_string())),
            Err(e) => return Err(invalid(format!("cannot parse X.509: {e}"))),
        }
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der.as_ref())
        .map_err(|e| invalid(format!("cannot parse X.509: {e}")))?;
    Ok(ParsedCert {
        spki: leaf.public_key().raw.to_vec(),
        key_type: leaf.public_key().algorithm.algorithm.to_id_string(),
        not_after_unix: leaf.validity().not_after.timestamp(),
        is_ca: leaf.is_ca(),
        chain: ders.iter().map(|d| d.as_ref().to_vec()).collect(),
    })
}

/// A private key that parsed and loads for signing.
#[derive(Debug)]
pub struct ParsedKey {
    /// Its public half as SubjectPublicKeyInfo DER, when the provider can
    /// tell (ring can for every key it loads).
    pub spki: Option<Vec<u8>>,
}

/// Kong's `typedefs.key` (`openssl_pkey.new`): a PEM private key (PKCS#8,
/// PKCS#1 or SEC1). Reasons start with "invalid key: " and never quote the
/// key (PEM parser errors can, so they are not passed on).
pub fn parse_key(pem: &str) -> Result<ParsedKey, String> {
    let der = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|_| "invalid key: invalid PEM, cannot decode a private key from it".to_string())?
        .ok_or_else(|| "invalid key: not a PEM-encoded private key".to_string())?;
    let key = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|_| {
        "invalid key: unsupported or malformed private key (supported: RSA of 2048+ bits, ECDSA P-256/P-384, Ed25519)"
            .to_string()
    })?;
    Ok(ParsedKey {
        spki: key.public_key().map(|k| k.as_ref().to_vec()),
    })
}

/// Kong's `cert:get_pubkey():to_PEM() ~= key:to_PEM("public")`: the key's
/// public half is the certificate's SubjectPublicKeyInfo. Unknown (no
/// public key from the provider) counts as a match.
pub fn key_matches(cert: &ParsedCert, key: &ParsedKey) -> bool {
    key.spki.as_ref().is_none_or(|spki| *spki == cert.spki)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn router_paths() {
        assert!(validate_router_path("/").is_ok());
        assert!(validate_router_path("/foo/bar").is_ok());
        assert!(validate_router_path("/foo%2Fbar").is_ok());
        assert!(validate_router_path("~/users/(?<id>\\d+)$").is_ok());
        assert!(validate_router_path("~/(?<=a)b").is_err()); // look-behind unsupported by `regex`
        assert_eq!(
            validate_router_path("foo").unwrap_err(),
            "should start with: / (fixed path) or ~/ (regex path)"
        );
        assert_eq!(
            validate_router_path("/a//b").unwrap_err(),
            "must not have empty segments"
        );
        assert_eq!(
            validate_router_path("/a/../b").unwrap_err(),
            "non-normalized path, consider use '/b' instead"
        );
        assert_eq!(
            validate_router_path("/a/%7e").unwrap_err(),
            "non-normalized path, consider use '/a/~' instead"
        );
        assert_eq!(
            validate_router_path("/a%2fb").unwrap_err(),
            "non-normalized path, consider use '/a%2Fb' instead"
        );
        assert_eq!(
            validate_router_path("/a%zz").unwrap_err(),
            "invalid url-encoded value: '%zz'"
        );
        assert_eq!(
            validate_router_path("/a%2").unwrap_err(),
            "invalid url-encoded value: '%2'"
        );
        assert!(validate_router_path("~/[a-")
            .unwrap_err()
            .starts_with("invalid regex: '/[a-'"));
    }

    #[test]
    fn service_paths() {
        assert!(validate_path("/x").is_ok());
        assert_eq!(validate_path("x").unwrap_err(), "should start with: /");
        assert!(validate_path("/a b").unwrap_err().contains("RFC 3986"));
        assert_eq!(
            validate_path("/a//b").unwrap_err(),
            "must not have empty segments"
        );
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_uri("/a/./b/../c"), "/a/c");
        assert_eq!(normalize_uri("/a//b"), "/a/b");
        assert_eq!(normalize_uri("/%41%2f"), "/A%2F");
        assert_eq!(normalize_uri("/.."), "/");
    }

    #[test]
    fn route_hosts() {
        assert!(validate_route_host("example.com").is_ok());
        assert!(validate_route_host("*.example.com").is_ok());
        assert!(validate_route_host("example.*").is_ok());
        assert!(validate_route_host("example.com:8080").is_ok());
        assert!(validate_route_host("*.example.com:8080").is_ok());
        // Kong's router spec forms (08-router_spec "[wildcard host]").
        assert!(validate_route_host("*.example.com:8123").is_ok());
        assert!(validate_route_host("*.route.net:123").is_ok());
        assert!(validate_route_host("route.*:123").is_ok());
        assert!(validate_route_host("example.*:80").is_ok());
        assert!(validate_route_host("example.*:65535").is_ok());
        assert_eq!(
            validate_route_host("example.*:65536").unwrap_err(),
            "invalid port number"
        );
        assert_eq!(
            validate_route_host("*.example.com:99999").unwrap_err(),
            "invalid port number"
        );
        // Only digits make a port: otherwise the `*` is not the last label.
        for h in [
            "example.*:",
            "example.*:http",
            "example.*x:80",
            "a.*.com:80",
            "*:80",
        ] {
            assert_eq!(
                validate_route_host(h).unwrap_err(),
                "invalid wildcard: must be placed at leftmost or rightmost label",
                "{h}"
            );
        }
        assert_eq!(
            validate_route_host("*.example.*:80").unwrap_err(),
            "invalid wildcard: must have at most one wildcard"
        );
        assert!(validate_route_host("*.example.com:8080:1").is_err());
        assert_eq!(
            validate_route_host("*.*.com").unwrap_err(),
            "invalid wildcard: must have at most one wildcard"
        );
        assert_eq!(
            validate_route_host("a.*.com").unwrap_err(),
            "invalid wildcard: must be placed at leftmost or rightmost label"
        );
        assert_eq!(
            validate_route_host("*example.com").unwrap_err(),
            "invalid wildcard: must be placed at leftmost or rightmost label"
        );
        assert!(validate_route_host("exa mple.com").is_err());
        assert_eq!(
            validate_route_host("example.com:99999").unwrap_err(),
            "invalid port number"
        );
    }

    #[test]
    fn hosts_and_ips() {
        assert!(validate_host("example.com").is_ok());
        assert!(validate_host("10.0.0.1").is_ok());
        assert!(validate_host("::1").is_ok());
        assert!(validate_host("my_host.internal.").is_ok());
        assert_eq!(
            validate_host("example.com:80").unwrap_err(),
            "must not have a port"
        );
        assert_eq!(
            validate_host("ex ample").unwrap_err(),
            "invalid value: ex ample"
        );
        assert_eq!(
            validate_host("300.1.1.1").unwrap_err(),
            "invalid value: 300.1.1.1"
        );
        assert!(validate_host("a-.b").is_err());
        assert!(validate_sni("10.0.0.1").is_err());
        assert!(validate_wildcard_host("*.example.com").is_ok());
        assert!(validate_wildcard_host("a.*.com").is_err());
        assert!(validate_upstream_name("backend.svc").is_ok());
        assert_eq!(
            validate_upstream_name("10.0.0.1").unwrap_err(),
            "Invalid name ('10.0.0.1'); no ip addresses allowed"
        );
        assert_eq!(
            validate_upstream_name("a:80").unwrap_err(),
            "Invalid name ('a:80'); no port allowed"
        );
        assert!(validate_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(validate_ip_or_cidr("10.0.0.1").is_ok());
        assert!(validate_ip_or_cidr("nope").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(normalize_target("example.com").unwrap(), "example.com:8000");
        assert_eq!(
            normalize_target("example.com:81").unwrap(),
            "example.com:81"
        );
        assert_eq!(normalize_target("10.0.0.1").unwrap(), "10.0.0.1:8000");
        assert_eq!(
            normalize_target("::1").unwrap(),
            "[0000:0000:0000:0000:0000:0000:0000:0001]:8000"
        );
        assert_eq!(
            normalize_target("[::1]:81").unwrap(),
            "[0000:0000:0000:0000:0000:0000:0000:0001]:81"
        );
        assert!(normalize_target("bad host").is_err());
        assert!(normalize_target("a:70000").is_err());
    }

    #[test]
    fn names_tags_headers_methods() {
        assert!(validate_utf8_name("my-route_1.x~").is_ok());
        assert!(validate_utf8_name("caf\u{e9}").is_ok());
        assert!(validate_utf8_name("a b").is_err());
        assert!(validate_tag("team a").is_ok());
        assert!(validate_tag("a,b").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_route_header_name("x-foo_bar").is_ok());
        assert!(validate_route_header_name("Host")
            .unwrap_err()
            .contains("'host' header"));
        assert!(validate_route_header_name("x foo").is_err());
        assert!(validate_method("GET").is_ok());
        assert_eq!(validate_method("get").unwrap_err(), "invalid value: get");
        assert!(validate_http_token("session").is_ok());
        assert!(validate_http_token("a b").is_err());
    }

    #[test]
    fn pcre_translation() {
        assert_eq!(pcre_to_rust_regex("/(?<id>\\d+)"), "/(?P<id>\\d+)");
        assert_eq!(pcre_to_rust_regex("(?<=x)(?<!y)"), "(?<=x)(?<!y)");
    }
}
