//! Test harness shared by the integration tests.
//!
//! - process management ([`Proc`]): spawn a binary, capture its output,
//!   wait for log lines, signal it, and always kill it on drop;
//! - locating built binaries ([`bin_path`]) and ports ([`free_port`]);
//! - the httpbin upstream ([`start_httpbin`]);
//! - a tiny blocking raw HTTP/1.1 client ([`raw_request`], [`get`],
//!   [`request`], [`Conn`]) that can also send malformed bytes.
//!
//! Helpers panic with a descriptive message on setup failures: they only
//! run inside tests, where a panic is the failure report.

pub mod cp;
pub mod fault;
pub mod gateway;
pub mod grpc;
pub mod h2raw;
pub mod kong_hash;
pub mod prometheus;
pub mod redis;
pub mod tls;
pub mod tls_upstream;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Ports and binaries.

/// A currently free TCP port on 127.0.0.1 (bound to port 0, then released).
/// Racy by nature; callers that can should retry on bind failure.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `f` every 25 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Directory holding the built binaries (`target/debug` or similar).
///
/// `CARGO_BIN_EXE_*` only exists for the package's own binaries, so derive
/// the directory from the running test executable
/// (`<target>/<profile>/deps/<test>` → `<target>/<profile>`), falling back
/// to `$CARGO_TARGET_DIR/debug` and then the workspace's `target/debug`.
/// `GW_BIN_DIR` overrides everything.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GW_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(parent) = exe.parent() {
            if parent.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = parent.parent() {
                    candidates.push(profile.to_path_buf());
                }
            } else {
                candidates.push(parent.to_path_buf());
            }
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug"));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("debug"),
    );
    // Prefer a directory that actually holds our httpbin build.
    candidates
        .iter()
        .find(|d| d.join(exe_name("httpbin")).exists())
        .or_else(|| candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

fn exe_name(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// Path of a built binary of the workspace (e.g. `bin_path("httpbin")`).
pub fn bin_path(name: &str) -> PathBuf {
    target_dir().join(exe_name(name))
}

// ---------------------------------------------------------------------------
// Child processes.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A spawned child whose stdout and stderr lines are captured by background
/// threads. Dropping it kills the child (SIGKILL) so failing tests never
/// leak processes. Set `GW_TEST_ECHO=1` to mirror the output to stderr.
pub struct Proc {
    child: Child,
    /// stdout and stderr lines, interleaved in arrival order.
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    /// Number of output streams that reached EOF (2 = both closed).
    closed: Arc<AtomicUsize>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr piped (stdin is null).
    /// Panics if the binary cannot be started.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let echo = std::env::var_os("GW_TEST_ECHO").is_some();
        let prog = Path::new(cmd.get_program())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reader = |r: Box<dyn Read + Send>, own: Option<Arc<Mutex<Vec<String>>>>| {
            let lines = lines.clone();
            let closed = closed.clone();
            let prog = prog.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(r);
                let mut buf = Vec::new();
                // read_until + lossy: a non-UTF-8 line must not stop the capture.
                while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    buf.clear();
                    if echo {
                        eprintln!("[{prog}] {line}");
                    }
                    if let Some(own) = &own {
                        lock(own).push(line.clone());
                    }
                    lock(&lines).push(line);
                }
                closed.fetch_add(1, Ordering::SeqCst);
            });
        };
        match child.stdout.take() {
            Some(out) => reader(Box::new(out), Some(stdout.clone())),
            None => {
                closed.fetch_add(1, Ordering::SeqCst);
            }
        }
        match child.stderr.take() {
            Some(err) => reader(Box::new(err), None),
            None => {
                closed.fetch_add(1, Ordering::SeqCst);
            }
        }
        Proc {
            child,
            lines,
            stdout,
            closed,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All captured lines so far (stdout and stderr interleaved).
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Captured stdout lines only.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// Captured output joined with newlines (handy in assertion messages).
    pub fn output(&self) -> String {
        lock(&self.lines).join("\n")
    }

    /// True if any captured line (stdout or stderr) contains `substr`.
    pub fn has_line(&self, substr: &str) -> bool {
        lock(&self.lines).iter().any(|l| l.contains(substr))
    }

    /// Number of captured lines containing `substr`.
    pub fn count_lines(&self, substr: &str) -> usize {
        lock(&self.lines)
            .iter()
            .filter(|l| l.contains(substr))
            .count()
    }

    /// Waits until a line on stdout or stderr contains `substr`. Returns
    /// false on timeout, or early once the process closed both streams.
    pub fn wait_for_line(&self, substr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_line(substr) {
                return true;
            }
            if self.closed.load(Ordering::SeqCst) >= 2 {
                // Output is final; re-check once to avoid racing the last push.
                return self.has_line(substr);
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name ("HUP", "INT", "TERM", "USR1", "SIGQUIT", ...).
    /// Returns false if the name is unknown or delivery failed.
    pub fn signal(&self, name: &str) -> bool {
        let full = if name.starts_with("SIG") {
            name.to_string()
        } else {
            format!("SIG{name}")
        };
        let Ok(sig) = nix::sys::signal::Signal::from_str(&full.to_ascii_uppercase()) else {
            return false;
        };
        let Ok(pid) = i32::try_from(self.pid()) else {
            return false;
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
    }

    /// Exit status if the process has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful stop: SIGINT, wait up to 5 s, then SIGKILL. Returns the
    /// exit status (None only if even waiting after SIGKILL failed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_with("INT", Duration::from_secs(5))
    }

    /// Like [`Proc::stop`] with a chosen signal and grace period.
    pub fn stop_with(&mut self, signal: &str, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        self.signal(signal);
        if let Some(s) = self.wait_exit(grace) {
            return Some(s);
        }
        self.kill()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// httpbin upstream.

/// Starts `httpbin --name NAME` on a free loopback port and waits (≤ 10 s)
/// for its ready line. Panics if it doesn't come up.
pub fn start_httpbin(name: &str) -> (Proc, u16) {
    start_httpbin_with(name, &[])
}

/// Like [`start_httpbin`] with extra arguments (e.g. `["--threads", "2"]`).
pub fn start_httpbin_with(name: &str, extra_args: &[&str]) -> (Proc, u16) {
    let bin = bin_path("httpbin");
    assert!(
        bin.exists(),
        "{} not found; build it with `cargo build -p gw-tests --bin httpbin`",
        bin.display()
    );
    let mut last_output = String::new();
    // free_port() is racy: retry a couple of times if the port got taken.
    for _ in 0..3 {
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--name")
            .arg(name)
            .args(extra_args);
        let mut p = Proc::spawn(cmd);
        if p.wait_for_line("httpbin listening on", Duration::from_secs(10)) {
            return (p, port);
        }
        last_output = p.output();
        p.kill();
    }
    panic!("httpbin did not start; output:\n{last_output}");
}

// ---------------------------------------------------------------------------
// Skips.

/// Why a test cannot run here; decides whether skipping it is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A dependency that could be provided is missing (a binary not built,
    /// a PyPI package not installed, no root): a skip on a developer's
    /// machine, a failure under CI.
    Missing,
    /// The dependency cannot exist on this machine, detected precisely
    /// (e.g. no cgroup v1 `cpu` hierarchy mounted on a cgroup-v2-only
    /// host): a skip everywhere, CI included.
    Impossible,
}

/// True when the `CI` environment variable is set to `true`/`1`/`yes`
/// (case-insensitive), as CI services and `.ci/run` set it.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// The skip policy: `Err` (the test must fail) for a [`Skip::Missing`]
/// dependency under CI, `Ok` (a skip) otherwise.
pub fn skip_verdict(ci: bool, kind: Skip, test: &str, reason: &str) -> Result<String, String> {
    match (ci, kind) {
        (true, Skip::Missing) => Err(format!(
            "{test}: {reason}. CI=true: a missing dependency fails the test instead of \
             skipping it (scripts/test provides it)"
        )),
        (_, Skip::Missing) => Ok(format!(
            "SKIPPED {test}: {reason} (a failure under CI=true)"
        )),
        (_, Skip::Impossible) => Ok(format!("SKIPPED {test}: {reason} (cannot exist here)")),
    }
}

/// The one way a test skips: prints `SKIPPED <test>: <reason>`, or panics
/// when [`skip_verdict`] says skipping is not allowed (a [`Skip::Missing`]
/// dependency under CI). The caller returns right after.
pub fn skip(test: &str, kind: Skip, reason: &str) {
    match skip_verdict(under_ci(), kind, test, reason) {
        Ok(msg) => eprintln!("{msg}"),
        Err(msg) => panic!("{msg}"),
    }
}

/// Mount point of the cgroup v1 hierarchy that carries the `cpu`
/// controller (fs type `cgroup` with `cpu` among its super options in
/// /proc/self/mountinfo), if one is mounted.
pub fn cgroup_v1_cpu_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup_v1_cpu_mount_in(&info)
}

fn cgroup_v1_cpu_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let (fs_type, _source, opts) = (after.next()?, after.next()?, after.next()?);
        let mount_point = before.split_whitespace().nth(4)?;
        (fs_type == "cgroup" && opts.split(',').any(|o| o == "cpu"))
            .then(|| PathBuf::from(mount_point.replace("\\040", " ")))
    })
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 client.

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// In order, with the case the server sent, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Body as text (lossy UTF-8).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON; panics (with the body) if it isn't JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {} body: {}",
                self.status,
                self.body_str()
            )
        })
    }
}

/// Outcome of trying to parse one response from a buffer.
enum Parsed {
    Done(Response, usize),
    Incomplete,
    Invalid,
}

/// Parses one complete response from the front of `bytes` and returns it with
/// the number of bytes consumed. The body is framed by Content-Length or
/// chunked encoding; with neither, everything after the head is the body
/// (the buffer is taken to be all the server sent before closing).
/// 1xx/204/304 responses have no body. Returns None if incomplete or invalid.
pub fn parse_response(bytes: &[u8]) -> Option<(Response, usize)> {
    match parse_inner(bytes, true, false) {
        Parsed::Done(r, n) => Some((r, n)),
        _ => None,
    }
}

/// Like [`parse_response`] for a response to HEAD (never has a body).
pub fn parse_head_response(bytes: &[u8]) -> Option<(Response, usize)> {
    match parse_inner(bytes, true, true) {
        Parsed::Done(r, n) => Some((r, n)),
        _ => None,
    }
}

fn parse_inner(bytes: &[u8], at_eof: bool, no_body: bool) -> Parsed {
    let mut hdrs = vec![httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut hdrs);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(_) => return Parsed::Invalid,
    };
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut r = Response {
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        version: resp.version.unwrap_or(1),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let rest = &bytes[head_len..];
    if no_body || (100..200).contains(&status) || status == 204 || status == 304 {
        return Parsed::Done(r, head_len);
    }
    let chunked = r
        .header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return match decode_chunked(rest) {
            Parsed2::Done(body, trailers, n) => {
                r.body = body;
                r.trailers = trailers;
                Parsed::Done(r, head_len + n)
            }
            Parsed2::Incomplete => Parsed::Incomplete,
            Parsed2::Invalid => Parsed::Invalid,
        };
    }
    if let Some(cl) = r.header("content-length") {
        let Ok(len) = cl.trim().parse::<usize>() else {
            return Parsed::Invalid;
        };
        if rest.len() < len {
            return Parsed::Incomplete;
        }
        r.body = rest[..len].to_vec();
        return Parsed::Done(r, head_len + len);
    }
    if !at_eof {
        return Parsed::Incomplete;
    }
    r.body = rest.to_vec();
    Parsed::Done(r, bytes.len())
}

enum Parsed2 {
    Done(Vec<u8>, Vec<(String, String)>, usize),
    Incomplete,
    Invalid,
}

fn decode_chunked(b: &[u8]) -> Parsed2 {
    // Next line (without CRLF/LF) and the position after it.
    let line = |pos: usize| -> Option<(&[u8], usize)> {
        let rest = b.get(pos..)?;
        let nl = rest.iter().position(|&c| c == b'\n')?;
        let l = &rest[..nl];
        Some((l.strip_suffix(b"\r").unwrap_or(l), pos + nl + 1))
    };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some((l, next)) = line(pos) else {
            return Parsed2::Incomplete;
        };
        let size_part = l.split(|&c| c == b';').next().unwrap_or(b"");
        let size = match std::str::from_utf8(size_part)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        {
            Some(s) => s,
            None => return Parsed2::Invalid,
        };
        pos = next;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some((t, next)) = line(pos) else {
                    return Parsed2::Incomplete;
                };
                pos = next;
                if t.is_empty() {
                    return Parsed2::Done(body, trailers, pos);
                }
                let t = String::from_utf8_lossy(t);
                if let Some((k, v)) = t.split_once(':') {
                    trailers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        let Some(data) = pos.checked_add(size).and_then(|end| b.get(pos..end)) else {
            return Parsed2::Incomplete;
        };
        body.extend_from_slice(data);
        pos += size;
        match line(pos) {
            Some(([], next)) => pos = next,
            Some(_) => return Parsed2::Invalid,
            None => return Parsed2::Incomplete,
        }
    }
}

fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads from `stream` into `buf` until one final (non-1xx, except 101)
/// response can be parsed from `buf[start..]`. Returns the response and the
/// offset just past it. None on timeout, EOF or an unparseable response.
fn read_final_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    no_body: bool,
    timeout: Duration,
) -> Option<(Response, usize)> {
    let deadline = Instant::now() + timeout;
    let mut start = 0;
    let mut eof = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Parse as far as possible before reading more.
        loop {
            match parse_inner(&buf[start..], eof, no_body) {
                Parsed::Done(r, n) => {
                    if (100..200).contains(&r.status) && r.status != 101 {
                        start += n; // interim response: skip
                        continue;
                    }
                    return Some((r, start + n));
                }
                Parsed::Invalid => return None,
                Parsed::Incomplete => break,
            }
        }
        if eof {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Timeout, reset, etc.: nothing more is coming.
            Err(_) => eof = true,
        }
    }
}

/// Connects to 127.0.0.1:`port`, writes `bytes` verbatim and reads until one
/// complete final response has arrived (Content-Length, chunked or close
/// framing) — the server does not need to close. Returns every byte read
/// (which may include data after the response). If the server closes or the
/// timeout passes first, returns what was read; a timeout with nothing read
/// is an `Err(TimedOut)`.
pub fn raw_request(port: u16, bytes: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = connect(port, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(bytes)?;
    let mut buf = Vec::new();
    let start = Instant::now();
    let got = read_final_response(&mut stream, &mut buf, false, timeout);
    if got.is_none() && buf.is_empty() && start.elapsed() >= timeout {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no response"));
    }
    Ok(buf)
}

/// Serialises a request. Adds `Host: localhost` unless a Host header is
/// given, and `Content-Length` when there is a body (or the method usually
/// has one) unless Content-Length/Transfer-Encoding is given. Nothing else
/// is added.
pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !has("host") {
        out.extend_from_slice(b"Host: localhost\r\n");
    }
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let wants_len = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if wants_len && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One request on a fresh connection; `Err` on I/O failure or when no
/// complete response arrived within 10 s.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    if !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        hs.push(("Connection", "close"));
    }
    let bytes = build_request(method, path, &hs, body);
    let mut stream = connect(port, DEFAULT_TIMEOUT)?;
    stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    stream.write_all(&bytes)?;
    let mut buf = Vec::new();
    read_final_response(&mut stream, &mut buf, method == "HEAD", DEFAULT_TIMEOUT)
        .map(|(r, _)| r)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "no complete response to {method} {path}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            )
        })
}

/// One request on a fresh connection (adds `Host: localhost` and
/// `Connection: close` unless given). Panics on failure.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// `GET path` on a fresh connection; see [`request`].
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", path, headers, b"")
}

/// A kept-alive client connection for keep-alive and pipelining tests.
/// Bytes after a response stay buffered for the next `read_response`.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to 127.0.0.1:`port`; panics on failure.
    pub fn open(port: u16) -> Conn {
        Conn::try_open(port).unwrap_or_else(|e| panic!("connect to port {port}: {e}"))
    }

    pub fn try_open(port: u16) -> io::Result<Conn> {
        let stream = connect(port, DEFAULT_TIMEOUT)?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes raw bytes (any number of requests, or garbage).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads the next final response. None on timeout, on EOF before a full
    /// response, or when the bytes aren't a valid response.
    pub fn read_response(&mut self, timeout: Duration) -> Option<Response> {
        self.read_inner(false, timeout)
    }

    /// Reads the next response to a HEAD request (no body expected).
    pub fn read_head_response(&mut self, timeout: Duration) -> Option<Response> {
        self.read_inner(true, timeout)
    }

    fn read_inner(&mut self, no_body: bool, timeout: Duration) -> Option<Response> {
        let (r, n) = read_final_response(&mut self.stream, &mut self.buf, no_body, timeout)?;
        self.buf.drain(..n);
        Some(r)
    }

    /// Sends a request built by [`build_request`] (no `Connection` header is
    /// added, so the connection stays open) and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Response> {
        self.send(&build_request(method, path, headers, body))
            .ok()?;
        self.read_inner(method == "HEAD", DEFAULT_TIMEOUT)
    }

    /// True if the peer closes the connection (EOF or reset) within
    /// `timeout`, without sending further data.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Bytes received but not yet consumed by a `read_response`.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Half-closes the write side (the server sees EOF).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn content_length_and_pipelined() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let (r, n) = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(r.header_all("X-A"), vec!["1", "2"]);
        assert_eq!(r.headers[1].0, "X-A");
        let (r2, n2) = parse_response(&raw[n..]).unwrap();
        assert_eq!(r2.status, 404);
        assert!(r2.body.is_empty());
        assert_eq!(n + n2, raw.len());
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-T: v\r\n\r\nrest";
        let (r, n) = parse_response(raw).unwrap();
        assert_eq!(r.body_str(), "hello world");
        assert_eq!(r.trailers, vec![("X-T".to_string(), "v".to_string())]);
        assert_eq!(&raw[n..], b"rest");
    }

    #[test]
    fn incomplete_and_invalid() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                .is_none()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_none()
        );
        assert!(parse_response(b"garbage\r\n\r\n").is_none());
        assert!(matches!(
            parse_inner(b"HTTP/1.1 200 OK\r\n\r\nabc", false, false),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn close_delimited_and_bodyless() {
        let (r, n) = parse_response(b"HTTP/1.0 200 OK\r\n\r\nuntil close").unwrap();
        assert_eq!(
            (r.version, r.body_str().as_str(), n),
            (0, "until close", 30)
        );
        let raw = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
        let (r, n) = parse_response(raw).unwrap();
        assert_eq!(r.status, 204);
        let (r, _) = parse_response(&raw[n..]).unwrap();
        assert_eq!((r.status, r.body.len()), (304, 0));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let (r, n) = parse_head_response(head).unwrap();
        assert_eq!((r.status, r.body.len(), n), (200, 0, head.len()));
    }

    #[test]
    fn request_builder() {
        let b = build_request("POST", "/x", &[("X-A", "1")], b"hi");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "POST /x HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi"
        );
        let b = build_request("GET", "/", &[("host", "h")], b"");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "GET / HTTP/1.1\r\nhost: h\r\n\r\n"
        );
    }

    #[test]
    fn skip_policy() {
        let t = "some_test";
        assert!(skip_verdict(true, Skip::Missing, t, "no x").is_err());
        assert!(skip_verdict(false, Skip::Missing, t, "no x").is_ok());
        assert!(skip_verdict(true, Skip::Impossible, t, "no x").is_ok());
        assert!(skip_verdict(false, Skip::Impossible, t, "no x").is_ok());
        let msg = skip_verdict(false, Skip::Missing, t, "no x").unwrap();
        assert!(msg.starts_with("SKIPPED some_test: no x"), "{msg}");
    }

    #[test]
    fn cgroup_v1_cpu_mount_is_read_from_mountinfo() {
        let v2 = "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n";
        let acct = "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n";
        let cpu = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(cgroup_v1_cpu_mount_in(""), None);
        assert_eq!(cgroup_v1_cpu_mount_in(&format!("{v2}{acct}")), None);
        assert_eq!(
            cgroup_v1_cpu_mount_in(&format!("{v2}{acct}{cpu}")),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    /// End-to-end check against the real httpbin binary (`cargo build -p
    /// gw-tests --bin httpbin`; scripts/test builds it). Skipped when it is
    /// not built, except under CI (see [`skip`]).
    #[test]
    fn httpbin_end_to_end() {
        if !bin_path("httpbin").exists() {
            skip(
                "httpbin_end_to_end",
                Skip::Missing,
                &format!("{} not built", bin_path("httpbin").display()),
            );
            return;
        }
        let (mut p, port) = start_httpbin("up-a");
        let r = get(port, "/get?a=1&a=2&b=x", &[("X-Foo", "bar")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream-name"), Some("up-a"));
        let j = r.json();
        assert_eq!(j["args"]["a"], serde_json::json!(["1", "2"]));
        assert_eq!(j["headers"]["X-Foo"], "bar");
        assert_eq!(j["origin"], "127.0.0.1");
        assert_eq!(j["url"], "http://localhost/get?a=1&a=2&b=x");

        // Keep-alive + pipelining, and /echo's raw view.
        let mut c = Conn::open(port);
        c.send(b"POST /echo/x?q=1 HTTP/1.1\r\nHost: h\r\nx-MiXed: 1\r\nOther: a\r\nX-Mixed: 2\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let e = c.read_response(Duration::from_secs(5)).unwrap().json();
        assert_eq!(e["uri"], "/echo/x?q=1");
        assert_eq!(e["query"], "q=1");
        assert_eq!(e["body"], "abc");
        assert_eq!(e["server"], "up-a");
        assert_eq!(e["headers"][1], serde_json::json!(["x-MiXed", "1"]));
        assert_eq!(e["headers"][3], serde_json::json!(["X-Mixed", "2"]));
        let t = c.read_response(Duration::from_secs(5)).unwrap();
        assert_eq!(t.status, 418);
        let r = c.request("HEAD", "/get", &[], b"").unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = c.request("GET", "/stream/3", &[], b"").unwrap();
        assert_eq!(r.body_str().lines().count(), 3);
        assert_eq!(c.request("GET", "/post", &[], b"").unwrap().status, 405);

        let r = request(
            port,
            "POST",
            "/post",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"k=v+w",
        );
        assert_eq!(r.json()["form"]["k"], "v w");
        assert!(p.is_running());
        assert!(!p.signal("NOSUCH"));
        // httpbin exits cleanly on SIGINT.
        assert!(p.stop().is_some_and(|s| s.success()), "{}", p.output());
    }
}
