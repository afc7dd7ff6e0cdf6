//! Raw-socket HTTP/1 hardening cases (/work/shared/docs/reliability-security.md
//! §2 and §1.3: match nginx/Kong rejections, never forward ambiguous
//! framing). The upstream is a recording server, so "nothing reached the
//! upstream" is checked directly by its request counter.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{fill_ports, Gateway, Recorder};
use gw_tests::{parse_response, raw_request, Conn, Response};

const T: Duration = Duration::from_secs(10);

struct S {
    gw: Gateway,
    up: Recorder,
}

fn start() -> S {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://{UP0}
  routes:
  - paths: [/]
    strip_path: false
"#,
        &[up.port],
    ));
    S { gw, up }
}

impl S {
    /// Sends raw bytes on a fresh connection; returns the first response and
    /// whether the server then closed the connection.
    fn raw(&self, bytes: &[u8]) -> (Option<Response>, bool) {
        let mut c = Conn::open(self.gw.port);
        c.send(bytes).unwrap();
        let r = c.read_response(T);
        let closed = c.is_closed(Duration::from_secs(3));
        (r, closed)
    }

    /// Asserts `bytes` get `status`, the connection closes, and nothing
    /// reaches the upstream.
    fn rejects(&self, name: &str, bytes: &[u8], status: u16) -> Response {
        let before = self.up.count();
        let (r, closed) = self.raw(bytes);
        let r = r.unwrap_or_else(|| panic!("{name}: no parsable response"));
        assert_eq!(r.status, status, "{name}: {}", r.body_str());
        assert!(closed, "{name}: connection left open after {status}");
        // Give a forwarded request time to arrive before counting.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            self.up.count(),
            before,
            "{name}: request reached the upstream: {:?}",
            self.up.requests().last()
        );
        r
    }
}

/// Every refusal must be Kong's own error response (kong/error_handlers.lua):
/// `Server: kong/<ver>`, `X-Kong-Request-Id`, and the text/plain template
/// `<message>\nrequest_id: <id>\n` — not an empty framework response.
fn assert_kong_shaped(name: &str, r: &Response, message: &str) {
    let rid = r.header("x-kong-request-id").unwrap_or("");
    assert!(
        r.header("server").is_some_and(|s| s.starts_with("kong/")) && !rid.is_empty(),
        "{name}: not a Kong error response: {} {:?}",
        r.status,
        r.headers
    );
    assert_eq!(
        r.body_str(),
        format!("{message}\nrequest_id: {rid}\n"),
        "{name}"
    );
}

/// The refusals above, checked for Kong's error shape (status, Server,
/// request id, body), one line per input so every deviation is listed.
#[test]
fn refusals_are_kong_error_responses() {
    let s = start();
    let big_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("clte-classic", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG".to_vec(), 400, "Bad request"),
        ("cl-duplicate-different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), 400, "Bad request"),
        ("cl-plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_vec(), 400, "Bad request"),
        ("obs-fold-field", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n".to_vec(), 400, "Bad request"),
        ("bare-cr-in-field", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n".to_vec(), 400, "Bad request"),
        ("field-space-before-colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n".to_vec(), 400, "Bad request"),
        ("host-missing", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400, "Bad request"),
        ("te-http10-chunked", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400, "Bad request"),
        ("method-lowercase", b"get / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400, "Bad request"),
        ("method-trace", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 405, "Method not allowed"),
        ("path-hash", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400, "Bad request"),
        ("uri-70k", big_uri.into_bytes(), 414, "URI too long"),
    ];
    let mut failures = Vec::new();
    for (name, bytes, status, message) in &cases {
        let (r, _) = s.raw(bytes);
        let outcome = std::panic::catch_unwind(|| {
            let r = r.unwrap_or_else(|| panic!("{name}: no response"));
            assert_eq!(r.status, *status, "{name}");
            assert_kong_shaped(name, &r, message);
        });
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into());
            failures.push(msg.lines().next().unwrap_or("").to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} not Kong-shaped:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn cl_and_te_together_are_rejected_in_both_orders() {
    let s = start();
    s.rejects(
        "clte-classic",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        400,
    );
    s.rejects(
        "tecl-classic",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        400,
    );
    s.rejects(
        "clte-te-chunked-cl-zero",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn duplicate_and_invalid_content_length_are_rejected() {
    let s = start();
    s.rejects(
        "cl-duplicate-different",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    );
    for (name, v) in [
        ("cl-list", "1, 2"),
        ("cl-plus", "+5"),
        ("cl-minus", "-1"),
        ("cl-hex", "0x5"),
        ("cl-empty", ""),
        ("cl-space-inside", "1 0"),
        ("cl-overflow", "18446744073709551621"),
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\nhello");
        s.rejects(name, req.as_bytes(), 400);
    }
}

#[test]
fn obs_fold_bare_cr_and_bad_field_syntax_are_rejected() {
    let s = start();
    s.rejects(
        "obs-fold-field",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n",
        400,
    );
    s.rejects(
        "bare-cr-in-field",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n",
        400,
    );
    s.rejects(
        "field-space-before-colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
        400,
    );
    s.rejects(
        "field-no-colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n",
        400,
    );
    s.rejects(
        "field-empty-name",
        b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
        400,
    );
    s.rejects(
        "host-duplicate",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
    );
}

#[test]
fn missing_host_on_http_1_1_is_rejected() {
    let s = start();
    let r = s.rejects("host-missing", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400);
    assert!(r.body_str().contains("Bad request"), "{}", r.body_str());
}

#[test]
fn http_1_0_with_transfer_encoding_is_rejected() {
    let s = start();
    s.rejects(
        "te-http10-chunked",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

/// nginx answers 501 itself (501 is not in Kong's `error_page` list, so no
/// Kong body is expected).
#[test]
fn unknown_transfer_encoding_is_501() {
    let s = start();
    s.rejects(
        "te-gzip",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
    s.rejects(
        "te-xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        501,
    );
    // Obfuscations either 400 or 501, never forwarded.
    for (name, te) in [
        ("te-chunked-identity", "chunked, identity"),
        ("te-identity-chunked", "identity, chunked"),
        ("te-leading-comma", ",chunked"),
    ] {
        let before = s.up.count();
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let (r, _) = s.raw(req.as_bytes());
        let r = r.unwrap_or_else(|| panic!("{name}: no response"));
        assert!(matches!(r.status, 400 | 501), "{name}: {}", r.status);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.up.count(), before, "{name}");
    }
}

#[test]
fn trace_is_405() {
    let s = start();
    let r = s.rejects("method-trace", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405);
    assert!(
        r.body_str().starts_with("Method not allowed\nrequest_id: "),
        "{}",
        r.body_str()
    );
}

#[test]
fn lowercase_method_is_rejected() {
    let s = start();
    s.rejects(
        "method-lowercase",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
}

#[test]
fn http_0_9_never_gets_a_200() {
    let s = start();
    let before = s.up.count();
    let raw = raw_request(s.gw.port, b"GET /\r\n\r\n", Duration::from_secs(5)).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200"),
        "{text}"
    );
    if !raw.is_empty() {
        let (r, _) = parse_response(&raw).expect("a parsable error response");
        assert_eq!(r.status, 400);
    }
    assert_eq!(s.up.count(), before);
}

#[test]
fn request_line_over_8k_is_414() {
    let s = start();
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(8 * 1024 + 10)
    );
    let r = s.rejects("uri-too-long", req.as_bytes(), 414);
    assert!(
        r.body_str().starts_with("URI too long\n"),
        "{}",
        r.body_str()
    );
    // 70k URI too.
    let req = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70 * 1024));
    s.rejects("uri-70k", req.as_bytes(), 414);
}

#[test]
fn header_line_over_8k_is_400_too_large() {
    let s = start();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(8 * 1024 + 10)
    );
    let r = s.rejects("field-9k", req.as_bytes(), 400);
    assert!(
        r.body_str()
            .starts_with("Request header or cookie too large\n"),
        "{}",
        r.body_str()
    );
    let req = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70 * 1024)
    );
    s.rejects("field-70k", req.as_bytes(), 400);
}

#[test]
fn five_8k_headers_exceed_the_buffers() {
    let s = start();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..5 {
        req.push_str(&format!("X-H{i}: {}\r\n", "c".repeat(8 * 1024 - 16)));
    }
    req.push_str("\r\n");
    let r = s.rejects("fields-5x8k", req.as_bytes(), 400);
    assert!(
        r.body_str().contains("Request header or cookie too large"),
        "{}",
        r.body_str()
    );
    // Three such headers still fit (3 × 8 KiB < 4 × 8 KiB).
    let mut req = String::from("GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 0..3 {
        req.push_str(&format!("X-H{i}: {}\r\n", "c".repeat(8 * 1024 - 16)));
    }
    req.push_str("\r\n");
    let (r, _) = s.raw(req.as_bytes());
    assert_eq!(r.unwrap().status, 200);
}

#[test]
fn absolute_form_routes_on_its_path_and_never_dials_the_named_host() {
    let s = start();
    let (r, _) = s.raw(
        b"GET http://other.invalid:9/abs/path?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let r = r.expect("a response");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let got = s.up.last();
    assert_eq!(got.target, "/abs/path?q=1");
    assert_eq!(
        got.header("host"),
        Some(format!("127.0.0.1:{}", s.up.port).as_str())
    );
    assert!(!got.target.contains("other.invalid"));
}

#[test]
fn hash_in_path_is_rejected() {
    let s = start();
    s.rejects("path-hash", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

#[test]
fn pipelined_request_after_a_400_is_not_processed() {
    let s = start();
    let mut c = Conn::open(s.gw.port);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = c.read_response(T).expect("first response");
    assert_eq!(r.status, 400);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection kept open after a 400"
    );
    assert!(
        parse_response(c.pending()).is_none(),
        "a second response was sent: {:?}",
        String::from_utf8_lossy(c.pending())
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.up.count(), 0, "{:?}", s.up.requests());
}

#[test]
fn keep_alive_works_for_normal_requests() {
    let s = start();
    let mut c = Conn::open(s.gw.port);
    let r1 = c.request("GET", "/one", &[], b"").expect("first");
    let r2 = c
        .request("POST", "/two", &[("Content-Type", "text/plain")], b"hello")
        .expect("second");
    assert_eq!((r1.status, r2.status), (200, 200));
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].target, "/one");
    assert_eq!(
        (reqs[1].target.as_str(), reqs[1].body.as_slice()),
        ("/two", &b"hello"[..])
    );
}

/// Two requests written in one packet on a keep-alive connection are both
/// answered, in order (nginx serves pipelined requests).
#[test]
fn pipelined_requests_are_both_answered() {
    let s = start();
    let mut c = Conn::open(s.gw.port);
    assert_eq!(c.request("GET", "/one", &[], b"").unwrap().status, 200);
    assert_eq!(c.request("GET", "/two", &[], b"").unwrap().status, 200);
    c.send(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(T).unwrap().status, 200);
    assert_eq!(c.read_response(T).unwrap().status, 200);
    let t: Vec<String> = s.up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(t, ["/one", "/two", "/p1", "/p2"]);
}

#[test]
fn chunked_request_body_is_forwarded_intact() {
    let s = start();
    let (r, _) = s.raw(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(s.up.last().body, b"abcde");
}

/// A 404 for an unrouted request with a body must not let the body be read
/// as a second request (early-* cases).
#[test]
fn local_404_with_a_body_does_not_desync() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://{UP0}\n  routes:\n  - hosts: [ok.test]\n",
        &[up.port],
    ));
    let mut c = Conn::open(gw.port);
    c.send(b"POST / HTTP/1.1\r\nHost: nope.test\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ok.test\r\n\r\n")
        .unwrap();
    let r = c.read_response(T).expect("404");
    assert_eq!(r.status, 404);
    // Either the connection closes or the next response is for our next
    // request — never for the body.
    let _ = c.send(b"GET /next HTTP/1.1\r\nHost: ok.test\r\n\r\n");
    if let Some(r2) = c.read_response(Duration::from_secs(3)) {
        assert_eq!(r2.status, 200);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        up.requests().iter().all(|r| r.target != "/smuggled"),
        "smuggled request reached the upstream: {:?}",
        up.requests()
    );
}

/// `Connection` may nominate fields, but the gateway's own forwarded headers
/// are still set (connection-lists-*): the request succeeds.
#[test]
fn connection_nominating_forwarded_headers_keeps_the_gateways_own() {
    let s = start();
    let (r, _) = s.raw(
        b"GET /n HTTP/1.1\r\nHost: a\r\nConnection: close, X-Forwarded-For, X-Real-IP\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    );
    let r = r.expect("a response");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let got = s.up.last();
    assert_eq!(got.header("x-real-ip"), Some("127.0.0.1"));
    let xff = got.header("x-forwarded-for").unwrap_or("");
    assert!(xff.ends_with("127.0.0.1"), "{xff}");
}

/// A CONNECT request is refused (never tunnels).
#[test]
fn connect_method_is_refused() {
    let s = start();
    let before = s.up.count();
    let (r, _) = s.raw(b"CONNECT other.invalid:443 HTTP/1.1\r\nHost: other.invalid:443\r\n\r\n");
    let r = r.expect("a response");
    assert!(matches!(r.status, 400 | 405 | 501), "{}", r.status);
    assert_eq!(s.up.count(), before);
}

fn start_env(env: &[(&str, &str)]) -> S {
    let up = Recorder::start();
    let gw = Gateway::start_with(
        &fill_ports(
            "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://{UP0}\n  routes:\n  - paths: [/]\n    strip_path: false\n",
            &[up.port],
        ),
        env,
    );
    S { gw, up }
}

/// nginx (`ngx_http_parse_complex_uri`) answers 400 for a path that climbs
/// above the root once dot segments are resolved, with escapes decoded once
/// (`%2e` is a dot, `%2f` a slash), and for a bad or NUL escape; the
/// request is never routed or forwarded.
#[test]
fn paths_above_the_root_and_bad_escapes_are_refused_before_routing() {
    let s = start();
    for path in [
        "/../etc/passwd",
        "/..",
        "/a/../../x",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/etc/passwd",
        "/.%2E/x",
        "/%2e./x",
        "/a/%2e%2e/%2E%2e/x",
        "/a%2f..%2f..%2fx",
        "//../x",
        "/a/./../../x?q=1",
        "/bad%zz",
        "/bad%2",
        "/nul%00x",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = s.rejects(path, req.as_bytes(), 400);
        assert_kong_shaped(path, &r, "Bad request");
    }
    // Absolute-form targets get the same check on their path.
    s.rejects(
        "absolute-form traversal",
        b"GET http://a/x/../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    // Inside the root they are fine, and forwarded normalised.
    let (r, _) = s.raw(b"GET /a/b/%2e%2e/c/./d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(s.up.last().target, "/a/c/d");
}

/// Kong runs nginx with `underscores_in_headers on`, so `api_key` reaches
/// the upstream. But a name that reads as a framing or forwarding header
/// once `_` is taken for `-` (as CGI-style upstreams do) is dropped:
/// `Transfer_Encoding: chunked` must never reach an upstream.
#[test]
fn underscore_spellings_of_framing_and_forwarding_headers_never_reach_the_upstream() {
    let s = start();
    let (r, _) = s.raw(
        b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\nContent_Length: 0\r\nX_Forwarded_For: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\nAPI_Key: secret\r\nX.Dotted: 1\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.unwrap().status, 200);
    let got = s.up.last();
    assert_eq!(got.body, b"hello");
    let names: Vec<String> = got
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    for gone in [
        "transfer_encoding",
        "content_length",
        "x_forwarded_for",
        "x_real_ip",
        "x.dotted",
    ] {
        assert!(
            !names.iter().any(|n| n == gone),
            "{gone} forwarded: {names:?}"
        );
    }
    assert_eq!(got.header("api_key"), Some("secret"));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));

    // `nginx_proxy_underscores_in_headers = off`: nginx's own default.
    let s = start_env(&[("KONG_NGINX_PROXY_UNDERSCORES_IN_HEADERS", "off")]);
    let (r, _) = s.raw(
        b"GET /u HTTP/1.1\r\nHost: a\r\nAPI_Key: secret\r\nX-Ok: 1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.unwrap().status, 200);
    let got = s.up.last();
    assert_eq!(got.header("api_key"), None);
    assert_eq!(got.header("x-ok"), Some("1"));
}

/// A fold is a 400 in any header, Transfer-Encoding included (it used to be
/// read as an empty, unknown coding: 501).
#[test]
fn obs_fold_in_transfer_encoding_is_400() {
    let s = start();
    for (name, req) in [
        ("te-fold-value", &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"[..]),
        ("te-fold-list", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\t, identity\r\n\r\n0\r\n\r\n"),
        ("te-unknown-then-fold", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nX-A: 1\r\n continued\r\n\r\n"),
    ] {
        let r = s.rejects(name, req, 400);
        assert_kong_shaped(name, &r, "Bad request");
    }
}

/// Malformed chunked framing gets a prompt 400 (never a stall), whether it
/// arrives with the head or later; valid framing (extensions, trailers) is
/// served. The answer comes well before any timeout.
#[test]
fn malformed_chunk_framing_is_answered_at_once() {
    let s = start();
    let head = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (name, body) in [
        ("chunk-ext-bare-lf", &b"3;ext=1\nabc\r\n0\r\n\r\n"[..]),
        ("chunk-size-bare-lf", b"3\nabc\r\n0\r\n\r\n"),
        ("chunk-data-bare-lf", b"3\r\nabc\n0\r\n\r\n"),
        ("chunk-size-junk", b"3x\r\nabc\r\n0\r\n\r\n"),
        ("chunk-data-too-long", b"3\r\nabcdef\r\n0\r\n\r\n"),
        ("chunk-size-overflow", b"ffffffffffffffffff\r\n"),
        ("trailer-bare-lf", b"0\r\nX-T: 1\n\r\n"),
    ] {
        // With the head: refused by the front before anything is forwarded.
        let started = std::time::Instant::now();
        let r = s.rejects(name, &[&head[..], body].concat(), 400);
        assert_kong_shaped(name, &r, "Bad request");
        // After the head: the body read fails at the bad byte.
        let mut c = Conn::open(s.gw.port);
        c.send(head).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        c.send(body).unwrap();
        let r = c
            .read_response(T)
            .unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(r.status, 400, "{name} (late)");
        assert_eq!(r.body_str().lines().next(), Some("Bad request"), "{name}");
        assert!(c.is_closed(Duration::from_secs(3)), "{name}: left open");
        // Order, not speed: answered well before the 60 s body timeout
        // could have produced an answer (a generous bound for loaded hosts).
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: answered only after {:?}",
            started.elapsed()
        );
    }
    let (r, _) = s.raw(b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;name=v\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n");
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(s.up.last().body, b"abc");
}

/// A TLS ClientHello (or any bytes that cannot start a request) sent to a
/// plain-HTTP listener is answered 400 and closed at once, as nginx does.
#[test]
fn tls_and_binary_junk_on_a_plain_listener_get_400_at_once() {
    let s = start();
    let client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xf1, 0x01, 0x00, 0x00, 0xed, 0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a,
    ];
    for (name, junk) in [
        ("tls-client-hello", client_hello),
        ("ssh-banner", &b"SSH-2.0-OpenSSH_9.2p1\r\n"[..]),
        ("nul-bytes", &[0u8, 0, 0, 0][..]),
    ] {
        let started = std::time::Instant::now();
        let r = s.rejects(name, junk, 400);
        assert_kong_shaped(name, &r, "Bad request");
        // Well before the 60 s header timeout: answered, not timed out.
        assert!(started.elapsed() < Duration::from_secs(30), "{name}: slow");
    }
}

/// `client_header_timeout` and `client_body_timeout` (Kong's
/// `nginx_http_*` / `nginx_proxy_*` settings, nginx's 60 s by default) cut
/// off a head that never ends and a body that stops half-way, with 408.
#[test]
fn slow_heads_and_bodies_are_cut_off_with_408() {
    let s = start_env(&[
        ("KONG_NGINX_HTTP_CLIENT_HEADER_TIMEOUT", "1s"),
        ("KONG_NGINX_PROXY_CLIENT_BODY_TIMEOUT", "1s"),
    ]);
    let cases: [(&str, &[u8]); 3] = [
        ("slow-head", b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "),
        (
            "slow-body-cl",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf",
        ),
        (
            "slow-body-chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ),
    ];
    for (name, bytes) in cases {
        let started = std::time::Instant::now();
        let mut c = Conn::open(s.gw.port);
        c.send(bytes).unwrap();
        let r = c
            .read_response(T)
            .unwrap_or_else(|| panic!("{name}: no answer"));
        let waited = started.elapsed();
        assert_eq!(r.status, 408, "{name}");
        assert_kong_shaped(name, &r, "Request timeout");
        // Not before the configured 1 s, and (generously, for loaded
        // hosts) well before nginx's 60 s default: the setting took effect.
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(30),
            "{name}: after {waited:?}"
        );
        assert!(c.is_closed(Duration::from_secs(3)), "{name}: left open");
    }
    // A connection that sent nothing is closed quietly (nginx sends no 408).
    let mut c = Conn::open(s.gw.port);
    assert!(c.is_closed(Duration::from_secs(4)));
    assert!(c.pending().is_empty());
    assert_eq!(s.up.count(), 0, "{:?}", s.up.requests());
}

/// `client_max_body_size` counts the decoded chunked body too: 413 as soon
/// as a chunk size takes the total past the limit.
#[test]
fn client_max_body_size_applies_to_chunked_bodies() {
    let s = start_env(&[("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "10")]);
    let r = s.rejects(
        "chunked-413-with-head",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
        413,
    );
    assert_kong_shaped("chunked-413", &r, "Payload too large");
    let mut c = Conn::open(s.gw.port);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    c.send(b"6\r\nghijkl\r\n0\r\n\r\n").unwrap();
    let r = c.read_response(T).expect("413");
    assert_eq!(r.status, 413);
    assert_eq!(r.body_str().lines().next(), Some("Payload too large"));
    // Within the limit: served.
    let (r, _) = s.raw(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n");
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(s.up.last().body, b"abcdefghij");
}

/// The root cause of the CL+TE request that once reached the upstream past
/// the HTTP/1 front: after a chunked request, or an `Upgrade` request that
/// got no 101, the front used to hand the connection to Pingora without a
/// limit, so the next request's bytes reached Pingora's parser unchecked.
/// The front now frames every request itself; the single head check meets
/// every request on the connection.
#[test]
fn requests_pipelined_after_chunked_or_upgrade_requests_are_checked() {
    let s = start();
    let clte: &[u8] = b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG";
    let firsts: [(&str, &[u8]); 3] = [
        ("chunked", b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("upgrade", b"GET /u HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n"),
        ("upgrade-with-body", b"POST /u HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\nabc"),
    ];
    for (name, first) in firsts {
        for split in [false, true] {
            let mut c = Conn::open(s.gw.port);
            if split {
                c.send(first).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                c.send(clte).unwrap();
            } else {
                c.send(&[first, clte].concat()).unwrap();
            }
            let r1 = c
                .read_response(T)
                .unwrap_or_else(|| panic!("{name}: no first answer"));
            assert_eq!(r1.status, 200, "{name}");
            let r2 = c
                .read_response(T)
                .unwrap_or_else(|| panic!("{name}/{split}: CL+TE not answered"));
            assert_eq!(r2.status, 400, "{name}/{split}");
            assert!(c.is_closed(Duration::from_secs(3)));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        s.up.requests().iter().all(|r| r.target != "/smuggled"),
        "{:?}",
        s.up.requests()
    );
    // And a valid request pipelined after a chunked one is served.
    let mut c = Conn::open(s.gw.port);
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(T).expect("first").status, 200);
    assert_eq!(c.read_response(T).expect("pipelined").status, 200);
    assert_eq!(s.up.last().target, "/after");
}
