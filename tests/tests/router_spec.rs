//! Port of Kong's `spec/02-integration/05-proxy/02-router_spec.lua`
//! (flavor `traditional_compatible`, the default), driving the real
//! `gateway` binary over loopback sockets.
//!
//! Kong identifies the matched route with `Kong-Debug` response headers; here
//! every service points at its own recording upstream ([`Recorder`]), so the
//! upstream that received the request names the route, and the recorded
//! request target shows the URI Kong built. Cases that need TLS listeners,
//! gRPC, stream routes, the Admin API, plugins we don't have, or that are
//! `it_trad_only` are skipped. Tests named `kong_*` port an `it(...)` of that
//! spec (the description is quoted in the doc comment); the others cover the
//! routing rules in /work/shared/docs/kong-routing.md (unit spec
//! `spec/01-unit/08-router_spec.lua` names are cited where they exist).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{fill_ports, Gateway, Recorded, Recorder};
use gw_tests::{raw_request, request, Conn, Response};

/// A gateway plus one recording upstream per `{UPi}` placeholder.
struct Setup {
    gw: Gateway,
    ups: Vec<Recorder>,
}

impl Setup {
    fn new(n: usize, yml: &str) -> Setup {
        Setup::with_env(n, yml, &[])
    }

    fn with_env(n: usize, yml: &str, env: &[(&str, &str)]) -> Setup {
        let ups: Vec<Recorder> = (0..n).map(|_| Recorder::start()).collect();
        let ports: Vec<u16> = ups.iter().map(|u| u.port).collect();
        let gw = Gateway::start_with(&fill_ports(yml, &ports), env);
        Setup { gw, ups }
    }

    /// Sends a request and reports which upstream (index) received it.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Response, Option<(usize, Recorded)>) {
        let before: Vec<usize> = self.ups.iter().map(|u| u.count()).collect();
        let res = request(self.gw.port, method, path, headers, b"");
        let hit = self
            .ups
            .iter()
            .enumerate()
            .find(|(i, u)| u.count() > before[*i])
            .map(|(i, u)| (i, u.last()));
        (res, hit)
    }

    /// GET that must be proxied: returns (upstream index, recorded request).
    fn routed(&self, path: &str, headers: &[(&str, &str)]) -> (usize, Recorded) {
        self.routed_m("GET", path, headers)
    }

    fn routed_m(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (usize, Recorded) {
        let (res, hit) = self.send(method, path, headers);
        assert_eq!(
            res.status,
            200,
            "{method} {path} {headers:?}: expected a proxied 200, got {} {}",
            res.status,
            res.body_str()
        );
        hit.unwrap_or_else(|| panic!("{method} {path}: no upstream received the request"))
    }

    /// Asserts Kong's own 404 for a request that matches no route.
    fn assert_no_route(&self, method: &str, path: &str, headers: &[(&str, &str)]) {
        let (res, hit) = self.send(method, path, headers);
        assert_eq!(res.status, 404, "{method} {path}: {}", res.body_str());
        assert_eq!(res.json()["message"], "no Route matched with those values");
        assert!(hit.is_none(), "{method} {path} reached upstream {hit:?}");
    }
}

fn assert_kong_error(res: &Response, status: u16, message: &str) {
    assert_eq!(res.status, status, "body: {}", res.body_str());
    assert_eq!(
        res.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let j = res.json();
    assert_eq!(j["message"], message);
    let rid = res.header("x-kong-request-id").expect("X-Kong-Request-Id");
    assert_eq!(j["request_id"], rid);
    assert!(
        res.header("server").is_some_and(|s| s.starts_with("kong/")),
        "Server: {:?}",
        res.header("server")
    );
}

// ---------------------------------------------------------------------------
// describe("no routes match")

/// it("responds 404 if no route matches")
#[test]
fn kong_responds_404_if_no_route_matches() {
    let s = Setup::new(
        1,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: [example.test]
"#,
    );
    let (res, hit) = s.send("GET", "/", &[("Host", "inexistent.com")]);
    assert_kong_error(&res, 404, "no Route matched with those values");
    assert!(hit.is_none());
    // Exact body layout of Kong's JSON error template.
    let rid = res.header("x-kong-request-id").unwrap().to_string();
    assert!(
        rid.len() >= 16 && rid.bytes().all(|b| b.is_ascii_hexdigit()),
        "request id {rid:?}"
    );
    assert_eq!(
        res.body_str(),
        format!("{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{rid}\"\n}}")
    );
}

// ---------------------------------------------------------------------------
// describe("use-cases")

const USE_CASES: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - name: r0
    methods: [GET]
    protocols: [http]
    strip_path: false
- name: s1
  url: http://{UP1}
  routes:
  - name: r1
    methods: [POST, PUT]
    paths: [/post, /put]
    protocols: [http]
    strip_path: false
- name: s2
  url: http://{UP2}/status
  routes:
  - name: r2
    paths: [/mock_upstream]
    protocols: [http]
    strip_path: true
- name: s3
  url: http://{UP3}/basic-auth/
  routes:
  - name: r3
    paths: [/private]
    protocols: [http]
    strip_path: false
- name: s4
  url: http://{UP4}/anything
  routes:
  - name: r4
    paths: ['~/users/\d+/profile']
    protocols: [http]
    strip_path: true
- name: s5
  url: http://{UP5}/disabled-service-path/
  enabled: false
  routes:
  - name: r5
    paths: [/disabled-service1]
    protocols: [http]
    strip_path: false
- name: enabled-service
  url: http://{UP6}/anything/
  enabled: true
  routes:
  - name: r6
    paths: ['~/enabled-service/\w+']
    protocols: [http]
    strip_path: true
- name: s7
  url: http://{UP7}/some-path/
  enabled: false
  routes:
  - name: r7
    paths: [/enabled-service/disabled]
    protocols: [http]
    strip_path: true
routes:
- name: serviceless
  protocols: [http, https]
  hosts: [serviceless-route-http.test]
"#;

/// it("responds 503 if no service found")
#[test]
fn kong_responds_503_if_no_service_found() {
    let s = Setup::new(8, USE_CASES);
    let (res, hit) = s.send("GET", "/", &[("Host", "serviceless-route-http.test")]);
    assert_kong_error(&res, 503, "no Service found with those values");
    assert!(hit.is_none());
}

/// it("restricts an route to its methods if specified")
#[test]
fn kong_restricts_a_route_to_its_methods_if_specified() {
    let s = Setup::new(8, USE_CASES);
    let (i, r) = s.routed_m("POST", "/post", &[]);
    assert_eq!(
        (i, r.method.as_str(), r.target.as_str()),
        (1, "POST", "/post")
    );
    s.assert_no_route("DELETE", "/post", &[]);
}

/// it("routes by method-only if no other match is found")
#[test]
fn kong_routes_by_method_only_if_no_other_match_is_found() {
    let s = Setup::new(8, USE_CASES);
    let (i, r) = s.routed("/get", &[]);
    assert_eq!((i, r.target.as_str()), (0, "/get"));
}

/// describe("requests without Host header") it("HTTP/1.0 routes normally")
#[test]
fn kong_http_1_0_without_host_routes_normally() {
    let s = Setup::new(8, USE_CASES);
    let raw = raw_request(
        s.gw.port,
        b"GET /get HTTP/1.0\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.") && text[9..12].eq("200"),
        "{text}"
    );
    // Matched the host-less, method-only route.
    assert_eq!(s.ups[0].count(), 1, "{text}");
    assert_eq!(s.ups[0].last().target, "/get");
}

/// describe("requests without Host header") it("HTTP/1.1 is rejected by NGINX")
#[test]
fn kong_http_1_1_without_host_is_rejected() {
    let s = Setup::new(8, USE_CASES);
    let raw = raw_request(
        s.gw.port,
        b"GET /get HTTP/1.1\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("Bad request"), "{text}");
    assert!(
        text.contains("Server: kong/") || text.contains("server: kong/"),
        "{text}"
    );
    assert!(s.ups.iter().all(|u| u.count() == 0));
}

/// describe("route with a path component in its upstream_url") it("with strip_path = true")
#[test]
fn kong_route_with_path_component_in_upstream_url_with_strip_path_true() {
    let s = Setup::new(8, USE_CASES);
    let (i, r) = s.routed("/mock_upstream/201", &[]);
    assert_eq!((i, r.target.as_str()), (2, "/status/201"));
}

/// it("route with a path component in its upstream_url and strip_path = false")
#[test]
fn kong_route_with_path_component_in_upstream_url_and_strip_path_false() {
    let s = Setup::new(8, USE_CASES);
    let (i, r) = s.routed("/private/passwd", &[]);
    assert_eq!((i, r.target.as_str()), (3, "/basic-auth/private/passwd"));
}

/// it("route with a path component in its upstream_url and [uri] with a regex")
#[test]
fn kong_route_with_path_component_in_upstream_url_and_uri_regex() {
    let s = Setup::new(8, USE_CASES);
    // Not matched by the regex: the method-only route takes it (in Kong the
    // mock upstream then answers 404 for the unknown path).
    let (i, r) = s.routed("/users/foo/profile", &[]);
    assert_eq!((i, r.target.as_str()), (0, "/users/foo/profile"));
    let (i, r) = s.routed("/users/123/profile", &[]);
    assert_eq!((i, r.target.as_str()), (4, "/anything"));
}

/// describe('handles not enabled services') it('ignores route where service enabled=false')
#[test]
fn kong_ignores_route_where_service_enabled_false() {
    let s = Setup::new(8, USE_CASES);
    let (i, r) = s.routed("/disabled-service1", &[]);
    // Falls through to the method-only route, never the disabled service.
    assert_eq!((i, r.target.as_str()), (0, "/disabled-service1"));
    assert_eq!(s.ups[5].count(), 0);
}

/// it('routes to regex path when longer path service enabled=false')
#[test]
fn kong_routes_to_regex_path_when_longer_path_service_disabled() {
    let s = Setup::new(8, USE_CASES);
    let (i, r) = s.routed("/enabled-service/disabled", &[]);
    assert_eq!((i, r.target.as_str()), (6, "/anything"));
    assert_eq!(s.ups[7].count(), 0);
}

// ---------------------------------------------------------------------------
// describe("URI regexes order of evaluation with regex_priority")

/// it("depends on the regex_priority field")
#[test]
fn kong_depends_on_the_regex_priority_field() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: regex_1
  url: http://{UP0}/status/200
  routes:
  - paths: ['~/status/(?P<foo>re)']
    strip_path: true
    regex_priority: 0
- name: regex_2
  url: http://{UP1}/status/200
  routes:
  - paths: ['~/status/(re)']
    strip_path: true
    regex_priority: 4
"#,
    );
    let (i, r) = s.routed("/status/re", &[]);
    assert_eq!((i, r.target.as_str()), (1, "/status/200"));
}

/// Unit spec "[prefix matching ignore regex_priority]": a prefix route's
/// regex_priority does not lift it over a longer prefix.
#[test]
fn prefix_matching_ignores_regex_priority() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: a
  url: http://{UP0}
  routes:
  - paths: [/v]
    regex_priority: 100
    strip_path: false
- name: b
  url: http://{UP1}
  routes:
  - paths: [/v1]
    strip_path: false
"#,
    );
    assert_eq!(s.routed("/v1", &[]).0, 1);
    assert_eq!(s.routed("/v2", &[]).0, 0);
}

/// Unit spec "matches a [uri regex] even if a [uri] got an exact match":
/// regex paths outrank prefix paths of the same weight.
#[test]
fn regex_path_beats_prefix_path() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: a
  url: http://{UP0}
  routes:
  - paths: [/route/persons/456]
    strip_path: false
- name: b
  url: http://{UP1}
  routes:
  - paths: ['~/route/persons/\d+']
    strip_path: false
"#,
    );
    assert_eq!(s.routed("/route/persons/456", &[]).0, 1);
}

// ---------------------------------------------------------------------------
// describe("URI arguments (querystring)")

const QS: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: [mock_upstream]
"#;

/// it("preserves URI arguments")
#[test]
fn kong_preserves_uri_arguments() {
    let s = Setup::new(1, QS);
    let (_, r) = s.routed("/get?foo=bar&hello=world", &[("Host", "mock_upstream")]);
    assert_eq!(r.target, "/get?foo=bar&hello=world");
}

/// it("does proxy an empty querystring if URI does not contain arguments")
#[test]
fn kong_does_proxy_an_empty_querystring() {
    let s = Setup::new(1, QS);
    let (_, r) = s.routed("/request?", &[("Host", "mock_upstream")]);
    assert_eq!(r.target, "/request?");
}

/// it("does proxy a querystring with an empty value")
#[test]
fn kong_does_proxy_a_querystring_with_an_empty_value() {
    let s = Setup::new(1, QS);
    let (_, r) = s.routed("/get?hello", &[("Host", "mock_upstream")]);
    assert_eq!(r.target, "/get?hello");
}

/// 08-uri_encoding_spec: encoded query arguments are forwarded untouched.
#[test]
fn encoded_query_arguments_are_forwarded_verbatim() {
    let s = Setup::new(1, QS);
    let (_, r) = s.routed("/get?a=%20b%2Fc&d=e+f", &[("Host", "mock_upstream")]);
    assert_eq!(r.target, "/get?a=%20b%2Fc&d=e+f");
}

// ---------------------------------------------------------------------------
// describe("URI normalization")

const NORM: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - paths: [/foo/bar]
    strip_path: true
- name: s1
  url: http://{UP1}
  routes:
  - paths: [/hello]
    strip_path: true
- name: s2
  url: http://{UP2}
  routes:
  - paths: [/anything/world]
    strip_path: false
"#;

/// it("matches against normalized URI with \"..\"")
#[test]
fn kong_matches_against_normalized_uri_with_dot_dot() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/foo/a/../bar", &[]);
    assert_eq!(i, 0);
    assert_eq!(r.header("x-forwarded-path"), Some("/foo/a/../bar"));
}

/// it("matches against normalized URI with \"//\"")
#[test]
fn kong_matches_against_normalized_uri_with_double_slash() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/foo//bar", &[]);
    assert_eq!(i, 0);
    assert_eq!(r.header("x-forwarded-path"), Some("/foo//bar"));
}

/// it("matches against normalized URI with \"/./\"")
#[test]
fn kong_matches_against_normalized_uri_with_dot_segment() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/foo/./bar", &[]);
    assert_eq!(i, 0);
    assert_eq!(r.header("x-forwarded-path"), Some("/foo/./bar"));
}

/// it("matches against normalized URI with percent-encoded characters")
#[test]
fn kong_matches_against_normalized_uri_with_percent_encoded_characters() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/h%65llo", &[]);
    assert_eq!(i, 1);
    assert_eq!(r.header("x-forwarded-path"), Some("/h%65llo"));
}

/// it("proxies normalized URI to upstream with strip_path = true")
#[test]
fn kong_proxies_normalized_uri_with_strip_path_true() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/h%65llo/anything/a/../b", &[]);
    assert_eq!((i, r.target.as_str()), (1, "/anything/b"));
}

/// it("proxies normalized URI to upstream with strip_path = false")
#[test]
fn kong_proxies_normalized_uri_with_strip_path_false() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/anything/./a/../wor%6cd/a/../b", &[]);
    assert_eq!((i, r.target.as_str()), (2, "/anything/world/b"));
}

/// it("re-encode special characters in request uri when proxying to the upstream")
#[test]
fn kong_re_encodes_special_characters_in_request_uri() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/anything/world/cat%20and%20dog", &[]);
    assert_eq!(
        (i, r.target.as_str()),
        (2, "/anything/world/cat%20and%20dog")
    );
}

/// Reserved characters stay percent-encoded (uri.lua keeps `%2F`), and
/// nothing is decoded twice (`%252e` stays `%252e`).
#[test]
fn reserved_characters_stay_encoded_and_no_double_decoding() {
    let s = Setup::new(3, NORM);
    let (i, r) = s.routed("/anything/world/a%2Fb", &[]);
    assert_eq!((i, r.target.as_str()), (2, "/anything/world/a%2Fb"));
    let (i, r) = s.routed("/anything/world/%252e%252e/x", &[]);
    assert_eq!((i, r.target.as_str()), (2, "/anything/world/%252e%252e/x"));
}

// ---------------------------------------------------------------------------
// describe("strip_path")

/// describe("= true") it("strips subsequent calls to an route with different [paths]")
#[test]
fn kong_strips_subsequent_calls_to_a_route_with_different_paths() {
    let s = Setup::new(
        1,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - paths: [/x/y/z, /z/y/x]
    strip_path: true
"#,
    );
    for p in ["/x/y/z/get", "/z/y/x/get", "/x/y/z/get", "/x/y/z/get"] {
        let (_, r) = s.routed(p, &[]);
        assert_eq!(r.target, "/get", "{p}");
    }
}

// ---------------------------------------------------------------------------
// describe("preserve_host")

const PRESERVE: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}/request
  routes:
  - preserve_host: true
    hosts: [preserved.com, "preserved.com:123"]
- name: s1
  url: http://{UP1}/request
  routes:
  - preserve_host: false
    hosts: [discarded.com]
- name: s2
  url: http://{UP2}
  routes:
  - strip_path: false
    preserve_host: true
    paths: [/request]
"#;

/// describe("x = false (default)") it("uses hostname from upstream_url")
#[test]
fn kong_preserve_host_false_uses_hostname_from_upstream_url() {
    let s = Setup::new(3, PRESERVE);
    let (i, r) = s.routed("/get", &[("Host", "discarded.com")]);
    assert_eq!(i, 1);
    assert!(
        r.header("host").unwrap().contains("127.0.0.1"),
        "{:?}",
        r.header("host")
    );
    assert_eq!(r.target, "/request/get");
}

/// describe("x = false (default)") it("uses port value from upstream_url if not default")
#[test]
fn kong_preserve_host_false_uses_port_from_upstream_url() {
    let s = Setup::new(3, PRESERVE);
    let (_, r) = s.routed("/get", &[("Host", "discarded.com")]);
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{}", s.ups[1].port).as_str())
    );
}

/// describe("= true") it("forwards request Host")
#[test]
fn kong_preserve_host_forwards_request_host() {
    let s = Setup::new(3, PRESERVE);
    let (i, r) = s.routed("/", &[("Host", "preserved.com")]);
    assert_eq!(i, 0);
    assert_eq!(r.header("host"), Some("preserved.com"));
}

/// describe("= true") it("forwards request Host:Port if port isn't default")
#[test]
fn kong_preserve_host_forwards_request_host_and_port() {
    let s = Setup::new(3, PRESERVE);
    let (i, r) = s.routed("/get", &[("Host", "preserved.com:123")]);
    assert_eq!(i, 0);
    assert_eq!(r.header("host"), Some("preserved.com:123"));
}

/// describe("= true") it("forwards request Host even if not matched by [hosts]")
#[test]
fn kong_preserve_host_forwards_request_host_even_if_not_matched_by_hosts() {
    let s = Setup::new(3, PRESERVE);
    let (i, r) = s.routed("/request", &[("Host", "not-a-route-host.test")]);
    assert_eq!(i, 2);
    assert_eq!(r.header("host"), Some("not-a-route-host.test"));
    assert_eq!(r.target, "/request");
}

// ---------------------------------------------------------------------------
// describe("edge-cases")

/// it("root / [uri] for a catch-all rule")
#[test]
fn kong_root_uri_for_a_catch_all_rule() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - paths: [/]
    strip_path: true
- name: s1
  url: http://{UP1}
  routes:
  - paths: [/foobar]
    strip_path: true
"#,
    );
    let (i, r) = s.routed("/get", &[]);
    assert_eq!((i, r.target.as_str()), (0, "/get"));
    let (i, r) = s.routed("/foobar/get", &[]);
    assert_eq!((i, r.target.as_str()), (1, "/get"));
}

// ---------------------------------------------------------------------------
// describe("[#headers]")

/// it("matches by header")
#[test]
fn kong_matches_by_header() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - headers: {version: [v1, v2]}
- name: s1
  url: http://{UP1}
  routes:
  - headers: {version: [v3]}
"#,
    );
    let h = |v| [("Host", "domain.test"), ("version", v)];
    assert_eq!(s.routed("/", &h("v1")).0, 0);
    assert_eq!(s.routed("/", &h("v2")).0, 0);
    assert_eq!(s.routed("/", &h("v3")).0, 1);
    s.assert_no_route("GET", "/", &h("v4"));
    s.assert_no_route("GET", "/", &[("Host", "domain.test")]);
}

/// it("matches headers in a case-insensitive way")
#[test]
fn kong_matches_headers_in_a_case_insensitive_way() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - headers: {Version: [v1, v2]}
- name: s1
  url: http://{UP1}
  routes:
  - headers: {version: [V3]}
"#,
    );
    assert_eq!(
        s.routed("/", &[("Host", "domain.test"), ("version", "v1")])
            .0,
        0
    );
    assert_eq!(
        s.routed("/", &[("Host", "domain.test"), ("Version", "v3")])
            .0,
        1
    );
    assert_eq!(
        s.routed("/", &[("Host", "domain.test"), ("VERSION", "V2")])
            .0,
        0
    );
}

/// Unit spec "single [headers] value": a repeated request header matches if
/// any of its values matches.
#[test]
fn repeated_request_header_matches_if_any_value_matches() {
    let s = Setup::new(
        1,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - headers: {location: [us-east]}
"#,
    );
    assert_eq!(
        s.routed("/", &[("location", "eu-west"), ("location", "us-east")])
            .0,
        0
    );
}

/// it("prioritizes Routes with more headers")
#[test]
fn kong_prioritizes_routes_with_more_headers() {
    let s = Setup::new(
        3,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - headers: {version: [v1, v2]}
- name: s1
  url: http://{UP1}
  routes:
  - headers: {version: [v3], location: [us-east]}
- name: s2
  url: http://{UP2}
  routes:
  - headers: {version: [v3]}
"#,
    );
    let both = [
        ("Host", "domain.test"),
        ("version", "v3"),
        ("location", "us-east"),
    ];
    assert_eq!(s.routed("/", &both).0, 1);
    assert_eq!(
        s.routed("/", &[("Host", "domain.test"), ("version", "v3")])
            .0,
        2
    );
}

/// it("caching do not ignore headers (regression)")
#[test]
fn kong_caching_does_not_ignore_headers() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: first
  url: http://{UP0}
  routes:
  - hosts: [example.test]
    paths: [/test]
    headers: {headertest: [itsatest]}
- name: second
  url: http://{UP1}
  routes:
  - hosts: [example.test]
    paths: [/test]
"#,
    );
    let with = [("Host", "example.test"), ("headertest", "itsatest")];
    let without = [("Host", "example.test")];
    assert_eq!(s.routed("/test", &with).0, 0);
    assert_eq!(s.routed("/test", &without).0, 1);
    assert_eq!(s.routed("/test", &with).0, 0);
    assert_eq!(s.routed("/test", &without).0, 1);
}

// ---------------------------------------------------------------------------
// describe("[paths] + [#headers]")

const PATHS_HEADERS: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - strip_path: true
    headers: {version: [v1, v2]}
    paths: [/root]
- name: s1
  url: http://{UP1}
  routes:
  - strip_path: true
    headers: {version: [v1, v2]}
    paths: [/root/fixture]
- name: s2
  url: http://{UP2}
  routes:
  - strip_path: true
    headers: {version: [v1, v2], location: [us-east]}
    paths: [/root]
"#;

/// it("prioritizes Routes with more headers")  ([paths] + [headers])
#[test]
fn kong_paths_and_headers_prioritizes_routes_with_more_headers() {
    let s = Setup::new(3, PATHS_HEADERS);
    let (i, r) = s.routed(
        "/root/fixture/get",
        &[("version", "v2"), ("location", "us-east")],
    );
    assert_eq!((i, r.target.as_str()), (2, "/fixture/get"));
}

/// it("prioritizes longer paths if same number of headers")
#[test]
fn kong_prioritizes_longer_paths_if_same_number_of_headers() {
    let s = Setup::new(3, PATHS_HEADERS);
    let (i, r) = s.routed("/root/fixture/get", &[("version", "v2")]);
    assert_eq!((i, r.target.as_str()), (1, "/get"));
}

// ---------------------------------------------------------------------------
// describe("[paths] + [methods]")

const PATHS_METHODS: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}/status/201
  routes:
  - strip_path: true
    methods: [GET]
    paths: [/unrelated/longer/uri/that/should/not/match, /root/fixture]
    hosts: [ahost.test]
- name: s1
  url: http://{UP1}/status/202
  routes:
  - strip_path: true
    methods: [GET]
    paths: [/root/fixture/get]
    hosts: [ahost.test]
- name: s2
  url: http://{UP2}/status/203
  routes:
  - strip_path: true
    methods: [GET]
    paths: [/root/fixture/get]
    hosts: [anotherhost.test]
- name: s3
  url: http://{UP3}/status/204
  routes:
  - strip_path: true
    methods: [GET]
    paths: [/root/fixture/get]
    hosts: [onemorehost.test]
"#;

/// it("prioritizes host over longer URIs")
#[test]
fn kong_prioritizes_host_over_longer_uris() {
    let s = Setup::new(4, PATHS_METHODS);
    let (i, r) = s.routed("/root/fixture/get", &[("Host", "anotherhost.test")]);
    assert_eq!((i, r.target.as_str()), (2, "/status/203"));
    let (i, _) = s.routed("/root/fixture/get", &[("Host", "onemorehost.test")]);
    assert_eq!(i, 3);
}

/// it("do not match incomplete URIs")
#[test]
fn kong_does_not_match_incomplete_uris() {
    let s = Setup::new(4, PATHS_METHODS);
    s.assert_no_route("GET", "/", &[("Host", "ahost.test")]);
}

/// Unit spec "does not supersede another route with a longer [uri]": with
/// several paths of different lengths each path competes on its own length
/// (compat splits the route), so the longer path of another route wins.
#[test]
fn longer_prefix_of_another_route_wins_over_split_multi_path_route() {
    let s = Setup::new(4, PATHS_METHODS);
    let (i, r) = s.routed("/root/fixture/get", &[("Host", "ahost.test")]);
    assert_eq!((i, r.target.as_str()), (1, "/status/202"));
    let (i, r) = s.routed("/root/fixture/other", &[("Host", "ahost.test")]);
    assert_eq!((i, r.target.as_str()), (0, "/status/201/other"));
}

// ---------------------------------------------------------------------------
// describe("router rebuilds")

/// it("when Routes have 'regex_priority = nil'")
#[test]
fn kong_router_rebuilds_when_routes_have_regex_priority_nil() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - methods: [GET]
    regex_priority: 1
- name: s1
  url: http://{UP1}
  routes:
  - methods: [POST, PUT]
    regex_priority: null
"#,
    );
    assert_eq!(s.routed("/", &[]).0, 0);
    assert_eq!(s.routed_m("PUT", "/", &[]).0, 1);
}

// ---------------------------------------------------------------------------
// Kong-Debug (allow_debug_header), used throughout Kong's router spec.

/// The router spec's `kong-debug: 1` request header with
/// `allow_debug_header = on` (kong/runloop/handler.lua, `kong/router/utils.lua`
/// `add_debug_headers`): Kong-Route-Id/-Name and Kong-Service-Id/-Name.
#[test]
fn kong_debug_header_reports_route_and_service() {
    let s = Setup::with_env(
        1,
        r#"_format_version: "3.0"
services:
- name: my-service
  url: http://{UP0}
  routes:
  - name: my-route
    paths: [/]
"#,
        &[("KONG_ALLOW_DEBUG_HEADER", "on")],
    );
    let (res, _) = s.send("GET", "/get", &[("kong-debug", "1")]);
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("kong-route-name"),
        Some("my-route"),
        "{:?}",
        res.headers
    );
    assert_eq!(res.header("kong-service-name"), Some("my-service"));
    assert!(res.header("kong-route-id").is_some_and(|v| v.len() == 36));
    assert!(res.header("kong-service-id").is_some_and(|v| v.len() == 36));
    // No debug headers without the request header.
    let (res, _) = s.send("GET", "/get", &[]);
    assert!(res.header("kong-route-name").is_none());
}

/// describe("disable allow_debug_header config") it("disable allow_debug_header config")
#[test]
fn kong_disable_allow_debug_header_config() {
    let s = Setup::new(
        1,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - methods: [GET]
    strip_path: false
"#,
    );
    for _ in 0..20 {
        let (res, _) = s.send("GET", "/get", &[("kong-debug", "1")]);
        assert_eq!(res.status, 200);
        assert!(res.header("kong-service-name").is_none());
        assert!(res.header("kong-route-name").is_none());
    }
}

// ---------------------------------------------------------------------------
// Hosts: wildcards and ports (unit spec 08-router_spec "[wildcard host]",
// "[host] matches specific port"; kong-routing.md §a).

const WILDCARDS: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: ["*.route.com"]
- name: s1
  url: http://{UP1}
  routes:
  - hosts: ["route.*"]
- name: s2
  url: http://{UP2}
  routes:
  - hosts: [plain.route.com]
"#;

/// Unit spec "matches leftmost wildcards" / "matches rightmost wildcards".
#[test]
fn wildcard_hosts_match_leftmost_and_rightmost() {
    let s = Setup::new(3, WILDCARDS);
    assert_eq!(s.routed("/", &[("Host", "foo.route.com")]).0, 0);
    assert_eq!(s.routed("/", &[("Host", "a.b.route.com")]).0, 0);
    assert_eq!(s.routed("/", &[("Host", "route.org")]).0, 1);
    assert_eq!(s.routed("/", &[("Host", "route.co.uk")]).0, 1);
    // `*.route.com` does not match the bare domain; `route.*` does.
    assert_eq!(s.routed("/", &[("Host", "route.com")]).0, 1);
    s.assert_no_route("GET", "/", &[("Host", "myroute.org")]);
    s.assert_no_route("GET", "/", &[("Host", "foo.route-com.net")]);
}

/// Unit spec "matches any port in request".
#[test]
fn wildcard_hosts_match_any_port_in_request() {
    let s = Setup::new(3, WILDCARDS);
    assert_eq!(s.routed("/", &[("Host", "route.org:123")]).0, 1);
    assert_eq!(s.routed("/", &[("Host", "foo.route.com:123")]).0, 0);
}

/// Unit spec "does not take precedence over a plain host".
#[test]
fn wildcard_host_does_not_take_precedence_over_a_plain_host() {
    let s = Setup::new(3, WILDCARDS);
    assert_eq!(s.routed("/", &[("Host", "plain.route.com")]).0, 2);
}

/// Unit spec "[host] matches specific port" / "[host] fails just because of
/// port on port-only route"; a route host without port matches any port.
#[test]
fn host_with_port_matches_only_that_port() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: ["port.test:8123"]
- name: s1
  url: http://{UP1}
  routes:
  - hosts: [any.test]
"#,
    );
    assert_eq!(s.routed("/", &[("Host", "port.test:8123")]).0, 0);
    s.assert_no_route("GET", "/", &[("Host", "port.test:9999")]);
    // Without a port in Host the listener port is used (not 8123 here).
    s.assert_no_route("GET", "/", &[("Host", "port.test")]);
    assert_eq!(s.routed("/", &[("Host", "any.test:123")]).0, 1);
    assert_eq!(s.routed("/", &[("Host", "any.test")]).0, 1);
}

/// A route host with the proxy's own port matches a Host without a port
/// (`net.dst.port` falls back to the listener port).
#[test]
fn host_with_listener_port_matches_host_without_port() {
    let up = Recorder::start();
    // The gateway's port is only known after start: reload with it.
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n- name: s0\n  url: http://127.0.0.1:{}\n  routes:\n  - hosts: [x.test]\n",
        up.port
    ));
    let yml = format!(
        "_format_version: \"3.0\"\nservices:\n- name: s0\n  url: http://127.0.0.1:{}\n  routes:\n  - hosts: [\"lp.test:{}\"]\n",
        up.port, gw.port
    );
    assert!(gw.reload_and_wait(&yml), "{}", gw.output());
    let r = request(gw.port, "GET", "/", &[("Host", "lp.test")], b"");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = request(
        gw.port,
        "GET",
        "/",
        &[("Host", &format!("lp.test:{}", gw.port))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
}

/// Wildcard hosts with a port (unit spec "matches port-specific routes",
/// "prefers port-specific even for http default port", "matches a
/// [wildcard host + port] even if a [wildcard host] matched"): they load,
/// `example.*:80` included, and match on the Host port, else on the
/// listener's. Ids are Kong's fixture ids: compat gives the port no
/// priority, a tie with a port-less wildcard goes to the larger id.
#[test]
fn wildcard_hosts_with_port() {
    let s = Setup::new(
        5,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - id: e8fb37f1-102d-461e-9c51-6608a6bb8101
    hosts: ["*.route.com"]
- name: s1
  url: http://{UP1}
  routes:
  - id: e8fb37f1-102d-461e-9c51-6608a6bb8102
    hosts: ["route.*"]
- name: s2
  url: http://{UP2}
  routes:
  - id: e8fb37f1-102d-461e-9c51-6608a6bb8103
    hosts: ["*.route.net:8123"]
- name: s3
  url: http://{UP3}
  routes:
  - id: e8fb37f1-102d-461e-9c51-6608a6bb8104
    hosts: ["route.*:8123"]
- name: s4
  url: http://{UP4}
  routes:
  - id: e8fb37f1-102d-461e-9c51-6608a6bb8105
    hosts: ["route.*:80", "*.route.com:80"]
"#,
    );
    assert_eq!(s.routed("/", &[("Host", "foo.route.net:8123")]).0, 2);
    s.assert_no_route("GET", "/", &[("Host", "foo.route.net:456")]);
    // No port in Host: the listener port (not 8123) decides.
    s.assert_no_route("GET", "/", &[("Host", "foo.route.net")]);
    assert_eq!(s.routed("/", &[("Host", "route.org:8123")]).0, 3);
    assert_eq!(s.routed("/", &[("Host", "route.org:123")]).0, 1);
    assert_eq!(s.routed("/", &[("Host", "route.org")]).0, 1);
    assert_eq!(s.routed("/", &[("Host", "route.org:80")]).0, 4);
    assert_eq!(s.routed("/", &[("Host", "a.route.com:80")]).0, 4);
    assert_eq!(s.routed("/", &[("Host", "a.route.com:81")]).0, 0);
}

const PORT_MAPPED: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: ["example.com:80"]
- name: s1
  url: http://{UP1}
  routes:
  - hosts: ["*.wild.test:80"]
- name: s2
  url: http://{UP2}
  routes:
  - hosts: [other.test]
"#;

/// `port_maps`: `KONG_PORT_MAPS=80:<proxy port>` means clients reach the
/// proxy port as 80. Kong: `HOST_PORTS[kong_port] = host_port`
/// (conf_loader/parse.lua), `ctx.host_port = HOST_PORTS[server_port] or
/// server_port` (runloop/handler.lua rewrite), which becomes
/// `X-Forwarded-Port` and the router's `net.dst.port` when Host has no port.
#[test]
fn port_maps_set_the_host_port() {
    let s = Setup::with_env(
        3,
        PORT_MAPPED,
        &[("KONG_PORT_MAPS", "8080:1, 80:{PROXY_PORT}")],
    );
    let (i, r) = s.routed("/", &[("Host", "example.com")]);
    assert_eq!(i, 0);
    assert_eq!(r.header("x-forwarded-port"), Some("80"));
    assert_eq!(s.routed("/", &[("Host", "example.com:80")]).0, 0);
    assert_eq!(s.routed("/", &[("Host", "a.wild.test")]).0, 1);
    s.assert_no_route("GET", "/", &[("Host", "a.wild.test:81")]);
    let (i, r) = s.routed("/", &[("Host", "other.test")]);
    assert_eq!(i, 2);
    assert_eq!(r.header("x-forwarded-port"), Some("80"));
}

/// The same routes without `port_maps`: the listener port is the host port.
#[test]
fn without_port_maps_the_listener_port_is_the_host_port() {
    let s = Setup::new(3, PORT_MAPPED);
    s.assert_no_route("GET", "/", &[("Host", "example.com")]);
    s.assert_no_route("GET", "/", &[("Host", "a.wild.test")]);
    assert_eq!(s.routed("/", &[("Host", "example.com:80")]).0, 0);
    let (i, r) = s.routed("/", &[("Host", "other.test")]);
    assert_eq!(i, 2);
    let port = s.gw.port.to_string();
    assert_eq!(r.header("x-forwarded-port"), Some(port.as_str()));
}

/// Route hosts are compared byte-wise (no case folding; kong-routing.md
/// gotcha 5).
#[test]
fn host_matching_is_case_sensitive() {
    let s = Setup::new(
        1,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: [lower.test]
"#,
    );
    assert_eq!(s.routed("/", &[("Host", "lower.test")]).0, 0);
    s.assert_no_route("GET", "/", &[("Host", "LOWER.test")]);
}

// ---------------------------------------------------------------------------
// Precedence (kong-routing.md §b; unit spec names cited).

/// Unit spec "[method] does not supersede [wildcard host]" and more fields
/// win: hosts+paths beats paths, plain host beats no host.
#[test]
fn more_matched_fields_win() {
    let s = Setup::new(
        3,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - paths: [/p]
    strip_path: false
- name: s1
  url: http://{UP1}
  routes:
  - paths: [/p]
    hosts: [h.test]
    strip_path: false
- name: s2
  url: http://{UP2}
  routes:
  - paths: [/p]
    hosts: [h.test]
    methods: [GET]
    strip_path: false
"#,
    );
    assert_eq!(s.routed("/p", &[("Host", "h.test")]).0, 2);
    assert_eq!(s.routed_m("POST", "/p", &[("Host", "h.test")]).0, 1);
    assert_eq!(s.routed("/p", &[("Host", "other.test")]).0, 0);
}

/// Unit spec "more [headers] has priority over longer [paths]".
#[test]
fn more_headers_have_priority_over_longer_paths() {
    let s = Setup::new(
        2,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - paths: [/a/very/long/path]
    headers: {x-a: ['1']}
    strip_path: false
- name: s1
  url: http://{UP1}
  routes:
  - paths: [/a]
    headers: {x-a: ['1'], x-b: ['2']}
    strip_path: false
"#,
    );
    assert_eq!(
        s.routed("/a/very/long/path", &[("x-a", "1"), ("x-b", "2")])
            .0,
        1
    );
    assert_eq!(s.routed("/a/very/long/path", &[("x-a", "1")]).0, 0);
}

/// Prefix paths are plain string prefixes, not segment-aware
/// (kong-routing.md gotcha 2): `/route` matches `/routereq`.
#[test]
fn prefix_paths_are_not_segment_aware() {
    let s = Setup::new(
        1,
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - paths: [/route]
    strip_path: true
"#,
    );
    let (_, r) = s.routed("/routereq", &[]);
    assert_eq!(r.target, "/req");
    s.assert_no_route("GET", "/rout", &[]);
}

// ---------------------------------------------------------------------------
// https-only routes over plain http (handler.lua access.before).

const HTTPS_ONLY: &str = r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: [tls.test]
    protocols: [https]
  - hosts: [r301.test]
    protocols: [https]
    https_redirect_status_code: 301
  - hosts: [r302.test]
    protocols: [https]
    https_redirect_status_code: 302
  - hosts: [r307.test]
    protocols: [https]
    https_redirect_status_code: 307
  - hosts: [r308.test]
    protocols: [https]
    https_redirect_status_code: 308
  - hosts: [both.test]
    protocols: [http, https]
"#;

/// 06-ssl_spec "SSL termination" it("blocks request without HTTPS if
/// protocols = { http }"): an https-only route over http answers 426
/// "Please use HTTPS protocol" with `Connection: Upgrade` and
/// `Upgrade: TLS/1.2, HTTP/1.1` (sent on a keep-alive connection, like
/// Kong's spec client).
#[test]
fn kong_blocks_request_without_https_on_https_only_route() {
    let s = Setup::new(1, HTTPS_ONLY);
    let mut c = Conn::open(s.gw.port);
    let res = c
        .request("GET", "/x", &[("Host", "tls.test")], b"")
        .expect("a response");
    assert_kong_error(&res, 426, "Please use HTTPS protocol");
    assert_eq!(res.header("upgrade"), Some("TLS/1.2, HTTP/1.1"));
    assert_eq!(s.ups[0].count(), 0);
    // A route accepting both protocols proxies.
    assert_eq!(s.routed("/x", &[("Host", "both.test")]).0, 0);
}

/// The same case's `Connection: Upgrade` header (06-ssl_spec
/// `assert.contains("Upgrade", res.headers.connection)`): nginx writes its
/// own `Connection: keep-alive` line, then Kong's (vendored Pingora patch,
/// vendor/README.md). The connection stays open for the next request, and
/// a proxied response still gets only the gateway's own value.
#[test]
fn kong_426_carries_connection_upgrade() {
    let s = Setup::new(1, HTTPS_ONLY);
    let mut c = Conn::open(s.gw.port);
    let res = c
        .request("GET", "/x", &[("Host", "tls.test")], b"")
        .expect("a response");
    assert_eq!(res.status, 426, "{}", res.body_str());
    assert!(
        res.header_all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{:?}",
        res.headers
    );
    assert_eq!(res.header_all("connection"), ["keep-alive", "Upgrade"]);
    assert_eq!(res.header("upgrade"), Some("TLS/1.2, HTTP/1.1"));
    let res = c
        .request("GET", "/x", &[("Host", "both.test")], b"")
        .expect("a response on the same connection");
    assert_eq!(res.status, 200, "{}", res.body_str());
    assert_eq!(res.header_all("connection"), ["keep-alive"]);
    assert_eq!(s.ups[0].count(), 1);
}

/// An upstream's `Connection: upgrade` / `Upgrade` on a non-101 response
/// are hop-by-hop and stripped (Kong's header filter; nginx never forwards
/// them): the kept-`upgrade` rule of the Pingora patch only applies to
/// responses the gateway builds itself.
#[test]
fn proxied_response_connection_upgrade_is_not_forwarded() {
    let up =
        Recorder::start_with_headers(&[("Connection", "keep-alive, Upgrade"), ("Upgrade", "h2c")]);
    let gw = Gateway::start(&fill_ports(
        r#"_format_version: "3.0"
services:
- name: s0
  url: http://{UP0}
  routes:
  - hosts: [up.test]
"#,
        &[up.port],
    ));
    let mut c = Conn::open(gw.port);
    let res = c
        .request("GET", "/", &[("Host", "up.test")], b"")
        .expect("a response");
    assert_eq!(res.status, 200, "{}", res.body_str());
    assert_eq!(res.header_all("connection"), ["keep-alive"]);
    assert!(res.header("upgrade").is_none(), "{:?}", res.headers);
    assert_eq!(up.count(), 1);
}

/// 06-ssl_spec it("returns 301 when route has https_redirect_status_code
/// set to 301") / it("returns 302 ...") (+ 307, 308): empty body and
/// `Location: https://<host><request_uri>`.
#[test]
fn kong_returns_redirect_when_route_has_https_redirect_status_code() {
    let s = Setup::new(1, HTTPS_ONLY);
    for code in [301u16, 302, 307, 308] {
        let host = format!("r{code}.test");
        let (res, hit) = s.send("GET", "/some/path?a=1&b", &[("Host", &host)]);
        assert_eq!(res.status, code, "{}", res.body_str());
        assert_eq!(
            res.header("location"),
            Some(format!("https://{host}/some/path?a=1&b").as_str())
        );
        assert!(res.body.is_empty(), "{}", res.body_str());
        assert!(hit.is_none());
    }
    // Location uses nginx `$host`: the Host header without its port.
    let (res, _) = s.send("GET", "/p", &[("Host", "r301.test:8443")]);
    assert_eq!(res.status, 301, "{}", res.body_str());
    assert_eq!(res.header("location"), Some("https://r301.test/p"));
}

/// 06-ssl_spec "from trusted_ip" it("allows HTTP requests with
/// x-forwarded-proto") and "from not trusted_ip" it("blocks HTTP request
/// with HTTPS in x-forwarded-proto").
#[test]
fn kong_https_only_route_and_x_forwarded_proto_trust() {
    let s = Setup::with_env(1, HTTPS_ONLY, &[("KONG_TRUSTED_IPS", "127.0.0.1")]);
    let (i, r) = s.routed(
        "/x",
        &[("Host", "tls.test"), ("X-Forwarded-Proto", "https")],
    );
    assert_eq!(i, 0);
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    // Untrusted: still 426.
    let s = Setup::new(1, HTTPS_ONLY);
    let (res, _) = s.send(
        "GET",
        "/x",
        &[("Host", "tls.test"), ("X-Forwarded-Proto", "https")],
    );
    assert_eq!(res.status, 426);
}

// ---------------------------------------------------------------------------
// describe("slash handling") — spec/fixtures/router_path_handling_tests.lua,
// v0 rows (compat always applies path_handling v0).

/// (service_path, route_path, strip_path values, path_handling values,
/// request_path, expected_path), transcribed from the fixture.
type Row = (
    &'static str,
    Option<&'static str>,
    &'static [bool],
    &'static [&'static str],
    &'static str,
    &'static str,
);

const PATH_HANDLING: &[Row] = &[
    ("/", Some("/"), &[false, true], &["v0", "v1"], "/", "/"),
    (
        "/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/route",
        "/route",
    ),
    (
        "/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/route/",
        "/route/",
    ),
    (
        "/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/routereq",
        "/routereq",
    ),
    (
        "/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/route/req",
        "/route/req",
    ),
    (
        "/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route",
        "/route",
    ),
    (
        "/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route/",
        "/route/",
    ),
    (
        "/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/routereq",
        "/routereq",
    ),
    ("/", Some("/route"), &[true], &["v0", "v1"], "/route", "/"),
    ("/", Some("/route"), &[true], &["v0", "v1"], "/route/", "/"),
    (
        "/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/routereq",
        "/req",
    ),
    (
        "/",
        Some("/route/"),
        &[false],
        &["v0", "v1"],
        "/route/",
        "/route/",
    ),
    (
        "/",
        Some("/route/"),
        &[false],
        &["v0", "v1"],
        "/route/req",
        "/route/req",
    ),
    ("/", Some("/route/"), &[true], &["v0", "v1"], "/route/", "/"),
    (
        "/",
        Some("/route/"),
        &[true],
        &["v0", "v1"],
        "/route/req",
        "/req",
    ),
    (
        "/srv",
        Some("/rou"),
        &[false],
        &["v0"],
        "/roureq",
        "/srv/roureq",
    ),
    (
        "/srv",
        Some("/rou"),
        &[false],
        &["v1"],
        "/roureq",
        "/srvroureq",
    ),
    (
        "/srv",
        Some("/rou"),
        &[true],
        &["v0"],
        "/roureq",
        "/srv/req",
    ),
    ("/srv", Some("/rou"), &[true], &["v1"], "/roureq", "/srvreq"),
    (
        "/srv/",
        Some("/rou"),
        &[false],
        &["v0", "v1"],
        "/rou",
        "/srv/rou",
    ),
    ("/srv/", Some("/rou"), &[true], &["v0"], "/rou", "/srv"),
    ("/srv/", Some("/rou"), &[true], &["v1"], "/rou", "/srv/"),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/",
        "/service",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v0"],
        "/route",
        "/service/route",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v1"],
        "/route",
        "/serviceroute",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v0"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v1"],
        "/route/",
        "/serviceroute/",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v0"],
        "/routereq",
        "/service/routereq",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v1"],
        "/routereq",
        "/serviceroutereq",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v0"],
        "/route/req",
        "/service/route/req",
    ),
    (
        "/service",
        Some("/"),
        &[false, true],
        &["v1"],
        "/route/req",
        "/serviceroute/req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route",
        "/service/route",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route",
        "/serviceroute",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route/",
        "/serviceroute/",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/routereq",
        "/service/routereq",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/routereq",
        "/serviceroutereq",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route",
        "/service",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route/",
        "/service/",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/routereq",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/routereq",
        "/servicereq",
    ),
    (
        "/service",
        Some("/route/"),
        &[false],
        &["v0"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service",
        Some("/route/"),
        &[false],
        &["v1"],
        "/route/",
        "/serviceroute/",
    ),
    (
        "/service",
        Some("/route/"),
        &[false],
        &["v0"],
        "/route/req",
        "/service/route/req",
    ),
    (
        "/service",
        Some("/route/"),
        &[false],
        &["v1"],
        "/route/req",
        "/serviceroute/req",
    ),
    (
        "/service",
        Some("/route/"),
        &[true],
        &["v0"],
        "/route/",
        "/service/",
    ),
    (
        "/service",
        Some("/route/"),
        &[true],
        &["v1"],
        "/route/",
        "/service",
    ),
    (
        "/service",
        Some("/route/"),
        &[true],
        &["v0"],
        "/route/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route/"),
        &[true],
        &["v1"],
        "/route/req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/"),
        &[false, true],
        &["v0"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service/",
        Some("/"),
        &[false, true],
        &["v1"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/",
        "/service/",
    ),
    (
        "/service/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/route",
        "/service/route",
    ),
    (
        "/service/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/routereq",
        "/service/routereq",
    ),
    (
        "/service/",
        Some("/"),
        &[false, true],
        &["v0", "v1"],
        "/route/req",
        "/service/route/req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route",
        "/service/route",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/routereq",
        "/service/routereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0"],
        "/route",
        "/service",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v1"],
        "/route",
        "/service/",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route/",
        "/service/",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/routereq",
        "/service/req",
    ),
    (
        "/service/",
        Some("/route/"),
        &[false],
        &["v0", "v1"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service/",
        Some("/route/"),
        &[false],
        &["v0", "v1"],
        "/route/req",
        "/service/route/req",
    ),
    (
        "/service/",
        Some("/route/"),
        &[true],
        &["v0", "v1"],
        "/route/",
        "/service/",
    ),
    (
        "/service/",
        Some("/route/"),
        &[true],
        &["v0", "v1"],
        "/route/req",
        "/service/req",
    ),
    ("/", None, &[false, true], &["v0", "v1"], "/", "/"),
    ("/", None, &[false, true], &["v0", "v1"], "/route", "/route"),
    (
        "/",
        None,
        &[false, true],
        &["v0", "v1"],
        "/route/",
        "/route/",
    ),
    (
        "/service",
        None,
        &[false, true],
        &["v0", "v1"],
        "/",
        "/service",
    ),
    (
        "/service",
        None,
        &[false, true],
        &["v0"],
        "/route",
        "/service/route",
    ),
    (
        "/service",
        None,
        &[false, true],
        &["v1"],
        "/route",
        "/serviceroute",
    ),
    (
        "/service",
        None,
        &[false, true],
        &["v0"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service",
        None,
        &[false, true],
        &["v1"],
        "/route/",
        "/serviceroute/",
    ),
    (
        "/service/",
        None,
        &[false, true],
        &["v0", "v1"],
        "/",
        "/service/",
    ),
    (
        "/service/",
        None,
        &[false, true],
        &["v0", "v1"],
        "/route",
        "/service/route",
    ),
    (
        "/service/",
        None,
        &[false, true],
        &["v0", "v1"],
        "/route/",
        "/service/route/",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/route./req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/route./req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route./req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/route%2E/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/route%2E/req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route%2E/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/route%2e/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/route%2e/req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route%2e/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/route../req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/route../req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route../req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/route%2E%2E/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/route%2E%2E/req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route%2E%2E/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v0"],
        "/route%2e%2E/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[true],
        &["v1"],
        "/route%2e%2E/req",
        "/servicereq",
    ),
    (
        "/service/",
        Some("/route"),
        &[true],
        &["v0", "v1"],
        "/route%2e%2E/req",
        "/service/req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route./req",
        "/service/route./req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route./req",
        "/serviceroute./req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route./req",
        "/service/route./req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route%2E/req",
        "/service/route./req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route%2E/req",
        "/serviceroute./req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route%2E/req",
        "/service/route./req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route%2e/req",
        "/service/route./req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route%2e/req",
        "/serviceroute./req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route%2e/req",
        "/service/route./req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route../req",
        "/service/route../req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route../req",
        "/serviceroute../req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route../req",
        "/service/route../req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route%2E%2E/req",
        "/service/route../req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route%2E%2E/req",
        "/serviceroute../req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route%2E%2E/req",
        "/service/route../req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v0"],
        "/route%2e%2E/req",
        "/service/route../req",
    ),
    (
        "/service",
        Some("/route"),
        &[false],
        &["v1"],
        "/route%2e%2E/req",
        "/serviceroute../req",
    ),
    (
        "/service/",
        Some("/route"),
        &[false],
        &["v0", "v1"],
        "/route%2e%2E/req",
        "/service/route../req",
    ),
];

/// One expanded v0 case: (Kong's i-j label, service, route, strip, request, expected).
type Case = (
    String,
    &'static str,
    Option<&'static str>,
    bool,
    &'static str,
    &'static str,
);

/// Expands rows as the fixture's `line:expand()` does (strip_path first,
/// then path_handling), keeping Kong's `i-j` numbering; drops v1 cases.
fn v0_cases(regex_only: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, (svc, route, strips, handlings, req, exp)) in PATH_HANDLING.iter().enumerate() {
        if regex_only && route.is_none() {
            continue;
        }
        let mut j = 0;
        for strip in strips.iter() {
            for ph in handlings.iter() {
                j += 1;
                if *ph == "v0" {
                    out.push((format!("{}-{}", i + 1, j), *svc, *route, *strip, *req, *exp));
                }
            }
        }
    }
    out
}

fn run_slash_handling(regex: bool) {
    let cases = v0_cases(regex);
    let mut yml = String::from("_format_version: \"3.0\"\nservices:\n");
    for (label, svc, route, strip, _, _) in &cases {
        yml.push_str(&format!(
            "- name: svc-{label}\n  url: http://{{UP0}}{svc}\n  routes:\n  - hosts: [localbin-{label}.com]\n    strip_path: {strip}\n    path_handling: v0\n"
        ));
        if let Some(p) = route {
            let p = if regex {
                format!("~/[0]?{}", &p[1..])
            } else {
                p.to_string()
            };
            yml.push_str(&format!("    paths: ['{p}']\n"));
        }
    }
    let s = Setup::new(1, &yml);
    let mut failures = Vec::new();
    for (label, svc, route, strip, req, exp) in &cases {
        let host = format!("localbin-{label}.com");
        let (res, hit) = s.send("GET", req, &[("Host", &host)]);
        let got = hit.map(|(_, r)| r.target);
        if res.status != 200 || got.as_deref() != Some(*exp) {
            failures.push(format!(
                "({label}) {svc} with {} {}, strip = {strip}, v0 when requesting {req}: expected {exp}, got {} {:?}",
                if regex { "uri regex" } else { "uri" },
                route.unwrap_or("<host only>"),
                res.status,
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// describe("slash handling") describe("(plain)"): every v0 row of
/// router_path_handling_tests.lua, "(i-j) <service_path> with uri
/// <route_path>, strip = <on|off>, v0 when requesting <request_path>".
#[test]
fn kong_slash_handling_plain() {
    run_slash_handling(false);
}

/// describe("slash handling") describe("(regex)"): the same rows with the
/// route path turned into `~/[0]?<path>`.
#[test]
fn kong_slash_handling_regex() {
    run_slash_handling(true);
}
