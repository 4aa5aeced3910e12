//! Printing: aligned tables and key/value blocks for people, JSON or YAML of
//! the server's data for scripts, and colour only where it is wanted.

use crate::cli::{ColorChoice, Format};
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{IsTerminal, Write};

/// Writes `text` to standard output as one piece.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// The server's data as JSON (pretty) or YAML, ending with a newline.
pub fn data(format: Format, value: &Value) -> Result<String> {
    match format {
        Format::Yaml => serde_yaml_ng::to_string(value).context("cannot write YAML"),
        _ => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .context("cannot write JSON"),
    }
}

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colour on a terminal (unless `NO_COLOR` is set), or as `choice` says.
    pub fn new(choice: ColorChoice) -> Paint {
        let on = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        };
        Paint { on }
    }

    /// No colour.
    #[cfg(test)]
    pub fn off() -> Paint {
        Paint { on: false }
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Added things.
    pub fn green(&self, t: &str) -> String {
        self.wrap("32", t)
    }

    /// Removed things, failures.
    pub fn red(&self, t: &str) -> String {
        self.wrap("31", t)
    }

    /// Changed things, warnings.
    pub fn yellow(&self, t: &str) -> String {
        self.wrap("33", t)
    }

    /// Reordered things.
    pub fn cyan(&self, t: &str) -> String {
        self.wrap("36", t)
    }

    /// Headings.
    pub fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
}

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, each line indented by `indent` spaces.
    pub fn render_indented(&self, indent: usize) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = " ".repeat(indent);
            for (i, cell) in row.iter().enumerate().take(columns) {
                line.push_str(cell);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The table.
    pub fn render(&self) -> String {
        self.render_indented(0)
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// `Key:  value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}:{}{v}\n", " ".repeat(w - width(k) + 2)))
        .collect()
}

/// A JSON value on one line for a table cell: strings without quotes,
/// mappings as `key: value, …`, `-` for nothing.
pub fn inline(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(inline).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) | Value::Array(_) => format!("{k}: {{{}}}", inline(v)),
                _ => format!("{k}: {}", inline(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// An RFC 3339 time with how long ago it was, e.g. `2026-01-02T03:04:05.000Z (12s ago)`.
pub fn when(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_owned();
    };
    match std::time::SystemTime::now().duration_since(t) {
        Ok(d) => format!("{} ago", ago(d.as_secs())),
        Err(_) => rfc3339.to_owned(),
    }
}

/// Seconds as a short age: `5s`, `3m`, `2h`, `4d`.
fn ago(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_end_without_spaces() {
        let mut t = Table::new(&["NAME", "N"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "".into()]);
        assert_eq!(t.render(), "NAME    N\na       1\nlonger\n");
    }

    #[test]
    fn values_read_inline() {
        assert_eq!(
            inline(&json!({"a": 1, "b": "x", "c": {"d": true}})),
            "a: 1, b: x, c: {d: true}"
        );
        assert_eq!(inline(&json!(null)), "-");
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(7200), "2h");
    }

    #[test]
    fn colour_is_plain_when_off() {
        assert_eq!(Paint::off().red("x"), "x");
        assert_eq!(Paint::new(ColorChoice::Always).red("x"), "\x1b[31mx\x1b[0m");
    }
}
