//! Secrets through the real binary: the prefix and everything we write in
//! it are private, a sensitive setting's value never appears in an error,
//! and shared-mode clustering refuses an expired pinned certificate.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gw_tests::cp::{self, Certs, ControlPlane};
use gw_tests::gateway::{Gateway, Recorder, TempDir};

const MIN_YML: &str = "_format_version: '3.0'\n";
const WAIT: Duration = Duration::from_secs(15);

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

#[test]
fn a_new_prefix_and_everything_in_it_are_private() {
    let tmp = TempDir::new("private-prefix");
    let prefix = tmp.path().join("new").join("prefix");
    let prefix_s = prefix.to_str().unwrap().to_string();
    let gw = Gateway::start_with(
        MIN_YML,
        &[
            ("KONG_PREFIX", &prefix_s),
            ("KONG_PROXY_ACCESS_LOG", "logs/access.log"),
            ("KONG_PROXY_ERROR_LOG", "logs/error.log"),
        ],
    );
    let _ = gw_tests::get(gw.port, "/", &[]);
    for dir in [
        tmp.path().join("new"),
        prefix.clone(),
        prefix.join("logs"),
        prefix.join("pids"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        "kong.id",
        "pids/nginx.pid",
        ".kong_env",
        "logs/access.log",
        "logs/error.log",
    ] {
        assert_eq!(mode(&prefix.join(file)), 0o600, "{file}");
    }
}

#[test]
fn an_existing_prefix_keeps_its_mode_and_gets_private_files() {
    // The harness makes the prefix: as Kong, we leave its mode to the
    // operator (private_fs unit tests), and what we write in it is private.
    let gw = Gateway::start(MIN_YML);
    for file in ["kong.id", "pids/nginx.pid", ".kong_env"] {
        assert_eq!(mode(&gw.prefix.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&gw.prefix.join("pids")), 0o700);
}

fn dp_env(certs: &Certs, cp_port: u16) -> Vec<(String, String)> {
    let mut env = certs.dp_env(cp_port);
    env.push(("KONG_TEST_CLUSTER_RECONNECT_MS".into(), "300".into()));
    env.push(("KONG_LOG_LEVEL".into(), "info".into()));
    env
}

fn try_start_dp(env: &[(String, String)]) -> Result<Gateway, String> {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::try_start_with(MIN_YML, &refs)
}

#[test]
fn the_control_plane_config_cache_is_private() {
    let certs = Certs::shared();
    let rec = Recorder::start();
    let cp = ControlPlane::start(&certs);
    let hash = cp.set_config(&cp::kong_export(rec.port, "/v1", 1));
    let g = try_start_dp(&dp_env(&certs, cp.port)).unwrap_or_else(|o| panic!("{o}"));
    assert!(cp.wait_ping(&hash, WAIT), "{}", g.output());
    let cache = g.prefix.join("cluster-config.json.gz");
    assert!(wait_until(WAIT, || cache.exists()), "{}", g.output());
    assert_eq!(mode(&cache), 0o600);
    assert_eq!(mode(&g.prefix.join("kong.id")), 0o600);
    // No temp file left readable (or at all).
    let stray: Vec<_> = std::fs::read_dir(&g.prefix)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// Every run of 6 characters of `value` (ignoring ones with spaces).
fn fragments(value: &str) -> Vec<String> {
    let chars: Vec<char> = value.chars().collect();
    chars
        .windows(6)
        .map(|w| w.iter().collect::<String>())
        .filter(|f| !f.contains(char::is_whitespace))
        .collect()
}

#[test]
fn a_bad_cluster_cert_key_is_named_but_never_shown() {
    let certs = Certs::shared();
    let long_b64 =
        "TUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFDN1Z3a2V5bWF0ZXJpYWw="
            .repeat(3);
    let values = [
        "-----BEGIN PRIVATE KEY-----\nZm9vYmFyc2VjcmV0a2V5bWF0ZXJpYWw!!!\n-----END PRIVATE KEY-----\n".to_string(),
        "-----BEGIN ZQSECRETMATERIAL-----MIIEvQIBADANBgkqhkiG9w0BAQEF".to_string(),
        long_b64,
        "/nonexistent-9f8e7d/zq-hidden-material-x1.pem".to_string(),
    ];
    for value in values {
        let mut env = dp_env(&certs, 1);
        env.retain(|(k, _)| k != "KONG_CLUSTER_CERT_KEY");
        env.push(("KONG_CLUSTER_CERT_KEY".into(), value.clone()));
        let out = match try_start_dp(&env) {
            Ok(g) => panic!("started with a bad key:\n{}", g.output()),
            Err(out) => out,
        };
        assert!(out.contains("cluster_cert_key"), "{out}");
        for f in fragments(&value) {
            assert!(!out.contains(&f), "'{f}' of the key leaked:\n{out}");
        }
    }
}

#[test]
fn shared_mode_refuses_an_expired_control_plane_certificate() {
    // Kong's DP verifies the CP against the shared cert as a trusted
    // certificate with OpenSSL, dates included: an expired shared cert
    // never gets a session.
    let certs = Certs::shared_expired();
    let rec = Recorder::start();
    let cp = ControlPlane::start(&certs);
    cp.set_config(&cp::kong_export(rec.port, "/v1", 1));
    let g = try_start_dp(&dp_env(&certs, cp.port)).unwrap_or_else(|o| panic!("{o}"));
    assert!(
        cp.wait_for(WAIT, |s| s.tls_failures >= 2),
        "{:?}\n{}",
        cp.seen(),
        g.output()
    );
    assert_eq!(cp.seen().sessions, 0);
    assert_eq!(g.status_get("/status/ready").status, 503);
    assert!(g.output().contains("certificate expired"), "{}", g.output());
}
