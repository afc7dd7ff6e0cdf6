//! Pure parsers for the procfs and cgroupfs files we read.
//!
//! Each function takes a file's contents and never panics: malformed input
//! yields `Err(reason)` or `None`, and the caller attaches the file path.

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroupEntry {
    pub hierarchy_id: u32,
    /// Empty for the v2 unified entry (`0::/path`); `name=systemd` style
    /// named hierarchies are kept verbatim.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/self/cgroup`. Lines that do not have three `:`-separated
/// fields are rejected, because a half-understood file would resolve the
/// wrong directory.
pub fn parse_proc_cgroup(contents: &str) -> Result<Vec<ProcCgroupEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in contents.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        // The path may itself contain ':', so split at most twice.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `id:controllers:path`", n + 1));
        };
        let hierarchy_id = id
            .parse::<u32>()
            .map_err(|_| format!("line {}: bad hierarchy id {id:?}", n + 1))?;
        let controllers = ctrls
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        out.push(ProcCgroupEntry {
            hierarchy_id,
            controllers,
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// The parts of a `/proc/self/mountinfo` line that matter for cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path inside the mounted filesystem that is mounted (field 4); for a
    /// cgroup mount, the cgroup that appears at `mount_point`.
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// Per-mount and per-superblock options together; v1 cgroup controllers
    /// appear in the superblock options (`rw,cpu,cpuacct`).
    pub options: Vec<String>,
}

/// Parses `/proc/self/mountinfo` (proc(5)). Lines that cannot be parsed are
/// skipped rather than failing the whole file: they belong to unrelated
/// mounts far more often than to cgroupfs.
pub fn parse_mountinfo(contents: &str) -> Vec<Mount> {
    contents.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // id parent maj:min root mount_point mount_opts [optional...] - fstype source super_opts
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let root = unescape_octal(fields.get(3)?);
    let mount_point = unescape_octal(fields.get(4)?);
    let mount_opts = fields.get(5)?;
    let fs_type = (*fields.get(sep + 1)?).to_owned();
    let super_opts = fields.get(sep + 3).copied().unwrap_or("");
    let options = mount_opts
        .split(',')
        .chain(super_opts.split(','))
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    Some(Mount {
        root,
        mount_point,
        fs_type,
        options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses v2 `cpu.max`: `"max 100000"` → `Ok(None)`, `"20000 100000"` →
/// `Ok(Some((20000, 100000)))`. The period may be omitted (kernel default
/// 100000 µs).
pub fn parse_cpu_max(contents: &str) -> Result<Option<(u64, u64)>, String> {
    let mut it = contents.split_whitespace();
    let quota = it.next().ok_or("empty cpu.max")?;
    let period = match it.next() {
        Some(p) => parse_u64(p)?,
        None => 100_000,
    };
    if it.next().is_some() {
        return Err(format!("unexpected extra fields in {contents:?}"));
    }
    if period == 0 {
        return Err("period is 0".to_owned());
    }
    if quota == "max" {
        return Ok(None);
    }
    let quota = parse_u64(quota)?;
    if quota == 0 {
        return Err("quota is 0".to_owned());
    }
    Ok(Some((quota, period)))
}

/// Parses v1 `cpu.cfs_quota_us`: any negative value (the kernel writes -1)
/// means no quota.
pub fn parse_cfs_quota(contents: &str) -> Result<Option<u64>, String> {
    let v: i64 = contents
        .trim()
        .parse()
        .map_err(|_| format!("not an integer: {:?}", contents.trim()))?;
    match v {
        v if v < 0 => Ok(None),
        0 => Err("quota is 0".to_owned()),
        v => Ok(Some(v.unsigned_abs())),
    }
}

/// Parses v1 `cpu.cfs_period_us`.
pub fn parse_cfs_period(contents: &str) -> Result<u64, String> {
    match parse_u64(contents.trim())? {
        0 => Err("period is 0".to_owned()),
        p => Ok(p),
    }
}

/// v1 reports "no limit" as `PAGE_COUNTER_MAX * PAGE_SIZE`, which depends
/// on the page size (9223372036854771712 on 4 KiB pages); anything this
/// large is no real limit.
pub const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Parses v2 `memory.max` (`max` or bytes).
pub fn parse_memory_max(contents: &str) -> Result<Option<u64>, String> {
    match contents.trim() {
        "max" => Ok(None),
        v => parse_u64(v).map(Some),
    }
}

/// Parses v1 `memory.limit_in_bytes`, mapping huge values to `None`.
pub fn parse_memory_limit_v1(contents: &str) -> Result<Option<u64>, String> {
    let v = contents.trim();
    // Some kernels print -1 for the root cgroup.
    if v == "-1" {
        return Ok(None);
    }
    let v = parse_u64(v)?;
    Ok((v < V1_UNLIMITED_THRESHOLD).then_some(v))
}

/// Largest CPU number accepted in a list; bounds the allocation so that a
/// corrupt `0-4294967295` cannot exhaust memory. Linux's NR_CPUS max is 8192.
pub const MAX_CPU_INDEX: usize = 1 << 16;

/// Parses the kernel's CPU list syntax (`"0-3,5"`, `"0-7:2"` not used by
/// cgroupfs and rejected). Returns sorted, de-duplicated CPU numbers; an
/// empty file gives an empty list.
pub fn parse_cpu_list(contents: &str) -> Result<Vec<usize>, String> {
    let s = contents.trim();
    let mut cpus = Vec::new();
    if s.is_empty() {
        return Ok(cpus);
    }
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (parse_cpu(lo)?, parse_cpu(hi)?),
            None => {
                let c = parse_cpu(part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("descending range {part:?}"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_cpu(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("bad CPU number {s:?}"))?;
    if v > MAX_CPU_INDEX {
        return Err(format!("CPU number {v} out of range"));
    }
    Ok(v)
}

/// Looks up `key` in a flat-keyed file (`cpu.stat`: `key value` per line).
pub fn flat_keyed(contents: &str, key: &str) -> Option<u64> {
    contents.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next()? == key).then_some(())?;
        it.next()?.parse().ok()
    })
}

/// Parses a single unsigned integer file (`memory.current`, `cpuacct.usage`).
pub fn parse_single_u64(contents: &str) -> Result<u64, String> {
    parse_u64(contents.trim())
}

fn parse_u64(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("not an unsigned integer: {s:?}"))
}

/// Finds `Cpus_allowed_list:` in `/proc/self/status`, i.e. the CPUs this
/// thread's affinity mask allows (what `taskset`/the kubelet CPU manager set).
pub fn cpus_allowed_list(status: &str) -> Option<Vec<usize>> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(line).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v1_and_v2_lines() {
        let e = parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/x:y\n0::/\n").expect("parses");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].controllers, vec!["memory"]);
        assert_eq!(e[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(e[1].path, "/x:y");
        assert!(e[2].controllers.is_empty());
        assert!(parse_proc_cgroup("garbage\n").is_err());
        assert!(parse_proc_cgroup("x:cpu:/\n").is_err());
    }

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             41 31 0:38 /a\\040b /sys/fs/cgroup/unified rw,relatime shared:9 master:2 - cgroup2 cgroup2 rw\n\
             short line\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].fs_type, "cgroup");
        assert!(m[0].options.iter().any(|o| o == "cpu"));
        assert_eq!(m[1].root, "/a b");
        assert_eq!(m[1].fs_type, "cgroup2");
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape_octal("a\\134b"), "a\\b");
        assert_eq!(unescape_octal("trailing\\04"), "trailing\\04");
        assert_eq!(unescape_octal("\\777"), "\\777");
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max("20000 100000\n"), Ok(Some((20000, 100000))));
        assert_eq!(parse_cpu_max("50000"), Ok(Some((50000, 100000))));
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("abc 100000").is_err());
        assert!(parse_cpu_max("1000 0").is_err());
        assert!(parse_cpu_max("0 100000").is_err());
        assert!(parse_cpu_max("1 2 3").is_err());
    }

    #[test]
    fn cfs_quota_and_period() {
        assert_eq!(parse_cfs_quota("-1\n"), Ok(None));
        assert_eq!(parse_cfs_quota("50000\n"), Ok(Some(50000)));
        assert!(parse_cfs_quota("").is_err());
        assert!(parse_cfs_quota("0").is_err());
        assert_eq!(parse_cfs_period("100000\n"), Ok(100000));
        assert!(parse_cfs_period("0").is_err());
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory_max("max\n"), Ok(None));
        assert_eq!(parse_memory_max("536870912\n"), Ok(Some(536870912)));
        assert!(parse_memory_max("lots").is_err());
        assert_eq!(parse_memory_limit_v1("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_memory_limit_v1("4611686018427387904"), Ok(None));
        assert_eq!(
            parse_memory_limit_v1("4611686018427387903"),
            Ok(Some(4611686018427387903))
        );
        assert_eq!(parse_memory_limit_v1("-1"), Ok(None));
        assert_eq!(parse_memory_limit_v1("268435456\n"), Ok(Some(268435456)));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5\n"), Ok(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("7"), Ok(vec![7]));
        assert_eq!(parse_cpu_list("3,1-2,2"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list("\n"), Ok(vec![]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("0-4294967295").is_err());
        assert!(parse_cpu_list("a-b").is_err());
        assert!(parse_cpu_list("0,,1").is_err());
    }

    #[test]
    fn flat_keyed_lookup() {
        let s = "usage_usec 10\nnr_periods 3\nbroken\nnr_throttled x\n";
        assert_eq!(flat_keyed(s, "usage_usec"), Some(10));
        assert_eq!(flat_keyed(s, "nr_periods"), Some(3));
        assert_eq!(flat_keyed(s, "nr_throttled"), None);
        assert_eq!(flat_keyed(s, "usage"), None);
    }

    #[test]
    fn status_cpus_allowed() {
        let s = "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";
        assert_eq!(cpus_allowed_list(s), Some(vec![0, 1]));
        assert_eq!(cpus_allowed_list("Name: x\n"), None);
    }
}
