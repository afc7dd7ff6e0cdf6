//! The HTTP/1 proxy path's edges that the vendored sequential form of
//! Pingora's `proxy_1to1` (`vendor/README.md`) must keep: a body-less
//! request is proxied by one loop that still watches the client, so a
//! client that goes away while the upstream is slow ends the upstream
//! request as nginx does (`proxy_ignore_client_abort off`), and an upstream
//! response cut short reaches the client cut, with the next request served
//! on a new upstream connection.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use gw_tests::gateway::{fill, Gateway};
use gw_tests::get;

const CONFIG: &str = r#"_format_version: "3.0"
services:
- name: s
  url: http://{UPSTREAM}
  routes:
  - paths: [/]
"#;

/// Reads one request head off `s` (bounded).
fn read_head(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "upstream: connection closed inside a head");
        head.extend_from_slice(&buf[..n]);
    }
    head
}

#[test]
fn a_client_gone_while_the_upstream_is_slow_ends_the_upstream_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_head(&mut s);
        // Never answer: report how long until the gateway closes.
        let started = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let closed = matches!(s.read(&mut buf), Ok(0));
        let _ = tx.send((closed, started.elapsed()));
    });
    let gw = Gateway::start(&fill(CONFIG, port));

    let mut client = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    client.shutdown(Shutdown::Both).unwrap();
    drop(client);

    let (closed, after) = rx.recv_timeout(Duration::from_secs(15)).unwrap();
    assert!(closed, "the gateway kept the upstream request open");
    assert!(
        after < Duration::from_secs(5),
        "upstream closed only after {after:?}"
    );
}

#[test]
fn an_upstream_response_cut_short_is_cut_for_the_client_and_the_next_request_works() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // First connection: a body shorter than its Content-Length, then
        // close. Second: a whole response. Report how many connections the
        // two requests took.
        let mut conns = 0;
        for first in [true, false] {
            let (mut s, _) = listener.accept().unwrap();
            conns += 1;
            read_head(&mut s);
            if first {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    .unwrap();
                let _ = s.shutdown(Shutdown::Both);
            } else {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
                thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = tx.send(conns);
    });
    let gw = Gateway::start(&fill(CONFIG, port));

    // The client sees the cut (a short body, then the close).
    let mut c = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.ends_with("abcdefghij"), "{text}");

    let r = get(gw.port, "/b", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "ok");
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
}
