//! Strict JSON reading shared by the manifest and hardware-definition loaders.
//!
//! `serde_json::Value` silently keeps the last of two equal keys. For signed, security-relevant
//! documents that is dangerous: a reviewer (or another tool) may read the first value while we
//! act on the last. [`parse_strict`] rejects duplicate keys instead, and strips the UTF-8 byte
//! order mark that some Windows-authored Azure Sphere manifests start with.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Deepest nesting accepted; real manifests are 3 levels deep.
const MAX_DEPTH: usize = 32;

/// Parse JSON text, rejecting duplicate object keys and nesting deeper than 32 levels.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = StrictValue { depth: 0 }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A JSON path such as `$.Capabilities.Gpio[1]`, built while walking a document so that every
/// error can say exactly where it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonPath(String);

impl JsonPath {
    pub fn root() -> Self {
        JsonPath("$".to_owned())
    }

    pub fn key(&self, key: &str) -> Self {
        JsonPath(format!("{}.{key}", self.0))
    }

    pub fn index(&self, index: usize) -> Self {
        JsonPath(format!("{}[{index}]", self.0))
    }

    /// The last object key on the path (`Gpio` for `$.Capabilities.Gpio[1]`).
    pub fn field(&self) -> &str {
        let last = self.0.rsplit('.').next().unwrap_or(&self.0);
        last.split('[').next().unwrap_or(last)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The JSON type name used in "expected X, found Y" messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct StrictValue {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl StrictValue {
    fn nested<E: de::Error>(&self) -> Result<StrictValue, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!("JSON nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(StrictValue { depth: self.depth + 1 })
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.nested()?)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
            }
            let value = map.next_value_seed(self.nested()?)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicate_keys_with_their_name() {
        let error = parse_strict(br#"{"Name": "a", "Name": "b"}"#).unwrap_err();
        assert!(error.to_string().contains("duplicate key \"Name\""), "{error}");
    }

    #[test]
    fn strips_a_byte_order_mark() {
        let value = parse_strict(b"\xEF\xBB\xBF{\"a\": 1}").unwrap();
        assert_eq!(value["a"], 1);
    }

    #[test]
    fn rejects_deep_nesting_without_overflowing_the_stack() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let error = parse_strict(deep.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("nested deeper"), "{error}");
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert!(parse_strict(br#"{"a": 1} x"#).is_err());
    }

    #[test]
    fn paths_name_their_field() {
        let path = JsonPath::root().key("Capabilities").key("Gpio").index(2);
        assert_eq!(path.as_str(), "$.Capabilities.Gpio[2]");
        assert_eq!(path.field(), "Gpio");
    }
}
