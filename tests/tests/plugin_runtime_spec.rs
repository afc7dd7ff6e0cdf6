//! The plugin runtime's scope rules on answers Kong gives itself: when a
//! request is answered before the access phase (no route, TRACE, a body
//! over `client_max_body_size`, an https-only route over http, a non-gRPC
//! request on a gRPC route), Kong runs the *global* plugins' header_filter,
//! body_filter and log on the answer (`Kong.handle_error` collects them for
//! nginx's own errors; the collected iterator falls back to the global one
//! when access never collected), and no route- or service-scoped plugin.
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::request;

const CONFIG: &str = r#"_format_version: "3.0"
plugins:
- name: response-transformer
  config: {add: {headers: ["X-Global:yes"]}}
services:
- name: mock
  url: http://{UP0}
  plugins:
  - name: response-transformer
    config: {add: {headers: ["X-Service:yes"]}}
  routes:
  - name: plain
    hosts: [plain.test]
  - name: https-only
    hosts: [secure.test]
    protocols: [https]
  - name: grpc-only
    hosts: [grpc.test]
    protocols: [grpc]
- name: bare
  url: http://{UP0}
  routes:
  - name: disabled
    hosts: [disabled.test]
    plugins:
    - name: response-transformer
      enabled: false
      config: {add: {headers: ["X-Route:yes"]}}
routes:
- name: serviceless
  hosts: [noservice.test]
  plugins:
  - name: key-auth
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"#;

#[test]
fn global_plugins_run_on_answers_before_access() {
    let up = Recorder::start();
    let yml = fill_ports(CONFIG, &[up.port]);
    let gw = Gateway::start_with(&yml, &[("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "1k")]);
    let mut t = Cases::new();

    t.it(
        "a routed request runs the service's instance, which masks the global one",
        || {
            let r = request(gw.port, "GET", "/", &[("Host", "plain.test")], b"");
            assert_eq!(r.status, 200, "{}", r.body_str());
            assert_eq!(r.header("x-service"), Some("yes"));
            assert_eq!(r.header("x-global"), None);
        },
    );
    t.it("no route: 404 with the global plugins only", || {
        let r = request(gw.port, "GET", "/", &[("Host", "nowhere.test")], b"");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x-global"), Some("yes"));
        assert_eq!(r.header("x-service"), None);
    });
    t.it("TRACE: nginx's 405 with the global plugins", || {
        let r = request(gw.port, "TRACE", "/", &[("Host", "plain.test")], b"");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("x-global"), Some("yes"));
        assert_eq!(r.header("x-service"), None);
    });
    t.it(
        "a body over client_max_body_size: 413 with the global plugins",
        || {
            let body = vec![b'a'; 2048];
            let r = request(gw.port, "POST", "/", &[("Host", "plain.test")], &body);
            assert_eq!(r.status, 413);
            assert_eq!(r.header("x-global"), Some("yes"));
            assert_eq!(r.header("x-service"), None);
        },
    );
    t.it(
        "https-only route over http: 426 with the global plugins",
        || {
            let r = request(gw.port, "GET", "/", &[("Host", "secure.test")], b"");
            assert_eq!(r.status, 426);
            assert_eq!(r.header("x-global"), Some("yes"));
            assert_eq!(r.header("x-service"), None);
        },
    );
    t.it(
        "non-gRPC request on a gRPC route: 415 with the global plugins",
        || {
            let r = request(gw.port, "GET", "/", &[("Host", "grpc.test")], b"");
            assert_eq!(r.status, 415);
            assert_eq!(r.header("x-global"), Some("yes"));
            assert_eq!(r.header("x-service"), None);
        },
    );
    t.it(
        "a disabled instance neither runs nor masks the global one",
        || {
            let r = request(gw.port, "GET", "/", &[("Host", "disabled.test")], b"");
            assert_eq!(r.status, 200, "{}", r.body_str());
            assert_eq!(r.header("x-route"), None);
            assert_eq!(r.header("x-global"), Some("yes"));
        },
    );
    t.it(
        "a serviceless route runs its plugins: key-auth answers first",
        || {
            let r = request(gw.port, "GET", "/", &[("Host", "noservice.test")], b"");
            assert_eq!(r.status, 401);
            assert_eq!(r.json()["message"], "No API key found in request");
            assert_eq!(r.header("x-global"), Some("yes"));
        },
    );
    t.it("a serviceless route, plugins passed: Kong's 503", || {
        let r = request(
            gw.port,
            "GET",
            "/",
            &[("Host", "noservice.test"), ("apikey", "alice-key")],
            b"",
        );
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["message"], "no Service found with those values");
        assert_eq!(r.header("x-global"), Some("yes"));
    });
    t.finish();
}

/// `spec/02-integration/05-proxy/11-handler_spec.lua` ("OpenResty phases:
/// rewrite_by_lua") with Kong's `rewriter` fixture plugin, which sets the
/// `rewriter` request header in the rewrite phase. Kong runs rewrite
/// handlers of global instances only, before routing.
#[test]
fn rewrite_runs_global_instances_only() {
    let up = Recorder::start();
    let plugins = [("KONG_PLUGINS", "bundled,rewriter")];

    // Enabled on all routes: a global instance runs, and its header is
    // there before routing (a route matching on it is taken).
    let yml = fill_ports(
        r#"_format_version: "3.0"
plugins:
- name: rewriter
  config: {value: global plugin}
services:
- name: mock_upstream
  url: http://{UP0}
  routes:
  - name: plain
    protocols: [http]
    hosts: [mock_upstream]
  - name: by-rewriter-header
    hosts: [mock_upstream]
    headers: {rewriter: [global plugin]}
    paths: [/by-header]
    strip_path: false
"#,
        &[up.port],
    );
    let gw = Gateway::start_with(&yml, &plugins);
    let mut t = Cases::new();
    t.it("enabled on all routes: runs", || {
        let r = request(
            gw.port,
            "GET",
            "/request",
            &[("Host", "mock_upstream")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(up.last().header("rewriter"), Some("global plugin"));
    });
    t.it("a client's own value is replaced", || {
        let h = [("Host", "mock_upstream"), ("rewriter", "client")];
        let r = request(gw.port, "GET", "/request", &h, b"");
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(up.last().header_all("rewriter"), vec!["global plugin"]);
    });
    t.it("routing sees the header rewrite set", || {
        let r = request(
            gw.port,
            "GET",
            "/by-header",
            &[("Host", "mock_upstream")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(up.last().target, "/by-header");
    });
    t.it("a request no route matches still had its rewrite", || {
        let r = request(gw.port, "GET", "/", &[("Host", "nowhere.test")], b"");
        assert_eq!(r.status, 404);
    });
    drop(gw);

    // Enabled on a specific route (and service): does not run.
    let yml = fill_ports(
        r#"_format_version: "3.0"
services:
- name: mock_upstream
  url: http://{UP0}
  routes:
  - name: r
    hosts: [mock_upstream]
    plugins:
    - name: rewriter
      service: mock_upstream
      config: {value: route-specific plugin}
"#,
        &[up.port],
    );
    let gw = Gateway::start_with(&yml, &plugins);
    t.it("enabled on a specific route: doesn't run", || {
        let r = request(
            gw.port,
            "GET",
            "/request",
            &[("Host", "mock_upstream")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(up.last().header("rewriter"), None);
    });
    drop(gw);

    // Enabled on a specific consumer: does not run, even for that consumer.
    let yml = fill_ports(
        r#"_format_version: "3.0"
services:
- name: mock_upstream
  url: http://{UP0}
  routes:
  - name: r
    protocols: [http]
    hosts: [mock_upstream]
    plugins:
    - name: key-auth
consumers:
- username: test-consumer-3
  keyauth_credentials:
  - key: kong
  plugins:
  - name: rewriter
    config: {value: consumer-specific plugin}
"#,
        &[up.port],
    );
    let gw = Gateway::start_with(&yml, &plugins);
    t.it("enabled on a specific consumer: doesn't run", || {
        let h = [("Host", "mock_upstream"), ("apikey", "kong")];
        let r = request(gw.port, "GET", "/request", &h, b"");
        assert_eq!(r.status, 200, "{}", r.body_str());
        let got = up.last();
        assert_eq!(got.header("x-consumer-username"), Some("test-consumer-3"));
        assert_eq!(got.header("rewriter"), None);
    });
    drop(gw);

    t.finish();
}
