//! The `request-termination` plugin (Kong's
//! `kong/plugins/request-termination`): answers every request itself with
//! a configured status and message or raw body, or echoes the request back
//! (`echo`), optionally only when a `trigger` header or query argument is
//! present.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use config_sync::model;
use config_sync::schema::{
    boolean, integer, string, EntityCheck, PluginSchema, Record, PROTOCOLS_HTTP,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{log_serializer, Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "request-termination";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 2,
    version: VERSION,
    schema,
    build,
};

fn schema() -> PluginSchema {
    let config = Record::new(vec![
        (
            "status_code",
            integer().required().default(503).between(100.0, 599.0),
        ),
        ("message", string()),
        ("content_type", string()),
        ("body", string()),
        ("echo", boolean().required().default(false)),
        // typedefs.header_name
        ("trigger", string().custom(header_name)),
    ])
    .with_checks(vec![EntityCheck::RecordValidator(check_config)]);
    PluginSchema {
        name: NAME,
        config,
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

fn header_name(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some(s) => config_sync::validate::validate_header_name(s),
        None => Ok(()),
    }
}

/// The config's `custom_validator` (`schema.lua`), reported at `config`.
fn check_config(c: &Map<String, Value>) -> Result<(), String> {
    let present = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if present("message") && (present("content_type") || present("body")) {
        return Err("message cannot be used with content_type or body".into());
    }
    if present("content_type") && !present("body") {
        return Err("content_type requires a body".into());
    }
    let echo = c.get("echo").and_then(Value::as_bool).unwrap_or(false);
    if echo && (present("content_type") || present("body")) {
        return Err("echo cannot be used with content_type and body".into());
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Config {
    status_code: u16,
    message: Option<String>,
    content_type: Option<String>,
    body: Option<String>,
    echo: bool,
    trigger: Option<String>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Config = serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(RequestTermination {
        conf,
        loaded_at: super::consumers::now_secs(),
    }))
}

/// Whether a config has an instance that echoes the matched route and
/// service: only then does the snapshot keep their entities.
pub fn echoes_entities(plugins: &[model::Plugin]) -> bool {
    plugins
        .iter()
        .any(|p| p.enabled && p.name == NAME && p.config.get("echo") == Some(&Value::Bool(true)))
}

/// `DEFAULT_RESPONSE` (`handler.lua`): any other status without a message
/// has an empty body.
fn default_message(status: u16) -> Option<&'static str> {
    Some(match status {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

struct RequestTermination {
    conf: Config,
    /// When the config was loaded: the entities' `created_at` /
    /// `updated_at` (Kong's declarative import stamps them so).
    loaded_at: u64,
}

#[async_trait]
impl Plugin for RequestTermination {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn needs_request_body(&self) -> bool {
        // Only the echo shows the body.
        self.conf.echo
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let conf = &self.conf;
        let status = conf.status_code;
        if let Some(trigger) = &conf.trigger {
            // `get_headers()` looks names up case- and `_`/`-`-insensitively;
            // `get_query()` by the exact key.
            let name = trigger.to_ascii_lowercase().replace('_', "-");
            let in_headers = kong.headers().contains_key(name.as_str());
            if !in_headers && kong.query_arg(trigger).is_none() {
                return Ok(());
            }
        }
        if conf.echo {
            return Err(Exit::json(status, echo(kong, conf, self.loaded_at)));
        }
        if let Some(body) = &conf.body {
            let exit = Exit::raw(status, body.clone().into_bytes());
            return Err(match &conf.content_type {
                Some(ct) => exit.header("Content-Type", ct.clone()),
                None => exit,
            });
        }
        match conf.message.as_deref().or(default_message(status)) {
            Some(m) => Err(Exit::message(status, m)),
            None => Err(Exit::status(status)),
        }
    }
}

/// The `echo` answer: the request, the matched route and service, and
/// this node (`handler.lua`).
fn echo(kong: &Kong<'_>, conf: &Config, conf_loaded_at: u64) -> Value {
    let mut out = Map::new();
    if let Some(m) = conf
        .message
        .as_deref()
        .or(default_message(conf.status_code))
    {
        out.insert("message".into(), json!(m));
    }
    out.insert(
        "kong".into(),
        json!({
            "node_id": kong.node_id(),
            "worker_pid": std::process::id(),
            "hostname": hostname(),
        }),
    );
    let mut request = Map::new();
    request.insert("scheme".into(), json!(kong.scheme()));
    request.insert("host".into(), json!(request_host(kong)));
    request.insert(
        "port".into(),
        kong.server_addr().map_or(Value::Null, |a| json!(a.port())),
    );
    request.insert("headers".into(), Value::Object(request_headers(kong)));
    request.insert("query".into(), Value::Object(parse_args(&kong.raw_query())));
    if let Some(raw) = kong.request_body() {
        if let Some(body) = parsed_body(kong, raw) {
            request.insert("body".into(), body);
        }
        request.insert(
            "raw_body".into(),
            json!(String::from_utf8_lossy(raw).into_owned()),
        );
    }
    request.insert("method".into(), json!(kong.method().as_str()));
    request.insert("path".into(), json!(kong.path()));
    request.insert("uri_captures".into(), uri_captures(kong));
    out.insert("request".into(), Value::Object(request));
    // The DAO rows, as the log serializer shows them too.
    let loaded_at = conf_loaded_at;
    out.insert(
        "matched_route".into(),
        kong.route()
            .and_then(|r| r.entity.as_deref())
            .map_or(Value::Null, |r| log_serializer::route_json(r, loaded_at)),
    );
    out.insert(
        "matched_service".into(),
        kong.service()
            .and_then(|s| s.entity.as_deref())
            .map_or(Value::Null, |s| log_serializer::service_json(s, loaded_at)),
    );
    Value::Object(out)
}

/// `kong.node.get_hostname()`, read once (`gethostname()` without unsafe).
fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// nginx's `$host`: the request line's host, else the Host header's, without
/// the port and lower-cased.
fn request_host(kong: &Kong<'_>) -> String {
    let target = kong.raw_target();
    let from_target = target.split_once("://").map(|(_, rest)| {
        rest.split(['/', '?'])
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let raw = from_target.or_else(|| kong.header("host").map(str::to_string));
    let Some(raw) = raw else {
        return String::new();
    };
    let host = match raw.strip_prefix('[') {
        // [v6]:port keeps its brackets, as nginx does.
        Some(rest) => match rest.split_once(']') {
            Some((inner, _)) => format!("[{inner}]"),
            None => raw.clone(),
        },
        None => raw.split(':').next().unwrap_or_default().to_string(),
    };
    host.to_ascii_lowercase()
}

/// `kong.request.get_headers()`: lower-case names, repeated ones as arrays.
fn request_headers(kong: &Kong<'_>) -> Map<String, Value> {
    let headers = kong.headers();
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| json!(String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let v = match <[Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        };
        out.insert(name.as_str().to_string(), v);
    }
    out
}

/// nginx's argument parsing (`ngx.req.get_uri_args` / `get_post_args`): `+`
/// is a space, a key without `=` is `true`, repeated keys make arrays.
fn parse_args(raw: &str) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (decode(k), Value::String(decode(v))),
            None => (decode(pair), Value::Bool(true)),
        };
        if k.is_empty() {
            continue;
        }
        match out.get_mut(&k) {
            Some(Value::Array(list)) => list.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// `kong.request.get_body()`: JSON and urlencoded bodies by their content
/// type; `nil` (left out) otherwise. Multipart bodies are not parsed here.
fn parsed_body(kong: &Kong<'_>, raw: &[u8]) -> Option<Value> {
    let ct = kong.header("content-type")?.to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(raw);
        Some(Value::Object(parse_args(&text)))
    } else if ct.starts_with("application/json") {
        serde_json::from_slice(raw).ok()
    } else {
        None
    }
}

/// `kong.request.get_uri_captures()`: numbered groups from 1 (group 0, the
/// whole match, is not part of Kong's array) and named ones.
fn uri_captures(kong: &Kong<'_>) -> Value {
    let mut unnamed = Vec::new();
    let mut named = Map::new();
    for (i, (name, text)) in kong.uri_captures().iter().enumerate() {
        match name {
            Some(n) => {
                named.insert(n.clone(), json!(text));
            }
            None if i > 0 => unnamed.push(json!(text)),
            None => {}
        }
    }
    json!({ "named": named, "unnamed": unnamed })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;

    fn check(v: Value) -> Result<Value, Vec<(String, String)>> {
        validate_record(&schema().config, &v, "config")
            .map_err(|e| e.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn schema_matches_kongs_spec() {
        // 01-schema_spec.lua
        for ok in [
            json!({"status_code": 404}),
            json!({"message": "Not found"}),
            json!({"content_type": "text/html", "body": "<body><h1>Not found</h1>"}),
            json!({"body": "<body><h1>Not found</h1>"}),
            json!({"echo": true, "trigger": "header_name"}),
        ] {
            assert!(check(ok.clone()).is_ok(), "{ok}");
        }
        let one = |v: Value| check(v).unwrap_err().remove(0);
        assert_eq!(
            one(json!({"status_code": "abcd"})),
            ("config.status_code".into(), "expected an integer".into())
        );
        assert_eq!(
            one(json!({"status_code": null})),
            ("config.status_code".into(), "required field missing".into())
        );
        for bad in [99, 600] {
            assert_eq!(
                one(json!({"status_code": bad})).1,
                "value should be between 100 and 599"
            );
        }
        let at_config = |v: Value, msg: &str| {
            assert_eq!(one(v), ("config".to_string(), msg.to_string()));
        };
        let msg = "message cannot be used with content_type or body";
        at_config(json!({"message": "error", "body": "test"}), msg);
        at_config(
            json!({"message": "error", "content_type": "text/html", "body": "test"}),
            msg,
        );
        at_config(
            json!({"message": "error", "content_type": "text/html"}),
            msg,
        );
        at_config(
            json!({"content_type": "text/html"}),
            "content_type requires a body",
        );
        at_config(
            json!({"echo": true, "content_type": "text/html", "body": "<body><h1>Not found</h1>"}),
            "echo cannot be used with content_type and body",
        );
        assert_eq!(
            one(json!({"trigger": "a b"})),
            (
                "config.trigger".into(),
                "bad header name 'a b', allowed characters are A-Z, a-z, 0-9, '_', and '-'".into()
            )
        );
    }

    #[test]
    fn default_messages_are_kongs() {
        assert_eq!(default_message(503), Some("Service unavailable"));
        assert_eq!(default_message(404), Some("Not found"));
        assert_eq!(default_message(418), None);
        assert_eq!(default_message(204), None);
    }

    #[test]
    fn args_parse_like_nginx() {
        let m = parse_args("hello=there&flag&a=1&a=2&sp=a+b%20c&=x&empty=");
        assert_eq!(
            Value::Object(m),
            json!({"hello": "there", "flag": true, "a": ["1", "2"], "sp": "a b c", "empty": ""})
        );
    }
}
