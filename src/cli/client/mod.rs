//! What every client command (`watch`, `project`, `build`, `job`, `token`) shares: the
//! connection ([`conn`]), the output ([`output`]), and how an outcome becomes an exit code:
//! 0 done, 1 the server refused or could not be reached, 2 the command line was wrong.

pub mod conn;
pub mod output;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use uuid::Uuid;

pub use conn::{Answer, Conn, ConnArgs, Idempotency};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line cannot work as given (exit 2); nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The server answered with a problem (exit 1).
    #[error("{detail} (code: {code})")]
    Refused {
        status: u16,
        code: String,
        detail: String,
        /// The answer as received, printed on stdout with `--json`.
        body: String,
    },
    /// Anything else that stopped the command: unreachable server, unreadable file (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Runs a client command to its exit code. `json` says whether a refusal's problem body also
/// goes to stdout, so a script reading `--json` output sees the `code` it can switch on.
pub fn run<F>(json: bool, command: F) -> ExitCode
where
    F: Future<Output = Result<(), CliError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(json, &e),
    }
}

fn report(json: bool, e: &CliError) -> ExitCode {
    if let (true, CliError::Refused { body, .. }) = (json, e)
        && !body.trim().is_empty()
    {
        output::emit(body);
    }
    eprintln!("error: {e}");
    match e {
        CliError::Usage(_) => ExitCode::from(2),
        CliError::Refused { .. } | CliError::Failed(_) => ExitCode::FAILURE,
    }
}

/// An id the server expects to be a UUID, checked here so that a typo costs no request
/// (and, for a mutation, no refused commit in the audit trail).
pub fn uuid_arg(raw: &str, what: &str, hint: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        CliError::Usage(format!(
            "{raw:?} is not a {what} id (a UUID such as 0190c3d2-7f5e-7b1a-9c4e-2f6a8b0d1e23); {hint}"
        ))
    })
}

/// Reads a pipeline from a JSON file (`-` for stdin): `{"jobs": [...]}` or
/// `{"generate": "<command>"}`. The server checks what is inside.
pub fn read_pipeline(path: &Path) -> Result<Value, CliError> {
    let shown = path.display();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Usage(format!("could not read the pipeline from stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!("could not read the pipeline file {shown}: {e}"))
        })?
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "the pipeline file {shown} is not valid JSON ({e}); it holds {{\"jobs\": [...]}} or {{\"generate\": \"<command>\"}}"
        ))
    })?;
    if !value.is_object() {
        return Err(CliError::Usage(format!(
            "the pipeline file {shown} must hold a JSON object: {{\"jobs\": [...]}} or {{\"generate\": \"<command>\"}}"
        )));
    }
    Ok(value)
}

/// `KEY=VALUE` pairs (`--env`) as a JSON object.
pub fn env_pairs(pairs: &[String]) -> Result<serde_json::Map<String, Value>, CliError> {
    let mut env = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--env {p:?} must be KEY=VALUE, e.g. --env TARGET=prod"
            ))
        })?;
        if k.is_empty() {
            return Err(CliError::Usage(format!("--env {p:?} has an empty name")));
        }
        env.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(env)
}

/// Prints an answer: as received with `--json`, else as `human` renders it.
pub fn show(conn: &Conn, answer: &Answer, human: impl FnOnce(&Value, bool) -> String) {
    if conn.json {
        output::emit(&answer.text);
    } else {
        output::emit(&human(&answer.body, output::color_enabled()));
    }
}
