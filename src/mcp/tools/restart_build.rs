//! `restart_build`: the build again, as its next generation.

use super::args::BuildAction;
use super::call::Call;
use super::{Answer, Kind, Spec, Tools, build_reply, parse_id};
use crate::api::builds::BuildView;
use crate::domain::Command;

pub(super) struct Tool;

impl Spec for Tool {
    const NAME: &'static str = "restart_build";
    const TITLE: &'static str = "Restart a build";
    const DESCRIPTION: &'static str =
        "Start the build again as a new generation (restart_counter + 1), every job afresh.";
    const KIND: Kind = Kind::Write;
    const IDEMPOTENT: bool = false;
    type Args = BuildAction;
    type Output = BuildView;

    async fn run(_: &Tools, call: &Call<'_>, a: BuildAction) -> Answer {
        let command =
            parse_id(&a.build, "build", "list_builds").map(|build| Command::RestartBuild {
                project: a.project,
                build,
                if_match: None,
            });
        build_reply(call, a.idempotency_key, command, "Restarted as").await
    }
}
