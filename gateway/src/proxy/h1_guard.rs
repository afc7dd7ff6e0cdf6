//! Strict checks of the raw HTTP/1.x request head, as nginx (and so Kong)
//! applies them.
//!
//! Pingora's parser is more lenient than nginx: it accepts Content-Length
//! together with Transfer-Encoding (dropping Content-Length), and allows a
//! 1 MiB header. Anything ambiguous must be refused before it is forwarded,
//! so the raw bytes Pingora kept are scanned once more here.

/// Size limits, from `large_client_header_buffers` (default `4 8k`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request line or header line.
    pub line_max: usize,
    /// Largest whole header block (number of buffers x buffer size).
    pub total_max: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            line_max: 8 * 1024,
            total_max: 4 * 8 * 1024,
        }
    }
}

/// Why a request head was refused: the status to answer with and a log reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Reject {
    Reject {
        status: 400,
        reason,
    }
}

/// Facts about the head that the proxy needs later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadInfo {
    pub http10: bool,
    pub has_host: bool,
    pub chunked: bool,
    pub content_length: Option<u64>,
    /// Some header line must be dropped before the head goes on: a name
    /// with `_` (see `underscores_in_headers`) or with a byte nginx ignores.
    pub filter_fields: bool,
}

/// RFC 9110 `tchar`, as a table: checked for every byte of every field
/// name, twice per request (front and `request_filter`).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Scans a complete request head (request line + fields + blank line).
pub fn check_request_head(raw: &[u8], limits: &HeadLimits) -> Result<HeadInfo, Reject> {
    if raw.len() > limits.total_max {
        return Err(Reject {
            status: 494,
            reason: "request header too large",
        });
    }
    let mut lines = split_lines(raw);
    // nginx skips empty lines before the request line.
    let request_line = loop {
        match lines.next() {
            Some(Ok([])) => continue,
            Some(Ok(l)) => break l,
            Some(Err(r)) => return Err(r),
            None => return Err(bad("empty request")),
        }
    };
    if request_line.len() > limits.line_max {
        return Err(Reject {
            status: 414,
            reason: "request line too long",
        });
    }
    let mut info = check_request_line(request_line)?;

    // Transfer-Encoding is judged once every line has been read, as nginx
    // does: a malformed line anywhere (a fold, say) is a 400 before any 501.
    let mut te_chunked: Option<bool> = None;
    let mut lines = lines.peekable();
    while let Some(line) = lines.next() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        if line.len() > limits.line_max {
            return Err(Reject {
                status: 494,
                reason: "header line too long",
            });
        }
        // A fold continues the previous line: refuse it before that line's
        // value is read (`Transfer-Encoding:` + ` chunked` is a fold, not 501).
        let folded = |l: &[u8]| matches!(l.first(), Some(b' ' | b'\t'));
        if folded(line) || matches!(lines.peek(), Some(Ok(next)) if folded(next)) {
            return Err(bad("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(bad("header line without colon"))?;
        let name = &line[..colon];
        if name.is_empty() {
            return Err(bad("invalid header name"));
        }
        match name_class(name) {
            NameClass::Plain => {}
            NameClass::Refused => return Err(bad("invalid header name")),
            // Dropped by the front (nginx `ignore_invalid_headers`, and
            // `underscores_in_headers`); never read as anything here.
            NameClass::Ignored | NameClass::Underscore => {
                info.filter_fields = true;
                continue;
            }
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad("control character in header value"));
        }
        if name.eq_ignore_ascii_case(b"host") {
            if info.has_host {
                return Err(bad("duplicate Host header"));
            }
            check_host(value)?;
            info.has_host = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if info.content_length.is_some() {
                return Err(bad("duplicate Content-Length header"));
            }
            info.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_chunked.is_some() {
                return Err(bad("duplicate Transfer-Encoding header"));
            }
            te_chunked = Some(value.eq_ignore_ascii_case(b"chunked"));
        }
    }
    if !info.http10 && !info.has_host {
        return Err(bad("HTTP/1.1 request without Host header"));
    }
    // nginx's order (ngx_http_process_request_header): HTTP/1.0, then the
    // coding, then the pairing with Content-Length.
    match te_chunked {
        None => {}
        Some(_) if info.http10 => return Err(bad("HTTP/1.0 request with Transfer-Encoding")),
        Some(false) => {
            return Err(Reject {
                status: 501,
                reason: "unknown Transfer-Encoding",
            })
        }
        Some(true) if info.content_length.is_some() => {
            return Err(bad("Content-Length and Transfer-Encoding together"))
        }
        Some(true) => info.chunked = true,
    }
    Ok(info)
}

/// How nginx (as Kong configures it) treats a header name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameClass {
    /// Letters, digits and `-` only.
    Plain,
    /// Holds `_` (and otherwise only valid bytes): valid with Kong's
    /// `underscores_in_headers on`, ignored with it off.
    Underscore,
    /// Holds another byte outside `[A-Za-z0-9_-]`: nginx ignores the line
    /// (`ignore_invalid_headers on`, its default).
    Ignored,
    /// A control byte, space or DEL: nginx refuses the request.
    Refused,
}

/// Byte classes for [`name_class`]: 0 plain, 1 underscore, 2 ignored, 3 refused.
static NAME_BYTE: [u8; 256] = {
    let mut t = [2u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphanumeric() || b == b'-' {
            0
        } else if b == b'_' {
            1
        } else if b <= 0x20 || b == 0x7f {
            3
        } else {
            2
        };
        i += 1;
    }
    t
};

pub(crate) fn name_class(name: &[u8]) -> NameClass {
    let mut worst = 0u8;
    for &b in name {
        worst = worst.max(NAME_BYTE[usize::from(b)]);
    }
    match worst {
        0 => NameClass::Plain,
        1 => NameClass::Underscore,
        2 => NameClass::Ignored,
        _ => NameClass::Refused,
    }
}

/// Checks the start of a request head that has not ended yet, so bytes that
/// can never become a request (a TLS ClientHello, binary junk) are refused at
/// once instead of waiting for a line end, as nginx refuses them on the first
/// bad byte of the request line.
pub fn check_partial_request_line(buf: &[u8]) -> Result<(), Reject> {
    // nginx skips empty lines first (the front has dropped whole ones).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = match line.iter().position(|&b| b == b'\n') {
        // A complete request line is checked in full now.
        Some(end) => {
            let l = &line[..end];
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if l.contains(&b'\r') {
                return Err(bad("bare CR in request line"));
            }
            return check_request_line(l).map(|_| ());
        }
        None => line,
    };
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    if !method
        .iter()
        .all(|&b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err(bad("invalid method"));
    }
    if let Some(target) = parts.next() {
        if method.is_empty() {
            return Err(bad("invalid method"));
        }
        if target.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(bad("invalid request target"));
        }
    }
    if let Some(version) = parts.next() {
        // "HTTP/" then digits and one dot; a trailing CR may be waiting for its LF.
        let version = version.strip_suffix(b"\r").unwrap_or(version);
        let prefix = &b"HTTP/"[..version.len().min(5)];
        if version.len() > 12
            || !version.starts_with(prefix)
            || !version
                .iter()
                .skip(5)
                .all(|&b| b.is_ascii_digit() || b == b'.')
        {
            return Err(bad("invalid HTTP version"));
        }
    }
    Ok(())
}

/// Splits on LF, dropping one CR before it; a CR anywhere else is refused.
fn split_lines(raw: &[u8]) -> impl Iterator<Item = Result<&[u8], Reject>> {
    raw.split(|&b| b == b'\n').map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        // One pass for both; which one it was only matters for the reason.
        if !l.iter().any(|&b| b == b'\r' || b == 0) {
            Ok(l)
        } else if l.contains(&b'\r') {
            Err(bad("bare CR in request head"))
        } else {
            Err(bad("NUL in request head"))
        }
    })
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

fn check_request_line(line: &[u8]) -> Result<HeadInfo, Reject> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().ok_or(bad("request line without target"))?;
    let version = parts.next().ok_or(bad("request line without version"))?;
    if parts.next().is_some() {
        return Err(bad("extra spaces in request line"));
    }
    // nginx only knows methods made of upper-case letters, '_' and '-'.
    if method.is_empty()
        || !method
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err(bad("invalid method"));
    }
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f || b == b'#') {
        return Err(bad("invalid request target"));
    }
    let origin_form = target[0] == b'/';
    let absolute_form = target.len() > 7
        && (target[..7].eq_ignore_ascii_case(b"http://")
            || target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://"));
    if !origin_form && !absolute_form {
        return Err(bad("invalid request target form"));
    }
    // nginx refuses bad escapes and climbs above `/` before anything routes.
    let path = if origin_form {
        target
    } else {
        let rest = target
            .windows(3)
            .position(|w| w == b"://")
            .map_or(&target[..0], |i| &target[i + 3..]);
        let slash = rest.iter().position(|&b| b == b'/' || b == b'?');
        slash.map_or(&rest[..0], |i| &rest[i..])
    };
    let path = path
        .iter()
        .position(|&b| b == b'?')
        .map_or(path, |q| &path[..q]);
    crate::router::check_request_path(path).map_err(|e| bad(e.reason()))?;
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major >= b'2' =>
        {
            return Err(Reject {
                status: 505,
                reason: "unsupported HTTP version",
            })
        }
        _ => return Err(bad("invalid HTTP version")),
    };
    Ok(HeadInfo {
        http10,
        ..HeadInfo::default()
    })
}

fn parse_content_length(v: &[u8]) -> Result<u64, Reject> {
    const INVALID: Reject = bad("invalid Content-Length header");
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(INVALID);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(INVALID)
}

/// nginx's `ngx_http_validate_host`: no '/', '\', NUL, no ".." and no empty
/// value; a trailing dot is allowed.
fn check_host(v: &[u8]) -> Result<(), Reject> {
    const INVALID: Reject = bad("invalid Host header");
    if v.is_empty() {
        return Err(INVALID);
    }
    let mut prev_dot = false;
    let mut in_brackets = false;
    for (i, &b) in v.iter().enumerate() {
        match b {
            b'.' => {
                if prev_dot || i == 0 {
                    return Err(INVALID);
                }
                prev_dot = true;
                continue;
            }
            b'[' if i == 0 => in_brackets = true,
            b']' => in_brackets = false,
            b'/' | b'\\' | b' ' | b'\t' | b'@' | b'?' | b'#' => return Err(INVALID),
            b if b < 0x21 || b == 0x7f => return Err(INVALID),
            _ => {}
        }
        prev_dot = false;
    }
    if in_brackets {
        return Err(INVALID);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<HeadInfo, Reject> {
        check_request_head(raw.as_bytes(), &HeadLimits::default())
    }

    fn status(raw: &str) -> u16 {
        match check(raw) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn tchar_table_matches_rfc9110() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), want, "byte {b:#x}");
        }
    }

    #[test]
    fn plain_requests_pass() {
        let i = check("GET /a?b=c HTTP/1.1\r\nHost: x.test\r\nAccept: */*\r\n\r\n").unwrap();
        assert!(i.has_host && !i.http10 && !i.chunked);
        let i = check("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(i.chunked);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(
            status("GET / HTTP/1.1\nHost: x\n\n"),
            200,
            "bare LF is tolerated"
        );
        assert_eq!(status("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n"), 200);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551621\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\n Host: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        ];
        for c in cases {
            assert_eq!(status(c), 400, "{c:?}");
        }
    }

    #[test]
    fn unknown_transfer_codings_are_not_implemented() {
        for te in [
            "xchunked",
            "chunked, identity",
            "identity, chunked",
            "\"chunked\"",
            "gzip",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(status(&raw), 501, "{te}");
        }
    }

    #[test]
    fn request_line_rules() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "missing Host");
        assert_eq!(status("get / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / http/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1x\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status("GET /\r\n\r\n"), 400, "HTTP/0.9");
        assert_eq!(status("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET x.test:80 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn host_rules() {
        for h in ["a/b", "a..b", ".a", "a b", "a\\b", "[::1", "u@h"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
            assert_eq!(status(&raw), 400, "{h}");
        }
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400,
            "duplicate Host"
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a.test.\r\n\r\n"), 200);
    }

    #[test]
    fn partial_request_lines() {
        for ok in [
            &b""[..],
            b"G",
            b"GET",
            b"GET ",
            b"GET /a",
            b"GET /a HT",
            b"GET /a HTTP/1.",
            b"GET /a HTTP/1.1\r",
            b"\r\nGET /",
            b"GET / HTTP/1.1\r\nHost: x",
        ] {
            assert_eq!(check_partial_request_line(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            &[0x16u8, 0x03, 0x01][..],
            b"get",
            b"GET /\x01",
            b"GET / XTTP",
            b"GET / HTTP/1.1x",
            b" GET",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"GET /a\rb HTTP/1.1\r\n",
        ] {
            assert_eq!(
                check_partial_request_line(bad).map_err(|r| r.status),
                Err(400),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_fold_is_400_before_any_501() {
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nX: 1\r\n\tmore\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400,
            "missing Host comes first, as in nginx"
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
    }

    #[test]
    fn ignored_and_underscore_names_are_flagged_not_read() {
        let i = check(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\nContent.Length: 5\r\n\r\n",
        )
        .unwrap();
        assert!(i.filter_fields && !i.chunked && i.content_length.is_none());
        let i = check("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n").unwrap();
        assert!(!i.filter_fields);
        assert_eq!(name_class(b"X-A1"), NameClass::Plain);
        assert_eq!(name_class(b"api_key"), NameClass::Underscore);
        assert_eq!(name_class(b"X.A"), NameClass::Ignored);
        assert_eq!(name_class(b"X(A"), NameClass::Ignored);
        assert_eq!(name_class(b"caf\xe9"), NameClass::Ignored);
        assert_eq!(name_class(b"X A"), NameClass::Refused);
        assert_eq!(name_class(b"X\x7fA"), NameClass::Refused);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n"), 400);
    }

    #[test]
    fn size_limits() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_uri), 414);
        let long_field = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(status(&long_field), 494);
        let many: String = (0..5)
            .map(|i| format!("X-{i}: {}\r\n", "a".repeat(8000)))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(status(&raw), 494);
    }
}
