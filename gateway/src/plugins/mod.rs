//! Kong's plugin runtime, as it applies to a data plane
//! (`kong/runloop/plugins_iterator.lua`, `kong/init.lua`): one file per
//! plugin with its config schema and its handler, instances resolved into
//! per-route chains when a config is compiled ([`runtime`]), and the phases
//! run from the proxy's one `ProxyHttp` through the [`pdk::Kong`] facade.
//!
//! Adding a plugin: a file here with a `DEF: PluginDef` (name, Kong's
//! PRIORITY and VERSION, its schema, how to build an instance from a
//! validated config), listed in [`ALL`].

pub mod background;
pub mod consumers;
#[cfg(feature = "test-hooks")]
pub mod fixtures;
pub mod log_io;
pub mod log_serializer;
pub mod pdk;
pub mod prometheus;
pub mod queue;
pub mod redis;
pub mod runtime;

// One file per plugin: its schema and its handler.
pub mod acl;
pub mod basic_auth;
pub mod correlation_id;
pub mod cors;
pub mod file_log;
pub mod http_log;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod request_size_limiting;
pub mod request_termination;
pub mod request_transformer;
pub mod response_ratelimiting;
pub mod response_transformer;
pub mod tcp_log;
pub mod udp_log;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use config_sync::schema::{PluginSchema, PluginSchemas};
use pingora::http::ResponseHeader;
use serde_json::Value;
use uuid::Uuid;

pub use pdk::{Exit, Kong};
pub use runtime::{PluginEnv, PluginSet};

/// Every bundled handler reports Kong's release as its version (Kong:
/// `VERSION = kong_meta.version`); a control plane compares them.
pub const VERSION: &str = crate::kong::KONG_VERSION;

/// A plugin this gateway implements.
pub struct PluginDef {
    pub name: &'static str,
    /// Kong's `PRIORITY` (higher runs first; ties by name, descending).
    pub priority: i32,
    pub version: &'static str,
    /// The plugin's schema, for the declarative loader.
    pub schema: fn() -> PluginSchema,
    /// Builds an instance from its validated config (defaults filled).
    pub build: fn(&Instance<'_>) -> Result<Arc<dyn Plugin>, String>,
}

impl std::fmt::Debug for PluginDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDef")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

/// What one plugin instance is built from.
#[derive(Debug)]
pub struct Instance<'a> {
    pub id: Uuid,
    /// Validated, with the schema's defaults.
    pub config: &'a Value,
    pub route: Option<Uuid>,
    pub service: Option<Uuid>,
    pub consumer: Option<Uuid>,
    /// Routes in the snapshot being compiled (for per-route caches).
    pub routes: usize,
    /// The instance's `instance_name` (Kong names it in log tags).
    pub instance_name: Option<&'a str>,
}

/// Phases an instance implements; the runtime skips the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases(u8);

impl Phases {
    pub const ACCESS: Phases = Phases(1);
    pub const HEADER_FILTER: Phases = Phases(2);
    pub const BODY_FILTER: Phases = Phases(4);
    pub const LOG: Phases = Phases(8);
    /// Kong's `rewrite`: global instances only, before routing.
    pub const REWRITE: Phases = Phases(16);

    pub const fn union(self, other: Phases) -> Phases {
        Phases(self.0 | other.0)
    }

    pub fn has(self, p: Phases) -> bool {
        self.0 & p.0 == p.0
    }
}

impl std::ops::BitOr for Phases {
    type Output = Phases;
    fn bitor(self, rhs: Phases) -> Phases {
        self.union(rhs)
    }
}

/// A plugin instance's handler. Phase methods run only if [`Plugin::phases`]
/// lists them.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    fn phases(&self) -> Phases;

    /// Kong's `rewrite`: before routing, and only for global instances
    /// (Kong's `execute_global_plugins_iterator(.., "rewrite", ..)`), with
    /// their global config. `Err(exit)` answers the request; no route is
    /// matched and no access handler runs.
    async fn rewrite(&self, _kong: &mut Kong<'_>) -> Result<(), Exit> {
        Ok(())
    }

    /// Kong's `access`: after routing, before the upstream. `Err(exit)`
    /// short-circuits: the later plugins' access handlers are skipped (their
    /// header_filter/body_filter/log still run) and the exit is sent.
    async fn access(&self, _kong: &mut Kong<'_>) -> Result<(), Exit> {
        Ok(())
    }

    /// Kong's `header_filter`, on proxied and on Kong-generated responses.
    fn header_filter(&self, _kong: &mut Kong<'_>, _resp: &mut ResponseHeader) {}

    /// Kong's `body_filter`, per chunk; `eof` on the last.
    fn body_filter(&self, _kong: &mut Kong<'_>, _body: &mut Option<Bytes>, _eof: bool) {}

    /// Kong's `log`, once the response is done.
    fn log(&self, _kong: &mut Kong<'_>) {}

    /// The request body is read (up to `client_body_buffer_size`) before
    /// the access phase, for [`Kong::request_body`].
    fn needs_request_body(&self) -> bool {
        false
    }
}

/// The plugins this gateway implements, in no particular order.
pub const ALL: &[PluginDef] = &[
    prometheus::DEF,
    key_auth::DEF,
    basic_auth::DEF,
    jwt::DEF,
    acl::DEF,
    cors::DEF,
    correlation_id::DEF,
    ip_restriction::DEF,
    request_size_limiting::DEF,
    request_termination::DEF,
    request_transformer::DEF,
    response_transformer::DEF,
    http_log::DEF,
    file_log::DEF,
    udp_log::DEF,
    tcp_log::DEF,
    rate_limiting::DEF,
    response_ratelimiting::DEF,
    proxy_cache::DEF,
];

/// A plugin by name (Kong's test fixtures too, in test builds).
pub fn def(name: &str) -> Option<&'static PluginDef> {
    ALL.iter().chain(fixtures()).find(|d| d.name == name)
}

#[cfg(feature = "test-hooks")]
fn fixtures() -> &'static [PluginDef] {
    fixtures::ALL
}

#[cfg(not(feature = "test-hooks"))]
fn fixtures() -> &'static [PluginDef] {
    &[]
}

/// Names and versions for the control plane's `basic_info`.
pub fn implemented() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<_> = ALL.iter().map(|d| (d.name, d.version)).collect();
    v.sort_by_key(|(n, _)| n.to_ascii_lowercase());
    v
}

/// The schemas of the enabled plugins, for the declarative loader.
pub fn schemas(enabled: &[String]) -> PluginSchemas {
    PluginSchemas::new(
        ALL.iter()
            .chain(fixtures())
            .filter(|d| enabled.iter().any(|n| n == d.name))
            .map(|d| (d.schema)()),
    )
}

/// Names enabled by the `plugins` setting (`bundled` means all we have).
/// A name we do not implement stops the start, as Kong stops when a listed
/// plugin is not installed (`kong/db/dao/plugins.lua`: "<name> plugin is
/// enabled but not installed"), instead of being dropped silently.
pub fn enabled(setting: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for p in setting {
        match p.as_str() {
            "off" => return Ok(Vec::new()),
            "bundled" => out.extend(ALL.iter().map(|d| d.name.to_string())),
            other if def(other).is_some() => out.push(other.to_string()),
            other => missing.push(other),
        }
    }
    if !missing.is_empty() {
        let have: Vec<&str> = implemented().into_iter().map(|(n, _)| n).collect();
        return Err(missing
            .iter()
            .map(|m| {
                format!(
                    "plugins: {m} plugin is enabled but not installed (this gateway implements: {})",
                    have.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn enabled_plugins_follow_kongs_setting() {
        let bundled = enabled(&list(&["bundled"])).unwrap();
        assert_eq!(bundled.len(), ALL.len());
        assert!(bundled.iter().any(|n| n == "prometheus"));
        assert_eq!(enabled(&list(&["prometheus"])), Ok(list(&["prometheus"])));
        assert_eq!(enabled(&list(&["off"])), Ok(vec![]));
        let e = enabled(&list(&["bundled", "key-auth-x", "my-plugin"])).unwrap_err();
        assert!(
            e.contains("key-auth-x plugin is enabled but not installed"),
            "{e}"
        );
        assert!(
            e.contains("my-plugin plugin is enabled but not installed"),
            "{e}"
        );
    }

    #[test]
    fn every_plugin_has_a_valid_schema_and_kongs_version() {
        for d in ALL {
            let s = (d.schema)();
            assert_eq!(s.name, d.name);
            assert_eq!(d.version, VERSION);
            // Defaults alone form a valid config, or the schema says which
            // field is required.
            let _ =
                config_sync::schema::validate_record(&s.config, &serde_json::json!({}), "config");
        }
    }
}
