//! Every PromQL expression we ship, evaluated on a real Prometheus that
//! scrapes a real data plane under traffic: the prometheus-adapter rules
//! (`helm/examples/prometheus-adapter/rules.yaml`, templates expanded as
//! the adapter does), any `expr`/`query` in the Helm examples and values,
//! and every target of the Grafana dashboards in `helm/kong-dp/dashboards/`
//! (Grafana's variables made concrete). Each must return data. The
//! expressions are read from the files at test time, so a new panel or rule
//! is covered without touching this file.
//!
//! The data plane runs in hybrid mode against the in-tree test control
//! plane (so the `kong_control_plane_connected` / config hash families
//! exist), with a global `prometheus` plugin (Kong exports per-request
//! families only then) and, where the host has cgroup v1, inside child
//! groups with a 0.5 CPU quota and a 512 MiB memory limit (the limit
//! families are absent for an unlimited process).
//!
//! `dashboard_snapshot` (ignored; `scripts/dashboard-snapshot` runs it) is
//! the same set-up driven for about 90 s through phases, then writes each
//! panel's range-query results to `$GW_DASHBOARD_SNAPSHOT` for drawing.
#![allow(clippy::unwrap_used)]

use gw_tests::wait_until;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gw_tests::cp::{Certs, ControlPlane};
use gw_tests::gateway::Gateway;
use gw_tests::prometheus::{self as prom, CgroupJail, JailError, Prometheus};
use gw_tests::{skip, start_httpbin, try_request, under_ci, Proc, Skip};
use serde_json::{json, Value};

const MIN_YML: &str = "_format_version: '3.0'\n";
const WAIT: Duration = Duration::from_secs(20);
const CPU_QUOTA_CORES: f64 = 0.5;
const MEMORY_LIMIT: u64 = 512 << 20;

/// Families present only when the process has a cgroup limit.
const LIMIT_FAMILIES: [&str; 2] = [
    "kong_dp_cgroup_cpu_limit_cores",
    "kong_dp_cgroup_memory_limit_bytes",
];

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// The configuration the control plane pushes.

const TS: u64 = 1_700_000_000;

fn id(name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

fn route(name: &str, path: &str, service: Option<&str>) -> Value {
    json!({
        "id": id(&format!("route-{name}")), "name": name,
        "service": service.map(|s| id(&format!("service-{s}"))),
        "paths": [path], "protocols": ["http", "https"], "strip_path": true,
        "preserve_host": false, "regex_priority": 0, "path_handling": "v0",
        "https_redirect_status_code": 426, "request_buffering": true, "response_buffering": true,
        "hosts": null, "methods": null, "headers": null, "snis": null, "sources": null,
        "destinations": null, "tags": null, "created_at": TS, "updated_at": TS,
    })
}

fn service(name: &str, host: &str, port: u16) -> Value {
    json!({
        "id": id(&format!("service-{name}")), "name": name, "protocol": "http",
        "host": host, "port": port, "path": null, "retries": 5,
        "connect_timeout": 60000, "write_timeout": 60000, "read_timeout": 60000,
        "tags": null, "client_certificate": null, "tls_verify": null, "tls_verify_depth": null,
        "ca_certificates": null, "enabled": true, "created_at": TS, "updated_at": TS,
    })
}

/// Two services (one through an upstream with a target, for target health),
/// their routes, a route without a service (503 from the gateway) and a
/// global `prometheus` plugin with every family on. `version` adds routes,
/// so each version is a new config hash and a new apply.
fn config(up_port: u16, version: u32) -> Value {
    let mut routes = vec![
        route("catalog", "/catalog", Some("catalog")),
        route("orders", "/orders", Some("orders")),
        route("checkout", "/checkout", Some("orders")),
        route("nosvc", "/nosvc", None),
    ];
    for v in 1..version {
        routes.push(route(&format!("v{v}"), &format!("/v{v}"), Some("catalog")));
    }
    json!({
        "_format_version": "3.0",
        "_transform": false,
        "services": [service("catalog", "127.0.0.1", up_port), service("orders", "orders-up", 80)],
        "routes": routes,
        "upstreams": [{
            "id": id("upstream-orders"), "name": "orders-up", "algorithm": "round-robin",
            "slots": 10000, "created_at": TS, "updated_at": TS,
        }],
        "targets": [{
            "id": id("target-orders"), "upstream": id("upstream-orders"),
            "target": format!("127.0.0.1:{up_port}"), "weight": 100, "created_at": TS, "updated_at": TS,
        }],
        "plugins": [{
            "id": id("plugin-prometheus"), "name": "prometheus",
            "service": null, "route": null, "consumer": null, "enabled": true,
            "protocols": ["grpc", "grpcs", "http", "https"], "tags": null,
            "config": {
                "per_consumer": false, "status_code_metrics": true, "latency_metrics": true,
                "bandwidth_metrics": true, "upstream_health_metrics": true,
            },
            "created_at": TS, "updated_at": TS,
        }],
    })
}

// ---------------------------------------------------------------------------
// Traffic.

/// Requests of every kind the dashboard distinguishes: 2xx from two
/// services, 4xx and 5xx from the upstream, 503 from the gateway, slower
/// answers and larger bodies.
const MIX: [&str; 9] = [
    "/catalog/get",
    "/catalog/get",
    "/orders/get",
    "/checkout/anything",
    "/catalog/status/404",
    "/orders/status/500",
    "/nosvc",
    "/orders/delay/0.03",
    "/catalog/bytes/8192",
];

/// Client threads looping over [`MIX`] until stopped; `pause` between
/// requests (zero: as fast as the gateway answers).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, threads: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, sent) = (stop.clone(), sent.clone());
                thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let path = MIX[i % MIX.len()];
                        i += 1;
                        if try_request(port, "GET", path, &[], b"").is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        if !pause.is_zero() {
                            thread::sleep(pause);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            threads,
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The set-up.

/// Everything a run starts. Fields drop in order: Prometheus and the
/// gateway are gone before the cgroups they may sit in are removed.
struct Stack {
    prom: Prometheus,
    gw: Gateway,
    cp: ControlPlane,
    _up: Proc,
    up_port: u16,
    /// None: no cgroup v1 (or not writable outside CI); the limit families
    /// are then exempt.
    jail: Option<CgroupJail>,
    _certs: Certs,
}

/// Starts the stack, or says why the test cannot run (after skipping).
fn start_stack(test: &str) -> Option<Stack> {
    let Some(bin) = prom::binary() else {
        skip(
            test,
            Skip::Missing,
            "no prometheus binary (/usr/bin/prometheus; scripts/setup installs Debian's \
             `prometheus` package, or set GW_PROMETHEUS)",
        );
        return None;
    };
    let jail = match CgroupJail::new("promreal", CPU_QUOTA_CORES, MEMORY_LIMIT) {
        Ok(j) => Some(j),
        Err(JailError::Impossible(why)) => {
            eprintln!(
                "WARNING {test}: {why}: the gateway runs without a CPU quota and memory limit, \
                 so {LIMIT_FAMILIES:?} are absent and the expressions using them are exempt"
            );
            None
        }
        Err(JailError::Denied(why)) => {
            assert!(
                !under_ci(),
                "{test}: {why}. CI=true: the cgroup limit families must be checked (run as root)"
            );
            eprintln!(
                "WARNING {test}: {why}: without a CPU quota and memory limit {LIMIT_FAMILIES:?} \
                 are absent and the expressions using them are exempt (a failure under CI=true)"
            );
            None
        }
    };

    let (up, up_port) = start_httpbin("up");
    let certs = Certs::shared();
    let cp = ControlPlane::start(&certs);
    let hash = cp.set_config(&config(up_port, 1));
    let mut env = certs.dp_env(cp.port);
    env.push(("KONG_NGINX_WORKER_PROCESSES".into(), "auto".into()));
    env.push(("KONG_TEST_CLUSTER_RECONNECT_MS".into(), "300".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let wrapper: Vec<String> = jail.as_ref().map(CgroupJail::wrapper).unwrap_or_default();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let gw = Gateway::try_start_wrapped(MIN_YML, &env, &wrapper)
        .unwrap_or_else(|out| panic!("data plane did not start:\n{out}"));
    assert!(
        cp.wait_ping(&hash, WAIT),
        "the data plane never applied the config; pings {:?}\n{}",
        cp.seen().pings,
        gw.output()
    );
    assert!(
        wait_until(WAIT, || gw.status_get("/status/ready").status == 200),
        "{}",
        gw.output()
    );
    let prom = Prometheus::start(&bin, gw.status_port);
    assert!(
        prom.wait_for("up{job=\"kong-dp\"} == 1", WAIT),
        "prometheus never scraped the data plane; prometheus output:\n{}",
        prom.proc.output()
    );
    Some(Stack {
        prom,
        gw,
        cp,
        _up: up,
        up_port,
        jail,
        _certs: certs,
    })
}

impl Stack {
    /// Pushes config `version` and waits until the data plane runs it.
    fn push_config(&self, version: u32) {
        let hash = self.cp.set_config(&config(self.up_port, version));
        assert!(
            wait_until(WAIT, || self.gw.config_hash() == hash),
            "config {version} not applied\n{}",
            self.gw.output()
        );
    }

    /// Why `shipped` may return nothing here, if it may.
    fn exempt(&self, shipped: &prom::Shipped) -> Option<String> {
        if self.jail.is_some() {
            return None;
        }
        LIMIT_FAMILIES
            .iter()
            .find(|f| shipped.raw.contains(*f))
            .map(|f| format!("{f} needs a cgroup limit (none here)"))
    }
}

/// Metric names (kong_*, process_*) an expression reads.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Quoted label values are not names.
    let mut unquoted = String::new();
    let mut in_quote = false;
    for c in expr.chars() {
        if c == '"' {
            in_quote = !in_quote;
            unquoted.push(' ');
        } else if !in_quote {
            unquoted.push(c);
        }
    }
    for word in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("kong_") || word.starts_with("process_") {
            out.insert(word.to_string());
        }
    }
    out
}

/// Evaluates one expression: `Err` when Prometheus refuses it, returns
/// nothing, or only NaN.
fn check(p: &Prometheus, expr: &str) -> Result<usize, String> {
    let result = p.query(expr)?;
    if result.is_empty() {
        return Err("empty result".into());
    }
    let values = prom::sample_values(&result);
    if !values.is_empty() && values.iter().all(|v| v.is_nan()) {
        return Err(format!("only NaN: {}", Value::Array(result)));
    }
    Ok(result.len())
}

#[test]
fn shipped_promql_returns_data_on_a_real_prometheus() {
    const TEST: &str = "shipped_promql_returns_data_on_a_real_prometheus";
    let started = Instant::now();
    let Some(stack) = start_stack(TEST) else {
        return;
    };
    let p = &stack.prom;

    // Traffic for a while, a config change in the middle (a second apply),
    // and traffic still running while the expressions are evaluated.
    let load = Load::start(stack.gw.port, 2, Duration::from_millis(5));
    thread::sleep(Duration::from_secs(6));
    stack.push_config(2);
    thread::sleep(Duration::from_secs(6));

    let mut failures = Vec::new();
    let mut evaluated = 0;
    let mut exempted = 0;

    // (a) prometheus-adapter rules: the series query finds the series with
    // the namespace/pod labels, the metrics query returns data, and every
    // custom metric an HPA example asks for is one of the rules' outputs.
    let rules = prom::adapter_rules();
    assert!(
        !rules.is_empty(),
        "no rules in {}",
        prom::adapter_rules_file().display()
    );
    let mut served = BTreeSet::new();
    for r in &rules {
        let origin = format!("rules.yaml: {}", r.name_as);
        served.insert(r.name_as.clone());
        let series = prom::adapter_series_name(&r.matches);
        match p.series(&r.series_query) {
            Ok(s) if s.iter().any(|s| s["__name__"] == series.as_str()) => {}
            Ok(s) => failures.push(format!(
                "{origin}: seriesQuery {} finds no {series} ({} series)",
                r.series_query,
                s.len()
            )),
            Err(e) => failures.push(format!("{origin}: seriesQuery {}: {e}", r.series_query)),
        }
        let expr = prom::expand_adapter(&r.metrics_query, &series);
        evaluated += 1;
        if let Err(e) = check(p, &expr) {
            failures.push(format!("{origin}: {expr}: {e}"));
        }
    }
    for (file, name) in prom::hpa_pod_metric_names() {
        if !served.contains(&name) {
            failures.push(format!(
                "{file}: custom metric {name} is not served by any prometheus-adapter rule {served:?}"
            ));
        }
    }

    // (b) PromQL in the examples and the chart's values.
    for q in prom::example_queries() {
        evaluated += 1;
        if let Err(e) = check(p, &q.expr) {
            failures.push(format!("{}: {}: {e}", q.origin, q.expr));
        }
    }

    // (c) the dashboards: template variables, then every target.
    let stored: BTreeSet<String> = p.metric_names().unwrap().into_iter().collect();
    for (origin, selector, label) in prom::dashboard_variable_queries() {
        match p.series(&selector) {
            Ok(s) if s.iter().any(|s| s.get(&label).is_some()) => {}
            Ok(_) => failures.push(format!("{origin}: no series {selector} with label {label}")),
            Err(e) => failures.push(format!("{origin}: {selector}: {e}")),
        }
    }
    let dashboard = prom::dashboard_queries();
    assert!(!dashboard.is_empty(), "no dashboard targets found");
    for q in &dashboard {
        if let Some(why) = stack.exempt(q) {
            eprintln!("WARNING {TEST}: exempt: {}: {why}", q.origin);
            exempted += 1;
            continue;
        }
        for name in metric_names_in(&q.expr) {
            if !stored.contains(&name) {
                failures.push(format!("{}: metric {name} was never scraped", q.origin));
            }
        }
        evaluated += 1;
        if let Err(e) = check(p, &q.expr) {
            failures.push(format!("{}: {}\n    {e}", q.origin, q.expr));
        }
    }
    let sent = load.stop();
    eprintln!(
        "{TEST}: {evaluated} expressions evaluated ({} adapter rules, {} dashboard targets), \
         {exempted} exempt, {sent} requests sent, {:.1}s",
        rules.len(),
        dashboard.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} shipped expression(s) failed:\n{}\n--- gateway output (tail):\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&stack.gw.output(), 30)
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// Snapshot data for docs/dashboard.png.

/// The phases `scripts/dashboard-snapshot` shows: (label, seconds, client
/// threads, pause between requests, config version pushed at the start).
const PHASES: [(&str, u64, usize, u64, Option<u32>); 4] = [
    ("warm-up", 20, 1, 20, None),
    ("more traffic after a config change", 25, 2, 4, Some(2)),
    ("CPU-limited: clients as fast as possible", 25, 6, 0, None),
    ("cool-down after another config change", 20, 1, 20, Some(3)),
];

#[test]
#[ignore = "about 90 s; run by scripts/dashboard-snapshot"]
fn dashboard_snapshot() {
    const TEST: &str = "dashboard_snapshot";
    let Some(out) = std::env::var_os("GW_DASHBOARD_SNAPSHOT") else {
        eprintln!("SKIPPED {TEST}: set GW_DASHBOARD_SNAPSHOT to the output JSON path");
        return;
    };
    let Some(stack) = start_stack(TEST) else {
        return;
    };
    let start = now_unix();
    let mut marks = Vec::new();
    for (label, secs, threads, pause_ms, version) in PHASES {
        marks.push(json!({"t": now_unix(), "label": label}));
        eprintln!("{TEST}: {label} ({secs}s)");
        if let Some(v) = version {
            stack.push_config(v);
        }
        let load = Load::start(stack.gw.port, threads, Duration::from_millis(pause_ms));
        thread::sleep(Duration::from_secs(secs));
        load.stop();
    }
    // One more scrape after the last requests.
    thread::sleep(Duration::from_secs(2));
    let end = now_unix();
    let step = 1.0;
    let mut panels = Vec::new();
    for file in prom::dashboard_files() {
        for panel in prom::dashboard_panels(&file) {
            let targets: Vec<Value> = panel
                .targets
                .iter()
                .map(|(legend, q)| {
                    let result = stack
                        .prom
                        .query_range(&q.expr, start, end, step)
                        .unwrap_or_else(|e| panic!("{}: {e}", q.origin));
                    json!({"legend": legend, "expr": q.expr, "result": result})
                })
                .collect();
            panels.push(json!({
                "id": panel.id, "title": panel.title, "type": panel.kind, "unit": panel.unit,
                "targets": targets,
            }));
        }
    }
    let doc = json!({
        "start": start, "end": end, "step": step, "phases": marks,
        "cpu_quota_cores": stack.jail.as_ref().map(|_| CPU_QUOTA_CORES),
        "panels": panels,
    });
    std::fs::write(&out, serde_json::to_string(&doc).unwrap()).unwrap();
    eprintln!("{TEST}: wrote {}", std::path::Path::new(&out).display());
}
