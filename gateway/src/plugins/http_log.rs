//! The `http-log` plugin (Kong's `kong/plugins/http-log`): each request's
//! serialized log entry is queued ([`super::queue`]) and sent to
//! `http_endpoint` with `method`, as one JSON object (`max_batch_size` 1)
//! or a JSON array of entries. A batch went through when the collector
//! answers below 300; otherwise the queue retries it.
//!
//! Kong's details kept (`handler.lua`): the queue name is built from the
//! endpoint settings, so instances sharing them share a queue; userinfo in
//! the URL becomes `Authorization: Basic`; configured headers never
//! replace `Content-Type`, `Content-Length` or that `Authorization`; the
//! request goes to `scheme://host:port` + the URL's path only (its query is
//! dropped, as Kong's `fmt("%s://%s:%d%s")` drops it); the collector's
//! certificate is not verified; connections are kept for `keepalive` ms.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use config_sync::schema::{
    map, number, string, Check, EntityCheck, PluginSchema, Record, PROTOCOLS_HTTP,
};
use config_sync::validate::{is_vault_reference, validate_header_name};
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::log_io::{self, LogIo};
use super::queue::{self, Handler, Owner, QueueConf, QueueParams, Sending};
use super::{log_serializer, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "http-log";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 12,
    version: VERSION,
    schema,
    build,
};

/// `typedefs.protocols`: every protocol may be named (`kong/constants.lua`).
pub const PROTOCOLS_ALL: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];

fn schema() -> PluginSchema {
    // `typedefs.header_name { match_none = ... }`. Kong's Content-Length
    // pattern reads `[Ee][nn][Gg]`: only a lower-case `n` is caught there.
    let refused: Vec<(Arc<regex::Regex>, &'static str)> = [
        ("^[Hh][Oo][Ss][Tt]$", "cannot contain 'Host' header"),
        (
            "^[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][n][Gg][Tt][Hh]$",
            "cannot contain 'Content-Length' header",
        ),
        (
            "^[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Tt][Yy][Pp][Ee]$",
            "cannot contain 'Content-Type' header",
        ),
    ]
    .into_iter()
    .filter_map(|(p, e)| regex::Regex::new(p).ok().map(|r| (Arc::new(r), e)))
    .collect();
    let header_name = string()
        .check(Check::MatchNone(refused))
        .custom(|v| match v.as_str() {
            Some(s) => validate_header_name(s),
            None => Ok(()),
        });
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("http_endpoint", string().required().custom(validate_url)),
            (
                "method",
                string().default("POST").one_of(&["POST", "PUT", "PATCH"]),
            ),
            (
                "content_type",
                string()
                    .default("application/json")
                    .one_of(&["application/json", "application/json; charset=utf-8"]),
            ),
            ("timeout", number().default(10000)),
            ("keepalive", number().default(60000)),
            // Deprecated (Kong 4.0 removes them): `queue_size` and
            // `flush_timeout` still map onto the queue.
            ("retry_count", config_sync::schema::integer()),
            ("queue_size", config_sync::schema::integer()),
            ("flush_timeout", number()),
            ("headers", map(header_name, string())),
            ("queue", queue::schema()),
            ("custom_fields_by_lua", log_serializer::lua_code_refused()),
        ])
        .with_checks(vec![EntityCheck::RecordValidator(no_double_authorization)]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_ALL,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// `typedefs.url` (`validate_url`): LuaSocket must find a host and a
/// scheme. Referenceable: a vault reference is checked once resolved.
fn validate_url(v: &Value) -> Result<(), String> {
    let Some(s) = v.as_str() else { return Ok(()) };
    if is_vault_reference(s) {
        return Ok(());
    }
    let Some(u) = parse_url(s) else {
        return Err("could not parse url. invalid url".into());
    };
    if u.host.is_none() {
        return Err("missing host in url".into());
    }
    if u.scheme.is_none() {
        return Err("missing scheme in url".into());
    }
    Ok(())
}

/// The config's `custom_validator`: userinfo already makes the
/// `Authorization` header.
fn no_double_authorization(cfg: &Map<String, Value>) -> Result<(), String> {
    let userinfo = cfg
        .get("http_endpoint")
        .and_then(Value::as_str)
        .and_then(parse_url)
        .is_some_and(|u| u.userinfo.is_some());
    let authorization = cfg
        .get("headers")
        .and_then(Value::as_object)
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("authorization")));
    if userinfo && authorization {
        return Err(
            "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed"
                .into(),
        );
    }
    Ok(())
}

/// A URL as LuaSocket's `socket.url.parse` splits it (Kong parses
/// `http_endpoint` with it): lenient, never fails on a non-empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedUrl {
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub userinfo: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
    pub params: Option<String>,
    pub query: Option<String>,
    pub fragment: Option<String>,
}

/// `socket.url.parse(url)`; `None` for the empty string.
pub fn parse_url(url: &str) -> Option<ParsedUrl> {
    if url.is_empty() {
        return None;
    }
    let mut p = ParsedUrl::default();
    let mut rest = url;
    // ^([%w][%w%+%-%.]*)%:
    let scheme_len = {
        let b = rest.as_bytes();
        if b.first().is_some_and(u8::is_ascii_alphanumeric) {
            let n = b
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
                .count();
            (b.get(n) == Some(&b':')).then_some(n)
        } else {
            None
        }
    };
    if let Some(n) = scheme_len {
        p.scheme = Some(rest[..n].to_string());
        rest = &rest[n + 1..];
    }
    // ^//([^/]*)
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        p.authority = Some(after[..end].to_string());
        rest = &after[end..];
    }
    // #(.*)$, then %?(.*), then %;(.*): each from its first occurrence.
    if let Some(i) = rest.find('#') {
        p.fragment = Some(rest[i + 1..].to_string());
        rest = &rest[..i];
    }
    if let Some(i) = rest.find('?') {
        p.query = Some(rest[i + 1..].to_string());
        rest = &rest[..i];
    }
    if let Some(i) = rest.find(';') {
        p.params = Some(rest[i + 1..].to_string());
        rest = &rest[..i];
    }
    if !rest.is_empty() {
        p.path = Some(rest.to_string());
    }
    let Some(authority) = p.authority.clone() else {
        return Some(p);
    };
    let mut auth = authority.as_str();
    // ^([^@]*)@
    if let Some(i) = auth.find('@') {
        p.userinfo = Some(auth[..i].to_string());
        auth = &auth[i + 1..];
    }
    // :([^:%]]*)$
    if let Some(i) = auth.rfind(':') {
        if !auth[i + 1..].contains(']') {
            p.port = Some(auth[i + 1..].to_string());
            auth = &auth[..i];
        }
    }
    if !auth.is_empty() {
        // ^%[(.+)%]$: an IPv6 literal.
        let host = match auth.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            Some(inner) if !inner.is_empty() => inner,
            _ => auth,
        };
        p.host = Some(host.to_string());
    }
    Some(p)
}

/// Kong's env vault (`{vault://env/<name>}`): the environment variable
/// named upper-case with `-` as `_`. Other vaults are not available here;
/// an unresolved reference is left as written (Kong logs and keeps it).
fn dereference(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix("{vault://env/")
        .and_then(|v| v.strip_suffix('}'))
    else {
        return value.to_string();
    };
    let name = inner.split('/').next().unwrap_or(inner);
    let var = name.to_ascii_uppercase().replace('-', "_");
    match std::env::var(&var) {
        Ok(v) => v,
        Err(_) => {
            log::error!(
                "{NAME}: could not resolve reference {value} (env var \"{var}\" not found)"
            );
            value.to_string()
        }
    }
}

/// A validated `config`.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpLogConfig {
    pub http_endpoint: String,
    pub method: String,
    pub content_type: String,
    pub timeout: f64,
    pub keepalive: f64,
    pub retry_count: Option<i64>,
    pub queue_size: Option<i64>,
    pub flush_timeout: Option<f64>,
    pub headers: Option<Map<String, Value>>,
    pub queue: QueueParams,
}

/// How Lua's `tostring` prints a number (`%.14g`).
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl HttpLogConfig {
    /// Kong's `make_queue_name`: the legacy endpoint settings, so that
    /// instances logging to the same place share a queue.
    pub fn queue_name(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.http_endpoint,
            self.method,
            self.content_type,
            lua_number(self.timeout),
            lua_number(self.keepalive),
            self.retry_count
                .map_or_else(|| "nil".to_string(), |n| n.to_string()),
        )
    }

    /// `Queue.get_plugin_params`: the `queue` record, with the deprecated
    /// `queue_size` / `flush_timeout` moved in when set off their old
    /// defaults.
    pub fn queue_params(&self) -> QueueParams {
        let mut q = self.queue.clone();
        if let Some(n) = self.queue_size.filter(|&n| n != 1) {
            q.max_batch_size = u64::try_from(n).unwrap_or(1).max(1);
        }
        if let Some(t) = self.flush_timeout.filter(|&t| t != 2.0) {
            q.max_coalescing_delay = t;
        }
        q
    }
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let mut cfg: HttpLogConfig =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    // Referenceable fields, resolved as Kong resolves them before `log`.
    cfg.http_endpoint = dereference(&cfg.http_endpoint);
    if let Some(h) = cfg.headers.as_mut() {
        for v in h.values_mut() {
            if let Some(s) = v.as_str() {
                *v = Value::String(dereference(s));
            }
        }
    }
    // Kong's `log_tag`: `<plugin> plugin <id>[ (<instance name>)]`.
    let tag = match i.instance_name {
        Some(n) => format!("{NAME} plugin {} ({n})", i.id),
        None => format!("{NAME} plugin {}", i.id),
    };
    if cfg.retry_count.is_some_and(|n| n != 10) {
        log::warn!("[{tag}] the retry_count parameter no longer works, please update your configuration to use initial_retry_delay and max_retry_time instead");
    }
    if cfg.queue_size.is_some_and(|n| n != 1) {
        log::warn!("[{tag}] the queue_size parameter is deprecated, please update your configuration to use queue.max_batch_size instead");
    }
    if cfg.flush_timeout.is_some_and(|t| t != 2.0) {
        log::warn!("[{tag}] the flush_timeout parameter is deprecated, please update your configuration to use queue.max_coalescing_delay instead");
    }
    let params = cfg.queue_params();
    let sender = Sender::new(&cfg, params.max_batch_size == 1);
    Ok(Arc::new(HttpLog {
        id: i.id,
        queue: QueueConf {
            name: cfg.queue_name(),
            log_tag: tag,
            params,
        },
        sender: Arc::new(sender),
        owner: OnceLock::new(),
    }))
}

struct HttpLog {
    id: Uuid,
    queue: QueueConf,
    sender: Arc<Sender>,
    /// This instance's handle in `env().store` (kept across config swaps).
    owner: OnceLock<Arc<Owner>>,
}

impl Plugin for HttpLog {
    fn phases(&self) -> Phases {
        Phases::LOG
    }

    fn log(&self, kong: &mut Kong<'_>) {
        let entry = log_serializer::serialize(kong).to_string();
        let owner = self
            .owner
            .get_or_init(|| kong.env().store.get_or_init(self.id, Owner::default));
        if let Err(e) = queue::enqueue(
            &kong.env().io,
            &self.queue,
            owner,
            self.sender.clone(),
            entry,
        ) {
            log::error!("[{NAME}] Failed to enqueue log entry to log server: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// sending

/// Where batches go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// The URL's path (`/` when it has none).
    path: String,
    /// resty.http's `Host`: the host, with the port when not the default.
    host_header: String,
}

impl Target {
    fn from_url(url: &str) -> Result<Target, String> {
        let u = parse_url(url).ok_or_else(|| format!("invalid url '{url}'"))?;
        let host = u
            .host
            .ok_or_else(|| format!("missing host in url '{url}'"))?;
        let tls = match u.scheme.as_deref() {
            Some("http") => false,
            Some("https") => true,
            other => {
                return Err(format!(
                    "unsupported scheme '{}' in url '{url}'",
                    other.unwrap_or("")
                ))
            }
        };
        let default_port = if tls { 443 } else { 80 };
        let port = match u.port.as_deref() {
            None | Some("") => default_port,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("invalid port '{p}' in url '{url}'"))?,
        };
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(Target {
            tls,
            host,
            port,
            path: u.path.unwrap_or_else(|| "/".into()),
            host_header,
        })
    }

    fn pool_key(&self) -> String {
        format!("{}|{}|{}", self.tls, self.host, self.port)
    }
}

/// The queue's handler: one instance's endpoint settings (Kong's
/// `send_entries` with its `conf`).
struct Sender {
    target: Result<Target, String>,
    method: http::Method,
    content_type: String,
    authorization: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    /// `None`: kept without limit (a cosocket keepalive of 0).
    keepalive: Option<Duration>,
    /// `max_batch_size == 1`: the body is the entry itself, not an array.
    single: bool,
}

impl Sender {
    fn new(cfg: &HttpLogConfig, single: bool) -> Sender {
        use base64::Engine as _;
        let target = Target::from_url(&cfg.http_endpoint);
        let authorization = parse_url(&cfg.http_endpoint)
            .and_then(|u| u.userinfo)
            .map(|ui| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(ui)
                )
            });
        let mut headers = Vec::new();
        for (k, v) in cfg.headers.iter().flatten() {
            let Some(v) = v.as_str() else { continue };
            // `headers[h] = headers[h] or v`: never over Kong's own.
            let own = k.eq_ignore_ascii_case("content-type")
                || k.eq_ignore_ascii_case("content-length")
                || (authorization.is_some() && k.eq_ignore_ascii_case("authorization"));
            if own {
                continue;
            }
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => log::warn!("[{NAME}] header '{k}' cannot be sent and is left out"),
            }
        }
        Sender {
            target,
            method: http::Method::from_bytes(cfg.method.as_bytes()).unwrap_or(http::Method::POST),
            content_type: cfg.content_type.clone(),
            authorization,
            headers,
            timeout: log_io::millis(cfg.timeout),
            keepalive: (cfg.keepalive > 0.0).then(|| log_io::millis(cfg.keepalive)),
            single,
        }
    }

    /// The payload: the entry, or the entries as a JSON array.
    fn payload(&self, entries: &[String]) -> Bytes {
        if self.single && entries.len() == 1 {
            return Bytes::from(entries[0].clone());
        }
        let len = 2 + entries.iter().map(|e| e.len() + 1).sum::<usize>();
        let mut out = String::with_capacity(len);
        out.push('[');
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(e);
        }
        out.push(']');
        Bytes::from(out)
    }

    fn request(&self, t: &Target, body: Bytes) -> Result<http::Request<Full<Bytes>>, String> {
        let mut b = http::Request::builder()
            .method(self.method.clone())
            .uri(t.path.as_str())
            .header(http::header::HOST, t.host_header.as_str())
            .header(http::header::CONTENT_TYPE, self.content_type.as_str())
            .header(http::header::CONTENT_LENGTH, body.len());
        if let Some(a) = &self.authorization {
            b = b.header(http::header::AUTHORIZATION, a.as_str());
        }
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        b.body(Full::new(body)).map_err(|e| e.to_string())
    }

    async fn send(&self, io: &Arc<LogIo>, entries: &[String]) -> Result<(), String> {
        let t = self.target.as_ref().map_err(Clone::clone)?;
        let body = self.payload(entries);
        let (status, answer) = self
            .exchange(io, t, body)
            .await
            .map_err(|e| format!("failed request to {}:{}: {e}", t.host, t.port))?;
        log::debug!(
            "http-log sent data log server, {}:{} HTTP status {status}",
            t.host,
            t.port
        );
        if status < 300 {
            Ok(())
        } else {
            Err(format!(
                "request to {}:{} returned status code {status} and body {}",
                t.host,
                t.port,
                String::from_utf8_lossy(&answer)
            ))
        }
    }

    /// One request and its whole answer, on a kept connection when one is
    /// idle (a kept one the collector closed meanwhile gets one more try
    /// on a new connection).
    async fn exchange(
        &self,
        io: &Arc<LogIo>,
        t: &Target,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let key = t.pool_key();
        if let Some(mut conn) = pool_take(io, &key, self.keepalive) {
            match self
                .roundtrip(&mut conn, self.request(t, body.clone())?)
                .await
            {
                Ok(r) => {
                    pool_put(io, key, conn, self.keepalive);
                    return Ok(r);
                }
                // The collector closed the idle connection first: the
                // request did not get through, a new connection takes it.
                Err(Failed::Closed(_)) => {}
                Err(Failed::Other(e)) => return Err(e),
            }
        }
        let mut conn = connect(io, t, self.timeout).await?;
        let r = self
            .roundtrip(&mut conn, self.request(t, body)?)
            .await
            .map_err(Failed::into_message)?;
        pool_put(io, key, conn, self.keepalive);
        Ok(r)
    }

    async fn roundtrip(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), Failed> {
        let exchange = async {
            let resp = conn.send_request(req).await.map_err(Failed::from)?;
            let status = resp.status().as_u16();
            // Always read the answer (the connection is reused).
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(Failed::from)?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failed::Other("timeout".into()))?
    }
}

/// How a request to the collector failed.
enum Failed {
    /// The connection was closed before the answer began: on a kept
    /// connection, the collector had let it go.
    Closed(String),
    Other(String),
}

impl Failed {
    fn into_message(self) -> String {
        match self {
            Failed::Closed(m) | Failed::Other(m) => m,
        }
    }
}

impl From<hyper::Error> for Failed {
    fn from(e: hyper::Error) -> Failed {
        if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
            Failed::Closed(e.to_string())
        } else {
            Failed::Other(e.to_string())
        }
    }
}

impl Handler for Sender {
    fn handle<'a>(&'a self, io: &'a Arc<LogIo>, entries: &'a [String]) -> Sending<'a> {
        Box::pin(self.send(io, entries))
    }
}

async fn connect(
    io: &LogIo,
    t: &Target,
    timeout: Duration,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| log_io::io_error(&e))?;
    let _ = tcp.set_nodelay(true);
    if !t.tls {
        return handshake(io, tcp).await;
    }
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .map_err(|e| format!("bad server name: {e}"))?;
    let tls = tokio::time::timeout(timeout, io.tls(true).connect(name, tcp))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("handshake failed: {}", log_io::io_error(&e)))?;
    handshake(io, tls).await
}

async fn handshake<IO>(log_io: &LogIo, io: IO) -> Result<SendRequest<Full<Bytes>>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    log_io.spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Idle connections by target (the cosocket pool resty.http keeps them
/// in; 30 per target, as nginx's `lua_socket_pool_size`), each with the
/// time it went idle.
pub(super) type Idle = HashMap<String, Vec<(SendRequest<Full<Bytes>>, Instant)>>;

const POOL_SIZE: usize = 30;

fn fresh(idle_since: Instant, keepalive: Option<Duration>) -> bool {
    keepalive.is_none_or(|k| idle_since.elapsed() < k)
}

fn pool_take(
    io: &LogIo,
    key: &str,
    keepalive: Option<Duration>,
) -> Option<SendRequest<Full<Bytes>>> {
    let mut pool = log_io::lock(&io.http_idle);
    let list = pool.get_mut(key)?;
    while let Some((conn, idle_since)) = list.pop() {
        if fresh(idle_since, keepalive) && conn.is_ready() {
            return Some(conn);
        }
    }
    None
}

fn pool_put(
    io: &Arc<LogIo>,
    key: String,
    conn: SendRequest<Full<Bytes>>,
    keepalive: Option<Duration>,
) {
    if !conn.is_ready() {
        return;
    }
    {
        let mut pool = log_io::lock(&io.http_idle);
        let list = pool.entry(key.clone()).or_default();
        if list.len() >= POOL_SIZE {
            return;
        }
        list.push((conn, Instant::now()));
    }
    // Close it once idle for `keepalive`, as the cosocket pool does.
    if let Some(k) = keepalive {
        let held = io.clone();
        io.spawn(async move {
            tokio::time::sleep(k + Duration::from_millis(10)).await;
            let mut pool = log_io::lock(&held.http_idle);
            if let Some(list) = pool.get_mut(&key) {
                list.retain(|(c, at)| fresh(*at, Some(k)) && !c.is_closed());
                if list.is_empty() {
                    pool.remove(&key);
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::json;

    fn validate(config: Value) -> Result<Value, Vec<(String, String)>> {
        validate_record(&schema().config, &config, "config")
            .map_err(|e| e.into_iter().map(|e| (e.path, e.message)).collect())
    }

    fn one_error(config: Value) -> (String, String) {
        let e = validate(config).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap()
    }

    // spec/03-plugins/03-http-log/02-schema_spec.lua

    #[test]
    fn accepts_minimal_config_with_defaults() {
        let v = validate(json!({"http_endpoint": "http://myservice.test/path"})).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["content_type"], "application/json");
        assert_eq!(v["timeout"], 10000);
        assert_eq!(v["keepalive"], 60000);
        assert_eq!(v["queue"]["max_batch_size"], 1);
        assert_eq!(v["queue"]["max_coalescing_delay"], 1);
        assert_eq!(v["queue"]["max_entries"], 10000);
        assert_eq!(v["queue"]["max_retry_time"], 60);
        assert_eq!(v["queue"]["initial_retry_delay"], 0.01);
        assert_eq!(v["queue"]["max_retry_delay"], 60);
        assert_eq!(v["queue"]["concurrency_limit"], 1);
    }

    #[test]
    fn accepts_empty_headers_with_username_password_in_the_http_endpoint() {
        assert!(
            validate(json!({"http_endpoint": "http://bob:password@myservice.test/path"})).is_ok()
        );
    }

    #[test]
    fn does_accept_allowed_headers() {
        assert!(validate(json!({
            "http_endpoint": "http://myservice.test/path",
            "headers": {"X-My-Header": "123", "X-Your-Header": "abc"}
        }))
        .is_ok());
    }

    #[test]
    fn does_not_accept_empty_header_values() {
        assert_eq!(
            one_error(json!({
                "http_endpoint": "http://myservice.test/path",
                "headers": {"X-My-Header": ""}
            })),
            ("config.headers".into(), "length must be at least 1".into())
        );
    }

    #[test]
    fn does_not_accept_host_content_length_or_content_type_headers() {
        for (name, msg) in [
            ("Host", "cannot contain 'Host' header"),
            ("coNTEnt-Length", "cannot contain 'Content-Length' header"),
            ("coNTEnt-Type", "cannot contain 'Content-Type' header"),
        ] {
            assert_eq!(
                one_error(json!({
                    "http_endpoint": "http://myservice.test/path",
                    "headers": {"X-My-Header": "123", name: "x"}
                })),
                ("config.headers".into(), msg.into())
            );
        }
    }

    #[test]
    fn header_names_are_kongs_header_names() {
        assert_eq!(
            one_error(json!({
                "http_endpoint": "http://myservice.test/path",
                "headers": {"bad header": "x"}
            })),
            (
                "config.headers".into(),
                "bad header name 'bad header', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
                    .into()
            )
        );
    }

    #[test]
    fn does_not_accept_userinfo_in_url_and_authorization_header() {
        assert_eq!(
            one_error(json!({
                "http_endpoint": "http://hi:there@myservice.test/path",
                "headers": {"AuthoRIZATion": "bad"}
            })),
            (
                "config".into(),
                "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed"
                    .into()
            )
        );
    }

    #[test]
    fn custom_fields_by_lua_are_refused_naming_the_field() {
        let (path, msg) = one_error(json!({
            "http_endpoint": "http://myservice.test/path",
            "custom_fields_by_lua": {"foo": "return 'bar'"}
        }));
        assert_eq!(path, "config.custom_fields_by_lua");
        assert!(msg.contains("custom_fields_by_lua"), "{msg}");
    }

    #[test]
    fn converts_legacy_queue_parameters() {
        let v = validate(json!({
            "http_endpoint": "http://hi:there@myservice.test/path",
            "retry_count": 23,
            "queue_size": 46,
            "flush_timeout": 92,
        }))
        .unwrap();
        let cfg: HttpLogConfig = serde_json::from_value(v).unwrap();
        let q = cfg.queue_params();
        assert_eq!(q.max_batch_size, 46);
        assert_eq!(q.max_coalescing_delay, 92.0);
    }

    #[test]
    fn endpoints_need_a_host_and_a_scheme() {
        for (url, msg) in [
            ("myservice.test/path", "missing host in url"),
            ("http://", "missing host in url"),
            ("//myservice.test/path", "missing scheme in url"),
        ] {
            assert_eq!(
                one_error(json!({ "http_endpoint": url })),
                ("config.http_endpoint".into(), msg.into())
            );
        }
        assert_eq!(
            one_error(json!({})),
            (
                "config.http_endpoint".into(),
                "required field missing".into()
            )
        );
        assert_eq!(
            one_error(json!({"http_endpoint": "http://x.test", "method": "GET"})),
            (
                "config.method".into(),
                "expected one of: POST, PUT, PATCH".into()
            )
        );
    }

    #[test]
    fn queue_names_follow_kongs_legacy_parameters() {
        let v = validate(json!({"http_endpoint": "http://127.0.0.1:9999/post_log/http"})).unwrap();
        let cfg: HttpLogConfig = serde_json::from_value(v).unwrap();
        assert_eq!(
            cfg.queue_name(),
            "http://127.0.0.1:9999/post_log/http:POST:application/json:10000:60000:nil"
        );
    }

    #[test]
    fn urls_parse_like_luasocket() {
        let u = parse_url("https://user:pw@[::1]:8443/a/b;p?q=1#f").unwrap();
        assert_eq!(u.scheme.as_deref(), Some("https"));
        assert_eq!(u.userinfo.as_deref(), Some("user:pw"));
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port.as_deref(), Some("8443"));
        assert_eq!(u.path.as_deref(), Some("/a/b"));
        assert_eq!(u.params.as_deref(), Some("p"));
        assert_eq!(u.query.as_deref(), Some("q=1"));
        assert_eq!(u.fragment.as_deref(), Some("f"));
        let u = parse_url("localhost:8080").unwrap();
        assert_eq!(u.scheme.as_deref(), Some("localhost"));
        assert_eq!(u.host, None);
        assert_eq!(parse_url(""), None);
    }

    #[test]
    fn targets_drop_the_query_and_name_the_host_as_resty_http() {
        let t = Target::from_url("http://127.0.0.1:9999/post_log/x?a=1").unwrap();
        assert_eq!(t.path, "/post_log/x");
        assert_eq!(t.host_header, "127.0.0.1:9999");
        let t = Target::from_url("https://[::1]").unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        assert_eq!(t.host_header, "[::1]");
        assert!(Target::from_url("ftp://x.test/").is_err());
    }

    #[test]
    fn batches_are_json_arrays_and_single_entries_objects() {
        let v = validate(json!({"http_endpoint": "http://u:p@x.test/"})).unwrap();
        let cfg: HttpLogConfig = serde_json::from_value(v).unwrap();
        let s = Sender::new(&cfg, true);
        assert_eq!(s.payload(&["{\"a\":1}".into()]), "{\"a\":1}");
        assert_eq!(s.authorization.as_deref(), Some("Basic dTpw"));
        let s = Sender::new(&cfg, false);
        assert_eq!(s.payload(&["{}".into(), "{}".into()]), "[{},{}]");
        assert_eq!(s.payload(&["{}".into()]), "[{}]");
    }

    #[test]
    fn env_vault_references_resolve() {
        std::env::set_var("GW_HTTP_LOG_TEST_KEY", "the secret");
        assert_eq!(
            dereference("{vault://env/gw-http-log-test-key}"),
            "the secret"
        );
        assert_eq!(dereference("plain"), "plain");
        assert_eq!(
            dereference("{vault://env/gw-http-log-missing}"),
            "{vault://env/gw-http-log-missing}"
        );
    }
}
