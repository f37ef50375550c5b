//! `abort_build`: kill every job of a build that has not ended.

use super::args::BuildAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, aborted_reply, parse_id};
use crate::api::builds::Aborted;
use crate::domain::Command;

pub(super) struct Tool;

impl Spec for Tool {
    const NAME: &'static str = "abort_build";
    const TITLE: &'static str = "Abort a build";
    const DESCRIPTION: &'static str =
        "Kill every job of the build that has not ended; nothing more of it will run.";
    const KIND: Kind = Kind::Write;
    const DESTRUCTIVE: bool = true;
    const IDEMPOTENT: bool = true;
    type Args = BuildAction;
    type Output = Aborted;

    async fn run(_: &Tools, call: &Call<'_>, a: BuildAction) -> Answer {
        let command = parse_id(&a.build, "build", "list_builds").map(|build| Command::AbortBuild {
            project: a.project,
            build,
            if_match: None,
        });
        aborted_reply(call, a.idempotency_key, command).await
    }
}
