//! `get_watch`: one watch, by id or by `to_uri`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, json, watch_key, watch_text};
use crate::api::watches::WatchView;

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetWatch {
    /// The watch's id (a UUID). Give this or to_uri.
    id: Option<String>,
    /// The watch's target URI. Give this or id.
    to_uri: Option<String>,
    /// The watch's project, when to_uri is used in several.
    project: Option<String>,
}

impl Spec for Tool {
    const NAME: &'static str = "get_watch";
    const TITLE: &'static str = "Show a watch";
    const DESCRIPTION: &'static str = "One watch, named by its id or by its to_uri (add project when a to_uri is used in several projects).";
    const KIND: Kind = Kind::Read;
    const IDEMPOTENT: bool = true;
    type Args = GetWatch;
    type Output = WatchView;

    async fn run(tools: &Tools, call: &Call<'_>, a: GetWatch) -> Answer {
        let target =
            a.id.clone()
                .map(|i| format!("watch:{i}"))
                .or_else(|| a.to_uri.clone().map(|u| format!("to_uri:{u}")));
        tools
            .answer(call, a.project.clone(), target, |state, caller| {
                let key = watch_key(a.id, a.to_uri, a.project)?;
                let w = WatchView::from(state.resolve_watch(caller, &key)?);
                let text = watch_text("The", &w);
                Ok((json(&w)?, text))
            })
            .await
    }
}
