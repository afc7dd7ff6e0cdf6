//! Per-request cost of the plugin runtime, phase by phase as the proxy runs
//! them (`gateway/src/proxy/mod.rs`): request_filter's rewrite phase and
//! chain lookup, `plugin_rt::enter_route`, the body read for plugins that
//! ask for it and `plugin_rt::access`; response_filter's `plugin_rt::header_filter` on a
//! 200 head; response_body_filter's `plugin_rt::body_filter` on a one-chunk
//! body; logging's `plugin_rt::log`; then the `PluginRun` is freed. Each
//! phase sits behind the same guard the proxy uses, so the route without
//! plugins measures what the proxy pays for it (`route_chain()` is `None`,
//! then three guards) plus the four clock reads of the two timed stretches:
//! read the other cases as overhead over it.
//!
//! Every request is a real Pingora `Session` read from an in-memory HTTP/1
//! request (`Session::new_h1` over a `Cursor`, as Pingora's own tests do),
//! with a `RequestCtx` set up as request_filter leaves it; the snapshot is
//! compiled from a kong.yml by `loader::compile_text`, as the gateway loads
//! a declarative file. Building the session and the context, and writing
//! the response head to the session between header_filter and log (so the
//! log phase sees what was sent), are outside the timing. Routing, the
//! upstream and Kong's own headers are not measured here (`router` and the
//! load harness do); neither is rendering an exit's body
//! (request-termination) nor keeping a body read for the plugins (the
//! proxy's `read_body_for_plugins` reads it, as here; request-size-limiting
//! then goes by `Content-Length`).
//!
//! Cases: no plugins, prometheus, key-auth, key-auth + acl, cors,
//! key-auth + acl + cors + prometheus, and every other bundled plugin alone
//! (rate-limiting with the local policy; proxy-cache's hit path). Redis
//! policies are measured under load (`scripts/bench --only limits`), where
//! a real Redis runs.
//! The logging plugins send to collectors this bench runs (an HTTP sink, a
//! TCP sink, a UDP socket; file-log writes /dev/null); their sends happen
//! off the request path, and between measured batches the bench waits for
//! them (`LogIo::wait_idle`) so the background never piles up.

use std::io::{Cursor, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::plugins::enabled;
use gateway::plugins::runtime::{self as plugin_rt, PluginEnv};
use gateway::proxy::RequestCtx;
use gateway::snapshot::Snapshot;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

// As the gateway binary: the plugins allocate per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One route per case; `{HTTP}`, `{TCP}`, `{UDP}` are the collectors' ports.
const KONG_YML: &str = r#"_format_version: "3.0"
consumers:
- username: bench-consumer
  keyauth_credentials: [{key: bench-key}]
  basicauth_credentials: [{username: bench-user, password: bench-pass}]
  jwt_secrets: [{key: bench-jwt-key, secret: bench-jwt-secret-0123456789abcdef}]
  acls: [{group: bench-group}]
services:
- name: bench
  url: http://127.0.0.1:9/anything
  routes:
  - {name: none, paths: [/none]}
  - name: prom
    paths: [/prom]
    plugins:
    - {name: prometheus, config: {status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, upstream_health_metrics: true}}
  - name: keyauth
    paths: [/keyauth]
    plugins: [{name: key-auth}]
  - name: keyauth-acl
    paths: [/keyauth-acl]
    plugins: [{name: key-auth}, {name: acl, config: {allow: [bench-group]}}]
  - name: cors
    paths: [/cors]
    plugins: [{name: cors, config: {origins: ["https://app.example.com"]}}]
  - name: full
    paths: [/full]
    plugins:
    - {name: key-auth}
    - {name: acl, config: {allow: [bench-group]}}
    - {name: cors, config: {origins: ["https://app.example.com"]}}
    - {name: prometheus, config: {status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, upstream_health_metrics: true}}
  - name: basic
    paths: [/basic]
    plugins: [{name: basic-auth}]
  - name: jwt
    paths: [/jwt]
    plugins: [{name: jwt}]
  - name: ip
    paths: [/ip]
    plugins: [{name: ip-restriction, config: {allow: [10.0.0.0/8, 127.0.0.0/8]}}]
  - name: cid
    paths: [/cid]
    plugins: [{name: correlation-id}]
  - name: reqt
    paths: [/reqt]
    plugins: [{name: request-transformer, config: {add: {headers: ["x-bench:1"]}}}]
  - name: respt
    paths: [/respt]
    plugins: [{name: response-transformer, config: {add: {headers: ["x-bench:1"]}}}]
  - name: size
    paths: [/size]
    plugins: [{name: request-size-limiting, config: {allowed_payload_size: 1}}]
  - name: term
    paths: [/term]
    plugins: [{name: request-termination, config: {status_code: 503, message: bench}}]
  - name: file
    paths: [/file]
    plugins: [{name: file-log, config: {path: /dev/null}}]
  - name: http
    paths: [/http]
    plugins: [{name: http-log, config: {http_endpoint: "http://127.0.0.1:{HTTP}/log"}}]
  - name: tcp
    paths: [/tcp]
    plugins: [{name: tcp-log, config: {host: 127.0.0.1, port: {TCP}}}]
  - name: udp
    paths: [/udp]
    plugins: [{name: udp-log, config: {host: 127.0.0.1, port: {UDP}}}]
  - name: rl-local
    paths: [/rl-local]
    plugins: [{name: rate-limiting, config: {hour: 1000000000, policy: local}}]
  - name: cache
    paths: [/cache]
    plugins: [{name: proxy-cache, config: {strategy: memory}}]
"#;

/// A benchmark case: the route it runs and what it sends.
struct Case {
    /// The bench's name.
    name: &'static str,
    /// The route's name; its path is `/` and the name.
    route: &'static str,
    /// Extra request headers.
    headers: &'static [(&'static str, &'static str)],
    /// POSTs this body when set.
    body: Option<&'static [u8]>,
    /// The status a plugin answers with in access (`None`: proxied).
    exit: Option<u16>,
    /// A request header the plugins must have set (sent upstream).
    sets_request_header: Option<&'static str>,
    /// A response header the plugins must have set.
    sets_response_header: Option<&'static str>,
    /// Sends entries off the request path: wait for them between batches.
    logs: bool,
    /// The collector (index into [`RECEIVED`]) that must get its entry.
    collector: Option<usize>,
    /// Runs once before the check (proxy-cache: the miss that stores the
    /// entry every measured request then hits).
    warm: bool,
}

/// Entries each collector got: HTTP requests, TCP reads, UDP datagrams.
static RECEIVED: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];
const HTTP: usize = 0;
const TCP: usize = 1;
const UDP: usize = 2;

const ORIGIN: (&str, &str) = ("Origin", "https://app.example.com");
const APIKEY: (&str, &str) = ("apikey", "bench-key");

const fn case(name: &'static str, route: &'static str) -> Case {
    Case {
        name,
        route,
        headers: &[],
        body: None,
        exit: None,
        sets_request_header: None,
        sets_response_header: None,
        logs: false,
        collector: None,
        warm: false,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("none", "none"),
        case("prometheus", "prom"),
        Case {
            headers: &[APIKEY],
            sets_request_header: Some("x-consumer-username"),
            ..case("key-auth", "keyauth")
        },
        Case {
            headers: &[APIKEY],
            sets_request_header: Some("x-consumer-groups"),
            ..case("key-auth+acl", "keyauth-acl")
        },
        Case {
            headers: &[ORIGIN],
            sets_response_header: Some("access-control-allow-origin"),
            ..case("cors", "cors")
        },
        Case {
            headers: &[APIKEY, ORIGIN],
            sets_request_header: Some("x-consumer-groups"),
            sets_response_header: Some("access-control-allow-origin"),
            ..case("full", "full")
        },
        Case {
            // `bench-user:bench-pass`.
            headers: &[("Authorization", "Basic YmVuY2gtdXNlcjpiZW5jaC1wYXNz")],
            sets_request_header: Some("x-consumer-username"),
            ..case("basic-auth", "basic")
        },
        Case {
            // HS256 with the `bench-jwt-key` secret (`iss` names the key).
            headers: &[(
                "Authorization",
                concat!(
                    "Bearer ",
                    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
                    "eyJpc3MiOiJiZW5jaC1qd3Qta2V5Iiwic3ViIjoiYmVuY2gifQ.",
                    "BWASkdMBPYTlsceGUnL_KLm-OU5c6ksoisV3c08hTrs"
                ),
            )],
            sets_request_header: Some("x-consumer-username"),
            ..case("jwt", "jwt")
        },
        case("ip-restriction", "ip"),
        Case {
            sets_request_header: Some("kong-request-id"),
            ..case("correlation-id", "cid")
        },
        Case {
            sets_request_header: Some("x-bench"),
            ..case("request-transformer", "reqt")
        },
        Case {
            sets_response_header: Some("x-bench"),
            ..case("response-transformer", "respt")
        },
        Case {
            headers: &[("Content-Type", "application/json")],
            body: Some(&[b'x'; 1024]),
            ..case("request-size-limiting", "size")
        },
        Case {
            exit: Some(503),
            ..case("request-termination", "term")
        },
        Case {
            logs: true,
            ..case("file-log", "file")
        },
        Case {
            logs: true,
            collector: Some(HTTP),
            ..case("http-log", "http")
        },
        Case {
            logs: true,
            collector: Some(TCP),
            ..case("tcp-log", "tcp")
        },
        Case {
            logs: true,
            collector: Some(UDP),
            ..case("udp-log", "udp")
        },
        Case {
            sets_response_header: Some("x-ratelimit-remaining-hour"),
            ..case("rate-limiting-local", "rl-local")
        },
        Case {
            // Only a hit answers in access with 200.
            warm: true,
            exit: Some(200),
            ..case("proxy-cache-hit", "cache")
        },
    ]
}

/// The upstream's answer: what header_filter, body_filter and log see.
const UPSTREAM_BODY: &[u8] = br#"{"args":{},"headers":{"Accept":"*/*","Host":"bench.test"},"origin":"127.0.0.1","url":"http://bench.test/get"}"#;

fn upstream_head() -> ResponseHeader {
    let mut resp = match ResponseHeader::build(200, Some(4)) {
        Ok(r) => r,
        Err(e) => panic!("response head: {e}"),
    };
    for (k, v) in [
        ("Content-Type", "application/json".to_string()),
        ("Content-Length", UPSTREAM_BODY.len().to_string()),
        ("Date", "Mon, 01 Dec 2025 00:00:00 GMT".to_string()),
        ("Server", "nginx".to_string()),
    ] {
        if let Err(e) = resp.insert_header(k, v) {
            panic!("response head: {e}");
        }
    }
    resp
}

/// What one measured request needs, built outside the timing.
struct Input {
    session: Session,
    ctx: RequestCtx,
    resp: ResponseHeader,
    /// When "the upstream" was asked and answered.
    upstream_at: Instant,
}

/// A finished request, dropped outside the timing (or inspected).
struct Done {
    session: Session,
    exit: Option<u16>,
    resp: ResponseHeader,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    env: PluginEnv,
    snap: Arc<Snapshot>,
}

impl Bench {
    fn new() -> Bench {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        let (http, tcp, udp) = (http_sink(), tcp_sink(), udp_sink());
        let yml = KONG_YML
            .replace("{HTTP}", &http.to_string())
            .replace("{TCP}", &tcp.to_string())
            .replace("{UDP}", &udp.to_string());
        let plugins = match enabled(&["bundled".to_string()]) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let snap = match gateway::loader::compile_text(
            &yml,
            &plugins,
            "bench kong.yml",
            &Default::default(),
        ) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("{e}"),
        };
        Bench {
            rt,
            env: PluginEnv::default(),
            snap,
        }
    }

    fn route(&self, name: &str) -> usize {
        match self
            .snap
            .routes
            .iter()
            .position(|r| r.name.as_deref() == Some(name))
        {
            Some(i) => i,
            None => panic!("no route {name}"),
        }
    }

    /// A session that has read `c`'s request, and the context request_filter
    /// leaves before the access phase (route, service, client address,
    /// upstream URI).
    fn input(&self, c: &Case, route: usize) -> Input {
        let mut req = format!(
            "{} /{} HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n",
            if c.body.is_some() { "POST" } else { "GET" },
            c.route
        );
        for (k, v) in c.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = c.body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut raw = req.into_bytes();
        raw.extend_from_slice(c.body.unwrap_or_default());
        let stream: pingora::protocols::Stream = Box::new(Cursor::new(raw));
        let mut session = Session::new_h1(stream);
        match self.rt.block_on(session.read_request()) {
            Ok(true) => {}
            other => panic!("{}: request not read: {other:?}", c.name),
        }
        let snap = &self.snap;
        let mut ctx = RequestCtx::new();
        ctx.snapshot = Some(snap.clone());
        ctx.route = Some(route);
        ctx.service = snap.routes.get(route).and_then(|r| r.service);
        ctx.host_port = 8000;
        let ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ctx.peer_ip = ip;
        ctx.client_ip = ip;
        ctx.upstream_uri = format!("/anything/{}", c.route);
        ctx.retries_left = 5;
        Input {
            session,
            ctx,
            resp: upstream_head(),
            upstream_at: Instant::now(),
        }
    }

    /// One request through the plugin phases; returns the time spent in
    /// them (the response head is written to the session untimed).
    async fn run(&self, route: usize, input: Input) -> (Duration, Done) {
        let Input {
            mut session,
            mut ctx,
            mut resp,
            upstream_at,
        } = input;
        let env = &self.env;
        let snap = &self.snap;
        let t0 = Instant::now();
        // request_filter: the rewrite phase (no global rewrite handler
        // here: one flag test), then the route's chain, resolved at compile
        // time.
        let mut exit = None;
        if plugin_rt::rewrite(env, &mut session, &mut ctx, snap)
            .await
            .is_some()
        {
            panic!("no rewrite handler here");
        }
        if let Some(chain) = snap.plugins.route_chain(route) {
            plugin_rt::enter_route(&mut ctx, chain);
            if plugin_rt::needs_body(snap, chain) {
                read_body(&mut session).await;
            }
            if let Some(e) = plugin_rt::access(env, &mut session, &mut ctx, snap).await {
                // send_exit: Kong's answer instead of the upstream's.
                ctx.kong_status = Some(e.status);
                resp = match ResponseHeader::build(e.status, Some(4)) {
                    Ok(r) => r,
                    Err(err) => panic!("exit head: {err}"),
                };
                exit = Some(e.status);
            }
        }
        if exit.is_none() {
            // What the proxy records on the way to and from the upstream.
            ctx.tries = 1;
            ctx.upstream_start = Some(upstream_at);
            ctx.upstream_header_at = Some(upstream_at);
            ctx.proxied = true;
        }
        // response_filter.
        if let (Some(snap), true) = (ctx.snapshot.clone(), ctx.plugins.is_some()) {
            plugin_rt::header_filter(env, &mut session, &mut ctx, &snap, &mut resp);
        }
        // response_body_filter, one chunk.
        let mut body = Some(Bytes::from_static(UPSTREAM_BODY));
        if let (Some(snap), true) = (ctx.snapshot.clone(), ctx.plugins.is_some()) {
            plugin_rt::body_filter(env, &mut session, &mut ctx, &snap, &mut body, true);
        }
        let mut took = t0.elapsed();
        if let Err(e) = session
            .write_response_header(Box::new(resp.clone()), false)
            .await
        {
            panic!("writing the response head: {e}");
        }
        let t1 = Instant::now();
        // logging.
        if let (Some(snap), true) = (ctx.snapshot.clone(), ctx.plugins.is_some()) {
            plugin_rt::log(env, &mut session, &mut ctx, &snap);
        }
        drop(ctx.plugins.take());
        took += t1.elapsed();
        drop(ctx);
        (
            took,
            Done {
                session,
                exit,
                resp,
            },
        )
    }

    /// `iters` requests of case `c`, in chunks built ahead; the sum of the
    /// time spent in the plugin phases.
    fn measure(&self, c: &Case, route: usize, iters: u64) -> Duration {
        const CHUNK: u64 = 1024;
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(CHUNK);
            left -= n;
            let inputs: Vec<Input> = (0..n).map(|_| self.input(c, route)).collect();
            let (took, done) = self.rt.block_on(async {
                let mut took = Duration::ZERO;
                let mut done = Vec::with_capacity(inputs.len());
                for input in inputs {
                    let (t, d) = self.run(route, input).await;
                    took += t;
                    done.push(d);
                }
                (took, done)
            });
            total += took;
            drop(done);
            if c.logs {
                // Off the clock: let the collectors catch up.
                self.env.io.wait_idle(Duration::from_secs(60));
            }
        }
        total
    }

    /// Runs `c` once and checks the plugins did their job, so that no case
    /// measures a refusal by mistake.
    fn check(&self, c: &Case, route: usize) {
        if c.warm {
            let _ = self.rt.block_on(self.run(route, self.input(c, route)));
        }
        let before = c.collector.map(|i| RECEIVED[i].load(Ordering::SeqCst));
        let (_, done) = self.rt.block_on(self.run(route, self.input(c, route)));
        if let (Some(i), Some(n)) = (c.collector, before) {
            // The send is off the request path: give it a moment.
            let until = Instant::now() + Duration::from_secs(10);
            while RECEIVED[i].load(Ordering::SeqCst) == n && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                RECEIVED[i].load(Ordering::SeqCst) > n,
                "{}: the collector got nothing",
                c.name
            );
        }
        assert_eq!(done.exit, c.exit, "{}: access exit", c.name);
        if let Some(h) = c.sets_request_header {
            assert!(
                done.session.req_header().headers.contains_key(h),
                "{}: request header {h} not set",
                c.name
            );
        }
        if let Some(h) = c.sets_response_header {
            assert!(
                done.resp.headers.contains_key(h),
                "{}: response header {h} not set",
                c.name
            );
        }
        let chain = self.snap.plugins.route_chain(route);
        assert_eq!(
            chain.is_none(),
            c.name == "none",
            "{}: only the no-plugin route has no chain",
            c.name
        );
    }
}

/// The proxy's `read_body_for_plugins` for a body that fits Pingora's
/// retry buffer: read it whole before access.
async fn read_body(session: &mut Session) {
    session.as_mut().enable_retry_buffering();
    let mut read = bytes::BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(b)) => read.extend_from_slice(&b),
            Ok(None) => break,
            Err(e) => panic!("request body: {e}"),
        }
    }
    criterion::black_box(read);
}

/// An HTTP collector for http-log: answers 200 to every request.
fn http_sink() -> u16 {
    sink(|mut s| {
        let mut buf: Vec<u8> = Vec::new();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            buf.drain(..head_end + len);
            RECEIVED[HTTP].fetch_add(1, Ordering::SeqCst);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
    })
}

/// A TCP collector for tcp-log: reads and discards.
fn tcp_sink() -> u16 {
    sink(|mut s| {
        let mut tmp = [0u8; 16 * 1024];
        while matches!(s.read(&mut tmp), Ok(n) if n > 0) {
            RECEIVED[TCP].fetch_add(1, Ordering::SeqCst);
        }
    })
}

fn sink(serve: fn(std::net::TcpStream)) -> u16 {
    let l = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("sink: {e}"),
    };
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    port
}

/// A UDP collector for udp-log: receives and discards.
fn udp_sink() -> u16 {
    let s = match UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => panic!("udp sink: {e}"),
    };
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while s.recv(&mut buf).is_ok() {
            RECEIVED[UDP].fetch_add(1, Ordering::SeqCst);
        }
    });
    port
}

fn bench(c: &mut Criterion) {
    let b = Bench::new();
    let mut g = c.benchmark_group("plugins");
    // Building each request's session and context outside the timing
    // costs more than the cheap cases measure: shorter runs keep the
    // whole bench to a few minutes.
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for case in cases() {
        let route = b.route(case.route);
        b.check(&case, route);
        g.bench_function(case.name, |bencher| {
            bencher.iter_custom(|iters| b.measure(&case, route, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
