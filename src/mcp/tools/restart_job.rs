//! `restart_job`: clone a job and everything downstream of it, and run the clones.

use super::args::JobAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, count, ok, parse_id, tool_error, unexpected};
use crate::api::builds::{ClonedView, Restarted};
use crate::domain::{Command, Reply};

pub(super) struct Tool;

impl Spec for Tool {
    const NAME: &'static str = "restart_job";
    const TITLE: &'static str = "Restart a job and what follows it";
    const DESCRIPTION: &'static str =
        "Clone the job and everything downstream of it (foo becomes foo.1) and run the clones.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = false;
    type Args = JobAction;
    type Output = Restarted;

    async fn run(_: &Tools, call: &Call<'_>, a: JobAction) -> Answer {
        let command = parse_id(&a.job, "job", "get_build").map(|job| Command::RestartJob {
            project: a.project,
            job,
            if_match: None,
        });
        match call.write(a.idempotency_key, command).await? {
            Ok(Reply::Cloned(clones)) => {
                let jobs: Vec<ClonedView> = clones
                    .into_iter()
                    .map(|c| ClonedView {
                        from: c.from,
                        to: c.to,
                        name: c.name,
                    })
                    .collect();
                let mut text = format!("restarted {}:", count(jobs.len(), "job", "jobs"));
                for j in &jobs {
                    text.push_str(&format!("\n- {}  {}", j.name, j.to));
                }
                ok(&Restarted { jobs }, text)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }
}
