//! `/api/v1/projects/{p}/builds` and `/jobs`: trigger, read, restart, rerun and abort. The
//! same handlers serve the MCP namespace `/api/v1/mcp/projects/{p}/...`; only the plane
//! differs, and with it who is admitted and which bucket is spent.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    AppState, Problem, etag, if_match, parse_body, read, read_as, rfc3339, submit_on, unexpected,
};
use crate::domain::{
    Accept, Build, Command, Dependency, Job, JobSpec, JobState, Pipeline, Plane, Reply,
    derived_state,
};

/// The plain routes (under `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects/{project}/builds", get(list).post(trigger))
        .route("/projects/{project}/builds/{build}", get(show))
        .route("/projects/{project}/jobs/{job}", get(show_job))
        .route("/projects/{project}/jobs/{job}/log", get(job_log))
        .merge(verbs())
        .layer(Extension(Plane::Rest))
}

/// The five verbs agents may use, under `/api/v1/mcp`.
pub fn mcp_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/projects/{project}/builds/{build}/restart",
            post(restart_build),
        )
        .route(
            "/projects/{project}/builds/{build}/abort",
            axum::routing::delete(abort_build),
        )
        .route("/projects/{project}/jobs/{job}/restart", post(restart_job))
        .route("/projects/{project}/jobs/{job}/rerun", post(rerun_job))
        .route(
            "/projects/{project}/jobs/{job}/abort",
            axum::routing::delete(abort_job),
        )
        .layer(Extension(Plane::Mcp))
}

fn verbs() -> Router<AppState> {
    Router::new()
        .route(
            "/projects/{project}/builds/{build}/restart",
            post(restart_build),
        )
        .route(
            "/projects/{project}/builds/{build}/abort",
            post(abort_build).delete(abort_build),
        )
        .route("/projects/{project}/jobs/{job}/restart", post(restart_job))
        .route("/projects/{project}/jobs/{job}/rerun", post(rerun_job))
        .route(
            "/projects/{project}/jobs/{job}/abort",
            post(abort_job).delete(abort_job),
        )
}

// ---- wire shapes ----

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct DependencyView {
    pub job: String,
    pub job_id: Uuid,
    pub on: Vec<Accept>,
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct JobView {
    pub id: Uuid,
    pub build_id: Uuid,
    pub name: String,
    pub state: JobState,
    pub run: String,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u64>,
    pub depends_on: Vec<DependencyView>,
    pub superseded_by: Option<Uuid>,
    pub cloned_from: Option<Uuid>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub version: u64,
    /// When job log retention deleted the job's output (its log then answers 410
    /// `log_pruned`); null while the output is kept.
    pub log_pruned_at: Option<String>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> JobView {
        JobView {
            id: j.id,
            build_id: j.build_id,
            name: j.name.clone(),
            state: j.state,
            run: j.run.clone(),
            env: j.env.clone(),
            timeout_seconds: j.timeout_seconds,
            depends_on: j
                .depends_on
                .iter()
                .map(|d| DependencyView {
                    job: d.job.clone(),
                    job_id: d.job_id,
                    on: d.on.clone(),
                })
                .collect(),
            superseded_by: j.superseded_by,
            cloned_from: j.cloned_from,
            created_at: rfc3339(j.created_at),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            exit_code: j.exit_code,
            message: j.message.clone(),
            version: j.version,
            log_pruned_at: j.log_pruned_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct BuildView {
    pub id: Uuid,
    pub project: String,
    pub number: u64,
    pub restart_counter: u64,
    pub state: JobState,
    /// api, mcp or watch
    pub trigger: String,
    pub watch_id: Option<Uuid>,
    /// Added to every job's environment (for a watch's build: REEVE_WATCH_*).
    pub env: BTreeMap<String, String>,
    pub restarted_from: Option<Uuid>,
    pub aborted: bool,
    pub created_at: String,
    pub created_by: String,
    pub version: u64,
    /// Every job, superseded ones included, in creation order. Absent in listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<JobView>>,
}

impl BuildView {
    pub fn new(state: JobState, b: &Build, jobs: Option<Vec<JobView>>) -> BuildView {
        BuildView {
            id: b.id,
            project: b.project.clone(),
            number: b.number,
            restart_counter: b.restart_counter,
            state,
            trigger: b.trigger.as_str().to_string(),
            watch_id: match b.trigger {
                crate::domain::Trigger::Watch(w) => Some(w),
                _ => None,
            },
            env: b.env.clone(),
            restarted_from: b.restarted_from,
            aborted: b.aborted,
            created_at: rfc3339(b.created_at),
            created_by: b.created_by.to_string(),
            version: b.version,
            jobs,
        }
    }

    /// A build with its jobs.
    pub fn with_jobs<'a>(b: &Build, jobs: impl IntoIterator<Item = &'a Job> + Clone) -> BuildView {
        let views = jobs.clone().into_iter().map(JobView::from).collect();
        BuildView::new(derived_state(jobs), b, Some(views))
    }

    /// A build with its jobs, as memory or the store has it.
    pub fn of(b: &crate::domain::ColdBuild) -> BuildView {
        BuildView::with_jobs(&b.build, b.jobs.iter())
    }
}

#[derive(Serialize, ToSchema)]
pub struct BuildList {
    pub builds: Vec<BuildView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct Aborted {
    /// The jobs this call killed (empty when there was nothing left to kill).
    pub aborted: Vec<Uuid>,
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct ClonedView {
    pub from: Uuid,
    pub to: Uuid,
    pub name: String,
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct Restarted {
    pub jobs: Vec<ClonedView>,
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct Rerun {
    pub job: JobView,
}

/// A dependency: a job name, or `{job, on}` to accept other parent states.
#[derive(Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DependencyBody {
    Name(String),
    Full {
        job: String,
        /// finished, failure, error, killed, skipped or "*"; default ["finished"].
        #[serde(default = "finished")]
        on: Vec<Accept>,
    },
}

fn finished() -> Vec<Accept> {
    vec![Accept::Finished]
}

#[derive(Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    /// `/`-separated segments of a-z, 0-9, '_' and '-'.
    pub name: String,
    /// A shell command (`sh -c`).
    pub run: String,
    #[serde(default)]
    pub depends_on: Vec<DependencyBody>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "super::whole_or_null")]
    pub timeout_seconds: Option<u64>,
}

/// Either `jobs` (the graph itself) or `generate` (a shell command, run as Create Jobs on a
/// runner, whose stdout is `{"jobs": [...]}`).
#[derive(Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    pub jobs: Option<Vec<JobBody>>,
    pub generate: Option<String>,
}

impl TryFrom<PipelineBody> for Pipeline {
    type Error = Problem;

    fn try_from(p: PipelineBody) -> Result<Pipeline, Problem> {
        let jobs = match (p.jobs, p.generate) {
            (Some(jobs), None) => jobs,
            (None, Some(command)) => return Ok(Pipeline::Generate(command)),
            _ => {
                return Err(Problem {
                    field: Some("pipeline".into()),
                    ..Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_pipeline",
                        "a pipeline has either \"jobs\" or \"generate\", exactly one of them",
                    )
                });
            }
        };
        Ok(Pipeline::Jobs(
            jobs.into_iter()
                .map(|j| JobSpec {
                    name: j.name,
                    run: j.run,
                    depends_on: j
                        .depends_on
                        .into_iter()
                        .map(|d| match d {
                            DependencyBody::Name(job) => Dependency {
                                job,
                                on: finished(),
                            },
                            DependencyBody::Full { job, on } => Dependency { job, on },
                        })
                        .collect(),
                    env: j.env,
                    timeout_seconds: j.timeout_seconds,
                })
                .collect(),
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pipeline": {"jobs": [
    {"name": "build", "run": "make"},
    {"name": "test/unit", "run": "make test", "depends_on": ["build"]},
    {"name": "notify", "run": "./notify", "depends_on": [{"job": "test/unit", "on": ["failure"]}]}
]}, "env": {"TARGET": "prod"}}))]
pub struct TriggerBody {
    /// The project's default pipeline when absent.
    pub pipeline: Option<PipelineBody>,
    /// Added to every job's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// From `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Page size, default 20.
    pub limit: Option<usize>,
}

/// The largest page `GET .../builds` gives.
pub const MAX_LIMIT: usize = 200;

// ---- helpers ----

fn parse_id(raw: &str, what: &str) -> Result<Uuid, Problem> {
    super::parse_uuid(raw).ok_or_else(|| {
        Problem::bad_request(
            &format!("invalid_{what}_id"),
            format!("{raw:?} is not a {what} id (a UUID)"),
        )
    })
}

fn build_response(status: StatusCode, view: BuildView) -> Response {
    (status, [etag(view.version)], Json(view)).into_response()
}

fn reply_build(status: StatusCode, reply: Reply, project: &str) -> Result<Response, Problem> {
    match reply {
        Reply::Build(b, jobs) => {
            // The snapshot taken when the commit was applied: a retry shows the same answer.
            let view = BuildView::with_jobs(&b, jobs.iter());
            let mut resp = build_response(status, view);
            if let Ok(loc) = format!("/api/v1/projects/{project}/builds/{}", b.id).parse() {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
            Ok(resp)
        }
        other => Err(unexpected(&other)),
    }
}

fn reply_aborted(reply: Reply) -> Result<Response, Problem> {
    match reply {
        Reply::Aborted(aborted) => Ok(Json(Aborted { aborted }).into_response()),
        other => Err(unexpected(&other)),
    }
}

// ---- reads ----

#[utoipa::path(get, path = "/api/v1/projects/{project}/builds", tag = "builds",
    params(("project" = String, Path), BuildQuery),
    responses(
        (status = 200, description = "Newest first, without jobs", body = BuildList),
    ))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    q: Result<Query<BuildQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let Query(q) = q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
        let limit = q.limit.unwrap_or(20);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let before = q
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<u64>().map_err(|_| {
                    Problem::bad_request(
                        "invalid_query",
                        "cursor must be a next_cursor from a previous page",
                    )
                })
            })
            .transpose()?;
        let (builds, more) =
            state.builds_page(app.control.store(), caller, &project, before, limit)?;
        let next_cursor = more
            .then(|| builds.last().map(|(b, _)| b.order.to_string()))
            .flatten();
        Ok(Json(BuildList {
            builds: builds
                .into_iter()
                .map(|(b, s)| BuildView::new(s, &b, None))
                .collect(),
            next_cursor,
        })
        .into_response())
    })
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/builds/{build}", tag = "builds",
    params(("project" = String, Path), ("build" = Uuid, Path)),
    responses(
        (status = 200, body = BuildView, headers(("ETag" = String))),
    ))]
pub async fn show(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let id = parse_id(&raw, "build")?;
        let b = state.find_build(app.control.store(), caller, &project, id)?;
        Ok(build_response(StatusCode::OK, BuildView::of(&b)))
    })
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/jobs/{job}", tag = "builds",
    params(("project" = String, Path), ("job" = Uuid, Path)),
    responses(
        (status = 200, body = JobView, headers(("ETag" = String))),
    ))]
pub async fn show_job(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let id = parse_id(&raw, "job")?;
        let j = state.find_job(app.control.store(), caller, &project, id)?;
        Ok((StatusCode::OK, [etag(j.version)], Json(JobView::from(&j))).into_response())
    })
}

// ---- mutations ----

#[utoipa::path(post, path = "/api/v1/projects/{project}/builds", tag = "builds",
    request_body = TriggerBody,
    params(("project" = String, Path)),
    responses(
        (status = 201, body = BuildView, headers(("Location" = String), ("ETag" = String))),
    ))]
pub async fn trigger(
    State(app): State<AppState>,
    Extension(plane): Extension<Plane>,
    headers: HeaderMap,
    Path(project): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_body::<TriggerBody>(&headers, body).and_then(|b| {
        Ok(Command::TriggerBuild {
            project: project.clone(),
            pipeline: b.pipeline.map(Pipeline::try_from).transpose()?,
            env: b.env,
        })
    });
    let done = submit_on(&app, &headers, plane, "trigger_build", false, command).await?;
    reply_build(StatusCode::CREATED, done.reply, &project)
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/builds/{build}/restart", tag = "builds",
    params(("project" = String, Path), ("build" = Uuid, Path)),
    responses(
        (status = 201, description = "The new generation", body = BuildView),
    ))]
pub async fn restart_build(
    State(app): State<AppState>,
    Extension(plane): Extension<Plane>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command = parse_id(&raw, "build").and_then(|build| {
        Ok(Command::RestartBuild {
            project: project.clone(),
            build,
            if_match: if_match(&headers)?,
        })
    });
    let done = submit_on(&app, &headers, plane, "restart_build", false, command).await?;
    reply_build(StatusCode::CREATED, done.reply, &project)
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/builds/{build}/abort", tag = "builds",
    params(("project" = String, Path), ("build" = Uuid, Path)),
    responses(
        (status = 200, description = "Queued and running jobs killed (also DELETE)", body = Aborted),
    ))]
pub async fn abort_build(
    State(app): State<AppState>,
    Extension(plane): Extension<Plane>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command = parse_id(&raw, "build").and_then(|build| {
        Ok(Command::AbortBuild {
            project,
            build,
            if_match: if_match(&headers)?,
        })
    });
    let done = submit_on(&app, &headers, plane, "abort_build", false, command).await?;
    reply_aborted(done.reply)
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/jobs/{job}/restart", tag = "builds",
    params(("project" = String, Path), ("job" = Uuid, Path)),
    responses(
        (status = 201, description = "The job and its descendants, cloned", body = Restarted),
    ))]
pub async fn restart_job(
    State(app): State<AppState>,
    Extension(plane): Extension<Plane>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command = parse_id(&raw, "job").and_then(|job| {
        Ok(Command::RestartJob {
            project,
            job,
            if_match: if_match(&headers)?,
        })
    });
    let done = submit_on(&app, &headers, plane, "restart_job", false, command).await?;
    match done.reply {
        Reply::Cloned(c) => Ok((
            StatusCode::CREATED,
            Json(Restarted {
                jobs: c
                    .into_iter()
                    .map(|c| ClonedView {
                        from: c.from,
                        to: c.to,
                        name: c.name,
                    })
                    .collect(),
            }),
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/jobs/{job}/rerun", tag = "builds",
    params(("project" = String, Path), ("job" = Uuid, Path)),
    responses(
        (status = 201, description = "The clone; descendants now depend on it", body = Rerun),
    ))]
pub async fn rerun_job(
    State(app): State<AppState>,
    Extension(plane): Extension<Plane>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command = parse_id(&raw, "job").and_then(|job| {
        Ok(Command::RerunJob {
            project,
            job,
            if_match: if_match(&headers)?,
        })
    });
    let done = submit_on(&app, &headers, plane, "rerun_job", false, command).await?;
    match done.reply {
        Reply::Job(j) => Ok((
            StatusCode::CREATED,
            Json(Rerun {
                job: JobView::from(j.as_ref()),
            }),
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/jobs/{job}/abort", tag = "builds",
    params(("project" = String, Path), ("job" = Uuid, Path)),
    responses(
        (status = 200, description = "Killed if queued or running; empty if already ended (also DELETE)", body = Aborted),
    ))]
pub async fn abort_job(
    State(app): State<AppState>,
    Extension(plane): Extension<Plane>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command = parse_id(&raw, "job").and_then(|job| {
        Ok(Command::AbortJob {
            project,
            job,
            if_match: if_match(&headers)?,
        })
    });
    let done = submit_on(&app, &headers, plane, "abort_job", false, command).await?;
    reply_aborted(done.reply)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Start at this byte.
    pub offset: Option<u64>,
    /// Only the last N lines (of what is there now).
    pub tail_lines: Option<usize>,
    /// Keep the response open and stream output as it comes, until the job ends.
    pub follow: Option<bool>,
}

/// The last `n` lines of `text`.
fn tail(text: &[u8], n: usize) -> &[u8] {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut cut = 0;
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                cut = i + 1;
                break;
            }
        }
    }
    if n == 0 {
        &text[text.len()..]
    } else {
        &text[cut..]
    }
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/jobs/{job}/log", tag = "builds",
    params(("project" = String, Path), ("job" = Uuid, Path), LogQuery),
    responses(
        (status = 200, description = "The job's output as text; with follow=true, streamed until the job ends", content_type = "text/plain"),
    ))]
pub async fn job_log(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((project, raw)): Path<(String, String)>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let (id, q) = read_as(&app, &headers, super::TEXT, |state, caller| {
        let Query(q) = q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
        let id = parse_id(&raw, "job")?;
        crate::domain::log_readable(&state.find_job(app.control.store(), caller, &project, id)?)?;
        Ok((id, q))
    })?;
    let unreadable =
        |e: crate::log::LogError| Problem::internal(format!("the log could not be read: {e}"));
    let offset = q.offset.unwrap_or(0);
    let all = app
        .control
        .store()
        .read_log(id, offset)
        .map_err(unreadable)?;
    let start = offset + all.len() as u64;
    let text = match q.tail_lines {
        Some(n) => tail(&all, n).to_vec(),
        None => all,
    };
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow.unwrap_or(false) {
        return Ok((plain, text).into_response());
    }
    // Follow: what is there now, then whatever arrives, until the job has ended and its
    // output is drained.
    let first =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) });
    let rest = futures_util::stream::unfold((app, start), move |(app, offset)| async move {
        let mut changes = app.control.subscribe();
        loop {
            let chunk = app.control.store().read_log(id, offset).unwrap_or_default();
            let ended = app
                .control
                .state()
                .jobs
                .get(&id)
                .is_none_or(|j| j.state.is_done());
            if !chunk.is_empty() {
                let next = offset + chunk.len() as u64;
                return Some((Ok(Bytes::from(chunk)), (app, next)));
            }
            if ended {
                return None;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(250), changes.changed())
                .await;
        }
    });
    use futures_util::StreamExt;
    let body = axum::body::Body::from_stream(first.chain(rest));
    Ok((plain, body).into_response())
}
