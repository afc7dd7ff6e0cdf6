//! Starting the `gateway` binary for integration tests, plus a tiny
//! recording upstream.
//!
//! - [`Gateway`]: writes a `kong.yml` into a fresh temp prefix, starts the
//!   gateway DB-less on free loopback ports (proxy + status), waits until
//!   `/status/ready` answers, reloads with SIGHUP and stops it (SIGINT) on
//!   drop. [`Gateway::try_start`] is for tests that expect startup to fail.
//! - [`Recorder`]: a raw-TCP HTTP/1.1 upstream that answers every request
//!   (any path) with a JSON description of what arrived, and remembers every
//!   request so a test can assert that nothing (or exactly N requests)
//!   reached the upstream.
//! - [`fill`]: replaces `{UPSTREAM}` / `{UPSTREAM_PORT}` placeholders in
//!   test YAML.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::{bin_path, free_port, try_request, Proc, Response};

/// How long a gateway gets to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Placeholder for the proxy listener port in environment values given to
/// [`Gateway::start_with`] and friends.
pub const PROXY_PORT: &str = "{PROXY_PORT}";

/// Replaces `{UPSTREAM}` with `127.0.0.1:<port>` and `{UPSTREAM_PORT}` with
/// the port.
pub fn fill(yml: &str, upstream_port: u16) -> String {
    yml.replace("{UPSTREAM}", &format!("127.0.0.1:{upstream_port}"))
        .replace("{UPSTREAM_PORT}", &upstream_port.to_string())
}

/// Replaces `{UP0}`, `{UP1}`, ... with `127.0.0.1:<ports[i]>` (one upstream
/// per service, so a test can tell which route matched by which upstream
/// received the request).
pub fn fill_ports(yml: &str, ports: &[u16]) -> String {
    let mut out = yml.to_string();
    // Highest index first so `{UP1}` never clobbers part of `{UP10}`.
    for (i, p) in ports.iter().enumerate().rev() {
        out = out.replace(&format!("{{UP{i}}}"), &format!("127.0.0.1:{p}"));
    }
    out
}

// ---------------------------------------------------------------------------
// Temp directories.

/// A directory under `std::env::temp_dir()` removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let name = format!(
                "gw-test-{tag}-{}-{}-{nanos}-{attempt}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            );
            let path = std::env::temp_dir().join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create temp dir {}: {e}", path.display()),
            }
        }
        panic!("could not create a unique temp dir");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `text` to `path` atomically (temp file + rename), so a reload
/// never reads a half-written file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// The gateway process.

/// A running `gateway` (DB-less) on free loopback ports.
pub struct Gateway {
    pub proc: Proc,
    /// Proxy listener port (`KONG_PROXY_LISTEN`).
    pub port: u16,
    /// Status listener port (`KONG_STATUS_LISTEN`).
    pub status_port: u16,
    /// `KONG_PREFIX` (a temp dir removed on drop).
    pub prefix: PathBuf,
    /// The declarative config file (`KONG_DECLARATIVE_CONFIG`).
    pub config_path: PathBuf,
    dir: Option<TempDir>,
}

/// Outcome of waiting for a gateway start.
enum Started {
    Up,
    Exited,
    TimedOut,
}

impl Gateway {
    /// Starts the gateway with `kong_yml`; panics (with the process output)
    /// if it does not come up within 10 s.
    pub fn start(kong_yml: &str) -> Gateway {
        Gateway::start_with(kong_yml, &[])
    }

    /// Like [`Gateway::start`] with extra `KONG_*` environment (overrides the
    /// defaults this harness sets). [`PROXY_PORT`] in a value stands for the
    /// proxy port, which is only picked at launch (e.g.
    /// `("KONG_PORT_MAPS", "80:{PROXY_PORT}")`).
    pub fn start_with(kong_yml: &str, env: &[(&str, &str)]) -> Gateway {
        match Gateway::launch(kong_yml, env, &[], &[]) {
            Ok(g) => g,
            Err(out) => panic!("gateway did not start; output:\n{out}"),
        }
    }

    /// Starts the gateway expecting it may fail: `Err(output)` when the
    /// process exits during startup (the output ends with the exit status).
    pub fn try_start(kong_yml: &str) -> Result<Gateway, String> {
        Gateway::try_start_with(kong_yml, &[])
    }

    pub fn try_start_with(kong_yml: &str, env: &[(&str, &str)]) -> Result<Gateway, String> {
        Gateway::launch(kong_yml, env, &[], &[])
    }

    /// Full control: extra command-line arguments (e.g. `["-c", path]`).
    pub fn try_start_args(
        kong_yml: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Gateway, String> {
        Gateway::launch(kong_yml, env, args, &[])
    }

    /// Starts the gateway through a wrapper command: the process runs
    /// `wrapper[0] wrapper[1..] <gateway> <args>` (e.g. a shell that moves
    /// itself into a cgroup and then `exec`s the gateway).
    pub fn try_start_wrapped(
        kong_yml: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<Gateway, String> {
        Gateway::launch(kong_yml, env, &[], wrapper)
    }

    fn launch(
        kong_yml: &str,
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
    ) -> Result<Gateway, String> {
        let bin = bin_path("gateway");
        assert!(
            bin.exists(),
            "{} not found; build it with `cargo build -p gateway`",
            bin.display()
        );
        if env.iter().any(|(k, _)| k.starts_with("KONG_TEST_")) {
            assert_test_hooks_built(&bin);
        }
        let dir = TempDir::new("gw");
        let config_path = dir.path().join("kong.yml");
        write_atomic(&config_path, kong_yml);
        let prefix = dir.path().join("prefix");
        std::fs::create_dir_all(&prefix).unwrap_or_else(|e| panic!("mkdir prefix: {e}"));

        let mut last = String::new();
        // free_port() is racy: retry when the ports got taken meanwhile.
        for _ in 0..3 {
            let port = free_port();
            let mut status_port = free_port();
            while status_port == port {
                status_port = free_port();
            }
            let mut cmd = match wrapper.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            cmd.args(args);
            // Hermetic: nothing from the test runner's KONG_* environment.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("KONG_") {
                    cmd.env_remove(&k);
                }
            }
            let proxy_listen = format!("127.0.0.1:{port}");
            let status_listen = format!("127.0.0.1:{status_port}");
            let defaults = [
                ("KONG_DATABASE", "off"),
                (
                    "KONG_DECLARATIVE_CONFIG",
                    config_path.to_str().unwrap_or(""),
                ),
                ("KONG_PROXY_LISTEN", proxy_listen.as_str()),
                ("KONG_STATUS_LISTEN", status_listen.as_str()),
                ("KONG_PREFIX", prefix.to_str().unwrap_or("")),
                ("KONG_PROXY_ACCESS_LOG", "off"),
                ("KONG_PROXY_ERROR_LOG", "/dev/stderr"),
                ("KONG_NGINX_WORKER_PROCESSES", "1"),
            ];
            for (k, v) in defaults {
                cmd.env(k, v);
            }
            for (k, v) in env {
                cmd.env(k, v.replace(PROXY_PORT, &port.to_string()));
            }
            let mut proc = Proc::spawn(cmd);
            match wait_started(&mut proc, port, status_port, START_TIMEOUT) {
                Started::Up => {
                    return Ok(Gateway {
                        proc,
                        port,
                        status_port,
                        prefix,
                        config_path,
                        dir: Some(dir),
                    })
                }
                Started::Exited => {
                    let status = proc.try_wait();
                    // Let the reader threads drain the pipes.
                    proc.wait_for_line("\u{0}never", Duration::from_millis(500));
                    let out = format!("{}\n[exit status: {status:?}]", proc.output());
                    let port_taken = out.contains("Address already in use");
                    if !port_taken {
                        return Err(out);
                    }
                    last = out;
                }
                Started::TimedOut => {
                    proc.kill();
                    return Err(format!(
                        "gateway did not answer /status/ready within {START_TIMEOUT:?}; output:\n{}",
                        proc.output()
                    ));
                }
            }
        }
        Err(last)
    }

    /// Rewrites the declarative file and sends SIGHUP (returns at once).
    pub fn reload(&self, new_yml: &str) {
        write_atomic(&self.config_path, new_yml);
        assert!(self.proc.signal("HUP"), "SIGHUP delivery failed");
    }

    /// Reloads and waits (≤ 10 s) until `/status` reports a different
    /// configuration hash. Returns false on timeout.
    pub fn reload_and_wait(&self, new_yml: &str) -> bool {
        let before = self.config_hash();
        self.reload(new_yml);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.config_hash() != before {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `GET /status` on the status listener, as JSON.
    pub fn status(&self) -> serde_json::Value {
        let r = self.status_get("/status");
        assert_eq!(r.status, 200, "/status: {}", r.body_str());
        r.json()
    }

    /// `configuration_hash` from `/status` (empty string if absent).
    pub fn config_hash(&self) -> String {
        self.status()["configuration_hash"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Any GET on the status listener.
    pub fn status_get(&self, path: &str) -> Response {
        crate::get(self.status_port, path, &[])
    }

    /// The captured output of the gateway process.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Graceful stop (SIGINT, then SIGKILL after 5 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.stop()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.proc.stop_with("INT", Duration::from_secs(5));
        drop(self.dir.take());
    }
}

/// `KONG_TEST_*` hooks exist only in a gateway built with its `test-hooks`
/// feature, which any build including gw-tests turns on; a binary built
/// alone (`cargo build -p gateway`) would silently run Kong's real timers.
fn assert_test_hooks_built(bin: &Path) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} --version: {e}", bin.display()));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[test-hooks]"),
        "{} was built without its test hooks; rebuild it with `cargo build -p gateway -p gw-tests --bins`",
        bin.display()
    );
}

fn wait_started(proc: &mut Proc, port: u16, status_port: u16, timeout: Duration) -> Started {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], status_port));
    loop {
        if !proc.is_running() {
            return Started::Exited;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Any HTTP answer to /status/ready counts (503 = empty config).
            if try_request(status_port, "GET", "/status/ready", &[], b"").is_ok()
                && crate::wait_for_port(port, Duration::from_secs(2))
            {
                return Started::Up;
            }
        }
        if Instant::now() >= deadline {
            return Started::TimedOut;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------
// Recording upstream.

/// One request as the recording upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The raw request target (path and query as sent).
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// In order, with the case sent, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn to_json(&self) -> serde_json::Value {
        let headers: Vec<serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        serde_json::json!({
            "method": self.method,
            "uri": self.target,
            "version": self.version,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

/// A minimal HTTP/1.1 upstream on a free loopback port. Every request, on any
/// path, is answered `200` with a JSON body
/// `{"method","uri","version","headers":[[name,value]...],"body"}` and a
/// `Server: recorder` header, keeping the connection alive. Every request is
/// also kept for [`Recorder::requests`]. Stops accepting on drop.
pub struct Recorder {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        Recorder::start_with_headers(&[])
    }

    /// Like [`Recorder::start`], adding `headers` to every response. With
    /// `Transfer-Encoding: chunked` among them the body is sent chunked.
    pub fn start_with_headers(headers: &[(&str, &str)]) -> Recorder {
        let extra: Arc<Vec<(String, String)>> = Arc::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let port = listener.local_addr().expect("recorder addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, c, s) = (requests.clone(), connections.clone(), stop.clone());
        let accept_thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                let s = s.clone();
                let extra = extra.clone();
                thread::spawn(move || serve_conn(stream, &r, &s, &extra));
            }
        });
        Recorder {
            port,
            requests,
            connections,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn count(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The most recent request; panics if none arrived.
    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the recording upstream received no request")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        );
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; false on EOF/error/stop.
fn fill_buf(stream: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return false,
        }
    }
}

fn serve_conn(
    mut stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    stop: &AtomicBool,
    extra: &[(String, String)],
) {
    // Short read timeouts so the thread notices `stop`; idle connections
    // end after 30 s.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let idle_limit = Duration::from_secs(30);
    let mut last_activity = Instant::now();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if last_activity.elapsed() > idle_limit {
                return;
            }
            let before = buf.len();
            if !fill_buf(&mut stream, &mut buf, stop) {
                return;
            }
            if buf.len() > before {
                last_activity = Instant::now();
            }
        };
        let mut hdrs = vec![httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut hdrs);
        if !matches!(
            req.parse(&buf[..head_end]),
            Ok(httparse::Status::Complete(_))
        ) {
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let target = req.path.unwrap_or("").to_string();
        let version = if req.version == Some(0) {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
        .to_string();
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
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let chunked =
            get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let cl = get("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || version == "HTTP/1.0";
        buf.drain(..head_end);

        // Body.
        let mut body = Vec::new();
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&buf, b"\r\n") {
                        break i;
                    }
                    if !fill_buf(&mut stream, &mut buf, stop) {
                        return;
                    }
                };
                let size_str = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let size_str = size_str.split(';').next().unwrap_or("").trim().to_string();
                let Ok(size) = usize::from_str_radix(&size_str, 16) else {
                    return;
                };
                buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailers until an empty line.
                    loop {
                        let end = loop {
                            if let Some(i) = find(&buf, b"\r\n") {
                                break i;
                            }
                            if !fill_buf(&mut stream, &mut buf, stop) {
                                return;
                            }
                        };
                        buf.drain(..end + 2);
                        if end == 0 {
                            break;
                        }
                    }
                    break;
                }
                while buf.len() < size + 2 {
                    if !fill_buf(&mut stream, &mut buf, stop) {
                        return;
                    }
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
        } else if let Some(n) = cl {
            while buf.len() < n {
                if !fill_buf(&mut stream, &mut buf, stop) {
                    return;
                }
            }
            body.extend_from_slice(&buf[..n]);
            buf.drain(..n);
        }

        let rec = Recorded {
            method,
            target,
            version,
            headers,
            body,
        };
        let head = rec.method == "HEAD";
        let json = rec.to_json().to_string();
        requests.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        let chunked_resp = extra.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let mut resp = String::from("HTTP/1.1 200 OK\r\n");
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("server")) {
            resp.push_str("Server: recorder\r\n");
        }
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            resp.push_str("Content-Type: application/json\r\n");
        }
        if !chunked_resp {
            resp.push_str(&format!("Content-Length: {}\r\n", json.len()));
        }
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            resp.push_str("Connection: close\r\n");
        }
        resp.push_str("\r\n");
        if !head {
            if chunked_resp {
                resp.push_str(&format!("{:x}\r\n{json}\r\n0\r\n\r\n", json.len()));
            } else {
                resp.push_str(&json);
            }
        }
        if stream.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
        last_activity = Instant::now();
    }
}

// ---------------------------------------------------------------------------
// Named sub-cases.

/// Runs several named cases against one shared setup (one gateway per Kong
/// `describe` block) and reports every failing case by name at the end,
/// instead of stopping at the first failure.
#[derive(Default)]
pub struct Cases {
    ran: Vec<String>,
    failures: Vec<String>,
}

impl Cases {
    pub fn new() -> Cases {
        Cases::default()
    }

    /// Runs one case, named after the Kong `it(...)` it ports.
    pub fn it(&mut self, name: &str, f: impl FnOnce()) {
        self.ran.push(name.to_string());
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            self.failures.push(format!("it(\"{name}\"): {msg}"));
        }
    }

    /// Panics listing every failed case.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failures.len(),
            self.ran.len(),
            self.failures.join("\n")
        );
    }
}
