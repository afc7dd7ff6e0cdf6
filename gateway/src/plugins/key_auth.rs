//! The `key-auth` plugin (Kong's `kong/plugins/key-auth`): an API key in a
//! header, the query or the body identifies a `keyauth_credentials` row and
//! its consumer.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use config_sync::schema::{array, boolean, string, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;
use serde_json::Value;

use super::consumers::{now_secs, set_anonymous_consumer, set_consumer};
use super::pdk::QueryArg;
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "key-auth";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 1250,
    version: VERSION,
    schema,
    build,
};

const TABLE: &str = "keyauth_credentials";

const ERR_DUPLICATE_API_KEY: &str = "Duplicate API key found";
const ERR_NO_API_KEY: &str = "No API key found in request";
const ERR_INVALID_AUTH_CRED: &str = "Unauthorized";

/// `typedefs.header_name`.
fn header_name(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("") => Err("no header name provided".into()),
        Some(s) => config_sync::validate::validate_header_name(s),
        None => Ok(()),
    }
}

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            (
                "key_names",
                array(string().custom(header_name))
                    .required()
                    .default(serde_json::json!(["apikey"])),
            ),
            ("hide_credentials", boolean().required().default(false)),
            ("anonymous", string().len_min(1)),
            ("key_in_header", boolean().required().default(true)),
            ("key_in_query", boolean().required().default(true)),
            ("key_in_body", boolean().required().default(false)),
            ("run_on_preflight", boolean().required().default(true)),
            ("realm", string().len_min(1)),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: true,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// `config` of a `key-auth` instance (validated, defaults filled).
#[derive(Debug, Clone, Deserialize)]
struct Config {
    key_names: Vec<String>,
    hide_credentials: bool,
    anonymous: Option<String>,
    key_in_header: bool,
    key_in_query: bool,
    key_in_body: bool,
    run_on_preflight: bool,
    realm: Option<String>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: Config =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    let www_authenticate = match &cfg.realm {
        Some(r) => format!("Key realm=\"{r}\""),
        None => "Key".to_string(),
    };
    Ok(Arc::new(KeyAuth {
        cfg,
        www_authenticate,
    }))
}

struct KeyAuth {
    cfg: Config,
    www_authenticate: String,
}

/// A value found under a key name, as Lua types it.
enum Found {
    /// A string: the key.
    Key(String),
    /// A table (repeated header, argument or field, or a JSON array or
    /// object): a duplicate.
    Many,
    /// Anything else (a query flag, a JSON number): not a key, the search
    /// goes on with the next name.
    Other,
}

#[async_trait]
impl Plugin for KeyAuth {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn needs_request_body(&self) -> bool {
        self.cfg.key_in_body
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if !self.cfg.run_on_preflight && kong.method() == http::Method::OPTIONS {
            return Ok(());
        }
        match &self.cfg.anonymous {
            // Logical OR: a credential set by an earlier auth plugin wins;
            // a failure falls back to the anonymous consumer.
            Some(anonymous) => {
                if kong.credential().is_some() {
                    return Ok(());
                }
                if self.authenticate(kong).is_err() {
                    set_anonymous_consumer(kong, anonymous)?;
                }
                Ok(())
            }
            None => self.authenticate(kong),
        }
    }
}

impl KeyAuth {
    fn unauthorized(&self, message: &str) -> Exit {
        Exit::error(401, message).header("WWW-Authenticate", self.www_authenticate.clone())
    }

    /// Kong's `do_authentication`.
    fn authenticate(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let cfg = &self.cfg;
        let mut body: Option<Body> = None;
        let mut key: Option<String> = None;
        for name in &cfg.key_names {
            let mut v = None;
            if cfg.key_in_header {
                v = header_value(kong, name);
            }
            if v.is_none() && cfg.key_in_query {
                v = kong.query_arg(name).map(|a| match a {
                    QueryArg::One(s) => Found::Key(s),
                    QueryArg::Many(_) => Found::Many,
                    QueryArg::Flag => Found::Other,
                });
            }
            if v.is_none() && cfg.key_in_body {
                v = body.get_or_insert_with(|| Body::parse(kong)).get(name);
            }
            match v {
                Some(Found::Key(k)) => {
                    if cfg.hide_credentials {
                        clear_query_arg(kong, name);
                        kong.clear_upstream_header(name);
                        if cfg.key_in_body {
                            let b = body.get_or_insert_with(|| Body::parse(kong));
                            if let Some(new) = b.without(name) {
                                kong.set_upstream_body(new);
                            }
                        }
                    }
                    key = Some(k);
                    break;
                }
                Some(Found::Many) => return Err(self.unauthorized(ERR_DUPLICATE_API_KEY)),
                Some(Found::Other) | None => {}
            }
        }
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(self.unauthorized(ERR_NO_API_KEY));
        };
        // Kong's off strategy hides an expired row: the key is unknown.
        let db = kong.consumers();
        let found = db.credential_by(TABLE, &key).and_then(|r| {
            let row = db.credential(r)?;
            (!row.expired(now_secs())).then_some((r, row.consumer, row.id))
        });
        let Some((cred, consumer, cred_id)) = found else {
            return Err(self.unauthorized(ERR_INVALID_AUTH_CRED));
        };
        set_consumer(kong, consumer, Some((cred, cred_id.to_string())));
        Ok(())
    }
}

/// `kong.request.get_headers()[name]`: nginx's table is keyed by lower-case
/// names and, failing that, looked up with `_` turned into `-`.
fn header_value(kong: &Kong<'_>, name: &str) -> Option<Found> {
    let lower = name.to_ascii_lowercase();
    let mut candidates = vec![];
    if lower == name {
        candidates.push(lower.clone());
    }
    let dashed = lower.replace('_', "-");
    if !candidates.contains(&dashed) {
        candidates.push(dashed);
    }
    for n in candidates {
        let values: Vec<_> = kong.headers().get_all(n.as_str()).iter().collect();
        match values.len() {
            0 => continue,
            1 => {
                return Some(Found::Key(
                    String::from_utf8_lossy(values[0].as_bytes()).into_owned(),
                ))
            }
            _ => return Some(Found::Many),
        }
    }
    None
}

/// `kong.service.request.clear_query_arg(name)`: the query is parsed and
/// serialized again as WHATWG `application/x-www-form-urlencoded`
/// (`resty.ada.search.remove`), without the named arguments, with `+` sent
/// as `%20`.
fn clear_query_arg(kong: &mut Kong<'_>, name: &str) {
    let uri = kong.upstream_uri().to_string();
    let Some((path, query)) = uri.split_once('?') else {
        return;
    };
    if query.is_empty() {
        return;
    }
    let kept: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), String::new()),
        })
        .filter(|(k, _)| k != name)
        .map(|(k, v)| format!("{}={}", form_encode(&k), form_encode(&v)))
        .collect();
    let args = kept.join("&").replace('+', "%20");
    let new = if args.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{args}")
    };
    kong.set_upstream_uri(new);
}

/// WHATWG urlencoded parsing of one name or value.
fn form_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// WHATWG urlencoded serializing: `*-._` and alphanumerics kept, space as
/// `+`, the rest percent-encoded.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// nginx `ngx.decode_args` of one component (`+` is a space).
fn args_decode(s: &str) -> String {
    form_decode(s)
}

/// The request body as `kong.request.get_body()` gives it, for the three
/// types it reads; anything else (or no body) is Kong's `EMPTY`.
enum Body {
    Empty,
    /// `application/x-www-form-urlencoded`: the raw pairs, in order.
    Form(Vec<(String, Option<String>, String)>),
    /// `application/json` whose top level is an object or array.
    Json(Value),
    /// `multipart/form-data`: (name, value) per part, with the raw bytes of
    /// each part for rebuilding the body.
    Multipart {
        boundary: String,
        parts: Vec<(Option<String>, Bytes, Bytes)>,
    },
}

impl Body {
    fn parse(kong: &Kong<'_>) -> Body {
        let Some(ct) = kong.header("content-type") else {
            return Body::Empty;
        };
        let full = ct.to_string();
        let lower = ct.to_ascii_lowercase();
        let mime = lower.split(';').next().unwrap_or_default();
        let Some(raw) = kong.request_body() else {
            return Body::Empty;
        };
        if mime.starts_with("application/x-www-form-urlencoded") {
            let text = String::from_utf8_lossy(raw);
            let pairs = text
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (args_decode(k), Some(args_decode(v)), p.to_string()),
                    None => (args_decode(p), None, p.to_string()),
                })
                .collect();
            Body::Form(pairs)
        } else if mime.starts_with("application/json") {
            match serde_json::from_slice::<Value>(raw) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => Body::Json(v),
                _ => Body::Empty,
            }
        } else if mime.starts_with("multipart/form-data") {
            match multipart_boundary(&full).and_then(|b| split_multipart(raw, &b).map(|p| (b, p))) {
                Some((boundary, parts)) => Body::Multipart { boundary, parts },
                None => Body::Empty,
            }
        } else {
            Body::Empty
        }
    }

    /// `body[name]`.
    fn get(&self, name: &str) -> Option<Found> {
        match self {
            Body::Empty => None,
            Body::Form(pairs) => {
                let hits: Vec<&Option<String>> = pairs
                    .iter()
                    .filter(|(k, _, _)| k == name)
                    .map(|(_, v, _)| v)
                    .collect();
                match hits.as_slice() {
                    [] => None,
                    [Some(v)] => Some(Found::Key(v.clone())),
                    [None] => Some(Found::Other),
                    _ => Some(Found::Many),
                }
            }
            Body::Json(v) => match v.get(name)? {
                Value::String(s) => Some(Found::Key(s.clone())),
                Value::Array(_) | Value::Object(_) => Some(Found::Many),
                _ => Some(Found::Other),
            },
            Body::Multipart { parts, .. } => {
                let hits: Vec<&Bytes> = parts
                    .iter()
                    .filter(|(n, _, _)| n.as_deref() == Some(name))
                    .map(|(_, v, _)| v)
                    .collect();
                match hits.as_slice() {
                    [] => None,
                    [v] => Some(Found::Key(String::from_utf8_lossy(v).into_owned())),
                    _ => Some(Found::Many),
                }
            }
        }
    }

    /// The body without `name`, when there is one to send instead
    /// (`body[name] = nil; kong.service.request.set_body(body)`).
    fn without(&self, name: &str) -> Option<Bytes> {
        match self {
            Body::Empty => None,
            Body::Form(pairs) => {
                if !pairs.iter().any(|(k, _, _)| k == name) {
                    return None;
                }
                let kept: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _, _)| k != name)
                    .map(|(_, _, raw)| raw.as_str())
                    .collect();
                Some(Bytes::from(kept.join("&")))
            }
            Body::Json(v) => {
                let mut v = v.clone();
                v.as_object_mut()?.remove(name)?;
                Some(Bytes::from(v.to_string()))
            }
            Body::Multipart { boundary, parts } => {
                if !parts.iter().any(|(n, _, _)| n.as_deref() == Some(name)) {
                    return None;
                }
                let mut out = Vec::new();
                for (_, _, raw) in parts.iter().filter(|(n, _, _)| n.as_deref() != Some(name)) {
                    out.extend_from_slice(b"--");
                    out.extend_from_slice(boundary.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(raw);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"--");
                out.extend_from_slice(boundary.as_bytes());
                out.extend_from_slice(b"--\r\n");
                Some(Bytes::from(out))
            }
        }
    }
}

/// The `boundary=` parameter of a multipart content type (quoted or not).
fn multipart_boundary(content_type: &str) -> Option<String> {
    let at = content_type.to_ascii_lowercase().find("boundary=")? + 9;
    let rest = &content_type[at..];
    let b = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?,
        None => rest.split(';').next()?.trim(),
    };
    (!b.is_empty()).then(|| b.to_string())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Splits a multipart body into (field name, value, raw part) triples.
fn split_multipart(body: &[u8], boundary: &str) -> Option<Vec<(Option<String>, Bytes, Bytes)>> {
    let delim = format!("--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0)? + delim.len();
    let mut parts = Vec::new();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            break;
        }
        // Skip the line break after the delimiter.
        let start = find(body, b"\n", pos)? + 1;
        let next = find(body, format!("\n{delim}").as_bytes(), start)?;
        let mut end = next;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
        let raw = &body[start..end];
        let (head_len, sep) = match find(raw, b"\r\n\r\n", 0) {
            Some(i) => (i, 4),
            None => (find(raw, b"\n\n", 0)?, 2),
        };
        let head = String::from_utf8_lossy(&raw[..head_len]);
        let value = Bytes::copy_from_slice(&raw[head_len + sep..]);
        let name = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .and_then(disposition_name);
        parts.push((name, value, Bytes::copy_from_slice(raw)));
        pos = next + 1 + delim.len();
    }
    Some(parts)
}

/// `name="..."` (or unquoted) of a Content-Disposition line.
fn disposition_name(line: &str) -> Option<String> {
    for param in line.split(';').skip(1) {
        let param = param.trim();
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("name") {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schema_defaults_and_header_names() {
        let s = schema();
        let v = config_sync::schema::validate_record(&s.config, &serde_json::json!({}), "config")
            .unwrap();
        let c: Config = serde_json::from_value(v).unwrap();
        assert_eq!(c.key_names, vec!["apikey"]);
        assert!(c.key_in_header && c.key_in_query && !c.key_in_body && c.run_on_preflight);
        let e = config_sync::schema::validate_record(
            &s.config,
            &serde_json::json!({"key_names": ["ok_1-x", "bad key"]}),
            "config",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "config.key_names.2");
        assert_eq!(
            e[0].message,
            "bad header name 'bad key', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        );
    }

    #[test]
    fn whatwg_form_serializing() {
        assert_eq!(form_encode("a b*-._~é"), "a+b*-._%7E%C3%A9");
        assert_eq!(form_decode("valu%651+x"), "value1 x");
    }

    #[test]
    fn multipart_parts_and_removal() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nkong\r\n--XyZ\r\nContent-Disposition: form-data; name=\"foo\"\r\n\r\nbar\r\n--XyZ--\r\n";
        let parts = split_multipart(body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.as_deref(), Some("apikey"));
        assert_eq!(&parts[0].1[..], b"kong");
        assert_eq!(&parts[1].1[..], b"bar");
        let b = Body::Multipart {
            boundary: "XyZ".into(),
            parts,
        };
        let out = b.without("apikey").unwrap();
        let again = split_multipart(&out, "XyZ").unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0.as_deref(), Some("foo"));
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
    }
}
