//! Port of Kong's `spec/03-plugins/24-response-rate-limiting/` (DB-less):
//! the schema spec through the loader (01, 03's DB-less cases, 06's legacy
//! fields), the access spec (04) for the `local` and `redis` policies, the
//! redis integration spec (05), and this gateway's own scenarios: Kong's
//! key names and TTLs read back from Redis, a Kong node's counts seen
//! through the shared Redis, Redis going away and coming back, a config
//! push keeping local counters, and how the header_filter 429 ends a
//! response. Each Kong `describe` is one gateway, each `it(...)` a named
//! case; 02-policies_spec is unit-tested in the plugin's file.
//!
//! Kong's spec counts in `second` windows and waits for a fresh second;
//! here the limits are per minute (and hour), each case waits out the end
//! of a minute when it is near ([`fresh_minute`]), and the hosts Kong
//! reuses within a second get one route per case. Increments are counted
//! after the response (Kong: a timer), so, as Kong's spec does, a case
//! polls until they show ([`wait_remaining`]). No case asserts timings.
//!
//! The upstream is [`MockUpstream`], Kong's `mock_upstream` as these
//! specs use it (query arguments echoed as response headers, repeated ones
//! joined in one header; the request's headers in the JSON body).
//!
//! Skipped: the gRPC case (no gRPC client or upstream in this harness; the
//! plugin does not look at the protocol), the `cluster` policy (refused on
//! a DB-less node, which the schema cases check; 02's cluster cases run on
//! the local policy instead), the Admin API shapes of 03/05/06 (no Admin
//! API on this data plane), and of 04's TLS Redis variants all but
//! "blocks if exceeding limit" (the rest of the suite is the same over
//! TLS).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gw_tests::gateway::{fill_ports, Cases, Gateway};
use gw_tests::redis::{RedisServer, Reply};
use gw_tests::{free_port, get, Conn, Response};

const LOCAL: &str = "policy: local";

/// The redis policy's settings in a plugin's flow mapping (`POLICY`).
fn redis_policy(port: u16, db: u32) -> String {
    format!(
        "policy: redis, redis: {{host: 127.0.0.1, port: {port}, password: \"\", database: {db}}}"
    )
}

// ---------------------------------------------------------------------------
// Kong's mock upstream

/// Kong's `spec/fixtures/mock_upstream.lua`, the parts these specs use:
/// `/response-headers` sends every query argument back as a response header
/// (a repeated one joined with `", "`, as its `send_text_response` does),
/// `/status/<code>` answers that code, anything else 200; every body is
/// JSON with the request's headers (lower-cased names) under `headers`.
struct MockUpstream {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl MockUpstream {
    fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                thread::spawn(move || serve(stream, &seen));
            }
        });
        MockUpstream { port, requests }
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A query component as `ngx.req.get_uri_args` decodes it (`%XX`, and
/// `+` as a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| {
            b.get(j..j + 2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match (b[i], hex(i + 1)) {
            (b'%', Some(c)) => {
                out.push(c);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(mut stream: TcpStream, seen: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        if !matches!(req.parse(&buf[..end]), Ok(httparse::Status::Complete(_))) {
            return;
        }
        seen.fetch_add(1, Ordering::SeqCst);
        let target = req.path.unwrap_or("/").to_string();
        let headers: BTreeMap<String, String> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let close = headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body_len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..end);
        while buf.len() < body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..body_len);

        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut status = 200;
        let mut extra: Vec<(String, String)> = Vec::new();
        if path == "/response-headers" {
            for arg in query.split('&').filter(|a| !a.is_empty()) {
                let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
                let (k, v) = (unescape(k), unescape(v));
                match extra.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                    Some((_, joined)) => {
                        joined.push_str(", ");
                        joined.push_str(&v);
                    }
                    None => extra.push((k, v)),
                }
            }
        } else if let Some(code) = path.strip_prefix("/status/") {
            status = code.parse().unwrap_or(400);
        }
        let body = serde_json::json!({ "headers": headers, "uri": target }).to_string();
        let mut resp = format!(
            "HTTP/1.1 {status} X\r\nServer: mock-upstream/1.0.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in &extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&body);
        if stream.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// helpers

fn epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Waits out the last seconds of a minute, so that what follows falls in
/// one minute window (Kong's spec: `wait_server_sync` for a second).
fn fresh_minute() {
    let now = epoch();
    let left = 60 - now.as_secs() % 60;
    if left <= 12 {
        thread::sleep(
            Duration::from_secs(left) + Duration::from_millis(50)
                - Duration::from_nanos(now.subsec_nanos().into()),
        );
    }
}

/// Sleeps into the next second.
fn next_second() {
    let ns = epoch().subsec_nanos();
    thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - ns)) + Duration::from_millis(20));
}

fn num(r: &Response, name: &str) -> Option<f64> {
    r.header(name)
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: {v}")))
}

/// A header the upstream received, from the mock's body.
fn upstream_header(r: &Response, name: &str) -> Option<f64> {
    r.json()["headers"][name.to_ascii_lowercase()]
        .as_str()
        .map(|v| v.parse().unwrap())
}

/// The counters in Redis database `db`, but the `second` ones (their
/// one-second TTL may have ended them already).
fn windows_in(redis: &RedisServer, db: u32) -> usize {
    redis
        .cmd_in(db, &["KEYS", "response-ratelimit:*"])
        .strings()
        .iter()
        .filter(|k| !k.ends_with(":second"))
        .count()
}

/// Waits (≤ 10 s) until the counts of one limit reach Redis database
/// `db` (after the response) and returns how many windows are there.
fn wait_windows(redis: &RedisServer, db: u32, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while windows_in(redis, db) < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    windows_in(redis, db)
}

fn get_host(port: u16, path: &str, host: &str) -> Response {
    get(port, path, &[("Host", host)])
}

/// `wait_remaining_sync`: polls `path` (which consumes nothing) until the
/// counted increments show in its headers, or, with `status` not 200,
/// until it answers that status; returns that response.
fn wait_status(
    port: u16,
    path: &str,
    host: &str,
    expected: &[(&str, f64)],
    status: u16,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get_host(port, path, host);
        let done = if status != 200 {
            r.status == status
        } else {
            r.status == 200 && expected.iter().all(|(h, v)| num(&r, h) == Some(*v))
        };
        if done {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path}: wanted {status} {expected:?}, got {} {:?} {}",
            r.status,
            r.headers,
            r.body_str()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn wait_remaining(port: u16, path: &str, host: &str, expected: &[(&str, f64)]) -> Response {
    wait_status(port, path, host, expected, 200)
}

/// `test_limit`: `limit` requests each using 1 of `video`, then the next
/// one is refused with the headers of a used-up limit.
fn test_limit(port: u16, args: &str, host: impl Fn(usize) -> String, limit: usize) {
    let full = format!("/response-headers?{args}");
    for i in 1..=limit {
        let r = get_host(port, &full, &host(i));
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
    }
    let probe = match args.split('&').find_map(|a| a.strip_prefix("apikey=")) {
        Some(key) => format!("/response-headers?apikey={key}"),
        None => "/response-headers".to_string(),
    };
    wait_remaining(
        port,
        &probe,
        &host(1),
        &[("x-ratelimit-remaining-video-minute", 0.0)],
    );
    let r = get_host(port, &full, &host(1));
    assert_eq!(r.status, 429, "{:?}", r.headers);
    assert_eq!(r.body_str(), "", "kong.response.exit(429): no body");
    assert_eq!(
        num(&r, "x-ratelimit-limit-video-minute"),
        Some(limit as f64)
    );
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(0.0));
}

fn assert_no_rl_headers(r: &Response) {
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with("x-ratelimit-")),
        "{:?}",
        r.headers
    );
}

// ---------------------------------------------------------------------------
// 04-access_spec: "Plugin: response-ratelimiting (access)"

const ACCESS: &str = r#"_format_version: "3.0"
consumers:
- username: provider_123
  custom_id: provider_123
  keyauth_credentials: [{key: apikey123}]
- username: provider_124
  custom_id: provider_124
  keyauth_credentials: [{key: apikey124}]
services:
- name: mock
  url: http://{UP0}
  routes:
  - {name: test1, hosts: [test1.test]}
  - {name: test1b, hosts: [test1b.test]}
  - {name: test2, hosts: [test2.test]}
  - {name: test3, hosts: [test3.test]}
  - {name: test4, hosts: [test4.test]}
  - {name: test7, hosts: [test7.test]}
  - {name: test8, hosts: [test8.test]}
  - {name: test9, hosts: [test9.test]}
  - {name: expire1, hosts: [expire1.test]}
- name: service10
  url: http://{UP0}
  routes:
  - {hosts: [test-service1.test]}
  - {hosts: [test-service2.test]}
  plugins:
  - {name: response-ratelimiting, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 6}}}}
plugins:
- {name: response-ratelimiting, route: test1, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 6}}}}
- {name: response-ratelimiting, route: test1b, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 6}}}}
- {name: response-ratelimiting, route: test2, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 12, hour: 24}, image: {minute: 6}}}}
- {name: key-auth, route: test3}
- {name: response-ratelimiting, route: test3, config: {POLICY, limits: {video: {minute: 3}}}}
- {name: response-ratelimiting, route: test3, consumer: provider_123, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 4}}}}
- {name: response-ratelimiting, route: test4, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 14}, image: {minute: 6}}}}
- {name: response-ratelimiting, route: test7, config: {fault_tolerant: false, POLICY, block_on_first_violation: true, limits: {video: {minute: 6, hour: 12}, image: {minute: 4}}}}
- {name: response-ratelimiting, route: test8, config: {fault_tolerant: false, POLICY, limits: {video: {minute: 6, hour: 12}, image: {minute: 5}}}}
- {name: response-ratelimiting, route: test9, config: {fault_tolerant: false, POLICY, hide_client_headers: true, limits: {video: {minute: 6}}}}
- {name: response-ratelimiting, route: expire1, config: {fault_tolerant: false, POLICY, limits: {video: {second: 6}}}}
"#;

fn access_suite(policy: &str) {
    let up = MockUpstream::start();
    let gw = Gateway::start(&fill_ports(&ACCESS.replace("POLICY", policy), &[up.port]));
    let port = gw.port;
    let mut t = Cases::new();

    // describe("Without authentication (IP address)")
    t.it("returns remaining counter", || {
        fresh_minute();
        for _ in 0..3 {
            let r = get_host(port, "/response-headers?x-kong-limit=video=1", "test1.test");
            assert_eq!(r.status, 200, "{}", r.body_str());
        }
        wait_remaining(
            port,
            "/response-headers",
            "test1.test",
            &[("x-ratelimit-remaining-video-minute", 3.0)],
        );
        let r = get_host(port, "/response-headers?x-kong-limit=video=1", "test1.test");
        assert_eq!(r.status, 200);
        assert_eq!(num(&r, "x-ratelimit-limit-video-minute"), Some(6.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(2.0));
        // Spelled as Kong spells them; the upstream's header is removed.
        for name in [
            "X-RateLimit-Limit-video-minute",
            "X-RateLimit-Remaining-video-minute",
        ] {
            assert!(r.headers.iter().any(|(k, _)| k == name), "{:?}", r.headers);
        }
        assert_eq!(r.header("x-kong-limit"), None);
    });

    t.it("blocks if exceeding limit", || {
        fresh_minute();
        test_limit(port, "x-kong-limit=video=1", |_| "test1b.test".into(), 6);
    });

    t.it(
        "counts against the same service register from different routes",
        || {
            fresh_minute();
            let url = "/response-headers?x-kong-limit=video%3D1%2C%20test%3D6";
            for _ in 0..3 {
                assert_eq!(get_host(port, url, "test-service1.test").status, 200);
            }
            for _ in 3..6 {
                assert_eq!(get_host(port, url, "test-service2.test").status, 200);
            }
            wait_remaining(
                port,
                "/response-headers",
                "test-service1.test",
                &[("x-ratelimit-remaining-video-minute", 0.0)],
            );
            let r = get_host(port, url, "test-service1.test");
            assert_eq!(r.status, 429);
        },
    );

    t.it("handles multiple limits", || {
        fresh_minute();
        let url = "/response-headers?x-kong-limit=video%3D2%2C%20image%3D1";
        let (mut in_min, mut in_hour) = (12.0, 24.0);
        for _ in 0..3 {
            assert_eq!(get_host(port, url, "test2.test").status, 200);
            in_min -= 2.0;
            in_hour -= 2.0;
        }
        let r = wait_remaining(
            port,
            "/response-headers",
            "test2.test",
            &[
                ("x-ratelimit-remaining-video-minute", in_min),
                ("x-ratelimit-remaining-video-hour", in_hour),
                // Each limit is counted on its own (Kong: `increment` per
                // name in the timer): wait for both.
                ("x-ratelimit-remaining-image-minute", 3.0),
            ],
        );
        assert_eq!(num(&r, "x-ratelimit-limit-video-minute"), Some(12.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(in_min));
        assert_eq!(num(&r, "x-ratelimit-limit-video-hour"), Some(24.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-hour"), Some(in_hour));
        assert_eq!(num(&r, "x-ratelimit-limit-image-minute"), Some(6.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-image-minute"), Some(3.0));

        let url = "/response-headers?x-kong-limit=video%3D1%2C%20image%3D1";
        for _ in 3..6 {
            assert_eq!(get_host(port, url, "test2.test").status, 200);
            in_min -= 1.0;
            in_hour -= 1.0;
        }
        let r = wait_remaining(
            port,
            "/response-headers",
            "test2.test",
            &[
                ("x-ratelimit-remaining-video-minute", in_min),
                ("x-ratelimit-remaining-video-hour", in_hour),
                ("x-ratelimit-remaining-image-minute", 0.0),
            ],
        );
        assert_eq!(num(&r, "x-ratelimit-remaining-image-minute"), Some(0.0));

        let r = get_host(port, url, "test2.test");
        in_min -= 1.0;
        in_hour -= 1.0;
        assert_eq!(num(&r, "x-ratelimit-remaining-image-minute"), Some(0.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-hour"), Some(in_hour));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(in_min));
        assert_eq!(r.status, 429);
    });

    // describe("With authentication") / describe("API-specific plugin")
    t.it(
        "blocks if exceeding limit and a per consumer & route setting",
        || {
            fresh_minute();
            test_limit(
                port,
                "apikey=apikey123&x-kong-limit=video=1",
                |_| "test3.test".into(),
                4,
            );
        },
    );
    t.it("blocks if exceeding limit and a per route setting", || {
        fresh_minute();
        test_limit(
            port,
            "apikey=apikey124&x-kong-limit=video=1",
            |_| "test3.test".into(),
            3,
        );
    });

    // describe("Upstream usage headers")
    t.it("should append the headers with multiple limits", || {
        fresh_minute();
        let r = get_host(port, "/get", "test8.test");
        assert_eq!(r.status, 200);
        assert_eq!(
            upstream_header(&r, "x-ratelimit-remaining-image"),
            Some(5.0)
        );
        assert_eq!(
            upstream_header(&r, "x-ratelimit-remaining-video"),
            Some(6.0)
        );
        // Actually consume the limits.
        let r = get_host(
            port,
            "/response-headers?x-kong-limit=video%3D2%2C%20image%3D1",
            "test8.test",
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            upstream_header(&r, "x-ratelimit-remaining-image"),
            Some(5.0)
        );
        assert_eq!(
            upstream_header(&r, "x-ratelimit-remaining-video"),
            Some(6.0)
        );
        wait_remaining(
            port,
            "/response-headers",
            "test8.test",
            &[
                ("x-ratelimit-remaining-video-minute", 4.0),
                ("x-ratelimit-remaining-image-minute", 4.0),
            ],
        );
        let r = get_host(port, "/get", "test8.test");
        assert_eq!(
            upstream_header(&r, "x-ratelimit-remaining-image"),
            Some(4.0)
        );
        // The lowest of the windows (minute 4, hour 10).
        assert_eq!(
            upstream_header(&r, "x-ratelimit-remaining-video"),
            Some(4.0)
        );
    });

    t.it(
        "combines multiple x-kong-limit headers from upstream",
        || {
            fresh_minute();
            // The mock joins the repeated argument into one header.
            let both = "/response-headers?x-kong-limit=video%3D2&x-kong-limit=image%3D1";
            for _ in 0..6 {
                assert_eq!(get_host(port, both, "test4.test").status, 200);
            }
            get_host(
                port,
                "/response-headers?x-kong-limit=video%3D1",
                "test4.test",
            );
            wait_remaining(
                port,
                "/response-headers",
                "test4.test",
                &[
                    ("x-ratelimit-remaining-video-minute", 1.0),
                    ("x-ratelimit-remaining-image-minute", 0.0),
                ],
            );
            let r = get_host(port, both, "test4.test");
            assert_eq!(r.status, 429);
            assert_eq!(num(&r, "x-ratelimit-remaining-image-minute"), Some(0.0));
            assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(0.0));
        },
    );

    t.it("should block on first violation", || {
        fresh_minute();
        let r = get_host(
            port,
            "/response-headers?x-kong-limit=video%3D2%2C%20image%3D4",
            "test7.test",
        );
        assert_eq!(r.status, 200);
        wait_status(port, "/response-headers", "test7.test", &[], 429);
        let before = up.count();
        let r = get_host(
            port,
            "/response-headers?x-kong-limit=video%3D2",
            "test7.test",
        );
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["message"], "API rate limit exceeded for 'image'");
        // Refused in access: no upstream call, and no usage headers.
        assert_eq!(up.count(), before);
        assert_no_rl_headers(&r);
    });

    // describe("Config with hide_client_headers")
    t.it(
        "does not send rate-limit headers when hide_client_headers==true",
        || {
            let r = get_host(port, "/status/200", "test9.test");
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-ratelimit-remaining-video-minute"), None);
            assert_eq!(r.header("x-ratelimit-limit-video-minute"), None);
            // The upstream is still told.
            assert_eq!(
                upstream_header(&r, "x-ratelimit-remaining-video"),
                Some(6.0)
            );
        },
    );

    // describe("Plugin: response-ratelimiting (expirations)"): a second
    // window, the second request in the next second.
    t.it("expires a counter", || {
        let path = "/response-headers?x-kong-limit=video=1";
        let r = get_host(port, path, "expire1.test");
        assert_eq!(r.status, 200);
        assert_eq!(num(&r, "x-ratelimit-limit-video-second"), Some(6.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-second"), Some(5.0));
        next_second();
        let r = get_host(port, path, "expire1.test");
        assert_eq!(r.status, 200);
        assert_eq!(num(&r, "x-ratelimit-limit-video-second"), Some(6.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-second"), Some(5.0));
    });
    t.finish();
}

#[test]
fn access_local_policy() {
    access_suite(LOCAL);
}

#[test]
fn access_redis_policy() {
    let Some(redis) = RedisServer::start("access_redis_policy") else {
        return;
    };
    access_suite(&redis_policy(redis.port, 1));
}

// "Plugin: response-ratelimiting (access - global for single consumer)" and
// "(access - global)"

fn global_suite(policy: &str) {
    let up = MockUpstream::start();
    let routes: String = (1..=6)
        .map(|i| format!("  - {{hosts: [test{i}.test]}}\n"))
        .collect();
    let services = format!("services:\n- name: mock\n  url: http://{{UP0}}\n  routes:\n{routes}");
    let consumer = format!(
        r#"_format_version: "3.0"
consumers:
- username: provider_126
  custom_id: provider_126
  keyauth_credentials: [{{key: apikey126}}]
{services}plugins:
- {{name: key-auth}}
- {{name: response-ratelimiting, consumer: provider_126, config: {{fault_tolerant: false, {policy}, limits: {{video: {{minute: 6}}}}}}}}
"#
    );
    let global = format!(
        r#"_format_version: "3.0"
{services}plugins:
- {{name: response-ratelimiting, config: {{fault_tolerant: false, {policy}, limits: {{video: {{minute: 6}}}}}}}}
"#
    );
    let mut t = Cases::new();
    let gw = Gateway::start(&fill_ports(&consumer, &[up.port]));
    t.it(
        "blocks when the consumer exceeds their quota, no matter what service/route used",
        || {
            fresh_minute();
            test_limit(
                gw.port,
                "apikey=apikey126&x-kong-limit=video=1",
                |i| format!("test{i}.test"),
                6,
            );
        },
    );
    drop(gw);
    let gw = Gateway::start(&fill_ports(&global, &[up.port]));
    t.it("blocks if exceeding limit", || {
        fresh_minute();
        test_limit(
            gw.port,
            "x-kong-limit=video=1",
            |i| format!("test{i}.test"),
            6,
        );
    });
    t.finish();
}

#[test]
fn access_global_local_policy() {
    global_suite(LOCAL);
}

#[test]
fn access_global_redis_policy() {
    let Some(redis) = RedisServer::start("access_global_redis_policy") else {
        return;
    };
    global_suite(&redis_policy(redis.port, 1));
}

// ---------------------------------------------------------------------------
// "Plugin: response-ratelimiting (fault tolerance)" [redis], and Redis
// going away mid-run

#[test]
fn redis_fault_tolerance() {
    let up = MockUpstream::start();
    let dead = free_port();
    let yml = fill_ports(
        &format!(
            r#"_format_version: "3.0"
services:
- name: mock
  url: http://{{UP0}}
  routes:
  - {{hosts: [failtest3.test], plugins: [{{name: response-ratelimiting, config: {{fault_tolerant: false, policy: redis, redis: {{host: 127.0.0.1, port: {dead}}}, limits: {{video: {{minute: 6}}}}}}}}]}}
  - {{hosts: [failtest4.test], plugins: [{{name: response-ratelimiting, config: {{fault_tolerant: true, policy: redis, redis: {{host: 127.0.0.1, port: {dead}}}, limits: {{video: {{minute: 6}}}}}}}}]}}
"#
        ),
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    let mut t = Cases::new();
    t.it("does not work if an error occurs", || {
        let r = get_host(gw.port, "/status/200", "failtest3.test");
        assert_eq!(r.status, 500, "{}", r.body_str());
        assert_eq!(r.json()["message"], "An unexpected error occurred");
        assert_no_rl_headers(&r);
    });
    t.it("keeps working if an error occurs", || {
        let r = get_host(gw.port, "/status/200", "failtest4.test");
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_no_rl_headers(&r);
        assert!(
            gw.proc
                .wait_for_line("failed to get usage", Duration::from_secs(5)),
            "{}",
            gw.output()
        );
        // Without a usage Kong's header_filter returns before it clears
        // the upstream's header: the client gets it.
        let r = get_host(
            gw.port,
            "/response-headers?x-kong-limit=video=1",
            "failtest4.test",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-kong-limit"), Some("video=1"));
    });
    t.finish();
}

/// Redis killed mid-run: with `fault_tolerant` requests pass without the
/// headers, without it they get 500; once Redis is back (empty), counting
/// starts over.
#[test]
fn redis_killed_mid_run_and_back() {
    let Some(mut redis) = RedisServer::start("redis_killed_mid_run_and_back") else {
        return;
    };
    let up = MockUpstream::start();
    let p = redis.port;
    let yml = fill_ports(
        &format!(
            r#"_format_version: "3.0"
services:
- name: mock
  url: http://{{UP0}}
  routes:
  - {{hosts: [strict.test], plugins: [{{name: response-ratelimiting, config: {{fault_tolerant: false, policy: redis, redis: {{host: 127.0.0.1, port: {p}, timeout: 1000}}, limits: {{video: {{hour: 1000}}}}}}}}]}}
  - {{hosts: [tolerant.test], plugins: [{{name: response-ratelimiting, config: {{fault_tolerant: true, policy: redis, redis: {{host: 127.0.0.1, port: {p}, timeout: 1000}}, limits: {{video: {{hour: 1000}}}}}}}}]}}
"#
        ),
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    let use_one = "/response-headers?x-kong-limit=video=1";
    let remaining = "x-ratelimit-remaining-video-hour";
    for host in ["strict.test", "tolerant.test"] {
        fresh_minute();
        let r = get_host(gw.port, use_one, host);
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(num(&r, remaining), Some(999.0));
        wait_remaining(gw.port, "/response-headers", host, &[(remaining, 999.0)]);
    }

    redis.stop();
    for _ in 0..3 {
        let r = get_host(gw.port, use_one, "tolerant.test");
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_no_rl_headers(&r);
        let r = get_host(gw.port, use_one, "strict.test");
        assert_eq!(r.status, 500, "{}", r.body_str());
        assert_eq!(r.json()["message"], "An unexpected error occurred");
        assert_no_rl_headers(&r);
    }

    redis.restart();
    fresh_minute();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = get_host(gw.port, use_one, "strict.test");
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, 200, "counting resumes once Redis is back");
    // Redis came back empty: this is the first count.
    assert_eq!(num(&r, remaining), Some(999.0));
    wait_remaining(
        gw.port,
        "/response-headers",
        "strict.test",
        &[(remaining, 999.0)],
    );
}

// ---------------------------------------------------------------------------
// 05-integration_spec

#[test]
fn redis_integration() {
    let Some(redis) = RedisServer::start("redis_integration") else {
        return;
    };
    // redis_helper.add_admin_user / add_basic_user.
    for (user, rights) in [
        ("response-ratelimit-user", "allcommands"),
        ("some-user", "+get"),
    ] {
        assert_eq!(
            redis.cmd(&["ACL", "SETUSER", user, "on", "allkeys", rights, ">secret"]),
            Reply::Status("OK".into())
        );
    }
    let up = MockUpstream::start();
    let p = redis.port;
    let route = |n: u32, auth: &str| {
        format!(
            "  - {{hosts: [redistest{n}.test], plugins: [{{name: response-ratelimiting, config: {{policy: redis, redis: {{host: 127.0.0.1, port: {p}, database: {n}, timeout: 10000{auth}}}, fault_tolerant: false, limits: {{video: {{minute: 6}}}}}}}}]}}\n"
        )
    };
    let yml = fill_ports(
        &format!(
            "_format_version: \"3.0\"\nservices:\n- name: mock\n  url: http://{{UP0}}\n  routes:\n{}{}{}{}",
            route(1, ""),
            route(2, ""),
            route(3, ", username: response-ratelimit-user, password: secret"),
            route(4, ", username: some-user, password: secret"),
        ),
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    let size = |db| redis.cmd_in(db, &["DBSIZE"]).int();
    let wait_size = |db| wait_windows(&redis, db, 5);
    let use_one = |n: u32| {
        let r = get_host(
            gw.port,
            "/response-headers?x-kong-limit=video=1",
            &format!("redistest{n}.test"),
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(num(&r, "x-ratelimit-limit-video-minute"), Some(6.0));
        assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(5.0));
    };
    let mut t = Cases::new();
    t.it("connection pool respects database setting", || {
        fresh_minute();
        assert_eq!((size(1), size(2), size(3)), (0, 0, 0));
        use_one(1);
        assert_eq!(wait_size(1), 5);
        assert_eq!((size(2), size(3)), (0, 0));
        use_one(2);
        assert_eq!(wait_size(2), 5);
        assert_eq!(size(3), 0);
        use_one(3);
        assert_eq!(wait_size(3), 5);
    });
    t.it(
        "authenticates and executes with a valid redis user having proper ACLs",
        || {
            let r = get_host(gw.port, "/status/200", "redistest3.test");
            assert_eq!(r.status, 200, "{}", r.body_str());
        },
    );
    t.it(
        "fails to rate-limit for a redis user with missing ACLs",
        || {
            let r = get_host(gw.port, "/status/200", "redistest4.test");
            assert_eq!(r.status, 500, "{}", r.body_str());
        },
    );
    t.finish();
}

/// 04-access_spec's and 05's `ssl_verify` and `ssl_no_verify` variants. The
/// CA is trusted through `SSL_CERT_FILE` (Kong:
/// `lua_ssl_trusted_certificate`).
#[test]
fn redis_over_tls() {
    let Some(redis) = RedisServer::start_tls("redis_over_tls") else {
        return;
    };
    let (tls_port, ca) = redis.tls.clone().unwrap();
    let up = MockUpstream::start();
    let yml = fill_ports(
        &format!(
            r#"_format_version: "3.0"
services:
- name: mock
  url: http://{{UP0}}
  routes:
  - {{hosts: [verify.test], plugins: [{{name: response-ratelimiting, config: {{fault_tolerant: false, policy: redis, redis: {{host: localhost, port: {tls_port}, database: 1, ssl: true, ssl_verify: true, server_name: localhost}}, limits: {{video: {{minute: 6}}}}}}}}]}}
  - {{hosts: [no-verify.test], plugins: [{{name: response-ratelimiting, config: {{fault_tolerant: false, policy: redis, redis: {{host: 127.0.0.1, port: {tls_port}, database: 2, ssl: true, ssl_verify: false, server_name: really.really.really.does.not.exist.host.test}}, limits: {{video: {{minute: 6}}}}}}}}]}}
"#
        ),
        &[up.port],
    );
    let gw = Gateway::start_with(&yml, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let mut t = Cases::new();
    for (variant, host, db) in [
        ("ssl_verify", "verify.test", 1),
        ("ssl_no_verify", "no-verify.test", 2),
    ] {
        t.it(&format!("[#{variant}] blocks if exceeding limit"), || {
            fresh_minute();
            test_limit(gw.port, "x-kong-limit=video=1", |_| host.into(), 6);
            assert_eq!(windows_in(&redis, db), 5);
        });
    }
    t.finish();
}

// ---------------------------------------------------------------------------
// 01-schema_spec, 03-api_spec (DB-less), 05/06's legacy fields

fn refused(configs: &[&str]) -> String {
    let mut yml = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n",
    );
    for (i, c) in configs.iter().enumerate() {
        yml.push_str(&format!(
            "  - {{name: r{i}, paths: [/r{i}], plugins: [{{name: response-ratelimiting, config: {c}}}]}}\n"
        ));
    }
    match Gateway::try_start(&yml) {
        Ok(_) => panic!("gateway started with invalid response-ratelimiting configs"),
        Err(out) => out,
    }
}

#[test]
fn schema_errors_through_the_loader() {
    let out = refused(&[
        // "empty config" / 03 "errors on empty config"
        "{}",
        "{limits: {}}",
        // "invalid limit"
        "{limits: {video: {seco: 1}}}",
        // "limits: smaller unit is less than bigger unit" (and bis)
        "{limits: {video: {second: 2, minute: 1}}}",
        "{limits: {video: {second: 1, minute: 2, hour: 3, day: 4, month: 6, year: 5}}}",
        // "invaldid unit type"
        "{limits: {second: 10}}",
        // "verifies that redis required fields are supplied"
        "{limits: {video: {second: 10}}, policy: redis, redis: {port: 6379, database: 0, username: test, password: testXXX, ssl: true, ssl_verify: false, timeout: 1100}}",
        // DB-less: `policy` is one of local, redis.
        "{limits: {video: {second: 10}}, policy: cluster}",
    ]);
    for text in [
        "field 'config.limits': required field missing",
        "field 'config.limits': length must be at least 1",
        "field 'config.limits.seco': unknown field",
        "field 'config.limits': the limit for minute(1.0) cannot be lower than the limit for second(2.0)",
        "field 'config.limits': the limit for year(5.0) cannot be lower than the limit for month(6.0)",
        "field 'config.limits': expected a record",
        "field 'config.redis.host': required field missing",
        "field 'config.policy': expected one of: local, redis",
    ] {
        let needle = format!("in 'plugins' entity 'response-ratelimiting': {text}");
        assert!(out.contains(&needle), "missing `{needle}` in:\n{out}");
    }
}

#[test]
fn proper_configs_validate_and_start() {
    // 01 "proper config validates" (and bis, the 'null' value of issue
    // #8314, the redis new and legacy structures).
    let yml = r#"_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - {paths: [/a], plugins: [{name: response-ratelimiting, config: {limits: {video: {second: 1}}}}]}
  - {paths: [/b], plugins: [{name: response-ratelimiting, config: {limits: {video: {second: 1, minute: 2, hour: 3, day: 4, month: 5, year: 6}}}}]}
  - {paths: [/c], plugins: [{name: response-ratelimiting, config: {limits: {video: {second: null, minute: 1}}}}]}
  - {paths: [/d], plugins: [{name: response-ratelimiting, config: {limits: {video: {second: 10}}, policy: redis, redis: {host: localhost, port: 6379, database: 0, username: test, password: testXXX, ssl: true, ssl_verify: false, timeout: 1100, server_name: redis.test}}}]}
  - {paths: [/e], plugins: [{name: response-ratelimiting, config: {limits: {video: {second: 10}}, policy: redis, redis_host: localhost, redis_port: 6379, redis_database: 0, redis_username: test, redis_password: testXXX, redis_ssl: true, redis_ssl_verify: false, redis_timeout: 1100, redis_server_name: redis.test}}]}
"#;
    let _gw = Gateway::start(yml);
}

/// 06-shorthand_fields_spec / 05 "allows to create a plugin with legacy
/// redis configuration": the legacy fields land in `config.redis` and are
/// used (the counters are in the legacy `redis_database`), and each use is
/// logged as deprecated.
#[test]
fn legacy_redis_fields_are_used() {
    let Some(redis) = RedisServer::start("legacy_redis_fields_are_used") else {
        return;
    };
    let up = MockUpstream::start();
    let yml = fill_ports(
        &format!(
            r#"_format_version: "3.0"
services:
- name: s
  url: http://{{UP0}}
  routes: [{{paths: [/]}}]
  plugins: [{{name: response-ratelimiting, config: {{limits: {{video: {{minute: 100}}}}, policy: redis, redis_host: 127.0.0.1, redis_port: {}, redis_database: 5, redis_timeout: 1100, redis_password: ""}}}}]
"#,
            redis.port
        ),
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    fresh_minute();
    let r = get(gw.port, "/response-headers?x-kong-limit=video=1", &[]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(num(&r, "X-RateLimit-Remaining-video-minute"), Some(99.0));
    assert_eq!(wait_windows(&redis, 5, 5), 5);
    assert_eq!(redis.cmd_in(0, &["DBSIZE"]).int(), 0);
    for field in ["host", "port", "database", "timeout", "password"] {
        let line = format!(
            "response-ratelimiting: config.redis_{field} is deprecated, please use config.redis.{field} instead (deprecated after 4.0)"
        );
        assert!(gw.output().contains(&line), "{line}:\n{}", gw.output());
    }
}

// ---------------------------------------------------------------------------
// this gateway's own scenarios

const ROUTE: &str = "5b2a7f10-0000-4000-8000-000000000601";
const SERVICE: &str = "5b2a7f10-0000-4000-8000-000000000501";

fn keyed_yml(upstream: u16, policy: &str) -> String {
    fill_ports(
        &format!(
            r#"_format_version: "3.0"
services:
- name: s
  id: {SERVICE}
  url: http://{{UP0}}
  routes: [{{name: r, id: {ROUTE}, paths: [/]}}]
plugins:
- {{name: response-ratelimiting, id: 5b2a7f10-0000-4000-8000-000000000701, route: r, service: s, config: {{fault_tolerant: false, {policy}, limits: {{video: {{minute: 10, hour: 20}}}}}}}}
"#
        ),
        &[upstream],
    )
}

/// The keys are Kong's (`response-ratelimit:<route>:<service>:<id>:
/// <window start>:<name>:<period>`, all six windows, `EXPIRE` with Kong's
/// `EXPIRATIONS` when created), and a Kong node counting into the same
/// keys is seen here: a mixed fleet shares one Redis.
#[test]
fn redis_keys_are_kongs_and_shared_with_kong_nodes() {
    let Some(redis) = RedisServer::start("redis_keys_are_kongs_and_shared_with_kong_nodes") else {
        return;
    };
    let up = MockUpstream::start();
    let gw = Gateway::start(&keyed_yml(up.port, &redis_policy(redis.port, 0)));
    fresh_minute();
    let r = get(gw.port, "/response-headers?x-kong-limit=video=2", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(wait_windows(&redis, 0, 5), 5);
    let keys = redis.cmd(&["KEYS", "response-ratelimit:*"]).strings();
    let now = epoch().as_secs();
    let prefix = format!("response-ratelimit:{ROUTE}:{SERVICE}:127.0.0.1:");
    let mut by_period = BTreeMap::new();
    for k in &keys {
        let rest = k.strip_prefix(&prefix).unwrap_or_else(|| panic!("{k}"));
        let mut parts = rest.split(':');
        let start: u64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(parts.next(), Some("video"), "{k}");
        let period = parts.next().unwrap().to_string();
        let ttl = redis.cmd(&["TTL", k]).int();
        if period == "second" {
            // Gone already (-2), or about to.
            assert!((-2..=1).contains(&ttl) && ttl != -1, "{k}: {ttl}");
            continue;
        }
        assert_eq!(redis.cmd(&["GET", k]), Reply::Bulk(Some("2".into())), "{k}");
        by_period.insert(period, (start, ttl));
    }
    let names: Vec<&str> = by_period.keys().map(String::as_str).collect();
    assert_eq!(names, ["day", "hour", "minute", "month", "year"]);
    // The second's counter goes with its one-second TTL.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seconds = || {
        redis
            .cmd(&["KEYS", "response-ratelimit:*:second"])
            .strings()
            .len()
    };
    while seconds() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seconds(), 0, "the second window's key expires");
    let (minute_start, minute_ttl) = by_period["minute"];
    assert_eq!(minute_start, (now - now % 60) * 1000);
    assert!((0..=60).contains(&minute_ttl), "{minute_ttl}");
    let (hour_start, hour_ttl) = by_period["hour"];
    assert_eq!(hour_start, (now - now % 3600) * 1000);
    assert!(hour_ttl > 60 && hour_ttl <= 3600, "{hour_ttl}");
    assert!(by_period["day"].1 > 3600 && by_period["day"].1 <= 86_400);
    assert!(by_period["month"].1 > 86_400 && by_period["month"].1 <= 2_592_000);
    assert!(by_period["year"].1 > 2_592_000 && by_period["year"].1 <= 31_536_000);

    // A Kong node counts 3 more into the minute and hour windows.
    for period in ["minute", "hour"] {
        let key = format!("{prefix}{}:video:{period}", by_period[period].0);
        assert_eq!(redis.cmd(&["INCRBY", &key, "3"]), Reply::Int(5));
    }
    let r = get(gw.port, "/response-headers", &[]);
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(5.0));
    assert_eq!(num(&r, "x-ratelimit-remaining-video-hour"), Some(15.0));
    assert_eq!(
        upstream_header(&r, "x-ratelimit-remaining-video"),
        Some(5.0)
    );

    // A second gateway on the same Redis and config shares the counts.
    let other = Gateway::start(&keyed_yml(up.port, &redis_policy(redis.port, 0)));
    let r = get(other.port, "/response-headers?x-kong-limit=video=5", &[]);
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(0.0));
    wait_remaining(
        gw.port,
        "/response-headers",
        "localhost",
        &[("x-ratelimit-remaining-video-minute", 0.0)],
    );
    let r = get(gw.port, "/response-headers?x-kong-limit=video=1", &[]);
    assert_eq!(r.status, 429);
}

/// Local counters live outside the config: a push that keeps the plugin
/// instance (same id) keeps them.
#[test]
fn a_config_push_keeps_local_counters() {
    let up = MockUpstream::start();
    let gw = Gateway::start(&keyed_yml(up.port, LOCAL));
    fresh_minute();
    let r = get(gw.port, "/response-headers?x-kong-limit=video=4", &[]);
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(6.0));
    wait_remaining(
        gw.port,
        "/response-headers",
        "localhost",
        &[("x-ratelimit-remaining-video-minute", 6.0)],
    );
    let pushed = keyed_yml(up.port, LOCAL).replace("paths: [/]", "paths: [/], strip_path: false");
    assert!(gw.reload_and_wait(&pushed));
    let r = get(gw.port, "/response-headers", &[]);
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), Some(6.0));
}

/// The 429 of header_filter (`kong.response.exit(429)` there): the
/// upstream's body is dropped (`Content-Length: 0`), the connection stays
/// usable, a lower-priority plugin's header_filter (response-transformer,
/// 800) and Kong's own trailing headers are not run on it, and nothing is
/// counted for it. Non-positive increments never refuse, and an upstream
/// may give back with a negative one.
#[test]
fn the_header_filter_429_ends_the_response() {
    let up = MockUpstream::start();
    let yml = fill_ports(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://{UP0}
  routes: [{paths: [/]}]
  plugins:
  - {name: response-ratelimiting, config: {limits: {video: {minute: 2}}}}
  - {name: response-transformer, config: {add: {headers: ["X-Transformed: yes"]}}}
"#,
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    fresh_minute();
    let mut conn = Conn::open(gw.port);
    let mut send = |path: &str| {
        conn.request("GET", path, &[("Host", "localhost")], b"")
            .unwrap_or_else(|| panic!("no response to {path}"))
    };
    let r = send("/response-headers?x-kong-limit=video=2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Transformed"), Some("yes"));
    assert!(r.header("Via").is_some());
    wait_remaining(
        gw.port,
        "/response-headers",
        "localhost",
        &[("x-ratelimit-remaining-video-minute", 0.0)],
    );
    // Used up: a zero or negative increment is still let through.
    let r = send("/response-headers?x-kong-limit=video=0");
    assert_eq!(r.status, 200);
    let r = send("/response-headers?x-kong-limit=video=1");
    assert_eq!(r.status, 429);
    assert_eq!(r.reason, "Too Many Requests");
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert_eq!(r.body_str(), "");
    assert_eq!(r.header("x-kong-limit"), None);
    assert_eq!(r.header("X-Transformed"), None);
    assert_eq!(r.header("Via"), None);
    assert_eq!(r.header("X-Kong-Proxy-Latency"), None);
    assert_eq!(r.header("Server"), Some("mock-upstream/1.0.0"));
    assert_eq!(num(&r, "X-RateLimit-Remaining-video-minute"), Some(0.0));
    // Same connection: the dropped body left nothing behind.
    let r = send("/response-headers?x-kong-limit=video=-1");
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.header("X-Transformed"), Some("yes"));
    wait_remaining(
        gw.port,
        "/response-headers",
        "localhost",
        &[("x-ratelimit-remaining-video-minute", 1.0)],
    );
}

/// `block_on_first_violation` refuses in access only when a window has
/// exactly nothing left (`lv.remaining == 0`): an overdrawn limit (an
/// upstream counted more than was left) is let through to the upstream,
/// which is told the negative remainder, and only a response that uses it
/// again is refused, without a body, in header_filter.
#[test]
fn block_on_first_violation_refuses_only_at_exactly_zero() {
    let up = MockUpstream::start();
    let yml = fill_ports(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://{UP0}
  routes: [{paths: [/]}]
  plugins:
  - {name: response-ratelimiting, config: {block_on_first_violation: true, limits: {video: {minute: 2}}}}
"#,
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    fresh_minute();
    let r = get(gw.port, "/response-headers?x-kong-limit=video=3", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "X-RateLimit-Remaining-video-minute"), Some(0.0));
    let r = wait_remaining(
        gw.port,
        "/get",
        "localhost",
        &[("x-ratelimit-remaining-video-minute", 0.0)],
    );
    let overdrawn = || {
        let r = get(gw.port, "/get", &[]);
        assert_eq!(r.status, 200, "{}", r.body_str());
        upstream_header(&r, "x-ratelimit-remaining-video")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while overdrawn() != Some(-1.0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(overdrawn(), Some(-1.0), "{:?}", r.headers);
    let r = get(gw.port, "/response-headers?x-kong-limit=video=1", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.body_str(), "");
    // Given back down to exactly 0 left: now access refuses.
    let r = get(gw.port, "/response-headers?x-kong-limit=video=-1", &[]);
    assert_eq!(r.status, 200);
    let r = wait_status(gw.port, "/get", "localhost", &[], 429);
    assert_eq!(r.json()["message"], "API rate limit exceeded for 'video'");
}

/// The same with a chunked upstream body: the 429 goes out with
/// `Content-Length: 0` and nothing of the chunks, and the connection
/// carries on.
#[test]
fn a_chunked_upstream_body_is_dropped_too() {
    let up = gw_tests::gateway::Recorder::start_with_headers(&[
        ("Transfer-Encoding", "chunked"),
        ("X-Kong-Limit", "video=1"),
    ]);
    let yml = fill_ports(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://{UP0}
  routes: [{paths: [/]}]
  plugins:
  - {name: response-ratelimiting, config: {limits: {video: {hour: 1}}}}
"#,
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    fresh_minute();
    let mut conn = Conn::open(gw.port);
    let r = conn
        .request("GET", "/", &[("Host", "localhost")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
    assert_eq!(r.header("X-Kong-Limit"), None);
    // Every answer of this upstream uses one: wait for the refusals.
    wait_status(gw.port, "/", "localhost", &[], 429);
    for _ in 0..2 {
        let r = conn
            .request("GET", "/", &[("Host", "localhost")], b"")
            .unwrap();
        assert_eq!(r.status, 429, "{:?}", r.headers);
        assert_eq!(r.header("Content-Length"), Some("0"));
        assert_eq!(r.header("Transfer-Encoding"), None);
        assert_eq!(r.body_str(), "");
    }
}
