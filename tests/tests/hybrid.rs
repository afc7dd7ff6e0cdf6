//! Hybrid mode: the gateway as a Kong data plane against the in-tree test
//! control plane (`gw_tests::cp`), over real mTLS WebSockets.
//!
//! Timers: the DP runs with `KONG_TEST_CLUSTER_RECONNECT_MS` (and, where a
//! test needs it, short ping timers) so reconnects take milliseconds instead
//! of Kong's 5-10 s; the protocol timers themselves are unit-tested with
//! paused time in `config-sync`.

use gw_tests::wait_until;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gw_tests::cp::{self, Certs, ControlPlane, CpOptions};
use gw_tests::gateway::{Gateway, Recorder, TempDir};
use gw_tests::try_request;
use serde_json::json;

const MIN_YML: &str = "_format_version: '3.0'\n";
const WAIT: Duration = Duration::from_secs(15);

fn dp_env(certs: &Certs, cp_port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = certs.dp_env(cp_port);
    env.push(("KONG_TEST_CLUSTER_RECONNECT_MS".into(), "300".into()));
    env.push(("KONG_LOG_LEVEL".into(), "info".into()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn try_start_dp(env: &[(String, String)]) -> Result<Gateway, String> {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::try_start_with(MIN_YML, &refs)
}

fn start_dp(env: &[(String, String)]) -> Gateway {
    try_start_dp(env).unwrap_or_else(|out| panic!("data plane did not start:\n{out}"))
}

fn ready(g: &Gateway) -> u16 {
    g.status_get("/status/ready").status
}

/// `uri` the recorder saw for `GET /a` (the service path tells the config
/// version), or the status when not 200.
fn get_a(g: &Gateway) -> Result<String, String> {
    match try_request(g.port, "GET", "/a", &[], b"") {
        Ok(r) if r.status == 200 => Ok(r.json()["uri"].as_str().unwrap_or("").to_string()),
        Ok(r) => Err(format!("status {}: {}", r.status, r.body_str())),
        Err(e) => Err(e.to_string()),
    }
}

/// Peak RSS of a process in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the whole handshake/apply/ping path and checks what the CP saw.
fn end_to_end(certs: &Certs) {
    let rec = Recorder::start();
    let cp = ControlPlane::start(certs);
    let hash1 = cp.set_config(&cp::kong_export(rec.port, "/v1", 3));
    let g = start_dp(&dp_env(
        certs,
        cp.port,
        &[("KONG_CLUSTER_DP_LABELS", "region:eu,env:test")],
    ));

    assert!(
        cp.wait_ping(&hash1, WAIT),
        "no ping with {hash1}; pings {:?}\n{}",
        cp.seen().pings,
        g.output()
    );
    assert!(wait_until(WAIT, || ready(&g) == 200), "{}", g.output());
    assert_eq!(get_a(&g).as_deref(), Ok("/v1"));
    assert_eq!(g.config_hash(), hash1);

    let seen = cp.seen();
    assert_eq!(seen.sessions, 1, "one connection per node");
    assert!(seen.invalid_frames.is_empty(), "{:?}", seen.invalid_frames);
    // The first ping comes right after basic_info, before any config.
    assert_eq!(seen.pings[0], "00000000000000000000000000000000");

    let info = &seen.basic_infos[0];
    assert_eq!(info["type"], "basic_info");
    assert_eq!(
        info["plugins"],
        json!([
            {"name": "acl", "version": "3.10.0"},
            {"name": "basic-auth", "version": "3.10.0"},
            {"name": "correlation-id", "version": "3.10.0"},
            {"name": "cors", "version": "3.10.0"},
            {"name": "file-log", "version": "3.10.0"},
            {"name": "http-log", "version": "3.10.0"},
            {"name": "ip-restriction", "version": "3.10.0"},
            {"name": "jwt", "version": "3.10.0"},
            {"name": "key-auth", "version": "3.10.0"},
            {"name": "prometheus", "version": "3.10.0"},
            {"name": "proxy-cache", "version": "3.10.0"},
            {"name": "rate-limiting", "version": "3.10.0"},
            {"name": "request-size-limiting", "version": "3.10.0"},
            {"name": "request-termination", "version": "3.10.0"},
            {"name": "request-transformer", "version": "3.10.0"},
            {"name": "response-ratelimiting", "version": "3.10.0"},
            {"name": "response-transformer", "version": "3.10.0"},
            {"name": "tcp-log", "version": "3.10.0"},
            {"name": "udp-log", "version": "3.10.0"},
        ]),
        "exactly the implemented plugins"
    );
    assert_eq!(info["filters"], json!({}));
    assert_eq!(info["labels"], json!({"region": "eu", "env": "test"}));
    assert_eq!(info["process_conf"]["role"], "data_plane");
    assert_eq!(info["process_conf"]["cluster_cert_key"], "******");

    let node_id = std::fs::read_to_string(g.prefix.join("kong.id")).expect("kong.id");
    let q = &seen.queries[0];
    assert!(
        q.starts_with(&format!("node_id={node_id}&node_hostname=")),
        "{q}"
    );
    assert!(q.ends_with("&node_version=3.10.0"), "{q}");
    let headers = &seen.upgrade_headers[0];
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-extensions")),
        "no extensions: {headers:?}"
    );
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    assert_eq!(host, Some(format!("127.0.0.1:{}", cp.port)));
    assert!(g.prefix.join("cluster-config.json.gz").exists());

    // Second push: applied, pinged, served.
    let hash2 = cp.set_config(&cp::kong_export(rec.port, "/v2", 5));
    assert!(cp.wait_ping(&hash2, WAIT), "{}", g.output());
    assert_eq!(get_a(&g).as_deref(), Ok("/v2"));
    assert_eq!(g.config_hash(), hash2);
    assert_eq!(cp.seen().sessions, 1);
    assert!(cp.seen().invalid_frames.is_empty());
}

#[test]
fn shared_mode_end_to_end() {
    end_to_end(&Certs::shared());
}

#[test]
fn pki_mode_end_to_end() {
    end_to_end(&Certs::pki("cp.kong.test"));
}

#[test]
fn wrong_control_plane_certificate_is_refused() {
    for certs in [
        Certs::shared_mismatched(),
        Certs::pki_untrusted_server("cp.kong.test"),
    ] {
        let rec = Recorder::start();
        let cp = ControlPlane::start(&certs);
        cp.set_config(&cp::kong_export(rec.port, "/v1", 1));
        let g = start_dp(&dp_env(&certs, cp.port, &[]));
        // Several attempts (300 ms apart), none gets past TLS.
        assert!(
            cp.wait_for(WAIT, |s| s.tls_failures >= 2),
            "{:?}\n{}",
            cp.seen(),
            g.output()
        );
        assert_eq!(cp.seen().sessions, 0);
        assert_eq!(ready(&g), 503, "no config may be applied");
        assert!(
            g.output().contains("invalid peer certificate")
                || g.output().contains("InvalidCertificate"),
            "{}",
            g.output()
        );
    }
}

#[test]
fn pki_name_mismatch_is_refused() {
    let certs = Certs::pki("cp.kong.test");
    let cp = ControlPlane::start(&certs);
    cp.set_config(&cp::kong_export(1, "/v1", 1));
    let mut env = dp_env(&certs, cp.port, &[]);
    env.retain(|(k, _)| k != "KONG_CLUSTER_SERVER_NAME");
    env.push(("KONG_CLUSTER_SERVER_NAME".into(), "other.kong.test".into()));
    let g = start_dp(&env);
    assert!(cp.wait_for(WAIT, |s| s.tls_failures >= 1), "{}", g.output());
    assert_eq!(cp.seen().sessions, 0);
    assert_eq!(ready(&g), 503);
}

#[test]
fn version_and_plugin_mismatch() {
    // A CP older than the DP (minor 9 < 10) closes at once; the DP retries
    // and keeps running.
    let certs = Certs::shared();
    let rec = Recorder::start();
    let cp = ControlPlane::start_with(
        &certs,
        CpOptions {
            version: "3.9.0".into(),
        },
    );
    cp.set_config(&cp::kong_export(rec.port, "/v1", 1));
    let g = start_dp(&dp_env(&certs, cp.port, &[]));
    assert!(
        cp.wait_for(WAIT, |s| s.version_rejects >= 2),
        "{:?}\n{}",
        cp.seen(),
        g.output()
    );
    assert_eq!(ready(&g), 503);
    drop(g);
    drop(cp);

    // A config naming a plugin the DP does not list is withheld by the CP;
    // the link stays up and pings carry the empty hash.
    let cp = ControlPlane::start(&certs);
    let mut cfg = cp::kong_export(rec.port, "/v1", 1);
    cfg["plugins"] = json!([{
        "id": "db8af0a8-0000-4000-8000-000000000001", "name": "bot-detection",
        "service": null, "route": null, "consumer": null,
        "config": {"allow": [], "deny": []}, "protocols": ["grpc", "grpcs", "http", "https"],
        "enabled": true, "tags": null, "created_at": 1700000000, "updated_at": 1700000000,
    }]);
    cp.set_config(&cfg);
    let g = start_dp(&dp_env(&certs, cp.port, &[]));
    assert!(cp.wait_for(WAIT, |s| s.plugin_withheld >= 1 && !s.pings.is_empty()));
    assert_eq!(cp.seen().sessions, 1);
    assert_eq!(
        cp.last_ping().as_deref(),
        Some("00000000000000000000000000000000")
    );
    assert_eq!(ready(&g), 503);

    // Even if a CP sends it anyway, the DP's validation refuses it.
    let (frame, _) = cp::reconfigure(&cfg);
    cp.send_binary(frame);
    assert!(
        wait_until(WAIT, || g
            .output()
            .contains("unable to update running config")),
        "{}",
        g.output()
    );
    assert_eq!(ready(&g), 503);
    assert!(cp.seen().invalid_frames.is_empty());
}

#[test]
fn push_under_load_is_atomic() {
    let certs = Certs::shared();
    let rec = Recorder::start();
    let cp = ControlPlane::start(&certs);
    let hash1 = cp.set_config(&cp::kong_export(rec.port, "/v1", 1000));
    let g = start_dp(&dp_env(&certs, cp.port, &[]));
    assert!(cp.wait_ping(&hash1, WAIT), "{}", g.output());

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let regressions = Arc::new(AtomicU64::new(0));
    let port = g.port;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failures, regressions) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            regressions.clone(),
        );
        clients.push(thread::spawn(move || {
            let mut seen_v2 = false;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match try_request(port, "GET", "/a", &[], b"") {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        let uri = r.json()["uri"].as_str().unwrap_or("").to_string();
                        match uri.as_str() {
                            "/v2" => seen_v2 = true,
                            "/v1" if seen_v2 => {
                                regressions.fetch_add(1, Ordering::SeqCst);
                            }
                            "/v1" => {}
                            other => failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("unexpected uri {other}")),
                        }
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("status {}", r.status)),
                    Err(e) => failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.to_string()),
                }
            }
        }));
    }
    thread::sleep(Duration::from_millis(500));
    let before = ok.load(Ordering::SeqCst);
    let hash2 = cp.set_config(&cp::kong_export(rec.port, "/v2", 1000));
    assert!(cp.wait_ping(&hash2, WAIT), "{}", g.output());
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let total = ok.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "push under load: {total} requests ok ({} during/after the push), {} failed, {} saw v1 after v2",
        total - before,
        failures.len(),
        regressions.load(Ordering::SeqCst)
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(regressions.load(Ordering::SeqCst), 0);
    assert!(total > before, "load kept going through the push");
    assert_eq!(get_a(&g).as_deref(), Ok("/v2"));
}

#[test]
fn cp_killed_then_back_and_restart_serves_cache() {
    let certs = Certs::shared();
    let rec = Recorder::start();
    let mut cp = ControlPlane::start(&certs);
    let hash1 = cp.set_config(&cp::kong_export(rec.port, "/v1", 2));
    let prefix = TempDir::new("dp-prefix");
    let prefix_s = prefix.path().display().to_string();
    let env = dp_env(&certs, cp.port, &[("KONG_PREFIX", prefix_s.as_str())]);
    let mut g = start_dp(&env);
    assert!(cp.wait_ping(&hash1, WAIT), "{}", g.output());

    // CP dies: the DP keeps serving and stays ready.
    cp.kill();
    for _ in 0..20 {
        assert_eq!(get_a(&g).as_deref(), Ok("/v1"));
        assert_eq!(ready(&g), 200);
        thread::sleep(Duration::from_millis(50));
    }
    // It comes back with a new config: the DP reconnects and applies it.
    let sessions_before = cp.seen().sessions;
    let hash2 = cp.set_config(&cp::kong_export(rec.port, "/v2", 2));
    cp.restart();
    assert!(cp.wait_ping(&hash2, WAIT), "{}", g.output());
    assert!(cp.seen().sessions > sessions_before);
    assert_eq!(get_a(&g).as_deref(), Ok("/v2"));
    // The swap (and so the hash a ping reports) comes before the cache
    // write, as persisting only what was applied requires: wait for it.
    assert!(
        wait_until(WAIT, || g.proc.count_lines("persisted config") >= 2),
        "{}",
        g.output()
    );

    // Restart the DP while the CP is down: the cached config is served.
    g.stop();
    cp.kill();
    let g2 = start_dp(&env);
    assert!(wait_until(WAIT, || ready(&g2) == 200), "{}", g2.output());
    assert_eq!(g2.config_hash(), hash2);
    assert_eq!(get_a(&g2).as_deref(), Ok("/v2"));
    assert!(
        g2.output().contains("loaded persisted config"),
        "{}",
        g2.output()
    );
    // Same node id across restarts.
    assert!(cp.seen().queries.iter().all(|q| q.contains(&format!(
        "node_id={}",
        std::fs::read_to_string(prefix.path().join("kong.id")).unwrap_or_default()
    ))));
}

#[test]
fn hostile_pushes_keep_the_old_config() {
    let certs = Certs::shared();
    let rec = Recorder::start();
    let cp = ControlPlane::start(&certs);
    let hash1 = cp.set_config(&cp::kong_export(rec.port, "/v1", 2));
    let g = start_dp(&dp_env(
        &certs,
        cp.port,
        &[
            ("KONG_CLUSTER_MAX_PAYLOAD", "4194304"),
            ("KONG_TEST_CLUSTER_PING_INTERVAL_MS", "1000"),
            ("KONG_TEST_CLUSTER_PING_WAIT_MS", "3000"),
        ],
    ));
    assert!(cp.wait_ping(&hash1, WAIT), "{}", g.output());
    let pid = g.proc.pid();

    let check_still_serving = |what: &str| {
        assert_eq!(g.config_hash(), hash1, "{what}: hash changed");
        assert_eq!(get_a(&g).as_deref(), Ok("/v1"), "{what}");
        assert_eq!(ready(&g), 200, "{what}");
    };
    let rejected = |n: usize| {
        wait_until(WAIT, || {
            g.output()
                .matches("unable to update running config")
                .count()
                >= n
        })
    };

    let valid = json!({"type": "reconfigure", "config_table": cp::kong_export(rec.port, "/v9", 1)});
    let valid_gz = cp::gzip(valid.to_string().as_bytes());

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "non-gzip bytes",
            b"\x00\x01definitely not gzip".to_vec(),
            "neither gzip nor zlib",
        ),
        (
            "truncated gzip",
            valid_gz[..valid_gz.len() / 2].to_vec(),
            "cannot inflate",
        ),
        (
            "invalid JSON",
            cp::gzip(b"{\"type\":\"reconfigure\",\"config_table\":{"),
            "not valid JSON",
        ),
        (
            "schema-invalid config",
            cp::reconfigure(&json!({
                "_format_version": "3.0",
                "services": [{"name": "bad", "host": "127.0.0.1", "port": 70000}],
            }))
            .0,
            "declarative configuration parse failure",
        ),
    ];
    let mut n = 0;
    for (what, frame, reason) in cases {
        cp.send_binary(frame);
        n += 1;
        assert!(rejected(n), "{what} not rejected:\n{}", g.output());
        assert!(
            g.output().contains(reason),
            "{what}: expected '{reason}':\n{}",
            g.output()
        );
        check_still_serving(what);
    }

    // Gzip bomb: ~3 MB (under the 4 MiB frame limit) inflating to 3 GiB;
    // it stops at the inflate cap (256 MiB).
    // Rejected at the cap (not after inflating it all) is shown by the
    // message and the peak RSS; `rejected` (15 s) only guards against a hang.
    let bomb = cp::gzip_bomb(3 << 30);
    assert!(bomb.len() < 4 << 20, "bomb is {} bytes", bomb.len());
    cp.send_binary(bomb);
    n += 1;
    assert!(rejected(n), "bomb not rejected:\n{}", g.output());
    assert!(g.output().contains("exceeds the"), "{}", g.output());
    check_still_serving("gzip bomb");
    let peak = peak_rss_kib(pid);
    eprintln!("gzip bomb rejected; DP peak RSS {} MiB", peak / 1024);
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");

    // A frame over cluster_max_payload: the session is dropped (as Kong's
    // recv_frame fails); the DP reconnects and keeps its config.
    let sessions = cp.seen().sessions;
    cp.send_binary(vec![0x1f; 4 * 1024 * 1024 + 1]);
    assert!(
        cp.wait_for(WAIT, |s| s.sessions > sessions),
        "no reconnect after an oversized frame:\n{}",
        g.output()
    );
    assert!(
        g.output().contains("Space limit exceeded") || g.output().contains("too long"),
        "{}",
        g.output()
    );
    check_still_serving("oversized frame");

    // A frame dribbled at 1 KB/s: bounded by the liveness timer (3 s here,
    // 45 s by default); the DP drops the session, reconnects, keeps serving.
    let sessions = cp.seen().sessions;
    let slow = cp::reconfigure(&cp::kong_export(rec.port, "/slow", 50)).0;
    let mut padded = slow.clone();
    padded.resize(slow.len().max(20 * 1024), 0);
    cp.dribble(&padded, 256, Duration::from_millis(250));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        check_still_serving("during dribble");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        cp.wait_for(WAIT, |s| s.sessions > sessions),
        "no reconnect after a dribbled frame:\n{}",
        g.output()
    );
    assert!(
        g.output().contains("did not receive any frame"),
        "{}",
        g.output()
    );
    check_still_serving("after dribble");
    assert!(
        cp.seen().invalid_frames.is_empty(),
        "{:?}",
        cp.seen().invalid_frames
    );
    let peak = peak_rss_kib(pid);
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn missing_or_bad_cluster_cert_is_a_startup_error() {
    let certs = Certs::shared();
    let mut env = dp_env(&certs, 1, &[]);
    env.retain(|(k, _)| k != "KONG_CLUSTER_CERT");
    env.push((
        "KONG_CLUSTER_CERT".into(),
        "/nonexistent/cluster.crt".into(),
    ));
    let out = match try_start_dp(&env) {
        Ok(g) => panic!("started with a missing cert:\n{}", g.output()),
        Err(out) => out,
    };
    assert!(out.contains("cluster_cert"), "{out}");

    let mut env = dp_env(&certs, 1, &[]);
    env.retain(|(k, _)| k != "KONG_CLUSTER_CERT_KEY");
    let out = match try_start_dp(&env) {
        Ok(g) => panic!("started without a key:\n{}", g.output()),
        Err(out) => out,
    };
    assert!(
        out.contains("cluster certificate and key must be provided"),
        "{out}"
    );

    // A key that does not belong to the cert.
    let other = Certs::shared();
    let mut env = dp_env(&certs, 1, &[]);
    env.retain(|(k, _)| k != "KONG_CLUSTER_CERT_KEY");
    env.push((
        "KONG_CLUSTER_CERT_KEY".into(),
        other.dp_key.display().to_string(),
    ));
    let out = match try_start_dp(&env) {
        Ok(g) => panic!("started with a mismatched key:\n{}", g.output()),
        Err(out) => out,
    };
    assert!(out.contains("cluster_cert_key"), "{out}");
}

/// Large pushed configs (1,000 and 10,000 routes) are applied, reported
/// and routed: the DP pings the new hash, reports it on /status and serves
/// the last route. How long applying takes is measured in benches/, not
/// here: `config_apply` in benches/benches/config.rs (in-process, per
/// phase) and the load harness's `push` scenario (push to ping, and the
/// DP's own validate / compile split, against the real binary).
#[test]
fn large_pushed_configs_apply_and_route() {
    let certs = Certs::shared();
    let rec = Recorder::start();
    let cp = ControlPlane::start(&certs);
    let g = start_dp(&dp_env(&certs, cp.port, &[]));
    assert!(cp.wait_for(WAIT, |s| !s.pings.is_empty()));
    for n in [1_000usize, 10_000] {
        let hash = cp.set_config(&cp::kong_export(rec.port, &format!("/n{n}"), n));
        // A hang guard only: a debug build takes seconds for 10,000 routes.
        assert!(
            cp.wait_ping(&hash, Duration::from_secs(120)),
            "{}",
            g.output()
        );
        assert_eq!(g.config_hash(), hash);
        assert_eq!(get_a(&g).as_deref(), Ok(format!("/n{n}").as_str()));
        let r = try_request(g.port, "GET", &format!("/r{}", n - 1), &[], b"").expect("request");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn konnect_mode_reports_a_rejected_config() {
    // Only with konnect_mode: an OSS CP would drop the DP for this frame.
    let certs = Certs::shared();
    let rec = Recorder::start();
    let cp = ControlPlane::start(&certs);
    let hash1 = cp.set_config(&cp::kong_export(rec.port, "/v1", 1));
    let g = start_dp(&dp_env(&certs, cp.port, &[("KONG_KONNECT_MODE", "on")]));
    assert!(cp.wait_ping(&hash1, WAIT), "{}", g.output());
    let bad = json!({"_format_version": "3.0", "services": [{"host": "x", "port": 70000}]});
    let (frame, bad_hash) = cp::reconfigure(&bad);
    cp.send_binary(frame);
    assert!(
        cp.wait_for(WAIT, |s| s
            .invalid_frames
            .iter()
            .any(|f| f.contains("declarative configuration parse failure"))),
        "{:?}\n{}",
        cp.seen().invalid_frames,
        g.output()
    );
    let report = cp.seen().invalid_frames.join("\n");
    assert!(report.contains(&bad_hash), "{report}");
    assert_eq!(g.config_hash(), hash1);
}
