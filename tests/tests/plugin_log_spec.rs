//! The logging plugins through the real binary, against real local
//! receivers: http-log (an HTTP/HTTPS collector), file-log (temp files),
//! tcp-log (a TCP/TLS line server), udp-log (a UDP socket), and the log
//! serializer's shape (`kong.log.serialize()`).
//!
//! Ports of Kong's `spec/03-plugins/03-http-log` (01-log, 02-schema at
//! load, 04-legacy_queue_sharing), `04-file-log`, `01-tcp-log` and
//! `02-udp-log`, DB-less parts; test names name the Kong `it(...)` they
//! port. The gRPC/gRPCs file-log cases are in `grpc_spec.rs`. Not ported: the TLS
//! listener ones (`logs TLS info`, `client_verify`: no TLS listener), the
//! stream ones (no stream listener), and `custom_fields_by_lua` values (no
//! Lua: the field is refused at load, tested here).
#![allow(clippy::unwrap_used)]

use gw_tests::wait_until;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gw_tests::gateway::{Gateway, Recorder, TempDir};
use gw_tests::{get, start_httpbin, Skip};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A declarative config (JSON is YAML): one service to `up`, one route per
/// `(host, plugins)`, and global plugins.
fn kong_yml(up: u16, routes: Vec<(&str, Value)>, globals: Value) -> String {
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(host, plugins)| json!({"hosts": [host], "plugins": plugins}))
        .collect();
    json!({
        "_format_version": "3.0",
        "services": [{"name": "s", "url": format!("http://127.0.0.1:{up}"), "routes": routes}],
        "plugins": globals,
    })
    .to_string()
}

fn http_log(config: Value) -> Value {
    json!([{"name": "http-log", "config": config}])
}

// ---------------------------------------------------------------------------
// receivers

/// One request the collector received.
#[derive(Debug, Clone)]
struct Got {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "log body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The entries of the body: one object, or an array of them.
    fn entries(&self) -> Vec<Value> {
        match self.json() {
            Value::Array(a) => a,
            v => vec![v],
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn tls_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    )
}

/// Accepts on a loopback port until dropped; each connection (wrapped in
/// TLS when `tls`) is handed to `serve` on a thread of its own.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        serve: impl Fn(Box<dyn Stream>, Arc<AtomicBool>) + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                let stream: Box<dyn Stream> = match &tls {
                    Some(cfg) => {
                        let sc = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        Box::new(rustls::StreamOwned::new(sc, conn))
                    }
                    None => Box::new(conn),
                };
                let serve = serve.clone();
                let s = s.clone();
                thread::spawn(move || serve(stream, s));
            }
        });
        Server { port, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        );
    }
}

/// Reads into `buf` until `f(buf)` says enough; false on EOF or stop.
fn read_until(
    s: &mut dyn Stream,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
    f: impl Fn(&[u8]) -> bool,
) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    while !f(buf) {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match s.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An HTTP log collector: records every request and answers each with the
/// next scripted status (200 once the script is out), after `delay`,
/// keeping connections alive.
struct Collector {
    server: Server,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Collector {
    fn start() -> Collector {
        Collector::with(None, Duration::ZERO, &[])
    }

    fn with(tls: Option<Arc<rustls::ServerConfig>>, delay: Duration, script: &[u16]) -> Collector {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let (g, sc) = (got.clone(), script.clone());
        let server = Server::start(tls, move |mut s, stop| {
            let mut buf = Vec::new();
            loop {
                if !read_until(&mut *s, &mut buf, &stop, |b| find(b, b"\r\n\r\n").is_some()) {
                    return;
                }
                let head_end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                let mut hdrs = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut hdrs);
                req.parse(&buf[..head_end]).unwrap();
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("").to_string();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                buf.drain(..head_end);
                if !read_until(&mut *s, &mut buf, &stop, |b| b.len() >= len) {
                    return;
                }
                let body: Vec<u8> = buf.drain(..len).collect();
                g.lock().unwrap().push(Got {
                    method,
                    target,
                    headers,
                    body,
                });
                thread::sleep(delay);
                let status = sc.lock().unwrap().pop_front().unwrap_or(200);
                let answer = if status < 300 { "ok" } else { "not now" };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if s.write_all(resp.as_bytes())
                    .and_then(|_| s.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
        Collector { server, got }
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Requests whose target is `path`.
    fn at(&self, path: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.target == path)
            .collect()
    }

    /// Entries received at `path` so far.
    fn entries(&self, path: &str) -> Vec<Value> {
        self.at(path).iter().flat_map(Got::entries).collect()
    }

    /// Waits for `n` entries at `path`; panics with what came otherwise.
    fn wait_entries(&self, path: &str, n: usize) -> Vec<Value> {
        if !wait_until(WAIT, || self.entries(path).len() >= n) {
            panic!(
                "expected {n} log entries at {path}, got {}",
                self.entries(path).len()
            );
        }
        self.entries(path)
    }
}

/// A TCP (or TLS) server that keeps every line it reads.
struct LineServer {
    server: Server,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineServer {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> LineServer {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = lines.clone();
        let server = Server::start(tls, move |s, stop| {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match r.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) if line.ends_with('\n') => {
                        l.lock().unwrap().push(std::mem::take(&mut line));
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        LineServer { server, lines }
    }

    fn wait_json(&self, n: usize) -> Vec<Value> {
        assert!(
            wait_until(WAIT, || self.lines.lock().unwrap().len() >= n),
            "expected {n} lines, got {:?}",
            self.lines.lock().unwrap()
        );
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A UDP socket that keeps every datagram.
struct UdpServer {
    port: u16,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl UdpServer {
    fn start() -> UdpServer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        UdpServer { port, got, stop }
    }

    fn wait_json(&self, n: usize) -> Vec<Value> {
        assert!(
            wait_until(WAIT, || self.got.lock().unwrap().len() >= n),
            "expected {n} datagrams"
        );
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|d| serde_json::from_slice(d).unwrap())
            .collect()
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn refused(yml: &str) -> String {
    match Gateway::try_start(yml) {
        Ok(gw) => panic!(
            "the gateway started instead of refusing the config; output:\n{}",
            gw.output()
        ),
        Err(out) => out,
    }
}

/// Kong latencies add up: `1 + request >= kong + proxy` (spec "logs
/// proper latencies").
fn assert_latencies(entry: &Value, min_proxy: i64) {
    let l = &entry["latencies"];
    let (kong, proxy, request) = (
        l["kong"].as_i64().unwrap(),
        l["proxy"].as_i64().unwrap(),
        l["request"].as_i64().unwrap(),
    );
    assert!(proxy < 3000, "{l}");
    assert!(proxy >= min_proxy, "{l}");
    assert!(1 + request >= kong + proxy, "{l}");
    assert!(l["receive"].as_i64().is_some(), "{l}");
}

// ---------------------------------------------------------------------------
// http-log

#[test]
fn http_log_logs_to_http() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = kong_yml(
        up.port,
        vec![(
            "http_logging.test",
            http_log(json!({"http_endpoint": col.url("/post_log/http")})),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/status/200", &[("Host", "http_logging.test")]);
    assert_eq!(r.status, 200);
    let entries = col.wait_entries("/post_log/http", 1);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["client_ip"], "127.0.0.1");
    let got = &col.at("/post_log/http")[0];
    assert_eq!(got.method, "POST");
    // max_batch_size 1: the entry itself, not an array.
    assert!(got.json().is_object());
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
}

#[test]
fn http_log_identifies_plugin_in_queue_handler_logs() {
    let up = Recorder::start();
    let col = Collector::start();
    let id = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    let yml = kong_yml(
        up.port,
        vec![(
            "http_logging_tag.test",
            json!([{
                "id": id,
                "name": "http-log",
                "instance_name": "my-plugin-instance-name",
                "config": {"http_endpoint": col.url("/post_log/http_tag")}
            }]),
        )],
        json!([]),
    );
    let gw = Gateway::start_with(&yml, &[("KONG_LOG_LEVEL", "debug")]);
    let host = [("Host", "http_logging_tag.test")];
    assert_eq!(get(gw.port, "/status/200", &host).status, 200);
    let entries = col.wait_entries("/post_log/http_tag", 1);
    assert_eq!(entries[0]["client_ip"], "127.0.0.1");
    let tag = format!("[http-log plugin {id} (my-plugin-instance-name)] queue ");
    assert!(
        wait_until(WAIT, || gw
            .output()
            .lines()
            .any(|l| l.contains(&tag) && l.contains("done processing queue"))),
        "{}",
        gw.output()
    );
}

#[test]
fn http_log_logs_to_http_with_content_type_application_json_and_charset() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = kong_yml(
        up.port,
        vec![
            (
                "content_type_application_json_http_logging.test",
                http_log(json!({
                    "http_endpoint": col.url("/post_log/http2"),
                    "content_type": "application/json"
                })),
            ),
            (
                "content_type_application_json_charset_utf_8_http_logging.test",
                http_log(json!({
                    "http_endpoint": col.url("/post_log/http3"),
                    "content_type": "application/json; charset=utf-8"
                })),
            ),
        ],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let host2 = "content_type_application_json_http_logging.test";
    assert_eq!(get(gw.port, "/status/200", &[("Host", host2)]).status, 200);
    let host3 = "content_type_application_json_charset_utf_8_http_logging.test";
    assert_eq!(get(gw.port, "/status/200", &[("Host", host3)]).status, 200);
    let e = col.wait_entries("/post_log/http2", 1);
    assert_eq!(e[0]["client_ip"], "127.0.0.1");
    assert_eq!(
        col.at("/post_log/http2")[0].header("content-type"),
        Some("application/json")
    );
    col.wait_entries("/post_log/http3", 1);
    assert_eq!(
        col.at("/post_log/http3")[0].header("content-type"),
        Some("application/json; charset=utf-8")
    );
}

#[test]
fn http_log_logs_to_https() {
    let up = Recorder::start();
    let col = Collector::with(Some(tls_config()), Duration::ZERO, &[]);
    let url = format!("https://127.0.0.1:{}/post_log/https", col.port());
    let yml = kong_yml(
        up.port,
        vec![(
            "https_logging.test",
            http_log(json!({ "http_endpoint": url })),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    assert_eq!(
        get(gw.port, "/status/200", &[("Host", "https_logging.test")]).status,
        200
    );
    let entries = col.wait_entries("/post_log/https", 1);
    assert_eq!(entries.len(), 1, "expected 1 log entry");
    assert_eq!(entries[0]["client_ip"], "127.0.0.1");
}

#[test]
fn http_log_gracefully_handles_layer_4_failures() {
    let up = Recorder::start();
    // The collector takes 5 s to answer; the plugin waits 1 ms.
    let col = Collector::with(Some(tls_config()), Duration::from_secs(5), &[]);
    let url = format!("https://127.0.0.1:{}/delay/5", col.port());
    let yml = kong_yml(
        up.port,
        vec![(
            "https_logging_faulty.test",
            http_log(json!({"http_endpoint": url, "timeout": 1, "queue": {"max_retry_time": 0.1}})),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let t = Instant::now();
    let r = get(
        gw.port,
        "/status/200",
        &[("Host", "https_logging_faulty.test")],
    );
    assert_eq!(r.status, 200);
    // Logging never holds up the response.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let line = format!(
        "handler could not process entries: failed request to 127.0.0.1:{}: timeout",
        col.port()
    );
    assert!(
        gw.proc.wait_for_line(&line, WAIT),
        "no '{line}' in:\n{}",
        gw.output()
    );
}

#[test]
fn http_log_adds_authorization_if_userinfo_and_or_header_is_present() {
    let up = Recorder::start();
    let col = Collector::start();
    let url = format!(
        "http://testuser:testpassword@127.0.0.1:{}/post_auth_log/basic_auth/testuser/testpassword",
        col.port()
    );
    let yml = kong_yml(
        up.port,
        vec![(
            "http_basic_auth_logging.test",
            http_log(json!({"http_endpoint": url, "headers": {"Hello-World": "hi there"}})),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let host = "http_basic_auth_logging.test";
    assert_eq!(get(gw.port, "/status/200", &[("Host", host)]).status, 200);
    let path = "/post_auth_log/basic_auth/testuser/testpassword";
    col.wait_entries(path, 1);
    let got = &col.at(path)[0];
    assert_eq!(
        got.header("authorization"),
        Some("Basic dGVzdHVzZXI6dGVzdHBhc3N3b3Jk")
    );
    assert_eq!(got.header("hello-world"), Some("hi there"));
}

#[test]
fn http_log_should_dereference_config_headers_value() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = kong_yml(
        up.port,
        vec![(
            "vault_headers_logging.test",
            http_log(json!({
                "http_endpoint": col.url("/post_log/vault_header"),
                "headers": {"key1": "value1", "key2": "{vault://env/http-log-key2}"}
            })),
        )],
        json!([]),
    );
    let gw = Gateway::start_with(&yml, &[("HTTP_LOG_KEY2", "the secret")]);
    let host = "vault_headers_logging.test";
    assert_eq!(get(gw.port, "/status/200", &[("Host", host)]).status, 200);
    col.wait_entries("/post_log/vault_header", 1);
    let got = &col.at("/post_log/vault_header")[0];
    assert_eq!(got.header("key1"), Some("value1"));
    assert_eq!(got.header("key2"), Some("the secret"));
}

#[test]
fn http_log_http_client_implicitly_adds_host_header() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = kong_yml(
        up.port,
        vec![(
            "http_host_header.test",
            http_log(json!({"http_endpoint": col.url("/post_log/http_host_header")})),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let host = "http_host_header.test";
    assert_eq!(get(gw.port, "/status/200", &[("Host", host)]).status, 200);
    col.wait_entries("/post_log/http_host_header", 1);
    let got = &col.at("/post_log/http_host_header")[0];
    let want = format!("127.0.0.1:{}", col.port());
    assert_eq!(got.header("host"), Some(want.as_str()));
}

#[test]
fn http_log_puts_changed_configuration_into_effect_immediately() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = |v: &str| {
        json!({
            "_format_version": "3.0",
            "services": [{
                "name": "config_change",
                "url": format!("http://127.0.0.1:{}", up.port),
                "routes": [{"hosts": ["config_change.test"]}],
                "plugins": [{
                    "id": "5f5b3b5e-7a2c-4c55-9a4e-3c1e2d4f6a01",
                    "name": "http-log",
                    "config": {
                        "http_endpoint": col.url("/post_log/config_change"),
                        "headers": {"key1": v}
                    }
                }]
            }]
        })
        .to_string()
    };
    let gw = Gateway::start(&yml("value1"));
    let host = [("Host", "config_change.test")];
    assert_eq!(get(gw.port, "/status/200", &host).status, 200);
    col.wait_entries("/post_log/config_change", 1);
    assert_eq!(
        col.at("/post_log/config_change")[0].header("key1"),
        Some("value1")
    );
    assert!(gw.reload_and_wait(&yml("value2")));
    assert_eq!(get(gw.port, "/status/200", &host).status, 200);
    col.wait_entries("/post_log/config_change", 2);
    assert_eq!(
        col.at("/post_log/config_change")[1].header("key1"),
        Some("value2")
    );
}

#[test]
fn http_log_should_not_use_queue_when_queue_concurrency_limit_is_minus_1() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = kong_yml(
        up.port,
        vec![(
            "no_queue.test",
            http_log(json!({
                "http_endpoint": col.url("/post_log/http"),
                "queue": {"concurrency_limit": -1}
            })),
        )],
        json!([]),
    );
    let gw = Gateway::start_with(&yml, &[("KONG_LOG_LEVEL", "debug")]);
    assert_eq!(
        get(gw.port, "/status/200", &[("Host", "no_queue.test")]).status,
        200
    );
    let entries = col.wait_entries("/post_log/http", 1);
    assert_eq!(entries[0]["client_ip"], "127.0.0.1");
    thread::sleep(Duration::from_millis(200));
    let out = gw.output();
    assert!(
        out.contains("handler processed 1 entries successfully"),
        "{out}"
    );
    assert!(!out.contains("done processing queue"), "{out}");
}

#[test]
fn http_log_logs_to_http_with_a_buffer() {
    let (_bin, up) = start_httpbin("up");
    let col = Collector::start();
    let yml = kong_yml(
        up,
        vec![(
            "http_queue_logging.test",
            http_log(json!({
                "http_endpoint": col.url("/post_log/http_queue"),
                "queue": {"max_batch_size": 5, "max_coalescing_delay": 0.1}
            })),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let n = 200;
    for i in 0..n {
        let r = get(
            gw.port,
            &format!("/status/{}", 200 + (i % 10)),
            &[("Host", "http_queue_logging.test")],
        );
        assert_eq!(r.status, 200 + (i % 10));
    }
    let entries = col.wait_entries("/post_log/http_queue", n as usize);
    assert_eq!(entries.len(), n as usize);
    for got in col.at("/post_log/http_queue") {
        // Batches are arrays of at most max_batch_size entries.
        let v = got.json();
        let batch = v.as_array().expect("a batch is a JSON array");
        assert!((1..=5).contains(&batch.len()), "{}", batch.len());
    }
}

#[test]
fn http_log_does_not_mix_buffers() {
    let (_bin, up) = start_httpbin("up");
    let col = Collector::start();
    let queued = |path: &str| {
        http_log(json!({
            "http_endpoint": col.url(path),
            "queue": {"max_batch_size": 5, "max_coalescing_delay": 0.1}
        }))
    };
    let yml = kong_yml(
        up,
        vec![
            ("http_queue_logging.test", queued("/post_log/http_queue")),
            ("http_queue_logging2.test", queued("/post_log/http_queue2")),
        ],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let n = 100;
    for i in 0..n {
        let r = get(
            gw.port,
            &format!("/status/{}", 200 + (i % 10)),
            &[("Host", "http_queue_logging.test")],
        );
        assert_eq!(r.status, 200 + (i % 10));
        let r = get(
            gw.port,
            &format!("/status/{}", 300 + (i % 10)),
            &[("Host", "http_queue_logging2.test")],
        );
        assert_eq!(r.status, 300 + (i % 10));
    }
    for (path, base) in [
        ("/post_log/http_queue", 200),
        ("/post_log/http_queue2", 300),
    ] {
        let mut entries = col.wait_entries(path, n as usize);
        assert_eq!(entries.len(), n as usize);
        entries.sort_by_key(|e| e["response"]["status"].as_u64().unwrap());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e["client_ip"], "127.0.0.1");
            assert_eq!(
                e["response"]["status"],
                base + (i as u64 / (n as u64 / 10)),
                "{path}"
            );
        }
    }
}

#[test]
fn http_log_executes_successfully_when_route_does_not_exist() {
    let up = Recorder::start();
    let col = Collector::start();
    // Enabled globally.
    let yml = kong_yml(
        up.port,
        vec![],
        http_log(json!({"http_endpoint": col.url("/post_log/http")})),
    );
    let gw = Gateway::start(&yml);
    let r = get(
        gw.port,
        "/nonexistant/proxy/path",
        &[("Host", "http_no_exist.test")],
    );
    assert_eq!(r.status, 404);
    let entries = col.wait_entries("/post_log/http", 1);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["response"]["status"], 404);
    assert_eq!(e["source"], "kong");
    // No route: no route, service or tries in the entry.
    assert!(e.get("route").is_none() && e.get("service").is_none());
    assert!(e.get("tries").is_none());
    assert!(!gw.output().contains("[error]"), "{}", gw.output());
}

#[test]
fn http_log_queues_are_shared_based_on_upstream_parameters() {
    // spec/03-plugins/03-http-log/04-legacy_queue_sharing_spec.lua
    let up = Recorder::start();
    let col = Collector::start();
    let plugin = |path: &str, delay: f64| {
        http_log(json!({
            "http_endpoint": col.url(path),
            "queue": {"max_coalescing_delay": delay, "max_batch_size": 2}
        }))
    };
    let yml = kong_yml(
        up.port,
        vec![
            ("sharing.test.route1", plugin("/post_log/http", 1000.0)),
            ("sharing.test.route2", plugin("/post_log/http", 1000.0)),
            (
                "sharing.test.route3",
                plugin("/post_log/http_unshared", 0.01),
            ),
        ],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    for host in [
        "sharing.test.route1",
        "sharing.test.route2",
        "sharing.test.route3",
    ] {
        assert_eq!(get(gw.port, "/status/200", &[("Host", host)]).status, 200);
    }
    // Two instances, one queue: their entries fill one batch of two.
    let shared = col.wait_entries("/post_log/http", 2);
    assert_eq!(shared.len(), 2);
    assert_eq!(col.at("/post_log/http").len(), 1);
    let unshared = col.wait_entries("/post_log/http_unshared", 1);
    assert_eq!(unshared.len(), 1);
}

#[test]
fn http_log_retries_a_batch_until_the_collector_takes_it() {
    let up = Recorder::start();
    // Kong: success is a status below 300; anything else is retried.
    let col = Collector::with(None, Duration::ZERO, &[500, 302]);
    let yml = kong_yml(
        up.port,
        vec![(
            "retry.test",
            http_log(json!({"http_endpoint": col.url("/post_log/retry")})),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    assert_eq!(get(gw.port, "/", &[("Host", "retry.test")]).status, 200);
    assert!(wait_until(WAIT, || col.at("/post_log/retry").len() >= 3));
    thread::sleep(Duration::from_millis(300));
    let got = col.at("/post_log/retry");
    assert_eq!(got.len(), 3, "sent again after each failure, then stopped");
    assert!(got.iter().all(|g| g.body == got[0].body));
    let line = format!(
        "handler could not process entries: request to 127.0.0.1:{} returned status code 500 and body not now",
        col.port()
    );
    assert!(gw.output().contains(&line), "{}", gw.output());
}

#[test]
fn http_log_a_config_push_keeps_the_queued_entries() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = |v: &str| {
        json!({
            "_format_version": "3.0",
            "services": [{
                "name": "s",
                "url": format!("http://127.0.0.1:{}", up.port),
                "routes": [{"hosts": ["push.test"]}],
                "plugins": [{
                    "id": "0d7c8f9e-2b1a-4e3d-8c5b-6a7f8e9d0c1b",
                    "name": "http-log",
                    "config": {
                        "http_endpoint": col.url("/post_log/push"),
                        "headers": {"x-conf": v},
                        "queue": {"max_batch_size": 3, "max_coalescing_delay": 3}
                    }
                }]
            }]
        })
        .to_string()
    };
    let gw = Gateway::start(&yml("one"));
    let host = [("Host", "push.test")];
    assert_eq!(get(gw.port, "/first", &host).status, 200);
    assert!(gw.reload_and_wait(&yml("two")));
    assert_eq!(get(gw.port, "/second", &host).status, 200);
    assert_eq!(get(gw.port, "/third", &host).status, 200);
    let entries = col.wait_entries("/post_log/push", 3);
    let got = col.at("/post_log/push");
    assert_eq!(got.len(), 1, "one batch across the config push");
    let uris: Vec<&str> = entries
        .iter()
        .map(|e| e["request"]["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, vec!["/first", "/second", "/third"]);
    // The queue sends with the newest configuration.
    assert_eq!(got[0].header("x-conf"), Some("two"));
}

#[test]
fn http_log_a_removed_instance_stops_its_queue() {
    let up = Recorder::start();
    // Refuses everything: the batch is retried until the instance goes.
    let col = Collector::with(None, Duration::ZERO, &[500; 10_000]);
    let with_plugin = kong_yml(
        up.port,
        vec![(
            "gone.test",
            http_log(json!({
                "http_endpoint": col.url("/post_log/gone"),
                "queue": {"initial_retry_delay": 0.05, "max_retry_delay": 0.05}
            })),
        )],
        json!([]),
    );
    let gw = Gateway::start(&with_plugin);
    assert_eq!(get(gw.port, "/", &[("Host", "gone.test")]).status, 200);
    assert!(wait_until(WAIT, || col.at("/post_log/gone").len() >= 2));
    let without = kong_yml(up.port, vec![("gone.test", json!([]))], json!([]));
    assert!(gw.reload_and_wait(&without));
    // The next retry sees no instance left and gives up.
    assert!(gw.proc.wait_for_line("queue entries were lost", WAIT));
    let n = col.at("/post_log/gone").len();
    thread::sleep(Duration::from_millis(400));
    assert_eq!(col.at("/post_log/gone").len(), n, "retries went on");
}

#[test]
fn http_log_custom_fields_by_lua_are_refused_at_load() {
    let yml = kong_yml(
        1,
        vec![(
            "custom_http_logging.test",
            http_log(json!({
                "http_endpoint": "http://127.0.0.1:1/post_log/custom_http",
                "custom_fields_by_lua": {"new_field": "return 123"}
            })),
        )],
        json!([]),
    );
    let out = refused(&yml);
    assert!(
        out.contains("custom_fields_by_lua") && out.contains("not supported"),
        "{out}"
    );
}

#[test]
fn http_log_schema_errors_at_load() {
    // spec/03-plugins/03-http-log/02-schema_spec.lua, through the loader.
    for (config, want) in [
        (
            json!({"http_endpoint": "http://myservice.test/path", "headers": {"Host": "MyHost"}}),
            "cannot contain 'Host' header",
        ),
        (
            json!({"http_endpoint": "http://myservice.test/path", "headers": {"X-My-Header": ""}}),
            "length must be at least 1",
        ),
        (
            json!({"http_endpoint": "http://hi:there@myservice.test/path", "headers": {"AuthoRIZATion": "bad"}}),
            "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed",
        ),
        (json!({"http_endpoint": "myservice.test/path"}), "missing host in url"),
    ] {
        let yml = kong_yml(1, vec![("schema.test", http_log(config))], json!([]));
        let out = refused(&yml);
        assert!(out.contains(want), "{want}:\n{out}");
    }
}

// ---------------------------------------------------------------------------
// the serializer through http-log

#[test]
fn serializer_shape_of_a_proxied_request() {
    let up = Recorder::start();
    let col = Collector::start();
    let yml = json!({
        "_format_version": "3.0",
        "services": [{
            "name": "svc",
            "url": format!("http://127.0.0.1:{}/base", up.port),
            "routes": [{"name": "rt", "paths": ["/shape"], "hosts": ["shape.test"]}]
        }],
        "plugins": [{"name": "http-log", "config": {"http_endpoint": col.url("/log")}}]
    })
    .to_string();
    let gw = Gateway::start_with(&yml, &[("KONG_PORT_MAPS", "8000:{PROXY_PORT}")]);
    let r = get(
        gw.port,
        "/shape/x?a=1&b&a=2&c=d%20e",
        &[
            ("Host", "shape.test"),
            ("Authorization", "Basic c2VjcmV0"),
            ("Proxy-Authorization", "secret"),
            ("X-Multi", "1"),
            ("X-Multi", "2"),
        ],
    );
    assert_eq!(r.status, 200);
    let e = col.wait_entries("/log", 1).remove(0);
    let req = &e["request"];
    assert_eq!(req["id"], r.header("x-kong-request-id").unwrap());
    assert_eq!(req["uri"], "/shape/x?a=1&b&a=2&c=d%20e");
    // The port the client used (port_maps), as Kong's ctx.host_port.
    assert_eq!(
        req["url"],
        "http://shape.test:8000/shape/x?a=1&b&a=2&c=d%20e"
    );
    assert_eq!(
        req["querystring"],
        json!({"a": ["1", "2"], "b": true, "c": "d e"})
    );
    assert_eq!(req["method"], "GET");
    assert_eq!(req["headers"]["authorization"], "REDACTED");
    assert_eq!(req["headers"]["proxy-authorization"], "REDACTED");
    assert_eq!(req["headers"]["x-multi"], json!(["1", "2"]));
    assert_eq!(req["headers"]["host"], "shape.test");
    assert!(req["size"].as_u64().unwrap() > 100);
    assert!(req.get("tls").is_none());
    assert_eq!(e["upstream_uri"], "/base/x?a=1&b&a=2&c=d%20e");
    assert_eq!(e["upstream_status"], "200");
    let resp = &e["response"];
    assert_eq!(resp["status"], 200);
    assert_eq!(resp["headers"]["server"], "recorder");
    assert_eq!(
        resp["headers"]["x-kong-request-id"],
        r.header("x-kong-request-id").unwrap()
    );
    assert!(resp["size"].as_u64().unwrap() >= r.body.len() as u64);
    assert_latencies(&e, 0);
    let tries = e["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0]["ip"], "127.0.0.1");
    assert_eq!(tries[0]["port"], up.port);
    assert!(tries[0].get("state").is_none());
    for k in [
        "balancer_start",
        "balancer_start_ns",
        "balancer_latency",
        "balancer_latency_ns",
    ] {
        assert!(tries[0][k].as_u64().is_some(), "{k}: {}", tries[0]);
    }
    assert_eq!(e["route"]["name"], "rt");
    assert_eq!(e["route"]["paths"], json!(["/shape"]));
    assert_eq!(e["route"]["service"]["id"], e["service"]["id"]);
    assert_eq!(e["service"]["name"], "svc");
    assert_eq!(e["service"]["path"], "/base");
    assert_eq!(e["service"]["port"], up.port);
    assert_eq!(e["route"]["ws_id"], e["workspace"]);
    assert!(e.get("consumer").is_none());
    assert!(e.get("authenticated_entity").is_none());
    assert_eq!(e["client_ip"], "127.0.0.1");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = e["started_at"].as_u64().unwrap();
    assert!(started <= now_ms && now_ms - started < 60_000, "{started}");
    assert_eq!(e["source"], "upstream");
    assert_eq!(e["workspace_name"], "default");
    assert!(e["workspace"].as_str().unwrap().len() == 36);
}

#[test]
fn serializer_a_kong_answer_and_failed_tries() {
    let col = Collector::start();
    // A port nothing listens on, with one retry: two failed tries.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yml = json!({
        "_format_version": "3.0",
        "services": [{
            "name": "dead",
            "url": format!("http://127.0.0.1:{dead}"),
            "retries": 1,
            "routes": [{"paths": ["/dead"]}]
        }],
        "routes": [{"name": "nosvc", "paths": ["/nosvc"]}],
        "plugins": [{"name": "http-log", "config": {"http_endpoint": col.url("/log")}}]
    })
    .to_string();
    let gw = Gateway::start(&yml);
    assert_eq!(get(gw.port, "/nosvc", &[]).status, 503);
    let e = col.wait_entries("/log", 1).remove(0);
    assert_eq!(e["source"], "kong");
    assert_eq!(e["response"]["status"], 503);
    assert_eq!(e["upstream_status"], "");
    assert_eq!(e["upstream_uri"], "");
    assert_eq!(e["latencies"]["proxy"], -1);
    assert_eq!(e["latencies"]["receive"], 0);
    assert_eq!(e["route"]["name"], "nosvc");
    assert!(e.get("service").is_none());

    assert_eq!(get(gw.port, "/dead", &[]).status, 502);
    let e = col.wait_entries("/log", 2).remove(1);
    assert_eq!(e["source"], "kong");
    assert_eq!(e["response"]["status"], 502);
    assert_eq!(e["upstream_status"], "502, 502");
    let tries = e["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0]["state"], "failed");
    assert_eq!(tries[0]["code"], 502);
    assert_eq!(tries[0]["port"], dead);
    assert!(tries[1].get("state").is_none());
    assert!(e["latencies"]["proxy"].as_i64().unwrap() >= 0);
}

// ---------------------------------------------------------------------------
// file-log

fn file_log(path: &str, reopen: bool) -> Value {
    json!([{"name": "file-log", "config": {"path": path, "reopen": reopen}}])
}

fn read_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn file_log_logs_to_file() {
    let up = Recorder::start();
    let dir = TempDir::new("file-log");
    let path = dir.path().join("file.log");
    let p = path.to_str().unwrap();
    let yml = kong_yml(
        up.port,
        vec![("file_logging.test", file_log(p, true))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let r = get(
        gw.port,
        "/status/200",
        &[("file-log-uuid", "abc123"), ("Host", "file_logging.test")],
    );
    assert_eq!(r.status, 200);
    assert!(wait_until(WAIT, || !read_lines(&path).is_empty()));
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1);
    let msg: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(msg["client_ip"], "127.0.0.1");
    assert_eq!(msg["request"]["headers"]["file-log-uuid"], "abc123");
    assert!(msg["request"]["size"].is_number());
    assert!(msg["response"]["size"].is_number());
    // Kong's open mode: 0644.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o600, 0o600);
}

#[test]
fn file_log_reopens_file_on_each_request() {
    let up = Recorder::start();
    let dir = TempDir::new("file-log");
    let path = dir.path().join("file.log");
    let p = path.to_str().unwrap();
    let yml = kong_yml(
        up.port,
        vec![("file_logging.test", file_log(p, true))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let send = |id: &str| {
        let r = get(
            gw.port,
            "/status/200",
            &[("file-log-uuid", id), ("Host", "file_logging.test")],
        );
        assert_eq!(r.status, 200);
    };
    send("uuid-1");
    assert!(wait_until(WAIT, || read_lines(&path)
        .join("\n")
        .contains("uuid-1")));
    // Remove the file to see whether it gets recreated.
    std::fs::remove_file(&path).unwrap();
    send("uuid-2");
    send("uuid-3");
    assert!(wait_until(WAIT, || {
        let all = read_lines(&path).join("\n");
        all.contains("uuid-2") && all.contains("uuid-3")
    }));
    assert!(!read_lines(&path).join("\n").contains("uuid-1"));
}

#[test]
fn file_log_does_not_create_log_file_if_directory_does_not_exist_and_not_a_directory() {
    let up = Recorder::start();
    let dir = TempDir::new("file-log");
    let missing = dir.path().join("dir").join("file");
    let a_dir = dir.path().join("adir/");
    std::fs::create_dir(&a_dir).unwrap();
    let yml = kong_yml(
        up.port,
        vec![
            (
                "file_logging2.test",
                file_log(missing.to_str().unwrap(), true),
            ),
            (
                "file_logging3.test",
                file_log(a_dir.to_str().unwrap(), true),
            ),
        ],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    assert_eq!(
        get(gw.port, "/", &[("Host", "file_logging2.test")]).status,
        200
    );
    assert!(
        gw.proc.wait_for_line(
            "[file-log] failed to open the file: No such file or directory",
            WAIT
        ),
        "{}",
        gw.output()
    );
    assert!(!missing.exists());
    // "the given path is not a file but a directory"
    assert_eq!(
        get(gw.port, "/", &[("Host", "file_logging3.test")]).status,
        200
    );
    assert!(
        gw.proc
            .wait_for_line("[file-log] failed to open the file: Is a directory", WAIT),
        "{}",
        gw.output()
    );
}

#[test]
fn file_log_logs_are_lost_if_reopen_false_and_file_does_not_exist() {
    let up = Recorder::start();
    let dir = TempDir::new("file-log");
    let path = dir.path().join("file.log");
    let p = path.to_str().unwrap();
    let yml = kong_yml(
        up.port,
        vec![
            ("file_logging.test", file_log(p, true)),
            ("file_logging4.test", file_log(p, false)),
        ],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    // Kong's spec relies on an earlier test having opened (and cached) the
    // descriptor for this path: do so here.
    assert_eq!(
        get(gw.port, "/", &[("Host", "file_logging.test")]).status,
        200
    );
    assert!(wait_until(WAIT, || !read_lines(&path).is_empty()));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        get(gw.port, "/", &[("Host", "file_logging4.test")]).status,
        200
    );
    thread::sleep(Duration::from_millis(300));
    assert!(!path.exists());
}

#[test]
fn file_log_does_not_log_if_kong_has_no_write_permissions_to_the_file() {
    if is_root() {
        // Kong's spec writes to /etc/shadow, which root may write to.
        gw_tests::skip(
            "file_log_does_not_log_if_kong_has_no_write_permissions_to_the_file",
            Skip::Impossible,
            "running as root: file permissions do not stop the writer",
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let up = Recorder::start();
    let dir = TempDir::new("file-log");
    let path = dir.path().join("readonly.log");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let yml = kong_yml(
        up.port,
        vec![("file_logging5.test", file_log(path.to_str().unwrap(), true))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    assert_eq!(
        get(gw.port, "/", &[("Host", "file_logging5.test")]).status,
        200
    );
    assert!(gw.proc.wait_for_line(
        "[file-log] failed to open the file: Permission denied",
        WAIT
    ));
}

#[test]
fn file_log_the_given_path_is_a_character_device_file() {
    let up = Recorder::start();
    let yml = kong_yml(
        up.port,
        vec![("file_logging6.test", file_log("/dev/null", true))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    assert_eq!(
        get(gw.port, "/", &[("Host", "file_logging6.test")]).status,
        200
    );
    thread::sleep(Duration::from_millis(300));
    assert!(!gw.output().contains("[file-log] failed to open the file"));
}

#[test]
fn file_log_schema_and_custom_fields_by_lua_at_load() {
    // spec/03-plugins/04-file-log/02-schema_spec.lua
    for (config, want) in [
        (json!({}), "required field missing"),
        (json!({"path": "/ovo*"}), "not a valid filename"),
        (json!({"path": " /ovo"}), "not a valid filename"),
        (
            json!({"path": "/tmp/x.log", "custom_fields_by_lua": {"new_field": "return 123"}}),
            "custom_fields_by_lua",
        ),
    ] {
        let yml = kong_yml(
            1,
            vec![("f.test", json!([{"name": "file-log", "config": config}]))],
            json!([]),
        );
        let out = refused(&yml);
        assert!(out.contains(want), "{want}:\n{out}");
    }
}

// ---------------------------------------------------------------------------
// tcp-log

fn tcp_log(port: u16, extra: Value) -> Value {
    let mut config = json!({"host": "127.0.0.1", "port": port});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    json!([{"name": "tcp-log", "config": config}])
}

#[test]
fn tcp_log_logs_to_tcp() {
    let up = Recorder::start();
    let srv = LineServer::start(None);
    let yml = kong_yml(
        up.port,
        vec![("tcp_logging.test", tcp_log(srv.server.port, json!({})))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/request", &[("Host", "tcp_logging.test")]);
    assert_eq!(r.status, 200);
    let msg = srv.wait_json(1).remove(0);
    assert_eq!(msg["client_ip"], "127.0.0.1");
    // Over plain HTTP: no TLS information.
    assert!(msg["request"].get("tls").is_none());
    // Kept connection: a second entry reuses it.
    assert_eq!(
        get(gw.port, "/request", &[("Host", "tcp_logging.test")]).status,
        200
    );
    srv.wait_json(2);
}

#[test]
fn tcp_log_logs_proper_latencies() {
    let (_bin, up) = start_httpbin("up");
    let srv = LineServer::start(None);
    let yml = kong_yml(
        up,
        vec![("tcp_logging.test", tcp_log(srv.server.port, json!({})))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/delay/1", &[("Host", "tcp_logging.test")]);
    assert_eq!(r.status, 200);
    let msg = srv.wait_json(1).remove(0);
    assert_latencies(&msg, 900);
}

#[test]
fn tcp_log_performs_a_tls_handshake_on_the_remote_tcp_server() {
    let up = Recorder::start();
    let srv = LineServer::start(Some(tls_config()));
    let yml = kong_yml(
        up.port,
        vec![(
            "tcp_logging_tls.test",
            tcp_log(srv.server.port, json!({"tls": true})),
        )],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/request", &[("Host", "tcp_logging_tls.test")]);
    assert_eq!(r.status, 200);
    let msg = srv.wait_json(1).remove(0);
    assert_eq!(msg["client_ip"], "127.0.0.1");
}

#[test]
fn tcp_log_tries_field_encoded_as_json_array_instead_of_object_6390() {
    // Kong's spec ends the request with request-termination; a route
    // without a service ends it in Kong just the same (routed, never
    // proxied: `balancer_data.tries` is an empty array).
    let srv = LineServer::start(None);
    let yml = json!({
        "_format_version": "3.0",
        "routes": [{
            "hosts": ["early_termination.example.test"],
            "plugins": tcp_log(srv.server.port, json!({}))
        }]
    })
    .to_string();
    let gw = Gateway::start(&yml);
    let r = get(
        gw.port,
        "/request",
        &[("Host", "early_termination.example.test")],
    );
    assert_eq!(r.status, 503);
    assert!(wait_until(WAIT, || !srv.lines.lock().unwrap().is_empty()));
    let raw = srv.lines.lock().unwrap()[0].clone();
    assert!(raw.contains("\"tries\":[]"), "{raw}");
}

#[test]
fn tcp_log_custom_fields_by_lua_and_schema_at_load() {
    let out = refused(&kong_yml(
        1,
        vec![(
            "custom_tcp_logging.test",
            tcp_log(
                1,
                json!({"custom_fields_by_lua": {"new_field": "return 123"}}),
            ),
        )],
        json!([]),
    ));
    assert!(out.contains("custom_fields_by_lua"), "{out}");
    let out = refused(&kong_yml(
        1,
        vec![(
            "t.test",
            json!([{"name": "tcp-log", "config": {"host": "127.0.0.1:80", "port": 1}}]),
        )],
        json!([]),
    ));
    assert!(out.contains("must not have a port"), "{out}");
}

// ---------------------------------------------------------------------------
// udp-log

fn udp_log(port: u16) -> Value {
    json!([{"name": "udp-log", "config": {"host": "127.0.0.1", "port": port}}])
}

#[test]
fn udp_log_logs_to_udp() {
    let up = Recorder::start();
    let srv = UdpServer::start();
    let yml = kong_yml(
        up.port,
        vec![("udp_logging.test", udp_log(srv.port))],
        json!([]),
    );
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/request", &[("Host", "udp_logging.test")]);
    assert_eq!(r.status, 200);
    let msg = srv.wait_json(1).remove(0);
    assert_eq!(msg["client_ip"], "127.0.0.1");
    // One JSON object per datagram, without a newline.
    assert!(!srv.got.lock().unwrap()[0].ends_with(b"\n"));
}

#[test]
fn udp_log_logs_proper_latencies() {
    let (_bin, up) = start_httpbin("up");
    let srv = UdpServer::start();
    let yml = kong_yml(up, vec![("udp_logging.test", udp_log(srv.port))], json!([]));
    let gw = Gateway::start(&yml);
    let r = get(gw.port, "/delay/1", &[("Host", "udp_logging.test")]);
    assert_eq!(r.status, 200);
    let msg = srv.wait_json(1).remove(0);
    assert_latencies(&msg, 900);
}

#[test]
fn udp_log_custom_fields_by_lua_are_refused_at_load() {
    let yml = kong_yml(
        1,
        vec![(
            "custom_udp_logging.test",
            json!([{"name": "udp-log", "config": {
                "host": "127.0.0.1", "port": 1,
                "custom_fields_by_lua": {"new_field": "return 123"}
            }}]),
        )],
        json!([]),
    );
    let out = refused(&yml);
    assert!(out.contains("custom_fields_by_lua"), "{out}");
}

// ---------------------------------------------------------------------------
// all four on one request

#[test]
fn every_logging_plugin_logs_the_same_request() {
    let up = Recorder::start();
    let col = Collector::start();
    let tcp = LineServer::start(None);
    let udp = UdpServer::start();
    let dir = TempDir::new("file-log");
    let path = dir.path().join("all.log");
    let plugins = json!([
        {"name": "http-log", "config": {"http_endpoint": col.url("/all")}},
        {"name": "file-log", "config": {"path": path.to_str().unwrap()}},
        {"name": "tcp-log", "config": {"host": "127.0.0.1", "port": tcp.server.port}},
        {"name": "udp-log", "config": {"host": "127.0.0.1", "port": udp.port}},
    ]);
    let gw = Gateway::start(&kong_yml(up.port, vec![("all.test", plugins)], json!([])));
    let r = get(gw.port, "/all", &[("Host", "all.test")]);
    assert_eq!(r.status, 200);
    let id = r.header("x-kong-request-id").unwrap().to_string();
    let h = col.wait_entries("/all", 1).remove(0);
    let t = tcp.wait_json(1).remove(0);
    let u = udp.wait_json(1).remove(0);
    assert!(wait_until(WAIT, || !read_lines(&path).is_empty()));
    let f: Value = serde_json::from_str(&read_lines(&path)[0]).unwrap();
    for e in [&h, &t, &u, &f] {
        assert_eq!(e["request"]["id"], id.as_str());
        assert_eq!(e["route"]["id"], h["route"]["id"]);
    }
}

// ---------------------------------------------------------------------------
// what other plugins put in the entry

#[test]
fn serializer_consumer_credential_and_correlation_id() {
    let up = Recorder::start();
    let col = Collector::start();
    let consumer_id = "8f1f2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    let cred_id = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    let yml = json!({
        "_format_version": "3.0",
        "consumers": [{
            "id": consumer_id,
            "username": "bob",
            "custom_id": "bob-1",
            "keyauth_credentials": [{"id": cred_id, "key": "secret123"}]
        }],
        "services": [{
            "name": "s",
            "url": format!("http://127.0.0.1:{}", up.port),
            "routes": [{
                "paths": ["/auth"],
                "plugins": [
                    {"name": "key-auth"},
                    {"name": "correlation-id", "config": {"header_name": "X-Corr"}},
                    {"name": "http-log", "config": {"http_endpoint": col.url("/log")}}
                ]
            }]
        }]
    })
    .to_string();
    let gw = Gateway::start(&yml);
    let r = get(
        gw.port,
        "/auth",
        &[("apikey", "secret123"), ("X-Corr", "corr-1")],
    );
    assert_eq!(r.status, 200);
    let e = col.wait_entries("/log", 1).remove(0);
    assert_eq!(e["consumer"]["id"], consumer_id);
    assert_eq!(e["consumer"]["username"], "bob");
    assert_eq!(e["consumer"]["custom_id"], "bob-1");
    // Kong logs `{id = credential.id, consumer_id = credential.consumer_id}`
    // and DAO credentials carry `consumer = {id}`: the id alone shows.
    assert_eq!(e["authenticated_entity"], json!({"id": cred_id}));
    assert_eq!(e["correlation_id"], "corr-1");

    // A refusal is logged too, with Kong as the source.
    let r = get(gw.port, "/auth", &[("apikey", "wrong")]);
    assert_eq!(r.status, 401);
    let e = col.wait_entries("/log", 2).remove(1);
    assert_eq!(e["response"]["status"], 401);
    assert_eq!(e["source"], "kong");
    assert_eq!(e["tries"], json!([]));
    assert!(e.get("consumer").is_none() && e.get("authenticated_entity").is_none());
}

#[test]
fn tcp_log_tries_field_with_request_termination_6390() {
    // The spec's own setup: request-termination answers 200 "hello!".
    let srv = LineServer::start(None);
    let yml = json!({
        "_format_version": "3.0",
        "routes": [{
            "hosts": ["early_termination.example.test"],
            "plugins": [
                {"name": "tcp-log", "config": {"host": "127.0.0.1", "port": srv.server.port}},
                {"name": "request-termination", "config": {
                    "status_code": 200, "content_type": "text/plain", "body": "hello!"
                }}
            ]
        }]
    })
    .to_string();
    let gw = Gateway::start(&yml);
    let r = get(
        gw.port,
        "/request",
        &[("Host", "early_termination.example.test")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello!");
    assert!(wait_until(WAIT, || !srv.lines.lock().unwrap().is_empty()));
    let raw = srv.lines.lock().unwrap()[0].clone();
    assert!(raw.contains("\"tries\":[]"), "{raw}");
    let e: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(e["source"], "kong");
}

#[test]
fn http_log_queued_entries_are_sent_when_the_gateway_stops() {
    // Kong's queues stop coalescing and drain while a worker exits.
    let up = Recorder::start();
    let col = Collector::start();
    let yml = kong_yml(
        up.port,
        vec![(
            "stop.test",
            http_log(json!({
                "http_endpoint": col.url("/post_log/stop"),
                "queue": {"max_batch_size": 10, "max_coalescing_delay": 3600}
            })),
        )],
        json!([]),
    );
    let mut gw = Gateway::start_with(&yml, &[("KONG_DRAIN_DELAY", "0")]);
    assert_eq!(get(gw.port, "/", &[("Host", "stop.test")]).status, 200);
    assert_eq!(get(gw.port, "/", &[("Host", "stop.test")]).status, 200);
    thread::sleep(Duration::from_millis(200));
    assert!(col.entries("/post_log/stop").is_empty());
    assert!(gw.proc.signal("TERM"));
    let status = gw.proc.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "the gateway did not stop");
    let entries = col.entries("/post_log/stop");
    assert_eq!(entries.len(), 2, "{}", gw.output());
    let _ = gw.stop();
}
