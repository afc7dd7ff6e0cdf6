//! Regexes compiled on first use.
//!
//! Compiling a regex with the `regex` crate costs about 100 µs; a config
//! with a thousand regex routes would spend most of its apply time on it.
//! The router checks each pattern's syntax when it is built (so a bad
//! config is still refused whole) and compiles it the first time a request
//! needs it, or earlier from [`super::Router::warm`], which the gateway
//! runs on a background thread right after a new config goes live.

use std::fmt;
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexSet, RegexSetBuilder};

/// A regex pattern, compiled at most once, shared by every clone.
#[derive(Clone)]
pub(crate) struct LazyRegex(Arc<Lazy>);

struct Lazy {
    pattern: Box<str>,
    /// `None` once compiling has failed: the pattern then matches nothing.
    compiled: OnceLock<Option<Regex>>,
}

/// The syntax check `Regex::new` starts with, with its error text.
pub(crate) fn check_syntax(pattern: &str) -> Result<(), String> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(drop)
        .map_err(|e| e.to_string())
}

impl LazyRegex {
    /// A pattern whose syntax is valid. Patterns with counted repetitions
    /// (the only way a valid pattern gets too big to compile) are compiled
    /// now, so that the error is reported with the config, not later.
    pub(crate) fn new(pattern: &str) -> Result<LazyRegex, String> {
        check_syntax(pattern)?;
        let compiled = OnceLock::new();
        if pattern.contains('{') {
            let re = Regex::new(pattern).map_err(|e| e.to_string())?;
            let _ = compiled.set(Some(re));
        }
        Ok(LazyRegex(Arc::new(Lazy {
            pattern: pattern.into(),
            compiled,
        })))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0.pattern
    }

    /// The compiled regex; compiles it on the first call.
    pub(crate) fn get(&self) -> Option<&Regex> {
        self.0
            .compiled
            .get_or_init(|| match Regex::new(&self.0.pattern) {
                Ok(re) => Some(re),
                Err(e) => {
                    log::error!(
                        "router: regex '{}' does not compile ({e}); it matches nothing",
                        self.0.pattern
                    );
                    None
                }
            })
            .as_ref()
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        self.get().is_some_and(|re| re.is_match(s))
    }

    /// Compiles it if that has not happened yet; true if it did.
    pub(crate) fn warm(&self) -> bool {
        let was = self.0.compiled.get().is_some();
        self.get();
        !was
    }
}

impl fmt::Debug for LazyRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyRegex({:?})", self.0.pattern)
    }
}

/// A `RegexSet` over some [`LazyRegex`]es, built on first use; when it
/// cannot be built, its members are tried one by one.
#[derive(Debug)]
pub(crate) struct LazySet {
    members: Box<[LazyRegex]>,
    set: OnceLock<Option<RegexSet>>,
}

impl LazySet {
    pub(crate) fn new(members: Vec<LazyRegex>) -> LazySet {
        LazySet {
            members: members.into_boxed_slice(),
            set: OnceLock::new(),
        }
    }

    fn set(&self) -> Option<&RegexSet> {
        self.set
            .get_or_init(|| {
                RegexSetBuilder::new(self.members.iter().map(LazyRegex::as_str))
                    .size_limit(64 << 20)
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Calls `found` with the position of each member matching `s`, in
    /// ascending order.
    pub(crate) fn for_each_match(&self, s: &str, mut found: impl FnMut(usize)) {
        match self.set() {
            Some(set) => {
                if set.is_match(s) {
                    for i in set.matches(s).iter() {
                        found(i);
                    }
                }
            }
            None => {
                for (i, re) in self.members.iter().enumerate() {
                    if re.is_match(s) {
                        found(i);
                    }
                }
            }
        }
    }

    /// Builds the set if that has not happened yet; true if it did.
    pub(crate) fn warm(&self) -> bool {
        let was = self.set.get().is_some();
        if self.set().is_none() {
            for re in self.members.iter() {
                re.warm();
            }
        }
        !was
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_are_found_without_compiling() {
        let bad = String::from("^/a(");
        let e = LazyRegex::new(&bad).unwrap_err();
        assert_eq!(e, Regex::new(&bad).unwrap_err().to_string());
        assert!(LazyRegex::new("(?<=a)b").is_err());
    }

    #[test]
    fn compiles_once_on_first_use() {
        let re = LazyRegex::new(r"^/users/\d+$").unwrap();
        let twin = re.clone();
        assert!(re.0.compiled.get().is_none());
        assert!(twin.is_match("/users/12"));
        assert!(re.0.compiled.get().is_some());
        assert!(!re.warm());
        assert!(!re.is_match("/users/x"));
    }

    #[test]
    fn counted_repetitions_are_compiled_up_front() {
        let re = LazyRegex::new(r"^/a{2}$").unwrap();
        assert!(re.0.compiled.get().is_some());
        // Valid syntax, too big to compile: refused when built.
        let e = LazyRegex::new(r"^(\w{1000}){1000}$").unwrap_err();
        assert!(e.contains("size limit"), "{e}");
    }

    #[test]
    fn sets_report_members_in_order_and_fall_back() {
        let members: Vec<LazyRegex> = ["^/a", "^/a/b", "^/c"]
            .iter()
            .map(|p| LazyRegex::new(p).unwrap())
            .collect();
        let set = LazySet::new(members);
        let mut hits = Vec::new();
        set.for_each_match("/a/b", |i| hits.push(i));
        assert_eq!(hits, vec![0, 1]);
        assert!(!set.warm());
    }
}
