//! Candidate index over the sorted matchers.
//!
//! Matchers are bucketed by host pattern (exact name, `*.suffix`,
//! `prefix.*`, odd wildcard shapes, no host); inside a bucket by path
//! (no path, plain prefix looked up by length, regexes in a `RegexSet`).
//! Candidate lists hold ranks (position in the global order) ascending, so
//! a lookup keeps the best rank seen and stops scanning a list as soon as
//! it cannot improve on it.

use super::lazy::{LazyRegex, LazySet};

use super::matcher::{HostKind, Matcher, PathPred, Req};

/// Keys come from configuration only (requests just look up), so flooding
/// is not a concern and SipHash would dominate lookups.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Below this many distinct regexes a group tests them one by one (no
/// allocation); above, `RegexSet` passes say which ones match.
const REGEX_SET_MIN: usize = 4;
/// Patterns per `RegexSet`: one huge set overflows the lazy DFA cache and
/// falls back to a much slower engine.
const REGEX_SET_CHUNK: usize = 32;

#[derive(Debug)]
enum RegexIdx {
    List(Vec<(LazyRegex, Box<[u32]>)>),
    Sets(Vec<SetChunk>),
}

#[derive(Debug)]
struct SetChunk {
    set: LazySet,
    /// Owner ranks per pattern of `set`.
    owners: Vec<Box<[u32]>>,
    /// Best owner rank in this chunk.
    min: u32,
}

#[derive(Debug)]
struct RegexGroup {
    min_rank: u32,
    idx: RegexIdx,
}

impl RegexGroup {
    fn lookup(&self, path: &str, best: &mut u32, check: &impl Fn(u32) -> bool) {
        if self.min_rank >= *best {
            return;
        }
        match &self.idx {
            RegexIdx::List(list) => {
                for (re, owners) in list {
                    if owners.first().is_some_and(|&r| r < *best) && re.is_match(path) {
                        scan(owners, best, check);
                    }
                }
            }
            RegexIdx::Sets(sets) => {
                for c in sets {
                    if c.min < *best {
                        c.set
                            .for_each_match(path, |i| scan(&c.owners[i], best, check));
                    }
                }
            }
        }
    }
}

/// The literal text every match of `pattern` (as compiled: `^` + route
/// regex) must start with, or "" when that cannot be told cheaply. Only
/// used to narrow candidates, so being conservative is always safe.
fn literal_prefix(pattern: &str) -> &str {
    let Some(body) = pattern.strip_prefix('^') else {
        return "";
    };
    // An alternation anywhere may make the start optional ("^/a|/b").
    if body.contains('|') {
        return "";
    }
    let end = body
        .bytes()
        .position(|b| {
            !(b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'-'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'@'
                        | b'='
                        | b','
                        | b';'
                        | b':'
                        | b'!'
                        | b'&'
                        | b'\''
                        | b'"'
                ))
        })
        .unwrap_or(body.len());
    let mut lit = &body[..end];
    // A quantifier makes the last literal byte optional or repeated.
    if matches!(body.as_bytes().get(end), Some(b'?' | b'*' | b'{' | b'+')) {
        lit = &lit[..lit.len().saturating_sub(1)];
    }
    lit
}

fn regex_group(mut regexes: Vec<(LazyRegex, Vec<u32>)>) -> RegexGroup {
    // Best candidates first, so lookups can stop early.
    regexes.sort_by_key(|(_, o)| o.first().copied().unwrap_or(u32::MAX));
    let min_rank = regexes
        .first()
        .and_then(|(_, o)| o.first().copied())
        .unwrap_or(u32::MAX);
    let idx = if regexes.len() >= REGEX_SET_MIN {
        let sets = regexes
            .chunks(REGEX_SET_CHUNK)
            .map(|chunk| {
                let owners: Vec<Box<[u32]>> = chunk
                    .iter()
                    .map(|(_, o)| o.clone().into_boxed_slice())
                    .collect();
                let min = owners
                    .iter()
                    .filter_map(|o| o.first().copied())
                    .min()
                    .unwrap_or(u32::MAX);
                // Built on first use; one that cannot be built tries its
                // members one by one.
                let set = LazySet::new(chunk.iter().map(|(r, _)| r.clone()).collect());
                SetChunk { set, owners, min }
            })
            .collect();
        RegexIdx::Sets(sets)
    } else {
        RegexIdx::List(
            regexes
                .into_iter()
                .map(|(r, o)| (r, o.into_boxed_slice()))
                .collect(),
        )
    };
    RegexGroup { min_rank, idx }
}

impl RegexGroup {
    /// Builds the regex sets (members of list groups belong to matchers,
    /// which warm them); how many were not built yet.
    fn warm(&self) -> usize {
        match &self.idx {
            RegexIdx::List(_) => 0,
            RegexIdx::Sets(sets) => sets.iter().filter(|c| c.set.warm()).count(),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    min_rank: u32,
    nopath: Box<[u32]>,
    /// Distinct prefix lengths, ascending.
    prefix_lens: Box<[usize]>,
    prefixes: FxMap<Box<str>, Box<[u32]>>,
    regex_min_rank: u32,
    /// Regexes without a usable literal prefix.
    regex_any: Option<RegexGroup>,
    /// Regexes grouped by the literal prefix they require.
    regex_lit_lens: Box<[usize]>,
    regex_lit: FxMap<Box<str>, RegexGroup>,
}

#[derive(Default)]
struct BucketBuilder {
    nopath: Vec<u32>,
    prefixes: FxMap<Box<str>, Vec<u32>>,
    /// pattern → (compiled, owner ranks)
    regexes: Vec<(LazyRegex, Vec<u32>)>,
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
                    let i = *self
                        .regex_pos
                        .entry(re.as_str().to_owned())
                        .or_insert_with(|| {
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

        let mut any_re = Vec::new();
        let mut by_lit: FxMap<Box<str>, Vec<(LazyRegex, Vec<u32>)>> = FxMap::default();
        for (re, owners) in self.regexes {
            let lit = literal_prefix(re.as_str());
            if lit.len() > 1 {
                by_lit.entry(lit.into()).or_default().push((re, owners));
            } else {
                any_re.push((re, owners));
            }
        }
        let regex_any = (!any_re.is_empty()).then(|| regex_group(any_re));
        let mut regex_lit_lens: Vec<usize> = by_lit.keys().map(|k| k.len()).collect();
        regex_lit_lens.sort_unstable();
        regex_lit_lens.dedup();
        let regex_lit: FxMap<Box<str>, RegexGroup> = by_lit
            .into_iter()
            .map(|(k, v)| (k, regex_group(v)))
            .collect();
        let regex_min_rank = regex_lit
            .values()
            .map(|g| g.min_rank)
            .chain(regex_any.as_ref().map(|g| g.min_rank))
            .min()
            .unwrap_or(u32::MAX);

        let min_rank = [
            self.nopath.first().copied().unwrap_or(u32::MAX),
            prefixes
                .values()
                .filter_map(|v| v.first().copied())
                .min()
                .unwrap_or(u32::MAX),
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
            regex_any,
            regex_lit_lens: regex_lit_lens.into_boxed_slice(),
            regex_lit,
        }
    }
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
    fn warm(&self, keep_going: &dyn Fn() -> bool) -> usize {
        let mut n = 0;
        for g in self.regex_any.iter().chain(self.regex_lit.values()) {
            if !keep_going() {
                break;
            }
            n += g.warm();
        }
        n
    }

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
        for &len in self.regex_lit_lens.iter() {
            if len > path.len() {
                break;
            }
            if let Some(g) = path.get(..len).and_then(|k| self.regex_lit.get(k)) {
                g.lookup(path, best, check);
            }
        }
        if let Some(g) = &self.regex_any {
            g.lookup(path, best, check);
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

    /// Builds every regex set not built yet; how many.
    pub(crate) fn warm(&self, keep_going: &dyn Fn() -> bool) -> usize {
        std::iter::once(&self.any)
            .chain(self.exact.values())
            .chain(self.suffix.values())
            .chain(self.prefix.values())
            .chain(self.other.iter())
            .map(|b| b.warm(keep_going))
            .sum()
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
