//! The gateway in front of the real (PyPI) httpbin served by gunicorn.
//! Runs when `GW_HTTPBIN_GUNICORN` names a gunicorn executable from a
//! virtualenv that has `httpbin` installed (scripts/test sets it up).
//! Without it the test is skipped (`gw_tests::skip`), which under CI=true
//! is a failure: PyPI's httpbin can always be installed there.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use gw_tests::gateway::{fill_ports, Gateway};
use gw_tests::{free_port, get, request, skip, wait_for_port, Proc, Skip};

fn start_gunicorn() -> Option<(Proc, u16)> {
    let Some(gunicorn) = std::env::var_os("GW_HTTPBIN_GUNICORN") else {
        skip(
            "real_httpbin_through_the_gateway",
            Skip::Missing,
            "GW_HTTPBIN_GUNICORN not set (scripts/test installs httpbin and gunicorn from PyPI)",
        );
        return None;
    };
    let port = free_port();
    let mut cmd = Command::new(gunicorn);
    cmd.args(["-b", &format!("127.0.0.1:{port}"), "-w", "1", "httpbin:app"]);
    let mut p = Proc::spawn(cmd);
    if !wait_for_port(port, Duration::from_secs(20)) {
        let out = p.output();
        p.kill();
        panic!("gunicorn httpbin did not start on {port}:\n{out}");
    }
    Some((p, port))
}

#[test]
fn real_httpbin_through_the_gateway() {
    let Some((mut gunicorn, port)) = start_gunicorn() else {
        return;
    };
    let gw = Gateway::start(&fill_ports(
        r#"_format_version: "3.0"
services:
- name: httpbin
  url: http://{UP0}
  routes:
  - paths: [/]
    strip_path: false
"#,
        &[port],
    ));

    // GET /get: args, headers (as the upstream saw them), origin, url.
    let r = get(
        gw.port,
        "/get?a=1&a=2",
        &[("Host", "example.test"), ("X-Test", "yes")],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let j = r.json();
    assert_eq!(j["args"]["a"], serde_json::json!(["1", "2"]));
    assert_eq!(j["headers"]["X-Test"], "yes");
    assert_eq!(j["headers"]["Host"], format!("127.0.0.1:{port}"));
    assert!(j["headers"]["X-Kong-Request-Id"].is_string(), "{j}");
    assert!(j["origin"].as_str().unwrap().contains("127.0.0.1"), "{j}");
    assert!(j["url"].as_str().unwrap().ends_with("/get?a=1&a=2"), "{j}");
    assert_eq!(r.header("via"), Some("1.1 kong/3.10.0"));
    assert!(
        r.header("server").is_some_and(|s| s.contains("gunicorn")),
        "{:?}",
        r.headers
    );

    // POST /anything/x?y=1 with a JSON body.
    let body = br#"{"hello":"world","n":[1,2]}"#;
    let r = request(
        gw.port,
        "POST",
        "/anything/x?y=1",
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let j = r.json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["args"]["y"], "1");
    assert_eq!(
        j["json"],
        serde_json::json!({"hello": "world", "n": [1, 2]})
    );
    assert_eq!(j["data"], String::from_utf8_lossy(body).as_ref());
    assert!(
        j["url"].as_str().unwrap().ends_with("/anything/x?y=1"),
        "{j}"
    );

    // GET /status/418: the teapot passes through untouched.
    let r = get(gw.port, "/status/418", &[]);
    assert_eq!(r.status, 418);
    assert!(r.body_str().contains("teapot"), "{}", r.body_str());
    assert!(r.header("x-kong-upstream-latency").is_some());

    // GET /headers: forwarded headers as httpbin saw them (`show_env`
    // stops httpbin from hiding X-Forwarded-*, X-Real-Ip and Via).
    let r = get(
        gw.port,
        "/headers?show_env=1",
        &[("X-Forwarded-For", "10.0.0.1")],
    );
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["X-Forwarded-For"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["X-Forwarded-Proto"], "http");
    assert_eq!(h["X-Forwarded-Host"], "localhost");
    assert_eq!(h["X-Forwarded-Port"], gw.port.to_string());
    assert_eq!(h["X-Real-Ip"], "127.0.0.1");
    assert_eq!(h["Via"], "1.1 kong/3.10.0");

    drop(gw);
    gunicorn.stop();
}
