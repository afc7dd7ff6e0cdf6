//! The `request-transformer` plugin (Kong's
//! `kong/plugins/request-transformer`): changes the method, the path, the
//! headers, the query string and the body (JSON, urlencoded, multipart) of
//! the request to the upstream, in Kong's order: uri, method, headers,
//! body, query (`access.lua:506-558`).
//!
//! Values are Penlight templates (`$(expr)`). Kong evaluates them as Lua in
//! its sandbox; this gateway evaluates the forms Kong documents for them:
//! `headers.<name>` / `headers['x-y']`, `query_params.<name>`,
//! `uri_captures.<name>` / `uri_captures[<n>]`, `shared.<key>` (nested
//! keys allowed), string and number literals, parentheses and `or`. A value
//! with any other expression is refused when the config is loaded, with a
//! message naming the field, instead of being sent through.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use config_sync::schema::{array, string, Field, PluginSchema, Record};
use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::response_transformer::{
    append_json_value, cjson_encode, lua_number, lua_truthy, split_pair, validate_headers,
    COLON_PAIR,
};
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "request-transformer";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 801,
    version: VERSION,
    schema,
    build,
};

/// `typedefs.protocols`: any of Kong's protocols; http ones by default.
const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];

// ---------------------------------------------------------------------------
// schema (`kong/plugins/request-transformer/schema.lua`)

/// Kong's `check_for_value`: `name:value` with a value that compiles as a
/// template (here: one this gateway can evaluate).
fn check_for_value(v: &Value) -> Result<(), String> {
    let Some(entry) = v.as_str() else {
        return Ok(());
    };
    match split_pair(entry) {
        Some((_, "")) | None => {
            let name = split_pair(entry).map_or("", |(n, _)| n);
            Err(format!("key '{name}' has no value"))
        }
        Some((_, value)) => check_template(value),
    }
}

/// The value part of an entry Kong does not check, refused when it holds a
/// template expression this gateway cannot evaluate.
fn check_entry_template(v: &Value) -> Result<(), String> {
    match v.as_str().and_then(split_pair) {
        Some((_, value)) if !value.is_empty() => check_template(value),
        _ => Ok(()),
    }
}

fn check_uri(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some(s) => check_template(s),
        None => Ok(()),
    }
}

fn check_template(value: &str) -> Result<(), String> {
    Template::parse(value)
        .map(|_| ())
        .map_err(|e| format!("value '{value}' is not in supported format, error:{e}"))
}

fn schema() -> PluginSchema {
    let list = |el: Field| array(el).required().default(serde_json::json!([]));
    // remove.body / remove.querystring
    let strings = || list(string().custom(check_entry_template));
    // remove.headers
    let headers = || {
        list(
            string()
                .custom(|v| validate_headers(v, false))
                .custom(check_entry_template),
        )
    };
    // rename/replace/add/append .body / .querystring
    let colon_strings = || list(string().custom(check_for_value));
    // replace/add/append .headers
    let colon_header_values = || {
        list(
            string()
                .matches(COLON_PAIR, None)
                .custom(|v| validate_headers(v, false))
                .custom(check_entry_template),
        )
    };
    // rename.headers
    let colon_headers = || {
        list(
            string()
                .matches(COLON_PAIR, None)
                .custom(|v| validate_headers(v, true)),
        )
    };
    let rec = config_sync::schema::record;
    let colon_record = || {
        rec(vec![
            ("body", colon_strings()),
            ("headers", colon_header_values()),
            ("querystring", colon_strings()),
        ])
    };
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("http_method", string().matches("^[A-Z]+$", None)),
            (
                "remove",
                rec(vec![
                    ("body", strings()),
                    ("headers", headers()),
                    ("querystring", strings()),
                ]),
            ),
            (
                "rename",
                rec(vec![
                    ("body", colon_strings()),
                    ("headers", colon_headers()),
                    ("querystring", colon_strings()),
                ]),
            ),
            (
                "replace",
                rec(vec![
                    ("body", colon_strings()),
                    ("headers", colon_header_values()),
                    ("querystring", colon_strings()),
                    ("uri", string().custom(check_uri)),
                ]),
            ),
            ("add", colon_record()),
            ("append", colon_record()),
        ]),
        default_protocols: config_sync::schema::PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// templates (Penlight's `pl.template` with Kong's options)

/// A compiled value: literal text and `$(expr)` pieces, and its source.
#[derive(Debug, Clone)]
struct Template(Vec<Piece>, String);

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Str(String),
    Num(f64),
    Path(Root, Vec<Key>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Headers,
    QueryParams,
    UriCaptures,
    Shared,
}

#[derive(Debug, Clone, PartialEq)]
enum Key {
    Name(String),
    Index(i64),
}

impl Template {
    /// Penlight's `parseDollarParen`: `$` followed by a balanced `( )` (parens
    /// counted as they come, quotes or not) is an expression; anything else,
    /// an unbalanced `$(` included, is text.
    fn parse(s: &str) -> Result<Template, String> {
        let b = s.as_bytes();
        let mut pieces = Vec::new();
        let mut text_from = 0;
        let mut i = 0;
        while i + 1 < b.len() {
            if b[i] == b'$' && b[i + 1] == b'(' {
                let mut depth = 0usize;
                let mut close = None;
                for (j, &c) in b.iter().enumerate().skip(i + 1) {
                    if c == b'(' {
                        depth += 1;
                    } else if c == b')' {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(j);
                            break;
                        }
                    }
                }
                if let Some(j) = close {
                    if text_from < i {
                        pieces.push(Piece::Text(s[text_from..i].to_string()));
                    }
                    let inner = &s[i + 2..j];
                    pieces.push(Piece::Expr(
                        parse_expr(inner)
                            .map_err(|e| format!(" cannot evaluate '$({inner})': {e}"))?,
                    ));
                    text_from = j + 1;
                    i = j + 1;
                    continue;
                }
            }
            i += 1;
        }
        if text_from < s.len() {
            pieces.push(Piece::Text(s[text_from..].to_string()));
        }
        Ok(Template(pieces, s.to_string()))
    }

    fn is_plain(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Piece::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// `compiled_template:render(template_env)`: each expression as
    /// `tostring(expr or '')`. Errors carry Kong's message.
    fn render(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<String, String> {
        self.render_inner(env, kong)
            .map_err(|e| format!("failed to render the template {}, error:{e}", self.1))
    }

    fn render_inner(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<String, String> {
        if let Some(t) = self.is_plain() {
            return Ok(t.to_string());
        }
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(e) => out.push_str(&eval(e, env, kong)?.to_lua_string()),
            }
        }
        Ok(out)
    }
}

const SUPPORTED: &str = "this gateway evaluates only headers.<name>, query_params.<name>, \
    uri_captures.<name|n>, shared.<key>, string and number literals, parentheses and 'or'";

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push(Tok::Dot);
                i += 1;
            }
            b'[' if matches!(b.get(i + 1), Some(b'[' | b'=')) => {
                return Err(format!("long strings are not supported; {SUPPORTED}"));
            }
            b'[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            b']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b'\'' | b'"' => {
                let (lit, next) = lua_string(s, i)?;
                out.push(Tok::Str(lit));
                i = next;
            }
            c if c.is_ascii_digit() || c == b'.' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    // an exponent sign belongs to the number
                    if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    i += 1;
                }
                let lit = &s[start..i];
                let n = super::response_transformer::lua_tonumber(lit)
                    .ok_or_else(|| format!("malformed number near '{lit}'"))?;
                out.push(Tok::Num(n));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => {
                let rest: String = s[i..].chars().take(1).collect();
                return Err(format!("unsupported '{rest}'; {SUPPORTED}"));
            }
        }
    }
    Ok(out)
}

/// A Lua short string literal starting at `start` (a quote): its value and
/// the index after the closing quote.
fn lua_string(s: &str, start: usize) -> Result<(String, usize), String> {
    let b = s.as_bytes();
    let quote = b[start];
    let mut out: Vec<u8> = Vec::new();
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if c == quote {
            return Ok((String::from_utf8_lossy(&out).into_owned(), i + 1));
        }
        match c {
            b'\n' => return Err("unfinished string".into()),
            b'\\' => {
                let e = *b.get(i + 1).ok_or("unfinished string")?;
                i += 2;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'v' => out.push(11),
                    b'\\' | b'\'' | b'"' | b'\n' => out.push(e),
                    d if d.is_ascii_digit() => {
                        let mut n = u32::from(d - b'0');
                        for _ in 0..2 {
                            match b.get(i) {
                                Some(x) if x.is_ascii_digit() => {
                                    n = n * 10 + u32::from(x - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        let byte = u8::try_from(n).map_err(|_| "escape sequence too large")?;
                        out.push(byte);
                    }
                    _ => return Err("invalid escape sequence".into()),
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("unfinished string".into())
}

fn parse_expr(s: &str) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or_expr()?;
    match p.peek() {
        None => Ok(e),
        Some(Tok::Ident(k)) => Err(format!("unsupported '{k}'; {SUPPORTED}")),
        Some(t) => Err(format!("unexpected {t:?}; {SUPPORTED}")),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        while matches!(self.peek(), Some(Tok::Ident(k)) if k == "or") {
            self.pos += 1;
            let rhs = self.primary()?;
            e = Expr::Or(Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Expr::Str(s)),
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::LParen) => {
                let e = self.or_expr()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err("')' expected".into()),
                }
            }
            Some(Tok::Ident(name)) => {
                let root = match name.as_str() {
                    "headers" => Root::Headers,
                    "query_params" => Root::QueryParams,
                    "uri_captures" => Root::UriCaptures,
                    "shared" => Root::Shared,
                    other => return Err(format!("unsupported name '{other}'; {SUPPORTED}")),
                };
                let mut keys = Vec::new();
                loop {
                    match self.peek() {
                        Some(Tok::Dot) => {
                            self.pos += 1;
                            match self.next() {
                                Some(Tok::Ident(k)) => keys.push(Key::Name(k)),
                                _ => return Err("name expected after '.'".into()),
                            }
                        }
                        Some(Tok::LBracket) => {
                            self.pos += 1;
                            let key = match self.next() {
                                Some(Tok::Str(k)) => Key::Name(k),
                                Some(Tok::Num(n)) if n.fract() == 0.0 && n.abs() < 1e15 => {
                                    Key::Index(n as i64)
                                }
                                _ => {
                                    return Err(format!(
                                    "only a string or an integer index is supported; {SUPPORTED}"
                                ))
                                }
                            };
                            if self.next() != Some(Tok::RBracket) {
                                return Err("']' expected".into());
                            }
                            keys.push(key);
                        }
                        Some(Tok::LParen) => {
                            return Err(format!("function calls are not supported; {SUPPORTED}"))
                        }
                        _ => break,
                    }
                }
                let ok = match root {
                    Root::Shared => !keys.is_empty(),
                    _ => keys.len() == 1,
                };
                if !ok {
                    return Err(format!("'{name}' must be indexed once; {SUPPORTED}"));
                }
                Ok(Expr::Path(root, keys))
            }
            Some(t) => Err(format!("unexpected {t:?}; {SUPPORTED}")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

/// A Lua value as far as templates see one.
#[derive(Debug, Clone, PartialEq)]
enum LVal {
    Nil,
    Bool(bool),
    Str(String),
    Num(f64),
    /// A header or query argument sent several times (a Lua array).
    List(Vec<Arg>),
    /// A table from `kong.ctx.shared`.
    Table(Value),
}

impl LVal {
    fn truthy(&self) -> bool {
        !matches!(self, LVal::Nil | LVal::Bool(false))
    }

    fn from_json(v: Option<&Value>) -> LVal {
        match v {
            None | Some(Value::Null) => LVal::Nil,
            Some(Value::Bool(b)) => LVal::Bool(*b),
            Some(Value::Number(n)) => LVal::Num(n.as_f64().unwrap_or(0.0)),
            Some(Value::String(s)) => LVal::Str(s.clone()),
            Some(t) => LVal::Table(t.clone()),
        }
    }

    fn from_arg(vals: &[Arg]) -> LVal {
        match vals {
            [None] => LVal::Bool(true),
            [Some(s)] => LVal::Str(s.clone()),
            _ => LVal::List(vals.to_vec()),
        }
    }

    /// Lua's `tostring`. A table has no useful text in Lua (`table:
    /// 0x...`): a list is joined with ", " and a shared table written as
    /// JSON instead.
    fn to_lua_string(&self) -> String {
        match self {
            LVal::Nil => String::new(),
            LVal::Bool(b) => b.to_string(),
            LVal::Str(s) => s.clone(),
            LVal::Num(n) => lua_number(*n),
            LVal::List(l) => l
                .iter()
                .map(|a| a.clone().unwrap_or_else(|| "true".into()))
                .collect::<Vec<_>>()
                .join(", "),
            LVal::Table(v) => cjson_encode(v),
        }
    }

    fn index(&self, key: &Key) -> Result<LVal, String> {
        match (self, key) {
            (LVal::Nil, _) => Err("attempt to index a nil value".into()),
            (LVal::Bool(_), _) => Err("attempt to index a boolean value".into()),
            (LVal::Num(_), _) => Err("attempt to index a number value".into()),
            (LVal::Str(_), _) => Ok(LVal::Nil),
            (LVal::List(l), Key::Index(i)) => Ok(usize::try_from(*i - 1)
                .ok()
                .and_then(|i| l.get(i))
                .map_or(LVal::Nil, |a| LVal::from_arg(std::slice::from_ref(a)))),
            (LVal::List(_), Key::Name(_)) => Ok(LVal::Nil),
            (LVal::Table(Value::Object(m)), Key::Name(n)) => Ok(LVal::from_json(m.get(n))),
            (LVal::Table(Value::Array(a)), Key::Index(i)) => Ok(LVal::from_json(
                usize::try_from(*i - 1).ok().and_then(|i| a.get(i)),
            )),
            (LVal::Table(_), _) => Ok(LVal::Nil),
        }
    }
}

fn eval(e: &Expr, env: &mut Env, kong: &mut Kong<'_>) -> Result<LVal, String> {
    match e {
        Expr::Str(s) => Ok(LVal::Str(s.clone())),
        Expr::Num(n) => Ok(LVal::Num(*n)),
        Expr::Or(a, b) => {
            let l = eval(a, env, kong)?;
            if l.truthy() {
                Ok(l)
            } else {
                eval(b, env, kong)
            }
        }
        Expr::Path(root, keys) => {
            let Some((first, rest)) = keys.split_first() else {
                return Ok(LVal::Nil);
            };
            let mut v = match (root, first) {
                (Root::Headers, Key::Name(n)) => {
                    let h = env.headers(kong);
                    h.get(n).map_or(LVal::Nil, |v| match v.as_slice() {
                        [one] => LVal::Str(one.clone()),
                        many => LVal::List(many.iter().cloned().map(Some).collect()),
                    })
                }
                (Root::QueryParams, Key::Name(n)) => env
                    .query(kong)
                    .iter()
                    .find(|(k, _)| k == n)
                    .map_or(LVal::Nil, |(_, v)| LVal::from_arg(v)),
                (Root::UriCaptures, Key::Index(i)) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| {
                        kong.uri_captures()
                            .iter()
                            .filter(|(n, _)| n.is_none())
                            .nth(i)
                            .map(|(_, v)| LVal::Str(v.clone()))
                    })
                    .unwrap_or(LVal::Nil),
                (Root::UriCaptures, Key::Name(n)) => kong
                    .uri_captures()
                    .iter()
                    .find(|(k, _)| k.as_deref() == Some(n.as_str()))
                    .map_or(LVal::Nil, |(_, v)| LVal::Str(v.clone())),
                (Root::Shared, Key::Name(n)) => LVal::from_json(kong.shared().get(n)),
                _ => LVal::Nil,
            };
            for k in rest {
                v = v.index(k)?;
            }
            Ok(v)
        }
    }
}

/// Kong's lazily loaded template environment: each table is read from the
/// request the first time a template uses it, then kept for the rest of
/// the phase (`access.lua:507-551`).
#[derive(Default)]
struct Env {
    headers: Option<HeaderTable>,
    query: Option<Args>,
}

impl Env {
    fn headers(&mut self, kong: &Kong<'_>) -> &HeaderTable {
        self.headers
            .get_or_insert_with(|| HeaderTable::from_request(kong))
    }

    fn query(&mut self, kong: &Kong<'_>) -> &Args {
        self.query
            .get_or_insert_with(|| decode_args(split_uri(kong.upstream_uri()).1.unwrap_or("")))
    }
}

// ---------------------------------------------------------------------------
// Lua tables Kong works on

/// `ngx.req.get_headers()`: lowercase names to values; looked up as given,
/// then lowercased with `_` read as `-` (its metatable).
#[derive(Debug, Clone, Default, PartialEq)]
struct HeaderTable(Vec<(String, Vec<String>)>);

impl HeaderTable {
    fn from_request(kong: &Kong<'_>) -> HeaderTable {
        let mut t = HeaderTable::default();
        for (k, v) in kong.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match t.0.iter_mut().find(|(n, _)| n == k.as_str()) {
                Some((_, vals)) => vals.push(v),
                None => t.0.push((k.as_str().to_string(), vec![v])),
            }
        }
        t
    }

    fn raw_get(&self, k: &str) -> Option<&Vec<String>> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    fn get(&self, k: &str) -> Option<&Vec<String>> {
        self.raw_get(k)
            .or_else(|| self.raw_get(&k.to_ascii_lowercase().replace('_', "-")))
    }

    fn raw_set(&mut self, k: &str, v: Option<Vec<String>>) {
        match (self.0.iter().position(|(n, _)| n == k), v) {
            (Some(i), Some(v)) => self.0[i].1 = v,
            (Some(i), None) => {
                self.0.remove(i);
            }
            (None, Some(v)) => self.0.push((k.to_string(), v)),
            (None, None) => {}
        }
    }
}

/// One argument's values, as `ngx.decode_args` gives them: `None` is a
/// bare `name` (Lua `true`); several values are a Lua array.
type Arg = Option<String>;
type Args = Vec<(String, Vec<Arg>)>;

fn args_get<'a>(args: &'a Args, k: &str) -> Option<&'a Vec<Arg>> {
    args.iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

fn args_set(args: &mut Args, k: &str, v: Option<Vec<Arg>>) {
    match (args.iter().position(|(n, _)| n == k), v) {
        (Some(i), Some(v)) => args[i].1 = v,
        (Some(i), None) => {
            args.remove(i);
        }
        (None, Some(v)) => args.push((k.to_string(), v)),
        (None, None) => {}
    }
}

/// Kong's `rename(tbl, old, new)` on an args table.
fn args_rename(args: &mut Args, old: &str, new: &str) -> bool {
    if old == new {
        return false;
    }
    match args_get(args, old).cloned() {
        Some(v) => {
            args_set(args, old, None);
            args_set(args, new, Some(v));
            true
        }
        None => false,
    }
}

/// Kong's `append_value` on an argument: a string becomes `{s, v}`, a
/// table gets `v` appended, `true` (or nothing) becomes `{v}`.
fn append_arg(cur: Option<Vec<Arg>>, v: String) -> Vec<Arg> {
    match cur {
        Some(c) if c.len() == 1 && c[0].is_none() => vec![Some(v)],
        Some(mut c) => {
            c.push(Some(v));
            c
        }
        None => vec![Some(v)],
    }
}

/// `ngx.decode_args` (and `ngx.req.get_uri_args`): `&`-separated, `+` is a
/// space, `%XX` decoded the way nginx does, empty names skipped.
fn decode_args(s: &str) -> Args {
    let mut out: Args = Vec::new();
    for seg in s.as_bytes().split(|&b| b == b'&') {
        let (k, v) = match seg.iter().position(|&b| b == b'=') {
            Some(i) => (&seg[..i], Some(&seg[i + 1..])),
            None => (seg, None),
        };
        if k.is_empty() {
            continue;
        }
        let k = String::from_utf8_lossy(&unescape(k)).into_owned();
        let v = v.map(|v| String::from_utf8_lossy(&unescape(v)).into_owned());
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vals)) => vals.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

/// `ngx_http_lua_unescape_uri` (component): `+` is a space; a `%` not
/// followed by two hex digits drops what it cannot decode, as nginx does.
fn unescape(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (s.get(i + 1).and_then(|&c| hex(c)), s.get(i + 2)) {
                (Some(h), Some(&c2)) => {
                    if let Some(l) = hex(c2) {
                        out.push(h << 4 | l);
                    }
                    i += 3;
                }
                (Some(_), None) => i += 2,
                (None, Some(_)) | (None, None) => {
                    if let Some(&c) = s.get(i + 1) {
                        out.push(c);
                    }
                    i += 2;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `ngx.escape_uri` for an argument (lua-nginx-module's component table:
/// everything but `A-Za-z0-9-._~!'()*`).
fn escape_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!'()*".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// `ngx.encode_args({ [k] = v })` for one argument.
fn encode_arg(k: &str, vals: &[Arg], out: &mut String) {
    let mut first = true;
    for v in vals {
        if !first {
            out.push('&');
        }
        first = false;
        escape_component(k, out);
        if let Some(v) = v {
            out.push('=');
            escape_component(v, out);
        }
    }
}

/// `ngx.encode_args(tbl)` (the urlencoded body), in the table's order.
fn encode_args(args: &Args) -> String {
    let mut out = String::new();
    for (k, vals) in args.iter().filter(|(_, v)| !v.is_empty()) {
        if !out.is_empty() {
            out.push('&');
        }
        encode_arg(k, vals, &mut out);
    }
    out
}

/// `kong.service.request.set_query`'s `make_ordered_args`: each argument
/// encoded alone, the pieces sorted.
fn ordered_args(args: &Args) -> String {
    let mut parts: Vec<String> = args
        .iter()
        .map(|(k, vals)| {
            let mut s = String::new();
            encode_arg(k, vals, &mut s);
            s
        })
        .collect();
    parts.sort();
    parts.join("&")
}

/// `$upstream_uri` as path and query.
fn split_uri(uri: &str) -> (&str, Option<&str>) {
    match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    }
}

/// `kong.service.request.set_query(args)`.
fn set_query(kong: &mut Kong<'_>, args: &Args) {
    let q = ordered_args(args);
    let path = split_uri(kong.upstream_uri()).0.to_string();
    // Kong appends "?" after its plugins when the request's URI ended with
    // one, or when there are arguments.
    let uri = if !q.is_empty() || kong.raw_target().ends_with('?') {
        format!("{path}?{q}")
    } else {
        path
    };
    kong.set_upstream_uri(uri);
}

// ---------------------------------------------------------------------------
// lua-multipart (0.5.9), as Kong uses it

#[derive(Debug, Clone)]
struct Part {
    headers: Vec<Vec<u8>>,
    value: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Multipart {
    boundary: Option<String>,
    data: Vec<Part>,
    /// Name to its parts' 1-based positions in `data`.
    indexes: Vec<(Vec<u8>, Vec<usize>)>,
}

/// lua-multipart's `is_header`: `%S:%s*%S`.
fn mp_is_header(v: &[u8]) -> bool {
    let ws = |c: u8| c.is_ascii_whitespace() || c == 11;
    v.iter().enumerate().any(|(i, &c)| {
        c == b':' && i > 0 && !ws(v[i - 1]) && v[i + 1..].iter().find(|&&x| !ws(x)).is_some()
    })
}

impl Multipart {
    /// `MultipartData.new(body, content_type)`.
    fn new(body: &[u8], content_type: &str) -> Multipart {
        // ";%s*boundary=(%S+)"
        let b = content_type.as_bytes();
        let boundary = (0..b.len())
            .find_map(|i| {
                if b[i] != b';' {
                    return None;
                }
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let v = content_type[j..].strip_prefix("boundary=")?;
                let end = v.find(|c: char| c.is_ascii_whitespace()).unwrap_or(v.len());
                (end > 0).then(|| v[..end].to_string())
            })
            .map(|b| {
                let q = |c: char| b.starts_with(c) && b.ends_with(c) && b.len() >= 2;
                if q('"') || q('\'') {
                    b[1..b.len() - 1].to_string()
                } else {
                    b
                }
            })
            .filter(|b| !b.is_empty());
        let mut m = Multipart {
            boundary: boundary.clone(),
            data: Vec::new(),
            indexes: Vec::new(),
        };
        if let Some(bd) = boundary {
            m.decode(body, bd.as_bytes());
        }
        m
    }

    fn index_of(&mut self, name: &[u8]) -> &mut Vec<usize> {
        let i = match self.indexes.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.indexes.push((name.to_vec(), Vec::new()));
                self.indexes.len() - 1
            }
        };
        &mut self.indexes[i].1
    }

    fn decode(&mut self, body: &[u8], boundary: &[u8]) {
        let mut part_name: Option<Vec<u8>> = None;
        let mut part_headers: Vec<Vec<u8>> = Vec::new();
        let mut part_value: Vec<&[u8]> = Vec::new();
        let end_boundary = boundary.len() + 2;
        let mut processing = false;
        let mut position = 0usize;
        loop {
            let s = body
                .get(position..)
                .and_then(|r| r.iter().position(|&c| c == b'\r' || c == b'\n'))
                .map(|i| position + i);
            let line: &[u8] = match s {
                Some(s) => {
                    let l = &body[position.min(s)..s];
                    position = s + 1;
                    l
                }
                None => body.get(position..).unwrap_or_default(),
            };
            if line.is_empty() {
                if let (Some(s), true) = (s, processing) {
                    part_value.push(&body[s..s + 1]);
                }
            } else if line.starts_with(b"--")
                && line.get(2..end_boundary.min(line.len())) == Some(boundary)
            {
                processing = false;
                if let Some(name) = part_name.take() {
                    if part_value.last() == Some(&&b"\n"[..]) {
                        part_value.pop();
                    }
                    if part_value.last() == Some(&&b"\r"[..]) {
                        part_value.pop();
                    }
                    self.data.push(Part {
                        headers: std::mem::take(&mut part_headers),
                        value: part_value.concat(),
                    });
                    let idx = self.data.len();
                    self.index_of(&name).push(idx);
                    part_value.clear();
                }
            } else if !processing
                && line.len() >= 19
                && line[..19].eq_ignore_ascii_case(b"content-disposition")
            {
                for v in line.split(|&c| c == b';').filter(|v| !v.is_empty()) {
                    if mp_is_header(v) {
                        continue;
                    }
                    let t = v.trim_ascii_start();
                    if t.len() >= 5 && t[..5].eq_ignore_ascii_case(b"name=") {
                        let rest = &t[5..];
                        let rest = rest.trim_ascii_start();
                        let end = rest.iter().position(|&c| c == b'=').unwrap_or(rest.len());
                        let cur = rest[..end].trim_ascii_end();
                        part_name = Some(if cur.len() >= 2 {
                            cur[1..cur.len() - 1].to_vec()
                        } else {
                            Vec::new()
                        });
                    }
                }
                part_headers.push(line.to_vec());
                if let Some(s) = s {
                    if body.get(s..s + 4) == Some(b"\r\n\r\n") {
                        processing = true;
                        position = s + 4;
                    }
                }
            } else if !processing && mp_is_header(line) {
                part_headers.push(line.to_vec());
                if let Some(s) = s {
                    if body.get(s..s + 4) == Some(b"\r\n\r\n") {
                        processing = true;
                        position = s + 4;
                    }
                }
            } else {
                processing = true;
                part_value.push(line);
                if let Some(s) = s {
                    part_value.push(&body[s..s + 1]);
                }
            }
            if s.is_none() {
                break;
            }
        }
        if let Some(name) = part_name {
            self.data.push(Part {
                headers: part_headers,
                value: part_value.concat(),
            });
            let idx = self.data.len();
            *self.index_of(&name) = vec![idx];
        }
    }

    fn get(&self, name: &[u8]) -> Option<&Part> {
        let (_, idx) = self.indexes.iter().find(|(n, _)| n == name)?;
        self.data.get(idx.first()?.checked_sub(1)?)
    }

    fn set_simple(&mut self, name: &[u8], value: Vec<u8>) {
        let mut header = b"Content-Disposition: form-data; name=\"".to_vec();
        header.extend_from_slice(name);
        header.push(b'"');
        let part = Part {
            headers: vec![header],
            value,
        };
        let existing = self
            .indexes
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, idx)| idx.first().copied());
        let at = match existing {
            Some(i) => i,
            None => {
                let max = self
                    .indexes
                    .iter()
                    .flat_map(|(_, v)| v.iter().copied())
                    .max()
                    .unwrap_or(0);
                *self.index_of(name) = vec![max + 1];
                max + 1
            }
        };
        match at.checked_sub(1) {
            Some(i) if i < self.data.len() => self.data[i] = part,
            _ => self.data.push(part),
        }
    }

    /// `MultipartData:delete`, with its renumbering.
    fn delete(&mut self, name: &[u8]) {
        let Some(pos) = self.indexes.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, removed) = self.indexes.remove(pos);
        for &index in &removed {
            // table.remove ignores a position past the end
            if index >= 1 && index <= self.data.len() {
                self.data.remove(index - 1);
            }
        }
        for (_, vals) in &mut self.indexes {
            for v in vals.iter_mut() {
                *v -= removed.iter().filter(|&&d| *v > d).count();
            }
        }
    }

    /// `MultipartData:tostring`.
    fn encode(&self) -> Vec<u8> {
        let boundary = self
            .boundary
            .clone()
            .unwrap_or_else(|| format!("0x{:012x}", rand::random::<u64>() >> 16));
        let mut out = Vec::new();
        for p in &self.data {
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
            for h in &p.headers {
                out.extend_from_slice(h);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&p.value);
            out.extend_from_slice(b"\r\n");
        }
        if out.is_empty() {
            return out;
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        out
    }
}

// ---------------------------------------------------------------------------
// config and handler

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Lists {
    body: Vec<String>,
    headers: Vec<String>,
    querystring: Vec<String>,
    uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Config {
    http_method: Option<String>,
    remove: Lists,
    rename: Lists,
    replace: Lists,
    add: Lists,
    append: Lists,
}

/// One `name:value` entry (Kong's `iter`): the value is `None` when empty.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    value: Option<Template>,
}

impl Entry {
    /// The rendered value (rendering also loads what the template reads,
    /// as Kong's `iter` does even where the value is not used).
    fn value(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<Option<String>, String> {
        self.value.as_ref().map(|t| t.render(env, kong)).transpose()
    }
}

#[derive(Debug, Default)]
struct Ops {
    remove: Vec<Entry>,
    rename: Vec<Entry>,
    replace: Vec<Entry>,
    add: Vec<Entry>,
    append: Vec<Entry>,
}

impl Ops {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

#[derive(Debug)]
struct RequestTransformer {
    http_method: Option<String>,
    uri: Option<Template>,
    headers: Ops,
    body: Ops,
    query: Ops,
}

fn entries(list: &[String]) -> Result<Vec<Entry>, String> {
    list.iter()
        // Kong's pattern does not match an empty entry or one starting with
        // ':' (Lua then fails on a nil name); such entries do nothing here.
        .filter_map(|p| split_pair(p))
        .map(|(n, v)| {
            Ok(Entry {
                name: n.to_string(),
                value: if v.is_empty() {
                    None
                } else {
                    Some(Template::parse(v)?)
                },
            })
        })
        .collect()
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let c: Config = serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    let ops = |pick: fn(&Lists) -> &Vec<String>| -> Result<Ops, String> {
        Ok(Ops {
            remove: entries(pick(&c.remove))?,
            rename: entries(pick(&c.rename))?,
            replace: entries(pick(&c.replace))?,
            add: entries(pick(&c.add))?,
            append: entries(pick(&c.append))?,
        })
    };
    let uri = match c.replace.uri.as_deref() {
        None | Some("") => None,
        Some(u) => Some(Template::parse(u).map_err(|e| format!("config.replace.uri: {e}"))?),
    };
    Ok(Arc::new(RequestTransformer {
        http_method: c.http_method.clone(),
        uri,
        headers: ops(|l| &l.headers)?,
        body: ops(|l| &l.body)?,
        query: ops(|l| &l.querystring)?,
    }))
}

/// `kong.service.request.set_method`'s accepted methods.
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "OPTIONS",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
    "TRACE",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyType {
    Json,
    Multipart,
    Form,
}

/// `get_content_type`: a case-insensitive substring match, JSON first.
fn body_type(content_type: Option<&str>) -> Option<BodyType> {
    let ct = content_type?.to_ascii_lowercase();
    if ct.contains("application/json") {
        Some(BodyType::Json)
    } else if ct.contains("multipart/form-data") {
        Some(BodyType::Multipart)
    } else if ct.contains("application/x-www-form-urlencoded") {
        Some(BodyType::Form)
    } else {
        None
    }
}

/// An error Kong raises in access: 500 "An unexpected error occurred".
fn fail(msg: String) -> Exit {
    log::error!("[{NAME}] {msg}");
    Exit::error(500, "An unexpected error occurred")
}

#[async_trait]
impl Plugin for RequestTransformer {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn needs_request_body(&self) -> bool {
        !self.body.is_empty()
            || matches!(self.http_method.as_deref(), Some("GET" | "HEAD" | "TRACE"))
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let mut env = Env::default();
        self.transform_uri(&mut env, kong)?;
        self.transform_method(kong)?;
        self.transform_headers(&mut env, kong)?;
        self.transform_body(&mut env, kong)?;
        self.transform_querystrings(&mut env, kong)?;
        Ok(())
    }
}

impl RequestTransformer {
    /// `transform_uri`: `replace.uri` rendered, escaped, as the upstream path.
    fn transform_uri(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let Some(t) = &self.uri else {
            return Ok(());
        };
        let path = t.render(env, kong).map_err(fail)?;
        if !path.starts_with('/') {
            return Err(fail("path must start with /".into()));
        }
        let escaped = crate::router::escape_uri(&path).into_owned();
        let uri = match split_uri(kong.upstream_uri()).1 {
            Some(q) => format!("{escaped}?{q}"),
            None => escaped,
        };
        kong.set_upstream_uri(uri);
        Ok(())
    }

    /// `transform_method`; to GET, HEAD or TRACE an urlencoded body's
    /// arguments are also added to the query.
    fn transform_method(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let Some(m) = &self.http_method else {
            return Ok(());
        };
        let upper = m.to_ascii_uppercase();
        let method = METHODS
            .contains(&upper.as_str())
            .then(|| Method::from_bytes(upper.as_bytes()).ok())
            .flatten()
            .ok_or_else(|| fail(format!("invalid method: {upper}")))?;
        kong.set_upstream_method(method);
        if !matches!(m.as_str(), "GET" | "HEAD" | "TRACE")
            || body_type(kong.header("content-type")) != Some(BodyType::Form)
        {
            return Ok(());
        }
        let body = kong.request_body().cloned().unwrap_or_default();
        let params = decode_args(&String::from_utf8_lossy(&body));
        if params.is_empty() {
            return Ok(());
        }
        let mut q = decode_args(split_uri(kong.upstream_uri()).1.unwrap_or(""));
        for (name, value) in params {
            let merged = match args_get(&q, &name) {
                Some(cur) => {
                    // A repeated body argument would nest a table in one:
                    // ngx.encode_args throws on that.
                    if value.len() > 1 {
                        return Err(fail(format!(
                            "attempt to use table as query arg value ({name})"
                        )));
                    }
                    let mut c = cur.clone();
                    c.extend(value);
                    c
                }
                None => value,
            };
            args_set(&mut q, &name, Some(merged));
        }
        set_query(kong, &q);
        Ok(())
    }

    /// `transform_headers` (`access.lua:163-232`): works on a copy of the
    /// request headers (without `host`), then clears the removed and renamed
    /// names and sets every header of the copy.
    fn transform_headers(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if self.headers.is_empty() {
            return Ok(());
        }
        let ops = &self.headers;
        let mut t = HeaderTable::from_request(kong);
        t.raw_set("host", None);
        let mut to_remove: Vec<String> = Vec::new();
        let remember = |n: String, list: &mut Vec<String>| {
            if !list.contains(&n) {
                list.push(n);
            }
        };
        let r = |e: &Entry, env: &mut Env, kong: &mut Kong<'_>| e.value(env, kong).map_err(fail);
        for e in &ops.remove {
            r(e, env, kong)?;
            let name = e.name.to_ascii_lowercase();
            if t.get(&name).is_some() {
                t.raw_set(&name, None);
                remember(name, &mut to_remove);
            }
        }
        for e in &ops.rename {
            let Some(new) = r(e, env, kong)? else {
                continue;
            };
            let (lo, ln) = (e.name.to_ascii_lowercase(), new.to_ascii_lowercase());
            // A change of case only renames the spelling.
            let (from, to) = if lo == ln {
                (e.name.clone(), new)
            } else {
                (lo, ln)
            };
            if from != to {
                if let Some(v) = t.get(&from).cloned() {
                    t.raw_set(&from, None);
                    t.raw_set(&to, Some(v));
                    remember(e.name.clone(), &mut to_remove);
                }
            }
        }
        for e in &ops.replace {
            let v = r(e, env, kong)?;
            let name = e.name.to_ascii_lowercase();
            if t.get(&name).is_some() || name == "host" {
                t.raw_set(&name, v.map(|v| vec![v]));
            }
        }
        for e in &ops.add {
            let v = r(e, env, kong)?;
            if t.get(&e.name).is_none() && !e.name.eq_ignore_ascii_case("host") {
                t.raw_set(&e.name, v.map(|v| vec![v]));
            }
        }
        for e in &ops.append {
            let v = r(e, env, kong)?;
            let name = e.name.as_str();
            let lc = name.to_ascii_lowercase();
            if lc != "host" && name != lc {
                if let Some(cur) = t.get(name).cloned() {
                    // keep the request's values under the configured case
                    t.raw_set(name, Some(cur));
                    t.raw_set(&lc, None);
                }
            }
            let mut vals = t.get(name).cloned().unwrap_or_default();
            vals.extend(v);
            t.raw_set(name, Some(vals));
        }
        for name in &to_remove {
            kong.clear_upstream_header(name);
        }
        for (name, vals) in &t.0 {
            let unchanged = !name.eq_ignore_ascii_case("host")
                && kong
                    .headers()
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .eq(vals.iter().map(|v| std::borrow::Cow::Borrowed(v.as_str())));
            if !unchanged {
                kong.set_upstream_header_values(name, vals);
            }
        }
        Ok(())
    }

    /// `transform_body`: JSON, urlencoded or multipart by Content-Type (as
    /// the header transform left it). Bodies larger than
    /// `client_body_buffer_size` are not read and stay as they are.
    fn transform_body(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if self.body.is_empty() {
            return Ok(());
        }
        let ct = kong.header("content-type").map(str::to_string);
        let Some(ty) = body_type(ct.as_deref()) else {
            return Ok(());
        };
        let Some(body) = kong.request_body().cloned() else {
            log::warn!(
                "[{NAME}] request body did not fit into client body buffer, consider raising 'client_body_buffer_size'"
            );
            return Ok(());
        };
        let out = match ty {
            BodyType::Form => self.transform_form(&body, env, kong),
            BodyType::Multipart => {
                self.transform_multipart(&body, ct.as_deref().unwrap_or(""), env, kong)
            }
            BodyType::Json => self.transform_json(&body, env, kong),
        }
        .map_err(fail)?;
        if let Some(new) = out {
            kong.set_upstream_body(Bytes::from(new));
        }
        Ok(())
    }

    fn transform_json(
        &self,
        body: &[u8],
        env: &mut Env,
        kong: &mut Kong<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        let ops = &self.body;
        let len = body.len();
        let mut p: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            // Keys set on a decoded array are not encoded (its array
            // metatable wins): Kong re-encodes it as it was.
            Ok(a @ Value::Array(_)) => {
                let touched = (len > 0 && !ops.remove.is_empty())
                    || !ops.add.is_empty()
                    || !ops.append.is_empty();
                return Ok(touched.then(|| cjson_encode(&a).into_bytes()));
            }
            // Lua cannot index a number, boolean or null, nor assign into a
            // string: Kong's access handler fails.
            Ok(Value::String(_)) => {
                let writes = (len > 0 && !ops.remove.is_empty())
                    || !ops.add.is_empty()
                    || !ops.append.is_empty();
                return if writes {
                    Err("attempt to index a string value".into())
                } else {
                    Ok(None)
                };
            }
            Ok(other) => {
                let any = (len > 0
                    && !(ops.remove.is_empty() && ops.rename.is_empty() && ops.replace.is_empty()))
                    || !ops.add.is_empty()
                    || !ops.append.is_empty();
                let ty = match other {
                    Value::Bool(_) => "boolean",
                    Value::Number(_) => "number",
                    _ => "userdata",
                };
                return if any {
                    Err(format!("attempt to index a {ty} value"))
                } else {
                    Ok(None)
                };
            }
            Err(_) if len > 0 => return Ok(None),
            Err(_) => Map::new(),
        };
        let mut changed = false;
        if len > 0 && !ops.remove.is_empty() {
            for e in &ops.remove {
                e.value(env, kong)?;
                p.shift_remove(&e.name);
                changed = true;
            }
        }
        if len > 0 && !ops.rename.is_empty() {
            for e in &ops.rename {
                let Some(new) = e.value(env, kong)? else {
                    continue;
                };
                if e.name != new && p.get(&e.name).is_some_and(lua_truthy) {
                    if let Some(v) = p.shift_remove(&e.name) {
                        p.insert(new, v);
                        changed = true;
                    }
                }
            }
        }
        if len > 0 && !ops.replace.is_empty() {
            for e in &ops.replace {
                let v = e.value(env, kong)?;
                if p.get(&e.name).is_some_and(lua_truthy) {
                    match v {
                        Some(v) => p.insert(e.name.clone(), Value::String(v)),
                        None => p.shift_remove(&e.name),
                    };
                    changed = true;
                }
            }
        }
        for e in &ops.add {
            let v = e.value(env, kong)?;
            if !p.get(&e.name).is_some_and(lua_truthy) {
                if let Some(v) = v {
                    p.insert(e.name.clone(), Value::String(v));
                }
                changed = true;
            }
        }
        for e in &ops.append {
            let v = e.value(env, kong)?;
            let cur = p.shift_remove(&e.name);
            let new = match v {
                Some(v) => append_json_value(cur, Value::String(v)),
                None => cur.unwrap_or(Value::Array(Vec::new())),
            };
            p.insert(e.name.clone(), new);
            changed = true;
        }
        Ok(changed.then(|| cjson_encode(&Value::Object(p)).into_bytes()))
    }

    fn transform_form(
        &self,
        body: &[u8],
        env: &mut Env,
        kong: &mut Kong<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        let ops = &self.body;
        let len = body.len();
        let mut p = decode_args(&String::from_utf8_lossy(body));
        let mut changed = false;
        if len > 0 && !ops.remove.is_empty() {
            for e in &ops.remove {
                e.value(env, kong)?;
                args_set(&mut p, &e.name, None);
                changed = true;
            }
        }
        if len > 0 && !ops.rename.is_empty() {
            for e in &ops.rename {
                if let Some(new) = e.value(env, kong)? {
                    changed |= args_rename(&mut p, &e.name, &new);
                }
            }
        }
        if len > 0 && !ops.replace.is_empty() {
            for e in &ops.replace {
                let v = e.value(env, kong)?;
                if args_get(&p, &e.name).is_some() {
                    args_set(&mut p, &e.name, v.map(|v| vec![Some(v)]));
                    changed = true;
                }
            }
        }
        for e in &ops.add {
            let v = e.value(env, kong)?;
            if args_get(&p, &e.name).is_none() {
                args_set(&mut p, &e.name, v.map(|v| vec![Some(v)]));
                changed = true;
            }
        }
        for e in &ops.append {
            let v = e.value(env, kong)?;
            let cur = args_get(&p, &e.name).cloned();
            let new = match v {
                Some(v) => append_arg(cur, v),
                None => cur.unwrap_or_default(),
            };
            args_set(&mut p, &e.name, Some(new));
            changed = true;
        }
        Ok(changed.then(|| encode_args(&p).into_bytes()))
    }

    /// `transform_multipart_body`: rename, remove, replace, add (Kong has
    /// no append for multipart).
    fn transform_multipart(
        &self,
        body: &[u8],
        content_type: &str,
        env: &mut Env,
        kong: &mut Kong<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        let ops = &self.body;
        let len = body.len();
        let mut p = Multipart::new(body, content_type);
        let mut changed = false;
        if len > 0 && !ops.rename.is_empty() {
            for e in &ops.rename {
                let Some(new) = e.value(env, kong)? else {
                    continue;
                };
                let old = e.name.as_bytes();
                if let Some(part) = p.get(old) {
                    if old != new.as_bytes() {
                        let v = part.value.clone();
                        p.set_simple(new.as_bytes(), v);
                        p.delete(old);
                        changed = true;
                    }
                }
            }
        }
        if len > 0 && !ops.remove.is_empty() {
            for e in &ops.remove {
                e.value(env, kong)?;
                p.delete(e.name.as_bytes());
                changed = true;
            }
        }
        if len > 0 && !ops.replace.is_empty() {
            for e in &ops.replace {
                let v = e.value(env, kong)?;
                if p.get(e.name.as_bytes()).is_some() {
                    p.delete(e.name.as_bytes());
                    p.set_simple(e.name.as_bytes(), v.unwrap_or_default().into_bytes());
                    changed = true;
                }
            }
        }
        for e in &ops.add {
            let v = e.value(env, kong)?;
            if p.get(e.name.as_bytes()).is_none() {
                p.set_simple(e.name.as_bytes(), v.unwrap_or_default().into_bytes());
                changed = true;
            }
        }
        Ok(changed.then(|| p.encode()))
    }

    /// `transform_querystrings`: on a copy of the template environment's
    /// `query_params`, then `set_query` (arguments sorted).
    fn transform_querystrings(&self, env: &mut Env, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let ops = &self.query;
        if ops.is_empty() {
            return Ok(());
        }
        let r = |e: &Entry, env: &mut Env, kong: &mut Kong<'_>| e.value(env, kong).map_err(fail);
        let mut q = env.query(kong).clone();
        for e in &ops.remove {
            r(e, env, kong)?;
            args_set(&mut q, &e.name, None);
        }
        for e in &ops.rename {
            if let Some(new) = r(e, env, kong)? {
                args_rename(&mut q, &e.name, &new);
            }
        }
        for e in &ops.replace {
            let v = r(e, env, kong)?;
            if args_get(&q, &e.name).is_some() {
                args_set(&mut q, &e.name, v.map(|v| vec![Some(v)]));
            }
        }
        for e in &ops.add {
            let v = r(e, env, kong)?;
            if args_get(&q, &e.name).is_none() {
                args_set(&mut q, &e.name, v.map(|v| vec![Some(v)]));
            }
        }
        for e in &ops.append {
            let v = r(e, env, kong)?;
            let cur = args_get(&q, &e.name).cloned();
            let new = match v {
                Some(v) => append_arg(cur, v),
                None => cur.unwrap_or_default(),
            };
            args_set(&mut q, &e.name, Some(new));
        }
        set_query(kong, &q);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(c: Value) -> Result<Value, Vec<(String, String)>> {
        let s = schema();
        config_sync::schema::validate_record(&s.config, &c, "config").map_err(|e| {
            e.into_iter()
                .map(|e| (e.path, e.message))
                .collect::<Vec<_>>()
        })
    }

    // 01-schema_spec.lua
    #[test]
    fn schema_spec() {
        // validates http_method
        assert!(validate(json!({"http_method": "GET"})).is_ok());
        // errors invalid http_method
        assert_eq!(
            validate(json!({"http_method": "HELLO!"})).unwrap_err(),
            vec![("config.http_method".into(), "invalid value: HELLO!".into())]
        );
        // validate regex pattern as value
        assert!(validate(json!({"add": {"querystring": [
            "uri_param1:$(uri_captures.user1)", "uri_param2:$(uri_captures.user2)"]}}))
        .is_ok());
        // validate string as value
        assert!(validate(json!({"add": {"querystring": [
            "uri_param1:$(uri_captures.user1)", "uri_param2:value"]}}))
        .is_ok());
        // error for missing value
        assert_eq!(
            validate(json!({"add": {"querystring": ["uri_param2:"]}})).unwrap_err(),
            vec![(
                "config.add.querystring.1".into(),
                "key 'uri_param2' has no value".into()
            )]
        );
        // error for malformed regex pattern in value
        let e = validate(json!({"add": {"querystring": ["uri_param2:$(uri_captures user2)"]}}))
            .unwrap_err();
        assert_eq!(e[0].0, "config.add.querystring.1");
        assert!(
            e[0].1
                .starts_with("value '$(uri_captures user2)' is not in supported format, error:"),
            "{e:?}"
        );
    }

    // 03-api_spec.lua
    #[test]
    fn api_spec_validation() {
        let ok = validate(
            json!({"remove": {"headers": ["just_a_key"], "body": ["just_a_key"],
                                            "querystring": ["just_a_key"]}}),
        )
        .unwrap();
        assert_eq!(ok["remove"]["headers"], json!(["just_a_key"]));
        assert_eq!(
            ok["append"],
            json!({"body": [], "headers": [], "querystring": []})
        );
        assert_eq!(ok["replace"]["uri"], Value::Null);
        for op in ["add", "replace", "append"] {
            assert_eq!(
                validate(json!({ op: {"headers": ["just_a_key"]} })).unwrap_err(),
                vec![(
                    format!("config.{op}.headers.1"),
                    "invalid value: just_a_key".into()
                )]
            );
        }
        assert_eq!(
            validate(json!({"rename": {"headers": ["a b:c"]}})).unwrap_err(),
            vec![(
                "config.rename.headers.1".into(),
                "'a b' is not a valid header".into()
            )]
        );
        assert_eq!(
            validate(json!({"rename": {"headers": ["a:c d"]}})).unwrap_err(),
            vec![(
                "config.rename.headers.1".into(),
                "'c d' is not a valid header".into()
            )]
        );
        assert_eq!(
            validate(json!({"protocols": 1, "add": {"headers": ["h:v"]}})).unwrap_err()[0].1,
            "unknown field"
        );
    }

    #[test]
    fn unsupported_templates_are_refused_at_load() {
        for (field, v) in [
            ("headers", "x:$(foo(headers.x))"),
            ("headers", "x:$(type(headers['X-Foo']))"),
            ("querystring", "q1:$(ERROR())"),
            ("headers", "x:$(shared.written = true)"),
            ("body", "b:$(10 * uri_captures.user1)"),
            ("headers", "x:$(headers)"),
            ("headers", "x:$(require('inspect')(1))"),
        ] {
            let e = validate(json!({"add": { field: [v] }})).unwrap_err();
            assert_eq!(e[0].0, format!("config.add.{field}.1"), "{v}");
            assert!(e[0].1.contains("is not in supported format"), "{v}: {e:?}");
        }
        let e = validate(json!({"replace": {"uri": "/x/$(10 * uri_captures.user1)"}})).unwrap_err();
        assert_eq!(e[0].0, "config.replace.uri");
        let e = validate(json!({"remove": {"headers": ["x:$(foo())"]}})).unwrap_err();
        assert_eq!(e[0].0, "config.remove.headers.1");
    }

    #[test]
    fn templates_parse_like_penlight() {
        let t =
            Template::parse("/requests/user2/$(uri_captures.user2)/user1/$(uri_captures.user1)")
                .unwrap();
        assert_eq!(t.0.len(), 4);
        // unbalanced: text
        let t = Template::parse("a $(b").unwrap();
        assert_eq!(t.is_plain(), Some("a $(b"));
        let t = Template::parse("$(a $(headers.x)").unwrap();
        assert!(matches!(&t.0[..], [Piece::Text(x), Piece::Expr(_)] if x == "$(a "));
        // escaped template: a string literal
        let t = Template::parse("$('$(uri_captures.user1)')").unwrap();
        assert!(matches!(&t.0[..], [Piece::Expr(Expr::Str(s))] if s == "$(uri_captures.user1)"));
        let t = Template::parse(r#"$(uri_captures["subpath"])"#).unwrap();
        assert!(
            matches!(&t.0[..], [Piece::Expr(Expr::Path(Root::UriCaptures, k))] if k == &vec![Key::Name("subpath".into())])
        );
        let t = Template::parse("$(uri_captures[0])").unwrap();
        assert!(
            matches!(&t.0[..], [Piece::Expr(Expr::Path(Root::UriCaptures, k))] if k == &vec![Key::Index(0)])
        );
        let t = Template::parse("$(uri_captures.user1 or 'default1')").unwrap();
        assert!(matches!(&t.0[..], [Piece::Expr(Expr::Or(_, _))]));
        assert!(Template::parse("$(shared.a.b[1])").is_ok());
        assert!(Template::parse("#value_with_hash")
            .unwrap()
            .is_plain()
            .is_some());
        assert!(Template::parse("$(headers.x and 1)").is_err());
        assert!(Template::parse("$()").is_err());
    }

    #[test]
    fn lua_values_render_like_tostring() {
        assert_eq!(LVal::Num(3.0).to_lua_string(), "3");
        assert_eq!(LVal::Bool(true).to_lua_string(), "true");
        assert_eq!(
            LVal::List(vec![Some("1".into()), None]).to_lua_string(),
            "1, true"
        );
        let t = LVal::Table(json!({"a": {"b": [10, "x"]}}));
        let a = t.index(&Key::Name("a".into())).unwrap();
        let b = a.index(&Key::Name("b".into())).unwrap();
        assert_eq!(b.index(&Key::Index(2)).unwrap(), LVal::Str("x".into()));
        assert_eq!(b.index(&Key::Index(1)).unwrap(), LVal::Num(10.0));
        assert!(LVal::Nil.index(&Key::Index(1)).is_err());
    }

    #[test]
    fn args_decode_and_encode_like_nginx() {
        let a = decode_args("a=1&b&a=2&c=x+y%20z&=skip&d=&e=%zz");
        assert_eq!(
            a,
            vec![
                ("a".into(), vec![Some("1".into()), Some("2".into())]),
                ("b".into(), vec![None]),
                ("c".into(), vec![Some("x y z".into())]),
                ("d".into(), vec![Some(String::new())]),
                ("e".into(), vec![Some("zz".into())]),
            ]
        );
        assert_eq!(encode_args(&a), "a=1&a=2&b&c=x%20y%20z&d=&e=zz");
        assert_eq!(ordered_args(&a), "a=1&a=2&b&c=x%20y%20z&d=&e=zz");
        let b: Args = vec![
            ("uri_param2[some_index][1]".into(), vec![Some("bar".into())]),
            ("q1".into(), vec![Some("20".into())]),
            ("uri_param1".into(), vec![Some("foo".into())]),
        ];
        assert_eq!(
            ordered_args(&b),
            "q1=20&uri_param1=foo&uri_param2%5Bsome_index%5D%5B1%5D=bar"
        );
        let mut s = String::new();
        escape_component("$&+,/:;?@ !'()*~é", &mut s);
        assert_eq!(s, "%24%26%2B%2C%2F%3A%3B%3F%40%20!'()*~%C3%A9");
    }

    #[test]
    fn append_to_args_follows_kong() {
        assert_eq!(append_arg(None, "v".into()), vec![Some("v".into())]);
        assert_eq!(
            append_arg(Some(vec![None]), "v".into()),
            vec![Some("v".into())]
        );
        assert_eq!(
            append_arg(Some(vec![Some("a".into())]), "v".into()),
            vec![Some("a".into()), Some("v".into())]
        );
    }

    #[test]
    fn header_table_lookups_follow_get_headers() {
        let mut t = HeaderTable(vec![
            ("x-foo".into(), vec!["1".into()]),
            ("x_bar".into(), vec!["2".into()]),
        ]);
        assert!(t.get("X-Foo").is_some());
        assert!(t.get("x_foo").is_some());
        assert!(t.get("x_bar").is_some());
        assert!(t.get("X-Bar").is_none());
        t.raw_set("X-Foo", Some(vec!["3".into()]));
        assert_eq!(t.0.len(), 3);
        assert_eq!(t.get("X-Foo"), Some(&vec!["3".to_string()]));
        t.raw_set("x-foo", None);
        assert_eq!(t.get("x-foo"), None);
    }

    const CT: &str = "multipart/form-data; boundary=XYZ";

    fn mp(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut b = String::new();
        for (n, v) in parts {
            b.push_str(&format!(
                "--XYZ\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n"
            ));
        }
        b.push_str("--XYZ--\r\n");
        b.into_bytes()
    }

    fn mp_values(m: &Multipart) -> Vec<(String, String)> {
        m.data
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = m
                    .indexes
                    .iter()
                    .find(|(_, idx)| idx.contains(&(i + 1)))
                    .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                (name, String::from_utf8_lossy(&p.value).into_owned())
            })
            .collect()
    }

    #[test]
    fn multipart_round_trips_like_lua_multipart() {
        let body = mp(&[("a", "1"), ("b", "two\r\nlines"), ("c", "")]);
        let m = Multipart::new(&body, CT);
        assert_eq!(
            mp_values(&m),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two\r\nlines".into()),
                ("c".into(), String::new())
            ]
        );
        assert_eq!(m.encode(), body);
        let mut m = Multipart::new(&body, "multipart/form-data; boundary=\"XYZ\"");
        assert_eq!(m.data.len(), 3);
        m.delete(b"a");
        m.set_simple(b"d", b"4".to_vec());
        m.set_simple(b"b", b"2".to_vec());
        assert_eq!(
            mp_values(&m),
            vec![
                ("b".into(), "2".into()),
                ("c".into(), String::new()),
                ("d".into(), "4".into())
            ]
        );
        assert_eq!(m.get(b"d").unwrap().value, b"4");
        // no boundary: nothing is parsed
        let m = Multipart::new(&body, "multipart/form-data");
        assert!(m.data.is_empty());
        // a file part keeps its headers
        let file = b"--XYZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XYZ--\r\n";
        let m = Multipart::new(file, CT);
        assert_eq!(m.data[0].headers.len(), 2);
        assert_eq!(m.encode(), file.to_vec());
    }

    #[test]
    fn body_types_by_substring() {
        assert_eq!(
            body_type(Some("Application/JSON; charset=utf-8")),
            Some(BodyType::Json)
        );
        assert_eq!(
            body_type(Some("multipart/form-data; boundary=x")),
            Some(BodyType::Multipart)
        );
        assert_eq!(
            body_type(Some("application/x-www-form-urlencoded")),
            Some(BodyType::Form)
        );
        assert_eq!(body_type(Some("text/plain")), None);
        assert_eq!(body_type(None), None);
    }

    #[test]
    fn valid_header_names() {
        use super::super::response_transformer::valid_header_name;
        assert!(valid_header_name("X-Foo_1"));
        assert!(valid_header_name("x\n"));
        assert!(!valid_header_name("x y"));
        assert!(!valid_header_name(""));
    }
}
