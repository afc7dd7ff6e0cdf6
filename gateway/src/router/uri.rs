//! Path helpers with Kong's semantics: `kong/tools/uri.lua` (normalize, escape)
//! and `kong/router/utils.lua` (get_upstream_uri_v0, sanitize_uri_postfix).

use std::borrow::Cow;

/// RFC 3986 reserved characters (plus `%`): Kong never decodes these because
/// decoding would change the meaning of the path.
fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'*'
            | b'\''
            | b'('
            | b')'
            | b';'
            | b':'
            | b'@'
            | b'&'
            | b'='
            | b'+'
            | b'$'
            | b','
            | b'/'
            | b'?'
            | b'%'
            | b'#'
            | b'['
            | b']'
    )
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One pass of Kong's `%XX` handling: every escape is decoded except those
/// of reserved characters, whose hex is upper-cased.
fn percent_pass(uri: &str) -> Vec<u8> {
    let b = uri.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                let v = h * 16 + l;
                if is_reserved(v) {
                    out.push(b'%');
                    out.push(b[i + 1].to_ascii_uppercase());
                    out.push(b[i + 2].to_ascii_uppercase());
                } else {
                    out.push(v);
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Decoded bytes as a path: bytes that do not form valid UTF-8 (Kong's
/// router would take them as they are; ours works on `str`) are escaped
/// again, upper-case, and only those: the rest stays decoded, so a second
/// normalisation changes nothing.
fn utf8_or_escaped(mut bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by `valid_up_to`'s contract.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1);
                for &x in &rest[..bad] {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(x >> 4)]));
                    out.push(char::from(HEX[usize::from(x & 0xF)]));
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// Kong's `normalize(uri, true)`: percent-decodes everything except reserved
/// characters (whose escapes get upper-case hex), removes dot segments and
/// merges `//`.
///
/// Deviation: decoded bytes that are not valid UTF-8 are kept escaped
/// (upper-cased), each on its own; valid sequences around them are decoded.
pub fn normalize_path(raw: &str) -> Cow<'_, str> {
    if raw.is_empty() || raw == "/" {
        return Cow::Borrowed(raw);
    }
    let mut uri: Cow<'_, str> = Cow::Borrowed(raw);
    if raw.contains('%') {
        uri = Cow::Owned(utf8_or_escaped(&percent_pass(raw)));
    }
    if !uri.contains('.') && !uri.contains("//") {
        return uri;
    }
    Cow::Owned(remove_dot_segments(&uri))
}

/// Port of the segment loop of Kong's `normalize` (merge_slashes = true).
fn remove_dot_segments(input: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut uri = input;
    while !uri.is_empty() {
        let b = uri.as_bytes();
        let at = |i: usize| b.get(i).copied();
        if uri == "/." {
            uri = "/";
        } else if uri == "/.." {
            uri = "/";
            out.pop();
        } else if uri == "." || uri == ".." {
            uri = "";
        } else if at(0) == Some(b'.') && at(1) == Some(b'.') && at(2) == Some(b'/') {
            uri = &uri[3..];
        } else if (at(0) == Some(b'.') && at(1) == Some(b'/'))
            || (at(0) == Some(b'/') && at(1) == Some(b'.') && at(2) == Some(b'/'))
        {
            // "./" and "/./" both drop two bytes
            uri = &uri[2..];
        } else if at(0) == Some(b'/')
            && at(1) == Some(b'.')
            && at(2) == Some(b'.')
            && at(3) == Some(b'/')
        {
            uri = &uri[3..];
            out.pop();
        } else if at(0) == Some(b'/') && at(1) == Some(b'/') {
            uri = &uri[1..];
        } else {
            // A segment runs up to (not including) the next '/' after the first byte.
            let end = b
                .iter()
                .skip(1)
                .position(|&c| c == b'/')
                .map_or(b.len(), |p| p + 1);
            // `end` is at an ASCII '/' or the end, so it is a char boundary.
            let (seg, rest) = uri.split_at(end);
            out.push(seg);
            uri = rest;
        }
    }
    out.concat()
}

/// Why nginx refuses a request path (its `ngx_http_parse_complex_uri`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%00`.
    Nul,
    /// A `..` segment above the root, after decoding (`/../x`, `/a/%2e%2e/..`).
    AboveRoot,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::BadEscape => "invalid percent-encoding in request path",
            PathError::Nul => "encoded NUL in request path",
            PathError::AboveRoot => "request path climbs above the root",
        }
    }
}

/// nginx's checks of a request path (the part before `?`), made before any
/// routing: every `%XX` must be valid and not `%00`, and dot segments must
/// not climb above `/`. As in nginx, escapes are decoded once and a decoded
/// `/` or `.` counts as one (`%2e%2e%2f` is `../`), while a decoded `%`, `#`
/// or `?` is a plain character. Empty segments are merged (`merge_slashes`).
pub fn check_request_path(path: &[u8]) -> Result<(), PathError> {
    // Fast path: without `%` or `.` there is nothing to decode or climb.
    if !path.iter().any(|&b| b == b'%' || b == b'.') {
        return Ok(());
    }
    let mut depth: usize = 0;
    // The current segment, as far as it decides anything: `Some(n)` while it
    // is made of n <= 2 dots only, `None` once it holds anything else.
    let mut dots: Option<u8> = Some(0);
    let mut i = 0;
    loop {
        let at_end = i >= path.len();
        // `None` marks a separator: a raw or decoded '/', or the end.
        let byte = match path.get(i) {
            None => None,
            Some(b'%') => {
                let h = path.get(i + 1).copied().and_then(hex_val);
                let l = path.get(i + 2).copied().and_then(hex_val);
                let (Some(h), Some(l)) = (h, l) else {
                    return Err(PathError::BadEscape);
                };
                i += 3;
                match h * 16 + l {
                    0 => return Err(PathError::Nul),
                    b'/' => None,
                    v => Some(v),
                }
            }
            Some(b'/') => {
                i += 1;
                None
            }
            Some(&b) => {
                i += 1;
                Some(b)
            }
        };
        match byte {
            Some(b'.') => dots = dots.and_then(|n| (n < 2).then_some(n + 1)),
            Some(_) => dots = None,
            None => {
                match dots {
                    Some(0 | 1) => {}
                    Some(_) => depth = depth.checked_sub(1).ok_or(PathError::AboveRoot)?,
                    None => depth += 1,
                }
                dots = Some(0);
                if at_end {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn is_unescaped(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'/'
                | b':'
                | b';'
                | b'='
                | b'?'
                | b'@'
                | b'['
                | b']'
                | b'-'
                | b'_'
                | b'.'
                | b'~'
                | b'%'
        )
}

/// Kong's `escape` for the upstream URI: percent-encodes (upper-case hex)
/// every byte outside ``!#$&'()*+,/:;=?@[]A-Za-z0-9-_.~%``.
pub fn escape_uri(path: &str) -> Cow<'_, str> {
    if path.bytes().all(is_unescaped) {
        return Cow::Borrowed(path);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len() + 16);
    for b in path.bytes() {
        if is_unescaped(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    Cow::Owned(out)
}

/// Kong's `sanitize_uri_postfix`.
fn sanitize_postfix(p: &str) -> &str {
    if p == "." || p == ".." {
        ""
    } else if let Some(r) = p.strip_prefix("./") {
        r
    } else if let Some(r) = p.strip_prefix("../") {
        r
    } else {
        p
    }
}

/// Kong's upstream path building, path_handling `v0` (the only one compat
/// uses). `req_path` is the normalized request path (no query), `prefix` the
/// matched prefix (`RouteMatch::matched_prefix.as_str()`; "/" when nothing
/// was matched), `service_path` the service's `path` (None = "/").
/// Returns the unescaped path: the caller escapes it ([`escape_uri`]) and
/// appends `?query`.
pub fn upstream_uri_v0(
    req_path: &str,
    prefix: &str,
    strip_path: bool,
    service_path: Option<&str>,
) -> String {
    let base = service_path.unwrap_or("/");
    // Kong cuts by the prefix length, not by where the match was.
    let cut = prefix.len().min(req_path.len());
    let postfix: Cow<'_, str> = match req_path.get(cut..) {
        Some(s) => Cow::Borrowed(s),
        None => String::from_utf8_lossy(&req_path.as_bytes()[cut..]),
    };
    let postfix = sanitize_postfix(&postfix);
    let req_ends_slash = req_path.ends_with('/');

    if let Some(base_trimmed) = base.strip_suffix('/') {
        if strip_path {
            if postfix.is_empty() {
                if base == "/" {
                    return "/".to_owned();
                }
                if req_ends_slash {
                    return base.to_owned();
                }
                return base_trimmed.to_owned();
            }
            if postfix.starts_with('/') {
                return format!("{base_trimmed}{postfix}");
            }
            return format!("{base}{postfix}");
        }
        return format!("{}{}", base, req_path.get(1..).unwrap_or(""));
    }

    if strip_path {
        if postfix.is_empty() {
            if req_path.len() > 1 && req_ends_slash {
                return format!("{base}/");
            }
            return base.to_owned();
        }
        if postfix.starts_with('/') {
            return format!("{base}{postfix}");
        }
        return format!("{base}/{postfix}");
    }

    if req_path == "/" {
        return base.to_owned();
    }
    format!("{base}{req_path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A literal port of nginx 1.27's `ngx_http_parse_complex_uri` (path
    /// part only, merge_slashes on, not Windows), as the reference.
    fn nginx_complex_uri(path: &[u8]) -> Result<Vec<u8>, ()> {
        #[derive(Clone, Copy, PartialEq)]
        enum S {
            Usual,
            Slash,
            Dot,
            DotDot,
            Quoted,
            QuotedSecond,
        }
        let mut u: Vec<u8> = Vec::new();
        let mut state = S::Usual;
        let mut quoted_state = S::Usual;
        let mut decoded = 0u8;
        // nginx reads one byte past the URI (the line end); '\n' stands in.
        let mut input = path.to_vec();
        input.push(b'\n');
        let mut p = 0;
        let mut ch = input[p];
        p += 1;
        let usual = |c: u8| c != b'/' && c != b'.' && c != b'%' && c != b'?' && c != b'#';
        let back = |u: &mut Vec<u8>| -> Result<(), ()> {
            // u -= 4, then back to just after the previous '/'.
            let mut k = u.len() as isize - 4;
            loop {
                if k < 0 {
                    return Err(());
                }
                if u[k as usize] == b'/' {
                    u.truncate(k as usize + 1);
                    return Ok(());
                }
                k -= 1;
            }
        };
        while p <= path.len() {
            match state {
                S::Usual => {
                    if ch == b'/' {
                        state = S::Slash;
                        u.push(ch);
                    } else if ch == b'%' {
                        quoted_state = state;
                        state = S::Quoted;
                    } else {
                        u.push(ch);
                    }
                    ch = input[p];
                    p += 1;
                }
                S::Slash => {
                    if usual(ch) {
                        state = S::Usual;
                        u.push(ch);
                    } else if ch == b'/' {
                    } else if ch == b'.' {
                        state = S::Dot;
                        u.push(ch);
                    } else if ch == b'%' {
                        quoted_state = state;
                        state = S::Quoted;
                    } else {
                        state = S::Usual;
                        u.push(ch);
                    }
                    ch = input[p];
                    p += 1;
                }
                S::Dot => {
                    if ch == b'/' {
                        state = S::Slash;
                        u.pop();
                    } else if ch == b'.' {
                        state = S::DotDot;
                        u.push(ch);
                    } else if ch == b'%' {
                        quoted_state = state;
                        state = S::Quoted;
                    } else {
                        state = S::Usual;
                        u.push(ch);
                    }
                    ch = input[p];
                    p += 1;
                }
                S::DotDot => {
                    if ch == b'/' {
                        back(&mut u)?;
                        state = S::Slash;
                    } else if ch == b'%' {
                        quoted_state = state;
                        state = S::Quoted;
                    } else {
                        state = S::Usual;
                        u.push(ch);
                    }
                    ch = input[p];
                    p += 1;
                }
                S::Quoted => {
                    decoded = hex_val(ch).ok_or(())?;
                    state = S::QuotedSecond;
                    ch = input[p];
                    p += 1;
                }
                S::QuotedSecond => {
                    let l = hex_val(ch).ok_or(())?;
                    ch = (decoded << 4) + l;
                    if ch == b'%' || ch == b'#' || ch == b'?' {
                        state = S::Usual;
                        u.push(ch);
                        ch = input[p];
                        p += 1;
                    } else if ch == 0 {
                        return Err(());
                    } else {
                        state = quoted_state;
                    }
                }
            }
        }
        match state {
            S::Quoted | S::QuotedSecond => return Err(()),
            S::Dot => {
                u.pop();
            }
            S::DotDot => back(&mut u)?,
            _ => {}
        }
        Ok(u)
    }

    #[test]
    fn nginx_path_rules() {
        for ok in [
            "/",
            "/a/b",
            "/a/../b",
            "/a/..",
            "/a/b/../../",
            "/./a",
            "/...",
            "/..a/b",
            "/a..",
            "/%41",
            "/a%2fb",
            "/a/%2e%2e",
            "/%25",
            "/%3F..",
            "//a//../",
            "",
        ] {
            assert_eq!(check_request_path(ok.as_bytes()), Ok(()), "{ok}");
        }
        for (bad, e) in [
            ("/..", PathError::AboveRoot),
            ("/../etc/passwd", PathError::AboveRoot),
            ("/a/../../x", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/%2E%2E/x", PathError::AboveRoot),
            ("/.%2E/x", PathError::AboveRoot),
            ("/a%2f..%2f..%2fx", PathError::AboveRoot),
            ("//../x", PathError::AboveRoot),
            ("/a/./../..", PathError::AboveRoot),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/a%00b", PathError::Nul),
        ] {
            assert_eq!(check_request_path(bad.as_bytes()), Err(e), "{bad}");
        }
    }

    #[test]
    fn invalid_utf8_escapes_stay_escaped_alone() {
        // Found by the request_path fuzz target: the whole path used to stay
        // escaped because of one bad byte, and dropping that byte's segment
        // then left `%C3%A9` for a second pass to decode (routing on
        // `/%C3%A9/` while the upstream decodes `/é/`).
        assert_eq!(normalize_path("/%C3%A9/%e2/.."), "/é/");
        assert_eq!(normalize_path("/%C3%A9/%e2"), "/é/%E2");
        assert_eq!(normalize_path("/%e2%82%ac/%FF%41"), "/€/%FFA");
        assert_eq!(normalize_path("/%E282"), "/%E282");
        for p in ["/%C3%A9/%e2/..", "/%e2%82/%ac", "/%ff%fe/./x", "/%C3/%A9"] {
            let once = normalize_path(p).into_owned();
            assert_eq!(normalize_path(&once), once, "{p}");
        }
    }

    proptest! {
        /// Accepts exactly what nginx's own parser accepts.
        /// What nginx lets through normalises to a fixed point.
        #[test]
        fn normalising_accepted_paths_is_idempotent(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", ".", "..", "a", "%2e", "%2f", "%25", "%41", "%C3", "%A9", "%e2",
                    "%82", "%ac", "%ff", "%3F", "é",
                ]),
                0..10,
            )
        ) {
            let path = format!("/{}", parts.concat());
            if check_request_path(path.as_bytes()).is_ok() {
                let once = normalize_path(&path).into_owned();
                prop_assert_eq!(normalize_path(&once), once.clone(), "{}", path);
            }
        }

        #[test]
        fn agrees_with_nginx(parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "/", ".", "..", "a", "%2e", "%2E", "%2f", "%2F", "%25", "%00",
                "%zz", "%", "%3f", "%23", "b/", "/.", "/..", "%2e%2e", "~",
            ]),
            0..12,
        )) {
            let path = format!("/{}", parts.concat());
            let ours = check_request_path(path.as_bytes()).is_ok();
            let nginx = nginx_complex_uri(path.as_bytes()).is_ok();
            prop_assert_eq!(ours, nginx, "{}", path);
        }
    }
}
