//! Kong's latency algorithm: a per-target EWMA of connect + response
//! time, decaying toward new samples with a 10 s time constant; the target
//! with the lowest `ewma / weight` wins. Targets without samples score 0,
//! so each gets tried before the scores settle.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const DECAY_TIME: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
struct Ewma {
    value: f64,
    touched: Option<Instant>,
}

#[derive(Debug)]
pub struct Latency {
    ewma: Vec<Mutex<Ewma>>,
    weights: Vec<u32>,
}

fn decayed(e: Ewma, sample: f64, now: Instant) -> f64 {
    let td = e
        .touched
        .map(|t| now.saturating_duration_since(t).as_secs_f64())
        .unwrap_or(f64::INFINITY);
    let w = (-td / DECAY_TIME).exp();
    e.value * w + sample * (1.0 - w)
}

impl Latency {
    pub fn new(weights: &[u32]) -> Latency {
        Latency {
            ewma: weights
                .iter()
                .map(|_| {
                    Mutex::new(Ewma {
                        value: 0.0,
                        touched: None,
                    })
                })
                .collect(),
            weights: weights.to_vec(),
        }
    }

    fn get(&self, i: usize) -> Ewma {
        *self.ewma[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pick(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let now = Instant::now();
        let mut best: Option<(usize, f64)> = None;
        for i in 0..self.weights.len() {
            let w = self.weights[i];
            if w == 0 || !ok(i) {
                continue;
            }
            // Scoring decays the average toward 0 without storing it.
            let score = decayed(self.get(i), 0.0, now) / f64::from(w);
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Records one try's connect + response time.
    pub fn observe(&self, i: usize, rtt: Duration) {
        let Some(m) = self.ewma.get(i) else { return };
        let mut e = m.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let sample = rtt.as_secs_f64();
        e.value = match e.touched {
            None => sample,
            Some(_) => decayed(*e, sample, now),
        };
        e.touched = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_faster_target_wins_and_old_samples_fade() {
        let l = Latency::new(&[1, 1]);
        l.observe(0, Duration::from_millis(200));
        l.observe(1, Duration::from_millis(20));
        assert_eq!(l.pick(&|_| true), Some(1));
        assert_eq!(l.pick(&|i| i == 0), Some(0));
        // Target 1 gets slow; after a while its average passes target 0's.
        tokio::time::advance(Duration::from_secs(30)).await;
        l.observe(1, Duration::from_millis(900));
        l.observe(0, Duration::from_millis(200));
        assert_eq!(l.pick(&|_| true), Some(0));
        assert_eq!(Latency::new(&[0]).pick(&|_| true), None);
    }
}
