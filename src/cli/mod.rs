//! The `reeve` command line. Each subcommand lives in its own file.

mod audit;
mod runner;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "reeve",
    version,
    about = "An event-sourced control plane for jobs and watches"
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
    /// Verify, replay and export the log, from a data dir or through a server.
    Audit(audit::AuditArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Runner(args) => runner::run(args),
        Commands::Audit(args) => audit::run(args),
    }
}
