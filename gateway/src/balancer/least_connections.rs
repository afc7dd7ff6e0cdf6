//! Kong's least-connections: the target with the lowest
//! `(connections + 1) / weight` wins. A pick holds a [`ConnGuard`] whose
//! drop gives the connection back, so a request that ends any way at all
//! (error, retry, client gone) never leaks a count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct LeastConnections {
    counts: Vec<Arc<AtomicUsize>>,
    weights: Vec<u32>,
    /// Rotates where ties start, so equal targets share the load.
    tie: AtomicUsize,
}

/// One counted connection to a target; released on drop.
#[derive(Debug)]
pub struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LeastConnections {
    pub fn new(weights: &[u32]) -> LeastConnections {
        LeastConnections {
            counts: weights
                .iter()
                .map(|_| Arc::new(AtomicUsize::new(0)))
                .collect(),
            weights: weights.to_vec(),
            tie: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self, ok: &dyn Fn(usize) -> bool) -> Option<(usize, ConnGuard)> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = self.tie.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let w = self.weights[i];
            if w == 0 || !ok(i) {
                continue;
            }
            let score = (self.counts[i].load(Ordering::Acquire) + 1) as f64 / f64::from(w);
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((i, score));
            }
        }
        let (i, _) = best?;
        let c = self.counts[i].clone();
        c.fetch_add(1, Ordering::AcqRel);
        Some((i, ConnGuard(c)))
    }

    #[cfg(test)]
    pub fn count(&self, i: usize) -> usize {
        self.counts[i].load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn busiest_target_is_avoided_and_guards_release() {
        let lc = LeastConnections::new(&[1, 1, 2]);
        let mut held = Vec::new();
        let mut counts = [0usize; 3];
        for _ in 0..8 {
            let (i, g) = lc.pick(&|_| true).unwrap();
            counts[i] += 1;
            held.push(g);
        }
        // Weight 2 takes twice the open connections.
        assert_eq!(counts, [2, 2, 4]);
        drop(held);
        assert_eq!((lc.count(0), lc.count(1), lc.count(2)), (0, 0, 0));
        assert!(lc.pick(&|_| false).is_none());
    }
}
