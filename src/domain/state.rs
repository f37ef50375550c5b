//! The projections folded from the log, and the fold itself.

// Persistent maps: a clone shares every node with the original and each change copies only
// the path to what it touches, so the writer's working copy, the readers' copy and a
// snapshot's copy cost one state between them, not three.
use imbl::{HashMap as PMap, OrdMap, OrdSet, Vector};
use std::sync::Arc;

use uuid::Uuid;

use super::commit::{Commit, GENESIS, Hash, Outcome};
use super::idempotency::Remembered;
use super::refusal::AccessRefused;
use super::{
    Aggregate, AuditEntry, Build, Command, Ctx, Event, Job, Millis, Plane, Principal, Project,
    Rejection, Reply, Token, TokenKind, Watch,
};

/// Everything readable, as of `head_seq`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub head_seq: u64,
    pub head_hash: Hash,
    pub projects: OrdMap<String, Project>,
    pub tokens: OrdMap<Uuid, Token>,
    pub(super) token_by_hash: PMap<Hash, Uuid>,
    /// Keyed by UUIDv7, so iteration order is creation order.
    pub watches: OrdMap<Uuid, Arc<Watch>>,
    pub(super) watches_by_uri: PMap<String, Vec<Uuid>>,
    pub(super) idempotency: PMap<(Uuid, String), Remembered>,
    pub(super) idempotency_expiry: Vector<(Millis, Uuid, String)>,
    /// The time of the last commit folded (0 before the first).
    pub head_at: Millis,
    pub builds: OrdMap<Uuid, Arc<Build>>,
    pub jobs: PMap<Uuid, Arc<Job>>,
    /// (project, number) → every generation of that build.
    pub(super) builds_by_number: PMap<(String, u64), Vec<Uuid>>,
    /// Job → the jobs whose dependencies name it.
    pub(super) children: PMap<Uuid, Vec<Uuid>>,
    /// Queued jobs by queue position.
    pub(super) queue: OrdMap<u64, Uuid>,
    /// Running jobs by lease expiry.
    pub(super) leases: OrdSet<(Millis, Uuid)>,
    /// Jobs that ran and ended and still have their output, by end time: what job log
    /// retention may prune.
    pub(super) log_expiry: OrdSet<(Millis, Uuid)>,
    /// Active watches by next run.
    pub(super) schedule: OrdSet<(Millis, Uuid)>,
    /// Watches whose last builds failed (consecutive_failures > 0).
    pub(super) struggling: OrdSet<Uuid>,
    pub(super) job_order: u64,
    /// Builds ever created: the next one's `order`.
    pub(super) build_count: u64,
    /// Per project, the ended builds still in memory by `order` (see `cold.rs`).
    pub(super) ended: PMap<String, OrdSet<(u64, Uuid)>>,
    /// What has left memory for the store.
    pub(super) cold: super::ColdTally,
    /// How many ended builds per project stay in memory: [`super::HOT_ENDED_BUILDS`], fixed
    /// for the life of a log (see [`State::with_hot_window`]).
    pub(super) hot_window: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            head_seq: 0,
            head_hash: GENESIS,
            projects: OrdMap::new(),
            tokens: OrdMap::new(),
            token_by_hash: PMap::new(),
            watches: OrdMap::new(),
            watches_by_uri: PMap::new(),
            idempotency: PMap::new(),
            idempotency_expiry: Vector::new(),
            head_at: 0,
            builds: OrdMap::new(),
            jobs: PMap::new(),
            builds_by_number: PMap::new(),
            children: PMap::new(),
            queue: OrdMap::new(),
            leases: OrdSet::new(),
            log_expiry: OrdSet::new(),
            schedule: OrdSet::new(),
            struggling: OrdSet::new(),
            job_order: 0,
            build_count: 0,
            ended: PMap::new(),
            cold: super::ColdTally::default(),
            hot_window: super::HOT_ENDED_BUILDS as u64,
        }
    }
}

/// An authenticated principal as of one moment, with what it may see.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub principal: Principal,
    pub token: Option<&'a Token>,
    pub at: Millis,
}

impl Caller<'_> {
    pub fn is_admin(&self) -> bool {
        match self.token {
            None => true,
            Some(t) => t.kind == TokenKind::Admin,
        }
    }

    /// Whether the caller may see anything in `project`. Outside it, things do not exist.
    pub fn sees_project(&self, project: &str) -> bool {
        match self.token {
            None => true,
            Some(t) if t.kind == TokenKind::Admin || t.enabled_projects.is_empty() => true,
            Some(t) => match t.enabled_projects.get(project) {
                Some(None) => true,
                Some(Some(expiry)) => *expiry > self.at,
                None => false,
            },
        }
    }
}

impl State {
    /// The version of the state's snapshot encoding (postcard of this struct and everything in
    /// it). Bump it whenever any of them changes shape: a snapshot of another layout is
    /// skipped and the log folded instead. `tests/fixture_log.rs` fails until it is bumped and
    /// `tests/fixtures/data-v1-builds.snap` rewritten.
    pub const SNAPSHOT_LAYOUT: u32 = 4;

    /// An empty state that keeps `n` ended builds per project in memory instead of
    /// [`super::HOT_ENDED_BUILDS`]. Which builds are in memory shows in the digest, so every
    /// fold of one log must use the same window: reeve itself always uses the default; tests
    /// use a small one to send builds to the store within a few commands, and a huge one for
    /// a fold that keeps everything.
    pub fn with_hot_window(n: usize) -> State {
        State {
            hot_window: n as u64,
            ..State::default()
        }
    }

    /// The token whose secret hashes to `hash`, if any (active or not).
    pub fn token_by_secret_hash(&self, hash: &Hash) -> Option<&Token> {
        self.token_by_hash
            .get(hash)
            .and_then(|id| self.tokens.get(id))
    }

    /// The caller behind `principal` at `at`, or 401 if its token is unknown, revoked or expired.
    pub fn caller(&self, principal: Principal, at: Millis) -> Result<Caller<'_>, AccessRefused> {
        let token = match principal {
            Principal::System => None,
            Principal::Token(id) => {
                let t = self
                    .tokens
                    .get(&id)
                    .filter(|t| t.is_active(at))
                    .ok_or(AccessRefused::Unauthorized)?;
                Some(t)
            }
        };
        Ok(Caller {
            principal,
            token,
            at,
        })
    }

    /// Whether this caller may use this plane at all (reads and writes alike).
    pub fn admit<'a>(&self, caller: &Caller<'a>, plane: Plane) -> Result<(), AccessRefused> {
        let Some(token) = caller.token else {
            return Ok(());
        };
        match (plane, token.kind) {
            (Plane::Rest | Plane::Cli | Plane::Web, TokenKind::Mcp) => {
                Err(AccessRefused::McpTokenNotAllowed)
            }
            (Plane::Rest | Plane::Cli | Plane::Web, TokenKind::Runner) => {
                Err(AccessRefused::RunnerTokenNotAllowed)
            }
            (Plane::Mcp, kind) if kind != TokenKind::Mcp => Err(AccessRefused::McpTokenRequired),
            (Plane::Runner, kind) if kind != TokenKind::Runner => {
                Err(AccessRefused::RunnerTokenRequired)
            }
            _ => Ok(()),
        }
    }

    /// The checks every command passes before its own rules: a live principal, the right
    /// plane, permission to change things, and admin rights where the command needs them.
    pub(super) fn authorize(&self, cmd: &Command, ctx: &Ctx) -> Result<Caller<'_>, AccessRefused> {
        // The writer's summary of refusals it already answered is recorded under the principal
        // that was refused; it is not that principal's request, so it is not judged as one.
        if let Command::Coalesced { .. } = cmd {
            return Ok(Caller {
                principal: ctx.principal,
                token: None,
                at: ctx.at,
            });
        }
        let caller = self.caller(ctx.principal, ctx.at)?;
        self.admit(&caller, ctx.plane)?;
        if let Some(token) = caller.token {
            match cmd {
                Command::ExpireLeases
                | Command::FireWatch { .. }
                | Command::PauseFailingWatch { .. }
                | Command::PruneJobLogs { .. } => {
                    return Err(AccessRefused::SystemOnly);
                }
                // Running jobs is what runner tokens are for; allow_trigger governs changes
                // people and agents make.
                Command::ClaimJob { .. }
                | Command::Heartbeat { .. }
                | Command::FinishJob { .. }
                | Command::ExpandJobs { .. } => {
                    return Ok(caller);
                }
                // An agent's read (or a call that never became a command) changes nothing.
                Command::McpCall { .. } => return Ok(caller),
                // Refused already, for what it was (a field over its limit, or the refusal it
                // carries); who may do what does not change that answer.
                Command::Summarized { .. } => return Ok(caller),
                _ => {}
            }
            if !token.allow_trigger {
                return Err(AccessRefused::TriggerNotAllowed);
            }
            let admin_only = match cmd {
                Command::CreateProject { .. }
                | Command::UpdateProject { .. }
                | Command::IssueToken { .. }
                | Command::RevokeToken { .. } => true,
                Command::Malformed { admin_only, .. } => *admin_only,
                _ => false,
            };
            if admin_only && token.kind != TokenKind::Admin {
                return Err(AccessRefused::AdminRequired);
            }
        }
        Ok(caller)
    }

    /// Watches with this `to_uri`, in any project.
    pub fn watches_with_uri(&self, to_uri: &str) -> impl Iterator<Item = &Watch> {
        self.watches_by_uri
            .get(to_uri)
            .into_iter()
            .flatten()
            .filter_map(|id| self.watches.get(id).map(Arc::as_ref))
    }

    /// Folds one commit into the state. The server runs this live; the replay runs it offline.
    /// Folds one commit into the projections and returns its audit entry, which lives on disk
    /// (the store's audit index), not here: history must not cost memory.
    pub fn apply(&mut self, c: &Commit) -> AuditEntry {
        self.apply_with(c, &mut Vec::new())
    }

    /// [`State::apply`], also handing out what the commit asks of the store that keeps cold
    /// builds (builds leaving memory, coming back, cold output pruned), in order.
    pub fn apply_with(&mut self, c: &Commit, cold: &mut Vec<super::ColdOp>) -> AuditEntry {
        self.fold(c, cold, false).0
    }

    /// [`State::apply_with`], and the answer for the commit, read right after its events
    /// and before builds that ended leave memory (the answer may be about one of them).
    pub fn apply_replying(
        &mut self,
        c: &Commit,
        cold: &mut Vec<super::ColdOp>,
    ) -> (AuditEntry, Result<Reply, Rejection>) {
        let (entry, reply) = self.fold(c, cold, true);
        (entry, reply.unwrap_or(Ok(Reply::Nothing)))
    }

    fn fold(
        &mut self,
        c: &Commit,
        cold: &mut Vec<super::ColdOp>,
        replying: bool,
    ) -> (AuditEntry, Option<Result<Reply, Rejection>>) {
        let body = &c.body;
        let mut touched = std::collections::BTreeSet::new();
        let entry = AuditEntry::of(self, c);
        if body.outcome == Outcome::Accepted {
            for event in &body.events {
                match event {
                    Event::BuildsRecalled { builds } => {
                        for b in builds {
                            if !self.builds.contains_key(&b.build.id) {
                                cold.push(super::ColdOp::Recalled(b.build.id));
                            }
                            touched.insert(b.build.id);
                        }
                    }
                    Event::JobLogsPruned { jobs, .. } => {
                        let gone: Vec<Uuid> = jobs
                            .iter()
                            .filter(|j| !self.jobs.contains_key(*j))
                            .copied()
                            .collect();
                        if !gone.is_empty() {
                            cold.push(super::ColdOp::LogsPruned {
                                jobs: gone,
                                at: body.at,
                            });
                        }
                    }
                    _ => {}
                }
                self.apply_event(body.at, body.meta.principal, event);
                touched.extend(self.build_of_event(event));
            }
        }
        let mut reply = replying.then(|| self.reply_for(c));
        self.remember(c, &mut reply);
        self.settle(touched, cold);
        self.head_seq = c.seq;
        self.head_hash = c.hash;
        self.head_at = body.at;
        (entry, reply)
    }

    fn apply_event(&mut self, at: Millis, by: Principal, event: &Event) {
        use super::{build, project, runner, token, watch};
        match event {
            Event::ProjectCreated { .. } | Event::ProjectUpdated { .. } => {
                project::apply(self, at, by, event)
            }
            Event::TokenIssued { .. } | Event::TokenRevoked { .. } => {
                token::apply(self, at, by, event)
            }
            Event::WatchCreated { .. }
            | Event::WatchUpdated { .. }
            | Event::WatchDeleted { .. }
            | Event::WatchFired { .. }
            | Event::WatchRan { .. }
            | Event::WatchPipelineSet { .. }
            | Event::WatchSkipped { .. } => watch::apply(self, at, by, event),
            Event::BuildCreated { .. }
            | Event::JobsExpanded { .. }
            | Event::BuildAborted { .. }
            | Event::JobsCloned { .. }
            | Event::JobEnded { .. }
            | Event::JobLogsPruned { .. }
            | Event::BuildsRecalled { .. } => build::apply(self, at, by, event),
            Event::JobClaimed { .. } | Event::LeaseRenewed { .. } => {
                runner::apply(self, at, by, event)
            }
        }
    }

    /// The answer for a commit, read from the state right after it was applied.
    pub fn reply_for(&self, c: &Commit) -> Result<Reply, Rejection> {
        if let Outcome::Rejected {
            status,
            code,
            reason,
            field,
        } = &c.body.outcome
        {
            return Err(Rejection {
                status: *status,
                code: code.clone(),
                reason: reason.clone(),
                field: field.clone(),
            });
        }
        let command = c.body.meta.command.effective();
        let events = c.body.events.as_slice();
        let reply = match command.aggregate() {
            Some(Aggregate::Project) => super::project::reply(self, command, events),
            Some(Aggregate::Token) => super::token::reply(self, events),
            Some(Aggregate::Watch) => super::watch::reply(self, command, events),
            Some(Aggregate::Build) => super::build::reply(self, command, events, c.body.at),
            Some(Aggregate::Runner) => super::runner::reply(self, command, events),
            None => None,
        };
        Ok(reply.unwrap_or(Reply::Nothing))
    }
}
