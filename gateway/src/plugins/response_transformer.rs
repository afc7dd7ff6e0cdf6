//! The `response-transformer` plugin (Kong's
//! `kong/plugins/response-transformer`): removes, renames, replaces, adds
//! and appends response headers in header_filter, and top-level properties
//! of a JSON response body in body_filter.
//!
//! Also home of [`cjson_encode`], the lua-cjson encoding Kong's transformers
//! re-serialize bodies with (the request-transformer uses it too).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use config_sync::schema::{array, string, PluginSchema, Record, PROTOCOLS_HTTP};
use http::header::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::{Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "response-transformer";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 800,
    version: VERSION,
    schema,
    build,
};

// ---------------------------------------------------------------------------
// schema (`kong/plugins/response-transformer/schema.lua`)

/// Kong's `"^([^:]+):*(.-)$"`: the name up to the first colon, then the
/// value after any run of colons. `None` when the entry is empty or starts
/// with a colon (the Lua pattern does not match).
pub(crate) fn split_pair(pair: &str) -> Option<(&str, &str)> {
    let (name, value) = match pair.find(':') {
        Some(i) => (&pair[..i], pair[i..].trim_start_matches(':')),
        None => (pair, ""),
    };
    (!name.is_empty()).then_some((name, value))
}

/// `kong.tools.http.validate_header_name`: `^[a-zA-Z0-9-_]+$` with PCRE's
/// `$`, which also matches before a final newline.
pub(crate) fn valid_header_name(name: &str) -> bool {
    let name = name.strip_suffix('\n').unwrap_or(name);
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Kong's `validate_headers(pair, validate_value)`.
pub(crate) fn validate_headers(v: &Value, validate_value: bool) -> Result<(), String> {
    let Some(pair) = v.as_str() else {
        return Ok(());
    };
    let (name, value) = match split_pair(pair) {
        Some((n, v)) => (Some(n), v),
        None => (None, ""),
    };
    match name {
        Some(n) if valid_header_name(n) => {}
        Some(n) => return Err(format!("'{n}' is not a valid header")),
        None => return Err("'nil' is not a valid header".to_string()),
    }
    if validate_value && !valid_header_name(value) {
        return Err(format!("'{value}' is not a valid header"));
    }
    Ok(())
}

/// `match = "^[^:]+:.*$"` (Lua's `.` matches newlines too).
pub(crate) const COLON_PAIR: &str = r"(?s)^[^:]+:.*$";

fn schema() -> PluginSchema {
    let strings = || array(string()).required().default(serde_json::json!([]));
    let colon_strings = || {
        array(string().matches(COLON_PAIR, None))
            .required()
            .default(serde_json::json!([]))
    };
    let colon_headers = || {
        array(
            string()
                .matches(COLON_PAIR, None)
                .custom(|v| validate_headers(v, true)),
        )
        .required()
        .default(serde_json::json!([]))
    };
    let json_types = || {
        array(string().one_of(&["boolean", "number", "string"]))
            .required()
            .default(serde_json::json!([]))
    };
    let rec = config_sync::schema::record;
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            (
                "remove",
                rec(vec![("json", strings()), ("headers", strings())]),
            ),
            (
                "rename",
                rec(vec![
                    ("json", colon_strings()),
                    ("headers", colon_headers()),
                ]),
            ),
            (
                "replace",
                rec(vec![
                    ("json", colon_strings()),
                    ("json_types", json_types()),
                    ("headers", colon_strings()),
                ]),
            ),
            (
                "add",
                rec(vec![
                    ("json", colon_strings()),
                    ("json_types", json_types()),
                    ("headers", colon_strings()),
                ]),
            ),
            (
                "append",
                rec(vec![
                    ("json", colon_strings()),
                    ("json_types", json_types()),
                    ("headers", colon_strings()),
                ]),
            ),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// config

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Lists {
    json: Vec<String>,
    headers: Vec<String>,
    json_types: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Config {
    remove: Lists,
    rename: Lists,
    replace: Lists,
    add: Lists,
    append: Lists,
}

/// A JSON type to cast a configured value to (`json_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Boolean,
    Number,
    String,
}

/// One `name:value` entry; `value` is `None` when empty (Kong's `iter`).
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    value: Option<String>,
}

#[derive(Debug, Clone)]
struct JsonEntry {
    name: String,
    /// Kong's `json_value(value, json_type)`: `None` when it gives nil.
    value: Option<Value>,
}

fn entries(list: &[String]) -> Vec<Entry> {
    list.iter()
        .filter_map(|p| split_pair(p))
        .map(|(n, v)| Entry {
            name: n.to_string(),
            value: (!v.is_empty()).then(|| v.to_string()),
        })
        .collect()
}

fn json_entries(list: &[String], types: &[String]) -> Vec<JsonEntry> {
    list.iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let (name, value) = split_pair(p)?;
            let ty = types.get(i).and_then(|t| match t.as_str() {
                "boolean" => Some(JsonType::Boolean),
                "number" => Some(JsonType::Number),
                "string" => Some(JsonType::String),
                _ => None,
            });
            Some(JsonEntry {
                name: name.to_string(),
                value: (!value.is_empty()).then(|| json_value(value, ty)).flatten(),
            })
        })
        .collect()
}

/// Kong's `json_value`: the value as cjson would write it inside a string
/// (escapes kept, except quotes and slashes), then cast to the JSON type.
fn json_value(value: &str, ty: Option<JsonType>) -> Option<Value> {
    let mut quoted = String::with_capacity(value.len() + 2);
    cjson_string(value, &mut quoted);
    let inner = &quoted[1..quoted.len() - 1];
    let v = inner.replace("\\\"", "\"").replace("\\/", "/");
    match ty {
        Some(JsonType::Number) => lua_tonumber(&v)
            .and_then(Number::from_f64)
            .map(Value::Number),
        Some(JsonType::Boolean) => Some(Value::Bool(v == "true")),
        Some(JsonType::String) | None => Some(Value::String(v)),
    }
}

/// Lua's `tonumber(s)` for a string: decimal (with exponent) or `0x` hex,
/// surrounding whitespace allowed; `nil` for anything else.
pub(crate) fn lua_tonumber(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let hex = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"));
    let n = if let Some(h) = hex {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        h.bytes().fold(0f64, |acc, b| {
            acc * 16.0 + f64::from(char::from(b).to_digit(16).unwrap_or(0))
        })
    } else {
        // Rust accepts "inf"/"nan"/"infinity", Lua's tonumber does not.
        let ok = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            && body
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit() || b == b'.');
        if !ok {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    Some(if neg { -n } else { n })
}

#[derive(Debug)]
struct ResponseTransformer {
    remove_headers: Vec<Entry>,
    rename_headers: Vec<Entry>,
    replace_headers: Vec<Entry>,
    add_headers: Vec<Entry>,
    append_headers: Vec<Entry>,
    remove_json: Vec<Entry>,
    rename_json: Vec<Entry>,
    replace_json: Vec<JsonEntry>,
    add_json: Vec<JsonEntry>,
    append_json: Vec<JsonEntry>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let c: Config = serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    Ok(Arc::new(ResponseTransformer {
        remove_headers: entries(&c.remove.headers),
        rename_headers: entries(&c.rename.headers),
        replace_headers: entries(&c.replace.headers),
        add_headers: entries(&c.add.headers),
        append_headers: entries(&c.append.headers),
        remove_json: entries(&c.remove.json),
        rename_json: entries(&c.rename.json),
        replace_json: json_entries(&c.replace.json, &c.replace.json_types),
        add_json: json_entries(&c.add.json, &c.add.json_types),
        append_json: json_entries(&c.append.json, &c.append.json_types),
    }))
}

// ---------------------------------------------------------------------------
// handler

/// Per-request state: whether the body is transformed, and what of it has
/// arrived (Kong's `kong.response.get_raw_body()` buffer).
#[derive(Debug, Default)]
struct BodyState {
    active: bool,
    buf: BytesMut,
}

#[async_trait]
impl Plugin for ResponseTransformer {
    fn phases(&self) -> Phases {
        Phases::HEADER_FILTER | Phases::BODY_FILTER
    }

    fn header_filter(&self, kong: &mut Kong<'_>, resp: &mut ResponseHeader) {
        if self.header_ops_empty() && !self.is_body_transform_set() {
            return;
        }
        let snapshot = HeaderSnapshot::of(resp);
        self.transform_headers(&snapshot, resp);
        // Kong decides in body_filter from the Content-Type the client gets.
        let ct = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let active = self.is_body_transform_set() && ct.is_some_and(is_json_body);
        kong.state::<BodyState>().active = active;
    }

    fn body_filter(&self, kong: &mut Kong<'_>, body: &mut Option<Bytes>, eof: bool) {
        let state = kong.state::<BodyState>();
        if !state.active {
            return;
        }
        // Kong's get_raw_body: chunks are held back until the last one.
        if let Some(b) = body.take() {
            state.buf.extend_from_slice(&b);
        }
        if !eof {
            return;
        }
        let raw = std::mem::take(&mut state.buf).freeze();
        match self.transform_json_body(&raw) {
            Some(out) => *body = Some(Bytes::from(out)),
            None => {
                if !raw.is_empty() {
                    log::warn!("[{NAME}] body transform failed: failed parsing json body");
                    *body = Some(raw);
                }
            }
        }
    }
}

impl ResponseTransformer {
    fn header_ops_empty(&self) -> bool {
        self.remove_headers.is_empty()
            && self.rename_headers.is_empty()
            && self.replace_headers.is_empty()
            && self.add_headers.is_empty()
            && self.append_headers.is_empty()
    }

    /// `is_body_transform_set` (`header_transformer.lua:62-68`).
    fn is_body_transform_set(&self) -> bool {
        !(self.add_json.is_empty()
            && self.rename_json.is_empty()
            && self.remove_json.is_empty()
            && self.replace_json.is_empty()
            && self.append_json.is_empty())
    }

    /// `header_transformer.transform_headers`: remove, rename, replace (if
    /// present), add (if absent), append; the presence checks look at the
    /// headers as they were when the phase began.
    fn transform_headers(&self, headers: &HeaderSnapshot, resp: &mut ResponseHeader) {
        for e in &self.remove_headers {
            clear_header(resp, &e.name);
        }
        for e in &self.rename_headers {
            if let (Some(values), Some(new)) = (headers.get(&e.name), &e.value) {
                set_header(resp, new, values);
                clear_header(resp, &e.name);
            }
        }
        for e in &self.replace_headers {
            if let (Some(_), Some(v)) = (headers.get(&e.name), &e.value) {
                set_header(resp, &e.name, std::slice::from_ref(v));
            }
        }
        for e in &self.add_headers {
            if let (None, Some(v)) = (headers.get(&e.name), &e.value) {
                set_header(resp, &e.name, std::slice::from_ref(v));
            }
        }
        for e in &self.append_headers {
            // Kong's add_header(name, nil) throws; nothing is added.
            if let Some(v) = &e.value {
                add_header(resp, &e.name, v);
            }
        }
        // The body is going to change.
        let ct = headers.get("Content-Type").and_then(|v| v.first());
        if self.is_body_transform_set() && ct.is_some_and(|c| is_json_body(c)) {
            resp.remove_header(&http::header::CONTENT_LENGTH);
        }
    }

    /// `body_transformer.transform_json_body`; `None` leaves the body as is.
    fn transform_json_body(&self, raw: &[u8]) -> Option<String> {
        let parsed: Value = serde_json::from_slice(raw).ok()?;
        let mut body = match parsed {
            Value::Object(m) => m,
            // cjson re-encodes an array as it was; a scalar throws in Kong.
            Value::Array(_) => return Some(cjson_encode(&parsed)),
            _ => return None,
        };
        for e in &self.remove_json {
            body.shift_remove(&e.name);
        }
        for e in &self.rename_json {
            if let Some(new) = &e.value {
                if let Some(v) = body.shift_remove(&e.name) {
                    body.insert(new.clone(), v);
                }
            }
        }
        for e in &self.replace_json {
            if let Some(v) = &e.value {
                if body.get(&e.name).is_some_and(lua_truthy) {
                    body.insert(e.name.clone(), v.clone());
                }
            }
        }
        for e in &self.add_json {
            if let Some(v) = &e.value {
                if !body.get(&e.name).is_some_and(lua_truthy) {
                    body.insert(e.name.clone(), v.clone());
                }
            }
        }
        for e in &self.append_json {
            if let Some(v) = &e.value {
                let cur = body.shift_remove(&e.name);
                body.insert(e.name.clone(), append_json_value(cur, v.clone()));
            }
        }
        Some(cjson_encode(&Value::Object(body)))
    }
}

/// Lua truthiness of a decoded value: only an absent value and `false` are
/// false (`null` is cjson's `null` sentinel, which is truthy).
pub(crate) fn lua_truthy(v: &Value) -> bool {
    !matches!(v, Value::Bool(false))
}

/// Kong's `append_value` on decoded JSON: a string becomes `[s, v]`, an
/// array gets `v` pushed, a table with keys gets `v` at index 1 (which
/// cjson writes as key `"1"`; an empty one becomes `[v]`), anything else is
/// replaced by `[v]`.
pub(crate) fn append_json_value(cur: Option<Value>, v: Value) -> Value {
    match cur {
        Some(Value::String(s)) => Value::Array(vec![Value::String(s), v]),
        Some(Value::Array(mut a)) => {
            a.push(v);
            Value::Array(a)
        }
        Some(Value::Object(m)) if m.is_empty() => Value::Array(vec![v]),
        Some(Value::Object(mut m)) => {
            m.insert("1".to_string(), v);
            Value::Object(m)
        }
        _ => Value::Array(vec![v]),
    }
}

/// `ngx.resp.get_headers()` at the start of header_filter: lowercase names,
/// looked up as given, then lowercased with `_` read as `-`.
struct HeaderSnapshot(Vec<(String, Vec<String>)>);

impl HeaderSnapshot {
    fn of(resp: &ResponseHeader) -> HeaderSnapshot {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in resp.headers.iter() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match out.iter_mut().find(|(n, _)| n == k.as_str()) {
                Some((_, vals)) => vals.push(v),
                None => out.push((k.as_str().to_string(), vec![v])),
            }
        }
        HeaderSnapshot(out)
    }

    fn get(&self, name: &str) -> Option<&[String]> {
        let find = |n: &str| {
            self.0
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_slice())
        };
        find(name).or_else(|| find(&name.to_ascii_lowercase().replace('_', "-")))
    }
}

/// `ngx.header[name]`: underscores become hyphens.
fn resp_name(name: &str) -> String {
    name.replace('_', "-")
}

fn clear_header(resp: &mut ResponseHeader, name: &str) {
    if let Ok(n) = HeaderName::from_bytes(resp_name(name).as_bytes()) {
        resp.remove_header(&n);
    }
}

/// `kong.response.set_header`: replaces every line of the header; an empty
/// value is sent as a single space; Transfer-Encoding is ignored.
fn set_header(resp: &mut ResponseHeader, name: &str, values: &[String]) {
    let name = resp_name(name);
    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
        return;
    };
    if n == http::header::TRANSFER_ENCODING {
        log::warn!("manually setting Transfer-Encoding. Ignored.");
        return;
    }
    resp.remove_header(&n);
    for v in values {
        add_header(resp, &name, v);
    }
}

/// `kong.response.add_header`.
fn add_header(resp: &mut ResponseHeader, name: &str, value: &str) {
    let value = if value.is_empty() { " " } else { value };
    if let Ok(v) = HeaderValue::from_str(value) {
        if resp.append_header(resp_name(name), v).is_err() {
            log::debug!("[{NAME}] header {name} not set");
        }
    }
}

/// `header_transformer.is_json_body`: one of the comma-separated media
/// types is `application/json` or `application/<x>+json`.
pub(crate) fn is_json_body(content_type: &str) -> bool {
    content_type.split(',').any(|ct| {
        parse_mime_type(ct.trim())
            .is_some_and(|(t, st)| t == "application" && (st == "json" || st.ends_with("+json")))
    })
}

/// `kong.tools.mime_type.parse_mime_type`: `type/subtype` (lowercased) with
/// `; attr=value` parameters and nothing else; `*` alone is `*/*`.
fn parse_mime_type(s: &str) -> Option<(String, String)> {
    fn is_token(b: u8) -> bool {
        b < 128 && b > 31 && b != 127 && !b"()<>@,;:\\\"/[]?={} \t".contains(&b)
    }
    fn token(s: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while *i < s.len() && is_token(s[*i]) {
            *i += 1;
        }
        *i > start
    }
    let b = s.as_bytes();
    let mut i = 0;
    let (ty, sub) = if token(b, &mut i) && i < b.len() && b[i] == b'/' {
        let t_end = i;
        i += 1;
        let s_start = i;
        if !token(b, &mut i) {
            return None;
        }
        (
            s[..t_end].to_ascii_lowercase(),
            s[s_start..i].to_ascii_lowercase(),
        )
    } else if s.starts_with('*') {
        i = 1;
        ("*".to_string(), "*".to_string())
    } else {
        return None;
    };
    // parameters: (spacing ";" spacing attribute "=" value)*
    loop {
        let mut j = i;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        if j >= b.len() || b[j] != b';' {
            break;
        }
        j += 1;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        if !token(b, &mut j) || j >= b.len() || b[j] != b'=' {
            break;
        }
        j += 1;
        if j < b.len() && b[j] == b'"' {
            j += 1;
            loop {
                match b.get(j) {
                    None => return None,
                    Some(b'"') => {
                        j += 1;
                        break;
                    }
                    Some(b'\\') if j + 1 < b.len() && b[j + 1] < 128 => j += 2,
                    Some(&c) if c < 32 || c == 127 => return None,
                    Some(_) => j += 1,
                }
            }
        } else if !token(b, &mut j) {
            break;
        }
        i = j;
    }
    (i == b.len()).then_some((ty, sub))
}

// ---------------------------------------------------------------------------
// lua-cjson's encoder, as OpenResty configures it

/// `cjson.encode`: every number is a Lua double written with `%.14g`,
/// `/` is escaped, control characters and DEL as `\u00XX`.
pub(crate) fn cjson_encode(v: &Value) -> String {
    let mut out = String::new();
    cjson_value(v, &mut out);
    out
}

fn cjson_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&lua_number(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => cjson_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                cjson_value(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => cjson_object(m, out),
    }
}

fn cjson_object(m: &Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cjson_string(k, out);
        out.push(':');
        cjson_value(x, out);
    }
    out.push('}');
}

fn cjson_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A Lua number as `tostring` / cjson write it: C's `%.14g`.
pub(crate) fn lua_number(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    const P: i32 = 14;
    let sci = format!("{:.*e}", (P - 1) as usize, x);
    let (mant, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if !(-4..P).contains(&exp) {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let fixed = format!("{:.*}", (P - 1 - exp).max(0) as usize, x);
        trim_zeros(&fixed).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(config: Value) -> ResponseTransformer {
        let s = schema();
        let cfg = config_sync::schema::validate_record(&s.config, &config, "config").unwrap();
        let c: Config = serde_json::from_value(cfg).unwrap();
        ResponseTransformer {
            remove_headers: entries(&c.remove.headers),
            rename_headers: entries(&c.rename.headers),
            replace_headers: entries(&c.replace.headers),
            add_headers: entries(&c.add.headers),
            append_headers: entries(&c.append.headers),
            remove_json: entries(&c.remove.json),
            rename_json: entries(&c.rename.json),
            replace_json: json_entries(&c.replace.json, &c.replace.json_types),
            add_json: json_entries(&c.add.json, &c.add.json_types),
            append_json: json_entries(&c.append.json, &c.append.json_types),
        }
    }

    fn body(t: &ResponseTransformer, input: &str) -> Value {
        serde_json::from_str(&t.transform_json_body(input.as_bytes()).unwrap()).unwrap()
    }

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn headers_of(r: &ResponseHeader) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }

    fn run_headers(t: &ResponseTransformer, r: &mut ResponseHeader) {
        let snap = HeaderSnapshot::of(r);
        t.transform_headers(&snap, r);
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = v
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    // 01-header_transformer_spec.lua: is_json_body()
    #[test]
    fn is_json_body_spec() {
        assert!(is_json_body("application/json"));
        assert!(is_json_body("application/json; charset=utf-8"));
        assert!(is_json_body("application/problem+json"));
        assert!(is_json_body("application/problem+json; charset=utf-8"));
        assert!(is_json_body(
            "application/x-www-form-urlencoded, application/json"
        ));
        assert!(!is_json_body("application/x-www-form-urlencoded"));
        assert!(!is_json_body("application/jsonx"));
        assert!(!is_json_body("text/json"));
        assert!(!is_json_body("application/json; charset"));
        assert!(is_json_body("Application/JSON; charset=\"utf-8\""));
    }

    // 01-header_transformer_spec.lua: execute_headers()
    #[test]
    fn header_transformer_remove_spec() {
        let t = rt(json!({"remove": {"headers": ["h1", "h2", "h3"]}, "add": {"json": ["p1:v1"]}}));
        let mut r = resp(&[("h1", "value1"), ("h2", "value2a"), ("h2", "value2b")]);
        run_headers(&t, &mut r);
        assert!(headers_of(&r).is_empty());
        // sets content-length nil
        let mut r = resp(&[
            ("h1", "v"),
            ("Content-Length", "100"),
            ("Content-Type", "application/json"),
        ]);
        run_headers(&t, &mut r);
        assert_eq!(
            headers_of(&r),
            pairs(&[("content-type", "application/json")])
        );
    }

    #[test]
    fn header_transformer_rename_spec() {
        let t = rt(json!({"rename": {"headers": ["h1:h2", "h3:h4"]}}));
        // header if the header exists
        let mut r = resp(&[("h1", "v1"), ("h3", "v3")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h2", "v1"), ("h4", "v3")]));
        // header if the header exists and is empty
        let mut r = resp(&[("h1", "")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h2", " ")]));
        // does not add as new header if header is not present
        let mut r = resp(&[]);
        run_headers(&t, &mut r);
        assert!(headers_of(&r).is_empty());
        // header rename when same header being set twice
        let mut r = resp(&[("h1", "v1"), ("h1", "v2")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h2", "v1"), ("h2", "v2")]));
    }

    #[test]
    fn header_transformer_replace_add_append_spec() {
        let t = rt(
            json!({"replace": {"headers": ["h1:v1", "h2:value:2"]}, "add": {"json": ["p1:v1"]}}),
        );
        let mut r = resp(&[("h1", "value1"), ("h2", "value2a"), ("h2", "value2b")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h1", "v1"), ("h2", "value:2")]));
        let mut r = resp(&[("h2", "value2a"), ("h2", "value2b")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h2", "value:2")]));

        let t = rt(json!({"add": {"headers": ["h2:v2"], "json": ["p1:v1"]}}));
        let mut r = resp(&[("h1", "v1")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h1", "v1"), ("h2", "v2")]));
        let mut r = resp(&[("h1", "v1"), ("h2", "v3")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h1", "v1"), ("h2", "v3")]));

        let t = rt(json!({"append": {"headers": ["h1:v2"]}, "add": {"json": ["p1:v1"]}}));
        let mut r = resp(&[]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h1", "v2")]));
        let mut r = resp(&[("h1", "v1")]);
        run_headers(&t, &mut r);
        assert_eq!(headers_of(&r), pairs(&[("h1", "v1"), ("h1", "v2")]));

        // performing remove, replace, add, append together
        let t = rt(json!({
            "remove": {"headers": ["h1:v1"]}, "replace": {"headers": ["h2:v3"]},
            "add": {"headers": ["h3:v3"], "json": ["p1:v1"]}, "append": {"headers": ["h3:v4"]}
        }));
        let mut r = resp(&[("h1", "v1"), ("h2", "v2")]);
        run_headers(&t, &mut r);
        assert_eq!(
            headers_of(&r),
            pairs(&[("h2", "v3"), ("h3", "v3"), ("h3", "v4")])
        );
    }

    #[test]
    fn content_length_only_dropped_for_json_with_a_json_transform() {
        for op in ["remove", "replace", "add", "append"] {
            let json = if op == "remove" {
                json!(["p1"])
            } else {
                json!(["p1:v1", "p2:v1"])
            };
            let t = rt(json!({ op: {"json": json, "headers": []} }));
            for (ct, dropped) in [
                ("application/json", true),
                ("application/json; charset=utf-8", true),
                ("application/x-www-form-urlencoded; charset=utf-8", false),
            ] {
                let mut r = resp(&[("Content-Length", "100"), ("Content-Type", ct)]);
                run_headers(&t, &mut r);
                assert_eq!(
                    r.headers.get("content-length").is_none(),
                    dropped,
                    "{op} {ct}"
                );
            }
            // does not set content-length nil if any of json not set
            let t = rt(json!({ op: {"headers": ["h1:v1"]} }));
            let mut r = resp(&[
                ("Content-Length", "100"),
                ("Content-Type", "application/json"),
            ]);
            run_headers(&t, &mut r);
            assert!(r.headers.get("content-length").is_some(), "{op}");
        }
    }

    // 02-body_transformer_spec.lua
    #[test]
    fn body_transformer_add_spec() {
        let t = rt(json!({"add": {
            "json": ["p1:v1", "p3:value:3", "p4:\"v1\"", "p5:-1", "p6:false", "p7:true"],
            "json_types": ["string", "string", "string", "number", "boolean", "boolean"]
        }}));
        let full =
            json!({"p1": "v1", "p3": "value:3", "p4": "\"v1\"", "p5": -1, "p6": false, "p7": true});
        let with = |extra: Value| {
            let mut m = full.as_object().unwrap().clone();
            for (k, v) in extra.as_object().unwrap() {
                m.insert(k.clone(), v.clone());
            }
            Value::Object(m)
        };
        assert_eq!(body(&t, r#"{"p2":"v1"}"#), with(json!({"p2": "v1"})));
        assert_eq!(body(&t, r#"{"p2":-1}"#), with(json!({"p2": -1})));
        assert_eq!(body(&t, r#"{"p2":false}"#), with(json!({"p2": false})));
        let out = t.transform_json_body(br#"{"p2":"v1", "a":[]}"#).unwrap();
        assert!(out.contains(r#""a":[]"#), "{out}");
        // add overwrites false, keeps null and other values
        let t = rt(json!({"add": {"json": ["a:x", "b:x", "c:x"]}}));
        assert_eq!(
            body(&t, r#"{"a":false,"b":null,"c":0}"#),
            json!({"a": "x", "b": null, "c": 0})
        );
    }

    #[test]
    fn body_transformer_append_spec() {
        let t = rt(json!({"append": {
            "json": ["p1:v1", "p3:\"v1\"", "p4:-1", "p5:false", "p6:true"],
            "json_types": ["string", "string", "number", "boolean", "boolean"]
        }}));
        assert_eq!(
            body(&t, r#"{"p2":"v1"}"#),
            json!({"p2": "v1", "p1": ["v1"], "p3": ["\"v1\""], "p4": [-1], "p5": [false], "p6": [true]})
        );
        assert_eq!(
            body(&t, r#"{"p1":"v2"}"#),
            json!({"p1": ["v2", "v1"], "p3": ["\"v1\""], "p4": [-1], "p5": [false], "p6": [true]})
        );
        assert_eq!(
            body(&t, r#"{"p3":"v2"}"#),
            json!({"p1": ["v1"], "p3": ["v2", "\"v1\""], "p4": [-1], "p5": [false], "p6": [true]})
        );
        assert_eq!(
            body(&t, r#"{"p4":"v2"}"#),
            json!({"p1": ["v1"], "p3": ["\"v1\""], "p4": ["v2", -1], "p5": [false], "p6": [true]})
        );
        assert_eq!(
            body(&t, r#"{"p5":"v5", "p6":"v6"}"#),
            json!({"p1": ["v1"], "p3": ["\"v1\""], "p4": [-1], "p5": ["v5", false], "p6": ["v6", true]})
        );
        let out = t.transform_json_body(br#"{"p2":"v1", "a":[]}"#).unwrap();
        assert!(out.contains(r#""a":[]"#), "{out}");
    }

    #[test]
    fn body_transformer_remove_rename_spec() {
        let t = rt(json!({"remove": {"json": ["p1", "p2"]}}));
        assert_eq!(
            t.transform_json_body(br#"{"p1" : "v1", "p2" : "v1"}"#)
                .unwrap(),
            "{}"
        );
        assert_eq!(
            t.transform_json_body(br#"{"p1" : "v1", "p2" : "v1", "a": []}"#)
                .unwrap(),
            r#"{"a":[]}"#
        );
        let t = rt(json!({"rename": {"json": ["p1:k1", "p2:k2", "p3:k3", "p4:k4", "p5:k5"]}}));
        assert_eq!(
            body(&t, r#"{"p1" : "v1", "p2" : "v2"}"#),
            json!({"k1": "v1", "k2": "v2"})
        );
        assert_eq!(
            body(&t, r#"{"p1" : "v1", "p2" : "v2", "p3": []}"#),
            json!({"k1": "v1", "k2": "v2", "k3": []})
        );
        assert_eq!(body(&t, r#"{"p3" : -1}"#), json!({"k3": -1}));
        assert_eq!(
            body(&t, r#"{"p4" : false, "p5" : true}"#),
            json!({"k4": false, "k5": true})
        );
    }

    #[test]
    fn body_transformer_replace_spec() {
        let t = rt(json!({"replace": {
            "json": ["p1:v2", "p2:\"v2\"", "p3:-1", "p4:false", "p5:true"],
            "json_types": ["string", "string", "number", "boolean", "boolean"]
        }}));
        assert_eq!(
            body(&t, r#"{"p1" : "v1", "p2" : "v1"}"#),
            json!({"p1": "v2", "p2": "\"v2\""})
        );
        assert_eq!(body(&t, r#"{"p1" : "v1"}"#), json!({"p1": "v2"}));
        assert_eq!(body(&t, r#"{"p2" : "v1"}"#), json!({"p2": "\"v2\""}));
        assert_eq!(body(&t, r#"{"p3" : "v1"}"#), json!({"p3": -1}));
        assert_eq!(
            body(&t, r#"{"p4" : "v4", "p5" : "v5"}"#),
            json!({"p4": false, "p5": true})
        );
        // only truthy values are replaced
        assert_eq!(
            body(&t, r#"{"p1" : false, "p2": null}"#),
            json!({"p1": false, "p2": "\"v2\""})
        );
    }

    #[test]
    fn body_transformer_combination_spec() {
        let t = rt(json!({
            "remove": {"json": ["p1"]}, "rename": {"json": ["p4:p2"]}, "replace": {"json": ["p2:v2"]},
            "add": {"json": ["p3:v1"]}, "append": {"json": ["p3:v2"]}
        }));
        assert_eq!(
            body(&t, r#"{"p1" : "v1", "p4" : "v1"}"#),
            json!({"p2": "v2", "p3": ["v1", "v2"]})
        );
        assert_eq!(
            body(&t, r#"{"p1" : "v1", "p4" : "v1", "a" : []}"#),
            json!({"p2": "v2", "p3": ["v1", "v2"], "a": []})
        );
    }

    // "handle unexpected body type": gracefully fails transforming invalid json body
    #[test]
    fn invalid_json_is_left_alone() {
        let t = rt(json!({"remove": {"json": ["foo"]}}));
        assert!(t.transform_json_body(b"not a json value").is_none());
        assert!(t.transform_json_body(b"").is_none());
        assert!(t.transform_json_body(b"\"str\"").is_none());
    }

    #[test]
    fn json_values_are_escaped_like_kong() {
        // Slashes and quotes are unescaped again; other escapes stay.
        assert_eq!(json_value("/a/\"b\"", None), Some(json!("/a/\"b\"")));
        assert_eq!(json_value("a\\b", None), Some(json!("a\\\\b")));
        assert_eq!(
            json_value("0x10", Some(JsonType::Number)),
            Some(json!(16.0))
        );
        assert_eq!(json_value("abc", Some(JsonType::Number)), None);
        assert_eq!(
            json_value("yes", Some(JsonType::Boolean)),
            Some(json!(false))
        );
    }

    #[test]
    fn cjson_encoding() {
        assert_eq!(
            cjson_encode(
                &json!({"u": "http://x/y", "n": 1.0, "big": 12345678901234567u64, "f": 0.1, "c": "\u{1}\u{7f}é"})
            ),
            r#"{"u":"http:\/\/x\/y","n":1,"big":1.2345678901235e+16,"f":0.1,"c":"\u0001\u007fé"}"#
        );
        assert_eq!(lua_number(1e14), "1e+14");
        assert_eq!(lua_number(99999999999999.0), "99999999999999");
        assert_eq!(lua_number(0.0001), "0.0001");
        assert_eq!(lua_number(0.00001), "1e-05");
        assert_eq!(lua_number(-2.5), "-2.5");
        assert_eq!(lua_number(1.0 / 3.0), "0.33333333333333");
    }

    #[test]
    fn schema_messages_follow_kong() {
        let s = schema();
        let err = |c: Value| {
            config_sync::schema::validate_record(&s.config, &c, "config")
                .unwrap_err()
                .into_iter()
                .map(|e| (e.path, e.message))
                .collect::<Vec<_>>()
        };
        // 03-api_spec.lua
        assert_eq!(
            err(json!({"rename": {"headers": ["x-request-idx-custom-request-id"]}})),
            vec![(
                "config.rename.headers.1".to_string(),
                "invalid value: x-request-idx-custom-request-id".to_string()
            )]
        );
        assert_eq!(
            err(json!({"rename": {"headers": ["x-requ,est-id:x-custom-request-id"]}})),
            vec![(
                "config.rename.headers.1".to_string(),
                "'x-requ,est-id' is not a valid header".to_string()
            )]
        );
        for op in ["add", "replace", "append"] {
            assert_eq!(
                err(json!({ op: {"headers": ["just_a_key"]} })),
                vec![(
                    format!("config.{op}.headers.1"),
                    "invalid value: just_a_key".to_string()
                )]
            );
        }
        assert_eq!(
            err(json!({"add": {"json_types": ["int"]}})),
            vec![(
                "config.add.json_types.1".to_string(),
                "expected one of: boolean, number, string".to_string()
            )]
        );
        let ok = config_sync::schema::validate_record(
            &s.config,
            &json!({"remove": {"headers": ["just_a_key"], "json": ["just_a_key"]},
                    "rename": {"headers": ["x-request-id:x-custom-request-id"], "json": ["old_key:new_key"]}}),
            "config",
        )
        .unwrap();
        assert_eq!(
            ok["add"],
            json!({"json": [], "json_types": [], "headers": []})
        );
    }
}
