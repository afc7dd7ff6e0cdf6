//! Upstreams and balancing, after Kong's
//! `spec/02-integration/05-proxy/10-balancer/*`: weighted round-robin,
//! consistent hashing, least-connections, `host_header`, DNS, health checks
//! (active and passive), retries, and the 502/503/504 answers for upstream
//! faults, driven through our own fault proxy (`gw_tests::fault`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gw_tests::fault::{FaultProxy, Mode};
use gw_tests::gateway::Gateway;
use gw_tests::{get, request, start_httpbin, try_request, Conn, Proc};

const MSG_NO_PEER: &str = "failure to get a peer from the ring-balancer";
const MSG_NAME_RESOLUTION: &str = "name resolution failed";

/// A service `svc` on `/` pointing at upstream `up.test` with `targets`
/// (YAML flow items) and extra upstream/service YAML.
fn config(targets: &[String], upstream_extra: &str, service_extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("      - {t}")).collect();
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    host: up.test
{service_extra}
    routes:
      - paths: ["/"]
upstreams:
  - name: up.test
{upstream_extra}
    targets:
{}
"#,
        targets.join("\n")
    )
}

fn target(port: u16, weight: u32) -> String {
    format!("{{target: \"127.0.0.1:{port}\", weight: {weight}}}")
}

fn name_of(r: &gw_tests::Response) -> String {
    r.header("x-upstream-name").unwrap_or("?").to_string()
}

/// Counts `X-Upstream-Name` over `n` requests on one kept-alive connection.
fn tally(port: u16, path: &str, n: usize) -> HashMap<String, usize> {
    let mut conn = Conn::open(port);
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = conn.request("GET", path, &[], b"").expect("response");
        let key = if r.status == 200 {
            name_of(&r)
        } else {
            format!("status {}", r.status)
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn upstreams(names: &[&str]) -> Vec<(Proc, u16)> {
    names.iter().map(|n| start_httpbin(n)).collect()
}

#[test]
fn round_robin_distributes_exactly_by_weight() {
    let ups = upstreams(&["a", "b", "c", "d"]);
    let yml = config(
        &[
            target(ups[0].1, 50),
            target(ups[1].1, 30),
            target(ups[2].1, 20),
            target(ups[3].1, 0),
        ],
        "",
        "",
    );
    let gw = Gateway::start(&yml);
    let n = 1000;
    let counts = tally(gw.port, "/anything", n);
    for (name, share) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
        let got = *counts.get(name).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (got - share).abs() <= 0.01,
            "{name}: {got} vs {share}; {counts:?}"
        );
    }
    assert!(!counts.contains_key("d"), "weight 0 never: {counts:?}");
    // A full turn is exact.
    assert_eq!(counts.get("a"), Some(&500), "{counts:?}");
}

#[test]
fn consistent_hashing_on_a_header_and_on_a_cookie() {
    let ups = upstreams(&["a", "b", "c"]);
    let targets: Vec<String> = ups.iter().map(|u| target(u.1, 100)).collect();
    let yml = config(
        &targets,
        "    algorithm: consistent-hashing\n    hash_on: header\n    hash_on_header: X-User",
        "",
    );
    let gw = Gateway::start(&yml);
    let mut seen = HashMap::new();
    for user in 0..30 {
        let u = format!("user-{user}");
        let first = name_of(&get(gw.port, "/anything", &[("X-User", &u)]));
        for _ in 0..3 {
            let again = name_of(&get(gw.port, "/anything", &[("X-User", &u)]));
            assert_eq!(first, again, "{u} moved");
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert!(seen.len() >= 2, "values spread over targets: {seen:?}");

    let yml = config(
        &targets,
        "    algorithm: consistent-hashing\n    hash_on: cookie\n    hash_on_cookie: sticky\n    hash_on_cookie_path: /app",
        "",
    );
    assert!(gw.reload_and_wait(&yml));
    let r = get(gw.port, "/anything", &[]);
    assert_eq!(r.status, 200);
    let set = r
        .header("set-cookie")
        .expect("Set-Cookie for a new client")
        .to_string();
    assert!(
        set.starts_with("sticky=") && set.contains("; Path=/app;"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let first = name_of(&r);
    for _ in 0..5 {
        let r = get(gw.port, "/anything", &[("Cookie", &cookie)]);
        assert_eq!(name_of(&r), first);
        assert!(r.header("set-cookie").is_none());
    }
}

#[test]
fn least_connections_latency_and_host_header() {
    let ups = upstreams(&["a", "b"]);
    let targets = [target(ups[0].1, 100), target(ups[1].1, 100)];
    for algo in ["least-connections", "latency"] {
        let yml = config(&targets, &format!("    algorithm: {algo}"), "");
        let gw = Gateway::start(&yml);
        let counts = tally(gw.port, "/anything", 40);
        assert_eq!(counts.values().sum::<usize>(), 40, "{algo}: {counts:?}");
        assert!(
            !counts.keys().any(|k| k.starts_with("status")),
            "{algo}: {counts:?}"
        );
        if algo == "least-connections" {
            assert!(counts.len() == 2, "{algo}: {counts:?}");
        }
    }
    let yml = config(&targets[..1], "    host_header: backend.internal", "");
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/headers", &[]);
    assert_eq!(
        r.json()["headers"]["Host"],
        format!("backend.internal:{}", ups[0].1)
    );
}

#[test]
fn dns_names_resolve_and_failures_answer_503_quickly() {
    let (_a, port) = start_httpbin("a");
    let yml = format!(
        r#"_format_version: "3.0"
services:
  - name: named
    url: http://localhost:{port}
    routes: [{{hosts: [named.test]}}]
  - name: missing
    url: http://nonexistent.invalid:{port}
    routes: [{{hosts: [missing.test]}}]
  - name: missing-target
    host: up.test
    routes: [{{hosts: [missing-target.test]}}]
upstreams:
  - name: up.test
    targets: [{{target: "nonexistent.invalid:80"}}]
"#
    );
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/anything", &[("Host", "named.test")]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    // "Quickly": answered at all (`get` gives up after 10 s), with the DNS
    // failure's status and message, not a proxy timeout's. How long a dead
    // resolver may take is unit-tested with paused time (balancer::dns).
    for (host, msg) in [
        ("missing.test", MSG_NAME_RESOLUTION),
        ("missing-target.test", MSG_NO_PEER),
    ] {
        let r = get(gw.port, "/anything", &[("Host", host)]);
        assert_eq!(r.status, 503, "{host}: {}", r.body_str());
        assert!(r.body_str().contains(msg), "{host}: {}", r.body_str());
    }
}

/// One target behind a fault proxy, no retries, short timeouts.
fn faulty_single() -> (Proc, FaultProxy, Gateway) {
    let (hb, port) = start_httpbin("a");
    let fault = FaultProxy::start(port);
    let yml = config(
        &[target(fault.port, 100)],
        "",
        "    retries: 0\n    connect_timeout: 300\n    read_timeout: 400\n    write_timeout: 400",
    );
    let gw = Gateway::start(&yml);
    (hb, fault, gw)
}

#[test]
fn upstream_faults_give_kongs_statuses() {
    let (_hb, mut fault, gw) = faulty_single();
    assert_eq!(get(gw.port, "/anything", &[]).status, 200);

    // The upstream's answer is held back 30 s: a 504 before it (and `get`
    // gives up after 10 s) can only come from the 400 ms read_timeout.
    fault.set(Mode::Slow(Duration::from_secs(30)));
    let r = get(gw.port, "/anything", &[]);
    assert_eq!(r.status, 504, "slow: {}", r.body_str());
    assert!(r.body_str().contains("The upstream server is timing out"));

    fault.set(Mode::ResetAfter(5));
    let r = get(gw.port, "/anything", &[]);
    assert_eq!(r.status, 502, "reset: {}", r.body_str());
    assert!(r
        .body_str()
        .contains("An invalid response was received from the upstream server"));

    fault.set(Mode::Kill);
    assert_eq!(get(gw.port, "/anything", &[]).status, 502, "refused");

    // A black hole never answers: a 504 (within `get`'s 10 s) is the
    // connect_timeout firing.
    fault.set(Mode::BlackHole);
    let r = get(gw.port, "/anything", &[]);
    assert_eq!(r.status, 504, "black hole: {}", r.body_str());

    fault.set(Mode::Pass);
    assert_eq!(get(gw.port, "/anything", &[]).status, 200, "back");
}

#[test]
fn retries_move_to_the_next_target_but_never_resend_a_sent_post() {
    let ups = upstreams(&["a", "b"]);
    let mut fa = FaultProxy::start(ups[0].1);
    let yml = config(
        &[target(fa.port, 100), target(ups[1].1, 100)],
        "",
        "    retries: 2\n    read_timeout: 500",
    );
    let gw = Gateway::start(&yml);
    for mode in [
        Mode::Kill,
        Mode::ResetAfter(0),
        Mode::Slow(Duration::from_secs(2)),
    ] {
        fa.set(mode);
        let counts = tally(gw.port, "/anything", 6);
        assert_eq!(counts.get("b"), Some(&6), "{mode:?}: {counts:?}");
    }
    // A POST whose request went out is not sent again: half of them hit
    // the resetting target and fail.
    fa.set(Mode::ResetAfter(0));
    let mut failed = 0;
    for _ in 0..6 {
        let r = request(gw.port, "POST", "/anything", &[], b"payload");
        if r.status != 200 {
            assert_eq!(r.status, 502);
            failed += 1;
        }
    }
    assert_eq!(
        failed, 3,
        "round-robin sends every other POST to the bad target"
    );
}

#[test]
fn all_targets_unhealthy_answer_503() {
    let (_hb, port) = start_httpbin("a");
    let mut fault = FaultProxy::start(port);
    let yml = config(
        &[target(fault.port, 100)],
        "    healthchecks: {passive: {unhealthy: {tcp_failures: 1}}}",
        "    retries: 0",
    );
    let gw = Gateway::start(&yml);
    assert_eq!(get(gw.port, "/anything", &[]).status, 200);
    fault.set(Mode::Kill);
    assert_eq!(get(gw.port, "/anything", &[]).status, 502);
    let r = get(gw.port, "/anything", &[("Accept", "application/json")]);
    assert_eq!(r.status, 503);
    assert!(r.body_str().contains(MSG_NO_PEER), "{}", r.body_str());
}

#[test]
fn passive_checks_mark_a_target_down_and_a_reload_keeps_it_down() {
    let ups = upstreams(&["a", "b", "c"]);
    let mut fa = FaultProxy::start(ups[0].1);
    let hc = "    healthchecks: {passive: {unhealthy: {tcp_failures: 2}}}";
    let targets = [target(fa.port, 100), target(ups[1].1, 100)];
    let gw = Gateway::start(&config(&targets, hc, "    retries: 3"));
    let before = tally(gw.port, "/anything", 10);
    assert_eq!(before.get("a"), Some(&5), "{before:?}");
    fa.set(Mode::Kill);
    let during = tally(gw.port, "/anything", 10);
    assert_eq!(during.get("b"), Some(&10), "retries land on b: {during:?}");
    // Back up, but passive checks alone never bring a target back.
    fa.set(Mode::Pass);
    let accepted = fa.accepted();
    let after = tally(gw.port, "/anything", 10);
    assert_eq!(after.get("b"), Some(&10), "{after:?}");
    assert_eq!(fa.accepted(), accepted, "a took no traffic");
    // A config change that keeps target a keeps its health.
    let mut more = targets.to_vec();
    more.push(target(ups[2].1, 100));
    assert!(gw.reload_and_wait(&config(&more, hc, "    retries: 3")));
    let reloaded = tally(gw.port, "/anything", 20);
    assert!(!reloaded.contains_key("a"), "{reloaded:?}");
    assert_eq!(reloaded.get("c"), Some(&10), "{reloaded:?}");
}

#[test]
fn active_checks_mark_a_target_down_and_back_up() {
    let ups = upstreams(&["a", "b"]);
    let mut fa = FaultProxy::start(ups[0].1);
    let hc = r#"    healthchecks:
      active:
        http_path: /status/200
        timeout: 0.5
        healthy: {interval: 0.1, successes: 1}
        unhealthy: {interval: 0.1, tcp_failures: 1, http_failures: 1, timeouts: 1}"#;
    let gw = Gateway::start(&config(
        &[target(fa.port, 100), target(ups[1].1, 100)],
        hc,
        "    retries: 0",
    ));
    let counts = tally(gw.port, "/anything", 10);
    assert_eq!(counts.get("a"), Some(&5), "{counts:?}");
    fa.set(Mode::Kill);
    thread::sleep(Duration::from_millis(600));
    // With no retries, any request sent to a would fail.
    let down = tally(gw.port, "/anything", 10);
    assert_eq!(down.get("b"), Some(&10), "{down:?}");
    fa.set(Mode::Pass);
    thread::sleep(Duration::from_millis(600));
    let up = tally(gw.port, "/anything", 10);
    assert_eq!(up.get("a"), Some(&5), "{up:?}");
}

/// Clients keep sending through a two-target upstream while one target is
/// killed: only requests in flight to it may fail, and retries land on the
/// other. The failed count is printed for the record.
#[test]
fn kill_a_target_under_load() {
    let ups = upstreams(&["a", "b"]);
    let mut fa = FaultProxy::start(ups[0].1);
    let hc = "    healthchecks: {passive: {unhealthy: {tcp_failures: 3, timeouts: 3}}}";
    let gw = Gateway::start(&config(
        &[target(fa.port, 100), target(ups[1].1, 100)],
        hc,
        "    retries: 5",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let served_by_a = Arc::new(AtomicUsize::new(0));
    let port = gw.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, total, failed, served_by_a) = (
                stop.clone(),
                total.clone(),
                failed.clone(),
                served_by_a.clone(),
            );
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    total.fetch_add(1, Ordering::SeqCst);
                    match try_request(port, "GET", "/anything", &[], b"") {
                        Ok(r) if r.status == 200 => {
                            if r.header("x-upstream-name") == Some("a") {
                                served_by_a.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(r) => {
                            eprintln!("failed request: {} {}", r.status, r.body_str());
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("failed request: {e}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let a_before = served_by_a.load(Ordering::SeqCst);
    fa.set(Mode::Kill);
    thread::sleep(Duration::from_millis(2000));
    let a_after_kill = served_by_a.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let total = total.load(Ordering::SeqCst);
    let failed = failed.load(Ordering::SeqCst);
    println!("kill-a-target-under-load: {failed} failed of {total} requests");
    assert!(a_before > 0, "a served before the kill");
    assert!(
        a_after_kill <= a_before + 4,
        "a served nothing after the kill beyond in-flight requests"
    );
    // Only the requests in flight to a at the kill may fail (4 clients).
    assert!(failed <= 4, "{failed} of {total} failed");
}
