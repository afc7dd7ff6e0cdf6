//! Target health as lua-resty-healthcheck keeps it (Kong's health checker).
//!
//! A target is in one of four internal states: healthy, mostly healthy,
//! mostly unhealthy, unhealthy (the "mostly" ones count as their side).
//! Reports move counters: a success clears the failure counters, a failure
//! clears the success counter, and a counter reaching its threshold flips
//! the state. A report agreeing with the current full state is ignored, and
//! a threshold of 0 disables that counter. Active probes ([`active`]) and
//! proxied traffic ([`passive`]) feed the same state.

pub mod active;
pub mod passive;
pub mod tls;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use config_sync::model;

/// Health of a target as exported (`kong_upstream_target_health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    Unhealthy,
    DnsError,
    HealthchecksOff,
}

impl HealthState {
    /// Kong's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::DnsError => "dns_error",
            HealthState::HealthchecksOff => "healthchecks_off",
        }
    }
}

const HEALTHY: u8 = 0;
const MOSTLY_HEALTHY: u8 = 1;
const MOSTLY_UNHEALTHY: u8 = 2;
const UNHEALTHY: u8 = 3;

/// Which counter a failure goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Http,
    Tcp,
    Timeout,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    successes: u32,
    http: u32,
    tcp: u32,
    timeouts: u32,
}

/// Thresholds of one side of checks (active or passive).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub healthy_statuses: Vec<u16>,
    pub successes: u32,
    pub unhealthy_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

impl Thresholds {
    pub fn from_active(a: &model::ActiveHealthcheck) -> Thresholds {
        Thresholds {
            healthy_statuses: a.healthy.http_statuses.clone(),
            successes: a.healthy.successes.into(),
            unhealthy_statuses: a.unhealthy.http_statuses.clone(),
            http_failures: a.unhealthy.http_failures.into(),
            tcp_failures: a.unhealthy.tcp_failures.into(),
            timeouts: a.unhealthy.timeouts.into(),
        }
    }

    pub fn from_passive(p: &model::PassiveHealthcheck) -> Thresholds {
        Thresholds {
            healthy_statuses: p.healthy.http_statuses.clone(),
            successes: p.healthy.successes.into(),
            unhealthy_statuses: p.unhealthy.http_statuses.clone(),
            http_failures: p.unhealthy.http_failures.into(),
            tcp_failures: p.unhealthy.tcp_failures.into(),
            timeouts: p.unhealthy.timeouts.into(),
        }
    }

    fn any_unhealthy(&self) -> bool {
        self.http_failures > 0 || self.tcp_failures > 0 || self.timeouts > 0
    }

    fn limit(&self, f: Failure) -> u32 {
        match f {
            Failure::Http => self.http_failures,
            Failure::Tcp => self.tcp_failures,
            Failure::Timeout => self.timeouts,
        }
    }
}

/// One target's health state and counters.
#[derive(Debug)]
pub struct TargetHealth {
    state: AtomicU8,
    counters: Mutex<Counters>,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            state: AtomicU8::new(HEALTHY),
            counters: Mutex::new(Counters::default()),
        }
    }
}

impl TargetHealth {
    /// Healthy or mostly healthy: takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.state.load(Ordering::Acquire) <= MOSTLY_HEALTHY
    }

    /// Takes over another target's state (a config swap kept the target).
    pub fn copy_from(&self, other: &TargetHealth) {
        let c = *lock(&other.counters);
        *lock(&self.counters) = c;
        self.state
            .store(other.state.load(Ordering::Acquire), Ordering::Release);
    }

    /// Forces a state (Kong's `/healthy` and `/unhealthy` admin endpoints).
    pub fn set_healthy(&self, healthy: bool) {
        let mut c = lock(&self.counters);
        *c = Counters::default();
        let s = if healthy { HEALTHY } else { UNHEALTHY };
        self.state.store(s, Ordering::Release);
    }

    pub fn report_success(&self, t: &Thresholds) {
        let limit = t.successes;
        if limit == 0 {
            return;
        }
        let current = self.state.load(Ordering::Acquire);
        if current == HEALTHY {
            return;
        }
        let mut c = lock(&self.counters);
        c.successes += 1;
        c.http = 0;
        c.tcp = 0;
        c.timeouts = 0;
        let new = if c.successes >= limit {
            *c = Counters::default();
            HEALTHY
        } else if current == UNHEALTHY {
            MOSTLY_UNHEALTHY
        } else {
            current
        };
        self.transition(current, new);
    }

    pub fn report_failure(&self, t: &Thresholds, kind: Failure) {
        let limit = t.limit(kind);
        if limit == 0 {
            return;
        }
        let current = self.state.load(Ordering::Acquire);
        if current == UNHEALTHY {
            return;
        }
        let mut c = lock(&self.counters);
        c.successes = 0;
        let n = match kind {
            Failure::Http => {
                c.http += 1;
                c.http
            }
            Failure::Tcp => {
                c.tcp += 1;
                c.tcp
            }
            Failure::Timeout => {
                c.timeouts += 1;
                c.timeouts
            }
        };
        let new = if n >= limit {
            *c = Counters::default();
            UNHEALTHY
        } else if current == HEALTHY {
            MOSTLY_HEALTHY
        } else {
            current
        };
        self.transition(current, new);
    }

    /// An HTTP status: counts as success, HTTP failure, or nothing.
    pub fn report_status(&self, t: &Thresholds, status: u16) {
        if t.healthy_statuses.contains(&status) {
            self.report_success(t);
        } else if status == 0 || t.unhealthy_statuses.contains(&status) {
            self.report_failure(t, Failure::Http);
        }
    }

    fn transition(&self, from: u8, to: u8) {
        if from != to {
            self.state.store(to, Ordering::Release);
            if (from <= MOSTLY_HEALTHY) != (to <= MOSTLY_HEALTHY) {
                let what = if to <= MOSTLY_HEALTHY {
                    "healthy"
                } else {
                    "unhealthy"
                };
                log::warn!("target is now {what}");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An upstream's health-check settings, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub active: Thresholds,
    pub passive: Thresholds,
    pub active_type: String,
    pub http_path: String,
    pub https_sni: Option<String>,
    pub https_verify: bool,
    pub headers: Vec<(String, Vec<String>)>,
    pub timeout: std::time::Duration,
    pub concurrency: usize,
    pub healthy_interval: std::time::Duration,
    pub unhealthy_interval: std::time::Duration,
    /// `healthchecks.threshold`: percent of healthy weight below which
    /// the whole upstream counts as unhealthy.
    pub threshold: f64,
}

fn secs(s: f64) -> std::time::Duration {
    if s.is_finite() && s > 0.0 {
        std::time::Duration::from_secs_f64(s)
    } else {
        std::time::Duration::ZERO
    }
}

impl HealthConfig {
    pub fn new(h: &model::Healthchecks) -> HealthConfig {
        HealthConfig {
            active: Thresholds::from_active(&h.active),
            passive: Thresholds::from_passive(&h.passive),
            active_type: h.active.check_type.clone(),
            http_path: h.active.http_path.clone(),
            https_sni: h.active.https_sni.clone(),
            https_verify: h.active.https_verify_certificate,
            headers: h.active.headers.clone(),
            timeout: secs(h.active.timeout),
            concurrency: (h.active.concurrency as usize).max(1),
            healthy_interval: secs(h.active.healthy.interval),
            unhealthy_interval: secs(h.active.unhealthy.interval),
            threshold: h.threshold,
        }
    }

    pub fn active_enabled(&self) -> bool {
        !self.healthy_interval.is_zero() || !self.unhealthy_interval.is_zero()
    }

    pub fn passive_enabled(&self) -> bool {
        self.passive.any_unhealthy() || self.passive.successes > 0
    }

    /// Kong reports `healthchecks_off` when neither kind is configured.
    pub fn enabled(&self) -> bool {
        self.active_enabled() || self.passive_enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(successes: u32, http: u32, tcp: u32, timeouts: u32) -> Thresholds {
        Thresholds {
            healthy_statuses: vec![200],
            successes,
            unhealthy_statuses: vec![500],
            http_failures: http,
            tcp_failures: tcp,
            timeouts,
        }
    }

    #[test]
    fn failures_reach_the_threshold_and_successes_bring_it_back() {
        let th = t(2, 3, 1, 2);
        let h = TargetHealth::default();
        h.report_status(&th, 500);
        h.report_status(&th, 500);
        assert!(h.is_healthy(), "2 of 3 http failures: mostly healthy");
        h.report_status(&th, 200);
        h.report_status(&th, 500);
        h.report_status(&th, 500);
        assert!(h.is_healthy(), "a success reset the failure counter");
        h.report_status(&th, 500);
        assert!(!h.is_healthy());
        h.report_success(&th);
        assert!(!h.is_healthy(), "mostly unhealthy");
        h.report_failure(&th, Failure::Timeout);
        h.report_success(&th);
        assert!(!h.is_healthy(), "the failure reset the success counter");
        h.report_success(&th);
        assert!(h.is_healthy());
        h.report_failure(&th, Failure::Tcp);
        assert!(!h.is_healthy(), "one tcp failure is enough");
    }

    #[test]
    fn zero_thresholds_disable_counters() {
        let th = t(0, 0, 0, 0);
        let h = TargetHealth::default();
        for _ in 0..10 {
            h.report_status(&th, 500);
            h.report_failure(&th, Failure::Tcp);
        }
        assert!(h.is_healthy());
        h.set_healthy(false);
        h.report_success(&th);
        assert!(!h.is_healthy(), "successes 0: nothing brings it back");
        let fresh = TargetHealth::default();
        fresh.copy_from(&h);
        assert!(!fresh.is_healthy());
    }
}
