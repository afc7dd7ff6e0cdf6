//! `gateway::proxy::h1_guard::check_request_head` on arbitrary bytes.
//!
//! Never panics; and whatever it accepts with a complete head must also be a
//! complete request to `httparse` (Pingora's parser, which reads the same
//! bytes next), ending at the same byte, with the same framing facts
//! (Content-Length, chunked) and the same version / Host facts. A checker
//! and a parser that disagree on framing is what request smuggling is made
//! of.
//!
//! Each input is checked as is and, when it has no head end, once more with
//! "\r\n\r\n" appended (the checker also accepts a head without its blank
//! line; httparse would only call that partial).
//!
//! httparse is given what the H1 front hands Pingora, not the raw bytes,
//! where the two differ by design:
//! * header lines whose name nginx ignores (`ignore_invalid_headers`,
//!   `underscores_in_headers off`) are accepted by the checker, flagged with
//!   `HeadInfo::filter_fields`, and dropped by the front: they are dropped
//!   here too (and the flag must be set exactly when there are such lines);
//! * like nginx, the checker lets raw non-ASCII bytes through in the request
//!   target, while httparse refuses a target that is not UTF-8
//!   (`Error::Token`). Pingora answers that error by percent-encoding the
//!   target and parsing again (`escape_illegal_request_line`), so that is
//!   what is compared then.
#![no_main]

use gateway::proxy::h1_guard::{check_request_head, HeadLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits::default();
    check(data, &limits);
    if head_end(data).is_none() {
        let mut v = Vec::with_capacity(data.len() + 4);
        v.extend_from_slice(data);
        v.extend_from_slice(b"\r\n\r\n");
        check(&v, &limits);
    }
});

fn check(raw: &[u8], limits: &HeadLimits) {
    let Ok(info) = check_request_head(raw, limits) else {
        return;
    };
    // Accepted without a blank line: nothing to compare with a complete parse.
    let Some(end) = head_end(raw) else {
        return;
    };
    let shown = String::from_utf8_lossy(&raw[..end]);

    let (mut head, dropped) = forwarded_head(&raw[..end]);
    assert_eq!(
        dropped, info.filter_fields,
        "filter_fields disagrees with the header names: {info:?}, head {shown:?}"
    );
    // Enough header slots for any head: at most one header per line.
    let slots = head.iter().filter(|&&b| b == b'\n').count() + 1;
    let non_ascii_target = target_of(&head).is_some_and(|t| !head[t].is_ascii());
    if non_ascii_target {
        let mut headers = vec![httparse::EMPTY_HEADER; slots];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&head) == Err(httparse::Error::Token) {
            head = escape_target(&head);
        }
    }

    let mut headers = vec![httparse::EMPTY_HEADER; slots];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(len)) => assert_eq!(
            len,
            head.len(),
            "head end differs: guard {}, httparse {len}, {info:?}, head {shown:?}",
            head.len()
        ),
        other => panic!("guard accepted ({info:?}) what httparse refuses ({other:?}): {shown:?}"),
    }

    let seen = Facts::of(&req);
    assert_eq!(
        seen.content_length,
        Ok(info.content_length),
        "Content-Length differs: guard {info:?}, httparse {seen:?}, head {shown:?}"
    );
    assert_eq!(
        seen.chunked, info.chunked,
        "chunked differs: guard {info:?}, httparse {seen:?}, head {shown:?}"
    );
    assert!(
        !(seen.has_te && !info.chunked),
        "Transfer-Encoding accepted but not chunked: {info:?}, head {shown:?}"
    );
    assert!(
        !(info.chunked && info.content_length.is_some()),
        "both chunked and Content-Length: {info:?}, head {shown:?}"
    );
    assert_eq!(
        seen.http10, info.http10,
        "version differs: guard {info:?}, httparse {seen:?}, head {shown:?}"
    );
    assert_eq!(
        seen.has_host, info.has_host,
        "Host differs: guard {info:?}, httparse {seen:?}, head {shown:?}"
    );
}

/// The head (up to and including its blank line) as the H1 front hands it
/// to Pingora, as far as parsing goes: header lines whose name nginx ignores
/// (any byte outside `[A-Za-z0-9-]`, `_` included: Kong's default
/// `underscores_in_headers off`) are dropped. Returns whether any was.
fn forwarded_head(head: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(head.len());
    let mut dropped = false;
    let mut request_line_seen = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            out.extend_from_slice(line);
            continue;
        }
        if request_line_seen {
            let name = content.split(|&b| b == b':').next().unwrap_or_default();
            if !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
                dropped = true;
                continue;
            }
        }
        request_line_seen = true;
        out.extend_from_slice(line);
    }
    (out, dropped)
}

/// The head's framing as read from httparse's result, per RFC 9112.
#[derive(Debug)]
struct Facts {
    /// `Err` when there are several Content-Length fields or one that is not
    /// a plain decimal u64.
    content_length: Result<Option<u64>, &'static str>,
    has_te: bool,
    /// The final transfer coding (over all Transfer-Encoding fields) is chunked.
    chunked: bool,
    http10: bool,
    has_host: bool,
}

impl Facts {
    fn of(req: &httparse::Request<'_, '_>) -> Facts {
        let mut cl: Vec<&[u8]> = Vec::new();
        let mut last_coding: Option<&[u8]> = None;
        let mut has_te = false;
        let mut has_host = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                has_te = true;
                if let Some(c) = h.value.split(|&b| b == b',').map(trim_ows).last() {
                    last_coding = Some(c);
                }
            } else if h.name.eq_ignore_ascii_case("host") {
                has_host = true;
            }
        }
        let content_length = match cl.as_slice() {
            [] => Ok(None),
            [v] => {
                let v = trim_ows(v);
                if !v.is_empty() && v.iter().all(u8::is_ascii_digit) {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .map(Some)
                        .ok_or("Content-Length out of range")
                } else {
                    Err("invalid Content-Length")
                }
            }
            _ => Err("several Content-Length fields"),
        };
        Facts {
            content_length,
            has_te,
            chunked: last_coding.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")),
            http10: req.version == Some(0),
            has_host,
        }
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The request target: the second word of the first non-empty line (the
/// guard accepted the head, so it is there between two single spaces).
fn target_of(raw: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let line_end = raw[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |i| start + i);
    let line = &raw[start..line_end];
    let sp1 = line.iter().position(|&b| b == b' ')?;
    let sp2 = sp1 + 1 + line[sp1 + 1..].iter().position(|&b| b == b' ')?;
    Some(start + sp1 + 1..start + sp2)
}

/// What Pingora parses after httparse's `Token` error: the same bytes with
/// the target's non-ASCII bytes percent-encoded (pingora-core
/// `escape_illegal_request_line`; the other bytes it would encode, controls
/// and space, never pass the guard and '<', '>', '"' are valid to httparse).
fn escape_target(raw: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let Some(t) = target_of(raw) else {
        return raw.to_vec();
    };
    let mut out = Vec::with_capacity(raw.len() + 2 * t.len());
    out.extend_from_slice(&raw[..t.start]);
    for &b in &raw[t.clone()] {
        if b.is_ascii() {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out.extend_from_slice(&raw[t.end..]);
    out
}

/// Where the head ends as the guard reads it: just after the first empty
/// line (LF, optionally preceded by one CR) that follows the request line;
/// empty lines before the request line are skipped, as nginx and httparse
/// do. `None` without such a line.
fn head_end(raw: &[u8]) -> Option<usize> {
    let mut start = 0;
    let mut request_line_seen = false;
    while let Some(nl) = raw[start..].iter().position(|&b| b == b'\n') {
        let nl = start + nl;
        let line = &raw[start..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            request_line_seen = true;
        } else if request_line_seen {
            return Some(nl + 1);
        }
        start = nl + 1;
    }
    None
}
