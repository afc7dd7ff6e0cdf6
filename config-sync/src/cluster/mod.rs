//! Hybrid mode: the data plane's link to a Kong / Konnect control plane
//! (sync v1 on `/v1/outlet`; see `shared/docs/kong-hybrid-protocol.md`).
//!
//! * [`tls`]: rustls client config (pinned shared cert or PKI);
//! * [`protocol`]: `basic_info`, ping payloads, `reconfigure` decoding with
//!   a decompressed-size cap;
//! * [`client`]: connect, session loop (pings, 45 s liveness), reconnect,
//!   and the apply worker that hands configs to a [`ConfigSink`];
//! * [`cache`]: the last applied config, persisted atomically;
//! * [`node_id`]: the node id in `<prefix>/kong.id`.
//!
//! This crate never depends on the gateway: the gateway implements
//! [`ConfigSink`] (validate, compile, swap).

pub mod cache;
pub mod client;
pub mod node_id;
pub mod protocol;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::model::DeclarativeConfig;
use crate::table::ConfigTable;

pub use client::{load_cached, process_frame, Client, ClientOptions, Outcome};

/// Where a control-plane config goes. Implemented by the gateway.
pub trait ConfigSink: Send + Sync + 'static {
    /// Validates, compiles and atomically installs `config_table` under
    /// `hash`. On `Err` the running config (and hash) must stay untouched.
    /// On success, the validated config, if the sink can take it back
    /// through [`ConfigSink::apply_validated`] (it is then cached as such).
    fn apply(
        &self,
        config_table: ConfigTable,
        hash: String,
    ) -> Result<Option<DeclarativeConfig>, String>;
    /// Compiles and installs a config that `apply` validated before (read
    /// back from the cache). Same contract on `Err`.
    fn apply_validated(&self, config: DeclarativeConfig, hash: String) -> Result<(), String>;
    /// Hash of the running config (`None` before any config).
    fn current_hash(&self) -> Option<String>;
}

/// Protocol timers; Kong's values by default (`kong/constants.lua`,
/// `data_plane.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    pub ping_interval: Duration,
    /// Silence (no frame at all) that ends a session.
    pub ping_wait: Duration,
    /// Reconnect delay: a whole number of seconds in this range, as Kong's
    /// `math.random(5, 10)`; equal bounds give a fixed delay.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// TCP connect, TLS and WebSocket handshakes, and each send.
    pub io_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            ping_interval: Duration::from_secs(30),
            ping_wait: Duration::from_secs(45),
            reconnect_min: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Live state of the link, for metrics and logs.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    connected: AtomicBool,
    applied: AtomicU64,
    rejected: AtomicU64,
    last_apply_unix_ms: AtomicU64,
    last_apply_duration_us: AtomicU64,
    last_hash: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// The last frame applied (or found unchanged) and the hash it
    /// carried: the same bytes again need no decoding.
    last_frame: Mutex<Option<(FrameDigest, String)>>,
    /// Keys for [`FrameDigest`], random per process.
    frame_keys: std::collections::hash_map::RandomState,
}

/// Identity of a received frame: its length and keyed SipHash (random
/// keys, so a peer cannot make two frames collide on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameDigest {
    len: usize,
    hash: u64,
}

impl ClusterStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
    }

    pub fn applied_total(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn last_hash(&self) -> Option<String> {
        lock(&self.last_hash).clone()
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    pub fn last_apply_duration(&self) -> Duration {
        Duration::from_micros(self.last_apply_duration_us.load(Ordering::Relaxed))
    }

    pub(crate) fn record_apply(&self, hash: &str, took: Duration) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.last_apply_unix_ms.store(now_ms, Ordering::Relaxed);
        self.last_apply_duration_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
        *lock(&self.last_hash) = Some(hash.to_string());
    }

    pub(crate) fn frame_digest(&self, frame: &[u8]) -> FrameDigest {
        use std::hash::BuildHasher;
        FrameDigest {
            len: frame.len(),
            hash: self.frame_keys.hash_one(frame),
        }
    }

    /// The hash carried by `digest`'s frame, if it is the last one kept.
    pub(crate) fn known_frame(&self, digest: &FrameDigest) -> Option<String> {
        match &*lock(&self.last_frame) {
            Some((d, hash)) if d == digest => Some(hash.clone()),
            _ => None,
        }
    }

    pub(crate) fn remember_frame(&self, digest: FrameDigest, hash: &str) {
        *lock(&self.last_frame) = Some((digest, hash.to_string()));
    }

    pub(crate) fn record_reject(&self, reason: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(reason.to_string());
    }

    /// A JSON view (e.g. for a status endpoint).
    pub fn to_json(&self) -> Value {
        json!({
            "control_plane_connected": self.connected(),
            "config_hash": self.last_hash(),
            "config_applies_total": self.applied_total(),
            "config_rejected_total": self.rejected_total(),
            "last_config_apply_unix_ms": self.last_apply_unix_ms.load(Ordering::Relaxed),
            "last_config_apply_duration_ms": self.last_apply_duration().as_secs_f64() * 1000.0,
            "last_error": self.last_error(),
        })
    }

    /// Prometheus text. `kong_control_plane_connected` is Kong's own name;
    /// the others have no Kong equivalent on the DP and use its prefix.
    pub fn prometheus(&self) -> String {
        let hash = self
            .last_hash()
            .unwrap_or_else(|| protocol::EMPTY_HASH.to_string());
        format!(
            "# HELP kong_control_plane_connected Kong connected to control plane, 0 is unconnected\n\
             # TYPE kong_control_plane_connected gauge\n\
             kong_control_plane_connected {}\n\
             # TYPE kong_data_plane_config_hash_info gauge\n\
             kong_data_plane_config_hash_info{{config_hash=\"{hash}\"}} 1\n\
             # TYPE kong_data_plane_config_applies_total counter\n\
             kong_data_plane_config_applies_total {}\n\
             # TYPE kong_data_plane_config_rejected_total counter\n\
             kong_data_plane_config_rejected_total {}\n\
             # TYPE kong_data_plane_last_config_apply_timestamp_seconds gauge\n\
             kong_data_plane_last_config_apply_timestamp_seconds {}\n\
             # TYPE kong_data_plane_last_config_apply_duration_seconds gauge\n\
             kong_data_plane_last_config_apply_duration_seconds {}\n",
            u8::from(self.connected()),
            self.applied_total(),
            self.rejected_total(),
            self.last_apply_unix_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            self.last_apply_duration().as_secs_f64(),
        )
    }
}
