//! Kong's own error responses: templates and content negotiation.
//!
//! Two paths exist in Kong: `kong.response.error()` (type chosen from `Accept`
//! only, JSON by default) and nginx `error_page` errors (type from `Accept`,
//! then the request `Content-Type`, then `error_default_type`).

use bytes::Bytes;
use http::HeaderMap;

/// Body formats Kong can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    Json,
    Html,
    Xml,
    Plain,
}

impl ErrorFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ErrorFormat::Json => "application/json; charset=utf-8",
            ErrorFormat::Html => "text/html; charset=utf-8",
            ErrorFormat::Xml => "application/xml; charset=utf-8",
            ErrorFormat::Plain => "text/plain; charset=utf-8",
        }
    }

    /// Parses `error_default_type` values (`text/plain`, `application/json`, ...).
    pub fn from_mime(mime: &str) -> Option<ErrorFormat> {
        let mime = mime.trim().to_ascii_lowercase();
        let base = mime.split(';').next().unwrap_or("").trim();
        match base {
            "application/json" => Some(ErrorFormat::Json),
            "text/html" => Some(ErrorFormat::Html),
            "application/xml" => Some(ErrorFormat::Xml),
            "text/plain" => Some(ErrorFormat::Plain),
            _ => None,
        }
    }
}

/// Kong's `get_mime_type`: exact known types, `text/*` plain, `application/*`
/// and `*/*` JSON, anything else JSON.
fn format_of_range(range: &str) -> ErrorFormat {
    match range {
        "text/html" => ErrorFormat::Html,
        "application/xml" => ErrorFormat::Xml,
        "text/plain" | "text/*" => ErrorFormat::Plain,
        _ => ErrorFormat::Json,
    }
}

/// Kong's `get_response_type`: the media range with the highest q wins, the
/// first on ties; `q=0` never wins; no parsable range means JSON.
pub fn response_type(accept: &str) -> ErrorFormat {
    let mut best = ErrorFormat::Json;
    let mut max_q = 0.0f32;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if !range.contains('/') {
            continue;
        }
        let mut q = 1.0f32;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        if q > max_q {
            max_q = q;
            best = format_of_range(&range);
        }
    }
    best
}

fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Format for `kong.response.error()` style answers: `Accept` only.
pub fn pdk_format(headers: &HeaderMap) -> ErrorFormat {
    header_str(headers, http::header::ACCEPT)
        .map(response_type)
        .unwrap_or(ErrorFormat::Json)
}

/// Format for nginx-generated errors (400, 405, 413, 414, 502, 504, ...):
/// `Accept`, else the request `Content-Type`, else `error_default_type`.
pub fn nginx_error_format(headers: &HeaderMap, default: ErrorFormat) -> ErrorFormat {
    match header_str(headers, http::header::ACCEPT)
        .or_else(|| header_str(headers, http::header::CONTENT_TYPE))
    {
        Some(v) => response_type(v),
        None => default,
    }
}

/// Renders the body of an error in the given format.
pub fn render(format: ErrorFormat, message: &str, request_id: &str) -> Bytes {
    let body = match format {
        ErrorFormat::Json => format!(
            "{{\n  \"message\":\"{}\",\n  \"request_id\":\"{}\"\n}}",
            message, request_id
        ),
        ErrorFormat::Plain => format!("{message}\nrequest_id: {request_id}\n"),
        ErrorFormat::Html => format!(
            "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    \
             <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    \
             <p>{}.</p>\n    <p>request_id: {}</p>\n  </body>\n</html>\n",
            message, request_id
        ),
        ErrorFormat::Xml => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{}</message>\n  \
             <requestid>{}</requestid>\n</error>\n",
            message, request_id
        ),
    };
    Bytes::from(body)
}

/// Body text of nginx-generated errors (Kong's `error_handlers.lua`).
pub fn nginx_message(status: u16) -> std::borrow::Cow<'static, str> {
    let known = match status {
        400 => "Bad request",
        404 => "Not found",
        405 => "Method not allowed",
        408 => "Request timeout",
        411 => "Length required",
        412 => "Precondition failed",
        413 => "Payload too large",
        414 => "URI too long",
        417 => "Expectation failed",
        494 => "Request header or cookie too large",
        500 => "An unexpected error occurred",
        502 => "An invalid response was received from the upstream server",
        503 => "The upstream server is currently unavailable",
        504 => "The upstream server is timing out",
        _ => return format!("The upstream server responded with {status}").into(),
    };
    known.into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn json_is_the_pdk_default() {
        assert_eq!(pdk_format(&hm(&[])), ErrorFormat::Json);
        assert_eq!(pdk_format(&hm(&[("accept", "*/*")])), ErrorFormat::Json);
        assert_eq!(
            pdk_format(&hm(&[("accept", "application/whatever")])),
            ErrorFormat::Json
        );
    }

    #[test]
    fn accept_picks_highest_q_first_on_ties() {
        let h = hm(&[(
            "accept",
            "text/plain;q=0.3, text/html;q=0.9, application/xml",
        )]);
        assert_eq!(pdk_format(&h), ErrorFormat::Xml);
        let h = hm(&[("accept", "text/html, application/json")]);
        assert_eq!(pdk_format(&h), ErrorFormat::Html);
        let h = hm(&[("accept", "text/*;q=0.8,application/json;q=0.2")]);
        assert_eq!(pdk_format(&h), ErrorFormat::Plain);
    }

    #[test]
    fn q_zero_and_garbage_mean_json() {
        assert_eq!(response_type("text/html;q=0"), ErrorFormat::Json);
        assert_eq!(response_type("garbage"), ErrorFormat::Json);
        assert_eq!(response_type("text/xml"), ErrorFormat::Json);
    }

    #[test]
    fn nginx_errors_fall_back_to_content_type_then_default() {
        let h = hm(&[("content-type", "application/json")]);
        assert_eq!(
            nginx_error_format(&h, ErrorFormat::Plain),
            ErrorFormat::Json
        );
        assert_eq!(
            nginx_error_format(&hm(&[]), ErrorFormat::Plain),
            ErrorFormat::Plain
        );
    }

    #[test]
    fn templates() {
        let b = render(
            ErrorFormat::Json,
            "no Route matched with those values",
            "abc",
        );
        assert_eq!(
            &b[..],
            b"{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"abc\"\n}"
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["message"], "no Route matched with those values");
        let b = render(ErrorFormat::Plain, "Bad request", "x");
        assert_eq!(&b[..], b"Bad request\nrequest_id: x\n");
        let b = render(ErrorFormat::Html, "Bad request", "x");
        assert!(std::str::from_utf8(&b)
            .unwrap()
            .contains("<p>Bad request.</p>"));
        let b = render(ErrorFormat::Xml, "Bad request", "x");
        assert!(std::str::from_utf8(&b)
            .unwrap()
            .contains("<message>Bad request</message>"));
    }
}
