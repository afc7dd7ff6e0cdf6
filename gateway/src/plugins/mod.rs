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
/// A name we do not implement stops the start, as Kong stops when a listed
/// plugin is not installed (`kong/db/dao/plugins.lua`: "<name> plugin is
/// enabled but not installed"), instead of being dropped silently.
pub fn enabled(setting: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for p in setting {
        match p.as_str() {
            "off" => return Ok(Vec::new()),
            "bundled" => out.extend(IMPLEMENTED.iter().map(|(n, _)| n.to_string())),
            other if IMPLEMENTED.iter().any(|(n, _)| *n == other) => out.push(other.to_string()),
            other => missing.push(other),
        }
    }
    if !missing.is_empty() {
        let have: Vec<&str> = IMPLEMENTED.iter().map(|(n, _)| *n).collect();
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
        assert_eq!(enabled(&list(&["bundled"])), Ok(list(&["prometheus"])));
        assert_eq!(
            enabled(&list(&["prometheus", "bundled"])),
            Ok(list(&["prometheus"]))
        );
        assert_eq!(enabled(&list(&["off"])), Ok(vec![]));
        let e = enabled(&list(&["bundled", "key-auth", "my-plugin"])).unwrap_err();
        assert!(
            e.contains("key-auth plugin is enabled but not installed"),
            "{e}"
        );
        assert!(
            e.contains("my-plugin plugin is enabled but not installed"),
            "{e}"
        );
    }
}
