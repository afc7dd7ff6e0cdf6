//! Kong config model, validation and (later) the control-plane link.

pub mod cluster;
pub mod credentials;
pub mod declarative;
pub mod error;
pub mod hash;
pub mod model;
pub mod private_fs;
pub mod schema;
pub mod settings;
pub mod table;
pub mod validate;

mod build;
mod json;

pub use declarative::{
    entity_uuid, parse_declarative_str, parse_declarative_table, parse_declarative_value,
    text_to_value, ParseOptions,
};
pub use error::{ConfigError, ConfigErrors};
pub use hash::{config_hash, config_hashes, ConfigHashes};
pub use model::*;
