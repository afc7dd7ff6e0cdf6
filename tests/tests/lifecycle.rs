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

    let quit = std::thread::spawn(move || shim(&["quit", "--wait=2", "-p", &prefix]));

    // Readiness flips at once, while the proxy still serves during the wait.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut drained = false;
    while Instant::now() < deadline {
        let r = gw.status_get("/status/ready");
        if r.status == 503 {
            assert_eq!(r.json()["message"], "draining");
            drained = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(drained, "readiness did not turn 503");
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
