//! What people see: aligned tables and `key: value` views, coloured only on a terminal
//! without `NO_COLOR`. Scripts use `--json`, which prints the server's answer as received.

use std::io::{IsTerminal, Write};

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Green,
    Yellow,
    Red,
    Cyan,
    Dim,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Red => "31",
            Color::Cyan => "36",
            Color::Dim => "2",
        }
    }
}

/// Whether to colour what goes to stdout: a terminal, and no `NO_COLOR` (https://no-color.org).
pub fn color_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint(text: &str, color: Option<Color>, bold: bool, on: bool) -> String {
    if !on || (color.is_none() && !bold) {
        return text.to_string();
    }
    let mut codes = Vec::new();
    if bold {
        codes.push("1");
    }
    if let Some(c) = color {
        codes.push(c.code());
    }
    format!("\x1b[{}m{text}\x1b[0m", codes.join(";"))
}

/// One cell: its text, and a colour for terminals.
pub struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    pub fn colored(text: impl Into<String>, color: Option<Color>) -> Cell {
        Cell {
            text: text.into(),
            color,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }
}

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Columns two spaces apart, widths measured on the plain text (colour codes take no
    /// room on screen), no trailing spaces. Headers are bold on a terminal.
    pub fn render(&self, color: bool) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.text.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<(&str, Option<Color>, bool)>| {
            let last = cells.len().saturating_sub(1);
            for (i, (text, c, bold)) in cells.into_iter().enumerate() {
                out.push_str(&paint(text, c, bold, color));
                if i < last {
                    let pad = widths[i] - text.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        };
        line(self.headers.iter().map(|h| (*h, None, true)).collect());
        for row in &self.rows {
            line(
                (0..n)
                    .map(|i| {
                        row.get(i)
                            .map_or(("", None, false), |c| (c.text.as_str(), c.color, false))
                    })
                    .collect(),
            );
        }
        out
    }
}

/// `key: value` lines, keys aligned, for one resource.
#[derive(Default)]
pub struct Fields {
    rows: Vec<(&'static str, Cell)>,
}

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    pub fn add(&mut self, key: &'static str, value: impl Into<Cell>) -> &mut Fields {
        self.rows.push((key, value.into()));
        self
    }

    pub fn render(&self, color: bool) -> String {
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.len() + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.rows {
            let key = format!("{k}:");
            out.push_str(&paint(&key, None, true, color));
            out.extend(std::iter::repeat_n(' ', width - key.len() + 1));
            out.push_str(&paint(&v.text, v.color, false, color));
            out.push('\n');
        }
        out
    }
}

/// Writes to stdout. A closed pipe (`reeve watch ls | head -1`) is not an error worth a panic.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.is_empty() && !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// A note for people, on stderr so that stdout stays clean for pipes.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// An API time (RFC 3339) as `YYYY-MM-DD HH:MM:SS` UTC; `-` for null.
pub fn when(v: &Value) -> String {
    match v.as_str() {
        None => "-".into(),
        Some(s) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            Err(_) => s.to_string(),
        },
    }
}

/// A JSON string, number or bool as text; `-` for null or absent.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The colour of a state word wherever it appears.
pub fn state_color(state: &str) -> Option<Color> {
    match state {
        "active" | "finished" | "accepted" => Some(Color::Green),
        "paused" | "queued" | "scheduled" => Some(Color::Yellow),
        "failure" | "error" | "killed" | "rejected" | "revoked" => Some(Color::Red),
        "running" | "triggered" => Some(Color::Cyan),
        "skipped" | "expired" => Some(Color::Dim),
        _ => None,
    }
}

pub fn state(state: impl Into<String>) -> Cell {
    let s = state.into();
    let c = state_color(&s);
    Cell::colored(s, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_plain_text_even_when_coloured() {
        let mut t = Table::new(&["ID", "STATE", "X"]);
        t.row(vec!["a".into(), state("active"), "1".into()]);
        t.row(vec!["long-id".into(), state("paused"), "22".into()]);
        let plain = t.render(false);
        assert_eq!(
            plain,
            "ID       STATE   X\na        active  1\nlong-id  paused  22\n"
        );
        let coloured = t.render(true);
        let stripped = coloured
            .replace("\x1b[1m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        assert!(coloured.contains("\x1b[32mactive\x1b[0m"));
    }

    #[test]
    fn times_are_shown_in_utc_without_millis() {
        assert_eq!(
            when(&Value::from("2026-11-22T10:00:01.250Z")),
            "2026-11-22 10:00:01"
        );
        assert_eq!(when(&Value::Null), "-");
    }
}
