//! One compiled matcher (a route, or one path group of a split route) and its
//! predicates, following `transform.get_expression` / `get_priority`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use uuid::Uuid;

use super::lazy::LazyRegex;

use super::{MatchedPrefix, RequestInfo, RouteView, RouterError};

/// How a host or SNI pattern compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    Exact,
    /// `*.x` → ends_with(".x")
    Suffix,
    /// `x.*` → starts_with("x.")
    Prefix,
}

#[derive(Debug)]
pub(crate) struct HostPat {
    pub(crate) kind: HostKind,
    pub(crate) value: Box<str>,
    /// `net.dst.port == port` when the route host had one.
    pub(crate) port: Option<i64>,
}

impl HostPat {
    fn name_ok(&self, host: &str) -> bool {
        match self.kind {
            HostKind::Exact => host == &*self.value,
            HostKind::Suffix => host.ends_with(&*self.value),
            HostKind::Prefix => host.starts_with(&*self.value),
        }
    }
}

#[derive(Debug)]
pub(crate) enum PathPred {
    Prefixes(Vec<Arc<str>>),
    Regexes(Vec<LazyRegex>),
}

#[derive(Debug)]
pub(crate) enum HeaderVal {
    /// Lower-cased (ASCII, like Lua's `string.lower`) expected value.
    Eq(Box<str>),
    /// Unanchored search on the lower-cased request value.
    Re(LazyRegex),
}

#[derive(Debug)]
pub(crate) struct HeaderPred {
    pub(crate) name: http::HeaderName,
    pub(crate) values: Vec<HeaderVal>,
}

#[derive(Debug)]
pub(crate) struct Matcher {
    /// Position of the route in `Router::routes`.
    pub(crate) route: usize,
    pub(crate) id: Uuid,
    pub(crate) priority: u64,
    pub(crate) methods: Vec<Box<str>>,
    /// Empty = no host predicate.
    pub(crate) hosts: Vec<HostPat>,
    pub(crate) paths: Option<PathPred>,
    pub(crate) headers: Vec<HeaderPred>,
    pub(crate) snis: Vec<HostPat>,
}

/// The request, pre-split once per lookup.
pub(crate) struct Req<'a> {
    method: &'a str,
    /// `http.host`: name part of the Host header.
    pub(crate) host: Option<&'a str>,
    /// `net.dst.port`: Host header port, else the listener port.
    port: i64,
    pub(crate) path: &'a str,
    headers: &'a http::HeaderMap,
    sni: Option<&'a str>,
    https: bool,
}

impl<'a> Req<'a> {
    pub(crate) fn new(r: &RequestInfo<'a>) -> Req<'a> {
        let (host, port) = match r.host {
            Some(h) => {
                let (name, port) = split_host_port(h);
                (Some(name), port)
            }
            None => (None, None),
        };
        Req {
            method: r.method,
            host,
            port: port.unwrap_or(i64::from(r.listener_port)),
            path: r.path,
            headers: r.headers,
            sni: r.sni,
            https: r.https,
        }
    }
}

/// Lua `tonumber` on a port string, for the forms that matter: decimal
/// (optionally signed, surrounding spaces) and `0x` hex. Other forms are
/// "not a number" (Kong would accept floats too; ports never look like that).
fn lua_port_number(s: &str) -> Option<i64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (t, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Overlong numbers are still numbers to Lua; they just never equal a port.
    let v = i64::from_str_radix(digits, radix).unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

/// Kong's `split_host_port`: split at the first ':'; if what follows is not
/// a number the whole string is the host.
pub(crate) fn split_host_port(s: &str) -> (&str, Option<i64>) {
    match s.find(':') {
        Some(p) => match lua_port_number(&s[p + 1..]) {
            Some(port) => (&s[..p], Some(port)),
            None => (s, None),
        },
        None => (s, None),
    }
}

impl Matcher {
    fn methods_ok(&self, r: &Req<'_>) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| &**m == r.method)
    }

    fn hosts_ok(&self, r: &Req<'_>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = r.host else {
            return false;
        };
        self.hosts
            .iter()
            .any(|h| h.name_ok(host) && h.port.is_none_or(|p| p == r.port))
    }

    fn snis_ok(&self, r: &Req<'_>) -> bool {
        if self.snis.is_empty() || !r.https {
            return true;
        }
        match r.sni {
            Some(sni) => self.snis.iter().any(|s| s.name_ok(sni)),
            None => false,
        }
    }

    fn headers_ok(&self, r: &Req<'_>) -> bool {
        self.headers.iter().all(|h| {
            r.headers
                .get_all(&h.name)
                .iter()
                .any(|v| match std::str::from_utf8(v.as_bytes()) {
                    Ok(v) => header_value_ok(v, &h.values),
                    Err(_) => false,
                })
        })
    }

    /// Compiles this matcher's regexes; how many were not compiled yet.
    pub(crate) fn warm(&self) -> usize {
        let paths = match &self.paths {
            Some(PathPred::Regexes(rs)) => rs.iter().filter(|re| re.warm()).count(),
            _ => 0,
        };
        let headers = self
            .headers
            .iter()
            .flat_map(|h| h.values.iter())
            .filter(|v| matches!(v, HeaderVal::Re(re) if re.warm()))
            .count();
        paths + headers
    }

    /// Every predicate except the path one (the index guarantees that one).
    pub(crate) fn non_path_ok(&self, r: &Req<'_>) -> bool {
        self.methods_ok(r) && self.hosts_ok(r) && self.snis_ok(r) && self.headers_ok(r)
    }

    #[cfg(test)]
    pub(crate) fn path_ok(&self, path: &str) -> bool {
        match &self.paths {
            None => true,
            Some(PathPred::Prefixes(ps)) => ps.iter().any(|p| path.starts_with(&**p)),
            Some(PathPred::Regexes(rs)) => rs.iter().any(|re| re.is_match(path)),
        }
    }

    /// All predicates, evaluated directly (reference path for tests).
    #[cfg(test)]
    pub(crate) fn all_ok(&self, r: &Req<'_>) -> bool {
        self.non_path_ok(r) && self.path_ok(r.path)
    }

    /// What atc-router records for `http.path` on the winning matcher: the
    /// first path (configuration order, `||` short-circuits) that matched.
    pub(crate) fn path_result(&self, path: &str) -> (MatchedPrefix, Vec<(Option<String>, String)>) {
        match &self.paths {
            None => (MatchedPrefix::Root, Vec::new()),
            Some(PathPred::Prefixes(ps)) => match ps.iter().find(|p| path.starts_with(&***p)) {
                // Kong turns an empty matched value into nil, i.e. "/".
                Some(p) if !p.is_empty() => (MatchedPrefix::Prefix(p.clone()), Vec::new()),
                _ => (MatchedPrefix::Root, Vec::new()),
            },
            Some(PathPred::Regexes(rs)) => {
                for re in rs.iter().filter_map(LazyRegex::get) {
                    if let Some(caps) = re.captures(path) {
                        let whole = caps.get(0).map_or("", |m| m.as_str());
                        let prefix = if whole.is_empty() {
                            MatchedPrefix::Root
                        } else {
                            MatchedPrefix::Regex(whole.to_owned())
                        };
                        return (prefix, collect_captures(re, &caps));
                    }
                }
                (MatchedPrefix::Root, Vec::new())
            }
        }
    }
}

fn collect_captures(re: &Regex, caps: &regex::Captures<'_>) -> Vec<(Option<String>, String)> {
    // Kong returns no uri_captures when only group 0 is present.
    if !caps.iter().skip(1).any(|c| c.is_some()) {
        return Vec::new();
    }
    let mut out: Vec<(Option<String>, String)> = caps
        .iter()
        .map(|c| (None, c.map_or(String::new(), |m| m.as_str().to_owned())))
        .collect();
    for name in re.capture_names().flatten() {
        if let Some(m) = caps.name(name) {
            out.push((Some(name.to_owned()), m.as_str().to_owned()));
        }
    }
    out
}

/// `any(lower(http.headers.x)) == "v"` / `~ "re"` for one request value.
fn header_value_ok(v: &str, vals: &[HeaderVal]) -> bool {
    // atc-router lowers with Unicode rules; avoid allocating for ASCII.
    let mut lowered: Option<Cow<'_, str>> = None;
    vals.iter().any(|hv| match hv {
        HeaderVal::Eq(want) => {
            if v.is_ascii() {
                v.eq_ignore_ascii_case(want)
            } else {
                lowered
                    .get_or_insert_with(|| Cow::Owned(v.to_lowercase()))
                    .as_ref()
                    == &**want
            }
        }
        HeaderVal::Re(re) => {
            let l = lowered.get_or_insert_with(|| {
                if v.is_ascii() && !v.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Borrowed(v)
                } else {
                    Cow::Owned(v.to_lowercase())
                }
            });
            re.is_match(l)
        }
    })
}

pub(crate) fn route_label(spec: &RouteView<'_>) -> String {
    match spec.name {
        Some(n) => format!("{n:?} ({})", spec.id),
        None => spec.id.to_string(),
    }
}

fn invalid(
    spec: &RouteView<'_>,
    field: &'static str,
    value: &str,
    reason: impl ToString,
) -> RouterError {
    RouterError::InvalidField {
        route: route_label(spec),
        field,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// Namespace of the v5 ids Kong gives to split routes (`transform.lua`).
const SPLIT_NAMESPACE: Uuid = Uuid::from_u128(0x7f145bf9_0dce_4f91_98eb_debbce4b9f6b);

fn is_regex(p: &str) -> bool {
    p.starts_with('~')
}

/// `group_by_regex_or_length`: all regexes in one group, prefixes grouped by
/// byte length, groups in order of first appearance.
fn group_paths(paths: &[String]) -> Vec<Vec<&str>> {
    let mut keys: Vec<usize> = Vec::new();
    let mut groups: Vec<Vec<&str>> = Vec::new();
    for p in paths {
        // Length 0 never collides with a real prefix: Kong uses key 0 for
        // regexes too, and an empty prefix is not a valid path.
        let k = if is_regex(p) { 0 } else { p.len() };
        match keys.iter().position(|&x| x == k) {
            Some(i) => groups[i].push(p),
            None => {
                keys.push(k);
                groups.push(vec![p]);
            }
        }
    }
    groups
}

/// Regexes of one router build, by pattern: each distinct pattern is
/// checked once and shared (routes often repeat a header regex).
#[derive(Default)]
pub(crate) struct RegexCache {
    built: HashMap<String, LazyRegex>,
}

impl RegexCache {
    pub(crate) fn len(&self) -> usize {
        self.built.len()
    }

    /// `pattern`, syntax-checked; compiled on first use (see [`LazyRegex`]).
    fn get(&mut self, pattern: &str) -> Result<LazyRegex, String> {
        if let Some(re) = self.built.get(pattern) {
            return Ok(re.clone());
        }
        let re = LazyRegex::new(pattern)?;
        self.built.insert(pattern.to_owned(), re.clone());
        Ok(re)
    }
}

/// Compiles `spec` (at position `pos`) into one matcher per path group.
pub(crate) fn compile_route(
    spec: &RouteView<'_>,
    pos: usize,
    out: &mut Vec<Matcher>,
    regexes: &mut RegexCache,
) -> Result<(), RouterError> {
    for p in spec.paths {
        if p.is_empty() {
            return Err(invalid(spec, "paths", p, "empty path"));
        }
    }
    let groups = group_paths(spec.paths);
    if spec.paths.len() > 1 && groups.len() > 1 {
        for (i, g) in groups.iter().enumerate() {
            let id = Uuid::new_v5(
                &SPLIT_NAMESPACE,
                format!("{}#{}", spec.id, i + 1).as_bytes(),
            );
            out.push(compile_matcher(spec, pos, id, g, regexes)?);
        }
    } else {
        let paths: Vec<&str> = spec.paths.iter().map(String::as_str).collect();
        out.push(compile_matcher(spec, pos, spec.id, &paths, regexes)?);
    }
    Ok(())
}

/// The pattern compiled for a regex path: transform.lua drops '~', anchors
/// with '^' and rewrites "?<" textually.
pub fn path_regex_pattern(p: &str) -> String {
    format!("^{}", p[1..].replace("?<", "?P<"))
}

fn compile_path_regex(
    spec: &RouteView<'_>,
    p: &str,
    regexes: &mut RegexCache,
) -> Result<LazyRegex, RouterError> {
    regexes
        .get(&path_regex_pattern(p))
        .map_err(|e| invalid(spec, "paths", p, e))
}

fn host_pattern(h: &str, with_port: bool) -> HostPat {
    let (name, port) = if with_port {
        split_host_port(h)
    } else {
        (h, None)
    };
    let (kind, value) = if let Some(rest) = name.strip_prefix('*') {
        (HostKind::Suffix, rest)
    } else if let Some(rest) = name.strip_suffix('*') {
        (HostKind::Prefix, rest)
    } else {
        (HostKind::Exact, name)
    };
    HostPat {
        kind,
        value: value.into(),
        port,
    }
}

/// `sni_op_transform` + `sni_val_transform`.
fn sni_pattern(s: &str) -> HostPat {
    if s.starts_with('*') {
        let v = if s.len() > 1 {
            s.strip_suffix('.').unwrap_or(s)
        } else {
            s
        };
        HostPat {
            kind: HostKind::Suffix,
            value: v.get(1..).unwrap_or("").into(),
            port: None,
        }
    } else if let Some(v) = s.strip_suffix('*') {
        HostPat {
            kind: HostKind::Prefix,
            value: v.into(),
            port: None,
        }
    } else {
        let v = if s.len() > 1 {
            s.strip_suffix('.').unwrap_or(s)
        } else {
            s
        };
        HostPat {
            kind: HostKind::Exact,
            value: v.into(),
            port: None,
        }
    }
}

fn compile_matcher(
    spec: &RouteView<'_>,
    pos: usize,
    id: Uuid,
    paths: &[&str],
    regexes: &mut RegexCache,
) -> Result<Matcher, RouterError> {
    let path_pred = if paths.is_empty() {
        None
    } else if is_regex(paths[0]) {
        let rs = paths
            .iter()
            .map(|p| compile_path_regex(spec, p, regexes))
            .collect::<Result<Vec<_>, _>>()?;
        Some(PathPred::Regexes(rs))
    } else {
        Some(PathPred::Prefixes(
            paths.iter().map(|p| Arc::<str>::from(*p)).collect(),
        ))
    };

    let hosts: Vec<HostPat> = spec
        .hosts
        .into_iter()
        .flatten()
        .map(|h| host_pattern(h, true))
        .collect();

    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, values) in spec.headers {
        let norm = name.to_ascii_lowercase().replace('_', "-");
        let hname = http::HeaderName::from_bytes(norm.as_bytes())
            .map_err(|e| invalid(spec, "headers", name, e))?;
        if hname == http::header::HOST {
            return Err(invalid(
                spec,
                "headers",
                name,
                "cannot match on the Host header",
            ));
        }
        if values.is_empty() {
            return Err(invalid(spec, "headers", name, "no values"));
        }
        let mut vals = Vec::with_capacity(values.len());
        for v in values {
            if let Some(re) = v.strip_prefix("~*") {
                // Kong lower-cases the pattern itself too (so `\S` becomes `\s`).
                let re = regexes
                    .get(&re.to_ascii_lowercase())
                    .map_err(|e| invalid(spec, "headers", v, e))?;
                vals.push(HeaderVal::Re(re));
            } else {
                vals.push(HeaderVal::Eq(v.to_ascii_lowercase().into()));
            }
        }
        headers.push(HeaderPred {
            name: hname,
            values: vals,
        });
    }

    let snis: Vec<HostPat> = spec.snis.iter().map(|s| sni_pattern(s)).collect();

    if spec.methods.is_empty()
        && hosts.is_empty()
        && path_pred.is_none()
        && headers.is_empty()
        && snis.is_empty()
    {
        return Err(RouterError::NoMatchingField {
            route: route_label(spec),
        });
    }

    let priority = priority(spec, paths);
    Ok(Matcher {
        route: pos,
        id,
        priority,
        methods: spec.methods.iter().map(|m| m.as_str().into()).collect(),
        hosts,
        paths: path_pred,
        headers,
        snis,
    })
}

/// `transform.get_priority`, including what LuaJIT actually computes: the
/// match weight, header count and regex priority are shifted by
/// `bit.lshift` on plain Lua numbers, i.e. as 32-bit integers with the shift
/// count taken mod 32 (61 → 29, 52 → 20, 19 → 19); the 32-bit result is then
/// sign-extended when OR-ed with the 64-bit PLAIN_HOST_ONLY / REGEX_URL bits
/// (or converted to `uintptr_t` for atc-router). So weight ≥ 4 or a negative
/// regex_priority set all bits 32..63.
pub(crate) fn priority(spec: &RouteView<'_>, paths: &[&str]) -> u64 {
    const PLAIN_HOST_ONLY_BIT: u64 = 1 << 60;
    const REGEX_URL_BIT: u64 = 1 << 51;

    let hosts_present = spec.hosts.as_ref().is_some_and(|h| !h.is_empty());
    let header_count = spec.headers.len().min(255) as u32;
    let mut weight: u32 = 0;
    weight += u32::from(!spec.methods.is_empty());
    weight += u32::from(hosts_present);
    weight += u32::from(header_count > 0);
    weight += u32::from(!spec.snis.is_empty());
    weight += u32::from(!paths.is_empty());

    let plain_host_only = spec
        .hosts
        .as_ref()
        .is_some_and(|hs| hs.iter().all(|h| !h.contains('*')));
    let regex_url = paths.first().is_some_and(|p| is_regex(p));
    let uri_length = if regex_url {
        0
    } else {
        paths.first().map_or(0, |p| p.len())
    };

    // tobit(): Lua number to int32 modulo 2^32.
    let rp = if regex_url {
        spec.regex_priority as u32
    } else {
        0
    };
    let low: u32 =
        (weight << 29) | (header_count << 20) | rp.wrapping_shl(19) | (uri_length as u32 & 0x7FFFF);
    let mut p = low as i32 as i64 as u64;
    if plain_host_only {
        p |= PLAIN_HOST_ONLY_BIT;
    }
    if regex_url {
        p |= REGEX_URL_BIT;
    }
    p
}
