//! Choosing the peer of a service: upstream targets (weighted round-robin)
//! or a plain host resolved through DNS.
//!
//! Health checks, hashing algorithms and TTL-aware DNS come with the
//! upstream work; this is the minimal correct path.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use config_sync::model;

/// How long a resolved name is reused; `getaddrinfo` gives no TTL.
const DNS_CACHE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("name resolution failed")]
    NameError,
}

#[derive(Debug)]
struct Resolved {
    addrs: Vec<SocketAddr>,
    expires: Instant,
}

/// A host and port; IPs are used as they are, names are resolved and cached.
#[derive(Debug)]
pub struct TargetAddr {
    pub host: String,
    pub port: u16,
    ip: Option<SocketAddr>,
    cache: ArcSwapOption<Resolved>,
    next: AtomicUsize,
}

impl TargetAddr {
    pub fn new(host: &str, port: u16) -> TargetAddr {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip = bare
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        TargetAddr {
            host: host.to_string(),
            port,
            ip,
            cache: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
        }
    }

    /// One address of the target, rotating over all the name resolves to.
    pub async fn resolve(&self) -> Result<SocketAddr, ResolveError> {
        if let Some(ip) = self.ip {
            return Ok(ip);
        }
        let cached = self.cache.load_full();
        let resolved = match cached {
            Some(r) if r.expires > Instant::now() => r,
            _ => {
                let addrs: Vec<SocketAddr> =
                    match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                        Ok(it) => it.collect(),
                        Err(_) => Vec::new(),
                    };
                if addrs.is_empty() {
                    return Err(ResolveError::NameError);
                }
                let r = Arc::new(Resolved {
                    addrs,
                    expires: Instant::now() + DNS_CACHE,
                });
                self.cache.store(Some(r.clone()));
                r
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % resolved.addrs.len();
        Ok(resolved.addrs[i])
    }
}

/// One target of an upstream.
#[derive(Debug)]
pub struct BalancerTarget {
    pub addr: TargetAddr,
    pub weight: u32,
}

/// An upstream's balancer: a wheel with `weight / gcd` slots per target.
#[derive(Debug)]
pub struct Balancer {
    pub name: String,
    pub host_header: Option<String>,
    pub targets: Vec<BalancerTarget>,
    wheel: Vec<usize>,
    next: AtomicUsize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host (port 8000 as Kong's targets).
pub fn split_target(target: &str) -> (String, u16) {
    if let Some(rest) = target.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(8000);
            return (format!("[{h}]"), port);
        }
    }
    match target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(8000)),
        _ => (target.to_string(), 8000),
    }
}

impl Balancer {
    pub fn new(up: &model::Upstream, targets: &[&model::Target]) -> Balancer {
        let targets: Vec<BalancerTarget> = targets
            .iter()
            .map(|t| {
                let (host, port) = split_target(&t.target);
                BalancerTarget {
                    addr: TargetAddr::new(&host, port),
                    weight: t.weight,
                }
            })
            .collect();
        let g = targets
            .iter()
            .map(|t| t.weight)
            .filter(|w| *w > 0)
            .fold(0, gcd);
        let mut wheel = Vec::new();
        if g > 0 {
            // Interleave so consecutive requests spread over targets.
            let slots: Vec<u32> = targets.iter().map(|t| t.weight / g).collect();
            let max = slots.iter().copied().max().unwrap_or(0);
            for round in 0..max {
                for (i, s) in slots.iter().enumerate() {
                    if *s > round {
                        wheel.push(i);
                    }
                }
            }
        }
        Balancer {
            name: up.name.clone(),
            host_header: up.host_header.clone(),
            targets,
            wheel,
            next: AtomicUsize::new(0),
        }
    }

    /// The next target in the wheel, or `None` when no target can be used.
    pub fn next(&self) -> Option<&BalancerTarget> {
        if self.wheel.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.wheel.len();
        self.targets.get(self.wheel[i])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_targets() {
        assert_eq!(split_target("a.test"), ("a.test".into(), 8000));
        assert_eq!(split_target("a.test:81"), ("a.test".into(), 81));
        assert_eq!(split_target("[::1]:82"), ("[::1]".into(), 82));
        assert_eq!(split_target("[::1]"), ("[::1]".into(), 8000));
    }

    #[tokio::test]
    async fn ip_targets_need_no_dns() {
        let t = TargetAddr::new("127.0.0.1", 9);
        assert_eq!(t.resolve().await.unwrap(), "127.0.0.1:9".parse().unwrap());
        let t = TargetAddr::new("[::1]", 9);
        assert_eq!(t.resolve().await.unwrap(), "[::1]:9".parse().unwrap());
    }
}
