//! The compiled, immutable configuration every request reads.
//!
//! A declarative config is validated by `config-sync`, then compiled here into
//! one [`Snapshot`] (router, services, balancers, plugins, certificates, hash)
//! and published through a single `ArcSwap`, so a request sees either the old
//! config or the new one, never a mix.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use config_sync::model::{self, DeclarativeConfig};
use uuid::Uuid;

use crate::balancer::{Background, Balancer, TargetAddr};
use crate::router::{RouteView, Router};
use crate::upstream_tls::UpstreamTlsDefaults;

/// Kong's hash of an empty configuration (`DECLARATIVE_EMPTY_CONFIG_HASH`).
pub const EMPTY_CONFIG_HASH: &str = "00000000000000000000000000000000";

/// Upstream protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where a service sends its traffic.
#[derive(Debug)]
pub enum ServiceTarget {
    /// `host` names an upstream: balance over its targets.
    Upstream(Arc<Balancer>),
    /// A plain host (IP or DNS name) and port.
    Host(Arc<TargetAddr>),
}

/// A service as the proxy path needs it.
#[derive(Debug)]
pub struct ServiceRt {
    pub id: Uuid,
    pub name: Option<String>,
    pub scheme: Scheme,
    /// `grpc`/`grpcs`: HTTP/2 to the upstream (h2c, or ALPN h2 over TLS).
    pub grpc: bool,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// An `https` service's TLS to its upstream (`upstream_tls`): the
    /// rustls config and the keep-alive pool group of its settings.
    pub tls: Option<Arc<crate::upstream_tls::PeerTls>>,
    pub target: ServiceTarget,
    /// The entity as configured, kept only when a plugin echoes it
    /// (request-termination's `matched_service`).
    pub entity: Option<Arc<model::Service>>,
}

/// A route as the proxy path needs it (matching itself lives in the router).
#[derive(Debug)]
pub struct RouteRt {
    pub id: Uuid,
    pub name: Option<String>,
    /// Index into [`Snapshot::services`]; `None` for a serviceless route.
    pub service: Option<usize>,
    /// `https` without `http`: plain requests get 426 or a redirect.
    pub https_only: bool,
    /// `grpc` or `grpcs`: only gRPC over HTTP/2 is proxied.
    pub grpc: bool,
    /// `grpcs` without `grpc`.
    pub grpcs_only: bool,
    pub https_redirect_status_code: u16,
    pub strip_path: bool,
    pub preserve_host: bool,
    /// The entity as configured, kept only when a plugin echoes it
    /// (request-termination's `matched_route`).
    pub entity: Option<Arc<model::Route>>,
}

/// A certificate and the SNIs that select it (served once TLS listeners land).
#[derive(Debug)]
pub struct CertificateRt {
    pub id: Uuid,
    pub cert_pem: String,
    pub key_pem: String,
    pub snis: Vec<String>,
}

/// One immutable, fully compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    pub routes: Vec<RouteRt>,
    pub services: Vec<ServiceRt>,
    pub upstreams: HashMap<String, Arc<Balancer>>,
    /// Enabled plugin instances, built, and each route's resolved chain.
    pub plugins: crate::plugins::PluginSet,
    /// Consumers and credentials, for the auth plugins.
    pub consumers: crate::plugins::consumers::ConsumerDb,
    /// Routes and services as Kong's log serializer shows them (compiled
    /// only when a logging plugin is configured).
    pub log_entities: crate::plugins::log_serializer::Entities,
    pub certificates: Vec<CertificateRt>,
    /// `certificates` + `snis` compiled for `ssl` listeners: signing keys
    /// and the SNI index a handshake looks up (`tls::SniResolver`).
    pub server_certs: crate::tls::CertIndex,
    pub ca_certificates: Vec<model::CaCertificate>,
    /// Kong's configuration hash (32 hex digits).
    pub hash: String,
    /// Whether the config holds anything (an empty one is not "ready").
    pub has_entities: bool,
}

/// Why a config could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Invalid(#[from] config_sync::ConfigErrors),
    #[error("in 'routes': {0}")]
    Router(#[from] crate::router::RouterError),
    #[error("in 'plugins': {0}")]
    Plugin(#[from] crate::plugins::runtime::PluginError),
    #[error("in 'certificates': {0}")]
    Certificate(#[from] crate::tls::CertError),
    #[error("{0}")]
    UpstreamTls(#[from] crate::upstream_tls::UpstreamTlsError),
}

impl Snapshot {
    /// The snapshot served before any configuration is loaded.
    pub fn empty() -> Snapshot {
        Snapshot {
            router: match Router::new(Vec::new()) {
                Ok(r) => r,
                Err(_) => unreachable!("an empty route set always compiles"),
            },
            routes: Vec::new(),
            services: Vec::new(),
            upstreams: HashMap::new(),
            plugins: crate::plugins::PluginSet::default(),
            consumers: crate::plugins::consumers::ConsumerDb::default(),
            log_entities: crate::plugins::log_serializer::Entities::default(),
            certificates: Vec::new(),
            server_certs: crate::tls::CertIndex::default(),
            ca_certificates: Vec::new(),
            hash: EMPTY_CONFIG_HASH.to_string(),
            has_entities: false,
        }
    }

    /// Compiles a validated declarative config.
    pub fn compile(cfg: &DeclarativeConfig, hash: String) -> Result<Snapshot, CompileError> {
        Snapshot::compile_with(cfg, hash, &UpstreamTlsDefaults::default())
    }

    /// Compiles with the process' upstream TLS defaults (`proxy_ssl_*`,
    /// `client_ssl`; [`ConfigHandle::upstream_tls`]).
    pub fn compile_with(
        cfg: &DeclarativeConfig,
        hash: String,
        upstream_tls: &UpstreamTlsDefaults,
    ) -> Result<Snapshot, CompileError> {
        // Group children by parent once: the scans below must stay linear
        // in the config size (10,000-route configs are common).
        let mut targets_of: HashMap<Uuid, Vec<&model::Target>> = HashMap::new();
        for t in &cfg.targets {
            targets_of.entry(t.upstream).or_default().push(t);
        }
        let mut peer_tls = crate::upstream_tls::Builder::new(cfg, upstream_tls);
        let mut upstreams: HashMap<String, Arc<Balancer>> = HashMap::new();
        for up in &cfg.upstreams {
            let targets = targets_of.remove(&up.id).unwrap_or_default();
            let probe_cert = peer_tls.probe_client_cert(up)?;
            upstreams.insert(
                up.name.clone(),
                Arc::new(Balancer::with_probe_cert(up, &targets, probe_cert)),
            );
        }

        // Entities are copied only for a plugin that shows them.
        let keep_entities = crate::plugins::request_termination::echoes_entities(&cfg.plugins);
        let mut services = Vec::with_capacity(cfg.services.len());
        // Service id -> index, or `None` for a disabled service (its routes
        // are left out of the router entirely, as Kong does).
        let mut service_index: HashMap<Uuid, Option<usize>> = HashMap::new();
        let upstream_entities: HashMap<&str, &model::Upstream> =
            cfg.upstreams.iter().map(|u| (u.name.as_str(), u)).collect();
        for s in &cfg.services {
            let scheme = match s.protocol.as_str() {
                "https" | "grpcs" | "wss" | "tls" => Scheme::Https,
                _ => Scheme::Http,
            };
            let target = match upstreams.get(&s.host) {
                Some(b) => ServiceTarget::Upstream(b.clone()),
                None => ServiceTarget::Host(Arc::new(TargetAddr::new(&s.host, s.port))),
            };
            service_index.insert(s.id, s.enabled.then_some(services.len()));
            services.push(ServiceRt {
                id: s.id,
                name: s.name.clone(),
                scheme,
                grpc: matches!(s.protocol.as_str(), "grpc" | "grpcs"),
                host: s.host.clone(),
                port: s.port,
                path: s.path.clone(),
                retries: s.retries,
                connect_timeout: Duration::from_millis(s.connect_timeout),
                read_timeout: Duration::from_millis(s.read_timeout),
                write_timeout: Duration::from_millis(s.write_timeout),
                tls: match scheme {
                    Scheme::Https => {
                        Some(peer_tls.service(s, upstream_entities.get(s.host.as_str()).copied())?)
                    }
                    Scheme::Http => None,
                },
                target,
                entity: keep_entities.then(|| Arc::new(s.clone())),
            });
        }

        let mut routes = Vec::with_capacity(cfg.routes.len());
        let mut specs = Vec::with_capacity(cfg.routes.len());
        for r in &cfg.routes {
            let service = match r.service {
                Some(sid) => match service_index.get(&sid) {
                    Some(None) => continue,
                    Some(Some(i)) => Some(*i),
                    None => None,
                },
                None => None,
            };
            let has = |p: &str| r.protocols.iter().any(|x| x == p);
            let index = routes.len();
            routes.push(RouteRt {
                id: r.id,
                name: r.name.clone(),
                service,
                https_only: has("https") && !has("http"),
                grpc: has("grpc") || has("grpcs"),
                grpcs_only: has("grpcs") && !has("grpc"),
                https_redirect_status_code: r.https_redirect_status_code,
                strip_path: r.strip_path,
                preserve_host: r.preserve_host,
                entity: keep_entities.then(|| Arc::new(r.clone())),
            });
            specs.push(RouteView {
                id: r.id,
                name: r.name.as_deref(),
                methods: &r.methods,
                hosts: r.hosts.as_deref(),
                paths: &r.paths,
                headers: &r.headers,
                snis: &r.snis,
                regex_priority: r.regex_priority,
                index,
            });
        }
        let router = Router::from_views(&specs)?;
        let has_entities = !cfg.services.is_empty()
            || !cfg.routes.is_empty()
            || !cfg.upstreams.is_empty()
            || !cfg.plugins.is_empty()
            || !cfg.consumers.is_empty()
            || !cfg.certificates.is_empty();
        let mut snis_of: HashMap<Uuid, Vec<String>> = HashMap::new();
        for sni in &cfg.snis {
            snis_of
                .entry(sni.certificate)
                .or_default()
                .push(sni.name.clone());
        }
        let certificates = cfg
            .certificates
            .iter()
            .map(|c| CertificateRt {
                id: c.id,
                cert_pem: c.cert.clone(),
                key_pem: c.key.clone(),
                snis: snis_of.remove(&c.id).unwrap_or_default(),
            })
            .collect();
        let scopes: Vec<(Uuid, Option<Uuid>)> = routes
            .iter()
            .map(|r| (r.id, r.service.and_then(|i| services.get(i)).map(|s| s.id)))
            .collect();
        let plugins = crate::plugins::PluginSet::compile(&cfg.plugins, &scopes)?;
        // Keys parsed once here: a handshake only looks up.
        let server_certs = crate::tls::CertIndex::compile(cfg)?;
        let consumers = crate::plugins::consumers::ConsumerDb::compile(cfg);
        let log_entities = crate::plugins::log_serializer::Entities::compile(cfg, &routes);
        Ok(Snapshot {
            router,
            routes,
            services,
            upstreams,
            plugins,
            consumers,
            log_entities,
            certificates,
            server_certs,
            ca_certificates: cfg.ca_certificates.clone(),
            hash,
            has_entities,
        })
    }
}

impl Snapshot {
    /// Makes a compiled snapshot live: names get the resolver, balancers
    /// take the health of unchanged targets from `old` and start probing.
    fn activate(self: &Arc<Self>, bg: &Background, old: &Snapshot) {
        let names = self
            .upstreams
            .values()
            .flat_map(|b| b.targets.iter().map(|t| &t.addr))
            .chain(self.services.iter().filter_map(|s| match &s.target {
                ServiceTarget::Host(a) => Some(a),
                ServiceTarget::Upstream(_) => None,
            }))
            .filter(|a| !a.is_ip());
        let mut env = None;
        for addr in names {
            let env = env.get_or_insert_with(|| bg.dns_env());
            addr.set_env(env.clone());
        }
        for (name, b) in &self.upstreams {
            if let Some(o) = old.upstreams.get(name) {
                b.inherit(o);
            }
            if b.health_cfg.active_enabled() {
                match bg.runtime() {
                    Some(rt) => b.start_active(&rt),
                    None => log::error!("no runtime for the active checks of '{name}'"),
                }
            }
        }
    }

    /// Stops the balancers' background work (the snapshot was replaced).
    fn deactivate(&self) {
        for b in self.upstreams.values() {
            b.stop_background();
        }
    }

    /// Every target's health (`kong_upstream_target_health`):
    /// (upstream, target, state).
    pub fn target_health(&self) -> Vec<(String, String, crate::balancer::health::HealthState)> {
        let mut out = Vec::new();
        for (name, b) in &self.upstreams {
            for (target, state) in b.target_health() {
                out.push((name.clone(), target, state));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

/// The live configuration, swapped whole.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    current: Arc<ArcSwap<Snapshot>>,
    /// Runtime and resolver behind the balancers, shared by all snapshots.
    background: Arc<Background>,
    /// Serializes stores, so health is inherited from the snapshot replaced.
    swap: Arc<std::sync::Mutex<()>>,
    /// Plugin state kept across swaps; pruned to the live instances.
    plugin_state: Arc<crate::plugins::runtime::StateStore>,
    /// Upstream TLS settings every compile uses (read once at start).
    upstream_tls: Arc<UpstreamTlsDefaults>,
}

impl Default for ConfigHandle {
    fn default() -> Self {
        ConfigHandle {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
            background: Arc::new(Background::default()),
            swap: Arc::new(std::sync::Mutex::new(())),
            plugin_state: Arc::default(),
            upstream_tls: Arc::default(),
        }
    }
}

impl ConfigHandle {
    /// A handle whose swaps prune `state` to the live plugin instances.
    pub fn with_plugin_state(state: Arc<crate::plugins::runtime::StateStore>) -> ConfigHandle {
        ConfigHandle {
            plugin_state: state,
            ..ConfigHandle::default()
        }
    }

    /// This handle with the process' upstream TLS settings (set before the
    /// handle is shared).
    pub fn with_upstream_tls(mut self, defaults: UpstreamTlsDefaults) -> ConfigHandle {
        self.upstream_tls = Arc::new(defaults);
        self
    }

    /// What [`Snapshot::compile_with`] needs for configs applied here.
    pub fn upstream_tls(&self) -> &UpstreamTlsDefaults {
        &self.upstream_tls
    }

    /// The snapshot for one request; hold the `Arc` for the request's life.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot atomically. Health of unchanged targets
    /// carries over; the replaced snapshot's probes stop.
    pub fn store(&self, snapshot: Snapshot) {
        let _one_at_a_time = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = Arc::new(snapshot);
        // Only borrowed: a second reference to the old snapshot alive here
        // would make `drop_elsewhere` leave its freeing to this thread.
        snapshot.activate(&self.background, &self.current.load());
        let old = self.current.swap(snapshot.clone());
        old.deactivate();
        // A deleted plugin instance's state goes; a kept one's survives.
        self.plugin_state.retain(&snapshot.plugins.ids());
        drop_elsewhere(old);
        self.warm_router(snapshot);
    }

    /// Compiles the new router's regexes on a short-lived thread: the config
    /// is live already (a request needing a regex first compiles it), this
    /// just takes that cost off the requests. Stops if replaced meanwhile.
    fn warm_router(&self, snapshot: Arc<Snapshot>) {
        if snapshot.router.regex_count() == 0 {
            return;
        }
        let current = self.current.clone();
        let spawned = std::thread::Builder::new()
            .name("router-warm".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let live = || Arc::ptr_eq(&current.load(), &snapshot);
                let n = snapshot.router.warm(&live);
                if n > 0 {
                    log::debug!(
                        "router: compiled {n} regexes in {} ms after config {} went live",
                        started.elapsed().as_millis(),
                        snapshot.hash
                    );
                }
            });
        if let Err(e) = spawned {
            log::debug!("no thread to warm the router ({e}): regexes compile on first use");
        }
    }
}

/// Frees a replaced snapshot (a router over thousands of routes takes
/// milliseconds to free) on a short-lived thread, so the apply that
/// replaced it returns without paying for it. Requests still holding it
/// keep it alive as before.
fn drop_elsewhere(old: Arc<Snapshot>) {
    // Small ones (and ones requests still hold) are not worth a thread.
    if Arc::strong_count(&old) > 1 || old.routes.len() < 1_000 {
        return;
    }
    // If the thread cannot start, the closure and `old` are freed here.
    let spawned = std::thread::Builder::new()
        .name("config-drop".into())
        .spawn(move || drop(old));
    if let Err(e) = spawned {
        log::debug!("freed the replaced config inline: {e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::{parse_declarative_str, ParseOptions};

    fn compile(yaml: &str) -> Snapshot {
        let cfg = parse_declarative_str(yaml, &ParseOptions::default()).unwrap();
        Snapshot::compile(&cfg, "h".into()).unwrap()
    }

    #[test]
    fn routes_of_disabled_services_are_left_out() {
        let s = compile(
            r#"
_format_version: "3.0"
services:
  - name: on
    url: http://127.0.0.1:1
    routes: [{name: a, paths: ["/a"]}]
  - name: off
    enabled: false
    url: http://127.0.0.1:2
    routes: [{name: b, paths: ["/b"]}]
routes:
  - name: lonely
    paths: ["/c"]
"#,
        );
        let names: Vec<_> = s.routes.iter().filter_map(|r| r.name.clone()).collect();
        assert_eq!(names, vec!["a", "lonely"]);
        assert!(s.routes[1].service.is_none(), "serviceless route kept");
        assert!(s.has_entities);
    }

    #[test]
    fn services_naming_an_upstream_balance_over_its_targets() {
        let s = compile(
            r#"
_format_version: "3.0"
services:
  - name: svc
    host: up.internal
upstreams:
  - name: up.internal
    targets:
      - {target: "127.0.0.1:1", weight: 30}
      - {target: "127.0.0.1:2", weight: 10}
      - {target: "127.0.0.1:3", weight: 0}
"#,
        );
        let ServiceTarget::Upstream(b) = &s.services[0].target else {
            panic!("expected an upstream target")
        };
        let mut counts = [0usize; 3];
        for _ in 0..400 {
            let i = b.pick(None, &[]).unwrap().index;
            counts[(b.targets[i].addr.port - 1) as usize] += 1;
        }
        assert_eq!(
            counts,
            [300, 100, 0],
            "exact weighted distribution, weight 0 never"
        );
    }

    #[test]
    fn a_swap_keeps_health_of_unchanged_targets() {
        let yaml = |extra: &str| {
            format!(
                r#"
_format_version: "3.0"
upstreams:
  - name: up
    healthchecks: {{passive: {{unhealthy: {{tcp_failures: 1}}}}}}
    targets:
      - {{target: "127.0.0.1:1"}}
      - {{target: "127.0.0.1:2"}}
{extra}
"#
            )
        };
        let handle = ConfigHandle::default();
        handle.store(compile(&yaml("")));
        let s = handle.load();
        s.upstreams["up"].report(0, crate::balancer::health::passive::Outcome::TcpFailure);
        handle.store(compile(&yaml(r#"      - {target: "127.0.0.1:3"}"#)));
        let states: Vec<_> = handle
            .load()
            .target_health()
            .into_iter()
            .map(|(_, t, s)| (t, s.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("127.0.0.1:1".to_string(), "unhealthy"),
                ("127.0.0.1:2".to_string(), "healthy"),
                ("127.0.0.1:3".to_string(), "healthy"),
            ]
        );
    }

    #[test]
    fn empty_config_is_not_ready() {
        let s = compile("_format_version: \"3.0\"\n");
        assert!(!s.has_entities);
    }
}
