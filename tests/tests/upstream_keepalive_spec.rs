//! The `upstream_keepalive_*` settings, after Kong's
//! `spec/02-integration/05-proxy/25-upstream_keepalive_spec.lua` and
//! `kong.conf.default`: `upstream_keepalive_pool_size = 0` opens a new
//! upstream connection per request, `upstream_keepalive_max_requests = N`
//! closes a pooled connection after N requests, and
//! `upstream_keepalive_idle_timeout = S` closes one left idle for S seconds.
//! Kong checks its error log; here the recording upstream counts the TCP
//! connections it accepted.
#![allow(clippy::unwrap_used)]

use std::thread;
use std::time::Duration;

use gw_tests::gateway::{fill, Gateway, Recorder};
use gw_tests::get;

const CONFIG: &str = r#"_format_version: "3.0"
services:
- name: s
  url: http://{UPSTREAM}
  routes:
  - paths: [/]
"#;

/// Sends `n` requests one after the other (each on its own client
/// connection) and returns how many connections the upstream accepted.
/// The pause lets the gateway put the upstream connection back in its pool
/// before the next request looks there.
fn upstream_connections(env: &[(&str, &str)], n: usize, pause: Duration) -> (usize, Recorder) {
    let up = Recorder::start();
    let gw = Gateway::start_with(&fill(CONFIG, up.port), env);
    for i in 0..n {
        if i > 0 {
            thread::sleep(pause);
        }
        let r = get(gw.port, "/", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
    }
    (up.connections(), up)
}

const SHORT: Duration = Duration::from_millis(100);

#[test]
fn default_pool_reuses_one_connection() {
    let (conns, up) = upstream_connections(&[], 4, SHORT);
    assert_eq!(conns, 1);
    assert_eq!(up.count(), 4);
}

#[test]
fn pool_size_zero_opens_a_connection_per_request() {
    let (conns, up) = upstream_connections(&[("KONG_UPSTREAM_KEEPALIVE_POOL_SIZE", "0")], 3, SHORT);
    assert_eq!(conns, 3, "one upstream connection per request");
    // As Kong (nginx sends its `Connection` value and then closes): the
    // upstream still reads keep-alive.
    for r in up.requests() {
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn max_requests_closes_a_connection_after_that_many() {
    let (conns, up) =
        upstream_connections(&[("KONG_UPSTREAM_KEEPALIVE_MAX_REQUESTS", "2")], 5, SHORT);
    // 2 + 2 + 1.
    assert_eq!(conns, 3);
    assert_eq!(up.count(), 5);
    // Kong: 1 closes the connection after every request.
    let (conns, _) =
        upstream_connections(&[("KONG_UPSTREAM_KEEPALIVE_MAX_REQUESTS", "1")], 3, SHORT);
    assert_eq!(conns, 3);
    // 0 = no limit.
    let (conns, _) =
        upstream_connections(&[("KONG_UPSTREAM_KEEPALIVE_MAX_REQUESTS", "0")], 4, SHORT);
    assert_eq!(conns, 1);
}

#[test]
fn idle_timeout_closes_an_idle_pooled_connection() {
    let pause = Duration::from_millis(2500);
    let (conns, _) =
        upstream_connections(&[("KONG_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT", "1")], 2, pause);
    assert_eq!(conns, 2, "the pooled connection idled out after 1 s");
    // The default (60 s) keeps it over the same pause.
    let (conns, _) = upstream_connections(&[], 2, pause);
    assert_eq!(conns, 1);
}
