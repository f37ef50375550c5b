//! The audit projection: one entry per commit, indexed for filtering. The full command and
//! events stay in the log; an entry points at them by `seq`.

use super::commit::{Commit, Outcome};
use super::{Aggregate, Command, Millis, Plane, Principal, State};

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
    /// What the command acted on is each aggregate's to say (`audit_target` in its file).
    pub(super) fn of(state: &State, c: &Commit) -> AuditEntry {
        let body = &c.body;
        let accepted = body.outcome == Outcome::Accepted;
        // An MCP write is audited under its tool's name but acts like the command it carries.
        let command = body.meta.command.effective();
        let events = body.events.as_slice();
        let (target, project) = match command.aggregate() {
            Some(Aggregate::Project) => super::project::audit_target(command),
            Some(Aggregate::Token) => super::token::audit_target(command, events),
            Some(Aggregate::Watch) => super::watch::audit_target(state, command, events),
            Some(Aggregate::Build) => super::build::audit_target(state, command, events),
            Some(Aggregate::Runner) => super::runner::audit_target(state, command, events),
            None => match command {
                Command::McpCall {
                    project, target, ..
                } => (target.clone(), project.clone()),
                _ => (None, None),
            },
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
