//! `reeve completions <shell>`: a completion script for the shell, on stdout.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> ExitCode {
    let mut command = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "reeve", &mut script);
    super::client::output::emit(&String::from_utf8_lossy(&script));
    ExitCode::SUCCESS
}
