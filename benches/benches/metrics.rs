//! Per-request cost of recording Kong's prometheus families on a route's
//! series (`Metrics::record_sample`, what the `prometheus` plugin's log
//! handler does), with every flag on, with no flag, per consumer, and for a
//! status code outside the pre-resolved set (a label lookup per request).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway::metrics::{Metrics, RecordFlags, RequestSample, RouteSeries};

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
    let all = RecordFlags {
        status_code: true,
        latency: true,
        bandwidth: true,
    };
    let route = RouteSeries::new("s".into(), "r".into());
    let mut g = c.benchmark_group("metrics_record");
    let ok = sample(200);
    g.bench_function("all_flags_200", |b| {
        b.iter(|| metrics.record_sample(black_box(&route), all, "", black_box(&ok)))
    });
    let teapot = sample(418);
    g.bench_function("all_flags_uncommon_code", |b| {
        b.iter(|| metrics.record_sample(black_box(&route), all, "", black_box(&teapot)))
    });
    g.bench_function("per_consumer", |b| {
        b.iter(|| metrics.record_sample(black_box(&route), all, "alice", black_box(&ok)))
    });
    g.bench_function("no_flags", |b| {
        b.iter(|| {
            metrics.record_sample(
                black_box(&route),
                RecordFlags::default(),
                "",
                black_box(&ok),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
