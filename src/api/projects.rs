//! `/api/v1/projects`: the unit of scope. Admins create them; everyone lists what they may see.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::builds::PipelineBody;
use super::{AppState, Problem, mutate, parse_body, read, rfc3339, unexpected};
use crate::domain::{Command, Pipeline, Project, Reply};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}", get(show).patch(update))
}

#[derive(Serialize, ToSchema, schemars::JsonSchema)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub created_by: String,
    /// What a build runs when triggered without a pipeline; null when unset.
    #[schema(value_type = Option<Object>)]
    pub default_pipeline: Option<serde_json::Value>,
}

impl From<&Project> for ProjectView {
    fn from(p: &Project) -> ProjectView {
        ProjectView {
            id: p.id.clone(),
            name: p.name.clone(),
            created_at: rfc3339(p.created_at),
            created_by: p.created_by.to_string(),
            default_pipeline: p
                .default_pipeline
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "docs", "name": "Documentation"}))]
pub struct CreateProjectBody {
    /// A slug: 1-63 characters of a-z, 0-9 and '-'.
    pub id: String,
    /// Defaults to the id.
    pub name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"default_pipeline": {"jobs": [
    {"name": "sync", "run": "echo syncing $REEVE_WATCH_SOURCE into $REEVE_WATCH_TO_URI"}
]}}))]
pub struct UpdateProjectBody {
    /// Left out keeps the name; it cannot be null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub name: Option<String>,
    /// A pipeline, or null to remove the default.
    #[serde(default, deserialize_with = "some_pipeline")]
    #[schema(value_type = Option<PipelineBody>)]
    pub default_pipeline: Option<Option<PipelineBody>>,
}

/// A name may be left out but not sent as null (it cannot be removed).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// Distinguishes an absent default (leave it) from `null` (remove it).
fn some_pipeline<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<PipelineBody>>, D::Error> {
    Option::<PipelineBody>::deserialize(d).map(Some)
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "project_not_found",
        format!("no project {id:?}; GET /api/v1/projects lists yours"),
    )
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    responses(
        (status = 200, description = "The projects this token may see", body = ProjectList),
    ))]
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let projects = state
            .projects
            .values()
            .filter(|p| caller.sees_project(&p.id))
            .map(ProjectView::from)
            .collect();
        Ok(Json(ProjectList { projects }).into_response())
    })
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "Project id")),
    responses(
        (status = 200, body = ProjectView),
    ))]
pub async fn show(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    read(&app, &headers, |state, caller| {
        let p = state
            .projects
            .get(&id)
            .filter(|p| caller.sees_project(&p.id))
            .ok_or_else(|| not_found(&id))?;
        Ok(Json(ProjectView::from(p)).into_response())
    })
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    request_body = CreateProjectBody,
    responses(
        (status = 201, body = ProjectView, headers(("Location" = String))),
    ))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_body::<CreateProjectBody>(&headers, body).map(|b| Command::CreateProject {
        id: b.id,
        name: b.name,
    });
    let done = mutate(&app, &headers, "create_project", true, command).await?;
    match &done.reply {
        Reply::Project(p) => {
            let mut resp = (StatusCode::CREATED, Json(ProjectView::from(p))).into_response();
            if let Ok(loc) = format!("/api/v1/projects/{}", p.id).parse() {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
            Ok(resp)
        }
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects",
    request_body = UpdateProjectBody,
    params(("id" = String, Path, description = "Project id")),
    responses(
        (status = 200, body = ProjectView),
    ))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let command = parse_body::<UpdateProjectBody>(&headers, body).and_then(|b| {
        Ok(Command::UpdateProject {
            id,
            name: b.name,
            default_pipeline: b
                .default_pipeline
                .map(|p| p.map(Pipeline::try_from).transpose())
                .transpose()?,
        })
    });
    let done = mutate(&app, &headers, "update_project", true, command).await?;
    match &done.reply {
        Reply::Project(p) => Ok(Json(ProjectView::from(p)).into_response()),
        other => Err(unexpected(other)),
    }
}
