//! Durations written as strings: `"100ms"`, `"30s"`, `"1m30s"`, `"1.5s"`.
//!
//! The grammar is Go's `time.ParseDuration` without signs: one or more
//! `<number><unit>` terms, units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`.
//! [`format`] prints the shortest exact form, so `parse(format(d)) == d`.

use std::time::Duration;

const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Parses a duration string; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<Duration, String> {
    parse_detailed(text).map_err(|e| match e {
        Problem::Malformed(m) | Problem::TooLarge(m) => m,
    })
}

/// Why a duration string was refused.
pub(crate) enum Problem {
    /// It is not written the way durations are.
    Malformed(String),
    /// It is well written but does not fit in 64 bits of nanoseconds
    /// (about 584 years): a bound the config schema's pattern cannot state.
    TooLarge(String),
}

/// [`parse`], telling a malformed string from one that is too large.
pub(crate) fn parse_detailed(text: &str) -> Result<Duration, Problem> {
    use Problem::{Malformed, TooLarge};
    let s = text.trim();
    if s.is_empty() {
        return Err(Malformed(
            "empty duration; write e.g. \"30s\" or \"100ms\"".into(),
        ));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() {
            return Err(Malformed(format!(
                "invalid duration {text:?}: expected a number at {after:?}"
            )));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(Malformed(format!(
                "invalid duration {text:?}: missing unit (ns, us, ms, s, m, h), e.g. \"{num}s\""
            )));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| {
                Malformed(format!(
                    "invalid duration {text:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h)"
                ))
            })?;
        total = total
            .checked_add(term_nanos(num, scale).ok_or_else(|| term_problem(text, num))?)
            .ok_or_else(|| TooLarge(format!("duration {text:?} is too large")))?;
        rest = next;
    }
    let nanos =
        u64::try_from(total).map_err(|_| TooLarge(format!("duration {text:?} is too large")))?;
    Ok(Duration::from_nanos(nanos))
}

/// Why the term `num` of `text` could not be counted: a well-written
/// number only fails by overflowing.
fn term_problem(text: &str, num: &str) -> Problem {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        Problem::Malformed(format!("invalid duration {text:?}"))
    } else {
        Problem::TooLarge(format!("duration {text:?} is too large"))
    }
}

/// Nanoseconds of one `<number><unit>` term; `None` when the number is malformed.
fn term_nanos(num: &str, scale: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let int_val: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos = int_val.checked_mul(scale)?;
    // Fraction: digits beyond nanosecond precision are dropped.
    let mut place = scale;
    for d in frac.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(d - b'0') * place)?;
    }
    Some(nanos)
}

/// Formats a duration in its shortest exact form: `"1m30s"`, `"100ms"`, `"0s"`.
pub fn format(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, scale) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let n = nanos / scale;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(name);
            nanos %= scale;
        }
    }
    out
}

/// serde helper: serialize a [`Duration`] as its string form.
pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// True when `d` is `N` seconds: `skip_serializing_if = "duration::is_secs::<N>"`
/// leaves a field out of the canonical JSON while it holds its default, so
/// nodes that predate the field still read configs that do not use it.
pub fn is_secs<const N: u64>(d: &Duration) -> bool {
    *d == Duration::from_secs(N)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "30",
            "s",
            "5 parsecs",
            "1.2.3s",
            "-1s",
            "1d",
            "ms5",
            ".",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse("99999999999h").unwrap_err().contains("too large"));
    }

    #[test]
    fn formats_shortest_form() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_millis(100)), "100ms");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(nanos in any::<u64>()) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = parse(&s);
        }
    }
}
