//! Raw `key = value` collection from kong.conf and `KONG_*` environment
//! variables, before any typed parsing.

use std::collections::HashMap;

/// Where an effective value came from; used to name the key in errors the
/// way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    Default,
    ConfFile { line: usize },
    Env,
}

/// A value with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawValue {
    pub value: String,
    pub source: ValueSource,
    /// `proxy_listen` for file/default, `KONG_PROXY_LISTEN` for env.
    pub display_key: String,
}

/// One `key = value` line of kong.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfLine {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses kong.conf text: `key = value`, `#`/`;` comment lines, trailing
/// `# comments` (`\#` is a literal `#`), `\` line continuation. Returns the
/// entries plus warnings for lines that are not `key = value`.
pub(crate) fn parse_conf_file(text: &str) -> (Vec<ConfLine>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut pending: Option<(usize, String)> = None;

    for (idx, raw_line) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw_line.trim_end_matches('\r');
        // Continuations are joined first, as Penlight's config reader does.
        let (start, mut joined) = match pending.take() {
            Some((start, mut acc)) => {
                acc.push_str(line.trim_start());
                (start, acc)
            }
            None => (lineno, line.to_string()),
        };
        if joined.ends_with('\\') && !joined.ends_with("\\\\") {
            joined.pop();
            pending = Some((start, joined));
            continue;
        }
        handle_line(&joined, start, &mut out, &mut warnings);
    }
    if let Some((start, joined)) = pending {
        handle_line(&joined, start, &mut out, &mut warnings);
    }
    (out, warnings)
}

fn handle_line(line: &str, lineno: usize, out: &mut Vec<ConfLine>, warnings: &mut Vec<String>) {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
        return;
    }
    // The line itself is not quoted: it may be part of a key pasted over
    // several lines (`cluster_cert_key = -----BEGIN ...`).
    let Some((key, value)) = trimmed.split_once('=') else {
        warnings.push(format!(
            "kong.conf line {lineno}: ignored, expected 'key = value'"
        ));
        return;
    };
    let key = key.trim();
    if key.is_empty() {
        warnings.push(format!("kong.conf line {lineno}: ignored, missing key"));
        return;
    }
    out.push(ConfLine {
        key: key.to_string(),
        value: strip_comment(value),
        line: lineno,
    });
}

/// Removes a trailing comment (first `#` not preceded by `\`, with the
/// whitespace before it) and unescapes `\#`, then trims.
pub(crate) fn strip_comment(value: &str) -> String {
    let bytes = value.as_bytes();
    let cut = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1] != b'\\'))
        .unwrap_or(bytes.len());
    value[..cut].replace("\\#", "#").trim().to_string()
}

/// User-provided values (file + env), resolved with Kong's precedence.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    file: HashMap<String, (String, usize)>,
    env: HashMap<String, String>,
}

impl Sources {
    /// `known(key)` decides which keys we keep; unknown kong.conf keys give
    /// warnings, unknown `KONG_*` variables are only logged at debug level.
    pub fn collect(
        conf_file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
        known: impl Fn(&str) -> bool,
        warnings: &mut Vec<String>,
    ) -> Sources {
        let mut s = Sources::default();
        if let Some(text) = conf_file {
            let (lines, mut w) = parse_conf_file(text);
            warnings.append(&mut w);
            for l in lines {
                if known(&l.key) {
                    // Later lines win, like a table assignment in Kong.
                    s.file.insert(l.key, (l.value, l.line));
                } else {
                    warnings.push(format!(
                        "kong.conf line {}: '{}' is unknown or not supported by this gateway; ignored",
                        l.line, l.key
                    ));
                }
            }
        }
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("KONG_") else {
                continue;
            };
            // Kong looks up exactly "KONG_" .. upper(name).
            let name = rest.to_ascii_lowercase();
            if name.to_ascii_uppercase() != rest {
                continue;
            }
            if known(&name) {
                // Env values are used verbatim apart from trimming: Kong does
                // not strip `#` comments from them.
                s.env.insert(name, v.trim().to_string());
            } else {
                log::debug!(
                    "ignoring environment variable {k}: not a setting used by this gateway"
                );
            }
        }
        s
    }

    /// The user's value (env over file), if any.
    pub fn user(&self, key: &str) -> Option<RawValue> {
        if let Some(v) = self.env.get(key) {
            return Some(RawValue {
                value: v.clone(),
                source: ValueSource::Env,
                display_key: format!("KONG_{}", key.to_ascii_uppercase()),
            });
        }
        self.file.get(key).map(|(v, line)| RawValue {
            value: v.clone(),
            source: ValueSource::ConfFile { line: *line },
            display_key: key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_file_syntax() {
        let text = "\
# a comment
; another comment

proxy_listen = 0.0.0.0:8000 , 0.0.0.0:8443 ssl   # trailing comment
real_ip_header=X-Forwarded-For
log_level = debug#no space comment
error_default_type = text/plain \\# not a comment
plugins = bundled, \\
    my-plugin
junk line
 = nokey
";
        let (lines, warnings) = parse_conf_file(text);
        let kv: Vec<(&str, &str, usize)> = lines
            .iter()
            .map(|l| (l.key.as_str(), l.value.as_str(), l.line))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("proxy_listen", "0.0.0.0:8000 , 0.0.0.0:8443 ssl", 4),
                ("real_ip_header", "X-Forwarded-For", 5),
                ("log_level", "debug", 6),
                ("error_default_type", "text/plain # not a comment", 7),
                ("plugins", "bundled, my-plugin", 8),
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("line 10"), "{warnings:?}");
    }

    #[test]
    fn strip_comments() {
        assert_eq!(strip_comment("  a # b"), "a");
        assert_eq!(strip_comment("a\\#b # c"), "a#b");
        assert_eq!(strip_comment("#"), "");
    }

    #[test]
    fn env_matching_is_exact_uppercase() {
        let mut w = Vec::new();
        let env = vec![
            ("KONG_LOG_LEVEL".to_string(), " debug ".to_string()),
            ("KONG_log_level".to_string(), "info".to_string()),
            ("KONG_PG_HOST".to_string(), "db".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let s = Sources::collect(None, env, |k| k == "log_level", &mut w);
        let v = s.user("log_level").expect("set");
        assert_eq!(v.value, "debug");
        assert_eq!(v.display_key, "KONG_LOG_LEVEL");
        assert_eq!(v.source, ValueSource::Env);
        assert!(s.user("pg_host").is_none());
        assert!(w.is_empty());
    }

    #[test]
    fn env_beats_file_and_unknown_file_keys_warn() {
        let mut w = Vec::new();
        let s = Sources::collect(
            Some("log_level = info\nrole = traditional\npg_host = x\nlog_level = warn\n"),
            vec![("KONG_ROLE".to_string(), "data_plane".to_string())],
            |k| k == "log_level" || k == "role",
            &mut w,
        );
        let lvl = s.user("log_level").expect("set");
        assert_eq!(
            (lvl.value.as_str(), lvl.source),
            ("warn", ValueSource::ConfFile { line: 4 })
        );
        assert_eq!(s.user("role").expect("set").value, "data_plane");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("'pg_host'"));
    }
}
