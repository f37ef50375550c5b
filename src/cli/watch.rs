//! `reeve watch ...`: list, show, add, remove, pause, resume, update and trigger watches,
//! by id or by target URI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::client::output::{self, Cell, Fields, Table, text, when};
use super::client::{self, CliError, Conn, ConnArgs, Idempotency};

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: WatchCommand,
}

/// A watch is named by its id (a UUID) or by its target URI (anything with `://`).
#[derive(Args, Debug)]
struct Key {
    /// The watch's id (a UUID) or its target URI (e.g. viking://res/docs).
    key: String,
    /// The project, when a target URI names watches in several of your projects.
    #[arg(long)]
    project: Option<String>,
}

#[derive(Subcommand, Debug)]
enum WatchCommand {
    /// List watches (one page; --cursor for the next).
    Ls {
        /// Only watches in this project.
        #[arg(long)]
        project: Option<String>,
        /// Leave out paused watches.
        #[arg(long)]
        active_only: bool,
        /// Page size, 1-500 (server default 50).
        #[arg(long)]
        limit: Option<usize>,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one watch.
    Show(Key),
    /// Create a watch: re-run a pipeline for SOURCE into --to every --every minutes.
    Add {
        /// What the watch follows (an absolute URI).
        source: String,
        /// The target URI, unique within the project.
        #[arg(long, value_name = "URI")]
        to: String,
        /// Minutes between fires (e.g. 60, or 0.5).
        #[arg(long, value_name = "MINUTES", allow_negative_numbers = true)]
        every: f64,
        /// The project the watch belongs to.
        #[arg(long)]
        project: String,
        /// Why the watch exists (kept with it).
        #[arg(long)]
        reason: Option<String>,
        /// Passed to the build's jobs as REEVE_WATCH_INSTRUCTION.
        #[arg(long)]
        instruction: Option<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        /// The watch's own pipeline (a JSON file, `-` for stdin); default: the project's.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Delete a watch.
    Rm {
        #[command(flatten)]
        key: Key,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Pause a watch (its interval is kept).
    Pause {
        #[command(flatten)]
        key: Key,
        /// Why it is paused.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Resume a paused watch; its next run is computed from now.
    Resume {
        #[command(flatten)]
        key: Key,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Change a watch's settings (at least one of the options).
    Update {
        #[command(flatten)]
        key: Key,
        /// Minutes between fires, > 0 (to stop a watch, pause it).
        #[arg(long, value_name = "MINUTES", allow_negative_numbers = true)]
        interval: Option<f64>,
        /// true resumes, false pauses.
        #[arg(long, value_name = "true|false")]
        active: Option<bool>,
        /// A new reason; "" clears it.
        #[arg(long)]
        reason: Option<String>,
        /// A new instruction; "" clears it.
        #[arg(long)]
        instruction: Option<String>,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Fire a watch now (paused or not).
    Trigger {
        #[command(flatten)]
        key: Key,
        #[command(flatten)]
        idem: Idempotency,
    },
}

pub fn run(args: WatchArgs) -> ExitCode {
    let json = args.conn.json;
    client::run(json, async move {
        let conn = Conn::new(&args.conn)?;
        dispatch(&conn, args.command).await
    })
}

/// How a `<key>` argument names a watch.
#[derive(Debug, PartialEq)]
enum WatchKey {
    Id(Uuid),
    Uri(String),
}

fn classify(raw: &str) -> Result<WatchKey, CliError> {
    if let Ok(id) = Uuid::parse_str(raw) {
        return Ok(WatchKey::Id(id));
    }
    if raw.contains("://") {
        return Ok(WatchKey::Uri(raw.to_string()));
    }
    Err(CliError::Usage(format!(
        "{raw:?} is not a watch key: give the watch's id (a UUID, as `reeve watch ls` prints it) \
         or its target URI (it contains ://, e.g. viking://res/docs)"
    )))
}

/// Path segments under `/api/v1`, and query pairs.
type Address = (Vec<String>, Vec<(&'static str, String)>);

/// The path and query that address a watch, with `extra` appended to the path
/// (`trigger`). A URI travels as the `to_uri` query parameter, encoded by `url`.
fn address(key: &Key, extra: Option<&str>) -> Result<Address, CliError> {
    let mut path = vec!["watches".to_string()];
    let mut query = Vec::new();
    match classify(&key.key)? {
        WatchKey::Id(id) => path.push(id.to_string()),
        WatchKey::Uri(uri) => query.push(("to_uri", uri)),
    }
    path.extend(extra.map(str::to_string));
    if let Some(p) = &key.project {
        query.push(("project", p.clone()));
    }
    Ok((path, query))
}

fn interval(flag: &str, minutes: f64) -> Result<f64, CliError> {
    if minutes.is_finite() && minutes > 0.0 {
        Ok(minutes)
    } else {
        Err(CliError::Usage(format!(
            "{flag} must be a number of minutes > 0 (got {minutes}); to stop a watch, pause it with `reeve watch pause <key>`"
        )))
    }
}

async fn dispatch(conn: &Conn, command: WatchCommand) -> Result<(), CliError> {
    match command {
        WatchCommand::Ls {
            project,
            active_only,
            limit,
            cursor,
        } => {
            let mut query = Vec::new();
            if let Some(p) = project {
                query.push(("project", p));
            }
            if active_only {
                query.push(("active_only", "true".to_string()));
            }
            if let Some(l) = limit {
                query.push(("limit", l.to_string()));
            }
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            let answer = conn
                .call(conn.request(Method::GET, &["watches"], &query))
                .await?;
            client::show(conn, &answer, list);
            if !conn.json {
                let shown = answer.body["watches"].as_array().map_or(0, Vec::len);
                if shown == 0 {
                    output::note("no watches");
                } else if let Some(next) = answer.body["next_cursor"].as_str() {
                    output::note(&format!(
                        "{shown} of {} shown; next page: --cursor {next}",
                        text(&answer.body["total"])
                    ));
                }
            }
            Ok(())
        }
        WatchCommand::Show(key) => {
            let (path, query) = address(&key, None)?;
            let answer = conn
                .call(conn.request(Method::GET, &segs(&path), &query))
                .await?;
            client::show(conn, &answer, detail);
            Ok(())
        }
        WatchCommand::Add {
            source,
            to,
            every,
            project,
            reason,
            instruction,
            paused,
            pipeline,
            idem,
        } => {
            let mut body = json!({
                "project": project,
                "source": source,
                "to_uri": to,
                "watch_interval": interval("--every", every)?,
                "is_active": !paused,
            });
            if let Some(r) = reason {
                body["reason"] = Value::String(r);
            }
            if let Some(i) = instruction {
                body["instruction"] = Value::String(i);
            }
            if let Some(p) = pipeline {
                body["pipeline"] = client::read_pipeline(&p)?;
            }
            let rb = conn.mutation(Method::POST, &["watches"], &[], &idem)?;
            let answer = conn.call(rb.json(&body)).await?;
            client::show(conn, &answer, detail);
            Ok(())
        }
        WatchCommand::Rm { key, idem } => {
            let (path, query) = address(&key, None)?;
            let rb = conn.mutation(Method::DELETE, &segs(&path), &query, &idem)?;
            let answer = conn.call(rb).await?;
            client::show(conn, &answer, |b, _| {
                format!("deleted watch {} ({})", text(&b["id"]), text(&b["to_uri"]))
            });
            Ok(())
        }
        WatchCommand::Pause { key, reason, idem } => {
            let mut body = json!({"is_active": false});
            if let Some(r) = reason {
                body["reason"] = cleared(r);
            }
            patch(conn, &key, body, &idem).await
        }
        WatchCommand::Resume { key, idem } => {
            patch(conn, &key, json!({"is_active": true}), &idem).await
        }
        WatchCommand::Update {
            key,
            interval: minutes,
            active,
            reason,
            instruction,
            idem,
        } => {
            let mut body = Map::new();
            if let Some(m) = minutes {
                body.insert("watch_interval".into(), json!(interval("--interval", m)?));
            }
            if let Some(a) = active {
                body.insert("is_active".into(), Value::Bool(a));
            }
            if let Some(r) = reason {
                body.insert("reason".into(), cleared(r));
            }
            if let Some(i) = instruction {
                body.insert("instruction".into(), cleared(i));
            }
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to update: give at least one of --interval, --active, --reason, --instruction".into(),
                ));
            }
            patch(conn, &key, Value::Object(body), &idem).await
        }
        WatchCommand::Trigger { key, idem } => {
            let (path, query) = address(&key, Some("trigger"))?;
            let rb = conn.mutation(Method::POST, &segs(&path), &query, &idem)?;
            let answer = conn.call(rb).await?;
            client::show(conn, &answer, |b, _| {
                format!(
                    "triggered watch {} ({})",
                    text(&b["id"]),
                    text(&b["to_uri"])
                )
            });
            Ok(())
        }
    }
}

/// `""` clears a text setting (the API's null).
fn cleared(s: String) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s)
    }
}

async fn patch(conn: &Conn, key: &Key, body: Value, idem: &Idempotency) -> Result<(), CliError> {
    let (path, query) = address(key, None)?;
    let rb = conn.mutation(Method::PATCH, &segs(&path), &query, idem)?;
    let answer = conn.call(rb.json(&body)).await?;
    client::show(conn, &answer, detail);
    Ok(())
}

fn segs(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

fn state_of(w: &Value) -> &'static str {
    if w["is_active"].as_bool().unwrap_or(false) {
        "active"
    } else {
        "paused"
    }
}

fn every(w: &Value) -> String {
    match w["watch_interval"].as_f64() {
        Some(m) => format!("{m}m"),
        None => "-".into(),
    }
}

fn last_run(w: &Value) -> String {
    let r = &w["last_run"];
    if r.is_null() {
        return "-".into();
    }
    format!("{} {}", when(&r["at"]), text(&r["outcome"]))
}

fn list(body: &Value, color: bool) -> String {
    let mut t = Table::new(&[
        "ID", "PROJECT", "TO_URI", "EVERY", "STATE", "NEXT RUN", "LAST RUN",
    ]);
    for w in body["watches"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&w["id"]).into(),
            text(&w["project"]).into(),
            text(&w["to_uri"]).into(),
            every(w).into(),
            output::state(state_of(w)),
            when(&w["next_run_at"]).into(),
            last_run(w).into(),
        ]);
    }
    t.render(color)
}

fn detail(w: &Value, color: bool) -> String {
    let mut f = Fields::new();
    f.add("id", text(&w["id"]))
        .add("project", text(&w["project"]))
        .add("source", text(&w["source"]))
        .add("to_uri", text(&w["to_uri"]))
        .add("every", every(w))
        .add("state", output::state(state_of(w)))
        .add("reason", text(&w["reason"]))
        .add("instruction", text(&w["instruction"]))
        .add("next run", when(&w["next_run_at"]))
        .add("last run", last_run(w))
        .add("last build", text(&w["last_run"]["build_id"]))
        .add("failures in a row", text(&w["consecutive_failures"]))
        .add("skipped (overlap)", text(&w["skipped_overlap"]))
        .add("missed", text(&w["missed"]))
        .add(
            "pipeline",
            Cell::from(if w["pipeline"].is_null() {
                "the project's default".to_string()
            } else {
                w["pipeline"].to_string()
            }),
        )
        .add(
            "created",
            format!("{} by {}", when(&w["created_at"]), text(&w["created_by"])),
        )
        .add("updated", when(&w["updated_at"]))
        .add("version", text(&w["version"]));
    f.render(color)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ids_uris_or_refused() {
        let id = Uuid::now_v7();
        assert_eq!(classify(&id.to_string()).unwrap(), WatchKey::Id(id));
        assert_eq!(
            classify("viking://res/a b?c&d#e").unwrap(),
            WatchKey::Uri("viking://res/a b?c&d#e".into())
        );
        for bad in ["docs", "res/docs", "", "0190c3d2"] {
            assert!(matches!(classify(bad), Err(CliError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn intervals_must_be_finite_and_positive() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = interval("--interval", bad).unwrap_err().to_string();
            assert!(e.contains("reeve watch pause"), "{e}");
        }
        assert_eq!(interval("--every", 0.5).unwrap(), 0.5);
    }
}
