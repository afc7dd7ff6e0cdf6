//! cgroup-aware sizing, lifecycle and scaling signals.
