//! The tools. Each is one unit under `tools/` (one file per tool): its name, title, description
//! and annotations, the type its arguments parse into (whose schema is its inputSchema), the
//! type it answers with (whose schema is its outputSchema), and what it does. [`TOOLS`] names
//! every tool once: `tools/list` shows that table and `tools/call` finds the tool in it, so a
//! tool cannot be listed without its handler, nor handled without being listed. Each call is
//! recorded as one commit with plane `mcp`: writes as [`Command::McpWrite`] around the
//! command, everything else as [`Command::McpCall`].

mod abort_build;
mod abort_job;
mod args;
mod call;
mod cancel_watch;
mod create_watch;
mod get_build;
mod get_job;
mod get_job_log;
mod get_watch;
mod list_builds;
mod list_projects;
mod list_watches;
mod pause_watch;
mod rerun_job;
mod restart_build;
mod restart_job;
mod resume_watch;
mod schema;
mod trigger_build;
mod trigger_watch;

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::api::builds::{Aborted, BuildView};
use crate::api::watches::WatchView;
use crate::api::{AppState, Problem, now_ms};
use crate::domain::{Caller, Command, Principal, Rejection, Reply, State, WatchKey, bounds};
use crate::limits::Bucket;
use call::Call;

/// Every tool, in the order `tools/list` shows them.
static TOOLS: [Entry; 18] = [
    entry::<list_projects::Tool>(),
    entry::<list_watches::Tool>(),
    entry::<get_watch::Tool>(),
    entry::<list_builds::Tool>(),
    entry::<get_build::Tool>(),
    entry::<get_job::Tool>(),
    entry::<get_job_log::Tool>(),
    entry::<create_watch::Tool>(),
    entry::<cancel_watch::Tool>(),
    entry::<pause_watch::Tool>(),
    entry::<resume_watch::Tool>(),
    entry::<trigger_watch::Tool>(),
    entry::<trigger_build::Tool>(),
    entry::<restart_build::Tool>(),
    entry::<abort_build::Tool>(),
    entry::<restart_job::Tool>(),
    entry::<rerun_job::Tool>(),
    entry::<abort_job::Tool>(),
];

/// What kind of tool it is, which decides visibility, the rate-limit bucket and the record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// What a tool's handler answers: a result (a refusal is a result with `isError`), or a
/// JSON-RPC error.
type Answer = Result<CallToolResponse, McpError>;

/// One tool, everything about it in one place.
trait Spec {
    const NAME: &'static str;
    const TITLE: &'static str;
    const DESCRIPTION: &'static str;
    const KIND: Kind;
    /// Whether it destroys something (only writes do), and whether repeating it is harmless.
    const DESTRUCTIVE: bool = false;
    const IDEMPOTENT: bool;
    /// What the arguments parse into before [`Spec::run`]; arguments that do not parse are
    /// refused as the call's invalid params, recorded.
    type Args: DeserializeOwned + JsonSchema + Send;
    /// What `structuredContent` holds on success.
    type Output: JsonSchema;
    /// Does what the tool does, records it and answers.
    fn run(tools: &Tools, call: &Call<'_>, args: Self::Args)
    -> impl Future<Output = Answer> + Send;
}

/// A tool as [`TOOLS`] holds it.
struct Entry {
    name: &'static str,
    kind: Kind,
    listing: fn() -> Tool,
    run: for<'a> fn(&'a Tools, &'a Call<'a>, &'a Value) -> BoxFuture<'a, Answer>,
}

const fn entry<T: Spec>() -> Entry {
    Entry {
        name: T::NAME,
        kind: T::KIND,
        listing: listing::<T>,
        run: parse_and_run::<T>,
    }
}

fn listing<T: Spec>() -> Tool {
    let annotations = ToolAnnotations::with_title(T::TITLE)
        .read_only(T::KIND == Kind::Read)
        .destructive(T::DESTRUCTIVE)
        .idempotent(T::IDEMPOTENT)
        .open_world(false);
    Tool::new_with_raw(
        T::NAME,
        Some(Cow::Borrowed(T::DESCRIPTION)),
        schema::input_schema::<T::Args>(),
    )
    .with_title(T::TITLE)
    .with_raw_output_schema(schema::output_schema::<T::Output>())
    .with_annotations(annotations)
}

fn parse_and_run<'a, T: Spec>(
    tools: &'a Tools,
    call: &'a Call<'a>,
    args: &'a Value,
) -> BoxFuture<'a, Answer> {
    Box::pin(async move {
        let args: T::Args = call.parse(args).await?;
        T::run(tools, call, args).await
    })
}

#[derive(Clone)]
pub(super) struct Tools {
    app: AppState,
    read_only: bool,
    /// Every tool as `tools/list` shows it, beside its entry in [`TOOLS`].
    listed: Arc<Vec<(Tool, &'static Entry)>>,
}

impl Tools {
    pub(super) fn new(app: AppState, read_only: bool) -> Tools {
        let listed = TOOLS.iter().map(|e| ((e.listing)(), e)).collect();
        Tools {
            app,
            read_only,
            listed: Arc::new(listed),
        }
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
        let (principal, _) = call::identity(&ctx)?;
        let writes = self.writes_visible(principal);
        let tools = self
            .listed
            .iter()
            .filter(|(_, entry)| writes || entry.kind == Kind::Read)
            .map(|(tool, _)| tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let (principal, request_id) = call::identity(&ctx)?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        let call = Call {
            app: &self.app,
            principal,
            request_id,
            tool: request.name.to_string(),
            arguments: args.to_string(),
            invalid_params: call::invalid_params(&ctx),
        };
        let Some(entry) = TOOLS.iter().find(|e| e.name == call.tool) else {
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
        let kind = entry.kind;
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
        (entry.run)(self, &call, &args).await
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

/// The domain's refusal texts name no route, so an agent gets them as they are, with the
/// next step in tools.
fn tool_error(r: &Rejection) -> CallToolResponse {
    let mut text = format!("{} [{}]", r.reason, r.code);
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
                .map_err(Rejection::from)
                .and_then(|caller| read(&state, &caller))
        };
        finish(call, project, target, outcome).await
    }
}

/// Submits a write whose answer is the watch it changed.
async fn watch_reply(
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

/// Submits a write whose answer is a build with its jobs.
async fn build_reply(
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

/// Submits an abort; the answer lists the jobs it killed.
async fn aborted_reply(
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `tools/call` takes the first entry with the name, so a second one would never run.
    #[test]
    fn every_tool_has_a_name_of_its_own_within_the_limit() {
        let names: BTreeSet<&str> = TOOLS.iter().map(|e| e.name).collect();
        assert_eq!(names.len(), TOOLS.len(), "{names:?}");
        for e in &TOOLS {
            assert!(e.name.len() <= bounds::MCP_TOOL, "{}", e.name);
            assert_eq!((e.listing)().name, e.name);
        }
    }
}
