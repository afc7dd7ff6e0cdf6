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

/// `application/grpc`, what Kong's gRPC answers carry.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// Kong's `is_grpc_request`: an HTTP/2 request whose `Content-Type`
/// starts with `application/grpc`.
pub fn is_grpc_request(req: &pingora::http::RequestHeader) -> bool {
    req.version == http::Version::HTTP_2
        && req
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(GRPC_CONTENT_TYPE.as_bytes()))
}

/// Kong's `HTTP_TO_GRPC_STATUS`, with its fallbacks by status class.
pub fn grpc_status(status: u16) -> u8 {
    match status {
        200 => 0,
        400 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        409 => 6,
        429 => 8,
        499 => 1,
        500 => 13,
        501 => 12,
        503 => 14,
        504 => 4,
        _ => match status / 100 {
            5 => 13,
            4 => 3,
            2 => 0,
            _ => 2,
        },
    }
}

/// Kong's `GRPC_MESSAGES`: the name of a gRPC status code.
pub fn grpc_message(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Kong's `kong.response.send` for gRPC (`kong/pdk/response.lua`): when
/// the answer is gRPC (its `Content-Type` says so, or it has none and the
/// request is gRPC), the HTTP status is also given as `grpc-status`, and a
/// body that is not gRPC becomes the `grpc-message` instead (gRPC clients
/// read no other body). An answer without a message gets the status name.
pub fn grpc_answer(
    req_headers: &HeaderMap,
    resp: &mut pingora::http::ResponseHeader,
    body: &mut Option<Bytes>,
) {
    let grpc_ct = |v: &http::HeaderValue| v.as_bytes().starts_with(GRPC_CONTENT_TYPE.as_bytes());
    let (is_grpc, is_grpc_output) = match resp.headers.get(http::header::CONTENT_TYPE) {
        Some(ct) => (grpc_ct(ct), grpc_ct(ct)),
        None => (
            req_headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(grpc_ct),
            false,
        ),
    };
    if !is_grpc {
        return;
    }
    let mut code = None;
    if !resp.headers.contains_key("grpc-status") {
        let c = grpc_status(resp.status.as_u16());
        let _ = resp.insert_header("grpc-status", c.to_string());
        code = Some(c);
    }
    match body.take() {
        Some(b) if !is_grpc_output && !b.is_empty() => {
            match http::HeaderValue::from_maybe_shared(b.clone()) {
                Ok(v) => {
                    let _ = resp.insert_header("grpc-message", v);
                }
                // Not a valid field value: the status name instead.
                Err(_) => {
                    if let Some(c) = code {
                        let _ = resp.insert_header("grpc-message", grpc_message(c));
                    }
                }
            }
            *body = None;
        }
        kept => {
            let empty = kept.as_ref().is_none_or(Bytes::is_empty);
            *body = if empty { None } else { kept };
            if let (Some(c), false) = (code, resp.headers.contains_key("grpc-message")) {
                let _ = resp.insert_header("grpc-message", grpc_message(c));
            }
        }
    }
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
    fn grpc_answers_carry_the_status_in_headers() {
        let req = hm(&[("content-type", "application/grpc+proto")]);
        // kong.response.error: application/grpc, no body.
        let mut resp = pingora::http::ResponseHeader::build(404, None).unwrap();
        resp.insert_header("content-type", GRPC_CONTENT_TYPE)
            .unwrap();
        let mut body = Some(Bytes::new());
        grpc_answer(&req, &mut resp, &mut body);
        assert_eq!(resp.headers["grpc-status"], "5");
        assert_eq!(resp.headers["grpc-message"], "NotFound");
        assert!(body.is_none());
        // kong.response.exit(403, { message = "x" }): the message moves.
        let mut resp = pingora::http::ResponseHeader::build(403, None).unwrap();
        let mut body = Some(Bytes::from_static(b"You cannot consume this service"));
        grpc_answer(&req, &mut resp, &mut body);
        assert_eq!(resp.headers["grpc-status"], "7");
        assert_eq!(
            resp.headers["grpc-message"],
            "You cannot consume this service"
        );
        assert!(body.is_none());
        // A status Kong has no entry for falls back by class.
        assert_eq!(grpc_status(502), 13);
        assert_eq!(grpc_status(418), 3);
        assert_eq!(grpc_status(302), 2);
        // A plain request is left alone.
        let mut resp = pingora::http::ResponseHeader::build(404, None).unwrap();
        let mut body = Some(Bytes::from_static(b"{}"));
        grpc_answer(&hm(&[]), &mut resp, &mut body);
        assert!(!resp.headers.contains_key("grpc-status"));
        assert!(body.is_some());
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
