//! A small, fast httpbin-compatible upstream for the gateway's integration
//! tests and benchmarks.
//!
//! Usage: `httpbin [--listen 127.0.0.1:9000] [--threads N] [--name NAME]`
//! (the listen address may also come from `HTTPBIN_LISTEN`). Prints
//! `httpbin listening on ADDR` once the socket is bound.
//!
//! Besides the httpbin endpoints it serves `/echo` (and `/echo/...`), which
//! reports the request exactly as it arrived on the wire: header case, order
//! and duplicates included. hyper does not expose the original header case or
//! interleaved order publicly, so each connection's socket is tapped and the
//! raw request head is re-parsed with httparse.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
/// Echo's default server name when `--name` is not given.
const DEFAULT_NAME: &str = "httpbin";
/// Bound on the per-connection raw capture so a huge upload cannot exhaust
/// memory; past it the connection falls back to hyper's parsed view.
const RAW_CAP: usize = 64 * 1024 * 1024;
const MAX_HEADERS: usize = 256;

struct App {
    name: String,
    /// Set only when `--name` was given: then every response carries it.
    name_header: Option<HeaderValue>,
}

struct Cli {
    listen: String,
    threads: usize,
    name: Option<String>,
}

fn usage() -> ! {
    eprintln!("usage: httpbin [--listen ADDR] [--threads N] [--name NAME]  (env HTTPBIN_LISTEN)");
    std::process::exit(2);
}

fn parse_cli() -> Cli {
    let mut cli = Cli {
        listen: std::env::var("HTTPBIN_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_string()),
        threads: 1,
        name: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage())
        };
        match flag.as_str() {
            "--listen" | "-l" => cli.listen = value(),
            "--threads" | "-t" => {
                cli.threads = match value().parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => usage(),
                }
            }
            "--name" | "-n" => cli.name = Some(value()),
            "--help" | "-h" => {
                println!("usage: httpbin [--listen ADDR] [--threads N] [--name NAME]  (env HTTPBIN_LISTEN)");
                std::process::exit(0);
            }
            _ => usage(),
        }
    }
    cli
}

fn main() {
    let cli = parse_cli();
    let name_header = match &cli.name {
        Some(n) => match HeaderValue::from_str(n) {
            Ok(v) => Some(v),
            Err(_) => {
                eprintln!("httpbin: --name must be a valid header value");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let app = Arc::new(App {
        name: cli.name.clone().unwrap_or_else(|| DEFAULT_NAME.to_string()),
        name_header,
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("httpbin: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli.listen, app)) {
        eprintln!("httpbin: {e}");
        std::process::exit(1);
    }
}

async fn run(listen: String, app: Arc<App>) -> io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "httpbin listening on {addr}")?;
        out.flush()?;
    }
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .title_case_headers(false)
        .preserve_header_case(true)
        .max_headers(MAX_HEADERS)
        .pipeline_flush(true);
    let builder = Arc::new(builder);
    // Handle INT/TERM explicitly: a child started from a non-interactive
    // shell may inherit SIGINT as ignored, and tests stop us with SIGINT.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends are transient under load; back off, don't die.
                eprintln!("httpbin: accept error: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let raw = Arc::new(Mutex::new(RawState::default()));
            let io = TokioIo::new(Tap {
                inner: stream,
                raw: raw.clone(),
            });
            let svc =
                hyper::service::service_fn(move |req| serve(req, app.clone(), raw.clone(), peer));
            // Connection errors (client reset, malformed input) only end this connection.
            let _ = builder.serve_connection(io, svc).await;
        });
    }
}

// ---------------------------------------------------------------------------
// Raw capture of what arrived on the socket.

#[derive(Default)]
struct RawState {
    buf: Vec<u8>,
    /// Once the raw stream can't be matched to hyper's requests, stop capturing.
    desynced: bool,
}

fn lock(m: &Mutex<RawState>) -> MutexGuard<'_, RawState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Tap {
    inner: TcpStream,
    raw: Arc<Mutex<RawState>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let mut st = lock(&this.raw);
                if !st.desynced {
                    if st.buf.len() + new.len() > RAW_CAP {
                        st.desynced = true;
                        st.buf = Vec::new();
                    } else {
                        st.buf.extend_from_slice(new);
                    }
                }
            }
        }
        res
    }
}

impl AsyncWrite for Tap {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

struct RawHead {
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

/// Pops the current request (head + body) off the raw capture. Called after
/// the body was fully read, so the whole message is in the buffer; hyper
/// handles requests on a connection strictly in order.
fn take_raw_message(st: &mut RawState) -> Option<RawHead> {
    if st.desynced {
        return None;
    }
    match parse_raw_message(&st.buf) {
        Some((head, len)) => {
            st.buf.drain(..len);
            Some(head)
        }
        None => {
            st.desynced = true;
            st.buf = Vec::new();
            None
        }
    }
}

fn parse_raw_message(buf: &[u8]) -> Option<(RawHead, usize)> {
    let mut hdrs = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hdrs);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let mut chunked = false;
    let mut content_length = None;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).into_owned();
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse::<usize>().ok();
        }
        headers.push((h.name.to_string(), value));
    }
    let body_len = if chunked {
        chunked_len(&buf[head_len..])?
    } else {
        content_length.unwrap_or(0)
    };
    let total = head_len.checked_add(body_len)?;
    if buf.len() < total {
        return None;
    }
    let head = RawHead {
        target: req.path?.to_string(),
        version: format!("HTTP/1.{}", req.version?),
        headers,
    };
    Some((head, total))
}

/// Length of a complete chunked body (including trailers) at the start of `b`.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let line = |pos: usize| -> Option<(&[u8], usize)> {
        let rest = b.get(pos..)?;
        let nl = rest.iter().position(|&c| c == b'\n')?;
        let l = &rest[..nl];
        Some((l.strip_suffix(b"\r").unwrap_or(l), pos + nl + 1))
    };
    let mut pos = 0;
    loop {
        let (l, next) = line(pos)?;
        let size_part = l.split(|&c| c == b';').next()?;
        let size = usize::from_str_radix(std::str::from_utf8(size_part).ok()?.trim(), 16).ok()?;
        pos = next;
        if size == 0 {
            loop {
                let (t, next) = line(pos)?;
                pos = next;
                if t.is_empty() {
                    return Some(pos);
                }
            }
        }
        pos = pos.checked_add(size)?;
        let (_, next) = line(pos)?;
        pos = next;
    }
}

// ---------------------------------------------------------------------------
// Request model.

struct Req {
    method: Method,
    uri: http::Uri,
    raw_target: String,
    version: String,
    headers: HeaderMap,
    /// Arrival order, original case, duplicates kept.
    ordered: Vec<(String, String)>,
    body: Bytes,
    peer: SocketAddr,
}

impl Req {
    fn new(parts: Parts, body: Bytes, raw: Option<RawHead>, peer: SocketAddr) -> Req {
        let (raw_target, version, ordered) = match raw {
            Some(h) => (h.target, h.version, h.headers),
            None => (
                parts.uri.to_string(),
                match parts.version {
                    Version::HTTP_10 => "HTTP/1.0".to_string(),
                    _ => "HTTP/1.1".to_string(),
                },
                parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            ),
        };
        Req {
            method: parts.method,
            uri: parts.uri,
            raw_target,
            version,
            headers: parts.headers,
            ordered,
            body,
            peer,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    fn query_param(&self, key: &str) -> Option<String> {
        parse_urlencoded(self.query())
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

async fn serve(
    req: Request<Incoming>,
    app: Arc<App>,
    raw: Arc<Mutex<RawState>>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            // Body broke off mid-way; the connection is unusable anyway.
            lock(&raw).desynced = true;
            return Ok(text(StatusCode::BAD_REQUEST, "bad request body\n"));
        }
    };
    let raw_head = take_raw_message(&mut lock(&raw));
    let req = Req::new(parts, body, raw_head, peer);
    let mut resp = route(&req, &app).await;
    if let Some(v) = &app.name_header {
        resp.headers_mut().insert("x-upstream-name", v.clone());
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------
// Response helpers.

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_body(status, "text/plain; charset=utf-8", body)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn json_resp(v: Value) -> Response<Body> {
    // Flask sorts keys; do the same so output looks like httpbin's.
    with_body(StatusCode::OK, "application/json", pretty(&sort_keys(v)))
}

fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

fn html_error(status: StatusCode, title: &str, msg: &str) -> Response<Body> {
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<title>{} {}</title>\n<h1>{}</h1>\n<p>{}</p>\n",
        status.as_u16(),
        title,
        title,
        msg
    );
    with_body(status, "text/html; charset=utf-8", body)
}

fn not_found() -> Response<Body> {
    html_error(
        StatusCode::NOT_FOUND,
        "Not Found",
        "The requested URL was not found on the server.  If you entered the URL manually please check your spelling and try again.",
    )
}

fn bad_request(msg: &str) -> Response<Body> {
    html_error(StatusCode::BAD_REQUEST, "Bad Request", msg)
}

fn allow_value(allowed: &[Method]) -> HeaderValue {
    let mut names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    names.push("OPTIONS");
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("OPTIONS"))
}

/// Flask-like method check: returns the response to send instead when the
/// method isn't routed here (405, or the automatic OPTIONS reply).
fn check_method(r: &Req, allowed: &[Method]) -> Option<Response<Body>> {
    if allowed.contains(&r.method) || (r.method == Method::HEAD && allowed.contains(&Method::GET)) {
        return None;
    }
    let mut allowed_all = allowed.to_vec();
    if allowed.contains(&Method::GET) {
        allowed_all.push(Method::HEAD);
    }
    let mut resp = if r.method == Method::OPTIONS {
        with_body(StatusCode::OK, "text/html; charset=utf-8", Bytes::new())
    } else {
        html_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "The method is not allowed for the requested URL.",
        )
    };
    resp.headers_mut()
        .insert(http::header::ALLOW, allow_value(&allowed_all));
    Some(resp)
}

// ---------------------------------------------------------------------------
// httpbin's request dictionary pieces.

fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// werkzeug MultiDict → JSON: single values as strings, repeats as arrays.
fn multi_dict(pairs: Vec<(String, String)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        match m.get_mut(&k) {
            Some(Value::Array(a)) => a.push(Value::String(v)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(v)]);
            }
            None => {
                m.insert(k, Value::String(v));
            }
        }
    }
    Value::Object(m)
}

/// Python's str.title(): uppercase a letter that follows a non-letter.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_letter = false;
    for c in name.chars() {
        if c.is_alphabetic() {
            if prev_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_letter = true;
        } else {
            out.push(c);
            prev_letter = false;
        }
    }
    out
}

fn headers_dict(r: &Req) -> Value {
    let mut m: Map<String, Value> = Map::new();
    for (k, v) in &r.ordered {
        let key = title_case(k);
        match m.get_mut(&key) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(v);
            }
            _ => {
                m.insert(key, Value::String(v.clone()));
            }
        }
    }
    Value::Object(m)
}

/// httpbin reports X-Forwarded-For verbatim (whole chain) when present.
fn origin(r: &Req) -> String {
    r.header("x-forwarded-for")
        .unwrap_or_else(|| r.peer.ip().to_string())
}

fn url(r: &Req) -> String {
    if r.uri.scheme().is_some() {
        return r.uri.to_string();
    }
    let scheme = match r.header("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = r.header("host").unwrap_or_else(|| "localhost".to_string());
    let pq = r.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://{host}{pq}")
}

fn is_form(r: &Req) -> bool {
    r.header("content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    })
}

fn data_string(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(s) => s.to_string(),
        // httpbin's json_safe(): binary bodies become a base64 data URL.
        Err(_) => format!("data:application/octet-stream;base64,{}", base64(body)),
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The request dictionary shared by /anything, /post, /delay, ...
fn request_dict(r: &Req, with_method: bool, with_json: bool) -> Value {
    let form = is_form(r);
    let mut m = Map::new();
    m.insert("args".into(), multi_dict(parse_urlencoded(r.query())));
    m.insert(
        "data".into(),
        Value::String(if form {
            String::new()
        } else {
            data_string(&r.body)
        }),
    );
    m.insert("files".into(), json!({}));
    m.insert(
        "form".into(),
        if form {
            multi_dict(parse_urlencoded(&String::from_utf8_lossy(&r.body)))
        } else {
            json!({})
        },
    );
    m.insert("headers".into(), headers_dict(r));
    if with_json {
        let j = if form {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or(Value::Null)
        };
        m.insert("json".into(), j);
    }
    if with_method {
        m.insert(
            "method".into(),
            Value::String(r.method.as_str().to_string()),
        );
    }
    m.insert("origin".into(), Value::String(origin(r)));
    m.insert("url".into(), Value::String(url(r)));
    Value::Object(m)
}

fn get_dict(r: &Req) -> Value {
    json!({
        "args": multi_dict(parse_urlencoded(r.query())),
        "headers": headers_dict(r),
        "origin": origin(r),
        "url": url(r),
    })
}

// ---------------------------------------------------------------------------
// Routing.

async fn route(r: &Req, app: &App) -> Response<Body> {
    let path = r.uri.path();
    let (first, rest) = match path.trim_start_matches('/').split_once('/') {
        Some((f, rest)) => (f, Some(rest)),
        None => (path.trim_start_matches('/'), None),
    };
    match (first, rest) {
        ("", None) => index(),
        ("echo", _) => echo(r, app),
        ("anything", _) => json_resp(request_dict(r, true, true)),
        ("get", None) => check_method(r, &[Method::GET]).unwrap_or_else(|| json_resp(get_dict(r))),
        ("post", None) => method_dict(r, Method::POST),
        ("put", None) => method_dict(r, Method::PUT),
        ("patch", None) => method_dict(r, Method::PATCH),
        ("delete", None) => method_dict(r, Method::DELETE),
        ("headers", None) => get_only(r, || json!({ "headers": headers_dict(r) })),
        ("ip", None) => get_only(r, || json!({ "origin": origin(r) })),
        ("uuid", None) => get_only(r, || json!({ "uuid": uuid::Uuid::new_v4().to_string() })),
        ("user-agent", None) => get_only(r, || json!({ "user-agent": r.header("user-agent") })),
        ("status", Some(codes)) => status(codes),
        ("delay", Some(n)) => delay(r, n).await,
        ("bytes", Some(n)) => check_method(r, &[Method::GET]).unwrap_or_else(|| bytes_ep(r, n)),
        ("stream", Some(n)) => check_method(r, &[Method::GET]).unwrap_or_else(|| stream_ep(r, n)),
        ("drip", None) => match check_method(r, &[Method::GET]) {
            Some(resp) => resp,
            None => drip(r).await,
        },
        ("response-headers", None) => {
            check_method(r, &[Method::GET, Method::POST]).unwrap_or_else(|| response_headers(r))
        }
        ("redirect" | "relative-redirect", Some(n)) => redirect(n),
        _ => not_found(),
    }
}

fn get_only(r: &Req, f: impl FnOnce() -> Value) -> Response<Body> {
    check_method(r, &[Method::GET]).unwrap_or_else(|| json_resp(f()))
}

fn method_dict(r: &Req, m: Method) -> Response<Body> {
    check_method(r, &[m]).unwrap_or_else(|| json_resp(request_dict(r, false, true)))
}

fn index() -> Response<Body> {
    const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>httpbin</title></head><body>\n\
<h1>httpbin (gw-tests)</h1>\n<ul>\n\
<li>/get /post /put /patch /delete /anything[/...]</li>\n\
<li>/status/{codes} /delay/{n} /headers /ip /uuid /user-agent</li>\n\
<li>/bytes/{n} /stream/{n} /drip /response-headers /redirect/{n}</li>\n\
<li>/echo[/...] &mdash; the request exactly as received</li>\n\
</ul>\n</body></html>\n";
    with_body(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

fn echo(r: &Req, app: &App) -> Response<Body> {
    let headers: Vec<Value> = r.ordered.iter().map(|(k, v)| json!([k, v])).collect();
    let v = json!({
        "method": r.method.as_str(),
        "uri": r.raw_target,
        "path": r.uri.path(),
        "query": r.query(),
        "version": r.version,
        "headers": headers,
        "body": String::from_utf8_lossy(&r.body),
        "body_len": r.body.len(),
        "server": app.name,
        "remote_addr": r.peer.to_string(),
    });
    let mut resp = with_body(StatusCode::OK, "application/json", pretty(&v));
    if let Ok(hv) = HeaderValue::from_str(&app.name) {
        resp.headers_mut().insert("x-upstream-name", hv);
    }
    resp
}

fn status(codes: &str) -> Response<Body> {
    // "200" or "200,404" or "200:0.9,500:0.1" (weighted random choice).
    let mut choices: Vec<(u16, f64)> = Vec::new();
    for item in codes.split(',') {
        let (c, w) = item.split_once(':').unwrap_or((item, "1"));
        let code = match c.trim().parse::<u16>() {
            Ok(c) if (200..=599).contains(&c) => c,
            _ => return bad_request("Invalid status code"),
        };
        let weight = match w.trim().parse::<f64>() {
            Ok(w) if w >= 0.0 && w.is_finite() => w,
            _ => return bad_request("Invalid status code"),
        };
        choices.push((code, weight));
    }
    let total: f64 = choices.iter().map(|c| c.1).sum();
    let mut pick = rand::thread_rng().gen::<f64>() * total;
    let mut code = choices.last().map_or(200, |c| c.0);
    for (c, w) in &choices {
        if pick < *w {
            code = *c;
            break;
        }
        pick -= w;
    }
    let Ok(st) = StatusCode::from_u16(code) else {
        return bad_request("Invalid status code");
    };
    let mut resp = with_body(st, "text/html; charset=utf-8", Bytes::new());
    let h = resp.headers_mut();
    match code {
        300..=399 if code != 304 => {
            h.insert(LOCATION, HeaderValue::from_static("/redirect/1"));
        }
        401 => {
            h.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Fake Realm\""),
            );
        }
        407 => {
            h.insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Fake Realm\""),
            );
        }
        418 => {
            *resp.body_mut() = full("I'm a teapot\n");
            resp.headers_mut().insert(
                "x-more-info",
                HeaderValue::from_static("http://tools.ietf.org/html/rfc2324"),
            );
        }
        _ => {}
    }
    resp
}

async fn delay(r: &Req, n: &str) -> Response<Body> {
    let secs = match n.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => s.min(10.0),
        _ => return bad_request("Invalid delay"),
    };
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    json_resp(request_dict(r, false, false))
}

fn bytes_ep(r: &Req, n: &str) -> Response<Body> {
    let Ok(n) = n.parse::<usize>() else {
        return not_found();
    };
    let n = n.min(100 * 1024);
    let mut data = vec![0u8; n];
    match r.query_param("seed").and_then(|s| s.parse::<u64>().ok()) {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data),
        None => rand::thread_rng().fill_bytes(&mut data),
    }
    with_body(StatusCode::OK, "application/octet-stream", data)
}

/// Streaming body fed from a channel, so hyper sends it chunked as produced.
struct ChanBody(mpsc::Receiver<Bytes>);

impl HttpBody for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn stream_ep(r: &Req, n: &str) -> Response<Body> {
    let Ok(n) = n.parse::<usize>() else {
        return not_found();
    };
    let n = n.min(100);
    let (tx, rx) = mpsc::channel(n.max(1));
    let base = get_dict(r);
    for i in 0..n {
        let mut line = base.clone();
        if let Value::Object(m) = &mut line {
            m.insert("id".into(), json!(i));
        }
        let mut s = serde_json::to_string(&line).unwrap_or_default();
        s.push('\n');
        // Capacity is n, so this never fails.
        let _ = tx.try_send(Bytes::from(s));
    }
    drop(tx);
    let mut resp = Response::new(ChanBody(rx).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn drip(r: &Req) -> Response<Body> {
    let num = |k: &str, d: f64| {
        r.query_param(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let duration = num("duration", 2.0);
    let numbytes = num("numbytes", 10.0);
    let code = num("code", 200.0);
    let delay = num("delay", 0.0);
    if !(numbytes >= 1.0 && numbytes.is_finite()) {
        return bad_request("number of bytes must be positive");
    }
    let numbytes = numbytes.min(10.0 * 1024.0 * 1024.0) as usize;
    let Ok(status) = StatusCode::from_u16(code as u16) else {
        return bad_request("Invalid status code");
    };
    if delay.is_finite() && delay > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay.min(10.0))).await;
    }
    let pause = if duration.is_finite() && duration > 0.0 {
        Duration::from_secs_f64(duration.min(60.0) / numbytes as f64)
    } else {
        Duration::ZERO
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for _ in 0..numbytes {
            if tx.send(Bytes::from_static(b"*")).await.is_err() {
                return; // client went away
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    });
    let mut resp = Response::new(ChanBody(rx).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(numbytes));
    resp
}

fn response_headers(r: &Req) -> Response<Body> {
    let pairs = parse_urlencoded(r.query());
    let mut headers = HeaderMap::new();
    for (k, v) in &pairs {
        let (Ok(name), Ok(val)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return bad_request("Invalid header in query");
        };
        headers.append(name, val);
    }
    let mut dict = multi_dict(pairs);
    if let Value::Object(m) = &mut dict {
        if !m.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
            m.insert("Content-Type".into(), json!("application/json"));
        }
    }
    // httpbin reports its own Content-Length in the body: iterate to a fixpoint.
    let mut len = 0usize;
    let mut body = String::new();
    for _ in 0..5 {
        if let Value::Object(m) = &mut dict {
            m.insert("Content-Length".into(), json!(len.to_string()));
        }
        body = pretty(&sort_keys(dict.clone()));
        if body.len() == len {
            break;
        }
        len = body.len();
    }
    let mut resp = with_body(StatusCode::OK, "application/json", body);
    for (k, v) in headers.iter() {
        if k == CONTENT_LENGTH {
            continue; // hyper frames the body; a bogus length would break the connection
        }
        if k == CONTENT_TYPE {
            resp.headers_mut().insert(k.clone(), v.clone());
        } else {
            resp.headers_mut().append(k.clone(), v.clone());
        }
    }
    resp
}

fn redirect(n: &str) -> Response<Body> {
    let Ok(n) = n.parse::<u32>() else {
        return not_found();
    };
    let loc = if n <= 1 {
        "/get".to_string()
    } else {
        format!("/relative-redirect/{}", n - 1)
    };
    let mut resp = with_body(StatusCode::FOUND, "text/html; charset=utf-8", Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn raw_message_lengths() {
        let req = b"POST /x?a=1 HTTP/1.1\r\nHost: h\r\nX-Foo: a\r\nx-foo: b\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        let (h, n) = parse_raw_message(req).unwrap();
        assert_eq!(&req[n..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.target, "/x?a=1");
        assert_eq!(h.headers[1], ("X-Foo".to_string(), "a".to_string()));
        assert_eq!(h.headers[2], ("x-foo".to_string(), "b".to_string()));
        let ch = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nT: x\r\n\r\nNEXT";
        let (_, n) = parse_raw_message(ch).unwrap();
        assert_eq!(&ch[n..], b"NEXT");
        assert!(parse_raw_message(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab").is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(title_case("x-b3-traceid"), "X-B3-Traceid");
        assert_eq!(title_case("content-TYPE"), "Content-Type");
        assert_eq!(form_decode("a+b%20c%zz%4"), "a b c%zz%4");
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(
            multi_dict(parse_urlencoded("a=1&b=2&a=3")),
            json!({"a": ["1", "3"], "b": "2"})
        );
    }
}
