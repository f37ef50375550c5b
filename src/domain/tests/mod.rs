//! Given/when/then tests of each aggregate's rules over `decide`: pure, no server, no disk.
//! `given` folds commands (each must be accepted) or bare events; `when` decides one more
//! command; `then` compares the events it would append, or the typed refusal, whole.

mod build;
mod project;
mod runner;
mod token;
mod watch;

use std::collections::BTreeMap;

use uuid::Uuid;

use super::commit::{Commit, CommitBody, Meta, Outcome};
use super::{
    Command, Ctx, Event, JobSpec, Millis, NewWatch, Pipeline, Plane, Principal, Refused, Rules,
    State, TokenKind, decide,
};

/// Commit time of the first given; each step moves the clock one second.
pub const T0: Millis = 1_790_000_000_000;

/// The id the `n`th decided command (0-based, givens and `when` alike) creates.
pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + (n << 40))
}

pub struct Given {
    state: State,
    steps: u128,
    at: Millis,
    rules: Rules,
}

pub fn given() -> Given {
    Given {
        state: State::default(),
        steps: 0,
        at: T0,
        rules: Rules::default(),
    }
}

impl Given {
    pub fn rules(mut self, rules: Rules) -> Given {
        self.rules = rules;
        self
    }

    /// Moves the clock on before the next step.
    pub fn later(mut self, ms: Millis) -> Given {
        self.at += ms;
        self
    }

    /// The time the next step is decided at.
    pub fn now(&self) -> Millis {
        self.at
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    fn ctx(&self, by: Principal, plane: Plane) -> Ctx {
        Ctx {
            at: self.at,
            principal: by,
            plane,
            new_id: id(self.steps),
            rules: self.rules,
            renewals: Default::default(),
            cold_prunable: Vec::new(),
        }
    }

    fn fold(&mut self, by: Principal, plane: Plane, command: Command, events: Vec<Event>) {
        let commit = Commit {
            seq: self.state.head_seq + 1,
            prev_hash: self.state.head_hash,
            hash: [(self.steps % 251) as u8 + 1; 32],
            body: CommitBody {
                at: self.at,
                meta: Meta {
                    principal: by,
                    plane,
                    request_id: self.steps.to_string(),
                    idempotency_key: None,
                    command,
                },
                outcome: Outcome::Accepted,
                events,
            },
        };
        self.state.apply(&commit);
        self.steps += 1;
        self.at += 1000;
    }

    /// A command reeve accepted, as `by` on `plane`.
    pub fn did(mut self, by: Principal, plane: Plane, command: Command) -> Given {
        let ctx = self.ctx(by, plane);
        let events = decide(&self.state, &command, &ctx)
            .unwrap_or_else(|r| panic!("given {command:?} was refused: {r:?}"));
        self.fold(by, plane, command, events);
        self
    }

    /// A command reeve itself (or an admin) accepted.
    pub fn system(self, command: Command) -> Given {
        self.did(Principal::System, Plane::System, command)
    }

    /// Events as they stand in the log, whatever command wrote them.
    pub fn events(mut self, events: Vec<Event>) -> Given {
        self.fold(
            Principal::System,
            Plane::System,
            Command::ExpireLeases,
            events,
        );
        self
    }

    pub fn when(self, by: Principal, plane: Plane, command: Command) -> Then {
        let ctx = self.ctx(by, plane);
        Then {
            decided: decide(&self.state, &command, &ctx),
        }
    }

    pub fn when_system(self, command: Command) -> Then {
        self.when(Principal::System, Plane::System, command)
    }
}

pub struct Then {
    decided: Result<Vec<Event>, Refused>,
}

impl Then {
    #[track_caller]
    pub fn then_events(self, expected: Vec<Event>) {
        match self.decided {
            Ok(events) => assert_eq!(events, expected),
            Err(r) => panic!("expected events, the command was refused: {r:?}"),
        }
    }

    #[track_caller]
    pub fn then_refused(self, expected: impl Into<Refused>) {
        let expected = expected.into();
        match self.decided {
            Ok(events) => panic!("expected {expected:?}, the command was accepted: {events:?}"),
            Err(r) => assert_eq!(r, expected),
        }
    }

    /// The events, for a test that checks only part of them.
    #[track_caller]
    pub fn accepted(self) -> Vec<Event> {
        self.decided
            .unwrap_or_else(|r| panic!("expected events, the command was refused: {r:?}"))
    }
}

// Commands the tests build often.

pub fn create_project(id: &str) -> Command {
    Command::CreateProject {
        id: id.to_string(),
        name: None,
    }
}

/// A token; `seed` makes its secret (and so the token) distinct from the others'.
pub fn issue_token(seed: u8, kind: TokenKind, allow_trigger: bool, projects: &[&str]) -> Command {
    Command::IssueToken {
        secret_hash: [seed; 32],
        kind,
        description: format!("{kind:?}"),
        enabled_projects: projects.iter().map(|p| (p.to_string(), None)).collect(),
        allow_trigger,
        expires_at: None,
    }
}

pub fn new_watch(project: &str, to_uri: &str) -> NewWatch {
    NewWatch {
        project: project.to_string(),
        source: "https://example.com/src".to_string(),
        to_uri: to_uri.to_string(),
        watch_interval: 5.0,
        reason: None,
        instruction: None,
        is_active: true,
    }
}

pub fn job(name: &str, after: &[&str]) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        run: format!("echo {name}"),
        depends_on: after
            .iter()
            .map(|d| super::Dependency {
                job: d.to_string(),
                on: vec![super::Accept::Finished],
            })
            .collect(),
        env: BTreeMap::new(),
        timeout_seconds: None,
    }
}

pub fn trigger_build(project: &str, jobs: Vec<JobSpec>) -> Command {
    Command::TriggerBuild {
        project: project.to_string(),
        pipeline: Some(Pipeline::Jobs(jobs)),
        env: BTreeMap::new(),
    }
}

/// The id of the newest job named `name`.
pub fn job_id(g: &Given, name: &str) -> Uuid {
    g.state()
        .jobs
        .values()
        .filter(|j| j.name == name)
        .max_by_key(|j| j.order)
        .map(|j| j.id)
        .unwrap_or_else(|| panic!("no job {name}"))
}
