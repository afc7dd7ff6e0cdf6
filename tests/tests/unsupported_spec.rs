//! Settings and config fields asking for what the gateway does not do yet
//! stop the start with a message naming them, instead of loading and being
//! ignored (before, a `proxy_protocol` listener answered a PROXY-protocol
//! client with 400, and an `ssl` listener was skipped with a warning; both
//! are served on proxy listeners now).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gw_tests::gateway::{Gateway, PROXY_PORT};
use gw_tests::get;

const EMPTY: &str = "_format_version: \"3.0\"\n";

/// Starts the gateway expecting a refusal; returns its output.
fn refused(yml: &str, env: &[(&str, &str)]) -> String {
    match Gateway::try_start_with(yml, env) {
        Ok(gw) => panic!(
            "the gateway started with {env:?} instead of refusing it; output:\n{}",
            gw.output()
        ),
        Err(out) => out,
    }
}

/// `proxy_protocol` and `ssl` proxy listeners are served
/// (proxy_protocol_spec.rs, tls_spec.rs); on the status listener they are not.
#[test]
fn proxy_protocol_and_ssl_status_listeners_are_refused() {
    let out = refused(
        EMPTY,
        &[("KONG_STATUS_LISTEN", "127.0.0.1:0 proxy_protocol")],
    );
    assert!(
        out.contains("KONG_STATUS_LISTEN: status_listen entry '127.0.0.1:0 proxy_protocol'")
            && out.contains("'proxy_protocol' (the PROXY protocol) not supported yet"),
        "{out}"
    );
    let out = refused(EMPTY, &[("KONG_STATUS_LISTEN", "127.0.0.1:0 ssl")]);
    assert!(
        out.contains(
            "status_listen entry '127.0.0.1:0 ssl': 'ssl' (TLS termination) not supported yet"
        ),
        "{out}"
    );
}

/// HTTP/2 is served on proxy listeners (ALPN h2 with `ssl`, h2c without:
/// `http2_spec`), not on the status listener.
#[test]
fn http2_on_the_status_listener_is_refused() {
    let out = refused(EMPTY, &[("KONG_STATUS_LISTEN", "127.0.0.1:0 http2")]);
    assert!(
        out.contains(
            "KONG_STATUS_LISTEN: status_listen entry '127.0.0.1:0 http2': 'http2' (HTTP/2)"
        ),
        "{out}"
    );
}

#[test]
fn admin_listen_is_refused() {
    let out = refused(EMPTY, &[("KONG_ADMIN_LISTEN", "127.0.0.1:0")]);
    assert!(
        out.contains(
            "KONG_ADMIN_LISTEN: admin_listen must be 'off': this gateway has no Admin API"
        ),
        "{out}"
    );
}

/// Kong 3.10's upstream TLS fields are applied (upstream_tls_spec.rs);
/// Kong Enterprise's `tls_sans` is not.
#[test]
fn unsupported_service_tls_fields_are_refused() {
    let yml = r#"_format_version: "3.0"
services:
- name: secure
  url: https://127.0.0.1:9
  tls_verify: true
  tls_verify_depth: 2
  tls_sans: {dnsnames: [a.test]}
"#;
    let out = refused(yml, &[]);
    assert!(
        out.contains(
            "in 'services' entity 'secure': field 'tls_sans': not supported yet: this gateway does not verify upstream certificates against extra SANs (tls_sans)"
        ),
        "{out}"
    );
    assert!(!out.contains("tls_verify_depth"), "{out}");
}

/// `ipv6only` is served, not parsed and dropped: with it, `[::]` and
/// `127.0.0.1` on one port are two sockets (nginx's usual pair); without
/// it the `[::]` socket would also take IPv4 and the second bind fail.
#[test]
fn ipv6only_listen_flag_is_applied() {
    let listen = format!("127.0.0.1:{PROXY_PORT}, [::]:{PROXY_PORT} ipv6only=on");
    let gw = match Gateway::try_start_with(EMPTY, &[("KONG_PROXY_LISTEN", &listen)]) {
        Ok(gw) => gw,
        Err(out) => panic!("did not start with {listen:?}:\n{out}"),
    };
    // Empty config: Kong's 404, over IPv4 and over IPv6.
    assert_eq!(get(gw.port, "/", &[]).status, 404);
    let mut s = TcpStream::connect(("::1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}
