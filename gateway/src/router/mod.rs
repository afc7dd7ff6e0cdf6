//! Kong 3.x HTTP router with `router_flavor = traditional_compatible`
//! semantics (`kong/router/transform.lua` + `kong/router/atc.lua`), compiled
//! into an index so that matching is not linear in the number of routes.
//!
//! Each route becomes one or more *matchers* (routes whose paths mix regexes
//! and prefixes of different lengths are split, as Kong does). Matchers are
//! ordered by (priority desc, uuid desc) exactly like atc-router; the index
//! only narrows the candidates, the first matcher in that order whose
//! predicates all hold wins.

mod index;
mod lazy;
mod matcher;
mod uri;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use matcher::path_regex_pattern;
pub use uri::{check_request_path, escape_uri, normalize_path, upstream_uri_v0, PathError};

use index::Index;
use matcher::{Matcher, Req};

/// One configured route, as the router needs it.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    pub id: uuid::Uuid,
    pub name: Option<String>,
    /// Not part of matching in compat (the caller answers 426 etc.).
    pub protocols: Vec<String>,
    pub methods: Vec<String>,
    /// `None` = absent; `Some(vec![])` still sets PLAIN_HOST_ONLY (Kong edge).
    pub hosts: Option<Vec<String>>,
    /// `"/prefix"` or `"~regex"`.
    pub paths: Vec<String>,
    /// Name as configured; values may start with `~*` (regex).
    pub headers: Vec<(String, Vec<String>)>,
    pub snis: Vec<String>,
    pub regex_priority: i64,
    pub strip_path: bool,
    /// Opaque: the caller's index of this route.
    pub index: usize,
}

impl RouteSpec {
    /// This route as the router reads it.
    pub fn view(&self) -> RouteView<'_> {
        RouteView {
            id: self.id,
            name: self.name.as_deref(),
            methods: &self.methods,
            hosts: self.hosts.as_deref(),
            paths: &self.paths,
            headers: &self.headers,
            snis: &self.snis,
            regex_priority: self.regex_priority,
            index: self.index,
        }
    }
}

/// The fields of a [`RouteSpec`] that matching depends on, borrowed (so a
/// caller holding routes in another form need not copy them).
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    pub id: uuid::Uuid,
    pub name: Option<&'a str>,
    pub methods: &'a [String],
    pub hosts: Option<&'a [String]>,
    pub paths: &'a [String],
    pub headers: &'a [(String, Vec<String>)],
    pub snis: &'a [String],
    pub regex_priority: i64,
    pub index: usize,
}

/// The request attributes the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// Raw Host header value, may contain `:port`; None for HTTP/1.0 without Host.
    pub host: Option<&'a str>,
    /// Port used when Host has no port (Kong: `ctx.host_port`).
    pub listener_port: u16,
    /// Already-normalized path (see [`normalize_path`]).
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    pub sni: Option<&'a str>,
    /// `net.protocol == "https"`: SNI predicates only apply then.
    pub https: bool,
}

/// What `strip_path` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedPrefix {
    /// No path was matched (route without paths, or a regex that matched the
    /// empty string): Kong then uses "/".
    Root,
    /// A plain prefix path of the route (the first one, in configuration
    /// order, that matched).
    Prefix(Arc<str>),
    /// The text matched by the first matching regex path. Note it may not
    /// start at offset 0 (`~/a|/b` is only anchored on its first branch);
    /// Kong strips by its length regardless.
    Regex(String),
}

impl MatchedPrefix {
    /// The prefix as Kong's `set_upstream_uri` sees it.
    pub fn as_str(&self) -> &str {
        match self {
            MatchedPrefix::Root => "/",
            MatchedPrefix::Prefix(p) => p,
            MatchedPrefix::Regex(s) => s,
        }
    }
}

/// Result of a successful [`Router::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// `RouteSpec::index` of the matched route.
    pub index: usize,
    /// The route's own id (not the id of a split matcher).
    pub route_id: uuid::Uuid,
    pub matched_prefix: MatchedPrefix,
    /// Regex URI captures (Kong's `uri_captures`), empty when Kong has none
    /// (prefix match, or a regex without participating groups). Entry `i`
    /// for `i` in `0..=group_count` is numbered group `i` as `(None, text)`
    /// (`""` for a group that did not participate, where Kong has nil);
    /// participating named groups follow as `(Some(name), text)`.
    pub captures: Vec<(Option<String>, String)>,
}

/// Why a route set could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("route {route}: invalid {field} {value:?}: {reason}")]
    InvalidField {
        route: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("route {route}: duplicate route id")]
    DuplicateId { route: String },
    #[error("route {route}: no matching field (methods, hosts, headers, paths, snis) set")]
    NoMatchingField { route: String },
}

/// Per-route data returned in matches.
#[derive(Debug)]
struct RouteMeta {
    index: usize,
    id: uuid::Uuid,
}

/// Compiled router. Immutable; rebuild it on configuration changes.
#[derive(Debug)]
pub struct Router {
    routes: Vec<RouteMeta>,
    /// Sorted by (priority desc, id desc): position = rank.
    matchers: Vec<Matcher>,
    index: Index,
    /// Header names any route looks at: Kong's router errors out (→ no match)
    /// when one of them carries a non-UTF-8 value.
    header_names: Vec<http::HeaderName>,
    /// Distinct regex patterns (compiled lazily).
    regexes: usize,
}

impl Router {
    /// Compiles `routes`. Errors name the route (name or id) and the bad field.
    pub fn new(routes: Vec<RouteSpec>) -> Result<Router, RouterError> {
        let views: Vec<RouteView<'_>> = routes.iter().map(RouteSpec::view).collect();
        Router::from_views(&views)
    }

    /// [`Router::new`] on borrowed routes. Regexes are syntax-checked here
    /// and compiled on first use, or by [`Router::warm`].
    pub fn from_views(routes: &[RouteView<'_>]) -> Result<Router, RouterError> {
        let mut metas = Vec::with_capacity(routes.len());
        let mut matchers = Vec::with_capacity(routes.len());
        let mut seen = std::collections::HashSet::with_capacity(routes.len());
        let mut regexes = matcher::RegexCache::default();
        for (pos, spec) in routes.iter().enumerate() {
            if !seen.insert(spec.id) {
                return Err(RouterError::DuplicateId {
                    route: matcher::route_label(spec),
                });
            }
            matcher::compile_route(spec, pos, &mut matchers, &mut regexes)?;
            metas.push(RouteMeta {
                index: spec.index,
                id: spec.id,
            });
        }
        // atc-router iterates a BTreeMap<(priority, uuid)> in reverse.
        matchers.sort_by_key(|m| std::cmp::Reverse((m.priority, m.id)));
        let index = Index::build(&matchers);
        let mut header_names: Vec<http::HeaderName> = matchers
            .iter()
            .flat_map(|m| m.headers.iter().map(|h| h.name.clone()))
            .collect();
        header_names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        header_names.dedup();
        Ok(Router {
            routes: metas,
            matchers,
            index,
            header_names,
            regexes: regexes.len(),
        })
    }

    /// Compiles every regex (and regex set) not compiled yet, stopping early
    /// when `keep_going` says so. Returns how many it compiled. Run once a
    /// new router is live, so requests rarely pay for a first compile.
    pub fn warm(&self, keep_going: &dyn Fn() -> bool) -> usize {
        let mut n = 0;
        for m in &self.matchers {
            if !keep_going() {
                return n;
            }
            n += m.warm();
        }
        n + self.index.warm(keep_going)
    }

    /// Distinct regex patterns among the routes' paths and headers.
    pub fn regex_count(&self) -> usize {
        self.regexes
    }

    /// Number of routes (not of split matchers).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the route Kong would pick for `req`.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<RouteMatch> {
        if !self.header_values_are_utf8(req.headers) {
            return None;
        }
        let r = Req::new(req);
        let rank = self
            .index
            .best(&r, |rank| self.matchers[rank as usize].non_path_ok(&r))?;
        Some(self.build_match(rank as usize, req.path))
    }

    fn header_values_are_utf8(&self, headers: &http::HeaderMap) -> bool {
        self.header_names.iter().all(|n| {
            headers
                .get_all(n)
                .iter()
                .all(|v| std::str::from_utf8(v.as_bytes()).is_ok())
        })
    }

    fn build_match(&self, rank: usize, path: &str) -> RouteMatch {
        let m = &self.matchers[rank];
        let meta = &self.routes[m.route];
        let (matched_prefix, captures) = m.path_result(path);
        RouteMatch {
            index: meta.index,
            route_id: meta.id,
            matched_prefix,
            captures,
        }
    }

    /// Reference matcher: every matcher in order, all predicates. Used by
    /// the tests to check the index.
    #[cfg(test)]
    fn find_naive(&self, req: &RequestInfo<'_>) -> Option<RouteMatch> {
        if !self.header_values_are_utf8(req.headers) {
            return None;
        }
        let r = Req::new(req);
        let rank = self.matchers.iter().position(|m| m.all_ok(&r))?;
        Some(self.build_match(rank, req.path))
    }
}
