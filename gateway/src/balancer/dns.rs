//! Name resolution for service hosts and upstream targets.
//!
//! Names go through hickory (`/etc/resolv.conf` + `/etc/hosts`) so record
//! TTLs are honoured, which `getaddrinfo` cannot do. A resolved name is
//! reused until its TTL runs out; after that the stale answer keeps serving
//! while one background lookup refreshes it, so only the very first request
//! for a name ever waits on DNS. IP literals never touch any of this.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use tokio::time::Instant;

/// Upper bound on one resolution as the request sees it: a dead resolver
/// must give a quick 503, never a hung request.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// Kong's `dns_not_found_ttl`: how long "no such name" is remembered.
const NOT_FOUND_TTL: Duration = Duration::from_secs(30);
/// Kong's `dns_error_ttl`: how long a server failure is remembered.
const ERROR_TTL: Duration = Duration::from_secs(1);
/// Kong's `dns_stale_ttl`: how long a stale answer may serve while
/// refreshes keep failing.
const STALE_TTL: Duration = Duration::from_secs(3600);
/// TTL floor, so a 0-TTL record does not cause a lookup per request.
const MIN_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN or an empty answer (Kong: "name resolution failed").
    #[error("name resolution failed")]
    NotFound,
    /// Timeout, unreachable server, SERVFAIL ...
    #[error("dns server error: {0}")]
    Server(String),
}

/// One lookup of all A/AAAA records of a name, with the answer's TTL.
#[async_trait]
pub trait NameLookup: Send + Sync + fmt::Debug {
    async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), DnsError>;
}

/// The system resolver (hickory with the host's resolv.conf and hosts file).
pub struct HickoryLookup {
    resolver: hickory_resolver::TokioResolver,
}

impl fmt::Debug for HickoryLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HickoryLookup")
    }
}

impl HickoryLookup {
    pub fn system() -> HickoryLookup {
        use hickory_resolver::config::{LookupIpStrategy, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        let builder = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                // No usable resolv.conf: the hosts file still answers.
                log::warn!("reading the system DNS configuration failed ({e}); using hosts only");
                hickory_resolver::TokioResolver::builder_with_config(
                    ResolverConfig::new(),
                    TokioConnectionProvider::default(),
                )
            }
        };
        let mut b = builder;
        let opts = b.options_mut();
        // All A and AAAA records are used, as Kong does.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = Duration::from_millis(1500);
        opts.attempts = 2;
        HickoryLookup {
            resolver: b.build(),
        }
    }
}

#[async_trait]
impl NameLookup for HickoryLookup {
    async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), DnsError> {
        match self.resolver.lookup_ip(host).await {
            Ok(l) => {
                let ttl = l
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now());
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() {
                    Err(DnsError::NotFound)
                } else {
                    Ok((ips, ttl))
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(DnsError::NotFound),
            Err(e) => Err(DnsError::Server(e.to_string())),
        }
    }
}

/// What resolution needs at run time: the lookup and a runtime that keeps
/// running background refreshes after the request that started them ended.
#[derive(Debug, Clone)]
pub struct DnsEnv {
    pub lookup: Arc<dyn NameLookup>,
    pub runtime: Option<tokio::runtime::Handle>,
}

#[derive(Debug)]
struct Cached {
    /// Empty for a remembered failure.
    addrs: Vec<IpAddr>,
    error: Option<DnsError>,
    expires: Instant,
    /// A stale answer may serve until then while refreshes fail.
    stale_until: Instant,
}

/// A host and port; IPs are used as they are, names are resolved and cached.
#[derive(Debug)]
pub struct TargetAddr {
    pub host: String,
    pub port: u16,
    ip: Option<SocketAddr>,
    env: OnceLock<DnsEnv>,
    cache: ArcSwapOption<Cached>,
    refreshing: AtomicBool,
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
            env: OnceLock::new(),
            cache: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            next: AtomicUsize::new(0),
        }
    }

    pub fn is_ip(&self) -> bool {
        self.ip.is_some()
    }

    /// Gives the address its resolver; set once when the snapshot goes live.
    pub fn set_env(&self, env: DnsEnv) {
        let _ = self.env.set(env);
    }

    /// Whether the last resolution of the name failed (for target health).
    pub fn dns_failed(&self) -> bool {
        self.cache
            .load()
            .as_ref()
            .is_some_and(|c| c.addrs.is_empty())
    }

    /// One address of the target, rotating over all the name resolves to.
    pub async fn resolve(self: &Arc<Self>) -> Result<SocketAddr, DnsError> {
        if let Some(ip) = self.ip {
            return Ok(ip);
        }
        let now = Instant::now();
        let cached = self.cache.load_full();
        let entry = match cached {
            Some(c) if c.expires > now => c,
            Some(c) if !c.addrs.is_empty() && c.stale_until > now => {
                // Stale but usable: answer now, refresh behind the request.
                self.refresh_in_background();
                c
            }
            _ => self.lookup_now().await,
        };
        if let Some(e) = &entry.error {
            return Err(e.clone());
        }
        let n = entry.addrs.len();
        if n == 0 {
            return Err(DnsError::NotFound);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        Ok(SocketAddr::new(entry.addrs[i], self.port))
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let job = async move {
            me.lookup_now().await;
            me.refreshing.store(false, Ordering::Release);
        };
        match self.env.get().and_then(|e| e.runtime.as_ref()) {
            Some(rt) => {
                rt.spawn(job);
            }
            None => {
                tokio::spawn(job);
            }
        }
    }

    /// Resolves now, stores the outcome and returns it.
    async fn lookup_now(self: &Arc<Self>) -> Arc<Cached> {
        let result = match self.env.get() {
            Some(env) => {
                let lookup = env.lookup.clone();
                let host = self.host.clone();
                let fut = async move {
                    tokio::time::timeout(DNS_TIMEOUT, lookup.lookup(&host))
                        .await
                        .unwrap_or_else(|_| Err(DnsError::Server("timeout".into())))
                };
                // hickory's connections live on the background runtime, so
                // they outlast the request (and the Pingora thread) asking.
                match &env.runtime {
                    Some(rt) => rt
                        .spawn(fut)
                        .await
                        .unwrap_or_else(|e| Err(DnsError::Server(e.to_string()))),
                    None => fut.await,
                }
            }
            None => system_lookup(&self.host, self.port).await,
        };
        let now = Instant::now();
        let prev = self.cache.load_full();
        let entry = match result {
            Ok((addrs, ttl)) => Cached {
                addrs,
                error: None,
                expires: now + ttl.max(MIN_TTL),
                stale_until: now + ttl.max(MIN_TTL) + STALE_TTL,
            },
            Err(e) => match prev {
                // Keep serving the last good answer while it may go stale.
                Some(p) if !p.addrs.is_empty() && p.stale_until > now => {
                    log::warn!(
                        "DNS refresh of {} failed ({e}); using the stale answer",
                        self.host
                    );
                    Cached {
                        addrs: p.addrs.clone(),
                        error: None,
                        expires: now + ERROR_TTL,
                        stale_until: p.stale_until,
                    }
                }
                _ => {
                    log::error!("DNS resolution of {} failed: {e}", self.host);
                    let ttl = if e == DnsError::NotFound {
                        NOT_FOUND_TTL
                    } else {
                        ERROR_TTL
                    };
                    Cached {
                        addrs: Vec::new(),
                        error: Some(e),
                        expires: now + ttl,
                        stale_until: now,
                    }
                }
            },
        };
        let entry = Arc::new(entry);
        self.cache.store(Some(entry.clone()));
        entry
    }
}

/// Without a configured resolver (a snapshot that never went live, unit
/// tests): `getaddrinfo`, which knows no TTL, cached for 30 s.
async fn system_lookup(host: &str, port: u16) -> Result<(Vec<IpAddr>, Duration), DnsError> {
    let fut = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(DNS_TIMEOUT, fut).await {
        Ok(Ok(it)) => {
            let ips: Vec<IpAddr> = it.map(|a| a.ip()).collect();
            if ips.is_empty() {
                Err(DnsError::NotFound)
            } else {
                Ok((ips, Duration::from_secs(30)))
            }
        }
        Ok(Err(_)) => Err(DnsError::NotFound),
        Err(_) => Err(DnsError::Server("timeout".into())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Answer = Result<(Vec<IpAddr>, Duration), DnsError>;

    /// Answers from a script and counts lookups.
    #[derive(Debug, Default)]
    struct Fake {
        answers: Mutex<Vec<Answer>>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl NameLookup for Fake {
        async fn lookup(&self, _host: &str) -> Result<(Vec<IpAddr>, Duration), DnsError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut a = self.answers.lock().unwrap();
            if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn target(fake: &Arc<Fake>) -> Arc<TargetAddr> {
        let t = Arc::new(TargetAddr::new("svc.test", 80));
        t.set_env(DnsEnv {
            lookup: fake.clone(),
            runtime: None,
        });
        t
    }

    #[tokio::test]
    async fn ip_targets_need_no_dns() {
        let t = Arc::new(TargetAddr::new("127.0.0.1", 9));
        assert_eq!(t.resolve().await.unwrap(), "127.0.0.1:9".parse().unwrap());
        let t = Arc::new(TargetAddr::new("[::1]", 9));
        assert_eq!(t.resolve().await.unwrap(), "[::1]:9".parse().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_is_honoured_and_refresh_happens_behind_requests() {
        let fake = Arc::new(Fake::default());
        *fake.answers.lock().unwrap() = vec![
            Ok((
                vec![ip("10.0.0.1"), ip("10.0.0.2")],
                Duration::from_secs(10),
            )),
            Ok((vec![ip("10.0.0.3")], Duration::from_secs(10))),
        ];
        let t = target(&fake);
        // All addresses are used in turn.
        let a = t.resolve().await.unwrap();
        let b = t.resolve().await.unwrap();
        assert_ne!(a, b);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(9)).await;
        t.resolve().await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "within TTL: cached");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Expired: the stale answer serves and a refresh runs behind.
        let stale = t.resolve().await.unwrap();
        assert!(stale.ip() == ip("10.0.0.1") || stale.ip() == ip("10.0.0.2"));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert_eq!(t.resolve().await.unwrap().ip(), ip("10.0.0.3"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_remembered_briefly_and_stale_answers_survive_them() {
        let fake = Arc::new(Fake::default());
        *fake.answers.lock().unwrap() = vec![Err(DnsError::NotFound)];
        let t = target(&fake);
        assert_eq!(t.resolve().await, Err(DnsError::NotFound));
        assert_eq!(t.resolve().await, Err(DnsError::NotFound));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "negative cache");
        assert!(t.dns_failed());
        tokio::time::advance(NOT_FOUND_TTL + Duration::from_secs(1)).await;
        *fake.answers.lock().unwrap() = vec![
            Ok((vec![ip("10.0.0.9")], Duration::from_secs(5))),
            Err(DnsError::Server("down".into())),
        ];
        assert_eq!(t.resolve().await.unwrap().ip(), ip("10.0.0.9"));
        tokio::time::advance(Duration::from_secs(6)).await;
        // The refresh fails: the old answer keeps serving.
        assert_eq!(t.resolve().await.unwrap().ip(), ip("10.0.0.9"));
        tokio::task::yield_now().await;
        assert_eq!(t.resolve().await.unwrap().ip(), ip("10.0.0.9"));
        assert!(!t.dns_failed());
    }

    /// A lookup that never answers must not hang the request.
    #[derive(Debug)]
    struct Hang;

    #[async_trait]
    impl NameLookup for Hang {
        async fn lookup(&self, _host: &str) -> Result<(Vec<IpAddr>, Duration), DnsError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_resolver_fails_within_the_timeout() {
        let t = Arc::new(TargetAddr::new("svc.test", 80));
        t.set_env(DnsEnv {
            lookup: Arc::new(Hang),
            runtime: None,
        });
        let started = Instant::now();
        assert!(matches!(t.resolve().await, Err(DnsError::Server(_))));
        assert!(started.elapsed() <= DNS_TIMEOUT + Duration::from_millis(10));
    }
}
