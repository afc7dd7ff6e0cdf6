//! Port of Kong's `spec/03-plugins/11-correlation-id/` (DB-less):
//! `01-access_spec.lua` and the first case of `02-schema_spec.lua` (through
//! the declarative loader), each Kong `it(...)` a named case. The upstream
//! records what it received (Kong's mock upstream echoes `json.headers`).
//! Skipped: the gRPC case (no gRPC client here), "echo_downstream sends uuid
//! back to client even there is a runtime error" (needs Kong's
//! `error-generator-last` test plugin), and the schema spec's
//! "auto-complete generator if it is `null` in database" cases (they write
//! a null into Kong's Postgres database and read it back through the Admin
//! API; a DB-less file with `generator: null` is refused, as Kong's
//! declarative loader refuses it).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder, TempDir};
use gw_tests::{request, Conn, Response};

const CONFIG: &str = r#"_format_version: "3.0"
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [correlation1.test]
    plugins: [{name: correlation-id}]
  - hosts: [correlation2.test]
    plugins: [{name: correlation-id, config: {header_name: Foo-Bar-Id}}]
  - hosts: [correlation3.test]
    plugins: [{name: correlation-id, config: {generator: uuid, echo_downstream: true}}]
  - hosts: [correlation-tracker.test]
    plugins: [{name: correlation-id, config: {generator: tracker}}]
  - hosts: [correlation5.test]
    plugins:
    - {name: correlation-id, config: {generator: uuid, echo_downstream: true}}
    - {name: request-termination, config: {status_code: 418, message: "I'm a teapot"}}
  - hosts: [correlation-serializer.test]
    plugins:
    - {name: file-log, config: {path: "{LOG}", reopen: true}}
    - {name: correlation-id}
  - hosts: [correlation-counter-echo.test]
    plugins: [{name: correlation-id, config: {echo_downstream: true}}]
- name: timeout
  url: http://127.0.0.2:26865
  routes:
  - hosts: [correlation-timeout.test]
    plugins: [{name: correlation-id, config: {generator: uuid, echo_downstream: true}}]
"#;

/// Kong's `UUID_PATTERN`: 8-4-4-4-12 lower-case hex digits.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// `UUID_COUNTER_PATTERN`: `<uuid>#<n>`; returns `n`.
fn uuid_counter(s: &str) -> Option<u64> {
    let (u, n) = s.split_once('#')?;
    if !is_uuid(u) {
        return None;
    }
    n.parse().ok()
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `TRACKER_PATTERN`: `a.b.c.d-port-pid-connection-requests-secs.mmm`
/// (ten digits of seconds).
fn is_tracker(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 6 {
        return false;
    }
    let ip: Vec<&str> = parts[0].split('.').collect();
    let time: Vec<&str> = parts[5].split('.').collect();
    ip.len() == 4
        && ip.iter().all(|p| digits(p))
        && parts[1..5].iter().all(|p| digits(p))
        && time.len() == 2
        && time[0].len() == 10
        && digits(time[0])
        && time[1].len() == 3
        && digits(time[1])
}

fn get(gw: &Gateway, headers: &[(&str, &str)]) -> Response {
    request(gw.port, "GET", "/request", headers, b"")
}

#[test]
fn correlation_id_access() {
    let up = Recorder::start();
    let dir = TempDir::new("correlation-log");
    let log_path = dir.path().join("file.log");
    let yml = fill_ports(CONFIG, &[up.port]).replace("{LOG}", log_path.to_str().unwrap());
    let gw = Gateway::start(&yml);
    let upstream_id = |name: &str| up.last().header(name).map(str::to_string);
    let mut t = Cases::new();

    // describe("uuid-worker generator") -- first: the counter is per process.
    t.it("increments the counter part", || {
        let r = get(&gw, &[("Host", "correlation1.test")]);
        assert_eq!(r.status, 200);
        let id1 = upstream_id("kong-request-id").unwrap();
        assert_eq!(uuid_counter(&id1), Some(1), "{id1}");
        let r = get(&gw, &[("Host", "correlation1.test")]);
        assert_eq!(r.status, 200);
        let id2 = upstream_id("kong-request-id").unwrap();
        assert_eq!(uuid_counter(&id2), Some(2), "{id2}");
        // One worker: one uuid, the counter goes on.
        assert_eq!(id1.split('#').next(), id2.split('#').next());
        // Not in Kong's spec: shared by every instance of the plugin.
        let r = get(&gw, &[("Host", "correlation-counter-echo.test")]);
        let id3 = r.header("kong-request-id").unwrap().to_string();
        assert_eq!(id3, format!("{}#3", id1.split('#').next().unwrap()));
        assert_eq!(
            upstream_id("kong-request-id").as_deref(),
            Some(id3.as_str())
        );
    });

    // describe("uuid generator")
    t.it("generates a unique UUID for every request", || {
        get(&gw, &[("Host", "correlation3.test")]);
        let id1 = upstream_id("kong-request-id").unwrap();
        get(&gw, &[("Host", "correlation3.test")]);
        let id2 = upstream_id("kong-request-id").unwrap();
        assert!(is_uuid(&id1), "{id1}");
        assert!(is_uuid(&id2), "{id2}");
        assert_ne!(id1, id2);
    });

    // describe("tracker generator")
    t.it("generates a unique tracker id for every request", || {
        get(&gw, &[("Host", "correlation-tracker.test")]);
        let id1 = upstream_id("kong-request-id").unwrap();
        get(&gw, &[("Host", "correlation-tracker.test")]);
        let id2 = upstream_id("kong-request-id").unwrap();
        assert!(is_tracker(&id1), "{id1}");
        assert!(is_tracker(&id2), "{id2}");
        assert_ne!(id1, id2);
        // server_addr-server_port-pid-...
        let prefix = format!("127.0.0.1-{}-{}-", gw.port, gw.proc.pid());
        assert!(
            id1.starts_with(&prefix),
            "{id1} does not start with {prefix}"
        );
    });
    // Not in Kong's spec: `$connection_requests` counts on a kept-alive
    // connection, `$connection` stays.
    t.it("tracker ids on one connection share the connection", || {
        let mut c = Conn::open(gw.port);
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = c
                .request("GET", "/", &[("Host", "correlation-tracker.test")], b"")
                .unwrap();
            assert_eq!(r.status, 200);
            ids.push(upstream_id("kong-request-id").unwrap());
        }
        let parts: Vec<Vec<&str>> = ids.iter().map(|i| i.split('-').collect()).collect();
        assert_eq!(parts[0][3], parts[1][3], "{ids:?}");
        assert_eq!(parts[0][4], "1", "{ids:?}");
        assert_eq!(parts[1][4], "2", "{ids:?}");
    });

    // describe("config options")
    t.it("echo_downstream sends uuid back to client", || {
        let r = get(&gw, &[("Host", "correlation3.test")]);
        assert_eq!(r.status, 200);
        let up_id = upstream_id("kong-request-id").unwrap();
        assert!(is_uuid(&up_id), "{up_id}");
        assert_eq!(r.header("kong-request-id"), Some(up_id.as_str()));
    });
    t.it(
        "echo_downstream sends uuid back to client even when upstream timeouts",
        || {
            let r = get(&gw, &[("Host", "correlation-timeout.test")]);
            assert_eq!(r.status, 502);
            let id = r.header("kong-request-id").unwrap_or_default();
            assert!(is_uuid(id), "{id}");
        },
    );
    t.it(
        "echo_downstream does not send uuid back to client if not asked",
        || {
            let r = get(&gw, &[("Host", "correlation2.test")]);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("kong-request-id"), None);
            assert_eq!(r.header("foo-bar-id"), None);
        },
    );
    t.it("uses a custom header name", || {
        let r = get(&gw, &[("Host", "correlation2.test")]);
        assert_eq!(r.status, 200);
        let id = upstream_id("foo-bar-id").unwrap();
        assert!(uuid_counter(&id).is_some(), "{id}");
    });

    t.it("preserves an already existing header", || {
        get(
            &gw,
            &[("Host", "correlation2.test"), ("Kong-Request-ID", "foobar")],
        );
        assert_eq!(upstream_id("kong-request-id").as_deref(), Some("foobar"));
        // With the plugin's own header name, too.
        get(
            &gw,
            &[("Host", "correlation1.test"), ("Kong-Request-ID", "foobar")],
        );
        let all = up.last();
        assert_eq!(all.header_all("kong-request-id"), vec!["foobar"]);
    });
    t.it("does not preserve an already existing empty header", || {
        get(
            &gw,
            &[("Host", "correlation1.test"), ("Kong-Request-ID", "")],
        );
        let id = upstream_id("kong-request-id").unwrap();
        assert_ne!(id, "foobar");
        assert!(uuid_counter(&id).is_some(), "{id}");
    });
    t.it(
        "does not preserve an already existing header with space only",
        || {
            get(
                &gw,
                &[("Host", "correlation1.test"), ("Kong-Request-ID", " ")],
            );
            let id = upstream_id("kong-request-id").unwrap();
            assert!(uuid_counter(&id).is_some(), "{id}");
        },
    );
    t.it(
        "executes with echo_downstream when access did not execute",
        || {
            let r = get(&gw, &[("Host", "correlation5.test")]);
            assert_eq!(r.status, 418);
            let id = r.header("kong-request-id").unwrap_or_default();
            assert!(is_uuid(id), "{id}");
        },
    );
    t.it(
        "echoes incoming with echo_downstream when access did not execute",
        || {
            let r = get(
                &gw,
                &[
                    ("Host", "correlation5.test"),
                    ("kong-request-id", "my very personal id"),
                ],
            );
            assert_eq!(r.status, 418);
            assert_eq!(r.header("kong-request-id"), Some("my very personal id"));
        },
    );

    // describe("log serializer")
    t.it("contains the Correlation ID", || {
        let r = get(
            &gw,
            &[
                ("Host", "correlation-serializer.test"),
                ("Kong-Request-ID", "1234"),
            ],
        );
        assert_eq!(r.status, 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        let entry = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.trim_start().starts_with('{')) {
                break serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
            assert!(Instant::now() < deadline, "no JSON log entry written");
            std::thread::sleep(Duration::from_millis(20));
        };
        let request_id = entry["request"]["id"].as_str().unwrap_or_default();
        assert!(
            request_id.len() == 32 && request_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{entry}"
        );
        assert_eq!(entry["correlation_id"], "1234", "{entry}");
    });
    t.finish();
}

#[test]
fn correlation_id_schema_through_the_loader() {
    let yml = r#"_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - {name: r1, paths: [/r1], plugins: [{name: correlation-id, config: {generator: null, header_name: Kong-Request-ID, echo_downstream: true}}]}
  - {name: r2, paths: [/r2], plugins: [{name: correlation-id, config: {generator: sequence}}]}
"#;
    let err = match Gateway::try_start(yml) {
        Ok(_) => panic!("gateway started with invalid correlation-id configs"),
        Err(out) => out,
    };
    let mut t = Cases::new();
    t.it("requried field must be included", || {
        let needle =
            "in 'plugins' entity 'correlation-id': field 'config.generator': required field missing";
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    });
    t.it("generator is one of Kong's", || {
        let needle = "in 'plugins' entity 'correlation-id': field 'config.generator': expected one of: uuid, uuid#counter, tracker";
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    });
    t.finish();
}
