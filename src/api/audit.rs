//! `/api/v1/audit`: the trail of every commit, filtered from the audit projection and rendered
//! from the log records themselves.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::problem::ProblemDoc;
use super::{AppState, Problem, admin_read, rfc3339};
use crate::domain::{AuditEntry, Plane};
use crate::log::Outcome;

pub fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number.
    pub since_seq: Option<u64>,
    /// 1-1000, default 100.
    pub limit: Option<usize>,
    pub project: Option<String>,
    /// `token:<id>`, a bare token id, or `system`.
    pub principal: Option<String>,
    /// rest, mcp, cli, scheduler, runner, system.
    pub plane: Option<String>,
    /// accepted or rejected.
    pub outcome: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub seq: u64,
    pub at: String,
    pub plane: String,
    pub principal: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// `{"<op>": {...arguments}}`
    #[schema(value_type = Object)]
    pub command: serde_json::Value,
    pub target: Option<String>,
    pub project: Option<String>,
    /// accepted or rejected
    pub outcome: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub events: serde_json::Value,
    /// SHA-256 chaining this commit to the one before, hex.
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Pass as `since_seq` for the next page; null when there is nothing more yet.
    pub next_since: Option<u64>,
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid_query", detail)
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "invalid_query", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "admin_required", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) =
        q.map_err(|e| invalid(format!("the query string is invalid: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let plane = q
        .plane
        .as_deref()
        .map(|p| {
            Plane::parse(p).ok_or_else(|| {
                invalid(format!(
                    "unknown plane {p:?}; use rest, mcp, cli, scheduler, runner or system"
                ))
            })
        })
        .transpose()?;
    let accepted = match q.outcome.as_deref() {
        None => None,
        Some("accepted") => Some(true),
        Some("rejected") => Some(false),
        Some(o) => {
            return Err(invalid(format!(
                "unknown outcome {o:?}; use accepted or rejected"
            )));
        }
    };
    let principal = q.principal.as_deref().map(|p| {
        if p == "system" || p.starts_with("token:") {
            p.to_string()
        } else {
            format!("token:{p}")
        }
    });
    let since = q.since_seq.unwrap_or(0);
    let (picked, more): (Vec<AuditEntry>, bool) = admin_read(&app, &headers, |state, _| {
        // Every commit has exactly one entry and seqs start at 1, so entry i has seq i + 1.
        let start = usize::try_from(since)
            .unwrap_or(usize::MAX)
            .min(state.audit.len());
        let mut matching = state.audit[start..].iter().filter(|e| {
            q.project
                .as_ref()
                .is_none_or(|p| e.project.as_ref() == Some(p))
                && plane.is_none_or(|p| p == e.plane)
                && accepted.is_none_or(|a| a == e.accepted)
                && principal
                    .as_ref()
                    .is_none_or(|p| *p == e.principal.to_string())
        });
        let picked: Vec<AuditEntry> = matching.by_ref().take(limit).cloned().collect();
        let more = matching.next().is_some();
        Ok((picked, more))
    })?;
    let store = app.control.store();
    let mut entries = Vec::with_capacity(picked.len());
    for e in &picked {
        let commit = store
            .get(e.seq)
            .map_err(|err| Problem::internal(format!("the log could not be read: {err}")))?
            .ok_or_else(|| {
                Problem::internal(format!("commit {} is missing from the log", e.seq))
            })?;
        let body = &commit.body;
        let (outcome, status, code, reason) = match &body.outcome {
            Outcome::Accepted => ("accepted", None, None, None),
            Outcome::Rejected {
                status,
                code,
                reason,
                ..
            } => (
                "rejected",
                Some(*status),
                Some(code.clone()),
                Some(reason.clone()),
            ),
        };
        entries.push(AuditView {
            seq: e.seq,
            at: rfc3339(e.at),
            plane: e.plane.as_str().to_string(),
            principal: e.principal.to_string(),
            request_id: body.meta.request_id.clone(),
            idempotency_key: body.meta.idempotency_key.clone(),
            command: serde_json::to_value(&body.meta.command).unwrap_or_default(),
            target: e.target.clone(),
            project: e.project.clone(),
            outcome: outcome.to_string(),
            status,
            code,
            reason,
            events: serde_json::to_value(&body.events).unwrap_or_default(),
            hash: hex::encode(commit.hash),
        });
    }
    let next_since = if more {
        picked.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_since,
    })
    .into_response())
}
