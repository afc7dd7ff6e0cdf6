//! Kong's schema engine, as much of it as plugin configs use
//! (`kong/db/schema/init.lua`): typed fields with defaults and validators,
//! record-level entity checks, shorthand fields, and Kong's error messages.
//!
//! Plugin schemas are defined where their handlers live (the gateway's
//! plugin files) and handed to the declarative loader as a
//! [`PluginSchemas`] registry, so `config-sync` validates plugin configs
//! without knowing any plugin. A validated config comes back with Kong's
//! defaults filled in, so handlers can deserialize it without re-checking.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Number, Value};

/// A field's type (`Schema.valid_types`).
#[derive(Clone)]
pub enum Type {
    String,
    Number,
    Integer,
    Boolean,
    Array(Box<Field>),
    /// An array whose duplicate elements are dropped.
    Set(Box<Field>),
    Map {
        keys: Box<Field>,
        values: Box<Field>,
    },
    Record(Record),
    /// Any JSON value (Kong's `json` type without a JSON schema).
    Json,
}

/// A field validator (`validators` in `kong/db/schema/init.lua`).
#[derive(Clone)]
pub enum Check {
    /// `between = { a, b }` (inclusive).
    Between(f64, f64),
    /// `gt = n`.
    Gt(f64),
    /// `one_of = { ... }` (strings or numbers).
    OneOf(Vec<Value>),
    /// `len_min` (strings, arrays, sets, maps).
    LenMin(usize),
    LenMax(usize),
    LenEq(usize),
    /// `match` with a Rust regex and Kong's message (`invalid value: <v>`
    /// when `None`).
    Match(Arc<regex::Regex>, Option<&'static str>),
    /// `match_none`: none of the patterns may match; each with its message.
    MatchNone(Vec<(Arc<regex::Regex>, &'static str)>),
    StartsWith(&'static str),
    /// `custom_validator`: `Err` carries the message.
    Custom(fn(&Value) -> Result<(), String>),
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Between(a, b) => write!(f, "Between({a}, {b})"),
            Check::Gt(n) => write!(f, "Gt({n})"),
            Check::OneOf(v) => write!(f, "OneOf({v:?})"),
            Check::LenMin(n) => write!(f, "LenMin({n})"),
            Check::LenMax(n) => write!(f, "LenMax({n})"),
            Check::LenEq(n) => write!(f, "LenEq({n})"),
            Check::Match(r, _) => write!(f, "Match({})", r.as_str()),
            Check::MatchNone(v) => write!(f, "MatchNone({})", v.len()),
            Check::StartsWith(s) => write!(f, "StartsWith({s})"),
            Check::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// One field of a record.
#[derive(Clone)]
pub struct Field {
    pub ty: Type,
    pub required: bool,
    /// Filled in when the field is absent or null.
    pub default: Option<Value>,
    pub checks: Vec<Check>,
    /// `eq = null`: the field must be absent or null (Kong's `no_consumer`
    /// and the like).
    pub must_be_null: bool,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field")
            .field("required", &self.required)
            .field("default", &self.default)
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
}

/// A record-level check (`entity_checks`). Field names are relative to the
/// record; messages quote them with the record's path (`'config.minute'`).
#[derive(Clone)]
pub enum EntityCheck {
    AtLeastOneOf(Vec<&'static str>),
    OnlyOneOf(Vec<&'static str>),
    MutuallyRequired(Vec<&'static str>),
    MutuallyExclusive(Vec<&'static str>),
    /// `conditional`: when `if_field` passes `if_match`, `then_field` must
    /// pass `then_match` (`then_err` replaces the field message).
    Conditional {
        if_field: &'static str,
        if_match: Cond,
        then_field: &'static str,
        then_match: Cond,
        then_err: Option<&'static str>,
    },
    /// `conditional_at_least_one_of`.
    ConditionalAtLeastOneOf {
        if_field: &'static str,
        if_match: Cond,
        then_at_least_one_of: Vec<&'static str>,
    },
    /// `custom_entity_check`: gets the record (defaults filled); `Err` is
    /// reported at `@entity`.
    Custom(fn(&Map<String, Value>) -> Result<(), String>),
    /// The record's own `custom_validator` (e.g. http-log's on `config`):
    /// like [`EntityCheck::Custom`], but Kong reports the message at the
    /// record's key (`config = "..."`), not at `@entity`.
    RecordValidator(fn(&Map<String, Value>) -> Result<(), String>),
}

/// A condition of a conditional check.
#[derive(Clone)]
pub enum Cond {
    /// `eq = v`.
    Eq(Value),
    /// `one_of = {...}`.
    OneOf(Vec<Value>),
    /// `required = true`: present and not null.
    Required,
    /// `eq = null`.
    Null,
    /// `gt = n`.
    Gt(f64),
    /// `contains = v`: an array holding `v`.
    Contains(Value),
}

impl Cond {
    fn holds(&self, v: Option<&Value>) -> bool {
        let v = v.filter(|v| !v.is_null());
        match self {
            Cond::Eq(want) => v == Some(want),
            Cond::OneOf(list) => v.is_some_and(|v| list.contains(v)),
            Cond::Required => v.is_some(),
            Cond::Null => v.is_none(),
            Cond::Gt(n) => v.and_then(Value::as_f64).is_some_and(|x| x > *n),
            Cond::Contains(want) => v
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(want)),
        }
    }

    /// Kong's message for a `then_match` that fails.
    fn message(&self) -> String {
        match self {
            Cond::Eq(v) => format!("value must be {}", lua_literal(v)),
            Cond::OneOf(list) => format!(
                "expected one of: {}",
                list.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
            ),
            Cond::Required => "required field missing".into(),
            Cond::Null => "value must be null".into(),
            Cond::Gt(n) => format!("value must be greater than {}", fmt_num(*n)),
            Cond::Contains(v) => format!("expected to contain: {}", lua_literal(v)),
        }
    }
}

/// A deprecated alias of a field (Kong's `shorthand_fields` entry with
/// `deprecation.replaced_with`, e.g. rate-limiting's `redis_host` for
/// `redis.host`; `process_auto_fields` in `kong/db/schema/init.lua`).
#[derive(Clone, Debug)]
pub struct Shorthand {
    pub name: &'static str,
    /// The alias's own type and checks: its value is validated first.
    pub field: Field,
    /// The field it stands for, as a path in the record.
    pub replaced_with: &'static [&'static str],
    /// `deprecation.message`, logged when the alias is used.
    pub message: &'static str,
}

/// A check over a whole record; `Err` carries the message.
pub type RecordCheck = fn(&Map<String, Value>) -> Result<(), String>;

/// A record type: ordered fields and checks.
#[derive(Clone, Default)]
pub struct Record {
    pub fields: Vec<(&'static str, Field)>,
    /// Unknown keys pass through unchecked (only for schemas standing in
    /// for a plugin whose real schema is not known: tests and benches).
    pub open: bool,
    pub checks: Vec<EntityCheck>,
    /// Deprecated aliases (Kong's `shorthand_fields`), rewritten into the
    /// fields they stand for before validation.
    pub shorthands: Vec<Shorthand>,
}

/// A plugin's schema, as its handler file defines it.
#[derive(Clone)]
pub struct PluginSchema {
    pub name: &'static str,
    /// The `config` record.
    pub config: Record,
    /// `protocols` default (`typedefs.protocols_http` for most plugins).
    pub default_protocols: &'static [&'static str],
    /// Protocols the plugin may be configured for.
    pub allowed_protocols: &'static [&'static str],
    /// Kong's `no_consumer` / `no_route` / `no_service`: the plugin cannot
    /// be scoped to that entity.
    pub no_consumer: bool,
    pub no_route: bool,
    pub no_service: bool,
    /// Plugin-level checks across `config`, `protocols` and the scope
    /// (Kong's plugin `entity_checks`), given the whole plugin entity with
    /// the validated config.
    pub entity_checks: Vec<RecordCheck>,
}

/// The HTTP protocols (`typedefs.protocols_http`).
pub const PROTOCOLS_HTTP: &[&str] = &["grpc", "grpcs", "http", "https"];

/// The plugins a loader accepts, by name.
#[derive(Clone, Default)]
pub struct PluginSchemas {
    by_name: BTreeMap<&'static str, Arc<PluginSchema>>,
}

impl fmt::Debug for PluginSchemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl PluginSchema {
    /// A schema that takes any config as given: stands in for a plugin
    /// whose real schema is not needed (config-sync's own tests, benches).
    pub fn untyped(name: &'static str) -> PluginSchema {
        PluginSchema {
            name,
            config: Record {
                open: true,
                ..Record::default()
            },
            default_protocols: PROTOCOLS_HTTP,
            allowed_protocols: &[
                "grpc",
                "grpcs",
                "http",
                "https",
                "tcp",
                "tls",
                "tls_passthrough",
                "udp",
                "ws",
                "wss",
            ],
            no_consumer: false,
            no_route: false,
            no_service: false,
            entity_checks: Vec::new(),
        }
    }
}

impl PluginSchemas {
    pub fn new(schemas: impl IntoIterator<Item = PluginSchema>) -> Self {
        PluginSchemas {
            by_name: schemas.into_iter().map(|s| (s.name, Arc::new(s))).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&PluginSchema> {
        self.by_name.get(name).map(|s| s.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Keeps only the named plugins (the `plugins` setting).
    pub fn only(&self, names: &[String]) -> Self {
        PluginSchemas {
            by_name: self
                .by_name
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == *k))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        }
    }
}

/// A validation failure at a dotted path (relative to the validated value)
/// or at `@entity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

// ---------------------------------------------------------------------------
// builders

impl Field {
    pub fn new(ty: Type) -> Field {
        Field {
            ty,
            required: false,
            default: None,
            checks: Vec::new(),
            must_be_null: false,
        }
    }

    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub fn default(mut self, v: impl Into<Value>) -> Field {
        self.default = Some(v.into());
        self
    }

    pub fn check(mut self, c: Check) -> Field {
        self.checks.push(c);
        self
    }

    pub fn between(self, a: f64, b: f64) -> Field {
        self.check(Check::Between(a, b))
    }

    pub fn gt(self, n: f64) -> Field {
        self.check(Check::Gt(n))
    }

    pub fn one_of(self, values: &[&str]) -> Field {
        self.check(Check::OneOf(
            values
                .iter()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ))
    }

    pub fn one_of_ints(self, values: &[i64]) -> Field {
        self.check(Check::OneOf(
            values.iter().map(|n| Value::from(*n)).collect(),
        ))
    }

    pub fn len_min(self, n: usize) -> Field {
        self.check(Check::LenMin(n))
    }

    pub fn custom(self, f: fn(&Value) -> Result<(), String>) -> Field {
        self.check(Check::Custom(f))
    }

    /// `match` with a pattern that must compile (a schema bug otherwise).
    pub fn matches(self, pattern: &str, err: Option<&'static str>) -> Field {
        match regex::Regex::new(pattern) {
            Ok(r) => self.check(Check::Match(Arc::new(r), err)),
            Err(_) => self,
        }
    }

    /// `eq = null` (`typedefs.no_consumer` and friends).
    pub fn null_only(mut self) -> Field {
        self.must_be_null = true;
        self
    }
}

pub fn string() -> Field {
    Field::new(Type::String)
}
pub fn number() -> Field {
    Field::new(Type::Number)
}
pub fn integer() -> Field {
    Field::new(Type::Integer)
}
pub fn boolean() -> Field {
    Field::new(Type::Boolean)
}
pub fn array(elements: Field) -> Field {
    Field::new(Type::Array(Box::new(elements)))
}
pub fn set(elements: Field) -> Field {
    Field::new(Type::Set(Box::new(elements)))
}
pub fn map(keys: Field, values: Field) -> Field {
    Field::new(Type::Map {
        keys: Box::new(keys),
        values: Box::new(values),
    })
}
pub fn record(fields: Vec<(&'static str, Field)>) -> Field {
    Field::new(Type::Record(Record {
        fields,
        ..Record::default()
    }))
}
pub fn json() -> Field {
    Field::new(Type::Json)
}

impl Record {
    pub fn new(fields: Vec<(&'static str, Field)>) -> Record {
        Record {
            fields,
            ..Record::default()
        }
    }

    pub fn with_checks(mut self, checks: Vec<EntityCheck>) -> Record {
        self.checks = checks;
        self
    }
}

// ---------------------------------------------------------------------------
// validation

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// How Kong prints a value in a message (`tostring`): strings bare.
fn lua_literal(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

struct Ctx {
    errors: Vec<SchemaError>,
}

impl Ctx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(SchemaError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// Validates `value` against `record`; the result has defaults filled in.
/// `prefix` names the record in messages (`config`), and every error path
/// is relative to it (`config.key_names.1`).
pub fn validate_record(
    record: &Record,
    value: &Value,
    prefix: &str,
) -> Result<Value, Vec<SchemaError>> {
    let mut cx = Ctx { errors: Vec::new() };
    let out = check_record(record, value, prefix, &mut cx);
    if cx.errors.is_empty() {
        Ok(out)
    } else {
        Err(cx.errors)
    }
}

fn check_record(record: &Record, value: &Value, path: &str, cx: &mut Ctx) -> Value {
    let input = match value {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            cx.err(path, "expected a record");
            return Value::Null;
        }
    };
    let mut input = input;
    // Shorthands first: they write into the real fields. A deprecated
    // alias yields to its field, and may not contradict it
    // (`validate_deprecation_exclusiveness`).
    for sh in &record.shorthands {
        let Some(v) = input.remove(sh.name) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        let apath = join_path(path, sh.name);
        let before = cx.errors.len();
        let v = check_field(&sh.field, &v, &apath, cx);
        if cx.errors.len() > before {
            continue;
        }
        log::warn!("{} (deprecated after 4.0)", sh.message);
        match get_path(&input, sh.replaced_with).filter(|x| !x.is_null()) {
            Some(current) if !same_value(current, &v) => cx.err(
                &apath,
                format!(
                    "both deprecated and new field are used but their values mismatch: {} = {} vs {} = {}",
                    sh.name,
                    lua_literal(&v),
                    sh.replaced_with.join("."),
                    lua_literal(current)
                ),
            ),
            Some(_) => {}
            None => set_path(&mut input, sh.replaced_with, v),
        }
    }
    let mut out = Map::new();
    for (name, field) in &record.fields {
        let fpath = join_path(path, name);
        let given = input.get(*name).filter(|v| !v.is_null());
        if field.must_be_null {
            if given.is_some() {
                cx.err(&fpath, "value must be null");
            }
            continue;
        }
        // An explicit null does not take the default of a required field:
        // Kong's `Schema:validate` reports it ("status_code can not be set
        // as null", request-termination's schema spec).
        if field.required && given.is_none() && input.get(*name).is_some_and(Value::is_null) {
            cx.err(&fpath, "required field missing");
            out.insert(name.to_string(), Value::Null);
            continue;
        }
        let v = match (given, &field.default) {
            (Some(v), _) => check_field(field, v, &fpath, cx),
            (None, Some(d)) => {
                // Defaults of records are records to fill too.
                match &field.ty {
                    Type::Record(r) => check_record(r, d, &fpath, cx),
                    _ => d.clone(),
                }
            }
            (None, None) => match &field.ty {
                // A record without a default is still filled from its
                // fields' defaults (Kong's process_auto_fields).
                Type::Record(r) if field.required || record_has_defaults(r) => {
                    check_record(r, &Value::Null, &fpath, cx)
                }
                _ => {
                    if field.required {
                        cx.err(&fpath, "required field missing");
                    }
                    Value::Null
                }
            },
        };
        out.insert(name.to_string(), v);
    }
    for (key, v) in &input {
        if !record.fields.iter().any(|(n, _)| n == key) {
            if record.open {
                out.insert(key.clone(), v.clone());
            } else {
                cx.err(&join_path(path, key), "unknown field");
            }
        }
    }
    if cx.errors.is_empty() {
        for check in &record.checks {
            if let EntityCheck::Conditional {
                if_field,
                if_match,
                then_field,
                then_match,
                then_err,
            } = check
            {
                // Kong reports the failing field at its own path, then the
                // check at `@entity` (the `conditional` entity checker).
                let get = |f: &str| get_path(&out, &f.split('.').collect::<Vec<_>>());
                if if_match.holds(get(if_field)) && !then_match.holds(get(then_field)) {
                    cx.err(&join_path(path, then_field), then_match.message());
                    cx.err(
                        "@entity",
                        then_err.map(str::to_string).unwrap_or_else(|| {
                            format!(
                                "failed conditional validation given value of field '{}'",
                                join_path(path, if_field)
                            )
                        }),
                    );
                }
                continue;
            }
            if let Err(msg) = entity_check(check, &out, path) {
                let at = match check {
                    EntityCheck::RecordValidator(_) => path,
                    _ => "@entity",
                };
                cx.err(at, msg);
            }
        }
    }
    Value::Object(out)
}

/// Kong's `table_path` / `get_field`: a value by its path in nested records.
fn get_path<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = map.get(*first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        get_path(v.as_object()?, rest)
    }
}

/// `deepcompare`: numbers by value (`6379` equals `6379.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn record_has_defaults(r: &Record) -> bool {
    r.fields.iter().any(|(_, f)| {
        f.default.is_some() || matches!(&f.ty, Type::Record(inner) if record_has_defaults(inner))
    })
}

fn set_path(map: &mut Map<String, Value>, path: &[&str], v: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.to_string(), v);
        }
        [first, rest @ ..] => {
            let entry = map
                .entry(first.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                set_path(inner, rest, v);
            }
        }
    }
}

fn check_field(field: &Field, v: &Value, path: &str, cx: &mut Ctx) -> Value {
    let before = cx.errors.len();
    let out = match &field.ty {
        Type::String => match v {
            // Kong refuses empty strings unless the field sets its own
            // `len_min` (`Schema:validate_field`: "empty strings are not
            // accepted by default").
            Value::String(s)
                if s.is_empty()
                    && !field
                        .checks
                        .iter()
                        .any(|c| matches!(c, Check::LenMin(_) | Check::LenEq(_))) =>
            {
                cx.err(path, "length must be at least 1");
                return Value::Null;
            }
            Value::String(_) => v.clone(),
            _ => {
                cx.err(path, "expected a string");
                return Value::Null;
            }
        },
        Type::Boolean => match v {
            Value::Bool(_) => v.clone(),
            _ => {
                cx.err(path, "expected a boolean");
                return Value::Null;
            }
        },
        Type::Number => match v {
            Value::Number(_) => v.clone(),
            _ => {
                cx.err(path, "expected a number");
                return Value::Null;
            }
        },
        Type::Integer => match v.as_f64() {
            Some(f) if f.fract() == 0.0 => match v.as_i64() {
                Some(i) => Value::Number(Number::from(i)),
                // A whole float (`3.0`) within i64 is that integer.
                None if f.abs() < 9.0e15 => Value::Number(Number::from(f as i64)),
                None => v.clone(),
            },
            _ => {
                cx.err(path, "expected an integer");
                return Value::Null;
            }
        },
        Type::Json => v.clone(),
        Type::Array(el) | Type::Set(el) => {
            let is_set = matches!(field.ty, Type::Set(_));
            let items = match v {
                Value::Array(a) => a.clone(),
                // Kong accepts an empty table for an array; JSON `{}` is one.
                Value::Object(m) if m.is_empty() => Vec::new(),
                _ => {
                    cx.err(
                        path,
                        if is_set {
                            "expected a set"
                        } else {
                            "expected an array"
                        },
                    );
                    return Value::Null;
                }
            };
            let mut out: Vec<Value> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{path}.{}", i + 1);
                if item.is_null() {
                    cx.err(&ipath, "required field missing");
                    continue;
                }
                let checked = check_field(el, item, &ipath, cx);
                if is_set && out.contains(&checked) {
                    continue;
                }
                out.push(checked);
            }
            Value::Array(out)
        }
        Type::Map { keys, values } => {
            let m = match v {
                Value::Object(m) => m,
                _ => {
                    cx.err(path, "expected a map");
                    return Value::Null;
                }
            };
            let mut out = Map::new();
            for (k, item) in m {
                // Kong returns the first failing key or value as the map's
                // own error (`config.headers = "..."`), a record value's
                // errors nested under the map's key without the entry's.
                let kpath = join_path(path, k);
                let first = cx.errors.len();
                check_field(keys, &Value::String(k.clone()), &kpath, cx);
                let checked = if item.is_null() || cx.errors.len() > first {
                    Value::Null
                } else {
                    check_field(values, item, &kpath, cx)
                };
                if cx.errors.len() > first {
                    let nested = format!("{kpath}.");
                    for e in &mut cx.errors[first..] {
                        if e.path == kpath {
                            e.path = path.to_string();
                        } else if let Some(rest) = e.path.strip_prefix(&nested) {
                            e.path = join_path(path, rest);
                        }
                    }
                    break;
                }
                out.insert(k.clone(), checked);
            }
            Value::Object(out)
        }
        Type::Record(r) => check_record(r, v, path, cx),
    };
    if cx.errors.len() > before {
        return out;
    }
    for c in &field.checks {
        if let Err(msg) = run_check(c, &out) {
            cx.err(path, msg);
            break;
        }
    }
    out
}

fn length(v: &Value) -> Option<usize> {
    match v {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        Value::Object(m) => Some(m.len()),
        _ => None,
    }
}

fn run_check(c: &Check, v: &Value) -> Result<(), String> {
    match c {
        Check::Between(a, b) => match v.as_f64() {
            Some(x) if x >= *a && x <= *b => Ok(()),
            Some(_) => Err(format!(
                "value should be between {} and {}",
                fmt_num(*a),
                fmt_num(*b)
            )),
            None => Ok(()),
        },
        Check::Gt(n) => match v.as_f64() {
            Some(x) if x > *n => Ok(()),
            Some(_) => Err(format!("value must be greater than {}", fmt_num(*n))),
            None => Ok(()),
        },
        Check::OneOf(list) => {
            let hit = list.iter().any(|x| match (x.as_f64(), v.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => x == v,
            });
            if hit {
                Ok(())
            } else {
                Err(format!(
                    "expected one of: {}",
                    list.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
                ))
            }
        }
        Check::LenMin(n) => match length(v) {
            Some(l) if l < *n => Err(format!("length must be at least {n}")),
            _ => Ok(()),
        },
        Check::LenMax(n) => match length(v) {
            Some(l) if l > *n => Err(format!("length must be at most {n}")),
            _ => Ok(()),
        },
        Check::LenEq(n) => match length(v) {
            Some(l) if l != *n => Err(format!("length must be {n}")),
            _ => Ok(()),
        },
        Check::Match(re, err) => match v.as_str() {
            Some(s) if !re.is_match(s) => Err(err
                .map(str::to_string)
                .unwrap_or_else(|| format!("invalid value: {s}"))),
            _ => Ok(()),
        },
        Check::MatchNone(list) => match v.as_str() {
            Some(s) => match list.iter().find(|(re, _)| re.is_match(s)) {
                Some((_, err)) => Err(err.to_string()),
                None => Ok(()),
            },
            None => Ok(()),
        },
        Check::StartsWith(p) => match v.as_str() {
            Some(s) if !s.starts_with(p) => Err(format!("should start with: {p}")),
            _ => Ok(()),
        },
        Check::Custom(f) => f(v),
    }
}

fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn quoted(path: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{}'", join_path(path, n)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn entity_check(c: &EntityCheck, rec: &Map<String, Value>, path: &str) -> Result<(), String> {
    match c {
        EntityCheck::AtLeastOneOf(names) => {
            if names.iter().any(|n| is_set(rec.get(*n))) {
                Ok(())
            } else {
                Err(format!(
                    "at least one of these fields must be non-empty: {}",
                    quoted(path, names)
                ))
            }
        }
        EntityCheck::OnlyOneOf(names) => {
            if names.iter().filter(|n| is_set(rec.get(**n))).count() == 1 {
                Ok(())
            } else {
                Err(format!(
                    "exactly one of these fields must be non-empty: {}",
                    quoted(path, names)
                ))
            }
        }
        EntityCheck::MutuallyRequired(names) => {
            let n = names.iter().filter(|n| is_set(rec.get(**n))).count();
            if n == 0 || n == names.len() {
                Ok(())
            } else {
                Err(format!(
                    "all or none of these fields must be set: {}",
                    quoted(path, names)
                ))
            }
        }
        EntityCheck::MutuallyExclusive(names) => {
            if names.iter().filter(|n| is_set(rec.get(**n))).count() <= 1 {
                Ok(())
            } else {
                Err(format!(
                    "only one or none of these fields must be set: {}",
                    quoted(path, names)
                ))
            }
        }
        // Run by `check_record`, which reports at two paths.
        EntityCheck::Conditional { .. } => Ok(()),
        EntityCheck::ConditionalAtLeastOneOf {
            if_field,
            if_match,
            then_at_least_one_of,
        } => {
            if if_match.holds(rec.get(*if_field))
                && !then_at_least_one_of.iter().any(|n| is_set(rec.get(*n)))
            {
                Err(format!(
                    "at least one of these fields must be non-empty: {}",
                    quoted(path, then_at_least_one_of)
                ))
            } else {
                Ok(())
            }
        }
        EntityCheck::Custom(f) | EntityCheck::RecordValidator(f) => f(rec),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_auth() -> Record {
        Record::new(vec![
            (
                "key_names",
                array(string().matches("^[A-Za-z0-9_-]+$", None))
                    .required()
                    .default(json!(["apikey"])),
            ),
            ("hide_credentials", boolean().required().default(false)),
            ("anonymous", string()),
            ("limit", integer().between(0.0, 10.0)),
            ("mode", string().one_of(&["a", "b"])),
            (
                "nested",
                record(vec![("timeout", integer().default(2000).gt(0.0))]),
            ),
        ])
    }

    #[test]
    fn defaults_are_filled_and_nulls_count_as_absent() {
        let v = validate_record(&key_auth(), &json!({"anonymous": null}), "config").unwrap();
        assert_eq!(
            v,
            json!({
                "key_names": ["apikey"], "hide_credentials": false, "anonymous": null,
                "limit": null, "mode": null, "nested": {"timeout": 2000}
            })
        );
    }

    #[test]
    fn an_explicit_null_for_a_required_field_is_missing_not_defaulted() {
        // request-termination's `status_code = null`, correlation-id's
        // `generator = null`: required with a default, still refused.
        let e =
            validate_record(&key_auth(), &json!({"hide_credentials": null}), "config").unwrap_err();
        assert_eq!(
            e,
            vec![SchemaError {
                path: "config.hide_credentials".into(),
                message: "required field missing".into()
            }]
        );
        // Absent, it still takes its default.
        let v = validate_record(&key_auth(), &json!({}), "config").unwrap();
        assert_eq!(v["hide_credentials"], json!(false));
    }

    #[test]
    fn kong_messages_at_kong_paths() {
        let e = validate_record(
            &key_auth(),
            &json!({"key_names": ["ok", "bad key"], "hide_credentials": 1, "limit": 11,
                    "mode": "c", "nested": {"timeout": 0}, "extra": true}),
            "config",
        )
        .unwrap_err();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("config.key_names.2", "invalid value: bad key"),
                ("config.hide_credentials", "expected a boolean"),
                ("config.limit", "value should be between 0 and 10"),
                ("config.mode", "expected one of: a, b"),
                ("config.nested.timeout", "value must be greater than 0"),
                ("config.extra", "unknown field"),
            ]
        );
    }

    #[test]
    fn entity_checks_and_shorthands() {
        let mut r = Record::new(vec![
            ("second", number().gt(0.0)),
            ("minute", number().gt(0.0)),
            (
                "policy",
                string().default("local").one_of(&["local", "redis"]),
            ),
            (
                "redis",
                record(vec![("host", string()), ("port", integer().default(6379))]),
            ),
        ])
        .with_checks(vec![
            EntityCheck::AtLeastOneOf(vec!["second", "minute"]),
            EntityCheck::Conditional {
                if_field: "policy",
                if_match: Cond::Eq(json!("redis")),
                then_field: "redis",
                then_match: Cond::Required,
                then_err: None,
            },
        ]);
        r.shorthands.push(Shorthand {
            name: "redis_host",
            field: string(),
            replaced_with: &["redis", "host"],
            message: "config.redis_host is deprecated",
        });
        let e = validate_record(&r, &json!({}), "config").unwrap_err();
        assert_eq!(
            e[0].message,
            "at least one of these fields must be non-empty: 'config.second', 'config.minute'"
        );
        assert_eq!(e[0].path, "@entity");
        let v = validate_record(&r, &json!({"minute": 5, "redis_host": "h"}), "config").unwrap();
        assert_eq!(v["redis"], json!({"host": "h", "port": 6379}));
    }

    #[test]
    fn deprecated_shorthands_yield_to_their_field_and_nested_conditionals() {
        // rate-limiting's `redis_*` aliases and its `conditional` checks on
        // `config.redis.host` (kong/plugins/rate-limiting/schema.lua).
        let mut r = Record::new(vec![
            ("policy", string().default("local")),
            (
                "redis",
                record(vec![("host", string()), ("port", integer().default(6379))]),
            ),
        ])
        .with_checks(vec![EntityCheck::Conditional {
            if_field: "policy",
            if_match: Cond::Eq(json!("redis")),
            then_field: "redis.host",
            then_match: Cond::Required,
            then_err: None,
        }]);
        for (name, field, to) in [
            ("redis_host", string(), &["redis", "host"][..]),
            ("redis_port", integer(), &["redis", "port"][..]),
        ] {
            r.shorthands.push(Shorthand {
                name,
                field,
                replaced_with: to,
                message: "deprecated",
            });
        }
        let v = validate_record(
            &r,
            &json!({"redis_host": "h", "redis_port": 7000}),
            "config",
        )
        .unwrap();
        assert_eq!(v["redis"], json!({"host": "h", "port": 7000}));
        // The same value twice is fine; the field wins.
        let v = validate_record(
            &r,
            &json!({"redis_host": "h", "redis": {"host": "h"}}),
            "config",
        )
        .unwrap();
        assert_eq!(v["redis"]["host"], json!("h"));
        let e = validate_record(
            &r,
            &json!({"redis_host": "a", "redis": {"host": "b"}, "redis_port": "x"}),
            "config",
        )
        .unwrap_err();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "config.redis_host",
                    "both deprecated and new field are used but their values mismatch: redis_host = a vs redis.host = b"
                ),
                ("config.redis_port", "expected an integer"),
            ]
        );
        let e = validate_record(&r, &json!({"policy": "redis"}), "config").unwrap_err();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("config.redis.host", "required field missing"),
                (
                    "@entity",
                    "failed conditional validation given value of field 'config.policy'"
                ),
            ]
        );
    }

    #[test]
    fn conditional_contains() {
        let r = Record::new(vec![
            ("max", number().default(0)),
            ("claims", set(string())),
        ])
        .with_checks(vec![EntityCheck::Conditional {
            if_field: "max",
            if_match: Cond::Gt(0.0),
            then_field: "claims",
            then_match: Cond::Contains(json!("exp")),
            then_err: None,
        }]);
        assert!(
            validate_record(&r, &json!({"max": 5, "claims": ["nbf", "exp"]}), "config").is_ok()
        );
        assert!(validate_record(&r, &json!({"claims": ["nbf"]}), "config").is_ok());
        let e = validate_record(&r, &json!({"max": 5, "claims": ["nbf"]}), "config").unwrap_err();
        assert!(e[0].message.contains("expected to contain: exp"), "{e:?}");
    }

    #[test]
    fn empty_strings_are_refused_unless_len_min_allows_them() {
        let r = Record::new(vec![
            ("a", string()),
            ("b", string().len_min(0)),
            ("m", map(string(), string())),
        ]);
        let e = validate_record(&r, &json!({"a": "", "b": ""}), "config").unwrap_err();
        assert_eq!(
            e,
            vec![SchemaError {
                path: "config.a".into(),
                message: "length must be at least 1".into()
            }]
        );
        let e = validate_record(&r, &json!({"m": {"k": ""}}), "config").unwrap_err();
        assert_eq!(e[0].path, "config.m");
        assert_eq!(e[0].message, "length must be at least 1");
    }

    #[test]
    fn map_errors_are_the_maps_own_and_stop_at_the_first() {
        let r = Record::new(vec![(
            "headers",
            map(
                string().matches("^[a-z]+$", Some("bad key")),
                string().matches("^[0-9]+$", Some("bad value")),
            ),
        )]);
        let e = validate_record(
            &r,
            &json!({"headers": {"ok": "1", "X": "x", "y": "z"}}),
            "config",
        )
        .unwrap_err();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(got, vec![("config.headers", "bad key")]);
        let e = validate_record(&r, &json!({"headers": {"ok": "x"}}), "config").unwrap_err();
        assert_eq!(e[0].path, "config.headers");
        assert_eq!(e[0].message, "bad value");
    }

    #[test]
    fn a_records_own_validator_reports_at_the_record() {
        fn not_one(m: &Map<String, Value>) -> Result<(), String> {
            match m.get("x").and_then(Value::as_i64) {
                Some(1) => Err("x must not be 1".into()),
                _ => Ok(()),
            }
        }
        let r = Record::new(vec![("x", integer())])
            .with_checks(vec![EntityCheck::RecordValidator(not_one)]);
        assert!(validate_record(&r, &json!({"x": 2}), "config").is_ok());
        let e = validate_record(&r, &json!({"x": 1}), "config").unwrap_err();
        assert_eq!(e[0].path, "config");
        assert_eq!(e[0].message, "x must not be 1");
    }

    #[test]
    fn sets_drop_duplicates_and_integers_accept_whole_floats() {
        let r = Record::new(vec![("s", set(string())), ("i", integer())]);
        let v = validate_record(&r, &json!({"s": ["a", "a", "b"], "i": 3.0}), "").unwrap();
        assert_eq!(v, json!({"s": ["a", "b"], "i": 3}));
        let e = validate_record(&r, &json!({"i": 3.5}), "").unwrap_err();
        assert_eq!(e[0].message, "expected an integer");
    }
}
