//! `CgroupFs::detect` and `Cgroup::read_stats` over fixture trees (see
//! fixtures/README.md).

use std::path::PathBuf;

use autoscale_hooks::{CgroupError, CgroupFs, CpuQuota, Version};

fn fixture(name: &str) -> CgroupFs {
    CgroupFs::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

fn under(fs: &CgroupFs, rel: &str) -> Option<PathBuf> {
    Some(fs.root().join(rel))
}

const MIB: u64 = 1024 * 1024;

#[test]
fn v2_with_limits() {
    let fs = fixture("v2");
    let cg = fs.detect().expect("detects");
    assert_eq!(cg.version, Version::V2);
    assert_eq!(
        cg.cpu_limit,
        Some(CpuQuota {
            quota_us: 20000,
            period_us: 100000
        })
    );
    assert_eq!(cg.cpu_limit_cores(), Some(0.2));
    assert_eq!(cg.cpuset, Some(vec![0, 1, 2, 3]));
    assert_eq!(cg.memory_limit_bytes, Some(512 * MIB));
    assert_eq!(cg.dirs.cpu, under(&fs, "sys/fs/cgroup"));
    assert_eq!(cg.dirs.memory, cg.dirs.cpu);
    assert_eq!(fs.visible_cpus(), Some(8));

    let s = cg.read_stats();
    assert_eq!(s.cpu_usage_seconds, Some(8.123456));
    assert_eq!(s.nr_periods, Some(4200));
    assert_eq!(s.nr_throttled, Some(1337));
    assert_eq!(s.throttled_seconds, Some(95.0));
    assert_eq!(s.memory_usage_bytes, Some(100 * MIB));
}

#[test]
fn v2_unlimited() {
    let cg = fixture("v2-unlimited").detect().expect("detects");
    assert_eq!(cg.version, Version::V2);
    assert_eq!(cg.cpu_limit, None);
    assert_eq!(cg.cpu_limit_cores(), None);
    assert_eq!(cg.memory_limit_bytes, None);
    assert_eq!(cg.cpuset, Some((0..8).collect()));
    let s = cg.read_stats();
    assert_eq!(s.nr_throttled, Some(0));
    assert_eq!(s.memory_usage_bytes, Some(50 * MIB));
}

#[test]
fn v2_nested_takes_tightest_ancestor() {
    let fs = fixture("v2-nested");
    let cg = fs.detect().expect("detects");
    assert_eq!(cg.version, Version::V2);
    // Leaf says max; the pod slice's 1.5 CPU applies.
    assert_eq!(
        cg.cpu_limit,
        Some(CpuQuota {
            quota_us: 150000,
            period_us: 100000
        })
    );
    // Leaf 1 GiB, pod slice 512 MiB, kubepods 15 GiB → 512 MiB.
    assert_eq!(cg.memory_limit_bytes, Some(512 * MIB));
    // No cpuset file on the leaf; the nearest one (pod slice) wins over the root's 0-15.
    assert_eq!(cg.cpuset, Some(vec![0, 1, 2, 3, 5]));
    assert_eq!(
        cg.dirs.cpu,
        under(
            &fs,
            "sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcd.scope"
        )
    );
    let s = cg.read_stats();
    assert_eq!(s.cpu_usage_seconds, Some(3.5));
    assert_eq!(s.nr_periods, Some(120));
    assert_eq!(s.nr_throttled, Some(30));
    assert_eq!(s.throttled_seconds, Some(2.25));
    assert_eq!(s.memory_usage_bytes, Some(70 * MIB));
    assert_eq!(fs.visible_cpus(), Some(16));
}

#[test]
fn v2_mount_root_is_own_cgroup() {
    let fs = fixture("v2-host-cgroupns");
    let cg = fs.detect().expect("detects");
    assert_eq!(cg.dirs.cpu, under(&fs, "sys/fs/cgroup"));
    assert_eq!(cg.cpu_limit_cores(), Some(2.5));
    assert_eq!(cg.memory_limit_bytes, None);
    assert_eq!(cg.cpuset, Some(vec![0, 1]));
    // No stat files in this fixture: all None, no panic.
    let s = cg.read_stats();
    assert_eq!(s.cpu_usage_seconds, None);
    assert_eq!(s.memory_usage_bytes, None);
    // No /proc/self/status either.
    assert_eq!(fs.visible_cpus(), None);
}

#[test]
fn v2_path_outside_namespace_falls_back_to_mount_root() {
    let fs = fixture("v2-not-visible");
    let cg = fs.detect().expect("detects");
    assert_eq!(cg.dirs.cpu, under(&fs, "sys/fs/cgroup"));
    assert_eq!(cg.cpu_limit_cores(), Some(0.5));
    assert_eq!(cg.memory_limit_bytes, Some(256 * MIB));
    assert_eq!(cg.cpuset, None);
}

#[test]
fn v2_missing_dir_falls_back_to_mount_root() {
    let fs = fixture("v2-missing-dir");
    let cg = fs.detect().expect("detects");
    assert_eq!(cg.dirs.cpu, under(&fs, "sys/fs/cgroup"));
    assert_eq!(cg.cpu_limit_cores(), Some(0.5));
}

#[test]
fn v2_malformed_cpu_max_is_an_error() {
    match fixture("v2-malformed").detect() {
        Err(CgroupError::Parse { path, reason }) => {
            assert!(
                path.ends_with("sys/fs/cgroup/cpu.max"),
                "{}",
                path.display()
            );
            assert!(reason.contains("banana"), "{reason}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn v2_bad_stats_are_none() {
    let cg = fixture("v2-bad-stats").detect().expect("detects");
    assert_eq!(cg.cpu_limit_cores(), Some(1.0));
    let s = cg.read_stats();
    assert_eq!(s.cpu_usage_seconds, Some(1.5));
    assert_eq!(s.nr_periods, None);
    assert_eq!(s.nr_throttled, None);
    assert_eq!(s.throttled_seconds, None);
    assert_eq!(s.memory_usage_bytes, None);
}

#[test]
fn v1_container_view() {
    let fs = fixture("v1");
    let cg = fs.detect().expect("detects");
    assert_eq!(cg.version, Version::V1);
    assert_eq!(
        cg.cpu_limit,
        Some(CpuQuota {
            quota_us: 150000,
            period_us: 100000
        })
    );
    assert_eq!(cg.cpu_limit_cores(), Some(1.5));
    // Only cpuset.cpus exists (no cpuset.effective_cpus).
    assert_eq!(cg.cpuset, Some(vec![0, 1]));
    assert_eq!(cg.memory_limit_bytes, Some(256 * MIB));
    assert_eq!(cg.dirs.cpu, under(&fs, "sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(cg.dirs.cpuacct, cg.dirs.cpu);
    assert_eq!(cg.dirs.cpuset, under(&fs, "sys/fs/cgroup/cpuset"));
    assert_eq!(cg.dirs.memory, under(&fs, "sys/fs/cgroup/memory"));
    assert_eq!(fs.visible_cpus(), Some(4));

    let s = cg.read_stats();
    assert_eq!(s.cpu_usage_seconds, Some(42.0));
    assert_eq!(s.nr_periods, Some(5000));
    assert_eq!(s.nr_throttled, Some(250));
    assert_eq!(s.throttled_seconds, Some(12.5));
    assert_eq!(s.memory_usage_bytes, Some(128 * MIB));
}

#[test]
fn v1_unlimited() {
    let cg = fixture("v1-unlimited").detect().expect("detects");
    assert_eq!(cg.version, Version::V1);
    assert_eq!(cg.cpu_limit, None);
    assert_eq!(cg.memory_limit_bytes, None);
    assert_eq!(cg.cpuset, Some(vec![0, 1, 2, 3]));
    let s = cg.read_stats();
    assert_eq!(s.cpu_usage_seconds, Some(0.001));
    assert_eq!(s.nr_throttled, Some(0));
    assert_eq!(s.throttled_seconds, Some(0.0));
    assert_eq!(s.memory_usage_bytes, Some(2 * MIB));
}

#[test]
fn v1_hybrid_nested() {
    let fs = fixture("v1-hybrid-nested");
    let cg = fs.detect().expect("detects");
    // The empty cgroup2 at /sys/fs/cgroup/unified must not win over v1 controllers.
    assert_eq!(cg.version, Version::V1);
    assert_eq!(
        cg.cpu_limit,
        Some(CpuQuota {
            quota_us: 50000,
            period_us: 100000
        })
    );
    assert_eq!(cg.memory_limit_bytes, Some(2048 * MIB));
    assert_eq!(cg.cpuset, Some(vec![0, 1]));
    assert_eq!(
        cg.dirs.cpu,
        under(&fs, "sys/fs/cgroup/cpu/kubepods/burstable/pod1/ctr1")
    );
    assert_eq!(cg.dirs.cpuacct, under(&fs, "sys/fs/cgroup/cpuacct"));
    assert_eq!(
        cg.dirs.memory,
        under(
            &fs,
            "sys/fs/cgroup/memory/process_api/56c288f55dce41a5674391249df27f62"
        )
    );
    let s = cg.read_stats();
    assert_eq!(s.nr_periods, Some(10));
    assert_eq!(s.nr_throttled, Some(0));
    assert_eq!(s.cpu_usage_seconds, Some(2459.45921586));
    assert_eq!(s.memory_usage_bytes, Some(4726784));
    assert_eq!(fs.visible_cpus(), Some(2));
}

#[test]
fn nothing_mounted_is_not_found() {
    assert!(matches!(
        fixture("no-cgroup").detect(),
        Err(CgroupError::NotFound)
    ));
}

#[test]
fn missing_root_is_an_io_error() {
    let err = fixture("does-not-exist").detect().expect_err("no files");
    assert!(matches!(err, CgroupError::Io { .. }), "{err}");
    assert!(err.to_string().contains("proc/self/cgroup"), "{err}");
}
