//! Hybrid mode (`role = data_plane`): the gateway side of the control-plane
//! link in `config_sync::cluster`.
//!
//! [`GatewaySink`] applies a pushed `config_table` with the same validation
//! and compilation as the DB-less file (`parse_declarative_value` →
//! `Snapshot::compile`) and swaps the snapshot whole, so a request sees the
//! old config or the new one, never a mix. The client runs on its own small
//! tokio runtime in a dedicated thread: Pingora owns its runtimes.
//!
//! Hidden test hooks (environment, not `kong.conf`; for integration tests
//! that cannot wait Kong's 5-10 s reconnect delay or 30/45 s timers):
//! `KONG_TEST_CLUSTER_RECONNECT_MS`, `KONG_TEST_CLUSTER_PING_INTERVAL_MS`,
//! `KONG_TEST_CLUSTER_PING_WAIT_MS`, `KONG_TEST_CLUSTER_INFLATE_CAP`
//! (bytes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use config_sync::cluster::client::SetupError;
use config_sync::cluster::{load_cached, Client, ClientOptions, ClusterStatus, ConfigSink};
use config_sync::settings::Settings;
use config_sync::{parse_declarative_value, ParseOptions};
use serde_json::Value;

use crate::kong::KONG_VERSION;
use crate::metrics::Metrics;
use crate::plugins::IMPLEMENTED;
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
            opts: ParseOptions {
                available_plugins: plugins.to_vec(),
            },
            metrics: std::sync::OnceLock::new(),
        }
    }
}

impl ConfigSink for GatewaySink {
    fn apply(&self, config_table: Value, hash: String) -> Result<(), String> {
        let t0 = Instant::now();
        let cfg = parse_declarative_value(config_table, &self.opts)
            .map_err(|e| format!("declarative configuration parse failure: {e}"))?;
        let t1 = Instant::now();
        let snap = Snapshot::compile(&cfg, hash)
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

    fn current_hash(&self) -> Option<String> {
        Some(self.config.load().hash.clone())
    }
}

/// `(name, version)` of the enabled plugins, for `basic_info`: a CP only
/// sends configs whose plugins we list, so list exactly what we run.
pub fn plugin_versions(enabled: &[String]) -> Vec<(String, String)> {
    IMPLEMENTED
        .iter()
        .filter(|(n, _)| enabled.iter().any(|e| e == n))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

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
    let t = &mut opts.timings;
    if let Some(d) = env_ms("KONG_TEST_CLUSTER_RECONNECT_MS") {
        t.reconnect_min = d;
        t.reconnect_max = d;
    }
    if let Some(d) = env_ms("KONG_TEST_CLUSTER_PING_INTERVAL_MS") {
        t.ping_interval = d;
    }
    if let Some(d) = env_ms("KONG_TEST_CLUSTER_PING_WAIT_MS") {
        t.ping_wait = d;
    }
    if let Some(cap) = std::env::var("KONG_TEST_CLUSTER_INFLATE_CAP")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        opts.inflate_cap = cap;
    }
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
