//! The `cors` plugin (Kong's `kong/plugins/cors`): answers preflight
//! requests itself (OPTIONS with `Origin` and
//! `Access-Control-Request-Method`: 200 with an empty body, unless
//! `preflight_continue`), and adds the CORS headers to every other
//! response in header_filter, Kong's own answers included.

use std::sync::Arc;

use async_trait::async_trait;
use config_sync::schema::{array, boolean, number, string, PluginSchema, Record, PROTOCOLS_HTTP};
use config_sync::validate::pcre_to_rust_regex;
use pingora::http::ResponseHeader;
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "cors";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 2000,
    version: VERSION,
    schema,
    build,
};

const METHODS: [&str; 9] = [
    "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

fn schema() -> PluginSchema {
    let config = Record::new(vec![
        ("origins", array(string().custom(asterisk_or_regex))),
        ("headers", array(string())),
        ("exposed_headers", array(string())),
        (
            "methods",
            array(string().one_of(&METHODS)).default(json!(METHODS)),
        ),
        ("max_age", number()),
        ("credentials", boolean().required().default(false)),
        ("private_network", boolean().required().default(false)),
        ("preflight_continue", boolean().required().default(false)),
        ("allow_origin_absent", boolean().required().default(true)),
    ]);
    PluginSchema {
        name: NAME,
        config,
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        // typedefs.no_consumer
        no_consumer: true,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// `validate_asterisk_or_regex`: `*` or a pattern that compiles (Kong:
/// `ngx.re.match("any string", value)` without a compile error).
fn asterisk_or_regex(v: &Value) -> Result<(), String> {
    let Some(s) = v.as_str() else { return Ok(()) };
    if s == "*" || compile(s).is_some() {
        Ok(())
    } else {
        Err(format!("'{s}' is not a valid regex"))
    }
}

/// A PCRE pattern in the `regex` crate (named groups translated).
fn compile(pattern: &str) -> Option<Regex> {
    if stacked_quantifier(pattern) {
        return None;
    }
    Regex::new(&pcre_to_rust_regex(pattern)).ok()
}

/// Whether a quantifier follows a quantifier (`a**`, `a{2}{3}`, `a*?+`):
/// "nothing to repeat" for PCRE, which allows only one `?` (lazy) or `+`
/// (possessive) after a quantifier, while the `regex` crate accepts any
/// stack of them.
fn stacked_quantifier(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    // 0: after an atom, 1: after a quantifier, 2: after its `?`/`+`.
    let mut state = 0u8;
    let mut i = 0;
    while i < b.len() {
        let quantifier_len = match b[i] {
            b'*' | b'+' | b'?' => 1,
            b'{' => counted_repetition(&b[i..]),
            _ => 0,
        };
        if quantifier_len > 0 {
            match (state, b[i]) {
                (1, b'+' | b'?') => state = 2,
                (1 | 2, _) => return true,
                _ => state = 1,
            }
            i += quantifier_len;
            continue;
        }
        state = 0;
        match b[i] {
            b'\\' => i += 2,
            b'[' => {
                // A class ends at the first `]` not right after `[` / `[^`.
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    false
}

/// Length of a `{n}`, `{n,}` or `{n,m}` quantifier at the start of `b`
/// (0 when it is not one: PCRE reads such a brace literally).
fn counted_repetition(b: &[u8]) -> usize {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return 0;
    }
    if b.get(i) == Some(&b',') {
        i += 1;
        digits(&mut i);
    }
    if b.get(i) == Some(&b'}') {
        i + 1
    } else {
        0
    }
}

#[derive(Debug, Deserialize)]
struct Config {
    origins: Option<Vec<String>>,
    headers: Option<Vec<String>>,
    exposed_headers: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    max_age: Option<f64>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
}

/// A request origin split the way `normalize_origin` does (LuaSocket's
/// `url.parse`): `domain` is `scheme://host[:port]` without the scheme's
/// default port; an origin without `//authority` is its own host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    domain: String,
    host: String,
}

fn normalize_origin(origin: &str) -> Origin {
    let mut rest = origin;
    // scheme: ^[%w][%w+-.]*:
    let mut scheme: Option<&str> = None;
    if let Some(i) = rest.find(':') {
        let cand = &rest[..i];
        let mut chars = cand.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if valid {
            scheme = Some(cand);
            rest = &rest[i + 1..];
        }
    }
    // authority: ^//([^/?#]*)
    let Some(after) = rest.strip_prefix("//") else {
        return Origin {
            domain: origin.to_string(),
            host: origin.to_string(),
        };
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let mut authority = &after[..end];
    // userinfo: ^([^@]*)@
    if let Some(i) = authority.find('@') {
        authority = &authority[i + 1..];
    }
    // port: :([^:%]]*)$
    let mut port: Option<&str> = None;
    if let Some(i) = authority.rfind(':') {
        let p = &authority[i + 1..];
        if !p.contains(']') {
            port = Some(p);
            authority = &authority[..i];
        }
    }
    if authority.is_empty() {
        return Origin {
            domain: origin.to_string(),
            host: origin.to_string(),
        };
    }
    // IPv6: ^%[(.+)%]$
    let host = match authority
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
    {
        Some(inner) if !inner.is_empty() => inner,
        _ => authority,
    };
    if (scheme == Some("http") && port == Some("80"))
        || (scheme == Some("https") && port == Some("443"))
    {
        port = None;
    }
    let mut domain = String::new();
    if let Some(s) = scheme {
        domain.push_str(s);
        domain.push_str("://");
    }
    domain.push_str(host);
    if let Some(p) = port {
        domain.push(':');
        domain.push_str(p);
    }
    Origin {
        domain,
        host: host.to_string(),
    }
}

/// One configured origin, prepared as `configure_origin` caches it.
#[derive(Debug)]
enum Allowed {
    /// A regex (any character outside `[A-Za-z0-9.:/-]`): Kong appends `$`
    /// and drops a leading `^`, then matches anchored at the start; against
    /// the request's host when the entry has no `:`, else its domain.
    Regex { re: Regex, by_host: bool },
    /// A plain origin: equal to the request's normalized domain.
    Plain(String),
}

/// How the configured origins answer.
#[derive(Debug)]
enum Origins {
    /// No origins, or just `*`: `*`, without `Vary`.
    Any,
    /// One plain entry: sent as is, whatever the request's `Origin`.
    Fixed(String),
    /// Matched against the request's `Origin`. `star`: a `*` entry, which
    /// answers `*` to any request with an `Origin` (Kong's scan stops
    /// there, and never caches a list holding one).
    List { star: bool, list: Vec<Allowed> },
}

fn prepare_origins(origins: &[String]) -> Origins {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b))
    };
    match origins {
        [] => return Origins::Any,
        [one] if one == "*" => return Origins::Any,
        [one] if plain(one) => return Origins::Fixed(one.clone()),
        _ => {}
    }
    let star = origins.iter().any(|o| o == "*");
    let mut list = Vec::with_capacity(origins.len());
    for entry in origins {
        if entry == "*" {
            continue;
        }
        if plain(entry) {
            list.push(Allowed::Plain(normalize_origin(entry).domain));
            continue;
        }
        let mut e = entry.clone();
        if !e.ends_with('$') {
            e.push('$');
        }
        if let Some(stripped) = e.strip_prefix('^') {
            e = stripped.to_string();
        }
        let by_host = !e.contains(':');
        // Kong matches with the `a` (anchored) flag: the start is anchored
        // for every alternative, the end only where `$` applies.
        match compile(&format!("^(?:{e})")) {
            Some(re) => list.push(Allowed::Regex { re, by_host }),
            // Refused by the schema; a pattern that still fails matches
            // nothing (Kong logs the error and finds no match).
            None => log::error!("cors: could not compile origin pattern '{entry}'"),
        }
    }
    Origins::List { star, list }
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Config = serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    let origins = prepare_origins(conf.origins.as_deref().unwrap_or_default());
    let join = |v: &Option<Vec<String>>| v.as_ref().filter(|v| !v.is_empty()).map(|v| v.join(","));
    Ok(Arc::new(Cors {
        origins,
        allow_headers: join(&conf.headers),
        exposed_headers: join(&conf.exposed_headers),
        methods: conf
            .methods
            .as_ref()
            .map_or_else(|| METHODS.join(","), |m| m.join(",")),
        max_age: conf.max_age.map(lua_number),
        credentials: conf.credentials,
        private_network: conf.private_network,
        preflight_continue: conf.preflight_continue,
        allow_origin_absent: conf.allow_origin_absent,
    }))
}

/// `tostring(n)` of a Lua number: integers without a fraction.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

struct Cors {
    origins: Origins,
    allow_headers: Option<String>,
    exposed_headers: Option<String>,
    methods: String,
    max_age: Option<String>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
}

/// `kong.ctx.plugin.skip_response_headers`: a preflight was answered (or
/// passed on) in access.
#[derive(Default)]
struct SkipHeaders(bool);

/// Response header edits, applied to an exit in access or to the response
/// in header_filter.
#[derive(Default)]
struct Edits {
    /// `(name, value, append)`; `None` clears the header.
    ops: Vec<(&'static str, Option<String>, bool)>,
}

impl Edits {
    fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.ops.push((name, Some(value.into()), false));
    }

    fn clear(&mut self, name: &'static str) {
        self.ops.push((name, None, false));
    }

    /// `add_vary_header`: `add_header` in header_filter, `set_header` in
    /// access.
    fn vary(&mut self, header_filter: bool) {
        self.ops
            .push(("Vary", Some("Origin".into()), header_filter));
    }
}

fn origin_provided(origin: Option<&str>) -> Option<&str> {
    origin.filter(|o| !o.is_empty())
}

impl Cors {
    /// `configure_origin`: whether the answer allows every origin.
    fn configure_origin(&self, e: &mut Edits, header_filter: bool, origin: Option<&str>) -> bool {
        let list = match &self.origins {
            Origins::Any => {
                e.set("Access-Control-Allow-Origin", "*");
                return true;
            }
            Origins::Fixed(one) => {
                e.vary(header_filter);
                e.set("Access-Control-Allow-Origin", one.clone());
                return false;
            }
            Origins::List { star, list } => (*star, list),
        };
        let (star, list) = list;
        e.vary(header_filter);
        if let Some(req) = origin_provided(origin) {
            if star {
                e.set("Access-Control-Allow-Origin", "*");
                return true;
            }
            let n = normalize_origin(req);
            let found = list.iter().any(|a| match a {
                Allowed::Regex { re, by_host } => {
                    re.is_match(if *by_host { &n.host } else { &n.domain })
                }
                Allowed::Plain(domain) => *domain == n.domain,
            });
            if found {
                e.set("Access-Control-Allow-Origin", n.domain);
                return false;
            }
        }
        e.clear("Access-Control-Allow-Origin");
        false
    }

    /// `configure_credentials`.
    fn configure_credentials(
        &self,
        e: &mut Edits,
        allow_all: bool,
        header_filter: bool,
        origin: Option<&str>,
    ) {
        if !self.credentials {
            return;
        }
        if !allow_all {
            e.set("Access-Control-Allow-Credentials", "true");
            return;
        }
        // `*` cannot go with credentials: echo the request's origin.
        if let Some(req) = origin_provided(origin) {
            e.vary(header_filter);
            e.set("Access-Control-Allow-Origin", req);
            e.set("Access-Control-Allow-Credentials", "true");
        }
    }
}

fn apply(edits: Edits, resp: &mut ResponseHeader) {
    for (name, value, append) in edits.ops {
        let r = match value {
            None => {
                resp.remove_header(name);
                Ok(())
            }
            Some(v) if append => resp.append_header(name, v).map(|_| ()),
            Some(v) => resp.insert_header(name, v),
        };
        if r.is_err() {
            log::debug!("cors: header {name} not set");
        }
    }
}

#[async_trait]
impl Plugin for Cors {
    fn phases(&self) -> Phases {
        Phases::ACCESS | Phases::HEADER_FILTER
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let origin = kong.header("origin").map(str::to_string);
        let preflight = kong.method() == http::Method::OPTIONS
            && origin_provided(origin.as_deref()).is_some()
            && kong.headers().contains_key("access-control-request-method");
        if !preflight {
            return Ok(());
        }
        // Delegated to the upstream, or answered here with every header.
        kong.state::<SkipHeaders>().0 = true;
        if self.preflight_continue {
            return Ok(());
        }
        let mut e = Edits::default();
        let allow_all = self.configure_origin(&mut e, false, origin.as_deref());
        self.configure_credentials(&mut e, allow_all, false, origin.as_deref());
        match &self.allow_headers {
            Some(h) => e.set("Access-Control-Allow-Headers", h.clone()),
            None => match kong.header("access-control-request-headers") {
                Some(h) => e.set("Access-Control-Allow-Headers", h),
                None => e.clear("Access-Control-Allow-Headers"),
            },
        }
        e.set("Access-Control-Allow-Methods", self.methods.clone());
        if let Some(age) = &self.max_age {
            e.set("Access-Control-Max-Age", age.clone());
        }
        if self.private_network
            && kong.header("access-control-request-private-network") == Some("true")
        {
            e.set("Access-Control-Allow-Private-Network", "true");
        }
        // `kong.response.exit(200)`: the headers set in access go with it.
        let mut exit = Exit::status(200);
        let mut set: Vec<(&str, String)> = Vec::new();
        for (name, value, _) in e.ops {
            set.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                set.push((name, v));
            }
        }
        for (name, value) in set {
            exit = exit.header(name, value);
        }
        Err(exit)
    }

    fn header_filter(&self, kong: &mut Kong<'_>, resp: &mut ResponseHeader) {
        if kong.state::<SkipHeaders>().0 {
            return;
        }
        let origin = kong.header("origin").map(str::to_string);
        if origin_provided(origin.as_deref()).is_none() && !self.allow_origin_absent {
            return;
        }
        let mut e = Edits::default();
        let allow_all = self.configure_origin(&mut e, true, origin.as_deref());
        self.configure_credentials(&mut e, allow_all, true, origin.as_deref());
        if let Some(h) = &self.exposed_headers {
            e.set("Access-Control-Expose-Headers", h.clone());
        }
        apply(e, resp);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;

    fn errors(v: Value) -> Vec<(String, String)> {
        match validate_record(&schema().config, &v, "config") {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn schema_matches_kongs_spec() {
        // 02-schema_spec.lua
        assert!(errors(json!({"origins": ["*"]})).is_empty());
        assert!(errors(json!({"origins": ["example.com"]})).is_empty());
        assert!(errors(json!({"origins": [r".*\.example(?:-foo)?\.com"]})).is_empty());
        assert_eq!(
            errors(json!({"origins": [".*.example.com", "invalid_**regex"]})),
            vec![(
                "config.origins.2".into(),
                "'invalid_**regex' is not a valid regex".into()
            )]
        );
        for m in METHODS {
            assert!(errors(json!({ "methods": [m] })).is_empty(), "{m}");
        }
        assert_eq!(
            errors(json!({"methods": ["FAKE"]})),
            vec![(
                "config.methods.1".into(),
                "expected one of: GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT"
                    .into()
            )]
        );
        let v = validate_record(&schema().config, &json!({}), "config").unwrap();
        assert_eq!(v["methods"], json!(METHODS));
        assert_eq!(v["allow_origin_absent"], json!(true));
    }

    #[test]
    fn stacked_quantifiers_are_refused_as_pcre_does() {
        for bad in ["invalid_**regex", "a**", "a{2}{3}", "a*?+", "a+*", "a??*"] {
            assert!(stacked_quantifier(bad), "{bad}");
            assert!(asterisk_or_regex(&json!(bad)).is_err(), "{bad}");
        }
        for ok in [
            "a*?",
            "a*+",
            "a??",
            "[*+]*",
            r"\**",
            "a{2}?",
            "a{x}*",
            r"(.*\.)?foo\.test",
        ] {
            assert!(!stacked_quantifier(ok), "{ok}");
        }
    }

    #[test]
    fn origins_normalize_like_luasockets_url_parse() {
        let n = |s: &str| {
            let o = normalize_origin(s);
            (o.domain, o.host)
        };
        let own = |s: &str| (s.to_string(), s.to_string());
        assert_eq!(
            n("http://foo.test:80"),
            ("http://foo.test".into(), "foo.test".into())
        );
        assert_eq!(
            n("https://foo.test:443"),
            ("https://foo.test".into(), "foo.test".into())
        );
        assert_eq!(
            n("https://foo.test:80"),
            ("https://foo.test:80".into(), "foo.test".into())
        );
        assert_eq!(
            n("http://foo.test:8000/path?x#y"),
            ("http://foo.test:8000".into(), "foo.test".into())
        );
        assert_eq!(
            n("http://u:p@foo.test"),
            ("http://foo.test".into(), "foo.test".into())
        );
        assert_eq!(
            n("http://[::1]:8000"),
            ("http://::1:8000".into(), "::1".into())
        );
        // No `//`: no host; the origin is its own domain and host.
        assert_eq!(n("example.test"), own("example.test"));
        assert_eq!(n("foo.test:80"), own("foo.test:80"));
        assert_eq!(n("http:"), own("http:"));
    }

    fn allowed(origins: &[&str], req: &str) -> Option<String> {
        let cors = Cors {
            origins: prepare_origins(&origins.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            allow_headers: None,
            exposed_headers: None,
            methods: String::new(),
            max_age: None,
            credentials: false,
            private_network: false,
            preflight_continue: false,
            allow_origin_absent: true,
        };
        let mut e = Edits::default();
        cors.configure_origin(&mut e, false, Some(req));
        e.ops
            .into_iter()
            .rev()
            .find(|(n, _, _)| *n == "Access-Control-Allow-Origin")
            .and_then(|(_, v, _)| v)
    }

    #[test]
    fn origin_matching_follows_kongs_regex_rules() {
        // Single plain entry: always that value.
        assert_eq!(
            allowed(&["foo.test"], "http://evil.test").as_deref(),
            Some("foo.test")
        );
        // Regex without ':' matches the host, anchored both ends.
        let re = &[r"foo\.test"];
        assert_eq!(
            allowed(re, "http://foo.test:8000").as_deref(),
            Some("http://foo.test:8000")
        );
        assert_eq!(
            allowed(re, "http://foo.test:80").as_deref(),
            Some("http://foo.test")
        );
        assert_eq!(allowed(re, "http://evilfoo.test"), None);
        assert_eq!(allowed(re, "http://foo.test.evil.test"), None);
        // With ':' it matches the whole normalized domain.
        let re = &[r"(.*[./])?foo\.test:8000"];
        assert!(allowed(re, "https://foo.test:8000").is_some());
        assert_eq!(allowed(re, "http://foo.test:90"), None);
        let re = &[r"^http://(.*[.])?foo\.test(:(80|90))?$"];
        assert_eq!(
            allowed(re, "http://foo.test:80").as_deref(),
            Some("http://foo.test")
        );
        assert!(allowed(re, "http://something.foo.test").is_some());
        assert_eq!(allowed(re, "http://foo.test:8000"), None);
        // Several plain entries compare normalized domains.
        let plain = &["http://foo.test", "https://bar.test:1234"];
        assert_eq!(
            allowed(plain, "http://foo.test:80").as_deref(),
            Some("http://foo.test")
        );
        assert_eq!(allowed(&["foo.test", "bar.test"], "http://foo.test"), None);
        // `*` among several: anything.
        assert_eq!(
            allowed(&["foo.bar", "*"], "http://x.test").as_deref(),
            Some("*")
        );
        // Anchored start, unanchored alternative end (PCRE's `a` flag).
        assert!(allowed(&["a.test|b"], "http://a.test").is_some());
        assert!(allowed(&["a.test|b"], "http://xb").is_none());
    }
}
