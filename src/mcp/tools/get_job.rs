//! `get_job`: one job's state, command, dependencies, exit code and message.

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, json, parse_id};
use crate::api::builds::JobView;

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetJob {
    project: String,
    /// The job's id (a UUID).
    job: String,
}

impl Spec for Tool {
    const NAME: &'static str = "get_job";
    const TITLE: &'static str = "Show a job";
    const DESCRIPTION: &'static str =
        "One job: its state, command, dependencies, exit code and message.";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = GetJob;
    type Output = JobView;

    async fn run(tools: &Tools, call: &Call<'_>, a: GetJob) -> Answer {
        let target = Some(format!("job:{}", a.job));
        tools
            .answer(call, Some(a.project.clone()), target, |state, caller| {
                let id = parse_id(&a.job, "job", "get_build")?;
                let j = JobView::from(&state.find_job(
                    tools.app.control.store(),
                    caller,
                    &a.project,
                    id,
                )?);
                let text = format!(
                    "Job {} ({}) of build {}: {}{}{}",
                    j.name,
                    j.id,
                    j.build_id,
                    j.state.as_str(),
                    j.message
                        .as_deref()
                        .map(|m| format!(" — {m}"))
                        .unwrap_or_default(),
                    j.log_pruned_at
                        .as_deref()
                        .map(|at| format!(" (output deleted by job log retention at {at})"))
                        .unwrap_or_default()
                );
                Ok((json(&j)?, text))
            })
            .await
    }
}
