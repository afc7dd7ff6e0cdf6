//! Port of Kong's `spec/02-integration/05-proxy/14-server_tokens_spec.lua`
//! (Server / Via / latency headers for each `headers` setting), the
//! downstream half of `33-request-id-header_spec.lua` and the response side
//! of `35-via_spec.lua`. One gateway per Kong `describe` (one `KONG_HEADERS`
//! value); each `it(...)` is a named case. Skipped: cases needing plugins
//! (request-termination, response-transformer, error-generator), the Admin
//! API block and `restart -c` from a conf file.
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{get, start_httpbin, Proc, Response};

const SERVER: &str = "kong/3.10.0";
const VIA: &str = "1.1 kong/3.10.0";
const UPSTREAM_LATENCY: &str = "X-Kong-Upstream-Latency";
const PROXY_LATENCY: &str = "X-Kong-Proxy-Latency";
const RESPONSE_LATENCY: &str = "X-Kong-Response-Latency";
const REQUEST_ID: &str = "X-Kong-Request-Id";

const FIXTURE: &str = r#"_format_version: "3.0"
services:
- name: inspect
  url: http://{UP0}
  routes:
  - hosts: [headers-inspect.test]
- name: status
  url: http://{UP1}
  routes:
  - hosts: [status.test]
- name: bad-port
  url: http://127.0.0.1:1
  retries: 0
  routes:
  - hosts: [502.test]
- name: via-mock
  url: http://{UP2}
  routes:
  - hosts: [test.via]
"#;

struct S {
    gw: Gateway,
    _up: Recorder,
    _via: Recorder,
    _httpbin: Proc,
}

impl S {
    fn start(headers: Option<&str>) -> S {
        let up = Recorder::start();
        let via = Recorder::start_with_headers(&[
            ("Server", "http-mock"),
            ("Via", "2 nginx, HTTP/1.1 http_mock"),
        ]);
        let (httpbin, hb_port) = start_httpbin("status-upstream");
        let yml = fill_ports(FIXTURE, &[up.port, hb_port, via.port]);
        let gw = match headers {
            Some(h) => Gateway::start_with(&yml, &[("KONG_HEADERS", h)]),
            None => Gateway::start(&yml),
        };
        S {
            gw,
            _up: up,
            _via: via,
            _httpbin: httpbin,
        }
    }

    fn proxied(&self) -> Response {
        let r = get(self.gw.port, "/get", &[("Host", "headers-inspect.test")]);
        assert_eq!(r.status, 200, "{}", r.body_str());
        r
    }

    fn no_route(&self) -> Response {
        let r = get(self.gw.port, "/get", &[("Host", "404.test")]);
        assert_eq!(r.status, 404, "{}", r.body_str());
        r
    }
}

fn has(r: &Response, name: &str) -> bool {
    r.header(name).is_some()
}

// ---------------------------------------------------------------------------
// describe("Server/Via") and describe("X-Kong-Proxy-Latency/X-Kong-Upstream-Latency")
// with default configuration values.

/// describe("(with default configuration values)") — both blocks, plus
/// 33-request-id-header_spec "(downstream)" "with default configuration".
#[test]
fn kong_with_default_configuration_values() {
    let s = S::start(None);
    let mut c = Cases::new();
    c.it("should return Kong 'Via' header but not change the 'Server' header when request was proxied", || {
        let r = s.proxied();
        assert_ne!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("server"), Some("recorder"));
        assert_eq!(r.header("via"), Some(VIA));
    });
    c.it("should return Kong 'Server' header but not the Kong 'Via' header when no API matched (no proxy)", || {
        let r = s.no_route();
        assert_eq!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("via"), None);
    });
    c.it(
        "latency: should be returned when request was proxied",
        || {
            let r = s.proxied();
            assert!(has(&r, UPSTREAM_LATENCY), "{:?}", r.headers);
            assert!(has(&r, PROXY_LATENCY));
            assert!(!has(&r, RESPONSE_LATENCY));
            for n in [UPSTREAM_LATENCY, PROXY_LATENCY] {
                assert!(
                    r.header(n).unwrap().parse::<u64>().is_ok(),
                    "{n}: {:?}",
                    r.header(n)
                );
            }
        },
    );
    c.it(
        "latency: should not be returned when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert!(!has(&r, UPSTREAM_LATENCY));
            assert!(!has(&r, PROXY_LATENCY));
            assert!(has(&r, RESPONSE_LATENCY));
            assert!(r.header(RESPONSE_LATENCY).unwrap().parse::<u64>().is_ok());
        },
    );
    c.it("should be returned when response status code is included in error_page directive (error_page not executing)", || {
        for code in [400u16, 404, 408, 411, 412, 413, 414, 417, 494, 500, 502, 503, 504] {
            let r = get(s.gw.port, &format!("/status/{code}"), &[("Host", "status.test")]);
            assert_eq!(r.status, code, "{}", r.body_str());
            assert!(has(&r, UPSTREAM_LATENCY), "{code}: {:?}", r.headers);
            assert!(has(&r, PROXY_LATENCY), "{code}");
            assert!(!has(&r, RESPONSE_LATENCY), "{code}");
            // The upstream's response is passed through, not a Kong error body.
            assert!(!r.body_str().contains("request_id"), "{code}: {}", r.body_str());
            assert_eq!(r.header("x-upstream-name"), Some("status-upstream"));
        }
    });
    c.it(
        "should be returned with 502 errors (error_page executing)",
        || {
            let r = get(s.gw.port, "/get", &[("Host", "502.test")]);
            assert_eq!(r.status, 502, "{}", r.body_str());
            assert!(has(&r, UPSTREAM_LATENCY), "{:?}", r.headers);
            assert!(has(&r, PROXY_LATENCY), "{:?}", r.headers);
            assert!(!has(&r, RESPONSE_LATENCY), "{:?}", r.headers);
            assert!(has(&r, REQUEST_ID));
        },
    );
    c.it("X-Kong-Request-Id contains the expected value", || {
        let r = s.proxied();
        let id = r.header(REQUEST_ID).expect("request id");
        assert!(
            !id.is_empty() && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
    });
    c.it(
        "X-Kong-Request-Id should be populated when no API matched",
        || {
            let r = s.no_route();
            assert_eq!(r.json()["message"], "no Route matched with those values");
            let id = r.header(REQUEST_ID).expect("request id");
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            assert_eq!(r.json()["request_id"], id);
        },
    );
    c.it(
        "35-via: HTTP/1.1 in both the inbound and outbound directions (response)",
        || {
            let r = get(
                s.gw.port,
                "/get",
                &[("Host", "test.via"), ("Via", "1.1 dev")],
            );
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("via"),
                Some("2 nginx, HTTP/1.1 http_mock, 1.1 kong/3.10.0")
            );
            assert_eq!(r.header("server"), Some("http-mock"));
            assert_eq!(r.header_all("via").len(), 1, "{:?}", r.headers);
        },
    );
    c.it(
        "an upstream without a Server header gets Kong's Server",
        || {
            // An upstream without a Server header gets Kong's.
            let r = get(s.gw.port, "/get", &[("Host", "status.test")]);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("server"), Some(SERVER));
        },
    );
    c.finish();
}

/// describe("(with headers = Via)")
#[test]
fn kong_with_headers_via() {
    let s = S::start(Some("Via"));
    let mut c = Cases::new();
    c.it(
        "should return Kong 'Via' header but not touch 'Server' header when request was proxied",
        || {
            let r = s.proxied();
            assert_eq!(r.header("via"), Some(VIA));
            assert_ne!(r.header("server"), Some(VIA));
            assert_eq!(r.header("server"), Some("recorder"));
        },
    );
    c.it(
        "should not return Kong 'Via' header or Kong 'Via' header when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert_eq!(r.header("via"), None);
            assert_eq!(r.header("server"), None, "{:?}", r.headers);
        },
    );
    c.finish();
}

/// describe("(with headers = Server)")
#[test]
fn kong_with_headers_server() {
    let s = S::start(Some("Server"));
    let mut c = Cases::new();
    c.it("should not return Kong 'Via' header but not change the 'Server' header when request was proxied", || {
        let r = s.proxied();
        assert_ne!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("via"), None, "{:?}", r.headers);
    });
    c.it("should return Kong 'Server' header but not the Kong 'Via' header when no API matched (no proxy)", || {
        let r = s.no_route();
        assert_eq!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("via"), None);
    });
    c.finish();
}

/// describe("(with headers = server_tokens)")
#[test]
fn kong_with_headers_server_tokens() {
    let s = S::start(Some("server_tokens"));
    let mut c = Cases::new();
    c.it("should return Kong 'Via' header but not change the 'Server' header when request was proxied", || {
        let r = s.proxied();
        assert_ne!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("via"), Some(VIA));
        assert!(!has(&r, PROXY_LATENCY) && !has(&r, UPSTREAM_LATENCY));
    });
    c.it("should return Kong 'Server' header but not the Kong 'Via' header when no API matched (no proxy)", || {
        let r = s.no_route();
        assert_eq!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("via"), None);
        assert!(!has(&r, RESPONSE_LATENCY));
        assert!(!has(&r, REQUEST_ID), "{:?}", r.headers);
    });
    c.finish();
}

/// describe("(with no server_tokens in headers)") + describe("(with no
/// latency_tokens in headers)") (headers = off) + 33-request-id
/// "is not injected with configuration [headers=off]".
#[test]
fn kong_with_headers_off() {
    let s = S::start(Some("off"));
    let mut c = Cases::new();
    c.it("should not return Kong 'Via' header but it should forward the 'Server' header when request was proxied", || {
        let r = s.proxied();
        assert!(has(&r, "server"));
        assert!(!has(&r, "via"));
        assert_ne!(r.header("server"), Some(SERVER));
    });
    c.it(
        "should not return Kong 'Server' or 'Via' headers when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert_eq!(r.header("server"), None, "{:?}", r.headers);
            assert_eq!(r.header("via"), None);
        },
    );
    c.it(
        "latency: should not be returned when request was proxied",
        || {
            let r = s.proxied();
            assert!(
                !has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY)
            );
        },
    );
    c.it(
        "latency: should not be returned when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert!(
                !has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY)
            );
        },
    );
    c.it("X-Kong-Request-Id is nil", || {
        let r = s.proxied();
        assert!(!has(&r, REQUEST_ID), "{:?}", r.headers);
    });
    c.it("an upstream without Server gets none added", || {
        let r = get(s.gw.port, "/get", &[("Host", "status.test")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("server"), None, "{:?}", r.headers);
    });
    c.finish();
}

/// describe("(with headers = latency_tokens)")
#[test]
fn kong_with_headers_latency_tokens() {
    let s = S::start(Some("latency_tokens"));
    let mut c = Cases::new();
    c.it("should be returned when request was proxied", || {
        let r = s.proxied();
        assert!(has(&r, UPSTREAM_LATENCY) && has(&r, PROXY_LATENCY));
        assert!(!has(&r, RESPONSE_LATENCY));
        assert!(!has(&r, "via"));
    });
    c.it(
        "should not be returned when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert!(!has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY));
            assert!(has(&r, RESPONSE_LATENCY));
            assert_eq!(r.header("server"), None);
        },
    );
    c.finish();
}

/// describe("(with headers = X-Kong-Upstream-Latency)")
#[test]
fn kong_with_headers_x_kong_upstream_latency() {
    let s = S::start(Some("X-Kong-Upstream-Latency"));
    let mut c = Cases::new();
    c.it("should return 'X-Kong-Upstream-Latency' header but not 'X-Kong-Proxy-Latency' when request was proxied", || {
        let r = s.proxied();
        assert!(has(&r, UPSTREAM_LATENCY));
        assert!(!has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY));
    });
    c.it(
        "should not return any latency header when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert!(
                !has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY)
            );
        },
    );
    c.finish();
}

/// describe("(with headers = X-Kong-Proxy-Latency)")
#[test]
fn kong_with_headers_x_kong_proxy_latency() {
    let s = S::start(Some("X-Kong-Proxy-Latency"));
    let mut c = Cases::new();
    c.it("should return 'X-Kong-Proxy-Latency' header but not 'X-Kong-Upstream-Latency' when request was proxied", || {
        let r = s.proxied();
        assert!(!has(&r, UPSTREAM_LATENCY));
        assert!(has(&r, PROXY_LATENCY));
        assert!(!has(&r, RESPONSE_LATENCY));
    });
    c.it(
        "should not return any latency header when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert!(
                !has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY)
            );
        },
    );
    c.finish();
}

/// describe("(with headers = X-Kong-Response-Latency)")
#[test]
fn kong_with_headers_x_kong_response_latency() {
    let s = S::start(Some("X-Kong-Response-Latency"));
    let mut c = Cases::new();
    c.it("should not return 'X-Kong-Proxy-Latency', 'X-Kong-Upstream-Latency' or 'X-Kong-Response-Latency' headers when request was proxied", || {
        let r = s.proxied();
        assert!(!has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY));
    });
    c.it(
        "should return 'X-Kong-Response-Latency' when no API matched (no proxy)",
        || {
            let r = s.no_route();
            assert!(!has(&r, UPSTREAM_LATENCY) && !has(&r, PROXY_LATENCY));
            assert!(has(&r, RESPONSE_LATENCY));
        },
    );
    c.finish();
}

fn server_tokens_and_proxy_latency(s: &S, c: &mut Cases) {
    c.it("should return Kong 'Via' and 'X-Kong-Proxy-Latency' header but not change the 'Server' header when request was proxied", || {
        let r = s.proxied();
        assert_ne!(r.header("server"), Some(SERVER));
        assert_eq!(r.header("via"), Some(VIA));
        assert!(has(&r, PROXY_LATENCY));
        assert!(!has(&r, RESPONSE_LATENCY));
        assert!(!has(&r, UPSTREAM_LATENCY));
    });
    c.it("should return Kong 'Server' header but not the Kong 'Via' or 'X-Kong-Proxy-Latency' header when no API matched (no proxy)", || {
        let r = s.no_route();
        assert_eq!(r.header("server"), Some(SERVER));
        assert!(!has(&r, "via"));
        assert!(!has(&r, PROXY_LATENCY));
        assert!(!has(&r, RESPONSE_LATENCY));
    });
}

/// describe("(with headers='server_tokens, X-Kong-Proxy-Latency')")
#[test]
fn kong_with_headers_server_tokens_and_proxy_latency() {
    let s = S::start(Some("server_tokens, X-Kong-Proxy-Latency"));
    let mut c = Cases::new();
    server_tokens_and_proxy_latency(&s, &mut c);
    c.finish();
}

/// describe("(with headers='server_tokens, off, X-Kong-Proxy-Latency')"):
/// "should return Kong 'Via' and 'X-Kong-Proxy-Latency' header as 'off' will
/// not take effect" / "should return Kong 'Server' header as 'off' will not
/// take effect".
#[test]
fn kong_with_headers_off_not_first_takes_no_effect() {
    let s = S::start(Some("server_tokens, off, X-Kong-Proxy-Latency"));
    let mut c = Cases::new();
    server_tokens_and_proxy_latency(&s, &mut c);
    c.finish();
}

/// describe("case insensitiveness") describe("are case insensitive")
#[test]
fn kong_headers_are_case_insensitive() {
    let s = S::start(Some("serVer_TokEns, x-kOng-pRoXy-lAtency"));
    let mut c = Cases::new();
    c.it(
        "should return Kong 'Via' and 'X-Kong-Proxy-Latency' header",
        || {
            let r = s.proxied();
            assert_ne!(r.header("server"), Some(SERVER));
            assert_eq!(r.header("via"), Some(VIA));
            assert!(has(&r, PROXY_LATENCY));
            assert!(!has(&r, RESPONSE_LATENCY));
        },
    );
    c.it("should return Kong 'Server' header", || {
        let r = s.no_route();
        assert_eq!(r.header("server"), Some(SERVER));
        assert!(!has(&r, "via"));
        assert!(!has(&r, PROXY_LATENCY) && !has(&r, RESPONSE_LATENCY));
    });
    c.finish();
}

/// 33-request-id-header_spec describe("with configuration
/// [headers=X-Kong-Request-Id]") it("contains the expected value")
#[test]
fn kong_request_id_with_headers_x_kong_request_id() {
    let s = S::start(Some("X-Kong-Request-Id"));
    let r = s.proxied();
    let id = r.header(REQUEST_ID).expect("request id");
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{id}"
    );
    assert!(!has(&r, "via") && !has(&r, PROXY_LATENCY));
    let r = s.no_route();
    assert!(has(&r, REQUEST_ID));
    assert!(!has(&r, "server") && !has(&r, RESPONSE_LATENCY));
}
