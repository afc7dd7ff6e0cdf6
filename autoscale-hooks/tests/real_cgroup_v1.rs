//! Detection and worker sizing under a REAL cgroup v1 CPU quota.
//!
//! As root on a host with a writable v1 `cpu` hierarchy, the test creates
//! `<cpu mount>/ah-test-<pid>` with `cpu.cfs_quota_us = 50000` (0.5 CPU),
//! re-executes this test binary as a child (`child_probe`), moves only that
//! child into the group, and checks what the child detects and that the
//! kernel really throttles it. The group is removed afterwards. Elsewhere the
//! test prints why it is skipped; under CI (`CI=true`) only a host where the
//! hierarchy cannot exist (no v1 `cpu` controller mounted, or no CFS
//! bandwidth control) may skip: not being root, a read-only mount or a
//! failing mkdir fail the test there. Same policy as `gw_tests::skip`.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoscale_hooks::cgroup::parse;
use autoscale_hooks::{worker_threads, CgroupFs, Version, WorkerSetting};
use serde_json::{json, Value};

const CHILD_ENV: &str = "AH_REAL_CGROUP_CHILD";
const MARK: &str = "AH_PROBE_JSON:";
const QUOTA_US: u64 = 50_000;
const PERIOD_US: u64 = 100_000;

/// Runs only inside the re-executed child: waits until the parent has moved
/// it into the test cgroup, then reports detection, sizing and stats.
#[test]
fn child_probe() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Handshake: the parent writes a line after moving us into the group.
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("handshake from parent");

    let fs = CgroupFs::system();
    let out = match fs.detect() {
        Err(e) => json!({ "error": e.to_string() }),
        Ok(cg) => {
            let visible = fs.visible_cpus().unwrap_or(1);
            let decision = worker_threads(WorkerSetting::Auto, Some(&cg), visible);
            let before = cg.read_stats();
            let (wall, cpu_ns) = spin(|| cg.read_stats().nr_throttled.unwrap_or(0) > 0);
            let after = cg.read_stats();
            json!({
                "version": cg.version.to_string(),
                "quota_us": cg.cpu_limit.map(|q| q.quota_us),
                "period_us": cg.cpu_limit.map(|q| q.period_us),
                "cores": cg.cpu_limit_cores(),
                "cpu_dir": cg.dirs.cpu.as_ref().map(|p| p.display().to_string()),
                "visible_cpus": visible,
                "threads": decision.threads,
                "reason": decision.reason,
                "nr_periods_before": before.nr_periods,
                "nr_periods": after.nr_periods,
                "nr_throttled": after.nr_throttled,
                "throttled_seconds": after.throttled_seconds,
                "spin_wall_seconds": wall.as_secs_f64(),
                "spin_cpu_seconds": cpu_ns.map(|n| n as f64 / 1e9),
            })
        }
    };
    println!("{MARK}{out}");
}

/// Busy-loops on two threads (demand of 2 CPUs against a 0.5 CPU quota, so
/// the quota bites even when other work on the host slows us down) for at
/// least 1 s and until `throttled()` holds, at most 10 s. Returns wall
/// time and the CPU time the whole process got.
fn spin(throttled: impl Fn() -> bool + Sync) -> (Duration, Option<u64>) {
    let cpu0 = process_cpu_ns();
    let start = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let burn = || {
            let mut x: u64 = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..100_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
                }
            }
        };
        s.spawn(burn);
        s.spawn(burn);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let el = start.elapsed();
            if (el >= Duration::from_secs(1) && throttled()) || el >= Duration::from_secs(10) {
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                break;
            }
        }
    });
    let wall = start.elapsed();
    let cpu = match (cpu0, process_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (wall, cpu)
}

/// utime + stime of the whole process from `/proc/self/stat`, in ns. The
/// fields are in clock ticks; USER_HZ is 100 on every mainstream Linux
/// build (reading sysconf would need libc).
fn process_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3 (state).
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000_000)
}

/// Why a test cannot run here (the policy of `gw_tests::Skip`, which this
/// crate cannot depend on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Could be provided (root, a writable mount): a failure under CI.
    Missing,
    /// Cannot exist on this host: a skip everywhere.
    Impossible,
}

fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// `Err` (fail) for a [`Skip::Missing`] dependency under CI, else the
/// skip message.
fn skip_verdict(ci: bool, kind: Skip, test: &str, reason: &str) -> Result<String, String> {
    match (ci, kind) {
        (true, Skip::Missing) => Err(format!(
            "{test}: {reason}. CI=true: a missing dependency fails the test instead of skipping it"
        )),
        (_, Skip::Missing) => Ok(format!(
            "SKIPPED {test}: {reason} (a failure under CI=true)"
        )),
        (_, Skip::Impossible) => Ok(format!("SKIPPED {test}: {reason} (cannot exist here)")),
    }
}

/// Prints why `test` is skipped, or panics when skipping is not allowed.
fn skip(test: &str, kind: Skip, reason: &str) {
    match skip_verdict(under_ci(), kind, test, reason) {
        Ok(msg) => eprintln!("{msg}"),
        Err(msg) => panic!("{msg}"),
    }
}

#[test]
fn skip_policy() {
    assert!(skip_verdict(true, Skip::Missing, "t", "not root").is_err());
    assert!(skip_verdict(false, Skip::Missing, "t", "not root").is_ok());
    assert!(skip_verdict(true, Skip::Impossible, "t", "cgroup v2 only").is_ok());
}

/// Why the real test cannot run here, or the v1 `cpu` mount directory.
fn preconditions() -> Result<PathBuf, (Skip, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| (Skip::Missing, format!("/proc/self/mountinfo: {e}")))?;
    let mount = parse::parse_mountinfo(&mountinfo)
        .into_iter()
        .find(|m| m.fs_type == "cgroup" && m.options.iter().any(|o| o == "cpu"))
        .ok_or((
            Skip::Impossible,
            "no cgroup v1 hierarchy with the cpu controller is mounted (cgroup v2 only)".into(),
        ))?;
    let dir = PathBuf::from(&mount.mount_point);
    if !dir.join("cpu.cfs_quota_us").exists() {
        return Err((
            Skip::Impossible,
            format!(
                "{} has no cpu.cfs_quota_us (no CFS bandwidth control)",
                dir.display()
            ),
        ));
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| (Skip::Missing, format!("/proc/self/status: {e}")))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Err((
            Skip::Missing,
            format!("not running as root (euid {euid:?})"),
        ));
    }
    if mount.options.iter().any(|o| o == "ro") {
        return Err((
            Skip::Missing,
            format!(
                "v1 cpu hierarchy at {} is mounted read-only",
                mount.mount_point
            ),
        ));
    }
    Ok(dir)
}

/// Removes the test cgroup on drop (also when an assertion fails).
struct GroupGuard(PathBuf);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // rmdir can briefly see EBUSY right after the last task exits.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("warning: could not remove {}", self.0.display());
    }
}

/// Kills and reaps the child on drop, before the group guard runs.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn real_v1_cpu_quota_half_cpu() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    const TEST: &str = "real_v1_cpu_quota_half_cpu";
    let mount_dir = match preconditions() {
        Ok(d) => d,
        Err((kind, reason)) => {
            skip(TEST, kind, &reason);
            return;
        }
    };
    let group = mount_dir.join(format!("ah-test-{}", std::process::id()));
    let _ = std::fs::remove_dir(&group); // stale leftover from a killed run with the same pid
    if let Err(e) = std::fs::create_dir(&group) {
        skip(
            TEST,
            Skip::Missing,
            &format!("cannot create {}: {e}", group.display()),
        );
        return;
    }
    let group_guard = GroupGuard(group.clone());
    let parent_quota =
        std::fs::read_to_string(mount_dir.join("cpu.cfs_quota_us")).unwrap_or_default();
    write_file(&group.join("cpu.cfs_period_us"), &format!("{PERIOD_US}\n"));
    write_file(&group.join("cpu.cfs_quota_us"), &format!("{QUOTA_US}\n"));

    let own_cgroup_before =
        std::fs::read_to_string("/proc/self/cgroup").expect("own /proc/self/cgroup");

    let exe = std::env::current_exe().expect("test binary path");
    let child = Command::new(exe)
        .args(["--exact", "child_probe", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut child = ChildGuard(child);
    let pid = child.0.id();

    // Move only the child we just started; it blocks on stdin until told.
    write_file(&group.join("cgroup.procs"), &format!("{pid}\n"));
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).expect("read cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "child {pid} not in group: {procs:?}"
    );
    {
        let mut stdin = child.0.stdin.take().expect("child stdin");
        stdin.write_all(b"go\n").expect("handshake");
    }

    let mut stdout = child.0.stdout.take().expect("child stdout");
    let mut stderr = child.0.stderr.take().expect("child stderr");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "child did not finish within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().expect("reader thread");
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    assert!(
        status.success(),
        "child failed: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );

    let payload = out
        .lines()
        // libtest prints "test child_probe ... " on the same line first.
        .find_map(|l| l.split_once(MARK).map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no probe line in child output:\n{out}\n{err}"));
    let v: Value = serde_json::from_str(payload).expect("probe JSON");
    eprintln!("child probe: {v:#}");

    assert_eq!(v.get("error"), None, "child detection failed: {v}");
    assert_eq!(v["version"], Version::V1.to_string());
    assert_eq!(
        v["cpu_dir"]
            .as_str()
            .map(|d| d.ends_with(&format!("ah-test-{}", std::process::id()))),
        Some(true),
        "child's cpu cgroup dir: {}",
        v["cpu_dir"]
    );
    let cores = v["cores"].as_f64().expect("a CPU limit was detected");
    if parent_quota.trim() == "-1" {
        assert_eq!(v["quota_us"], json!(QUOTA_US));
        assert_eq!(v["period_us"], json!(PERIOD_US));
        assert_eq!(cores, 0.5);
    } else {
        // A tighter quota above our group would legitimately win.
        assert!(cores <= 0.5, "cores {cores}");
    }
    assert_eq!(v["threads"], json!(1), "reason: {}", v["reason"]);

    // The kernel really enforced the quota on the child, and read_stats saw it.
    let nr_throttled = v["nr_throttled"].as_u64().expect("nr_throttled readable");
    let nr_periods = v["nr_periods"].as_u64().expect("nr_periods readable");
    assert!(nr_periods > 0, "no CFS periods recorded: {v}");
    assert!(nr_throttled > 0, "busy child was never throttled: {v}");
    assert!(v["throttled_seconds"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    if let (Some(cpu), Some(wall)) = (
        v["spin_cpu_seconds"].as_f64(),
        v["spin_wall_seconds"].as_f64(),
    ) {
        let share = cpu / wall;
        assert!(
            share < 0.75,
            "child got {share:.2} CPU under a 0.5 CPU quota"
        );
    }

    // The test process itself never moved.
    let own_cgroup_after =
        std::fs::read_to_string("/proc/self/cgroup").expect("own /proc/self/cgroup");
    assert_eq!(own_cgroup_before, own_cgroup_after);

    drop(child);
    drop(group_guard);
    assert!(!group.exists(), "{} was not removed", group.display());
}
