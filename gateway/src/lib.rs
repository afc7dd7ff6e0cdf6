//! A Kong-compatible data plane on Pingora.
//!
//! Request path: listener -> [`router`] -> plugins -> [`balancer`] ->
//! upstream -> plugins -> log; all wired in [`proxy`]. Configuration is one
//! immutable [`snapshot::Snapshot`] swapped whole.

pub mod access_log;
pub mod balancer;
pub mod cluster;
pub mod kong;
pub mod lifecycle;
pub mod loader;
pub mod metrics;
pub mod plugins;
pub mod proxy;
pub mod router;
pub mod server;
pub mod shim;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod tls;
pub mod upstream_tls;
