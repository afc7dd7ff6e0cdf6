//! Worker sizing table (issue 5: 0.5 CPU → 1 thread, no quota → CPUs).

use std::path::PathBuf;

use autoscale_hooks::{
    worker_threads, Cgroup, CgroupFs, ControllerDirs, CpuQuota, Version, WorkerSetting,
};

fn cg(version: Version, quota: Option<(u64, u64)>, cpuset: Option<Vec<usize>>) -> Cgroup {
    Cgroup {
        version,
        cpu_limit: quota.map(|(quota_us, period_us)| CpuQuota {
            quota_us,
            period_us,
        }),
        cpuset,
        memory_limit_bytes: None,
        dirs: ControllerDirs::default(),
    }
}

/// (quota/period, cpuset, visible CPUs, expected threads)
type Row = (Option<(u64, u64)>, Option<Vec<usize>>, usize, usize);

#[test]
fn auto_sizing_table() {
    let table: &[Row] = &[
        (Some((20000, 100000)), None, 8, 1),  // 0.2 CPU
        (Some((50000, 100000)), None, 8, 1),  // 0.5 CPU
        (Some((100000, 100000)), None, 8, 1), // exactly 1
        (Some((150000, 100000)), None, 8, 2), // 1.5 CPU
        (Some((200000, 100000)), None, 8, 2), // exactly 2
        (Some((200001, 100000)), None, 8, 3), // just over 2
        (Some((400000, 100000)), None, 2, 2), // 4 CPUs of quota, 2 visible
        (Some((75000, 50000)), None, 8, 2),   // 1.5 CPU with a 50 ms period
        (Some((1000, 100000)), None, 8, 1),   // tiny quota still gets 1
        (None, None, 2, 2),                   // none → visible
        (None, None, 64, 64),
        (None, Some(vec![0, 1, 2, 3]), 16, 4), // cpuset caps
        (Some((800000, 100000)), Some(vec![2, 3]), 16, 2),
        (Some((150000, 100000)), Some(vec![0, 1, 2, 3]), 16, 2),
        (None, Some(vec![0, 1, 2, 3]), 2, 2), // visible smaller than cpuset
        (None, None, 0, 1),                   // nonsense visible count → still 1
    ];
    for (i, (quota, cpuset, visible, want)) in table.iter().enumerate() {
        for v in [Version::V1, Version::V2] {
            let c = cg(v, *quota, cpuset.clone());
            let d = worker_threads(WorkerSetting::Auto, Some(&c), *visible);
            assert_eq!(d.threads, *want, "row {i} ({v}): {}", d.reason);
            assert!(d.reason.starts_with("auto: "), "{}", d.reason);
        }
    }
}

#[test]
fn reasons_read_well() {
    let d = worker_threads(
        WorkerSetting::Auto,
        Some(&cg(Version::V2, Some((20000, 100000)), None)),
        8,
    );
    assert_eq!(
        d.reason,
        "auto: cgroup v2 cpu.max 20000/100000 = 0.2 CPU → 1 thread"
    );

    let d = worker_threads(
        WorkerSetting::Auto,
        Some(&cg(Version::V1, Some((50000, 100000)), None)),
        2,
    );
    assert_eq!(
        d.reason,
        "auto: cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us 50000/100000 = 0.5 CPU → 1 thread"
    );

    let d = worker_threads(
        WorkerSetting::Auto,
        Some(&cg(Version::V2, Some((400000, 100000)), None)),
        2,
    );
    assert_eq!(
        d.reason,
        "auto: cgroup v2 cpu.max 400000/100000 = 4 CPU, capped at 2 visible CPUs → 2 threads"
    );

    let d = worker_threads(
        WorkerSetting::Auto,
        Some(&cg(
            Version::V2,
            Some((800000, 100000)),
            Some(vec![0, 1, 2, 3, 5]),
        )),
        16,
    );
    assert_eq!(
        d.reason,
        "auto: cgroup v2 cpu.max 800000/100000 = 8 CPU, capped at cpuset 0-3,5 (5 CPUs) → 5 threads"
    );

    let d = worker_threads(WorkerSetting::Auto, Some(&cg(Version::V1, None, None)), 2);
    assert_eq!(
        d.reason,
        "auto: no cgroup v1 CPU quota → 2 threads (2 visible CPUs)"
    );

    let d = worker_threads(WorkerSetting::Auto, None, 3);
    assert_eq!(d.threads, 3);
    assert_eq!(
        d.reason,
        "auto: cgroup not detected → 3 threads (3 visible CPUs)"
    );
}

#[test]
fn explicit_count_wins() {
    let quarter = cg(Version::V2, Some((25000, 100000)), Some(vec![0]));
    let d = worker_threads(WorkerSetting::Count(4), Some(&quarter), 2);
    assert_eq!(d.threads, 4);
    assert_eq!(
        d.reason,
        "explicit worker count 4 → 4 threads (above the cgroup v2 limit of 0.25 CPU; expect throttling)"
    );

    let d = worker_threads(WorkerSetting::Count(1), Some(&quarter), 2);
    assert_eq!(
        (d.threads, d.reason.as_str()),
        (1, "explicit worker count 1 → 1 thread")
    );

    let d = worker_threads(WorkerSetting::Count(16), None, 2);
    assert_eq!(d.threads, 16);

    // Not producible by parsing, but must not yield zero workers.
    assert_eq!(worker_threads(WorkerSetting::Count(0), None, 2).threads, 1);
}

#[test]
fn fixtures_end_to_end() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // (fixture, expected auto threads using the fixture's own Cpus_allowed_list)
    for (name, want) in [
        ("v2", 1),
        ("v2-unlimited", 8),
        ("v2-nested", 2),
        ("v1", 2),
        ("v1-hybrid-nested", 1),
    ] {
        let fs = CgroupFs::new(root.join(name));
        let cg = fs.detect().expect("detects");
        let visible = fs.visible_cpus().expect("fixture has proc/self/status");
        let d = worker_threads(WorkerSetting::Auto, Some(&cg), visible);
        assert_eq!(d.threads, want, "{name}: {}", d.reason);
    }
}
