//! JSON text to [`serde_json::Value`], as `serde_json::from_slice` builds
//! it, with less work per object.
//!
//! With `preserve_order`, every JSON object becomes an `IndexMap` that
//! `serde_json` grows one insert at a time (rehashing at each doubling).
//! Here a map is sized once: for the objects of an array (entities are
//! listed by the thousand, all alike) from the size of the previous one,
//! otherwise by first gathering the members on one stack shared by the
//! whole document. Everything else (the parser, its errors and recursion
//! limit, numbers, duplicate keys: the last value wins at the first
//! position) is `serde_json`'s own.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `serde_json::from_slice::<Value>` (wire messages go through
/// [`crate::table`], which builds on this module's seed).
#[cfg(test)]
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut stack = Vec::new();
    let v = ValueSeed::new(&mut stack).deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// `serde_json::from_str::<Value>`.
pub fn from_str(text: &str) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut stack = Vec::new();
    let v = ValueSeed::new(&mut stack).deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Object members not yet in their map, innermost object last.
pub(crate) type Stack = Vec<(String, Value)>;

pub(crate) struct ValueSeed<'s> {
    stack: &'s mut Stack,
    /// Members expected if the value is an object (0: unknown).
    members: usize,
    /// Set to the member count if the value is an object.
    seen: Option<&'s mut usize>,
}

impl<'s> ValueSeed<'s> {
    pub(crate) fn new(stack: &'s mut Stack) -> ValueSeed<'s> {
        ValueSeed {
            stack,
            members: 0,
            seen: None,
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        // Each object element is sized like the previous one.
        let mut members = 0;
        loop {
            let mut seen = 0;
            let next = seq.next_element_seed(ValueSeed {
                stack: &mut *self.stack,
                members,
                seen: Some(&mut seen),
            })?;
            let Some(v) = next else { break };
            out.push(v);
            members = seen;
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let m: Map<String, Value> = if self.members > 0 {
            let mut m = Map::with_capacity(self.members);
            while let Some(k) = map.next_key::<String>()? {
                let v = map.next_value_seed(ValueSeed::new(&mut *self.stack))?;
                m.insert(k, v);
            }
            m
        } else {
            let start = self.stack.len();
            while let Some(k) = map.next_key::<String>()? {
                let v = map.next_value_seed(ValueSeed::new(&mut *self.stack))?;
                self.stack.push((k, v));
            }
            // `Map: FromIterator` reserves for the exact count, then inserts
            // in order: a repeated key keeps its first slot and takes the
            // last value, as `Map::insert` does.
            self.stack.drain(start..).collect()
        };
        if let Some(seen) = self.seen {
            *seen = m.len();
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn same(text: &str) {
        let ours = from_str(text).map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
        if let (Ok(a), Ok(b)) = (&ours, &theirs) {
            // Same key order, not only the same members.
            assert_eq!(a.to_string(), b.to_string(), "{text}");
        }
        let ours = from_slice(text.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
    }

    #[test]
    fn matches_serde_json() {
        for t in [
            "{}",
            "[]",
            "null",
            "true",
            " 12 ",
            "-3",
            "18446744073709551615",
            "1.5e3",
            "1e400",
            r#""a\u00e9\n""#,
            r#"{"b": 1, "a": [1, {"z": null, "y": [true, false]}], "c": {"d": {}}}"#,
            r#"{"a": 1, "b": 2, "a": 3}"#,
            r#"{"x": {"k": 1, "k": {"n": 2}}, "y": [{"a": 1, "a": 2}]}"#,
            r#"[{"a": 1, "b": 2, "c": 3}, {"c": 1, "a": 2, "a": 5}, {}, {"z": [{"q": 1}, {"q": 2, "r": 3}]}, 7, {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}]"#,
            r#"{"a": 1,}"#,
            r#"{"a" 1}"#,
            "[1, 2",
            "{} x",
            "",
            r#"{"\ud800": 1}"#,
        ] {
            same(t);
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        same(&deep);
        let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
        same(&deep);
    }
}
