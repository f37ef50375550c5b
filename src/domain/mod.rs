//! The pure core: commands, events, `decide` and `State::apply`.
//!
//! Nothing here does I/O, reads a clock or draws a random number. Time, new ids and the
//! principal arrive in [`Ctx`]; the resulting events are folded by [`State::apply`], which is
//! the same fold the server runs live and the replay runs offline, so both reach the same state.
//!
//! Persisted types ([`Command`], [`Event`], and everything they hold) are append-only: a new
//! variant goes at the end of its enum, and an existing variant's fields never change. postcard
//! encodes variants by index, so reordering would silently reinterpret old logs.

mod audit;
pub mod bounds;
mod build;
mod cold;
pub mod commit;
mod digest;
mod idempotency;
pub mod pipeline;
mod project;
pub mod refusal;
mod runner;
mod state;
#[cfg(test)]
mod tests;
mod token;
mod watch;

pub use audit::AuditEntry;
pub use build::{
    Build, Cloned, Job, JobDep, JobState, Lease, MAX_LOGS_PRUNED, NewJob, Relink, Trigger,
    derived_state, log_readable,
};
pub use cold::{ColdBuild, ColdOp, ColdTally, HOT_ENDED_BUILDS, History, NoHistory, to_recall};
pub use digest::DIGEST_ALGORITHM;
pub use pipeline::{Accept, Dependency, JobSpec, Pipeline};
pub use project::Project;
pub use refusal::{
    AccessRefused, Aggregate, BuildRefused, InputRefused, ProjectRefused, Refused, RunnerRefused,
    TokenRefused, WatchRefused,
};
pub use runner::leased;
pub use state::{Caller, State};
pub use token::{Token, TokenKind};
pub use watch::{
    LastRun, NewWatch, RunOutcome, Watch, WatchFilter, WatchKey, WatchPage, WatchPatch,
};

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use commit::Hash;

/// Unix time in milliseconds.
pub type Millis = i64;

/// The door a command came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plane {
    System,
    Rest,
    Mcp,
    Cli,
    Scheduler,
    Runner,
    /// The web console (`Reeve-Plane: web` on the REST door). Appended last: postcard
    /// encodes a variant by its index.
    Web,
}

impl Plane {
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::System => "system",
            Plane::Rest => "rest",
            Plane::Mcp => "mcp",
            Plane::Cli => "cli",
            Plane::Scheduler => "scheduler",
            Plane::Runner => "runner",
            Plane::Web => "web",
        }
    }

    pub fn parse(s: &str) -> Option<Plane> {
        Some(match s {
            "system" => Plane::System,
            "rest" => Plane::Rest,
            "mcp" => Plane::Mcp,
            "cli" => Plane::Cli,
            "scheduler" => Plane::Scheduler,
            "runner" => Plane::Runner,
            "web" => Plane::Web,
            _ => return None,
        })
    }
}

/// Who is acting: reeve itself (bootstrap, scheduler) or the holder of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    System,
    Token(Uuid),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::System => f.write_str("system"),
            Principal::Token(id) => write!(f, "token:{id}"),
        }
    }
}

/// Server settings that rules depend on. They are not persisted: they constrain what is
/// accepted from now on, never how an accepted commit is folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub watch_interval_floor_secs: u64,
    /// The most jobs one pipeline may have.
    pub max_jobs: usize,
    /// How long a claimed job's lease lasts without a heartbeat.
    pub lease_secs: u64,
    /// Consecutive failed builds after which a watch pauses itself.
    pub watch_failure_limit: u32,
    /// Agents may only read: every MCP write is refused.
    pub mcp_read_only: bool,
}

impl Rules {
    pub fn lease_ms(&self) -> Millis {
        i64::try_from(self.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2)
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            watch_interval_floor_secs: 1,
            max_jobs: 300,
            lease_secs: 60,
            watch_failure_limit: 5,
            mcp_read_only: false,
        }
    }
}

/// Everything a decision may depend on besides the state and the command.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub at: Millis,
    pub principal: Principal,
    pub plane: Plane,
    /// A fresh UUIDv7, for a command that creates something.
    pub new_id: Uuid,
    pub rules: Rules,
    /// Lease renewals the writer holds in memory (job → when its renewed lease runs out). A
    /// heartbeat decides nothing, so it is not a commit; only a lease sweep reads these.
    pub renewals: HashMap<Uuid, Millis>,
    /// For a prune: jobs kept on disk (their builds left memory) whose output ended before
    /// the cut-off, oldest first, as the writer read them from the store.
    pub cold_prunable: Vec<Uuid>,
}

impl Ctx {
    /// The `n`th new id of this command (`nth_id(0)` is `new_id`). Derived, not drawn, so that
    /// a command creating many things stays a pure function of its context.
    pub fn nth_id(&self, n: u32) -> Uuid {
        let mut bytes = *self.new_id.as_bytes();
        // Bytes 12..16 are random bits of a UUIDv7, clear of its version and variant.
        for (b, x) in bytes[12..16].iter_mut().zip(n.to_be_bytes()) {
            *b ^= x;
        }
        Uuid::from_bytes(bytes)
    }
}

/// What somebody asked for. Persisted in every commit's meta.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    CreateProject {
        id: String,
        name: Option<String>,
    },
    IssueToken {
        /// SHA-256 of the secret; the secret itself never reaches the log.
        #[serde(with = "hex_hash")]
        secret_hash: Hash,
        kind: TokenKind,
        description: String,
        enabled_projects: BTreeMap<String, Option<Millis>>,
        allow_trigger: bool,
        expires_at: Option<Millis>,
    },
    RevokeToken {
        id: Uuid,
    },
    CreateWatch(NewWatch),
    UpdateWatch {
        key: WatchKey,
        if_match: Option<u64>,
        patch: WatchPatch,
    },
    DeleteWatch {
        key: WatchKey,
        if_match: Option<u64>,
    },
    TriggerWatch {
        key: WatchKey,
    },
    /// A request that never became a command (unparseable body, bad header). It is logged so
    /// that every refused mutation is audited, and `decide` always refuses it.
    Malformed {
        op: String,
        admin_only: bool,
        status: u16,
        code: String,
        detail: String,
    },
    UpdateProject {
        id: String,
        name: Option<String>,
        default_pipeline: Option<Option<Pipeline>>,
    },
    TriggerBuild {
        project: String,
        pipeline: Option<Pipeline>,
        env: BTreeMap<String, String>,
    },
    RestartBuild {
        project: String,
        build: Uuid,
        if_match: Option<u64>,
    },
    AbortBuild {
        project: String,
        build: Uuid,
        if_match: Option<u64>,
    },
    RestartJob {
        project: String,
        job: Uuid,
        if_match: Option<u64>,
    },
    RerunJob {
        project: String,
        job: Uuid,
        if_match: Option<u64>,
    },
    AbortJob {
        project: String,
        job: Uuid,
        if_match: Option<u64>,
    },
    ClaimJob {
        labels: Vec<String>,
    },
    Heartbeat {
        job: Uuid,
        lease_id: Uuid,
    },
    FinishJob {
        job: Uuid,
        lease_id: Uuid,
        state: JobState,
        exit_code: Option<i32>,
        message: Option<String>,
    },
    /// Ends running jobs whose runner stopped heartbeating. reeve submits it to itself.
    ExpireLeases,
    /// A scheduled fire of a watch whose `next_run_at` has come. reeve submits it to itself.
    FireWatch {
        id: Uuid,
    },
    /// Pauses a watch whose builds failed too often in a row. reeve submits it to itself.
    PauseFailingWatch {
        id: Uuid,
    },
    /// What a generated pipeline's Create Jobs printed: the pipeline, or why it is not one.
    ExpandJobs {
        job: Uuid,
        lease_id: Uuid,
        pipeline: Option<Pipeline>,
        error: Option<String>,
    },
    /// A watch with a pipeline of its own.
    CreateWatchWithPipeline {
        watch: NewWatch,
        pipeline: Pipeline,
    },
    /// A PATCH that also sets (or, with `None`, clears) the watch's own pipeline.
    UpdateWatchWithPipeline {
        key: WatchKey,
        if_match: Option<u64>,
        patch: WatchPatch,
        pipeline: Option<Pipeline>,
    },
    /// Refusals of one kind from one principal that were answered but not logged one by one
    /// (DESIGN rule 4); logged as one commit when their window closes.
    Coalesced {
        op: String,
        status: u16,
        code: String,
        count: u64,
        first_at: Millis,
        last_at: Millis,
    },
    /// An MCP `tools/call` of a tool that changes something. `command` is decided exactly as
    /// if it had come alone; the wrapper records which tool the agent called, and with what.
    McpWrite {
        tool: String,
        /// The call's arguments as JSON text.
        arguments: String,
        command: Box<Command>,
    },
    /// An MCP `tools/call` that changes nothing: a read tool, or a call that never became a
    /// command (an unknown tool, arguments that do not fit). Logged so that every agent call
    /// is audited; `refusal` is why it was refused, if it was.
    McpCall {
        tool: String,
        arguments: String,
        project: Option<String>,
        target: Option<String>,
        refusal: Option<Refusal>,
    },
    /// Job log retention: deletes the output of jobs that ended before `before` (a Unix time
    /// in ms, the server's clock minus the retention period). reeve submits it to itself;
    /// `decide` picks the jobs, at most [`MAX_LOGS_PRUNED`] per commit.
    PruneJobLogs {
        before: Millis,
    },
    /// A request recorded by its summary instead of itself: one of its fields was over its
    /// limit (`field`, refused before it was decided), or it was refused and is too large to
    /// keep whole (`field` is `command`; `len` and `sha256` are then of its encoding). `len`
    /// and `sha256` (SHA-256) identify the value without storing it. `fingerprint` is the
    /// request's own, so a retry under the same `Idempotency-Key` is still recognised.
    /// `decide` refuses it with the refusal it carries. See [`bounds`].
    Summarized {
        op: String,
        field: String,
        len: u64,
        #[serde(with = "hex_hash")]
        sha256: Hash,
        #[serde(with = "hex_hash")]
        fingerprint: Hash,
        status: u16,
        code: String,
        reason: String,
        refusal_field: Option<String>,
    },
}

/// A refusal decided outside the core (a read's, or a call's that could not be parsed), kept
/// in the command so that `decide` can replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub reason: String,
}

impl Command {
    /// The operation's stable name, as the audit trail shows it.
    pub fn op(&self) -> &str {
        match self {
            Command::CreateProject { .. } => "create_project",
            Command::IssueToken { .. } => "issue_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::CreateWatch(_) => "create_watch",
            Command::UpdateWatch { .. } => "update_watch",
            Command::DeleteWatch { .. } => "delete_watch",
            Command::TriggerWatch { .. } => "trigger_watch",
            Command::Malformed { op, .. } => op,
            Command::UpdateProject { .. } => "update_project",
            Command::TriggerBuild { .. } => "trigger_build",
            Command::RestartBuild { .. } => "restart_build",
            Command::AbortBuild { .. } => "abort_build",
            Command::RestartJob { .. } => "restart_job",
            Command::RerunJob { .. } => "rerun_job",
            Command::AbortJob { .. } => "abort_job",
            Command::ClaimJob { .. } => "claim_job",
            Command::Heartbeat { .. } => "heartbeat",
            Command::FinishJob { .. } => "finish_job",
            Command::ExpireLeases => "expire_leases",
            Command::FireWatch { .. } => "fire_watch",
            Command::ExpandJobs { .. } => "expand_jobs",
            Command::CreateWatchWithPipeline { .. } => "create_watch",
            Command::UpdateWatchWithPipeline { .. } => "update_watch",
            Command::PauseFailingWatch { .. } => "pause_failing_watch",
            Command::Coalesced { op, .. } => op,
            Command::McpWrite { tool, .. } | Command::McpCall { tool, .. } => tool,
            Command::PruneJobLogs { .. } => "prune_job_logs",
            Command::Summarized { op, .. } => op,
        }
    }

    /// The aggregate whose rules decide this command; `None` for the records of requests
    /// that never became a command of one (refusals decided at a door, agent reads).
    pub fn aggregate(&self) -> Option<Aggregate> {
        Some(match self {
            Command::CreateProject { .. } | Command::UpdateProject { .. } => Aggregate::Project,
            Command::IssueToken { .. } | Command::RevokeToken { .. } => Aggregate::Token,
            Command::CreateWatch(_)
            | Command::CreateWatchWithPipeline { .. }
            | Command::UpdateWatch { .. }
            | Command::UpdateWatchWithPipeline { .. }
            | Command::DeleteWatch { .. }
            | Command::TriggerWatch { .. }
            | Command::FireWatch { .. }
            | Command::PauseFailingWatch { .. } => Aggregate::Watch,
            Command::TriggerBuild { .. }
            | Command::RestartBuild { .. }
            | Command::AbortBuild { .. }
            | Command::RestartJob { .. }
            | Command::RerunJob { .. }
            | Command::AbortJob { .. }
            | Command::PruneJobLogs { .. } => Aggregate::Build,
            Command::ClaimJob { .. }
            | Command::Heartbeat { .. }
            | Command::FinishJob { .. }
            | Command::ExpireLeases
            | Command::ExpandJobs { .. } => Aggregate::Runner,
            Command::McpWrite { command, .. } => return command.aggregate(),
            Command::Malformed { .. }
            | Command::Coalesced { .. }
            | Command::McpCall { .. }
            | Command::Summarized { .. } => return None,
        })
    }

    /// The command an MCP write carries; any other command is itself.
    pub fn effective(&self) -> &Command {
        match self {
            Command::McpWrite { command, .. } => command.effective(),
            other => other,
        }
    }

    /// Identifies "the same request" for `Idempotency-Key`. A token's secret hash is left out:
    /// each attempt draws a new secret, yet a retry is still the same request.
    pub fn fingerprint(&self) -> Hash {
        if let Command::Summarized { fingerprint, .. } = self {
            return *fingerprint;
        }
        let mut canonical = self.clone();
        if let Command::IssueToken { secret_hash, .. } = &mut canonical {
            *secret_hash = [0; 32];
        }
        // Encoding plain data into a Vec cannot fail; an empty fingerprint would only make a
        // retry look different, never the same.
        let bytes = postcard::to_stdvec(&canonical).unwrap_or_default();
        Sha256::digest(bytes).into()
    }
}

/// What happened. Persisted in every accepted commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    ProjectCreated {
        id: String,
        name: String,
    },
    TokenIssued {
        id: Uuid,
        #[serde(with = "hex_hash")]
        secret_hash: Hash,
        kind: TokenKind,
        description: String,
        enabled_projects: BTreeMap<String, Option<Millis>>,
        allow_trigger: bool,
        expires_at: Option<Millis>,
    },
    TokenRevoked {
        id: Uuid,
    },
    WatchCreated {
        id: Uuid,
        project: String,
        source: String,
        to_uri: String,
        watch_interval: f64,
        is_active: bool,
        reason: Option<String>,
        instruction: Option<String>,
        next_run_at: Option<Millis>,
    },
    WatchUpdated {
        id: Uuid,
        watch_interval: Option<f64>,
        is_active: Option<bool>,
        reason: Option<Option<String>>,
        instruction: Option<Option<String>>,
        next_run_at: Option<Option<Millis>>,
    },
    WatchDeleted {
        id: Uuid,
        project: String,
        to_uri: String,
    },
    WatchFired {
        id: Uuid,
        manual: bool,
        missed: u32,
    },
    ProjectUpdated {
        id: String,
        name: Option<String>,
        default_pipeline: Option<Option<Pipeline>>,
    },
    BuildCreated {
        id: Uuid,
        project: String,
        number: u64,
        restart_counter: u64,
        pipeline: Pipeline,
        env: BTreeMap<String, String>,
        trigger: Trigger,
        create_jobs_id: Uuid,
        restarted_from: Option<Uuid>,
    },
    /// Create Jobs finished: these are the pipeline's jobs.
    JobsExpanded {
        build_id: Uuid,
        jobs: Vec<NewJob>,
    },
    BuildAborted {
        id: Uuid,
    },
    /// Clones replacing (superseding) the jobs they were cloned from; `relinks` move a child's
    /// dependency from an original to its clone.
    JobsCloned {
        build_id: Uuid,
        clones: Vec<NewJob>,
        relinks: Vec<Relink>,
    },
    JobClaimed {
        id: Uuid,
        lease_id: Uuid,
        lease_expires_at: Millis,
    },
    LeaseRenewed {
        id: Uuid,
        lease_expires_at: Millis,
    },
    JobEnded {
        id: Uuid,
        state: JobState,
        exit_code: Option<i32>,
        message: Option<String>,
    },
    /// A watch fired: by hand, or on schedule (then `next_run_at` moves on and `missed` counts
    /// the fires that downtime swallowed). `build_id` is the build it started, if its project
    /// has a pipeline to run.
    WatchRan {
        id: Uuid,
        manual: bool,
        missed: u32,
        build_id: Option<Uuid>,
        next_run_at: Option<Millis>,
    },
    /// A scheduled fire skipped because the watch's previous build was still running.
    WatchSkipped {
        id: Uuid,
        next_run_at: Millis,
    },
    /// The watch's own pipeline (`None`: run the project's default).
    WatchPipelineSet {
        id: Uuid,
        pipeline: Option<Pipeline>,
    },
    /// Job log retention deleted these jobs' output: they ended before `before`. Their
    /// records stay; reading their log answers 410 from now on.
    JobLogsPruned {
        before: Millis,
        jobs: Vec<Uuid>,
    },
    /// Ended builds that had left memory, brought back as they were because this commit
    /// changes them (an abort, a restart or rerun of one of their jobs). The fold reads only
    /// the log, so the commit carries them; `reeve audit replay` checks each one against the
    /// build that left.
    BuildsRecalled {
        builds: Vec<ColdBuild>,
    },
}

/// Why a command was refused: an HTTP status, a stable code, and a reason that says what to
/// do instead.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub status: u16,
    pub code: String,
    pub reason: String,
    pub field: Option<String>,
}

impl Rejection {
    pub fn new(status: u16, code: &str, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            code: code.to_string(),
            reason: reason.into(),
            field: None,
        }
    }

    pub fn invalid(code: &str, field: &str, reason: impl Into<String>) -> Rejection {
        Rejection {
            field: Some(field.to_string()),
            ..Rejection::new(422, code, reason)
        }
    }
}

/// `If-Match`: refuses with 412 when the client's version of `what` is not the current one.
pub(crate) fn check_if_match(
    what: &'static str,
    if_match: Option<u64>,
    version: u64,
) -> Result<(), InputRefused> {
    match if_match {
        Some(given) if given != version => Err(InputRefused::PreconditionFailed {
            what,
            given,
            current: version,
        }),
        _ => Ok(()),
    }
}

/// What the caller gets back for an accepted command: a snapshot of what it changed, taken
/// from the state right after the commit was applied.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    Project(Project),
    Token(Token),
    TokenRevoked(Token),
    Watch(Watch),
    WatchDeleted {
        id: Uuid,
        to_uri: String,
    },
    WatchTriggered {
        id: Uuid,
        to_uri: String,
    },
    /// A build with all of its jobs.
    Build(Box<Build>, Vec<Job>),
    Aborted(Vec<Uuid>),
    Cloned(Vec<Cloned>),
    Job(Box<Job>),
    Claimed {
        job: Box<Job>,
        build: Box<Build>,
        lease_id: Uuid,
        lease_expires_at: Millis,
    },
    Heartbeat {
        abort: bool,
        lease_expires_at: Millis,
    },
    /// The jobs whose output a prune commit (at `at`) deleted from the projection's view;
    /// the server then deletes their chunks.
    LogsPruned {
        jobs: Vec<Uuid>,
        at: Millis,
    },
    Nothing,
}

/// Decides a command against the state: the events to append, or why not.
pub fn decide(state: &State, cmd: &Command, ctx: &Ctx) -> Result<Vec<Event>, Refused> {
    if let Command::McpWrite { command, .. } = cmd {
        return decide_mcp_write(state, command, ctx);
    }
    let caller = state.authorize(cmd, ctx)?;
    match cmd {
        Command::CreateProject { id, name } => project::create(state, id, name.as_deref()),
        Command::IssueToken {
            secret_hash,
            kind,
            description,
            enabled_projects,
            allow_trigger,
            expires_at,
        } => token::issue(
            state,
            ctx,
            token::Issue {
                secret_hash: *secret_hash,
                kind: *kind,
                description,
                enabled_projects,
                allow_trigger: *allow_trigger,
                expires_at: *expires_at,
            },
        ),
        Command::RevokeToken { id } => token::revoke(state, ctx, *id),
        Command::CreateWatch(new) => watch::create(state, &caller, new, ctx),
        Command::UpdateWatch {
            key,
            if_match,
            patch,
        } => watch::update(state, &caller, key, *if_match, patch, None, ctx),
        Command::CreateWatchWithPipeline {
            watch: new,
            pipeline,
        } => watch::create_with_pipeline(state, &caller, new, pipeline, ctx),
        Command::UpdateWatchWithPipeline {
            key,
            if_match,
            patch,
            pipeline,
        } => watch::update(state, &caller, key, *if_match, patch, Some(pipeline), ctx),
        Command::DeleteWatch { key, if_match } => watch::delete(state, &caller, key, *if_match),
        Command::TriggerWatch { key } => watch::trigger(state, &caller, key, ctx),
        Command::Malformed {
            status,
            code,
            detail,
            ..
        } => Err(Refused::Recorded(Rejection::new(
            *status,
            code,
            detail.clone(),
        ))),
        Command::Coalesced {
            status,
            code,
            count,
            ..
        } => Err(Refused::Recorded(Rejection::new(
            *status,
            code,
            format!("{count} more refusals like this one, coalesced"),
        ))),
        Command::UpdateProject {
            id,
            name,
            default_pipeline,
        } => project::update(state, ctx, id, name.as_deref(), default_pipeline.as_ref()),
        Command::TriggerBuild {
            project,
            pipeline,
            env,
        } => build::trigger(state, &caller, ctx, project, pipeline.as_ref(), env),
        Command::RestartBuild {
            project,
            build,
            if_match,
        } => build::restart_build(state, &caller, ctx, project, *build, *if_match),
        Command::AbortBuild {
            project,
            build,
            if_match,
        } => build::abort_build(state, &caller, project, *build, *if_match),
        Command::RestartJob {
            project,
            job,
            if_match,
        } => build::restart_job(state, &caller, ctx, project, *job, *if_match),
        Command::RerunJob {
            project,
            job,
            if_match,
        } => build::rerun_job(state, &caller, ctx, project, *job, *if_match),
        Command::AbortJob {
            project,
            job,
            if_match,
        } => build::abort_job(state, &caller, project, *job, *if_match),
        Command::ClaimJob { .. } => runner::claim(state, &caller, ctx),
        Command::Heartbeat { job, lease_id } => {
            runner::heartbeat(state, &caller, ctx, *job, *lease_id)
        }
        Command::FinishJob {
            job,
            lease_id,
            state: end,
            exit_code,
            message,
        } => runner::finish(
            state,
            &caller,
            *job,
            *lease_id,
            *end,
            *exit_code,
            message.as_deref(),
        ),
        Command::ExpireLeases => runner::expire_leases(state, ctx),
        Command::FireWatch { id } => watch::fire_scheduled(state, ctx, *id),
        Command::ExpandJobs {
            job,
            lease_id,
            pipeline,
            error,
        } => {
            let output = match (pipeline, error) {
                (Some(p), _) => Ok(p),
                (None, e) => Err(e.as_deref().unwrap_or("the generator printed no pipeline")),
            };
            runner::expand_generated(state, &caller, ctx, *job, *lease_id, output)
        }
        Command::PauseFailingWatch { id } => watch::pause_failing(state, ctx, *id),
        Command::McpWrite { command, .. } => decide_mcp_write(state, command, ctx),
        Command::McpCall { refusal, .. } => match refusal {
            Some(r) => Err(Refused::Recorded(Rejection::new(
                r.status,
                &r.code,
                r.reason.clone(),
            ))),
            None => Ok(Vec::new()),
        },
        Command::PruneJobLogs { before } => build::prune_logs(state, ctx, *before),
        Command::Summarized {
            status,
            code,
            reason,
            refusal_field,
            ..
        } => Err(Refused::Recorded(Rejection {
            status: *status,
            code: code.clone(),
            reason: reason.clone(),
            field: refusal_field.clone(),
        })),
    }
}

/// An agent's change: refused outright on a read-only MCP server, and limited to what the
/// MCP tools can ask for, whatever a forged wrapper might carry.
fn decide_mcp_write(state: &State, command: &Command, ctx: &Ctx) -> Result<Vec<Event>, Refused> {
    if ctx.rules.mcp_read_only {
        return Err(AccessRefused::McpReadOnly.into());
    }
    match command {
        Command::CreateWatch(_)
        | Command::UpdateWatch { .. }
        | Command::DeleteWatch { .. }
        | Command::TriggerWatch { .. }
        | Command::TriggerBuild { .. }
        | Command::RestartBuild { .. }
        | Command::AbortBuild { .. }
        | Command::RestartJob { .. }
        | Command::RerunJob { .. }
        | Command::AbortJob { .. }
        | Command::Malformed { .. } => decide(state, command, ctx),
        other => Err(AccessRefused::NotAnAgentCommand {
            op: other.op().to_string(),
        }
        .into()),
    }
}

/// Hashes serialize as hex in JSON (the audit trail) and as raw bytes in postcard.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(h))
        } else {
            serde::Serialize::serialize(h, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let mut out = [0u8; 32];
            hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}
