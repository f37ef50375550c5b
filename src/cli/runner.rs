//! `reeve runner`: claims jobs from a server and runs them until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::runner::{self, RunnerConfig};

#[derive(Args, Debug)]
pub struct RunnerArgs {
    /// The reeve server to take jobs from.
    #[arg(long, env = "REEVE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A token of kind runner.
    #[arg(long, env = "REEVE_TOKEN")]
    token: String,
    /// How many jobs to run at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// What this runner offers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Where each job gets its fresh work directory.
    #[arg(long, default_value = "./reeve-work")]
    work_dir: PathBuf,
    /// Seconds between SIGTERM and SIGKILL when a job is aborted or times out.
    #[arg(long, default_value_t = 10)]
    kill_grace_secs: u64,
}

pub fn run(args: RunnerArgs) -> ExitCode {
    super::serve::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reeve: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let cfg = RunnerConfig {
            server: args.server,
            token: args.token,
            concurrency: args.concurrency.max(1),
            labels: args.labels,
            work_dir: args.work_dir,
            kill_grace: Duration::from_secs(args.kill_grace_secs),
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(runner::run(cfg, stop));
        super::serve::wait_for_signal().await;
        let _ = stop_tx.send(true);
        match running.await {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("reeve: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("reeve: the runner failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
