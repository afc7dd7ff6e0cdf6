//! The declarative config decoder and validator
//! (`config_sync::parse_declarative_str`) on arbitrary UTF-8 text, YAML or
//! JSON, with the default options (no plugins available). Errors are fine;
//! a panic, a stack overflow, a timeout or running out of memory is not.
#![no_main]

use config_sync::{parse_declarative_str, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_declarative_str(text, &ParseOptions::default());
    }
});
