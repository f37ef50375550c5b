//! `get_build`: one build with every job.

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, build_text, json, parse_id};
use crate::api::builds::BuildView;

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetBuild {
    project: String,
    /// The build's id (a UUID).
    build: String,
}

impl Spec for Tool {
    const NAME: &'static str = "get_build";
    const TITLE: &'static str = "Show a build";
    const DESCRIPTION: &'static str = "One build with every job, superseded clones included.";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = GetBuild;
    type Output = BuildView;

    async fn run(tools: &Tools, call: &Call<'_>, a: GetBuild) -> Answer {
        let target = Some(format!("build:{}", a.build));
        tools
            .answer(call, Some(a.project.clone()), target, |state, caller| {
                let id = parse_id(&a.build, "build", "list_builds")?;
                let b = BuildView::of(&state.find_build(
                    tools.app.control.store(),
                    caller,
                    &a.project,
                    id,
                )?);
                let text = build_text("Build", &b);
                Ok((json(&b)?, text))
            })
            .await
    }
}
