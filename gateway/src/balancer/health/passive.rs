//! Passive checks: what proxied traffic tells about a target.
//!
//! Kong reports each failed try from the balancer phase (a timeout, or a
//! TCP failure for anything else nginx calls an error) and the final
//! response status from the log phase; the same mapping is kept here.

use pingora::ErrorType;

use super::{Failure, HealthConfig, TargetHealth};

/// What one try against a target came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// Connect, send or read failed, or the connection was reset.
    TcpFailure,
    /// Connect, read or write timed out.
    Timeout,
}

impl Outcome {
    /// Classifies a Pingora error of a try.
    pub fn from_error(etype: &ErrorType) -> Outcome {
        match etype {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Outcome::Timeout
            }
            _ => Outcome::TcpFailure,
        }
    }
}

/// Feeds one outcome into the target's health (no-op when passive checks
/// are off: all thresholds 0).
pub fn report(health: &TargetHealth, cfg: &HealthConfig, outcome: Outcome) {
    if !cfg.passive_enabled() {
        return;
    }
    let t = &cfg.passive;
    match outcome {
        Outcome::Status(s) => health.report_status(t, s),
        Outcome::TcpFailure => health.report_failure(t, Failure::Tcp),
        Outcome::Timeout => health.report_failure(t, Failure::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use config_sync::model;

    #[test]
    fn passive_failures_mark_a_target_down() {
        let mut h = model::Healthchecks::default();
        h.passive.unhealthy.tcp_failures = 2;
        h.passive.unhealthy.http_failures = 1;
        let cfg = HealthConfig::new(&h);
        let t = TargetHealth::default();
        report(&t, &cfg, Outcome::from_error(&ErrorType::ConnectRefused));
        assert!(t.is_healthy());
        report(&t, &cfg, Outcome::TcpFailure);
        assert!(!t.is_healthy());
        let t = TargetHealth::default();
        report(&t, &cfg, Outcome::Status(404));
        assert!(t.is_healthy(), "404 is in neither list");
        report(&t, &cfg, Outcome::Status(503));
        assert!(!t.is_healthy());
        // Defaults: everything 0, passive checks off.
        let off = HealthConfig::new(&model::Healthchecks::default());
        let t = TargetHealth::default();
        for _ in 0..5 {
            report(&t, &off, Outcome::Timeout);
        }
        assert!(t.is_healthy());
    }
}
