//! Kong's weighted round-robin: a wheel with `weight / gcd` slots per
//! target, shuffled once when built, walked by one shared pointer. A full
//! turn gives each target exactly its share; the shuffle spreads targets
//! over the turn as Kong's does.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::seq::SliceRandom;

#[derive(Debug)]
pub struct RoundRobin {
    wheel: Vec<usize>,
    pointer: AtomicUsize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> RoundRobin {
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        let mut wheel = Vec::new();
        for (i, w) in weights.iter().enumerate() {
            // g is 0 only when every weight is: an empty wheel.
            let slots = w.checked_div(g).unwrap_or(0);
            wheel.extend(std::iter::repeat_n(i, slots as usize));
        }
        wheel.shuffle(&mut rand::thread_rng());
        RoundRobin {
            wheel,
            pointer: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.wheel.len()
    }

    /// The next slot whose target `ok` accepts, or `None` after a full turn.
    pub fn pick(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.wheel.len();
        for _ in 0..n {
            let p = self.pointer.fetch_add(1, Ordering::Relaxed) % n;
            let t = self.wheel[p];
            if ok(t) {
                return Some(t);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_over_a_full_turn_and_weight_zero_never() {
        let rr = RoundRobin::new(&[30, 10, 0, 20]);
        assert_eq!(rr.slots(), 6);
        let mut counts = [0usize; 4];
        for _ in 0..600 {
            counts[rr.pick(&|_| true).unwrap_or(99)] += 1;
        }
        assert_eq!(counts, [300, 100, 0, 200]);
    }

    #[test]
    fn unavailable_targets_are_skipped() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        for _ in 0..10 {
            assert_eq!(rr.pick(&|i| i == 2), Some(2));
        }
        assert_eq!(rr.pick(&|_| false), None);
        assert_eq!(RoundRobin::new(&[0, 0]).pick(&|_| true), None);
    }
}
