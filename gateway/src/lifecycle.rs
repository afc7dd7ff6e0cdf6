//! Shutdown the way an autoscaled pod needs it.
//!
//! Kubernetes removes an evicted or scaled-in pod from its Service's
//! endpoints while it sends SIGTERM, and an NLB takes a while longer to
//! deregister the target. So on SIGTERM (or SIGQUIT, Kong's graceful quit)
//! readiness turns 503 at once (signal handlers set `draining`) and every
//! response from then on carries `Connection: close`, so keep-alive clients
//! move off between requests. The listeners keep accepting for
//! `drain_delay`; then Pingora stops accepting, idle connections close, and
//! the process waits for every open connection to be answered, up to the
//! grace period (`nginx_main_worker_shutdown_timeout`, 30 s by default),
//! before it exits. When `kong quit --wait=N` already drained (the preStop
//! hook), the delay is skipped. SIGINT stays a fast exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::stats::Stats;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// How long listeners keep accepting after SIGTERM when no preStop drained.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// Reads `KONG_DRAIN_DELAY` (seconds, fractions allowed; ours, Kong has no
/// such setting because its chart's preStop does the waiting).
pub fn drain_delay_from(value: Option<&str>) -> Result<Duration, String> {
    match value {
        None => Ok(DEFAULT_DRAIN_DELAY),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("KONG_DRAIN_DELAY: expected seconds (0-3600), got '{v}'")),
    }
}

/// Pingora's shutdown trigger, with the drain delay in front.
pub struct DrainingShutdown {
    /// Set by `kong quit` (SIGUSR1) before its SIGTERM.
    pub quit_requested: Arc<AtomicBool>,
    pub drain_delay: Duration,
    /// Open proxy connections end the grace period when they reach 0.
    pub stats: Arc<Stats>,
    /// When the listeners were told to stop.
    pub stopping_since: std::sync::OnceLock<std::time::Instant>,
}

/// After the stop, each listener still accepts what the kernel had queued
/// for up to about 120 ms (vendored Pingora patch): a count of 0 before
/// that does not yet mean nothing is left.
const ACCEPT_DRAIN: Duration = Duration::from_millis(150);

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot install shutdown signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
            _ = quit.recv() => {}
        }
        let delay = if self.quit_requested.load(Ordering::SeqCst) {
            Duration::ZERO
        } else {
            self.drain_delay
        };
        if !delay.is_zero() {
            log::info!(
                "shutdown requested: not ready, still accepting for {} ms",
                delay.as_millis()
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
        log::info!("shutdown: closing listeners, finishing in-flight requests");
        let _ = self.stopping_since.set(std::time::Instant::now());
        ShutdownSignal::GracefulTerminate
    }

    fn grace_done(&self) -> bool {
        self.stopping_since
            .get()
            .is_some_and(|t| t.elapsed() >= ACCEPT_DRAIN)
            && self.stats.connections_active.load(Ordering::SeqCst) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_delay_setting() {
        assert_eq!(drain_delay_from(None), Ok(DEFAULT_DRAIN_DELAY));
        assert_eq!(drain_delay_from(Some("0")), Ok(Duration::ZERO));
        assert_eq!(
            drain_delay_from(Some("1.5")),
            Ok(Duration::from_millis(1500))
        );
        assert!(drain_delay_from(Some("-1")).is_err());
        assert!(drain_delay_from(Some("soon")).is_err());
    }
}
