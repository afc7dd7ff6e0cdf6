//! Worker thread sizing (`KONG_NGINX_WORKER_PROCESSES`).
//!
//! `auto` must follow the cgroup CPU quota, not the host's core count: a pod
//! limited to 0.2 CPU on a 64-core node gets 1 thread, not 64 threads that
//! all get throttled.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::cgroup::{Cgroup, CgroupFs};

/// The configured worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSetting {
    /// Size from the cgroup CPU quota, cpuset and visible CPUs.
    Auto,
    /// An explicit count; always wins, even above the quota (as in nginx).
    Count(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker count {0:?}: expected `auto` or a positive integer")]
pub struct WorkerSettingError(pub String);

impl FromStr for WorkerSetting {
    type Err = WorkerSettingError;

    /// Accepts `auto` (any case) or a positive integer, as Kong does for
    /// `nginx_worker_processes`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(WorkerSetting::Auto);
        }
        match t.parse::<usize>() {
            Ok(n) if n > 0 => Ok(WorkerSetting::Count(n)),
            _ => Err(WorkerSettingError(s.to_owned())),
        }
    }
}

/// The chosen thread count and a one-line explanation for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDecision {
    pub threads: usize,
    pub reason: String,
}

/// Decides the worker thread count.
///
/// `Auto` = `ceil(quota cores)` clamped to `[1, min(visible_cpus, cpuset
/// size)]`, or that upper bound when there is no quota. `visible_cpus` is
/// the affinity-mask CPU count ([`CgroupFs::visible_cpus`]); passing
/// `std::thread::available_parallelism()` also works, it just may already
/// include the quota.
pub fn worker_threads(
    setting: WorkerSetting,
    cgroup: Option<&Cgroup>,
    visible_cpus: usize,
) -> WorkerDecision {
    let quota = cgroup.and_then(|c| c.cpu_limit);
    match setting {
        WorkerSetting::Count(n) => {
            // 0 cannot come from `from_str`; a hand-built Count(0) still must
            // not start a gateway with no workers.
            let threads = n.max(1);
            let mut reason = format!("explicit worker count {n} → {}", threads_word(threads));
            if let (Some(cg), Some(q)) = (cgroup, quota) {
                if threads as u64 > q.ceil_cores() {
                    let _ = write!(
                        reason,
                        " (above the cgroup {} limit of {} CPU; expect throttling)",
                        cg.version,
                        fmt_cores(q.cores())
                    );
                }
            }
            WorkerDecision { threads, reason }
        }
        WorkerSetting::Auto => {
            let visible = visible_cpus.max(1);
            let cpuset = cgroup
                .and_then(|c| c.cpuset.as_deref())
                .filter(|s| !s.is_empty());
            let (cap, cap_desc) = match cpuset {
                Some(set) if set.len() < visible => (
                    set.len(),
                    format!("cpuset {} ({} CPUs)", format_cpu_list(set), set.len()),
                ),
                _ => (visible, format!("{visible} visible CPUs")),
            };
            match (cgroup, quota) {
                (Some(cg), Some(q)) => {
                    let want = usize::try_from(q.ceil_cores()).unwrap_or(usize::MAX);
                    let threads = want.clamp(1, cap);
                    let capped = if want > cap {
                        format!(", capped at {cap_desc}")
                    } else {
                        String::new()
                    };
                    WorkerDecision {
                        threads,
                        reason: format!(
                            "auto: cgroup {} {} {}/{} = {} CPU{capped} → {}",
                            cg.version,
                            cg.cpu_limit_files(),
                            q.quota_us,
                            q.period_us,
                            fmt_cores(q.cores()),
                            threads_word(threads)
                        ),
                    }
                }
                (Some(cg), None) => WorkerDecision {
                    threads: cap,
                    reason: format!(
                        "auto: no cgroup {} CPU quota → {} ({cap_desc})",
                        cg.version,
                        threads_word(cap)
                    ),
                },
                (None, _) => WorkerDecision {
                    threads: cap,
                    reason: format!(
                        "auto: cgroup not detected → {} ({cap_desc})",
                        threads_word(cap)
                    ),
                },
            }
        }
    }
}

/// Detects the real cgroup and decides the worker count; the detection
/// error, if any, is folded into the reason so the startup log shows it.
pub fn system_worker_threads(setting: WorkerSetting) -> (WorkerDecision, Option<Cgroup>) {
    let fs = CgroupFs::system();
    let visible = fs.visible_cpus().unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    match fs.detect() {
        Ok(cg) => (worker_threads(setting, Some(&cg), visible), Some(cg)),
        Err(e) => {
            let mut d = worker_threads(setting, None, visible);
            let _ = write!(d.reason, " [cgroup detection failed: {e}]");
            (d, None)
        }
    }
}

fn threads_word(n: usize) -> String {
    if n == 1 {
        "1 thread".to_owned()
    } else {
        format!("{n} threads")
    }
}

/// At most three decimals, trailing zeros dropped: 0.2, 1.5, 4, 0.333.
fn fmt_cores(c: f64) -> String {
    let s = format!("{c:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Renders sorted CPU numbers in kernel list syntax (`0-3,5`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_setting() {
        assert_eq!("auto".parse(), Ok(WorkerSetting::Auto));
        assert_eq!(" AUTO\n".parse(), Ok(WorkerSetting::Auto));
        assert_eq!("4".parse(), Ok(WorkerSetting::Count(4)));
        assert!("0".parse::<WorkerSetting>().is_err());
        assert!("-1".parse::<WorkerSetting>().is_err());
        assert!("two".parse::<WorkerSetting>().is_err());
    }

    #[test]
    fn cores_formatting() {
        assert_eq!(fmt_cores(0.2), "0.2");
        assert_eq!(fmt_cores(4.0), "4");
        assert_eq!(fmt_cores(1.0 / 3.0), "0.333");
    }

    #[test]
    fn cpu_list_formatting() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 5]), "0-3,5");
        assert_eq!(format_cpu_list(&[7]), "7");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[0, 2, 4, 5]), "0,2,4-5");
    }
}
