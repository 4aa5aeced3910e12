//! The plain values a config is made of.

use super::{kind, Field, Path, Reader};
use crate::config::duration;
use crate::config::schema::Defs;
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;

/// Reads with `f`, recording its complaint at `at`.
fn parsed<T>(
    v: &Value,
    at: &Path,
    r: &mut Reader,
    f: impl FnOnce(&Value) -> Result<T, String>,
) -> Option<T> {
    f(v).map_err(|e| r.add(at, e)).ok()
}

impl Field for String {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        parsed(v, at, r, |v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", kind(other))),
        })
    }
    fn schema(_: &mut Defs) -> Value {
        json!({"type": "string"})
    }
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

impl Field for bool {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        parsed(v, at, r, |v| {
            v.as_bool()
                .ok_or_else(|| format!("expected true or false, found {}", kind(v)))
        })
    }
    fn schema(_: &mut Defs) -> Value {
        json!({"type": "boolean"})
    }
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

fn integer(v: &Value, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!(
            "expected a whole number from 0 to {max}, found {}",
            match v {
                Value::Number(n) => n.to_string(),
                other => kind(other).to_owned(),
            }
        )),
    }
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
                parsed(v, at, r, |v| integer(v, u64::from(<$t>::MAX)))
                    .and_then(|n| <$t>::try_from(n).ok())
            }
            fn schema(_: &mut Defs) -> Value {
                json!({"type": "integer", "minimum": 0, "maximum": <$t>::MAX})
            }
            fn to_json(&self) -> Value {
                json!(*self)
            }
        }
    )*};
}
whole_number!(u8, u16, u32);

/// What `duration::parse` accepts: `0`, or terms such as `1m30s`, `1.5s`,
/// `100ms`. (Not `format: duration`, which JSON Schema defines as ISO 8601.)
pub(crate) const DURATION_PATTERN: &str =
    r"^\s*(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)\s*$";

impl Field for Duration {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        parsed(v, at, r, |v| match v {
            Value::String(s) => duration::parse(s),
            Value::Number(n) => Err(format!(
                "durations need a unit: write \"{n}s\" or \"{n}ms\", not {n}"
            )),
            other => Err(format!(
                "expected a duration such as \"30s\", found {}",
                kind(other)
            )),
        })
    }
    fn schema(_: &mut Defs) -> Value {
        json!({"type": "string", "pattern": DURATION_PATTERN})
    }
    fn to_json(&self) -> Value {
        Value::String(duration::format(*self))
    }
}

impl Field for IpAddr {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        let s = String::read(v, at, r)?;
        parsed(v, at, r, |_| {
            s.parse()
                .map_err(|_| format!("{s:?} is not an IP address (e.g. \"0.0.0.0\" or \"::1\")"))
        })
    }
    fn schema(_: &mut Defs) -> Value {
        json!({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
}

impl Field for IpNet {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        let s = String::read(v, at, r)?;
        parsed(v, at, r, |_| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR (e.g. \"10.0.0.0/8\") or an IP address"))
        })
    }
    fn schema(_: &mut Defs) -> Value {
        json!({
            "type": "string",
            "description": "A CIDR such as \"10.0.0.0/8\", or an IP address",
            "pattern": r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$",
        })
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
}

impl<T: Field> Field for Option<T> {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        T::read(v, at, r).map(Some)
    }
    fn schema(defs: &mut Defs) -> Value {
        T::schema(defs)
    }
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_json)
    }
}

/// A list; an item that cannot be read keeps its place (as its type's
/// default) so that the paths of the items after it stay right.
impl<T: Field + Default> Field for Vec<T> {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        match v {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| T::read(item, &at.index(i), r).unwrap_or_default())
                    .collect(),
            ),
            other => {
                r.add(at, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }
    fn schema(defs: &mut Defs) -> Value {
        json!({"type": "array", "items": T::schema(defs)})
    }
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(T::to_json).collect())
    }
}
