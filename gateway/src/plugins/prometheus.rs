//! The `prometheus` plugin (Kong's `kong/plugins/prometheus`): its schema
//! and its log handler, which records each request on the per-request
//! families of [`crate::metrics`]. `/metrics` itself is served by the status
//! API, and the node families are exported with or without the plugin, as
//! in Kong.

use std::sync::{Arc, OnceLock};

use config_sync::schema::{boolean, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;

use super::{Instance, Kong, Phases, Plugin, PluginDef, PluginSet, VERSION};
use crate::metrics::{RecordFlags, RouteSeries, Scrape};

pub const NAME: &str = "prometheus";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 13,
    version: VERSION,
    schema,
    build,
};

/// `config` of a `prometheus` instance; every flag defaults to false (3.x).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// Fill the `consumer` label of requests and bandwidth counters.
    pub per_consumer: bool,
    /// `kong_http_requests_total`.
    pub status_code_metrics: bool,
    /// AI families; accepted for compatibility, nothing feeds them here.
    pub ai_metrics: bool,
    /// `kong_kong_latency_ms`, `kong_upstream_latency_ms`, `kong_request_latency_ms`.
    pub latency_metrics: bool,
    /// `kong_bandwidth_bytes`.
    pub bandwidth_metrics: bool,
    /// `kong_upstream_target_health` (global: any instance turns it on).
    pub upstream_health_metrics: bool,
    /// Wasm filter metrics; accepted, nothing feeds them here.
    pub wasm_metrics: bool,
}

fn schema() -> PluginSchema {
    let flag = || boolean().default(false);
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("per_consumer", flag()),
            ("status_code_metrics", flag()),
            ("ai_metrics", flag()),
            ("latency_metrics", flag()),
            ("bandwidth_metrics", flag()),
            ("upstream_health_metrics", flag()),
            ("wasm_metrics", flag()),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: &[
            "grpc",
            "grpcs",
            "http",
            "https",
            "tcp",
            "tls",
            "tls_passthrough",
            "udp",
            "ws",
            "wss",
        ],
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: PrometheusConfig =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    Ok(Arc::new(Prometheus {
        cfg,
        flags: RecordFlags {
            status_code: cfg.status_code_metrics,
            latency: cfg.latency_metrics,
            bandwidth: cfg.bandwidth_metrics,
        },
        routes: (0..i.routes).map(|_| OnceLock::new()).collect(),
    }))
}

struct Prometheus {
    cfg: PrometheusConfig,
    flags: RecordFlags,
    /// Series per route index, labelled on first use.
    routes: Box<[OnceLock<RouteSeries>]>,
}

impl Plugin for Prometheus {
    fn phases(&self) -> Phases {
        Phases::LOG
    }

    fn log(&self, kong: &mut Kong<'_>) {
        if self.flags == RecordFlags::default() {
            return;
        }
        // Kong's exporter labels with `service.name or service.host` and
        // `route.name or route.id`, and records nothing without a route.
        let Some(slot) = kong.ctx().route.and_then(|i| self.routes.get(i)) else {
            return;
        };
        let series = {
            slot.get_or_init(|| {
                let service = kong
                    .service()
                    .map(|s| s.name.clone().unwrap_or_else(|| s.host.clone()))
                    .unwrap_or_default();
                let route = kong
                    .route()
                    .map(|r| r.name.clone().unwrap_or_else(|| r.id.to_string()))
                    .unwrap_or_default();
                RouteSeries::new(service, route)
            })
        };
        let consumer = if self.cfg.per_consumer {
            kong.consumer()
                .and_then(|c| c.username.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let sample = kong.sample();
        kong.env()
            .metrics
            .record_sample(series, self.flags, &consumer, &sample);
    }
}

/// What a scrape needs from the live plugins: whether the per-request
/// families are exported, and whether target health is.
pub fn scrape_flags(set: &PluginSet) -> (bool, bool) {
    let mut any = false;
    let mut health = false;
    for c in set.instances_named(NAME) {
        any = true;
        health |= c
            .config
            .get("upstream_health_metrics")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
    }
    (any, health)
}

/// The scrape input for a snapshot.
pub fn scrape(snap: &crate::snapshot::Snapshot) -> Scrape {
    let (per_request, health) = scrape_flags(&snap.plugins);
    Scrape {
        per_request,
        target_health: health.then(|| {
            snap.target_health()
                .into_iter()
                .map(|(u, t, s)| (u, t, s.as_str()))
                .collect()
        }),
    }
}
