//! Port of Kong's `spec/02-integration/05-proxy/03-upstream_headers_spec.lua`
//! (+ the upstream side of `33-request-id-header_spec.lua` and
//! `35-via_spec.lua`): what the upstream receives. The upstream is a
//! recording server ([`Recorder`]) that keeps every request exactly as it
//! arrived. One gateway per Kong `describe` block; each Kong `it(...)` is a
//! named case (see [`Cases`]). The proxy-protocol blocks are ported in
//! `proxy_protocol_spec.rs`. Skipped: the request-transformer cases (plugin
//! not available) and the `(response from upstream)` charset block.
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorded, Recorder};
use gw_tests::{request, Response};

const FIXTURE: &str = r#"_format_version: "3.0"
services:
- name: s-inspect
  url: http://{UP0}
  routes:
  - protocols: [http]
    hosts: [headers-inspect.test]
- name: s-preserved
  url: http://{UP0}
  routes:
  - protocols: [http]
    hosts: [preserved.test]
    preserve_host: true
- name: s-foo
  url: http://{UP0}
  routes:
  - protocols: [http]
    paths: [/foo]
    strip_path: true
- name: s-status
  url: http://{UP0}
  routes:
  - protocols: [http]
    paths: [/status/200]
    strip_path: false
- name: s-root
  url: http://{UP0}
  routes:
  - protocols: [http]
    paths: [/]
    strip_path: true
- name: s-hop
  url: http://{UP1}
  routes:
  - protocols: [http]
    hosts: [hop.test]
"#;

/// The response headers of Kong's `/hop-by-hop` fixture location.
const HOP_BY_HOP_RESPONSE: &[(&str, &str)] = &[
    ("Keep-Alive", "timeout=5, max=1000"),
    ("Proxy", "Remove-Me"),
    ("Proxy-Connection", "close"),
    ("Proxy-Authenticate", "Basic"),
    ("Proxy-Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("Transfer-Encoding", "chunked"),
    ("TE", "trailers, deflate;q=0.5"),
    ("Trailer", "Expires"),
    ("Upgrade", "example/1, foo/2"),
];

struct Setup {
    gw: Gateway,
    up: Recorder,
    hop: Recorder,
}

impl Setup {
    fn start(env: &[(&str, &str)]) -> Setup {
        let up = Recorder::start();
        let hop = Recorder::start_with_headers(HOP_BY_HOP_RESPONSE);
        let gw = Gateway::start_with(&fill_ports(FIXTURE, &[up.port, hop.port]), env);
        Setup { gw, up, hop }
    }

    /// Kong's `request_headers(headers, path)`: GET, expect 200, return what
    /// the upstream received.
    fn request_headers(&self, headers: &[(&str, &str)], path: &str) -> Recorded {
        let before = self.up.count();
        let res = request(self.gw.port, "GET", path, headers, b"");
        assert_eq!(res.status, 200, "GET {path}: {}", res.body_str());
        assert_eq!(
            self.up.count(),
            before + 1,
            "request did not reach the upstream"
        );
        self.up.last()
    }

    fn inspect(&self, extra: &[(&str, &str)]) -> Recorded {
        let mut h = vec![("Host", "headers-inspect.test")];
        h.extend_from_slice(extra);
        self.request_headers(&h, "/")
    }

    fn port_str(&self) -> String {
        self.gw.port.to_string()
    }
}

fn hdr<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.header(name)
}

// ---------------------------------------------------------------------------

/// describe("hop-by-hop headers")
#[test]
fn kong_hop_by_hop_headers() {
    let s = Setup::start(&[]);
    let mut c = Cases::new();
    c.it("are removed from request", || {
        let h = s.request_headers(
            &[
                ("Connection", "X-Foo, X-Bar"),
                ("Host", "headers-inspect.test"),
                ("Keep-Alive", "timeout=5, max=1000"),
                ("Proxy", "Remove-Me"),
                ("Proxy-Connection", "close"),
                ("Proxy-Authenticate", "Basic"),
                ("Proxy-Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
                ("TE", "trailers, deflate;q=0.5"),
                ("Upgrade", "example/1, foo/2"),
                ("X-Foo", "Remove-Me"),
                ("X-Bar", "Remove-Me"),
                ("X-Foo-Bar", "Keep-Me"),
                ("Close", "Keep-Me"),
            ],
            "/",
        );
        assert_eq!(hdr(&h, "keep-alive"), None);
        assert_eq!(hdr(&h, "proxy"), None);
        assert_eq!(hdr(&h, "proxy-connection"), None);
        assert_eq!(hdr(&h, "upgrade"), None);
        assert_eq!(hdr(&h, "x-foo"), None);
        assert_eq!(hdr(&h, "x-bar"), None);
        assert_eq!(hdr(&h, "proxy-authenticate"), Some("Basic"));
        assert_eq!(
            hdr(&h, "proxy-authorization"),
            Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        );
        assert_eq!(hdr(&h, "te"), Some("trailers"));
        assert_eq!(hdr(&h, "x-foo-bar"), Some("Keep-Me"));
        assert_eq!(hdr(&h, "close"), Some("Keep-Me"));
    });
    c.it("are removed from response", || {
        let res = request(
            s.gw.port,
            "GET",
            "/hop-by-hop",
            &[("Host", "hop.test")],
            b"",
        );
        assert_eq!(res.status, 200);
        assert_eq!(res.header("keep-alive"), None, "{:?}", res.headers);
        assert_eq!(res.header("trailer"), None, "{:?}", res.headers);
        assert_eq!(res.header("upgrade"), None, "{:?}", res.headers);
        assert_eq!(
            res.header("transfer-encoding"),
            Some("chunked"),
            "{:?}",
            res.headers
        );
        assert_eq!(s.hop.count(), 1);
    });
    c.it("keeps trailer when requested", || {
        let res = request(
            s.gw.port,
            "GET",
            "/hop-by-hop",
            &[("Host", "hop.test"), ("TE", "trailers")],
            b"",
        );
        assert_eq!(res.status, 200);
        assert_eq!(res.header("trailer"), Some("Expires"), "{:?}", res.headers);
    });
    c.it("keeps upgrade when upgrading", || {
        let h = s.request_headers(
            &[
                ("Host", "headers-inspect.test"),
                ("Connection", "keep-alive, Upgrade"),
                ("Upgrade", "websocket"),
            ],
            "/get",
        );
        assert_eq!(hdr(&h, "connection"), Some("keep-alive, Upgrade"));
        assert_eq!(hdr(&h, "upgrade"), Some("websocket"));
    });
    c.finish();
}

/// Pieces shared by the "default", "non-trusted" and "recursive
/// non-trusted" blocks: forwarded headers from an untrusted peer are
/// replaced.
fn untrusted_cases(c: &mut Cases, s: &Setup) {
    let port = s.port_str();
    c.it(
        "X-Real-IP should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-real-ip"), Some("127.0.0.1"));
        },
    );
    c.it("X-Real-IP should be replaced if present in request", || {
        let h = s.inspect(&[("X-Real-IP", "10.0.0.1")]);
        assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
    });
    c.it(
        "X-Forwarded-For should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-forwarded-for"), Some("127.0.0.1"));
        },
    );
    c.it(
        "X-Forwarded-For should be appended if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-For", "10.0.0.1")]);
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
        },
    );
    c.it(
        "X-Forwarded-Proto should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-forwarded-proto"), Some("http"));
        },
    );
    c.it(
        "X-Forwarded-Proto should be replaced if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Proto", "https")]);
            assert_eq!(hdr(&h, "x-forwarded-proto"), Some("http"));
        },
    );
    c.it(
        "X-Forwarded-Host should be added if not present in request",
        || {
            assert_eq!(
                hdr(&s.inspect(&[]), "x-forwarded-host"),
                Some("headers-inspect.test")
            );
        },
    );
    c.it(
        "X-Forwarded-Host should be replaced if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Host", "example.test")]);
            assert_eq!(hdr(&h, "x-forwarded-host"), Some("headers-inspect.test"));
        },
    );
    c.it(
        "X-Forwarded-Port should be added if not present in request",
        || {
            assert_eq!(
                hdr(&s.inspect(&[]), "x-forwarded-port"),
                Some(port.as_str())
            );
        },
    );
    c.it(
        "X-Forwarded-Port should be replaced if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Port", "80")]);
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
        },
    );
    c.it(
        "X-Forwarded-Path should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-forwarded-path"), Some("/"));
        },
    );
    c.it(
        "X-Forwarded-Path should be replaced if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Path", "/replaced")]);
            assert_eq!(hdr(&h, "x-forwarded-path"), Some("/"));
        },
    );
    c.it(
        "X-Forwarded-Prefix should be added if path was stripped",
        || {
            let h = s.request_headers(&[], "/foo/status/200");
            assert_eq!(hdr(&h, "x-forwarded-prefix"), Some("/foo"));
        },
    );
    c.it(
        "X-Forwarded-Prefix should be replaced if present in request and path was stripped",
        || {
            let h = s.request_headers(&[("X-Forwarded-Prefix", "/replaced")], "/foo");
            assert_eq!(hdr(&h, "x-forwarded-prefix"), Some("/foo"));
        },
    );
    c.it(
        "X-Forwarded-Prefix should not be added if path was not stripped",
        || {
            let h = s.request_headers(&[], "/status/200");
            assert_eq!(hdr(&h, "x-forwarded-prefix"), None);
        },
    );
    c.it(
        "X-Forwarded-Prefix should not be added if / was stripped",
        || {
            let h = s.request_headers(&[], "/");
            assert_eq!(hdr(&h, "x-forwarded-prefix"), None);
        },
    );
}

/// describe("(using the default configuration values)")
#[test]
fn kong_using_the_default_configuration_values() {
    let s = Setup::start(&[]);
    let port = s.port_str();
    let mut c = Cases::new();
    untrusted_cases(&mut c, &s);
    c.it(
        "should be added if not present in request while preserving the downstream host",
        || {
            let h = s.request_headers(&[("Host", "preserved.test")], "/");
            assert_eq!(hdr(&h, "host"), Some("preserved.test"));
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-proto"), Some("http"));
            assert_eq!(hdr(&h, "x-forwarded-host"), Some("preserved.test"));
            assert_eq!(hdr(&h, "x-forwarded-path"), Some("/"));
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
        },
    );
    c.it(
        "should be added if present in request while preserving the downstream host",
        || {
            let h = s.request_headers(
                &[
                    ("Host", "preserved.test"),
                    ("X-Real-IP", "10.0.0.1"),
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "example.test"),
                    ("X-Forwarded-Port", "80"),
                ],
                "/",
            );
            assert_eq!(hdr(&h, "host"), Some("preserved.test"));
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-proto"), Some("http"));
            assert_eq!(hdr(&h, "x-forwarded-host"), Some("preserved.test"));
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
            assert_eq!(hdr(&h, "x-forwarded-path"), Some("/"));
        },
    );
    let upstream_host = format!("127.0.0.1:{}", s.up.port);
    c.it(
        "should be added if not present in request while discarding the downstream host",
        || {
            let h = s.inspect(&[]);
            assert_eq!(hdr(&h, "host"), Some(upstream_host.as_str()));
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-proto"), Some("http"));
            assert_eq!(hdr(&h, "x-forwarded-host"), Some("headers-inspect.test"));
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
            assert_eq!(hdr(&h, "x-forwarded-path"), Some("/"));
        },
    );
    c.it(
        "if present in request while discarding the downstream host",
        || {
            let h = s.inspect(&[
                ("X-Real-IP", "10.0.0.1"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "example.test"),
                ("X-Forwarded-Port", "80"),
            ]);
            assert_eq!(hdr(&h, "host"), Some(upstream_host.as_str()));
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-proto"), Some("http"));
            assert_eq!(hdr(&h, "x-forwarded-host"), Some("headers-inspect.test"));
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
            assert_eq!(hdr(&h, "x-forwarded-path"), Some("/"));
        },
    );
    c.finish();
}

/// describe("(using the trusted configuration values)"): trusted_ips = 127.0.0.1
#[test]
fn kong_using_the_trusted_configuration_values() {
    let s = Setup::start(&[("KONG_TRUSTED_IPS", "127.0.0.1")]);
    let port = s.port_str();
    let mut c = Cases::new();
    c.it(
        "X-Real-IP should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-real-ip"), Some("127.0.0.1"));
        },
    );
    c.it(
        "X-Real-IP should be forwarded if present in request",
        || {
            let h = s.inspect(&[("X-Real-IP", "10.0.0.1")]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("10.0.0.1"));
        },
    );
    c.it(
        "X-Forwarded-For should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-forwarded-for"), Some("127.0.0.1"));
        },
    );
    c.it(
        "X-Forwarded-For should be appended if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-For", "10.0.0.1")]);
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
        },
    );
    c.it(
        "X-Forwarded-Proto should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-forwarded-proto"), Some("http"));
        },
    );
    c.it(
        "X-Forwarded-Proto should be forwarded if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Proto", "https")]);
            assert_eq!(hdr(&h, "x-forwarded-proto"), Some("https"));
        },
    );
    c.it(
        "X-Forwarded-Host should be added if not present in request",
        || {
            assert_eq!(
                hdr(&s.inspect(&[]), "x-forwarded-host"),
                Some("headers-inspect.test")
            );
        },
    );
    c.it(
        "X-Forwarded-Host should be forwarded if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Host", "example.test")]);
            assert_eq!(hdr(&h, "x-forwarded-host"), Some("example.test"));
        },
    );
    c.it(
        "X-Forwarded-Port should be added if not present in request",
        || {
            assert_eq!(
                hdr(&s.inspect(&[]), "x-forwarded-port"),
                Some(port.as_str())
            );
        },
    );
    c.it(
        "X-Forwarded-Port should be forwarded if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Port", "80")]);
            assert_eq!(hdr(&h, "x-forwarded-port"), Some("80"));
        },
    );
    c.it(
        "X-Forwarded-Path should be added if not present in request",
        || {
            assert_eq!(hdr(&s.inspect(&[]), "x-forwarded-path"), Some("/"));
        },
    );
    c.it(
        "X-Forwarded-Path should be forwarded if present in request",
        || {
            let h = s.inspect(&[("X-Forwarded-Path", "/original-path")]);
            assert_eq!(hdr(&h, "x-forwarded-path"), Some("/original-path"));
        },
    );
    c.it(
        "X-Forwarded-Prefix should be preserved even if path was stripped",
        || {
            let h = s.request_headers(&[("x-forwarded-prefix", "/preserved")], "/foo/status/200");
            assert_eq!(hdr(&h, "x-forwarded-prefix"), Some("/preserved"));
        },
    );
    c.it(
        "X-Forwarded-Prefix should be preserved even if path was stripped (not stripped)",
        || {
            let h = s.request_headers(&[("x-forwarded-prefix", "/preserved")], "/status/200");
            assert_eq!(hdr(&h, "x-forwarded-prefix"), Some("/preserved"));
        },
    );
    c.finish();
}

/// describe("(using the non-trusted configuration values)"): trusted_ips = 10.0.0.1
#[test]
fn kong_using_the_non_trusted_configuration_values() {
    let s = Setup::start(&[("KONG_TRUSTED_IPS", "10.0.0.1")]);
    let mut c = Cases::new();
    untrusted_cases(&mut c, &s);
    c.finish();
}

/// describe("(using the recursive trusted configuration values)")
#[test]
fn kong_using_the_recursive_trusted_configuration_values() {
    let s = Setup::start(&[
        ("KONG_REAL_IP_HEADER", "X-Forwarded-For"),
        ("KONG_REAL_IP_RECURSIVE", "on"),
        ("KONG_TRUSTED_IPS", "127.0.0.1,172.16.0.1,192.168.0.1"),
    ]);
    let mut c = Cases::new();
    c.it(
        "X-Real-IP and X-Forwarded-For should be added if not present in request",
        || {
            let h = s.inspect(&[]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("127.0.0.1"));
        },
    );
    c.it(
        "X-Real-IP and X-Forwarded-For should be changed according to rules if present in request",
        || {
            let h = s.inspect(&[
                (
                    "X-Forwarded-For",
                    "127.0.0.1, 10.0.0.1, 192.168.0.1, 127.0.0.1, 172.16.0.1",
                ),
                ("X-Real-IP", "10.0.0.2"),
            ]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("10.0.0.1"));
            assert_eq!(
                hdr(&h, "x-forwarded-for"),
                Some("127.0.0.1, 10.0.0.1, 192.168.0.1, 127.0.0.1, 172.16.0.1, 127.0.0.1")
            );
        },
    );
    c.it(
        "X-Forwarded-Port should be forwarded even if X-Forwarded-For header has a port in it",
        || {
            let h = s.inspect(&[
                (
                    "X-Forwarded-For",
                    "127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18",
                ),
                ("X-Real-IP", "10.0.0.2"),
                ("X-Forwarded-Port", "14"),
            ]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("10.0.0.1"));
            assert_eq!(
                hdr(&h, "x-forwarded-for"),
                Some("127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18, 127.0.0.1")
            );
            assert_eq!(hdr(&h, "x-forwarded-port"), Some("14"));
        },
    );
    c.finish();
}

/// describe("(using the recursive non-trusted configuration values)")
#[test]
fn kong_using_the_recursive_non_trusted_configuration_values() {
    let s = Setup::start(&[
        ("KONG_REAL_IP_HEADER", "X-Forwarded-For"),
        ("KONG_REAL_IP_RECURSIVE", "on"),
        ("KONG_TRUSTED_IPS", "10.0.0.1,172.16.0.1,192.168.0.1"),
    ]);
    let port = s.port_str();
    let mut c = Cases::new();
    c.it(
        "X-Real-IP and X-Forwarded-For should be added if not present in request",
        || {
            let h = s.inspect(&[]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-for"), Some("127.0.0.1"));
        },
    );
    c.it(
        "X-Real-IP and X-Forwarded-For should be changed according to rules if present in request",
        || {
            let h = s.inspect(&[
                (
                    "X-Forwarded-For",
                    "10.0.0.1, 127.0.0.2, 10.0.0.1, 192.168.0.1, 172.16.0.1",
                ),
                ("X-Real-IP", "10.0.0.2"),
            ]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(
                hdr(&h, "x-forwarded-for"),
                Some("10.0.0.1, 127.0.0.2, 10.0.0.1, 192.168.0.1, 172.16.0.1, 127.0.0.1")
            );
        },
    );
    let xff_ports = "127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18";
    c.it(
        "should be replaced even if X-Forwarded-Port and X-Forwarded-For headers have a port in it",
        || {
            let h = s.inspect(&[
                ("X-Forwarded-For", xff_ports),
                ("X-Real-IP", "10.0.0.2"),
                ("X-Forwarded-Port", "14"),
            ]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(
                hdr(&h, "x-forwarded-for"),
                Some(format!("{xff_ports}, 127.0.0.1").as_str())
            );
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
        },
    );
    c.it(
        "should not take a port from X-Forwarded-For header if it has a port in it",
        || {
            let h = s.inspect(&[("X-Forwarded-For", xff_ports), ("X-Real-IP", "10.0.0.2")]);
            assert_eq!(hdr(&h, "x-real-ip"), Some("127.0.0.1"));
            assert_eq!(hdr(&h, "x-forwarded-port"), Some(port.as_str()));
        },
    );
    c.finish();
}

/// The default `real_ip_header = X-Real-IP` with a trusted peer: the incoming
/// X-Real-IP becomes the client address (kong-routing.md §c realip).
#[test]
fn x_real_ip_header_from_trusted_peer_sets_the_client_address() {
    let s = Setup::start(&[
        ("KONG_TRUSTED_IPS", "127.0.0.1"),
        ("KONG_REAL_IP_HEADER", "X-Real-IP"),
    ]);
    let h = s.inspect(&[("X-Real-IP", "10.1.2.3"), ("X-Forwarded-For", "10.9.9.9")]);
    assert_eq!(hdr(&h, "x-real-ip"), Some("10.1.2.3"));
    // XFF always appends the real peer address ($realip_remote_addr).
    assert_eq!(hdr(&h, "x-forwarded-for"), Some("10.9.9.9, 127.0.0.1"));
}

/// X-Forwarded-Host is nginx `$host`: lowercased, port removed.
#[test]
fn x_forwarded_host_is_lowercased_without_port() {
    let s = Setup::start(&[]);
    let h = s.request_headers(&[("Host", "Some.Host.TEST:8080")], "/");
    assert_eq!(hdr(&h, "x-forwarded-host"), Some("some.host.test"));
    assert_eq!(hdr(&h, "x-forwarded-path"), Some("/"));
}

/// X-Forwarded-Path is the raw request path without the query string.
#[test]
fn x_forwarded_path_is_raw_path_without_query() {
    let s = Setup::start(&[]);
    let h = s.request_headers(&[], "/foo//a/./b%20c?x=1&y");
    assert_eq!(hdr(&h, "x-forwarded-path"), Some("/foo//a/./b%20c"));
    assert_eq!(h.target, "/a/b%20c?x=1&y");
}

/// Repeated X-Forwarded-For lines are joined before the peer is appended.
#[test]
fn repeated_x_forwarded_for_lines_are_joined() {
    let s = Setup::start(&[]);
    let h = s.inspect(&[
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-For", "10.0.0.2"),
    ]);
    assert_eq!(h.header_all("x-forwarded-for").len(), 1, "{:?}", h.headers);
    assert_eq!(
        hdr(&h, "x-forwarded-for"),
        Some("10.0.0.1, 10.0.0.2, 127.0.0.1")
    );
}

// ---------------------------------------------------------------------------
// 33-request-id-header_spec.lua, describe("(upstream)")

/// describe("(upstream)") describe("default configuration")
#[test]
fn kong_request_id_upstream_default_configuration() {
    let s = Setup::start(&[]);
    let mut c = Cases::new();
    c.it("contains the expected value", || {
        let res: Response = request(
            s.gw.port,
            "GET",
            "/",
            &[("Host", "headers-inspect.test")],
            b"",
        );
        assert_eq!(res.status, 200);
        let up = s.up.last();
        let id = hdr(&up, "x-kong-request-id").expect("X-Kong-Request-Id upstream");
        assert!(
            id.bytes().all(|b| b.is_ascii_hexdigit()) && !id.is_empty(),
            "{id}"
        );
        // The same id is sent downstream.
        assert_eq!(res.header("x-kong-request-id"), Some(id));
    });
    c.it("overwrites client value if any", || {
        let h = s.inspect(&[("X-Kong-Request-Id", "client-value")]);
        let ids = h.header_all("x-kong-request-id");
        assert_eq!(ids.len(), 1, "{:?}", h.headers);
        assert_ne!(ids[0], "client-value");
        assert!(ids[0].bytes().all(|b| b.is_ascii_hexdigit()), "{}", ids[0]);
    });
    c.it("a new id for every request", || {
        let a = s.inspect(&[]);
        let b = s.inspect(&[]);
        assert_ne!(hdr(&a, "x-kong-request-id"), hdr(&b, "x-kong-request-id"));
    });
    c.finish();
}

/// describe("is injected with configuration [headers=X-Kong-Request-Id]")
/// it("contains the expected value") — `headers_upstream`.
#[test]
fn kong_request_id_upstream_injected_with_headers_upstream_set() {
    let s = Setup::start(&[("KONG_HEADERS_UPSTREAM", "X-Kong-Request-Id")]);
    let h = s.inspect(&[]);
    let id = hdr(&h, "x-kong-request-id").expect("X-Kong-Request-Id upstream");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

/// describe("is not injected with configuration [headers=off]") it("is nil")
#[test]
fn kong_request_id_upstream_not_injected_with_headers_upstream_off() {
    let s = Setup::start(&[("KONG_HEADERS_UPSTREAM", "off")]);
    let h = s.inspect(&[]);
    assert_eq!(hdr(&h, "x-kong-request-id"), None, "{:?}", h.headers);
}

// ---------------------------------------------------------------------------
// 35-via_spec.lua (upstream side)

/// it("HTTP/1.1 in both the inbound and outbound directions"): the upstream
/// sees the client's Via with Kong's hop appended.
#[test]
fn kong_via_http_1_1_appended_upstream() {
    let s = Setup::start(&[]);
    let h = s.inspect(&[("Via", "1.1 dev")]);
    assert_eq!(hdr(&h, "via"), Some("1.1 dev, 1.1 kong/3.10.0"));
    let h = s.inspect(&[]);
    assert_eq!(hdr(&h, "via"), Some("1.1 kong/3.10.0"));
}

/// HTTP/1.0 clients give `1.0 kong/<ver>` (`<http version> kong/<ver>`).
#[test]
fn via_upstream_uses_client_http_version() {
    let s = Setup::start(&[]);
    let raw = gw_tests::raw_request(
        s.gw.port,
        b"GET / HTTP/1.0\r\nHost: headers-inspect.test\r\n\r\n",
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200") || raw.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(hdr(&s.up.last(), "via"), Some("1.0 kong/3.10.0"));
}

/// Kong's upstream Connection is always `keep-alive`; the upstream request is
/// HTTP/1.1 even for an HTTP/1.0 client (proxy_http_version 1.1).
#[test]
fn upstream_connection_is_keep_alive_http_1_1() {
    let s = Setup::start(&[]);
    let h = s.inspect(&[("Connection", "close")]);
    assert_eq!(h.version, "HTTP/1.1");
    assert_eq!(hdr(&h, "connection"), Some("keep-alive"));
}
