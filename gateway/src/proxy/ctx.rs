//! Per-request state carried across Pingora's phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

use crate::balancer::ConnGuard;
use crate::snapshot::Snapshot;

/// An answer Kong produces itself when the balancer cannot give a peer.
#[derive(Debug, Clone, Copy)]
pub struct LocalError {
    pub status: u16,
    pub message: &'static str,
}

impl LocalError {
    pub fn pdk(status: u16, message: &'static str) -> LocalError {
        LocalError { status, message }
    }
}

/// Kong's `$kong_request_id`: 16 random bytes as 32 hex digits.
///
/// Hex-encoded by hand: `format!("{:032x}")` on a u128 went through the
/// formatting machinery (about 1.5k instructions) on every request.
pub fn new_request_id() -> String {
    hex_id(rand::random::<u128>())
}

fn hex_id(n: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for i in (0..32).rev() {
        out.push(char::from(HEX[((n >> (i * 4)) & 0xf) as usize]));
    }
    out
}

#[derive(Debug)]
pub struct RequestCtx {
    pub start: Instant,
    pub request_id: String,
    /// The config this request was routed with; kept for its whole life.
    pub snapshot: Option<Arc<Snapshot>>,
    pub route: Option<usize>,
    pub service: Option<usize>,
    pub host_port: u16,
    pub peer_ip: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    pub trusted: bool,
    /// The connection's TLS session and PROXY header (`proxy::edge`).
    pub conn: Option<Arc<super::edge::ConnInfo>>,
    /// `X-Forwarded-Proto` to send: `$scheme`, or a trusted client's value.
    pub forwarded_proto: HeaderValue,
    pub forwarded_prefix: Option<String>,
    pub preserve_host: bool,
    pub upstream_uri: String,
    /// `Host` for the upstream when `preserve_host` is off (set per try).
    pub upstream_host: Option<HeaderValue>,
    pub upstream_addr: Option<SocketAddr>,
    pub tries: u32,
    pub retries_left: u32,
    pub upstream_start: Option<Instant>,
    pub upstream_header_at: Option<Instant>,
    pub proxy_latency_ms: Option<u64>,
    pub local_error: Option<LocalError>,
    /// Status of a response Kong generated itself.
    pub kong_status: Option<u16>,
    pub proxied: bool,
    /// A plugin's exit answered as the service would (Kong's
    /// `KONG_PROXIED` without an upstream try: proxy-cache's hit).
    pub exit_proxied: bool,
    pub counted_in_flight: bool,
    /// The client asked for trailers (`TE: trailers`).
    pub client_te_trailers: bool,
    /// `Kong-Debug` was sent and `allow_debug_header` is on.
    pub debug_header: bool,
    /// Regex captures of the matched route (for `hash_on: uri_capture`).
    pub uri_captures: Vec<(Option<String>, String)>,
    /// Balancer state of this request, see [`BalancerCtx`].
    pub balancer: BalancerCtx,
    /// Kong's `balancer_data.tries`, for the log serializer: recorded only
    /// when the request runs plugins.
    pub try_log: Vec<TryRecord>,
    /// The plugins this request runs; `None` when none apply (the common
    /// case pays nothing for the plugin runtime).
    pub plugins: Option<Box<crate::plugins::runtime::PluginRun>>,
}

/// One try at the upstream (Kong's `balancer_data.tries[n]`).
#[derive(Debug, Clone)]
pub struct TryRecord {
    /// When the try's balancer step started (`balancer_start`).
    pub start: SystemTime,
    /// How long picking and resolving the target took (`balancer_latency`).
    pub latency: Duration,
    pub addr: SocketAddr,
    /// How the try failed (`state`, `code`: `failed`, 502 or 504 for a
    /// timeout), as nginx's `get_last_failure` reports it.
    pub failure: Option<(&'static str, u16)>,
}

/// What the balancer keeps across the tries of one request.
#[derive(Debug, Default)]
pub struct BalancerCtx {
    /// The hash value, computed once on the first try (Kong does the same).
    pub hash_value: Option<String>,
    /// `Set-Cookie` for a hash cookie Kong made up.
    pub set_cookie: Option<String>,
    /// Upstream target of the current try.
    pub target: Option<usize>,
    /// Targets that failed this request (avoided by the next try).
    pub tried: Vec<usize>,
    /// Least-connections slot of the current try, released on drop.
    pub guard: Option<ConnGuard>,
    /// When the current try started (latency algorithm).
    pub try_start: Option<Instant>,
    /// Status the upstream answered the current try with.
    pub upstream_status: Option<u16>,
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: new_request_id(),
            snapshot: None,
            route: None,
            service: None,
            host_port: 0,
            peer_ip: None,
            client_ip: None,
            trusted: false,
            conn: None,
            forwarded_proto: HeaderValue::from_static("http"),
            forwarded_prefix: None,
            preserve_host: false,
            upstream_uri: String::new(),
            upstream_host: None,
            upstream_addr: None,
            tries: 0,
            retries_left: 0,
            upstream_start: None,
            upstream_header_at: None,
            proxy_latency_ms: None,
            local_error: None,
            kong_status: None,
            proxied: false,
            exit_proxied: false,
            counted_in_flight: false,
            client_te_trailers: false,
            debug_header: false,
            uri_captures: Vec::new(),
            balancer: BalancerCtx::default(),
            try_log: Vec::new(),
            plugins: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        for n in [0, 1, 0xabc, u128::MAX, u128::MAX / 3, 1 << 127] {
            assert_eq!(hex_id(n), format!("{n:032x}"));
        }
    }
}
