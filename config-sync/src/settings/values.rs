//! Parsers for individual setting values (booleans, numbers, nginx sizes,
//! header tokens, trusted IPs, ...). Each returns a Kong-worded reason on
//! failure; the caller attaches the key name as the user wrote it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

/// Kong's `array` type: comma separated, entries trimmed, empty entries dropped.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Kong `boolean`/`ngx_boolean`. Kong silently maps anything that is not
/// `on`/`true` to false; we reject typos instead so `KONG_X=yes` is not
/// quietly treated as off.
pub(crate) fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" | "" => Ok(false),
        _ => Err(format!(
            "{name} is not a boolean: '{value}' (on, off, true, false)"
        )),
    }
}

/// Kong `number` restricted to non-negative integers (all our numeric keys
/// are counts, sizes or seconds).
pub(crate) fn parse_uint(name: &str, value: &str) -> Result<u64, String> {
    match value.parse::<i128>() {
        Ok(n) if n < 0 => Err(format!("{name} must be 0 or greater")),
        Ok(n) => u64::try_from(n).map_err(|_| format!("{name} is too large: '{value}'")),
        Err(_) => Err(format!("{name} is not a number: '{value}'")),
    }
}

/// Kong's enum check message.
pub(crate) fn enum_error(name: &str, value: &str, allowed: &[&str]) -> String {
    format!(
        "{name} has an invalid value: '{value}' ({})",
        allowed.join(", ")
    )
}

/// nginx `size` syntax: an integer with optional k/K, m/M or g/G suffix.
pub fn parse_nginx_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let (digits, mult) = match value.char_indices().last()? {
        (i, 'k' | 'K') => (&value[..i], 1024u64),
        (i, 'm' | 'M') => (&value[..i], 1024 * 1024),
        (i, 'g' | 'G') => (&value[..i], 1024 * 1024 * 1024),
        _ => (value, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

pub(crate) fn parse_size(name: &str, value: &str) -> Result<u64, String> {
    parse_nginx_size(value).ok_or_else(|| {
        format!("{name} is not a valid nginx size: '{value}' (e.g. 512, 8k, 10m, 1g)")
    })
}

/// nginx time syntax (`ngx_parse_time`): `60`, `60s`, `500ms`, `1m30s`,
/// `1h`; units ms, s, m, h, d, w, M (30 d), y (365 d); a bare number is
/// seconds. `None` when malformed.
pub fn parse_nginx_time(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let b = v.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: u64 = v[start..i].parse().ok()?;
        let unit_ms: u64 = match &b[i..] {
            [b'm', b's', ..] => {
                i += 2;
                1
            }
            [b's', ..] => {
                i += 1;
                1000
            }
            [b'm', ..] => {
                i += 1;
                60_000
            }
            [b'h', ..] => {
                i += 1;
                3_600_000
            }
            [b'd', ..] => {
                i += 1;
                86_400_000
            }
            [b'w', ..] => {
                i += 1;
                7 * 86_400_000
            }
            [b'M', ..] => {
                i += 1;
                30 * 86_400_000
            }
            [b'y', ..] => {
                i += 1;
                365 * 86_400_000
            }
            // A bare number only as the last (or only) part.
            [] => 1000,
            [b' ', ..] => 1000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
    }
    Some(Duration::from_millis(total_ms))
}

/// A timeout setting in nginx time syntax; zero is refused (nginx would
/// time out at once).
pub(crate) fn parse_nginx_time_setting(name: &str, value: &str) -> Result<Duration, String> {
    match parse_nginx_time(value) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("{name} must be greater than 0, got '{value}'")),
        None => Err(format!(
            "{name} is not a valid nginx time: '{value}' (e.g. 60s, 500ms, 1m)"
        )),
    }
}

/// nginx `large_client_header_buffers number size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LargeHeaderBuffers {
    pub number: u32,
    /// Bytes per buffer; also the maximum size of a single request line or header.
    pub size: u64,
}

impl Default for LargeHeaderBuffers {
    fn default() -> Self {
        // nginx's own default
        Self {
            number: 4,
            size: 8 * 1024,
        }
    }
}

pub(crate) fn parse_large_header_buffers(
    name: &str,
    value: &str,
) -> Result<LargeHeaderBuffers, String> {
    let err = || format!("{name} must be of form: <number> <size> (e.g. '4 8k'), got '{value}'");
    let mut parts = value.split_whitespace();
    let (Some(n), Some(s), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err());
    };
    let number = n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(err)?;
    let size = parse_nginx_size(s).filter(|s| *s >= 1).ok_or_else(err)?;
    Ok(LargeHeaderBuffers { number, size })
}

/// `nginx_worker_processes` / `nginx_main_worker_processes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerProcesses {
    /// One per CPU core.
    #[default]
    Auto,
    Count(u32),
}

impl WorkerProcesses {
    pub fn resolve(self, available_cpus: usize) -> usize {
        match self {
            WorkerProcesses::Auto => available_cpus.max(1),
            WorkerProcesses::Count(n) => n as usize,
        }
    }
}

impl std::fmt::Display for WorkerProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerProcesses::Auto => f.write_str("auto"),
            WorkerProcesses::Count(n) => write!(f, "{n}"),
        }
    }
}

pub(crate) fn parse_worker_processes(name: &str, value: &str) -> Result<WorkerProcesses, String> {
    if value == "auto" {
        return Ok(WorkerProcesses::Auto);
    }
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(WorkerProcesses::Count(n)),
        _ => Err(format!(
            "{name} must be 'auto' or a positive integer, got '{value}'"
        )),
    }
}

/// Kong's `log_level` values (nginx severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Debug,
    Info,
    #[default]
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

impl LogLevel {
    pub const NAMES: [&'static str; 8] = [
        "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Crit => "crit",
            LogLevel::Alert => "alert",
            LogLevel::Emerg => "emerg",
        }
    }

    /// `log` has no notice/crit/alert/emerg; map to the nearest level that
    /// still lets the same messages through.
    pub fn to_level_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info | LogLevel::Notice => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Crit | LogLevel::Alert | LogLevel::Emerg => {
                log::LevelFilter::Error
            }
        }
    }
}

pub(crate) fn parse_log_level(name: &str, value: &str) -> Result<LogLevel, String> {
    Ok(match value {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "notice" => LogLevel::Notice,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "crit" => LogLevel::Crit,
        "alert" => LogLevel::Alert,
        "emerg" => LogLevel::Emerg,
        _ => return Err(enum_error(name, value, &LogLevel::NAMES)),
    })
}

/// `proxy_access_log` / `proxy_error_log`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogTarget {
    #[default]
    Off,
    /// Path as written (relative paths are relative to `prefix`), plus an
    /// optional nginx log format name that may follow the path.
    Path {
        path: PathBuf,
        format: Option<String>,
    },
}

impl LogTarget {
    /// Where to write, with relative paths joined to `prefix`; `None` when off.
    pub fn resolved_path(&self, prefix: &Path) -> Option<PathBuf> {
        match self {
            LogTarget::Off => None,
            LogTarget::Path { path, .. } if path.is_absolute() => Some(path.clone()),
            LogTarget::Path { path, .. } => Some(prefix.join(path)),
        }
    }

    pub fn as_conf_string(&self) -> String {
        match self {
            LogTarget::Off => "off".to_string(),
            LogTarget::Path { path, format: None } => path.display().to_string(),
            LogTarget::Path {
                path,
                format: Some(f),
            } => format!("{} {f}", path.display()),
        }
    }
}

pub(crate) fn parse_log_target(name: &str, value: &str) -> Result<LogTarget, String> {
    let mut parts = value.split_whitespace();
    let Some(path) = parts.next() else {
        return Ok(LogTarget::Off);
    };
    if path == "off" {
        return Ok(LogTarget::Off);
    }
    let format = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(format!(
            "{name} must be of form: off | <path> [<format>], got '{value}'"
        ));
    }
    Ok(LogTarget::Path {
        path: PathBuf::from(path),
        format,
    })
}

/// Response headers Kong may inject (`headers`), resolved to booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HeadersConfig {
    pub server: bool,
    pub via: bool,
    pub proxy_latency: bool,
    pub response_latency: bool,
    pub admin_latency: bool,
    pub upstream_latency: bool,
    pub upstream_status: bool,
    pub request_id: bool,
}

pub(crate) fn parse_headers(name: &str, value: &str) -> Result<HeadersConfig, Vec<String>> {
    let tokens = split_list(value);
    let mut h = HeadersConfig::default();
    let mut errors = Vec::new();
    // As Kong: entries are validated even when the list is switched off.
    let enabled = tokens.first().is_some_and(|t| t != "off");
    for token in &tokens {
        let lower = token.to_ascii_lowercase();
        // "off" is accepted anywhere but only has meaning in first position.
        if token == "off" {
            continue;
        }
        match lower.as_str() {
            "server_tokens" => {
                h.server = true;
                h.via = true;
            }
            "latency_tokens" => {
                h.proxy_latency = true;
                h.response_latency = true;
                h.admin_latency = true;
                h.upstream_latency = true;
            }
            "server" => h.server = true,
            "via" => h.via = true,
            "x-kong-proxy-latency" => h.proxy_latency = true,
            "x-kong-response-latency" => h.response_latency = true,
            "x-kong-admin-latency" => h.admin_latency = true,
            "x-kong-upstream-latency" => h.upstream_latency = true,
            "x-kong-upstream-status" => h.upstream_status = true,
            "x-kong-request-id" => h.request_id = true,
            _ => errors.push(format!("{name}: invalid entry '{token}'")),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(if enabled { h } else { HeadersConfig::default() })
}

/// `headers_upstream`: only `X-Kong-Request-Id` (or `off`) exists.
pub(crate) fn parse_headers_upstream(name: &str, value: &str) -> Result<bool, Vec<String>> {
    let tokens = split_list(value);
    let errors: Vec<String> = tokens
        .iter()
        .filter(|t| *t != "off" && !t.eq_ignore_ascii_case("x-kong-request-id"))
        .map(|t| format!("{name}: invalid entry '{t}'"))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(tokens.first().is_some_and(|t| t != "off"))
}

/// Parsed `trusted_ips`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedIps {
    pub nets: Vec<IpNet>,
    /// `unix:` was listed: connections over unix sockets are trusted.
    pub unix: bool,
}

pub(crate) fn parse_trusted_ips(name: &str, value: &str) -> Result<TrustedIps, Vec<String>> {
    let mut out = TrustedIps::default();
    let mut errors = Vec::new();
    for entry in split_list(value) {
        if entry == "unix:" {
            out.unix = true;
        } else if let Some(net) = parse_ip_or_cidr(&entry) {
            out.nets.push(net);
        } else {
            errors.push(format!(
                "{name} must be a comma separated list in the form of IPv4 or IPv6 address or CIDR block or 'unix:', got '{entry}'"
            ));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_ip_or_cidr(s: &str) -> Option<IpNet> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    // Kong only accepts canonical decimal prefixes ("/8", not "/08").
    let (_, prefix) = s.split_once('/')?;
    if prefix.len() > 1 && prefix.starts_with('0') {
        return None;
    }
    s.parse::<IpNet>().ok()
}

/// `error_default_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorDefaultType {
    #[default]
    TextPlain,
    ApplicationJson,
    ApplicationXml,
    TextHtml,
}

impl ErrorDefaultType {
    pub const NAMES: [&'static str; 4] = [
        "text/plain",
        "application/json",
        "application/xml",
        "text/html",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorDefaultType::TextPlain => "text/plain",
            ErrorDefaultType::ApplicationJson => "application/json",
            ErrorDefaultType::ApplicationXml => "application/xml",
            ErrorDefaultType::TextHtml => "text/html",
        }
    }
}

pub(crate) fn parse_error_default_type(
    name: &str,
    value: &str,
) -> Result<ErrorDefaultType, String> {
    Ok(match value {
        "text/plain" => ErrorDefaultType::TextPlain,
        "application/json" => ErrorDefaultType::ApplicationJson,
        "application/xml" => ErrorDefaultType::ApplicationXml,
        "text/html" => ErrorDefaultType::TextHtml,
        _ => return Err(enum_error(name, value, &ErrorDefaultType::NAMES)),
    })
}

/// `port_maps`: `host_port:kong_port` pairs.
pub(crate) fn parse_port_maps(value: &str) -> Result<Vec<(u16, u16)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for entry in split_list(value) {
        let parsed = entry.split_once(':').and_then(|(h, k)| {
            let h = h.trim().parse::<u16>().ok().filter(|p| *p >= 1)?;
            let k = k.trim().parse::<u16>().ok().filter(|p| *p >= 1)?;
            Some((h, k))
        });
        match parsed {
            Some(pair) => out.push(pair),
            None => errors.push(format!("invalid port mapping (`port_maps`): {entry}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `host[:port]` as used by `cluster_control_plane` (Kong builds
/// `wss://<value>/...` from it, so a missing port means 443).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPort {
    /// Host name or IP; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix after the authority, without a trailing `/` (Konnect
    /// PrivateLink: `us.svc.konghq.com/cp/<prefix>`); empty when none.
    pub path: String,
    /// The value as written.
    pub raw: String,
}

impl HostPort {
    /// `host:port` with IPv6 bracketed, suitable for URLs and `connect`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn parse_host_port(name: &str, full: &str) -> Result<HostPort, String> {
    let err = || format!("{name} must be of form: <host>[:<port>][/<path>], got '{full}'");
    // An optional path prefix follows the authority.
    let (value, path) = match full.find('/') {
        Some(i) => (&full[..i], full[i..].trim_end_matches('/')),
        None => (full, ""),
    };
    if path.contains(['?', '#', ' ']) || path.contains("//") {
        return Err(err());
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(err)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| err())?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(err)?)),
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        && (!host.contains(':') || value.starts_with('['));
    if !valid_host {
        return Err(err());
    }
    let port = match port {
        None => 443,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p >= 1).ok_or_else(err)?,
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
        path: path.to_string(),
        raw: full.to_string(),
    })
}

/// `cluster_dp_labels`: `key:value` pairs validated like Kong's labels AIP.
pub(crate) fn parse_labels(name: &str, value: &str) -> Result<Vec<(String, String)>, String> {
    const MAX_SIZE: usize = 63;
    const MAX_COUNT: usize = 10;
    const RESERVED: [&str; 5] = ["kong", "konnect", "insomnia", "mesh", "kic"];

    fn valid_entry(s: &str) -> bool {
        let b = s.as_bytes();
        let edge = |c: u8| c.is_ascii_alphanumeric();
        let inner = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-');
        match b {
            [] => false,
            [c] => edge(*c),
            [first, mid @ .., last] => edge(*first) && edge(*last) && mid.iter().all(|c| inner(*c)),
        }
    }

    let entries = split_list(value);
    if entries.len() > MAX_COUNT {
        return Err(format!(
            "{name}: labels validation failed: count exceeded {MAX_COUNT} max elements"
        ));
    }
    let mut out = Vec::with_capacity(entries.len());
    for kv in entries {
        let (k, v) = kv.split_once(':').unwrap_or(("", ""));
        for (what, s) in [("key", k), ("value", v)] {
            if s.is_empty() || s.len() > MAX_SIZE {
                return Err(format!("{name}: label {what} validation failed: '{s}' must have between 1 and {MAX_SIZE} characters"));
            }
            let lower = s.to_ascii_lowercase();
            let reserved = what == "key" && RESERVED.iter().any(|r| lower.starts_with(r));
            if !valid_entry(s) || reserved {
                return Err(format!(
                    "{name}: label {what} validation failed: '{s}' is invalid"
                ));
            }
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sizes() {
        assert_eq!(parse_nginx_size("0"), Some(0));
        assert_eq!(parse_nginx_size("512"), Some(512));
        assert_eq!(parse_nginx_size("1k"), Some(1024));
        assert_eq!(parse_nginx_size("8K"), Some(8192));
        assert_eq!(parse_nginx_size("10m"), Some(10 * 1024 * 1024));
        assert_eq!(parse_nginx_size("1g"), Some(1 << 30));
        for bad in [
            "",
            "k",
            "1.5m",
            "-1",
            "10mb",
            "1 k",
            "abc",
            "99999999999999999999g",
        ] {
            assert_eq!(parse_nginx_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn large_header_buffers() {
        let b = parse_large_header_buffers("x", "4 8k").expect("valid");
        assert_eq!(
            b,
            LargeHeaderBuffers {
                number: 4,
                size: 8192
            }
        );
        assert_eq!(
            parse_large_header_buffers("x", "  8   24k ").expect("valid"),
            LargeHeaderBuffers {
                number: 8,
                size: 24 * 1024
            }
        );
        for bad in ["8k", "4", "0 8k", "4 0", "4 8k 1", "x 8k"] {
            assert!(parse_large_header_buffers("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_and_numbers() {
        assert_eq!(parse_bool("b", "on"), Ok(true));
        assert_eq!(parse_bool("b", "true"), Ok(true));
        assert_eq!(parse_bool("b", "off"), Ok(false));
        assert_eq!(parse_bool("b", "false"), Ok(false));
        assert!(parse_bool("b", "yes").is_err_and(|e| e.contains("b is not a boolean")));
        assert_eq!(parse_uint("n", "512"), Ok(512));
        assert_eq!(
            parse_uint("n", "-1"),
            Err("n must be 0 or greater".to_string())
        );
        assert_eq!(
            parse_uint("n", "1e3"),
            Err("n is not a number: '1e3'".to_string())
        );
    }

    #[test]
    fn worker_processes() {
        assert_eq!(
            parse_worker_processes("w", "auto"),
            Ok(WorkerProcesses::Auto)
        );
        assert_eq!(
            parse_worker_processes("w", "4"),
            Ok(WorkerProcesses::Count(4))
        );
        assert!(parse_worker_processes("w", "0").is_err());
        assert!(parse_worker_processes("w", "AUTO").is_err());
        assert_eq!(WorkerProcesses::Auto.resolve(8), 8);
        assert_eq!(WorkerProcesses::Count(2).resolve(8), 2);
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("l", "notice"), Ok(LogLevel::Notice));
        assert_eq!(LogLevel::Notice.to_level_filter(), log::LevelFilter::Info);
        assert_eq!(LogLevel::Crit.to_level_filter(), log::LevelFilter::Error);
        assert_eq!(
            parse_log_level("log_level", "verbose"),
            Err("log_level has an invalid value: 'verbose' (debug, info, notice, warn, error, crit, alert, emerg)".to_string())
        );
    }

    #[test]
    fn log_targets() {
        let prefix = Path::new("/usr/local/kong");
        let t = parse_log_target("a", "logs/access.log").expect("valid");
        assert_eq!(
            t.resolved_path(prefix),
            Some(PathBuf::from("/usr/local/kong/logs/access.log"))
        );
        let t = parse_log_target("a", "/dev/stdout").expect("valid");
        assert_eq!(t.resolved_path(prefix), Some(PathBuf::from("/dev/stdout")));
        let t = parse_log_target("a", "off").expect("valid");
        assert_eq!(t.resolved_path(prefix), None);
        let t = parse_log_target("a", "logs/access.log basic").expect("valid");
        assert_eq!(t.as_conf_string(), "logs/access.log basic");
        assert!(parse_log_target("a", "a b c").is_err());
    }

    #[test]
    fn headers_tokens() {
        let all = parse_headers(
            "headers",
            "server_tokens, latency_tokens, X-Kong-Request-Id",
        )
        .expect("valid");
        assert!(all.server && all.via && all.proxy_latency && all.response_latency);
        assert!(all.admin_latency && all.upstream_latency && all.request_id);
        assert!(!all.upstream_status);

        let some = parse_headers(
            "headers",
            "via, X-KONG-UPSTREAM-STATUS,x-kong-proxy-latency",
        )
        .expect("valid");
        assert_eq!(
            some,
            HeadersConfig {
                via: true,
                upstream_status: true,
                proxy_latency: true,
                ..Default::default()
            }
        );

        assert_eq!(
            parse_headers("headers", "off"),
            Ok(HeadersConfig::default())
        );
        // "off" first disables everything that follows.
        assert_eq!(
            parse_headers("headers", "off, server_tokens"),
            Ok(HeadersConfig::default())
        );
        // "off" later on is ignored.
        assert_eq!(
            parse_headers("headers", "server, off").expect("valid"),
            HeadersConfig {
                server: true,
                ..Default::default()
            }
        );
        assert_eq!(parse_headers("headers", ""), Ok(HeadersConfig::default()));

        let err = parse_headers("headers", "server, X-Foo, bar").expect_err("invalid");
        assert_eq!(
            err,
            vec![
                "headers: invalid entry 'X-Foo'",
                "headers: invalid entry 'bar'"
            ]
        );
        // Even when off, bad entries are reported (as Kong).
        assert!(parse_headers("headers", "off, nope").is_err());
    }

    #[test]
    fn headers_upstream() {
        assert_eq!(parse_headers_upstream("h", "X-Kong-Request-Id"), Ok(true));
        assert_eq!(parse_headers_upstream("h", "x-kong-request-id"), Ok(true));
        assert_eq!(parse_headers_upstream("h", "off"), Ok(false));
        assert_eq!(parse_headers_upstream("h", ""), Ok(false));
        assert!(parse_headers_upstream("h", "Via").is_err());
    }

    #[test]
    fn trusted_ips() {
        let t = parse_trusted_ips("trusted_ips", "0.0.0.0/0, ::/0").expect("valid");
        assert_eq!(t.nets.len(), 2);
        assert!(!t.unix);
        let t = parse_trusted_ips(
            "trusted_ips",
            "10.0.0.1,192.168.0.0/16,2001:db8::/32,::1,unix:",
        )
        .expect("valid");
        assert_eq!(t.nets.len(), 4);
        assert_eq!(t.nets[0].to_string(), "10.0.0.1/32");
        assert_eq!(t.nets[3].to_string(), "::1/128");
        assert!(t.unix);
        assert!(t.nets[1].contains(&"192.168.3.4".parse::<IpAddr>().expect("ip")));

        let errs =
            parse_trusted_ips("trusted_ips", "10.0.0.0/33, foo, 1.2.3.4/08").expect_err("invalid");
        assert_eq!(errs.len(), 3);
        assert!(errs[1].ends_with("got 'foo'"), "{}", errs[1]);
        assert_eq!(
            parse_trusted_ips("trusted_ips", ""),
            Ok(TrustedIps::default())
        );
    }

    #[test]
    fn error_default_type() {
        assert_eq!(
            parse_error_default_type("e", "application/json"),
            Ok(ErrorDefaultType::ApplicationJson)
        );
        assert!(parse_error_default_type("e", "text/json").is_err());
    }

    #[test]
    fn nginx_times() {
        let ms = |v: &str| parse_nginx_time(v).map(|d| d.as_millis());
        assert_eq!(ms("60"), Some(60_000));
        assert_eq!(ms("60s"), Some(60_000));
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("1m30s"), Some(90_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("2d"), Some(172_800_000));
        assert_eq!(ms(""), None);
        assert_eq!(ms("s"), None);
        assert_eq!(ms("10x"), None);
        assert_eq!(ms("-1s"), None);
        assert!(parse_nginx_time_setting("k", "0").is_err());
        assert_eq!(
            parse_nginx_time_setting("nginx_http_client_body_timeout", "soon"),
            Err("nginx_http_client_body_timeout is not a valid nginx time: 'soon' (e.g. 60s, 500ms, 1m)".into())
        );
    }

    #[test]
    fn port_maps() {
        assert_eq!(
            parse_port_maps("80:8000, 443:8443"),
            Ok(vec![(80, 8000), (443, 8443)])
        );
        assert_eq!(parse_port_maps(""), Ok(vec![]));
        let errs = parse_port_maps("80, 0:8000, 70000:1, a:b").expect_err("invalid");
        assert_eq!(errs.len(), 4);
        assert_eq!(errs[0], "invalid port mapping (`port_maps`): 80");
    }

    #[test]
    fn host_ports() {
        let h = parse_host_port("c", "127.0.0.1:8005").expect("valid");
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 8005));
        let h = parse_host_port("c", "abc.cp0.konghq.com").expect("valid");
        assert_eq!((h.host.as_str(), h.port), ("abc.cp0.konghq.com", 443));
        let h = parse_host_port("c", "[::1]:8005").expect("valid");
        assert_eq!((h.host.as_str(), h.port), ("::1", 8005));
        assert_eq!(h.authority(), "[::1]:8005");
        // Konnect PrivateLink: a path prefix after the authority.
        let h = parse_host_port("c", "us.svc.konghq.com/cp/abc123/").expect("valid");
        assert_eq!((h.host.as_str(), h.port), ("us.svc.konghq.com", 443));
        assert_eq!(h.path, "/cp/abc123");
        let h = parse_host_port("c", "cp.test:8005/x").expect("valid");
        assert_eq!((h.port, h.path.as_str()), (8005, "/x"));
        assert_eq!(
            parse_host_port("c", "cp.test:8005").expect("valid").path,
            ""
        );
        for bad in [
            "cp.test/a?b",
            "cp.test/a//b",
            "",
            ":8005",
            "host:",
            "host:0",
            "host:99999",
            "::1",
            "[::1",
            "[zz]:1",
            "a b:1",
            "[::1]x",
        ] {
            assert!(parse_host_port("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        let l = parse_labels("cluster_dp_labels", "deployment:mycloud, region:us-east-1")
            .expect("valid");
        assert_eq!(
            l,
            vec![
                ("deployment".into(), "mycloud".into()),
                ("region".into(), "us-east-1".into())
            ]
        );
        for bad in [
            "novalue",
            "key:",
            ":v",
            "kong_x:v",
            "Konnect:v",
            "-a:b",
            "a:b-",
            "a:b c",
        ] {
            assert!(parse_labels("l", bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..11).map(|i| format!("k{i}:v")).collect();
        assert!(parse_labels("l", &many.join(",")).is_err());
    }
}
