//! Request-path checks and normalisation (`gateway::router`, uri.rs).
//!
//! * `check_request_path` (raw bytes) and `normalize_path` (any UTF-8) never
//!   panic;
//! * `normalize_path` is idempotent on paths starting with '/' that
//!   `check_request_path` accepts (nginx refuses the rest before routing,
//!   and a `%` that starts no escape can form one with what follows it, as
//!   in Kong's single decoding pass: `%%341` -> `%41` -> `A`);
//! * a path that `check_request_path` accepts, has no '%' and starts with
//!   '/' normalises to a path that still starts with '/'.
#![no_main]

use gateway::router::{check_request_path, normalize_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checked = check_request_path(data);
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let once = normalize_path(path);
    if path.starts_with('/') {
        if checked.is_ok() {
            idempotent(path, &once);
        }
        if checked.is_ok() && !path.contains('%') {
            assert!(
                once.starts_with('/'),
                "accepted path {path:?} normalises to {once:?}"
            );
        }
    } else {
        // Every input also as an absolute path, so the idempotence property
        // sees all of them.
        let rooted = format!("/{path}");
        if check_request_path(rooted.as_bytes()).is_ok() {
            idempotent(&rooted, &normalize_path(&rooted));
        }
    }
});

fn idempotent(path: &str, once: &str) {
    let twice = normalize_path(once);
    assert_eq!(
        once, &*twice,
        "normalize_path is not idempotent: {path:?} -> {once:?} -> {twice:?}"
    );
}
