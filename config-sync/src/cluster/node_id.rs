//! The node id: a UUID persisted in `<prefix>/kong.id` (bare UUID, no
//! newline), reused across restarts so the CP sees one node
//! (`kong/pdk/private/node.lua`).

use std::path::Path;

use uuid::Uuid;

pub const NODE_ID_FILE: &str = "kong.id";

/// Reads the persisted id, or creates (and persists) a new one when the
/// file is missing or holds no valid UUID, as Kong does.
pub fn load_or_create(prefix: &Path) -> std::io::Result<Uuid> {
    let path = prefix.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(id) = Uuid::parse_str(text.trim()) {
                return Ok(id);
            }
            log::debug!("{} holds an invalid uuid; replacing it", path.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = Uuid::new_v4();
    crate::private_fs::write_atomic(&path, id.to_string().as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_and_reused() {
        let dir = std::env::temp_dir().join(format!("cs-nodeid-{}", Uuid::new_v4()));
        let a = load_or_create(&dir).expect("create");
        let b = load_or_create(&dir).expect("reuse");
        assert_eq!(a, b);
        let text = std::fs::read_to_string(dir.join(NODE_ID_FILE)).expect("read");
        assert_eq!(text, a.to_string());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(NODE_ID_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700, "a missing prefix is created private");
        std::fs::write(dir.join(NODE_ID_FILE), "garbage").expect("write");
        let c = load_or_create(&dir).expect("replace");
        assert_ne!(c, a);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
