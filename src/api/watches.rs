//! `/api/v1/watches`: create, list, look up, update, pause/resume, delete and trigger watches,
//! by id or by `to_uri`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AppState, Problem, etag, if_match, mutate, parse_body, read, rfc3339, unexpected};
use crate::domain::{Command, NewWatch, Pipeline, Reply, Watch, WatchFilter, WatchKey, WatchPatch};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/watches",
            get(list_or_lookup)
                .post(create)
                .patch(update_by_uri)
                .delete(delete_by_uri),
        )
        .route("/watches/trigger", post(trigger_by_uri))
        .route("/watches/{id}", get(show).patch(update).delete(delete))
        .route("/watches/{id}/trigger", post(trigger))
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct WatchView {
    pub id: Uuid,
    pub project: String,
    pub source: String,
    pub to_uri: String,
    /// Minutes between fires.
    pub watch_interval: f64,
    pub is_active: bool,
    pub reason: Option<String>,
    pub instruction: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    /// Null while paused.
    pub next_run_at: Option<String>,
    pub last_run: Option<LastRunView>,
    pub consecutive_failures: u32,
    /// The watch's own pipeline; null runs the project's default.
    #[schema(value_type = Option<Object>)]
    pub pipeline: Option<serde_json::Value>,
    /// Scheduled fires skipped because the previous build was still running.
    pub skipped_overlap: u64,
    /// Scheduled fires swallowed by downtime, collapsed into catch-up fires.
    pub missed: u64,
    /// The watch's ETag: it counts changes to its settings.
    pub version: u64,
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct LastRunView {
    /// When it fired.
    pub at: String,
    pub build_id: Option<Uuid>,
    /// triggered (no build), or the build's state: running, finished, failure, error, killed.
    pub outcome: String,
    /// When the build ended.
    pub finished_at: Option<String>,
    pub manual: bool,
    pub missed: u32,
}

impl From<&Watch> for WatchView {
    fn from(w: &Watch) -> WatchView {
        WatchView {
            id: w.id,
            project: w.project.clone(),
            source: w.source.clone(),
            to_uri: w.to_uri.clone(),
            watch_interval: w.watch_interval,
            is_active: w.is_active,
            reason: w.reason.clone(),
            instruction: w.instruction.clone(),
            created_at: rfc3339(w.created_at),
            created_by: w.created_by.to_string(),
            updated_at: rfc3339(w.updated_at),
            next_run_at: w.next_run_at.map(rfc3339),
            last_run: w.last_run.as_ref().map(|r| LastRunView {
                at: rfc3339(r.at),
                build_id: r.build_id,
                outcome: r.outcome.as_str().to_string(),
                finished_at: r.finished_at.map(rfc3339),
                manual: r.manual,
                missed: r.missed,
            }),
            consecutive_failures: w.consecutive_failures,
            pipeline: w
                .pipeline
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok()),
            skipped_overlap: w.skipped_overlap,
            missed: w.missed,
            version: w.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WatchList {
    pub watches: Vec<WatchView>,
    /// How many watches match the filters, across all pages.
    pub total: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WatchDeleted {
    pub id: Uuid,
    pub to_uri: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct WatchTriggered {
    pub id: Uuid,
    pub to_uri: String,
    pub scheduled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWatchBody {
    pub project: String,
    /// An absolute URI.
    pub source: String,
    /// An absolute URI, unique among the project's watches.
    pub to_uri: String,
    /// Minutes: finite, > 0, at most 525600, and at least the server's floor.
    pub watch_interval: f64,
    pub reason: Option<String>,
    pub instruction: Option<String>,
    /// Defaults to true.
    pub is_active: Option<bool>,
    /// What a fire runs; the project's default pipeline when absent.
    pub pipeline: Option<super::builds::PipelineBody>,
}

/// Distinguishes an absent field (leave as is) from `null` (clear it).
fn some_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWatchBody {
    pub watch_interval: Option<f64>,
    /// false pauses (the interval is kept); true resumes from now.
    pub is_active: Option<bool>,
    /// null clears it.
    #[serde(default, deserialize_with = "some_nullable")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<Option<String>>,
    /// null clears it.
    #[serde(default, deserialize_with = "some_nullable")]
    #[schema(value_type = Option<String>)]
    pub instruction: Option<Option<String>>,
    /// The watch's own pipeline; null goes back to the project's default.
    #[serde(default, deserialize_with = "some_nullable_pipeline")]
    #[schema(value_type = Option<super::builds::PipelineBody>)]
    pub pipeline: Option<Option<super::builds::PipelineBody>>,
}

fn some_nullable_pipeline<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<super::builds::PipelineBody>>, D::Error> {
    Option::<super::builds::PipelineBody>::deserialize(d).map(Some)
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Only watches in this project.
    pub project: Option<String>,
    /// Only active (not paused) watches.
    pub active_only: Option<bool>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500, default 50.
    pub limit: Option<usize>,
    /// Address one watch by its target instead of its id.
    pub to_uri: Option<String>,
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

fn query(q: Result<Query<WatchQuery>, QueryRejection>) -> Result<WatchQuery, Problem> {
    q.map(|Query(q)| q).map_err(|e| {
        Problem::bad_request(
            "invalid_query",
            format!("the query string is invalid: {}", e.body_text()),
        )
    })
}

fn watch_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request(
            "invalid_watch_id",
            format!("{raw:?} is not a watch id (a UUID); to address a watch by its target use ?to_uri=<uri>"),
        )
    })
}

fn key(id: Option<Uuid>, q: &WatchQuery) -> WatchKey {
    WatchKey {
        id,
        to_uri: q.to_uri.clone(),
        project: q.project.clone(),
    }
}

fn watch_response(status: StatusCode, w: &Watch) -> Response {
    (status, [etag(w.version)], Json(WatchView::from(w))).into_response()
}

#[utoipa::path(get, path = "/api/v1/watches", tag = "watches",
    params(WatchQuery),
    responses(
        (status = 200, description = "A page of watches, or with `to_uri` the one watch it names (a WatchView)", body = WatchList),
        (status = 400, description = "invalid_query, ambiguous_to_uri", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "mcp_token_not_allowed, runner_token_not_allowed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found (with to_uri)", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_or_lookup(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    read(&app, &headers, |state, caller| {
        let active_only = q.active_only.unwrap_or(false);
        if q.to_uri.is_some() {
            let w = state.resolve_watch(caller, &key(None, &q))?;
            if active_only && !w.is_active {
                return Err(not_active(w));
            }
            return Ok(watch_response(StatusCode::OK, w));
        }
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = q
            .cursor
            .as_deref()
            .map(|c| {
                Uuid::parse_str(c).map_err(|_| {
                    Problem::bad_request(
                        "invalid_query",
                        "cursor must be a next_cursor from a previous page",
                    )
                })
            })
            .transpose()?;
        let filter = WatchFilter {
            project: q.project.clone(),
            active_only,
        };
        let page = state.watches_page(caller, &filter, after, limit);
        Ok(Json(WatchList {
            watches: page.watches.into_iter().map(WatchView::from).collect(),
            total: page.total,
            next_cursor: page.next.map(|id| id.to_string()),
        })
        .into_response())
    })
}

fn not_active(w: &Watch) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "watch_not_found",
        format!(
            "watch {} is paused and active_only=true was asked; drop active_only to see it",
            w.id
        ),
    )
}

#[utoipa::path(get, path = "/api/v1/watches/{id}", tag = "watches",
    params(("id" = Uuid, Path, description = "Watch id"), WatchQuery),
    responses(
        (status = 200, body = WatchView, headers(("ETag" = String, description = "The watch's version"))),
        (status = 400, description = "invalid_watch_id, watch_keys_conflict", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    read(&app, &headers, |state, caller| {
        let id = watch_id(&raw_id)?;
        let w = state.resolve_watch(caller, &key(Some(id), &q))?;
        if q.active_only.unwrap_or(false) && !w.is_active {
            return Err(not_active(w));
        }
        Ok(watch_response(StatusCode::OK, w))
    })
}

#[utoipa::path(post, path = "/api/v1/watches", tag = "watches",
    request_body = CreateWatchBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first answer")),
    responses(
        (status = 201, body = WatchView, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "invalid_json, invalid_idempotency_key", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "trigger_not_allowed, mcp_token_not_allowed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "project_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "to_uri_taken", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_body, invalid_interval, invalid_source, invalid_to_uri, idempotency_key_reused, field_too_long", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_body::<CreateWatchBody>(body).and_then(|b| {
        let watch = NewWatch {
            project: b.project,
            source: b.source,
            to_uri: b.to_uri,
            watch_interval: b.watch_interval,
            reason: b.reason,
            instruction: b.instruction,
            is_active: b.is_active.unwrap_or(true),
        };
        Ok(match b.pipeline {
            None => Command::CreateWatch(watch),
            Some(p) => Command::CreateWatchWithPipeline {
                watch,
                pipeline: Pipeline::try_from(p)?,
            },
        })
    });
    let done = mutate(&app, &headers, "create_watch", false, command).await?;
    match &done.reply {
        Reply::Watch(w) => {
            let mut resp = watch_response(StatusCode::CREATED, w);
            if let Ok(loc) = format!("/api/v1/watches/{}", w.id).parse() {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
            Ok(resp)
        }
        other => Err(unexpected(other)),
    }
}

async fn do_update(
    app: AppState,
    headers: HeaderMap,
    id: Option<Result<Uuid, Problem>>,
    q: Result<Query<WatchQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = (|| {
        let q = query(q)?;
        let id = id.transpose()?;
        let b: UpdateWatchBody = parse_body(body)?;
        let patch = WatchPatch {
            watch_interval: b.watch_interval,
            is_active: b.is_active,
            reason: b.reason,
            instruction: b.instruction,
        };
        Ok(match b.pipeline {
            None => Command::UpdateWatch {
                key: key(id, &q),
                if_match: if_match(&headers),
                patch,
            },
            Some(p) => Command::UpdateWatchWithPipeline {
                key: key(id, &q),
                if_match: if_match(&headers),
                patch,
                pipeline: p.map(Pipeline::try_from).transpose()?,
            },
        })
    })();
    let done = mutate(&app, &headers, "update_watch", false, command).await?;
    match &done.reply {
        Reply::Watch(w) => Ok(watch_response(StatusCode::OK, w)),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(patch, path = "/api/v1/watches/{id}", tag = "watches",
    request_body = UpdateWatchBody,
    params(("id" = Uuid, Path), WatchQuery,
        ("If-Match" = Option<String>, Header, description = "The version (ETag) you last saw"),
        ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, body = WatchView, headers(("ETag" = String))),
        (status = 400, description = "invalid_watch_id, watch_keys_conflict, invalid_json", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "trigger_not_allowed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "precondition_failed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_body, nothing_to_change, invalid_interval, field_too_long", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<WatchQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    do_update(app, headers, Some(watch_id(&raw_id)), q, body).await
}

#[utoipa::path(patch, path = "/api/v1/watches", tag = "watches",
    request_body = UpdateWatchBody,
    params(WatchQuery, ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, body = WatchView),
        (status = 400, description = "watch_key_required, ambiguous_to_uri", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "precondition_failed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid_body, nothing_to_change, invalid_interval, field_too_long", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn update_by_uri(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WatchQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    do_update(app, headers, None, q, body).await
}

async fn do_delete(
    app: AppState,
    headers: HeaderMap,
    id: Option<Result<Uuid, Problem>>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let command = (|| {
        let q = query(q)?;
        let id = id.transpose()?;
        Ok(Command::DeleteWatch {
            key: key(id, &q),
            if_match: if_match(&headers),
        })
    })();
    let done = mutate(&app, &headers, "delete_watch", false, command).await?;
    match done.reply {
        Reply::WatchDeleted { id, to_uri } => Ok(Json(WatchDeleted {
            id,
            to_uri,
            deleted: true,
        })
        .into_response()),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(delete, path = "/api/v1/watches/{id}", tag = "watches",
    params(("id" = Uuid, Path), WatchQuery, ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, body = WatchDeleted),
        (status = 400, description = "invalid_watch_id, watch_keys_conflict", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "trigger_not_allowed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "precondition_failed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_delete(app, headers, Some(watch_id(&raw_id)), q).await
}

#[utoipa::path(delete, path = "/api/v1/watches", tag = "watches",
    params(WatchQuery, ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, body = WatchDeleted),
        (status = 400, description = "watch_key_required, ambiguous_to_uri", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn delete_by_uri(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_delete(app, headers, None, q).await
}

async fn do_trigger(
    app: AppState,
    headers: HeaderMap,
    id: Option<Result<Uuid, Problem>>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let command = (|| {
        let q = query(q)?;
        let id = id.transpose()?;
        Ok(Command::TriggerWatch { key: key(id, &q) })
    })();
    let done = mutate(&app, &headers, "trigger_watch", false, command).await?;
    match done.reply {
        Reply::WatchTriggered { id, to_uri } => Ok((
            StatusCode::ACCEPTED,
            Json(WatchTriggered {
                id,
                to_uri,
                scheduled: true,
            }),
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/api/v1/watches/{id}/trigger", tag = "watches",
    params(("id" = Uuid, Path), WatchQuery, ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 202, description = "Fired now, paused or not", body = WatchTriggered),
        (status = 400, description = "invalid_watch_id", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "trigger_not_allowed", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn trigger(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_trigger(app, headers, Some(watch_id(&raw_id)), q).await
}

#[utoipa::path(post, path = "/api/v1/watches/trigger", tag = "watches",
    params(WatchQuery, ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 202, body = WatchTriggered),
        (status = 400, description = "watch_key_required, ambiguous_to_uri", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "watch_not_found", body = super::problem::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn trigger_by_uri(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_trigger(app, headers, None, q).await
}
