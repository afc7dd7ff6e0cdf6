//! Per-request cost of recording Kong's prometheus families on a route's
//! pre-resolved handles (`Metrics::record_sample`), with every flag on,
//! with the plugin absent, and for a status code outside the pre-resolved
//! set (a label lookup per request).

use config_sync::{parse_declarative_str, ParseOptions};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway::metrics::{Metrics, RequestSample};
use gateway::snapshot::Snapshot;

fn snapshot(plugins: &str) -> Snapshot {
    let yml = format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  routes:\n  - name: r\n    paths: [\"/r\"]\n{plugins}"
    );
    let opts = ParseOptions::with_plugins(["prometheus"]);
    match parse_declarative_str(&yml, &opts).map(|cfg| Snapshot::compile(&cfg, "h".into())) {
        Ok(Ok(s)) => s,
        _ => panic!("bench config must compile"),
    }
}

fn sample(status: u16) -> RequestSample {
    RequestSample {
        status,
        from_service: true,
        kong_ms: 1,
        upstream_ms: Some(12),
        request_ms: 14,
        ingress_bytes: 180,
        egress_bytes: 420,
    }
}

fn bench(c: &mut Criterion) {
    let metrics = match Metrics::new() {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let on = snapshot(
        "plugins:\n- name: prometheus\n  config: {status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true}\n",
    );
    let off = snapshot("");
    let mut g = c.benchmark_group("metrics_record");
    let ok = sample(200);
    g.bench_function("all_flags_200", |b| {
        b.iter(|| metrics.record_sample(black_box(&on.metrics.routes[0]), black_box(&ok)))
    });
    let teapot = sample(418);
    g.bench_function("all_flags_uncommon_code", |b| {
        b.iter(|| metrics.record_sample(black_box(&on.metrics.routes[0]), black_box(&teapot)))
    });
    g.bench_function("plugin_absent", |b| {
        b.iter(|| metrics.record_sample(black_box(&off.metrics.routes[0]), black_box(&ok)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
