//! Sync v1 messages on `/v1/outlet` (`kong/clustering/data_plane.lua`,
//! `kong/clustering/control_plane.lua`, `kong/clustering/config_helper.lua`).

use std::io::Read;

use serde_json::{json, Map, Value};

use crate::hash::config_hash;
use crate::table::{ConfigTable, TableValue};

/// Kong's `DECLARATIVE_EMPTY_CONFIG_HASH`: what a DP with no config reports.
pub const EMPTY_HASH: &str = "00000000000000000000000000000000";

/// Request target of the sync v1 endpoint. Kong concatenates without
/// URL-encoding; we only escape what would make the request line invalid.
pub fn outlet_path(node_id: &str, hostname: &str, version: &str) -> String {
    format!(
        "/v1/outlet?node_id={}&node_hostname={}&node_version={}",
        escape_query(node_id),
        escape_query(hostname),
        escape_query(version)
    )
}

fn escape_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first frame: `basic_info`. `plugins` must be sorted by lower-cased
/// name (Kong's order); labels are only present when configured.
pub fn basic_info(
    plugins: &[(String, String)],
    labels: &[(String, String)],
    process_conf: Value,
) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = plugins.iter().collect();
    sorted.sort_by_key(|(n, _)| n.to_lowercase());
    let plugins: Vec<Value> = sorted
        .iter()
        .map(|(n, v)| json!({"name": n, "version": v}))
        .collect();
    let mut m = Map::new();
    m.insert("type".into(), json!("basic_info"));
    m.insert("plugins".into(), Value::Array(plugins));
    m.insert("process_conf".into(), process_conf);
    m.insert("filters".into(), json!({}));
    if !labels.is_empty() {
        let l: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        m.insert("labels".into(), Value::Object(l));
    }
    Value::Object(m).to_string().into_bytes()
}

/// Ping payload: the running hash, exactly 32 characters (a Kong CP closes
/// the connection on anything else).
pub fn ping_payload(current: Option<&str>) -> Vec<u8> {
    match current {
        Some(h) if h.len() == 32 && h.is_ascii() => h.as_bytes().to_vec(),
        _ => EMPTY_HASH.as_bytes().to_vec(),
    }
}

/// Why a pushed frame was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is neither gzip nor zlib data")]
    NotCompressed,
    #[error("cannot inflate payload: {0}")]
    Inflate(String),
    #[error("inflated payload exceeds the {cap}-byte limit")]
    TooLarge { cap: usize },
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("invalid reconfigure message: {0}")]
    Shape(String),
}

/// Inflates gzip (RFC 1952) or zlib (RFC 1950), like zlib's window bits
/// 15+32 auto-detection, keeping at most `cap` bytes: a bomb costs at most
/// `cap` bytes of memory and the time to inflate them. Output that cannot
/// start a JSON object is refused after the first chunk.
pub fn inflate(data: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    let (mut reader, size_hint): (Box<dyn Read + '_>, Option<usize>) = match data {
        [0x1f, 0x8b, ..] => {
            // ISIZE trailer: the inflated size mod 2^32. Untrusted, so only
            // a hint, clamped to the cap; it saves reallocations (and their
            // transient double footprint) for honest payloads.
            let isize = data
                .get(data.len().saturating_sub(4)..)
                .and_then(|t| <[u8; 4]>::try_from(t).ok())
                .map(|b| u32::from_le_bytes(b) as usize);
            (Box::new(flate2::read::GzDecoder::new(data)), isize)
        }
        [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 => {
            (Box::new(flate2::read::ZlibDecoder::new(data)), None)
        }
        _ => return Err(DecodeError::NotCompressed),
    };
    let initial = size_hint
        .unwrap_or_else(|| data.len().saturating_mul(8))
        .min(cap);
    let mut out: Vec<u8> = Vec::with_capacity(initial);
    let mut chunk = vec![0u8; 64 << 10];
    let mut sniffed = false;
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Inflate(e.to_string())),
        };
        if out.len() + n > cap {
            return Err(DecodeError::TooLarge { cap });
        }
        if out.capacity() - out.len() < n {
            let want = out.capacity().saturating_mul(2).max(out.len() + n).min(cap);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
        if !sniffed {
            match out.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => sniffed = true,
                Some(_) => {
                    return Err(DecodeError::Json(
                        "inflated payload does not start a JSON object".into(),
                    ))
                }
                None => {}
            }
        }
    }
    Ok(out)
}

/// A decoded `reconfigure` message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconfigure {
    pub config_table: ConfigTable,
    /// The CP's hash, or Kong's algorithm applied when the message has none.
    pub config_hash: String,
    /// Whether `config_hash` came from the message.
    pub hash_given: bool,
    pub timestamp: Option<f64>,
}

/// What a binary frame from the CP turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Reconfigure(Reconfigure),
    /// Any other `type`: Kong ignores these silently.
    Other(String),
}

/// Parses inflated message bytes.
pub fn parse_message(json: &[u8]) -> Result<Inbound, DecodeError> {
    let msg = crate::table::parse_message(json).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Some(m) = msg.members else {
        return Err(DecodeError::Shape("message is not a JSON object".into()));
    };
    let typ = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if typ != "reconfigure" {
        return Ok(Inbound::Other(typ));
    }
    let config_table = match msg.config_table {
        Some(Some(t)) => t,
        Some(None) => return Err(DecodeError::Shape("config_table is not an object".into())),
        None => return Err(DecodeError::Shape("config_table is missing".into())),
    };
    let given = m
        .get("config_hash")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let hash_given = given.is_some();
    // The hash is opaque (Konnect may use another algorithm): compute only
    // when absent, as config_helper.update does.
    let config_hash = given.unwrap_or_else(|| config_hash(&config_table.to_value()));
    Ok(Inbound::Reconfigure(Reconfigure {
        config_table,
        config_hash,
        hash_given,
        timestamp: m.get("timestamp").and_then(Value::as_f64),
    }))
}

/// Inflate + parse one binary frame.
pub fn decode_frame(frame: &[u8], cap: usize) -> Result<Inbound, DecodeError> {
    let json = inflate(frame, cap)?;
    parse_message(&json)
}

/// Kong's empty-config rule (`import.lua` config_is_empty): a config with no
/// entity but workspaces reports the empty hash, whatever the CP sent.
pub fn is_empty_config(config_table: &ConfigTable) -> bool {
    config_table.iter().all(|(k, v)| {
        k.starts_with('_')
            || k == "workspaces"
            || match v {
                TableValue::Entities(list) => list.is_empty(),
                TableValue::Value(Value::Null) => true,
                TableValue::Value(Value::Array(a)) => a.is_empty(),
                TableValue::Value(Value::Object(o)) => o.is_empty(),
                TableValue::Value(_) => false,
            }
    })
}

/// Konnect error report for a rejected config (`data_plane.lua` send_error);
/// only ever sent in `konnect_mode` (an OSS CP drops the link on it).
pub fn error_report(message: &str, config_hash: &str) -> Vec<u8> {
    json!({
        "type": "error",
        "error": {
            "name": "declarative configuration parse failure",
            "source": "kong.db.declarative.parse_table",
            "message": message,
            "config_hash": config_hash,
        }
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("gzip");
        e.finish().expect("gzip")
    }

    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("zlib");
        e.finish().expect("zlib")
    }

    #[test]
    fn outlet_path_is_kong_shaped() {
        assert_eq!(
            outlet_path("a1b2-c3", "host-1.local", "3.10.0"),
            "/v1/outlet?node_id=a1b2-c3&node_hostname=host-1.local&node_version=3.10.0"
        );
        assert_eq!(
            outlet_path("x", "a b", "1"),
            "/v1/outlet?node_id=x&node_hostname=a%20b&node_version=1"
        );
    }

    #[test]
    fn basic_info_sorted_and_labels_optional() {
        let plugins = vec![
            ("key-auth".to_string(), "3.10.0".to_string()),
            ("ACL".to_string(), "3.10.0".to_string()),
        ];
        let v: Value =
            serde_json::from_slice(&basic_info(&plugins, &[], json!({"role": "data_plane"})))
                .expect("json");
        assert_eq!(v["type"], "basic_info");
        assert_eq!(v["plugins"][0]["name"], "ACL");
        assert_eq!(v["plugins"][1]["name"], "key-auth");
        assert_eq!(v["filters"], json!({}));
        assert!(v.get("labels").is_none());
        let labels = vec![("region".to_string(), "eu".to_string())];
        let v: Value = serde_json::from_slice(&basic_info(&[], &labels, json!({}))).expect("json");
        assert_eq!(v["labels"], json!({"region": "eu"}));
        assert_eq!(v["plugins"], json!([]));
    }

    #[test]
    fn ping_payload_is_always_32_bytes() {
        assert_eq!(ping_payload(None), EMPTY_HASH.as_bytes());
        assert_eq!(ping_payload(Some("short")), EMPTY_HASH.as_bytes());
        let h = "c422ca2110787e5df87cc79fb1958e99";
        assert_eq!(ping_payload(Some(h)), h.as_bytes());
    }

    #[test]
    fn decodes_gzip_and_zlib_reconfigure() {
        let msg = br#"{"type":"reconfigure","timestamp":1.5,"config_table":{"_format_version":"3.0"},"config_hash":"abc","hashes":{}}"#;
        for frame in [gzip(msg), zlib(msg)] {
            match decode_frame(&frame, 1 << 20).expect("decode") {
                Inbound::Reconfigure(r) => {
                    assert_eq!(r.config_hash, "abc");
                    assert!(r.hash_given);
                    assert_eq!(r.timestamp, Some(1.5));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn computes_hash_only_when_missing() {
        let msg = br#"{"type":"reconfigure","config_table":{}}"#;
        match decode_frame(&gzip(msg), 1 << 20).expect("decode") {
            Inbound::Reconfigure(r) => {
                assert!(!r.hash_given);
                // Kong's known answer for `{}`.
                assert_eq!(r.config_hash, "2da3c26e4dbd6dd6ea3ab60a3dd7fb3e");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn other_types_are_ignored() {
        let msg = br#"{"type":"something_else"}"#;
        assert_eq!(
            decode_frame(&gzip(msg), 1024).expect("decode"),
            Inbound::Other("something_else".into())
        );
    }

    #[test]
    fn hostile_payloads_are_rejected() {
        assert_eq!(
            decode_frame(b"{\"type\":1}", 1024),
            Err(DecodeError::NotCompressed)
        );
        let good = gzip(br#"{"type":"reconfigure","config_table":{}}"#);
        let truncated = &good[..good.len() / 2];
        assert!(matches!(
            decode_frame(truncated, 1024),
            Err(DecodeError::Inflate(_))
        ));
        assert!(matches!(
            decode_frame(&gzip(b"{not json"), 1024),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode_frame(&gzip(br#"{"type":"reconfigure","config_table":[]}"#), 1024),
            Err(DecodeError::Shape(_))
        ));
        // Deeply nested JSON hits serde_json's recursion limit, not the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            decode_frame(&gzip(deep.as_bytes()), 1 << 20),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn bomb_stops_at_the_cap() {
        let mut text = b"{\"a\":\"".to_vec();
        text.resize(8 << 20, b'a');
        let bomb = gzip(&text);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            inflate(&bomb, 1 << 20),
            Err(DecodeError::TooLarge { cap: 1 << 20 })
        );
        assert_eq!(inflate(&bomb, 8 << 20).map(|v| v.len()), Ok(8 << 20));
        // Not JSON at all: refused after the first chunk, whatever the size.
        assert!(matches!(
            inflate(&gzip(&vec![0u8; 8 << 20]), 1 << 30),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn empty_config_rule() {
        let empty = |v: Value| match v {
            Value::Object(m) => is_empty_config(&ConfigTable::from_map(m)),
            _ => unreachable!(),
        };
        assert!(empty(
            json!({"_format_version": "3.0", "workspaces": [{"name": "default"}]})
        ));
        assert!(empty(json!({"_format_version": "3.0", "services": []})));
        assert!(empty(json!({"services": null, "x": {}})));
        assert!(!empty(json!({"services": [{"host": "x"}]})));
        assert!(!empty(json!({"services": "x"})));
    }
}
