//! `gateway::proxy::proxy_protocol::parse` (the PROXY header reader of
//! `proxy_protocol` listeners, over the `ppp` crate) on arbitrary bytes.
//!
//! Never panics; a header it finds is at most the bytes given, within
//! nginx's limits (107 bytes for a v1 line, ending in CRLF; 4096 for v2),
//! and parses the same on its own (it is self-delimiting, so what follows
//! it never changes it); every shorter prefix of it is `Incomplete`, never
//! refused (the reader gets the header in arbitrary pieces from the
//! socket); and `Incomplete` is only said below the 4096-byte bound.
#![no_main]

use gateway::proxy::proxy_protocol::{parse, Parsed, MAX_HEADER, V1_MAX_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Header { len, addrs }) => {
            assert!(len > 0 && len <= data.len() && len <= MAX_HEADER);
            let head = &data[..len];
            if head.starts_with(b"PROXY ") {
                assert!(len <= V1_MAX_HEADER, "v1 line of {len} bytes");
                assert!(head.ends_with(b"\r\n"), "v1 line without CRLF");
            }
            assert_eq!(
                parse(head),
                Ok(Parsed::Header { len, addrs }),
                "not self-delimiting"
            );
            // Cut points: every one for short headers, a spread otherwise.
            let step = (len / 64).max(1);
            for i in (1..len).step_by(step) {
                assert_eq!(
                    parse(&data[..i]),
                    Ok(Parsed::Incomplete),
                    "prefix {i} of {len}"
                );
            }
        }
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_HEADER),
        Err(_) => {}
    }
});
