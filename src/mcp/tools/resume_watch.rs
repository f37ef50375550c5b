//! `resume_watch`: let a paused watch fire again.

use super::args::WatchAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, watch_key, watch_reply};
use crate::api::watches::WatchView;
use crate::domain::{Command, WatchPatch};

pub(super) struct Tool;

impl Spec for Tool {
    const NAME: &'static str = "resume_watch";
    const TITLE: &'static str = "Resume a watch";
    const DESCRIPTION: &'static str =
        "Let a paused watch fire again, the first time one interval from now.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = true;
    type Args = WatchAction;
    type Output = WatchView;

    async fn run(_: &Tools, call: &Call<'_>, a: WatchAction) -> Answer {
        let command = watch_key(a.id, a.to_uri, a.project).map(|key| Command::UpdateWatch {
            key,
            if_match: None,
            patch: WatchPatch {
                is_active: Some(true),
                ..WatchPatch::default()
            },
        });
        watch_reply(call, a.idempotency_key, command, "Resumed").await
    }
}
