//! `rerun_job`: clone just one job and run it again.

use super::args::JobAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, ok, parse_id, tool_error, unexpected};
use crate::api::builds::{JobView, Rerun};
use crate::domain::{Command, Reply};

pub(super) struct Tool;

impl Spec for Tool {
    const NAME: &'static str = "rerun_job";
    const TITLE: &'static str = "Rerun one job";
    const DESCRIPTION: &'static str =
        "Clone just this job and run it again; what follows it is not re-run.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = false;
    type Args = JobAction;
    type Output = Rerun;

    async fn run(_: &Tools, call: &Call<'_>, a: JobAction) -> Answer {
        let command = parse_id(&a.job, "job", "get_build").map(|job| Command::RerunJob {
            project: a.project,
            job,
            if_match: None,
        });
        match call.write(a.idempotency_key, command).await? {
            Ok(Reply::Job(j)) => {
                let job = JobView::from(j.as_ref());
                let text = format!(
                    "rerunning {} as {} ({})",
                    job.name,
                    job.id,
                    job.state.as_str()
                );
                ok(&Rerun { job }, text)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }
}
