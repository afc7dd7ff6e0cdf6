//! A control plane's `config_table` as parsed for validation.
//!
//! The same JSON as a [`serde_json::Value`], except that the objects listed
//! under an entity table (`routes`, `services`, ...) are kept as member lists
//! instead of maps. With `preserve_order` every map is an `IndexMap` that
//! hashes each key (SipHash) on insert and again on every lookup; for
//! entity objects, read a handful of times by the validator and then
//! dropped, that hashing was a third of applying a large push. Everything
//! else (nested values, other top-level keys) is a plain `Value`, and what
//! the validator sees is the same: a repeated key keeps its first position
//! and takes the last value, as `Map::insert` does.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::declarative::Kind;
use crate::json::{Stack, ValueSeed};

/// Members of an entity object, in order, keys distinct.
pub type Members = Vec<(String, Value)>;

/// A parsed `config_table` (a JSON object).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigTable {
    members: Vec<(String, TableValue)>,
}

/// A top-level member of a [`ConfigTable`].
#[derive(Debug, Clone, PartialEq)]
pub enum TableValue {
    /// The array under an entity table's key.
    Entities(Vec<Entity>),
    /// Anything else.
    Value(Value),
}

/// An element of an entity table's array.
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    Object(Members),
    /// Not an object (the validator reports it).
    Value(Value),
}

impl ConfigTable {
    pub fn get(&self, key: &str) -> Option<&TableValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &TableValue)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The table as a `Value` (for Kong's config hash when a CP sends
    /// none, and for tests).
    pub fn to_value(&self) -> Value {
        let entity = |e: &Entity| match e {
            Entity::Object(m) => Value::Object(m.iter().cloned().collect()),
            Entity::Value(v) => v.clone(),
        };
        Value::Object(
            self.members
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        TableValue::Entities(list) => {
                            Value::Array(list.iter().map(entity).collect())
                        }
                        TableValue::Value(v) => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    }

    /// The table of a JSON object (tests, benches, non-wire callers).
    pub fn from_map(m: Map<String, Value>) -> ConfigTable {
        let members = m
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Array(list) if Kind::from_table(&k).is_some() => TableValue::Entities(
                        list.into_iter()
                            .map(|e| match e {
                                Value::Object(o) => Entity::Object(o.into_iter().collect()),
                                other => Entity::Value(other),
                            })
                            .collect(),
                    ),
                    other => TableValue::Value(other),
                };
                (k, v)
            })
            .collect();
        ConfigTable { members }
    }
}

/// Sets `key` to `v` in `members`: a repeated key keeps its first position
/// and takes the last value (`Map::insert`). Entity objects are small and
/// keys of equal length rare: a scan costs less than hashing.
fn insert<V>(members: &mut Vec<(String, V)>, key: String, v: V) {
    match members.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = v,
        None => members.push((key, v)),
    }
}

/// A `reconfigure`-shaped message: `config_table` parsed as a
/// [`ConfigTable`], every other member as a `Value`.
pub(crate) struct Message {
    /// `None`: the message is not a JSON object.
    pub members: Option<Map<String, Value>>,
    /// `Some(None)`: present but not an object.
    pub config_table: Option<Option<ConfigTable>>,
}

/// Parses a message as `serde_json::from_slice` would (same errors).
pub(crate) fn parse_message(bytes: &[u8]) -> serde_json::Result<Message> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut stack = Vec::new();
    let m = MessageSeed { stack: &mut stack }.deserialize(&mut de)?;
    de.end()?;
    Ok(m)
}

/// Parses a `config_table` object on its own (`None`: not an object).
pub fn parse_table(bytes: &[u8]) -> serde_json::Result<Option<ConfigTable>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut stack = Vec::new();
    let t = TableSeed { stack: &mut stack }.deserialize(&mut de)?;
    de.end()?;
    Ok(t)
}

/// Consumes a value of any type but an object: the visitors below only
/// look into objects (and entity arrays).
macro_rules! not_an_object {
    ($out:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($out)
        }
    };
}

struct MessageSeed<'s> {
    stack: &'s mut Stack,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = Message;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Message;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    not_an_object!(Message {
        members: None,
        config_table: None,
    });

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut members = Map::new();
        let mut config_table = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == "config_table" {
                config_table = Some(map.next_value_seed(TableSeed {
                    stack: &mut *self.stack,
                })?);
            } else {
                let v = map.next_value_seed(ValueSeed::new(&mut *self.stack))?;
                members.insert(k, v);
            }
        }
        Ok(Message {
            members: Some(members),
            config_table,
        })
    }
}

struct TableSeed<'s> {
    stack: &'s mut Stack,
}

impl<'de> DeserializeSeed<'de> for TableSeed<'_> {
    type Value = Option<ConfigTable>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TableSeed<'_> {
    type Value = Option<ConfigTable>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    not_an_object!(None);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = if Kind::from_table(&k).is_some() {
                map.next_value_seed(EntitiesSeed {
                    stack: &mut *self.stack,
                })?
            } else {
                TableValue::Value(map.next_value_seed(ValueSeed::new(&mut *self.stack))?)
            };
            insert(&mut members, k, v);
        }
        Ok(Some(ConfigTable { members }))
    }
}

/// The value under an entity table's key: an array's objects become
/// [`Members`]; anything else stays a `Value`.
struct EntitiesSeed<'s> {
    stack: &'s mut Stack,
}

impl<'de> DeserializeSeed<'de> for EntitiesSeed<'_> {
    type Value = TableValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TableValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntitiesSeed<'_> {
    type Value = TableValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<TableValue, E> {
        Ok(TableValue::Value(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<TableValue, E> {
        ValueSeed::new(self.stack)
            .visit_i64(v)
            .map(TableValue::Value)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<TableValue, E> {
        ValueSeed::new(self.stack)
            .visit_u64(v)
            .map(TableValue::Value)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<TableValue, E> {
        ValueSeed::new(self.stack)
            .visit_f64(v)
            .map(TableValue::Value)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TableValue, E> {
        Ok(TableValue::Value(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<TableValue, E> {
        Ok(TableValue::Value(Value::String(v)))
    }

    fn visit_none<E>(self) -> Result<TableValue, E> {
        Ok(TableValue::Value(Value::Null))
    }

    fn visit_unit<E>(self) -> Result<TableValue, E> {
        Ok(TableValue::Value(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TableValue, A::Error> {
        ValueSeed::new(self.stack)
            .visit_map(map)
            .map(TableValue::Value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TableValue, A::Error> {
        let mut out = Vec::new();
        // Entities of one table look alike: size each like the previous.
        let mut members = 0;
        loop {
            let next = seq.next_element_seed(EntitySeed {
                stack: &mut *self.stack,
                members,
            })?;
            let Some(e) = next else { break };
            if let Entity::Object(m) = &e {
                members = m.len();
            }
            out.push(e);
        }
        Ok(TableValue::Entities(out))
    }
}

struct EntitySeed<'s> {
    stack: &'s mut Stack,
    members: usize,
}

impl<'de> DeserializeSeed<'de> for EntitySeed<'_> {
    type Value = Entity;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entity, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntitySeed<'_> {
    type Value = Entity;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Entity, E> {
        Ok(Entity::Value(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Entity, E> {
        ValueSeed::new(self.stack).visit_i64(v).map(Entity::Value)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entity, E> {
        ValueSeed::new(self.stack).visit_u64(v).map(Entity::Value)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Entity, E> {
        ValueSeed::new(self.stack).visit_f64(v).map(Entity::Value)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Entity, E> {
        Ok(Entity::Value(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Entity, E> {
        Ok(Entity::Value(Value::String(v)))
    }

    fn visit_none<E>(self) -> Result<Entity, E> {
        Ok(Entity::Value(Value::Null))
    }

    fn visit_unit<E>(self) -> Result<Entity, E> {
        Ok(Entity::Value(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Entity, A::Error> {
        ValueSeed::new(self.stack).visit_seq(seq).map(Entity::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entity, A::Error> {
        let mut members = Vec::with_capacity(self.members);
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed::new(&mut *self.stack))?;
            insert(&mut members, k, v);
        }
        Ok(Entity::Object(members))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Same value (and key order) as serde_json's parse, or the same error.
    fn same(text: &str) {
        let ours = parse_table(text.as_bytes())
            .map(|t| t.map(|t| t.to_value()))
            .map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<Value>(text)
            .map(|v| v.is_object().then_some(v))
            .map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
        if let (Ok(Some(a)), Ok(Some(b))) = (&ours, &theirs) {
            assert_eq!(a.to_string(), b.to_string(), "order: {text}");
            let Value::Object(m) = b.clone() else {
                unreachable!()
            };
            assert_eq!(
                ConfigTable::from_map(m),
                parse_table(text.as_bytes()).unwrap().unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn matches_serde_json() {
        for t in [
            "{}",
            "[]",
            "null",
            "7",
            r#""s""#,
            "[{}, [1, {\"a\": 2}]]",
            r#"{"routes": [{"a": 1, "b": [2, {"c": 3}], "a": 4}, "x", 5, null, [1], {"d": {"e": 1, "e": 2}}]}"#,
            r#"{"routes": {"a": 1}, "services": "x", "plugins": null, "targets": 1.5, "upstreams": true, "snis": -3}"#,
            r#"{"_format_version": "3.0", "workspaces": [{"name": "default"}], "routes": [], "routes": [{"x": 1}]}"#,
            r#"{"services": [{"name": "s", "routes": [{"name": "r"}]}, {"a": 1, "b": 2, "c": 3}, {}]}"#,
            r#"{"routes": [{"a": 1}"#,
            r#"{"routes": [{"a": 1,}]}"#,
            r#"{"routes": [{"\ud800": 1}]}"#,
            r#"{} x"#,
            "",
        ] {
            same(t);
        }
        let deep = format!(
            r#"{{"routes": [{{"a": {}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        same(&deep);
    }

    #[test]
    fn messages_keep_everything_but_the_table_as_values() {
        let m = parse_message(
            br#"{"type": "reconfigure", "config_table": {"routes": [{"a": 1}]}, "x": [1]}"#,
        )
        .unwrap();
        let members = m.members.unwrap();
        assert_eq!(members.get("type"), Some(&Value::from("reconfigure")));
        assert_eq!(members.get("x"), Some(&serde_json::json!([1])));
        assert!(members.get("config_table").is_none());
        assert_eq!(
            m.config_table.unwrap().unwrap().to_value(),
            serde_json::json!({"routes": [{"a": 1}]})
        );
        let m = parse_message(br#"{"config_table": [1]}"#).unwrap();
        assert_eq!(m.config_table, Some(None));
        let m = parse_message(b"[1, 2]").unwrap();
        assert!(m.members.is_none());
        assert!(parse_message(b"{").is_err());
    }
}
