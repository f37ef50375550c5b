//! The `reeve` command line. Each subcommand lives in its own file; the client commands
//! (`watch`, `project`, `build`, `job`, `token`) share [`client`]: the connection, the
//! output, the exit codes.

mod audit;
mod build;
pub mod client;
mod cluster;
mod completions;
mod job;
mod project;
mod runner;
mod serve;
mod token;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "reeve",
    version,
    about = "An event-sourced control plane for jobs and watches",
    after_help = "Client commands talk to --server (REEVE_SERVER, default http://127.0.0.1:8080) \
                  with --token (REEVE_TOKEN; for a local server, the admin token file of \
                  ./reeve-data or $REEVE_DATA_DIR). --json prints the server's JSON.\n\
                  Exit status: 0 done, 1 the server refused or could not be reached, 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the control plane: REST API, event log, admin bootstrap.
    Serve(serve::ServeArgs),
    /// Claim jobs from a server and run them.
    Runner(runner::RunnerArgs),
    /// Recurring triggers: list, show, add, rm, pause, resume, update, trigger.
    Watch(watch::WatchArgs),
    /// Projects: ls, create, show.
    Project(project::ProjectArgs),
    /// Builds: ls, show, trigger, restart, abort.
    Build(build::BuildArgs),
    /// Jobs: show, log, restart, rerun, abort.
    Job(job::JobArgs),
    /// Tokens: create, ls, revoke.
    Token(token::TokenArgs),
    /// Print a shell completion script (e.g. `reeve completions bash > /etc/bash_completion.d/reeve`).
    Completions(completions::CompletionsArgs),
    /// Verify, replay and export the log, from a data dir, through a server, or from a
    /// cluster's stream.
    Audit(audit::AuditArgs),
    /// A cluster's leader, nodes and stream: status.
    Cluster(cluster::ClusterArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Runner(args) => runner::run(args),
        Commands::Watch(args) => watch::run(args),
        Commands::Project(args) => project::run(args),
        Commands::Build(args) => build::run(args),
        Commands::Job(args) => job::run(args),
        Commands::Token(args) => token::run(args),
        Commands::Completions(args) => completions::run(args),
        Commands::Audit(args) => audit::run(args),
        Commands::Cluster(args) => cluster::run(args),
    }
}
