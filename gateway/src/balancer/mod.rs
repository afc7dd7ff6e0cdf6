//! Choosing the peer of a service: an upstream's targets through one of
//! Kong's algorithms, or a plain host resolved through DNS.
//!
//! - [`round_robin`], [`consistent_hash`], [`least_connections`],
//!   [`latency`]: one file per algorithm, each picking among the targets a
//!   predicate allows;
//! - [`health`]: per-target health fed by active probes (background tasks
//!   owned by the balancer) and passive reports from the proxy path;
//! - [`dns`]: TTL-honouring resolution with background refresh.
//!
//! A balancer belongs to one snapshot. When a new snapshot goes live it
//! takes the health of targets that did not change, the old one's probes
//! stop, and the new one's start ([`Background`]).

pub mod consistent_hash;
pub mod dns;
pub mod health;
pub mod latency;
pub mod least_connections;
pub mod round_robin;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use config_sync::model;
use http::HeaderMap;

use consistent_hash::ConsistentHash;
pub use dns::{DnsEnv, DnsError, TargetAddr};
use health::{HealthConfig, HealthState, TargetHealth};
use latency::Latency;
pub use least_connections::ConnGuard;
use least_connections::LeastConnections;
use round_robin::RoundRobin;

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

/// One target of an upstream.
#[derive(Debug)]
pub struct BalancerTarget {
    /// As configured (`host:port`), the key health is carried by.
    pub target: String,
    pub addr: Arc<TargetAddr>,
    pub weight: u32,
    pub health: TargetHealth,
}

#[derive(Debug)]
enum Algorithm {
    RoundRobin(RoundRobin),
    ConsistentHash(ConsistentHash),
    LeastConnections(LeastConnections),
    Latency(Latency),
}

/// Where a hash value comes from (`hash_on` / `hash_fallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    None,
    Consumer,
    Ip,
    Header(String),
    Cookie { name: String, path: String },
    Path,
    QueryArg(String),
    UriCapture(String),
}

impl HashSource {
    fn new(up: &model::Upstream, kind: &str, fallback: bool) -> HashSource {
        let (header, query, capture) = if fallback {
            (
                &up.hash_fallback_header,
                &up.hash_fallback_query_arg,
                &up.hash_fallback_uri_capture,
            )
        } else {
            (
                &up.hash_on_header,
                &up.hash_on_query_arg,
                &up.hash_on_uri_capture,
            )
        };
        let named = |v: &Option<String>, f: fn(String) -> HashSource| match v {
            Some(s) => f(s.clone()),
            None => HashSource::None,
        };
        match kind {
            "consumer" => HashSource::Consumer,
            "ip" => HashSource::Ip,
            "header" => named(header, |h| HashSource::Header(h.to_ascii_lowercase())),
            "cookie" => match &up.hash_on_cookie {
                Some(c) => HashSource::Cookie {
                    name: c.clone(),
                    path: up.hash_on_cookie_path.clone(),
                },
                None => HashSource::None,
            },
            "path" => HashSource::Path,
            "query_arg" => named(query, HashSource::QueryArg),
            "uri_capture" => named(capture, HashSource::UriCapture),
            _ => HashSource::None,
        }
    }
}

/// The request facts a hash value may come from.
#[derive(Debug)]
pub struct HashInput<'a> {
    pub consumer: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
    /// The normalized path (nginx's `$uri`).
    pub path: &'a str,
    /// The raw query string.
    pub query: Option<&'a str>,
    pub captures: &'a [(Option<String>, String)],
}

/// A request's hash value, and the cookie to set when Kong made one up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashValue {
    pub value: String,
    /// A complete `Set-Cookie` value.
    pub set_cookie: Option<String>,
}

/// Why no peer could be picked (Kong answers 503 for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("No peers are available")]
    NoPeers,
    #[error("Balancer is unhealthy")]
    Unhealthy,
}

/// A picked target; the guard (least-connections) holds its slot.
#[derive(Debug)]
pub struct Picked {
    pub index: usize,
    pub guard: Option<ConnGuard>,
}

/// An upstream's balancer.
#[derive(Debug)]
pub struct Balancer {
    pub name: String,
    pub host_header: Option<String>,
    pub targets: Vec<BalancerTarget>,
    pub health_cfg: HealthConfig,
    /// TLS for `https` active checks, built once per compiled upstream.
    pub probe_tls: Option<health::tls::ProbeTls>,
    hash_on: HashSource,
    hash_fallback: HashSource,
    algorithm: Algorithm,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Balancer {
    pub fn new(up: &model::Upstream, targets: &[&model::Target]) -> Balancer {
        Balancer::with_probe_cert(up, targets, None)
    }

    /// Like [`Balancer::new`]; `https` probes present `probe_cert` (the
    /// upstream's `client_certificate`, else `client_ssl_cert`).
    pub fn with_probe_cert(
        up: &model::Upstream,
        targets: &[&model::Target],
        probe_cert: Option<Arc<rustls::sign::CertifiedKey>>,
    ) -> Balancer {
        let targets: Vec<BalancerTarget> = targets
            .iter()
            .map(|t| {
                let (host, port) = split_target(&t.target);
                BalancerTarget {
                    target: t.target.clone(),
                    addr: Arc::new(TargetAddr::new(&host, port)),
                    weight: t.weight,
                    health: TargetHealth::default(),
                }
            })
            .collect();
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let algorithm = match up.algorithm.as_str() {
            "consistent-hashing" => {
                let keyed: Vec<(String, u16, u32)> = targets
                    .iter()
                    .map(|t| (t.addr.host.clone(), t.addr.port, t.weight))
                    .collect();
                Algorithm::ConsistentHash(ConsistentHash::new(&keyed, up.slots))
            }
            "least-connections" => Algorithm::LeastConnections(LeastConnections::new(&weights)),
            "latency" => Algorithm::Latency(Latency::new(&weights)),
            _ => Algorithm::RoundRobin(RoundRobin::new(&weights)),
        };
        let health_cfg = HealthConfig::new(&up.healthchecks);
        let probe_tls = (health_cfg.active_type == "https" && health_cfg.active_enabled())
            .then(|| health::tls::connector_with_cert(health_cfg.https_verify, probe_cert));
        Balancer {
            name: up.name.clone(),
            host_header: up.host_header.clone(),
            targets,
            health_cfg,
            probe_tls,
            hash_on: HashSource::new(up, &up.hash_on, false),
            hash_fallback: HashSource::new(up, &up.hash_fallback, true),
            algorithm,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Whether requests need a hash value (`hash_on` is not `none`).
    pub fn hashes(&self) -> bool {
        self.hash_on != HashSource::None
    }

    /// Kong's `get_value_to_hash`: `hash_on`, then `hash_fallback`, else "".
    pub fn hash_value(&self, input: &HashInput<'_>) -> HashValue {
        for src in [&self.hash_on, &self.hash_fallback] {
            if *src == HashSource::None {
                break;
            }
            if let Some(v) = hash_from(src, input) {
                return v;
            }
        }
        HashValue {
            value: String::new(),
            set_cookie: None,
        }
    }

    /// Whether target `i` may take traffic now.
    pub fn available(&self, i: usize) -> bool {
        let Some(t) = self.targets.get(i) else {
            return false;
        };
        t.weight > 0 && t.health.is_healthy() && !t.addr.dns_failed()
    }

    /// Kong's `balancer.healthy`: enough of the weight is healthy.
    fn healthy_enough(&self) -> bool {
        let th = self.health_cfg.threshold;
        if th <= 0.0 {
            return true;
        }
        let total: u64 = self.targets.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            return false;
        }
        let up: u64 = (0..self.targets.len())
            .filter(|&i| self.available(i))
            .map(|i| u64::from(self.targets[i].weight))
            .sum();
        (up as f64) * 100.0 / (total as f64) >= th
    }

    /// Picks a target. `tried` are the targets this request already failed
    /// on: they are avoided while another usable target exists.
    pub fn pick(&self, hash: Option<&str>, tried: &[usize]) -> Result<Picked, PickError> {
        if !self.healthy_enough() {
            return Err(PickError::Unhealthy);
        }
        let fresh = |i: usize| self.available(i) && !tried.contains(&i);
        let any = |i: usize| self.available(i);
        for ok in [&fresh as &dyn Fn(usize) -> bool, &any] {
            let picked = match &self.algorithm {
                Algorithm::RoundRobin(rr) => rr.pick(ok).map(|index| Picked { index, guard: None }),
                Algorithm::ConsistentHash(ch) => ch
                    .pick(hash.unwrap_or(""), ok)
                    .map(|index| Picked { index, guard: None }),
                Algorithm::LeastConnections(lc) => lc.pick(ok).map(|(index, g)| Picked {
                    index,
                    guard: Some(g),
                }),
                Algorithm::Latency(l) => l.pick(ok).map(|index| Picked { index, guard: None }),
            };
            if let Some(p) = picked {
                return Ok(p);
            }
        }
        Err(PickError::NoPeers)
    }

    /// Records a finished try (the latency algorithm learns from it).
    pub fn observe(&self, i: usize, rtt: std::time::Duration) {
        if let Algorithm::Latency(l) = &self.algorithm {
            l.observe(i, rtt);
        }
    }

    /// Feeds a try's outcome to the target's passive health.
    pub fn report(&self, i: usize, outcome: health::passive::Outcome) {
        if let Some(t) = self.targets.get(i) {
            health::passive::report(&t.health, &self.health_cfg, outcome);
        }
    }

    /// Each target's state as `kong_upstream_target_health` reports it.
    pub fn target_health(&self) -> Vec<(String, HealthState)> {
        self.targets
            .iter()
            .map(|t| {
                let state = if t.addr.dns_failed() {
                    HealthState::DnsError
                } else if !self.health_cfg.enabled() {
                    HealthState::HealthchecksOff
                } else if t.health.is_healthy() {
                    HealthState::Healthy
                } else {
                    HealthState::Unhealthy
                };
                (t.target.clone(), state)
            })
            .collect()
    }

    /// Takes the health of targets the previous balancer of this upstream
    /// also had, when the checks are configured the same.
    pub fn inherit(&self, old: &Balancer) {
        if old.health_cfg != self.health_cfg {
            return;
        }
        for t in &self.targets {
            if let Some(o) = old.targets.iter().find(|o| o.target == t.target) {
                t.health.copy_from(&o.health);
            }
        }
    }

    /// Starts the active probe loops on `rt` (no-op when active checks are off).
    pub fn start_active(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let cfg = &self.health_cfg;
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (healthy, interval) in [
            (true, cfg.healthy_interval),
            (false, cfg.unhealthy_interval),
        ] {
            if interval.is_zero() {
                continue;
            }
            let weak = Arc::downgrade(self);
            let h = rt.spawn(health::active::run(weak, healthy, interval));
            tasks.push(h.abort_handle());
        }
    }

    pub fn stop_background(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

fn hash_from(src: &HashSource, input: &HashInput<'_>) -> Option<HashValue> {
    let plain = |v: String| {
        Some(HashValue {
            value: v,
            set_cookie: None,
        })
    };
    match src {
        HashSource::None => None,
        HashSource::Consumer => input.consumer.map(str::to_string).and_then(plain),
        HashSource::Ip => input.client_ip.map(|ip| ip.to_string()).and_then(plain),
        HashSource::Header(name) => {
            // nginx joins repeated headers for `$http_*`.
            let vals: Vec<&str> = input
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if vals.is_empty() {
                None
            } else {
                plain(vals.join(", "))
            }
        }
        HashSource::Cookie { name, path } => match cookie(input.headers, name) {
            Some(v) => plain(v),
            None => {
                // No cookie yet: make one up and hand it to the client.
                let value = uuid::Uuid::new_v4().to_string();
                let set = format!("{name}={value}; Path={path}; Same-Site=Lax; HttpOnly");
                Some(HashValue {
                    value,
                    set_cookie: Some(set),
                })
            }
        },
        HashSource::Path => plain(input.path.to_string()),
        HashSource::QueryArg(name) => query_arg(input.query?, name).and_then(plain),
        HashSource::UriCapture(group) => input
            .captures
            .iter()
            .find(|(n, _)| n.as_deref() == Some(group.as_str()))
            .map(|(_, v)| v.clone())
            .and_then(plain),
    }
}

/// nginx's `$cookie_NAME`: the first cookie of that name.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Kong's query-arg value: decoded, repeated ones sorted and joined by
/// ",", a bare `?name` is "true".
fn query_arg(query: &str, name: &str) -> Option<String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut vals: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| match kv.split_once('=') {
            Some((k, v)) if decode(k) == name => Some(decode(v)),
            None if decode(kv) == name => Some("true".to_string()),
            _ => None,
        })
        .collect();
    match vals.len() {
        0 => None,
        1 => vals.pop(),
        _ => {
            vals.sort();
            Some(vals.join(","))
        }
    }
}

/// What runs behind the snapshots: a small runtime of its own (the proxy's
/// runtimes belong to Pingora, and configs are stored from plain threads)
/// and the DNS resolver. Owned by the config handle, not a static.
#[derive(Debug, Default)]
pub struct Background {
    runtime: OnceLock<Option<tokio::runtime::Handle>>,
    lookup: OnceLock<Arc<dyn dns::NameLookup>>,
}

impl Background {
    /// The background runtime, started on first use.
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let spawned = std::thread::Builder::new()
                    .name("gw-balancer".into())
                    .spawn(move || {
                        let rt = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                log::error!("cannot start the balancer runtime: {e}");
                                return;
                            }
                        };
                        let _ = tx.send(rt.handle().clone());
                        // Lives as long as the process.
                        rt.block_on(std::future::pending::<()>());
                    });
                match spawned {
                    Ok(_) => rx.recv().ok(),
                    Err(e) => {
                        log::error!("cannot start the balancer thread: {e}");
                        None
                    }
                }
            })
            .clone()
    }

    /// The resolver environment handed to every name.
    pub fn dns_env(&self) -> DnsEnv {
        let runtime = self.runtime();
        let lookup = self
            .lookup
            .get_or_init(|| {
                // hickory wants a runtime context when it is built.
                let _guard = runtime.as_ref().map(|h| h.enter());
                Arc::new(dns::HickoryLookup::system())
            })
            .clone();
        DnsEnv { lookup, runtime }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use config_sync::{parse_declarative_str, ParseOptions};

    /// The first upstream of a YAML config (with `_format_version` added).
    pub(crate) fn balancer_from(yaml: &str) -> Balancer {
        let text = format!("_format_version: \"3.0\"\n{yaml}");
        let cfg = parse_declarative_str(&text, &ParseOptions::default()).unwrap();
        let up = &cfg.upstreams[0];
        let targets: Vec<&model::Target> =
            cfg.targets.iter().filter(|t| t.upstream == up.id).collect();
        Balancer::new(up, &targets)
    }

    #[test]
    fn split_targets() {
        assert_eq!(split_target("a.test"), ("a.test".into(), 8000));
        assert_eq!(split_target("a.test:81"), ("a.test".into(), 81));
        assert_eq!(split_target("[::1]:82"), ("[::1]".into(), 82));
        assert_eq!(split_target("[::1]"), ("[::1]".into(), 8000));
    }

    fn input<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> HashInput<'a> {
        HashInput {
            consumer: None,
            client_ip: Some("10.1.2.3".parse().unwrap()),
            headers,
            path: "/p/x",
            query,
            captures: &[],
        }
    }

    #[test]
    fn hash_values_follow_hash_on_then_fallback() {
        let b = balancer_from(
            r#"
upstreams:
  - name: up
    algorithm: consistent-hashing
    hash_on: header
    hash_on_header: X-Key
    hash_fallback: query_arg
    hash_fallback_query_arg: k
    targets: [{target: "127.0.0.1:1"}, {target: "127.0.0.1:2"}]
"#,
        );
        let mut h = HeaderMap::new();
        assert_eq!(b.hash_value(&input(&h, Some("k=b&k=a+1"))).value, "a 1,b");
        assert_eq!(b.hash_value(&input(&h, Some("k"))).value, "true");
        assert_eq!(b.hash_value(&input(&h, None)).value, "");
        h.append("x-key", "one".parse().unwrap());
        h.append("x-key", "two".parse().unwrap());
        assert_eq!(b.hash_value(&input(&h, None)).value, "one, two");
        let v = b.hash_value(&input(&h, None)).value;
        let first = b.pick(Some(&v), &[]).unwrap().index;
        for _ in 0..20 {
            assert_eq!(b.pick(Some(&v), &[]).unwrap().index, first);
        }
        // A retry avoids the failed target.
        assert_ne!(b.pick(Some(&v), &[first]).unwrap().index, first);
    }

    #[test]
    fn cookie_hashing_sets_a_cookie_when_absent() {
        let b = balancer_from(
            r#"
upstreams:
  - name: up
    algorithm: consistent-hashing
    hash_on: cookie
    hash_on_cookie: sticky
    hash_on_cookie_path: /app
    targets: [{target: "127.0.0.1:1"}]
"#,
        );
        let mut h = HeaderMap::new();
        let v = b.hash_value(&input(&h, None));
        let set = v.set_cookie.unwrap();
        assert!(
            set.starts_with(&format!("sticky={}; Path=/app;", v.value)),
            "{set}"
        );
        h.insert("cookie", "a=1; sticky=abc".parse().unwrap());
        assert_eq!(
            b.hash_value(&input(&h, None)),
            HashValue {
                value: "abc".into(),
                set_cookie: None
            }
        );
    }

    #[test]
    fn unhealthy_targets_leave_and_the_threshold_applies() {
        let b = balancer_from(
            r#"
upstreams:
  - name: up
    healthchecks:
      threshold: 40
      passive: {unhealthy: {tcp_failures: 1}}
    targets: [{target: "127.0.0.1:1"}, {target: "127.0.0.1:2"}, {target: "127.0.0.1:3", weight: 0}]
"#,
        );
        b.report(0, health::passive::Outcome::TcpFailure);
        for _ in 0..10 {
            assert_eq!(b.pick(None, &[]).unwrap().index, 1);
        }
        // 50% healthy weight passes the 40% threshold; 0% does not.
        assert_eq!(b.target_health()[0].1, HealthState::Unhealthy);
        b.report(1, health::passive::Outcome::Timeout);
        assert!(
            b.pick(None, &[]).is_ok(),
            "timeouts: 0 disables that counter"
        );
        b.report(1, health::passive::Outcome::TcpFailure);
        assert_eq!(b.pick(None, &[]).unwrap_err(), PickError::Unhealthy);
        // Health carries over to an identical balancer.
        let c = balancer_from(
            r#"
upstreams:
  - name: up
    healthchecks:
      threshold: 40
      passive: {unhealthy: {tcp_failures: 1}}
    targets: [{target: "127.0.0.1:1"}, {target: "127.0.0.1:9"}]
"#,
        );
        c.inherit(&b);
        assert_eq!(c.target_health()[0].1, HealthState::Unhealthy);
        assert_eq!(c.target_health()[1].1, HealthState::Healthy);
    }

    #[test]
    fn least_connections_through_the_balancer() {
        let b = balancer_from(
            r#"
upstreams:
  - name: up
    algorithm: least-connections
    targets: [{target: "127.0.0.1:1"}, {target: "127.0.0.1:2"}]
"#,
        );
        let a = b.pick(None, &[]).unwrap();
        let c = b.pick(None, &[]).unwrap();
        assert_ne!(a.index, c.index);
        assert!(a.guard.is_some());
        assert_eq!(b.target_health()[0].1, HealthState::HealthchecksOff);
    }
}
