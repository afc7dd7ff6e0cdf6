//! Port of Kong's `spec/03-plugins/31-proxy-cache/` (DB-less, memory
//! strategy): `02-access_spec.lua` against a mock upstream playing Kong's
//! mock_upstream endpoints (`/cache/<n>`, `/response-headers`, `/xml`,
//! `/status/<n>`, `/stream/<n>`), one gateway for the spec's `describe`
//! (its cases share the cache, in order, as they do in Kong), each Kong
//! `it(...)` a named case. `01-schema_spec.lua` and `05-cache_key_spec.lua`
//! are ported beside the code (gateway/src/plugins/proxy_cache.rs); the
//! schema's shared-dict check is also run through the loader here.
//! `03-api_spec.lua` (Admin API) and `04-invalidations_spec.lua` (purges
//! through the Admin API and cluster events) do not apply to a DB-less
//! data plane.
//!
//! Beyond Kong's spec: what a hit replays (headers Kong strips or
//! recomputes, Kong's proxied headers), entries surviving a config push,
//! the dictionary's byte bound, and TTL expiry with short TTLs (bounded
//! polling, no wall-clock assertions).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gw_tests::gateway::{fill_ports, Cases, Gateway};
use gw_tests::{request, Response};
use serde_json::json;

// ---------------------------------------------------------------------------
// A mock upstream with the endpoints Kong's spec uses.

/// Answers every request on a fresh thread and closes the connection.
/// Every body carries `n`, the upstream's request count, so a hit shows
/// the body of the request that filled the cache.
struct Mock {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Mock {
    fn start() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let h = h.clone();
                thread::spawn(move || serve(stream, &h));
            }
        });
        Mock { port, hits, stop }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Query component decoding (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for `secs` since the
/// epoch.
fn http_date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil_from_days (H. Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn serve(stream: TcpStream, hits: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let json_body = |extra: serde_json::Value| {
        let mut v = json!({"n": n, "method": method, "url": target});
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        v.to_string().into_bytes()
    };
    let mut status = 200u16;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut chunks: Option<Vec<Vec<u8>>> = None;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp_body: Vec<u8> = match segs.as_slice() {
        ["cache", secs] => {
            headers.push(("Content-Type".into(), "application/json".into()));
            headers.push(("Cache-Control".into(), format!("public, max-age={secs}")));
            json_body(json!({}))
        }
        ["xml"] => {
            headers.push(("Content-Type".into(), "application/xml".into()));
            format!("<?xml version='1.0' encoding='us-ascii'?>\n<slideshow n=\"{n}\"/>\n")
                .into_bytes()
        }
        ["response-headers"] => {
            let mut ct = "application/json".to_string();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let (k, v) = (decode(k), decode(v));
                if k.eq_ignore_ascii_case("content-type") {
                    ct = v;
                } else {
                    headers.push((k, v));
                }
            }
            headers.push(("Content-Type".into(), ct));
            json_body(json!({}))
        }
        ["status", code] => {
            status = code.parse().unwrap_or(500);
            headers.push(("Content-Type".into(), "application/json".into()));
            json_body(json!({}))
        }
        ["stream", count] => {
            headers.push(("Content-Type".into(), "application/json".into()));
            let count: usize = count.parse().unwrap_or(1);
            chunks = Some(
                (0..count)
                    .map(|i| {
                        let mut l = json_body(json!({"id": i}));
                        l.push(b'\n');
                        l
                    })
                    .collect(),
            );
            Vec::new()
        }
        ["bytes", size] => {
            headers.push(("Content-Type".into(), "application/octet-stream".into()));
            let size: usize = size.parse().unwrap_or(0);
            let mut b = format!("{n:08}").into_bytes();
            b.resize(size.max(8), b'x');
            b
        }
        ["replay"] => {
            // What a hit must not replay as is.
            headers.push(("Content-Type".into(), "text/plain".into()));
            headers.push(("Set-Cookie".into(), "a=1".into()));
            headers.push(("Set-Cookie".into(), "b=2".into()));
            headers.push(("X-RateLimit-Remaining-Minute".into(), "4".into()));
            headers.push(("X-RateLimit-Limit-Minute".into(), "5".into()));
            headers.push(("Age".into(), "100".into()));
            headers.push(("Server".into(), "mock-upstream".into()));
            headers.push(("Via".into(), "1.1 mock".into()));
            headers.push(("Proxy-Authenticate".into(), "Basic".into()));
            format!("replayed {n}").into_bytes()
        }
        ["empty"] => {
            headers.push(("Content-Type".into(), "text/plain".into()));
            Vec::new()
        }
        ["get"] | ["post"] | ["anything", ..] => {
            headers.push(("Content-Type".into(), "application/json".into()));
            json_body(json!({"body": String::from_utf8_lossy(&body)}))
        }
        _ => {
            status = 404;
            headers.push(("Content-Type".into(), "application/json".into()));
            json_body(json!({"message": "not found"}))
        }
    };
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n").into_bytes();
    for (k, v) in &headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let head = method == "HEAD";
    let mut stream = stream;
    match chunks {
        Some(chunks) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let _ = stream.write_all(&out);
            if !head {
                for c in chunks {
                    let _ = stream.write_all(format!("{:x}\r\n", c.len()).as_bytes());
                    let _ = stream.write_all(&c);
                    let _ = stream.write_all(b"\r\n");
                    let _ = stream.flush();
                    thread::sleep(Duration::from_millis(5));
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            }
        }
        None => {
            out.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n", resp_body.len()).as_bytes(),
            );
            if !head {
                out.extend_from_slice(&resp_body);
            }
            let _ = stream.write_all(&out);
        }
    }
    let _ = stream.flush();
}

// ---------------------------------------------------------------------------
// helpers

fn send(gw: &Gateway, method: &str, path: &str, host: &str, extra: &[(&str, &str)]) -> Response {
    let mut h = vec![("Host", host)];
    h.extend_from_slice(extra);
    let body: &[u8] = if method == "POST" {
        b"{\"foo\":\"bar\"}"
    } else {
        b""
    };
    if method == "POST" {
        h.push(("Content-Type", "application/json"));
    }
    request(gw.port, method, path, &h, body)
}

fn get(gw: &Gateway, path: &str, host: &str) -> Response {
    send(gw, "GET", path, host, &[])
}

fn status_of(r: &Response) -> &str {
    r.header("X-Cache-Status").unwrap_or("<none>")
}

fn assert_cache(r: &Response, status: u16, cache: &str) {
    assert_eq!(r.status, status, "status; body: {}", r.body_str());
    assert_eq!(
        status_of(r),
        cache,
        "X-Cache-Status; headers: {:?}",
        r.headers
    );
}

fn is_key(k: Option<&str>) -> bool {
    k.is_some_and(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Sends until `X-Cache-Status` is `want` (at most `limit`), allowing only
/// `meanwhile` before that. Returns the final response.
fn poll_until(
    limit: Duration,
    want: &str,
    meanwhile: &[&str],
    mut send: impl FnMut() -> Response,
) -> Response {
    let deadline = Instant::now() + limit;
    loop {
        let r = send();
        let got = status_of(&r).to_string();
        if got == want {
            return r;
        }
        assert!(
            meanwhile.contains(&got.as_str()),
            "X-Cache-Status {got} while waiting for {want}"
        );
        assert!(Instant::now() < deadline, "no {want} within {limit:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

const POLL: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// 02-access_spec.lua

/// The spec's routes and plugins (`policy_config = { dictionary_name =
/// "kong" }`). Fixed ids: cache keys hold the route and consumer ids.
fn access_config(up: u16) -> String {
    let mut y = String::from(
        r#"_format_version: "3.0"
consumers:
- username: bob
  id: 11111111-1111-4111-8111-000000000001
  keyauth_credentials: [{key: bob}]
- username: alice
  id: 11111111-1111-4111-8111-000000000002
  keyauth_credentials: [{key: alice}]
plugins:
- name: proxy-cache
  config: {strategy: memory, content_type: [text/plain, application/json], memory: {dictionary_name: kong}}
services:
- name: mock
  url: http://{UP0}
  routes:
"#,
    );
    let pc = |extra: &str| {
        format!(
            "{{name: proxy-cache, config: {{strategy: memory, memory: {{dictionary_name: kong}}, content_type: [text/plain, application/json]{extra}}}}}"
        )
    };
    let routes: Vec<(usize, Vec<String>)> = vec![
        (1, vec![pc("")]),
        (2, vec![pc("")]),
        (3, vec![]),
        (4, vec![]),
        (5, vec![pc(""), "{name: key-auth}".into()]),
        (6, vec![pc(", cache_ttl: 2")]),
        (7, vec![pc(", cache_control: true")]),
        (8, vec![pc(", cache_control: true, storage_ttl: 600")]),
        (9, vec![pc(", cache_ttl: 2, storage_ttl: 60")]),
        (
            10,
            vec![pc("").replace(
                "content_type: [text/plain, application/json]",
                "content_type: [\"text/html; charset=utf-8\", application/json], response_code: [200, 417], request_method: [GET, HEAD, POST]",
            )],
        ),
        (
            11,
            vec![pc(", response_code: [200], request_method: [GET, HEAD, POST], vary_headers: [foo]")],
        ),
        (
            12,
            vec![pc(", response_code: [200], request_method: [GET, HEAD, POST], vary_query_params: [foo]")],
        ),
        (13, vec!["{name: key-auth}".into()]),
        (14, vec!["{name: key-auth}".into()]),
        (15, vec!["{name: key-auth}".into()]),
        (16, vec!["{name: key-auth}".into()]),
        (17, vec![pc("").replace("[text/plain, application/json]", "[\"*/*\"]")]),
        (
            18,
            vec![pc("").replace("[text/plain, application/json]", "[\"application/xml; charset=UTF-8\"]")],
        ),
        (
            19,
            vec![pc("").replace("[text/plain, application/json]", "[\"application/xml;\"]")],
        ),
        (20, vec![pc(", response_code: [404], ignore_uri_case: true")]),
        (21, vec![pc(", response_code: [404], ignore_uri_case: false")]),
        (
            22,
            vec![pc(", response_headers: {age: false, X-Cache-Status: false, X-Cache-Key: false}")],
        ),
        (
            23,
            vec![pc(", response_headers: {age: true, X-Cache-Status: true, X-Cache-Key: true}")],
        ),
        (24, vec![pc("")]),
    ];
    for (i, plugins) in routes {
        y.push_str(&format!(
            "  - id: 22222222-2222-4222-8222-{i:012}\n    hosts: [route-{i}.test]\n    plugins: [{}]\n",
            plugins.join(", ")
        ));
    }
    fill_ports(&y, &[up])
}

#[test]
fn proxy_cache_access_with_policy_memory() {
    let up = Mock::start();
    let gw = Gateway::start(&access_config(up.port));
    let mut t = Cases::new();

    t.it("caches a simple request", || {
        let r1 = get(&gw, "/get", "route-1.test");
        assert_cache(&r1, 200, "Miss");
        let k1 = r1.header("X-Cache-Key");
        assert!(is_key(k1), "{k1:?}");
        let before = up.hits();
        let r2 = get(&gw, "/get", "route-1.test");
        assert_cache(&r2, 200, "Hit");
        assert_eq!(r2.header("X-Cache-Key"), k1);
        assert_eq!(r1.body, r2.body, "identical bodies");
        assert_eq!(up.hits(), before, "the hit did not reach the upstream");
    });

    t.it(
        "No X-Cache* neither age headers on the response without debug header in the query",
        || {
            let r = get(&gw, "/get", "route-22.test");
            assert_eq!(r.status, 200);
            assert!(r.header("X-Cache-Status").is_none());
            let r = get(&gw, "/get", "route-22.test");
            assert_eq!(r.status, 200);
            assert!(r.header("X-Cache-Status").is_none());
            assert!(r.header("X-Cache-Key").is_none());
            assert!(r.header("Age").is_none());
            let r = send(&gw, "GET", "/get", "route-22.test", &[("kong-debug", "1")]);
            assert_cache(&r, 200, "Hit");
            assert!(r.header("Age").is_some());
            assert!(is_key(r.header("X-Cache-Key")));
        },
    );

    t.it(
        "response_headers headers on the response when configured",
        || {
            let r = get(&gw, "/get", "route-23.test");
            assert_cache(&r, 200, "Miss");
            assert!(r.header("X-Cache-Key").is_some());
            assert!(r.header("Age").is_none());
            let r = get(&gw, "/get", "route-23.test");
            assert_cache(&r, 200, "Hit");
            assert!(r.header("Age").is_some());
            assert!(r.header("X-Cache-Key").is_some());
        },
    );

    t.it(
        "response_headers headers on the response when set to default",
        || {
            let r = get(&gw, "/get", "route-24.test");
            assert_cache(&r, 200, "Miss");
            assert!(r.header("X-Cache-Key").is_some());
            assert!(r.header("Age").is_none());
            let r = get(&gw, "/get", "route-24.test");
            assert_cache(&r, 200, "Hit");
            assert!(r.header("Age").is_some());
            assert!(r.header("X-Cache-Key").is_some());
        },
    );

    t.it(
        "public not present in Cache-Control, but max-age is",
        || {
            let r = get(
                &gw,
                "/response-headers?Cache-Control=max-age%3D604800",
                "route-7.test",
            );
            assert_cache(&r, 200, "Miss");
        },
    );

    t.it("Cache-Control contains s-maxage only", || {
        let r = get(
            &gw,
            "/response-headers?Cache-Control=s-maxage%3D604800",
            "route-7.test",
        );
        assert_cache(&r, 200, "Miss");
    });

    t.it("Expires present, Cache-Control absent", || {
        let date = http_date(unix_now() + 5000);
        let q = format!(
            "/response-headers?Expires={}",
            date.replace(' ', "%20").replace(',', "%2C")
        );
        let r = get(&gw, &q, "route-7.test");
        assert_cache(&r, 200, "Miss");
    });

    t.it("respects cache-control: only-if-cached", || {
        let r = send(
            &gw,
            "GET",
            "/get?not=here",
            "route-8.test",
            &[("Cache-Control", "only-if-cached")],
        );
        assert_eq!(r.status, 504);
        assert!(r.body.is_empty(), "{}", r.body_str());
        // the key was set before the lookup, the status was not
        assert!(is_key(r.header("X-Cache-Key")));
        assert!(r.header("X-Cache-Status").is_none());
    });

    t.it("caches a streaming request", || {
        let r1 = get(&gw, "/stream/3", "route-1.test");
        assert_cache(&r1, 200, "Miss");
        assert!(r1.header("Content-Length").is_none(), "{:?}", r1.headers);
        assert_eq!(r1.body_str().lines().count(), 3);
        let r2 = get(&gw, "/stream/3", "route-1.test");
        assert_cache(&r2, 200, "Hit");
        assert_eq!(r1.body, r2.body);
    });

    t.it(
        "uses a separate cache key for the same consumer between routes",
        || {
            let r1 = send(&gw, "GET", "/get", "route-13.test", &[("apikey", "bob")]);
            assert_eq!(r1.status, 200);
            let r2 = send(&gw, "GET", "/get", "route-14.test", &[("apikey", "bob")]);
            assert_eq!(r2.status, 200);
            assert!(is_key(r1.header("X-Cache-Key")));
            assert_ne!(r1.header("X-Cache-Key"), r2.header("X-Cache-Key"));
        },
    );

    t.it(
        "uses a separate cache key for the same consumer between routes/services",
        || {
            let r1 = send(&gw, "GET", "/get", "route-15.test", &[("apikey", "bob")]);
            assert_eq!(r1.status, 200);
            let r2 = send(&gw, "GET", "/get", "route-16.test", &[("apikey", "bob")]);
            assert_eq!(r2.status, 200);
            assert!(is_key(r1.header("X-Cache-Key")));
            assert_ne!(r1.header("X-Cache-Key"), r2.header("X-Cache-Key"));
        },
    );

    t.it(
        "uses an separate cache key between routes-specific and a global plugin",
        || {
            let r1 = get(&gw, "/get", "route-3.test");
            assert_cache(&r1, 200, "Miss");
            assert!(is_key(r1.header("X-Cache-Key")));
            let r2 = get(&gw, "/get", "route-4.test");
            assert_cache(&r2, 200, "Miss");
            assert_ne!(r1.header("X-Cache-Key"), r2.header("X-Cache-Key"));
        },
    );

    t.it("differentiates caches between instances", || {
        let r1 = get(&gw, "/get", "route-2.test");
        assert_cache(&r1, 200, "Miss");
        assert!(is_key(r1.header("X-Cache-Key")));
        let r2 = get(&gw, "/get", "route-2.test");
        assert_cache(&r2, 200, "Hit");
        assert_eq!(r1.header("X-Cache-Key"), r2.header("X-Cache-Key"));
    });

    t.it("uses request params as part of the cache key", || {
        assert_cache(&get(&gw, "/get?a=b&b=c", "route-1.test"), 200, "Miss");
        assert_cache(&get(&gw, "/get?a=c", "route-1.test"), 200, "Miss");
        assert_cache(&get(&gw, "/get?b=c&a=b", "route-1.test"), 200, "Hit");
        assert_cache(&get(&gw, "/get?a&b", "route-1.test"), 200, "Miss");
        assert_cache(&get(&gw, "/get?a&b", "route-1.test"), 200, "Hit");
    });

    t.it("can focus only in a subset of the query arguments", || {
        assert_cache(&get(&gw, "/get?foo=b&b=c", "route-12.test"), 200, "Miss");
        assert_cache(&get(&gw, "/get?b=d&foo=b", "route-12.test"), 200, "Hit");
    });

    t.it("uses headers if instructed to do so", || {
        let r = send(&gw, "GET", "/get", "route-11.test", &[("foo", "bar")]);
        assert_cache(&r, 200, "Miss");
        let r = send(&gw, "GET", "/get", "route-11.test", &[("foo", "bar")]);
        assert_cache(&r, 200, "Hit");
        let r = send(&gw, "GET", "/get", "route-11.test", &[("foo", "baz")]);
        assert_cache(&r, 200, "Miss");
    });

    t.it(
        "handles authenticated routes by ignoring cache if the request is unauthenticated",
        || {
            let r = get(&gw, "/get", "route-5.test");
            assert_eq!(r.status, 401);
            assert!(r.header("X-Cache-Status").is_none());
        },
    );

    t.it(
        "handles authenticated routes by maintaining a separate cache per consumer",
        || {
            for who in ["bob", "alice"] {
                let r = send(&gw, "GET", "/get", "route-5.test", &[("apikey", who)]);
                assert_cache(&r, 200, "Miss");
                let r = send(&gw, "GET", "/get", "route-5.test", &[("apikey", who)]);
                assert_cache(&r, 200, "Hit");
            }
        },
    );

    t.it(
        "bypasses cache for uncacheable requests: request method",
        || {
            let r = send(&gw, "POST", "/post", "route-1.test", &[]);
            assert_cache(&r, 200, "Bypass");
            assert!(r.header("X-Cache-Key").is_none());
        },
    );

    t.it(
        "bypasses cache for uncacheable responses: response status",
        || {
            let r = get(&gw, "/status/418", "route-1.test");
            assert_cache(&r, 418, "Bypass");
        },
    );

    t.it(
        "bypasses cache for uncacheable responses: response content type",
        || {
            let r = get(&gw, "/xml", "route-1.test");
            assert_cache(&r, 200, "Bypass");
        },
    );

    t.it("caches non-default request methods", || {
        let r = send(&gw, "POST", "/post", "route-10.test", &[]);
        assert_cache(&r, 200, "Miss");
        let r = send(&gw, "POST", "/post", "route-10.test", &[]);
        assert_cache(&r, 200, "Hit");
    });

    t.it("caches non-default response status", || {
        assert_cache(&get(&gw, "/status/417", "route-10.test"), 417, "Miss");
        assert_cache(&get(&gw, "/status/417", "route-10.test"), 417, "Hit");
    });

    t.it("displays Kong core headers: X-Kong-Proxy-Latency", || {
        for want in ["Miss", "Hit"] {
            let r = get(&gw, "/get?show-me=proxy-latency", "route-1.test");
            assert_cache(&r, 200, want);
            let v = r.header("X-Kong-Proxy-Latency").unwrap_or("");
            assert!(
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                "{v:?}"
            );
        }
    });

    t.it(
        "displays Kong core headers: X-Kong-Upstream-Latency",
        || {
            for want in ["Miss", "Hit"] {
                let r = get(&gw, "/get?show-me=upstream-latency", "route-1.test");
                assert_cache(&r, 200, want);
                let v = r.header("X-Kong-Upstream-Latency").unwrap_or("");
                assert!(
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                    "{v:?}"
                );
            }
        },
    );

    t.it(
        "should cache a request with wildcard content_type(*/*)",
        || {
            for want in ["Miss", "Hit"] {
                let r = get(&gw, "/xml", "route-17.test");
                assert_cache(&r, 200, want);
                assert_eq!(r.header("Content-Type"), Some("application/xml"));
            }
        },
    );

    t.it(
        "should not cache a request while parameter is not match",
        || {
            let r = get(&gw, "/xml", "route-18.test");
            assert_cache(&r, 200, "Bypass");
            assert_eq!(r.header("Content-Type"), Some("application/xml"));
        },
    );

    t.it(
        "should not cause error while upstream returns a invalid content type",
        || {
            let r = get(
                &gw,
                "/response-headers?Content-Type=application/xml;",
                "route-18.test",
            );
            assert_cache(&r, 200, "Bypass");
            assert_eq!(r.header("Content-Type"), Some("application/xml;"));
        },
    );

    t.it(
        "should not cause error while config.content_type has invalid element",
        || {
            let r = get(&gw, "/xml", "route-19.test");
            assert_cache(&r, 200, "Bypass");
            assert_eq!(r.header("Content-Type"), Some("application/xml"));
        },
    );

    t.it("ignore uri case in cache_key", || {
        let r1 = get(&gw, "/ignore-case/kong", "route-20.test");
        assert_cache(&r1, 404, "Miss");
        assert!(is_key(r1.header("X-Cache-Key")));
        let r2 = get(&gw, "/ignore-case/KONG", "route-20.test");
        assert_cache(&r2, 404, "Hit");
        assert_eq!(r1.header("X-Cache-Key"), r2.header("X-Cache-Key"));
        assert_eq!(r1.body, r2.body);
    });

    t.it("acknowledge uri case in cache_key", || {
        let r1 = get(&gw, "/acknowledge-case/kong", "route-21.test");
        assert_cache(&r1, 404, "Miss");
        assert!(is_key(r1.header("X-Cache-Key")));
        let r2 = get(&gw, "/acknowledge-case/KONG", "route-21.test");
        assert_cache(&r2, 404, "Miss");
        assert_ne!(r1.header("X-Cache-Key"), r2.header("X-Cache-Key"));
    });

    t.finish();
}

/// The spec's TTL cases (`ngx.sleep` replaced by bounded polling), on
/// their own gateway so they run beside the others.
#[test]
fn proxy_cache_access_ttls() {
    let up = Mock::start();
    let gw = Gateway::start(&access_config(up.port));
    let mut t = Cases::new();

    t.it("respects cache ttl", || {
        assert_cache(&get(&gw, "/get", "route-6.test"), 200, "Miss");
        assert_cache(&get(&gw, "/get", "route-6.test"), 200, "Hit");
        // Expired from the dict after cache_ttl (2 s); a whole-second clock
        // may call it stale (Refresh) just before.
        poll_until(POLL, "Miss", &["Hit", "Refresh"], || {
            get(&gw, "/get", "route-6.test")
        });
        assert_cache(&get(&gw, "/get", "route-6.test"), 200, "Hit");

        // kept in memory for longer than its ttl (storage_ttl 60)
        assert_cache(&get(&gw, "/get", "route-9.test"), 200, "Miss");
        assert_cache(&get(&gw, "/get", "route-9.test"), 200, "Hit");
        poll_until(POLL, "Refresh", &["Hit"], || {
            get(&gw, "/get", "route-9.test")
        });
        assert_cache(&get(&gw, "/get", "route-9.test"), 200, "Hit");
    });

    t.it("respects cache ttl via cache control", || {
        assert_cache(&get(&gw, "/cache/2", "route-7.test"), 200, "Miss");
        assert_cache(&get(&gw, "/cache/2", "route-7.test"), 200, "Hit");
        poll_until(POLL, "Miss", &["Hit"], || {
            get(&gw, "/cache/2", "route-7.test")
        });
        assert_cache(&get(&gw, "/cache/2", "route-7.test"), 200, "Hit");
        // max-age=0 never results in caching
        assert_cache(&get(&gw, "/cache/0", "route-7.test"), 200, "Bypass");
        assert_cache(&get(&gw, "/cache/0", "route-7.test"), 200, "Bypass");
    });

    t.it("respects cache-control: min-fresh", || {
        // Kong's case reuses the entry the previous case left, which may
        // just be expiring: a key of its own.
        assert_cache(&get(&gw, "/cache/2?min-fresh", "route-7.test"), 200, "Miss");
        let r = send(
            &gw,
            "GET",
            "/cache/2?min-fresh",
            "route-7.test",
            &[("Cache-Control", "min-fresh=30")],
        );
        assert_cache(&r, 200, "Refresh");
    });

    t.it("respects cache-control: max-age", || {
        let cc = [("Cache-Control", "max-age=2")];
        assert_cache(
            &send(&gw, "GET", "/cache/10", "route-7.test", &cc),
            200,
            "Miss",
        );
        assert_cache(
            &send(&gw, "GET", "/cache/10", "route-7.test", &cc),
            200,
            "Hit",
        );
        poll_until(POLL, "Refresh", &["Hit"], || {
            send(&gw, "GET", "/cache/10", "route-7.test", &cc)
        });
    });

    t.it("respects cache-control: max-stale", || {
        assert_cache(&get(&gw, "/cache/2", "route-8.test"), 200, "Miss");
        assert_cache(&get(&gw, "/cache/2", "route-8.test"), 200, "Hit");
        poll_until(POLL, "Refresh", &["Hit"], || {
            send(
                &gw,
                "GET",
                "/cache/2",
                "route-8.test",
                &[("Cache-Control", "max-stale=1")],
            )
        });
    });

    t.finish();
}

// ---------------------------------------------------------------------------
// Beyond Kong's spec

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const ROUTE_1: &str = "22222222-2222-4222-8222-000000000001";

#[test]
fn proxy_cache_handler_details() {
    let up = Mock::start();
    let gw = Gateway::start(&access_config(up.port));
    let mut t = Cases::new();

    t.it("X-Cache-Key is Kong's sha256 of prefix, method, request line, params, headers", || {
        let r = get(&gw, "/anything/key", "route-1.test");
        let want = sha256_hex(&format!("{ROUTE_1}|GET|GET /anything/key HTTP/1.1||"));
        assert_eq!(r.header("X-Cache-Key"), Some(want.as_str()));
        // With a query the request line is cut at `?`, version included.
        let r = get(&gw, "/anything/key?b=2&a&a=", "route-1.test");
        assert_eq!(status_of(&r), "<none>", "a flag and a value for `a` cannot be sorted");
        let r = get(&gw, "/anything/key?b=2&a=", "route-1.test");
        let want = sha256_hex(&format!("{ROUTE_1}|GET|GET /anything/key|a=:b=2|"));
        assert_eq!(r.header("X-Cache-Key"), Some(want.as_str()));
        // A consumer comes first in the prefix.
        let r = send(&gw, "GET", "/anything/key", "route-5.test", &[("apikey", "bob")]);
        let want = sha256_hex(
            "11111111-1111-4111-8111-000000000001:22222222-2222-4222-8222-000000000005|GET|GET /anything/key HTTP/1.1||",
        );
        assert_eq!(r.header("X-Cache-Key"), Some(want.as_str()));
        // vary_headers: the configured name, the request's value.
        let r = send(&gw, "GET", "/anything/key", "route-11.test", &[("Foo", "bar")]);
        let want = sha256_hex(
            "22222222-2222-4222-8222-000000000011|GET|GET /anything/key HTTP/1.1||foo=bar",
        );
        assert_eq!(r.header("X-Cache-Key"), Some(want.as_str()));
    });

    t.it(
        "a repeated query flag is a Lua error in Kong's key builder: 500",
        || {
            let r = get(&gw, "/anything/err?a&a=1", "route-1.test");
            assert_eq!(r.status, 500);
            assert!(
                r.body_str().contains("An unexpected error occurred"),
                "{}",
                r.body_str()
            );
            assert!(r.header("X-Cache-Status").is_none());
        },
    );

    t.it("a hit replays the stored headers as Kong does", || {
        let miss = get(&gw, "/replay", "route-1.test");
        assert_cache(&miss, 200, "Miss");
        assert_eq!(miss.header("Via"), Some("1.1 mock, 1.1 kong/3.10.0"));
        assert_eq!(miss.header("Age"), Some("100"));
        let hit = get(&gw, "/replay", "route-1.test");
        assert_cache(&hit, 200, "Hit");
        assert_eq!(hit.body, miss.body);
        assert_eq!(hit.header_all("Set-Cookie"), vec!["a=1", "b=2"]);
        assert_eq!(hit.header("Content-Type"), Some("text/plain"));
        assert_eq!(
            hit.header("Content-Length"),
            Some(miss.body.len().to_string().as_str())
        );
        // hop-by-hop and rate-limit counters are not replayed
        assert!(
            hit.header("Proxy-Authenticate").is_none(),
            "{:?}",
            hit.headers
        );
        assert!(hit.header("X-RateLimit-Remaining-Minute").is_none());
        assert_eq!(hit.header("X-RateLimit-Limit-Minute"), Some("5"));
        // Age is the entry's, a fresh Via; the upstream's Server stays
        assert_eq!(hit.header_all("Age").len(), 1);
        let age: u64 = hit.header("Age").unwrap().parse().unwrap();
        assert!(age < 60, "{age}");
        assert_eq!(hit.header("Via"), Some("1.1 kong/3.10.0"));
        assert_eq!(hit.header("Server"), Some("mock-upstream"));
        // answered as proxied (KONG_PROXIED): no X-Kong-Response-Latency
        assert!(hit.header("X-Kong-Response-Latency").is_none());
        assert!(hit.header("X-Kong-Upstream-Latency").is_some());
        assert!(hit.header("X-Kong-Request-Id").is_some());
        assert_eq!(hit.header_all("X-Cache-Status"), vec!["Hit"]);
        assert_eq!(hit.header_all("X-Cache-Key").len(), 1);
    });

    t.it(
        "HEAD answers are never stored (nginx runs no body filter for them)",
        || {
            let r = send(&gw, "HEAD", "/anything/head", "route-1.test", &[]);
            assert_cache(&r, 200, "Miss");
            let r = send(&gw, "HEAD", "/anything/head", "route-1.test", &[]);
            assert_cache(&r, 200, "Miss");
            // and GET has its own key
            assert_cache(&get(&gw, "/anything/head", "route-1.test"), 200, "Miss");
            assert_cache(&get(&gw, "/anything/head", "route-1.test"), 200, "Hit");
        },
    );

    t.it("an empty body is stored", || {
        assert_cache(&get(&gw, "/empty", "route-1.test"), 200, "Miss");
        let r = get(&gw, "/empty", "route-1.test");
        assert_cache(&r, 200, "Hit");
        assert!(r.body.is_empty());
        assert_eq!(r.header("Content-Length"), Some("0"));
    });

    t.it(
        "without cache_control, Cache-Control is ignored both ways",
        || {
            let p = "/response-headers?Cache-Control=no-store%2C%20private";
            assert_cache(&get(&gw, p, "route-1.test"), 200, "Miss");
            let r = send(
                &gw,
                "GET",
                p,
                "route-1.test",
                &[("Cache-Control", "no-cache")],
            );
            assert_cache(&r, 200, "Hit");
        },
    );

    t.it(
        "with cache_control, request no-cache / no-store bypass",
        || {
            for cc in ["no-cache", "No-Store", "max-age=5, no-cache"] {
                let r = send(
                    &gw,
                    "GET",
                    "/cache/30",
                    "route-7.test",
                    &[("Cache-Control", cc)],
                );
                assert_cache(&r, 200, "Bypass");
                assert!(r.header("X-Cache-Key").is_none());
            }
        },
    );

    t.it(
        "with cache_control, an Authorization header does not bypass",
        || {
            // Kong tests `ngx.var.authorization`, a variable nginx lacks.
            let auth = [("Authorization", "Basic Ym9iOmtvbmc=")];
            assert_cache(
                &send(&gw, "GET", "/cache/30", "route-8.test", &auth),
                200,
                "Miss",
            );
            assert_cache(
                &send(&gw, "GET", "/cache/30", "route-8.test", &auth),
                200,
                "Hit",
            );
        },
    );

    t.it(
        "with cache_control, private / no-store / no-cache responses bypass",
        || {
            for cc in [
                "private%2C%20max-age%3D60",
                "no-store",
                "no-cache%2C%20max-age%3D60",
                "public",
            ] {
                let p = format!("/response-headers?Cache-Control={cc}");
                assert_cache(&get(&gw, &p, "route-7.test"), 200, "Bypass");
            }
            // an Expires in the past gives no TTL
            let p = format!(
                "/response-headers?Expires={}",
                http_date(unix_now() - 60)
                    .replace(' ', "%20")
                    .replace(',', "%2C")
            );
            assert_cache(&get(&gw, &p, "route-7.test"), 200, "Bypass");
        },
    );

    t.it(
        "only-if-cached is served from the cache when it can be",
        || {
            assert_cache(&get(&gw, "/cache/60", "route-8.test"), 200, "Miss");
            let r = send(
                &gw,
                "GET",
                "/cache/60",
                "route-8.test",
                &[("Cache-Control", "only-if-cached")],
            );
            assert_cache(&r, 200, "Hit");
        },
    );

    t.it(
        "a non-number request directive against a stored entry is a Lua error: 500",
        || {
            assert_cache(&get(&gw, "/cache/61", "route-8.test"), 200, "Miss");
            let r = send(
                &gw,
                "GET",
                "/cache/61",
                "route-8.test",
                &[("Cache-Control", "max-stale")],
            );
            assert_eq!(r.status, 500, "{}", r.body_str());
            // X-Cache-Key was set before the comparison
            assert!(is_key(r.header("X-Cache-Key")));
            let r = send(
                &gw,
                "GET",
                "/cache/61",
                "route-8.test",
                &[("Cache-Control", "max-stale=100")],
            );
            assert_cache(&r, 200, "Hit");
        },
    );

    t.it(
        "Kong-Debug shows the headers the config switches off",
        || {
            let r = send(
                &gw,
                "GET",
                "/anything/debug",
                "route-22.test",
                &[("Kong-Debug", "1")],
            );
            assert_cache(&r, 200, "Miss");
            assert!(is_key(r.header("X-Cache-Key")));
            let r = get(&gw, "/anything/debug", "route-22.test");
            assert_eq!(r.status, 200);
            assert!(r.header("X-Cache-Status").is_none());
            assert!(r.header("Age").is_none());
        },
    );

    t.finish();
}

/// Kong's schema check of the dictionary, through the loader.
#[test]
fn proxy_cache_schema_through_the_loader() {
    let yml = r#"_format_version: "3.0"
plugins:
- name: proxy-cache
  config: {strategy: memory, memory: {dictionary_name: my_cache}}
"#;
    let err = match Gateway::try_start(yml) {
        Ok(_) => panic!("gateway started with a missing shared dict"),
        Err(out) => out,
    };
    assert!(
        err.contains("in 'plugins' entity") && err.contains("missing shared dict 'my_cache'"),
        "{err}"
    );
    let yml = r#"_format_version: "3.0"
plugins:
- name: proxy-cache
  config: {response_code: [99]}
"#;
    let err = match Gateway::try_start(yml) {
        Ok(_) => panic!("gateway started with an invalid proxy-cache config"),
        Err(out) => out,
    };
    assert!(
        err.contains("field 'config.strategy': required field missing"),
        "{err}"
    );
    assert!(
        err.contains("field 'config.response_code.1': value should be between 100 and 900"),
        "{err}"
    );
}

fn push_config(up: u16, cache_ttl: u32, dict: &str, extra_route: bool) -> String {
    let mut y = format!(
        r#"_format_version: "3.0"
services:
- name: mock
  url: http://{{UP0}}
  routes:
  - id: {ROUTE_1}
    hosts: [push.test]
    plugins:
    - {{name: proxy-cache, config: {{strategy: memory, cache_ttl: {cache_ttl}, memory: {{dictionary_name: {dict}}}}}}}
"#
    );
    if extra_route {
        y.push_str("  - hosts: [other.test]\n");
    }
    fill_ports(&y, &[up])
}

#[test]
fn proxy_cache_entries_survive_config_pushes() {
    let up = Mock::start();
    let gw = Gateway::start(&push_config(up.port, 300, "kong", false));
    let first = get(&gw, "/get", "push.test");
    assert_cache(&first, 200, "Miss");
    assert_cache(&get(&gw, "/get", "push.test"), 200, "Hit");

    // A new snapshot with a new plugin instance: the dictionary is the same.
    assert!(gw.reload_and_wait(&push_config(up.port, 301, "kong", true)));
    let r = get(&gw, "/get", "push.test");
    assert_cache(&r, 200, "Hit");
    assert_eq!(r.body, first.body);

    // Another dictionary does not have it...
    assert!(gw.reload_and_wait(&push_config(up.port, 301, "kong_db_cache", true)));
    assert_cache(&get(&gw, "/get", "push.test"), 200, "Miss");
    assert_cache(&get(&gw, "/get", "push.test"), 200, "Hit");
    // ... and the first one still does.
    assert!(gw.reload_and_wait(&push_config(up.port, 300, "kong", false)));
    let r = get(&gw, "/get", "push.test");
    assert_cache(&r, 200, "Hit");
    assert_eq!(r.body, first.body);
}

#[test]
fn proxy_cache_memory_is_bounded_by_the_dictionary_size() {
    let up = Mock::start();
    // `kong` is a 5m dictionary in Kong's template.
    let yml = fill_ports(
        r#"_format_version: "3.0"
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [bytes.test]
    plugins:
    - {name: proxy-cache, config: {strategy: memory, content_type: [application/octet-stream], memory: {dictionary_name: kong}}}
"#,
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    const MB: usize = 1024 * 1024;
    for i in 0..8 {
        let r = get(&gw, &format!("/bytes/{MB}?i={i}"), "bytes.test");
        assert_cache(&r, 200, "Miss");
        assert_eq!(r.body.len(), MB);
    }
    // The newest are kept, the oldest made room for them.
    assert_cache(
        &get(&gw, &format!("/bytes/{MB}?i=7"), "bytes.test"),
        200,
        "Hit",
    );
    assert_cache(
        &get(&gw, &format!("/bytes/{MB}?i=0"), "bytes.test"),
        200,
        "Miss",
    );

    // A body larger than the dictionary is passed on whole and not kept.
    let big = 6 * MB;
    let r = get(&gw, &format!("/bytes/{big}"), "bytes.test");
    assert_cache(&r, 200, "Miss");
    assert_eq!(r.body.len(), big);
    let r = get(&gw, &format!("/bytes/{big}"), "bytes.test");
    assert_cache(&r, 200, "Miss");
    assert_eq!(r.body.len(), big);
}
