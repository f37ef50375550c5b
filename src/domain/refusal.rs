//! Why a command is refused, as types: one enum per aggregate, plus the refusals every
//! command can meet (access, input checks). A variant carries what the refusal is about; its
//! HTTP status, its stable `code` and the body field it blames come from the variant, and its
//! text says what is wrong in the domain's words. The text never names a route or a tool:
//! each door (REST, MCP, the CLI) adds the next step for its own users.
//!
//! What is persisted is not these types but their wire form, [`Rejection`] (status, code,
//! text, field), inside the commit's outcome: a refusal reads the same in an old log whatever
//! becomes of the variants here.

use uuid::Uuid;

use super::Rejection;

/// Declares a refusal enum with its table of (status, code) and the field each variant
/// blames, so that the contract documents can list every code an aggregate can answer with,
/// derived from the variants themselves rather than written out beside them.
macro_rules! refusals {
    (@field) => { None };
    (@field $f:expr) => { Some($f) };
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident $({ $($f:ident : $t:ty),* $(,)? })? = ($status:literal, $code:literal $(, $field:expr)?)
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, thiserror::Error)]
        pub enum $name {
            $( $(#[$vmeta])* $variant $({ $($f: $t),* })? ),*
        }

        impl $name {
            /// Every (status, code) a refusal of this kind can carry, in declaration order.
            pub const CODES: &'static [(u16, &'static str)] = &[$(($status, $code)),*];

            pub fn status(&self) -> u16 {
                match self { $(Self::$variant { .. } => $status),* }
            }

            pub fn code(&self) -> &'static str {
                match self { $(Self::$variant { .. } => $code),* }
            }

            /// The body field (or argument) the refusal is about, if it is about one.
            #[allow(unused_variables)]
            pub fn field(&self) -> Option<&'static str> {
                match self { $(Self::$variant { $($($f),*)? } => refusals!(@field $($field)?)),* }
            }
        }

        impl From<$name> for Rejection {
            fn from(r: $name) -> Rejection {
                Refused::from(r).into()
            }
        }
    };
}

refusals! {
    /// Who may do what: the token, its plane, its rights.
    pub enum AccessRefused {
        #[error("this token is unknown, revoked or expired; ask an admin for a new one")]
        Unauthorized = (401, "unauthorized"),
        #[error("MCP tokens work only on the MCP endpoints; use an api token here")]
        McpTokenNotAllowed = (403, "mcp_token_not_allowed"),
        #[error("runner tokens work only on the runner endpoints; use an api token here")]
        RunnerTokenNotAllowed = (403, "runner_token_not_allowed"),
        #[error("this is an MCP endpoint; use a token of kind mcp")]
        McpTokenRequired = (403, "mcp_token_required"),
        #[error("this is a runner endpoint; use a token of kind runner")]
        RunnerTokenRequired = (403, "runner_token_required"),
        #[error("only reeve itself submits this command")]
        SystemOnly = (403, "system_only"),
        #[error("this token is read-only (allow_trigger is false); use a token that may change things")]
        TriggerNotAllowed = (403, "trigger_not_allowed"),
        #[error("only an admin token may do this")]
        AdminRequired = (403, "admin_required"),
        #[error("this reeve server lets agents only read (--mcp-read-only); ask an operator to make the change")]
        McpReadOnly = (403, "mcp_read_only"),
        #[error("{op} cannot be asked for by an agent")]
        NotAnAgentCommand { op: String } = (400, "not_an_agent_command"),
        #[error("this Idempotency-Key was already used for a different request; use a new key for a new request")]
        IdempotencyKeyReused = (422, "idempotency_key_reused"),
    }
}

refusals! {
    /// What any command's input can fail: a stale version, a field over its limit, a
    /// pipeline that is not one, history that cannot be read back.
    pub enum InputRefused {
        #[error("If-Match names version {given} but the {what} is at version {current}; read it again and retry")]
        PreconditionFailed { what: &'static str, given: u64, current: u64 } = (412, "precondition_failed"),
        #[error("{reason}")]
        InvalidPipeline { reason: String } = (422, "invalid_pipeline", "pipeline"),
        #[error("the pipeline has {jobs} jobs; this server allows at most {max}")]
        TooManyJobs { jobs: usize, max: usize } = (422, "too_many_jobs", "pipeline"),
        /// A field over its limit (see `bounds`): `field` as the caller named it.
        #[error("{reason}")]
        FieldTooLong { field: &'static str, reason: String } = (422, "field_too_long", *field),
        #[error("{what} is kept on disk and could not be read: {why}")]
        HistoryUnreadable { what: String, why: String } = (500, "history_unreadable"),
    }
}

refusals! {
    pub enum ProjectRefused {
        #[error("project id {id:?} must be 1-63 characters of a-z, 0-9 and '-', e.g. \"web-team\"")]
        InvalidId { id: String } = (422, "invalid_project_id", "id"),
        #[error("name must be at most {max} characters")]
        NameTooLong { max: usize } = (422, "invalid_name", "name"),
        #[error("name must be 1 to {max} characters")]
        NameEmptyOrTooLong { max: usize } = (422, "invalid_name", "name"),
        #[error("project {id:?} already exists; pick another id")]
        Exists { id: String } = (409, "project_exists"),
        #[error("no project {id:?}")]
        NotFound { id: String } = (404, "project_not_found"),
        #[error("the body changes nothing; give name or default_pipeline")]
        NothingToChange = (422, "nothing_to_change"),
    }
}

refusals! {
    pub enum TokenRefused {
        #[error("description must be at most {max} characters")]
        DescriptionTooLong { max: usize } = (422, "invalid_description", "description"),
        #[error("expires_at is in the past; give a future RFC 3339 time or leave it out")]
        ExpiresInPast = (422, "invalid_expires_at", "expires_at"),
        #[error("project {project:?} does not exist; create it first")]
        UnknownProject { project: String } = (422, "unknown_project", "enabled_projects"),
        #[error("the expiry for project {project:?} is in the past; give a future RFC 3339 time or null")]
        ProjectExpiryInPast { project: String } = (422, "invalid_expires_at", "enabled_projects"),
        #[error("a token with this secret already exists")]
        Exists = (409, "token_exists"),
        #[error("no token {id}")]
        NotFound { id: Uuid } = (404, "token_not_found"),
        #[error("token {id} is already revoked")]
        AlreadyRevoked { id: Uuid } = (409, "token_already_revoked"),
        #[error("this is the last active admin token; issue another admin token before revoking it")]
        LastAdmin = (409, "last_admin_token"),
    }
}

refusals! {
    pub enum WatchRefused {
        #[error("watch_interval must be a finite number of minutes")]
        IntervalNotFinite = (422, "invalid_interval", "watch_interval"),
        #[error("watch_interval must be > 0 minutes (got {minutes}); to stop a watch, pause it")]
        IntervalNotPositive { minutes: f64 } = (422, "invalid_interval", "watch_interval"),
        #[error("watch_interval must be at most {max} minutes (one year), got {minutes}")]
        IntervalTooLong { minutes: f64, max: f64 } = (422, "invalid_interval", "watch_interval"),
        #[error("watch_interval must be at least {} minutes on this server (its floor is {floor_secs} s), got {minutes}", *floor_secs as f64 / 60.0)]
        IntervalBelowFloor { minutes: f64, floor_secs: u64 } = (422, "invalid_interval", "watch_interval"),
        #[error("source must be at most {max} bytes")]
        SourceTooLong { max: usize } = (422, "invalid_source", "source"),
        #[error("source must be an absolute URI that starts with its scheme and holds no control characters, such as https://example.com/repo or viking://res/docs; got {value:?}")]
        SourceNotUri { value: String } = (422, "invalid_source", "source"),
        #[error("to_uri must be at most {max} bytes")]
        ToUriTooLong { max: usize } = (422, "invalid_to_uri", "to_uri"),
        #[error("to_uri must be an absolute URI that starts with its scheme and holds no control characters, such as https://example.com/repo or viking://res/docs; got {value:?}")]
        ToUriNotUri { value: String } = (422, "invalid_to_uri", "to_uri"),
        #[error("reason must be at most {max} characters")]
        ReasonTooLong { max: usize } = (422, "invalid_reason", "reason"),
        #[error("instruction must be at most {max} characters")]
        InstructionTooLong { max: usize } = (422, "invalid_instruction", "instruction"),
        /// `what` names the key the caller gave (an id, or a `to_uri`).
        #[error("{what}")]
        NotFound { what: String } = (404, "watch_not_found"),
        #[error("watch {id} no longer exists")]
        Gone { id: Uuid } = (404, "watch_not_found"),
        #[error("to_uri {uri:?} names watches in several of your projects; name the project too")]
        AmbiguousToUri { uri: String } = (400, "ambiguous_to_uri"),
        #[error("the id names watch {by_id} but to_uri names watch {by_uri}; give one key, or two that agree")]
        KeysConflict { by_id: Uuid, by_uri: Uuid } = (400, "watch_keys_conflict"),
        #[error("name the watch by its id or by its to_uri")]
        KeyRequired = (400, "watch_key_required"),
        #[error("no project {project:?}")]
        ProjectNotFound { project: String } = (404, "project_not_found"),
        #[error("watch {watch} in project {project:?} already targets {to_uri:?}; update that watch instead")]
        ToUriTaken { watch: Uuid, project: String, to_uri: String } = (409, "to_uri_taken"),
        #[error("the body changes nothing; give any of watch_interval, is_active, reason, instruction, pipeline")]
        NothingToChange = (422, "nothing_to_change"),
        #[error("watch {id} is paused; it fires again once resumed")]
        Paused { id: Uuid } = (409, "watch_paused"),
        #[error("watch {id} is not due until {due}")]
        NotDue { id: Uuid, due: i64 } = (409, "watch_not_due"),
        #[error("watch {id} is {} with {failures} consecutive failures (limit {limit})", if *active { "active" } else { "paused" })]
        NotFailing { id: Uuid, active: bool, failures: u32, limit: u32 } = (409, "watch_not_failing"),
    }
}

refusals! {
    /// Builds and their jobs, as people and agents act on them.
    pub enum BuildRefused {
        #[error("no project {project:?}")]
        ProjectNotFound { project: String } = (404, "project_not_found"),
        #[error("no build {id} in this project")]
        BuildNotFound { id: Uuid } = (404, "build_not_found"),
        #[error("no job {id} in this project")]
        JobNotFound { id: Uuid } = (404, "job_not_found"),
        #[error("the output of job {id} was deleted at {pruned_at} by this server's job log retention (the job ended {ended}, longer ago than the retention period); the job's record and its audit trail remain")]
        LogPruned { id: Uuid, pruned_at: String, ended: String } = (410, "log_pruned"),
        #[error("give a pipeline, or set a default pipeline for project {project:?}")]
        NoPipeline { project: String } = (422, "no_pipeline", "pipeline"),
        #[error("Create Jobs expands the pipeline; restart the build instead")]
        CreateJobsNotRestartable = (409, "create_jobs_not_restartable"),
        #[error("job {id} was already restarted as {by}; restart that one instead")]
        JobSuperseded { id: Uuid, by: Uuid } = (409, "job_superseded"),
        #[error("the build was aborted, so nothing in it runs again; restart the build instead")]
        BuildAborted = (409, "build_aborted"),
        #[error("job {id} is {state}; only finished, failed, errored or killed jobs can be restarted (abort it first)")]
        JobNotTerminal { id: Uuid, state: &'static str } = (409, "job_not_terminal"),
        #[error("descendant {name} ({id}) is {state}; wait for it or abort it first")]
        DescendantRunning { id: Uuid, name: String, state: &'static str } = (409, "descendant_running"),
        #[error("child {name} ({id}) is {state}; wait for it or abort it before rerunning its parent")]
        ChildRunning { id: Uuid, name: String, state: &'static str } = (409, "descendant_running"),
        #[error("the cut-off {before} is after the commit time {at}: only output of jobs that already ended can be pruned")]
        InvalidCutoff { before: String, at: String } = (422, "invalid_cutoff"),
    }
}

refusals! {
    /// A runner's calls about the job it holds.
    pub enum RunnerRefused {
        #[error("no job is ready to run; poll again")]
        NothingToClaim = (204, "nothing_to_claim"),
        #[error("lease {lease_id} does not hold job {id} (it expired, or the job ended); drop this job")]
        StaleLease { lease_id: Uuid, id: Uuid } = (409, "stale_lease"),
        #[error("a runner finishes a job as finished, failure, error or killed")]
        InvalidState = (422, "invalid_state", "state"),
        #[error("only the Create Jobs job of a generated pipeline uploads a pipeline")]
        NotCreateJobs = (409, "not_create_jobs"),
        #[error("a generator must print {{\"jobs\": [...]}}, not another generator")]
        NestedGenerator = (422, "invalid_pipeline", "pipeline"),
        #[error("{why}")]
        GeneratorOutput { why: String } = (422, "invalid_pipeline", "pipeline"),
    }
}

/// Why `decide` (or a read the domain answers) said no.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Access(#[from] AccessRefused),
    #[error(transparent)]
    Input(#[from] InputRefused),
    #[error(transparent)]
    Project(#[from] ProjectRefused),
    #[error(transparent)]
    Token(#[from] TokenRefused),
    #[error(transparent)]
    Watch(#[from] WatchRefused),
    #[error(transparent)]
    Build(#[from] BuildRefused),
    #[error(transparent)]
    Runner(#[from] RunnerRefused),
    /// A refusal a door decided (a body that did not parse, a field over its limit, a read's)
    /// and the command carries, so that replaying the command refuses it the same way.
    #[error("{}", .0.reason)]
    Recorded(Rejection),
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::Access(r) => r.status(),
            Refused::Input(r) => r.status(),
            Refused::Project(r) => r.status(),
            Refused::Token(r) => r.status(),
            Refused::Watch(r) => r.status(),
            Refused::Build(r) => r.status(),
            Refused::Runner(r) => r.status(),
            Refused::Recorded(r) => r.status,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Refused::Access(r) => r.code(),
            Refused::Input(r) => r.code(),
            Refused::Project(r) => r.code(),
            Refused::Token(r) => r.code(),
            Refused::Watch(r) => r.code(),
            Refused::Build(r) => r.code(),
            Refused::Runner(r) => r.code(),
            Refused::Recorded(r) => &r.code,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Refused::Access(r) => r.field(),
            Refused::Input(r) => r.field(),
            Refused::Project(r) => r.field(),
            Refused::Token(r) => r.field(),
            Refused::Watch(r) => r.field(),
            Refused::Build(r) => r.field(),
            Refused::Runner(r) => r.field(),
            Refused::Recorded(r) => r.field.as_deref(),
        }
    }
}

impl From<Refused> for Rejection {
    fn from(r: Refused) -> Rejection {
        match r {
            Refused::Recorded(r) => r,
            r => Rejection {
                status: r.status(),
                code: r.code().to_string(),
                field: r.field().map(str::to_string),
                reason: r.to_string(),
            },
        }
    }
}

/// The aggregate a command acts on: which refusals beyond access and input it can meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Project,
    Token,
    Watch,
    Build,
    Runner,
}

impl Aggregate {
    /// The (status, code) pairs a command on this aggregate can be refused with: its own,
    /// plus those of access and input that every command can meet. Sorted, without repeats.
    pub fn refusal_codes(self) -> Vec<(u16, &'static str)> {
        let own: &[&[(u16, &'static str)]] = match self {
            Aggregate::Project => &[ProjectRefused::CODES],
            Aggregate::Token => &[TokenRefused::CODES],
            Aggregate::Watch => &[WatchRefused::CODES],
            Aggregate::Build => &[BuildRefused::CODES],
            // A runner's job is found (or not) the way a build's is.
            Aggregate::Runner => &[RunnerRefused::CODES, BuildRefused::CODES],
        };
        let mut codes: Vec<(u16, &'static str)> = [AccessRefused::CODES, InputRefused::CODES]
            .iter()
            .chain(own)
            .flat_map(|c| c.iter().copied())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }
}
