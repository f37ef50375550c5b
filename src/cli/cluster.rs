//! `reeve cluster status`: who leads, every node and how far it has applied the log, and the
//! stream's replicas (admin token).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::client::output::{Fields, Table, text};
use super::client::{self, CliError, Conn, ConnArgs};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The leader, each node's applied seq, and the stream's replicas.
    Status,
}

pub fn run(args: ClusterArgs) -> ExitCode {
    client::run(args.conn.json, async move {
        let conn = Conn::new(&args.conn)?;
        match args.command {
            ClusterCommand::Status => status(&conn).await,
        }
    })
}

async fn status(conn: &Conn) -> Result<(), CliError> {
    let answer = conn
        .call(conn.request(Method::GET, &["cluster"], &[]))
        .await?;
    client::show(conn, &answer, render);
    Ok(())
}

fn render(body: &Value, color: bool) -> String {
    let mut f = Fields::new();
    f.add("mode", text(&body["mode"]))
        .add("answered by", text(&body["node"]))
        .add(
            "leader",
            match body["leader"]["name"].as_str() {
                Some(name) => format!("{name} ({})", text(&body["leader"]["addr"])),
                None => "none".into(),
            },
        );
    let stream = &body["stream"];
    if !stream.is_null() {
        let peers: Vec<String> = stream["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let state = if p["current"].as_bool() == Some(true) {
                    "current"
                } else {
                    "behind"
                };
                format!("{} {state}", text(&p["name"]))
            })
            .collect();
        f.add(
            "stream",
            format!(
                "at seq {}, {} replicas (led by {}): {}",
                text(&stream["last_seq"]),
                text(&stream["replicas"]),
                text(&stream["leader"]),
                peers.join(", ")
            ),
        );
    }
    let mut t = Table::new(&["NODE", "ADDRESS", "APPLIED SEQ", "LEADS"]);
    for n in body["nodes"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&n["name"]).into(),
            text(&n["addr"]).into(),
            text(&n["applied_seq"]).into(),
            (if n["leads"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            })
            .into(),
        ]);
    }
    format!("{}\n{}", f.render(color), t.render(color))
}
