//! `abort_job`: kill one job if it has not ended.

use super::args::JobAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, aborted_reply, parse_id};
use crate::api::builds::Aborted;
use crate::domain::Command;

pub(super) struct Tool;

impl Spec for Tool {
    const NAME: &'static str = "abort_job";
    const TITLE: &'static str = "Abort a job";
    const DESCRIPTION: &'static str =
        "Kill the job if it has not ended (jobs that wait on it are skipped).";
    const KIND: Kind = Kind::Write;
    const DESTRUCTIVE: bool = true;
    const IDEMPOTENT: bool = true;
    type Args = JobAction;
    type Output = Aborted;

    async fn run(_: &Tools, call: &Call<'_>, a: JobAction) -> Answer {
        let command = parse_id(&a.job, "job", "get_build").map(|job| Command::AbortJob {
            project: a.project,
            job,
            if_match: None,
        });
        aborted_reply(call, a.idempotency_key, command).await
    }
}
