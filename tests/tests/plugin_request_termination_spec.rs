//! Port of Kong's `spec/03-plugins/14-request-termination/` (DB-less):
//! `01-schema_spec.lua` (through the declarative loader, one config holding
//! every invalid plugin), `02-access_spec.lua` and `03-integration_spec.lua`.
//! One gateway per Kong `describe` block, each Kong `it(...)` a named case.
//! The upstream is httpbin (Kong's mock upstream answers `/status/200`).
//! Skipped: the gRPC case (no gRPC client in this harness).
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway};
use gw_tests::{request, start_httpbin, Conn, Response};
use serde_json::json;

const ACCESS: &str = r#"_format_version: "3.0"
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [api1.request-termination.test]
    plugins: [{name: request-termination, config: {}}]
  - hosts: [api2.request-termination.test]
    plugins: [{name: request-termination, config: {status_code: 404}}]
  - hosts: [api3.request-termination.test]
    plugins: [{name: request-termination, config: {status_code: 406, message: Invalid}}]
  - hosts: [api4.request-termination.test]
    plugins: [{name: request-termination, config: {body: "<html><body><h1>Service is down for maintenance</h1></body></html>"}}]
  - hosts: [api5.request-termination.test]
    plugins:
    - name: request-termination
      config:
        status_code: 451
        content_type: text/html
        body: "<html><body><h1>Service is down due to content infringement</h1></body></html>"
  - hosts: [api6.request-termination.test]
    plugins: [{name: request-termination, config: {status_code: 503, body: '{"code": 1, "message": "Service unavailable"}'}}]
  - hosts: [api8.request-termination.test]
    plugins: [{name: request-termination, config: {status_code: 204}}]
  - name: echo-route
    hosts: [api9.request-termination.test]
    strip_path: false
    paths: ["~/(?<parameter>[^#?/]+)/200"]
    plugins: [{name: request-termination, config: {echo: true, status_code: 404}}]
  - hosts: [api10.request-termination.test]
    plugins: [{name: request-termination, config: {echo: true, trigger: gimme-an-echo, status_code: 404}}]
  - hosts: [api11.request-termination.test]
    plugins: [{name: request-termination, config: {status_code: 418}}]
  - hosts: [api12.request-termination.test]
    plugins: [{name: request-termination, config: {status_code: 200, message: ok}}]
routes:
- hosts: [api7.request-termination.test]
  plugins: [{name: request-termination, config: {}}]
"#;

fn get_host(gw: &Gateway, host: &str, path: &str) -> Response {
    request(gw.port, "GET", path, &[("Host", host)], b"")
}

fn assert_json(r: &Response, status: u16, body: serde_json::Value) {
    assert_eq!(r.status, status, "{}", r.body_str());
    assert_eq!(r.json(), body);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
}

/// Sends on a kept-alive connection (no `Connection` header added, as
/// Kong's test client), so the echoed headers are exactly these.
fn send_keepalive(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut c = Conn::open(gw.port);
    c.request("GET", path, headers, body)
        .unwrap_or_else(|| panic!("no response to GET {path}"))
}

#[test]
fn request_termination_access() {
    let (_bin, port) = start_httpbin("upstream");
    let gw = Gateway::start(&fill_ports(ACCESS, &[port]));
    let mut t = Cases::new();

    // describe("status code and message")
    t.it("default status code and message", || {
        let r = get_host(&gw, "api1.request-termination.test", "/status/200");
        assert_json(&r, 503, json!({"message": "Service unavailable"}));
    });
    t.it(
        "default status code and message with serviceless route",
        || {
            let r = get_host(&gw, "api7.request-termination.test", "/status/200");
            assert_json(&r, 503, json!({"message": "Service unavailable"}));
        },
    );
    t.it("status code with default message", || {
        let r = get_host(&gw, "api2.request-termination.test", "/status/200");
        assert_json(&r, 404, json!({"message": "Not found"}));
    });
    t.it("status code with custom message", || {
        let r = get_host(&gw, "api3.request-termination.test", "/status/200");
        assert_json(&r, 406, json!({"message": "Invalid"}));
    });
    t.it("returns 204 without content length header", || {
        let r = get_host(&gw, "api8.request-termination.test", "/status/204");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("Content-Length"), None);
        assert!(r.body.is_empty());
    });
    // Not in Kong's spec: a status without a default message has an empty
    // body; an explicit message goes with any status.
    t.it(
        "status code without a default message has an empty body",
        || {
            let r = get_host(&gw, "api11.request-termination.test", "/");
            assert_eq!(r.status, 418);
            assert_eq!(r.header("Content-Length"), Some("0"));
            assert_eq!(r.header("Content-Type"), None);
            assert!(r.body.is_empty());
        },
    );
    t.it("a 2xx status with a message", || {
        let r = get_host(&gw, "api12.request-termination.test", "/");
        assert_json(&r, 200, json!({"message": "ok"}));
    });

    // describe("status code and body")
    t.it("default status code and body", || {
        let r = get_host(&gw, "api4.request-termination.test", "/status/200");
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body_str(),
            "<html><body><h1>Service is down for maintenance</h1></body></html>"
        );
        // No content_type: none is sent (Kong's proxy has `default_type ''`).
        assert_eq!(r.header("Content-Type"), None);
    });
    t.it(
        "status code with default message (body and content_type)",
        || {
            let r = get_host(&gw, "api5.request-termination.test", "/status/200");
            assert_eq!(r.status, 451);
            assert_eq!(
                r.body_str(),
                "<html><body><h1>Service is down due to content infringement</h1></body></html>"
            );
            assert_eq!(r.header("Content-Type"), Some("text/html"));
        },
    );
    t.it("status code with custom message (raw JSON body)", || {
        let r = get_host(&gw, "api6.request-termination.test", "/status/200");
        assert_eq!(r.status, 503);
        assert_eq!(
            r.json(),
            json!({"code": 1, "message": "Service unavailable"})
        );
    });

    t.it("returns server tokens with Server header", || {
        let r = get_host(&gw, "api1.request-termination.test", "/status/200");
        assert_eq!(r.header("Server"), Some("kong/3.10.0"));
    });

    // describe("echo & trigger")
    t.it("echos a request if no trigger is set", || {
        let r = send_keepalive(
            &gw,
            "/status/200?hello=there",
            &[("Host", "api9.request-termination.test")],
            b"cool body",
        );
        assert_eq!(r.status, 404, "{}", r.body_str());
        let json = r.json();
        assert_eq!(json["message"], "Not found");
        assert_eq!(
            json["matched_route"]["hosts"][0],
            "api9.request-termination.test"
        );
        assert_eq!(json["matched_route"]["name"], "echo-route");
        assert_eq!(json["matched_service"]["name"], "mock");
        assert_eq!(json["kong"]["worker_pid"], json!(gw.proc.pid()));
        assert!(json["kong"]["node_id"].is_string());
        assert_eq!(
            json["request"],
            json!({
                "headers": {
                    "content-length": "9",
                    "host": "api9.request-termination.test",
                },
                "host": "api9.request-termination.test",
                "method": "GET",
                "path": "/status/200",
                "port": gw.port,
                "query": {"hello": "there"},
                "raw_body": "cool body",
                "scheme": "http",
                "uri_captures": {
                    "named": {"parameter": "status"},
                    "unnamed": ["status"],
                },
            })
        );
    });
    t.it(
        "doesn't echo a request if the trigger is set but not specified",
        || {
            let r = get_host(&gw, "api10.request-termination.test", "/status/200");
            assert_eq!(r.status, 200, "{}", r.body_str());
        },
    );
    t.it(
        "echos a request if the trigger is specified as a header",
        || {
            let r = send_keepalive(
                &gw,
                "/status/200?hello=there",
                &[
                    ("Host", "api10.request-termination.test"),
                    ("Gimme-An-Echo", "anything will do"),
                ],
                b"cool body",
            );
            assert_eq!(r.status, 404, "{}", r.body_str());
            let json = r.json();
            assert_eq!(
                json["matched_route"]["hosts"][0],
                "api10.request-termination.test"
            );
            assert_eq!(
                json["request"],
                json!({
                    "headers": {
                        "content-length": "9",
                        "gimme-an-echo": "anything will do",
                        "host": "api10.request-termination.test",
                    },
                    "host": "api10.request-termination.test",
                    "method": "GET",
                    "path": "/status/200",
                    "port": gw.port,
                    "query": {"hello": "there"},
                    "raw_body": "cool body",
                    "scheme": "http",
                    "uri_captures": {"named": {}, "unnamed": []},
                })
            );
        },
    );
    t.it(
        "echos a request if the trigger is specified as a query parameter",
        || {
            let r = send_keepalive(
                &gw,
                "/status/200?hello=there&gimme-an-echo=anything%20will%20do",
                &[("Host", "api10.request-termination.test")],
                b"cool body",
            );
            assert_eq!(r.status, 404, "{}", r.body_str());
            let json = r.json();
            assert_eq!(
                json["request"]["query"],
                json!({"hello": "there", "gimme-an-echo": "anything will do"})
            );
            assert_eq!(
                json["request"]["headers"],
                json!({"content-length": "9", "host": "api10.request-termination.test"})
            );
            assert_eq!(json["request"]["raw_body"], "cool body");
        },
    );
    // Not in Kong's spec: a JSON body is parsed into `body` as well.
    t.it("echo parses a JSON body", || {
        let r = send_keepalive(
            &gw,
            "/status/200",
            &[
                ("Host", "api9.request-termination.test"),
                ("Content-Type", "application/json"),
            ],
            br#"{"a":[1,2]}"#,
        );
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["request"]["body"], json!({"a": [1, 2]}));
    });
    t.finish();
}

/// A config with one route per plugin config (plugins of one name must
/// differ in scope).
fn per_route(configs: &[&str]) -> String {
    let mut yml = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n",
    );
    for (i, c) in configs.iter().enumerate() {
        yml.push_str(&format!(
            "  - name: r{i}\n    paths: [/r{i}]\n    plugins: [{{name: request-termination, config: {c}}}]\n"
        ));
    }
    yml
}

#[test]
fn request_termination_schema_through_the_loader() {
    // 01-schema_spec.lua "errors": each invalid config is refused with
    // Kong's message at Kong's path.
    let yml = per_route(&[
        "{status_code: abcd}",
        "{status_code: null}",
        "{status_code: 99}",
        "{status_code: 600}",
        "{message: error, body: test}",
        "{message: error, content_type: text/html, body: test}",
        "{message: error, content_type: text/html}",
        "{content_type: text/html}",
        "{echo: true, content_type: text/html, body: \"<body><h1>Not found</h1>\"}",
    ]);
    let err = match Gateway::try_start(&yml) {
        Ok(_) => panic!("gateway started with invalid request-termination configs"),
        Err(out) => out,
    };
    let mut t = Cases::new();
    let count = |text: &str, n: usize| {
        let needle = format!("in 'plugins' entity 'request-termination': {text}");
        assert_eq!(err.matches(&needle).count(), n, "`{needle}` in:\n{err}");
    };
    t.it("status_code should only accept numbers", || {
        count("field 'config.status_code': expected an integer", 1)
    });
    t.it("status_code can not be set as null", || {
        count("field 'config.status_code': required field missing", 1)
    });
    t.it("status_code < 100 / status_code > 599", || {
        count(
            "field 'config.status_code': value should be between 100 and 599",
            2,
        )
    });
    t.it(
        "#message with body / message with body and content_type / message with content_type",
        || {
            count(
                "field 'config': message cannot be used with content_type or body",
                3,
            )
        },
    );
    t.it("content_type without body", || {
        count("field 'config': content_type requires a body", 1)
    });
    t.it("echo with body & content_type", || {
        count(
            "field 'config': echo cannot be used with content_type and body",
            1,
        )
    });
    t.finish();

    // The valid ones load.
    let ok = per_route(&[
        "{status_code: 404}",
        "{message: Not found}",
        "{content_type: text/html, body: \"<body><h1>Not found</h1>\"}",
        "{body: \"<body><h1>Not found</h1>\"}",
        "{echo: true, trigger: header_name}",
    ]);
    if let Err(out) = Gateway::try_start(&ok) {
        panic!("valid request-termination configs refused:\n{out}");
    }
}

const INTEGRATION: &str = r#"_format_version: "3.0"
consumers:
- username: bob
  id: 6f1b3c6a-0000-4000-8000-0000000000b0
  keyauth_credentials:
  - key: kong
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [api1.request-termination.test]
plugins:
- name: key-auth
- name: request-termination
  consumer: bob
"#;

#[test]
fn request_termination_integration() {
    let (_bin, port) = start_httpbin("upstream");
    let gw = Gateway::start(&fill_ports(INTEGRATION, &[port]));
    let mut t = Cases::new();
    t.it("can be applied on a consumer", || {
        let r = request(
            gw.port,
            "GET",
            "/request",
            &[
                ("Host", "api1.request-termination.test"),
                ("apikey", "kong"),
            ],
            b"",
        );
        assert_json(&r, 503, json!({"message": "Service unavailable"}));
        // Without the consumer the request goes through key-auth only.
        let r = request(
            gw.port,
            "GET",
            "/anything",
            &[("Host", "api1.request-termination.test")],
            b"",
        );
        assert_eq!(r.status, 401);
    });
    t.finish();
}
