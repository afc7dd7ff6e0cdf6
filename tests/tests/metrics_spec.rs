//! `GET /metrics` on the status listener against Kong's prometheus plugin
//! (`kong/plugins/prometheus/exporter.lua`, `spec/03-plugins/26-prometheus`):
//! exact names, label order, buckets and `source`; which families the
//! plugin and its flags switch; node, process and `kong_dp_*` families.
//!
//! Kong's exporter records nothing for a request that matched no route
//! (`log()` returns without `message.route`), so a router 404 is not
//! counted; a Kong-generated answer on a matched route is, with
//! `source="kong"`.
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill, Gateway, Recorder};
use gw_tests::{get, Response};

const ALL_FLAGS: &str = "{status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, upstream_health_metrics: true}";

fn config(plugins: &str, upstream_port: u16) -> String {
    let yml = format!(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://{{UPSTREAM}}
  routes:
  - name: r
    paths: ["/r"]
  - name: r2
    paths: ["/r2"]
routes:
- name: nosvc
  paths: ["/nosvc"]
upstreams:
- name: up
  targets:
  - target: "{{UPSTREAM}}"
{plugins}"#
    );
    fill(&yml, upstream_port)
}

fn global(flags: &str) -> String {
    format!("plugins:\n- name: prometheus\n  config: {flags}\n")
}

fn scrape(g: &Gateway) -> (Response, String) {
    let r = g.status_get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let body = r.body_str();
    (r, body)
}

/// Scrapes until `ready` holds (≤ 5 s): the log phase, where requests are
/// recorded, runs after the client already has its response.
fn scrape_until(g: &Gateway, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, body) = scrape(g);
        if ready(&body) || std::time::Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn has_family(body: &str, name: &str) -> bool {
    body.lines().any(|l| {
        l.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with('{') || rest.starts_with(' ') || rest.starts_with('_')
        })
    })
}

/// `le` values of one histogram series, in order.
fn buckets(body: &str, family: &str, labels: &str) -> Vec<String> {
    let prefix = format!("{family}_bucket{{{labels},le=\"");
    body.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

fn hit(g: &Gateway, path: &str, status: u16) {
    let r = get(g.port, path, &[]);
    assert_eq!(r.status, status, "{path}: {}", r.body_str());
}

const PER_REQUEST: [&str; 5] = [
    "kong_http_requests_total",
    "kong_kong_latency_ms",
    "kong_upstream_latency_ms",
    "kong_request_latency_ms",
    "kong_bandwidth_bytes",
];

#[test]
fn global_plugin_counts_requests_as_kong_does() {
    let up = Recorder::start();
    let g = Gateway::start(&config(&global(ALL_FLAGS), up.port));
    for _ in 0..3 {
        hit(&g, "/r", 200);
    }
    hit(&g, "/nope", 404);
    hit(&g, "/nosvc", 503);
    let r200 = r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer=""}"#;
    scrape_until(&g, |b| {
        value(b, r200) == Some(3.0) && b.contains(r#"route="nosvc",code="503""#)
    });
    let (resp, body) = scrape(&g);

    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        resp.headers
    );
    assert_eq!(
        value(
            &body,
            r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer=""}"#
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            r#"kong_http_requests_total{service="",route="nosvc",code="503",source="kong",workspace="default",consumer=""}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert!(
        !body.contains(r#"code="404""#),
        "no route, no record (Kong's exporter returns early)\n{body}"
    );
    assert!(body.contains(
        "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong"
    ));
    assert!(body.contains("# TYPE kong_kong_latency_ms histogram"));

    let kong: Vec<String> = [
        "1", "2", "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750", "1000",
        "3000", "6000", "+Inf",
    ]
    .map(String::from)
    .to_vec();
    let upstream: Vec<String> = [
        "25", "50", "80", "100", "250", "400", "700", "1000", "2000", "5000", "10000", "30000",
        "60000", "+Inf",
    ]
    .map(String::from)
    .to_vec();
    let labels = r#"service="s",route="r",workspace="default""#;
    assert_eq!(
        buckets(&body, "kong_kong_latency_ms", labels),
        kong,
        "{body}"
    );
    assert_eq!(buckets(&body, "kong_upstream_latency_ms", labels), upstream);
    assert_eq!(buckets(&body, "kong_request_latency_ms", labels), upstream);
    assert_eq!(
        value(&body, &format!("kong_request_latency_ms_count{{{labels}}}")),
        Some(3.0)
    );
    assert_eq!(
        value(
            &body,
            &format!("kong_upstream_latency_ms_count{{{labels}}}")
        ),
        Some(3.0)
    );
    // Not proxied: kong latency only, no upstream latency.
    let nosvc = r#"service="",route="nosvc",workspace="default""#;
    assert_eq!(
        value(&body, &format!("kong_kong_latency_ms_count{{{nosvc}}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&body, &format!("kong_upstream_latency_ms_count{{{nosvc}}}")),
        None
    );

    let ingress = r#"kong_bandwidth_bytes{service="s",route="r",direction="ingress",workspace="default",consumer=""}"#;
    let egress = r#"kong_bandwidth_bytes{service="s",route="r",direction="egress",workspace="default",consumer=""}"#;
    let (i1, e1) = (
        value(&body, ingress).unwrap(),
        value(&body, egress).unwrap(),
    );
    // At least the request lines and the upstream's JSON bodies.
    assert!(
        i1 >= 3.0 * 16.0 && e1 >= 3.0 * 100.0,
        "ingress {i1} egress {e1}"
    );
    let r = gw_tests::request(g.port, "POST", "/r", &[], &[b'x'; 1000]);
    assert_eq!(r.status, 200);
    let body2 = scrape_until(&g, |b| value(b, r200) == Some(4.0));
    let (i2, e2) = (
        value(&body2, ingress).unwrap(),
        value(&body2, egress).unwrap(),
    );
    assert!(i2 >= i1 + 1000.0, "ingress {i1} -> {i2}");
    assert!(e2 >= e1 + r.body.len() as f64, "egress {e1} -> {e2}");

    assert_eq!(value(&body, "kong_nginx_metric_errors_total"), Some(0.0));
    assert_eq!(
        value(
            &body,
            &format!(
                r#"kong_upstream_target_health{{upstream="up",target="127.0.0.1:{0}",address="127.0.0.1:{0}",state="healthchecks_off",subsystem="http"}}"#,
                up.port
            )
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            &format!(
                r#"kong_upstream_target_health{{upstream="up",target="127.0.0.1:{0}",address="127.0.0.1:{0}",state="healthy",subsystem="http"}}"#,
                up.port
            )
        ),
        Some(0.0)
    );
}

#[test]
fn node_process_and_dp_families_without_the_plugin() {
    let up = Recorder::start();
    let g = Gateway::start(&config("", up.port));
    hit(&g, "/r", 200);
    // The request leaves "in flight" in its log phase, after the response.
    let body = scrape_until(&g, |b| value(b, "kong_dp_requests_in_flight") == Some(0.0));
    for f in PER_REQUEST {
        assert!(!has_family(&body, f), "{f} without the plugin\n{body}");
    }
    assert!(!has_family(&body, "kong_nginx_metric_errors_total"));

    let node_id = std::fs::read_to_string(g.prefix.join("kong.id")).unwrap();
    assert_eq!(node_id.len(), 36, "a uuid: {node_id:?}");
    for state in [
        "accepted", "active", "handled", "reading", "total", "waiting", "writing",
    ] {
        let s = format!(
            r#"kong_nginx_connections_total{{node_id="{node_id}",subsystem="http",state="{state}"}}"#
        );
        assert!(value(&body, &s).is_some(), "{s}\n{body}");
    }
    let total = format!(r#"kong_nginx_requests_total{{node_id="{node_id}",subsystem="http"}}"#);
    assert!(value(&body, &total).is_some_and(|v| v >= 1.0), "{body}");
    assert_eq!(
        value(
            &body,
            &format!(r#"kong_node_info{{node_id="{node_id}",version="3.10.0"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(value(&body, "kong_datastore_reachable"), Some(1.0));
    assert!(
        !has_family(&body, "kong_control_plane_connected"),
        "DB-less"
    );
    assert!(
        !has_family(&body, "kong_upstream_target_health"),
        "flag off"
    );

    assert_eq!(value(&body, "kong_dp_worker_threads"), Some(1.0));
    // Scrapes are not proxy requests.
    assert_eq!(value(&body, "kong_dp_requests_in_flight"), Some(0.0));
    for f in [
        "kong_dp_cgroup_cpu_usage_seconds_total",
        "kong_dp_cgroup_cpu_throttled_seconds_total",
        "kong_dp_config_apply_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
    ] {
        assert!(has_family(&body, f), "{f}\n{body}");
    }
    assert!(value(&body, "process_resident_memory_bytes").is_some_and(|v| v > 1e6));
}

#[test]
fn flags_switch_families_and_reload_removes_them() {
    let up = Recorder::start();
    let g = Gateway::start(&config(&global("{}"), up.port));
    hit(&g, "/r", 200);
    let (_, body) = scrape(&g);
    for f in PER_REQUEST {
        assert!(!has_family(&body, f), "{f} with every flag off\n{body}");
    }
    // The plugin is configured: its own error counter is exported.
    assert_eq!(value(&body, "kong_nginx_metric_errors_total"), Some(0.0));

    assert!(g.reload_and_wait(&config(&global("{status_code_metrics: true}"), up.port)));
    hit(&g, "/r", 200);
    let body = scrape_until(&g, |b| has_family(b, "kong_http_requests_total"));
    assert_eq!(
        value(
            &body,
            r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer=""}"#
        ),
        Some(1.0),
        "{body}"
    );
    for f in &PER_REQUEST[1..] {
        assert!(!has_family(&body, f), "{f}\n{body}");
    }
    assert!(value(&body, "kong_dp_config_apply_seconds_count").is_some_and(|v| v >= 1.0));

    // Removing the plugin drops the recorded families from the scrape.
    assert!(g.reload_and_wait(&config("", up.port)));
    let (_, body) = scrape(&g);
    assert!(!has_family(&body, "kong_http_requests_total"), "{body}");
    assert!(value(&body, "kong_dp_config_apply_seconds_count").is_some_and(|v| v >= 2.0));
}

#[test]
fn route_scoped_instance_applies_to_its_route_only() {
    let up = Recorder::start();
    let plugins = format!("plugins:\n- name: prometheus\n  route: r\n  config: {ALL_FLAGS}\n");
    let g = Gateway::start(&config(&plugins, up.port));
    hit(&g, "/r", 200);
    hit(&g, "/r2", 200);
    // The one worker thread logs r2 before it serves r's second request.
    hit(&g, "/r", 200);
    let r200 = r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer=""}"#;
    let body = scrape_until(&g, |b| value(b, r200) == Some(2.0));
    assert_eq!(
        value(
            &body,
            r#"kong_http_requests_total{service="s",route="r",code="200",source="service",workspace="default",consumer=""}"#
        ),
        Some(2.0),
        "{body}"
    );
    assert!(!body.contains(r#"route="r2""#), "{body}");
}

#[test]
fn invalid_plugin_config_is_refused() {
    let up = Recorder::start();
    let err = Gateway::try_start(&config(&global("{latency_metrics: 3}"), up.port))
        .err()
        .expect("startup must fail");
    assert!(
        err.contains("field 'config.latency_metrics': expected a boolean"),
        "{err}"
    );
}

#[test]
fn data_plane_exports_control_plane_link_and_apply_time() {
    use gw_tests::cp::{self, Certs, ControlPlane};
    let rec = Recorder::start();
    let certs = Certs::shared();
    let cp = ControlPlane::start(&certs);
    let hash = cp.set_config(&cp::kong_export(rec.port, "/v1", 3));
    let mut env = certs.dp_env(cp.port);
    env.push(("KONG_TEST_CLUSTER_RECONNECT_MS".into(), "300".into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let g = Gateway::start_with("_format_version: '3.0'\n", &refs);
    assert!(
        cp.wait_ping(&hash, std::time::Duration::from_secs(15)),
        "{}",
        g.output()
    );
    let body = scrape_until(&g, |b| {
        value(b, "kong_control_plane_connected") == Some(1.0)
    });
    assert!(
        body.contains(
            "# HELP kong_control_plane_connected Kong connected to control plane, 0 is unconnected"
        ),
        "{body}"
    );
    assert_eq!(
        value(&body, "kong_control_plane_connected"),
        Some(1.0),
        "{body}"
    );
    assert!(
        value(&body, "kong_dp_config_apply_seconds_count").is_some_and(|v| v >= 1.0),
        "{body}"
    );
    // The node id a DP reports to its CP labels the node families.
    let node_id = std::fs::read_to_string(g.prefix.join("kong.id")).unwrap();
    assert!(body.contains(&format!(
        r#"kong_node_info{{node_id="{node_id}",version="3.10.0"}} 1"#
    )));
}
