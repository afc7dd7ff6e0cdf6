//! Port of Kong's `spec/03-plugins/15-response-transformer/` (DB-less):
//! `03-api_spec.lua` through the declarative loader, `04-filter_spec.lua`
//! and `05-big_response_body_spec.lua` against httpbin (Kong's mock
//! upstream), and the handler-level cases of `01-header_transformer_spec`
//! / `02-body_transformer_spec` on proxied responses (their unit cases are
//! ported beside the code). One gateway per Kong `describe` block, each
//! Kong `it(...)` a named case.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{request, start_httpbin, Conn, Response};
use serde_json::json;

const FILTER: &str = r#"_format_version: "3.0"
consumers:
- username: bob
  basicauth_credentials:
  - username: bob
    password: kong
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [response.test]
    plugins:
    - name: response-transformer
      config:
        remove:
          headers: [Access-Control-Allow-Origin]
          json: [url]
  - hosts: [response2.test]
    plugins:
    - name: response-transformer
      config:
        replace:
          json: ["headers:/hello/world", "uri_args:this is a / test", "url:\"wot\""]
  - hosts: [response3.test]
    plugins:
    - name: response-transformer
      config: {remove: {json: [ip]}}
    - name: basic-auth
  - hosts: [big.response.test]
    methods: [POST]
    plugins:
    - name: response-transformer
      config:
        add: {json: ["p1:v1"]}
        remove: {json: [params]}
"#;

fn send(gw: &Gateway, method: &str, path: &str, host: &str, body: &[u8]) -> Response {
    request(gw.port, method, path, &[("Host", host)], body)
}

#[test]
fn response_transformer_filter() {
    let (_bin, port) = start_httpbin("upstream");
    let gw = Gateway::start(&fill_ports(FILTER, &[port]));
    let mut t = Cases::new();

    // describe("parameters")
    t.it("remove a parameter", || {
        let r = send(&gw, "GET", "/get", "response.test", b"");
        assert_eq!(r.status, 200);
        let j = r.json();
        assert!(j.get("url").is_none(), "{j}");
        assert!(j.get("headers").is_some(), "{j}");
        // Content-Length was dropped: the new body is sent chunked.
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    });
    t.it("remove a header", || {
        let r = send(
            &gw,
            "GET",
            "/response-headers?Access-Control-Allow-Origin=*",
            "response.test",
            b"",
        );
        assert_eq!(r.status, 200);
        r.json();
        assert_eq!(r.header("access-control-allow-origin"), None);
    });
    t.it("replace a body parameter on GET", || {
        // httpbin echoes these arguments as top-level body properties
        // (Kong's mock upstream has `headers`, `uri_args` and `url`).
        let r = send(
            &gw,
            "GET",
            "/response-headers?headers=h&uri_args=a&url=u",
            "response2.test",
            b"",
        );
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["headers"], "/hello/world");
        assert_eq!(j["url"], "\"wot\"");
        assert_eq!(j["uri_args"], "this is a / test");
        // cjson escapes slashes
        assert!(
            r.body_str().contains(r#""headers":"\/hello\/world""#),
            "{}",
            r.body_str()
        );
    });
    t.it("does not replace a body parameter that is absent", || {
        let r = send(&gw, "GET", "/get", "response2.test", b"");
        let j = r.json();
        assert!(j.get("uri_args").is_none(), "{j}");
        assert_eq!(j["url"], "\"wot\"");
        assert_eq!(j["headers"], "/hello/world");
    });

    // describe("regressions")
    t.it(
        "does not throw an error when request was short-circuited in access phase",
        || {
            let r = send(&gw, "GET", "/get", "response3.test", b"");
            assert_eq!(r.status, 401);
            assert_eq!(r.json()["message"], "Unauthorized");
            assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            );
        },
    );
    t.it(
        "removes a property of a proxied response after auth",
        || {
            // basic auth bob:kong
            let r = request(
                gw.port,
                "GET",
                "/get",
                &[
                    ("Host", "response3.test"),
                    ("Authorization", "Basic Ym9iOmtvbmc="),
                ],
                b"",
            );
            assert_eq!(r.status, 200, "{}", r.body_str());
            let j = r.json();
            assert!(j.get("origin").is_some());
            assert!(j.get("ip").is_none());
        },
    );

    // 05-big_response_body_spec.lua
    let big = json!({"mock_json": {"big_field": "*".repeat(1024 * 1024)}}).to_string();
    let post_big = || {
        request(
            gw.port,
            "POST",
            "/post",
            &[
                ("Host", "big.response.test"),
                ("Content-Type", "application/json"),
            ],
            big.as_bytes(),
        )
    };
    t.it("add new parameters on large POST", || {
        let r = post_big();
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["p1"], "v1");
        assert_eq!(
            j["json"]["mock_json"]["big_field"].as_str().map(str::len),
            Some(1024 * 1024)
        );
    });
    t.it("remove parameters on large POST", || {
        let r = post_big();
        assert_eq!(r.status, 200);
        assert!(r.json().get("params").is_none());
    });
    t.finish();
}

const HANDLER: &str = r#"_format_version: "3.0"
services:
- name: plain
  url: http://{UP0}
  routes:
  - hosts: [headers.test]
    plugins:
    - name: response-transformer
      config:
        remove: {headers: ["h1:v1", X_Gone]}
        rename: {headers: ["h3:h4", "X-Multi:X-Renamed"]}
        replace: {headers: ["h2:v3", "absent:x"]}
        add: {headers: ["h5:v5", "h2:not-added"]}
        append: {headers: ["h5:v6", "h6:v7"]}
  - hosts: [json.test]
    plugins:
    - name: response-transformer
      config:
        add:
          json: ["p1:v1", "p3:value:3", "p4:\"v1\"", "p5:-1", "p6:false", "p7:true"]
          json_types: [string, string, string, number, boolean, boolean]
        remove: {json: [version]}
        rename: {json: ["method:verb"]}
        replace: {json: ["uri:/replaced"]}
        append: {json: ["body:appended"]}
  - hosts: [headers-only.test]
    plugins:
    - name: response-transformer
      config: {remove: {headers: [h1, h2, h3]}}
  - hosts: [terminated.test]
    plugins:
    - name: request-termination
      config: {status_code: 503}
    - name: response-transformer
      config:
        add: {json: ["p1:v1"], headers: ["x-added:yes"]}
- name: chunked
  url: http://{UP1}
  routes:
  - hosts: [chunked.test]
    plugins:
    - name: response-transformer
      config: {add: {json: ["p1:v1"]}}
- name: text
  url: http://{UP2}
  routes:
  - hosts: [text.test]
    plugins:
    - name: response-transformer
      config: {add: {json: ["p1:v1"]}}
- name: problem
  url: http://{UP3}
  routes:
  - hosts: [problem.test]
    plugins:
    - name: response-transformer
      config: {remove: {json: [headers]}}
"#;

#[test]
fn response_transformer_handler() {
    let plain = Recorder::start_with_headers(&[
        ("h1", "v1"),
        ("h2", "v2"),
        ("h3", "v3"),
        ("X-Multi", "a"),
        ("X-Multi", "b"),
        ("x-gone", "1"),
    ]);
    let chunked = Recorder::start_with_headers(&[("Transfer-Encoding", "chunked")]);
    let text = Recorder::start_with_headers(&[("Content-Type", "text/plain")]);
    let problem = Recorder::start_with_headers(&[(
        "Content-Type",
        "application/problem+json; charset=utf-8",
    )]);
    let gw = Gateway::start(&fill_ports(
        HANDLER,
        &[plain.port, chunked.port, text.port, problem.port],
    ));
    let get = |host: &str| send(&gw, "GET", "/x", host, b"");
    let mut t = Cases::new();

    // 01-header_transformer_spec.lua, on a proxied response
    t.it(
        "performing remove, rename, replace, add, append together",
        || {
            let r = get("headers.test");
            assert_eq!(r.status, 200);
            assert_eq!(r.header("h1"), None);
            assert_eq!(r.header("x-gone"), None, "X_Gone names x-gone");
            assert_eq!(r.header("h3"), None);
            assert_eq!(r.header_all("h4"), ["v3"]);
            assert_eq!(r.header("x-multi"), None);
            assert_eq!(r.header_all("x-renamed"), ["a", "b"]);
            assert_eq!(r.header_all("h2"), ["v3"]);
            assert_eq!(r.header("absent"), None);
            assert_eq!(r.header_all("h5"), ["v5", "v6"]);
            assert_eq!(r.header_all("h6"), ["v7"]);
            // no JSON transform: the body and its length are untouched
            assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            );
        },
    );
    // 02-body_transformer_spec.lua "leave body alone"
    t.it(
        "body remains unaltered if no transforms have been set",
        || {
            let r = get("headers-only.test");
            let body = r.body_str();
            assert!(body.contains("\"uri\""), "{body}");
            assert!(body.starts_with('{'));
            assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            );
            assert_eq!(r.header("h1"), None);
        },
    );
    t.it("transforms the JSON body with json_types", || {
        let r = get("json.test");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), None);
        let j = r.json();
        assert!(j.get("version").is_none(), "{j}");
        assert!(j.get("method").is_none());
        assert_eq!(j["verb"], "GET");
        assert_eq!(j["uri"], "/replaced");
        assert_eq!(j["body"], json!(["", "appended"]));
        assert_eq!(j["p1"], "v1");
        assert_eq!(j["p3"], "value:3");
        assert_eq!(j["p4"], "\"v1\"");
        assert_eq!(j["p5"], -1);
        assert_eq!(j["p6"], false);
        assert_eq!(j["p7"], true);
        // headers (an array) are kept as they were
        assert!(j["headers"].is_array());
    });
    t.it("a transformed body keeps the connection usable", || {
        let mut c = Conn::open(gw.port);
        for _ in 0..3 {
            let r = c
                .request("GET", "/x", &[("Host", "json.test")], b"")
                .expect("response on a kept-alive connection");
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["p1"], "v1");
        }
    });
    t.it("a HEAD response is left without a body", || {
        let mut c = Conn::open(gw.port);
        c.send(b"HEAD /x HTTP/1.1\r\nHost: json.test\r\n\r\n")
            .unwrap();
        let r = c.read_head_response(Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        let r = c
            .request("GET", "/x", &[("Host", "json.test")], b"")
            .unwrap();
        assert_eq!(r.json()["p1"], "v1");
    });
    t.it("transforms a chunked JSON response", || {
        let r = get("chunked.test");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["p1"], "v1");
    });
    t.it("leaves a response that is not JSON alone", || {
        let r = get("text.test");
        assert_eq!(r.status, 200);
        assert!(r.json().get("p1").is_none());
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    });
    t.it("transforms application/problem+json", || {
        let r = get("problem.test");
        assert!(r.json().get("headers").is_none());
        assert_eq!(r.header("content-length"), None);
    });
    t.it("transforms a response Kong generates", || {
        let r = get("terminated.test");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-added"), Some("yes"));
        assert_eq!(
            r.json(),
            json!({"message": "Service unavailable", "p1": "v1"})
        );
        assert_eq!(
            r.body_str(),
            r#"{"message":"Service unavailable","p1":"v1"}"#
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    });
    t.finish();
}

fn per_route(configs: &[&str]) -> String {
    let mut yml = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n",
    );
    for (i, c) in configs.iter().enumerate() {
        yml.push_str(&format!(
            "  - name: r{i}\n    paths: [/r{i}]\n    plugins: [{{name: response-transformer, config: {c}}}]\n"
        ));
    }
    yml
}

/// 03-api_spec.lua, through the declarative loader.
#[test]
fn response_transformer_schema_through_the_loader() {
    let err = match Gateway::try_start(&per_route(&[
        "{rename: {headers: [x-request-idx-custom-request-id]}}",
        "{rename: {headers: [\"x-requ,est-id:x-custom-request-id\"]}}",
        "{add: {headers: [just_a_key]}}",
        "{replace: {headers: [just_a_key]}}",
        "{append: {headers: [just_a_key]}}",
        "{remove: {headers: null, json: null}, rename: {headers: null, json: null}, \
         replace: {headers: null, json: null, json_types: null}, \
         add: {headers: null, json: null, json_types: null}, \
         append: {headers: null, json: null, json_types: null}}",
        "{add: {json_types: [integer]}}",
    ])) {
        Ok(_) => panic!("gateway started with invalid response-transformer configs"),
        Err(out) => out,
    };
    let mut t = Cases::new();
    let count = |text: &str, n: usize| {
        let needle = format!("in 'plugins' entity 'response-transformer': {text}");
        assert_eq!(err.matches(&needle).count(), n, "`{needle}` in:\n{err}");
    };
    t.it(
        "rename fails with missing colons for header old_name/new_name separation",
        || {
            count(
                "field 'config.rename.headers.1': invalid value: x-request-idx-custom-request-id",
                1,
            )
        },
    );
    t.it(
        "rename fails with invalid header name for old_name or new_name separation",
        || {
            count(
                "field 'config.rename.headers.1': 'x-requ,est-id' is not a valid header",
                1,
            )
        },
    );
    t.it(
        "add fails with missing colons for key/value separation",
        || count("field 'config.add.headers.1': invalid value: just_a_key", 1),
    );
    t.it(
        "replace fails with missing colons for key/value separation",
        || {
            count(
                "field 'config.replace.headers.1': invalid value: just_a_key",
                1,
            )
        },
    );
    t.it(
        "append fails with missing colons for key/value separation",
        || {
            count(
                "field 'config.append.headers.1': invalid value: just_a_key",
                1,
            )
        },
    );
    t.it("it does not allow null value for arrays", || {
        for f in [
            "remove.headers",
            "remove.json",
            "rename.headers",
            "rename.json",
            "replace.headers",
            "replace.json",
            "replace.json_types",
            "add.headers",
            "add.json",
            "add.json_types",
            "append.headers",
            "append.json",
            "append.json_types",
        ] {
            count(&format!("field 'config.{f}': required field missing"), 1);
        }
    });
    t.it("json_types are boolean, number or string", || {
        count(
            "field 'config.add.json_types.1': expected one of: boolean, number, string",
            1,
        )
    });
    t.finish();

    // remove succeeds without colons, rename succeeds with colons
    let ok = per_route(&[
        "{remove: {headers: [just_a_key], json: [just_a_key]}}",
        "{rename: {headers: [\"x-request-id:x-custom-request-id\"], json: [\"old_key:new_key\"]}}",
    ]);
    if let Err(out) = Gateway::try_start(&ok) {
        panic!("valid response-transformer configs refused:\n{out}");
    }
}
