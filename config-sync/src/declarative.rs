//! Declarative config loading: text → JSON, nested → flat, ids, foreign keys.
//!
//! Mirrors `kong/db/schema/others/declarative_config.lua`:
//! * children may be nested under their parent (services → routes/plugins,
//!   routes → plugins, consumers → plugins/credentials, upstreams → targets,
//!   certificates → snis) or listed at top level with a reference to it;
//! * references may use the parent's id or its endpoint key (name, username);
//! * entities without an id get a deterministic UUIDv5 where Kong derives one
//!   (endpoint key or cache key), else a random UUIDv4.
//!
//! Field-level checks live in `build.rs` / `validate.rs`; this module does the
//! structure, identity and cross-entity checks. Every error is collected.

use std::collections::HashMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::build;
use crate::error::{ConfigError, ConfigErrors};
use crate::model::DeclarativeConfig;
use crate::schema::{PluginSchema, PluginSchemas};
use crate::table::{ConfigTable, Entity, TableValue};

/// Options for parsing a declarative config.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// The plugins the gateway runs, with their config schemas; any other
    /// plugin name is rejected, and each config is validated (and its
    /// defaults filled) by its schema.
    pub plugins: PluginSchemas,
}

impl ParseOptions {
    pub fn with_schemas(plugins: PluginSchemas) -> Self {
        ParseOptions { plugins }
    }

    /// Accepts the named plugins with any config (no schema): for tests and
    /// benches of the loader itself.
    pub fn with_plugins<I>(plugins: I) -> Self
    where
        I: IntoIterator<Item = &'static str>,
    {
        ParseOptions {
            plugins: PluginSchemas::new(plugins.into_iter().map(PluginSchema::untyped)),
        }
    }
}

/// Accepted values of `_format_version`.
pub const FORMAT_VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];

/// Top-level keys that are accepted and ignored: metadata and entity types
/// that a control plane exports but the data plane does not use (yet).
const IGNORED_TOP_LEVEL: &[&str] = &[
    "_transform",
    "_format_version",
    "_workspace",
    "_comment",
    "_info",
    "_ignore",
    "workspaces",
    "parameters",
    "vaults",
    "key_sets",
    "keys",
];

/// Namespace of Kong's deterministic entity ids (`declarative_config.lua`).
const ENTITIES_NS: Uuid = Uuid::from_u128(0xfd02801f_0957_4a15_a55a_c8d9606f30b5);

/// Entity types of a declarative config, in Kong's dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Consumer,
    Certificate,
    CaCertificate,
    Service,
    Route,
    Sni,
    Upstream,
    Target,
    Plugin,
    KeyAuth,
    BasicAuth,
    Jwt,
    HmacAuth,
    Acl,
    Oauth2,
    MtlsAuth,
}

type Child = (&'static str, Kind, &'static str);

impl Kind {
    pub(crate) const ALL: [Kind; 16] = [
        Kind::Consumer,
        Kind::Certificate,
        Kind::CaCertificate,
        Kind::Service,
        Kind::Route,
        Kind::Sni,
        Kind::Upstream,
        Kind::Target,
        Kind::Plugin,
        Kind::KeyAuth,
        Kind::BasicAuth,
        Kind::Jwt,
        Kind::HmacAuth,
        Kind::Acl,
        Kind::Oauth2,
        Kind::MtlsAuth,
    ];

    pub(crate) const CREDENTIALS: [Kind; 7] = [
        Kind::KeyAuth,
        Kind::BasicAuth,
        Kind::Jwt,
        Kind::HmacAuth,
        Kind::Acl,
        Kind::Oauth2,
        Kind::MtlsAuth,
    ];

    /// Position in [`Kind::ALL`].
    pub(crate) fn idx(self) -> usize {
        self as usize
    }

    /// DAO table name (top-level key).
    pub(crate) fn table(self) -> &'static str {
        match self {
            Kind::Consumer => "consumers",
            Kind::Certificate => "certificates",
            Kind::CaCertificate => "ca_certificates",
            Kind::Service => "services",
            Kind::Route => "routes",
            Kind::Sni => "snis",
            Kind::Upstream => "upstreams",
            Kind::Target => "targets",
            Kind::Plugin => "plugins",
            Kind::KeyAuth => "keyauth_credentials",
            Kind::BasicAuth => "basicauth_credentials",
            Kind::Jwt => "jwt_secrets",
            Kind::HmacAuth => "hmacauth_credentials",
            Kind::Acl => "acls",
            Kind::Oauth2 => "oauth2_credentials",
            Kind::MtlsAuth => "mtls_auth_credentials",
        }
    }

    /// Singular name used in [`ConfigError::entity`].
    pub(crate) fn singular(self) -> &'static str {
        let t = self.table();
        &t[..t.len() - 1]
    }

    pub(crate) fn from_table(t: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.table() == t)
    }

    pub(crate) fn is_credential(self) -> bool {
        Kind::CREDENTIALS.contains(&self)
    }

    /// Endpoint key when it is unique (usable to reference the entity).
    pub(crate) fn unique_endpoint_key(self) -> Option<&'static str> {
        match self {
            Kind::Service | Kind::Route | Kind::Upstream | Kind::Sni => Some("name"),
            Kind::Consumer => Some("username"),
            Kind::Plugin => Some("instance_name"),
            Kind::KeyAuth | Kind::Jwt => Some("key"),
            Kind::BasicAuth | Kind::HmacAuth => Some("username"),
            Kind::Oauth2 => Some("client_id"),
            _ => None,
        }
    }

    /// Kong's `cache_key`; when set, deterministic ids derive from it.
    fn cache_key(self) -> Option<&'static [&'static str]> {
        match self {
            Kind::Plugin => Some(&["name", "route", "service", "consumer"]),
            Kind::Target => Some(&["upstream", "target"]),
            Kind::KeyAuth | Kind::Jwt => Some(&["key"]),
            Kind::BasicAuth | Kind::HmacAuth => Some(&["username"]),
            Kind::Acl => Some(&["consumer", "group"]),
            Kind::Oauth2 => Some(&["client_id"]),
            _ => None,
        }
    }

    /// Fields Kong fills automatically (a cache key using them gives no id).
    fn is_auto(self, field: &str) -> bool {
        matches!(
            (self, field),
            (Kind::KeyAuth, "key") | (Kind::Jwt, "key") | (Kind::Oauth2, "client_id")
        )
    }

    fn is_required(self, field: &str) -> bool {
        matches!(
            (self, field),
            (Kind::Plugin, "name")
                | (Kind::Target, "upstream")
                | (Kind::Target, "target")
                | (Kind::Acl, "consumer")
                | (Kind::Acl, "group")
                | (Kind::BasicAuth, "username")
                | (Kind::HmacAuth, "username")
        )
    }

    /// Children that may be nested: (key in parent, child kind, child's fk).
    fn children(self) -> &'static [Child] {
        match self {
            Kind::Service => &[
                ("routes", Kind::Route, "service"),
                ("plugins", Kind::Plugin, "service"),
            ],
            Kind::Route => &[("plugins", Kind::Plugin, "route")],
            Kind::Consumer => &[
                ("plugins", Kind::Plugin, "consumer"),
                ("keyauth_credentials", Kind::KeyAuth, "consumer"),
                ("basicauth_credentials", Kind::BasicAuth, "consumer"),
                ("jwt_secrets", Kind::Jwt, "consumer"),
                ("hmacauth_credentials", Kind::HmacAuth, "consumer"),
                ("acls", Kind::Acl, "consumer"),
                ("oauth2_credentials", Kind::Oauth2, "consumer"),
                ("mtls_auth_credentials", Kind::MtlsAuth, "consumer"),
            ],
            Kind::Upstream => &[("targets", Kind::Target, "upstream")],
            Kind::Certificate => &[("snis", Kind::Sni, "certificate")],
            _ => &[],
        }
    }

    /// Keys detached from an entity's object before its fields are read:
    /// the nested children (in [`Kind::children`] order), then `id`.
    pub(crate) fn detached_keys(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["routes", "plugins", "id"],
            Kind::Route => &["plugins", "id"],
            Kind::Consumer => &[
                "plugins",
                "keyauth_credentials",
                "basicauth_credentials",
                "jwt_secrets",
                "hmacauth_credentials",
                "acls",
                "oauth2_credentials",
                "mtls_auth_credentials",
                "id",
            ],
            Kind::Upstream => &["targets", "id"],
            Kind::Certificate => &["snis", "id"],
            _ => &["id"],
        }
    }

    /// Foreign-key fields and the entity type they reference.
    pub(crate) fn foreign_keys(self) -> &'static [(&'static str, Kind)] {
        match self {
            Kind::Service | Kind::Upstream => &[("client_certificate", Kind::Certificate)],
            Kind::Route => &[("service", Kind::Service)],
            Kind::Sni => &[("certificate", Kind::Certificate)],
            Kind::Target => &[("upstream", Kind::Upstream)],
            Kind::Plugin => &[
                ("route", Kind::Route),
                ("service", Kind::Service),
                ("consumer", Kind::Consumer),
            ],
            Kind::MtlsAuth => &[
                ("consumer", Kind::Consumer),
                ("ca_certificate", Kind::CaCertificate),
            ],
            Kind::KeyAuth
            | Kind::BasicAuth
            | Kind::Jwt
            | Kind::HmacAuth
            | Kind::Acl
            | Kind::Oauth2 => &[("consumer", Kind::Consumer)],
            _ => &[],
        }
    }

    /// Field naming the entity in error messages. Secrets (key-auth keys,
    /// JWT keys) are deliberately not used.
    fn ident_field(self) -> &'static [&'static str] {
        match self {
            Kind::Service | Kind::Route | Kind::Upstream | Kind::Sni => &["name"],
            Kind::Consumer => &["username", "custom_id"],
            Kind::Plugin => &["instance_name", "name"],
            Kind::Target => &["target"],
            Kind::BasicAuth | Kind::HmacAuth => &["username"],
            Kind::Acl => &["group"],
            Kind::Oauth2 => &["name"],
            _ => &[],
        }
    }
}

/// Foreign keys resolved for one entity (at most three per kind).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fks(Vec<(&'static str, Uuid)>);

impl Fks {
    pub(crate) fn get(&self, field: &str) -> Option<&Uuid> {
        self.0.iter().find(|(f, _)| *f == field).map(|(_, id)| id)
    }

    fn insert(&mut self, field: &'static str, id: Uuid) {
        match self.0.iter_mut().find(|(f, _)| *f == field) {
            Some(slot) => slot.1 = id,
            None => self.0.push((field, id)),
        }
    }
}

/// An entity's object: borrowed from the parsed document (a JSON map, or
/// the member list of a [`ConfigTable`] entity), or built (a bare SNI name).
#[derive(Debug, Clone)]
pub(crate) enum Obj<'a> {
    Map(&'a Map<String, Value>),
    Members(&'a [(String, Value)]),
    Owned(Map<String, Value>),
}

impl<'a> Obj<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Obj::Map(m) => m.get(key),
            Obj::Members(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Obj::Owned(m) => m.get(key),
        }
    }

    /// Members in order.
    pub(crate) fn iter(&self) -> ObjIter<'_> {
        match self {
            Obj::Map(m) => ObjIter::Map(m.iter()),
            Obj::Members(m) => ObjIter::Members(m.iter()),
            Obj::Owned(m) => ObjIter::Map(m.iter()),
        }
    }

    /// An owned copy, as a map.
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        match self {
            Obj::Map(m) => (*m).clone(),
            Obj::Members(m) => m.iter().cloned().collect(),
            Obj::Owned(m) => m.clone(),
        }
    }
}

/// [`Obj::iter`].
pub(crate) enum ObjIter<'o> {
    Map(serde_json::map::Iter<'o>),
    Members(std::slice::Iter<'o, (String, Value)>),
}

impl<'o> Iterator for ObjIter<'o> {
    type Item = (&'o str, &'o Value);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ObjIter::Map(i) => i.next().map(|(k, v)| (k.as_str(), v)),
            ObjIter::Members(i) => i.next().map(|(k, v)| (k.as_str(), v)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ObjIter::Map(i) => i.size_hint(),
            ObjIter::Members(i) => i.size_hint(),
        }
    }
}

/// One entity after flattening, before typed conversion.
///
/// `obj` borrows the entity's object from the parsed document: nothing is
/// copied. Its nested children and its `id` are still in it; they are the
/// keys [`Item::detached`] lists, which the readers skip (Kong's loader
/// removes them from the entity before validating its fields).
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    pub kind: Kind,
    /// The entity's fields, plus the detached keys.
    pub obj: Obj<'a>,
    pub id: Uuid,
    /// Name used in error messages.
    pub ident: String,
    /// Foreign key implied by nesting: (fk field, parent id).
    pub parent: Option<(&'static str, Uuid)>,
    /// Resolved foreign keys by field name.
    pub fks: Fks,
    /// Already reported as a uniqueness violation.
    pub duplicate: bool,
}

impl Item<'_> {
    pub(crate) fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        entity_err(self.kind, &self.ident, field, reason)
    }

    /// Keys of `obj` that are not fields of the entity (nested children,
    /// `id`), in the order they were detached.
    pub(crate) fn detached(&self) -> &'static [&'static str] {
        self.kind.detached_keys()
    }

    /// The entity's fields as an owned map, exactly as detaching the
    /// children and the id by `swap_remove` leaves them (key order
    /// included). Only for the few entities that need a modified copy.
    pub(crate) fn fields_map(&self) -> Map<String, Value> {
        // Detach on references first: a service's nested routes (often most
        // of the config) are then never copied.
        let mut entries: Vec<(&str, &Value)> = self.obj.iter().collect();
        for k in self.detached() {
            if let Some(i) = entries.iter().position(|(key, _)| key == k) {
                // As `Map::remove` (a swap_remove) reorders.
                entries.swap_remove(i);
            }
        }
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

fn entity_err(kind: Kind, ident: &str, field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(kind.singular(), ident, field, reason)
}

/// Parses YAML or JSON text. JSON is tried first when the text looks like a
/// JSON object, since serde_json is stricter and faster.
pub fn parse_declarative_str(
    text: &str,
    opts: &ParseOptions,
) -> Result<DeclarativeConfig, ConfigErrors> {
    let value = text_to_value(text)?;
    parse_declarative_value(value, opts)
}

/// Decodes declarative text (YAML or JSON) into a JSON value.
pub fn text_to_value(text: &str) -> Result<Value, ConfigErrors> {
    let parse_err = |e: String| {
        ConfigErrors::single(ConfigError::top(
            "",
            format!("failed parsing declarative configuration: {e}"),
        ))
    };
    if text.trim_start().starts_with('{') {
        match crate::json::from_str(text) {
            Ok(v) => return Ok(v),
            Err(json_err) => {
                // Flow-style YAML also starts with '{'; only report the
                // JSON error if YAML cannot read it either.
                return yaml_to_value(text).map_err(|_| parse_err(json_err.to_string()));
            }
        }
    }
    yaml_to_value(text).map_err(parse_err)
}

fn yaml_to_value(text: &str) -> Result<Value, String> {
    let mut y: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    // Support `<<: *anchor` merge keys, common in hand-written configs.
    y.apply_merge().map_err(|e| e.to_string())?;
    let v = if yaml_is_plain(&y) {
        yaml_into_json(y)
    } else {
        serde_json::to_value(y).map_err(|e| e.to_string())?
    };
    Ok(match v {
        // An empty document is an empty config (and then lacks a version).
        Value::Null => Value::Object(Map::new()),
        other => other,
    })
}

/// Whether `y` has only string mapping keys and no tags: then
/// [`yaml_into_json`] gives exactly what `serde_json::to_value` does (which
/// also handles, or refuses, the other cases).
fn yaml_is_plain(y: &serde_yaml::Value) -> bool {
    use serde_yaml::Value as Y;
    match y {
        Y::Null | Y::Bool(_) | Y::Number(_) | Y::String(_) => true,
        Y::Sequence(items) => items.iter().all(yaml_is_plain),
        Y::Mapping(m) => m
            .iter()
            .all(|(k, v)| matches!(k, Y::String(_)) && yaml_is_plain(v)),
        Y::Tagged(_) => false,
    }
}

/// `serde_json::to_value` of a [`yaml_is_plain`] value, moving its strings
/// instead of copying them.
fn yaml_into_json(y: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        // As serde_yaml serializes numbers: u64, else i64, else f64 (which
        // serde_json turns into null when not finite).
        Y::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (None, Some(i), _) => Value::from(i),
            (None, None, Some(f)) => Value::from(f),
            (None, None, None) => Value::Null,
        },
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_into_json).collect()),
        Y::Mapping(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                if let Y::String(k) = k {
                    out.insert(k, yaml_into_json(v));
                }
            }
            Value::Object(out)
        }
        // Not plain: never reached from `yaml_to_value`.
        tagged @ Y::Tagged(_) => serde_json::to_value(tagged).unwrap_or(Value::Null),
    }
}

/// Parses a config already decoded to JSON: a user-style file (nested, no
/// ids) or a control plane's `config_table` (flat, ids, explicit nulls).
pub fn parse_declarative_value(
    v: Value,
    opts: &ParseOptions,
) -> Result<DeclarativeConfig, ConfigErrors> {
    let Value::Object(top) = &v else {
        return Err(ConfigErrors::single(ConfigError::top(
            "",
            "expected a record",
        )));
    };
    let mut cfg = parse_top(Top::Map(top), opts)?;
    cfg.raw = v;
    Ok(cfg)
}

/// [`parse_declarative_value`] for a control plane's `config_table` as the
/// wire decoder parses it (same checks, same errors). The table is freed
/// on another thread when large (see [`crate::model::drop_elsewhere`]);
/// `raw` is left null.
pub fn parse_declarative_table(
    table: ConfigTable,
    opts: &ParseOptions,
) -> Result<DeclarativeConfig, ConfigErrors> {
    let out = parse_top(Top::Table(&table), opts);
    let entities: usize = table
        .iter()
        .map(|(_, v)| match v {
            TableValue::Entities(list) => list.len(),
            TableValue::Value(_) => 0,
        })
        .sum();
    if entities >= crate::model::FREE_ELSEWHERE_MIN {
        crate::model::drop_elsewhere(table);
    }
    out
}

/// The top level of a config: a JSON object or a [`ConfigTable`].
#[derive(Clone, Copy)]
enum Top<'a> {
    Map(&'a Map<String, Value>),
    Table(&'a ConfigTable),
}

/// An entity list, or what stands where one is expected.
enum Listed<'a> {
    Values(&'a [Value]),
    Entities(&'a [Entity]),
    Other(&'a Value),
}

/// An element of an entity list.
#[derive(Clone, Copy)]
enum Entry<'a> {
    Value(&'a Value),
    Members(&'a [(String, Value)]),
}

impl<'a> Top<'a> {
    /// A member that is not an entity list (`_format_version`, ...).
    fn value(self, key: &str) -> Option<&'a Value> {
        match self {
            Top::Map(m) => m.get(key),
            Top::Table(t) => match t.get(key)? {
                TableValue::Value(v) => Some(v),
                TableValue::Entities(_) => None,
            },
        }
    }

    fn list(self, key: &str) -> Option<Listed<'a>> {
        Some(match self {
            Top::Map(m) => match m.get(key)? {
                Value::Array(a) => Listed::Values(a),
                other => Listed::Other(other),
            },
            Top::Table(t) => match t.get(key)? {
                TableValue::Entities(e) => Listed::Entities(e),
                TableValue::Value(Value::Array(a)) => Listed::Values(a),
                TableValue::Value(other) => Listed::Other(other),
            },
        })
    }

    /// Keys, with the value when it is not an entity list.
    fn keys(self) -> Vec<(&'a str, Option<&'a Value>)> {
        match self {
            Top::Map(m) => m.iter().map(|(k, v)| (k.as_str(), Some(v))).collect(),
            Top::Table(t) => t
                .iter()
                .map(|(k, v)| match v {
                    TableValue::Value(v) => (k, Some(v)),
                    TableValue::Entities(_) => (k, None),
                })
                .collect(),
        }
    }
}

/// Everything but `raw`: the entities borrow from `top` while they are
/// checked, and only the typed config outlives them.
fn parse_top(top: Top<'_>, opts: &ParseOptions) -> Result<DeclarativeConfig, ConfigErrors> {
    let mut errs: Vec<ConfigError> = Vec::new();
    let format_version = match top.value("_format_version") {
        None | Some(Value::Null) => {
            errs.push(ConfigError::top(
                "_format_version",
                "required field missing",
            ));
            String::new()
        }
        Some(Value::String(s)) if FORMAT_VERSIONS.contains(&s.as_str()) => s.clone(),
        Some(Value::String(_)) => {
            errs.push(ConfigError::top(
                "_format_version",
                format!("expected one of: {}", FORMAT_VERSIONS.join(", ")),
            ));
            String::new()
        }
        Some(_) => {
            errs.push(ConfigError::top("_format_version", "expected a string"));
            String::new()
        }
    };
    let transform = match top.value("_transform") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errs.push(ConfigError::top("_transform", "expected a boolean"));
            true
        }
    };

    for (key, val) in top.keys() {
        if IGNORED_TOP_LEVEL.contains(&key) || Kind::from_table(key).is_some() {
            continue;
        }
        if key == "filter_chains" {
            // Wasm filter chains change request handling; silently dropping
            // them would be wrong, but an empty list is harmless.
            if !matches!(val, Some(Value::Null))
                && !matches!(val, Some(Value::Array(a)) if a.is_empty())
            {
                errs.push(ConfigError::top(key, "filter chains are not supported"));
            }
            continue;
        }
        errs.push(ConfigError::top(key, "unknown field"));
    }

    // 1. Flatten: collect every entity with an id.
    let mut items: Vec<Item<'_>> = Vec::new();
    for kind in Kind::ALL {
        match top.list(kind.table()) {
            None | Some(Listed::Other(Value::Null)) => {}
            Some(Listed::Values(list)) => {
                items.reserve(list.len());
                for (i, entry) in list.iter().enumerate() {
                    collect(
                        kind,
                        Entry::Value(entry),
                        i + 1,
                        None,
                        &mut items,
                        &mut errs,
                    );
                }
            }
            Some(Listed::Entities(list)) => {
                items.reserve(list.len());
                for (i, entry) in list.iter().enumerate() {
                    let entry = match entry {
                        Entity::Object(m) => Entry::Members(m),
                        Entity::Value(v) => Entry::Value(v),
                    };
                    collect(kind, entry, i + 1, None, &mut items, &mut errs);
                }
            }
            Some(Listed::Other(_)) => {
                errs.push(ConfigError::top(kind.table(), "expected an array"))
            }
        }
    }

    // 2. Identity: unique ids and endpoint keys.
    let index = build_index(&mut items, &mut errs);

    // 3. Foreign keys.
    resolve_references(&mut items, &index, &mut errs);

    // 4. Typed entities with field validation, then cross-entity checks.
    let mut cfg = DeclarativeConfig {
        format_version,
        transform,
        services: Vec::new(),
        routes: Vec::new(),
        upstreams: Vec::new(),
        targets: Vec::new(),
        plugins: Vec::new(),
        consumers: Vec::new(),
        credentials: Vec::new(),
        certificates: Vec::new(),
        snis: Vec::new(),
        ca_certificates: Vec::new(),
        raw: Value::Null,
    };
    build::build_all(&items, opts, &mut cfg, &mut errs);
    build::cross_checks(&items, &cfg, &mut errs);

    if !errs.is_empty() {
        return Err(ConfigErrors { errors: errs });
    }
    Ok(cfg)
}

/// Parent context while flattening nested entities.
struct Parent<'p> {
    fk: &'static str,
    id: Uuid,
    ident: &'p str,
    table: &'static str,
}

/// `#N` for a top-level entity, `parent.table#N` for a nested one: the name
/// of an entity that has neither a name nor an id.
fn positional(parent: Option<&Parent<'_>>, pos: usize) -> String {
    match parent {
        Some(p) => format!("{}.{}#{pos}", p.ident, p.table),
        None => format!("#{pos}"),
    }
}

fn collect<'a>(
    kind: Kind,
    entry: Entry<'a>,
    pos: usize,
    parent: Option<&Parent<'_>>,
    items: &mut Vec<Item<'a>>,
    errs: &mut Vec<ConfigError>,
) {
    let obj: Obj<'a> = match entry {
        Entry::Value(Value::Object(m)) => Obj::Map(m),
        Entry::Members(m) => Obj::Members(m),
        // `certificates[].snis` may list bare names.
        Entry::Value(Value::String(s)) if kind == Kind::Sni && parent.is_some() => {
            let mut m = Map::new();
            m.insert("name".into(), Value::String(s.clone()));
            Obj::Owned(m)
        }
        _ => {
            errs.push(ConfigError::new(
                kind.singular(),
                positional(parent, pos),
                "@entity",
                "expected a record",
            ));
            return;
        }
    };

    // Nested children are flattened after the parent has an id; they stay
    // in the parent's object, detached (see `Item::detached`).
    let mut nested: Vec<(&'static str, Kind, &'static str, &'a Vec<Value>)> = Vec::new();
    let mut nested_errs: Vec<(&'static str, &'static str)> = Vec::new();
    let given_id: Option<&'a Value> = match &obj {
        Obj::Map(m) => m.get("id"),
        Obj::Members(m) => m.iter().find(|(k, _)| k == "id").map(|(_, v)| v),
        // A bare SNI name: no children, no id.
        Obj::Owned(_) => None,
    };
    if !kind.children().is_empty() {
        for (key, child_kind, fk) in kind.children() {
            let child: Option<&'a Value> = match &obj {
                Obj::Map(m) => m.get(*key),
                Obj::Members(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                Obj::Owned(_) => None,
            };
            match child {
                None | Some(Value::Null) => {}
                Some(Value::Array(list)) => nested.push((key, *child_kind, fk, list)),
                Some(_) => nested_errs.push((key, "expected an array")),
            }
        }
    }

    let ident = ident_for(kind, &obj, given_id, parent, pos);
    for (key, reason) in nested_errs {
        errs.push(ConfigError::new(
            kind.singular(),
            ident.clone(),
            key,
            reason,
        ));
    }

    let id = match given_id {
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(u) => u,
            Err(_) => {
                errs.push(ConfigError::new(
                    kind.singular(),
                    ident.clone(),
                    "id",
                    "expected a valid UUID",
                ));
                Uuid::new_v4()
            }
        },
        None | Some(Value::Null) => generate_id(kind, &obj, parent),
        Some(_) => {
            errs.push(ConfigError::new(
                kind.singular(),
                ident.clone(),
                "id",
                "expected a string",
            ));
            Uuid::new_v4()
        }
    };

    let children_ident = if nested.is_empty() {
        String::new()
    } else {
        ident.clone()
    };
    items.push(Item {
        kind,
        obj,
        id,
        ident,
        parent: parent.map(|p| (p.fk, p.id)),
        fks: Fks::default(),
        duplicate: false,
    });

    for (key, child_kind, fk, list) in nested {
        let p = Parent {
            fk,
            id,
            ident: &children_ident,
            table: key,
        };
        items.reserve(list.len());
        for (i, child) in list.iter().enumerate() {
            collect(
                child_kind,
                Entry::Value(child),
                i + 1,
                Some(&p),
                items,
                errs,
            );
        }
    }
}

fn ident_for(
    kind: Kind,
    obj: &Obj<'_>,
    id: Option<&Value>,
    parent: Option<&Parent<'_>>,
    pos: usize,
) -> String {
    for f in kind.ident_field() {
        if let Some(Value::String(s)) = obj.get(f) {
            if !s.is_empty() {
                return s.clone();
            }
        }
    }
    if let Some(Value::String(s)) = id {
        return s.clone();
    }
    positional(parent, pos)
}

fn ws_of<'o>(obj: &'o Obj<'_>) -> &'o str {
    match obj.get("ws_id") {
        Some(Value::String(s)) => s,
        _ => "*",
    }
}

/// `entity_uuid` for a known entity type, with its namespace computed once.
fn kind_uuid(kind: Kind, key: &str) -> Uuid {
    static NAMESPACES: std::sync::OnceLock<[Uuid; 16]> = std::sync::OnceLock::new();
    let ns = NAMESPACES
        .get_or_init(|| Kind::ALL.map(|k| Uuid::new_v5(&ENTITIES_NS, k.table().as_bytes())));
    Uuid::new_v5(&ns[kind.idx()], key.as_bytes())
}

/// Kong's deterministic id for an entity declared without one: UUIDv5 of
/// `key` in the per-entity-type namespace (`generate_uuid`). `key` is the
/// endpoint key (a service name) or a cache key (`plugins:*:name:route:service:consumer`).
pub fn entity_uuid(table: &str, key: &str) -> Uuid {
    let ns = Uuid::new_v5(&ENTITIES_NS, table.as_bytes());
    Uuid::new_v5(&ns, key.as_bytes())
}

/// Kong's id generation for entities declared without an id.
fn generate_id(kind: Kind, obj: &Obj<'_>, parent: Option<&Parent<'_>>) -> Uuid {
    if let Some(fields) = kind.cache_key() {
        // Kong's `build_cache_key`: entity:ws:values..., giving up (random id)
        // when a needed value is not known yet.
        let mut key = String::with_capacity(64);
        key.push_str(kind.table());
        key.push(':');
        key.push_str(ws_of(obj));
        for f in fields {
            if kind.is_auto(f) {
                return Uuid::new_v4();
            }
            match obj.get(f) {
                Some(Value::String(s)) => {
                    key.push(':');
                    key.push_str(s);
                }
                None => match parent {
                    Some(p) if p.fk == *f => {
                        key.push(':');
                        key.push_str(p.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
                    }
                    _ if kind.is_required(f) => return Uuid::new_v4(),
                    _ => key.push(':'),
                },
                // Kong skips values that are neither strings nor absent.
                Some(_) => {}
            }
        }
        return kind_uuid(kind, &key);
    }
    if let Some(key) = kind.unique_endpoint_key() {
        if let Some(Value::String(s)) = obj.get(key) {
            return kind_uuid(kind, s);
        }
    }
    Uuid::new_v4()
}

/// Id sets with a non-keyed hasher: ids are uniformly random or SHA-1
/// derived, so SipHash buys nothing there.
type IdSet = rustc_hash::FxHashSet<Uuid>;

/// Lookup tables: ids and unique endpoint keys per entity type (indexed
/// by [`Kind::idx`]).
pub(crate) struct Index {
    by_id: Vec<IdSet>,
    by_key: Vec<HashMap<String, Uuid>>,
}

impl Index {
    fn find(&self, kind: Kind, key: &str) -> Option<Uuid> {
        if let Some(id) = self.by_key[kind.idx()].get(key) {
            return Some(*id);
        }
        let id = Uuid::parse_str(key).ok()?;
        self.by_id[kind.idx()].contains(&id).then_some(id)
    }
}

fn uniqueness_msg(kind: Kind, field: &str, value: &str) -> String {
    format!(
        "uniqueness violation: '{}' entity with {field} set to '{value}' already declared",
        kind.table()
    )
}

fn build_index(items: &mut [Item<'_>], errs: &mut Vec<ConfigError>) -> Index {
    let mut index = Index {
        by_id: Kind::ALL.iter().map(|_| IdSet::default()).collect(),
        by_key: Kind::ALL.iter().map(|_| HashMap::new()).collect(),
    };
    let mut counts = [0usize; Kind::ALL.len()];
    for item in items.iter() {
        counts[item.kind.idx()] += 1;
    }
    for (k, n) in counts.into_iter().enumerate() {
        index.by_id[k].reserve(n);
        if Kind::ALL[k].unique_endpoint_key().is_some() {
            index.by_key[k].reserve(n);
        }
    }
    for item in items.iter_mut() {
        let mut failed = false;
        if let Some(key_field) = item.kind.unique_endpoint_key() {
            if let Some(Value::String(key)) = item.obj.get(key_field) {
                let keys = &mut index.by_key[item.kind.idx()];
                if keys.contains_key(key) {
                    errs.push(item.err(key_field, uniqueness_msg(item.kind, key_field, key)));
                    failed = true;
                } else {
                    keys.insert(key.clone(), item.id);
                }
            }
        }
        let ids = &mut index.by_id[item.kind.idx()];
        if !ids.insert(item.id) && !failed {
            errs.push(item.err(
                "id",
                uniqueness_msg(item.kind, "primary key", &item.id.to_string()),
            ));
            failed = true;
        }
        item.duplicate = failed;
    }
    index
}

fn resolve_references(items: &mut [Item<'_>], index: &Index, errs: &mut Vec<ConfigError>) {
    for item in items.iter_mut() {
        let Item {
            kind,
            obj,
            ident,
            parent,
            fks,
            ..
        } = item;
        for (field, target) in kind.foreign_keys() {
            let value = obj.get(field).filter(|v| !v.is_null());
            let from_parent = parent.filter(|(fk, _)| fk == field).map(|(_, id)| id);
            if let Some(v) = value {
                let key = match v {
                    Value::String(s) => Some(s.as_str()),
                    // Flat form `{"id": ...}`; `{"name": ...}` is a convenience.
                    Value::Object(m) => ["id", "name", "username"]
                        .iter()
                        .find_map(|k| m.get(*k).and_then(Value::as_str)),
                    _ => None,
                };
                if key.is_none() && !v.is_object() {
                    errs.push(entity_err(*kind, ident, field, "expected a string"));
                    continue;
                }
                match key.and_then(|k| index.find(*target, k)) {
                    Some(id) => fks.insert(field, id),
                    None => {
                        let shown = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        errs.push(entity_err(
                            *kind,
                            ident,
                            field,
                            format!(
                                "invalid reference '{field}: {shown}' (no such entry in '{}')",
                                target.table()
                            ),
                        ));
                    }
                }
            }
            // Nesting wins over an explicit value, as in Kong.
            if let Some(id) = from_parent {
                fks.insert(field, id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_ids_follow_kong() {
        // Ids that Kong's loader derived for these names, as pinned in its
        // spec/02-integration/04-admin_api/15-off_spec.lua.
        assert_eq!(
            entity_uuid("services", "my-service").to_string(),
            "0855b320-0dd2-547d-891d-601e9b38647f"
        );
        assert_eq!(
            entity_uuid("routes", "my-route").to_string(),
            "481a9539-f49c-51b6-b2e2-fe99ee68866c"
        );
        assert_eq!(
            entity_uuid("consumers", "my-user").to_string(),
            "4b1b701d-de2b-5588-9aa2-3b97061d9f52"
        );
        // Same spec, from before cache keys carried a workspace: the plugin
        // id derives from entity:name:route:service:consumer.
        assert_eq!(
            entity_uuid(
                "plugins",
                "plugins:key-auth::0855b320-0dd2-547d-891d-601e9b38647f:"
            )
            .to_string(),
            "0611a5a9-de73-5a2d-a4e6-6a38ad4c3cb2"
        );
    }

    #[test]
    fn text_decoding() {
        let v = text_to_value("{\"_format_version\": \"3.0\"}").unwrap();
        assert_eq!(v["_format_version"], "3.0");
        let v = text_to_value("_format_version: \"3.0\"\nservices: []\n").unwrap();
        assert!(v["services"].is_array());
        let v = text_to_value("").unwrap();
        assert!(v.as_object().unwrap().is_empty());
        assert!(text_to_value("{ \"a\": ").is_err());
        let v = text_to_value("base: &b\n  host: x\nsvc:\n  <<: *b\n  port: 1\n").unwrap();
        assert_eq!(v["svc"]["host"], "x");
    }

    #[test]
    fn yaml_conversion_matches_serde_json() {
        for text in [
            "a: 1\nb: -2\nc: 18446744073709551615\nd: 1.5\ne: .inf\nf: .nan\ng: ~\nh: [true, 'x', 0x1F]\n",
            "a: {b: {c: [1, {d: e}]}}\nlist: [[], {}, '']\n",
            "x: 1\n'1': 2\nz: -9223372036854775808\n",
            "base: &b {host: x, port: 1}\nsvc:\n  <<: *b\n  port: 2\n",
            "- 1\n- two\n- 3.0\n- 1e400\n",
            "1: a\ntrue: b\n",
            "a: !tagged 1\n",
        ] {
            let y: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            let mut y2 = y.clone();
            y2.apply_merge().unwrap();
            let expected = serde_json::to_value(y2.clone()).map_err(|e| e.to_string());
            if yaml_is_plain(&y2) {
                let got = yaml_into_json(y2);
                assert_eq!(Ok(&got), expected.as_ref(), "{text}");
                assert_eq!(
                    got.to_string(),
                    expected.unwrap().to_string(),
                    "order: {text}"
                );
            }
        }
        assert!(!yaml_is_plain(&serde_yaml::from_str("1: a\n").unwrap()));
        assert!(!yaml_is_plain(&serde_yaml::from_str("a: !t 1\n").unwrap()));
    }

    #[test]
    fn kinds_are_consistent() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k.idx(), i);
            let mut detached: Vec<&str> = k.children().iter().map(|(key, _, _)| *key).collect();
            detached.push("id");
            assert_eq!(k.detached_keys(), detached.as_slice());
            assert_eq!(Kind::from_table(k.table()), Some(k));
            assert_eq!(format!("{}s", k.singular()), k.table());
        }
    }
}
