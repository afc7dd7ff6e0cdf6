//! Files and directories under the prefix, created private to the gateway's
//! user: directories 0700, files 0600 (before the umask, which can only
//! remove bits).
//!
//! The prefix holds the control-plane config cache, certificate private keys
//! included. Kong keeps the equivalent private: its LMDB directory is created
//! 0700 with 0600 files (lua-resty-lmdb `NGX_LUA_RESTY_LMDB_DIR_MODE` /
//! `_FILE_MODE`), and key material it writes into the prefix is pre-created
//! 0600 (`kong/cmd/utils/prefix_handler.lua` `pre_create_private_file`). An
//! existing directory is left as it is, as Kong leaves an existing prefix:
//! the operator chose its mode (a Kubernetes emptyDir, a group-shared
//! `/usr/local/kong`), and every file with secrets in it is 0600 anyway.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of directories we create.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files we create.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with [`DIR_MODE`]; directories
/// that already exist keep their mode.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// The prefix: created private when missing; an existing path must be a
/// directory (Kong: "<prefix> is not a directory").
pub fn ensure_prefix(prefix: &Path) -> std::io::Result<()> {
    match std::fs::metadata(prefix) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a directory",
            prefix.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_dir_all(prefix),
        Err(e) => Err(e),
    }
}

/// Opens `path` for appending, creating it [`FILE_MODE`] (and its missing
/// parents [`DIR_MODE`]). An existing file keeps its mode.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Replaces `path` atomically with a [`FILE_MODE`] file: a crash leaves the
/// old file or the new one, never a torn one (temp file, fsync, rename,
/// fsync directory). The temp file is created private and exclusively, so
/// the bytes are never readable by others, not even briefly, and a planted
/// file or symlink at the temp name is not written through.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // Left over by a crash of a process with our pid: ours to replace.
    if let Err(e) = std::fs::remove_file(&tmp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    fn tmp_dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("cs-private-{tag}-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn new_directories_are_private_existing_ones_untouched() {
        let root = tmp_dir("dirs");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let deep = root.join("a").join("b");
        create_dir_all(&deep).expect("create");
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&root), 0o755, "an existing directory keeps its mode");
        ensure_prefix(&root.join("p")).expect("prefix");
        assert_eq!(mode(&root.join("p")), 0o700);
        std::fs::write(root.join("f"), "").expect("write");
        let err = ensure_prefix(&root.join("f")).expect_err("a file is no prefix");
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn created_files_are_0600() {
        let root = tmp_dir("files");
        let log = root.join("logs").join("error.log");
        let mut f = open_append(&log).expect("open");
        f.write_all(b"x").expect("write");
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(&root.join("logs")), 0o700);

        let p = root.join("cluster-config.json.gz");
        write_atomic(&p, b"one").expect("write");
        // The file is the renamed temp file: its mode is the temp file's.
        assert_eq!(mode(&p), 0o600);
        // Replacing a file someone made world-readable tightens it.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_stale_temp_file_is_replaced_not_written_through() {
        let root = tmp_dir("stale");
        std::fs::create_dir(&root).expect("mkdir");
        let p = root.join("kong.id");
        let tmp = root.join(format!(".kong.id.tmp-{}", std::process::id()));
        let elsewhere = root.join("elsewhere");
        std::fs::write(&elsewhere, "untouched").expect("write");
        std::os::unix::fs::symlink(&elsewhere, &tmp).expect("symlink");
        write_atomic(&p, b"id").expect("write");
        assert_eq!(std::fs::read(&elsewhere).expect("read"), b"untouched");
        assert_eq!(std::fs::read(&p).expect("read"), b"id");
        assert_eq!(mode(&p), 0o600);
        let _ = std::fs::remove_dir_all(&root);
    }
}
