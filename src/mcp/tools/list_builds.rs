//! `list_builds`: a project's builds, newest first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, count, json};
use crate::api::builds::BuildView;
use crate::domain::Rejection;

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListBuilds {
    project: String,
    /// At most this many, newest first (1-200, default 20).
    limit: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct BuildList {
    builds: Vec<BuildView>,
}

impl Spec for Tool {
    const NAME: &'static str = "list_builds";
    const TITLE: &'static str = "List builds";
    const DESCRIPTION: &'static str =
        "A project's builds, newest first (without their jobs; get_build has them).";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = ListBuilds;
    type Output = BuildList;

    async fn run(tools: &Tools, call: &Call<'_>, a: ListBuilds) -> Answer {
        let limit = a.limit.unwrap_or(20);
        let project = a.project.clone();
        tools
            .answer(call, Some(a.project.clone()), None, |state, caller| {
                if !(1..=200).contains(&limit) {
                    return Err(Rejection::invalid(
                        "invalid_limit",
                        "limit",
                        "limit must be between 1 and 200",
                    ));
                }
                let (builds, _) =
                    state.builds_page(tools.app.control.store(), caller, &project, None, limit)?;
                let builds: Vec<BuildView> = builds
                    .into_iter()
                    .map(|(b, s)| BuildView::new(s, &b, None))
                    .collect();
                let mut text = format!("{} of {project}", count(builds.len(), "build", "builds"));
                for b in &builds {
                    text.push_str(&format!(
                        "\n- #{}.{}  {}  {}  {}",
                        b.number,
                        b.restart_counter,
                        b.state.as_str(),
                        b.id,
                        b.created_at
                    ));
                }
                Ok((json(&BuildList { builds })?, text))
            })
            .await
    }
}
