//! cgroup v1/v2 detection and limit/stat reading for the current process.
//!
//! Every path is read relative to [`CgroupFs::root`] (`/` in production), so
//! tests point it at fixture trees that mimic `/proc/self/{cgroup,mountinfo}`
//! and `/sys/fs/cgroup/...`.

pub mod parse;

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use parse::{Mount, ProcCgroupEntry};

/// Errors from [`CgroupFs::detect`].
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "no cgroup v1 cpu/cpuacct/cpuset/memory controller or cgroup2 mount found for this process"
    )]
    NotFound,
}

/// Which cgroup hierarchy the resource controllers live on. A hybrid host
/// (v1 controllers plus an empty cgroup2 mount at `/sys/fs/cgroup/unified`)
/// reports `V1`, because that is where the limits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// A CFS bandwidth limit: `quota_us` of CPU time per `period_us` of wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in CPUs (`20000/100000` → 0.2).
    pub fn cores(&self) -> f64 {
        // Both are µs counts far below 2^53, so the conversion is exact.
        self.quota_us as f64 / self.period_us.max(1) as f64
    }

    /// `ceil(quota / period)` in integer arithmetic, so 0.2 is exactly 1
    /// and 2.0 exactly 2 with no float rounding at the boundaries.
    pub fn ceil_cores(&self) -> u64 {
        self.quota_us.div_ceil(self.period_us.max(1))
    }

    /// Orders two quotas by CPU amount without floats.
    fn is_tighter_than(&self, other: &CpuQuota) -> bool {
        u128::from(self.quota_us) * u128::from(other.period_us)
            < u128::from(other.quota_us) * u128::from(self.period_us)
    }
}

/// The process's own cgroup directory per controller (absolute, i.e. already
/// joined with [`CgroupFs::root`]). On v2 all four are the same directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerDirs {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub cpuset: Option<PathBuf>,
    pub memory: Option<PathBuf>,
}

/// What [`CgroupFs::detect`] found. Limits are the effective ones: the
/// tightest over the process's cgroup and its ancestors visible under the
/// mount, because a quota on a parent (pod slice) constrains the leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct Cgroup {
    pub version: Version,
    pub cpu_limit: Option<CpuQuota>,
    /// CPUs the cpuset controller allows (sorted), if known.
    pub cpuset: Option<Vec<usize>>,
    pub memory_limit_bytes: Option<u64>,
    pub dirs: ControllerDirs,
}

/// Counters for metrics scrapes. Each field is `None` when its file is
/// missing or malformed; a scrape must not fail because one file did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupStats {
    /// Total CPU time used by the cgroup (v2 `usage_usec`, v1 `cpuacct.usage`).
    pub cpu_usage_seconds: Option<f64>,
    /// CFS periods elapsed while the cgroup had runnable tasks.
    pub nr_periods: Option<u64>,
    /// Periods in which the quota ran out.
    pub nr_throttled: Option<u64>,
    /// Total time tasks were held back by the quota.
    pub throttled_seconds: Option<f64>,
    pub memory_usage_bytes: Option<u64>,
}

impl Cgroup {
    /// The CPU limit in cores, `None` when there is no quota.
    pub fn cpu_limit_cores(&self) -> Option<f64> {
        self.cpu_limit.map(|q| q.cores())
    }

    /// Names the files the CPU limit comes from, for log lines.
    pub fn cpu_limit_files(&self) -> &'static str {
        match self.version {
            Version::V1 => "cpu.cfs_quota_us/cpu.cfs_period_us",
            Version::V2 => "cpu.max",
        }
    }

    /// Reads usage and throttling counters. Cheap (three or four small
    /// reads), so it can run on every scrape.
    ///
    /// On v1, `cpuacct` is its own hierarchy on some hosts; when the process
    /// sits at that hierarchy's root, `cpu_usage_seconds` is host-wide.
    pub fn read_stats(&self) -> CgroupStats {
        let read = |dir: &Option<PathBuf>, file: &str| {
            dir.as_ref()
                .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        };
        match self.version {
            Version::V2 => stats_v2(
                read(&self.dirs.cpu, "cpu.stat").as_deref(),
                read(&self.dirs.memory, "memory.current").as_deref(),
            ),
            Version::V1 => stats_v1(
                read(&self.dirs.cpuacct, "cpuacct.usage").as_deref(),
                read(&self.dirs.cpu, "cpu.stat").as_deref(),
                read(&self.dirs.memory, "memory.usage_in_bytes").as_deref(),
            ),
        }
    }
}

/// Builds stats from v2 `cpu.stat` and `memory.current` contents.
pub fn stats_v2(cpu_stat: Option<&str>, memory_current: Option<&str>) -> CgroupStats {
    let key = |k| cpu_stat.and_then(|s| parse::flat_keyed(s, k));
    CgroupStats {
        cpu_usage_seconds: key("usage_usec").map(usec_to_secs),
        nr_periods: key("nr_periods"),
        nr_throttled: key("nr_throttled"),
        throttled_seconds: key("throttled_usec").map(usec_to_secs),
        memory_usage_bytes: memory_current.and_then(|s| parse::parse_single_u64(s).ok()),
    }
}

/// Builds stats from v1 `cpuacct.usage` (ns), `cpu.stat` (`throttled_time`
/// in ns) and `memory.usage_in_bytes` contents.
pub fn stats_v1(
    cpuacct_usage: Option<&str>,
    cpu_stat: Option<&str>,
    memory_usage: Option<&str>,
) -> CgroupStats {
    let key = |k| cpu_stat.and_then(|s| parse::flat_keyed(s, k));
    CgroupStats {
        cpu_usage_seconds: cpuacct_usage
            .and_then(|s| parse::parse_single_u64(s).ok())
            .map(nsec_to_secs),
        nr_periods: key("nr_periods"),
        nr_throttled: key("nr_throttled"),
        throttled_seconds: key("throttled_time").map(nsec_to_secs),
        memory_usage_bytes: memory_usage.and_then(|s| parse::parse_single_u64(s).ok()),
    }
}

fn usec_to_secs(v: u64) -> f64 {
    v as f64 / 1e6
}

fn nsec_to_secs(v: u64) -> f64 {
    v as f64 / 1e9
}

/// Reads cgroup and procfs files under a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    root: PathBuf,
}

/// A controller's cgroup: the mount directory plus the process's path
/// below it, kept apart so limits can be looked up on ancestors.
#[derive(Debug, Clone)]
struct Located {
    mount_dir: PathBuf,
    rel: Vec<String>,
}

impl Located {
    fn leaf(&self) -> PathBuf {
        self.ancestor(self.rel.len())
    }

    fn ancestor(&self, depth: usize) -> PathBuf {
        let mut p = self.mount_dir.clone();
        p.extend(self.rel.iter().take(depth));
        p
    }

    /// Leaf first, mount directory last.
    fn leaf_to_mount(&self) -> impl Iterator<Item = PathBuf> + '_ {
        (0..=self.rel.len()).rev().map(|d| self.ancestor(d))
    }
}

impl CgroupFs {
    /// Reads paths under `root` (a fixture directory in tests).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The real filesystem.
    pub fn system() -> Self {
        Self::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps an absolute in-system path to the path under `root`.
    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// CPUs in this process's affinity mask (`Cpus_allowed_list` in
    /// `/proc/self/status`), which is what the scheduler will actually use;
    /// `None` if unreadable.
    pub fn visible_cpus(&self) -> Option<usize> {
        let status = std::fs::read_to_string(self.path("/proc/self/status")).ok()?;
        parse::cpus_allowed_list(&status).map(|v| v.len())
    }

    /// Detects the cgroup version, the process's controller directories and
    /// its effective CPU quota, cpuset and memory limit.
    pub fn detect(&self) -> Result<Cgroup, CgroupError> {
        let cg_path = self.path("/proc/self/cgroup");
        let entries =
            parse::parse_proc_cgroup(&self.read_required(&cg_path)?).map_err(|reason| {
                CgroupError::Parse {
                    path: cg_path,
                    reason,
                }
            })?;
        let mounts =
            parse::parse_mountinfo(&self.read_required(&self.path("/proc/self/mountinfo"))?);

        let v1 = |ctrl| self.locate_v1(&entries, &mounts, ctrl);
        let (cpu, cpuacct, cpuset, memory) = (v1("cpu"), v1("cpuacct"), v1("cpuset"), v1("memory"));
        if cpu.is_some() || cpuacct.is_some() || cpuset.is_some() || memory.is_some() {
            return self.read_v1(cpu, cpuacct, cpuset, memory);
        }
        match self.locate_v2(&entries, &mounts) {
            Some(loc) => self.read_v2(&loc),
            None => Err(CgroupError::NotFound),
        }
    }

    fn locate_v1(
        &self,
        entries: &[ProcCgroupEntry],
        mounts: &[Mount],
        ctrl: &str,
    ) -> Option<Located> {
        let entry = entries
            .iter()
            .find(|e| e.hierarchy_id != 0 && e.controllers.iter().any(|c| c == ctrl))?;
        let candidates: Vec<&Mount> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup" && m.options.iter().any(|o| o == ctrl))
            .collect();
        self.locate(&candidates, &entry.path)
    }

    fn locate_v2(&self, entries: &[ProcCgroupEntry], mounts: &[Mount]) -> Option<Located> {
        let entry = entries
            .iter()
            .find(|e| e.hierarchy_id == 0 && e.controllers.is_empty())?;
        let candidates: Vec<&Mount> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
        self.locate(&candidates, &entry.path)
    }

    /// Picks the mount whose root contains the process's cgroup path
    /// (deepest root wins) and resolves the directory below it. When the
    /// path is not visible — a container sees only its own cgroup mounted
    /// at the root, or cgroup namespaces print `/../..` — the mount
    /// directory itself is the process's cgroup.
    fn locate(&self, candidates: &[&Mount], cg_path: &str) -> Option<Located> {
        let under = |m: &&&Mount| relative_to(&m.root, cg_path).is_some();
        let chosen = candidates
            .iter()
            .filter(under)
            .max_by_key(|m| m.root.len())
            .or_else(|| candidates.first())?;
        let mount_dir = self.path(&chosen.mount_point);
        let rel = relative_to(&chosen.root, cg_path).unwrap_or_default();
        let loc = Located { mount_dir, rel };
        if loc.rel.is_empty() || loc.leaf().is_dir() {
            Some(loc)
        } else {
            log::debug!(
                "cgroup path {cg_path} not visible under {}; using the mount root",
                loc.mount_dir.display()
            );
            Some(Located {
                rel: Vec::new(),
                ..loc
            })
        }
    }

    fn read_v2(&self, loc: &Located) -> Result<Cgroup, CgroupError> {
        let mut cpu_limit = None;
        let mut memory_limit_bytes = None;
        for dir in loc.leaf_to_mount() {
            if let Some((q, p)) = self
                .parse_opt(&dir.join("cpu.max"), parse::parse_cpu_max)?
                .flatten()
            {
                cpu_limit = tighter_quota(
                    cpu_limit,
                    CpuQuota {
                        quota_us: q,
                        period_us: p,
                    },
                );
            }
            if let Some(m) = self
                .parse_opt(&dir.join("memory.max"), parse::parse_memory_max)?
                .flatten()
            {
                memory_limit_bytes = Some(memory_limit_bytes.map_or(m, |c: u64| c.min(m)));
            }
        }
        let cpuset = self.nearest_cpuset(loc, &["cpuset.cpus.effective"])?;
        let leaf = Some(loc.leaf());
        Ok(Cgroup {
            version: Version::V2,
            cpu_limit,
            cpuset,
            memory_limit_bytes,
            dirs: ControllerDirs {
                cpu: leaf.clone(),
                cpuacct: leaf.clone(),
                cpuset: leaf.clone(),
                memory: leaf,
            },
        })
    }

    fn read_v1(
        &self,
        cpu: Option<Located>,
        cpuacct: Option<Located>,
        cpuset: Option<Located>,
        memory: Option<Located>,
    ) -> Result<Cgroup, CgroupError> {
        let mut cpu_limit = None;
        if let Some(loc) = &cpu {
            for dir in loc.leaf_to_mount() {
                let quota = self
                    .parse_opt(&dir.join("cpu.cfs_quota_us"), parse::parse_cfs_quota)?
                    .flatten();
                if let Some(quota_us) = quota {
                    let period_path = dir.join("cpu.cfs_period_us");
                    let period_us = parse::parse_cfs_period(&self.read_required(&period_path)?)
                        .map_err(|reason| CgroupError::Parse {
                            path: period_path,
                            reason,
                        })?;
                    cpu_limit = tighter_quota(
                        cpu_limit,
                        CpuQuota {
                            quota_us,
                            period_us,
                        },
                    );
                }
            }
        }
        let mut memory_limit_bytes = None;
        if let Some(loc) = &memory {
            for dir in loc.leaf_to_mount() {
                let limit = self
                    .parse_opt(
                        &dir.join("memory.limit_in_bytes"),
                        parse::parse_memory_limit_v1,
                    )?
                    .flatten();
                if let Some(m) = limit {
                    memory_limit_bytes = Some(memory_limit_bytes.map_or(m, |c: u64| c.min(m)));
                }
            }
        }
        let cpuset_cpus = match &cpuset {
            Some(loc) => self.nearest_cpuset(loc, &["cpuset.effective_cpus", "cpuset.cpus"])?,
            None => None,
        };
        Ok(Cgroup {
            version: Version::V1,
            cpu_limit,
            cpuset: cpuset_cpus,
            memory_limit_bytes,
            dirs: ControllerDirs {
                cpu: cpu.map(|l| l.leaf()),
                cpuacct: cpuacct.map(|l| l.leaf()),
                cpuset: cpuset.map(|l| l.leaf()),
                memory: memory.map(|l| l.leaf()),
            },
        })
    }

    /// The nearest non-empty cpuset list, leaf first: an empty list means
    /// "not configured here" (a fresh v1 child), not "no CPUs".
    fn nearest_cpuset(
        &self,
        loc: &Located,
        files: &[&str],
    ) -> Result<Option<Vec<usize>>, CgroupError> {
        for dir in loc.leaf_to_mount() {
            for file in files {
                if let Some(cpus) = self.parse_opt(&dir.join(file), parse::parse_cpu_list)? {
                    if !cpus.is_empty() {
                        return Ok(Some(cpus));
                    }
                }
            }
        }
        Ok(None)
    }

    fn read_required(&self, path: &Path) -> Result<String, CgroupError> {
        std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// `Ok(None)` when the file does not exist (controller not enabled at
    /// that level); other I/O failures and malformed contents are errors.
    fn parse_opt<T>(
        &self,
        path: &Path,
        parser: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CgroupError> {
        match std::fs::read_to_string(path) {
            Ok(s) => parser(&s).map(Some).map_err(|reason| CgroupError::Parse {
                path: path.to_owned(),
                reason,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CgroupError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

fn tighter_quota(current: Option<CpuQuota>, new: CpuQuota) -> Option<CpuQuota> {
    match current {
        Some(c) if !new.is_tighter_than(&c) => Some(c),
        _ => Some(new),
    }
}

/// `cg_path` relative to a mount's `root`, as plain components; `None` if it
/// is not below the root or contains `..` (a path from outside our cgroup
/// namespace, which cannot be mapped onto this mount).
fn relative_to(root: &str, cg_path: &str) -> Option<Vec<String>> {
    let rest = Path::new(cg_path).strip_prefix(Path::new(root)).ok()?;
    rest.components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to("/", "/"), Some(vec![]));
        assert_eq!(relative_to("/", "/a/b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(relative_to("/docker/x", "/docker/x"), Some(vec![]));
        assert_eq!(
            relative_to("/docker/x", "/docker/x/y"),
            Some(vec!["y".into()])
        );
        assert_eq!(relative_to("/docker/x", "/docker/xy"), None);
        assert_eq!(relative_to("/docker/x", "/"), None);
        assert_eq!(relative_to("/", "/../.."), None);
        assert_eq!(relative_to("/", "relative"), None);
    }

    #[test]
    fn quota_math() {
        let q = |quota_us, period_us| CpuQuota {
            quota_us,
            period_us,
        };
        assert_eq!(q(20000, 100000).ceil_cores(), 1);
        assert_eq!(q(200000, 100000).ceil_cores(), 2);
        assert_eq!(q(200001, 100000).ceil_cores(), 3);
        assert!((q(150000, 100000).cores() - 1.5).abs() < 1e-12);
        assert!(q(50000, 100000).is_tighter_than(&q(60000, 100000)));
        assert!(q(50000, 100000).is_tighter_than(&q(60000, 50000)));
        assert!(!q(100000, 200000).is_tighter_than(&q(50000, 100000)));
    }

    #[test]
    fn stats_from_contents() {
        let s = stats_v2(
            Some("usage_usec 2500000\nuser_usec 1\nsystem_usec 1\nnr_periods 10\nnr_throttled 4\nthrottled_usec 1500000\n"),
            Some("1048576\n"),
        );
        assert_eq!(s.cpu_usage_seconds, Some(2.5));
        assert_eq!(s.nr_periods, Some(10));
        assert_eq!(s.nr_throttled, Some(4));
        assert_eq!(s.throttled_seconds, Some(1.5));
        assert_eq!(s.memory_usage_bytes, Some(1048576));

        let s = stats_v1(
            Some("3000000000\n"),
            Some("nr_periods 7\nnr_throttled 2\nthrottled_time 250000000\n"),
            Some("garbage"),
        );
        assert_eq!(s.cpu_usage_seconds, Some(3.0));
        assert_eq!(s.nr_periods, Some(7));
        assert_eq!(s.nr_throttled, Some(2));
        assert_eq!(s.throttled_seconds, Some(0.25));
        assert_eq!(s.memory_usage_bytes, None);

        assert_eq!(stats_v1(None, None, None), CgroupStats::default());
    }
}
