//! Process-wide counters for `/status` (nginx stub_status equivalents).

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct Stats {
    pub requests_total: AtomicU64,
    pub in_flight: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Proxy connections open right now (the HTTP/1 front counts them);
    /// the graceful shutdown waits for this to reach 0.
    pub connections_active: AtomicU64,
}
