//! `/api/v1/runner`: how runners claim jobs, keep their leases and report results. Runner
//! tokens only.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::builds::{BuildView, JobView};
use super::{AppState, Problem, authenticate, now_ms, parse_body, rfc3339, submit_on, unexpected};
use crate::domain::{Command, JobState, Plane, Reply};

/// The longest a claim may wait for a job.
pub const MAX_WAIT_SECS: u64 = 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runner/claim", post(claim))
        .route("/runner/jobs/{job}/heartbeat", post(heartbeat))
        .route("/runner/jobs/{job}/finish", post(finish))
        .route("/runner/jobs/{job}/log", post(append_log))
        .route("/runner/jobs/{job}/pipeline", post(upload_pipeline))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"labels": ["linux"], "wait_seconds": 0}))]
pub struct ClaimBody {
    /// What this runner offers (recorded; jobs do not ask for labels yet).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Wait up to this long (0-30 s) for a job before answering 204.
    #[serde(default, deserialize_with = "super::whole")]
    pub wait_seconds: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Claimed {
    pub job: JobView,
    pub build: BuildView,
    pub lease_id: Uuid,
    pub lease_expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    #[serde(deserialize_with = "super::hyphenated")]
    pub lease_id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// The job was aborted: stop it and finish it as killed.
    pub abort: bool,
    pub lease_expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lease_id": "01a20400-ed62-75c0-b06b-69a06960e3c9", "state": "failure", "exit_code": 2}))]
pub struct FinishBody {
    #[serde(deserialize_with = "super::hyphenated")]
    pub lease_id: Uuid,
    /// finished, failure, error or killed
    pub state: JobState,
    #[serde(default, deserialize_with = "super::whole_or_null")]
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

fn parse_job(raw: &str) -> Result<Uuid, Problem> {
    super::parse_uuid(raw).ok_or_else(|| {
        Problem::bad_request(
            "invalid_job_id",
            format!("{raw:?} is not a job id (a UUID)"),
        )
    })
}

#[utoipa::path(post, path = "/api/v1/runner/claim", tag = "runner",
    request_body = ClaimBody,
    responses(
        (status = 200, description = "A job to run, leased to this runner", body = Claimed),
        (status = 204, description = "Nothing to run (after waiting up to wait_seconds)"),
    ))]
pub async fn claim(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let parsed = parse_body::<ClaimBody>(&headers, body).and_then(|b| {
        if b.wait_seconds > MAX_WAIT_SECS {
            Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("wait_seconds must be 0 to {MAX_WAIT_SECS}"),
            ))
        } else {
            Ok(b)
        }
    });
    let (labels, wait) = match &parsed {
        Ok(b) => (b.labels.clone(), b.wait_seconds),
        Err(_) => (Vec::new(), 0),
    };
    let oversized = crate::domain::bounds::oversized(&Command::ClaimJob {
        labels: labels.clone(),
    })
    .is_some();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut changes = app.control.subscribe();
    let mut waiting = None;
    loop {
        // Polling is not a change: only submit when a job is there to take (or to have a
        // refusal audited: a malformed or oversized request is refused whether or not a job
        // waits).
        let worth_submitting =
            parsed.is_err() || oversized || super::malformed_headers(&headers) || {
                let state = app.control.state();
                let principal = authenticate(&state, &headers)?;
                let caller = state.caller(principal, now_ms())?;
                let admitted = state.admit(&caller, Plane::Runner).is_ok();
                if waiting.is_none() && admitted {
                    waiting = app.metrics.runner_waiting(principal);
                }
                !admitted || state.claimable(&caller).is_some()
            };
        if worth_submitting {
            let command = parsed
                .as_ref()
                .map_err(Clone::clone)
                .map(|_| Command::ClaimJob {
                    labels: labels.clone(),
                });
            match submit_on(&app, &headers, Plane::Runner, "claim_job", false, command).await {
                Ok(done) => return claimed(done.reply),
                Err(p) if p.code == "nothing_to_claim" => {}
                Err(p) => return Err(p),
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Wake on the next commit (a job may have become ready), at the deadline, or when the
        // server shuts down.
        let mut shutdown = app.shutdown.clone();
        tokio::select! {
            _ = tokio::time::timeout(deadline - now, changes.changed()) => {}
            _ = crate::runner::stopped(&mut shutdown) => {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
        }
    }
}

fn claimed(reply: Reply) -> Result<Response, Problem> {
    match reply {
        Reply::Claimed {
            job,
            build,
            lease_id,
            lease_expires_at,
        } => {
            let view = Claimed {
                job: JobView::from(job.as_ref()),
                build: BuildView::with_jobs(&build, std::iter::empty()),
                lease_id,
                lease_expires_at: rfc3339(lease_expires_at),
            };
            Ok(Json(view).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/api/v1/runner/jobs/{job}/heartbeat", tag = "runner",
    request_body = HeartbeatBody,
    params(("job" = Uuid, Path)),
    responses(
        (status = 200, body = HeartbeatAnswer),
    ))]
pub async fn heartbeat(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_job(&raw).and_then(|job| {
        parse_body::<HeartbeatBody>(&headers, body).map(|b| Command::Heartbeat {
            job,
            lease_id: b.lease_id,
        })
    });
    let done = submit_on(&app, &headers, Plane::Runner, "heartbeat", false, command).await?;
    match done.reply {
        Reply::Heartbeat {
            abort,
            lease_expires_at,
        } => Ok(Json(HeartbeatAnswer {
            abort,
            lease_expires_at: rfc3339(lease_expires_at),
        })
        .into_response()),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/api/v1/runner/jobs/{job}/finish", tag = "runner",
    request_body = FinishBody,
    params(("job" = Uuid, Path)),
    responses(
        (status = 200, description = "The job as it ended", body = JobView),
    ))]
pub async fn finish(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_job(&raw).and_then(|job| {
        parse_body::<FinishBody>(&headers, body).map(|b| Command::FinishJob {
            job,
            lease_id: b.lease_id,
            state: b.state,
            exit_code: b.exit_code,
            message: b.message,
        })
    });
    let done = submit_on(&app, &headers, Plane::Runner, "finish_job", false, command).await?;
    match done.reply {
        Reply::Job(j) => Ok(Json(JobView::from(j.as_ref())).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// The most output kept per job; past it, a marker and nothing more.
pub const LOG_CAP: u64 = 16 * 1024 * 1024;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The lease the runner holds on the job.
    #[serde(deserialize_with = "super::hyphenated")]
    pub lease_id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct LogAppended {
    /// The log's length in bytes after this chunk.
    pub length: u64,
}

#[utoipa::path(post, path = "/api/v1/runner/jobs/{job}/log", tag = "runner",
    params(("job" = Uuid, Path), LogQuery),
    request_body(content = String, content_type = "application/octet-stream", description = "The next chunk of the job's output (at most 1 MiB)"),
    responses(
        (status = 200, body = LogAppended),
    ))]
pub async fn append_log(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    q: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // Output is data, not a command: it goes to the log tree, never through the writer. The
    // lease is checked against the projection so only the runner running the job writes.
    // The state's lock is let go before the output is written (and, in a cluster, sent).
    let (job, bytes) = {
        let state = app.control.state();
        let principal = authenticate(&state, &headers)?;
        let caller = state.caller(principal, now_ms())?;
        state.admit(&caller, Plane::Runner)?;
        super::acceptable(&headers, super::JSON)?;
        let job = parse_job(&raw)?;
        let axum::extract::Query(q) =
            q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
        super::content_type(&headers, super::BYTES)?;
        let bytes = body.map_err(super::unreadable_body)?;
        // A pruned log never grows back (an aborted job's runner may still be writing).
        crate::domain::log_readable(crate::domain::leased(&state, &caller, job, q.lease_id)?)?;
        (job, bytes)
    };
    let length = app
        .control
        .append_log(job, &bytes, LOG_CAP)
        .await
        .map_err(|e| Problem::internal(format!("the log could not be written: {e}")))?;
    Ok(Json(LogAppended { length }).into_response())
}

#[utoipa::path(post, path = "/api/v1/runner/jobs/{job}/pipeline", tag = "runner",
    params(("job" = Uuid, Path), LogQuery),
    request_body(content = serde_json::Value, content_type = "application/json", description = "What the generator printed, as it printed it: a pipeline ({\"jobs\": [...]}) or anything else, which fails Create Jobs with the reason"),
    responses(
        (status = 200, description = "Create Jobs as it ended: finished (the jobs joined the build) or failure (the output was not a valid pipeline; the reason is in its message and log)", body = JobView),
    ))]
pub async fn upload_pipeline(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    q: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = (|| {
        let job = parse_job(&raw)?;
        let axum::extract::Query(q) =
            q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
        super::content_type(&headers, super::JSON)?;
        // A body that is not a pipeline is the generator's failure, not a bad request: it
        // is decided (and audited) like any other output.
        let parsed = parse_body::<super::builds::PipelineBody>(&headers, body)
            .and_then(crate::domain::Pipeline::try_from);
        let (pipeline, error) = match parsed {
            // Too large to keep is as much the generator's failure as not a pipeline at all.
            Ok(p) => match crate::domain::bounds::pipeline_over(&p) {
                Some(over) => (
                    None,
                    Some(format!(
                        "the generated pipeline is refused: {}",
                        over.reason()
                    )),
                ),
                None => (Some(p), None),
            },
            Err(p) => (None, Some(p.detail)),
        };
        Ok(Command::ExpandJobs {
            job,
            lease_id: q.lease_id,
            pipeline,
            error,
        })
    })();
    let done = submit_on(&app, &headers, Plane::Runner, "expand_jobs", false, command).await?;
    match done.reply {
        Reply::Job(j) => {
            if j.state == JobState::Failure
                && let Some(why) = &j.message
            {
                let line = format!("\n[reeve] {why}\n");
                let _ = app.control.append_log(j.id, line.as_bytes(), LOG_CAP).await;
            }
            Ok(Json(JobView::from(j.as_ref())).into_response())
        }
        other => Err(unexpected(&other)),
    }
}
