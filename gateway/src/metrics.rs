//! Prometheus metrics for `GET /metrics` on the status listener, with the
//! names, help texts, labels and buckets of Kong's prometheus plugin
//! (`kong/plugins/prometheus/exporter.lua`), so Kong's dashboards and alert
//! rules work unchanged, plus our own scaling signals (`kong_dp_*`).
//!
//! Two registries, both owned here (never the crate's global default):
//! - per-request families (`kong_http_requests_total`, the latency
//!   histograms, `kong_bandwidth_bytes`, `kong_nginx_metric_errors_total`),
//!   fed by the `prometheus` plugin (`plugins/prometheus.rs`) and exported
//!   only while the config has an instance of it: Kong's exporter then
//!   drops its shared-dict keys from the scrape;
//! - node families (connections, node info, datastore, target health,
//!   process, cgroup, config apply), always exported; values read from
//!   [`Stats`], the [`Scrape`] the status API hands in, and cgroupfs.
//!
//! This module knows neither the proxy nor the snapshot: the plugin records
//! [`RequestSample`]s on [`RouteSeries`] it keeps per route, whose handles
//! resolve on first use, so recording is a few atomic adds with no lock and
//! no label hashing.
//!
//! Not exported: `kong_memory_workers_lua_vms_bytes` and
//! `kong_memory_lua_shared_dict_*` (there is no Lua VM or shared dict; RSS
//! under a Lua name would mislead alerts tuned for per-worker GC heaps:
//! `process_resident_memory_bytes` is the honest figure), `kong_nginx_timers`,
//! the AI and Wasm families (nothing feeds them).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use autoscale_hooks::{Cgroup, CgroupFs};
use config_sync::cluster::ClusterStatus;
use prometheus::{
    Counter, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::kong::KONG_VERSION;
use crate::stats::Stats;

/// Kong's `KONG_LATENCY_BUCKETS` (ms).
pub const KONG_LATENCY_BUCKETS: [f64; 17] = [
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
    3000.0, 6000.0,
];

/// Kong's `UPSTREAM_LATENCY_BUCKETS` (ms), also used for request latency.
pub const UPSTREAM_LATENCY_BUCKETS: [f64; 13] = [
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// `kong_dp_config_apply_seconds`: validate + compile + swap.
pub const CONFIG_APPLY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Kong's workspace label; DB-less and hybrid DPs only have `default`.
const WORKSPACE: &str = "default";
const SUBSYSTEM: &str = "http";
/// The one child of a label-less vec (exported only once set).
const NO_LABELS: [&str; 0] = [];

/// Status codes whose counters each route resolves once; others go through
/// a label lookup per request.
const COMMON_CODES: [u16; 20] = [
    200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503,
    504,
];

const LATENCY_KONG: usize = 0;
const LATENCY_UPSTREAM: usize = 1;
const LATENCY_REQUEST: usize = 2;

fn code_slot(code: u16) -> Option<usize> {
    COMMON_CODES.iter().position(|&c| c == code)
}

/// What the log phase knows about one request, in Kong's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSample {
    /// Status sent downstream (`ngx.status`).
    pub status: u16,
    /// `kong.response.get_source() == "service"`: the upstream answered.
    pub from_service: bool,
    /// `latencies.kong`: proxy latency, or Kong's own response latency.
    pub kong_ms: u64,
    /// `latencies.proxy` (`KONG_WAITING_TIME`); `None` when not proxied.
    pub upstream_ms: Option<u64>,
    /// `latencies.request` (`$request_time`).
    pub request_ms: u64,
    /// `$request_length`: request head + body.
    pub ingress_bytes: u64,
    /// `$bytes_sent`: response head + body.
    pub egress_bytes: u64,
}

/// Which per-request families an instance of the `prometheus` plugin feeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordFlags {
    /// `kong_http_requests_total`.
    pub status_code: bool,
    /// The three latency histograms.
    pub latency: bool,
    /// `kong_bandwidth_bytes`.
    pub bandwidth: bool,
}

/// The series of one route (or of requests without a route), with their
/// handles resolved on first use: recording is then a few atomic adds with
/// no lock and no label hashing.
pub struct RouteSeries {
    /// Kong's `service.name or service.host` ("" without a service).
    service: String,
    /// Kong's `route.name or route.id` ("" without a route).
    route: String,
    /// kong, upstream, request latency histograms (each resolved on its
    /// first observation: Kong has no series before one).
    latency: [OnceLock<Histogram>; 3],
    /// ingress, egress.
    bandwidth: OnceLock<[IntCounter; 2]>,
    /// `COMMON_CODES` for source "service", then for source "kong".
    codes: [OnceLock<IntCounter>; 2 * COMMON_CODES.len()],
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries")
            .field("service", &self.service)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl RouteSeries {
    pub fn new(service: String, route: String) -> RouteSeries {
        RouteSeries {
            service,
            route,
            latency: std::array::from_fn(|_| OnceLock::new()),
            bandwidth: OnceLock::new(),
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// What a scrape needs from the live config.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Some `prometheus` instance is configured (Kong's
    /// `IS_PROMETHEUS_ENABLED`): the per-request families are exported.
    pub per_request: bool,
    /// `kong_upstream_target_health` (some instance asked for it):
    /// (upstream, target, state).
    pub target_health: Option<Vec<(String, String, &'static str)>>,
}

/// Why the metric set could not be built (a programming error: every
/// definition is constant).
#[derive(Debug, thiserror::Error)]
#[error("metric definition: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Scrape-side state: this process's cgroup, detected on the first scrape.
#[derive(Debug, Default)]
struct CgroupSeen {
    detected: Option<Option<Cgroup>>,
}

/// The process-wide metrics handle (in [`crate::server::Shared`]).
pub struct Metrics {
    requests: Registry,
    node: Registry,

    http_requests: IntCounterVec,
    kong_latency: HistogramVec,
    upstream_latency: HistogramVec,
    request_latency: HistogramVec,
    bandwidth: IntCounterVec,
    metric_errors: IntCounter,

    connections: IntGaugeVec,
    nginx_requests: IntGaugeVec,
    node_info: IntGaugeVec,
    datastore_reachable: IntGauge,
    target_health: IntGaugeVec,

    in_flight: IntGauge,
    worker_threads: IntGauge,
    cg_cpu_limit: GaugeVec,
    cg_cpu_throttled: Counter,
    cg_cpu_usage: Counter,
    cg_mem_limit: GaugeVec,
    cg_mem_usage: GaugeVec,
    config_apply: Histogram,

    node_id: OnceLock<String>,
    cluster: OnceLock<Arc<ClusterStatus>>,
    /// Scrapes set gauges then gather: one at a time.
    scrape: Mutex<CgroupSeen>,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let m = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let m = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

/// A float gauge exported only once set (no labels: an unset child is absent).
fn opt_gauge(r: &Registry, name: &str, help: &str) -> Result<GaugeVec, MetricsError> {
    let m = GaugeVec::new(Opts::new(name, help), &[])?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let m = HistogramVec::new(opts, &["service", "route", "workspace"])?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let requests = Registry::new();
        let node = Registry::new();
        let http_requests = counter_vec(
            &requests,
            "kong_http_requests_total",
            "HTTP status codes per consumer/service/route in Kong",
            &[
                "service",
                "route",
                "code",
                "source",
                "workspace",
                "consumer",
            ],
        )?;
        let kong_latency = histogram_vec(
            &requests,
            "kong_kong_latency_ms",
            "Latency added by Kong and enabled plugins for each service/route in Kong",
            &KONG_LATENCY_BUCKETS,
        )?;
        let upstream_latency = histogram_vec(
            &requests,
            "kong_upstream_latency_ms",
            "Latency added by upstream response for each service/route in Kong",
            &UPSTREAM_LATENCY_BUCKETS,
        )?;
        let request_latency = histogram_vec(
            &requests,
            "kong_request_latency_ms",
            "Total latency incurred during requests for each service/route in Kong",
            &UPSTREAM_LATENCY_BUCKETS,
        )?;
        let bandwidth = counter_vec(
            &requests,
            "kong_bandwidth_bytes",
            "Total bandwidth (ingress/egress) throughput in bytes",
            &["service", "route", "direction", "workspace", "consumer"],
        )?;
        let metric_errors = IntCounter::new(
            "kong_nginx_metric_errors_total",
            "Number of nginx-lua-prometheus errors",
        )?;
        requests.register(Box::new(metric_errors.clone()))?;

        let connections = gauge_vec(
            &node,
            "kong_nginx_connections_total",
            "Number of connections by subsystem",
            &["node_id", "subsystem", "state"],
        )?;
        let nginx_requests = gauge_vec(
            &node,
            "kong_nginx_requests_total",
            "Number of requests total",
            &["node_id", "subsystem"],
        )?;
        let node_info = gauge_vec(
            &node,
            "kong_node_info",
            "Kong Node metadata information",
            &["node_id", "version"],
        )?;
        let datastore_reachable = IntGauge::new(
            "kong_datastore_reachable",
            "Datastore reachable from Kong, 0 is unreachable",
        )?;
        node.register(Box::new(datastore_reachable.clone()))?;
        let target_health = gauge_vec(
            &node,
            "kong_upstream_target_health",
            "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
            &["upstream", "target", "address", "state", "subsystem"],
        )?;

        let in_flight = IntGauge::new(
            "kong_dp_requests_in_flight",
            "Requests being processed by this data plane right now",
        )?;
        node.register(Box::new(in_flight.clone()))?;
        let worker_threads = IntGauge::new(
            "kong_dp_worker_threads",
            "Proxy worker threads (nginx_worker_processes, sized to the cgroup CPU quota when auto)",
        )?;
        node.register(Box::new(worker_threads.clone()))?;
        let cg_cpu_limit = opt_gauge(
            &node,
            "kong_dp_cgroup_cpu_limit_cores",
            "CPU limit of the container's cgroup in cores (absent when unlimited)",
        )?;
        let cg_cpu_throttled = Counter::new(
            "kong_dp_cgroup_cpu_throttled_seconds_total",
            "Time the container's cgroup was throttled by its CPU quota",
        )?;
        node.register(Box::new(cg_cpu_throttled.clone()))?;
        let cg_cpu_usage = Counter::new(
            "kong_dp_cgroup_cpu_usage_seconds_total",
            "CPU time consumed by the container's cgroup",
        )?;
        node.register(Box::new(cg_cpu_usage.clone()))?;
        let cg_mem_limit = opt_gauge(
            &node,
            "kong_dp_cgroup_memory_limit_bytes",
            "Memory limit of the container's cgroup (absent when unlimited)",
        )?;
        let cg_mem_usage = opt_gauge(
            &node,
            "kong_dp_cgroup_memory_usage_bytes",
            "Memory usage of the container's cgroup",
        )?;
        let config_apply = Histogram::with_opts(
            HistogramOpts::new(
                "kong_dp_config_apply_seconds",
                "Time to validate, compile and swap in a new configuration",
            )
            .buckets(CONFIG_APPLY_BUCKETS.to_vec()),
        )?;
        node.register(Box::new(config_apply.clone()))?;

        #[cfg(target_os = "linux")]
        node.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            requests,
            node,
            http_requests,
            kong_latency,
            upstream_latency,
            request_latency,
            bandwidth,
            metric_errors,
            connections,
            nginx_requests,
            node_info,
            datastore_reachable,
            target_health,
            in_flight,
            worker_threads,
            cg_cpu_limit,
            cg_cpu_throttled,
            cg_cpu_usage,
            cg_mem_limit,
            cg_mem_usage,
            config_apply,
            node_id: OnceLock::new(),
            cluster: OnceLock::new(),
            scrape: Mutex::new(CgroupSeen::default()),
        })
    }

    /// The node id labels carry (`<prefix>/kong.id`); set once at start.
    pub fn set_node_id(&self, id: String) {
        let _ = self.node_id.set(id);
    }

    /// Kong's node id (set at start; a random one until then).
    pub fn node_id(&self) -> &str {
        self.node_id
            .get_or_init(|| uuid::Uuid::new_v4().to_string())
            .as_str()
    }

    /// Hybrid mode: the control-plane link's status families join `/metrics`.
    pub fn set_cluster(&self, status: Arc<ClusterStatus>) {
        let _ = self.cluster.set(status);
    }

    pub fn set_worker_threads(&self, n: usize) {
        self.worker_threads
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A config was validated, compiled and swapped in, taking `took`.
    pub fn observe_config_apply(&self, took: Duration) {
        self.config_apply.observe(took.as_secs_f64());
    }

    /// Records one request on a route's series. `consumer` is the label
    /// value ("" unless the instance has `per_consumer`).
    pub fn record_sample(
        &self,
        rm: &RouteSeries,
        flags: RecordFlags,
        consumer: &str,
        s: &RequestSample,
    ) {
        if flags.bandwidth && (s.ingress_bytes > 0 || s.egress_bytes > 0) {
            if consumer.is_empty() {
                if let Some([ingress, egress]) = self.bandwidth_handles(rm) {
                    if s.ingress_bytes > 0 {
                        ingress.inc_by(s.ingress_bytes);
                    }
                    if s.egress_bytes > 0 {
                        egress.inc_by(s.egress_bytes);
                    }
                }
            } else {
                for (dir, n) in [("ingress", s.ingress_bytes), ("egress", s.egress_bytes)] {
                    if n == 0 {
                        continue;
                    }
                    match self.bandwidth.get_metric_with_label_values(&[
                        &rm.service,
                        &rm.route,
                        dir,
                        WORKSPACE,
                        consumer,
                    ]) {
                        Ok(c) => c.inc_by(n),
                        Err(_) => self.metric_errors.inc(),
                    }
                }
            }
        }
        if flags.status_code {
            self.count_status(rm, s.status, s.from_service, consumer);
        }
        if flags.latency {
            self.observe(rm, LATENCY_REQUEST, s.request_ms);
            if let Some(u) = s.upstream_ms {
                self.observe(rm, LATENCY_UPSTREAM, u);
            }
            self.observe(rm, LATENCY_KONG, s.kong_ms);
        }
    }

    fn bandwidth_handles<'a>(&self, rm: &'a RouteSeries) -> Option<&'a [IntCounter; 2]> {
        if let Some(h) = rm.bandwidth.get() {
            return Some(h);
        }
        let get = |dir: &str| {
            self.bandwidth.get_metric_with_label_values(&[
                &rm.service,
                &rm.route,
                dir,
                WORKSPACE,
                "",
            ])
        };
        match (get("ingress"), get("egress")) {
            (Ok(i), Ok(e)) => Some(rm.bandwidth.get_or_init(|| [i, e])),
            _ => {
                self.metric_errors.inc();
                None
            }
        }
    }

    fn observe(&self, rm: &RouteSeries, which: usize, v: u64) {
        let Some(slot) = rm.latency.get(which) else {
            return;
        };
        if let Some(h) = slot.get() {
            h.observe(v as f64);
            return;
        }
        let vec = match which {
            LATENCY_KONG => &self.kong_latency,
            LATENCY_UPSTREAM => &self.upstream_latency,
            _ => &self.request_latency,
        };
        match vec.get_metric_with_label_values(&[&rm.service, &rm.route, WORKSPACE]) {
            Ok(h) => slot.get_or_init(|| h).observe(v as f64),
            Err(_) => self.metric_errors.inc(),
        }
    }

    fn count_status(&self, rm: &RouteSeries, status: u16, from_service: bool, consumer: &str) {
        let source = if from_service { "service" } else { "kong" };
        let resolve = || {
            let code = status.to_string();
            self.http_requests.get_metric_with_label_values(&[
                &rm.service,
                &rm.route,
                &code,
                source,
                WORKSPACE,
                consumer,
            ])
        };
        // Per-consumer series are looked up each time (not cached per route).
        let slot = code_slot(status).filter(|_| consumer.is_empty());
        let Some(i) = slot else {
            match resolve() {
                Ok(c) => c.inc(),
                Err(_) => self.metric_errors.inc(),
            }
            return;
        };
        let slot = &rm.codes[i + if from_service { 0 } else { COMMON_CODES.len() }];
        if let Some(c) = slot.get() {
            c.inc();
            return;
        }
        match resolve() {
            Ok(c) => slot.get_or_init(|| c).inc(),
            Err(_) => self.metric_errors.inc(),
        }
    }

    /// Sets the scrape-time families from live state.
    fn refresh(&self, scrape: &Scrape, stats: &Stats, seen: &mut CgroupSeen) {
        use std::sync::atomic::Ordering::Relaxed;
        let node_id = self.node_id().to_string();
        let c = stats.connections();
        let total = c.requests;
        let in_flight = stats.in_flight.load(Relaxed);
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // The figures of `/status` (nginx stub_status).
        for (state, v) in [
            ("accepted", c.accepted),
            ("handled", c.handled),
            ("total", total),
            ("active", c.active),
            ("reading", c.reading),
            ("writing", c.writing),
            ("waiting", c.waiting),
        ] {
            self.connections
                .with_label_values(&[&node_id, SUBSYSTEM, state])
                .set(as_i64(v));
        }
        self.nginx_requests
            .with_label_values(&[&node_id, SUBSYSTEM])
            .set(as_i64(total));
        self.node_info
            .with_label_values(&[&node_id, KONG_VERSION])
            .set(1);
        self.in_flight.set(as_i64(in_flight));
        // DB-less: Kong's "off" connector always connects.
        self.datastore_reachable.set(1);

        // Kong resets the family each scrape so removed targets vanish.
        self.target_health.reset();
        if let Some(health) = &scrape.target_health {
            for (upstream, target, state) in health {
                let state = *state;
                // Kong labels each resolved address; the balancer exposes
                // none yet, so an IP target is its own address and a name
                // gets "" (TODO: per-address series once the balancer
                // exposes resolved addresses).
                let address =
                    if state == "dns_error" || target.parse::<std::net::SocketAddr>().is_err() {
                        ""
                    } else {
                        target.as_str()
                    };
                for s in ["healthchecks_off", "healthy", "unhealthy", "dns_error"] {
                    self.target_health
                        .with_label_values(&[upstream, target, address, s, SUBSYSTEM])
                        .set(i64::from(s == state));
                }
            }
        }

        let cgroup = seen
            .detected
            .get_or_insert_with(|| CgroupFs::system().detect().ok());
        if let Some(cg) = cgroup {
            if let Some(cores) = cg.cpu_limit_cores() {
                self.cg_cpu_limit.with_label_values(&NO_LABELS).set(cores);
            }
            if let Some(limit) = cg.memory_limit_bytes {
                self.cg_mem_limit
                    .with_label_values(&NO_LABELS)
                    .set(limit as f64);
            }
            let st = cg.read_stats();
            if let Some(v) = st.throttled_seconds {
                follow(&self.cg_cpu_throttled, v);
            }
            if let Some(v) = st.cpu_usage_seconds {
                follow(&self.cg_cpu_usage, v);
            }
            if let Some(v) = st.memory_usage_bytes {
                self.cg_mem_usage
                    .with_label_values(&NO_LABELS)
                    .set(v as f64);
            }
        }
    }

    /// The `/metrics` body for the live snapshot.
    pub fn render(&self, scrape: &Scrape, stats: &Stats) -> String {
        let mut seen = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(scrape, stats, &mut seen);
        let mut families = self.node.gather();
        if scrape.per_request {
            families.extend(self.requests.gather());
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
        drop(seen);
        for mf in &mut families {
            let Some(order) = kong_label_order(mf.name()) else {
                continue;
            };
            let rank = |n: &str| order.iter().position(|o| *o == n).unwrap_or(order.len());
            for m in mf.mut_metric() {
                m.mut_label().sort_by_key(|l| rank(l.name()));
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            log::error!("encoding /metrics: {e}");
        }
        if let Some(c) = self.cluster.get() {
            out.push_str(&c.prometheus());
        }
        out
    }
}

/// Kong's label order where it is not alphabetical: the crate sorts labels
/// by name, while Kong's specs and hand-written scrapers match Kong's text.
fn kong_label_order(family: &str) -> Option<&'static [&'static str]> {
    Some(match family {
        "kong_http_requests_total" => &[
            "service",
            "route",
            "code",
            "source",
            "workspace",
            "consumer",
        ],
        "kong_kong_latency_ms" | "kong_upstream_latency_ms" | "kong_request_latency_ms" => {
            &["service", "route", "workspace"]
        }
        "kong_bandwidth_bytes" => &["service", "route", "direction", "workspace", "consumer"],
        "kong_nginx_connections_total" => &["node_id", "subsystem", "state"],
        "kong_upstream_target_health" => &["upstream", "target", "address", "state", "subsystem"],
        _ => return None,
    })
}

/// Moves a counter up to a cumulative value read elsewhere (never down:
/// a reset cgroup counter just pauses the exported one).
fn follow(c: &Counter, value: f64) {
    let delta = value - c.get();
    if delta > 0.0 {
        c.inc_by(delta);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        // Every definition above is a constant, checked by the unit tests;
        // failing here is a programming error.
        #[allow(clippy::expect_used)]
        Metrics::new().expect("constant metric definitions")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(status: u16, from_service: bool) -> RequestSample {
        RequestSample {
            status,
            from_service,
            kong_ms: 3,
            upstream_ms: from_service.then_some(30),
            request_ms: 40,
            ingress_bytes: 100,
            egress_bytes: 250,
        }
    }

    const ALL_FLAGS: RecordFlags = RecordFlags {
        status_code: true,
        latency: true,
        bandwidth: true,
    };

    fn on() -> Scrape {
        Scrape {
            per_request: true,
            target_health: None,
        }
    }

    #[test]
    fn metrics_records_with_kong_names_labels_and_buckets() {
        let m = Metrics::new().unwrap();
        let stats = Stats::default();
        m.set_node_id("11111111-2222-4333-8444-555555555555".into());
        let r = RouteSeries::new("s".into(), "r".into());
        let x = RouteSeries::new(
            "example.test".into(),
            "6a4b8c39-4bd7-4d8b-9a0a-000000000001".into(),
        );
        for _ in 0..3 {
            m.record_sample(&r, ALL_FLAGS, "", &sample(200, true));
        }
        m.record_sample(&r, ALL_FLAGS, "", &sample(503, false));
        m.record_sample(&x, ALL_FLAGS, "", &sample(418, true));
        m.record_sample(&r, ALL_FLAGS, "alice", &sample(200, true));
        let text = m.render(&on(), &stats);
        for line in [
            r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer=""} 3"#,
            r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer="alice"} 1"#,
            r#"kong_http_requests_total{service="s",route="r",code="503",source="kong",workspace="default",consumer=""} 1"#,
            r#"kong_http_requests_total{service="example.test",route="6a4b8c39-4bd7-4d8b-9a0a-000000000001",code="418",source="service",workspace="default",consumer=""} 1"#,
            r#"kong_kong_latency_ms_bucket{service="s",route="r",workspace="default",le="5"} 5"#,
            r#"kong_kong_latency_ms_bucket{service="s",route="r",workspace="default",le="6000"} 5"#,
            r#"kong_upstream_latency_ms_count{service="s",route="r",workspace="default"} 4"#,
            r#"kong_request_latency_ms_bucket{service="s",route="r",workspace="default",le="25"} 0"#,
            r#"kong_request_latency_ms_bucket{service="s",route="r",workspace="default",le="50"} 5"#,
            r#"kong_bandwidth_bytes{service="s",route="r",direction="egress",workspace="default",consumer=""} 1000"#,
            r#"kong_bandwidth_bytes{service="s",route="r",direction="ingress",workspace="default",consumer=""} 400"#,
            r#"kong_bandwidth_bytes{service="s",route="r",direction="ingress",workspace="default",consumer="alice"} 100"#,
            "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong",
            "# TYPE kong_kong_latency_ms histogram",
            "kong_nginx_metric_errors_total 0",
            "kong_datastore_reachable 1",
            r#"kong_node_info{node_id="11111111-2222-4333-8444-555555555555",version="3.10.0"} 1"#,
            r#"kong_nginx_connections_total{node_id="11111111-2222-4333-8444-555555555555",subsystem="http",state="total"} 0"#,
            "kong_dp_requests_in_flight 0",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains("kong_upstream_target_health"),
            "off by default"
        );
    }

    #[test]
    fn metrics_families_follow_the_flags_and_the_scrape() {
        let m = Metrics::new().unwrap();
        let stats = Stats::default();
        let r = RouteSeries::new("s".into(), "r".into());
        let only_status = RecordFlags {
            status_code: true,
            ..RecordFlags::default()
        };
        m.record_sample(&r, only_status, "", &sample(200, true));
        let scrape = Scrape {
            per_request: true,
            target_health: Some(vec![("up".into(), "127.0.0.1:1".into(), "healthy")]),
        };
        let text = m.render(&scrape, &stats);
        assert!(text.contains("kong_http_requests_total{"), "{text}");
        assert!(!text.contains("kong_kong_latency_ms"), "{text}");
        assert!(!text.contains("kong_bandwidth_bytes"), "{text}");
        assert!(
            text.contains(r#"kong_upstream_target_health{upstream="up",target="127.0.0.1:1",address="127.0.0.1:1",state="healthy",subsystem="http"} 1"#),
            "{text}"
        );
        // Without the plugin the recorded families drop out of the scrape.
        let text = m.render(&Scrape::default(), &stats);
        assert!(!text.contains("kong_http_requests_total"), "{text}");
        assert!(!text.contains("kong_nginx_metric_errors_total"), "{text}");
        assert!(text.contains("kong_node_info{"), "{text}");
    }

    #[test]
    fn metrics_config_apply_and_process_families() {
        let m = Metrics::new().unwrap();
        m.set_worker_threads(3);
        m.observe_config_apply(Duration::from_millis(7));
        let text = m.render(&Scrape::default(), &Stats::default());
        assert!(text.contains("kong_dp_worker_threads 3"), "{text}");
        assert!(
            text.contains("kong_dp_config_apply_seconds_bucket{le=\"0.01\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kong_dp_config_apply_seconds_count 1"),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
    }
}
