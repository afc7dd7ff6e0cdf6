//! Candidate index over the sorted matchers.
//!
//! Matchers are bucketed by host pattern (exact name, `*.suffix`,
//! `prefix.*`, odd wildcard shapes, no host); inside a bucket by path
//! (no path, plain prefix looked up by length, regexes in a `RegexSet`).
//! Candidate lists hold ranks (position in the global order) ascending, so
//! a lookup keeps the best rank seen and stops scanning a list as soon as
//! it cannot improve on it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use regex::{Regex, RegexSet, RegexSetBuilder};

use super::matcher::{HostKind, Matcher, PathPred, Req};

/// Small non-keyed hasher: keys come from configuration only (requests just
/// look up), so flooding is not a concern and SipHash would dominate lookups.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Below this many distinct regexes a bucket tests them one by one (no
/// allocation); above, one `RegexSet` pass says which ones match.
const REGEX_SET_MIN: usize = 4;

#[derive(Debug)]
enum RegexIdx {
    List(Vec<(Regex, Box<[u32]>)>),
    Set {
        set: RegexSet,
        owners: Vec<Box<[u32]>>,
    },
}

#[derive(Debug)]
struct Bucket {
    min_rank: u32,
    nopath: Box<[u32]>,
    /// Distinct prefix lengths, ascending.
    prefix_lens: Box<[usize]>,
    prefixes: FxMap<Box<str>, Box<[u32]>>,
    regex_min_rank: u32,
    regexes: RegexIdx,
}

#[derive(Default)]
struct BucketBuilder {
    nopath: Vec<u32>,
    prefixes: FxMap<Box<str>, Vec<u32>>,
    /// pattern → (compiled, owner ranks)
    regexes: Vec<(Regex, Vec<u32>)>,
    regex_pos: FxMap<String, usize>,
}

impl BucketBuilder {
    fn add(&mut self, rank: u32, m: &Matcher) {
        match &m.paths {
            None => {
                if self.nopath.last() != Some(&rank) {
                    self.nopath.push(rank);
                }
            }
            Some(PathPred::Prefixes(ps)) => {
                for p in ps {
                    let list = self.prefixes.entry(Box::from(&**p)).or_default();
                    if list.last() != Some(&rank) {
                        list.push(rank);
                    }
                }
            }
            Some(PathPred::Regexes(rs)) => {
                for re in rs {
                    let i = *self.regex_pos.entry(re.as_str().to_owned()).or_insert_with(|| {
                        self.regexes.push((re.clone(), Vec::new()));
                        self.regexes.len() - 1
                    });
                    let owners = &mut self.regexes[i].1;
                    if owners.last() != Some(&rank) {
                        owners.push(rank);
                    }
                }
            }
        }
    }

    fn build(self) -> Bucket {
        // Ranks are added in ascending order, so every list is sorted.
        let mut prefix_lens: Vec<usize> = self.prefixes.keys().map(|k| k.len()).collect();
        prefix_lens.sort_unstable();
        prefix_lens.dedup();
        let prefixes: FxMap<Box<str>, Box<[u32]>> = self
            .prefixes
            .into_iter()
            .map(|(k, v)| (k, v.into_boxed_slice()))
            .collect();
        let regex_min_rank = self
            .regexes
            .iter()
            .filter_map(|(_, o)| o.first().copied())
            .min()
            .unwrap_or(u32::MAX);
        let regexes = build_regex_idx(self.regexes);
        let min_rank = [
            self.nopath.first().copied().unwrap_or(u32::MAX),
            prefixes.values().filter_map(|v| v.first().copied()).min().unwrap_or(u32::MAX),
            regex_min_rank,
        ]
        .into_iter()
        .min()
        .unwrap_or(u32::MAX);
        Bucket {
            min_rank,
            nopath: self.nopath.into_boxed_slice(),
            prefix_lens: prefix_lens.into_boxed_slice(),
            prefixes,
            regex_min_rank,
            regexes,
        }
    }
}

fn build_regex_idx(mut regexes: Vec<(Regex, Vec<u32>)>) -> RegexIdx {
    // Best candidates first, so the list form can stop early.
    regexes.sort_by_key(|(_, o)| o.first().copied().unwrap_or(u32::MAX));
    if regexes.len() >= REGEX_SET_MIN {
        let set = RegexSetBuilder::new(regexes.iter().map(|(r, _)| r.as_str()))
            .size_limit(64 << 20)
            .build();
        // Each pattern compiled alone already; a set too big to build just
        // falls back to the list form.
        if let Ok(set) = set {
            return RegexIdx::Set {
                set,
                owners: regexes.into_iter().map(|(_, o)| o.into_boxed_slice()).collect(),
            };
        }
    }
    RegexIdx::List(
        regexes
            .into_iter()
            .map(|(r, o)| (r, o.into_boxed_slice()))
            .collect(),
    )
}

/// Scans one rank-sorted candidate list.
#[inline]
fn scan(list: &[u32], best: &mut u32, check: &impl Fn(u32) -> bool) {
    for &r in list {
        if r >= *best {
            return;
        }
        if check(r) {
            *best = r;
            return;
        }
    }
}

impl Bucket {
    fn lookup(&self, path: &str, best: &mut u32, check: &impl Fn(u32) -> bool) {
        if self.min_rank >= *best {
            return;
        }
        scan(&self.nopath, best, check);
        for &len in self.prefix_lens.iter() {
            if len > path.len() {
                break;
            }
            if let Some(list) = path.get(..len).and_then(|k| self.prefixes.get(k)) {
                scan(list, best, check);
            }
        }
        if self.regex_min_rank >= *best {
            return;
        }
        match &self.regexes {
            RegexIdx::List(list) => {
                for (re, owners) in list {
                    if owners.first().is_some_and(|&r| r < *best) && re.is_match(path) {
                        scan(owners, best, check);
                    }
                }
            }
            RegexIdx::Set { set, owners } => {
                if set.is_match(path) {
                    for i in set.matches(path).iter() {
                        scan(&owners[i], best, check);
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Index {
    any: Bucket,
    exact: FxMap<Box<str>, Bucket>,
    /// Keyed by the suffix after '*', which starts with '.'.
    suffix: FxMap<Box<str>, Bucket>,
    /// Keyed by the prefix before '*', which ends with '.'.
    prefix: FxMap<Box<str>, Bucket>,
    /// Wildcards of other shapes (not produced by Kong's schema): the host
    /// predicate is checked on each candidate anyway.
    other: Option<Bucket>,
}

impl Index {
    pub(crate) fn build(matchers: &[Matcher]) -> Index {
        let mut any = BucketBuilder::default();
        let mut exact: FxMap<Box<str>, BucketBuilder> = FxMap::default();
        let mut suffix: FxMap<Box<str>, BucketBuilder> = FxMap::default();
        let mut prefix: FxMap<Box<str>, BucketBuilder> = FxMap::default();
        let mut other = BucketBuilder::default();
        let mut has_other = false;
        for (rank, m) in matchers.iter().enumerate() {
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            if m.hosts.is_empty() {
                any.add(rank, m);
                continue;
            }
            // Several patterns of one matcher may share a bucket: `add` dedups
            // consecutive ranks.
            for h in &m.hosts {
                let v = &*h.value;
                let b = match h.kind {
                    HostKind::Exact => exact.entry(v.into()).or_default(),
                    HostKind::Suffix if v.starts_with('.') => suffix.entry(v.into()).or_default(),
                    HostKind::Prefix if v.ends_with('.') => prefix.entry(v.into()).or_default(),
                    _ => {
                        has_other = true;
                        &mut other
                    }
                };
                b.add(rank, m);
            }
        }
        let done = |m: FxMap<Box<str>, BucketBuilder>| -> FxMap<Box<str>, Bucket> {
            m.into_iter().map(|(k, b)| (k, b.build())).collect()
        };
        Index {
            any: any.build(),
            exact: done(exact),
            suffix: done(suffix),
            prefix: done(prefix),
            other: has_other.then(|| other.build()),
        }
    }

    /// Rank of the best matcher whose path predicate holds (by construction)
    /// and for which `check` (all other predicates) holds.
    pub(crate) fn best(&self, r: &Req<'_>, check: impl Fn(u32) -> bool) -> Option<u32> {
        let mut best = u32::MAX;
        let path = r.path;
        if let Some(host) = r.host {
            if let Some(b) = self.exact.get(host) {
                b.lookup(path, &mut best, &check);
            }
            if !self.suffix.is_empty() || !self.prefix.is_empty() {
                for (i, c) in host.bytes().enumerate() {
                    if c != b'.' {
                        continue;
                    }
                    if let Some(b) = self.suffix.get(&host[i..]) {
                        b.lookup(path, &mut best, &check);
                    }
                    if let Some(b) = self.prefix.get(&host[..=i]) {
                        b.lookup(path, &mut best, &check);
                    }
                }
            }
            if let Some(b) = &self.other {
                b.lookup(path, &mut best, &check);
            }
        }
        self.any.lookup(path, &mut best, &check);
        (best != u32::MAX).then_some(best)
    }
}
