//! `reeve job ...`: show a job, read or follow its log, restart, rerun or abort it.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::client::output::{self, Fields, text, when};
use super::client::{self, CliError, Conn, ConnArgs, Idempotency};

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Args, Debug)]
struct Target {
    /// The job's id (a UUID; `reeve build show` lists them).
    job: String,
    /// The project the job belongs to.
    #[arg(long)]
    project: String,
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Show one job.
    Show(Target),
    /// Print a job's output (the server's log, as text; --json does not apply). Output that
    /// job log retention deleted is refused with code log_pruned (exit 1).
    Log {
        #[command(flatten)]
        target: Target,
        /// Keep printing output as it comes until the job ends.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines of what is there now.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Restart a job that ended, with everything downstream of it.
    Restart {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Run a job that ended again, alone; its dependents now wait on the new run.
    Rerun {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// Kill a queued or running job.
    Abort {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        idem: Idempotency,
    },
}

pub fn run(args: JobArgs) -> ExitCode {
    client::run(args.conn.json, async move {
        let conn = Conn::new(&args.conn)?;
        dispatch(&conn, args.command).await
    })
}

fn job_id(t: &Target) -> Result<String, CliError> {
    client::uuid_arg(
        &t.job,
        "job",
        &format!(
            "`reeve build show <build> --project {}` lists a build's jobs",
            t.project
        ),
    )
    .map(|u| u.to_string())
}

async fn verb(
    conn: &Conn,
    t: &Target,
    verb: &str,
    idem: &Idempotency,
) -> Result<client::Answer, CliError> {
    let id = job_id(t)?;
    let rb = conn.mutation(
        Method::POST,
        &["projects", &t.project, "jobs", &id, verb],
        &[],
        idem,
    )?;
    conn.call(rb).await
}

async fn dispatch(conn: &Conn, command: JobCommand) -> Result<(), CliError> {
    match command {
        JobCommand::Show(t) => {
            let id = job_id(&t)?;
            let answer = conn
                .call(conn.request(Method::GET, &["projects", &t.project, "jobs", &id], &[]))
                .await?;
            client::show(conn, &answer, detail);
        }
        JobCommand::Log {
            target,
            follow,
            tail,
        } => {
            let id = job_id(&target)?;
            let mut query = Vec::new();
            if let Some(n) = tail {
                query.push(("tail_lines", n.to_string()));
            }
            if follow {
                query.push(("follow", "true".to_string()));
            }
            let rb = conn.request(
                Method::GET,
                &["projects", &target.project, "jobs", &id, "log"],
                &query,
            );
            // No overall timeout: a followed log lasts as long as the job.
            let mut resp = conn.send(rb).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = resp.chunk().await.map_err(|e| conn.transport(&e))? {
                if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                    // The reader went away (`| head`); so can we.
                    return Ok(());
                }
            }
        }
        JobCommand::Restart { target, idem } => {
            let answer = verb(conn, &target, "restart", &idem).await?;
            client::show(conn, &answer, |b, _| {
                let mut out = String::from("restarted:\n");
                for c in b["jobs"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{} -> {} {}\n",
                        text(&c["from"]),
                        text(&c["to"]),
                        text(&c["name"])
                    ));
                }
                out
            });
        }
        JobCommand::Rerun { target, idem } => {
            let answer = verb(conn, &target, "rerun", &idem).await?;
            client::show(conn, &answer, |b, color| detail(&b["job"], color));
        }
        JobCommand::Abort { target, idem } => {
            let answer = verb(conn, &target, "abort", &idem).await?;
            client::show(conn, &answer, super::build::aborted);
        }
    }
    Ok(())
}

fn detail(j: &Value, color: bool) -> String {
    let mut f = Fields::new();
    f.add("id", text(&j["id"]))
        .add("name", text(&j["name"]))
        .add("build", text(&j["build_id"]))
        .add("state", output::state(text(&j["state"])))
        .add("run", text(&j["run"]))
        .add("exit code", text(&j["exit_code"]))
        .add("message", text(&j["message"]))
        .add("created", when(&j["created_at"]))
        .add("started", when(&j["started_at"]))
        .add("finished", when(&j["finished_at"]));
    let deps: Vec<String> = j["depends_on"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let on: Vec<String> = d["on"].as_array().into_iter().flatten().map(text).collect();
            format!("{} (on {})", text(&d["job"]), on.join(", "))
        })
        .collect();
    f.add(
        "depends on",
        if deps.is_empty() {
            "-".into()
        } else {
            deps.join("; ")
        },
    );
    if !j["cloned_from"].is_null() {
        f.add("cloned from", text(&j["cloned_from"]));
    }
    if !j["superseded_by"].is_null() {
        f.add("superseded by", text(&j["superseded_by"]));
    }
    if !j["log_pruned_at"].is_null() {
        f.add(
            "log",
            format!("deleted {} by job log retention", when(&j["log_pruned_at"])),
        );
    }
    f.render(color)
}
