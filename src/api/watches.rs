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

use super::{
    AppState, Problem, etag, if_match, mutate, parse_body, parse_uuid, read, rfc3339, unexpected,
};
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
#[schema(example = json!({"project": "docs", "source": "https://git.example.com/docs",
    "to_uri": "viking://res/docs", "watch_interval": 60, "reason": "nightly refresh"}))]
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

/// A field that may be left out but not sent as null: a null would change nothing, and a body
/// that says so is malformed rather than empty.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"is_active": false, "reason": "repo migration"}))]
pub struct UpdateWatchBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = f64, required = false)]
    pub watch_interval: Option<f64>,
    /// false pauses (the interval is kept); true resumes from now.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, required = false)]
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

/// `GET /watches`: a page of watches, or the one `to_uri` names.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only watches in this project (with `to_uri`: the watch in this project).
    pub project: Option<String>,
    /// Only active (not paused) watches.
    pub active_only: Option<bool>,
    /// From `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
    /// Page size, default 50.
    pub limit: Option<usize>,
    /// Answer the one watch with this target instead of a page.
    pub to_uri: Option<String>,
}

/// `GET /watches/{id}`.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// The watch's target too: it must agree with the id.
    pub to_uri: Option<String>,
    /// The watch's project too: it must agree with the id.
    pub project: Option<String>,
    /// 404 if the watch is paused.
    pub active_only: Option<bool>,
}

/// A change to the watch named by its id: the other keys may only agree with it.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// The watch's target too: it must agree with the id.
    pub to_uri: Option<String>,
    /// The watch's project too: it must agree with the id.
    pub project: Option<String>,
}

/// A change to the watch named by its target.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct UriQuery {
    /// The watch's target (its `to_uri`).
    #[param(required = true)]
    pub to_uri: Option<String>,
    /// The watch's project, where the target is in several of yours.
    pub project: Option<String>,
}

const DEFAULT_LIMIT: usize = 50;
/// The largest page `GET /watches` gives.
pub const MAX_LIMIT: usize = 500;

fn query<Q: serde::de::DeserializeOwned>(
    q: Result<Query<Q>, QueryRejection>,
) -> Result<Q, Problem> {
    q.map(|Query(q)| q).map_err(|e| {
        Problem::bad_request(
            "invalid_query",
            format!("the query string is invalid: {}", e.body_text()),
        )
    })
}

fn watch_id(raw: &str) -> Result<Uuid, Problem> {
    parse_uuid(raw).ok_or_else(|| {
        Problem::bad_request(
            "invalid_watch_id",
            format!("{raw:?} is not a watch id (a UUID); to address a watch by its target use ?to_uri=<uri>"),
        )
    })
}

fn key(id: Option<Uuid>, to_uri: Option<String>, project: Option<String>) -> WatchKey {
    WatchKey {
        id,
        to_uri,
        project,
    }
}

fn watch_response(status: StatusCode, w: &Watch) -> Response {
    (status, [etag(w.version)], Json(WatchView::from(w))).into_response()
}

/// What `GET /watches` answers: a page, or with `to_uri` the one watch it names.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum WatchesAnswer {
    Page(WatchList),
    One(Box<WatchView>),
}

#[utoipa::path(get, path = "/api/v1/watches", tag = "watches",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of watches, or with `to_uri` the one watch it names (a WatchView)", body = WatchesAnswer),
    ))]
pub async fn list_or_lookup(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let q: ListQuery = query(q)?;
        let active_only = q.active_only.unwrap_or(false);
        if q.to_uri.is_some() {
            let w = state.resolve_watch(caller, &key(None, q.to_uri, q.project))?;
            if active_only && !w.is_active {
                return Err(not_active(w));
            }
            return Ok(watch_response(StatusCode::OK, w));
        }
        if let Some(p) = &q.project
            && !super::is_project_id(p)
        {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("project {p:?} is not a project id (1-63 characters of a-z, 0-9 and '-')"),
            ));
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
                parse_uuid(c).ok_or_else(|| {
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
    params(("id" = Uuid, Path, description = "Watch id"), ShowQuery),
    responses(
        (status = 200, body = WatchView, headers(("ETag" = String, description = "The watch's version"))),
    ))]
pub async fn show(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let q: ShowQuery = query(q)?;
        let id = watch_id(&raw_id)?;
        let w = state.resolve_watch(caller, &key(Some(id), q.to_uri, q.project))?;
        if q.active_only.unwrap_or(false) && !w.is_active {
            return Err(not_active(w));
        }
        Ok(watch_response(StatusCode::OK, w))
    })
}

#[utoipa::path(post, path = "/api/v1/watches", tag = "watches",
    request_body = CreateWatchBody,
    responses(
        (status = 201, body = WatchView, headers(("Location" = String), ("ETag" = String))),
    ))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_body::<CreateWatchBody>(&headers, body).and_then(|b| {
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

/// The key a change names its watch by: the path's id, or the query's `to_uri`.
type Keyed = Result<(Option<Uuid>, Option<String>, Option<String>), Problem>;

fn by_id(raw_id: &str, q: Result<Query<KeyQuery>, QueryRejection>) -> Keyed {
    let q: KeyQuery = query(q)?;
    Ok((Some(watch_id(raw_id)?), q.to_uri, q.project))
}

fn by_uri(q: Result<Query<UriQuery>, QueryRejection>) -> Keyed {
    let q: UriQuery = query(q)?;
    Ok((None, q.to_uri, q.project))
}

async fn do_update(
    app: AppState,
    headers: HeaderMap,
    keyed: Keyed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = (|| {
        let (id, to_uri, project) = keyed?;
        let b: UpdateWatchBody = parse_body(&headers, body)?;
        let if_match = if_match(&headers)?;
        let patch = WatchPatch {
            watch_interval: b.watch_interval,
            is_active: b.is_active,
            reason: b.reason,
            instruction: b.instruction,
        };
        let key = key(id, to_uri, project);
        Ok(match b.pipeline {
            None => Command::UpdateWatch {
                key,
                if_match,
                patch,
            },
            Some(p) => Command::UpdateWatchWithPipeline {
                key,
                if_match,
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
    params(("id" = Uuid, Path, description = "Watch id"), KeyQuery),
    responses(
        (status = 200, body = WatchView, headers(("ETag" = String))),
    ))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<KeyQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    do_update(app, headers, by_id(&raw_id, q), body).await
}

#[utoipa::path(patch, path = "/api/v1/watches", tag = "watches",
    request_body = UpdateWatchBody,
    params(UriQuery),
    responses(
        (status = 200, body = WatchView, headers(("ETag" = String))),
    ))]
pub async fn update_by_uri(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<UriQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    do_update(app, headers, by_uri(q), body).await
}

async fn do_delete(app: AppState, headers: HeaderMap, keyed: Keyed) -> Result<Response, Problem> {
    let command = (|| {
        let (id, to_uri, project) = keyed?;
        Ok(Command::DeleteWatch {
            key: key(id, to_uri, project),
            if_match: if_match(&headers)?,
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
    params(("id" = Uuid, Path, description = "Watch id"), KeyQuery),
    responses(
        (status = 200, body = WatchDeleted),
    ))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_delete(app, headers, by_id(&raw_id, q)).await
}

#[utoipa::path(delete, path = "/api/v1/watches", tag = "watches",
    params(UriQuery),
    responses(
        (status = 200, body = WatchDeleted),
    ))]
pub async fn delete_by_uri(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<UriQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_delete(app, headers, by_uri(q)).await
}

async fn do_trigger(app: AppState, headers: HeaderMap, keyed: Keyed) -> Result<Response, Problem> {
    let command = keyed.map(|(id, to_uri, project)| Command::TriggerWatch {
        key: key(id, to_uri, project),
    });
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
    params(("id" = Uuid, Path, description = "Watch id"), KeyQuery),
    responses(
        (status = 202, description = "Fired now, paused or not", body = WatchTriggered),
    ))]
pub async fn trigger(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    q: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_trigger(app, headers, by_id(&raw_id, q)).await
}

#[utoipa::path(post, path = "/api/v1/watches/trigger", tag = "watches",
    params(UriQuery),
    responses(
        (status = 202, description = "Fired now, paused or not", body = WatchTriggered),
    ))]
pub async fn trigger_by_uri(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<UriQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    do_trigger(app, headers, by_uri(q)).await
}
