//! Kong's consistent-hashing: a continuum of `slots` points (1000 when
//! `slots` is out of 1000..=2^32), each target taking
//! `weight / total * targets * 160` points placed by xxhash32 of
//! `"<ip>::<port> <i>"` (Kong's key, double colon included), collisions
//! pushed to the next `i`. A request's value hashes to a point; the walk
//! goes down from it to the first usable target. Same key, same hash
//! function and order as Kong, so a value lands on the target Kong picks.

const SERVER_POINTS: u64 = 160;
const MIN_POINTS: u64 = 1000;

#[derive(Debug)]
pub struct ConsistentHash {
    continuum: Vec<Option<usize>>,
}

impl ConsistentHash {
    /// `targets`: (host as in the target, port, weight), in config order.
    pub fn new(targets: &[(String, u16, u32)], slots: u32) -> ConsistentHash {
        let points = if u64::from(slots) >= MIN_POINTS {
            u64::from(slots)
        } else {
            MIN_POINTS
        };
        let mut continuum: Vec<Option<usize>> = vec![None; points as usize];
        let total: u64 = targets.iter().map(|t| u64::from(t.2)).sum();
        // Kong sorts by name then port before placing points.
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by(|&a, &b| (&targets[a].0, targets[a].1).cmp(&(&targets[b].0, targets[b].1)));
        let count = targets.len() as u64;
        for i in order {
            let (host, port, weight) = &targets[i];
            if *weight == 0 || total == 0 {
                continue;
            }
            let mut entries = (u64::from(*weight) * count * SERVER_POINTS) / total;
            if entries == 0 {
                entries = 1;
            }
            let mut n = 1u64;
            while n <= entries {
                let key = format!("{host}::{port} {n}");
                let idx = (xxhash32(key.as_bytes()) as u64 % points) as usize;
                if continuum[idx].is_none() {
                    continuum[idx] = Some(i);
                } else {
                    entries += 1;
                }
                n += 1;
                if n > points {
                    log::error!("consistent-hashing continuum too small for its targets");
                    break;
                }
            }
        }
        ConsistentHash { continuum }
    }

    /// The target for `value`: its point, then downwards (wrapping).
    pub fn pick(&self, value: &str, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.continuum.len();
        if n == 0 {
            return None;
        }
        let start = xxhash32(value.as_bytes()) as usize % n;
        for step in 0..n {
            let idx = (start + n - step) % n;
            if let Some(t) = self.continuum[idx] {
                if ok(t) {
                    return Some(t);
                }
            }
        }
        None
    }
}

/// xxHash32 with seed 0 (what Kong's `luaxxhash` computes).
pub fn xxhash32(input: &[u8]) -> u32 {
    xxhash_rust::xxh32::xxh32(input, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxhash32_reference_values() {
        assert_eq!(xxhash32(b""), 0x02CC_5D05);
        assert_eq!(xxhash32(b"a"), 0x550D_7456);
        assert_eq!(xxhash32(b"abc"), 0x32D1_53FF);
        assert_eq!(
            xxhash32(b"Nobody inspects the spammish repetition"),
            0xE229_3B2F
        );
    }

    fn targets(n: u16) -> Vec<(String, u16, u32)> {
        (0..n)
            .map(|i| ("10.0.0.1".to_string(), 8000 + i, 100))
            .collect()
    }

    #[test]
    fn same_value_same_target_and_spread() {
        let ch = ConsistentHash::new(&targets(4), 10000);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let v = format!("client-{i}");
            let a = ch.pick(&v, &|_| true).unwrap_or(99);
            assert_eq!(Some(a), ch.pick(&v, &|_| true));
            counts[a] += 1;
        }
        assert!(counts.iter().all(|c| *c > 500), "{counts:?}");
    }

    #[test]
    fn removing_a_target_moves_only_its_values() {
        let ch = ConsistentHash::new(&targets(4), 10000);
        for i in 0..500 {
            let v = format!("v{i}");
            let before = ch.pick(&v, &|_| true).unwrap_or(99);
            let after = ch.pick(&v, &|t| t != 2).unwrap_or(99);
            if before != 2 {
                assert_eq!(before, after);
            } else {
                assert_ne!(after, 2);
            }
        }
        assert_eq!(ch.pick("x", &|_| false), None);
    }
}
