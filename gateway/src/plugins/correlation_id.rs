//! The `correlation-id` plugin (Kong's `kong/plugins/correlation-id`): not implemented yet.

use std::sync::Arc;

use config_sync::schema::PluginSchema;

use super::{Instance, Plugin, PluginDef, VERSION};

pub const NAME: &str = "correlation-id";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 100001,
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
