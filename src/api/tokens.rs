//! `/api/v1/tokens`: admins issue, list and revoke tokens. A secret is shown once, in the
//! answer to the request that created it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState, Problem, admin_read, mutate, parse_body, parse_rfc3339, parse_uuid, rfc3339,
    unexpected,
};
use crate::auth;
use crate::domain::{Command, Reply, Token, TokenKind};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}", delete(revoke))
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub kind: TokenKind,
    pub description: String,
    /// Project → expiry for that project (null: none). Empty: every project.
    pub enabled_projects: BTreeMap<String, Option<String>>,
    pub allow_trigger: bool,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> TokenView {
        TokenView {
            id: t.id,
            kind: t.kind,
            description: t.description.clone(),
            enabled_projects: t
                .enabled_projects
                .iter()
                .map(|(p, e)| (p.clone(), e.map(rfc3339)))
                .collect(),
            allow_trigger: t.allow_trigger,
            expires_at: t.expires_at.map(rfc3339),
            created_at: rfc3339(t.created_at),
            created_by: t.created_by.to_string(),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret, shown only in this answer (null when an Idempotency-Key replays it).
    pub secret: Option<String>,
    #[serde(flatten)]
    pub token: TokenView,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenRevoked {
    pub id: Uuid,
    pub revoked: bool,
    pub revoked_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "api", "description": "docs bot",
    "enabled_projects": {"docs": null}, "allow_trigger": true}))]
pub struct CreateTokenBody {
    pub kind: TokenKind,
    #[serde(default)]
    pub description: String,
    /// Project → RFC 3339 expiry or null. Empty or absent: every project.
    #[serde(default)]
    pub enabled_projects: BTreeMap<String, Option<String>>,
    /// May the token change anything? Default false (read-only).
    #[serde(default)]
    pub allow_trigger: bool,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "Every token, without secrets", body = TokenList),
    ))]
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    admin_read(&app, &headers, |state, _| {
        let tokens = state.tokens.values().map(TokenView::from).collect();
        Ok(Json(TokenList { tokens }).into_response())
    })
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body = CreateTokenBody,
    responses(
        (status = 201, description = "The token, with its secret shown once", body = CreatedToken),
    ))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let secret = auth::new_secret().map_err(|e| Problem::internal(e.to_string()))?;
    let command = (|| {
        let b: CreateTokenBody = parse_body(&headers, body)?;
        let mut enabled_projects = BTreeMap::new();
        for (project, expiry) in b.enabled_projects {
            let expiry = expiry
                .map(|e| parse_rfc3339("enabled_projects", &e))
                .transpose()?;
            enabled_projects.insert(project, expiry);
        }
        Ok(Command::IssueToken {
            secret_hash: auth::hash_secret(&secret),
            kind: b.kind,
            description: b.description,
            enabled_projects,
            allow_trigger: b.allow_trigger,
            expires_at: b
                .expires_at
                .map(|e| parse_rfc3339("expires_at", &e))
                .transpose()?,
        })
    })();
    let done = mutate(&app, &headers, "issue_token", true, command).await?;
    match &done.reply {
        Reply::Token(t) => Ok((
            StatusCode::CREATED,
            Json(CreatedToken {
                secret: (!done.replayed).then_some(secret),
                token: TokenView::from(t),
            }),
        )
            .into_response()),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = Uuid, Path, description = "Token id")),
    responses(
        (status = 200, body = TokenRevoked),
    ))]
pub async fn revoke(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
) -> Result<Response, Problem> {
    let command = parse_uuid(&raw_id)
        .map(|id| Command::RevokeToken { id })
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid_token_id",
                format!("{raw_id:?} is not a token id (a UUID); GET /api/v1/tokens lists them"),
            )
        });
    let done = mutate(&app, &headers, "revoke_token", true, command).await?;
    match &done.reply {
        Reply::TokenRevoked(t) => Ok(Json(TokenRevoked {
            id: t.id,
            revoked: true,
            revoked_at: t.revoked_at.map(rfc3339),
        })
        .into_response()),
        other => Err(unexpected(other)),
    }
}
