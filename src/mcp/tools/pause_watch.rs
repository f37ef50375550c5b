//! `pause_watch`: stop a watch from firing; its settings are kept.

use schemars::JsonSchema;
use serde::Deserialize;

use super::call::Call;
use super::{Answer, Kind, Spec, Tools, watch_key, watch_reply};
use crate::api::watches::WatchView;
use crate::domain::{Command, WatchPatch};

pub(super) struct Tool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseWatch {
    /// The watch's id (a UUID). Give this or to_uri.
    id: Option<String>,
    /// The watch's target URI. Give this or id.
    to_uri: Option<String>,
    project: Option<String>,
    /// Why it is paused; kept on the watch.
    reason: Option<String>,
    idempotency_key: Option<String>,
}

impl Spec for Tool {
    const NAME: &'static str = "pause_watch";
    const TITLE: &'static str = "Pause a watch";
    const DESCRIPTION: &'static str =
        "Stop a watch from firing until resume_watch; its settings are kept.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = true;
    type Args = PauseWatch;
    type Output = WatchView;

    async fn run(_: &Tools, call: &Call<'_>, a: PauseWatch) -> Answer {
        let command = watch_key(a.id, a.to_uri, a.project).map(|key| Command::UpdateWatch {
            key,
            if_match: None,
            patch: WatchPatch {
                is_active: Some(false),
                reason: a.reason.map(Some),
                ..WatchPatch::default()
            },
        });
        watch_reply(call, a.idempotency_key, command, "Paused").await
    }
}
