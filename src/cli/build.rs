//! `reeve build ...`: list, show, trigger, restart and abort builds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::output::{self, Fields, Table, text, when};
use super::client::{self, CliError, Conn, ConnArgs, Idempotency};

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: BuildCommand,
}

#[derive(Args, Debug)]
struct Target {
    /// The build's id (a UUID).
    build: String,
    /// The project the build belongs to.
    #[arg(long)]
    project: String,
}

#[derive(Subcommand, Debug)]
enum BuildCommand {
    /// List a project's builds, newest first (one page; --cursor for the next).
    Ls {
        /// The project whose builds to list.
        #[arg(long)]
        project: String,
        /// Page size, 1-200 (server default 20).
        #[arg(long)]
        limit: Option<usize>,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a build with its jobs.
    Show(Target),
    /// Start a build.
    Trigger {
        /// The project to build in.
        #[arg(long)]
        project: String,
        /// A pipeline as a JSON file (`-` for stdin): {"jobs": [...]} or {"generate": "<command>"}.
        /// Default: the project's default pipeline.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Added to every job's environment (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Restart a build as a new generation (same number, next restart counter).
    Restart {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Abort a build: kill its queued and running jobs.
    Abort {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        idem: Idempotency,
    },
}

pub fn run(args: BuildArgs) -> ExitCode {
    client::run(args.conn.json, async move {
        let conn = Conn::new(&args.conn)?;
        dispatch(&conn, args.command).await
    })
}

fn build_id(raw: &str, project: &str) -> Result<String, CliError> {
    client::uuid_arg(
        raw,
        "build",
        &format!("`reeve build ls --project {project}` lists them"),
    )
    .map(|u| u.to_string())
}

async fn dispatch(conn: &Conn, command: BuildCommand) -> Result<(), CliError> {
    match command {
        BuildCommand::Ls {
            project,
            limit,
            cursor,
        } => {
            let mut query = Vec::new();
            if let Some(l) = limit {
                query.push(("limit", l.to_string()));
            }
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            let answer = conn
                .call(conn.request(Method::GET, &["projects", &project, "builds"], &query))
                .await?;
            client::show(conn, &answer, list);
            if !conn.json {
                if answer.body["builds"].as_array().is_none_or(Vec::is_empty) {
                    output::note("no builds");
                } else if let Some(next) = answer.body["next_cursor"].as_str() {
                    output::note(&format!("more: --cursor {next}"));
                }
            }
        }
        BuildCommand::Show(t) => {
            let id = build_id(&t.build, &t.project)?;
            let answer = conn
                .call(conn.request(Method::GET, &["projects", &t.project, "builds", &id], &[]))
                .await?;
            client::show(conn, &answer, detail);
        }
        BuildCommand::Trigger {
            project,
            pipeline,
            env,
            idem,
        } => {
            let mut body = json!({ "env": client::env_pairs(&env)? });
            if let Some(p) = pipeline {
                body["pipeline"] = client::read_pipeline(&p)?;
            }
            let rb = conn.mutation(Method::POST, &["projects", &project, "builds"], &[], &idem)?;
            let answer = conn.call(rb.json(&body)).await?;
            client::show(conn, &answer, detail);
        }
        BuildCommand::Restart { target, idem } => {
            let id = build_id(&target.build, &target.project)?;
            let rb = conn.mutation(
                Method::POST,
                &["projects", &target.project, "builds", &id, "restart"],
                &[],
                &idem,
            )?;
            let answer = conn.call(rb).await?;
            client::show(conn, &answer, detail);
        }
        BuildCommand::Abort { target, idem } => {
            let id = build_id(&target.build, &target.project)?;
            let rb = conn.mutation(
                Method::POST,
                &["projects", &target.project, "builds", &id, "abort"],
                &[],
                &idem,
            )?;
            let answer = conn.call(rb).await?;
            client::show(conn, &answer, aborted);
        }
    }
    Ok(())
}

/// `#3.2`: number 3, second generation.
fn number(b: &Value) -> String {
    format!("#{}.{}", text(&b["number"]), text(&b["restart_counter"]))
}

fn list(body: &Value, color: bool) -> String {
    let mut t = Table::new(&["ID", "BUILD", "STATE", "TRIGGER", "CREATED", "BY"]);
    for b in body["builds"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&b["id"]).into(),
            number(b).into(),
            output::state(text(&b["state"])),
            text(&b["trigger"]).into(),
            when(&b["created_at"]).into(),
            text(&b["created_by"]).into(),
        ]);
    }
    t.render(color)
}

pub(super) fn jobs_table(jobs: &[Value], color: bool) -> String {
    let mut t = Table::new(&["JOB", "NAME", "STATE", "EXIT", "STARTED", "FINISHED"]);
    for j in jobs {
        let mut state = text(&j["state"]);
        if !j["superseded_by"].is_null() {
            state.push_str(" (superseded)");
        }
        t.row(vec![
            text(&j["id"]).into(),
            text(&j["name"]).into(),
            output::Cell::colored(
                state,
                output::state_color(j["state"].as_str().unwrap_or("")),
            ),
            text(&j["exit_code"]).into(),
            when(&j["started_at"]).into(),
            when(&j["finished_at"]).into(),
        ]);
    }
    t.render(color)
}

fn detail(b: &Value, color: bool) -> String {
    let mut f = Fields::new();
    f.add("id", text(&b["id"]))
        .add("project", text(&b["project"]))
        .add("build", number(b))
        .add("state", output::state(text(&b["state"])))
        .add("trigger", text(&b["trigger"]))
        .add(
            "created",
            format!("{} by {}", when(&b["created_at"]), text(&b["created_by"])),
        );
    if !b["watch_id"].is_null() {
        f.add("watch", text(&b["watch_id"]));
    }
    if !b["restarted_from"].is_null() {
        f.add("restarted from", text(&b["restarted_from"]));
    }
    if b["aborted"].as_bool().unwrap_or(false) {
        f.add("aborted", "yes");
    }
    let mut out = f.render(color);
    if let Some(jobs) = b["jobs"].as_array() {
        out.push('\n');
        out.push_str(&jobs_table(jobs, color));
    }
    out
}

pub(super) fn aborted(body: &Value, _color: bool) -> String {
    let ids: Vec<String> = body["aborted"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if ids.is_empty() {
        "nothing to abort: every job had already ended".into()
    } else {
        format!("aborted {} job(s):\n{}", ids.len(), ids.join("\n"))
    }
}
