//! The projections folded from the log, and the fold itself.

use std::collections::BTreeMap;

// Persistent maps: a clone shares every node with the original and each change copies only
// the path to what it touches, so the writer's working copy, the readers' copy and a
// snapshot's copy cost one state between them, not three.
use imbl::{HashMap as PMap, OrdMap, OrdSet, Vector};
use std::sync::Arc;

use uuid::Uuid;

use super::commit::{Commit, GENESIS, Hash, Outcome};
use super::refusal::AccessRefused;
use super::{
    AuditEntry, Build, Command, Ctx, Event, Job, JobDep, JobState, Lease, Millis, NewJob, Plane,
    Principal, Project, Rejection, Reply, Token, TokenKind, Watch,
};

/// How long an `Idempotency-Key` is remembered, measured in commit time.
pub const IDEMPOTENCY_TTL_MS: Millis = 24 * 60 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Remembered {
    fingerprint: Hash,
    result: Result<Reply, Rejection>,
}

/// Everything readable, as of `head_seq`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub head_seq: u64,
    pub head_hash: Hash,
    pub projects: OrdMap<String, Project>,
    pub tokens: OrdMap<Uuid, Token>,
    token_by_hash: PMap<Hash, Uuid>,
    /// Keyed by UUIDv7, so iteration order is creation order.
    pub watches: OrdMap<Uuid, Arc<Watch>>,
    watches_by_uri: PMap<String, Vec<Uuid>>,
    idempotency: PMap<(Uuid, String), Remembered>,
    idempotency_expiry: Vector<(Millis, Uuid, String)>,
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
    schedule: OrdSet<(Millis, Uuid)>,
    /// Watches whose last builds failed (consecutive_failures > 0).
    struggling: OrdSet<Uuid>,
    job_order: u64,
    /// Builds ever created: the next one's `order`.
    build_count: u64,
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
            (Plane::Rest | Plane::Cli, TokenKind::Mcp) => Err(AccessRefused::McpTokenNotAllowed),
            (Plane::Rest | Plane::Cli, TokenKind::Runner) => {
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

    /// The first answer given to `key` from `principal`, if the same request was seen before.
    /// A different request under the same key is refused by [`State::idempotency_conflict`].
    pub fn remembered(
        &self,
        principal: Principal,
        key: &str,
        cmd: &Command,
    ) -> Option<Result<Reply, Rejection>> {
        let Principal::Token(t) = principal else {
            return None;
        };
        self.idempotency
            .get(&(t, key.to_string()))
            .filter(|r| r.fingerprint == cmd.fingerprint())
            .map(|r| r.result.clone())
    }

    pub fn idempotency_conflict(
        &self,
        principal: Principal,
        key: &str,
        cmd: &Command,
    ) -> Result<(), AccessRefused> {
        let Principal::Token(t) = principal else {
            return Ok(());
        };
        match self.idempotency.get(&(t, key.to_string())) {
            Some(r) if r.fingerprint != cmd.fingerprint() => {
                Err(AccessRefused::IdempotencyKeyReused)
            }
            _ => Ok(()),
        }
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
    /// (sled's audit index), not here: history must not cost memory.
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
        if let (Principal::Token(t), Some(key)) =
            (body.meta.principal, body.meta.idempotency_key.as_ref())
        {
            let slot = (t, key.clone());
            if !self.idempotency.contains_key(&slot) {
                let result = reply.get_or_insert_with(|| self.reply_for(c)).clone();
                self.idempotency.insert(
                    slot,
                    Remembered {
                        fingerprint: body.meta.command.fingerprint(),
                        result,
                    },
                );
                self.idempotency_expiry.push_back((body.at, t, key.clone()));
            }
        }
        while let Some((at, _, _)) = self.idempotency_expiry.front() {
            if body.at - *at <= IDEMPOTENCY_TTL_MS {
                break;
            }
            if let Some((_, t, key)) = self.idempotency_expiry.pop_front() {
                self.idempotency.remove(&(t, key));
            }
        }
        self.settle(touched, cold);
        self.head_seq = c.seq;
        self.head_hash = c.hash;
        self.head_at = body.at;
        (entry, reply)
    }

    fn apply_event(&mut self, at: Millis, by: Principal, event: &Event) {
        match event {
            Event::ProjectCreated { id, name } => {
                self.projects.insert(
                    id.clone(),
                    Project {
                        id: id.clone(),
                        name: name.clone(),
                        created_at: at,
                        created_by: by,
                        default_pipeline: None,
                        builds: 0,
                    },
                );
            }
            Event::TokenIssued {
                id,
                secret_hash,
                kind,
                description,
                enabled_projects,
                allow_trigger,
                expires_at,
            } => {
                self.token_by_hash.insert(*secret_hash, *id);
                self.tokens.insert(
                    *id,
                    Token {
                        id: *id,
                        secret_hash: *secret_hash,
                        kind: *kind,
                        description: description.clone(),
                        enabled_projects: enabled_projects.clone(),
                        allow_trigger: *allow_trigger,
                        expires_at: *expires_at,
                        created_at: at,
                        created_by: by,
                        revoked_at: None,
                    },
                );
            }
            Event::TokenRevoked { id } => {
                if let Some(t) = self.tokens.get_mut(id) {
                    t.revoked_at = Some(at);
                }
            }
            Event::WatchCreated {
                id,
                project,
                source,
                to_uri,
                watch_interval,
                is_active,
                reason,
                instruction,
                next_run_at,
            } => {
                self.watches_by_uri
                    .entry(to_uri.clone())
                    .or_default()
                    .push(*id);
                self.watches.insert(
                    *id,
                    Arc::new(Watch {
                        id: *id,
                        project: project.clone(),
                        source: source.clone(),
                        to_uri: to_uri.clone(),
                        watch_interval: *watch_interval,
                        is_active: *is_active,
                        reason: reason.clone(),
                        instruction: instruction.clone(),
                        created_at: at,
                        created_by: by,
                        updated_at: at,
                        next_run_at: *next_run_at,
                        last_run: None,
                        consecutive_failures: 0,
                        pipeline: None,
                        fires: 0,
                        skipped_overlap: 0,
                        missed: 0,
                        version: 1,
                    }),
                );
                self.reschedule(*id, None);
            }
            Event::WatchUpdated {
                id,
                watch_interval,
                is_active,
                reason,
                instruction,
                next_run_at,
            } => {
                let before = self.watches.get(id).and_then(|w| w.next_run_at);
                if let Some(w) = self.watches.get_mut(id).map(Arc::make_mut) {
                    // Resuming starts a new streak: the failures that paused it are history.
                    if *is_active == Some(true) && !w.is_active {
                        w.consecutive_failures = 0;
                        self.struggling.remove(id);
                    }
                    if let Some(v) = watch_interval {
                        w.watch_interval = *v;
                    }
                    if let Some(v) = is_active {
                        w.is_active = *v;
                    }
                    if let Some(v) = reason {
                        w.reason = v.clone();
                    }
                    if let Some(v) = instruction {
                        w.instruction = v.clone();
                    }
                    if let Some(v) = next_run_at {
                        w.next_run_at = *v;
                    }
                    w.updated_at = at;
                    w.version += 1;
                }
                self.reschedule(*id, before);
            }
            Event::WatchDeleted { id, to_uri, .. } => {
                if let Some(at) = self.watches.remove(id).and_then(|w| w.next_run_at) {
                    self.schedule.remove(&(at, *id));
                }
                self.struggling.remove(id);
                if let Some(ids) = self.watches_by_uri.get_mut(to_uri) {
                    ids.retain(|x| x != id);
                    if ids.is_empty() {
                        self.watches_by_uri.remove(to_uri);
                    }
                }
            }
            Event::WatchFired { id, manual, missed } => {
                if let Some(w) = self.watches.get_mut(id).map(Arc::make_mut) {
                    w.last_run = Some(super::LastRun {
                        at,
                        build_id: None,
                        outcome: super::RunOutcome::Triggered,
                        finished_at: None,
                        manual: *manual,
                        missed: *missed,
                    });
                    w.fires += 1;
                }
            }
            Event::WatchRan {
                id,
                manual,
                missed,
                build_id,
                next_run_at,
            } => {
                let before = self.watches.get(id).and_then(|w| w.next_run_at);
                let outcome = match build_id.and_then(|b| self.builds.get(&b).map(Arc::as_ref)) {
                    Some(b) => super::RunOutcome::Build(self.build_state(b)),
                    None => super::RunOutcome::Triggered,
                };
                if let Some(w) = self.watches.get_mut(id).map(Arc::make_mut) {
                    w.last_run = Some(super::LastRun {
                        at,
                        build_id: *build_id,
                        outcome,
                        finished_at: None,
                        manual: *manual,
                        missed: *missed,
                    });
                    w.fires += 1;
                    w.missed += u64::from(*missed);
                    if let Some(n) = next_run_at {
                        w.next_run_at = Some(*n);
                    }
                }
                self.reschedule(*id, before);
            }
            Event::WatchPipelineSet { id, pipeline } => {
                if let Some(w) = self.watches.get_mut(id).map(Arc::make_mut) {
                    w.pipeline = pipeline.clone();
                    w.updated_at = at;
                    w.version += 1;
                }
            }
            Event::WatchSkipped { id, next_run_at } => {
                let before = self.watches.get(id).and_then(|w| w.next_run_at);
                if let Some(w) = self.watches.get_mut(id).map(Arc::make_mut) {
                    w.skipped_overlap += 1;
                    w.next_run_at = Some(*next_run_at);
                }
                self.reschedule(*id, before);
            }
            Event::ProjectUpdated {
                id,
                name,
                default_pipeline,
            } => {
                if let Some(p) = self.projects.get_mut(id) {
                    if let Some(n) = name {
                        p.name = n.clone();
                    }
                    if let Some(d) = default_pipeline {
                        p.default_pipeline = d.clone();
                    }
                }
            }
            Event::BuildCreated {
                id,
                project,
                number,
                restart_counter,
                pipeline,
                env,
                trigger,
                create_jobs_id,
                restarted_from,
            } => {
                if let Some(p) = self.projects.get_mut(project) {
                    p.builds = p.builds.max(*number);
                }
                self.build_count += 1;
                self.builds_by_number
                    .entry((project.clone(), *number))
                    .or_default()
                    .push(*id);
                self.builds.insert(
                    *id,
                    Arc::new(Build {
                        id: *id,
                        project: project.clone(),
                        number: *number,
                        restart_counter: *restart_counter,
                        pipeline: pipeline.clone(),
                        env: env.clone(),
                        trigger: *trigger,
                        created_at: at,
                        created_by: by,
                        aborted: false,
                        restarted_from: *restarted_from,
                        jobs: Vec::new(),
                        order: self.build_count + 1,
                        version: 0,
                    }),
                );
                self.add_job(
                    at,
                    *id,
                    &NewJob {
                        id: *create_jobs_id,
                        name: super::pipeline::CREATE_JOBS.to_string(),
                        run: match pipeline {
                            super::Pipeline::Generate(command) => command.clone(),
                            super::Pipeline::Jobs(_) => String::new(),
                        },
                        env: BTreeMap::new(),
                        timeout_seconds: None,
                        depends_on: Vec::new(),
                        cloned_from: None,
                    },
                );
            }
            Event::JobsExpanded { build_id, jobs } => {
                let create_jobs = self
                    .builds
                    .get(build_id)
                    .and_then(|b| b.jobs.first().copied());
                if let Some(cj) = create_jobs {
                    self.end_job(at, cj, JobState::Finished, None, None);
                    if let Some(j) = self.jobs.get_mut(&cj).map(Arc::make_mut) {
                        j.started_at.get_or_insert(at);
                    }
                }
                for job in jobs {
                    self.add_job(at, *build_id, job);
                }
            }
            Event::BuildAborted { id } => {
                if let Some(b) = self.builds.get_mut(id).map(Arc::make_mut) {
                    b.aborted = true;
                    b.version += 1;
                }
            }
            Event::JobsCloned {
                build_id,
                clones,
                relinks,
            } => {
                for clone in clones {
                    self.add_job(at, *build_id, clone);
                    if let Some(orig) = clone
                        .cloned_from
                        .and_then(|o| self.jobs.get_mut(&o).map(Arc::make_mut))
                    {
                        orig.superseded_by = Some(clone.id);
                        orig.version += 1;
                    }
                }
                self.follow_watch_build(at, *build_id);
                for r in relinks {
                    if let Some(child) = self.jobs.get_mut(&r.job).map(Arc::make_mut) {
                        for d in child.depends_on.iter_mut().filter(|d| d.job_id == r.from) {
                            d.job_id = r.to;
                            d.job = r.name.clone();
                        }
                        child.version += 1;
                    }
                    if let Some(kids) = self.children.get_mut(&r.from) {
                        kids.retain(|k| *k != r.job);
                    }
                    self.children.entry(r.to).or_default().push(r.job);
                }
            }
            Event::JobClaimed {
                id,
                lease_id,
                lease_expires_at,
            } => {
                if let Some(j) = self.jobs.get_mut(id).map(Arc::make_mut) {
                    self.queue.remove(&j.order);
                    j.state = JobState::Running;
                    j.started_at = Some(at);
                    j.lease = Some(Lease {
                        id: *lease_id,
                        runner: by,
                        expires_at: *lease_expires_at,
                    });
                    j.version += 1;
                    self.leases.insert((*lease_expires_at, *id));
                    let build = j.build_id;
                    self.touch_build(build);
                }
            }
            Event::LeaseRenewed {
                id,
                lease_expires_at,
            } => {
                if let Some(lease) = self
                    .jobs
                    .get_mut(id)
                    .map(Arc::make_mut)
                    .and_then(|j| j.lease.as_mut())
                {
                    self.leases.remove(&(lease.expires_at, *id));
                    lease.expires_at = *lease_expires_at;
                    self.leases.insert((*lease_expires_at, *id));
                }
            }
            Event::JobEnded {
                id,
                state,
                exit_code,
                message,
            } => self.end_job(at, *id, *state, *exit_code, message.clone()),
            Event::JobLogsPruned { jobs, .. } => {
                for id in jobs {
                    if let Some(j) = self.jobs.get_mut(id).map(Arc::make_mut) {
                        if let Some(ended) = j.finished_at {
                            self.log_expiry.remove(&(ended, *id));
                        }
                        j.log_pruned_at.get_or_insert(at);
                    }
                }
            }
            Event::BuildsRecalled { builds } => {
                for b in builds {
                    self.recall(b);
                }
            }
        }
    }

    /// Active watches whose next run has come by `at`, with that next run.
    pub fn due_watches(&self, at: Millis) -> impl Iterator<Item = (Millis, Uuid)> + '_ {
        self.schedule.range(..=(at, Uuid::max())).copied()
    }

    /// Active watches at or past the failure limit.
    pub fn failing_watches(&self, limit: u32) -> impl Iterator<Item = &Watch> {
        self.struggling
            .iter()
            .filter_map(|id| self.watches.get(id).map(Arc::as_ref))
            .filter(move |w| w.is_active && w.consecutive_failures >= limit)
    }

    /// When the next watch is due, if any is active.
    pub fn next_watch_run(&self) -> Option<Millis> {
        self.schedule.iter().next().map(|(at, _)| *at)
    }

    /// Keeps the schedule index in step with a watch's `next_run_at` and `is_active`.
    fn reschedule(&mut self, id: Uuid, before: Option<Millis>) {
        if let Some(at) = before {
            self.schedule.remove(&(at, id));
        }
        if let Some(w) = self.watches.get(&id).map(Arc::as_ref)
            && w.is_active
            && let Some(at) = w.next_run_at
        {
            self.schedule.insert((at, id));
        }
    }

    /// A watch's last run follows the build it started; its failures in a row are counted
    /// as that build ends (and uncounted if a restart reopens it).
    fn follow_watch_build(&mut self, at: Millis, build_id: Uuid) {
        let Some(build) = self.builds.get(&build_id).map(Arc::as_ref) else {
            return;
        };
        let super::Trigger::Watch(watch_id) = build.trigger else {
            return;
        };
        let now = super::RunOutcome::Build(self.build_state(build));
        let Some(w) = self.watches.get_mut(&watch_id).map(Arc::make_mut) else {
            return;
        };
        let Some(run) = w.last_run.as_mut().filter(|r| r.build_id == Some(build_id)) else {
            return;
        };
        let before = run.outcome;
        if before == now {
            return;
        }
        run.outcome = now;
        run.finished_at = (now != super::RunOutcome::Build(JobState::Running)).then_some(at);
        if before.failed() && !now.failed() {
            w.consecutive_failures = w.consecutive_failures.saturating_sub(1);
        }
        if now.failed() && !before.failed() {
            w.consecutive_failures += 1;
        }
        if now == super::RunOutcome::Build(JobState::Finished) {
            w.consecutive_failures = 0;
        }
        if w.consecutive_failures > 0 {
            self.struggling.insert(watch_id);
        } else {
            self.struggling.remove(&watch_id);
        }
    }

    fn touch_build(&mut self, id: Uuid) {
        if let Some(b) = self.builds.get_mut(&id).map(Arc::make_mut) {
            b.version += 1;
        }
    }

    fn add_job(&mut self, at: Millis, build_id: Uuid, job: &NewJob) {
        self.job_order += 1;
        for d in &job.depends_on {
            self.children.entry(d.job_id).or_default().push(job.id);
        }
        self.queue.insert(self.job_order, job.id);
        self.jobs.insert(
            job.id,
            Arc::new(Job {
                id: job.id,
                build_id,
                name: job.name.clone(),
                run: job.run.clone(),
                env: job.env.clone(),
                timeout_seconds: job.timeout_seconds,
                state: JobState::Queued,
                depends_on: job.depends_on.iter().map(JobDep::clone).collect(),
                superseded_by: None,
                cloned_from: job.cloned_from,
                created_at: at,
                started_at: None,
                finished_at: None,
                exit_code: None,
                message: None,
                lease: None,
                order: self.job_order,
                version: 1,
                log_pruned_at: None,
            }),
        );
        if let Some(b) = self.builds.get_mut(&build_id).map(Arc::make_mut) {
            b.jobs.push(job.id);
            b.version += 1;
        }
    }

    fn end_job(
        &mut self,
        at: Millis,
        id: Uuid,
        state: JobState,
        exit_code: Option<i32>,
        message: Option<String>,
    ) {
        let Some(j) = self.jobs.get_mut(&id).map(Arc::make_mut) else {
            return;
        };
        self.queue.remove(&j.order);
        if let Some(lease) = &j.lease {
            self.leases.remove(&(lease.expires_at, id));
        }
        if let Some(ended) = j.finished_at {
            self.log_expiry.remove(&(ended, id));
        }
        // Only a job a runner held can have output for retention to prune.
        if state.is_done() && j.lease.is_some() && j.log_pruned_at.is_none() {
            self.log_expiry.insert((at, id));
        }
        j.state = state;
        j.finished_at = Some(at);
        j.exit_code = exit_code;
        j.message = message;
        j.version += 1;
        let build = j.build_id;
        self.touch_build(build);
        self.follow_watch_build(at, build);
    }

    /// A build with its jobs, as a reply.
    fn build_reply(&self, id: Uuid) -> Option<Reply> {
        let b = self.builds.get(&id).map(Arc::as_ref)?;
        let jobs = b
            .jobs
            .iter()
            .filter_map(|j| self.jobs.get(j).map(Arc::as_ref))
            .cloned()
            .collect();
        Some(Reply::Build(Box::new(b.clone()), jobs))
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
        let events = &c.body.events;
        let reply = match c.body.meta.command.effective() {
            Command::TriggerBuild { .. } | Command::RestartBuild { .. } => {
                events.iter().find_map(|e| match e {
                    Event::BuildCreated { id, .. } => self.build_reply(*id),
                    _ => None,
                })
            }
            Command::AbortBuild { .. } | Command::AbortJob { .. } => Some(Reply::Aborted(
                events
                    .iter()
                    .filter_map(|e| match e {
                        Event::JobEnded {
                            id,
                            state: JobState::Killed,
                            ..
                        } => Some(*id),
                        _ => None,
                    })
                    .collect(),
            )),
            Command::RestartJob { .. } => events.iter().find_map(|e| match e {
                Event::JobsCloned { clones, .. } => Some(Reply::Cloned(
                    clones
                        .iter()
                        .map(|n| super::Cloned {
                            from: n.cloned_from.unwrap_or(n.id),
                            to: n.id,
                            name: n.name.clone(),
                        })
                        .collect(),
                )),
                _ => None,
            }),
            Command::RerunJob { .. } => events.iter().find_map(|e| match e {
                Event::JobsCloned { clones, .. } => clones
                    .first()
                    .and_then(|n| self.jobs.get(&n.id).map(Arc::as_ref))
                    .map(|j| Reply::Job(Box::new(j.clone()))),
                _ => None,
            }),
            Command::ClaimJob { .. } => events.iter().find_map(|e| match e {
                Event::JobClaimed {
                    id,
                    lease_id,
                    lease_expires_at,
                } => {
                    let job = self.jobs.get(id).map(Arc::as_ref)?;
                    let build = self.builds.get(&job.build_id).map(Arc::as_ref)?;
                    Some(Reply::Claimed {
                        job: Box::new(job.clone()),
                        build: Box::new(build.clone()),
                        lease_id: *lease_id,
                        lease_expires_at: *lease_expires_at,
                    })
                }
                _ => None,
            }),
            Command::Heartbeat { job, .. } => {
                self.jobs
                    .get(job)
                    .map(Arc::as_ref)
                    .map(|j| Reply::Heartbeat {
                        abort: j.state != JobState::Running,
                        lease_expires_at: j.lease.as_ref().map_or(0, |l| l.expires_at),
                    })
            }
            Command::FinishJob { job, .. } | Command::ExpandJobs { job, .. } => self
                .jobs
                .get(job)
                .map(Arc::as_ref)
                .map(|j| Reply::Job(Box::new(j.clone()))),
            Command::UpdateProject { id, .. } => self.projects.get(id).cloned().map(Reply::Project),
            Command::PruneJobLogs { .. } => Some(Reply::LogsPruned {
                jobs: events
                    .iter()
                    .flat_map(|e| match e {
                        Event::JobLogsPruned { jobs, .. } => jobs.as_slice(),
                        _ => &[],
                    })
                    .copied()
                    .collect(),
                at: c.body.at,
            }),
            Command::CreateWatchWithPipeline { .. } | Command::UpdateWatchWithPipeline { .. } => {
                events.iter().find_map(|e| match e {
                    Event::WatchCreated { id, .. }
                    | Event::WatchUpdated { id, .. }
                    | Event::WatchPipelineSet { id, .. } => self
                        .watches
                        .get(id)
                        .map(Arc::as_ref)
                        .cloned()
                        .map(Reply::Watch),
                    _ => None,
                })
            }
            Command::TriggerWatch { .. } => events.iter().find_map(|e| match e {
                Event::WatchRan { id, .. } | Event::WatchFired { id, .. } => self
                    .watches
                    .get(id)
                    .map(Arc::as_ref)
                    .map(|w| Reply::WatchTriggered {
                        id: *id,
                        to_uri: w.to_uri.clone(),
                    }),
                _ => None,
            }),
            _ => match events.first() {
                Some(Event::ProjectCreated { id, .. }) => {
                    self.projects.get(id).cloned().map(Reply::Project)
                }
                Some(Event::TokenIssued { id, .. }) => {
                    self.tokens.get(id).cloned().map(Reply::Token)
                }
                Some(Event::TokenRevoked { id }) => {
                    self.tokens.get(id).cloned().map(Reply::TokenRevoked)
                }
                Some(Event::WatchCreated { id, .. } | Event::WatchUpdated { id, .. }) => self
                    .watches
                    .get(id)
                    .map(Arc::as_ref)
                    .cloned()
                    .map(Reply::Watch),
                Some(Event::WatchDeleted { id, to_uri, .. }) => Some(Reply::WatchDeleted {
                    id: *id,
                    to_uri: to_uri.clone(),
                }),
                Some(Event::WatchFired { id, .. }) => {
                    self.watches
                        .get(id)
                        .map(Arc::as_ref)
                        .map(|w| Reply::WatchTriggered {
                            id: *id,
                            to_uri: w.to_uri.clone(),
                        })
                }
                _ => None,
            },
        };
        Ok(reply.unwrap_or(Reply::Nothing))
    }
}
