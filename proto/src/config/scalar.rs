//! What a plain (unquoted) YAML scalar means, by the YAML 1.2 core schema,
//! as `serde_yaml` read it: the config's YAML reader uses it for every
//! plain scalar.

use serde_json::{Number, Value};

/// A plain (unquoted) scalar read by the YAML 1.2 core schema: null, a
/// boolean, an integer (decimal, `0x`, `0o`, `0b`), a float, else a
/// string. Digits with a leading zero stay a string. `.inf` and `.nan`
/// have no JSON form: they are a problem, not a silent null.
pub(super) fn resolve_plain(text: String) -> Result<Value, String> {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => return Err(format!("{text} is not a finite number")),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(&text);
    if unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned.bytes().all(|b| b.is_ascii_digit())
    {
        return Ok(Value::String(text));
    }
    if let Some(n) = integer(&text).or_else(|| float(&text).and_then(Number::from_f64)) {
        return Ok(Value::Number(n));
    }
    Ok(Value::String(text))
}

fn integer(s: &str) -> Option<Number> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = digits.strip_prefix("0b") {
        (2, d)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        if magnitude == 0 {
            return Some(Number::from(0));
        }
        let n = i64::try_from(magnitude - 1).ok()?;
        Some(Number::from(-n - 1))
    } else {
        Some(Number::from(magnitude))
    }
}

/// A finite float in YAML 1.2 core form; too large to be finite is a string.
fn float(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    // [0-9]* (. [0-9]*)? ([eE] [-+]? [0-9]+)? with at least one digit
    // before the exponent; Rust's parser would also take "inf" and "NaN".
    let b = unsigned.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let v = super::super::yaml::parse(concat!(
            "[~, null, NULL, '', true, False, 7, -7, +7, 0x1f, 0o17, 0b101, -0x10, 0,",
            " 0755, 1.5, -2.5e3, .5, 1e999, 18446744073709551616, -9223372036854775808,",
            " '3', \"true\", yes, 1_000, 30s, 1.2.3, 0x, 0xg]",
        ))
        .expect("parses");
        assert_eq!(
            v,
            serde_json::json!([
                null,
                null,
                null,
                "",
                true,
                false,
                7,
                -7,
                7,
                31,
                15,
                5,
                -16,
                0,
                "0755",
                1.5,
                -2500.0,
                0.5,
                "1e999",
                1.8446744073709552e19,
                i64::MIN,
                "3",
                "true",
                "yes",
                "1_000",
                "30s",
                "1.2.3",
                "0x",
                "0xg"
            ])
        );
    }
}
