//! Process-wide counters for `/status` and the `kong_nginx_*` metrics: the
//! figures of nginx's stub_status, counted where nginx counts them (the
//! HTTP/1 front sees every connection and request head).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Request heads received (refused ones included, as nginx counts them).
    pub requests_total: AtomicU64,
    /// Requests between `request_filter` and `logging` (a scaling signal).
    pub in_flight: AtomicU64,
    /// Client connections accepted.
    pub connections_accepted: AtomicU64,
    /// Client connections handled (nginx: accepted unless a limit was hit;
    /// no such limit here, but counted on its own so the two stay honest).
    pub connections_handled: AtomicU64,
    /// Proxy connections open right now; the graceful shutdown waits for
    /// this to reach 0.
    pub connections_active: AtomicU64,
    /// Connections reading a request head (from its first byte to its end).
    pub connections_reading: AtomicU64,
    /// Connections with a request being processed or answered.
    pub connections_writing: AtomicU64,
}

/// nginx stub_status figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    pub accepted: u64,
    pub handled: u64,
    pub active: u64,
    pub reading: u64,
    pub writing: u64,
    /// Open and idle: nginx's `active - (reading + writing)`.
    pub waiting: u64,
    pub requests: u64,
}

impl Stats {
    pub fn connections(&self) -> Connections {
        let active = self.connections_active.load(Ordering::Relaxed);
        let reading = self.connections_reading.load(Ordering::Relaxed);
        let writing = self.connections_writing.load(Ordering::Relaxed);
        Connections {
            accepted: self.connections_accepted.load(Ordering::Relaxed),
            handled: self.connections_handled.load(Ordering::Relaxed),
            active,
            reading,
            writing,
            waiting: active.saturating_sub(reading + writing),
            requests: self.requests_total.load(Ordering::Relaxed),
        }
    }
}

/// Holds one unit of a gauge while alive.
pub struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    pub fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
