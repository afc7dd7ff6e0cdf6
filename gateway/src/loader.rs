//! Reading a declarative config file into a compiled [`Snapshot`].

use std::path::Path;

use config_sync::{parse_declarative_str, ConfigErrors, ParseOptions};
use md5::{Digest, Md5};

use crate::snapshot::{CompileError, Snapshot};
use crate::upstream_tls::UpstreamTlsDefaults;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read declarative config '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to parse declarative config '{path}':\n{errors}")]
    Invalid { path: String, errors: ConfigErrors },
    #[error("failed to load declarative config '{path}': {source}")]
    Compile { path: String, source: CompileError },
}

/// Parses, validates and compiles declarative config text, with the
/// process' upstream TLS settings (`ConfigHandle::upstream_tls`).
/// The hash of a file-loaded config is the MD5 of its text, as Kong's.
pub fn compile_text(
    text: &str,
    plugins: &[String],
    origin: &str,
    upstream_tls: &UpstreamTlsDefaults,
) -> Result<Snapshot, LoadError> {
    let opts = ParseOptions::with_schemas(crate::plugins::schemas(plugins));
    let started = std::time::Instant::now();
    let cfg = parse_declarative_str(text, &opts).map_err(|errors| LoadError::Invalid {
        path: origin.to_string(),
        errors,
    })?;
    let parsed = started.elapsed();
    let hash = hex::encode(Md5::digest(text.as_bytes()));
    let snapshot =
        Snapshot::compile_with(&cfg, hash, upstream_tls).map_err(|source| LoadError::Compile {
            path: origin.to_string(),
            source,
        })?;
    log::debug!(
        "declarative config '{origin}': parsed and validated in {} ms, compiled in {} ms",
        parsed.as_millis(),
        (started.elapsed() - parsed).as_millis()
    );
    Ok(snapshot)
}

pub fn load_file(
    path: &Path,
    plugins: &[String],
    upstream_tls: &UpstreamTlsDefaults,
) -> Result<Snapshot, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: origin.clone(),
        source,
    })?;
    compile_text(&text, plugins, &origin, upstream_tls)
}
