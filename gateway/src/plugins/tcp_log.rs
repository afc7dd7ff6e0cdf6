//! The `tcp-log` plugin (Kong's `kong/plugins/tcp-log`): not implemented yet.

use std::sync::Arc;

use config_sync::schema::PluginSchema;

use super::{Instance, Plugin, PluginDef, VERSION};

pub const NAME: &str = "tcp-log";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 7,
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
