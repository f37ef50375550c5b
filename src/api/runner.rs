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
use super::problem::ProblemDoc;
use super::{AppState, Problem, authenticate, now_ms, parse_body, rfc3339, submit_on, unexpected};
use crate::domain::{Command, JobState, Plane, Reply};

/// The longest a claim may wait for a job.
pub const MAX_WAIT_SECS: u64 = 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runner/claim", post(claim))
        .route("/runner/jobs/{job}/heartbeat", post(heartbeat))
        .route("/runner/jobs/{job}/finish", post(finish))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// What this runner offers (recorded; jobs do not ask for labels yet).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Wait up to this long (0-30 s) for a job before answering 204.
    #[serde(default)]
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
pub struct FinishBody {
    pub lease_id: Uuid,
    /// finished, failure, error or killed
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

fn parse_job(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
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
        (status = 401, description = "unauthorized", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "runner_token_required", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_body", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn claim(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let parsed = parse_body::<ClaimBody>(body).and_then(|b| {
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut changes = app.control.subscribe();
    loop {
        // Polling is not a change: only submit when a job is there to take (or to have a
        // refusal audited).
        let worth_submitting = parsed.is_err() || {
            let state = app.control.state();
            let principal = authenticate(&state, &headers)?;
            let caller = state.caller(principal, now_ms())?;
            state.admit(&caller, Plane::Runner).is_err() || state.claimable(&caller).is_some()
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
        // Wake on the next commit (a job may have become ready) or at the deadline.
        let _ = tokio::time::timeout(deadline - now, changes.changed()).await;
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
        (status = 403, description = "runner_token_required", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "job_not_found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "stale_lease", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_job(&raw).and_then(|job| {
        parse_body::<HeartbeatBody>(body).map(|b| Command::Heartbeat {
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
        (status = 403, description = "runner_token_required", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "job_not_found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "stale_lease", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_body, invalid_state", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn finish(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_job(&raw).and_then(|job| {
        parse_body::<FinishBody>(body).map(|b| Command::FinishJob {
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
