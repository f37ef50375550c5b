//! `trigger_build`: start a build of a project's default pipeline or of one given.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, build_reply, rejection};
use crate::api::builds::{BuildView, PipelineBody};
use crate::domain::{Command, Pipeline};

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerBuild {
    project: String,
    /// The pipeline to run; the project's default when absent.
    pipeline: Option<PipelineBody>,
    /// Added to every job's environment.
    env: Option<BTreeMap<String, String>>,
    idempotency_key: Option<String>,
}

impl Spec for Tool {
    const NAME: &'static str = "trigger_build";
    const TITLE: &'static str = "Trigger a build";
    const DESCRIPTION: &'static str =
        "Start a build of a project: its default pipeline, or the pipeline given.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = false;
    type Args = TriggerBuild;
    type Output = BuildView;

    async fn run(_: &Tools, call: &Call<'_>, a: TriggerBuild) -> Answer {
        let command = a
            .pipeline
            .map(Pipeline::try_from)
            .transpose()
            .map_err(rejection)
            .map(|pipeline| Command::TriggerBuild {
                project: a.project,
                pipeline,
                env: a.env.unwrap_or_default(),
            });
        build_reply(call, a.idempotency_key, command, "Triggered").await
    }
}
