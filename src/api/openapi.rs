//! The OpenAPI document. The handlers' annotations give each operation its path, parameters,
//! body and success answers; everything a route can refuse is derived here, from [`ROUTES`]
//! (what each route does: which door, whether it changes anything, which domain operations it
//! runs) and from [`domain_refusals`] (what the domain refuses for each of them), so the
//! document cannot list a status or a `code` the server does not produce, nor miss one it does.
//! Field limits come from `domain::bounds` and the server's own rules (`--max-jobs`, the
//! interval floor), so the document describes the server that serves it.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    AppState, audit, builds, cluster, events, problem, projects, runner, tokens, watches, whoami,
};
use crate::domain::bounds;
use crate::domain::{Plane, Rules};

#[derive(OpenApi)]
#[openapi(
    info(title = "reeve", description = "An event-sourced control plane for jobs and watches. Errors are application/problem+json with a stable `code`; each operation lists the statuses it can answer and, for each, the exact `code`s. Every route also answers 405 `method_not_allowed` (with `Allow`) to a method it does not serve, 404 `route_not_found` off its paths, and 500 `internal` if reeve hits a bug or cannot read its own disk. String limits are bytes of UTF-8 (exact for ASCII; JSON Schema counts characters)."),
    paths(
        super::healthz,
        watches::list_or_lookup, watches::show, watches::create, watches::update,
        watches::update_by_uri, watches::delete, watches::delete_by_uri, watches::trigger,
        watches::trigger_by_uri,
        projects::list, projects::show, projects::create, projects::update,
        builds::list, builds::show, builds::show_job, builds::job_log, builds::trigger, builds::restart_build,
        builds::abort_build, builds::restart_job, builds::rerun_job, builds::abort_job,
        runner::claim, runner::heartbeat, runner::finish, runner::append_log, runner::upload_pipeline,
        tokens::list, tokens::create, tokens::revoke, whoami::whoami,
        audit::list, audit::export, audit::digest,
        cluster::status,
        events::stream,
    ),
    components(schemas(problem::ProblemDoc, watches::WatchView)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve(State(app): State<AppState>) -> Json<Value> {
    Json(document(&app.rules))
}

/// Which door a route belongs to: it decides which tokens are admitted (the others get 403)
/// and which headers the route reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// No token needed.
    Open,
    /// `api` and `admin` tokens; `Reeve-Plane: cli` or `web` may turn the plane into `cli` or
    /// `web`.
    Rest,
    /// `/api/v1/mcp/...`: `mcp` tokens.
    Mcp,
    /// `/api/v1/runner/...`: `runner` tokens.
    Runner,
}

/// What a route does with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read: spends the read bucket, leaves no commit.
    Read,
    /// A read only admins may make.
    AdminRead,
    /// A command (`api::submit_on`): spends a bucket, takes `Idempotency-Key`, is a commit
    /// whatever its outcome.
    Write,
    /// Data that is not a command (a job's output): checked against the state, not limited.
    Data,
}

/// How a route names a watch, which decides which of the lookup refusals it can meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    None,
    /// By id in the path (`?to_uri=` may only agree with it).
    Id,
    /// By `?to_uri=` (and `?project=`).
    Uri,
    /// A listing, which names one watch only when `?to_uri=` is given.
    Listing,
}

/// One route's contract, as far as its failures go.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    /// Under `/api/v1`.
    pub path: &'static str,
    pub door: Door,
    pub access: Access,
    /// Takes `If-Match`.
    pub if_match: bool,
    pub lookup: Lookup,
    /// The domain operations it submits or reads, for [`domain_refusals`].
    pub ops: &'static [&'static str],
    /// The body is a generator's output: whatever it holds is decided (a bad one fails the
    /// job), never refused as a request.
    pub output: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    door: Door,
    access: Access,
    ops: &'static [&'static str],
) -> Route {
    Route {
        method,
        path,
        door,
        access,
        if_match: false,
        lookup: Lookup::None,
        ops,
        output: false,
    }
}

const fn read(path: &'static str, ops: &'static [&'static str]) -> Route {
    route("get", path, Door::Rest, Access::Read, ops)
}

const fn admin_read(path: &'static str) -> Route {
    route("get", path, Door::Rest, Access::AdminRead, &[])
}

const fn write(method: &'static str, path: &'static str, ops: &'static [&'static str]) -> Route {
    route(method, path, Door::Rest, Access::Write, ops)
}

const fn on(door: Door, r: Route) -> Route {
    Route { door, ..r }
}

const fn if_match(r: Route) -> Route {
    Route {
        if_match: true,
        ..r
    }
}

const fn by(lookup: Lookup, r: Route) -> Route {
    Route { lookup, ..r }
}

const fn output(r: Route) -> Route {
    Route { output: true, ..r }
}

/// Every route under `/api/v1` and what it does. `tests/openapi.rs` checks that each
/// documented operation has its entry here and each entry its operation.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    route("get", "/healthz", Door::Open, Access::Read, &[]),
    by(Lookup::Listing, read("/watches", &["list_watches"])),
    write("post", "/watches", &["create_watch"]),
    by(Lookup::Uri, if_match(write("patch", "/watches", &["update_watch"]))),
    by(Lookup::Uri, if_match(write("delete", "/watches", &["delete_watch"]))),
    by(Lookup::Uri, write("post", "/watches/trigger", &["trigger_watch"])),
    by(Lookup::Id, read("/watches/{id}", &["get_watch"])),
    by(Lookup::Id, if_match(write("patch", "/watches/{id}", &["update_watch"]))),
    by(Lookup::Id, if_match(write("delete", "/watches/{id}", &["delete_watch"]))),
    by(Lookup::Id, write("post", "/watches/{id}/trigger", &["trigger_watch"])),
    read("/projects", &["list_projects"]),
    write("post", "/projects", &["create_project"]),
    read("/projects/{id}", &["get_project"]),
    write("patch", "/projects/{id}", &["update_project"]),
    read("/projects/{project}/builds", &["list_builds"]),
    write("post", "/projects/{project}/builds", &["trigger_build"]),
    read("/projects/{project}/builds/{build}", &["get_build"]),
    read("/projects/{project}/jobs/{job}", &["get_job"]),
    read("/projects/{project}/jobs/{job}/log", &["get_job_log"]),
    if_match(write("post", "/projects/{project}/builds/{build}/restart", &["restart_build"])),
    if_match(write("post", "/projects/{project}/builds/{build}/abort", &["abort_build"])),
    if_match(write("delete", "/projects/{project}/builds/{build}/abort", &["abort_build"])),
    if_match(write("post", "/projects/{project}/jobs/{job}/restart", &["restart_job"])),
    if_match(write("post", "/projects/{project}/jobs/{job}/rerun", &["rerun_job"])),
    if_match(write("post", "/projects/{project}/jobs/{job}/abort", &["abort_job"])),
    if_match(write("delete", "/projects/{project}/jobs/{job}/abort", &["abort_job"])),
    on(Door::Mcp, if_match(write("post", "/mcp/projects/{project}/builds/{build}/restart", &["restart_build"]))),
    on(Door::Mcp, if_match(write("delete", "/mcp/projects/{project}/builds/{build}/abort", &["abort_build"]))),
    on(Door::Mcp, if_match(write("post", "/mcp/projects/{project}/jobs/{job}/restart", &["restart_job"]))),
    on(Door::Mcp, if_match(write("post", "/mcp/projects/{project}/jobs/{job}/rerun", &["rerun_job"]))),
    on(Door::Mcp, if_match(write("delete", "/mcp/projects/{project}/jobs/{job}/abort", &["abort_job"]))),
    on(Door::Runner, write("post", "/runner/claim", &["claim_job"])),
    on(Door::Runner, write("post", "/runner/jobs/{job}/heartbeat", &["heartbeat"])),
    on(Door::Runner, write("post", "/runner/jobs/{job}/finish", &["finish_job"])),
    route("post", "/runner/jobs/{job}/log", Door::Runner, Access::Data, &["append_job_log"]),
    output(on(Door::Runner, write("post", "/runner/jobs/{job}/pipeline", &["expand_jobs"]))),
    admin_read("/tokens"),
    write("post", "/tokens", &["issue_token"]),
    write("delete", "/tokens/{id}", &["revoke_token"]),
    admin_read("/audit"),
    admin_read("/audit/export"),
    admin_read("/state/digest"),
    admin_read("/cluster"),
    read("/events", &[]),
    read("/whoami", &[]),
];

/// The refusals of one domain operation (a command's `op`, or a read by its MCP tool's name),
/// as (status, code): what `decide` and the domain's reads can answer, authorization
/// included, plane admission not (that is the door's). The one seam between the domain's
/// refusals and the document.
pub fn domain_refusals(op: &str) -> Vec<(u16, &'static str)> {
    const CHANGE: (u16, &str) = (403, "trigger_not_allowed");
    const ADMIN: (u16, &str) = (403, "admin_required");
    const TOO_LONG: (u16, &str) = (422, bounds::FIELD_TOO_LONG);
    const PROJECT: (u16, &str) = (404, "project_not_found");
    const LOOKUP: [(u16, &str); 4] = [
        (404, "watch_not_found"),
        (400, "ambiguous_to_uri"),
        (400, "watch_keys_conflict"),
        (400, "watch_key_required"),
    ];
    const PIPELINE: [(u16, &str); 2] = [(422, "invalid_pipeline"), (422, "too_many_jobs")];
    const STALE: (u16, &str) = (412, "precondition_failed");
    const COLD: (u16, &str) = (500, "history_unreadable");
    const RETRY: [(u16, &str); 6] = [
        (404, "job_not_found"),
        (409, "create_jobs_not_restartable"),
        (409, "job_superseded"),
        (409, "build_aborted"),
        (409, "job_not_terminal"),
        (409, "descendant_running"),
    ];
    const LEASE: [(u16, &str); 2] = [(404, "job_not_found"), (409, "stale_lease")];
    match op {
        "create_project" => vec![
            CHANGE,
            ADMIN,
            (409, "project_exists"),
            (422, "invalid_project_id"),
            (422, "invalid_name"),
            TOO_LONG,
        ],
        "update_project" => [
            &[
                CHANGE,
                ADMIN,
                PROJECT,
                (422, "nothing_to_change"),
                (422, "invalid_name"),
                TOO_LONG,
            ][..],
            &PIPELINE,
        ]
        .concat(),
        "issue_token" => vec![
            CHANGE,
            ADMIN,
            (409, "token_exists"),
            (422, "invalid_description"),
            (422, "invalid_expires_at"),
            (422, "unknown_project"),
            TOO_LONG,
        ],
        "revoke_token" => vec![
            CHANGE,
            ADMIN,
            (404, "token_not_found"),
            (409, "token_already_revoked"),
            (409, "last_admin_token"),
        ],
        "create_watch" => [
            &[
                CHANGE,
                PROJECT,
                (409, "to_uri_taken"),
                (422, "invalid_source"),
                (422, "invalid_to_uri"),
                (422, "invalid_interval"),
                (422, "invalid_reason"),
                (422, "invalid_instruction"),
                TOO_LONG,
            ][..],
            &PIPELINE,
        ]
        .concat(),
        "update_watch" => [
            &[
                CHANGE,
                STALE,
                (422, "nothing_to_change"),
                (422, "invalid_interval"),
                (422, "invalid_reason"),
                (422, "invalid_instruction"),
                TOO_LONG,
            ][..],
            &LOOKUP,
            &PIPELINE,
        ]
        .concat(),
        "delete_watch" => [&[CHANGE, STALE, TOO_LONG][..], &LOOKUP].concat(),
        "trigger_watch" => [&[CHANGE, TOO_LONG][..], &LOOKUP].concat(),
        "trigger_build" => [
            &[CHANGE, PROJECT, (422, "no_pipeline"), TOO_LONG][..],
            &PIPELINE,
        ]
        .concat(),
        "restart_build" | "abort_build" => vec![
            CHANGE,
            PROJECT,
            (404, "build_not_found"),
            STALE,
            TOO_LONG,
            COLD,
        ],
        "restart_job" | "rerun_job" => {
            [&[CHANGE, PROJECT, STALE, TOO_LONG, COLD][..], &RETRY].concat()
        }
        "abort_job" => vec![
            CHANGE,
            PROJECT,
            (404, "job_not_found"),
            STALE,
            TOO_LONG,
            COLD,
        ],
        "claim_job" => vec![TOO_LONG],
        "heartbeat" => LEASE.to_vec(),
        "finish_job" => [&[(422, "invalid_state"), TOO_LONG][..], &LEASE].concat(),
        "expand_jobs" => [
            &[(409, "not_create_jobs"), (404, "build_not_found")][..],
            &LEASE,
        ]
        .concat(),
        "append_job_log" => [&[(410, "log_pruned")][..], &LEASE].concat(),
        "list_watches" | "get_watch" => LOOKUP.to_vec(),
        "get_project" => vec![PROJECT],
        "list_builds" => vec![PROJECT, COLD],
        "get_build" => vec![PROJECT, (404, "build_not_found"), COLD],
        "get_job" => vec![PROJECT, (404, "job_not_found"), COLD],
        "get_job_log" => vec![PROJECT, (404, "job_not_found"), (410, "log_pruned"), COLD],
        _ => Vec::new(),
    }
}

/// The refusals of the watch lookup a route cannot meet, given how it names the watch.
fn unreachable_lookups(lookup: Lookup) -> &'static [&'static str] {
    match lookup {
        // An id settles which watch is meant; the key is never missing.
        Lookup::Id => &["ambiguous_to_uri", "watch_key_required"],
        // Without an id, the two keys cannot disagree.
        Lookup::Uri => &["watch_keys_conflict"],
        // Without a key there is a page, not a watch to find.
        Lookup::Listing => &["watch_keys_conflict", "watch_key_required"],
        Lookup::None => &[],
    }
}

/// What a path's id names: the parameter itself (`{build}`), or for `{id}` the collection it
/// is in (`/watches/{id}` names a watch).
fn id_noun(path: &str, param: &Value) -> String {
    let name = param["name"].as_str().unwrap_or_default();
    if name != "id" {
        return name.to_string();
    }
    let collection = path
        .split('/')
        .take_while(|segment| *segment != "{id}")
        .last()
        .unwrap_or_default();
    collection
        .strip_suffix("es")
        .filter(|c| c.ends_with("ch"))
        .or_else(|| collection.strip_suffix('s'))
        .unwrap_or(collection)
        .to_string()
}

/// Every refusal a route can answer, as (status, code), from what it does.
pub fn refusals(route: &Route, op: &Value) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = Vec::new();
    let mut add = |status: u16, code: &str| {
        if !out.iter().any(|(s, c)| *s == status && c == code) {
            out.push((status, code.to_string()));
        }
    };
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has = |location: &str| params.iter().any(|p| p["in"] == location);
    if route.door != Door::Open {
        add(401, "unauthorized");
        add(406, "not_acceptable");
        match route.door {
            Door::Rest => {
                add(403, "mcp_token_not_allowed");
                add(403, "runner_token_not_allowed");
                add(400, "invalid_header");
            }
            Door::Mcp => add(403, "mcp_token_required"),
            Door::Runner => {
                add(403, "runner_token_required");
                // A malformed runner request is judged as a change, which a runner token
                // without allow_trigger may not make.
                if route.access == Access::Write {
                    add(403, "trigger_not_allowed");
                }
            }
            Door::Open => {}
        }
    }
    match route.access {
        Access::Read if route.door != Door::Open => add(429, "rate_limited"),
        Access::AdminRead => {
            add(429, "rate_limited");
            add(403, "admin_required");
        }
        Access::Write => {
            add(429, "rate_limited");
            add(400, "invalid_idempotency_key");
            add(422, "idempotency_key_reused");
            add(503, "unavailable");
        }
        Access::Read | Access::Data => {}
    }
    if route.if_match {
        add(400, "invalid_header");
        add(412, "precondition_failed");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        add(415, "unsupported_media_type");
        if !route.output {
            add(413, "payload_too_large");
            add(400, "invalid_body");
            if content.contains_key(super::JSON) {
                add(400, "invalid_json");
                add(422, "invalid_body");
            }
        }
    }
    if has("query") {
        add(400, "invalid_query");
    }
    for p in params.iter().filter(|p| p["in"] == "path") {
        if p["schema"]["format"] == "uuid" {
            add(400, &format!("invalid_{}_id", id_noun(route.path, p)));
        }
        add(400, "invalid_path");
    }
    let unreachable = unreachable_lookups(route.lookup);
    for op in route.ops {
        for (status, code) in domain_refusals(op) {
            if !unreachable.contains(&code) {
                add(status, code);
            }
        }
    }
    out.sort();
    out
}

/// The document for a server with these rules.
pub fn document(rules: &Rules) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    mirror_aliases(&mut doc);
    limit_fields(&mut doc, rules);
    limit_params(&mut doc);
    unsigned_ranges(&mut doc);
    derive_operations(&mut doc);
    add_links(&mut doc);
    server_sent_events(&mut doc);
    doc
}

/// A `text/event-stream` answer is described event by event: each event's `data` is JSON of
/// the schema the handler names (`contentMediaType` and `contentSchema`), its `id` the seq.
fn server_sent_events(doc: &mut Value) {
    // `Last-Event-ID` is optional, never null: a value is a seq or it is refused.
    if let Some(params) = doc
        .pointer_mut("/paths/~1api~1v1~1events/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "Last-Event-ID") {
            p["required"] = json!(false);
            p["schema"] = json!({"type": "string", "pattern": "^[0-9]{1,19}$"});
        }
    }
    let Some(content) =
        doc.pointer_mut("/paths/~1api~1v1~1events/get/responses/200/content/text~1event-stream")
    else {
        return;
    };
    let Some(summary) = content.get("schema").cloned() else {
        return;
    };
    content["schema"] = json!({
        "type": "object",
        "required": ["id", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The commit's seq: send it back as Last-Event-ID to resume after it."},
            "event": {"type": "string", "description": "Not sent: every event is a `message`."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": summary,
            },
        },
    });
}

/// How the answer of one operation addresses what it made: (source method, source path,
/// status, link name, target method, target path, parameters, body fields).
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
);

const PROJECT_ID: &[(&str, &str)] = &[("path.id", "$response.body#/id")];
const PROJECT_OF: &[(&str, &str)] = &[("path.project", "$response.body#/id")];
const WATCH_ID: &[(&str, &str)] = &[
    ("path.id", "$response.body#/id"),
    ("header.If-Match", "$response.header.ETag"),
];
const WATCH_URI: &[(&str, &str)] = &[
    ("query.to_uri", "$response.body#/to_uri"),
    ("query.project", "$response.body#/project"),
];
const BUILD: &[(&str, &str)] = &[
    ("path.project", "$request.path.project"),
    ("path.build", "$response.body#/id"),
];
/// The first job after Create Jobs, in a build of an inline pipeline.
const JOB: &[(&str, &str)] = &[
    ("path.project", "$request.path.project"),
    ("path.job", "$response.body#/jobs/1/id"),
];

const CLAIMED: &[(&str, &str)] = &[("path.job", "$response.body#/job/id")];
const CLAIMED_LOG: &[(&str, &str)] = &[
    ("path.job", "$response.body#/job/id"),
    ("query.lease_id", "$response.body#/lease_id"),
];
const LEASE: &[(&str, &str)] = &[("lease_id", "$response.body#/lease_id")];

#[rustfmt::skip]
const LINKS: &[Link] = &[
    ("post", "/projects", "201", "GetProject", "get", "/projects/{id}", PROJECT_ID, &[]),
    ("post", "/projects", "201", "UpdateProject", "patch", "/projects/{id}", PROJECT_ID, &[]),
    ("post", "/projects", "201", "ListBuilds", "get", "/projects/{project}/builds", PROJECT_OF, &[]),
    ("post", "/projects", "201", "TriggerBuild", "post", "/projects/{project}/builds", PROJECT_OF, &[]),
    ("post", "/projects", "201", "CreateWatch", "post", "/watches", &[], &[("project", "$response.body#/id")]),
    ("post", "/watches", "201", "GetWatch", "get", "/watches/{id}", &[("path.id", "$response.body#/id")], &[]),
    ("post", "/watches", "201", "UpdateWatch", "patch", "/watches/{id}", WATCH_ID, &[]),
    ("post", "/watches", "201", "DeleteWatch", "delete", "/watches/{id}", WATCH_ID, &[]),
    ("post", "/watches", "201", "TriggerWatch", "post", "/watches/{id}/trigger", &[("path.id", "$response.body#/id")], &[]),
    ("post", "/watches", "201", "LookUpWatch", "get", "/watches", WATCH_URI, &[]),
    ("post", "/watches", "201", "UpdateWatchByUri", "patch", "/watches", WATCH_URI, &[]),
    ("post", "/watches", "201", "DeleteWatchByUri", "delete", "/watches", WATCH_URI, &[]),
    ("post", "/watches", "201", "TriggerWatchByUri", "post", "/watches/trigger", WATCH_URI, &[]),
    ("post", "/projects/{project}/builds", "201", "GetBuild", "get", "/projects/{project}/builds/{build}", BUILD, &[]),
    ("post", "/projects/{project}/builds", "201", "RestartBuild", "post", "/projects/{project}/builds/{build}/restart", BUILD, &[]),
    ("post", "/projects/{project}/builds", "201", "AbortBuild", "post", "/projects/{project}/builds/{build}/abort", BUILD, &[]),
    ("post", "/projects/{project}/builds", "201", "GetJob", "get", "/projects/{project}/jobs/{job}", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "GetJobLog", "get", "/projects/{project}/jobs/{job}/log", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "RestartJob", "post", "/projects/{project}/jobs/{job}/restart", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "RerunJob", "post", "/projects/{project}/jobs/{job}/rerun", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "AbortJob", "post", "/projects/{project}/jobs/{job}/abort", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "McpRestartBuild", "post", "/mcp/projects/{project}/builds/{build}/restart", BUILD, &[]),
    ("post", "/projects/{project}/builds", "201", "McpAbortBuild", "delete", "/mcp/projects/{project}/builds/{build}/abort", BUILD, &[]),
    ("post", "/projects/{project}/builds", "201", "McpRestartJob", "post", "/mcp/projects/{project}/jobs/{job}/restart", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "McpRerunJob", "post", "/mcp/projects/{project}/jobs/{job}/rerun", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "McpAbortJob", "delete", "/mcp/projects/{project}/jobs/{job}/abort", JOB, &[]),
    ("post", "/projects/{project}/builds", "201", "Claim", "post", "/runner/claim", &[], &[]),
    ("post", "/projects/{project}/builds/{build}/restart", "201", "GetBuild", "get", "/projects/{project}/builds/{build}", BUILD, &[]),
    ("post", "/runner/claim", "200", "Heartbeat", "post", "/runner/jobs/{job}/heartbeat", CLAIMED, LEASE),
    ("post", "/runner/claim", "200", "Finish", "post", "/runner/jobs/{job}/finish", CLAIMED, LEASE),
    ("post", "/runner/claim", "200", "AppendLog", "post", "/runner/jobs/{job}/log", CLAIMED_LOG, &[]),
    ("post", "/runner/claim", "200", "UploadPipeline", "post", "/runner/jobs/{job}/pipeline", CLAIMED_LOG, &[]),
    ("post", "/tokens", "201", "RevokeToken", "delete", "/tokens/{id}", &[("path.id", "$response.body#/id")], &[]),
];

/// OpenAPI links from each operation that makes something to the operations that address it,
/// so a client (or a stateful test) can follow them.
fn add_links(doc: &mut Value) {
    for (from, source, status, name, to, target, params, body) in LINKS {
        let Some(id) = doc["paths"][format!("/api/v1{target}")][to]["operationId"]
            .as_str()
            .map(str::to_string)
        else {
            continue;
        };
        let mut link = json!({"operationId": id});
        if !params.is_empty() {
            link["parameters"] = params
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
        }
        if !body.is_empty() {
            link["requestBody"] = body
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
        }
        let response = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(format!("/api/v1{source}")))
            .and_then(|item| item.get_mut(from))
            .and_then(|op| op.get_mut("responses"))
            .and_then(|r| r.get_mut(status));
        if let Some(response) = response {
            response["links"][name] = link;
        }
    }
}

/// Aborts answer DELETE as well as POST, and the MCP namespace serves five of the build verbs
/// with the same handlers (aborts as DELETE there): document them by mirroring the plain
/// operations.
fn mirror_aliases(doc: &mut Value) {
    let copies: [(&str, &str, &str, &str); 7] = [
        (
            "/projects/{project}/builds/{build}/abort",
            "post",
            "",
            "delete",
        ),
        ("/projects/{project}/jobs/{job}/abort", "post", "", "delete"),
        (
            "/projects/{project}/builds/{build}/restart",
            "post",
            "/mcp",
            "post",
        ),
        (
            "/projects/{project}/builds/{build}/abort",
            "post",
            "/mcp",
            "delete",
        ),
        (
            "/projects/{project}/jobs/{job}/restart",
            "post",
            "/mcp",
            "post",
        ),
        (
            "/projects/{project}/jobs/{job}/rerun",
            "post",
            "/mcp",
            "post",
        ),
        (
            "/projects/{project}/jobs/{job}/abort",
            "post",
            "/mcp",
            "delete",
        ),
    ];
    for (path, from, prefix, to) in copies {
        let Some(mut op) = doc["paths"][format!("/api/v1{path}")].get(from).cloned() else {
            continue;
        };
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        if prefix.is_empty() {
            op["operationId"] = json!(format!("{id}_{to}"));
        } else {
            op["operationId"] = json!(format!("mcp_{id}"));
            op["tags"] = json!(["mcp"]);
            op["description"] = json!(
                "MCP tokens only (kind mcp); spends the token's trigger bucket; audited with plane mcp."
            );
        }
        if let Some(paths) = doc["paths"].as_object_mut() {
            let item = paths
                .entry(format!("/api/v1{prefix}{path}"))
                .or_insert_with(|| json!({}));
            item[to] = op;
        }
    }
}

/// The regular expression of a project id (`[a-z0-9-]`, 1 to `bounds::PROJECT_ID`).
pub fn project_id_pattern() -> String {
    format!("^[a-z0-9-]{{1,{}}}$", bounds::PROJECT_ID)
}

/// A job name: `/`-separated segments of `[a-z0-9_-]` (`domain::pipeline::valid_name`).
pub const JOB_NAME_PATTERN: &str = "^[a-z0-9_-]+(/[a-z0-9_-]+)*$";

/// A command that is not blank: at least one character that is not white space as Rust's
/// `str::trim` sees it (Unicode `White_Space`).
pub const NOT_BLANK_PATTERN: &str = "[^\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// The longest interval a watch may have, in minutes (one year), as `domain::watch` checks it.
pub const MAX_INTERVAL_MINUTES: f64 = 525_600.0;

/// The smallest interval in minutes that `domain::watch` accepts on a server with this floor:
/// it refuses `minutes * 60 < floor`, so the bound is the first float that passes.
pub fn min_interval_minutes(floor_secs: u64) -> f64 {
    let floor = floor_secs as f64;
    let mut m = floor / 60.0;
    while m * 60.0 < floor {
        m = f64::from_bits(m.to_bits() + 1);
    }
    m
}

/// A character that is neither a control character nor white space (nor any of `$extra`): what
/// a URL may end with (Unicode `White_Space`, as Rust's `str::trim` sees it).
macro_rules! not_space {
    ($extra:literal) => {
        concat!(
            "[^",
            $extra,
            "\\x00-\\x20\\x7f\\x85\\xa0\\u1680\\u2000-\\u200a",
            "\\u2028\\u2029\\u202f\\u205f\\u3000]"
        )
    };
}

/// A watch's `source` and `to_uri`: an absolute URL as reeve reads one (the WHATWG URL
/// standard, which takes spaces in a path, so not RFC 3986's `format: uri`): a scheme, `:`,
/// then `//host/...`, a path or nothing; no control characters, no white space at either end
/// (`domain::watch::validate_uri`). It leaves out some URLs reeve takes
/// (a port, user info) so that what it admits is what reeve accepts; a host of a special
/// scheme (http, https, ws, wss, ftp, file) must also be a host name or an IPv4 address.
pub const URI_PATTERN: &str = concat!(
    "^[A-Za-z][A-Za-z0-9+.-]*:(",
    "//[A-Za-z0-9.-]*(/([^\\x00-\\x1f\\x7f]*",
    not_space!(""),
    ")?)?",
    "|",
    not_space!("/"),
    "([^\\x00-\\x1f\\x7f]*",
    not_space!(""),
    ")?",
    "|/(",
    not_space!("/"),
    "([^\\x00-\\x1f\\x7f]*",
    not_space!(""),
    ")?)?",
    ")?$",
);

/// The visible-ASCII form `Idempotency-Key` must have.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

/// `If-Match` as reeve reads it: `*`, or one of its ETags (`"<version>"`, weak or bare).
pub const IF_MATCH_PATTERN: &str = "^(\\*|(W/)?\"[0-9]+\"|[0-9]+)$";

/// Merges `extra` into the schema of `property` of component `schema` (or of the component
/// itself when `property` is empty).
fn constrain(doc: &mut Value, schema: &str, property: &str, extra: Value) {
    let target = if property.is_empty() {
        &mut doc["components"]["schemas"][schema]
    } else {
        &mut doc["components"]["schemas"][schema]["properties"][property]
    };
    merge(target, extra);
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        for (k, v) in e {
            t.insert(k, v);
        }
    }
}

/// A string of at most `max` bytes; `null` too when the field is optional.
fn text(min: usize, max: usize) -> Value {
    json!({"minLength": min, "maxLength": max})
}

fn env() -> Value {
    json!({
        "maxProperties": bounds::ENV_VARS,
        "propertyNames": {"maxLength": bounds::ENV_KEY},
        "additionalProperties": {"type": "string", "maxLength": bounds::ENV_VALUE},
    })
}

fn interval(rules: &Rules) -> Value {
    let mut v = json!({"maximum": MAX_INTERVAL_MINUTES});
    if rules.watch_interval_floor_secs == 0 {
        v["exclusiveMinimum"] = json!(0);
    } else {
        v["minimum"] = json!(min_interval_minutes(rules.watch_interval_floor_secs));
    }
    v
}

/// Every limit the domain puts on what a body may carry, on the fields that carry it.
fn limit_fields(doc: &mut Value, rules: &Rules) {
    let project_id = json!({
        "minLength": 1,
        "maxLength": bounds::PROJECT_ID,
        "pattern": project_id_pattern(),
    });
    let uri = json!({"minLength": 2, "maxLength": bounds::URI, "pattern": URI_PATTERN});
    let job_name =
        json!({"minLength": 1, "maxLength": bounds::JOB_NAME, "pattern": JOB_NAME_PATTERN});
    let command = json!({"minLength": 1, "maxLength": bounds::RUN, "pattern": NOT_BLANK_PATTERN});
    let date_time = json!({"format": "date-time"});
    let c = &mut *doc;
    constrain(c, "CreateProjectBody", "id", project_id.clone());
    constrain(
        c,
        "CreateProjectBody",
        "name",
        text(0, bounds::PROJECT_NAME),
    );
    constrain(
        c,
        "UpdateProjectBody",
        "name",
        text(1, bounds::PROJECT_NAME),
    );
    constrain(c, "UpdateProjectBody", "", json!({"minProperties": 1}));
    constrain(c, "CreateWatchBody", "project", project_id.clone());
    constrain(c, "CreateWatchBody", "source", uri.clone());
    constrain(c, "CreateWatchBody", "to_uri", uri);
    constrain(c, "CreateWatchBody", "watch_interval", interval(rules));
    constrain(c, "CreateWatchBody", "reason", text(0, bounds::REASON));
    constrain(
        c,
        "CreateWatchBody",
        "instruction",
        text(0, bounds::INSTRUCTION),
    );
    constrain(c, "UpdateWatchBody", "watch_interval", interval(rules));
    constrain(c, "UpdateWatchBody", "reason", text(0, bounds::REASON));
    constrain(
        c,
        "UpdateWatchBody",
        "instruction",
        text(0, bounds::INSTRUCTION),
    );
    constrain(c, "UpdateWatchBody", "", json!({"minProperties": 1}));
    constrain(c, "TriggerBody", "env", env());
    constrain(c, "JobBody", "name", job_name.clone());
    constrain(c, "JobBody", "run", command.clone());
    constrain(c, "JobBody", "env", env());
    constrain(
        c,
        "CreateTokenBody",
        "description",
        text(0, bounds::TOKEN_DESCRIPTION),
    );
    constrain(c, "CreateTokenBody", "expires_at", date_time.clone());
    constrain(
        c,
        "CreateTokenBody",
        "enabled_projects",
        json!({
            "maxProperties": bounds::TOKEN_PROJECTS,
            "propertyNames": project_id,
            "additionalProperties": {"type": ["string", "null"], "format": "date-time"},
        }),
    );
    constrain(
        c,
        "ClaimBody",
        "labels",
        json!({"maxItems": bounds::RUNNER_LABELS, "items": {"type": "string", "maxLength": bounds::RUNNER_LABEL}}),
    );
    constrain(
        c,
        "ClaimBody",
        "wait_seconds",
        json!({"minimum": 0, "maximum": runner::MAX_WAIT_SECS}),
    );
    constrain(c, "FinishBody", "message", text(0, bounds::JOB_MESSAGE));
    // The states a job can end in; the others are not a runner's to report.
    doc["components"]["schemas"]["FinishBody"]["properties"]["state"] = json!({
        "type": "string",
        "enum": ["finished", "failure", "error", "killed"],
    });
    // A dependency: a job's name, or the name with the parent states it accepts (at least one).
    let deps = &mut doc["components"]["schemas"]["DependencyBody"]["oneOf"];
    merge(&mut deps[0], job_name.clone());
    merge(&mut deps[1]["properties"]["job"], job_name);
    merge(&mut deps[1]["properties"]["on"], json!({"minItems": 1}));
    // Exactly one of `jobs` and `generate`; the other absent or null.
    let jobs = json!({
        "type": "array",
        "items": {"$ref": "#/components/schemas/JobBody"},
        "minItems": 1,
        "maxItems": rules.max_jobs,
    });
    doc["components"]["schemas"]["PipelineBody"] = json!({
        "description": doc["components"]["schemas"]["PipelineBody"]["description"],
        "oneOf": [
            {
                "type": "object",
                "required": ["jobs"],
                "properties": {"jobs": jobs, "generate": {"type": "null"}},
                "additionalProperties": false,
            },
            {
                "type": "object",
                "required": ["generate"],
                "properties": {"generate": merge_into(json!({"type": "string"}), command), "jobs": {"type": "null"}},
                "additionalProperties": false,
            },
        ],
    });
}

/// Every plane, for `?plane=`.
const PLANES: [Plane; 6] = [
    Plane::Rest,
    Plane::Mcp,
    Plane::Cli,
    Plane::Scheduler,
    Plane::Runner,
    Plane::System,
];

/// The largest page each listing gives, as its handler checks it.
const PAGES: &[(&str, usize)] = &[
    ("/api/v1/watches", watches::MAX_LIMIT),
    ("/api/v1/projects/{project}/builds", builds::MAX_LIMIT),
    ("/api/v1/audit", audit::MAX_LIMIT),
];

/// The limits of query and path parameters, by name: a parameter means the same wherever it
/// appears.
fn limit_params(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params.iter_mut() {
                let name = p["name"].as_str().unwrap_or_default();
                let project = name == "project"
                    || (name == "id" && path.starts_with("/api/v1/projects/{id}"));
                let extra = match name {
                    _ if project => json!({
                        "minLength": 1,
                        "maxLength": bounds::PROJECT_ID,
                        "pattern": project_id_pattern(),
                    }),
                    "to_uri" => json!({"minLength": 1, "maxLength": bounds::URI}),
                    "limit" => {
                        let max = PAGES
                            .iter()
                            .find(|(p, _)| p == path)
                            .map_or(json!(null), |(_, max)| json!(max));
                        json!({"minimum": 1, "maximum": max})
                    }
                    "plane" => json!({"enum": PLANES.map(Plane::as_str)}),
                    "outcome" => json!({"enum": ["accepted", "rejected"]}),
                    _ => continue,
                };
                merge(&mut p["schema"], extra);
            }
        }
    }
}

fn merge_into(mut base: Value, extra: Value) -> Value {
    merge(&mut base, extra);
    base
}

/// utoipa writes Rust's unsigned integers as `int64`/`int32` with `minimum: 0` (`usize` without
/// a format); a JSON Schema reader then takes the signed type's maximum for the limit, or none,
/// and neither is what the server accepts. Give them their real range.
fn unsigned_ranges(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let unsigned = o.get("minimum").and_then(Value::as_u64) == Some(0);
            let integer = o.get("type").is_some_and(|t| {
                t == "integer" || t.as_array().is_some_and(|a| a.contains(&json!("integer")))
            });
            let max = match o.get("format").and_then(Value::as_str) {
                Some("int64") if unsigned => Some(json!(u64::MAX)),
                Some("int32") if unsigned => Some(json!(u32::MAX)),
                // `usize` comes without a format.
                None if unsigned && integer => Some(json!(usize::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                o.remove("format");
                o.entry("maximum").or_insert(max);
            }
            o.values_mut().for_each(unsigned_ranges);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

/// The header parameters a route reads because of what it does.
fn door_headers(route: &Route) -> Vec<Value> {
    let mut out = Vec::new();
    if route.door == Door::Rest {
        out.push(json!({
            "name": "Reeve-Plane",
            "in": "header",
            "required": false,
            "description": "`cli` (what the reeve command line sends) or `web` (what the console sends) admits and audits the request on that plane; any other value is 400 `invalid_header`.",
            "schema": {"type": "string", "enum": ["cli", "web"]},
        }));
    }
    if route.access == Access::Write {
        out.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "A retry with the same key gets the first answer and changes nothing twice; the same key with a different request is 422 `idempotency_key_reused`.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": bounds::IDEMPOTENCY_KEY,
                "pattern": IDEMPOTENCY_KEY_PATTERN,
            },
        }));
    }
    if route.if_match {
        out.push(json!({
            "name": "If-Match",
            "in": "header",
            "required": false,
            "description": "The ETag (version) you last saw: the change is made only if it is still current (else 412 `precondition_failed`); `*` matches any.",
            "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
        }));
    }
    out
}

/// One error response: the problem document, its status and exactly these codes.
fn problem_response(status: u16, codes: &[&str]) -> Value {
    let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    let mut r = json!({
        "description": listed.join(", "),
        "content": {
            super::problem::CONTENT_TYPE: {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ProblemDoc"},
                        {"type": "object", "properties": {
                            "status": {"const": status},
                            "code": {"enum": codes},
                        }},
                    ],
                },
            },
        },
    });
    let header =
        |description: &str, schema: Value| json!({"description": description, "schema": schema});
    match status {
        401 => {
            r["headers"] = json!({"WWW-Authenticate": header("`Bearer realm=\"reeve\"`", json!({"type": "string"}))});
        }
        429 => {
            r["headers"] = json!({
                "Retry-After": header("Seconds until the bucket lets a request through", json!({"type": "integer", "minimum": 1})),
                "RateLimit-Limit": header("Requests a minute this bucket allows", json!({"type": "integer", "minimum": 0})),
                "RateLimit-Remaining": header("Always 0 here", json!({"type": "integer", "minimum": 0})),
                "RateLimit-Reset": header("Seconds until the next request may pass", json!({"type": "integer", "minimum": 0})),
            });
        }
        _ => {}
    }
    r
}

/// Gives every operation its door's header parameters and its error responses.
fn derive_operations(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(route) = ROUTES
                .iter()
                .find(|r| r.method == method && format!("/api/v1{}", r.path) == *path)
            else {
                continue;
            };
            // `api::parse_body` reads an empty body as `{}`: where that is a valid body, the
            // body is optional.
            let body = op["requestBody"]["content"][super::JSON]["schema"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .map(|name| &schemas[name]);
            if body.is_some_and(|b| b.get("required").is_none() && b.get("minProperties").is_none())
            {
                op["requestBody"]["required"] = json!(false);
            }
            // Raw bytes, limited as a whole by the body limit (413).
            if let Some(raw) = op
                .get_mut("requestBody")
                .and_then(|b| b.get_mut("content"))
                .and_then(|c| c.get_mut(super::BYTES))
            {
                raw["schema"] = json!({"type": "string", "format": "binary"});
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let mut params: Vec<Value> = params;
            params.extend(door_headers(route));
            if !params.is_empty() {
                op["parameters"] = Value::Array(params);
            }
            let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
            for (status, code) in refusals(route, op) {
                by_status.entry(status).or_default().push(code);
            }
            let responses = op["responses"].as_object_mut();
            let Some(responses) = responses else {
                continue;
            };
            responses.retain(|status, _| !status.starts_with('4') && !status.starts_with('5'));
            for (status, codes) in by_status {
                let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
                responses.insert(status.to_string(), problem_response(status, &codes));
            }
            if route.door != Door::Open {
                op["security"] = json!([{"bearer": []}]);
            }
            // Handlers in different files share names (`list`, `update`): the tag tells them
            // apart, and operation ids must be unique.
            let tag = op["tags"][0].as_str().unwrap_or("reeve").to_string();
            let id = op["operationId"].as_str().unwrap_or(method).to_string();
            if !id.starts_with(&format!("{tag}_")) {
                op["operationId"] = json!(format!("{tag}_{id}"));
            }
        }
    }
}

#[cfg(test)]
mod refusals_are_the_domains {
    use std::collections::BTreeSet;

    use super::{ROUTES, domain_refusals};
    use crate::domain::{
        AccessRefused, Aggregate, BuildRefused, InputRefused, ProjectRefused, RunnerRefused,
        TokenRefused, WatchRefused,
    };

    /// Refusals only commands reeve submits to itself can meet (a scheduled fire, a failing
    /// watch's pause, a retention pass, an idle claim's 204), or only other doors' tokens:
    /// no REST operation answers with them.
    const NOT_REST: &[&str] = &[
        "watch_paused",
        "watch_not_due",
        "watch_not_failing",
        "invalid_cutoff",
        "nothing_to_claim",
        "system_only",
        "mcp_read_only",
        "not_an_agent_command",
        "mcp_token_required",
        "runner_token_required",
        // The door's own checks answer these before the domain sees the request.
        "unauthorized",
        "mcp_token_not_allowed",
        "runner_token_not_allowed",
        "idempotency_key_reused",
    ];

    #[test]
    fn every_documented_refusal_is_a_variant_and_every_variant_is_documented() {
        let declared: BTreeSet<(u16, &str)> = [
            AccessRefused::CODES,
            InputRefused::CODES,
            ProjectRefused::CODES,
            TokenRefused::CODES,
            WatchRefused::CODES,
            BuildRefused::CODES,
            RunnerRefused::CODES,
        ]
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect();
        let documented: BTreeSet<(u16, &str)> = ROUTES
            .iter()
            .flat_map(|r| r.ops.iter())
            .flat_map(|op| domain_refusals(op))
            .collect();
        // Codes the domain does not declare are decided at the door before a command exists
        // (a project id too long to be one); they are the door's, documented with it.
        let door = ["invalid_project_id"];
        for (status, code) in &documented {
            assert!(
                declared.contains(&(*status, *code)) || door.contains(code),
                "{status} {code} is documented but no refusal variant carries it"
            );
        }
        for (status, code) in &declared {
            assert!(
                documented.contains(&(*status, *code)) || NOT_REST.contains(code),
                "the domain can refuse with {status} {code}, but no operation documents it"
            );
        }
        // Every aggregate's table is part of what is declared.
        for agg in [
            Aggregate::Project,
            Aggregate::Token,
            Aggregate::Watch,
            Aggregate::Build,
            Aggregate::Runner,
        ] {
            assert!(agg.refusal_codes().iter().all(|c| declared.contains(c)));
        }
    }
}
