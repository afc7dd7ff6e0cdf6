//! The `file-log` plugin (Kong's `kong/plugins/file-log`): each request's
//! serialized log entry, one JSON object per line, appended to `path`.
//!
//! Kong writes from the log phase with a file descriptor cached per path
//! (`O_WRONLY|O_CREAT|O_APPEND`, mode 0644), closed and reopened on every
//! entry when `reopen` is set; a file removed while cached keeps receiving
//! the entries of `reopen: false` instances (they are lost), and an open
//! that fails is logged as `[file-log] failed to open the file: <reason>`.
//! Here one writer thread keeps that cache and does the writes, so a slow
//! disk never holds up a request: entries reach it through a bounded
//! channel, in order.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use config_sync::schema::{boolean, string, Check, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;

use super::http_log::PROTOCOLS_ALL;
use super::log_io::{self, LogIo};
use super::{log_serializer, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "file-log";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 9,
    version: VERSION,
    schema,
    build,
};

/// Kong's `path` pattern, `^[^%s*&%%\`][^*&%%\`]*[^%s*&%%\`]$` (Lua's `%s`
/// is the ASCII white space).
const PATH_PATTERN: &str = r"^[^ \t\n\x0B\x0C\r*&%\\`][^*&%\\`]*[^ \t\n\x0B\x0C\r*&%\\`]$";

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            (
                "path",
                // The field's `err` replaces every validator's message,
                // the empty string's `len_min` one too: an explicit
                // (no-op) `len_min` lets the pattern report it.
                string()
                    .required()
                    .check(Check::LenMin(0))
                    .matches(PATH_PATTERN, Some("not a valid filename")),
            ),
            ("reopen", boolean().required().default(false)),
            ("custom_fields_by_lua", log_serializer::lua_code_refused()),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_ALL,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// A validated `config`.
#[derive(Debug, Clone, Deserialize)]
pub struct FileLogConfig {
    pub path: String,
    pub reopen: bool,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: FileLogConfig =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    Ok(Arc::new(FileLog {
        path: cfg.path.into(),
        reopen: cfg.reopen,
    }))
}

struct FileLog {
    path: Arc<str>,
    reopen: bool,
}

impl Plugin for FileLog {
    fn phases(&self) -> Phases {
        Phases::LOG
    }

    fn log(&self, kong: &mut Kong<'_>) {
        let mut line = log_serializer::serialize(kong).to_string();
        line.push('\n');
        let Some(tx) = writer(&kong.env().io) else {
            log::error!("[{NAME}] no writer thread: entry dropped");
            return;
        };
        let entry = Entry {
            path: self.path.clone(),
            reopen: self.reopen,
            line,
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Entry(entry)) {
            log::error!("[{NAME}] the file writer is behind: entry dropped");
        }
    }
}

pub(super) struct Entry {
    path: Arc<str>,
    reopen: bool,
    line: String,
}

pub(super) enum Msg {
    Entry(Entry),
    /// Answered once everything sent before it is written.
    Flush(SyncSender<()>),
}

/// Waits (up to `max`) until the entries handed to the writer so far are
/// written (shutdown).
pub(super) fn flush(io: &LogIo, max: std::time::Duration) {
    let Some(tx) = writer(io) else { return };
    let (done_tx, done_rx) = sync_channel(1);
    if tx.try_send(Msg::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(max);
    }
}

/// Entries waiting for the writer; beyond this many, entries are dropped
/// rather than holding up requests.
const BACKLOG: usize = 64 * 1024;

/// The writer thread's inbox, started on first use; the thread ends when
/// `io` is dropped.
fn writer(io: &LogIo) -> Option<&SyncSender<Msg>> {
    io.file_writer
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Msg>(BACKLOG);
            let spawned = std::thread::Builder::new()
                .name("gw-file-log".into())
                .spawn(move || {
                    let mut files = Files::default();
                    for msg in rx {
                        match msg {
                            Msg::Entry(e) => files.write(&e.path, e.reopen, e.line.as_bytes()),
                            Msg::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    log::error!("[{NAME}] cannot start the writer thread: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Kong's per-path descriptor cache (`file_descriptors`).
#[derive(Default)]
struct Files {
    open: HashMap<Arc<str>, File>,
}

impl Files {
    fn write(&mut self, path: &Arc<str>, reopen: bool, line: &[u8]) {
        if reopen {
            // Closed here, so a descriptor cached by an earlier
            // configuration is closed too.
            self.open.remove(path);
        }
        if !self.open.contains_key(path) {
            let opened = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(&**path);
            match opened {
                Ok(f) => {
                    self.open.insert(path.clone(), f);
                }
                Err(e) => {
                    log::error!(
                        "[{NAME}] failed to open the file: {} while logging request",
                        log_io::io_error(&e)
                    );
                    return;
                }
            }
        }
        if let Some(f) = self.open.get_mut(path) {
            if let Err(e) = f.write_all(line) {
                log::error!("[{NAME}] failed to write to the file '{path}': {e}");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! spec/03-plugins/04-file-log/02-schema_spec.lua, and the descriptor
    //! cache of 01-log_spec.lua.
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::{json, Value};

    fn validate(config: Value) -> Result<Value, Vec<(String, String)>> {
        validate_record(&schema().config, &config, "config")
            .map_err(|e| e.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn accepts_a_valid_path_and_fills_reopen() {
        let v = validate(json!({"path": "/tmp/log.txt"})).unwrap();
        assert_eq!(v["reopen"], false);
        assert!(validate(json!({"path": "/tmp/log.txt", "reopen": true})).is_ok());
    }

    #[test]
    fn rejects_invalid_filenames() {
        for p in [
            "/ends/with/space ",
            " /starts/with/space",
            "/has/*/star",
            "/has/&/amp",
            "/has/%/percent",
            "/has/`/backtick",
            "/has/\\/backslash",
            "x",
            "",
        ] {
            assert_eq!(
                validate(json!({ "path": p })).unwrap_err(),
                vec![(
                    "config.path".to_string(),
                    "not a valid filename".to_string()
                )],
                "{p:?}"
            );
        }
        // Spaces inside the name are fine.
        assert!(validate(json!({"path": "/tmp/my log.txt"})).is_ok());
    }

    #[test]
    fn requires_a_path() {
        assert_eq!(
            validate(json!({})).unwrap_err(),
            vec![(
                "config.path".to_string(),
                "required field missing".to_string()
            )]
        );
    }

    #[test]
    fn custom_fields_by_lua_are_refused() {
        let e = validate(json!({"path": "/tmp/x.log", "custom_fields_by_lua": {"a": "return 1"}}))
            .unwrap_err();
        assert_eq!(e[0].0, "config.custom_fields_by_lua");
        // An empty map asks for nothing.
        assert!(validate(json!({"path": "/tmp/x.log", "custom_fields_by_lua": {}})).is_ok());
    }

    fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("gw-file-log-{tag}-{}", std::process::id()))
    }

    #[test]
    fn reopen_recreates_a_removed_file_and_a_kept_descriptor_does_not() {
        let p = temp_path("reopen");
        let path: Arc<str> = p.to_string_lossy().into();
        let mut files = Files::default();
        files.write(&path, true, b"one\n");
        std::fs::remove_file(&p).unwrap();
        // Kept descriptor: the line goes to the removed file.
        files.write(&path, false, b"lost\n");
        assert!(!p.exists());
        // Reopened: created again.
        files.write(&path, true, b"two\n");
        files.write(&path, false, b"three\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\nthree\n");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_missing_directory_is_no_file() {
        let p = temp_path("nodir").join("file");
        let path: Arc<str> = p.to_string_lossy().into();
        let mut files = Files::default();
        files.write(&path, true, b"x\n");
        assert!(!p.exists());
        assert!(files.open.is_empty());
    }
}
