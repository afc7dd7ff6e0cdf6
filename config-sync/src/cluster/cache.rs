//! The last applied control-plane config, persisted under the prefix so a
//! restarted data plane serves it before (or without) reaching the CP.
//!
//! Kong 3.x keeps it in LMDB. We keep the `reconfigure` frame exactly as it
//! was received (compressed; a cached hash is the CP's hash) and, next to
//! it, the config as validation left it (typed, JSON). A start then skips
//! inflating, parsing and validating the frame, which is most of its cost:
//!
//! ```text
//! MAGIC | sha256(rest) | rest = header length (u32 LE) | header (JSON) | frame | typed
//! ```
//!
//! The typed part is trusted only when the digest matches (the file is
//! whole: nothing truncated or flipped it) and the header's stamp is this
//! build's (same model format, gateway, binary and plugin set, which is
//! what validation depends on). We write the file ourselves (0600, in a
//! private prefix, atomically) and only after that config was validated and
//! applied, so such a file holds a validated config. Anything else (an
//! older cache that is a bare frame, a foreign or damaged file, a typed part
//! that does not decode) goes through the full decode and validation of the
//! frame, which refuses what is wrong.

use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use crate::model::DeclarativeConfig;

/// File name under `prefix` (from when the file was the gzip frame only).
pub const CACHE_FILE: &str = "cluster-config.json.gz";

/// Leads a cache file in the format above.
const MAGIC: &[u8; 8] = b"GWCACHE1";
const DIGEST_LEN: usize = 32;
/// Bump when [`DeclarativeConfig`]'s meaning changes in a way its serde
/// shape does not show (a field's default, a normalisation).
const MODEL_FORMAT: u32 = 1;

pub fn cache_path(prefix: &Path) -> PathBuf {
    prefix.join(CACHE_FILE)
}

/// What a cached typed config must have been validated with: this model
/// format and config-sync version, the Kong version we claim, the running
/// binary (an upgrade re-validates once) and the plugins (name and
/// version) whose schemas validated plugin configs.
pub fn stamp(kong_version: &str, plugins: &[(String, String)]) -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{mtime}", m.len())
        })
        .unwrap_or_else(|_| "unknown".into());
    let mut plugins: Vec<String> = plugins.iter().map(|(n, v)| format!("{n}={v}")).collect();
    plugins.sort();
    format!(
        "model={MODEL_FORMAT} config-sync={} kong={kong_version} exe={exe} plugins={}",
        env!("CARGO_PKG_VERSION"),
        plugins.join(",")
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    stamp: String,
    hash: String,
    frame_len: usize,
    /// 0: no typed part (it would not have read back identical).
    typed_len: usize,
}

/// The cache file for `frame`, applied under `hash`, and the config its
/// validation produced (`None`: frame only, a start validates it).
pub fn encode(
    stamp: &str,
    hash: &str,
    frame: &[u8],
    config: Option<&DeclarativeConfig>,
) -> Vec<u8> {
    let typed = config.and_then(typed_bytes).unwrap_or_default();
    let header = Header {
        stamp: stamp.to_string(),
        hash: hash.to_string(),
        frame_len: frame.len(),
        typed_len: typed.len(),
    };
    // A struct of strings and integers: serializing it cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut rest = Vec::with_capacity(4 + header.len() + frame.len() + typed.len());
    rest.extend_from_slice(&u32::try_from(header.len()).unwrap_or(0).to_le_bytes());
    rest.extend_from_slice(&header);
    rest.extend_from_slice(frame);
    rest.extend_from_slice(&typed);
    let mut out = Vec::with_capacity(MAGIC.len() + DIGEST_LEN + rest.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(digest(&SHA256, &rest).as_ref());
    out.extend_from_slice(&rest);
    out
}

/// `config` serialized, if it reads back exactly (floats included: JSON
/// text is only trusted when the round trip shows it is exact).
fn typed_bytes(config: &DeclarativeConfig) -> Option<Vec<u8>> {
    let bytes = serde_json::to_vec(config).ok()?;
    let back: DeclarativeConfig = serde_json::from_slice(&bytes).ok()?;
    if back.same_entities(config) {
        Some(bytes)
    } else {
        log::warn!(
            "[clustering] the applied config does not read back identical; caching its frame only"
        );
        None
    }
}

/// A cache file's content.
#[derive(Debug)]
pub enum Cached {
    /// Written by this build after validating `config`, and whole.
    Validated {
        hash: String,
        frame: Vec<u8>,
        config: Box<DeclarativeConfig>,
    },
    /// To decode and validate in full; `why` says why.
    Frame { frame: Vec<u8>, why: String },
}

/// Reads a cache file's bytes (see the module doc for what is trusted).
pub fn decode(bytes: Vec<u8>, stamp: &str) -> Cached {
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        return Cached::Frame {
            frame: bytes,
            why: "not in the current cache format".into(),
        };
    };
    let Some((sum, rest)) = body.split_at_checked(DIGEST_LEN) else {
        return Cached::Frame {
            frame: bytes,
            why: "truncated".into(),
        };
    };
    // The frame can still be found in a damaged file: its own checks
    // (gzip CRC, JSON, validation) then decide.
    let (header, frame, typed) = match split(rest) {
        Ok(parts) => parts,
        Err(why) => {
            return Cached::Frame {
                frame: bytes,
                why: why.into(),
            }
        }
    };
    let unverified = |why: &str| Cached::Frame {
        frame: frame.to_vec(),
        why: why.to_string(),
    };
    if digest(&SHA256, rest).as_ref() != sum {
        return unverified("its digest does not match its content");
    }
    if header.stamp != stamp {
        return unverified("written by another build or with other plugins");
    }
    if typed.is_empty() {
        return unverified("it holds no validated config");
    }
    match serde_json::from_slice::<DeclarativeConfig>(typed) {
        Ok(config) => Cached::Validated {
            hash: header.hash,
            frame: frame.to_vec(),
            config: Box::new(config),
        },
        Err(e) => unverified(&format!("its validated config does not decode: {e}")),
    }
}

/// `rest` cut into header, frame and typed part.
fn split(rest: &[u8]) -> Result<(Header, &[u8], &[u8]), &'static str> {
    const BAD: &str = "its header is damaged";
    let (len, rest) = rest.split_at_checked(4).ok_or(BAD)?;
    let len = <[u8; 4]>::try_from(len).map_err(|_| BAD)?;
    let (header, rest) = rest
        .split_at_checked(u32::from_le_bytes(len) as usize)
        .ok_or(BAD)?;
    let header: Header = serde_json::from_slice(header).map_err(|_| BAD)?;
    let (frame, typed) = rest.split_at_checked(header.frame_len).ok_or(BAD)?;
    if typed.len() != header.typed_len {
        return Err(BAD);
    }
    Ok((header, frame, typed))
}

/// Replaces `path` atomically with a private (0600) file; see
/// [`crate::private_fs::write_atomic`]. The cache holds certificate keys.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::private_fs::write_atomic(path, bytes)
}

/// The cache file's bytes, if any. A missing file is `Ok(None)`.
pub fn read(path: &Path, max_len: u64) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max_len => Err(std::io::Error::other(format!(
            "{} is {} bytes, over the {max_len}-byte limit",
            path.display(),
            m.len()
        ))),
        Ok(_) => std::fs::read(path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_then_read() {
        let dir = std::env::temp_dir().join(format!("cs-cache-{}", uuid::Uuid::new_v4()));
        let p = cache_path(&dir);
        assert_eq!(read(&p, 100).expect("read"), None);
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(read(&p, 100).expect("read"), Some(b"two".to_vec()));
        assert!(read(&p, 2).is_err());
        // No temp files left behind.
        let n = std::fs::read_dir(&dir).expect("dir").count();
        assert_eq!(n, 1);
        // Certificate keys are in there: private file in a private directory.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn config() -> DeclarativeConfig {
        let opts = crate::ParseOptions::with_plugins(["key-auth"]);
        crate::parse_declarative_str(
            r#"{"_format_version": "3.0", "_transform": false,
                "services": [{"name": "s", "url": "https://h:8443/p", "routes": [
                    {"name": "r", "paths": ["/a", "~/u/(?<id>\\d+)$"], "headers": {"x": ["1"]},
                     "hosts": ["*.example.com"], "regex_priority": 3}]}],
                "upstreams": [{"name": "u", "healthchecks": {"threshold": 33.3,
                    "active": {"timeout": 0.1, "healthy": {"interval": 2.7}}},
                    "targets": [{"target": "10.0.0.1:80", "weight": 7}]}],
                "consumers": [{"username": "c", "keyauth_credentials": [{"key": "k"}]}],
                "plugins": [{"name": "key-auth", "config": {"f": 0.30000000000000004, "n": null}}]}"#,
            &opts,
        )
        .unwrap()
    }

    fn validated(c: Cached) -> (String, Vec<u8>, DeclarativeConfig) {
        match c {
            Cached::Validated {
                hash,
                frame,
                config,
            } => (hash, frame, *config),
            Cached::Frame { why, .. } => panic!("not validated: {why}"),
        }
    }

    fn frame_only(c: Cached) -> (Vec<u8>, String) {
        match c {
            Cached::Frame { frame, why } => (frame, why),
            Cached::Validated { .. } => panic!("trusted"),
        }
    }

    #[test]
    fn a_validated_config_reads_back_identical() {
        let cfg = config();
        let bytes = encode("s1", "h1", b"frame bytes", Some(&cfg));
        let (hash, frame, back) = validated(decode(bytes, "s1"));
        assert_eq!(hash, "h1");
        assert_eq!(frame, b"frame bytes");
        assert!(back.same_entities(&cfg));
    }

    #[test]
    fn anything_not_verified_goes_to_full_validation() {
        let cfg = config();
        let good = encode("s1", "h1", b"frame bytes", Some(&cfg));
        // Another build or plugin set.
        let (frame, why) = frame_only(decode(good.clone(), "s2"));
        assert_eq!(frame, b"frame bytes");
        assert!(why.contains("another build"), "{why}");
        // Frame only.
        let (frame, why) = frame_only(decode(encode("s1", "h1", b"f", None), "s1"));
        assert_eq!(frame, b"f");
        assert!(why.contains("no validated config"), "{why}");
        // An older cache: the bare frame.
        let (frame, _) = frame_only(decode(b"\x1f\x8bold".to_vec(), "s1"));
        assert_eq!(frame, b"\x1f\x8bold");
        // Any single flipped byte past the magic: never trusted.
        for i in MAGIC.len()..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            if let Cached::Validated { .. } = decode(bad, "s1") {
                panic!("byte {i} flipped and still trusted");
            }
        }
        // Truncated anywhere: never trusted.
        for n in 0..good.len() {
            if let Cached::Validated { .. } = decode(good[..n].to_vec(), "s1") {
                panic!("truncated to {n} bytes and still trusted");
            }
        }
    }

    #[test]
    fn the_stamp_names_plugins_in_a_stable_order() {
        let a = stamp(
            "3.10.0",
            &[("b".into(), "1".into()), ("a".into(), "2".into())],
        );
        let b = stamp(
            "3.10.0",
            &[("a".into(), "2".into()), ("b".into(), "1".into())],
        );
        assert_eq!(a, b);
        assert_ne!(a, stamp("3.10.0", &[("a".into(), "2".into())]));
        assert_ne!(
            a,
            stamp(
                "3.9.0",
                &[("a".into(), "2".into()), ("b".into(), "1".into())]
            )
        );
    }
}
