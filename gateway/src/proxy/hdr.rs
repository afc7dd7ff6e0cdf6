//! Header names and values the proxy path sends on every request, built
//! once instead of per request.
//!
//! Pingora's `insert_header` with a `&str` value validates and copies it
//! into a fresh allocation, and `remove_header` with a `&str` name parses
//! the name each time; constant values and names skip both.

use std::net::IpAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::HeaderName;
use http::HeaderValue;
use pingora::http::KnownHeaderName;
use pingora::{Error, ErrorType, Result};

use crate::kong::SERVER_TOKEN;

pub static PROXY: HeaderName = HeaderName::from_static("proxy");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Names the proxy inserts on every request, with the case Kong (nginx)
/// writes: inserting one parses nothing and allocates nothing (a `&str` name
/// is parsed and, not being a standard name, copied on every insert).
pub mod known {
    use super::KnownHeaderName as K;

    pub static X_FORWARDED_FOR: K = K::from_static("X-Forwarded-For", "x-forwarded-for");
    pub static X_FORWARDED_PROTO: K = K::from_static("X-Forwarded-Proto", "x-forwarded-proto");
    pub static X_FORWARDED_HOST: K = K::from_static("X-Forwarded-Host", "x-forwarded-host");
    pub static X_FORWARDED_PORT: K = K::from_static("X-Forwarded-Port", "x-forwarded-port");
    pub static X_FORWARDED_PATH: K = K::from_static("X-Forwarded-Path", "x-forwarded-path");
    pub static X_FORWARDED_PREFIX: K = K::from_static("X-Forwarded-Prefix", "x-forwarded-prefix");
    pub static X_REAL_IP: K = K::from_static("X-Real-IP", "x-real-ip");
    pub static X_KONG_REQUEST_ID: K = K::from_static("X-Kong-Request-Id", "x-kong-request-id");
    pub static X_KONG_UPSTREAM_STATUS: K =
        K::from_static("X-Kong-Upstream-Status", "x-kong-upstream-status");
    pub static X_KONG_UPSTREAM_LATENCY: K =
        K::from_static("X-Kong-Upstream-Latency", "x-kong-upstream-latency");
    pub static X_KONG_PROXY_LATENCY: K =
        K::from_static("X-Kong-Proxy-Latency", "x-kong-proxy-latency");
    pub static CONNECTION: K = K::from_static("Connection", "connection");
    pub static HOST: K = K::from_static("Host", "host");
    pub static VIA: K = K::from_static("Via", "via");
    pub static SERVER: K = K::from_static("Server", "server");
}

// Statics, not consts: `Bytes` inside is not `Freeze`. Cloning a static
// value is a pointer copy (no allocation, no reference count).
pub static HTTP: HeaderValue = HeaderValue::from_static("http");
pub static HTTPS: HeaderValue = HeaderValue::from_static("https");
pub static KEEP_ALIVE_VALUE: HeaderValue = HeaderValue::from_static("keep-alive");
pub static SERVER: HeaderValue = HeaderValue::from_static(SERVER_TOKEN);

/// A value from text known only at run time that never changes afterwards
/// (the `Via` tokens): leaked once, so every use is a static `Bytes`.
fn leaked(text: String) -> HeaderValue {
    let text: &'static str = Box::leak(text.into_boxed_str());
    HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static("kong"))
}

/// A decimal header value (latencies in ms, statuses, ports). Below 1000
/// it is a slice of one static text, so it costs no allocation, where
/// `HeaderValue::from(u64)` allocates each time.
pub fn number(n: u64) -> HeaderValue {
    static DIGITS: OnceLock<&'static str> = OnceLock::new();
    let Some(i) = usize::try_from(n).ok().filter(|i| *i < 1000) else {
        return HeaderValue::from(n);
    };
    let text = DIGITS.get_or_init(|| {
        let all: String = (0..1000).map(|i| i.to_string()).collect();
        Box::leak(all.into_boxed_str())
    });
    // "0".."9", then "10".."99", then "100".."999", back to back.
    let (at, len) = match i {
        0..=9 => (i, 1),
        10..=99 => (10 + 2 * (i - 10), 2),
        _ => (190 + 3 * (i - 100), 3),
    };
    text.get(at..at + len)
        .and_then(|t| HeaderValue::from_maybe_shared(Bytes::from_static(t.as_bytes())).ok())
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// `Via` token for a request of this HTTP version: `1.1 kong/3.10.0`.
pub fn via(version: &'static str) -> HeaderValue {
    static V10: OnceLock<HeaderValue> = OnceLock::new();
    static V11: OnceLock<HeaderValue> = OnceLock::new();
    static V2: OnceLock<HeaderValue> = OnceLock::new();
    let cell = match version {
        "1.0" => &V10,
        "2" => &V2,
        _ => &V11,
    };
    cell.get_or_init(|| leaked(format!("{version} {SERVER_TOKEN}")))
        .clone()
}

/// `<existing>, <version> kong/3.10.0`: a hop appended to a `Via` list.
pub fn via_appended(existing: &[u8], version: &str) -> Result<HeaderValue> {
    let mut v = Vec::with_capacity(existing.len() + 2 + version.len() + 1 + SERVER_TOKEN.len());
    v.extend_from_slice(existing);
    v.extend_from_slice(b", ");
    v.extend_from_slice(version.as_bytes());
    v.push(b' ');
    v.extend_from_slice(SERVER_TOKEN.as_bytes());
    value(Bytes::from(v))
}

/// A header value from bytes built here, with the error Pingora's
/// `insert_header` gives an invalid one.
pub fn value(bytes: Bytes) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes).map_err(|e| {
        Error::because(
            ErrorType::InvalidHTTPHeader,
            "invalid value while insert",
            e,
        )
    })
}

/// A header value copied from text.
pub fn text(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|e| {
        Error::because(
            ErrorType::InvalidHTTPHeader,
            "invalid value while insert",
            e,
        )
    })
}

/// Appends a number in decimal.
fn push_u16(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `host:port` as a header value.
pub fn host_port(host: &str, port: u16) -> Result<HeaderValue> {
    let mut v = Vec::with_capacity(host.len() + 6);
    v.extend_from_slice(host.as_bytes());
    v.push(b':');
    push_u16(&mut v, port);
    value(Bytes::from(v))
}

/// Writes an IPv4 address in dotted-quad form to `out`.
fn push_ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if o >= 100 {
            out.push(b'0' + o / 100);
        }
        if o >= 10 {
            out.push(b'0' + (o / 10) % 10);
        }
        out.push(b'0' + o % 10);
    }
}

/// Appends an address as `Display` writes it (IPv4 by hand: the generic
/// formatter cost more than the rest of the header building together).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// An address as a header value.
pub fn ip(ip: IpAddr) -> Result<HeaderValue> {
    let mut v = Vec::with_capacity(15);
    push_ip(&mut v, ip);
    value(Bytes::from(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_display() {
        for n in (0..1100).chain([8000, 65535, u64::MAX]) {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn ip_values_match_display() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let a: IpAddr = s.parse().unwrap();
            assert_eq!(ip(a).unwrap(), a.to_string().as_str(), "{s}");
        }
    }

    #[test]
    fn host_port_values() {
        for (h, p) in [
            ("a.test", 0u16),
            ("a.test", 8),
            ("x", 80),
            ("x", 65535),
            ("x", 10000),
        ] {
            assert_eq!(host_port(h, p).unwrap(), format!("{h}:{p}").as_str());
        }
    }

    #[test]
    fn via_tokens() {
        assert_eq!(via("1.1"), "1.1 kong/3.10.0");
        assert_eq!(via("1.0"), "1.0 kong/3.10.0");
        assert_eq!(via("2"), "2 kong/3.10.0");
        assert_eq!(
            via_appended(b"1.1 squid", "1.1").unwrap(),
            "1.1 squid, 1.1 kong/3.10.0"
        );
        assert_eq!(SERVER, "kong/3.10.0");
    }
}
