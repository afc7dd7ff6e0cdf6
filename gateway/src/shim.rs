//! The `kong` command, for what Kubernetes runs inside the container: the
//! kong/kong chart's `preStop: kong quit --wait=15`, health probes and config
//! checks. The same binary answers when invoked as `kong` (a symlink) or as
//! `gateway quit|health|config|version`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Signal that puts a running gateway into draining (`/status/ready` 503).
pub const DRAIN_SIGNAL: Signal = Signal::SIGUSR1;

/// The pid file, where Kong keeps nginx's: `<prefix>/pids/nginx.pid`.
pub fn pid_file(prefix: &Path) -> PathBuf {
    prefix.join("pids").join("nginx.pid")
}

/// Writes this process's pid file (best effort: the shim needs it, serving does not).
pub fn write_pid_file(prefix: &Path) {
    let path = pid_file(prefix);
    let res = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| std::fs::write(&path, format!("{}\n", std::process::id())));
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

fn health(args: &[String]) -> i32 {
    let prefix = prefix_from(args);
    match read_pid(&prefix) {
        Ok(pid) if alive(pid) => {
            println!(
                "nginx.......running\n\nKong is healthy at {}",
                prefix.display()
            );
            0
        }
        Ok(_) => {
            eprintln!("Error: Kong is not running at {}", prefix.display());
            1
        }
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

fn config_parse(args: &[String]) -> i32 {
    let Some(file) = args.iter().find(|a| !a.starts_with('-')) else {
        eprintln!("Error: usage: kong config parse <file>");
        return 1;
    };
    let plugins = crate::plugins::enabled(&["bundled".to_string()]);
    match crate::loader::load_file(Path::new(file), &plugins) {
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

    #[test]
    fn quit_without_a_running_gateway_fails() {
        let dir = std::env::temp_dir().join(format!("shim-test-{}", std::process::id()));
        assert_eq!(quit(&s(&["-p", dir.to_str().unwrap_or("/nonexistent")])), 1);
    }
}
