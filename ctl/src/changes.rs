//! The server's change lists (`changes[]` of an apply, a version or a diff)
//! as lines people read: `+` added, `-` removed, `~` changed, `↕` reordered.

use crate::output::Paint;
use serde_json::Value;

/// Longest value shown on a change line.
const MAX_VALUE: usize = 120;

/// One change per line, each prefixed by `indent`.
pub fn render(changes: &[Value], paint: Paint, indent: &str) -> String {
    let mut out = String::new();
    for c in changes {
        let path = c["path"].as_str().unwrap_or("?");
        let (old, new) = (&c["old"], &c["new"]);
        let line = match c["op"].as_str().unwrap_or("") {
            "added" => paint.green(&format!("+ {path}{}", scalar_suffix(new))),
            "removed" => paint.red(&format!("- {path}{}", scalar_suffix(old))),
            "changed" => paint.yellow(&format!("~ {path}: {} → {}", value(old), value(new))),
            "reordered" => paint.cyan(&format!(
                "↕ {path} reordered: {} → {}",
                value(old),
                value(new)
            )),
            other => format!("? {path} ({other})"),
        };
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `: value` for a scalar or short list; nothing for a whole resource,
/// whose path says what it is.
fn scalar_suffix(v: &Value) -> String {
    match v {
        Value::Object(_) | Value::Null => String::new(),
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => String::new(),
        other => format!(": {}", value(other)),
    }
}

/// A value on one line: strings as written, the rest as compact JSON,
/// lists of keys as `[a, b]`; cut at [`MAX_VALUE`] characters.
fn value(v: &Value) -> String {
    let text = match v {
        Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_owned(),
        Value::Array(items) if items.iter().all(Value::is_string) => format!(
            "[{}]",
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_VALUE {
        let cut: String = text.chars().take(MAX_VALUE - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// `no changes`, `1 change`, `3 changes`.
pub fn count(n: usize) -> String {
    match n {
        0 => "no changes".into(),
        1 => "1 change".into(),
        n => format!("{n} changes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_change_reads_on_one_line() {
        let changes = vec![
            json!({"op": "changed", "path": "upstreams[web].backends[http://127.0.0.1:3002].weight", "old": 2, "new": 5}),
            json!({"op": "added", "path": "routes[api]", "new": {"name": "api", "upstream": "api"}}),
            json!({"op": "removed", "path": "upstreams[old]", "old": {"name": "old"}}),
            json!({"op": "added", "path": "health.path", "new": "/healthz"}),
            json!({"op": "reordered", "path": "routes", "old": ["a", "b"], "new": ["b", "a"]}),
            json!({"op": "changed", "path": "tls.min_version", "old": "", "new": "1.3"}),
        ];
        assert_eq!(
            render(&changes, Paint::off(), ""),
            "~ upstreams[web].backends[http://127.0.0.1:3002].weight: 2 → 5\n\
             + routes[api]\n\
             - upstreams[old]\n\
             + health.path: /healthz\n\
             ↕ routes reordered: [a, b] → [b, a]\n\
             ~ tls.min_version: \"\" → 1.3\n"
        );
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(500);
        let line = render(
            &[json!({"op": "changed", "path": "p", "old": long, "new": 1})],
            Paint::off(),
            "",
        );
        assert!(line.chars().count() < 140, "{line}");
        assert!(line.contains('…'));
    }

    #[test]
    fn counts_read_as_words() {
        assert_eq!(count(0), "no changes");
        assert_eq!(count(1), "1 change");
        assert_eq!(count(7), "7 changes");
    }
}
