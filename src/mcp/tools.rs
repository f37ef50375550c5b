//! The tools. Each one parses its arguments, builds the command a REST handler would (or reads
//! the projection a REST handler would), and is recorded as one commit with plane `mcp`:
//! writes as [`Command::McpWrite`] around the command, everything else as
//! [`Command::McpCall`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Identity, InvalidParams};
use crate::api::builds::{Aborted, BuildView, ClonedView, JobView, PipelineBody, Rerun, Restarted};
use crate::api::projects::ProjectView;
use crate::api::watches::WatchView;
use crate::api::{AppState, Problem, now_ms};
use crate::control::Submission;
use crate::domain::{
    Caller, Command, JobState, NewWatch, Pipeline, Plane, Principal, Refusal, Rejection, Reply,
    State, Watch, WatchKey, WatchPatch, bounds,
};
use crate::limits::Bucket;

/// The most log lines `get_job_log` returns, and the most bytes.
const MAX_LOG_LINES: usize = 1000;
const DEFAULT_LOG_LINES: usize = 100;
const MAX_LOG_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub(super) struct Tools {
    app: AppState,
    read_only: bool,
    /// Every tool as `tools/list` shows it, with its kind.
    tools: Arc<Vec<(Tool, Kind)>>,
}

/// What kind of tool it is, which decides visibility, the rate-limit bucket and the record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

struct Spec {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    kind: Kind,
    /// Only for writes: whether it destroys something, and whether repeating it is harmless.
    destructive: bool,
    idempotent: bool,
    input: fn() -> Arc<JsonObject>,
    output: fn() -> Arc<JsonObject>,
}

fn spec<I: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    kind: Kind,
    destructive: bool,
    idempotent: bool,
) -> Spec {
    Spec {
        name,
        title,
        description,
        kind,
        destructive,
        idempotent,
        input: input_schema::<I>,
        output: output_schema::<O>,
    }
}

/// What a tool accepts: the deserialize contract, JSON Schema 2020-12 as MCP asks.
fn input_schema<T: JsonSchema>() -> Arc<JsonObject> {
    schema_object::<T>(SchemaSettings::draft2020_12())
}

/// What a tool answers: the serialize contract, without the wrapper type's own title and
/// description, which are noise to a model.
fn output_schema<T: JsonSchema>() -> Arc<JsonObject> {
    let mut schema = schema_object::<T>(SchemaSettings::draft2020_12().for_serialize());
    let obj = Arc::make_mut(&mut schema);
    obj.remove("title");
    obj.remove("description");
    schema
}

fn schema_object<T: JsonSchema>(settings: SchemaSettings) -> Arc<JsonObject> {
    let schema = settings
        .with_transform(StandardFormats)
        .into_generator()
        .into_root_schema_for::<T>();
    match schema.to_value() {
        Value::Object(obj) => Arc::new(obj),
        // `true`/`false` schemas are never generated for a struct; an empty object says the
        // same as `true`.
        _ => Arc::new(JsonObject::new()),
    }
}

/// The `format`s JSON Schema 2020-12 defines. schemars adds others for Rust's numbers
/// (`uint32`, `uint64`, `int64`, `double`, …); clients warn on them or reject them, so they
/// go, and an unsigned integer keeps its meaning as a `minimum` (and a `maximum` where one
/// fits a JSON number exactly).
const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

#[derive(Clone)]
struct StandardFormats;

impl Transform for StandardFormats {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        transform_subschemas(self, schema);
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        let Some(format) = obj
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        if STANDARD_FORMATS.contains(&format.as_str()) {
            return;
        }
        obj.remove("format");
        let bounds: Option<(i64, Option<i64>)> = match format.as_str() {
            "uint8" => Some((0, Some(u8::MAX.into()))),
            "uint16" => Some((0, Some(u16::MAX.into()))),
            "uint32" => Some((0, Some(u32::MAX.into()))),
            "uint64" | "uint" | "uint128" => Some((0, None)),
            "int8" => Some((i8::MIN.into(), Some(i8::MAX.into()))),
            "int16" => Some((i16::MIN.into(), Some(i16::MAX.into()))),
            "int32" => Some((i32::MIN.into(), Some(i32::MAX.into()))),
            _ => None,
        };
        if let Some((min, max)) = bounds {
            obj.entry("minimum").or_insert(Value::from(min));
            if let Some(max) = max {
                obj.entry("maximum").or_insert(Value::from(max));
            }
        }
    }
}

fn specs() -> Vec<Spec> {
    use Kind::{Read, Write};
    vec![
        spec::<NoArgs, ProjectList>(
            "list_projects",
            "List projects",
            "The projects this token can see.",
            Read,
            false,
            true,
        ),
        spec::<ListWatches, WatchList>(
            "list_watches",
            "List watches",
            "Watches this token can see, oldest first; filter by project and to active ones.",
            Read,
            false,
            true,
        ),
        spec::<GetWatch, WatchView>(
            "get_watch",
            "Show a watch",
            "One watch, named by its id or by its to_uri (add project when a to_uri is used in several projects).",
            Read,
            false,
            true,
        ),
        spec::<ListBuilds, BuildList>(
            "list_builds",
            "List builds",
            "A project's builds, newest first (without their jobs; get_build has them).",
            Read,
            false,
            true,
        ),
        spec::<GetBuild, BuildView>(
            "get_build",
            "Show a build",
            "One build with every job, superseded clones included.",
            Read,
            false,
            true,
        ),
        spec::<GetJob, JobView>(
            "get_job",
            "Show a job",
            "One job: its state, command, dependencies, exit code and message.",
            Read,
            false,
            true,
        ),
        spec::<GetJobLog, JobLog>(
            "get_job_log",
            "Read a job's log",
            "The last lines of a job's output (tail_lines, default 100, at most 1000; at most 64 KiB). \
             Output of jobs that ended longer ago than the server's job log retention is deleted: \
             then this is refused with log_pruned.",
            Read,
            false,
            true,
        ),
        spec::<CreateWatch, WatchView>(
            "create_watch",
            "Create a watch",
            "Re-run the project's pipeline for source into to_uri every watch_interval minutes. \
             to_uri is unique within a project.",
            Write,
            false,
            false,
        ),
        spec::<CancelWatch, Cancelled>(
            "cancel_watch",
            "Cancel a watch",
            "Delete the watch with this to_uri for good. Cancelling a watch that is already gone \
             says so and is not an error. To stop it for a while, use pause_watch.",
            Write,
            true,
            true,
        ),
        spec::<PauseWatch, WatchView>(
            "pause_watch",
            "Pause a watch",
            "Stop a watch from firing until resume_watch; its settings are kept.",
            Write,
            false,
            true,
        ),
        spec::<WatchAction, WatchView>(
            "resume_watch",
            "Resume a watch",
            "Let a paused watch fire again, the first time one interval from now.",
            Write,
            false,
            true,
        ),
        spec::<WatchAction, Triggered>(
            "trigger_watch",
            "Trigger a watch now",
            "Fire a watch once now (a paused one too), starting a build; its schedule is kept.",
            Write,
            false,
            false,
        ),
        spec::<TriggerBuild, BuildView>(
            "trigger_build",
            "Trigger a build",
            "Start a build of a project: its default pipeline, or the pipeline given.",
            Write,
            false,
            false,
        ),
        spec::<BuildAction, BuildView>(
            "restart_build",
            "Restart a build",
            "Start the build again as a new generation (restart_counter + 1), every job afresh.",
            Write,
            false,
            false,
        ),
        spec::<BuildAction, Aborted>(
            "abort_build",
            "Abort a build",
            "Kill every job of the build that has not ended; nothing more of it will run.",
            Write,
            true,
            true,
        ),
        spec::<JobAction, Restarted>(
            "restart_job",
            "Restart a job and what follows it",
            "Clone the job and everything downstream of it (foo becomes foo.1) and run the clones.",
            Write,
            false,
            false,
        ),
        spec::<JobAction, Rerun>(
            "rerun_job",
            "Rerun one job",
            "Clone just this job and run it again; what follows it is not re-run.",
            Write,
            false,
            false,
        ),
        spec::<JobAction, Aborted>(
            "abort_job",
            "Abort a job",
            "Kill the job if it has not ended (jobs that wait on it are skipped).",
            Write,
            true,
            true,
        ),
    ]
}

fn tool_of(s: &Spec) -> Tool {
    let annotations = ToolAnnotations::with_title(s.title)
        .read_only(s.kind == Kind::Read)
        .destructive(s.destructive)
        .idempotent(s.idempotent)
        .open_world(false);
    Tool::new_with_raw(s.name, Some(Cow::Borrowed(s.description)), (s.input)())
        .with_title(s.title)
        .with_raw_output_schema((s.output)())
        .with_annotations(annotations)
}

// ---- arguments ----

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListWatches {
    /// Only watches in this project.
    project: Option<String>,
    /// Only active (not paused) watches.
    active_only: Option<bool>,
    /// At most this many (1-500, default 100).
    limit: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetWatch {
    /// The watch's id (a UUID). Give this or to_uri.
    id: Option<String>,
    /// The watch's target URI. Give this or id.
    to_uri: Option<String>,
    /// The watch's project, when to_uri is used in several.
    project: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateWatch {
    project: String,
    /// An absolute URI: what the pipeline reads.
    source: String,
    /// An absolute URI: where the pipeline writes; unique within the project.
    to_uri: String,
    /// Minutes between runs: > 0, at most 525600, and at least the server's floor.
    watch_interval: f64,
    /// Why the watch exists, for the people who read it later.
    reason: Option<String>,
    /// Instructions passed to every build the watch starts.
    instruction: Option<String>,
    /// Retrying with the same key returns the first answer instead of acting twice.
    idempotency_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CancelWatch {
    /// The target URI of the watch to cancel.
    to_uri: String,
    /// The watch's project, when to_uri is used in several.
    project: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PauseWatch {
    /// The watch's id (a UUID). Give this or to_uri.
    id: Option<String>,
    /// The watch's target URI. Give this or id.
    to_uri: Option<String>,
    project: Option<String>,
    /// Why it is paused; kept on the watch.
    reason: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WatchAction {
    /// The watch's id (a UUID). Give this or to_uri.
    id: Option<String>,
    /// The watch's target URI. Give this or id.
    to_uri: Option<String>,
    project: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListBuilds {
    project: String,
    /// At most this many, newest first (1-200, default 20).
    limit: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetBuild {
    project: String,
    /// The build's id (a UUID).
    build: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetJob {
    project: String,
    /// The job's id (a UUID).
    job: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetJobLog {
    project: String,
    /// The job's id (a UUID).
    job: String,
    /// How many lines from the end (default 100, at most 1000).
    tail_lines: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TriggerBuild {
    project: String,
    /// The pipeline to run; the project's default when absent.
    pipeline: Option<PipelineBody>,
    /// Added to every job's environment.
    env: Option<BTreeMap<String, String>>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BuildAction {
    project: String,
    /// The build's id (a UUID).
    build: String,
    idempotency_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct JobAction {
    project: String,
    /// The job's id (a UUID).
    job: String,
    idempotency_key: Option<String>,
}

// ---- results ----

#[derive(Serialize, JsonSchema)]
struct ProjectList {
    projects: Vec<ProjectView>,
}

#[derive(Serialize, JsonSchema)]
struct WatchList {
    watches: Vec<WatchView>,
    /// How many watches match, beyond the limit too.
    total: usize,
}

#[derive(Serialize, JsonSchema)]
struct BuildList {
    builds: Vec<BuildView>,
}

#[derive(Serialize, JsonSchema)]
struct JobLog {
    job_id: Uuid,
    state: JobState,
    /// The last lines of the log.
    text: String,
    lines: usize,
    /// Whether older output was left out.
    truncated: bool,
}

#[derive(Serialize, JsonSchema)]
struct Triggered {
    /// The watch.
    id: Uuid,
    to_uri: String,
    /// The build the fire started; null when there was no pipeline to run.
    build_id: Option<Uuid>,
}

#[derive(Serialize, JsonSchema)]
struct Cancelled {
    to_uri: String,
    /// False when there was no such watch (already cancelled, or never there).
    cancelled: bool,
    id: Option<Uuid>,
    detail: String,
}

// ---- the handler ----

impl Tools {
    pub(super) fn new(app: AppState, read_only: bool) -> Tools {
        let tools = specs().iter().map(|s| (tool_of(s), s.kind)).collect();
        Tools {
            app,
            read_only,
            tools: Arc::new(tools),
        }
    }

    fn kind_of(&self, name: &str) -> Option<Kind> {
        self.tools
            .iter()
            .find(|(tool, _)| tool.name == name)
            .map(|(_, kind)| *kind)
    }

    /// Whether this principal may see (and so is expected to call) the write tools.
    fn writes_visible(&self, principal: Principal) -> bool {
        if self.read_only {
            return false;
        }
        let state = self.app.control.state();
        match principal {
            Principal::System => true,
            Principal::Token(id) => state.tokens.get(&id).is_some_and(|t| t.allow_trigger),
        }
    }
}

/// One call in flight: who made it and what it said, for its commit.
struct Call<'a> {
    app: &'a AppState,
    principal: Principal,
    request_id: String,
    tool: String,
    arguments: String,
    invalid_params: Option<InvalidParams>,
}

fn identity(ctx: &RequestContext<RoleServer>) -> Result<(Principal, String), McpError> {
    let parts = ctx.extensions.get::<axum::http::request::Parts>();
    let principal = parts
        .and_then(|p| p.extensions.get::<Identity>())
        .map(|i| i.0)
        .ok_or_else(|| {
            McpError::internal_error("the request reached a tool unauthenticated", None)
        })?;
    let request_id = parts
        .and_then(|p| p.headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((principal, request_id))
}

fn unrecorded(e: crate::control::ControlError) -> McpError {
    tracing::error!(error = %e, "MCP call not recorded");
    McpError::internal_error(
        format!("reeve could not record this call ({e}); nothing was done; retry later"),
        None,
    )
}

impl Call<'_> {
    /// Records a call that changes nothing. The answer is the record's: a call whose
    /// arguments are over their limits is recorded as refused for that (`field_too_long`).
    async fn record(
        &self,
        project: Option<String>,
        target: Option<String>,
        refusal: Option<&Rejection>,
    ) -> Result<Result<Reply, Rejection>, McpError> {
        let command = Command::McpCall {
            tool: self.tool.clone(),
            arguments: self.arguments.clone(),
            project,
            target,
            refusal: refusal.map(|r| Refusal {
                status: r.status,
                code: r.code.clone(),
                reason: r.reason.clone(),
            }),
        };
        self.submit(None, command).await
    }

    async fn submit(
        &self,
        idempotency_key: Option<String>,
        command: Command,
    ) -> Result<Result<Reply, Rejection>, McpError> {
        let submitted = self
            .app
            .control
            .submit(Submission {
                principal: self.principal,
                plane: Plane::Mcp,
                request_id: self.request_id.clone(),
                idempotency_key,
                command,
            })
            .await
            .map_err(unrecorded)?;
        if submitted.seq.is_none() {
            // An idempotent replay answers from memory without a commit of its own; the agent
            // still called the tool, so the call is recorded (as one that changed nothing).
            let again = Command::McpCall {
                tool: self.tool.clone(),
                arguments: self.arguments.clone(),
                project: None,
                target: None,
                refusal: None,
            };
            self.app
                .control
                .submit(Submission {
                    principal: self.principal,
                    plane: Plane::Mcp,
                    request_id: self.request_id.clone(),
                    idempotency_key: None,
                    command: again,
                })
                .await
                .map_err(unrecorded)?;
        }
        Ok(submitted.result)
    }

    /// Submits a write tool's command. Arguments that did not make a command are recorded as
    /// the refusal they are.
    async fn write(
        &self,
        idempotency_key: Option<String>,
        command: Result<Command, Rejection>,
    ) -> Result<Result<Reply, Rejection>, McpError> {
        let key = idempotency_key.map(check_key).transpose();
        let (command, key) = match (command, key) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(r), _) | (_, Err(r)) => (
                Command::Malformed {
                    op: self.tool.clone(),
                    admin_only: false,
                    status: r.status,
                    code: r.code,
                    detail: r.reason,
                },
                None,
            ),
        };
        let wrapped = Command::McpWrite {
            tool: self.tool.clone(),
            arguments: self.arguments.clone(),
            command: Box::new(command),
        };
        self.submit(key, wrapped).await
    }

    /// A call that does not fit (no such tool, or arguments the tool's schema rejects):
    /// recorded, then a JSON-RPC -32602 (HTTP 400 on 2026-07-28, see `InvalidParams`).
    async fn malformed(&self, code: &str, detail: String) -> McpError {
        let refusal = Rejection::new(400, code, detail.clone());
        let message = match self.record(None, None, Some(&refusal)).await {
            Err(e) => return e,
            Ok(Err(r)) if r.code == bounds::FIELD_TOO_LONG => format!("{} [{}]", r.reason, r.code),
            Ok(_) => detail,
        };
        if let Some(flag) = &self.invalid_params {
            flag.raise();
        }
        McpError::invalid_params(message, None)
    }

    async fn parse<T: DeserializeOwned>(&self, args: &Value) -> Result<T, McpError> {
        match serde_json::from_value(args.clone()) {
            Ok(v) => Ok(v),
            Err(e) => Err(self
                .malformed(
                    "invalid_arguments",
                    format!(
                        "the arguments do not fit {}: {e}; tools/list has its inputSchema",
                        self.tool
                    ),
                )
                .await),
        }
    }
}

fn check_key(key: String) -> Result<String, Rejection> {
    if !key.is_empty()
        && key.len() <= crate::domain::bounds::IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(key)
    } else {
        Err(Rejection::invalid(
            "invalid_idempotency_key",
            "idempotency_key",
            "idempotency_key must be 1-255 visible ASCII characters, e.g. a UUID",
        ))
    }
}

fn rejection(p: Problem) -> Rejection {
    Rejection {
        status: p.status.as_u16(),
        code: p.code,
        reason: p.detail,
        field: p.field,
    }
}

fn parse_id(raw: &str, what: &str, lister: &str) -> Result<Uuid, Rejection> {
    Uuid::parse_str(raw).map_err(|_| {
        Rejection::invalid(
            &format!("invalid_{what}_id"),
            what,
            format!("{raw:?} is not a {what} id (a UUID); {lister} shows the ids"),
        )
    })
}

fn watch_key(
    id: Option<String>,
    to_uri: Option<String>,
    project: Option<String>,
) -> Result<WatchKey, Rejection> {
    let id = id
        .map(|raw| parse_id(&raw, "watch", "list_watches"))
        .transpose()?;
    if id.is_none() && to_uri.is_none() {
        return Err(Rejection::new(
            400,
            "watch_key_required",
            "name the watch by id or by to_uri; list_watches shows both",
        ));
    }
    Ok(WatchKey {
        id,
        to_uri,
        project,
    })
}

/// What an agent should do after a refusal, by its code.
fn next_step(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_interval" => "to pause a watch use pause_watch; to remove it use cancel_watch",
        "watch_not_found" => "list_watches shows the watches this token can see",
        "project_not_found" => "list_projects shows the projects this token can see",
        "build_not_found" => "list_builds shows a project's builds",
        "job_not_found" => "get_build lists a build's jobs",
        "log_pruned" => {
            "the output is gone for good; get_job still shows the job's state, exit code and message"
        }
        "ambiguous_to_uri" => "pass project to say which watch you mean",
        "watch_exists" | "to_uri_taken" => {
            "get_watch shows the watch that has it; cancel_watch it first to replace it"
        }
        "trigger_not_allowed" | "mcp_read_only" => {
            "this token may only read; ask an operator for an MCP token with allow_trigger"
        }
        "rate_limited" => "this token is rate limited; wait before calling again",
        "build_aborted" => "trigger_build starts a new build",
        "job_running" | "descendant_running" => "wait for it to end (get_job), or abort_job it",
        "idempotency_key_reused" => "use a new idempotency_key for a new request",
        "no_pipeline" | "pipeline_required" => {
            "pass pipeline, or ask an operator to set the project's default pipeline"
        }
        _ => return None,
    })
}

/// The core's refusal reasons are written for REST callers; an agent gets them without the
/// clauses that name HTTP routes or body fields, and with an MCP next step instead.
fn agent_reason(reason: &str) -> String {
    let rest_only = |clause: &str| {
        [
            "/api/v1",
            "GET /",
            "POST ",
            "PATCH ",
            "DELETE ",
            "is_active=",
            "?to_uri",
            ".../",
        ]
        .iter()
        .any(|m| clause.contains(m))
    };
    let kept: Vec<&str> = reason.split("; ").filter(|c| !rest_only(c)).collect();
    if kept.is_empty() {
        reason.to_string()
    } else {
        kept.join("; ")
    }
}

fn tool_error(r: &Rejection) -> CallToolResponse {
    let mut text = format!("{} [{}]", agent_reason(&r.reason), r.code);
    if let Some(step) = next_step(&r.code) {
        text.push_str(". Next: ");
        text.push_str(step);
    }
    CallToolResult::error(vec![ContentBlock::text(text)]).into()
}

fn ok<T: Serialize>(value: &T, text: String) -> Result<CallToolResponse, McpError> {
    let structured = serde_json::to_value(value).map_err(|e| {
        McpError::internal_error(format!("reeve could not render its answer: {e}"), None)
    })?;
    let mut result = CallToolResult::structured(structured);
    result.content = vec![ContentBlock::text(text)];
    Ok(result.into())
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn minutes(m: f64) -> String {
    format!("{m}m")
}

fn watch_line(w: &WatchView) -> String {
    format!(
        "- {}  every {}  {}  next {}",
        w.to_uri,
        minutes(w.watch_interval),
        if w.is_active { "active" } else { "paused" },
        w.next_run_at.as_deref().unwrap_or("-"),
    )
}

fn watch_text(verb: &str, w: &WatchView) -> String {
    format!(
        "{verb} watch {} ({}) in {}: {} every {}, {}, next run {}",
        w.to_uri,
        w.id,
        w.project,
        w.source,
        minutes(w.watch_interval),
        if w.is_active { "active" } else { "paused" },
        w.next_run_at.as_deref().unwrap_or("none while paused"),
    )
}

fn build_text(verb: &str, b: &BuildView) -> String {
    let mut text = format!(
        "{verb} build {} #{}.{} of {}: {}",
        b.id,
        b.number,
        b.restart_counter,
        b.project,
        b.state.as_str()
    );
    for j in b.jobs.iter().flatten() {
        text.push_str(&format!("\n- {}  {}  {}", j.name, j.state.as_str(), j.id));
    }
    text
}

fn last_lines(log: &[u8], n: usize) -> (String, usize, bool) {
    let text = String::from_utf8_lossy(log);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(n);
    let mut picked = all[start..].join("\n");
    let mut truncated = start > 0;
    if picked.len() > MAX_LOG_BYTES {
        let mut cut = picked.len() - MAX_LOG_BYTES;
        while !picked.is_char_boundary(cut) {
            cut += 1;
        }
        picked = picked[cut..].to_string();
        truncated = true;
    }
    let lines = picked.lines().count();
    (picked, lines, truncated)
}

impl ServerHandler for Tools {
    fn get_info(&self) -> InitializeResult {
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
        // What `initialize` answers a client whose revision reeve does not speak: the newest
        // that still has the handshake (2026-07-28 is reached through `server/discover`).
        info.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
        info.server_info = Implementation::new("reeve", env!("CARGO_PKG_VERSION"))
            .with_title("reeve control plane");
        info.instructions = Some(
            "reeve runs builds (graphs of jobs) and watches (a pipeline re-run for a source into \
             a to_uri every watch_interval minutes). Read with list_*/get_* tools; change things \
             with the write tools if this token may. Every call is audited."
                .into(),
        );
        info
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Owned(
            ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .filter(|v| super::PROTOCOL_VERSIONS.contains(&v.as_str()))
                .cloned()
                .collect(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (principal, _) = identity(&ctx)?;
        let writes = self.writes_visible(principal);
        let tools = self
            .tools
            .iter()
            .filter(|(_, kind)| writes || *kind == Kind::Read)
            .map(|(tool, _)| tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let (principal, request_id) = identity(&ctx)?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        let call = Call {
            app: &self.app,
            principal,
            request_id,
            tool: request.name.to_string(),
            arguments: args.to_string(),
            invalid_params: ctx
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<InvalidParams>())
                .cloned(),
        };
        let Some(kind) = self.kind_of(&call.tool) else {
            return Err(call
                .malformed(
                    "unknown_tool",
                    format!(
                        "there is no tool {:?}; tools/list names the tools this token may use",
                        call.tool
                    ),
                )
                .await);
        };
        let token_kind = {
            let state = self.app.control.state();
            match principal {
                Principal::Token(id) => state.tokens.get(&id).map(|t| t.kind),
                Principal::System => None,
            }
        };
        let bucket = match kind {
            Kind::Read => Bucket::Read,
            Kind::Write => Bucket::Trigger,
        };
        if let Err(q) = self.app.limits.check(principal, token_kind, bucket) {
            let r = Rejection::new(
                429,
                "rate_limited",
                format!(
                    "this token may make {} such calls a minute; retry in {} s",
                    q.limit,
                    q.reset_secs.max(1)
                ),
            );
            let recorded = call.record(None, None, Some(&r)).await?;
            return Ok(tool_error(recorded.as_ref().err().unwrap_or(&r)));
        }
        // Arguments over their limit are refused before they are read; the record keeps only
        // their length and hash. A write's arguments are held to theirs by its record.
        if kind == Kind::Read && call.arguments.len() > bounds::MCP_READ_ARGUMENTS {
            let recorded = call.record(None, None, None).await?;
            if let Err(r) = recorded {
                return Ok(tool_error(&r));
            }
        }
        match kind {
            Kind::Read => self.read(&call, &args).await,
            Kind::Write => self.write(&call, &args).await,
        }
    }
}

/// A read's answer: the structured value and its text, or a refusal; with what it read.
type Read = Result<(Value, String), Rejection>;

/// Records a read and answers it.
async fn finish(
    call: &Call<'_>,
    project: Option<String>,
    target: Option<String>,
    outcome: Read,
) -> Result<CallToolResponse, McpError> {
    let recorded = call.record(project, target, outcome.as_ref().err()).await?;
    let outcome = match recorded {
        Err(r) if r.code == bounds::FIELD_TOO_LONG => Err(r),
        _ => outcome,
    };
    match outcome {
        Ok((value, text)) => {
            let mut result = CallToolResult::structured(value);
            result.content = vec![ContentBlock::text(text)];
            Ok(result.into())
        }
        Err(r) => Ok(tool_error(&r)),
    }
}

impl Tools {
    /// Runs a read against the state, records it, answers.
    async fn answer(
        &self,
        call: &Call<'_>,
        project: Option<String>,
        target: Option<String>,
        read: impl FnOnce(&State, &Caller<'_>) -> Read,
    ) -> Result<CallToolResponse, McpError> {
        let outcome = {
            let state = self.app.control.state();
            state
                .caller(call.principal, now_ms())
                .and_then(|caller| read(&state, &caller))
        };
        finish(call, project, target, outcome).await
    }

    async fn read(&self, call: &Call<'_>, args: &Value) -> Result<CallToolResponse, McpError> {
        match call.tool.as_str() {
            "list_projects" => {
                let NoArgs {} = call.parse(args).await?;
                self.answer(call, None, None, |state, caller| {
                    let projects: Vec<ProjectView> = state
                        .projects
                        .values()
                        .filter(|p| caller.sees_project(&p.id))
                        .map(ProjectView::from)
                        .collect();
                    let text = if projects.is_empty() {
                        "no projects".to_string()
                    } else {
                        projects
                            .iter()
                            .map(|p| format!("- {}  {}", p.id, p.name))
                            .collect::<Vec<_>>()
                            .join("\n")
                    };
                    Ok((json(&ProjectList { projects })?, text))
                })
                .await
            }
            "list_watches" => {
                let a: ListWatches = call.parse(args).await?;
                let limit = a.limit.unwrap_or(100);
                self.answer(call, a.project.clone(), None, |state, caller| {
                    if !(1..=500).contains(&limit) {
                        return Err(Rejection::invalid(
                            "invalid_limit",
                            "limit",
                            "limit must be between 1 and 500",
                        ));
                    }
                    if let Some(p) = &a.project {
                        state.project_visible(caller, p)?;
                    }
                    let active_only = a.active_only.unwrap_or(false);
                    let matching: Vec<&Watch> = state
                        .watches
                        .values()
                        .map(std::sync::Arc::as_ref)
                        .filter(|w| {
                            caller.sees_project(&w.project)
                                && a.project.as_ref().is_none_or(|p| *p == w.project)
                                && (!active_only || w.is_active)
                        })
                        .collect();
                    let total = matching.len();
                    let watches: Vec<WatchView> = matching
                        .into_iter()
                        .take(limit)
                        .map(WatchView::from)
                        .collect();
                    let mut text = count(total, "watch", "watches");
                    for w in &watches {
                        text.push('\n');
                        text.push_str(&watch_line(w));
                    }
                    Ok((json(&WatchList { watches, total })?, text))
                })
                .await
            }
            "get_watch" => {
                let a: GetWatch = call.parse(args).await?;
                let target =
                    a.id.clone()
                        .map(|i| format!("watch:{i}"))
                        .or_else(|| a.to_uri.clone().map(|u| format!("to_uri:{u}")));
                self.answer(call, a.project.clone(), target, |state, caller| {
                    let key = watch_key(a.id, a.to_uri, a.project)?;
                    let w = WatchView::from(state.resolve_watch(caller, &key)?);
                    let text = watch_text("The", &w);
                    Ok((json(&w)?, text))
                })
                .await
            }
            "list_builds" => {
                let a: ListBuilds = call.parse(args).await?;
                let limit = a.limit.unwrap_or(20);
                let project = a.project.clone();
                self.answer(call, Some(a.project.clone()), None, |state, caller| {
                    if !(1..=200).contains(&limit) {
                        return Err(Rejection::invalid(
                            "invalid_limit",
                            "limit",
                            "limit must be between 1 and 200",
                        ));
                    }
                    let (builds, _) = state.builds_page(
                        self.app.control.store(),
                        caller,
                        &project,
                        None,
                        limit,
                    )?;
                    let builds: Vec<BuildView> = builds
                        .into_iter()
                        .map(|(b, s)| BuildView::new(s, &b, None))
                        .collect();
                    let mut text =
                        format!("{} of {project}", count(builds.len(), "build", "builds"));
                    for b in &builds {
                        text.push_str(&format!(
                            "\n- #{}.{}  {}  {}  {}",
                            b.number,
                            b.restart_counter,
                            b.state.as_str(),
                            b.id,
                            b.created_at
                        ));
                    }
                    Ok((json(&BuildList { builds })?, text))
                })
                .await
            }
            "get_build" => {
                let a: GetBuild = call.parse(args).await?;
                let target = Some(format!("build:{}", a.build));
                self.answer(call, Some(a.project.clone()), target, |state, caller| {
                    let id = parse_id(&a.build, "build", "list_builds")?;
                    let b = BuildView::of(&state.find_build(
                        self.app.control.store(),
                        caller,
                        &a.project,
                        id,
                    )?);
                    let text = build_text("Build", &b);
                    Ok((json(&b)?, text))
                })
                .await
            }
            "get_job" => {
                let a: GetJob = call.parse(args).await?;
                let target = Some(format!("job:{}", a.job));
                self.answer(call, Some(a.project.clone()), target, |state, caller| {
                    let id = parse_id(&a.job, "job", "get_build")?;
                    let j = JobView::from(&state.find_job(
                        self.app.control.store(),
                        caller,
                        &a.project,
                        id,
                    )?);
                    let text = format!(
                        "Job {} ({}) of build {}: {}{}{}",
                        j.name,
                        j.id,
                        j.build_id,
                        j.state.as_str(),
                        j.message
                            .as_deref()
                            .map(|m| format!(" — {m}"))
                            .unwrap_or_default(),
                        j.log_pruned_at
                            .as_deref()
                            .map(|at| format!(" (output deleted by job log retention at {at})"))
                            .unwrap_or_default()
                    );
                    Ok((json(&j)?, text))
                })
                .await
            }
            "get_job_log" => {
                let a: GetJobLog = call.parse(args).await?;
                let target = Some(format!("job:{}", a.job));
                let n = a.tail_lines.unwrap_or(DEFAULT_LOG_LINES);
                // The log is read outside the state lock: it may be megabytes.
                let checked = {
                    let state = self.app.control.state();
                    state.caller(call.principal, now_ms()).and_then(|caller| {
                        if !(1..=MAX_LOG_LINES).contains(&n) {
                            return Err(Rejection::invalid(
                                "invalid_tail_lines",
                                "tail_lines",
                                format!("tail_lines must be between 1 and {MAX_LOG_LINES}"),
                            ));
                        }
                        let id = parse_id(&a.job, "job", "get_build")?;
                        let job =
                            state.find_job(self.app.control.store(), &caller, &a.project, id)?;
                        crate::domain::log_readable(&job)?;
                        Ok((id, job.state))
                    })
                };
                let outcome = checked.and_then(|(id, job_state)| {
                    let log = self.app.control.store().read_log(id, 0).map_err(|e| {
                        Rejection::new(500, "internal", format!("the log could not be read: {e}"))
                    })?;
                    let (text, lines, truncated) = last_lines(&log, n);
                    let shown = if text.is_empty() {
                        format!("job {id} ({}) has no output yet", job_state.as_str())
                    } else {
                        text.clone()
                    };
                    let out = JobLog {
                        job_id: id,
                        state: job_state,
                        text,
                        lines,
                        truncated,
                    };
                    Ok((json(&out)?, shown))
                });
                finish(call, Some(a.project), target, outcome).await
            }
            other => Err(McpError::internal_error(
                format!("read tool {other} has no handler"),
                None,
            )),
        }
    }

    async fn write(&self, call: &Call<'_>, args: &Value) -> Result<CallToolResponse, McpError> {
        match call.tool.as_str() {
            "create_watch" => {
                let a: CreateWatch = call.parse(args).await?;
                let command = Command::CreateWatch(NewWatch {
                    project: a.project,
                    source: a.source,
                    to_uri: a.to_uri,
                    watch_interval: a.watch_interval,
                    reason: a.reason,
                    instruction: a.instruction,
                    is_active: true,
                });
                match call.write(a.idempotency_key, Ok(command)).await? {
                    Ok(Reply::Watch(w)) => {
                        let v = WatchView::from(&w);
                        ok(&v, watch_text("Created", &v))
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(r) => Ok(tool_error(&r)),
                }
            }
            "cancel_watch" => {
                let a: CancelWatch = call.parse(args).await?;
                let to_uri = a.to_uri.clone();
                let command = Command::DeleteWatch {
                    key: WatchKey {
                        id: None,
                        to_uri: Some(a.to_uri),
                        project: a.project,
                    },
                    if_match: None,
                };
                match call.write(a.idempotency_key, Ok(command)).await? {
                    Ok(Reply::WatchDeleted { id, to_uri }) => {
                        let detail = format!("cancelled watch {to_uri} ({id})");
                        ok(
                            &Cancelled {
                                to_uri,
                                cancelled: true,
                                id: Some(id),
                                detail: detail.clone(),
                            },
                            detail,
                        )
                    }
                    Ok(other) => Err(unexpected(&other)),
                    // Cancelling is idempotent: what is gone stays gone.
                    Err(r) if r.code == "watch_not_found" => {
                        let detail = format!(
                            "there is no watch with to_uri {to_uri} (already cancelled, or never created); nothing to do"
                        );
                        ok(
                            &Cancelled {
                                to_uri,
                                cancelled: false,
                                id: None,
                                detail: detail.clone(),
                            },
                            detail,
                        )
                    }
                    Err(r) => Ok(tool_error(&r)),
                }
            }
            "pause_watch" => {
                let a: PauseWatch = call.parse(args).await?;
                let command =
                    watch_key(a.id, a.to_uri, a.project).map(|key| Command::UpdateWatch {
                        key,
                        if_match: None,
                        patch: WatchPatch {
                            is_active: Some(false),
                            reason: a.reason.map(Some),
                            ..WatchPatch::default()
                        },
                    });
                self.watch_reply(call, a.idempotency_key, command, "Paused")
                    .await
            }
            "resume_watch" => {
                let a: WatchAction = call.parse(args).await?;
                let command =
                    watch_key(a.id, a.to_uri, a.project).map(|key| Command::UpdateWatch {
                        key,
                        if_match: None,
                        patch: WatchPatch {
                            is_active: Some(true),
                            ..WatchPatch::default()
                        },
                    });
                self.watch_reply(call, a.idempotency_key, command, "Resumed")
                    .await
            }
            "trigger_watch" => {
                let a: WatchAction = call.parse(args).await?;
                let command =
                    watch_key(a.id, a.to_uri, a.project).map(|key| Command::TriggerWatch { key });
                match call.write(a.idempotency_key, command).await? {
                    Ok(Reply::WatchTriggered { id, to_uri }) => {
                        let build_id = self
                            .app
                            .control
                            .state()
                            .watches
                            .get(&id)
                            .and_then(|w| w.last_run.as_ref())
                            .and_then(|r| r.build_id);
                        let text = match build_id {
                            Some(b) => format!(
                                "triggered watch {to_uri} ({id}): build {b} started; get_build follows it"
                            ),
                            None => format!(
                                "triggered watch {to_uri} ({id}), but no build started: neither the watch nor its project has a pipeline"
                            ),
                        };
                        ok(
                            &Triggered {
                                id,
                                to_uri,
                                build_id,
                            },
                            text,
                        )
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(r) => Ok(tool_error(&r)),
                }
            }
            "trigger_build" => {
                let a: TriggerBuild = call.parse(args).await?;
                let command = a
                    .pipeline
                    .map(Pipeline::try_from)
                    .transpose()
                    .map_err(rejection)
                    .map(|pipeline| Command::TriggerBuild {
                        project: a.project,
                        pipeline,
                        env: a.env.unwrap_or_default(),
                    });
                self.build_reply(call, a.idempotency_key, command, "Triggered")
                    .await
            }
            "restart_build" => {
                let a: BuildAction = call.parse(args).await?;
                let command =
                    parse_id(&a.build, "build", "list_builds").map(|build| Command::RestartBuild {
                        project: a.project,
                        build,
                        if_match: None,
                    });
                self.build_reply(call, a.idempotency_key, command, "Restarted as")
                    .await
            }
            "abort_build" => {
                let a: BuildAction = call.parse(args).await?;
                let command =
                    parse_id(&a.build, "build", "list_builds").map(|build| Command::AbortBuild {
                        project: a.project,
                        build,
                        if_match: None,
                    });
                self.aborted_reply(call, a.idempotency_key, command).await
            }
            "restart_job" => {
                let a: JobAction = call.parse(args).await?;
                let command = parse_id(&a.job, "job", "get_build").map(|job| Command::RestartJob {
                    project: a.project,
                    job,
                    if_match: None,
                });
                match call.write(a.idempotency_key, command).await? {
                    Ok(Reply::Cloned(clones)) => {
                        let jobs: Vec<ClonedView> = clones
                            .into_iter()
                            .map(|c| ClonedView {
                                from: c.from,
                                to: c.to,
                                name: c.name,
                            })
                            .collect();
                        let mut text = format!("restarted {}:", count(jobs.len(), "job", "jobs"));
                        for j in &jobs {
                            text.push_str(&format!("\n- {}  {}", j.name, j.to));
                        }
                        ok(&Restarted { jobs }, text)
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(r) => Ok(tool_error(&r)),
                }
            }
            "rerun_job" => {
                let a: JobAction = call.parse(args).await?;
                let command = parse_id(&a.job, "job", "get_build").map(|job| Command::RerunJob {
                    project: a.project,
                    job,
                    if_match: None,
                });
                match call.write(a.idempotency_key, command).await? {
                    Ok(Reply::Job(j)) => {
                        let job = JobView::from(j.as_ref());
                        let text = format!(
                            "rerunning {} as {} ({})",
                            job.name,
                            job.id,
                            job.state.as_str()
                        );
                        ok(&Rerun { job }, text)
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(r) => Ok(tool_error(&r)),
                }
            }
            "abort_job" => {
                let a: JobAction = call.parse(args).await?;
                let command = parse_id(&a.job, "job", "get_build").map(|job| Command::AbortJob {
                    project: a.project,
                    job,
                    if_match: None,
                });
                self.aborted_reply(call, a.idempotency_key, command).await
            }
            other => Err(McpError::internal_error(
                format!("write tool {other} has no handler"),
                None,
            )),
        }
    }

    async fn watch_reply(
        &self,
        call: &Call<'_>,
        key: Option<String>,
        command: Result<Command, Rejection>,
        verb: &str,
    ) -> Result<CallToolResponse, McpError> {
        match call.write(key, command).await? {
            Ok(Reply::Watch(w)) => {
                let v = WatchView::from(&w);
                ok(&v, watch_text(verb, &v))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }

    async fn build_reply(
        &self,
        call: &Call<'_>,
        key: Option<String>,
        command: Result<Command, Rejection>,
        verb: &str,
    ) -> Result<CallToolResponse, McpError> {
        match call.write(key, command).await? {
            Ok(Reply::Build(b, jobs)) => {
                let v = BuildView::with_jobs(&b, jobs.iter());
                ok(&v, build_text(verb, &v))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }

    async fn aborted_reply(
        &self,
        call: &Call<'_>,
        key: Option<String>,
        command: Result<Command, Rejection>,
    ) -> Result<CallToolResponse, McpError> {
        match call.write(key, command).await? {
            Ok(Reply::Aborted(aborted)) => {
                let text = if aborted.is_empty() {
                    "nothing was left to abort".to_string()
                } else {
                    format!("aborted {}", count(aborted.len(), "job", "jobs"))
                };
                ok(&Aborted { aborted }, text)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(r) => Ok(tool_error(&r)),
        }
    }
}

fn unexpected(reply: &Reply) -> McpError {
    tracing::error!(?reply, "an MCP tool got a reply it does not render");
    McpError::internal_error(
        "reeve produced an unexpected answer; this is a bug in reeve",
        None,
    )
}

/// Renders a tool's result inside a read (where `?` speaks `Rejection`).
fn json<T: Serialize>(value: &T) -> Result<Value, Rejection> {
    serde_json::to_value(value).map_err(|e| {
        Rejection::new(
            500,
            "internal",
            format!("reeve could not render its answer: {e}"),
        )
    })
}
