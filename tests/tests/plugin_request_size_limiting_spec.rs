//! Port of Kong's `spec/03-plugins/12-request-size-limiting/01-access_spec.lua`
//! (DB-less), each Kong `it(...)` a named case; plus the schema's defaults
//! and messages through the declarative loader.
//!
//! Kong measures a body without `Content-Length` after reading it whole.
//! Here one that fits in `client_body_buffer_size` is read before access
//! (the spec's "request body size < nginx_http_client_body_buffer_size"
//! cases: nothing reaches the upstream); a larger one is counted while it
//! streams and fails with the same answer once past the limit.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{build_request, parse_response, raw_request, request, Response};

const MB: usize = 1 << 20;
const KB: usize = 1 << 10;
const TEST_SIZE: usize = 2;
const UNITS: [(&str, usize); 3] = [("megabytes", MB), ("kilobytes", KB), ("bytes", 1)];

const CONFIG: &str = r#"_format_version: "3.0"
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [limit.test]
    plugins: [{name: request-size-limiting, config: {allowed_payload_size: 2}}]
  - hosts: [required.test]
    plugins: [{name: request-size-limiting, config: {allowed_payload_size: 2, require_content_length: true}}]
  - hosts: [limit_megabytes.test]
    plugins: [{name: request-size-limiting, config: {allowed_payload_size: 2, size_unit: megabytes}}]
  - hosts: [limit_kilobytes.test]
    plugins: [{name: request-size-limiting, config: {allowed_payload_size: 2, size_unit: kilobytes}}]
  - hosts: [limit_bytes.test]
    plugins: [{name: request-size-limiting, config: {allowed_payload_size: 2, size_unit: bytes}}]
  - hosts: [default.test]
    plugins: [{name: request-size-limiting}]
"#;

/// A POST with a `Content-Length` body of `len` bytes.
fn post(gw: &Gateway, host: &str, len: usize, expect: bool) -> Response {
    let body = vec![b'a'; len];
    let mut h = vec![("Host", host)];
    if expect {
        h.push(("Expect", "100-continue"));
    }
    request(gw.port, "POST", "/request", &h, &body)
}

/// A GET with a chunked body of one `len`-byte chunk (Kong's spec sends it
/// so).
fn chunked(gw: &Gateway, host: &str, len: usize, expect: bool) -> Response {
    let mut body = format!("{len:x}\r\n").into_bytes();
    body.extend(std::iter::repeat_n(b'a', len));
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut h = vec![
        ("Host", host),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
    ];
    if expect {
        h.push(("Expect", "100-continue"));
    }
    let bytes = build_request("GET", "/request", &h, &body);
    let raw = raw_request(gw.port, &bytes, Duration::from_secs(10)).unwrap();
    parse_response(&raw)
        .map(|(r, _)| r)
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)))
}

fn assert_refused(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.body_str());
    assert_eq!(r.json()["message"], "Request size limit exceeded");
}

fn assert_ok(r: &Response, up: &Recorder, len: usize) {
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last().body.len(), len);
}

#[test]
fn request_size_limiting_access() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(CONFIG, &[up.port]));
    let mut t = Cases::new();

    // describe("with Content-Length")
    t.it("works if size is lower than limit", || {
        assert_ok(
            &post(&gw, "limit.test", TEST_SIZE * MB, false),
            &up,
            TEST_SIZE * MB,
        );
    });
    t.it(
        "works if size is lower than limit and Expect header",
        || {
            assert_ok(
                &post(&gw, "limit.test", TEST_SIZE * MB, true),
                &up,
                TEST_SIZE * MB,
            );
        },
    );
    t.it("blocks if size is greater than limit", || {
        let before = up.count();
        assert_refused(&post(&gw, "limit.test", TEST_SIZE * MB + 1, false), 413);
        assert_eq!(up.count(), before, "reached the upstream");
    });
    t.it(
        "blocks if size is greater than limit and Expect header",
        || {
            assert_refused(&post(&gw, "limit.test", TEST_SIZE * MB + 1, true), 417);
        },
    );
    for (unit, factor) in UNITS {
        let host = format!("limit_{unit}.test");
        t.it(
            &format!("blocks if size is greater than limit when unit in {unit}"),
            || {
                assert_refused(&post(&gw, &host, TEST_SIZE * factor + 1, false), 413);
            },
        );
        t.it(
            &format!("works if size is less than limit when unit in {unit}"),
            || {
                let len = TEST_SIZE * factor - 1;
                assert_ok(&post(&gw, &host, len, false), &up, len);
            },
        );
    }

    // describe("without Content-Length(chunked request body)")
    // describe("[request body size > nginx_http_client_body_buffer_size]")
    t.it("works if size is lower than limit (chunked, large)", || {
        let len = TEST_SIZE * MB;
        assert_ok(&chunked(&gw, "limit.test", len, false), &up, len);
    });
    t.it(
        "works if size is lower than limit and Expect header (chunked, large)",
        || {
            let len = TEST_SIZE * MB;
            assert_ok(&chunked(&gw, "limit.test", len, true), &up, len);
        },
    );
    t.it(
        "blocks if size is greater than limit (chunked, large)",
        || {
            assert_refused(&chunked(&gw, "limit.test", TEST_SIZE * MB + 1, false), 413);
        },
    );
    t.it(
        "blocks if size is greater than limit and Expect header (chunked, large)",
        || {
            assert_refused(&chunked(&gw, "limit.test", TEST_SIZE * MB + 1, true), 417);
        },
    );
    // describe("[request body size < nginx_http_client_body_buffer_size]")
    t.it("works if size is lower than limit (chunked, small)", || {
        let len = TEST_SIZE * KB;
        assert_ok(&chunked(&gw, "limit_kilobytes.test", len, false), &up, len);
    });
    t.it(
        "works if size is lower than limit and Expect header (chunked, small)",
        || {
            let len = TEST_SIZE * KB;
            assert_ok(&chunked(&gw, "limit_kilobytes.test", len, true), &up, len);
        },
    );
    t.it(
        "blocks if size is greater than limit (chunked, small)",
        || {
            let before = up.count();
            let r = chunked(&gw, "limit_kilobytes.test", TEST_SIZE * KB + 1, false);
            assert_refused(&r, 413);
            // Read before access: the upstream never saw it, as in Kong.
            assert_eq!(up.count(), before, "reached the upstream");
        },
    );
    t.it(
        "blocks if size is greater than limit and Expect header (chunked, small)",
        || {
            let r = chunked(&gw, "limit_kilobytes.test", TEST_SIZE * KB + 1, true);
            assert_refused(&r, 417);
        },
    );
    for (unit, factor) in UNITS {
        let host = format!("limit_{unit}.test");
        t.it(
            &format!("blocks if size is greater than limit when unit in {unit} (chunked)"),
            || {
                assert_refused(&chunked(&gw, &host, TEST_SIZE * factor + 1, false), 413);
            },
        );
        t.it(
            &format!("works if size is less than limit when unit in {unit} (chunked)"),
            || {
                let len = TEST_SIZE * factor;
                assert_ok(&chunked(&gw, &host, len, false), &up, len);
            },
        );
    }

    // describe("Content-Length header required")
    t.it("blocks if header is not provided", || {
        let r = request(
            gw.port,
            "GET",
            "/request",
            &[("Host", "required.test")],
            b"",
        );
        assert_eq!(r.status, 411, "{}", r.body_str());
        assert_eq!(
            r.json()["message"],
            "A valid Content-Length header is required"
        );
    });
    // Not in Kong's spec: a chunked body passes the requirement.
    t.it("a chunked body needs no Content-Length", || {
        let r = chunked(&gw, "required.test", 10, false);
        assert_eq!(r.status, 200, "{}", r.body_str());
    });
    // The default: 128 MiB.
    t.it("the default limit is 128 megabytes", || {
        let r = request(
            gw.port,
            "POST",
            "/request",
            &[
                ("Host", "default.test"),
                ("Content-Length", &(128 * MB + 1).to_string()),
                ("Connection", "close"),
            ],
            b"",
        );
        assert_refused(&r, 413);
    });
    t.finish();
}

#[test]
fn request_size_limiting_schema_through_the_loader() {
    let yml = r#"_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - {name: r1, paths: [/r1], plugins: [{name: request-size-limiting, config: {size_unit: gigabytes}}]}
  - {name: r2, paths: [/r2], plugins: [{name: request-size-limiting, config: {allowed_payload_size: 1.5}}]}
  - {name: r3, paths: [/r3], plugins: [{name: request-size-limiting, config: {require_content_length: null}}]}
"#;
    let err = match Gateway::try_start(yml) {
        Ok(_) => panic!("gateway started with invalid request-size-limiting configs"),
        Err(out) => out,
    };
    for text in [
        "field 'config.size_unit': expected one of: megabytes, kilobytes, bytes",
        "field 'config.allowed_payload_size': expected an integer",
        "field 'config.require_content_length': required field missing",
    ] {
        let needle = format!("in 'plugins' entity 'request-size-limiting': {text}");
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    }
}
