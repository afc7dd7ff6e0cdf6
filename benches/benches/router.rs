//! Router matching throughput at 10, 1,000 and 10,000 routes with a mix of
//! exact and wildcard hosts, prefixes, regexes and header routes.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::router::{RequestInfo, RouteSpec, Router};
use http::{HeaderMap, HeaderValue};

fn routes(n: usize) -> Vec<RouteSpec> {
    (0..n)
        .map(|i| {
            let mut r = RouteSpec {
                id: uuid::Uuid::from_u128(0x1000_0000 + i as u128),
                name: Some(format!("r{i}")),
                protocols: vec!["http".into(), "https".into()],
                strip_path: true,
                index: i,
                ..Default::default()
            };
            match i % 10 {
                // exact host + prefix
                0..=3 => {
                    r.hosts = Some(vec![format!("svc{}.example.com", i % 500)]);
                    r.paths = vec![format!("/api/v{}/res{}", i % 3, i)];
                }
                // wildcard hosts + prefix
                4 => {
                    r.hosts = Some(vec![format!("*.tenant{i}.example.net")]);
                    r.paths = vec![format!("/t{i}")];
                }
                5 => {
                    r.hosts = Some(vec![format!("shop{i}.*")]);
                    r.paths = vec!["/cart".into()];
                }
                // host-less prefix
                6 | 7 => {
                    r.paths = vec![format!("/public/{i}/items")];
                    r.methods = vec!["GET".into()];
                }
                // regex
                8 => {
                    r.paths = vec![format!(r"~/users/{i}/(?<id>\d+)/profile$")];
                    if i % 20 == 8 {
                        r.hosts = Some(vec![format!("svc{}.example.com", i % 500)]);
                    }
                }
                // header routes
                _ => {
                    r.paths = vec![format!("/hdr/{i}")];
                    r.headers = vec![(
                        "x-version".into(),
                        vec!["v1".into(), "~*^beta-\\d+$".into()],
                    )];
                }
            }
            r
        })
        .collect()
}

struct Req {
    host: String,
    path: String,
    method: &'static str,
    headers: HeaderMap,
}

fn requests(n: usize) -> Vec<Req> {
    let last = |k: usize| (0..n).rev().find(|i| i % 10 == k).unwrap_or(k);
    let mut hv = HeaderMap::new();
    hv.insert("x-version", HeaderValue::from_static("Beta-7"));
    let i0 = last(0);
    let i4 = last(4);
    let i5 = last(5);
    let i6 = last(6);
    let i8 = last(8);
    let i9 = last(9);
    vec![
        Req {
            host: format!("svc{}.example.com", i0 % 500),
            path: format!("/api/v{}/res{}/x", i0 % 3, i0),
            method: "GET",
            headers: HeaderMap::new(),
        },
        Req {
            host: format!("a.b.tenant{i4}.example.net"),
            path: format!("/t{i4}/y"),
            method: "GET",
            headers: HeaderMap::new(),
        },
        Req {
            host: format!("shop{i5}.co.uk:8080"),
            path: "/cart/1".into(),
            method: "POST",
            headers: HeaderMap::new(),
        },
        Req {
            host: "unknown.test".into(),
            path: format!("/public/{i6}/items/9"),
            method: "GET",
            headers: HeaderMap::new(),
        },
        Req {
            host: format!("svc{}.example.com", i8 % 500),
            path: format!("/users/{i8}/1234/profile"),
            method: "GET",
            headers: HeaderMap::new(),
        },
        Req {
            host: "unknown.test".into(),
            path: format!("/hdr/{i9}/z"),
            method: "GET",
            headers: hv,
        },
        Req {
            host: "unknown.test".into(),
            path: "/nothing/here".into(),
            method: "GET",
            headers: HeaderMap::new(),
        },
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_find");
    for n in [10usize, 1_000, 10_000] {
        let router = Router::new(routes(n)).expect("routes compile");
        let reqs = requests(n);
        // Sanity: every request except the last (a miss) finds a route.
        for (k, r) in reqs.iter().enumerate() {
            let info = info(r);
            assert_eq!(
                router.find(&info).is_some(),
                k + 1 != reqs.len(),
                "request {k} at n={n}"
            );
        }
        g.bench_with_input(BenchmarkId::new("mix7", n), &n, |b, _| {
            b.iter(|| {
                for r in &reqs {
                    black_box(router.find(black_box(&info(r))));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("router_build");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        g.bench_with_input(BenchmarkId::new("new", n), &n, |b, &n| {
            b.iter_batched(
                || routes(n),
                |rs| Router::new(rs).expect("compile"),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn info(r: &Req) -> RequestInfo<'_> {
    RequestInfo {
        method: r.method,
        host: Some(&r.host),
        listener_port: 8000,
        path: &r.path,
        headers: &r.headers,
        sni: None,
        https: false,
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
