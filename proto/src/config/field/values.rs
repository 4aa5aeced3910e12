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

/// A whole number no larger than `max`. `823.0` is one: JSON Schema's
/// `integer` is any number without a fractional part, and a JSON encoder
/// may write whole numbers that way.
fn integer(v: &Value, max: u64) -> Result<u64, String> {
    let whole = v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=max as f64).contains(f))
            .map(|f| f as u64)
    });
    match whole {
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
    r"^[ \t\r\n]*(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)[ \t\r\n]*$";

impl Field for Duration {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        let problem = match v {
            Value::String(s) => match duration::parse_detailed(s) {
                Ok(d) => return Some(d),
                Err(duration::Problem::Malformed(m)) => m,
                Err(duration::Problem::TooLarge(m)) => {
                    r.add_rule(at, m);
                    return None;
                }
            },
            Value::Number(n) => {
                format!("durations need a unit: write \"{n}s\" or \"{n}ms\", not {n}")
            }
            other => format!("expected a duration such as \"30s\", found {}", kind(other)),
        };
        r.add(at, problem);
        None
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

/// One octet of a dotted IPv4 address, without leading zeros.
const OCTET: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// The shape the schema gives IPv6 CIDRs: the characters of an address, a
/// colon, and a prefix length up to 128. Whether the address part is one
/// is a rule beyond the schema (an exact pattern for IPv6 would be longer
/// than this file).
fn ipv6_cidr_shaped(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    addr.contains(':')
        && addr
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        && !len.is_empty()
        && len.len() <= 3
        && len.bytes().all(|b| b.is_ascii_digit())
        && (len == "0" || !len.starts_with('0'))
        && len.parse::<u8>().is_ok_and(|n| n <= 128)
}

impl Field for IpNet {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        let s = String::read(v, at, r)?;
        let read = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
        match read {
            Ok(net) => Some(net),
            Err(_) => {
                let m = format!("{s:?} is not a CIDR (e.g. \"10.0.0.0/8\") or an IP address");
                if ipv6_cidr_shaped(&s) {
                    r.add_rule(at, m);
                } else {
                    r.add(at, m);
                }
                None
            }
        }
    }
    fn schema(_: &mut Defs) -> Value {
        json!({
            "type": "string",
            "description": "A CIDR such as \"10.0.0.0/8\", or an IP address",
            "anyOf": [
                {"format": "ipv4"},
                {"format": "ipv6"},
                {"pattern": format!(r"^{OCTET}(\.{OCTET}){{3}}/(3[0-2]|[12]?[0-9])$")},
                {"pattern": r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"},
            ],
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
