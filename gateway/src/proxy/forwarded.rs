//! Client address and `X-Forwarded-*` rules (nginx realip + Kong's handler).

use std::net::IpAddr;

use ipnet::IpNet;

/// Which request header carries the real client address (`real_ip_header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealIpHeader {
    XRealIp,
    XForwardedFor,
    ProxyProtocol,
    Other(http::HeaderName),
}

impl RealIpHeader {
    pub fn parse(v: &str) -> RealIpHeader {
        match v.to_ascii_lowercase().as_str() {
            "x-real-ip" => RealIpHeader::XRealIp,
            "x-forwarded-for" => RealIpHeader::XForwardedFor,
            "proxy_protocol" => RealIpHeader::ProxyProtocol,
            other => match http::HeaderName::from_bytes(other.as_bytes()) {
                Ok(h) => RealIpHeader::Other(h),
                Err(_) => RealIpHeader::XRealIp,
            },
        }
    }
}

/// `trusted_ips`, `real_ip_header`, `real_ip_recursive`.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub trusted: Vec<IpNet>,
    pub header: RealIpHeader,
    pub recursive: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            trusted: Vec::new(),
            header: RealIpHeader::XRealIp,
            recursive: false,
        }
    }
}

impl TrustConfig {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// nginx realip: the client address once trusted proxies are peeled off.
    /// `proxy_src`: the source address of the connection's PROXY header,
    /// used with `real_ip_header proxy_protocol` (none: the peer stays, as
    /// nginx's realip declines a connection without one).
    pub fn real_ip(
        &self,
        peer: IpAddr,
        headers: &http::HeaderMap,
        proxy_src: Option<IpAddr>,
    ) -> IpAddr {
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let name = match &self.header {
            RealIpHeader::XRealIp => http::HeaderName::from_static("x-real-ip"),
            RealIpHeader::XForwardedFor => http::HeaderName::from_static("x-forwarded-for"),
            RealIpHeader::ProxyProtocol => return proxy_src.map_or(peer, canonical),
            RealIpHeader::Other(h) => h.clone(),
        };
        // Several header lines count as one comma-separated list.
        let mut addrs: Vec<&str> = Vec::new();
        for v in headers.get_all(&name) {
            if let Ok(s) = v.to_str() {
                addrs.extend(s.split(',').map(str::trim).filter(|s| !s.is_empty()));
            }
        }
        if addrs.is_empty() {
            return peer;
        }
        if !self.recursive {
            return addrs.last().and_then(|a| parse_ip(a)).unwrap_or(peer);
        }
        // Walk from the right, skipping trusted hops.
        let mut found = peer;
        for a in addrs.iter().rev() {
            match parse_ip(a) {
                Some(ip) => {
                    found = ip;
                    if !self.is_trusted(ip) {
                        return ip;
                    }
                }
                None => return found,
            }
        }
        found
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // "1.2.3.4:567" or "[::1]:567"
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|sa| canonical(sa.ip()))
}

/// nginx `$host`: the Host header without port, lower-cased.
pub fn nginx_host(host_header: Option<&str>) -> String {
    match host_header {
        None | Some("") => "kong".to_string(),
        Some(h) => {
            let name = if let Some(rest) = h.strip_prefix('[') {
                match rest.find(']') {
                    Some(i) => &h[..i + 2],
                    None => h,
                }
            } else {
                h.split(':').next().unwrap_or(h)
            };
            name.trim_end_matches('.').to_ascii_lowercase()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_keep_their_address() {
        let t = TrustConfig::default();
        let h = headers(&[("x-real-ip", "10.0.0.1")]);
        assert_eq!(t.real_ip(ip("127.0.0.1"), &h, None), ip("127.0.0.1"));
    }

    #[test]
    fn trusted_peer_x_real_ip() {
        let t = TrustConfig {
            trusted: vec!["127.0.0.1/32".parse().unwrap()],
            ..TrustConfig::default()
        };
        let h = headers(&[("x-real-ip", "10.0.0.1")]);
        assert_eq!(t.real_ip(ip("127.0.0.1"), &h, None), ip("10.0.0.1"));
    }

    #[test]
    fn recursive_forwarded_for_as_kong_spec() {
        // 03-upstream_headers: trusted 127.0.0.1,172.16.0.1,192.168.0.1
        let t = TrustConfig {
            trusted: ["127.0.0.1/32", "172.16.0.1/32", "192.168.0.1/32"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            header: RealIpHeader::XForwardedFor,
            recursive: true,
        };
        let h = headers(&[(
            "x-forwarded-for",
            "127.0.0.1, 10.0.0.1, 192.168.0.1, 127.0.0.1, 172.16.0.1",
        )]);
        assert_eq!(t.real_ip(ip("127.0.0.1"), &h, None), ip("10.0.0.1"));
        let t2 = TrustConfig {
            recursive: false,
            ..t
        };
        assert_eq!(t2.real_ip(ip("127.0.0.1"), &h, None), ip("172.16.0.1"));
    }

    #[test]
    fn proxy_protocol_source_from_a_trusted_peer_only() {
        // 03-upstream_headers "(using trusted proxy protocol ...)".
        let trusted = TrustConfig {
            trusted: vec!["127.0.0.1/32".parse().unwrap()],
            header: RealIpHeader::ProxyProtocol,
            recursive: true,
        };
        let h = headers(&[("x-real-ip", "10.0.0.2")]);
        let src = Some(ip("192.168.0.1"));
        assert_eq!(trusted.real_ip(ip("127.0.0.1"), &h, src), ip("192.168.0.1"));
        // No PROXY header on the connection: the peer (nginx declines).
        assert_eq!(trusted.real_ip(ip("127.0.0.1"), &h, None), ip("127.0.0.1"));
        // "(using non-trusted proxy protocol ...)".
        let untrusted = TrustConfig {
            trusted: vec!["10.0.0.1/32".parse().unwrap()],
            ..trusted
        };
        assert_eq!(untrusted.real_ip(ip("127.0.0.1"), &h, src), ip("127.0.0.1"));
    }

    #[test]
    fn host_var() {
        assert_eq!(nginx_host(Some("Example.COM:8000")), "example.com");
        assert_eq!(nginx_host(Some("[::1]:80")), "[::1]");
        assert_eq!(nginx_host(None), "kong");
    }
}
