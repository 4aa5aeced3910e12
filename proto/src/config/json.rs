//! Reads JSON text into a tree as strictly as the YAML reader: a key given
//! twice in one object is an error, not a silent "last one wins", and a
//! document holds at most [`MAX_NODES`] values.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// The most values (scalars, arrays, objects) one document may hold; the
/// YAML reader's absolute limit too.
pub const MAX_NODES: usize = 2_000_000;

/// Parses one JSON document (nested at most 128 levels deep).
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let left = Cell::new(MAX_NODES);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict { left: &left }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Value`], refusing duplicate keys and counting values.
#[derive(Clone, Copy)]
struct Strict<'a> {
    left: &'a Cell<usize>,
}

impl Strict<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the document holds more than {MAX_NODES} values"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate entry with key {key:?}"
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_like_serde_json() {
        let text = r#"{"a": [1, -2, 2.5, "x", true, null, {}], "b": {"c": 18446744073709551615}}"#;
        assert_eq!(
            parse(text).expect("valid"),
            serde_json::from_str::<Value>(text).expect("valid")
        );
    }

    #[test]
    fn refuses_duplicate_keys_trailing_text_and_deep_nesting() {
        let e = parse(r#"{"a": 1, "b": {"x": 1, "x": 2}}"#).expect_err("duplicate");
        assert!(
            e.to_string().contains("duplicate entry with key \"x\""),
            "{e}"
        );
        assert!(parse("{} {}").is_err());
        assert!(parse(&"[".repeat(200)).is_err());
    }

    #[test]
    fn counts_values() {
        let text = format!("[{}0]", "0,".repeat(MAX_NODES - 2));
        assert!(parse(&text).is_ok(), "exactly the limit");
        let text = format!("[{}0]", "0,".repeat(MAX_NODES - 1));
        let e = parse(&text).expect_err("one more");
        assert!(e.to_string().contains("more than 2000000 values"), "{e}");
    }
}
