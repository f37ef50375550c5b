//! The dependency direction between reeve's modules, as ARCHITECTURE.md states it: every
//! `crate::<module>` a source file names must be one its module may depend on, and the table
//! of what may depend on what has no cycle. A new import against the direction fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use. The pure core depends on nothing; the
/// log on the core; the doors on what is below them; the server and the CLI put it together.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    // The console's files and their routes; it reaches reeve only over HTTP, like any client.
    ("console", &[]),
    ("log", &["domain"]),
    ("control", &["domain", "log"]),
    ("auth", &["domain", "log"]),
    ("limits", &["domain"]),
    ("runner", &["domain"]),
    (
        "api",
        &["auth", "control", "domain", "limits", "log", "runner"],
    ),
    (
        "mcp",
        &["api", "auth", "control", "domain", "limits", "log"],
    ),
    ("cluster", &["api", "control", "domain", "log"]),
    (
        "server",
        &[
            "api", "auth", "cluster", "console", "control", "domain", "limits", "log", "mcp",
            "runner",
        ],
    ),
    (
        "cli",
        &[
            "api", "auth", "cluster", "console", "control", "domain", "limits", "log", "mcp",
            "runner", "server",
        ],
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root files).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first.to_string()),
    }
}

/// The modules named as `crate::<m>` (or `crate::{<m>, ...}`) outside comments.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                    .collect(),
                None => vec![
                    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or(""),
                ],
            };
            out.extend(
                names
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
            );
        }
    }
    out
}

#[test]
fn every_module_depends_only_on_what_the_table_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module {module} is not in the table; add it with what it may use",
                file.display()
            ));
            continue;
        };
        seen.insert(module.clone());
        let text = std::fs::read_to_string(&file).expect("reading a source file");
        for dep in named_modules(&text) {
            if dep != module && !may.contains(dep.as_str()) {
                wrong.push(format!(
                    "{}: {module} uses crate::{dep}, which it may not (it may use {may:?})",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        seen.len(),
        allowed.len(),
        "a module in the table has no sources"
    );
}

#[test]
fn the_table_has_no_cycle() {
    // Kahn's algorithm: repeatedly take a module all of whose dependencies are taken.
    let mut left: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| done.contains(d)))
            .map(|(m, _)| *m)
            .collect();
        assert!(!ready.is_empty(), "the table has a cycle among {left:?}");
        for m in ready {
            left.remove(m);
            done.insert(m);
        }
    }
}

#[test]
fn the_scanner_sees_plain_and_grouped_imports_but_not_comments() {
    let text = "use crate::log::Hash;\n// crate::server in a comment\nuse crate::{api, mcp::McpConfig};\nlet x = crate::control::now(); // crate::cli\n";
    let found: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(found, ["api", "control", "log", "mcp"]);
}
