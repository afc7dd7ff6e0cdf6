//! The last applied control-plane config, persisted under the prefix so a
//! restarted data plane serves it before (or without) reaching the CP.
//!
//! Kong 3.x keeps it in LMDB; we keep the `reconfigure` frame exactly as it
//! was received (compressed), so loading it goes through the same decode
//! and validation path as a push, and a cached hash is the CP's hash.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name under `prefix`.
pub const CACHE_FILE: &str = "cluster-config.json.gz";

pub fn cache_path(prefix: &Path) -> PathBuf {
    prefix.join(CACHE_FILE)
}

/// Replaces `path` atomically: a crash leaves the old file or the new one,
/// never a torn one (temp file, fsync, rename, fsync directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cache".to_string());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
