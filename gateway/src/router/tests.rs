//! Router tests: cases ported from Kong's spec/01-unit/08-router_spec.lua
//! (flavor traditional_compatible), the path-handling fixture table (v0
//! rows), kong.tools.uri specs, and an index-vs-naive property test.

use super::*;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

fn id(n: u32) -> uuid::Uuid {
    // Kong's fixture ids: e8fb37f1-102d-461e-9c51-6608a6bb81NN
    uuid::Uuid::parse_str(&format!("e8fb37f1-102d-461e-9c51-6608a6bb{n:04x}")).expect("uuid")
}

/// Route builder; `n` is the hex tail of Kong's fixture id (0x8101 → ...8101).
#[derive(Clone, Default)]
struct R(RouteSpec);

fn r(n: u32) -> R {
    R(RouteSpec {
        id: id(n),
        protocols: vec!["http".into(), "https".into()],
        strip_path: true,
        index: n as usize,
        ..Default::default()
    })
}

impl R {
    fn hosts(mut self, h: &[&str]) -> Self {
        self.0.hosts = Some(h.iter().map(|s| s.to_string()).collect());
        self
    }
    fn paths(mut self, p: &[&str]) -> Self {
        self.0.paths = p.iter().map(|s| s.to_string()).collect();
        self
    }
    fn methods(mut self, m: &[&str]) -> Self {
        self.0.methods = m.iter().map(|s| s.to_string()).collect();
        self
    }
    fn header(mut self, name: &str, vals: &[&str]) -> Self {
        self.0
            .headers
            .push((name.into(), vals.iter().map(|s| s.to_string()).collect()));
        self
    }
    fn snis(mut self, s: &[&str]) -> Self {
        self.0.snis = s.iter().map(|s| s.to_string()).collect();
        self
    }
    fn regex_priority(mut self, p: i64) -> Self {
        self.0.regex_priority = p;
        self
    }
    fn strip(mut self, s: bool) -> Self {
        self.0.strip_path = s;
        self
    }
}

fn router(routes: &[R]) -> Router {
    Router::new(routes.iter().map(|r| r.0.clone()).collect()).expect("router builds")
}

/// A request, like Kong's `router:select(method, uri, host, scheme, ..., sni, headers)`.
struct Q {
    method: &'static str,
    path: String,
    host: Option<String>,
    port: u16,
    headers: HeaderMap,
    sni: Option<String>,
    https: bool,
}

fn q(method: &'static str, path: &str, host: Option<&str>) -> Q {
    Q {
        method,
        path: path.into(),
        host: host.map(Into::into),
        port: 8000,
        headers: HeaderMap::new(),
        sni: None,
        https: false,
    }
}

impl Q {
    fn h(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn https(mut self, sni: Option<&str>) -> Self {
        self.https = true;
        self.sni = sni.map(Into::into);
        self
    }
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: self.method,
            host: self.host.as_deref(),
            listener_port: self.port,
            path: &self.path,
            headers: &self.headers,
            sni: self.sni.as_deref(),
            https: self.https,
        }
    }
}

/// Finds with both the index and the naive matcher, checks they agree.
fn find(rt: &Router, req: &Q) -> Option<RouteMatch> {
    let a = rt.find(&req.info());
    let b = rt.find_naive(&req.info());
    assert_eq!(a, b, "index and naive matcher disagree");
    a
}

/// Fixture tail of the matched route id, or None.
fn hit(rt: &Router, req: Q) -> Option<u32> {
    find(rt, &req).map(|m| m.index as u32)
}

fn get(path: &str, host: &str) -> Q {
    q("GET", path, Some(host))
}

// ---------------------------------------------------------------------------
// select() with the big shared use case of 08-router_spec
// ---------------------------------------------------------------------------

fn select_use_case() -> Vec<R> {
    vec![
        r(0x8101).hosts(&["domain-1.org", "domain-2.org"]),
        r(0x8102).methods(&["TRACE"]),
        r(0x8103).paths(&["/my-route"]),
        r(0x8104)
            .paths(&["/route-4"])
            .hosts(&["domain-1.org", "domain-2.org"]),
        r(0x8105)
            .hosts(&["domain-1.org", "domain-2.org"])
            .methods(&["POST", "PUT", "PATCH"]),
        r(0x8106)
            .methods(&["POST", "PUT", "PATCH"])
            .paths(&["/route-6"]),
        r(0x8107)
            .hosts(&["domain-with-uri-1.org", "domain-with-uri-2.org"])
            .methods(&["POST", "PUT", "PATCH"])
            .paths(&["/my-route-uri"]),
        r(0x8108).paths(&["/serviceless"]),
        r(0x8109).header("location", &["my-location-1", "my-location-2"]),
        r(0x8110)
            .header("location", &["my-location-1"])
            .header("version", &["v1", "v2"]),
        r(0x8111)
            .header("location", &["my-location-1", "my-location-2"])
            .paths(&["/headers-uri"]),
        r(0x8112)
            .hosts(&["domain-with-headers-1.org", "domain-with-headers-2.org"])
            .header("location", &["my-location-1", "my-location-2"])
            .methods(&["POST", "PUT", "PATCH"])
            .paths(&["/headers-host-uri-method"]),
        r(0x8113).hosts(&["domain-1.org:321", "domain-2.org"]),
        r(0x8114).hosts(&["domain-3.org:321"]),
        r(0x8115).header(
            "user_agent",
            &[r"~*windows|linux|os\s+x\s*[\d\._]+|solaris|bsd"],
        ),
    ]
}

#[test]
fn select_host() {
    let rt = router(&select_use_case());
    let m = find(&rt, &get("/", "domain-1.org")).expect("match");
    assert_eq!(m.index, 0x8101);
    assert!(m.captures.is_empty());
    assert_eq!(m.matched_prefix, MatchedPrefix::Root);
}

#[test]
fn select_host_ignores_default_port() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/", "domain-1.org:80")), Some(0x8101));
}

#[test]
fn select_host_matches_specific_port() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/", "domain-1.org:321")), Some(0x8113));
}

#[test]
fn select_host_matches_specific_port_on_port_only_route() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/", "domain-3.org:321")), Some(0x8114));
}

#[test]
fn select_host_fails_just_because_of_port_on_port_only_route() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/", "domain-3.org:123")), None);
}

#[test]
fn select_uri() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/my-route", "domain.org")), Some(0x8103));
}

#[test]
fn select_uri_empty_host() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, q("GET", "/my-route-uri", Some(""))), Some(0x8103));
    // HTTP/1.0 without Host at all
    assert_eq!(hit(&rt, q("GET", "/my-route-uri", None)), Some(0x8103));
}

#[test]
fn select_method() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, q("TRACE", "/", Some("domain.org"))), Some(0x8102));
}

#[test]
fn select_host_uri() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/route-4", "domain-1.org")), Some(0x8104));
}

#[test]
fn select_host_method() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, q("POST", "/", Some("domain-1.org"))), Some(0x8105));
}

#[test]
fn select_uri_method() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(&rt, q("PUT", "/route-6", Some("domain.org"))),
        Some(0x8106)
    );
}

#[test]
fn select_host_uri_method() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(
            &rt,
            q("PUT", "/my-route-uri", Some("domain-with-uri-2.org"))
        ),
        Some(0x8107)
    );
}

#[test]
fn single_headers_value() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("location", "my-location-1")),
        Some(0x8109)
    );
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("location", "my-location-2")),
        Some(0x8109)
    );
    assert_eq!(
        hit(
            &rt,
            q("GET", "/", None)
                .h("location", "my-location-3")
                .h("location", "my-location-2")
        ),
        Some(0x8109)
    );
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("location", "my-location-3")),
        None
    );
    assert_eq!(
        hit(
            &rt,
            q("GET", "/", None)
                .h("location", "my-location-3")
                .h("location", "foo")
        ),
        None
    );
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.116 Safari/537.36";
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("user-agent", ua)),
        Some(0x8115)
    );
}

#[test]
fn multiple_headers_values() {
    let rt = router(&select_use_case());
    let base = || q("GET", "/", None);
    assert_eq!(
        hit(
            &rt,
            base().h("location", "my-location-1").h("version", "v1")
        ),
        Some(0x8110)
    );
    assert_eq!(
        hit(
            &rt,
            base().h("location", "my-location-1").h("version", "v2")
        ),
        Some(0x8110)
    );
    assert_eq!(
        hit(
            &rt,
            base()
                .h("location", "my-location-3")
                .h("location", "my-location-1")
                .h("version", "v2")
        ),
        Some(0x8110)
    );
    // fallback to Route 9
    assert_eq!(
        hit(
            &rt,
            base()
                .h("location", "my-location-3")
                .h("location", "my-location-2")
                .h("version", "v2")
        ),
        Some(0x8109)
    );
}

#[test]
fn headers_uri() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(
            &rt,
            q("GET", "/headers-uri", None).h("location", "my-location-2")
        ),
        Some(0x8111)
    );
}

#[test]
fn host_headers_uri_method() {
    let rt = router(&select_use_case());
    let req = q(
        "PUT",
        "/headers-host-uri-method",
        Some("domain-with-headers-1.org"),
    )
    .h("location", "my-location-2");
    assert_eq!(hit(&rt, req), Some(0x8112));
}

#[test]
fn serviceless() {
    let rt = router(&select_use_case());
    let m = find(&rt, &q("GET", "/serviceless", None)).expect("match");
    assert_eq!(m.index, 0x8108);
    assert!(m.captures.is_empty());
}

#[test]
fn matches_when_given_uri_is_in_request_uri_prefix() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(&rt, get("/my-route/some/path", "domain.org")),
        Some(0x8103)
    );
}

// misses
#[test]
fn misses_invalid_host() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/", "domain-3.org")), None);
}

#[test]
fn misses_invalid_host_in_host_uri() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/route-4", "domain-3.org")), None);
}

#[test]
fn misses_invalid_method_in_host_uri_method() {
    let rt = router(&select_use_case());
    assert_eq!(hit(&rt, get("/some-uri", "domain-with-uri-2.org")), None);
}

#[test]
fn misses_invalid_uri_in_host_uri_method() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(
            &rt,
            q("PUT", "/some-uri-foo", Some("domain-with-uri-2.org"))
        ),
        None
    );
}

#[test]
fn does_not_match_when_given_uri_is_in_uri_but_not_in_prefix() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(&rt, get("/some-other-prefix/my-route", "domain.org")),
        None
    );
}

#[test]
fn misses_invalid_headers() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("location", "invalid-location")),
        None
    );
}

#[test]
fn misses_invalid_headers_in_headers_uri() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(
            &rt,
            q("GET", "/headers-uri", None).h("location", "invalid-location")
        ),
        None
    );
}

#[test]
fn misses_invalid_headers_in_headers_uri_method() {
    let rt = router(&select_use_case());
    assert_eq!(
        hit(
            &rt,
            q("PUT", "/headers-uri-method", None).h("location", "invalid-location")
        ),
        None
    );
}

#[test]
fn misses_invalid_headers_in_headers_host_uri_method() {
    let rt = router(&select_use_case());
    let req = q(
        "PUT",
        "/headers-host-uri-method",
        Some("domain-with-headers-1.org"),
    )
    .h("location", "invalid-location");
    assert_eq!(hit(&rt, req), None);
}

// root / [uri]
fn with_root() -> Vec<R> {
    let mut v = select_use_case();
    v.insert(0, r(0x810f).paths(&["/"]));
    v
}

#[test]
fn root_uri_request_with_method() {
    assert_eq!(
        hit(&router(&with_root()), get("/", "domain.org")),
        Some(0x810f)
    );
}

#[test]
fn root_uri_does_not_supersede_another_route() {
    let rt = router(&with_root());
    assert_eq!(hit(&rt, get("/my-route", "domain.org")), Some(0x8103));
    assert_eq!(
        hit(&rt, get("/my-route/hello/world", "domain.org")),
        Some(0x8103)
    );
}

#[test]
fn root_uri_acts_as_a_catch_all_route() {
    assert_eq!(
        hit(&router(&with_root()), get("/foobar/baz", "domain.org")),
        Some(0x810f)
    );
}

#[test]
fn multiple_routes_of_same_category_with_conflicting_values_matches_correct_route() {
    let mut v = select_use_case();
    for i in 1..=5 {
        v.push(r(0x8110 + i).hosts(&["domain.org"]).paths(&["/my-uri"]));
    }
    // ids ...8111..8115 are taken by the use case above: use fresh ones
    for (k, rr) in v.iter_mut().rev().take(5).enumerate() {
        rr.0.id = id(0x8200 + k as u32);
        rr.0.index = 0x8200 + k;
    }
    v.push(r(0x8121).hosts(&["domain.org"]).paths(&["/my-target-uri"]));
    assert_eq!(
        hit(&router(&v), get("/my-target-uri", "domain.org")),
        Some(0x8121)
    );
}

// ---------------------------------------------------------------------------
// [uri prefix]
// ---------------------------------------------------------------------------

#[test]
fn does_not_supersede_another_route_with_a_longer_uri() {
    let rt = router(&[
        r(0x8101).paths(&["/my-route/hello"]),
        r(0x8102).paths(&["/my-route"]),
    ]);
    assert_eq!(hit(&rt, get("/my-route/hello", "domain.org")), Some(0x8101));
    assert_eq!(
        hit(&rt, get("/my-route/hello/world", "domain.org")),
        Some(0x8101)
    );
    assert_eq!(hit(&rt, get("/my-route", "domain.org")), Some(0x8102));
    assert_eq!(hit(&rt, get("/my-route/world", "domain.org")), Some(0x8102));
}

#[test]
fn does_not_supersede_another_route_with_a_longer_uri_while_methods_are_also_defined() {
    let rt = router(&[
        r(0x8101)
            .methods(&["POST", "PUT", "GET"])
            .paths(&["/my-route"]),
        r(0x8102)
            .methods(&["POST", "PUT", "GET"])
            .paths(&["/my-route/hello"]),
    ]);
    assert_eq!(hit(&rt, get("/my-route/hello", "domain.org")), Some(0x8102));
    assert_eq!(
        hit(&rt, get("/my-route/hello/world", "domain.org")),
        Some(0x8102)
    );
    assert_eq!(hit(&rt, get("/my-route", "domain.org")), Some(0x8101));
    assert_eq!(hit(&rt, get("/my-route/world", "domain.org")), Some(0x8101));
}

#[test]
fn does_not_supersede_another_route_with_a_longer_uri_while_hosts_are_also_defined() {
    let rt = router(&[
        r(0x8101).hosts(&["domain.org"]).paths(&["/my-route"]),
        r(0x8102).hosts(&["domain.org"]).paths(&["/my-route/hello"]),
    ]);
    assert_eq!(hit(&rt, get("/my-route/hello", "domain.org")), Some(0x8102));
    assert_eq!(
        hit(&rt, get("/my-route/hello/world", "domain.org")),
        Some(0x8102)
    );
    assert_eq!(hit(&rt, get("/my-route", "domain.org")), Some(0x8101));
    assert_eq!(hit(&rt, get("/my-route/world", "domain.org")), Some(0x8101));
}

#[test]
fn does_not_supersede_another_route_with_a_longer_uri_when_a_better_uri_match_exists_for_another_host(
) {
    let rt = router(&[
        r(0x8101).hosts(&["example.com"]).paths(&["/my-route"]),
        r(0x8102)
            .hosts(&["example.com"])
            .paths(&["/my-route/hello"]),
        r(0x8103)
            .hosts(&["example.net"])
            .paths(&["/my-route/hello/world"]),
    ]);
    assert_eq!(
        hit(&rt, get("/my-route/hello/world", "example.com")),
        Some(0x8102)
    );
    assert_eq!(
        hit(
            &rt,
            get("/my-route/hello/world/and/goodnight", "example.com")
        ),
        Some(0x8102)
    );
}

#[test]
fn only_matches_uri_prefix_as_a_prefix_anchored_mode() {
    let rt = router(&[
        r(0x8101).paths(&["/something/my-route"]),
        r(0x8102).hosts(&["example.com"]).paths(&["/my-route"]),
    ]);
    assert_eq!(
        hit(&rt, get("/something/my-route", "example.com")),
        Some(0x8101)
    );
}

// ---------------------------------------------------------------------------
// [uri regex]
// ---------------------------------------------------------------------------

#[test]
fn matches_with_uri_regex() {
    let rt = router(&[r(0x8101).paths(&[r"~/users/\d+/profile"])]);
    let m = find(&rt, &get("/users/123/profile", "domain.org")).expect("match");
    assert_eq!(m.index, 0x8101);
    assert!(m.captures.is_empty());
}

#[test]
fn matches_the_right_route_when_several_ones_have_a_uri_regex() {
    let rt = router(&[
        r(0x8101).paths(&[r"~/route/persons/\d{3}"]),
        r(0x8102).paths(&[r"~/route/persons/\d{3}/following"]),
        r(0x8103).paths(&[r"~/route/persons/\d{3}/[a-z]+"]),
    ]);
    assert_eq!(
        hit(&rt, get("/route/persons/456", "domain.org")),
        Some(0x8101)
    );
}

#[test]
fn matches_a_uri_regex_even_if_a_prefix_uri_got_a_match() {
    let rt = router(&[
        r(0x8101).paths(&["/route/persons"]),
        r(0x8102).paths(&[r"~/route/persons/\d+/profile"]),
    ]);
    let m = find(&rt, &get("/route/persons/123/profile", "domain.org")).expect("match");
    assert_eq!(m.index, 0x8102);
    assert!(m.captures.is_empty());
}

#[test]
fn matches_a_uri_regex_even_if_a_uri_got_an_exact_match() {
    let rt = router(&[
        r(0x8101).paths(&["/route/fixture"]),
        r(0x8102).paths(&["~/route/(fixture)"]),
    ]);
    assert_eq!(hit(&rt, get("/route/fixture", "domain.org")), Some(0x8102));
}

#[test]
fn matches_a_uri_regex_and_host_even_if_a_prefix_uri_got_a_match() {
    let rt = router(&[
        r(0x8101).hosts(&["route.com"]).paths(&["/pat"]),
        r(0x8102)
            .hosts(&["route.com"])
            .paths(&["/path"])
            .methods(&["POST"]),
        r(0x8103).hosts(&["route.com"]).paths(&["~/(path)"]),
    ]);
    assert_eq!(hit(&rt, get("/path", "route.com")), Some(0x8103));
}

#[test]
fn matches_from_the_beginning_of_the_request_uri_uri_regex() {
    let rt = router(&[r(0x8101).paths(&[r"~/prefix/[0-9]+"])]);
    assert_eq!(hit(&rt, get("/prefix/123", "domain.org")), Some(0x8101));
    assert_eq!(hit(&rt, get("/extra/prefix/123", "domain.org")), None);
}

// ---------------------------------------------------------------------------
// [wildcard host]
// ---------------------------------------------------------------------------

fn wildcard_use_case() -> Vec<R> {
    vec![
        r(0x8101).hosts(&["*.route.com"]),
        r(0x8102).hosts(&["route.*"]),
    ]
}

#[test]
fn wildcard_host_matches_leftmost_wildcards() {
    assert_eq!(
        hit(&router(&wildcard_use_case()), get("/", "foo.route.com")),
        Some(0x8101)
    );
}

#[test]
fn wildcard_host_matches_rightmost_wildcards() {
    assert_eq!(
        hit(&router(&wildcard_use_case()), get("/", "route.org")),
        Some(0x8102)
    );
}

#[test]
fn wildcard_host_matches_any_port_in_request() {
    let rt = router(&wildcard_use_case());
    assert_eq!(hit(&rt, get("/", "route.org:123")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "foo.route.com:123")), Some(0x8101));
}

#[test]
fn wildcard_host_matches_port_specific_routes() {
    let mut v = wildcard_use_case();
    v.push(r(0x8103).hosts(&["*.route.net:123"]));
    v.push(r(0x8104).hosts(&["route.*:123"]));
    let rt = router(&v);
    assert_eq!(hit(&rt, get("/", "foo.route.net:123")), Some(0x8103));
    assert_eq!(hit(&rt, get("/", "foo.route.net:456")), None);
    assert_eq!(hit(&rt, get("/", "route.org:123")), Some(0x8104));
}

#[test]
fn prefers_port_specific_even_for_http_default_port() {
    let mut v = wildcard_use_case();
    v.push(r(0x8103).hosts(&["route.*:80"]));
    let rt = router(&v);
    assert_eq!(hit(&rt, get("/", "route.org:123")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "route.org:80")), Some(0x8103));
    // implicit port: compat uses the listener port (ctx.host_port)
    assert_eq!(hit(&rt, get("/", "route.org").port(80)), Some(0x8103));
}

#[test]
fn prefers_port_specific_even_for_https_default_port() {
    let mut v = wildcard_use_case();
    v.push(r(0x8103).hosts(&["route.*:443"]));
    let rt = router(&v);
    assert_eq!(hit(&rt, get("/", "route.org:123")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "route.org:443")), Some(0x8103));
    assert_eq!(
        hit(&rt, get("/", "route.org").port(443).https(None)),
        Some(0x8103)
    );
}

#[test]
fn wildcard_host_does_not_take_precedence_over_a_plain_host() {
    let mut v = wildcard_use_case();
    v.insert(0, r(0x8103).hosts(&["plain.route.com"]));
    v.push(r(0x8104).hosts(&["route.com"]));
    let rt = router(&v);
    assert_eq!(hit(&rt, get("/", "route.com")), Some(0x8104));
    assert_eq!(hit(&rt, get("/", "route.org")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "plain.route.com")), Some(0x8103));
    assert_eq!(hit(&rt, get("/", "foo.route.com")), Some(0x8101));
}

#[test]
fn matches_wildcard_host_and_path_even_if_a_similar_plain_host_exists() {
    let rt = router(&[
        r(0x8101).hosts(&["*.route.com"]).paths(&["/path1"]),
        r(0x8102).hosts(&["plain.route.com"]).paths(&["/path2"]),
    ]);
    assert_eq!(hit(&rt, get("/path1", "plain.route.com")), Some(0x8101));
}

#[test]
fn matches_plain_host_and_path_even_if_a_matching_wildcard_host_exists() {
    let rt = router(&[
        r(0x8101).hosts(&["*.route.com"]).paths(&["/path1"]),
        r(0x8102).hosts(&["plain.route.com"]).paths(&["/path2"]),
    ]);
    assert_eq!(hit(&rt, get("/path2", "plain.route.com")), Some(0x8102));
}

#[test]
fn submatch_weight_wildcard_host_port_gt_wildcard_host() {
    let rt = router(&[
        r(0x8101).hosts(&["route.*"]),
        r(0x8102).hosts(&["route.*:80", "route.com.*"]),
    ]);
    assert_eq!(hit(&rt, get("/", "route.org:80")), Some(0x8102));
}

#[test]
fn matches_a_wildcard_host_and_port_even_if_a_wildcard_host_matched() {
    let rt = router(&[
        r(0x8101).hosts(&["route.*"]),
        r(0x8102).hosts(&["route.*:123"]),
        r(0x8103).hosts(&["route.*:80"]),
    ]);
    assert_eq!(hit(&rt, get("/", "route.org:123")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "route.org").port(80)), Some(0x8103));
}

/// Leftmost and rightmost wildcards with a port (`transform.lua`:
/// `(http.host =^ ".x" && net.dst.port == N)` / `^= "x."`): the port comes
/// from Host, else from the listener (`ctx.host_port`).
#[test]
fn wildcard_hosts_with_port_match_explicit_and_listener_port() {
    let rt = router(&[
        r(0x8101).hosts(&["*.example.com:8123"]),
        r(0x8102).hosts(&["example.*:80"]),
    ]);
    assert_eq!(hit(&rt, get("/", "a.example.com:8123")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "a.b.example.com:8123")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "a.example.com").port(8123)), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "a.example.com:80")), None);
    assert_eq!(hit(&rt, get("/", "a.example.com").port(8000)), None);
    // `*.x` needs a label before `.x`.
    assert_eq!(hit(&rt, get("/", "example.com:8123")), None);

    assert_eq!(hit(&rt, get("/", "example.org:80")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "example.co.uk").port(80)), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "example.org:8080")), None);
    assert_eq!(hit(&rt, get("/", "example.org").port(8000)), None);
    // A port in Host wins over the listener port.
    assert_eq!(hit(&rt, get("/", "example.org:8000").port(80)), None);
    // No Host: host predicates never hold.
    assert_eq!(hit(&rt, q("GET", "/", None).port(80)), None);
}

/// One route mixing port-specific wildcards with other hosts: each host is
/// its own `||` alternative (and its own index bucket).
#[test]
fn wildcard_host_with_port_among_other_hosts_of_a_route() {
    let rt = router(&[
        r(0x8101).hosts(&["*.a.test:81", "b.*:82", "c.test", "*.d.test"]),
        r(0x8102).hosts(&["z.test"]),
    ]);
    assert_eq!(hit(&rt, get("/", "x.a.test:81")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "x.a.test:82")), None);
    assert_eq!(hit(&rt, get("/", "b.org:82")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "b.org").port(81)), None);
    assert_eq!(hit(&rt, get("/", "c.test:9")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "x.d.test:9")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "z.test")), Some(0x8102));
}

/// Compat gives a host's port no priority (`transform.get_priority` only
/// counts `hosts` once and checks for `*`): a port-specific wildcard and a
/// port-less one tie and the larger route id wins. Kong's unit specs
/// ("matches port-specific routes", "prefers port-specific even for http
/// default port") hold in compat only because their port-specific route
/// has the larger id; the `submatch_weight` preference is traditional-only.
#[test]
fn port_specific_wildcard_host_has_no_extra_priority_in_compat() {
    let rt = router(&[
        r(0x8102).hosts(&["route.*:80"]),
        r(0x8103).hosts(&["route.*"]),
    ]);
    assert_eq!(hit(&rt, get("/", "route.org:80")), Some(0x8103));
    assert_eq!(hit(&rt, get("/", "route.org").port(80)), Some(0x8103));
    let rt = router(&[
        r(0x8103).hosts(&["route.*:80"]),
        r(0x8102).hosts(&["route.*"]),
    ]);
    assert_eq!(hit(&rt, get("/", "route.org:80")), Some(0x8103));
    assert_eq!(hit(&rt, get("/", "route.org:81")), Some(0x8102));
    // Plain hosts still beat wildcard ones, port or not (PLAIN_HOST_ONLY).
    let rt = router(&[
        r(0x8101).hosts(&["route.org"]),
        r(0x8103).hosts(&["route.*:80"]),
    ]);
    assert_eq!(hit(&rt, get("/", "route.org:80")), Some(0x8101));
}

#[test]
fn matches_wildcard_plain_uri_method() {
    let mut v = wildcard_use_case();
    v.push(
        r(0x8105)
            .hosts(&["*.domain.com", "example.com"])
            .paths(&["/path"])
            .methods(&["GET", "TRACE"]),
    );
    let rt = router(&v);
    assert_eq!(hit(&rt, q("POST", "/path", Some("foo.domain.com"))), None);
    assert_eq!(
        hit(&rt, q("GET", "/path", Some("foo.domain.com"))),
        Some(0x8105)
    );
    assert_eq!(
        hit(&rt, q("TRACE", "/path", Some("example.com"))),
        Some(0x8105)
    );
}

#[test]
fn wildcard_host_and_uri_regex_matches() {
    let rt = router(&[
        r(0x8101)
            .hosts(&["*.example.com"])
            .paths(&[r"~/users/\d+/profile"]),
        r(0x8102).hosts(&["*.example.com"]).paths(&["/users"]),
    ]);
    assert_eq!(
        hit(&rt, get("/users/123/profile", "test.example.com")),
        Some(0x8101)
    );
    assert_eq!(hit(&rt, get("/users", "test.example.com")), Some(0x8102));
}

// ---------------------------------------------------------------------------
// [headers]
// ---------------------------------------------------------------------------

#[test]
fn evaluates_routes_with_more_headers_first() {
    let rt = router(&[
        r(0x8101)
            .header("version", &["v1", "v2"])
            .header("user_agent", &["foo", "bar"]),
        r(0x8102)
            .header("version", &["v1", "v2"])
            .header("user_agent", &["foo", "bar"])
            .header("location", &["east", "west"]),
    ]);
    let req = q("GET", "/", None)
        .h("version", "v1")
        .h("user-agent", "foo")
        .h("location", "north")
        .h("location", "west");
    assert_eq!(hit(&rt, req), Some(0x8102));
}

#[test]
fn header_names_are_case_insensitive() {
    let rt = router(&[
        r(0x8101).header("USER_AGENT", &["foo", "bar"]),
        r(0x8102).header("user_agent", &["baz"]),
    ]);
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("User-Agent", "foo")),
        Some(0x8101)
    );
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("USER-AGENT", "baz")),
        Some(0x8102)
    );
}

#[test]
fn header_matches_values_in_a_case_insensitive_way() {
    let rt = router(&[
        r(0x8101).header("user_agent", &["foo", "bar"]),
        r(0x8102).header("user_agent", &["BAZ"]),
    ]);
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("user-agent", "FOO")),
        Some(0x8101)
    );
    assert_eq!(
        hit(&rt, q("GET", "/", None).h("user-agent", "baz")),
        Some(0x8102)
    );
}

#[test]
fn more_headers_has_priority_over_longer_paths() {
    let rt = router(&[
        r(0x8101)
            .header("version", &["v1"])
            .paths(&["/my-route/hello"]),
        r(0x8102)
            .header("version", &["v1"])
            .header("location", &["us-east"])
            .paths(&["/my-route"]),
    ]);
    let req = |p: &str| {
        get(p, "domain.org")
            .h("version", "v1")
            .h("location", "us-east")
    };
    assert_eq!(hit(&rt, req("/my-route/hello")), Some(0x8102));
    assert_eq!(hit(&rt, req("/my-route/hello/world")), Some(0x8102));
}

#[test]
fn cache_hit_should_be_case_sensitive() {
    // compat: header values compare case-insensitively
    let rt = router(&[r(0x8101).paths(&["/foo"]).header("test1", &["Quote"])]);
    assert_eq!(
        hit(&rt, q("GET", "/foo", None).h("test1", "QUOTE")),
        Some(0x8101)
    );
    assert_eq!(
        hit(&rt, q("GET", "/foo", None).h("test1", "QuoTe")),
        Some(0x8101)
    );
}

// ---------------------------------------------------------------------------
// [wildcard sni]
// ---------------------------------------------------------------------------

fn sni_use_case() -> Vec<R> {
    vec![r(0x8101).snis(&["*.sni.test"]), r(0x8102).snis(&["sni.*"])]
}

#[test]
fn sni_matches_leftmost_wildcards() {
    let rt = router(&sni_use_case());
    for sni in ["foo.sni.test", "foo.bar.sni.test"] {
        assert_eq!(
            hit(&rt, get("/", "any.test").https(Some(sni))),
            Some(0x8101)
        );
    }
}

#[test]
fn sni_matches_rightmost_wildcards() {
    let rt = router(&sni_use_case());
    for sni in ["sni.foo", "sni.foo.bar"] {
        assert_eq!(
            hit(&rt, get("/", "any.test").https(Some(sni))),
            Some(0x8102)
        );
    }
}

#[test]
fn sni_doesnt_match_wildcard() {
    let rt = router(&sni_use_case());
    for sni in ["bar.sni.foo", "foo.sni.test.bar"] {
        assert_eq!(hit(&rt, get("/", "any.test").https(Some(sni))), None);
    }
}

#[test]
fn sni_is_ignored_for_plain_http() {
    // (net.protocol != "https" || tls.sni == ...)
    let rt = router(&sni_use_case());
    assert_eq!(hit(&rt, get("/", "any.test")), Some(0x8102));
    // https without SNI: no tls.sni value, predicate false
    assert_eq!(hit(&rt, get("/", "any.test").https(None)), None);
}

// ---------------------------------------------------------------------------
// normalization stopgap measurements (select() does not normalize)
// ---------------------------------------------------------------------------

fn stopgap_use_case() -> Vec<R> {
    vec![
        r(0x8100).paths(&["/plain/a.b.c"]),
        r(0x8101).paths(&["/plain/a.b%58c"]),
        r(0x8102).paths(&[r"~/reg%65x/\d+"]),
        r(0x8103).paths(&[r"~/regex-meta/%5Cd\+%2E"]),
        r(0x8104).paths(&["~/regex-reserved%2Fabc"]),
    ]
}

#[test]
fn stopgap_matches_against_plain_text_paths() {
    let rt = router(&stopgap_use_case());
    assert_eq!(hit(&rt, get("/plain/a.b.c", "example.com")), Some(0x8100));
    assert_eq!(hit(&rt, get("/plain/a.bXc", "example.com")), None);
    assert_eq!(hit(&rt, get("/plain/a.b%58c", "example.com")), Some(0x8101));
    assert_eq!(hit(&rt, get("/plain/aab.c", "example.com")), None);
}

#[test]
fn stopgap_matches_against_regex_paths() {
    let rt = router(&stopgap_use_case());
    assert_eq!(hit(&rt, get("/regex/123", "example.com")), None);
    assert_eq!(hit(&rt, get("/reg%65x/123", "example.com")), Some(0x8102));
    assert_eq!(hit(&rt, get(r"/regex/\d+", "example.com")), None);
}

#[test]
fn stopgap_escapes_meta_character_after_percent_decoding_from_regex_paths() {
    let rt = router(&stopgap_use_case());
    assert_eq!(hit(&rt, get("/regex-meta/123a", "example.com")), None);
    assert_eq!(hit(&rt, get(r"/regex-meta/\d+.", "example.com")), None);
    assert_eq!(
        hit(&rt, get("/regex-meta/%5Cd+%2E", "example.com")),
        Some(0x8103)
    );
}

#[test]
fn stopgap_leave_reserved_characters_alone_in_regex_paths() {
    let rt = router(&stopgap_use_case());
    assert_eq!(hit(&rt, get("/regex-reserved/abc", "example.com")), None);
    assert_eq!(
        hit(&rt, get("/regex-reserved%2Fabc", "example.com")),
        Some(0x8104)
    );
}

// ---------------------------------------------------------------------------
// edge-cases
// ---------------------------------------------------------------------------

fn edge_use_case() -> Vec<R> {
    select_use_case().into_iter().take(7).collect()
}

#[test]
fn host_and_uri_have_higher_priority_than_method() {
    let rt = router(&edge_use_case());
    assert_eq!(
        hit(&rt, q("TRACE", "/", Some("domain-2.org"))),
        Some(0x8101)
    );
    assert_eq!(
        hit(&rt, q("TRACE", "/my-route", Some("domain.org"))),
        Some(0x8103)
    );
}

#[test]
fn half_uri_and_host_match_does_not_supersede_another_route() {
    let rt = router(&[
        r(0x8101).hosts(&["host1.com"]).paths(&["/v1/path"]),
        r(0x8102).hosts(&["host2.com"]).paths(&["/"]),
    ]);
    assert_eq!(hit(&rt, get("/v1/path", "host1.com")), Some(0x8101));
    assert_eq!(hit(&rt, get("/v1/path", "host2.com")), Some(0x8102));
}

#[test]
fn half_wildcard_host_and_method_match_does_not_supersede_another_route() {
    let rt = router(&[
        r(0x8101).hosts(&["host.*"]).methods(&["GET"]),
        r(0x8102).hosts(&["host.*"]).methods(&["POST"]),
    ]);
    assert_eq!(hit(&rt, q("GET", "/", Some("host.com"))), Some(0x8101));
    assert_eq!(hit(&rt, q("POST", "/", Some("host.com"))), Some(0x8102));
}

#[test]
fn half_uri_regex_and_method_match_does_not_supersede_another_route() {
    let rt = router(&[
        r(0x8101).methods(&["GET"]).paths(&[r"~/users/\d+/profile"]),
        r(0x8102)
            .methods(&["POST"])
            .paths(&[r"~/users/\d*/profile"]),
    ]);
    assert_eq!(
        hit(&rt, q("GET", "/users/123/profile", Some("domain.org"))),
        Some(0x8101)
    );
    assert_eq!(
        hit(&rt, q("POST", "/users/123/profile", Some("domain.org"))),
        Some(0x8102)
    );
}

#[test]
fn method_does_not_supersede_uri_prefix() {
    let rt = router(&[r(0x8101).methods(&["GET"]), r(0x8102).paths(&["/example"])]);
    assert_eq!(hit(&rt, get("/example", "domain.org")), Some(0x8102));
    assert_eq!(
        hit(&rt, get("/example/status/200", "domain.org")),
        Some(0x8102)
    );
}

#[test]
fn method_does_not_supersede_wildcard_host() {
    let rt = router(&[r(0x8101).methods(&["GET"]), r(0x8102).hosts(&["domain.*"])]);
    assert_eq!(hit(&rt, get("/", "nothing.com")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "domain.com")), Some(0x8102));
}

#[test]
fn compat_longer_uri_prefix_of_a_split_route_competes_per_path() {
    // Kong's it_trad_only("does not supersede another route with a longer
    // [uri prefix]") — in compat the route is split, so "/a/bb" (len 5)
    // still beats "/a" (len 2).
    let rt = router(&[
        r(0x8101).paths(&["/a", "/bbbbbbb"]),
        r(0x8102).paths(&["/a/bb"]),
    ]);
    assert_eq!(hit(&rt, get("/a/bb/foobar", "domain.org")), Some(0x8102));
    assert_eq!(hit(&rt, get("/bbbbbbbx", "domain.org")), Some(0x8101));
}

#[test]
fn prefix_matching_ignore_regex_priority() {
    let rt = router(&[
        r(0x8101).paths(&["/.*"]).hosts(&["domain-1.org"]),
        r(0x8102)
            .paths(&["/"])
            .hosts(&["domain-2.org"])
            .regex_priority(5),
        r(0x8103).paths(&["/v1"]).hosts(&["domain-2.org"]),
    ]);
    assert_eq!(hit(&rt, get("/v1", "domain-2.org")), Some(0x8103));
}

#[test]
fn assigns_different_priorities_to_regex_and_non_regex_path() {
    let rt = router(&[
        r(0x8101)
            .paths(&["~/some/thing/else", "/foo"])
            .hosts(&["domain-1.org"]),
        r(0x8102).paths(&["/foo/bar"]).hosts(&["domain-1.org"]),
    ]);
    assert_eq!(
        hit(&rt, get("/some/thing/else", "domain-1.org")),
        Some(0x8101)
    );
    assert_eq!(hit(&rt, get("/foo/bar", "domain-1.org")), Some(0x8102));
}

#[test]
fn assigns_different_priorities_to_each_path() {
    let rt = router(&[
        r(0x8101)
            .paths(&["/foo", "/foo/bar/baz"])
            .hosts(&["domain-1.org"]),
        r(0x8102).paths(&["/foo/bar"]).hosts(&["domain-1.org"]),
    ]);
    assert_eq!(hit(&rt, get("/foo", "domain-1.org")), Some(0x8101));
    assert_eq!(hit(&rt, get("/foo/bar", "domain-1.org")), Some(0x8102));
    assert_eq!(hit(&rt, get("/foo/bar/baz", "domain-1.org")), Some(0x8101));
}

#[test]
fn can_create_route_with_multiple_paths_and_no_service() {
    let rt = router(&[r(0x8101).paths(&["/foo", "/foo/bar/baz"])]);
    assert_eq!(rt.len(), 1);
    assert_eq!(rt.matchers.len(), 2);
}

#[test]
fn depends_on_the_regex_priority_field() {
    let rt = router(&[
        r(0x8102).paths(&[r"~/status/\d+"]).regex_priority(0),
        r(0x8101)
            .paths(&[r"~/status/(?<code>\d+)"])
            .regex_priority(1),
    ]);
    let m = find(&rt, &get("/status/200", "x")).expect("match");
    assert_eq!(m.index, 0x8101);
}

// ---------------------------------------------------------------------------
// exec(): uri captures, stripping
// ---------------------------------------------------------------------------

fn exec(rt: &Router, raw: &str, service_path: Option<&str>) -> (RouteMatch, String) {
    let path = normalize_path(raw).into_owned();
    let m = find(rt, &get(&path, "domain.org")).expect("match");
    // Kong's unit fixtures leave strip_path unset (falsy) on 0x9xxx ids here.
    let strip = m.index & 0x1000 == 0;
    let up = upstream_uri_v0(&path, m.matched_prefix.as_str(), strip, service_path);
    (m, up)
}

fn cap<'a>(m: &'a RouteMatch, key: &str) -> Option<&'a str> {
    match key.parse::<usize>() {
        Ok(i) => m
            .captures
            .get(i)
            .filter(|(n, _)| n.is_none())
            .map(|(_, v)| v.as_str()),
        Err(_) => m
            .captures
            .iter()
            .find(|(n, _)| n.as_deref() == Some(key))
            .map(|(_, v)| v.as_str()),
    }
}

#[test]
fn uri_captures_works_well_with_the_optional_capture_group() {
    let rt = router(&[r(0x8101).paths(&[r"~/(users/)?1984/(?<subpath>profile)$"])]);
    let (m, _) = exec(&rt, "/1984/profile", None);
    assert_eq!(cap(&m, "1"), Some("")); // Kong: nil
    assert_eq!(cap(&m, "subpath"), Some("profile"));
    assert_eq!(cap(&m, "scope"), None);
}

#[test]
fn returns_uri_captures_from_a_uri_regex() {
    let rt = router(&[r(0x8101).paths(&[r"~/users/(?P<user_id>\d+)/profile/?(?P<scope>[a-z]*)"])]);
    let (m, _) = exec(&rt, "/users/1984/profile", None);
    assert_eq!(cap(&m, "1"), Some("1984"));
    assert_eq!(cap(&m, "user_id"), Some("1984"));
    assert_eq!(cap(&m, "2"), Some(""));
    assert_eq!(cap(&m, "scope"), Some(""));
    assert_eq!(cap(&m, "0"), Some("/users/1984/profile"));
    assert_eq!(cap(&m, "stripped_uri"), None);
    let (m, _) = exec(&rt, "/users/1984/profile/email", None);
    assert_eq!(cap(&m, "1"), Some("1984"));
    assert_eq!(cap(&m, "2"), Some("email"));
    assert_eq!(cap(&m, "scope"), Some("email"));
    assert_eq!(cap(&m, "0"), Some("/users/1984/profile/email"));
}

#[test]
fn returns_uri_captures_normalized() {
    let rt = router(&[
        r(0x8101).paths(&[r"~/users/(?P<fullname>[a-zA-Z\s\d%]+)/profile/?(?P<scope>[a-z]*)"])
    ]);
    let (m, _) = exec(&rt, "/users/%6aohn%20doe/profile", None);
    assert_eq!(cap(&m, "1"), Some("john doe"));
    assert_eq!(cap(&m, "fullname"), Some("john doe"));
    assert_eq!(cap(&m, "scope"), Some(""));
    assert_eq!(cap(&m, "0"), Some("/users/john doe/profile"));
}

#[test]
fn returns_no_uri_captures_from_a_uri_prefix_match() {
    let rt = router(&[r(0x8101).paths(&["/hello"])]);
    let (m, up) = exec(&rt, "/hello/world", None);
    assert_eq!(up, "/world");
    assert!(m.captures.is_empty());
}

#[test]
fn returns_no_uri_captures_from_a_uri_regex_match_without_groups() {
    let rt = router(&[r(0x8101).paths(&[r"~/users/\d+/profile"])]);
    let (m, _) = exec(&rt, "/users/1984/profile", None);
    assert!(m.captures.is_empty());
}

#[test]
fn returns_parsed_upstream_url_and_upstream_uri() {
    let rt = router(&[
        r(0x9101).paths(&["/my-route"]),
        r(0x9102).paths(&["/my-route-2"]),
    ]);
    let (m, up) = exec(&rt, "/my-route", None);
    assert_eq!(m.index, 0x9101);
    assert_eq!(up, "/my-route");
    let (m, up) = exec(&rt, "/my-route-2", None);
    assert_eq!(m.index, 0x9102);
    assert_eq!(up, "/my-route-2");
}

#[test]
fn parses_path_component_from_upstream_url_property() {
    let rt = router(&[r(0x9101).paths(&["/my-route"])]);
    let (_, up) = exec(&rt, "/my-route", Some("/get"));
    assert_eq!(up, "/get/my-route");
}

#[test]
fn allows_url_encoded_paths_if_they_are_reserved_characters() {
    let rt = router(&[r(0x9101).paths(&["/endel%2Fst"])]);
    let (m, up) = exec(&rt, "/endel%2Fst", None);
    assert_eq!(m.index, 0x9101);
    assert_eq!(up, "/endel%2Fst");
}

fn strip_use_case() -> Vec<R> {
    vec![
        r(0x8101).paths(&["/my-route", "/xx-route"]),
        r(0x9102)
            .methods(&["POST"])
            .paths(&["/my-route", "/xx-route"])
            .strip(false),
    ]
}

#[test]
fn strips_the_specified_paths_from_the_given_uri_if_matching() {
    let (m, up) = exec(&router(&strip_use_case()), "/my-route/hello/world", None);
    assert_eq!(m.index, 0x8101);
    assert_eq!(m.matched_prefix.as_str(), "/my-route");
    assert_eq!(up, "/hello/world");
}

#[test]
fn strips_if_matched_uri_is_plain_not_a_prefix() {
    let (m, up) = exec(&router(&strip_use_case()), "/my-route", None);
    assert_eq!(m.matched_prefix.as_str(), "/my-route");
    assert_eq!(up, "/");
}

#[test]
fn doesnt_strip_if_strip_uri_is_not_enabled() {
    let rt = router(&strip_use_case());
    let path = "/my-route/hello/world";
    let m = find(&rt, &q("POST", path, Some("domain.org"))).expect("match");
    assert_eq!(m.index, 0x9102);
    assert_eq!(
        upstream_uri_v0(path, m.matched_prefix.as_str(), false, None),
        "/my-route/hello/world"
    );
}

#[test]
fn does_not_strips_root_uri() {
    let rt = router(&[r(0x8101).paths(&["/"])]);
    let (m, up) = exec(&rt, "/my-route/hello/world", None);
    assert_eq!(m.matched_prefix.as_str(), "/");
    assert_eq!(up, "/my-route/hello/world");
}

#[test]
fn can_proxy_an_route_with_stripped_uri_with_different_uris_in_a_row() {
    let rt = router(&strip_use_case());
    for _ in 0..2 {
        let (m, up) = exec(&rt, "/my-route", None);
        assert_eq!((m.matched_prefix.as_str(), up.as_str()), ("/my-route", "/"));
        let (m, up) = exec(&rt, "/xx-route", None);
        assert_eq!((m.matched_prefix.as_str(), up.as_str()), ("/xx-route", "/"));
    }
}

#[test]
fn strips_url_encoded_paths() {
    let rt = router(&[r(0x8101).paths(&["/endel%2Fst"])]);
    let (m, up) = exec(&rt, "/endel%2Fst", None);
    assert_eq!(m.matched_prefix.as_str(), "/endel%2Fst");
    assert_eq!(up, "/");
}

#[test]
fn strips_a_uri_regex() {
    let rt = router(&[r(0x8101).paths(&[r"~/users/\d+/profile"])]);
    let (m, up) = exec(&rt, "/users/123/profile/hello/world", None);
    assert_eq!(m.matched_prefix.as_str(), "/users/123/profile");
    assert_eq!(up, "/hello/world");
}

#[test]
fn strips_a_uri_regex_with_a_capture_group() {
    let rt = router(&[r(0x8101).paths(&[r"~/users/(\d+)/profile"])]);
    let (m, up) = exec(&rt, "/users/123/profile/hello/world", None);
    assert_eq!(m.matched_prefix.as_str(), "/users/123/profile");
    assert_eq!(up, "/hello/world");
}

#[test]
fn works_with_special_characters() {
    let rt = router(&[r(0x9101).paths(&[r"/\d"]), r(0x9102).paths(&[r#"~/\d+""#])]);
    let (m, up) = exec(&rt, r"/\d", None);
    assert_eq!(m.index, 0x9101);
    assert_eq!(up, r"/\d");
    let (m, up) = exec(&rt, r#"/123""#, None);
    assert_eq!(m.index, 0x9102);
    assert_eq!(up, r#"/123""#);
    assert_eq!(escape_uri(&up), "/123%22");
}

#[test]
fn cache_hit_should_have_correct_upstream_uri() {
    let rt = router(&[r(0x8101).hosts(&["example.com"])]);
    for p in ["/foo", "/bar"] {
        let m = find(&rt, &get(p, "example.com")).expect("match");
        assert_eq!(upstream_uri_v0(p, m.matched_prefix.as_str(), true, None), p);
    }
}

// ---------------------------------------------------------------------------
// Compat-specific behaviour from the code (transform.lua / LuaJIT)
// ---------------------------------------------------------------------------

#[test]
fn priority_emulates_luajit_32bit_shifts() {
    // Values checked against LuaJIT 2.1 running transform.lua's arithmetic.
    let spec = |f: fn(R) -> R| f(r(1)).0;
    let p = |s: &RouteSpec| {
        matcher::priority(
            &s.view(),
            &s.paths.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    assert_eq!(p(&spec(|r| r.paths(&["/abcd"]))), 536_870_917);
    assert_eq!(
        p(&spec(|r| r.hosts(&["a"]).paths(&["/abcd"]))),
        1_152_921_505_680_588_805
    );
    // weight 4: the int32 result is negative and sign-extends
    assert_eq!(
        p(&spec(|r| r
            .hosts(&["a*"])
            .methods(&["GET"])
            .header("x", &["1"])
            .paths(&["/abcd"]))),
        ((4u32 << 29 | 1 << 20 | 5) as i32 as i64 as u64)
    );
    assert_eq!(
        p(&spec(|r| r
            .header("x", &["1"])
            .paths(&["~/a"])
            .regex_priority(3))),
        2_251_800_888_999_936
    );
    assert_eq!(
        p(&spec(|r| r
            .methods(&["GET"])
            .paths(&["~/a"])
            .regex_priority(-1))),
        18_446_744_073_709_027_328
    );
}

#[test]
fn negative_regex_priority_outranks_everything() {
    let rt = router(&[
        r(0x8101)
            .hosts(&["a.com"])
            .methods(&["GET"])
            .header("x", &["1"])
            .paths(&["/abc"]),
        r(0x8102).paths(&["~/abc"]).regex_priority(-1),
    ]);
    assert_eq!(hit(&rt, get("/abc", "a.com").h("x", "1")), Some(0x8102));
}

#[test]
fn empty_hosts_array_sets_plain_host_only() {
    let rt = router(&[
        r(0x8102).paths(&["/abc"]),
        R(RouteSpec {
            hosts: Some(vec![]),
            ..r(0x8101).paths(&["/abc"]).0
        }),
    ]);
    assert_eq!(hit(&rt, get("/abc", "x")), Some(0x8101));
}

#[test]
fn larger_uuid_wins_ties() {
    let rt = router(&[
        r(0x8101).paths(&["/abc"]),
        r(0x8102).paths(&["/abd"]),
        r(0x8103).paths(&["/ab"]),
    ]);
    assert_eq!(hit(&rt, get("/abc", "x")), Some(0x8101));
    let rt = router(&[r(0x8101).hosts(&["x"]), r(0x8102).hosts(&["x"])]);
    assert_eq!(hit(&rt, get("/", "x")), Some(0x8102));
}

#[test]
fn prefix_is_not_segment_aware() {
    let rt = router(&[r(0x8101).paths(&["/route"])]);
    let (m, up) = exec(&rt, "/routereq", Some("/srv"));
    assert_eq!(m.index, 0x8101);
    assert_eq!(up, "/srv/req");
}

#[test]
fn wildcard_suffix_does_not_match_bare_domain_but_prefix_does() {
    let rt = router(&[
        r(0x8101).hosts(&["*.example.com"]),
        r(0x8102).hosts(&["example.*"]),
    ]);
    assert_eq!(hit(&rt, get("/", "example.com")), Some(0x8102));
    assert_eq!(hit(&rt, get("/", "a.b.example.com")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "example.co.uk")), Some(0x8102));
}

#[test]
fn host_comparison_is_case_sensitive() {
    let rt = router(&[r(0x8101).hosts(&["example.com"])]);
    assert_eq!(hit(&rt, get("/", "Example.com")), None);
}

#[test]
fn header_regex_pattern_is_lowercased() {
    // `\D` becomes `\d` once Kong lower-cases the pattern
    let rt = router(&[r(0x8101).header("x-v", &[r"~*^\D+$"])]);
    assert_eq!(hit(&rt, q("GET", "/", None).h("x-v", "123")), Some(0x8101));
    assert_eq!(hit(&rt, q("GET", "/", None).h("x-v", "abc")), None);
}

#[test]
fn non_utf8_header_value_makes_the_router_fail() {
    let rt = router(&[r(0x8101).paths(&["/"]), r(0x8102).header("x-a", &["1"])]);
    let mut req = get("/", "x");
    req.headers
        .insert("x-a", HeaderValue::from_bytes(b"\xff").expect("value"));
    assert_eq!(hit(&rt, req), None);
    let mut req = get("/", "x");
    req.headers
        .insert("x-other", HeaderValue::from_bytes(b"\xff").expect("value"));
    assert_eq!(hit(&rt, req), Some(0x8101));
}

#[test]
fn split_routes_get_kong_v5_ids_and_report_the_original_id() {
    let rt = router(&[r(0x8101).paths(&["/a", "~/b"])]);
    let want = uuid::Uuid::new_v5(
        &uuid::Uuid::parse_str("7f145bf9-0dce-4f91-98eb-debbce4b9f6b").expect("ns"),
        b"e8fb37f1-102d-461e-9c51-6608a6bb8101#2",
    );
    assert!(rt.matchers.iter().any(|m| m.id == want));
    let m = find(&rt, &get("/b", "x")).expect("match");
    assert_eq!(m.route_id, id(0x8101));
}

#[test]
fn unanchored_alternation_strips_by_length() {
    let rt = router(&[r(0x8101).paths(&["~/a|/b"])]);
    let (m, up) = exec(&rt, "/xx/b/c", None);
    // "/b" matched at offset 3, but Kong cuts 2 bytes off the front
    assert_eq!(m.matched_prefix.as_str(), "/b");
    assert_eq!(up, "/x/b/c");
}

#[test]
fn errors_name_the_route_and_field() {
    let mut bad = r(0x8101).paths(&["~/(unclosed"]).0;
    bad.name = Some("my-route".into());
    let err = Router::new(vec![bad]).expect_err("bad regex");
    let msg = err.to_string();
    assert!(
        msg.contains("my-route") && msg.contains("paths") && msg.contains("(unclosed"),
        "{msg}"
    );
    let dup = Router::new(vec![r(1).paths(&["/a"]).0, r(1).paths(&["/b"]).0]);
    assert!(matches!(dup, Err(RouterError::DuplicateId { .. })));
    let empty = Router::new(vec![r(2).0]);
    assert!(matches!(empty, Err(RouterError::NoMatchingField { .. })));
}

#[test]
fn host_port_parsing_follows_lua_tonumber() {
    let rt = router(&[
        r(0x8101).hosts(&["a.test:8000"]),
        r(0x8100).hosts(&["a.test:abc"]),
    ]);
    assert_eq!(hit(&rt, get("/", "a.test:8000")), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "a.test").port(8000)), Some(0x8101));
    assert_eq!(hit(&rt, get("/", "a.test").port(9000)), None);
    // not a number: the whole string is the host
    assert_eq!(hit(&rt, get("/", "a.test:abc")), Some(0x8100));
}

// ---------------------------------------------------------------------------
// spec/fixtures/router_path_handling_tests.lua, v0 rows
// ---------------------------------------------------------------------------

#[test]
fn path_handling_fixture_v0() {
    // (service_path, route_path (None = host-only route), strip values, request_path, expected)
    const B: &[bool] = &[false, true];
    const F: &[bool] = &[false];
    const T: &[bool] = &[true];
    type Row = (
        &'static str,
        Option<&'static str>,
        &'static [bool],
        &'static str,
        &'static str,
    );
    let rows: &[Row] = &[
        ("/", Some("/"), B, "/", "/"),
        ("/", Some("/"), B, "/route", "/route"),
        ("/", Some("/"), B, "/route/", "/route/"),
        ("/", Some("/"), B, "/routereq", "/routereq"),
        ("/", Some("/"), B, "/route/req", "/route/req"),
        ("/", Some("/route"), F, "/route", "/route"),
        ("/", Some("/route"), F, "/route/", "/route/"),
        ("/", Some("/route"), F, "/routereq", "/routereq"),
        ("/", Some("/route"), T, "/route", "/"),
        ("/", Some("/route"), T, "/route/", "/"),
        ("/", Some("/route"), T, "/routereq", "/req"),
        ("/", Some("/route/"), F, "/route/", "/route/"),
        ("/", Some("/route/"), F, "/route/req", "/route/req"),
        ("/", Some("/route/"), T, "/route/", "/"),
        ("/", Some("/route/"), T, "/route/req", "/req"),
        ("/srv", Some("/rou"), F, "/roureq", "/srv/roureq"),
        ("/srv", Some("/rou"), T, "/roureq", "/srv/req"),
        ("/srv/", Some("/rou"), F, "/rou", "/srv/rou"),
        ("/srv/", Some("/rou"), T, "/rou", "/srv"),
        ("/service", Some("/"), B, "/", "/service"),
        ("/service", Some("/"), B, "/route", "/service/route"),
        ("/service", Some("/"), B, "/route/", "/service/route/"),
        ("/service", Some("/"), B, "/routereq", "/service/routereq"),
        ("/service", Some("/"), B, "/route/req", "/service/route/req"),
        ("/service", Some("/route"), F, "/route", "/service/route"),
        ("/service", Some("/route"), F, "/route/", "/service/route/"),
        (
            "/service",
            Some("/route"),
            F,
            "/routereq",
            "/service/routereq",
        ),
        ("/service", Some("/route"), T, "/route", "/service"),
        ("/service", Some("/route"), T, "/route/", "/service/"),
        ("/service", Some("/route"), T, "/routereq", "/service/req"),
        ("/service", Some("/route/"), F, "/route/", "/service/route/"),
        (
            "/service",
            Some("/route/"),
            F,
            "/route/req",
            "/service/route/req",
        ),
        ("/service", Some("/route/"), T, "/route/", "/service/"),
        ("/service", Some("/route/"), T, "/route/req", "/service/req"),
        ("/service/", Some("/"), B, "/route/", "/service/route/"),
        ("/service/", Some("/"), B, "/", "/service/"),
        ("/service/", Some("/"), B, "/route", "/service/route"),
        ("/service/", Some("/"), B, "/routereq", "/service/routereq"),
        (
            "/service/",
            Some("/"),
            B,
            "/route/req",
            "/service/route/req",
        ),
        ("/service/", Some("/route"), F, "/route", "/service/route"),
        ("/service/", Some("/route"), F, "/route/", "/service/route/"),
        (
            "/service/",
            Some("/route"),
            F,
            "/routereq",
            "/service/routereq",
        ),
        ("/service/", Some("/route"), T, "/route", "/service"),
        ("/service/", Some("/route"), T, "/route/", "/service/"),
        ("/service/", Some("/route"), T, "/routereq", "/service/req"),
        (
            "/service/",
            Some("/route/"),
            F,
            "/route/",
            "/service/route/",
        ),
        (
            "/service/",
            Some("/route/"),
            F,
            "/route/req",
            "/service/route/req",
        ),
        ("/service/", Some("/route/"), T, "/route/", "/service/"),
        (
            "/service/",
            Some("/route/"),
            T,
            "/route/req",
            "/service/req",
        ),
        ("/", None, B, "/", "/"),
        ("/", None, B, "/route", "/route"),
        ("/", None, B, "/route/", "/route/"),
        ("/service", None, B, "/", "/service"),
        ("/service", None, B, "/route", "/service/route"),
        ("/service", None, B, "/route/", "/service/route/"),
        ("/service/", None, B, "/", "/service/"),
        ("/service/", None, B, "/route", "/service/route"),
        ("/service/", None, B, "/route/", "/service/route/"),
        ("/service", Some("/route"), T, "/route./req", "/service/req"),
        (
            "/service/",
            Some("/route"),
            T,
            "/route./req",
            "/service/req",
        ),
        (
            "/service",
            Some("/route"),
            T,
            "/route%2E/req",
            "/service/req",
        ),
        (
            "/service/",
            Some("/route"),
            T,
            "/route%2E/req",
            "/service/req",
        ),
        (
            "/service",
            Some("/route"),
            T,
            "/route%2e/req",
            "/service/req",
        ),
        (
            "/service/",
            Some("/route"),
            T,
            "/route%2e/req",
            "/service/req",
        ),
        (
            "/service",
            Some("/route"),
            T,
            "/route../req",
            "/service/req",
        ),
        (
            "/service/",
            Some("/route"),
            T,
            "/route../req",
            "/service/req",
        ),
        (
            "/service",
            Some("/route"),
            T,
            "/route%2E%2E/req",
            "/service/req",
        ),
        (
            "/service/",
            Some("/route"),
            T,
            "/route%2E%2E/req",
            "/service/req",
        ),
        (
            "/service",
            Some("/route"),
            T,
            "/route%2e%2E/req",
            "/service/req",
        ),
        (
            "/service/",
            Some("/route"),
            T,
            "/route%2e%2E/req",
            "/service/req",
        ),
        (
            "/service",
            Some("/route"),
            F,
            "/route./req",
            "/service/route./req",
        ),
        (
            "/service/",
            Some("/route"),
            F,
            "/route./req",
            "/service/route./req",
        ),
        (
            "/service",
            Some("/route"),
            F,
            "/route%2E/req",
            "/service/route./req",
        ),
        (
            "/service/",
            Some("/route"),
            F,
            "/route%2E/req",
            "/service/route./req",
        ),
        (
            "/service",
            Some("/route"),
            F,
            "/route%2e/req",
            "/service/route./req",
        ),
        (
            "/service/",
            Some("/route"),
            F,
            "/route%2e/req",
            "/service/route./req",
        ),
        (
            "/service",
            Some("/route"),
            F,
            "/route../req",
            "/service/route../req",
        ),
        (
            "/service/",
            Some("/route"),
            F,
            "/route../req",
            "/service/route../req",
        ),
    ];
    for &(service, route_path, strips, req, expected) in rows {
        for &strip in strips {
            let mut spec = r(0x8101).strip(strip);
            spec = match route_path {
                Some(p) => spec.paths(&[p]),
                None => spec.hosts(&["localbin-route.test"]),
            };
            let rt = router(&[spec]);
            let path = normalize_path(req).into_owned();
            let m = find(&rt, &get(&path, "localbin-route.test")).expect("route matches");
            let got = upstream_uri_v0(&path, m.matched_prefix.as_str(), strip, Some(service));
            assert_eq!(
                got, expected,
                "service={service} route={route_path:?} strip={strip} req={req}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// normalize / escape (18-tools_uri_spec, 02-router_spec "URI normalization")
// ---------------------------------------------------------------------------

#[test]
fn normalize_no_normalization_necessary() {
    for s in ["", "/", "/a", "/a/", "/a/b/c", "/a/b/c/"] {
        assert_eq!(normalize_path(s), s);
    }
}

#[test]
fn normalize_no_normalization_necessary_reserved_characters() {
    assert_eq!(normalize_path("/a%2Fb%2Fc/"), "/a%2Fb%2Fc/");
    assert_eq!(
        normalize_path("/%20%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"),
        "/ %21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
    );
}

#[test]
fn normalize_converting_percent_encoded_triplets_to_uppercase() {
    assert_eq!(normalize_path("/a%2fb%2fc/"), "/a%2Fb%2Fc/");
    assert_eq!(normalize_path("/f%6f%6f"), "/foo");
}

#[test]
fn normalize_decoding_percent_encoded_triplets_of_unreserved_characters() {
    assert_eq!(normalize_path("/%6B%6f%6e%67"), "/kong");
    assert_eq!(normalize_path("/%2E"), "/");
}

#[test]
fn normalize_remove_dot_segments_and_merge_slashes() {
    for (i, o) in [
        ("//", "/"),
        ("/./", "/"),
        ("/.", "/"),
        ("/..", "/"),
        ("/../", "/"),
        ("/////", "/"),
        ("/./.././../", "/"),
        ("/a/b/c/./../../g", "/a/g"),
        ("mid/content=5/../6", "mid/6"),
        ("/a//b//", "/a/b/"),
    ] {
        assert_eq!(normalize_path(i), o, "{i}");
    }
}

#[test]
fn normalize_decodes_non_ascii_characters_that_are_unreserved() {
    assert_eq!(normalize_path("/endel%C3%B8st"), "/endeløst");
}

#[test]
fn normalize_does_normalize_complex_uri_outside_of_normal_uri_charset() {
    // Kong yields raw bytes \x99\xaf; a str cannot hold them, so those two
    // stay escaped (documented deviation) while `ä` is decoded as in Kong.
    assert_eq!(
        normalize_path("/%C3%A4/a/%2e./a%2E//a/%2e/./a/../a/%2e%2E/%5f%99%af%2f%2F"),
        "/ä/a./a/_%99%AF%2F%2F"
    );
    assert_eq!(
        normalize_path("/%C3%A4/a/%2e./a%2E//a/%2e/./a/../a/%2e%2E/%5f%2f%2F"),
        "/ä/a./a/_%2F%2F"
    );
}

#[test]
fn matches_against_normalized_uri() {
    let rt = router(&[
        r(0x8101).paths(&["/foo/bar"]),
        r(0x8102).paths(&["/hello"]),
        r(0x8103).paths(&["/anything/world"]).strip(false),
    ]);
    for raw in ["/foo/a/../bar", "/foo//bar", "/foo/./bar"] {
        assert_eq!(
            hit(&rt, get(&normalize_path(raw), "x")),
            Some(0x8101),
            "{raw}"
        );
    }
    assert_eq!(
        hit(&rt, get(&normalize_path("/h%65llo"), "x")),
        Some(0x8102)
    );
    // proxies normalized URI to upstream with strip_path = true / false
    let p = normalize_path("/h%65llo/anything/a/../b");
    let m = find(&rt, &get(&p, "x")).expect("match");
    assert_eq!(
        upstream_uri_v0(&p, m.matched_prefix.as_str(), true, None),
        "/anything/b"
    );
    let p = normalize_path("/anything/./a/../wor%6cd/a/../b");
    let m = find(&rt, &get(&p, "x")).expect("match");
    assert_eq!(m.index, 0x8103);
    assert_eq!(
        upstream_uri_v0(&p, m.matched_prefix.as_str(), false, None),
        "/anything/world/b"
    );
}

#[test]
fn escape_do_not_escape_reserved_or_unreserved_characters_plus_percent() {
    let s =
        "/!#$%&'()*+,/:;=?@[]ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
    assert_eq!(escape_uri(s), s);
}

#[test]
fn escape_spaces() {
    assert_eq!(escape_uri("/a b/c d"), "/a%20b/c%20d");
}

#[test]
fn escape_utf8_characters() {
    assert_eq!(escape_uri("/a😀"), "/a%F0%9F%98%80");
    assert_eq!(escape_uri("/endeløst"), "/endel%C3%B8st");
}

// ---------------------------------------------------------------------------
// index vs naive reference: random route sets and requests
// ---------------------------------------------------------------------------

const HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "a.org",
    "api.a.com",
    "c.net",
];
const ROUTE_HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "*.a.com",
    "a.*",
    "api.*",
    "c.net",
    "a.com:8000",
    "*.a.com:80",
    "a.*:8000",
    "c.net:443",
];
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/ab",
    "/a/b",
    "/api",
    "/api/v1",
    "/api/v1/users/42",
    "/b/c",
    "/abc/d",
];
const ROUTE_PATHS: &[&str] = &[
    "/",
    "/a",
    "/ab",
    "/a/",
    "/api",
    "/api/v1",
    "/b",
    "~/api/v\\d+",
    "~/a(b|/b)",
    "~/(?<x>[a-c]+)/",
    "~/api/v1/users/(\\d+)$",
    "~/a|/c",
    "~/[ab]+/?$",
    "~(/api)?/v1",
    "~.*/c$",
];
const METHODS: &[&str] = &["GET", "POST"];
const HDR_VALUES: &[&str] = &["v1", "V2", "~*^v\\d$", "blue"];

fn arb_route() -> impl Strategy<Value = RouteSpec> {
    (
        proptest::option::of(proptest::sample::subsequence(ROUTE_HOSTS, 0..3)),
        proptest::sample::subsequence(ROUTE_PATHS, 0..3),
        proptest::sample::subsequence(METHODS, 0..2),
        proptest::option::of(proptest::sample::subsequence(HDR_VALUES, 1..3)),
        proptest::option::of(prop_oneof![Just("*.a.com"), Just("sni.a.com")]),
        -2i64..3,
        any::<u128>(),
    )
        .prop_map(|(hosts, paths, methods, hdr, sni, rp, id)| RouteSpec {
            id: uuid::Uuid::from_u128(id),
            hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            headers: hdr
                .map(|v| {
                    vec![(
                        "x-ver".to_string(),
                        v.iter().map(|s| s.to_string()).collect(),
                    )]
                })
                .unwrap_or_default(),
            snis: sni.map(|s| vec![s.to_string()]).unwrap_or_default(),
            regex_priority: rp,
            strip_path: true,
            ..Default::default()
        })
}

// ---------------------------------------------------------------------------
// An independent oracle: Kong's traditional_compatible rules restated from
// kong/router/transform.lua (`get_expression`, `get_priority`,
// `split_routes_and_services_by_path`, `split_host_port`), kong/router/
// fields.lua (`net.dst.port` falls back to the listener port) and
// atc-router (matchers tried by priority, then uuid, both descending),
// written without the production matcher, priority or index code.
//
// Covers what `arb_route` generates: methods; hosts exact, `*.x`, `x.*`,
// with a decimal `:port`, and the empty hosts array; prefix and regex paths,
// including routes split by path group (v5 ids); one header with plain and
// `~*` regex values, compared lower-cased; SNIs (only on https); and
// regex_priority. Not covered: sources/destinations, non-decimal ports,
// non-ASCII lower-casing, non-UTF-8 headers, captures (only the matched
// path text is compared), stream routes, expressions.
// ---------------------------------------------------------------------------

mod oracle {
    use super::RouteSpec;
    use regex::Regex;
    use uuid::Uuid;

    /// The request as Kong's router fields see it.
    pub(super) struct Request<'a> {
        pub method: &'a str,
        /// The Host header as sent (may carry `:port`).
        pub host: Option<&'a str>,
        pub listener_port: u16,
        pub path: &'a str,
        /// Values of the request's headers, by lower-case name.
        pub headers: Vec<(&'a str, &'a str)>,
        pub sni: Option<&'a str>,
        pub https: bool,
    }

    enum PathTest {
        Prefix(String),
        Regex(Regex),
    }

    /// One atc matcher: a route, or one path group of a split route.
    struct Candidate {
        priority: u64,
        id: Uuid,
        route: usize,
        paths: Vec<PathTest>,
        /// (lower-case name, plain lower-cased values, regexes)
        headers: Vec<(String, Vec<String>, Vec<Regex>)>,
    }

    pub(super) struct Oracle {
        routes: Vec<RouteSpec>,
        candidates: Vec<Candidate>,
    }

    /// LuaJIT's `bit.lshift(n, s)` on a plain Lua number: the operand is
    /// taken as an int32 (mod 2^32), the count mod 32. Once `bit.bor`-ed
    /// with a uint64 cdata (PLAIN_HOST_ONLY_BIT, REGEX_URL_BIT) the int32
    /// is widened with its sign.
    fn lua_lshift(n: i64, s: u32) -> u64 {
        let x = (n as i32).wrapping_shl(s % 32);
        i64::from(x) as u64
    }

    /// `get_priority` for a route whose paths are `paths`.
    pub(super) fn priority(route: &RouteSpec, paths: &[String]) -> u64 {
        let hosts = route.hosts.as_deref().unwrap_or(&[]);
        let header_count = route.headers.len().min(255) as i64;
        let weight = [
            !route.methods.is_empty(),
            !hosts.is_empty(),
            header_count > 0,
            !route.snis.is_empty(),
            !paths.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count() as i64;
        let plain_host_only = route.hosts.is_some() && hosts.iter().all(|h| !h.contains('*'));
        let regex_url = paths.first().is_some_and(|p| p.starts_with('~'));
        let uri_length = match paths.first() {
            Some(p) if !regex_url => p.len() as u64,
            _ => 0,
        };
        let regex_priority = if regex_url { route.regex_priority } else { 0 };
        let mut p = lua_lshift(weight, 61)
            | lua_lshift(header_count, 52)
            | lua_lshift(regex_priority, 19)
            | (uri_length & 0x7FFFF);
        if plain_host_only {
            p |= 1 << 60;
        }
        if regex_url {
            p |= 1 << 51;
        }
        p
    }

    /// `group_by_regex_or_length`: regexes together, prefixes by length,
    /// in order of first appearance.
    fn groups(paths: &[String]) -> Vec<Vec<String>> {
        let mut keys: Vec<usize> = Vec::new();
        let mut out: Vec<Vec<String>> = Vec::new();
        for p in paths {
            let key = if p.starts_with('~') { 0 } else { p.len() };
            match keys.iter().position(|k| *k == key) {
                Some(i) => out[i].push(p.clone()),
                None => {
                    keys.push(key);
                    out.push(vec![p.clone()]);
                }
            }
        }
        out
    }

    /// `split_host_port`: split at the first ':' when a number follows.
    fn split_host_port(s: &str) -> (&str, Option<i64>) {
        match s.split_once(':') {
            Some((h, port)) => match port.parse::<i64>() {
                Ok(n) => (h, Some(n)),
                Err(_) => (s, None),
            },
            None => (s, None),
        }
    }

    /// `http.host` / `tls.sni` against one pattern already split into its
    /// operator: `*x` → ends with x, `x*` → starts with x, else equal.
    fn host_op(pattern: &str, value: &str) -> bool {
        if let Some(rest) = pattern.strip_prefix('*') {
            value.ends_with(rest)
        } else if let Some(rest) = pattern.strip_suffix('*') {
            value.starts_with(rest)
        } else {
            value == pattern
        }
    }

    /// `sni_op_transform` + `sni_val_transform`: `*x` → ends with x, `x*`
    /// → starts with x, else equal; a trailing dot (of a pattern longer
    /// than one byte) is dropped except from a prefix pattern.
    fn sni_ok(pattern: &str, sni: &str) -> bool {
        let trimmed = if pattern.len() > 1 {
            pattern.strip_suffix('.').unwrap_or(pattern)
        } else {
            pattern
        };
        if pattern.starts_with('*') {
            sni.ends_with(&trimmed[1..])
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            sni.starts_with(prefix)
        } else {
            sni == trimmed
        }
    }

    impl Oracle {
        pub(super) fn new(routes: &[RouteSpec]) -> Oracle {
            let mut candidates = Vec::new();
            for (i, r) in routes.iter().enumerate() {
                let gs = groups(&r.paths);
                let split = r.paths.len() > 1 && gs.len() > 1;
                let namespace =
                    Uuid::parse_str("7f145bf9-0dce-4f91-98eb-debbce4b9f6b").expect("uuid");
                let parts: Vec<(Uuid, Vec<String>)> = if split {
                    gs.into_iter()
                        .enumerate()
                        .map(|(g, paths)| {
                            let name = format!("{}#{}", r.id, g + 1);
                            (Uuid::new_v5(&namespace, name.as_bytes()), paths)
                        })
                        .collect()
                } else {
                    vec![(r.id, r.paths.clone())]
                };
                for (id, paths) in parts {
                    candidates.push(Candidate {
                        priority: priority(r, &paths),
                        id,
                        route: i,
                        paths: paths
                            .iter()
                            .map(|p| match p.strip_prefix('~') {
                                Some(re) => PathTest::Regex(
                                    Regex::new(&format!("^{}", re.replace("?<", "?P<")))
                                        .expect("path regex"),
                                ),
                                None => PathTest::Prefix(p.clone()),
                            })
                            .collect(),
                        headers: r
                            .headers
                            .iter()
                            .map(|(name, vals)| {
                                let name = name.to_lowercase().replace('_', "-");
                                let plain = vals
                                    .iter()
                                    .filter(|v| !v.starts_with("~*"))
                                    .map(|v| v.to_lowercase())
                                    .collect();
                                let res = vals
                                    .iter()
                                    .filter_map(|v| v.strip_prefix("~*"))
                                    .map(|v| Regex::new(&v.to_lowercase()).expect("header regex"))
                                    .collect();
                                (name, plain, res)
                            })
                            .collect(),
                    });
                }
            }
            // atc-router: highest priority first, then the larger uuid.
            candidates.sort_by_key(|c| std::cmp::Reverse((c.priority, c.id.as_u128())));
            Oracle {
                routes: routes.to_vec(),
                candidates,
            }
        }

        fn matches(&self, c: &Candidate, q: &Request<'_>) -> bool {
            let r = &self.routes[c.route];
            if !r.snis.is_empty() && q.https {
                match q.sni {
                    Some(sni) => {
                        if !r.snis.iter().any(|p| sni_ok(p, sni)) {
                            return false;
                        }
                    }
                    None => return false,
                }
            }
            if !r.methods.is_empty() && !r.methods.iter().any(|m| m == q.method) {
                return false;
            }
            let hosts = r.hosts.as_deref().unwrap_or(&[]);
            if !hosts.is_empty() {
                let Some(host_header) = q.host else {
                    return false;
                };
                let (host, port) = split_host_port(host_header);
                let port = port.unwrap_or(i64::from(q.listener_port));
                let any = hosts.iter().any(|h| {
                    let (pattern, want_port) = split_host_port(h);
                    host_op(pattern, host) && want_port.is_none_or(|p| p == port)
                });
                if !any {
                    return false;
                }
            }
            if !c.paths.is_empty() && self.matched_path(c, q.path).is_none() {
                return false;
            }
            c.headers.iter().all(|(name, plain, res)| {
                q.headers.iter().filter(|(n, _)| n == name).any(|(_, v)| {
                    let v = v.to_lowercase();
                    plain.contains(&v) || res.iter().any(|re| re.is_match(&v))
                })
            })
        }

        /// The text `http.path` matched: the first path of the group (in
        /// configuration order) that matches.
        fn matched_path(&self, c: &Candidate, path: &str) -> Option<String> {
            c.paths.iter().find_map(|p| match p {
                PathTest::Prefix(pre) => path.starts_with(pre.as_str()).then(|| pre.clone()),
                PathTest::Regex(re) => re.find(path).map(|m| m.as_str().to_string()),
            })
        }

        /// (route index, route id, stripped prefix as Kong sees it: "/"
        /// when no path or an empty match).
        pub(super) fn find(&self, q: &Request<'_>) -> Option<(usize, Uuid, String)> {
            let c = self.candidates.iter().find(|c| self.matches(c, q))?;
            let r = &self.routes[c.route];
            let matched = self
                .matched_path(c, q.path)
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "/".to_string());
            Some((r.index, r.id, matched))
        }
    }
}

#[test]
fn oracle_priority_known_answers() {
    // The LuaJIT-checked values of `priority_emulates_luajit_32bit_shifts`.
    let p = |f: fn(R) -> R| {
        let s = f(r(1)).0;
        oracle::priority(&s, &s.paths)
    };
    assert_eq!(p(|r| r.paths(&["/abcd"])), 536_870_917);
    assert_eq!(
        p(|r| r.hosts(&["a"]).paths(&["/abcd"])),
        1_152_921_505_680_588_805
    );
    assert_eq!(
        p(|r| r
            .hosts(&["a*"])
            .methods(&["GET"])
            .header("x", &["1"])
            .paths(&["/abcd"])),
        0xFFFF_FFFF_8010_0005
    );
    assert_eq!(
        p(|r| r.header("x", &["1"]).paths(&["~/a"]).regex_priority(3)),
        2_251_800_888_999_936
    );
    assert_eq!(
        p(|r| r.methods(&["GET"]).paths(&["~/a"]).regex_priority(-1)),
        18_446_744_073_709_027_328
    );
}

/// The oracle on 08-router_spec's `select()` cases (the same expectations
/// as `select_*` / `*_headers_value*` above), so that it is itself checked
/// against Kong and not only against the router.
#[test]
fn oracle_agrees_with_kong_spec_cases() {
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
        Option<u32>,
    );
    const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.116 Safari/537.36";
    let cases: &[Case] = &[
        ("GET", "/", Some("domain-1.org"), &[], Some(0x8101)),
        ("GET", "/", Some("domain-1.org:80"), &[], Some(0x8101)),
        ("GET", "/", Some("domain-1.org:321"), &[], Some(0x8113)),
        ("GET", "/", Some("domain-3.org:321"), &[], Some(0x8114)),
        ("GET", "/", Some("domain-3.org:123"), &[], None),
        ("GET", "/my-route", Some("domain.org"), &[], Some(0x8103)),
        ("GET", "/my-route-uri", Some(""), &[], Some(0x8103)),
        ("GET", "/my-route-uri", None, &[], Some(0x8103)),
        ("TRACE", "/", Some("domain.org"), &[], Some(0x8102)),
        ("GET", "/route-4", Some("domain-1.org"), &[], Some(0x8104)),
        ("POST", "/", Some("domain-1.org"), &[], Some(0x8105)),
        ("PUT", "/route-6", Some("domain.org"), &[], Some(0x8106)),
        (
            "PUT",
            "/my-route-uri",
            Some("domain-with-uri-2.org"),
            &[],
            Some(0x8107),
        ),
        (
            "GET",
            "/",
            None,
            &[("location", "my-location-2")],
            Some(0x8109),
        ),
        (
            "GET",
            "/",
            None,
            &[("location", "my-location-3"), ("location", "my-location-2")],
            Some(0x8109),
        ),
        ("GET", "/", None, &[("location", "my-location-3")], None),
        (
            "GET",
            "/",
            None,
            &[("location", "my-location-1"), ("version", "v2")],
            Some(0x8110),
        ),
        (
            "GET",
            "/",
            None,
            &[
                ("location", "my-location-3"),
                ("location", "my-location-2"),
                ("version", "v2"),
            ],
            Some(0x8109),
        ),
        ("GET", "/", None, &[("user-agent", UA)], Some(0x8115)),
    ];
    let routes: Vec<RouteSpec> = select_use_case().into_iter().map(|r| r.0).collect();
    let o = oracle::Oracle::new(&routes);
    let rt = Router::new(routes).expect("router builds");
    for &(method, path, host, headers, want) in cases {
        let got = o
            .find(&oracle::Request {
                method,
                host,
                listener_port: 8000,
                path,
                headers: headers.to_vec(),
                sni: None,
                https: false,
            })
            .map(|(i, _, _)| i as u32);
        assert_eq!(got, want, "oracle: {method} {path} {host:?} {headers:?}");
        let mut req = q(method, path, host);
        for (k, v) in headers {
            req = req.h(k, v);
        }
        assert_eq!(
            hit(&rt, req),
            want,
            "router: {method} {path} {host:?} {headers:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn index_agrees_with_naive_matcher(
        routes in proptest::collection::vec(arb_route(), 1..40),
        reqs in proptest::collection::vec((
            proptest::option::of(proptest::sample::select(HOSTS)),
            proptest::option::of(prop_oneof![Just(":80"), Just(":8000"), Just(":443")]),
            proptest::sample::select(PATHS),
            proptest::sample::select(METHODS),
            proptest::option::of(prop_oneof![Just("v1"), Just("v2"), Just("V1"), Just("red")]),
            any::<bool>(),
        ), 1..20),
    ) {
        let mut routes = routes;
        for (i, r) in routes.iter_mut().enumerate() {
            r.index = i;
        }
        routes.sort_by_key(|r| r.id);
        routes.dedup_by_key(|r| r.id);
        let routes: Vec<RouteSpec> = routes
            .into_iter()
            .filter(|r| !(r.methods.is_empty() && r.hosts.as_ref().is_none_or(|h| h.is_empty()) && r.paths.is_empty() && r.headers.is_empty() && r.snis.is_empty()))
            .collect();
        let oracle = oracle::Oracle::new(&routes);
        let rt = Router::new(routes).expect("valid routes");
        for (host, port, path, method, hv, https) in reqs {
            let host = host.map(|h| format!("{h}{}", port.unwrap_or("")));
            let mut headers = HeaderMap::new();
            if let Some(v) = hv {
                headers.insert("x-ver", HeaderValue::from_static(v));
            }
            let info = RequestInfo {
                method,
                host: host.as_deref(),
                listener_port: 8000,
                path,
                headers: &headers,
                sni: https.then_some("sni.a.com"),
                https,
            };
            let found = rt.find(&info);
            prop_assert_eq!(&found, &rt.find_naive(&info));
            let want = oracle.find(&oracle::Request {
                method,
                host: host.as_deref(),
                listener_port: 8000,
                path,
                headers: hv.map(|v| ("x-ver", v)).into_iter().collect(),
                sni: https.then_some("sni.a.com"),
                https,
            });
            let got = found.map(|m| (m.index, m.route_id, m.matched_prefix.as_str().to_string()));
            prop_assert_eq!(got, want, "router vs the independent oracle: {} {:?} {}", method, host, path);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Normalizing an already normalized path changes nothing, and the
    /// result never keeps a dot segment or an empty segment. (Kong decodes
    /// once, so `%%30A` legitimately changes again on a second pass: inputs
    /// here have no `%`.)
    #[test]
    fn normalize_path_is_idempotent(raw in "(/|[a-z]|\\.|//|~)[a-z/.0-9A-F~]{0,24}") {
        let path = format!("/{raw}");
        let once = normalize_path(&path).into_owned();
        let twice = normalize_path(&once).into_owned();
        prop_assert_eq!(&once, &twice);
        prop_assert!(!once.contains("/./") && !once.contains("/../") && !once.contains("//"),
            "{} -> {}", path, once);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never make the head checker panic, and whatever it
    /// accepts has a Host unless it is HTTP/1.0.
    #[test]
    fn head_checker_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = crate::proxy::h1_guard::HeadLimits::default();
        if let Ok(info) = crate::proxy::h1_guard::check_request_head(&raw, &limits) {
            prop_assert!(info.has_host || info.http10);
        }
    }
}

#[test]
fn regexes_compile_lazily_and_warm_compiles_the_rest() {
    // Six regexes sharing a literal prefix form a lazily built regex set;
    // one header regex is shared by two routes.
    let mut routes: Vec<R> = (0..6)
        .map(|i| r(i).paths(&[&format!(r"~/api/(?<id>\d+)/v{i}$")]))
        .collect();
    routes.push(r(10).paths(&["/h"]).header("x-v", &[r"~*^beta-\d+$"]));
    routes.push(r(11).paths(&["/g"]).header("x-v", &[r"~*^beta-\d+$"]));
    let rt = router(&routes);
    assert_eq!(rt.regex_count(), 7);
    // A match before any warm-up compiles what it needs.
    assert_eq!(hit(&rt, get("/api/42/v3", "x")), Some(3));
    let m = find(&rt, &get("/api/42/v3", "x")).expect("a match");
    assert!(m
        .captures
        .iter()
        .any(|(n, v)| n.as_deref() == Some("id") && v == "42"));
    // (The test helpers also run the reference matcher, which compiles
    // every path regex it tries.)
    let warmed = rt.warm(&|| true);
    assert!(warmed >= 1, "{warmed}");
    assert_eq!(rt.warm(&|| true), 0);
    assert_eq!(hit(&rt, get("/api/7/v5", "x")), Some(5));
    // A stopped warm-up compiles nothing.
    let rt = router(&routes);
    assert_eq!(rt.warm(&|| false), 0);
}

#[test]
fn bad_regexes_are_refused_when_the_router_is_built() {
    let e = Router::new(vec![r(1).paths(&["~/a("]).0]).expect_err("bad path regex");
    assert!(e.to_string().contains("paths"), "{e}");
    let e = Router::new(vec![r(1).paths(&["/a"]).header("x", &["~*b("]).0])
        .expect_err("bad header regex");
    assert!(e.to_string().contains("headers"), "{e}");
}
