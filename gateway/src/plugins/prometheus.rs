//! The `prometheus` plugin (Kong's `kong/plugins/prometheus`): its config
//! schema and which instance applies to a request. Recording and exporting
//! live in [`crate::metrics`].
//!
//! As in Kong, the plugin only decides *whether* a request is recorded and
//! which per-request families it feeds; `/metrics` itself is served by the
//! status API, and node-level families are exported with or without it.

use config_sync::model;
use serde_json::Value;
use uuid::Uuid;

/// The plugin's name in configs.
pub const NAME: &str = "prometheus";

/// Kong's handler reports `kong_meta.version` as the plugin version.
pub const VERSION: &str = crate::kong::KONG_VERSION;

/// `config` of a `prometheus` instance; every flag defaults to false (3.x).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// A `prometheus` config Kong's schema would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("plugin 'prometheus': config.{0}: expected a boolean")]
    NotBoolean(String),
    #[error("plugin 'prometheus': config.{0}: unknown field")]
    UnknownField(String),
    #[error("plugin 'prometheus': config: expected a record")]
    NotRecord,
}

impl PrometheusConfig {
    /// Parses `config` with Kong's defaults; `null` means the default.
    pub fn from_json(config: &Value) -> Result<PrometheusConfig, ConfigError> {
        let mut c = PrometheusConfig::default();
        let map = match config {
            Value::Object(m) => m,
            Value::Null => return Ok(c),
            _ => return Err(ConfigError::NotRecord),
        };
        for (k, v) in map {
            let slot = match k.as_str() {
                "per_consumer" => &mut c.per_consumer,
                "status_code_metrics" => &mut c.status_code_metrics,
                "ai_metrics" => &mut c.ai_metrics,
                "latency_metrics" => &mut c.latency_metrics,
                "bandwidth_metrics" => &mut c.bandwidth_metrics,
                "upstream_health_metrics" => &mut c.upstream_health_metrics,
                "wasm_metrics" => &mut c.wasm_metrics,
                other => return Err(ConfigError::UnknownField(other.to_string())),
            };
            match v {
                Value::Bool(b) => *slot = *b,
                Value::Null => {}
                _ => return Err(ConfigError::NotBoolean(k.clone())),
            }
        }
        Ok(c)
    }

    /// Whether this instance records anything per request.
    pub fn records_requests(&self) -> bool {
        self.status_code_metrics || self.latency_metrics || self.bandwidth_metrics
    }
}

/// Parses every `prometheus` instance (disabled ones too: Kong validates
/// the schema whatever `enabled` says).
pub fn validate(plugins: &[model::Plugin]) -> Result<(), ConfigError> {
    for p in plugins.iter().filter(|p| p.name == NAME) {
        PrometheusConfig::from_json(&p.config)?;
    }
    Ok(())
}

/// The instance that runs for a request on `route` / `service` over
/// `protocol`, by Kong's precedence without a consumer (none is identified
/// yet): route+service, route, service, global. `plugins` holds enabled
/// instances only.
pub fn applicable<'a>(
    plugins: &'a [model::Plugin],
    route: Option<Uuid>,
    service: Option<Uuid>,
    protocol: &str,
) -> Option<&'a model::Plugin> {
    let candidates = || {
        plugins.iter().filter(|p| {
            p.name == NAME
                && p.consumer.is_none()
                && (p.protocols.is_empty() || p.protocols.iter().any(|x| x == protocol))
        })
    };
    let pick =
        |r: Option<Uuid>, s: Option<Uuid>| candidates().find(|p| p.route == r && p.service == s);
    let mut order: Vec<(Option<Uuid>, Option<Uuid>)> = Vec::with_capacity(4);
    if route.is_some() && service.is_some() {
        order.push((route, service));
    }
    if route.is_some() {
        order.push((route, None));
    }
    if service.is_some() {
        order.push((None, service));
    }
    order.push((None, None));
    order.into_iter().find_map(|(r, s)| pick(r, s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_all_false() {
        let c = PrometheusConfig::from_json(&json!({})).unwrap();
        assert_eq!(c, PrometheusConfig::default());
        assert!(!c.records_requests());
        let c =
            PrometheusConfig::from_json(&json!({"latency_metrics": true, "per_consumer": null}))
                .unwrap();
        assert!(c.latency_metrics && !c.per_consumer);
    }

    #[test]
    fn schema_errors() {
        assert_eq!(
            PrometheusConfig::from_json(&json!({"latency_metrics": "yes"})),
            Err(ConfigError::NotBoolean("latency_metrics".into()))
        );
        assert_eq!(
            PrometheusConfig::from_json(&json!({"nope": true})),
            Err(ConfigError::UnknownField("nope".into()))
        );
    }

    fn plugin(route: Option<u128>, service: Option<u128>, flag: bool) -> model::Plugin {
        model::Plugin {
            id: Uuid::new_v4(),
            name: NAME.into(),
            instance_name: None,
            enabled: true,
            config: json!({ "status_code_metrics": flag }),
            service: service.map(Uuid::from_u128),
            route: route.map(Uuid::from_u128),
            consumer: None,
            protocols: vec!["http".into(), "https".into()],
            tags: vec![],
        }
    }

    #[test]
    fn most_specific_instance_wins() {
        let ps = vec![
            plugin(None, None, false),
            plugin(None, Some(2), true),
            plugin(Some(1), None, false),
        ];
        let r = Some(Uuid::from_u128(1));
        let s = Some(Uuid::from_u128(2));
        let other = Some(Uuid::from_u128(9));
        assert_eq!(applicable(&ps, r, s, "http").unwrap().id, ps[2].id);
        assert_eq!(applicable(&ps, other, s, "http").unwrap().id, ps[1].id);
        assert_eq!(applicable(&ps, other, other, "http").unwrap().id, ps[0].id);
        assert!(applicable(&ps, other, other, "grpc").is_none());
        assert!(applicable(&ps[1..], other, other, "http").is_none());
    }
}
