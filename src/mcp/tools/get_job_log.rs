//! `get_job_log`: the last lines of a job's output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, finish, json, parse_id};
use crate::api::now_ms;
use crate::domain::{JobState, Rejection};

/// The most log lines `get_job_log` returns, and the most bytes.
const MAX_LOG_LINES: usize = 1000;
const DEFAULT_LOG_LINES: usize = 100;
const MAX_LOG_BYTES: usize = 64 * 1024;

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetJobLog {
    project: String,
    /// The job's id (a UUID).
    job: String,
    /// How many lines from the end (default 100, at most 1000).
    tail_lines: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct JobLog {
    job_id: Uuid,
    state: JobState,
    /// The last lines of the log.
    text: String,
    lines: usize,
    /// Whether older output was left out.
    truncated: bool,
}

impl Spec for Tool {
    const NAME: &'static str = "get_job_log";
    const TITLE: &'static str = "Read a job's log";
    const DESCRIPTION: &'static str = "The last lines of a job's output (tail_lines, default 100, at most 1000; at most 64 KiB). \
             Output of jobs that ended longer ago than the server's job log retention is deleted: \
             then this is refused with log_pruned.";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = GetJobLog;
    type Output = JobLog;

    async fn run(tools: &Tools, call: &Call<'_>, a: GetJobLog) -> Answer {
        let target = Some(format!("job:{}", a.job));
        let n = a.tail_lines.unwrap_or(DEFAULT_LOG_LINES);
        // The log is read outside the state lock: it may be megabytes.
        let checked = {
            let state = tools.app.control.state();
            let caller = state.caller(call.principal, now_ms());
            caller.map_err(Rejection::from).and_then(|caller| {
                if !(1..=MAX_LOG_LINES).contains(&n) {
                    return Err(Rejection::invalid(
                        "invalid_tail_lines",
                        "tail_lines",
                        format!("tail_lines must be between 1 and {MAX_LOG_LINES}"),
                    ));
                }
                let id = parse_id(&a.job, "job", "get_build")?;
                let job = state.find_job(tools.app.control.store(), &caller, &a.project, id)?;
                crate::domain::log_readable(&job)?;
                Ok((id, job.state))
            })
        };
        let outcome = checked.and_then(|(id, job_state)| {
            let log = tools.app.control.store().read_log(id, 0).map_err(|e| {
                Rejection::new(500, "internal", format!("the log could not be read: {e}"))
            })?;
            let (text, lines, truncated) = last_lines(&log, n);
            let shown = if text.is_empty() {
                format!("job {id} ({}) has no output yet", job_state.as_str())
            } else {
                text.clone()
            };
            let out = JobLog {
                job_id: id,
                state: job_state,
                text,
                lines,
                truncated,
            };
            Ok((json(&out)?, shown))
        });
        finish(call, Some(a.project), target, outcome).await
    }
}

fn last_lines(log: &[u8], n: usize) -> (String, usize, bool) {
    let text = String::from_utf8_lossy(log);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(n);
    let mut picked = all[start..].join("\n");
    let mut truncated = start > 0;
    if picked.len() > MAX_LOG_BYTES {
        let mut cut = picked.len() - MAX_LOG_BYTES;
        while !picked.is_char_boundary(cut) {
            cut += 1;
        }
        picked = picked[cut..].to_string();
        truncated = true;
    }
    let lines = picked.lines().count();
    (picked, lines, truncated)
}
