//! Plugins: the names this gateway implements.
//!
//! Kong refuses a config that names a plugin it does not have loaded
//! ("plugin 'x' not enabled; add it to the 'plugins' configuration
//! property"); so does this gateway, for every plugin not listed here.
//! Each plugin gets its own file in this folder as it is implemented.

pub mod prometheus;

/// Plugins implemented by this gateway, with the version reported to a
/// control plane.
pub const IMPLEMENTED: &[(&str, &str)] = &[(prometheus::NAME, prometheus::VERSION)];

/// Names enabled by the `plugins` setting (`bundled` means all we have).
pub fn enabled(setting: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in setting {
        match p.as_str() {
            "off" => return Vec::new(),
            "bundled" => out.extend(IMPLEMENTED.iter().map(|(n, _)| n.to_string())),
            other => {
                if IMPLEMENTED.iter().any(|(n, _)| *n == other) {
                    out.push(other.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
