//! Assembling the Pingora server from Kong settings: the proxy listeners,
//! the status listener and the process-wide handles they share.

use std::sync::Arc;

use config_sync::settings::{ListenAddr, Settings};
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::metrics::Metrics;
use crate::proxy::forwarded::{RealIpHeader, TrustConfig};
use crate::proxy::h1_front::H1Front;
use crate::proxy::h1_guard::HeadLimits;
use crate::proxy::response::ErrorFormat;
use crate::proxy::{HeaderToggles, KongProxy, ProxyOptions};
use crate::snapshot::ConfigHandle;
use crate::stats::Stats;
use crate::status::StatusApi;

/// Handles shared by the proxy, the status API and the reload thread.
#[derive(Clone)]
pub struct Shared {
    pub config: ConfigHandle,
    pub stats: Arc<Stats>,
    /// Set on SIGTERM / `kong quit`: readiness answers 503 "draining".
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Prometheus registries behind the status API's `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What plugins share across requests and config swaps (holds the
    /// same metrics handle).
    pub plugins: Arc<crate::plugins::PluginEnv>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(crate::plugins::proxy_cache::DEFAULT_MEM_CACHE_SIZE)
    }
}

impl Shared {
    /// The handles, with Kong's `mem_cache_size` for the shared dicts
    /// proxy-cache stores in.
    pub fn new(mem_cache_size: u64) -> Self {
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(crate::plugins::runtime::StateStore::default());
        Shared {
            config: ConfigHandle::with_plugin_state(store.clone()),
            stats: Arc::default(),
            draining: Arc::default(),
            plugins: Arc::new(crate::plugins::PluginEnv {
                caches: Arc::new(crate::plugins::proxy_cache::CacheStores::new(
                    mem_cache_size,
                )),
                ..crate::plugins::PluginEnv::new(metrics.clone(), store)
            }),
            metrics,
        }
    }
}

/// The proxy path's options from Kong settings.
pub fn proxy_options(s: &Settings) -> ProxyOptions {
    let h = &s.headers;
    ProxyOptions {
        headers: HeaderToggles {
            server: h.server,
            via: h.via,
            proxy_latency: h.proxy_latency,
            response_latency: h.response_latency,
            upstream_latency: h.upstream_latency,
            upstream_status: h.upstream_status,
            request_id: h.request_id,
            upstream_request_id: s.headers_upstream_request_id,
        },
        trust: TrustConfig {
            trusted: s.trusted_ips.clone(),
            header: RealIpHeader::parse(&s.real_ip_header),
            recursive: s.real_ip_recursive,
        },
        error_default_type: ErrorFormat::from_mime(s.error_default_type.as_str())
            .unwrap_or(ErrorFormat::Plain),
        head_limits: HeadLimits {
            line_max: s.nginx_http_large_client_header_buffers.size as usize,
            total_max: (s.nginx_http_large_client_header_buffers.size
                * u64::from(s.nginx_http_large_client_header_buffers.number))
                as usize,
        },
        client_max_body_size: s.nginx_http_client_max_body_size.unwrap_or(0),
        port_maps: s.port_maps.clone(),
        allow_debug_header: s.allow_debug_header,
        client_header_timeout: s.client_header_timeout,
        client_body_timeout: s.client_body_timeout,
        underscores_in_headers: s.underscores_in_headers,
        client_body_buffer_size: s.nginx_http_client_body_buffer_size,
        // Kong: 0 keeps an idle pooled connection open indefinitely.
        upstream_idle_timeout: (s.upstream_keepalive_idle_timeout > 0)
            .then(|| std::time::Duration::from_secs(s.upstream_keepalive_idle_timeout)),
        send_timeout: s.send_timeout,
        keepalive_requests: s.keepalive_requests,
        http2_max_concurrent_streams: s.http2_max_concurrent_streams,
        http2_body_preread_size: s.http2_body_preread_size,
    }
}

fn socket_options(l: &ListenAddr) -> TcpSocketOptions {
    let mut o = TcpSocketOptions::default();
    if l.reuseport {
        o.so_reuseport = Some(true);
    }
    o.ipv6_only = l.ipv6only;
    o
}

/// A plain-HTTP listener without Pingora's 64 KiB per-connection L4 read
/// buffer. Every reader of these streams brings its own buffer (the h1
/// front's head buffer, Pingora's header and body buffers), so the L4 one
/// only added a copy per read, and a zero-filled 64 KiB allocation per
/// accepted connection (resident in full whenever the allocator hands out
/// reused memory, as after a burst). The small write buffer stays: it
/// coalesces a response head with a small body into one `sendto`.
fn plain_listener(l: &ListenAddr) -> ListenerConfig {
    ListenerConfig::tcp(l.bind_address())
        .tcp_socket_options(socket_options(l))
        .l4_buffer(L4BufferSettings {
            read: Some(0),
            write: None,
        })
}

/// The PROXY-protocol and TLS steps of the proxy listeners flagged for
/// them: the default certificate (`ssl_cert`, or generated under the
/// prefix as Kong does) and the rustls config are set up once here; the
/// certificates of the configuration are read per handshake from the live
/// snapshot.
fn edge(settings: &Settings, shared: &Shared) -> anyhow::Result<Option<crate::proxy::edge::Edge>> {
    use crate::tls::{server_config, DefaultCerts, SniResolver};
    let tls = if settings.proxy_listen.iter().any(|l| l.ssl) {
        let ssl = &settings.ssl;
        let defaults = DefaultCerts::load(&ssl.cert, &ssl.cert_key, &settings.prefix)?;
        if defaults.is_empty() {
            anyhow::bail!("ssl listeners need a default certificate and none could be set up");
        }
        let resolver = Arc::new(SniResolver {
            config: shared.config.clone(),
            defaults,
        });
        Some(server_config(ssl, resolver)?)
    } else {
        None
    };
    Ok(crate::proxy::edge::Edge::new(
        &settings.proxy_listen,
        tls,
        settings.client_header_timeout,
    ))
}

/// Worker threads: `nginx_worker_processes`; `auto` is sized to the
/// container's CPU quota (cgroup v1 or v2), not the host's cores.
pub fn worker_threads(s: &Settings) -> usize {
    use autoscale_hooks::workers::system_worker_threads;
    use autoscale_hooks::WorkerSetting;
    use config_sync::settings::WorkerProcesses;
    let setting = match s.nginx_worker_processes {
        WorkerProcesses::Auto => WorkerSetting::Auto,
        WorkerProcesses::Count(n) => WorkerSetting::Count(n as usize),
    };
    let (decision, _cgroup) = system_worker_threads(setting);
    log::info!("worker threads: {} ({})", decision.threads, decision.reason);
    decision.threads.max(1)
}

/// Builds the Pingora server with the proxy and status services.
/// The built server and what must be flushed once it has stopped.
pub struct Built {
    pub server: Server,
    pub access_log: Option<AccessLog>,
}

pub fn build(settings: &Settings, shared: &Shared) -> anyhow::Result<Built> {
    let threads = worker_threads(settings);
    shared.metrics.set_worker_threads(threads);
    let pids = settings.prefix.join("pids");
    let conf = ServerConf {
        threads,
        // One worker thread has nothing to steal from: Pingora then runs it
        // as a tokio current-thread runtime, which skips the multi-thread
        // scheduler's cross-thread bookkeeping on every wake-up (about 10%
        // less CPU per request measured, and a lower p99 under a 0.2 CPU
        // quota with 800 connections). Several threads keep work stealing so
        // a few busy keep-alive connections cannot pin one thread.
        work_stealing: threads > 1,
        // An upper bound: the grace period ends as soon as no connection is
        // open (`DrainingShutdown::grace_done`, a vendored-Pingora patch).
        grace_period_seconds: Some(settings.worker_shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(5),
        // 0 pools nothing (Kong: a new upstream connection per request) and
        // max_requests closes a connection after that many requests (0: no
        // limit); both are a vendored-Pingora patch.
        upstream_keepalive_pool_size: usize::try_from(settings.upstream_keepalive_pool_size)
            .unwrap_or(usize::MAX),
        upstream_keepalive_max_requests: usize::try_from(settings.upstream_keepalive_max_requests)
            .unwrap_or(usize::MAX),
        // Every timeout of a second or more on tokio's timer wheel, none on
        // Pingora's fast-timeout thread: that thread wakes every 10 ms at
        // any load, and each of its timers costs a lock, a tree insert and
        // two `Arc`s, where tokio's entry lives in the wheel of the thread
        // that waits on it.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        pid_file: pids.join("gateway.pid").display().to_string(),
        upgrade_sock: pids.join("gateway_upgrade.sock").display().to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let access_log = match settings.proxy_access_log_path() {
        Some(p) => match AccessLog::open(&p) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!(
                    "cannot open proxy_access_log '{}': {e}; access log off",
                    p.display()
                );
                None
            }
        },
        None => None,
    };
    let proxy = KongProxy {
        config: shared.config.clone(),
        options: Arc::new(proxy_options(settings)),
        stats: shared.stats.clone(),
        access_log: access_log.clone(),
        plugins: shared.plugins.clone(),
        draining: shared.draining.clone(),
    };
    // The HTTP/1 front checks each request head before Pingora parses it;
    // `http_proxy` does what `http_proxy_service_with_name` did (init modules).
    let options = proxy.options.clone();
    let proxy = pingora::proxy::http_proxy(&server.configuration, proxy);
    let mut front = H1Front::new(proxy, &options, shared.stats.clone());
    front.edge = edge(settings, shared)?.map(Arc::new);
    let mut proxy_service = Service::new("kong proxy".to_string(), front);
    let mut listening = 0;
    // Every entry is a TCP listener to Pingora: the `ssl` and
    // `proxy_protocol` steps run in the front (`proxy::edge`); settings
    // refuse the flags not served (h2c, deferred, so_keepalive).
    for l in &settings.proxy_listen {
        proxy_service.add_listener(plain_listener(l));
        listening += 1;
    }
    if listening == 0 {
        log::warn!("no proxy listener configured");
    }
    let proxy_listening = proxy_service.listening_flag();
    server.add_service(proxy_service);

    if !settings.status_listen.is_empty() {
        let api = StatusApi {
            config: shared.config.clone(),
            stats: shared.stats.clone(),
            draining: shared.draining.clone(),
            metrics: shared.metrics.clone(),
            proxy_listening,
        };
        let mut status = Service::new("kong status".to_string(), api);
        // Scrapes and probes are a trickle: one thread, not one per proxy
        // worker (each idle thread costs a stack and an allocator heap).
        status.threads = Some(1);
        for l in &settings.status_listen {
            status.add_listener(plain_listener(l));
        }
        server.add_service(status);
    }
    Ok(Built { server, access_log })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        match Settings::load(None, env) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every proxied request's future is built on the stack and moved into
    /// its box: paths a common request does not take (connecting, HTTP/2
    /// and custom upstreams) are boxed in the vendored Pingora so that
    /// they do not size it (it was 15,040 bytes in a release build).
    #[tokio::test]
    async fn a_requests_future_stays_small() {
        use pingora::apps::HttpServerApp;
        let shared = Shared::default();
        let proxy = KongProxy {
            config: shared.config.clone(),
            options: Arc::new(proxy_options(&settings(&[]))),
            stats: shared.stats.clone(),
            access_log: None,
            plugins: shared.plugins.clone(),
            draining: shared.draining.clone(),
        };
        let app = Arc::new(pingora::proxy::http_proxy(
            &Arc::new(ServerConf::default()),
            proxy,
        ));
        let (_client, server) = tokio::io::duplex(64);
        let session = pingora::protocols::http::ServerSession::new_http1(Box::new(server));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let fut = app.process_new_http(session, &rx);
        let size = std::mem::size_of_val(&*fut);
        eprintln!("process_new_http future: {size} bytes");
        assert!(size <= 10 * 1024, "a request's future is {size} bytes");
    }

    #[test]
    fn upstream_idle_timeout_follows_kong() {
        let idle = |v: &str| {
            proxy_options(&settings(&[("KONG_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT", v)]))
                .upstream_idle_timeout
        };
        assert_eq!(idle("5"), Some(Duration::from_secs(5)));
        // Kong: 0 keeps an idle pooled connection indefinitely.
        assert_eq!(idle("0"), None);
        assert_eq!(
            proxy_options(&settings(&[])).upstream_idle_timeout,
            Some(Duration::from_secs(60))
        );
    }
}
