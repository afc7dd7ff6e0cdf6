//! cgroup-aware sizing, lifecycle and scaling signals.
//!
//! - [`cgroup`]: detect cgroup v1/v2 for this process, its CPU quota, cpuset
//!   and memory limit, and read usage/throttling counters for metrics.
//! - [`workers`]: turn `KONG_NGINX_WORKER_PROCESSES` (`auto` or a number)
//!   into a thread count that respects the quota.

pub mod cgroup;
pub mod workers;

pub use cgroup::{Cgroup, CgroupError, CgroupFs, CgroupStats, ControllerDirs, CpuQuota, Version};
pub use workers::{worker_threads, WorkerDecision, WorkerSetting, WorkerSettingError};
