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

    let mut te_seen = false;
    for line in lines {
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
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(bad("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(bad("header line without colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad("invalid header name"));
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
            if te_seen {
                return Err(bad("duplicate Transfer-Encoding header"));
            }
            te_seen = true;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Reject {
                    status: 501,
                    reason: "unknown Transfer-Encoding",
                });
            }
            info.chunked = true;
        }
    }
    if info.chunked {
        if info.http10 {
            return Err(bad("HTTP/1.0 request with Transfer-Encoding"));
        }
        if info.content_length.is_some() {
            return Err(bad("Content-Length and Transfer-Encoding together"));
        }
    }
    if !info.http10 && !info.has_host {
        return Err(bad("HTTP/1.1 request without Host header"));
    }
    Ok(info)
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
