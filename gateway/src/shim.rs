//! The `kong` command, for what Kubernetes runs inside the container: the
//! kong/kong chart's `preStop: kong quit --wait=15`, health probes and config
//! checks. The same binary answers when invoked as `kong` (a symlink) or as
//! `gateway quit|health|config|version`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use config_sync::settings::Settings;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Signal that puts a running gateway into draining (`/status/ready` 503).
pub const DRAIN_SIGNAL: Signal = Signal::SIGUSR1;

/// The pid file, where Kong keeps nginx's: `<prefix>/pids/nginx.pid`.
pub fn pid_file(prefix: &Path) -> PathBuf {
    prefix.join("pids").join("nginx.pid")
}

/// Writes this process's pid file (best effort: the shim needs it, serving
/// does not), replacing any old one with a private (0600) file.
pub fn write_pid_file(prefix: &Path) {
    let path = pid_file(prefix);
    let res = config_sync::private_fs::write_atomic(
        &path,
        format!("{}\n", std::process::id()).as_bytes(),
    );
    if let Err(e) = res {
        log::warn!("cannot write pid file '{}': {e}", path.display());
    }
}

fn read_pid(prefix: &Path) -> Result<Pid, String> {
    let path = pid_file(prefix);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "Kong is not running at {} ({}: {e})",
            prefix.display(),
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid pid file {}", path.display()))?;
    Ok(Pid::from_raw(pid))
}

/// Running and not a zombie (an exited child its parent has not reaped
/// yet still answers `kill(pid, 0)`).
fn alive(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

fn prefix_from(args: &[String]) -> PathBuf {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-p" || a == "--prefix" {
            if let Some(p) = it.next() {
                return PathBuf::from(p);
            }
        } else if let Some(p) = a.strip_prefix("--prefix=") {
            return PathBuf::from(p);
        }
    }
    PathBuf::from(std::env::var("KONG_PREFIX").unwrap_or_else(|_| "/usr/local/kong".into()))
}

fn seconds_flag(args: &[String], name: &str, default: u64) -> u64 {
    let eq = format!("--{name}=");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&eq) {
            return v.parse().unwrap_or(default);
        }
        if a == &format!("--{name}") {
            return it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        }
    }
    default
}

/// `kong quit [--wait=N] [--timeout=N] [-p prefix]`: start draining at
/// once (readiness 503 so endpoints and the load balancer let go), wait N
/// seconds, then shut down gracefully and wait for the exit.
fn quit(args: &[String]) -> i32 {
    let prefix = prefix_from(args);
    let pid = match read_pid(&prefix) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let wait = seconds_flag(args, "wait", 0);
    let timeout = seconds_flag(args, "timeout", 10);
    if let Err(e) = kill(pid, DRAIN_SIGNAL) {
        eprintln!("Error: Kong is not running at {} ({e})", prefix.display());
        return 1;
    }
    if wait > 0 {
        println!("Waiting {wait} seconds before quitting");
        std::thread::sleep(Duration::from_secs(wait));
    }
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        eprintln!("Error: could not stop Kong ({e})");
        return 1;
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        eprintln!("Error: Kong did not stop within {timeout} seconds");
        return 1;
    }
    println!("Kong stopped (gracefully)");
    0
}

/// The running node's settings, in the prefix (Kong's `<prefix>/.kong_env`,
/// which `kong health` loads: "load <PREFIX>/kong.conf containing running
/// node's config", kong/cmd/health.lua). Ours holds what `kong health`
/// needs, and no sensitive setting.
pub const KONG_ENV_FILE: &str = ".kong_env";

/// `.kong_env` text for `settings` (kong.conf syntax, `#` escaped).
pub fn kong_env_text(settings: &Settings) -> String {
    let listens = |v: &[config_sync::settings::ListenAddr]| {
        if v.is_empty() {
            "off".to_string()
        } else {
            v.iter()
                .map(|l| l.raw.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let lines = [
        "# *************************".to_string(),
        "# * DO NOT EDIT THIS FILE *".to_string(),
        "# *************************".to_string(),
        "# Written by the gateway at start: the running node's settings that".to_string(),
        "# `kong health` needs.".to_string(),
        format!("prefix = {}", settings.prefix.display()),
        format!("proxy_listen = {}", listens(&settings.proxy_listen)),
        format!("status_listen = {}", listens(&settings.status_listen)),
    ];
    let mut text = lines
        .iter()
        .map(|l| {
            if l.starts_with('#') {
                l.clone()
            } else {
                l.replace('#', "\\#")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    text
}

/// Writes `<prefix>/.kong_env` (best effort, like the pid file; private).
pub fn write_kong_env(settings: &Settings) {
    let path = settings.prefix.join(KONG_ENV_FILE);
    if let Err(e) = config_sync::private_fs::write_atomic(&path, kong_env_text(settings).as_bytes())
    {
        log::warn!("cannot write '{}': {e}", path.display());
    }
}

/// Settings as the running gateway has them: `<prefix>/.kong_env` under
/// the `KONG_*` environment, as Kong's health command loads them (env wins,
/// as in every Kong conf load). Without the file: the environment alone.
fn running_settings(prefix: &Path) -> Result<Settings, String> {
    let conf = match std::fs::read_to_string(prefix.join(KONG_ENV_FILE)) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(format!(
                "cannot read {}: {e}",
                prefix.join(KONG_ENV_FILE).display()
            ))
        }
    };
    Settings::load(conf.as_deref(), std::env::vars()).map_err(|e| e.to_string())
}

/// Where to reach a status listener from this host: its address, with a
/// wildcard replaced by the loopback of the same family. TLS listeners
/// are skipped (a plain request cannot probe them).
fn status_target(settings: &Settings) -> Option<String> {
    let l = settings.status_listen.iter().find(|l| !l.ssl)?;
    Some(match l.socket_addr() {
        Some(sa) if sa.ip().is_unspecified() => {
            let lo: IpAddr = if sa.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(lo, sa.port()).to_string()
        }
        Some(sa) => sa.to_string(),
        None => l.bind_address(),
    })
}

/// Probe timeouts: a health check must answer fast, whatever the gateway does.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /status/ready` on `target`: `(status, message)`.
fn probe_ready(target: &str) -> Result<(u16, String), String> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .collect();
    let mut last = format!("no address for {target}");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(stream) => return probe_on(stream, target),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

fn probe_on(mut stream: TcpStream, target: &str) -> Result<(u16, String), String> {
    let io = |e: std::io::Error| format!("status API at {target}: {e}");
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
    stream
        .write_all(b"GET /status/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    let mut buf = Vec::new();
    // Connection: close; the answer is a short JSON object.
    stream.take(64 * 1024).read_to_end(&mut buf).map_err(io)?;
    parse_ready_response(&buf)
        .ok_or_else(|| format!("status API at {target}: not an HTTP response"))
}

/// Status code and the JSON `message` (if any) of a raw HTTP response.
fn parse_ready_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    Some((status, message))
}

/// `kong health [-p prefix]`: Kong's check that nginx runs
/// (kong/cmd/health.lua: `nginx.......running`, "Kong is healthy at"), then
/// the status API's `/status/ready`, so a gateway that runs without a
/// configuration (503) or while draining is not reported healthy. Exit 1
/// on any failure, as Kong's `assert`s.
fn health(args: &[String]) -> i32 {
    let prefix = prefix_from(args);
    if !prefix.exists() {
        eprintln!("Error: no such prefix: {}", prefix.display());
        return 1;
    }
    let pid = match read_pid(&prefix) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    if !alive(pid) {
        println!("nginx.......not running\n");
        eprintln!("Error: Kong is not running at {}", prefix.display());
        return 1;
    }
    println!("nginx.......running");
    let settings = match running_settings(&prefix) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let Some(target) = status_target(&settings) else {
        // Nothing to ask: Kong's own check (the process runs) is all there is.
        println!("status......not checked (no plain status_listen)\n");
        println!("Kong is healthy at {}", prefix.display());
        return 0;
    };
    match probe_ready(&target) {
        Ok((200, _)) => {
            println!("status......ready\n");
            println!("Kong is healthy at {}", prefix.display());
            0
        }
        Ok((code, message)) => {
            println!("status......not ready\n");
            eprintln!(
                "Error: Kong is not ready at {}: /status/ready on {target} answered {code} {message}",
                prefix.display()
            );
            1
        }
        Err(e) => {
            println!("status......unreachable\n");
            eprintln!("Error: Kong is not ready at {}: {e}", prefix.display());
            1
        }
    }
}

fn config_parse(args: &[String]) -> i32 {
    let Some(file) = args.iter().find(|a| !a.starts_with('-')) else {
        eprintln!("Error: usage: kong config parse <file>");
        return 1;
    };
    let plugins = crate::plugins::enabled(&["bundled".to_string()]).unwrap_or_default();
    // Validation only: no upstream TLS settings are needed to parse.
    let tls = crate::upstream_tls::UpstreamTlsDefaults::default();
    match crate::loader::load_file(Path::new(file), &plugins, &tls) {
        Ok(_) => {
            println!("parse successful");
            0
        }
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

/// Runs a `kong` subcommand if `args` (without argv[0]) name one; returns
/// the exit code, or `None` when this is a normal gateway start.
pub fn run(invoked_as_kong: bool, args: &[String]) -> Option<i32> {
    let (cmd, rest) = args.split_first()?;
    match (cmd.as_str(), rest) {
        ("quit", rest) | ("stop", rest) => Some(quit(rest)),
        ("health", rest) => Some(health(rest)),
        ("config", [sub, rest @ ..]) if sub == "parse" => Some(config_parse(rest)),
        ("version", _) if invoked_as_kong => {
            println!("Kong {}", crate::kong::KONG_VERSION);
            Some(0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags() {
        assert_eq!(seconds_flag(&s(&["--wait=15"]), "wait", 0), 15);
        assert_eq!(seconds_flag(&s(&["--wait", "3"]), "wait", 0), 3);
        assert_eq!(seconds_flag(&s(&[]), "wait", 7), 7);
        assert_eq!(prefix_from(&s(&["-p", "/x"])), PathBuf::from("/x"));
        assert_eq!(prefix_from(&s(&["--prefix=/y"])), PathBuf::from("/y"));
    }

    fn settings(status_listen: &str) -> Settings {
        let env = [("KONG_STATUS_LISTEN".to_string(), status_listen.to_string())];
        Settings::load(None, env).expect("settings")
    }

    #[test]
    fn status_target_is_reachable_from_loopback() {
        let t = |v: &str| status_target(&settings(v));
        assert_eq!(t("0.0.0.0:8100").as_deref(), Some("127.0.0.1:8100"));
        assert_eq!(t("[::]:8100").as_deref(), Some("[::1]:8100"));
        assert_eq!(
            t("127.0.0.2:8101, 0.0.0.0:8100").as_deref(),
            Some("127.0.0.2:8101")
        );
        assert_eq!(t("localhost:8102").as_deref(), Some("localhost:8102"));
        assert_eq!(t("off"), None);
    }

    #[test]
    fn kong_env_round_trips_through_the_settings_loader() {
        let mut s = settings("127.0.0.1:8100 reuseport backlog=16384, [::1]:8101");
        s.prefix = PathBuf::from("/tmp/a#b");
        let back = Settings::load(Some(&kong_env_text(&s)), Vec::new()).expect("reload");
        assert_eq!(back.status_listen, s.status_listen);
        assert_eq!(back.proxy_listen, s.proxy_listen);
        assert_eq!(back.prefix, s.prefix);
        let off = settings("off");
        let back = Settings::load(Some(&kong_env_text(&off)), Vec::new()).expect("reload");
        assert!(back.status_listen.is_empty());
    }

    #[test]
    fn ready_responses() {
        assert_eq!(
            parse_ready_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{\"message\":\"ready\"}"
            ),
            Some((200, "ready".to_string()))
        );
        assert_eq!(
            parse_ready_response(
                b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"message\":\"draining\"}"
            ),
            Some((503, "draining".to_string()))
        );
        assert_eq!(parse_ready_response(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    /// A one-shot status API answering `status`; returns its port.
    fn fake_status_api(status: &'static str) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let body = "{\"message\":\"no configuration available\"}";
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        port
    }

    #[test]
    fn health_asks_the_status_api() {
        let prefix = std::env::temp_dir().join(format!("shim-health-{}", uuid::Uuid::new_v4()));
        // This test process stands in for the running gateway.
        write_pid_file(&prefix);
        let args = s(&["-p", prefix.to_str().unwrap_or("/nonexistent")]);
        for (answer, code) in [("200 OK", 0), ("503 Service Unavailable", 1)] {
            let port = fake_status_api(answer);
            std::fs::write(
                prefix.join(KONG_ENV_FILE),
                kong_env_text(&settings(&format!("127.0.0.1:{port}"))),
            )
            .expect("write");
            assert_eq!(health(&args), code, "{answer}");
        }
        // Nothing listening: not healthy either.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        std::fs::write(
            prefix.join(KONG_ENV_FILE),
            kong_env_text(&settings(&format!("127.0.0.1:{port}"))),
        )
        .expect("write");
        assert_eq!(health(&args), 1);
        let _ = std::fs::remove_dir_all(&prefix);
    }

    #[test]
    fn quit_without_a_running_gateway_fails() {
        let dir = std::env::temp_dir().join(format!("shim-test-{}", std::process::id()));
        assert_eq!(quit(&s(&["-p", dir.to_str().unwrap_or("/nonexistent")])), 1);
    }
}
