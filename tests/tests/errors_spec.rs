//! Kong's error bodies and content negotiation, ported from
//! `spec/02-integration/05-proxy/12-error_default_type_spec.lua` and
//! `13-error_handlers_spec.lua`, plus the table in
//! /work/shared/docs/kong-routing.md §d: Kong-generated errors
//! (`kong.response.error`: type from `Accept` only, JSON by default) and
//! nginx `error_page` errors (`kong/error_handlers.lua`: `Accept`, then the
//! request `Content-Type`, then `error_default_type`, text/plain by
//! default). Templates from `kong/tools/http.lua`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{raw_request, request, start_httpbin, Conn, Proc, Response};

const MSG_404: &str = "no Route matched with those values";
const MSG_502: &str = "An invalid response was received from the upstream server";
const MSG_503_NO_SERVICE: &str = "no Service found with those values";
const MSG_504: &str = "The upstream server is timing out";

fn json_body(msg: &str, rid: &str) -> String {
    format!("{{\n  \"message\":\"{msg}\",\n  \"request_id\":\"{rid}\"\n}}")
}
fn plain_body(msg: &str, rid: &str) -> String {
    format!("{msg}\nrequest_id: {rid}\n")
}
fn html_body(msg: &str, rid: &str) -> String {
    format!(
        "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{msg}.</p>\n    <p>request_id: {rid}</p>\n  </body>\n</html>\n"
    )
}
fn xml_body(msg: &str, rid: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{msg}</message>\n  <requestid>{rid}</requestid>\n</error>\n"
    )
}

#[derive(Clone, Copy, Debug)]
enum Fmt {
    Json,
    Plain,
    Html,
    Xml,
}

/// Asserts status, Content-Type, exact body (with the response's request
/// id), `Server: kong/…` and `X-Kong-Request-Id`.
fn assert_error(r: &Response, status: u16, fmt: Fmt, msg: &str) {
    assert_eq!(r.status, status, "body: {}", r.body_str());
    let rid = r
        .header("x-kong-request-id")
        .unwrap_or_else(|| panic!("no X-Kong-Request-Id: {:?}", r.headers));
    let (ct, body) = match fmt {
        Fmt::Json => ("application/json; charset=utf-8", json_body(msg, rid)),
        Fmt::Plain => ("text/plain; charset=utf-8", plain_body(msg, rid)),
        Fmt::Html => ("text/html; charset=utf-8", html_body(msg, rid)),
        Fmt::Xml => ("application/xml; charset=utf-8", xml_body(msg, rid)),
    };
    assert_eq!(
        r.header("content-type"),
        Some(ct),
        "{fmt:?}: {}",
        r.body_str()
    );
    assert_eq!(r.body_str(), body, "{fmt:?}");
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(
        r.header("server").is_some_and(|s| s.starts_with("kong/")),
        "Server: {:?}",
        r.header("server")
    );
}

const FIXTURE: &str = r#"_format_version: "3.0"
services:
- name: closed
  url: http://127.0.0.1:{CLOSED}
  retries: 0
  routes:
  - hosts: [closed.test]
- name: slow
  url: http://{UP0}
  read_timeout: 500
  retries: 0
  routes:
  - hosts: [slow.test]
- name: ok
  url: http://{UP1}
  routes:
  - hosts: [ok.test]
routes:
- name: serviceless
  hosts: [serviceless.test]
"#;

struct S {
    gw: Gateway,
    _httpbin: Proc,
    up: Recorder,
}

fn closed_port() -> u16 {
    // Bound then released: nothing listens there afterwards.
    gw_tests::free_port()
}

impl S {
    fn start(env: &[(&str, &str)]) -> S {
        let (httpbin, hb) = start_httpbin("slow-upstream");
        let up = Recorder::start();
        let yml =
            fill_ports(FIXTURE, &[hb, up.port]).replace("{CLOSED}", &closed_port().to_string());
        S {
            gw: Gateway::start_with(&yml, env),
            _httpbin: httpbin,
            up,
        }
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.gw.port, method, path, headers, b"")
    }
}

// ---------------------------------------------------------------------------
// Kong-generated errors (kong.response.error): Accept only, JSON default.

/// 404 "no Route matched" negotiated on Accept; Content-Type is ignored.
#[test]
fn kong_generated_404_content_negotiation() {
    let s = S::start(&[]);
    let h = ("Host", "nope.test");
    let mut c = Cases::new();
    c.it("no Accept -> JSON", || {
        assert_error(&s.req("GET", "/", &[h]), 404, Fmt::Json, MSG_404)
    });
    c.it("Accept: application/json", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "application/json")]),
            404,
            Fmt::Json,
            MSG_404,
        )
    });
    c.it("Accept: text/html", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "text/html")]),
            404,
            Fmt::Html,
            MSG_404,
        )
    });
    c.it("Accept: application/xml", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "application/xml")]),
            404,
            Fmt::Xml,
            MSG_404,
        )
    });
    c.it("Accept: text/plain", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "text/plain")]),
            404,
            Fmt::Plain,
            MSG_404,
        )
    });
    c.it("Accept: */* -> JSON", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "*/*")]),
            404,
            Fmt::Json,
            MSG_404,
        )
    });
    c.it("Accept: text/* -> plain", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "text/*")]),
            404,
            Fmt::Plain,
            MSG_404,
        )
    });
    c.it("Accept: application/* -> JSON", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "application/*")]),
            404,
            Fmt::Json,
            MSG_404,
        )
    });
    c.it("Accept: image/png (unknown) -> JSON", || {
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", "image/png")]),
            404,
            Fmt::Json,
            MSG_404,
        )
    });
    c.it("browser Accept picks text/html", || {
        let a = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", a)]),
            404,
            Fmt::Html,
            MSG_404,
        )
    });
    c.it(
        "q-values: defaults to 1 when q-value is not specified",
        || {
            let a = "application/json;q=0.9,text/html,text/plain;q=0.9";
            assert_error(
                &s.req("GET", "/", &[h, ("Accept", a)]),
                404,
                Fmt::Html,
                MSG_404,
            )
        },
    );
    c.it("q-values: picks highest q-value (json)", || {
        let a = "text/plain;q=0.7,application/json;q=0.8,text/html;q=0.5";
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", a)]),
            404,
            Fmt::Json,
            MSG_404,
        )
    });
    c.it("q-values: ties keep the first", || {
        let a = "application/xml;q=0.5, text/plain;q=0.5";
        assert_error(
            &s.req("GET", "/", &[h, ("Accept", a)]),
            404,
            Fmt::Xml,
            MSG_404,
        )
    });
    c.it(
        "request Content-Type is not consulted by kong.response.error",
        || {
            let r = s.req("GET", "/", &[h, ("Content-Type", "text/html")]);
            assert_error(&r, 404, Fmt::Json, MSG_404)
        },
    );
    c.it("HEAD gets no body", || {
        let r = s.req("HEAD", "/", &[h]);
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty());
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert!(r.header("x-kong-request-id").is_some());
    });
    c.finish();
}

/// 503 "no Service found with those values" (route without service).
#[test]
fn kong_generated_503_serviceless() {
    let s = S::start(&[]);
    let h = ("Host", "serviceless.test");
    assert_error(&s.req("GET", "/", &[h]), 503, Fmt::Json, MSG_503_NO_SERVICE);
    assert_error(
        &s.req("GET", "/", &[h, ("Accept", "text/plain")]),
        503,
        Fmt::Plain,
        MSG_503_NO_SERVICE,
    );
    let r = s.req("HEAD", "/", &[h]);
    assert_eq!((r.status, r.body.len()), (503, 0));
}

/// error_default_type does not change Kong-generated (PDK) errors.
#[test]
fn error_default_type_does_not_apply_to_pdk_errors() {
    let s = S::start(&[("KONG_ERROR_DEFAULT_TYPE", "text/html")]);
    assert_error(
        &s.req("GET", "/", &[("Host", "nope.test")]),
        404,
        Fmt::Json,
        MSG_404,
    );
}

// ---------------------------------------------------------------------------
// nginx error_page errors.

/// 12-error_default_type_spec describe("not set explicitly") with a 504
/// (upstream slower than read_timeout), plus 502 (connection refused).
#[test]
fn kong_error_default_type_not_set_explicitly() {
    let s = S::start(&[]);
    let slow = ("Host", "slow.test");
    let mut c = Cases::new();
    c.it("default error_default_type = text/plain", || {
        let r = s.req("GET", "/delay/3", &[slow]);
        assert_error(&r, 504, Fmt::Plain, MSG_504);
    });
    c.it("Accept header modified Content-Type: text/html", || {
        let r = s.req("GET", "/delay/3", &[slow, ("Accept", "text/html")]);
        assert_error(&r, 504, Fmt::Html, MSG_504);
    });
    c.it(
        "Accept header modified Content-Type: application/json",
        || {
            let r = s.req("GET", "/delay/3", &[slow, ("Accept", "application/json")]);
            assert_error(&r, 504, Fmt::Json, MSG_504);
            assert_eq!(r.json()["message"], MSG_504);
        },
    );
    c.it(
        "Accept header modified Content-Type: application/xml",
        || {
            let r = s.req("GET", "/delay/3", &[slow, ("Accept", "application/xml")]);
            assert_error(&r, 504, Fmt::Xml, MSG_504);
        },
    );
    c.it(
        "with q-values: defaults to 1 when q-value is not specified",
        || {
            let a = "application/json;q=0.9,text/html,text/plain;q=0.9";
            assert_error(
                &s.req("GET", "/delay/3", &[slow, ("Accept", a)]),
                504,
                Fmt::Html,
                MSG_504,
            );
        },
    );
    c.it("with q-values: picks highest q-value (json)", || {
        let a = "text/plain;q=0.7,application/json;q=0.8,text/html;q=0.5";
        assert_error(
            &s.req("GET", "/delay/3", &[slow, ("Accept", a)]),
            504,
            Fmt::Json,
            MSG_504,
        );
    });
    c.it(
        "request Content-Type is used without Accept (error_handlers.lua)",
        || {
            let r = s.req(
                "GET",
                "/delay/3",
                &[slow, ("Content-Type", "application/json")],
            );
            assert_error(&r, 504, Fmt::Json, MSG_504);
            let r = s.req(
                "GET",
                "/delay/3",
                &[slow, ("Content-Type", "application/xml")],
            );
            assert_error(&r, 504, Fmt::Xml, MSG_504);
        },
    );
    c.it("Accept wins over Content-Type", || {
        let r = s.req(
            "GET",
            "/delay/3",
            &[
                slow,
                ("Content-Type", "application/json"),
                ("Accept", "text/html"),
            ],
        );
        assert_error(&r, 504, Fmt::Html, MSG_504);
    });
    c.it("504 HEAD request does not return a body", || {
        let r = s.req("HEAD", "/delay/3", &[slow]);
        assert_eq!(r.status, 504);
        assert!(r.body.is_empty());
    });
    c.it("502 when the upstream port is closed (text/plain)", || {
        let r = s.req("GET", "/", &[("Host", "closed.test")]);
        assert_error(&r, 502, Fmt::Plain, MSG_502);
    });
    c.it("502 with Accept: application/json", || {
        let r = s.req(
            "GET",
            "/",
            &[("Host", "closed.test"), ("Accept", "application/json")],
        );
        assert_error(&r, 502, Fmt::Json, MSG_502);
    });
    c.it("502 HEAD has no body", || {
        let r = s.req("HEAD", "/", &[("Host", "closed.test")]);
        assert_eq!((r.status, r.body.len()), (502, 0));
    });
    c.finish();
}

/// 12-error_default_type_spec describe("set via error_default_type")
#[test]
fn kong_set_via_error_default_type() {
    let s = S::start(&[("KONG_ERROR_DEFAULT_TYPE", "text/html")]);
    let mut c = Cases::new();
    c.it("no Accept header uses error_default_type", || {
        let r = s.req("GET", "/delay/3", &[("Host", "slow.test")]);
        assert_error(&r, 504, Fmt::Html, MSG_504);
    });
    c.it("HEAD request does not return a body", || {
        let r = s.req("HEAD", "/delay/3", &[("Host", "slow.test")]);
        assert_eq!(r.status, 504);
        assert!(r.body.is_empty(), "{}", r.body_str());
    });
    c.it("502 uses error_default_type too", || {
        let r = s.req("GET", "/", &[("Host", "closed.test")]);
        assert_error(&r, 502, Fmt::Html, MSG_502);
    });
    c.finish();
}

/// 13-error_handlers_spec it("Request For Routers With Trace Method Not
/// Allowed"): `Method not allowed\nrequest_id: <hex>\n`.
#[test]
fn kong_request_for_routers_with_trace_method_not_allowed() {
    let s = S::start(&[]);
    let r = s.req("TRACE", "/", &[("Host", "ok.test")]);
    assert_error(&r, 405, Fmt::Plain, "Method not allowed");
    // nginx-type errors honour Accept and the request Content-Type.
    let r = s.req(
        "TRACE",
        "/",
        &[("Host", "ok.test"), ("Accept", "application/json")],
    );
    assert_error(&r, 405, Fmt::Json, "Method not allowed");
    let r = s.req(
        "TRACE",
        "/",
        &[("Host", "ok.test"), ("Content-Type", "text/html")],
    );
    assert_error(&r, 405, Fmt::Html, "Method not allowed");
    assert_eq!(s.up.count(), 0, "TRACE must not reach the upstream");
}

/// 13-error_handlers_spec it("HTTP 400"): a 10 KiB header line gives 400
/// "Request header or cookie too large".
#[test]
fn kong_http_400_request_header_too_large() {
    let s = S::start(&[]);
    let big = "a".repeat(10 * 1024);
    let r = s.req("GET", "/", &[("Host", "ok.test"), ("X-Large", &big)]);
    assert_error(&r, 400, Fmt::Plain, "Request header or cookie too large");
    let r = s.req(
        "GET",
        "/",
        &[
            ("Host", "ok.test"),
            ("X-Large", &big),
            ("Accept", "application/json"),
        ],
    );
    assert_error(&r, 400, Fmt::Json, "Request header or cookie too large");
    assert_eq!(s.up.count(), 0);
}

/// 400 "Bad request" for an HTTP/1.1 request without Host, honouring
/// error_default_type.
#[test]
fn bad_request_400_body_and_default_type() {
    let s = S::start(&[]);
    let raw = raw_request(
        s.gw.port,
        b"GET / HTTP/1.1\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    let (r, _) = gw_tests::parse_response(&raw).expect("a response");
    assert_error(&r, 400, Fmt::Plain, "Bad request");
    let raw = raw_request(
        s.gw.port,
        b"GET / HTTP/1.1\r\nAccept: application/xml\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    let (r, _) = gw_tests::parse_response(&raw).expect("a response");
    assert_error(&r, 400, Fmt::Xml, "Bad request");
    let s = S::start(&[("KONG_ERROR_DEFAULT_TYPE", "application/json")]);
    let raw = raw_request(
        s.gw.port,
        b"GET / HTTP/1.1\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    let (r, _) = gw_tests::parse_response(&raw).expect("a response");
    assert_error(&r, 400, Fmt::Json, "Bad request");
}

/// 414 "URI too long" for a request line over 8 KiB.
#[test]
fn uri_too_long_414() {
    let s = S::start(&[]);
    let path = format!("/{}", "a".repeat(9 * 1024));
    let r = s.req("GET", &path, &[("Host", "ok.test")]);
    assert_error(&r, 414, Fmt::Plain, "URI too long");
}

/// Upstream 4xx/5xx responses pass through untouched (no Kong body).
#[test]
fn upstream_errors_are_passed_through() {
    let (_hb, hb) = start_httpbin("pass");
    let gw = Gateway::start(&fill_ports(
        "_format_version: \"3.0\"\nservices:\n- name: a\n  url: http://{UP0}\n  routes:\n  - paths: [/]\n",
        &[hb],
    ));
    for code in [400u16, 404, 500, 502, 503, 504] {
        let r = request(
            gw.port,
            "GET",
            &format!("/status/{code}"),
            &[("Accept", "application/json")],
            b"",
        );
        assert_eq!(r.status, code);
        assert!(
            !r.body_str().contains("request_id"),
            "{code}: {}",
            r.body_str()
        );
        assert_eq!(r.header("x-upstream-name"), Some("pass"));
    }
}

/// The connection stays usable after a Kong-generated 404 (keep-alive).
#[test]
fn keep_alive_survives_a_kong_404() {
    let s = S::start(&[]);
    let mut c = Conn::open(s.gw.port);
    let r = c
        .request("GET", "/", &[("Host", "nope.test")], b"")
        .unwrap();
    assert_eq!(r.status, 404);
    let r = c.request("GET", "/x", &[("Host", "ok.test")], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.up.count(), 1);
}
