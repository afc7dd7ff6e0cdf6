//! Kong's test fixture plugins (`spec/fixtures/custom_plugins/kong/plugins`),
//! in builds with the `test-hooks` feature only, for the spec cases that
//! need them. Like Kong's, they are enabled by name (`KONG_PLUGINS=
//! bundled,rewriter`), never by `bundled`, and `basic_info` does not list
//! them.

use std::sync::Arc;

use async_trait::async_trait;
use config_sync::schema::{string, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;

use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef};

/// The fixtures, as [`super::ALL`] lists the bundled plugins.
pub const ALL: &[PluginDef] = &[REWRITER];

/// `rewriter`: sets the `rewriter` request header in the rewrite phase.
pub const REWRITER: PluginDef = PluginDef {
    name: "rewriter",
    priority: 1000,
    version: "0.1-t",
    schema: rewriter_schema,
    build: rewriter_build,
};

fn rewriter_schema() -> PluginSchema {
    PluginSchema {
        name: "rewriter",
        config: Record::new(vec![
            ("value", string()),
            ("extra", string().default("extra")),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: vec![],
    }
}

#[derive(Deserialize)]
struct RewriterConfig {
    value: Option<String>,
}

struct Rewriter {
    value: Option<String>,
}

fn rewriter_build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: RewriterConfig =
        serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(Rewriter { value: conf.value }))
}

#[async_trait]
impl Plugin for Rewriter {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }

    async fn rewrite(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        // `ngx.req.set_header("rewriter", conf.value)`: nil clears it.
        match &self.value {
            Some(v) => kong.set_upstream_header("rewriter", v),
            None => kong.clear_upstream_header("rewriter"),
        }
        Ok(())
    }
}
