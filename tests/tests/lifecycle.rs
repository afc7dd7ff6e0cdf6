//! The `kong` command shim and draining: what Kubernetes' preStop
//! (`kong quit --wait=15`), probes and config checks run in the container.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use gw_tests::gateway::{fill, Gateway};
use gw_tests::{bin_path, get, start_httpbin};

const KONG_YML: &str = r#"
_format_version: "3.0"
services:
  - name: up
    url: http://{UPSTREAM}
    routes: [{name: r, paths: ["/"]}]
"#;

fn shim(args: &[&str]) -> std::process::Output {
    Command::new(bin_path("gateway"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn kong_quit_drains_then_stops_gracefully() {
    let (_up, up_port) = start_httpbin("up");
    let mut gw = Gateway::start(&fill(KONG_YML, up_port));
    assert_eq!(gw.status_get("/status/ready").status, 200);
    let prefix = gw.prefix.to_string_lossy().into_owned();

    let quit = std::thread::spawn(move || shim(&["quit", "--wait=4", "-p", &prefix]));

    // Readiness flips at the drain signal, before the wait ends, and the
    // proxy still serves during the wait. Asserted as an order: 503 is seen
    // while `kong quit` is still waiting (it returns only after the gateway
    // exited). The 30 s deadline only guards against a hang.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut drained = false;
    while !quit.is_finished() && Instant::now() < deadline {
        match gw_tests::try_request(gw.status_port, "GET", "/status/ready", &[], b"") {
            Ok(r) if r.status == 503 => {
                assert_eq!(r.json()["message"], "draining");
                drained = true;
                break;
            }
            Ok(r) => assert_eq!(r.status, 200, "{}", r.body_str()),
            Err(_) => break, // the gateway is already gone
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        drained,
        "readiness did not turn 503 while `kong quit` waited:\n{}",
        gw.output()
    );
    assert_eq!(
        get(gw.port, "/get", &[]).status,
        200,
        "still proxying while draining"
    );

    let out = quit.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = gw.proc.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "gateway did not exit after kong quit");
}

#[test]
fn kong_health_and_config_parse() {
    let (_up, up_port) = start_httpbin("up");
    let gw = Gateway::start(&fill(KONG_YML, up_port));
    let prefix = gw.prefix.to_string_lossy().into_owned();
    let out = shim(&["health", "-p", &prefix]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Kong is healthy"));

    let out = shim(&["config", "parse", gw.config_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = gw.prefix.join("bad.yml");
    std::fs::write(
        &bad,
        "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [nope]\n",
    )
    .unwrap();
    let out = shim(&["config", "parse", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'r'") && err.contains("paths.1"), "{err}");

    let out = shim(&["health", "-p", "/nonexistent-prefix"]);
    assert!(!out.status.success());
}

/// SIGTERM under steady load, as a load balancer sees it: readiness turns
/// 503 at once while the proxy keeps accepting for the drain delay; the
/// "load balancer" (a thread polling readiness, as the NLB / endpoints
/// controller do) stops sending new requests 300 ms after it sees 503; then
/// the listener closes. Every request sent must get its answer. Checked as
/// orders, not durations: 503 while the listener is still open, the
/// listener still open when the load balancer lets go (a 5 s drain delay
/// leaves a loaded machine ample room), closed after the exit.
#[test]
fn sigterm_under_load_loses_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let (_up, up_port) = start_httpbin("up");
    let mut gw = Gateway::start_with(&fill(KONG_YML, up_port), &[("KONG_DRAIN_DELAY", "5")]);
    let port = gw.port;
    let ok = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let deregistered = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, lost, dereg) = (ok.clone(), lost.clone(), deregistered.clone());
        clients.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !dereg.load(Ordering::SeqCst) {
                match gw_tests::try_request(port, "GET", "/delay/0.05", &[], b"") {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected status {}", r.status),
                    Err(_) => {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = ok.load(Ordering::SeqCst);
    assert!(gw.proc.signal("TERM"));
    let t0 = Instant::now();
    let mut flipped = None;
    // A hang guard, not a bound on the flip: the order is checked below.
    while t0.elapsed() < Duration::from_secs(30) {
        match gw_tests::try_request(gw.status_port, "GET", "/status/ready", &[], b"") {
            Ok(r) if r.status == 503 => {
                flipped = Some(t0.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("status listener gone before readiness flipped: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let flipped = flipped.expect("readiness did not flip");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "listener closed before readiness flipped"
    );
    std::thread::sleep(Duration::from_millis(300));
    let at_deregistration = ok.load(Ordering::SeqCst);
    deregistered.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    // The listener was still open when the load balancer let go.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "listener closed before the drain delay ended"
    );
    let status = gw.proc.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener still open after exit"
    );
    let lost = lost.load(Ordering::SeqCst);
    println!(
        "SIGTERM under load: {} answered ({} before SIGTERM, {} by deregistration), {lost} lost; readiness 503 after {:?}",
        ok.load(Ordering::SeqCst),
        before,
        at_deregistration,
        flipped
    );
    assert!(at_deregistration > before, "nothing served while draining");
    assert_eq!(lost, 0);
}

/// Worker sizing under a real cgroup v1 CPU quota of 0.5 CPU: `auto` gives
/// one thread, not one per host core (read back from the gateway's own
/// `kong_dp_worker_threads`). Only the gateway process this test starts is
/// moved into the group. Skipped everywhere when no cgroup v1 hierarchy
/// with the cpu controller (and CFS bandwidth control) exists on the host,
/// e.g. cgroup-v2-only; when one exists but cannot be written (not root, a
/// read-only mount), skipped outside CI only.
#[test]
fn auto_workers_follow_a_half_cpu_quota() {
    const TEST: &str = "auto_workers_follow_a_half_cpu_quota";
    let Some(cpu_root) = gw_tests::cgroup_v1_cpu_mount() else {
        gw_tests::skip(
            TEST,
            gw_tests::Skip::Impossible,
            "no cgroup v1 hierarchy with the cpu controller is mounted (cgroup v2 only)",
        );
        return;
    };
    if !cpu_root.join("cpu.cfs_quota_us").exists() {
        gw_tests::skip(
            TEST,
            gw_tests::Skip::Impossible,
            &format!(
                "{} has no cpu.cfs_quota_us (kernel without CFS bandwidth control)",
                cpu_root.display()
            ),
        );
        return;
    }
    let group = cpu_root.join(format!("gw-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&group) {
        gw_tests::skip(
            TEST,
            gw_tests::Skip::Missing,
            &format!("cannot create {} (needs root): {e}", group.display()),
        );
        return;
    }
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for _ in 0..50 {
                if std::fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _cleanup = Cleanup(group.clone());
    std::fs::write(group.join("cpu.cfs_period_us"), "100000").unwrap();
    std::fs::write(group.join("cpu.cfs_quota_us"), "50000").unwrap();
    let procs = group.join("cgroup.procs");
    let script = format!("echo $$ > {} && exec \"$0\" \"$@\"", procs.display());

    let (_up, up_port) = start_httpbin("up");
    let yml = fill(KONG_YML, up_port);
    for (setting, want) in [("auto", 1), ("2", 2)] {
        let mut gw = Gateway::try_start_wrapped(
            &yml,
            &[("KONG_NGINX_WORKER_PROCESSES", setting)],
            &["sh", "-c", &script],
        )
        .unwrap();
        let metrics = gw.status_get("/metrics").body_str();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("kong_dp_worker_threads"))
            .unwrap_or_else(|| panic!("no kong_dp_worker_threads in:\n{metrics}"))
            .to_string();
        assert!(line.ends_with(&format!(" {want}")), "{setting}: {line}");
        let quota = metrics
            .lines()
            .find(|l| l.starts_with("kong_dp_cgroup_cpu_limit_cores"))
            .map(str::to_string);
        assert_eq!(
            quota.as_deref(),
            Some("kong_dp_cgroup_cpu_limit_cores 0.5"),
            "{metrics}"
        );
        gw.stop();
    }
}

/// The access log is written out before the process exits: every request
/// answered before SIGTERM has its `kong_log_format` line.
#[test]
fn access_log_is_flushed_on_shutdown() {
    let (_up, up_port) = start_httpbin("up");
    let dir = std::env::temp_dir().join(format!("gw-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let mut gw = Gateway::start_with(
        &fill(KONG_YML, up_port),
        &[
            ("KONG_PROXY_ACCESS_LOG", log.to_str().unwrap()),
            ("KONG_DRAIN_DELAY", "0"),
        ],
    );
    for i in 0..20 {
        let r = get(
            gw.port,
            &format!("/get?i={i}"),
            &[("User-Agent", "flush-test")],
        );
        assert_eq!(r.status, 200);
    }
    assert!(gw.proc.signal("TERM"));
    let status = gw.proc.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"flush-test\""))
        .collect();
    assert_eq!(lines.len(), 20, "{text}");
    assert!(
        lines[0].contains("\"GET /get?i=0 HTTP/1.1\" 200 ")
            && lines[0].contains("kong_request_id: \"")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM with busy keep-alive clients that do not stop, as NLB clients
/// keep their connections through a pod's termination: during the drain
/// every response says `Connection: close`, a connection is closed only
/// between requests, and in-flight requests finish. Clients reconnect after
/// each `close` until the listener is gone (connect refused). No request
/// written to the gateway may go unanswered.
#[test]
fn sigterm_with_busy_keepalive_clients_loses_no_request() {
    use gw_tests::Conn;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let (_up, up_port) = start_httpbin("up");
    // Each client must get a turn during the drain delay (else its idle
    // connection is closed under it): 3 s leaves a loaded machine room.
    let mut gw = Gateway::start_with(&fill(KONG_YML, up_port), &[("KONG_DRAIN_DELAY", "3")]);
    let port = gw.port;
    let term_sent = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let term_at = Arc::new(Mutex::new(None::<Instant>));
    let mut clients = Vec::new();
    for id in 0..8 {
        let (term_sent, ok, closes, failures, term_at) = (
            term_sent.clone(),
            ok.clone(),
            closes.clone(),
            failures.clone(),
            term_at.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut conn: Option<Conn> = None;
            let mut reused = false;
            while Instant::now() < deadline {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::try_open(port) {
                        Ok(c) => {
                            reused = false;
                            conn.insert(c)
                        }
                        // The listener is gone: the load balancer's job now.
                        Err(_) if term_sent.load(Ordering::SeqCst) => return,
                        Err(e) => {
                            failures.lock().unwrap().push(format!("{id}: connect: {e}"));
                            return;
                        }
                    },
                };
                let sent = c.send(b"GET /delay/0.02 HTTP/1.1\r\nHost: busy.test\r\n\r\n");
                let send_failed = sent.is_err();
                let answer = if send_failed {
                    None
                } else {
                    c.read_response(Duration::from_secs(10))
                };
                match answer {
                    Some(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        let close = r
                            .header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                        if close {
                            closes.fetch_add(1, Ordering::SeqCst);
                            conn = None;
                        } else {
                            reused = true;
                        }
                    }
                    Some(r) => {
                        failures.lock().unwrap().push(format!("{id}: status {}", r.status));
                        conn = None;
                    }
                    None => {
                        failures.lock().unwrap().push(format!(
                            "{id}: request on a {} connection got no answer (send failed: {send_failed}, {:?} after SIGTERM)",
                            if reused { "kept-alive" } else { "new" },
                            term_at.lock().unwrap().map(|t| t.elapsed()),
                        ));
                        conn = None;
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(700));
    let before = ok.load(Ordering::SeqCst);
    assert_eq!(closes.load(Ordering::SeqCst), 0, "closes before SIGTERM");
    term_sent.store(true, Ordering::SeqCst);
    *term_at.lock().unwrap() = Some(Instant::now());
    assert!(gw.proc.signal("TERM"));
    for c in clients {
        c.join().unwrap();
    }
    let status = gw.proc.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    let failures = failures.lock().unwrap().clone();
    let (ok, closes) = (ok.load(Ordering::SeqCst), closes.load(Ordering::SeqCst));
    println!(
        "busy keep-alive through SIGTERM: {ok} answered ({before} before SIGTERM), {closes} with Connection: close, failures: {failures:?}"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > before, "nothing served while draining");
    // Each client got at least its drain-time answers with `close`.
    assert!(closes >= 8, "{closes} responses with Connection: close");
}

/// `kong health` asks `/status/ready`: a gateway that runs but has no
/// configuration (503) is not healthy, and the exit code says so. The
/// status listener comes from the running node's `<prefix>/.kong_env`, as
/// Kong's health command reads it (the shim runs without the gateway's
/// environment here).
#[test]
fn kong_health_fails_while_the_gateway_is_not_ready() {
    let gw = Gateway::start("_format_version: \"3.0\"\n");
    assert_eq!(gw.status_get("/status/ready").status, 503);
    let prefix = gw.prefix.to_string_lossy().into_owned();
    let out = shim(&["health", "-p", &prefix]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("nginx.......running"), "{stdout}");
    assert!(stdout.contains("status......not ready"), "{stdout}");
    assert!(
        stderr.contains("Kong is not ready at") && stderr.contains("503"),
        "{stderr}"
    );

    // The same gateway once it has a configuration: healthy.
    let (_up, up_port) = start_httpbin("up");
    assert!(gw.reload_and_wait(&fill(KONG_YML, up_port)));
    assert_eq!(gw.status_get("/status/ready").status, 200);
    let out = shim(&["health", "-p", &prefix]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("status......ready") && stdout.contains("Kong is healthy"));
}

/// Wake-ups summed over the process's threads (voluntary context switches).
fn wakeups(pid: u32) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut names = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        names.push(comm.trim().to_string());
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    (total, names)
}

/// A gateway with nothing to do sleeps: no thread wakes on a clock. Pingora's
/// fast-timeout thread woke every 10 ms at any load (100 wake-ups a second,
/// which a 0.2-CPU pod pays for); the gateway puts its timeouts on tokio's
/// timer wheel instead, which wakes only when a timeout is due. Counted over a
/// kept-alive client waiting between requests, so the keep-alive and read
/// timeouts are armed.
#[test]
fn an_idle_gateway_does_not_wake_on_a_clock() {
    let (_up, up_port) = start_httpbin("up");
    let gw = Gateway::start(&fill(KONG_YML, up_port));
    let mut conn = gw_tests::Conn::open(gw.port);
    for _ in 0..3 {
        let r = conn.request("GET", "/get", &[], b"").unwrap();
        assert_eq!(r.status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = gw.proc.pid();
    let (before, names) = wakeups(pid);
    std::thread::sleep(Duration::from_secs(2));
    let (after, _) = wakeups(pid);
    assert!(
        !names.iter().any(|n| n == "Timer thread"),
        "Pingora's fast-timeout thread runs: {names:?}"
    );
    // Pingora's main loop runs on the main thread (a patched pingora-core),
    // not on a runtime worker of its own.
    assert!(
        !names.iter().any(|n| n == "Server"),
        "Pingora's main loop has a thread of its own: {names:?}"
    );
    // 2 s of a 10 ms clock would be about 200.
    assert!(
        after - before < 40,
        "{} wake-ups in 2 s of idling (threads {names:?})",
        after - before
    );
    // The kept-alive connection still serves.
    assert_eq!(conn.request("GET", "/get", &[], b"").unwrap().status, 200);
}
