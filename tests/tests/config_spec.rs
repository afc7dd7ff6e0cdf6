//! Startup configuration, the declarative file, SIGHUP reloads and the
//! status API (`kong/api/routes/health.lua`, `kong/status/ready.lua`).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gw_tests::gateway::{fill_ports, Gateway, Recorder, TempDir};
use gw_tests::{get, request, Conn};

fn one_route(up: u16, path: &str) -> String {
    fill_ports(
        &format!(
            "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://{{UP0}}\n  routes:\n  - name: r\n    paths: [{path}]\n    strip_path: false\n"
        ),
        &[up],
    )
}

// ---------------------------------------------------------------------------
// Startup failures.

/// The harness appends `[exit status: Some(ExitStatus(unix_wait_status(N)))]`
/// to a failed start's output: N must be non-zero (a clean exit is not a
/// refusal).
fn assert_non_zero_exit(out: &str) {
    let tail = out.rsplit("[exit status: ").next().unwrap_or("");
    assert!(tail.starts_with("Some("), "process did not exit:\n{out}");
    assert!(!tail.contains("unix_wait_status(0)"), "exit code 0:\n{out}");
}

#[test]
fn invalid_kong_yml_exits_non_zero_naming_entity_field_and_reason() {
    let err = match Gateway::try_start(
        r#"_format_version: "3.0"
services:
- name: svc
  url: http://127.0.0.1:9
  routes:
  - name: bad-route
    paths: [no-leading-slash]
"#,
    ) {
        Ok(_) => panic!("gateway started with an invalid route path"),
        Err(out) => out,
    };
    assert_non_zero_exit(&err);
    assert!(err.contains("routes"), "entity missing:\n{err}");
    assert!(err.contains("bad-route"), "entity name missing:\n{err}");
    assert!(err.contains("paths"), "field missing:\n{err}");
    assert!(
        err.contains("should start with: / (fixed path) or ~/ (regex path)"),
        "reason missing:\n{err}"
    );
}

#[test]
fn invalid_service_field_names_entity_field_and_reason() {
    let err = Gateway::try_start(
        r#"_format_version: "3.0"
services:
- name: svc
  host: 127.0.0.1
  port: 99999
"#,
    )
    .err()
    .expect("gateway started with port 99999");
    assert_non_zero_exit(&err);
    assert!(
        err.contains("services") && err.contains("svc") && err.contains("port"),
        "{err}"
    );
    assert!(
        err.contains("65535"),
        "reason should name the range:\n{err}"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let err = Gateway::try_start(
        r#"_format_version: "3.0"
services:
- name: a
  url: http://127.0.0.1:9
  routes:
  - name: r1
    paths: [bad1]
  - name: r2
    paths: [bad2]
"#,
    )
    .err()
    .expect("gateway started");
    assert!(err.contains("r1") && err.contains("r2"), "{err}");
}

#[test]
fn unknown_plugin_is_refused_with_kongs_message() {
    let err = Gateway::try_start(
        r#"_format_version: "3.0"
plugins:
- name: foo
"#,
    )
    .err()
    .expect("gateway started with an unknown plugin");
    assert_non_zero_exit(&err);
    assert!(
        err.contains("plugin 'foo' not enabled; add it to the 'plugins' configuration property"),
        "{err}"
    );
}

#[test]
fn missing_format_version_is_refused() {
    let err = Gateway::try_start("services: []\n").err().expect("started");
    assert!(err.contains("_format_version"), "{err}");
}

#[test]
fn unparsable_yaml_is_refused() {
    let err = Gateway::try_start("_format_version: \"3.0\"\nservices: [\n")
        .err()
        .expect("started");
    assert!(!err.is_empty());
}

#[test]
fn bad_proxy_listen_exits_non_zero_naming_the_key() {
    let err = Gateway::try_start_with(
        "_format_version: \"3.0\"\n",
        &[("KONG_PROXY_LISTEN", "not-an-address:abc")],
    )
    .err()
    .expect("gateway started with a bad proxy_listen");
    assert_non_zero_exit(&err);
    assert!(err.contains("proxy_listen"), "{err}");
}

#[test]
fn unknown_kong_variables_are_ignored() {
    let up = Recorder::start();
    let gw = Gateway::start_with(
        &one_route(up.port, "/"),
        &[("KONG_FOO_BAR", "whatever"), ("KONG_NOT_A_SETTING", "1")],
    );
    assert_eq!(get(gw.port, "/x", &[]).status, 200);
}

/// `gateway -c kong.conf`: the file's settings apply, and `KONG_*`
/// environment variables override them (Kong's precedence).
#[test]
fn kong_conf_file_with_environment_overriding_it() {
    let up = Recorder::start();
    let dir = TempDir::new("conf");
    let conf = dir.path().join("kong.conf");
    std::fs::write(
        &conf,
        "# test conf\nheaders = off\nerror_default_type = text/html\n",
    )
    .unwrap();
    let gw = Gateway::try_start_args(
        &one_route(up.port, "/"),
        &[("KONG_ERROR_DEFAULT_TYPE", "application/json")],
        &["-c", conf.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // From the file: headers = off.
    let r = get(gw.port, "/x", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("via").is_none() && r.header("x-kong-proxy-latency").is_none(),
        "{:?}",
        r.headers
    );
    // From the environment (overrides the file's text/html).
    let r = request(gw.port, "TRACE", "/", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{}",
        r.body_str()
    );
}

#[test]
fn missing_conf_file_exits_non_zero() {
    let err = Gateway::try_start_args(
        "_format_version: \"3.0\"\n",
        &[],
        &["-c", "/nonexistent/kong.conf"],
    )
    .err()
    .expect("started without its conf file");
    assert_non_zero_exit(&err);
    assert!(err.contains("/nonexistent/kong.conf"), "{err}");
}

// ---------------------------------------------------------------------------
// SIGHUP reloads.

#[test]
fn sighup_with_a_valid_file_swaps_routes_and_changes_the_hash() {
    let up = Recorder::start();
    let gw = Gateway::start(&one_route(up.port, "/old"));
    assert_eq!(get(gw.port, "/old", &[]).status, 200);
    assert_eq!(get(gw.port, "/new", &[]).status, 404);
    let before = gw.config_hash();
    assert_eq!(before.len(), 32, "{before}");
    assert!(
        gw.reload_and_wait(&one_route(up.port, "/new")),
        "{}",
        gw.output()
    );
    let after = gw.config_hash();
    assert_ne!(before, after);
    assert_eq!(get(gw.port, "/new", &[]).status, 200);
    let r = get(gw.port, "/old", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "no Route matched with those values");
}

#[test]
fn sighup_with_an_invalid_file_keeps_the_old_config_serving() {
    let up = Recorder::start();
    let gw = Gateway::start(&one_route(up.port, "/old"));
    let before = gw.config_hash();
    gw.reload("_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - paths: [broken]\n");
    assert!(
        gw.proc
            .wait_for_line("reload failed", Duration::from_secs(10)),
        "no reload failure logged:\n{}",
        gw.output()
    );
    assert_eq!(gw.config_hash(), before);
    assert_eq!(get(gw.port, "/old", &[]).status, 200);
    assert_eq!(gw.status_get("/status/ready").status, 200);
    // A later valid reload still works.
    assert!(gw.reload_and_wait(&one_route(up.port, "/again")));
    assert_eq!(get(gw.port, "/again", &[]).status, 200);
}

/// A reload that empties the config makes `/status/ready` 503 again.
#[test]
fn reload_to_an_empty_config_turns_ready_off() {
    let up = Recorder::start();
    let gw = Gateway::start(&one_route(up.port, "/"));
    assert_eq!(gw.status_get("/status/ready").status, 200);
    assert!(gw.reload_and_wait("_format_version: \"3.0\"\n"));
    let r = gw.status_get("/status/ready");
    assert_eq!(r.status, 503);
    assert_eq!(get(gw.port, "/", &[]).status, 404);
}

// ---------------------------------------------------------------------------
// Status API.

/// `/status` counts connections as nginx's stub_status does: with idle
/// connections (never sent a byte), a connection in the middle of a head,
/// and one waiting for a slow upstream, each shows in its state; accepted
/// and handled count connections, not requests.
#[test]
fn status_counts_real_idle_reading_and_busy_connections() {
    let (_up, up_port) = gw_tests::start_httpbin("up");
    let gw = Gateway::start(&one_route(up_port, "/"));
    let server = |gw: &Gateway| gw.status()["server"].clone();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    // The harness's startup probe of the port may still be closing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut base = server(&gw);
    while std::time::Instant::now() < deadline && n(&base, "connections_active") > 0 {
        std::thread::sleep(Duration::from_millis(20));
        base = server(&gw);
    }
    assert_eq!(n(&base, "connections_active"), 0, "{base}");

    // 20 idle connections.
    let idle: Vec<Conn> = (0..20).map(|_| Conn::open(gw.port)).collect();
    // One in the middle of a head.
    let mut half = Conn::open(gw.port);
    half.send(
        b"GET /get HTTP/1.1
Host: x
",
    )
    .unwrap();
    // One waiting for its answer (the upstream delays 2 s).
    let mut busy = Conn::open(gw.port);
    busy.send(
        b"GET /delay/2 HTTP/1.1
Host: x

",
    )
    .unwrap();

    // Wait (bounded) until the gateway has seen all 22.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut s = server(&gw);
    while std::time::Instant::now() < deadline
        && (n(&s, "connections_active") != 22
            || n(&s, "connections_writing") < 1
            || n(&s, "connections_reading") < 1)
    {
        std::thread::sleep(Duration::from_millis(50));
        s = server(&gw);
    }
    assert_eq!(n(&s, "connections_active"), 22, "{s}");
    assert_eq!(n(&s, "connections_reading"), 1, "{s}");
    assert_eq!(n(&s, "connections_writing"), 1, "{s}");
    assert_eq!(n(&s, "connections_waiting"), 20, "{s}");
    // At least these 22: the harness's startup probe of the port (connect,
    // then close) may be accepted only now.
    let accepted = n(&s, "connections_accepted") - n(&base, "connections_accepted");
    assert!((22..=23).contains(&accepted), "{accepted}: {s}");
    assert_eq!(
        n(&s, "connections_handled"),
        n(&s, "connections_accepted"),
        "{s}"
    );

    // The busy one is answered and stays open: it is waiting now; closing
    // the rest brings active down again.
    assert_eq!(
        busy.read_response(Duration::from_secs(10))
            .expect("answer")
            .status,
        200
    );
    half.send(
        b"
",
    )
    .unwrap();
    assert_eq!(
        half.read_response(Duration::from_secs(10))
            .expect("answer")
            .status,
        200
    );
    // The gateway finishes a request (logging) just after the answer is out.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut s = server(&gw);
    while std::time::Instant::now() < deadline && n(&s, "connections_waiting") < 22 {
        std::thread::sleep(Duration::from_millis(20));
        s = server(&gw);
    }
    assert_eq!(
        (
            n(&s, "connections_reading"),
            n(&s, "connections_writing"),
            n(&s, "connections_waiting")
        ),
        (0, 0, 22),
        "{s}"
    );
    // The Prometheus families read the same counters.
    let metrics = gw.status_get("/metrics").body_str();
    for (state, want) in [
        ("active", 22),
        ("reading", 0),
        ("writing", 0),
        ("waiting", 22),
    ] {
        let line = format!("subsystem=\"http\",state=\"{state}\"}} {want}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("kong_nginx_connections_total{") && l.ends_with(&line)),
            "{state} {want}: {metrics}"
        );
    }
    assert_eq!(
        n(&s, "total_requests"),
        n(&base, "total_requests") + 2,
        "{s}"
    );
    drop(idle);
    drop(half);
    drop(busy);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut s = server(&gw);
    while std::time::Instant::now() < deadline && n(&s, "connections_active") > 0 {
        std::thread::sleep(Duration::from_millis(50));
        s = server(&gw);
    }
    assert_eq!(n(&s, "connections_active"), 0, "{s}");
    // A refused head counts as a request too, as in nginx.
    let before = n(&s, "total_requests");
    let r = gw_tests::raw_request(
        gw.port,
        b"GET / HTTP/1.1

",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(r.starts_with(b"HTTP/1.1 400"));
    assert_eq!(n(&server(&gw), "total_requests"), before + 1);
}

/// `/status` (health.lua): configuration_hash, server counters, memory; no
/// `database` entry in DB-less mode.
#[test]
fn status_json_shape() {
    let up = Recorder::start();
    let gw = Gateway::start(&one_route(up.port, "/"));
    let s0 = gw.status();
    for _ in 0..3 {
        assert_eq!(get(gw.port, "/x", &[]).status, 200);
    }
    let s = gw.status();
    let hash = s["configuration_hash"]
        .as_str()
        .expect("configuration_hash");
    assert!(
        hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    let server = &s["server"];
    for k in [
        "total_requests",
        "connections_accepted",
        "connections_handled",
        "connections_active",
        "connections_reading",
        "connections_writing",
        "connections_waiting",
    ] {
        assert!(server[k].is_u64(), "server.{k} missing: {s}");
    }
    let t0 = s0["server"]["total_requests"].as_u64().unwrap();
    let t1 = server["total_requests"].as_u64().unwrap();
    assert!(t1 >= t0 + 3, "total_requests {t0} -> {t1}");
    // No Lua VM or shared dict here: their fields are not faked.
    assert!(s["memory"].get("workers_lua_vms").is_none(), "{s}");
    assert!(s["memory"].get("lua_shared_dicts").is_none(), "{s}");
    assert!(
        s["memory"]["process_resident_memory"]
            .as_str()
            .is_some_and(|m| m.ends_with(" MiB")),
        "{s}"
    );
    assert!(
        s.get("database").is_none(),
        "DB-less /status has no database entry: {s}"
    );
    let r = gw.status_get("/status");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
}

#[test]
fn status_ready_is_200_with_a_config() {
    let up = Recorder::start();
    let gw = Gateway::start(&one_route(up.port, "/"));
    let r = gw.status_get("/status/ready");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"message": "ready"}));
}

/// kong/status/ready.lua `is_dbless_ready`: the empty config hash gives
/// 503 "no configuration available (empty configuration present)".
#[test]
fn status_ready_is_503_with_an_empty_config() {
    let gw = Gateway::start("_format_version: \"3.0\"\n");
    let r = gw.status_get("/status/ready");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        serde_json::json!({"message": "no configuration available (empty configuration present)"})
    );
    // The proxy still answers (404: nothing to route).
    let r = get(gw.port, "/", &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn status_unknown_path_is_404() {
    let gw = Gateway::start("_format_version: \"3.0\"\n");
    assert_eq!(gw.status_get("/nope").status, 404);
}

// ---------------------------------------------------------------------------
// Reload under load.

/// A client thread sends requests continuously on keep-alive connections
/// while 5 reloads happen: every request succeeds.
#[test]
fn reloads_under_load_drop_no_request() {
    let up = Recorder::start();
    let yml = |extra: usize| {
        format!(
            "{}  - name: extra-{extra}\n    paths: [/extra-{extra}]\n",
            one_route(up.port, "/load")
        )
    };
    let gw = Gateway::start(&yml(0));
    let port = gw.port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..2 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        workers.push(thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut conn = Conn::open(port);
            let mut on_conn = 0;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match conn.request("GET", &format!("/load/{w}"), &[], b"") {
                    Some(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        on_conn += 1;
                    }
                    other => {
                        failures.lock().unwrap().push(format!(
                            "worker {w}: {:?}",
                            other.map(|r| (r.status, r.body_str()))
                        ));
                        conn = Conn::open(port);
                    }
                }
                // Keep connections long-lived but not forever.
                if on_conn >= 200 {
                    conn = Conn::open(port);
                    on_conn = 0;
                }
            }
        }));
    }
    // Requests keep succeeding across every reload: some are answered
    // before each reload and after the last (order and outcome; the 30 s
    // only guards against a hang).
    let served_since = |before: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ok.load(Ordering::SeqCst) <= before && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        ok.load(Ordering::SeqCst) > before
    };
    let mut seen = 0;
    for i in 1..=5 {
        thread::sleep(Duration::from_millis(300));
        assert!(served_since(seen), "nothing served before reload {i}");
        seen = ok.load(Ordering::SeqCst);
        assert!(
            gw.reload_and_wait(&yml(i)),
            "reload {i} not applied:\n{}",
            gw.output()
        );
    }
    assert!(served_since(seen), "nothing served after the last reload");
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(get(gw.port, "/extra-5", &[]).status, 200);
}
