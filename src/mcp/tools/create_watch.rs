//! `create_watch`: a new watch in a project.

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, ok, tool_error, unexpected, watch_text};
use crate::api::watches::WatchView;
use crate::domain::{Command, NewWatch, Reply};

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateWatch {
    project: String,
    /// An absolute URI: what the pipeline reads.
    source: String,
    /// An absolute URI: where the pipeline writes; unique within the project.
    to_uri: String,
    /// Minutes between runs: > 0, at most 525600, and at least the server's floor.
    watch_interval: f64,
    /// Why the watch exists, for the people who read it later.
    reason: Option<String>,
    /// Instructions passed to every build the watch starts.
    instruction: Option<String>,
    /// Retrying with the same key returns the first answer instead of acting twice.
    idempotency_key: Option<String>,
}

impl Spec for Tool {
    const NAME: &'static str = "create_watch";
    const TITLE: &'static str = "Create a watch";
    const DESCRIPTION: &'static str = "Re-run the project's pipeline for source into to_uri every watch_interval minutes. \
             to_uri is unique within a project.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = false;
    type Args = CreateWatch;
    type Output = WatchView;

    async fn run(_: &Tools, call: &Call<'_>, a: CreateWatch) -> Answer {
        let command = Command::CreateWatch(NewWatch {
            project: a.project,
            source: a.source,
            to_uri: a.to_uri,
            watch_interval: a.watch_interval,
            reason: a.reason,
            instruction: a.instruction,
            is_active: true,
        });
        match call.write(a.idempotency_key, Ok(command)).await? {
            Ok(Reply::Watch(w)) => {
                let v = WatchView::from(&w);
                ok(&v, watch_text("Created", &v))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }
}
