//! Process-wide counters for `/status` (nginx stub_status equivalents).

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct Stats {
    pub requests_total: AtomicU64,
    pub in_flight: AtomicU64,
    pub connections_accepted: AtomicU64,
}
