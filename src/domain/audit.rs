//! The audit projection: one entry per commit, indexed for filtering. The full command and
//! events stay in the log; an entry points at them by `seq`.

use super::commit::{Commit, Outcome};
use super::{Command, Event, Millis, Plane, Principal, State};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: Millis,
    pub plane: Plane,
    pub principal: Principal,
    pub op: String,
    /// What the command acted on, e.g. `watch:<id>`, `project:<id>`, `token:<id>`.
    pub target: Option<String>,
    /// The project it acted in, when there is one (for filtering).
    pub project: Option<String>,
    pub accepted: bool,
}

impl AuditEntry {
    /// Built before the commit's events are applied, so a deleted watch can still be named.
    pub(super) fn of(state: &State, c: &Commit) -> AuditEntry {
        let body = &c.body;
        let accepted = body.outcome == Outcome::Accepted;
        let watch_project = |id: &uuid::Uuid| {
            state
                .watches
                .get(id)
                .map(Arc::as_ref)
                .map(|w| w.project.clone())
        };
        let job_project = |id: &uuid::Uuid| {
            state
                .jobs
                .get(id)
                .and_then(|j| state.builds.get(&j.build_id).map(Arc::as_ref))
                .map(|b| b.project.clone())
        };
        // A fire that starts a build leads with the build's events; the watch's comes last.
        let watch_event = body.events.iter().rev().find(|e| {
            matches!(
                e,
                Event::WatchRan { .. } | Event::WatchUpdated { .. } | Event::WatchDeleted { .. }
            )
        });
        // An MCP write is audited under its tool's name but acts like the command it carries.
        let command = body.meta.command.effective();
        let first = match command {
            Command::TriggerWatch { .. } => watch_event,
            _ => body.events.first(),
        };
        let (target, project) = match (command, first) {
            (Command::CreateProject { id, .. }, _) => {
                (Some(format!("project:{id}")), Some(id.clone()))
            }
            (Command::IssueToken { .. }, Some(Event::TokenIssued { id, .. })) => {
                (Some(format!("token:{id}")), None)
            }
            (Command::IssueToken { .. }, _) => (None, None),
            (Command::RevokeToken { id }, _) => (Some(format!("token:{id}")), None),
            (
                Command::CreateWatch(new) | Command::CreateWatchWithPipeline { watch: new, .. },
                Some(Event::WatchCreated { id, .. }),
            ) => (Some(format!("watch:{id}")), Some(new.project.clone())),
            (
                Command::CreateWatch(new) | Command::CreateWatchWithPipeline { watch: new, .. },
                _,
            ) => (
                Some(format!("to_uri:{}", new.to_uri)),
                Some(new.project.clone()),
            ),
            (
                Command::UpdateWatch { .. }
                | Command::UpdateWatchWithPipeline { .. }
                | Command::DeleteWatch { .. }
                | Command::TriggerWatch { .. },
                Some(
                    Event::WatchUpdated { id, .. }
                    | Event::WatchDeleted { id, .. }
                    | Event::WatchFired { id, .. }
                    | Event::WatchRan { id, .. }
                    | Event::WatchPipelineSet { id, .. },
                ),
            ) => (Some(format!("watch:{id}")), watch_project(id)),
            (
                Command::UpdateWatch { key, .. }
                | Command::UpdateWatchWithPipeline { key, .. }
                | Command::DeleteWatch { key, .. }
                | Command::TriggerWatch { key },
                _,
            ) => (
                Some(key.describe()),
                key.project
                    .clone()
                    .or_else(|| key.id.as_ref().and_then(watch_project)),
            ),
            (
                Command::Malformed { .. } | Command::Coalesced { .. } | Command::Summarized { .. },
                _,
            ) => (None, None),
            (
                Command::McpCall {
                    project, target, ..
                },
                _,
            ) => (target.clone(), project.clone()),
            // `effective` has unwrapped it.
            (Command::McpWrite { .. }, _) => (None, None),
            (Command::UpdateProject { id, .. }, _) => {
                (Some(format!("project:{id}")), Some(id.clone()))
            }
            (Command::TriggerBuild { project, .. }, _) => (
                body.events.iter().find_map(|e| match e {
                    Event::BuildCreated { id, .. } => Some(format!("build:{id}")),
                    _ => None,
                }),
                Some(project.clone()),
            ),
            (
                Command::RestartBuild { project, build, .. }
                | Command::AbortBuild { project, build, .. },
                _,
            ) => (Some(format!("build:{build}")), Some(project.clone())),
            (
                Command::RestartJob { project, job, .. }
                | Command::RerunJob { project, job, .. }
                | Command::AbortJob { project, job, .. },
                _,
            ) => (Some(format!("job:{job}")), Some(project.clone())),
            (Command::ClaimJob { .. }, Some(Event::JobClaimed { id, .. })) => {
                (Some(format!("job:{id}")), job_project(id))
            }
            (Command::ClaimJob { .. }, _) => (None, None),
            (
                Command::Heartbeat { job, .. }
                | Command::FinishJob { job, .. }
                | Command::ExpandJobs { job, .. },
                _,
            ) => (Some(format!("job:{job}")), job_project(job)),
            (Command::ExpireLeases, _) => (None, None),
            (Command::FireWatch { id } | Command::PauseFailingWatch { id }, _) => {
                (Some(format!("watch:{id}")), watch_project(id))
            }
            // A prune names every job in its event; the entry names the job when there is
            // one, and the project when all of them are in the same one.
            (Command::PruneJobLogs { .. }, Some(Event::JobLogsPruned { jobs, .. })) => {
                let mut projects = jobs.iter().map(job_project);
                let first = projects.next().flatten();
                let project = if projects.all(|p| p == first) {
                    first
                } else {
                    None
                };
                match jobs.as_slice() {
                    [one] => (Some(format!("job:{one}")), project),
                    _ => (None, project),
                }
            }
            (Command::PruneJobLogs { .. }, _) => (None, None),
        };
        AuditEntry {
            seq: c.seq,
            at: body.at,
            plane: body.meta.plane,
            principal: body.meta.principal,
            op: body.meta.command.op().to_string(),
            target,
            project,
            accepted,
        }
    }
}
