//! Kong's log serializer (`kong.log.serialize()`, `kong/pdk/log.lua`): the
//! JSON the logging plugins send. Not implemented yet.

use serde_json::Value;

use super::Kong;

/// The serialized request, in Kong's shape.
pub fn serialize(_kong: &Kong<'_>) -> Value {
    Value::Object(serde_json::Map::new())
}
