//! The last applied control-plane config, persisted under the prefix so a
//! restarted data plane serves it before (or without) reaching the CP.
//!
//! Kong 3.x keeps it in LMDB; we keep the `reconfigure` frame exactly as it
//! was received (compressed), so loading it goes through the same decode
//! and validation path as a push, and a cached hash is the CP's hash.

use std::path::{Path, PathBuf};

/// File name under `prefix`.
pub const CACHE_FILE: &str = "cluster-config.json.gz";

pub fn cache_path(prefix: &Path) -> PathBuf {
    prefix.join(CACHE_FILE)
}

/// Replaces `path` atomically with a private (0600) file; see
/// [`crate::private_fs::write_atomic`]. The cache holds certificate keys.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::private_fs::write_atomic(path, bytes)
}

/// The cached frame, if any. A missing file is `Ok(None)`.
pub fn read(path: &Path, max_len: u64) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max_len => Err(std::io::Error::other(format!(
            "{} is {} bytes, over the {max_len}-byte payload limit",
            path.display(),
            m.len()
        ))),
        Ok(_) => std::fs::read(path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
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
}
