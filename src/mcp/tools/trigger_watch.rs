//! `trigger_watch`: fire a watch once now, paused or not.

use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use super::args::WatchAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, ok, tool_error, unexpected, watch_key};
use crate::domain::{Command, Reply};

pub(super) struct Tool;

#[derive(Serialize, JsonSchema)]
pub(super) struct Triggered {
    /// The watch.
    id: Uuid,
    to_uri: String,
    /// The build the fire started; null when there was no pipeline to run.
    build_id: Option<Uuid>,
}

impl Spec for Tool {
    const NAME: &'static str = "trigger_watch";
    const TITLE: &'static str = "Trigger a watch now";
    const DESCRIPTION: &'static str =
        "Fire a watch once now (a paused one too), starting a build; its schedule is kept.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = false;
    type Args = WatchAction;
    type Output = Triggered;

    async fn run(tools: &Tools, call: &Call<'_>, a: WatchAction) -> Answer {
        let command = watch_key(a.id, a.to_uri, a.project).map(|key| Command::TriggerWatch { key });
        match call.write(a.idempotency_key, command).await? {
            Ok(Reply::WatchTriggered { id, to_uri }) => {
                let build_id = tools
                    .app
                    .control
                    .state()
                    .watches
                    .get(&id)
                    .and_then(|w| w.last_run.as_ref())
                    .and_then(|r| r.build_id);
                let text = match build_id {
                    Some(b) => format!(
                        "triggered watch {to_uri} ({id}): build {b} started; get_build follows it"
                    ),
                    None => format!(
                        "triggered watch {to_uri} ({id}), but no build started: neither the watch nor its project has a pipeline"
                    ),
                };
                ok(
                    &Triggered {
                        id,
                        to_uri,
                        build_id,
                    },
                    text,
                )
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }
}
