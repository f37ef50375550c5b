//! `list_projects`: the projects a token can see.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, json};
use crate::api::projects::ProjectView;

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NoArgs {}

#[derive(Serialize, JsonSchema)]
pub(super) struct ProjectList {
    projects: Vec<ProjectView>,
}

impl Spec for Tool {
    const NAME: &'static str = "list_projects";
    const TITLE: &'static str = "List projects";
    const DESCRIPTION: &'static str = "The projects this token can see.";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = NoArgs;
    type Output = ProjectList;

    async fn run(tools: &Tools, call: &Call<'_>, NoArgs {}: NoArgs) -> Answer {
        tools
            .answer(call, None, None, |state, caller| {
                let projects: Vec<ProjectView> = state
                    .projects
                    .values()
                    .filter(|p| caller.sees_project(&p.id))
                    .map(ProjectView::from)
                    .collect();
                let text = if projects.is_empty() {
                    "no projects".to_string()
                } else {
                    projects
                        .iter()
                        .map(|p| format!("- {}  {}", p.id, p.name))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                Ok((json(&ProjectList { projects })?, text))
            })
            .await
    }
}
