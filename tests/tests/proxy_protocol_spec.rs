//! PROXY protocol (v1 and v2) on `proxy_protocol` proxy listeners, plain
//! and `ssl`. Ports the proxy-protocol blocks of Kong's
//! `spec/02-integration/05-proxy/03-upstream_headers_spec.lua` ("using
//! trusted / non-trusted proxy protocol configuration values"), and checks
//! nginx's strictness (`src/core/ngx_proxy_protocol.c`): no header, a wrong
//! signature, a malformed or over-long header closes the connection
//! without an answer; a header that never comes is waited for no longer
//! than `client_header_timeout`. Each Kong `it(...)` is a named case.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder, TempDir};
use gw_tests::tls::{TlsClient, TlsOptions};
use gw_tests::{free_port, parse_response, raw_request, Conn};

const FIXTURE: &str = r#"_format_version: "3.0"
services:
- name: s-inspect
  url: http://{UP0}
  routes:
  - hosts: [headers-inspect.test]
  - hosts: [denied.test]
    plugins:
    - name: ip-restriction
      config: {deny: [192.168.0.1]}
"#;

const T: Duration = Duration::from_secs(10);

fn v1(port: u16) -> String {
    format!("PROXY TCP4 192.168.0.1 127.0.0.1 56324 {port}\r\n")
}

/// A v2 PROXY header: TCP over IPv4, 192.168.0.1:56324 -> 127.0.0.1:port.
fn v2(port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    h.extend_from_slice(&[192, 168, 0, 1, 127, 0, 0, 1]);
    h.extend_from_slice(&56324u16.to_be_bytes());
    h.extend_from_slice(&port.to_be_bytes());
    h
}

fn inspect(extra: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: headers-inspect.test\r\nConnection: close\r\n{extra}\r\n")
        .into_bytes()
}

/// Sends `bytes` and returns the response status, `None` when the
/// connection closed with no answer.
fn send(port: u16, bytes: &[u8]) -> Option<u16> {
    let got = raw_request(port, bytes, T).ok()?;
    parse_response(&got).map(|(r, _)| r.status)
}

#[test]
fn upstream_headers_spec_using_trusted_proxy_protocol_configuration_values() {
    let up = Recorder::start();
    let tls = free_port();
    let tmp = TempDir::new("pp-log");
    let access = tmp.path().join("access.log");
    let gw = Gateway::start_with(
        &fill_ports(FIXTURE, &[up.port]),
        &[
            (
                "KONG_PROXY_LISTEN",
                &format!(
                    "127.0.0.1:{{PROXY_PORT}} proxy_protocol, 127.0.0.1:{tls} ssl proxy_protocol"
                ),
            ),
            ("KONG_REAL_IP_HEADER", "proxy_protocol"),
            ("KONG_REAL_IP_RECURSIVE", "on"),
            ("KONG_TRUSTED_IPS", "127.0.0.1,172.16.0.1,192.168.0.1"),
            ("KONG_NGINX_PROXY_CLIENT_HEADER_TIMEOUT", "1s"),
            ("KONG_PROXY_ACCESS_LOG", access.to_str().unwrap()),
        ],
    );
    let port = gw.port;
    let mut t = Cases::new();

    t.it("should be added if not present in request", || {
        let mut req = v1(port).into_bytes();
        req.extend(inspect(""));
        assert_eq!(send(port, &req), Some(200));
        let r = up.last();
        assert_eq!(r.header("x-real-ip"), Some("192.168.0.1"));
        assert_eq!(r.header("x-forwarded-for"), Some("192.168.0.1"));
        assert_eq!(
            r.header("x-forwarded-port"),
            Some(port.to_string().as_str())
        );
    });
    t.it("should be changed according to rules if present in request", || {
        let mut req = v1(port).into_bytes();
        req.extend(inspect(
            "X-Real-IP: 10.0.0.2\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.2, 10.0.0.1, 192.168.0.1, 172.16.0.1\r\n",
        ));
        assert_eq!(send(port, &req), Some(200));
        let r = up.last();
        assert_eq!(r.header("x-real-ip"), Some("192.168.0.1"));
        assert_eq!(
            r.header("x-forwarded-for"),
            Some("10.0.0.1, 127.0.0.2, 10.0.0.1, 192.168.0.1, 172.16.0.1, 127.0.0.1")
        );
    });
    t.it(
        "should be forwarded even if proxy protocol and X-Forwarded-For header has a port in it",
        || {
            let mut req = v1(port).into_bytes();
            req.extend(inspect(
                "X-Real-IP: 10.0.0.2\r\nX-Forwarded-For: 127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18\r\nX-Forwarded-Port: 14\r\n",
            ));
            assert_eq!(send(port, &req), Some(200));
            let r = up.last();
            assert_eq!(r.header("x-real-ip"), Some("192.168.0.1"));
            assert_eq!(
                r.header("x-forwarded-for"),
                Some("127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18, 127.0.0.1")
            );
            assert_eq!(r.header("x-forwarded-port"), Some("14"));
        },
    );
    t.it("a v2 header gives the same client address", || {
        let mut req = v2(port);
        req.extend(inspect(""));
        assert_eq!(send(port, &req), Some(200));
        assert_eq!(up.last().header("x-real-ip"), Some("192.168.0.1"));
    });
    t.it("a header split over several writes is waited for", || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let h = v1(port);
        for part in [&h[..9], &h[9..30], &h[30..]] {
            s.write_all(part.as_bytes()).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        s.write_all(&inspect("")).unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
        assert_eq!(parse_response(&buf).map(|(r, _)| r.status), Some(200));
    });
    t.it(
        "UNKNOWN and LOCAL headers keep the peer as the client",
        || {
            let mut req = b"PROXY UNKNOWN\r\n".to_vec();
            req.extend(inspect(""));
            assert_eq!(send(port, &req), Some(200));
            assert_eq!(up.last().header("x-real-ip"), Some("127.0.0.1"));
            let mut req = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00".to_vec();
            req.extend(inspect(""));
            assert_eq!(send(port, &req), Some(200));
            assert_eq!(up.last().header("x-real-ip"), Some("127.0.0.1"));
        },
    );
    t.it("ip-restriction sees the PROXY client address", || {
        let mut req = v1(port).into_bytes();
        req.extend(b"GET / HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n");
        assert_eq!(send(port, &req), Some(403));
        let mut req = b"PROXY TCP4 192.168.0.2 127.0.0.1 1 2\r\n".to_vec();
        req.extend(b"GET / HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n");
        assert_eq!(send(port, &req), Some(200));
    });
    t.it(
        "the access log's $remote_addr is the PROXY client (nginx realip)",
        || {
            let mut req = v1(port).into_bytes();
            req.extend(inspect(""));
            assert_eq!(send(port, &req), Some(200));
            let deadline = Instant::now() + T;
            loop {
                let text = std::fs::read_to_string(&access).unwrap_or_default();
                if text.lines().any(|l| l.starts_with("192.168.0.1 - - ")) {
                    break;
                }
                assert!(Instant::now() < deadline, "{text}");
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    t.it(
        "PROXY header before TLS on an ssl proxy_protocol listener",
        || {
            let opts = TlsOptions::sni("headers-inspect.test");
            let config = opts.config();
            for header in [v1(tls).into_bytes(), v2(tls)] {
                let mut c = TlsClient::connect_with(tls, &opts, &config, &header).unwrap();
                let r = c.get("headers-inspect.test", "/", &[("Connection", "close")]);
                assert_eq!(r.status, 200);
                let seen = up.last();
                assert_eq!(seen.header("x-real-ip"), Some("192.168.0.1"));
                assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
            }
            // No header: closed before any TLS byte.
            assert!(TlsClient::connect(tls, &opts).is_err());
        },
    );

    // nginx's strictness: closed, no answer.
    t.it("a missing header closes the connection", || {
        assert_eq!(send(port, &inspect("")), None);
    });
    t.it(
        "a wrong v2 signature or version closes the connection",
        || {
            let mut bad = v2(port);
            bad[11] = b'X';
            bad.extend(inspect(""));
            assert_eq!(send(port, &bad), None);
            let mut bad = v2(port);
            bad[12] = 0x31;
            bad.extend(inspect(""));
            assert_eq!(send(port, &bad), None);
        },
    );
    t.it("a wrong length closes the connection", || {
        // Shorter than its IPv4 addresses.
        let mut bad = v2(port);
        bad[15] = 4;
        bad.truncate(20);
        bad.extend(inspect(""));
        assert_eq!(send(port, &bad), None);
        // More than nginx's 4096-byte header buffer.
        let mut big = v2(port);
        big[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(send(port, &big), None);
    });
    t.it("a v1 line over 107 bytes closes the connection", || {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(110, b'a');
        long.extend_from_slice(b"\r\n");
        long.extend(inspect(""));
        assert_eq!(send(port, &long), None);
    });
    t.it("a malformed v1 line closes the connection", || {
        for bad in [
            "PROXY TCP4 192.168.0.1 127.0.0.1 56324\r\n",
            "PROXY TCP4 192.168.0.300 127.0.0.1 1 2\r\n",
            "PROXY TCP4 192.168.0.1 127.0.0.1 1 2\n",
            "PROXY  TCP4 192.168.0.1 127.0.0.1 1 2\r\n",
        ] {
            let mut req = bad.as_bytes().to_vec();
            req.extend(inspect(""));
            assert_eq!(send(port, &req), None, "{bad:?}");
        }
    });
    t.it(
        "a header that never comes is waited for client_header_timeout",
        || {
            let mut c = Conn::open(port);
            c.send(b"PROXY TCP4 192.168.0.1").unwrap();
            let started = Instant::now();
            assert!(c.is_closed(Duration::from_secs(5)));
            assert!(started.elapsed() >= Duration::from_millis(700));
        },
    );
    t.finish();
    drop(gw);
}

#[test]
fn upstream_headers_spec_using_non_trusted_proxy_protocol_configuration_values() {
    let up = Recorder::start();
    let gw = Gateway::start_with(
        &fill_ports(FIXTURE, &[up.port]),
        &[
            ("KONG_PROXY_LISTEN", "127.0.0.1:{PROXY_PORT} proxy_protocol"),
            ("KONG_REAL_IP_HEADER", "proxy_protocol"),
            ("KONG_REAL_IP_RECURSIVE", "on"),
            ("KONG_TRUSTED_IPS", "10.0.0.1,172.16.0.1,192.168.0.1"),
        ],
    );
    let port = gw.port;
    let mut t = Cases::new();
    t.it("should be added if not present in request", || {
        let mut req = v1(port).into_bytes();
        req.extend(inspect(""));
        assert_eq!(send(port, &req), Some(200));
        let r = up.last();
        assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
        assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(
            r.header("x-forwarded-port"),
            Some(port.to_string().as_str())
        );
    });
    t.it("should be changed according to rules if present in request", || {
        let mut req = v1(port).into_bytes();
        req.extend(inspect(
            "X-Real-IP: 10.0.0.2\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.2, 10.0.0.1, 192.168.0.1, 172.16.0.1\r\n",
        ));
        assert_eq!(send(port, &req), Some(200));
        let r = up.last();
        assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
        assert_eq!(
            r.header("x-forwarded-for"),
            Some("10.0.0.1, 127.0.0.2, 10.0.0.1, 192.168.0.1, 172.16.0.1, 127.0.0.1")
        );
    });
    t.it(
        "should be replaced even if proxy protocol, X-Forwarded-Port and X-Forwarded-For headers have a port in it",
        || {
            let mut req = v1(port).into_bytes();
            req.extend(inspect(
                "X-Real-IP: 10.0.0.2\r\nX-Forwarded-For: 127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18\r\nX-Forwarded-Port: 14\r\n",
            ));
            assert_eq!(send(port, &req), Some(200));
            let r = up.last();
            assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
            assert_eq!(
                r.header("x-forwarded-for"),
                Some("127.0.0.1:14, 10.0.0.1:15, 192.168.0.1:16, 127.0.0.1:17, 172.16.0.1:18, 127.0.0.1")
            );
            assert_eq!(r.header("x-forwarded-port"), Some(port.to_string().as_str()));
        },
    );
    t.it(
        "ip-restriction sees the peer when it is not trusted",
        || {
            let mut req = v1(port).into_bytes();
            req.extend(b"GET / HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n");
            assert_eq!(send(port, &req), Some(200));
        },
    );
    t.finish();
}

#[test]
fn plain_listeners_beside_proxy_protocol_ones_need_no_header() {
    let up = Recorder::start();
    let pp = free_port();
    let gw = Gateway::start_with(
        &fill_ports(FIXTURE, &[up.port]),
        &[
            (
                "KONG_PROXY_LISTEN",
                &format!("127.0.0.1:{{PROXY_PORT}}, 127.0.0.1:{pp} proxy_protocol"),
            ),
            ("KONG_REAL_IP_HEADER", "proxy_protocol"),
            ("KONG_TRUSTED_IPS", "127.0.0.1"),
        ],
    );
    // No PROXY header on the plain listener: the peer is the client (nginx
    // realip declines a connection without one).
    assert_eq!(send(gw.port, &inspect("")), Some(200));
    assert_eq!(up.last().header("x-real-ip"), Some("127.0.0.1"));
    // A PROXY header there is just a bad request line.
    let mut req = v1(gw.port).into_bytes();
    req.extend(inspect(""));
    assert_eq!(send(gw.port, &req), Some(400));
    let mut req = v1(pp).into_bytes();
    req.extend(inspect(""));
    assert_eq!(send(pp, &req), Some(200));
    assert_eq!(up.last().header("x-real-ip"), Some("192.168.0.1"));
}
