//! The `response-ratelimiting` plugin (Kong's `kong/plugins/response-ratelimiting`): not implemented yet.

use std::sync::Arc;

use config_sync::schema::PluginSchema;

use super::{Instance, Plugin, PluginDef, VERSION};

pub const NAME: &str = "response-ratelimiting";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 900,
    version: VERSION,
    schema,
    build,
};

fn schema() -> PluginSchema {
    PluginSchema::untyped(NAME)
}

fn build(_i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    Err("not implemented yet".into())
}
