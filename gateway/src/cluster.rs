//! Hybrid mode (`role = data_plane`): the gateway side of the control-plane
//! link in `config_sync::cluster`.
//!
//! [`GatewaySink`] applies a pushed `config_table` with the same validation
//! and compilation as the DB-less file (`parse_declarative_table` →
//! `Snapshot::compile`) and swaps the snapshot whole, so a request sees the
//! old config or the new one, never a mix. The client runs on its own small
//! tokio runtime in a dedicated thread: Pingora owns its runtimes.
//!
//! Test hooks, only in builds with the `test-hooks` feature (the
//! integration tests'; never a shipped build, where they could lift the
//! decompression-bomb cap): environment variables, not `kong.conf`, for
//! tests that cannot wait Kong's 5-10 s reconnect delay or 30/45 s timers:
//! `KONG_TEST_CLUSTER_RECONNECT_MS`, `KONG_TEST_CLUSTER_PING_INTERVAL_MS`,
//! `KONG_TEST_CLUSTER_PING_WAIT_MS`, `KONG_TEST_CLUSTER_INFLATE_CAP`
//! (bytes).

use std::sync::Arc;
use std::time::Instant;

use config_sync::cluster::client::SetupError;
use config_sync::cluster::{load_cached, Client, ClientOptions, ClusterStatus, ConfigSink};
use config_sync::settings::Settings;
use config_sync::table::ConfigTable;
use config_sync::{parse_declarative_table, ParseOptions};

use crate::kong::KONG_VERSION;
use crate::metrics::Metrics;
use crate::snapshot::{ConfigHandle, Snapshot};

/// Validates, compiles and swaps configs pushed by the control plane.
pub struct GatewaySink {
    config: ConfigHandle,
    opts: ParseOptions,
    /// `kong_dp_config_apply_seconds`, once the server's handle is known.
    metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl GatewaySink {
    pub fn new(config: ConfigHandle, plugins: &[String]) -> GatewaySink {
        GatewaySink {
            config,
            opts: ParseOptions::with_schemas(crate::plugins::schemas(plugins)),
            metrics: std::sync::OnceLock::new(),
        }
    }
}

impl GatewaySink {
    /// Compiles `cfg` (validated) and swaps it in; `validated` is when
    /// validation started (timings for the log and the metric).
    fn install(
        &self,
        cfg: &config_sync::DeclarativeConfig,
        hash: String,
        t0: Instant,
    ) -> Result<(), String> {
        let t1 = Instant::now();
        let snap = Snapshot::compile_with(cfg, hash, self.config.upstream_tls())
            .map_err(|e| format!("configuration reload failed: {e}"))?;
        let t2 = Instant::now();
        self.config.store(snap);
        if let Some(m) = self.metrics.get() {
            m.observe_config_apply(t0.elapsed());
        }
        log::debug!(
            "[clustering] validate {} ms, compile {} ms, swap {} us",
            (t1 - t0).as_millis(),
            (t2 - t1).as_millis(),
            t2.elapsed().as_micros()
        );
        Ok(())
    }
}

impl ConfigSink for GatewaySink {
    fn apply(
        &self,
        config_table: ConfigTable,
        hash: String,
    ) -> Result<Option<config_sync::DeclarativeConfig>, String> {
        let t0 = Instant::now();
        let cfg = parse_declarative_table(config_table, &self.opts)
            .map_err(|e| format!("declarative configuration parse failure: {e}"))?;
        self.install(&cfg, hash, t0)?;
        Ok(Some(cfg))
    }

    fn apply_validated(
        &self,
        config: config_sync::DeclarativeConfig,
        hash: String,
    ) -> Result<(), String> {
        self.install(&config, hash, Instant::now())
    }

    fn current_hash(&self) -> Option<String> {
        Some(self.config.load().hash.clone())
    }
}

/// `(name, version)` of the enabled plugins, for `basic_info`: a CP only
/// sends configs whose plugins we list, so list exactly what we run.
pub fn plugin_versions(enabled: &[String]) -> Vec<(String, String)> {
    crate::plugins::implemented()
        .into_iter()
        .filter(|(n, _)| enabled.iter().any(|e| e == n))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Whether this build honours the `KONG_TEST_CLUSTER_*` hooks.
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

/// Applies the `KONG_TEST_CLUSTER_*` hooks found through `env`.
#[cfg(feature = "test-hooks")]
fn apply_test_hooks(opts: &mut ClientOptions, env: impl Fn(&str) -> Option<String>) {
    let ms = |name: &str| {
        env(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    };
    let t = &mut opts.timings;
    if let Some(d) = ms("KONG_TEST_CLUSTER_RECONNECT_MS") {
        t.reconnect_min = d;
        t.reconnect_max = d;
    }
    if let Some(d) = ms("KONG_TEST_CLUSTER_PING_INTERVAL_MS") {
        t.ping_interval = d;
    }
    if let Some(d) = ms("KONG_TEST_CLUSTER_PING_WAIT_MS") {
        t.ping_wait = d;
    }
    if let Some(cap) =
        env("KONG_TEST_CLUSTER_INFLATE_CAP").and_then(|v| v.trim().parse::<usize>().ok())
    {
        opts.inflate_cap = cap;
    }
}

/// Shipped builds: no hook, and no hook's name in the binary.
#[cfg(not(feature = "test-hooks"))]
fn apply_test_hooks(_opts: &mut ClientOptions, _env: impl Fn(&str) -> Option<String>) {}

/// A prepared link: certificates and node id already loaded.
pub struct Hybrid {
    opts: ClientOptions,
    sink: Arc<GatewaySink>,
    pub status: Arc<ClusterStatus>,
}

/// Loads certificates, key and node id; any problem is a startup error.
pub fn prepare(
    settings: &Settings,
    config: &ConfigHandle,
    plugins: &[String],
) -> Result<Hybrid, SetupError> {
    let mut opts = ClientOptions::from_settings(settings, &plugin_versions(plugins), KONG_VERSION)?;
    apply_test_hooks(&mut opts, |name| std::env::var(name).ok());
    Ok(Hybrid {
        opts,
        sink: Arc::new(GatewaySink::new(config.clone(), plugins)),
        status: Arc::new(ClusterStatus::default()),
    })
}

impl Hybrid {
    /// Applied configs are timed into `kong_dp_config_apply_seconds`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Hybrid {
        let _ = self.sink.metrics.set(metrics);
        self
    }

    /// Serves the last persisted CP config, if any, before the CP is
    /// reached (Kong: "found persisted lmdb config, loading...").
    pub fn load_cache(&self) {
        let started = Instant::now();
        match load_cached(&self.opts, self.sink.as_ref(), &self.status) {
            Ok(Some(hash)) => log::info!(
                "[clustering] loaded persisted config {hash} in {} ms",
                started.elapsed().as_millis()
            ),
            Ok(None) => {
                log::info!("[clustering] no persisted config; waiting for the control plane")
            }
            Err(e) => log::error!("[clustering] ignoring persisted config: {e}"),
        }
    }

    /// Starts the link on its own thread and runtime.
    pub fn spawn(self) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("clustering")
            .build()?;
        let client = Client::new(self.opts, self.sink, self.status);
        std::thread::Builder::new()
            .name("clustering".into())
            .spawn(move || rt.block_on(client.run()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Client options for a data plane with real (generated) certificates.
    fn client_options() -> ClientOptions {
        let dir = std::env::temp_dir().join(format!("gw-hooks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let key = rcgen::KeyPair::generate().expect("keygen");
        let cert = rcgen::CertificateParams::new(vec!["kong_clustering".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let env = [
            ("KONG_ROLE", "data_plane".to_string()),
            ("KONG_CLUSTER_CERT", cert.pem()),
            ("KONG_CLUSTER_CERT_KEY", key.serialize_pem()),
            ("KONG_PREFIX", dir.display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let settings = Settings::load(None, env).expect("settings");
        let opts = ClientOptions::from_settings(&settings, &[], KONG_VERSION).expect("options");
        let _ = std::fs::remove_dir_all(&dir);
        opts
    }

    fn hook_env() -> impl Fn(&str) -> Option<String> {
        let env: HashMap<&str, &str> = [
            ("KONG_TEST_CLUSTER_RECONNECT_MS", "300"),
            ("KONG_TEST_CLUSTER_PING_INTERVAL_MS", "1000"),
            ("KONG_TEST_CLUSTER_PING_WAIT_MS", "3000"),
            ("KONG_TEST_CLUSTER_INFLATE_CAP", "999999999999"),
        ]
        .into_iter()
        .collect();
        move |k| env.get(k).map(|v| v.to_string())
    }

    /// Shipped builds (`cargo test -p gateway` builds without the feature):
    /// the hooks change nothing, the inflate cap above all.
    #[cfg(not(feature = "test-hooks"))]
    #[test]
    fn shipped_builds_ignore_the_test_hooks() {
        const { assert!(!TEST_HOOKS) };
        let defaults = client_options();
        let mut opts = defaults.clone();
        apply_test_hooks(&mut opts, hook_env());
        assert_eq!(opts.timings, defaults.timings);
        assert_eq!(opts.inflate_cap, defaults.inflate_cap);
    }

    /// Test builds (a build including gw-tests): the hooks apply.
    #[cfg(feature = "test-hooks")]
    #[test]
    fn test_builds_apply_the_test_hooks() {
        const { assert!(TEST_HOOKS) };
        let mut opts = client_options();
        apply_test_hooks(&mut opts, hook_env());
        assert_eq!(
            opts.timings.reconnect_min,
            std::time::Duration::from_millis(300)
        );
        assert_eq!(
            opts.timings.reconnect_max,
            std::time::Duration::from_millis(300)
        );
        assert_eq!(
            opts.timings.ping_interval,
            std::time::Duration::from_secs(1)
        );
        assert_eq!(opts.timings.ping_wait, std::time::Duration::from_secs(3));
        assert_eq!(opts.inflate_cap, 999_999_999_999);
    }
}
